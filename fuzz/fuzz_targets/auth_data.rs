#![no_main]
//! Authenticator data, attestation objects and U2F registration responses: the structures a
//! key signs and the daemon forwards to the relying party.

use ctap::u2f::Registration;
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::AuthenticatorData;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(auth_data) = AuthenticatorData::parse(data) {
        if let Some(credential) = auth_data.attested_credential_data() {
            let _ = credential.cose_key().map(|key| key.to_spki_der());
        }
        if let Some(extensions) = auth_data.extensions() {
            let _ = extensions.cred_protect();
            let _ = extensions.hmac_secret();
        }
    }
    if let Ok(object) = AttestationObject::from_cbor(data) {
        let _ = object.parsed_auth_data();
    }
    if let Ok(registration) = Registration::parse(data) {
        let _ = registration.to_attestation_object(&[0; 32]);
    }
});
