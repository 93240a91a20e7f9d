//! Secrets that cross the LoginID API: authorization tokens, LoginID tokens, sessions, API keys.
//!
//! Each lives in a zeroizing buffer, prints as `<redacted>` and is only ever exposed to the code
//! that puts it on the wire.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use zeroize::Zeroizing;

/// A bearer credential issued by LoginID: a grant (authorization) token, a LoginID token
/// (`jwtAccess`) or a registration `session`.
///
/// `Debug` and `Display` never show the value; the buffer is zeroized on drop. Serialization
/// writes the value (it has to reach the wire), so never serialize a DTO into a log line.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(Zeroizing<String>);

impl Token {
    /// Wraps a token value.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The token itself, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Length of the token in bytes (safe to log).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the token is empty.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Token(<redacted, {} bytes>)", self.0.len())
    }
}

impl Serialize for Token {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Token {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        String::deserialize(deserializer).map(Self::new)
    }
}

/// A LoginID application API key (dashboard → Settings → keys), sent as HTTP Basic
/// `base64("<key>:")` to the management endpoints.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(Zeroizing<String>);

impl ApiKey {
    /// Wraps an API key.
    pub fn new(value: impl Into<String>) -> Self {
        Self(Zeroizing::new(value.into()))
    }

    /// The key itself, for the one place that puts it on the wire.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_never_shows_the_value() {
        let token = Token::new("eyJhbGciOiJFUzI1NiJ9.c2VjcmV0.c2ln");
        let key = ApiKey::new("super-secret-key");
        assert_eq!(format!("{token:?}"), "Token(<redacted, 34 bytes>)");
        assert_eq!(format!("{key:?}"), "ApiKey(<redacted>)");
    }

    #[test]
    fn serde_round_trip_keeps_the_value() {
        let token: Token = serde_json::from_str("\"abc.def.ghi\"").unwrap();
        assert_eq!(token.expose(), "abc.def.ghi");
        assert_eq!(serde_json::to_string(&token).unwrap(), "\"abc.def.ghi\"");
    }
}
