//! The protocol core against a real authenticator: the Trussed `fido-authenticator` firmware
//! (Nitrokey 3 / Solo 2) running in-process behind `virtkey`'s 64-byte report pipe and its
//! ISO 7816 front end, with every attestation checked by webauthn-rs as the relying party.
//!
//! The drivers below are the minimum IO loop around the sans-IO core: write the reports a
//! `Transaction` (or APDUs an `Exchange`) gives, feed back what the key answers. The daemon's
//! device layer does the same with deadlines and cancellation on tokio.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use ctap::command::client_pin::{
    GetKeyAgreement, GetPinRetries, KeyAgreement, Permissions, PinSession,
};
use ctap::command::get_info::{GetInfo, Version};
use ctap::command::make_credential::{
    self, MakeCredential, Options, PinUvAuth, PublicKeyCredentialDescriptor,
    PublicKeyCredentialParameters, RelyingParty, User,
};
use ctap::command::{Command, ResponseError, decode_response, encode_request};
use ctap::ctaphid::{
    self, Cid, Command as HidCommand, KeepaliveStatus, PushOutcome, Reassembler, Transaction,
    TransactionEvent,
};
use ctap::iso7816::{self, AppletVersion, Exchange, ExchangeEvent, Framing, ResponseApdu};
use ctap::pin_uv::{Pin, PinUvAuthProtocol, PinUvAuthToken};
use ctap::status::StatusCode;
use ctap::u2f::{self, ApduEncoding, RegisterRequest, Registration};
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::Flags;
use ctap::webauthn::client_data::{ClientDataType, CollectedClientData};
use rand::rngs::OsRng;
use sha2::{Digest, Sha256};
use virtkey::{Config, TouchPolicy, VirtKey};
use webauthn_rs::prelude::{
    AttestationCaListBuilder, RegisterPublicKeyCredential, Url, Uuid, Webauthn, WebauthnBuilder,
};

const RP_ID: &str = "example.org";
const ORIGIN: &str = "https://example.org";
/// Long enough for the firmware's P-256 work in a debug build on a loaded machine; the key
/// sends a KEEPALIVE every 100 ms while it works, so a silent key is a failure, not slowness.
const SILENCE: Duration = Duration::from_secs(10);

/// A virtual key driven over CTAPHID.
struct HidKey {
    key: VirtKey,
    cid: Cid,
    /// Every KEEPALIVE status seen, in order.
    keepalives: Vec<KeepaliveStatus>,
}

impl HidKey {
    fn start(config: Config) -> Self {
        let key = VirtKey::start(config).unwrap();
        let cid = Self::init(&key);
        Self {
            key,
            cid,
            keepalives: Vec::new(),
        }
    }

    /// CTAPHID_INIT on the broadcast channel with a fresh nonce (CTAP 2.2 §11.2.9.1.3).
    fn init(key: &VirtKey) -> Cid {
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
    fn transact(
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

    fn cbor<C: Command>(&mut self, command: &C) -> Result<C::Response, ResponseError> {
        let request = encode_request(command).unwrap();
        let response = self.transact(HidCommand::Cbor, &request, |_| false);
        decode_response::<C>(&response)
    }

    /// A fresh key agreement; keys regenerate theirs after a failed PIN attempt.
    fn pin_session(&mut self, protocol: PinUvAuthProtocol) -> PinSession {
        let key_agreement: KeyAgreement = self
            .cbor(&GetKeyAgreement {
                pin_uv_auth_protocol: u32::from(protocol.number()),
            })
            .unwrap();
        PinSession::new(protocol, &key_agreement, &mut OsRng).unwrap()
    }

    fn set_pin(&mut self, pin: &str) {
        let session = self.pin_session(PinUvAuthProtocol::Two);
        let request = session
            .set_pin(&Pin::new(pin).unwrap(), &mut OsRng)
            .unwrap();
        self.cbor(&request).unwrap();
    }

    fn token(
        &mut self,
        protocol: PinUvAuthProtocol,
        pin: &str,
        permissions: Permissions,
    ) -> Result<PinUvAuthToken, ResponseError> {
        let session = self.pin_session(protocol);
        let request = session
            .get_token_using_pin(
                &Pin::new(pin).unwrap(),
                permissions,
                Some(RP_ID.to_owned()),
                &mut OsRng,
            )
            .unwrap();
        let encrypted = self.cbor(&request)?;
        Ok(session.decrypt_token(&encrypted).unwrap())
    }

    fn pin_retries(&mut self) -> u32 {
        self.cbor(&GetPinRetries::default()).unwrap().pin_retries
    }
}

/// The relying party: webauthn-rs trusting exactly the virtual keys' attestation CA.
struct RelyingPartyUnderTest {
    webauthn: Webauthn,
    ca_der: Vec<u8>,
    aaguid: [u8; 16],
}

impl RelyingPartyUnderTest {
    fn new(key: &VirtKey) -> Self {
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

    fn ca_list(&self) -> webauthn_rs::prelude::AttestationCaList {
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
    fn blanket_ca_list(&self) -> webauthn_rs::prelude::AttestationCaList {
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
fn credential(
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

fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn es256() -> Vec<PublicKeyCredentialParameters> {
    vec![PublicKeyCredentialParameters::public_key(
        ctap::cose::alg::ES256,
    )]
}

fn request(client_data_hash: [u8; 32], user_id: &[u8]) -> make_credential::Request {
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
    let started = Instant::now();
    let mut up_needed = 0;
    let response = key.transact(HidCommand::Cbor, &payload, |status| {
        if status == KeepaliveStatus::UpNeeded {
            up_needed += 1;
        }
        up_needed >= 2
    });
    assert_eq!(response, [u8::from(StatusCode::KeepaliveCancel)]);
    assert!(up_needed >= 2, "saw {:?}", key.keepalives);
    // The firmware's own presence timeout is 30 s: an answer long before that came from CANCEL.
    assert!(started.elapsed() < virtkey::FIDO2_UP_TIMEOUT / 2);
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

/// The NFC front end, driven with `iso7816::Exchange` in both framings.
struct NfcKey {
    key: VirtKey,
    framing: Framing,
}

impl NfcKey {
    fn transmit(&self, apdu: &[u8]) -> Vec<u8> {
        self.key.transmit_apdu(apdu, SILENCE).unwrap()
    }

    fn select(&self) -> AppletVersion {
        let apdu = iso7816::select_fido_applet()
            .encode(iso7816::ApduForm::Short)
            .unwrap();
        let response = ResponseApdu::parse(&self.transmit(&apdu)).unwrap();
        AppletVersion::from_select_response(&response).unwrap()
    }

    fn cbor<C: Command>(&self, command: &C) -> Result<C::Response, ResponseError> {
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
