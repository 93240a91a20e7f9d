//! authenticatorGetInfo (0x04): what the key supports (CTAP 2.2 §6.4, CTAP 2.3 members up to
//! 0x1F).
//!
//! Every member defined through CTAP 2.3 is decoded into [`Response`]; members with a key this
//! module does not know are skipped, so newer keys keep working. A known member of the wrong
//! CBOR type is an error: guessing what a key meant by a malformed `pinUvAuthProtocols` is
//! worse than refusing it. Inside lists and maps, values this module does not know (a new
//! version string, option, transport or credential type) are kept.

use std::collections::BTreeMap;

use super::make_credential::{CredentialType, PublicKeyCredentialParameters};
use super::{Command, code};
use crate::cbor::{DecodeError, IntMap, TextMap, Value, conv};

/// `maxMsgSize` when the key does not send one (CTAP 2.2 §6.4).
pub const DEFAULT_MAX_MSG_SIZE: usize = 1024;
/// `minPINLength` when the key does not send one (CTAP 2.2 §6.4, §6.5.1).
pub const DEFAULT_MIN_PIN_LENGTH: u32 = 4;
/// `maxPINLength` when the key does not send one (CTAP 2.3 §6.4): 63 bytes of UTF-8.
pub const DEFAULT_MAX_PIN_LENGTH: u32 = 63;

// Response member keys (CTAP 2.2 §6.4 and CTAP 2.3 §6.4, authenticatorGetInfo response).
const VERSIONS: i64 = 0x01;
const EXTENSIONS: i64 = 0x02;
const AAGUID: i64 = 0x03;
const OPTIONS: i64 = 0x04;
const MAX_MSG_SIZE: i64 = 0x05;
const PIN_UV_AUTH_PROTOCOLS: i64 = 0x06;
const MAX_CREDENTIAL_COUNT_IN_LIST: i64 = 0x07;
const MAX_CREDENTIAL_ID_LENGTH: i64 = 0x08;
const TRANSPORTS: i64 = 0x09;
const ALGORITHMS: i64 = 0x0A;
const MAX_SERIALIZED_LARGE_BLOB_ARRAY: i64 = 0x0B;
const FORCE_PIN_CHANGE: i64 = 0x0C;
const MIN_PIN_LENGTH: i64 = 0x0D;
const FIRMWARE_VERSION: i64 = 0x0E;
const MAX_CRED_BLOB_LENGTH: i64 = 0x0F;
const MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH: i64 = 0x10;
const PREFERRED_PLATFORM_UV_ATTEMPTS: i64 = 0x11;
const UV_MODALITY: i64 = 0x12;
const CERTIFICATIONS: i64 = 0x13;
const REMAINING_DISCOVERABLE_CREDENTIALS: i64 = 0x14;
const VENDOR_PROTOTYPE_CONFIG_COMMANDS: i64 = 0x15;
const ATTESTATION_FORMATS: i64 = 0x16;
const UV_COUNT_SINCE_LAST_PIN_ENTRY: i64 = 0x17;
const LONG_TOUCH_FOR_RESET: i64 = 0x18;
const ENC_IDENTIFIER: i64 = 0x19;
const TRANSPORTS_FOR_RESET: i64 = 0x1A;
const PIN_COMPLEXITY_POLICY: i64 = 0x1B;
const PIN_COMPLEXITY_POLICY_URL: i64 = 0x1C;
const MAX_PIN_LENGTH: i64 = 0x1D;
const ENC_CRED_STORE_STATE: i64 = 0x1E;
const AUTHENTICATOR_CONFIG_COMMANDS: i64 = 0x1F;

/// The authenticatorGetInfo command. It has no parameters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct GetInfo;

impl Command for GetInfo {
    const CODE: u8 = code::GET_INFO;
    type Response = Response;

    fn parameters(&self) -> Option<Value> {
        None
    }

    fn decode(body: &[u8]) -> Result<Response, DecodeError> {
        Response::from_cbor(body)
    }
}

/// A protocol version string from getInfo `versions` (CTAP 2.2 §6.4).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Version {
    /// `U2F_V2`: CTAP1/U2F.
    U2fV2,
    /// `FIDO_2_0`.
    Fido2_0,
    /// `FIDO_2_1_PRE`: the CTAP 2.1 preview (prototype credMgmt/bioEnroll commands).
    Fido2_1Pre,
    /// `FIDO_2_1`.
    Fido2_1,
    /// `FIDO_2_2`.
    Fido2_2,
    /// `FIDO_2_3`.
    Fido2_3,
    /// Any other string.
    Other(String),
}

impl Version {
    /// The version string on the wire.
    pub fn as_str(&self) -> &str {
        match self {
            Self::U2fV2 => "U2F_V2",
            Self::Fido2_0 => "FIDO_2_0",
            Self::Fido2_1Pre => "FIDO_2_1_PRE",
            Self::Fido2_1 => "FIDO_2_1",
            Self::Fido2_2 => "FIDO_2_2",
            Self::Fido2_3 => "FIDO_2_3",
            Self::Other(s) => s,
        }
    }
}

impl From<String> for Version {
    fn from(s: String) -> Self {
        match s.as_str() {
            "U2F_V2" => Self::U2fV2,
            "FIDO_2_0" => Self::Fido2_0,
            "FIDO_2_1_PRE" => Self::Fido2_1Pre,
            "FIDO_2_1" => Self::Fido2_1,
            "FIDO_2_2" => Self::Fido2_2,
            "FIDO_2_3" => Self::Fido2_3,
            _ => Self::Other(s),
        }
    }
}

/// Option IDs of getInfo `options` (CTAP 2.2 §6.4, "options" table).
pub mod option {
    /// Platform device: cannot be removed from the platform.
    pub const PLAT: &str = "plat";
    /// Discoverable credentials supported.
    pub const RK: &str = "rk";
    /// Client PIN: absent = not supported, false = no PIN set, true = PIN set.
    pub const CLIENT_PIN: &str = "clientPin";
    /// User presence supported (default true).
    pub const UP: &str = "up";
    /// Built-in UV: absent = none, false = not configured, true = configured.
    pub const UV: &str = "uv";
    /// The permission-token clientPIN subcommands (0x06, 0x09) are supported.
    pub const PIN_UV_AUTH_TOKEN: &str = "pinUvAuthToken";
    /// Tokens obtained with a PIN do not get the mc/ga permissions.
    pub const NO_MC_GA_PERMISSIONS_WITH_CLIENT_PIN: &str = "noMcGaPermissionsWithClientPin";
    /// authenticatorLargeBlobs supported.
    pub const LARGE_BLOBS: &str = "largeBlobs";
    /// Enterprise attestation: absent = not supported, false = disabled, true = enabled.
    pub const EP: &str = "ep";
    /// authenticatorBioEnrollment supported (absent = no, false = no template, true = enrolled).
    pub const BIO_ENROLL: &str = "bioEnroll";
    /// Prototype bioEnrollment (FIDO_2_1_PRE).
    pub const USER_VERIFICATION_MGMT_PREVIEW: &str = "userVerificationMgmtPreview";
    /// The be permission may be obtained with built-in UV.
    pub const UV_BIO_ENROLL: &str = "uvBioEnroll";
    /// authenticatorConfig supported.
    pub const AUTHNR_CFG: &str = "authnrCfg";
    /// The acfg permission may be obtained with built-in UV.
    pub const UV_ACFG: &str = "uvAcfg";
    /// authenticatorCredentialManagement supported.
    pub const CRED_MGMT: &str = "credMgmt";
    /// The pcmr permission (persistent read-only credential management) is supported.
    pub const PER_CRED_MGMT_RO: &str = "perCredMgmtRO";
    /// Prototype credentialManagement (FIDO_2_1_PRE).
    pub const CREDENTIAL_MGMT_PREVIEW: &str = "credentialMgmtPreview";
    /// authenticatorConfig setMinPINLength supported.
    pub const SET_MIN_PIN_LENGTH: &str = "setMinPINLength";
    /// A non-discoverable makeCredential may go without UV even with a PIN set.
    pub const MAKE_CRED_UV_NOT_RQD: &str = "makeCredUvNotRqd";
    /// UV is required for every operation.
    pub const ALWAYS_UV: &str = "alwaysUv";
}

/// What getInfo says about one option: the spec gives absence its own meaning (CTAP 2.2 §6.4),
/// e.g. for `clientPin` absent = not supported, false = supported but no PIN set, true = set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum OptionState {
    /// The option ID is not in the map.
    Absent,
    /// Present and false.
    Off,
    /// Present and true.
    On,
}

impl OptionState {
    /// Whether the option is present at all (for most IDs: whether the feature exists).
    pub fn is_present(self) -> bool {
        self != Self::Absent
    }

    /// Whether the option is present and true.
    pub fn is_on(self) -> bool {
        self == Self::On
    }
}

impl From<Option<bool>> for OptionState {
    fn from(value: Option<bool>) -> Self {
        match value {
            None => Self::Absent,
            Some(false) => Self::Off,
            Some(true) => Self::On,
        }
    }
}

/// getInfo `options`: every option the key sent, including IDs this module does not know.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Options(BTreeMap<String, bool>);

impl Options {
    /// The state of option `id` (see [`option`] for the IDs).
    pub fn get(&self, id: &str) -> OptionState {
        self.0.get(id).copied().into()
    }

    /// All options, by ID.
    pub fn iter(&self) -> impl Iterator<Item = (&str, bool)> {
        self.0.iter().map(|(k, v)| (k.as_str(), *v))
    }

    /// The number of options present.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether the key sent no options.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn from_value(value: Value, field: &'static str) -> Result<Self, DecodeError> {
        TextMap::new(value, field)?
            .into_entries()
            .map(|(id, v)| Ok((id, conv::boolean(v, field)?)))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

impl FromIterator<(String, bool)> for Options {
    fn from_iter<I: IntoIterator<Item = (String, bool)>>(iter: I) -> Self {
        Self(iter.into_iter().collect())
    }
}

/// An authenticatorGetInfo response (CTAP 2.2 §6.4; members 0x17–0x1F from CTAP 2.3).
///
/// Fields hold what the key sent (`None` = member absent); the methods apply the spec's
/// defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Response {
    /// `versions` (0x01, required).
    pub versions: Vec<Version>,
    /// `extensions` (0x02): extension identifiers.
    pub extensions: Option<Vec<String>>,
    /// `aaguid` (0x03, required).
    pub aaguid: [u8; 16],
    /// `options` (0x04).
    pub options: Option<Options>,
    /// `maxMsgSize` (0x05); see [`Response::max_msg_size`].
    pub max_msg_size: Option<u64>,
    /// `pinUvAuthProtocols` (0x06), in the key's order of preference.
    pub pin_uv_auth_protocols: Option<Vec<u32>>,
    /// `maxCredentialCountInList` (0x07).
    pub max_credential_count_in_list: Option<u32>,
    /// `maxCredentialIdLength` (0x08).
    pub max_credential_id_length: Option<u32>,
    /// `transports` (0x09), e.g. `"usb"`, `"nfc"`.
    pub transports: Option<Vec<String>>,
    /// `algorithms` (0x0A), in the key's order of preference. Entries of unknown types are
    /// kept when they carry an integer `alg`.
    pub algorithms: Option<Vec<PublicKeyCredentialParameters>>,
    /// `maxSerializedLargeBlobArray` (0x0B).
    pub max_serialized_large_blob_array: Option<u64>,
    /// `forcePINChange` (0x0C): a PIN change is required before a token can be obtained.
    pub force_pin_change: Option<bool>,
    /// `minPINLength` (0x0D), in Unicode code points; see [`Response::min_pin_length`].
    pub min_pin_length: Option<u32>,
    /// `firmwareVersion` (0x0E).
    pub firmware_version: Option<u64>,
    /// `maxCredBlobLength` (0x0F).
    pub max_cred_blob_length: Option<u32>,
    /// `maxRPIDsForSetMinPINLength` (0x10).
    pub max_rpids_for_set_min_pin_length: Option<u32>,
    /// `preferredPlatformUvAttempts` (0x11).
    pub preferred_platform_uv_attempts: Option<u32>,
    /// `uvModality` (0x12): a FIDO Registry `USER_VERIFY_*` bit set.
    pub uv_modality: Option<u32>,
    /// `certifications` (0x13): certification name to level.
    pub certifications: Option<BTreeMap<String, u64>>,
    /// `remainingDiscoverableCredentials` (0x14): an estimate.
    pub remaining_discoverable_credentials: Option<u64>,
    /// `vendorPrototypeConfigCommands` (0x15): vendor command IDs of authenticatorConfig.
    pub vendor_prototype_config_commands: Option<Vec<u64>>,
    /// `attestationFormats` (0x16, CTAP 2.2), in the key's order of preference.
    pub attestation_formats: Option<Vec<String>>,
    /// `uvCountSinceLastPinEntry` (0x17).
    pub uv_count_since_last_pin_entry: Option<u64>,
    /// `longTouchForReset` (0x18): reset needs a long touch.
    pub long_touch_for_reset: Option<bool>,
    /// `encIdentifier` (0x19): the device identifier, encrypted to a persistent token.
    pub enc_identifier: Option<Vec<u8>>,
    /// `transportsForReset` (0x1A): the transports on which reset is accepted.
    pub transports_for_reset: Option<Vec<String>>,
    /// `pinComplexityPolicy` (0x1B): whether a policy beyond minPINLength is enforced.
    pub pin_complexity_policy: Option<bool>,
    /// `pinComplexityPolicyURL` (0x1C): a URL as bytes (the spec's type is a byte string; a
    /// text string is accepted too and kept as its UTF-8 bytes).
    pub pin_complexity_policy_url: Option<Vec<u8>>,
    /// `maxPINLength` (0x1D), in Unicode code points; see [`Response::max_pin_length`].
    pub max_pin_length: Option<u32>,
    /// `encCredStoreState` (0x1E): credential store state, encrypted to a persistent token.
    pub enc_cred_store_state: Option<Vec<u8>>,
    /// `authenticatorConfigCommands` (0x1F): supported authenticatorConfig subcommands.
    pub authenticator_config_commands: Option<Vec<u64>>,
}

fn texts(v: Value, field: &'static str) -> Result<Vec<String>, DecodeError> {
    conv::array_of(v, field, conv::text)
}

fn bytes_or_text(v: Value, field: &'static str) -> Result<Vec<u8>, DecodeError> {
    match v {
        Value::Bytes(b) => Ok(b),
        Value::Text(t) => Ok(t.into_bytes()),
        _ => Err(DecodeError::UnexpectedType {
            field,
            expected: "byte string",
        }),
    }
}

fn algorithms(
    v: Value,
    field: &'static str,
) -> Result<Vec<PublicKeyCredentialParameters>, DecodeError> {
    conv::array(v, field)?
        .into_iter()
        .filter_map(|entry| PublicKeyCredentialParameters::from_value(entry, field).transpose())
        .collect()
}

fn certifications(v: Value, field: &'static str) -> Result<BTreeMap<String, u64>, DecodeError> {
    TextMap::new(v, field)?
        .into_entries()
        .map(|(name, level)| Ok((name, conv::int(level, field)?)))
        .collect()
}

impl Response {
    /// Decodes the CBOR body of a successful response.
    pub fn from_cbor(body: &[u8]) -> Result<Self, DecodeError> {
        let mut m = IntMap::from_slice(body, "authenticatorGetInfo response")?;
        Ok(Self {
            versions: m.required(VERSIONS, "versions", |v, f| {
                conv::array_of(v, f, |s, f| conv::text(s, f).map(Version::from))
            })?,
            extensions: m.optional(EXTENSIONS, "extensions", texts)?,
            aaguid: m.required(AAGUID, "aaguid", conv::byte_array::<16>)?,
            options: m.optional(OPTIONS, "options", Options::from_value)?,
            max_msg_size: m.optional(MAX_MSG_SIZE, "maxMsgSize", conv::int)?,
            pin_uv_auth_protocols: m.optional(
                PIN_UV_AUTH_PROTOCOLS,
                "pinUvAuthProtocols",
                |v, f| conv::array_of(v, f, conv::int),
            )?,
            max_credential_count_in_list: m.optional(
                MAX_CREDENTIAL_COUNT_IN_LIST,
                "maxCredentialCountInList",
                conv::int,
            )?,
            max_credential_id_length: m.optional(
                MAX_CREDENTIAL_ID_LENGTH,
                "maxCredentialIdLength",
                conv::int,
            )?,
            transports: m.optional(TRANSPORTS, "transports", texts)?,
            algorithms: m.optional(ALGORITHMS, "algorithms", algorithms)?,
            max_serialized_large_blob_array: m.optional(
                MAX_SERIALIZED_LARGE_BLOB_ARRAY,
                "maxSerializedLargeBlobArray",
                conv::int,
            )?,
            force_pin_change: m.optional(FORCE_PIN_CHANGE, "forcePINChange", conv::boolean)?,
            min_pin_length: m.optional(MIN_PIN_LENGTH, "minPINLength", conv::int)?,
            firmware_version: m.optional(FIRMWARE_VERSION, "firmwareVersion", conv::int)?,
            max_cred_blob_length: m.optional(
                MAX_CRED_BLOB_LENGTH,
                "maxCredBlobLength",
                conv::int,
            )?,
            max_rpids_for_set_min_pin_length: m.optional(
                MAX_RPIDS_FOR_SET_MIN_PIN_LENGTH,
                "maxRPIDsForSetMinPINLength",
                conv::int,
            )?,
            preferred_platform_uv_attempts: m.optional(
                PREFERRED_PLATFORM_UV_ATTEMPTS,
                "preferredPlatformUvAttempts",
                conv::int,
            )?,
            uv_modality: m.optional(UV_MODALITY, "uvModality", conv::int)?,
            certifications: m.optional(CERTIFICATIONS, "certifications", certifications)?,
            remaining_discoverable_credentials: m.optional(
                REMAINING_DISCOVERABLE_CREDENTIALS,
                "remainingDiscoverableCredentials",
                conv::int,
            )?,
            vendor_prototype_config_commands: m.optional(
                VENDOR_PROTOTYPE_CONFIG_COMMANDS,
                "vendorPrototypeConfigCommands",
                |v, f| conv::array_of(v, f, conv::int),
            )?,
            attestation_formats: m.optional(ATTESTATION_FORMATS, "attestationFormats", texts)?,
            uv_count_since_last_pin_entry: m.optional(
                UV_COUNT_SINCE_LAST_PIN_ENTRY,
                "uvCountSinceLastPinEntry",
                conv::int,
            )?,
            long_touch_for_reset: m.optional(
                LONG_TOUCH_FOR_RESET,
                "longTouchForReset",
                conv::boolean,
            )?,
            enc_identifier: m.optional(ENC_IDENTIFIER, "encIdentifier", conv::bytes)?,
            transports_for_reset: m.optional(TRANSPORTS_FOR_RESET, "transportsForReset", texts)?,
            pin_complexity_policy: m.optional(
                PIN_COMPLEXITY_POLICY,
                "pinComplexityPolicy",
                conv::boolean,
            )?,
            pin_complexity_policy_url: m.optional(
                PIN_COMPLEXITY_POLICY_URL,
                "pinComplexityPolicyURL",
                bytes_or_text,
            )?,
            max_pin_length: m.optional(MAX_PIN_LENGTH, "maxPINLength", conv::int)?,
            enc_cred_store_state: m.optional(
                ENC_CRED_STORE_STATE,
                "encCredStoreState",
                conv::bytes,
            )?,
            authenticator_config_commands: m.optional(
                AUTHENTICATOR_CONFIG_COMMANDS,
                "authenticatorConfigCommands",
                |v, f| conv::array_of(v, f, conv::int),
            )?,
        })
    }

    /// Whether `versions` lists `version`.
    pub fn supports(&self, version: Version) -> bool {
        self.versions.contains(&version)
    }

    /// Whether the key speaks CTAP2 at all (any `FIDO_2_*` version), as opposed to U2F only.
    pub fn supports_ctap2(&self) -> bool {
        self.versions.iter().any(|v| {
            matches!(
                v,
                Version::Fido2_0
                    | Version::Fido2_1Pre
                    | Version::Fido2_1
                    | Version::Fido2_2
                    | Version::Fido2_3
            )
        })
    }

    /// Whether the key implements CTAP 2.1 or later (`FIDO_2_1`, `FIDO_2_2`, `FIDO_2_3`), which
    /// gates authenticatorSelection and the permission tokens. `FIDO_2_1_PRE` does not count.
    pub fn supports_ctap2_1(&self) -> bool {
        self.versions
            .iter()
            .any(|v| matches!(v, Version::Fido2_1 | Version::Fido2_2 | Version::Fido2_3))
    }

    /// Whether `extensions` lists `id`.
    pub fn supports_extension(&self, id: &str) -> bool {
        self.extensions
            .as_ref()
            .is_some_and(|e| e.iter().any(|x| x == id))
    }

    /// Whether `algorithms` lists a `"public-key"` entry for `alg`, or `None` when the key
    /// sent no `algorithms` (CTAP 2.0 keys), so the caller can only try.
    pub fn supports_algorithm(&self, alg: i64) -> Option<bool> {
        self.algorithms.as_ref().map(|list| {
            list.iter()
                .any(|p| p.cred_type == CredentialType::PublicKey && p.alg == alg)
        })
    }

    /// The state of option `id` (see [`option`]).
    pub fn option(&self, id: &str) -> OptionState {
        self.options
            .as_ref()
            .map_or(OptionState::Absent, |o| o.get(id))
    }

    /// `clientPin`: absent = no PIN support, off = supported but not set, on = set.
    pub fn client_pin(&self) -> OptionState {
        self.option(option::CLIENT_PIN)
    }

    /// `uv`: absent = no built-in UV, off = not configured, on = configured.
    pub fn uv(&self) -> OptionState {
        self.option(option::UV)
    }

    /// `rk`: discoverable credentials supported (absent means false).
    pub fn rk(&self) -> bool {
        self.option(option::RK).is_on()
    }

    /// `up`: user presence supported (absent means true).
    pub fn up(&self) -> bool {
        self.option(option::UP) != OptionState::Off
    }

    /// `pinUvAuthToken`: the permission-token subcommands are supported (absent means false).
    pub fn pin_uv_auth_token(&self) -> bool {
        self.option(option::PIN_UV_AUTH_TOKEN).is_on()
    }

    /// `alwaysUv` (absent means false).
    pub fn always_uv(&self) -> bool {
        self.option(option::ALWAYS_UV).is_on()
    }

    /// `makeCredUvNotRqd` (absent means false).
    pub fn make_cred_uv_not_rqd(&self) -> bool {
        self.option(option::MAKE_CRED_UV_NOT_RQD).is_on()
    }

    /// `noMcGaPermissionsWithClientPin` (absent means false).
    pub fn no_mc_ga_permissions_with_client_pin(&self) -> bool {
        self.option(option::NO_MC_GA_PERMISSIONS_WITH_CLIENT_PIN)
            .is_on()
    }

    /// `ep`: absent = no enterprise attestation, off = disabled, on = enabled.
    pub fn ep(&self) -> OptionState {
        self.option(option::EP)
    }

    /// `maxMsgSize`, or [`DEFAULT_MAX_MSG_SIZE`] when absent. The transport's own limit still
    /// applies on top (7609 bytes for CTAPHID).
    pub fn max_msg_size(&self) -> usize {
        self.max_msg_size.map_or(DEFAULT_MAX_MSG_SIZE, |n| {
            usize::try_from(n).unwrap_or(usize::MAX)
        })
    }

    /// `minPINLength`, or [`DEFAULT_MIN_PIN_LENGTH`] when absent.
    pub fn min_pin_length(&self) -> u32 {
        self.min_pin_length.unwrap_or(DEFAULT_MIN_PIN_LENGTH)
    }

    /// `maxPINLength`, or [`DEFAULT_MAX_PIN_LENGTH`] when absent.
    pub fn max_pin_length(&self) -> u32 {
        self.max_pin_length.unwrap_or(DEFAULT_MAX_PIN_LENGTH)
    }

    /// `forcePINChange` (absent means false).
    pub fn force_pin_change(&self) -> bool {
        self.force_pin_change.unwrap_or(false)
    }

    /// The PIN/UV auth protocol to use: the first one in the key's `pinUvAuthProtocols` (its
    /// order of preference, CTAP 2.2 §6.4) that the platform also implements.
    ///
    /// CTAP 2.0 made `pinProtocols` optional with protocol 1 implied, so a key that has PIN or
    /// built-in UV support but no list is treated as listing `[1]`. Returns `None` when there
    /// is nothing in common (or no PIN/UV support at all).
    pub fn preferred_pin_uv_auth_protocol(&self, platform_supported: &[u32]) -> Option<u32> {
        const IMPLIED: &[u32] = &[1];
        let listed: &[u32] = match &self.pin_uv_auth_protocols {
            Some(list) => list,
            None if self.client_pin().is_present()
                || self.uv().is_present()
                || self.pin_uv_auth_token() =>
            {
                IMPLIED
            }
            None => &[],
        };
        listed
            .iter()
            .copied()
            .find(|p| platform_supported.contains(p))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ResponseError, decode_response, encode_request};
    use crate::status::StatusCode;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        hex::decode(s).unwrap()
    }

    /// Every member 0x01–0x1F plus an unknown 0x20, hand-assembled.
    const FULL: &str = "b820
        01 84 665532465f5632 684649444f5f325f31 684649444f5f325f33 664649444f5f39
        02 82 6b6372656450726f74656374 6b686d61632d736563726574
        03 50 00112233445566778899aabbccddeeff
        04 a5 62726b f5 627576 f4 69636c69656e7450696e f5 696675747572654f7074 f5
              6e70696e557641757468546f6b656e f5
        05 190800
        06 82 02 01
        07 08
        08 1880
        09 82 63757362 636e6663
        0a 84 a2 63616c67 26 6474797065 6a7075626c69632d6b6579
              a2 63616c67 27 6474797065 6a7075626c69632d6b6579
              a2 63616c67 26 6474797065 6178
              a2 63616c67 613f 6474797065 6178
        0b 190400
        0c f4
        0d 06
        0e 1a00050403
        0f 1820
        10 01
        11 02
        12 190200
        13 a1 644649444f 02
        14 1819
        15 81 1b0102030405060708
        16 82 667061636b6564 646e6f6e65
        17 03
        1818 f5
        1819 45 0102030405
        181a 81 63757362
        181b f5
        181c 53 68747470733a2f2f6578616d706c652e636f6d
        181d 183f
        181e 44 0a0b0c0d
        181f 83 010203
        1820 f6";

    #[test]
    fn request_is_the_command_byte_alone() {
        assert_eq!(*encode_request(&GetInfo).unwrap(), [0x04]);
    }

    #[test]
    fn decodes_every_member() {
        let info = decode_response::<GetInfo>(&[&[0x00][..], &unhex(FULL)].concat()).unwrap();
        assert_eq!(
            info.versions,
            [
                Version::U2fV2,
                Version::Fido2_1,
                Version::Fido2_3,
                Version::Other("FIDO_9".into())
            ]
        );
        assert_eq!(
            info.extensions.as_deref(),
            Some(&["credProtect".to_owned(), "hmac-secret".to_owned()][..])
        );
        assert_eq!(
            info.aaguid,
            *unhex("00112233445566778899aabbccddeeff").as_slice()
        );
        let options = info.options.as_ref().unwrap();
        assert_eq!(options.len(), 5);
        assert_eq!(options.get("futureOpt"), OptionState::On);
        assert_eq!(info.max_msg_size, Some(2048));
        assert_eq!(info.pin_uv_auth_protocols, Some(vec![2, 1]));
        assert_eq!(info.max_credential_count_in_list, Some(8));
        assert_eq!(info.max_credential_id_length, Some(128));
        assert_eq!(
            info.transports,
            Some(vec!["usb".to_owned(), "nfc".to_owned()])
        );
        assert_eq!(
            info.algorithms,
            Some(vec![
                PublicKeyCredentialParameters::public_key(-7),
                PublicKeyCredentialParameters::public_key(-8),
                PublicKeyCredentialParameters {
                    cred_type: CredentialType::Other("x".into()),
                    alg: -7
                },
            ])
        );
        assert_eq!(info.max_serialized_large_blob_array, Some(1024));
        assert_eq!(info.force_pin_change, Some(false));
        assert_eq!(info.min_pin_length, Some(6));
        assert_eq!(info.firmware_version, Some(0x0005_0403));
        assert_eq!(info.max_cred_blob_length, Some(32));
        assert_eq!(info.max_rpids_for_set_min_pin_length, Some(1));
        assert_eq!(info.preferred_platform_uv_attempts, Some(2));
        assert_eq!(info.uv_modality, Some(0x200));
        assert_eq!(
            info.certifications,
            Some(BTreeMap::from([("FIDO".to_owned(), 2)]))
        );
        assert_eq!(info.remaining_discoverable_credentials, Some(25));
        assert_eq!(
            info.vendor_prototype_config_commands,
            Some(vec![0x0102_0304_0506_0708])
        );
        assert_eq!(
            info.attestation_formats,
            Some(vec!["packed".to_owned(), "none".to_owned()])
        );
        assert_eq!(info.uv_count_since_last_pin_entry, Some(3));
        assert_eq!(info.long_touch_for_reset, Some(true));
        assert_eq!(info.enc_identifier, Some(vec![1, 2, 3, 4, 5]));
        assert_eq!(info.transports_for_reset, Some(vec!["usb".to_owned()]));
        assert_eq!(info.pin_complexity_policy, Some(true));
        assert_eq!(
            info.pin_complexity_policy_url.as_deref(),
            Some(&b"https://example.com"[..])
        );
        assert_eq!(info.max_pin_length, Some(63));
        assert_eq!(
            info.enc_cred_store_state,
            Some(vec![0x0a, 0x0b, 0x0c, 0x0d])
        );
        assert_eq!(info.authenticator_config_commands, Some(vec![1, 2, 3]));
    }

    #[test]
    fn accessors_apply_the_spec_semantics() {
        let info = Response::from_cbor(&unhex(FULL)).unwrap();
        assert!(info.supports(Version::Fido2_3));
        assert!(!info.supports(Version::Fido2_0));
        assert!(info.supports(Version::Other("FIDO_9".into())));
        assert!(info.supports_ctap2());
        assert!(info.supports_ctap2_1());
        assert!(info.supports_extension("hmac-secret"));
        assert!(!info.supports_extension("credBlob"));
        assert_eq!(info.supports_algorithm(-8), Some(true));
        assert_eq!(info.supports_algorithm(-257), Some(false));
        assert_eq!(info.client_pin(), OptionState::On);
        assert_eq!(info.uv(), OptionState::Off);
        assert!(info.uv().is_present() && !info.uv().is_on());
        assert_eq!(info.ep(), OptionState::Absent);
        assert!(info.rk());
        assert!(info.up());
        assert!(info.pin_uv_auth_token());
        assert!(!info.always_uv());
        assert!(!info.make_cred_uv_not_rqd());
        assert!(!info.no_mc_ga_permissions_with_client_pin());
        assert_eq!(info.max_msg_size(), 2048);
        assert_eq!(info.min_pin_length(), 6);
        assert_eq!(info.max_pin_length(), 63);
        assert!(!info.force_pin_change());
        // The key prefers 2; a platform with only 1 gets 1.
        assert_eq!(info.preferred_pin_uv_auth_protocol(&[1, 2]), Some(2));
        assert_eq!(info.preferred_pin_uv_auth_protocol(&[1]), Some(1));
        assert_eq!(info.preferred_pin_uv_auth_protocol(&[3]), None);
    }

    #[test]
    fn minimal_response_gets_the_defaults() {
        // {1: ["FIDO_2_0"], 3: h'00..00'}
        let body = unhex("a2 01 81 684649444f5f325f30 03 50 00000000000000000000000000000000");
        let info = Response::from_cbor(&body).unwrap();
        assert_eq!(info.versions, [Version::Fido2_0]);
        assert!(info.supports_ctap2());
        assert!(!info.supports_ctap2_1());
        assert_eq!(info.max_msg_size(), DEFAULT_MAX_MSG_SIZE);
        assert_eq!(info.min_pin_length(), 4);
        assert_eq!(info.max_pin_length(), 63);
        assert_eq!(info.client_pin(), OptionState::Absent);
        assert!(info.up());
        assert!(!info.rk());
        assert_eq!(info.supports_algorithm(-7), None);
        assert_eq!(info.preferred_pin_uv_auth_protocol(&[1, 2]), None);
        assert!(info.options.is_none() && info.certifications.is_none());
    }

    #[test]
    fn ctap20_keys_without_a_protocol_list_imply_protocol_one() {
        // {1: ["FIDO_2_0"], 3: h'00..00', 4: {"clientPin": false}}
        let body = unhex(
            "a3 01 81 684649444f5f325f30 03 50 00000000000000000000000000000000
                04 a1 69636c69656e7450696e f4",
        );
        let info = Response::from_cbor(&body).unwrap();
        assert_eq!(info.client_pin(), OptionState::Off);
        assert_eq!(info.preferred_pin_uv_auth_protocol(&[1, 2]), Some(1));
        assert_eq!(info.preferred_pin_uv_auth_protocol(&[2]), None);
    }

    #[test]
    fn u2f_only_versions_are_not_ctap2() {
        let body = unhex("a2 01 81 665532465f5632 03 50 00000000000000000000000000000000");
        let info = Response::from_cbor(&body).unwrap();
        assert!(!info.supports_ctap2());
        assert!(info.supports(Version::U2fV2));
    }

    #[test]
    fn tolerates_sloppy_but_meaningful_encodings() {
        const HEAD: &str = "01 81 684649444f5f325f30 03 50 00000000000000000000000000000000";
        // pinComplexityPolicyURL as a text string, a non-text option key, non-canonical
        // member order and a non-minimal integer.
        let body = unhex(&format!(
            "a5 181c 63 613a2f 04 a2 01 f5 62726b f5 05 1a00000400 {HEAD}"
        ));
        let info = Response::from_cbor(&body).unwrap();
        assert_eq!(info.pin_complexity_policy_url.as_deref(), Some(&b"a:/"[..]));
        assert_eq!(info.options.as_ref().map(Options::len), Some(1));
        assert!(info.rk());
        assert_eq!(info.max_msg_size(), 1024);
    }

    #[test]
    fn rejects_hostile_bodies_with_typed_errors() {
        const HEAD: &str = "01 81 684649444f5f325f30 03 50 00000000000000000000000000000000";
        let with = |extra: &str| unhex(&format!("a3 {HEAD} {extra}"));
        let wrong = |field, expected| DecodeError::UnexpectedType { field, expected };
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (Vec::new(), DecodeError::Empty),
            (unhex("a2 01 81 68 4649"), DecodeError::Malformed),
            (
                unhex(&format!("a2 {HEAD} 00")),
                DecodeError::TrailingBytes(1),
            ),
            (unhex("80"), wrong("authenticatorGetInfo response", "map")),
            (
                unhex("a1 03 50 00000000000000000000000000000000"),
                DecodeError::Missing("versions"),
            ),
            (
                unhex("a1 01 81 684649444f5f325f30"),
                DecodeError::Missing("aaguid"),
            ),
            (
                unhex("a2 01 684649444f5f325f30 03 50 00000000000000000000000000000000"),
                wrong("versions", "array"),
            ),
            (
                unhex("a2 01 81 02 03 50 00000000000000000000000000000000"),
                wrong("versions", "text string"),
            ),
            (
                unhex("a2 01 81 684649444f5f325f30 03 4f 000000000000000000000000000000"),
                DecodeError::OutOfRange("aaguid"),
            ),
            (with("04 a1 62726b 01"), wrong("options", "boolean")),
            (with("04 80"), wrong("options", "map")),
            (
                with("04 a2 62726b f5 62726b f4"),
                DecodeError::DuplicateKey("options"),
            ),
            (with("05 20"), DecodeError::OutOfRange("maxMsgSize")),
            (with("05 63313030"), wrong("maxMsgSize", "integer")),
            (
                with("06 81 1b 0000010000000000"),
                DecodeError::OutOfRange("pinUvAuthProtocols"),
            ),
            (with("06 02"), wrong("pinUvAuthProtocols", "array")),
            (with("0a 81 80"), wrong("algorithms", "map")),
            (with("0c 00"), wrong("forcePINChange", "boolean")),
            (
                with("13 a1 644649444f 6131"),
                wrong("certifications", "integer"),
            ),
            (
                with("181c 01"),
                wrong("pinComplexityPolicyURL", "byte string"),
            ),
            (with("181e 6178"), wrong("encCredStoreState", "byte string")),
            (
                unhex(&format!("a3 {HEAD} 01 80")),
                DecodeError::DuplicateKey("authenticatorGetInfo response"),
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(
                Response::from_cbor(&body).unwrap_err(),
                expected,
                "{}",
                hex::encode(&body)
            );
        }
    }

    #[test]
    fn error_status_is_reported_not_decoded() {
        assert_eq!(
            decode_response::<GetInfo>(&[0x01]).unwrap_err(),
            ResponseError::Status(StatusCode::InvalidCommand)
        );
    }
}
