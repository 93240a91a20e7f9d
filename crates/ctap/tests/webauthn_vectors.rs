#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Recorded authenticator output run through the WebAuthn and U2F parsers.
//!
//! The vectors are third-party data and are not part of this repository. Point
//! `PASSKEYD_VECTORS` at the directory holding the JSON files (schema: the README there);
//! without it the tests skip, except under `CI=true`, where they fail.
//!
//! Covered: browser attestation objects (fido-u2f, packed, none), assertion authenticator
//! data, makeCredential and getAssertion response bodies, U2F register and authenticate
//! responses. Where the inputs allow, signatures are verified with the attestation
//! certificate or the credential key, which pins the exact bytes our conversions produce.

use std::collections::BTreeMap;
use std::path::PathBuf;

use ctap::cbor::{self, IntMap, conv};
use ctap::cose::{CoseAlgorithm, CoseKey};
use ctap::u2f::{self, Authentication, KeyHandleCheck, Registration, StatusWord, U2fError};
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::{AuthenticatorData, CredBlob, CredProtect, HmacSecret};
use p256::ecdsa::signature::Verifier as _;
use p256::pkcs8::DecodePublicKey as _;
use serde_json::Value as Json;
use sha2::{Digest, Sha256};

/// Every vector of every JSON file, as (file stem, vector).
fn vectors() -> Option<Vec<(String, Json)>> {
    let Some(dir) = std::env::var_os("PASSKEYD_VECTORS") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "PASSKEYD_VECTORS must point at the vector directory when CI=true"
        );
        eprintln!("skipping: set PASSKEYD_VECTORS to the recorded vector directory");
        return None;
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .expect("PASSKEYD_VECTORS is not a readable directory")
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no JSON files in {dir:?}");
    let mut out = Vec::new();
    for path in files {
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let file: Json = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        for vector in file["vectors"].as_array().unwrap() {
            out.push((stem.clone(), vector.clone()));
        }
    }
    Some(out)
}

fn name(vector: &Json) -> &str {
    vector["name"].as_str().unwrap()
}

fn kind(vector: &Json) -> &str {
    vector["kind"].as_str().unwrap_or_default()
}

fn unhex(value: &Json) -> Vec<u8> {
    hex::decode(value.as_str().unwrap().replace('-', "")).unwrap()
}

fn sha256(data: &[u8]) -> [u8; 32] {
    Sha256::digest(data).into()
}

/// The message bytes: `hex`, or the reassembled payload the vector's own decode gives for
/// USB-HID captures (CTAPHID reassembly is tested elsewhere).
fn message(vector: &Json) -> Vec<u8> {
    if vector["hex"].is_string() {
        unhex(&vector["hex"])
    } else {
        unhex(&vector["decoded"]["messages"][0]["payload_hex"])
    }
}

/// The P-256 key of a DER certificate, read with an independent X.509 parser.
fn certificate_key(der: &[u8]) -> p256::ecdsa::VerifyingKey {
    use der::{Decode, Encode};
    let cert = x509_cert::Certificate::from_der(der).unwrap();
    let spki = cert
        .tbs_certificate
        .subject_public_key_info
        .to_der()
        .unwrap();
    p256::ecdsa::VerifyingKey::from_public_key_der(&spki).unwrap()
}

fn verify(key: &p256::ecdsa::VerifyingKey, message: &[u8], der_signature: &[u8]) {
    let signature = p256::ecdsa::Signature::from_der(der_signature).unwrap();
    key.verify(message, &signature).unwrap();
}

fn expected_algorithm(value: &Json) -> CoseAlgorithm {
    match value {
        Json::String(s) if s == "ES256" => CoseAlgorithm::Es256,
        Json::String(s) if s == "EdDSA" => CoseAlgorithm::EdDsa,
        Json::String(s) if s == "ES384" => CoseAlgorithm::Es384,
        Json::String(s) if s == "RS256" => CoseAlgorithm::Rs256,
        Json::Number(n) => CoseAlgorithm::from(n.as_i64().unwrap()),
        other => panic!("unexpected alg {other}"),
    }
}

/// Checks parsed authenticator data against the vector's own decode of it.
fn check_auth_data(data: &AuthenticatorData, expected: &Json, context: &str) {
    assert_eq!(
        data.as_bytes().len() as u64,
        expected["len"].as_u64().unwrap(),
        "{context}"
    );
    assert_eq!(
        data.rp_id_hash()[..],
        unhex(&expected["rpIdHash"])[..],
        "{context}"
    );
    let flags = u8::from_str_radix(
        expected["flags"].as_str().unwrap().trim_start_matches("0x"),
        16,
    );
    assert_eq!(data.flags().bits(), flags.unwrap(), "{context}");
    assert_eq!(
        u64::from(data.sign_count()),
        expected["signCount"].as_u64().unwrap(),
        "{context}"
    );
    if let Some(rp_id) = expected["rpIdHash_is_sha256_of"].as_str() {
        assert!(data.check_rp_id(rp_id), "{context}");
        assert!(!data.check_rp_id(&format!("{rp_id}.")), "{context}");
    }

    match data.attested_credential_data() {
        None => assert!(expected["aaguid"].is_null(), "{context}: AT missing"),
        Some(attested) => {
            assert_eq!(
                attested.aaguid()[..],
                unhex(&expected["aaguid"])[..],
                "{context}"
            );
            assert_eq!(
                attested.credential_id().len() as u64,
                expected["credentialIdLength"].as_u64().unwrap(),
                "{context}"
            );
            assert_eq!(
                attested.credential_id(),
                unhex(&expected["credentialId"]),
                "{context}"
            );
            let key = &expected["credentialPublicKey"];
            assert_eq!(
                attested.algorithm(),
                Some(expected_algorithm(&key["alg"])),
                "{context}"
            );
            check_public_key(attested.cose_key(), key, context);
        }
    }

    match data.extensions() {
        None => assert!(expected["extensions"].is_null(), "{context}: ED missing"),
        Some(extensions) => {
            for (id, value) in expected["extensions"].as_object().unwrap() {
                match id.as_str() {
                    "credProtect" => {
                        let policy = match value.as_u64().unwrap() {
                            1 => CredProtect::UserVerificationOptional,
                            2 => CredProtect::UserVerificationOptionalWithCredentialIdList,
                            _ => CredProtect::UserVerificationRequired,
                        };
                        assert_eq!(extensions.cred_protect(), Ok(Some(policy)), "{context}");
                    }
                    "hmac-secret" => assert_eq!(
                        extensions.hmac_secret(),
                        Ok(Some(HmacSecret::Enabled(value.as_bool().unwrap()))),
                        "{context}"
                    ),
                    "credBlob" => assert_eq!(
                        extensions.cred_blob(),
                        Ok(Some(CredBlob::Stored(value.as_bool().unwrap()))),
                        "{context}"
                    ),
                    "minPinLength" => {
                        assert_eq!(extensions.min_pin_length(), Ok(value.as_u64()), "{context}")
                    }
                    other => assert!(extensions.get(other).is_some(), "{context}: {other}"),
                }
            }
        }
    }
}

/// The typed COSE key agrees with the vector's decode, and converts to a SubjectPublicKeyInfo
/// that independent code accepts.
fn check_public_key(key: Result<CoseKey, cbor::DecodeError>, expected: &Json, context: &str) {
    match expected["kty"].as_str() {
        Some("EC2") => {
            let key = key.unwrap();
            let CoseKey::Ec2 { x, y, .. } = &key else {
                panic!("{context}: not EC2")
            };
            assert_eq!(x, &unhex(&expected["x"]), "{context}");
            assert_eq!(y, &unhex(&expected["y"]), "{context}");
            let spki = key.to_spki_der().unwrap();
            assert_eq!(
                p256::PublicKey::from_public_key_der(&spki).unwrap(),
                key.to_p256().unwrap()
            );
        }
        Some("OKP") => {
            let key = key.unwrap();
            let CoseKey::Okp { x, .. } = &key else {
                panic!("{context}: not OKP")
            };
            assert_eq!(x, &unhex(&expected["x"]), "{context}");
            let spki = key.to_spki_der().unwrap();
            assert_eq!(
                hex::encode(&spki[..12]),
                "302a300506032b6570032100",
                "{context}"
            );
            assert_eq!(spki[12..], x[..], "{context}");
        }
        // ML-DSA's AKP key type (7) is outside `CoseKey`; the raw map still parsed.
        _ => assert_eq!(
            key,
            Err(cbor::DecodeError::OutOfRange("COSE_Key kty")),
            "{context}"
        ),
    }
}

/// Verifies a "packed" attestation statement with its certificate, when the signature is
/// ES256 over `authData || clientDataHash` (WebAuthn L3 §8.2).
fn verify_packed(object: &AttestationObject, client_data_hash: &[u8]) -> bool {
    let alg = object.statement_member("alg").and_then(|v| v.as_integer());
    let x5c = object.statement_member("x5c").and_then(|v| v.as_array());
    let sig = object.statement_member("sig").and_then(|v| v.as_bytes());
    let (Some(alg), Some(x5c), Some(sig)) = (alg, x5c, sig) else {
        return false;
    };
    if i128::from(alg) != -7 {
        return false;
    }
    let cert = x5c[0].as_bytes().unwrap();
    let mut signed = object.auth_data.clone();
    signed.extend_from_slice(client_data_hash);
    verify(&certificate_key(cert), &signed, sig);
    true
}

/// Verifies a "fido-u2f" attestation object as a relying party does (WebAuthn L3 §8.6).
fn verify_fido_u2f(object: &AttestationObject, client_data_hash: &[u8]) {
    let data = object.parsed_auth_data().unwrap();
    let attested = data.attested_credential_data().unwrap();
    let CoseKey::Ec2 { x, y, .. } = attested.cose_key().unwrap() else {
        panic!("not EC2")
    };
    let mut signed = vec![0x00];
    signed.extend_from_slice(data.rp_id_hash());
    signed.extend_from_slice(client_data_hash);
    signed.extend_from_slice(attested.credential_id());
    signed.push(0x04);
    signed.extend_from_slice(&x);
    signed.extend_from_slice(&y);
    let cert = object.statement_member("x5c").unwrap().as_array().unwrap()[0]
        .as_bytes()
        .unwrap();
    let sig = object.statement_member("sig").unwrap().as_bytes().unwrap();
    verify(&certificate_key(cert), &signed, sig);
}

/// Rebuilds the U2F register response a fido-u2f attestation object was made from.
fn u2f_response_from(object: &AttestationObject) -> Vec<u8> {
    let data = object.parsed_auth_data().unwrap();
    let attested = data.attested_credential_data().unwrap();
    let CoseKey::Ec2 { x, y, .. } = attested.cose_key().unwrap() else {
        panic!("not EC2")
    };
    let mut response = vec![0x05, 0x04];
    response.extend_from_slice(&x);
    response.extend_from_slice(&y);
    response.push(u8::try_from(attested.credential_id().len()).unwrap());
    response.extend_from_slice(attested.credential_id());
    let x5c = object.statement_member("x5c").unwrap().as_array().unwrap();
    response.extend_from_slice(x5c[0].as_bytes().unwrap());
    response.extend_from_slice(object.statement_member("sig").unwrap().as_bytes().unwrap());
    response
}

#[test]
fn browser_attestation_objects() {
    let Some(vectors) = vectors() else { return };
    let mut formats = BTreeMap::<String, usize>::new();
    let mut verified = 0;
    for (_, vector) in &vectors {
        if !kind(vector).starts_with("registration attestationObject") {
            continue;
        }
        let context = name(vector);
        let bytes = unhex(&vector["hex"]);
        let decoded = &vector["decoded"];
        let object = AttestationObject::from_cbor(&bytes).unwrap();
        assert_eq!(object.fmt, decoded["fmt"].as_str().unwrap(), "{context}");
        assert_eq!(
            object.auth_data,
            unhex(&vector["authData_hex"]),
            "{context}"
        );
        if decoded["canonical_ctap2_encoding_of_attestationObject"] == true {
            assert_eq!(
                object.to_cbor().unwrap(),
                bytes,
                "{context}: re-encoding differs"
            );
        }
        let data = object.parsed_auth_data().unwrap();
        check_auth_data(&data, &decoded["authData"], context);
        if let Some(rp_id) = vector["rp_id"].as_str() {
            assert!(data.check_rp_id(rp_id), "{context}");
        }

        let client_data_hash = vector["client_data_json"]
            .as_str()
            .map(|j| sha256(j.as_bytes()));
        match object.fmt.as_str() {
            "fido-u2f" => {
                // The same registration, as the U2F response it came from, converts to a
                // byte-identical attestation object.
                let registration = Registration::parse(&u2f_response_from(&object)).unwrap();
                let rebuilt = registration
                    .to_attestation_object(data.rp_id_hash())
                    .unwrap();
                assert_eq!(rebuilt, object, "{context}");
                assert_eq!(rebuilt.to_cbor().unwrap(), bytes, "{context}");
                verify_fido_u2f(&rebuilt, &client_data_hash.unwrap());
                verified += 1;
            }
            "packed" => verified += usize::from(verify_packed(&object, &client_data_hash.unwrap())),
            "none" => assert_eq!(object, AttestationObject::none(object.auth_data.clone())),
            other => panic!("{context}: unexpected format {other}"),
        }
        *formats.entry(object.fmt.clone()).or_default() += 1;
    }
    eprintln!("attestation objects by format: {formats:?}, signatures verified: {verified}");
    assert!(formats.get("fido-u2f").copied().unwrap_or(0) >= 5);
    assert!(formats.get("packed").copied().unwrap_or(0) >= 10);
    assert!(formats.get("none").copied().unwrap_or(0) >= 1);
    assert!(verified >= 15);
}

#[test]
fn assertion_authenticator_data() {
    let Some(vectors) = vectors() else { return };
    // Credential keys from the registrations, by example name.
    let keys: BTreeMap<String, AttestationObject> = vectors
        .iter()
        .filter(|(_, v)| kind(v).starts_with("registration attestationObject"))
        .map(|(_, v)| {
            let base = name(v).trim_end_matches("-attestation").to_owned();
            (
                base,
                AttestationObject::from_cbor(&unhex(&v["hex"])).unwrap(),
            )
        })
        .collect();
    let (mut parsed, mut verified) = (0, 0);
    for (_, vector) in &vectors {
        if !kind(vector).starts_with("assertion authenticatorData") {
            continue;
        }
        let context = name(vector);
        let data = AuthenticatorData::parse(&unhex(&vector["hex"])).unwrap();
        check_auth_data(&data, &vector["decoded"]["authData"], context);
        parsed += 1;

        let registration = &keys[context.trim_end_matches("-assertion")];
        let registered = registration.parsed_auth_data().unwrap();
        let credential = registered.attested_credential_data().unwrap();
        assert_eq!(
            credential.credential_id(),
            unhex(&vector["credential_id_hex"]),
            "{context}"
        );
        assert_eq!(registered.rp_id_hash(), data.rp_id_hash(), "{context}");
        if credential.algorithm() == Some(CoseAlgorithm::Es256) {
            let key =
                p256::ecdsa::VerifyingKey::from(credential.cose_key().unwrap().to_p256().unwrap());
            let mut signed = data.as_bytes().to_vec();
            signed.extend_from_slice(&unhex(&vector["decoded"]["clientDataHash"]));
            verify(&key, &signed, &unhex(&vector["signature_hex"]));
            verified += 1;
        }
    }
    eprintln!("assertion authData parsed: {parsed}, ES256 signatures verified: {verified}");
    assert!(parsed >= 20);
    assert!(verified >= 10);
}

#[test]
fn make_credential_responses() {
    let Some(vectors) = vectors() else { return };
    let mut count = 0;
    for (_, vector) in &vectors {
        if !kind(vector).starts_with("authenticatorMakeCredential response") {
            continue;
        }
        let context = name(vector);
        let mut body = message(vector);
        let decoded = if vector["hex"].is_string() {
            &vector["decoded"]["cbor"]
        } else {
            // A CTAPHID_CBOR payload: status byte first.
            assert_eq!(body.remove(0), 0x00, "{context}");
            &vector["decoded"]["messages"][0]["ctap2"]["cbor"]
        };
        let mut response = IntMap::from_slice(&body, "makeCredential").unwrap();
        let fmt = conv::text(response.take(0x01).unwrap(), "fmt").unwrap();
        let auth_data = conv::bytes(response.take(0x02).unwrap(), "authData").unwrap();
        let object =
            AttestationObject::from_make_credential(fmt, auth_data, response.take(0x03)).unwrap();
        assert_eq!(object.fmt, decoded["fmt"].as_str().unwrap(), "{context}");
        check_auth_data(
            &object.parsed_auth_data().unwrap(),
            &decoded["authData"],
            context,
        );
        // The object survives its own encoding.
        let encoded = object.to_cbor().unwrap();
        assert_eq!(
            AttestationObject::from_cbor(&encoded).unwrap(),
            object,
            "{context}"
        );

        let client_data_hash = vector["client_data_hash"]
            .as_str()
            .or(vector["decoded"]["expected_from_regress_c"]["cdh"].as_str());
        if let Some(hash) = client_data_hash {
            assert!(
                verify_packed(&object, &hex::decode(hash).unwrap()),
                "{context}"
            );
        }
        count += 1;
    }
    eprintln!("makeCredential responses converted: {count}");
    assert!(count >= 5);
}

/// `webauthnrs-makecredential-ctap21-spec-sample` frames authData with the non-minimal
/// length `59 00a2`. Decoding is lenient (see `webauthn::attestation`): it is accepted, and
/// the attestation object re-encodes it canonically as `58 a2` around the same bytes.
#[test]
fn non_minimal_authdata_length_is_accepted() {
    let Some(vectors) = vectors() else { return };
    let (_, vector) = vectors
        .iter()
        .find(|(_, v)| name(v) == "webauthnrs-makecredential-ctap21-spec-sample")
        .expect("vector present");
    let body = unhex(&vector["hex"]);
    let framing = body
        .windows(4)
        .position(|w| w == [0x02, 0x59, 0x00, 0xa2])
        .unwrap();
    let mut response = IntMap::from_slice(&body, "makeCredential").unwrap();
    let fmt = conv::text(response.take(0x01).unwrap(), "fmt").unwrap();
    let auth_data = conv::bytes(response.take(0x02).unwrap(), "authData").unwrap();
    assert_eq!(auth_data[..], body[framing + 4..framing + 4 + 0xa2]);
    let object =
        AttestationObject::from_make_credential(fmt, auth_data.clone(), response.take(0x03))
            .unwrap();
    let data = object.parsed_auth_data().unwrap();
    assert_eq!(data.flags().bits(), 0xc5);
    assert_eq!(data.sign_count(), 0x55);
    assert_eq!(
        data.extensions().unwrap().hmac_secret(),
        Ok(Some(HmacSecret::Enabled(true)))
    );
    let encoded = object.to_cbor().unwrap();
    let mut canonical_framing = b"authData".to_vec();
    canonical_framing.extend_from_slice(&[0x58, 0xa2]);
    canonical_framing.extend_from_slice(&auth_data);
    assert!(
        encoded
            .windows(canonical_framing.len())
            .any(|w| w == canonical_framing)
    );
}

#[test]
fn get_assertion_responses() {
    let Some(vectors) = vectors() else { return };
    let mut count = 0;
    for (_, vector) in &vectors {
        if !kind(vector).starts_with("authenticatorGetAssertion response") {
            continue;
        }
        let context = name(vector);
        let mut body = message(vector);
        let decoded = if vector["hex"].is_string() {
            &vector["decoded"]["cbor"]
        } else {
            assert_eq!(body.remove(0), 0x00, "{context}");
            &vector["decoded"]["messages"][0]["ctap2"]["cbor"]
        };
        let mut response = IntMap::from_slice(&body, "getAssertion").unwrap();
        let auth_data = conv::bytes(response.take(0x02).unwrap(), "authData").unwrap();
        check_auth_data(
            &AuthenticatorData::parse(&auth_data).unwrap(),
            &decoded["authData"],
            context,
        );
        count += 1;
    }
    eprintln!("getAssertion authData parsed: {count}");
    assert!(count >= 2);
}

#[test]
fn u2f_registrations() {
    let Some(vectors) = vectors() else { return };
    let (mut count, mut verified) = (0, 0);
    for (_, vector) in &vectors {
        if !kind(vector).starts_with("U2F_REGISTER response") {
            continue;
        }
        let context = name(vector);
        let bytes = message(vector);
        let registration = if vector["transport"]
            .as_str()
            .unwrap()
            .contains("SW not included")
        {
            Registration::parse(&bytes).unwrap()
        } else {
            Registration::from_response(&bytes).unwrap()
        };
        let decoded = if vector["decoded"]["messages"].is_array() {
            &vector["decoded"]["messages"][0]["u2f_register"]
        } else {
            &vector["decoded"]
        };
        assert_eq!(
            registration.public_key()[..],
            unhex(&decoded["user_public_key"])[..]
        );
        assert_eq!(
            registration.key_handle(),
            unhex(&decoded["key_handle"]),
            "{context}"
        );
        assert_eq!(
            registration.attestation_certificate().len() as u64,
            decoded["attestation_certificate_len"].as_u64().unwrap(),
            "{context}"
        );
        assert_eq!(
            registration.signature(),
            unhex(&decoded["signature"]),
            "{context}"
        );

        // Without the request parameters, a stand-in application parameter still exercises
        // the conversion; the signature can only be checked with the real ones.
        let application: [u8; 32] = match vector["app_param"].as_str() {
            Some(app) => hex::decode(app).unwrap().try_into().unwrap(),
            None => sha256(b"example.com"),
        };
        let object = registration.to_attestation_object(&application).unwrap();
        assert_eq!(object.fmt, "fido-u2f");
        assert_eq!(
            AttestationObject::from_cbor(&object.to_cbor().unwrap()).unwrap(),
            object
        );
        let data = object.parsed_auth_data().unwrap();
        assert_eq!(data.flags().bits(), 0x41);
        assert_eq!(data.sign_count(), 0);
        let attested = data.attested_credential_data().unwrap();
        assert_eq!(attested.aaguid(), &[0; 16]);
        assert_eq!(attested.credential_id(), registration.key_handle());
        assert_eq!(
            attested.cose_key().unwrap().to_p256().unwrap(),
            p256::PublicKey::from_sec1_bytes(registration.public_key()).unwrap()
        );
        if let Some(challenge) = vector["challenge_param"].as_str() {
            let challenge: [u8; 32] = hex::decode(challenge).unwrap().try_into().unwrap();
            let key = certificate_key(registration.attestation_certificate());
            verify(
                &key,
                &registration.signed_data(&application, &challenge),
                registration.signature(),
            );
            verify_fido_u2f(&object, &challenge);
            verified += 1;
        }
        count += 1;
    }
    eprintln!("U2F registrations parsed: {count}, signatures verified: {verified}");
    assert!(count >= 3);
    assert!(verified >= 2);
}

#[test]
fn u2f_authentications_and_status_words() {
    let Some(vectors) = vectors() else { return };
    let (mut authentications, mut statuses) = (0, 0);
    for (_, vector) in &vectors {
        let context = name(vector);
        if kind(vector).starts_with("U2F_AUTHENTICATE response") {
            let auth = Authentication::from_response(&message(vector)).unwrap();
            let decoded = if vector["decoded"]["messages"].is_array() {
                &vector["decoded"]["messages"][0]["u2f_authenticate"]
            } else {
                &vector["decoded"]
            };
            assert_eq!(
                u64::from(auth.user_presence_byte()),
                decoded["user_presence"].as_u64().unwrap()
            );
            assert_eq!(
                u64::from(auth.counter()),
                decoded["counter"].as_u64().unwrap(),
                "{context}"
            );
            assert_eq!(auth.signature(), unhex(&decoded["signature"]), "{context}");
            if let (Some(app), Some(challenge), Some(key)) = (
                vector["app_param"].as_str(),
                vector["challenge_param"].as_str(),
                vector["user_public_key"].as_str(),
            ) {
                let app: [u8; 32] = hex::decode(app).unwrap().try_into().unwrap();
                let challenge: [u8; 32] = hex::decode(challenge).unwrap().try_into().unwrap();
                let key = p256::ecdsa::VerifyingKey::from_sec1_bytes(&hex::decode(key).unwrap());
                verify(
                    &key.unwrap(),
                    &auth.signed_data(&app, &challenge),
                    auth.signature(),
                );
            }
            authentications += 1;
        } else if kind(vector).starts_with("U2F response APDU: SW 6985") {
            let response = message(vector);
            assert_eq!(
                u2f::success_data(&response),
                Err(U2fError::Status(StatusWord::ConditionsNotSatisfied))
            );
            assert_eq!(
                u2f::check_only_outcome(&response),
                Ok(KeyHandleCheck::Known)
            );
            assert_eq!(
                Registration::from_response(&response),
                Err(U2fError::Status(StatusWord::ConditionsNotSatisfied))
            );
            statuses += 1;
        }
    }
    eprintln!("U2F authentications parsed: {authentications}, status-only responses: {statuses}");
    assert!(authentications >= 2);
    assert!(statuses >= 1);
}
