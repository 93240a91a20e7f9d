//! Errors of the LoginID client.

use std::time::Duration;

/// Why a configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The base URL is neither https nor (when allowed) http to a loopback address.
    #[error("base URL must use https (plain http only to a loopback address when allowed)")]
    InsecureBaseUrl,
    /// The base URL carries credentials, a query or a fragment, or has no host.
    #[error("base URL must be scheme://host[:port][/path] without credentials, query or fragment")]
    MalformedBaseUrl,
    /// A timeout or size limit is zero.
    #[error("{0} must be greater than zero")]
    ZeroLimit(&'static str),
    /// An extra root certificate was not accepted by the TLS stack.
    #[error("TLS setup failed: {0}")]
    Tls(String),
    /// The HTTP client could not be built.
    #[error("HTTP client setup failed: {0}")]
    Client(String),
}

/// `msgCode` of a LoginID error body, reference §1.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ApiErrorCode {
    /// `bad_request` (400).
    BadRequest,
    /// `unauthorized` (401): token missing, invalid or expired.
    Unauthorized,
    /// `forbidden` (403): token for another user or without the scope.
    Forbidden,
    /// `not_found` (404).
    NotFound,
    /// `internal_error` (500).
    InternalError,
    /// A code this client does not know (kept for diagnostics).
    Other(String),
    /// The response had no (JSON) error body.
    Missing,
}

impl ApiErrorCode {
    /// Maps a `msgCode` string.
    pub fn from_msg_code(code: &str) -> Self {
        match code {
            "bad_request" => Self::BadRequest,
            "unauthorized" => Self::Unauthorized,
            "forbidden" => Self::Forbidden,
            "not_found" => Self::NotFound,
            "internal_error" => Self::InternalError,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// A non-2xx answer from LoginID.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("LoginID answered HTTP {status} ({code:?}){}", message.as_deref().map(|m| format!(": {m}")).unwrap_or_default())]
pub struct ApiError {
    /// HTTP status code.
    pub status: u16,
    /// `msgCode` of the body.
    pub code: ApiErrorCode,
    /// `msg` (or `message`) of the body: server text, shortened and stripped of control
    /// characters and of any token the request carried.
    pub message: Option<String>,
    /// `Retry-After` of a 429 or 503, if the server sent one.
    pub retry_after: Option<Duration>,
}

/// Why a LoginID token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a three-part compact JWS, a part is not base64url, or it is too long.
    #[error("token is not a compact JWS")]
    Malformed,
    /// Header or claims are not the expected JSON.
    #[error("token {0} is not valid JSON of the expected shape")]
    BadJson(&'static str),
    /// `alg` is not `ES256`.
    #[error("token algorithm {0:?} is not ES256")]
    UnsupportedAlgorithm(String),
    /// The header has no `kid`.
    #[error("token header has no kid")]
    MissingKeyId,
    /// No JWKS key has the token's `kid`, even after refreshing the key set.
    #[error("no JWKS key with the token's kid")]
    UnknownKeyId,
    /// The token's `kid` is not among the cached keys and the JWKS could not be downloaded:
    /// the last download failed less than `jwks_min_refresh_interval` ago.
    #[error("JWKS unavailable: the last download failed")]
    JwksUnavailable,
    /// The JWKS key for the `kid` is not a usable P-256 key.
    #[error("JWKS key is not a P-256 signing key")]
    BadKey,
    /// The signature does not verify.
    #[error("token signature does not verify")]
    BadSignature,
    /// `iss` is not the application's base URL.
    #[error("token issuer does not match")]
    WrongIssuer,
    /// `aud` does not contain the application id.
    #[error("token audience does not match")]
    WrongAudience,
    /// `exp` is in the past.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `username` is not the expected user.
    #[error("token is for another user")]
    WrongUser,
}

/// Errors of the LoginID client. Tokens and keys never appear in them.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The client configuration is unusable.
    #[error("invalid LoginID client configuration")]
    Config(#[from] ConfigError),
    /// The connection could not be set up (DNS, TCP, TLS): the request never reached LoginID.
    #[error("could not connect to LoginID")]
    Connect(#[source] reqwest::Error),
    /// No complete answer within the configured time.
    #[error("LoginID did not answer in time")]
    Timeout,
    /// The connection failed after the request was sent (reset, truncated body, ...).
    #[error("connection to LoginID failed")]
    Transport(#[source] reqwest::Error),
    /// LoginID redirected to another origin, or too often.
    #[error("refused a redirect from LoginID")]
    Redirect,
    /// The response body is larger than the configured cap.
    #[error("LoginID response exceeds {limit} bytes")]
    ResponseTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// A successful response that is not `application/json`.
    #[error("LoginID answered with content type {content_type:?}, not JSON")]
    UnexpectedContentType {
        /// The `Content-Type` received, if any.
        content_type: Option<String>,
    },
    /// A successful status this endpoint does not use (e.g. a 3xx, or 200 where 204 is due).
    #[error("LoginID answered with unexpected HTTP status {0}")]
    UnexpectedStatus(u16),
    /// A successful response whose body is not the expected JSON.
    #[error("could not decode LoginID response")]
    Decode(#[source] serde_json::Error),
    /// LoginID refused the request.
    #[error(transparent)]
    Api(#[from] ApiError),
    /// A LoginID token failed verification.
    #[error("LoginID token rejected")]
    Token(#[from] TokenError),
    /// Retrying stopped because the ceremony's deadline would pass before the next attempt.
    #[error("gave up before the deadline; last error: {last}")]
    DeadlineExceeded {
        /// The error of the last attempt.
        last: Box<Self>,
    },
}

impl Error {
    /// The HTTP status of an [`Error::Api`], if that is what this is.
    pub fn status(&self) -> Option<u16> {
        match self {
            Self::Api(api) => Some(api.status),
            Self::DeadlineExceeded { last } => last.status(),
            _ => None,
        }
    }
}
