//! The `passkeyd` binary as a process on a private bus: it owns its name, tells systemd it is
//! ready (and pings the watchdog), virtual keys served in this process on real
//! SOCK_SEQPACKET sockets come and go and are logged, and a signal stops it cleanly.

// Helpers outside #[test] functions panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::{
    io::{BufRead as _, BufReader},
    os::unix::net::UnixDatagram,
    path::{Path, PathBuf},
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, mpsc},
    thread,
    time::{Duration, Instant},
};

use rustix::process::{Pid, Signal, kill_process};
use virtkey::{
    Config, VirtKey,
    socket::{self, ServeOptions, SocketServer},
};

/// Generous bound for anything that should happen at once (a loaded 2-core machine is slow,
/// and the firmware boots in the test process).
const WAIT: Duration = Duration::from_secs(30);

/// The AAGUID of every virtual key, as the daemon logs it.
const VIRTKEY_AAGUID: &str = "7a3e5c1d-94b2-4f08-a6d1-2c9e0b8f4d63";

/// A private `dbus-daemon` for one test, killed when dropped.
struct PrivateBus {
    child: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl PrivateBus {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!(
                "--address=unix:path={}",
                dir.path().join("bus").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) runs");
        let mut address = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut address)
            .unwrap();
        let address = address.trim().to_owned();
        assert!(address.starts_with("unix:"), "{address:?}");
        Self {
            child,
            address,
            _dir: dir,
        }
    }

    /// Whether `name` has an owner, asked with `busctl` (a client this project did not write).
    fn has_owner(&self, name: &str) -> bool {
        let output = Command::new("busctl")
            .arg(format!("--address={}", self.address))
            .args([
                "call",
                "org.freedesktop.DBus",
                "/org/freedesktop/DBus",
                "org.freedesktop.DBus",
                "NameHasOwner",
                "s",
                name,
            ])
            .output()
            .unwrap();
        assert!(output.status.success(), "{output:?}");
        match String::from_utf8_lossy(&output.stdout).trim() {
            "b true" => true,
            "b false" => false,
            other => panic!("busctl said {other:?}"),
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A configuration file: LoginID on a loopback port nobody needs to answer (nothing is
/// asked of LoginID until a ceremony starts), then `rest`.
fn write_config(dir: &Path, rest: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[loginid]\nbase_url = \"http://127.0.0.1:9\"\napp_id = \"test\"\n\
             origin = \"https://kiosk.example.com\"\nallow_insecure_loopback = true\n\n{rest}"
        ),
    )
    .unwrap();
    path
}

fn serve(dir: &Path, name: &str) -> SocketServer {
    let key = Arc::new(VirtKey::start(Config::default()).unwrap());
    socket::serve(
        key,
        &dir.join(format!("{name}.sock")),
        ServeOptions::default(),
    )
    .unwrap()
}

/// A running `passkeyd`, its stderr lines, and its exit status once it ends. Killed if the
/// test fails before it stops.
struct Daemon {
    pid: Pid,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
    exited: mpsc::Receiver<ExitStatus>,
}

impl Daemon {
    fn start(args: &[&str]) -> Self {
        Self::start_with(args, &[])
    }

    /// With `env`; as systemd does, `WATCHDOG_PID` is set to the daemon's own pid (a shell
    /// learns it, then becomes the daemon).
    fn start_with(args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut child: Child = Command::new("sh")
            .args([
                "-c",
                "WATCHDOG_PID=$$ exec \"$0\" \"$@\"",
                env!("CARGO_BIN_EXE_passkeyd"),
            ])
            .args(args)
            .envs(env.iter().copied())
            .env_remove("RUST_LOG")
            .env_remove("JOURNAL_STREAM")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = Pid::from_child(&child);
        let stderr = child.stderr.take().unwrap();
        let (lines_tx, lines) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                eprintln!("passkeyd: {line}");
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        let (exited_tx, exited) = mpsc::channel();
        thread::spawn(move || {
            let status = child.wait().unwrap();
            let _ = exited_tx.send(status);
        });
        Self {
            pid,
            lines,
            seen: Vec::new(),
            exited,
        }
    }

    /// The first line from now on that matches, within [`WAIT`].
    fn wait_for(&mut self, what: &str, matches: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if matches(&line) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "no log line {what} in time; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// The `key added` lines of the virtual keys `names`, in the order of `names` (the keys
    /// may be announced in any order).
    fn added(&mut self, names: &[&str]) -> Vec<String> {
        let mut found: Vec<Option<String>> = vec![None; names.len()];
        while found.iter().any(Option::is_none) {
            let missing: Vec<&str> = names
                .iter()
                .zip(&found)
                .filter(|(_, line)| line.is_none())
                .map(|(name, _)| *name)
                .collect();
            let line = self.wait_for(&format!("'key added' for {missing:?}"), |line| {
                is_daemon(line, "key added")
            });
            let device = field(&line, "device");
            let index = names
                .iter()
                .position(|name| device == format!("virtual_{name}"))
                .unwrap_or_else(|| panic!("unexpected key in {line:?}"));
            let slot = found.get_mut(index).unwrap();
            assert!(slot.is_none(), "added twice: {line:?}");
            *slot = Some(line);
        }
        found.into_iter().flatten().collect()
    }

    fn signal(&self, signal: Signal) {
        kill_process(self.pid, signal).unwrap();
    }

    fn exit_status(&self) -> ExitStatus {
        self.exited
            .recv_timeout(WAIT)
            .expect("passkeyd exits in time")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.try_recv().is_err() {
            let _ = kill_process(self.pid, Signal::KILL);
        }
    }
}

/// Whether `line` is the daemon module's `message` (the transports and the registry log the
/// same events in their own words).
fn is_daemon(line: &str, message: &str) -> bool {
    line.contains(&format!(" passkeyd::daemon: {message}"))
}

/// `name=value` from a log line (values here have no spaces).
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line
        .find(&format!(" {name}="))
        .unwrap_or_else(|| panic!("no {name}= in {line:?}"))
        + name.len()
        + 2;
    let rest = &line[start..];
    rest.split(' ').next().unwrap()
}

#[test]
fn keys_come_and_go_and_sigterm_stops_the_daemon() {
    let bus = PrivateBus::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("keys");
    std::fs::create_dir(&dir).unwrap();
    let config = write_config(tmp.path(), "");
    let mut daemon = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--address",
        &bus.address,
        "--no-usb",
        "--no-nfc",
        "--virtual-dir",
        dir.to_str().unwrap(),
        "--log-level",
        "info",
    ]);
    let started = daemon.wait_for("'passkeyd started'", |line| {
        is_daemon(line, "passkeyd started")
    });
    assert_eq!(field(&started, "usb"), "false");
    assert_eq!(field(&started, "nfc"), "false");
    assert_eq!(field(&started, "bus_name"), "org.passkeyd");
    // The name is owned before the daemon says it has started.
    assert!(bus.has_owner("org.passkeyd"));
    daemon.wait_for("'enumeration complete'", |line| {
        is_daemon(line, "enumeration complete") && line.contains("transport=virtual")
    });

    let alpha = serve(&dir, "alpha");
    let beta = serve(&dir, "beta");
    let names = ["alpha", "beta"];
    for (name, line) in names.iter().zip(daemon.added(&names)) {
        assert!(line.contains(" INFO "), "{line}");
        assert_eq!(field(&line, "device"), format!("virtual_{name}"));
        assert_eq!(field(&line, "transport"), "virtual");
        assert_eq!(field(&line, "aaguid"), VIRTKEY_AAGUID);
        assert_eq!(field(&line, "versions"), "U2F_V2,FIDO_2_0,FIDO_2_1");
        // CTAPHID protocol 2; WINK and CBOR, and MSG (no NMSG bit).
        let link = field(&line, "link");
        assert!(link.starts_with("hid/2,version="), "{line}");
        assert!(link.ends_with(",capabilities=0x05"), "{line}");
        assert_eq!(
            field(&line, "path"),
            dir.join(format!("{name}.sock")).to_str().unwrap()
        );
        assert_eq!(field(&line, "product"), "virtkey");
    }

    // Unplug: the socket goes.
    drop(beta);
    let removed = daemon.wait_for("'key removed' for beta", |line| {
        is_daemon(line, "key removed")
    });
    assert_eq!(field(&removed, "device"), "virtual_beta");

    daemon.signal(Signal::TERM);
    let status = daemon.exit_status();
    assert_eq!(status.code(), Some(0), "{status:?}");
    // Every line was written before the exit; the reader thread has them.
    daemon.wait_for("'SIGTERM received'", |line| {
        line.contains("SIGTERM received")
    });
    daemon.wait_for("'stopped'", |line| is_daemon(line, "stopped"));
    assert!(!bus.has_owner("org.passkeyd"));
    // Alpha was never reported removed: the daemon went first.
    assert!(
        !daemon
            .seen
            .iter()
            .any(|line| is_daemon(line, "key removed") && line.contains("virtual_alpha")),
        "{:?}",
        daemon.seen
    );
    drop(alpha);
}

#[test]
fn configuration_file_sets_the_transports_and_sigint_stops_the_daemon() {
    let bus = PrivateBus::start();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("virtual keys");
    // The directory does not exist yet: the transport creates it.
    let config = write_config(
        tmp.path(),
        &format!(
            "[transports]\nusb = false\nnfc = false\nvirtual_dir = {:?}\n",
            dir.to_str().unwrap()
        ),
    );
    let mut daemon = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--address",
        &bus.address,
    ]);
    daemon.wait_for("'enumeration complete'", |line| {
        is_daemon(line, "enumeration complete") && line.contains("transport=virtual")
    });
    assert!(dir.is_dir());
    let _gamma = serve(&dir, "gamma");
    let line = daemon.added(&["gamma"]).remove(0);
    assert_eq!(field(&line, "aaguid"), VIRTKEY_AAGUID);

    daemon.signal(Signal::INT);
    let status = daemon.exit_status();
    assert_eq!(status.code(), Some(0), "{status:?}");
    daemon.wait_for("'SIGINT received'", |line| line.contains("SIGINT received"));
}

#[test]
fn a_bad_configuration_file_is_an_error_that_names_it() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "[transports]\nusb_enable = false\n");
    // Refused before the bus is even looked at.
    let mut daemon = Daemon::start(&[
        "--config",
        config.to_str().unwrap(),
        "--address",
        "unix:path=/nonexistent/bus",
    ]);
    let status = daemon.exit_status();
    assert_eq!(status.code(), Some(1), "{status:?}");
    let line = daemon.wait_for("an error line", |line| line.contains("ERROR"));
    assert!(line.contains(config.to_str().unwrap()), "{line}");
    assert!(
        line.contains("invalid configuration at line 8, column 1"),
        "{line}"
    );
    assert!(line.contains("unknown field `usb_enable`"), "{line}");

    // A missing file is named too: no built-in LoginID application to fall back to.
    let absent = tmp.path().join("absent.toml");
    let mut daemon = Daemon::start(&["--config", absent.to_str().unwrap()]);
    assert_eq!(daemon.exit_status().code(), Some(1));
    let line = daemon.wait_for("an error line", |line| line.contains("ERROR"));
    assert!(line.contains(absent.to_str().unwrap()), "{line}");
}

#[test]
fn a_taken_bus_name_is_an_error() {
    let bus = PrivateBus::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "[transports]\nusb = false\nnfc = false\n");
    let args = [
        "--config",
        config.to_str().unwrap(),
        "--address",
        &bus.address,
    ];
    let mut first = Daemon::start(&args);
    first.wait_for("'passkeyd started'", |line| {
        is_daemon(line, "passkeyd started")
    });
    let mut second = Daemon::start(&args);
    assert_eq!(second.exit_status().code(), Some(1));
    let line = second.wait_for("an error line", |line| line.contains("ERROR"));
    assert!(line.contains("org.passkeyd"), "{line}");
    // The first one is unaffected.
    assert!(bus.has_owner("org.passkeyd"));
    first.signal(Signal::TERM);
    assert_eq!(first.exit_status().code(), Some(0));
}

#[test]
fn systemd_hears_ready_watchdog_and_stopping() {
    let bus = PrivateBus::start();
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "[transports]\nusb = false\nnfc = false\n");
    let socket_path = tmp.path().join("notify");
    let socket = UnixDatagram::bind(&socket_path).unwrap();
    socket.set_read_timeout(Some(WAIT)).unwrap();
    let mut daemon = Daemon::start_with(
        &[
            "--config",
            config.to_str().unwrap(),
            "--address",
            &bus.address,
        ],
        &[
            ("NOTIFY_SOCKET", socket_path.to_str().unwrap()),
            // 200 ms: a ping every 100 ms.
            ("WATCHDOG_USEC", "200000"),
        ],
    );
    let receive = || {
        let mut buffer = [0; 512];
        let n = socket.recv(&mut buffer).expect("a notification in time");
        String::from_utf8_lossy(&buffer[..n]).trim_end().to_owned()
    };
    let ready = receive();
    assert!(ready.lines().any(|line| line == "READY=1"), "{ready:?}");
    assert!(
        ready
            .lines()
            .any(|line| line == "STATUS=serving org.passkeyd"),
        "{ready:?}"
    );
    assert!(bus.has_owner("org.passkeyd"));
    // Watchdog pings follow.
    for _ in 0..2 {
        assert_eq!(receive(), "WATCHDOG=1");
    }
    daemon.signal(Signal::TERM);
    loop {
        let message = receive();
        if message == "STOPPING=1" {
            break;
        }
        assert_eq!(message, "WATCHDOG=1");
    }
    assert_eq!(daemon.exit_status().code(), Some(0));
    daemon.wait_for("'stopped'", |line| is_daemon(line, "stopped"));
}
