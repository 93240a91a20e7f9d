//! The virtual transport against virtual keys served in this process on real SOCK_SEQPACKET
//! sockets by `virtkey::socket::serve` (the server the `virtkey` binary runs).

// Helpers outside #[test] functions panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    collections::BTreeSet,
    os::unix::fs::PermissionsExt as _,
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use passkeyd::transport::{
    Connection, DeviceId, LinkError, ReportLink, Transport, TransportEvent,
    virt::{self, VirtualConfig, VirtualTransport},
};
use tokio::sync::mpsc;
use tokio_seqpacket::{UnixSeqpacket, UnixSeqpacketListener};
use virtkey::{
    Config, VirtKey,
    socket::{self, ServeOptions, SocketServer},
};

/// Generous bound for anything that should happen at once (a loaded machine may be slow).
const WAIT: Duration = Duration::from_secs(20);
/// How long to watch for an event that must not come.
const QUIET: Duration = Duration::from_millis(300);

fn serve(dir: &Path, name: &str) -> SocketServer {
    let key = Arc::new(VirtKey::start(Config::default()).unwrap());
    socket::serve(
        key,
        &dir.join(format!("{name}.sock")),
        ServeOptions::default(),
    )
    .unwrap()
}

fn start(dir: &Path) -> (VirtualTransport, mpsc::Receiver<TransportEvent>) {
    let (events_tx, events) = mpsc::channel(64);
    let transport = virt::spawn(
        VirtualConfig {
            dir: dir.to_path_buf(),
        },
        events_tx,
    )
    .unwrap();
    (transport, events)
}

async fn next(events: &mut mpsc::Receiver<TransportEvent>) -> TransportEvent {
    tokio::time::timeout(WAIT, events.recv())
        .await
        .expect("an event in time")
        .expect("the transport is running")
}

async fn assert_quiet(events: &mut mpsc::Receiver<TransportEvent>) {
    if let Ok(Some(event)) = tokio::time::timeout(QUIET, events.recv()).await {
        panic!("unexpected event {event:?}");
    }
}

/// An `Added` event: its id, checked description, and link.
fn added(event: TransportEvent, dir: &Path) -> (DeviceId, ReportLink) {
    let TransportEvent::Added {
        description,
        connection,
    } = event
    else {
        panic!("expected Added, got {event:?}");
    };
    assert_eq!(description.transport, Transport::Virtual);
    let name = description
        .id
        .as_str()
        .strip_prefix("virtual_")
        .unwrap()
        .to_owned();
    assert_eq!(
        PathBuf::from(&description.path),
        dir.join(format!("{name}.sock"))
    );
    assert_eq!(description.product.as_deref(), Some("virtkey"));
    assert_eq!(description.vendor_id, None);
    let Connection::Hid(link) = connection else {
        panic!("a virtual key is a HID device");
    };
    (description.id, link)
}

fn removed(event: TransportEvent) -> DeviceId {
    match event {
        TransportEvent::Removed(id) => id,
        other => panic!("expected Removed, got {other:?}"),
    }
}

fn id(name: &str) -> DeviceId {
    DeviceId::new(Transport::Virtual, name)
}

async fn read(link: &mut ReportLink) -> [u8; 64] {
    tokio::time::timeout(WAIT, link.rx.recv())
        .await
        .expect("a report in time")
        .expect("the link is open")
        .expect("a report")
}

/// CTAPHID_INIT on the broadcast channel (CTAP 2.2 §11.2.9.1.3); checks the reply bytes and
/// returns the allocated channel.
async fn init(link: &mut ReportLink, nonce: [u8; 8]) -> u32 {
    let mut request = [0u8; 64];
    request[..7].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x08]);
    request[7..15].copy_from_slice(&nonce);
    link.tx.send(request).await.unwrap();
    let reply = read(link).await;
    assert_eq!(&reply[..7], &[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x11]);
    assert_eq!(&reply[7..15], &nonce);
    assert_eq!(&reply[19..24], &[0x02, 0x00, 0x03, 0x00, 0x05]);
    u32::from_be_bytes(reply[15..19].try_into().unwrap())
}

/// authenticatorGetInfo over CTAPHID_CBOR; returns the status and CBOR body.
async fn get_info(link: &mut ReportLink, cid: u32) -> (u8, Vec<u8>) {
    let mut request = [0u8; 64];
    request[..4].copy_from_slice(&cid.to_be_bytes());
    request[4..8].copy_from_slice(&[0x90, 0x00, 0x01, 0x04]);
    link.tx.send(request).await.unwrap();
    let first = read(link).await;
    assert_eq!(&first[..4], &cid.to_be_bytes());
    assert_eq!(first[4], 0x90);
    let total = usize::from(u16::from_be_bytes([first[5], first[6]]));
    let mut data = first[7..7 + total.min(57)].to_vec();
    let mut seq = 0;
    while data.len() < total {
        let next = read(link).await;
        assert_eq!(&next[..4], &cid.to_be_bytes());
        assert_eq!(next[4], seq);
        seq += 1;
        let want = (total - data.len()).min(59);
        data.extend_from_slice(&next[5..5 + want]);
    }
    (data[0], data[1..].to_vec())
}

fn aaguid_of(info: &[u8]) -> Vec<u8> {
    let info: ciborium::Value = ciborium::from_reader(info).unwrap();
    let map = info.as_map().unwrap();
    let (_, aaguid) = map
        .iter()
        .find(|(key, _)| key == &ciborium::Value::Integer(3.into()))
        .unwrap();
    aaguid.as_bytes().unwrap().clone()
}

#[tokio::test]
async fn three_keys_present_at_start_are_discovered_and_answer_independently() {
    let dir = tempfile::tempdir().unwrap();
    let servers = [
        serve(dir.path(), "alpha"),
        serve(dir.path(), "bravo"),
        serve(dir.path(), "charlie"),
    ];
    // Not keys: another suffix, a hidden socket name, a regular file named like a socket.
    std::fs::write(dir.path().join("notes.txt"), b"x").unwrap();
    std::fs::write(dir.path().join("plain.sock"), b"x").unwrap();

    let (_transport, mut events) = start(dir.path());
    let mut links = Vec::new();
    for _ in 0..3 {
        links.push(added(next(&mut events).await, dir.path()));
    }
    assert!(matches!(
        next(&mut events).await,
        TransportEvent::EnumerationComplete(Transport::Virtual)
    ));
    let ids: BTreeSet<_> = links.iter().map(|(id, _)| id.as_str().to_owned()).collect();
    assert_eq!(
        ids,
        BTreeSet::from([
            "virtual_alpha".to_owned(),
            "virtual_bravo".to_owned(),
            "virtual_charlie".to_owned()
        ])
    );

    // All three INITs in flight at once; each key answers its own nonce.
    let mut nonces = Vec::new();
    for (index, (_, link)) in links.iter_mut().enumerate() {
        let nonce = [index as u8 + 1; 8];
        let mut request = [0u8; 64];
        request[..7].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x08]);
        request[7..15].copy_from_slice(&nonce);
        link.tx.send(request).await.unwrap();
        nonces.push(nonce);
    }
    for ((_, link), nonce) in links.iter_mut().zip(nonces) {
        let reply = read(link).await;
        assert_eq!(&reply[..7], &[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x11]);
        assert_eq!(&reply[7..15], &nonce);
    }
    assert_quiet(&mut events).await;
    drop(servers);
}

#[tokio::test]
async fn a_key_plugged_while_running_is_added_answers_and_is_removed_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_transport, mut events) = start(dir.path());
    assert!(matches!(
        next(&mut events).await,
        TransportEvent::EnumerationComplete(Transport::Virtual)
    ));

    let server = serve(dir.path(), "late");
    let (device, mut link) = added(next(&mut events).await, dir.path());
    assert_eq!(device, id("late"));

    let cid = init(&mut link, [0xc0, 0xff, 0xee, 0x00, 0x01, 0x02, 0x03, 0x04]).await;
    assert_ne!(cid, 0xffff_ffff);
    let (status, info) = get_info(&mut link, cid).await;
    assert_eq!(status, 0x00);
    assert_eq!(aaguid_of(&info), virtkey::AAGUID.to_vec());

    // Unplug: the socket file goes and the connection closes; one Removed for both.
    drop(server);
    assert_eq!(removed(next(&mut events).await), id("late"));
    assert_quiet(&mut events).await;
    // The link is closed (possibly after a Disconnected error).
    let end = tokio::time::timeout(WAIT, link.rx.recv()).await.unwrap();
    assert!(matches!(end, None | Some(Err(LinkError::Disconnected))));

    // Plugged again under the same name: the same id comes back.
    let _server = serve(dir.path(), "late");
    let (again, _link) = added(next(&mut events).await, dir.path());
    assert_eq!(again, id("late"));
}

/// Binds a raw listener elsewhere and renames it into `dir`, as virtkey does.
fn raw_listener(dir: &Path, side: &Path, name: &str) -> UnixSeqpacketListener {
    let temp = side.join(format!("{name}.sock"));
    let listener = UnixSeqpacketListener::bind(&temp).unwrap();
    std::fs::rename(&temp, dir.join(format!("{name}.sock"))).unwrap();
    listener
}

async fn accept(listener: &mut UnixSeqpacketListener) -> UnixSeqpacket {
    tokio::time::timeout(WAIT, listener.accept())
        .await
        .unwrap()
        .unwrap()
}

#[tokio::test]
async fn end_of_stream_is_a_removal_and_touching_the_socket_replugs() {
    let dir = tempfile::tempdir().unwrap();
    let side = tempfile::tempdir().unwrap();
    let (_transport, mut events) = start(dir.path());
    assert!(matches!(
        next(&mut events).await,
        TransportEvent::EnumerationComplete(Transport::Virtual)
    ));

    let mut listener = raw_listener(dir.path(), side.path(), "raw");
    let conn = accept(&mut listener).await;
    let (device, mut link) = added(next(&mut events).await, dir.path());
    assert_eq!(device, id("raw"));

    // Reports pass both ways unchanged.
    let report = [0x42u8; 64];
    conn.send(&report).await.unwrap();
    assert_eq!(read(&mut link).await, report);
    link.tx.send([0x17; 64]).await.unwrap();
    let mut buffer = [0u8; 128];
    let info = tokio::time::timeout(WAIT, conn.recv(&mut buffer))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(info.bytes_read(), 64);
    assert_eq!(buffer[..64], [0x17; 64]);

    // The server closes the connection; the socket file stays.
    drop(conn);
    assert!(matches!(
        tokio::time::timeout(WAIT, link.rx.recv()).await.unwrap(),
        Some(Err(LinkError::Disconnected)) | None
    ));
    assert_eq!(removed(next(&mut events).await), id("raw"));
    assert_quiet(&mut events).await;

    // Touching the socket (IN_ATTRIB) connects again.
    let path = dir.path().join("raw.sock");
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    let conn = accept(&mut listener).await;
    let (again, mut link) = added(next(&mut events).await, dir.path());
    assert_eq!(again, id("raw"));

    // A message that is not a report ends the link with BadReport, and the key is removed.
    conn.send(&[0x01; 10]).await.unwrap();
    let error = tokio::time::timeout(WAIT, link.rx.recv()).await.unwrap();
    assert!(
        matches!(error, Some(Err(LinkError::BadReport(10)))),
        "{error:?}"
    );
    assert_eq!(removed(next(&mut events).await), id("raw"));
    assert!(link.rx.recv().await.is_none());
}

#[tokio::test]
async fn a_stale_socket_is_skipped_and_a_dropped_link_is_a_removal() {
    let dir = tempfile::tempdir().unwrap();
    let side = tempfile::tempdir().unwrap();
    // A socket file nobody listens on any more.
    drop(raw_listener(dir.path(), side.path(), "stale"));
    assert!(dir.path().join("stale.sock").exists());
    let server = serve(dir.path(), "live");

    let (_transport, mut events) = start(dir.path());
    let (device, link) = added(next(&mut events).await, dir.path());
    assert_eq!(device, id("live"));
    assert!(matches!(
        next(&mut events).await,
        TransportEvent::EnumerationComplete(Transport::Virtual)
    ));

    // The device actor drops its link: the connection closes and the key is reported gone.
    drop(link);
    assert_eq!(removed(next(&mut events).await), id("live"));
    drop(server);
    assert_quiet(&mut events).await;
}

#[tokio::test]
async fn a_missing_directory_is_created() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("run").join("keys");
    let (_transport, mut events) = start(&dir);
    assert!(matches!(
        next(&mut events).await,
        TransportEvent::EnumerationComplete(Transport::Virtual)
    ));
    assert!(dir.is_dir());
    let _server = serve(&dir, "fresh");
    assert_eq!(added(next(&mut events).await, &dir).0, id("fresh"));
}

#[tokio::test]
async fn unavailable_until_the_directory_can_be_created() {
    let base = tempfile::tempdir().unwrap();
    // A regular file where a parent directory should be.
    let blocker = base.path().join("blocker");
    std::fs::write(&blocker, b"x").unwrap();
    let dir = blocker.join("keys");
    let (_transport, mut events) = start(&dir);
    match next(&mut events).await {
        TransportEvent::Unavailable { transport, reason } => {
            assert_eq!(transport, Transport::Virtual);
            assert!(reason.contains("blocker"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    assert_quiet(&mut events).await;

    // The obstacle goes: the transport notices through its watch of the base directory.
    std::fs::remove_file(&blocker).unwrap();
    std::fs::create_dir(&blocker).unwrap();
    assert!(matches!(
        next(&mut events).await,
        TransportEvent::EnumerationComplete(Transport::Virtual)
    ));
    assert!(dir.is_dir());
}

#[tokio::test]
async fn a_deleted_directory_removes_its_keys_and_is_recreated() {
    let base = tempfile::tempdir().unwrap();
    let dir = base.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let side = tempfile::tempdir().unwrap();
    let mut listener = raw_listener(&dir, side.path(), "held");
    let (_transport, mut events) = start(&dir);
    let _conn = accept(&mut listener).await;
    assert_eq!(added(next(&mut events).await, &dir).0, id("held"));
    assert!(matches!(
        next(&mut events).await,
        TransportEvent::EnumerationComplete(Transport::Virtual)
    ));

    // Moving the socket out is an unplug even though its connection stays open.
    std::fs::rename(dir.join("held.sock"), side.path().join("held.sock")).unwrap();
    assert_eq!(removed(next(&mut events).await), id("held"));

    std::fs::remove_dir(&dir).unwrap();
    assert!(matches!(
        next(&mut events).await,
        TransportEvent::EnumerationComplete(Transport::Virtual)
    ));
    assert!(dir.is_dir());
}

#[tokio::test]
async fn dropping_the_transport_closes_its_links() {
    let dir = tempfile::tempdir().unwrap();
    let _server = serve(dir.path(), "k");
    let (transport, mut events) = start(dir.path());
    let (_, mut link) = added(next(&mut events).await, dir.path());
    drop(transport);
    let end = tokio::time::timeout(WAIT, link.rx.recv()).await.unwrap();
    assert!(end.is_none(), "{end:?}");
}
