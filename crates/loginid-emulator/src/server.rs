//! The HTTP server: accept loop, routes, fault injection and request log.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post, put};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
use futures_util::StreamExt as _;
use hmac::digest::{KeyInit, Output};
use hmac::{Hmac, Mac as _};
use hyper_util::rt::{TokioIo, TokioTimer};
use rand::RngCore as _;
use rand::rngs::OsRng;
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Sha256;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc, oneshot, watch};
use tower::ServiceExt as _;
use url::Url;
use uuid::Uuid;
use webauthn_rs_core::WebauthnCore;
use webauthn_rs_core::proto::{
    AttestationConveyancePreference, AuthenticatorAttachment, COSEAlgorithm,
    RegisterPublicKeyCredential, RegistrationState, UserVerificationPolicy,
};

use crate::config::{Attestation, EmulatorConfig, ResidentKey, UserVerification};
use crate::faults::{BodyFault, Endpoint, Fault, FaultPlan};
use crate::jws::KeyRing;

/// Scope that authorizes `reg/init` (reference §2); `passkey:write` on June-2024 servers.
const REG_WRITE: &str = "reg:write";
const PASSKEY_WRITE: &str = "passkey:write";
/// Largest request body read (`DefaultBodyLimit`).
const MAX_REQUEST_BYTES: usize = 256 << 10;
/// Largest real response body that a truncation fault buffers.
const MAX_BUFFERED_RESPONSE: usize = 1 << 20;

/// Why the emulator could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The emulator only listens on loopback addresses.
    #[error("refusing to listen on {0}: only loopback addresses are allowed")]
    NotLoopback(SocketAddr),
    /// Binding or opening the log file failed.
    #[error("I/O error: {0}")]
    Io(#[from] std::io::Error),
    /// The ceremony timeout does not fit WebAuthn's 32-bit millisecond count.
    #[error("timeout of {0:?} is longer than 2^32 - 1 ms")]
    TimeoutTooLong(Duration),
    /// A connection, session or time limit is zero.
    #[error("{0} must be greater than zero")]
    ZeroLimit(&'static str),
    /// An allowed origin or the base URL is not a URL.
    #[error("bad URL: {0}")]
    Url(#[from] url::ParseError),
}

/// Counters for tests.
#[derive(Debug, Default)]
pub(crate) struct Stats {
    pub(crate) oversize_bytes_sent: AtomicU64,
}

/// Lines the request log's writer may fall behind by; past it, requests wait for it (and
/// lines of dropped connections are lost, and counted).
const LOG_QUEUE: usize = 1024;

enum LogMessage {
    Line(String),
    /// Answered once every line queued before it is written and flushed.
    Flush(oneshot::Sender<()>),
}

/// The request log: lines go to a writer task, so that no request handler or drop ever
/// writes to the file on a runtime thread.
pub(crate) struct RequestLog {
    /// `None` without a log file.
    queue: Option<mpsc::Sender<LogMessage>>,
    /// Lines lost because the queue was full when a connection dropped.
    dropped: AtomicU64,
}

impl RequestLog {
    async fn open(path: Option<&Path>) -> Result<Self, StartError> {
        let queue = match path {
            Some(path) => {
                let file = tokio::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .await?;
                let (queue, lines) = mpsc::channel(LOG_QUEUE);
                tokio::spawn(write_log(file, lines));
                Some(queue)
            }
            None => None,
        };
        Ok(Self {
            queue,
            dropped: AtomicU64::new(0),
        })
    }

    /// Queues `line`, waiting while the writer is behind.
    async fn send(&self, line: String) {
        if let Some(queue) = &self.queue {
            // The writer only stops when the emulator does.
            let _ = queue.send(LogMessage::Line(line)).await;
        }
    }

    /// Queues `line` without waiting (from a drop, which cannot wait), or counts it as lost.
    fn try_send(&self, line: String) {
        if let Some(queue) = &self.queue
            && queue.try_send(LogMessage::Line(line)).is_err()
        {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Returns once every line queued so far is in the file.
    pub(crate) async fn flush(&self) {
        if let Some(queue) = &self.queue {
            let (done, written) = oneshot::channel();
            if queue.send(LogMessage::Flush(done)).await.is_ok() {
                let _ = written.await;
            }
        }
    }

    pub(crate) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }
}

/// The log's writer task: appends lines until the emulator stops, flushing whenever it has
/// caught up, so that a reader of the file sees every line of an answered request soon.
async fn write_log(mut file: tokio::fs::File, mut lines: mpsc::Receiver<LogMessage>) {
    while let Some(message) = lines.recv().await {
        // A failing log write must not fail the requests it describes, nor stop the log.
        match message {
            LogMessage::Line(line) => {
                let _ = file.write_all(line.as_bytes()).await;
                if lines.is_empty() {
                    let _ = file.flush().await;
                }
            }
            LogMessage::Flush(done) => {
                let _ = file.flush().await;
                let _ = done.send(());
            }
        }
    }
    let _ = file.flush().await;
}

struct UserRecord {
    user_id: Uuid,
    handle: Vec<u8>,
    credentials: Vec<Vec<u8>>,
}

struct PendingRegistration {
    username: String,
    handle: Vec<u8>,
    state: RegistrationState,
    expires: Instant,
    /// Whether `reg/init` carried a valid `reg:write` token for the user.
    authorized: bool,
}

#[derive(Default)]
struct Store {
    users: HashMap<String, UserRecord>,
    sessions: HashMap<String, PendingRegistration>,
    credential_ids: HashSet<Vec<u8>>,
}

type HmacSha256 = Hmac<Sha256>;

/// MACs under keys drawn at start and never shown: log fingerprints cannot be checked
/// against a guessed token or key, nor matched across runs, and the API key is compared
/// through its MAC, in constant time and without revealing its length.
struct Macs {
    /// Keyed for request-log fingerprints.
    log: HmacSha256,
    /// Keyed for API key comparison.
    api_key: HmacSha256,
    /// MAC of the configured API key under `api_key`'s key.
    api_key_tag: Output<HmacSha256>,
}

impl Macs {
    fn new(api_key: &str) -> Self {
        let keyed = || {
            // A key of HMAC-SHA-256's block size: the infallible constructor takes exactly it.
            let mut key = [0_u8; 64];
            OsRng.fill_bytes(&mut key);
            <HmacSha256 as KeyInit>::new(&key.into())
        };
        let api_key_mac = keyed();
        let api_key_tag = api_key_mac
            .clone()
            .chain_update(api_key.as_bytes())
            .finalize()
            .into_bytes();
        Self {
            log: keyed(),
            api_key: api_key_mac,
            api_key_tag,
        }
    }

    fn api_key_matches(&self, presented: &str) -> bool {
        self.api_key
            .clone()
            .chain_update(presented.as_bytes())
            .verify(&self.api_key_tag)
            .is_ok()
    }

    /// A fingerprint of a credential header: its scheme and 48 bits of its HMAC, so that log
    /// lines of one run can be correlated without ever containing a token or a key.
    fn fingerprint(&self, value: &str) -> Value {
        let scheme = match value.split_once(' ') {
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("basic") => "basic",
            Some((scheme, _)) if scheme.eq_ignore_ascii_case("bearer") => "bearer",
            _ => "raw",
        };
        let tag = self
            .log
            .clone()
            .chain_update(value.as_bytes())
            .finalize()
            .into_bytes();
        json!({"scheme": scheme, "hmac": hex(tag.get(..6).unwrap_or_default())})
    }
}

pub(crate) struct AppState {
    pub(crate) config: EmulatorConfig,
    pub(crate) base_url: Url,
    pub(crate) keys: RwLock<KeyRing>,
    pub(crate) faults: Mutex<FaultPlan>,
    pub(crate) stats: Stats,
    store: Mutex<Store>,
    webauthn: WebauthnCore,
    macs: Macs,
    pub(crate) log: RequestLog,
}

/// Locks a mutex, recovering the data if a handler panicked while holding it (the emulator
/// keeps serving; its state is still consistent enough for tests).
pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

pub(crate) fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs();
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn secs(duration: Duration) -> i64 {
    i64::try_from(duration.as_secs()).unwrap_or(i64::MAX)
}

impl AppState {
    pub(crate) fn new(config: EmulatorConfig, base_url: Url, log: RequestLog) -> Self {
        let webauthn = WebauthnCore::new_unsafe_experts_only(
            &config.rp_name,
            &config.rp_id,
            config.origins.clone(),
            config.timeout,
            None,
            None,
        );
        Self {
            faults: Mutex::new(config.faults.clone()),
            macs: Macs::new(&config.api_key),
            config,
            base_url,
            keys: RwLock::new(KeyRing::new()),
            stats: Stats::default(),
            store: Mutex::new(Store::default()),
            webauthn,
            log,
        }
    }

    fn issuer(&self) -> String {
        self.base_url.as_str().trim_end_matches('/').to_owned()
    }

    fn sign(&self, claims: &Value) -> String {
        self.keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .sign(claims)
    }

    /// A signed token for `username` with `scopes`, valid for `ttl` seconds (negative: already
    /// expired).
    pub(crate) fn mint(
        &self,
        username: &str,
        scopes: &[String],
        ttl: i64,
        token_type: &str,
    ) -> String {
        let now = unix_now();
        let sub = lock(&self.store)
            .users
            .get(username)
            .map(|u| u.user_id.to_string());
        let mut claims = json!({
            "aud": self.config.app_id,
            "iss": self.issuer(),
            "username": username,
            "scopes": scopes,
            "tokenType": token_type,
            "iat": now,
            "exp": now.saturating_add(ttl),
        });
        if let Some(sub) = sub {
            claims["sub"] = json!(sub);
        }
        self.sign(&claims)
    }

    /// Checks signature, `aud`, `iss` and `exp` of a token this emulator issued.
    fn check_token(&self, token: &str) -> Result<Value, &'static str> {
        let claims = self
            .keys
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .verify(token)
            .map_err(|_| "invalid token")?;
        if claims["aud"] != self.config.app_id.as_str() || claims["iss"] != self.issuer().as_str() {
            return Err("token is for another application");
        }
        if claims["exp"].as_i64().is_none_or(|exp| exp <= unix_now()) {
            return Err("token has expired");
        }
        Ok(claims)
    }
}

/// The running emulator's plumbing.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) state: Arc<AppState>,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

pub(crate) async fn start(
    config: EmulatorConfig,
    listen: SocketAddr,
) -> Result<Running, StartError> {
    if !listen.ip().is_loopback() {
        return Err(StartError::NotLoopback(listen));
    }
    for (name, zero) in [
        ("max_connections", config.max_connections == 0),
        ("max_sessions", config.max_sessions == 0),
        ("header_read_timeout", config.header_read_timeout.is_zero()),
    ] {
        if zero {
            return Err(StartError::ZeroLimit(name));
        }
    }
    // webauthn-rs-core panics on a timeout that does not fit a u32 of milliseconds.
    if u32::try_from(config.timeout.as_millis()).is_err() {
        return Err(StartError::TimeoutTooLong(config.timeout));
    }
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let base_url = Url::parse(&format!("http://{addr}"))?;
    let log = RequestLog::open(config.request_log.as_deref()).await?;
    let state = Arc::new(AppState::new(config, base_url, log));
    let router = router(Arc::clone(&state));
    let (shutdown, watcher) = watch::channel(false);
    let limits = ConnectionLimits {
        max_connections: state.config.max_connections,
        header_read_timeout: state.config.header_read_timeout,
    };
    let task = tokio::spawn(accept_loop(listener, router, limits, watcher));
    Ok(Running {
        addr,
        state,
        shutdown,
        task,
    })
}

/// Lets a handler close its connection without answering: `kill` ends the connection task,
/// which resets the connection instead of closing it when `reset` is set.
#[derive(Clone)]
struct ConnectionKiller {
    kill: Arc<Notify>,
    reset: Arc<AtomicBool>,
}

async fn accept_loop(
    listener: TcpListener,
    router: Router,
    limits: ConnectionLimits,
    mut shutdown: watch::Receiver<bool>,
) {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    loop {
        // A slot first: past the cap, connections wait in the listen backlog instead of
        // each costing a task.
        let slot = tokio::select! {
            slot = Arc::clone(&slots).acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_closed) => return,
            },
            _ = shutdown.changed() => return,
        };
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => {
                    tokio::spawn(connection(
                        stream,
                        router.clone(),
                        limits.header_read_timeout,
                        slot,
                        shutdown.clone(),
                    ));
                }
                // Accept errors (e.g. out of descriptors) are transient; keep serving, after
                // a pause so that a persistent one does not spin.
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            },
            _ = shutdown.changed() => return,
        }
    }
}

/// Bounds on what connections may hold.
#[derive(Clone, Copy)]
struct ConnectionLimits {
    max_connections: usize,
    header_read_timeout: Duration,
}

async fn connection(
    mut stream: tokio::net::TcpStream,
    router: Router,
    header_read_timeout: Duration,
    _slot: OwnedSemaphorePermit,
    mut shutdown: watch::Receiver<bool>,
) {
    let kill = Arc::new(Notify::new());
    let reset = Arc::new(AtomicBool::new(false));
    let killer = ConnectionKiller {
        kill: Arc::clone(&kill),
        reset: Arc::clone(&reset),
    };
    let service =
        hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(killer.clone());
            router.clone().oneshot(request.map(Body::new))
        });
    // The header timeout also runs while a kept-alive connection waits for its next request,
    // so idle connections give their slot back too.
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout)
        .serve_connection(TokioIo::new(&mut stream), service);
    tokio::select! {
        _ = conn => {}
        () = kill.notified() => {}
        _ = shutdown.changed() => {}
    }
    if reset.load(Ordering::SeqCst) {
        // With a zero linger time, closing sends RST instead of FIN (and does not block).
        let _ = stream.set_zero_linger();
    }
}

/// The handler of an API endpoint; its path comes from [`Endpoint::path`], which fault
/// injection reads too.
fn api_route(endpoint: Endpoint) -> MethodRouter<Arc<AppState>> {
    match endpoint {
        Endpoint::Grant => post(grant),
        Endpoint::TokenVerify => post(token_verify),
        Endpoint::Jwks => get(jwks),
        Endpoint::RegInit => post(reg_init),
        Endpoint::RegComplete => post(reg_complete),
    }
}

fn router(state: Arc<AppState>) -> Router {
    let api = Endpoint::ALL
        .into_iter()
        .fold(Router::new(), |router, endpoint| {
            router.route(endpoint.path(), api_route(endpoint))
        })
        .route(
            "/admin/faults",
            put(admin_set_faults)
                .get(admin_get_faults)
                .delete(admin_clear_faults),
        )
        .route("/admin/rotate-key", post(admin_rotate_key))
        .route("/admin/token", post(admin_token))
        .route("/admin/stats", get(admin_stats))
        .fallback(|| async { error(StatusCode::NOT_FOUND, "no such endpoint") });
    api.layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        inject_faults,
    ))
    .layer(middleware::from_fn_with_state(
        Arc::clone(&state),
        request_log,
    ))
    // Request bodies are refused as soon as they pass the limit, never buffered whole.
    .layer(DefaultBodyLimit::max(MAX_REQUEST_BYTES))
    .with_state(state)
}

/// Why a response is what it is, for the request log.
#[derive(Clone)]
struct Detail(String);

/// The fault applied to a request, for the request log; shared so that the log line has it
/// even when the fault means there is never a response.
#[derive(Clone, Default)]
struct FaultSlot(Arc<Mutex<Option<String>>>);

/// An `AppError` response (reference §1): `{"msgCode": ..., "msg": ...}`.
fn error(status: StatusCode, msg: &str) -> Response {
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        429 => "too_many_requests",
        _ => "internal_error",
    };
    let mut response = (status, axum::Json(json!({"msgCode": code, "msg": msg}))).into_response();
    response.extensions_mut().insert(Detail(msg.to_owned()));
    response
}

fn ok_json(value: &Value) -> Response {
    axum::Json(value).into_response()
}

fn with_detail(mut response: Response, detail: String) -> Response {
    response.extensions_mut().insert(Detail(detail));
    response
}

// ---------------------------------------------------------------------------------------
// Request log

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Logs the request when it ends: through [`request_log`] once it has a response, or, if its
/// connection is dropped mid-way, when the request's future is dropped (then `status` is
/// null).
struct LogGuard {
    state: Arc<AppState>,
    fault: FaultSlot,
    /// Taken by whichever of the two logs the request.
    line: Option<Value>,
    started: Instant,
}

impl LogGuard {
    /// The finished line: the fault applied and the duration added, newline-terminated.
    fn finish(&self, mut line: Value) -> String {
        if let Some(label) = lock(&self.fault.0).take() {
            line["fault"] = json!(label);
        }
        line["durationMs"] =
            json!(u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX));
        format!("{line}\n")
    }
}

impl Drop for LogGuard {
    fn drop(&mut self) {
        if let Some(mut line) = self.line.take() {
            line["outcome"] = json!("connection closed before a response");
            let line = self.finish(line);
            self.state.log.try_send(line);
        }
    }
}

async fn request_log(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let fault = FaultSlot::default();
    request.extensions_mut().insert(fault.clone());
    let authorization = request.headers().get(header::AUTHORIZATION).map(|v| {
        state
            .macs
            .fingerprint(&String::from_utf8_lossy(v.as_bytes()))
    });
    let mut guard = LogGuard {
        state: Arc::clone(&state),
        fault,
        line: Some(json!({
            "ts": unix_now(),
            "method": request.method().as_str(),
            "path": request.uri().path(),
            "authorization": authorization,
            "userAgent": request
                .headers()
                .get(header::USER_AGENT)
                .map(|v| String::from_utf8_lossy(v.as_bytes()).chars().take(100).collect::<String>()),
            "status": null,
        })),
        started: Instant::now(),
    };
    let response = next.run(request).await;
    if let Some(mut line) = guard.line.take() {
        line["status"] = json!(response.status().as_u16());
        if let Some(Detail(detail)) = response.extensions().get::<Detail>() {
            line["detail"] = json!(detail);
        }
        // Queued before the response leaves, so a client that has its answer and then
        // flushes the log finds the line.
        state.log.send(guard.finish(line)).await;
    }
    response
}

// ---------------------------------------------------------------------------------------
// Fault injection

async fn inject_faults(
    State(state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(endpoint) = Endpoint::from_path(request.uri().path()) else {
        return next.run(request).await;
    };
    let Some(fault) = lock(&state.faults).take(endpoint) else {
        return next.run(request).await;
    };
    if let Some(FaultSlot(slot)) = request.extensions().get::<FaultSlot>() {
        *lock(slot) = Some(fault.label());
    }
    apply_fault(&state, &fault, request, next).await
}

async fn apply_fault(
    state: &Arc<AppState>,
    fault: &Fault,
    request: Request,
    next: Next,
) -> Response {
    if let Some(ms) = fault.delay_ms {
        tokio::time::sleep(Duration::from_millis(ms)).await;
    }
    match &fault.body {
        Some(body @ (BodyFault::DropConnection | BodyFault::ResetConnection)) => {
            if let Some(killer) = request.extensions().get::<ConnectionKiller>() {
                killer
                    .reset
                    .store(*body == BodyFault::ResetConnection, Ordering::SeqCst);
                killer.kill.notify_one();
            }
            // The connection task drops this request with the connection.
            std::future::pending::<()>().await;
            return error(StatusCode::INTERNAL_SERVER_ERROR, "connection drop failed");
        }
        Some(BodyFault::Oversized {
            bytes,
            declare_length,
        }) => return oversized(Arc::clone(state), *bytes, *declare_length),
        Some(BodyFault::InvalidJson) => {
            let mut response = Response::new(Body::from(&b"{\"token\": eyJ,,"[..]));
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return response;
        }
        _ => {}
    }
    if let Some(location) = fault
        .redirect_to
        .as_deref()
        .and_then(|v| HeaderValue::from_str(v).ok())
    {
        let mut response = StatusCode::TEMPORARY_REDIRECT.into_response();
        response.headers_mut().insert(header::LOCATION, location);
        return response;
    }
    if let Some(status) = fault.status {
        let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut response = error(status, "injected fault");
        if let Some(retry_after) = fault
            .retry_after
            .as_deref()
            .and_then(|v| HeaderValue::from_str(v).ok())
        {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, retry_after);
        }
        return response;
    }
    let response = next.run(request).await;
    match &fault.body {
        Some(BodyFault::WrongContentType) => {
            let (mut parts, body) = response.into_parts();
            parts.headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/html; charset=utf-8"),
            );
            Response::from_parts(parts, body)
        }
        Some(BodyFault::Truncated) => truncated(response).await,
        Some(BodyFault::SlowDrip { bytes, every_ms }) => {
            slow_drip(response, *bytes, Duration::from_millis(*every_ms)).await
        }
        _ => response,
    }
}

/// Sends `response` with its body in pieces of `piece` bytes, each after a pause of `every`.
async fn slow_drip(response: Response, piece: usize, every: Duration) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BUFFERED_RESPONSE).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not buffer response",
        );
    };
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    let piece = piece.max(1);
    let stream = futures_util::stream::unfold(0_usize, move |done| {
        let bytes = bytes.clone();
        async move {
            if done >= bytes.len() {
                return None;
            }
            tokio::time::sleep(every).await;
            let end = done.saturating_add(piece).min(bytes.len());
            Some((Ok::<_, std::io::Error>(bytes.slice(done..end)), end))
        }
    });
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Sends half of `response`'s body under a `Content-Length` for all of it, then fails the
/// body so that the server closes the connection.
async fn truncated(response: Response) -> Response {
    let (mut parts, body) = response.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BUFFERED_RESPONSE).await else {
        return error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "could not buffer response",
        );
    };
    let half = bytes.slice(..bytes.len() / 2);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
    // The pause lets the connection flush the headers and the first half before the error
    // aborts it; without it the client might see no response at all.
    let stream = futures_util::stream::iter([Ok(half)]).chain(futures_util::stream::once(async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        Err(std::io::Error::new(
            std::io::ErrorKind::BrokenPipe,
            "injected truncation",
        ))
    }));
    Response::from_parts(parts, Body::from_stream(stream))
}

/// Streams `total` bytes of a JSON-looking body without holding it in memory; every byte
/// handed to the connection is counted in `Stats::oversize_bytes_sent`.
fn oversized(state: Arc<AppState>, total: u64, declare_length: bool) -> Response {
    const CHUNK: usize = 64 << 10;
    const PREFIX: &[u8] = b"{\"token\":\"";
    let filler = Bytes::from(vec![b'A'; CHUNK]);
    let stream = futures_util::stream::unfold(0_u64, move |done| {
        let filler = filler.clone();
        let state = Arc::clone(&state);
        async move {
            if done >= total {
                return None;
            }
            let left = usize::try_from(total - done).unwrap_or(usize::MAX);
            let chunk = if done == 0 {
                Bytes::from_static(PREFIX).slice(..left.min(PREFIX.len()))
            } else {
                filler.slice(..left.min(CHUNK))
            };
            let len = chunk.len() as u64;
            state
                .stats
                .oversize_bytes_sent
                .fetch_add(len, Ordering::Relaxed);
            Some((Ok::<_, std::io::Error>(chunk), done + len))
        }
    });
    let mut response = Response::new(Body::from_stream(stream));
    let headers: &mut HeaderMap = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if declare_length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(total));
    }
    response
}

// ---------------------------------------------------------------------------------------
// Handlers

type Reply = Result<Response, Fail>;

/// A refused request: becomes an [`error`] response.
struct Fail {
    status: StatusCode,
    msg: String,
}

impl IntoResponse for Fail {
    fn into_response(self) -> Response {
        error(self.status, &self.msg)
    }
}

fn fail(status: StatusCode, msg: &str) -> Fail {
    Fail {
        status,
        msg: msg.to_owned(),
    }
}

/// A request body, read up to the router's [`DefaultBodyLimit`]; a refusal is an `AppError`
/// like every other.
struct JsonBytes(Bytes);

impl<S: Send + Sync> FromRequest<S> for JsonBytes {
    type Rejection = Fail;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        Bytes::from_request(request, state)
            .await
            .map(Self)
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    fail(StatusCode::BAD_REQUEST, "request body too large")
                } else {
                    fail(StatusCode::BAD_REQUEST, "could not read the request body")
                }
            })
    }
}

/// Parses a JSON request body. Error messages name the position only: serde's own messages
/// may quote the offending value, which could be a token.
fn parse<T: serde::de::DeserializeOwned>(JsonBytes(body): &JsonBytes) -> Result<T, Fail> {
    serde_json::from_slice(body).map_err(|e| {
        let kind = match e.classify() {
            serde_json::error::Category::Data => "unexpected or missing member",
            _ => "not JSON",
        };
        fail(
            StatusCode::BAD_REQUEST,
            &format!(
                "malformed request body: {kind} at line {} column {}",
                e.line(),
                e.column()
            ),
        )
    })
}

/// HTTP Basic with the API key as user name; the password is ignored and may be absent
/// (`base64("key:")` and `base64("key")`), in either base64 alphabet.
fn check_api_key(state: &AppState, headers: &HeaderMap) -> Result<(), Fail> {
    let unauthorized = |msg: &str| fail(StatusCode::UNAUTHORIZED, msg);
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| unauthorized("API key required"))?;
    let (scheme, credentials) = value
        .split_once(' ')
        .ok_or_else(|| unauthorized("API key required"))?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return Err(unauthorized("API key required"));
    }
    let credentials = credentials.trim();
    let decoded = [STANDARD, URL_SAFE, STANDARD_NO_PAD, URL_SAFE_NO_PAD]
        .iter()
        .find_map(|engine| engine.decode(credentials).ok())
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .ok_or_else(|| unauthorized("malformed Basic credentials"))?;
    let key = decoded
        .split_once(':')
        .map_or(decoded.as_str(), |(key, _)| key);
    if !state.macs.api_key_matches(key) {
        return Err(unauthorized("invalid API key"));
    }
    Ok(())
}

/// The JWT of an `Authorization` header, with or without a scheme (everything up to the first
/// space is dropped, as Goa-generated servers do).
fn jwt_of(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?;
    let text = String::from_utf8_lossy(value.as_bytes());
    let token = text.split_once(' ').map_or(&*text, |(_, rest)| rest);
    Some(token.trim().to_owned())
}

fn random_b64(len: usize) -> String {
    let mut bytes = vec![0_u8; len];
    OsRng.fill_bytes(&mut bytes);
    URL_SAFE_NO_PAD.encode(bytes)
}

const KNOWN_SCOPES: [&str; 9] = [
    "passkey:read",
    "passkey:write",
    "profile:read",
    "profile:write",
    "reg:write",
    "auth:write",
    "user:read",
    "user:write",
    "external:verify",
];

#[derive(Deserialize)]
struct GrantBody {
    grants: Vec<String>,
    #[serde(default)]
    username: Option<String>,
}

async fn grant(State(state): State<Arc<AppState>>, headers: HeaderMap, body: JsonBytes) -> Reply {
    check_api_key(&state, &headers)?;
    let body: GrantBody = parse(&body)?;
    if body.grants.is_empty() {
        return Err(fail(StatusCode::BAD_REQUEST, "grants must not be empty"));
    }
    if let Some(unknown) = body
        .grants
        .iter()
        .find(|g| !KNOWN_SCOPES.contains(&g.as_str()))
    {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            &format!("unknown scope {unknown:?}"),
        ));
    }
    let username = body.username.unwrap_or_default();
    let token = state.mint(
        &username,
        &body.grants,
        secs(state.config.grant_ttl),
        "authzToken",
    );
    Ok(with_detail(
        ok_json(&json!({ "token": token })),
        format!("granted {:?}", body.grants),
    ))
}

#[derive(Deserialize)]
struct TokenVerifyBody {
    #[serde(rename = "jwtAccess")]
    jwt_access: String,
}

async fn token_verify(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBytes,
) -> Reply {
    check_api_key(&state, &headers)?;
    let body: TokenVerifyBody = parse(&body)?;
    let claims = state
        .check_token(&body.jwt_access)
        .map_err(|msg| fail(StatusCode::UNAUTHORIZED, msg))?;
    if claims["tokenType"] != "jwtAccess" {
        return Err(fail(StatusCode::UNAUTHORIZED, "not a LoginID token"));
    }
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn jwks(State(state): State<Arc<AppState>>) -> Response {
    let set = state
        .keys
        .read()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .jwks();
    ok_json(&set)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppBody {
    id: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct UserBody {
    username: String,
    #[serde(default)]
    display_name: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct PasskeyOptionsBody {
    #[serde(default)]
    security_key: Option<bool>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegInitBody {
    app: AppBody,
    #[allow(dead_code)] // Required by the schema; its contents do not matter here.
    device_info: Value,
    #[serde(default)]
    user: Option<UserBody>,
    #[serde(default)]
    passkey_options: Option<PasskeyOptionsBody>,
}

async fn reg_init(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBytes,
) -> Reply {
    let body: RegInitBody = parse(&body)?;
    let config = &state.config;
    if body.app.id != config.app_id {
        return Err(fail(StatusCode::BAD_REQUEST, "unknown application"));
    }
    let user = body
        .user
        .filter(|u| !u.username.is_empty())
        .ok_or_else(|| fail(StatusCode::BAD_REQUEST, "user.username is required"))?;
    let username = user.username;

    let (existing_handle, exclude) = {
        let store = lock(&state.store);
        match store.users.get(&username) {
            Some(record) => (Some(record.handle.clone()), record.credentials.clone()),
            None => (None, Vec::new()),
        }
    };
    let authorized = match jwt_of(&headers) {
        Some(token) => {
            let claims = state
                .check_token(&token)
                .map_err(|msg| fail(StatusCode::UNAUTHORIZED, msg))?;
            if claims["username"] != username.as_str() {
                return Err(fail(StatusCode::FORBIDDEN, "token is for another user"));
            }
            let scoped = claims["scopes"]
                .as_array()
                .is_some_and(|scopes| scopes.iter().any(|s| s == REG_WRITE || s == PASSKEY_WRITE));
            if !scoped {
                return Err(fail(
                    StatusCode::FORBIDDEN,
                    "token lacks the reg:write scope",
                ));
            }
            true
        }
        None if config.protected => {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "authorization token required (protected application)",
            ));
        }
        None if !exclude.is_empty() => {
            return Err(fail(
                StatusCode::UNAUTHORIZED,
                "authorization token required for an additional passkey",
            ));
        }
        None => false,
    };

    let handle = existing_handle.unwrap_or_else(|| {
        let mut handle = vec![0_u8; 16];
        OsRng.fill_bytes(&mut handle);
        handle
    });
    let display_name = user
        .display_name
        .filter(|d| !d.is_empty())
        .unwrap_or_else(|| username.clone());
    let security_key = body
        .passkey_options
        .unwrap_or_default()
        .security_key
        .unwrap_or(false);
    let (uv_policy, uv_text) = match config.user_verification {
        UserVerification::Required => (UserVerificationPolicy::Required, "required"),
        UserVerification::Preferred => (UserVerificationPolicy::Preferred, "preferred"),
        UserVerification::Discouraged => (
            UserVerificationPolicy::Discouraged_DO_NOT_USE,
            "discouraged",
        ),
    };
    let (conveyance, attestation_text) = match config.attestation {
        Attestation::None => (AttestationConveyancePreference::None, "none"),
        Attestation::Indirect => (AttestationConveyancePreference::Indirect, "indirect"),
        Attestation::Direct => (AttestationConveyancePreference::Direct, "direct"),
    };
    let resident_text = match config.resident_key {
        ResidentKey::Required => "required",
        ResidentKey::Preferred => "preferred",
        ResidentKey::Discouraged => "discouraged",
    };
    let builder = state
        .webauthn
        .new_challenge_register_builder(&handle, &username, &display_name)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, &format!("{e:?}")))?
        .attestation(conveyance)
        .user_verification_policy(uv_policy)
        .exclude_credentials((!exclude.is_empty()).then(|| exclude.clone()))
        .credential_algorithms(vec![COSEAlgorithm::ES256, COSEAlgorithm::RS256])
        .require_resident_key(config.resident_key == ResidentKey::Required)
        .authenticator_attachment(security_key.then_some(AuthenticatorAttachment::CrossPlatform));
    let (challenge, registration) = state
        .webauthn
        .generate_challenge_register(builder)
        .map_err(|e| fail(StatusCode::INTERNAL_SERVER_ERROR, &format!("{e:?}")))?;
    let options = &challenge.public_key;

    let encode = |bytes: &[u8]| {
        if config.padded_base64 {
            STANDARD.encode(bytes)
        } else {
            URL_SAFE_NO_PAD.encode(bytes)
        }
    };
    let mut selection = json!({
        "residentKey": resident_text,
        "requireResidentKey": config.resident_key == ResidentKey::Required,
        "userVerification": uv_text,
    });
    if security_key {
        selection["authenticatorAttachment"] = json!("cross-platform");
    }
    let params: Vec<Value> = options
        .pub_key_cred_params
        .iter()
        .map(|p| json!({"type": p.type_, "alg": p.alg}))
        .collect();
    let excluded: Vec<Value> = exclude
        .iter()
        .map(|id| json!({"id": encode(id), "type": "public-key"}))
        .collect();
    let session = random_b64(32);
    let response = json!({
        "action": "proceed",
        "registrationRequestOptions": {
            "rp": {"id": config.rp_id, "name": config.rp_name},
            "user": {"id": encode(&handle), "name": username, "displayName": display_name},
            "challenge": encode(&options.challenge),
            "pubKeyCredParams": params,
            "timeout": u64::try_from(config.timeout.as_millis()).unwrap_or(u64::MAX),
            "attestation": attestation_text,
            "authenticatorSelection": selection,
            "excludeCredentials": excluded,
        },
        "session": session,
    });

    let mut store = lock(&state.store);
    let now = Instant::now();
    store.sessions.retain(|_, pending| pending.expires > now);
    // Every session holds registration state until it is used or expires: bounded, so that
    // a flood of reg/init calls cannot grow the store without limit.
    if store.sessions.len() >= config.max_sessions {
        return Err(fail(
            StatusCode::TOO_MANY_REQUESTS,
            "too many open registration sessions",
        ));
    }
    store.sessions.insert(
        session,
        PendingRegistration {
            username: username.clone(),
            handle,
            state: registration,
            expires: now + config.timeout,
            authorized,
        },
    );
    Ok(with_detail(
        ok_json(&response),
        format!("session for {username:?} (authorized: {authorized})"),
    ))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct CreationResultBody {
    attestation_object: String,
    #[serde(rename = "clientDataJSON")]
    client_data_json: String,
    credential_id: String,
    #[serde(default)]
    authenticator_data: Option<String>,
    #[serde(default)]
    public_key_algorithm: Option<i64>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RegCompleteBody {
    creation_result: CreationResultBody,
    session: String,
}

/// The `authData` member of a CBOR attestation object.
fn auth_data_of(attestation_object: &[u8]) -> Option<Vec<u8>> {
    let value: ciborium::Value = ciborium::from_reader(attestation_object).ok()?;
    value.as_map()?.iter().find_map(|(k, v)| {
        (k.as_text() == Some("authData"))
            .then(|| v.as_bytes().cloned())
            .flatten()
    })
}

async fn reg_complete(State(state): State<Arc<AppState>>, body: JsonBytes) -> Reply {
    let body: RegCompleteBody = parse(&body)?;
    // Single use: the session is gone whatever happens next.
    let pending = lock(&state.store)
        .sessions
        .remove(&body.session)
        .ok_or_else(|| fail(StatusCode::FORBIDDEN, "unknown or already used session"))?;
    if pending.expires <= Instant::now() {
        return Err(fail(StatusCode::FORBIDDEN, "session expired"));
    }
    let result = &body.creation_result;
    // The client sends unpadded base64url (reference §1); anything else is refused so that a
    // client emitting another form is caught here rather than by the live service.
    let decode = |name: &str, text: &str| {
        URL_SAFE_NO_PAD.decode(text).map_err(|_| {
            fail(
                StatusCode::BAD_REQUEST,
                &format!("creationResult.{name} is not unpadded base64url"),
            )
        })
    };
    let attestation_object = decode("attestationObject", &result.attestation_object)?;
    decode("clientDataJSON", &result.client_data_json)?;
    let credential_id = decode("credentialId", &result.credential_id)?;
    let credential: RegisterPublicKeyCredential = serde_json::from_value(json!({
        "id": result.credential_id,
        "rawId": result.credential_id,
        "response": {
            "attestationObject": result.attestation_object,
            "clientDataJSON": result.client_data_json,
        },
        "type": "public-key",
        "extensions": {},
    }))
    .map_err(|_| fail(StatusCode::BAD_REQUEST, "malformed creationResult"))?;
    let verified = state
        .webauthn
        .register_credential(&credential, &pending.state, None)
        .map_err(|e| {
            fail(
                StatusCode::BAD_REQUEST,
                &format!("registration verification failed: {e:?}"),
            )
        })?;
    if verified.cred_id != credential_id {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "credentialId does not match the attested credential",
        ));
    }
    if let Some(text) = &result.authenticator_data {
        let claimed = decode("authenticatorData", text)?;
        if auth_data_of(&attestation_object).as_deref() != Some(claimed.as_slice()) {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "authenticatorData differs from the attestation object's authData",
            ));
        }
    }
    if let Some(alg) = result.public_key_algorithm
        && alg != verified.cred.type_ as i64
    {
        return Err(fail(
            StatusCode::BAD_REQUEST,
            "publicKeyAlgorithm differs from the credential's algorithm",
        ));
    }

    let config = &state.config;
    let user_id = {
        let mut store = lock(&state.store);
        if store.credential_ids.contains(&credential_id) {
            return Err(fail(
                StatusCode::BAD_REQUEST,
                "credential already registered",
            ));
        }
        let has_passkey = store
            .users
            .get(&pending.username)
            .is_some_and(|u| !u.credentials.is_empty());
        // A concurrent ceremony may have registered the user's first passkey meanwhile.
        if !pending.authorized && (config.protected || has_passkey) {
            return Err(fail(
                StatusCode::FORBIDDEN,
                "authorization token required for an additional passkey",
            ));
        }
        store.credential_ids.insert(credential_id.clone());
        let record = store
            .users
            .entry(pending.username.clone())
            .or_insert_with(|| UserRecord {
                user_id: Uuid::new_v4(),
                handle: pending.handle.clone(),
                credentials: Vec::new(),
            });
        record.credentials.push(credential_id);
        record.user_id
    };
    let passkey_id = Uuid::new_v4();
    let now = unix_now();
    let token = state.sign(&json!({
        "aud": config.app_id,
        "iss": state.issuer(),
        "sub": user_id.to_string(),
        "username": pending.username,
        "credID": passkey_id.to_string(),
        "scopes": ["passkey:read", "passkey:write", "auth:write"],
        "tokenType": "jwtAccess",
        "verify": "/fido2/v2/mgmt/token/verify",
        "rpId": config.rp_id,
        "iat": now,
        "exp": now.saturating_add(secs(config.access_token_ttl)),
    }));
    Ok(with_detail(
        ok_json(&json!({
            "jwtAccess": token,
            "userId": user_id.to_string(),
            "passkeyId": passkey_id.to_string(),
            "deviceId": Uuid::new_v4().to_string(),
        })),
        format!("registered passkey for {:?}", pending.username),
    ))
}

// ---------------------------------------------------------------------------------------
// Admin endpoints (API key required)

async fn admin_set_faults(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBytes,
) -> Reply {
    check_api_key(&state, &headers)?;
    let plan: FaultPlan = parse(&body)?;
    *lock(&state.faults) = plan;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_get_faults(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    check_api_key(&state, &headers)?;
    let plan = lock(&state.faults).clone();
    Ok(ok_json(&json!(plan)))
}

async fn admin_clear_faults(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    check_api_key(&state, &headers)?;
    *lock(&state.faults) = FaultPlan::default();
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn admin_rotate_key(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    check_api_key(&state, &headers)?;
    let kid = state
        .keys
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .rotate();
    Ok(ok_json(&json!({ "kid": kid })))
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct MintBody {
    username: String,
    #[serde(default)]
    scopes: Vec<String>,
    ttl_secs: i64,
    #[serde(default)]
    token_type: Option<String>,
}

async fn admin_token(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: JsonBytes,
) -> Reply {
    check_api_key(&state, &headers)?;
    let body: MintBody = parse(&body)?;
    let token_type = body.token_type.as_deref().unwrap_or("authzToken");
    let token = state.mint(&body.username, &body.scopes, body.ttl_secs, token_type);
    Ok(ok_json(&json!({ "token": token })))
}

async fn admin_stats(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Reply {
    check_api_key(&state, &headers)?;
    let (users, sessions) = {
        let store = lock(&state.store);
        (store.users.len(), store.sessions.len())
    };
    Ok(ok_json(&json!({
        "oversizeBytesSent": state.stats.oversize_bytes_sent.load(Ordering::Relaxed),
        "logLinesDropped": state.log.dropped(),
        "users": users,
        "sessions": sessions,
    })))
}

#[cfg(test)]
mod tests {
    use sha2::Digest as _;

    use super::*;

    #[test]
    fn api_key_comparison() {
        let macs = Macs::new("key-123");
        assert!(macs.api_key_matches("key-123"));
        for wrong in ["", "key-12", "key-1234", "KEY-123", "key-124"] {
            assert!(!macs.api_key_matches(wrong), "{wrong:?}");
        }
    }

    #[test]
    fn fingerprints_are_keyed_per_process() {
        let header = "Bearer eyJhbGciOiJFUzI1NiJ9.e30.c2ln";
        let (one, other) = (Macs::new("k"), Macs::new("k"));
        let print = one.fingerprint(header);
        assert_eq!(print["scheme"], "bearer");
        let tag = print["hmac"].as_str().unwrap();
        assert_eq!(tag.len(), 12);
        assert!(tag.bytes().all(|b| b.is_ascii_hexdigit()));
        // Stable within a run, so lines can be correlated ...
        assert_eq!(one.fingerprint(header), print);
        // ... but not across runs, and not a plain hash anyone could compute from a guess.
        assert_ne!(other.fingerprint(header)["hmac"], print["hmac"]);
        assert_ne!(tag, hex(&Sha256::digest(header.as_bytes())[..6]));
        assert_eq!(one.fingerprint("Basic a2V5Og==")["scheme"], "basic");
        assert_eq!(one.fingerprint("token-without-scheme")["scheme"], "raw");
    }
}
