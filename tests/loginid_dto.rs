//! Every request and response example of the LoginID API reference
//! (`shared/reference/loginid-api.md`, constructed examples with fake values) goes through the
//! DTOs. Elisions (`...`) inside base64 members of the examples are dropped, since they stand
//! for bytes the reference left out.

use passkeyd::loginid::dto::{
    AppError, AttestationConveyance, AuthenticatorAttachment, ClientType, GrantRequest,
    GrantResponse, JwkSet, RegCompleteRequest, RegCompleteResponse, RegInitAction, RegInitRequest,
    RegInitResponse, ResidentKeyRequirement, TokenVerifyRequest, UserVerificationRequirement,
    UsernameType,
};
use passkeyd::loginid::jwt::{Audience, LoginIdClaims, verifying_key};
use serde_json::{Value, json};

/// Serializes `value` and compares it with `expected` as JSON values.
#[allow(clippy::unwrap_used)] // A helper of #[test]s: failing is failing the test.
fn round_trips<T: serde::Serialize>(value: &T, expected: &str) {
    let expected: Value = serde_json::from_str(expected).unwrap();
    assert_eq!(serde_json::to_value(value).unwrap(), expected);
}

#[test]
fn grant_request_and_response() {
    let text = r#"{"grants":["reg:write"],"username":"alice@example.com"}"#;
    let request: GrantRequest = serde_json::from_str(text).unwrap();
    assert_eq!(request.grants, ["reg:write"]);
    assert_eq!(request.username.as_deref(), Some("alice@example.com"));
    assert_eq!(serde_json::to_string(&request).unwrap(), text);

    let text = r#"{"token":"eyJhbGciOiJFUzI1NiIsImtpZCI6Ii4uLiJ9.eyJ1c2VybmFtZSI6ImFsaWNlQGV4YW1wbGUuY29tIiwuLi59.c2ln"}"#;
    let response: GrantResponse = serde_json::from_str(text).unwrap();
    assert!(
        response
            .token
            .expose()
            .starts_with("eyJhbGciOiJFUzI1NiIsImtpZCI6Ii4uLiJ9.")
    );
    assert_eq!(
        format!("{:?}", response.token),
        "Token(<redacted, 90 bytes>)"
    );
}

const REG_INIT_REQUEST: &str = r#"{"app":{"id":"3f0c9a9e-1111-2222-3333-444455556666"},
 "deviceInfo":{"clientType":"other","clientName":"lid-daemon","clientVersion":"0.1.0"},
 "user":{"username":"alice@example.com","usernameType":"email","displayName":"Alice"},
 "passkeyOptions":{"securityKey":true}}"#;

#[test]
fn reg_init_request() {
    let request: RegInitRequest = serde_json::from_str(REG_INIT_REQUEST).unwrap();
    assert_eq!(request.app.id, "3f0c9a9e-1111-2222-3333-444455556666");
    assert_eq!(request.device_info.client_type, Some(ClientType::Other));
    assert_eq!(
        request.device_info.client_name.as_deref(),
        Some("lid-daemon")
    );
    let user = request.user.as_ref().unwrap();
    assert_eq!(user.username_type, UsernameType::Email);
    assert_eq!(user.display_name.as_deref(), Some("Alice"));
    assert_eq!(request.passkey_options.unwrap().security_key, Some(true));
    round_trips(&request, REG_INIT_REQUEST);
}

#[test]
fn reg_init_request_passkeyd_sends() {
    let request =
        RegInitRequest::for_security_key("app-1", "alice@example.com", UsernameType::Other, None);
    let value = serde_json::to_value(&request).unwrap();
    assert_eq!(
        value,
        json!({
            "app": {"id": "app-1"},
            "deviceInfo": {
                "clientName": "passkeyd",
                "clientType": "other",
                "clientVersion": env!("CARGO_PKG_VERSION"),
                "osArch": std::env::consts::ARCH,
                "osName": std::env::consts::OS,
            },
            "user": {"username": "alice@example.com", "usernameType": "other"},
            "passkeyOptions": {"securityKey": true},
        })
    );
    // Optional members are omitted, never null.
    assert!(!serde_json::to_string(&request).unwrap().contains("null"));
}

const REG_INIT_RESPONSE: &str = r#"{"action":"proceed",
 "registrationRequestOptions":{
   "rp":{"id":"example.com","name":"Example"},
   "user":{"id":"q83vEjRWeJCrze8SNFZ4kA","name":"alice@example.com","displayName":"Alice"},
   "challenge":"3q2-7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
   "pubKeyCredParams":[{"type":"public-key","alg":-7},{"type":"public-key","alg":-257}],
   "timeout":300000,
   "attestation":"direct",
   "authenticatorSelection":{"authenticatorAttachment":"cross-platform","residentKey":"required","requireResidentKey":true,"userVerification":"required"},
   "excludeCredentials":[]},
 "session":"c2Vzc2lvbi1ibG9iLW9wYXF1ZS10by1jbGllbnQ"}"#;

#[test]
fn reg_init_response() {
    let response: RegInitResponse = serde_json::from_str(REG_INIT_RESPONSE).unwrap();
    assert_eq!(response.action, RegInitAction::Proceed);
    let options = &response.registration_request_options;
    assert_eq!(options.rp.id.as_deref(), Some("example.com"));
    assert_eq!(options.rp.name, "Example");
    let mut challenge = vec![0xde, 0xad, 0xbe, 0xef];
    challenge.resize(32, 0);
    assert_eq!(options.challenge.as_slice(), challenge.as_slice());
    assert_eq!(
        options.user.id.as_slice(),
        [
            0xab, 0xcd, 0xef, 0x12, 0x34, 0x56, 0x78, 0x90, 0xab, 0xcd, 0xef, 0x12, 0x34, 0x56,
            0x78, 0x90
        ]
    );
    assert_eq!(options.user.display_name, "Alice");
    assert_eq!(options.pub_key_cred_params[1].alg, -257);
    assert_eq!(options.pub_key_cred_params[1].type_, "public-key");
    assert_eq!(options.timeout, Some(300_000));
    assert_eq!(options.attestation, Some(AttestationConveyance::Direct));
    let selection = options.authenticator_selection.as_ref().unwrap();
    assert_eq!(
        selection.authenticator_attachment,
        Some(AuthenticatorAttachment::CrossPlatform)
    );
    assert_eq!(
        selection.resident_key,
        Some(ResidentKeyRequirement::Required)
    );
    assert_eq!(selection.require_resident_key, Some(true));
    assert_eq!(
        selection.user_verification,
        Some(UserVerificationRequirement::Required)
    );
    assert!(options.exclude_credentials.is_empty());
    assert_eq!(
        response.session.expose(),
        "c2Vzc2lvbi1ibG9iLW9wYXF1ZS10by1jbGllbnQ"
    );
}

#[test]
fn reg_init_response_in_the_openapi_form_and_with_unknown_values() {
    // Standard base64 with padding (the OpenAPI examples' form), an action and enum values
    // this client does not know, and members it has never seen.
    let text = r#"{"action":"reauthenticate","futureMember":1,
      "registrationRequestOptions":{"rp":{"name":"Example"},
        "user":{"id":"q83vEjRWeJCrze8SNFZ4kA==","name":"a","displayName":"A"},
        "challenge":"3q2+7wAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=",
        "pubKeyCredParams":[{"type":"public-key","alg":-8}],
        "attestation":"whatever",
        "authenticatorSelection":{"userVerification":"sometimes","residentKey":"maybe"},
        "excludeCredentials":[{"id":"AQID","type":"public-key","transports":["usb","nfc"]}],
        "extensions":{"credProps":true},
        "hints":["security-key"]},
      "session":"0123456789abcdef"}"#;
    let response: RegInitResponse = serde_json::from_str(text).unwrap();
    assert_eq!(response.action, RegInitAction::Unknown);
    let options = &response.registration_request_options;
    assert_eq!(options.rp.id, None);
    assert_eq!(&options.challenge.as_slice()[..4], [0xde, 0xad, 0xbe, 0xef]);
    assert_eq!(options.user.id.as_slice().len(), 16);
    assert_eq!(options.attestation, Some(AttestationConveyance::Unknown));
    let selection = options.authenticator_selection.as_ref().unwrap();
    assert_eq!(
        selection.user_verification,
        Some(UserVerificationRequirement::Unknown)
    );
    assert_eq!(
        selection.resident_key,
        Some(ResidentKeyRequirement::Unknown)
    );
    assert_eq!(options.exclude_credentials[0].id.as_slice(), [1, 2, 3]);
    assert_eq!(
        options.exclude_credentials[0].transports.as_deref(),
        Some(&["usb".to_owned(), "nfc".to_owned()][..])
    );
    assert_eq!(options.extensions.as_ref().unwrap()["credProps"], true);
}

#[test]
fn reg_complete_request() {
    let text = r#"{"creationResult":{
   "attestationObject":"o2NmbXRkbm9uZWdhdHRTdG10oGhhdXRoRGF0YVjE...",
   "clientDataJSON":"eyJ0eXBlIjoid2ViYXV0aG4uY3JlYXRlIiwiY2hhbGxlbmdlIjoi...",
   "credentialId":"AbCdEf0123456789-_AbCdEf",
   "publicKeyAlgorithm":-7,
   "transports":["usb","nfc"]},
 "session":"c2Vzc2lvbi1ibG9iLW9wYXF1ZS10by1jbGllbnQ",
 "passkeyName":"YubiKey 5 NFC"}"#
        .replace("...", "");
    let request: RegCompleteRequest = serde_json::from_str(&text).unwrap();
    let result = &request.creation_result;
    // CBOR map(3), "fmt": "none", "attStmt": {}, "authData": bytes(196) ...
    assert_eq!(
        &result.attestation_object.as_slice()[..16],
        b"\xa3cfmtdnonegattSt"
    );
    assert!(
        result
            .client_data_json
            .as_slice()
            .starts_with(br#"{"type":"webauthn.create","challenge":""#)
    );
    assert_eq!(result.credential_id.as_slice().len(), 18);
    assert_eq!(
        result.credential_id.to_base64url(),
        "AbCdEf0123456789-_AbCdEf"
    );
    assert_eq!(result.public_key_algorithm, Some(-7));
    assert_eq!(result.authenticator_data, None);
    assert_eq!(request.passkey_name.as_deref(), Some("YubiKey 5 NFC"));
    round_trips(&request, &text);
}

#[test]
fn reg_complete_responses_current_and_older() {
    let text =
        r#"{"jwtAccess":"eyJ...","userId":"7d1b...","passkeyId":"0c5e...","deviceId":"9a41..."}"#;
    let response: RegCompleteResponse = serde_json::from_str(text).unwrap();
    assert_eq!(response.jwt_access.expose(), "eyJ...");
    assert_eq!(response.user_id.as_deref(), Some("7d1b..."));
    assert_eq!(response.passkey_id.as_deref(), Some("0c5e..."));
    assert_eq!(response.device_id.as_deref(), Some("9a41..."));
    round_trips(&response, text);

    // 1.6.0 / 2024 shape.
    let old: RegCompleteResponse =
        serde_json::from_str(r#"{"jwtAccess":"eyJ...","deviceID":"9a41..."}"#).unwrap();
    assert_eq!(old.device_id.as_deref(), Some("9a41..."));
    assert_eq!(old.user_id, None);
}

#[test]
fn token_verify_request() {
    let text = r#"{ "jwtAccess": "<LoginID token>" }"#;
    let request: TokenVerifyRequest = serde_json::from_str(text).unwrap();
    assert_eq!(request.jwt_access.expose(), "<LoginID token>");
    round_trips(&request, text);
}

#[test]
fn jwks_of_section_4_5() {
    // Members as §4.5 lists them; the coordinates are a valid P-256 point.
    let text = r#"{"keys":[{"kty":"EC","crv":"P-256","alg":"ES256","use":"sig","key_ops":["verify"],
      "kid":"k1",
      "x":"axfR8uEsQkf4vOblY6RA8ncDfYEt6zOg9KE5RdiYwpY",
      "y":"T-NC4v4af5uO5-tKfA-eFivOM1drMV7Oy7ZAaDe_UfU"},
      {"kty":"RSA","kid":"r1","n":"AQAB","e":"AQAB"}]}"#;
    let set: JwkSet = serde_json::from_str(text).unwrap();
    assert_eq!(set.keys.len(), 2);
    assert_eq!(set.keys[0].kid.as_deref(), Some("k1"));
    assert_eq!(
        set.keys[0].key_ops.as_deref(),
        Some(&["verify".to_owned()][..])
    );
    assert!(verifying_key(&set.keys[0]).is_ok());
    assert!(verifying_key(&set.keys[1]).is_err());
}

#[test]
fn app_error_bodies() {
    let error: AppError =
        serde_json::from_str(r#"{"msg":"token expired","msgCode":"unauthorized"}"#).unwrap();
    assert_eq!(error.msg_code.as_deref(), Some("unauthorized"));
    assert_eq!(error.msg.as_deref(), Some("token expired"));
    // Android SDK tolerance: `message`.
    let error: AppError =
        serde_json::from_str(r#"{"msgCode":"bad_request","message":"nope"}"#).unwrap();
    assert_eq!(error.message.as_deref(), Some("nope"));
}

#[test]
fn loginid_token_claims_of_section_5() {
    let text = r#"{ "aud": "<appId>",
  "iss": "https://<appId>.api.loginid.io",
  "sub": "<user UUID>",
  "username": "alice@example.com",
  "credID": "<passkey UUID>",
  "scopes": ["passkey:read","passkey:write","auth:write"],
  "tokenType": "jwtAccess",
  "verify": "/fido2/v2/mgmt/token/verify",
  "iat": 1723775479, "exp": 1723776079 }"#;
    let claims: LoginIdClaims = serde_json::from_str(text).unwrap();
    assert_eq!(claims.aud, Audience::One("<appId>".into()));
    assert_eq!(claims.cred_id.as_deref(), Some("<passkey UUID>"));
    assert_eq!(claims.token_type.as_deref(), Some("jwtAccess"));
    assert_eq!(
        claims.verify.as_deref(),
        Some("/fido2/v2/mgmt/token/verify")
    );
    assert_eq!(claims.exp - claims.iat.unwrap(), 600);
    round_trips(&claims, text);
}
