//! Attestation material for virtual keys: a generated root CA ("passkeyd virtkey test CA"), a
//! P-256 attestation key and its leaf certificate, written into the firmware's internal
//! filesystem where fido-authenticator looks for them.
//!
//! The material is generated once per process (on the first [`crate::VirtKey::start`]) and then
//! shared by every virtual key of that process, the way one batch attestation certificate is
//! shared by a production batch of real keys (FIDO requires batches of at least 100000). It is
//! never written to disk and is useless outside the process: relying parties in tests trust it by
//! taking the root from [`crate::VirtKey::attestation_ca_der`].
//!
//! fido-authenticator signs U2F registrations with the same key and sends the same certificate
//! (`ctap1::register` uses `Identity::attestation` too), so fido-u2f attestation carries this
//! certificate as well; its P-256 key is what WebAuthn §8.6 requires there.
//!
//! The certificates are built with RustCrypto `x509-cert` (builder feature) and signed with
//! `p256` ECDSA: pure Rust, the same `p256` 0.13 the rest of the workspace uses, no C toolchain
//! and no `ring`/`aws-lc` backend (which `rcgen` would bring in).

use std::{
    str::FromStr,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, SystemTime},
};

use p256::{
    ecdsa::{DerSignature, SigningKey},
    pkcs8::EncodePublicKey as _,
};
use rand::{RngCore as _, rngs::OsRng};
use x509_cert::{
    builder::{Builder as _, CertificateBuilder, Profile},
    der::{
        self, Encode as _, EncodeValue, FixedTag, Length, Tag, Writer, asn1::ObjectIdentifier,
        oid::AssociatedOid,
    },
    ext::AsExtension,
    name::Name,
    serial_number::SerialNumber,
    spki::SubjectPublicKeyInfoOwned,
    time::{Time, Validity},
};

/// The AAGUID every virtual key reports (getInfo 0x03, authenticatorData, and the attestation
/// certificate's id-fido-gen-ce-aaguid extension).
///
/// fido-authenticator 0.3.0 has no AAGUID setting: `state::Identity::attestation` scans the DER
/// of the certificate at `fido/x5c/00` for the extension
/// `06 0B 2B 06 01 04 01 82 E5 1C 01 01 04 04 12 04 10` and takes the 16 bytes after it
/// (falling back to `b"AAGUID0123456789"` without a certificate). The certificate built here
/// carries this value, so firmware and certificate agree by construction.
///
/// A random version-4 UUID generated for this project, `7a3e5c1d-94b2-4f08-a6d1-2c9e0b8f4d63`.
pub const AAGUID: [u8; 16] = [
    0x7a, 0x3e, 0x5c, 0x1d, 0x94, 0xb2, 0x4f, 0x08, 0xa6, 0xd1, 0x2c, 0x9e, 0x0b, 0x8f, 0x4d, 0x63,
];

/// id-fido-gen-ce-aaguid, WebAuthn §8.2.1.
const ID_FIDO_GEN_CE_AAGUID: ObjectIdentifier =
    ObjectIdentifier::new_unwrap("1.3.6.1.4.1.45724.1.1.4");

/// Subject of the generated root. RFC 4514 order (last RDN first in the encoding).
const CA_SUBJECT: &str = "CN=passkeyd virtkey test CA,O=passkeyd,C=US";
/// Subject of the attestation certificate, WebAuthn §8.2.1: C (ISO 3166), O, OU exactly
/// "Authenticator Attestation", CN.
const LEAF_SUBJECT: &str =
    "CN=passkeyd virtkey attestation,OU=Authenticator Attestation,O=passkeyd,C=US";

/// The certificate must fit trussed's certificate store message (`trussed_core::types::Message`,
/// 1024 bytes in trussed 0.2), which `read_certificate` returns it in.
const MAX_CERT_LEN: usize = 1024;

/// Why generating the attestation material failed.
#[derive(Debug, thiserror::Error)]
#[error("generating the attestation certificates failed")]
pub struct AttestationError(#[source] Box<dyn std::error::Error + Send + Sync + 'static>);

impl AttestationError {
    fn new(err: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(err))
    }
}

/// The certificate grew past what trussed's certificate store can hand to the firmware.
#[derive(Debug, thiserror::Error)]
#[error("attestation certificate of {0} bytes exceeds the 1024-byte trussed message")]
struct CertTooLong(usize);

/// The secret scalar did not fit trussed's key material buffer.
#[derive(Debug, thiserror::Error)]
#[error("the attestation key does not fit trussed's key material buffer")]
struct KeyTooLong;

/// Generated attestation material, shared by all virtual keys of the process.
#[derive(Debug)]
pub(crate) struct Attestation {
    /// DER of the self-signed root.
    pub(crate) ca_der: Vec<u8>,
    /// DER of the attestation (leaf) certificate, for `fido/x5c/00`.
    pub(crate) cert_der: Vec<u8>,
    /// The attestation private key in trussed's serialized key format, for `fido/sec/00`.
    pub(crate) key_trussed: Vec<u8>,
}

/// The process-wide attestation material, generated on first use.
pub(crate) fn attestation() -> Result<Arc<Attestation>, AttestationError> {
    static CACHE: Mutex<Option<Arc<Attestation>>> = Mutex::new(None);
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(material) = cache.as_ref() {
        return Ok(Arc::clone(material));
    }
    let material = Arc::new(generate()?);
    *cache = Some(Arc::clone(&material));
    Ok(material)
}

fn generate() -> Result<Attestation, AttestationError> {
    let ca_key = SigningKey::random(&mut OsRng);
    let leaf_key = SigningKey::random(&mut OsRng);
    let ca_name = Name::from_str(CA_SUBJECT).map_err(AttestationError::new)?;
    let leaf_name = Name::from_str(LEAF_SUBJECT).map_err(AttestationError::new)?;
    let now = SystemTime::now();
    // A day of slack for clocks of other hosts that might verify the chain; 20 years is
    // beyond any test run.
    let validity = Validity {
        not_before: Time::try_from(now - Duration::from_secs(24 * 3600))
            .map_err(AttestationError::new)?,
        not_after: Time::try_from(now + Duration::from_secs(20 * 365 * 24 * 3600))
            .map_err(AttestationError::new)?,
    };

    let ca_spki = spki_of(&ca_key)?;
    let ca = CertificateBuilder::new(
        Profile::Root,
        random_serial()?,
        validity,
        ca_name.clone(),
        ca_spki,
        &ca_key,
    )
    .map_err(AttestationError::new)?
    .build::<DerSignature>()
    .map_err(AttestationError::new)?;

    let leaf_spki = spki_of(&leaf_key)?;
    // Profile::Leaf gives basicConstraints CA=false, keyUsage digitalSignature|nonRepudiation,
    // subject and authority key identifiers; the AAGUID extension is added below.
    let mut leaf = CertificateBuilder::new(
        Profile::Leaf {
            issuer: ca_name,
            enable_key_agreement: false,
            enable_key_encipherment: false,
        },
        random_serial()?,
        validity,
        leaf_name,
        leaf_spki,
        &ca_key,
    )
    .map_err(AttestationError::new)?;
    leaf.add_extension(&AaguidExtension(AAGUID))
        .map_err(AttestationError::new)?;
    let leaf = leaf
        .build::<DerSignature>()
        .map_err(AttestationError::new)?;

    let cert_der = leaf.to_der().map_err(AttestationError::new)?;
    if cert_der.len() > MAX_CERT_LEN {
        return Err(AttestationError::new(CertTooLong(cert_der.len())));
    }
    Ok(Attestation {
        ca_der: ca.to_der().map_err(AttestationError::new)?,
        cert_der,
        key_trussed: trussed_p256_secret(&leaf_key)?,
    })
}

fn spki_of(key: &SigningKey) -> Result<SubjectPublicKeyInfoOwned, AttestationError> {
    let der = key
        .verifying_key()
        .to_public_key_der()
        .map_err(AttestationError::new)?;
    SubjectPublicKeyInfoOwned::try_from(der.as_bytes()).map_err(AttestationError::new)
}

/// A positive 16-byte serial without a leading zero byte (RFC 5280 §4.1.2.2: at most 20 octets).
fn random_serial() -> Result<SerialNumber, AttestationError> {
    let mut bytes = [0u8; 16];
    OsRng.fill_bytes(&mut bytes);
    bytes[0] = (bytes[0] & 0x7f) | 0x40;
    SerialNumber::new(&bytes).map_err(AttestationError::new)
}

/// The private key as trussed stores it in its keystore (`trussed::key::Key::serialize`):
/// flags (u16 BE, SENSITIVE: imported, not generated on the device), kind (u16 BE, P256 = 5),
/// then the 32-byte big-endian secret scalar.
fn trussed_p256_secret(key: &SigningKey) -> Result<Vec<u8>, AttestationError> {
    let scalar = key.to_bytes();
    let material = trussed::key::Material::try_from(scalar.as_slice())
        .map_err(|_| AttestationError::new(KeyTooLong))?;
    let key = trussed::key::Key {
        flags: trussed::key::Flags::SENSITIVE,
        kind: trussed::key::Kind::P256,
        material,
    };
    Ok(key.serialize().as_slice().to_vec())
}

/// The id-fido-gen-ce-aaguid extension: extnValue is the DER of an OCTET STRING holding the
/// 16-byte AAGUID; non-critical (WebAuthn §8.2.1), so DER omits the `critical` field, which is
/// also what fido-authenticator's byte scan expects.
struct AaguidExtension([u8; 16]);

impl AssociatedOid for AaguidExtension {
    const OID: ObjectIdentifier = ID_FIDO_GEN_CE_AAGUID;
}

impl FixedTag for AaguidExtension {
    const TAG: Tag = Tag::OctetString;
}

impl EncodeValue for AaguidExtension {
    fn value_len(&self) -> der::Result<Length> {
        Length::try_from(self.0.len())
    }

    fn encode_value(&self, writer: &mut impl Writer) -> der::Result<()> {
        writer.write(&self.0)
    }
}

impl AsExtension for AaguidExtension {
    fn critical(&self, _subject: &Name, _extensions: &[x509_cert::ext::Extension]) -> bool {
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trussed_key_format_matches_keystore_layout() {
        let key = SigningKey::random(&mut OsRng);
        let serialized = trussed_p256_secret(&key).unwrap();
        assert_eq!(serialized.len(), 36);
        assert_eq!(&serialized[..4], &[0x00, 0x02, 0x00, 0x05]);
        assert_eq!(&serialized[4..], key.to_bytes().as_slice());
        let parsed = trussed::key::Key::try_deserialize(&serialized).unwrap();
        assert_eq!(parsed.kind, trussed::key::Kind::P256);
        assert_eq!(parsed.flags, trussed::key::Flags::SENSITIVE);
    }

    #[test]
    fn certificate_carries_the_aaguid_as_the_firmware_scans_for_it() {
        let material = attestation().unwrap();
        let needle = [
            0x06, 0x0b, 0x2b, 0x06, 0x01, 0x04, 0x01, 0x82, 0xe5, 0x1c, 0x01, 0x01, 0x04, 0x04,
            0x12, 0x04, 0x10,
        ];
        let at = material
            .cert_der
            .windows(needle.len())
            .position(|w| w == needle)
            .unwrap();
        assert_eq!(
            &material.cert_der[at + needle.len()..at + needle.len() + 16],
            &AAGUID
        );
        assert!(material.cert_der.len() <= MAX_CERT_LEN);
    }

    #[test]
    fn material_is_generated_once_per_process() {
        let first = attestation().unwrap();
        let second = attestation().unwrap();
        assert!(Arc::ptr_eq(&first, &second));
        assert_ne!(first.ca_der, first.cert_der);
    }
}
