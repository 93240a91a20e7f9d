//! Sans-IO CTAP2 client protocol core for passkeyd.
//!
//! This crate turns typed requests into bytes for a FIDO security key and bytes from the key
//! back into typed responses. It implements, on the platform (client) side:
//!
//! - [`ctaphid`]: CTAPHID framing for USB HID (CTAP 2.2 §11.2), as a push-style reassembler
//!   with typed errors;
//! - [`iso7816`]: ISO 7816-4 APDU framing for NFC (CTAP 2.2 §11.3);
//! - [`cbor`]: CTAP2 canonical CBOR encoding (CTAP 2.2 §8) and lenient decoding;
//! - [`command`]: authenticatorGetInfo, authenticatorMakeCredential, authenticatorClientPIN,
//!   authenticatorSelection and authenticatorReset (CTAP 2.2 §6);
//! - [`status`]: the CTAP status codes as a total conversion from a byte (CTAP 2.2 §8.2);
//! - [`pin_uv`]: PIN/UV auth protocols one and two (CTAP 2.2 §6.5);
//! - [`u2f`]: the CTAP1/U2F REGISTER and check-only AUTHENTICATE messages;
//! - [`webauthn`]: clientDataJSON, attestation objects and authenticator data (WebAuthn L3);
//! - [`cose`]: COSE keys (RFC 9052/9053) as they appear in CTAP.
//!
//! What it deliberately does not do: any IO. It owns no clock (deadlines are the caller's),
//! no randomness (a `CryptoRngCore` is passed in where a nonce or key is needed) and no
//! threads. The daemon's device layer drives it; tests drive it against the real
//! Nitrokey/Solo2 firmware through `virtkey`.

pub mod cbor;
pub mod command;
pub mod cose;
pub mod ctaphid;
pub mod iso7816;
pub mod pin_uv;
pub mod status;
pub mod u2f;
pub mod webauthn;
