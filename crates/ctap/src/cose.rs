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
}
