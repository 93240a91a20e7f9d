#![no_main]
//! `CreatePasskey`'s arguments as they arrive from any local caller: the D-Bus message body
//! (`ssa{sv}`, little-endian) decoded and validated by `passkeyd::dbus::decode_create_passkey`.
//!
//! First byte 0: the rest is the raw body. Otherwise the rest is read as structured
//! arguments (username, token, options of several D-Bus types), which the target encodes, so
//! that validation is explored beyond the wire decoding.
//!
//! Properties: an accepted request is within every documented bound and validates again; the
//! request re-encoded as a body decodes to the same request; a refusal's message is short
//! and never repeats the token or the PIN the caller sent.

use std::collections::HashMap;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use passkeyd::ceremony::{CeremonyRequest, MAX_NAME_CHARS, MAX_TOKEN_BYTES, MAX_USERNAME_CHARS};
use passkeyd::dbus::decode_create_passkey;
use passkeyd::loginid::dto::UsernameType;
use zvariant::serialized::{Context, Data};
use zvariant::{Endian, ObjectPath, OwnedValue, Value};

const MAX_PIN_BYTES: usize = 63;
const PREFIX: &str = "/org/passkeyd/authenticator/";

#[derive(Arbitrary, Debug)]
enum OptionValue {
    Str(String),
    U32(u32),
    Path(String),
    Bool(bool),
    I64(i64),
    Bytes(Vec<u8>),
}

#[derive(Arbitrary, Debug)]
struct Arguments {
    username: String,
    token: String,
    options: Vec<(String, OptionValue)>,
}

fn encode(username: &str, token: &str, options: &HashMap<String, Value<'_>>) -> Option<Vec<u8>> {
    let ctxt = Context::new_dbus(Endian::Little, 0);
    zvariant::to_bytes(ctxt, &(username, token, options))
        .ok()
        .map(|data| data.to_vec())
}

/// The arguments as the target decodes them itself (to know what the caller's secrets were).
fn decode_raw(body: &[u8]) -> Option<(String, String, HashMap<String, OwnedValue>)> {
    let data = Data::new(body, Context::new_dbus(Endian::Little, 0));
    data.deserialize().ok().map(|(args, _)| args)
}

/// The request as a body again, the way a well-behaved client would send it.
fn reencode(request: &CeremonyRequest) -> Vec<u8> {
    let mut options: HashMap<String, Value<'_>> = HashMap::new();
    if let Some(name) = &request.display_name {
        options.insert("display_name".into(), Value::from(name.as_str()));
    }
    if let Some(name) = &request.passkey_name {
        options.insert("passkey_name".into(), Value::from(name.as_str()));
    }
    let kind = match request.username_type {
        UsernameType::Email => "email",
        UsernameType::Phone => "phone",
        _ => "other",
    };
    options.insert("username_type".into(), Value::from(kind));
    if let Some(id) = &request.authenticator {
        let path = ObjectPath::try_from(format!("{PREFIX}{id}")).expect("a valid path");
        options.insert("authenticator".into(), Value::from(path));
    }
    if let Some(timeout) = request.timeout {
        let ms = u32::try_from(timeout.as_millis()).expect("timeouts come from a u32");
        options.insert("timeout_ms".into(), Value::from(ms));
    }
    if let Some(pin) = &request.pin {
        options.insert("pin".into(), Value::from(pin.as_str()));
    }
    let token = request.authz_token.as_ref().expect("a token");
    encode(&request.username, token.expose(), &options).expect("encodes")
}

fn check_accepted(request: &CeremonyRequest, body: &[u8]) {
    assert!(request.validate().is_ok());
    let chars = request.username.chars().count();
    assert!((1..=MAX_USERNAME_CHARS).contains(&chars));
    let token = request
        .authz_token
        .as_ref()
        .expect("CreatePasskey always has a token");
    assert!(!token.is_empty() && token.len() <= MAX_TOKEN_BYTES);
    for name in [&request.display_name, &request.passkey_name]
        .into_iter()
        .flatten()
    {
        assert!(name.chars().count() <= MAX_NAME_CHARS);
        assert!(!name.chars().any(char::is_control));
    }
    if let Some(pin) = &request.pin {
        assert!(pin.len() <= MAX_PIN_BYTES);
    }
    assert!(request.timeout.is_none_or(|t| !t.is_zero()));

    let again = decode_create_passkey(&reencode(request)).expect("the re-encoded request");
    assert_eq!(format!("{again:?}"), format!("{request:?}"));
    assert_eq!(again.authz_token, request.authz_token);
    assert_eq!(
        again.pin.as_deref().map(String::as_str),
        request.pin.as_deref().map(String::as_str)
    );
    let _ = body;
}

fn check_refused(message: &str, body: &[u8]) {
    // The longest: an echoed unknown key (64 characters) in its sentence.
    assert!(
        message.chars().count() <= 512,
        "{} characters",
        message.len()
    );
    let Some((username, token, options)) = decode_raw(body) else {
        return;
    };
    // A secret the caller also put where messages may quote it (the username, an option's
    // key) is not a leak; nor is one made of the messages' own words ("username", "/org/"),
    // so only secrets with a digit and no blank, long enough to be one, are looked for.
    let checked = |secret: &str, min_len: usize| {
        secret.len() >= min_len
            && secret.bytes().any(|b| b.is_ascii_digit())
            && !secret.chars().any(char::is_whitespace)
            && !username.contains(secret)
            && !options.keys().any(|key| key.contains(secret))
    };
    if checked(&token, 8) {
        assert!(!message.contains(&token), "{message:?} repeats the token");
    }
    if let Some(pin) = options.get("pin").and_then(|v| <&str>::try_from(&**v).ok())
        && checked(pin, 6)
        && !token.contains(pin)
    {
        assert!(!message.contains(pin), "{message:?} repeats the PIN");
    }
}

fn structured(data: &[u8]) -> Option<Vec<u8>> {
    let args = Arguments::arbitrary_take_rest(Unstructured::new(data)).ok()?;
    let mut options: HashMap<String, Value<'_>> = HashMap::new();
    for (key, value) in args.options {
        let value = match value {
            OptionValue::Str(s) => Value::from(s),
            OptionValue::U32(n) => Value::from(n),
            // Mostly well-formed authenticator paths, with the fuzzer's id.
            OptionValue::Path(id) => {
                Value::from(ObjectPath::try_from(format!("{PREFIX}{id}")).ok()?)
            }
            OptionValue::Bool(b) => Value::from(b),
            OptionValue::I64(n) => Value::from(n),
            OptionValue::Bytes(b) => Value::from(b),
        };
        options.insert(key, value);
    }
    encode(&args.username, &args.token, &options)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let body = if mode == 0 {
        rest.to_vec()
    } else {
        let Some(body) = structured(rest) else {
            return;
        };
        body
    };
    match decode_create_passkey(&body) {
        Ok(request) => check_accepted(&request, &body),
        Err(error) => check_refused(&error.to_string(), &body),
    }
});
