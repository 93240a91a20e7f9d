//! The protocol core against a real authenticator: the Trussed `fido-authenticator` firmware
//! (Nitrokey 3 / Solo 2) running in-process behind `virtkey`'s 64-byte report pipe and its
//! ISO 7816 front end, with every attestation checked by webauthn-rs as the relying party.
//!
//! The drivers below are the minimum IO loop around the sans-IO core: write the reports a
//! `Transaction` (or APDUs an `Exchange`) gives, feed back what the key answers. The daemon's
//! device layer does the same with deadlines and cancellation on tokio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Instant;
use support::*;

use ctap::command::client_pin::Permissions;
use ctap::command::get_info::{GetInfo, Version};
use ctap::command::make_credential::{
    MakeCredential, Options, PinUvAuth, PublicKeyCredentialDescriptor,
};
use ctap::command::{ResponseError, encode_request};
use ctap::ctaphid::{Command as HidCommand, KeepaliveStatus};
use ctap::iso7816::{AppletVersion, Framing};
use ctap::pin_uv::PinUvAuthProtocol;
use ctap::status::StatusCode;
use ctap::u2f::{self, ApduEncoding, RegisterRequest, Registration};
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::Flags;
use ctap::webauthn::client_data::{ClientDataType, CollectedClientData};
use sha2::{Digest, Sha256};
use virtkey::{Config, TouchPolicy, VirtKey};
use webauthn_rs::prelude::Uuid;

#[test]
fn get_info_describes_the_firmware() {
    let mut key = HidKey::start(Config::default());
    let info = key.cbor(&GetInfo).unwrap();
    assert!(info.supports(Version::Fido2_1));
    assert!(info.supports(Version::U2fV2));
    assert_eq!(info.aaguid, key.key.aaguid());
    assert_eq!(info.preferred_pin_uv_auth_protocol(&[1, 2]), Some(2));
    assert!(info.pin_uv_auth_token());
    assert!(!info.client_pin().is_on(), "no PIN set yet");
    assert!(info.max_msg_size() >= 1024);
}

#[test]
fn pin_lifecycle_and_wrong_pin() {
    let mut key = HidKey::start(Config::default());
    key.set_pin("1234");
    assert!(key.cbor(&GetInfo).unwrap().client_pin().is_on());
    assert_eq!(key.pin_retries(), 8);

    let wrong = key.token(PinUvAuthProtocol::Two, "9999", Permissions::MAKE_CREDENTIAL);
    assert!(matches!(
        wrong,
        Err(ResponseError::Status(StatusCode::PinInvalid))
    ));
    assert_eq!(key.pin_retries(), 7);

    // Both protocols give a usable token, and a right PIN restores the retry counter.
    for protocol in [PinUvAuthProtocol::One, PinUvAuthProtocol::Two] {
        let token = key
            .token(protocol, "1234", Permissions::MAKE_CREDENTIAL)
            .unwrap();
        assert_eq!(token.protocol(), protocol);
        assert_eq!(token.expose_secret().len(), 32);
    }
    assert_eq!(key.pin_retries(), 8);
}

#[test]
fn resident_credential_with_pin_is_a_packed_passkey_webauthn_rs_accepts() {
    let mut key = HidKey::start(Config {
        pin: Some("1234".to_owned()),
        ..Config::default()
    });
    let rp = RelyingPartyUnderTest::new(&key.key);
    let (ccr, state) = rp
        .webauthn
        .start_attested_passkey_registration(
            Uuid::new_v4(),
            "alice",
            "Alice",
            None,
            rp.ca_list(),
            None,
        )
        .unwrap();
    let options = ccr.public_key;
    let client_data =
        CollectedClientData::new(ClientDataType::Create, options.challenge.to_vec(), ORIGIN);

    // Without a token the firmware insists on one (a PIN is set and rk is requested).
    let mut req = request(client_data.hash(), options.user.id.as_ref());
    req.options = Options {
        rk: Some(true),
        ..Options::default()
    };
    let refused = key.cbor(&MakeCredential::new(req.clone()).unwrap());
    assert_eq!(
        refused.unwrap_err(),
        ResponseError::Status(StatusCode::PuatRequired)
    );

    let token = key
        .token(PinUvAuthProtocol::Two, "1234", Permissions::MAKE_CREDENTIAL)
        .unwrap();
    req.pin_uv_auth = Some(PinUvAuth {
        param: token.authenticate(&client_data.hash()),
        protocol: 2,
    });
    let response = key
        .cbor(&MakeCredential::new(req.clone()).unwrap())
        .unwrap();
    assert_eq!(response.fmt, "packed");
    let object = AttestationObject::from_response(response).unwrap();
    let auth_data = object.parsed_auth_data().unwrap();
    assert!(
        auth_data
            .flags()
            .contains(Flags::UP | Flags::UV | Flags::AT)
    );
    assert!(auth_data.check_rp_id(RP_ID));
    let credential_id = auth_data
        .attested_credential_data()
        .unwrap()
        .credential_id()
        .to_vec();

    let passkey = rp
        .webauthn
        .finish_attested_passkey_registration(
            &credential(client_data.to_json_bytes(), &object),
            &state,
        )
        .expect("webauthn-rs verifies the packed attestation and its certificate chain");
    assert_eq!(
        AsRef::<[u8]>::as_ref(passkey.cred_id()),
        credential_id.as_slice()
    );

    // The same credential on the exclude list: the key refuses to make another one.
    let token = key
        .token(PinUvAuthProtocol::Two, "1234", Permissions::MAKE_CREDENTIAL)
        .unwrap();
    req.exclude_list = vec![PublicKeyCredentialDescriptor::public_key(credential_id)];
    req.pin_uv_auth = Some(PinUvAuth {
        param: token.authenticate(&client_data.hash()),
        protocol: 2,
    });
    let excluded = key.cbor(&MakeCredential::new(req).unwrap());
    assert_eq!(
        excluded.unwrap_err(),
        ResponseError::Status(StatusCode::CredentialExcluded)
    );
}

#[test]
fn keepalives_report_up_needed_and_cancel_ends_the_request() {
    let mut key = HidKey::start(Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    });
    let hash = CollectedClientData::new(ClientDataType::Create, vec![7; 32], ORIGIN).hash();
    let payload = encode_request(&MakeCredential::new(request(hash, b"user")).unwrap()).unwrap();
    let mut up_needed = 0;
    let response = key.transact(HidCommand::Cbor, &payload, |status| {
        if status == KeepaliveStatus::UpNeeded {
            up_needed += 1;
        }
        up_needed >= 2
    });
    assert_eq!(response, [u8::from(StatusCode::KeepaliveCancel)]);
    assert!(up_needed >= 2, "saw {:?}", key.keepalives);
    // 0x2D, not the firmware's own presence timeout (0x2F): the answer came from CANCEL.
    // The channel stays usable.
    assert!(key.cbor(&GetInfo).is_ok());
}

#[test]
fn u2f_registration_through_ctaphid_msg_is_a_fido_u2f_attestation() {
    let mut key = HidKey::start(Config::default());
    let rp = RelyingPartyUnderTest::new(&key.key);
    let (ccr, state) = rp
        .webauthn
        .start_securitykey_registration(
            Uuid::new_v4(),
            "bob",
            "Bob",
            None,
            Some(rp.blanket_ca_list()),
            None,
        )
        .unwrap();
    let client_data = CollectedClientData::new(
        ClientDataType::Create,
        ccr.public_key.challenge.to_vec(),
        ORIGIN,
    );
    let apdu =
        RegisterRequest::for_webauthn(client_data.hash(), RP_ID).to_apdu(ApduEncoding::Extended);
    // U2F has no keepalive: SW 6985 means "touch needed", so the request is repeated
    // (FIDO U2F Raw Message Formats §3.2.1) until the key answers 9000.
    let deadline = Instant::now() + SILENCE;
    let registration = loop {
        let response = key.transact(HidCommand::Msg, &apdu, |_| false);
        match Registration::from_response(&response) {
            Ok(registration) => break registration,
            Err(u2f::U2fError::Status(u2f::StatusWord::ConditionsNotSatisfied))
                if Instant::now() < deadline => {}
            Err(e) => panic!("U2F register failed: {e}"),
        }
    };
    let application: [u8; 32] = Sha256::digest(RP_ID).into();
    let object = registration.to_attestation_object(&application).unwrap();
    assert_eq!(object.fmt, "fido-u2f");
    rp.webauthn
        .finish_securitykey_registration(&credential(client_data.to_json_bytes(), &object), &state)
        .expect("webauthn-rs verifies the fido-u2f attestation");
}

#[test]
fn get_info_and_make_credential_over_the_nfc_front_end() {
    for framing in [Framing::Extended, Framing::ShortChained] {
        let nfc = NfcKey {
            key: VirtKey::start(Config::default()).unwrap(),
            framing,
        };
        assert!(matches!(
            nfc.select(),
            AppletVersion::U2fV2 | AppletVersion::Fido20
        ));
        let info = nfc.cbor(&GetInfo).unwrap();
        assert_eq!(info.aaguid, nfc.key.aaguid());

        // A user entity long enough that the short framing has to chain the request.
        let hash = CollectedClientData::new(ClientDataType::Create, vec![1; 32], ORIGIN).hash();
        let mut req = request(hash, &[0x55; 64]);
        req.user.display_name = Some("A".repeat(200));
        let response = nfc.cbor(&MakeCredential::new(req).unwrap()).unwrap();
        let object = AttestationObject::from_response(response).unwrap();
        let auth_data = object.parsed_auth_data().unwrap();
        assert!(auth_data.check_rp_id(RP_ID));
        assert_eq!(
            auth_data.attested_credential_data().unwrap().aaguid(),
            &nfc.key.aaguid()
        );
    }
}
