//! Seed corpora for the cargo-fuzz targets in `fuzz/`, generated rather than stored: from the
//! project's own encoders, from a virtual key running the real firmware, and, when
//! `PASSKEYD_VECTORS` names the directory of recorded vectors, from bytes recorded from real
//! keys (third-party data: read at run time, written only below the git-ignored
//! `fuzz/corpus`).
//!
//! The test always checks that every generated seed is accepted by the parser its target
//! starts with, so the seeds keep reaching deep paths as the parsers change. With
//! `PASSKEYD_FUZZ_SEEDS=<dir>` it also writes each seed to `<dir>/<target>/<name>`
//! (`scripts/fuzz` does this before running the targets).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ctap::cbor::{self, Value};
use ctap::command::client_pin::{GetKeyAgreement, GetPinRetries};
use ctap::command::get_info::GetInfo;
use ctap::command::make_credential::{
    self, MakeCredential, PublicKeyCredentialParameters, RelyingParty, User,
};
use ctap::command::{Command, decode_response, encode_request};
use ctap::cose::{CoseKey, alg, curve};
use ctap::ctaphid::TransactionEvent;
use ctap::ctaphid::{self, Cid, Command as HidCommand, PushOutcome, Reassembler, Transaction};
use ctap::iso7816::{self, ApduForm, ResponseApdu};
use ctap::u2f::{self, Registration};
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::{AuthenticatorData, Flags};
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey};
use passkeyd::daemon::Config;
use passkeyd::loginid::dto::{GrantResponse, JwkSet, RegCompleteResponse, RegInitResponse};
use passkeyd::transport::usb::descriptor::ReportDescriptor;
use passkeyd::transport::usb::uevent::parse_uevent;
use sha2::{Digest as _, Sha256};
use virtkey::VirtKey;

/// Must match `fuzz/fuzz_targets/loginid_jwt.rs`: the key the target verifies with and the
/// expectations it verifies against.
const JWT_SECRET_SCALAR: [u8; 32] = [0x11; 32];
const JWT_ISSUER: &str = "https://app-1.api.loginid.io";
const JWT_AUDIENCE: &str = "app-1";
const JWT_USERNAME: &str = "alice@example.com";
const JWT_NOW: u64 = 1_723_775_600;

/// Report length selector byte of `ctaphid_reassembler` for 64-byte reports (56 + 8).
const HID_SELECTOR_64: u8 = 8;
const RP_ID: &str = "example.org";
const SILENCE: Duration = Duration::from_secs(10);

/// Seeds by target, then by file name.
#[derive(Default)]
struct Seeds(BTreeMap<&'static str, BTreeMap<String, Vec<u8>>>);

impl Seeds {
    fn add(&mut self, target: &'static str, name: impl Into<String>, bytes: Vec<u8>) {
        let name: String = name
            .into()
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.0.entry(target).or_default().insert(name, bytes);
    }

    fn count(&self, target: &str) -> usize {
        self.0.get(target).map_or(0, BTreeMap::len)
    }

    fn write(&self, dir: &Path) {
        for (target, seeds) in &self.0 {
            let target_dir = dir.join(target);
            std::fs::create_dir_all(&target_dir).unwrap();
            for (name, bytes) in seeds {
                std::fs::write(target_dir.join(name), bytes).unwrap();
            }
        }
    }
}

fn with_selector(selector: u8, body: &[u8]) -> Vec<u8> {
    let mut out = vec![selector];
    out.extend_from_slice(body);
    out
}

/// `apdu_response` input: a selector byte, then each response prefixed by its length.
fn apdu_seed(framing_selector: u8, responses: &[&[u8]]) -> Option<Vec<u8>> {
    let mut out = vec![framing_selector];
    for response in responses {
        out.push(u8::try_from(response.len()).ok()?);
        out.extend_from_slice(response);
    }
    Some(out)
}

// ---- A virtual key running the real firmware ----

/// Drives a virtual key over CTAPHID and keeps every report it sends.
struct HidPeer {
    key: VirtKey,
    cid: Cid,
}

impl HidPeer {
    fn start(seeds: &mut Seeds) -> Self {
        let key = VirtKey::start(virtkey::Config::default()).unwrap();
        let nonce = [0x4e; 8];
        key.write_report(&ctaphid::init_request(&nonce)).unwrap();
        let mut reassembler = Reassembler::new(Cid::BROADCAST, ctaphid::INIT_DATA_LEN);
        let report = key.read_report(SILENCE).unwrap().expect("INIT answered");
        let PushOutcome::Complete(message) = reassembler.push(&report).unwrap() else {
            panic!("INIT response in one report");
        };
        let init = ctaphid::parse_init_response(&message.payload, &nonce).unwrap();
        seeds.add(
            "ctaphid_reassembler",
            "virtkey-init",
            with_selector(HID_SELECTOR_64, &report),
        );
        Self { key, cid: init.cid }
    }

    /// One transaction: the response payload and every report read.
    fn transact(&self, command: HidCommand, payload: &[u8]) -> (Vec<u8>, Vec<u8>) {
        let mut transaction =
            Transaction::new(self.cid, command, payload, virtkey::MAX_MSG_SIZE).unwrap();
        for report in transaction.reports() {
            self.key.write_report(report).unwrap();
        }
        let mut reports = Vec::new();
        loop {
            let report = self.key.read_report(SILENCE).unwrap().expect("key answers");
            reports.extend_from_slice(&report);
            match transaction.on_report(&report).unwrap() {
                TransactionEvent::Response(response) => return (response, reports),
                TransactionEvent::Error(code) => panic!("CTAPHID_ERROR {code:?}"),
                _ => {}
            }
        }
    }

    fn cbor<C: Command>(&self, seeds: &mut Seeds, name: &str, command: &C) -> Vec<u8> {
        let request = encode_request(command).unwrap();
        let (response, reports) = self.transact(HidCommand::Cbor, &request);
        decode_response::<C>(&response).expect("the firmware's answer decodes");
        seeds.add(
            "ctaphid_reassembler",
            format!("virtkey-{name}"),
            with_selector(HID_SELECTOR_64, &reports),
        );
        seeds.add(
            "ctap2_response",
            format!("virtkey-{name}"),
            response.clone(),
        );
        response
    }
}

fn make_credential_request() -> MakeCredential {
    MakeCredential::new(make_credential::Request::new(
        [0xcd; 32],
        RelyingParty {
            id: RP_ID.to_owned(),
            name: Some("Example".to_owned()),
        },
        User {
            id: vec![0x75; 16],
            name: Some("alice".to_owned()),
            display_name: Some("Alice".to_owned()),
        },
        vec![PublicKeyCredentialParameters::public_key(alg::ES256)],
    ))
    .unwrap()
}

/// Seeds for the byte-level targets from the firmware's own answers.
fn virtual_key_seeds(seeds: &mut Seeds) {
    let peer = HidPeer::start(seeds);
    peer.cbor(seeds, "getinfo", &GetInfo);
    peer.cbor(
        seeds,
        "pin-retries",
        &GetPinRetries {
            pin_uv_auth_protocol: None,
        },
    );
    let key_agreement = peer.cbor(
        seeds,
        "key-agreement",
        &GetKeyAgreement {
            pin_uv_auth_protocol: 2,
        },
    );
    let key_agreement = cbor::IntMap::from_slice(&key_agreement[1..], "keyAgreement")
        .unwrap()
        .take(0x01)
        .unwrap();
    seeds.add(
        "cose_key",
        "virtkey-key-agreement",
        cbor::to_canonical_vec(&key_agreement).unwrap(),
    );

    let response = peer.cbor(seeds, "make-credential", &make_credential_request());
    let made = decode_response::<MakeCredential>(&response).unwrap();
    let object = AttestationObject::from_response(made).unwrap();
    add_auth_data_seeds(seeds, "virtkey-make-credential", &object.auth_data);
    seeds.add(
        "auth_data",
        "virtkey-attestation-object",
        object.to_cbor().unwrap(),
    );

    // U2F over CTAPHID_MSG: the response APDU with its status word.
    let register = u2f::RegisterRequest::for_webauthn([0xcd; 32], RP_ID);
    let (response, reports) = peer.transact(HidCommand::Msg, &register.to_apdu(ApduForm::Extended));
    Registration::from_response(&response).expect("the firmware registers");
    seeds.add("u2f_register", "virtkey-register", response);
    seeds.add(
        "ctaphid_reassembler",
        "virtkey-u2f-register",
        with_selector(HID_SELECTOR_64, &reports),
    );

    // NFC: SELECT and NFCCTAP_MSG(getInfo) in short framing (so chaining and 61xx appear).
    let select = iso7816::select_fido_applet()
        .encode(ApduForm::Short)
        .unwrap();
    let selected = peer.key.transmit_apdu(&select, SILENCE).unwrap();
    ResponseApdu::parse(&selected).unwrap();
    seeds.add(
        "apdu_response",
        "virtkey-select",
        apdu_seed(1, &[&selected]).unwrap(),
    );
    let request = encode_request(&GetInfo).unwrap();
    let mut exchange = iso7816::Exchange::ctap(&request, iso7816::Framing::ShortChained, 8192)
        .expect("a getInfo exchange");
    let mut apdu = exchange.first_command().to_vec();
    let mut responses = Vec::new();
    loop {
        let response = peer.key.transmit_apdu(&apdu, SILENCE).unwrap();
        responses.push(response.clone());
        match exchange.on_response(&response).unwrap() {
            iso7816::ExchangeEvent::Transmit(next) => apdu = next,
            iso7816::ExchangeEvent::StatusUpdate { poll, .. } => apdu = poll,
            iso7816::ExchangeEvent::Complete(_) => break,
        }
    }
    let responses: Vec<&[u8]> = responses.iter().map(Vec::as_slice).collect();
    if let Some(seed) = apdu_seed(1, &responses) {
        seeds.add("apdu_response", "virtkey-getinfo-short", seed);
    }
}

/// authData for `auth_data`, and its credential public key for `cose_key`.
fn add_auth_data_seeds(seeds: &mut Seeds, name: &str, auth_data: &[u8]) {
    seeds.add("auth_data", name, auth_data.to_vec());
    if let Ok(parsed) = AuthenticatorData::parse(auth_data)
        && let Some(credential) = parsed.attested_credential_data()
    {
        seeds.add(
            "cose_key",
            name,
            credential.credential_public_key_bytes().to_vec(),
        );
    }
}

// ---- The project's own encoders ----

fn cose_key_seeds(seeds: &mut Seeds) {
    let point = SigningKey::from_slice(&[0x22; 32]).unwrap();
    let p256 = CoseKey::from_p256(&p256::PublicKey::from(point.verifying_key()), alg::ES256);
    let keys = [
        ("ec2-p256", p256.clone()),
        (
            "ec2-p384",
            CoseKey::Ec2 {
                alg: Some(alg::ES384),
                crv: curve::P384,
                x: vec![0x01; 48],
                y: vec![0x02; 48],
            },
        ),
        (
            "okp-ed25519",
            CoseKey::Okp {
                alg: Some(alg::EDDSA),
                crv: curve::ED25519,
                x: vec![0x03; 32],
            },
        ),
        (
            "rsa",
            CoseKey::Rsa {
                alg: Some(alg::RS256),
                n: [&[0x00, 0xc1][..], &[0x5a; 255][..]].concat(),
                e: vec![0x01, 0x00, 0x01],
            },
        ),
    ];
    for (name, key) in keys {
        let bytes = cbor::to_canonical_vec(&key.to_value()).unwrap();
        let parsed = CoseKey::from_value(cbor::from_slice(&bytes).unwrap()).unwrap();
        assert_eq!(parsed, key);
        assert!(key.to_spki_der().is_ok(), "{name}");
        seeds.add("cose_key", name, bytes);
    }

    // authData around that key, with and without extensions, and its attestation object.
    let rp_id_hash: [u8; 32] = Sha256::digest(RP_ID.as_bytes()).into();
    let built = AuthenticatorData::with_attested_credential(
        rp_id_hash,
        Flags::UP | Flags::UV | Flags::BE,
        7,
        [0xaa; 16],
        &[0xc1; 32],
        &p256,
    )
    .unwrap();
    add_auth_data_seeds(seeds, "built-at", built.as_bytes());
    let extensions = cbor::to_canonical_vec(&Value::Map(vec![
        (Value::from("credProtect"), Value::from(2)),
        (Value::from("hmac-secret"), Value::Bool(true)),
        (Value::from("credBlob"), Value::Bool(true)),
        (Value::from("minPinLength"), Value::from(6)),
    ]))
    .unwrap();
    let mut with_extensions = built.as_bytes().to_vec();
    with_extensions[32] |= Flags::ED.bits();
    with_extensions.extend_from_slice(&extensions);
    AuthenticatorData::parse(&with_extensions).unwrap();
    seeds.add("auth_data", "built-at-ed", with_extensions);
    let mut assertion = built.as_bytes()[..37].to_vec();
    assertion[32] = (Flags::UP | Flags::ED).bits();
    assertion.extend_from_slice(&extensions);
    AuthenticatorData::parse(&assertion).unwrap();
    seeds.add("auth_data", "built-ed", assertion);
    seeds.add(
        "auth_data",
        "built-attestation-none",
        AttestationObject::none(built.into_bytes())
            .to_cbor()
            .unwrap(),
    );
}

fn u2f_seeds(seeds: &mut Seeds) {
    // A registration assembled by the layout of Raw Message Formats §4.3: a real P-256 key, a
    // minimal DER certificate-shaped SEQUENCE and a DER signature-shaped SEQUENCE.
    let user_key = SigningKey::from_slice(&[0x33; 32]).unwrap();
    let point = user_key.verifying_key().to_encoded_point(false);
    let mut data = vec![0x05];
    data.extend_from_slice(point.as_bytes());
    data.push(16);
    data.extend_from_slice(&[0x4b; 16]);
    data.extend_from_slice(&[0x30, 0x03, 0x02, 0x01, 0x01]);
    let signature: Signature = user_key.sign(b"u2f seed");
    data.extend_from_slice(signature.to_der().as_bytes());
    Registration::parse(&data).unwrap();
    seeds.add("u2f_register", "built-register-data", data.clone());
    data.extend_from_slice(&[0x90, 0x00]);
    seeds.add("u2f_register", "built-register-response", data);
    let mut authentication = vec![0x01, 0x00, 0x00, 0x00, 0x2a];
    authentication.extend_from_slice(signature.to_der().as_bytes());
    authentication.extend_from_slice(&[0x90, 0x00]);
    u2f::Authentication::from_response(&authentication).unwrap();
    seeds.add("u2f_register", "built-authenticate", authentication);
    seeds.add(
        "u2f_register",
        "sw-conditions-not-satisfied",
        vec![0x69, 0x85],
    );
}

fn loginid_json_seeds(seeds: &mut Seeds) {
    let reg_init = serde_json::json!({
        "action": "proceed",
        "registrationRequestOptions": {
            "rp": { "id": "example.co.uk", "name": "Example" },
            "user": { "id": "dXNlci0x", "name": "alice@example.com", "displayName": "Alice" },
            "challenge": "Y2hhbGxlbmdlLWNoYWxsZW5nZS0xMjM0",
            "pubKeyCredParams": [ { "type": "public-key", "alg": -7 },
                                  { "type": "public-key", "alg": -257 } ],
            "timeout": 300000,
            "attestation": "direct",
            "authenticatorSelection": {
                "authenticatorAttachment": "cross-platform",
                "requireResidentKey": false,
                "residentKey": "discouraged",
                "userVerification": "preferred"
            },
            "excludeCredentials": [ { "id": "AQID", "type": "public-key", "transports": ["usb", "nfc"] } ],
            "extensions": { "credentialProtectionPolicy": "userVerificationOptional",
                            "enforceCredentialProtectionPolicy": false, "credProps": true }
        },
        "session": "session-token-0123456789"
    });
    let reg_complete = serde_json::json!({
        "jwtAccess": "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
        "userId": "7d1b0b4e-0000-4000-8000-000000000001",
        "passkeyId": "0c5e0000-0000-4000-8000-000000000002",
        "deviceId": "d-1"
    });
    let grant = serde_json::json!({ "token": "grant-token-0123456789" });
    let jwks = serde_json::json!({ "keys": [ jwk() ] });
    let bodies: [(&str, u8, serde_json::Value); 4] = [
        ("reg-init", 0, reg_init),
        ("reg-complete", 1, reg_complete),
        ("grant", 2, grant),
        ("jwks", 3, jwks),
    ];
    for (name, selector, body) in bodies {
        let bytes = serde_json::to_vec(&body).unwrap();
        match selector {
            0 => drop(serde_json::from_slice::<RegInitResponse>(&bytes).unwrap()),
            1 => drop(serde_json::from_slice::<RegCompleteResponse>(&bytes).unwrap()),
            2 => drop(serde_json::from_slice::<GrantResponse>(&bytes).unwrap()),
            _ => drop(serde_json::from_slice::<JwkSet>(&bytes).unwrap()),
        }
        seeds.add("loginid_json", name, with_selector(selector, &bytes));
    }
    // Error bodies: status, content-type selector, the request's token, 0xff, the body.
    let secret = "session-token-0123456789";
    for (name, status, kind, body) in [
        (
            "error-echoes-token",
            400u16,
            0u8,
            format!(r#"{{"msgCode":"bad_request","msg":"unknown session {secret}"}}"#),
        ),
        (
            "error-message-member",
            429,
            1,
            r#"{"msgCode":"too_many_requests","message":"slow down\n\u001b[31m"}"#.to_owned(),
        ),
        ("error-html", 502, 2, "<html>bad gateway</html>".to_owned()),
    ] {
        let mut seed = vec![4];
        seed.extend_from_slice(&(status - 100).to_be_bytes());
        seed.push(kind);
        seed.extend_from_slice(secret.as_bytes());
        seed.push(0xff);
        seed.extend_from_slice(body.as_bytes());
        seeds.add("loginid_json", name, seed);
    }
}

fn jwk() -> serde_json::Value {
    let key = SigningKey::from_slice(&JWT_SECRET_SCALAR).unwrap();
    let point = key.verifying_key().to_encoded_point(false);
    serde_json::json!({
        "kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1",
        "x": URL_SAFE_NO_PAD.encode(point.x().unwrap()),
        "y": URL_SAFE_NO_PAD.encode(point.y().unwrap()),
    })
}

fn loginid_jwt_seeds(seeds: &mut Seeds) {
    let key = SigningKey::from_slice(&JWT_SECRET_SCALAR).unwrap();
    let header = br#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#;
    let claims = serde_json::json!({
        "aud": JWT_AUDIENCE,
        "iss": JWT_ISSUER,
        "sub": "7d1b0b4e-0000-4000-8000-000000000001",
        "username": JWT_USERNAME,
        "credID": "0c5e0000-0000-4000-8000-000000000002",
        "scopes": ["passkey:read", "passkey:write"],
        "tokenType": "jwtAccess",
        "iat": JWT_NOW - 100,
        "nbf": JWT_NOW - 100,
        "exp": JWT_NOW + 500
    })
    .to_string();
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(&claims)
    );
    let signature: Signature = key.sign(input.as_bytes());
    let token = format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()));
    let (kid, _) = passkeyd::fuzzing::verify_token(
        &token,
        key.verifying_key(),
        JWT_ISSUER,
        JWT_AUDIENCE,
        Some(JWT_USERNAME),
        Duration::from_secs(60),
        SystemTime::UNIX_EPOCH + Duration::from_secs(JWT_NOW),
    )
    .expect("the seed token verifies");
    assert_eq!(kid, "k1");
    seeds.add("loginid_jwt", "token", with_selector(0, token.as_bytes()));
    let mut structured = vec![1];
    structured.extend_from_slice(header);
    structured.push(0);
    structured.extend_from_slice(claims.as_bytes());
    structured.extend_from_slice(&[0, 0x00, 0x10, 0x07]);
    seeds.add("loginid_jwt", "signed-claims", structured);
}

/// The FIDO HID report descriptor a CTAPHID key declares (CTAP 2.2 §11.2.8.2): usage page
/// 0xF1D0, usage 0x01, 64-byte input (usage 0x20) and output (usage 0x21) reports.
const FIDO_DESCRIPTOR: [u8; 34] = [
    0x06, 0xd0, 0xf1, 0x09, 0x01, 0xa1, 0x01, 0x09, 0x20, 0x15, 0x00, 0x26, 0xff, 0x00, 0x75, 0x08,
    0x95, 0x40, 0x81, 0x02, 0x09, 0x21, 0x15, 0x00, 0x26, 0xff, 0x00, 0x75, 0x08, 0x95, 0x40, 0x91,
    0x02, 0xc0,
];

fn usb_seeds(seeds: &mut Seeds) {
    let descriptor = ReportDescriptor::parse(&FIDO_DESCRIPTOR).unwrap();
    assert!(descriptor.is_fido());
    descriptor.check_ctaphid_reports().unwrap();
    seeds.add("usb_descriptor", "fido", FIDO_DESCRIPTOR.to_vec());
    // The same with a report ID and a nested vendor collection.
    let mut with_id = vec![0x85, 0x01];
    with_id.extend_from_slice(&FIDO_DESCRIPTOR);
    with_id.extend_from_slice(&[
        0x05, 0x01, 0x09, 0x02, 0xa1, 0x01, 0x09, 0x01, 0xa1, 0x00, 0xa4, 0x75, 0x01, 0x95, 0x03,
        0x81, 0x02, 0xb4, 0xc0, 0xc0,
    ]);
    ReportDescriptor::parse(&with_id).unwrap();
    seeds.add("usb_descriptor", "fido-report-id-mouse", with_id);

    let devpath =
        "/devices/pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/0003:1050:0407.0001/hidraw/hidraw3";
    for (name, action) in [("add", "add"), ("remove", "remove")] {
        let message = format!(
            "{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM=hidraw\0\
             MAJOR=240\0MINOR=3\0DEVNAME=hidraw3\0SEQNUM=4711\0"
        );
        assert!(parse_uevent(message.as_bytes()).unwrap().is_some());
        seeds.add(
            "usb_uevent",
            format!("kernel-{name}"),
            with_selector(0, message.as_bytes()),
        );
    }
    seeds.add("usb_uevent", "node-name", with_selector(1, b"hidraw12"));
    let hid = b"DRIVER=hid-generic\nHID_ID=0003:00001050:00000407\nHID_NAME=Yubico YubiKey OTP+FIDO+CCID\nHID_PHYS=usb-0000:00:14.0-2/input1\nHID_UNIQ=\nMODALIAS=hid:b0003g0001v00001050p00000407\n";
    assert!(passkeyd::fuzzing::parse_hid_uevent(hid).is_some());
    seeds.add("usb_uevent", "hid-uevent-file", with_selector(2, hid));
}

fn daemon_config_seeds(seeds: &mut Seeds) {
    let full = r#"
[loginid]
base_url = "https://app-1.api.loginid.io"
app_id = "app-1"
origin = "https://kiosk.example.com"
allow_insecure_loopback = false
verify_token = true

[transports]
usb = true
nfc = true
virtual_dir = "/run/passkeyd/virtual"
usb_open_window_ms = 2000
nfc_first_retry_ms = 1000
nfc_max_retry_ms = 60000

[access]
allowed_users = ["kiosk", 1000]
allowed_groups = ["passkeyd"]
polkit = false
max_ceremonies_per_caller = 2
max_ceremonies = 16

[timeouts]
ceremony_default_s = 300
ceremony_min_s = 10
ceremony_max_s = 600
complete_grace_s = 30
"#;
    Config::from_toml(full).unwrap();
    seeds.add("daemon_config", "full", full.as_bytes().to_vec());
    let minimal = "[loginid]\nbase_url = \"http://127.0.0.1:8080\"\napp_id = \"a\"\n\
                   origin = \"http://localhost\"\nallow_insecure_loopback = true\n\
                   [transports]\nusb = false\nnfc = false\n";
    Config::from_toml(minimal).unwrap();
    seeds.add("daemon_config", "minimal", minimal.as_bytes().to_vec());
}

fn dbus_seeds(seeds: &mut Seeds) {
    use std::collections::HashMap;
    use zbus::zvariant::{Endian, ObjectPath, Value, serialized::Context, to_bytes};

    let path = ObjectPath::try_from("/org/passkeyd/authenticator/virtual_key0").unwrap();
    let full: HashMap<&str, Value<'_>> = HashMap::from([
        ("display_name", Value::from("Alice")),
        ("username_type", Value::from("email")),
        ("passkey_name", Value::from("Kiosk key")),
        ("authenticator", Value::from(path)),
        ("timeout_ms", Value::from(120_000u32)),
        ("pin", Value::from("123456")),
    ]);
    let cases: [(&str, &str, HashMap<&str, Value<'_>>); 2] = [
        ("full", "alice@example.com", full),
        ("no-options", "bob", HashMap::new()),
    ];
    for (name, username, options) in cases {
        let token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl";
        let body = to_bytes(
            Context::new_dbus(Endian::Little, 0),
            &(username, token, options),
        )
        .unwrap()
        .to_vec();
        passkeyd::dbus::decode_create_passkey(&body).expect("a seed request is valid");
        seeds.add("dbus_create_passkey", name, with_selector(0, &body));
    }
}

// ---- Recorded vectors (third-party data: read here, never committed) ----

fn hex_field(vector: &serde_json::Value, field: &str) -> Option<Vec<u8>> {
    hex::decode(vector.get(field)?.as_str()?).ok()
}

fn vector_seeds(seeds: &mut Seeds, dir: &Path) -> usize {
    let mut used = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    for file in files {
        let data: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
        for vector in data["vectors"].as_array().into_iter().flatten() {
            let name = vector["name"].as_str().unwrap_or("vector").to_owned();
            let transport = vector["transport"].as_str().unwrap_or_default();
            let from_device = vector["direction"].as_str() == Some("device->host");
            let before = seeds.0.values().map(BTreeMap::len).sum::<usize>();
            if let Some(reports) = vector["reports"].as_array().filter(|_| from_device) {
                let mut all = vec![HID_SELECTOR_64];
                for report in reports {
                    all.extend(
                        hex::decode(report.as_str().unwrap_or_default()).unwrap_or_default(),
                    );
                }
                seeds.add("ctaphid_reassembler", &name, all);
                let messages = vector["decoded"]["messages"].as_array();
                for (i, message) in messages.into_iter().flatten().enumerate() {
                    let Some(payload) = hex_field(message, "payload_hex") else {
                        continue;
                    };
                    match message["cmd_name"].as_str().unwrap_or_default() {
                        name_ if name_.contains("CBOR") => {
                            seeds.add("ctap2_response", format!("{name}-{i}"), payload.clone());
                            add_make_credential_seeds(seeds, &format!("{name}-{i}"), &payload);
                        }
                        name_ if name_.contains("MSG") => {
                            seeds.add("u2f_register", format!("{name}-{i}"), payload);
                        }
                        _ => {}
                    }
                }
            } else if let Some(bytes) = hex_field(vector, "hex") {
                if transport.starts_with("ctap2 cbor") {
                    let mut response = vec![0x00];
                    response.extend_from_slice(&bytes);
                    add_make_credential_seeds(seeds, &name, &response);
                    seeds.add("ctap2_response", &name, response);
                } else if transport.starts_with("U2F raw message") {
                    seeds.add("u2f_register", &name, bytes);
                } else if transport.starts_with("nfc/pcsc response APDU") {
                    if let Some(seed) = apdu_seed(0, &[&bytes]) {
                        seeds.add("apdu_response", &name, seed);
                    }
                } else if transport.starts_with("webauthn attestationObject") {
                    seeds.add("auth_data", format!("{name}-object"), bytes);
                    if let Some(auth_data) = hex_field(vector, "authData_hex") {
                        add_auth_data_seeds(seeds, &name, &auth_data);
                    }
                } else if transport.starts_with("webauthn assertion") {
                    seeds.add("auth_data", &name, bytes);
                } else if transport.starts_with("usb-hid report descriptor") {
                    seeds.add("usb_descriptor", &name, bytes);
                }
            }
            if seeds.0.values().map(BTreeMap::len).sum::<usize>() > before {
                used += 1;
            }
        }
    }
    used
}

/// A makeCredential response (status byte first) gives authData and COSE key seeds.
fn add_make_credential_seeds(seeds: &mut Seeds, name: &str, response: &[u8]) {
    if let Ok(made) = decode_response::<MakeCredential>(response) {
        add_auth_data_seeds(seeds, name, &made.auth_data);
        if let Ok(object) = AttestationObject::from_response(made)
            && let Ok(bytes) = object.to_cbor()
        {
            seeds.add("auth_data", format!("{name}-object"), bytes);
        }
    }
}

#[test]
fn fuzz_seeds_are_generated_and_parse() {
    let mut seeds = Seeds::default();
    virtual_key_seeds(&mut seeds);
    cose_key_seeds(&mut seeds);
    u2f_seeds(&mut seeds);
    loginid_json_seeds(&mut seeds);
    loginid_jwt_seeds(&mut seeds);
    usb_seeds(&mut seeds);
    daemon_config_seeds(&mut seeds);
    dbus_seeds(&mut seeds);
    for target in [
        "ctaphid_reassembler",
        "apdu_response",
        "ctap2_response",
        "auth_data",
        "cose_key",
        "u2f_register",
        "loginid_json",
        "loginid_jwt",
        "usb_descriptor",
        "usb_uevent",
        "daemon_config",
        "dbus_create_passkey",
    ] {
        assert!(seeds.count(target) > 0, "no seed for {target}");
    }

    if let Some(dir) = std::env::var_os("PASSKEYD_VECTORS") {
        let used = vector_seeds(&mut seeds, Path::new(&dir));
        assert!(used > 50, "only {used} recorded vectors became seeds");
    }
    if let Some(out) = std::env::var_os("PASSKEYD_FUZZ_SEEDS") {
        seeds.write(Path::new(&out));
        for (target, files) in &seeds.0 {
            eprintln!("{target}: {} seeds", files.len());
        }
    }
}
