//! passkeyd: a Linux daemon that creates LoginID passkeys on FIDO security keys.
//!
//! The protocol core lives in the `ctap` crate (no IO). This crate holds the IO around it:
//! [`transport`] (USB, NFC and virtual keys), [`device`] (one actor per key, the CTAPHID and
//! APDU engines, and recording and replay of their traffic) and [`loginid`] (the HTTPS
//! client); [`ceremony`] runs the registration from authorization token to LoginID token;
//! [`decode`] makes CTAP traffic readable for `passkeyctl decode`; [`daemon`] runs the
//! transports and the device registry for `passkeyd`; [`dbus`] serves it all on D-Bus. See
//! ARCHITECTURE.md.

pub mod ceremony;
pub mod cli_assets;
pub mod daemon;
pub mod dbus;
pub mod decode;
pub mod device;
#[doc(hidden)]
pub mod fuzzing;
pub mod loginid;
pub mod transport;
