use std::sync::Mutex;

use ctap::ctaphid::{self, Cid, Command, Transaction, TransactionEvent};
use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_core::CryptoRngCore;

use super::*;
use crate::transport::DeviceId;

/// The channel the scripted key allocates.
const KEY_CID: Cid = Cid::new(0x0022_0002);

/// A `Write` whose bytes the test can read back.
#[derive(Clone, Default)]
struct SharedBuf(Arc<Mutex<Vec<u8>>>);

impl SharedBuf {
    fn bytes(&self) -> Vec<u8> {
        self.0.lock().unwrap().clone()
    }
}

impl Write for SharedBuf {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A sink that takes the header and then fails.
struct FailingSink {
    writes: usize,
}

impl Write for FailingSink {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.writes += 1;
        if self.writes > 1 {
            return Err(io::Error::other("disk full"));
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

fn description(transport: Transport) -> DeviceDescription {
    DeviceDescription {
        id: DeviceId::new(transport, "1-2"),
        transport,
        path: "/dev/hidraw3".into(),
        vendor_id: Some(0x1050),
        product_id: Some(0x0407),
        product: Some("Test Key".into()),
        manufacturer: Some("Example".into()),
    }
}

/// The 100-byte CBOR response of the scripted key: CTAP2_OK then 99 bytes.
fn scripted_response() -> Vec<u8> {
    let mut payload = vec![0x00];
    payload.extend((1..100u8).map(|i| i.wrapping_mul(7)));
    payload
}

/// A scripted key on the HID side of a link made of channels: it answers INIT with the
/// request's nonce and channel 00220002, and every CBOR request with a KEEPALIVE(PROCESSING)
/// then [`scripted_response`] (two reports). With `unplug_after_init` it goes away right
/// after answering INIT.
fn scripted_key(unplug_after_init: bool) -> Connection {
    let (tx, mut requests) = mpsc::channel::<Report>(LINK_CAPACITY);
    let (answers, rx) = mpsc::channel(LINK_CAPACITY);
    tokio::spawn(async move {
        while let Some(request) = requests.recv().await {
            match request[4] {
                0x86 => {
                    let mut payload = request[7..15].to_vec();
                    payload.extend_from_slice(&KEY_CID.to_bytes());
                    payload.extend_from_slice(&[0x02, 0x01, 0x02, 0x03, 0x05]);
                    let reports =
                        ctaphid::fragment(Cid::BROADCAST, Command::Init, &payload, 64).unwrap();
                    answers.send(Ok(reports[0])).await.unwrap();
                    if unplug_after_init {
                        return;
                    }
                }
                0x90 => {
                    let keepalive =
                        ctaphid::fragment(KEY_CID, Command::Keepalive, &[0x01], 64).unwrap();
                    answers.send(Ok(keepalive[0])).await.unwrap();
                    for report in
                        ctaphid::fragment(KEY_CID, Command::Cbor, &scripted_response(), 1024)
                            .unwrap()
                    {
                        answers.send(Ok(report)).await.unwrap();
                    }
                }
                _ => {}
            }
        }
    });
    Connection::Hid(ReportLink { tx, rx })
}

/// The host side: INIT with a nonce from `rng`, then getInfo. Returns every report read.
async fn host_session(link: &mut ReportLink, rng: &mut impl CryptoRngCore) -> Vec<Report> {
    let mut nonce = [0u8; 8];
    rng.fill_bytes(&mut nonce);
    link.tx.send(ctaphid::init_request(&nonce)).await.unwrap();
    let init = link.rx.recv().await.unwrap().unwrap();
    let mut read = vec![init];
    let answer = ctaphid::parse_init_response(&init[7..24], &nonce).unwrap();
    assert_eq!(answer.cid, KEY_CID);

    let mut transaction = Transaction::new(answer.cid, Command::Cbor, &[0x04], 1024).unwrap();
    for report in transaction.reports() {
        link.tx.send(*report).await.unwrap();
    }
    loop {
        let report = link.rx.recv().await.unwrap().unwrap();
        read.push(report);
        if let TransactionEvent::Response(payload) = transaction.on_report(&report).unwrap() {
            assert_eq!(payload, scripted_response());
            return read;
        }
    }
}

fn hid(connection: Connection) -> ReportLink {
    match connection {
        Connection::Hid(link) => link,
        Connection::Apdu(_) => panic!("expected a HID link"),
    }
}

fn apdu(connection: Connection) -> ApduLink {
    match connection {
        Connection::Apdu(link) => link,
        Connection::Hid(_) => panic!("expected an APDU link"),
    }
}

/// Records one scripted session with the nonce drawn from `StdRng(7)`; returns the file and
/// the reports the host read.
async fn record_session() -> (Vec<u8>, Vec<Report>) {
    let sink = SharedBuf::default();
    let recording = record(
        scripted_key(false),
        &description(Transport::Usb),
        sink.clone(),
    )
    .unwrap();
    let task = tokio::spawn(recording.task);
    let mut link = hid(recording.connection);
    let mut rng = LoggedRng::new(
        StdRng::seed_from_u64(7),
        RandomnessKind::Nonce,
        &recording.recorder,
    );
    let read = host_session(&mut link, &mut rng).await;
    drop(link);
    let summary = task.await.unwrap().unwrap();
    assert_eq!(summary.events, 7);
    (sink.bytes(), read)
}

fn seven_nonce() -> [u8; 8] {
    let mut nonce = [0u8; 8];
    StdRng::seed_from_u64(7).fill_bytes(&mut nonce);
    nonce
}

// ---- recording ----

#[tokio::test]
async fn records_header_randomness_and_reports_in_order() {
    let (file, read) = record_session().await;
    let text = String::from_utf8(file.clone()).unwrap();
    let first = text.lines().next().unwrap();
    assert_eq!(
        first,
        format!(
            "{{\"format\":\"passkeyd-recording\",\"version\":1,\"transport\":\"usb\",\
             \"description\":{{\"id\":\"usb_1_2\",\"path\":\"/dev/hidraw3\",\"vendorId\":4176,\
             \"productId\":1031,\"product\":\"Test Key\",\"manufacturer\":\"Example\"}},\
             \"recorder\":\"passkeyd {}\"}}",
            env!("CARGO_PKG_VERSION")
        )
    );

    let recording = RecordingFile::read(&file[..]).unwrap();
    assert_eq!(recording.header.transport, Transport::Usb);
    assert_eq!(recording.header.device.product.as_deref(), Some("Test Key"));
    let summary: Vec<(usize, &str, Option<Direction>)> = recording
        .events
        .iter()
        .map(|e| (e.line, e.body.kind(), e.body.direction()))
        .collect();
    assert_eq!(
        summary,
        [
            (2, "nonce", None),
            (3, "report", Some(Direction::Out)),
            (4, "report", Some(Direction::In)),
            (5, "report", Some(Direction::Out)),
            (6, "report", Some(Direction::In)),
            (7, "report", Some(Direction::In)),
            (8, "report", Some(Direction::In)),
        ]
    );
    let nonce = seven_nonce();
    assert_eq!(recording.events[0].body.bytes(), nonce);
    assert_eq!(
        recording.events[1].body.bytes(),
        ctaphid::init_request(&nonce)
    );
    let received: Vec<&[u8]> = recording.events[2..]
        .iter()
        .filter(|e| e.body.direction() == Some(Direction::In))
        .map(|e| e.body.bytes())
        .collect();
    let expected: Vec<&[u8]> = read.iter().map(|r| &r[..]).collect();
    assert_eq!(received, expected);

    // The randomness line is exactly the documented shape.
    let nonce_line = text.lines().nth(1).unwrap();
    let json: serde_json::Value = serde_json::from_str(nonce_line).unwrap();
    assert_eq!(json["kind"], "nonce");
    assert_eq!(json["hex"], hex::encode(nonce));
    assert!(json.get("dir").is_none());
    assert!(json["t_us"].is_u64());
}

#[tokio::test]
async fn a_failing_sink_does_not_disturb_the_link() {
    let recording = record(
        scripted_key(false),
        &description(Transport::Usb),
        FailingSink { writes: 0 },
    )
    .unwrap();
    let task = tokio::spawn(recording.task);
    let mut link = hid(recording.connection);
    let read = host_session(&mut link, &mut StdRng::seed_from_u64(1)).await;
    assert_eq!(read.len(), 4);
    drop(link);
    let error = task.await.unwrap().unwrap_err();
    assert!(matches!(error, RecordError::Io(ref e) if e.to_string() == "disk full"));
}

#[tokio::test]
async fn a_sink_failing_at_the_header_fails_at_once() {
    struct Broken;
    impl Write for Broken {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(io::Error::other("read-only"))
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }
    let error = record(scripted_key(false), &description(Transport::Usb), Broken).unwrap_err();
    assert!(matches!(error, RecordError::Io(_)));
}

#[tokio::test]
async fn oversized_randomness_notes_are_reported_as_lost() {
    let recording = record(
        scripted_key(false),
        &description(Transport::Usb),
        SharedBuf::default(),
    )
    .unwrap();
    let task = tokio::spawn(recording.task);
    recording
        .recorder
        .note_randomness(RandomnessKind::Iv, &[0u8; MAX_RANDOMNESS_LEN + 1]);
    drop(recording.connection);
    let error = task.await.unwrap().unwrap_err();
    assert!(matches!(error, RecordError::RandomnessLost { count: 1 }));
}

#[test]
fn logged_rng_notes_exactly_the_p256_private_scalar() {
    #[derive(Default)]
    struct Notes(Mutex<Vec<(RandomnessKind, Vec<u8>)>>);
    impl RandomnessLog for Notes {
        fn note_randomness(&self, kind: RandomnessKind, bytes: &[u8]) {
            self.0.lock().unwrap().push((kind, bytes.to_vec()));
        }
    }
    let notes = Notes::default();
    let mut rng = LoggedRng::new(StdRng::seed_from_u64(3), RandomnessKind::EcdhKey, &notes);
    let secret = p256::SecretKey::random(&mut rng);
    let noted = notes.0.lock().unwrap().clone();
    assert_eq!(noted.len(), 1);
    assert_eq!(noted[0].0, RandomnessKind::EcdhKey);
    assert_eq!(noted[0].1, secret.to_bytes().to_vec());
}

#[test]
fn logged_rng_over_no_recorder_only_draws() {
    let none: Option<Recorder> = None;
    let mut logged = LoggedRng::new(StdRng::seed_from_u64(5), RandomnessKind::Nonce, &none);
    let mut plain = StdRng::seed_from_u64(5);
    assert_eq!(logged.next_u64(), plain.next_u64());
    let (mut a, mut b) = ([0u8; 8], [0u8; 8]);
    logged.try_fill_bytes(&mut a).unwrap();
    plain.fill_bytes(&mut b);
    assert_eq!(a, b);
}

// ---- replay ----

#[tokio::test]
async fn a_replay_reproduces_the_recorded_session() {
    let (file, live) = record_session().await;
    let replay = Replay::read(&file[..]).unwrap();
    let mut rng = replay.randomness();
    assert_eq!(rng.remaining(), 1);
    let (connection, task) = replay.serve();
    let task = tokio::spawn(task);
    let mut link = hid(connection);
    let replayed = host_session(&mut link, &mut rng).await;
    assert_eq!(replayed, live);
    assert_eq!(rng.remaining(), 0);
    assert_eq!(rng.error(), None);
    drop(link);
    assert_eq!(
        task.await.unwrap(),
        Ok(ReplaySummary {
            served: 6,
            disconnected: false
        })
    );
}

#[tokio::test]
async fn a_different_write_is_a_typed_mismatch_and_closes_the_link() {
    let (file, _) = record_session().await;
    let (connection, task) = Replay::read(&file[..]).unwrap().serve();
    let task = tokio::spawn(task);
    let mut link = hid(connection);
    let other_nonce = [0xEE; 8];
    link.tx
        .send(ctaphid::init_request(&other_nonce))
        .await
        .unwrap();
    // The link closes: the host sees the device go away.
    assert!(link.rx.recv().await.is_none());
    let error = task.await.unwrap().unwrap_err();
    let nonce = seven_nonce();
    let offset = 7 + nonce.iter().position(|&b| b != 0xEE).unwrap();
    assert_eq!(
        error,
        ReplayError::Mismatch {
            line: 3,
            expected: ctaphid::init_request(&nonce).to_vec(),
            got: ctaphid::init_request(&other_nonce).to_vec(),
            offset,
        }
    );
    assert_eq!(
        error.to_string(),
        format!(
            "line 3: the host's write differs from the recording at byte {offset} \
             (64 bytes written, 64 recorded)"
        )
    );
}

#[tokio::test]
async fn a_host_that_stops_early_is_reported_with_the_line() {
    let (file, _) = record_session().await;
    let (connection, task) = Replay::read(&file[..]).unwrap().serve();
    drop(connection);
    assert_eq!(task.await, Err(ReplayError::HostClosed { line: 3 }));
}

#[tokio::test]
async fn a_write_after_the_recording_is_past_the_end() {
    let (file, _) = record_session().await;
    let replay = Replay::read(&file[..]).unwrap();
    let mut rng = replay.randomness();
    let (connection, task) = replay.serve();
    let task = tokio::spawn(task);
    let mut link = hid(connection);
    host_session(&mut link, &mut rng).await;
    let extra = ctaphid::cancel_report(KEY_CID);
    link.tx.send(extra).await.unwrap();
    assert!(link.rx.recv().await.is_none());
    assert_eq!(
        task.await.unwrap(),
        Err(ReplayError::PastEnd {
            got: extra.to_vec()
        })
    );
}

#[tokio::test]
async fn an_unplug_is_recorded_and_replayed() {
    let sink = SharedBuf::default();
    let recording = record(
        scripted_key(true),
        &description(Transport::Virtual),
        sink.clone(),
    )
    .unwrap();
    let task = tokio::spawn(recording.task);
    let mut link = hid(recording.connection);
    link.tx.send(ctaphid::init_request(&[1; 8])).await.unwrap();
    let init = link.rx.recv().await.unwrap().unwrap();
    assert!(link.rx.recv().await.is_none());
    task.await.unwrap().unwrap();
    let file = sink.bytes();
    let text = String::from_utf8(file.clone()).unwrap();
    let last = text.lines().last().unwrap();
    assert!(
        last.ends_with(r#","dir":"in","kind":"disconnect"}"#),
        "{last}"
    );

    let (connection, task) = Replay::read(&file[..]).unwrap().serve();
    let task = tokio::spawn(task);
    let mut link = hid(connection);
    link.tx.send(ctaphid::init_request(&[1; 8])).await.unwrap();
    assert_eq!(link.rx.recv().await.unwrap().unwrap(), init);
    assert!(matches!(
        link.rx.recv().await,
        Some(Err(LinkError::Disconnected))
    ));
    assert!(link.rx.recv().await.is_none());
    assert_eq!(
        task.await.unwrap(),
        Ok(ReplaySummary {
            served: 2,
            disconnected: true
        })
    );
}

/// A scripted card: answers every APDU with its INS byte and 9000, and goes away after
/// `apdus` of them.
fn scripted_card(apdus: usize) -> Connection {
    let (tx, mut requests) = mpsc::channel::<ApduRequest>(LINK_CAPACITY);
    tokio::spawn(async move {
        for _ in 0..apdus {
            let Some(request) = requests.recv().await else {
                return;
            };
            let _ = request.reply.send(Ok(vec![request.apdu[1], 0x90, 0x00]));
        }
    });
    Connection::Apdu(ApduLink { tx })
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
    response.await.map_err(|_| LinkError::Disconnected)?
}

const SELECT: [u8; 14] = [
    0x00, 0xA4, 0x04, 0x00, 0x08, 0xA0, 0x00, 0x00, 0x06, 0x47, 0x2F, 0x00, 0x01, 0x00,
];
const GET_INFO: [u8; 6] = [0x80, 0x10, 0x80, 0x00, 0x01, 0x04];

#[tokio::test]
async fn apdus_are_recorded_and_replayed() {
    let sink = SharedBuf::default();
    let recording = record(scripted_card(2), &description(Transport::Nfc), sink.clone()).unwrap();
    let task = tokio::spawn(recording.task);
    let link = apdu(recording.connection);
    assert_eq!(transmit(&link, &SELECT).await.unwrap(), [0xA4, 0x90, 0x00]);
    assert_eq!(
        transmit(&link, &GET_INFO).await.unwrap(),
        [0x10, 0x90, 0x00]
    );
    // The card is gone after two APDUs.
    assert!(matches!(
        transmit(&link, &GET_INFO).await,
        Err(LinkError::Disconnected)
    ));
    assert_eq!(task.await.unwrap().unwrap().events, 5);

    let file = sink.bytes();
    let recording = RecordingFile::read(&file[..]).unwrap();
    let kinds: Vec<&str> = recording.events.iter().map(|e| e.body.kind()).collect();
    assert_eq!(
        kinds,
        [
            "apdu",
            "apdu-response",
            "apdu",
            "apdu-response",
            "disconnect"
        ]
    );
    assert_eq!(recording.events[0].body.bytes(), SELECT);

    let (connection, task) = Replay::new(recording).serve();
    let task = tokio::spawn(task);
    let link = apdu(connection);
    assert_eq!(transmit(&link, &SELECT).await.unwrap(), [0xA4, 0x90, 0x00]);
    assert_eq!(
        transmit(&link, &GET_INFO).await.unwrap(),
        [0x10, 0x90, 0x00]
    );
    assert!(matches!(
        transmit(&link, &GET_INFO).await,
        Err(LinkError::Disconnected)
    ));
    assert_eq!(
        task.await.unwrap(),
        Ok(ReplaySummary {
            served: 4,
            disconnected: true
        })
    );
}

#[tokio::test]
async fn a_different_apdu_is_a_mismatch() {
    let file = header("nfc")
        + &line(r#"{"t_us":1,"dir":"out","kind":"apdu","hex":"00a4040000"}"#)
        + &line(r#"{"t_us":2,"dir":"in","kind":"apdu-response","hex":"9000"}"#);
    let (connection, task) = Replay::read(file.as_bytes()).unwrap().serve();
    let task = tokio::spawn(task);
    let link = apdu(connection);
    assert!(matches!(
        transmit(&link, &[0x00, 0xA4, 0x04, 0x01, 0x00]).await,
        Err(LinkError::Disconnected)
    ));
    assert_eq!(
        task.await.unwrap(),
        Err(ReplayError::Mismatch {
            line: 2,
            expected: vec![0x00, 0xA4, 0x04, 0x00, 0x00],
            got: vec![0x00, 0xA4, 0x04, 0x01, 0x00],
            offset: 3,
        })
    );
}

#[tokio::test]
async fn an_apdu_without_a_recorded_response_is_reported() {
    let file = header("nfc") + &line(r#"{"t_us":1,"dir":"out","kind":"apdu","hex":"00a4040000"}"#);
    let (connection, task) = Replay::read(file.as_bytes()).unwrap().serve();
    let task = tokio::spawn(task);
    let link = apdu(connection);
    assert!(
        transmit(&link, &[0x00, 0xA4, 0x04, 0x00, 0x00])
            .await
            .is_err()
    );
    assert_eq!(
        task.await.unwrap(),
        Err(ReplayError::MissingResponse { line: 2 })
    );

    let file =
        header("nfc") + &line(r#"{"t_us":1,"dir":"in","kind":"apdu-response","hex":"9000"}"#);
    let (_connection, task) = Replay::read(file.as_bytes()).unwrap().serve();
    assert_eq!(task.await, Err(ReplayError::UnexpectedResponse { line: 2 }));
}

// ---- replayed randomness ----

fn randomness(entries: &[(&str, &str)]) -> ReplayRandomness {
    let mut file = header("usb");
    for (kind, hex) in entries {
        file += &line(&format!(r#"{{"t_us":0,"kind":"{kind}","hex":"{hex}"}}"#));
    }
    Replay::read(file.as_bytes()).unwrap().randomness()
}

#[test]
fn replayed_randomness_comes_back_in_order() {
    let mut rng = randomness(&[("nonce", "0102030405060708"), ("iv", &"ab".repeat(16))]);
    let mut nonce = [0u8; 8];
    rng.try_fill_bytes(&mut nonce).unwrap();
    assert_eq!(nonce, [1, 2, 3, 4, 5, 6, 7, 8]);
    let mut iv = [0u8; 16];
    rng.fill_bytes(&mut iv);
    assert_eq!(iv, [0xAB; 16]);
    assert_eq!(rng.remaining(), 0);
    assert_eq!(rng.error(), None);
}

#[test]
fn replayed_randomness_reports_exhaustion_and_size_mismatch() {
    let mut rng = randomness(&[("nonce", "0102030405060708")]);
    let mut wrong = [0u8; 4];
    let error = rng.try_fill_bytes(&mut wrong).unwrap_err();
    assert_eq!(
        ReplayRandomness::error_of(&error),
        Some(&RandomnessError::LengthMismatch {
            line: 2,
            kind: "nonce",
            recorded: 8,
            requested: 4
        })
    );
    // Sticky: the entry is not handed out after a failed draw.
    let mut nonce = [0u8; 8];
    assert!(rng.try_fill_bytes(&mut nonce).is_err());

    let mut rng = randomness(&[]);
    let error = rng.try_fill_bytes(&mut nonce).unwrap_err();
    assert_eq!(
        ReplayRandomness::error_of(&error),
        Some(&RandomnessError::Exhausted { requested: 8 })
    );
    assert_eq!(
        error.to_string(),
        "recorded randomness exhausted (8 bytes requested)"
    );
}

#[test]
fn infallible_draws_never_panic_and_key_generation_terminates() {
    let mut rng = randomness(&[]);
    // p256 loops until the RNG yields a valid non-zero scalar; the filler is one.
    let key = p256::SecretKey::random(&mut rng);
    assert_eq!(key.to_bytes().as_slice(), [FILLER; 32]);
    assert_eq!(
        rng.error(),
        Some(&RandomnessError::Exhausted { requested: 32 })
    );
    assert_eq!(rng.next_u32(), u32::from_le_bytes([FILLER; 4]));
}

#[test]
fn a_recorded_ecdh_key_regenerates_the_same_key() {
    let scalar = "c9afa9d845ba75166b5c215767b1d6934e50c3db36e89b127b8a622b120f6721";
    let mut rng = randomness(&[("ecdh-key", scalar)]);
    let key = p256::SecretKey::random(&mut rng);
    assert_eq!(hex::encode(key.to_bytes()), scalar);
}

#[test]
fn secret_randomness_is_left_out_of_debug() {
    let recording = RecordingFile::read(
        (header("usb") + &line(r#"{"t_us":0,"kind":"ecdh-key","hex":"c9afa9d8"}"#)).as_bytes(),
    )
    .unwrap();
    let debug = format!("{:?}", recording.events[0]);
    assert!(debug.contains("ecdh-key(<4 secret bytes>)"), "{debug}");
    assert!(!debug.contains("c9afa9d8"));
    let recording = RecordingFile::read(
        (header("usb") + &line(r#"{"t_us":0,"kind":"nonce","hex":"c9afa9d8"}"#)).as_bytes(),
    )
    .unwrap();
    assert!(format!("{:?}", recording.events[0]).contains("nonce(c9afa9d8)"));
}

// ---- reading hostile files ----

fn header(transport: &str) -> String {
    line(&format!(
        r#"{{"format":"passkeyd-recording","version":1,"transport":"{transport}","description":{{}}}}"#
    ))
}

fn line(text: &str) -> String {
    format!("{text}\n")
}

fn report_hex() -> String {
    "00".repeat(64)
}

fn read_err(file: &str) -> RecordingError {
    RecordingFile::read(file.as_bytes()).unwrap_err()
}

#[test]
fn a_file_written_back_reads_the_same() {
    let file = header("usb")
        + &line(r#"{"t_us":0,"kind":"nonce","hex":"0102030405060708"}"#)
        + &line(&format!(
            r#"{{"t_us":5,"dir":"out","kind":"report","hex":"{}"}}"#,
            report_hex()
        ))
        + &line(r#"{"t_us":9,"dir":"in","kind":"disconnect"}"#);
    let recording = RecordingFile::read(file.as_bytes()).unwrap();
    let mut out = Vec::new();
    recording.write(&mut out).unwrap();
    assert_eq!(String::from_utf8(out.clone()).unwrap(), file);
    assert_eq!(RecordingFile::read(&out[..]).unwrap(), recording);
}

#[test]
fn tolerated_variations() {
    // CRLF line ends, blank lines, unknown members, a final line without newline.
    let file = format!(
        "{{\"format\":\"passkeyd-recording\",\"version\":1,\"transport\":\"virtual\",\"extra\":1}}\r\n\
         \r\n\
         {{\"t_us\":3,\"dir\":\"in\",\"kind\":\"report\",\"hex\":\"{}\",\"note\":\"x\"}}",
        "AB".repeat(64)
    );
    let recording = RecordingFile::read(file.as_bytes()).unwrap();
    assert_eq!(recording.header.transport, Transport::Virtual);
    assert_eq!(recording.header.device, RecordedDevice::default());
    assert_eq!(recording.events.len(), 1);
    assert_eq!(recording.events[0].line, 3);
    assert_eq!(recording.events[0].body.bytes(), [0xAB; 64]);
}

#[test]
fn header_errors_are_typed() {
    assert!(matches!(read_err(""), RecordingError::Empty));
    assert!(matches!(read_err("\n\n"), RecordingError::Empty));
    assert!(matches!(
        read_err("{\"format\":\"fwupd\"}\n"),
        RecordingError::NotARecording { found } if found == "fwupd"
    ));
    assert!(matches!(
        read_err(r#"{"t_us":0,"kind":"nonce","hex":"00"}"#),
        RecordingError::NotARecording { found } if found.is_empty()
    ));
    assert!(matches!(
        read_err(r#"{"format":"passkeyd-recording","version":2,"transport":"usb"}"#),
        RecordingError::UnsupportedVersion(2)
    ));
    assert!(matches!(
        read_err(r#"{"format":"passkeyd-recording","version":1,"transport":"ble"}"#),
        RecordingError::UnknownTransport(t) if t == "ble"
    ));
    assert!(matches!(
        read_err(r#"{"format":"passkeyd-recording","version":1}"#),
        RecordingError::Json { line: 1, .. }
    ));
    assert!(matches!(
        read_err("[1,2"),
        RecordingError::Json { line: 1, .. }
    ));
}

#[test]
fn event_errors_name_their_line() {
    let report = |dir: &str, hex: &str| {
        line(&format!(
            r#"{{"t_us":1,"dir":"{dir}","kind":"report","hex":"{hex}"}}"#
        ))
    };
    let usb = header("usb") + &line(r#"{"t_us":0,"kind":"nonce","hex":"0102030405060708"}"#);
    let cases: Vec<(String, &str)> = vec![
        (
            usb.clone() + &report("out", "00"),
            "line 3: a report event of 1 bytes (allowed: 64)",
        ),
        (
            usb.clone() + &report("out", &"00".repeat(65)),
            "line 3: a report event of 65 bytes (allowed: 64)",
        ),
        (
            usb.clone() + &report("up", &report_hex()),
            "line 3: direction Some(\"up\") does not fit a report event",
        ),
        (
            usb.clone()
                + &line(&format!(
                    r#"{{"t_us":1,"kind":"report","hex":"{}"}}"#,
                    report_hex()
                )),
            "line 3: direction None does not fit a report event",
        ),
        (usb.clone() + &report("out", "zz"), "line 3: bad hex"),
        (usb.clone() + &report("out", "abc"), "line 3: bad hex"),
        (
            usb.clone() + &line(r#"{"t_us":1,"dir":"out","kind":"report"}"#),
            "line 3: a report event needs hex bytes",
        ),
        (
            usb.clone() + &line(r#"{"t_us":1,"dir":"in","kind":"disconnect","hex":"00"}"#),
            "line 3: a disconnect event carries no bytes",
        ),
        (
            usb.clone() + &line(r#"{"t_us":1,"dir":"out","kind":"disconnect"}"#),
            "line 3: direction Some(\"out\") does not fit a disconnect event",
        ),
        (
            usb.clone() + &line(r#"{"t_us":1,"dir":"out","kind":"apdu","hex":"00a40400"}"#),
            "line 3: a apdu event cannot occur on transport usb",
        ),
        (
            usb.clone() + &line(r#"{"t_us":1,"kind":"frobnicate"}"#),
            "line 3: unknown event kind \"frobnicate\"",
        ),
        (
            usb.clone() + &line(r#"{"t_us":1,"dir":"out","kind":"nonce","hex":"00"}"#),
            "line 3: direction Some(\"out\") does not fit a nonce event",
        ),
        (
            usb.clone() + &line(r#"{"t_us":1,"kind":"ecdh-key","hex":""}"#),
            "line 3: a ecdh-key event of 0 bytes (allowed: 1 to 1024)",
        ),
        (
            usb.clone() + &line(r#"{"t_us":1,"kind":"iv"}"#),
            "line 3: a iv event needs hex bytes",
        ),
        (
            usb.clone() + &line(r#"{"dir":"out","kind":"report"}"#),
            "line 3: malformed JSON",
        ),
        (
            usb.clone() + &line(r#"{"t_us":-1,"kind":"nonce","hex":"00"}"#),
            "line 3: malformed JSON",
        ),
        // A file cut off in the middle of its last line.
        (
            usb + r#"{"t_us":5,"dir":"in","ki"#,
            "line 3: malformed JSON",
        ),
        (
            header("usb")
                + &line(r#"{"t_us":9,"kind":"nonce","hex":"00"}"#)
                + &line(r#"{"t_us":8,"kind":"nonce","hex":"00"}"#),
            "line 3: time 8 µs goes back before 9 µs",
        ),
        (
            header("nfc") + &report("in", &report_hex()),
            "line 2: a report event cannot occur on transport nfc",
        ),
        (
            header("nfc") + &line(r#"{"t_us":1,"dir":"in","kind":"apdu","hex":"00a40400"}"#),
            "line 2: direction Some(\"in\") does not fit a apdu event",
        ),
        (
            header("nfc") + &line(r#"{"t_us":1,"dir":"out","kind":"apdu","hex":"00a404"}"#),
            "line 2: a apdu event of 3 bytes (allowed: 4 to 65544)",
        ),
        (
            header("nfc") + &line(r#"{"t_us":1,"dir":"in","kind":"apdu-response","hex":"90"}"#),
            "line 2: a apdu-response event of 1 bytes (allowed: 2 to 65544)",
        ),
    ];
    for (file, expected) in cases {
        assert_eq!(read_err(&file).to_string(), expected, "{file}");
    }
}

#[test]
fn oversized_lines_files_and_bad_utf8_are_typed() {
    let long = header("usb") + &"x".repeat(MAX_LINE_LEN + 1) + "\n";
    assert!(matches!(
        read_err(&long),
        RecordingError::LineTooLong {
            line: 2,
            max: MAX_LINE_LEN
        }
    ));
    // Without a newline the reader still stops one byte past the limit.
    let endless = header("usb") + &"x".repeat(MAX_LINE_LEN * 2);
    assert!(matches!(
        read_err(&endless),
        RecordingError::LineTooLong { line: 2, .. }
    ));

    // Exactly at the limits is fine; one byte less is not.
    let event = line(r#"{"t_us":0,"kind":"nonce","hex":"00"}"#);
    let file = header("usb") + &event + &event;
    let longest = header("usb").len() - 1;
    let len = u64::try_from(file.len()).unwrap();
    assert!(RecordingFile::read_limited(file.as_bytes(), longest, len).is_ok());
    assert!(matches!(
        RecordingFile::read_limited(file.as_bytes(), longest - 1, len),
        Err(RecordingError::LineTooLong { line: 1, .. })
    ));
    assert!(matches!(
        RecordingFile::read_limited(file.as_bytes(), longest, len - 1),
        Err(RecordingError::FileTooLarge { line: 3, .. })
    ));

    let mut bad = (header("usb") + r#"{"t_us":0,"kind":"nonce","hex":""#).into_bytes();
    bad.extend_from_slice(&[0xFF, 0xFE, b'"', b'}', b'\n']);
    assert!(matches!(
        RecordingFile::read(&bad[..]),
        Err(RecordingError::NotUtf8 { line: 2 })
    ));
}

// ---- a PIN ceremony against the firmware, recorded and replayed ----

/// The Trussed firmware (`virtkey`) behind a link of channels, as a transport would serve it.
fn firmware_connection(key: Arc<virtkey::VirtKey>) -> Connection {
    let (tx, mut requests) = mpsc::channel::<Report>(LINK_CAPACITY);
    let (answers, rx) = mpsc::channel(LINK_CAPACITY);
    let writer = Arc::clone(&key);
    tokio::spawn(async move {
        while let Some(report) = requests.recv().await {
            writer.write_report(&report).unwrap();
        }
    });
    // The firmware's reports are read by a thread (its API blocks); it stops with the link.
    std::thread::spawn(move || {
        loop {
            match key.read_report(std::time::Duration::from_millis(20)) {
                Ok(Some(report)) => {
                    if answers.blocking_send(Ok(report)).is_err() {
                        return;
                    }
                }
                Ok(None) if answers.is_closed() => return,
                Ok(None) => {}
                Err(_) => return,
            }
        }
    });
    Connection::Hid(ReportLink { tx, rx })
}

/// Where the ceremony draws randomness: the system-like RNG noted in a recorder, or the
/// recorded bytes.
enum Draws<'a> {
    Recording(&'a mut StdRng, &'a Recorder),
    Replay(&'a mut ReplayRandomness),
}

impl Draws<'_> {
    fn rng(&mut self, kind: RandomnessKind) -> Box<dyn CryptoRngCore + '_> {
        match self {
            Self::Recording(rng, recorder) => Box::new(LoggedRng::new(&mut **rng, kind, *recorder)),
            Self::Replay(replay) => Box::new(&mut **replay),
        }
    }
}

async fn exchange(link: &mut ReportLink, cid: Cid, request: &[u8]) -> Vec<u8> {
    let mut transaction = Transaction::new(cid, Command::Cbor, request, 1024).unwrap();
    for report in transaction.reports() {
        link.tx.send(*report).await.unwrap();
    }
    loop {
        let report = link.rx.recv().await.unwrap().unwrap();
        if let TransactionEvent::Response(payload) = transaction.on_report(&report).unwrap() {
            return payload;
        }
    }
}

/// INIT, getKeyAgreement (protocol 2), getPinUvAuthTokenUsingPinWithPermissions: every step
/// of it depends on host randomness. Returns the token response.
async fn pin_ceremony(link: &mut ReportLink, draws: &mut Draws<'_>) -> Vec<u8> {
    use ctap::command::client_pin::{GetKeyAgreement, Permissions, PinSession};
    use ctap::command::{decode_response, encode_request};
    use ctap::pin_uv::{Pin, PinUvAuthProtocol};

    let mut nonce = [0u8; 8];
    draws.rng(RandomnessKind::Nonce).fill_bytes(&mut nonce);
    link.tx.send(ctaphid::init_request(&nonce)).await.unwrap();
    let init = link.rx.recv().await.unwrap().unwrap();
    let cid = ctaphid::parse_init_response(&init[7..24], &nonce)
        .unwrap()
        .cid;

    let request = encode_request(&GetKeyAgreement {
        pin_uv_auth_protocol: 2,
    })
    .unwrap();
    let agreement =
        decode_response::<GetKeyAgreement>(&exchange(link, cid, &request).await).unwrap();
    let session = PinSession::new(
        PinUvAuthProtocol::Two,
        &agreement,
        &mut draws.rng(RandomnessKind::EcdhKey),
    )
    .unwrap();
    let request = session
        .get_token_using_pin(
            &Pin::new("123456").unwrap(),
            Permissions::MAKE_CREDENTIAL,
            Some("example.org".into()),
            &mut draws.rng(RandomnessKind::Iv),
        )
        .unwrap();
    exchange(link, cid, &encode_request(&request).unwrap()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_ceremony_with_the_firmware_replays_deterministically() {
    let key = Arc::new(
        virtkey::VirtKey::start(virtkey::Config {
            pin: Some("123456".into()),
            ..virtkey::Config::default()
        })
        .unwrap(),
    );
    let sink = SharedBuf::default();
    let recording = record(
        firmware_connection(Arc::clone(&key)),
        &description(Transport::Virtual),
        sink.clone(),
    )
    .unwrap();
    let task = tokio::spawn(recording.task);
    let mut link = hid(recording.connection);
    let mut seeded = StdRng::seed_from_u64(11);
    let mut draws = Draws::Recording(&mut seeded, &recording.recorder);
    let live = pin_ceremony(&mut link, &mut draws).await;
    // CTAP2_OK, then {2: <48 bytes>}: map header, key, byte-string header (2), token.
    assert_eq!(live.len(), 1 + 1 + 1 + 2 + 48);
    assert_eq!(live[..5], [0x00, 0xA1, 0x02, 0x58, 0x30]);
    drop(link);
    task.await.unwrap().unwrap();
    drop(key);

    let file = sink.bytes();
    let replay = Replay::read(&file[..]).unwrap();
    let kinds: Vec<(&str, usize)> = replay
        .file()
        .events
        .iter()
        .filter(|e| e.body.direction().is_none())
        .map(|e| (e.body.kind(), e.body.bytes().len()))
        .collect();
    assert_eq!(kinds, [("nonce", 8), ("ecdh-key", 32), ("iv", 16)]);

    // No key this time: the recording answers, and the recorded randomness makes the host
    // write exactly what it wrote (the encrypted PIN hash included), or the replay fails.
    let mut randomness = replay.randomness();
    let (connection, task) = replay.serve();
    let task = tokio::spawn(task);
    let mut link = hid(connection);
    let replayed = pin_ceremony(&mut link, &mut Draws::Replay(&mut randomness)).await;
    assert_eq!(replayed, live);
    assert_eq!(randomness.remaining(), 0);
    drop(link);
    let summary = task.await.unwrap().unwrap();
    assert!(!summary.disconnected);
}

#[test]
fn events_queued_out_of_time_order_keep_the_file_readable() {
    // A tap may take its time before a randomness note takes a later one, and queue after it:
    // the writer gives the late event the time already written.
    let (events, rx) = mpsc::channel(4);
    let nonce = EventBody::Randomness(RandomBytes {
        kind: RandomnessKind::Nonce,
        bytes: Zeroizing::new(vec![7; 8]),
    });
    let report = EventBody::Report {
        dir: Direction::In,
        report: [0x11; 64],
    };
    events
        .try_send(Msg::Event {
            t_us: 50,
            body: nonce,
        })
        .unwrap();
    events
        .try_send(Msg::Event {
            t_us: 40,
            body: report,
        })
        .unwrap();
    events
        .try_send(Msg::Event {
            t_us: 60,
            body: EventBody::Disconnect,
        })
        .unwrap();
    drop(events);
    let mut out = Vec::new();
    assert_eq!(write_events(&mut out, rx).unwrap(), 3);
    let text = String::from_utf8(out).unwrap();
    let expected = format!(
        "{{\"t_us\":50,\"kind\":\"nonce\",\"hex\":\"0707070707070707\"}}\n\
         {{\"t_us\":50,\"dir\":\"in\",\"kind\":\"report\",\"hex\":\"{}\"}}\n\
         {{\"t_us\":60,\"dir\":\"in\",\"kind\":\"disconnect\"}}\n",
        "11".repeat(64)
    );
    assert_eq!(text, expected);
    let file = format!("{}{text}", header("virtual"));
    let times: Vec<u64> = RecordingFile::read(file.as_bytes())
        .unwrap()
        .events
        .iter()
        .map(|e| e.t_us)
        .collect();
    assert_eq!(times, [50, 50, 60]);
}
