//! Secret hygiene of the ceremony: full ceremonies against virtual keys (the Trussed firmware)
//! and the LoginID emulator, with every log line of the process captured at TRACE for every
//! target, and distinctive PINs and tokens. None of them, in any form (as is, hex, base64 or
//! base64url at any alignment; for PINs also the pinHash), may appear in a log line, an
//! error's Display, Debug or source chain, a progress step or a registration's Debug.
//!
//! The tokens are the real ones: the authorization token from the emulator's `mgmt/grant`
//! and the LoginID token read from the ceremony's result; their signatures make them
//! distinctive.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ceremony_support;
mod hygiene_support;

use std::collections::VecDeque;
use std::error::Error as _;

use ceremony_support::device_support::GENEROUS;
use ceremony_support::*;
use hygiene_support::{Capture, Secret, assert_clean};
use loginid_emulator::{Endpoint, Fault};
use passkeyd::ceremony::{Ceremony, CeremonyError, ErrorKind, Progress, Registration, State};
use passkeyd::loginid::Token;
use tokio::time::timeout;
use virtkey::Config;
use zeroize::Zeroizing;

const USER: &str = "hygiene@example.com";
/// The key's PIN.
const PIN: &str = "Pin-7391-Qx";
/// A PIN the key does not have.
const WRONG_PIN: &str = "Wrong-8642-Jv";
/// The PIN set on a key that has none.
const NEW_PIN: &str = "NewPin-5839-Zk";

fn with_pin(pin: &str) -> Config {
    Config {
        pin: Some(pin.to_owned()),
        ..Config::default()
    }
}

/// What a ceremony showed its caller, as text: every step's Debug, and the error's Display,
/// Debug and source chain or the registration's Debug.
struct Seen {
    states: Vec<State>,
    texts: Vec<String>,
    result: Result<Registration, CeremonyError>,
}

impl Seen {
    fn text(&self) -> String {
        self.texts.join("\n")
    }

    fn registration(&self) -> &Registration {
        self.result.as_ref().expect("the ceremony completed")
    }

    fn error(&self) -> &CeremonyError {
        self.result.as_ref().expect_err("the ceremony failed")
    }
}

/// Runs a ceremony to its end, answering `needs-pin` prompts from `pins` and
/// `needs-new-pin` prompts from `new_pins` (prompts beyond them are dropped unanswered).
async fn drive(mut ceremony: Ceremony, pins: &[&str], new_pins: &[&str]) -> Seen {
    let mut pins: VecDeque<&str> = pins.iter().copied().collect();
    let mut new_pins: VecDeque<&str> = new_pins.iter().copied().collect();
    let mut states = Vec::new();
    let mut texts = Vec::new();
    while let Some(step) = timeout(GENEROUS, ceremony.next())
        .await
        .expect("the ceremony makes progress")
    {
        states.push(step.state());
        texts.push(format!("{step:?}"));
        texts.push(format!("{step:#?}"));
        match step {
            Progress::NeedsPin(prompt) => {
                if let Some(pin) = pins.pop_front() {
                    prompt.submit(Zeroizing::new(pin.to_owned()));
                }
            }
            Progress::NeedsNewPin(prompt) => {
                if let Some(pin) = new_pins.pop_front() {
                    prompt.into_reply().send(Zeroizing::new(pin.to_owned()));
                }
            }
            _ => {}
        }
    }
    let result = timeout(GENEROUS, ceremony.result())
        .await
        .expect("the result comes");
    match &result {
        Ok(registration) => {
            texts.push(format!("{registration:?}"));
            texts.push(format!("{registration:#?}"));
        }
        Err(error) => texts.extend(error_texts(error)),
    }
    Seen {
        states,
        texts,
        result,
    }
}

/// An error as a caller could show it: Display, Debug (plain and pretty), and each source's
/// Display.
fn error_texts(error: &CeremonyError) -> Vec<String> {
    let mut texts = vec![
        error.to_string(),
        format!("{error:?}"),
        format!("{error:#?}"),
    ];
    let mut source = error.source();
    while let Some(cause) = source {
        texts.push(cause.to_string());
        source = cause.source();
    }
    texts
}

fn pins() -> Vec<Secret> {
    vec![
        Secret::pin("PIN", PIN),
        Secret::pin("wrong PIN", WRONG_PIN),
        Secret::pin("new PIN", NEW_PIN),
    ]
}

/// The whole capture must be clean of `secrets`, and must show that TRACE-level lines of
/// the daemon's modules were captured at all (a silent capture would prove nothing).
fn assert_logs_clean(capture: &Capture, secrets: &[Secret]) {
    // A canary, logged as a leak would be: the check must find it.
    let canary = format!("canary-{:016x}", rand::random::<u64>());
    tracing::trace!(target: "hygiene", value = %hex::encode(canary.as_bytes()), "canary");
    let logs = capture.text();
    assert_eq!(
        Secret::pin("canary", &canary).find_in(&logs),
        Some(hex::encode(canary.as_bytes()).as_str())
    );
    assert!(capture.lines() > 0);
    for expected in [
        " DEBUG ceremony{id=",
        "passkeyd::ceremony::key: makeCredential plan",
        "passkeyd::device::hid: channel allocated",
        " TRACE ",
    ] {
        assert!(
            logs.contains(expected),
            "the capture lacks {expected:?}; {} lines",
            capture.lines()
        );
    }
    assert_clean("the log", &logs, secrets);
}

/// PIN prompts: a wrong PIN, then the right one; the LoginID token is read from the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_then_the_right_one() {
    let capture = Capture::global();
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("alpha", with_pin(PIN)).await;
    let authz = rig.grant(USER).await;
    let mut secrets = pins();
    secrets.push(Secret::token("authorization token", authz.expose()));
    secrets.push(Secret::token("API key", API_KEY));

    let ceremony = rig
        .ceremonies
        .start(passkeyd::ceremony::CeremonyRequest::new(USER, Some(authz)))
        .unwrap();
    let seen = drive(ceremony, &[WRONG_PIN, PIN], &[]).await;
    assert_eq!(
        seen.states
            .iter()
            .filter(|s| **s == State::NeedsPin)
            .count(),
        2
    );
    assert_eq!(seen.states.last(), Some(&State::Completed));
    let registration = seen.registration();
    rig.check_registration(registration, USER).await;
    secrets.push(Secret::token("LoginID token", registration.token.expose()));

    assert_clean("what the caller saw", &seen.text(), &secrets);
    assert_logs_clean(&capture, &secrets);
}

/// A key without a PIN gets one (a too-short answer first), and the next ceremony asks for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_pin_is_set_and_then_asked_for() {
    let capture = Capture::global();
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("bravo", Config::default()).await;
    let mut secrets = pins();

    let authz = rig.grant(USER).await;
    secrets.push(Secret::token("authorization token", authz.expose()));
    let ceremony = rig
        .ceremonies
        .start(passkeyd::ceremony::CeremonyRequest::new(USER, Some(authz)))
        .unwrap();
    let first = drive(ceremony, &[], &["123", NEW_PIN]).await;
    assert_eq!(
        first
            .states
            .iter()
            .filter(|s| **s == State::NeedsNewPin)
            .count(),
        2
    );
    secrets.push(Secret::token(
        "first LoginID token",
        first.registration().token.expose(),
    ));

    let authz = rig.grant("second@example.com").await;
    secrets.push(Secret::token("second authorization token", authz.expose()));
    let ceremony = rig
        .ceremonies
        .start(passkeyd::ceremony::CeremonyRequest::new(
            "second@example.com",
            Some(authz),
        ))
        .unwrap();
    let second = drive(ceremony, &[NEW_PIN], &[]).await;
    assert_eq!(second.states.first(), Some(&State::NeedsPin));
    secrets.push(Secret::token(
        "second LoginID token",
        second.registration().token.expose(),
    ));

    assert_clean("what the caller saw", &first.text(), &secrets);
    assert_clean("what the caller saw", &second.text(), &secrets);
    assert_logs_clean(&capture, &secrets);
}

/// Unattended PINs: a wrong one ends the ceremony with PinInvalid; the right one completes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unattended_wrong_pin_fails_without_showing_it() {
    let capture = Capture::global();
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("charlie", with_pin(PIN)).await;
    let mut secrets = pins();

    let mut request = rig.request(USER).await;
    secrets.push(Secret::token(
        "authorization token",
        request.authz_token.as_ref().unwrap().expose(),
    ));
    request.pin = Some(Zeroizing::new(WRONG_PIN.to_owned()));
    assert_clean("the request's Debug", &format!("{request:?}"), &secrets);
    let wrong = drive(rig.ceremonies.start(request).unwrap(), &[], &[]).await;
    assert_eq!(wrong.error().kind(), ErrorKind::PinInvalid);

    let mut request = rig.request(USER).await;
    secrets.push(Secret::token(
        "second authorization token",
        request.authz_token.as_ref().unwrap().expose(),
    ));
    request.pin = Some(Zeroizing::new(PIN.to_owned()));
    let right = drive(rig.ceremonies.start(request).unwrap(), &[], &[]).await;
    secrets.push(Secret::token(
        "LoginID token",
        right.registration().token.expose(),
    ));

    assert_clean("what the caller saw", &wrong.text(), &secrets);
    assert_clean("what the caller saw", &right.text(), &secrets);
    assert_logs_clean(&capture, &secrets);
}

/// Failures from LoginID: an expired and a foreign authorization token (TokenRejected), a
/// `reg/complete` refused with 400 (BackendRejected) and `reg/init` failing with 500
/// (BackendUnavailable), each after the PIN was given where a key was used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loginid_failures_show_no_token() {
    let capture = Capture::global();
    let mut rig = Rig::start(|config| config.protected = true).await;
    let _key = rig.plug("delta", with_pin(PIN)).await;
    let mut secrets = pins();
    let mut texts = Vec::new();

    let expired = rig
        .emulator
        .mint_token(USER, &["reg:write"], -120, "authzToken");
    secrets.push(Secret::token("expired authorization token", &expired));
    let request = passkeyd::ceremony::CeremonyRequest::new(USER, Some(Token::new(expired)));
    let seen = drive(rig.ceremonies.start(request).unwrap(), &[PIN], &[]).await;
    assert_eq!(seen.error().kind(), ErrorKind::TokenRejected);
    texts.push(seen.text());

    let foreign = rig.grant("mallory@example.com").await;
    secrets.push(Secret::token(
        "foreign authorization token",
        foreign.expose(),
    ));
    let request = passkeyd::ceremony::CeremonyRequest::new(USER, Some(foreign));
    let seen = drive(rig.ceremonies.start(request).unwrap(), &[PIN], &[]).await;
    assert_eq!(seen.error().kind(), ErrorKind::TokenRejected);
    texts.push(seen.text());

    rig.emulator.push_fault(
        Endpoint::RegComplete,
        Fault {
            status: Some(400),
            times: Some(1),
            ..Fault::default()
        },
    );
    let request = rig.request(USER).await;
    secrets.push(Secret::token(
        "authorization token",
        request.authz_token.as_ref().unwrap().expose(),
    ));
    let seen = drive(rig.ceremonies.start(request).unwrap(), &[PIN], &[]).await;
    assert!(seen.states.contains(&State::NeedsPin), "{:?}", seen.states);
    assert_eq!(seen.error().kind(), ErrorKind::BackendRejected);
    texts.push(seen.text());

    rig.emulator.push_fault(
        Endpoint::RegInit,
        Fault {
            status: Some(500),
            times: Some(1),
            ..Fault::default()
        },
    );
    let request = rig.request(USER).await;
    secrets.push(Secret::token(
        "another authorization token",
        request.authz_token.as_ref().unwrap().expose(),
    ));
    let seen = drive(rig.ceremonies.start(request).unwrap(), &[PIN], &[]).await;
    assert_eq!(seen.error().kind(), ErrorKind::BackendUnavailable);
    texts.push(seen.text());

    for text in &texts {
        assert_clean("what the caller saw", text, &secrets);
    }
    assert_logs_clean(&capture, &secrets);
}

// ---- over D-Bus ----

mod abuse_support;

use abuse_support::{CEREMONY, Client, Daemon, NAME, Options, key_path};
use futures_util::StreamExt as _;
use passkeyd::dbus::AccessPolicy;
use zbus::zvariant::{OwnedValue, Value};

/// Everything the bus carried, as seen by a monitor (`BecomeMonitor` with no rule: every
/// message), until `marker` is seen.
async fn monitor(daemon: &Daemon) -> (tokio::task::JoinHandle<Vec<zbus::Message>>, String) {
    let monitor = daemon.bus.connect().await;
    let mut stream = zbus::MessageStream::from(&monitor);
    monitor
        .call_method(
            Some("org.freedesktop.DBus"),
            "/org/freedesktop/DBus",
            Some("org.freedesktop.DBus.Monitoring"),
            "BecomeMonitor",
            &(Vec::<&str>::new(), 0u32),
        )
        .await
        .unwrap();
    let marker = format!("Marker{:08x}", rand::random::<u32>());
    let wanted = marker.clone();
    let task = tokio::spawn(async move {
        let _monitor = monitor;
        let mut seen = Vec::new();
        while let Some(Ok(message)) = timeout(GENEROUS, stream.next())
            .await
            .expect("the monitor sees traffic")
        {
            let last = message
                .header()
                .member()
                .is_some_and(|m| m.as_str() == wanted);
            seen.push(message);
            if last {
                return seen;
            }
        }
        panic!("the monitor lost the bus");
    });
    (task, marker)
}

/// Every object's every property, as any connection may read them.
async fn every_property(client: &Client) -> String {
    let reply = client
        .call(
            "/org/passkeyd",
            "org.freedesktop.DBus.ObjectManager",
            "GetManagedObjects",
            &(),
        )
        .await
        .unwrap();
    let objects: std::collections::HashMap<
        zbus::zvariant::OwnedObjectPath,
        std::collections::HashMap<String, std::collections::HashMap<String, OwnedValue>>,
    > = reply.body().deserialize().unwrap();
    let mut text = format!("{objects:?}");
    for (path, interfaces) in &objects {
        for interface in interfaces.keys() {
            if let Ok(all) = client
                .call(
                    path.as_str(),
                    "org.freedesktop.DBus.Properties",
                    "GetAll",
                    &(interface.as_str(),),
                )
                .await
            {
                text.push_str(&format!("{:?}", all.body().data().to_vec()));
                let all: std::collections::HashMap<String, OwnedValue> =
                    all.body().deserialize().unwrap();
                text.push_str(&format!("{all:?}"));
            }
        }
    }
    text
}

/// Full ceremonies over D-Bus (PIN prompt answered after a wrong PIN, a new PIN set, an
/// unattended wrong PIN, a failure from LoginID), watched by a monitor on the bus. A PIN or
/// token may travel only where it must:
/// - from the owner to the service, in the method calls that carry it (CreatePasskey: the
///   authorization token and an unattended PIN; SubmitPin, SetNewPin: the PIN);
/// - from the service to the owner, the LoginID token in Result's reply and the Completed
///   signal (both addressed to the owner).
///
/// Nothing else may hold any of them: no signal (broadcast or unicast), no property, no
/// error (not even the owner's), no log line.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn over_dbus_secrets_reach_the_owner_only() {
    let capture = Capture::global();
    let mut rig = Rig::start(|_| {}).await;
    let _alpha = rig.plug("alpha", with_pin(PIN)).await;
    let _bravo = rig.plug("bravo", Config::default()).await;
    let daemon = Daemon::start(rig, AccessPolicy::default()).await;
    let (monitored, marker) = monitor(&daemon).await;
    let mut owner = Client::connect(&daemon.bus).await;
    let reader = Client::connect(&daemon.bus).await;
    let mut secrets = pins();
    let mut authz = Vec::new();
    let mut loginid = Vec::new();
    let mut properties = Vec::new();

    let mut run = async |key: &str, options: Options, pins: &[&str], new_pins: &[&str]| {
        let username = format!("dbus-{:08x}@example.com", rand::random::<u32>());
        let token = daemon.rig.grant(&username).await;
        authz.push(Secret::token("authorization token", token.expose()));
        let mut options = options;
        options.insert("authenticator", Value::from(key_path(key)));
        let path = owner
            .create(&username, token.expose(), options)
            .await
            .unwrap();
        let seen = owner.follow(path.as_str(), pins, new_pins).await;
        properties.push(every_property(&reader).await);
        let result = owner.result(path.as_str()).await;
        owner.ceremony_call(path.as_str(), "Release").await.unwrap();
        (seen, result)
    };

    // A wrong PIN, then the right one.
    let (seen, result) = run("virtual_alpha", Options::new(), &[WRONG_PIN, PIN], &[]).await;
    assert_eq!(seen.last().unwrap().state, "completed");
    let token: String = result.unwrap()["token"]
        .try_clone()
        .unwrap()
        .try_into()
        .unwrap();
    loginid.push(Secret::token("LoginID token", &token));
    // A new PIN.
    let (seen, result) = run("virtual_bravo", Options::new(), &[], &[NEW_PIN]).await;
    assert_eq!(seen.last().unwrap().state, "completed");
    let token: String = result.unwrap()["token"]
        .try_clone()
        .unwrap()
        .try_into()
        .unwrap();
    loginid.push(Secret::token("second LoginID token", &token));
    // An unattended wrong PIN.
    let wrong = Options::from([("pin", Value::from(WRONG_PIN))]);
    let (seen, result) = run("virtual_alpha", wrong, &[], &[]).await;
    assert_eq!(seen.last().unwrap().state, "failed");
    assert!(result.is_err());
    // LoginID refuses reg/complete.
    daemon.rig.emulator.push_fault(
        Endpoint::RegComplete,
        Fault {
            status: Some(400),
            times: Some(1),
            ..Fault::default()
        },
    );
    let right = Options::from([("pin", Value::from(PIN))]);
    let (seen, result) = run("virtual_alpha", right, &[], &[]).await;
    assert_eq!(seen.last().unwrap().state, "failed");
    assert!(result.is_err());
    properties.push(every_property(&reader).await);

    // The marker: once the monitor has it, it has everything before it.
    owner
        .connection
        .emit_signal(
            None::<&str>,
            "/org/passkeyd/test",
            "org.passkeyd.Test.Hygiene",
            marker.as_str(),
            &(),
        )
        .await
        .unwrap();
    let messages = monitored.await.unwrap();

    secrets.extend(authz.iter().cloned());
    secrets.extend(loginid.iter().cloned());
    for text in &properties {
        assert_clean("a property", text, &secrets);
    }
    let owner_name = owner.unique_name();
    let mut delivered = 0;
    for message in &messages {
        let header = message.header();
        let member = header
            .member()
            .map(|m| m.as_str().to_owned())
            .unwrap_or_default();
        let sender = header.sender().map(|s| s.to_string()).unwrap_or_default();
        let destination = header
            .destination()
            .map(|d| d.to_string())
            .unwrap_or_default();
        let kind = message.message_type();
        let text = String::from_utf8_lossy(message.data()).into_owned();
        let what = format!(
            "{kind:?} {member} from {sender} to {destination} at {:?}",
            header.path().map(|p| p.as_str().to_owned())
        );
        let from_owner = sender == owner_name
            && kind == zbus::message::Type::MethodCall
            && (destination == NAME || destination.starts_with(':'))
            && matches!(member.as_str(), "CreatePasskey" | "SubmitPin" | "SetNewPin");
        if from_owner {
            delivered += 1;
            continue;
        }
        let to_owner = destination == owner_name
            && (kind == zbus::message::Type::MethodReturn
                || (kind == zbus::message::Type::Signal && member == "Completed"));
        if to_owner && loginid.iter().any(|s| s.find_in(&text).is_some()) {
            // The LoginID token, for its owner: nothing else secret with it.
            delivered += 1;
            let others: Vec<Secret> = pins().into_iter().chain(authz.iter().cloned()).collect();
            assert_clean(&what, &text, &others);
            continue;
        }
        assert_clean(&what, &text, &secrets);
    }
    // The monitor did see the secrets go where they must: 4 CreatePasskey, 2 SubmitPin,
    // 1 SetNewPin, 2 Result replies, 2 Completed signals.
    assert!(delivered >= 11, "{delivered} messages with secrets seen");
    assert!(
        messages.iter().any(|m| m
            .header()
            .interface()
            .is_some_and(|i| i.as_str() == CEREMONY)),
        "the monitor saw the ceremonies"
    );
    daemon.wait_no_ceremony().await;
    assert_logs_clean(&capture, &secrets);
}
