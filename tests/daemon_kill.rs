//! `passkeyd` killed with SIGKILL in the middle of a ceremony, then started again: the key it
//! was using (a virtual key waiting for a touch) is usable at once. The new daemon's
//! connection to the key gets a fresh CTAPHID INIT (the "key added" line carries the INIT
//! answer) and a ceremony through it completes.
//!
//! The real binary on a private bus, its virtual-key transport on a directory where this
//! test serves a key (the firmware in this process, so that the test sees the socket's
//! connections come and go and decides when the key is touched), and the LoginID emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse_support;
mod ceremony_support;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use abuse_support::{Client, Options, PrivateBus, key_path};
use ceremony_support::device_support::GENEROUS;
use ceremony_support::{API_KEY, APP_ID, ORIGIN, TempDir, emulator_config, touch_only};
use loginid_emulator::Emulator;
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig};
use tokio::time::Instant;
use virtkey::socket::{ServeOptions, ServerEvent};
use virtkey::{Config, TouchPolicy, VirtKey};
use zbus::zvariant::Value;

/// The daemon's well-known name.
const SERVICE: &str = "org.passkeyd";

/// The next event of the key's socket server.
async fn server_event(
    events: &Arc<std::sync::Mutex<std_mpsc::Receiver<ServerEvent>>>,
) -> ServerEvent {
    let events = Arc::clone(events);
    tokio::task::spawn_blocking(move || events.lock().unwrap().recv_timeout(GENEROUS))
        .await
        .unwrap()
        .expect("the key's socket sees the daemon")
}

/// A `passkeyd` process on `bus`, logging to `log`.
fn start_daemon(config: &Path, bus: &PrivateBus, log: &Path) -> Child {
    Command::new(env!("CARGO_BIN_EXE_passkeyd"))
        .arg("--config")
        .arg(config)
        .arg("--address")
        .arg(&bus.address)
        .arg("--log-level")
        .arg("info,passkeyd=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap())
        .spawn()
        .expect("passkeyd starts")
}

/// Waits until `log` has a line containing every one of `parts`; returns it.
async fn log_line(log: &Path, parts: &[&str], daemon: &mut Child) -> String {
    let give_up = Instant::now() + GENEROUS;
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text
            .lines()
            .find(|line| parts.iter().all(|part| line.contains(part)))
        {
            return line.to_owned();
        }
        assert!(
            daemon.try_wait().unwrap().is_none(),
            "passkeyd ended; its log:\n{text}"
        );
        assert!(
            Instant::now() < give_up,
            "no line with {parts:?}; the log:\n{text}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_killed_mid_ceremony_leaves_the_key_usable_at_once() {
    let dir = TempDir::new();
    let bus = PrivateBus::start();
    let mut emulator_config = emulator_config();
    touch_only(&mut emulator_config);
    let emulator = Emulator::start(emulator_config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    // The key, never touched for now.
    let key = Arc::new(
        VirtKey::start(Config {
            touch: TouchPolicy::Never,
            ..Config::default()
        })
        .unwrap(),
    );
    let (events_tx, events_rx) = std_mpsc::channel();
    let events = Arc::new(std::sync::Mutex::new(events_rx));
    let keys = dir.0.join("keys");
    std::fs::create_dir_all(&keys).unwrap();
    let _server = virtkey::socket::serve(
        Arc::clone(&key),
        &keys.join("k1.sock"),
        ServeOptions {
            events: Some(events_tx),
            ..ServeOptions::default()
        },
    )
    .unwrap();

    let config = dir.0.join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[loginid]\nbase_url = \"{}\"\napp_id = \"{APP_ID}\"\norigin = \"{ORIGIN}\"\n\
             allow_insecure_loopback = true\n\n[transports]\nusb = false\nnfc = false\n\
             virtual_dir = \"{}\"\n",
            emulator.base_url(),
            keys.display()
        ),
    )
    .unwrap();
    let mut client_config = LoginIdConfig::new(emulator.base_url(), APP_ID);
    client_config.allow_http_loopback = true;
    let loginid = LoginIdClient::new(client_config).unwrap();
    let grant = async |username: &str| {
        let request = GrantRequest {
            grants: vec![scope::REG_WRITE.to_owned()],
            username: Some(username.to_owned()),
        };
        loginid
            .grant(&ApiKey::new(API_KEY), &request)
            .await
            .unwrap()
    };
    let options = || Options::from([("authenticator", Value::from(key_path("virtual_k1")))]);

    // The first daemon, in the middle of a ceremony: the key waits for a touch.
    let first_log = dir.0.join("first.log");
    let mut first = start_daemon(&config, &bus, &first_log);
    assert!(matches!(
        server_event(&events).await,
        ServerEvent::Connected
    ));
    log_line(&first_log, &["key added", "device=virtual_k1"], &mut first).await;
    log_line(&first_log, &["serving on the bus"], &mut first).await;
    let mut caller = Client::connect_to(&bus, SERVICE).await;
    let token = grant("first@example.com").await;
    let path = caller
        .create("first@example.com", token.expose(), options())
        .await
        .unwrap();
    loop {
        if caller.next_state(path.as_str()).await.state == "needs-touch" {
            break;
        }
    }

    // SIGKILL: no destructor, no CANCEL to the key; the socket just closes.
    first.kill().unwrap();
    first.wait().unwrap();
    assert!(matches!(
        server_event(&events).await,
        ServerEvent::Disconnected
    ));
    key.set_touch(TouchPolicy::Auto);

    // The next daemon gets the key at once: a new connection, a fresh INIT, a ceremony.
    let second_log = dir.0.join("second.log");
    let mut second = start_daemon(&config, &bus, &second_log);
    assert!(matches!(
        server_event(&events).await,
        ServerEvent::Connected
    ));
    let added = log_line(
        &second_log,
        &["key added", "device=virtual_k1"],
        &mut second,
    )
    .await;
    // The CTAPHID_INIT answer of this connection.
    assert!(added.contains("link=hid/2,"), "{added}");
    log_line(&second_log, &["channel allocated"], &mut second).await;
    log_line(&second_log, &["serving on the bus"], &mut second).await;
    let mut caller = Client::connect_to(&bus, SERVICE).await;
    let token = grant("second@example.com").await;
    let path = caller
        .create("second@example.com", token.expose(), options())
        .await
        .unwrap();
    let seen = caller.follow(path.as_str(), &[], &[]).await;
    assert_eq!(
        seen.last().map(|s| s.state.as_str()),
        Some("completed"),
        "{seen:?}"
    );
    let result = caller.result(path.as_str()).await.unwrap();
    assert!(result.contains_key("token"));
    caller
        .ceremony_call(path.as_str(), "Release")
        .await
        .unwrap();

    // A clean stop this time.
    rustix::process::kill_process(
        rustix::process::Pid::from_child(&second),
        rustix::process::Signal::TERM,
    )
    .unwrap();
    let status = second.wait().unwrap();
    assert!(status.success(), "{status}");
}
