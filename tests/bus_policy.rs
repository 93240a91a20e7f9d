//! The shipped system-bus policy (`dbus/org.passkeyd.conf`), enforced by a real dbus-daemon.
//!
//! A private `<type>system</type>` bus with Debian's default system policy includes the policy
//! file exactly as installed. The users and groups it names come from the shipped sysusers
//! file (`systemd-sysusers systemd/passkeyd.sysusers`). Processes are started under other
//! identities with `setpriv`, so the test needs root; CI runs as root, and anywhere else it
//! fails and says so instead of passing without having checked anything.
//!
//! Shown: only the user `passkeyd` may own `org.passkeyd` (root, a member of
//! `passkeyd-users` and an outsider get AccessDenied); root and members of `passkeyd-users`
//! reach the service's interfaces; an outsider, even one in the service's own group
//! `passkeyd`, is refused every one of them.
//!
//! The name's owner is the real daemon (`passkeyd --address`), run as `passkeyd` with an
//! allow-list naming `passkeyd-users`, so an allowed caller gets the service's own answer (an
//! `InvalidArgument` for an empty request, after the service's own authorization), while a
//! refused one never reaches it.

// Helpers outside #[test] functions panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::fs;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

/// Bound for anything that should happen at once on a loaded machine.
const WAIT: Duration = Duration::from_secs(30);

/// The D-Bus error a policy refusal produces.
const ACCESS_DENIED: &str = "org.freedesktop.DBus.Error.AccessDenied";

/// uid/gid of `nobody`/`nogroup` on Debian: an identity the policy does not name.
const NOBODY: u32 = 65534;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Debian's default system-bus policy (/usr/share/dbus-1/system.conf), then the file under
/// test, as the system bus includes `system.d/*.conf`.
fn bus_config(socket: &Path, policy: &Path) -> String {
    format!(
        r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>system</type>
  <listen>unix:path={socket}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <deny own="*"/>
    <deny send_type="method_call"/>
    <allow send_type="signal"/>
    <allow send_requested_reply="true" send_type="method_return"/>
    <allow send_requested_reply="true" send_type="error"/>
    <allow receive_type="method_call"/>
    <allow receive_type="method_return"/>
    <allow receive_type="error"/>
    <allow receive_type="signal"/>
    <allow send_destination="org.freedesktop.DBus" send_interface="org.freedesktop.DBus"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Introspectable"/>
    <allow send_destination="org.freedesktop.DBus"
           send_interface="org.freedesktop.DBus.Properties"/>
  </policy>
  <include>{policy}</include>
</busconfig>
"#,
        socket = socket.display(),
        policy = policy.display(),
    )
}

/// The daemon's configuration: no transports (nothing to find), a LoginID it never reaches
/// (nothing here starts a ceremony), callers from `passkeyd-users`.
const DAEMON_CONFIG: &str = r#"
[loginid]
base_url = "http://127.0.0.1:9"
app_id = "bus-policy-test"
origin = "https://kiosk.example.com"
allow_insecure_loopback = true

[transports]
usb = false
nfc = false

[access]
allowed_groups = ["passkeyd-users"]
"#;

/// A child process killed when dropped (a failed assertion must not leave it running).
struct Guard(Child);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// An identity for `setpriv`.
#[derive(Clone, Copy, Debug)]
struct Identity {
    uid: u32,
    gid: u32,
    /// Supplementary group, if any.
    group: Option<u32>,
}

impl Identity {
    fn command(self, program: &str) -> Command {
        let mut command = Command::new("setpriv");
        command
            .arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid));
        match self.group {
            Some(group) => command.arg(format!("--groups={group}")),
            None => command.arg("--clear-groups"),
        };
        command.arg("--").arg(program);
        command
    }
}

/// A numeric id from `id`/`getent`: the first field that parses.
fn lookup(program: &str, args: &[&str], field: usize) -> u32 {
    let output = Command::new(program).args(args).output().unwrap();
    assert!(output.status.success(), "{program} {args:?}: {output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let value = text.trim().split(':').nth(field).unwrap();
    value
        .parse()
        .unwrap_or_else(|_| panic!("{program} {args:?}: {text}"))
}

/// `gdbus call` as `who`; returns the output.
fn call(
    who: Identity,
    address: &str,
    dest: &str,
    path: &str,
    method: &str,
    args: &[&str],
) -> Output {
    who.command("gdbus")
        .args(["call", "--address", address, "--dest", dest])
        .args(["--object-path", path, "--method", method, "--timeout", "20"])
        .args(args)
        .env("HOME", "/nonexistent")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn assert_denied(who: Identity, output: &Output, what: &str) {
    assert!(
        !output.status.success(),
        "{who:?} {what}: allowed: {output:?}"
    );
    assert!(
        stderr(output).contains(ACCESS_DENIED),
        "{who:?} {what}: {output:?}"
    );
}

fn request_name(who: Identity, address: &str) -> Output {
    call(
        who,
        address,
        "org.freedesktop.DBus",
        "/org/freedesktop/DBus",
        "org.freedesktop.DBus.RequestName",
        // DBUS_NAME_FLAG_DO_NOT_QUEUE
        &["org.passkeyd", "uint32 4"],
    )
}

/// The calls a client makes: a Manager1 method, a property read, introspection.
fn service_calls(who: Identity, address: &str) -> [(&'static str, Output); 3] {
    let path = "/org/passkeyd";
    [
        (
            "Manager1.CreatePasskey",
            call(
                who,
                address,
                "org.passkeyd",
                path,
                "org.passkeyd.Manager1.CreatePasskey",
                &["''", "''", "@a{sv} {}"],
            ),
        ),
        (
            "Properties.Get",
            call(
                who,
                address,
                "org.passkeyd",
                path,
                "org.freedesktop.DBus.Properties.Get",
                &["org.passkeyd.Manager1", "Version"],
            ),
        ),
        (
            "Introspectable.Introspect",
            call(
                who,
                address,
                "org.passkeyd",
                path,
                "org.freedesktop.DBus.Introspectable.Introspect",
                &[],
            ),
        ),
    ]
}

/// Reads lines of `reader` on a thread; the receiver sees them as they come.
fn lines(reader: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

#[test]
fn only_the_service_user_owns_the_name_and_only_allowed_callers_reach_it() {
    assert!(
        rustix::process::geteuid().is_root(),
        "tests/bus_policy.rs needs root: it creates the service's user and groups with \
         systemd-sysusers and runs clients as other users with setpriv (CI runs as root; \
         elsewhere run `sudo -E cargo test --test bus_policy`)"
    );

    // The identities the policy names, from the shipped sysusers file.
    let sysusers = repo().join("systemd/passkeyd.sysusers");
    let status = Command::new("systemd-sysusers")
        .arg(&sysusers)
        .status()
        .unwrap();
    assert!(status.success(), "systemd-sysusers {}", sysusers.display());
    let service_uid = lookup("getent", &["passwd", "passkeyd"], 2);
    let service_gid = lookup("getent", &["passwd", "passkeyd"], 3);
    let users_gid = lookup("getent", &["group", "passkeyd-users"], 2);
    let service = Identity {
        uid: service_uid,
        gid: service_gid,
        group: None,
    };
    let root = Identity {
        uid: 0,
        gid: 0,
        group: None,
    };
    let member = Identity {
        uid: NOBODY,
        gid: NOBODY,
        group: Some(users_gid),
    };
    let outsider = Identity {
        uid: NOBODY,
        gid: NOBODY,
        group: None,
    };

    // The bus, reachable by every user.
    let dir = tempfile::tempdir().unwrap();
    fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
    let config = dir.path().join("system.conf");
    let socket = dir.path().join("system_bus_socket");
    fs::write(
        &config,
        bus_config(&socket, &repo().join("dbus/org.passkeyd.conf")),
    )
    .unwrap();
    let mut bus = Command::new("dbus-daemon")
        .arg(format!("--config-file={}", config.display()))
        .args(["--nofork", "--print-address=1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let bus_out = lines(bus.stdout.take().unwrap());
    let bus_err = lines(bus.stderr.take().unwrap());
    let _bus = Guard(bus);
    let address = bus_out
        .recv_timeout(WAIT)
        .expect("dbus-daemon printed no address");
    // A policy naming an unknown user or group is only a warning to dbus-daemon: none allowed.
    thread::sleep(Duration::from_millis(200));
    // (Raising the fd limit needs CAP_SYS_RESOURCE, which containers often lack: harmless.)
    let warnings: Vec<String> = bus_err
        .try_iter()
        .filter(|line| !line.contains("Failed to set fd limit"))
        .collect();
    assert!(warnings.is_empty(), "dbus-daemon: {warnings:?}");

    // Nobody but passkeyd may own the name (tried while it is free).
    for who in [root, member, outsider] {
        assert_denied(
            who,
            &request_name(who, &address),
            "RequestName org.passkeyd",
        );
    }

    // passkeyd may: the daemon, started as passkeyd, takes the name.
    let daemon_config = dir.path().join("config.toml");
    fs::write(&daemon_config, DAEMON_CONFIG).unwrap();
    fs::set_permissions(&daemon_config, fs::Permissions::from_mode(0o644)).unwrap();
    let mut daemon = service
        .command(env!("CARGO_BIN_EXE_passkeyd"))
        .arg("--address")
        .arg(&address)
        .arg("--config")
        .arg(&daemon_config)
        .args(["--log-level", "warn"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let daemon_err = lines(daemon.stderr.take().unwrap());
    let mut daemon = Guard(daemon);
    let deadline = Instant::now() + WAIT;
    loop {
        let owner = call(
            root,
            &address,
            "org.freedesktop.DBus",
            "/org/freedesktop/DBus",
            "org.freedesktop.DBus.GetNameOwner",
            &["org.passkeyd"],
        );
        if owner.status.success() {
            break;
        }
        if daemon.0.try_wait().unwrap().is_some() || Instant::now() > deadline {
            let errors: Vec<String> = daemon_err.try_iter().collect();
            panic!("passkeyd did not own org.passkeyd: {errors:?}");
        }
        thread::sleep(Duration::from_millis(100));
    }

    // Allowed callers reach the service: its own answers come back.
    for who in [root, member] {
        let [(_, create), (_, get), (_, introspect)] = service_calls(who, &address);
        assert!(
            stderr(&create).contains("org.passkeyd.Error.InvalidArgument"),
            "{who:?} CreatePasskey: {create:?}"
        );
        assert!(get.status.success(), "{who:?} Properties.Get: {get:?}");
        assert_eq!(
            String::from_utf8_lossy(&get.stdout).trim(),
            format!("(<'{}'>,)", env!("CARGO_PKG_VERSION")),
            "{who:?}"
        );
        assert!(
            introspect.status.success(),
            "{who:?} Introspect: {introspect:?}"
        );
        assert!(
            String::from_utf8_lossy(&introspect.stdout).contains("org.passkeyd.Manager1"),
            "{who:?} Introspect: {introspect:?}"
        );
    }

    // Everyone else is refused by the bus before the service sees anything.
    for (what, output) in service_calls(outsider, &address) {
        assert_denied(outsider, &output, what);
    }
    // Membership in the service's own group (hidraw access) does not make a caller.
    let device_group = Identity {
        uid: NOBODY,
        gid: NOBODY,
        group: Some(service_gid),
    };
    for (what, output) in service_calls(device_group, &address) {
        assert_denied(device_group, &output, what);
    }
}
