//! WebAuthn objects built from CTAP responses (WebAuthn Level 3).
