#![no_main]
//! Authenticator data and attestation objects: the structures a key signs and the daemon
//! forwards to the relying party.
//!
//! Properties: a parse keeps the input bytes and reads the header fields from their fixed
//! offsets; AT and ED announce exactly the parts that were found; the credential public key
//! is the exact slice after the credential id; authenticator data rebuilt from its parts
//! (when the key was canonical and nothing follows it) is the input again; an attestation
//! object's canonical encoding is a fixed point.

use ctap::cbor;
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::{AuthenticatorData, HEADER_LEN, MAX_CREDENTIAL_ID_LEN};
use libfuzzer_sys::fuzz_target;

fn check_auth_data(data: &[u8]) {
    let Ok(parsed) = AuthenticatorData::parse(data) else {
        return;
    };
    assert_eq!(parsed.as_bytes(), data);
    assert_eq!(parsed.rp_id_hash()[..], data[..32]);
    assert_eq!(parsed.flags().bits(), data[32]);
    assert_eq!(parsed.sign_count().to_be_bytes()[..], data[33..HEADER_LEN]);
    let flags = parsed.flags();
    assert!(!flags.backed_up() || flags.backup_eligible());
    assert_eq!(
        flags.has_attested_credential_data(),
        parsed.attested_credential_data().is_some()
    );
    assert_eq!(flags.has_extension_data(), parsed.extensions().is_some());

    if let Some(credential) = parsed.attested_credential_data() {
        let id = credential.credential_id();
        assert!((1..=MAX_CREDENTIAL_ID_LEN).contains(&id.len()));
        let id_at = HEADER_LEN + 18;
        assert_eq!(&data[HEADER_LEN..id_at - 2], credential.aaguid());
        assert_eq!(&data[id_at..id_at + id.len()], id);
        let key_bytes = credential.credential_public_key_bytes();
        let key_at = id_at + id.len();
        assert_eq!(&data[key_at..key_at + key_bytes.len()], key_bytes);
        // The kept bytes decode, alone, to the kept value.
        let decoded = cbor::from_slice(key_bytes).expect("credential key bytes decode alone");
        assert_eq!(
            cbor::to_canonical_vec(&decoded).ok(),
            cbor::to_canonical_vec(credential.credential_public_key()).ok()
        );
        let _ = credential.algorithm();
        if let Ok(key) = credential.cose_key() {
            let _ = key.to_spki_der();
            // Rebuilding gives the input back when the key was canonical, carried only the
            // members CoseKey keeps, and no extensions follow.
            if !flags.has_extension_data()
                && cbor::to_canonical_vec(&key.to_value()).ok().as_deref() == Some(key_bytes)
            {
                let rebuilt = AuthenticatorData::with_attested_credential(
                    *parsed.rp_id_hash(),
                    flags,
                    parsed.sign_count(),
                    *credential.aaguid(),
                    id,
                    &key,
                )
                .expect("parsed parts rebuild");
                assert_eq!(rebuilt, parsed);
            }
        }
    }
    if let Some(extensions) = parsed.extensions() {
        let _ = extensions.cred_protect();
        let _ = extensions.hmac_secret();
        let _ = extensions.cred_blob();
        let _ = extensions.min_pin_length();
        let _ = extensions.get("credProps");
    }
}

fn check_attestation_object(data: &[u8]) {
    let Ok(object) = AttestationObject::from_cbor(data) else {
        return;
    };
    check_auth_data(&object.auth_data);
    if let Ok(parsed) = object.parsed_auth_data() {
        assert_eq!(parsed.as_bytes(), object.auth_data.as_slice());
    }
    let _ = object.statement_member("sig");
    let _ = object.statement_member("x5c");
    let Ok(canonical) = object.to_cbor() else {
        return;
    };
    // Canonical CBOR drops unknown members and uses the shortest heads: never longer.
    assert!(
        canonical.len() <= data.len(),
        "{} > {}",
        canonical.len(),
        data.len()
    );
    let again = AttestationObject::from_cbor(&canonical).expect("canonical form decodes");
    assert_eq!(again.fmt, object.fmt);
    assert_eq!(again.auth_data, object.auth_data);
    assert_eq!(again.to_cbor().ok(), Some(canonical));
}

fuzz_target!(|data: &[u8]| {
    check_auth_data(data);
    check_attestation_object(data);
});
