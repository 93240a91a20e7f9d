//! CTAP1/U2F messages for keys that only speak U2F (FIDO U2F Raw Message Formats v1.2
//! §3–§5; CTAP 2.2 §10 "Interoperating with CTAP1/U2F authenticators").
//!
//! U2F messages are ISO 7816-4 command and response APDUs. Over USB they travel inside
//! CTAPHID_MSG (CTAP 2.2 §11.2.9.1.2), which carries the U2F raw message format's
//! extended-length encoding (Raw Message Formats §3.1.2); over NFC they are sent as plain
//! APDUs, where short encoding works with any reader ([`ApduEncoding`]).
//!
//! What a platform needs to create a WebAuthn credential on a U2F-only key (CTAP 2.2 §10.2):
//!
//! - exclude list: one check-only U2F_AUTHENTICATE per excluded credential
//!   ([`AuthenticateRequest::check_only`], [`check_only_outcome`]);
//! - U2F_REGISTER ([`RegisterRequest`]), resent while the key answers SW 6985 (no user
//!   presence yet; U2F has no keepalive);
//! - the registration response ([`Registration`]) and its conversion to a "fido-u2f"
//!   attestation object (WebAuthn L3 §8.6, [`Registration::to_attestation_object`]).
//!
//! Responses are attacker-controlled: every length is checked before use and every
//! malformation has its own [`RegistrationError`] or [`AuthenticationError`] variant.

use der::{Decode as _, Reader as _};
use sha2::{Digest, Sha256};

use crate::cbor::Value;
use crate::cose::{CoseKey, alg, curve};
use crate::iso7816::CommandApdu;
use crate::webauthn::attestation::{AttestationObject, format};
use crate::webauthn::auth_data::{AuthDataError, AuthenticatorData, Flags};

/// The class byte of every U2F command (Raw Message Formats §3.1: "CLA ... 0x00").
const CLA: u8 = 0x00;

/// Instruction bytes (Raw Message Formats §3.1 table, §4.1, §5.1, §6.1).
pub mod ins {
    /// U2F_REGISTER.
    pub const REGISTER: u8 = 0x01;
    /// U2F_AUTHENTICATE.
    pub const AUTHENTICATE: u8 = 0x02;
    /// U2F_VERSION.
    pub const VERSION: u8 = 0x03;
}

/// U2F_AUTHENTICATE control bytes, sent as P1 (Raw Message Formats §5.1).
pub mod control {
    /// Sign, and require user presence.
    pub const ENFORCE_USER_PRESENCE_AND_SIGN: u8 = 0x03;
    /// Only check whether the key handle belongs to this key and application.
    pub const CHECK_ONLY: u8 = 0x07;
    /// Sign without requiring user presence.
    pub const DONT_ENFORCE_USER_PRESENCE_AND_SIGN: u8 = 0x08;
}

/// Size of an uncompressed P-256 point: 0x04 || x || y.
pub const PUBLIC_KEY_LEN: usize = 65;

/// The legacy first byte of a registration response (Raw Message Formats §4.3).
const REGISTER_RESERVED_BYTE: u8 = 0x05;

/// How a U2F command APDU encodes its lengths: [`ApduForm::Extended`] is what CTAPHID_MSG
/// carries (CTAP 2.2 §11.2.9.1.2 → Raw Message Formats §3.1.2, Le = `00 00`);
/// [`ApduForm::Short`] works with any NFC reader (Le = `00`, more data through SW 61xx).
pub use crate::iso7816::ApduForm as ApduEncoding;
/// U2F status words (Raw Message Formats §3.3) are ISO 7816 status words.
pub use crate::iso7816::StatusWord;

/// Why a U2F exchange failed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum U2fError {
    /// The response APDU is shorter than its two-byte status word.
    #[error("response APDU of {0} bytes has no status word")]
    ResponseTooShort(usize),
    /// The key answered with a status other than the one expected.
    #[error("U2F status {:04X}", .0.to_u16())]
    Status(StatusWord),
    /// A check-only authenticate answered SW_NO_ERROR, which Raw Message Formats §5.1 rules
    /// out; the key cannot be trusted to have checked anything.
    #[error("check-only authenticate answered SW_NO_ERROR")]
    UnexpectedSuccess,
    /// A key handle to send is empty or longer than the one-byte length allows.
    #[error("key handle of {0} bytes is outside 1..=255")]
    KeyHandleLength(usize),
    /// The command data do not fit the chosen APDU encoding (255 bytes for short, 65 535
    /// for extended).
    #[error("{0} data bytes do not fit the APDU encoding")]
    ApduDataTooLong(usize),
    /// The registration response is malformed.
    #[error("registration response: {0}")]
    Registration(#[from] RegistrationError),
    /// The authentication response is malformed.
    #[error("authentication response: {0}")]
    Authentication(#[from] AuthenticationError),
}

/// Splits a response APDU into its data and status word (ISO 7816-4 §5.1).
pub fn split_response(response: &[u8]) -> Result<(&[u8], StatusWord), U2fError> {
    let Some((data, &[sw1, sw2])) = response.split_last_chunk::<2>() else {
        return Err(U2fError::ResponseTooShort(response.len()));
    };
    Ok((data, StatusWord::from_bytes(sw1, sw2)))
}

/// The data of a response APDU whose status is SW_NO_ERROR; any other status is an error.
pub fn success_data(response: &[u8]) -> Result<&[u8], U2fError> {
    match split_response(response)? {
        (data, StatusWord::Success) => Ok(data),
        (_, sw) => Err(U2fError::Status(sw)),
    }
}

/// Encodes a command APDU with P2 = 0 and the form's largest Le.
fn command_apdu(ins: u8, p1: u8, data: &[u8], encoding: ApduEncoding) -> Result<Vec<u8>, U2fError> {
    let le = match encoding {
        ApduEncoding::Extended => 0x1_0000,
        ApduEncoding::Short => 0x100,
    };
    CommandApdu {
        cla: CLA,
        ins,
        p1,
        p2: 0x00,
        data: data.to_vec(),
        le: Some(le),
    }
    .encode(encoding)
    .map_err(|_| U2fError::ApduDataTooLong(data.len()))
}

/// U2F_REGISTER (Raw Message Formats §4.1; CTAP 2.2 §10.2.1 for its use by makeCredential).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RegisterRequest {
    /// The challenge parameter: for WebAuthn, the clientDataHash.
    pub challenge: [u8; 32],
    /// The application parameter: for WebAuthn, SHA-256 of the RP ID.
    pub application: [u8; 32],
}

impl RegisterRequest {
    /// The request for a WebAuthn registration: challenge = clientDataHash, application =
    /// SHA-256(`rp_id`) (CTAP 2.2 §10.2.1).
    pub fn for_webauthn(client_data_hash: [u8; 32], rp_id: &str) -> Self {
        Self {
            challenge: client_data_hash,
            application: Sha256::digest(rp_id.as_bytes()).into(),
        }
    }

    /// The command APDU: `00 01 00 00`, then challenge || application as data.
    pub fn to_apdu(&self, encoding: ApduEncoding) -> Vec<u8> {
        let mut data = [0; 64];
        data[..32].copy_from_slice(&self.challenge);
        data[32..].copy_from_slice(&self.application);
        // INVARIANT: 64 data bytes fit both encodings, so command_apdu cannot fail here.
        command_apdu(ins::REGISTER, 0x00, &data, encoding).unwrap_or_default()
    }
}

/// U2F_AUTHENTICATE (Raw Message Formats §5.1).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuthenticateRequest {
    control: u8,
    challenge: [u8; 32],
    application: [u8; 32],
    key_handle: Vec<u8>,
}

impl AuthenticateRequest {
    /// A request with the given control byte (see [`control`]); the key handle must be
    /// 1 to 255 bytes.
    pub fn new(
        control: u8,
        challenge: [u8; 32],
        application: [u8; 32],
        key_handle: &[u8],
    ) -> Result<Self, U2fError> {
        if key_handle.is_empty() || key_handle.len() > usize::from(u8::MAX) {
            return Err(U2fError::KeyHandleLength(key_handle.len()));
        }
        Ok(Self {
            control,
            challenge,
            application,
            key_handle: key_handle.to_vec(),
        })
    }

    /// A check-only request (control byte 0x07): does `key_handle` belong to this key and
    /// `application`? Used for the exclude list (CTAP 2.2 §10.2.1); answer with
    /// [`check_only_outcome`].
    pub fn check_only(
        challenge: [u8; 32],
        application: [u8; 32],
        key_handle: &[u8],
    ) -> Result<Self, U2fError> {
        Self::new(control::CHECK_ONLY, challenge, application, key_handle)
    }

    /// The command APDU: `00 02 <control> 00`, then challenge || application || L || key
    /// handle as data. Short encoding fails for key handles over 190 bytes.
    pub fn to_apdu(&self, encoding: ApduEncoding) -> Result<Vec<u8>, U2fError> {
        let mut data = Vec::with_capacity(65 + self.key_handle.len());
        data.extend_from_slice(&self.challenge);
        data.extend_from_slice(&self.application);
        // INVARIANT: the constructor bounds the key handle to 1..=255 bytes.
        data.push(u8::try_from(self.key_handle.len()).unwrap_or(u8::MAX));
        data.extend_from_slice(&self.key_handle);
        command_apdu(ins::AUTHENTICATE, self.control, &data, encoding)
    }

    /// The control byte.
    pub fn control(&self) -> u8 {
        self.control
    }

    /// The key handle.
    pub fn key_handle(&self) -> &[u8] {
        &self.key_handle
    }
}

/// What a check-only authenticate says about a key handle (Raw Message Formats §5.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum KeyHandleCheck {
    /// SW 6985: the key made this handle for this application (an excluded credential is
    /// present).
    Known,
    /// SW 6A80: not this key's handle, or made for another application.
    Unknown,
}

/// Interprets the response APDU of a check-only authenticate.
pub fn check_only_outcome(response: &[u8]) -> Result<KeyHandleCheck, U2fError> {
    match split_response(response)?.1 {
        StatusWord::ConditionsNotSatisfied => Ok(KeyHandleCheck::Known),
        StatusWord::WrongData => Ok(KeyHandleCheck::Unknown),
        StatusWord::Success => Err(U2fError::UnexpectedSuccess),
        other => Err(U2fError::Status(other)),
    }
}

/// Why a DER element (attestation certificate or signature) could not be delimited.
#[derive(Clone, Copy, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DerElementError {
    /// Nothing where the element should start.
    #[error("missing")]
    Missing,
    /// The first byte is not a SEQUENCE tag (0x30).
    #[error("tag {0:#04x} is not SEQUENCE")]
    NotSequence(u8),
    /// The length octets end early.
    #[error("length octets truncated")]
    HeaderTruncated,
    /// The indefinite-length form (0x80), which DER forbids.
    #[error("indefinite length")]
    IndefiniteLength,
    /// A length longer than four octets, or not in its shortest form.
    #[error("malformed length")]
    BadLength,
    /// The header promises more bytes than there are.
    #[error("{declared} bytes declared, {available} available")]
    Truncated {
        /// Header plus content length, as declared.
        declared: usize,
        /// The bytes left from the start of the element.
        available: usize,
    },
}

/// The length of the DER SEQUENCE at the start of `bytes`, header included (X.690 §8.1.3,
/// §10.1: short and long definite forms only).
fn der_sequence_len(bytes: &[u8]) -> Result<usize, DerElementError> {
    let &tag = bytes.first().ok_or(DerElementError::Missing)?;
    if tag != 0x30 {
        return Err(DerElementError::NotSequence(tag));
    }
    let mut reader = der::SliceReader::new(bytes).map_err(|_| DerElementError::BadLength)?;
    let header = der::Header::decode(&mut reader).map_err(|e| match e.kind() {
        der::ErrorKind::IndefiniteLength => DerElementError::IndefiniteLength,
        der::ErrorKind::Incomplete { .. } => DerElementError::HeaderTruncated,
        _ => DerElementError::BadLength,
    })?;
    let header_len = usize::try_from(reader.position()).map_err(|_| DerElementError::BadLength)?;
    let content_len = usize::try_from(header.length).map_err(|_| DerElementError::BadLength)?;
    let declared = header_len
        .checked_add(content_len)
        .ok_or(DerElementError::BadLength)?;
    if declared > bytes.len() {
        return Err(DerElementError::Truncated {
            declared,
            available: bytes.len(),
        });
    }
    Ok(declared)
}

/// Why a U2F_REGISTER response could not be parsed (Raw Message Formats §4.3).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RegistrationError {
    /// No data at all.
    #[error("empty")]
    Empty,
    /// The first byte is not the legacy 0x05.
    #[error("reserved byte {0:#04x}, expected 0x05")]
    ReservedByte(u8),
    /// Fewer than 65 bytes for the user public key.
    #[error("public key truncated: {0} of 65 bytes")]
    PublicKeyTruncated(usize),
    /// The public key is not in uncompressed form (first byte not 0x04).
    #[error("public key form {0:#04x}, expected uncompressed 0x04")]
    PublicKeyNotUncompressed(u8),
    /// The public key is not a point on P-256.
    #[error("public key is not a valid P-256 point")]
    PublicKeyInvalid,
    /// The data end before the key handle length.
    #[error("key handle length missing")]
    KeyHandleLengthMissing,
    /// The key handle length is zero.
    #[error("empty key handle")]
    EmptyKeyHandle,
    /// The key handle length points past the end.
    #[error("key handle of {declared} bytes, {available} available")]
    KeyHandleTruncated {
        /// The declared length.
        declared: u8,
        /// The bytes left after the length byte.
        available: usize,
    },
    /// The attestation certificate cannot be delimited.
    #[error("attestation certificate: {0}")]
    Certificate(DerElementError),
    /// The signature cannot be delimited.
    #[error("signature: {0}")]
    Signature(DerElementError),
    /// Bytes after the signature's DER SEQUENCE.
    #[error("{0} trailing bytes after the signature")]
    TrailingBytes(usize),
}

/// A parsed U2F_REGISTER response (Raw Message Formats §4.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    public_key: [u8; PUBLIC_KEY_LEN],
    key_handle: Vec<u8>,
    attestation_certificate: Vec<u8>,
    signature: Vec<u8>,
}

impl Registration {
    /// Parses the response data (status word already removed):
    /// `0x05 | public key (65) | L (1) | key handle (L) | X.509 certificate (DER) |
    /// ECDSA signature (DER)`.
    ///
    /// The certificate's end comes from its DER SEQUENCE header; the signature must be one
    /// DER SEQUENCE that ends exactly where the data end. The public key must be a valid
    /// uncompressed P-256 point. The signature itself is not verified: that is the relying
    /// party's job, with the certificate's key (WebAuthn L3 §8.6).
    pub fn parse(data: &[u8]) -> Result<Self, RegistrationError> {
        let (&reserved, rest) = data.split_first().ok_or(RegistrationError::Empty)?;
        if reserved != REGISTER_RESERVED_BYTE {
            return Err(RegistrationError::ReservedByte(reserved));
        }
        let (public_key, rest) = rest
            .split_first_chunk::<PUBLIC_KEY_LEN>()
            .ok_or(RegistrationError::PublicKeyTruncated(rest.len()))?;
        if public_key[0] != 0x04 {
            return Err(RegistrationError::PublicKeyNotUncompressed(public_key[0]));
        }
        if p256::PublicKey::from_sec1_bytes(public_key).is_err() {
            return Err(RegistrationError::PublicKeyInvalid);
        }
        let (&kh_len, rest) = rest
            .split_first()
            .ok_or(RegistrationError::KeyHandleLengthMissing)?;
        if kh_len == 0 {
            return Err(RegistrationError::EmptyKeyHandle);
        }
        let (key_handle, rest) = rest.split_at_checked(usize::from(kh_len)).ok_or(
            RegistrationError::KeyHandleTruncated {
                declared: kh_len,
                available: rest.len(),
            },
        )?;
        let cert_len = der_sequence_len(rest).map_err(RegistrationError::Certificate)?;
        let (certificate, rest) = rest.split_at(cert_len);
        let sig_len = der_sequence_len(rest).map_err(RegistrationError::Signature)?;
        let (signature, rest) = rest.split_at(sig_len);
        if !rest.is_empty() {
            return Err(RegistrationError::TrailingBytes(rest.len()));
        }
        Ok(Self {
            public_key: *public_key,
            key_handle: key_handle.to_vec(),
            attestation_certificate: certificate.to_vec(),
            signature: signature.to_vec(),
        })
    }

    /// Parses a whole response APDU: SW_NO_ERROR and the registration. SW 6985 (user presence
    /// needed) comes back as [`U2fError::Status`] so the caller can retry.
    pub fn from_response(response: &[u8]) -> Result<Self, U2fError> {
        Ok(Self::parse(success_data(response)?)?)
    }

    /// The user public key, uncompressed (0x04 || x || y).
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public_key
    }

    /// The key handle: the WebAuthn credential ID.
    pub fn key_handle(&self) -> &[u8] {
        &self.key_handle
    }

    /// The attestation certificate, DER.
    pub fn attestation_certificate(&self) -> &[u8] {
        &self.attestation_certificate
    }

    /// The attestation signature, DER ECDSA.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The user public key as a COSE key `{1: 2, 3: -7, -1: 1, -2: x, -3: y}` (WebAuthn L3
    /// §8.6).
    pub fn cose_key(&self) -> CoseKey {
        let [_, point @ ..] = self.public_key;
        let (x, y) = point.split_at(32);
        CoseKey::Ec2 {
            alg: Some(alg::ES256),
            crv: curve::P256,
            x: x.to_vec(),
            y: y.to_vec(),
        }
    }

    /// The bytes the attestation signature covers (Raw Message Formats §4.3):
    /// `0x00 | application | challenge | key handle | public key`.
    pub fn signed_data(&self, application: &[u8; 32], challenge: &[u8; 32]) -> Vec<u8> {
        let mut data = Vec::with_capacity(1 + 64 + self.key_handle.len() + PUBLIC_KEY_LEN);
        data.push(0x00);
        data.extend_from_slice(application);
        data.extend_from_slice(challenge);
        data.extend_from_slice(&self.key_handle);
        data.extend_from_slice(&self.public_key);
        data
    }

    /// The WebAuthn attestation object for this registration (WebAuthn L3 §8.6; CTAP 2.2
    /// §10.2.1): fmt "fido-u2f", attStmt `{"sig", "x5c": [certificate]}`, and authData =
    /// `application | flags 0x41 (UP, AT) | signCount 0 | AAGUID 0 | L | key handle |
    /// COSE key`.
    ///
    /// `application` must be the application parameter the registration was made with, i.e.
    /// SHA-256 of the RP ID: the relying party rebuilds the signed data from the rpIdHash.
    pub fn to_attestation_object(
        &self,
        application: &[u8; 32],
    ) -> Result<AttestationObject, AuthDataError> {
        let auth_data = AuthenticatorData::with_attested_credential(
            *application,
            Flags::UP | Flags::AT,
            0,
            [0; 16],
            &self.key_handle,
            &self.cose_key(),
        )?;
        let att_stmt = Value::Map(vec![
            (Value::from("sig"), Value::Bytes(self.signature.clone())),
            (
                Value::from("x5c"),
                Value::Array(vec![Value::Bytes(self.attestation_certificate.clone())]),
            ),
        ]);
        Ok(AttestationObject {
            fmt: format::FIDO_U2F.to_owned(),
            att_stmt,
            auth_data: auth_data.into_bytes(),
        })
    }
}

/// Why a U2F_AUTHENTICATE response could not be parsed (Raw Message Formats §5.4).
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthenticationError {
    /// No data at all.
    #[error("empty")]
    Empty,
    /// Fewer than four counter bytes after the user presence byte.
    #[error("counter truncated: {0} of 4 bytes")]
    CounterTruncated(usize),
    /// The signature cannot be delimited.
    #[error("signature: {0}")]
    Signature(DerElementError),
    /// Bytes after the signature's DER SEQUENCE.
    #[error("{0} trailing bytes after the signature")]
    TrailingBytes(usize),
}

/// A parsed U2F_AUTHENTICATE response (Raw Message Formats §5.4).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Authentication {
    user_presence: u8,
    counter: u32,
    signature: Vec<u8>,
}

impl Authentication {
    /// Parses the response data (status word removed): `user presence (1) | counter (4,
    /// big-endian) | signature (DER)`.
    pub fn parse(data: &[u8]) -> Result<Self, AuthenticationError> {
        let (&user_presence, rest) = data.split_first().ok_or(AuthenticationError::Empty)?;
        let (counter, rest) = rest
            .split_first_chunk::<4>()
            .ok_or(AuthenticationError::CounterTruncated(rest.len()))?;
        let sig_len = der_sequence_len(rest).map_err(AuthenticationError::Signature)?;
        let (signature, rest) = rest.split_at(sig_len);
        if !rest.is_empty() {
            return Err(AuthenticationError::TrailingBytes(rest.len()));
        }
        Ok(Self {
            user_presence,
            counter: u32::from_be_bytes(*counter),
            signature: signature.to_vec(),
        })
    }

    /// Parses a whole response APDU, requiring SW_NO_ERROR.
    pub fn from_response(response: &[u8]) -> Result<Self, U2fError> {
        Ok(Self::parse(success_data(response)?)?)
    }

    /// The user presence byte as sent (bit 0: user present; the rest reserved).
    pub fn user_presence_byte(&self) -> u8 {
        self.user_presence
    }

    /// Whether the user was present (bit 0 of the user presence byte).
    pub fn user_present(&self) -> bool {
        self.user_presence & 0x01 != 0
    }

    /// The signature counter.
    pub fn counter(&self) -> u32 {
        self.counter
    }

    /// The signature, DER ECDSA.
    pub fn signature(&self) -> &[u8] {
        &self.signature
    }

    /// The bytes the signature covers (Raw Message Formats §5.4):
    /// `application | user presence | counter | challenge`. With application = rpIdHash this
    /// equals WebAuthn's `authenticatorData || clientDataHash` for authData `application |
    /// flags | signCount`.
    pub fn signed_data(&self, application: &[u8; 32], challenge: &[u8; 32]) -> Vec<u8> {
        let mut data = Vec::with_capacity(32 + 1 + 4 + 32);
        data.extend_from_slice(application);
        data.push(self.user_presence);
        data.extend_from_slice(&self.counter.to_be_bytes());
        data.extend_from_slice(challenge);
        data
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use p256::ecdsa::signature::Verifier as _;
    use p256::pkcs8::DecodePublicKey as _;

    fn unhex(text: &str) -> Vec<u8> {
        hex::decode(text.split_whitespace().collect::<String>()).unwrap()
    }

    fn sha256(data: &[u8]) -> [u8; 32] {
        Sha256::digest(data).into()
    }

    /// The registration example of FIDO U2F Raw Message Formats v1.2 §8.1 ("Registration
    /// Example"), made by a "Gnubby Pilot" key for appId "http://example.com".
    const SPEC_CLIENT_DATA: &str = concat!(
        r#"{"typ":"navigator.id.finishEnrollment","#,
        r#""challenge":"vqrS6WXDe1JUs5_c3i4-LkKIHRr-3XVb3azuA5TifHo","#,
        r#""cid_pubkey":{"kty":"EC","crv":"P-256","#,
        r#""x":"HzQwlfXX7Q4S5MtCCnZUNBw3RMzPO9tOyWjBqRl4tJ8","#,
        r#""y":"XVguGFLIZx1fXg3wNqfdbn75hi4-_7-BxhMljw42Ht4"},"#,
        r#""origin":"http://example.com"}"#,
    );
    const SPEC_APP_ID: &str = "http://example.com";
    const SPEC_REGISTRATION: &str = "
        05
        04b174bc49c7ca254b70d2e5c207cee9cf174820ebd77ea3c65508c26da51b657c1cc6b952f8621697936482
        da0a6d3d3826a59095daf6cd7c03e2e60385d2f6d9
        40
        2a552dfdb7477ed65fd84133f86196010b2215b57da75d315b7b9e8fe2e3925a6019551bab61d16591659cba
        f00b4950f7abfe6660e2e006f76868b772d70c25
        3082013c3081e4a003020102020a47901280001155957352300a06082a8648ce3d0403023017311530130603
        550403130c476e756262792050696c6f74301e170d3132303831343138323933325a170d3133303831343138
        323933325a3031312f302d0603550403132650696c6f74476e756262792d302e342e312d3437393031323830
        3030313135353935373335323059301306072a8648ce3d020106082a8648ce3d030107034200048d617e65c9
        508e64bcc5673ac82a6799da3c1446682c258c463fffdf58dfd2fa3e6c378b53d795c4a4dffb4199edd7862f
        23abaf0203b4b8911ba0569994e101300a06082a8648ce3d0403020347003044022060cdb6061e9c22262d1a
        ac1d96d8c70829b2366531dda268832cb836bcd30dfa0220631b1459f09e6330055722c8d89b7f48883b9089
        b88d60d1d9795902b30410df
        304502201471899bcc3987e62e8202c9b39c33c19033f7340352dba80fcab017db9230e402210082677d673d
        891933ade6f617e5dbde2e247e70423fd5ad7804a6d3d3961ef871";

    fn spec_parameters() -> ([u8; 32], [u8; 32]) {
        (
            sha256(SPEC_APP_ID.as_bytes()),
            sha256(SPEC_CLIENT_DATA.as_bytes()),
        )
    }

    /// The P-256 key of a DER X.509 certificate, read with an independent parser.
    fn certificate_key(der: &[u8]) -> p256::ecdsa::VerifyingKey {
        use der::{Decode, Encode};
        let cert = x509_cert::Certificate::from_der(der).unwrap();
        let spki = cert
            .tbs_certificate
            .subject_public_key_info
            .to_der()
            .unwrap();
        p256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap()
    }

    #[test]
    fn spec_parameters_match_the_spec() {
        let (application, challenge) = spec_parameters();
        assert_eq!(
            hex::encode(application),
            "f0e6a6a97042a4f1f1c87f5f7d44315b2d852c2df5c7991cc66241bf7072d1c4"
        );
        assert_eq!(
            hex::encode(challenge),
            "4142d21c00d94ffb9d504ada8f99b721f4b191ae4e37ca0140f696b6983cfacb"
        );
    }

    #[test]
    fn register_apdu_golden_bytes() {
        let request = RegisterRequest {
            challenge: [0xcc; 32],
            application: [0xaa; 32],
        };
        let extended = request.to_apdu(ApduEncoding::Extended);
        assert_eq!(extended.len(), 73);
        assert_eq!(extended[..7], [0x00, 0x01, 0x00, 0x00, 0x00, 0x00, 0x40]);
        assert_eq!(extended[7..39], [0xcc; 32]);
        assert_eq!(extended[39..71], [0xaa; 32]);
        assert_eq!(extended[71..], [0x00, 0x00]);

        let short = request.to_apdu(ApduEncoding::Short);
        assert_eq!(short.len(), 70);
        assert_eq!(short[..5], [0x00, 0x01, 0x00, 0x00, 0x40]);
        assert_eq!(short[5..69], extended[7..71]);
        assert_eq!(short[69], 0x00);

        let webauthn = RegisterRequest::for_webauthn([0xcc; 32], "acme.com");
        assert_eq!(
            hex::encode(webauthn.application),
            "1194228da8fdbdeefd261bd7b6595cfd70a50d70c6407bcf013de96d4efb17de"
        );
    }

    #[test]
    fn check_only_apdu_golden_bytes() {
        let request = AuthenticateRequest::check_only([0x01; 32], [0x02; 32], &[0x03; 64]).unwrap();
        assert_eq!(request.control(), 0x07);
        let extended = request.to_apdu(ApduEncoding::Extended).unwrap();
        // 65 + 64 = 129 = 0x81 data bytes.
        assert_eq!(extended[..7], [0x00, 0x02, 0x07, 0x00, 0x00, 0x00, 0x81]);
        assert_eq!(extended[7..39], [0x01; 32]);
        assert_eq!(extended[39..71], [0x02; 32]);
        assert_eq!(extended[71], 0x40);
        assert_eq!(extended[72..136], [0x03; 64]);
        assert_eq!(extended[136..], [0x00, 0x00]);
        assert_eq!(extended.len(), 138);

        let short = request.to_apdu(ApduEncoding::Short).unwrap();
        assert_eq!(short[..5], [0x00, 0x02, 0x07, 0x00, 0x81]);
        assert_eq!(short[5..134], extended[7..136]);
        assert_eq!(short[134..], [0x00]);

        // 65 + 190 = 255 fits a short APDU; 191 does not.
        let fits = AuthenticateRequest::check_only([0; 32], [0; 32], &[0; 190]).unwrap();
        assert_eq!(fits.to_apdu(ApduEncoding::Short).unwrap()[4], 0xff);
        let too_long = AuthenticateRequest::check_only([0; 32], [0; 32], &[0; 191]).unwrap();
        assert_eq!(
            too_long.to_apdu(ApduEncoding::Short),
            Err(U2fError::ApduDataTooLong(256))
        );
        assert_eq!(
            too_long.to_apdu(ApduEncoding::Extended).unwrap()[4..7],
            [0x00, 0x01, 0x00]
        );

        assert_eq!(
            AuthenticateRequest::check_only([0; 32], [0; 32], &[]),
            Err(U2fError::KeyHandleLength(0))
        );
        assert_eq!(
            AuthenticateRequest::check_only([0; 32], [0; 32], &[0; 256]),
            Err(U2fError::KeyHandleLength(256))
        );
        let sign = AuthenticateRequest::new(
            control::ENFORCE_USER_PRESENCE_AND_SIGN,
            [0; 32],
            [0; 32],
            &[9],
        )
        .unwrap();
        assert_eq!(
            sign.to_apdu(ApduEncoding::Extended).unwrap()[..3],
            [0x00, 0x02, 0x03]
        );
        assert_eq!(sign.key_handle(), &[9]);
    }

    #[test]
    fn status_words_are_typed() {
        assert_eq!(
            split_response(&[0x90, 0x00]),
            Ok((&[][..], StatusWord::Success))
        );
        assert_eq!(
            split_response(&[0xab, 0x90, 0x00]),
            Ok((&[0xab][..], StatusWord::Success))
        );
        assert_eq!(split_response(&[0x69]), Err(U2fError::ResponseTooShort(1)));
        assert_eq!(split_response(&[]), Err(U2fError::ResponseTooShort(0)));
        let sw = |bytes: [u8; 2]| split_response(&bytes).unwrap().1;
        assert_eq!(sw([0x69, 0x85]), StatusWord::ConditionsNotSatisfied);
        assert_eq!(sw([0x6a, 0x80]), StatusWord::WrongData);
        assert_eq!(sw([0x67, 0x00]), StatusWord::WrongLength);
        assert_eq!(sw([0x6d, 0x00]), StatusWord::InsNotSupported);
        assert_eq!(sw([0x6e, 0x00]), StatusWord::ClaNotSupported);
        assert_eq!(sw([0x6f, 0x00]), StatusWord::Other(0x6f00));
        assert_eq!(sw([0x6a, 0x82]), StatusWord::FileNotFound);
        assert_eq!(
            U2fError::Status(StatusWord::ConditionsNotSatisfied).to_string(),
            "U2F status 6985"
        );

        assert_eq!(success_data(&[0x01, 0x90, 0x00]), Ok(&[0x01][..]));
        assert_eq!(
            success_data(&[0x69, 0x85]),
            Err(U2fError::Status(StatusWord::ConditionsNotSatisfied))
        );
        assert_eq!(
            Registration::from_response(&[0x69, 0x85]),
            Err(U2fError::Status(StatusWord::ConditionsNotSatisfied))
        );
    }

    #[test]
    fn check_only_outcomes() {
        assert_eq!(check_only_outcome(&[0x69, 0x85]), Ok(KeyHandleCheck::Known));
        assert_eq!(
            check_only_outcome(&[0x6a, 0x80]),
            Ok(KeyHandleCheck::Unknown)
        );
        assert_eq!(
            check_only_outcome(&[0x90, 0x00]),
            Err(U2fError::UnexpectedSuccess)
        );
        assert_eq!(
            check_only_outcome(&[0x6d, 0x00]),
            Err(U2fError::Status(StatusWord::InsNotSupported))
        );
        assert_eq!(
            check_only_outcome(&[0x6a]),
            Err(U2fError::ResponseTooShort(1))
        );
    }

    #[test]
    fn parses_the_spec_registration_and_its_signature_verifies() {
        let bytes = unhex(SPEC_REGISTRATION);
        let registration = Registration::parse(&bytes).unwrap();
        assert_eq!(registration.public_key()[..3], [0x04, 0xb1, 0x74]);
        assert_eq!(registration.key_handle().len(), 64);
        assert_eq!(registration.key_handle()[..4], [0x2a, 0x55, 0x2d, 0xfd]);
        assert_eq!(registration.attestation_certificate().len(), 320);
        assert_eq!(registration.signature().len(), 71);

        let (application, challenge) = spec_parameters();
        let key = certificate_key(registration.attestation_certificate());
        let signature = p256::ecdsa::Signature::from_der(registration.signature()).unwrap();
        let signed = registration.signed_data(&application, &challenge);
        assert_eq!(signed.len(), 1 + 32 + 32 + 64 + 65);
        key.verify(&signed, &signature).unwrap();
        // Any other challenge does not verify.
        assert!(
            key.verify(
                &registration.signed_data(&application, &[0; 32]),
                &signature
            )
            .is_err()
        );

        // The same bytes with SW 9000, as CTAPHID_MSG returns them.
        let mut apdu = bytes;
        apdu.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(Registration::from_response(&apdu).unwrap(), registration);
    }

    #[test]
    fn converts_to_a_fido_u2f_attestation_object() {
        let registration = Registration::parse(&unhex(SPEC_REGISTRATION)).unwrap();
        let (application, challenge) = spec_parameters();
        let object = registration.to_attestation_object(&application).unwrap();
        assert_eq!(object.fmt, "fido-u2f");
        assert_eq!(
            object.statement_member("sig"),
            Some(&Value::Bytes(registration.signature().to_vec()))
        );
        assert_eq!(
            object.statement_member("x5c"),
            Some(&Value::Array(vec![Value::Bytes(
                registration.attestation_certificate().to_vec()
            )]))
        );

        // authData: rpIdHash | 41 | 00000000 | 16 zero bytes | 0040 | key handle | COSE key.
        let auth_data = &object.auth_data;
        assert_eq!(auth_data[..32], application);
        assert_eq!(auth_data[32..37], [0x41, 0, 0, 0, 0]);
        assert_eq!(auth_data[37..53], [0; 16]);
        assert_eq!(auth_data[53..55], [0x00, 0x40]);
        assert_eq!(auth_data[55..119], registration.key_handle()[..]);
        let mut cose = unhex("a5 01 02 03 26 20 01 21 58 20");
        cose.extend_from_slice(&registration.public_key()[1..33]);
        cose.extend_from_slice(&[0x22, 0x58, 0x20]);
        cose.extend_from_slice(&registration.public_key()[33..]);
        assert_eq!(auth_data[119..], cose[..]);

        // Verify as a relying party would (WebAuthn L3 §8.6 verification procedure), from the
        // attestation object alone.
        let decoded = AttestationObject::from_cbor(&object.to_cbor().unwrap()).unwrap();
        assert_eq!(decoded, object);
        let parsed = decoded.parsed_auth_data().unwrap();
        assert!(parsed.check_rp_id(SPEC_APP_ID));
        let credential = parsed.attested_credential_data().unwrap();
        let Ok(CoseKey::Ec2 { x, y, .. }) = credential.cose_key() else {
            panic!("not EC2")
        };
        let mut verification_data = vec![0x00];
        verification_data.extend_from_slice(parsed.rp_id_hash());
        verification_data.extend_from_slice(&challenge);
        verification_data.extend_from_slice(credential.credential_id());
        verification_data.push(0x04);
        verification_data.extend_from_slice(&x);
        verification_data.extend_from_slice(&y);
        let Some(Value::Bytes(sig)) = decoded.statement_member("sig") else {
            panic!("sig")
        };
        let Some(Value::Array(x5c)) = decoded.statement_member("x5c") else {
            panic!("x5c")
        };
        let [Value::Bytes(cert)] = &x5c[..] else {
            panic!("one certificate")
        };
        certificate_key(cert)
            .verify(
                &verification_data,
                &p256::ecdsa::Signature::from_der(sig).unwrap(),
            )
            .unwrap();
    }

    #[test]
    fn every_truncation_of_a_registration_is_typed() {
        let bytes = unhex(SPEC_REGISTRATION);
        // Offsets: key 1..66, L at 66, handle 67..131, certificate 131..451, signature 451..522.
        assert_eq!(bytes.len(), 522);
        for len in 0..bytes.len() {
            let err = Registration::parse(&bytes[..len]).unwrap_err();
            let expected = match len {
                0 => err == RegistrationError::Empty,
                1..66 => err == RegistrationError::PublicKeyTruncated(len - 1),
                66 => err == RegistrationError::KeyHandleLengthMissing,
                67..131 => {
                    err == RegistrationError::KeyHandleTruncated {
                        declared: 64,
                        available: len - 67,
                    }
                }
                131 => err == RegistrationError::Certificate(DerElementError::Missing),
                132..135 => err == RegistrationError::Certificate(DerElementError::HeaderTruncated),
                135..451 => {
                    err == RegistrationError::Certificate(DerElementError::Truncated {
                        declared: 320,
                        available: len - 131,
                    })
                }
                451 => err == RegistrationError::Signature(DerElementError::Missing),
                452 => err == RegistrationError::Signature(DerElementError::HeaderTruncated),
                _ => {
                    err == RegistrationError::Signature(DerElementError::Truncated {
                        declared: 71,
                        available: len - 451,
                    })
                }
            };
            assert!(expected, "length {len}: {err:?}");
        }
    }

    #[test]
    fn rejects_malformed_registrations() {
        let good = unhex(SPEC_REGISTRATION);
        let with = |index: usize, byte: u8| {
            let mut bytes = good.clone();
            bytes[index] = byte;
            Registration::parse(&bytes)
        };
        assert_eq!(with(0, 0x04), Err(RegistrationError::ReservedByte(0x04)));
        assert_eq!(
            with(1, 0x02),
            Err(RegistrationError::PublicKeyNotUncompressed(0x02))
        );
        assert_eq!(with(2, 0x00), Err(RegistrationError::PublicKeyInvalid));
        assert_eq!(with(66, 0x00), Err(RegistrationError::EmptyKeyHandle));
        // A handle length of 0xff swallows the certificate; what follows is no SEQUENCE.
        assert_eq!(
            with(66, 0xff),
            Err(RegistrationError::Certificate(
                DerElementError::NotSequence(good[67 + 255])
            ))
        );
        assert_eq!(
            Registration::parse(&good[..200]),
            Err(RegistrationError::Certificate(DerElementError::Truncated {
                declared: 320,
                available: 69
            }))
        );
        let mut long_handle = good[..200].to_vec();
        long_handle[66] = 0xff;
        assert_eq!(
            Registration::parse(&long_handle),
            Err(RegistrationError::KeyHandleTruncated {
                declared: 0xff,
                available: 133
            })
        );
        // Certificate tag not SEQUENCE, indefinite length, non-minimal and oversized lengths.
        assert_eq!(
            with(131, 0x31),
            Err(RegistrationError::Certificate(
                DerElementError::NotSequence(0x31)
            ))
        );
        let mut indefinite = good[..131].to_vec();
        indefinite.extend_from_slice(&[0x30, 0x80, 0x00, 0x00]);
        assert_eq!(
            Registration::parse(&indefinite),
            Err(RegistrationError::Certificate(
                DerElementError::IndefiniteLength
            ))
        );
        let mut non_minimal = good[..131].to_vec();
        non_minimal.extend_from_slice(&[0x30, 0x81, 0x05, 0, 0, 0, 0, 0]);
        assert_eq!(
            Registration::parse(&non_minimal),
            Err(RegistrationError::Certificate(DerElementError::BadLength))
        );
        let mut five_octets = good[..131].to_vec();
        five_octets.extend_from_slice(&[0x30, 0x85, 0, 0, 0, 0, 1, 0]);
        assert_eq!(
            Registration::parse(&five_octets),
            Err(RegistrationError::Certificate(DerElementError::BadLength))
        );
        let mut huge = good[..131].to_vec();
        huge.extend_from_slice(&[0x30, 0x84, 0x7f, 0xff, 0xff, 0xff, 0x00]);
        // 2 GiB is past the DER decoder's 256 MiB limit: a bad length, not an allocation.
        assert_eq!(
            Registration::parse(&huge),
            Err(RegistrationError::Certificate(DerElementError::BadLength))
        );
        let mut sixteen_mib = good[..131].to_vec();
        sixteen_mib.extend_from_slice(&[0x30, 0x84, 0x01, 0x00, 0x00, 0x00, 0x00]);
        assert_eq!(
            Registration::parse(&sixteen_mib),
            Err(RegistrationError::Certificate(DerElementError::Truncated {
                declared: 6 + (1 << 24),
                available: 7
            }))
        );
        // Short-form certificate length: accepted when the content is there.
        let mut short_form = good[..131].to_vec();
        short_form.extend_from_slice(&[0x30, 0x02, 0x05, 0x00]);
        short_form.extend_from_slice(&good[451..]);
        let registration = Registration::parse(&short_form).unwrap();
        assert_eq!(
            registration.attestation_certificate(),
            &[0x30, 0x02, 0x05, 0x00]
        );
        // The signature must be a SEQUENCE that ends the data.
        assert_eq!(
            with(451, 0x02),
            Err(RegistrationError::Signature(DerElementError::NotSequence(
                0x02
            )))
        );
        let mut trailing = good.clone();
        trailing.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(
            Registration::parse(&trailing),
            Err(RegistrationError::TrailingBytes(2))
        );
    }

    #[test]
    fn every_single_bit_flip_of_a_registration_is_handled() {
        let good = unhex(SPEC_REGISTRATION);
        let mut parsed = 0;
        for index in 0..good.len() {
            for bit in 0..8 {
                let mut bytes = good.clone();
                bytes[index] ^= 1 << bit;
                if let Ok(registration) = Registration::parse(&bytes) {
                    assert_eq!(registration.key_handle().len(), usize::from(bytes[66]));
                    parsed += 1;
                }
            }
        }
        // Flips inside the key handle and the certificate/signature contents still parse.
        assert!(parsed > 64 * 8, "{parsed}");
    }

    #[test]
    fn parses_authentication_responses() {
        // UP 01, counter 1, then a DER signature (FIDO U2F Raw Message Formats v1.2 §8.2
        // layout; the signature bytes here are arbitrary).
        let mut data = vec![0x01, 0x00, 0x00, 0x00, 0x01];
        let signature = unhex("3006 020101 020102");
        data.extend_from_slice(&signature);
        let auth = Authentication::parse(&data).unwrap();
        assert!(auth.user_present());
        assert_eq!(auth.user_presence_byte(), 0x01);
        assert_eq!(auth.counter(), 1);
        assert_eq!(auth.signature(), &signature[..]);
        let signed = auth.signed_data(&[0xaa; 32], &[0xcc; 32]);
        assert_eq!(signed[..32], [0xaa; 32]);
        assert_eq!(signed[32..37], [0x01, 0x00, 0x00, 0x00, 0x01]);
        assert_eq!(signed[37..], [0xcc; 32]);

        for len in 0..data.len() {
            let err = Authentication::parse(&data[..len]).unwrap_err();
            let expected = match len {
                0 => err == AuthenticationError::Empty,
                1..5 => err == AuthenticationError::CounterTruncated(len - 1),
                5 => err == AuthenticationError::Signature(DerElementError::Missing),
                6 => err == AuthenticationError::Signature(DerElementError::HeaderTruncated),
                _ => matches!(
                    err,
                    AuthenticationError::Signature(DerElementError::Truncated { .. })
                ),
            };
            assert!(expected, "length {len}: {err:?}");
        }
        let mut trailing = data.clone();
        trailing.push(0x00);
        assert_eq!(
            Authentication::parse(&trailing),
            Err(AuthenticationError::TrailingBytes(1))
        );

        let mut apdu = data;
        apdu.extend_from_slice(&[0x90, 0x00]);
        assert_eq!(Authentication::from_response(&apdu).unwrap(), auth);
        assert_eq!(
            Authentication::from_response(&[0x6a, 0x80]),
            Err(U2fError::Status(StatusWord::WrongData))
        );
    }
}
