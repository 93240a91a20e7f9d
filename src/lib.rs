//! passkeyd: a Linux daemon that creates LoginID passkeys on FIDO security keys.
//!
//! The protocol core lives in the `ctap` crate (no IO); this crate will hold the device layer,
//! the LoginID client, the ceremony and the D-Bus service. See ARCHITECTURE.md.

pub mod loginid;
