//! Configuration of the LoginID client.

use std::net::IpAddr;
use std::time::Duration;

use url::Url;

use super::error::ConfigError;

/// How an authorization token is written into the `Authorization` header of `reg/init`.
///
/// LoginID's web and Android SDKs send the raw token; its server-side samples send
/// `Bearer <token>`; the service accepts both (reference §2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum AuthorizationScheme {
    /// `Authorization: <token>`.
    #[default]
    Raw,
    /// `Authorization: Bearer <token>`.
    Bearer,
}

/// When to try again (reference: the registration must survive network blips, because by the
/// time `reg/complete` is sent the credential already exists on the key).
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct RetryPolicy {
    /// Attempts of `reg/init` (retried on connection failures only).
    pub init_attempts: u32,
    /// First back-off; doubled after every failed attempt.
    pub initial_backoff: Duration,
    /// Back-off ceiling.
    pub max_backoff: Duration,
    /// A `Retry-After` longer than this ends the retries instead of being waited out.
    pub max_retry_after: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            init_attempts: 3,
            initial_backoff: Duration::from_millis(250),
            max_backoff: Duration::from_secs(5),
            max_retry_after: Duration::from_secs(60),
        }
    }
}

impl RetryPolicy {
    /// The back-off before retry number `retry` (0 for the first retry): exponential, capped.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = 1_u32.checked_shl(retry.min(16)).unwrap_or(u32::MAX);
        self.initial_backoff
            .checked_mul(factor)
            .map_or(self.max_backoff, |d| d.min(self.max_backoff))
    }
}

/// Configuration of a [`LoginIdClient`](super::LoginIdClient).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct LoginIdConfig {
    /// The application's base URL, `https://<appId>.api.loginid.io` (also the token issuer).
    pub base_url: Url,
    /// The LoginID application id (token audience, `app.id` of `reg/init`).
    pub app_id: String,
    /// Allow plain `http://` when the base URL's host is a loopback IP address or `localhost` (emulator,
    /// rigs). Other hosts always need https.
    pub allow_http_loopback: bool,
    /// Time allowed to open the connection (TCP and TLS).
    pub connect_timeout: Duration,
    /// Time allowed for one exchange, from sending the request to the last byte of the body.
    pub request_timeout: Duration,
    /// Responses larger than this are refused; bodies are read incrementally up to it.
    pub max_response_bytes: usize,
    /// How the authorization token is written into the `Authorization` header.
    pub authorization_scheme: AuthorizationScheme,
    /// Retry policy.
    pub retry: RetryPolicy,
    /// DER certificates trusted in addition to the system's roots (private deployments).
    pub extra_root_certificates: Vec<Vec<u8>>,
    /// Smallest interval between two JWKS downloads caused by unknown key ids.
    pub jwks_min_refresh_interval: Duration,
    /// Age after which cached JWKS keys are downloaded again.
    pub jwks_max_age: Duration,
    /// How long past `jwks_max_age` cached keys keep verifying while the JWKS cannot be
    /// downloaded (LoginID unreachable or failing).
    pub jwks_stale_grace: Duration,
    /// Clock skew tolerated when checking `exp` and `nbf`.
    pub token_leeway: Duration,
}

impl LoginIdConfig {
    /// A configuration with the defaults: https only, 10 s to connect, 30 s per exchange,
    /// 1 MiB responses, raw `Authorization` header.
    pub fn new(base_url: Url, app_id: impl Into<String>) -> Self {
        Self {
            base_url,
            app_id: app_id.into(),
            allow_http_loopback: false,
            connect_timeout: Duration::from_secs(10),
            request_timeout: Duration::from_secs(30),
            max_response_bytes: 1 << 20,
            authorization_scheme: AuthorizationScheme::Raw,
            retry: RetryPolicy::default(),
            extra_root_certificates: Vec::new(),
            jwks_min_refresh_interval: Duration::from_secs(10),
            jwks_max_age: Duration::from_secs(3600),
            jwks_stale_grace: Duration::from_secs(3600),
            token_leeway: Duration::from_secs(30),
        }
    }

    /// Checks the configuration; returns whether plain http to loopback is in use.
    pub(super) fn validate(&self) -> Result<bool, ConfigError> {
        let url = &self.base_url;
        if !url.username().is_empty()
            || url.password().is_some()
            || url.query().is_some()
            || url.fragment().is_some()
            || url.host().is_none()
        {
            return Err(ConfigError::MalformedBaseUrl);
        }
        let plain_http = match url.scheme() {
            "https" => false,
            "http" if self.allow_http_loopback && host_is_loopback_ip(url) => true,
            _ => return Err(ConfigError::InsecureBaseUrl),
        };
        for (name, value) in [
            ("connect_timeout", self.connect_timeout),
            ("request_timeout", self.request_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroLimit(name));
            }
        }
        if self.max_response_bytes == 0 {
            return Err(ConfigError::ZeroLimit("max_response_bytes"));
        }
        Ok(plain_http)
    }

    /// The issuer LoginID writes into its tokens: the base URL without a trailing slash.
    pub fn issuer(&self) -> String {
        self.base_url.as_str().trim_end_matches('/').to_owned()
    }
}

/// Loopback IP literals, and `localhost`, which the client then resolves to 127.0.0.1 and ::1
/// itself: a plain-http exception must not depend on what the resolver says.
fn host_is_loopback_ip(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Ipv4(ip)) => IpAddr::V4(ip).is_loopback(),
        Some(url::Host::Ipv6(ip)) => IpAddr::V6(ip).is_loopback(),
        // RFC 6761 §6.3: `localhost` names the loopback interface.
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(url: &str, allow: bool) -> LoginIdConfig {
        let mut c = LoginIdConfig::new(Url::parse(url).unwrap(), "app");
        c.allow_http_loopback = allow;
        c
    }

    #[test]
    fn https_is_always_fine() {
        assert_eq!(
            config("https://app.api.loginid.io", false).validate(),
            Ok(false)
        );
    }

    #[test]
    fn http_only_to_loopback_when_allowed() {
        assert_eq!(config("http://127.0.0.1:8080", true).validate(), Ok(true));
        assert_eq!(config("http://127.9.9.9:8080", true).validate(), Ok(true));
        assert_eq!(config("http://[::1]:8080", true).validate(), Ok(true));
        assert_eq!(config("http://localhost:8080", true).validate(), Ok(true));
        assert_eq!(config("http://LocalHost:8080", true).validate(), Ok(true));
        for (url, allow) in [
            ("http://127.0.0.1:8080", false),
            ("http://localhost:8080", false),
            ("http://localhost.example.com", true),
            ("http://mylocalhost", true),
            ("http://10.0.0.1", true),
            ("http://app.api.loginid.io", true),
            ("ftp://127.0.0.1", true),
        ] {
            assert_eq!(
                config(url, allow).validate(),
                Err(ConfigError::InsecureBaseUrl),
                "{url}"
            );
        }
    }

    #[test]
    fn malformed_base_urls() {
        for url in [
            "https://user:pw@app.api.loginid.io",
            "https://app.api.loginid.io/?q=1",
            "https://app.api.loginid.io/#f",
        ] {
            assert_eq!(
                config(url, false).validate(),
                Err(ConfigError::MalformedBaseUrl),
                "{url}"
            );
        }
    }

    #[test]
    fn zero_limits_are_refused() {
        let mut c = config("https://a.example", false);
        c.request_timeout = Duration::ZERO;
        assert_eq!(c.validate(), Err(ConfigError::ZeroLimit("request_timeout")));
        let mut c = config("https://a.example", false);
        c.max_response_bytes = 0;
        assert_eq!(
            c.validate(),
            Err(ConfigError::ZeroLimit("max_response_bytes"))
        );
    }

    #[test]
    fn backoff_doubles_up_to_the_ceiling() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(0), Duration::from_millis(250));
        assert_eq!(p.backoff(1), Duration::from_millis(500));
        assert_eq!(p.backoff(4), Duration::from_secs(4));
        assert_eq!(p.backoff(5), Duration::from_secs(5));
        assert_eq!(p.backoff(u32::MAX), Duration::from_secs(5));
    }

    #[test]
    fn issuer_has_no_trailing_slash() {
        assert_eq!(
            config("https://app.api.loginid.io/", false).issuer(),
            "https://app.api.loginid.io"
        );
    }
}
