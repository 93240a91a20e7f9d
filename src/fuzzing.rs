//! Entry points for the fuzz targets in `fuzz/` into parsers that are otherwise private.
//!
//! Each function is a thin wrapper that runs the daemon's own code on bytes from outside (a
//! HID device's sysfs `uevent` file, a LoginID error body, a LoginID token) without the IO
//! around it. Not a stable API: hidden from the documentation and used by nothing else.

use std::time::{Duration, SystemTime};

use p256::ecdsa::VerifyingKey;

use crate::loginid::{ApiError, LoginIdClaims, Token, TokenError};

/// Longest server message an [`ApiError`] keeps, in characters, before any `<redacted>`
/// marker is appended.
pub const MAX_API_MESSAGE_CHARS: usize = crate::loginid::MAX_MESSAGE_CHARS;

/// Longest product name kept from a HID device's `HID_NAME`, in characters.
pub const MAX_HID_NAME_CHARS: usize = crate::transport::usb::MAX_NAME_CHARS;

/// What a HID device's sysfs `uevent` file declares: `HID_ID` and the cleaned `HID_NAME`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HidUevent {
    /// Bus type (`0x0003` USB).
    pub bus: u16,
    /// USB vendor id.
    pub vendor: u16,
    /// USB product id.
    pub product: u16,
    /// `HID_NAME` made fit for display, if anything was left of it.
    pub name: Option<String>,
}

/// The USB transport's parser of a HID device's `uevent` file (`KEY=VALUE` lines).
pub fn parse_hid_uevent(text: &[u8]) -> Option<HidUevent> {
    let (id, name) = crate::transport::usb::parse_hid_uevent(text)?;
    Some(HidUevent {
        bus: id.bus,
        vendor: id.vendor,
        product: id.product,
        name,
    })
}

/// The LoginID client's typed error for a non-2xx reply with this status, content type and
/// body, with `secret` (the token the request carried) redacted from the server's message.
/// `None` for a status outside 100..=999.
pub fn api_error(
    status: u16,
    content_type: Option<&str>,
    body: &[u8],
    secret: Option<&Token>,
) -> Option<ApiError> {
    crate::loginid::api_error_of(status, content_type, body, secret)
}

/// A LoginID token checked against one key with the checks of
/// [`TokenVerifier::verify`](crate::loginid::TokenVerifier::verify): compact JWS, ES256 only,
/// `kid` present, signature, `iss`, `aud`, `exp`/`nbf` with `leeway` at `now`, and `username`
/// when given. Returns the `kid` and the claims.
pub fn verify_token(
    token: &str,
    key: &VerifyingKey,
    issuer: &str,
    audience: &str,
    username: Option<&str>,
    leeway: Duration,
    now: SystemTime,
) -> Result<(String, LoginIdClaims), TokenError> {
    crate::loginid::jwt::verify_with_key(token, key, issuer, audience, username, leeway, now)
}
