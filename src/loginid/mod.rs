//! Client of the LoginID FIDO2 v2 HTTP API (the only module that speaks HTTP).
//!
//! The registration ceremony over an authorized session (reference `loginid-api.md` §6):
//! [`LoginIdClient::reg_init`] with the UI's authorization token, a WebAuthn credential made on
//! the security key from the returned [`CreationOptions`], then
//! [`LoginIdClient::reg_complete`], whose LoginID token [`TokenVerifier`] checks against the
//! application's JWKS. [`LoginIdClient::grant`] and [`LoginIdClient::verify_token`] use the
//! application API key; they serve rigs and development, where no UI backend holds the key.
//!
//! Transport rules: rustls with the system's trust roots; https only (plain http only to a
//! loopback IP when [`LoginIdConfig::allow_http_loopback`] is set); connect and per-exchange
//! timeouts; response bodies read incrementally up to a cap; redirects only within the base
//! URL's origin; `User-Agent: passkeyd/<version>`. Tokens and keys are [`Token`] and
//! [`ApiKey`]: zeroized on drop, redacted in `Debug`, never in an error or a log line.
//!
//! See `docs/loginid.md`.

pub mod b64;
mod client;
mod config;
pub mod dto;
mod error;
pub mod jwt;
mod secret;

pub use b64::Base64Bytes;
pub use client::{LoginIdClient, USER_AGENT};
pub(crate) use client::{MAX_MESSAGE_CHARS, api_error_of};
pub use config::{AuthorizationScheme, LoginIdConfig, RetryPolicy};
pub use dto::CreationOptions;
pub use error::{ApiError, ApiErrorCode, ConfigError, Error, TokenError};
pub use jwt::{LoginIdClaims, TokenVerifier};
pub use secret::{ApiKey, Token};
