//! Rig for the D-Bus tests: a private `dbus-daemon` per test (session limits, but any uid
//! may connect, so that a caller can run as another user through `setpriv`), the D-Bus
//! service in this process over the ceremony rig (virtual keys running the firmware, the
//! LoginID emulator), and a raw D-Bus client that can send whatever a hostile caller would.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::collections::HashMap;
use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use futures_util::StreamExt as _;
use passkeyd::dbus::{AccessPolicy, Bus, Limits, Service, ServiceConfig};
use tokio::time::{Instant, timeout};
use zbus::zvariant::{OwnedObjectPath, OwnedValue, Value};

use crate::ceremony_support::device_support::GENEROUS;
use crate::ceremony_support::{Rig, TempDir};

/// The service's name in the tests.
pub const NAME: &str = "org.passkeyd.Test";
pub const MANAGER: &str = "org.passkeyd.Manager1";
pub const CEREMONY: &str = "org.passkeyd.Ceremony1";
pub const ROOT: &str = "/org/passkeyd";
/// The uid/gid a foreign caller runs as (`nobody`).
pub const NOBODY: u32 = 65534;

/// A private message bus: `dbus-daemon --nofork` on a socket in a temporary directory, with
/// the session bus's configuration (its generous limits) plus a policy that lets every uid
/// connect. Killed on drop.
pub struct PrivateBus {
    pub address: String,
    child: Child,
    _dir: TempDir,
}

impl PrivateBus {
    pub fn start() -> Self {
        let dir = TempDir::new();
        // Other users (the foreign caller) must reach the socket.
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.0.join("bus.conf");
        std::fs::write(
            &config,
            r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <include>/usr/share/dbus-1/session.conf</include>
  <policy context="default">
    <allow user="*"/>
  </policy>
</busconfig>
"#,
        )
        .unwrap();
        let mut child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .arg("--nofork")
            .arg("--print-address=1")
            .arg(format!(
                "--address=unix:path={}",
                dir.0.join("bus").display()
            ))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "dbus-daemon said {line:?}");
        Self {
            address,
            child,
            _dir: dir,
        }
    }

    /// A new connection of this process (uid 0) to the bus.
    pub async fn connect(&self) -> zbus::Connection {
        zbus::connection::Builder::address(self.address.as_str())
            .unwrap()
            .build()
            .await
            .unwrap()
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The daemon in this process: the ceremony rig behind `passkeyd::dbus::serve`.
pub struct Daemon {
    pub rig: Rig,
    pub service: Option<Service>,
    pub bus: PrivateBus,
}

impl Daemon {
    /// Starts the service on a fresh private bus with `access` and the default limits.
    pub async fn start(rig: Rig, access: AccessPolicy) -> Self {
        Self::start_with(rig, access, Limits::default()).await
    }

    pub async fn start_with(rig: Rig, access: AccessPolicy, limits: Limits) -> Self {
        let bus = PrivateBus::start();
        let connection = Bus::address(&bus.address).await.unwrap();
        let config = ServiceConfig {
            bus_name: NAME.to_owned(),
            access,
            limits,
        };
        let service = passkeyd::dbus::serve(
            &connection,
            rig.ceremonies.clone(),
            rig.devices.registry.clone(),
            config,
        )
        .await
        .unwrap();
        Self {
            rig,
            service: Some(service),
            bus,
        }
    }

    pub fn service(&self) -> &Service {
        self.service.as_ref().unwrap()
    }

    /// Waits until the service has no live ceremony (running or lingering).
    pub async fn wait_no_ceremony(&self) {
        let give_up = Instant::now() + GENEROUS;
        loop {
            let count = self.service().ceremony_count().await;
            if count == 0 {
                return;
            }
            assert!(Instant::now() < give_up, "{count} ceremonies stay live");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// The object path of the key `id` (e.g. `virtual_good`).
pub fn key_path(id: &str) -> OwnedObjectPath {
    OwnedObjectPath::try_from(format!("/org/passkeyd/authenticator/{id}")).unwrap()
}

/// CreatePasskey options.
pub type Options = HashMap<&'static str, Value<'static>>;

/// The D-Bus error name of a failed call (`None`: it succeeded).
pub fn error_name<T>(result: &zbus::Result<T>) -> Option<String> {
    match result {
        Ok(_) => None,
        Err(zbus::Error::MethodError(name, _, _)) => Some(name.to_string()),
        Err(zbus::Error::FDO(error)) => {
            Some(format!("org.freedesktop.DBus.Error.{}", fdo_name(error)))
        }
        Err(other) => Some(format!("(not a D-Bus error: {other})")),
    }
}

fn fdo_name(error: &zbus::fdo::Error) -> String {
    let debug = format!("{error:?}");
    debug.split('(').next().unwrap_or_default().to_owned()
}

/// The message of a failed call.
pub fn error_message<T>(result: &zbus::Result<T>) -> String {
    match result {
        Ok(_) => String::new(),
        Err(zbus::Error::MethodError(_, message, _)) => message.clone().unwrap_or_default(),
        Err(other) => other.to_string(),
    }
}

/// A caller on the bus.
pub struct Client {
    pub connection: zbus::Connection,
    /// The service's bus name.
    pub service: String,
    /// StateChanged and Completed signals addressed to this caller.
    signals: zbus::MessageStream,
}

/// A ceremony state as StateChanged or GetState tell it.
#[derive(Clone, Debug)]
pub struct StateSeen {
    pub seq: u32,
    pub state: String,
    pub details: HashMap<String, OwnedValue>,
}

impl Client {
    /// Connects, and subscribes to Ceremony1 signals before any call.
    pub async fn connect(bus: &PrivateBus) -> Self {
        Self::connect_to(bus, NAME).await
    }

    /// [`Client::connect`] for the service named `service`.
    pub async fn connect_to(bus: &PrivateBus, service: &str) -> Self {
        let connection = bus.connect().await;
        let rule = zbus::MatchRule::builder()
            .msg_type(zbus::message::Type::Signal)
            .interface(CEREMONY)
            .unwrap()
            .build();
        let signals = zbus::MessageStream::for_match_rule(rule, &connection, Some(1024))
            .await
            .unwrap();
        Self {
            connection,
            service: service.to_owned(),
            signals,
        }
    }

    pub fn unique_name(&self) -> String {
        self.connection.unique_name().unwrap().to_string()
    }

    /// A method call on `path`/`interface` with `body`; the reply message.
    pub async fn call<B>(
        &self,
        path: &str,
        interface: &str,
        method: &str,
        body: &B,
    ) -> zbus::Result<zbus::Message>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType,
    {
        timeout(
            GENEROUS,
            self.connection.call_method(
                Some(self.service.as_str()),
                path,
                Some(interface),
                method,
                body,
            ),
        )
        .await
        .expect("the daemon answers")
    }

    /// CreatePasskey; the ceremony's path.
    pub async fn create(
        &self,
        username: &str,
        token: &str,
        options: Options,
    ) -> zbus::Result<OwnedObjectPath> {
        let reply = self
            .call(ROOT, MANAGER, "CreatePasskey", &(username, token, options))
            .await?;
        reply.body().deserialize::<OwnedObjectPath>()
    }

    /// A Ceremony1 method without arguments and without a reply body.
    pub async fn ceremony_call(&self, path: &str, method: &str) -> zbus::Result<zbus::Message> {
        self.call(path, CEREMONY, method, &()).await
    }

    pub async fn get_state(&self, path: &str) -> zbus::Result<StateSeen> {
        let reply = self.ceremony_call(path, "GetState").await?;
        let (seq, state, details) = reply
            .body()
            .deserialize::<(u32, String, HashMap<String, OwnedValue>)>()?;
        Ok(StateSeen {
            seq,
            state,
            details,
        })
    }

    pub async fn submit_pin(&self, path: &str, pin: &str) -> zbus::Result<zbus::Message> {
        self.call(path, CEREMONY, "SubmitPin", &(pin,)).await
    }

    pub async fn set_new_pin(&self, path: &str, pin: &str) -> zbus::Result<zbus::Message> {
        self.call(path, CEREMONY, "SetNewPin", &(pin,)).await
    }

    pub async fn result(&self, path: &str) -> zbus::Result<HashMap<String, OwnedValue>> {
        let reply = self.ceremony_call(path, "Result").await?;
        reply.body().deserialize::<HashMap<String, OwnedValue>>()
    }

    /// The next StateChanged of the ceremony at `path` (Completed signals are skipped).
    pub async fn next_state(&mut self, path: &str) -> StateSeen {
        loop {
            let message = timeout(GENEROUS, self.signals.next())
                .await
                .expect("the ceremony makes progress")
                .expect("the connection stays")
                .unwrap();
            let header = message.header();
            if header.path().map(|p| p.as_str()) != Some(path)
                || header.member().map(|m| m.as_str()) != Some("StateChanged")
            {
                continue;
            }
            let (seq, state, details) = message
                .body()
                .deserialize::<(u32, String, HashMap<String, OwnedValue>)>()
                .unwrap();
            return StateSeen {
                seq,
                state,
                details,
            };
        }
    }

    /// Follows the ceremony at `path` to its end, answering `needs-pin` from `pins` and
    /// `needs-new-pin` from `new_pins`; returns every state seen.
    pub async fn follow(&mut self, path: &str, pins: &[&str], new_pins: &[&str]) -> Vec<StateSeen> {
        let mut pins = pins.iter();
        let mut new_pins = new_pins.iter();
        let mut seen: Vec<StateSeen> = Vec::new();
        loop {
            let state = self.next_state(path).await;
            if seen.last().is_some_and(|last| last.seq >= state.seq) {
                continue;
            }
            match state.state.as_str() {
                "needs-pin" => {
                    let pin = pins.next().expect("a PIN for every prompt");
                    self.submit_pin(path, pin).await.unwrap();
                }
                "needs-new-pin" => {
                    let pin = new_pins.next().expect("a new PIN for every prompt");
                    self.set_new_pin(path, pin).await.unwrap();
                }
                _ => {}
            }
            let done = matches!(state.state.as_str(), "completed" | "failed" | "cancelled");
            seen.push(state);
            if done {
                return seen;
            }
        }
    }
}

/// A well-behaved caller's whole ceremony: CreatePasskey for a fresh user with a fresh grant
/// on the key `key`, the PIN given when asked, the result read (it holds the LoginID token)
/// and the object released. Returns the LoginID token.
pub async fn well_behaved(daemon: &Daemon, key: &str, pin: &str) -> String {
    let mut client = Client::connect(&daemon.bus).await;
    let username = format!("good-{:08x}@example.com", rand::random::<u32>());
    let token = daemon.rig.grant(&username).await;
    let mut options = Options::new();
    options.insert("authenticator", Value::from(key_path(key)));
    let path = client
        .create(&username, token.expose(), options)
        .await
        .expect("CreatePasskey is accepted");
    let seen = client.follow(path.as_str(), &[pin], &[]).await;
    assert_eq!(
        seen.last().map(|s| s.state.as_str()),
        Some("completed"),
        "{seen:?}"
    );
    let result = client.result(path.as_str()).await.unwrap();
    let token: String = result
        .get("token")
        .expect("the result has the LoginID token")
        .try_clone()
        .unwrap()
        .try_into()
        .unwrap();
    client
        .ceremony_call(path.as_str(), "Release")
        .await
        .unwrap();
    token
}

/// A python3-dbus client run as uid/gid [`NOBODY`] without supplementary groups. `script`
/// gets the bus address as `sys.argv[1]`, the service name as `sys.argv[2]` and `args`
/// after them; returns its standard output (it must exit 0).
pub fn python_as_nobody(bus: &PrivateBus, script: &str, args: &[&str]) -> String {
    let output = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg("/usr/bin/python3")
        .arg("-c")
        .arg(script)
        .arg(&bus.address)
        .arg(NAME)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "python3 failed: {stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A command run as uid/gid [`NOBODY`]; its exit success, stdout and stderr.
pub fn as_nobody(program: &str, args: &[&str]) -> (bool, String, String) {
    let output = Command::new("setpriv")
        .arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(program)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("setpriv runs");
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// Whether this process may run a caller as another uid (`setpriv` needs root). Without it
/// the foreign-caller checks are skipped with a message, except under CI (`CI=true`), where
/// that is a failure.
pub fn may_act_as_nobody() -> bool {
    if rustix::process::geteuid().is_root() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI runs the D-Bus abuse tests as root (setpriv --reuid needs it)"
    );
    eprintln!("not root: the checks of a caller running as another uid are skipped");
    false
}
