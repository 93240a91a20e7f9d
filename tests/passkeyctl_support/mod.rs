//! Rig for the D-Bus client tests: a private `dbus-daemon`, the LoginID emulator, virtual
//! keys on sockets in a temporary directory (the daemon's virtual-key transport finds them),
//! and the daemon in-process (`daemon::run` on that bus, configured as `passkeyd` would be from
//! its TOML file). Everything it starts stops when the rig is dropped.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Arc;
use std::time::Duration;

use loginid_emulator::{Emulator, EmulatorConfig, ResidentKey, UserVerification};
use passkeyd::daemon::{self, Config, DaemonError};
use passkeyd::dbus::Bus;
use passkeyd::dbus::client::Client;
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig, Token};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use url::Url;

pub const APP_ID: &str = "passkeyctl-test-app";
pub const ORIGIN: &str = "https://kiosk.example.com";
pub const RP_ID: &str = "example.com";
pub const API_KEY: &str = "passkeyctl-test-api-key-0123456789";
pub const PIN: &str = "1234";

/// How long any one step of a test may take.
pub const STEP: Duration = Duration::from_secs(60);

/// A private session-type bus on a socket in the test's directory; killed on drop.
pub struct DbusDaemon {
    child: Child,
    pub address: String,
}

impl DbusDaemon {
    pub fn start(dir: &Path) -> Self {
        let mut child = Command::new("dbus-daemon")
            .arg("--session")
            .arg("--nofork")
            .arg("--print-address=1")
            .arg(format!("--address=unix:path={}", dir.join("bus").display()))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            // It complains that it cannot raise its fd limit when not run as a service.
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian package dbus-daemon) must be installed");
        let stdout = child.stdout.take().unwrap();
        // The daemon prints its address once it listens.
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).unwrap();
        let address = line.trim().to_owned();
        assert!(address.starts_with("unix:"), "dbus-daemon said {line:?}");
        Self { child, address }
    }
}

impl Drop for DbusDaemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A virtual key served on `<dir>/keys/<name>.sock`.
pub struct Key {
    pub key: Arc<virtkey::VirtKey>,
    _server: virtkey::socket::SocketServer,
}

/// How the rig is set up.
pub struct RigConfig {
    /// The relying party's user verification requirement.
    pub user_verification: UserVerification,
    /// Keys to plug before the service starts: socket name (`key0` is `virtual_key0`) and
    /// settings.
    pub keys: Vec<(&'static str, virtkey::Config)>,
}

impl Default for RigConfig {
    /// UV required, one key with [`PIN`].
    fn default() -> Self {
        Self {
            user_verification: UserVerification::Required,
            keys: vec![("key0", with_pin(Some(PIN)))],
        }
    }
}

/// Key settings: touched at once, with `pin`.
pub fn with_pin(pin: Option<&str>) -> virtkey::Config {
    virtkey::Config {
        pin: pin.map(str::to_owned),
        ..virtkey::Config::default()
    }
}

pub struct Rig {
    pub emulator: Emulator,
    pub loginid: LoginIdClient,
    stop: Option<oneshot::Sender<()>>,
    daemon: Option<JoinHandle<Result<(), DaemonError>>>,
    pub keys: Vec<Key>,
    // Dropped last: the bus, then the directory.
    pub dbus: DbusDaemon,
    pub dir: tempfile::TempDir,
}

impl Rig {
    pub async fn start(config: RigConfig) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let dbus = DbusDaemon::start(dir.path());

        let mut emulator_config =
            EmulatorConfig::new(APP_ID, Url::parse(ORIGIN).unwrap(), RP_ID, API_KEY);
        emulator_config.user_verification = config.user_verification;
        emulator_config.resident_key = ResidentKey::Discouraged;
        let emulator = Emulator::start(emulator_config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut loginid_config = LoginIdConfig::new(emulator.base_url(), APP_ID);
        loginid_config.allow_http_loopback = true;
        let loginid = LoginIdClient::new(loginid_config).unwrap();

        let keys_dir = dir.path().join("keys");
        std::fs::create_dir_all(&keys_dir).unwrap();
        let mut keys = Vec::new();
        for (name, key_config) in &config.keys {
            keys.push(serve_key(&keys_dir, name, key_config.clone()));
        }

        let daemon_config = Config::from_toml(&format!(
            "[loginid]\n\
             base_url = \"{}\"\n\
             app_id = \"{APP_ID}\"\n\
             origin = \"{ORIGIN}\"\n\
             allow_insecure_loopback = true\n\
             [transports]\n\
             usb = false\n\
             nfc = false\n\
             virtual_dir = \"{}\"\n",
            emulator.base_url(),
            keys_dir.display(),
        ))
        .unwrap();
        let bus = Bus::address(&dbus.address).await.unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let daemon = tokio::spawn(daemon::run(bus, daemon_config, async {
            let _ = stopped.await;
        }));

        let rig = Self {
            emulator,
            loginid,
            stop: Some(stop),
            daemon: Some(daemon),
            keys,
            dbus,
            dir,
        };
        rig.wait_for_keys(config.keys.len()).await;
        rig
    }

    /// A client on its own connection, as another process would be.
    pub async fn client(&self) -> Client {
        let bus = Bus::address(&self.dbus.address).await.unwrap();
        Client::new(&bus).await.unwrap()
    }

    /// Waits until the daemon owns its name and shows `count` keys.
    pub async fn wait_for_keys(&self, count: usize) {
        let bus = Bus::address(&self.dbus.address).await.unwrap();
        tokio::time::timeout(STEP, async {
            loop {
                if self.daemon.as_ref().is_some_and(JoinHandle::is_finished) {
                    panic!("the daemon stopped at start-up");
                }
                if let Ok(client) = Client::new(&bus).await
                    && client.authenticators().await.unwrap().len() == count
                {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the daemon or the keys did not appear on the bus");
    }

    /// An authorization token for `username` (LoginID `mgmt/grant`, `reg:write`).
    pub async fn grant(&self, username: &str) -> Token {
        let request = GrantRequest {
            grants: vec![scope::REG_WRITE.to_owned()],
            username: Some(username.to_owned()),
        };
        self.loginid
            .grant(&ApiKey::new(API_KEY), &request)
            .await
            .unwrap()
    }

    /// Runs `passkeyctl --address <bus> ARGS` with `stdin`, with a deadline.
    pub async fn passkeyctl(&self, args: &[&str], stdin: &str) -> Output {
        let mut all = vec!["--address", self.dbus.address.as_str()];
        all.extend_from_slice(args);
        run(env!("CARGO_BIN_EXE_passkeyctl"), &all, stdin).await
    }

    /// Stops the daemon as SIGTERM would, and checks that it ended cleanly.
    pub async fn shutdown(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(daemon) = self.daemon.take() {
            tokio::time::timeout(STEP, daemon)
                .await
                .expect("the daemon did not stop in time")
                .unwrap()
                .unwrap();
        }
    }
}

/// Serves a virtual key on `<dir>/<name>.sock`.
pub fn serve_key(dir: &Path, name: &str, config: virtkey::Config) -> Key {
    let key = Arc::new(virtkey::VirtKey::start(config).unwrap());
    let server = virtkey::socket::serve(
        key.clone(),
        &dir.join(format!("{name}.sock")),
        virtkey::socket::ServeOptions::default(),
    )
    .unwrap();
    Key {
        key,
        _server: server,
    }
}

/// Runs a program with `stdin` written to it, killed if it outlives [`STEP`].
pub async fn run(program: impl AsRef<std::ffi::OsStr>, args: &[&str], stdin: &str) -> Output {
    use tokio::io::AsyncWriteExt as _;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.as_bytes()).await.unwrap();
    drop(input);
    tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .expect("the program did not end in time")
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// The one JSON object on stdout.
pub fn json(output: &Output) -> serde_json::Value {
    let text = stdout(output);
    assert_eq!(
        text.lines().count(),
        1,
        "expected one line of JSON, got {text:?} (stderr {})",
        stderr(output)
    );
    serde_json::from_str(&text).unwrap()
}

/// The directory the virtual-key transport watches.
pub fn keys_dir(rig: &Rig) -> PathBuf {
    rig.dir.path().join("keys")
}
