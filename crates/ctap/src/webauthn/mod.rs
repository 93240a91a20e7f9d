//! WebAuthn objects built from CTAP responses (WebAuthn Level 3).
//!
//! - [`client_data`]: `clientDataJSON` in the spec's exact serialization, and its hash;
//! - [`auth_data`]: the authenticator data parser (WebAuthn L3 §6.1);
//! - [`attestation`]: the attestation object (WebAuthn L3 §6.5) built from a makeCredential
//!   response or, via [`crate::u2f`], from a U2F registration.

pub mod attestation;
pub mod auth_data;
pub mod client_data;

use std::collections::HashSet;

use crate::cbor::{DecodeError, Value};

/// Nesting limit for CBOR embedded in authenticator data. COSE keys are flat maps and
/// extension outputs nest at most two levels; deeper input is hostile.
const RECURSION_LIMIT: usize = 16;

/// Decodes the CBOR item at the start of `bytes` and returns it with the number of bytes it
/// occupied, so that whatever follows (extensions after the credential public key) can be
/// located. Non-minimal integer and length encodings are accepted, as in [`crate::cbor`].
pub(crate) fn decode_prefix(bytes: &[u8]) -> Result<(Value, usize), DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, RECURSION_LIMIT)
        .map_err(|_| DecodeError::Malformed)?;
    // The reader only ever advances, so what is left is a suffix of `bytes`.
    Ok((value, bytes.len() - reader.len()))
}

/// Whether a decoded CBOR map has the same key twice (RFC 8949 §5.6: such a map is invalid).
///
/// Keys are compared by their re-encoding, which is the same for every spelling of one value,
/// in linear time so that a hostile map with many keys costs nothing quadratic.
pub(crate) fn has_duplicate_keys(entries: &[(Value, Value)]) -> bool {
    let mut seen = HashSet::with_capacity(entries.len());
    entries.iter().any(|(key, _)| {
        let mut encoded = Vec::new();
        // A key that cannot be re-encoded cannot be compared; it came from the decoder, so
        // this does not happen, and treating it as unique errs on the lenient side.
        ciborium::into_writer(key, &mut encoded).is_ok() && !seen.insert(encoded)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decode_prefix_measures_the_first_item() {
        assert_eq!(decode_prefix(&[0x01, 0x02]), Ok((Value::from(1), 1)));
        // {1: h'aabb'} then two unrelated bytes.
        let bytes = [0xa1, 0x01, 0x42, 0xaa, 0xbb, 0xff, 0xff];
        let (value, used) = decode_prefix(&bytes).unwrap();
        assert_eq!(used, 5);
        assert_eq!(
            value,
            Value::Map(vec![(Value::from(1), Value::Bytes(vec![0xaa, 0xbb]))])
        );
        // Non-minimal length h'aabb' as 59 0002: accepted, and all four header bytes counted.
        let (value, used) = decode_prefix(&[0x59, 0x00, 0x02, 0xaa, 0xbb, 0x00]).unwrap();
        assert_eq!((value, used), (Value::Bytes(vec![0xaa, 0xbb]), 5));
    }

    #[test]
    fn decode_prefix_rejects_hostile_input() {
        assert_eq!(decode_prefix(&[]), Err(DecodeError::Empty));
        assert_eq!(decode_prefix(&[0xa1, 0x01]), Err(DecodeError::Malformed));
        // A map announcing 2^32 - 1 entries with none present fails without allocating.
        assert_eq!(
            decode_prefix(&[0xba, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(
            decode_prefix(&[0x5b, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Err(DecodeError::Malformed)
        );
        assert_eq!(decode_prefix(&[0x81; 40]), Err(DecodeError::Malformed));
        // A lone break code.
        assert_eq!(decode_prefix(&[0xff]), Err(DecodeError::Malformed));
    }

    #[test]
    fn duplicate_keys_are_found_across_spellings() {
        let map = |k1: Value, k2: Value| vec![(k1, Value::Null), (k2, Value::Null)];
        assert!(!has_duplicate_keys(&map(Value::from(1), Value::from(-1))));
        assert!(has_duplicate_keys(&map(Value::from("a"), Value::from("a"))));
        assert!(has_duplicate_keys(&map(Value::from(3), Value::from(3))));
        assert!(!has_duplicate_keys(&map(Value::from("3"), Value::from(3))));
        // 0x18 0x03 (a non-minimal 3) decodes to the same value as 0x03.
        let (spelled, _) = decode_prefix(&[0xa2, 0x03, 0xf6, 0x18, 0x03, 0xf6]).unwrap();
        let Value::Map(entries) = spelled else {
            panic!("not a map")
        };
        assert!(has_duplicate_keys(&entries));
    }
}
