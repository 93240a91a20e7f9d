//! COSE keys as they appear in CTAP (RFC 9052 §7, RFC 9053; CTAP 2.2 §6.5.6).
//!
//! Credential public keys in authenticator data and the ECDH key-agreement keys of the PIN/UV
//! auth protocols are COSE_Key maps. Only the key types CTAP authenticators emit are modelled:
//! EC2 (P-256/P-384/P-521), OKP (Ed25519) and RSA.

use crate::cbor::{DecodeError, IntMap, Value, conv};

/// COSE algorithm identifiers used by CTAP (IANA "COSE Algorithms").
pub mod alg {
    /// ECDSA with SHA-256 on P-256.
    pub const ES256: i64 = -7;
    /// EdDSA (Ed25519).
    pub const EDDSA: i64 = -8;
    /// ECDH-ES with HKDF-SHA-256, the PIN/UV protocols' key-agreement algorithm.
    pub const ECDH_ES_HKDF_256: i64 = -25;
    /// ECDSA with SHA-384 on P-384.
    pub const ES384: i64 = -35;
    /// ECDSA with SHA-512 on P-521.
    pub const ES512: i64 = -36;
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    pub const RS256: i64 = -257;
}

macro_rules! cose_algorithms {
    ($($(#[$doc:meta])* $variant:ident = $value:literal,)*) => {
        /// A COSE algorithm identifier as a type (IANA "COSE Algorithms" registry).
        ///
        /// The conversion from `i64` is total: identifiers this crate does not name are kept in
        /// [`CoseAlgorithm::Unknown`], so a credential made with an algorithm newer than this
        /// crate is still reported faithfully. `From<i64>` never yields `Unknown` for a named
        /// identifier; a hand-made `Unknown(-7)` is not equal to [`CoseAlgorithm::Es256`], so
        /// compare through `i64` when a value did not come from `From<i64>`.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum CoseAlgorithm {
            $($(#[$doc])* $variant,)*
            /// Any other identifier.
            Unknown(i64),
        }

        impl From<i64> for CoseAlgorithm {
            fn from(id: i64) -> Self {
                match id {
                    $($value => Self::$variant,)*
                    other => Self::Unknown(other),
                }
            }
        }

        impl From<CoseAlgorithm> for i64 {
            fn from(algorithm: CoseAlgorithm) -> Self {
                match algorithm {
                    $(CoseAlgorithm::$variant => $value,)*
                    CoseAlgorithm::Unknown(id) => id,
                }
            }
        }
    };
}

cose_algorithms! {
    /// -7: ECDSA with SHA-256 (RFC 9053 §2.1), on P-256 in WebAuthn.
    Es256 = -7,
    /// -8: EdDSA (RFC 9053 §2.2), Ed25519 in WebAuthn.
    EdDsa = -8,
    /// -9: ECDSA using P-256 and SHA-256, fully specified (RFC 9864).
    Esp256 = -9,
    /// -19: EdDSA using Ed25519, fully specified (RFC 9864).
    Ed25519 = -19,
    /// -25: ECDH-ES with HKDF-SHA-256 (RFC 9053 §6.3.1), the PIN/UV key agreement.
    EcdhEsHkdf256 = -25,
    /// -35: ECDSA with SHA-384 (RFC 9053 §2.1).
    Es384 = -35,
    /// -36: ECDSA with SHA-512 (RFC 9053 §2.1).
    Es512 = -36,
    /// -37: RSASSA-PSS with SHA-256 (RFC 8230 §2).
    Ps256 = -37,
    /// -38: RSASSA-PSS with SHA-384 (RFC 8230 §2).
    Ps384 = -38,
    /// -39: RSASSA-PSS with SHA-512 (RFC 8230 §2).
    Ps512 = -39,
    /// -47: ECDSA using secp256k1 and SHA-256 (RFC 8812 §3.2).
    Es256K = -47,
    /// -48: ML-DSA-44 (FIPS 204; IANA COSE registry).
    MlDsa44 = -48,
    /// -49: ML-DSA-65 (FIPS 204; IANA COSE registry).
    MlDsa65 = -49,
    /// -50: ML-DSA-87 (FIPS 204; IANA COSE registry).
    MlDsa87 = -50,
    /// -51: ECDSA using P-384 and SHA-384, fully specified (RFC 9864).
    Esp384 = -51,
    /// -52: ECDSA using P-521 and SHA-512, fully specified (RFC 9864).
    Esp512 = -52,
    /// -53: EdDSA using Ed448, fully specified (RFC 9864).
    Ed448 = -53,
    /// -257: RSASSA-PKCS1-v1_5 with SHA-256 (RFC 8812 §2).
    Rs256 = -257,
    /// -258: RSASSA-PKCS1-v1_5 with SHA-384 (RFC 8812 §2).
    Rs384 = -258,
    /// -259: RSASSA-PKCS1-v1_5 with SHA-512 (RFC 8812 §2).
    Rs512 = -259,
    /// -65535: RSASSA-PKCS1-v1_5 with SHA-1 (RFC 8812 §2; deprecated, still sent by old TPMs).
    Rs1 = -65535,
}

/// COSE elliptic curve identifiers (RFC 9053 §7.1).
pub mod curve {
    /// NIST P-256.
    pub const P256: i64 = 1;
    /// NIST P-384.
    pub const P384: i64 = 2;
    /// NIST P-521.
    pub const P521: i64 = 3;
    /// Ed25519 (OKP).
    pub const ED25519: i64 = 6;
}

// COSE_Key labels (RFC 9052 §7.1, RFC 9053 §7).
const KTY: i64 = 1;
const ALG: i64 = 3;
const CRV_OR_N: i64 = -1;
const X_OR_E: i64 = -2;
const Y: i64 = -3;

const KTY_OKP: i64 = 1;
const KTY_EC2: i64 = 2;
const KTY_RSA: i64 = 3;

/// Why a COSE key could not be expressed as a DER SubjectPublicKeyInfo.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SpkiError {
    /// The EC2 or OKP curve has no SubjectPublicKeyInfo mapping here.
    #[error("COSE curve {0} is not supported for SubjectPublicKeyInfo")]
    UnsupportedCurve(i64),
    /// A coordinate or key has the wrong size for its curve.
    #[error("{field} is {actual} bytes, the curve needs {expected}")]
    KeyLength {
        /// Which member (`x`, `y`).
        field: &'static str,
        /// The size the curve requires.
        expected: usize,
        /// The size found.
        actual: usize,
    },
    /// An RSA modulus or exponent is empty or zero.
    #[error("RSA {0} is zero")]
    ZeroInteger(&'static str),
    /// The DER encoder refused the structure (a length beyond its 256 MiB limit).
    #[error("DER encoding failed")]
    Der,
}

/// OIDs for SubjectPublicKeyInfo algorithm identifiers.
mod oid {
    use der::asn1::ObjectIdentifier;

    /// id-ecPublicKey (RFC 5480 §2.1.1).
    pub(super) const EC_PUBLIC_KEY: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.10045.2.1");
    /// secp256r1 (RFC 5480 §2.1.1.1).
    pub(super) const SECP256R1: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.10045.3.1.7");
    /// secp384r1 (RFC 5480 §2.1.1.1).
    pub(super) const SECP384R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.34");
    /// secp521r1 (RFC 5480 §2.1.1.1).
    pub(super) const SECP521R1: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.132.0.35");
    /// id-Ed25519 (RFC 8410 §3).
    pub(super) const ED25519: ObjectIdentifier = ObjectIdentifier::new_unwrap("1.3.101.112");
    /// rsaEncryption (RFC 8017 Appendix C, RFC 3279 §2.3.1).
    pub(super) const RSA_ENCRYPTION: ObjectIdentifier =
        ObjectIdentifier::new_unwrap("1.2.840.113549.1.1.1");
}

/// `RSAPublicKey ::= SEQUENCE { modulus INTEGER, publicExponent INTEGER }` (RFC 8017 §A.1.1).
///
/// `UintRef` does the INTEGER rules: redundant leading zeros are stripped and a 0x00 is
/// prepended when the high bit is set, so the value stays positive.
struct RsaPublicKey<'a> {
    modulus: der::asn1::UintRef<'a>,
    public_exponent: der::asn1::UintRef<'a>,
}

impl der::FixedTag for RsaPublicKey<'_> {
    const TAG: der::Tag = der::Tag::Sequence;
}

impl der::EncodeValue for RsaPublicKey<'_> {
    fn value_len(&self) -> der::Result<der::Length> {
        use der::Encode;
        self.modulus.encoded_len()? + self.public_exponent.encoded_len()?
    }

    fn encode_value(&self, writer: &mut impl der::Writer) -> der::Result<()> {
        use der::Encode;
        self.modulus.encode(writer)?;
        self.public_exponent.encode(writer)
    }
}

/// A public key in COSE_Key form.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CoseKey {
    /// `kty` 2: an elliptic-curve key with x and y coordinates.
    Ec2 {
        /// `alg` (3), if present.
        alg: Option<i64>,
        /// `crv` (-1).
        crv: i64,
        /// `x` (-2), big-endian.
        x: Vec<u8>,
        /// `y` (-3), big-endian.
        y: Vec<u8>,
    },
    /// `kty` 1: an octet key pair (Ed25519).
    Okp {
        /// `alg` (3), if present.
        alg: Option<i64>,
        /// `crv` (-1).
        crv: i64,
        /// `x` (-2), the public key bytes.
        x: Vec<u8>,
    },
    /// `kty` 3: an RSA key.
    Rsa {
        /// `alg` (3), if present.
        alg: Option<i64>,
        /// `n` (-1), the modulus, big-endian.
        n: Vec<u8>,
        /// `e` (-2), the public exponent, big-endian.
        e: Vec<u8>,
    },
}

impl CoseKey {
    /// Parses a COSE_Key map. Unknown labels are ignored.
    pub fn from_value(value: Value) -> Result<Self, DecodeError> {
        let mut map = IntMap::new(value, "COSE_Key")?;
        let kty: i64 = conv::int(
            map.take(KTY).ok_or(DecodeError::Missing("COSE_Key kty"))?,
            "COSE_Key kty",
        )?;
        let alg = map
            .take(ALG)
            .map(|v| conv::int(v, "COSE_Key alg"))
            .transpose()?;
        let mut required = |label, name| map.take(label).ok_or(DecodeError::Missing(name));
        Ok(match kty {
            KTY_EC2 => Self::Ec2 {
                alg,
                crv: conv::int(required(CRV_OR_N, "COSE_Key crv")?, "COSE_Key crv")?,
                x: conv::bytes(required(X_OR_E, "COSE_Key x")?, "COSE_Key x")?,
                y: conv::bytes(required(Y, "COSE_Key y")?, "COSE_Key y")?,
            },
            KTY_OKP => Self::Okp {
                alg,
                crv: conv::int(required(CRV_OR_N, "COSE_Key crv")?, "COSE_Key crv")?,
                x: conv::bytes(required(X_OR_E, "COSE_Key x")?, "COSE_Key x")?,
            },
            KTY_RSA => Self::Rsa {
                alg,
                n: conv::bytes(required(CRV_OR_N, "COSE_Key n")?, "COSE_Key n")?,
                e: conv::bytes(required(X_OR_E, "COSE_Key e")?, "COSE_Key e")?,
            },
            _ => return Err(DecodeError::OutOfRange("COSE_Key kty")),
        })
    }

    /// The COSE_Key map, ready for canonical encoding.
    pub fn to_value(&self) -> Value {
        let mut m = Vec::with_capacity(5);
        let alg = match self {
            Self::Ec2 { alg, .. } | Self::Okp { alg, .. } | Self::Rsa { alg, .. } => *alg,
        };
        let kty = match self {
            Self::Ec2 { .. } => KTY_EC2,
            Self::Okp { .. } => KTY_OKP,
            Self::Rsa { .. } => KTY_RSA,
        };
        m.push((Value::from(KTY), Value::from(kty)));
        if let Some(alg) = alg {
            m.push((Value::from(ALG), Value::from(alg)));
        }
        match self {
            Self::Ec2 { crv, x, y, .. } => {
                m.push((Value::from(CRV_OR_N), Value::from(*crv)));
                m.push((Value::from(X_OR_E), Value::Bytes(x.clone())));
                m.push((Value::from(Y), Value::Bytes(y.clone())));
            }
            Self::Okp { crv, x, .. } => {
                m.push((Value::from(CRV_OR_N), Value::from(*crv)));
                m.push((Value::from(X_OR_E), Value::Bytes(x.clone())));
            }
            Self::Rsa { n, e, .. } => {
                m.push((Value::from(CRV_OR_N), Value::Bytes(n.clone())));
                m.push((Value::from(X_OR_E), Value::Bytes(e.clone())));
            }
        }
        Value::Map(m)
    }

    /// The `alg` label, if present.
    pub fn alg(&self) -> Option<i64> {
        match self {
            Self::Ec2 { alg, .. } | Self::Okp { alg, .. } | Self::Rsa { alg, .. } => *alg,
        }
    }

    /// An EC2 P-256 COSE key for `key` with the given `alg`.
    pub fn from_p256(key: &p256::PublicKey, alg: i64) -> Self {
        use p256::elliptic_curve::sec1::ToEncodedPoint;
        let point = key.to_encoded_point(false);
        // INVARIANT: an uncompressed encoding of a valid (non-identity) point has both coordinates.
        let (x, y) = match (point.x(), point.y()) {
            (Some(x), Some(y)) => (x.to_vec(), y.to_vec()),
            _ => (Vec::new(), Vec::new()),
        };
        Self::Ec2 {
            alg: Some(alg),
            crv: curve::P256,
            x,
            y,
        }
    }

    /// The P-256 point of an EC2 P-256 key, validated to lie on the curve.
    pub fn to_p256(&self) -> Result<p256::PublicKey, DecodeError> {
        let Self::Ec2 {
            crv: curve::P256,
            x,
            y,
            ..
        } = self
        else {
            return Err(DecodeError::OutOfRange("COSE_Key crv"));
        };
        if x.len() != 32 || y.len() != 32 {
            return Err(DecodeError::OutOfRange("COSE_Key x/y"));
        }
        let mut sec1 = Vec::with_capacity(65);
        sec1.push(0x04);
        sec1.extend_from_slice(x);
        sec1.extend_from_slice(y);
        p256::PublicKey::from_sec1_bytes(&sec1)
            .map_err(|_| DecodeError::OutOfRange("COSE_Key point"))
    }
}

impl CoseKey {
    /// The `alg` label as a typed [`CoseAlgorithm`], if present.
    pub fn algorithm(&self) -> Option<CoseAlgorithm> {
        self.alg().map(CoseAlgorithm::from)
    }

    /// The key as a DER `SubjectPublicKeyInfo` (RFC 5280 §4.1.2.7), the form WebAuthn's
    /// `getPublicKey()` returns.
    ///
    /// - EC2 P-256/P-384/P-521: id-ecPublicKey with the named curve, uncompressed point
    ///   (RFC 5480). Coordinates must have the curve's field size; the point is not checked to
    ///   lie on the curve (use [`CoseKey::to_p256`] for that).
    /// - OKP Ed25519: id-Ed25519 with absent parameters and the 32-byte key (RFC 8410).
    /// - RSA: rsaEncryption with NULL parameters and `RSAPublicKey { n, e }` (RFC 8017).
    pub fn to_spki_der(&self) -> Result<Vec<u8>, SpkiError> {
        use der::Encode;
        use der::asn1::{AnyRef, BitStringRef, UintRef};
        use spki::{AlgorithmIdentifierRef, SubjectPublicKeyInfoRef};

        let encode = |algorithm: AlgorithmIdentifierRef<'_>, key: &[u8]| {
            SubjectPublicKeyInfoRef {
                algorithm,
                subject_public_key: BitStringRef::from_bytes(key).map_err(|_| SpkiError::Der)?,
            }
            .to_der()
            .map_err(|_| SpkiError::Der)
        };
        let exact = |field, bytes: &[u8], expected| {
            if bytes.len() == expected {
                Ok(())
            } else {
                Err(SpkiError::KeyLength {
                    field,
                    expected,
                    actual: bytes.len(),
                })
            }
        };

        match self {
            Self::Ec2 { crv, x, y, .. } => {
                let (curve_oid, size) = match *crv {
                    curve::P256 => (&oid::SECP256R1, 32),
                    curve::P384 => (&oid::SECP384R1, 48),
                    curve::P521 => (&oid::SECP521R1, 66),
                    other => return Err(SpkiError::UnsupportedCurve(other)),
                };
                exact("x", x, size)?;
                exact("y", y, size)?;
                let mut point = Vec::with_capacity(1 + 2 * size);
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                let algorithm = AlgorithmIdentifierRef {
                    oid: oid::EC_PUBLIC_KEY,
                    parameters: Some(AnyRef::from(curve_oid)),
                };
                encode(algorithm, &point)
            }
            Self::Okp { crv, x, .. } => {
                if *crv != curve::ED25519 {
                    return Err(SpkiError::UnsupportedCurve(*crv));
                }
                exact("x", x, 32)?;
                // RFC 8410 §3: the parameters MUST be absent.
                let algorithm = AlgorithmIdentifierRef {
                    oid: oid::ED25519,
                    parameters: None,
                };
                encode(algorithm, x)
            }
            Self::Rsa { n, e, .. } => {
                let integer = |bytes, name| match UintRef::new(bytes) {
                    // `UintRef` keeps a single zero byte for an all-zero input.
                    Ok(value) if value.as_bytes().iter().any(|&b| b != 0) => Ok(value),
                    Ok(_) => Err(SpkiError::ZeroInteger(name)),
                    Err(_) => Err(SpkiError::Der),
                };
                let key = RsaPublicKey {
                    modulus: integer(n, "n")?,
                    public_exponent: integer(e, "e")?,
                }
                .to_der()
                .map_err(|_| SpkiError::Der)?;
                // RFC 3279 §2.3.1: the parameters field MUST have ASN.1 type NULL.
                let algorithm = AlgorithmIdentifierRef {
                    oid: oid::RSA_ENCRYPTION,
                    parameters: Some(AnyRef::NULL),
                };
                encode(algorithm, &key)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cbor;

    #[test]
    fn round_trips_an_ec2_key_canonically() {
        let secret = p256::SecretKey::from_slice(&[7; 32]).unwrap();
        let key = CoseKey::from_p256(&secret.public_key(), alg::ES256);
        let bytes = cbor::to_canonical_vec(&key.to_value()).unwrap();
        // {1: 2, 3: -7, -1: 1, -2: h'<32>', -3: h'<32>'} in CTAP canonical order.
        assert_eq!(
            bytes[..10],
            [0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21, 0x58, 0x20]
        );
        assert_eq!(bytes[42..45], [0x22, 0x58, 0x20]);
        assert_eq!(bytes.len(), 77);
        let decoded = CoseKey::from_value(cbor::from_slice(&bytes).unwrap()).unwrap();
        assert_eq!(decoded, key);
        assert_eq!(decoded.to_p256().unwrap(), secret.public_key());
    }

    #[test]
    fn rejects_points_off_the_curve_and_wrong_types() {
        let key = CoseKey::Ec2 {
            alg: None,
            crv: curve::P256,
            x: vec![1; 32],
            y: vec![2; 32],
        };
        assert!(key.to_p256().is_err());
        let okp = CoseKey::Okp {
            alg: Some(alg::EDDSA),
            crv: curve::ED25519,
            x: vec![0; 32],
        };
        assert!(okp.to_p256().is_err());
        let no_kty = cbor::from_slice(&[0xa1, 0x03, 0x26]).unwrap();
        assert_eq!(
            CoseKey::from_value(no_kty),
            Err(DecodeError::Missing("COSE_Key kty"))
        );
        let bad_kty = cbor::from_slice(&[0xa1, 0x01, 0x09]).unwrap();
        assert_eq!(
            CoseKey::from_value(bad_kty),
            Err(DecodeError::OutOfRange("COSE_Key kty"))
        );
    }

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn algorithm_conversion_is_total_and_round_trips() {
        for id in (-70_000..=70_000).chain([i64::MIN, i64::MAX]) {
            assert_eq!(i64::from(CoseAlgorithm::from(id)), id);
        }
        assert_eq!(CoseAlgorithm::from(alg::ES256), CoseAlgorithm::Es256);
        assert_eq!(CoseAlgorithm::from(alg::EDDSA), CoseAlgorithm::EdDsa);
        assert_eq!(
            CoseAlgorithm::from(alg::ECDH_ES_HKDF_256),
            CoseAlgorithm::EcdhEsHkdf256
        );
        assert_eq!(CoseAlgorithm::from(alg::ES384), CoseAlgorithm::Es384);
        assert_eq!(CoseAlgorithm::from(alg::ES512), CoseAlgorithm::Es512);
        assert_eq!(CoseAlgorithm::from(alg::RS256), CoseAlgorithm::Rs256);
        assert_eq!(CoseAlgorithm::from(-37), CoseAlgorithm::Ps256);
        assert_eq!(CoseAlgorithm::from(-48), CoseAlgorithm::MlDsa44);
        assert_eq!(CoseAlgorithm::from(-65535), CoseAlgorithm::Rs1);
        assert_eq!(CoseAlgorithm::from(-1000), CoseAlgorithm::Unknown(-1000));
        assert_eq!(CoseAlgorithm::from(0), CoseAlgorithm::Unknown(0));

        let okp = CoseKey::Okp {
            alg: Some(alg::EDDSA),
            crv: curve::ED25519,
            x: vec![0; 32],
        };
        assert_eq!(okp.algorithm(), Some(CoseAlgorithm::EdDsa));
        let rsa = CoseKey::Rsa {
            alg: None,
            n: vec![1],
            e: vec![3],
        };
        assert_eq!(rsa.algorithm(), None);
    }

    #[test]
    fn p256_spki_matches_the_p256_crate() {
        use p256::pkcs8::{DecodePublicKey, EncodePublicKey};
        for seed in [1u8, 7, 0x42, 0xfe] {
            let public = p256::SecretKey::from_slice(&[seed; 32])
                .unwrap()
                .public_key();
            let ours = CoseKey::from_p256(&public, alg::ES256)
                .to_spki_der()
                .unwrap();
            let theirs = public.to_public_key_der().unwrap();
            assert_eq!(ours, theirs.as_bytes());
            assert_eq!(p256::PublicKey::from_public_key_der(&ours).unwrap(), public);
        }
        let key = CoseKey::Ec2 {
            alg: None,
            crv: curve::P256,
            x: vec![0x11; 32],
            y: vec![0x22; 32],
        };
        let der = key.to_spki_der().unwrap();
        assert_eq!(
            hex(&der[..27]),
            "3059301306072a8648ce3d020106082a8648ce3d03010703420004"
        );
        assert_eq!(der.len(), 91);
    }

    #[test]
    fn p384_and_p521_spki_use_the_named_curves() {
        let p384 = CoseKey::Ec2 {
            alg: None,
            crv: curve::P384,
            x: vec![0xaa; 48],
            y: vec![0xbb; 48],
        };
        let der = p384.to_spki_der().unwrap();
        assert_eq!(
            hex(&der[..24]),
            "3076301006072a8648ce3d020106052b8104002203620004"
        );
        assert_eq!(der.len(), 120);
        assert_eq!(der[24..72], [0xaa; 48]);
        assert_eq!(der[72..], [0xbb; 48]);

        let p521 = CoseKey::Ec2 {
            alg: None,
            crv: curve::P521,
            x: vec![0x01; 66],
            y: vec![0x02; 66],
        };
        let der = p521.to_spki_der().unwrap();
        assert_eq!(
            hex(&der[..26]),
            "30819b301006072a8648ce3d020106052b810400230381860004"
        );
        assert_eq!(der.len(), 158);
    }

    #[test]
    fn ed25519_spki_has_the_rfc8410_prefix() {
        let x: Vec<u8> = (0..32).collect();
        let key = CoseKey::Okp {
            alg: Some(alg::EDDSA),
            crv: curve::ED25519,
            x: x.clone(),
        };
        let der = key.to_spki_der().unwrap();
        assert_eq!(hex(&der[..12]), "302a300506032b6570032100");
        assert_eq!(der[12..], x[..]);
    }

    #[test]
    fn rsa_spki_encodes_integers_minimally_and_positive() {
        // n = 0xC35A given with two redundant leading zeros: the zeros go, and a single 0x00
        // comes back because the high bit of 0xC3 is set. e = 65537 with a redundant zero.
        let key = CoseKey::Rsa {
            alg: Some(alg::RS256),
            n: vec![0x00, 0x00, 0xc3, 0x5a],
            e: vec![0x00, 0x01, 0x00, 0x01],
        };
        // SEQUENCE {
        //   SEQUENCE { OID 1.2.840.113549.1.1.1, NULL }
        //   BIT STRING (0 unused bits) { SEQUENCE { INTEGER 00c35a, INTEGER 010001 } }
        // }
        assert_eq!(
            hex(&key.to_spki_der().unwrap()),
            "301e300d06092a864886f70d0101010500030d00300a020300c35a0203010001"
        );
        // High bit clear: no padding byte.
        let key = CoseKey::Rsa {
            alg: None,
            n: vec![0x7f, 0x01],
            e: vec![0x03],
        };
        assert_eq!(
            hex(&key.to_spki_der().unwrap()),
            "301b300d06092a864886f70d0101010500030a00300702027f01020103"
        );
        // A 2048-bit modulus with the high bit set has the familiar 33-byte prefix.
        let mut n = vec![0xc0];
        n.extend([0x5a; 255]);
        let der = CoseKey::Rsa {
            alg: None,
            n,
            e: vec![0x01, 0x00, 0x01],
        }
        .to_spki_der()
        .unwrap();
        assert_eq!(
            hex(&der[..33]),
            "30820122300d06092a864886f70d01010105000382010f003082010a0282010100"
        );
        assert_eq!(der[33], 0xc0);
        assert_eq!(hex(&der[der.len() - 5..]), "0203010001");
        assert_eq!(der.len(), 294);
    }

    #[test]
    fn spki_rejects_what_it_cannot_express() {
        let short = CoseKey::Ec2 {
            alg: None,
            crv: curve::P256,
            x: vec![1; 31],
            y: vec![2; 32],
        };
        assert_eq!(
            short.to_spki_der(),
            Err(SpkiError::KeyLength {
                field: "x",
                expected: 32,
                actual: 31
            })
        );
        let long_y = CoseKey::Ec2 {
            alg: None,
            crv: curve::P384,
            x: vec![1; 48],
            y: vec![2; 49],
        };
        assert_eq!(
            long_y.to_spki_der(),
            Err(SpkiError::KeyLength {
                field: "y",
                expected: 48,
                actual: 49
            })
        );
        let secp256k1 = CoseKey::Ec2 {
            alg: None,
            crv: 8,
            x: vec![1; 32],
            y: vec![2; 32],
        };
        assert_eq!(secp256k1.to_spki_der(), Err(SpkiError::UnsupportedCurve(8)));
        let x25519 = CoseKey::Okp {
            alg: None,
            crv: 4,
            x: vec![1; 32],
        };
        assert_eq!(x25519.to_spki_der(), Err(SpkiError::UnsupportedCurve(4)));
        let ed_short = CoseKey::Okp {
            alg: None,
            crv: curve::ED25519,
            x: vec![1; 33],
        };
        assert!(matches!(
            ed_short.to_spki_der(),
            Err(SpkiError::KeyLength { .. })
        ));
        let zero_n = CoseKey::Rsa {
            alg: None,
            n: vec![0, 0],
            e: vec![1, 0, 1],
        };
        assert_eq!(zero_n.to_spki_der(), Err(SpkiError::ZeroInteger("n")));
        let empty_e = CoseKey::Rsa {
            alg: None,
            n: vec![0xc3],
            e: vec![],
        };
        assert_eq!(empty_e.to_spki_der(), Err(SpkiError::ZeroInteger("e")));
    }
}
