use ctap::cbor::to_canonical_vec;
use ctap::cose::{CoseKey, alg};
use ctap::ctaphid::{Cid, Command, fragment};
use ctap::webauthn::auth_data::Flags;
use serde_json::json;

use super::*;

const CID: Cid = Cid::new(0x0022_0002);
const AAGUID: [u8; 16] = [
    0x19, 0x56, 0xe5, 0xbd, 0xa3, 0x74, 0x45, 0xf1, 0xa8, 0x14, 0x35, 0x64, 0x03, 0xfd, 0xbc, 0x18,
];

fn int(i: i64) -> Value {
    Value::from(i)
}

fn text(s: &str) -> Value {
    Value::from(s)
}

/// A getInfo body encoded with the ctap crate's canonical encoder.
fn get_info_body() -> Vec<u8> {
    to_canonical_vec(&Value::Map(vec![
        (
            int(0x01),
            Value::Array(vec![text("FIDO_2_0"), text("FIDO_2_1")]),
        ),
        (int(0x02), Value::Array(vec![text("hmac-secret")])),
        (int(0x03), Value::Bytes(AAGUID.to_vec())),
        (
            int(0x04),
            Value::Map(vec![
                (text("rk"), Value::Bool(true)),
                (text("clientPin"), Value::Bool(false)),
            ]),
        ),
        (int(0x05), int(1200)),
        (int(0x06), Value::Array(vec![int(2), int(1)])),
        (
            int(0x0A),
            Value::Array(vec![Value::Map(vec![
                (text("alg"), int(-7)),
                (text("type"), text("public-key")),
            ])]),
        ),
        (int(0x1C), Value::Bytes(b"https://example.com".to_vec())),
    ]))
    .unwrap()
}

fn with_status(status: u8, body: &[u8]) -> Vec<u8> {
    [&[status][..], body].concat()
}

fn credential_key() -> CoseKey {
    let secret = p256::SecretKey::from_slice(&[3; 32]).unwrap();
    CoseKey::from_p256(&secret.public_key(), alg::ES256)
}

fn auth_data() -> Vec<u8> {
    AuthenticatorData::with_attested_credential(
        [0x11; 32],
        Flags::UP | Flags::UV,
        7,
        AAGUID,
        &[0x33; 16],
        &credential_key(),
    )
    .unwrap()
    .into_bytes()
}

fn make_credential_body(auth_data: Vec<u8>) -> Vec<u8> {
    to_canonical_vec(&Value::Map(vec![
        (int(0x01), text("packed")),
        (int(0x02), Value::Bytes(auth_data)),
        (
            int(0x03),
            Value::Map(vec![
                (text("alg"), int(-7)),
                (text("sig"), Value::Bytes(vec![0x30, 0x44])),
                (
                    text("x5c"),
                    Value::Array(vec![Value::Bytes(vec![0x30, 0x82])]),
                ),
            ]),
        ),
        (int(0x05), Value::Bytes(vec![0x77; 32])),
    ]))
    .unwrap()
}

fn client_pin_body() -> Vec<u8> {
    to_canonical_vec(&Value::Map(vec![
        (int(0x01), credential_key().to_value()),
        (int(0x02), Value::Bytes(vec![0xEE; 48])),
        (int(0x03), int(8)),
    ]))
    .unwrap()
}

fn reports(cmd: Command, payload: &[u8]) -> Vec<u8> {
    fragment(CID, cmd, payload, 7609).unwrap().concat()
}

// ---- single responses ----

#[test]
fn get_info_uses_the_spec_member_names() {
    let decoded =
        decode_response(ResponseKind::GetInfo, &with_status(0x00, &get_info_body())).unwrap();
    assert_eq!(
        decoded.to_json(),
        json!({
            "status": {"code": 0, "name": "CTAP2_OK"},
            "versions": ["FIDO_2_0", "FIDO_2_1"],
            "extensions": ["hmac-secret"],
            "aaguid": "1956e5bd-a374-45f1-a814-356403fdbc18",
            "options": {"clientPin": false, "rk": true},
            "maxMsgSize": 1200,
            "pinUvAuthProtocols": [2, 1],
            "algorithms": [{"type": "public-key", "alg": -7}],
            "pinComplexityPolicyURL": "https://example.com",
        })
    );
    // The JSON text keeps the specification's order.
    let pretty = decoded.to_json_pretty();
    let order: Vec<usize> = ["\"status\"", "\"versions\"", "\"aaguid\"", "\"algorithms\""]
        .iter()
        .map(|k| pretty.find(k).unwrap())
        .collect();
    assert!(order.windows(2).all(|w| w[0] < w[1]), "{pretty}");
}

#[test]
fn get_info_text_dump() {
    let decoded =
        decode_response(ResponseKind::GetInfo, &with_status(0x00, &get_info_body())).unwrap();
    assert_eq!(
        decoded.to_text(),
        "status: CTAP2_OK (0x00)\n\
         versions: [FIDO_2_0, FIDO_2_1]\n\
         extensions: [hmac-secret]\n\
         aaguid: 1956e5bd-a374-45f1-a814-356403fdbc18\n\
         options:\n  clientPin: false\n  rk: true\n\
         maxMsgSize: 1200\n\
         pinUvAuthProtocols: [2, 1]\n\
         algorithms:\n  - type: public-key\n    alg: -7\n\
         pinComplexityPolicyURL: https://example.com\n"
    );
}

#[test]
fn bare_cbor_has_no_status() {
    let decoded = decode_response(ResponseKind::GetInfo, &get_info_body()).unwrap();
    let json = decoded.to_json();
    assert!(json.get("status").is_none());
    assert_eq!(json["versions"], json!(["FIDO_2_0", "FIDO_2_1"]));
}

#[test]
fn an_error_status_is_decoded_alone() {
    let decoded = decode_response(ResponseKind::ClientPin, &[0x31]).unwrap();
    assert_eq!(
        decoded.to_json(),
        json!({"status": {"code": 0x31, "name": "CTAP2_ERR_PIN_INVALID"}})
    );
    assert_eq!(decoded.to_text(), "status: CTAP2_ERR_PIN_INVALID (0x31)\n");
}

#[test]
fn malformed_responses_are_typed_errors() {
    assert!(matches!(
        decode_response(ResponseKind::GetInfo, &[]),
        Err(DecodeError::Empty)
    ));
    assert!(matches!(
        decode_response(ResponseKind::GetInfo, &[0x00]),
        Err(DecodeError::Cbor {
            source: cbor::DecodeError::Empty,
            ..
        })
    ));
    assert!(matches!(
        decode_response(ResponseKind::GetInfo, &[0x00, 0xFF]),
        Err(DecodeError::Cbor {
            source: cbor::DecodeError::Malformed,
            ..
        })
    ));
    assert!(matches!(
        decode_response(ResponseKind::GetInfo, &[0x00, 0xA0]),
        Err(DecodeError::Cbor {
            what: "authenticatorGetInfo response",
            source: cbor::DecodeError::Missing("versions")
        })
    ));
    // A makeCredential body whose authData is cut short.
    let mut short = auth_data();
    short.truncate(40);
    assert!(matches!(
        decode_response(ResponseKind::MakeCredential, &make_credential_body(short)),
        Err(DecodeError::AuthData(AuthDataError::Truncated("aaguid")))
    ));
    // A getInfo body presented as makeCredential.
    assert!(matches!(
        decode_response(ResponseKind::MakeCredential, &get_info_body()),
        Err(DecodeError::Cbor {
            source: cbor::DecodeError::UnexpectedType { field: "fmt", .. },
            ..
        })
    ));
}

#[test]
fn make_credential_splits_auth_data_and_keeps_att_stmt() {
    let decoded = decode_response(
        ResponseKind::MakeCredential,
        &with_status(0x00, &make_credential_body(auth_data())),
    )
    .unwrap();
    let json = decoded.to_json();
    assert_eq!(json["fmt"], "packed");
    let ad = &json["authData"];
    assert_eq!(ad["rpIdHash"], "11".repeat(32));
    assert_eq!(
        ad["flags"],
        json!({"up": true, "uv": true, "be": false, "bs": false, "at": true, "ed": false})
    );
    assert_eq!(ad["signCount"], 7);
    let acd = &ad["attestedCredentialData"];
    assert_eq!(acd["aaguid"], "1956e5bd-a374-45f1-a814-356403fdbc18");
    assert_eq!(acd["credentialId"], "33".repeat(16));
    let CoseKey::Ec2 { x, y, .. } = credential_key() else {
        unreachable!()
    };
    assert_eq!(
        acd["credentialPublicKey"],
        json!({"kty": 2, "alg": -7, "crv": 1, "x": hex::encode(x), "y": hex::encode(y)})
    );
    assert_eq!(
        json["attStmt"],
        json!({"alg": -7, "sig": "3044", "x5c": ["3082"]})
    );
    // largeBlobKey is a secret: length only.
    assert_eq!(
        json["largeBlobKey"],
        json!({"redacted": true, "length": 32})
    );
    assert!(!decoded.to_json_pretty().contains(&"77".repeat(32)));
}

#[test]
fn client_pin_shows_the_token_by_length_only() {
    let decoded = decode_response(
        ResponseKind::ClientPin,
        &with_status(0x00, &client_pin_body()),
    )
    .unwrap();
    let json = decoded.to_json();
    assert_eq!(json["keyAgreement"]["kty"], 2);
    assert_eq!(json["keyAgreement"]["crv"], 1);
    assert_eq!(
        json["pinUvAuthToken"],
        json!({"redacted": true, "length": 48})
    );
    assert_eq!(json["pinRetries"], 8);
    let token = "ee".repeat(48);
    assert!(!decoded.to_json_pretty().contains(&token));
    assert!(!decoded.to_text().contains(&token));
    assert!(
        decoded
            .to_text()
            .contains("pinUvAuthToken:\n  redacted: true\n  length: 48\n")
    );
}

#[test]
fn responses_are_recognised_by_shape() {
    assert_eq!(
        detect_response(&get_info_body()),
        Some(ResponseKind::GetInfo)
    );
    assert_eq!(
        detect_response(&make_credential_body(auth_data())),
        Some(ResponseKind::MakeCredential)
    );
    assert_eq!(
        detect_response(&client_pin_body()),
        Some(ResponseKind::ClientPin)
    );
    assert_eq!(
        detect_response(&[0xA1, 0x03, 0x08]),
        Some(ResponseKind::ClientPin)
    );
    // A credentialManagement getCredsMetadata response {1: 0, 2: 25}: not clientPIN.
    assert_eq!(detect_response(&[0xA2, 0x01, 0x00, 0x02, 0x18, 0x19]), None);
    assert_eq!(detect_response(&[0xA0]), None);
    assert_eq!(detect_response(&[0xFF]), None);
}

// ---- reports ----

#[test]
fn reports_are_reassembled_around_keepalives_and_foreign_frames() {
    let mut run = reports(Command::Keepalive, &[0x02]);
    let response = reports(Command::Cbor, &with_status(0x00, &get_info_body()));
    assert_eq!(response.len(), 3 * 64);
    let foreign = fragment(Cid::new(0x0092_000e), Command::Keepalive, &[0x01], 64)
        .unwrap()
        .concat();
    run.extend_from_slice(&response[..128]);
    run.extend_from_slice(&foreign);
    run.extend_from_slice(&response[128..]);
    let decoded = decode_reports(&run).unwrap();
    let json = decoded.to_json();
    assert_eq!(json["status"]["name"], "CTAP2_OK");
    assert_eq!(json["versions"], json!(["FIDO_2_0", "FIDO_2_1"]));
    assert_eq!(json["aaguid"], "1956e5bd-a374-45f1-a814-356403fdbc18");
    let hid = &json["ctaphid"];
    assert_eq!(hid["cid"], "00220002");
    assert_eq!(hid["reports"], 5);
    assert_eq!(hid["foreignReports"], 1);
    let messages = hid["messages"].as_array().unwrap();
    assert_eq!(messages.len(), 2);
    assert_eq!(
        messages[0],
        json!({
            "cmd": {"code": 0x3B, "name": "CTAPHID_KEEPALIVE"},
            "bcnt": 1,
            "keepalive": {"code": 2, "name": "STATUS_UPNEEDED"},
        })
    );
    assert_eq!(
        messages[1],
        json!({"cmd": {"code": 0x10, "name": "CTAPHID_CBOR"}, "bcnt": 125})
    );
}

#[test]
fn a_trimmed_last_report_is_accepted() {
    let payload = with_status(0x00, &[0xA1, 0x03, 0x08]);
    let run = reports(Command::Cbor, &payload);
    let trimmed = &run[..7 + payload.len()];
    let json = decode_reports(trimmed).unwrap().to_json();
    assert_eq!(json["pinRetries"], 8);
}

#[test]
fn init_error_and_u2f_messages() {
    let mut init = vec![1, 2, 3, 4, 5, 6, 7, 8];
    init.extend_from_slice(&[0x00, 0x22, 0x00, 0x02, 0x02, 0x05, 0x02, 0x04, 0x05]);
    let run = fragment(Cid::BROADCAST, Command::Init, &init, 64)
        .unwrap()
        .concat();
    assert_eq!(
        decode_reports(&run).unwrap().to_json()["init"],
        json!({
            "nonce": "0102030405060708",
            "cid": "00220002",
            "protocolVersion": 2,
            "deviceVersion": "5.2.4",
            "capabilities": {"wink": true, "cbor": true, "nmsg": false},
        })
    );
    let json = decode_reports(&reports(Command::Error, &[0x06]))
        .unwrap()
        .to_json();
    assert_eq!(
        json["hidError"],
        json!({"code": 6, "name": "ERR_CHANNEL_BUSY"})
    );
    let json = decode_reports(&reports(Command::Msg, &[0x69, 0x85]))
        .unwrap()
        .to_json();
    assert_eq!(
        json["u2f"],
        json!({"sw": {"code": 0x6985, "name": "SW_CONDITIONS_NOT_SATISFIED"}, "data": ""})
    );
    assert_eq!(
        decode_reports(&reports(Command::Msg, &[0x69, 0x85]))
            .unwrap()
            .to_text(),
        "u2f:\n  sw: SW_CONDITIONS_NOT_SATISFIED (0x6985)\n  data: (empty)\n\
         ctaphid:\n  cid: 00220002\n  reports: 1\n  foreignReports: 0\n  messages:\n    \
         - cmd: CTAPHID_MSG (0x03)\n      bcnt: 2\n"
    );
}

#[test]
fn broken_runs_are_typed_errors() {
    assert!(matches!(decode_reports(&[]), Err(DecodeError::Empty)));
    let run = reports(Command::Cbor, &with_status(0x00, &get_info_body()));
    // The last report is missing.
    assert!(matches!(
        decode_reports(&run[..128]),
        Err(DecodeError::Incomplete { cid: CID })
    ));
    // Reports 1 and 2 swapped.
    let mut swapped = run.clone();
    swapped[64..128].copy_from_slice(&run[128..192]);
    swapped[128..192].copy_from_slice(&run[64..128]);
    assert!(matches!(
        decode_reports(&swapped),
        Err(DecodeError::Framing {
            index: 1,
            source: FramingError::UnexpectedSeq {
                expected: 0,
                got: 1
            }
        })
    ));
    // A run that starts with a continuation packet.
    assert!(matches!(
        decode_reports(&run[64..]),
        Err(DecodeError::Framing {
            index: 0,
            source: FramingError::ContinuationWithoutInit { seq: 0 }
        })
    ));
    // A report cut inside its payload.
    assert!(matches!(
        decode_reports(&run[..30]),
        Err(DecodeError::Framing {
            index: 0,
            source: FramingError::ReportTooShort { len: 30, .. }
        })
    ));
    // A shape-recognised response that does not decode is an error, not a guess.
    let bad_info = with_status(0x00, &[0xA1, 0x01, 0x80]);
    assert!(matches!(
        decode_reports(&reports(Command::Cbor, &bad_info)),
        Err(DecodeError::Cbor {
            source: cbor::DecodeError::Missing("aaguid"),
            ..
        })
    ));
}

#[test]
fn unknown_cbor_is_shown_generically() {
    let payload = with_status(0x00, &[0xA2, 0x01, 0x00, 0x02, 0x18, 0x19]);
    let json = decode_reports(&reports(Command::Cbor, &payload))
        .unwrap()
        .to_json();
    assert_eq!(json["cbor"], json!({"1": 0, "2": 25}));
}

#[test]
fn hex_input() {
    assert_eq!(
        parse_hex(" 00 a1\n03 08 ").unwrap(),
        [0x00, 0xA1, 0x03, 0x08]
    );
    assert_eq!(parse_hex("00A1").unwrap(), [0x00, 0xA1]);
    assert!(matches!(parse_hex("   "), Err(DecodeError::Empty)));
    assert!(matches!(
        parse_hex("0g"),
        Err(DecodeError::Hex(hex::FromHexError::InvalidHexCharacter {
            c: 'g',
            index: 1
        }))
    ));
    assert!(matches!(
        parse_hex("abc"),
        Err(DecodeError::Hex(hex::FromHexError::OddLength))
    ));
}

// ---- recordings ----

fn recording(transport: &str, events: &[String]) -> RecordingFile {
    let mut text = format!(
        "{{\"format\":\"passkeyd-recording\",\"version\":1,\"transport\":\"{transport}\",\
         \"description\":{{\"id\":\"usb_1_2\",\"product\":\"Test Key\",\"vendorId\":4176,\
         \"productId\":1031}}}}\n"
    );
    for event in events {
        text += event;
        text.push('\n');
    }
    RecordingFile::read(text.as_bytes()).unwrap()
}

fn report_event(t_us: u64, dir: &str, report: &[u8]) -> String {
    format!(
        r#"{{"t_us":{t_us},"dir":"{dir}","kind":"report","hex":"{}"}}"#,
        hex::encode(report)
    )
}

#[test]
fn a_hid_recording_reads_one_line_per_event() {
    let nonce = [1, 2, 3, 4, 5, 6, 7, 8];
    let mut init = nonce.to_vec();
    init.extend_from_slice(&[0x00, 0x22, 0x00, 0x02, 0x02, 0x05, 0x02, 0x04, 0x05]);
    let init_in = fragment(Cid::BROADCAST, Command::Init, &init, 64).unwrap();
    let get_info = fragment(CID, Command::Cbor, &[0x04], 64).unwrap();
    let keepalive = fragment(CID, Command::Keepalive, &[0x01], 64).unwrap();
    let response = fragment(CID, Command::Cbor, &with_status(0, &get_info_body()), 7609).unwrap();
    let pin_request =
        to_canonical_vec(&Value::Map(vec![(int(1), int(2)), (int(2), int(2))])).unwrap();
    let pin = fragment(
        CID,
        Command::Cbor,
        &[&[0x06][..], &pin_request].concat(),
        1024,
    )
    .unwrap();
    let pin_response = fragment(
        CID,
        Command::Cbor,
        &with_status(0, &client_pin_body()),
        7609,
    )
    .unwrap();

    let mut events = vec![
        r#"{"t_us":0,"kind":"nonce","hex":"0102030405060708"}"#.to_owned(),
        report_event(10, "out", &ctaphid::init_request(&nonce)),
        report_event(1_500, "in", &init_in[0]),
        report_event(1_600, "out", &get_info[0]),
        report_event(1_700, "in", &keepalive[0]),
    ];
    events.extend(
        response
            .iter()
            .enumerate()
            .map(|(i, r)| report_event(1_800 + i as u64, "in", r)),
    );
    events.push(
        r#"{"t_us":2000000,"kind":"ecdh-key","hex":"c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721"}"#
            .to_owned(),
    );
    events.push(report_event(2_000_001, "out", &pin[0]));
    events.push(report_event(2_100_000, "in", &pin_response[0]));
    events.push(report_event(2_100_001, "in", &pin_response[1]));
    events.push(report_event(2_100_002, "in", &pin_response[2]));
    events.push(r#"{"t_us":3000000,"dir":"in","kind":"disconnect"}"#.to_owned());
    let file = recording("usb", &events);

    let text = recording_text(&file);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            "passkeyd-recording v1, transport usb, device Test Key usb_1_2 (1050:0407)",
            "   0.000000     nonce         8 bytes 0102030405060708",
            "   0.000010 out report        ffffffff CTAPHID_INIT bcnt=8 → INIT request nonce=0102030405060708",
            "   0.001500 in  report        ffffffff CTAPHID_INIT bcnt=17 → INIT response cid=00220002 device version 5.2.4",
            "   0.001600 out report        00220002 CTAPHID_CBOR bcnt=1 → authenticatorGetInfo",
            "   0.001700 in  report        00220002 CTAPHID_KEEPALIVE bcnt=1 → KEEPALIVE STATUS_PROCESSING",
            "   0.001800 in  report        00220002 CTAPHID_CBOR bcnt=125",
            "   0.001801 in  report        00220002 cont seq=0",
            "   0.001802 in  report        00220002 cont seq=1 → CTAP2_OK (0x00) versions=[FIDO_2_0,FIDO_2_1] aaguid=1956e5bd-a374-45f1-a814-356403fdbc18",
            "   2.000000     ecdh-key      32 bytes (secret, not shown)",
            "   2.000001 out report        00220002 CTAPHID_CBOR bcnt=6 → authenticatorClientPIN getKeyAgreement (protocol 2)",
            "   2.100000 in  report        00220002 CTAPHID_CBOR bcnt=133",
            "   2.100001 in  report        00220002 cont seq=0",
            "   2.100002 in  report        00220002 cont seq=1 → CTAP2_OK (0x00) keyAgreement pinUvAuthToken (48 bytes, redacted) pinRetries=8",
            "   3.000000 in  disconnect    device disconnected",
        ]
    );
    assert!(!text.contains("c9afa9d8"));

    let json = decode_recording(&file).to_json();
    assert_eq!(json["transport"], "usb");
    assert_eq!(json["description"]["product"], "Test Key");
    assert_eq!(
        json["events"][1],
        json!({
            "line": 3,
            "t_us": 10,
            "dir": "out",
            "kind": "report",
            "len": 64,
            "summary": "ffffffff CTAPHID_INIT bcnt=8 → INIT request nonce=0102030405060708",
        })
    );
    assert_eq!(json["events"][0].get("dir"), None);
    assert!(
        !decode_recording(&file)
            .to_json_pretty()
            .contains("c9afa9d8")
    );
}

#[test]
fn an_nfc_recording_follows_chained_responses() {
    let response = with_status(0, &get_info_body());
    let (first, rest) = response.split_at(100);
    let apdu =
        |t: u64, hex: &str| format!(r#"{{"t_us":{t},"dir":"out","kind":"apdu","hex":"{hex}"}}"#);
    let answer = |t: u64, bytes: &[u8]| {
        format!(
            r#"{{"t_us":{t},"dir":"in","kind":"apdu-response","hex":"{}"}}"#,
            hex::encode(bytes)
        )
    };
    let events = [
        apdu(0, "00a4040008a0000006472f000100"),
        answer(1, b"FIDO_2_0\x90\x00"),
        apdu(2, "80108000010400"),
        answer(3, &[first, &[0x61, 0x22]].concat()),
        apdu(4, "00c0000000"),
        answer(5, &[rest, &[0x90, 0x00]].concat()),
        apdu(6, "80110000"),
        answer(7, &[0x6D, 0x00]),
        apdu(8, "00a4040005aa"),
    ];
    let file = recording("nfc", &events);
    let summaries: Vec<String> = summarize_recording(&file)
        .into_iter()
        .map(|e| e.summary)
        .collect();
    assert_eq!(
        summaries,
        [
            "SELECT A0000006472F0001, 8 data bytes, Le 256",
            "SW 9000 SW_NO_ERROR, 8 data bytes",
            "NFCCTAP_MSG authenticatorGetInfo, 1 data bytes, Le 256",
            "SW 6122 SW_BYTES_REMAINING, 100 data bytes",
            "GET RESPONSE, 0 data bytes, Le 256",
            "SW 9000 SW_NO_ERROR, 25 data bytes → CTAP2_OK (0x00) versions=[FIDO_2_0,FIDO_2_1] aaguid=1956e5bd-a374-45f1-a814-356403fdbc18",
            "NFCCTAP_GETRESPONSE, 0 data bytes",
            "SW 6D00 SW_INS_NOT_SUPPORTED, 0 data bytes",
            "malformed APDU: malformed command APDU of 6 bytes",
        ]
    );
}
