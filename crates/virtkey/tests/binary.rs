//! The `virtkey` binary as external checks and the daemon use it: spawned as a process, spoken
//! to in raw 64-byte reports over its SOCK_SEQPACKET socket.
// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{
    io::{BufRead as _, BufReader},
    os::fd::OwnedFd,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex},
    thread,
    time::{Duration, Instant},
};

use ciborium::Value;
use common::{BROADCAST, CMD_CBOR, CMD_INIT, CMD_KEEPALIVE, decode, get, int, text};
use rustix::{
    io::Errno,
    net::{
        AddressFamily, RecvFlags, SendFlags, SocketAddrUnix, SocketFlags, SocketType, bind,
        connect, recv, send, socket_with,
        sockopt::{Timeout, set_socket_timeout},
    },
    process::{Pid, Signal, kill_process},
};

const NONCE: [u8; 8] = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
const WAIT: Duration = Duration::from_secs(30);

/// A running `virtkey` process and its stderr.
struct Process {
    child: Child,
    socket: PathBuf,
    stderr: Arc<Mutex<String>>,
    _dir: tempfile::TempDir,
}

impl Process {
    fn spawn(extra: &[&str]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::spawn_in(dir, "key", extra)
    }

    fn spawn_in(dir: tempfile::TempDir, name: &str, extra: &[&str]) -> Self {
        let socket = dir.path().join(format!("{name}.sock"));
        let mut child = Command::new(env!("CARGO_BIN_EXE_virtkey"))
            .arg("--dir")
            .arg(dir.path())
            .args(["--name", name])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let pipe = child.stderr.take().unwrap();
        let sink = Arc::clone(&stderr);
        thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let line = line.unwrap_or_default();
                sink.lock().unwrap().push_str(&line);
                sink.lock().unwrap().push('\n');
            }
        });
        Self {
            child,
            socket,
            stderr,
            _dir: dir,
        }
    }

    /// Waits until the socket exists (the binary renames it into place once listening).
    fn ready(mut self) -> Self {
        let deadline = Instant::now() + WAIT;
        while !self.socket.exists() {
            if let Some(status) = self.child.try_wait().unwrap() {
                panic!("virtkey exited with {status}: {}", self.log());
            }
            assert!(Instant::now() < deadline, "no socket: {}", self.log());
            thread::sleep(Duration::from_millis(20));
        }
        self
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: Signal) {
        kill_process(Pid::from_child(&self.child), signal).unwrap();
    }

    fn wait(&mut self) -> ExitStatus {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "virtkey did not exit");
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits for a line in the log.
    fn wait_log(&self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !self.log().contains(needle) {
            assert!(
                Instant::now() < deadline,
                "no {needle:?} in: {}",
                self.log()
            );
            thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What one receive gave.
#[derive(Debug, PartialEq, Eq)]
enum Received {
    Report([u8; 64]),
    Eof,
    Timeout,
}

/// The host side of the socket: a blocking SOCK_SEQPACKET client.
struct Client(OwnedFd);

impl Client {
    fn connect(path: &Path) -> Self {
        let fd = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        connect(&fd, &SocketAddrUnix::new(path).unwrap()).unwrap();
        Self(fd)
    }

    fn write(&self, report: &[u8; 64]) {
        assert_eq!(send(&self.0, report, SendFlags::NOSIGNAL).unwrap(), 64);
    }

    fn read(&self, timeout: Duration) -> Received {
        set_socket_timeout(&self.0, Timeout::Recv, Some(timeout)).unwrap();
        let mut buffer = [0u8; 65];
        loop {
            return match recv(&self.0, &mut buffer[..], RecvFlags::TRUNC) {
                Ok((_, 0)) => Received::Eof,
                Ok((_, 64)) => Received::Report(buffer[..64].try_into().unwrap()),
                Ok((_, length)) => panic!("a {length}-byte message"),
                Err(Errno::INTR) => continue,
                Err(Errno::AGAIN) => Received::Timeout,
                Err(Errno::CONNRESET) => Received::Eof,
                Err(error) => panic!("recv: {error} (errno {})", error.raw_os_error()),
            };
        }
    }

    fn report(&self) -> [u8; 64] {
        match self.read(WAIT) {
            Received::Report(report) => report,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    fn send_message(&self, cid: u32, cmd: u8, data: &[u8]) {
        let mut report = [0u8; 64];
        report[..4].copy_from_slice(&cid.to_be_bytes());
        report[4] = 0x80 | cmd;
        report[5..7].copy_from_slice(&(data.len() as u16).to_be_bytes());
        let first = data.len().min(57);
        report[7..7 + first].copy_from_slice(&data[..first]);
        self.write(&report);
        for (seq, chunk) in data[first..].chunks(59).enumerate() {
            let mut report = [0u8; 64];
            report[..4].copy_from_slice(&cid.to_be_bytes());
            report[4] = seq as u8;
            report[5..5 + chunk.len()].copy_from_slice(chunk);
            self.write(&report);
        }
    }

    /// One whole message: (cid, cmd, data).
    fn message(&self) -> (u32, u8, Vec<u8>) {
        let first = self.report();
        assert_ne!(first[4] & 0x80, 0, "expected an initialization packet");
        let cid = u32::from_be_bytes(first[..4].try_into().unwrap());
        let total = u16::from_be_bytes([first[5], first[6]]) as usize;
        let mut data = first[7..7 + total.min(57)].to_vec();
        let mut seq = 0;
        while data.len() < total {
            let report = self.report();
            assert_eq!(report[4], seq);
            seq += 1;
            let want = (total - data.len()).min(59);
            data.extend_from_slice(&report[5..5 + want]);
        }
        (cid, first[4] & 0x7f, data)
    }

    /// INIT on the broadcast channel; checks the raw reply report and returns the channel.
    fn init(&self) -> u32 {
        self.send_message(BROADCAST, CMD_INIT, &NONCE);
        let reply = self.report();
        assert_eq!(&reply[..7], &[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x11]);
        assert_eq!(&reply[7..15], &NONCE);
        // Protocol 2, device version 0.3.0, capabilities WINK | CBOR; the rest is padding.
        assert_eq!(&reply[19..24], &[0x02, 0x00, 0x03, 0x00, 0x05]);
        assert!(reply[24..].iter().all(|&b| b == 0));
        u32::from_be_bytes(reply[15..19].try_into().unwrap())
    }

    /// A CTAP2 command: (status, body), skipping keepalives; also returns their statuses.
    fn cbor(&self, cid: u32, request: &[u8]) -> (u8, Vec<u8>, Vec<u8>) {
        self.send_message(cid, CMD_CBOR, request);
        let mut keepalives = Vec::new();
        loop {
            let (reply_cid, cmd, data) = self.message();
            assert_eq!(reply_cid, cid);
            if cmd == CMD_KEEPALIVE {
                keepalives.push(data[0]);
                continue;
            }
            assert_eq!(cmd, CMD_CBOR);
            return (data[0], data[1..].to_vec(), keepalives);
        }
    }
}

#[test]
fn init_and_get_info_then_sigterm_removes_the_socket() {
    let mut process = Process::spawn(&[]).ready();
    let client = Client::connect(&process.socket);
    let cid = client.init();
    assert_ne!(cid, 0);
    assert_ne!(cid, BROADCAST);

    let (status, body, _) = client.cbor(cid, &[0x04]);
    assert_eq!(status, 0x00);
    let info = decode(&body);
    assert_eq!(
        get(&info, &int(0x03)),
        Some(&Value::Bytes(virtkey::AAGUID.to_vec()))
    );
    let versions = get(&info, &int(0x01)).unwrap().as_array().unwrap();
    assert!(versions.contains(&text("FIDO_2_0")));
    assert_eq!(get(&info, &int(0x05)), Some(&int(3072)));

    process.signal(Signal::TERM);
    assert_eq!(process.wait().code(), Some(0));
    assert!(!process.socket.exists());
    assert_eq!(client.read(WAIT), Received::Eof);
    assert!(process.log().contains("stopping"), "{}", process.log());
}

#[test]
fn one_client_at_a_time_and_back_to_accept_after_a_disconnect() {
    let mut process = Process::spawn(&[]).ready();
    let first = Client::connect(&process.socket);
    let cid = first.init();

    // A second client is accepted and closed at once; the first one keeps working.
    let second = Client::connect(&process.socket);
    assert_eq!(second.read(WAIT), Received::Eof);
    process.wait_log("refusing a second client");
    let (status, _, _) = first.cbor(cid, &[0x04]);
    assert_eq!(status, 0x00);

    // The first goes; the next client is served, on a fresh CTAPHID state (the old channel is
    // forgotten, as after a re-plug).
    drop(first);
    process.wait_log("client disconnected");
    let third = Client::connect(&process.socket);
    let mut ping = [0u8; 64];
    ping[..7].copy_from_slice(&[
        cid.to_be_bytes()[0],
        cid.to_be_bytes()[1],
        cid.to_be_bytes()[2],
        cid.to_be_bytes()[3],
        0x81,
        0x00,
        0x01,
    ]);
    third.write(&ping);
    let error = third.report();
    assert_eq!(&error[4..8], &[0xbf, 0x00, 0x01, 0x0b]);
    let cid = third.init();
    let (status, _, _) = third.cbor(cid, &[0x04]);
    assert_eq!(status, 0x00);

    process.signal(Signal::INT);
    assert_eq!(process.wait().code(), Some(0));
    assert!(!process.socket.exists());
}

#[test]
fn unplug_after_removes_the_socket_and_closes_the_connection() {
    let mut process = Process::spawn(&["--unplug-after", "3", "--keepalive-ms", "20000"]).ready();
    let client = Client::connect(&process.socket);
    let cid = client.init();
    client.send_message(cid, CMD_CBOR, &[0x04]);
    // Reports 2 and 3: getInfo's initialization packet and first continuation; then the key
    // is "pulled" in the middle of the message.
    let second = client.report();
    assert_eq!(
        &second[..5],
        &[&cid.to_be_bytes()[..], &[0x90]].concat()[..]
    );
    assert_eq!(second[7], 0x00);
    let third = client.report();
    assert_eq!(third[4], 0x00);
    assert_eq!(client.read(WAIT), Received::Eof);
    assert!(!process.socket.exists());
    process.wait_log("unplugged");
    // The process stays until it is told to stop.
    assert!(process.child.try_wait().unwrap().is_none());
    process.signal(Signal::TERM);
    assert_eq!(process.wait().code(), Some(0));
}

#[test]
fn replug_ms_brings_the_key_back_after_each_unplug() {
    let mut process = Process::spawn(&[
        "--unplug-after",
        "1",
        "--replug-ms",
        "50",
        "--keepalive-ms",
        "20000",
    ])
    .ready();
    for round in 0..3 {
        // A fresh CTAPHID state each time, as after a re-plug: INIT answers, then the key is
        // pulled again.
        let client = Client::connect(&process.socket);
        let cid = client.init();
        assert_ne!(cid, 0, "round {round}");
        assert_eq!(client.read(WAIT), Received::Eof, "round {round}");
        process = process.ready();
    }
    process.wait_log("plugged in again");
    process.signal(Signal::TERM);
    assert_eq!(process.wait().code(), Some(0));
    assert!(!process.socket.exists());
}

#[test]
fn hostile_mode_tampers_with_make_credential_only() {
    let process = Process::spawn(&["--hostile", "up-not-set"]).ready();
    let client = Client::connect(&process.socket);
    let cid = client.init();
    let (status, _, _) = client.cbor(cid, &[0x04]);
    assert_eq!(status, 0x00);
    let (status, body, _) = client.cbor(cid, &common::make_credential_message());
    assert_eq!(status, 0x00);
    let response = decode(&body);
    let Some(Value::Bytes(auth_data)) = get(&response, &int(2)) else {
        panic!("no authData");
    };
    // AT set, UP cleared.
    assert_eq!(auth_data[32] & 0x41, 0x40);
    assert!(process.log().contains("up-not-set"), "{}", process.log());
}

#[test]
fn corrupt_frame_inverts_everything_but_the_cid() {
    let process = Process::spawn(&["--corrupt-frame", "1"]).ready();
    let client = Client::connect(&process.socket);
    client.send_message(BROADCAST, CMD_INIT, &NONCE);
    let corrupted = client.report();
    assert_eq!(&corrupted[..4], &[0xff, 0xff, 0xff, 0xff]);
    assert_eq!(&corrupted[4..7], &[!0x86, !0x00, !0x11]);
    let inverted: Vec<u8> = NONCE.iter().map(|b| !b).collect();
    assert_eq!(&corrupted[7..15], &inverted[..]);
    assert!(corrupted[24..].iter().all(|&b| b == 0xff));
    // Only the first report: the next INIT comes back intact.
    let cid = client.init();
    assert_ne!(cid, 0);
}

#[test]
fn force_status_answers_every_ctap2_request() {
    let process = Process::spawn(&["--force-status", "2F"]).ready();
    let client = Client::connect(&process.socket);
    let cid = client.init();
    let (status, body, _) = client.cbor(cid, &[0x04]);
    assert_eq!((status, body), (0x2f, vec![]));
    let (status, body, _) = client.cbor(cid, &common::make_credential_message());
    assert_eq!((status, body), (0x2f, vec![]));
}

#[test]
fn keepalive_cadence_and_delayed_touch() {
    let process = Process::spawn(&["--touch", "auto:800", "--keepalive-ms", "50"]).ready();
    let client = Client::connect(&process.socket);
    let cid = client.init();
    let started = Instant::now();
    let (status, body, keepalives) = client.cbor(cid, &common::make_credential_message());
    assert_eq!(status, 0x00);
    assert!(started.elapsed() >= Duration::from_millis(800));
    // fmt "packed" (1), authData (2), attStmt (3).
    let response = decode(&body);
    assert_eq!(get(&response, &int(1)), Some(&text("packed")));
    // About 16 at 50 ms over 800 ms of waiting; a loaded machine delays some.
    let upneeded = keepalives.iter().filter(|&&s| s == 0x02).count();
    assert!(upneeded >= 4, "{keepalives:?}");
    assert!(keepalives.iter().all(|&s| s == 0x01 || s == 0x02));
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("key.sock");
    // A socket file nobody listens on, as a killed process leaves it.
    {
        let fd = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        bind(&fd, &SocketAddrUnix::new(&path).unwrap()).unwrap();
    }
    assert!(path.exists());
    let dir_path = dir.path().to_path_buf();
    let process = Process::spawn_in(dir, "key", &[]).ready();
    process.wait_log("listening");
    let client = Client::connect(&path);
    assert_ne!(client.init(), 0);

    // A second process on the same name fails with 1 and leaves the live socket alone.
    let mut rival = Command::new(env!("CARGO_BIN_EXE_virtkey"))
        .arg("--dir")
        .arg(&dir_path)
        .args(["--name", "key"])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let status = rival.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let mut log = String::new();
    std::io::Read::read_to_string(&mut rival.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("another server is listening"), "{log}");
    assert!(path.exists());
}

#[test]
fn usage_errors_exit_with_2_and_runtime_errors_with_1() {
    let dir = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        let output = Command::new(env!("CARGO_BIN_EXE_virtkey"))
            .args(args)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    let d = dir.path().to_str().unwrap();
    assert_eq!(run(&["--dir", d]).0, Some(2));
    assert_eq!(
        run(&["--dir", d, "--name", "k", "--touch", "sometimes"]).0,
        Some(2)
    );
    assert_eq!(
        run(&["--dir", d, "--name", "k", "--force-status", "1FF"]).0,
        Some(2)
    );
    assert_eq!(
        run(&["--dir", d, "--name", "k", "--vpcd", "nohost"]).0,
        Some(2)
    );
    let (code, log) = run(&["--dir", d, "--name", "k", "--pin", "12"]);
    assert_eq!(code, Some(2), "{log}");
    assert!(log.contains("--pin"), "{log}");

    // DIR is a regular file: a runtime error, and no socket anywhere.
    let file = dir.path().join("plain");
    std::fs::write(&file, b"x").unwrap();
    let (code, log) = run(&["--dir", file.to_str().unwrap(), "--name", "k"]);
    assert_eq!(code, Some(1), "{log}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}
