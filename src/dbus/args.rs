//! `CreatePasskey`'s arguments: bounds, option keys and types, and the ceremony's own
//! validation, before anything starts.

use std::collections::HashMap;
use std::time::Duration;

use zbus::zvariant::serialized::{Context, Data};
use zbus::zvariant::{Endian, OwnedValue, Value};
use zeroize::Zeroizing;

use super::AUTHENTICATOR_PATH_PREFIX;
use crate::ceremony::{self, CeremonyRequest};
use crate::loginid::Token;
use crate::loginid::dto::UsernameType;
use crate::transport::{DeviceId, Transport};

/// Most entries in `CreatePasskey`'s options.
pub const MAX_OPTIONS: usize = 16;

/// Longest PIN, in UTF-8 bytes (CTAP 2.2 §6.5.1).
pub const MAX_PIN_BYTES: usize = 63;

/// How much of an unknown option's key an error message repeats.
const ECHO_CHARS: usize = 64;

/// What is wrong with `CreatePasskey`'s arguments (`org.passkeyd.Error.InvalidArgument`).
/// Messages never repeat a secret (token, PIN).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidArgument {
    /// The message body is not `(s username, s authz_token, a{sv} options)`.
    #[error("the arguments are not (s username, s authz_token, a{{sv}} options)")]
    Body,
    /// An option this version does not know.
    #[error("unknown option {0:?}")]
    UnknownOption(String),
    /// An option's value has the wrong D-Bus type.
    #[error("option {option} must have type {expected}")]
    OptionType {
        /// The option.
        option: &'static str,
        /// Its D-Bus type.
        expected: &'static str,
    },
    /// More than [`MAX_OPTIONS`] options.
    #[error("more than {max} options")]
    TooManyOptions {
        /// The limit.
        max: usize,
    },
    /// `username_type` is not `email`, `phone` or `other`.
    #[error("username_type must be email, phone or other")]
    UsernameType,
    /// `authenticator` is not an authenticator object path.
    #[error("authenticator must be an object path under {AUTHENTICATOR_PATH_PREFIX}")]
    Authenticator,
    /// The PIN is longer than [`MAX_PIN_BYTES`].
    #[error("the PIN is longer than {max} bytes")]
    PinTooLong {
        /// The limit.
        max: usize,
    },
    /// The ceremony's own validation refused the request.
    #[error(transparent)]
    Request(#[from] ceremony::InvalidArgument),
}

/// Decodes a `CreatePasskey` message body (D-Bus wire format, little-endian, signature
/// `ssa{sv}`) and validates it into a [`CeremonyRequest`] exactly as the method handler does.
/// Pure; never panics. Trailing bytes after the arguments are refused.
pub fn decode_create_passkey(body: &[u8]) -> Result<CeremonyRequest, InvalidArgument> {
    type Body = (String, String, HashMap<String, OwnedValue>);
    let data = Data::new(body, Context::new_dbus(Endian::Little, 0));
    let ((username, token, options), used): (Body, usize) =
        data.deserialize().map_err(|_| InvalidArgument::Body)?;
    if used != body.len() {
        return Err(InvalidArgument::Body);
    }
    create_passkey_request(username, token, &options)
}

/// Checks `CreatePasskey`'s arguments and builds the request; the handler and
/// [`decode_create_passkey`] both come here.
pub(super) fn create_passkey_request(
    username: String,
    token: String,
    options: &HashMap<String, OwnedValue>,
) -> Result<CeremonyRequest, InvalidArgument> {
    // The token's buffer moves into a zeroizing `Token` at once.
    let mut request = CeremonyRequest::new(username, Some(Token::new(token)));
    if options.len() > MAX_OPTIONS {
        return Err(InvalidArgument::TooManyOptions { max: MAX_OPTIONS });
    }
    // Sorted, so that the first refusal does not depend on the map's order.
    let mut keys: Vec<&String> = options.keys().collect();
    keys.sort();
    for key in keys {
        let Some(value) = options.get(key) else {
            continue;
        };
        let value: &Value<'_> = value;
        match key.as_str() {
            "display_name" => request.display_name = Some(string(value, "display_name")?),
            "passkey_name" => request.passkey_name = Some(string(value, "passkey_name")?),
            "username_type" => {
                request.username_type = match &*string(value, "username_type")? {
                    "email" => UsernameType::Email,
                    "phone" => UsernameType::Phone,
                    "other" => UsernameType::Other,
                    _ => return Err(InvalidArgument::UsernameType),
                }
            }
            "authenticator" => {
                let Value::ObjectPath(path) = value else {
                    return Err(InvalidArgument::OptionType {
                        option: "authenticator",
                        expected: "o",
                    });
                };
                let id = device_id(path.as_str()).ok_or(InvalidArgument::Authenticator)?;
                request.authenticator = Some(id);
            }
            "timeout_ms" => {
                let Value::U32(ms) = value else {
                    return Err(InvalidArgument::OptionType {
                        option: "timeout_ms",
                        expected: "u",
                    });
                };
                request.timeout = Some(Duration::from_millis(u64::from(*ms)));
            }
            "pin" => {
                let Value::Str(pin) = value else {
                    return Err(InvalidArgument::OptionType {
                        option: "pin",
                        expected: "s",
                    });
                };
                if pin.len() > MAX_PIN_BYTES {
                    return Err(InvalidArgument::PinTooLong { max: MAX_PIN_BYTES });
                }
                request.pin = Some(Zeroizing::new(pin.as_str().to_owned()));
            }
            other => {
                return Err(InvalidArgument::UnknownOption(
                    other.chars().take(ECHO_CHARS).collect(),
                ));
            }
        }
    }
    request.validate()?;
    Ok(request)
}

fn string(value: &Value<'_>, option: &'static str) -> Result<String, InvalidArgument> {
    match value {
        Value::Str(s) => Ok(s.as_str().to_owned()),
        _ => Err(InvalidArgument::OptionType {
            option,
            expected: "s",
        }),
    }
}

/// The device id in an authenticator object path: `<prefix><transport>_<name>`, with
/// `[A-Za-z0-9_]` only.
pub(super) fn device_id(path: &str) -> Option<DeviceId> {
    let id = path.strip_prefix(AUTHENTICATOR_PATH_PREFIX)?;
    if id.is_empty()
        || id.len() > 255
        || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return None;
    }
    for transport in [Transport::Usb, Transport::Nfc, Transport::Virtual] {
        if let Some(name) = id
            .strip_prefix(transport.as_str())
            .and_then(|rest| rest.strip_prefix('_'))
        {
            // `name` is already in the id alphabet, so the id is `id` itself.
            return Some(DeviceId::new(transport, name));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use zbus::zvariant::{ObjectPath, to_bytes};

    const TOKEN: &str = "eyJhbGciOiJFUzI1NiJ9.e30.c2ln";

    fn body(username: &str, token: &str, options: &[(&str, Value<'_>)]) -> Vec<u8> {
        let options: HashMap<&str, &Value<'_>> = options.iter().map(|(k, v)| (*k, v)).collect();
        let ctxt = Context::new_dbus(Endian::Little, 0);
        to_bytes(ctxt, &(username, token, options))
            .unwrap()
            .to_vec()
    }

    #[test]
    fn a_full_request_decodes() {
        let path = ObjectPath::try_from("/org/passkeyd/authenticator/virtual_key0").unwrap();
        let bytes = body(
            "alice@example.com",
            TOKEN,
            &[
                ("display_name", Value::from("Alice")),
                ("username_type", Value::from("email")),
                ("passkey_name", Value::from("kiosk key")),
                ("authenticator", Value::from(path)),
                ("timeout_ms", Value::from(30_000u32)),
                ("pin", Value::from("1234")),
            ],
        );
        let request = decode_create_passkey(&bytes).unwrap();
        assert_eq!(request.username, "alice@example.com");
        assert_eq!(request.authz_token.as_ref().unwrap().expose(), TOKEN);
        assert_eq!(request.display_name.as_deref(), Some("Alice"));
        assert_eq!(request.passkey_name.as_deref(), Some("kiosk key"));
        assert_eq!(request.username_type, UsernameType::Email);
        assert_eq!(
            request.authenticator.as_ref().map(DeviceId::as_str),
            Some("virtual_key0")
        );
        assert_eq!(request.timeout, Some(Duration::from_secs(30)));
        assert_eq!(request.pin.as_ref().map(|p| p.as_str()), Some("1234"));
    }

    #[test]
    fn no_options_is_fine() {
        let request = decode_create_passkey(&body("bob", TOKEN, &[])).unwrap();
        assert_eq!(request.username, "bob");
        assert_eq!(request.username_type, UsernameType::Other);
        assert!(request.pin.is_none() && request.timeout.is_none());
    }

    #[test]
    fn bad_arguments_are_refused() {
        let empty = InvalidArgument::Request(ceremony::InvalidArgument::UsernameEmpty);
        assert_eq!(
            decode_create_passkey(&body("", TOKEN, &[])).err(),
            Some(empty)
        );
        let big = "a".repeat(1 << 20);
        assert_eq!(
            decode_create_passkey(&body("bob", &big, &[])).err(),
            Some(InvalidArgument::Request(
                ceremony::InvalidArgument::TokenSize { max: 8192 }
            ))
        );
        assert_eq!(
            decode_create_passkey(&body("bob", "", &[])).err(),
            Some(InvalidArgument::Request(
                ceremony::InvalidArgument::TokenSize { max: 8192 }
            ))
        );
        assert_eq!(
            decode_create_passkey(&body("bob", TOKEN, &[("colour", Value::from("red"))])).err(),
            Some(InvalidArgument::UnknownOption("colour".into()))
        );
        assert_eq!(
            decode_create_passkey(&body("bob", TOKEN, &[("timeout_ms", Value::from("5"))])).err(),
            Some(InvalidArgument::OptionType {
                option: "timeout_ms",
                expected: "u"
            })
        );
        assert_eq!(
            decode_create_passkey(&body("bob", TOKEN, &[("timeout_ms", Value::from(5u64))])).err(),
            Some(InvalidArgument::OptionType {
                option: "timeout_ms",
                expected: "u"
            })
        );
        assert_eq!(
            decode_create_passkey(&body("bob", TOKEN, &[("display_name", Value::from(1u32))]))
                .err(),
            Some(InvalidArgument::OptionType {
                option: "display_name",
                expected: "s"
            })
        );
        assert_eq!(
            decode_create_passkey(&body("bob", TOKEN, &[("username_type", Value::from("x"))]))
                .err(),
            Some(InvalidArgument::UsernameType)
        );
        assert_eq!(
            decode_create_passkey(&body("bob", TOKEN, &[("pin", Value::from("1".repeat(64)))]))
                .err(),
            Some(InvalidArgument::PinTooLong { max: 63 })
        );
        assert!(matches!(
            decode_create_passkey(&body("bob", TOKEN, &[("pin", Value::from("12"))])).err(),
            Some(InvalidArgument::Request(ceremony::InvalidArgument::Pin(_)))
        ));
        assert_eq!(
            decode_create_passkey(&body("bob", TOKEN, &[("timeout_ms", Value::from(0u32))])).err(),
            Some(InvalidArgument::Request(
                ceremony::InvalidArgument::ZeroTimeout
            ))
        );
    }

    #[test]
    fn too_many_options_are_refused() {
        let keys: Vec<String> = (0..=MAX_OPTIONS).map(|i| format!("k{i}")).collect();
        let options: Vec<(&str, Value<'_>)> = keys
            .iter()
            .map(|k| (k.as_str(), Value::from(1u32)))
            .collect();
        assert_eq!(
            decode_create_passkey(&body("bob", TOKEN, &options)).err(),
            Some(InvalidArgument::TooManyOptions { max: 16 })
        );
    }

    #[test]
    fn authenticator_paths_are_checked() {
        for bad in [
            "/org/passkeyd/authenticator",
            "/org/passkeyd/authenticator/bogus_x",
            "/org/passkeyd/ceremony/1",
            "/org/passkeyd/authenticator/usb_a/b",
        ] {
            let path = ObjectPath::try_from(bad).unwrap();
            assert_eq!(
                decode_create_passkey(&body("bob", TOKEN, &[("authenticator", Value::from(path))]))
                    .err(),
                Some(InvalidArgument::Authenticator),
                "{bad}"
            );
        }
        assert_eq!(
            decode_create_passkey(&body(
                "bob",
                TOKEN,
                &[(
                    "authenticator",
                    Value::from("/org/passkeyd/authenticator/usb_1")
                )]
            ))
            .err(),
            Some(InvalidArgument::OptionType {
                option: "authenticator",
                expected: "o"
            })
        );
        assert_eq!(
            device_id("/org/passkeyd/authenticator/nfc_Reader_0").map(|d| d.as_str().to_owned()),
            Some("nfc_Reader_0".to_owned())
        );
    }

    #[test]
    fn garbage_and_truncations_are_refused_without_panic() {
        let good = body("alice", TOKEN, &[("display_name", Value::from("Alice"))]);
        for end in 0..good.len() {
            assert_eq!(
                decode_create_passkey(&good[..end]).err(),
                Some(InvalidArgument::Body),
                "{end}"
            );
        }
        let mut trailing = good;
        trailing.push(0);
        assert_eq!(
            decode_create_passkey(&trailing).err(),
            Some(InvalidArgument::Body)
        );
        for seed in 0u8..=255 {
            let noise: Vec<u8> = (0..64u8)
                .map(|i| i.wrapping_mul(seed).wrapping_add(seed))
                .collect();
            let _ = decode_create_passkey(&noise);
        }
    }

    #[test]
    fn errors_never_repeat_the_pin_or_the_token() {
        let secret_pin = "9".repeat(64);
        let error = decode_create_passkey(&body(
            "bob",
            TOKEN,
            &[("pin", Value::from(secret_pin.as_str()))],
        ))
        .unwrap_err()
        .to_string();
        assert!(!error.contains(&secret_pin), "{error}");
        let bad_token = "secret token";
        let error = decode_create_passkey(&body("bob", bad_token, &[]))
            .unwrap_err()
            .to_string();
        assert!(!error.contains(bad_token), "{error}");
    }
}
