//! Presetting a PIN at start-up through the firmware's own clientPIN command (CTAP 2.2 §6.5.5.5,
//! setPIN), acting as a platform with PIN/UV auth protocol 1 (§6.5.6): the firmware hashes and
//! stores the PIN exactly as when a real client sets it, so its retry counter, policy checks and
//! getInfo `clientPin: true` all follow.

use aes::cipher::{BlockEncryptMut as _, KeyIvInit as _, block_padding::NoPadding};
use ciborium::Value;
use hmac::{Hmac, Mac as _};
use p256::{
    EncodedPoint, PublicKey,
    ecdh::EphemeralSecret,
    elliptic_curve::sec1::{FromEncodedPoint as _, ToEncodedPoint as _},
};
use rand::rngs::OsRng;
use sha2::{Digest as _, Sha256, digest::generic_array::GenericArray};
use zeroize::Zeroizing;

use crate::ctaphid::HidReply;

/// authenticatorClientPIN, CTAP 2.2 §6.5.
const CLIENT_PIN: u8 = 0x06;
/// clientPIN subcommands.
const GET_KEY_AGREEMENT: u8 = 0x02;
const SET_PIN: u8 = 0x03;
/// clientPIN request and response keys.
const KEY_PROTOCOL: i64 = 0x01;
const KEY_SUBCOMMAND: i64 = 0x02;
const KEY_KEY_AGREEMENT: i64 = 0x03;
const KEY_PIN_UV_AUTH_PARAM: i64 = 0x04;
const KEY_NEW_PIN_ENC: i64 = 0x05;
/// COSE_Key labels and values for the ECDH key (RFC 9053): kty EC2, alg ECDH-ES+HKDF-256, P-256.
const COSE_KTY: i64 = 1;
const COSE_ALG: i64 = 3;
const COSE_CRV: i64 = -1;
const COSE_X: i64 = -2;
const COSE_Y: i64 = -3;
const COSE_KTY_EC2: i64 = 2;
const COSE_ALG_ECDH_ES_HKDF_256: i64 = -25;
const COSE_CRV_P256: i64 = 1;
/// The padded PIN block, §6.5.5.5.
const PADDED_PIN_LEN: usize = 64;

/// Why a preset PIN is not acceptable (CTAP 2.2 §6.5.5.5: at least 4 code points, at most 63
/// bytes of UTF-8; the firmware ends the PIN at the first NUL of the padding).
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PinRule {
    /// Fewer than 4 Unicode code points.
    #[error("shorter than 4 code points")]
    TooShort,
    /// More than 63 bytes of UTF-8.
    #[error("longer than 63 bytes")]
    TooLong,
    /// Contains U+0000, which the padding would cut off.
    #[error("contains a NUL character")]
    ContainsNul,
}

/// Why setting the preset PIN through clientPIN failed.
#[derive(Clone, Copy, Debug, Eq, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum PinSetupError {
    /// The firmware answered with this CTAP status (e.g. 0x37 PIN_POLICY_VIOLATION).
    #[error("the firmware answered CTAP status {0:#04x}")]
    Status(u8),
    /// The firmware answered with this CTAPHID error code.
    #[error("the firmware answered CTAPHID error {0:#04x}")]
    Transport(u8),
    /// The getKeyAgreement reply had no usable P-256 key.
    #[error("the firmware's key agreement reply was malformed")]
    MalformedReply,
    /// Encoding the request or the protocol-1 crypto failed.
    #[error("building the setPIN request failed")]
    Encoding,
}

/// Checks a preset PIN against CTAP's rules.
pub(crate) fn validate(pin: &str) -> Result<(), PinRule> {
    if pin.contains('\0') {
        Err(PinRule::ContainsNul)
    } else if pin.chars().count() < 4 {
        Err(PinRule::TooShort)
    } else if pin.len() >= PADDED_PIN_LEN {
        Err(PinRule::TooLong)
    } else {
        Ok(())
    }
}

/// Sets `pin` with getKeyAgreement and setPIN; `call` runs one CTAPHID_CBOR message in the
/// firmware.
pub(crate) fn set_pin(
    pin: &str,
    mut call: impl FnMut(&[u8]) -> HidReply,
) -> Result<(), PinSetupError> {
    let request = encode(&Value::Map(vec![
        (int(KEY_PROTOCOL), int(1)),
        (int(KEY_SUBCOMMAND), int(GET_KEY_AGREEMENT.into())),
    ]))?;
    let reply = ok_body(call(&request))?;
    let authenticator_key = parse_key_agreement(&reply)?;

    let secret = EphemeralSecret::random(&mut OsRng);
    let platform_point = secret.public_key().to_encoded_point(false);
    // The ECDH secret (p256's SharedSecret) wipes itself on drop; the key derived from it and
    // the plaintext PIN block are wiped here.
    let shared = secret.diffie_hellman(&authenticator_key);
    // Protocol 1: the shared secret is SHA-256 of the ECDH x-coordinate.
    let mut key = Zeroizing::new([0u8; 32]);
    Sha256::new_with_prefix(shared.raw_secret_bytes())
        .finalize_into(GenericArray::from_mut_slice(key.as_mut_slice()));

    let mut block = Zeroizing::new([0u8; PADDED_PIN_LEN]);
    let pin = pin.as_bytes();
    block
        .get_mut(..pin.len())
        .ok_or(PinSetupError::Encoding)?
        .copy_from_slice(pin);
    // Protocol 1 encrypts with AES-256-CBC, all-zero IV, no padding.
    let new_pin_enc = cbc::Encryptor::<aes::Aes256>::new_from_slices(key.as_slice(), &[0u8; 16])
        .map_err(|_| PinSetupError::Encoding)?
        .encrypt_padded_mut::<NoPadding>(block.as_mut_slice(), PADDED_PIN_LEN)
        .map_err(|_| PinSetupError::Encoding)?
        .to_vec();
    let mut mac =
        Hmac::<Sha256>::new_from_slice(key.as_slice()).map_err(|_| PinSetupError::Encoding)?;
    mac.update(&new_pin_enc);
    let pin_uv_auth_param = mac
        .finalize()
        .into_bytes()
        .get(..16)
        .unwrap_or_default()
        .to_vec();

    let (Some(x), Some(y)) = (platform_point.x(), platform_point.y()) else {
        return Err(PinSetupError::Encoding);
    };
    let request = encode(&Value::Map(vec![
        (int(KEY_PROTOCOL), int(1)),
        (int(KEY_SUBCOMMAND), int(SET_PIN.into())),
        (
            int(KEY_KEY_AGREEMENT),
            Value::Map(vec![
                (int(COSE_KTY), int(COSE_KTY_EC2)),
                (int(COSE_ALG), int(COSE_ALG_ECDH_ES_HKDF_256)),
                (int(COSE_CRV), int(COSE_CRV_P256)),
                (int(COSE_X), Value::Bytes(x.to_vec())),
                (int(COSE_Y), Value::Bytes(y.to_vec())),
            ]),
        ),
        (int(KEY_PIN_UV_AUTH_PARAM), Value::Bytes(pin_uv_auth_param)),
        (int(KEY_NEW_PIN_ENC), Value::Bytes(new_pin_enc)),
    ]))?;
    ok_body(call(&request)).map(|_| ())
}

fn int(value: i64) -> Value {
    Value::Integer(value.into())
}

/// The clientPIN command byte followed by the CBOR request.
fn encode(value: &Value) -> Result<Vec<u8>, PinSetupError> {
    let mut out = vec![CLIENT_PIN];
    ciborium::into_writer(value, &mut out).map_err(|_| PinSetupError::Encoding)?;
    Ok(out)
}

/// The CBOR body of a successful reply.
fn ok_body(reply: HidReply) -> Result<Vec<u8>, PinSetupError> {
    match reply {
        HidReply::Error(code) => Err(PinSetupError::Transport(code)),
        HidReply::Data(data) => match data.split_first() {
            Some((0x00, body)) => Ok(body.to_vec()),
            Some((&status, _)) => Err(PinSetupError::Status(status)),
            None => Err(PinSetupError::MalformedReply),
        },
    }
}

fn parse_key_agreement(body: &[u8]) -> Result<PublicKey, PinSetupError> {
    let value: Value = ciborium::from_reader(body).map_err(|_| PinSetupError::MalformedReply)?;
    let cose = lookup(&value, 0x01).ok_or(PinSetupError::MalformedReply)?;
    let coordinate = |label| match lookup(cose, label) {
        Some(Value::Bytes(bytes)) if bytes.len() == 32 => Ok(bytes.as_slice()),
        _ => Err(PinSetupError::MalformedReply),
    };
    let point = EncodedPoint::from_affine_coordinates(
        coordinate(COSE_X)?.into(),
        coordinate(COSE_Y)?.into(),
        false,
    );
    Option::from(PublicKey::from_encoded_point(&point)).ok_or(PinSetupError::MalformedReply)
}

fn lookup(map: &Value, key: i64) -> Option<&Value> {
    map.as_map()?
        .iter()
        .find(|(k, _)| k.as_integer() == Some(key.into()))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pin_rules() {
        assert_eq!(validate("123"), Err(PinRule::TooShort));
        assert_eq!(validate("1234"), Ok(()));
        assert_eq!(validate("äöüß"), Ok(()));
        assert_eq!(validate(&"1".repeat(63)), Ok(()));
        assert_eq!(validate(&"1".repeat(64)), Err(PinRule::TooLong));
        assert_eq!(validate("12\u{0}34"), Err(PinRule::ContainsNul));
    }

    #[test]
    fn reply_status_and_transport_errors_are_typed() {
        assert_eq!(
            ok_body(HidReply::Data(vec![0x37])),
            Err(PinSetupError::Status(0x37))
        );
        assert_eq!(
            ok_body(HidReply::Error(0x06)),
            Err(PinSetupError::Transport(0x06))
        );
        assert_eq!(
            ok_body(HidReply::Data(vec![])),
            Err(PinSetupError::MalformedReply)
        );
        assert_eq!(ok_body(HidReply::Data(vec![0x00, 0xa0])), Ok(vec![0xa0]));
    }

    #[test]
    fn malformed_key_agreement_is_rejected() {
        // {1: {-2: h'00', -3: h'00'}}
        let body = [0xa1, 0x01, 0xa2, 0x21, 0x41, 0x00, 0x22, 0x41, 0x00];
        assert_eq!(
            parse_key_agreement(&body).err(),
            Some(PinSetupError::MalformedReply)
        );
        assert_eq!(
            parse_key_agreement(&[0xff]).err(),
            Some(PinSetupError::MalformedReply)
        );
        // A point that is not on the curve.
        let mut body = vec![0xa1, 0x01, 0xa2, 0x21, 0x58, 0x20];
        body.extend_from_slice(&[0x01; 32]);
        body.extend_from_slice(&[0x22, 0x58, 0x20]);
        body.extend_from_slice(&[0x01; 32]);
        assert_eq!(
            parse_key_agreement(&body).err(),
            Some(PinSetupError::MalformedReply)
        );
    }

    #[test]
    fn set_pin_sends_key_agreement_then_set_pin() {
        let authenticator = EphemeralSecret::random(&mut OsRng);
        let point = authenticator.public_key().to_encoded_point(false);
        let mut calls = Vec::new();
        let result = set_pin("1234", |request| {
            calls.push(request.to_vec());
            if calls.len() == 1 {
                let mut reply = vec![0x00];
                ciborium::into_writer(
                    &Value::Map(vec![(
                        int(1),
                        Value::Map(vec![
                            (int(1), int(2)),
                            (int(3), int(-25)),
                            (int(-1), int(1)),
                            (int(-2), Value::Bytes(point.x().unwrap().to_vec())),
                            (int(-3), Value::Bytes(point.y().unwrap().to_vec())),
                        ]),
                    )]),
                    &mut reply,
                )
                .unwrap();
                HidReply::Data(reply)
            } else {
                HidReply::Data(vec![0x00])
            }
        });
        assert_eq!(result, Ok(()));
        assert_eq!(calls[0], vec![0x06, 0xa2, 0x01, 0x01, 0x02, 0x02]);
        let set: Value = ciborium::from_reader(&calls[1][1..]).unwrap();
        assert_eq!(lookup(&set, 2), Some(&int(3)));
        let Some(Value::Bytes(enc)) = lookup(&set, 5) else {
            panic!("no newPinEnc")
        };
        assert_eq!(enc.len(), 64);
        // Decrypt with the authenticator's side of the agreement and find the PIN.
        let Some(platform) = lookup(&set, 3) else {
            panic!("no key agreement")
        };
        let (Some(Value::Bytes(x)), Some(Value::Bytes(y))) =
            (lookup(platform, -2), lookup(platform, -3))
        else {
            panic!("no coordinates")
        };
        let platform = PublicKey::from_encoded_point(&EncodedPoint::from_affine_coordinates(
            x.as_slice().into(),
            y.as_slice().into(),
            false,
        ))
        .unwrap();
        let key: [u8; 32] =
            Sha256::digest(authenticator.diffie_hellman(&platform).raw_secret_bytes()).into();
        use aes::cipher::BlockDecryptMut as _;
        let mut block = enc.clone();
        let plain = cbc::Decryptor::<aes::Aes256>::new(&key.into(), &[0u8; 16].into())
            .decrypt_padded_mut::<NoPadding>(&mut block)
            .unwrap();
        assert_eq!(&plain[..4], b"1234");
        assert!(plain[4..].iter().all(|&b| b == 0));
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(enc);
        let Some(Value::Bytes(param)) = lookup(&set, 4) else {
            panic!("no pinUvAuthParam")
        };
        assert_eq!(param.as_slice(), &mac.finalize().into_bytes()[..16]);
    }

    #[test]
    fn set_pin_reports_firmware_status() {
        let result = set_pin("1234", |_| HidReply::Data(vec![0x31]));
        assert_eq!(result, Err(PinSetupError::Status(0x31)));
    }
}
