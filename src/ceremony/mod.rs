//! The ceremony: from a username and an authorization token to a LoginID token, with a
//! passkey on the user's security key.
//!
//! passkeyd does for the relying party what a browser does for a web page (WebAuthn L3
//! §5.1.3, "Create a New Credential"), then talks to LoginID itself:
//!
//! ```text
//!  start ─▶ validate inputs (no IO)
//!        ─▶ reg/init (authorization token) ─▶ creation options
//!        ─▶ origin policy: rp.id vs the configured origin (no key touched before this)
//!        ─▶ key choice: requested key │ the only key │ selection by touch
//!        ─▶ user verification: built-in UV │ PIN │ new PIN │ none   (decision table)
//!        ─▶ makeCredential (exclude list in batches) │ U2F register (U2F-only keys)
//!        ─▶ clientDataJSON + attestation object ─▶ reg/complete (retried)
//!        ─▶ LoginID token verified against the JWKS ─▶ result to the caller only
//! ```
//!
//! - [`Ceremonies`] holds what every ceremony shares (the device registry, the LoginID
//!   client, the configuration) and starts them: [`Ceremonies::start`] validates the request
//!   and returns a [`Ceremony`].
//! - [`Ceremony`] is the caller's handle: a stream of [`Progress`] steps (selecting,
//!   needs-pin, needs-new-pin, needs-touch, registering, then completed, failed or
//!   cancelled), [`Canceller`]s, and the result, a [`Registration`] or a [`CeremonyError`]
//!   whose [`ErrorKind`] names the D-Bus error.
//! - PINs come from the caller through the prompt carried by a `needs-pin` or
//!   `needs-new-pin` step ([`PinPrompt`], [`NewPinPrompt`]), or from the request for
//!   unattended use.
//!
//! # Deadline and cancellation
//!
//! A ceremony has one overall deadline: the caller's timeout, or the configured default,
//! clamped to the configured range, and shortened to the relying party's own `timeout` once
//! `reg/init` has told it. Every wait of every step (keys, prompts, LoginID) ends there or at
//! cancellation (the caller's, the daemon's shutdown, a dropped handle), whichever comes
//! first; every key involved then gets CANCEL and is left idle before the ceremony ends. One
//! exception keeps a credential from being lost: once it exists on the key, `reg/complete`
//! may use at least [`CeremonyConfig::complete_grace`] (with the LoginID client's retries).
//!
//! # Secrets
//!
//! The authorization token, the registration session and the LoginID token are
//! [`Token`]s; PINs travel in `Zeroizing` buffers and become [`ctap::pin_uv::Pin`]s for one
//! attempt; pinUvAuthTokens live for one ceremony. None of them reaches a log line, an error
//! or a progress step.
//!
//! See `docs/ceremony.md`.

mod error;
mod io;
mod key;
mod origin;
mod pin;
mod plan;
mod progress;
mod request;
mod result;
mod select;

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ctap::webauthn::client_data::{ClientDataType, CollectedClientData};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{Instrument, debug, info, info_span, warn};
use url::Url;

pub use error::{
    BadResponse, CancelReason, CeremonyError, ConfigError, DBUS_ERROR_PREFIX, ErrorKind,
    InvalidArgument, NotSupported,
};
pub use origin::{Origin, OriginError, RpIdError};
pub use plan::{MAX_EXCLUDE_CREDENTIALS, OptionsError};
pub use progress::{
    NewPinPrompt, NewPinPromptReason, PinPrompt, PinPromptReason, PinReply, Progress, State,
};
pub use request::{CeremonyRequest, MAX_NAME_CHARS, MAX_TOKEN_BYTES, MAX_USERNAME_CHARS};

use crate::device::RegistryHandle;
use crate::loginid::dto::{RegCompleteRequest, RegInitAction, RegInitRequest};
use crate::loginid::{self, LoginIdClaims, LoginIdClient, Token, TokenVerifier};
use crate::transport::DeviceId;
use io::Io;
use key::KeyCeremony;
use pin::PinSource;

/// How many progress steps may wait for a slow reader before the ceremony waits for it.
pub const PROGRESS_CAPACITY: usize = 16;

/// Settings of the ceremonies.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct CeremonyConfig {
    /// The origin passkeyd registers from: clientDataJSON's `origin`, and what RP IDs are
    /// checked against. Must be one of the LoginID application's allowed origins.
    pub origin: Url,
    /// Development: accept `http://localhost`, `http://127.0.0.1` or `http://[::1]` as the
    /// origin.
    pub allow_loopback_origin: bool,
    /// The timeout when neither the caller nor the relying party gives one.
    pub default_timeout: Duration,
    /// The shortest overall timeout a caller or relying party may ask for.
    pub min_timeout: Duration,
    /// The longest overall timeout.
    pub max_timeout: Duration,
    /// The least time `reg/complete` gets once the credential is on the key, even past the
    /// overall deadline.
    pub complete_grace: Duration,
    /// Pause between two U2F_REGISTER attempts while a U2F key waits for a touch.
    pub u2f_poll_interval: Duration,
    /// Verify the LoginID token against the application's JWKS before handing it over.
    pub verify_token: bool,
}

impl CeremonyConfig {
    /// A configuration for `origin` with the defaults: 5 minute ceremonies (WebAuthn L3's
    /// recommended default), clamped to 10 s – 10 min, 30 s of grace for `reg/complete`,
    /// U2F polled every 200 ms, LoginID tokens verified.
    pub fn new(origin: Url) -> Self {
        Self {
            origin,
            allow_loopback_origin: false,
            default_timeout: Duration::from_secs(300),
            min_timeout: Duration::from_secs(10),
            max_timeout: Duration::from_secs(600),
            complete_grace: Duration::from_secs(30),
            u2f_poll_interval: Duration::from_millis(200),
            verify_token: true,
        }
    }

    fn validate(&self) -> Result<Origin, ConfigError> {
        let origin = Origin::new(&self.origin, self.allow_loopback_origin)?;
        if self.min_timeout.is_zero()
            || self.min_timeout > self.default_timeout
            || self.default_timeout > self.max_timeout
        {
            return Err(ConfigError::TimeoutRange);
        }
        if self.u2f_poll_interval.is_zero() {
            return Err(ConfigError::ZeroPollInterval);
        }
        Ok(origin)
    }

    fn clamp(&self, timeout: Duration) -> Duration {
        timeout.clamp(self.min_timeout, self.max_timeout)
    }
}

/// What every ceremony shares.
struct Shared {
    registry: RegistryHandle,
    loginid: LoginIdClient,
    /// Checks the LoginID token of every ceremony when [`CeremonyConfig::verify_token`] is
    /// set, and tokens handed to [`Ceremonies::verify_token`] always.
    verifier: TokenVerifier,
    config: CeremonyConfig,
    origin: Origin,
    next_id: AtomicU64,
}

/// Starts ceremonies. Cheap to clone.
#[derive(Clone)]
pub struct Ceremonies {
    shared: Arc<Shared>,
}

impl fmt::Debug for Ceremonies {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Ceremonies")
            .field("origin", &self.shared.origin.as_str())
            .finish_non_exhaustive()
    }
}

impl Ceremonies {
    /// Checks `config` and keeps what the ceremonies share.
    pub fn new(
        registry: RegistryHandle,
        loginid: LoginIdClient,
        config: CeremonyConfig,
    ) -> Result<Self, ConfigError> {
        let origin = config.validate()?;
        let verifier = TokenVerifier::new(loginid.clone());
        Ok(Self {
            shared: Arc::new(Shared {
                registry,
                loginid,
                verifier,
                config,
                origin,
                next_id: AtomicU64::new(1),
            }),
        })
    }

    /// The checked origin.
    pub fn origin(&self) -> &Origin {
        &self.shared.origin
    }

    /// Verifies a LoginID token against the application's JWKS (signature, issuer, audience,
    /// expiry) and that it was issued for `username`; the cached key set is shared with the
    /// ceremonies.
    pub async fn verify_token(
        &self,
        token: &Token,
        username: &str,
    ) -> Result<LoginIdClaims, loginid::Error> {
        self.shared.verifier.verify(token, username).await
    }

    /// Validates `request` (nothing is sent anywhere when it is refused) and starts the
    /// ceremony on the current tokio runtime.
    ///
    /// # Panics
    ///
    /// Outside a tokio runtime (the ceremony is a task).
    pub fn start(&self, request: CeremonyRequest) -> Result<Ceremony, CeremonyError> {
        request.validate()?;
        let config = &self.shared.config;
        let timeout = config.clamp(request.timeout.unwrap_or(config.default_timeout));
        let started = Instant::now();
        let id = self.shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (progress_tx, progress) = mpsc::channel(PROGRESS_CAPACITY);
        let (cancel_tx, cancel_rx) = watch::channel(None);
        let (result_tx, result) = oneshot::channel();
        let io = Io::new(progress_tx.clone(), cancel_rx, started + timeout);
        let shared = Arc::clone(&self.shared);
        let span = info_span!("ceremony", id);
        tokio::spawn(
            async move {
                // One place is kept for the final step, whatever the caller does meanwhile.
                let final_slot = progress_tx.reserve_owned().await.ok();
                let mut io = io;
                let mut key = None;
                let outcome = run(&shared, request, &mut io, &mut key, started).await;
                let last = match &outcome {
                    Ok(registration) => {
                        info!(
                            device = %registration.authenticator,
                            format = %registration.attestation_format,
                            elapsed_ms = started.elapsed().as_millis(),
                            "completed"
                        );
                        Progress::Completed {
                            key: registration.authenticator.clone(),
                            credential_id: registration.credential_id.clone(),
                        }
                    }
                    Err(CeremonyError::Cancelled(reason)) => {
                        info!(%reason, "cancelled");
                        Progress::Cancelled { reason: *reason }
                    }
                    Err(error) => {
                        warn!(kind = %error.kind(), %error, "failed");
                        Progress::Failed {
                            kind: error.kind(),
                            key: key.clone(),
                            reason: describe(error),
                        }
                    }
                };
                drop(io);
                if let Some(slot) = final_slot {
                    slot.send(last);
                }
                // The caller may have gone; the result is dropped (zeroized) then.
                let _ = result_tx.send(outcome);
            }
            .instrument(span),
        );
        Ok(Ceremony {
            id,
            progress,
            result,
            cancel: CancelOnDrop {
                canceller: Canceller {
                    tx: Arc::new(cancel_tx),
                },
                armed: true,
            },
        })
    }
}

/// A passkey made and registered.
#[derive(Debug)]
#[non_exhaustive]
pub struct Registration {
    /// The LoginID token (`jwtAccess`); for the caller only.
    pub token: Token,
    /// Its verified claims, when [`CeremonyConfig::verify_token`] is set.
    pub claims: Option<LoginIdClaims>,
    /// LoginID user id.
    pub user_id: Option<String>,
    /// LoginID passkey id.
    pub passkey_id: Option<String>,
    /// LoginID device id.
    pub loginid_device_id: Option<String>,
    /// The credential id, as on the key.
    pub credential_id: Vec<u8>,
    /// The key it lives on.
    pub authenticator: DeviceId,
    /// The attestation format sent to LoginID (`packed`, `fido-u2f`, `none`).
    pub attestation_format: String,
}

/// Cancels a ceremony; cheap to clone, usable from any task.
#[derive(Clone, Debug)]
pub struct Canceller {
    tx: Arc<watch::Sender<Option<CancelReason>>>,
}

impl Canceller {
    /// Cancels the ceremony on the caller's behalf.
    pub fn cancel(&self) {
        self.cancel_with(CancelReason::Caller);
    }

    /// Cancels the ceremony for `reason` (the first reason given is the one reported).
    pub fn cancel_with(&self, reason: CancelReason) {
        self.tx.send_if_modified(|current| {
            if current.is_none() {
                *current = Some(reason);
                true
            } else {
                false
            }
        });
    }
}

/// Cancels on drop unless disarmed: a caller that drops its handle (an owner leaving the
/// bus) ends its ceremony.
#[derive(Debug)]
struct CancelOnDrop {
    canceller: Canceller,
    armed: bool,
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if self.armed {
            self.canceller.cancel();
        }
    }
}

/// A running ceremony, owned by its caller. Dropping it cancels the ceremony.
#[derive(Debug)]
pub struct Ceremony {
    id: u64,
    progress: mpsc::Receiver<Progress>,
    result: oneshot::Receiver<Result<Registration, CeremonyError>>,
    cancel: CancelOnDrop,
}

impl Ceremony {
    /// A number for logs, unique among this process's ceremonies.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The next step, or `None` once the ceremony has ended and every step was read (the
    /// last one is completed, failed or cancelled).
    pub async fn next(&mut self) -> Option<Progress> {
        self.progress.recv().await
    }

    /// A handle to cancel the ceremony from elsewhere.
    pub fn canceller(&self) -> Canceller {
        self.cancel.canceller.clone()
    }

    /// Cancels the ceremony on the caller's behalf.
    pub fn cancel(&self) {
        self.cancel.canceller.cancel();
    }

    /// Waits for the outcome. Steps not read by then are dropped, and the stream with them:
    /// a ceremony that then needs a PIN ends with [`CeremonyError::PinRequired`]. Dropping
    /// this future before it ends cancels the ceremony.
    pub async fn result(self) -> Result<Registration, CeremonyError> {
        let Self {
            progress,
            result,
            mut cancel,
            ..
        } = self;
        drop(progress);
        let outcome = result
            .await
            .unwrap_or(Err(CeremonyError::Cancelled(CancelReason::Shutdown)));
        // Ended: nothing left to cancel.
        cancel.armed = false;
        outcome
    }
}

/// The ceremony proper. `key` receives the chosen key, for the failure report.
async fn run(
    shared: &Shared,
    request: CeremonyRequest,
    io: &mut Io,
    key: &mut Option<DeviceId>,
    started: Instant,
) -> Result<Registration, CeremonyError> {
    let config = &shared.config;
    let client = &shared.loginid;

    // reg/init: the creation options and the session.
    let init = RegInitRequest::for_security_key(
        client.config().app_id.clone(),
        request.username.clone(),
        request.username_type,
        request.display_name.clone(),
    );
    let deadline = io.deadline;
    let response = io
        .guard_cancel(client.reg_init(&init, request.authz_token.as_ref(), deadline))
        .await?
        .map_err(|error| backend_error(error, deadline, CeremonyError::from_reg_init))?;
    if response.action != RegInitAction::Proceed {
        // LoginID's own SDKs ignore it too.
        debug!(action = ?response.action, "reg/init action other than proceed");
    }
    let options = response.registration_request_options;
    if let Some(rp_timeout) = options.timeout {
        io.deadline = io
            .deadline
            .min(started + config.clamp(Duration::from_millis(rp_timeout)));
    }

    // Origin policy, before any key is touched.
    let rp_id = match &options.rp.id {
        Some(rp_id) => shared.origin.check_rp_id(rp_id)?,
        None => shared
            .origin
            .default_rp_id()
            .ok_or(RpIdError::IpAddress)?
            .to_owned(),
    };
    let creation = plan::Creation::new(&options, rp_id).map_err(CeremonyError::BadOptions)?;
    let client_data = CollectedClientData::new(
        ClientDataType::Create,
        creation.challenge.clone(),
        shared.origin.as_str(),
    );
    let client_data_json = client_data.to_json_bytes();

    // The key.
    let eligible =
        |device: &crate::device::DeviceInfo| key::eligible(&creation, device.info.as_deref());
    let authenticator = select::choose(
        io,
        &shared.registry,
        request.authenticator.as_ref(),
        config.u2f_poll_interval,
        &eligible,
    )
    .await?;
    *key = Some(authenticator.id().clone());
    info!(device = %authenticator.id(), rp_id = %creation.rp.id, "key chosen");

    // The credential.
    let pin = match &request.pin {
        Some(pin) => PinSource::Given(pin),
        None => PinSource::Prompt,
    };
    let ceremony = KeyCeremony {
        creation: &creation,
        client_data_hash: client_data.hash(),
        pin,
        u2f_poll: config.u2f_poll_interval,
    };
    let attestation = key::make_credential(io, &ceremony, &authenticator).await?;
    let transports = result::transports(authenticator.info().as_deref(), authenticator.transport());
    let built = result::build(attestation, &creation, client_data_json, transports)?;

    // reg/complete: the credential exists now, so it gets its grace.
    io.emit_past_deadline(Progress::Registering {
        key: authenticator.id().clone(),
    })
    .await?;
    let complete = RegCompleteRequest {
        creation_result: built.creation_result,
        session: response.session,
        passkey_name: request.passkey_name.clone(),
    };
    let complete_deadline = io.deadline.max(Instant::now() + config.complete_grace);
    let done = io
        .guard_cancel(client.reg_complete(&complete, complete_deadline))
        .await?
        .map_err(|error| backend_error(error, complete_deadline, CeremonyError::from_backend))?;
    let claims = if config.verify_token {
        let verify = shared.verifier.verify(&done.jwt_access, &request.username);
        Some(
            io.guard_cancel(verify)
                .await?
                .map_err(CeremonyError::from_backend)?,
        )
    } else {
        None
    };
    Ok(Registration {
        token: done.jwt_access,
        claims,
        user_id: done.user_id,
        passkey_id: done.passkey_id,
        loginid_device_id: done.device_id,
        credential_id: built.credential_id,
        authenticator: authenticator.id().clone(),
        attestation_format: built.format,
    })
}

/// The error's text with its first cause (never a secret: LoginID messages are sanitized by
/// the client, device errors carry statuses and framing details only).
fn describe(error: &CeremonyError) -> String {
    use std::error::Error as _;
    match error.source() {
        Some(source) => format!("{error}: {source}"),
        None => error.to_string(),
    }
}

/// A LoginID error at or past `deadline` is the ceremony's timeout; before it, `map` decides.
fn backend_error(
    error: loginid::Error,
    deadline: Instant,
    map: fn(loginid::Error) -> CeremonyError,
) -> CeremonyError {
    let timed_out = matches!(
        error,
        loginid::Error::Timeout | loginid::Error::DeadlineExceeded { .. }
    );
    if timed_out && Instant::now() >= deadline {
        CeremonyError::Timeout
    } else {
        map(error)
    }
}
