//! Authenticator API commands (CTAP 2.2 §6).
