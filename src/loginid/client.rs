//! The HTTPS client for the LoginID FIDO2 v2 API.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use reqwest::header::{self, HeaderMap, HeaderValue};
use reqwest::{Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;
use url::Url;
use zeroize::Zeroizing;

use super::config::{AuthorizationScheme, LoginIdConfig, RetryPolicy};
use super::dto::{
    AppError, GrantRequest, GrantResponse, JwkSet, RegCompleteRequest, RegCompleteResponse,
    RegInitRequest, RegInitResponse, TokenVerifyRequest,
};
use super::error::{ApiError, ApiErrorCode, ConfigError, Error, TokenError};
use super::secret::{ApiKey, Token};

/// `User-Agent` of every request.
pub const USER_AGENT: &str = concat!("passkeyd/", env!("CARGO_PKG_VERSION"));

/// Paths relative to the application base URL (reference §3).
mod path {
    pub(super) const GRANT: &str = "fido2/v2/mgmt/grant";
    pub(super) const TOKEN_VERIFY: &str = "fido2/v2/mgmt/token/verify";
    pub(super) const JWKS: &str = "fido2/v2/.well-known/jwks.json";
    pub(super) const REG_INIT: &str = "fido2/v2/reg/init";
    pub(super) const REG_COMPLETE: &str = "fido2/v2/reg/complete";
}

/// Longest server message kept in an [`ApiError`].
pub(crate) const MAX_MESSAGE_CHARS: usize = 200;
/// Bytes of a secret's beginning that, found in a server message, mark where it was cut.
const SECRET_PREFIX_BYTES: usize = 8;
/// Most redirects followed (all within the base URL's origin).
const MAX_REDIRECTS: usize = 3;

/// Client of one LoginID application. Cheap to clone (one connection pool is shared).
#[derive(Clone, Debug)]
pub struct LoginIdClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    http: reqwest::Client,
    /// Base URL with a trailing slash, so that relative paths append to it.
    base: Url,
    config: LoginIdConfig,
}

/// What goes into the `Authorization` header.
#[derive(Clone, Copy)]
enum Auth<'a> {
    None,
    ApiKey(&'a ApiKey),
    Token(&'a Token),
}

/// A response read in full (up to the cap).
struct Reply {
    status: StatusCode,
    content_type: Option<String>,
    retry_after: Option<Duration>,
    body: Zeroizing<Vec<u8>>,
}

impl LoginIdClient {
    /// Builds the client: rustls with the ring provider and the platform's trust roots (plus
    /// `extra_root_certificates`), HTTP/1.1, no proxies from the environment, redirects only
    /// within the base URL's origin.
    pub fn new(config: LoginIdConfig) -> Result<Self, Error> {
        let plain_http = config.validate()?;
        let tls = tls_config(&config)?;
        let origin = config.base_url.origin();
        let redirect = reqwest::redirect::Policy::custom(move |attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error("too many redirects")
            } else if attempt.url().origin() == origin {
                attempt.follow()
            } else {
                attempt.error("redirect to another origin")
            }
        });
        let mut headers = HeaderMap::new();
        headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
        let mut builder = reqwest::Client::builder();
        if plain_http
            && let Some(url::Host::Domain(name)) = config.base_url.host()
            && let Some(port) = config.base_url.port_or_known_default()
        {
            // `localhost` over plain http: loopback whatever the resolver would say.
            let loopback = [
                std::net::SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port)),
                std::net::SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            ];
            builder = builder.resolve_to_addrs(name, &loopback);
        }
        let http = builder
            .tls_backend_preconfigured(tls)
            .https_only(!plain_http)
            .user_agent(USER_AGENT)
            .default_headers(headers)
            .redirect(redirect)
            // No reqwest `.timeout`: `exchange` bounds each exchange by the request timeout
            // and the caller's deadline in one place.
            .connect_timeout(config.connect_timeout)
            .no_proxy()
            .build()
            .map_err(|e| ConfigError::Client(e.to_string()))?;
        let mut base = config.base_url.clone();
        if !base.path().ends_with('/') {
            let with_slash = format!("{}/", base.path());
            base.set_path(&with_slash);
        }
        Ok(Self {
            inner: Arc::new(Inner { http, base, config }),
        })
    }

    /// The configuration in use.
    pub fn config(&self) -> &LoginIdConfig {
        &self.inner.config
    }

    /// `POST /fido2/v2/mgmt/grant` (reference §4.1): an authorization token for `request`,
    /// authenticated with the application API key. For rigs and development; in production
    /// the UI's backend holds the API key.
    pub async fn grant(&self, api_key: &ApiKey, request: &GrantRequest) -> Result<Token, Error> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let reply = self
            .exchange(
                Method::POST,
                path::GRANT,
                Auth::ApiKey(api_key),
                Some(request),
                deadline,
            )
            .await?;
        let response: GrantResponse = json_body(&reply, None)?;
        Ok(response.token)
    }

    /// `POST /fido2/v2/reg/init` (reference §4.2). `authz` is the authorization token from
    /// `mgmt/grant` (scope `reg:write`), required for every passkey on protected applications
    /// and for a user's second passkey everywhere.
    ///
    /// Retried only on connection failures (the request never reached the server), with
    /// back-off, at most `retry.init_attempts` times and never past `deadline`.
    pub async fn reg_init(
        &self,
        request: &RegInitRequest,
        authz: Option<&Token>,
        deadline: Instant,
    ) -> Result<RegInitResponse, Error> {
        let auth = authz.map_or(Auth::None, Auth::Token);
        let policy = &self.inner.config.retry;
        let mut retry = 0_u32;
        loop {
            let result = self
                .exchange(Method::POST, path::REG_INIT, auth, Some(request), deadline)
                .await
                .and_then(|reply| json_body(&reply, authz));
            match result {
                Err(error @ Error::Connect(_)) if retry + 1 < policy.init_attempts => {
                    let wait = policy.backoff(retry);
                    wait_or_give_up(error, wait, deadline).await?;
                    retry += 1;
                }
                other => return other,
            }
        }
    }

    /// `POST /fido2/v2/reg/complete` (reference §4.3).
    ///
    /// By now the credential exists on the key, so a network blip must not lose it: the call
    /// is retried with back-off on connection failures, timeouts, 429 (waiting out
    /// `Retry-After`) and 5xx, until `deadline` (the session's lifetime). No wait reaches past
    /// the deadline; when the next attempt could not start in time the last error is returned
    /// inside [`Error::DeadlineExceeded`].
    pub async fn reg_complete(
        &self,
        request: &RegCompleteRequest,
        deadline: Instant,
    ) -> Result<RegCompleteResponse, Error> {
        let policy = &self.inner.config.retry;
        let mut retry = 0_u32;
        loop {
            let result = self
                .exchange(
                    Method::POST,
                    path::REG_COMPLETE,
                    Auth::None,
                    Some(request),
                    deadline,
                )
                .await
                .and_then(|reply| json_body(&reply, Some(&request.session)));
            let error = match result {
                Ok(response) => return Ok(response),
                Err(error) => error,
            };
            let Some(wait) = complete_retry_wait(&error, policy, retry) else {
                return Err(error);
            };
            tracing::warn!(
                retry,
                wait_ms = u64::try_from(wait.as_millis()).unwrap_or(u64::MAX),
                error = %error,
                "reg/complete failed; retrying"
            );
            wait_or_give_up(error, wait, deadline).await?;
            retry += 1;
        }
    }

    /// `POST /fido2/v2/mgmt/token/verify` (reference §4.4): `Ok(())` when LoginID answers 204.
    pub async fn verify_token(&self, api_key: &ApiKey, token: &Token) -> Result<(), Error> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let request = TokenVerifyRequest {
            jwt_access: token.clone(),
        };
        let reply = self
            .exchange(
                Method::POST,
                path::TOKEN_VERIFY,
                Auth::ApiKey(api_key),
                Some(&request),
                deadline,
            )
            .await?;
        match reply.status {
            StatusCode::NO_CONTENT => Ok(()),
            status if status.is_success() => Err(Error::UnexpectedStatus(status.as_u16())),
            _ => Err(api_error(&reply, Some(token)).into()),
        }
    }

    /// `GET /fido2/v2/.well-known/jwks.json` (reference §4.5).
    pub async fn jwks(&self) -> Result<JwkSet, Error> {
        let deadline = Instant::now() + self.inner.config.request_timeout;
        let reply = self
            .exchange::<()>(Method::GET, path::JWKS, Auth::None, None, deadline)
            .await?;
        json_body(&reply, None)
    }

    /// One HTTP exchange, from sending the request to the body's last byte, bounded by the
    /// request timeout and by `deadline` (the only timer on it besides `connect_timeout`).
    async fn exchange<B: Serialize>(
        &self,
        method: Method,
        path: &str,
        auth: Auth<'_>,
        body: Option<&B>,
        deadline: Instant,
    ) -> Result<Reply, Error> {
        let url = self
            .inner
            .base
            .join(path)
            .map_err(|_| ConfigError::MalformedBaseUrl)?;
        let mut request = self.inner.http.request(method, url);
        if let Some(value) = self.authorization(&auth)? {
            request = request.header(header::AUTHORIZATION, value);
        }
        if let Some(body) = body {
            // Request bodies carry secrets too (`reg/complete`'s session, `token/verify`'s
            // token): the buffer is wiped when reqwest drops it, retries and all.
            let bytes = Zeroizing::new(serde_json::to_vec(body).map_err(Error::Decode)?);
            request = request
                .header(header::CONTENT_TYPE, "application/json")
                .body(bytes::Bytes::from_owner(bytes));
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(Error::Timeout);
        }
        let budget = deadline
            .duration_since(now)
            .min(self.inner.config.request_timeout);
        let limit = self.inner.config.max_response_bytes;
        match tokio::time::timeout(budget, async move {
            let response = request.send().await.map_err(classify)?;
            read_reply(response, limit).await
        })
        .await
        {
            Ok(result) => result,
            Err(_elapsed) => Err(Error::Timeout),
        }
    }

    fn authorization(&self, auth: &Auth<'_>) -> Result<Option<HeaderValue>, Error> {
        let text = match auth {
            Auth::None => return Ok(None),
            Auth::ApiKey(key) => Zeroizing::new(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD
                    .encode(Zeroizing::new(format!("{}:", key.expose())).as_bytes())
            )),
            Auth::Token(token) => match self.inner.config.authorization_scheme {
                AuthorizationScheme::Raw => Zeroizing::new(token.expose().to_owned()),
                AuthorizationScheme::Bearer => Zeroizing::new(format!("Bearer {}", token.expose())),
            },
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| TokenError::Malformed)?;
        value.set_sensitive(true);
        Ok(Some(value))
    }
}

/// How long to wait before retrying `reg/complete` after `error` on retry number `retry`, or
/// `None` when the error is final.
///
/// A `Retry-After` longer than the back-off replaces it; a shorter one (`0`, or an HTTP-date
/// already past) does not, so that a server answering `Retry-After: 0` cannot drive the
/// client into a hot loop. One longer than `max_retry_after` ends the retries.
fn complete_retry_wait(error: &Error, policy: &RetryPolicy, retry: u32) -> Option<Duration> {
    let backoff = policy.backoff(retry);
    match error {
        Error::Connect(_) | Error::Transport(_) | Error::Timeout => Some(backoff),
        Error::Api(api) if api.status == 429 || (500..=599).contains(&api.status) => {
            match api.retry_after {
                Some(after) if after > policy.max_retry_after => None,
                Some(after) => Some(after.max(backoff)),
                None => Some(backoff),
            }
        }
        _ => None,
    }
}

/// Sleeps `wait` unless the next attempt could not start before `deadline`; then gives up
/// with `error`.
/// `wait` comes from the server (`Retry-After`) and may be absurd: a sum past `Instant`'s
/// range counts as past the deadline instead of panicking.
async fn wait_or_give_up(error: Error, wait: Duration, deadline: Instant) -> Result<(), Error> {
    if Instant::now()
        .checked_add(wait)
        .is_none_or(|resume| resume >= deadline)
    {
        return Err(Error::DeadlineExceeded {
            last: Box::new(error),
        });
    }
    tokio::time::sleep(wait).await;
    Ok(())
}

fn tls_config(config: &LoginIdConfig) -> Result<rustls::ClientConfig, Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let roots = config
        .extra_root_certificates
        .iter()
        .map(|der| rustls::pki_types::CertificateDer::from(der.clone()));
    let verifier =
        rustls_platform_verifier::Verifier::new_with_extra_roots(roots, Arc::clone(&provider))
            .map_err(|e| ConfigError::Tls(e.to_string()))?;
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ConfigError::Tls(e.to_string()))?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// Maps a reqwest error onto the client's categories.
fn classify(error: reqwest::Error) -> Error {
    if error.is_timeout() {
        Error::Timeout
    } else if error.is_redirect() {
        Error::Redirect
    } else if error.is_connect() {
        Error::Connect(error)
    } else {
        Error::Transport(error)
    }
}

/// Reads the body incrementally, stopping as soon as it would exceed `limit`.
async fn read_reply(mut response: reqwest::Response, limit: usize) -> Result<Reply, Error> {
    let status = response.status();
    if status.is_redirection() {
        // Followed redirects never surface; one that reqwest stopped at is not ours to use.
        return Err(Error::Redirect);
    }
    let headers = response.headers();
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let retry_after = headers
        .get(header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| parse_retry_after(v, SystemTime::now()));
    let declared = response.content_length();
    if declared.is_some_and(|length| length > limit as u64) {
        return Err(Error::ResponseTooLarge { limit });
    }
    let mut body = BodyBuffer::new(limit);
    while let Some(chunk) = response.chunk().await.map_err(classify)? {
        body.push(chunk)?;
    }
    Ok(Reply {
        status,
        content_type,
        retry_after,
        body: body.finish(),
    })
}

/// Collects a response body (which may hold a token) so that the client leaves no copy of it
/// behind: the chunks are kept as received, and copied once into a zeroizing buffer allocated
/// at the final size, which therefore never reallocates. (The chunks are the HTTP stack's
/// own buffers; those the client cannot wipe.)
struct BodyBuffer<C> {
    limit: usize,
    chunks: Vec<C>,
    len: usize,
}

impl<C: AsRef<[u8]>> BodyBuffer<C> {
    fn new(limit: usize) -> Self {
        Self {
            limit,
            chunks: Vec::new(),
            len: 0,
        }
    }

    /// Adds a chunk, refusing it if the body would pass the limit.
    fn push(&mut self, chunk: C) -> Result<(), Error> {
        let size = chunk.as_ref().len();
        if size > self.limit.saturating_sub(self.len) {
            return Err(Error::ResponseTooLarge { limit: self.limit });
        }
        self.len += size;
        self.chunks.push(chunk);
        Ok(())
    }

    fn finish(self) -> Zeroizing<Vec<u8>> {
        let mut body = Zeroizing::new(Vec::with_capacity(self.len));
        for chunk in &self.chunks {
            body.extend_from_slice(chunk.as_ref());
        }
        body
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub(super) fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

fn is_json(content_type: Option<&str>) -> bool {
    let Some(content_type) = content_type else {
        return false;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

/// Decodes a 200 JSON body, or turns a failure status into an [`ApiError`].
fn json_body<T: DeserializeOwned>(reply: &Reply, secret: Option<&Token>) -> Result<T, Error> {
    if !reply.status.is_success() {
        return Err(api_error(reply, secret).into());
    }
    if reply.status != StatusCode::OK {
        return Err(Error::UnexpectedStatus(reply.status.as_u16()));
    }
    if !is_json(reply.content_type.as_deref()) {
        return Err(Error::UnexpectedContentType {
            content_type: reply.content_type.as_ref().map(|c| sanitize(c, None)),
        });
    }
    serde_json::from_slice(&reply.body).map_err(Error::Decode)
}

/// [`api_error`] of a reply made of these parts (for fuzzing); `None` for a status code
/// outside 100..=999.
pub(crate) fn api_error_of(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    secret: Option<&Token>,
) -> Option<ApiError> {
    let reply = Reply {
        status: StatusCode::from_u16(status).ok()?,
        content_type: content_type.map(str::to_owned),
        retry_after: None,
        body: Zeroizing::new(body.to_vec()),
    };
    Some(api_error(&reply, secret))
}

/// Builds the typed error of a non-2xx reply from its status and `{msg, msgCode}` body.
fn api_error(reply: &Reply, secret: Option<&Token>) -> ApiError {
    let body: Option<AppError> = if is_json(reply.content_type.as_deref()) {
        serde_json::from_slice(&reply.body).ok()
    } else {
        None
    };
    let (code, message) = match body {
        Some(body) => (
            body.msg_code
                .as_deref()
                .map_or(ApiErrorCode::Missing, ApiErrorCode::from_msg_code),
            body.msg.or(body.message),
        ),
        None => (ApiErrorCode::Missing, None),
    };
    ApiError {
        status: reply.status.as_u16(),
        code,
        message: message.map(|m| sanitize(&m, secret)),
        retry_after: reply.retry_after,
    }
}

/// Shortens server text, drops control characters and blanks out a token it might echo.
fn sanitize(text: &str, secret: Option<&Token>) -> String {
    let mut text: String = text
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_MESSAGE_CHARS)
        .collect();
    if let Some(secret) = secret.filter(|s| s.len() >= SECRET_PREFIX_BYTES) {
        text = text.replace(secret.expose(), "<redacted>");
        // A message cut inside the token would still carry a prefix of it.
        if let Some(start) = text.find(secret_prefix(secret.expose())) {
            text.truncate(start);
            text.push_str("<redacted>");
        }
    }
    text
}

/// The secret's first [`SECRET_PREFIX_BYTES`] bytes, extended to the next character boundary:
/// a token is server data and may hold a multi-byte character at any offset.
fn secret_prefix(secret: &str) -> &str {
    (SECRET_PREFIX_BYTES..=secret.len())
        .find_map(|end| secret.get(..end))
        .unwrap_or(secret)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_forms() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_retry_after("7", now), Some(Duration::from_secs(7)));
        assert_eq!(parse_retry_after(" 0 ", now), Some(Duration::ZERO));
        let later = httpdate::fmt_http_date(now + Duration::from_secs(120));
        assert_eq!(
            parse_retry_after(&later, now),
            Some(Duration::from_secs(120))
        );
        let earlier = httpdate::fmt_http_date(now - Duration::from_secs(120));
        assert_eq!(parse_retry_after(&earlier, now), Some(Duration::ZERO));
        assert_eq!(parse_retry_after("-1", now), None);
        assert_eq!(parse_retry_after("soon", now), None);
    }

    #[tokio::test]
    async fn a_wait_beyond_the_clock_gives_up_instead_of_panicking() {
        let deadline = Instant::now() + Duration::from_secs(60);
        let result = wait_or_give_up(Error::Timeout, Duration::MAX, deadline).await;
        assert!(
            matches!(result, Err(Error::DeadlineExceeded { ref last }) if matches!(**last, Error::Timeout)),
            "{result:?}"
        );
        let result = wait_or_give_up(Error::Timeout, Duration::ZERO, deadline).await;
        assert!(result.is_ok());
    }

    fn api(status: u16, retry_after: Option<Duration>) -> Error {
        Error::Api(ApiError {
            status,
            code: ApiErrorCode::Missing,
            message: None,
            retry_after,
        })
    }

    #[test]
    fn retry_after_never_shortens_the_backoff() {
        let policy = RetryPolicy::default();
        let wait = |error: &Error, retry| complete_retry_wait(error, &policy, retry);
        // `Retry-After: 0` and a past HTTP-date both parse to zero.
        for status in [429, 503] {
            assert_eq!(
                wait(&api(status, Some(Duration::ZERO)), 0),
                Some(Duration::from_millis(250))
            );
            assert_eq!(
                wait(&api(status, Some(Duration::ZERO)), 3),
                Some(Duration::from_secs(2))
            );
            assert_eq!(
                wait(&api(status, Some(Duration::from_millis(100))), 1),
                Some(Duration::from_millis(500))
            );
        }
        // A longer one is waited out in full ...
        assert_eq!(
            wait(&api(429, Some(Duration::from_secs(7))), 0),
            Some(Duration::from_secs(7))
        );
        // ... up to the ceiling, beyond which the retries end.
        assert_eq!(wait(&api(429, Some(Duration::from_secs(61))), 0), None);
        assert_eq!(wait(&api(500, None), 2), Some(Duration::from_secs(1)));
        assert_eq!(wait(&Error::Timeout, 0), Some(Duration::from_millis(250)));
        assert_eq!(wait(&api(400, Some(Duration::ZERO)), 0), None);
        assert_eq!(wait(&api(403, None), 0), None);
        assert_eq!(wait(&Error::Redirect, 0), None);
    }

    #[test]
    fn json_content_types() {
        assert!(is_json(Some("application/json")));
        assert!(is_json(Some("Application/JSON; charset=utf-8")));
        assert!(is_json(Some("application/problem+json")));
        assert!(!is_json(Some("text/html")));
        assert!(!is_json(Some("text/json+x")));
        assert!(!is_json(None));
    }

    #[test]
    fn sanitize_strips_controls_and_tokens() {
        let token = Token::new("eyJhbGciOiJFUzI1NiJ9.payload.signature");
        let text = format!("bad token {}\n\u{1b}[31m", token.expose());
        assert_eq!(sanitize(&text, Some(&token)), "bad token <redacted>[31m");
        let long = format!("{}{}", "x".repeat(190), token.expose());
        assert_eq!(
            sanitize(&long, Some(&token)),
            format!("{}<redacted>", "x".repeat(190))
        );
        assert_eq!(sanitize(&"y".repeat(500), None).len(), MAX_MESSAGE_CHARS);
    }

    #[test]
    fn sanitize_survives_a_multi_byte_character_at_the_prefix_end() {
        // 'é' takes bytes 7 and 8: byte 8 is not a character boundary.
        let session = Token::new("abcdefg\u{e9}hijklmnop");
        assert_eq!(secret_prefix(session.expose()), "abcdefg\u{e9}");
        let echoed = format!("unknown session {}", session.expose());
        assert_eq!(
            sanitize(&echoed, Some(&session)),
            "unknown session <redacted>"
        );
        // Cut inside the token, after the multi-byte character.
        let cut = format!("session {}", &session.expose()[..12]);
        assert_eq!(sanitize(&cut, Some(&session)), "session <redacted>");
        // Multi-byte characters everywhere, including the very first bytes.
        let wide = Token::new("\u{1f511}\u{1f511}\u{1f511}");
        assert_eq!(secret_prefix(wide.expose()), "\u{1f511}\u{1f511}");
        assert_eq!(
            sanitize(&format!("x {}", wide.expose()), Some(&wide)),
            "x <redacted>"
        );
    }

    #[test]
    fn body_buffer_copies_once_at_the_final_size() {
        let mut buffer = BodyBuffer::new(16);
        for chunk in [&b"{\"tok"[..], b"en\":", b"\"t\"}"] {
            buffer.push(chunk).unwrap();
        }
        let body = buffer.finish();
        assert_eq!(body.as_slice(), b"{\"token\":\"t\"}".as_slice());
        assert_eq!((body.len(), body.capacity()), (13, 13));
        // Exactly at the limit is fine; one byte more is not.
        let mut buffer = BodyBuffer::new(4);
        buffer.push(&b"ab"[..]).unwrap();
        buffer.push(&b"cd"[..]).unwrap();
        assert!(matches!(
            buffer.push(&b"e"[..]),
            Err(Error::ResponseTooLarge { limit: 4 })
        ));
        assert_eq!(buffer.finish().as_slice(), b"abcd");
        let empty = BodyBuffer::<&[u8]>::new(4).finish();
        assert_eq!((empty.len(), empty.capacity()), (0, 0));
    }

    fn reply(status: u16, content_type: Option<&str>, body: &str) -> Reply {
        Reply {
            status: StatusCode::from_u16(status).unwrap(),
            content_type: content_type.map(str::to_owned),
            retry_after: None,
            body: Zeroizing::new(body.as_bytes().to_vec()),
        }
    }

    #[test]
    fn api_errors_from_body_and_status() {
        let r = reply(
            403,
            Some("application/json"),
            r#"{"msgCode":"forbidden","msg":"no"}"#,
        );
        let e = api_error(&r, None);
        assert_eq!(e.status, 403);
        assert_eq!(e.code, ApiErrorCode::Forbidden);
        assert_eq!(e.message.as_deref(), Some("no"));
        let r = reply(401, Some("application/json"), r#"{"message":"expired"}"#);
        let e = api_error(&r, None);
        assert_eq!(
            (e.code, e.message.as_deref()),
            (ApiErrorCode::Missing, Some("expired"))
        );
        let r = reply(502, Some("text/html"), "<html>bad gateway</html>");
        let e = api_error(&r, None);
        assert_eq!(
            (e.status, e.code, e.message),
            (502, ApiErrorCode::Missing, None)
        );
        let r = reply(
            400,
            Some("application/json"),
            r#"{"msgCode":"teapot","msg":"x"}"#,
        );
        assert_eq!(
            api_error(&r, None).code,
            ApiErrorCode::Other("teapot".into())
        );
    }

    #[test]
    fn json_body_rules() {
        let ok: Result<GrantResponse, _> = json_body(
            &reply(200, Some("application/json"), r#"{"token":"t"}"#),
            None,
        );
        assert_eq!(ok.unwrap().token.expose(), "t");
        let html: Result<GrantResponse, _> =
            json_body(&reply(200, Some("text/html"), r#"{"token":"t"}"#), None);
        assert!(matches!(
            html,
            Err(Error::UnexpectedContentType { content_type: Some(ref c) }) if c == "text/html"
        ));
        let accepted: Result<GrantResponse, _> =
            json_body(&reply(202, Some("application/json"), "{}"), None);
        assert!(matches!(accepted, Err(Error::UnexpectedStatus(202))));
        let garbage: Result<GrantResponse, _> =
            json_body(&reply(200, Some("application/json"), "{\"tok"), None);
        assert!(matches!(garbage, Err(Error::Decode(_))));
    }
}
