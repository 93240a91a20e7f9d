//! The emulator on its own: its command-line interface, the WebAuthn checks of
//! `reg/complete`, its authorization rules and its faults, driven over raw HTTP/1.1 so that
//! nothing of the passkeyd client is involved.

// Helpers outside #[test] functions panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use loginid_emulator::soft_authenticator::{
    self, AttestationFormat, FLAG_UP, FLAG_UV, Registration, SoftAuthenticator,
};
use loginid_emulator::{BodyFault, Emulator, EmulatorConfig, Endpoint, Fault, UserVerification};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;
use url::Url;

const APP_ID: &str = "app-under-test";
const ORIGIN: &str = "https://example.com";
const RP_ID: &str = "example.com";
const API_KEY: &str = "emulator-test-key";
const GENEROUS: Duration = Duration::from_secs(60);

struct Reply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl Reply {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }
}

/// One HTTP/1.1 exchange with `Connection: close`; `None` when the server closed the
/// connection without answering.
async fn http(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&Value>,
) -> Option<Reply> {
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !body.is_empty() {
        request.push_str("Content-Type: application/json\r\n");
    }
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    request.push_str(&body);
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    // A reset or an early close both end the read; what arrived is what counts.
    let _ = tokio::time::timeout(GENEROUS, stream.read_to_end(&mut raw))
        .await
        .expect("no answer in time");
    if raw.is_empty() {
        return None;
    }
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    let head = String::from_utf8(raw[..split].to_vec()).unwrap();
    let status = head[9..12].parse().unwrap();
    Some(Reply {
        status,
        head,
        body: raw[split + 4..].to_vec(),
    })
}

fn basic(key: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{key}:")))
}

fn config() -> EmulatorConfig {
    EmulatorConfig::new(APP_ID, Url::parse(ORIGIN).unwrap(), RP_ID, API_KEY)
}

async fn start(configure: impl FnOnce(&mut EmulatorConfig)) -> Emulator {
    let mut config = config();
    configure(&mut config);
    Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap()
}

fn init_body(username: &str) -> Value {
    json!({
        "app": {"id": APP_ID},
        "deviceInfo": {},
        "user": {"username": username, "usernameType": "email"},
        "passkeyOptions": {"securityKey": true},
    })
}

async fn init(emulator: &Emulator, username: &str, authorization: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = authorization
        .map(|a| vec![("Authorization", a)])
        .unwrap_or_default();
    http(
        emulator.addr(),
        "POST",
        "/fido2/v2/reg/init",
        &headers,
        Some(&init_body(username)),
    )
    .await
    .unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Registers against an init reply; `adjust` changes the authenticator request.
fn make_credential(
    init: &Value,
    adjust: impl FnOnce(&mut soft_authenticator::Request),
) -> Registration {
    let options = &init["registrationRequestOptions"];
    let challenge = options["challenge"].as_str().unwrap();
    let challenge = URL_SAFE_NO_PAD
        .decode(challenge.trim_end_matches('='))
        .or_else(|_| STANDARD.decode(challenge))
        .unwrap();
    let mut request = soft_authenticator::Request {
        rp_id: RP_ID.to_owned(),
        challenge,
        origin: ORIGIN.to_owned(),
        ..soft_authenticator::Request::default()
    };
    adjust(&mut request);
    SoftAuthenticator::new().unwrap().make_credential(&request)
}

fn complete_body(init: &Value, registration: &Registration) -> Value {
    json!({
        "creationResult": {
            "attestationObject": b64(&registration.attestation_object),
            "clientDataJSON": b64(&registration.client_data_json),
            "credentialId": b64(&registration.credential_id),
            "authenticatorData": b64(&registration.authenticator_data),
            "publicKeyAlgorithm": -7,
            "transports": ["usb"],
        },
        "session": init["session"],
    })
}

async fn complete(emulator: &Emulator, body: &Value) -> Reply {
    http(
        emulator.addr(),
        "POST",
        "/fido2/v2/reg/complete",
        &[],
        Some(body),
    )
    .await
    .unwrap()
}

fn assert_app_error(reply: &Reply, status: u16, code: &str, msg_part: &str) {
    assert_eq!(
        reply.status,
        status,
        "{}",
        String::from_utf8_lossy(&reply.body)
    );
    let body = reply.json();
    assert_eq!(body["msgCode"], code);
    let msg = body["msg"].as_str().unwrap();
    assert!(msg.contains(msg_part), "{msg:?} lacks {msg_part:?}");
}

#[tokio::test]
async fn command_line_interface() {
    let dir = std::env::temp_dir().join(format!("loginid-emulator-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port_file = dir.join("port");
    let log = dir.join("requests.jsonl");
    let faults = dir.join("faults.json");
    std::fs::write(
        &faults,
        r#"{"token/verify": [{"status": 500, "times": 1}]}"#,
    )
    .unwrap();
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_loginid-emulator"))
        .args(["--listen", "127.0.0.1:0", "--port-file"])
        .arg(&port_file)
        .args(["--app-id", APP_ID, "--origin", ORIGIN, "--rp-id", RP_ID])
        .args(["--api-key", API_KEY, "--protected", "--request-log"])
        .arg(&log)
        .arg("--faults")
        .arg(&faults)
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let port: u16 = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            break text.trim().parse().unwrap();
        }
        assert!(started.elapsed() < GENEROUS, "no port file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));

    let jwks = http(addr, "GET", "/fido2/v2/.well-known/jwks.json", &[], None)
        .await
        .unwrap();
    assert_eq!(jwks.status, 200);
    let key = &jwks.json()["keys"][0];
    assert_eq!(
        (&key["kty"], &key["crv"], &key["alg"], &key["use"]),
        (
            &json!("EC"),
            &json!("P-256"),
            &json!("ES256"),
            &json!("sig")
        )
    );
    assert_eq!(key["x"].as_str().unwrap().len(), 43);

    // Protected: no registration without a token.
    let headers: [(&str, &str); 0] = [];
    let refused = http(
        addr,
        "POST",
        "/fido2/v2/reg/init",
        &headers,
        Some(&init_body("a@b.c")),
    )
    .await
    .unwrap();
    assert_app_error(&refused, 401, "unauthorized", "protected");

    let auth = basic(API_KEY);
    let grant = http(
        addr,
        "POST",
        "/fido2/v2/mgmt/grant",
        &[("Authorization", &auth)],
        Some(&json!({"grants": ["reg:write"], "username": "a@b.c"})),
    )
    .await
    .unwrap();
    assert_eq!(grant.status, 200);
    let token = grant.json()["token"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let init = http(
        addr,
        "POST",
        "/fido2/v2/reg/init",
        &[("Authorization", &bearer)],
        Some(&init_body("a@b.c")),
    )
    .await
    .unwrap();
    assert_eq!(init.status, 200);

    // The fault plan given at start.
    let verify = http(
        addr,
        "POST",
        "/fido2/v2/mgmt/token/verify",
        &[("Authorization", &auth)],
        Some(&json!({"jwtAccess": "x"})),
    )
    .await
    .unwrap();
    assert_app_error(&verify, 500, "internal_error", "injected");

    // Faults changed at run time through the admin endpoint.
    let plan = json!({"jwks": [{"status": 503, "retryAfter": "7", "times": 1}]});
    let unauthorized = http(addr, "PUT", "/admin/faults", &[], Some(&plan))
        .await
        .unwrap();
    assert_eq!(unauthorized.status, 401);
    let set = http(
        addr,
        "PUT",
        "/admin/faults",
        &[("Authorization", &auth)],
        Some(&plan),
    )
    .await
    .unwrap();
    assert_eq!(set.status, 204);
    let faulty = http(addr, "GET", "/fido2/v2/.well-known/jwks.json", &[], None)
        .await
        .unwrap();
    assert_app_error(&faulty, 503, "internal_error", "injected");
    assert!(faulty.head.to_ascii_lowercase().contains("retry-after: 7"));
    let healthy = http(addr, "GET", "/fido2/v2/.well-known/jwks.json", &[], None)
        .await
        .unwrap();
    assert_eq!(healthy.status, 200);

    // The log is written by a task of its own: wait for the last request's line.
    let started = std::time::Instant::now();
    let log_text = loop {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        if text.lines().count() >= 9 {
            break text;
        }
        assert!(started.elapsed() < GENEROUS, "log incomplete: {text}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    child.start_kill().unwrap();
    let _ = child.wait().await;
    assert_eq!(log_text.lines().count(), 9);
    assert!(!log_text.contains(&token));
    assert!(!log_text.contains(&token[token.len() - 16..]));
    assert!(!log_text.contains(API_KEY));
    assert!(!log_text.contains(&STANDARD.encode(format!("{API_KEY}:"))));
    assert!(log_text.contains(r#""fault":"status 503""#));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn refuses_to_listen_beyond_loopback() {
    let output = tokio::process::Command::new(env!("CARGO_BIN_EXE_loginid-emulator"))
        .args([
            "--listen",
            "0.0.0.0:0",
            "--app-id",
            APP_ID,
            "--origin",
            ORIGIN,
        ])
        .args(["--rp-id", RP_ID, "--api-key", API_KEY])
        .output()
        .await
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("only loopback addresses"));
}

#[tokio::test]
async fn api_key_from_a_file() {
    let dir = std::env::temp_dir().join(format!("loginid-emulator-key-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let port_file = dir.join("port");
    let key_file = dir.join("api-key");
    std::fs::write(&key_file, "key-from-a-file\n").unwrap();
    let emulator = || {
        let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_loginid-emulator"));
        command
            .args(["--listen", "127.0.0.1:0", "--app-id", APP_ID])
            .args(["--origin", ORIGIN, "--rp-id", RP_ID])
            .kill_on_drop(true);
        command
    };

    // Both at once, or neither, is refused.
    let both = emulator()
        .args(["--api-key", API_KEY, "--api-key-file"])
        .arg(&key_file)
        .output()
        .await
        .unwrap();
    assert!(!both.status.success());
    let neither = emulator().output().await.unwrap();
    assert!(!neither.status.success());
    let empty_file = dir.join("empty");
    std::fs::write(&empty_file, "\n").unwrap();
    let empty = emulator()
        .arg("--api-key-file")
        .arg(&empty_file)
        .output()
        .await
        .unwrap();
    assert!(!empty.status.success());
    assert!(String::from_utf8_lossy(&empty.stderr).contains("non-empty"));

    let mut child = emulator()
        .arg("--api-key-file")
        .arg(&key_file)
        .arg("--port-file")
        .arg(&port_file)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let port: u16 = loop {
        if let Ok(text) = std::fs::read_to_string(&port_file) {
            break text.trim().parse().unwrap();
        }
        assert!(started.elapsed() < GENEROUS, "no port file");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let body = json!({"grants": ["reg:write"], "username": "a@b.c"});
    for (key, status) in [
        ("key-from-a-file", 200),
        ("key-from-a-file\n", 401),
        (API_KEY, 401),
    ] {
        let auth = basic(key);
        let reply = http(
            addr,
            "POST",
            "/fido2/v2/mgmt/grant",
            &[("Authorization", &auth)],
            Some(&body),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, status, "{key:?}");
    }
    child.start_kill().unwrap();
    let _ = child.wait().await;
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn refuses_an_impossible_timeout() {
    let mut config = config();
    config.timeout = Duration::from_millis(u64::from(u32::MAX) + 1);
    let result = Emulator::start(config, "127.0.0.1:0".parse().unwrap()).await;
    assert!(matches!(
        result,
        Err(loginid_emulator::StartError::TimeoutTooLong(_))
    ));
}

#[tokio::test]
async fn registration_happy_path_and_options() {
    let emulator = start(|_| {}).await;
    let reply = init(&emulator, "alice@example.com", None).await;
    assert_eq!(reply.status, 200);
    let init_json = reply.json();
    let options = &init_json["registrationRequestOptions"];
    assert_eq!(init_json["action"], "proceed");
    assert_eq!(options["challenge"].as_str().unwrap().len(), 43);
    assert_eq!(options["user"]["id"].as_str().unwrap().len(), 22);
    assert_eq!(options["user"]["displayName"], "alice@example.com");
    assert_eq!(options["rp"], json!({"id": RP_ID, "name": RP_ID}));
    assert_eq!(options["timeout"], 300_000);
    assert_eq!(options["attestation"], "direct");
    assert_eq!(
        options["authenticatorSelection"],
        json!({"authenticatorAttachment": "cross-platform", "residentKey": "required",
               "requireResidentKey": true, "userVerification": "required"})
    );
    assert!(init_json["session"].as_str().unwrap().len() >= 16);

    let registration = make_credential(&init_json, |_| {});
    let done = complete(&emulator, &complete_body(&init_json, &registration)).await;
    assert_eq!(done.status, 200);
    let done = done.json();
    let token = done["jwtAccess"].as_str().unwrap();
    let verify = http(
        emulator.addr(),
        "POST",
        "/fido2/v2/mgmt/token/verify",
        &[("Authorization", &basic(API_KEY))],
        Some(&json!({ "jwtAccess": token })),
    )
    .await
    .unwrap();
    assert_eq!((verify.status, verify.body.len()), (204, 0));
    let claims: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').nth(1).unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["sub"], done["userId"]);
    assert_eq!(claims["credID"], done["passkeyId"]);
    assert_eq!(
        claims["iss"],
        emulator.base_url().as_str().trim_end_matches('/')
    );
    assert_eq!(claims["aud"], APP_ID);

    // The user's next init excludes the new credential.
    let grant = emulator.mint_token("alice@example.com", &["reg:write"], 60, "authzToken");
    let next = init(&emulator, "alice@example.com", Some(&grant))
        .await
        .json();
    assert_eq!(
        next["registrationRequestOptions"]["excludeCredentials"],
        json!([{"id": b64(&registration.credential_id), "type": "public-key"}])
    );
    assert_eq!(
        next["registrationRequestOptions"]["user"]["id"],
        options["user"]["id"]
    );
}

#[tokio::test]
async fn options_follow_the_configuration() {
    let emulator = start(|c| {
        c.resident_key = loginid_emulator::ResidentKey::Preferred;
        c.attestation = loginid_emulator::Attestation::None;
        c.user_verification = UserVerification::Preferred;
        c.timeout = Duration::from_secs(120);
        c.rp_name = "Example Corp".into();
    })
    .await;
    let mut body = init_body("opt@example.com");
    body["passkeyOptions"] = json!({});
    body["user"]["displayName"] = json!("Opt");
    let reply = http(
        emulator.addr(),
        "POST",
        "/fido2/v2/reg/init",
        &[],
        Some(&body),
    )
    .await
    .unwrap();
    let options = &reply.json()["registrationRequestOptions"];
    assert_eq!(options["timeout"], 120_000);
    assert_eq!(options["attestation"], "none");
    assert_eq!(options["rp"]["name"], "Example Corp");
    assert_eq!(options["user"]["displayName"], "Opt");
    // No security-key hint: no attachment.
    assert_eq!(
        options["authenticatorSelection"],
        json!({"residentKey": "preferred", "requireResidentKey": false,
               "userVerification": "preferred"})
    );
}

#[tokio::test]
async fn padded_base64_mode_emits_the_openapi_form() {
    let emulator = start(|c| c.padded_base64 = true).await;
    let init_json = init(&emulator, "p@example.com", None).await.json();
    let options = &init_json["registrationRequestOptions"];
    let challenge = options["challenge"].as_str().unwrap();
    assert_eq!(challenge.len(), 44);
    assert!(challenge.ends_with('='));
    assert!(options["user"]["id"].as_str().unwrap().ends_with("=="));
    assert_eq!(STANDARD.decode(challenge).unwrap().len(), 32);
}

#[tokio::test]
async fn webauthn_checks_of_reg_complete() {
    let emulator = start(|_| {}).await;
    type Adjust = fn(&mut soft_authenticator::Request);
    let cases: [(&str, Adjust, &str); 7] = [
        (
            "type",
            |r| r.client_data_type = "webauthn.get".into(),
            "InvalidClientDataType",
        ),
        (
            "challenge",
            |r| r.challenge = vec![0; 32],
            "MismatchedChallenge",
        ),
        (
            "origin",
            |r| r.origin = "https://example.com.evil".into(),
            "InvalidRPOrigin",
        ),
        ("rp id", |r| r.rp_id = "evil.com".into(), "InvalidRPIDHash"),
        ("user present", |r| r.flags = FLAG_UV, "UserNotPresent"),
        ("user verified", |r| r.flags = FLAG_UP, "UserNotVerified"),
        ("algorithm", |r| r.alg = -257, "COSE"),
    ];
    for (i, (name, adjust, reason)) in cases.into_iter().enumerate() {
        let init_json = init(&emulator, &format!("u{i}@example.com"), None)
            .await
            .json();
        let registration = make_credential(&init_json, adjust);
        let reply = complete(&emulator, &complete_body(&init_json, &registration)).await;
        assert_eq!(reply.status, 400, "{name}");
        let msg = reply.json()["msg"].as_str().unwrap().to_owned();
        assert!(msg.contains(reason), "{name}: {msg}");
    }
}

#[tokio::test]
async fn attestation_formats() {
    let emulator = start(|_| {}).await;
    for (i, format) in [
        AttestationFormat::None,
        AttestationFormat::PackedSelf,
        AttestationFormat::FidoU2f,
    ]
    .into_iter()
    .enumerate()
    {
        let init_json = init(&emulator, &format!("f{i}@example.com"), None)
            .await
            .json();
        let registration = make_credential(&init_json, |r| r.format = format);
        let reply = complete(&emulator, &complete_body(&init_json, &registration)).await;
        assert_eq!(
            reply.status,
            200,
            "{format:?}: {}",
            String::from_utf8_lossy(&reply.body)
        );
    }
    // clientDataJSON changed after signing: the packed signature no longer verifies.
    let init_json = init(&emulator, "forged@example.com", None).await.json();
    let genuine = make_credential(&init_json, |_| {});
    let mut body = complete_body(&init_json, &genuine);
    let tampered = String::from_utf8(genuine.client_data_json.clone())
        .unwrap()
        .replace("\"crossOrigin\":false", "\"crossOrigin\":false,\"x\":1");
    body["creationResult"]["clientDataJSON"] = json!(b64(tampered.as_bytes()));
    let reply = complete(&emulator, &body).await;
    assert_app_error(&reply, 400, "bad_request", "verification failed");
}

#[tokio::test]
async fn uv_discouraged_accepts_a_touch_only() {
    let emulator = start(|c| c.user_verification = UserVerification::Discouraged).await;
    let init_json = init(&emulator, "touch@example.com", None).await.json();
    assert_eq!(
        init_json["registrationRequestOptions"]["authenticatorSelection"]["userVerification"],
        "discouraged"
    );
    let registration = make_credential(&init_json, |r| r.flags = FLAG_UP);
    let reply = complete(&emulator, &complete_body(&init_json, &registration)).await;
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn sessions_credentials_and_encodings() {
    let emulator = start(|_| {}).await;
    // The same credential for a second user is refused.
    let seed = Some([0x42; 32]);
    let first = init(&emulator, "one@example.com", None).await.json();
    let reg = make_credential(&first, |r| r.credential_seed = seed);
    assert_eq!(
        complete(&emulator, &complete_body(&first, &reg))
            .await
            .status,
        200
    );
    let second = init(&emulator, "two@example.com", None).await.json();
    let reg2 = make_credential(&second, |r| r.credential_seed = seed);
    assert_eq!(reg.credential_id, reg2.credential_id);
    let reply = complete(&emulator, &complete_body(&second, &reg2)).await;
    assert_app_error(&reply, 400, "bad_request", "already registered");

    // Single use, even after a failure.
    let reply = complete(&emulator, &complete_body(&second, &reg2)).await;
    assert_app_error(&reply, 403, "forbidden", "already used");

    // credentialId must be the attested one; authenticatorData must match authData.
    let third = init(&emulator, "three@example.com", None).await.json();
    let reg3 = make_credential(&third, |_| {});
    let mut body = complete_body(&third, &reg3);
    body["creationResult"]["credentialId"] = json!(b64(&[1, 2, 3]));
    assert_app_error(
        &complete(&emulator, &body).await,
        400,
        "bad_request",
        "credentialId",
    );
    let fourth = init(&emulator, "four@example.com", None).await.json();
    let reg4 = make_credential(&fourth, |_| {});
    let mut body = complete_body(&fourth, &reg4);
    body["creationResult"]["authenticatorData"] = json!(b64(&[0; 37]));
    assert_app_error(
        &complete(&emulator, &body).await,
        400,
        "bad_request",
        "authenticatorData",
    );

    // Padded standard base64 in creationResult is refused (the client must send base64url).
    let fifth = init(&emulator, "five@example.com", None).await.json();
    let reg5 = make_credential(&fifth, |_| {});
    let mut body = complete_body(&fifth, &reg5);
    body["creationResult"]["attestationObject"] = json!(STANDARD.encode(&reg5.attestation_object));
    assert_app_error(
        &complete(&emulator, &body).await,
        400,
        "bad_request",
        "base64url",
    );

    // Malformed JSON is a bad request without echoing the body.
    let reply = http(
        emulator.addr(),
        "POST",
        "/fido2/v2/reg/complete",
        &[],
        Some(&json!({"session": "secret-session-value"})),
    )
    .await
    .unwrap();
    assert_app_error(&reply, 400, "bad_request", "malformed request body");
    assert!(!String::from_utf8_lossy(&reply.body).contains("secret-session-value"));
}

#[tokio::test]
async fn expired_session() {
    let emulator = start(|c| c.timeout = Duration::ZERO).await;
    let init_json = init(&emulator, "late@example.com", None).await.json();
    let reg = make_credential(&init_json, |_| {});
    let reply = complete(&emulator, &complete_body(&init_json, &reg)).await;
    assert_app_error(&reply, 403, "forbidden", "expired");
}

#[tokio::test]
async fn authorization_rules() {
    let emulator = start(|c| c.protected = true).await;
    let user = "zoe@example.com";
    let raw = emulator.mint_token(user, &["reg:write"], 60, "authzToken");
    let cases: [(Option<String>, u16, &str); 7] = [
        (None, 401, "protected"),
        (Some(raw.clone()), 200, ""),
        (Some(format!("Bearer {raw}")), 200, ""),
        // June-2024 servers required passkey:write instead.
        (
            Some(emulator.mint_token(user, &["passkey:write"], 60, "authzToken")),
            200,
            "",
        ),
        (
            Some(emulator.mint_token(user, &["passkey:read"], 60, "authzToken")),
            403,
            "scope",
        ),
        (
            Some(emulator.mint_token("other@example.com", &["reg:write"], 60, "authzToken")),
            403,
            "another user",
        ),
        (
            Some(emulator.mint_token(user, &["reg:write"], -1, "authzToken")),
            401,
            "expired",
        ),
    ];
    for (authorization, status, msg) in cases {
        let reply = init(&emulator, user, authorization.as_deref()).await;
        if status == 200 {
            assert_eq!(reply.status, 200);
        } else {
            let code = if status == 401 {
                "unauthorized"
            } else {
                "forbidden"
            };
            assert_app_error(&reply, status, code, msg);
        }
    }
    // A token of another emulator (another key) is invalid.
    let other = start(|_| {}).await;
    let foreign = other.mint_token(user, &["reg:write"], 60, "authzToken");
    assert_app_error(
        &init(&emulator, user, Some(&foreign)).await,
        401,
        "unauthorized",
        "invalid",
    );

    // Basic API key: "key:" and "key", either alphabet; a wrong key is refused.
    for header in [
        basic(API_KEY),
        format!("Basic {}", STANDARD.encode(API_KEY)),
        format!("basic {}", URL_SAFE_NO_PAD.encode(format!("{API_KEY}:"))),
    ] {
        let reply = http(
            emulator.addr(),
            "POST",
            "/fido2/v2/mgmt/grant",
            &[("Authorization", &header)],
            Some(&json!({"grants": ["reg:write"], "username": user})),
        )
        .await
        .unwrap();
        assert_eq!(reply.status, 200, "{header}");
    }
    let reply = http(
        emulator.addr(),
        "POST",
        "/fido2/v2/mgmt/grant",
        &[("Authorization", &basic("wrong"))],
        Some(&json!({"grants": ["reg:write"]})),
    )
    .await
    .unwrap();
    assert_app_error(&reply, 401, "unauthorized", "invalid API key");
    let reply = http(
        emulator.addr(),
        "POST",
        "/fido2/v2/mgmt/grant",
        &[("Authorization", &basic(API_KEY))],
        Some(&json!({"grants": ["root"]})),
    )
    .await
    .unwrap();
    assert_app_error(&reply, 400, "bad_request", "unknown scope");

    // token/verify takes LoginID tokens only.
    let reply = http(
        emulator.addr(),
        "POST",
        "/fido2/v2/mgmt/token/verify",
        &[("Authorization", &basic(API_KEY))],
        Some(&json!({"jwtAccess": raw})),
    )
    .await
    .unwrap();
    assert_app_error(&reply, 401, "unauthorized", "not a LoginID token");
}

#[tokio::test]
async fn connection_faults() {
    let emulator = start(|_| {}).await;
    let addr = emulator.addr();
    let jwks = "/fido2/v2/.well-known/jwks.json";
    let once = |body| Fault {
        body: Some(body),
        times: Some(1),
        ..Fault::default()
    };

    emulator.push_fault(Endpoint::Jwks, once(BodyFault::DropConnection));
    assert!(http(addr, "GET", jwks, &[], None).await.is_none());

    emulator.push_fault(Endpoint::Jwks, once(BodyFault::Truncated));
    let reply = http(addr, "GET", jwks, &[], None).await.unwrap();
    let head = reply.head.to_ascii_lowercase();
    let announced: usize = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length: "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(reply.body.len(), announced / 2);

    emulator.push_fault(Endpoint::Jwks, once(BodyFault::WrongContentType));
    let reply = http(addr, "GET", jwks, &[], None).await.unwrap();
    assert!(
        reply
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/html")
    );
    assert!(reply.json()["keys"].is_array());

    emulator.push_fault(
        Endpoint::Jwks,
        once(BodyFault::Oversized {
            bytes: 200_000,
            declare_length: true,
        }),
    );
    let reply = http(addr, "GET", jwks, &[], None).await.unwrap();
    assert_eq!(reply.body.len(), 200_000);
    assert!(reply.body.starts_with(b"{\"token\":\"AAAA"));
    assert_eq!(emulator.oversize_bytes_sent(), 200_000);

    assert_eq!(
        http(addr, "GET", jwks, &[], None).await.unwrap().status,
        200
    );
}

#[tokio::test]
async fn registration_sessions_are_capped() {
    let emulator = start(|c| c.max_sessions = 2).await;
    let first = init(&emulator, "s1@example.com", None).await;
    assert_eq!(first.status, 200);
    assert_eq!(init(&emulator, "s2@example.com", None).await.status, 200);
    let refused = init(&emulator, "s3@example.com", None).await;
    assert_app_error(&refused, 429, "too_many_requests", "too many open");
    // Using a session frees its place.
    let first = first.json();
    let reg = make_credential(&first, |_| {});
    assert_eq!(
        complete(&emulator, &complete_body(&first, &reg))
            .await
            .status,
        200
    );
    assert_eq!(init(&emulator, "s3@example.com", None).await.status, 200);
}

#[tokio::test]
async fn oversized_request_bodies_are_refused() {
    let emulator = start(|_| {}).await;
    let mut body = init_body("big@example.com");
    body["padding"] = json!("x".repeat(300 << 10));
    let reply = http(
        emulator.addr(),
        "POST",
        "/fido2/v2/reg/init",
        &[],
        Some(&body),
    )
    .await
    .unwrap();
    assert_app_error(&reply, 400, "bad_request", "request body too large");
    // Just under the limit is read and served.
    body["padding"] = json!("x".repeat(200 << 10));
    let reply = http(
        emulator.addr(),
        "POST",
        "/fido2/v2/reg/init",
        &[],
        Some(&body),
    )
    .await
    .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let emulator = start(|c| c.header_read_timeout = Duration::from_millis(300)).await;
    let mut stream = TcpStream::connect(emulator.addr()).await.unwrap();
    stream
        .write_all(b"GET /fido2/v2/.well-known/jwks.json HTTP/1.1\r\nHost: x\r\n")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let mut rest = Vec::new();
    // The server closes the connection: the read ends (EOF or reset) instead of waiting.
    let _ = tokio::time::timeout(GENEROUS, stream.read_to_end(&mut rest))
        .await
        .expect("the connection was not closed");
    assert!(started.elapsed() >= Duration::from_millis(250));
    assert!(!String::from_utf8_lossy(&rest).contains("200 OK"));
}

#[tokio::test]
async fn connections_are_capped() {
    let emulator = start(|c| c.max_connections = 2).await;
    let addr = emulator.addr();
    // Two idle connections take both places.
    let idle = [
        TcpStream::connect(addr).await.unwrap(),
        TcpStream::connect(addr).await.unwrap(),
    ];
    let waiting = tokio::spawn(http(
        addr,
        "GET",
        "/fido2/v2/.well-known/jwks.json",
        &[],
        None,
    ));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!waiting.is_finished(), "served past the connection cap");
    drop(idle);
    let reply = tokio::time::timeout(GENEROUS, waiting)
        .await
        .expect("never served")
        .unwrap()
        .unwrap();
    assert_eq!(reply.status, 200);
}

#[tokio::test]
async fn zero_limits_are_refused() {
    for configure in [
        (|c: &mut EmulatorConfig| c.max_sessions = 0) as fn(&mut EmulatorConfig),
        |c| c.max_connections = 0,
        |c| c.header_read_timeout = Duration::ZERO,
    ] {
        let mut config = config();
        configure(&mut config);
        let result = Emulator::start(config, "127.0.0.1:0".parse().unwrap()).await;
        assert!(
            matches!(result, Err(loginid_emulator::StartError::ZeroLimit(_))),
            "{result:?}"
        );
    }
}
