//! Request and response bodies of the LoginID FIDO2 v2 API (reference §4).
//!
//! JSON members are camelCase; optional members are omitted, never `null`; binary members are
//! [`Base64Bytes`]. Response types accept members they do not know, so that the service can
//! grow without breaking the daemon; enums received from the service keep an `Unknown` arm.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::b64::Base64Bytes;
use super::secret::Token;

/// Scope names used in grant requests and token claims (reference §2).
pub mod scope {
    /// Create passkeys over an authorized session (`reg/init`).
    pub const REG_WRITE: &str = "reg:write";
    /// Rename and delete passkeys (and `reg/init` on June-2024 servers).
    pub const PASSKEY_WRITE: &str = "passkey:write";
    /// List passkeys.
    pub const PASSKEY_READ: &str = "passkey:read";
    /// Request an OTP as an authenticated user.
    pub const AUTH_WRITE: &str = "auth:write";
}

/// `POST /fido2/v2/mgmt/grant` request (`GrantCreateRequestBody`, reference §4.1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantRequest {
    /// Scopes requested for the token, e.g. [`scope::REG_WRITE`].
    pub grants: Vec<String>,
    /// The user the token is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
}

/// `POST /fido2/v2/mgmt/grant` response (`GrantCreateResponseBody`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantResponse {
    /// The authorization token (a short-lived JWT in practice).
    pub token: Token,
}

/// `Application` member of `reg/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Application {
    /// LoginID application id.
    pub id: String,
    /// Application token signed with the application key; never sent for registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<Token>,
}

/// `clientType` of [`DeviceInfo`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ClientType {
    /// A web browser.
    Browser,
    /// An embedded web view.
    Webview,
    /// Anything else; passkeyd is this.
    Other,
}

/// `DeviceInfo` member of `reg/init`: every member optional (reference §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DeviceInfo {
    /// Client program name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_name: Option<String>,
    /// Kind of client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_type: Option<ClientType>,
    /// Client program version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_version: Option<String>,
    /// LoginID-issued device id remembered from a previous registration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
    /// Whether the device has Bluetooth.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub has_bluetooth: Option<bool>,
    /// RFC 3339 time of last use.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_used_at: Option<String>,
    /// CPU architecture.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_arch: Option<String>,
    /// Operating system name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_name: Option<String>,
    /// Operating system version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os_version: Option<String>,
    /// Screen height in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_height: Option<i64>,
    /// Screen width in pixels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub screen_width: Option<i64>,
    /// WebAuthn client capabilities: a JSON object serialized as a string.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webauthn_capabilities: Option<String>,
}

impl DeviceInfo {
    /// The device info passkeyd sends: `clientType` `other`, `clientName` `passkeyd`, its
    /// version, and the OS family and CPU architecture it was built for.
    pub fn passkeyd() -> Self {
        Self {
            client_name: Some("passkeyd".to_owned()),
            client_type: Some(ClientType::Other),
            client_version: Some(env!("CARGO_PKG_VERSION").to_owned()),
            os_name: Some(std::env::consts::OS.to_owned()),
            os_arch: Some(std::env::consts::ARCH.to_owned()),
            ..Self::default()
        }
    }
}

/// `usernameType` of [`User`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UsernameType {
    /// An e-mail address.
    Email,
    /// A phone number.
    Phone,
    /// Anything else (the SDK default since 3.0.5).
    #[default]
    Other,
}

/// `User` member of `reg/init`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct User {
    /// The LoginID username.
    pub username: String,
    /// What kind of name `username` is.
    pub username_type: UsernameType,
    /// Name shown to the user; the SDK defaults it to the username.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub display_name: Option<String>,
}

/// `passkeyOptions` member of `reg/init`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PasskeyOptions {
    /// Conditional create (browser autofill upgrade).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conditional_create: Option<bool>,
    /// Whether the authenticator is a security key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_key: Option<bool>,
}

impl PasskeyOptions {
    /// `{"securityKey": true}`: what passkeyd always sends (reference §6, last part).
    pub fn security_key() -> Self {
        Self {
            conditional_create: None,
            security_key: Some(true),
        }
    }
}

/// `POST /fido2/v2/reg/init` request (`RegInitRequestBody`, reference §4.2).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegInitRequest {
    /// The application.
    pub app: Application,
    /// The registering device.
    pub device_info: DeviceInfo,
    /// The user the passkey is for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<User>,
    /// Passkey options.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey_options: Option<PasskeyOptions>,
    /// TrustID JWS values keyed `auth`/`wallet`/`merchant`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust_items: Option<BTreeMap<String, String>>,
}

impl RegInitRequest {
    /// The request passkeyd sends for `username`: its own device info and
    /// `passkeyOptions.securityKey = true`.
    pub fn for_security_key(
        app_id: impl Into<String>,
        username: impl Into<String>,
        username_type: UsernameType,
        display_name: Option<String>,
    ) -> Self {
        Self {
            app: Application {
                id: app_id.into(),
                token: None,
            },
            device_info: DeviceInfo::passkeyd(),
            user: Some(User {
                username: username.into(),
                username_type,
                display_name,
            }),
            passkey_options: Some(PasskeyOptions::security_key()),
            trust_items: None,
        }
    }
}

/// `action` of [`RegInitResponse`]. LoginID's SDKs ignore it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum RegInitAction {
    /// Go on with the WebAuthn ceremony.
    #[default]
    Proceed,
    /// The user should sign in instead.
    SignIn,
    /// Registration is refused.
    Fail,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

/// `rp` of the creation options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RelyingParty {
    /// RP ID; absent means the origin's effective domain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Human-palatable RP name.
    pub name: String,
}

/// `user` of the creation options.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct UserEntity {
    /// User handle.
    pub id: Base64Bytes,
    /// User name.
    pub name: String,
    /// Display name.
    pub display_name: String,
}

/// One entry of `pubKeyCredParams`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PubKeyCredParam {
    /// Always `public-key`.
    #[serde(rename = "type")]
    pub type_: String,
    /// COSE algorithm identifier (-7 ES256, -8 EdDSA, -257 RS256, ...).
    pub alg: i64,
}

/// `attestation` conveyance preference.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum AttestationConveyance {
    /// No attestation wanted.
    #[default]
    None,
    /// Anonymized attestation is fine.
    Indirect,
    /// The authenticator's attestation.
    Direct,
    /// Enterprise attestation.
    Enterprise,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

/// `authenticatorAttachment`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuthenticatorAttachment {
    /// Built into the client device.
    Platform,
    /// A roaming authenticator such as a security key.
    CrossPlatform,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

/// `residentKey` requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ResidentKeyRequirement {
    /// Prefer a server-side credential.
    Discouraged,
    /// Prefer a discoverable credential.
    Preferred,
    /// A discoverable credential is required.
    Required,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

/// `userVerification` requirement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum UserVerificationRequirement {
    /// UV must happen.
    Required,
    /// UV if the authenticator can.
    #[default]
    Preferred,
    /// No UV.
    Discouraged,
    /// A value this client does not know.
    #[serde(other)]
    Unknown,
}

/// `authenticatorSelection` of the creation options.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AuthenticatorSelection {
    /// Wanted attachment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_attachment: Option<AuthenticatorAttachment>,
    /// Legacy resident-key flag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub require_resident_key: Option<bool>,
    /// Resident-key requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resident_key: Option<ResidentKeyRequirement>,
    /// User-verification requirement.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_verification: Option<UserVerificationRequirement>,
}

/// An entry of `excludeCredentials`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CredentialDescriptor {
    /// Credential id.
    pub id: Base64Bytes,
    /// Always `public-key`.
    #[serde(rename = "type")]
    pub type_: String,
    /// Transports hint (`usb`, `nfc`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<String>>,
}

/// `registrationRequestOptions`: WebAuthn `PublicKeyCredentialCreationOptions`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationOptions {
    /// Relying party.
    pub rp: RelyingParty,
    /// The user account.
    pub user: UserEntity,
    /// Challenge bytes; clientDataJSON carries them as unpadded base64url.
    pub challenge: Base64Bytes,
    /// Acceptable credential algorithms, most preferred first.
    pub pub_key_cred_params: Vec<PubKeyCredParam>,
    /// Ceremony timeout in milliseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<u64>,
    /// Attestation conveyance preference.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attestation: Option<AttestationConveyance>,
    /// Authenticator selection criteria.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_selection: Option<AuthenticatorSelection>,
    /// Credentials the user already has (must not be created again on the same key).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude_credentials: Vec<CredentialDescriptor>,
    /// WebAuthn extension inputs, passed through.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extensions: Option<serde_json::Map<String, serde_json::Value>>,
}

/// `POST /fido2/v2/reg/init` response (`RegInit`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegInitResponse {
    /// What the front end should do; passkeyd, like LoginID's SDKs, proceeds regardless.
    #[serde(default)]
    pub action: RegInitAction,
    /// Options for the WebAuthn create ceremony.
    pub registration_request_options: CreationOptions,
    /// Opaque session tying this init to `reg/complete`.
    pub session: Token,
}

/// `creationResult` of `reg/complete` (`CreationResult`, reference §4.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreationResult {
    /// WebAuthn attestation object (CBOR `{fmt, attStmt, authData}`).
    pub attestation_object: Base64Bytes,
    /// The exact clientDataJSON bytes whose SHA-256 the authenticator signed.
    #[serde(rename = "clientDataJSON")]
    pub client_data_json: Base64Bytes,
    /// Credential id (WebAuthn `credential.id`).
    pub credential_id: Base64Bytes,
    /// Authenticator data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub authenticator_data: Option<Base64Bytes>,
    /// Credential public key as DER SubjectPublicKeyInfo.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key: Option<Base64Bytes>,
    /// COSE algorithm of the credential key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_key_algorithm: Option<i64>,
    /// Transports of the authenticator (`usb`, `nfc`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transports: Option<Vec<String>>,
}

/// `POST /fido2/v2/reg/complete` request (`RegCompleteRequestBody`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegCompleteRequest {
    /// What the authenticator produced.
    pub creation_result: CreationResult,
    /// The session from `reg/init`.
    pub session: Token,
    /// Display name of the new passkey in the user's list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey_name: Option<String>,
}

/// `POST /fido2/v2/reg/complete` response (`JWT`). Older servers sent only `jwtAccess` and
/// `deviceID`, so everything else is optional.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RegCompleteResponse {
    /// The LoginID token.
    pub jwt_access: Token,
    /// LoginID user id (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<String>,
    /// Id of the new passkey (UUID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub passkey_id: Option<String>,
    /// LoginID device id (UUID); `deviceID` before January 2025.
    #[serde(default, alias = "deviceID", skip_serializing_if = "Option::is_none")]
    pub device_id: Option<String>,
}

/// `POST /fido2/v2/mgmt/token/verify` request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenVerifyRequest {
    /// The LoginID token to check.
    pub jwt_access: Token,
}

/// One JSON Web Key of the JWKS (RFC 7517 §4, RFC 7518 §6.2). Non-EC keys deserialize too and
/// are ignored by the verifier.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Jwk {
    /// Key type (`EC`).
    pub kty: String,
    /// Curve (`P-256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crv: Option<String>,
    /// Algorithm (`ES256`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub alg: Option<String>,
    /// Use (`sig`).
    #[serde(default, rename = "use", skip_serializing_if = "Option::is_none")]
    pub use_: Option<String>,
    /// Key operations (`["verify"]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_ops: Option<Vec<String>>,
    /// Key id matched against the JWS header.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kid: Option<String>,
    /// X coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub x: Option<String>,
    /// Y coordinate, base64url.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<String>,
}

/// `GET /fido2/v2/.well-known/jwks.json` response.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct JwkSet {
    /// The keys.
    pub keys: Vec<Jwk>,
}

/// The error body of every non-2xx JSON response (`AppError`, reference §1).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AppError {
    /// Machine-readable code (`bad_request`, `unauthorized`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_code: Option<String>,
    /// Human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg: Option<String>,
    /// Alternative message member tolerated by LoginID's own clients.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
