//! A software P-256 authenticator for tests: the WebAuthn registration a browser and a
//! security key would produce together (clientDataJSON, authenticator data, attestation
//! object in the `none`, `packed` self-attestation or `fido-u2f` format).
//!
//! It stands in for the CTAP core plus a virtual key until those can drive the end-to-end
//! tests; everything that needs "a registration" goes through [`SoftAuthenticator`], so that
//! swap touches one place. It is not an authenticator anyone should trust: keys live in memory
//! and the attestation certificate is self-signed.

use std::str::FromStr as _;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ciborium::Value;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{DerSignature, SigningKey};
use p256::pkcs8::EncodePublicKey as _;
use rand::RngCore as _;
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256};
use x509_cert::builder::{Builder as _, CertificateBuilder, Profile};
use x509_cert::der::Encode as _;
use x509_cert::name::Name;
use x509_cert::serial_number::SerialNumber;
use x509_cert::spki::SubjectPublicKeyInfoOwned;
use x509_cert::time::Validity;

/// Authenticator data flag: user present (WebAuthn §6.1).
pub const FLAG_UP: u8 = 0x01;
/// Authenticator data flag: user verified.
pub const FLAG_UV: u8 = 0x04;
/// Authenticator data flag: attested credential data included.
pub const FLAG_AT: u8 = 0x40;
/// COSE algorithm ES256.
pub const COSE_ES256: i64 = -7;

/// The attestation statement format to produce (WebAuthn §8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttestationFormat {
    /// `none`: empty statement.
    None,
    /// `packed` self-attestation: signed with the credential key itself.
    PackedSelf,
    /// `fido-u2f`: signed by an attestation key with a (self-signed) certificate.
    FidoU2f,
}

/// What to register. [`Default`] gives a well-formed request that callers adjust, including
/// deliberately wrong values for negative tests.
#[derive(Debug, Clone)]
pub struct Request {
    /// RP ID whose SHA-256 goes into the authenticator data.
    pub rp_id: String,
    /// Challenge bytes from the creation options.
    pub challenge: Vec<u8>,
    /// Origin written into clientDataJSON.
    pub origin: String,
    /// `type` of clientDataJSON.
    pub client_data_type: String,
    /// Authenticator data flags (besides AT, which is always set).
    pub flags: u8,
    /// Attestation statement format.
    pub format: AttestationFormat,
    /// COSE algorithm written into the credential public key (the key is always P-256).
    pub alg: i64,
    /// Derive the credential key and id from this seed instead of at random, so that a test
    /// can present the same credential twice.
    pub credential_seed: Option<[u8; 32]>,
}

impl Default for Request {
    fn default() -> Self {
        Self {
            rp_id: String::new(),
            challenge: Vec::new(),
            origin: String::new(),
            client_data_type: "webauthn.create".to_owned(),
            flags: FLAG_UP | FLAG_UV,
            format: AttestationFormat::PackedSelf,
            alg: COSE_ES256,
            credential_seed: None,
        }
    }
}

/// The outcome of a registration, in the raw byte forms LoginID's `creationResult` carries.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Credential id.
    pub credential_id: Vec<u8>,
    /// CBOR attestation object.
    pub attestation_object: Vec<u8>,
    /// The exact clientDataJSON bytes.
    pub client_data_json: Vec<u8>,
    /// Authenticator data.
    pub authenticator_data: Vec<u8>,
    /// Credential public key, DER SubjectPublicKeyInfo.
    pub public_key_spki: Vec<u8>,
}

/// A software authenticator with one AAGUID and a fido-u2f attestation key.
#[derive(Debug)]
pub struct SoftAuthenticator {
    aaguid: [u8; 16],
    attestation_key: SigningKey,
    attestation_cert: Vec<u8>,
    sign_count: u32,
}

/// Errors building the attestation certificate.
#[derive(Debug, thiserror::Error)]
#[error("could not build the soft authenticator's attestation certificate: {0}")]
pub struct CertificateError(String);

impl SoftAuthenticator {
    /// A new authenticator with fresh keys.
    pub fn new() -> Result<Self, CertificateError> {
        let mut aaguid = [0_u8; 16];
        OsRng.fill_bytes(&mut aaguid);
        let attestation_key = SigningKey::random(&mut OsRng);
        let attestation_cert = self_signed_certificate(&attestation_key)?;
        Ok(Self {
            aaguid,
            attestation_key,
            attestation_cert,
            sign_count: 0,
        })
    }

    /// Makes a credential for `request` (WebAuthn §6.3.2 plus the client's clientDataJSON).
    pub fn make_credential(&mut self, request: &Request) -> Registration {
        let client_data_json = client_data_json(
            &request.client_data_type,
            &request.challenge,
            &request.origin,
        );
        let client_data_hash = Sha256::digest(&client_data_json);
        let seeded = request
            .credential_seed
            .and_then(|seed| Some((SigningKey::from_slice(&seed).ok()?, seed)));
        let (credential_key, credential_id) = match seeded {
            Some((key, seed)) => (key, Sha256::digest(seed).to_vec()),
            None => {
                let mut id = vec![0_u8; 32];
                OsRng.fill_bytes(&mut id);
                (SigningKey::random(&mut OsRng), id)
            }
        };
        let point = credential_key.verifying_key().to_encoded_point(false);
        let (x, y) = (
            point.x().map(|x| x.to_vec()).unwrap_or_default(),
            point.y().map(|y| y.to_vec()).unwrap_or_default(),
        );
        let cose_key = cbor(&Value::Map(vec![
            (Value::from(1), Value::from(2)),
            (Value::from(3), Value::from(request.alg)),
            (Value::from(-1), Value::from(1)),
            (Value::from(-2), Value::Bytes(x.clone())),
            (Value::from(-3), Value::Bytes(y.clone())),
        ]));
        self.sign_count = self.sign_count.wrapping_add(1);
        let aaguid = match request.format {
            AttestationFormat::FidoU2f => [0_u8; 16],
            _ => self.aaguid,
        };
        let rp_id_hash = Sha256::digest(request.rp_id.as_bytes());
        let mut auth_data = Vec::new();
        auth_data.extend_from_slice(&rp_id_hash);
        auth_data.push(request.flags | FLAG_AT);
        auth_data.extend_from_slice(&self.sign_count.to_be_bytes());
        auth_data.extend_from_slice(&aaguid);
        let id_len = u16::try_from(credential_id.len()).unwrap_or(u16::MAX);
        auth_data.extend_from_slice(&id_len.to_be_bytes());
        auth_data.extend_from_slice(&credential_id);
        auth_data.extend_from_slice(&cose_key);

        let att_stmt = match request.format {
            AttestationFormat::None => Value::Map(Vec::new()),
            AttestationFormat::PackedSelf => {
                let mut signed = auth_data.clone();
                signed.extend_from_slice(&client_data_hash);
                let sig: DerSignature = credential_key.sign(&signed);
                Value::Map(vec![
                    (Value::from("alg"), Value::from(request.alg)),
                    (Value::from("sig"), Value::Bytes(sig.as_bytes().to_vec())),
                ])
            }
            AttestationFormat::FidoU2f => {
                // FIDO U2F raw message §4.3: 0x00 || appParam || challengeParam || keyHandle ||
                // userPublicKey.
                let mut signed = vec![0x00];
                signed.extend_from_slice(&rp_id_hash);
                signed.extend_from_slice(&client_data_hash);
                signed.extend_from_slice(&credential_id);
                signed.push(0x04);
                signed.extend_from_slice(&x);
                signed.extend_from_slice(&y);
                let sig: DerSignature = self.attestation_key.sign(&signed);
                Value::Map(vec![
                    (Value::from("sig"), Value::Bytes(sig.as_bytes().to_vec())),
                    (
                        Value::from("x5c"),
                        Value::Array(vec![Value::Bytes(self.attestation_cert.clone())]),
                    ),
                ])
            }
        };
        let fmt = match request.format {
            AttestationFormat::None => "none",
            AttestationFormat::PackedSelf => "packed",
            AttestationFormat::FidoU2f => "fido-u2f",
        };
        let attestation_object = cbor(&Value::Map(vec![
            (Value::from("fmt"), Value::from(fmt)),
            (Value::from("attStmt"), att_stmt),
            (Value::from("authData"), Value::Bytes(auth_data.clone())),
        ]));
        let public_key_spki = credential_key
            .verifying_key()
            .to_public_key_der()
            .map(|d| d.as_bytes().to_vec())
            .unwrap_or_default();
        Registration {
            credential_id,
            attestation_object,
            client_data_json,
            authenticator_data: auth_data,
            public_key_spki,
        }
    }
}

/// clientDataJSON as a browser serializes it (WebAuthn §5.8.1.1): `type`, `challenge`
/// (unpadded base64url), `origin`, `crossOrigin`.
pub fn client_data_json(type_: &str, challenge: &[u8], origin: &str) -> Vec<u8> {
    // Members in the order browsers write them; strings escaped by serde_json.
    let string = |s: &str| serde_json::Value::from(s).to_string();
    format!(
        r#"{{"type":{},"challenge":{},"origin":{},"crossOrigin":false}}"#,
        string(type_),
        string(&URL_SAFE_NO_PAD.encode(challenge)),
        string(origin)
    )
    .into_bytes()
}

fn cbor(value: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    // INVARIANT: serializing a ciborium Value into a Vec cannot fail (no IO, no maps with
    // non-serializable keys).
    #[allow(clippy::expect_used)]
    ciborium::into_writer(value, &mut out).expect("CBOR into a Vec");
    out
}

fn self_signed_certificate(key: &SigningKey) -> Result<Vec<u8>, CertificateError> {
    let err = |e: &dyn std::fmt::Display| CertificateError(e.to_string());
    let subject =
        Name::from_str("CN=passkeyd soft authenticator,O=passkeyd,C=ZZ").map_err(|e| err(&e))?;
    let spki = SubjectPublicKeyInfoOwned::from_key(*key.verifying_key()).map_err(|e| err(&e))?;
    let validity = Validity::from_now(Duration::from_secs(365 * 24 * 3600)).map_err(|e| err(&e))?;
    let serial = SerialNumber::new(&[0x01]).map_err(|e| err(&e))?;
    let builder = CertificateBuilder::new(Profile::Root, serial, validity, subject, spki, key)
        .map_err(|e| err(&e))?;
    let cert = builder.build::<DerSignature>().map_err(|e| err(&e))?;
    cert.to_der().map_err(|e| err(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn client_data_json_is_browser_shaped() {
        let json = client_data_json("webauthn.create", &[0xfb, 0xff], "https://a.example");
        assert_eq!(
            std::str::from_utf8(&json).unwrap(),
            r#"{"type":"webauthn.create","challenge":"-_8","origin":"https://a.example","crossOrigin":false}"#
        );
    }

    #[test]
    fn authenticator_data_layout() {
        let mut authenticator = SoftAuthenticator::new().unwrap();
        let reg = authenticator.make_credential(&Request {
            rp_id: "example.com".into(),
            challenge: vec![7; 32],
            origin: "https://example.com".into(),
            ..Request::default()
        });
        let ad = &reg.authenticator_data;
        assert_eq!(&ad[..32], Sha256::digest(b"example.com").as_slice());
        assert_eq!(ad[32], FLAG_UP | FLAG_UV | FLAG_AT);
        assert_eq!(&ad[33..37], &[0, 0, 0, 1]);
        assert_eq!(&ad[53..55], &[0, 32]);
        assert_eq!(&ad[55..87], reg.credential_id.as_slice());
        let object: Value = ciborium::from_reader(reg.attestation_object.as_slice()).unwrap();
        let map = object.as_map().unwrap();
        assert_eq!(map[0].1.as_text(), Some("packed"));
    }
}
