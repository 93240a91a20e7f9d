//! A local emulator of the LoginID FIDO2 v2 API (reference `loginid-api.md` §8), for tests,
//! development and hardware-in-the-loop rigs.
//!
//! Serves, on a loopback address only, under `/fido2/v2`: `mgmt/grant`, `mgmt/token/verify`,
//! `.well-known/jwks.json`, `reg/init` and `reg/complete`, with a user store, full WebAuthn
//! registration verification (webauthn-rs-core), ES256 tokens from a key generated at start,
//! per-endpoint fault injection and a JSON-lines request log that never holds a token or a
//! key. Admin endpoints under `/admin` (API key required) change faults at run time, rotate
//! the signing key, mint tokens with any lifetime and report counters.
//!
//! See `docs/loginid.md` in the repository.

mod config;
pub mod faults;
pub mod jws;
mod server;
pub mod soft_authenticator;

use std::net::SocketAddr;
use std::sync::atomic::Ordering;

pub use config::{Attestation, EmulatorConfig, ResidentKey, UserVerification};
pub use faults::{BodyFault, Endpoint, Fault, FaultPlan};
pub use server::StartError;
use url::Url;

/// A running emulator. Dropping it stops the server.
pub struct Emulator {
    running: server::Running,
}

impl std::fmt::Debug for Emulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Emulator")
            .field("addr", &self.running.addr)
            .finish_non_exhaustive()
    }
}

impl Emulator {
    /// Binds `listen` (a loopback address; port 0 picks a free port) and starts serving.
    pub async fn start(config: EmulatorConfig, listen: SocketAddr) -> Result<Self, StartError> {
        Ok(Self {
            running: server::start(config, listen).await?,
        })
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.running.addr
    }

    /// The application base URL, `http://<addr>` (also the token issuer).
    pub fn base_url(&self) -> Url {
        self.running.state.base_url.clone()
    }

    /// The configuration it runs with.
    pub fn config(&self) -> &EmulatorConfig {
        &self.running.state.config
    }

    /// Replaces the fault plan.
    pub fn set_faults(&self, plan: FaultPlan) {
        *server::lock(&self.running.state.faults) = plan;
    }

    /// The fault plan as it stands: the faults not yet used up.
    pub fn faults(&self) -> FaultPlan {
        server::lock(&self.running.state.faults).clone()
    }

    /// Adds `fault` at the end of `endpoint`'s queue.
    pub fn push_fault(&self, endpoint: Endpoint, fault: Fault) {
        server::lock(&self.running.state.faults)
            .0
            .entry(endpoint)
            .or_default()
            .push(fault);
    }

    /// Adds a signing key that signs from now on (the old one stays in the JWKS); returns its
    /// `kid`.
    pub fn rotate_key(&self) -> String {
        self.running
            .state
            .keys
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .rotate()
    }

    /// A token signed by the emulator for `username` with `scopes`, valid for `ttl_secs`
    /// seconds (negative: already expired). `token_type` `jwtAccess` makes a LoginID token.
    pub fn mint_token(
        &self,
        username: &str,
        scopes: &[&str],
        ttl_secs: i64,
        token_type: &str,
    ) -> String {
        let scopes: Vec<String> = scopes.iter().map(|s| (*s).to_owned()).collect();
        self.running
            .state
            .mint(username, &scopes, ttl_secs, token_type)
    }

    /// Bytes produced so far by `oversized` body faults.
    pub fn oversize_bytes_sent(&self) -> u64 {
        self.running
            .state
            .stats
            .oversize_bytes_sent
            .load(Ordering::Relaxed)
    }

    /// Returns once every request answered so far (and every dropped connection noticed so
    /// far) is in the request log file. Lines are written by a task of their own; this is the
    /// way to read the file without racing it.
    pub async fn flush_log(&self) {
        self.running.state.log.flush().await;
    }

    /// Stops accepting connections and closes the open ones (dropping it does the same).
    pub fn shutdown(self) {}
}

impl Drop for Emulator {
    fn drop(&mut self) {
        let _ = self.running.shutdown.send(true);
        self.running.task.abort();
    }
}
