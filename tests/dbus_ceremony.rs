//! Ceremonies over D-Bus: a python3-dbus UI registers with a virtual key and the LoginID
//! emulator; ceremonies belong to their owner; an owner leaving the bus cancels its
//! ceremony and frees the key; a flood of calls from many connections all get answers.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dbus_support;

use dbus_support::{NAME, Options, Rig, Script, error_name, text, uv_required};
use passkeyd::dbus::Limits;
use serde_json::{Value, json};

fn parse(out: &std::process::Output) -> Value {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        text(&out.stdout),
        text(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_ui_registers_with_a_pin_and_sees_every_state() {
    let mut rig = Rig::with(Options {
        emulator: Box::new(uv_required),
        ..Options::default()
    })
    .await;
    let key = rig
        .plug(
            "pinned",
            virtkey::Config {
                pin: Some("1234".to_owned()),
                ..virtkey::Config::default()
            },
        )
        .await;
    let key_path = format!("/org/passkeyd/authenticator/{key}");
    let username = "alice@example.com";
    let token = rig.grant(username).await;
    let out = rig
        .python("register.py", &[username, &token, "1234", "9999"])
        .await;
    let run = parse(&out);
    assert_eq!(run["errors"], json!([]), "{run}");

    // Every state arrived as a signal, numbered from 2 on (1 is the initial `selecting`).
    let states = run["states"].as_array().unwrap();
    for (i, state) in states.iter().enumerate() {
        assert_eq!(state["seq"], json!(i + 2), "{run}");
    }
    let names: Vec<&str> = states
        .iter()
        .map(|s| s["state"].as_str().unwrap())
        .filter(|s| *s != "needs-touch")
        .collect();
    assert_eq!(
        names,
        ["needs-pin", "needs-pin", "registering", "completed"],
        "{run}"
    );
    assert_eq!(
        states[0]["details"],
        json!({"authenticator": key_path, "reason": "first", "retries": 8})
    );
    assert_eq!(
        states[1]["details"],
        json!({"authenticator": key_path, "reason": "wrong-pin", "retries": 7})
    );
    let last = states.last().unwrap();
    assert_eq!(last["details"]["authenticator"], json!(key_path));
    let credential_id = last["details"]["credential_id"].as_str().unwrap();
    assert!(credential_id.len() >= 32, "{run}");

    // The Completed signal and Result() carry the same result; GetState the final state.
    let result = &run["result"];
    assert_eq!(run["completed"], *result);
    assert_eq!(result["credential_id"], json!(credential_id));
    assert_eq!(result["authenticator"], json!(key_path));
    assert_eq!(result["attestation_format"], json!("packed"));
    assert!(result["passkey_id"].is_string() && result["user_id"].is_string());
    assert_eq!(run["get_state"][1], json!("completed"));
    assert_eq!(run["get_state"][0], last["seq"]);

    // The token is a LoginID token for alice: VerifyToken says so.
    let token = result["token"].as_str().unwrap();
    let verified = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                "/org/passkeyd",
                "--method",
                "org.passkeyd.Manager1.VerifyToken",
                token,
                username,
            ],
        )
        .await;
    let claims = text(&verified.stdout);
    assert!(verified.status.success(), "{}", text(&verified.stderr));
    assert!(
        claims.contains(&format!("'username': <'{username}'>")),
        "{claims}"
    );
    assert!(claims.contains("'rp_id': <'example.com'>"), "{claims}");
    let wrong_user = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                "/org/passkeyd",
                "--method",
                "org.passkeyd.Manager1.VerifyToken",
                token,
                "mallory@example.com",
            ],
        )
        .await;
    assert_eq!(error_name(&wrong_user), "org.passkeyd.Error.TokenRejected");
    assert!(!text(&wrong_user.stderr).contains(token));

    // Released: the object is gone.
    rig.wait_no_ceremonies().await;
    rig.wait_until("the key is idle", || rig.idle(&key)).await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_pin_gets_the_one_set_new_pin_gives() {
    let mut rig = Rig::with(Options {
        emulator: Box::new(uv_required),
        ..Options::default()
    })
    .await;
    let key = rig.plug("fresh", virtkey::Config::default()).await;
    let key_path = format!("/org/passkeyd/authenticator/{key}");
    let token = rig.grant("heidi").await;
    let out = rig
        .python("register.py", &["heidi", &token, "4711", "unused"])
        .await;
    let run = parse(&out);
    assert_eq!(run["errors"], json!([]), "{run}");
    let states = run["states"].as_array().unwrap();
    assert_eq!(states[0]["state"], json!("needs-new-pin"), "{run}");
    assert_eq!(
        states[0]["details"],
        json!({"authenticator": key_path, "reason": "first", "min_length": 4})
    );
    assert_eq!(states.last().unwrap()["state"], json!("completed"), "{run}");
    assert!(run["result"]["token"].is_string());
    // The key has a PIN now, and the service shows it.
    rig.wait_until("PinSet is true", || async {
        let out = rig
            .busctl(&[
                "get-property",
                NAME,
                &key_path,
                "org.passkeyd.Authenticator1",
                "PinSet",
            ])
            .await;
        text(&out.stdout).trim() == "b true"
    })
    .await;
    let retries = rig
        .busctl(&[
            "call",
            NAME,
            &key_path,
            "org.passkeyd.Authenticator1",
            "PinRetries",
        ])
        .await;
    assert_eq!(text(&retries.stdout).trim(), "u 8");
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_owner_may_drive_or_read_its_ceremony() {
    // No key: the ceremony waits in `selecting`.
    let rig = Rig::start().await;
    let token = rig.grant("bob").await;
    let out = rig.python("ownership.py", &["bob", &token]).await;
    let run = parse(&out);
    for method in [
        "GetState",
        "SubmitPin",
        "SetNewPin",
        "Cancel",
        "Result",
        "Release",
    ] {
        assert_eq!(
            run["other"][method],
            json!("org.passkeyd.Error.NotAuthorized"),
            "{method}: {run}"
        );
    }
    assert_eq!(run["other_get_all"], json!({}));
    assert_eq!(run["state_before"], run["state_after"], "{run}");
    assert_eq!(run["state_after"][1], json!("selecting"));
    assert_eq!(
        run["owner_result_while_running"],
        json!("org.passkeyd.Error.Busy")
    );
    assert_eq!(
        run["owner_submit_pin_in_selecting"],
        json!("org.passkeyd.Error.InvalidArgument")
    );
    assert_eq!(run["final_state"][1], json!("cancelled"), "{run}");
    assert_eq!(run["final_state"][2], json!({"reason": "caller"}));
    assert_eq!(
        run["owner_result_after_cancel"],
        json!("org.passkeyd.Error.Cancelled")
    );
    // The signals went to the owner alone.
    assert_eq!(run["signals_seen"]["owner"], json!(["cancelled"]), "{run}");
    assert_eq!(run["signals_seen"]["other"], json!([]), "{run}");
    rig.wait_no_ceremonies().await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_leaving_cancels_its_ceremony_and_frees_the_key() {
    let mut rig = Rig::start().await;
    let key = rig
        .plug(
            "untouched",
            virtkey::Config {
                touch: virtkey::TouchPolicy::Never,
                ..virtkey::Config::default()
            },
        )
        .await;
    for round in 0..2 {
        let username = format!("carol{round}");
        let token = rig.grant(&username).await;
        let out = rig.python("disconnect.py", &[&username, &token]).await;
        let run = parse(&out);
        // The key took the request: it waits for a touch that never comes.
        assert_eq!(run["states"], json!(["needs-touch"]), "{run}");
        // The client is gone: the ceremony is cancelled, the key got CANCEL and is idle.
        rig.wait_no_ceremonies().await;
        rig.wait_until("the key is idle", || rig.idle(&key)).await;
        assert_eq!(rig.ceremonies_property().await["data"], json!([]));
    }
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_concurrent_calls_all_get_answers() {
    let rig = Rig::start().await;
    let token = rig.grant("dave").await;
    let out = rig.python("flood.py", &["dave", &token, "200"]).await;
    let run = parse(&out);
    assert_eq!(run["answered"], json!(200), "{run}");
    let paths = run["paths"].as_array().unwrap().len();
    let busy = run["errors"]["org.passkeyd.Error.Busy"]
        .as_u64()
        .unwrap_or(0);
    assert_eq!(
        run["errors"].as_object().unwrap().len(),
        usize::from(busy > 0),
        "only Busy refusals: {run}"
    );
    assert_eq!(paths + usize::try_from(busy).unwrap(), 200, "{run}");
    // No key is plugged: the admitted ceremonies wait in `selecting`, and hold the 16 places.
    assert_eq!(paths, 16, "{run}");
    // A well-behaved caller afterwards is answered: properties, and Busy while the flood's
    // ceremonies hold every place.
    assert_eq!(run["late_version"], json!(env!("CARGO_PKG_VERSION")));
    assert_eq!(run["late_ceremonies"], json!(16));
    assert_eq!(
        run["late_create"],
        json!("org.passkeyd.Error.Busy"),
        "{run}"
    );
    // The flood's connections closed with the script: their ceremonies went with them.
    rig.wait_no_ceremonies().await;
    let version = rig
        .busctl(&[
            "get-property",
            NAME,
            "/org/passkeyd",
            "org.passkeyd.Manager1",
            "Version",
        ])
        .await;
    assert!(version.status.success());
    rig.shutdown().await;
}

/// The next signal `watch` prints that `keep` accepts.
/// The first signal matching each of `wanted`, whatever order they come in (the service
/// sends signals about different objects from different tasks).
async fn all_matching(watch: &mut Script, wanted: &[&dyn Fn(&Value) -> bool]) -> Vec<Value> {
    let mut found: Vec<Option<Value>> = vec![None; wanted.len()];
    while found.iter().any(Option::is_none) {
        let signal = watch.json().await;
        if let Some(slot) = wanted
            .iter()
            .zip(found.iter_mut())
            .find_map(|(keep, slot)| (slot.is_none() && keep(&signal)).then_some(slot))
        {
            *slot = Some(signal);
        }
    }
    found.into_iter().flatten().collect()
}

fn changed(property: &'static str) -> impl Fn(&Value) -> bool {
    move |s| s["signal"] == "PropertiesChanged" && s["changed"].get(property).is_some()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_and_properties_follow_keys_and_ceremonies() {
    let mut rig = Rig::start().await;
    let mut watch = Script::start(&rig, "watch.py", &[]);
    assert_eq!(watch.line().await, "\"ready\"");

    // A key plugged in: its object, and the Manager's list.
    let key = rig
        .plug(
            "slow",
            virtkey::Config {
                touch: virtkey::TouchPolicy::Never,
                ..virtkey::Config::default()
            },
        )
        .await;
    let key_path = format!("/org/passkeyd/authenticator/{key}");
    let [added, listed] = <[Value; 2]>::try_from(
        all_matching(
            &mut watch,
            &[
                &|s| s["signal"] == "InterfacesAdded",
                &changed("Authenticators"),
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(added["path"], json!(key_path));
    assert!(
        added["interfaces"]
            .as_array()
            .unwrap()
            .contains(&json!("org.passkeyd.Authenticator1")),
        "{added}"
    );
    assert_eq!(listed["changed"]["Authenticators"], json!([key_path]));

    // A ceremony: its object appears, the key becomes busy, and idle again when the owner
    // leaves; the object goes.
    let holder = rig.hold_ceremony("frank").await;
    let ceremony = holder.path.clone();
    let on_key = |s: &Value| s["signal"] == "PropertiesChanged" && s["path"] == json!(key_path);
    let [added, listed, busy] = <[Value; 3]>::try_from(
        all_matching(
            &mut watch,
            &[
                &|s| s["signal"] == "InterfacesAdded",
                &changed("Ceremonies"),
                &on_key,
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(added["path"], json!(ceremony));
    assert_eq!(added["interfaces"], json!(["org.passkeyd.Ceremony1"]));
    assert_eq!(listed["changed"]["Ceremonies"], json!([ceremony]));
    assert_eq!(busy["interface"], "org.passkeyd.Authenticator1");
    assert_eq!(busy["changed"], json!({"Busy": true}));
    drop(holder);
    let [idle, removed, listed] = <[Value; 3]>::try_from(
        all_matching(
            &mut watch,
            &[
                &on_key,
                &|s| s["signal"] == "InterfacesRemoved",
                &changed("Ceremonies"),
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(idle["changed"], json!({"Busy": false}));
    assert_eq!(removed["path"], json!(ceremony));
    assert_eq!(listed["changed"]["Ceremonies"], json!([]));

    // The key unplugged: its object goes.
    rig.keys.clear();
    let [removed, listed] = <[Value; 2]>::try_from(
        all_matching(
            &mut watch,
            &[
                &|s| s["signal"] == "InterfacesRemoved",
                &changed("Authenticators"),
            ],
        )
        .await,
    )
    .unwrap();
    assert_eq!(removed["path"], json!(key_path));
    assert_eq!(
        removed["interfaces"],
        json!(["org.passkeyd.Authenticator1"])
    );
    assert_eq!(listed["changed"]["Authenticators"], json!([]));
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_per_caller_and_linger() {
    let rig = Rig::with(Options {
        limits: Limits {
            linger: std::time::Duration::from_millis(300),
            ..Limits::default()
        },
        ..Options::default()
    })
    .await;
    let token = rig.grant("grace").await;
    let out = rig.python("per_caller.py", &["grace", &token]).await;
    let answers = parse(&out);
    let answers = answers.as_array().unwrap();
    assert!(
        answers[0]
            .as_str()
            .unwrap()
            .starts_with("/org/passkeyd/ceremony/")
    );
    assert!(
        answers[1]
            .as_str()
            .unwrap()
            .starts_with("/org/passkeyd/ceremony/")
    );
    assert_eq!(answers[2], json!("org.passkeyd.Error.Busy"));
    rig.wait_no_ceremonies().await;

    // A ceremony that fails at once (LoginID refuses the token) lingers, then goes while its
    // owner is still connected.
    let holder = rig
        .hold_ceremony_with("grace", "eyJhbGciOiJFUzI1NiJ9.e30.bm90LWEtZ3JhbnQ")
        .await;
    rig.wait_no_ceremonies().await;
    drop(holder);
    rig.shutdown().await;
}
