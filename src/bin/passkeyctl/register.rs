//! `passkeyctl register`: one ceremony, from `CreatePasskey` to the LoginID token.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use clap::Args;
use passkeyd::ceremony::State;
use passkeyd::dbus::client::{
    CeremonyHandle, Client, ClientError, PasskeyRequest, Registration, StateUpdate,
    authenticator_path,
};
use passkeyd::loginid::Token;
use serde_json::json;
use tokio::time::{Instant, sleep_until};
use zeroize::Zeroizing;

use crate::remote::{
    CALL_TIMEOUT, EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TIMED_OUT, Failure, Secret, bounded, call,
    interrupted, print_json, print_stdout, read_stdin_line,
};
use crate::terminal::{Prompt, Status, interactive};

/// The ceremony's own timeout when `--timeout` is absent: the service's longest by default
/// (`ceremony_max_s`), so that the service's setting decides.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// How long passkeyctl waits past the ceremony's timeout: `reg/complete` may run up to
/// `complete_grace_s` (30 s by default) past it, and the end takes a moment to arrive.
const DEADLINE_MARGIN: Duration = Duration::from_secs(45);

/// How long the end of a cancelled ceremony may take to arrive (its keys get CANCEL first).
const CANCEL_WAIT: Duration = Duration::from_secs(15);

/// `register`.
#[derive(Debug, Args)]
pub(crate) struct RegisterArgs {
    /// The LoginID username.
    #[arg(long, value_name = "USERNAME")]
    username: String,

    /// The authorization token from the application's backend (LoginID `mgmt/grant`, scope
    /// `reg:write`); `-` reads it from the first line of stdin.
    #[arg(long, value_name = "TOKEN")]
    token: Secret,

    /// The user's display name.
    #[arg(long, value_name = "NAME")]
    display_name: Option<String>,

    /// What the username is: email, phone or other.
    #[arg(long, value_name = "TYPE")]
    username_type: Option<String>,

    /// A name for the passkey at LoginID.
    #[arg(long, value_name = "NAME")]
    passkey_name: Option<String>,

    /// The key to use: its id or object path. Without it: the only key, or the one touched.
    #[arg(long, value_name = "KEY")]
    authenticator: Option<String>,

    /// The key's PIN (visible to other local users: prefer --pin-stdin). Tried once.
    #[arg(long, value_name = "PIN", conflicts_with = "pin_stdin")]
    pin: Option<Secret>,

    /// Read the key's PIN from stdin (the line after the token with `--token -`).
    #[arg(long)]
    pin_stdin: bool,

    /// The PIN to set when the key has none and the registration needs one.
    #[arg(long, value_name = "PIN")]
    new_pin: Option<Secret>,

    /// The ceremony's overall timeout in seconds (the service clamps it to its range).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..=3600))]
    timeout: Option<u64>,

    /// Print one JSON object on stdout: the result, or `error` and `message`.
    #[arg(long)]
    pub(crate) json: bool,
}

/// How the wait for the ceremony's end ended.
enum Ending {
    /// A final state arrived.
    Final(StateUpdate),
    /// passkeyctl cancelled the ceremony: this failure is the outcome.
    Abandoned(Failure),
}

/// What to do about a state.
enum Step {
    Continue,
    Prompt(Prompt, PinKind),
    Answer(Answer),
    Abandon(Failure),
}

/// Which PIN a prompt asks for.
#[derive(Clone, Copy)]
enum PinKind {
    Current,
    New,
}

/// An answer to a PIN state.
enum Answer {
    Pin(Zeroizing<String>),
    NewPin(Zeroizing<String>),
}

/// Runs `register`.
pub(crate) async fn run(client: &Client, args: RegisterArgs) -> Result<(), Failure> {
    let token = if args.token.0.as_str() == "-" {
        read_stdin_line("token")?
    } else {
        args.token.0.clone()
    };
    let pin = match (&args.pin, args.pin_stdin) {
        (Some(pin), _) => Some(pin.0.clone()),
        (None, true) => Some(read_stdin_line("PIN")?),
        (None, false) => None,
    };
    let timeout = args.timeout.map(Duration::from_secs);
    let mut request = PasskeyRequest::new(args.username.clone(), Token::new(token.as_str()));
    drop(token);
    request.display_name = args.display_name.clone();
    request.username_type = args.username_type.clone();
    request.passkey_name = args.passkey_name.clone();
    request.authenticator = args
        .authenticator
        .as_deref()
        .map(authenticator_path)
        .transpose()?;
    request.timeout = timeout;
    // The PIN goes with the request (the service's unattended mode: one attempt, and a wrong
    // PIN ends the ceremony with PinInvalid instead of spending another retry).
    request.pin = pin.clone();
    let deadline = Instant::now() + timeout.unwrap_or(DEFAULT_TIMEOUT) + DEADLINE_MARGIN;

    // One listener for the whole command: a signal that comes between two waits is not lost.
    let interrupt = interrupted();
    tokio::pin!(interrupt);
    let handle = tokio::select! {
        handle = call("CreatePasskey", client.create_passkey(&request)) => handle?,
        () = &mut interrupt => {
            // A ceremony created meanwhile is cancelled by the service when this process
            // leaves the bus.
            return Err(Failure::new(
                "org.passkeyd.Error.Cancelled",
                "interrupted",
                EXIT_INTERRUPTED,
            ));
        }
    };
    drop(request);
    let mut status = Status::new();
    let outcome = Ceremony {
        handle,
        args: &args,
        status: &mut status,
        given_pin: pin,
        pin_sent: false,
        new_pin_sent: false,
    }
    .follow(deadline, interrupt)
    .await;
    status.clear();
    report(&outcome?, args.json);
    Ok(())
}

/// Prints the result: the token alone on stdout (or the JSON object), the rest on stderr.
fn report(registration: &Registration, json: bool) {
    let credential_id = registration
        .credential_id
        .as_deref()
        .map(|id| URL_SAFE_NO_PAD.encode(id));
    if json {
        print_json(&json!({
            "token": registration.token.expose(),
            "user_id": registration.user_id,
            "passkey_id": registration.passkey_id,
            "credential_id": credential_id,
            "authenticator": registration.authenticator,
        }));
        return;
    }
    let key = registration
        .authenticator
        .as_deref()
        .map(|path| path.rsplit('/').next().unwrap_or(path))
        .unwrap_or("?");
    eprintln!(
        "passkeyctl: passkey created on {key}: credential {}, LoginID user {}, passkey {}",
        credential_id.as_deref().unwrap_or("?"),
        registration.user_id.as_deref().unwrap_or("?"),
        registration.passkey_id.as_deref().unwrap_or("?"),
    );
    print_stdout(&format!("{}\n", registration.token.expose()));
}

fn interrupted_failure() -> Failure {
    Failure::new(
        "org.passkeyd.Error.Cancelled",
        "interrupted; the ceremony was cancelled",
        EXIT_INTERRUPTED,
    )
}

fn key_name(update: &StateUpdate) -> String {
    update
        .details
        .authenticator
        .as_deref()
        .map(|path| path.rsplit('/').next().unwrap_or(path).to_owned())
        .unwrap_or_else(|| "the key".to_owned())
}

struct Ceremony<'a> {
    handle: CeremonyHandle,
    args: &'a RegisterArgs,
    status: &'a mut Status,
    given_pin: Option<Zeroizing<String>>,
    pin_sent: bool,
    new_pin_sent: bool,
}

impl Ceremony<'_> {
    /// Follows the ceremony to its end, answers its prompts, fetches the result and releases
    /// the object.
    async fn follow(
        mut self,
        deadline: Instant,
        interrupt: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Registration, Failure> {
        let outcome = match self.wait_end(deadline, interrupt).await {
            Ok(Ending::Final(update)) => self.outcome(&update).await,
            Ok(Ending::Abandoned(failure)) | Err(failure) => Err(failure),
        };
        // Done with the object either way (Release cancels a ceremony still running).
        let _ = tokio::time::timeout(CALL_TIMEOUT, self.handle.release()).await;
        outcome
    }

    async fn wait_end(
        &mut self,
        deadline: Instant,
        mut interrupt: Pin<&mut impl Future<Output = ()>>,
    ) -> Result<Ending, Failure> {
        let mut prompt: Option<(Prompt, PinKind)> = None;
        loop {
            tokio::select! {
                update = self.handle.next_state() => {
                    let update = match update {
                        Ok(Some(update)) => update,
                        Ok(None) => {
                            return Err(ClientError::UnexpectedReply(
                                "the ceremony ended without a final state".to_owned(),
                            )
                            .into());
                        }
                        Err(error) => return Err(error.into()),
                    };
                    if update.state.is_final() {
                        // An open prompt is dropped here, which puts the terminal back.
                        return Ok(Ending::Final(update));
                    }
                    if prompt.as_ref().is_some_and(|(prompt, _)| prompt.is_open()) {
                        // The user is typing; the answer tells whether it is still wanted.
                        continue;
                    }
                    match self.on_state(&update) {
                        Step::Continue => {}
                        Step::Prompt(new, kind) => {
                            self.status.clear();
                            prompt = Some((new, kind));
                        }
                        Step::Answer(answer) => self.send(answer).await?,
                        Step::Abandon(failure) => return self.abandon(failure).await,
                    }
                }
                answer = async {
                    match prompt.as_mut() {
                        Some((prompt, kind)) => (prompt.answer().await, *kind),
                        None => std::future::pending().await,
                    }
                } => {
                    prompt = None;
                    match answer {
                        (Ok(pin), PinKind::Current) => self.send(Answer::Pin(pin)).await?,
                        (Ok(pin), PinKind::New) => self.send(Answer::NewPin(pin)).await?,
                        // Ctrl-C while the terminal read waits: the signal interrupts it.
                        (Err(error), _) if error.kind() == std::io::ErrorKind::Interrupted => {
                            return self.abandon(interrupted_failure()).await;
                        }
                        (Err(error), _) => {
                            return self
                                .abandon(Failure::new(
                                    "org.passkeyd.Error.PinRequired",
                                    format!("cannot read the PIN: {error}"),
                                    EXIT_FAILED,
                                ))
                                .await;
                        }
                    }
                }
                () = interrupt.as_mut() => {
                    drop(prompt.take());
                    return self.abandon(interrupted_failure()).await;
                }
                () = sleep_until(deadline) => {
                    drop(prompt.take());
                    return self
                        .abandon(Failure::new(
                            "org.passkeyd.Error.Timeout",
                            "the ceremony did not end in time; it was cancelled",
                            EXIT_TIMED_OUT,
                        ))
                        .await;
                }
            }
        }
    }

    /// Shows a state and decides what it needs.
    fn on_state(&mut self, update: &StateUpdate) -> Step {
        let details = &update.details;
        match update.state {
            State::Selecting => {
                let count = details.authenticators.len();
                self.status.show(&if count > 1 {
                    format!("touch the key you want to use ({count} keys)")
                } else {
                    "touch your key".to_owned()
                });
                Step::Continue
            }
            State::NeedsPin => self.on_needs_pin(update),
            State::NeedsNewPin => self.on_needs_new_pin(update),
            State::NeedsTouch => {
                self.status.show("touch your key");
                Step::Continue
            }
            State::Registering => {
                self.status.show("registering the passkey with LoginID");
                Step::Continue
            }
            _ => Step::Continue,
        }
    }

    fn on_needs_pin(&mut self, update: &StateUpdate) -> Step {
        let details = &update.details;
        let retries = details
            .retries
            .map(|n| format!(" ({n} retries left)"))
            .unwrap_or_default();
        let first = details.reason.as_deref() == Some("first");
        if let Some(pin) = &self.given_pin {
            // The service had the PIN with the request; asked anyway, give it once.
            if first && !self.pin_sent {
                self.pin_sent = true;
                return Step::Answer(Answer::Pin(pin.clone()));
            }
            return Step::Abandon(Failure::new(
                "org.passkeyd.Error.PinInvalid",
                format!("wrong PIN{retries}"),
                EXIT_FAILED,
            ));
        }
        if !interactive() {
            return Step::Abandon(Failure::new(
                "org.passkeyd.Error.PinRequired",
                format!(
                    "{} needs its PIN: give --pin or --pin-stdin",
                    key_name(update)
                ),
                EXIT_FAILED,
            ));
        }
        let text = match details.reason.as_deref() {
            Some("wrong-pin") => format!("Wrong PIN{retries}. PIN for {}: ", key_name(update)),
            Some("malformed") => format!(
                "That cannot be a PIN (4 to 63 bytes). PIN for {}: ",
                key_name(update)
            ),
            _ => format!("PIN for {}{retries}: ", key_name(update)),
        };
        Step::Prompt(Prompt::pin(text), PinKind::Current)
    }

    fn on_needs_new_pin(&mut self, update: &StateUpdate) -> Step {
        let min_length = update.details.min_length.unwrap_or(4);
        if let Some(pin) = &self.args.new_pin {
            if !self.new_pin_sent {
                self.new_pin_sent = true;
                return Step::Answer(Answer::NewPin(pin.0.clone()));
            }
            return Step::Abandon(Failure::new(
                "org.passkeyd.Error.InvalidArgument",
                format!(
                    "{} refused the new PIN ({}); it needs at least {min_length} characters",
                    key_name(update),
                    update
                        .details
                        .reason
                        .as_deref()
                        .unwrap_or("no reason given"),
                ),
                EXIT_FAILED,
            ));
        }
        if !interactive() {
            return Step::Abandon(Failure::new(
                "org.passkeyd.Error.PinRequired",
                format!(
                    "{} has no PIN and this registration needs one: give --new-pin",
                    key_name(update)
                ),
                EXIT_FAILED,
            ));
        }
        Step::Prompt(Prompt::new_pin(key_name(update), min_length), PinKind::New)
    }

    async fn send(&self, answer: Answer) -> Result<(), Failure> {
        let sent = match &answer {
            Answer::Pin(pin) => call("SubmitPin", self.handle.submit_pin(pin)).await,
            Answer::NewPin(pin) => call("SetNewPin", self.handle.set_new_pin(pin)).await,
        };
        drop(answer);
        match sent {
            Ok(()) => Ok(()),
            // The ceremony moved on meanwhile (it ended, or asks something else): its next
            // state says what happens.
            Err(failure) if failure.name == "org.passkeyd.Error.InvalidArgument" => Ok(()),
            Err(failure) => Err(failure),
        }
    }

    /// Cancels the ceremony and waits (bounded) for its end. A ceremony that completed
    /// meanwhile keeps its result.
    async fn abandon(&mut self, failure: Failure) -> Result<Ending, Failure> {
        let _ = bounded("Cancel", CALL_TIMEOUT, self.handle.cancel()).await;
        let end = tokio::time::timeout(CANCEL_WAIT, async {
            while let Ok(Some(update)) = self.handle.next_state().await {
                if update.state.is_final() {
                    return Some(update);
                }
            }
            None
        })
        .await;
        match end {
            Ok(Some(update)) if update.state == State::Completed => Ok(Ending::Final(update)),
            _ => Ok(Ending::Abandoned(failure)),
        }
    }

    /// The result of a ceremony that ended in `update`.
    async fn outcome(&self, update: &StateUpdate) -> Result<Registration, Failure> {
        match call("Result", self.handle.result()).await {
            Ok(registration) if update.state == State::Completed => Ok(registration),
            Err(failure) => Err(failure),
            Ok(_) => Err(update.details.error.as_ref().map_or_else(
                || {
                    Failure::new(
                        "org.passkeyd.Error.Cancelled",
                        format!("the ceremony ended: {}", update.state),
                        EXIT_FAILED,
                    )
                },
                |error| Failure::new(error.name(), error.message(), EXIT_FAILED),
            )),
        }
    }
}
