//! authenticatorMakeCredential (0x01): create a credential (CTAP 2.2 §6.1).
//!
//! The request is built as a plain [`Request`] and checked once by [`MakeCredential::new`], so
//! a [`MakeCredential`] that reaches [`encode_request`](super::encode_request) never carries a
//! combination the spec forbids (a `uv` option next to a pinUvAuthParam, `up: false`, an
//! oversized user handle). The [`Response`] keeps `authData` as the exact bytes the key sent
//! (the `webauthn` module parses them) and `attStmt` as an undecoded [`Value`], so both can be
//! put into an attestation object without being re-interpreted.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use super::{Command, code};
use crate::cbor::{self, DecodeError, IntMap, TextMap, Value, conv};

/// The longest user handle WebAuthn allows (WebAuthn L3 §5.4.3 `user.id`; CTAP 2.2 §6.1).
pub const MAX_USER_ID_LEN: usize = 64;

// Request member keys (CTAP 2.2 §6.1, authenticatorMakeCredential parameters).
const CLIENT_DATA_HASH: i64 = 0x01;
const RP: i64 = 0x02;
const USER: i64 = 0x03;
const PUB_KEY_CRED_PARAMS: i64 = 0x04;
const EXCLUDE_LIST: i64 = 0x05;
const EXTENSIONS: i64 = 0x06;
const OPTIONS: i64 = 0x07;
const PIN_UV_AUTH_PARAM: i64 = 0x08;
const PIN_UV_AUTH_PROTOCOL: i64 = 0x09;
const ENTERPRISE_ATTESTATION: i64 = 0x0A;
const ATTESTATION_FORMATS_PREFERENCE: i64 = 0x0B;

// Response member keys (CTAP 2.2 §6.1, authenticatorMakeCredential response structure).
const FMT: i64 = 0x01;
const AUTH_DATA: i64 = 0x02;
const ATT_STMT: i64 = 0x03;
const EP_ATT: i64 = 0x04;
const LARGE_BLOB_KEY: i64 = 0x05;
const UNSIGNED_EXTENSION_OUTPUTS: i64 = 0x06;

/// The attestation format an authenticator reports when it gives no attestation statement.
pub const FMT_NONE: &str = "none";

/// A credential type (WebAuthn L3 §5.8.2 `PublicKeyCredentialType`).
///
/// Only `"public-key"` is defined; other strings are kept so that getInfo entries and
/// descriptors of a future type survive a round trip instead of failing the whole message.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum CredentialType {
    /// `"public-key"`.
    PublicKey,
    /// Any other type string.
    Other(String),
}

impl CredentialType {
    /// The type string on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::PublicKey => "public-key",
            Self::Other(s) => s,
        }
    }
}

impl From<String> for CredentialType {
    fn from(s: String) -> Self {
        if s == "public-key" {
            Self::PublicKey
        } else {
            Self::Other(s)
        }
    }
}

/// One entry of `pubKeyCredParams` or of getInfo `algorithms`
/// (WebAuthn L3 §5.3 `PublicKeyCredentialParameters`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublicKeyCredentialParameters {
    /// `type`.
    pub cred_type: CredentialType,
    /// `alg`, a COSE algorithm identifier (see [`crate::cose::alg`]).
    pub alg: i64,
}

impl PublicKeyCredentialParameters {
    /// A `"public-key"` entry for `alg`.
    pub fn public_key(alg: i64) -> Self {
        Self {
            cred_type: CredentialType::PublicKey,
            alg,
        }
    }

    /// `{"alg": alg, "type": type}`.
    pub fn to_value(&self) -> Value {
        Value::Map(vec![
            (Value::from("alg"), Value::from(self.alg)),
            (Value::from("type"), Value::from(self.cred_type.as_str())),
        ])
    }

    /// Parses one entry as an authenticator lists it.
    ///
    /// Returns `Ok(None)` for an entry of an unknown type whose `alg` is missing or not an
    /// integer: WebAuthn tells clients to ignore entries of types they do not know, so such an
    /// entry must not make the whole list unusable. A `"public-key"` entry must be well formed.
    pub fn from_value(value: Value, field: &'static str) -> Result<Option<Self>, DecodeError> {
        let mut map = TextMap::new(value, field)?;
        let cred_type = CredentialType::from(map.required("type", field, conv::text)?);
        let alg = match (&cred_type, map.take("alg")) {
            (CredentialType::PublicKey, None) => return Err(DecodeError::Missing(field)),
            (CredentialType::PublicKey, Some(alg)) => conv::int(alg, field)?,
            (CredentialType::Other(_), Some(Value::Integer(i))) => {
                match i64::try_from(i128::from(i)) {
                    Ok(alg) => alg,
                    Err(_) => return Ok(None),
                }
            }
            (CredentialType::Other(_), _) => return Ok(None),
        };
        Ok(Some(Self { cred_type, alg }))
    }
}

/// An excludeList entry (WebAuthn L3 §5.8.3 `PublicKeyCredentialDescriptor`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PublicKeyCredentialDescriptor {
    /// `type`.
    pub cred_type: CredentialType,
    /// `id`, the credential ID.
    pub id: Vec<u8>,
    /// `transports`, sent only when `Some`.
    pub transports: Option<Vec<String>>,
}

impl PublicKeyCredentialDescriptor {
    /// A `"public-key"` descriptor without transports.
    pub fn public_key(id: Vec<u8>) -> Self {
        Self {
            cred_type: CredentialType::PublicKey,
            id,
            transports: None,
        }
    }

    /// `{"id": id, "type": type, "transports"?: [...]}`.
    pub fn to_value(&self) -> Value {
        let mut m = vec![
            (Value::from("id"), Value::Bytes(self.id.clone())),
            (Value::from("type"), Value::from(self.cred_type.as_str())),
        ];
        if let Some(transports) = &self.transports {
            let list = transports.iter().map(|t| Value::from(t.as_str())).collect();
            m.push((Value::from("transports"), Value::Array(list)));
        }
        Value::Map(m)
    }
}

/// The relying party (WebAuthn L3 §5.4.2 `PublicKeyCredentialRpEntity`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct RelyingParty {
    /// `id`, the RP ID.
    pub id: String,
    /// `name`, sent only when `Some`.
    pub name: Option<String>,
}

impl RelyingParty {
    /// `{"id": id, "name"?: name}`.
    pub fn to_value(&self) -> Value {
        let mut m = vec![(Value::from("id"), Value::from(self.id.as_str()))];
        if let Some(name) = &self.name {
            m.push((Value::from("name"), Value::from(name.as_str())));
        }
        Value::Map(m)
    }
}

/// The user account (WebAuthn L3 §5.4.3 `PublicKeyCredentialUserEntity`).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct User {
    /// `id`, the user handle: 1 to [`MAX_USER_ID_LEN`] bytes.
    pub id: Vec<u8>,
    /// `name`, sent only when `Some`.
    pub name: Option<String>,
    /// `displayName`, sent only when `Some`.
    pub display_name: Option<String>,
}

impl User {
    /// `{"id": id, "name"?: name, "displayName"?: displayName}`.
    pub fn to_value(&self) -> Value {
        let mut m = vec![(Value::from("id"), Value::Bytes(self.id.clone()))];
        if let Some(name) = &self.name {
            m.push((Value::from("name"), Value::from(name.as_str())));
        }
        if let Some(display_name) = &self.display_name {
            m.push((
                Value::from("displayName"),
                Value::from(display_name.as_str()),
            ));
        }
        Value::Map(m)
    }
}

/// The credProtect policy (CTAP 2.2 §12.1 "Credential Protection"): the extension input, and
/// what authenticator data reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum CredProtect {
    /// `userVerificationOptional` (0x01).
    UserVerificationOptional,
    /// `userVerificationOptionalWithCredentialIDList` (0x02).
    UserVerificationOptionalWithCredentialIdList,
    /// `userVerificationRequired` (0x03).
    UserVerificationRequired,
}

impl CredProtect {
    /// The policy with wire value `value`, if it is one of the three the spec defines.
    pub fn from_value(value: u8) -> Option<Self> {
        match value {
            0x01 => Some(Self::UserVerificationOptional),
            0x02 => Some(Self::UserVerificationOptionalWithCredentialIdList),
            0x03 => Some(Self::UserVerificationRequired),
            _ => None,
        }
    }

    /// The wire value.
    pub fn value(self) -> u8 {
        match self {
            Self::UserVerificationOptional => 0x01,
            Self::UserVerificationOptionalWithCredentialIdList => 0x02,
            Self::UserVerificationRequired => 0x03,
        }
    }
}

/// Extension identifiers of the typed members of [`Extensions`].
pub mod extension {
    /// credProtect (CTAP 2.2 §12.1).
    pub const CRED_PROTECT: &str = "credProtect";
    /// hmac-secret (CTAP 2.2 §12.5).
    pub const HMAC_SECRET: &str = "hmac-secret";
    /// credBlob (CTAP 2.2 §12.2).
    pub const CRED_BLOB: &str = "credBlob";
    /// largeBlobKey (CTAP 2.2 §12.3).
    pub const LARGE_BLOB_KEY: &str = "largeBlobKey";
    /// minPinLength (CTAP 2.2 §12.4).
    pub const MIN_PIN_LENGTH: &str = "minPinLength";
}

/// makeCredential extension inputs (CTAP 2.2 §6.1 member 0x06, §12).
///
/// The platform must only send extensions the key lists in getInfo `extensions`; that choice is
/// the caller's. Extensions without a typed member (hmac-secret-mc, thirdPartyPayment, ...) go in
/// [`Extensions::other`] as raw CBOR.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Extensions {
    /// `credProtect`.
    pub cred_protect: Option<CredProtect>,
    /// `hmac-secret: true` when set.
    pub hmac_secret: bool,
    /// `credBlob`: at most getInfo `maxCredBlobLength` bytes (the caller checks).
    pub cred_blob: Option<Vec<u8>>,
    /// `largeBlobKey: true` when set (needs getInfo option `largeBlobs`).
    pub large_blob_key: bool,
    /// `minPinLength: true` when set.
    pub min_pin_length: bool,
    /// Any other extension input, by identifier.
    pub other: BTreeMap<String, Value>,
}

impl Extensions {
    /// Whether no extension is requested (then member 0x06 is omitted).
    pub fn is_empty(&self) -> bool {
        self.cred_protect.is_none()
            && !self.hmac_secret
            && self.cred_blob.is_none()
            && !self.large_blob_key
            && !self.min_pin_length
            && self.other.is_empty()
    }

    /// The identifiers of the typed members that are set.
    fn typed_ids(&self) -> impl Iterator<Item = &'static str> {
        [
            self.cred_protect
                .is_some()
                .then_some(extension::CRED_PROTECT),
            self.hmac_secret.then_some(extension::HMAC_SECRET),
            self.cred_blob.is_some().then_some(extension::CRED_BLOB),
            self.large_blob_key.then_some(extension::LARGE_BLOB_KEY),
            self.min_pin_length.then_some(extension::MIN_PIN_LENGTH),
        ]
        .into_iter()
        .flatten()
    }

    /// The extensions map.
    pub fn to_value(&self) -> Value {
        let mut m = Vec::new();
        if let Some(cp) = self.cred_protect {
            m.push((
                Value::from(extension::CRED_PROTECT),
                Value::from(cp.value()),
            ));
        }
        if self.hmac_secret {
            m.push((Value::from(extension::HMAC_SECRET), Value::Bool(true)));
        }
        if let Some(blob) = &self.cred_blob {
            m.push((
                Value::from(extension::CRED_BLOB),
                Value::Bytes(blob.clone()),
            ));
        }
        if self.large_blob_key {
            m.push((Value::from(extension::LARGE_BLOB_KEY), Value::Bool(true)));
        }
        if self.min_pin_length {
            m.push((Value::from(extension::MIN_PIN_LENGTH), Value::Bool(true)));
        }
        m.extend(
            self.other
                .iter()
                .map(|(id, input)| (Value::from(id.as_str()), input.clone())),
        );
        Value::Map(m)
    }
}

/// makeCredential options (CTAP 2.2 §6.1 member 0x07). Only the options that are `Some` are
/// sent; an authenticator applies its defaults to the others.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Options {
    /// `rk`: create a discoverable credential.
    pub rk: Option<bool>,
    /// `up`: must not be `Some(false)` for makeCredential.
    pub up: Option<bool>,
    /// `uv`: use built-in user verification; never together with a pinUvAuthParam.
    pub uv: Option<bool>,
}

impl Options {
    /// The options map, or `None` when no option is set.
    pub fn to_value(&self) -> Option<Value> {
        let m: Vec<_> = [("rk", self.rk), ("up", self.up), ("uv", self.uv)]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (Value::from(k), Value::Bool(v))))
            .collect();
        (!m.is_empty()).then_some(Value::Map(m))
    }
}

/// pinUvAuthParam with the protocol that computed it (members 0x08 and 0x09), which the spec
/// requires together.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PinUvAuth {
    /// `pinUvAuthParam`: authenticate(pinUvAuthToken, clientDataHash), computed by
    /// [`crate::pin_uv`]. A zero-length value is the CTAP 2.0 "touch only" probe (CTAP 2.2
    /// §6.1.2 step 1).
    pub param: Vec<u8>,
    /// `pinUvAuthProtocol`: 1 or 2.
    pub protocol: u32,
}

/// enterpriseAttestation (CTAP 2.2 §6.1 member 0x0A, §7.1).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EnterpriseAttestation {
    /// Vendor-facilitated (1).
    VendorFacilitated,
    /// Platform-managed (2).
    PlatformManaged,
}

impl EnterpriseAttestation {
    /// The wire value.
    pub fn value(self) -> u8 {
        match self {
            Self::VendorFacilitated => 0x01,
            Self::PlatformManaged => 0x02,
        }
    }
}

/// The members of an authenticatorMakeCredential request, before validation.
#[derive(Clone, Debug, PartialEq)]
pub struct Request {
    /// `clientDataHash` (0x01): SHA-256 of the clientDataJSON.
    pub client_data_hash: [u8; 32],
    /// `rp` (0x02).
    pub rp: RelyingParty,
    /// `user` (0x03).
    pub user: User,
    /// `pubKeyCredParams` (0x04), in the RP's order of preference; must not be empty.
    pub pub_key_cred_params: Vec<PublicKeyCredentialParameters>,
    /// `excludeList` (0x05); omitted when empty.
    pub exclude_list: Vec<PublicKeyCredentialDescriptor>,
    /// `extensions` (0x06); omitted when empty.
    pub extensions: Extensions,
    /// `options` (0x07); omitted when no option is set.
    pub options: Options,
    /// `pinUvAuthParam` (0x08) and `pinUvAuthProtocol` (0x09).
    pub pin_uv_auth: Option<PinUvAuth>,
    /// `enterpriseAttestation` (0x0A).
    pub enterprise_attestation: Option<EnterpriseAttestation>,
    /// `attestationFormatsPreference` (0x0B, CTAP 2.2); omitted when empty.
    pub attestation_formats_preference: Vec<String>,
}

impl Request {
    /// A request with the required members and everything optional left out.
    pub fn new(
        client_data_hash: [u8; 32],
        rp: RelyingParty,
        user: User,
        pub_key_cred_params: Vec<PublicKeyCredentialParameters>,
    ) -> Self {
        Self {
            client_data_hash,
            rp,
            user,
            pub_key_cred_params,
            exclude_list: Vec::new(),
            extensions: Extensions::default(),
            options: Options::default(),
            pin_uv_auth: None,
            enterprise_attestation: None,
            attestation_formats_preference: Vec::new(),
        }
    }
}

/// Why a [`Request`] cannot be sent.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RequestError {
    /// `user.id` is empty or longer than [`MAX_USER_ID_LEN`] bytes.
    #[error("user.id must be 1 to 64 bytes, got {0}")]
    UserIdLength(usize),
    /// `options.uv` was set next to a pinUvAuthParam (CTAP 2.2 §6.1: the platform sends one or the other).
    #[error("options.uv must not be sent together with pinUvAuthParam")]
    UvWithPinUvAuthParam,
    /// `options.up` was `false`, which makeCredential rejects (CTAP 2.2 §6.1.2).
    #[error("options.up must not be false for makeCredential")]
    UpFalse,
    /// `pubKeyCredParams` is empty.
    #[error("pubKeyCredParams is empty")]
    NoCredentialParameters,
    /// An extension in [`Extensions::other`] repeats a typed member.
    #[error("extension {0} is given twice")]
    DuplicateExtension(String),
}

/// A validated authenticatorMakeCredential request.
#[derive(Clone, Debug, PartialEq)]
pub struct MakeCredential {
    request: Request,
}

impl MakeCredential {
    /// Checks `request` against the platform rules of CTAP 2.2 §6.1.
    pub fn new(request: Request) -> Result<Self, RequestError> {
        let id_len = request.user.id.len();
        if !(1..=MAX_USER_ID_LEN).contains(&id_len) {
            return Err(RequestError::UserIdLength(id_len));
        }
        if request.options.uv.is_some() && request.pin_uv_auth.is_some() {
            return Err(RequestError::UvWithPinUvAuthParam);
        }
        if request.options.up == Some(false) {
            return Err(RequestError::UpFalse);
        }
        if request.pub_key_cred_params.is_empty() {
            return Err(RequestError::NoCredentialParameters);
        }
        if let Some(id) = request
            .extensions
            .typed_ids()
            .find(|id| request.extensions.other.contains_key(*id))
        {
            return Err(RequestError::DuplicateExtension(id.to_owned()));
        }
        Ok(Self { request })
    }

    /// The request's members.
    pub fn request(&self) -> &Request {
        &self.request
    }
}

impl TryFrom<Request> for MakeCredential {
    type Error = RequestError;

    fn try_from(request: Request) -> Result<Self, Self::Error> {
        Self::new(request)
    }
}

impl Command for MakeCredential {
    const CODE: u8 = code::MAKE_CREDENTIAL;
    type Response = Response;

    fn parameters(&self) -> Option<Value> {
        let r = &self.request;
        let params = r.pub_key_cred_params.iter().map(|p| p.to_value()).collect();
        let mut m = vec![
            (
                Value::from(CLIENT_DATA_HASH),
                Value::Bytes(r.client_data_hash.to_vec()),
            ),
            (Value::from(RP), r.rp.to_value()),
            (Value::from(USER), r.user.to_value()),
            (Value::from(PUB_KEY_CRED_PARAMS), Value::Array(params)),
        ];
        if !r.exclude_list.is_empty() {
            let list = r.exclude_list.iter().map(|d| d.to_value()).collect();
            m.push((Value::from(EXCLUDE_LIST), Value::Array(list)));
        }
        if !r.extensions.is_empty() {
            m.push((Value::from(EXTENSIONS), r.extensions.to_value()));
        }
        if let Some(options) = r.options.to_value() {
            m.push((Value::from(OPTIONS), options));
        }
        if let Some(auth) = &r.pin_uv_auth {
            m.push((
                Value::from(PIN_UV_AUTH_PARAM),
                Value::Bytes(auth.param.clone()),
            ));
            m.push((
                Value::from(PIN_UV_AUTH_PROTOCOL),
                Value::from(auth.protocol),
            ));
        }
        if let Some(ea) = r.enterprise_attestation {
            m.push((Value::from(ENTERPRISE_ATTESTATION), Value::from(ea.value())));
        }
        if !r.attestation_formats_preference.is_empty() {
            let formats = r
                .attestation_formats_preference
                .iter()
                .map(|f| Value::from(f.as_str()))
                .collect();
            m.push((
                Value::from(ATTESTATION_FORMATS_PREFERENCE),
                Value::Array(formats),
            ));
        }
        Some(Value::Map(m))
    }

    fn decode(body: &[u8]) -> Result<Response, DecodeError> {
        Response::from_cbor(body)
    }
}

/// An authenticatorMakeCredential response (CTAP 2.2 §6.1, "response structure").
#[derive(Clone, PartialEq)]
pub struct Response {
    /// `fmt` (0x01): the attestation statement format identifier. `"none"` when the key
    /// omitted `attStmt`.
    pub fmt: String,
    /// `authData` (0x02): the authenticator data, exactly as sent.
    pub auth_data: Vec<u8>,
    /// `attStmt` (0x03): the attestation statement, a map left undecoded (packed uses text
    /// keys). An empty map when the key omitted it, which CTAP 2.2 allows for "none".
    /// Re-encoding it with ciborium keeps the key's member order.
    pub att_stmt: Value,
    /// `epAtt` (0x04): whether an enterprise attestation was returned.
    pub ep_att: Option<bool>,
    /// `largeBlobKey` (0x05). Its length is not checked: the spec says 32 bytes, but the
    /// caller decides what to do with a key that sends something else.
    pub large_blob_key: Option<Zeroizing<Vec<u8>>>,
    /// `unsignedExtensionOutputs` (0x06), by extension identifier.
    pub unsigned_extension_outputs: Option<BTreeMap<String, Value>>,
}

impl Response {
    /// Decodes the CBOR body of a successful response.
    ///
    /// `fmt` and `authData` are required. When `attStmt` is absent the response is treated as
    /// `"none"` attestation with an empty statement, whatever `fmt` said: without a statement
    /// nothing can be verified.
    pub fn from_cbor(body: &[u8]) -> Result<Self, DecodeError> {
        let mut map = IntMap::from_slice(body, "authenticatorMakeCredential response")?;
        let fmt = map.required(FMT, "fmt", conv::text)?;
        let auth_data = map.required(AUTH_DATA, "authData", conv::bytes)?;
        let att_stmt = map.optional(ATT_STMT, "attStmt", |v, field| match v {
            Value::Map(_) => Ok(v),
            _ => Err(DecodeError::UnexpectedType {
                field,
                expected: "map",
            }),
        })?;
        let (fmt, att_stmt) = match att_stmt {
            Some(att_stmt) => (fmt, att_stmt),
            None => (FMT_NONE.to_owned(), Value::Map(Vec::new())),
        };
        Ok(Self {
            fmt,
            auth_data,
            att_stmt,
            ep_att: map.optional(EP_ATT, "epAtt", conv::boolean)?,
            large_blob_key: map
                .optional(LARGE_BLOB_KEY, "largeBlobKey", conv::bytes)?
                .map(Zeroizing::new),
            unsigned_extension_outputs: map.optional(
                UNSIGNED_EXTENSION_OUTPUTS,
                "unsignedExtensionOutputs",
                |v, f| Ok(TextMap::new(v, f)?.into_entries().collect()),
            )?,
        })
    }

    /// The attestation statement encoded as CBOR, in the member order the key used.
    ///
    /// For a key that encodes canonically (every key in the recorded vectors does) these are
    /// the bytes it sent.
    pub fn att_stmt_bytes(&self) -> Result<Vec<u8>, cbor::EncodeError> {
        let mut out = Vec::new();
        ciborium::into_writer(&self.att_stmt, &mut out)
            .map_err(|_| cbor::EncodeError::Serialize)?;
        Ok(out)
    }
}

impl core::fmt::Debug for Response {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Response")
            .field("fmt", &self.fmt)
            .field("auth_data", &self.auth_data)
            .field("att_stmt", &self.att_stmt)
            .field("ep_att", &self.ep_att)
            .field(
                "large_blob_key",
                &self.large_blob_key.as_ref().map(|k| Redacted(k.len())),
            )
            .field(
                "unsigned_extension_outputs",
                &self.unsigned_extension_outputs,
            )
            .finish()
    }
}

/// Stands in for a secret in `Debug` output: shows only its length.
pub(super) struct Redacted(pub(super) usize);

impl core::fmt::Debug for Redacted {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        write!(f, "<{} secret bytes>", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ResponseError, decode_response, encode_request};
    use crate::cose::alg;
    use crate::status::StatusCode;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap()
    }

    fn minimal() -> Request {
        Request::new(
            [0; 32],
            RelyingParty {
                id: "a".into(),
                name: None,
            },
            User {
                id: vec![0x01],
                name: None,
                display_name: None,
            },
            vec![PublicKeyCredentialParameters::public_key(alg::ES256)],
        )
    }

    fn full() -> Request {
        let mut r = Request::new(
            core::array::from_fn(|i| u8::try_from(i).unwrap()),
            RelyingParty {
                id: "example.com".into(),
                name: Some("Example".into()),
            },
            User {
                id: b"uid1".to_vec(),
                name: Some("alice".into()),
                display_name: Some("Alice".into()),
            },
            vec![
                PublicKeyCredentialParameters::public_key(alg::ES256),
                PublicKeyCredentialParameters::public_key(alg::EDDSA),
            ],
        );
        r.exclude_list = vec![PublicKeyCredentialDescriptor {
            transports: Some(vec!["usb".into(), "nfc".into()]),
            ..PublicKeyCredentialDescriptor::public_key(vec![0xCC, 0xDD])
        }];
        r.extensions = Extensions {
            cred_protect: Some(CredProtect::UserVerificationOptionalWithCredentialIdList),
            hmac_secret: true,
            ..Extensions::default()
        };
        r.options.rk = Some(true);
        r.pin_uv_auth = Some(PinUvAuth {
            param: vec![0x5A; 16],
            protocol: 1,
        });
        r.enterprise_attestation = Some(EnterpriseAttestation::PlatformManaged);
        r.attestation_formats_preference = vec!["packed".into()];
        r
    }

    #[test]
    fn encodes_a_minimal_request() {
        let mc = MakeCredential::new(minimal()).unwrap();
        let expected = unhex(
            "01 a4
             01 5820 0000000000000000000000000000000000000000000000000000000000000000
             02 a1 626964 6161
             03 a1 626964 4101
             04 81 a2 63616c67 26 6474797065 6a7075626c69632d6b6579",
        );
        assert_eq!(*encode_request(&mc).unwrap(), expected);
    }

    #[test]
    fn encodes_every_member_in_canonical_order() {
        let mc = MakeCredential::new(full()).unwrap();
        // Hand-checked: integer keys ascend; inside the text-keyed maps shorter keys come
        // first ("id" < "name" < "displayName", "alg" < "type", "id" < "type" < "transports",
        // "credProtect" < "hmac-secret" bytewise).
        let expected = unhex(
            "01 ab
             01 5820 000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f
             02 a2 626964 6b6578616d706c652e636f6d
                   646e616d65 674578616d706c65
             03 a3 626964 4475696431
                   646e616d65 65616c696365
                   6b646973706c61794e616d65 65416c696365
             04 82 a2 63616c67 26 6474797065 6a7075626c69632d6b6579
                   a2 63616c67 27 6474797065 6a7075626c69632d6b6579
             05 81 a3 626964 42ccdd
                      6474797065 6a7075626c69632d6b6579
                      6a7472616e73706f727473 82 63757362 636e6663
             06 a2 6b6372656450726f74656374 02
                   6b686d61632d736563726574 f5
             07 a1 62726b f5
             08 50 5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a
             09 01
             0a 02
             0b 81 667061636b6564",
        );
        assert_eq!(*encode_request(&mc).unwrap(), expected);
    }

    #[test]
    fn sorts_typed_and_raw_extensions_together() {
        let ext = Extensions {
            cred_protect: Some(CredProtect::UserVerificationRequired),
            hmac_secret: true,
            cred_blob: Some(vec![0x01, 0x02]),
            large_blob_key: true,
            min_pin_length: true,
            other: BTreeMap::from([("thirdPartyPayment".to_owned(), Value::Bool(true))]),
        };
        // credBlob (8) < credProtect, hmac-secret (11) < largeBlobKey, minPinLength (12)
        // < thirdPartyPayment (17).
        let expected = unhex(
            "a6 686372656442 6c6f62 42 0102
                6b6372656450726f74656374 03
                6b686d61632d736563726574 f5
                6c6c61726765426c6f624b6579 f5
                6c6d696e50696e4c656e677468 f5
                71746869726450617274795061796d656e74 f5",
        );
        assert_eq!(cbor::to_canonical_vec(&ext.to_value()).unwrap(), expected);
    }

    #[test]
    fn validates_the_request() {
        let mut r = minimal();
        r.user.id = Vec::new();
        assert_eq!(MakeCredential::new(r), Err(RequestError::UserIdLength(0)));

        let mut r = minimal();
        r.user.id = vec![0; 65];
        assert_eq!(MakeCredential::new(r), Err(RequestError::UserIdLength(65)));
        let mut r = minimal();
        r.user.id = vec![0; 64];
        assert!(MakeCredential::new(r).is_ok());

        // Never both, whatever the uv value.
        for uv in [true, false] {
            let mut r = minimal();
            r.options.uv = Some(uv);
            r.pin_uv_auth = Some(PinUvAuth {
                param: vec![0; 32],
                protocol: 2,
            });
            assert_eq!(
                MakeCredential::try_from(r),
                Err(RequestError::UvWithPinUvAuthParam)
            );
        }

        let mut r = minimal();
        r.options.up = Some(false);
        assert_eq!(MakeCredential::new(r), Err(RequestError::UpFalse));

        let mut r = minimal();
        r.pub_key_cred_params.clear();
        assert_eq!(
            MakeCredential::new(r),
            Err(RequestError::NoCredentialParameters)
        );

        let mut r = minimal();
        r.extensions.hmac_secret = true;
        r.extensions
            .other
            .insert("hmac-secret".into(), Value::Bool(true));
        assert_eq!(
            MakeCredential::new(r),
            Err(RequestError::DuplicateExtension("hmac-secret".into()))
        );
    }

    #[test]
    fn zero_length_pin_uv_auth_param_is_the_touch_probe() {
        let mut r = minimal();
        r.pin_uv_auth = Some(PinUvAuth {
            param: Vec::new(),
            protocol: 1,
        });
        let bytes = encode_request(&MakeCredential::new(r).unwrap()).unwrap();
        assert_eq!(bytes[1], 0xa6);
        assert!(bytes.ends_with(&[0x08, 0x40, 0x09, 0x01]));
    }

    #[test]
    fn decodes_a_packed_response_and_keeps_att_stmt_bytes() {
        let att_stmt = "a3 63616c67 26 63736967 43aabbcc 63783563 81 42dead";
        let body = unhex(&format!(
            "a3 01 667061636b6564 02 450102030405 03 {att_stmt}"
        ));
        let r = Response::from_cbor(&body).unwrap();
        assert_eq!(r.fmt, "packed");
        assert_eq!(r.auth_data, [1, 2, 3, 4, 5]);
        assert_eq!(r.att_stmt_bytes().unwrap(), unhex(att_stmt));
        let mut stmt = TextMap::new(r.att_stmt.clone(), "attStmt").unwrap();
        assert_eq!(stmt.take("alg"), Some(Value::from(-7)));
        assert_eq!(r.ep_att, None);
        assert!(r.large_blob_key.is_none());
        assert!(r.unsigned_extension_outputs.is_none());
    }

    #[test]
    fn keeps_att_stmt_member_order_as_sent() {
        // "x5c" before "alg": not canonical, but re-emitted as the key sent it.
        let att_stmt = "a2 63783563 80 63616c67 26";
        let body = unhex(&format!("a3 01 667061636b6564 02 4100 03 {att_stmt}"));
        let r = Response::from_cbor(&body).unwrap();
        assert_eq!(r.att_stmt_bytes().unwrap(), unhex(att_stmt));
    }

    #[test]
    fn absent_att_stmt_means_none_attestation() {
        for fmt in ["667061636b6564", "646e6f6e65"] {
            let body = unhex(&format!("a2 01 {fmt} 02 4100"));
            let r = Response::from_cbor(&body).unwrap();
            assert_eq!(r.fmt, FMT_NONE);
            assert_eq!(r.att_stmt, Value::Map(Vec::new()));
            assert_eq!(r.att_stmt_bytes().unwrap(), [0xa0]);
        }
    }

    #[test]
    fn decodes_every_response_member() {
        let body = unhex(
            "a6 01 646e6f6e65 02 4100 03 a0
                04 f4
                05 48 1122334455667788
                06 a1 6b686d61632d736563726574 f5",
        );
        let r = decode_response::<MakeCredential>(&[&[0x00], body.as_slice()].concat()).unwrap();
        assert_eq!(r.fmt, "none");
        assert_eq!(r.ep_att, Some(false));
        // 8 bytes: not the 32 the spec says, but kept for the caller to judge.
        assert_eq!(
            r.large_blob_key.as_deref().map(Vec::as_slice),
            Some(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88][..])
        );
        let outputs = r.unsigned_extension_outputs.clone().unwrap();
        assert_eq!(outputs.get("hmac-secret"), Some(&Value::Bool(true)));
        assert!(!format!("{r:?}").contains("17, 34"));
        assert!(format!("{r:?}").contains("<8 secret bytes>"));
    }

    #[test]
    fn skips_unknown_members() {
        let body = unhex("a4 01 646e6f6e65 02 4100 07 f6 63666f6f 01");
        let r = Response::from_cbor(&body).unwrap();
        assert_eq!(r.fmt, "none");
    }

    #[test]
    fn accepts_non_minimal_lengths() {
        // authData length written as 59 0002 instead of 42: decoding is lenient by design.
        let body = unhex("a3 01 667061636b6564 02 59 0002 aabb 03 a0");
        let r = Response::from_cbor(&body).unwrap();
        assert_eq!(r.auth_data, [0xaa, 0xbb]);
        assert_eq!(r.fmt, "packed");
    }

    #[test]
    fn rejects_hostile_bodies_with_typed_errors() {
        let cases: &[(&str, DecodeError)] = &[
            ("", DecodeError::Empty),
            ("a2 01 646e6f6e65 02", DecodeError::Malformed),
            ("a2 01 646e6f6e65 02 45 0102", DecodeError::Malformed),
            ("a1 02 4100 00", DecodeError::TrailingBytes(1)),
            (
                "82 01 02",
                DecodeError::UnexpectedType {
                    field: "authenticatorMakeCredential response",
                    expected: "map",
                },
            ),
            ("a1 02 4100", DecodeError::Missing("fmt")),
            ("a1 01 646e6f6e65", DecodeError::Missing("authData")),
            (
                "a2 01 01 02 4100",
                DecodeError::UnexpectedType {
                    field: "fmt",
                    expected: "text string",
                },
            ),
            (
                "a2 01 646e6f6e65 02 6100",
                DecodeError::UnexpectedType {
                    field: "authData",
                    expected: "byte string",
                },
            ),
            (
                "a3 01 646e6f6e65 02 4100 03 80",
                DecodeError::UnexpectedType {
                    field: "attStmt",
                    expected: "map",
                },
            ),
            (
                "a3 01 646e6f6e65 02 4100 04 01",
                DecodeError::UnexpectedType {
                    field: "epAtt",
                    expected: "boolean",
                },
            ),
            (
                "a3 01 646e6f6e65 02 4100 05 f5",
                DecodeError::UnexpectedType {
                    field: "largeBlobKey",
                    expected: "byte string",
                },
            ),
            (
                "a3 01 646e6f6e65 02 4100 06 80",
                DecodeError::UnexpectedType {
                    field: "unsignedExtensionOutputs",
                    expected: "map",
                },
            ),
            (
                "a3 01 646e6f6e65 02 4100 01 646e6f6e65",
                DecodeError::DuplicateKey("authenticatorMakeCredential response"),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                Response::from_cbor(&unhex(body)).unwrap_err(),
                *expected,
                "{body}"
            );
        }
    }

    #[test]
    fn reports_error_statuses() {
        assert_eq!(
            decode_response::<MakeCredential>(&[0x19]).unwrap_err(),
            ResponseError::Status(StatusCode::CredentialExcluded)
        );
        assert_eq!(
            decode_response::<MakeCredential>(&[0x00]).unwrap_err(),
            ResponseError::Decode(DecodeError::Empty)
        );
    }

    #[test]
    fn parses_algorithm_entries_leniently_for_unknown_types() {
        let entry = |hex: &str| {
            PublicKeyCredentialParameters::from_value(cbor::from_slice(&unhex(hex)).unwrap(), "a")
        };
        // {"alg": -7, "type": "public-key"}
        assert_eq!(
            entry("a2 63616c67 26 6474797065 6a7075626c69632d6b6579").unwrap(),
            Some(PublicKeyCredentialParameters::public_key(-7))
        );
        // {"alg": -7, "type": "x"}: kept.
        assert_eq!(
            entry("a2 63616c67 26 6474797065 6178").unwrap(),
            Some(PublicKeyCredentialParameters {
                cred_type: CredentialType::Other("x".into()),
                alg: -7
            })
        );
        // {"alg": "?", "type": "x"}: skipped.
        assert_eq!(entry("a2 63616c67 613f 6474797065 6178").unwrap(), None);
        // {"type": "public-key"}: a public-key entry must have alg.
        assert_eq!(
            entry("a1 6474797065 6a7075626c69632d6b6579").unwrap_err(),
            DecodeError::Missing("a")
        );
        // {"alg": -7}: no type.
        assert_eq!(
            entry("a1 63616c67 26").unwrap_err(),
            DecodeError::Missing("a")
        );
    }
}
