//! The device actor: one task per key, owning the key's link.
//!
//! It probes the key once (channel or applet, then getInfo), tells the registry, and then
//! serves [`Request`]s one at a time. While idle it waits on two things only: its request
//! channel and its link (to notice an unplug). While a request is in flight, [`OpCtx::wait`]
//! also answers every other request with [`DeviceError::Busy`] and watches the caller's
//! cancellation.

use std::future::{Future, pending};
use std::sync::Arc;

use ctap::command::get_info::{self, GetInfo};
use ctap::command::{Command as _, decode_response};
use ctap::ctaphid::KeepaliveStatus;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, warn};
use zeroize::Zeroizing;

use super::DeviceConfig;
use super::apdu::ApduEngine;
use super::authenticator::OpEvent;
use super::error::{DeviceError, Unsupported};
use super::hid::HidEngine;
use super::registry::LinkInfo;
use super::rng::DeviceRng;
use crate::transport::{Connection, DeviceId};

/// What a request's reply carries: the raw response (CTAP status byte and CBOR, a U2F
/// response APDU, or nothing for wink). Zeroized on drop: clientPIN answers carry encrypted
/// tokens.
pub(super) type Reply = Result<Zeroizing<Vec<u8>>, DeviceError>;

/// How many requests may wait in an actor's mailbox. Requests are answered (served or
/// refused as busy) as soon as they arrive; this only absorbs bursts.
pub(super) const MAILBOX: usize = 8;

/// How many operation events may wait for a slow reader before new ones are dropped.
pub(super) const EVENT_BACKLOG: usize = 16;

/// One request from an [`Authenticator`](super::Authenticator) handle.
pub(super) struct Request {
    pub(super) kind: RequestKind,
    /// The overall deadline.
    pub(super) deadline: Instant,
    /// Where keepalive events go, if the caller wants them.
    pub(super) events: Option<mpsc::Sender<OpEvent>>,
    /// Cancellation from the caller's [`CancelHandle`](super::CancelHandle)s.
    pub(super) cancel: Option<mpsc::Receiver<()>>,
    /// Read getInfo again after a successful answer (CTAP 2.2 asks platforms to, after a PIN
    /// is set or changed).
    pub(super) refresh_info: bool,
    pub(super) reply: oneshot::Sender<Reply>,
}

impl Request {
    /// Answers the request with `error` without running it.
    pub(super) fn refuse(self, error: DeviceError) {
        // The caller may have gone away already; nothing to do then.
        let _ = self.reply.send(Err(error));
    }
}

/// What to send.
pub(super) enum RequestKind {
    /// A CTAP2 request: command byte, then CBOR.
    Cbor(Zeroizing<Vec<u8>>),
    /// CTAPHID_WINK.
    Wink,
    /// A CTAP1/U2F command APDU (CTAPHID_MSG, or a plain APDU over NFC).
    U2f(Vec<u8>),
}

/// What the actor tells the registry. `generation` tells two actors with the same id apart
/// (a key replugged on the same port).
#[derive(Debug)]
pub(super) enum ActorStatus {
    /// The probe is done: the key can take requests.
    Ready {
        id: DeviceId,
        generation: u64,
        link: Option<LinkInfo>,
        info: Option<Arc<get_info::Response>>,
    },
    /// The device is not a FIDO authenticator (an NFC card without the FIDO applet).
    Rejected { id: DeviceId, generation: u64 },
    /// A request started or ended.
    Busy {
        id: DeviceId,
        generation: u64,
        busy: bool,
    },
    /// getInfo was read again.
    InfoChanged {
        id: DeviceId,
        generation: u64,
        info: Arc<get_info::Response>,
    },
    /// The link closed; the actor has ended.
    Gone { id: DeviceId, generation: u64 },
}

/// What ended an [`OpCtx::wait`].
pub(super) enum Wake<T> {
    /// The awaited future finished.
    Ready(T),
    /// The caller cancelled (reported once per request).
    Cancel,
    /// `until` passed.
    Timer,
}

/// The context of the request in flight, lent to the engines.
pub(super) struct OpCtx<'a> {
    requests: &'a mut mpsc::Receiver<Request>,
    cancel: Option<mpsc::Receiver<()>>,
    reply: Option<&'a mut oneshot::Sender<Reply>>,
    events: Option<mpsc::Sender<OpEvent>>,
    last_status: Option<KeepaliveStatus>,
    cancel_requested: bool,
    /// The overall deadline of the request.
    pub(super) deadline: Instant,
}

impl<'a> OpCtx<'a> {
    fn new(
        requests: &'a mut mpsc::Receiver<Request>,
        deadline: Instant,
        cancel: Option<mpsc::Receiver<()>>,
        reply: Option<&'a mut oneshot::Sender<Reply>>,
        events: Option<mpsc::Sender<OpEvent>>,
    ) -> Self {
        Self {
            requests,
            cancel,
            reply,
            events,
            last_status: None,
            cancel_requested: false,
            deadline,
        }
    }

    /// Whether the caller has cancelled.
    pub(super) fn cancel_requested(&self) -> bool {
        self.cancel_requested
    }

    /// A KEEPALIVE or NFC status update: tell the caller when the status changes (keys repeat
    /// it every 100 ms; the caller only needs the transitions).
    pub(super) fn keepalive(&mut self, status: KeepaliveStatus) {
        if self.last_status == Some(status) {
            return;
        }
        self.last_status = Some(status);
        let event = match status {
            KeepaliveStatus::Processing => OpEvent::Processing,
            KeepaliveStatus::UpNeeded => OpEvent::TouchNeeded,
            KeepaliveStatus::Unknown(_) => return,
        };
        if let Some(events) = &self.events {
            // Never block the key's link on a slow reader: a full backlog drops the event.
            let _ = events.try_send(event);
        }
    }

    /// Waits for `future`, until `until`, or (when `cancellable`) for the caller to cancel,
    /// whichever comes first. Meanwhile every new request is refused as busy.
    ///
    /// `future` must be cancel safe: it is dropped unfinished on a cancel or timer.
    pub(super) async fn wait<F: Future>(
        &mut self,
        future: F,
        until: Instant,
        cancellable: bool,
    ) -> Wake<F::Output> {
        let watch_cancel = cancellable && !self.cancel_requested;
        let wake = {
            let Self {
                requests,
                cancel,
                reply,
                ..
            } = self;
            let mut future = std::pin::pin!(future);
            let mut timer = std::pin::pin!(tokio::time::sleep_until(until));
            loop {
                tokio::select! {
                    biased;
                    output = &mut future => break Wake::Ready(output),
                    () = &mut timer => break Wake::Timer,
                    () = cancelled(cancel), if watch_cancel => break Wake::Cancel,
                    () = caller_gone(reply), if watch_cancel => break Wake::Cancel,
                    Some(request) = requests.recv() => request.refuse(DeviceError::Busy),
                }
            }
        };
        if matches!(wake, Wake::Cancel) {
            self.cancel_requested = true;
        }
        wake
    }
}

/// Resolves when a cancel handle fires; never when all of them are dropped.
async fn cancelled(cancel: &mut Option<mpsc::Receiver<()>>) {
    if let Some(rx) = cancel.as_mut()
        && rx.recv().await.is_some()
    {
        return;
    }
    *cancel = None;
    pending().await
}

/// Resolves when the caller dropped the operation: nobody wants the answer any more.
async fn caller_gone(reply: &mut Option<&mut oneshot::Sender<Reply>>) {
    match reply {
        Some(reply) => reply.closed().await,
        None => pending().await,
    }
}

/// The protocol engine for the link type.
pub(super) enum Engine {
    Hid(HidEngine),
    Apdu(ApduEngine),
}

impl Engine {
    /// The engine for `connection`'s link type; the CTAPHID engine draws its INIT nonces from
    /// `rng` (APDU links have no nonce).
    pub(super) fn new(connection: Connection, config: &DeviceConfig, rng: Arc<DeviceRng>) -> Self {
        match connection {
            Connection::Hid(link) => Self::Hid(HidEngine::new(link, config.clone(), rng)),
            Connection::Apdu(link) => Self::Apdu(ApduEngine::new(link, config.clone())),
        }
    }

    /// Allocates a channel (CTAPHID_INIT) or selects the FIDO applet.
    async fn open(&mut self, ctx: &mut OpCtx<'_>) -> Result<LinkInfo, DeviceError> {
        match self {
            Self::Hid(engine) => engine.open(ctx).await,
            Self::Apdu(engine) => engine.open(ctx).await,
        }
    }

    async fn cbor(&mut self, payload: &[u8], ctx: &mut OpCtx<'_>) -> Result<Vec<u8>, DeviceError> {
        match self {
            Self::Hid(engine) => engine.cbor(payload, ctx).await,
            Self::Apdu(engine) => engine.cbor(payload, ctx).await,
        }
    }

    async fn run(&mut self, kind: &RequestKind, ctx: &mut OpCtx<'_>) -> Reply {
        let response = match kind {
            RequestKind::Cbor(payload) => self.cbor(payload, ctx).await?,
            RequestKind::Wink => match self {
                Self::Hid(engine) => engine.wink(ctx).await?,
                Self::Apdu(_) => return Err(DeviceError::Unsupported(Unsupported::Wink)),
            },
            RequestKind::U2f(apdu) => match self {
                Self::Hid(engine) => engine.u2f(apdu, ctx).await?,
                Self::Apdu(engine) => engine.u2f(apdu, ctx).await?,
            },
        };
        Ok(Zeroizing::new(response))
    }

    /// Requests larger than the key's getInfo maxMsgSize are refused before sending.
    fn set_max_request(&mut self, len: usize) {
        match self {
            Self::Hid(engine) => engine.set_max_request(len),
            Self::Apdu(engine) => engine.set_max_request(len),
        }
    }

    /// Waits while idle; returns once the device is gone. Anything the key sends meanwhile
    /// (other clients' traffic on hidraw, the late answer of an abandoned request) is dropped.
    async fn idle(&mut self) -> DeviceError {
        match self {
            Self::Hid(engine) => engine.idle().await,
            Self::Apdu(engine) => engine.idle().await,
        }
    }

    /// Whether the link has closed.
    fn is_gone(&self) -> bool {
        match self {
            Self::Hid(engine) => engine.is_gone(),
            Self::Apdu(engine) => engine.is_gone(),
        }
    }
}

/// One key's actor.
pub(super) struct DeviceActor {
    id: DeviceId,
    generation: u64,
    config: DeviceConfig,
    engine: Engine,
    requests: mpsc::Receiver<Request>,
    status: mpsc::Sender<ActorStatus>,
    info: watch::Sender<Option<Arc<get_info::Response>>>,
}

impl DeviceActor {
    /// An actor driving `engine`; run it with [`DeviceActor::run`].
    pub(super) fn new(
        id: DeviceId,
        generation: u64,
        config: DeviceConfig,
        engine: Engine,
        requests: mpsc::Receiver<Request>,
        status: mpsc::Sender<ActorStatus>,
        info: watch::Sender<Option<Arc<get_info::Response>>>,
    ) -> Self {
        Self {
            id,
            generation,
            config,
            engine,
            requests,
            status,
            info,
        }
    }

    /// Probes the key, then serves requests until the link closes or every handle is gone.
    pub(super) async fn run(mut self) {
        match self.probe().await {
            Ok((link, info)) => {
                self.info.send_replace(info.clone());
                self.report(ActorStatus::Ready {
                    id: self.id.clone(),
                    generation: self.generation,
                    link,
                    info,
                })
                .await;
            }
            Err(DeviceError::Unsupported(Unsupported::FidoApplet)) => {
                debug!(device = %self.id, "not a FIDO authenticator");
                self.report(ActorStatus::Rejected {
                    id: self.id.clone(),
                    generation: self.generation,
                })
                .await;
                return;
            }
            Err(error) => {
                debug!(device = %self.id, %error, "probe ended");
                return self.gone().await;
            }
        }
        loop {
            if self.engine.is_gone() {
                return self.gone().await;
            }
            let request = tokio::select! {
                request = self.requests.recv() => request,
                error = self.engine.idle() => {
                    debug!(device = %self.id, %error, "link closed while idle");
                    None
                }
            };
            match request {
                Some(request) => self.serve(request).await,
                None => return self.gone().await,
            }
        }
    }

    /// Channel or applet, then getInfo. Fails only when the device is gone or is not a FIDO
    /// authenticator; a key that answers badly is still listed, without getInfo.
    async fn probe(
        &mut self,
    ) -> Result<(Option<LinkInfo>, Option<Arc<get_info::Response>>), DeviceError> {
        let deadline = Instant::now() + self.config.probe_timeout;
        let mut ctx = OpCtx::new(&mut self.requests, deadline, None, None, None);
        let link = match self.engine.open(&mut ctx).await {
            Ok(link) => link,
            Err(error) => {
                return probe_failed(&self.id, &self.engine, error).map(|()| (None, None));
            }
        };
        if !link.ctap2_capable() {
            return Ok((Some(link), None));
        }
        let info = match self.engine.cbor(&[GetInfo::CODE], &mut ctx).await {
            Ok(response) => match decode_response::<GetInfo>(&response) {
                Ok(info) => Some(Arc::new(info)),
                Err(error) => {
                    warn!(device = %self.id, %error, "getInfo failed");
                    None
                }
            },
            Err(error) => {
                probe_failed(&self.id, &self.engine, error)?;
                None
            }
        };
        if let Some(info) = &info {
            self.engine.set_max_request(info.max_msg_size());
        }
        Ok((Some(link), info))
    }

    /// Runs one request and answers it.
    async fn serve(&mut self, request: Request) {
        let Request {
            kind,
            deadline,
            events,
            cancel,
            refresh_info,
            mut reply,
        } = request;
        if reply.is_closed() {
            // The caller gave up before the key was even asked.
            return;
        }
        if Instant::now() >= deadline {
            let _ = reply.send(Err(DeviceError::Timeout));
            return;
        }
        self.set_busy(true).await;
        let mut result = {
            let mut ctx = OpCtx::new(
                &mut self.requests,
                deadline,
                cancel,
                Some(&mut reply),
                events,
            );
            self.engine.run(&kind, &mut ctx).await
            // The events sender drops here: the caller's event stream ends before the result.
        };
        let succeeded = matches!(&result, Ok(response) if response.first() == Some(&0x00));
        if refresh_info
            && succeeded
            && let Err(error) = self.refresh_info().await
        {
            warn!(device = %self.id, %error, "getInfo refresh failed");
            if self.engine.is_gone() {
                result = Err(error);
            }
        }
        if let Err(error) = &result {
            debug!(device = %self.id, %error, "request failed");
        }
        // The caller may have given up; then nobody reads the answer.
        let _ = reply.send(result);
        self.set_busy(false).await;
    }

    /// Reads getInfo again and publishes it.
    async fn refresh_info(&mut self) -> Result<(), DeviceError> {
        let deadline = Instant::now() + self.config.command_timeout;
        let mut ctx = OpCtx::new(&mut self.requests, deadline, None, None, None);
        let response = self.engine.cbor(&[GetInfo::CODE], &mut ctx).await?;
        let info = Arc::new(decode_response::<GetInfo>(&response)?);
        self.engine.set_max_request(info.max_msg_size());
        self.info.send_replace(Some(Arc::clone(&info)));
        self.report(ActorStatus::InfoChanged {
            id: self.id.clone(),
            generation: self.generation,
            info,
        })
        .await;
        Ok(())
    }

    async fn set_busy(&self, busy: bool) {
        self.report(ActorStatus::Busy {
            id: self.id.clone(),
            generation: self.generation,
            busy,
        })
        .await;
    }

    async fn gone(self) {
        debug!(device = %self.id, "device actor ends");
        self.report(ActorStatus::Gone {
            id: self.id.clone(),
            generation: self.generation,
        })
        .await;
    }

    async fn report(&self, status: ActorStatus) {
        // The registry only stops listening when it shuts down, and then aborts the actors.
        let _ = self.status.send(status).await;
    }
}

/// Sorts a probe failure: `Err` when the device is gone or not a FIDO authenticator (the
/// actor ends), `Ok` when the key is merely misbehaving (it is listed all the same, and the
/// next request tries again).
fn probe_failed(id: &DeviceId, engine: &Engine, error: DeviceError) -> Result<(), DeviceError> {
    if engine.is_gone() || matches!(error, DeviceError::Unsupported(Unsupported::FidoApplet)) {
        return Err(error);
    }
    warn!(device = %id, %error, "probe failed; the key is listed without getInfo");
    Ok(())
}
