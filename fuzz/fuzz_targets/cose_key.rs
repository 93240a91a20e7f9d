#![no_main]
//! COSE keys from CBOR (a credential public key, a PIN key agreement key) and their DER
//! SubjectPublicKeyInfo form, which the daemon sends to LoginID as `publicKey`.
//!
//! Properties: a parsed key survives its canonical encoding unchanged and that encoding is no
//! longer than the input; the SubjectPublicKeyInfo reads back (with an independent DER parser)
//! as the algorithm and key bytes of the COSE key, with a bounded size, and is refused only
//! for the reasons documented; a P-256 point that validates converts back to the same
//! coordinates and to the same SubjectPublicKeyInfo as p256's own.

use ctap::cbor;
use ctap::cose::{CoseKey, SpkiError, curve};
use der::{Decode, Encode, Reader};
use libfuzzer_sys::fuzz_target;
use p256::pkcs8::DecodePublicKey;
use spki::SubjectPublicKeyInfoRef;

const EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const ED25519: &str = "1.3.101.112";
const RSA_ENCRYPTION: &str = "1.2.840.113549.1.1.1";

fn strip_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

fn check_spki(key: &CoseKey, encoded_len: usize) {
    let der = match key.to_spki_der() {
        Ok(der) => der,
        Err(SpkiError::UnsupportedCurve(crv)) => {
            let supported: &[i64] = match key {
                CoseKey::Ec2 { .. } => &[curve::P256, curve::P384, curve::P521],
                CoseKey::Okp { .. } => &[curve::ED25519],
                _ => &[],
            };
            assert!(!supported.contains(&crv), "curve {crv} is supported");
            return;
        }
        Err(SpkiError::KeyLength { .. }) => {
            assert!(!matches!(key, CoseKey::Rsa { .. }));
            return;
        }
        Err(SpkiError::ZeroInteger(_)) => {
            let CoseKey::Rsa { n, e, .. } = key else {
                panic!("ZeroInteger for a non-RSA key");
            };
            assert!(strip_zeros(n).is_empty() || strip_zeros(e).is_empty());
            return;
        }
        Err(other) => panic!("unexpected SPKI error {other:?}"),
    };
    // An algorithm identifier and a BIT STRING header around at most the key's own bytes.
    assert!(
        der.len() <= encoded_len + 48,
        "{} > {encoded_len} + 48",
        der.len()
    );
    let spki = SubjectPublicKeyInfoRef::from_der(&der).expect("our DER reads back");
    assert_eq!(spki.to_der().expect("re-encodes"), der);
    let key_bits = spki.subject_public_key.as_bytes().expect("whole bytes");
    let oid = spki.algorithm.oid.to_string();
    match key {
        CoseKey::Ec2 { x, y, .. } => {
            assert_eq!(oid, EC_PUBLIC_KEY);
            assert!(spki.algorithm.parameters.is_some());
            assert_eq!(key_bits.len(), 1 + x.len() + y.len());
            assert_eq!(key_bits[0], 0x04);
            assert_eq!(&key_bits[1..1 + x.len()], x.as_slice());
            assert_eq!(&key_bits[1 + x.len()..], y.as_slice());
        }
        CoseKey::Okp { x, .. } => {
            assert_eq!(oid, ED25519);
            assert!(spki.algorithm.parameters.is_none());
            assert_eq!(key_bits, x.as_slice());
        }
        CoseKey::Rsa { n, e, .. } => {
            assert_eq!(oid, RSA_ENCRYPTION);
            let mut reader = der::SliceReader::new(key_bits).expect("reader");
            let (n_der, e_der) = reader
                .sequence(|seq| {
                    let n = der::asn1::UintRef::decode(seq)?;
                    let e = der::asn1::UintRef::decode(seq)?;
                    Ok((n, e))
                })
                .expect("RSAPublicKey reads back");
            assert_eq!(n_der.as_bytes(), strip_zeros(n));
            assert_eq!(e_der.as_bytes(), strip_zeros(e));
        }
        _ => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(value) = cbor::from_slice(data) else {
        return;
    };
    let Ok(key) = CoseKey::from_value(value) else {
        return;
    };
    let encoded = cbor::to_canonical_vec(&key.to_value()).expect("a parsed key encodes");
    assert!(
        encoded.len() <= data.len(),
        "{} > {}",
        encoded.len(),
        data.len()
    );
    let back = CoseKey::from_value(cbor::from_slice(&encoded).expect("canonical CBOR decodes"))
        .expect("the canonical form parses");
    assert_eq!(back, key);
    assert_eq!(back.alg(), key.alg());
    let _ = key.algorithm();

    check_spki(&key, encoded.len());

    if let Ok(point) = key.to_p256() {
        let alg = key.alg().unwrap_or(-7);
        let CoseKey::Ec2 { x, y, .. } = CoseKey::from_p256(&point, alg) else {
            panic!("from_p256 is EC2");
        };
        let CoseKey::Ec2 { x: x0, y: y0, .. } = &key else {
            panic!("to_p256 accepted a non-EC2 key");
        };
        assert_eq!((&x, &y), (x0, y0));
        let der = key.to_spki_der().expect("a valid P-256 point has an SPKI");
        assert_eq!(
            p256::PublicKey::from_public_key_der(&der).expect("p256 reads our SPKI"),
            point
        );
    }
});
