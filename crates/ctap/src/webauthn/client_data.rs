//! `clientDataJSON` and the clientDataHash (WebAuthn L3 §5.8.1 `CollectedClientData`).
//!
//! The platform builds the client data itself and hands only its SHA-256 (the
//! `clientDataHash`) to the authenticator. The relying party later parses the JSON and checks
//! the signature over the hash, so the bytes must be produced exactly once, in the form the
//! spec defines: WebAuthn L3 §5.8.1.1 "Serialization" fixes the member order and the string
//! escaping (`CCDToString`) so that a verifier may even check the bytes against a template
//! (§5.8.1.2 "Limited Verification Algorithm"). A general JSON serializer would not do: key
//! order and escaping (`/`, U+007F, non-ASCII) are its own choices.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use sha2::{Digest, Sha256};

/// The `type` member (WebAuthn L3 §5.8.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ClientDataType {
    /// `"webauthn.create"`: a registration ceremony.
    Create,
    /// `"webauthn.get"`: an authentication ceremony.
    Get,
}

impl ClientDataType {
    /// The member's string value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Create => "webauthn.create",
            Self::Get => "webauthn.get",
        }
    }
}

/// The client data of one ceremony (WebAuthn L3 §5.8.1 `CollectedClientData`).
///
/// Only the members a platform sets are modelled; serialization follows §5.8.1.1, so the
/// output ends right after `crossOrigin` or `topOrigin`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CollectedClientData {
    /// `type`.
    pub type_: ClientDataType,
    /// The relying party's challenge, raw; serialized as unpadded base64url.
    pub challenge: Vec<u8>,
    /// `origin`: the caller's origin, serialized as given (an ASCII serialization in practice).
    pub origin: String,
    /// `topOrigin`: the top-level origin, set only for a cross-origin iframe.
    pub top_origin: Option<String>,
    /// `crossOrigin`: whether the caller is not same-origin with its ancestors.
    pub cross_origin: bool,
}

impl CollectedClientData {
    /// Client data for a same-origin ceremony (`crossOrigin` false, no `topOrigin`).
    pub fn new(type_: ClientDataType, challenge: Vec<u8>, origin: impl Into<String>) -> Self {
        Self {
            type_,
            challenge,
            origin: origin.into(),
            top_origin: None,
            cross_origin: false,
        }
    }

    /// The `clientDataJSON` bytes, per WebAuthn L3 §5.8.1.1.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        let challenge = URL_SAFE_NO_PAD.encode(&self.challenge);
        let mut out = Vec::with_capacity(
            64 + challenge.len()
                + self.origin.len()
                + self.top_origin.as_ref().map_or(0, |top| 16 + top.len()),
        );
        out.extend_from_slice(b"{\"type\":");
        ccd_to_string(&mut out, self.type_.as_str());
        out.extend_from_slice(b",\"challenge\":");
        ccd_to_string(&mut out, &challenge);
        out.extend_from_slice(b",\"origin\":");
        ccd_to_string(&mut out, &self.origin);
        out.extend_from_slice(b",\"crossOrigin\":");
        out.extend_from_slice(if self.cross_origin { b"true" } else { b"false" });
        if let Some(top_origin) = &self.top_origin {
            out.extend_from_slice(b",\"topOrigin\":");
            ccd_to_string(&mut out, top_origin);
        }
        // No further members: the temporary copy of §5.8.1.1 step 11 is empty, so close here.
        out.push(b'}');
        out
    }

    /// The clientDataHash: SHA-256 of [`CollectedClientData::to_json_bytes`] (WebAuthn L3 §5.8.1;
    /// CTAP 2.2 §6.1 `clientDataHash`).
    pub fn hash(&self) -> [u8; 32] {
        Sha256::digest(self.to_json_bytes()).into()
    }
}

/// `CCDToString` (WebAuthn L3 §5.8.1.1): a JSON string in which only `"`, `\` and the code
/// points below U+0020 are escaped, the latter as `\u` and four lower-case hex digits.
/// Everything else, including U+007F, `/` and non-ASCII, is copied as UTF-8.
fn ccd_to_string(out: &mut Vec<u8>, value: &str) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    out.push(b'"');
    for ch in value.chars() {
        match ch {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{0}'..='\u{1f}' => {
                let code = ch as usize;
                out.extend_from_slice(b"\\u00");
                out.push(HEX[code >> 4]);
                out.push(HEX[code & 0x0f]);
            }
            _ => {
                let mut buf = [0; 4];
                out.extend_from_slice(ch.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(data: &CollectedClientData) -> String {
        String::from_utf8(data.to_json_bytes()).unwrap()
    }

    #[test]
    fn serializes_in_the_spec_order() {
        let data = CollectedClientData::new(
            ClientDataType::Create,
            b"challenge".to_vec(),
            "https://example.com",
        );
        assert_eq!(
            text(&data),
            r#"{"type":"webauthn.create","challenge":"Y2hhbGxlbmdl","origin":"https://example.com","crossOrigin":false}"#
        );
        assert_eq!(data.to_json_bytes().len(), 104);
        assert_eq!(
            hex::encode(data.hash()),
            "0f7f3f6478c4a828136f60b6b9d4b85a743809912d3cd86b46d2eea8427ff779"
        );
    }

    #[test]
    fn cross_origin_appends_top_origin_last() {
        let data = CollectedClientData {
            type_: ClientDataType::Get,
            challenge: vec![0xfb, 0xff, 0xfe],
            origin: "https://frame.example".into(),
            top_origin: Some("https://top.example".into()),
            cross_origin: true,
        };
        // 0xfbfffe is "-__-" in base64url: the URL-safe alphabet, no padding.
        assert_eq!(
            text(&data),
            r#"{"type":"webauthn.get","challenge":"-__-","origin":"https://frame.example","crossOrigin":true,"topOrigin":"https://top.example"}"#
        );
    }

    #[test]
    fn escapes_exactly_what_ccdtostring_escapes() {
        let data = CollectedClientData::new(
            ClientDataType::Get,
            vec![0x00],
            "a\"b\\c\u{0}\u{1f}\n\u{7f}/é😀",
        );
        let bytes = data.to_json_bytes();
        let origin_start = bytes
            .windows(10)
            .position(|w| w == b"\"origin\":\"")
            .unwrap()
            + 9;
        let origin_end = bytes
            .windows(15)
            .position(|w| w == b",\"crossOrigin\":")
            .unwrap();
        let mut expected = Vec::new();
        expected.extend_from_slice(br#""a\"b\\c\u0000\u001f\u000a"#);
        // U+007F and '/' are copied; é and 😀 stay UTF-8 (2 and 4 bytes).
        expected.extend_from_slice(&[0x7f, b'/', 0xc3, 0xa9, 0xf0, 0x9f, 0x98, 0x80, b'"']);
        assert_eq!(bytes[origin_start..origin_end], expected[..]);
        // The challenge 0x00 is "AA".
        assert_eq!(&bytes[..39], br#"{"type":"webauthn.get","challenge":"AA""#);
        // Still valid JSON that decodes back to the original origin.
        let parsed: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(parsed["origin"], "a\"b\\c\u{0}\u{1f}\n\u{7f}/é😀");
    }

    #[test]
    fn golden_hash() {
        let data = CollectedClientData::new(
            ClientDataType::Create,
            vec![0x01, 0x02, 0x03, 0x04],
            "https://login.example",
        );
        assert_eq!(
            text(&data),
            r#"{"type":"webauthn.create","challenge":"AQIDBA","origin":"https://login.example","crossOrigin":false}"#
        );
        assert_eq!(
            hex::encode(data.hash()),
            "ac738dd32adda127428fea31885cb21589b761fb92b70ba3db9096ccdf91b160"
        );
    }
}
