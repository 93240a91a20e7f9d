//! Verification of LoginID tokens (ES256 compact JWS, RFC 7515 / RFC 7518 §3.4) against the
//! application's JWKS (reference §4.5, §5).
//!
//! Only ES256 is accepted: the algorithm is pinned rather than read from the token, so no
//! `alg` confusion (`none`, HMAC with a public key) is possible.

use std::collections::HashMap;
use std::sync::{PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::Verifier as _;
use p256::ecdsa::{Signature, VerifyingKey};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use super::client::LoginIdClient;
use super::config::LoginIdConfig;
use super::dto::{Jwk, JwkSet};
use super::error::{Error, TokenError};
use super::secret::Token;

/// Longest token accepted (LoginID tokens are well under 2 KiB).
const MAX_TOKEN_BYTES: usize = 16 << 10;

/// `aud`: a string (LoginID v2) or an array of strings (RFC 7519 §4.1.3).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    /// One audience.
    One(String),
    /// Several audiences.
    Many(Vec<String>),
}

impl Audience {
    /// Whether `app_id` is among the audiences.
    pub fn contains(&self, app_id: &str) -> bool {
        match self {
            Self::One(aud) => aud == app_id,
            Self::Many(auds) => auds.iter().any(|aud| aud == app_id),
        }
    }
}

/// Claims of a LoginID token (reference §5). Unknown claims are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LoginIdClaims {
    /// Application id.
    pub aud: Audience,
    /// Application base URL.
    pub iss: String,
    /// LoginID user id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    /// The user's name.
    pub username: String,
    /// Passkey id.
    #[serde(default, rename = "credID", skip_serializing_if = "Option::is_none")]
    pub cred_id: Option<String>,
    /// Granted scopes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
    /// `jwtAccess` for LoginID tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_type: Option<String>,
    /// Path of the verification endpoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<String>,
    /// RP ID of the passkey.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rp_id: Option<String>,
    /// Issued at (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<i64>,
    /// Not before (seconds since the epoch).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Expiry (seconds since the epoch); required.
    pub exp: i64,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

/// A compact JWS split into its parts, nothing verified yet.
struct Parsed<'a> {
    header: Header,
    signing_input: &'a str,
    signature: Vec<u8>,
    claims: Vec<u8>,
}

fn parse(token: &str) -> Result<Parsed<'_>, TokenError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(TokenError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(claims), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(TokenError::Malformed);
    };
    let decode = |part: &str| {
        URL_SAFE_NO_PAD
            .decode(part)
            .map_err(|_| TokenError::Malformed)
    };
    let header: Header =
        serde_json::from_slice(&decode(header)?).map_err(|_| TokenError::BadJson("header"))?;
    let signing_input = token
        .get(..token.len() - signature.len() - 1)
        .ok_or(TokenError::Malformed)?;
    Ok(Parsed {
        header,
        signing_input,
        signature: decode(signature)?,
        claims: decode(claims)?,
    })
}

/// An EC P-256 verification key from a JWK (RFC 7518 §6.2.1).
pub fn verifying_key(jwk: &Jwk) -> Result<VerifyingKey, TokenError> {
    if jwk.kty != "EC"
        || jwk.crv.as_deref() != Some("P-256")
        || jwk.alg.as_deref().is_some_and(|alg| alg != "ES256")
        || jwk.use_.as_deref().is_some_and(|u| u != "sig")
    {
        return Err(TokenError::BadKey);
    }
    let coordinate = |c: Option<&String>| -> Result<[u8; 32], TokenError> {
        let bytes = URL_SAFE_NO_PAD
            .decode(c.ok_or(TokenError::BadKey)?)
            .map_err(|_| TokenError::BadKey)?;
        bytes.try_into().map_err(|_| TokenError::BadKey)
    };
    let (x, y) = (coordinate(jwk.x.as_ref())?, coordinate(jwk.y.as_ref())?);
    let point = p256::EncodedPoint::from_affine_coordinates(&x.into(), &y.into(), false);
    VerifyingKey::from_encoded_point(&point).map_err(|_| TokenError::BadKey)
}

/// What a token must satisfy besides its signature.
struct Expectations<'a> {
    /// Required `iss`.
    issuer: &'a str,
    /// Required member of `aud`.
    audience: &'a str,
    /// Required `username`, if any.
    username: Option<&'a str>,
    /// Clock skew tolerated on `exp` and `nbf`.
    leeway: Duration,
}

fn check_header(header: &Header) -> Result<&str, TokenError> {
    if header.alg != "ES256" {
        return Err(TokenError::UnsupportedAlgorithm(
            header.alg.chars().take(16).collect(),
        ));
    }
    header.kid.as_deref().ok_or(TokenError::MissingKeyId)
}

fn verify_parsed(
    parsed: &Parsed<'_>,
    key: &VerifyingKey,
    expect: &Expectations<'_>,
    now: SystemTime,
) -> Result<LoginIdClaims, TokenError> {
    // RFC 7518 §3.4: R || S, 32 bytes each.
    let signature =
        Signature::from_slice(&parsed.signature).map_err(|_| TokenError::BadSignature)?;
    key.verify(parsed.signing_input.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    let claims: LoginIdClaims =
        serde_json::from_slice(&parsed.claims).map_err(|_| TokenError::BadJson("claims"))?;
    if claims.iss.trim_end_matches('/') != expect.issuer.trim_end_matches('/') {
        return Err(TokenError::WrongIssuer);
    }
    if !claims.aud.contains(expect.audience) {
        return Err(TokenError::WrongAudience);
    }
    let now = i64::try_from(now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs())
        .unwrap_or(i64::MAX);
    let leeway = i64::try_from(expect.leeway.as_secs()).unwrap_or(i64::MAX);
    if claims.exp.saturating_add(leeway) <= now {
        return Err(TokenError::Expired);
    }
    if claims
        .nbf
        .is_some_and(|nbf| nbf.saturating_sub(leeway) > now)
    {
        return Err(TokenError::NotYetValid);
    }
    if expect.username.is_some_and(|user| user != claims.username) {
        return Err(TokenError::WrongUser);
    }
    Ok(claims)
}

/// Checks `token` against `key` exactly as [`TokenVerifier::verify`] does once it holds the
/// key the token's `kid` names (no JWKS, no clock: for fuzzing). Returns the `kid` and the
/// claims.
pub(crate) fn verify_with_key(
    token: &str,
    key: &VerifyingKey,
    issuer: &str,
    audience: &str,
    username: Option<&str>,
    leeway: Duration,
    now: SystemTime,
) -> Result<(String, LoginIdClaims), TokenError> {
    let parsed = parse(token)?;
    let kid = check_header(&parsed.header)?.to_owned();
    let expect = Expectations {
        issuer,
        audience,
        username,
        leeway,
    };
    Ok((kid, verify_parsed(&parsed, key, &expect, now)?))
}

#[derive(Default)]
struct JwksCache {
    keys: HashMap<String, VerifyingKey>,
    /// When `keys` were downloaded.
    fetched_at: Option<Instant>,
    /// When the last download was tried, whether it succeeded or not.
    attempted_at: Option<Instant>,
    /// Whether that last download failed.
    last_failed: bool,
    /// Downloads tried so far: tells a verification that waited for another one's download
    /// that it need not download again.
    attempts: u64,
}

impl JwksCache {
    fn replace(&mut self, set: &JwkSet, now: Instant) {
        // Keys that are not P-256 signing keys, or have no kid, cannot verify a LoginID token;
        // they are skipped rather than failing the whole set.
        self.keys = set
            .keys
            .iter()
            .filter_map(|jwk| Some((jwk.kid.clone()?, verifying_key(jwk).ok()?)))
            .collect();
        self.fetched_at = Some(now);
    }

    /// The key for `kid` if the set is younger than `max_age`.
    fn fresh(&self, kid: &str, config: &LoginIdConfig, now: Instant) -> Option<VerifyingKey> {
        self.younger_than(config.jwks_max_age, now)
            .then(|| self.keys.get(kid).copied())
            .flatten()
    }

    /// The key for `kid` while no download can replace the set: up to `jwks_stale_grace`
    /// past `max_age`.
    fn usable(&self, kid: &str, config: &LoginIdConfig, now: Instant) -> Option<VerifyingKey> {
        let limit = config.jwks_max_age.saturating_add(config.jwks_stale_grace);
        self.younger_than(limit, now)
            .then(|| self.keys.get(kid).copied())
            .flatten()
    }

    fn younger_than(&self, age: Duration, now: Instant) -> bool {
        self.fetched_at
            .is_some_and(|at| now.saturating_duration_since(at) < age)
    }

    /// Whether a download was tried less than `jwks_min_refresh_interval` ago.
    fn rate_limited(&self, config: &LoginIdConfig, now: Instant) -> bool {
        self.attempted_at
            .is_some_and(|at| now.saturating_duration_since(at) < config.jwks_min_refresh_interval)
    }

    /// The answer when no download is to be made now.
    fn without_download(
        &self,
        kid: &str,
        config: &LoginIdConfig,
        now: Instant,
    ) -> Result<VerifyingKey, Error> {
        if let Some(key) = self.usable(kid, config, now) {
            return Ok(key);
        }
        Err(Error::Token(if self.last_failed {
            TokenError::JwksUnavailable
        } else {
            TokenError::UnknownKeyId
        }))
    }
}

/// Verifies LoginID tokens locally: ES256 against the application's JWKS, which is cached and
/// downloaded again when a token names an unknown `kid` or when the set is older than
/// `jwks_max_age`.
///
/// Downloads, failed ones included, are at most one per `jwks_min_refresh_interval`, and one
/// at a time: concurrent verifications that need the set wait for the download under way
/// instead of starting their own, while verifications that the cached keys answer never wait
/// for a download. When a download fails, keys already known keep verifying for
/// `jwks_stale_grace` past `jwks_max_age`.
pub struct TokenVerifier {
    client: LoginIdClient,
    /// Never held across an await.
    cache: RwLock<JwksCache>,
    /// Held across a download, so that only one runs at a time.
    download: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for TokenVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenVerifier").finish_non_exhaustive()
    }
}

impl TokenVerifier {
    /// A verifier for the application `client` talks to.
    pub fn new(client: LoginIdClient) -> Self {
        Self {
            client,
            cache: RwLock::new(JwksCache::default()),
            download: tokio::sync::Mutex::new(()),
        }
    }

    /// Verifies `token`: signature, `iss` = base URL, `aud` ∋ app id, `exp`/`nbf` with the
    /// configured leeway, and `username` = `expected_username`.
    pub async fn verify(
        &self,
        token: &Token,
        expected_username: &str,
    ) -> Result<LoginIdClaims, Error> {
        let parsed = parse(token.expose())?;
        let kid = check_header(&parsed.header)?;
        let key = self.key_for(kid).await?;
        let config = self.client.config();
        let issuer = config.issuer();
        let expect = Expectations {
            issuer: &issuer,
            audience: &config.app_id,
            username: Some(expected_username),
            leeway: config.token_leeway,
        };
        Ok(verify_parsed(&parsed, &key, &expect, SystemTime::now())?)
    }

    fn read(&self) -> RwLockReadGuard<'_, JwksCache> {
        // The cache is consistent after every write (plain assignments), so a poisoned lock
        // still holds usable data.
        self.cache.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, JwksCache> {
        self.cache.write().unwrap_or_else(PoisonError::into_inner)
    }

    async fn key_for(&self, kid: &str) -> Result<VerifyingKey, Error> {
        let config = self.client.config();
        let seen = {
            let cache = self.read();
            if let Some(key) = cache.fresh(kid, config, Instant::now()) {
                return Ok(key);
            }
            cache.attempts
        };
        let _download = self.download.lock().await;
        {
            let cache = self.read();
            let now = Instant::now();
            // Another verification downloaded while this one waited: its result stands.
            if cache.attempts != seen || cache.rate_limited(config, now) {
                return cache.without_download(kid, config, now);
            }
        }
        let result = self.client.jwks().await;
        let now = Instant::now();
        let mut cache = self.write();
        cache.attempts = cache.attempts.wrapping_add(1);
        cache.attempted_at = Some(now);
        cache.last_failed = result.is_err();
        match result {
            Ok(set) => {
                cache.replace(&set, now);
                cache
                    .keys
                    .get(kid)
                    .copied()
                    .ok_or(Error::Token(TokenError::UnknownKeyId))
            }
            Err(error) => match cache.usable(kid, config, now) {
                Some(key) => {
                    tracing::warn!(%error, "JWKS download failed; using the cached keys");
                    Ok(key)
                }
                None => Err(error),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use p256::ecdsa::SigningKey;
    use p256::ecdsa::signature::Signer as _;

    use super::*;

    const NOW: u64 = 1_723_775_600;

    fn signing_key() -> SigningKey {
        SigningKey::from_slice(&[0x11; 32]).unwrap()
    }

    fn sign(header: &str, claims: &serde_json::Value, key: &SigningKey) -> String {
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    fn claims() -> serde_json::Value {
        // The shape of the reference's §5 example.
        serde_json::json!({
            "aud": "app-1",
            "iss": "https://app-1.api.loginid.io",
            "sub": "7d1b0b4e-0000-4000-8000-000000000001",
            "username": "alice@example.com",
            "credID": "0c5e0000-0000-4000-8000-000000000002",
            "scopes": ["passkey:read", "passkey:write", "auth:write"],
            "tokenType": "jwtAccess",
            "verify": "/fido2/v2/mgmt/token/verify",
            "iat": NOW - 100,
            "exp": NOW + 500
        })
    }

    const HEADER: &str = r#"{"alg":"ES256","typ":"JWT","kid":"k1"}"#;

    fn expect() -> Expectations<'static> {
        Expectations {
            issuer: "https://app-1.api.loginid.io/",
            audience: "app-1",
            username: Some("alice@example.com"),
            leeway: Duration::from_secs(30),
        }
    }

    fn now() -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(NOW)
    }

    /// What [`TokenVerifier::verify`] does once it has the key, at a fixed time.
    fn verify(token: &str) -> Result<LoginIdClaims, TokenError> {
        let parsed = parse(token)?;
        check_header(&parsed.header)?;
        verify_parsed(&parsed, signing_key().verifying_key(), &expect(), now())
    }

    #[test]
    fn accepts_a_good_token() {
        let claims = verify(&sign(HEADER, &claims(), &signing_key())).unwrap();
        assert_eq!(claims.username, "alice@example.com");
        assert_eq!(claims.aud, Audience::One("app-1".into()));
        assert_eq!(
            claims.cred_id.as_deref(),
            Some("0c5e0000-0000-4000-8000-000000000002")
        );
        assert_eq!(claims.scopes.len(), 3);
        assert_eq!(claims.exp, 1_723_776_100);
    }

    #[test]
    fn audience_may_be_an_array() {
        let mut c = claims();
        c["aud"] = serde_json::json!(["other", "app-1"]);
        assert!(verify(&sign(HEADER, &c, &signing_key())).is_ok());
        c["aud"] = serde_json::json!(["other"]);
        assert_eq!(
            verify(&sign(HEADER, &c, &signing_key())),
            Err(TokenError::WrongAudience)
        );
    }

    #[test]
    fn claim_failures() {
        let cases: [(&str, serde_json::Value, TokenError); 6] = [
            (
                "iss",
                "https://evil.example".into(),
                TokenError::WrongIssuer,
            ),
            ("aud", "app-2".into(), TokenError::WrongAudience),
            ("exp", (NOW - 31).into(), TokenError::Expired),
            ("nbf", (NOW + 31).into(), TokenError::NotYetValid),
            ("username", "bob@example.com".into(), TokenError::WrongUser),
            ("exp", "tomorrow".into(), TokenError::BadJson("claims")),
        ];
        for (claim, value, want) in cases {
            let mut c = claims();
            c[claim] = value;
            assert_eq!(
                verify(&sign(HEADER, &c, &signing_key())),
                Err(want),
                "{claim}"
            );
        }
        // Within the leeway.
        let mut c = claims();
        c["exp"] = (NOW - 29).into();
        assert!(verify(&sign(HEADER, &c, &signing_key())).is_ok());
    }

    #[test]
    fn header_and_signature_failures() {
        let other = SigningKey::from_slice(&[0x22; 32]).unwrap();
        assert_eq!(
            verify(&sign(HEADER, &claims(), &other)),
            Err(TokenError::BadSignature)
        );
        assert_eq!(
            verify(&sign(
                r#"{"alg":"HS256","kid":"k1"}"#,
                &claims(),
                &signing_key()
            )),
            Err(TokenError::UnsupportedAlgorithm("HS256".into()))
        );
        assert_eq!(
            verify(&sign(
                r#"{"alg":"none","kid":"k1"}"#,
                &claims(),
                &signing_key()
            )),
            Err(TokenError::UnsupportedAlgorithm("none".into()))
        );
        assert_eq!(
            verify(&sign(r#"{"alg":"ES256"}"#, &claims(), &signing_key())),
            Err(TokenError::MissingKeyId)
        );
        let good = sign(HEADER, &claims(), &signing_key());
        let (input, _) = good.rsplit_once('.').unwrap();
        let der_like = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0x30; 70]));
        assert_eq!(verify(&der_like), Err(TokenError::BadSignature));
        // Payload swapped after signing.
        let mut tampered = claims();
        tampered["username"] = "mallory@example.com".into();
        let forged = sign(HEADER, &tampered, &signing_key());
        let (_, sig) = good.rsplit_once('.').unwrap();
        let (forged_input, _) = forged.rsplit_once('.').unwrap();
        assert_eq!(
            verify(&format!("{forged_input}.{sig}")),
            Err(TokenError::BadSignature)
        );
    }

    #[test]
    fn malformed_tokens() {
        for token in [
            "",
            "a.b",
            "a.b.c.d",
            "!!.e30.AA",
            "e30.e30.AA=",
            &"A".repeat(20_000),
        ] {
            assert!(
                matches!(
                    verify(token),
                    Err(TokenError::Malformed | TokenError::BadJson(_))
                ),
                "{token:.20}"
            );
        }
    }

    #[test]
    fn jwk_to_key() {
        let key = signing_key();
        let point = key.verifying_key().to_encoded_point(false);
        let jwk = Jwk {
            kty: "EC".into(),
            crv: Some("P-256".into()),
            alg: Some("ES256".into()),
            use_: Some("sig".into()),
            key_ops: Some(vec!["verify".into()]),
            kid: Some("k1".into()),
            x: Some(URL_SAFE_NO_PAD.encode(point.x().unwrap())),
            y: Some(URL_SAFE_NO_PAD.encode(point.y().unwrap())),
        };
        assert_eq!(&verifying_key(&jwk).unwrap(), key.verifying_key());
        let mut rsa = jwk.clone();
        rsa.kty = "RSA".into();
        assert_eq!(verifying_key(&rsa), Err(TokenError::BadKey));
        let mut off_curve = jwk.clone();
        off_curve.y = Some(URL_SAFE_NO_PAD.encode([0x01; 32]));
        assert_eq!(verifying_key(&off_curve), Err(TokenError::BadKey));
        let mut short = jwk;
        short.x = Some(URL_SAFE_NO_PAD.encode([0x01; 31]));
        assert_eq!(verifying_key(&short), Err(TokenError::BadKey));
    }
}
