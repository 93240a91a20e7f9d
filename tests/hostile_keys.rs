//! Hostile keys (virtkey's `Hostile` modes and its flapping socket): each hostile key's
//! ceremony ends in a typed error within its deadline, while a well-behaved key's ceremony
//! runs at the same time and completes; LoginID never sees a tampered answer; the hostile key
//! takes the next request; a key that unplugs and replugs in a loop leaves the registry
//! consistent.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod ceremony_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use ceremony_support::device_support::{GENEROUS, Rig as DeviceRig};
use ceremony_support::*;
use ctap::cbor::DecodeError;
use ctap::ctaphid::{FramingError, TransactionError};
use passkeyd::ceremony::{BadResponse, CancelReason, CeremonyError, ErrorKind};
use passkeyd::device::{DeviceConfig, DeviceError, ProtocolError, Registry, RegistryEvent};
use passkeyd::transport::virt::{self, VirtualConfig};
use passkeyd::transport::{DeviceId, Transport};
use tokio::time::{Instant, timeout};
use virtkey::socket::{self, ServeOptions, ServerEvent};
use virtkey::{Config, Hostile, VirtKey};

/// The hostile key's ceremony deadline.
const HOSTILE_TIMEOUT: Duration = Duration::from_secs(10);
/// Time past that deadline allowed for cancelling the key and reporting on a loaded machine.
const SLACK: Duration = Duration::from_secs(20);
const GOOD_USER: &str = "good@example.com";
const HOSTILE_USER: &str = "hostile@example.com";

fn virtual_id(name: &str) -> DeviceId {
    DeviceId::new(Transport::Virtual, name)
}

/// Runs a ceremony on a key in `mode` and, at the same time, one on a well-behaved key.
/// Checks that the good one completes, that the hostile one fails with a reported kind
/// within the deadline, that LoginID saw only the good registration, and that the hostile key
/// is idle and answers afterwards. Returns the hostile ceremony's error and duration.
async fn against(mode: Hostile) -> (CeremonyError, Duration) {
    let mut rig = Rig::start(touch_only).await;
    let _good = rig.plug("good", Config::default()).await;
    let _bad = rig
        .plug(
            "bad",
            Config {
                hostile: Some(mode),
                ..Config::default()
            },
        )
        .await;
    let mut bad_request = rig.request(HOSTILE_USER).await;
    bad_request.authenticator = Some(virtual_id("bad"));
    bad_request.timeout = Some(HOSTILE_TIMEOUT);
    let mut good_request = rig.request(GOOD_USER).await;
    good_request.authenticator = Some(virtual_id("good"));

    let started = Instant::now();
    let bad = Driver::new(rig.ceremonies.start(bad_request).unwrap());
    let good = Driver::new(rig.ceremonies.start(good_request).unwrap());
    let bad = async move {
        let outcome = bad.finish().await;
        (outcome, started.elapsed())
    };
    let (((bad_seen, bad_result), elapsed), (good_seen, good_result)) =
        tokio::join!(bad, good.finish());

    assert_eq!(
        without_touch(&good_seen),
        [
            Seen::Registering("virtual_good".into()),
            Seen::Completed("virtual_good".into())
        ],
        "{mode:?}"
    );
    rig.check_registration(&good_result.unwrap(), GOOD_USER)
        .await;

    let Err(error) = bad_result else {
        panic!("{mode:?}: the hostile key's ceremony succeeded");
    };
    assert_eq!(
        bad_seen.last(),
        Some(&Seen::Failed(error.kind())),
        "{mode:?}: {bad_seen:?}"
    );
    assert!(
        elapsed < HOSTILE_TIMEOUT + SLACK,
        "{mode:?} took {elapsed:?}"
    );
    // Only the good key's registration reached LoginID.
    assert_eq!(
        rig.statuses("/fido2/v2/reg/complete").await,
        [Some(200)],
        "{mode:?}"
    );
    // The hostile key is left idle and takes the next request.
    rig.wait_idle("virtual_bad").await;
    timeout(GENEROUS, rig.key("virtual_bad").await.wink())
        .await
        .expect("the wink is answered in time")
        .unwrap();
    (error, elapsed)
}

fn framing(error: &CeremonyError) -> &FramingError {
    match error {
        CeremonyError::Device(DeviceError::Protocol(ProtocolError::Transaction(
            TransactionError::Framing(framing),
        ))) => framing,
        other => panic!("expected a framing error, got {other:?}"),
    }
}

fn bad_response(error: &CeremonyError) -> &BadResponse {
    match error {
        CeremonyError::BadResponse(bad) => bad,
        other => panic!("expected BadResponse, got {other:?}"),
    }
}

// ---- framing ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_on_another_channel_ends_in_a_timeout() {
    let (error, elapsed) = against(Hostile::OtherChannel).await;
    // The channel filter drops it; the key then stays silent past the inactivity timeout.
    assert!(matches!(error, CeremonyError::Timeout), "{error:?}");
    assert_eq!(error.kind(), ErrorKind::Timeout);
    assert!(elapsed >= DeviceConfig::default().inactivity_timeout);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_sequence_number_is_a_protocol_error() {
    let (error, _) = against(Hostile::WrongSequence).await;
    assert!(
        matches!(
            framing(&error),
            FramingError::UnexpectedSeq {
                expected: 0,
                got: 1
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::DeviceError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_init_packet_mid_message_is_a_protocol_error() {
    let (error, _) = against(Hostile::InitMidMessage).await;
    assert!(
        matches!(framing(&error), FramingError::InitDuringMessage { .. }),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::DeviceError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_bcnt_is_refused_before_any_buffering() {
    let (error, _) = against(Hostile::OversizedBcnt).await;
    assert!(
        matches!(
            framing(&error),
            FramingError::BcntOverLimit {
                bcnt: 0xffff,
                limit: 7609
            }
        ),
        "{error:?}"
    );
    assert_eq!(error.kind(), ErrorKind::DeviceError);
}

// ---- timing ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endless_keepalives_do_not_outlast_the_ceremony_deadline() {
    let (error, elapsed) = against(Hostile::EndlessKeepalive).await;
    assert!(matches!(error, CeremonyError::Timeout), "{error:?}");
    // Keepalives restart the inactivity timer, never the overall deadline.
    assert!(elapsed >= HOSTILE_TIMEOUT, "{elapsed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_key_ends_in_a_timeout_before_the_deadline() {
    let (error, elapsed) = against(Hostile::Silence).await;
    assert!(matches!(error, CeremonyError::Timeout), "{error:?}");
    assert!(elapsed >= DeviceConfig::default().inactivity_timeout);
}

/// Cancels a ceremony once `mode`'s key is working on makeCredential; returns how long the
/// ceremony took to end after the cancel.
async fn cancel_on(mode: Hostile) -> Duration {
    let mut rig = Rig::start(touch_only).await;
    let _bad = rig
        .plug(
            "bad",
            Config {
                hostile: Some(mode),
                ..Config::default()
            },
        )
        .await;
    let mut events = rig.devices.registry.subscribe().await.unwrap().events;
    let ceremony = rig
        .ceremonies
        .start(rig.request(HOSTILE_USER).await)
        .unwrap();
    // Busy: makeCredential is out (the ceremony asks nothing else of a touch-only key).
    busy_flags(&mut events, &["virtual_bad"], true).await;
    ceremony.cancel();
    let cancelled = Instant::now();
    let (seen, result) = Driver::new(ceremony).finish().await;
    let took = cancelled.elapsed();
    assert_eq!(
        seen.last(),
        Some(&Seen::Cancelled(CancelReason::Caller)),
        "{mode:?}"
    );
    assert!(
        matches!(result, Err(CeremonyError::Cancelled(CancelReason::Caller))),
        "{mode:?}: {result:?}"
    );
    rig.wait_idle("virtual_bad").await;
    timeout(GENEROUS, rig.key("virtual_bad").await.wink())
        .await
        .expect("the wink is answered in time")
        .unwrap();
    took
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_on_a_key_that_ignores_cancel_ends_after_the_cancel_grace() {
    let took = cancel_on(Hostile::Silence).await;
    // The key never answers the CANCEL: the device layer gives up after its grace.
    let grace = DeviceConfig::default().cancel_grace;
    assert!(took >= grace, "{took:?}");
    assert!(took < grace + SLACK, "{took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_on_an_endless_keepalive_is_honoured() {
    let took = cancel_on(Hostile::EndlessKeepalive).await;
    assert!(took < SLACK, "{took:?}");
}

// ---- CBOR ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_cbor_is_a_decode_error() {
    let (error, _) = against(Hostile::GarbageCbor).await;
    assert!(
        matches!(
            error,
            CeremonyError::Device(DeviceError::Protocol(ProtocolError::Decode(
                DecodeError::Malformed
            )))
        ),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_deeply_nested_cbor_is_a_decode_error() {
    let (error, _) = against(Hostile::HugeCbor).await;
    assert!(
        matches!(
            error,
            CeremonyError::Device(DeviceError::Protocol(ProtocolError::Decode(
                DecodeError::Malformed
            )))
        ),
        "{error:?}"
    );
}

// ---- tampered makeCredential answers ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_data_for_another_rp_is_refused() {
    let (error, _) = against(Hostile::WrongRpIdHash).await;
    assert_eq!(bad_response(&error), &BadResponse::RpIdHash);
    assert_eq!(error.kind(), ErrorKind::DeviceError);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_data_without_up_is_refused() {
    let (error, _) = against(Hostile::UserNotPresent).await;
    assert_eq!(bad_response(&error), &BadResponse::UserNotPresent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_id_length_that_disagrees_is_refused() {
    let (error, _) = against(Hostile::CredentialIdMismatch).await;
    assert!(
        matches!(bad_response(&error), BadResponse::AuthData(_)),
        "{error:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_id_over_1023_bytes_is_refused() {
    let (error, _) = against(Hostile::CredentialIdTooLong).await;
    assert_eq!(
        bad_response(&error),
        &BadResponse::CredentialIdTooLong(1024)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_credential_key_off_the_curve_is_refused() {
    let (error, _) = against(Hostile::CoseKeyOffCurve).await;
    assert_eq!(bad_response(&error), &BadResponse::PublicKeyNotOnCurve);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_as_large_as_ctaphid_allows_with_an_unknown_member_is_accepted() {
    let mut rig = Rig::start(touch_only).await;
    let _key = rig
        .plug(
            "big",
            Config {
                hostile: Some(Hostile::MaximumSize),
                ..Config::default()
            },
        )
        .await;
    let ceremony = rig.ceremonies.start(rig.request(GOOD_USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony).finish().await;
    assert_eq!(
        without_touch(&seen),
        [
            Seen::Registering("virtual_big".into()),
            Seen::Completed("virtual_big".into())
        ]
    );
    rig.check_registration(&result.unwrap(), GOOD_USER).await;
}

// ---- a flapping key ----

/// Reports a key sends while the registry probes it (INIT and getInfo), measured.
async fn probe_reports(dir: &std::path::Path) -> u64 {
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(16);
    let _transport = virt::spawn(
        VirtualConfig {
            dir: dir.to_path_buf(),
        },
        events_tx,
    )
    .unwrap();
    let registry = Registry::spawn(events_rx, DeviceConfig::default());
    let mut subscription = registry.subscribe().await.unwrap();
    let key = Arc::new(VirtKey::start(Config::default()).unwrap());
    let server = socket::serve(key, &dir.join("probe.sock"), ServeOptions::default()).unwrap();
    loop {
        match timeout(GENEROUS, subscription.events.recv()).await {
            Ok(Ok(RegistryEvent::Added(_))) => break,
            Ok(Ok(_)) => {}
            other => panic!("no Added event: {other:?}"),
        }
    }
    server.reports_sent()
}

/// Serves a key at `dir/name.sock` that unplugs after `after` reports and comes back 20 ms
/// later, over and over; returns the server and its events.
fn flapping(
    dir: &std::path::Path,
    name: &str,
    after: u64,
) -> (socket::SocketServer, std::sync::mpsc::Receiver<ServerEvent>) {
    let (events_tx, events) = std::sync::mpsc::channel();
    let key = Arc::new(VirtKey::start(Config::default()).unwrap());
    let server = socket::serve(
        key,
        &dir.join(format!("{name}.sock")),
        ServeOptions {
            unplug_after: Some(after),
            replug_after: Some(Duration::from_millis(20)),
            events: Some(events_tx),
            ..ServeOptions::default()
        },
    )
    .unwrap();
    (server, events)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_flapping_in_a_loop_leaves_the_registry_consistent() {
    const CYCLES: usize = 20;
    let scratch = TempDir::new();
    let probe_dir = scratch.0.join("probe");
    std::fs::create_dir_all(&probe_dir).unwrap();
    let probe = probe_reports(&probe_dir).await;
    assert!(probe >= 2, "{probe}");

    let dir = scratch.0.join("keys");
    std::fs::create_dir_all(&dir).unwrap();
    let (events_tx, events_rx) = tokio::sync::mpsc::channel(64);
    let _transport = virt::spawn(VirtualConfig { dir: dir.clone() }, events_tx).unwrap();
    let registry = Registry::spawn(events_rx, DeviceConfig::default());
    let mut subscription = registry.subscribe().await.unwrap();
    let (unused_tx, _unused_rx) = tokio::sync::mpsc::channel(1);
    let devices = DeviceRig {
        registry: registry.clone(),
        transport: unused_tx,
        events: registry.subscribe().await.unwrap().events,
    };
    let rig = Rig::start_on(devices, touch_only, |_| {}).await;

    let good_key = Arc::new(VirtKey::start(Config::default()).unwrap());
    let _good = socket::serve(good_key, &dir.join("good.sock"), ServeOptions::default()).unwrap();
    // The good key is in the registry before the others start flapping (a ceremony that
    // asks for a key not present yet ends with NoAuthenticator at once).
    loop {
        match timeout(GENEROUS, subscription.events.recv()).await {
            Ok(Ok(RegistryEvent::Added(device))) => {
                assert_eq!(device.id().as_str(), "virtual_good");
                break;
            }
            Ok(Ok(RegistryEvent::Removed(id))) => panic!("{id} removed"),
            Ok(Ok(_)) => {}
            other => panic!("expected the good key, got {other:?}"),
        }
    }
    // One key pulled in the middle of its probe, one pulled after it was announced, at the
    // first request it answers.
    let (mid_probe, mid_probe_events) = flapping(&dir, "midprobe", 2);
    let (announced, announced_events) = flapping(&dir, "announced", probe + 1);

    // The registry's view from its events: an id is never announced twice in a row or
    // removed without having been announced.
    let mut present: BTreeSet<String> = BTreeSet::from(["virtual_good".to_owned()]);
    let mut announced_count = 0_usize;
    let mut stale_checked = 0_usize;
    // The handle of the announced flapping key's latest plug-in, kept past its removal.
    let mut kept = None;
    let (mut mid_probe_replugs, mut announced_replugs) = (0, 0);
    // A ceremony on the good key while the others flap.
    let mut request = rig.request(GOOD_USER).await;
    request.authenticator = Some(virtual_id("good"));
    let driver = Driver::new(rig.ceremonies.start(request).unwrap());
    let good_outcome = tokio::spawn(driver.finish());
    let give_up = Instant::now() + GENEROUS * 3;
    while mid_probe_replugs < CYCLES || announced_replugs < CYCLES {
        assert!(
            Instant::now() < give_up,
            "the keys did not flap {CYCLES} times"
        );
        let event = timeout(GENEROUS, subscription.events.recv())
            .await
            .expect("registry events keep coming while keys flap")
            .unwrap();
        match event {
            RegistryEvent::Added(device) => {
                let id = device.id().as_str().to_owned();
                assert!(present.insert(id.clone()), "{id} announced twice");
                if id == "virtual_announced" {
                    announced_count += 1;
                    // Its first answer pulls it: the wink ends in DeviceRemoved.
                    let result = device.authenticator.wink().await;
                    assert!(
                        matches!(result, Err(DeviceError::DeviceRemoved) | Ok(())),
                        "{result:?}"
                    );
                    kept = Some(device.authenticator.clone());
                }
                assert_ne!(
                    id, "virtual_midprobe",
                    "a key pulled mid-probe was announced"
                );
            }
            RegistryEvent::Removed(id) => {
                assert!(present.remove(id.as_str()), "{id} removed but not present");
                // A handle to a removed key fails at once instead of reaching a newer
                // plug-in of the same key.
                if let Some(stale) = kept.take() {
                    let result = timeout(GENEROUS, stale.wink()).await.unwrap();
                    assert!(
                        matches!(result, Err(DeviceError::DeviceRemoved)),
                        "{result:?}"
                    );
                    stale_checked += 1;
                }
            }
            _ => {}
        }
        mid_probe_replugs += replugs(&mid_probe_events);
        announced_replugs += replugs(&announced_events);
    }
    assert!(announced_count >= 1);
    assert!(stale_checked >= 1);
    let (seen, result) = timeout(GENEROUS, good_outcome).await.unwrap().unwrap();
    assert_eq!(
        seen.last(),
        Some(&Seen::Completed("virtual_good".into())),
        "{seen:?}"
    );
    rig.check_registration(&result.unwrap(), GOOD_USER).await;

    // Pulled for good: the registry ends with the good key only, and it still works.
    drop(mid_probe);
    drop(announced);
    while present.len() > 1 || !present.contains("virtual_good") {
        let event = timeout(GENEROUS, subscription.events.recv())
            .await
            .expect("the flapping keys are removed")
            .unwrap();
        match event {
            RegistryEvent::Added(device) => {
                assert!(present.insert(device.id().as_str().to_owned()));
            }
            RegistryEvent::Removed(id) => assert!(present.remove(id.as_str())),
            _ => {}
        }
    }
    let listed: Vec<String> = registry
        .list()
        .await
        .iter()
        .map(|d| d.id().as_str().to_owned())
        .collect();
    assert_eq!(listed, ["virtual_good"]);
    let mut request = rig.request("again@example.com").await;
    request.authenticator = Some(virtual_id("good"));
    let (seen, result) = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await;
    assert_eq!(seen.last(), Some(&Seen::Completed("virtual_good".into())));
    rig.check_registration(&result.unwrap(), "again@example.com")
        .await;
}

/// `Replugged` events received so far.
fn replugs(events: &std::sync::mpsc::Receiver<ServerEvent>) -> usize {
    events
        .try_iter()
        .filter(|e| matches!(e, ServerEvent::Replugged))
        .count()
}
