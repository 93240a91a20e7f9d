//! Errors of the ceremony, one kind per D-Bus error name.

use std::fmt;

use ctap::status::StatusCode;
use ctap::webauthn::attestation::AttestationError;
use ctap::webauthn::auth_data::AuthDataError;

use super::origin::{OriginError, RpIdError};
use super::plan::OptionsError;
use crate::device::DeviceError;
use crate::loginid;

/// Why a ceremony ended without a passkey.
///
/// Every variant maps to exactly one [`ErrorKind`], and every kind to one D-Bus error name
/// (`org.passkeyd.Error.<Kind>`), so that a UI matches on a name and never parses a message.
/// No variant carries a secret: PINs, tokens and sessions never reach an error or its text.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CeremonyError {
    /// An input of the request is unacceptable; nothing was sent anywhere.
    #[error("invalid argument: {0}")]
    InvalidArgument(#[from] InvalidArgument),
    /// The configured origin may not register credentials for the RP ID that LoginID asked
    /// for (WebAuthn L3 §5.1.3 step 8, a browser's SecurityError). No key was used.
    #[error("the origin may not use this RP ID: {0}")]
    RpIdNotAllowed(#[from] RpIdError),
    /// The chosen key is busy with another request.
    #[error("the security key is busy")]
    Busy,
    /// The requested key is not present.
    #[error("no such security key")]
    NoAuthenticator,
    /// The ceremony was cancelled: by its caller, by the daemon shutting down, or by the user
    /// on the key.
    #[error("the ceremony was cancelled ({0})")]
    Cancelled(CancelReason),
    /// The overall deadline passed, or the key gave up waiting for a touch.
    #[error("the ceremony timed out")]
    Timeout,
    /// The PIN given with the request (unattended mode) is wrong. Interactive callers are
    /// asked again instead.
    #[error("wrong PIN; {retries:?} retries left")]
    PinInvalid {
        /// Retries left, as the key reports them.
        retries: Option<u32>,
    },
    /// The key's PIN is blocked: only a reset (which erases its credentials) recovers.
    #[error("the PIN is blocked; the key must be reset")]
    PinBlocked,
    /// Three wrong PINs in a row: unplug the key and plug it in again (or tap it again)
    /// before the next attempt.
    #[error("too many wrong PINs; unplug and replug the key")]
    PinAuthBlocked,
    /// A PIN is needed and the caller cannot give one (no reply to the prompt, or nobody
    /// listening to progress).
    #[error("a PIN is required")]
    PinRequired,
    /// A credential of this user already lives on the key (excludeList hit, after a touch).
    #[error("this key is already registered for this user")]
    CredentialExcluded,
    /// The key cannot satisfy the request.
    #[error("the security key cannot do this: {0}")]
    NotSupported(NotSupported),
    /// The key went away during the ceremony.
    #[error("the security key was removed")]
    DeviceRemoved,
    /// The key failed or broke the protocol.
    #[error("security key error")]
    Device(#[source] DeviceError),
    /// The key answered with something the ceremony cannot use.
    #[error("security key answer unusable: {0}")]
    BadResponse(BadResponse),
    /// LoginID's creation options cannot be used (no usable algorithm, a bad user handle or
    /// challenge).
    #[error("LoginID's creation options are unusable: {0}")]
    BadOptions(#[source] OptionsError),
    /// LoginID refused the request, or answered with a LoginID token that does not verify.
    #[error("LoginID rejected the registration")]
    BackendRejected(#[source] loginid::Error),
    /// LoginID could not be reached, failed (5xx) or did not answer in time (also when its
    /// key set, needed to verify the token, could not be downloaded).
    #[error("LoginID is unavailable")]
    BackendUnavailable(#[source] loginid::Error),
    /// LoginID refused the authorization token (missing, invalid, expired, for another user
    /// or without the `reg:write` scope). Get a new one.
    #[error("LoginID refused the authorization token")]
    TokenRejected(#[source] loginid::ApiError),
}

/// The prefix of every D-Bus error name of passkeyd.
pub const DBUS_ERROR_PREFIX: &str = "org.passkeyd.Error.";

/// The error kinds, one per D-Bus error name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `org.passkeyd.Error.InvalidArgument`.
    InvalidArgument,
    /// `org.passkeyd.Error.NotAuthorized`.
    NotAuthorized,
    /// `org.passkeyd.Error.Busy`.
    Busy,
    /// `org.passkeyd.Error.NoAuthenticator`.
    NoAuthenticator,
    /// `org.passkeyd.Error.Cancelled`.
    Cancelled,
    /// `org.passkeyd.Error.Timeout`.
    Timeout,
    /// `org.passkeyd.Error.PinInvalid`.
    PinInvalid,
    /// `org.passkeyd.Error.PinBlocked`.
    PinBlocked,
    /// `org.passkeyd.Error.PinAuthBlocked`.
    PinAuthBlocked,
    /// `org.passkeyd.Error.PinRequired`.
    PinRequired,
    /// `org.passkeyd.Error.CredentialExcluded`.
    CredentialExcluded,
    /// `org.passkeyd.Error.NotSupported`.
    NotSupported,
    /// `org.passkeyd.Error.DeviceRemoved`.
    DeviceRemoved,
    /// `org.passkeyd.Error.DeviceError`.
    DeviceError,
    /// `org.passkeyd.Error.BackendRejected`.
    BackendRejected,
    /// `org.passkeyd.Error.BackendUnavailable`.
    BackendUnavailable,
    /// `org.passkeyd.Error.TokenRejected`.
    TokenRejected,
}

impl ErrorKind {
    /// Every kind, in the order of the D-Bus API's list.
    pub const ALL: [Self; 17] = [
        Self::InvalidArgument,
        Self::NotAuthorized,
        Self::Busy,
        Self::NoAuthenticator,
        Self::Cancelled,
        Self::Timeout,
        Self::PinInvalid,
        Self::PinBlocked,
        Self::PinAuthBlocked,
        Self::PinRequired,
        Self::CredentialExcluded,
        Self::NotSupported,
        Self::DeviceRemoved,
        Self::DeviceError,
        Self::BackendRejected,
        Self::BackendUnavailable,
        Self::TokenRejected,
    ];

    /// The last component of the D-Bus error name.
    pub fn as_str(self) -> &'static str {
        let name = self.dbus_name();
        // INVARIANT: every name starts with the prefix, see `dbus_name`.
        name.strip_prefix(DBUS_ERROR_PREFIX).unwrap_or(name)
    }

    /// The full D-Bus error name, `org.passkeyd.Error.<Kind>`.
    pub fn dbus_name(self) -> &'static str {
        match self {
            Self::InvalidArgument => "org.passkeyd.Error.InvalidArgument",
            Self::NotAuthorized => "org.passkeyd.Error.NotAuthorized",
            Self::Busy => "org.passkeyd.Error.Busy",
            Self::NoAuthenticator => "org.passkeyd.Error.NoAuthenticator",
            Self::Cancelled => "org.passkeyd.Error.Cancelled",
            Self::Timeout => "org.passkeyd.Error.Timeout",
            Self::PinInvalid => "org.passkeyd.Error.PinInvalid",
            Self::PinBlocked => "org.passkeyd.Error.PinBlocked",
            Self::PinAuthBlocked => "org.passkeyd.Error.PinAuthBlocked",
            Self::PinRequired => "org.passkeyd.Error.PinRequired",
            Self::CredentialExcluded => "org.passkeyd.Error.CredentialExcluded",
            Self::NotSupported => "org.passkeyd.Error.NotSupported",
            Self::DeviceRemoved => "org.passkeyd.Error.DeviceRemoved",
            Self::DeviceError => "org.passkeyd.Error.DeviceError",
            Self::BackendRejected => "org.passkeyd.Error.BackendRejected",
            Self::BackendUnavailable => "org.passkeyd.Error.BackendUnavailable",
            Self::TokenRejected => "org.passkeyd.Error.TokenRejected",
        }
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl CeremonyError {
    /// The kind, which names the D-Bus error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Self::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Self::RpIdNotAllowed(_) => ErrorKind::NotAuthorized,
            Self::Busy => ErrorKind::Busy,
            Self::NoAuthenticator => ErrorKind::NoAuthenticator,
            Self::Cancelled(_) => ErrorKind::Cancelled,
            Self::Timeout => ErrorKind::Timeout,
            Self::PinInvalid { .. } => ErrorKind::PinInvalid,
            Self::PinBlocked => ErrorKind::PinBlocked,
            Self::PinAuthBlocked => ErrorKind::PinAuthBlocked,
            Self::PinRequired => ErrorKind::PinRequired,
            Self::CredentialExcluded => ErrorKind::CredentialExcluded,
            Self::NotSupported(_) => ErrorKind::NotSupported,
            Self::DeviceRemoved => ErrorKind::DeviceRemoved,
            Self::Device(_) | Self::BadResponse(_) => ErrorKind::DeviceError,
            Self::BackendRejected(_) | Self::BadOptions(_) => ErrorKind::BackendRejected,
            Self::BackendUnavailable(_) => ErrorKind::BackendUnavailable,
            Self::TokenRejected(_) => ErrorKind::TokenRejected,
        }
    }

    /// Maps a device-layer error met while using a key. CTAP statuses that mean something to
    /// the ceremony (CTAP 2.2 §6.1.2 and the platform checklist's status table) get their
    /// own kinds; the rest stay [`CeremonyError::Device`].
    pub(super) fn from_device(error: DeviceError) -> Self {
        match error {
            DeviceError::DeviceRemoved => Self::DeviceRemoved,
            DeviceError::Timeout => Self::Timeout,
            DeviceError::Cancelled => Self::Cancelled(CancelReason::Caller),
            DeviceError::Busy => Self::Busy,
            DeviceError::Ctap(status) => match status {
                StatusCode::CredentialExcluded => Self::CredentialExcluded,
                StatusCode::PinBlocked => Self::PinBlocked,
                StatusCode::PinAuthBlocked => Self::PinAuthBlocked,
                StatusCode::OperationDenied => Self::Cancelled(CancelReason::Declined),
                StatusCode::UserActionTimeout | StatusCode::ActionTimeout => Self::Timeout,
                StatusCode::KeepaliveCancel => Self::Cancelled(CancelReason::Caller),
                StatusCode::UnsupportedAlgorithm => Self::NotSupported(NotSupported::Algorithm),
                StatusCode::KeyStoreFull => Self::NotSupported(NotSupported::KeyStoreFull),
                _ => Self::Device(error),
            },
            other => Self::Device(other),
        }
    }

    /// Maps an error of `reg/init`: 401 and 403 are the authorization token's fault, other
    /// 4xx answers a refusal, anything else (connection, 5xx, 429, malformed answers) an
    /// unavailable backend.
    pub(super) fn from_reg_init(error: loginid::Error) -> Self {
        match error {
            loginid::Error::Api(api) if matches!(api.status, 401 | 403) => Self::TokenRejected(api),
            error => Self::from_backend(error),
        }
    }

    /// Maps an error of `reg/complete` or of the LoginID token's verification.
    pub(super) fn from_backend(error: loginid::Error) -> Self {
        let rejected = match &error {
            loginid::Error::Api(api) => {
                (400..500).contains(&api.status) && !matches!(api.status, 408 | 429)
            }
            loginid::Error::DeadlineExceeded { last } => matches!(
                last.as_ref(),
                loginid::Error::Api(api)
                    if (400..500).contains(&api.status) && !matches!(api.status, 408 | 429)
            ),
            // The JWKS could not be downloaded (a download failed recently, and another
            // is not allowed yet): LoginID is unavailable, as when this download fails itself.
            loginid::Error::Token(loginid::TokenError::JwksUnavailable) => false,
            loginid::Error::Token(_) => true,
            _ => false,
        };
        if rejected {
            Self::BackendRejected(error)
        } else {
            Self::BackendUnavailable(error)
        }
    }
}

/// Why a ceremony was cancelled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum CancelReason {
    /// The caller cancelled it (or dropped its handle).
    Caller,
    /// The daemon is shutting down.
    Shutdown,
    /// The user declined on the key (CTAP2_ERR_OPERATION_DENIED).
    Declined,
}

impl CancelReason {
    /// A short name: `caller`, `shutdown`, `declined`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Caller => "caller",
            Self::Shutdown => "shutdown",
            Self::Declined => "declined",
        }
    }
}

impl fmt::Display for CancelReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What in a request is unacceptable.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidArgument {
    /// The username is empty.
    #[error("the username is empty")]
    UsernameEmpty,
    /// The username is longer than [`MAX_USERNAME_CHARS`](super::MAX_USERNAME_CHARS)
    /// characters.
    #[error("the username is longer than {max} characters")]
    UsernameTooLong {
        /// The limit.
        max: usize,
    },
    /// The username holds a control or formatting character, or starts or ends with
    /// white space.
    #[error("the username holds a character that is not allowed")]
    UsernameCharacters,
    /// The display name or passkey name is too long or holds a control character.
    #[error("the {0} is too long or holds a character that is not allowed")]
    Name(&'static str),
    /// The authorization token is empty or longer than
    /// [`MAX_TOKEN_BYTES`](super::MAX_TOKEN_BYTES).
    #[error("the authorization token is empty or longer than {max} bytes")]
    TokenSize {
        /// The limit.
        max: usize,
    },
    /// The authorization token holds characters no JWT has.
    #[error("the authorization token holds characters that are not allowed")]
    TokenCharacters,
    /// The PIN given for unattended use breaks CTAP's PIN rules (CTAP 2.2 §6.5.1).
    #[error("the PIN is not acceptable: {0}")]
    Pin(ctap::pin_uv::Error),
    /// The timeout is zero.
    #[error("the timeout must be greater than zero")]
    ZeroTimeout,
}

/// What a key cannot do, in [`CeremonyError::NotSupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum NotSupported {
    /// None of the RP's algorithms is one the key lists in getInfo.
    Algorithm,
    /// The RP requires a discoverable credential and the key cannot store one.
    ResidentKey,
    /// The RP requires user verification and the key has neither built-in UV nor PIN
    /// support.
    UserVerification,
    /// The RP enforces a credProtect policy the key does not support.
    CredProtect,
    /// The key only speaks U2F and the request needs CTAP2 (a discoverable credential,
    /// user verification, or an algorithm other than ES256).
    U2fOnly,
    /// The key has no room for another discoverable credential.
    KeyStoreFull,
}

impl fmt::Display for NotSupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Algorithm => "none of the requested algorithms",
            Self::ResidentKey => "discoverable credentials",
            Self::UserVerification => "user verification",
            Self::CredProtect => "the enforced credProtect policy",
            Self::U2fOnly => "this request with a U2F-only key",
            Self::KeyStoreFull => "another discoverable credential (storage full)",
        })
    }
}

/// How a key's answer was unusable, in [`CeremonyError::BadResponse`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BadResponse {
    /// The authenticator data did not parse or carries no attested credential.
    AuthData(String),
    /// The authenticator data is for another RP ID.
    RpIdHash,
    /// The UP flag is not set.
    UserNotPresent,
    /// The RP required user verification and the UV flag is not set.
    UserNotVerified,
    /// The credential public key is not a COSE key this platform can read.
    PublicKey(String),
    /// The attestation object could not be encoded.
    Encoding,
    /// A U2F answer did not parse, or had an unexpected status word.
    U2f(String),
    /// The credential ID is longer than the 1023 bytes WebAuthn L3 allows (§7.1 step
    /// "credentialId ... at most 1023 bytes"; §6.5.1 `credentialIdLength`).
    CredentialIdTooLong(usize),
    /// The credential public key's algorithm (its COSE `alg`, absent: `None`) is not one of
    /// those the RP offered in `pubKeyCredParams` (WebAuthn L3 §7.1 step "alg").
    UnexpectedAlgorithm(Option<i64>),
    /// The credential public key is a P-256 key whose point is not on the curve.
    PublicKeyNotOnCurve,
}

impl BadResponse {
    /// Authenticator data that did not parse: the conditions WebAuthn names get their own
    /// variants, the rest is [`BadResponse::AuthData`].
    pub(super) fn from_auth_data(error: &AuthDataError) -> Self {
        match error {
            AuthDataError::CredentialIdTooLong(length) => Self::CredentialIdTooLong(*length),
            other => Self::AuthData(other.to_string()),
        }
    }

    /// An attestation object that could not be built from the key's answer.
    pub(super) fn from_attestation(error: &AttestationError) -> Self {
        match error {
            AttestationError::AuthData(error) => Self::from_auth_data(error),
            other => Self::AuthData(other.to_string()),
        }
    }
}

impl fmt::Display for BadResponse {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::AuthData(why) => write!(f, "authenticator data: {why}"),
            Self::RpIdHash => f.write_str("authenticator data for another RP ID"),
            Self::UserNotPresent => f.write_str("user presence flag not set"),
            Self::UserNotVerified => f.write_str("user verification flag not set"),
            Self::PublicKey(why) => write!(f, "credential public key: {why}"),
            Self::Encoding => f.write_str("attestation object not encodable"),
            Self::U2f(why) => write!(f, "U2F: {why}"),
            Self::CredentialIdTooLong(length) => {
                write!(f, "credential ID of {length} bytes, more than 1023")
            }
            Self::UnexpectedAlgorithm(Some(alg)) => {
                write!(f, "credential public key algorithm {alg} was not offered")
            }
            Self::UnexpectedAlgorithm(None) => {
                f.write_str("credential public key without an algorithm")
            }
            Self::PublicKeyNotOnCurve => f.write_str("credential public key not on its curve"),
        }
    }
}

/// Why the ceremony configuration was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The origin is not acceptable.
    #[error("origin: {0}")]
    Origin(#[from] OriginError),
    /// The timeout range is empty or starts at zero.
    #[error("timeouts must satisfy 0 < min_timeout <= default_timeout <= max_timeout")]
    TimeoutRange,
    /// A poll interval is zero.
    #[error("u2f_poll_interval must be greater than zero")]
    ZeroPollInterval,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_dbus_name() {
        let names: Vec<&str> = ErrorKind::ALL.iter().map(|k| k.dbus_name()).collect();
        let mut unique = names.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 17);
        assert_eq!(names[0], "org.passkeyd.Error.InvalidArgument");
        assert_eq!(names[16], "org.passkeyd.Error.TokenRejected");
        for kind in ErrorKind::ALL {
            assert_eq!(format!("{DBUS_ERROR_PREFIX}{kind}"), kind.dbus_name());
        }
    }

    #[test]
    fn device_statuses_map_to_their_kinds() {
        let kind = |status| CeremonyError::from_device(DeviceError::Ctap(status)).kind();
        assert_eq!(
            kind(StatusCode::CredentialExcluded),
            ErrorKind::CredentialExcluded
        );
        assert_eq!(kind(StatusCode::PinBlocked), ErrorKind::PinBlocked);
        assert_eq!(kind(StatusCode::PinAuthBlocked), ErrorKind::PinAuthBlocked);
        assert_eq!(kind(StatusCode::OperationDenied), ErrorKind::Cancelled);
        assert_eq!(kind(StatusCode::UserActionTimeout), ErrorKind::Timeout);
        assert_eq!(kind(StatusCode::KeyStoreFull), ErrorKind::NotSupported);
        assert_eq!(kind(StatusCode::InvalidCbor), ErrorKind::DeviceError);
        assert_eq!(
            CeremonyError::from_device(DeviceError::DeviceRemoved).kind(),
            ErrorKind::DeviceRemoved
        );
        assert_eq!(
            CeremonyError::from_device(DeviceError::Busy).kind(),
            ErrorKind::Busy
        );
    }

    fn api(status: u16) -> loginid::Error {
        loginid::Error::Api(loginid::ApiError {
            status,
            code: loginid::ApiErrorCode::Missing,
            message: None,
            retry_after: None,
        })
    }

    #[test]
    fn backend_errors_split_into_token_rejected_refusals_and_outages() {
        let init = |status| CeremonyError::from_reg_init(api(status)).kind();
        assert_eq!(init(401), ErrorKind::TokenRejected);
        assert_eq!(init(403), ErrorKind::TokenRejected);
        assert_eq!(init(400), ErrorKind::BackendRejected);
        assert_eq!(init(429), ErrorKind::BackendUnavailable);
        assert_eq!(init(503), ErrorKind::BackendUnavailable);
        let complete = |status| CeremonyError::from_backend(api(status)).kind();
        assert_eq!(complete(403), ErrorKind::BackendRejected);
        assert_eq!(complete(500), ErrorKind::BackendUnavailable);
        let gave_up = loginid::Error::DeadlineExceeded {
            last: Box::new(api(503)),
        };
        assert_eq!(
            CeremonyError::from_backend(gave_up).kind(),
            ErrorKind::BackendUnavailable
        );
        assert_eq!(
            CeremonyError::from_backend(loginid::Error::Timeout).kind(),
            ErrorKind::BackendUnavailable
        );
        // A token that fails verification is a rejection; a JWKS that cannot be had is not.
        let token = |error| CeremonyError::from_backend(loginid::Error::Token(error)).kind();
        assert_eq!(
            token(loginid::TokenError::BadSignature),
            ErrorKind::BackendRejected
        );
        assert_eq!(
            token(loginid::TokenError::JwksUnavailable),
            ErrorKind::BackendUnavailable
        );
    }
}
