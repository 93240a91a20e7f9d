//! The APDU engine (CTAP 2.2 §11.3): drives [`ctap::iso7816`] over an [`ApduLink`].
//!
//! - SELECT of the FIDO applet before the first command, and again whenever the card may have
//!   lost it: after an abandoned exchange, a link error (a re-tapped card is a new card
//!   session), or an answer that says no applet is selected (`6A82`, `6D00`, `6E00` to the
//!   first command), in which case the command is sent once more after the SELECT.
//! - NFCCTAP_MSG through [`Exchange`], in extended-length framing first; a card that answers
//!   the extended form with `6700` or `6D00` gets short APDUs with command chaining from then
//!   on. GET RESPONSE after `61xx` is the exchange's job.
//! - `9100` status updates become operation events and are polled with NFCCTAP_GETRESPONSE
//!   every [`DeviceConfig::nfc_poll_interval`]; a cancel, or the deadline passing during
//!   such a wait, is sent as its cancel form.
//! - One APDU at a time: the link has no way to interrupt a transmit, so a cancel or deadline
//!   during one waits at most [`DeviceConfig::cancel_grace`] for it, then abandons it.

use ctap::iso7816::{
    self, AppletVersion, CommandApdu, Exchange, ExchangeError, ExchangeEvent, Framing,
    ResponseApdu, StatusWord,
};
use tokio::sync::oneshot;
use tokio::time::Instant;
use tracing::debug;

use super::DeviceConfig;
use super::actor::{OpCtx, Wake};
use super::error::{DeviceError, Unsupported};
use super::registry::LinkInfo;
use crate::transport::{ApduLink, ApduRequest, LinkError};

/// Bound on a joined response (all `61xx` parts): the largest extended-length Ne.
const MAX_RESPONSE_LEN: usize = 0x1_0000;

/// Largest NFCCTAP_MSG payload in one extended APDU (and so in any framing we use).
const MAX_REQUEST_LEN: usize = 0xFFFF;

/// How an exchange failed.
enum Failure {
    /// The exchange state machine refused an answer; `first` when it was the answer to the
    /// exchange's first command (the case that calls for a re-SELECT or a framing change).
    Exchange { error: ExchangeError, first: bool },
    /// Anything else, final.
    Device(DeviceError),
}

impl From<DeviceError> for Failure {
    fn from(error: DeviceError) -> Self {
        Self::Device(error)
    }
}

/// The ISO 7816 side of a device actor.
pub(super) struct ApduEngine {
    link: ApduLink,
    config: DeviceConfig,
    /// The applet's answer to SELECT, while we believe it is selected.
    selected: Option<AppletVersion>,
    framing: Framing,
    max_request: usize,
    gone: bool,
}

impl ApduEngine {
    pub(super) fn new(link: ApduLink, config: DeviceConfig) -> Self {
        Self {
            link,
            config,
            selected: None,
            framing: Framing::Extended,
            max_request: MAX_REQUEST_LEN,
            gone: false,
        }
    }

    pub(super) fn is_gone(&self) -> bool {
        self.gone
    }

    pub(super) fn set_max_request(&mut self, len: usize) {
        self.max_request = len.min(MAX_REQUEST_LEN);
    }

    /// Selects the FIDO applet and describes the link.
    pub(super) async fn open(&mut self, ctx: &mut OpCtx<'_>) -> Result<LinkInfo, DeviceError> {
        let applet = self.select(ctx).await?;
        Ok(LinkInfo::Apdu { applet })
    }

    /// Waits while idle; returns once the card is gone (the transport closed the link).
    pub(super) async fn idle(&mut self) -> DeviceError {
        self.link.tx.closed().await;
        self.gone = true;
        DeviceError::DeviceRemoved
    }

    /// A CTAP2 request in NFCCTAP_MSG (CTAP 2.2 §11.3.7.1); the answer is the CTAP status
    /// byte and CBOR.
    pub(super) async fn cbor(
        &mut self,
        payload: &[u8],
        ctx: &mut OpCtx<'_>,
    ) -> Result<Vec<u8>, DeviceError> {
        if payload.len() > self.max_request {
            return Err(ctap::ctaphid::EncodeError::PayloadTooLarge {
                len: payload.len(),
                limit: self.max_request,
            }
            .into());
        }
        let mut reselected = false;
        loop {
            if self.selected.is_none() {
                self.select(ctx).await?;
            }
            let exchange = Exchange::ctap(payload, self.framing, MAX_RESPONSE_LEN)?;
            let error = match self.exchange(exchange, ctx).await {
                Ok(response) => return Ok(response.data),
                Err(Failure::Device(error)) => return Err(error),
                Err(Failure::Exchange { error, first }) => {
                    let ExchangeError::UnexpectedStatus(sw) = error else {
                        return Err(error.into());
                    };
                    if !first {
                        return Err(error.into());
                    }
                    sw
                }
            };
            match error {
                StatusWord::WrongLength | StatusWord::InsNotSupported
                    if self.framing == Framing::Extended =>
                {
                    debug!(
                        sw = error.to_u16(),
                        "extended APDU refused; using short chaining"
                    );
                    self.framing = Framing::ShortChained;
                }
                StatusWord::FileNotFound
                | StatusWord::InsNotSupported
                | StatusWord::ClaNotSupported
                    if !reselected =>
                {
                    debug!(sw = error.to_u16(), "applet lost; selecting it again");
                    reselected = true;
                    self.selected = None;
                }
                StatusWord::InsNotSupported => {
                    return Err(DeviceError::Unsupported(Unsupported::Ctap2));
                }
                other => return Err(ExchangeError::UnexpectedStatus(other).into()),
            }
        }
    }

    /// A CTAP1/U2F command APDU, sent as it is (CTAP 2.2 §11.3.1: no extra framing); the answer
    /// is the response APDU, data and status word, GET RESPONSE parts joined.
    pub(super) async fn u2f(
        &mut self,
        apdu: &[u8],
        ctx: &mut OpCtx<'_>,
    ) -> Result<Vec<u8>, DeviceError> {
        let (command, form) = CommandApdu::parse(apdu)?;
        let framing = match form {
            iso7816::ApduForm::Short => Framing::ShortChained,
            iso7816::ApduForm::Extended => Framing::Extended,
        };
        let mut reselected = false;
        loop {
            if self.selected.is_none() {
                self.select(ctx).await?;
            }
            let exchange = Exchange::raw(&command, framing, MAX_RESPONSE_LEN)?;
            let response = match self.exchange(exchange, ctx).await {
                Ok(response) => response,
                Err(Failure::Device(error)) => return Err(error),
                Err(Failure::Exchange { error, .. }) => return Err(error.into()),
            };
            if response.sw == StatusWord::FileNotFound && !reselected {
                reselected = true;
                self.selected = None;
                continue;
            }
            let mut bytes = response.data;
            bytes.extend_from_slice(&response.sw.to_u16().to_be_bytes());
            return Ok(bytes);
        }
    }

    /// SELECT of the FIDO applet (CTAP 2.2 §11.3.3).
    async fn select(&mut self, ctx: &mut OpCtx<'_>) -> Result<AppletVersion, DeviceError> {
        self.selected = None;
        let exchange = Exchange::raw(
            &iso7816::select_fido_applet(),
            Framing::ShortChained,
            MAX_RESPONSE_LEN,
        )?;
        let response = match self.exchange(exchange, ctx).await {
            Ok(response) => response,
            Err(Failure::Device(error)) => return Err(error),
            Err(Failure::Exchange { error, .. }) => return Err(error.into()),
        };
        let applet = match AppletVersion::from_select_response(&response) {
            Ok(applet) => applet,
            Err(ExchangeError::UnexpectedStatus(sw)) => {
                debug!(sw = sw.to_u16(), "SELECT of the FIDO applet refused");
                return Err(DeviceError::Unsupported(Unsupported::FidoApplet));
            }
            Err(error) => return Err(error.into()),
        };
        self.selected = Some(applet.clone());
        Ok(applet)
    }

    /// Runs `exchange` to its end: transmits, follows chaining and GET RESPONSE, polls status
    /// updates, and cancels on the caller's request or when the deadline passes during a
    /// status-update wait.
    async fn exchange(
        &mut self,
        mut exchange: Exchange,
        ctx: &mut OpCtx<'_>,
    ) -> Result<ResponseApdu, Failure> {
        let mut apdu = exchange.first_command().to_vec();
        let mut first = true;
        let mut ending: Option<Ending> = None;
        loop {
            let response = self.transmit(apdu, ctx, &mut ending).await?;
            let event = exchange
                .on_response(&response)
                .map_err(|error| Failure::Exchange { error, first })?;
            first = false;
            match event {
                ExchangeEvent::Transmit(next) => apdu = next,
                ExchangeEvent::Complete(response) => {
                    return match ending {
                        Some(ending) => Err(ending.error().into()),
                        None => Ok(response),
                    };
                }
                ExchangeEvent::StatusUpdate { status, poll } => {
                    ctx.keepalive(status);
                    if ending.is_none() {
                        ending = self.pause(ctx).await?;
                    }
                    apdu = match (ending, exchange.cancel_command()) {
                        (Some(_), Some(cancel)) => cancel,
                        _ => poll,
                    };
                }
            }
        }
    }

    /// Transmits one APDU and waits for its answer. A cancel while waiting starts the grace
    /// period; the answer is still awaited until it ends.
    async fn transmit(
        &mut self,
        apdu: Vec<u8>,
        ctx: &mut OpCtx<'_>,
        ending: &mut Option<Ending>,
    ) -> Result<Vec<u8>, DeviceError> {
        let (reply, mut answer) = oneshot::channel();
        let request = ApduRequest { apdu, reply };
        let deadline = ctx.deadline;
        match ctx.wait(self.link.tx.send(request), deadline, false).await {
            Wake::Ready(Ok(())) => {}
            Wake::Ready(Err(_)) => {
                self.gone = true;
                return Err(DeviceError::DeviceRemoved);
            }
            Wake::Timer | Wake::Cancel => {
                self.selected = None;
                return Err(DeviceError::Timeout);
            }
        }
        loop {
            let until = ending.map_or(deadline, |ending| ending.until);
            match ctx.wait(&mut answer, until, true).await {
                Wake::Ready(Ok(Ok(response))) => return Ok(response),
                Wake::Ready(Ok(Err(LinkError::Disconnected)) | Err(_)) => {
                    // The transport dropped the request or says the card is gone.
                    self.gone = true;
                    return Err(DeviceError::DeviceRemoved);
                }
                Wake::Ready(Ok(Err(error))) => {
                    // A failed transmit may mean a new card session: select again next time.
                    self.selected = None;
                    return Err(DeviceError::Link(error));
                }
                Wake::Cancel => {
                    *ending = Some(Ending::cancelled(&self.config));
                }
                Wake::Timer => {
                    // The APDU is abandoned; its answer goes nowhere. The applet's state is
                    // unknown now, so the next command starts with a SELECT.
                    self.selected = None;
                    return Err(ending.map_or(DeviceError::Timeout, Ending::error));
                }
            }
        }
    }

    /// The pause between status polls. Returns how the request is to end when the caller
    /// cancels or the deadline passes meanwhile: the card is then sent the cancel form.
    async fn pause(&mut self, ctx: &mut OpCtx<'_>) -> Result<Option<Ending>, DeviceError> {
        let resume = (Instant::now() + self.config.nfc_poll_interval).min(ctx.deadline);
        match ctx.wait(self.link.tx.closed(), resume, true).await {
            Wake::Ready(()) => {
                self.gone = true;
                Err(DeviceError::DeviceRemoved)
            }
            Wake::Cancel => Ok(Some(Ending::cancelled(&self.config))),
            Wake::Timer if Instant::now() >= ctx.deadline => {
                Ok(Some(Ending::timed_out(&self.config)))
            }
            Wake::Timer => Ok(None),
        }
    }
}

/// Why an exchange is being wound down, and how long the card has to end it.
#[derive(Clone, Copy, Debug)]
struct Ending {
    until: Instant,
    cancelled: bool,
}

impl Ending {
    fn cancelled(config: &DeviceConfig) -> Self {
        Self {
            until: Instant::now() + config.cancel_grace,
            cancelled: true,
        }
    }

    fn timed_out(config: &DeviceConfig) -> Self {
        Self {
            until: Instant::now() + config.cancel_grace,
            cancelled: false,
        }
    }

    fn error(self) -> DeviceError {
        if self.cancelled {
            DeviceError::Cancelled
        } else {
            DeviceError::Timeout
        }
    }
}
