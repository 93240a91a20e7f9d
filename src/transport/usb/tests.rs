//! The transport against a fake sysfs tree in a temp dir, with FIFOs as device nodes and a
//! socket pair standing in for the uevent socket; the report IO against a `SOCK_SEQPACKET`
//! pair standing in for a hidraw node.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::symlink;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{CWD, Mode, OFlags};
use rustix::net::{AddressFamily, SocketFlags, SocketType};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::io::{FRAME_LEN, link_error, start_link};
use super::netlink::UeventSocket;
use super::*;
use crate::transport::{LinkError, REPORT_LEN};

/// CTAP 2.2 §11.2.8.2 CTAPHID interface, 64-byte reports.
const FIDO_RDESC: &[u8] = &[
    0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x01, 0x09, 0x20, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08,
    0x95, 0x40, 0x81, 0x02, 0x09, 0x21, 0x15, 0x00, 0x26, 0xFF, 0x00, 0x75, 0x08, 0x95, 0x40, 0x91,
    0x02, 0xC0,
];

/// A mouse: not FIDO.
const MOUSE_RDESC: &[u8] = &[
    0x05, 0x01, 0x09, 0x02, 0xA1, 0x01, 0x09, 0x01, 0xA1, 0x00, 0x05, 0x09, 0x19, 0x01, 0x29, 0x03,
    0x15, 0x00, 0x25, 0x01, 0x95, 0x03, 0x75, 0x01, 0x81, 0x02, 0x95, 0x01, 0x75, 0x05, 0x81, 0x01,
    0xC0, 0xC0,
];

/// The FIDO collection behind a Report ID: FIDO, but not drivable as plain 64-byte reports.
const NUMBERED_FIDO_RDESC: &[u8] = &[
    0x06, 0xD0, 0xF1, 0x09, 0x01, 0xA1, 0x01, 0x85, 0x02, 0x75, 0x08, 0x95, 0x40, 0x81, 0x02, 0x91,
    0x02, 0xC0,
];

const TIMEOUT: Duration = Duration::from_secs(5);

/// A sysfs and /dev in a temp dir, shaped like the kernel's.
struct FakeTree {
    _dir: tempfile::TempDir,
    config: UsbConfig,
}

/// One fake HID device.
struct FakeKey<'a> {
    node: u32,
    port: &'a str,
    bus: u16,
    vendor: u16,
    product: u16,
    rdesc: &'a [u8],
    hid_name: &'a str,
    usb_strings: Option<(&'a str, &'a str)>,
}

impl<'a> FakeKey<'a> {
    fn yubikey(node: u32, port: &'a str) -> Self {
        Self {
            node,
            port,
            bus: 0x0003,
            vendor: 0x1050,
            product: 0x0407,
            rdesc: FIDO_RDESC,
            hid_name: "Yubico YubiKey OTP+FIDO+CCID",
            usb_strings: Some(("Yubico", "YubiKey OTP+FIDO+CCID")),
        }
    }
}

impl FakeTree {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let sys = dir.path().join("sys");
        let dev = dir.path().join("dev");
        std::fs::create_dir_all(sys.join("class/hidraw")).unwrap();
        std::fs::create_dir_all(&dev).unwrap();
        let config = UsbConfig {
            sysfs_root: sys,
            dev_root: dev,
            open_window: Duration::from_secs(2),
        };
        Self { _dir: dir, config }
    }

    /// The kernel devpath of a key's hidraw node, below the sysfs root.
    fn devpath(key: &FakeKey<'_>, seq: u32) -> String {
        format!(
            "/devices/pci0000:00/0000:00:14.0/usb1/{port}/{port}:1.0/{bus:04X}:{vid:04X}:{pid:04X}.{seq:04X}/hidraw/hidraw{n}",
            port = key.port,
            bus = key.bus,
            vid = key.vendor,
            pid = key.product,
            n = key.node,
        )
    }

    /// Creates the sysfs side of a key (no device node yet); returns its devpath.
    fn plug_sysfs(&self, key: &FakeKey<'_>) -> String {
        let devpath = Self::devpath(key, key.node + 1);
        let sys = &self.config.sysfs_root;
        let node_dir = sys.join(devpath.trim_start_matches('/'));
        std::fs::create_dir_all(&node_dir).unwrap();
        let hid_dir = node_dir.parent().unwrap().parent().unwrap();
        std::fs::write(hid_dir.join("report_descriptor"), key.rdesc).unwrap();
        std::fs::write(
            hid_dir.join("uevent"),
            format!(
                "DRIVER=hid-generic\nHID_ID={:04X}:{:08X}:{:08X}\nHID_NAME={}\nHID_UNIQ=\n",
                key.bus, key.vendor, key.product, key.hid_name
            ),
        )
        .unwrap();
        if let Some((manufacturer, product)) = key.usb_strings {
            let usb_dev = hid_dir.parent().unwrap().parent().unwrap();
            std::fs::write(usb_dev.join("manufacturer"), format!("{manufacturer}\n")).unwrap();
            std::fs::write(usb_dev.join("product"), format!("{product}\n")).unwrap();
        }
        symlink("../../", node_dir.join("device")).unwrap();
        symlink(
            format!("../..{devpath}"),
            sys.join(format!("class/hidraw/hidraw{}", key.node)),
        )
        .unwrap();
        devpath
    }

    /// Creates the device node: a FIFO, so that the transport can open it read-write,
    /// non-blocking, and poll it like a hidraw node.
    fn make_node(&self, n: u32) -> PathBuf {
        let path = self.node_path(n);
        rustix::fs::mkfifoat(CWD, &path, Mode::from_raw_mode(0o600)).unwrap();
        path
    }

    fn node_path(&self, n: u32) -> PathBuf {
        self.config.dev_root.join(format!("hidraw{n}"))
    }

    fn plug(&self, key: &FakeKey<'_>) -> String {
        let devpath = self.plug_sysfs(key);
        self.make_node(key.node);
        devpath
    }

    /// Removes a key's class entry, device directory and node, as the kernel does on unplug.
    fn unplug(&self, node: u32, port: &str) {
        let sys = &self.config.sysfs_root;
        std::fs::remove_file(sys.join(format!("class/hidraw/hidraw{node}"))).unwrap();
        std::fs::remove_dir_all(sys.join(format!("devices/pci0000:00/0000:00:14.0/usb1/{port}")))
            .unwrap();
        let _ = std::fs::remove_file(self.node_path(node));
    }
}

fn kernel_msg(action: &str, devpath: &str, node: u32) -> Vec<u8> {
    format!(
        "{action}@{devpath}\0ACTION={action}\0DEVPATH={devpath}\0SUBSYSTEM=hidraw\0\
         MAJOR=241\0MINOR={node}\0DEVNAME=hidraw{node}\0SEQNUM={}\0",
        1000 + node
    )
    .into_bytes()
}

fn seqpacket_pair() -> (OwnedFd, OwnedFd) {
    rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .unwrap()
}

/// A uevent socket fed by the test through the other end of a datagram pair.
fn fake_uevent_socket() -> (UeventSocket, UnixDatagram) {
    let (ours, theirs) = UnixDatagram::pair().unwrap();
    ours.set_nonblocking(true).unwrap();
    (UeventSocket::from_fd(OwnedFd::from(ours)).unwrap(), theirs)
}

async fn next(events: &mut mpsc::Receiver<TransportEvent>) -> TransportEvent {
    timeout(TIMEOUT, events.recv())
        .await
        .expect("no transport event in time")
        .expect("transport stopped")
}

/// Asserts an `Added` event and returns its description and link.
async fn next_added(
    events: &mut mpsc::Receiver<TransportEvent>,
) -> (DeviceDescription, ReportLink) {
    match next(events).await {
        TransportEvent::Added {
            description,
            connection: Connection::Hid(link),
        } => (description, link),
        other => panic!("expected Added, got {other:?}"),
    }
}

const PORT_ID: &str = "usb_pci0000_00_0000_00_14_0_usb1_1_2_1_2_1_0";

#[tokio::test]
async fn enumeration_announces_usable_fido_keys_then_completes() {
    let tree = FakeTree::new();
    tree.plug(&FakeKey::yubikey(0, "1-2"));
    tree.plug(&FakeKey {
        rdesc: MOUSE_RDESC,
        hid_name: "Mouse",
        usb_strings: None,
        ..FakeKey::yubikey(1, "1-3")
    });
    tree.plug(&FakeKey {
        rdesc: NUMBERED_FIDO_RDESC,
        ..FakeKey::yubikey(2, "1-4")
    });
    // A key whose node cannot be opened (no node): skipped, not fatal.
    tree.plug_sysfs(&FakeKey::yubikey(3, "1-5"));
    // Not a hidraw name: ignored.
    std::fs::create_dir(tree.config.sysfs_root.join("class/hidraw/other")).unwrap();

    let (tx, mut rx) = mpsc::channel(16);
    let watcher = Watcher::new(tree.config.clone(), tx);
    let task = tokio::spawn(watcher.run(Err(io::Error::other("no netlink here"))));

    let (description, link) = next_added(&mut rx).await;
    assert_eq!(
        description,
        DeviceDescription {
            id: DeviceId::new(Transport::Usb, "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0"),
            transport: Transport::Usb,
            path: tree.node_path(0).display().to_string(),
            vendor_id: Some(0x1050),
            product_id: Some(0x0407),
            product: Some("YubiKey OTP+FIDO+CCID".to_owned()),
            manufacturer: Some("Yubico".to_owned()),
        }
    );
    assert_eq!(description.id.as_str(), PORT_ID);
    assert!(matches!(
        next(&mut rx).await,
        TransportEvent::EnumerationComplete(Transport::Usb)
    ));
    match next(&mut rx).await {
        TransportEvent::Unavailable { transport, reason } => {
            assert_eq!(transport, Transport::Usb);
            assert!(reason.contains("no netlink here"), "{reason}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Without hotplug the watcher is done; the link it handed out keeps working.
    timeout(TIMEOUT, task).await.unwrap().unwrap();

    // A 64-byte input report written into the node arrives on the link.
    let mut rx_link = link.rx;
    let writer = rustix::fs::open(
        tree.node_path(0),
        OFlags::WRONLY | OFlags::NONBLOCK,
        Mode::empty(),
    )
    .unwrap();
    let report: [u8; REPORT_LEN] = std::array::from_fn(|i| i as u8);
    assert_eq!(rustix::io::write(&writer, &report).unwrap(), REPORT_LEN);
    let got = timeout(TIMEOUT, rx_link.recv()).await.unwrap().unwrap();
    assert_eq!(got.unwrap(), report);
    drop(tree);
}

#[tokio::test]
async fn non_usb_devices_are_identified_by_their_hid_device() {
    let tree = FakeTree::new();
    tree.plug(&FakeKey {
        bus: 0x0006, // BUS_VIRTUAL
        usb_strings: None,
        hid_name: "Virtual FIDO",
        ..FakeKey::yubikey(0, "1-2")
    });
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(Watcher::new(tree.config.clone(), tx).run(Err(io::Error::other("off"))));
    let (description, _link) = next_added(&mut rx).await;
    assert_eq!(
        description.id,
        DeviceId::new(
            Transport::Usb,
            "pci0000:00/0000:00:14.0/usb1/1-2/1-2:1.0/0006:1050:0407.0001"
        )
    );
    assert_eq!(description.product.as_deref(), Some("Virtual FIDO"));
    assert_eq!(description.manufacturer, None);
}

#[tokio::test]
async fn hotplug_add_and_remove_follow_kernel_events() {
    let tree = FakeTree::new();
    let (socket, kernel) = fake_uevent_socket();
    let (tx, mut rx) = mpsc::channel(16);
    let task = tokio::spawn(Watcher::new(tree.config.clone(), tx).run(Ok(socket)));
    assert!(matches!(
        next(&mut rx).await,
        TransportEvent::EnumerationComplete(Transport::Usb)
    ));

    let key = FakeKey::yubikey(4, "1-2");
    let devpath = tree.plug(&key);
    // Noise first: all ignored.
    kernel.send(b"garbage without nul").unwrap();
    kernel.send(b"libudev\0\xfe\xed\xca\xfe").unwrap();
    kernel
        .send(b"add@/devices/pci0000:00/usb1/1-2\0ACTION=add\0DEVPATH=/devices/pci0000:00/usb1/1-2\0SUBSYSTEM=usb\0SEQNUM=1\0")
        .unwrap();
    kernel.send(&kernel_msg("change", &devpath, 4)).unwrap();
    kernel.send(&kernel_msg("add", &devpath, 4)).unwrap();
    let (description, _link) = next_added(&mut rx).await;
    assert_eq!(description.id.as_str(), PORT_ID);
    assert_eq!(description.path, tree.node_path(4).display().to_string());

    // A repeated add for a node already announced changes nothing.
    kernel.send(&kernel_msg("add", &devpath, 4)).unwrap();
    // A remove for a node never announced changes nothing.
    kernel
        .send(&kernel_msg(
            "remove",
            &devpath.replace("hidraw4", "hidraw7"),
            7,
        ))
        .unwrap();

    tree.unplug(4, "1-2");
    kernel.send(&kernel_msg("remove", &devpath, 4)).unwrap();
    match next(&mut rx).await {
        TransportEvent::Removed(id) => assert_eq!(id, description.id),
        other => panic!("expected Removed, got {other:?}"),
    }

    // Re-plugged on the same port as another node number: the same id again.
    let key = FakeKey::yubikey(5, "1-2");
    let devpath = tree.plug(&key);
    kernel.send(&kernel_msg("add", &devpath, 5)).unwrap();
    let (again, _link) = next_added(&mut rx).await;
    assert_eq!(again.id, description.id);
    assert_eq!(again.path, tree.node_path(5).display().to_string());

    // Dropping the receiver stops the watcher.
    drop(rx);
    timeout(TIMEOUT, task).await.unwrap().unwrap();
}

#[tokio::test]
async fn hotplug_add_waits_for_the_node_to_become_openable() {
    let tree = FakeTree::new();
    let (socket, kernel) = fake_uevent_socket();
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(Watcher::new(tree.config.clone(), tx).run(Ok(socket)));
    assert!(matches!(
        next(&mut rx).await,
        TransportEvent::EnumerationComplete(Transport::Usb)
    ));

    // The kernel event arrives before the node is usable (udev still at work).
    let devpath = tree.plug_sysfs(&FakeKey::yubikey(0, "1-2"));
    kernel.send(&kernel_msg("add", &devpath, 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    assert!(rx.try_recv().is_err(), "announced before the node exists");
    tree.make_node(0);
    let (description, _link) = next_added(&mut rx).await;
    assert_eq!(description.id.as_str(), PORT_ID);
}

#[tokio::test]
async fn remove_while_opening_cancels_the_add() {
    let tree = FakeTree::new();
    let (socket, kernel) = fake_uevent_socket();
    let (tx, mut rx) = mpsc::channel(16);
    tokio::spawn(Watcher::new(tree.config.clone(), tx).run(Ok(socket)));
    assert!(matches!(
        next(&mut rx).await,
        TransportEvent::EnumerationComplete(Transport::Usb)
    ));

    // Added in sysfs but the node never becomes openable before the key is pulled.
    let gone = tree.plug_sysfs(&FakeKey::yubikey(0, "1-2"));
    kernel.send(&kernel_msg("add", &gone, 0)).unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    kernel.send(&kernel_msg("remove", &gone, 0)).unwrap();
    // Had the pending open survived, this node would now be announced.
    tree.make_node(0);

    // The next event is about another key: nothing was announced (or removed) for hidraw0.
    let other = tree.plug(&FakeKey::yubikey(1, "1-3"));
    kernel.send(&kernel_msg("add", &other, 1)).unwrap();
    let (description, _link) = next_added(&mut rx).await;
    assert_eq!(description.path, tree.node_path(1).display().to_string());
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(rx.try_recv().is_err());
}

#[tokio::test]
async fn rescan_after_lost_events_reconciles() {
    let tree = FakeTree::new();
    tree.plug(&FakeKey::yubikey(0, "1-2"));
    tree.plug(&FakeKey::yubikey(1, "1-3"));
    let (tx, mut rx) = mpsc::channel(16);
    let mut watcher = Watcher::new(tree.config.clone(), tx);
    watcher.enumerate().await.ok().unwrap();
    let (first, _l0) = next_added(&mut rx).await;
    let (second, _l1) = next_added(&mut rx).await;
    assert!(matches!(
        next(&mut rx).await,
        TransportEvent::EnumerationComplete(Transport::Usb)
    ));

    // While events were lost: hidraw0 was pulled, hidraw1 was pulled and its number reused
    // by a key on another port, and hidraw2 appeared.
    tree.unplug(0, "1-2");
    tree.unplug(1, "1-3");
    tree.plug(&FakeKey::yubikey(1, "1-6"));
    tree.plug(&FakeKey::yubikey(2, "1-7"));

    watcher.resync().await.ok().unwrap();
    let mut removed = Vec::new();
    for _ in 0..2 {
        match next(&mut rx).await {
            TransportEvent::Removed(id) => removed.push(id),
            other => panic!("expected Removed, got {other:?}"),
        }
    }
    assert_eq!(removed, vec![first.id, second.id]);
    let mut added = Vec::new();
    while let Some(joined) = watcher.opening.join_next_with_id().await {
        watcher.on_opened(joined).await.ok().unwrap();
        let (description, _link) = next_added(&mut rx).await;
        added.push(description.id.as_str().to_owned());
    }
    added.sort();
    assert_eq!(
        added,
        vec![
            "usb_pci0000_00_0000_00_14_0_usb1_1_6_1_6_1_0",
            "usb_pci0000_00_0000_00_14_0_usb1_1_7_1_7_1_0"
        ]
    );
    assert!(watcher.pending.is_empty());
    assert_eq!(watcher.present.len(), 2);
}

#[tokio::test]
async fn spawn_with_the_real_system_completes_enumeration_and_stops_on_drop() {
    let (tx, mut rx) = mpsc::channel(64);
    let handle = spawn(UsbConfig::default(), tx).unwrap();
    // Keys plugged into this machine, if any, come first.
    loop {
        match next(&mut rx).await {
            TransportEvent::Added { .. } => {}
            TransportEvent::EnumerationComplete(t) => {
                assert_eq!(t, Transport::Usb);
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    drop(handle);
    // The watcher is gone, and with it the only sender (an Unavailable may precede).
    loop {
        match timeout(TIMEOUT, rx.recv()).await.unwrap() {
            None => break,
            Some(TransportEvent::Unavailable { .. }) => {}
            Some(other) => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn spawn_outside_a_runtime_is_an_error() {
    let (tx, _rx) = mpsc::channel(1);
    assert!(matches!(
        spawn(UsbConfig::default(), tx),
        Err(UsbError::NoRuntime)
    ));
}

#[test]
fn logged_errors_show_their_sources() {
    let err = ProbeError::Open {
        path: PathBuf::from("/dev/hidraw3"),
        source: io::Error::from(rustix::io::Errno::ACCESS),
    };
    assert_eq!(
        Chain(&err).to_string(),
        "opening /dev/hidraw3: Permission denied (os error 13)"
    );
}

#[test]
fn default_config_is_the_real_system() {
    let config = UsbConfig::default();
    assert_eq!(config.sysfs_root, Path::new("/sys"));
    assert_eq!(config.dev_root, Path::new("/dev"));
    assert_eq!(config.open_window, Duration::from_secs(2));
}

#[test]
fn hidraw_names_are_strict() {
    assert_eq!(HidrawName::parse(b"hidraw0").unwrap().index(), 0);
    assert_eq!(
        HidrawName::parse(b"hidraw63").unwrap().to_string(),
        "hidraw63"
    );
    assert_eq!(
        HidrawName::parse(b"hidraw4294967295").unwrap().index(),
        u32::MAX
    );
    for bad in [
        &b""[..],
        b"hidraw",
        b"hidraw00",
        b"hidraw01",
        b"hidraw4294967296",
        b"hidraw-1",
        b"hidraw1 ",
        b"Hidraw1",
        b"hidraw1/../x",
    ] {
        assert_eq!(
            HidrawName::parse(bad),
            None,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
}

// ---- Report IO on a SOCK_SEQPACKET pair ----

/// Our end goes to the link; the peer plays the device (blocking, with a read timeout).
fn link_and_device() -> (ReportLink, UnixDatagram) {
    link_and_device_named("test")
}

fn link_and_device_named(label: &str) -> (ReportLink, UnixDatagram) {
    let (ours, theirs) = seqpacket_pair();
    let link = start_link(ours, label).unwrap();
    let device = UnixDatagram::from(theirs);
    device.set_read_timeout(Some(TIMEOUT)).unwrap();
    (link, device)
}

/// Runs a blocking device-side step off the runtime's threads.
async fn on_device<T: Send + 'static>(
    device: &UnixDatagram,
    step: impl FnOnce(&UnixDatagram) -> T + Send + 'static,
) -> T {
    let device = device.try_clone().unwrap();
    task::spawn_blocking(move || step(&device)).await.unwrap()
}

#[tokio::test]
async fn writes_carry_the_report_id_prefix() {
    let (link, device) = link_and_device();
    let report: [u8; REPORT_LEN] = std::array::from_fn(|i| 0xA0 ^ i as u8);
    link.tx.send(report).await.unwrap();
    let frame = on_device(&device, |d| {
        let mut buf = [0u8; 100];
        let n = d.recv(&mut buf).unwrap();
        buf[..n].to_vec()
    })
    .await;
    assert_eq!(frame.len(), FRAME_LEN);
    assert_eq!(frame[0], 0x00);
    assert_eq!(frame[1..], report);
}

#[tokio::test]
async fn reads_deliver_64_byte_reports_in_order() {
    let (mut link, device) = link_and_device();
    on_device(&device, |d| {
        for i in 0..3u8 {
            d.send(&[i; REPORT_LEN]).unwrap();
        }
    })
    .await;
    for i in 0..3u8 {
        let got = timeout(TIMEOUT, link.rx.recv()).await.unwrap().unwrap();
        assert_eq!(got.unwrap(), [i; REPORT_LEN]);
    }
}

#[tokio::test]
async fn many_writes_arrive_whole_and_in_order_when_the_device_is_slow() {
    let (link, device) = link_and_device();
    const COUNT: usize = 600;
    let sender = tokio::spawn(async move {
        for i in 0..COUNT {
            let mut report = [0u8; REPORT_LEN];
            report[..2].copy_from_slice(&(i as u16).to_be_bytes());
            link.tx.send(report).await.unwrap();
        }
        link
    });
    // Let the socket buffer fill before the device starts reading.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let frames = on_device(&device, |d| {
        let mut buf = [0u8; 100];
        (0..COUNT)
            .map(|_| {
                let n = d.recv(&mut buf).unwrap();
                assert_eq!(n, FRAME_LEN);
                assert_eq!(buf[0], 0x00);
                u16::from_be_bytes([buf[1], buf[2]])
            })
            .collect::<Vec<_>>()
    })
    .await;
    assert_eq!(frames, (0..COUNT as u16).collect::<Vec<_>>());
    drop(sender.await.unwrap());
}

#[tokio::test]
async fn short_report_is_an_error_and_ends_the_link() {
    let (mut link, device) = link_and_device();
    on_device(&device, |d| {
        d.send(&[0x11; 10]).unwrap();
        d.send(&[0x22; REPORT_LEN]).unwrap();
    })
    .await;
    let got = timeout(TIMEOUT, link.rx.recv()).await.unwrap().unwrap();
    assert!(matches!(got, Err(LinkError::BadReport(10))), "{got:?}");
    // Nothing after the error: the reader stopped; the channel ends once the link's writer
    // side is dropped too.
    drop(link.tx);
    assert!(timeout(TIMEOUT, link.rx.recv()).await.unwrap().is_none());
}

#[tokio::test]
async fn oversized_report_is_an_error() {
    let (mut link, device) = link_and_device();
    on_device(&device, |d| d.send(&[0x33; 100]).unwrap()).await;
    let got = timeout(TIMEOUT, link.rx.recv()).await.unwrap().unwrap();
    assert!(matches!(got, Err(LinkError::BadReport(65))), "{got:?}");
}

#[tokio::test]
async fn unplug_gives_disconnected() {
    let (mut link, device) = link_and_device();
    on_device(&device, |d| d.send(&[0x44; REPORT_LEN]).unwrap()).await;
    drop(device);
    let first = timeout(TIMEOUT, link.rx.recv()).await.unwrap().unwrap();
    assert_eq!(first.unwrap(), [0x44; REPORT_LEN]);
    let second = timeout(TIMEOUT, link.rx.recv()).await.unwrap().unwrap();
    assert!(matches!(second, Err(LinkError::Disconnected)), "{second:?}");
    // Writing to the gone device reports it too.
    link.tx.send([0u8; REPORT_LEN]).await.unwrap();
    let third = timeout(TIMEOUT, link.rx.recv()).await.unwrap().unwrap();
    assert!(matches!(third, Err(LinkError::Disconnected)), "{third:?}");
}

#[tokio::test]
async fn dropping_the_link_closes_the_device() {
    let (link, device) = link_and_device();
    drop(link);
    // The device sees end-of-file once both the reader task and the writer thread let go.
    let n = on_device(&device, |d| d.recv(&mut [0u8; 100]).unwrap()).await;
    assert_eq!(n, 0);
}

/// Voluntary context switches of a thread, from its `/proc/.../status`.
fn voluntary_switches(task_dir: &Path) -> u64 {
    let status = std::fs::read_to_string(task_dir.join("status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn an_idle_link_does_not_wake_up() {
    let (link, device) = link_and_device_named("idlelink");
    // Let the writer thread start and park on its channel.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let writer = std::fs::read_dir("/proc/self/task")
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|t| {
            std::fs::read_to_string(t.join("comm")).is_ok_and(|c| c.trim() == "idlelink-write")
        })
        .expect("writer thread");
    let this = Path::new("/proc/thread-self");
    let (writer_before, this_before) = (voluntary_switches(&writer), voluntary_switches(this));
    // This runtime thread sleeps once; a reader that polled would wake it more often.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (writer_after, this_after) = (voluntary_switches(&writer), voluntary_switches(this));
    assert_eq!(
        writer_after, writer_before,
        "the writer thread woke while idle"
    );
    assert!(
        this_after - this_before <= 2,
        "the runtime thread woke {} times while idle",
        this_after - this_before
    );
    drop((link, device));
}

#[test]
fn unplug_errors_map_to_disconnected() {
    for errno in [
        rustix::io::Errno::IO,
        rustix::io::Errno::NODEV,
        rustix::io::Errno::PIPE,
        rustix::io::Errno::CONNRESET,
    ] {
        assert!(matches!(
            link_error(io::Error::from(errno)),
            LinkError::Disconnected
        ));
    }
    match link_error(io::Error::from(rustix::io::Errno::INVAL)) {
        LinkError::Io(err) => assert_eq!(err.raw_os_error(), Some(22)),
        other => panic!("{other:?}"),
    }
}

/// The real kernel socket receives a real kernel event. A synthetic `change` on `/dev/null`'s
/// device (harmless: it only makes the kernel re-announce it) needs root and a writable sysfs;
/// elsewhere the test says why it skips.
#[tokio::test]
async fn the_kernel_uevent_socket_receives_kernel_events() {
    const TRIGGER: &str = "/sys/devices/virtual/mem/null/uevent";
    let socket = match UeventSocket::open_kernel() {
        Ok(socket) => socket,
        Err(err) => {
            eprintln!("skipping: no kernel uevent socket here ({err})");
            return;
        }
    };
    let trigger = match std::fs::OpenOptions::new().write(true).open(TRIGGER) {
        Ok(file) => file,
        Err(err) => {
            eprintln!("skipping: cannot trigger a uevent through {TRIGGER} ({err})");
            return;
        }
    };
    io::Write::write_all(&mut &trigger, b"change").unwrap();
    let mut buf = vec![0u8; MAX_UEVENT_LEN];
    let deadline = tokio::time::Instant::now() + TIMEOUT;
    loop {
        let received = tokio::time::timeout_at(deadline, socket.recv(&mut buf))
            .await
            .expect("the triggered uevent did not arrive")
            .unwrap();
        let Received::Message(len) = received else {
            panic!("unexpected {received:?}");
        };
        let msg = &buf[..len];
        if msg.starts_with(b"change@/devices/virtual/mem/null\0") {
            // Well formed, from the kernel, and not about hidraw.
            assert_eq!(uevent::parse_uevent(msg), Ok(None));
            let text = String::from_utf8_lossy(msg);
            assert!(text.contains("\0SUBSYSTEM=mem\0"), "{text}");
            assert!(text.contains("\0DEVNAME=null\0"), "{text}");
            break;
        }
    }
}
