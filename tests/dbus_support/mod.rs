//! Rig for the D-Bus tests: a private `dbus-daemon` per test (killed on drop), the LoginID
//! emulator on 127.0.0.1, virtual keys (the Trussed firmware behind `virtkey::socket::serve`)
//! in a temporary directory watched by the virtual-key transport, and the service in-process
//! (registry + transport + `Ceremonies` + `dbus::serve`, as `examples/enroll.rs` assembles
//! them). Clients we did not write drive it: `busctl`, `gdbus` and python3-dbus scripts in
//! this directory.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{BufRead as _, BufReader};
use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use loginid_emulator::{Emulator, EmulatorConfig, ResidentKey, UserVerification};
use passkeyd::ceremony::{Ceremonies, CeremonyConfig};
use passkeyd::dbus::{self, AccessPolicy, Bus, Limits, Service, ServiceConfig};
use passkeyd::device::{DeviceConfig, Registry, RegistryHandle};
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig};
use passkeyd::transport::virt::{self, VirtualConfig, VirtualTransport};
use tokio::sync::mpsc;
use tokio::time::Instant;
use url::Url;

pub const APP_ID: &str = "5b1c2d3e-aaaa-bbbb-cccc-ddddeeeeffff";
pub const ORIGIN: &str = "https://example.com";
pub const RP_ID: &str = "example.com";
pub const API_KEY: &str = "dbus-test-api-key-0123456789";
pub const NAME: &str = "org.passkeyd";

/// Ample time for steps expected to succeed on a loaded two-core machine.
pub const GENEROUS: Duration = Duration::from_secs(90);

/// Debian's python with python3-dbus and python3-gi (the PATH python3 may lack them).
pub const PYTHON: &str = "/usr/bin/python3";

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "passkeyd-dbus-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A private message bus; the daemon is killed on drop.
pub struct PrivateBus {
    child: Child,
    pub address: String,
    _dir: TempDir,
}

impl PrivateBus {
    /// `dbus-daemon --session` on a socket in a fresh directory: only this uid may connect.
    pub fn session() -> Self {
        let dir = TempDir::new();
        let address = format!("unix:path={}", dir.0.join("bus").display());
        let child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--print-address=1"])
            .arg(format!("--address={address}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon runs");
        Self::started(child, dir)
    }

    /// A session-type bus that every uid may connect to (for callers run as another user).
    pub fn open_to_all_users() -> Self {
        let dir = TempDir::new();
        std::fs::set_permissions(&dir.0, std::fs::Permissions::from_mode(0o755)).unwrap();
        let config = dir.0.join("bus.conf");
        std::fs::write(
            &config,
            format!(
                r#"<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-BUS Bus Configuration 1.0//EN"
 "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig>
  <type>session</type>
  <listen>unix:path={}</listen>
  <auth>EXTERNAL</auth>
  <policy context="default">
    <allow user="*"/>
    <allow send_destination="*" eavesdrop="true"/>
    <allow eavesdrop="true"/>
    <allow own="*"/>
  </policy>
</busconfig>
"#,
                dir.0.join("bus").display()
            ),
        )
        .unwrap();
        let child = Command::new("dbus-daemon")
            .arg(format!("--config-file={}", config.display()))
            .args(["--nofork", "--print-address=1"])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("dbus-daemon runs");
        Self::started(child, dir)
    }

    fn started(mut child: Child, dir: TempDir) -> Self {
        // The daemon prints its address once it listens.
        let stdout = child.stdout.take().unwrap();
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "dbus-daemon said {line:?}");
        Self {
            child,
            address,
            _dir: dir,
        }
    }
}

impl Drop for PrivateBus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a test changes in the rig.
pub struct Options {
    pub access: AccessPolicy,
    pub limits: Limits,
    pub open_bus: bool,
    pub emulator: Box<dyn FnOnce(&mut EmulatorConfig)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            access: AccessPolicy::default(),
            limits: Limits::default(),
            open_bus: false,
            emulator: Box::new(touch_only),
        }
    }
}

/// An RP that asks for neither user verification nor a discoverable credential.
pub fn touch_only(config: &mut EmulatorConfig) {
    config.user_verification = UserVerification::Discouraged;
    config.resident_key = ResidentKey::Discouraged;
}

/// An RP that requires user verification (the key's PIN).
pub fn uv_required(config: &mut EmulatorConfig) {
    config.user_verification = UserVerification::Required;
}

pub struct Rig {
    pub service: Option<Service>,
    pub registry: RegistryHandle,
    pub emulator: Emulator,
    pub client: LoginIdClient,
    pub keys: Vec<virtkey::socket::SocketServer>,
    pub keys_dir: TempDir,
    _transport: VirtualTransport,
    pub bus: PrivateBus,
}

impl Rig {
    pub async fn start() -> Self {
        Self::with(Options::default()).await
    }

    pub async fn with(options: Options) -> Self {
        let bus = if options.open_bus {
            PrivateBus::open_to_all_users()
        } else {
            PrivateBus::session()
        };
        let mut config = EmulatorConfig::new(APP_ID, Url::parse(ORIGIN).unwrap(), RP_ID, API_KEY);
        (options.emulator)(&mut config);
        let emulator = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut client_config = LoginIdConfig::new(emulator.base_url(), APP_ID);
        client_config.allow_http_loopback = true;
        client_config.connect_timeout = GENEROUS;
        client_config.request_timeout = GENEROUS;
        let client = LoginIdClient::new(client_config).unwrap();

        let keys_dir = TempDir::new();
        let (events_tx, events_rx) = mpsc::channel(64);
        let registry = Registry::spawn(events_rx, DeviceConfig::default());
        let transport = virt::spawn(
            VirtualConfig {
                dir: keys_dir.0.clone(),
            },
            events_tx,
        )
        .unwrap();
        let mut ceremony_config = CeremonyConfig::new(Url::parse(ORIGIN).unwrap());
        ceremony_config.default_timeout = GENEROUS;
        ceremony_config.max_timeout = GENEROUS * 2;
        let ceremonies =
            Ceremonies::new(registry.clone(), client.clone(), ceremony_config).unwrap();
        let connection = Bus::address(&bus.address).await.unwrap();
        let service = dbus::serve(
            &connection,
            ceremonies,
            registry.clone(),
            ServiceConfig {
                bus_name: NAME.to_owned(),
                access: options.access,
                limits: options.limits,
            },
        )
        .await
        .unwrap();
        Self {
            service: Some(service),
            registry,
            emulator,
            client,
            keys: Vec::new(),
            keys_dir,
            _transport: transport,
            bus,
        }
    }

    pub fn service(&self) -> &Service {
        self.service.as_ref().unwrap()
    }

    /// Plugs a virtual key `virtual_<name>` and waits until the registry lists it.
    pub async fn plug(&mut self, name: &str, config: virtkey::Config) -> String {
        let key = Arc::new(virtkey::VirtKey::start(config).unwrap());
        let server = virtkey::socket::serve(
            key,
            &self.keys_dir.0.join(format!("{name}.sock")),
            virtkey::socket::ServeOptions::default(),
        )
        .unwrap();
        self.keys.push(server);
        let id = format!("virtual_{name}");
        self.wait_until(&format!("{id} listed"), || {
            let registry = self.registry.clone();
            let id = id.clone();
            async move { registry.list().await.iter().any(|d| d.id().as_str() == id) }
        })
        .await;
        id
    }

    /// Whether key `id` is present and idle.
    pub async fn idle(&self, id: &str) -> bool {
        self.registry
            .list()
            .await
            .iter()
            .any(|d| d.id().as_str() == id && !d.busy)
    }

    /// An authorization token for `username` with `reg:write`, as a UI's backend gets it.
    pub async fn grant(&self, username: &str) -> String {
        let request = GrantRequest {
            grants: vec![scope::REG_WRITE.to_owned()],
            username: Some(username.to_owned()),
        };
        let token = self
            .client
            .grant(&ApiKey::new(API_KEY), &request)
            .await
            .unwrap();
        token.expose().to_owned()
    }

    /// Polls `condition` (every 20 ms) until it holds; fails after [`GENEROUS`].
    pub async fn wait_until<F, Fut>(&self, what: &str, mut condition: F)
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = bool>,
    {
        let give_up = Instant::now() + GENEROUS;
        while !condition().await {
            assert!(Instant::now() < give_up, "gave up waiting: {what}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Waits until the service has no ceremony left.
    pub async fn wait_no_ceremonies(&self) {
        let service = self.service();
        let give_up = Instant::now() + GENEROUS;
        while service.ceremony_count().await != 0 {
            assert!(Instant::now() < give_up, "ceremonies stay");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `busctl --address=<bus> ARGS`.
    pub async fn busctl(&self, args: &[&str]) -> Output {
        let mut command = Command::new("busctl");
        command
            .arg(format!("--address={}", self.bus.address))
            .args(args);
        run(command).await
    }

    /// `gdbus SUBCOMMAND --address <bus> ARGS`.
    pub async fn gdbus(&self, subcommand: &str, args: &[&str]) -> Output {
        let mut command = Command::new("gdbus");
        command
            .arg(subcommand)
            .args(["--address", &self.bus.address])
            .args(args);
        run(command).await
    }

    /// Runs a python3-dbus script of this directory with the bus address first.
    pub async fn python(&self, script: &str, args: &[&str]) -> Output {
        let mut command = Command::new(PYTHON);
        command
            .arg(support_dir().join(script))
            .arg(&self.bus.address)
            .args(args);
        run(command).await
    }

    /// A ceremony owned by a python3-dbus client that stays connected until the holder is
    /// dropped.
    pub async fn hold_ceremony(&self, username: &str) -> Holder {
        let token = self.grant(username).await;
        self.hold_ceremony_with(username, &token).await
    }

    /// [`Rig::hold_ceremony`] with this authorization token.
    pub async fn hold_ceremony_with(&self, username: &str, token: &str) -> Holder {
        let mut child = Command::new(PYTHON)
            .arg(support_dir().join("hold.py"))
            .args([self.bus.address.as_str(), username, token])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let path = tokio::task::spawn_blocking(move || {
            let mut line = String::new();
            BufReader::new(stdout).read_line(&mut line).unwrap();
            line.trim().to_owned()
        })
        .await
        .unwrap();
        assert!(
            path.starts_with("/org/passkeyd/ceremony/"),
            "hold.py said {path:?}"
        );
        Holder { child, path }
    }

    /// `Manager1.Ceremonies`, through busctl.
    pub async fn ceremonies_property(&self) -> serde_json::Value {
        let out = self
            .busctl(&[
                "--json=short",
                "get-property",
                NAME,
                "/org/passkeyd",
                "org.passkeyd.Manager1",
                "Ceremonies",
            ])
            .await;
        assert!(out.status.success(), "{}", text(&out.stderr));
        serde_json::from_slice(&out.stdout).unwrap()
    }

    pub async fn shutdown(mut self) {
        if let Some(service) = self.service.take() {
            service.shutdown().await;
        }
    }
}

/// A python script of this directory running alongside a test: its stdout lines are read as
/// they come, a line on its stdin means "go on"; killed on drop.
pub struct Script {
    child: Child,
    lines: mpsc::UnboundedReceiver<String>,
}

impl Script {
    pub fn start(rig: &Rig, script: &str, args: &[&str]) -> Self {
        let mut child = Command::new(PYTHON)
            .arg(support_dir().join(script))
            .arg(&rig.bus.address)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::unbounded_channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, lines }
    }

    /// The python stand-in for polkit's authority (`polkit_mock.py`) in `mode` (`allow`,
    /// `deny`, `hold`), once it owns its name.
    pub async fn polkit(rig: &Rig, mode: &str) -> Self {
        let mut mock = Self::start(rig, "polkit_mock.py", &[mode]);
        assert_eq!(mock.line().await, "ready");
        mock
    }

    /// The next line the script printed.
    pub async fn line(&mut self) -> String {
        tokio::time::timeout(GENEROUS, self.lines.recv())
            .await
            .expect("the script says something")
            .expect("the script runs")
    }

    /// The next line, as JSON.
    pub async fn json(&mut self) -> serde_json::Value {
        let line = self.line().await;
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line:?}: {e}"))
    }

    /// Writes a line to the script's stdin (the polkit mock lets held checks through).
    pub fn release(&mut self) {
        use std::io::Write as _;
        let stdin = self.child.stdin.as_mut().unwrap();
        stdin.write_all(b"go\n").unwrap();
        stdin.flush().unwrap();
    }
}

impl Drop for Script {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A python client holding a ceremony; dropping it disconnects the client.
pub struct Holder {
    child: Child,
    pub path: String,
}

impl Drop for Holder {
    fn drop(&mut self) {
        drop(self.child.stdin.take());
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The directory of this module (for the python scripts).
pub fn support_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/dbus_support")
}

/// Runs `command` on the blocking pool, killed after [`GENEROUS`].
pub async fn run(mut command: Command) -> Output {
    command.stdin(Stdio::null());
    let described = format!("{command:?}");
    tokio::task::spawn_blocking(move || {
        let child = command
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let watchdog = std::thread::spawn(move || {
            if done_rx.recv_timeout(GENEROUS).is_err() {
                let _ = Command::new("kill").arg("-9").arg(pid.to_string()).status();
            }
        });
        let output = child.wait_with_output().unwrap();
        let _ = done_tx.send(());
        let _ = watchdog.join();
        output
    })
    .await
    .unwrap_or_else(|e| panic!("{described}: {e}"))
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The D-Bus error name in a busctl/gdbus/python error output, if any.
pub fn error_name(output: &Output) -> String {
    let all = format!("{}{}", text(&output.stdout), text(&output.stderr));
    all.split(|c: char| c.is_whitespace() || matches!(c, ':' | '(' | ')' | ',' | '"' | '\''))
        .find(|w| {
            w.starts_with("org.passkeyd.Error.") || w.starts_with("org.freedesktop.DBus.Error.")
        })
        .unwrap_or("")
        .to_owned()
}
