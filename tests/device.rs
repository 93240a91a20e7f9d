//! The device layer against real firmware and against scripted misbehaving keys.
//!
//! Virtual keys (the Trussed firmware, in-process) are bridged to the transport contract's
//! links by `device_support`, so the registry, the actors and both engines run exactly as
//! they do behind the USB, NFC and virtual transports. Fake links play keys that answer
//! CHANNEL_BUSY, send keepalives on cue, break the framing, or lose the applet.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod device_support;

use std::time::Duration;

use ctap::command::client_pin::Permissions;
use ctap::command::get_info::Version;
use ctap::command::make_credential::{MakeCredential, Options, PinUvAuth};
use ctap::ctaphid::{Cid, Command as HidCommand, FramingError, HidErrorCode, TransactionError};
use ctap::iso7816::AppletVersion;
use ctap::pin_uv::{Pin, PinUvAuthProtocol};
use ctap::status::StatusCode;
use ctap::u2f::{self, AuthenticateRequest, KeyHandleCheck, RegisterRequest, Registration};
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::Flags;
use ctap::webauthn::client_data::{ClientDataType, CollectedClientData};
use device_support::ctap_support::{self as peer, RelyingPartyUnderTest};
use device_support::*;
use passkeyd::device::{
    Authenticator, DeviceConfig, DeviceError, LinkInfo, OpEvent, Operation, ProtocolError,
    RegistryEvent, Unsupported,
};
use passkeyd::transport::{DeviceId, LinkError, Transport};
use tokio::time::{Instant, sleep, timeout};
use virtkey::{AAGUID, Config, TouchPolicy};
use webauthn_rs::prelude::Uuid;

fn make_credential_request(user: &[u8]) -> MakeCredential {
    let hash = CollectedClientData::new(ClientDataType::Create, vec![7; 32], peer::ORIGIN).hash();
    MakeCredential::new(peer::request(hash, user)).unwrap()
}

fn never_touched() -> Config {
    Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    }
}

/// Reads events until `TouchNeeded`.
async fn until_touch_needed<T>(op: &mut Operation<T>) {
    loop {
        match timeout(GENEROUS, op.next_event()).await.unwrap() {
            Some(OpEvent::TouchNeeded) => return,
            Some(_) => {}
            None => panic!("the operation ended before asking for a touch"),
        }
    }
}

/// All events until the operation ends.
async fn all_events<T>(op: &mut Operation<T>) -> Vec<OpEvent> {
    let mut events = Vec::new();
    while let Some(event) = timeout(GENEROUS, op.next_event()).await.unwrap() {
        events.push(event);
    }
    events
}

/// A request the key may refuse as busy for a moment (while it ends a cancelled one).
async fn wink_when_idle(authenticator: &Authenticator) -> Result<(), DeviceError> {
    let give_up = Instant::now() + GENEROUS;
    loop {
        match authenticator.wink().await {
            Err(DeviceError::Busy) if Instant::now() < give_up => {
                sleep(Duration::from_millis(10)).await;
            }
            other => return other,
        }
    }
}

/// Waits until the registry reports `id` busy (or idle).
async fn busy_flag(rig: &mut Rig, id: &DeviceId, busy: bool) {
    loop {
        let event = timeout(GENEROUS, rig.events.recv()).await.unwrap().unwrap();
        if let RegistryEvent::Changed(device) = event
            && device.id() == id
            && device.busy == busy
        {
            return;
        }
    }
}

// ---- discovery and hotplug ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_virtual_keys_are_discovered_with_cached_get_info() {
    let mut rig = Rig::start().await;
    let mut bridges = Vec::new();
    for name in ["alpha", "bravo", "charlie"] {
        let (bridge, connection) = HidBridge::start(Config::default());
        rig.plug(name, Transport::Virtual, connection).await;
        bridges.push(bridge);
    }
    for _ in 0..3 {
        let device = rig.added().await;
        assert!(device.info.is_some());
    }

    let devices = rig.registry.list().await;
    let ids: Vec<&str> = devices.iter().map(|d| d.id().as_str()).collect();
    assert_eq!(ids, ["virtual_alpha", "virtual_bravo", "virtual_charlie"]);
    for device in &devices {
        assert_eq!(device.transport(), Transport::Virtual);
        assert_eq!(
            device.description.path,
            format!("test:{}", &device.id().as_str()[8..])
        );
        assert!(!device.busy);
        let info = device.info.as_ref().unwrap();
        assert_eq!(info.aaguid, AAGUID);
        assert!(info.supports(Version::Fido2_1));
        let Some(LinkInfo::Hid {
            protocol_version,
            capabilities,
            ..
        }) = &device.link
        else {
            panic!("a HID link, got {:?}", device.link);
        };
        assert_eq!(*protocol_version, 2);
        assert!(capabilities.cbor() && capabilities.wink() && capabilities.msg());
        // The handle serves the cached answer.
        for _ in 0..3 {
            assert_eq!(device.authenticator.info().unwrap().aaguid, AAGUID);
        }
        assert_eq!(
            device.authenticator.pin_protocol(),
            Some(PinUvAuthProtocol::Two)
        );
    }
    // getInfo was read once per key, at plug time.
    let reads: Vec<usize> = bridges.iter().map(HidBridge::get_info_requests).collect();
    assert_eq!(reads, [1, 1, 1]);

    let bravo = DeviceId::new(Transport::Virtual, "bravo");
    let authenticator = rig.registry.get(&bravo).await.unwrap();
    assert_eq!(authenticator.id(), &bravo);
    assert_eq!(authenticator.transport(), Transport::Virtual);
    let delta = DeviceId::new(Transport::Virtual, "delta");
    assert!(rig.registry.get(&delta).await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_added_and_removed_while_running() {
    let mut rig = Rig::start().await;
    let (_one_bridge, connection) = HidBridge::start(Config::default());
    rig.plug("one", Transport::Virtual, connection).await;
    let one = rig.added().await.authenticator;

    let (two_bridge, connection) = HidBridge::start(Config::default());
    rig.plug("two", Transport::Virtual, connection).await;
    let two = rig.added().await.authenticator;
    assert_eq!(rig.registry.list().await.len(), 2);

    rig.unplug("one", Transport::Virtual).await;
    assert_eq!(rig.removed().await.as_str(), "virtual_one");
    let ids: Vec<String> = rig
        .registry
        .list()
        .await
        .iter()
        .map(|d| d.id().to_string())
        .collect();
    assert_eq!(ids, ["virtual_two"]);
    assert!(matches!(one.wink().await, Err(DeviceError::DeviceRemoved)));
    assert!(matches!(
        one.make_credential(&make_credential_request(b"u"), generous_deadline())
            .result()
            .await,
        Err(DeviceError::DeviceRemoved)
    ));

    two.wink().await.unwrap();
    assert_eq!(two_bridge.key.wink_count(), 1);

    // The same port again: the same id, a new key.
    let (_again, connection) = HidBridge::start(Config::default());
    rig.plug("one", Transport::Virtual, connection).await;
    let device = rig.added().await;
    assert_eq!(device.id().as_str(), "virtual_one");
    device.authenticator.wink().await.unwrap();
}

// ---- independence, unplug, cancel ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operations_on_two_keys_proceed_independently() {
    let mut rig = Rig::start().await;
    let (a_bridge, connection) = HidBridge::start(never_touched());
    rig.plug("a", Transport::Virtual, connection).await;
    let a = rig.added().await.authenticator;
    let (_b_bridge, connection) = HidBridge::start(Config::default());
    rig.plug("b", Transport::Virtual, connection).await;
    let b = rig.added().await.authenticator;

    let mut waiting = a.make_credential(&make_credential_request(b"alice"), generous_deadline());
    busy_flag(&mut rig, a.id(), true).await;
    until_touch_needed(&mut waiting).await;

    // While A waits for a touch: A refuses a second request at once, B serves everything.
    assert!(matches!(a.pin_retries().await, Err(DeviceError::Busy)));
    assert_eq!(b.info().unwrap().aaguid, AAGUID);
    b.wink().await.unwrap();
    let response = b
        .make_credential(&make_credential_request(b"bob"), generous_deadline())
        .result()
        .await
        .unwrap();
    assert_eq!(response.fmt, "packed");
    let busy: Vec<(String, bool)> = rig
        .registry
        .list()
        .await
        .iter()
        .map(|d| (d.id().to_string(), d.busy))
        .collect();
    assert_eq!(busy[0], ("virtual_a".to_owned(), true));

    a_bridge.key.set_touch(TouchPolicy::Auto);
    let response = waiting.result().await.unwrap();
    assert_eq!(response.fmt, "packed");
    let object = AttestationObject::from_response(response).unwrap();
    assert!(object.parsed_auth_data().unwrap().check_rp_id(peer::RP_ID));
    busy_flag(&mut rig, a.id(), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplug_during_make_credential_is_device_removed_within_a_second() {
    let mut rig = Rig::start().await;
    let (mut a_bridge, connection) = HidBridge::start(never_touched());
    rig.plug("a", Transport::Virtual, connection).await;
    let a = rig.added().await.authenticator;
    let (_b_bridge, connection) = HidBridge::start(Config::default());
    rig.plug("b", Transport::Virtual, connection).await;
    let b = rig.added().await.authenticator;

    let mut op = a.make_credential(&make_credential_request(b"alice"), generous_deadline());
    until_touch_needed(&mut op).await;
    let unplugged = std::time::Instant::now();
    a_bridge.unplug();
    let result = op.result().await;
    let elapsed = unplugged.elapsed();
    assert!(
        matches!(result, Err(DeviceError::DeviceRemoved)),
        "{result:?}"
    );
    assert!(elapsed < Duration::from_secs(1), "took {elapsed:?}");

    // The actor noticed by itself; the registry drops the key.
    assert_eq!(rig.removed().await.as_str(), "virtual_a");
    assert!(matches!(a.wink().await, Err(DeviceError::DeviceRemoved)));

    let response = b
        .make_credential(&make_credential_request(b"bob"), generous_deadline())
        .result()
        .await
        .unwrap();
    assert_eq!(response.fmt, "packed");
    let ids: Vec<String> = rig
        .registry
        .list()
        .await
        .iter()
        .map(|d| d.id().to_string())
        .collect();
    assert_eq!(ids, ["virtual_b"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_during_the_touch_wait_and_the_key_stays_usable() {
    let mut rig = Rig::start().await;
    let (bridge, connection) = HidBridge::start(never_touched());
    rig.plug("a", Transport::Virtual, connection).await;
    let a = rig.added().await.authenticator;

    // Cancelled from another task through a cancel handle.
    let mut op = a.make_credential(&make_credential_request(b"alice"), generous_deadline());
    until_touch_needed(&mut op).await;
    let handle = op.cancel_handle();
    tokio::spawn(async move { handle.cancel() }).await.unwrap();
    assert!(matches!(op.result().await, Err(DeviceError::Cancelled)));
    a.wink().await.unwrap();

    // Dropping the operation cancels it too.
    let mut op = a.selection(generous_deadline());
    until_touch_needed(&mut op).await;
    drop(op);
    wink_when_idle(&a).await.unwrap();
    assert_eq!(bridge.key.wink_count(), 2);

    bridge.key.set_touch(TouchPolicy::Auto);
    let response = a
        .make_credential(&make_credential_request(b"alice"), generous_deadline())
        .result()
        .await
        .unwrap();
    assert_eq!(response.fmt, "packed");
    a.selection(generous_deadline()).result().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn selection_on_every_key_picks_the_touched_one_and_cancels_the_rest() {
    let mut rig = Rig::start().await;
    let mut bridges = Vec::new();
    for name in ["a", "b", "c"] {
        let (bridge, connection) = HidBridge::start(never_touched());
        rig.plug(name, Transport::Virtual, connection).await;
        rig.added().await;
        bridges.push(bridge);
    }
    let keys: Vec<Authenticator> = rig
        .registry
        .list()
        .await
        .into_iter()
        .map(|d| d.authenticator)
        .collect();
    let mut ops: Vec<_> = keys
        .iter()
        .map(|key| key.selection(generous_deadline()))
        .collect();
    for op in &mut ops {
        until_touch_needed(op).await;
    }

    // The user touches b.
    bridges[1].key.set_touch(TouchPolicy::Auto);
    let chosen = ops.remove(1);
    chosen.result().await.unwrap();
    for op in &ops {
        op.cancel();
    }
    for op in ops {
        assert!(matches!(op.result().await, Err(DeviceError::Cancelled)));
    }
    for key in &keys {
        key.wink().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_do_not_extend_the_overall_deadline() {
    let mut rig = Rig::start().await;
    let (bridge, connection) = HidBridge::start(never_touched());
    rig.plug("a", Transport::Virtual, connection).await;
    let a = rig.added().await.authenticator;

    let started = Instant::now();
    let deadline = started + Duration::from_millis(1500);
    let mut op = a.make_credential(&make_credential_request(b"alice"), deadline);
    let events = all_events(&mut op).await;
    assert!(events.contains(&OpEvent::TouchNeeded), "{events:?}");
    assert!(matches!(op.result().await, Err(DeviceError::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(1500));

    // The request was cancelled on the key, and the key is usable again.
    wink_when_idle(&a).await.unwrap();
    bridge.key.set_touch(TouchPolicy::Auto);
    a.make_credential(&make_credential_request(b"alice"), generous_deadline())
        .result()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keepalives_from_the_firmware_are_surfaced() {
    let mut rig = Rig::start().await;
    let (_bridge, connection) = HidBridge::start(Config {
        touch: TouchPolicy::AutoAfter(Duration::from_millis(400)),
        ..Config::default()
    });
    rig.plug("a", Transport::Virtual, connection).await;
    let a = rig.added().await.authenticator;

    let mut op = a.make_credential(&make_credential_request(b"alice"), generous_deadline());
    let events = all_events(&mut op).await;
    // The firmware waits for the touch, then works on the credential.
    assert!(events.contains(&OpEvent::TouchNeeded), "{events:?}");
    // Transitions only, although the key repeats its status every 100 ms.
    assert!(
        events.windows(2).all(|pair| pair[0] != pair[1]),
        "{events:?}"
    );
    assert!(events.len() <= 3, "{events:?}");
    assert_eq!(op.result().await.unwrap().fmt, "packed");
}

// ---- PIN, U2F, wink ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pin_and_make_credential_flow_verified_by_the_relying_party() {
    let mut rig = Rig::start().await;
    let (bridge, connection) = HidBridge::start(Config::default());
    rig.plug("a", Transport::Virtual, connection).await;
    let a = rig.added().await.authenticator;
    assert!(!a.info().unwrap().client_pin().is_on());
    let protocol = a.pin_protocol().unwrap();
    assert_eq!(protocol, PinUvAuthProtocol::Two);

    a.set_pin(protocol, &Pin::new("1234").unwrap())
        .await
        .unwrap();
    // getInfo is read again after the PIN change, and the handle sees it.
    assert!(a.info().unwrap().client_pin().is_on());
    assert_eq!(bridge.get_info_requests(), 2);
    let device = rig.registry.list().await.remove(0);
    assert!(device.info.unwrap().client_pin().is_on());
    assert_eq!(a.pin_retries().await.unwrap().pin_retries, 8);

    let wrong = a
        .pin_token(
            protocol,
            &Pin::new("9999").unwrap(),
            Permissions::MAKE_CREDENTIAL,
            Some(peer::RP_ID),
        )
        .await;
    assert!(matches!(
        wrong,
        Err(DeviceError::Ctap(StatusCode::PinInvalid))
    ));
    assert_eq!(a.pin_retries().await.unwrap().pin_retries, 7);

    a.change_pin(
        protocol,
        &Pin::new("1234").unwrap(),
        &Pin::new("5678").unwrap(),
    )
    .await
    .unwrap();
    assert_eq!(a.pin_retries().await.unwrap().pin_retries, 8);
    assert!(matches!(
        a.change_pin(
            protocol,
            &Pin::new("1234").unwrap(),
            &Pin::new("4321").unwrap()
        )
        .await,
        Err(DeviceError::Ctap(StatusCode::PinInvalid))
    ));

    let rp = RelyingPartyUnderTest::new(&bridge.key);
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
    let client_data = CollectedClientData::new(
        ClientDataType::Create,
        options.challenge.to_vec(),
        peer::ORIGIN,
    );
    let mut req = peer::request(client_data.hash(), options.user.id.as_ref());
    req.options = Options {
        rk: Some(true),
        ..Options::default()
    };
    // A PIN is set and rk is asked for: the key wants a token.
    let refused = a
        .make_credential(
            &MakeCredential::new(req.clone()).unwrap(),
            generous_deadline(),
        )
        .result()
        .await;
    assert!(matches!(
        refused,
        Err(DeviceError::Ctap(StatusCode::PuatRequired))
    ));

    let token = a
        .pin_token(
            protocol,
            &Pin::new("5678").unwrap(),
            Permissions::MAKE_CREDENTIAL,
            Some(peer::RP_ID),
        )
        .await
        .unwrap();
    req.pin_uv_auth = Some(PinUvAuth {
        param: token.authenticate(&client_data.hash()),
        protocol: u32::from(protocol.number()),
    });
    let response = a
        .make_credential(&MakeCredential::new(req).unwrap(), generous_deadline())
        .result()
        .await
        .unwrap();
    let object = AttestationObject::from_response(response).unwrap();
    let auth_data = object.parsed_auth_data().unwrap();
    assert!(
        auth_data
            .flags()
            .contains(Flags::UP | Flags::UV | Flags::AT)
    );
    rp.webauthn
        .finish_attested_passkey_registration(
            &peer::credential(client_data.to_json_bytes(), &object),
            &state,
        )
        .expect("webauthn-rs verifies the packed attestation");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2f_register_check_only_and_wink_over_ctaphid() {
    let mut rig = Rig::start().await;
    let (bridge, connection) = HidBridge::start(Config::default());
    rig.plug("a", Transport::Virtual, connection).await;
    let a = rig.added().await.authenticator;

    let request = RegisterRequest::for_webauthn([3; 32], peer::RP_ID);
    let registration = u2f_register(&a, &request).await;
    assert_eq!(registration.public_key()[0], 0x04);

    let known =
        AuthenticateRequest::check_only([4; 32], request.application, registration.key_handle())
            .unwrap();
    assert_eq!(
        a.u2f_check_only(&known, generous_deadline()).await.unwrap(),
        KeyHandleCheck::Known
    );
    let stranger = AuthenticateRequest::check_only([4; 32], request.application, &[9; 64]).unwrap();
    assert_eq!(
        a.u2f_check_only(&stranger, generous_deadline())
            .await
            .unwrap(),
        KeyHandleCheck::Unknown
    );

    a.wink().await.unwrap();
    a.wink().await.unwrap();
    assert_eq!(bridge.key.wink_count(), 2);
}

/// U2F has no keepalive: `6985` means "touch needed", so the request is repeated.
async fn u2f_register(authenticator: &Authenticator, request: &RegisterRequest) -> Registration {
    let give_up = Instant::now() + GENEROUS;
    loop {
        let response = authenticator
            .u2f_register(request, generous_deadline())
            .await
            .unwrap();
        match Registration::from_response(&response) {
            Ok(registration) => return registration,
            Err(u2f::U2fError::Status(u2f::StatusWord::ConditionsNotSatisfied))
                if Instant::now() < give_up =>
            {
                sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("U2F register failed: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn u2f_only_keys_are_listed_without_get_info() {
    let u2f_only = || Config {
        u2f_only: true,
        ..Config::default()
    };
    let mut rig = Rig::start().await;
    let (hid_bridge, connection) = HidBridge::start(u2f_only());
    rig.plug("hid", Transport::Usb, connection).await;
    let hid = rig.added().await;
    let (_nfc_bridge, connection) = ApduBridge::start(u2f_only());
    rig.plug("nfc", Transport::Nfc, connection).await;
    let nfc = rig.added().await;

    // No CBOR capability: getInfo is not even asked.
    assert!(hid.info.is_none());
    assert_eq!(hid_bridge.get_info_requests(), 0);
    let Some(LinkInfo::Hid { capabilities, .. }) = hid.link else {
        panic!("a HID link");
    };
    assert!(!capabilities.cbor() && capabilities.msg());
    // Over NFC the applet refuses NFCCTAP_MSG (6D00) in both framings.
    assert!(nfc.info.is_none());
    assert!(matches!(nfc.link, Some(LinkInfo::Apdu { .. })));

    for device in [&hid, &nfc] {
        let key = &device.authenticator;
        assert_eq!(key.pin_protocol(), None);
        let result = key
            .make_credential(&make_credential_request(b"u"), generous_deadline())
            .result()
            .await;
        assert!(
            matches!(result, Err(DeviceError::Unsupported(Unsupported::Ctap2))),
            "{result:?}"
        );
        let registration =
            u2f_register(key, &RegisterRequest::for_webauthn([6; 32], "x.org")).await;
        assert!(!registration.key_handle().is_empty());
    }
}

#[tokio::test]
async fn a_request_past_its_deadline_never_reaches_the_key() {
    let mut rig = Rig::start().await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;
    let result = authenticator
        .selection(Instant::now() - Duration::from_millis(1))
        .result()
        .await;
    assert!(matches!(result, Err(DeviceError::Timeout)));
    assert!(fake.written.try_recv().is_err());
}

// ---- NFC through the APDU engine ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nfc_get_info_make_credential_and_u2f_through_the_apdu_engine() {
    let mut rig = Rig::start().await;
    let (mut bridge, connection) = ApduBridge::start(Config::default());
    rig.plug("ACS ACR122U 00", Transport::Nfc, connection).await;
    let device = rig.added().await;
    assert_eq!(device.id().as_str(), "nfc_ACS_ACR122U_00");
    assert_eq!(device.transport(), Transport::Nfc);
    assert_eq!(
        device.link,
        Some(LinkInfo::Apdu {
            applet: AppletVersion::U2fV2
        })
    );
    assert_eq!(device.info.as_ref().unwrap().aaguid, bridge.key.aaguid());
    let card = device.authenticator;

    // Long enough to need more than one short APDU, were the card to refuse extended ones.
    let hash = CollectedClientData::new(ClientDataType::Create, vec![1; 32], peer::ORIGIN).hash();
    let mut req = peer::request(hash, &[0x55; 64]);
    req.user.display_name = Some("A".repeat(200));
    let response = card
        .make_credential(&MakeCredential::new(req).unwrap(), generous_deadline())
        .result()
        .await
        .unwrap();
    let object = AttestationObject::from_response(response).unwrap();
    let auth_data = object.parsed_auth_data().unwrap();
    assert!(auth_data.check_rp_id(peer::RP_ID));
    assert_eq!(
        auth_data.attested_credential_data().unwrap().aaguid(),
        &AAGUID
    );

    assert_eq!(card.pin_retries().await.unwrap().pin_retries, 8);
    let registration = u2f_register(&card, &RegisterRequest::for_webauthn([5; 32], "x.org")).await;
    assert!(!registration.key_handle().is_empty());
    assert!(matches!(
        card.wink().await,
        Err(DeviceError::Unsupported(Unsupported::Wink))
    ));

    bridge.unplug();
    assert_eq!(rig.removed().await.as_str(), "nfc_ACS_ACR122U_00");
    assert!(matches!(
        card.pin_retries().await,
        Err(DeviceError::DeviceRemoved)
    ));
}

/// A fake card, probed: SELECT answered `U2F_V2`, getInfo answered in extended framing.
async fn probed_card(rig: &mut Rig, name: &str) -> (FakeCard, Authenticator) {
    let (connection, mut card) = fake_card();
    rig.plug(name, Transport::Nfc, connection).await;
    card.expect(&SELECT, b"U2F_V2", 0x9000).await;
    card.expect(&nfcctap_msg_extended(&[0x04]), &get_info_response(), 0x9000)
        .await;
    let device = rig.added().await;
    assert_eq!(device.info.unwrap().aaguid, FAKE_AAGUID);
    (card, device.authenticator)
}

const POLL_EXTENDED: [u8; 7] = [0x80, 0x11, 0x00, 0x00, 0x00, 0x00, 0x00];
const CANCEL_EXTENDED: [u8; 7] = [0x80, 0x11, 0x11, 0x00, 0x00, 0x00, 0x00];

#[tokio::test]
async fn nfc_card_refusing_extended_apdus_gets_short_chaining() {
    let mut rig = Rig::start().await;
    let (connection, mut card) = fake_card();
    rig.plug("reader", Transport::Nfc, connection).await;
    card.expect(&SELECT, b"FIDO_2_0", 0x9000).await;
    card.expect(&nfcctap_msg_extended(&[0x04]), &[], 0x6700)
        .await;
    // The answer comes in two parts: 61xx, then GET RESPONSE.
    let info = get_info_response();
    let (head, tail) = info.split_at(10);
    card.expect(
        &nfcctap_msg_short(&[0x04]),
        head,
        0x6100 | tail.len() as u16,
    )
    .await;
    card.expect(&[0x00, 0xC0, 0x00, 0x00, tail.len() as u8], tail, 0x9000)
        .await;
    let device = rig.added().await;
    assert_eq!(
        device.link,
        Some(LinkInfo::Apdu {
            applet: AppletVersion::Fido20
        })
    );
    assert_eq!(device.info.unwrap().aaguid, FAKE_AAGUID);

    // The card keeps short framing.
    let task = tokio::spawn(async move { device.authenticator.pin_retries().await });
    card.expect(
        &nfcctap_msg_short(&PIN_RETRIES_REQUEST),
        &pin_retries_response(6),
        0x9000,
    )
    .await;
    assert_eq!(task.await.unwrap().unwrap().pin_retries, 6);
}

#[tokio::test]
async fn nfc_status_updates_are_polled_and_surfaced() {
    let mut rig = Rig::start().await;
    let (mut card, authenticator) = probed_card(&mut rig, "reader").await;

    let mut op = authenticator.selection(generous_deadline());
    card.expect(&nfcctap_msg_extended(&[0x0B]), &[0x01], 0x9100)
        .await;
    card.expect(&POLL_EXTENDED, &[0x02], 0x9100).await;
    card.expect(&POLL_EXTENDED, &[0x02], 0x9100).await;
    card.expect(&POLL_EXTENDED, &[0x00], 0x9000).await;
    assert_eq!(
        all_events(&mut op).await,
        [OpEvent::Processing, OpEvent::TouchNeeded]
    );
    op.result().await.unwrap();
}

#[tokio::test]
async fn nfc_cancel_is_sent_at_the_next_status_update() {
    let mut rig = Rig::with_config(DeviceConfig {
        // Long pauses between polls, so that the cancel surely arrives during one.
        nfc_poll_interval: Duration::from_secs(30),
        ..DeviceConfig::default()
    })
    .await;
    let (mut card, authenticator) = probed_card(&mut rig, "reader").await;

    let mut op = authenticator.selection(generous_deadline());
    card.expect(&nfcctap_msg_extended(&[0x0B]), &[0x02], 0x9100)
        .await;
    until_touch_needed(&mut op).await;
    op.cancel();
    card.expect(&CANCEL_EXTENDED, &[0x2D], 0x9000).await;
    assert!(matches!(op.result().await, Err(DeviceError::Cancelled)));

    // The deadline passing during a status-update wait cancels the request on the card too.
    let started = Instant::now();
    let op = authenticator.selection(started + Duration::from_millis(300));
    card.expect(&nfcctap_msg_extended(&[0x0B]), &[0x02], 0x9100)
        .await;
    card.expect(&CANCEL_EXTENDED, &[0x2D], 0x9000).await;
    assert!(matches!(op.result().await, Err(DeviceError::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(300));
}

#[tokio::test]
async fn nfc_applet_lost_after_a_re_tap_is_selected_again() {
    let mut rig = Rig::start().await;
    let (mut card, authenticator) = probed_card(&mut rig, "reader").await;

    // The card was re-tapped: a new session without the applet selected.
    let request = tokio::spawn({
        let authenticator = authenticator.clone();
        async move { authenticator.pin_retries().await }
    });
    card.expect(&nfcctap_msg_extended(&PIN_RETRIES_REQUEST), &[], 0x6A82)
        .await;
    card.expect(&SELECT, b"U2F_V2", 0x9000).await;
    card.expect(
        &nfcctap_msg_extended(&PIN_RETRIES_REQUEST),
        &pin_retries_response(3),
        0x9000,
    )
    .await;
    assert_eq!(request.await.unwrap().unwrap().pin_retries, 3);

    // A failed transmit (the reader reset the card): the next request selects first.
    let request = tokio::spawn({
        let authenticator = authenticator.clone();
        async move { authenticator.pin_retries().await }
    });
    let (_, reply) = card.next().await;
    reply
        .send(Err(LinkError::Pcsc("card was reset".into())))
        .unwrap();
    assert!(matches!(
        request.await.unwrap(),
        Err(DeviceError::Link(LinkError::Pcsc(_)))
    ));
    let request = tokio::spawn(async move { authenticator.pin_retries().await });
    card.expect(&SELECT, b"U2F_V2", 0x9000).await;
    card.expect(
        &nfcctap_msg_extended(&PIN_RETRIES_REQUEST),
        &pin_retries_response(2),
        0x9000,
    )
    .await;
    assert_eq!(request.await.unwrap().unwrap().pin_retries, 2);
}

#[tokio::test]
async fn nfc_card_without_the_fido_applet_is_not_listed_and_a_lost_card_is_removed() {
    let mut rig = Rig::start().await;
    let (connection, mut other_card) = fake_card();
    rig.plug("reader0", Transport::Nfc, connection).await;
    other_card.expect(&SELECT, &[], 0x6A82).await;

    let (mut card, authenticator) = probed_card(&mut rig, "reader1").await;
    let ids: Vec<String> = rig
        .registry
        .list()
        .await
        .iter()
        .map(|d| d.id().to_string())
        .collect();
    assert_eq!(ids, ["nfc_reader1"]);

    // The card leaves while a request is in flight.
    let request = tokio::spawn(async move { authenticator.pin_retries().await });
    let (_, reply) = card.next().await;
    drop(reply);
    drop(card);
    assert!(matches!(
        request.await.unwrap(),
        Err(DeviceError::DeviceRemoved)
    ));
    assert_eq!(rig.removed().await.as_str(), "nfc_reader1");
}

// ---- CTAPHID engine against a scripted key ----

/// A fake HID key, probed.
async fn probed_hid(rig: &mut Rig) -> (FakeHid, Authenticator) {
    let (connection, mut fake) = fake_hid();
    rig.plug("fake", Transport::Usb, connection).await;
    fake.probe(FAKE_CID).await;
    let device = rig.added().await;
    assert_eq!(device.info.unwrap().aaguid, FAKE_AAGUID);
    (fake, device.authenticator)
}

fn spawn_pin_retries(
    authenticator: &Authenticator,
) -> tokio::task::JoinHandle<Result<u32, DeviceError>> {
    let authenticator = authenticator.clone();
    tokio::spawn(async move { Ok(authenticator.pin_retries().await?.pin_retries) })
}

#[tokio::test]
async fn channel_busy_is_retried_after_a_pause() {
    let mut rig = Rig::start().await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;

    let request = spawn_pin_retries(&authenticator);
    assert_eq!(fake.expect_cbor(FAKE_CID).await, PIN_RETRIES_REQUEST);
    fake.error(FAKE_CID, 0x06).await;
    let busy_at = Instant::now();
    assert_eq!(fake.expect_cbor(FAKE_CID).await, PIN_RETRIES_REQUEST);
    assert!(busy_at.elapsed() >= DeviceConfig::default().busy_backoff);
    fake.send(FAKE_CID, HidCommand::Cbor, &pin_retries_response(5))
        .await;
    assert_eq!(request.await.unwrap().unwrap(), 5);
}

#[tokio::test]
async fn channel_busy_through_every_retry_is_busy() {
    let mut rig = Rig::with_config(DeviceConfig {
        busy_retries: 2,
        ..DeviceConfig::default()
    })
    .await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;

    let request = spawn_pin_retries(&authenticator);
    for _ in 0..3 {
        assert_eq!(fake.expect_cbor(FAKE_CID).await, PIN_RETRIES_REQUEST);
        fake.error(FAKE_CID, 0x06).await;
    }
    assert!(matches!(request.await.unwrap(), Err(DeviceError::Busy)));
    assert!(fake.written.try_recv().is_err(), "no fourth attempt");
}

#[tokio::test]
async fn invalid_channel_allocates_a_new_one_once() {
    let mut rig = Rig::start().await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;
    let second = Cid::new(0x0A0B_0C0D);

    let request = spawn_pin_retries(&authenticator);
    fake.expect_cbor(FAKE_CID).await;
    fake.error(FAKE_CID, 0x0B).await;
    fake.answer_init(second).await;
    assert_eq!(fake.expect_cbor(second).await, PIN_RETRIES_REQUEST);
    fake.send(second, HidCommand::Cbor, &pin_retries_response(4))
        .await;
    assert_eq!(request.await.unwrap().unwrap(), 4);

    // Twice in a row: given up.
    let third = Cid::new(0x0E0F_1011);
    let request = spawn_pin_retries(&authenticator);
    fake.expect_cbor(second).await;
    fake.error(second, 0x0B).await;
    fake.answer_init(third).await;
    fake.expect_cbor(third).await;
    fake.error(third, 0x0B).await;
    assert!(matches!(
        request.await.unwrap(),
        Err(DeviceError::Hid(HidErrorCode::InvalidChannel))
    ));
}

#[tokio::test]
async fn keepalives_become_events_and_keep_a_slow_key_alive() {
    let mut rig = Rig::with_config(DeviceConfig {
        inactivity_timeout: Duration::from_millis(500),
        ..DeviceConfig::default()
    })
    .await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;

    let mut op = authenticator.selection(generous_deadline());
    assert_eq!(fake.expect_cbor(FAKE_CID).await, [0x0B]);
    // Ten keepalives 100 ms apart: a second of work, twice the inactivity timeout.
    for status in [1, 1, 1, 2, 2, 2, 2, 2, 2, 2] {
        fake.keepalive(FAKE_CID, status).await;
        sleep(Duration::from_millis(100)).await;
    }
    fake.send(FAKE_CID, HidCommand::Cbor, &[0x00]).await;
    assert_eq!(
        all_events(&mut op).await,
        [OpEvent::Processing, OpEvent::TouchNeeded]
    );
    op.result().await.unwrap();
}

#[tokio::test]
async fn a_silent_key_times_out_and_is_cancelled() {
    let mut rig = Rig::with_config(DeviceConfig {
        inactivity_timeout: Duration::from_millis(200),
        ..DeviceConfig::default()
    })
    .await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;

    let started = Instant::now();
    let request = spawn_pin_retries(&authenticator);
    fake.expect_cbor(FAKE_CID).await;
    let cancel = fake.next_report().await;
    assert_eq!(cancel, report(&[0x01, 0x02, 0x03, 0x04, 0x91, 0x00, 0x00]));
    assert!(matches!(request.await.unwrap(), Err(DeviceError::Timeout)));
    assert!(started.elapsed() >= Duration::from_millis(200));

    // The channel was given up: the next request allocates a new one.
    let second = Cid::new(0x0000_0042);
    let request = spawn_pin_retries(&authenticator);
    fake.answer_init(second).await;
    fake.expect_cbor(second).await;
    // The late answer on the old channel is not taken for this request's.
    fake.send(FAKE_CID, HidCommand::Cbor, &pin_retries_response(1))
        .await;
    fake.send(second, HidCommand::Cbor, &pin_retries_response(8))
        .await;
    assert_eq!(request.await.unwrap().unwrap(), 8);
}

#[tokio::test]
async fn a_cancel_the_key_ignores_ends_after_the_grace_period() {
    let mut rig = Rig::with_config(DeviceConfig {
        cancel_grace: Duration::from_millis(200),
        ..DeviceConfig::default()
    })
    .await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;

    let mut op = authenticator.selection(generous_deadline());
    fake.expect_cbor(FAKE_CID).await;
    fake.keepalive(FAKE_CID, 2).await;
    until_touch_needed(&mut op).await;
    op.cancel();
    let cancel = fake.next_report().await;
    assert_eq!(cancel, report(&[0x01, 0x02, 0x03, 0x04, 0x91, 0x00, 0x00]));
    // The key keeps waiting for a touch and says so.
    fake.keepalive(FAKE_CID, 2).await;
    assert!(matches!(op.result().await, Err(DeviceError::Cancelled)));
    // Channel given up: a new INIT comes first.
    let request = spawn_pin_retries(&authenticator);
    fake.answer_init(Cid::new(0x0000_0043)).await;
    fake.expect_cbor(Cid::new(0x0000_0043)).await;
    fake.send(
        Cid::new(0x0000_0043),
        HidCommand::Cbor,
        &pin_retries_response(8),
    )
    .await;
    assert_eq!(request.await.unwrap().unwrap(), 8);
}

/// Sends a pin_retries request, lets `respond` answer it on the current channel, and returns
/// the result. `reinit` when the engine is expected to allocate a channel first.
async fn request_answered_with(
    fake: &mut FakeHid,
    authenticator: &Authenticator,
    cid: Cid,
    reinit: bool,
    answer: &[[u8; 64]],
) -> Result<u32, DeviceError> {
    let request = spawn_pin_retries(authenticator);
    if reinit {
        fake.answer_init(cid).await;
    }
    assert_eq!(fake.expect_cbor(cid).await, PIN_RETRIES_REQUEST);
    for report in answer {
        fake.inject_report(*report).await;
    }
    timeout(GENEROUS, request).await.unwrap().unwrap()
}

#[tokio::test]
async fn malformed_frames_are_typed_protocol_errors() {
    let mut rig = Rig::start().await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;
    let c = FAKE_CID.to_bytes();
    let ok = pin_retries_response(8);
    let mut ok_report = report(&[c[0], c[1], c[2], c[3], 0x90, 0x00, ok.len() as u8]);
    ok_report[7..7 + ok.len()].copy_from_slice(&ok);

    // Frames for other channels are skipped.
    let foreign = report(&[0x99, 0x99, 0x99, 0x99, 0x90, 0x00, 0x01, 0x31]);
    let result = request_answered_with(
        &mut fake,
        &authenticator,
        FAKE_CID,
        false,
        &[foreign, ok_report],
    )
    .await;
    assert_eq!(result.unwrap(), 8);

    // A well-framed but undecodable body: the channel is fine, the answer is not.
    let garbage_body = report(&[c[0], c[1], c[2], c[3], 0x90, 0x00, 0x03, 0x00, 0xFF, 0xFF]);
    let result =
        request_answered_with(&mut fake, &authenticator, FAKE_CID, false, &[garbage_body]).await;
    assert!(
        matches!(result, Err(DeviceError::Protocol(ProtocolError::Decode(_)))),
        "{result:?}"
    );

    // Framing errors: each drops the channel, so the next request starts with INIT.
    let cases: [(Vec<[u8; 64]>, TransactionError); 5] = [
        (
            vec![report(&[c[0], c[1], c[2], c[3], 0x00, 0xAA])],
            FramingError::ContinuationWithoutInit { seq: 0 }.into(),
        ),
        (
            vec![
                report(&[c[0], c[1], c[2], c[3], 0x90, 0x00, 0x64]),
                report(&[c[0], c[1], c[2], c[3], 0x01]),
            ],
            FramingError::UnexpectedSeq {
                expected: 0,
                got: 1,
            }
            .into(),
        ),
        (
            vec![report(&[c[0], c[1], c[2], c[3], 0x90, 0x20, 0x00])],
            FramingError::BcntOverLimit {
                bcnt: 0x2000,
                limit: 7609,
            }
            .into(),
        ),
        (
            vec![report(&[
                c[0], c[1], c[2], c[3], 0x83, 0x00, 0x02, 0x90, 0x00,
            ])],
            TransactionError::UnexpectedCommand {
                expected: HidCommand::Cbor,
                got: HidCommand::Msg,
            },
        ),
        (
            vec![report(&[c[0], c[1], c[2], c[3], 0xBB, 0x00, 0x00])],
            TransactionError::EmptyKeepalive,
        ),
    ];
    let mut reinit = false;
    for (answer, expected) in cases {
        let result =
            request_answered_with(&mut fake, &authenticator, FAKE_CID, reinit, &answer).await;
        match result {
            Err(DeviceError::Protocol(ProtocolError::Transaction(error))) => {
                assert_eq!(error, expected);
            }
            other => panic!("expected {expected:?}, got {other:?}"),
        }
        reinit = true;
    }

    // And the key still works.
    let result =
        request_answered_with(&mut fake, &authenticator, FAKE_CID, true, &[ok_report]).await;
    assert_eq!(result.unwrap(), 8);
}

#[tokio::test]
async fn malformed_init_answers_during_the_probe() {
    let mut rig = Rig::start().await;
    let (connection, mut fake) = fake_hid();
    rig.plug("fake", Transport::Usb, connection).await;

    // Another client's INIT answer (a different nonce) is skipped; a short one is an error.
    let init = fake.next_message().await;
    assert_eq!(init.cmd, HidCommand::Init);
    fake.send(
        Cid::BROADCAST,
        HidCommand::Init,
        &init_payload(&[0xEE; 8], FAKE_CID),
    )
    .await;
    fake.send(Cid::BROADCAST, HidCommand::Init, &init.payload[..5])
        .await;
    // The key is listed all the same, without link details or getInfo.
    let device = rig.added().await;
    assert!(device.link.is_none() && device.info.is_none());

    // The next request allocates a channel again.
    let authenticator = device.authenticator;
    let request = spawn_pin_retries(&authenticator);
    fake.answer_init(FAKE_CID).await;
    assert_eq!(fake.expect_cbor(FAKE_CID).await, PIN_RETRIES_REQUEST);
    fake.send(FAKE_CID, HidCommand::Cbor, &pin_retries_response(8))
        .await;
    assert_eq!(request.await.unwrap().unwrap(), 8);
}

#[tokio::test]
async fn a_link_error_ends_the_device() {
    let mut rig = Rig::start().await;
    let (mut fake, authenticator) = probed_hid(&mut rig).await;

    let request = spawn_pin_retries(&authenticator);
    fake.expect_cbor(FAKE_CID).await;
    fake.inject
        .send(Err(LinkError::BadReport(12)))
        .await
        .unwrap();
    assert!(matches!(
        request.await.unwrap(),
        Err(DeviceError::Link(LinkError::BadReport(12)))
    ));
    assert_eq!(rig.removed().await.as_str(), "usb_fake");
    assert!(matches!(
        authenticator.wink().await,
        Err(DeviceError::DeviceRemoved)
    ));
}

#[tokio::test]
async fn random_frames_never_bring_the_actor_down() {
    let mut rig = Rig::with_config(DeviceConfig {
        inactivity_timeout: Duration::from_millis(100),
        cancel_grace: Duration::from_millis(50),
        busy_backoff: Duration::from_millis(1),
        ..DeviceConfig::default()
    })
    .await;
    let (fake, authenticator) = probed_hid(&mut rig).await;

    // A key that answers every INIT properly and every request with random reports, mostly
    // on the right channel.
    let FakeHid {
        mut written,
        inject,
    } = fake;
    tokio::spawn(async move {
        let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut random = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut cid = FAKE_CID;
        let mut channels = 0u32;
        while let Some(request) = written.recv().await {
            match request[4] {
                0x86 => {
                    channels += 1;
                    cid = Cid::new(0x1000 + channels);
                    let nonce: [u8; 8] = request[7..15].try_into().unwrap();
                    let answer = init_payload(&nonce, cid);
                    let mut report = report(&[0xFF, 0xFF, 0xFF, 0xFF, 0x86, 0x00, 0x11]);
                    report[7..24].copy_from_slice(&answer);
                    let _ = inject.send(Ok(report)).await;
                }
                0x90 => {
                    for _ in 0..=random() % 4 {
                        let mut garbage = [0u8; 64];
                        for chunk in garbage.chunks_mut(8) {
                            chunk.copy_from_slice(&random().to_le_bytes());
                        }
                        if random() % 8 != 0 {
                            garbage[..4].copy_from_slice(&cid.to_bytes());
                        }
                        if random() % 2 == 0 {
                            // A small BCNT, so that whole messages happen too.
                            garbage[5] = 0;
                        }
                        let _ = inject.send(Ok(garbage)).await;
                    }
                }
                _ => {}
            }
        }
    });

    let mut outcomes = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let result = timeout(GENEROUS, authenticator.pin_retries())
            .await
            .unwrap();
        let outcome = match result {
            Ok(_) => "ok",
            Err(DeviceError::Protocol(_)) => "protocol",
            Err(DeviceError::Timeout) => "timeout",
            Err(DeviceError::Hid(_)) => "hid",
            Err(DeviceError::Ctap(_)) => "ctap",
            Err(DeviceError::Busy) => "busy",
            Err(other) => panic!("the actor failed: {other:?}"),
        };
        outcomes.insert(outcome);
    }
    assert!(outcomes.contains("protocol"), "{outcomes:?}");
    assert_eq!(rig.registry.list().await.len(), 1);
}

// ---- no polling ----

/// The context switches of one thread of this process so far.
fn context_switches(tid: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/self/task/{tid}/status")).unwrap();
    status
        .lines()
        .filter(|line| line.contains("ctxt_switches"))
        .map(|line| {
            line.split_whitespace()
                .last()
                .unwrap()
                .parse::<u64>()
                .unwrap()
        })
        .sum()
}

#[test]
fn an_idle_registry_with_keys_attached_does_not_wake_up() {
    let (tid_tx, tid_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    // The registry, four actors (three HID keys, one card) and the fake keys all run on one
    // thread: any timer or periodic wakeup among them wakes this thread.
    let runtime_thread = std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let mut rig = Rig::start().await;
            let mut keys = Vec::new();
            for name in ["a", "b", "c"] {
                let (connection, mut fake) = fake_hid();
                rig.plug(name, Transport::Usb, connection).await;
                fake.probe(FAKE_CID).await;
                rig.added().await;
                keys.push(fake);
            }
            let (mut card, card_key) = probed_card(&mut rig, "reader").await;
            assert_eq!(rig.registry.list().await.len(), 4);
            // A request each, so that the actors have had timers running and stopped them.
            let hid_key = rig
                .registry
                .get(&DeviceId::new(Transport::Usb, "a"))
                .await
                .unwrap();
            let request = spawn_pin_retries(&hid_key);
            keys[0].expect_cbor(FAKE_CID).await;
            keys[0]
                .send(FAKE_CID, HidCommand::Cbor, &pin_retries_response(8))
                .await;
            request.await.unwrap().unwrap();
            let request = spawn_pin_retries(&card_key);
            card.answer(&pin_retries_response(8), 0x9000).await;
            request.await.unwrap().unwrap();
            let thread_self = std::fs::read_link("/proc/thread-self").unwrap();
            let tid = thread_self
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned();
            tid_tx.send(tid).unwrap();
            stopped.await.unwrap();
            drop((keys, card, rig));
        });
    });
    let tid = tid_rx.recv().unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = context_switches(&tid);
    std::thread::sleep(Duration::from_secs(3));
    let after = context_switches(&tid);
    stop.send(()).unwrap();
    runtime_thread.join().unwrap();
    assert_eq!(after - before, 0, "the idle runtime thread woke up");
}
