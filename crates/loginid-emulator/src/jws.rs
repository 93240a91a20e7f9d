//! ES256 JWTs (RFC 7515 compact form, RFC 7518 §3.4 signatures) issued by the emulator, and
//! its JWKS.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use p256::ecdsa::signature::{Signer as _, Verifier as _};
use p256::ecdsa::{Signature, SigningKey};
use rand::RngCore as _;
use rand::rngs::OsRng;
use serde_json::{Value, json};

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum JwsError {
    /// Not a compact ES256 JWS of this emulator.
    #[error("malformed token")]
    Malformed,
    /// No key with the token's kid.
    #[error("unknown key id")]
    UnknownKey,
    /// Signature does not verify.
    #[error("bad signature")]
    BadSignature,
}

/// The emulator's signing keys; the last one signs, all of them verify and are published.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<(String, SigningKey)>,
}

impl Default for KeyRing {
    fn default() -> Self {
        Self::new()
    }
}

impl KeyRing {
    /// A key ring with one fresh key.
    pub fn new() -> Self {
        let mut ring = Self { keys: Vec::new() };
        ring.rotate();
        ring
    }

    /// Adds a fresh key that signs from now on; older keys keep verifying.
    pub fn rotate(&mut self) -> String {
        let mut id = [0_u8; 9];
        OsRng.fill_bytes(&mut id);
        let kid = format!("emu-{}", URL_SAFE_NO_PAD.encode(id));
        self.keys
            .push((kid.clone(), SigningKey::random(&mut OsRng)));
        kid
    }

    /// Signs `claims` with the current key.
    pub fn sign(&self, claims: &Value) -> String {
        let Some((kid, key)) = self.keys.last() else {
            // The ring is created with a key and keys are never removed.
            return String::new();
        };
        let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
        let input = format!(
            "{}.{}",
            URL_SAFE_NO_PAD.encode(header.to_string()),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        );
        let signature: Signature = key.sign(input.as_bytes());
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(signature.to_bytes()))
    }

    /// Verifies a token signed by one of the keys and returns its claims (unchecked).
    pub fn verify(&self, token: &str) -> Result<Value, JwsError> {
        let mut parts = token.split('.');
        let (Some(header), Some(claims), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(JwsError::Malformed);
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).map_err(|_| JwsError::Malformed);
        let header: Value =
            serde_json::from_slice(&decode(header)?).map_err(|_| JwsError::Malformed)?;
        if header["alg"] != "ES256" {
            return Err(JwsError::Malformed);
        }
        let kid = header["kid"].as_str().ok_or(JwsError::Malformed)?;
        let (_, key) = self
            .keys
            .iter()
            .find(|(k, _)| k == kid)
            .ok_or(JwsError::UnknownKey)?;
        let signature =
            Signature::from_slice(&decode(signature)?).map_err(|_| JwsError::BadSignature)?;
        let signed = token
            .rsplit_once('.')
            .map(|(input, _)| input)
            .ok_or(JwsError::Malformed)?;
        key.verifying_key()
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| JwsError::BadSignature)?;
        serde_json::from_slice(&decode(claims)?).map_err(|_| JwsError::Malformed)
    }

    /// The JWK set (RFC 7517 §5) of all keys, as LoginID publishes it (reference §4.5).
    pub fn jwks(&self) -> Value {
        let keys: Vec<Value> = self
            .keys
            .iter()
            .map(|(kid, key)| {
                let point = key.verifying_key().to_encoded_point(false);
                json!({
                    "kty": "EC",
                    "crv": "P-256",
                    "alg": "ES256",
                    "use": "sig",
                    "key_ops": ["verify"],
                    "kid": kid,
                    "x": point.x().map(|x| URL_SAFE_NO_PAD.encode(x)),
                    "y": point.y().map(|y| URL_SAFE_NO_PAD.encode(y)),
                })
            })
            .collect();
        json!({ "keys": keys })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_rotate() {
        let mut ring = KeyRing::new();
        let old = ring.sign(&json!({"username": "alice"}));
        ring.rotate();
        let new = ring.sign(&json!({"username": "bob"}));
        assert_eq!(ring.verify(&old).unwrap()["username"], "alice");
        assert_eq!(ring.verify(&new).unwrap()["username"], "bob");
        assert_eq!(ring.jwks()["keys"].as_array().unwrap().len(), 2);
        let other = KeyRing::new();
        assert_eq!(other.verify(&new), Err(JwsError::UnknownKey));
        let (input, _) = new.rsplit_once('.').unwrap();
        let forged = format!("{input}.{}", URL_SAFE_NO_PAD.encode([0x01; 64]));
        assert_eq!(ring.verify(&forged), Err(JwsError::BadSignature));
        assert_eq!(ring.verify("a.b"), Err(JwsError::Malformed));
    }
}
