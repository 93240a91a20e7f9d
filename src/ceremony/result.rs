//! What a browser hands the relying party after `navigator.credentials.create()`, built from
//! the key's attestation (WebAuthn L3 §5.1.3 steps 20–21, `AuthenticatorAttestationResponse`).

use ctap::command::get_info;
use ctap::webauthn::attestation::{AttestationObject, format};

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
    let parsed = attestation
        .parsed_auth_data()
        .map_err(|e| bad(BadResponse::AuthData(e.to_string())))?;
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
    let key = credential
        .cose_key()
        .map_err(|e| bad(BadResponse::PublicKey(e.to_string())))?;
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
