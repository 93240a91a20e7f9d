#![allow(clippy::unwrap_used, clippy::expect_used)]
//! The PIN/UV auth protocols against the third-party known-answer tests among the recorded
//! vectors (CTAP 2.2 §6.5.6, §6.5.7).
//!
//! The vector files are third-party data and stay out of the repository: this test reads
//! them at run time from the directory named by `PASSKEYD_VECTORS`. Without it the test is
//! skipped, except under `CI=true`, where it fails.
//!
//! Every vector whose `kind` names a PIN/UV auth protocol is checked, and every member of its
//! `fields` must be either an input or a value this test compares, so a vector that gains a
//! field fails here until the field is checked too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ctap::cose::{self, CoseKey};
use ctap::pin_uv::{self, Pin, PinUvAuthProtocol, SharedSecret};
use serde_json::Value;
use sha2::{Digest, Sha256};

const FILES: &[&str] = &["python-fido2.json", "webauthn-rs.json"];

fn vectors_dir() -> Option<PathBuf> {
    match std::env::var_os("PASSKEYD_VECTORS") {
        Some(dir) => Some(PathBuf::from(dir)),
        None if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("PASSKEYD_VECTORS must name the recorded vectors directory when CI=true")
        }
        None => None,
    }
}

/// A vector's `fields`, taken out one by one so that leftovers can be reported.
struct Fields {
    name: String,
    values: BTreeMap<String, String>,
}

impl Fields {
    fn new(name: &str, fields: &Value) -> Self {
        let values = fields
            .as_object()
            .unwrap_or_else(|| panic!("{name}: `fields` is not an object"))
            .iter()
            .map(|(k, v)| {
                let v = v
                    .as_str()
                    .unwrap_or_else(|| panic!("{name}: field {k} is not a string"));
                (k.clone(), v.to_owned())
            })
            .collect();
        Self {
            name: name.to_owned(),
            values,
        }
    }

    fn text(&mut self, key: &str) -> Option<String> {
        self.values.remove(key)
    }

    fn bytes(&mut self, key: &str) -> Option<Vec<u8>> {
        let name = &self.name;
        self.values
            .remove(key)
            .map(|v| hex::decode(&v).unwrap_or_else(|e| panic!("{name}: field {key}: {e}")))
    }

    fn required(&mut self, key: &str) -> Vec<u8> {
        let name = self.name.clone();
        self.bytes(key)
            .unwrap_or_else(|| panic!("{name}: missing field {key}"))
    }

    fn pin(&mut self, key: &str) -> Option<Pin> {
        self.text(key).map(|p| Pin::new(&p).unwrap())
    }
}

fn padded(pin: &Pin) -> Vec<u8> {
    let mut out = pin.as_bytes().to_vec();
    out.resize(64, 0);
    out
}

/// Checks an encryption known answer: the expected ciphertext decrypts to `plaintext`, and
/// for protocol one (zero IV, so deterministic) our own encryption is byte for byte the same.
fn check_encryption(name: &str, what: &str, secret: &SharedSecret, ours: &[u8], expected: &[u8]) {
    assert_eq!(ours.len(), expected.len(), "{name}: {what} length");
    assert_eq!(
        *secret.decrypt(expected).unwrap(),
        *secret.decrypt(ours).unwrap(),
        "{name}: {what} plaintext"
    );
    if secret.protocol() == PinUvAuthProtocol::One {
        assert_eq!(hex::encode(ours), hex::encode(expected), "{name}: {what}");
    }
}

/// Runs one known-answer vector; returns the names of the values compared.
fn check_vector(protocol: PinUvAuthProtocol, mut fields: Fields) -> Vec<&'static str> {
    let name = fields.name.clone();
    let name = name.as_str();
    let mut compared = Vec::new();
    let mut rng = rand::thread_rng();

    let scalar = fields.required("platform_private_key_scalar");
    let authenticator = CoseKey::Ec2 {
        alg: Some(cose::alg::ECDH_ES_HKDF_256),
        crv: cose::curve::P256,
        x: fields.required("authenticator_pub_x"),
        y: fields.required("authenticator_pub_y"),
    };
    let platform_key = p256::SecretKey::from_slice(&scalar).unwrap();
    let (platform, secret) =
        pin_uv::encapsulate_with_platform_key(protocol, &authenticator, &platform_key).unwrap();

    if let (Some(x), Some(y)) = (
        fields.bytes("platform_pub_x"),
        fields.bytes("platform_pub_y"),
    ) {
        let CoseKey::Ec2 {
            x: our_x, y: our_y, ..
        } = &platform
        else {
            panic!("EC2 expected")
        };
        assert_eq!(hex::encode(our_x), hex::encode(x), "{name}: platform x");
        assert_eq!(hex::encode(our_y), hex::encode(y), "{name}: platform y");
        compared.push("platform key");
    }

    let expected_secret = match protocol {
        PinUvAuthProtocol::One => fields.bytes("shared_secret"),
        PinUvAuthProtocol::Two => fields.bytes("shared_secret_hmac_key_then_aes_key"),
    };
    if let Some(expected) = expected_secret {
        assert_eq!(
            hex::encode(&*secret.expose_secret()),
            hex::encode(expected),
            "{name}"
        );
        compared.push("shared secret");
    }

    if let (Some(encrypted), Some(token)) =
        (fields.bytes("pin_token_enc"), fields.bytes("pin_token"))
    {
        let ours = secret.decrypt_pin_uv_auth_token(&encrypted).unwrap();
        assert_eq!(
            hex::encode(ours.expose_secret()),
            hex::encode(token),
            "{name}: token"
        );
        compared.push("pinUvAuthToken decryption");
    }

    let pin = fields.pin("pin");
    let new_pin = fields.pin("new_pin");

    let pin_hash_enc = fields.bytes("pin_hash_enc_for_1234");
    if let Some(expected) = &pin_hash_enc {
        let pin = pin.as_ref().expect("pin_hash_enc_for_1234 needs `pin`");
        assert_eq!(
            pin.as_bytes(),
            b"1234",
            "{name}: the field name promises PIN 1234"
        );
        let ours = secret.pin_hash_enc(pin, &mut rng).unwrap();
        check_encryption(name, "pinHashEnc", &secret, &ours, expected);
        assert_eq!(
            *secret.decrypt(expected).unwrap(),
            Sha256::digest(pin.as_bytes())[..16],
            "{name}: pinHashEnc is LEFT(SHA-256(PIN), 16)"
        );
        compared.push("pinHashEnc");
    }

    if let Some(expected) = fields.bytes("set_pin_1234_new_pin_enc") {
        let pin = pin.as_ref().expect("set_pin_1234_new_pin_enc needs `pin`");
        let set = secret.set_pin(pin, &mut rng).unwrap();
        check_encryption(
            name,
            "setPIN newPinEnc",
            &secret,
            &set.new_pin_enc,
            &expected,
        );
        assert_eq!(
            *secret.decrypt(&expected).unwrap(),
            padded(pin),
            "{name}: padded PIN"
        );
        compared.push("setPIN newPinEnc");
        if let Some(param) = fields.bytes("set_pin_1234_pin_uv_param") {
            assert_eq!(
                hex::encode(secret.authenticate(&expected)),
                hex::encode(&param),
                "{name}"
            );
            assert!(secret.verify(&expected, &param), "{name}: setPIN verify");
            if protocol == PinUvAuthProtocol::One {
                assert_eq!(
                    set.pin_uv_auth_param, param,
                    "{name}: setPIN pinUvAuthParam"
                );
            }
            compared.push("setPIN pinUvAuthParam");
        }
    }

    if let Some(expected) = fields.bytes("change_pin_1234_to_4321_new_pin_enc") {
        let current = pin.as_ref().expect("changePIN needs `pin`");
        let new = new_pin.as_ref().expect("changePIN needs `new_pin`");
        let change = secret.change_pin(current, new, &mut rng).unwrap();
        check_encryption(
            name,
            "changePIN newPinEnc",
            &secret,
            &change.new_pin_enc,
            &expected,
        );
        assert_eq!(
            *secret.decrypt(&expected).unwrap(),
            padded(new),
            "{name}: padded new PIN"
        );
        compared.push("changePIN newPinEnc");
        if let Some(param) = fields.bytes("change_pin_pin_uv_param") {
            let pin_hash_enc = pin_hash_enc
                .as_ref()
                .expect("changePIN param needs pinHashEnc");
            let message = [expected.as_slice(), pin_hash_enc].concat();
            assert_eq!(
                hex::encode(secret.authenticate(&message)),
                hex::encode(&param),
                "{name}"
            );
            if protocol == PinUvAuthProtocol::One {
                assert_eq!(
                    change.pin_uv_auth_param, param,
                    "{name}: changePIN pinUvAuthParam"
                );
            }
            compared.push("changePIN pinUvAuthParam");
        }
    }

    if let (Some(message), Some(expected)) =
        (fields.bytes("message"), fields.bytes("authenticate_output"))
    {
        assert_eq!(
            hex::encode(secret.authenticate(&message)),
            hex::encode(&expected),
            "{name}"
        );
        assert!(secret.verify(&message, &expected), "{name}: verify");
        compared.push("authenticate");
    }

    assert!(
        fields.values.is_empty(),
        "{name}: fields this test does not check: {:?}",
        fields.values.keys().collect::<Vec<_>>()
    );
    compared
}

#[test]
fn pin_uv_known_answers_from_recorded_vectors() {
    let Some(dir) = vectors_dir() else {
        eprintln!("skipping PIN/UV vector test: PASSKEYD_VECTORS is not set");
        return;
    };
    let mut checked = Vec::new();
    for file in FILES {
        let path = Path::new(&dir).join(file);
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
        let json: Value = serde_json::from_str(&text).unwrap();
        for vector in json["vectors"].as_array().expect("`vectors` array") {
            let kind = vector["kind"].as_str().unwrap_or_default();
            if !kind.contains("PIN/UV auth protocol") {
                continue;
            }
            let name = vector["name"].as_str().expect("vector name");
            let protocol = if kind.contains("protocol 1") {
                PinUvAuthProtocol::One
            } else if kind.contains("protocol 2") {
                PinUvAuthProtocol::Two
            } else {
                panic!("{name}: cannot tell the protocol from kind {kind:?}")
            };
            let compared = check_vector(protocol, Fields::new(name, &vector["fields"]));
            assert!(!compared.is_empty(), "{name}: nothing to compare");
            eprintln!("{file} {name}: {}", compared.join(", "));
            checked.push(name.to_owned());
        }
    }
    // One vector per protocol at least: python-fido2's for protocol one, webauthn-rs's for two.
    assert!(
        checked.len() >= 2,
        "expected PIN/UV vectors in {FILES:?}, found {checked:?}"
    );
}
