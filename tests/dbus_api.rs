//! The D-Bus API as clients we did not write see it: `busctl` and `gdbus` on a private bus,
//! the introspection data against the committed XML (docs/dbus/), bad arguments, and who may
//! call.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod dbus_support;

use std::path::Path;

use dbus_support::{NAME, Options, Rig, Script, error_name, text};
use passkeyd::dbus::{self, AccessPolicy, Bus, DbusError, ServiceConfig};

/// `<interface name="NAME">…</interface>` of an introspection document, one trimmed line per
/// element, without blank lines and comments: what the committed XML is compared on.
fn interface_lines(xml: &str, interface: &str) -> Vec<String> {
    let mut xml = xml.to_owned();
    while let Some(start) = xml.find("<!--") {
        let end = xml[start..]
            .find("-->")
            .map_or(xml.len(), |e| start + e + 3);
        xml.replace_range(start..end, "");
    }
    let start = xml
        .find(&format!("<interface name=\"{interface}\">"))
        .unwrap_or_else(|| panic!("{interface} not in {xml}"));
    let rest = &xml[start..];
    let end = rest.find("</interface>").unwrap() + "</interface>".len();
    rest[..end]
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty())
        .map(str::to_owned)
        .collect()
}

async fn introspect(rig: &Rig, path: &str) -> String {
    let out = rig
        .gdbus(
            "introspect",
            &["--dest", NAME, "--object-path", path, "--xml"],
        )
        .await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    text(&out.stdout)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn introspection_matches_the_committed_xml() {
    let mut rig = Rig::start().await;
    let key = rig
        .plug(
            "key0",
            virtkey::Config {
                touch: virtkey::TouchPolicy::Never,
                ..virtkey::Config::default()
            },
        )
        .await;
    let holder = rig.hold_ceremony("alice@example.com").await;
    let ceremony = holder.path.clone();
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/dbus");
    let objects = [
        ("/org/passkeyd".to_owned(), "org.passkeyd.Manager1"),
        (
            format!("/org/passkeyd/authenticator/{key}"),
            "org.passkeyd.Authenticator1",
        ),
        (ceremony, "org.passkeyd.Ceremony1"),
    ];
    for (path, interface) in objects {
        let xml = introspect(&rig, &path).await;
        let served = interface_lines(&xml, interface);
        let file = docs.join(format!("{interface}.xml"));
        if std::env::var_os("PASSKEYD_WRITE_INTROSPECTION").is_some() {
            std::fs::create_dir_all(&docs).unwrap();
            std::fs::write(&file, raw_interface(&xml, interface)).unwrap();
            continue;
        }
        let committed = std::fs::read_to_string(&file).unwrap();
        assert_eq!(
            interface_lines(&committed, interface),
            served,
            "{interface} drifted from {}; update the file and docs/dbus-api.md \
             (PASSKEYD_WRITE_INTROSPECTION=1 writes it)",
            file.display()
        );
    }
    drop(holder);
    rig.shutdown().await;
}

/// The interface element as served, with its documentation comments.
fn raw_interface(xml: &str, interface: &str) -> String {
    let start = xml
        .find(&format!("<interface name=\"{interface}\">"))
        .unwrap();
    let end = xml[start..].find("</interface>").unwrap() + start + "</interface>".len();
    let body = &xml[start..end];
    let mut out = String::from(
        "<!-- passkeyd D-Bus API: see docs/dbus-api.md. Checked against the served\n     introspection by tests/dbus_api.rs. -->\n",
    );
    // Lines as served, one indentation level removed.
    for line in body.lines() {
        out.push_str(line.strip_prefix("  ").unwrap_or(line));
        out.push('\n');
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busctl_sees_the_tree_properties_and_refusals() {
    let mut rig = Rig::start().await;
    let key = rig.plug("key0", virtkey::Config::default()).await;

    let tree = rig.busctl(&["tree", "--list", NAME]).await;
    assert!(tree.status.success(), "{}", text(&tree.stderr));
    let tree = text(&tree.stdout);
    assert!(tree.lines().any(|l| l == "/org/passkeyd"), "{tree}");
    assert!(
        tree.lines()
            .any(|l| l == format!("/org/passkeyd/authenticator/{key}")),
        "{tree}"
    );

    let members = rig.busctl(&["introspect", NAME, "/org/passkeyd"]).await;
    let members = text(&members.stdout);
    for member in [
        ".CreatePasskey",
        ".VerifyToken",
        ".Version",
        ".Authenticators",
        ".Ceremonies",
    ] {
        assert!(members.contains(member), "{member} missing in {members}");
    }
    assert!(members.contains("org.freedesktop.DBus.ObjectManager"));

    let version = rig
        .busctl(&[
            "get-property",
            NAME,
            "/org/passkeyd",
            "org.passkeyd.Manager1",
            "Version",
        ])
        .await;
    assert_eq!(
        text(&version.stdout).trim(),
        format!("s \"{}\"", env!("CARGO_PKG_VERSION"))
    );
    let authenticators = rig
        .busctl(&[
            "get-property",
            NAME,
            "/org/passkeyd",
            "org.passkeyd.Manager1",
            "Authenticators",
        ])
        .await;
    assert_eq!(
        text(&authenticators.stdout).trim(),
        format!("ao 1 \"/org/passkeyd/authenticator/{key}\"")
    );
    let path = format!("/org/passkeyd/authenticator/{key}");
    for (property, expected) in [
        ("Transport", "s \"virtual\""),
        ("PinSet", "b false"),
        ("Busy", "b false"),
        ("MinPinLength", "u 4"),
    ] {
        let out = rig
            .busctl(&[
                "get-property",
                NAME,
                &path,
                "org.passkeyd.Authenticator1",
                property,
            ])
            .await;
        assert_eq!(text(&out.stdout).trim(), expected, "{property}");
    }
    let versions = rig
        .busctl(&[
            "get-property",
            NAME,
            &path,
            "org.passkeyd.Authenticator1",
            "Versions",
        ])
        .await;
    assert!(
        text(&versions.stdout).contains("\"FIDO_2_0\""),
        "{}",
        text(&versions.stdout)
    );

    // An empty username: refused, nothing started.
    let refused = rig
        .busctl(&[
            "call",
            NAME,
            "/org/passkeyd",
            "org.passkeyd.Manager1",
            "CreatePasskey",
            "ssa{sv}",
            "",
            "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
            "0",
        ])
        .await;
    assert!(!refused.status.success());
    assert!(
        text(&refused.stderr).contains("the username is empty"),
        "{}",
        text(&refused.stderr)
    );
    // An unknown option, typed on busctl's command line.
    let refused = rig
        .busctl(&[
            "call",
            NAME,
            "/org/passkeyd",
            "org.passkeyd.Manager1",
            "CreatePasskey",
            "ssa{sv}",
            "alice",
            "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
            "1",
            "colour",
            "s",
            "red",
        ])
        .await;
    assert!(
        text(&refused.stderr).contains("unknown option \"colour\""),
        "{}",
        text(&refused.stderr)
    );
    // A wrong signature is the bus's own InvalidArgs.
    let wrong = rig
        .busctl(&[
            "call",
            NAME,
            "/org/passkeyd",
            "org.passkeyd.Manager1",
            "CreatePasskey",
            "s",
            "alice",
        ])
        .await;
    assert!(!wrong.status.success());
    assert_eq!(
        rig.ceremonies_property().await["data"],
        serde_json::json!([])
    );
    assert_eq!(rig.service().ceremony_count().await, 0);

    // PinRetries on a key with PIN support but no PIN yet: the key's own count.
    let retries = rig
        .busctl(&[
            "call",
            NAME,
            &path,
            "org.passkeyd.Authenticator1",
            "PinRetries",
        ])
        .await;
    assert_eq!(
        text(&retries.stdout).trim(),
        "u 8",
        "{}",
        text(&retries.stderr)
    );

    // A U2F-only key: no getInfo, no PIN.
    let u2f = rig
        .plug(
            "u2f",
            virtkey::Config {
                u2f_only: true,
                ..virtkey::Config::default()
            },
        )
        .await;
    let u2f_path = format!("/org/passkeyd/authenticator/{u2f}");
    let versions = rig
        .busctl(&[
            "get-property",
            NAME,
            &u2f_path,
            "org.passkeyd.Authenticator1",
            "Versions",
        ])
        .await;
    assert_eq!(text(&versions.stdout).trim(), "as 0");
    let aaguid = rig
        .busctl(&[
            "get-property",
            NAME,
            &u2f_path,
            "org.passkeyd.Authenticator1",
            "Aaguid",
        ])
        .await;
    assert_eq!(text(&aaguid.stdout).trim(), "s \"\"");
    let retries = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                &u2f_path,
                "--method",
                "org.passkeyd.Authenticator1.PinRetries",
            ],
        )
        .await;
    assert_eq!(error_name(&retries), "org.passkeyd.Error.NotSupported");
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gdbus_introspects_and_calls() {
    let mut rig = Rig::start().await;
    let key = rig
        .plug(
            "pinned",
            virtkey::Config {
                pin: Some("1234".to_owned()),
                ..virtkey::Config::default()
            },
        )
        .await;
    let path = format!("/org/passkeyd/authenticator/{key}");

    let root = introspect(&rig, "/org/passkeyd").await;
    assert!(root.contains("<node name=\"authenticator\""), "{root}");

    let retries = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                &path,
                "--method",
                "org.passkeyd.Authenticator1.PinRetries",
            ],
        )
        .await;
    assert_eq!(
        text(&retries.stdout).trim(),
        "(uint32 8,)",
        "{}",
        text(&retries.stderr)
    );
    let pin_set = rig
        .busctl(&[
            "get-property",
            NAME,
            &path,
            "org.passkeyd.Authenticator1",
            "PinSet",
        ])
        .await;
    assert_eq!(text(&pin_set.stdout).trim(), "b true");

    let wink = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                &path,
                "--method",
                "org.passkeyd.Authenticator1.Wink",
            ],
        )
        .await;
    assert!(
        wink.status.success() || error_name(&wink) == "org.passkeyd.Error.NotSupported",
        "{}",
        text(&wink.stderr)
    );

    let managed = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                "/org/passkeyd",
                "--method",
                "org.freedesktop.DBus.ObjectManager.GetManagedObjects",
            ],
        )
        .await;
    let managed = text(&managed.stdout);
    assert!(managed.contains(&path), "{managed}");
    assert!(managed.contains("'Transport': <'virtual'>"), "{managed}");

    let empty = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                "/org/passkeyd",
                "--method",
                "org.passkeyd.Manager1.CreatePasskey",
                "",
                "token",
                "{}",
            ],
        )
        .await;
    assert_eq!(error_name(&empty), "org.passkeyd.Error.InvalidArgument");
    let typed = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                "/org/passkeyd",
                "--method",
                "org.passkeyd.Manager1.CreatePasskey",
                "alice",
                "token",
                "{'timeout_ms': <'soon'>}",
            ],
        )
        .await;
    assert_eq!(error_name(&typed), "org.passkeyd.Error.InvalidArgument");
    assert!(text(&typed.stderr).contains("option timeout_ms must have type u"));

    let bogus = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                "/org/passkeyd",
                "--method",
                "org.passkeyd.Manager1.VerifyToken",
                "not-a-jwt",
                "alice",
            ],
        )
        .await;
    assert_eq!(error_name(&bogus), "org.passkeyd.Error.TokenRejected");
    assert_eq!(rig.service().ceremony_count().await, 0);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_arguments_get_invalid_argument_and_start_nothing() {
    let rig = Rig::start().await;
    let token = rig.grant("alice").await;
    let out = rig.python("bad_args.py", &[&token]).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    let answers: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let answers = answers.as_object().unwrap();
    assert_eq!(answers.len(), 13);
    for (case, answer) in answers {
        assert_eq!(answer, "org.passkeyd.Error.InvalidArgument", "{case}");
    }
    assert_eq!(rig.service().ceremony_count().await, 0);
    assert_eq!(
        rig.ceremonies_property().await["data"],
        serde_json::json!([])
    );
    // LoginID was never asked.
    rig.shutdown().await;
}

/// Runs gdbus as uid/gid 65534 (nobody) without supplementary groups.
async fn gdbus_as_nobody(rig: &Rig, args: &[&str]) -> std::process::Output {
    let mut command = std::process::Command::new("setpriv");
    command
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "gdbus",
            "call",
        ])
        .args(["--address", &rig.bus.address])
        .args(args);
    dbus_support::run(command).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn callers_outside_the_policy_are_refused() {
    // Tests run as root, who is always allowed: the refused caller runs as nobody.
    let mut rig = Rig::with(Options {
        open_bus: true,
        access: AccessPolicy {
            allowed_uids: vec![4242],
            allowed_gids: vec![4243],
            polkit: false,
        },
        ..Options::default()
    })
    .await;
    let key = rig.plug("key0", virtkey::Config::default()).await;
    let create = [
        "--dest",
        NAME,
        "--object-path",
        "/org/passkeyd",
        "--method",
        "org.passkeyd.Manager1.CreatePasskey",
        "alice",
        "eyJhbGciOiJFUzI1NiJ9.e30.c2ln",
        "{}",
    ];
    let refused = gdbus_as_nobody(&rig, &create).await;
    assert_eq!(
        error_name(&refused),
        "org.passkeyd.Error.NotAuthorized",
        "{}",
        text(&refused.stderr)
    );
    assert!(text(&refused.stderr).contains("uid 65534 may not use passkeyd"));
    let path = format!("/org/passkeyd/authenticator/{key}");
    let wink = gdbus_as_nobody(
        &rig,
        &[
            "--dest",
            NAME,
            "--object-path",
            &path,
            "--method",
            "org.passkeyd.Authenticator1.PinRetries",
        ],
    )
    .await;
    assert_eq!(error_name(&wink), "org.passkeyd.Error.NotAuthorized");
    // Properties are open.
    let version = gdbus_as_nobody(
        &rig,
        &[
            "--dest",
            NAME,
            "--object-path",
            "/org/passkeyd",
            "--method",
            "org.freedesktop.DBus.Properties.Get",
            "org.passkeyd.Manager1",
            "Version",
        ],
    )
    .await;
    assert!(version.status.success(), "{}", text(&version.stderr));
    assert_eq!(rig.service().ceremony_count().await, 0);
    rig.shutdown().await;

    // The same caller on the allow-list gets as far as the arguments.
    let rig = Rig::with(Options {
        open_bus: true,
        access: AccessPolicy {
            allowed_uids: vec![65534],
            allowed_gids: Vec::new(),
            polkit: false,
        },
        ..Options::default()
    })
    .await;
    let mut empty_username = create;
    empty_username[6] = "";
    let allowed = gdbus_as_nobody(&rig, &empty_username).await;
    assert_eq!(
        error_name(&allowed),
        "org.passkeyd.Error.InvalidArgument",
        "{}",
        text(&allowed.stderr)
    );
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polkit_enabled_without_an_authority_refuses() {
    let rig = Rig::with(Options {
        access: AccessPolicy {
            polkit: true,
            ..AccessPolicy::default()
        },
        ..Options::default()
    })
    .await;
    let token = rig.grant("alice").await;
    let out = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                "/org/passkeyd",
                "--method",
                "org.passkeyd.Manager1.CreatePasskey",
                "alice",
                &token,
                "{}",
            ],
        )
        .await;
    assert_eq!(
        error_name(&out),
        "org.passkeyd.Error.NotAuthorized",
        "{}",
        text(&out.stderr)
    );
    assert!(text(&out.stderr).contains("polkit"));
    assert_eq!(rig.service().ceremony_count().await, 0);
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_name_is_reported_and_shutdown_releases_it() {
    let rig = Rig::start().await;
    let second = Bus::address(&rig.bus.address).await.unwrap();
    assert!(second.unique_name().unwrap().starts_with(':'));
    let ceremonies = passkeyd::ceremony::Ceremonies::new(
        rig.registry.clone(),
        rig.client.clone(),
        passkeyd::ceremony::CeremonyConfig::new(url::Url::parse(dbus_support::ORIGIN).unwrap()),
    )
    .unwrap();
    let config = ServiceConfig {
        bus_name: NAME.to_owned(),
        ..ServiceConfig::default()
    };
    let taken = dbus::serve(
        &second,
        ceremonies.clone(),
        rig.registry.clone(),
        config.clone(),
    )
    .await;
    assert!(matches!(taken, Err(DbusError::NameTaken(name)) if name == NAME));
    let registry = rig.registry.clone();
    let address = rig.bus.address.clone();
    let mut rig = rig;
    let service = rig.service.take().unwrap();
    service.shutdown().await;
    // The name is free again: another connection gets it.
    let third = Bus::address(&address).await.unwrap();
    let again = dbus::serve(&third, ceremonies, registry, config)
        .await
        .unwrap();
    again.shutdown().await;
    drop(rig);
}

fn create_args(username: &str, token: &str) -> Vec<String> {
    [
        "--dest",
        NAME,
        "--object-path",
        "/org/passkeyd",
        "--method",
        "org.passkeyd.Manager1.CreatePasskey",
        username,
        token,
        "{}",
    ]
    .map(str::to_owned)
    .to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn polkit_decides_and_a_pending_check_blocks_nobody() {
    let rig = Rig::with(Options {
        access: AccessPolicy {
            polkit: true,
            ..AccessPolicy::default()
        },
        ..Options::default()
    })
    .await;

    // Yes: the ceremony starts; polkit was asked about the caller's bus name.
    let mut mock = Script::polkit(&rig, "allow").await;
    let holder = rig.hold_ceremony("alice").await;
    let call: serde_json::Value = serde_json::from_str(&mock.line().await).unwrap();
    assert_eq!(call["action"], "org.passkeyd.create-passkey");
    assert_eq!(call["subject"], "system-bus-name");
    assert!(call["name"].as_str().unwrap().starts_with(':'), "{call}");
    assert_eq!(call["flags"], 0);
    drop(holder);
    rig.wait_no_ceremonies().await;
    drop(mock);

    // No: NotAuthorized; an interactive call says so to polkit.
    let mut mock = Script::polkit(&rig, "deny").await;
    let token = rig.grant("alice").await;
    let mut args = vec!["--interactive".to_owned()];
    args.extend(create_args("alice", &token));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let refused = rig.gdbus("call", &args).await;
    assert_eq!(error_name(&refused), "org.passkeyd.Error.NotAuthorized");
    assert!(text(&refused.stderr).contains("polkit: not authorized"));
    let call: serde_json::Value = serde_json::from_str(&mock.line().await).unwrap();
    assert_eq!(call["flags"], 1, "AllowUserInteraction");
    assert_eq!(rig.service().ceremony_count().await, 0);
    drop(mock);

    // A check polkit sits on: other calls are answered meanwhile.
    let mut mock = Script::polkit(&rig, "hold").await;
    let mut pending = std::process::Command::new("gdbus");
    pending
        .arg("call")
        .args(["--address", &rig.bus.address])
        .args(create_args("alice", &token))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut pending = pending.spawn().unwrap();
    let call: serde_json::Value = serde_json::from_str(&mock.line().await).unwrap();
    assert_eq!(call["action"], "org.passkeyd.create-passkey");
    let other = rig
        .gdbus(
            "call",
            &[
                "--dest",
                NAME,
                "--object-path",
                "/org/passkeyd",
                "--method",
                "org.passkeyd.Manager1.VerifyToken",
                "not-a-jwt",
                "alice",
            ],
        )
        .await;
    assert_eq!(error_name(&other), "org.passkeyd.Error.TokenRejected");
    assert!(
        pending.try_wait().unwrap().is_none(),
        "the CreatePasskey waiting for polkit was answered before the other call"
    );
    mock.release();
    let status = tokio::task::spawn_blocking(move || pending.wait().unwrap())
        .await
        .unwrap();
    // Allowed once released (or refused had polkit's 5 s passed); answered either way.
    assert!(status.code().is_some());
    rig.wait_no_ceremonies().await;
    rig.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_cancels_ceremonies_and_their_keys() {
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
    let holder = rig.hold_ceremony("erin").await;
    // The key takes the request and waits for a touch.
    rig.wait_until("the key is busy", || {
        let registry = rig.registry.clone();
        let key = key.clone();
        async move {
            registry
                .list()
                .await
                .iter()
                .any(|d| d.id().as_str() == key && d.busy)
        }
    })
    .await;
    assert_eq!(rig.service().ceremony_count().await, 1);
    let service = rig.service.take().unwrap();
    service.shutdown().await;
    rig.wait_until("the key is idle", || rig.idle(&key)).await;
    // The objects and the name are gone.
    let names = rig.busctl(&["list", "--acquired"]).await;
    assert!(
        !text(&names.stdout).contains(NAME),
        "{}",
        text(&names.stdout)
    );
    drop(holder);
}
