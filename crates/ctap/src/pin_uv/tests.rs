//! Known-answer and error-path tests for the PIN/UV auth protocols.
//!
//! The fixed expected values were computed independently with Python's `cryptography`
//! package from the scalars below (ECDH, SHA-256, HKDF, AES-256-CBC and HMAC-SHA-256 from
//! that library and `hashlib`/`hmac`). Each known-answer test also re-derives its result
//! with direct calls of the RustCrypto primitives, bypassing this module, so a mistake in
//! how the module composes them shows up twice.

use aes::cipher::{BlockDecrypt, KeyInit as _};
use rand_core::{CryptoRng, RngCore};

use super::*;
use crate::cbor;

/// Platform private scalar of the known-answer tests.
const PLATFORM_SCALAR: &str = "6a1e4b1f8c2d3e4f5a6b7c8d9eafb0c1d2e3f405162738495a6b7c8d9eafb0c1";
/// Authenticator private scalar of the known-answer tests.
const AUTHENTICATOR_SCALAR: &str =
    "3c5d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a1b0c9d8e7f6a5b4c3d";

const PLATFORM_X: &str = "5db1cc34f0bbc4ee4d29c7fe0a41f2b75dede7b85891fd3166119988489d23cd";
const PLATFORM_Y: &str = "1496bd0ea9f8723a5966d206d432fb9c3e24c76bc3e4bcdcaceafac479c5412b";
const AUTHENTICATOR_X: &str = "f6d2bb252e58bbeef5d58bbc782e75b2e4cfc702ad6ad7d1625117bb267eeede";
const AUTHENTICATOR_Y: &str = "d706a636904277d8acc1c3164736a9f023b64b1caa4dcbd63297023c0520ecd2";
/// The ECDH x-coordinate.
const Z: &str = "d1a3c568f54fcb6268c8fe225c1c8546b309886fd86a5dc2152f417950c66f5b";
const SECRET_V1: &str = "b63cd831aa421e4510f74628c02e80f5e518707470e3b2ed8e54a69d8f2759fa";
const SECRET_V2: &str = "8187a096dd72d52bb4052e437d2d482d3044bb357460b6f2b6c55fcf3e41a447\
                         6de03480e8cabc2aec84912ba34371f55a2d35d6e375eba9615b01aa37327b8a";

fn unhex(s: &str) -> Vec<u8> {
    let compact: String = s.split_whitespace().collect();
    hex::decode(compact).unwrap()
}

fn secret_key(hex_scalar: &str) -> p256::SecretKey {
    p256::SecretKey::from_slice(&unhex(hex_scalar)).unwrap()
}

fn authenticator_cose_key() -> CoseKey {
    CoseKey::from_p256(
        &secret_key(AUTHENTICATOR_SCALAR).public_key(),
        cose::alg::ECDH_ES_HKDF_256,
    )
}

fn kat_secret(protocol: PinUvAuthProtocol) -> (CoseKey, SharedSecret) {
    encapsulate_with_platform_key(
        protocol,
        &authenticator_cose_key(),
        &secret_key(PLATFORM_SCALAR),
    )
    .unwrap()
}

/// Hands out 0x00, 0x01, 0x02, ... so that protocol two IVs are known in advance.
struct CountingRng(u8);

impl RngCore for CountingRng {
    fn next_u32(&mut self) -> u32 {
        rand_core::impls::next_u32_via_fill(self)
    }
    fn next_u64(&mut self) -> u64 {
        rand_core::impls::next_u64_via_fill(self)
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        for byte in dest {
            *byte = self.0;
            self.0 = self.0.wrapping_add(1);
        }
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for CountingRng {}

/// AES-256-CBC decryption written out over the raw block cipher, independent of `cbc`.
fn reference_cbc_decrypt(key: &[u8], iv: &[u8], ciphertext: &[u8]) -> Vec<u8> {
    let cipher = Aes256::new_from_slice(key).unwrap();
    let mut previous = iv.to_vec();
    let mut out = Vec::new();
    for chunk in ciphertext.chunks(16) {
        let mut block = aes::Block::clone_from_slice(chunk);
        cipher.decrypt_block(&mut block);
        out.extend(block.iter().zip(&previous).map(|(b, p)| b ^ p));
        previous = chunk.to_vec();
    }
    out
}

/// HMAC-SHA-256 straight from the `hmac` crate.
fn reference_hmac(key: &[u8], message: &[u8]) -> Vec<u8> {
    let mut mac = <HmacSha256 as Mac>::new_from_slice(key).unwrap();
    mac.update(message);
    mac.finalize().into_bytes().to_vec()
}

fn padded(pin: &str) -> Vec<u8> {
    let mut out = pin.as_bytes().to_vec();
    out.resize(64, 0);
    out
}

#[test]
fn protocol_numbers() {
    assert_eq!(PinUvAuthProtocol::try_from(1), Ok(PinUvAuthProtocol::One));
    assert_eq!(PinUvAuthProtocol::try_from(2), Ok(PinUvAuthProtocol::Two));
    assert_eq!(
        PinUvAuthProtocol::try_from(0),
        Err(Error::UnsupportedProtocol(0))
    );
    assert_eq!(
        PinUvAuthProtocol::try_from(3),
        Err(Error::UnsupportedProtocol(3))
    );
    assert_eq!(u64::from(PinUvAuthProtocol::Two), 2);
    assert_eq!(PinUvAuthProtocol::One.number(), 1);
    assert_eq!(PinUvAuthProtocol::One.pin_uv_auth_param_len(), 16);
    assert_eq!(PinUvAuthProtocol::Two.pin_uv_auth_param_len(), 32);
    assert_eq!(PinUvAuthProtocol::Two.to_string(), "2");
}

#[test]
fn platform_key_is_the_ctap_cose_key() {
    let (platform, _) = kat_secret(PinUvAuthProtocol::Two);
    let bytes = cbor::to_canonical_vec(&platform.to_value()).unwrap();
    // {1: 2, 3: -25, -1: 1, -2: x, -3: y} (CTAP 2.2 §6.5.6 getPublicKey).
    let expected = format!("a5010203381820012158 20{PLATFORM_X}2258 20{PLATFORM_Y}");
    assert_eq!(hex::encode(&bytes), expected.replace(' ', ""));
    // The authenticator's public key matches the independent computation too.
    let CoseKey::Ec2 { x, y, .. } = authenticator_cose_key() else {
        panic!("EC2 expected")
    };
    assert_eq!(hex::encode(x), AUTHENTICATOR_X);
    assert_eq!(hex::encode(y), AUTHENTICATOR_Y);
}

#[test]
fn protocol_one_shared_secret_is_sha256_of_z() {
    let (platform, secret) = kat_secret(PinUvAuthProtocol::One);
    assert_eq!(secret.protocol(), PinUvAuthProtocol::One);
    assert_eq!(hex::encode(&*secret.expose_secret()), SECRET_V1);
    // The authenticator's side of the ECDH arrives at the same Z.
    let z = p256::ecdh::diffie_hellman(
        secret_key(AUTHENTICATOR_SCALAR).to_nonzero_scalar(),
        platform.to_p256().unwrap().as_affine(),
    );
    assert_eq!(hex::encode(z.raw_secret_bytes()), Z);
    assert_eq!(Sha256::digest(unhex(Z)).to_vec(), unhex(SECRET_V1));
}

#[test]
fn protocol_two_shared_secret_is_hkdf_hmac_key_then_aes_key() {
    let (_, secret) = kat_secret(PinUvAuthProtocol::Two);
    assert_eq!(
        hex::encode(&*secret.expose_secret()),
        SECRET_V2.replace(' ', "")
    );
    let hkdf = Hkdf::<Sha256>::new(Some(&[0; 32]), &unhex(Z));
    let mut expected = [0; 64];
    hkdf.expand(b"CTAP2 HMAC key", &mut expected[..32]).unwrap();
    hkdf.expand(b"CTAP2 AES key", &mut expected[32..]).unwrap();
    assert_eq!(&*secret.expose_secret(), &expected[..]);
}

#[test]
fn protocol_one_set_pin_and_change_pin() {
    let (_, secret) = kat_secret(PinUvAuthProtocol::One);
    let rng = &mut CountingRng(0);
    let set = secret.set_pin(&Pin::new("1234").unwrap(), rng).unwrap();
    assert_eq!(
        hex::encode(&set.new_pin_enc),
        "c12640a69bd546621bb51128488a34044ce3753d180f44baaa95f67ec53693d8\
         3d5057c689dd332fb0c8f3875b7f4c9966db0b727025a2838658688254c263f7"
    );
    assert_eq!(
        hex::encode(&set.pin_uv_auth_param),
        "28eae630479a6f9777b219bf3c07843e"
    );
    // Protocol one takes no randomness: the RNG was not touched.
    assert_eq!(rng.0, 0);
    let key = unhex(SECRET_V1);
    assert_eq!(
        reference_cbc_decrypt(&key, &[0; 16], &set.new_pin_enc),
        padded("1234")
    );
    assert_eq!(
        set.pin_uv_auth_param,
        reference_hmac(&key, &set.new_pin_enc)[..16]
    );

    let change = secret
        .change_pin(&Pin::new("1234").unwrap(), &Pin::new("56789").unwrap(), rng)
        .unwrap();
    assert_eq!(
        hex::encode(&change.new_pin_enc),
        "656b1edf15e0b74469eb40c53aaf73696c6feb24d9771cc8f7830bc0e702e20a\
         95739703e7c976b6604fb41deba6d27ba304f618db1de67525dfa678241a7044"
    );
    assert_eq!(
        hex::encode(&change.pin_hash_enc),
        "b67e40015913e681153fd09f361f0ed5"
    );
    assert_eq!(
        hex::encode(&change.pin_uv_auth_param),
        "7b6934cbd2871f4a6e3c7502c5924e08"
    );
    assert_eq!(
        reference_cbc_decrypt(&key, &[0; 16], &change.pin_hash_enc),
        Sha256::digest(b"1234")[..16]
    );
    let message = [
        change.new_pin_enc.as_slice(),
        change.pin_hash_enc.as_slice(),
    ]
    .concat();
    assert_eq!(
        change.pin_uv_auth_param,
        reference_hmac(&key, &message)[..16]
    );
    assert!(secret.verify(&message, &change.pin_uv_auth_param));
}

#[test]
fn protocol_two_set_pin_and_change_pin() {
    let (_, secret) = kat_secret(PinUvAuthProtocol::Two);
    let set = secret
        .set_pin(&Pin::new("1234").unwrap(), &mut CountingRng(0))
        .unwrap();
    assert_eq!(
        hex::encode(&set.new_pin_enc),
        "000102030405060708090a0b0c0d0e0f\
         297e32590e4f3a7056b14311e0d33b8a4bdeb952eebdade9d22d7e82345bb968\
         7b90bb0e5cb2a9e6ce0134576d78c8c1711e4b521cf08adf074413da73fd7186"
    );
    assert_eq!(
        hex::encode(&set.pin_uv_auth_param),
        "57df2a8e5ea350471cc4b102ece990fb7369fbb6caedc0bf0130491a2d6cbe38"
    );
    let keys = unhex(SECRET_V2);
    let (hmac_key, aes_key) = keys.split_at(32);
    let (iv, body) = set.new_pin_enc.split_at(16);
    assert_eq!(reference_cbc_decrypt(aes_key, iv, body), padded("1234"));
    assert_eq!(
        set.pin_uv_auth_param,
        reference_hmac(hmac_key, &set.new_pin_enc)
    );

    let change = secret
        .change_pin(
            &Pin::new("1234").unwrap(),
            &Pin::new("56789").unwrap(),
            &mut CountingRng(0),
        )
        .unwrap();
    assert_eq!(
        hex::encode(&change.new_pin_enc),
        "000102030405060708090a0b0c0d0e0f\
         054b70d43c9ca804721665c800990de20df5872523f2f58f764a20b8a4c2bf04\
         95b96342f69edc57b2d6fb0ccb31254dcfe87408edfeffe52edb3163bdc05cfb"
    );
    assert_eq!(
        hex::encode(&change.pin_hash_enc),
        "101112131415161718191a1b1c1d1e1f0f28009a872f81436533a47e8f1affc9"
    );
    assert_eq!(
        hex::encode(&change.pin_uv_auth_param),
        "1b630f819ddd3d25598bab6c126a010673fd95dc1fe8976e343d7641045ae07f"
    );
    let message = [
        change.new_pin_enc.as_slice(),
        change.pin_hash_enc.as_slice(),
    ]
    .concat();
    assert!(secret.verify(&message, &change.pin_uv_auth_param));
    assert!(!secret.verify(&message[1..], &change.pin_uv_auth_param));
    assert!(!secret.verify(&message, &change.pin_uv_auth_param[..16]));
}

#[test]
fn pin_hash_enc_alone_matches_change_pin() {
    let (_, secret) = kat_secret(PinUvAuthProtocol::Two);
    let pin_hash_enc = secret
        .pin_hash_enc(&Pin::new("1234").unwrap(), &mut CountingRng(0x10))
        .unwrap();
    assert_eq!(
        hex::encode(pin_hash_enc),
        "101112131415161718191a1b1c1d1e1f0f28009a872f81436533a47e8f1affc9"
    );
}

#[test]
fn decrypts_tokens_of_every_allowed_length() {
    let (_, v1) = kat_secret(PinUvAuthProtocol::One);
    let token16 = v1
        .decrypt_pin_uv_auth_token(&unhex("f575813d7ed9453b002e888058e2f5c0"))
        .unwrap();
    assert_eq!(token16.expose_secret(), (0x40..0x50).collect::<Vec<u8>>());
    let token32 = v1
        .decrypt_pin_uv_auth_token(&unhex(
            "1f6cb5b158c3954cbc4787b4dc395d92c53492891a8a7bb1a2a1851c4ca7a32d",
        ))
        .unwrap();
    assert_eq!(token32.expose_secret(), (0xa0..0xc0).collect::<Vec<u8>>());
    assert_eq!(token32.protocol(), PinUvAuthProtocol::One);

    let (_, v2) = kat_secret(PinUvAuthProtocol::Two);
    let token = v2
        .decrypt_pin_uv_auth_token(&unhex(
            "5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a5a\
             4fbabd29599eb3eed1aef03bc7b3ca967d314ca8ca95396601f7b803758c077e",
        ))
        .unwrap();
    assert_eq!(token.expose_secret(), (0xa0..0xc0).collect::<Vec<u8>>());
    assert_eq!(token.protocol(), PinUvAuthProtocol::Two);
}

#[test]
fn pin_uv_auth_param_over_client_data_hash() {
    // SHA-256 of `{"type":"webauthn.create"}`.
    let client_data_hash =
        unhex("d5d16f5b6496d8f4dcebe7cd74a91361ebd613f32d0f83370beff944065ea35c");
    let token16: Vec<u8> = (0x40..0x50).collect();
    let token32: Vec<u8> = (0xa0..0xc0).collect();
    let one = PinUvAuthProtocol::One;
    let two = PinUvAuthProtocol::Two;
    assert_eq!(
        hex::encode(one.authenticate(&token16, &client_data_hash)),
        "2cf876f003305d31adb67278ee6d1b29"
    );
    // Protocol one truncates to 16 bytes even with a 32-byte token.
    assert_eq!(
        hex::encode(one.authenticate(&token32, &client_data_hash)),
        "c267a2484fc909e9f0caba1f98b8ac0f"
    );
    let full = "c267a2484fc909e9f0caba1f98b8ac0f5d6044974a75ee52fadf8359b7d26948";
    let token = PinUvAuthToken::new(two, Zeroizing::new(token32.clone())).unwrap();
    assert_eq!(hex::encode(token.authenticate(&client_data_hash)), full);
    assert_eq!(
        hex::encode(reference_hmac(&token32, &client_data_hash)),
        full
    );
    assert!(two.verify(&token32, &client_data_hash, &unhex(full)));
    assert!(!two.verify(&token32, &client_data_hash, &[0; 32]));
}

#[test]
fn protocol_two_authenticate_uses_only_the_hmac_half() {
    let (_, secret) = kat_secret(PinUvAuthProtocol::Two);
    let keys = unhex(SECRET_V2);
    let message = b"some message";
    assert_eq!(
        secret.authenticate(message),
        reference_hmac(&keys[..32], message)
    );
    // "If key is longer than 32 bytes, discard the excess."
    assert_eq!(
        PinUvAuthProtocol::Two.authenticate(&keys, message),
        secret.authenticate(message)
    );
}

#[test]
fn random_encapsulations_agree_with_the_authenticator() {
    let mut rng = rand::thread_rng();
    let authenticator = p256::SecretKey::random(&mut rng);
    let authenticator_cose =
        CoseKey::from_p256(&authenticator.public_key(), cose::alg::ECDH_ES_HKDF_256);
    for protocol in [PinUvAuthProtocol::One, PinUvAuthProtocol::Two] {
        let (first_key, first) = encapsulate(protocol, &authenticator_cose, &mut rng).unwrap();
        let (second_key, _) = encapsulate(protocol, &authenticator_cose, &mut rng).unwrap();
        assert_ne!(
            first_key, second_key,
            "every encapsulation uses a fresh key pair"
        );
        assert_eq!(first_key.alg(), Some(cose::alg::ECDH_ES_HKDF_256));
        // The authenticator derives the same secret from the platform's COSE key.
        let z = p256::ecdh::diffie_hellman(
            authenticator.to_nonzero_scalar(),
            first_key.to_p256().unwrap().as_affine(),
        );
        let theirs = SharedSecret::derive(protocol, z.raw_secret_bytes());
        assert_eq!(*theirs.expose_secret(), *first.expose_secret());
        // A round trip through encrypt and decrypt.
        let plaintext: Vec<u8> = (0..48).collect();
        let ciphertext = first.encrypt(&plaintext, &mut rng).unwrap();
        assert_eq!(*theirs.decrypt(&ciphertext).unwrap(), plaintext);
    }
}

#[test]
fn protocol_two_prepends_the_iv_drawn_from_the_rng() {
    let (_, secret) = kat_secret(PinUvAuthProtocol::Two);
    let ciphertext = secret.encrypt(&[0xff; 32], &mut CountingRng(0x80)).unwrap();
    assert_eq!(ciphertext.len(), 48);
    assert_eq!(ciphertext[..16], (0x80..0x90).collect::<Vec<u8>>()[..]);
    assert_eq!(*secret.decrypt(&ciphertext).unwrap(), [0xff; 32]);
    // Protocol one uses a zero IV: the same plaintext always gives the same ciphertext.
    let (_, v1) = kat_secret(PinUvAuthProtocol::One);
    let a = v1.encrypt(&[0xff; 32], &mut CountingRng(0)).unwrap();
    let b = v1.encrypt(&[0xff; 32], &mut CountingRng(9)).unwrap();
    assert_eq!(a, b);
    assert_eq!(a.len(), 32);
}

#[test]
fn rejects_bad_authenticator_keys() {
    let rng = &mut CountingRng(0);
    let two = PinUvAuthProtocol::Two;
    let CoseKey::Ec2 { x, y, .. } = authenticator_cose_key() else {
        panic!("EC2 expected")
    };

    let off_curve = CoseKey::Ec2 {
        alg: Some(-25),
        crv: 1,
        x: x.clone(),
        y: x.clone(),
    };
    assert_eq!(
        encapsulate(two, &off_curve, rng).unwrap_err(),
        Error::PeerKeyNotOnCurve
    );
    let zero = CoseKey::Ec2 {
        alg: Some(-25),
        crv: 1,
        x: vec![0; 32],
        y: vec![0; 32],
    };
    assert_eq!(
        encapsulate(two, &zero, rng).unwrap_err(),
        Error::PeerKeyNotOnCurve
    );

    let p384 = CoseKey::Ec2 {
        alg: Some(-25),
        crv: 2,
        x: x.clone(),
        y: y.clone(),
    };
    assert_eq!(
        encapsulate(two, &p384, rng).unwrap_err(),
        Error::PeerKeyCurve(2)
    );

    let okp = CoseKey::Okp {
        alg: Some(-25),
        crv: 6,
        x: x.clone(),
    };
    assert_eq!(encapsulate(two, &okp, rng).unwrap_err(), Error::PeerKeyType);
    let rsa = CoseKey::Rsa {
        alg: None,
        n: x.clone(),
        e: vec![1, 0, 1],
    };
    assert_eq!(encapsulate(two, &rsa, rng).unwrap_err(), Error::PeerKeyType);

    let short = CoseKey::Ec2 {
        alg: Some(-25),
        crv: 1,
        x: x[1..].to_vec(),
        y: y.clone(),
    };
    assert_eq!(
        encapsulate(two, &short, rng).unwrap_err(),
        Error::PeerKeyCoordinateLength { x: 31, y: 32 }
    );
    let long = CoseKey::Ec2 {
        alg: Some(-25),
        crv: 1,
        x: x.clone(),
        y: [y.clone(), vec![0]].concat(),
    };
    assert_eq!(
        encapsulate(two, &long, rng).unwrap_err(),
        Error::PeerKeyCoordinateLength { x: 32, y: 33 }
    );
    // A rejected key costs no randomness: validation comes first.
    assert_eq!(rng.0, 0);
    let platform = secret_key(PLATFORM_SCALAR);
    assert_eq!(
        encapsulate_with_platform_key(two, &off_curve, &platform).unwrap_err(),
        Error::PeerKeyNotOnCurve
    );
    // The alg label is not what makes a key usable.
    let no_alg = CoseKey::Ec2 {
        alg: None,
        crv: 1,
        x,
        y,
    };
    let (_, secret) = encapsulate_with_platform_key(two, &no_alg, &platform).unwrap();
    assert_eq!(
        hex::encode(&*secret.expose_secret()),
        SECRET_V2.replace(' ', "")
    );
}

#[test]
fn rejects_bad_lengths() {
    let (_, v1) = kat_secret(PinUvAuthProtocol::One);
    let (_, v2) = kat_secret(PinUvAuthProtocol::Two);
    let rng = &mut CountingRng(0);

    assert_eq!(
        v1.encrypt(&[0; 15], rng).unwrap_err(),
        Error::PlaintextLength(15)
    );
    assert_eq!(
        v2.encrypt(&[0; 17], rng).unwrap_err(),
        Error::PlaintextLength(17)
    );

    assert_eq!(
        v1.decrypt(&[0; 15]).unwrap_err(),
        Error::CiphertextLength(15)
    );
    assert_eq!(
        v1.decrypt(&[0; 33]).unwrap_err(),
        Error::CiphertextLength(33)
    );
    assert_eq!(
        v2.decrypt(&[0; 31]).unwrap_err(),
        Error::CiphertextLength(31)
    );
    assert_eq!(v2.decrypt(&[0; 15]).unwrap_err(), Error::MissingIv(15));
    assert_eq!(v2.decrypt(&[]).unwrap_err(), Error::MissingIv(0));
    // An IV and nothing else decrypts to nothing.
    assert!(v2.decrypt(&[0; 16]).unwrap().is_empty());
    assert!(v1.decrypt(&[]).unwrap().is_empty());

    let token_error = |protocol, len| Error::TokenLength { protocol, len };
    assert_eq!(
        v1.decrypt_pin_uv_auth_token(&[0; 48]).unwrap_err(),
        token_error(PinUvAuthProtocol::One, 48)
    );
    assert_eq!(
        v1.decrypt_pin_uv_auth_token(&[]).unwrap_err(),
        token_error(PinUvAuthProtocol::One, 0)
    );
    assert_eq!(
        v2.decrypt_pin_uv_auth_token(&[0; 32]).unwrap_err(),
        token_error(PinUvAuthProtocol::Two, 16)
    );
    assert_eq!(
        v2.decrypt_pin_uv_auth_token(&[0; 64]).unwrap_err(),
        token_error(PinUvAuthProtocol::Two, 48)
    );
    assert_eq!(
        v2.decrypt_pin_uv_auth_token(&[0; 40]).unwrap_err(),
        Error::CiphertextLength(40)
    );
    assert_eq!(
        PinUvAuthToken::new(PinUvAuthProtocol::Two, Zeroizing::new(vec![0; 16])).unwrap_err(),
        token_error(PinUvAuthProtocol::Two, 16)
    );
}

#[test]
fn pin_composition() {
    assert_eq!(
        Pin::new("123").unwrap_err(),
        Error::PinTooShort {
            code_points: 3,
            minimum: 4
        }
    );
    assert_eq!(
        Pin::new("").unwrap_err(),
        Error::PinTooShort {
            code_points: 0,
            minimum: 4
        }
    );
    // Code points, not bytes: three two-byte characters are still too short.
    assert_eq!(
        Pin::new("äöü").unwrap_err(),
        Error::PinTooShort {
            code_points: 3,
            minimum: 4
        }
    );
    assert_eq!(Pin::new("1234").unwrap().code_points(), 4);

    let ascii64 = "1".repeat(64);
    assert_eq!(
        Pin::new(&ascii64).unwrap_err(),
        Error::PinTooLong { bytes: 64 }
    );
    let ascii63 = "1".repeat(63);
    assert_eq!(Pin::new(&ascii63).unwrap().as_bytes(), ascii63.as_bytes());
    // 21 three-byte euro signs: exactly 63 bytes, accepted; one more two-byte letter is not.
    let euros = "€".repeat(21);
    let pin = Pin::new(&euros).unwrap();
    assert_eq!(pin.as_bytes().len(), 63);
    assert_eq!(pin.code_points(), 21);
    assert_eq!(
        Pin::new(&format!("{euros}é")).unwrap_err(),
        Error::PinTooLong { bytes: 65 }
    );
    // A huge input is refused before normalization.
    assert_eq!(
        Pin::new(&"1".repeat(5000)).unwrap_err(),
        Error::PinTooLong { bytes: 5000 }
    );

    assert_eq!(Pin::new("12\u{0}34").unwrap_err(), Error::PinContainsNul);

    assert_eq!(
        Pin::with_min_length("12345", 6).unwrap_err(),
        Error::PinTooShort {
            code_points: 5,
            minimum: 6
        }
    );
    assert_eq!(Pin::with_min_length("123456", 6).unwrap().code_points(), 6);
    // A minimum below the spec's baseline of 4 is raised to 4.
    assert_eq!(
        Pin::with_min_length("123", 2).unwrap_err(),
        Error::PinTooShort {
            code_points: 3,
            minimum: 4
        }
    );
}

#[test]
fn pins_are_normalized_to_nfc() {
    // "é" typed as e + COMBINING ACUTE ACCENT becomes U+00E9 (c3 a9).
    let decomposed = "e\u{301}e\u{301}e\u{301}e\u{301}";
    let pin = Pin::new(decomposed).unwrap();
    assert_eq!(hex::encode(pin.as_bytes()), "c3a9c3a9c3a9c3a9");
    assert_eq!(pin.as_bytes(), Pin::new("éééé").unwrap().as_bytes());
    // Length rules apply to the normalized form: 6 code points become 3.
    assert_eq!(
        Pin::new("e\u{301}e\u{301}e\u{301}").unwrap_err(),
        Error::PinTooShort {
            code_points: 3,
            minimum: 4
        }
    );
    // 32 decomposed "é" are 96 bytes, but 64 once composed: still one byte too long.
    assert_eq!(
        Pin::new(&"e\u{301}".repeat(32)).unwrap_err(),
        Error::PinTooLong { bytes: 64 }
    );
    // ... while 31 compose to 62 bytes and are accepted.
    assert_eq!(
        Pin::new(&"e\u{301}".repeat(31)).unwrap().as_bytes().len(),
        62
    );
}

#[test]
fn debug_output_redacts_secrets() {
    let (_, secret) = kat_secret(PinUvAuthProtocol::Two);
    let shown = format!("{secret:?}");
    assert_eq!(shown, "SharedSecret { protocol: Two, .. }");
    let pin = Pin::new("9876").unwrap();
    assert_eq!(format!("{pin:?}"), "Pin(<redacted>)");
    let token =
        PinUvAuthToken::new(PinUvAuthProtocol::One, Zeroizing::new(vec![0xab; 16])).unwrap();
    assert_eq!(
        format!("{token:?}"),
        "PinUvAuthToken { protocol: One, len: 16, .. }"
    );
}
