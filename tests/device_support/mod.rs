//! Test rig for the device layer: in-process virtual keys (`virtkey`, the Trussed firmware)
//! bridged to the transport contract's links, scripted fake links that play a misbehaving
//! key, and a registry fed by a test "transport".
//!
//! The bridges stand in for the USB, NFC and virtual-socket transports: a thread per HID key
//! reads the key's reports with a short timeout (tests only; the daemon's transports wait on
//! file descriptors), and an NFC key's APDUs run on tokio's blocking pool.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../../crates/ctap/tests/support/mod.rs"]
pub mod ctap_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use ciborium::Value;
use ctap::ctaphid::{self, Cid, Command as HidCommand, Message, PushOutcome, Reassembler};
use passkeyd::device::{
    DeviceConfig, DeviceInfo, Registry, RegistryEvent, RegistryHandle, Subscription,
};
use passkeyd::transport::{
    ApduLink, ApduRequest, Connection, DeviceDescription, DeviceId, LINK_CAPACITY, LinkError,
    REPORT_LEN, Report, ReportLink, Transport, TransportEvent,
};
use tokio::sync::{broadcast, mpsc, oneshot};
use tokio::time::{Instant, timeout};
use virtkey::{Config, VirtKey};

/// Ample time for steps expected to succeed on a loaded two-core machine with a debug build
/// of the firmware.
pub const GENEROUS: Duration = Duration::from_secs(60);

/// How long a bridge thread waits for a report before it checks whether it was unplugged.
const BRIDGE_POLL: Duration = Duration::from_millis(20);

/// A deadline `GENEROUS` from now.
pub fn generous_deadline() -> Instant {
    Instant::now() + GENEROUS
}

// ---- registry rig ----

/// A registry fed by a test transport.
pub struct Rig {
    pub registry: RegistryHandle,
    pub transport: mpsc::Sender<TransportEvent>,
    pub events: broadcast::Receiver<RegistryEvent>,
}

impl Rig {
    pub async fn start() -> Self {
        Self::with_config(DeviceConfig::default()).await
    }

    pub async fn with_config(config: DeviceConfig) -> Self {
        let (transport, transport_rx) = mpsc::channel(16);
        let registry = Registry::spawn(transport_rx, config);
        let Subscription { devices, events } = registry.subscribe().await.unwrap();
        assert!(devices.is_empty());
        Self {
            registry,
            transport,
            events,
        }
    }

    /// Tells the registry about a device.
    pub async fn plug(&self, name: &str, transport: Transport, connection: Connection) {
        self.transport
            .send(TransportEvent::Added {
                description: description(name, transport),
                connection,
            })
            .await
            .unwrap();
    }

    /// Tells the registry a device is gone.
    pub async fn unplug(&self, name: &str, transport: Transport) {
        self.transport
            .send(TransportEvent::Removed(DeviceId::new(transport, name)))
            .await
            .unwrap();
    }

    /// The next event that is not a busy/info change.
    pub async fn next_plug_event(&mut self) -> RegistryEvent {
        loop {
            let event = timeout(GENEROUS, self.events.recv())
                .await
                .expect("a registry event")
                .unwrap();
            if !matches!(event, RegistryEvent::Changed(_)) {
                return event;
            }
        }
    }

    /// Waits for the `Added` event of one device.
    pub async fn added(&mut self) -> DeviceInfo {
        match self.next_plug_event().await {
            RegistryEvent::Added(device) => device,
            other => panic!("expected Added, got {other:?}"),
        }
    }

    /// Waits for a `Removed` event.
    pub async fn removed(&mut self) -> DeviceId {
        match self.next_plug_event().await {
            RegistryEvent::Removed(id) => id,
            other => panic!("expected Removed, got {other:?}"),
        }
    }
}

pub fn description(name: &str, transport: Transport) -> DeviceDescription {
    DeviceDescription {
        id: DeviceId::new(transport, name),
        transport,
        path: format!("test:{name}"),
        vendor_id: None,
        product_id: None,
        product: Some(format!("test key {name}")),
        manufacturer: None,
    }
}

// ---- virtual keys bridged to links ----

/// A virtual key seen through a [`ReportLink`], as the virtual-socket or USB transport would
/// hand it over.
pub struct HidBridge {
    pub key: Arc<VirtKey>,
    unplugged: Arc<AtomicBool>,
    get_info_requests: Arc<AtomicUsize>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl HidBridge {
    /// Starts a key and its bridge.
    pub fn start(config: Config) -> (Self, Connection) {
        let key = Arc::new(VirtKey::start(config).unwrap());
        Self::attach(key)
    }

    /// Bridges an already running key.
    pub fn attach(key: Arc<VirtKey>) -> (Self, Connection) {
        let (host_tx, mut host_rx) = mpsc::channel::<Report>(LINK_CAPACITY);
        let (device_tx, device_rx) = mpsc::channel(LINK_CAPACITY);
        let unplugged = Arc::new(AtomicBool::new(false));
        let get_info_requests = Arc::new(AtomicUsize::new(0));

        // Host → key. Counts getInfo requests: an initialization packet of CTAPHID_CBOR whose
        // first payload byte is the getInfo command.
        let writer_key = Arc::clone(&key);
        let counter = Arc::clone(&get_info_requests);
        let writer_unplugged = Arc::clone(&unplugged);
        tokio::spawn(async move {
            while let Some(report) = host_rx.recv().await {
                if writer_unplugged.load(Ordering::SeqCst) {
                    break;
                }
                if report[4] == 0x90 && report[7] == 0x04 {
                    counter.fetch_add(1, Ordering::SeqCst);
                }
                if writer_key.write_report(&report).is_err() {
                    break;
                }
            }
        });

        // Key → host.
        let reader_key = Arc::clone(&key);
        let reader_unplugged = Arc::clone(&unplugged);
        let reader = std::thread::spawn(move || {
            while !reader_unplugged.load(Ordering::SeqCst) {
                match reader_key.read_report(BRIDGE_POLL) {
                    Ok(Some(report)) => {
                        if device_tx.blocking_send(Ok(report)).is_err() {
                            break;
                        }
                    }
                    Ok(None) => {}
                    Err(_) => break,
                }
            }
            // Dropping `device_tx` closes the link: the device is gone.
        });

        let bridge = Self {
            key,
            unplugged,
            get_info_requests,
            reader: Some(reader),
        };
        let connection = Connection::Hid(ReportLink {
            tx: host_tx,
            rx: device_rx,
        });
        (bridge, connection)
    }

    /// Pulls the key out: the link closes within one bridge poll.
    pub fn unplug(&mut self) {
        self.unplugged.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            reader.join().unwrap();
        }
    }

    /// How many getInfo requests went to the key.
    pub fn get_info_requests(&self) -> usize {
        self.get_info_requests.load(Ordering::SeqCst)
    }
}

impl Drop for HidBridge {
    fn drop(&mut self) {
        self.unplugged.store(true, Ordering::SeqCst);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
    }
}

/// A virtual key seen through an [`ApduLink`], as the NFC transport would hand a card over.
pub struct ApduBridge {
    pub key: Arc<VirtKey>,
    unplug: Option<oneshot::Sender<()>>,
}

impl ApduBridge {
    pub fn start(config: Config) -> (Self, Connection) {
        let key = Arc::new(VirtKey::start(config).unwrap());
        let (tx, mut rx) = mpsc::channel::<ApduRequest>(4);
        let (unplug, mut unplugged) = oneshot::channel::<()>();
        let card = Arc::clone(&key);
        tokio::spawn(async move {
            loop {
                let request = tokio::select! {
                    request = rx.recv() => request,
                    _ = &mut unplugged => None,
                };
                let Some(ApduRequest { apdu, reply }) = request else {
                    break;
                };
                let card = Arc::clone(&card);
                let response = tokio::task::spawn_blocking(move || {
                    card.transmit_apdu(&apdu, GENEROUS)
                        .map_err(|e| LinkError::Pcsc(e.to_string()))
                })
                .await
                .unwrap();
                let _ = reply.send(response);
            }
            // Dropping `rx` closes the link: the card is gone.
        });
        let bridge = Self {
            key,
            unplug: Some(unplug),
        };
        (bridge, Connection::Apdu(ApduLink { tx }))
    }

    /// Takes the card away.
    pub fn unplug(&mut self) {
        if let Some(unplug) = self.unplug.take() {
            let _ = unplug.send(());
        }
    }
}

// ---- scripted fake HID key ----

/// The far end of a [`ReportLink`], played by the test: it sees what the host writes and
/// injects what the "key" answers.
pub struct FakeHid {
    pub written: mpsc::Receiver<Report>,
    pub inject: mpsc::Sender<Result<Report, LinkError>>,
}

/// The channel the fake key allocates by default.
pub const FAKE_CID: Cid = Cid::new(0x0102_0304);

/// CTAPHID capabilities of the fake key: WINK and CBOR, with CTAPHID_MSG.
pub const FAKE_CAPABILITIES: u8 = 0x05;

pub fn fake_hid() -> (Connection, FakeHid) {
    let (host_tx, written) = mpsc::channel(LINK_CAPACITY);
    let (inject, device_rx) = mpsc::channel(LINK_CAPACITY);
    (
        Connection::Hid(ReportLink {
            tx: host_tx,
            rx: device_rx,
        }),
        FakeHid { written, inject },
    )
}

impl FakeHid {
    /// The next report the host wrote.
    pub async fn next_report(&mut self) -> Report {
        timeout(GENEROUS, self.written.recv())
            .await
            .expect("the host writes")
            .expect("the link is open")
    }

    /// The next whole message the host wrote (reassembled on the CID of its first report).
    pub async fn next_message(&mut self) -> Message {
        let first = self.next_report().await;
        let cid = Cid::from_bytes(first[..4].try_into().unwrap());
        let mut rx = Reassembler::new(cid, ctaphid::MAX_MESSAGE_LEN);
        let mut outcome = rx.push(&first).unwrap();
        loop {
            match outcome {
                PushOutcome::Complete(message) => return message,
                PushOutcome::NeedMore => outcome = rx.push(&self.next_report().await).unwrap(),
                PushOutcome::Foreign(other) => panic!("host wrote on two channels ({other})"),
            }
        }
    }

    /// Answers the next CTAPHID_INIT with channel `cid`; returns the nonce.
    pub async fn answer_init(&mut self, cid: Cid) -> [u8; 8] {
        let request = self.next_message().await;
        assert_eq!(request.cid, Cid::BROADCAST);
        assert_eq!(request.cmd, HidCommand::Init);
        let nonce: [u8; 8] = request.payload.as_slice().try_into().unwrap();
        self.send(Cid::BROADCAST, HidCommand::Init, &init_payload(&nonce, cid))
            .await;
        nonce
    }

    /// Expects a CTAPHID_CBOR request on `cid` and returns its payload.
    pub async fn expect_cbor(&mut self, cid: Cid) -> Vec<u8> {
        let request = self.next_message().await;
        assert_eq!((request.cid, request.cmd), (cid, HidCommand::Cbor));
        request.payload
    }

    /// Plays the probe of a fresh key: INIT, then getInfo.
    pub async fn probe(&mut self, cid: Cid) {
        self.answer_init(cid).await;
        assert_eq!(self.expect_cbor(cid).await, [0x04]);
        self.send(cid, HidCommand::Cbor, &get_info_response()).await;
    }

    /// Sends a message as the key would.
    pub async fn send(&self, cid: Cid, cmd: HidCommand, payload: &[u8]) {
        for report in ctaphid::fragment(cid, cmd, payload, ctaphid::MAX_MESSAGE_LEN).unwrap() {
            self.inject_report(report).await;
        }
    }

    pub async fn inject_report(&self, report: Report) {
        self.inject.send(Ok(report)).await.unwrap();
    }

    pub async fn keepalive(&self, cid: Cid, status: u8) {
        self.send(cid, HidCommand::Keepalive, &[status]).await;
    }

    pub async fn error(&self, cid: Cid, code: u8) {
        self.send(cid, HidCommand::Error, &[code]).await;
    }
}

/// A CTAPHID_INIT answer: nonce, CID, protocol 2, version 1.2.3, [`FAKE_CAPABILITIES`].
pub fn init_payload(nonce: &[u8; 8], cid: Cid) -> Vec<u8> {
    let mut payload = nonce.to_vec();
    payload.extend_from_slice(&cid.to_bytes());
    payload.extend_from_slice(&[0x02, 0x01, 0x02, 0x03, FAKE_CAPABILITIES]);
    payload
}

/// The AAGUID the fake key reports.
pub const FAKE_AAGUID: [u8; 16] = [0xA5; 16];

/// A minimal CTAP2 getInfo answer: CTAP2_OK, {1: ["FIDO_2_0"], 3: FAKE_AAGUID, 6: [1]}.
pub fn get_info_response() -> Vec<u8> {
    let map = Value::Map(vec![
        (
            Value::Integer(1.into()),
            Value::Array(vec![Value::Text("FIDO_2_0".into())]),
        ),
        (Value::Integer(3.into()), Value::Bytes(FAKE_AAGUID.to_vec())),
        (
            Value::Integer(6.into()),
            Value::Array(vec![Value::Integer(1.into())]),
        ),
    ]);
    ok_response(&map)
}

/// CTAP2_OK followed by `body` as CBOR.
pub fn ok_response(body: &Value) -> Vec<u8> {
    let mut out = vec![0x00];
    ciborium::into_writer(body, &mut out).unwrap();
    out
}

/// A getPINRetries answer: CTAP2_OK, {3: retries}.
pub fn pin_retries_response(retries: u8) -> Vec<u8> {
    ok_response(&Value::Map(vec![(
        Value::Integer(3.into()),
        Value::Integer(retries.into()),
    )]))
}

/// The getPINRetries request the device layer sends: clientPIN {2: 1}.
pub const PIN_RETRIES_REQUEST: [u8; 4] = [0x06, 0xA1, 0x02, 0x01];

/// A raw 64-byte report from its first bytes, zero padded.
pub fn report(head: &[u8]) -> Report {
    let mut report = [0u8; REPORT_LEN];
    report[..head.len()].copy_from_slice(head);
    report
}

// ---- scripted fake NFC card ----

/// The far end of an [`ApduLink`], played by the test.
pub struct FakeCard {
    pub requests: mpsc::Receiver<ApduRequest>,
}

pub fn fake_card() -> (Connection, FakeCard) {
    let (tx, requests) = mpsc::channel(4);
    (Connection::Apdu(ApduLink { tx }), FakeCard { requests })
}

/// The SELECT of the FIDO applet, as the device layer sends it.
pub const SELECT: [u8; 14] = [
    0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01, 0x00,
];

impl FakeCard {
    /// The next APDU and the means to answer it.
    pub async fn next(&mut self) -> (Vec<u8>, oneshot::Sender<Result<Vec<u8>, LinkError>>) {
        let request = timeout(GENEROUS, self.requests.recv())
            .await
            .expect("the host transmits")
            .expect("the link is open");
        (request.apdu, request.reply)
    }

    /// Expects `expected` and answers `data || sw`.
    pub async fn expect(&mut self, expected: &[u8], data: &[u8], sw: u16) {
        let (apdu, reply) = self.next().await;
        assert_eq!(apdu, expected, "APDU {apdu:02X?}");
        reply.send(Ok(with_sw(data, sw))).unwrap();
    }

    /// Answers the next APDU (whatever it is) with `data || sw`, returning it.
    pub async fn answer(&mut self, data: &[u8], sw: u16) -> Vec<u8> {
        let (apdu, reply) = self.next().await;
        reply.send(Ok(with_sw(data, sw))).unwrap();
        apdu
    }
}

pub fn with_sw(data: &[u8], sw: u16) -> Vec<u8> {
    let mut out = data.to_vec();
    out.extend_from_slice(&sw.to_be_bytes());
    out
}

/// NFCCTAP_MSG (extended form) carrying `payload`, as the device layer sends it first.
pub fn nfcctap_msg_extended(payload: &[u8]) -> Vec<u8> {
    let mut apdu = vec![0x80, 0x10, 0x80, 0x00, 0x00];
    apdu.extend_from_slice(&u16::try_from(payload.len()).unwrap().to_be_bytes());
    apdu.extend_from_slice(payload);
    apdu.extend_from_slice(&[0x00, 0x00]);
    apdu
}

/// NFCCTAP_MSG (short form) carrying `payload` (at most 255 bytes).
pub fn nfcctap_msg_short(payload: &[u8]) -> Vec<u8> {
    let mut apdu = vec![0x80, 0x10, 0x80, 0x00, u8::try_from(payload.len()).unwrap()];
    apdu.extend_from_slice(payload);
    apdu.push(0x00);
    apdu
}
