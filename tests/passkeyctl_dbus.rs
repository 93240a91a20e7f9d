#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `passkeyctl` and `passkeyd::dbus::client` against the service on a private `dbus-daemon`,
//! with virtual keys and the LoginID emulator: registrations (PIN from stdin, as an argument,
//! a new PIN), their failures as JSON, the key commands, cancellation and the exit statuses.

mod passkeyctl_support;

use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use loginid_emulator::UserVerification;
use passkeyctl_support::{
    PIN, Rig, RigConfig, STEP, json, keys_dir, serve_key, stderr, stdout, with_pin,
};
use passkeyd::ceremony::{ErrorKind, State};
use passkeyd::dbus::client::{ClientError, Event, PasskeyRequest};

const KEY_PATH: &str = "/org/passkeyd/authenticator/virtual_key0";

fn code(output: &std::process::Output) -> i32 {
    output.status.code().unwrap()
}

/// Checks the success object of `register --json` and returns it.
fn assert_registered(output: &std::process::Output) -> serde_json::Value {
    assert_eq!(code(output), 0, "stderr: {}", stderr(output));
    let result = json(output);
    let object = result.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "authenticator",
            "credential_id",
            "passkey_id",
            "token",
            "user_id"
        ]
    );
    assert_eq!(result["authenticator"], KEY_PATH);
    let credential_id = URL_SAFE_NO_PAD
        .decode(result["credential_id"].as_str().unwrap())
        .unwrap();
    assert!(credential_id.len() >= 16, "credential id {credential_id:?}");
    assert!(!result["user_id"].as_str().unwrap().is_empty());
    assert!(!result["passkey_id"].as_str().unwrap().is_empty());
    // A JWS: three base64url parts.
    assert_eq!(result["token"].as_str().unwrap().split('.').count(), 3);
    result
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_json_with_pin_from_stdin_and_the_token_verifies() {
    let rig = Rig::start(RigConfig::default()).await;
    let grant = rig.grant("alice@example.com").await;
    let output = rig
        .passkeyctl(
            &[
                "register",
                "--username",
                "alice@example.com",
                "--token",
                "-",
                "--pin-stdin",
                "--json",
            ],
            &format!("{}\n{PIN}\n", grant.expose()),
        )
        .await;
    let result = assert_registered(&output);
    assert!(!stderr(&output).contains(PIN));

    // verify-token, token from stdin.
    let token = result["token"].as_str().unwrap();
    let output = rig
        .passkeyctl(
            &["verify-token", "--username", "alice@example.com", "--json"],
            &format!("{token}\n"),
        )
        .await;
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let claims = json(&output);
    assert_eq!(claims["username"], "alice@example.com");
    assert_eq!(claims["sub"], result["user_id"]);
    assert!(claims["exp"].as_i64().unwrap() > claims["iat"].as_i64().unwrap());

    // The same token for someone else does not verify.
    let output = rig
        .passkeyctl(
            &[
                "verify-token",
                token,
                "--username",
                "bob@example.com",
                "--json",
            ],
            "",
        )
        .await;
    assert_eq!(code(&output), 1);
    assert_eq!(json(&output)["error"], "org.passkeyd.Error.TokenRejected");

    // The ceremony object was released.
    let client = rig.client().await;
    assert!(client.ceremonies().await.unwrap().is_empty());
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn register_text_prints_only_the_token_on_stdout() {
    let rig = Rig::start(RigConfig::default()).await;
    let grant = rig.grant("carol@example.com").await;
    let output = rig
        .passkeyctl(
            &[
                "register",
                "--username",
                "carol@example.com",
                "--token",
                grant.expose(),
                "--pin",
                PIN,
                "--authenticator",
                "virtual_key0",
                "--display-name",
                "Carol",
                "--timeout",
                "60",
            ],
            "",
        )
        .await;
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let out = stdout(&output);
    assert_eq!(out.lines().count(), 1);
    assert_eq!(out.trim_end().split('.').count(), 3);
    let err = stderr(&output);
    assert!(err.contains("touch your key"), "stderr: {err}");
    assert!(
        err.contains("passkey created on virtual_key0"),
        "stderr: {err}"
    );
    assert!(!err.contains(PIN) && !err.contains(out.trim_end()));
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn new_pin_is_set_on_a_key_without_one_when_uv_is_required() {
    let rig = Rig::start(RigConfig {
        user_verification: UserVerification::Required,
        keys: vec![("key0", with_pin(None))],
    })
    .await;
    let output = rig
        .passkeyctl(&["info", "virtual_key0", "--json"], "")
        .await;
    assert_eq!(json(&output)["pin_set"], false);

    // Without --new-pin, and nobody at a terminal: PinRequired.
    let grant = rig.grant("dave@example.com").await;
    let output = rig
        .passkeyctl(
            &[
                "register",
                "--username",
                "dave@example.com",
                "--token",
                grant.expose(),
                "--json",
            ],
            "",
        )
        .await;
    assert_eq!(code(&output), 1);
    let failure = json(&output);
    assert_eq!(failure["error"], "org.passkeyd.Error.PinRequired");
    assert!(
        failure["message"].as_str().unwrap().contains("--new-pin"),
        "{failure}"
    );

    let grant = rig.grant("dave@example.com").await;
    let output = rig
        .passkeyctl(
            &[
                "register",
                "--username",
                "dave@example.com",
                "--token",
                grant.expose(),
                "--new-pin",
                "5678",
                "--json",
            ],
            "",
        )
        .await;
    assert_registered(&output);
    assert!(!stderr(&output).contains("5678"));

    let output = rig.passkeyctl(&["info", KEY_PATH, "--json"], "").await;
    let info = json(&output);
    assert_eq!(info["pin_set"], true);
    assert_eq!(info["pin_retries"], 8);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_pin_is_one_json_error_and_exit_1() {
    let rig = Rig::start(RigConfig::default()).await;
    let grant = rig.grant("erin@example.com").await;
    let output = rig
        .passkeyctl(
            &[
                "register",
                "--username",
                "erin@example.com",
                "--token",
                "-",
                "--pin-stdin",
                "--json",
            ],
            &format!("{}\n9999\n", grant.expose()),
        )
        .await;
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    let failure = json(&output);
    assert_eq!(failure["error"], "org.passkeyd.Error.PinInvalid");
    assert!(failure["message"].is_string());
    assert_eq!(failure.as_object().unwrap().len(), 2);
    assert!(!stdout(&output).contains("9999") && !stderr(&output).contains("9999"));

    // One retry spent, nothing else.
    let output = rig
        .passkeyctl(&["info", "virtual_key0", "--json"], "")
        .await;
    assert_eq!(json(&output)["pin_retries"], 7);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_info_and_wink() {
    let rig = Rig::start(RigConfig {
        user_verification: UserVerification::Required,
        keys: vec![("key0", with_pin(Some(PIN))), ("key1", with_pin(None))],
    })
    .await;

    let output = rig.passkeyctl(&["list"], "").await;
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    let text = stdout(&output);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(lines[0].starts_with("ID"));
    let key0 = lines
        .iter()
        .find(|l| l.starts_with("virtual_key0"))
        .unwrap();
    let key1 = lines
        .iter()
        .find(|l| l.starts_with("virtual_key1"))
        .unwrap();
    assert!(key0.contains("virtual") && key0.contains(" set "), "{key0}");
    assert!(key1.contains("not set"), "{key1}");

    let output = rig.passkeyctl(&["list", "--json"], "").await;
    let list = json(&output);
    let keys = list["authenticators"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let key0 = keys.iter().find(|k| k["id"] == "virtual_key0").unwrap();
    assert_eq!(key0["path"], KEY_PATH);
    assert_eq!(key0["transport"], "virtual");
    assert_eq!(key0["pin_set"], true);
    assert_eq!(key0["busy"], false);
    assert!(
        key0["versions"]
            .as_array()
            .unwrap()
            .contains(&serde_json::json!("FIDO_2_0"))
    );
    assert_eq!(key0["options"]["clientPin"], true);

    // info by id and by path say the same.
    let by_id = json(
        &rig.passkeyctl(&["info", "virtual_key0", "--json"], "")
            .await,
    );
    let by_path = json(&rig.passkeyctl(&["info", KEY_PATH, "--json"], "").await);
    assert_eq!(by_id, by_path);
    assert_eq!(by_id["pin_retries"], 8);
    assert_eq!(by_id["aaguid"].as_str().unwrap().len(), 36);

    let output = rig.passkeyctl(&["info", "virtual_key0"], "").await;
    let text = stdout(&output);
    assert!(text.contains("path            /org/passkeyd/authenticator/virtual_key0"));
    assert!(
        text.contains("pin             set, 8 retries left"),
        "{text}"
    );

    // Unknown and malformed keys.
    let output = rig
        .passkeyctl(&["info", "virtual_nope", "--json"], "")
        .await;
    assert_eq!(code(&output), 1);
    assert_eq!(json(&output)["error"], "org.passkeyd.Error.NoAuthenticator");
    let output = rig.passkeyctl(&["info", "../etc", "--json"], "").await;
    assert_eq!(code(&output), 1);
    assert_eq!(json(&output)["error"], "org.passkeyd.Error.InvalidArgument");

    let output = rig.passkeyctl(&["wink", "virtual_key0"], "").await;
    assert_eq!(code(&output), 0, "stderr: {}", stderr(&output));
    assert_eq!(stdout(&output), "");
    let output = rig
        .passkeyctl(&["wink", "virtual_key1", "--json"], "")
        .await;
    assert_eq!(
        json(&output)["winked"],
        "/org/passkeyd/authenticator/virtual_key1"
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_follows_states_in_order_and_answers_the_pin() {
    let rig = Rig::start(RigConfig::default()).await;
    let client = rig.client().await;
    let grant = rig.grant("frank@example.com").await;
    let mut ceremony = client
        .create_passkey(&PasskeyRequest::new("frank@example.com", grant))
        .await
        .unwrap();
    assert!(ceremony.id().is_some());
    let mut states = Vec::new();
    let mut last_seq = 0;
    tokio::time::timeout(STEP, async {
        while let Some(update) = ceremony.next_state().await.unwrap() {
            assert_eq!(update.seq, last_seq + 1, "states skipped or repeated");
            last_seq = update.seq;
            states.push(update.state);
            if update.state == State::NeedsPin {
                assert_eq!(update.details.authenticator.as_deref(), Some(KEY_PATH));
                if update.details.reason.as_deref() == Some("first") {
                    assert_eq!(update.details.retries, Some(8));
                    ceremony.submit_pin("0000").await.unwrap();
                } else {
                    assert_eq!(update.details.reason.as_deref(), Some("wrong-pin"));
                    assert_eq!(update.details.retries, Some(7));
                    assert!(matches!(
                        ceremony.set_new_pin("whatever").await,
                        Err(ClientError::Service(e)) if e.kind() == Some(ErrorKind::InvalidArgument)
                    ));
                    ceremony.submit_pin(PIN).await.unwrap();
                }
            }
        }
    })
    .await
    .unwrap();
    assert!(states.contains(&State::NeedsPin));
    assert_eq!(states.last(), Some(&State::Completed));
    let registration = ceremony.result().await.unwrap();
    assert_eq!(registration.authenticator.as_deref(), Some(KEY_PATH));
    let claims = client
        .verify_token(&registration.token, "frank@example.com")
        .await
        .unwrap();
    assert_eq!(claims["username"].to_string(), "frank@example.com");
    ceremony.release().await.unwrap();
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_cancels_and_ctrl_c_cancels_register() {
    let rig = Rig::start(RigConfig {
        user_verification: UserVerification::Required,
        keys: vec![(
            "key0",
            virtkey::Config {
                touch: virtkey::TouchPolicy::Never,
                ..with_pin(Some(PIN))
            },
        )],
    })
    .await;
    let client = rig.client().await;

    // A ceremony owned by this test's connection: passkeyctl (another caller) may not cancel.
    let grant = rig.grant("gina@example.com").await;
    let ceremony = client
        .create_passkey(&PasskeyRequest::new("gina@example.com", grant))
        .await
        .unwrap();
    let id = ceremony.id().unwrap().to_string();
    let output = rig.passkeyctl(&["cancel", &id, "--json"], "").await;
    assert_eq!(code(&output), 1);
    let failure = json(&output);
    assert_eq!(failure["error"], "org.passkeyd.Error.NotAuthorized");
    assert!(failure["message"].as_str().unwrap().contains("Ctrl-C"));
    ceremony.cancel().await.unwrap();
    assert!(matches!(
        ceremony.result().await,
        Err(ClientError::Service(e)) if e.kind() == Some(ErrorKind::Cancelled)
    ));
    ceremony.release().await.unwrap();

    // register waits for the touch that never comes; SIGINT cancels its ceremony.
    let grant = rig.grant("gina@example.com").await;
    let mut events = client.events().await.unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_passkeyctl"))
        .args([
            "--address",
            &rig.dbus.address,
            "register",
            "--username",
            "gina@example.com",
            "--token",
            grant.expose(),
            "--pin",
            PIN,
            "--json",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    // Wait until the key is busy with the makeCredential that waits for the touch.
    tokio::time::timeout(STEP, async {
        loop {
            if let Event::AuthenticatorBusy { busy: true, .. } = events.next().await.unwrap() {
                break;
            }
        }
    })
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = rustix::process::Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap()).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let output = tokio::time::timeout(STEP, child.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(code(&output), 130, "stderr: {}", stderr(&output));
    assert_eq!(json(&output)["error"], "org.passkeyd.Error.Cancelled");
    // Released, and the key is idle again.
    assert!(client.ceremonies().await.unwrap().is_empty());
    let key = client.authenticator("virtual_key0").await.unwrap();
    assert!(!key.busy);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn watch_reports_keys_plugged_in() {
    let rig = Rig::start(RigConfig::default()).await;
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_passkeyctl"))
        .args(["--address", &rig.dbus.address, "watch", "--json"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    use tokio::io::AsyncBufReadExt as _;
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(
        &tokio::time::timeout(STEP, lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(first["event"], "present");
    assert_eq!(first["authenticators"][0]["id"], "virtual_key0");

    let _key = serve_key(&keys_dir(&rig), "key7", with_pin(None));
    let added = tokio::time::timeout(STEP, async {
        loop {
            let line = lines.next_line().await.unwrap().unwrap();
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            if event["event"] == "authenticator-added" {
                return event;
            }
        }
    })
    .await
    .unwrap();
    assert_eq!(added["authenticator"]["id"], "virtual_key7");
    assert_eq!(added["authenticator"]["pin_set"], false);
    child.start_kill().unwrap();
    let _ = child.wait().await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_service_exits_3() {
    let dir = tempfile::tempdir().unwrap();
    let address = format!("unix:path={}", dir.path().join("nobus").display());
    let output = passkeyctl_support::run(
        env!("CARGO_BIN_EXE_passkeyctl"),
        &["--address", &address, "list", "--json"],
        "",
    )
    .await;
    assert_eq!(code(&output), 3);
    assert_eq!(
        json(&output)["error"],
        "org.freedesktop.DBus.Error.NoServer"
    );

    // A bus without passkeyd on it.
    let dbus = passkeyctl_support::DbusDaemon::start(dir.path());
    let output = passkeyctl_support::run(
        env!("CARGO_BIN_EXE_passkeyctl"),
        &[
            "--address",
            &dbus.address,
            "register",
            "--username",
            "x",
            "--token",
            "t",
            "--json",
        ],
        "",
    )
    .await;
    assert_eq!(code(&output), 3, "stderr: {}", stderr(&output));
    assert_eq!(
        json(&output)["error"],
        "org.freedesktop.DBus.Error.ServiceUnknown"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_arguments_are_json_errors() {
    let rig = Rig::start(RigConfig::default()).await;
    // An empty username: the service refuses it before anything starts.
    let output = rig
        .passkeyctl(
            &["register", "--username", "", "--token", "t", "--json"],
            "",
        )
        .await;
    assert_eq!(code(&output), 1);
    assert_eq!(json(&output)["error"], "org.passkeyd.Error.InvalidArgument");
    // A token LoginID does not know.
    let output = rig
        .passkeyctl(
            &[
                "register",
                "--username",
                "hank@example.com",
                "--token",
                "not-a-grant",
                "--json",
            ],
            "",
        )
        .await;
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    assert_eq!(json(&output)["error"], "org.passkeyd.Error.TokenRejected");
    // Usage errors are clap's: exit 2.
    let output = rig.passkeyctl(&["register", "--username", "x"], "").await;
    assert_eq!(code(&output), 2);
    let output = rig
        .passkeyctl(
            &[
                "register",
                "--username",
                "x",
                "--token",
                "t",
                "--pin",
                "1",
                "--pin-stdin",
            ],
            "",
        )
        .await;
    assert_eq!(code(&output), 2);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn timeout_reaches_the_service_and_fails_as_timeout() {
    let rig = Rig::start(RigConfig {
        user_verification: UserVerification::Required,
        keys: vec![(
            "key0",
            virtkey::Config {
                touch: virtkey::TouchPolicy::Never,
                ..with_pin(Some(PIN))
            },
        )],
    })
    .await;
    let grant = rig.grant("ivan@example.com").await;
    let started = std::time::Instant::now();
    // 10 s: the daemon's shortest ceremony by default (`ceremony_min_s`).
    let output = rig
        .passkeyctl(
            &[
                "register",
                "--username",
                "ivan@example.com",
                "--token",
                grant.expose(),
                "--pin",
                PIN,
                "--timeout",
                "10",
                "--json",
            ],
            "",
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(code(&output), 1, "stderr: {}", stderr(&output));
    assert_eq!(json(&output)["error"], "org.passkeyd.Error.Timeout");
    assert!(
        elapsed >= Duration::from_secs(9) && elapsed < Duration::from_secs(30),
        "{elapsed:?}"
    );
    let client = rig.client().await;
    assert!(client.ceremonies().await.unwrap().is_empty());
    assert!(!client.authenticator("virtual_key0").await.unwrap().busy);
    rig.shutdown().await;
}
