//! CTAP traffic made readable, like a protocol dissector: the engine of `passkeyctl decode`.
//!
//! - [`decode_response`] decodes one CTAP response (status byte first, or bare CBOR) as
//!   getInfo, makeCredential or clientPIN;
//! - [`decode_reports`] reassembles a run of 64-byte CTAPHID reports and decodes the messages
//!   they carry, recognising the CTAP response by its shape;
//! - [`summarize_recording`] gives a one-line summary per event of a recording
//!   ([`crate::device::record`]).
//!
//! The result is a [`Decoded`] tree whose member names are the specification's (`versions`,
//! `aaguid`, `authData`, `pinRetries`...), printed as JSON ([`Decoded::to_json_pretty`]) or as
//! an indented text dump ([`Decoded::to_text`]). It is built by hand from the ctap types (no
//! serde derives in the protocol core) and keeps the specification's member order.
//!
//! Conventions (also in `docs/recording.md`): byte strings are lowercase hex; an AAGUID is
//! UUID text (`1956e5bd-a374-45f1-a814-356403fdbc18`, as in the FIDO Metadata Service); a
//! status is `{code, name}`; secrets and secret-derived values (the encrypted pinUvAuthToken,
//! largeBlobKey, ECDH private keys in recordings) are shown by length only.
//!
//! Every input here is untrusted; decoding never panics and every failure is a typed
//! [`DecodeError`].

use std::collections::BTreeMap;
use std::fmt::Write as _;

use ctap::cbor::{self, Value};
use ctap::command::client_pin;
use ctap::command::get_info;
use ctap::command::make_credential;
use ctap::cose::CoseKey;
use ctap::ctaphid::{
    self, Cid, Command, FramingError, HidErrorCode, KeepaliveStatus, Message, PushOutcome,
    Reassembler,
};
use ctap::iso7816::{CommandApdu, ResponseApdu, StatusWord};
use ctap::status::StatusCode;
use ctap::webauthn::auth_data::{AuthDataError, AuthenticatorData};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};

use crate::device::record::{Direction, EventBody, RecordingFile};

/// Which CTAP response a byte string is (`passkeyctl decode --as`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ResponseKind {
    /// authenticatorGetInfo (CTAP 2.2 §6.4).
    GetInfo,
    /// authenticatorMakeCredential (CTAP 2.2 §6.1).
    MakeCredential,
    /// authenticatorClientPIN (CTAP 2.2 §6.5).
    ClientPin,
}

/// Why bytes could not be decoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The input is not hex.
    #[error("input is not hex")]
    Hex(#[source] hex::FromHexError),
    /// Nothing to decode.
    #[error("no bytes to decode")]
    Empty,
    /// The CBOR body does not decode as the named response.
    #[error("{what} does not decode")]
    Cbor {
        /// The response.
        what: &'static str,
        /// Why.
        #[source]
        source: cbor::DecodeError,
    },
    /// The makeCredential `authData` does not parse.
    #[error("authData does not parse")]
    AuthData(#[source] AuthDataError),
    /// A report of the run is malformed or out of order.
    #[error("report {index} (counting from 0) is not valid CTAPHID")]
    Framing {
        /// Which report.
        index: usize,
        /// Why.
        #[source]
        source: FramingError,
    },
    /// The run ends inside a message.
    #[error("the reports end inside a message on channel {cid}")]
    Incomplete {
        /// The channel.
        cid: Cid,
    },
}

// ---------------------------------------------------------------------------------------------
// The decoded tree
// ---------------------------------------------------------------------------------------------

/// A decoded value: JSON's shapes, plus byte strings (shown as hex) and maps that keep their
/// member order.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum Node {
    /// JSON `null`.
    Null,
    /// A boolean.
    Bool(bool),
    /// An integer (CBOR integers reach from -2^64 to 2^64-1).
    Int(i128),
    /// A floating-point number (CBOR allows them in extension outputs).
    Float(f64),
    /// Text.
    Text(String),
    /// Bytes, shown as lowercase hex.
    Bytes(Vec<u8>),
    /// A list.
    List(Vec<Self>),
    /// Members in order.
    Map(Vec<(String, Self)>),
}

impl Node {
    fn map() -> Self {
        Self::Map(Vec::new())
    }

    /// Appends a member (to a map; anything else is left alone).
    fn push(&mut self, key: &str, value: impl Into<Self>) {
        if let Self::Map(members) = self {
            members.push((key.to_owned(), value.into()));
        }
    }

    /// Appends a member when the value is present.
    fn push_opt<T: Into<Self>>(&mut self, key: &str, value: Option<T>) {
        if let Some(value) = value {
            self.push(key, value);
        }
    }

    /// The member `key` of a map.
    pub fn get(&self, key: &str) -> Option<&Self> {
        match self {
            Self::Map(members) => members.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// As `serde_json::Value` (map order is then serde_json's).
    pub fn to_json(&self) -> serde_json::Value {
        // INVARIANT: serializing a Node cannot fail (no non-string map keys, floats become
        // null when not finite).
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }
}

impl From<bool> for Node {
    fn from(v: bool) -> Self {
        Self::Bool(v)
    }
}

impl From<&str> for Node {
    fn from(v: &str) -> Self {
        Self::Text(v.to_owned())
    }
}

impl From<String> for Node {
    fn from(v: String) -> Self {
        Self::Text(v)
    }
}

macro_rules! int_nodes {
    ($($t:ty),*) => {$(
        impl From<$t> for Node {
            fn from(v: $t) -> Self {
                Self::Int(i128::from(v))
            }
        }
    )*};
}
int_nodes!(u8, u16, u32, u64, i64);

impl From<usize> for Node {
    fn from(v: usize) -> Self {
        Self::Int(i128::try_from(v).unwrap_or(i128::MAX))
    }
}

impl<T: Into<Self>> From<Vec<T>> for Node {
    fn from(v: Vec<T>) -> Self {
        Self::List(v.into_iter().map(Into::into).collect())
    }
}

impl Serialize for Node {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Null => s.serialize_unit(),
            Self::Bool(b) => s.serialize_bool(*b),
            Self::Int(i) => {
                if let Ok(v) = i64::try_from(*i) {
                    s.serialize_i64(v)
                } else if let Ok(v) = u64::try_from(*i) {
                    s.serialize_u64(v)
                } else {
                    s.serialize_str(&i.to_string())
                }
            }
            Self::Float(f) => s.serialize_f64(*f),
            Self::Text(t) => s.serialize_str(t),
            Self::Bytes(b) => s.serialize_str(&hex::encode(b)),
            Self::List(items) => {
                let mut seq = s.serialize_seq(Some(items.len()))?;
                for item in items {
                    seq.serialize_element(item)?;
                }
                seq.end()
            }
            Self::Map(members) => {
                let mut map = s.serialize_map(Some(members.len()))?;
                for (k, v) in members {
                    map.serialize_entry(k, v)?;
                }
                map.end()
            }
        }
    }
}

/// The result of a decode.
#[derive(Clone, Debug, PartialEq)]
pub struct Decoded(pub Node);

impl Decoded {
    /// As `serde_json::Value`.
    pub fn to_json(&self) -> serde_json::Value {
        self.0.to_json()
    }

    /// Pretty-printed JSON, members in the specification's order.
    pub fn to_json_pretty(&self) -> String {
        serde_json::to_string_pretty(&self.0).unwrap_or_default()
    }

    /// An indented text dump.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        match &self.0 {
            Node::Map(members) => text_members(&mut out, members, 0),
            other => {
                out.push_str(&text_scalar(other));
                out.push('\n');
            }
        }
        out
    }
}

/// A `{code, name}` map reads as `NAME (0xCC)` in text.
fn code_name(node: &Node) -> Option<String> {
    let Node::Map(members) = node else {
        return None;
    };
    match members.as_slice() {
        [(c, Node::Int(code)), (n, Node::Text(name))] if c == "code" && n == "name" => {
            let width = if *code > 0xFF { 4 } else { 2 };
            Some(format!("{name} (0x{code:0width$X})"))
        }
        _ => None,
    }
}

fn is_scalar(node: &Node) -> bool {
    !matches!(node, Node::List(_) | Node::Map(_)) || code_name(node).is_some()
}

fn text_scalar(node: &Node) -> String {
    match node {
        Node::Null => "null".into(),
        Node::Bool(b) => b.to_string(),
        Node::Int(i) => i.to_string(),
        Node::Float(f) => f.to_string(),
        Node::Text(t) => t.clone(),
        Node::Bytes(b) if b.is_empty() => "(empty)".into(),
        Node::Bytes(b) => hex::encode(b),
        Node::List(items) if items.iter().all(is_scalar) => {
            let items: Vec<String> = items.iter().map(text_scalar).collect();
            format!("[{}]", items.join(", "))
        }
        Node::Map(members) if members.is_empty() => "{}".into(),
        other => code_name(other).unwrap_or_default(),
    }
}

fn text_members(out: &mut String, members: &[(String, Node)], indent: usize) {
    for (key, value) in members {
        let pad = " ".repeat(indent);
        match value {
            Node::Map(inner) if !inner.is_empty() && code_name(value).is_none() => {
                let _ = writeln!(out, "{pad}{key}:");
                text_members(out, inner, indent + 2);
            }
            Node::List(items) if !items.iter().all(is_scalar) => {
                let _ = writeln!(out, "{pad}{key}:");
                text_items(out, items, indent + 2);
            }
            scalar => {
                let _ = writeln!(out, "{pad}{key}: {}", text_scalar(scalar));
            }
        }
    }
}

fn text_items(out: &mut String, items: &[Node], indent: usize) {
    let pad = " ".repeat(indent);
    for item in items {
        match item {
            Node::Map(members) if !members.is_empty() && code_name(item).is_none() => {
                // "- first: x" then the other members aligned under it.
                let mut block = String::new();
                text_members(&mut block, members, indent + 2);
                let block = block.replacen(&format!("{pad}  "), &format!("{pad}- "), 1);
                out.push_str(&block);
            }
            Node::List(inner) if !inner.iter().all(is_scalar) => {
                let _ = writeln!(out, "{pad}-");
                text_items(out, inner, indent + 2);
            }
            scalar => {
                let _ = writeln!(out, "{pad}- {}", text_scalar(scalar));
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Conversions from the ctap types
// ---------------------------------------------------------------------------------------------

/// A CTAP status byte as `{code, name}` (CTAP 2.2 §8.2).
pub fn status_node(status: StatusCode) -> Node {
    code_name_node(u8::from(status).into(), status.spec_name())
}

fn code_name_node(code: i128, name: &str) -> Node {
    Node::Map(vec![
        ("code".into(), Node::Int(code)),
        ("name".into(), name.into()),
    ])
}

/// Any CBOR value: byte strings as hex, map keys as text (integers in decimal).
pub fn cbor_node(value: &Value) -> Node {
    match value {
        Value::Integer(i) => Node::Int(i128::from(*i)),
        Value::Bytes(b) => Node::Bytes(b.clone()),
        Value::Float(f) => Node::Float(*f),
        Value::Text(t) => Node::Text(t.clone()),
        Value::Bool(b) => Node::Bool(*b),
        Value::Null => Node::Null,
        Value::Tag(tag, inner) => Node::Map(vec![
            ("tag".into(), Node::from(*tag)),
            ("value".into(), cbor_node(inner)),
        ]),
        Value::Array(items) => Node::List(items.iter().map(cbor_node).collect()),
        Value::Map(entries) => Node::Map(
            entries
                .iter()
                .map(|(k, v)| (map_key(k), cbor_node(v)))
                .collect(),
        ),
        _ => Node::Null,
    }
}

fn map_key(key: &Value) -> String {
    match key {
        Value::Text(t) => t.clone(),
        Value::Integer(i) => i128::from(*i).to_string(),
        other => match cbor_node(other) {
            Node::Bytes(b) => hex::encode(b),
            node => node.to_json().to_string(),
        },
    }
}

/// A COSE_Key with the RFC 9052 label names (`kty`, `alg`, `crv`, `x`, `y`, `n`, `e`); key
/// types the ctap crate does not model are shown with their numeric labels.
pub fn cose_key_node(value: &Value) -> Node {
    let Ok(key) = CoseKey::from_value(value.clone()) else {
        return cbor_node(value);
    };
    let mut node = Node::map();
    match &key {
        CoseKey::Ec2 { alg, crv, x, y } => {
            node.push("kty", 2u8);
            node.push_opt("alg", *alg);
            node.push("crv", *crv);
            node.push("x", Node::Bytes(x.clone()));
            node.push("y", Node::Bytes(y.clone()));
        }
        CoseKey::Okp { alg, crv, x } => {
            node.push("kty", 1u8);
            node.push_opt("alg", *alg);
            node.push("crv", *crv);
            node.push("x", Node::Bytes(x.clone()));
        }
        CoseKey::Rsa { alg, n, e } => {
            node.push("kty", 3u8);
            node.push_opt("alg", *alg);
            node.push("n", Node::Bytes(n.clone()));
            node.push("e", Node::Bytes(e.clone()));
        }
        _ => return cbor_node(value),
    }
    node
}

fn aaguid_text(aaguid: &[u8; 16]) -> String {
    uuid::Uuid::from_bytes(*aaguid).hyphenated().to_string()
}

/// A length-only stand-in for a secret or secret-derived value.
fn redacted(len: usize) -> Node {
    Node::Map(vec![
        ("redacted".into(), Node::Bool(true)),
        ("length".into(), Node::from(len)),
    ])
}

/// An authenticatorGetInfo response with the member names of CTAP 2.2/2.3 §6.4.
pub fn get_info_node(info: &get_info::Response) -> Node {
    let mut n = Node::map();
    n.push(
        "versions",
        info.versions
            .iter()
            .map(|v| v.as_str().to_owned())
            .collect::<Vec<_>>(),
    );
    n.push_opt("extensions", info.extensions.clone());
    n.push("aaguid", aaguid_text(&info.aaguid));
    if let Some(options) = &info.options {
        n.push(
            "options",
            Node::Map(
                options
                    .iter()
                    .map(|(k, v)| (k.to_owned(), Node::Bool(v)))
                    .collect(),
            ),
        );
    }
    n.push_opt("maxMsgSize", info.max_msg_size);
    n.push_opt("pinUvAuthProtocols", info.pin_uv_auth_protocols.clone());
    n.push_opt(
        "maxCredentialCountInList",
        info.max_credential_count_in_list,
    );
    n.push_opt("maxCredentialIdLength", info.max_credential_id_length);
    n.push_opt("transports", info.transports.clone());
    if let Some(algorithms) = &info.algorithms {
        let list = algorithms
            .iter()
            .map(|p| {
                Node::Map(vec![
                    ("type".into(), p.cred_type.as_str().into()),
                    ("alg".into(), p.alg.into()),
                ])
            })
            .collect();
        n.push("algorithms", Node::List(list));
    }
    n.push_opt(
        "maxSerializedLargeBlobArray",
        info.max_serialized_large_blob_array,
    );
    n.push_opt("forcePINChange", info.force_pin_change);
    n.push_opt("minPINLength", info.min_pin_length);
    n.push_opt("firmwareVersion", info.firmware_version);
    n.push_opt("maxCredBlobLength", info.max_cred_blob_length);
    n.push_opt(
        "maxRPIDsForSetMinPINLength",
        info.max_rpids_for_set_min_pin_length,
    );
    n.push_opt(
        "preferredPlatformUvAttempts",
        info.preferred_platform_uv_attempts,
    );
    n.push_opt("uvModality", info.uv_modality);
    if let Some(certifications) = &info.certifications {
        n.push(
            "certifications",
            Node::Map(
                certifications
                    .iter()
                    .map(|(k, v)| (k.clone(), Node::from(*v)))
                    .collect(),
            ),
        );
    }
    n.push_opt(
        "remainingDiscoverableCredentials",
        info.remaining_discoverable_credentials,
    );
    n.push_opt(
        "vendorPrototypeConfigCommands",
        info.vendor_prototype_config_commands.clone(),
    );
    n.push_opt("attestationFormats", info.attestation_formats.clone());
    n.push_opt(
        "uvCountSinceLastPinEntry",
        info.uv_count_since_last_pin_entry,
    );
    n.push_opt("longTouchForReset", info.long_touch_for_reset);
    n.push_opt(
        "encIdentifier",
        info.enc_identifier.clone().map(Node::Bytes),
    );
    n.push_opt("transportsForReset", info.transports_for_reset.clone());
    n.push_opt("pinComplexityPolicy", info.pin_complexity_policy);
    n.push_opt(
        "pinComplexityPolicyURL",
        info.pin_complexity_policy_url
            .as_ref()
            .map(|url| match std::str::from_utf8(url) {
                Ok(text) => Node::from(text),
                Err(_) => Node::Bytes(url.clone()),
            }),
    );
    n.push_opt("maxPINLength", info.max_pin_length);
    n.push_opt(
        "encCredStoreState",
        info.enc_cred_store_state.clone().map(Node::Bytes),
    );
    n.push_opt(
        "authenticatorConfigCommands",
        info.authenticator_config_commands.clone(),
    );
    n
}

/// Authenticator data (WebAuthn L3 §6.1): `rpIdHash`, `flags`, `signCount`,
/// `attestedCredentialData`, `extensions`.
pub fn auth_data_node(data: &AuthenticatorData) -> Node {
    let flags = data.flags();
    let mut n = Node::map();
    n.push("rpIdHash", Node::Bytes(data.rp_id_hash().to_vec()));
    n.push(
        "flags",
        Node::Map(vec![
            ("up".into(), flags.user_present().into()),
            ("uv".into(), flags.user_verified().into()),
            ("be".into(), flags.backup_eligible().into()),
            ("bs".into(), flags.backed_up().into()),
            ("at".into(), flags.has_attested_credential_data().into()),
            ("ed".into(), flags.has_extension_data().into()),
        ]),
    );
    n.push("signCount", data.sign_count());
    if let Some(acd) = data.attested_credential_data() {
        n.push(
            "attestedCredentialData",
            Node::Map(vec![
                ("aaguid".into(), aaguid_text(acd.aaguid()).into()),
                (
                    "credentialId".into(),
                    Node::Bytes(acd.credential_id().to_vec()),
                ),
                (
                    "credentialPublicKey".into(),
                    cose_key_node(acd.credential_public_key()),
                ),
            ]),
        );
    }
    if let Some(extensions) = data.extensions() {
        n.push("extensions", cbor_node(extensions.as_value()));
    }
    n
}

/// An authenticatorMakeCredential response (CTAP 2.2 §6.1): `fmt`, `authData` (parsed),
/// `attStmt`, `epAtt`, `largeBlobKey` (length only), `unsignedExtensionOutputs`.
pub fn make_credential_node(response: &make_credential::Response) -> Result<Node, DecodeError> {
    let auth_data = AuthenticatorData::parse(&response.auth_data).map_err(DecodeError::AuthData)?;
    let mut n = Node::map();
    n.push("fmt", response.fmt.as_str());
    n.push("authData", auth_data_node(&auth_data));
    n.push("attStmt", cbor_node(&response.att_stmt));
    n.push_opt("epAtt", response.ep_att);
    n.push_opt(
        "largeBlobKey",
        response.large_blob_key.as_ref().map(|k| redacted(k.len())),
    );
    if let Some(outputs) = &response.unsigned_extension_outputs {
        n.push(
            "unsignedExtensionOutputs",
            Node::Map(
                outputs
                    .iter()
                    .map(|(k, v)| (k.clone(), cbor_node(v)))
                    .collect(),
            ),
        );
    }
    Ok(n)
}

/// An authenticatorClientPIN response (CTAP 2.2 §6.5.5). The pinUvAuthToken is encrypted,
/// but with a key a recording may make recoverable, so only its length is shown.
pub fn client_pin_node(response: &client_pin::Response) -> Node {
    let mut n = Node::map();
    if let Some(key) = &response.key_agreement {
        n.push("keyAgreement", cose_key_node(&key.to_value()));
    }
    n.push_opt(
        "pinUvAuthToken",
        response
            .pin_uv_auth_token
            .as_ref()
            .map(|t| redacted(t.len())),
    );
    n.push_opt("pinRetries", response.pin_retries);
    n.push_opt("powerCycleState", response.power_cycle_state);
    n.push_opt("uvRetries", response.uv_retries);
    n
}

/// Appends the members of `members` (a map) to `into`.
fn extend(into: &mut Node, members: Node) {
    if let (Node::Map(into), Node::Map(members)) = (into, members) {
        into.extend(members);
    }
}

fn decode_body(kind: ResponseKind, body: &[u8]) -> Result<Node, DecodeError> {
    match kind {
        ResponseKind::GetInfo => get_info::Response::from_cbor(body)
            .map(|info| get_info_node(&info))
            .map_err(|source| DecodeError::Cbor {
                what: "authenticatorGetInfo response",
                source,
            }),
        ResponseKind::MakeCredential => make_credential::Response::from_cbor(body)
            .map_err(|source| DecodeError::Cbor {
                what: "authenticatorMakeCredential response",
                source,
            })
            .and_then(|r| make_credential_node(&r)),
        ResponseKind::ClientPin => client_pin::Response::from_cbor(body)
            .map(|r| client_pin_node(&r))
            .map_err(|source| DecodeError::Cbor {
                what: "authenticatorClientPIN response",
                source,
            }),
    }
}

/// Decodes one CTAP response of `kind`: a status byte then CBOR, or the CBOR body alone.
///
/// A first byte that is a CBOR map header (0xA0–0xBF, no assigned status) means bare CBOR, and
/// the result has no `status`; anything else is the status byte. An error status has no body
/// to decode and yields `{status}` alone.
pub fn decode_response(kind: ResponseKind, bytes: &[u8]) -> Result<Decoded, DecodeError> {
    let (&first, rest) = bytes.split_first().ok_or(DecodeError::Empty)?;
    let mut n = Node::map();
    let body = if (0xA0..=0xBF).contains(&first) {
        bytes
    } else {
        let status = StatusCode::from(first);
        n.push("status", status_node(status));
        if !status.is_ok() {
            return Ok(Decoded(n));
        }
        rest
    };
    extend(&mut n, decode_body(kind, body)?);
    Ok(Decoded(n))
}

/// Guesses which response a CBOR body is by its shape: getInfo has `versions` (0x01) as an
/// array; makeCredential has `fmt` (0x01) text and `authData` (0x02) bytes; clientPIN has only
/// members 0x01–0x05 with their types.
pub fn detect_response(body: &[u8]) -> Option<ResponseKind> {
    let Ok(Value::Map(entries)) = cbor::from_slice(body) else {
        return None;
    };
    let member = |key: i64| {
        entries
            .iter()
            .find(|(k, _)| k.as_integer() == Some(key.into()))
            .map(|(_, v)| v)
    };
    match (member(1), member(2)) {
        (Some(Value::Array(_)), _) => return Some(ResponseKind::GetInfo),
        (Some(Value::Text(_)), Some(Value::Bytes(_))) => return Some(ResponseKind::MakeCredential),
        _ => {}
    }
    let client_pin = !entries.is_empty()
        && entries.iter().all(|(k, v)| {
            let key = k.as_integer().map(i128::from);
            matches!(
                (key, v),
                (Some(1), Value::Map(_))
                    | (Some(2), Value::Bytes(_))
                    | (Some(3 | 5), Value::Integer(_))
                    | (Some(4), Value::Bool(_))
            )
        });
    client_pin.then_some(ResponseKind::ClientPin)
}

/// A CTAPHID_CBOR response payload (status byte first), its kind guessed from its shape.
fn ctap_payload_node(payload: &[u8]) -> Result<Node, DecodeError> {
    let mut n = Node::map();
    let Some((&status, body)) = payload.split_first() else {
        n.push("empty", true);
        return Ok(n);
    };
    let status = StatusCode::from(status);
    n.push("status", status_node(status));
    if !status.is_ok() || body.is_empty() {
        return Ok(n);
    }
    match detect_response(body) {
        Some(kind) => extend(&mut n, decode_body(kind, body)?),
        None => match cbor::from_slice(body) {
            Ok(value) => n.push("cbor", cbor_node(&value)),
            Err(_) => n.push("body", Node::Bytes(body.to_vec())),
        },
    }
    Ok(n)
}

/// The CTAPHID command's name (CTAP 2.2 §11.2.9).
pub fn hid_command_name(cmd: Command) -> String {
    match cmd {
        Command::Ping => "CTAPHID_PING".into(),
        Command::Msg => "CTAPHID_MSG".into(),
        Command::Lock => "CTAPHID_LOCK".into(),
        Command::Init => "CTAPHID_INIT".into(),
        Command::Wink => "CTAPHID_WINK".into(),
        Command::Cbor => "CTAPHID_CBOR".into(),
        Command::Cancel => "CTAPHID_CANCEL".into(),
        Command::Keepalive => "CTAPHID_KEEPALIVE".into(),
        Command::Error => "CTAPHID_ERROR".into(),
        Command::Vendor(code) => format!("CTAPHID_VENDOR_{code:02X}"),
        other => format!("CTAPHID_UNKNOWN_{:02X}", other.code()),
    }
}

fn keepalive_name(status: KeepaliveStatus) -> &'static str {
    match status {
        KeepaliveStatus::Processing => "STATUS_PROCESSING",
        KeepaliveStatus::UpNeeded => "STATUS_UPNEEDED",
        KeepaliveStatus::Unknown(_) => "STATUS_UNKNOWN",
    }
}

fn hid_error_name(code: HidErrorCode) -> &'static str {
    match code {
        HidErrorCode::InvalidCmd => "ERR_INVALID_CMD",
        HidErrorCode::InvalidPar => "ERR_INVALID_PAR",
        HidErrorCode::InvalidLen => "ERR_INVALID_LEN",
        HidErrorCode::InvalidSeq => "ERR_INVALID_SEQ",
        HidErrorCode::MsgTimeout => "ERR_MSG_TIMEOUT",
        HidErrorCode::ChannelBusy => "ERR_CHANNEL_BUSY",
        HidErrorCode::LockRequired => "ERR_LOCK_REQUIRED",
        HidErrorCode::InvalidChannel => "ERR_INVALID_CHANNEL",
        HidErrorCode::Other => "ERR_OTHER",
        _ => "ERR_UNKNOWN",
    }
}

fn status_word_name(sw: StatusWord) -> &'static str {
    match sw {
        StatusWord::Success => "SW_NO_ERROR",
        StatusWord::MoreData(_) => "SW_BYTES_REMAINING",
        StatusWord::CtapStatusUpdate => "SW_CTAP_STATUS_UPDATE",
        StatusWord::ConditionsNotSatisfied => "SW_CONDITIONS_NOT_SATISFIED",
        StatusWord::WrongData => "SW_WRONG_DATA",
        StatusWord::WrongLength => "SW_WRONG_LENGTH",
        StatusWord::InsNotSupported => "SW_INS_NOT_SUPPORTED",
        StatusWord::ClaNotSupported => "SW_CLA_NOT_SUPPORTED",
        StatusWord::FileNotFound => "SW_FILE_NOT_FOUND",
        _ => "SW_OTHER",
    }
}

/// The INIT response fields (CTAP 2.2 §11.2.9.1.3), or the request's nonce for an 8-byte
/// payload.
fn init_node(payload: &[u8]) -> Node {
    let mut n = Node::map();
    let Some(nonce) = payload.first_chunk::<{ ctaphid::INIT_NONCE_LEN }>() else {
        n.push("payload", Node::Bytes(payload.to_vec()));
        return n;
    };
    n.push("nonce", Node::Bytes(nonce.to_vec()));
    // The nonce check is the host's business; here the payload answers its own nonce.
    if let Ok(init) = ctaphid::parse_init_response(payload, nonce) {
        let v = init.device_version;
        let caps = init.capabilities;
        n.push("cid", init.cid.to_string());
        n.push("protocolVersion", init.protocol_version);
        n.push(
            "deviceVersion",
            format!("{}.{}.{}", v.major, v.minor, v.build),
        );
        n.push(
            "capabilities",
            Node::Map(vec![
                ("wink".into(), caps.wink().into()),
                ("cbor".into(), caps.cbor().into()),
                ("nmsg".into(), (!caps.msg()).into()),
            ]),
        );
    }
    n
}

/// One reassembled CTAPHID message from the device.
fn message_node(message: &Message) -> Result<Node, DecodeError> {
    let payload = &message.payload;
    let mut n = Node::map();
    match message.cmd {
        Command::Cbor => return ctap_payload_node(payload),
        Command::Init => n.push("init", init_node(payload)),
        Command::Keepalive => {
            let status = payload.first().map(|&b| KeepaliveStatus::from(b));
            n.push_opt(
                "keepalive",
                status.map(|s| code_name_node(s.code().into(), keepalive_name(s))),
            );
        }
        Command::Error => {
            let code = payload.first().map(|&b| HidErrorCode::from(b));
            n.push_opt(
                "hidError",
                code.map(|c| code_name_node(c.code().into(), hid_error_name(c))),
            );
        }
        Command::Msg => match ResponseApdu::parse(payload) {
            Ok(response) => {
                n.push(
                    "u2f",
                    Node::Map(vec![
                        (
                            "sw".into(),
                            code_name_node(
                                response.sw.to_u16().into(),
                                status_word_name(response.sw),
                            ),
                        ),
                        ("data".into(), Node::Bytes(response.data)),
                    ]),
                );
            }
            Err(_) => n.push("payload", Node::Bytes(payload.clone())),
        },
        _ => n.push("payload", Node::Bytes(payload.clone())),
    }
    Ok(n)
}

/// Reassembles a run of 64-byte CTAPHID input reports (no report-ID byte) and decodes what it
/// carries.
///
/// The channel is the first report's CID; reports of other channels are counted as
/// `foreignReports` and skipped. The last report may be shorter than 64 bytes when only its
/// zero padding is missing. The top level is the decode of the last message (for a CBOR
/// response: `status` and the members of the response, recognised by [`detect_response`]);
/// `ctaphid.messages` lists every message with its `cmd` and `bcnt`, and the decode of each
/// message before the last (keepalives, typically).
pub fn decode_reports(bytes: &[u8]) -> Result<Decoded, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let first = bytes.first_chunk::<4>().ok_or(DecodeError::Framing {
        index: 0,
        source: FramingError::ReportTooShort {
            len: bytes.len(),
            needed: 4,
        },
    })?;
    let cid = Cid::from_bytes(*first);
    let mut rx = Reassembler::new(cid, ctaphid::MAX_MESSAGE_LEN);
    let mut reports = 0usize;
    let mut foreign = 0usize;
    let mut messages = Vec::new();
    for (index, report) in bytes.chunks(ctaphid::REPORT_LEN).enumerate() {
        reports += 1;
        match rx
            .push(report)
            .map_err(|source| DecodeError::Framing { index, source })?
        {
            PushOutcome::Foreign(_) => foreign += 1,
            PushOutcome::NeedMore => {}
            PushOutcome::Complete(message) => messages.push(message),
        }
    }
    if rx.in_progress() {
        return Err(DecodeError::Incomplete { cid });
    }
    let mut list = Vec::with_capacity(messages.len());
    for (i, message) in messages.iter().enumerate() {
        let mut entry = Node::map();
        entry.push(
            "cmd",
            code_name_node(message.cmd.code().into(), &hid_command_name(message.cmd)),
        );
        entry.push("bcnt", message.payload.len());
        // The last message's decode is the top level; repeating it would double the output.
        if i + 1 < messages.len() {
            extend(&mut entry, message_node(message)?);
        }
        list.push(entry);
    }
    // INVARIANT: the first report is on `cid` and is an initialization packet (a continuation
    // would have been ContinuationWithoutInit), and no message is in progress, so at least one
    // message completed.
    let mut top = match messages.last() {
        Some(last) => message_node(last)?,
        None => return Err(DecodeError::Incomplete { cid }),
    };
    top.push(
        "ctaphid",
        Node::Map(vec![
            ("cid".into(), cid.to_string().into()),
            ("reports".into(), reports.into()),
            ("foreignReports".into(), foreign.into()),
            ("messages".into(), Node::List(list)),
        ]),
    );
    Ok(Decoded(top))
}

/// Parses hex text; ASCII whitespace anywhere is ignored, so dumps may be wrapped.
pub fn parse_hex(text: &str) -> Result<Vec<u8>, DecodeError> {
    let compact: String = text.chars().filter(|c| !c.is_ascii_whitespace()).collect();
    if compact.is_empty() {
        return Err(DecodeError::Empty);
    }
    hex::decode(compact).map_err(DecodeError::Hex)
}

// ---------------------------------------------------------------------------------------------
// Recordings
// ---------------------------------------------------------------------------------------------

/// One event of a recording, summarized.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventSummary {
    /// Its line in the file.
    pub line: usize,
    /// Microseconds since the recording started.
    pub t_us: u64,
    /// Direction, for traffic.
    pub dir: Option<Direction>,
    /// The event kind (`report`, `nonce`...).
    pub kind: &'static str,
    /// Number of bytes.
    pub len: usize,
    /// One line for people.
    pub summary: String,
}

/// The name of an authenticator API command byte (CTAP 2.2 §6).
pub fn ctap_command_name(code: u8) -> String {
    match code {
        0x01 => "authenticatorMakeCredential".into(),
        0x02 => "authenticatorGetAssertion".into(),
        0x04 => "authenticatorGetInfo".into(),
        0x06 => "authenticatorClientPIN".into(),
        0x07 => "authenticatorReset".into(),
        0x08 => "authenticatorGetNextAssertion".into(),
        0x09 => "authenticatorBioEnrollment".into(),
        0x0A => "authenticatorCredentialManagement".into(),
        0x0B => "authenticatorSelection".into(),
        0x0C => "authenticatorLargeBlobs".into(),
        0x0D => "authenticatorConfig".into(),
        0x40 => "authenticatorBioEnrollment (prototype)".into(),
        0x41 => "authenticatorCredentialManagement (prototype)".into(),
        other => format!("command 0x{other:02X}"),
    }
}

fn client_pin_subcommand_name(code: i128) -> String {
    match code {
        0x01 => "getPINRetries".into(),
        0x02 => "getKeyAgreement".into(),
        0x03 => "setPIN".into(),
        0x04 => "changePIN".into(),
        0x05 => "getPinToken".into(),
        0x06 => "getPinUvAuthTokenUsingUvWithPermissions".into(),
        0x07 => "getUVRetries".into(),
        0x09 => "getPinUvAuthTokenUsingPinWithPermissions".into(),
        other => format!("subCommand {other}"),
    }
}

/// "authenticatorClientPIN getKeyAgreement (protocol 2)" and the like, for a request payload
/// (command byte then CBOR).
fn request_summary(payload: &[u8]) -> String {
    let Some((&code, params)) = payload.split_first() else {
        return "empty request".into();
    };
    let mut s = ctap_command_name(code);
    if code == 0x06
        && let Ok(Value::Map(entries)) = cbor::from_slice(params)
    {
        let member = |key: i64| {
            entries
                .iter()
                .find(|(k, _)| k.as_integer() == Some(key.into()))
                .and_then(|(_, v)| v.as_integer())
                .map(i128::from)
        };
        if let Some(sub) = member(2) {
            let _ = write!(s, " {}", client_pin_subcommand_name(sub));
        }
        if let Some(protocol) = member(1) {
            let _ = write!(s, " (protocol {protocol})");
        }
    }
    s
}

/// "CTAP2_OK getInfo versions=[FIDO_2_0] aaguid=..." and the like, for a response payload
/// (status byte then CBOR) to the request `command`.
fn response_summary(payload: &[u8], command: Option<u8>) -> String {
    let Some((&status, body)) = payload.split_first() else {
        return "empty response".into();
    };
    let status = StatusCode::from(status);
    let mut s = status.to_string();
    if !status.is_ok() || body.is_empty() {
        return s;
    }
    let kind = match command {
        Some(0x04) => Some(ResponseKind::GetInfo),
        Some(0x01) => Some(ResponseKind::MakeCredential),
        Some(0x06) => Some(ResponseKind::ClientPin),
        _ => None,
    };
    let detail = match kind {
        Some(ResponseKind::GetInfo) => get_info::Response::from_cbor(body)
            .map(|info| {
                let versions: Vec<&str> = info.versions.iter().map(|v| v.as_str()).collect();
                format!(
                    "versions=[{}] aaguid={}",
                    versions.join(","),
                    aaguid_text(&info.aaguid)
                )
            })
            .map_err(|e| e.to_string()),
        Some(ResponseKind::MakeCredential) => make_credential::Response::from_cbor(body)
            .map_err(|e| e.to_string())
            .and_then(|r| {
                let data = AuthenticatorData::parse(&r.auth_data).map_err(|e| e.to_string())?;
                let id_len = data
                    .attested_credential_data()
                    .map_or(0, |a| a.credential_id().len());
                Ok(format!(
                    "fmt={} flags={:?} signCount={} credentialId={id_len} bytes",
                    r.fmt,
                    data.flags(),
                    data.sign_count()
                ))
            }),
        Some(ResponseKind::ClientPin) => client_pin::Response::from_cbor(body)
            .map(|r| {
                let mut parts = Vec::new();
                if r.key_agreement.is_some() {
                    parts.push("keyAgreement".to_owned());
                }
                if let Some(token) = &r.pin_uv_auth_token {
                    parts.push(format!("pinUvAuthToken ({} bytes, redacted)", token.len()));
                }
                if let Some(n) = r.pin_retries {
                    parts.push(format!("pinRetries={n}"));
                }
                if let Some(b) = r.power_cycle_state {
                    parts.push(format!("powerCycleState={b}"));
                }
                if let Some(n) = r.uv_retries {
                    parts.push(format!("uvRetries={n}"));
                }
                parts.join(" ")
            })
            .map_err(|e| e.to_string()),
        None => Ok(format!("{} bytes of CBOR", body.len())),
    };
    match detail {
        Ok(detail) => {
            let _ = write!(s, " {detail}");
        }
        Err(error) => {
            let _ = write!(s, " (does not decode: {error})");
        }
    }
    s
}

/// How many CTAPHID messages in progress a recording summary follows per direction; traffic of
/// more channels at once than this is not real (a key serves one transaction at a time).
const MAX_CHANNELS: usize = 8;

/// Caps the APDU response data a summary collects across `61xx` pieces.
const MAX_APDU_RESPONSE: usize = 256 * 1024;

#[derive(Default)]
struct SummaryState {
    /// Per direction (0 out, 1 in): reassemblers by channel.
    hid: [BTreeMap<Cid, Reassembler>; 2],
    /// The last CTAP command sent, per channel (HID) or on the card (APDU, key 0).
    pending: BTreeMap<Cid, u8>,
    /// APDU: the next response answers an NFCCTAP_MSG (whose command byte is given).
    apdu_ctap: Option<u8>,
    /// APDU: whether the previous command block said more blocks follow.
    apdu_chaining: bool,
    /// APDU: response data collected across `61xx` pieces.
    apdu_data: Vec<u8>,
}

fn direction_index(dir: Direction) -> usize {
    match dir {
        Direction::Out => 0,
        Direction::In => 1,
    }
}

fn report_summary(state: &mut SummaryState, dir: Direction, report: &[u8]) -> String {
    let Some((cid_bytes, rest)) = report.split_first_chunk::<4>() else {
        return "short report".into();
    };
    let cid = Cid::from_bytes(*cid_bytes);
    let Some(&byte) = rest.first() else {
        return format!("{cid} short report");
    };
    let init = byte & 0x80 != 0;
    let mut s = if init {
        let bcnt = rest
            .get(1..3)
            .and_then(|b| <[u8; 2]>::try_from(b).ok())
            .map_or(0, u16::from_be_bytes);
        format!(
            "{cid} {} bcnt={bcnt}",
            hid_command_name(Command::from(byte))
        )
    } else {
        format!("{cid} cont seq={byte}")
    };

    let channels = &mut state.hid[direction_index(dir)];
    if init && !channels.get(&cid).is_some_and(Reassembler::in_progress) {
        if channels.len() >= MAX_CHANNELS {
            channels.clear();
        }
        channels.insert(cid, Reassembler::new(cid, ctaphid::MAX_MESSAGE_LEN));
    }
    let Some(rx) = channels.get_mut(&cid) else {
        s.push_str(" (no message in progress)");
        return s;
    };
    match rx.push(report) {
        Ok(PushOutcome::Complete(message)) => {
            let _ = write!(s, " → {}", message_summary(state, dir, &message));
        }
        Ok(_) => {}
        Err(error) => {
            let _ = write!(s, " ! {error}");
        }
    }
    s
}

fn message_summary(state: &mut SummaryState, dir: Direction, message: &Message) -> String {
    let payload = &message.payload;
    match (message.cmd, dir) {
        (Command::Cbor, Direction::Out) => {
            if let Some(&code) = payload.first() {
                state.pending.insert(message.cid, code);
            }
            request_summary(payload)
        }
        (Command::Cbor, Direction::In) => {
            let command = state.pending.remove(&message.cid);
            response_summary(payload, command)
        }
        (Command::Init, Direction::Out) => format!("INIT request nonce={}", hex::encode(payload)),
        (Command::Init, Direction::In) => {
            let init = init_node(payload);
            match (init.get("cid"), init.get("deviceVersion")) {
                (Some(Node::Text(cid)), Some(Node::Text(version))) => {
                    format!("INIT response cid={cid} device version {version}")
                }
                _ => format!("INIT response, malformed ({} bytes)", payload.len()),
            }
        }
        (Command::Keepalive, _) => payload.first().map_or_else(
            || "KEEPALIVE without status".into(),
            |&b| format!("KEEPALIVE {}", keepalive_name(KeepaliveStatus::from(b))),
        ),
        (Command::Error, _) => payload.first().map_or_else(
            || "ERROR without code".into(),
            |&b| format!("ERROR {}", hid_error_name(HidErrorCode::from(b))),
        ),
        (Command::Cancel, _) => "CANCEL".into(),
        (Command::Msg, Direction::Out) => match CommandApdu::parse(payload) {
            Ok((apdu, _)) => format!("U2F {}", u2f_ins_name(apdu.ins)),
            Err(error) => format!("U2F, malformed: {error}"),
        },
        (Command::Msg, Direction::In) => match ResponseApdu::parse(payload) {
            Ok(r) => format!(
                "U2F response SW {:04X}, {} bytes",
                r.sw.to_u16(),
                r.data.len()
            ),
            Err(error) => format!("U2F response, malformed: {error}"),
        },
        (cmd, _) => format!("{} {} bytes", hid_command_name(cmd), payload.len()),
    }
}

fn u2f_ins_name(ins: u8) -> String {
    match ins {
        0x01 => "REGISTER".into(),
        0x02 => "AUTHENTICATE".into(),
        0x03 => "VERSION".into(),
        other => format!("INS 0x{other:02X}"),
    }
}

fn apdu_summary(state: &mut SummaryState, bytes: &[u8]) -> String {
    let (apdu, _) = match CommandApdu::parse(bytes) {
        Ok(parsed) => parsed,
        Err(error) => return format!("malformed APDU: {error}"),
    };
    let first_block = !state.apdu_chaining;
    let chained = apdu.cla & 0x10 != 0;
    state.apdu_chaining = chained;
    let mut s = match (apdu.cla & !0x10, apdu.ins) {
        (0x00, 0xA4) => format!("SELECT {}", hex::encode_upper(&apdu.data)),
        (0x80, 0x10) => {
            if first_block && let Some(&code) = apdu.data.first() {
                state.apdu_ctap = Some(code);
                format!("NFCCTAP_MSG {}", request_summary(&apdu.data))
            } else {
                "NFCCTAP_MSG (continued)".into()
            }
        }
        (0x80, 0x11) if apdu.p1 == 0x11 => "NFCCTAP_GETRESPONSE (cancel)".into(),
        (0x80, 0x11) => "NFCCTAP_GETRESPONSE".into(),
        (_, 0xC0) => "GET RESPONSE".into(),
        (0x00, ins @ 0x01..=0x03) => format!("U2F {}", u2f_ins_name(ins)),
        (cla, ins) => format!(
            "CLA {cla:02X} INS {ins:02X} P1 {:02X} P2 {:02X}",
            apdu.p1, apdu.p2
        ),
    };
    if chained {
        s.push_str(" (chained, more blocks follow)");
    }
    let _ = write!(s, ", {} data bytes", apdu.data.len());
    if let Some(le) = apdu.le {
        let _ = write!(s, ", Le {le}");
    }
    s
}

fn apdu_response_summary(state: &mut SummaryState, bytes: &[u8]) -> String {
    let response = match ResponseApdu::parse(bytes) {
        Ok(response) => response,
        Err(error) => return format!("malformed response: {error}"),
    };
    let mut s = format!(
        "SW {:04X} {}, {} data bytes",
        response.sw.to_u16(),
        status_word_name(response.sw),
        response.data.len()
    );
    match response.sw {
        StatusWord::MoreData(_) => {
            if state.apdu_data.len().saturating_add(response.data.len()) <= MAX_APDU_RESPONSE {
                state.apdu_data.extend_from_slice(&response.data);
            }
        }
        StatusWord::CtapStatusUpdate => {
            if let Some(&b) = response.data.first() {
                let _ = write!(s, " → {}", keepalive_name(KeepaliveStatus::from(b)));
            }
        }
        StatusWord::Success if state.apdu_chaining => {}
        StatusWord::Success => {
            let mut data = std::mem::take(&mut state.apdu_data);
            data.extend_from_slice(&response.data);
            if let Some(command) = state.apdu_ctap.take() {
                let _ = write!(s, " → {}", response_summary(&data, Some(command)));
            }
        }
        _ => {
            state.apdu_data.clear();
            state.apdu_ctap = None;
        }
    }
    s
}

/// One summary per event of `file`: CTAPHID command, channel and length for reports (and, on
/// the report that completes a message, the CTAP command or status it carries), keepalive
/// status, APDU instruction and status word, randomness by kind and length (an ECDH key is
/// never shown).
pub fn summarize_recording(file: &RecordingFile) -> Vec<EventSummary> {
    let mut state = SummaryState::default();
    file.events
        .iter()
        .map(|event| {
            let summary = match &event.body {
                EventBody::Report { dir, report } => report_summary(&mut state, *dir, report),
                EventBody::Apdu(bytes) => apdu_summary(&mut state, bytes),
                EventBody::ApduResponse(bytes) => apdu_response_summary(&mut state, bytes),
                EventBody::Disconnect => "device disconnected".into(),
                EventBody::Randomness(r) if r.kind().is_secret() => {
                    format!("{} bytes (secret, not shown)", r.bytes().len())
                }
                EventBody::Randomness(r) => {
                    format!("{} bytes {}", r.bytes().len(), hex::encode(r.bytes()))
                }
            };
            EventSummary {
                line: event.line,
                t_us: event.t_us,
                dir: event.body.direction(),
                kind: event.body.kind(),
                len: event.body.bytes().len(),
                summary,
            }
        })
        .collect()
}

/// A recording decoded: its header and the event summaries.
pub fn decode_recording(file: &RecordingFile) -> Decoded {
    let header = &file.header;
    let mut n = Node::map();
    n.push("format", crate::device::record::FORMAT);
    n.push("version", crate::device::record::VERSION);
    n.push("transport", header.transport.as_str());
    let device = &header.device;
    let mut description = Node::map();
    description.push_opt("id", device.id.clone());
    description.push_opt("path", device.path.clone());
    description.push_opt("vendorId", device.vendor_id);
    description.push_opt("productId", device.product_id);
    description.push_opt("product", device.product.clone());
    description.push_opt("manufacturer", device.manufacturer.clone());
    n.push("description", description);
    n.push_opt("recorder", header.recorder.clone());
    let events = summarize_recording(file)
        .into_iter()
        .map(|e| {
            let mut event = Node::map();
            event.push("line", e.line);
            event.push("t_us", e.t_us);
            event.push_opt("dir", e.dir.map(Direction::as_str));
            event.push("kind", e.kind);
            event.push("len", e.len);
            event.push("summary", e.summary);
            event
        })
        .collect();
    n.push("events", Node::List(events));
    Decoded(n)
}

/// A recording as text: a header line, then one line per event (time in seconds, direction,
/// kind, summary).
pub fn recording_text(file: &RecordingFile) -> String {
    let header = &file.header;
    let device = &header.device;
    let mut out = format!(
        "{} v{}, transport {}",
        crate::device::record::FORMAT,
        crate::device::record::VERSION,
        header.transport.as_str()
    );
    let names: Vec<&str> = [
        &device.manufacturer,
        &device.product,
        &device.id,
        &device.path,
    ]
    .into_iter()
    .filter_map(|s| s.as_deref())
    .collect();
    if !names.is_empty() {
        let _ = write!(out, ", device {}", names.join(" "));
    }
    if let (Some(vid), Some(pid)) = (device.vendor_id, device.product_id) {
        let _ = write!(out, " ({vid:04x}:{pid:04x})");
    }
    if let Some(recorder) = &header.recorder {
        let _ = write!(out, ", recorded by {recorder}");
    }
    out.push('\n');
    for e in summarize_recording(file) {
        let seconds = e.t_us / 1_000_000;
        let micros = e.t_us % 1_000_000;
        let dir = e.dir.map_or("   ", Direction::as_str);
        let _ = writeln!(
            out,
            "{seconds:>4}.{micros:06} {dir:<3} {:<13} {}",
            e.kind, e.summary
        );
    }
    out
}

#[cfg(test)]
mod tests;
