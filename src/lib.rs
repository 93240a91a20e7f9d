//! passkeyd: creates LoginID passkeys on FIDO security keys.
