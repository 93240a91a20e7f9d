//! Virtual FIDO security key.
