//! CTAP2 canonical CBOR encoding and lenient decoding (CTAP 2.2 §8 "Message Encoding").
//!
//! Requests are built as [`Value`] trees and encoded with [`to_canonical_vec`], which applies
//! the CTAP2 canonical form: definite lengths, shortest integer encodings (ciborium does both)
//! and map keys sorted by major type, then encoded length, then bytewise. Authenticators must
//! not rely on that for responses, and real keys do not always emit it, so [`from_slice`]
//! accepts any well-formed CBOR and the typed readers ([`IntMap`], [`TextMap`]) skip members
//! they do not know instead of failing.

use std::cmp::Ordering;
use std::collections::BTreeMap;

pub use ciborium::Value;
use zeroize::{Zeroize, Zeroizing};

/// Nesting limit for decoding. CTAP structures nest at most four levels (getInfo → certifications
/// → ...); anything deeper is hostile and would only cost stack.
const RECURSION_LIMIT: usize = 16;

/// Why a value could not be encoded as CTAP2 canonical CBOR.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum EncodeError {
    /// CTAP2 canonical CBOR forbids floating-point numbers and tags in requests.
    #[error("CTAP2 canonical CBOR cannot carry {0}")]
    Forbidden(&'static str),
    /// Two members of one map have the same key.
    #[error("duplicate map key")]
    DuplicateKey,
    /// The CBOR serializer failed (it cannot for in-memory output, but its error is typed).
    #[error("CBOR serialization failed")]
    Serialize,
}

/// Why bytes from an authenticator could not be decoded.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum DecodeError {
    /// Not well-formed CBOR, or nested deeper than any CTAP structure.
    #[error("malformed CBOR")]
    Malformed,
    /// Well-formed CBOR followed by extra bytes.
    #[error("{0} trailing bytes after the CBOR item")]
    TrailingBytes(usize),
    /// The response had no body where one was required.
    #[error("empty response body")]
    Empty,
    /// A member had the wrong CBOR type.
    #[error("{field}: expected {expected}")]
    UnexpectedType {
        /// The spec's name of the member.
        field: &'static str,
        /// What the spec requires.
        expected: &'static str,
    },
    /// A required member is absent.
    #[error("missing required member {0}")]
    Missing(&'static str),
    /// A member's value is outside the range the spec allows.
    #[error("{0}: value out of range")]
    OutOfRange(&'static str),
    /// A map contains the same key twice (CTAP 2.2 §8: keys are unique).
    #[error("{0}: duplicate map key")]
    DuplicateKey(&'static str),
}

/// Encodes `value` in CTAP2 canonical form.
pub fn to_canonical_vec(value: &Value) -> Result<Vec<u8>, EncodeError> {
    let mut canonical = value.clone();
    canonicalize(&mut canonical)?;
    let mut out = Vec::new();
    ciborium::into_writer(&canonical, &mut out).map_err(|_| EncodeError::Serialize)?;
    Ok(out)
}

/// Encodes `value` in CTAP2 canonical form, appending to `out`, then wipes every byte and text
/// string of `value`, on success and on error: requests carry encrypted PINs and auth params,
/// and the tree is the last copy of them outside the caller's zeroizing buffers. Sorting
/// happens in place, so no other copy is made; `out` should have its final capacity reserved,
/// since a growing `Vec` leaves its old buffers behind unwiped.
pub fn encode_and_wipe(value: &mut Value, out: &mut Zeroizing<Vec<u8>>) -> Result<(), EncodeError> {
    let result = canonicalize(value).and_then(|()| {
        ciborium::into_writer(&*value, &mut **out).map_err(|_| EncodeError::Serialize)
    });
    wipe(value);
    result
}

/// Overwrites the contents of every byte and text string in `value`.
fn wipe(value: &mut Value) {
    match value {
        Value::Bytes(b) => b.zeroize(),
        Value::Text(t) => t.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Map(entries) => entries.iter_mut().for_each(|(k, v)| {
            wipe(k);
            wipe(v);
        }),
        Value::Tag(_, inner) => wipe(inner),
        _ => {}
    }
}

/// Decodes exactly one CBOR item from `bytes`, rejecting trailing bytes.
pub fn from_slice(bytes: &[u8]) -> Result<Value, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut reader = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut reader, RECURSION_LIMIT)
        .map_err(|_| DecodeError::Malformed)?;
    if reader.is_empty() {
        Ok(value)
    } else {
        Err(DecodeError::TrailingBytes(reader.len()))
    }
}

/// Checks the body of a response that the spec defines as empty (authenticatorReset,
/// authenticatorSelection, clientPIN setPIN/changePIN).
///
/// Accepts no bytes at all, which is what keys send, and also a CBOR map whose members are
/// ignored, since some keys answer with `{}` instead. Anything else is reported: a key that
/// sends a non-map here is not speaking CTAP2.
pub fn empty_body(bytes: &[u8], context: &'static str) -> Result<(), DecodeError> {
    if bytes.is_empty() {
        return Ok(());
    }
    match from_slice(bytes)? {
        Value::Map(_) => Ok(()),
        _ => Err(DecodeError::UnexpectedType {
            field: context,
            expected: "empty body or map",
        }),
    }
}

/// Sorts every map in `value`, in place, into CTAP2 canonical key order and rejects what
/// canonical CBOR forbids.
fn canonicalize(value: &mut Value) -> Result<(), EncodeError> {
    match value {
        Value::Float(_) => Err(EncodeError::Forbidden("floating-point numbers")),
        Value::Tag(..) => Err(EncodeError::Forbidden("tags")),
        Value::Array(items) => items.iter_mut().try_for_each(canonicalize),
        Value::Map(entries) => {
            for (k, v) in entries.iter_mut() {
                canonicalize(k)?;
                canonicalize(v)?;
            }
            // Keys are member labels, never secrets: encoding them for the sort is fine. Maps
            // in requests have at most a dozen members, so encoding per comparison is cheap
            // and keeps every entry in place (nothing is dropped unwiped on an error path).
            let encoded = |k: &Value| {
                let mut bytes = Vec::new();
                ciborium::into_writer(k, &mut bytes).map(|()| bytes)
            };
            let mut keys = Vec::with_capacity(entries.len());
            for (k, _) in entries.iter() {
                keys.push(encoded(k).map_err(|_| EncodeError::Serialize)?);
            }
            let mut order: Vec<usize> = (0..entries.len()).collect();
            order.sort_by(|&a, &b| canonical_key_order(&keys[a], &keys[b]));
            if order.windows(2).any(|w| keys[w[0]] == keys[w[1]]) {
                return Err(EncodeError::DuplicateKey);
            }
            apply_permutation(entries, &order);
            Ok(())
        }
        _ => Ok(()),
    }
}

/// Reorders `items` so that position `i` holds the element that was at `order[i]`, by swaps
/// (no element is copied or dropped).
fn apply_permutation<T>(items: &mut [T], order: &[usize]) {
    let mut order = order.to_vec();
    for i in 0..items.len() {
        // Follow the cycle through i, swapping elements into place.
        let mut current = i;
        while order[current] != i {
            let next = order[current];
            items.swap(current, next);
            order[current] = current;
            current = next;
        }
        order[current] = current;
    }
}

/// CTAP 2.2 §8 key order: lower major type first, then shorter encoding, then bytewise.
///
/// This differs from RFC 7049 §3.9 ("length first") only when keys of different major types
/// have different lengths, e.g. `24` sorts before `-1` here.
fn canonical_key_order(a: &[u8], b: &[u8]) -> Ordering {
    let major = |bytes: &[u8]| bytes.first().map(|b| b >> 5);
    major(a)
        .cmp(&major(b))
        .then(a.len().cmp(&b.len()))
        .then_with(|| a.cmp(b))
}

/// The members of the map `value` whose keys `key` accepts; other keys are skipped, a
/// repeated key is an error (CTAP 2.2 §8: keys are unique).
fn members<K: Ord>(
    value: Value,
    context: &'static str,
    key: impl Fn(Value) -> Option<K>,
) -> Result<BTreeMap<K, Value>, DecodeError> {
    let Value::Map(pairs) = value else {
        return Err(DecodeError::UnexpectedType {
            field: context,
            expected: "map",
        });
    };
    let mut entries = BTreeMap::new();
    for (k, v) in pairs {
        if let Some(k) = key(k)
            && entries.insert(k, v).is_some()
        {
            return Err(DecodeError::DuplicateKey(context));
        }
    }
    Ok(entries)
}

/// A decoded CBOR map with integer keys, as used by every CTAP2 command and response.
///
/// Members are taken out by key; members nobody asks for are simply dropped, which is how
/// unknown (newer) members are skipped. Text keys in an integer-keyed map are ignored too.
#[derive(Debug, Default)]
pub struct IntMap {
    entries: BTreeMap<i64, Value>,
    context: &'static str,
}

impl IntMap {
    /// Interprets `value` as an integer-keyed map; `context` names the structure in errors.
    pub fn new(value: Value, context: &'static str) -> Result<Self, DecodeError> {
        let entries = members(value, context, |key| {
            key.as_integer().and_then(|i| i64::try_from(i).ok())
        })?;
        Ok(Self { entries, context })
    }

    /// Decodes `bytes` as an integer-keyed map.
    pub fn from_slice(bytes: &[u8], context: &'static str) -> Result<Self, DecodeError> {
        Self::new(from_slice(bytes)?, context)
    }

    /// Removes and returns the raw value under `key`.
    pub fn take(&mut self, key: i64) -> Option<Value> {
        self.entries.remove(&key)
    }

    /// Takes the member under `key` and converts it with `convert`, or reports it
    /// [`DecodeError::Missing`] under the spec name `field`.
    pub fn required<T>(
        &mut self,
        key: i64,
        field: &'static str,
        convert: impl FnOnce(Value, &'static str) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        convert(self.take(key).ok_or(DecodeError::Missing(field))?, field)
    }

    /// Takes the member under `key`, if present, and converts it with `convert`.
    pub fn optional<T>(
        &mut self,
        key: i64,
        field: &'static str,
        convert: impl FnOnce(Value, &'static str) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        self.take(key).map(|v| convert(v, field)).transpose()
    }

    /// Whether any member is left (e.g. unknown members a caller may want to log).
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The keys not taken yet.
    pub fn remaining_keys(&self) -> impl Iterator<Item = i64> + '_ {
        self.entries.keys().copied()
    }

    /// The structure name given at construction.
    pub fn context(&self) -> &'static str {
        self.context
    }
}

/// A decoded CBOR map with text keys (options, entities, extensions, attestation objects).
#[derive(Debug, Default)]
pub struct TextMap {
    entries: BTreeMap<String, Value>,
    context: &'static str,
}

impl TextMap {
    /// Interprets `value` as a text-keyed map; non-text keys are ignored.
    pub fn new(value: Value, context: &'static str) -> Result<Self, DecodeError> {
        let entries = members(value, context, |key| match key {
            Value::Text(key) => Some(key),
            _ => None,
        })?;
        Ok(Self { entries, context })
    }

    /// Removes and returns the raw value under `key`.
    pub fn take(&mut self, key: &str) -> Option<Value> {
        self.entries.remove(key)
    }

    /// Takes the member under `key` and converts it with `convert`, or reports it
    /// [`DecodeError::Missing`] under the spec name `field`.
    pub fn required<T>(
        &mut self,
        key: &str,
        field: &'static str,
        convert: impl FnOnce(Value, &'static str) -> Result<T, DecodeError>,
    ) -> Result<T, DecodeError> {
        convert(self.take(key).ok_or(DecodeError::Missing(field))?, field)
    }

    /// Takes the member under `key`, if present, and converts it with `convert`.
    pub fn optional<T>(
        &mut self,
        key: &str,
        field: &'static str,
        convert: impl FnOnce(Value, &'static str) -> Result<T, DecodeError>,
    ) -> Result<Option<T>, DecodeError> {
        self.take(key).map(|v| convert(v, field)).transpose()
    }

    /// Iterates over the members not taken yet.
    pub fn into_entries(self) -> impl Iterator<Item = (String, Value)> {
        self.entries.into_iter()
    }

    /// Whether no member is left.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The structure name given at construction.
    pub fn context(&self) -> &'static str {
        self.context
    }
}

/// Typed conversions from a [`Value`], naming the member in the error.
///
/// `field` is the spec's name of the member, used only for error messages.
pub mod conv {
    use super::{DecodeError, IntMap, TextMap, Value};

    fn wrong(field: &'static str, expected: &'static str) -> DecodeError {
        DecodeError::UnexpectedType { field, expected }
    }

    /// A byte string.
    pub fn bytes(v: Value, field: &'static str) -> Result<Vec<u8>, DecodeError> {
        match v {
            Value::Bytes(b) => Ok(b),
            _ => Err(wrong(field, "byte string")),
        }
    }

    /// A byte string of exactly `N` bytes.
    pub fn byte_array<const N: usize>(
        v: Value,
        field: &'static str,
    ) -> Result<[u8; N], DecodeError> {
        bytes(v, field)?
            .try_into()
            .map_err(|_| DecodeError::OutOfRange(field))
    }

    /// A text string.
    pub fn text(v: Value, field: &'static str) -> Result<String, DecodeError> {
        match v {
            Value::Text(s) => Ok(s),
            _ => Err(wrong(field, "text string")),
        }
    }

    /// A boolean.
    pub fn boolean(v: Value, field: &'static str) -> Result<bool, DecodeError> {
        match v {
            Value::Bool(b) => Ok(b),
            _ => Err(wrong(field, "boolean")),
        }
    }

    /// An integer that fits `T`.
    pub fn int<T: TryFrom<i128>>(v: Value, field: &'static str) -> Result<T, DecodeError> {
        match v {
            Value::Integer(i) => {
                T::try_from(i128::from(i)).map_err(|_| DecodeError::OutOfRange(field))
            }
            _ => Err(wrong(field, "integer")),
        }
    }

    /// An array, element type left to the caller.
    pub fn array(v: Value, field: &'static str) -> Result<Vec<Value>, DecodeError> {
        match v {
            Value::Array(a) => Ok(a),
            _ => Err(wrong(field, "array")),
        }
    }

    /// An array whose every element converts with `each`.
    pub fn array_of<T>(
        v: Value,
        field: &'static str,
        each: impl Fn(Value, &'static str) -> Result<T, DecodeError>,
    ) -> Result<Vec<T>, DecodeError> {
        array(v, field)?
            .into_iter()
            .map(|e| each(e, field))
            .collect()
    }

    /// A text-keyed map.
    pub fn text_map(v: Value, field: &'static str) -> Result<TextMap, DecodeError> {
        TextMap::new(v, field)
    }

    /// An integer-keyed map.
    pub fn int_map(v: Value, field: &'static str) -> Result<IntMap, DecodeError> {
        IntMap::new(v, field)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    #[test]
    fn sorts_integer_keys_by_major_type_then_length() {
        // COSE key order from CTAP 2.2 §6.5.6: 1, 3, -1, -2, -3.
        let v = Value::Map(vec![
            (Value::from(-3), Value::from(0)),
            (Value::from(1), Value::from(2)),
            (Value::from(-1), Value::from(1)),
            (Value::from(3), Value::from(-25)),
            (Value::from(-2), Value::from(0)),
        ]);
        assert_eq!(
            hex(&to_canonical_vec(&v).unwrap()),
            "a50102033818200121002200"
        );
    }

    #[test]
    fn sorts_text_keys_length_first() {
        // {"type": "public-key", "alg": -7} → "alg" sorts before "type".
        let v = Value::Map(vec![
            (Value::from("type"), Value::from("public-key")),
            (Value::from("alg"), Value::from(-7)),
        ]);
        assert_eq!(
            hex(&to_canonical_vec(&v).unwrap()),
            "a263616c672664747970656a7075626c69632d6b6579"
        );
    }

    #[test]
    fn ctap_order_differs_from_rfc7049_for_mixed_major_types() {
        let v = Value::Map(vec![
            (Value::from(-1), Value::Null),
            (Value::from(24), Value::Null),
        ]);
        assert_eq!(hex(&to_canonical_vec(&v).unwrap()), "a21818f620f6");
    }

    #[test]
    fn sorts_nested_maps_and_uses_shortest_integers() {
        let inner = Value::Map(vec![
            (Value::from("uv"), Value::from(true)),
            (Value::from("rk"), Value::from(true)),
        ]);
        let v = Value::Array(vec![
            inner,
            Value::from(500),
            Value::from(23),
            Value::from(24),
        ]);
        assert_eq!(
            hex(&to_canonical_vec(&v).unwrap()),
            "84a262726bf5627576f51901f4171818"
        );
    }

    #[test]
    fn permutation_is_applied_by_swaps() {
        let mut items = vec!['a', 'b', 'c', 'd', 'e'];
        apply_permutation(&mut items, &[3, 0, 4, 1, 2]);
        assert_eq!(items, ['d', 'a', 'e', 'b', 'c']);
    }

    #[test]
    fn encode_and_wipe_matches_to_canonical_vec_and_clears_strings() {
        let v = Value::Map(vec![
            (Value::from(5), Value::Bytes(vec![0xAA; 16])),
            (Value::from(1), Value::Array(vec![Value::from("pin")])),
        ]);
        let mut out = Zeroizing::new(vec![0x06]);
        let mut secret = v.clone();
        encode_and_wipe(&mut secret, &mut out).unwrap();
        let mut expected = vec![0x06];
        expected.extend(to_canonical_vec(&v).unwrap());
        assert_eq!(*out, expected);
        // Sorted in place (key 1 first), then every string emptied.
        let Value::Map(entries) = &secret else {
            panic!()
        };
        assert_eq!(
            entries[0],
            (
                Value::from(1),
                Value::Array(vec![Value::Text(String::new())])
            )
        );
        assert_eq!(entries[1], (Value::from(5), Value::Bytes(Vec::new())));

        // An error (here a duplicate key) still wipes.
        let mut dup = Value::Map(vec![
            (Value::from(1), Value::Bytes(vec![1; 4])),
            (Value::from(1), Value::Bytes(vec![2; 4])),
        ]);
        let mut out = Zeroizing::new(Vec::new());
        assert_eq!(
            encode_and_wipe(&mut dup, &mut out),
            Err(EncodeError::DuplicateKey)
        );
        let Value::Map(entries) = &dup else { panic!() };
        assert!(entries.iter().all(|(_, v)| *v == Value::Bytes(Vec::new())));
    }

    #[test]
    fn rejects_floats_tags_and_duplicates() {
        assert_eq!(
            to_canonical_vec(&Value::Float(1.0)),
            Err(EncodeError::Forbidden("floating-point numbers"))
        );
        assert!(matches!(
            to_canonical_vec(&Value::Tag(24, Box::new(Value::Null))),
            Err(EncodeError::Forbidden(_))
        ));
        let dup = Value::Map(vec![
            (Value::from(1), Value::Null),
            (Value::from(1), Value::Null),
        ]);
        assert_eq!(to_canonical_vec(&dup), Err(EncodeError::DuplicateKey));
    }

    #[test]
    fn decoding_is_lenient_about_order_but_strict_about_form() {
        // Non-canonical order {2: h'', 1: 0} decodes fine.
        let mut map = IntMap::from_slice(&[0xa2, 0x02, 0x40, 0x01, 0x00], "t").unwrap();
        assert_eq!(map.take(1), Some(Value::from(0)));
        assert_eq!(
            conv::bytes(map.take(2).unwrap(), "two").unwrap(),
            Vec::<u8>::new()
        );
        assert!(map.is_empty());

        assert_eq!(from_slice(&[]), Err(DecodeError::Empty));
        assert_eq!(from_slice(&[0xa1, 0x01]), Err(DecodeError::Malformed));
        assert_eq!(
            from_slice(&[0x00, 0x00]),
            Err(DecodeError::TrailingBytes(1))
        );
        // A byte string claiming 2^32 bytes with 1 present must fail, not allocate.
        assert_eq!(
            from_slice(&[0x5a, 0xff, 0xff, 0xff, 0xff, 0x00]),
            Err(DecodeError::Malformed)
        );
        // Nesting deeper than any CTAP structure.
        assert_eq!(from_slice(&[0x81; 64]), Err(DecodeError::Malformed));
        assert_eq!(
            IntMap::from_slice(&[0xa2, 0x01, 0x00, 0x01, 0x01], "t").unwrap_err(),
            DecodeError::DuplicateKey("t")
        );
        assert!(matches!(
            IntMap::from_slice(&[0x80], "t"),
            Err(DecodeError::UnexpectedType { .. })
        ));
    }

    #[test]
    fn required_and_optional_members() {
        // {1: 5, 2: "x"}
        let mut map = IntMap::from_slice(&[0xa2, 0x01, 0x05, 0x02, 0x61, 0x78], "t").unwrap();
        assert_eq!(map.required(1, "one", conv::int::<u8>), Ok(5));
        assert_eq!(
            map.required(1, "one", conv::int::<u8>),
            Err(DecodeError::Missing("one"))
        );
        assert_eq!(map.optional(3, "three", conv::int::<u8>), Ok(None));
        assert_eq!(
            map.optional(2, "two", conv::int::<u8>),
            Err(DecodeError::UnexpectedType {
                field: "two",
                expected: "integer"
            })
        );
        // {"a": true}
        let v = from_slice(&[0xa1, 0x61, 0x61, 0xf5]).unwrap();
        let mut map = TextMap::new(v, "t").unwrap();
        assert_eq!(map.optional("b", "b", conv::boolean), Ok(None));
        assert_eq!(map.required("a", "a", conv::boolean), Ok(true));
        assert_eq!(
            map.required("a", "a", conv::boolean),
            Err(DecodeError::Missing("a"))
        );
    }

    #[test]
    fn empty_bodies() {
        assert_eq!(empty_body(&[], "r"), Ok(()));
        assert_eq!(empty_body(&[0xa0], "r"), Ok(()));
        assert_eq!(empty_body(&[0xa1, 0x01, 0x02], "r"), Ok(()));
        assert_eq!(
            empty_body(&[0xf6], "r"),
            Err(DecodeError::UnexpectedType {
                field: "r",
                expected: "empty body or map"
            })
        );
        assert_eq!(empty_body(&[0xa1], "r"), Err(DecodeError::Malformed));
        assert_eq!(
            empty_body(&[0xa0, 0xa0], "r"),
            Err(DecodeError::TrailingBytes(1))
        );
    }

    #[test]
    fn conversions_name_the_member() {
        assert_eq!(
            conv::text(Value::from(1), "versions"),
            Err(DecodeError::UnexpectedType {
                field: "versions",
                expected: "text string"
            })
        );
        assert_eq!(
            conv::int::<u8>(Value::from(300), "n"),
            Err(DecodeError::OutOfRange("n"))
        );
        assert_eq!(
            conv::byte_array::<2>(Value::Bytes(vec![1]), "a"),
            Err(DecodeError::OutOfRange("a"))
        );
    }
}
