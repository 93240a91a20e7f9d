//! Drivers shared by the peer tests and the example: the minimum IO loop around the sans-IO
//! core that talks to a `virtkey` (the Trussed firmware) over CTAPHID reports or APDUs, and
//! webauthn-rs set up as the relying party that trusts the virtual keys' attestation CA.
//!
//! The daemon's device layer does the same with deadlines and cancellation on tokio.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::time::Duration;

use ctap::command::client_pin::{
    GetKeyAgreement, GetPinRetries, KeyAgreement, Permissions, PinSession,
};
use ctap::command::make_credential::{self, PublicKeyCredentialParameters, RelyingParty, User};
use ctap::command::{Command, ResponseError, decode_response, encode_request};
use ctap::ctaphid::{
    self, Cid, Command as HidCommand, KeepaliveStatus, PushOutcome, Reassembler, Transaction,
    TransactionEvent,
};
use ctap::iso7816::{self, AppletVersion, Exchange, ExchangeEvent, Framing, ResponseApdu};
use ctap::pin_uv::{Pin, PinUvAuthProtocol, PinUvAuthToken};
use ctap::webauthn::attestation::AttestationObject;
use rand::rngs::OsRng;
use virtkey::{Config, VirtKey};
use webauthn_rs::prelude::{
    AttestationCaListBuilder, RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

pub const RP_ID: &str = "example.org";
pub const ORIGIN: &str = "https://example.org";
/// Long enough for the firmware's P-256 work in a debug build on a loaded machine; the key
/// sends a KEEPALIVE every 100 ms while it works, so a silent key is a failure, not slowness.
pub const SILENCE: Duration = Duration::from_secs(10);

/// A virtual key driven over CTAPHID.
pub struct HidKey {
    pub key: VirtKey,
    cid: Cid,
    /// Every KEEPALIVE status seen, in order.
    pub keepalives: Vec<KeepaliveStatus>,
}

impl HidKey {
    pub fn start(config: Config) -> Self {
        let key = VirtKey::start(config).unwrap();
        let cid = Self::init(&key);
        Self {
            key,
            cid,
            keepalives: Vec::new(),
        }
    }

    /// CTAPHID_INIT on the broadcast channel with a fresh nonce (CTAP 2.2 §11.2.9.1.3).
    pub fn init(key: &VirtKey) -> Cid {
        let nonce: [u8; 8] = rand::random();
        key.write_report(&ctaphid::init_request(&nonce)).unwrap();
        let mut reassembler = Reassembler::new(Cid::BROADCAST, ctaphid::INIT_DATA_LEN);
        loop {
            let report = key.read_report(SILENCE).unwrap().expect("INIT answered");
            if let PushOutcome::Complete(message) = reassembler.push(&report).unwrap() {
                match ctaphid::parse_init_response(&message.payload, &nonce) {
                    Ok(init) => {
                        assert!(init.capabilities.cbor());
                        return init.cid;
                    }
                    Err(ctaphid::InitResponseError::NonceMismatch) => continue,
                    Err(e) => panic!("bad INIT response: {e}"),
                }
            }
        }
    }

    /// One transaction; `on_keepalive` runs for each KEEPALIVE and may ask to cancel.
    pub fn transact(
        &mut self,
        cmd: HidCommand,
        payload: &[u8],
        mut on_keepalive: impl FnMut(KeepaliveStatus) -> bool,
    ) -> Vec<u8> {
        let mut transaction =
            Transaction::new(self.cid, cmd, payload, virtkey::MAX_MSG_SIZE).unwrap();
        for report in transaction.reports() {
            self.key.write_report(report).unwrap();
        }
        let mut cancelled = false;
        loop {
            let report = self
                .key
                .read_report(SILENCE)
                .unwrap()
                .expect("key went silent");
            match transaction.on_report(&report).unwrap() {
                TransactionEvent::Response(payload) => return payload,
                TransactionEvent::Keepalive(status) => {
                    self.keepalives.push(status);
                    if !cancelled && on_keepalive(status) {
                        self.key.write_report(&transaction.cancel_report()).unwrap();
                        cancelled = true;
                    }
                }
                TransactionEvent::Error(code) => panic!("CTAPHID_ERROR {code:?}"),
                TransactionEvent::ForeignFrame(_) | TransactionEvent::InProgress => {}
            }
        }
    }

    pub fn cbor<C: Command>(&mut self, command: &C) -> Result<C::Response, ResponseError> {
        let request = encode_request(command).unwrap();
        let response = self.transact(HidCommand::Cbor, &request, |_| false);
        decode_response::<C>(&response)
    }

    /// A fresh key agreement; keys regenerate theirs after a failed PIN attempt.
    pub fn pin_session(&mut self, protocol: PinUvAuthProtocol) -> PinSession {
        let key_agreement: KeyAgreement = self
            .cbor(&GetKeyAgreement {
                pin_uv_auth_protocol: u32::from(protocol.number()),
            })
            .unwrap();
        PinSession::new(protocol, &key_agreement, &mut OsRng).unwrap()
    }

    pub fn set_pin(&mut self, pin: &str) {
        let session = self.pin_session(PinUvAuthProtocol::Two);
        let request = session
            .set_pin(&Pin::new(pin).unwrap(), &mut OsRng)
            .unwrap();
        self.cbor(&request).unwrap();
    }

    pub fn token(
        &mut self,
        protocol: PinUvAuthProtocol,
        pin: &str,
        permissions: Permissions,
    ) -> Result<PinUvAuthToken, ResponseError> {
        self.token_for(RP_ID, protocol, pin, permissions)
    }

    /// A pinUvAuthToken scoped to `rp_id`, from a fresh key agreement.
    pub fn token_for(
        &mut self,
        rp_id: &str,
        protocol: PinUvAuthProtocol,
        pin: &str,
        permissions: Permissions,
    ) -> Result<PinUvAuthToken, ResponseError> {
        let session = self.pin_session(protocol);
        let request = session
            .get_token_using_pin(
                &Pin::new(pin).unwrap(),
                permissions,
                Some(rp_id.to_owned()),
                &mut OsRng,
            )
            .unwrap();
        let encrypted = self.cbor(&request)?;
        Ok(session.decrypt_token(&encrypted).unwrap())
    }

    pub fn pin_retries(&mut self) -> u32 {
        self.cbor(&GetPinRetries::default()).unwrap().pin_retries
    }
}

/// The relying party: webauthn-rs trusting exactly the virtual keys' attestation CA.
pub struct RelyingPartyUnderTest {
    pub webauthn: Webauthn,
    ca_der: Vec<u8>,
    aaguid: [u8; 16],
}

impl RelyingPartyUnderTest {
    pub fn new(key: &VirtKey) -> Self {
        let webauthn = WebauthnBuilder::new(RP_ID, &Url::parse(ORIGIN).unwrap())
            .unwrap()
            .build()
            .unwrap();
        Self {
            webauthn,
            ca_der: key.attestation_ca_der(),
            aaguid: key.aaguid(),
        }
    }

    pub fn ca_list(&self) -> webauthn_rs::prelude::AttestationCaList {
        let mut builder = AttestationCaListBuilder::new();
        builder
            .insert_device_der(
                &self.ca_der,
                Uuid::from_bytes(self.aaguid),
                "passkeyd virtkey".to_owned(),
                Default::default(),
            )
            .unwrap();
        builder.build()
    }

    /// Trust in everything the CA issued: fido-u2f attestation carries no AAGUID to match a
    /// device entry against, so relying parties trust U2F keys by their CA alone.
    pub fn blanket_ca_list(&self) -> webauthn_rs::prelude::AttestationCaList {
        use base64::Engine as _;
        let body = base64::engine::general_purpose::STANDARD.encode(&self.ca_der);
        let lines: Vec<&str> = body
            .as_bytes()
            .chunks(64)
            .map(|line| std::str::from_utf8(line).unwrap())
            .collect();
        let pem = format!(
            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
            lines.join("\n")
        );
        webauthn_rs::prelude::AttestationCaList::try_from(pem.as_bytes()).unwrap()
    }
}

/// What the browser would return, built from our clientDataJSON and attestation object.
pub fn credential(
    client_data_json: Vec<u8>,
    attestation_object: &AttestationObject,
) -> RegisterPublicKeyCredential {
    let auth_data = attestation_object.parsed_auth_data().unwrap();
    let id = auth_data
        .attested_credential_data()
        .unwrap()
        .credential_id()
        .to_vec();
    let json = serde_json::json!({
        "id": base64url(&id),
        "rawId": base64url(&id),
        "type": "public-key",
        "response": {
            "attestationObject": base64url(&attestation_object.to_cbor().unwrap()),
            "clientDataJSON": base64url(&client_data_json),
        },
    });
    serde_json::from_value(json).unwrap()
}

pub fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn es256() -> Vec<PublicKeyCredentialParameters> {
    vec![PublicKeyCredentialParameters::public_key(
        ctap::cose::alg::ES256,
    )]
}

pub fn request(client_data_hash: [u8; 32], user_id: &[u8]) -> make_credential::Request {
    make_credential::Request::new(
        client_data_hash,
        RelyingParty {
            id: RP_ID.to_owned(),
            name: Some("Example".to_owned()),
        },
        User {
            id: user_id.to_vec(),
            name: Some("alice".to_owned()),
            display_name: Some("Alice".to_owned()),
        },
        es256(),
    )
}

/// The NFC front end, driven with `iso7816::Exchange` in both framings.
pub struct NfcKey {
    pub key: VirtKey,
    pub framing: Framing,
}

impl NfcKey {
    pub fn transmit(&self, apdu: &[u8]) -> Vec<u8> {
        self.key.transmit_apdu(apdu, SILENCE).unwrap()
    }

    pub fn select(&self) -> AppletVersion {
        let apdu = iso7816::select_fido_applet()
            .encode(iso7816::ApduForm::Short)
            .unwrap();
        let response = ResponseApdu::parse(&self.transmit(&apdu)).unwrap();
        AppletVersion::from_select_response(&response).unwrap()
    }

    pub fn cbor<C: Command>(&self, command: &C) -> Result<C::Response, ResponseError> {
        let request = encode_request(command).unwrap();
        let mut exchange = Exchange::ctap(&request, self.framing, 8192).unwrap();
        let mut apdu = exchange.first_command().to_vec();
        loop {
            match exchange.on_response(&self.transmit(&apdu)).unwrap() {
                ExchangeEvent::Transmit(next) => apdu = next,
                ExchangeEvent::StatusUpdate { poll, .. } => apdu = poll,
                ExchangeEvent::Complete(response) => return decode_response::<C>(&response.data),
            }
        }
    }
}
