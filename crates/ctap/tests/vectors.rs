#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Decodes wire data recorded from real security keys.
//!
//! The vectors are third-party data and are not part of this repository: set
//! `PASSKEYD_VECTORS` to the directory holding their JSON files (the project's shared
//! `vectors/` directory). Without it every test here prints that it was skipped, and fails when
//! `CI=true` so that CI cannot pass without them.
//!
//! [`load_vectors`] reads every vector of every file; each test function then takes the vectors
//! of one kind, decodes every one it can, compares the result with the vector's own `decoded`
//! section, and prints a table of what was parsed. A vector this crate rejects by design must
//! be listed in that test's expected failures with the exact error, so nothing is skipped
//! silently.

use std::collections::BTreeSet;
use std::path::Path;

use ctap::cbor::Value;
use ctap::command::client_pin::{self, Permissions};
use ctap::command::get_info::{self, GetInfo};
use ctap::command::make_credential::MakeCredential;
use ctap::command::{ResponseError, decode_response, encode_request};
use ctap::command::{reset::Reset, selection::Selection};
use ctap::cose::CoseKey;
use serde_json::{Map, Value as Json, json};

/// One vector and the file it came from.
struct Vector {
    file: String,
    json: Json,
}

impl Vector {
    fn str(&self, key: &str) -> &str {
        self.json[key].as_str().unwrap_or("")
    }

    fn name(&self) -> &str {
        self.str("name")
    }

    fn kind(&self) -> &str {
        self.str("kind")
    }

    fn transport(&self) -> &str {
        self.str("transport")
    }

    fn direction(&self) -> &str {
        self.str("direction")
    }

    fn hex(&self) -> Result<Vec<u8>, String> {
        hex::decode(self.str("hex")).map_err(|e| format!("bad hex: {e}"))
    }

    /// The vector's own decode of the CBOR map (`decoded.cbor`, or the one of its single
    /// CTAPHID message).
    fn decoded_cbor(&self) -> &Json {
        let decoded = &self.json["decoded"];
        if decoded["messages"].is_array() {
            &decoded["messages"][0]["ctap2"]["cbor"]
        } else {
            &decoded["cbor"]
        }
    }

    /// A CTAP2 response as the transport delivers it: status byte, then the CBOR body.
    fn ctap2_response(&self) -> Result<Vec<u8>, String> {
        let transport = self.transport();
        if transport.starts_with("usb-hid reports") {
            reassemble(self)
        } else if transport.starts_with("ctap2 cbor") {
            // The body alone was recorded; on the wire CTAP2_OK precedes it.
            Ok([&[0x00][..], &self.hex()?].concat())
        } else {
            Err(format!("transport {transport:?} is not a CTAP2 response"))
        }
    }
}

/// Reads every vector of every `*.json` file in `$PASSKEYD_VECTORS`, or returns `None` (after
/// saying so) when the variable is unset. Fails when it is unset and `CI=true`.
fn load_vectors(test: &str) -> Option<Vec<Vector>> {
    let Some(dir) = std::env::var_os("PASSKEYD_VECTORS") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: PASSKEYD_VECTORS is not set, and CI=true requires the recorded vectors"
        );
        println!("{test}: skipped, PASSKEYD_VECTORS is not set");
        return None;
    };
    let dir = Path::new(&dir);
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("cannot read {}: {e}", dir.display()))
        .map(|entry| entry.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no *.json files in {}", dir.display());
    let mut vectors = Vec::new();
    for path in files {
        let text = std::fs::read_to_string(&path).unwrap();
        let doc: Json = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{} is not JSON: {e}", path.display()));
        let file = path.file_name().unwrap().to_string_lossy().into_owned();
        for json in doc["vectors"].as_array().expect("a vectors array") {
            vectors.push(Vector {
                file: file.clone(),
                json: json.clone(),
            });
        }
    }
    Some(vectors)
}

/// Joins the 64-byte CTAPHID reports of the vector's single message (CTAP 2.2 §11.2.4:
/// initialization packet CID(4) CMD(1) BCNT(2) data, continuation packets CID(4) SEQ(1)
/// data) and checks the result against the vector's own reassembly. This is only the minimum
/// needed to reach the CTAP2 payload; the framing itself is tested with the ctaphid module.
fn reassemble(v: &Vector) -> Result<Vec<u8>, String> {
    let messages = v.json["decoded"]["messages"]
        .as_array()
        .ok_or("no decoded.messages")?;
    let [message] = messages.as_slice() else {
        return Err(format!("{} CTAPHID messages, expected one", messages.len()));
    };
    let reports: Vec<Vec<u8>> = v.json["reports"]
        .as_array()
        .ok_or("no reports")?
        .iter()
        .map(|r| hex::decode(r.as_str().unwrap()).unwrap())
        .collect();
    let indexes: Vec<usize> = message["reports"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| usize::try_from(i.as_u64().unwrap()).unwrap())
        .collect();
    let init = &reports[indexes[0]];
    let bcnt = usize::from(u16::from_be_bytes([init[5], init[6]]));
    let mut payload = init[7..].to_vec();
    for &i in &indexes[1..] {
        payload.extend_from_slice(&reports[i][5..]);
    }
    payload.truncate(bcnt);
    assert_eq!(
        hex::encode(&payload),
        message["payload_hex"].as_str().unwrap(),
        "{}: reassembly disagrees with the vector",
        v.name()
    );
    Ok(payload)
}

/// What happened to each vector of one kind.
struct Report {
    title: &'static str,
    rows: Vec<(String, String)>,
}

impl Report {
    fn new(title: &'static str) -> Self {
        Self {
            title,
            rows: Vec::new(),
        }
    }

    fn row(&mut self, v: &Vector, outcome: impl Into<String>) {
        self.rows
            .push((format!("{} ({})", v.name(), v.file), outcome.into()));
    }

    /// Adds a remark to the last vector's row.
    fn note(&mut self, remark: &str) {
        if let Some((_, outcome)) = self.rows.last_mut() {
            outcome.push_str("; ");
            outcome.push_str(remark);
        }
    }

    fn print(&self) {
        let width = self.rows.iter().map(|(n, _)| n.len()).max().unwrap_or(0);
        println!("\n{}: {} vectors", self.title, self.rows.len());
        for (name, outcome) in &self.rows {
            println!("  {name:<width$}  {outcome}");
        }
    }
}

/// Vectors this crate rejects by design, with the error it must give. Checked by every test:
/// a listed vector that parses, or fails differently, is a failure.
const EXPECTED_FAILURES: &[(&str, ResponseError)] = &[];

/// Runs `decode` on `v` and records the outcome; `Some` when it parsed.
fn attempt<T>(
    report: &mut Report,
    v: &Vector,
    decode: impl FnOnce(&[u8]) -> Result<T, ResponseError>,
) -> Option<T> {
    let bytes = match v.ctap2_response() {
        Ok(bytes) => bytes,
        Err(reason) => panic!("{}: {reason}", v.name()),
    };
    let expected = EXPECTED_FAILURES
        .iter()
        .find(|(name, _)| *name == v.name())
        .map(|(_, e)| e);
    match (decode(&bytes), expected) {
        (Ok(parsed), None) => {
            report.row(v, "parsed");
            Some(parsed)
        }
        (Err(e), Some(expected)) if e == *expected => {
            report.row(v, format!("not parsed, as expected: {e}"));
            None
        }
        (Err(e), _) => panic!("{}: {e:?}", v.name()),
        (Ok(_), Some(expected)) => panic!("{}: parsed, expected {expected:?}", v.name()),
    }
}

fn bytes_json(b: &[u8]) -> Json {
    json!({ "bytes_hex": hex::encode(b), "len": b.len() })
}

fn alg_name(alg: i64) -> Json {
    match alg {
        -7 => json!("ES256"),
        -8 => json!("EdDSA"),
        -35 => json!("ES384"),
        -36 => json!("ES512"),
        -257 => json!("RS256"),
        other => json!(other),
    }
}

fn uuid(b: &[u8; 16]) -> String {
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..]
    )
}

/// The decoded getInfo in the vectors' notation, one entry per member present.
fn get_info_json(info: &get_info::Response) -> Map<String, Json> {
    let mut m = Map::new();
    let mut put = |k: &str, v: Option<Json>| {
        if let Some(v) = v {
            m.insert(k.to_owned(), v);
        }
    };
    let versions: Vec<&str> = info
        .versions
        .iter()
        .map(get_info::Version::as_str)
        .collect();
    put("versions", Some(json!(versions)));
    put("extensions", info.extensions.as_ref().map(|e| json!(e)));
    put("aaguid", Some(json!(uuid(&info.aaguid))));
    put(
        "options",
        info.options
            .as_ref()
            .map(|o| Json::Object(o.iter().map(|(k, v)| (k.to_owned(), json!(v))).collect())),
    );
    put("maxMsgSize", info.max_msg_size.map(|n| json!(n)));
    put(
        "pinUvAuthProtocols",
        info.pin_uv_auth_protocols.as_ref().map(|p| json!(p)),
    );
    put(
        "maxCredentialCountInList",
        info.max_credential_count_in_list.map(|n| json!(n)),
    );
    put(
        "maxCredentialIdLength",
        info.max_credential_id_length.map(|n| json!(n)),
    );
    put("transports", info.transports.as_ref().map(|t| json!(t)));
    put(
        "algorithms",
        info.algorithms.as_ref().map(|list| {
            list.iter()
                .map(|p| json!({ "type": p.cred_type.as_str(), "alg": alg_name(p.alg) }))
                .collect()
        }),
    );
    put(
        "maxSerializedLargeBlobArray",
        info.max_serialized_large_blob_array.map(|n| json!(n)),
    );
    put("forcePINChange", info.force_pin_change.map(|b| json!(b)));
    put("minPINLength", info.min_pin_length.map(|n| json!(n)));
    put(
        "firmwareVersion",
        info.firmware_version
            .map(|n| json!(format!("0x{n:08x} ({n})"))),
    );
    put(
        "maxCredBlobLength",
        info.max_cred_blob_length.map(|n| json!(n)),
    );
    put(
        "maxRPIDsForSetMinPINLength",
        info.max_rpids_for_set_min_pin_length.map(|n| json!(n)),
    );
    put(
        "preferredPlatformUvAttempts",
        info.preferred_platform_uv_attempts.map(|n| json!(n)),
    );
    put("uvModality", info.uv_modality.map(|n| json!(n)));
    put(
        "certifications",
        info.certifications.as_ref().map(|c| json!(c)),
    );
    put(
        "remainingDiscoverableCredentials",
        info.remaining_discoverable_credentials.map(|n| json!(n)),
    );
    put(
        "vendorPrototypeConfigCommands",
        info.vendor_prototype_config_commands
            .as_ref()
            .map(|c| json!(c)),
    );
    put(
        "attestationFormats",
        info.attestation_formats.as_ref().map(|f| json!(f)),
    );
    put(
        "uvCountSinceLastPinEntry",
        info.uv_count_since_last_pin_entry.map(|n| json!(n)),
    );
    put(
        "longTouchForReset",
        info.long_touch_for_reset.map(|b| json!(b)),
    );
    put(
        "encIdentifier",
        info.enc_identifier.as_deref().map(bytes_json),
    );
    put(
        "transportsForReset",
        info.transports_for_reset.as_ref().map(|t| json!(t)),
    );
    put(
        "pinComplexityPolicy",
        info.pin_complexity_policy.map(|b| json!(b)),
    );
    put(
        "pinComplexityPolicyURL",
        info.pin_complexity_policy_url.as_deref().map(bytes_json),
    );
    put("maxPINLength", info.max_pin_length.map(|n| json!(n)));
    put(
        "encCredStoreState",
        info.enc_cred_store_state.as_deref().map(bytes_json),
    );
    put(
        "authenticatorConfigCommands",
        info.authenticator_config_commands
            .as_ref()
            .map(|c| json!(c)),
    );
    m
}

#[test]
fn get_info_responses() {
    let Some(vectors) = load_vectors("get_info_responses") else {
        return;
    };
    let mut report = Report::new("authenticatorGetInfo responses");
    for v in vectors
        .iter()
        .filter(|v| v.kind().starts_with("authenticatorGetInfo response"))
    {
        let Some(info) = attempt(&mut report, v, decode_response::<GetInfo>) else {
            continue;
        };
        let ours = get_info_json(&info);
        let theirs = v.decoded_cbor().as_object().expect("decoded cbor map");
        // Every member the vector names is decoded, with the same value ...
        let mut skipped = Vec::new();
        for (key, expected) in theirs {
            if key == "_key_order" {
                continue;
            }
            if let Some(number) = key.strip_prefix("unknown_0x") {
                // ... unknown members are skipped, and really are unknown ...
                let number = u32::from_str_radix(number, 16).unwrap();
                assert!(number > 0x1F, "{}: member {number:#x} is known", v.name());
                skipped.push(format!("{number:#x}"));
                continue;
            }
            assert_eq!(ours.get(key), Some(expected), "{}: {key}", v.name());
        }
        // ... and nothing is decoded that the vector does not have.
        let their_keys: BTreeSet<&String> = theirs.keys().collect();
        for key in ours.keys() {
            assert!(their_keys.contains(key), "{}: extra {key}", v.name());
        }
        let key_order = theirs["_key_order"].as_array().unwrap();
        assert_eq!(
            ours.len() + skipped.len(),
            key_order.len(),
            "{}: member count",
            v.name()
        );
        // The accessors agree with the raw members.
        let max_msg_size = theirs.get("maxMsgSize").and_then(Json::as_u64);
        assert_eq!(
            info.max_msg_size(),
            max_msg_size.map_or(1024, |n| usize::try_from(n).unwrap())
        );
        let client_pin = theirs
            .get("options")
            .and_then(|o| o.get("clientPin"))
            .and_then(Json::as_bool);
        assert_eq!(info.client_pin(), get_info::OptionState::from(client_pin));
        if !skipped.is_empty() {
            report.note(&format!("unknown members skipped: {}", skipped.join(", ")));
        }
    }
    report.print();
    assert!(report.rows.len() >= 7, "getInfo vectors went missing");
}

/// The `(alg, sig, x5c)` of a packed or fido-u2f attestation statement.
fn att_stmt_members(att_stmt: &Value) -> (Option<i64>, Option<Vec<u8>>, Vec<usize>) {
    let Value::Map(members) = att_stmt else {
        panic!("attStmt is not a map");
    };
    let (mut alg, mut sig, mut x5c) = (None, None, Vec::new());
    for (k, v) in members {
        match (k.as_text(), v) {
            (Some("alg"), Value::Integer(i)) => alg = Some(i64::try_from(*i).unwrap()),
            (Some("sig"), Value::Bytes(b)) => sig = Some(b.clone()),
            (Some("x5c"), Value::Array(certs)) => {
                x5c = certs.iter().map(|c| c.as_bytes().unwrap().len()).collect()
            }
            _ => {}
        }
    }
    (alg, sig, x5c)
}

#[test]
fn make_credential_responses() {
    let Some(vectors) = load_vectors("make_credential_responses") else {
        return;
    };
    let mut report = Report::new("authenticatorMakeCredential responses");
    for v in vectors
        .iter()
        .filter(|v| v.kind().starts_with("authenticatorMakeCredential response"))
    {
        let wire = v.ctap2_response().unwrap();
        let Some(resp) = attempt(&mut report, v, decode_response::<MakeCredential>) else {
            continue;
        };
        let theirs = v.decoded_cbor();
        assert_eq!(resp.fmt, theirs["fmt"].as_str().unwrap(), "{}", v.name());

        // authData is kept byte for byte.
        let ad = &resp.auth_data;
        let their_ad = &theirs["authData"];
        assert_eq!(ad.len() as u64, their_ad["len"].as_u64().unwrap());
        assert_eq!(
            hex::encode(&ad[..32]),
            their_ad["rpIdHash"].as_str().unwrap()
        );
        assert_eq!(
            format!("0x{:02x}", ad[32]),
            their_ad["flags"].as_str().unwrap()
        );
        let sign_count = u32::from_be_bytes(ad[33..37].try_into().unwrap());
        assert_eq!(
            u64::from(sign_count),
            their_ad["signCount"].as_u64().unwrap()
        );
        assert!(
            wire.windows(ad.len()).any(|w| w == ad.as_slice()),
            "{}: authData not verbatim",
            v.name()
        );

        // attStmt re-emits to the exact bytes the key sent.
        let att_stmt = resp.att_stmt_bytes().unwrap();
        assert!(
            wire.windows(att_stmt.len())
                .any(|w| w == att_stmt.as_slice()),
            "{}: attStmt does not re-encode byte-exact",
            v.name()
        );
        let (alg, sig, x5c) = att_stmt_members(&resp.att_stmt);
        let their_stmt = &theirs["attStmt"];
        assert_eq!(alg.map(alg_name).as_ref(), their_stmt.get("alg"));
        assert_eq!(
            sig.map(hex::encode).as_deref(),
            their_stmt["sig"].as_str(),
            "{}",
            v.name()
        );
        let their_x5c: Vec<usize> = their_stmt["x5c"]
            .as_array()
            .map(|certs| {
                certs
                    .iter()
                    .map(|c| usize::try_from(c["len"].as_u64().unwrap()).unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(x5c, their_x5c, "{}: x5c", v.name());

        assert_eq!(resp.ep_att, theirs["epAtt"].as_bool(), "{}", v.name());
        assert_eq!(
            resp.large_blob_key.as_deref().map(|k| bytes_json(k)),
            theirs.get("largeBlobKey").cloned(),
            "{}",
            v.name()
        );
        assert_eq!(
            resp.unsigned_extension_outputs.is_some(),
            theirs.get("unsignedExtensionOutputs").is_some()
        );
        let canonical = v.json["decoded"]["canonical_ctap2_encoding"]
            .as_bool()
            .or_else(|| {
                v.json["decoded"]["messages"][0]["ctap2"]["canonical_ctap2_encoding"].as_bool()
            });
        if canonical == Some(false) {
            report.note("non-canonical CBOR accepted (decoding is lenient by design)");
        }
        if resp.large_blob_key.as_ref().is_some_and(|k| k.len() != 32) {
            report.note("largeBlobKey is not 32 bytes, kept as sent");
        }
    }
    report.print();
    assert!(
        report.rows.len() >= 5,
        "makeCredential vectors went missing"
    );
}

fn cose_json(key: &CoseKey) -> Json {
    let CoseKey::Ec2 { alg, crv, x, y } = key else {
        panic!("not an EC2 key: {key:?}");
    };
    json!({
        "kty": "EC2",
        "alg": match alg { Some(-25) => json!("ECDH-ES+HKDF-256"), other => json!(other) },
        "crv": if *crv == 1 { json!("P-256") } else { json!(crv) },
        "x": hex::encode(x),
        "y": hex::encode(y),
    })
}

#[test]
fn client_pin_responses() {
    let Some(vectors) = load_vectors("client_pin_responses") else {
        return;
    };
    let mut report = Report::new("authenticatorClientPIN responses");
    for v in vectors.iter().filter(|v| {
        v.kind().starts_with("authenticatorClientPIN") && v.direction() == "device->host"
    }) {
        let Some(resp) = attempt(&mut report, v, |bytes| {
            // Through the subcommand's own response type where the vector says which.
            let kind = v.kind();
            if kind.contains("getKeyAgreement") {
                decode_response::<client_pin::GetKeyAgreement>(bytes)?;
            } else if kind.contains("getPinRetries") {
                decode_response::<client_pin::GetPinRetries>(bytes)?;
            } else if kind.contains("getPinToken") {
                decode_response::<client_pin::GetPinToken>(bytes)?;
            }
            let (_, body) = bytes.split_first().unwrap();
            Ok(client_pin::Response::from_cbor(body)?)
        }) else {
            continue;
        };
        let mut ours = Map::new();
        if let Some(key) = &resp.key_agreement {
            ours.insert("keyAgreement".into(), cose_json(key));
            key.to_p256()
                .unwrap_or_else(|e| panic!("{}: key agreement point: {e}", v.name()));
        }
        if let Some(token) = &resp.pin_uv_auth_token {
            ours.insert("pinUvAuthToken".into(), bytes_json(token));
        }
        if let Some(n) = resp.pin_retries {
            ours.insert("pinRetries".into(), json!(n));
        }
        if let Some(b) = resp.power_cycle_state {
            ours.insert("powerCycleState".into(), json!(b));
        }
        if let Some(n) = resp.uv_retries {
            ours.insert("uvRetries".into(), json!(n));
        }
        assert_eq!(
            &Json::Object(ours),
            v.decoded_cbor(),
            "{}: decoded members",
            v.name()
        );
    }
    report.print();
    assert!(report.rows.len() >= 6, "clientPIN vectors went missing");
}

#[test]
fn client_pin_requests() {
    let Some(vectors) = load_vectors("client_pin_requests") else {
        return;
    };
    let mut report = Report::new("authenticatorClientPIN requests (re-encoded from their fields)");
    for v in vectors.iter().filter(|v| {
        v.kind().starts_with("authenticatorClientPIN") && v.direction() == "host->device"
    }) {
        let fields = v.decoded_cbor();
        let protocol = u32::try_from(fields["pinUvAuthProtocol"].as_u64().unwrap()).unwrap();
        let bytes_of = |k: &str| hex::decode(fields[k]["bytes_hex"].as_str().unwrap()).unwrap();
        let key = &fields["keyAgreement"];
        assert_eq!(key["alg"], "ECDH-ES+HKDF-256");
        assert_eq!(key["crv"], "P-256");
        let key_agreement = CoseKey::Ec2 {
            alg: Some(ctap::cose::alg::ECDH_ES_HKDF_256),
            crv: ctap::cose::curve::P256,
            x: hex::decode(key["x"].as_str().unwrap()).unwrap(),
            y: hex::decode(key["y"].as_str().unwrap()).unwrap(),
        };
        let permissions = || {
            let bits = fields["permissions"].as_u64().unwrap();
            Permissions::from_bits_retain(u8::try_from(bits).unwrap())
        };
        let rp_id = fields["rpId"].as_str().map(str::to_owned);
        let encoded = match fields["subCommand"].as_u64().unwrap() {
            0x03 => encode_request(&client_pin::SetPin {
                pin_uv_auth_protocol: protocol,
                key_agreement,
                new_pin_enc: bytes_of("newPinEnc").into(),
                pin_uv_auth_param: bytes_of("pinUvAuthParam"),
            }),
            0x05 => encode_request(&client_pin::GetPinToken {
                pin_uv_auth_protocol: protocol,
                key_agreement,
                pin_hash_enc: bytes_of("pinHashEnc").into(),
            }),
            0x06 => encode_request(&client_pin::GetPinUvAuthTokenUsingUvWithPermissions {
                pin_uv_auth_protocol: protocol,
                key_agreement,
                permissions: permissions(),
                rp_id,
            }),
            0x09 => encode_request(&client_pin::GetPinUvAuthTokenUsingPinWithPermissions {
                pin_uv_auth_protocol: protocol,
                key_agreement,
                pin_hash_enc: bytes_of("pinHashEnc").into(),
                permissions: permissions(),
                rp_id,
            }),
            other => panic!(
                "{}: no request vector handling for subCommand {other}",
                v.name()
            ),
        }
        .unwrap();
        assert_eq!(
            hex::encode(encoded),
            v.str("hex"),
            "{}: re-encoded request",
            v.name()
        );
        report.row(v, "re-encoded byte-exact");
    }
    report.print();
    assert!(
        report.rows.len() >= 3,
        "clientPIN request vectors went missing"
    );
}

#[test]
fn status_only_responses() {
    let Some(vectors) = load_vectors("status_only_responses") else {
        return;
    };
    let mut report = Report::new("status-only responses (setPIN, changePIN, reset, selection)");
    for v in vectors
        .iter()
        .filter(|v| v.kind().starts_with("CTAPHID_CBOR status-only response"))
    {
        attempt(&mut report, v, |bytes| {
            decode_response::<client_pin::SetPin>(bytes)?;
            decode_response::<client_pin::ChangePin>(bytes)?;
            decode_response::<Reset>(bytes)?;
            decode_response::<Selection>(bytes)
        });
    }
    report.print();
    assert!(!report.rows.is_empty(), "status-only vectors went missing");
}
