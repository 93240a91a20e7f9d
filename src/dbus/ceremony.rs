//! `org.passkeyd.Ceremony1` objects: one actor per ceremony owns the [`Ceremony`] handle, its
//! current state, the pending PIN prompt and the outcome; the object's methods check the
//! caller is the owner and talk to the actor over a channel.

use std::collections::HashMap;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use tracing::{debug, warn};
use zbus::interface;
use zbus::message::Header;
use zbus::names::{BusName, UniqueName};
use zbus::object_server::SignalEmitter;
use zbus::zvariant::{OwnedObjectPath, Value};
use zeroize::Zeroizing;

use super::args::MAX_PIN_BYTES;
use super::authenticator_path;
use super::error::Error;
use super::hub::HubHandle;
use crate::ceremony::{
    Ceremony, CeremonyError, ErrorKind, NewPinPromptReason, PinPromptReason, PinReply, Progress,
    Registration, State,
};
use crate::transport::DeviceId;

/// Method calls that may wait for a ceremony's actor.
const CONTROL_CAPACITY: usize = 8;

/// Why the hub closes a ceremony: it is cancelled if still running, and its object removed
/// once it has ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Close {
    /// The owner left the bus.
    OwnerGone,
    /// The service shuts down.
    Shutdown,
    /// Too many ended ceremonies wait for their owners; this is the oldest.
    Evicted,
}

/// What the owner asks of the actor.
enum Command {
    GetState(oneshot::Sender<Snapshot>),
    Pin {
        pin: Zeroizing<String>,
        new: bool,
        reply: oneshot::Sender<Result<(), Error>>,
    },
    Cancel(oneshot::Sender<()>),
    Result(oneshot::Sender<Result<Outcome, Error>>),
    Release(oneshot::Sender<()>),
}

/// A state with its number and details.
#[derive(Clone, Debug)]
struct Snapshot {
    seq: u32,
    state: State,
    details: Details,
}

/// The details of a state (`GetState`, `StateChanged`).
#[derive(Clone, Debug, PartialEq)]
enum Details {
    Selecting {
        keys: Vec<DeviceId>,
    },
    NeedsPin {
        key: DeviceId,
        reason: &'static str,
        retries: i32,
    },
    NeedsNewPin {
        key: DeviceId,
        reason: &'static str,
        min_length: u32,
    },
    Key(DeviceId),
    Completed {
        key: DeviceId,
        credential_id: Vec<u8>,
    },
    Failed {
        kind: ErrorKind,
        message: String,
        key: Option<DeviceId>,
    },
    Cancelled {
        reason: &'static str,
    },
}

impl Details {
    fn to_map(&self) -> HashMap<String, Value<'static>> {
        let mut map = HashMap::new();
        let mut put = |k: &str, v: Value<'static>| {
            map.insert(k.to_owned(), v);
        };
        match self {
            Self::Selecting { keys } => {
                let paths: Vec<OwnedObjectPath> = keys.iter().map(authenticator_path).collect();
                put("authenticators", Value::from(paths));
            }
            Self::NeedsPin {
                key,
                reason,
                retries,
            } => {
                put("authenticator", authenticator_path(key).into());
                put("reason", Value::from(*reason));
                put("retries", Value::from(*retries));
            }
            Self::NeedsNewPin {
                key,
                reason,
                min_length,
            } => {
                put("authenticator", authenticator_path(key).into());
                put("reason", Value::from(*reason));
                put("min_length", Value::from(*min_length));
            }
            Self::Key(key) => put("authenticator", authenticator_path(key).into()),
            Self::Completed { key, credential_id } => {
                put("authenticator", authenticator_path(key).into());
                put("credential_id", Value::from(credential_id.clone()));
            }
            Self::Failed { kind, message, key } => {
                put("error", Value::from(kind.dbus_name()));
                put("message", Value::from(message.clone()));
                if let Some(key) = key {
                    put("authenticator", authenticator_path(key).into());
                }
            }
            Self::Cancelled { reason } => put("reason", Value::from(*reason)),
        }
        map
    }
}

/// A completed ceremony's result, for its owner only.
#[derive(Clone)]
struct Outcome {
    token: Zeroizing<String>,
    user_id: Option<String>,
    passkey_id: Option<String>,
    credential_id: Vec<u8>,
    authenticator: DeviceId,
    attestation_format: String,
}

impl Outcome {
    fn new(registration: &Registration) -> Self {
        Self {
            token: Zeroizing::new(registration.token.expose().to_owned()),
            user_id: registration.user_id.clone(),
            passkey_id: registration.passkey_id.clone(),
            credential_id: registration.credential_id.clone(),
            authenticator: registration.authenticator.clone(),
            attestation_format: registration.attestation_format.clone(),
        }
    }

    fn to_map(&self) -> HashMap<String, Value<'static>> {
        let mut map = HashMap::new();
        map.insert(
            "token".to_owned(),
            Value::from(self.token.as_str().to_owned()),
        );
        if let Some(user_id) = &self.user_id {
            map.insert("user_id".to_owned(), Value::from(user_id.clone()));
        }
        if let Some(passkey_id) = &self.passkey_id {
            map.insert("passkey_id".to_owned(), Value::from(passkey_id.clone()));
        }
        map.insert(
            "credential_id".to_owned(),
            Value::from(self.credential_id.clone()),
        );
        map.insert(
            "authenticator".to_owned(),
            authenticator_path(&self.authenticator).into(),
        );
        map.insert(
            "attestation_format".to_owned(),
            Value::from(self.attestation_format.clone()),
        );
        map
    }
}

/// The exported object. It holds no state of the ceremony, only who owns it and the way to
/// its actor, so that every method runs concurrently with `&self`.
pub(super) struct CeremonyObject {
    owner: String,
    control: mpsc::Sender<Command>,
}

impl CeremonyObject {
    fn check_owner(&self, header: &Header<'_>) -> Result<(), Error> {
        match header.sender() {
            Some(sender) if sender.as_str() == self.owner => Ok(()),
            _ => Err(Error::not_authorized(
                "only the ceremony's owner may call this",
            )),
        }
    }

    async fn ask<T>(
        &self,
        header: &Header<'_>,
        command: impl FnOnce(oneshot::Sender<T>) -> Command,
    ) -> Result<T, Error> {
        self.check_owner(header)?;
        let (reply, answer) = oneshot::channel();
        self.control
            .send(command(reply))
            .await
            .map_err(|_| Error::gone())?;
        answer.await.map_err(|_| Error::gone())
    }
}

#[interface(name = "org.passkeyd.Ceremony1")]
impl CeremonyObject {
    /// The current state: its number, name and details.
    #[zbus(out_args("seq", "state", "details"))]
    async fn get_state(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<(u32, String, HashMap<String, Value<'static>>), Error> {
        let snapshot = self.ask(&header, Command::GetState).await?;
        Ok((
            snapshot.seq,
            snapshot.state.as_str().to_owned(),
            snapshot.details.to_map(),
        ))
    }

    /// Answers `needs-pin` with the key's PIN.
    async fn submit_pin(
        &self,
        #[zbus(header)] header: Header<'_>,
        pin: String,
    ) -> Result<(), Error> {
        let pin = Zeroizing::new(pin);
        self.ask(&header, |reply| Command::Pin {
            pin,
            new: false,
            reply,
        })
        .await?
    }

    /// Answers `needs-new-pin` with the PIN to set.
    async fn set_new_pin(
        &self,
        #[zbus(header)] header: Header<'_>,
        pin: String,
    ) -> Result<(), Error> {
        let pin = Zeroizing::new(pin);
        self.ask(&header, |reply| Command::Pin {
            pin,
            new: true,
            reply,
        })
        .await?
    }

    /// Cancels the ceremony (idempotent); it ends in `cancelled` unless it had already ended.
    async fn cancel(&self, #[zbus(header)] header: Header<'_>) -> Result<(), Error> {
        self.ask(&header, Command::Cancel).await
    }

    /// The result of a completed ceremony; the ceremony's error once failed or cancelled;
    /// `Busy` while it runs.
    #[zbus(out_args("result"))]
    async fn result(
        &self,
        #[zbus(header)] header: Header<'_>,
    ) -> Result<HashMap<String, Value<'static>>, Error> {
        let outcome = self.ask(&header, Command::Result).await??;
        Ok(outcome.to_map())
    }

    /// The owner is done: the object goes (the ceremony is cancelled if still running).
    async fn release(&self, #[zbus(header)] header: Header<'_>) -> Result<(), Error> {
        self.ask(&header, Command::Release).await
    }

    /// A new state; unicast to the owner.
    #[zbus(signal)]
    async fn state_changed(
        emitter: &SignalEmitter<'_>,
        seq: u32,
        state: &str,
        details: HashMap<String, Value<'_>>,
    ) -> zbus::Result<()>;

    /// The result, once, before the final `StateChanged`; unicast to the owner.
    #[zbus(signal)]
    async fn completed(
        emitter: &SignalEmitter<'_>,
        result: HashMap<String, Value<'_>>,
    ) -> zbus::Result<()>;
}

/// What a pending prompt answers.
enum Prompt {
    Pin(PinReply),
    NewPin(PinReply),
}

/// The actor of one ceremony.
pub(super) struct Actor {
    pub(super) id: u64,
    pub(super) path: OwnedObjectPath,
    pub(super) owner: String,
    pub(super) connection: zbus::Connection,
    pub(super) hub: HubHandle,
    pub(super) linger: Duration,
}

/// The actor's mutable state.
struct Run {
    snapshot: Snapshot,
    prompt: Option<Prompt>,
    /// `None` while running.
    outcome: Option<Result<Outcome, Error>>,
    /// Closing: remove the object as soon as the ceremony has ended.
    closing: Option<Closing>,
    /// Whether signals still go to the owner.
    signals: bool,
}

#[derive(Clone, Copy, Debug)]
enum Closing {
    Released,
    Hub(Close),
}

impl Actor {
    /// Exports the object, reports it, then runs until the object is removed.
    pub(super) async fn run(
        self,
        ceremony: Ceremony,
        mut close: watch::Receiver<Option<Close>>,
        exported: oneshot::Sender<Result<(), Error>>,
    ) {
        let (control_tx, mut control) = mpsc::channel(CONTROL_CAPACITY);
        let object = CeremonyObject {
            owner: self.owner.clone(),
            control: control_tx,
        };
        let server = self.connection.object_server();
        if let Err(error) = server.at(&self.path, object).await {
            warn!(ceremony = self.id, %error, "cannot export the ceremony");
            let _ = exported.send(Err(Error::busy("cannot export the ceremony object")));
            // Dropping the handle cancels the ceremony.
            drop(ceremony);
            self.hub.removed(self.id).await;
            return;
        }
        self.hub.exported(self.id).await;
        let _ = exported.send(Ok(()));

        let mut ceremony = Some(ceremony);
        let mut run = Run {
            snapshot: Snapshot {
                seq: 1,
                state: State::Selecting,
                details: Details::Selecting { keys: Vec::new() },
            },
            prompt: None,
            outcome: None,
            closing: None,
            signals: true,
        };
        let mut linger_until: Option<Instant> = None;
        let mut hub_alive = true;
        loop {
            if run.outcome.is_some() && run.closing.is_some() {
                break;
            }
            let running = ceremony.is_some();
            tokio::select! {
                step = next(&mut ceremony), if running => {
                    match step {
                        Some(step) if !step.state().is_final() => self.step(&mut run, step).await,
                        final_step => {
                            let Some(handle) = ceremony.take() else { continue };
                            let result = handle.result().await;
                            self.finish(&mut run, final_step, result).await;
                            self.hub.ended(self.id).await;
                            linger_until = Some(Instant::now() + self.linger);
                        }
                    }
                }
                command = control.recv() => {
                    let Some(command) = command else { break };
                    self.command(&mut run, ceremony.as_ref(), command);
                }
                changed = close.changed(), if hub_alive => {
                    let reason = if changed.is_ok() {
                        *close.borrow_and_update()
                    } else {
                        // The hub is gone: the service is going away.
                        hub_alive = false;
                        Some(Close::Shutdown)
                    };
                    if let Some(reason) = reason {
                        self.close(&mut run, ceremony.as_ref(), Closing::Hub(reason));
                    }
                }
                () = linger(linger_until) => {
                    debug!(ceremony = self.id, "linger time over");
                    break;
                }
            }
        }
        // Dropping the handle (if any) cancels the ceremony.
        drop(ceremony);
        if let Err(error) = server.remove::<CeremonyObject, _>(&self.path).await {
            debug!(ceremony = self.id, %error, "ceremony object already gone");
        }
        self.hub.removed(self.id).await;
    }

    fn close(&self, run: &mut Run, ceremony: Option<&Ceremony>, closing: Closing) {
        if run.closing.is_none() {
            run.closing = Some(closing);
        }
        if matches!(closing, Closing::Hub(Close::OwnerGone)) {
            run.signals = false;
        }
        if let Some(ceremony) = ceremony {
            match closing {
                Closing::Hub(Close::Shutdown) => ceremony
                    .canceller()
                    .cancel_with(crate::ceremony::CancelReason::Shutdown),
                _ => ceremony.cancel(),
            }
        }
    }

    fn command(&self, run: &mut Run, ceremony: Option<&Ceremony>, command: Command) {
        match command {
            Command::GetState(reply) => {
                let _ = reply.send(run.snapshot.clone());
            }
            Command::Pin { pin, new, reply } => {
                let answer = if pin.len() > MAX_PIN_BYTES {
                    Err(Error::invalid(format!(
                        "the PIN is longer than {MAX_PIN_BYTES} bytes"
                    )))
                } else {
                    match (run.prompt.take(), new) {
                        (Some(Prompt::Pin(prompt)), false)
                        | (Some(Prompt::NewPin(prompt)), true) => {
                            prompt.send(pin);
                            Ok(())
                        }
                        (other, _) => {
                            run.prompt = other;
                            Err(Error::invalid(if new {
                                "not waiting for a new PIN"
                            } else {
                                "not waiting for a PIN"
                            }))
                        }
                    }
                };
                let _ = reply.send(answer);
            }
            Command::Cancel(reply) => {
                if let Some(ceremony) = ceremony {
                    ceremony.cancel();
                }
                let _ = reply.send(());
            }
            Command::Result(reply) => {
                let answer = match &run.outcome {
                    Some(outcome) => outcome.clone(),
                    None => Err(Error::busy("the ceremony is still running")),
                };
                let _ = reply.send(answer);
            }
            Command::Release(reply) => {
                self.close(run, ceremony, Closing::Released);
                run.signals = false;
                let _ = reply.send(());
            }
        }
    }

    /// A step before the end.
    async fn step(&self, run: &mut Run, step: Progress) {
        let state = step.state();
        let details = match step {
            Progress::Selecting { keys } => Details::Selecting { keys },
            Progress::NeedsPin(prompt) => {
                let details = Details::NeedsPin {
                    key: prompt.key.clone(),
                    reason: match prompt.reason {
                        PinPromptReason::First => "first",
                        PinPromptReason::WrongPin => "wrong-pin",
                        _ => "malformed",
                    },
                    retries: prompt
                        .retries
                        .and_then(|r| i32::try_from(r).ok())
                        .unwrap_or(-1),
                };
                run.prompt = Some(Prompt::Pin(prompt.into_reply()));
                details
            }
            Progress::NeedsNewPin(prompt) => {
                let details = Details::NeedsNewPin {
                    key: prompt.key.clone(),
                    reason: match prompt.reason {
                        NewPinPromptReason::First => "first",
                        NewPinPromptReason::PolicyViolation => "policy-violation",
                        _ => "malformed",
                    },
                    min_length: prompt.min_length,
                };
                run.prompt = Some(Prompt::NewPin(prompt.into_reply()));
                details
            }
            Progress::NeedsTouch { key } | Progress::Registering { key } => Details::Key(key),
            // Final steps come through `finish`.
            _ => return,
        };
        if !matches!(state, State::NeedsPin | State::NeedsNewPin) {
            // A prompt not answered is void once the ceremony moved on.
            run.prompt = None;
        }
        // The object starts in `selecting` without keys; the same again is no news.
        if state == run.snapshot.state && details == run.snapshot.details {
            return;
        }
        self.publish(run, state, details).await;
    }

    /// The end: the outcome is kept for `Result()`, `Completed` goes to the owner before the
    /// final `StateChanged`.
    async fn finish(
        &self,
        run: &mut Run,
        step: Option<Progress>,
        result: Result<Registration, CeremonyError>,
    ) {
        run.prompt = None;
        let key = match &step {
            Some(Progress::Failed { key, .. }) => key.clone(),
            _ => None,
        };
        let (state, details, outcome) = match result {
            Ok(registration) => {
                let outcome = Outcome::new(&registration);
                let details = Details::Completed {
                    key: registration.authenticator,
                    credential_id: registration.credential_id,
                };
                (State::Completed, details, Ok(outcome))
            }
            Err(CeremonyError::Cancelled(reason)) => (
                State::Cancelled,
                Details::Cancelled {
                    reason: reason.as_str(),
                },
                Err(Error::from(&CeremonyError::Cancelled(reason))),
            ),
            Err(error) => {
                let error = Error::from(&error);
                let details = Details::Failed {
                    kind: error.kind(),
                    message: error.message().to_owned(),
                    key,
                };
                (State::Failed, details, Err(error))
            }
        };
        if let (Ok(outcome), true) = (&outcome, run.signals) {
            let emitter = self.emitter();
            if let Some(emitter) = &emitter
                && let Err(error) = CeremonyObject::completed(emitter, outcome.to_map()).await
            {
                debug!(ceremony = self.id, %error, "cannot signal the result");
            }
        }
        run.outcome = Some(outcome);
        self.publish(run, state, details).await;
    }

    async fn publish(&self, run: &mut Run, state: State, details: Details) {
        run.snapshot = Snapshot {
            seq: run.snapshot.seq.saturating_add(1),
            state,
            details,
        };
        if !run.signals {
            return;
        }
        let Some(emitter) = self.emitter() else {
            return;
        };
        let snapshot = &run.snapshot;
        if let Err(error) = CeremonyObject::state_changed(
            &emitter,
            snapshot.seq,
            snapshot.state.as_str(),
            snapshot.details.to_map(),
        )
        .await
        {
            debug!(ceremony = self.id, %error, "cannot signal the state");
        }
    }

    /// Signals of this object, addressed to its owner only.
    fn emitter(&self) -> Option<SignalEmitter<'_>> {
        let owner = UniqueName::try_from(self.owner.as_str()).ok()?;
        let emitter = SignalEmitter::new(&self.connection, &self.path).ok()?;
        Some(emitter.set_destination(BusName::Unique(owner)))
    }
}

/// The ceremony's next step (`None` once every step was read).
async fn next(ceremony: &mut Option<Ceremony>) -> Option<Progress> {
    match ceremony {
        Some(ceremony) => ceremony.next().await,
        None => std::future::pending().await,
    }
}

async fn linger(until: Option<Instant>) {
    match until {
        Some(until) => sleep_until(until).await,
        None => std::future::pending().await,
    }
}
