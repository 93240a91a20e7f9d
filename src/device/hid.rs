//! The CTAPHID engine (CTAP 2.2 §11.2): drives [`ctap::ctaphid`] over a [`ReportLink`].
//!
//! - Channel allocation: CTAPHID_INIT on the broadcast channel with a fresh random 8-byte
//!   nonce from the key's randomness source (the OS RNG, noted when the key is recorded, or a
//!   replay's recorded nonce); answers carrying another nonce (other clients' INITs) are
//!   skipped.
//! - One [`Transaction`] per request; frames for other channels are dropped (hidraw shows
//!   every client's traffic to every reader).
//! - KEEPALIVE restarts the inactivity timer and becomes an operation event.
//! - CANCEL on cancellation and on a passed deadline.
//! - CTAPHID_ERROR CHANNEL_BUSY: back off (doubling pauses) and send again, a bounded number
//!   of times; INVALID_CHANNEL: allocate a new channel, once.
//! - Whenever a request is abandoned (deadline, cancel not honoured in time, malformed
//!   frames) the channel is dropped, and the next request allocates a new one, so that a late
//!   answer to the old request lands on a channel nobody listens to.

use ctap::ctaphid::{
    self, Cid, Command, HidErrorCode, InitResponse, InitResponseError, PushOutcome, Reassembler,
    Transaction, TransactionEvent,
};
use std::sync::Arc;

use rand_core::RngCore as _;
use tokio::time::Instant;
use tracing::{debug, trace};

use super::DeviceConfig;
use super::actor::{OpCtx, Wake};
use super::error::{DeviceError, ProtocolError, Unsupported};
use super::record::RandomnessKind;
use super::registry::LinkInfo;
use super::rng::DeviceRng;
use crate::transport::{LinkError, Report, ReportLink};

/// How one attempt at a transaction ended.
enum Attempt {
    /// With an answer or an error for the caller.
    Done(Result<Vec<u8>, DeviceError>),
    /// CTAPHID_ERROR CHANNEL_BUSY: try again after a pause.
    Busy,
    /// CTAPHID_ERROR INVALID_CHANNEL: allocate a new channel and try again.
    InvalidChannel,
}

/// The CTAPHID side of a device actor.
pub(super) struct HidEngine {
    link: ReportLink,
    config: DeviceConfig,
    /// The allocated channel; `None` before INIT and after an abandoned request.
    channel: Option<InitResponse>,
    /// Largest request payload: the key's maxMsgSize once known, capped at 7609.
    max_request: usize,
    gone: bool,
    /// Where INIT nonces come from.
    rng: Arc<DeviceRng>,
}

impl HidEngine {
    pub(super) fn new(link: ReportLink, config: DeviceConfig, rng: Arc<DeviceRng>) -> Self {
        Self {
            link,
            config,
            rng,
            channel: None,
            max_request: ctaphid::MAX_MESSAGE_LEN,
            gone: false,
        }
    }

    pub(super) fn is_gone(&self) -> bool {
        self.gone
    }

    pub(super) fn set_max_request(&mut self, len: usize) {
        self.max_request = len.min(ctaphid::MAX_MESSAGE_LEN);
    }

    /// Allocates the channel and describes the link.
    pub(super) async fn open(&mut self, ctx: &mut OpCtx<'_>) -> Result<LinkInfo, DeviceError> {
        let init = self.init(ctx).await?;
        Ok(LinkInfo::Hid {
            protocol_version: init.protocol_version,
            device_version: init.device_version,
            capabilities: init.capabilities,
        })
    }

    /// A CTAP2 request (CTAPHID_CBOR).
    pub(super) async fn cbor(
        &mut self,
        payload: &[u8],
        ctx: &mut OpCtx<'_>,
    ) -> Result<Vec<u8>, DeviceError> {
        let init = self.channel(ctx).await?;
        if !init.capabilities.cbor() {
            return Err(DeviceError::Unsupported(Unsupported::Ctap2));
        }
        self.transact(Command::Cbor, payload, ctx).await
    }

    /// CTAPHID_WINK (CTAP 2.2 §11.2.9.2.1).
    pub(super) async fn wink(&mut self, ctx: &mut OpCtx<'_>) -> Result<Vec<u8>, DeviceError> {
        let init = self.channel(ctx).await?;
        if !init.capabilities.wink() {
            return Err(DeviceError::Unsupported(Unsupported::Wink));
        }
        self.transact(Command::Wink, &[], ctx).await
    }

    /// A U2F command APDU in CTAPHID_MSG (CTAP 2.2 §11.2.9.1.1); the answer is the response
    /// APDU.
    pub(super) async fn u2f(
        &mut self,
        apdu: &[u8],
        ctx: &mut OpCtx<'_>,
    ) -> Result<Vec<u8>, DeviceError> {
        let init = self.channel(ctx).await?;
        if !init.capabilities.msg() {
            return Err(DeviceError::Unsupported(Unsupported::U2f));
        }
        self.transact(Command::Msg, apdu, ctx).await
    }

    /// Drops whatever the key sends while no request is in flight; returns when it is gone.
    pub(super) async fn idle(&mut self) -> DeviceError {
        loop {
            match self.link.rx.recv().await {
                Some(Ok(_)) => trace!("report while idle dropped"),
                Some(Err(error)) => {
                    self.gone = true;
                    return error.into();
                }
                None => {
                    self.gone = true;
                    return DeviceError::DeviceRemoved;
                }
            }
        }
    }

    /// The current channel, allocated on first use.
    async fn channel(&mut self, ctx: &mut OpCtx<'_>) -> Result<InitResponse, DeviceError> {
        match self.channel {
            Some(init) => Ok(init),
            None => self.init(ctx).await,
        }
    }

    /// CTAPHID_INIT on the broadcast channel (CTAP 2.2 §11.2.9.1.3).
    async fn init(&mut self, ctx: &mut OpCtx<'_>) -> Result<InitResponse, DeviceError> {
        self.channel = None;
        let mut busy_attempts = 0;
        'attempt: loop {
            let mut nonce = [0u8; ctaphid::INIT_NONCE_LEN];
            self.rng
                .draw(RandomnessKind::Nonce, |rng| rng.fill_bytes(&mut nonce))?;
            self.write(&ctaphid::init_request(&nonce), ctx).await?;
            // An INIT answer is 17 bytes; anything longer on the broadcast channel is not one.
            let mut rx = Reassembler::new(Cid::BROADCAST, ctaphid::INIT_DATA_LEN);
            let mut inactive_at = Instant::now() + self.config.inactivity_timeout;
            loop {
                let until = inactive_at.min(ctx.deadline);
                let report = match ctx.wait(self.link.rx.recv(), until, true).await {
                    Wake::Ready(received) => self.received(received)?,
                    Wake::Cancel => return Err(DeviceError::Cancelled),
                    Wake::Timer => return Err(DeviceError::Timeout),
                };
                let message = match rx.push(&report) {
                    Ok(PushOutcome::Complete(message)) => message,
                    Ok(PushOutcome::Foreign(_) | PushOutcome::NeedMore) => continue,
                    Err(error) => return Err(error.into()),
                };
                match message.cmd {
                    Command::Init => match ctaphid::parse_init_response(&message.payload, &nonce) {
                        Ok(init) => {
                            debug!(cid = %init.cid, "channel allocated");
                            self.channel = Some(init);
                            return Ok(init);
                        }
                        // Another client's INIT, answered on the shared broadcast channel.
                        Err(InitResponseError::NonceMismatch) => continue,
                        Err(error) => return Err(error.into()),
                    },
                    Command::Keepalive => {
                        inactive_at = Instant::now() + self.config.inactivity_timeout
                    }
                    Command::Error => {
                        match message.payload.first().copied().map(HidErrorCode::from) {
                            Some(HidErrorCode::ChannelBusy) => {
                                busy_attempts += 1;
                                self.back_off(busy_attempts, ctx).await?;
                                continue 'attempt;
                            }
                            Some(code) => return Err(DeviceError::Hid(code)),
                            None => return Err(ProtocolError::EmptyHidError.into()),
                        }
                    }
                    other => return Err(ProtocolError::UnexpectedInitAnswer(other).into()),
                }
            }
        }
    }

    /// One request/response exchange, with the CHANNEL_BUSY and INVALID_CHANNEL recoveries.
    async fn transact(
        &mut self,
        cmd: Command,
        payload: &[u8],
        ctx: &mut OpCtx<'_>,
    ) -> Result<Vec<u8>, DeviceError> {
        let mut busy_attempts = 0;
        let mut reallocated = false;
        loop {
            let init = self.channel(ctx).await?;
            match self.attempt(init.cid, cmd, payload, ctx).await {
                Attempt::Done(result) => return result,
                Attempt::Busy => {
                    busy_attempts += 1;
                    self.back_off(busy_attempts, ctx).await?;
                }
                Attempt::InvalidChannel if !reallocated => {
                    debug!(cid = %init.cid, "channel invalid; allocating a new one");
                    reallocated = true;
                    self.channel = None;
                }
                Attempt::InvalidChannel => {
                    self.channel = None;
                    return Err(DeviceError::Hid(HidErrorCode::InvalidChannel));
                }
            }
        }
    }

    /// Sends the request once and reads until its answer, an error, a cancel or a deadline.
    async fn attempt(
        &mut self,
        cid: Cid,
        cmd: Command,
        payload: &[u8],
        ctx: &mut OpCtx<'_>,
    ) -> Attempt {
        let mut tx = match Transaction::new(cid, cmd, payload, self.max_request) {
            Ok(tx) => tx,
            Err(error) => return Attempt::Done(Err(error.into())),
        };
        for report in tx.reports() {
            if let Err(error) = self.write(report, ctx).await {
                return Attempt::Done(Err(error));
            }
        }
        let mut inactive_at = Instant::now() + self.config.inactivity_timeout;
        // Set once CANCEL is sent: how long the key has to end the request.
        let mut cancel_until: Option<Instant> = None;
        loop {
            let until = cancel_until.unwrap_or_else(|| inactive_at.min(ctx.deadline));
            let report = match ctx.wait(self.link.rx.recv(), until, true).await {
                Wake::Ready(received) => match self.received(received) {
                    Ok(report) => report,
                    Err(error) => return Attempt::Done(Err(error)),
                },
                Wake::Cancel => {
                    if let Err(error) = self.write(&tx.cancel_report(), ctx).await {
                        return Attempt::Done(Err(error));
                    }
                    cancel_until = Some(Instant::now() + self.config.cancel_grace);
                    continue;
                }
                Wake::Timer => {
                    // Cancelled but not ended in time, or silent, or past the deadline: give
                    // the channel up so a late answer cannot be taken for another request's.
                    self.channel = None;
                    if cancel_until.is_some() {
                        return Attempt::Done(Err(DeviceError::Cancelled));
                    }
                    debug!(%cid, "deadline passed; cancelling");
                    if let Err(error) = self.write(&tx.cancel_report(), ctx).await {
                        return Attempt::Done(Err(error));
                    }
                    return Attempt::Done(Err(DeviceError::Timeout));
                }
            };
            let event = match tx.on_report(&report) {
                Ok(event) => event,
                Err(error) => {
                    debug!(%cid, %error, "malformed frame; dropping the channel");
                    self.channel = None;
                    return Attempt::Done(Err(error.into()));
                }
            };
            let cancelled = ctx.cancel_requested();
            match event {
                TransactionEvent::ForeignFrame(other) => {
                    trace!(%other, "frame for another channel")
                }
                TransactionEvent::InProgress => {}
                TransactionEvent::Keepalive(status) => {
                    inactive_at = Instant::now() + self.config.inactivity_timeout;
                    ctx.keepalive(status);
                }
                // Once cancelled, whatever ends the request ends it as cancelled.
                TransactionEvent::Response(_) | TransactionEvent::Error(_) if cancelled => {
                    return Attempt::Done(Err(DeviceError::Cancelled));
                }
                TransactionEvent::Response(response) => return Attempt::Done(Ok(response)),
                TransactionEvent::Error(HidErrorCode::ChannelBusy) => return Attempt::Busy,
                TransactionEvent::Error(HidErrorCode::InvalidChannel) => {
                    return Attempt::InvalidChannel;
                }
                TransactionEvent::Error(code) => return Attempt::Done(Err(DeviceError::Hid(code))),
            }
        }
    }

    /// The pause before retry `attempt` after CHANNEL_BUSY, or [`DeviceError::Busy`] when the
    /// retries are used up. The link stays watched (unplug, cancel, deadline).
    async fn back_off(&mut self, attempt: u32, ctx: &mut OpCtx<'_>) -> Result<(), DeviceError> {
        if attempt > self.config.busy_retries {
            return Err(DeviceError::Busy);
        }
        let resume = Instant::now() + self.config.busy_pause(attempt);
        debug!(attempt, "channel busy; backing off");
        loop {
            if resume > ctx.deadline {
                return Err(DeviceError::Timeout);
            }
            match ctx.wait(self.link.rx.recv(), resume, true).await {
                // Nothing is in flight: whatever comes now is not ours.
                Wake::Ready(received) => drop(self.received(received)?),
                Wake::Cancel => return Err(DeviceError::Cancelled),
                Wake::Timer => return Ok(()),
            }
        }
    }

    /// Writes one report; waits (without taking a cancel) while the transport's queue is
    /// full, up to the request's deadline.
    async fn write(&mut self, report: &Report, ctx: &mut OpCtx<'_>) -> Result<(), DeviceError> {
        let deadline = ctx.deadline;
        match ctx.wait(self.link.tx.send(*report), deadline, false).await {
            Wake::Ready(Ok(())) => Ok(()),
            Wake::Ready(Err(_)) => {
                self.gone = true;
                Err(DeviceError::DeviceRemoved)
            }
            Wake::Timer | Wake::Cancel => {
                self.channel = None;
                Err(DeviceError::Timeout)
            }
        }
    }

    /// What a read from the link means: a report, or the device is gone (the transport
    /// contract: an error or a closed channel means the device is gone).
    fn received(
        &mut self,
        received: Option<Result<Report, LinkError>>,
    ) -> Result<Report, DeviceError> {
        match received {
            Some(Ok(report)) => Ok(report),
            Some(Err(error)) => {
                self.gone = true;
                Err(error.into())
            }
            None => {
                self.gone = true;
                Err(DeviceError::DeviceRemoved)
            }
        }
    }
}
