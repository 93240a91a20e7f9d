//! The NFC transport against a real pcscd: virtkey's firmware is the card in vsmartcard's
//! virtual reader (vpcd, TCP 35963).
//!
//! `PASSKEYD_PCSCD=1` says pcscd runs with the vpcd reader (`scripts/start-pcscd`); the test
//! then requires it. Without the variable the pcscd test only says that it skipped. The test of
//! an absent pcscd runs always: it points the PC/SC client library at a socket of its own.
// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod vpcd_lock;

use std::{
    fs,
    path::PathBuf,
    process::Command,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use ciborium::Value;
use passkeyd::transport::{
    ApduLink, ApduRequest, Connection, DeviceId, LinkError, Transport, TransportEvent,
    nfc::{self, NfcConfig},
};
use tokio::sync::{mpsc, oneshot};
use virtkey::{Config, FIDO_AID, VirtKey, vpcd};

/// Where vpcd listens for the card (Debian's `/etc/reader.conf.d/vpcd`, `CHANNELID 0x8C7B`).
const VPCD_ADDR: &str = "127.0.0.1:35963";
/// The reader vpcd's first slot shows up as.
const READER: &str = "Virtual PCD 00 00";
/// pcscd polls vpcd for the card about every 400 ms; this leaves room on a loaded machine.
const EVENT_TIMEOUT: Duration = Duration::from_secs(15);
const APDU_TIMEOUT: Duration = Duration::from_secs(15);

/// The next event, failing the test after `EVENT_TIMEOUT`.
async fn next_event(events: &mut mpsc::Receiver<TransportEvent>) -> TransportEvent {
    tokio::time::timeout(EVENT_TIMEOUT, events.recv())
        .await
        .expect("no transport event in time")
        .expect("the transport closed its events")
}

/// Waits for the card in the vpcd reader, skipping events of other readers.
async fn card_added(events: &mut mpsc::Receiver<TransportEvent>) -> (DeviceId, ApduLink) {
    loop {
        match next_event(events).await {
            TransportEvent::Added {
                description,
                connection: Connection::Apdu(link),
            } if description.path == READER => {
                assert_eq!(description.transport, Transport::Nfc);
                assert_eq!(description.id.as_str(), "nfc_Virtual_PCD_00_00");
                return (description.id, link);
            }
            other => eprintln!("ignoring {other:?}"),
        }
    }
}

async fn card_removed(events: &mut mpsc::Receiver<TransportEvent>, id: &DeviceId) {
    loop {
        match next_event(events).await {
            TransportEvent::Removed(removed) if &removed == id => return,
            other => eprintln!("ignoring {other:?}"),
        }
    }
}

async fn transmit(link: &ApduLink, apdu: &[u8]) -> Result<Vec<u8>, LinkError> {
    let (reply, response) = oneshot::channel();
    link.tx
        .send(ApduRequest {
            apdu: apdu.to_vec(),
            reply,
        })
        .await
        .map_err(|_| LinkError::Disconnected)?;
    tokio::time::timeout(APDU_TIMEOUT, response)
        .await
        .expect("no APDU response in time")
        .map_err(|_| LinkError::Disconnected)?
}

fn select_apdu() -> Vec<u8> {
    let mut apdu = vec![0x00, 0xa4, 0x04, 0x00, 0x08];
    apdu.extend_from_slice(&FIDO_AID);
    apdu.push(0x00);
    apdu
}

/// virtkey's card in vpcd's reader, served on a thread until stopped.
struct VirtualCard {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<(), vpcd::VpcdError>>,
}

impl VirtualCard {
    fn insert(key: &Arc<VirtKey>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (key, stop) = (Arc::clone(key), Arc::clone(&stop));
            thread::spawn(move || vpcd::serve(key, VPCD_ADDR, &stop))
        };
        Self { stop, thread }
    }

    fn remove(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn virtkey_through_pcscd_and_vpcd() {
    match std::env::var("PASSKEYD_PCSCD").as_deref() {
        Ok("1") => {}
        _ => {
            eprintln!(
                "skipped: set PASSKEYD_PCSCD=1 with pcscd and vsmartcard-vpcd running \
                 (scripts/start-pcscd)"
            );
            return;
        }
    }
    // tests/device_nfc.rs serves its card on the same port.
    let _vpcd = vpcd_lock::acquire().await;
    let (events_tx, mut events) = mpsc::channel(16);
    let transport = nfc::spawn(NfcConfig::default(), events_tx).unwrap();
    // The readers are there (vpcd's two slots), empty: enumeration ends without a card.
    match next_event(&mut events).await {
        TransportEvent::EnumerationComplete(Transport::Nfc) => {}
        TransportEvent::Unavailable { reason, .. } => {
            panic!("PASSKEYD_PCSCD=1 but pcscd does not answer: {reason}")
        }
        other => panic!("expected EnumerationComplete, got {other:?}"),
    }

    let key = Arc::new(VirtKey::start(Config::default()).unwrap());
    let card = VirtualCard::insert(&key);
    let (id, link) = card_added(&mut events).await;

    // The transport hands out the card as it is; the FIDO applet answers once selected.
    assert_eq!(
        transmit(&link, &select_apdu()).await.unwrap(),
        b"U2F_V2\x90\x00".to_vec()
    );
    // authenticatorGetInfo in NFCCTAP_MSG (CTAP 2.2 §11.3.4): status 00, CBOR, SW 9000.
    let response = transmit(&link, &[0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00])
        .await
        .unwrap();
    let (data, sw) = response.split_at(response.len() - 2);
    assert_eq!(sw, &[0x90, 0x00]);
    assert_eq!(data[0], 0x00, "CTAP2_OK");
    let info: Value = ciborium::from_reader(&data[1..]).unwrap();
    let aaguid = info
        .as_map()
        .unwrap()
        .iter()
        .find(|(k, _)| k == &Value::Integer(0x03.into()))
        .map(|(_, v)| v.clone());
    assert_eq!(aaguid, Some(Value::Bytes(key.aaguid().to_vec())));

    // The card leaves the reader: removed, and its link closes.
    card.remove();
    card_removed(&mut events, &id).await;
    tokio::time::timeout(EVENT_TIMEOUT, link.tx.closed())
        .await
        .expect("the removed card's link stayed open");
    assert!(matches!(
        transmit(&link, &select_apdu()).await,
        Err(LinkError::Disconnected)
    ));

    // Tapped again: the same id, a new link, and the applet must be selected again.
    let card = VirtualCard::insert(&key);
    let (again, link) = card_added(&mut events).await;
    assert_eq!(again, id);
    assert_eq!(
        transmit(&link, &select_apdu()).await.unwrap(),
        b"U2F_V2\x90\x00".to_vec()
    );

    // Shutdown wakes the monitor out of its wait on pcscd at once, and lets the card go.
    let start = Instant::now();
    drop(transport);
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "{:?}",
        start.elapsed()
    );
    tokio::time::timeout(EVENT_TIMEOUT, link.tx.closed())
        .await
        .expect("the card's link stayed open after shutdown");
    card.remove();
}

/// Set in the child process of [`absent_pcscd_is_reported_unavailable`].
const CHILD: &str = "PASSKEYD_NFC_TEST_CHILD";

/// Voluntary context switches of this process's `nfc-monitor` thread.
fn monitor_switches() -> u64 {
    for task in fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        if fs::read_to_string(task.join("comm")).unwrap().trim() == "nfc-monitor" {
            let status = fs::read_to_string(task.join("status")).unwrap();
            let line = status
                .lines()
                .find(|line| line.starts_with("voluntary_ctxt_switches:"))
                .unwrap();
            return line.split_whitespace().nth(1).unwrap().parse().unwrap();
        }
    }
    panic!("no nfc-monitor thread");
}

#[test]
fn absent_pcscd_is_reported_unavailable() {
    let Some(socket) = std::env::var_os(CHILD).map(PathBuf::from) else {
        // pcsc-lite reads PCSCLITE_CSOCK_NAME once per process: run this test again in a
        // child whose client library looks for pcscd in a directory of its own.
        let dir = std::env::temp_dir().join(format!("passkeyd-nfc-test-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        let socket = dir.join("pcscd").join("pcscd.comm");
        let output = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "absent_pcscd_is_reported_unavailable"])
            .env(CHILD, &socket)
            .env("PCSCLITE_CSOCK_NAME", &socket)
            .output()
            .unwrap();
        fs::remove_dir_all(&dir).unwrap();
        assert!(
            output.status.success(),
            "the child test failed: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
        // It ran the test rather than filtering it out.
        assert!(String::from_utf8_lossy(&output.stdout).contains("1 passed"));
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap();
    runtime.block_on(async {
        let (events_tx, mut events) = mpsc::channel(16);
        let transport = nfc::spawn(
            NfcConfig {
                first_retry: Duration::from_millis(20),
                max_retry: Duration::from_millis(40),
            },
            events_tx,
        )
        .unwrap();
        match next_event(&mut events).await {
            TransportEvent::Unavailable { transport, reason } => {
                assert_eq!(transport, Transport::Nfc);
                assert!(reason.starts_with("PC/SC: "), "{reason}");
            }
            other => panic!("expected Unavailable, got {other:?}"),
        }
        // No socket: the monitor sleeps on inotify, with no timer (the retry pause is 20 ms).
        tokio::time::sleep(Duration::from_millis(100)).await;
        let before = monitor_switches();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(monitor_switches(), before, "the monitor woke without cause");

        // Something appears where the socket goes (not a pcscd): the monitor tries again at
        // once, then, as the socket exists, on its timer; it does not report itself again.
        fs::create_dir(socket.parent().unwrap()).unwrap();
        fs::write(&socket, b"").unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while monitor_switches() <= before && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(
            monitor_switches() > before,
            "the monitor did not notice the socket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(events.try_recv().is_err());

        let start = Instant::now();
        drop(transport);
        assert!(
            start.elapsed() < Duration::from_millis(500),
            "{:?}",
            start.elapsed()
        );
        // The monitor ended: the events channel is closed.
        assert!(events.recv().await.is_none());
    });
}
