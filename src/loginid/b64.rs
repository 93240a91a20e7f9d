//! Binary fields of the LoginID API.
//!
//! The client emits unpadded base64url (what LoginID's web SDK sends, reference §1). The
//! service's own examples use standard base64 with padding while its SDK samples use unpadded
//! base64url, so everything received is accepted in either alphabet, with or without padding.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::{DecodePaddingMode, general_purpose};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// URL-safe alphabet, padding optional on input.
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::URL_SAFE,
    GeneralPurposeConfig::new()
        .with_encode_padding(false)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Encodes bytes as unpadded base64url (RFC 4648 §5, no `=`).
pub fn encode(bytes: &[u8]) -> String {
    general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Decodes base64 in either alphabet (RFC 4648 §4 or §5), with or without `=` padding.
///
/// A string mixing the two alphabets is accepted too (it is unambiguous). Any other character,
/// including whitespace, is an error.
pub fn decode(text: &str) -> Result<Vec<u8>, base64::DecodeError> {
    if text.contains(['+', '/']) {
        let mapped: String = text
            .chars()
            .map(|c| match c {
                '+' => '-',
                '/' => '_',
                other => other,
            })
            .collect();
        URL_SAFE_ANY_PADDING.decode(mapped)
    } else {
        URL_SAFE_ANY_PADDING.decode(text)
    }
}

/// Bytes carried as a base64 string in JSON: serialized as unpadded base64url, deserialized
/// from either alphabet with or without padding.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Base64Bytes(pub Vec<u8>);

impl Base64Bytes {
    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }

    /// The unpadded base64url text form.
    pub fn to_base64url(&self) -> String {
        encode(&self.0)
    }
}

impl From<Vec<u8>> for Base64Bytes {
    fn from(bytes: Vec<u8>) -> Self {
        Self(bytes)
    }
}

impl From<&[u8]> for Base64Bytes {
    fn from(bytes: &[u8]) -> Self {
        Self(bytes.to_vec())
    }
}

impl fmt::Debug for Base64Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Base64Bytes({})", encode(&self.0))
    }
}

impl Serialize for Base64Bytes {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for Base64Bytes {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        decode(&text).map(Self).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 0xfb 0xff 0xfe exercises both alphabet-specific characters.
    const BYTES: [u8; 4] = [0xfb, 0xff, 0xfe, 0x01];

    #[test]
    fn encodes_unpadded_base64url() {
        assert_eq!(encode(&BYTES), "-__-AQ");
    }

    #[test]
    fn decodes_every_alphabet_and_padding_combination() {
        // Short padding is tolerated too, as by LoginID's own decoder.
        for text in [
            "-__-AQ", "-__-AQ==", "-__-AQ=", "+//+AQ", "+//+AQ==", "-/_+AQ",
        ] {
            assert_eq!(decode(text).unwrap(), BYTES, "{text}");
        }
    }

    #[test]
    fn rejects_foreign_characters_and_bad_lengths() {
        for text in ["-__-AQ ", "-__-A", "-__*AQ", "-__-AQ===", "=-__-AQ"] {
            assert!(decode(text).is_err(), "{text}");
        }
    }

    #[test]
    fn serde_form() {
        let value = Base64Bytes(BYTES.to_vec());
        assert_eq!(serde_json::to_string(&value).unwrap(), "\"-__-AQ\"");
        let back: Base64Bytes = serde_json::from_str("\"+//+AQ==\"").unwrap();
        assert_eq!(back, value);
    }
}
