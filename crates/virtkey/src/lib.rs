//! Virtual FIDO security key: the real Nitrokey 3 / Solo 2 firmware (Trussed
//! `fido-authenticator` 0.3.0) running in-process on the host, seen as a USB HID security key
//! (64-byte reports, CTAPHID) and as an NFC card (ISO 7816 APDUs).
//!
//! It is the independent test peer of the `ctap` crate and the engine of the `virtkey` binary,
//! which serves a key on a Unix SOCK_SEQPACKET socket ([`socket`]) and to pcscd through
//! vsmartcard's vpcd protocol ([`vpcd`]). It does not depend on `ctap`.
//!
//! ```no_run
//! use std::time::Duration;
//! use virtkey::{Config, TouchPolicy, VirtKey};
//!
//! let key = VirtKey::start(Config {
//!     touch: TouchPolicy::AutoAfter(Duration::from_millis(300)),
//!     ..Config::default()
//! })?;
//! let mut init = [0u8; 64];
//! init[..7].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x08]);
//! key.write_report(&init)?;
//! let reply = key.read_report(Duration::from_secs(1))?;
//! # Ok::<(), virtkey::Error>(())
//! ```
//!
//! # What is the firmware and what is this crate
//!
//! The firmware answers CTAP2 (CBOR) and U2F (APDU) requests, keeps credentials and the PIN in
//! its own RAM filesystem, and asks for user presence. This crate supplies what a board
//! supplies around it:
//! - the device side of CTAPHID (CTAP 2.2 §11.2): channel allocation, reassembly, framing,
//!   KEEPALIVE, CANCEL and the CTAPHID errors ([`VirtKey::write_report`] /
//!   [`VirtKey::read_report`]);
//! - the NFC front end through `apdu-dispatch`, the crate the Nitrokey 3 uses
//!   ([`VirtKey::transmit_apdu`]);
//! - user presence following a [`TouchPolicy`];
//! - attestation material: a generated "passkeyd virtkey test CA" and a WebAuthn §8.2.1
//!   packed-attestation certificate carrying [`AAGUID`], written to `fido/x5c/00` and
//!   `fido/sec/00` of the firmware's filesystem.
//!
//! # Timing
//!
//! Keepalives: while the firmware works on a CBOR or MSG request, a KEEPALIVE goes out on the
//! request's channel every [`Config::keepalive_interval`] (first one after one interval), with
//! status PROCESSING (1), or UPNEEDED (2) while the firmware waits for a touch; a change of
//! status is sent at once. The firmware's own presence timeouts are 30 s for CTAP2
//! ([`FIDO2_UP_TIMEOUT`]; then CTAP2_ERR_USER_ACTION_TIMEOUT 0x2F) and 250 ms for U2F
//! ([`U2F_UP_TIMEOUT`]; then SW 6985 and the client retries, as with real U2F keys).

mod attestation;
mod ctaphid;
mod device;
mod firmware;
mod hostile;
mod pin;
mod presence;
pub mod socket;
pub mod vpcd;

use std::time::Duration;

pub use attestation::{AAGUID, AttestationError};
pub use device::VirtKey;
pub use hostile::Hostile;
pub use pin::{PinRule, PinSetupError};

/// Length of a CTAPHID report (CTAP 2.2 §11.2.4).
pub const REPORT_LEN: usize = ctaphid::REPORT_LEN;

/// Largest CTAPHID request message the key accepts, also its getInfo maxMsgSize (0x05).
pub const MAX_MSG_SIZE: usize = firmware::MAX_MSG_SIZE;

/// Largest raw command APDU [`VirtKey::transmit_apdu`] accepts.
pub const MAX_APDU_LEN: usize = firmware::MAX_APDU_LEN;

/// Requests (HID messages and APDUs) that may wait for the firmware, at most.
///
/// The CTAPHID layer has one live request at a time and NFC callers wait for their answer, so
/// the queue only fills while the firmware is blocked (a presence wait lasts up to
/// [`FIDO2_UP_TIMEOUT`]) and callers time out and try again: their abandoned requests stay
/// queued until the firmware skips them. Beyond this bound new work is refused
/// ([`Error::Busy`] for [`VirtKey::transmit_apdu`], CTAPHID_ERROR CHANNEL_BUSY over HID)
/// instead of piling up.
pub const JOB_QUEUE_LEN: usize = 16;

/// The FIDO applet AID for SELECT over NFC (CTAP 2.2 §11.3.3).
pub const FIDO_AID: [u8; 8] = [0xa0, 0x00, 0x00, 0x06, 0x47, 0x2f, 0x00, 0x01];

/// How long the firmware waits for a touch on a CTAP2 request before it answers
/// CTAP2_ERR_USER_ACTION_TIMEOUT (fido-authenticator `constants::FIDO2_UP_TIMEOUT`).
pub const FIDO2_UP_TIMEOUT: Duration =
    Duration::from_millis(fido_authenticator::constants::FIDO2_UP_TIMEOUT as u64);

/// How long the firmware waits for a touch on a U2F request before it answers SW 6985
/// (fido-authenticator `constants::U2F_UP_TIMEOUT`).
pub const U2F_UP_TIMEOUT: Duration =
    Duration::from_millis(fido_authenticator::constants::U2F_UP_TIMEOUT as u64);

/// When the simulated user touches the key.
///
/// The policy is consulted each time the firmware asks for user presence (makeCredential,
/// getAssertion, reset, selection, U2F register/authenticate with presence), over HID and NFC
/// alike; [`VirtKey::set_touch`] changes it, also during a wait.
#[derive(Clone, Copy, Debug, Default, Eq, PartialEq)]
pub enum TouchPolicy {
    /// Touched at once.
    #[default]
    Auto,
    /// Touched this long after the firmware starts waiting (KEEPALIVE UPNEEDED meanwhile). Past
    /// the firmware's timeout ([`FIDO2_UP_TIMEOUT`], [`U2F_UP_TIMEOUT`]) this behaves like
    /// `Never`.
    AutoAfter(Duration),
    /// The user refuses: CTAP2 requests fail with CTAP2_ERR_OPERATION_DENIED (0x27), U2F ones
    /// with SW 6985.
    Deny,
    /// Nobody touches the key: the firmware's own timeout applies (30 s for CTAP2, then 0x2F;
    /// 250 ms for U2F, then SW 6985). CANCEL still ends a CTAP2 request at once.
    Never,
}

/// Settings of a [`VirtKey`]. Build it as `Config { field: value, ..Config::default() }`; more
/// fields (test-rig knobs) may be added later.
///
/// Its `Debug` output shows whether a PIN is set, never the PIN.
#[derive(Clone, Eq, PartialEq)]
pub struct Config {
    /// User presence.
    pub touch: TouchPolicy,
    /// A PIN to set before the key is handed out. It is set through the firmware's own
    /// clientPIN setPIN command (PIN/UV auth protocol 1) during [`VirtKey::start`], so the
    /// firmware stores, counts and reports it as if a client had set it (getInfo
    /// `clientPin: true`, 8 retries). Must have 4 to 63 bytes / at least 4 code points.
    pub pin: Option<String>,
    /// Act as a U2F-only key: CTAPHID_INIT lacks the CBOR capability, CTAPHID_CBOR gets
    /// INVALID_CMD, NFCCTAP_MSG gets SW 6D00. U2F over CTAPHID_MSG and NFC works.
    pub u2f_only: bool,
    /// KEEPALIVE period while the firmware works (real keys: about 100 ms).
    pub keepalive_interval: Duration,
    /// Delay before each report the key sends: with `Some(d)` a report becomes readable `d`
    /// after the previous one (USB full-speed interrupt endpoints: 1 ms). `None`: no delay.
    pub report_pacing: Option<Duration>,
    /// How long the host may take between the packets of one message before the key answers
    /// CTAPHID_ERROR MSG_TIMEOUT (0x05) and drops it.
    pub continuation_timeout: Duration,
    /// Test-rig knob: answer every CTAP2 request with this CTAP status byte alone (CTAP 2.2
    /// §8.2), without running the firmware: CTAPHID_CBOR gets a one-byte CBOR message, and a
    /// final NFCCTAP_MSG block gets the byte followed by SW 9000. INIT, PING, WINK and U2F
    /// are unaffected. `None`: the firmware answers.
    pub force_status: Option<u8>,
    /// Test-rig knob: a hostile key, which breaks CTAPHID framing or tampers with its answer
    /// to authenticatorMakeCredential over HID ([`Hostile`]). `None`: a well-behaved key.
    pub hostile: Option<Hostile>,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            touch: TouchPolicy::Auto,
            pin: None,
            u2f_only: false,
            keepalive_interval: Duration::from_millis(100),
            report_pacing: None,
            continuation_timeout: Duration::from_millis(500),
            force_status: None,
            hostile: None,
        }
    }
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        /// Stands in for a secret in `Debug` output.
        struct Redacted;
        impl std::fmt::Debug for Redacted {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("<redacted>")
            }
        }
        // Destructured so that a new field cannot be left out of the output unnoticed.
        let Self {
            touch,
            pin,
            u2f_only,
            keepalive_interval,
            report_pacing,
            continuation_timeout,
            force_status,
            hostile,
        } = self;
        f.debug_struct("Config")
            .field("touch", touch)
            .field("pin", &pin.as_ref().map(|_| Redacted))
            .field("u2f_only", u2f_only)
            .field("keepalive_interval", keepalive_interval)
            .field("report_pacing", report_pacing)
            .field("continuation_timeout", continuation_timeout)
            .field("force_status", force_status)
            .field("hostile", hostile)
            .finish()
    }
}

/// Errors of [`VirtKey`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The key's threads have stopped (it is being dropped, or the firmware panicked).
    #[error("the virtual key has stopped")]
    Stopped,
    /// The firmware did not answer an APDU within the caller's timeout; the request was
    /// abandoned.
    #[error("the firmware did not answer in time")]
    Timeout,
    /// The firmware's request queue is full: it is blocked (typically in a presence wait of up
    /// to 30 s) and enough earlier requests wait for it. Nothing was queued; try again later.
    #[error("the firmware is busy with earlier requests")]
    Busy,
    /// The firmware did not come up within 30 s.
    #[error("the firmware did not start in time")]
    StartupTimeout,
    /// The APDU is longer than the NFC front end's buffer.
    #[error("APDU of {len} bytes exceeds the {max}-byte limit")]
    ApduTooLong {
        /// Length of the rejected APDU.
        len: usize,
        /// [`MAX_APDU_LEN`].
        max: usize,
    },
    /// [`Config::pin`] breaks CTAP's PIN rules.
    #[error("the preset PIN is not acceptable: {0}")]
    InvalidPin(#[source] PinRule),
    /// Setting [`Config::pin`] through clientPIN failed.
    #[error("setting the preset PIN failed")]
    PinSetup(#[source] PinSetupError),
    /// Generating the attestation CA or certificate failed.
    #[error(transparent)]
    Attestation(#[from] AttestationError),
    /// Writing the attestation files into the firmware's filesystem failed.
    #[error("writing the firmware's filesystem failed (littlefs error {code})")]
    Storage {
        /// The littlefs error code.
        code: i32,
    },
    /// A thread could not be started.
    #[error("could not start a thread")]
    Spawn(#[source] std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_real_keys() {
        let config = Config::default();
        assert_eq!(config.touch, TouchPolicy::Auto);
        assert_eq!(config.keepalive_interval, Duration::from_millis(100));
        assert_eq!(config.report_pacing, None);
        assert!(!config.u2f_only);
        assert_eq!(config.force_status, None);
        assert_eq!(config.hostile, None);
        assert_eq!(FIDO2_UP_TIMEOUT, Duration::from_secs(30));
        assert_eq!(U2F_UP_TIMEOUT, Duration::from_millis(250));
    }

    #[test]
    fn debug_output_hides_the_pin() {
        let config = Config {
            pin: Some("918273".into()),
            ..Config::default()
        };
        let shown = format!("{config:?}");
        assert!(!shown.contains("918273"), "{shown}");
        assert!(shown.contains("pin: Some(<redacted>)"), "{shown}");
        assert!(shown.contains("touch: Auto"), "{shown}");
        let shown = format!("{:#?}", Config::default());
        assert!(shown.contains("pin: None"), "{shown}");
    }

    #[test]
    fn invalid_pin_is_refused_before_start() {
        let result = VirtKey::start(Config {
            pin: Some("12".into()),
            ..Config::default()
        });
        assert!(matches!(result, Err(Error::InvalidPin(PinRule::TooShort))));
    }
}
