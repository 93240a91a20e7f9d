//! The device layer: a registry of the keys present, one actor task per key, and the
//! CTAPHID and APDU engines that drive the sans-IO `ctap` core over a transport's
//! [`Connection`](crate::transport::Connection).
//!
//! ```text
//!  transports ──TransportEvent──▶ Registry ──spawns──▶ DeviceActor (one per key)
//!                                   │  ▲                  │ owns the Connection
//!              list / get / subscribe  │ status (ready,    │ CTAPHID engine (HID links)
//!                                   ▼  │ busy, gone)       │ APDU engine (NFC links)
//!                             RegistryHandle          Authenticator ──requests──▶ actor
//! ```
//!
//! - [`Registry`]: the one owner of the device map. It consumes
//!   [`TransportEvent`](crate::transport::TransportEvent)s, spawns a device actor per key,
//!   keeps a [`DeviceInfo`] per key (description, cached getInfo, link details, busy flag) and
//!   publishes [`RegistryEvent`]s. It is queried through a [`RegistryHandle`].
//! - The device actor owns its key's link. It reads getInfo once per plug, then serves
//!   requests from [`Authenticator`] handles one at a time. While idle it waits on its
//!   channels only: no timer exists unless a request is in flight.
//! - [`Authenticator`]: the async API the rest of the daemon uses (cheap to clone).
//!
//! # One request at a time: busy, not queued
//!
//! A key serves one request at a time. A request that arrives while another one is in flight
//! on the same key fails at once with [`DeviceError::Busy`] instead of waiting in a queue: the
//! request in flight may be waiting up to 30 s for a touch, and the caller (a ceremony picking
//! among keys, a D-Bus client showing the key as busy) is better placed to decide whether to
//! wait, cancel or use another key than a hidden queue would be.
//!
//! # Deadlines
//!
//! Every request has an overall deadline: the caller's for operations that wait for the user
//! ([`Authenticator::make_credential`], [`Authenticator::selection`], U2F), and
//! [`DeviceConfig::command_timeout`] for the others. Over CTAPHID an inactivity deadline
//! ([`DeviceConfig::inactivity_timeout`]) runs as well and is restarted by every KEEPALIVE,
//! which never extends the overall deadline (CTAP 2.2 §11.2.9.1.7). When a deadline passes
//! the key gets a CTAPHID_CANCEL, the channel is abandoned (the next request allocates a new
//! one, so a late answer cannot be taken for the next request's) and the request fails with
//! [`DeviceError::Timeout`].
//!
//! # Cancellation
//!
//! [`Operation::cancel`] (or dropping the [`Operation`]) sends CTAPHID_CANCEL, or the
//! NFCCTAP_GETRESPONSE cancel form at the next status update over NFC, and waits at most
//! [`DeviceConfig::cancel_grace`] for the key to finish the request (it answers
//! CTAP2_ERR_KEEPALIVE_CANCEL). The result of a cancelled operation is always
//! [`DeviceError::Cancelled`], even if the key completed the request just before.
//!
//! # Host randomness, recording and replay
//!
//! Each key has one source of host randomness ([`HostRandomness`], shared by its actor and its
//! [`Authenticator`] handles): the CTAPHID_INIT nonce and the PIN/UV protocol's ECDH key and
//! IVs all come from it. With [`DeviceConfig::record_dir`] set, every key's traffic and those
//! draws are written to a recording ([`record`]); [`RegistryHandle::add`] with
//! [`HostRandomness::Replay`] plays a recording back as a key, and the same calls then write
//! the same bytes. See `docs/recording.md`.

mod actor;
mod apdu;
mod authenticator;
mod error;
mod hid;
pub mod record;
mod registry;
mod rng;

use std::path::PathBuf;
use std::time::Duration;

pub use authenticator::{
    Authenticator, CancelHandle, MakeCredentialOp, OpEvent, Operation, SelectionOp,
};
pub use error::{DeviceError, ProtocolError, Unsupported};
pub use registry::{DeviceInfo, LinkInfo, Registry, RegistryEvent, RegistryHandle, Subscription};
pub use rng::{HostRandomness, HostRng, RandomnessFailure};

/// Timing and retry settings of the device layer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceConfig {
    /// Overall deadline of a request that does not wait for the user (getInfo, clientPIN,
    /// wink).
    pub command_timeout: Duration,
    /// Deadline of the first exchanges with a new key: channel allocation (or applet
    /// selection) and getInfo.
    pub probe_timeout: Duration,
    /// CTAPHID: how long a key may stay silent while it works on a request. Keys send a
    /// KEEPALIVE about every 100 ms, and each one restarts this timer.
    pub inactivity_timeout: Duration,
    /// How long a cancelled request may take to end on the key before it is abandoned.
    pub cancel_grace: Duration,
    /// CTAPHID_ERROR CHANNEL_BUSY: how many times a request is sent again.
    pub busy_retries: u32,
    /// CTAPHID_ERROR CHANNEL_BUSY: the first pause before a retry; each further pause doubles,
    /// up to [`MAX_BUSY_BACKOFF`].
    pub busy_backoff: Duration,
    /// NFC: pause between NFCCTAP_GETRESPONSE polls after a `9100` status update.
    pub nfc_poll_interval: Duration,
    /// Record every key added to `DIR/<device id>-<unix time>.jsonl` (files mode 0600, the
    /// directory created mode 0700 if missing), in the format of `docs/recording.md`. `None`
    /// (the default): nothing is recorded. Recordings of PIN entry are secrets.
    pub record_dir: Option<PathBuf>,
}

/// The longest pause between two attempts after CHANNEL_BUSY.
pub const MAX_BUSY_BACKOFF: Duration = Duration::from_millis(500);

impl Default for DeviceConfig {
    fn default() -> Self {
        Self {
            command_timeout: Duration::from_secs(10),
            probe_timeout: Duration::from_secs(10),
            inactivity_timeout: Duration::from_secs(5),
            cancel_grace: Duration::from_secs(1),
            busy_retries: 8,
            busy_backoff: Duration::from_millis(20),
            nfc_poll_interval: Duration::from_millis(100),
            record_dir: None,
        }
    }
}

impl DeviceConfig {
    /// The pause before retry number `attempt` (1-based) after CHANNEL_BUSY.
    fn busy_pause(&self, attempt: u32) -> Duration {
        let factor = 1u32
            .checked_shl(attempt.saturating_sub(1))
            .unwrap_or(u32::MAX);
        self.busy_backoff
            .checked_mul(factor)
            .unwrap_or(MAX_BUSY_BACKOFF)
            .min(MAX_BUSY_BACKOFF)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn busy_backoff_doubles_up_to_the_cap() {
        let config = DeviceConfig::default();
        let pauses: Vec<u128> = (1..=8).map(|n| config.busy_pause(n).as_millis()).collect();
        assert_eq!(pauses, [20, 40, 80, 160, 320, 500, 500, 500]);
        assert_eq!(config.busy_pause(0), Duration::from_millis(20));
        assert_eq!(config.busy_pause(u32::MAX), MAX_BUSY_BACKOFF);
    }
}
