#![no_main]
//! LoginID token verification (ES256 compact JWS) on arbitrary token text, and on tokens this
//! target signs itself around arbitrary header and claims JSON.
//!
//! First byte even: the rest is token text, verified against the target's key. Odd: the rest
//! is `header JSON | 0x00 | claims JSON | 0x00 | tamper position`; the target signs it, checks
//! that verification accepts exactly the tokens whose claims meet the expectations, and that
//! changing any one character of a signed token makes it fail.
//!
//! Properties: accepted claims always meet every expectation (issuer, audience, user, expiry,
//! not-before); a correctly signed ES256 token with a kid and good claims is accepted; no
//! single-character change of a token survives verification.

use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use libfuzzer_sys::fuzz_target;
use p256::ecdsa::signature::Signer as _;
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use passkeyd::fuzzing;
use passkeyd::loginid::LoginIdClaims;

/// The key `scripts/fuzz-seeds`' tokens are signed with, so that mutations start from valid
/// signatures.
const SECRET_SCALAR: [u8; 32] = [0x11; 32];
const ISSUER: &str = "https://app-1.api.loginid.io";
const AUDIENCE: &str = "app-1";
const USERNAME: &str = "alice@example.com";
const NOW: u64 = 1_723_775_600;
const LEEWAY: Duration = Duration::from_secs(60);
const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";

fn now() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(NOW)
}

fn verify(token: &str, key: &VerifyingKey) -> Option<(String, LoginIdClaims)> {
    let result = fuzzing::verify_token(token, key, ISSUER, AUDIENCE, Some(USERNAME), LEEWAY, now());
    let (kid, claims) = result.ok()?;
    assert!(claims_acceptable(&claims), "accepted {claims:?}");
    Some((kid, claims))
}

/// What the verifier must require of the claims.
fn claims_acceptable(claims: &LoginIdClaims) -> bool {
    let now = NOW as i64;
    let leeway = LEEWAY.as_secs() as i64;
    claims.iss.trim_end_matches('/') == ISSUER
        && claims.aud.contains(AUDIENCE)
        && claims.username == USERNAME
        && claims.exp.saturating_add(leeway) > now
        && claims
            .nbf
            .is_none_or(|nbf| nbf.saturating_sub(leeway) <= now)
}

fn sign(header: &[u8], claims: &[u8], key: &SigningKey) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature: Signature = key.sign(input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
}

#[derive(serde::Deserialize)]
struct Header {
    alg: String,
    kid: Option<String>,
}

fuzz_target!(|data: &[u8]| {
    let signing = SigningKey::from_slice(&SECRET_SCALAR).expect("a valid scalar");
    let key = *signing.verifying_key();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode % 2 == 0 {
        let _ = verify(&String::from_utf8_lossy(rest), &key);
        return;
    }

    let mut parts = rest.splitn(3, |&b| b == 0);
    let (Some(header), Some(claims)) = (parts.next(), parts.next()) else {
        return;
    };
    let tamper = parts.next().unwrap_or_default();
    let token = sign(header, claims, &signing);
    let accepted = verify(&token, &key);

    // Completeness: a good token is accepted, and with the claims it was signed with.
    let header_ok =
        serde_json::from_slice::<Header>(header).is_ok_and(|h| h.alg == "ES256" && h.kid.is_some());
    let parsed = serde_json::from_slice::<LoginIdClaims>(claims).ok();
    let claims_ok = parsed.as_ref().is_some_and(claims_acceptable);
    assert_eq!(accepted.is_some(), header_ok && claims_ok, "{token}");
    if let Some((_, claims)) = &accepted {
        assert_eq!(Some(claims), parsed.as_ref());
    }

    // No one-character change survives, whatever the claims were.
    let mut bytes = token.into_bytes();
    let [a, b, c, ..] = *tamper else {
        return;
    };
    let at = usize::from(u16::from_be_bytes([a, b])) % bytes.len();
    let mut replacement = ALPHABET[usize::from(c) % ALPHABET.len()];
    if replacement == bytes[at] {
        replacement = if replacement == b'A' { b'B' } else { b'A' };
    }
    bytes[at] = replacement;
    let tampered = String::from_utf8(bytes).expect("ASCII");
    assert!(verify(&tampered, &key).is_none(), "{tampered} verified");
});
