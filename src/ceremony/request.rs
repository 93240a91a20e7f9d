//! What a caller asks for, and its validation before any IO.

use std::fmt;
use std::time::Duration;

use ctap::pin_uv::Pin;
use zeroize::Zeroizing;

use super::error::InvalidArgument;
use crate::loginid::Token;
use crate::loginid::dto::UsernameType;
use crate::transport::DeviceId;

/// Longest username, in characters (LoginID usernames are e-mail addresses, phone numbers or
/// free-form names; RFC 5321 caps an address at 254 octets).
pub const MAX_USERNAME_CHARS: usize = 256;

/// Longest display name or passkey name, in characters.
pub const MAX_NAME_CHARS: usize = 256;

/// Largest authorization token, in bytes. LoginID's grant tokens are compact JWTs of a few
/// hundred bytes; the cap keeps a hostile caller from making the daemon send megabytes.
pub const MAX_TOKEN_BYTES: usize = 8192;

/// One "create a passkey" request.
pub struct CeremonyRequest {
    /// The LoginID username.
    pub username: String,
    /// The authorization token the UI's backend got from `mgmt/grant` (scope `reg:write`).
    /// `None` only for applications that let a new user's first passkey be created without
    /// one.
    pub authz_token: Option<Token>,
    /// What kind of name `username` is.
    pub username_type: UsernameType,
    /// Display name; LoginID defaults it to the username.
    pub display_name: Option<String>,
    /// Name of the new passkey in the user's list.
    pub passkey_name: Option<String>,
    /// The key to use; without it the only key present is used, or the user picks one by
    /// touching it.
    pub authenticator: Option<DeviceId>,
    /// The caller's limit on the whole ceremony; clamped to the configured range, and never
    /// longer than the relying party's own timeout.
    pub timeout: Option<Duration>,
    /// A PIN for unattended use (test rigs, kiosks with a fixed PIN): used instead of asking,
    /// and as the new PIN when the key has none and user verification is required. A wrong
    /// one ends the ceremony with `PinInvalid`.
    pub pin: Option<Zeroizing<String>>,
}

impl CeremonyRequest {
    /// A request for `username` with `authz_token` and everything else left to defaults.
    pub fn new(username: impl Into<String>, authz_token: Option<Token>) -> Self {
        Self {
            username: username.into(),
            authz_token,
            username_type: UsernameType::Other,
            display_name: None,
            passkey_name: None,
            authenticator: None,
            timeout: None,
            pin: None,
        }
    }

    /// Checks every input before anything is sent anywhere; the unattended PIN against
    /// CTAP's PIN rules (CTAP 2.2 §6.5.1).
    pub fn validate(&self) -> Result<(), InvalidArgument> {
        validate_username(&self.username)?;
        if let Some(token) = &self.authz_token {
            validate_token(token)?;
        }
        for (what, name) in [
            ("display name", &self.display_name),
            ("passkey name", &self.passkey_name),
        ] {
            if let Some(name) = name
                && (name.chars().count() > MAX_NAME_CHARS || name.chars().any(char::is_control))
            {
                return Err(InvalidArgument::Name(what));
            }
        }
        if self.timeout.is_some_and(|t| t.is_zero()) {
            return Err(InvalidArgument::ZeroTimeout);
        }
        if let Some(pin) = &self.pin {
            // Normalized again where it is used; this copy is dropped (zeroized) at once.
            drop(Pin::new(pin).map_err(InvalidArgument::Pin)?);
        }
        Ok(())
    }
}

impl fmt::Debug for CeremonyRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CeremonyRequest")
            .field("username", &self.username)
            .field("authz_token", &self.authz_token)
            .field("username_type", &self.username_type)
            .field("display_name", &self.display_name)
            .field("passkey_name", &self.passkey_name)
            .field("authenticator", &self.authenticator)
            .field("timeout", &self.timeout)
            .field("pin", &self.pin.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

/// 1 to [`MAX_USERNAME_CHARS`] characters, no control or format characters (which could hide
/// text or reorder it on screen), no white space at either end.
fn validate_username(username: &str) -> Result<(), InvalidArgument> {
    if username.is_empty() {
        return Err(InvalidArgument::UsernameEmpty);
    }
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(InvalidArgument::UsernameTooLong {
            max: MAX_USERNAME_CHARS,
        });
    }
    let starts_or_ends_blank =
        username.starts_with(char::is_whitespace) || username.ends_with(char::is_whitespace);
    if starts_or_ends_blank || username.chars().any(|c| c.is_control() || is_format(c)) {
        return Err(InvalidArgument::UsernameCharacters);
    }
    Ok(())
}

/// Unicode format characters that matter for spoofing: bidirectional controls, zero-width
/// characters and the BOM.
fn is_format(c: char) -> bool {
    matches!(c,
        '\u{00AD}' | '\u{061C}' | '\u{180E}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}'
        | '\u{2060}'..='\u{2064}' | '\u{2066}'..='\u{206F}' | '\u{FEFF}')
}

/// A compact JWT: 1 to [`MAX_TOKEN_BYTES`] bytes of base64url and dots. Standard base64
/// (`+`, `/`, `=`) is tolerated for opaque tokens; nothing else, so the token can neither
/// break the `Authorization` header nor smuggle white space.
fn validate_token(token: &Token) -> Result<(), InvalidArgument> {
    let value = token.expose();
    if value.is_empty() || value.len() > MAX_TOKEN_BYTES {
        return Err(InvalidArgument::TokenSize {
            max: MAX_TOKEN_BYTES,
        });
    }
    let allowed =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'+' | b'/' | b'=');
    if !value.bytes().all(allowed) {
        return Err(InvalidArgument::TokenCharacters);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(username: &str) -> CeremonyRequest {
        CeremonyRequest::new(username, Some(Token::new("eyJhbGciOiJFUzI1NiJ9.e30.c2ln")))
    }

    #[test]
    fn ordinary_requests_pass() {
        for username in ["alice@example.com", "+14155550100", "Zoë Ñandú", "a"] {
            assert_eq!(request(username).validate(), Ok(()), "{username}");
        }
        let mut with_pin = request("bob");
        with_pin.pin = Some(Zeroizing::new("1234".to_owned()));
        assert_eq!(with_pin.validate(), Ok(()));
        assert_eq!(CeremonyRequest::new("carol", None).validate(), Ok(()));
    }

    #[test]
    fn usernames_are_checked() {
        assert_eq!(request("").validate(), Err(InvalidArgument::UsernameEmpty));
        assert_eq!(
            request(&"x".repeat(MAX_USERNAME_CHARS + 1)).validate(),
            Err(InvalidArgument::UsernameTooLong { max: 256 })
        );
        assert_eq!(request(&"é".repeat(MAX_USERNAME_CHARS)).validate(), Ok(()));
        for bad in [
            " alice",
            "alice ",
            "al\nice",
            "al\u{0}ice",
            "ali\u{202E}ce",
            "a\u{200B}b",
        ] {
            assert_eq!(
                request(bad).validate(),
                Err(InvalidArgument::UsernameCharacters),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn tokens_are_checked() {
        let with_token =
            |token: &str| CeremonyRequest::new("alice", Some(Token::new(token))).validate();
        assert_eq!(
            with_token(""),
            Err(InvalidArgument::TokenSize { max: 8192 })
        );
        assert_eq!(
            with_token(&"a".repeat(MAX_TOKEN_BYTES + 1)),
            Err(InvalidArgument::TokenSize { max: 8192 })
        );
        assert_eq!(with_token(&"a".repeat(MAX_TOKEN_BYTES)), Ok(()));
        for bad in ["abc def", "abc\r\nX-Evil: 1", "Bearer abc", "abc\u{e9}"] {
            assert_eq!(
                with_token(bad),
                Err(InvalidArgument::TokenCharacters),
                "{bad:?}"
            );
        }
        assert_eq!(with_token("YWJj+/=="), Ok(()));
    }

    #[test]
    fn names_timeouts_and_pins_are_checked() {
        let mut r = request("alice");
        r.display_name = Some("x".repeat(MAX_NAME_CHARS + 1));
        assert_eq!(r.validate(), Err(InvalidArgument::Name("display name")));
        let mut r = request("alice");
        r.passkey_name = Some("kiosk\u{7}".to_owned());
        assert_eq!(r.validate(), Err(InvalidArgument::Name("passkey name")));
        let mut r = request("alice");
        r.timeout = Some(Duration::ZERO);
        assert_eq!(r.validate(), Err(InvalidArgument::ZeroTimeout));
        let mut r = request("alice");
        r.pin = Some(Zeroizing::new("12".to_owned()));
        assert!(matches!(r.validate(), Err(InvalidArgument::Pin(_))));
    }

    #[test]
    fn debug_hides_the_pin_and_the_token() {
        let mut r = request("alice");
        r.pin = Some(Zeroizing::new("secret-pin".to_owned()));
        let text = format!("{r:?}");
        assert!(!text.contains("secret-pin"), "{text}");
        assert!(!text.contains("c2ln"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
}
