//! The D-Bus service under abuse: callers the access policy refuses (python3-dbus, gdbus and
//! busctl running as `nobody` through `setpriv`), calls on someone else's ceremony, oversized
//! and wrongly typed arguments, a thousand calls at once from one connection, and storms of
//! connections opened and dropped, some in the middle of a ceremony. After each, a
//! well-behaved caller's whole ceremony (CreatePasskey, the PIN through SubmitPin, Result,
//! Release) completes and the service's live ceremony count returns to 0.
//!
//! Each test has its own `dbus-daemon` on a socket in a temporary directory, the service in
//! this process over virtual keys running the firmware, and the LoginID emulator.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod abuse_support;
mod ceremony_support;

use std::collections::HashMap;

use abuse_support::*;
use ceremony_support::device_support::GENEROUS;
use ceremony_support::*;
use futures_util::future::join_all;
use passkeyd::dbus::AccessPolicy;
use tokio::time::timeout;
use virtkey::{Config, TouchPolicy};
use zbus::zvariant::{OwnedValue, Value};

const PIN: &str = "Good-4711";
const NOT_AUTHORIZED: &str = "org.passkeyd.Error.NotAuthorized";
const INVALID_ARGUMENT: &str = "org.passkeyd.Error.InvalidArgument";
const BUSY: &str = "org.passkeyd.Error.Busy";
/// A well-formed token LoginID never issued.
const BOGUS_TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl";

fn with_pin(pin: &str) -> Config {
    Config {
        pin: Some(pin.to_owned()),
        ..Config::default()
    }
}

/// The rig every test starts from: `good` (PIN, touched at once) for the well-behaved
/// caller, `stuck` (PIN, never touched) where abusive ceremonies wait; the service refuses
/// everyone but root and its own uid unless `access` says otherwise.
async fn daemon(access: AccessPolicy) -> (Daemon, Vec<device_support::HidBridge>) {
    let mut rig = Rig::start(|_| {}).await;
    let good = rig.plug("good", with_pin(PIN)).await;
    let stuck = rig
        .plug(
            "stuck",
            Config {
                touch: TouchPolicy::Never,
                ..with_pin(PIN)
            },
        )
        .await;
    (Daemon::start(rig, access).await, vec![good, stuck])
}

/// After the abuse: a whole ceremony for a well-behaved caller, then no ceremony left.
async fn still_serves(daemon: &Daemon) {
    daemon.wait_no_ceremony().await;
    let token = well_behaved(daemon, "virtual_good", PIN).await;
    assert_eq!(token.split('.').count(), 3, "a LoginID token (JWT)");
    daemon.wait_no_ceremony().await;
}

const FOREIGN_CALLER: &str = r#"
import sys, dbus
bus = dbus.bus.BusConnection(sys.argv[1])
name = sys.argv[2]
def call(path, interface, method, *args):
    obj = bus.get_object(name, path, introspect=False)
    try:
        getattr(dbus.Interface(obj, interface), method)(*args)
        return "ok"
    except dbus.DBusException as e:
        return e.get_dbus_name()
token = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"
print("CreatePasskey", call("/org/passkeyd", "org.passkeyd.Manager1", "CreatePasskey",
      "alice@example.com", token, dbus.Dictionary({}, signature="sv")))
print("CreatePasskeyEmpty", call("/org/passkeyd", "org.passkeyd.Manager1", "CreatePasskey",
      "", token, dbus.Dictionary({}, signature="sv")))
print("VerifyToken", call("/org/passkeyd", "org.passkeyd.Manager1", "VerifyToken", token,
      "alice@example.com"))
key = "/org/passkeyd/authenticator/virtual_good"
print("PinRetries", call(key, "org.passkeyd.Authenticator1", "PinRetries"))
print("Wink", call(key, "org.passkeyd.Authenticator1", "Wink"))
for path in sys.argv[3:]:
    for method in ["GetState", "Cancel", "Result", "Release"]:
        print(method, call(path, "org.passkeyd.Ceremony1", method))
    print("SubmitPin", call(path, "org.passkeyd.Ceremony1", "SubmitPin", "Good-4711"))
props = dbus.Interface(bus.get_object(name, "/org/passkeyd", introspect=False),
                       "org.freedesktop.DBus.Properties")
print("Version", props.Get("org.passkeyd.Manager1", "Version"))
"#;

/// "METHOD RESULT" lines of the foreign caller, as a map.
fn outcomes(output: &str) -> HashMap<String, String> {
    output
        .lines()
        .filter_map(|line| line.split_once(' '))
        .map(|(method, result)| (method.to_owned(), result.to_owned()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_the_policy_refuses_get_not_authorized_and_change_nothing() {
    if !may_act_as_nobody() {
        return;
    }
    let (daemon, _keys) = daemon(AccessPolicy::default()).await;

    let output = python_as_nobody(&daemon.bus, FOREIGN_CALLER, &[]);
    let seen = outcomes(&output);
    for method in [
        "CreatePasskey",
        "CreatePasskeyEmpty",
        "VerifyToken",
        "PinRetries",
        "Wink",
    ] {
        assert_eq!(
            seen.get(method).map(String::as_str),
            Some(NOT_AUTHORIZED),
            "{method}: {output}"
        );
    }
    // Properties are open to everyone the bus lets through; they carry no secret.
    assert_eq!(
        seen.get("Version").map(String::as_str),
        Some(env!("CARGO_PKG_VERSION")),
        "{output}"
    );

    let address = daemon.bus.address.clone();
    let (ok, _, stderr) = as_nobody(
        "gdbus",
        &[
            "call",
            "--address",
            &address,
            "--dest",
            NAME,
            "--object-path",
            ROOT,
            "--method",
            "org.passkeyd.Manager1.CreatePasskey",
            "alice@example.com",
            BOGUS_TOKEN,
            "{}",
        ],
    );
    assert!(!ok && stderr.contains(NOT_AUTHORIZED), "gdbus: {stderr}");
    let (ok, stdout, stderr) = as_nobody(
        "busctl",
        &[
            &format!("--address={address}"),
            "call",
            NAME,
            ROOT,
            MANAGER,
            "CreatePasskey",
            "ssa{sv}",
            "alice@example.com",
            BOGUS_TOKEN,
            "0",
        ],
    );
    assert!(
        !ok && stdout.is_empty() && !stderr.is_empty(),
        "busctl: {stdout} {stderr}"
    );

    // Nothing started: no ceremony, no request to LoginID, the keys idle.
    assert_eq!(daemon.service().ceremony_count().await, 0);
    assert!(daemon.rig.statuses("/fido2/v2/reg/init").await.is_empty());
    still_serves(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_uid_on_the_allow_list_gets_past_the_check() {
    if !may_act_as_nobody() {
        return;
    }
    let access = AccessPolicy {
        allowed_uids: vec![NOBODY],
        ..AccessPolicy::default()
    };
    let (daemon, _keys) = daemon(access).await;
    let output = python_as_nobody(&daemon.bus, FOREIGN_CALLER, &[]);
    let seen = outcomes(&output);
    // Past the policy, the arguments are judged: an empty username is refused as such.
    assert_eq!(
        seen.get("CreatePasskeyEmpty").map(String::as_str),
        Some(INVALID_ARGUMENT),
        "{output}"
    );
    assert_ne!(
        seen.get("PinRetries").map(String::as_str),
        Some(NOT_AUTHORIZED),
        "{output}"
    );
    // The bogus token's ceremony (if LoginID let it start) belonged to the python caller,
    // which has left: it is cancelled.
    still_serves(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nobody_but_the_owner_may_touch_a_ceremony() {
    let access = AccessPolicy {
        allowed_uids: vec![NOBODY],
        ..AccessPolicy::default()
    };
    let (daemon, _keys) = daemon(access).await;
    let mut owner = Client::connect(&daemon.bus).await;
    let username = "owner@example.com";
    let token = daemon.rig.grant(username).await;
    let mut options = Options::new();
    options.insert("authenticator", Value::from(key_path("virtual_good")));
    let path = owner
        .create(username, token.expose(), options)
        .await
        .unwrap();
    let path = path.as_str().to_owned();
    let waiting = loop {
        let state = owner.next_state(&path).await;
        if state.state == "needs-pin" {
            break state;
        }
    };

    // Another connection of the same uid, then another uid the policy allows.
    let intruder = Client::connect(&daemon.bus).await;
    for method in ["GetState", "Cancel", "Result", "Release"] {
        let result = intruder.ceremony_call(&path, method).await;
        assert_eq!(
            error_name(&result).as_deref(),
            Some(NOT_AUTHORIZED),
            "{method}"
        );
    }
    for result in [
        intruder.submit_pin(&path, PIN).await,
        intruder.set_new_pin(&path, PIN).await,
    ] {
        assert_eq!(error_name(&result).as_deref(), Some(NOT_AUTHORIZED));
    }
    // The object shows nothing but its path.
    let all = intruder
        .call(
            &path,
            "org.freedesktop.DBus.Properties",
            "GetAll",
            &(CEREMONY,),
        )
        .await
        .unwrap();
    let all: HashMap<String, OwnedValue> = all.body().deserialize().unwrap();
    assert!(all.is_empty(), "{all:?}");
    if may_act_as_nobody() {
        let output = python_as_nobody(&daemon.bus, FOREIGN_CALLER, &[&path]);
        let seen = outcomes(&output);
        for method in ["GetState", "Cancel", "Result", "Release", "SubmitPin"] {
            assert_eq!(
                seen.get(method).map(String::as_str),
                Some(NOT_AUTHORIZED),
                "{method}: {output}"
            );
        }
    }

    // The owner's ceremony did not move, and goes on.
    let state = owner.get_state(&path).await.unwrap();
    assert_eq!(
        (state.seq, state.state.as_str()),
        (waiting.seq, "needs-pin")
    );
    owner.submit_pin(&path, PIN).await.unwrap();
    let seen = owner.follow(&path, &[], &[]).await;
    assert_eq!(seen.last().map(|s| s.state.as_str()), Some("completed"));
    let result = owner.result(&path).await.unwrap();
    assert!(result.contains_key("token"));
    owner.ceremony_call(&path, "Release").await.unwrap();
    still_serves(&daemon).await;
}

/// A CreatePasskey option value nested `depth` variants deep.
fn nested(depth: usize) -> Value<'static> {
    let mut value = Value::from("x");
    for _ in 0..depth {
        value = Value::Value(Box::new(value));
    }
    value
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_wrongly_typed_arguments_are_refused_and_start_nothing() {
    let (daemon, _keys) = daemon(AccessPolicy::default()).await;
    let caller = Client::connect(&daemon.bus).await;
    let user = "alice@example.com";
    let long = |n: usize| "a".repeat(n);
    let one = |key: &'static str, value: Value<'static>| Options::from([(key, value)]);
    let many: Options = [
        "display_name",
        "username_type",
        "passkey_name",
        "authenticator",
        "timeout_ms",
        "pin",
    ]
    .into_iter()
    .chain(
        [
            "x1", "x2", "x3", "x4", "x5", "x6", "x7", "x8", "x9", "x10", "x11",
        ]
        .into_iter(),
    )
    .map(|key| (key, Value::from("1")))
    .collect();
    assert_eq!(many.len(), 17);
    let cases: Vec<(&str, String, String, Options)> = vec![
        (
            "empty username",
            String::new(),
            BOGUS_TOKEN.into(),
            Options::new(),
        ),
        (
            "username of 257",
            long(257),
            BOGUS_TOKEN.into(),
            Options::new(),
        ),
        ("empty token", user.into(), String::new(), Options::new()),
        ("token of 8193", user.into(), long(8193), Options::new()),
        ("token of 1 MiB", user.into(), long(1 << 20), Options::new()),
        ("17 options", user.into(), BOGUS_TOKEN.into(), many),
        (
            "unknown option",
            user.into(),
            BOGUS_TOKEN.into(),
            one("colour", Value::from("red")),
        ),
        (
            "timeout_ms as a string",
            user.into(),
            BOGUS_TOKEN.into(),
            one("timeout_ms", Value::from("1000")),
        ),
        (
            "PIN of 64 bytes",
            user.into(),
            BOGUS_TOKEN.into(),
            one("pin", Value::from(long(64))),
        ),
        (
            "authenticator as a string",
            user.into(),
            BOGUS_TOKEN.into(),
            one("authenticator", Value::from("virtual_good")),
        ),
        (
            "username_type fax",
            user.into(),
            BOGUS_TOKEN.into(),
            one("username_type", Value::from("fax")),
        ),
        (
            "display name of 257",
            user.into(),
            BOGUS_TOKEN.into(),
            one("display_name", Value::from(long(257))),
        ),
        (
            "a variant 60 deep",
            user.into(),
            BOGUS_TOKEN.into(),
            one("passkey_name", nested(60)),
        ),
        (
            "username with a newline",
            "al\nice".into(),
            BOGUS_TOKEN.into(),
            Options::new(),
        ),
        (
            "token with a header",
            user.into(),
            "abc\r\nX-Evil: 1".into(),
            Options::new(),
        ),
    ];
    for (what, username, token, options) in cases {
        let result = caller.create(&username, &token, options).await;
        assert_eq!(
            error_name(&result).as_deref(),
            Some(INVALID_ARGUMENT),
            "{what}: {}",
            error_message(&result)
        );
        // The refusal does not echo a long argument back.
        assert!(error_message(&result).len() < 1024, "{what}");
    }

    // Bodies of the wrong signature.
    let wrong: Vec<(&str, zbus::Result<zbus::Message>)> = vec![
        (
            "(u)",
            caller.call(ROOT, MANAGER, "CreatePasskey", &(42u32,)).await,
        ),
        (
            "(ss)",
            caller
                .call(ROOT, MANAGER, "CreatePasskey", &(user, BOGUS_TOKEN))
                .await,
        ),
        (
            "(sss)",
            caller
                .call(ROOT, MANAGER, "CreatePasskey", &(user, BOGUS_TOKEN, "x"))
                .await,
        ),
        (
            "(ssa{ss})",
            caller
                .call(
                    ROOT,
                    MANAGER,
                    "CreatePasskey",
                    &(user, BOGUS_TOKEN, HashMap::from([("pin", "1234")])),
                )
                .await,
        ),
        ("()", caller.call(ROOT, MANAGER, "CreatePasskey", &()).await),
        (
            "VerifyToken (u)",
            caller.call(ROOT, MANAGER, "VerifyToken", &(7u32,)).await,
        ),
        (
            "SubmitPin (u) on no ceremony",
            caller
                .call(
                    "/org/passkeyd/ceremony/999999",
                    CEREMONY,
                    "SubmitPin",
                    &(7u32,),
                )
                .await,
        ),
    ];
    for (what, result) in &wrong {
        let name = error_name(result);
        assert!(
            name.as_deref().is_some_and(|n| n.starts_with("org.")),
            "{what}: {name:?}"
        );
    }
    // VerifyToken with a huge token: an error, not a crash nor a request of that size.
    let huge = caller
        .call(ROOT, MANAGER, "VerifyToken", &(long(1 << 20), user))
        .await;
    assert!(error_name(&huge).is_some());

    assert_eq!(daemon.service().ceremony_count().await, 0);
    assert!(daemon.rig.statuses("/fido2/v2/reg/init").await.is_empty());
    still_serves(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_calls_at_once_from_one_connection_are_all_answered() {
    let (daemon, _keys) = daemon(AccessPolicy::default()).await;
    let caller = Client::connect(&daemon.bus).await;
    let token = daemon.rig.grant("rapid@example.com").await;
    // Without a PIN given, these ceremonies wait in needs-pin: they stay running.
    let stuck = || Options::from([("authenticator", Value::from(key_path("virtual_stuck")))]);
    let calls = (0..1000).map(|i| {
        let caller = &caller;
        let token = token.expose().to_owned();
        async move {
            let result = match i % 5 {
                0 => caller
                    .call(
                        ROOT,
                        "org.freedesktop.DBus.Properties",
                        "Get",
                        &(MANAGER, "Version"),
                    )
                    .await
                    .map(drop),
                1 => caller
                    .create("", BOGUS_TOKEN, Options::new())
                    .await
                    .map(drop),
                2 => caller
                    .get_state(&format!("/org/passkeyd/ceremony/{}", 1_000_000 + i))
                    .await
                    .map(drop),
                3 => caller
                    .call(
                        ROOT,
                        "org.freedesktop.DBus.ObjectManager",
                        "GetManagedObjects",
                        &(),
                    )
                    .await
                    .map(drop),
                // Real ceremonies: the per-caller limit applies.
                _ if i < 50 => caller
                    .create("rapid@example.com", &token, stuck())
                    .await
                    .map(|path| {
                        let _ = path;
                    }),
                _ => caller
                    .call(ROOT, "org.freedesktop.DBus.Peer", "Ping", &())
                    .await
                    .map(drop),
            };
            (i, error_name(&result))
        }
    });
    let answers = timeout(GENEROUS, join_all(calls))
        .await
        .expect("all 1,000 calls are answered");
    assert_eq!(answers.len(), 1000);
    let mut accepted = 0;
    for (i, name) in &answers {
        match i % 5 {
            0 | 3 => assert_eq!(name, &None, "call {i}"),
            1 => assert_eq!(name.as_deref(), Some(INVALID_ARGUMENT), "call {i}"),
            2 => assert!(name.is_some(), "call {i}: no such ceremony"),
            _ if *i < 50 => match name.as_deref() {
                None => accepted += 1,
                Some(BUSY) => {}
                other => panic!("call {i}: {other:?}"),
            },
            _ => assert_eq!(name, &None, "call {i}"),
        }
    }
    // Two running per caller: the first two wait for a PIN, the other eight are Busy.
    assert_eq!(accepted, 2);
    // The caller leaves: its ceremonies are cancelled, their key gets CANCEL.
    drop(caller);
    daemon.wait_no_ceremony().await;
    daemon.rig.wait_idle("virtual_stuck").await;
    still_serves(&daemon).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn storms_of_connections_leave_no_ceremony_behind() {
    let (daemon, _keys) = daemon(AccessPolicy::default()).await;
    let stuck = || {
        Options::from([
            ("authenticator", Value::from(key_path("virtual_stuck"))),
            ("pin", Value::from(PIN)),
        ])
    };
    // Tokens for the callers that start a ceremony.
    let mut tokens = Vec::new();
    for i in 0..40 {
        tokens.push(daemon.rig.grant(&format!("storm{i}@example.com")).await);
    }
    for round in 0..4 {
        let storm = (0..50).map(|j| {
            let i = round * 50 + j;
            let bus = &daemon.bus;
            let tokens = &tokens;
            let stuck = &stuck;
            async move {
                let connection = bus.connect().await;
                match i % 5 {
                    // A ceremony, then gone while it waits for a touch.
                    0 => {
                        let token = tokens[i / 5].expose();
                        let reply = connection
                            .call_method(
                                Some(NAME),
                                ROOT,
                                Some(MANAGER),
                                "CreatePasskey",
                                &(format!("storm{}@example.com", i / 5), token, stuck()),
                            )
                            .await;
                        let name = error_name(&reply);
                        assert!(name.is_none() || name.as_deref() == Some(BUSY), "{name:?}");
                    }
                    // CreatePasskey sent, gone before the answer.
                    1 => {
                        let token = tokens[i / 5].expose();
                        let message = zbus::Message::method_call(ROOT, "CreatePasskey")
                            .unwrap()
                            .destination(NAME)
                            .unwrap()
                            .interface(MANAGER)
                            .unwrap()
                            .build(&(format!("storm{}@example.com", i / 5), token, stuck()))
                            .unwrap();
                        connection.send(&message).await.unwrap();
                    }
                    // A property read, then gone.
                    2 => {
                        connection
                            .call_method(
                                Some(NAME),
                                ROOT,
                                Some("org.freedesktop.DBus.Properties"),
                                "GetAll",
                                &(MANAGER,),
                            )
                            .await
                            .unwrap();
                    }
                    // Connected, gone at once.
                    _ => {}
                }
                drop(connection);
            }
        });
        timeout(GENEROUS, join_all(storm))
            .await
            .expect("the storm's calls are answered");
    }
    daemon.wait_no_ceremony().await;
    daemon.rig.wait_idle("virtual_stuck").await;
    still_serves(&daemon).await;
}
