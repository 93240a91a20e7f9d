//! Emulator configuration.

use std::path::PathBuf;
use std::time::Duration;

use url::Url;

use crate::faults::FaultPlan;

/// `userVerification` the emulator requests and enforces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum UserVerification {
    /// UV flag must be set.
    #[default]
    Required,
    /// Requested; not enforced.
    Preferred,
    /// Not requested; not enforced.
    Discouraged,
}

/// `residentKey` the emulator requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ResidentKey {
    /// A discoverable credential is required (`requireResidentKey: true`).
    #[default]
    Required,
    /// Discoverable preferred.
    Preferred,
    /// Server-side credential preferred.
    Discouraged,
}

/// `attestation` conveyance the emulator requests. Any of `none`, `packed` and `fido-u2f` is
/// verified and accepted whatever is requested, as relying parties do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Attestation {
    /// `none`.
    None,
    /// `indirect`.
    Indirect,
    /// `direct` (what the reference's example shows).
    #[default]
    Direct,
}

/// A command-line value that names none of an option's choices.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {value:?}; expected one of {expected}")]
pub struct UnknownChoice {
    value: String,
    expected: &'static str,
}

/// `FromStr` from the lower-case names WebAuthn uses, for the command line.
macro_rules! choices {
    ($type:ty, $expected:literal, $($name:literal => $variant:expr),+ $(,)?) => {
        impl std::str::FromStr for $type {
            type Err = UnknownChoice;

            fn from_str(value: &str) -> Result<Self, Self::Err> {
                match value {
                    $($name => Ok($variant),)+
                    _ => Err(UnknownChoice { value: value.to_owned(), expected: $expected }),
                }
            }
        }
    };
}

choices!(UserVerification, "required, preferred, discouraged",
    "required" => Self::Required, "preferred" => Self::Preferred,
    "discouraged" => Self::Discouraged);
choices!(ResidentKey, "required, preferred, discouraged",
    "required" => Self::Required, "preferred" => Self::Preferred,
    "discouraged" => Self::Discouraged);
choices!(Attestation, "none, indirect, direct",
    "none" => Self::None, "indirect" => Self::Indirect, "direct" => Self::Direct);

/// Everything the emulator needs to know about the application it plays.
///
/// `Debug` leaves the API key out.
#[derive(Clone)]
#[non_exhaustive]
pub struct EmulatorConfig {
    /// Application id (token `aud`).
    pub app_id: String,
    /// Allowed origins for clientDataJSON.
    pub origins: Vec<Url>,
    /// RP ID.
    pub rp_id: String,
    /// RP name.
    pub rp_name: String,
    /// Application API key (HTTP Basic `key:` on management endpoints).
    pub api_key: String,
    /// Protected application: every registration needs a `reg:write` token for the user.
    pub protected: bool,
    /// User verification requested and enforced.
    pub user_verification: UserVerification,
    /// Resident key requested.
    pub resident_key: ResidentKey,
    /// Attestation conveyance requested.
    pub attestation: Attestation,
    /// Ceremony timeout sent in the options; also the lifetime of a registration session.
    pub timeout: Duration,
    /// Lifetime of grant tokens.
    pub grant_ttl: Duration,
    /// Lifetime of LoginID tokens (600 s in the reference's example).
    pub access_token_ttl: Duration,
    /// Emit standard base64 with padding (as the OpenAPI examples show) instead of unpadded
    /// base64url (what the live service is inferred to send).
    pub padded_base64: bool,
    /// Faults active from the start.
    pub faults: FaultPlan,
    /// Append the JSON-lines request log to this file.
    pub request_log: Option<PathBuf>,
    /// Most registration sessions open at once; `reg/init` answers 429 beyond it.
    pub max_sessions: usize,
    /// Most connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
    /// Time a client has to send a request's headers, and that an idle kept-alive
    /// connection stays open.
    pub header_read_timeout: Duration,
}

impl std::fmt::Debug for EmulatorConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Destructured so that a new field cannot be forgotten here.
        let Self {
            app_id,
            origins,
            rp_id,
            rp_name,
            api_key: _,
            protected,
            user_verification,
            resident_key,
            attestation,
            timeout,
            grant_ttl,
            access_token_ttl,
            padded_base64,
            faults,
            request_log,
            max_sessions,
            max_connections,
            header_read_timeout,
        } = self;
        f.debug_struct("EmulatorConfig")
            .field("app_id", app_id)
            .field("origins", origins)
            .field("rp_id", rp_id)
            .field("rp_name", rp_name)
            .field("api_key", &"<redacted>")
            .field("protected", protected)
            .field("user_verification", user_verification)
            .field("resident_key", resident_key)
            .field("attestation", attestation)
            .field("timeout", timeout)
            .field("grant_ttl", grant_ttl)
            .field("access_token_ttl", access_token_ttl)
            .field("padded_base64", padded_base64)
            .field("faults", faults)
            .field("request_log", request_log)
            .field("max_sessions", max_sessions)
            .field("max_connections", max_connections)
            .field("header_read_timeout", header_read_timeout)
            .finish()
    }
}

impl EmulatorConfig {
    /// A configuration with defaults: unprotected, UV required, resident key required,
    /// `direct` attestation, 5 min ceremonies, 60 s grants, 600 s LoginID tokens, 1024 open
    /// sessions, 256 connections, 10 s to send headers.
    pub fn new(
        app_id: impl Into<String>,
        origin: Url,
        rp_id: impl Into<String>,
        api_key: impl Into<String>,
    ) -> Self {
        let rp_id = rp_id.into();
        Self {
            app_id: app_id.into(),
            origins: vec![origin],
            rp_name: rp_id.clone(),
            rp_id,
            api_key: api_key.into(),
            protected: false,
            user_verification: UserVerification::default(),
            resident_key: ResidentKey::default(),
            attestation: Attestation::default(),
            timeout: Duration::from_secs(300),
            grant_ttl: Duration::from_secs(60),
            access_token_ttl: Duration::from_secs(600),
            padded_base64: false,
            faults: FaultPlan::default(),
            request_log: None,
            max_sessions: 1024,
            max_connections: 256,
            header_read_timeout: Duration::from_secs(10),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_leaves_the_api_key_out() {
        let config = EmulatorConfig::new(
            "app",
            Url::parse("https://example.com").unwrap(),
            "example.com",
            "very-secret-api-key",
        );
        let text = format!("{config:?}");
        assert!(!text.contains("very-secret"), "{text}");
        assert!(text.contains(r#"api_key: "<redacted>""#), "{text}");
        assert!(text.contains(r#"app_id: "app""#), "{text}");
    }

    #[test]
    fn choices_parse_from_their_webauthn_names() {
        assert_eq!("discouraged".parse(), Ok(UserVerification::Discouraged));
        assert_eq!("preferred".parse(), Ok(ResidentKey::Preferred));
        assert_eq!("none".parse(), Ok(Attestation::None));
        let err = "Direct".parse::<Attestation>().unwrap_err();
        assert_eq!(
            err.to_string(),
            r#"unknown value "Direct"; expected one of none, indirect, direct"#
        );
    }
}
