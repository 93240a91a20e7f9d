//! Authenticator data (WebAuthn L3 §6.1; CTAP 2.2 §6.1 and §6.2 responses, key 0x02).
//!
//! ```text
//! rpIdHash (32) | flags (1) | signCount (4, big-endian)
//!   [ attested credential data, when AT: aaguid (16) | credentialIdLength (2, big-endian)
//!     | credentialId | credentialPublicKey (one CBOR item, COSE_Key) ]
//!   [ extensions, when ED: one CBOR map ]
//! ```
//!
//! The credential public key has no length prefix, so its end is found by decoding exactly
//! one CBOR item; the extensions map starts right after it. Every byte must be accounted for:
//! bytes after the last structure the flags announce are an error, not something to skip,
//! because they are covered by the signature and a verifier would see different data.
//!
//! The bytes are attacker-controlled. Parsing never panics and allocates at most a copy of
//! the input plus the decoded CBOR, which the decoder bounds by the input length.

use sha2::{Digest, Sha256};

use super::{decode_prefix, has_duplicate_keys};
use crate::cbor::{self, DecodeError, EncodeError, Value, conv};
use crate::cose::{CoseAlgorithm, CoseKey};

/// Size of the fixed part: rpIdHash, flags and signCount.
pub const HEADER_LEN: usize = 37;

/// Largest credential ID WebAuthn L3 allows (§6.5.1 `credentialIdLength`: at most 1023).
pub const MAX_CREDENTIAL_ID_LEN: usize = 1023;

/// The flags byte (WebAuthn L3 §6.1, "flags").
///
/// Bits 1 and 5 are reserved for future use; they are kept (see [`Flags::bits`]) but have no
/// accessor.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Flags(u8);

impl Flags {
    /// User Present (bit 0).
    pub const UP: Self = Self(0x01);
    /// User Verified (bit 2).
    pub const UV: Self = Self(0x04);
    /// Backup Eligibility (bit 3).
    pub const BE: Self = Self(0x08);
    /// Backup State (bit 4).
    pub const BS: Self = Self(0x10);
    /// Attested credential data included (bit 6).
    pub const AT: Self = Self(0x40);
    /// Extension data included (bit 7).
    pub const ED: Self = Self(0x80);

    const NAMES: [(Self, &'static str); 6] = [
        (Self::UP, "UP"),
        (Self::UV, "UV"),
        (Self::BE, "BE"),
        (Self::BS, "BS"),
        (Self::AT, "AT"),
        (Self::ED, "ED"),
    ];

    /// The flags of a raw byte, reserved bits included.
    pub const fn from_bits(bits: u8) -> Self {
        Self(bits)
    }

    /// The raw byte.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Whether every bit of `other` is set.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// UP: the user was present.
    pub const fn user_present(self) -> bool {
        self.contains(Self::UP)
    }

    /// UV: the user was verified.
    pub const fn user_verified(self) -> bool {
        self.contains(Self::UV)
    }

    /// BE: the credential may be backed up (a multi-device credential).
    pub const fn backup_eligible(self) -> bool {
        self.contains(Self::BE)
    }

    /// BS: the credential is backed up.
    pub const fn backed_up(self) -> bool {
        self.contains(Self::BS)
    }

    /// AT: attested credential data follows the header.
    pub const fn has_attested_credential_data(self) -> bool {
        self.contains(Self::AT)
    }

    /// ED: an extensions map ends the data.
    pub const fn has_extension_data(self) -> bool {
        self.contains(Self::ED)
    }
}

impl core::ops::BitOr for Flags {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl core::fmt::Debug for Flags {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "Flags(0x{:02x}", self.0)?;
        let mut separator = " ";
        for (flag, name) in Self::NAMES {
            if self.contains(flag) {
                write!(f, "{separator}{name}")?;
                separator = "|";
            }
        }
        f.write_str(")")
    }
}

/// Why authenticator data could not be parsed (or built).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum AuthDataError {
    /// Shorter than the 37-byte fixed part.
    #[error("authenticator data is {0} bytes, shorter than the 37-byte header")]
    TooShort(usize),
    /// BS (backed up) is set without BE (backup eligible), which WebAuthn L3 §6.1.3 forbids.
    #[error("inconsistent flags {0:#04x}: BS set without BE")]
    InconsistentFlags(u8),
    /// AT is set but nothing follows the header.
    #[error("AT flag set but no attested credential data")]
    AttestedCredentialDataMissing,
    /// The attested credential data ends inside the named fixed-size field.
    #[error("attested credential data truncated in {0}")]
    Truncated(&'static str),
    /// credentialIdLength is zero.
    #[error("empty credential ID")]
    EmptyCredentialId,
    /// credentialIdLength exceeds the 1023 bytes WebAuthn allows.
    #[error("credential ID length {0} exceeds 1023")]
    CredentialIdTooLong(usize),
    /// credentialIdLength points past the end of the data.
    #[error("credential ID length {declared} exceeds the {available} bytes left")]
    CredentialIdBeyondBuffer {
        /// The length the data claims.
        declared: u16,
        /// The bytes actually left after the length field.
        available: usize,
    },
    /// The credential public key is absent, not well-formed CBOR, not a map, or has a
    /// duplicate key.
    #[error("credential public key: {0}")]
    CredentialPublicKey(DecodeError),
    /// ED is set but nothing follows.
    #[error("ED flag set but no extensions map")]
    ExtensionsMissing,
    /// The extensions are not well-formed CBOR, not a map, or have a duplicate key.
    #[error("extensions: {0}")]
    Extensions(DecodeError),
    /// Bytes left after everything the flags announce.
    #[error("{0} trailing bytes after the authenticator data")]
    TrailingBytes(usize),
    /// The COSE key could not be encoded (building only).
    #[error("credential public key encoding: {0}")]
    Encode(EncodeError),
}

/// Parsed authenticator data, with the bytes it came from.
#[derive(Clone, Debug, PartialEq)]
pub struct AuthenticatorData {
    bytes: Vec<u8>,
    rp_id_hash: [u8; 32],
    flags: Flags,
    sign_count: u32,
    attested_credential_data: Option<AttestedCredentialData>,
    extensions: Option<Extensions>,
}

impl AuthenticatorData {
    /// Parses authenticator data (WebAuthn L3 §6.1), keeping a copy of `bytes`.
    pub fn parse(bytes: &[u8]) -> Result<Self, AuthDataError> {
        let Some((header, mut rest)) = bytes.split_first_chunk::<HEADER_LEN>() else {
            return Err(AuthDataError::TooShort(bytes.len()));
        };
        let [rp_id_hash @ .., flags, c0, c1, c2, c3] = *header;
        let flags = Flags(flags);
        let sign_count = u32::from_be_bytes([c0, c1, c2, c3]);
        if flags.backed_up() && !flags.backup_eligible() {
            return Err(AuthDataError::InconsistentFlags(flags.bits()));
        }

        let attested_credential_data = if flags.has_attested_credential_data() {
            let (data, after) = AttestedCredentialData::parse(rest)?;
            rest = after;
            Some(data)
        } else {
            None
        };

        let extensions = if flags.has_extension_data() {
            let (extensions, after) = Extensions::parse(rest)?;
            rest = after;
            Some(extensions)
        } else {
            None
        };

        if !rest.is_empty() {
            return Err(AuthDataError::TrailingBytes(rest.len()));
        }
        Ok(Self {
            bytes: bytes.to_vec(),
            rp_id_hash,
            flags,
            sign_count,
            attested_credential_data,
            extensions,
        })
    }

    /// Builds authenticator data with attested credential data and no extensions, as a
    /// platform must when it synthesizes them (WebAuthn L3 §8.6 for U2F registrations).
    ///
    /// AT is set and ED cleared in `flags`; the public key is encoded in CTAP2 canonical form.
    pub fn with_attested_credential(
        rp_id_hash: [u8; 32],
        flags: Flags,
        sign_count: u32,
        aaguid: [u8; 16],
        credential_id: &[u8],
        public_key: &CoseKey,
    ) -> Result<Self, AuthDataError> {
        let id_len = u16::try_from(credential_id.len())
            .ok()
            .filter(|&len| usize::from(len) <= MAX_CREDENTIAL_ID_LEN)
            .ok_or(AuthDataError::CredentialIdTooLong(credential_id.len()))?;
        let key = cbor::to_canonical_vec(&public_key.to_value()).map_err(AuthDataError::Encode)?;
        let flags = Flags((flags.0 | Flags::AT.0) & !Flags::ED.0);
        let mut bytes = Vec::with_capacity(HEADER_LEN + 18 + credential_id.len() + key.len());
        bytes.extend_from_slice(&rp_id_hash);
        bytes.push(flags.0);
        bytes.extend_from_slice(&sign_count.to_be_bytes());
        bytes.extend_from_slice(&aaguid);
        bytes.extend_from_slice(&id_len.to_be_bytes());
        bytes.extend_from_slice(credential_id);
        bytes.extend_from_slice(&key);
        // Parsing what was just built checks it the same way as device output.
        Self::parse(&bytes)
    }

    /// The bytes exactly as parsed: what signatures cover.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The bytes, consuming `self`.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// rpIdHash: SHA-256 of the RP ID the credential is scoped to.
    pub fn rp_id_hash(&self) -> &[u8; 32] {
        &self.rp_id_hash
    }

    /// Whether rpIdHash is SHA-256 of `rp_id` (WebAuthn L3 §7.1 step 15, §7.2 step 15).
    pub fn check_rp_id(&self, rp_id: &str) -> bool {
        Sha256::digest(rp_id.as_bytes())[..] == self.rp_id_hash[..]
    }

    /// The flags byte.
    pub fn flags(&self) -> Flags {
        self.flags
    }

    /// signCount.
    pub fn sign_count(&self) -> u32 {
        self.sign_count
    }

    /// The attested credential data, present exactly when AT is set.
    pub fn attested_credential_data(&self) -> Option<&AttestedCredentialData> {
        self.attested_credential_data.as_ref()
    }

    /// The extension outputs, present exactly when ED is set.
    pub fn extensions(&self) -> Option<&Extensions> {
        self.extensions.as_ref()
    }
}

/// Attested credential data (WebAuthn L3 §6.5.1).
#[derive(Clone, Debug, PartialEq)]
pub struct AttestedCredentialData {
    aaguid: [u8; 16],
    credential_id: Vec<u8>,
    public_key_bytes: Vec<u8>,
    public_key: Value,
}

impl AttestedCredentialData {
    /// Parses attested credential data at the start of `bytes`; returns it and what follows.
    fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), AuthDataError> {
        if bytes.is_empty() {
            return Err(AuthDataError::AttestedCredentialDataMissing);
        }
        let (aaguid, rest) = bytes
            .split_first_chunk::<16>()
            .ok_or(AuthDataError::Truncated("aaguid"))?;
        let (id_len, rest) = rest
            .split_first_chunk::<2>()
            .ok_or(AuthDataError::Truncated("credentialIdLength"))?;
        let declared = u16::from_be_bytes(*id_len);
        let id_len = usize::from(declared);
        if id_len == 0 {
            return Err(AuthDataError::EmptyCredentialId);
        }
        if id_len > MAX_CREDENTIAL_ID_LEN {
            return Err(AuthDataError::CredentialIdTooLong(id_len));
        }
        let (credential_id, rest) =
            rest.split_at_checked(id_len)
                .ok_or(AuthDataError::CredentialIdBeyondBuffer {
                    declared,
                    available: rest.len(),
                })?;
        let (public_key, used) = decode_prefix(rest).map_err(AuthDataError::CredentialPublicKey)?;
        match &public_key {
            Value::Map(entries) if has_duplicate_keys(entries) => {
                return Err(AuthDataError::CredentialPublicKey(
                    DecodeError::DuplicateKey("credentialPublicKey"),
                ));
            }
            Value::Map(_) => {}
            _ => {
                return Err(AuthDataError::CredentialPublicKey(
                    DecodeError::UnexpectedType {
                        field: "credentialPublicKey",
                        expected: "map",
                    },
                ));
            }
        }
        let (public_key_bytes, rest) = rest.split_at(used);
        let data = Self {
            aaguid: *aaguid,
            credential_id: credential_id.to_vec(),
            public_key_bytes: public_key_bytes.to_vec(),
            public_key,
        };
        Ok((data, rest))
    }

    /// The AAGUID (all zeros for U2F and for "none" attestation that hides the model).
    pub fn aaguid(&self) -> &[u8; 16] {
        &self.aaguid
    }

    /// The credential ID.
    pub fn credential_id(&self) -> &[u8] {
        &self.credential_id
    }

    /// The credential public key as the authenticator encoded it.
    pub fn credential_public_key_bytes(&self) -> &[u8] {
        &self.public_key_bytes
    }

    /// The credential public key as a decoded CBOR map, whatever its key type.
    pub fn credential_public_key(&self) -> &Value {
        &self.public_key
    }

    /// The credential public key as a typed [`CoseKey`]. Fails for key types [`CoseKey`] does
    /// not model (e.g. ML-DSA's AKP), which [`AttestedCredentialData::algorithm`] still reports.
    pub fn cose_key(&self) -> Result<CoseKey, DecodeError> {
        CoseKey::from_value(self.public_key.clone())
    }

    /// The `alg` (3) label of the credential public key, for any key type.
    pub fn algorithm(&self) -> Option<CoseAlgorithm> {
        let Value::Map(entries) = &self.public_key else {
            return None;
        };
        entries.iter().find_map(|(key, value)| {
            if key.as_integer() != Some(3.into()) {
                return None;
            }
            let id = i64::try_from(value.as_integer()?).ok()?;
            Some(CoseAlgorithm::from(id))
        })
    }
}

/// The credProtect policy (CTAP 2.2 §12.1): the same type as the extension input.
pub use crate::command::make_credential::CredProtect;

/// The `hmac-secret` output (CTAP 2.2 §12.5).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HmacSecret {
    /// makeCredential: whether the credential was created with a CredRandom.
    Enabled(bool),
    /// getAssertion: the encrypted outputs for the platform's salts.
    Output(Vec<u8>),
}

/// The `credBlob` output (CTAP 2.2 §12.2).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CredBlob {
    /// makeCredential: whether the blob was stored.
    Stored(bool),
    /// getAssertion: the stored blob (empty if none).
    Blob(Vec<u8>),
}

/// Authenticator extension outputs (WebAuthn L3 §9; CTAP 2.2 §12): a CBOR map keyed by
/// extension identifier.
#[derive(Clone, Debug, PartialEq)]
pub struct Extensions {
    map: Value,
}

impl Extensions {
    /// Parses the extensions map at the start of `bytes`; returns it and what follows.
    fn parse(bytes: &[u8]) -> Result<(Self, &[u8]), AuthDataError> {
        if bytes.is_empty() {
            return Err(AuthDataError::ExtensionsMissing);
        }
        let (map, used) = decode_prefix(bytes).map_err(AuthDataError::Extensions)?;
        match &map {
            Value::Map(entries) if has_duplicate_keys(entries) => Err(AuthDataError::Extensions(
                DecodeError::DuplicateKey("extensions"),
            )),
            Value::Map(_) => Ok((Self { map }, bytes.get(used..).unwrap_or_default())),
            _ => Err(AuthDataError::Extensions(DecodeError::UnexpectedType {
                field: "extensions",
                expected: "map",
            })),
        }
    }

    /// The whole map.
    pub fn as_value(&self) -> &Value {
        &self.map
    }

    /// The output of the extension named `id`, if present.
    pub fn get(&self, id: &str) -> Option<&Value> {
        let Value::Map(entries) = &self.map else {
            return None;
        };
        entries
            .iter()
            .find_map(|(key, value)| (key.as_text() == Some(id)).then_some(value))
    }

    /// `credProtect`: the policy the credential was created with.
    pub fn cred_protect(&self) -> Result<Option<CredProtect>, DecodeError> {
        let Some(value) = self.get("credProtect") else {
            return Ok(None);
        };
        let value = conv::int::<u8>(value.clone(), "credProtect")?;
        CredProtect::from_value(value)
            .map(Some)
            .ok_or(DecodeError::OutOfRange("credProtect"))
    }

    /// `hmac-secret`: a boolean after makeCredential, encrypted output after getAssertion.
    pub fn hmac_secret(&self) -> Result<Option<HmacSecret>, DecodeError> {
        match self.get("hmac-secret") {
            None => Ok(None),
            Some(Value::Bool(enabled)) => Ok(Some(HmacSecret::Enabled(*enabled))),
            Some(Value::Bytes(output)) => Ok(Some(HmacSecret::Output(output.clone()))),
            Some(_) => Err(DecodeError::UnexpectedType {
                field: "hmac-secret",
                expected: "boolean or byte string",
            }),
        }
    }

    /// `credBlob`: a boolean after makeCredential, the blob after getAssertion.
    pub fn cred_blob(&self) -> Result<Option<CredBlob>, DecodeError> {
        match self.get("credBlob") {
            None => Ok(None),
            Some(Value::Bool(stored)) => Ok(Some(CredBlob::Stored(*stored))),
            Some(Value::Bytes(blob)) => Ok(Some(CredBlob::Blob(blob.clone()))),
            Some(_) => Err(DecodeError::UnexpectedType {
                field: "credBlob",
                expected: "boolean or byte string",
            }),
        }
    }

    /// `minPinLength`: the authenticator's current minimum PIN length.
    pub fn min_pin_length(&self) -> Result<Option<u64>, DecodeError> {
        self.get("minPinLength")
            .map(|value| conv::int(value.clone(), "minPinLength"))
            .transpose()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cose::alg;

    const RP_ID: &str = "example.com";

    fn rp_id_hash() -> [u8; 32] {
        Sha256::digest(RP_ID.as_bytes()).into()
    }

    fn p256_key() -> CoseKey {
        let secret = p256::SecretKey::from_slice(&[0x42; 32]).unwrap();
        CoseKey::from_p256(&secret.public_key(), alg::ES256)
    }

    /// 37-byte header followed by `tail`.
    fn with_header(flags: u8, sign_count: u32, tail: &[u8]) -> Vec<u8> {
        let mut bytes = rp_id_hash().to_vec();
        bytes.push(flags);
        bytes.extend_from_slice(&sign_count.to_be_bytes());
        bytes.extend_from_slice(tail);
        bytes
    }

    /// A makeCredential-style authData: UP|UV|AT|ED, a 16-byte credential ID, an ES256 key
    /// and {"credProtect": 2, "hmac-secret": true}.
    fn full() -> Vec<u8> {
        let mut tail = vec![0xf8; 16]; // aaguid
        tail.extend_from_slice(&[0x00, 0x10]);
        tail.extend_from_slice(&[0xc1; 16]);
        tail.extend(cbor::to_canonical_vec(&p256_key().to_value()).unwrap());
        // a2 6b "credProtect" 02 6b "hmac-secret" f5
        tail.extend_from_slice(&[0xa2, 0x6b]);
        tail.extend_from_slice(b"credProtect");
        tail.extend_from_slice(&[0x02, 0x6b]);
        tail.extend_from_slice(b"hmac-secret");
        tail.push(0xf5);
        with_header(0xc5, 0x55, &tail)
    }

    #[test]
    fn parses_an_assertion_header() {
        let bytes = with_header(0x05, 29, &[]);
        let data = AuthenticatorData::parse(&bytes).unwrap();
        assert_eq!(data.rp_id_hash(), &rp_id_hash());
        assert!(data.check_rp_id(RP_ID));
        assert!(!data.check_rp_id("example.org"));
        assert_eq!(data.flags(), Flags::UP | Flags::UV);
        assert!(data.flags().user_present() && data.flags().user_verified());
        assert!(!data.flags().backup_eligible() && !data.flags().backed_up());
        assert_eq!(data.sign_count(), 29);
        assert!(data.attested_credential_data().is_none());
        assert!(data.extensions().is_none());
        assert_eq!(data.as_bytes(), &bytes[..]);
        assert_eq!(format!("{:?}", data.flags()), "Flags(0x05 UP|UV)");
    }

    #[test]
    fn parses_attested_credential_data_and_extensions() {
        let bytes = full();
        let data = AuthenticatorData::parse(&bytes).unwrap();
        assert_eq!(data.flags().bits(), 0xc5);
        assert_eq!(data.sign_count(), 0x55);
        let attested = data.attested_credential_data().unwrap();
        assert_eq!(attested.aaguid(), &[0xf8; 16]);
        assert_eq!(attested.credential_id(), &[0xc1; 16]);
        assert_eq!(attested.credential_public_key_bytes().len(), 77);
        assert_eq!(
            attested.credential_public_key_bytes()[..3],
            [0xa5, 0x01, 0x02]
        );
        assert_eq!(attested.algorithm(), Some(CoseAlgorithm::Es256));
        assert_eq!(attested.cose_key().unwrap(), p256_key());
        let extensions = data.extensions().unwrap();
        assert_eq!(
            extensions.cred_protect(),
            Ok(Some(
                CredProtect::UserVerificationOptionalWithCredentialIdList
            ))
        );
        assert_eq!(
            extensions.hmac_secret(),
            Ok(Some(HmacSecret::Enabled(true)))
        );
        assert_eq!(extensions.cred_blob(), Ok(None));
        assert_eq!(extensions.min_pin_length(), Ok(None));
        assert_eq!(extensions.get("credProtect"), Some(&Value::from(2)));
        assert_eq!(data.into_bytes(), bytes);
    }

    #[test]
    fn extension_accessors_are_typed() {
        let map = |entries: Vec<(&str, Value)>| {
            let value = Value::Map(
                entries
                    .into_iter()
                    .map(|(k, v)| (Value::from(k), v))
                    .collect(),
            );
            let bytes = with_header(0x81, 1, &cbor::to_canonical_vec(&value).unwrap());
            AuthenticatorData::parse(&bytes)
                .unwrap()
                .extensions()
                .unwrap()
                .clone()
        };
        let ext = map(vec![
            ("credBlob", Value::Bytes(vec![1, 2, 3])),
            ("hmac-secret", Value::Bytes(vec![9; 48])),
            ("minPinLength", Value::from(6)),
            ("credProtect", Value::from(3)),
        ]);
        assert_eq!(ext.cred_blob(), Ok(Some(CredBlob::Blob(vec![1, 2, 3]))));
        assert_eq!(ext.hmac_secret(), Ok(Some(HmacSecret::Output(vec![9; 48]))));
        assert_eq!(ext.min_pin_length(), Ok(Some(6)));
        assert_eq!(
            ext.cred_protect(),
            Ok(Some(CredProtect::UserVerificationRequired))
        );

        let ext = map(vec![
            ("credBlob", Value::from(false)),
            ("credProtect", Value::from(1)),
        ]);
        assert_eq!(ext.cred_blob(), Ok(Some(CredBlob::Stored(false))));
        assert_eq!(
            ext.cred_protect(),
            Ok(Some(CredProtect::UserVerificationOptional))
        );

        let bad = map(vec![
            ("credProtect", Value::from(4)),
            ("hmac-secret", Value::from(1)),
            ("credBlob", Value::from("x")),
            ("minPinLength", Value::from(-1)),
        ]);
        assert_eq!(
            bad.cred_protect(),
            Err(DecodeError::OutOfRange("credProtect"))
        );
        assert!(matches!(
            bad.hmac_secret(),
            Err(DecodeError::UnexpectedType { .. })
        ));
        assert!(matches!(
            bad.cred_blob(),
            Err(DecodeError::UnexpectedType { .. })
        ));
        assert_eq!(
            bad.min_pin_length(),
            Err(DecodeError::OutOfRange("minPinLength"))
        );
        assert_eq!(
            map(vec![("credProtect", Value::from(300))]).cred_protect(),
            Err(DecodeError::OutOfRange("credProtect"))
        );
    }

    #[test]
    fn every_truncation_is_an_error_not_a_panic() {
        let bytes = full();
        for len in 0..bytes.len() {
            let err = AuthenticatorData::parse(&bytes[..len]).unwrap_err();
            let expected_kind = match len {
                0..37 => matches!(err, AuthDataError::TooShort(n) if n == len),
                37 => err == AuthDataError::AttestedCredentialDataMissing,
                38..53 => err == AuthDataError::Truncated("aaguid"),
                53..55 => err == AuthDataError::Truncated("credentialIdLength"),
                55..71 => matches!(
                    err,
                    AuthDataError::CredentialIdBeyondBuffer { declared: 16, .. }
                ),
                71..148 => matches!(err, AuthDataError::CredentialPublicKey(_)),
                148 => err == AuthDataError::ExtensionsMissing,
                _ => matches!(err, AuthDataError::Extensions(DecodeError::Malformed)),
            };
            assert!(expected_kind, "length {len}: {err:?}");
        }
        assert!(AuthenticatorData::parse(&bytes).is_ok());
    }

    #[test]
    fn every_single_bit_flip_is_handled() {
        // Flipping any bit gives either a parse that keeps the bytes or a typed error.
        let bytes = full();
        let (mut parsed, mut rejected) = (0, 0);
        for index in 0..bytes.len() {
            for bit in 0..8 {
                let mut corrupted = bytes.clone();
                corrupted[index] ^= 1 << bit;
                match AuthenticatorData::parse(&corrupted) {
                    Ok(data) => {
                        assert_eq!(data.as_bytes(), &corrupted[..]);
                        parsed += 1;
                    }
                    Err(_) => rejected += 1,
                }
            }
        }
        // Flips in the rpIdHash, signCount, aaguid and credential ID always parse.
        assert!(parsed >= (32 + 4 + 16 + 16) * 8, "{parsed} parsed");
        assert!(rejected > 0);
    }

    #[test]
    fn rejects_inconsistent_or_surplus_data() {
        assert_eq!(
            AuthenticatorData::parse(&with_header(0x11, 0, &[])),
            Err(AuthDataError::InconsistentFlags(0x11))
        );
        let ok = AuthenticatorData::parse(&with_header(0x19, 0, &[])).unwrap();
        assert!(ok.flags().backup_eligible() && ok.flags().backed_up());

        // Data after the header with neither AT nor ED.
        assert_eq!(
            AuthenticatorData::parse(&with_header(0x01, 0, &[0xa0])),
            Err(AuthDataError::TrailingBytes(1))
        );
        // Extensions present but ED clear.
        let mut no_ed = full();
        no_ed[32] = 0x45;
        assert_eq!(
            AuthenticatorData::parse(&no_ed),
            Err(AuthDataError::TrailingBytes(27))
        );
        // Bytes after the extensions map.
        let mut surplus = full();
        surplus.extend_from_slice(&[0x00, 0x00]);
        assert_eq!(
            AuthenticatorData::parse(&surplus),
            Err(AuthDataError::TrailingBytes(2))
        );
        // ED set with a non-map.
        assert_eq!(
            AuthenticatorData::parse(&with_header(0x81, 0, &[0x80])),
            Err(AuthDataError::Extensions(DecodeError::UnexpectedType {
                field: "extensions",
                expected: "map"
            }))
        );
        // ED set with a map holding one key twice.
        let dup = [0xa2, 0x61, b'a', 0xf5, 0x61, b'a', 0xf4];
        assert_eq!(
            AuthenticatorData::parse(&with_header(0x81, 0, &dup)),
            Err(AuthDataError::Extensions(DecodeError::DuplicateKey(
                "extensions"
            )))
        );
    }

    #[test]
    fn rejects_bad_credential_ids_and_keys() {
        let attested = |id_len: u16, rest: &[u8]| {
            let mut tail = vec![0; 16];
            tail.extend_from_slice(&id_len.to_be_bytes());
            tail.extend_from_slice(rest);
            AuthenticatorData::parse(&with_header(0x41, 0, &tail))
        };
        assert_eq!(attested(0, &[0xa0]), Err(AuthDataError::EmptyCredentialId));
        assert_eq!(
            attested(1024, &[0; 1100]),
            Err(AuthDataError::CredentialIdTooLong(1024))
        );
        assert_eq!(
            attested(0xffff, &[0; 8]),
            Err(AuthDataError::CredentialIdTooLong(0xffff))
        );
        assert_eq!(
            attested(100, &[0; 99]),
            Err(AuthDataError::CredentialIdBeyondBuffer {
                declared: 100,
                available: 99
            })
        );
        // The credential ID takes everything: no key left.
        assert_eq!(
            attested(4, &[1, 2, 3, 4]),
            Err(AuthDataError::CredentialPublicKey(DecodeError::Empty))
        );
        // A key that is not a map.
        assert_eq!(
            attested(1, &[0xaa, 0x80]),
            Err(AuthDataError::CredentialPublicKey(
                DecodeError::UnexpectedType {
                    field: "credentialPublicKey",
                    expected: "map"
                }
            ))
        );
        // A key with label 3 twice.
        assert_eq!(
            attested(1, &[0xaa, 0xa2, 0x03, 0x26, 0x03, 0x27]),
            Err(AuthDataError::CredentialPublicKey(
                DecodeError::DuplicateKey("credentialPublicKey")
            ))
        );
        // A 1023-byte ID is the largest allowed.
        let mut max = vec![0x11; 1023];
        max.push(0xa0);
        let data = attested(1023, &max).unwrap();
        assert_eq!(
            data.attested_credential_data()
                .unwrap()
                .credential_id()
                .len(),
            1023
        );
        // An unknown key type still parses; only the typed view fails.
        let akp = [0xa3, 0x01, 0x07, 0x03, 0x38, 0x2f, 0x20, 0x42, 0xab, 0xcd];
        let data = attested(1, &[&[0x99][..], &akp].concat()).unwrap();
        let attested = data.attested_credential_data().unwrap();
        assert_eq!(attested.algorithm(), Some(CoseAlgorithm::MlDsa44));
        assert_eq!(
            attested.cose_key(),
            Err(DecodeError::OutOfRange("COSE_Key kty"))
        );
    }

    #[test]
    fn builds_what_it_parses() {
        let key = p256_key();
        let data = AuthenticatorData::with_attested_credential(
            rp_id_hash(),
            Flags::UP | Flags::ED,
            0,
            [0; 16],
            &[0x5a; 64],
            &key,
        )
        .unwrap();
        assert_eq!(data.flags().bits(), 0x41);
        assert_eq!(data.as_bytes().len(), 37 + 16 + 2 + 64 + 77);
        assert_eq!(data.as_bytes()[53..55], [0x00, 0x40]);
        let attested = data.attested_credential_data().unwrap();
        assert_eq!(attested.cose_key().unwrap(), key);
        assert_eq!(AuthenticatorData::parse(data.as_bytes()).unwrap(), data);

        assert_eq!(
            AuthenticatorData::with_attested_credential(
                rp_id_hash(),
                Flags::UP,
                0,
                [0; 16],
                &[0; 1024],
                &key
            ),
            Err(AuthDataError::CredentialIdTooLong(1024))
        );
        assert_eq!(
            AuthenticatorData::with_attested_credential(
                rp_id_hash(),
                Flags::BS,
                0,
                [0; 16],
                &[1],
                &key
            ),
            Err(AuthDataError::InconsistentFlags(0x50))
        );
    }
}
