//! authenticatorClientPIN (0x06): PIN management and pinUvAuthToken retrieval (CTAP 2.2 §6.5).
//!
//! Each subcommand is its own [`Command`] type with exactly the members the spec sends for it
//! (CTAP 2.2 §6.5.5), and its own response type with the members the spec requires in the
//! answer. The commands carry already-computed cryptographic values (the platform's
//! key-agreement key, encrypted PIN material, pinUvAuthParam); computing them is
//! [`crate::pin_uv`]'s job. Secret-derived byte strings are held in [`Zeroizing`] buffers and
//! left out of `Debug` output.

use core::fmt;
use core::ops::{BitOr, BitOrAssign};

use zeroize::Zeroizing;

use super::make_credential::Redacted;
use super::{Command, code};
use crate::cbor::{self, DecodeError, IntMap, Value, conv};
use crate::cose::CoseKey;
use crate::pin_uv::{self, Pin, PinUvAuthProtocol, SharedSecret};
use rand_core::CryptoRngCore;

// Request member keys (CTAP 2.2 §6.5.5, authenticatorClientPIN parameters).
const PIN_UV_AUTH_PROTOCOL: i64 = 0x01;
const SUB_COMMAND: i64 = 0x02;
const KEY_AGREEMENT: i64 = 0x03;
const PIN_UV_AUTH_PARAM: i64 = 0x04;
const NEW_PIN_ENC: i64 = 0x05;
const PIN_HASH_ENC: i64 = 0x06;
const PERMISSIONS: i64 = 0x09;
const RP_ID: i64 = 0x0A;

// Response member keys (CTAP 2.2 §6.5.5, authenticatorClientPIN response).
const RESP_KEY_AGREEMENT: i64 = 0x01;
const RESP_PIN_UV_AUTH_TOKEN: i64 = 0x02;
const RESP_PIN_RETRIES: i64 = 0x03;
const RESP_POWER_CYCLE_STATE: i64 = 0x04;
const RESP_UV_RETRIES: i64 = 0x05;

/// The subCommand values (CTAP 2.2 §6.5.5).
pub mod subcommand {
    /// getPINRetries.
    pub const GET_PIN_RETRIES: u8 = 0x01;
    /// getKeyAgreement.
    pub const GET_KEY_AGREEMENT: u8 = 0x02;
    /// setPIN.
    pub const SET_PIN: u8 = 0x03;
    /// changePIN.
    pub const CHANGE_PIN: u8 = 0x04;
    /// getPinToken (superseded by the permission variants on CTAP 2.1 keys).
    pub const GET_PIN_TOKEN: u8 = 0x05;
    /// getPinUvAuthTokenUsingUvWithPermissions.
    pub const GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS: u8 = 0x06;
    /// getUVRetries.
    pub const GET_UV_RETRIES: u8 = 0x07;
    /// getPinUvAuthTokenUsingPinWithPermissions.
    pub const GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS: u8 = 0x09;
}

/// pinUvAuthToken permissions (CTAP 2.2 §6.5.5.7, "permissions" bit values).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Permissions(u8);

impl Permissions {
    /// `mc`: authenticatorMakeCredential.
    pub const MAKE_CREDENTIAL: Self = Self(0x01);
    /// `ga`: authenticatorGetAssertion.
    pub const GET_ASSERTION: Self = Self(0x02);
    /// `cm`: authenticatorCredentialManagement.
    pub const CREDENTIAL_MANAGEMENT: Self = Self(0x04);
    /// `be`: authenticatorBioEnrollment.
    pub const BIO_ENROLLMENT: Self = Self(0x08);
    /// `lbw`: authenticatorLargeBlobs write.
    pub const LARGE_BLOB_WRITE: Self = Self(0x10);
    /// `acfg`: authenticatorConfig.
    pub const AUTHENTICATOR_CONFIGURATION: Self = Self(0x20);
    /// `pcmr`: persistent credential management, read-only (CTAP 2.2).
    pub const PERSISTENT_CREDENTIAL_MANAGEMENT_READ_ONLY: Self = Self(0x40);

    /// No permission.
    pub const fn empty() -> Self {
        Self(0)
    }

    /// The bit set as sent on the wire.
    pub const fn bits(self) -> u8 {
        self.0
    }

    /// Any bit set, including bits this module has no name for.
    pub const fn from_bits_retain(bits: u8) -> Self {
        Self(bits)
    }

    /// Whether every bit of `other` is set in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// Whether no bit is set.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Whether a permission in the set must be scoped to an RP ID: mc and ga require `rpId`
    /// (CTAP 2.2 §6.5.5.7).
    pub const fn requires_rp_id(self) -> bool {
        self.0 & (Self::MAKE_CREDENTIAL.0 | Self::GET_ASSERTION.0) != 0
    }
}

impl BitOr for Permissions {
    type Output = Self;

    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

impl BitOrAssign for Permissions {
    fn bitor_assign(&mut self, rhs: Self) {
        self.0 |= rhs.0;
    }
}

/// Builds the request map; `members` are (key, value) pairs, `None` values are left out.
fn request(
    protocol: Option<u32>,
    subcommand: u8,
    members: impl IntoIterator<Item = (i64, Option<Value>)>,
) -> Option<Value> {
    let mut m = Vec::with_capacity(6);
    if let Some(protocol) = protocol {
        m.push((Value::from(PIN_UV_AUTH_PROTOCOL), Value::from(protocol)));
    }
    m.push((Value::from(SUB_COMMAND), Value::from(subcommand)));
    m.extend(
        members
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (Value::from(k), v))),
    );
    Some(Value::Map(m))
}

fn bytes(b: &[u8]) -> Option<Value> {
    Some(Value::Bytes(b.to_vec()))
}

/// Any authenticatorClientPIN response, with every member optional (CTAP 2.2 §6.5.5).
///
/// The per-subcommand responses are built from this by requiring the members that
/// subcommand must return. An empty body decodes to all-`None`.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Response {
    /// `keyAgreement` (0x01): the authenticator's key-agreement key.
    pub key_agreement: Option<CoseKey>,
    /// `pinUvAuthToken` (0x02): the token, encrypted with the shared secret.
    pub pin_uv_auth_token: Option<Zeroizing<Vec<u8>>>,
    /// `pinRetries` (0x03).
    pub pin_retries: Option<u32>,
    /// `powerCycleState` (0x04): a power cycle is needed before the next PIN attempt.
    pub power_cycle_state: Option<bool>,
    /// `uvRetries` (0x05).
    pub uv_retries: Option<u32>,
}

impl Response {
    /// Decodes a response body; unknown members are skipped.
    pub fn from_cbor(body: &[u8]) -> Result<Self, DecodeError> {
        if body.is_empty() {
            return Ok(Self::default());
        }
        let mut m = IntMap::from_slice(body, "authenticatorClientPIN response")?;
        Ok(Self {
            key_agreement: m.optional(RESP_KEY_AGREEMENT, "keyAgreement", |v, _| {
                CoseKey::from_value(v)
            })?,
            pin_uv_auth_token: m
                .optional(RESP_PIN_UV_AUTH_TOKEN, "pinUvAuthToken", conv::bytes)?
                .map(Zeroizing::new),
            pin_retries: m.optional(RESP_PIN_RETRIES, "pinRetries", conv::int)?,
            power_cycle_state: m.optional(
                RESP_POWER_CYCLE_STATE,
                "powerCycleState",
                conv::boolean,
            )?,
            uv_retries: m.optional(RESP_UV_RETRIES, "uvRetries", conv::int)?,
        })
    }
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("key_agreement", &self.key_agreement)
            .field(
                "pin_uv_auth_token",
                &self.pin_uv_auth_token.as_ref().map(|t| Redacted(t.len())),
            )
            .field("pin_retries", &self.pin_retries)
            .field("power_cycle_state", &self.power_cycle_state)
            .field("uv_retries", &self.uv_retries)
            .finish()
    }
}

/// getPINRetries response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct PinRetries {
    /// `pinRetries`: attempts left before the PIN is blocked.
    pub pin_retries: u32,
    /// `powerCycleState`, if sent.
    pub power_cycle_state: Option<bool>,
}

/// getKeyAgreement response.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KeyAgreement {
    /// `keyAgreement`: the authenticator's ECDH key (validate it with
    /// [`CoseKey::to_p256`]).
    pub key_agreement: CoseKey,
}

/// The response to the three token subcommands: the encrypted pinUvAuthToken.
#[derive(Clone, PartialEq, Eq)]
pub struct PinUvAuthToken {
    /// `pinUvAuthToken`, still encrypted with the shared secret; [`crate::pin_uv`] decrypts
    /// it.
    pub encrypted: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for PinUvAuthToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinUvAuthToken")
            .field("encrypted", &Redacted(self.encrypted.len()))
            .finish()
    }
}

/// getUVRetries response.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct UvRetries {
    /// `uvRetries`: built-in UV attempts left.
    pub uv_retries: u32,
}

fn token(body: &[u8]) -> Result<PinUvAuthToken, DecodeError> {
    let encrypted = Response::from_cbor(body)?
        .pin_uv_auth_token
        .ok_or(DecodeError::Missing("pinUvAuthToken"))?;
    Ok(PinUvAuthToken { encrypted })
}

/// getPINRetries (0x01).
///
/// CTAP 2.1 sends the subcommand alone; CTAP 2.0 listed `pinProtocol` as a member of every
/// clientPIN request, so a protocol can be given for 2.0 keys that insist on it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GetPinRetries {
    /// `pinUvAuthProtocol`, sent only when `Some`.
    pub pin_uv_auth_protocol: Option<u32>,
}

impl Command for GetPinRetries {
    const CODE: u8 = code::CLIENT_PIN;
    type Response = PinRetries;

    fn parameters(&self) -> Option<Value> {
        request(self.pin_uv_auth_protocol, subcommand::GET_PIN_RETRIES, [])
    }

    fn decode(body: &[u8]) -> Result<PinRetries, DecodeError> {
        let r = Response::from_cbor(body)?;
        Ok(PinRetries {
            pin_retries: r.pin_retries.ok_or(DecodeError::Missing("pinRetries"))?,
            power_cycle_state: r.power_cycle_state,
        })
    }
}

/// getKeyAgreement (0x02).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct GetKeyAgreement {
    /// `pinUvAuthProtocol`.
    pub pin_uv_auth_protocol: u32,
}

impl Command for GetKeyAgreement {
    const CODE: u8 = code::CLIENT_PIN;
    type Response = KeyAgreement;

    fn parameters(&self) -> Option<Value> {
        request(
            Some(self.pin_uv_auth_protocol),
            subcommand::GET_KEY_AGREEMENT,
            [],
        )
    }

    fn decode(body: &[u8]) -> Result<KeyAgreement, DecodeError> {
        let key_agreement = Response::from_cbor(body)?
            .key_agreement
            .ok_or(DecodeError::Missing("keyAgreement"))?;
        Ok(KeyAgreement { key_agreement })
    }
}

/// setPIN (0x03). The success response has no members.
#[derive(Clone, PartialEq, Eq)]
pub struct SetPin {
    /// `pinUvAuthProtocol`.
    pub pin_uv_auth_protocol: u32,
    /// `keyAgreement`: the platform's ephemeral public key.
    pub key_agreement: CoseKey,
    /// `newPinEnc`: the padded new PIN, encrypted with the shared secret.
    pub new_pin_enc: Zeroizing<Vec<u8>>,
    /// `pinUvAuthParam`: authenticate(shared secret, newPinEnc).
    pub pin_uv_auth_param: Vec<u8>,
}

impl Command for SetPin {
    const CODE: u8 = code::CLIENT_PIN;
    type Response = ();

    fn parameters(&self) -> Option<Value> {
        request(
            Some(self.pin_uv_auth_protocol),
            subcommand::SET_PIN,
            [
                (KEY_AGREEMENT, Some(self.key_agreement.to_value())),
                (PIN_UV_AUTH_PARAM, bytes(&self.pin_uv_auth_param)),
                (NEW_PIN_ENC, bytes(&self.new_pin_enc)),
            ],
        )
    }

    fn decode(body: &[u8]) -> Result<(), DecodeError> {
        cbor::empty_body(body, "setPIN response")
    }
}

impl fmt::Debug for SetPin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SetPin")
            .field("pin_uv_auth_protocol", &self.pin_uv_auth_protocol)
            .field("key_agreement", &self.key_agreement)
            .field("new_pin_enc", &Redacted(self.new_pin_enc.len()))
            .field("pin_uv_auth_param", &self.pin_uv_auth_param)
            .finish()
    }
}

/// changePIN (0x04). The success response has no members.
#[derive(Clone, PartialEq, Eq)]
pub struct ChangePin {
    /// `pinUvAuthProtocol`.
    pub pin_uv_auth_protocol: u32,
    /// `keyAgreement`: the platform's ephemeral public key.
    pub key_agreement: CoseKey,
    /// `pinHashEnc`: LEFT(SHA-256(current PIN), 16), encrypted.
    pub pin_hash_enc: Zeroizing<Vec<u8>>,
    /// `newPinEnc`: the padded new PIN, encrypted.
    pub new_pin_enc: Zeroizing<Vec<u8>>,
    /// `pinUvAuthParam`: authenticate(shared secret, newPinEnc ‖ pinHashEnc).
    pub pin_uv_auth_param: Vec<u8>,
}

impl Command for ChangePin {
    const CODE: u8 = code::CLIENT_PIN;
    type Response = ();

    fn parameters(&self) -> Option<Value> {
        request(
            Some(self.pin_uv_auth_protocol),
            subcommand::CHANGE_PIN,
            [
                (KEY_AGREEMENT, Some(self.key_agreement.to_value())),
                (PIN_UV_AUTH_PARAM, bytes(&self.pin_uv_auth_param)),
                (NEW_PIN_ENC, bytes(&self.new_pin_enc)),
                (PIN_HASH_ENC, bytes(&self.pin_hash_enc)),
            ],
        )
    }

    fn decode(body: &[u8]) -> Result<(), DecodeError> {
        cbor::empty_body(body, "changePIN response")
    }
}

impl fmt::Debug for ChangePin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChangePin")
            .field("pin_uv_auth_protocol", &self.pin_uv_auth_protocol)
            .field("key_agreement", &self.key_agreement)
            .field("pin_hash_enc", &Redacted(self.pin_hash_enc.len()))
            .field("new_pin_enc", &Redacted(self.new_pin_enc.len()))
            .field("pin_uv_auth_param", &self.pin_uv_auth_param)
            .finish()
    }
}

/// getPinToken (0x05): a token with the default (mc and ga) permissions. Use it only when
/// getInfo option `pinUvAuthToken` is absent (CTAP 2.0 keys).
#[derive(Clone, PartialEq, Eq)]
pub struct GetPinToken {
    /// `pinUvAuthProtocol`.
    pub pin_uv_auth_protocol: u32,
    /// `keyAgreement`: the platform's ephemeral public key.
    pub key_agreement: CoseKey,
    /// `pinHashEnc`: LEFT(SHA-256(PIN), 16), encrypted.
    pub pin_hash_enc: Zeroizing<Vec<u8>>,
}

impl Command for GetPinToken {
    const CODE: u8 = code::CLIENT_PIN;
    type Response = PinUvAuthToken;

    fn parameters(&self) -> Option<Value> {
        request(
            Some(self.pin_uv_auth_protocol),
            subcommand::GET_PIN_TOKEN,
            [
                (KEY_AGREEMENT, Some(self.key_agreement.to_value())),
                (PIN_HASH_ENC, bytes(&self.pin_hash_enc)),
            ],
        )
    }

    fn decode(body: &[u8]) -> Result<PinUvAuthToken, DecodeError> {
        token(body)
    }
}

impl fmt::Debug for GetPinToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetPinToken")
            .field("pin_uv_auth_protocol", &self.pin_uv_auth_protocol)
            .field("key_agreement", &self.key_agreement)
            .field("pin_hash_enc", &Redacted(self.pin_hash_enc.len()))
            .finish()
    }
}

/// getPinUvAuthTokenUsingUvWithPermissions (0x06): a token after built-in UV.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetPinUvAuthTokenUsingUvWithPermissions {
    /// `pinUvAuthProtocol`.
    pub pin_uv_auth_protocol: u32,
    /// `keyAgreement`: the platform's ephemeral public key.
    pub key_agreement: CoseKey,
    /// `permissions`: must not be empty.
    pub permissions: Permissions,
    /// `rpId`: required for the mc and ga permissions.
    pub rp_id: Option<String>,
}

impl Command for GetPinUvAuthTokenUsingUvWithPermissions {
    const CODE: u8 = code::CLIENT_PIN;
    type Response = PinUvAuthToken;

    fn parameters(&self) -> Option<Value> {
        request(
            Some(self.pin_uv_auth_protocol),
            subcommand::GET_PIN_UV_AUTH_TOKEN_USING_UV_WITH_PERMISSIONS,
            [
                (KEY_AGREEMENT, Some(self.key_agreement.to_value())),
                (PERMISSIONS, Some(Value::from(self.permissions.bits()))),
                (RP_ID, self.rp_id.as_deref().map(Value::from)),
            ],
        )
    }

    fn decode(body: &[u8]) -> Result<PinUvAuthToken, DecodeError> {
        token(body)
    }
}

/// getUVRetries (0x07).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GetUvRetries {
    /// `pinUvAuthProtocol`, sent only when `Some` (CTAP 2.1 sends the subcommand alone).
    pub pin_uv_auth_protocol: Option<u32>,
}

impl Command for GetUvRetries {
    const CODE: u8 = code::CLIENT_PIN;
    type Response = UvRetries;

    fn parameters(&self) -> Option<Value> {
        request(self.pin_uv_auth_protocol, subcommand::GET_UV_RETRIES, [])
    }

    fn decode(body: &[u8]) -> Result<UvRetries, DecodeError> {
        let uv_retries = Response::from_cbor(body)?
            .uv_retries
            .ok_or(DecodeError::Missing("uvRetries"))?;
        Ok(UvRetries { uv_retries })
    }
}

/// getPinUvAuthTokenUsingPinWithPermissions (0x09): a token for a PIN, scoped by permissions.
#[derive(Clone, PartialEq, Eq)]
pub struct GetPinUvAuthTokenUsingPinWithPermissions {
    /// `pinUvAuthProtocol`.
    pub pin_uv_auth_protocol: u32,
    /// `keyAgreement`: the platform's ephemeral public key.
    pub key_agreement: CoseKey,
    /// `pinHashEnc`: LEFT(SHA-256(PIN), 16), encrypted.
    pub pin_hash_enc: Zeroizing<Vec<u8>>,
    /// `permissions`: must not be empty.
    pub permissions: Permissions,
    /// `rpId`: required for the mc and ga permissions.
    pub rp_id: Option<String>,
}

impl Command for GetPinUvAuthTokenUsingPinWithPermissions {
    const CODE: u8 = code::CLIENT_PIN;
    type Response = PinUvAuthToken;

    fn parameters(&self) -> Option<Value> {
        request(
            Some(self.pin_uv_auth_protocol),
            subcommand::GET_PIN_UV_AUTH_TOKEN_USING_PIN_WITH_PERMISSIONS,
            [
                (KEY_AGREEMENT, Some(self.key_agreement.to_value())),
                (PIN_HASH_ENC, bytes(&self.pin_hash_enc)),
                (PERMISSIONS, Some(Value::from(self.permissions.bits()))),
                (RP_ID, self.rp_id.as_deref().map(Value::from)),
            ],
        )
    }

    fn decode(body: &[u8]) -> Result<PinUvAuthToken, DecodeError> {
        token(body)
    }
}

impl fmt::Debug for GetPinUvAuthTokenUsingPinWithPermissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GetPinUvAuthTokenUsingPinWithPermissions")
            .field("pin_uv_auth_protocol", &self.pin_uv_auth_protocol)
            .field("key_agreement", &self.key_agreement)
            .field("pin_hash_enc", &Redacted(self.pin_hash_enc.len()))
            .field("permissions", &self.permissions)
            .field("rp_id", &self.rp_id)
            .finish()
    }
}

/// One PIN/UV auth protocol session with an authenticator: the platform's ephemeral
/// key-agreement key and the shared secret derived from the authenticator's getKeyAgreement
/// response (CTAP 2.2 §6.5.5.4, §6.5.6, §6.5.7).
///
/// It builds the clientPIN requests that need the shared secret and decrypts the token they
/// return. Keys regenerate their key agreement after a failed PIN attempt, so use a session
/// for one request: get a fresh key agreement before every PIN attempt.
#[derive(Debug)]
pub struct PinSession {
    platform_key: CoseKey,
    secret: SharedSecret,
}

impl PinSession {
    /// Runs `encapsulate` against the authenticator's key-agreement key.
    pub fn new(
        protocol: PinUvAuthProtocol,
        authenticator: &KeyAgreement,
        rng: &mut impl CryptoRngCore,
    ) -> Result<Self, pin_uv::Error> {
        let (platform_key, secret) =
            pin_uv::encapsulate(protocol, &authenticator.key_agreement, rng)?;
        Ok(Self {
            platform_key,
            secret,
        })
    }

    /// The protocol in use.
    pub fn protocol(&self) -> PinUvAuthProtocol {
        self.secret.protocol()
    }

    /// A setPIN request for `new_pin`.
    pub fn set_pin(
        &self,
        new_pin: &Pin,
        rng: &mut impl CryptoRngCore,
    ) -> Result<SetPin, pin_uv::Error> {
        let p = self.secret.set_pin(new_pin, rng)?;
        Ok(SetPin {
            pin_uv_auth_protocol: u32::from(self.protocol().number()),
            key_agreement: self.platform_key.clone(),
            new_pin_enc: p.new_pin_enc,
            pin_uv_auth_param: p.pin_uv_auth_param,
        })
    }

    /// A changePIN request from `current` to `new_pin`.
    pub fn change_pin(
        &self,
        current: &Pin,
        new_pin: &Pin,
        rng: &mut impl CryptoRngCore,
    ) -> Result<ChangePin, pin_uv::Error> {
        let p = self.secret.change_pin(current, new_pin, rng)?;
        Ok(ChangePin {
            pin_uv_auth_protocol: u32::from(self.protocol().number()),
            key_agreement: self.platform_key.clone(),
            pin_hash_enc: p.pin_hash_enc,
            new_pin_enc: p.new_pin_enc,
            pin_uv_auth_param: p.pin_uv_auth_param,
        })
    }

    /// A legacy getPinToken request, for keys without the `pinUvAuthToken` option.
    pub fn get_pin_token(
        &self,
        pin: &Pin,
        rng: &mut impl CryptoRngCore,
    ) -> Result<GetPinToken, pin_uv::Error> {
        Ok(GetPinToken {
            pin_uv_auth_protocol: u32::from(self.protocol().number()),
            key_agreement: self.platform_key.clone(),
            pin_hash_enc: self.secret.pin_hash_enc(pin, rng)?,
        })
    }

    /// A getPinUvAuthTokenUsingPinWithPermissions request.
    pub fn get_token_using_pin(
        &self,
        pin: &Pin,
        permissions: Permissions,
        rp_id: Option<String>,
        rng: &mut impl CryptoRngCore,
    ) -> Result<GetPinUvAuthTokenUsingPinWithPermissions, pin_uv::Error> {
        Ok(GetPinUvAuthTokenUsingPinWithPermissions {
            pin_uv_auth_protocol: u32::from(self.protocol().number()),
            key_agreement: self.platform_key.clone(),
            pin_hash_enc: self.secret.pin_hash_enc(pin, rng)?,
            permissions,
            rp_id,
        })
    }

    /// A getPinUvAuthTokenUsingUvWithPermissions request (built-in user verification).
    pub fn get_token_using_uv(
        &self,
        permissions: Permissions,
        rp_id: Option<String>,
    ) -> GetPinUvAuthTokenUsingUvWithPermissions {
        GetPinUvAuthTokenUsingUvWithPermissions {
            pin_uv_auth_protocol: u32::from(self.protocol().number()),
            key_agreement: self.platform_key.clone(),
            permissions,
            rp_id,
        }
    }

    /// Decrypts and length-checks the token of a token-issuing response.
    pub fn decrypt_token(
        &self,
        response: &PinUvAuthToken,
    ) -> Result<pin_uv::PinUvAuthToken, pin_uv::Error> {
        self.secret.decrypt_pin_uv_auth_token(&response.encrypted)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ResponseError, decode_response, encode_request};
    use crate::cose::{alg, curve};
    use crate::status::StatusCode;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap()
    }

    fn platform_key() -> CoseKey {
        CoseKey::Ec2 {
            alg: Some(alg::ECDH_ES_HKDF_256),
            crv: curve::P256,
            x: vec![0x11; 32],
            y: vec![0x22; 32],
        }
    }

    /// {1: 2, 3: -25, -1: 1, -2: h'11..', -3: h'22..'} (CTAP 2.2 §6.5.6 key order).
    fn cose_hex() -> String {
        format!(
            "a5 0102 033818 2001 215820{} 225820{}",
            "11".repeat(32),
            "22".repeat(32)
        )
    }

    fn enc<C: Command>(c: &C) -> Vec<u8> {
        encode_request(c).unwrap().to_vec()
    }

    #[test]
    fn encodes_retries_and_key_agreement_requests() {
        assert_eq!(enc(&GetPinRetries::default()), unhex("06 a1 02 01"));
        let with_protocol = GetPinRetries {
            pin_uv_auth_protocol: Some(1),
        };
        assert_eq!(enc(&with_protocol), unhex("06 a2 01 01 02 01"));
        let ka = GetKeyAgreement {
            pin_uv_auth_protocol: 2,
        };
        assert_eq!(enc(&ka), unhex("06 a2 01 02 02 02"));
        assert_eq!(enc(&GetUvRetries::default()), unhex("06 a1 02 07"));
    }

    #[test]
    fn encodes_set_and_change_pin() {
        let set = SetPin {
            pin_uv_auth_protocol: 2,
            key_agreement: platform_key(),
            new_pin_enc: Zeroizing::new(vec![0x33; 80]),
            pin_uv_auth_param: vec![0x44; 32],
        };
        let expected = format!(
            "06 a5 0102 0203 03{} 045820{} 055850{}",
            cose_hex(),
            "44".repeat(32),
            "33".repeat(80)
        );
        assert_eq!(enc(&set), unhex(&expected));

        let change = ChangePin {
            pin_uv_auth_protocol: 2,
            key_agreement: platform_key(),
            pin_hash_enc: Zeroizing::new(vec![0x55; 32]),
            new_pin_enc: Zeroizing::new(vec![0x33; 80]),
            pin_uv_auth_param: vec![0x44; 32],
        };
        let expected = format!(
            "06 a6 0102 0204 03{} 045820{} 055850{} 065820{}",
            cose_hex(),
            "44".repeat(32),
            "33".repeat(80),
            "55".repeat(32)
        );
        assert_eq!(enc(&change), unhex(&expected));
    }

    #[test]
    fn encodes_token_requests() {
        let legacy = GetPinToken {
            pin_uv_auth_protocol: 1,
            key_agreement: platform_key(),
            pin_hash_enc: Zeroizing::new(vec![0x55; 16]),
        };
        let expected = format!("06 a4 0101 0205 03{} 0650{}", cose_hex(), "55".repeat(16));
        assert_eq!(enc(&legacy), unhex(&expected));

        let uv = GetPinUvAuthTokenUsingUvWithPermissions {
            pin_uv_auth_protocol: 2,
            key_agreement: platform_key(),
            permissions: Permissions::MAKE_CREDENTIAL | Permissions::GET_ASSERTION,
            rp_id: Some("example.com".into()),
        };
        let expected = format!(
            "06 a5 0102 0206 03{} 0903 0a6b6578616d706c652e636f6d",
            cose_hex()
        );
        assert_eq!(enc(&uv), unhex(&expected));

        // 0x51 = mc | lbw | pcmr, encoded as 18 51; no rpId member without an RP.
        let pin = GetPinUvAuthTokenUsingPinWithPermissions {
            pin_uv_auth_protocol: 2,
            key_agreement: platform_key(),
            pin_hash_enc: Zeroizing::new(vec![0x55; 32]),
            permissions: Permissions::MAKE_CREDENTIAL
                | Permissions::LARGE_BLOB_WRITE
                | Permissions::PERSISTENT_CREDENTIAL_MANAGEMENT_READ_ONLY,
            rp_id: None,
        };
        let expected = format!(
            "06 a5 0102 0209 03{} 065820{} 091851",
            cose_hex(),
            "55".repeat(32)
        );
        assert_eq!(enc(&pin), unhex(&expected));
    }

    #[test]
    fn permissions_behave_like_bitflags() {
        let mut p = Permissions::empty();
        assert!(p.is_empty());
        p |= Permissions::MAKE_CREDENTIAL;
        p |= Permissions::LARGE_BLOB_WRITE;
        assert_eq!(p.bits(), 0x11);
        assert!(p.contains(Permissions::MAKE_CREDENTIAL));
        assert!(!p.contains(Permissions::MAKE_CREDENTIAL | Permissions::GET_ASSERTION));
        assert!(p.requires_rp_id());
        assert!(!Permissions::CREDENTIAL_MANAGEMENT.requires_rp_id());
        assert_eq!(Permissions::from_bits_retain(0x80).bits(), 0x80);
        let all = [
            Permissions::MAKE_CREDENTIAL,
            Permissions::GET_ASSERTION,
            Permissions::CREDENTIAL_MANAGEMENT,
            Permissions::BIO_ENROLLMENT,
            Permissions::LARGE_BLOB_WRITE,
            Permissions::AUTHENTICATOR_CONFIGURATION,
            Permissions::PERSISTENT_CREDENTIAL_MANAGEMENT_READ_ONLY,
        ];
        let bits: Vec<u8> = all.iter().map(|p| p.bits()).collect();
        assert_eq!(bits, [0x01, 0x02, 0x04, 0x08, 0x10, 0x20, 0x40]);
    }

    #[test]
    fn decodes_every_response_member() {
        let body = unhex(&format!(
            "a6 01{} 0250{} 0308 04f5 0502 1863f6",
            cose_hex(),
            "77".repeat(16)
        ));
        let r = Response::from_cbor(&body).unwrap();
        assert_eq!(r.key_agreement, Some(platform_key()));
        assert_eq!(r.pin_uv_auth_token.as_deref(), Some(&vec![0x77; 16]));
        assert_eq!(r.pin_retries, Some(8));
        assert_eq!(r.power_cycle_state, Some(true));
        assert_eq!(r.uv_retries, Some(2));
        assert_eq!(Response::from_cbor(&[]).unwrap(), Response::default());
        let debug = format!("{r:?}");
        assert!(debug.contains("<16 secret bytes>"), "{debug}");
        assert!(!debug.contains("119, 119"), "{debug}");
    }

    #[test]
    fn decodes_per_subcommand_responses() {
        let ok = |body: &str| [&[0x00][..], &unhex(body)].concat();
        assert_eq!(
            decode_response::<GetPinRetries>(&ok("a2 0308 04f4")).unwrap(),
            PinRetries {
                pin_retries: 8,
                power_cycle_state: Some(false)
            }
        );
        assert_eq!(
            decode_response::<GetKeyAgreement>(&ok(&format!("a1 01{}", cose_hex())))
                .unwrap()
                .key_agreement,
            platform_key()
        );
        let token = format!("a1 025830{}", "66".repeat(48));
        assert_eq!(
            *decode_response::<GetPinToken>(&ok(&token))
                .unwrap()
                .encrypted,
            vec![0x66; 48]
        );
        assert_eq!(
            decode_response::<GetPinUvAuthTokenUsingPinWithPermissions>(&ok(&token))
                .unwrap()
                .encrypted
                .len(),
            48
        );
        assert_eq!(
            decode_response::<GetPinUvAuthTokenUsingUvWithPermissions>(&ok(&token))
                .unwrap()
                .encrypted
                .len(),
            48
        );
        assert_eq!(
            decode_response::<GetUvRetries>(&ok("a1 0503")).unwrap(),
            UvRetries { uv_retries: 3 }
        );
        // setPIN/changePIN: status byte alone, or an empty map.
        decode_response::<SetPin>(&[0x00]).unwrap();
        decode_response::<ChangePin>(&[0x00]).unwrap();
        decode_response::<SetPin>(&[0x00, 0xa0]).unwrap();
    }

    #[test]
    fn reports_missing_required_members() {
        let ok = |body: &str| [&[0x00][..], &unhex(body)].concat();
        let missing = |m| ResponseError::Decode(DecodeError::Missing(m));
        assert_eq!(
            decode_response::<GetPinRetries>(&[0x00]).unwrap_err(),
            missing("pinRetries")
        );
        assert_eq!(
            decode_response::<GetPinRetries>(&ok("a1 0503")).unwrap_err(),
            missing("pinRetries")
        );
        assert_eq!(
            decode_response::<GetKeyAgreement>(&ok("a0")).unwrap_err(),
            missing("keyAgreement")
        );
        assert_eq!(
            decode_response::<GetPinToken>(&ok("a1 0308")).unwrap_err(),
            missing("pinUvAuthToken")
        );
        assert_eq!(
            decode_response::<GetUvRetries>(&ok("a1 0308")).unwrap_err(),
            missing("uvRetries")
        );
    }

    #[test]
    fn rejects_hostile_bodies_with_typed_errors() {
        let wrong = |field, expected| DecodeError::UnexpectedType { field, expected };
        let cases: &[(&str, DecodeError)] = &[
            ("a1 03", DecodeError::Malformed),
            ("a1 0308 ff", DecodeError::TrailingBytes(1)),
            ("80", wrong("authenticatorClientPIN response", "map")),
            ("a1 0320", DecodeError::OutOfRange("pinRetries")),
            (
                "a1 03 1b0000000100000000",
                DecodeError::OutOfRange("pinRetries"),
            ),
            ("a1 03 6138", wrong("pinRetries", "integer")),
            ("a1 04 01", wrong("powerCycleState", "boolean")),
            ("a1 05 f5", wrong("uvRetries", "integer")),
            ("a1 02 6178", wrong("pinUvAuthToken", "byte string")),
            ("a1 01 80", wrong("COSE_Key", "map")),
            ("a1 01 a1 0338 18", DecodeError::Missing("COSE_Key kty")),
            (
                "a2 0308 0307",
                DecodeError::DuplicateKey("authenticatorClientPIN response"),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                Response::from_cbor(&unhex(body)).unwrap_err(),
                *expected,
                "{body}"
            );
        }
        assert_eq!(
            SetPin::decode(&unhex("80")).unwrap_err(),
            wrong("setPIN response", "empty body or map")
        );
        assert_eq!(
            ChangePin::decode(&unhex("a1")).unwrap_err(),
            DecodeError::Malformed
        );
    }

    #[test]
    fn pin_errors_come_back_as_statuses() {
        assert_eq!(
            decode_response::<GetPinUvAuthTokenUsingPinWithPermissions>(&[0x31]).unwrap_err(),
            ResponseError::Status(StatusCode::PinInvalid)
        );
        assert_eq!(
            decode_response::<SetPin>(&[0x37]).unwrap_err(),
            ResponseError::Status(StatusCode::PinPolicyViolation)
        );
    }

    #[test]
    fn debug_output_hides_secret_derived_bytes() {
        let cmd = GetPinUvAuthTokenUsingPinWithPermissions {
            pin_uv_auth_protocol: 2,
            key_agreement: platform_key(),
            pin_hash_enc: Zeroizing::new(vec![0x99; 32]),
            permissions: Permissions::MAKE_CREDENTIAL,
            rp_id: Some("example.com".into()),
        };
        let debug = format!("{cmd:?}");
        assert!(debug.contains("<32 secret bytes>"), "{debug}");
        assert!(!debug.contains("153"), "{debug}");
        let token = PinUvAuthToken {
            encrypted: Zeroizing::new(vec![0x99; 48]),
        };
        assert_eq!(
            format!("{token:?}"),
            "PinUvAuthToken { encrypted: <48 secret bytes> }"
        );
    }
}
