//! What a browser hands the relying party after `navigator.credentials.create()`, built from
//! the key's attestation (WebAuthn L3 §5.1.3 steps 20–21, `AuthenticatorAttestationResponse`).

use ctap::command::get_info;
use ctap::cose::{CoseKey, curve};
use ctap::webauthn::attestation::{AttestationObject, format};
use ctap::webauthn::auth_data::MAX_CREDENTIAL_ID_LEN;

use super::error::{BadResponse, CeremonyError};
use super::plan::Creation;
use crate::loginid::Base64Bytes;
use crate::loginid::dto::{AttestationConveyance, CreationResult};
use crate::transport::Transport;

/// The `creationResult` of `reg/complete`, and the credential id.
pub(super) struct Built {
    pub(super) creation_result: CreationResult,
    pub(super) credential_id: Vec<u8>,
    pub(super) format: String,
}

/// Checks the key's attestation against the request and builds the `creationResult`:
/// attestation object (as "none" when the RP asked for no attestation, WebAuthn L3 §5.4.7),
/// clientDataJSON, credential id, authenticator data, DER SubjectPublicKeyInfo of the
/// credential key when it has one, its COSE algorithm, and the transports.
pub(super) fn build(
    attestation: AttestationObject,
    creation: &Creation,
    client_data_json: Vec<u8>,
    transports: Vec<String>,
) -> Result<Built, CeremonyError> {
    let bad = CeremonyError::BadResponse;
    // WebAuthn L3 §7.1 steps 13-16 and 19 (rpIdHash, UP, UV, credentialId, alg), done here so
    // that LoginID never sees an answer the platform could already tell is wrong.
    let parsed = attestation
        .parsed_auth_data()
        .map_err(|e| bad(BadResponse::from_auth_data(&e)))?;
    if !parsed.check_rp_id(&creation.rp.id) {
        return Err(bad(BadResponse::RpIdHash));
    }
    if !parsed.flags().user_present() {
        return Err(bad(BadResponse::UserNotPresent));
    }
    if creation.uv_required() && !parsed.flags().user_verified() {
        return Err(bad(BadResponse::UserNotVerified));
    }
    let credential = parsed
        .attested_credential_data()
        .ok_or_else(|| bad(BadResponse::AuthData("no attested credential data".into())))?;
    let credential_id = credential.credential_id().to_vec();
    if credential_id.len() > MAX_CREDENTIAL_ID_LEN {
        return Err(bad(BadResponse::CredentialIdTooLong(credential_id.len())));
    }
    let key = credential
        .cose_key()
        .map_err(|e| bad(BadResponse::PublicKey(e.to_string())))?;
    check_public_key(&key, &creation.algorithms).map_err(bad)?;
    let algorithm = key.alg();
    // Keys of a type without an SPKI form (none today) simply go without `publicKey`.
    let public_key = key.to_spki_der().ok().map(Base64Bytes);
    let attestation =
        if creation.attestation == AttestationConveyance::None && attestation.fmt != format::NONE {
            AttestationObject::none(attestation.auth_data)
        } else {
            attestation
        };
    let encoded = attestation
        .to_cbor()
        .map_err(|_| bad(BadResponse::Encoding))?;
    Ok(Built {
        format: attestation.fmt.clone(),
        creation_result: CreationResult {
            attestation_object: Base64Bytes(encoded),
            client_data_json: Base64Bytes(client_data_json),
            credential_id: Base64Bytes(credential_id.clone()),
            authenticator_data: Some(Base64Bytes(attestation.auth_data)),
            public_key,
            public_key_algorithm: algorithm,
            transports: Some(transports),
        },
        credential_id,
    })
}

/// The credential public key's `alg` must be one the RP offered (WebAuthn L3 §7.1 step
/// "Verify that the alg parameter in the credential public key ... matches ...
/// pubKeyCredParams"), and a P-256 key must be a point on the curve: an off-curve point can
/// verify nothing, and forwarding it would leave a useless passkey on the user's account.
fn check_public_key(key: &CoseKey, offered: &[i64]) -> Result<(), BadResponse> {
    let algorithm = key.alg();
    if !algorithm.is_some_and(|alg| offered.contains(&alg)) {
        return Err(BadResponse::UnexpectedAlgorithm(algorithm));
    }
    if let CoseKey::Ec2 {
        crv: curve::P256, ..
    } = key
    {
        key.to_p256()
            .map_err(|_| BadResponse::PublicKeyNotOnCurve)?;
    }
    Ok(())
}

/// The WebAuthn transports of a key (WebAuthn L3 §5.8.4): what its getInfo lists that
/// WebAuthn knows, plus the one it is used over now. Virtual keys present themselves as USB
/// keys.
pub(super) fn transports(info: Option<&get_info::Response>, current: Transport) -> Vec<String> {
    const KNOWN: [&str; 6] = ["ble", "hybrid", "internal", "nfc", "smart-card", "usb"];
    let mut out: Vec<String> = info
        .and_then(|info| info.transports.as_ref())
        .into_iter()
        .flatten()
        .filter(|t| KNOWN.contains(&t.as_str()))
        .cloned()
        .collect();
    let now = match current {
        Transport::Nfc => "nfc",
        Transport::Usb | Transport::Virtual => "usb",
    };
    out.push(now.to_owned());
    out.sort();
    out.dedup();
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctap::cose::alg;
    use ctap::webauthn::auth_data::{AuthenticatorData, Flags};
    use sha2::{Digest, Sha256};

    /// `options()` of the plan tests: rp example.com, ES256 and RS256 offered, UV required.
    fn creation() -> Creation {
        Creation::new(&super::super::plan::tests::options(), "example.com".into()).unwrap()
    }

    fn p256_key() -> CoseKey {
        let secret = p256::SecretKey::from_slice(&[9; 32]).unwrap();
        CoseKey::from_p256(&secret.public_key(), alg::ES256)
    }

    /// Authenticator data for `rp_id` with `flags`, a 16-byte credential id and `key`.
    fn auth_data(rp_id: &str, flags: u8, key: &CoseKey) -> Vec<u8> {
        let mut bytes: Vec<u8> = Sha256::digest(rp_id.as_bytes()).to_vec();
        bytes.push(flags);
        bytes.extend_from_slice(&[0, 0, 0, 1]);
        bytes.extend_from_slice(&[0xaa; 16]);
        bytes.extend_from_slice(&[0x00, 0x10]);
        bytes.extend_from_slice(&[0xcc; 16]);
        bytes.extend_from_slice(&ctap::cbor::to_canonical_vec(&key.to_value()).unwrap());
        bytes
    }

    fn built(auth: Vec<u8>) -> Result<Built, CeremonyError> {
        build(
            AttestationObject::none(auth),
            &creation(),
            b"{}".to_vec(),
            vec!["usb".into()],
        )
    }

    fn bad_response(result: Result<Built, CeremonyError>) -> BadResponse {
        match result {
            Err(CeremonyError::BadResponse(bad)) => bad,
            Err(other) => panic!("expected BadResponse, got {other:?}"),
            Ok(_) => panic!("expected BadResponse, got a result"),
        }
    }

    const UP_UV_AT: u8 = 0x45;

    #[test]
    fn a_good_answer_is_built() {
        let built = built(auth_data("example.com", UP_UV_AT, &p256_key())).unwrap();
        assert_eq!(built.credential_id, vec![0xcc; 16]);
        assert_eq!(built.creation_result.public_key_algorithm, Some(alg::ES256));
        assert_eq!(built.format, "none");
        let spki = built.creation_result.public_key.unwrap().0;
        assert_eq!(spki.len(), 91);
    }

    #[test]
    fn webauthn_registration_checks_refuse_tampered_answers() {
        // §7.1: rpIdHash of another RP.
        assert_eq!(
            bad_response(built(auth_data("example.org", UP_UV_AT, &p256_key()))),
            BadResponse::RpIdHash
        );
        // UP clear.
        assert_eq!(
            bad_response(built(auth_data("example.com", 0x44, &p256_key()))),
            BadResponse::UserNotPresent
        );
        // UV required and clear.
        assert_eq!(
            bad_response(built(auth_data("example.com", 0x41, &p256_key()))),
            BadResponse::UserNotVerified
        );
        // A point off the curve.
        let CoseKey::Ec2 { alg, crv, x, mut y } = p256_key() else {
            panic!("an EC2 key");
        };
        y[31] ^= 0x01;
        let off = CoseKey::Ec2 { alg, crv, x, y };
        assert!(off.to_spki_der().is_ok(), "SPKI alone does not catch it");
        assert_eq!(
            bad_response(built(auth_data("example.com", UP_UV_AT, &off))),
            BadResponse::PublicKeyNotOnCurve
        );
        // An algorithm the RP did not offer (EdDSA), and none at all.
        let okp = |alg| CoseKey::Okp {
            alg,
            crv: curve::ED25519,
            x: vec![3; 32],
        };
        assert_eq!(
            bad_response(built(auth_data(
                "example.com",
                UP_UV_AT,
                &okp(Some(alg::EDDSA))
            ))),
            BadResponse::UnexpectedAlgorithm(Some(alg::EDDSA))
        );
        assert_eq!(
            bad_response(built(auth_data("example.com", UP_UV_AT, &okp(None)))),
            BadResponse::UnexpectedAlgorithm(None)
        );
    }

    #[test]
    fn credential_id_length_is_bounded() {
        // 1024 bytes, consistently declared: refused by the parser, with its own variant.
        let mut auth = auth_data("example.com", UP_UV_AT, &p256_key());
        let key = auth.split_off(55 + 16);
        auth.truncate(53);
        auth.extend_from_slice(&1024u16.to_be_bytes());
        auth.extend_from_slice(&[0x5a; 1024]);
        auth.extend_from_slice(&key);
        assert_eq!(
            bad_response(built(auth)),
            BadResponse::CredentialIdTooLong(1024)
        );
        // A length that disagrees with the credential id: the key does not parse.
        let mut auth = auth_data("example.com", UP_UV_AT, &p256_key());
        auth[54] = 0x11;
        assert!(matches!(
            bad_response(built(auth)),
            BadResponse::AuthData(_)
        ));
        // 1023 is the largest accepted.
        let data = AuthenticatorData::with_attested_credential(
            Sha256::digest(b"example.com").into(),
            Flags::UP,
            0,
            [0; 16],
            &[1; 1023],
            &p256_key(),
        );
        assert!(data.is_ok());
    }

    #[test]
    fn transports_are_known_sorted_and_include_the_current_one() {
        assert_eq!(transports(None, Transport::Nfc), ["nfc"]);
        assert_eq!(transports(None, Transport::Virtual), ["usb"]);
        use ctap::cbor::Value;
        let map = Value::Map(vec![
            (Value::from(1), Value::Array(vec![Value::from("FIDO_2_1")])),
            (Value::from(3), Value::Bytes(vec![0; 16])),
            (
                Value::from(9),
                Value::Array(vec![
                    Value::from("usb"),
                    Value::from("nfc"),
                    Value::from("lightning"),
                ]),
            ),
        ]);
        let info =
            get_info::Response::from_cbor(&ctap::cbor::to_canonical_vec(&map).unwrap()).unwrap();
        assert_eq!(transports(Some(&info), Transport::Usb), ["nfc", "usb"]);
    }
}
