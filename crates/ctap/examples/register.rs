//! Registers a passkey on a virtual security key running the real Nitrokey 3 / Solo 2 firmware,
//! using only the protocol core, and has webauthn-rs verify it as the relying party would:
//! getInfo, setPIN, a PIN token with the makeCredential permission, makeCredential with a
//! resident key and user verification, then packed attestation checked up to the virtual
//! keys' attestation CA.
//!
//! Run with `cargo run -p ctap --example register` (or `bash scripts/demo`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stdout)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::time::Instant;

use ctap::command::client_pin::Permissions;
use ctap::command::get_info::GetInfo;
use ctap::command::make_credential::{MakeCredential, Options, PinUvAuth};
use ctap::pin_uv::PinUvAuthProtocol;
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::client_data::{ClientDataType, CollectedClientData};
use support::{HidKey, ORIGIN, RP_ID, RelyingPartyUnderTest, credential, request};
use virtkey::Config;
use webauthn_rs::prelude::Uuid;

fn main() {
    let started = Instant::now();
    let mut key = HidKey::start(Config::default());
    let info = key.cbor(&GetInfo).unwrap();
    println!(
        "key      {:?}, AAGUID {}, PIN/UV protocols {:?}",
        info.versions,
        hex(&info.aaguid),
        info.pin_uv_auth_protocols.as_deref().unwrap_or_default()
    );

    key.set_pin("1234");
    println!("setPIN   ok, {} retries", key.pin_retries());

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
    let client_data = CollectedClientData::new(
        ClientDataType::Create,
        ccr.public_key.challenge.to_vec(),
        ORIGIN,
    );

    let token = key
        .token(PinUvAuthProtocol::Two, "1234", Permissions::MAKE_CREDENTIAL)
        .unwrap();
    println!("token    {:?} for rpId {RP_ID}", token);

    let mut req = request(client_data.hash(), ccr.public_key.user.id.as_ref());
    req.options = Options {
        rk: Some(true),
        ..Options::default()
    };
    req.pin_uv_auth = Some(PinUvAuth {
        param: token.authenticate(&client_data.hash()),
        protocol: 2,
    });
    let response = key.cbor(&MakeCredential::new(req).unwrap()).unwrap();
    let object = AttestationObject::from_response(response).unwrap();
    let auth_data = object.parsed_auth_data().unwrap();
    let credential_id = auth_data
        .attested_credential_data()
        .unwrap()
        .credential_id();
    println!(
        "created  fmt {}, flags {:?}, credential {}",
        object.fmt,
        auth_data.flags(),
        hex(credential_id)
    );

    let passkey = rp
        .webauthn
        .finish_attested_passkey_registration(
            &credential(client_data.to_json_bytes(), &object),
            &state,
        )
        .expect("webauthn-rs accepts the registration");
    println!(
        "verified by webauthn-rs: credential {}, attestation chain to the virtkey CA ({} ms)",
        hex(passkey.cred_id().as_ref()),
        started.elapsed().as_millis()
    );
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
