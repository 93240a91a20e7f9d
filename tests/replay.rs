//! Record and replay through the device layer: a session with the Trussed firmware (an
//! in-process virtual key) is recorded by a registry with `DeviceConfig::record_dir`, then
//! the file is served by `Replay::serve` to a fresh registry with the recorded randomness.
//! The same calls with the same inputs give the same results without the key; a changed input
//! is a typed mismatch naming the line of the recorded write.

// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod device_support;

use std::fs;
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ctap::command::client_pin::Permissions;
use ctap::command::encode_request;
use ctap::command::get_info;
use ctap::command::make_credential::{self, MakeCredential, Options, PinUvAuth};
use ctap::ctaphid::{self, Cid, Command as HidCommand};
use ctap::pin_uv::{Pin, PinUvAuthProtocol};
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::Flags;
use device_support::ctap_support as peer;
use device_support::*;
use passkeyd::device::record::{Direction, EventBody, Replay, ReplayError, ReplaySummary};
use passkeyd::device::{Authenticator, DeviceConfig, DeviceError, HostRandomness};
use passkeyd::transport::{Report, Transport};
use tokio::time::{Instant, sleep, timeout};
use virtkey::{AAGUID, Config};

const PIN: &str = "1234";
const CLIENT_DATA_HASH: [u8; 32] = [0x5C; 32];
const USER_ID: &[u8] = b"user-0001";

/// What the session's calls returned.
#[derive(Debug, PartialEq)]
struct Outcome {
    info: Arc<get_info::Response>,
    /// The pinUvAuthParam the token gives over the client data hash: equal params, equal
    /// tokens.
    token_param: Vec<u8>,
    response: make_credential::Response,
}

/// A makeCredential with rk, authorized by `param`, for the user named `user_name`.
fn make_credential(user_name: &str, param: Vec<u8>) -> MakeCredential {
    let mut request = peer::request(CLIENT_DATA_HASH, USER_ID);
    request.user.name = Some(user_name.to_owned());
    request.options = Options {
        rk: Some(true),
        ..Options::default()
    };
    request.pin_uv_auth = Some(PinUvAuth { param, protocol: 2 });
    MakeCredential::new(request).unwrap()
}

/// After the probe (getInfo): set a PIN, get a token with the mc permission, and make a
/// resident credential for `user_name`.
async fn session(key: &Authenticator, user_name: &str) -> Result<Outcome, DeviceError> {
    let info = key.info().expect("getInfo was read at the probe");
    let protocol = key.pin_protocol().unwrap();
    assert_eq!(protocol, PinUvAuthProtocol::Two);
    key.set_pin(protocol, &Pin::new(PIN).unwrap()).await?;
    let token = key
        .pin_token(
            protocol,
            &Pin::new(PIN).unwrap(),
            Permissions::MAKE_CREDENTIAL,
            Some(peer::RP_ID),
        )
        .await?;
    let token_param = token.authenticate(&CLIENT_DATA_HASH);
    let response = key
        .make_credential(
            &make_credential(user_name, token_param.clone()),
            generous_deadline(),
        )
        .result()
        .await?;
    Ok(Outcome {
        info,
        token_param,
        response,
    })
}

/// The one file in `dir`, once its writer has reached the recorded unplug (the last event).
async fn finished_recording(dir: &Path) -> PathBuf {
    let until = Instant::now() + GENEROUS;
    loop {
        let files: Vec<PathBuf> = fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .collect();
        if let [path] = files.as_slice()
            && let Ok(replay) = Replay::read(fs::read(path).unwrap().as_slice())
            && replay.file().events.last().map(|e| &e.body) == Some(&EventBody::Disconnect)
        {
            return path.clone();
        }
        assert!(
            Instant::now() < until,
            "the recording did not end: {files:?}"
        );
        sleep(std::time::Duration::from_millis(20)).await;
    }
}

fn read_replay(path: &Path) -> Replay {
    Replay::read(std::io::BufReader::new(fs::File::open(path).unwrap())).unwrap()
}

/// Serves `replay` to a fresh registry with its recorded randomness; returns the registry
/// rig, the replayed key and the replay task.
async fn replayed_key(
    replay: Replay,
) -> (
    Rig,
    Authenticator,
    tokio::task::JoinHandle<Result<ReplaySummary, ReplayError>>,
) {
    let randomness = replay.randomness();
    let (connection, task) = replay.serve();
    let task = tokio::spawn(task);
    let mut rig = Rig::start().await;
    assert!(
        rig.registry
            .add(
                description("a", Transport::Virtual),
                connection,
                HostRandomness::Replay(randomness),
            )
            .await
    );
    let key = rig.added().await.authenticator;
    (rig, key, task)
}

/// The recorded writes (host → key reports) from the first report of the makeCredential
/// request on, with their lines.
fn recorded_make_credential_writes(replay: &Replay) -> Vec<(usize, Report)> {
    let writes: Vec<(usize, Report)> = replay
        .file()
        .events
        .iter()
        .filter_map(|event| match event.body {
            EventBody::Report {
                dir: Direction::Out,
                report,
            } => Some((event.line, report)),
            _ => None,
        })
        .collect();
    // An initialization packet of CTAPHID_CBOR (0x90) whose payload starts with
    // authenticatorMakeCredential (0x01).
    let start = writes
        .iter()
        .position(|(_, r)| r[4] == 0x90 && r[7] == 0x01)
        .expect("a recorded makeCredential");
    writes[start..].to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recorded_session_replays_identically_and_a_changed_input_is_a_mismatch() {
    // ---- record: the firmware behind the registry, every key recorded ----
    let dir = tempfile::tempdir().unwrap();
    let record_dir = dir.path().join("recordings");
    let mut rig = Rig::with_config(DeviceConfig {
        record_dir: Some(record_dir.clone()),
        ..DeviceConfig::default()
    })
    .await;
    let (mut bridge, connection) = HidBridge::start(Config::default());
    rig.plug("a", Transport::Virtual, connection).await;
    let key = rig.added().await.authenticator;
    let live = session(&key, "alice").await.unwrap();
    assert_eq!(live.info.aaguid, AAGUID);
    let object = AttestationObject::from_response(live.response.clone()).unwrap();
    assert_eq!(object.fmt, "packed");
    let auth_data = object.parsed_auth_data().unwrap();
    assert!(auth_data.check_rp_id(peer::RP_ID));
    assert!(
        auth_data
            .flags()
            .contains(Flags::UP | Flags::UV | Flags::AT)
    );
    let credential_id = auth_data
        .attested_credential_data()
        .unwrap()
        .credential_id()
        .to_vec();
    assert!(!credential_id.is_empty());
    // The key is pulled out: the recording ends with the unplug.
    bridge.unplug();
    assert_eq!(rig.removed().await.as_str(), "virtual_a");
    drop(key);

    let path = finished_recording(&record_dir).await;
    let name = path.file_name().unwrap().to_str().unwrap().to_owned();
    let time = name
        .strip_prefix("virtual_a-")
        .and_then(|rest| rest.strip_suffix(".jsonl"))
        .unwrap();
    assert!(time.parse::<u64>().unwrap() > 1_700_000_000, "{name}");
    assert_eq!(
        fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    assert_eq!(
        fs::metadata(&record_dir).unwrap().permissions().mode() & 0o777,
        0o700
    );

    let replay = read_replay(&path);
    assert_eq!(replay.header().transport, Transport::Virtual);
    assert_eq!(replay.header().device.id.as_deref(), Some("virtual_a"));
    assert_eq!(replay.header().device.path.as_deref(), Some("test:a"));
    // Every draw of host randomness, in order: the INIT nonce of the probe; setPIN's key
    // agreement and newPinEnc IV; the token request's key agreement and pinHashEnc IV.
    let draws: Vec<(&str, usize)> = replay
        .file()
        .events
        .iter()
        .filter(|e| e.body.direction().is_none())
        .map(|e| (e.body.kind(), e.body.bytes().len()))
        .collect();
    assert_eq!(
        draws,
        [
            ("nonce", 8),
            ("ecdh-key", 32),
            ("iv", 16),
            ("ecdh-key", 32),
            ("iv", 16)
        ]
    );
    let reports = replay
        .file()
        .events
        .iter()
        .filter(|e| matches!(e.body, EventBody::Report { .. }))
        .count();

    // ---- replay: no key, the same calls, the same results ----
    let (mut rig, key, task) = replayed_key(replay).await;
    let replayed = session(&key, "alice").await.unwrap();
    assert_eq!(replayed, live);
    let object = AttestationObject::from_response(replayed.response).unwrap();
    assert_eq!(
        object
            .parsed_auth_data()
            .unwrap()
            .attested_credential_data()
            .unwrap()
            .credential_id(),
        credential_id
    );
    // The recorded unplug is replayed too, once every recorded report was served.
    assert_eq!(rig.removed().await.as_str(), "virtual_a");
    let summary = timeout(GENEROUS, task).await.unwrap().unwrap().unwrap();
    assert_eq!(
        summary,
        ReplaySummary {
            served: reports,
            disconnected: true
        }
    );

    // ---- replay with another user name: the write that differs is named ----
    let replay = read_replay(&path);
    let recorded = recorded_make_credential_writes(&replay);
    let (mut rig, key, task) = replayed_key(replay).await;
    let changed = session(&key, "bobby").await;
    assert!(
        matches!(changed, Err(DeviceError::DeviceRemoved)),
        "{changed:?}"
    );
    assert_eq!(rig.removed().await.as_str(), "virtual_a");
    let error = timeout(GENEROUS, task).await.unwrap().unwrap().unwrap_err();

    // What the host wrote instead: the same request for "bobby", on the recorded channel.
    let cid = Cid::from_bytes(recorded[0].1[..4].try_into().unwrap());
    let payload = encode_request(&make_credential("bobby", replayed.token_param)).unwrap();
    let written =
        ctaphid::fragment(cid, HidCommand::Cbor, &payload, ctaphid::MAX_MESSAGE_LEN).unwrap();
    let differs = recorded
        .iter()
        .zip(&written)
        .position(|((_, recorded), written)| recorded != written)
        .unwrap();
    // "alice" and "bobby" have the same length: the request's first report (rp and the
    // client data hash) is the same, the user name is further on.
    assert!(differs > 0);
    let (line, expected) = recorded[differs];
    let offset = expected
        .iter()
        .zip(&written[differs])
        .position(|(a, b)| a != b)
        .unwrap();
    assert_eq!(
        error,
        ReplayError::Mismatch {
            line,
            expected: expected.to_vec(),
            got: written[differs].to_vec(),
            offset,
        }
    );
    assert!(
        error.to_string().starts_with(&format!("line {line}: ")),
        "{error}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_recording_that_cannot_be_created_leaves_the_key_usable() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be.
    let blocked = dir.path().join("file");
    fs::write(&blocked, b"").unwrap();
    let mut rig = Rig::with_config(DeviceConfig {
        record_dir: Some(blocked.join("recordings")),
        ..DeviceConfig::default()
    })
    .await;
    let (_bridge, connection) = HidBridge::start(Config::default());
    rig.plug("a", Transport::Virtual, connection).await;
    let key = rig.added().await.authenticator;
    assert_eq!(key.info().unwrap().aaguid, AAGUID);
    assert_eq!(key.pin_retries().await.unwrap().pin_retries, 8);
    assert_eq!(fs::read(&blocked).unwrap(), b"");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_gets_its_own_recording() {
    let dir = tempfile::tempdir().unwrap();
    let mut rig = Rig::with_config(DeviceConfig {
        record_dir: Some(dir.path().to_owned()),
        ..DeviceConfig::default()
    })
    .await;
    let (connection, mut a) = fake_hid();
    rig.plug("a", Transport::Virtual, connection).await;
    a.probe(FAKE_CID).await;
    rig.added().await;
    let (connection, mut b) = fake_hid();
    rig.plug("b", Transport::Usb, connection).await;
    b.probe(FAKE_CID).await;
    rig.added().await;
    // The same key again within the same second: a second file, not an overwritten one.
    rig.unplug("a", Transport::Virtual).await;
    rig.removed().await;
    let (connection, mut again) = fake_hid();
    rig.plug("a", Transport::Virtual, connection).await;
    again.probe(FAKE_CID).await;
    rig.added().await;

    let mut names: Vec<String> = fs::read_dir(dir.path())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    assert_eq!(names.len(), 3, "{names:?}");
    let prefixes: Vec<&str> = names
        .iter()
        .map(|name| name.split_once('-').unwrap().0)
        .collect();
    assert_eq!(prefixes, ["usb_b", "virtual_a", "virtual_a"]);
    // Each holds its key's probe, once the writer has caught up: the nonce, CTAPHID_INIT and
    // its answer, getInfo and its answer (one report each).
    let probe = [
        ("nonce", None),
        ("report", Some(Direction::Out)),
        ("report", Some(Direction::In)),
        ("report", Some(Direction::Out)),
        ("report", Some(Direction::In)),
    ];
    for name in &names {
        let until = Instant::now() + GENEROUS;
        loop {
            let bytes = fs::read(dir.path().join(name)).unwrap();
            let events: Vec<(&str, Option<Direction>)> = Replay::read(&bytes[..])
                .map(|replay| {
                    replay
                        .file()
                        .events
                        .iter()
                        .map(|e| (e.body.kind(), e.body.direction()))
                        .collect()
                })
                .unwrap_or_default();
            if events.len() >= probe.len() {
                assert_eq!(events[..probe.len()], probe, "{name}");
                break;
            }
            assert!(Instant::now() < until, "{name}: {events:?}");
            sleep(std::time::Duration::from_millis(20)).await;
        }
    }
}
