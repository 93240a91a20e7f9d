#![no_main]
//! LoginID response bodies: `reg/init`, `reg/complete`, `mgmt/grant`, the JWKS and the error
//! body of a non-2xx answer, decoded by the daemon's DTOs and error path.
//!
//! The first byte picks the body type; the rest is the body.
//!
//! Properties: a decoded DTO serializes and decodes back to itself, in a size bounded by the
//! input's; the RP ID of reg/init options passes the origin policy only as the origin's host
//! or a registrable parent of it; a JWK accepted as a verification key has 32-byte
//! coordinates; an error message is bounded, has no control characters and never carries
//! the token the request sent.

use libfuzzer_sys::fuzz_target;
use passkeyd::ceremony::Origin;
use passkeyd::fuzzing::{self, MAX_API_MESSAGE_CHARS};
use passkeyd::loginid::dto::{GrantResponse, JwkSet, RegCompleteResponse, RegInitResponse};
use passkeyd::loginid::{Token, jwt};
use serde::Serialize;
use serde::de::DeserializeOwned;

const ORIGIN_HOST: &str = "login.kiosk.example.co.uk";
const REGISTRABLE: &str = "example.co.uk";
const REDACTED: &str = "<redacted>";

/// Decodes `body` as `T`; when it decodes, checks the serde round trip and returns it.
/// `same` compares two values (floats inside free-form JSON may move by one ulp through the
/// default float parser, so the caller can say what "the same" means).
fn round_trip<T>(body: &[u8], same: impl Fn(&T, &T) -> bool) -> Option<T>
where
    T: Serialize + DeserializeOwned + std::fmt::Debug,
{
    let value: T = serde_json::from_slice(body).ok()?;
    let encoded = serde_json::to_vec(&value).expect("a decoded DTO encodes");
    // Defaults of absent members and `unknown` for unknown enum values add a bounded amount.
    assert!(
        encoded.len() <= 2 * body.len() + 256,
        "{} bytes from {}",
        encoded.len(),
        body.len()
    );
    let back: T = serde_json::from_slice(&encoded).expect("an encoded DTO decodes");
    assert!(same(&value, &back), "{value:?} != {back:?}");
    Some(value)
}

fn has_float(value: &serde_json::Value) -> bool {
    match value {
        serde_json::Value::Number(n) => n.is_f64(),
        serde_json::Value::Array(items) => items.iter().any(has_float),
        serde_json::Value::Object(map) => map.values().any(has_float),
        _ => false,
    }
}

fn reg_init(body: &[u8]) {
    let Some(response) = round_trip::<RegInitResponse>(body, |a, b| {
        let (oa, ob) = (
            &a.registration_request_options,
            &b.registration_request_options,
        );
        let floats = oa.extensions.iter().flat_map(|m| m.values()).any(has_float);
        if floats {
            // Everything but the free-form extensions must still match exactly.
            let mut a = a.clone();
            let mut b = b.clone();
            a.registration_request_options.extensions = None;
            b.registration_request_options.extensions = None;
            a == b
                && ob.extensions.as_ref().map(|m| m.len())
                    == oa.extensions.as_ref().map(|m| m.len())
        } else {
            a == b
        }
    }) else {
        return;
    };
    let options = &response.registration_request_options;
    let origin = Origin::new(
        &format!("https://{ORIGIN_HOST}")
            .parse::<url::Url>()
            .expect("a URL"),
        false,
    )
    .expect("an https origin");
    let rp_id = options.rp.id.as_deref().unwrap_or(ORIGIN_HOST);
    if let Ok(checked) = origin.check_rp_id(rp_id) {
        let parent = ORIGIN_HOST
            .strip_suffix(checked.as_str())
            .is_some_and(|rest| rest.ends_with('.'));
        assert!(checked == ORIGIN_HOST || parent, "{checked:?}");
        assert!(
            checked.ends_with(REGISTRABLE),
            "{checked:?} is above the registrable domain"
        );
        assert_eq!(checked, checked.to_ascii_lowercase());
    }
}

fn jwks(body: &[u8]) {
    let Some(set) = round_trip::<JwkSet>(body, PartialEq::eq) else {
        return;
    };
    for jwk in &set.keys {
        if jwt::verifying_key(jwk).is_ok() {
            assert_eq!(jwk.kty, "EC");
            assert_eq!(jwk.crv.as_deref(), Some("P-256"));
            for coordinate in [&jwk.x, &jwk.y] {
                let text = coordinate.as_deref().expect("both coordinates are present");
                assert_eq!(text.len(), 43, "32 bytes in unpadded base64url");
            }
        }
    }
}

fn error_body(input: &[u8]) {
    // status (2 bytes) | content-type selector | secret | 0xff | body
    let [s0, s1, kind, rest @ ..] = input else {
        return;
    };
    let status = 100 + u16::from_be_bytes([*s0, *s1]) % 900;
    let content_type = match kind % 4 {
        0 => Some("application/json"),
        1 => Some("application/problem+json; charset=utf-8"),
        2 => Some("text/html"),
        _ => None,
    };
    let split = rest.iter().position(|&b| b == 0xff).unwrap_or(rest.len());
    let secret = Token::new(String::from_utf8_lossy(&rest[..split]).into_owned());
    let body = rest.get(split + 1..).unwrap_or_default();
    let error = fuzzing::api_error(status, content_type, body, Some(&secret))
        .expect("every status in 100..=999 is valid");
    assert_eq!(error.status, status);
    if let Some(message) = &error.message {
        assert!(message.chars().count() <= MAX_API_MESSAGE_CHARS + REDACTED.len());
        assert!(!message.chars().any(char::is_control), "{message:?}");
        // A token of fewer than 8 bytes is not searched for (it would match ordinary words),
        // and one that is part of the marker itself cannot be told from it.
        let exposed = secret.expose();
        if exposed.len() >= 8 && !REDACTED.contains(exposed) {
            assert!(!message.contains(exposed), "{message:?} carries the secret");
        }
    }
    // Nothing of the body reaches the message without a JSON content type.
    if content_type.is_none() || kind % 4 == 2 {
        assert_eq!(error.message, None);
    }
    let _ = error.to_string();
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    match selector % 5 {
        0 => reg_init(body),
        1 => {
            round_trip::<RegCompleteResponse>(body, PartialEq::eq);
        }
        2 => {
            round_trip::<GrantResponse>(body, PartialEq::eq);
        }
        3 => jwks(body),
        _ => error_body(body),
    }
});
