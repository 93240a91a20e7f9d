#![no_main]
//! U2F response APDUs (CTAP1 over CTAPHID_MSG or NFC): REGISTER, the check-only AUTHENTICATE
//! and the status word split.
//!
//! Properties: a registration is the exact concatenation of its parts (so nothing is skipped
//! or read twice), its public key is a valid P-256 point with a SubjectPublicKeyInfo, and the
//! `fido-u2f` attestation object built from it carries the key handle, the key, the
//! certificate and the signature unchanged in a canonical encoding that reads back the same.

use ctap::cbor;
use ctap::cose::CoseKey;
use ctap::u2f::{self, Authentication, PUBLIC_KEY_LEN, Registration};
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::Flags;
use libfuzzer_sys::fuzz_target;

const APPLICATION: [u8; 32] = [0xa5; 32];
const CHALLENGE: [u8; 32] = [0x5a; 32];

fn check_registration(registration: &Registration, data: &[u8]) {
    let mut rebuilt = vec![0x05];
    rebuilt.extend_from_slice(registration.public_key());
    rebuilt.push(u8::try_from(registration.key_handle().len()).expect("a one-byte length"));
    rebuilt.extend_from_slice(registration.key_handle());
    rebuilt.extend_from_slice(registration.attestation_certificate());
    rebuilt.extend_from_slice(registration.signature());
    assert_eq!(rebuilt, data);

    let key = registration.cose_key();
    let point = key.to_p256().expect("the parser validated the point");
    assert_eq!(
        CoseKey::from_p256(&point, -7).to_spki_der(),
        key.to_spki_der()
    );
    assert!(key.to_spki_der().is_ok());

    let signed = registration.signed_data(&APPLICATION, &CHALLENGE);
    assert_eq!(
        signed.len(),
        1 + 64 + registration.key_handle().len() + PUBLIC_KEY_LEN
    );

    let object = registration
        .to_attestation_object(&APPLICATION)
        .expect("every registration converts");
    assert_eq!(object.fmt, "fido-u2f");
    let auth_data = object.parsed_auth_data().expect("built authData parses");
    assert_eq!(auth_data.rp_id_hash(), &APPLICATION);
    assert_eq!(auth_data.flags(), Flags::UP | Flags::AT);
    assert_eq!(auth_data.sign_count(), 0);
    let credential = auth_data.attested_credential_data().expect("AT is set");
    assert_eq!(credential.aaguid(), &[0; 16]);
    assert_eq!(credential.credential_id(), registration.key_handle());
    assert_eq!(credential.cose_key().expect("an EC2 key"), key);
    assert_eq!(
        object.statement_member("sig"),
        Some(&cbor::Value::Bytes(registration.signature().to_vec()))
    );
    assert_eq!(
        object.statement_member("x5c"),
        Some(&cbor::Value::Array(vec![cbor::Value::Bytes(
            registration.attestation_certificate().to_vec()
        )]))
    );
    let encoded = object.to_cbor().expect("encodes");
    assert_eq!(
        AttestationObject::from_cbor(&encoded).expect("decodes"),
        object
    );
}

fuzz_target!(|data: &[u8]| {
    // The data of a response (status word already removed) ...
    if let Ok(registration) = Registration::parse(data) {
        check_registration(&registration, data);
    }
    if let Ok(authentication) = Authentication::parse(data) {
        assert_eq!(authentication.user_presence_byte(), data[0]);
        assert_eq!(authentication.counter().to_be_bytes()[..], data[1..5]);
        assert_eq!(authentication.signature(), &data[5..]);
        assert_eq!(
            authentication.signed_data(&APPLICATION, &CHALLENGE).len(),
            32 + 1 + 4 + 32
        );
    }
    // ... and a whole response APDU.
    if let Ok((body, status)) = u2f::split_response(data) {
        assert_eq!(body.len() + 2, data.len());
        let _ = status;
    }
    let _ = u2f::check_only_outcome(data);
    let _ = Authentication::from_response(data);
    if let Ok(registration) = Registration::from_response(data) {
        check_registration(&registration, &data[..data.len() - 2]);
    }
});
