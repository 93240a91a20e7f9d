#![allow(clippy::unwrap_used, clippy::expect_used)]
//! `examples/kiosk_ui.py` (python3-dbus on a GLib main loop) runs a whole registration against
//! the service on a private bus, so that the example cannot rot: states as signals, the PIN
//! answered, the result's LoginID token verified.
//!
//! Needs Debian's `python3-dbus` and `python3-gi` for `/usr/bin/python3`
//! (`scripts/setup-debian`): without them the test says so and passes, except under CI
//! (`CI=true`), where it fails.

mod passkeyctl_support;

use loginid_emulator::UserVerification;
use passkeyctl_support::{PIN, Rig, RigConfig, run, stderr, stdout, with_pin};
use passkeyd::loginid::Token;

const PYTHON: &str = "/usr/bin/python3";

fn example() -> String {
    format!("{}/examples/kiosk_ui.py", env!("CARGO_MANIFEST_DIR"))
}

/// Whether the Python D-Bus binding is there; `false` means skip.
async fn have_python_dbus() -> bool {
    let probe = run(
        PYTHON,
        &[
            "-c",
            "import dbus, dbus.mainloop.glib; from gi.repository import GLib",
        ],
        "",
    )
    .await;
    if probe.status.success() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "python3-dbus/python3-gi missing under CI: {}",
        stderr(&probe)
    );
    eprintln!("skipped: {PYTHON} lacks python3-dbus or python3-gi (scripts/setup-debian)");
    false
}

/// `(seq, state, details)` of the `state` lines, and the rest.
fn states(output: &str) -> Vec<(u32, String, serde_json::Value)> {
    output
        .lines()
        .filter_map(|line| line.strip_prefix("state "))
        .map(|rest| {
            let mut parts = rest.splitn(3, ' ');
            let seq = parts.next().unwrap().parse().unwrap();
            let state = parts.next().unwrap().to_owned();
            let details = serde_json::from_str(parts.next().unwrap()).unwrap();
            (seq, state, details)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_example_registers_with_a_pin() {
    if !have_python_dbus().await {
        return;
    }
    let rig = Rig::start(RigConfig::default()).await;
    let grant = rig.grant("kiosk-user@example.com").await;
    let script = example();
    let output = run(
        PYTHON,
        &[
            &script,
            "--address",
            &rig.dbus.address,
            "--username",
            "kiosk-user@example.com",
            "--token-stdin",
            "--pin-stdin",
            "--display-name",
            "Kiosk User",
            "--timeout",
            "60",
        ],
        &format!("{}\n{PIN}\n", grant.expose()),
    )
    .await;
    let text = stdout(&output);
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {text}\nstderr: {}",
        stderr(&output)
    );

    // Every state once, in order, from 1; the PIN was asked for; it completed.
    let states = states(&text);
    let seqs: Vec<u32> = states.iter().map(|(seq, _, _)| *seq).collect();
    assert_eq!(
        seqs,
        (1..=u32::try_from(states.len()).unwrap()).collect::<Vec<_>>()
    );
    let names: Vec<&str> = states.iter().map(|(_, state, _)| state.as_str()).collect();
    assert!(names.contains(&"needs-pin"), "{names:?}");
    assert_eq!(names.last(), Some(&"completed"));
    let (_, _, needs_pin) = states.iter().find(|(_, s, _)| s == "needs-pin").unwrap();
    assert_eq!(
        needs_pin["authenticator"],
        "/org/passkeyd/authenticator/virtual_key0"
    );
    assert_eq!(needs_pin["reason"], "first");

    let result_line = text
        .lines()
        .find_map(|line| line.strip_prefix("result "))
        .unwrap();
    let result: serde_json::Value = serde_json::from_str(result_line).unwrap();
    assert_eq!(
        result["authenticator"],
        "/org/passkeyd/authenticator/virtual_key0"
    );
    let token = Token::new(result["token"].as_str().unwrap());
    let claims = rig
        .client()
        .await
        .verify_token(&token, "kiosk-user@example.com")
        .await
        .unwrap();
    assert_eq!(
        claims["sub"].to_string(),
        result["user_id"].as_str().unwrap()
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kiosk_example_reports_a_failure_by_its_dbus_name() {
    if !have_python_dbus().await {
        return;
    }
    // UV required and a key without a PIN, and the kiosk has no PIN to set: it cancels.
    let rig = Rig::start(RigConfig {
        user_verification: UserVerification::Required,
        keys: vec![("key0", with_pin(None))],
    })
    .await;
    let grant = rig.grant("kiosk-user@example.com").await;
    let script = example();
    let output = run(
        PYTHON,
        &[
            &script,
            "--address",
            &rig.dbus.address,
            "--username",
            "kiosk-user@example.com",
            "--token-stdin",
        ],
        &format!("{}\n", grant.expose()),
    )
    .await;
    let text = stdout(&output);
    assert_eq!(output.status.code(), Some(1), "stdout: {text}");
    let names: Vec<String> = states(&text).into_iter().map(|(_, s, _)| s).collect();
    assert!(names.contains(&"needs-new-pin".to_owned()), "{names:?}");
    assert_eq!(names.last().map(String::as_str), Some("cancelled"));
    assert!(
        text.lines()
            .any(|line| line.starts_with("error org.passkeyd.Error.Cancelled")),
        "{text}"
    );
    rig.shutdown().await;
}
