//! Attestation objects (WebAuthn L3 §6.5 "Attestation", §6.5.4 "Generating an Attestation
//! Object").
//!
//! An authenticatorMakeCredential response carries the same three parts under integer keys
//! (CTAP 2.2 §6.1.2: 0x01 fmt, 0x02 authData, 0x03 attStmt); the WebAuthn client re-keys them
//! with text: `{"fmt": text, "attStmt": map, "authData": bytes}`. Encoding uses CTAP2
//! canonical order, which puts the keys as `fmt`, `attStmt`, `authData` (shorter first).
//!
//! Decoding is lenient in the same way as [`crate::cbor`]: any key order, non-minimal
//! lengths, unknown extra members ignored. In particular an authData byte string framed with
//! a non-minimal length (`59 00a2` where `58 a2` would do, as in the CTAP 2.1 specification's
//! makeCredential example) is accepted: the signature covers the authData bytes, not their
//! CBOR framing, so re-encoding canonically changes nothing a verifier checks.

use crate::cbor::{self, DecodeError, EncodeError, TextMap, Value, conv};
use crate::webauthn::auth_data::{AuthDataError, AuthenticatorData};

/// Attestation statement format identifiers (WebAuthn L3 §8; IANA "WebAuthn Attestation
/// Statement Format Identifiers").
pub mod format {
    /// No attestation (§8.7).
    pub const NONE: &str = "none";
    /// Packed attestation (§8.2).
    pub const PACKED: &str = "packed";
    /// FIDO U2F attestation (§8.6).
    pub const FIDO_U2F: &str = "fido-u2f";
}

/// Why an attestation object could not be built from makeCredential response parts.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AttestationError {
    /// The format identifier is empty.
    #[error("empty attestation statement format")]
    EmptyFormat,
    /// attStmt is present but not a map.
    #[error("attestation statement is not a map")]
    StatementNotMap,
    /// The authenticator data does not parse.
    #[error("authenticator data: {0}")]
    AuthData(#[from] AuthDataError),
    /// The authenticator data carries no attested credential data (AT clear).
    #[error("authenticator data has no attested credential data")]
    NoAttestedCredential,
}

/// A WebAuthn attestation object (WebAuthn L3 §6.5, figure "Attestation object layout").
#[derive(Clone, Debug, PartialEq)]
pub struct AttestationObject {
    /// The attestation statement format identifier.
    pub fmt: String,
    /// The attestation statement, a CBOR map whose shape `fmt` defines.
    pub att_stmt: Value,
    /// The authenticator data bytes, exactly as the authenticator produced them.
    pub auth_data: Vec<u8>,
}

impl AttestationObject {
    /// An object with the "none" format and its empty statement (WebAuthn L3 §8.7).
    pub fn none(auth_data: Vec<u8>) -> Self {
        Self {
            fmt: format::NONE.to_owned(),
            att_stmt: Value::Map(Vec::new()),
            auth_data,
        }
    }

    /// Builds the attestation object from authenticatorMakeCredential response members
    /// 0x01 `fmt`, 0x02 `authData` and 0x03 `attStmt` (CTAP 2.2 §6.1.2).
    ///
    /// Keys may omit `attStmt` when the platform asked for no attestation
    /// (`attestationFormatsPreference` ["none"], CTAP 2.2 §6.1.2); without a statement nothing
    /// can be verified, so the object becomes format "none" with an empty statement whatever
    /// `fmt` said. The authenticator data must parse and carry attested credential data.
    pub fn from_make_credential(
        fmt: String,
        auth_data: Vec<u8>,
        att_stmt: Option<Value>,
    ) -> Result<Self, AttestationError> {
        let parsed = AuthenticatorData::parse(&auth_data)?;
        if parsed.attested_credential_data().is_none() {
            return Err(AttestationError::NoAttestedCredential);
        }
        match att_stmt {
            None => Ok(Self::none(auth_data)),
            Some(_) if fmt.is_empty() => Err(AttestationError::EmptyFormat),
            Some(att_stmt @ Value::Map(_)) => Ok(Self {
                fmt,
                att_stmt,
                auth_data,
            }),
            Some(_) => Err(AttestationError::StatementNotMap),
        }
    }

    /// Builds the attestation object from a decoded authenticatorMakeCredential response
    /// (whose decoder already turned an absent `attStmt` into "none").
    pub fn from_response(
        response: crate::command::make_credential::Response,
    ) -> Result<Self, AttestationError> {
        Self::from_make_credential(response.fmt, response.auth_data, Some(response.att_stmt))
    }

    /// The CBOR encoding, in CTAP2 canonical form (keys `fmt`, `attStmt`, `authData`; maps
    /// inside `attStmt` sorted too).
    pub fn to_cbor(&self) -> Result<Vec<u8>, EncodeError> {
        cbor::to_canonical_vec(&Value::Map(vec![
            (Value::from("fmt"), Value::from(self.fmt.as_str())),
            (Value::from("attStmt"), self.att_stmt.clone()),
            (
                Value::from("authData"),
                Value::Bytes(self.auth_data.clone()),
            ),
        ]))
    }

    /// Decodes an attestation object, accepting any key order and non-minimal encodings.
    /// Members other than the three are ignored; a repeated member is an error.
    pub fn from_cbor(bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut map = TextMap::new(cbor::from_slice(bytes)?, "attestationObject")?;
        let fmt = conv::text(map.take("fmt").ok_or(DecodeError::Missing("fmt"))?, "fmt")?;
        let att_stmt = map.take("attStmt").ok_or(DecodeError::Missing("attStmt"))?;
        if !matches!(att_stmt, Value::Map(_)) {
            return Err(DecodeError::UnexpectedType {
                field: "attStmt",
                expected: "map",
            });
        }
        let auth_data = conv::bytes(
            map.take("authData")
                .ok_or(DecodeError::Missing("authData"))?,
            "authData",
        )?;
        Ok(Self {
            fmt,
            att_stmt,
            auth_data,
        })
    }

    /// Parses the authenticator data.
    pub fn parsed_auth_data(&self) -> Result<AuthenticatorData, AuthDataError> {
        AuthenticatorData::parse(&self.auth_data)
    }

    /// The attestation statement member `key`, if the statement has it.
    pub fn statement_member(&self, key: &str) -> Option<&Value> {
        let Value::Map(entries) = &self.att_stmt else {
            return None;
        };
        entries
            .iter()
            .find_map(|(k, v)| (k.as_text() == Some(key)).then_some(v))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cose::{CoseKey, alg};
    use crate::webauthn::auth_data::Flags;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn attested_auth_data() -> Vec<u8> {
        let secret = p256::SecretKey::from_slice(&[3; 32]).unwrap();
        AuthenticatorData::with_attested_credential(
            [0x11; 32],
            Flags::UP,
            7,
            [0x22; 16],
            &[0x33; 16],
            &CoseKey::from_p256(&secret.public_key(), alg::ES256),
        )
        .unwrap()
        .into_bytes()
    }

    #[test]
    fn none_object_golden_bytes() {
        let object = AttestationObject::none(vec![0xaa; 37]);
        let bytes = object.to_cbor().unwrap();
        let mut expected = String::from("a3");
        expected += "63666d74"; // "fmt"
        expected += "646e6f6e65"; // "none"
        expected += "6761747453746d74a0"; // "attStmt": {}
        expected += "68617574684461746158"; // "authData": bytes(
        expected += "25"; // 37)
        expected += &"aa".repeat(37);
        assert_eq!(hex(&bytes), expected);
        assert_eq!(AttestationObject::from_cbor(&bytes).unwrap(), object);
    }

    #[test]
    fn statement_maps_are_sorted_canonically() {
        let object = AttestationObject {
            fmt: format::PACKED.into(),
            att_stmt: Value::Map(vec![
                (
                    Value::from("x5c"),
                    Value::Array(vec![Value::Bytes(vec![0x30])]),
                ),
                (Value::from("sig"), Value::Bytes(vec![0x01])),
                (Value::from("alg"), Value::from(-7)),
            ]),
            auth_data: vec![0x00; 37],
        };
        let bytes = object.to_cbor().unwrap();
        let expected = concat!(
            "a3",
            "63666d74667061636b6564", // "fmt": "packed",
            "6761747453746d74a3",     // "attStmt": {
            "63616c6726",             //   "alg": -7,
            "637369674101",           //   "sig": h'01',
            "63783563814130",         //   "x5c": [h'30']},
            "6861757468446174615825", // "authData": 37 bytes
        );
        assert_eq!(hex(&bytes[..bytes.len() - 37]), expected);
        assert_eq!(object.statement_member("alg"), Some(&Value::from(-7)));
        assert_eq!(object.statement_member("ecdaaKeyId"), None);
    }

    #[test]
    fn decodes_any_key_order_and_non_minimal_lengths() {
        // {"authData": 59 0025 <37 bytes>, "fmt": "none", "attStmt": {}, "extra": 0}
        let mut bytes = vec![0xa4, 0x68];
        bytes.extend_from_slice(b"authData");
        bytes.extend_from_slice(&[0x59, 0x00, 0x25]);
        bytes.extend_from_slice(&[0x5c; 37]);
        bytes.extend_from_slice(&[0x63, b'f', b'm', b't', 0x64, b'n', b'o', b'n', b'e', 0x67]);
        bytes.extend_from_slice(b"attStmt");
        bytes.extend_from_slice(&[0xa0, 0x65]);
        bytes.extend_from_slice(b"extra");
        bytes.push(0x00);
        let object = AttestationObject::from_cbor(&bytes).unwrap();
        assert_eq!(object, AttestationObject::none(vec![0x5c; 37]));
        // Re-encoding is canonical: "58 25", not "59 0025", and the extra member is gone.
        let canonical = object.to_cbor().unwrap();
        assert_eq!(canonical.len(), bytes.len() - 1 - 6 - 1);
        assert_eq!(
            hex(&canonical[canonical.len() - 39..canonical.len() - 37]),
            "5825"
        );
    }

    #[test]
    fn rejects_malformed_objects() {
        let encode = |entries: Vec<(&str, Value)>| {
            let map = entries
                .into_iter()
                .map(|(k, v)| (Value::from(k), v))
                .collect();
            let mut out = Vec::new();
            ciborium::into_writer(&Value::Map(map), &mut out).unwrap();
            AttestationObject::from_cbor(&out)
        };
        let fmt = || ("fmt", Value::from("none"));
        let stmt = || ("attStmt", Value::Map(vec![]));
        let data = || ("authData", Value::Bytes(vec![0; 37]));
        assert_eq!(
            encode(vec![stmt(), data()]),
            Err(DecodeError::Missing("fmt"))
        );
        assert_eq!(
            encode(vec![fmt(), data()]),
            Err(DecodeError::Missing("attStmt"))
        );
        assert_eq!(
            encode(vec![fmt(), stmt()]),
            Err(DecodeError::Missing("authData"))
        );
        assert!(matches!(
            encode(vec![("fmt", Value::from(1)), stmt(), data()]),
            Err(DecodeError::UnexpectedType { field: "fmt", .. })
        ));
        assert!(matches!(
            encode(vec![fmt(), ("attStmt", Value::Array(vec![])), data()]),
            Err(DecodeError::UnexpectedType {
                field: "attStmt",
                ..
            })
        ));
        assert!(matches!(
            encode(vec![fmt(), stmt(), ("authData", Value::from("x"))]),
            Err(DecodeError::UnexpectedType {
                field: "authData",
                ..
            })
        ));
        assert_eq!(
            encode(vec![fmt(), stmt(), data(), fmt()]),
            Err(DecodeError::DuplicateKey("attestationObject"))
        );
        assert!(matches!(
            AttestationObject::from_cbor(&[0x80]),
            Err(DecodeError::UnexpectedType { .. })
        ));
        assert_eq!(AttestationObject::from_cbor(&[]), Err(DecodeError::Empty));

        let good = AttestationObject::none(vec![1; 37]).to_cbor().unwrap();
        for len in 0..good.len() {
            assert!(
                AttestationObject::from_cbor(&good[..len]).is_err(),
                "prefix {len}"
            );
        }
        let mut trailing = good;
        trailing.push(0x00);
        assert_eq!(
            AttestationObject::from_cbor(&trailing),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn builds_from_make_credential_parts() {
        let auth_data = attested_auth_data();
        let stmt = Value::Map(vec![(Value::from("alg"), Value::from(-7))]);
        let object = AttestationObject::from_make_credential(
            format::PACKED.into(),
            auth_data.clone(),
            Some(stmt.clone()),
        )
        .unwrap();
        assert_eq!(object.fmt, "packed");
        assert_eq!(object.att_stmt, stmt);
        assert_eq!(object.parsed_auth_data().unwrap().sign_count(), 7);

        // No attStmt: "none" with an empty statement, whatever fmt said.
        let object =
            AttestationObject::from_make_credential(format::PACKED.into(), auth_data.clone(), None)
                .unwrap();
        assert_eq!(object, AttestationObject::none(auth_data.clone()));

        assert_eq!(
            AttestationObject::from_make_credential(
                "packed".into(),
                auth_data.clone(),
                Some(Value::Bytes(vec![]))
            ),
            Err(AttestationError::StatementNotMap)
        );
        assert_eq!(
            AttestationObject::from_make_credential(String::new(), auth_data, Some(stmt.clone())),
            Err(AttestationError::EmptyFormat)
        );
        assert_eq!(
            AttestationObject::from_make_credential("packed".into(), vec![0; 37], Some(stmt)),
            Err(AttestationError::NoAttestedCredential)
        );
        assert_eq!(
            AttestationObject::from_make_credential("none".into(), vec![0; 36], None),
            Err(AttestationError::AuthData(AuthDataError::TooShort(36)))
        );
    }
}
