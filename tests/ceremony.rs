//! The ceremony end to end: virtual keys running the Trussed firmware behind the device
//! registry, the LoginID emulator on 127.0.0.1 (which verifies every registration with
//! webauthn-rs), and the LoginID token checked against the emulator's JWKS and its
//! `token/verify`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ceremony_support;

use std::time::Duration;

use ceremony_support::device_support::{self, GENEROUS};
use ceremony_support::*;
use ctap::command::get_info::OptionState;
use loginid_emulator::{Endpoint, Fault};
use passkeyd::ceremony::{
    CancelReason, CeremonyError, ErrorKind, NewPinPromptReason, PinPromptReason, RpIdError,
};
use tokio::time::Instant;
use virtkey::{Config, TouchPolicy};
use zeroize::Zeroizing;

const USER: &str = "alice@example.com";

fn with_pin(pin: &str) -> Config {
    Config {
        pin: Some(pin.to_owned()),
        ..Config::default()
    }
}

fn never_touched() -> Config {
    Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    }
}

// ---- user verification ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uv_required_with_a_pin_set_asks_for_the_pin() {
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("alpha", with_pin("1234")).await;
    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony).pins(&["1234"]).finish().await;
    assert_eq!(
        without_touch(&seen),
        [
            Seen::NeedsPin {
                key: "virtual_alpha".into(),
                retries: Some(8),
                reason: PinPromptReason::First
            },
            Seen::Registering("virtual_alpha".into()),
            Seen::Completed("virtual_alpha".into()),
        ]
    );
    let registration = result.unwrap();
    assert_eq!(registration.authenticator.as_str(), "virtual_alpha");
    assert_eq!(registration.attestation_format, "packed");
    rig.check_registration(&registration, USER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_without_a_pin_gets_one_when_uv_is_required() {
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("alpha", Config::default()).await;
    let key = rig.key("virtual_alpha").await;
    assert_eq!(key.info().unwrap().client_pin(), OptionState::Off);

    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    // "123" is below minPINLength: asked again without the key seeing it.
    let (seen, result) = Driver::new(ceremony)
        .new_pins(&["123", "24680"])
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [
            Seen::NeedsNewPin {
                key: "virtual_alpha".into(),
                min_length: 4,
                reason: NewPinPromptReason::First
            },
            Seen::NeedsNewPin {
                key: "virtual_alpha".into(),
                min_length: 4,
                reason: NewPinPromptReason::Malformed
            },
            Seen::Registering("virtual_alpha".into()),
            Seen::Completed("virtual_alpha".into()),
        ]
    );
    rig.check_registration(&result.unwrap(), USER).await;

    // The key has that PIN now, with every retry left.
    assert_eq!(key.info().unwrap().client_pin(), OptionState::On);
    assert_eq!(key.pin_retries().await.unwrap().pin_retries, 8);
    let second = rig
        .ceremonies
        .start(rig.request("bob@example.com").await)
        .unwrap();
    let (seen, result) = Driver::new(second).pins(&["24680"]).finish().await;
    assert!(
        matches!(
            seen[0],
            Seen::NeedsPin {
                retries: Some(8),
                ..
            }
        ),
        "{seen:?}"
    );
    rig.check_registration(&result.unwrap(), "bob@example.com")
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_pin_is_asked_again_with_the_retries_left() {
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("alpha", with_pin("1234")).await;
    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony)
        .pins(&["9999", "12", "1234"])
        .finish()
        .await;
    let pin = |retries, reason| Seen::NeedsPin {
        key: "virtual_alpha".into(),
        retries: Some(retries),
        reason,
    };
    assert_eq!(
        without_touch(&seen),
        [
            pin(8, PinPromptReason::First),
            pin(7, PinPromptReason::WrongPin),
            // Too short to be a PIN: the key never saw it, so no retry was spent.
            pin(7, PinPromptReason::Malformed),
            Seen::Registering("virtual_alpha".into()),
            Seen::Completed("virtual_alpha".into()),
        ]
    );
    rig.check_registration(&result.unwrap(), USER).await;
    // The right PIN resets the count.
    let key = rig.key("virtual_alpha").await;
    assert_eq!(key.pin_retries().await.unwrap().pin_retries, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unattended_pin_is_used_without_asking_and_a_wrong_one_ends_the_ceremony() {
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("alpha", with_pin("1234")).await;

    let mut request = rig.request(USER).await;
    request.pin = Some(Zeroizing::new("1234".to_owned()));
    let (seen, result) = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [
            Seen::Registering("virtual_alpha".into()),
            Seen::Completed("virtual_alpha".into())
        ]
    );
    rig.check_registration(&result.unwrap(), USER).await;

    let mut request = rig.request("bob@example.com").await;
    request.pin = Some(Zeroizing::new("4321".to_owned()));
    let (seen, result) = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await;
    assert_eq!(without_touch(&seen), [Seen::Failed(ErrorKind::PinInvalid)]);
    assert!(matches!(
        result,
        Err(CeremonyError::PinInvalid { retries: Some(7) })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_prompt_left_unanswered_ends_with_pin_required() {
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("alpha", with_pin("1234")).await;
    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony).finish().await;
    assert_eq!(seen.last(), Some(&Seen::Failed(ErrorKind::PinRequired)));
    assert!(matches!(result, Err(CeremonyError::PinRequired)));
    // Nobody listening at all: the same, without a prompt.
    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let result = tokio::time::timeout(GENEROUS, ceremony.result())
        .await
        .unwrap();
    assert!(matches!(result, Err(CeremonyError::PinRequired)));
}

// ---- exclude list ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_already_registered_for_the_user_is_refused_after_a_touch() {
    let mut rig = Rig::start(touch_only).await;
    let _key = rig.plug("alpha", Config::default()).await;
    let (_, first) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    rig.check_registration(&first.unwrap(), USER).await;

    let (seen, second) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [Seen::Failed(ErrorKind::CredentialExcluded)]
    );
    assert!(matches!(second, Err(CeremonyError::CredentialExcluded)));
    assert_eq!(rig.statuses("/fido2/v2/reg/complete").await, [Some(200)]);
}

// ---- cancellation, deadline, removal ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_while_waiting_for_a_touch_leaves_the_key_idle() {
    let mut rig = Rig::start(touch_only).await;
    let _key = rig.plug("alpha", never_touched()).await;
    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver
        .until(|s| *s == Seen::NeedsTouch("virtual_alpha".into()))
        .await;
    driver.ceremony.cancel();
    let (seen, result) = driver.finish().await;
    assert_eq!(
        seen,
        [
            Seen::NeedsTouch("virtual_alpha".into()),
            Seen::Cancelled(CancelReason::Caller)
        ]
    );
    assert!(matches!(
        result,
        Err(CeremonyError::Cancelled(CancelReason::Caller))
    ));
    // The key got CANCEL and finished: it takes the next request at once.
    let key = rig.key("virtual_alpha").await;
    key.wink().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_overall_deadline_ends_the_ceremony_and_cancels_the_key() {
    let mut rig = Rig::start(touch_only).await;
    let _key = rig.plug("alpha", never_touched()).await;
    let mut request = rig.request(USER).await;
    request.timeout = Some(Duration::from_secs(3));
    let started = Instant::now();
    let (seen, result) = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await;
    let elapsed = started.elapsed();
    assert_eq!(
        seen,
        [
            Seen::NeedsTouch("virtual_alpha".into()),
            Seen::Failed(ErrorKind::Timeout)
        ]
    );
    assert!(matches!(result, Err(CeremonyError::Timeout)));
    assert!(elapsed >= Duration::from_secs(3), "{elapsed:?}");
    let key = rig.key("virtual_alpha").await;
    key.wink().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unplugging_the_key_while_it_waits_for_a_touch_ends_the_ceremony() {
    let mut rig = Rig::start(touch_only).await;
    let mut key = rig.plug("alpha", never_touched()).await;
    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver
        .until(|s| *s == Seen::NeedsTouch("virtual_alpha".into()))
        .await;
    key.unplug();
    let (seen, result) = driver.finish().await;
    assert_eq!(seen.last(), Some(&Seen::Failed(ErrorKind::DeviceRemoved)));
    assert!(matches!(result, Err(CeremonyError::DeviceRemoved)));
}

// ---- LoginID ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reg_complete_failing_twice_with_503_is_retried() {
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("alpha", with_pin("1234")).await;
    rig.emulator.push_fault(
        Endpoint::RegComplete,
        Fault {
            status: Some(503),
            times: Some(2),
            ..Fault::default()
        },
    );
    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony).pins(&["1234"]).finish().await;
    assert_eq!(seen.last(), Some(&Seen::Completed("virtual_alpha".into())));
    rig.check_registration(&result.unwrap(), USER).await;
    assert_eq!(
        rig.statuses("/fido2/v2/reg/complete").await,
        [Some(503), Some(503), Some(200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn expired_and_foreign_authorization_tokens_are_rejected_before_any_key_is_used() {
    let mut rig = Rig::start(|config| config.protected = true).await;
    let _key = rig.plug("alpha", never_touched()).await;

    let expired = rig
        .emulator
        .mint_token(USER, &["reg:write"], -120, "authzToken");
    let request = passkeyd::ceremony::CeremonyRequest::new(
        USER,
        Some(passkeyd::loginid::Token::new(expired)),
    );
    let (seen, result) = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [Seen::Failed(ErrorKind::TokenRejected)]
    );
    match result {
        Err(CeremonyError::TokenRejected(api)) => assert_eq!(api.status, 401),
        other => panic!("{other:?}"),
    }

    let mallorys = rig.grant("mallory@example.com").await;
    let request = passkeyd::ceremony::CeremonyRequest::new(USER, Some(mallorys));
    let (seen, result) = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [Seen::Failed(ErrorKind::TokenRejected)]
    );
    match result {
        Err(CeremonyError::TokenRejected(api)) => assert_eq!(api.status, 403),
        other => panic!("{other:?}"),
    }

    let request = passkeyd::ceremony::CeremonyRequest::new(USER, None);
    let result = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await
        .1;
    assert_eq!(result.unwrap_err().kind(), ErrorKind::TokenRejected);
    assert_eq!(
        rig.statuses("/fido2/v2/reg/init").await,
        [Some(401), Some(403), Some(401)]
    );
    // The key never got a request: it is idle and was never asked for a touch.
    let key = rig.key("virtual_alpha").await;
    key.wink().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rp_id_the_origin_may_not_use_is_refused_before_any_key_is_used() {
    let mut rig = Rig::start(|config| {
        config.rp_id = "example.org".into();
    })
    .await;
    // A scripted key: after its probe, any report the host writes would show.
    let (connection, mut fake) = device_support::fake_hid();
    rig.devices
        .plug("fake", passkeyd::transport::Transport::Virtual, connection)
        .await;
    fake.probe(device_support::FAKE_CID).await;
    rig.devices.added().await;

    let (seen, result) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [Seen::Failed(ErrorKind::NotAuthorized)]
    );
    assert!(matches!(
        result,
        Err(CeremonyError::RpIdNotAllowed(RpIdError::NotASuffix))
    ));
    assert!(
        fake.written.try_recv().is_err(),
        "the key was sent something"
    );
}

// ---- key choice ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_two_keys_the_one_touched_wins_and_the_other_is_cancelled() {
    let mut rig = Rig::start(touch_only).await;
    let alpha = rig.plug("alpha", never_touched()).await;
    let bravo = rig.plug("bravo", never_touched()).await;
    let mut events = rig.devices.registry.subscribe().await.unwrap().events;

    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver
        .until(|s| *s == Seen::Selecting(vec!["virtual_alpha".into(), "virtual_bravo".into()]))
        .await;
    // Both keys wait for a touch (authenticatorSelection); the user touches bravo.
    busy_flags(&mut events, &["virtual_alpha", "virtual_bravo"], true).await;
    bravo.key.set_touch(TouchPolicy::Auto);
    // alpha gets CANCEL and goes idle; bravo makes the credential.
    busy_flags(&mut events, &["virtual_alpha"], false).await;
    let (seen, result) = driver.finish().await;
    let registration = result.unwrap();
    assert_eq!(registration.authenticator.as_str(), "virtual_bravo");
    assert_eq!(
        without_touch(&seen),
        [
            Seen::Selecting(vec!["virtual_alpha".into(), "virtual_bravo".into()]),
            Seen::Registering("virtual_bravo".into()),
            Seen::Completed("virtual_bravo".into()),
        ]
    );
    rig.check_registration(&registration, USER).await;
    rig.key("virtual_alpha").await.wink().await.unwrap();
    drop(alpha);
}

// ---- U2F and NFC ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u2f_only_key_registers_with_fido_u2f_when_uv_is_discouraged() {
    let mut rig = Rig::start(touch_only).await;
    let _key = rig
        .plug(
            "legacy",
            Config {
                u2f_only: true,
                ..Config::default()
            },
        )
        .await;
    assert!(rig.key("virtual_legacy").await.info().is_none());
    let (seen, result) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    let registration = result.unwrap();
    assert_eq!(registration.attestation_format, "fido-u2f");
    assert_eq!(
        without_touch(&seen),
        [
            Seen::Registering("virtual_legacy".into()),
            Seen::Completed("virtual_legacy".into())
        ]
    );
    rig.check_registration(&registration, USER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u2f_only_key_cannot_serve_a_request_requiring_uv() {
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig
        .plug(
            "legacy",
            Config {
                u2f_only: true,
                ..Config::default()
            },
        )
        .await;
    let (seen, result) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [Seen::Failed(ErrorKind::NotSupported)]
    );
    assert!(matches!(
        result,
        Err(CeremonyError::NotSupported(
            passkeyd::ceremony::NotSupported::U2fOnly
        ))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_over_nfc_with_a_pin() {
    let mut rig = Rig::start(|_| {}).await;
    let _card = rig.tap("reader0", with_pin("1234")).await;
    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony).pins(&["1234"]).finish().await;
    assert_eq!(seen.last(), Some(&Seen::Completed("nfc_reader0".into())));
    let registration = result.unwrap();
    assert_eq!(registration.authenticator.as_str(), "nfc_reader0");
    assert_eq!(registration.attestation_format, "packed");
    rig.check_registration(&registration, USER).await;
}

// ---- PIN blocking ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_wrong_pins_in_a_row_ask_for_a_replug() {
    let mut rig = Rig::start(|_| {}).await;
    let _key = rig.plug("alpha", with_pin("1234")).await;
    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony)
        .pins(&["1111", "2222", "3333"])
        .finish()
        .await;
    let pin = |retries, reason| Seen::NeedsPin {
        key: "virtual_alpha".into(),
        retries: Some(retries),
        reason,
    };
    assert_eq!(
        without_touch(&seen),
        [
            pin(8, PinPromptReason::First),
            pin(7, PinPromptReason::WrongPin),
            pin(6, PinPromptReason::WrongPin),
            Seen::Failed(ErrorKind::PinAuthBlocked),
        ]
    );
    assert!(matches!(result, Err(CeremonyError::PinAuthBlocked)));
}

/// getInfo of a CTAP 2.1 key with a PIN set: protocol 2 only.
fn pin_key_info() -> ciborium::Value {
    use ciborium::Value;
    Value::Map(vec![
        (
            Value::Integer(1.into()),
            Value::Array(vec![
                Value::Text("FIDO_2_0".into()),
                Value::Text("FIDO_2_1".into()),
            ]),
        ),
        (
            Value::Integer(3.into()),
            Value::Bytes(device_support::FAKE_AAGUID.to_vec()),
        ),
        (
            Value::Integer(4.into()),
            Value::Map(vec![
                (Value::Text("rk".into()), Value::Bool(true)),
                (Value::Text("clientPin".into()), Value::Bool(true)),
                (Value::Text("pinUvAuthToken".into()), Value::Bool(true)),
            ]),
        ),
        (
            Value::Integer(6.into()),
            Value::Array(vec![Value::Integer(2.into())]),
        ),
    ])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pin_blocked_by_the_last_wrong_attempt_ends_the_ceremony() {
    use ctap::ctaphid::Command as HidCommand;
    use device_support::{FAKE_CID as CID, ok_response};

    let mut rig = Rig::start(|_| {}).await;
    // A scripted key (the firmware cannot be power-cycled, so its PIN cannot be used up).
    let (connection, mut fake) = device_support::fake_hid();
    rig.devices
        .plug("fake", passkeyd::transport::Transport::Virtual, connection)
        .await;
    fake.answer_init(CID).await;
    assert_eq!(fake.expect_cbor(CID).await, [0x04]);
    fake.send(CID, HidCommand::Cbor, &ok_response(&pin_key_info()))
        .await;
    rig.devices.added().await;

    let key = tokio::spawn(async move {
        // getPINRetries: one left.
        assert_eq!(
            fake.expect_cbor(CID).await,
            device_support::PIN_RETRIES_REQUEST
        );
        fake.send(
            CID,
            HidCommand::Cbor,
            &device_support::pin_retries_response(1),
        )
        .await;
        // getKeyAgreement with protocol 2: clientPIN {1: 2, 2: 2}.
        assert_eq!(
            fake.expect_cbor(CID).await,
            [0x06, 0xA2, 0x01, 0x02, 0x02, 0x02]
        );
        let secret = p256::SecretKey::random(&mut rand::rngs::OsRng);
        let cose =
            ctap::cose::CoseKey::from_p256(&secret.public_key(), ctap::cose::alg::ECDH_ES_HKDF_256)
                .to_value();
        let answer = ciborium::Value::Map(vec![(ciborium::Value::Integer(1.into()), cose)]);
        fake.send(CID, HidCommand::Cbor, &ok_response(&answer))
            .await;
        // getPinUvAuthTokenUsingPinWithPermissions (subcommand 9, protocol 2): the wrong
        // PIN used the last retry.
        let request = fake.expect_cbor(CID).await;
        assert_eq!(request[0], 0x06);
        assert_eq!(request[2..6], [0x01, 0x02, 0x02, 0x09]);
        fake.send(CID, HidCommand::Cbor, &[0x32]).await;
        fake
    });

    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony).pins(&["0000"]).finish().await;
    assert_eq!(
        without_touch(&seen),
        [
            Seen::NeedsPin {
                key: "virtual_fake".into(),
                retries: Some(1),
                reason: PinPromptReason::First
            },
            Seen::Failed(ErrorKind::PinBlocked),
        ]
    );
    assert!(matches!(result, Err(CeremonyError::PinBlocked)));
    let mut fake = key.await.unwrap();
    // Nothing more was asked of the key: no further prompt, no makeCredential.
    assert!(fake.written.try_recv().is_err());
}

// ---- more on the exclude list ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exclude_list_longer_than_the_key_takes_is_probed_in_batches() {
    let mut rig = Rig::start(touch_only).await;
    let _alpha = rig.plug("alpha", Config::default()).await;
    // Ten passkeys elsewhere, then one on alpha: the user's list outgrows the firmware's
    // maxCredentialCountInList (10), and alpha's id is in the second batch.
    for _ in 0..10 {
        rig.register_elsewhere(USER).await;
    }
    let (_, first) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    rig.check_registration(&first.unwrap(), USER).await;

    let (seen, again) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [Seen::Failed(ErrorKind::CredentialExcluded)]
    );
    assert!(matches!(again, Err(CeremonyError::CredentialExcluded)));

    // A new key holds none of the eleven: both batches are probed, none hits, and the
    // credential is made. It is chosen by name, as two keys are present.
    let _bravo = rig.plug("bravo", Config::default()).await;
    let mut request = rig.request(USER).await;
    request.authenticator = Some(passkeyd::transport::DeviceId::new(
        passkeyd::transport::Transport::Virtual,
        "bravo",
    ));
    let (seen, result) = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await;
    assert_eq!(seen.last(), Some(&Seen::Completed("virtual_bravo".into())));
    rig.check_registration(&result.unwrap(), USER).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u2f_only_key_already_registered_is_refused_after_a_touch() {
    let mut rig = Rig::start(touch_only).await;
    let _key = rig
        .plug(
            "legacy",
            Config {
                u2f_only: true,
                ..Config::default()
            },
        )
        .await;
    let (_, first) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    rig.check_registration(&first.unwrap(), USER).await;
    let (seen, second) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    assert_eq!(
        seen,
        [
            Seen::NeedsTouch("virtual_legacy".into()),
            Seen::Failed(ErrorKind::CredentialExcluded)
        ]
    );
    assert!(matches!(second, Err(CeremonyError::CredentialExcluded)));
}

// ---- more on key choice and cancellation ----

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_u2f_only_key_takes_part_in_selection_by_touch() {
    let mut rig = Rig::start(touch_only).await;
    let _alpha = rig.plug("alpha", never_touched()).await;
    let legacy = rig
        .plug(
            "legacy",
            Config {
                u2f_only: true,
                touch: TouchPolicy::Never,
                ..Config::default()
            },
        )
        .await;
    let mut events = rig.devices.registry.subscribe().await.unwrap().events;
    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver
        .until(|s| *s == Seen::Selecting(vec!["virtual_alpha".into(), "virtual_legacy".into()]))
        .await;
    busy_flags(&mut events, &["virtual_alpha", "virtual_legacy"], true).await;
    legacy.key.set_touch(TouchPolicy::Auto);
    let (seen, result) = driver.finish().await;
    let registration = result.unwrap();
    assert_eq!(registration.authenticator.as_str(), "virtual_legacy");
    assert_eq!(registration.attestation_format, "fido-u2f");
    assert_eq!(seen.last(), Some(&Seen::Completed("virtual_legacy".into())));
    rig.check_registration(&registration, USER).await;
    rig.key("virtual_alpha").await.wink().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_plugged_during_selection_join_it() {
    let mut rig = Rig::start(touch_only).await;
    let _alpha = rig.plug("alpha", never_touched()).await;
    let _bravo = rig.plug("bravo", never_touched()).await;
    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver
        .until(|s| *s == Seen::Selecting(vec!["virtual_alpha".into(), "virtual_bravo".into()]))
        .await;
    // Plugged in and touched at once.
    let _charlie = rig.plug("charlie", Config::default()).await;
    let (seen, result) = driver.finish().await;
    assert_eq!(result.unwrap().authenticator.as_str(), "virtual_charlie");
    assert_eq!(
        without_touch(&seen),
        [
            Seen::Selecting(vec!["virtual_alpha".into(), "virtual_bravo".into()]),
            Seen::Selecting(vec![
                "virtual_alpha".into(),
                "virtual_bravo".into(),
                "virtual_charlie".into()
            ]),
            Seen::Registering("virtual_charlie".into()),
            Seen::Completed("virtual_charlie".into()),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_key_the_ceremony_waits_for_one() {
    let mut rig = Rig::start(touch_only).await;
    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver.until(|s| *s == Seen::Selecting(Vec::new())).await;
    let _alpha = rig.plug("alpha", Config::default()).await;
    let (seen, result) = driver.finish().await;
    rig.check_registration(&result.unwrap(), USER).await;
    assert_eq!(seen.last(), Some(&Seen::Completed("virtual_alpha".into())));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_requested_key_that_is_not_present_is_reported() {
    let mut rig = Rig::start(touch_only).await;
    let _alpha = rig.plug("alpha", Config::default()).await;
    let mut request = rig.request(USER).await;
    request.authenticator = Some(passkeyd::transport::DeviceId::new(
        passkeyd::transport::Transport::Usb,
        "ghost",
    ));
    let (seen, result) = Driver::new(rig.ceremonies.start(request).unwrap())
        .finish()
        .await;
    assert_eq!(
        without_touch(&seen),
        [Seen::Failed(ErrorKind::NoAuthenticator)]
    );
    assert!(matches!(result, Err(CeremonyError::NoAuthenticator)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_and_a_dropped_handle_cancel_the_ceremony() {
    let mut rig = Rig::start(touch_only).await;
    let _alpha = rig.plug("alpha", never_touched()).await;

    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver
        .until(|s| *s == Seen::NeedsTouch("virtual_alpha".into()))
        .await;
    driver
        .ceremony
        .canceller()
        .cancel_with(CancelReason::Shutdown);
    let (seen, result) = driver.finish().await;
    assert_eq!(seen.last(), Some(&Seen::Cancelled(CancelReason::Shutdown)));
    assert!(matches!(
        result,
        Err(CeremonyError::Cancelled(CancelReason::Shutdown))
    ));

    // Once the registry shows the key idle, every event of the first ceremony is out.
    rig.wait_idle("virtual_alpha").await;
    let mut events = rig.devices.registry.subscribe().await.unwrap().events;
    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver
        .until(|s| *s == Seen::NeedsTouch("virtual_alpha".into()))
        .await;
    busy_flags(&mut events, &["virtual_alpha"], true).await;
    // The owner goes away: the key gets CANCEL and goes idle.
    drop(driver);
    busy_flags(&mut events, &["virtual_alpha"], false).await;
    rig.key("virtual_alpha").await.wink().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_requests_are_refused_before_anything_is_sent() {
    let rig = Rig::start(|_| {}).await;
    let error = rig
        .ceremonies
        .start(passkeyd::ceremony::CeremonyRequest::new(
            "al\u{202E}ice",
            Some(passkeyd::loginid::Token::new("eyJ.e30.c2ln")),
        ))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    let error = rig
        .ceremonies
        .start(passkeyd::ceremony::CeremonyRequest::new(
            USER,
            Some(passkeyd::loginid::Token::new("a b")),
        ))
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::InvalidArgument);
    assert!(rig.statuses("/fido2/v2/reg/init").await.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_that_cannot_serve_the_request_take_no_part_in_selection() {
    let mut rig = Rig::start(|_| {}).await;
    let _legacy = rig
        .plug(
            "legacy",
            Config {
                u2f_only: true,
                touch: TouchPolicy::Never,
                ..Config::default()
            },
        )
        .await;
    let _alpha = rig.plug("alpha", with_pin("1234")).await;
    // UV is required: the U2F-only key cannot give it, so alpha is the only candidate and
    // is used without a selection touch.
    let ceremony = rig.ceremonies.start(rig.request(USER).await).unwrap();
    let (seen, result) = Driver::new(ceremony).pins(&["1234"]).finish().await;
    assert_eq!(
        without_touch(&seen),
        [
            Seen::NeedsPin {
                key: "virtual_alpha".into(),
                retries: Some(8),
                reason: PinPromptReason::First
            },
            Seen::Registering("virtual_alpha".into()),
            Seen::Completed("virtual_alpha".into()),
        ]
    );
    rig.check_registration(&result.unwrap(), USER).await;
    rig.key("virtual_legacy").await.wink().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ctap2_0_key_is_selected_with_an_empty_pin_auth_and_cancelled_when_it_loses() {
    use ctap::ctaphid::Command as HidCommand;
    use device_support::FAKE_CID as CID;

    let mut rig = Rig::start(touch_only).await;
    // A scripted CTAP 2.0 key (getInfo versions ["FIDO_2_0"]).
    let (connection, mut fake) = device_support::fake_hid();
    rig.devices
        .plug("old", passkeyd::transport::Transport::Virtual, connection)
        .await;
    fake.probe(CID).await;
    rig.devices.added().await;
    let alpha = rig.plug("alpha", never_touched()).await;
    let mut events = rig.devices.registry.subscribe().await.unwrap().events;

    let old_key = tokio::spawn(async move {
        // The touch request: makeCredential for ".dummy" with a zero-length
        // pinUvAuthParam (0x08: h'') and protocol 1 (0x09: 1).
        let request = fake.expect_cbor(CID).await;
        assert_eq!(request[0], 0x01);
        assert!(request.windows(6).any(|w| w == b".dummy"));
        assert_eq!(request[request.len() - 4..], [0x08, 0x40, 0x09, 0x01]);
        fake.keepalive(CID, 0x02).await;
        // The other key won: CTAPHID_CANCEL, answered as a key does.
        let cancel = fake.next_message().await;
        assert_eq!((cancel.cid, cancel.cmd), (CID, HidCommand::Cancel));
        fake.send(CID, HidCommand::Cbor, &[0x2D]).await;
        fake
    });

    let mut driver = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    driver
        .until(|s| *s == Seen::Selecting(vec!["virtual_alpha".into(), "virtual_old".into()]))
        .await;
    busy_flags(&mut events, &["virtual_alpha", "virtual_old"], true).await;
    alpha.key.set_touch(TouchPolicy::Auto);
    let (seen, result) = driver.finish().await;
    assert_eq!(seen.last(), Some(&Seen::Completed("virtual_alpha".into())));
    rig.check_registration(&result.unwrap(), USER).await;
    let mut fake = old_key.await.unwrap();
    assert!(fake.written.try_recv().is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_in_use_by_another_ceremony_is_busy() {
    let mut rig = Rig::start(touch_only).await;
    let _alpha = rig.plug("alpha", never_touched()).await;
    let mut first = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap());
    first
        .until(|s| *s == Seen::NeedsTouch("virtual_alpha".into()))
        .await;
    let (seen, result) = Driver::new(
        rig.ceremonies
            .start(rig.request("bob@example.com").await)
            .unwrap(),
    )
    .finish()
    .await;
    assert_eq!(without_touch(&seen), [Seen::Failed(ErrorKind::Busy)]);
    assert!(matches!(result, Err(CeremonyError::Busy)));
    first.ceremony.cancel();
    let (_, first) = first.finish().await;
    assert!(matches!(
        first,
        Err(CeremonyError::Cancelled(CancelReason::Caller))
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rp_that_wants_no_attestation_gets_none() {
    let mut rig = Rig::start(|config| {
        touch_only(config);
        config.attestation = loginid_emulator::Attestation::None;
    })
    .await;
    let _alpha = rig.plug("alpha", Config::default()).await;
    let (_, result) = Driver::new(rig.ceremonies.start(rig.request(USER).await).unwrap())
        .finish()
        .await;
    let registration = result.unwrap();
    assert_eq!(registration.attestation_format, "none");
    rig.check_registration(&registration, USER).await;
}
