//! The virtual key over CTAPHID, spoken to in raw 64-byte reports.
// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use ciborium::Value;
use common::*;
use p256::ecdsa::{DerSignature, VerifyingKey, signature::Verifier as _};
use virtkey::{Config, TouchPolicy, VirtKey};
use x509_parser::{oid_registry, prelude::*};

fn start(config: Config) -> VirtKey {
    VirtKey::start(config).unwrap()
}

#[test]
fn init_round_trip() {
    let key = start(Config::default());
    let nonce = [0xde, 0xad, 0xbe, 0xef, 0x01, 0x02, 0x03, 0x04];
    send(&key, BROADCAST, CMD_INIT, &nonce);
    let reply = recv(&key, Instant::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(reply.cid, BROADCAST);
    assert_eq!(reply.cmd, CMD_INIT);
    assert_eq!(&reply.data[..8], &nonce);
    let cid = u32::from_be_bytes(reply.data[8..12].try_into().unwrap());
    assert_ne!(cid, 0);
    assert_ne!(cid, BROADCAST);
    // Protocol version 2, device version 0.3.0, capabilities WINK | CBOR (no NMSG).
    assert_eq!(&reply.data[12..], &[0x02, 0x00, 0x03, 0x00, 0x05]);

    // The new channel works; PING echoes a multi-packet payload.
    let payload: Vec<u8> = (0..300u16).map(|i| (i * 7) as u8).collect();
    let outcome = transact(&key, cid, CMD_PING, &payload, Duration::from_secs(5));
    assert_eq!(outcome.reply.cmd, CMD_PING);
    assert_eq!(outcome.reply.data, payload);
}

#[test]
fn wink_is_answered() {
    let key = start(Config::default());
    let cid = init(&key);
    let outcome = transact(&key, cid, CMD_WINK, &[], Duration::from_secs(5));
    assert_eq!(
        outcome.reply,
        Message {
            cid,
            cmd: CMD_WINK,
            data: vec![]
        }
    );
    assert_eq!(key.wink_count(), 1);
}

#[test]
fn get_info_reports_the_aaguid() {
    let key = start(Config::default());
    let cid = init(&key);
    let (status, body) = cbor(&key, cid, 0x04, None);
    assert_eq!(status, 0x00);
    let info = decode(&body);
    assert_eq!(
        get(&info, &int(0x03)),
        Some(&Value::Bytes(key.aaguid().to_vec()))
    );
    let versions = get(&info, &int(0x01)).unwrap().as_array().unwrap();
    assert!(versions.contains(&text("FIDO_2_0")));
    assert!(versions.contains(&text("U2F_V2")));
    assert_eq!(get(&info, &int(0x05)), Some(&int(3072)));
    let transports = get(&info, &int(0x09)).unwrap().as_array().unwrap();
    assert_eq!(transports, &vec![text("nfc"), text("usb")]);
    let options = get(&info, &int(0x04)).unwrap();
    assert_eq!(get(options, &text("clientPin")), Some(&Value::Bool(false)));
}

#[test]
fn preset_pin_is_set_through_client_pin() {
    let key = start(Config {
        pin: Some("1234".into()),
        ..Config::default()
    });
    let cid = init(&key);
    let (status, body) = cbor(&key, cid, 0x04, None);
    assert_eq!(status, 0x00);
    let options = get(&decode(&body), &int(0x04)).unwrap().clone();
    assert_eq!(get(&options, &text("clientPin")), Some(&Value::Bool(true)));
    // getPINRetries: 8 left.
    let request = Value::Map(vec![(int(1), int(1)), (int(2), int(1))]);
    let (status, body) = cbor(&key, cid, 0x06, Some(&request));
    assert_eq!(status, 0x00);
    assert_eq!(get(&decode(&body), &int(3)), Some(&int(8)));
    // With a PIN set, a discoverable credential without pinUvAuthParam needs one
    // (makeCredUvNotRqd only covers non-discoverable ones).
    let Value::Map(mut request) = make_credential_request() else {
        unreachable!()
    };
    request.push((int(7), Value::Map(vec![(text("rk"), Value::Bool(true))])));
    let (status, _) = cbor(&key, cid, 0x01, Some(&Value::Map(request)));
    assert_eq!(status, 0x36);
    let (status, _) = cbor(&key, cid, 0x01, Some(&make_credential_request()));
    assert_eq!(status, 0x00);
}

#[test]
fn make_credential_gives_packed_attestation_with_our_certificate() {
    let key = start(Config::default());
    let cid = init(&key);
    let started = Instant::now();
    let (status, body) = cbor(&key, cid, 0x01, Some(&make_credential_request()));
    assert_eq!(status, 0x00);
    assert!(started.elapsed() < Duration::from_secs(10));
    let response = decode(&body);
    assert_eq!(get(&response, &int(1)), Some(&text("packed")));
    let Some(Value::Bytes(auth_data)) = get(&response, &int(2)) else {
        panic!("no authData")
    };
    // rpIdHash(32) flags(1) signCount(4) then attestedCredentialData starting with the AAGUID.
    assert_eq!(auth_data[32] & 0x41, 0x41, "UP and AT flags");
    assert_eq!(&auth_data[37..53], &key.aaguid());

    let statement = get(&response, &int(3)).unwrap();
    assert_eq!(get(statement, &text("alg")), Some(&int(-7)));
    let Some(Value::Bytes(signature)) = get(statement, &text("sig")) else {
        panic!("no sig")
    };
    let x5c = get(statement, &text("x5c")).unwrap().as_array().unwrap();
    assert_eq!(x5c.len(), 1);
    let Value::Bytes(cert_der) = &x5c[0] else {
        panic!("x5c[0] not bytes")
    };
    assert_eq!(cert_der, &key.attestation_cert_der());

    // WebAuthn §8.2.1 requirements on the attestation certificate.
    let (rest, cert) = X509Certificate::from_der(cert_der).unwrap();
    assert!(rest.is_empty());
    assert_eq!(cert.version(), X509Version::V3);
    let subject = cert.subject();
    let attr = |oid| {
        subject
            .iter_by_oid(&oid)
            .map(|a| a.as_str().unwrap().to_owned())
            .collect::<Vec<_>>()
    };
    assert_eq!(attr(oid_registry::OID_X509_COUNTRY_NAME), vec!["US"]);
    assert_eq!(
        attr(oid_registry::OID_X509_ORGANIZATION_NAME),
        vec!["passkeyd"]
    );
    assert_eq!(
        attr(oid_registry::OID_X509_ORGANIZATIONAL_UNIT),
        vec!["Authenticator Attestation"]
    );
    assert_eq!(
        attr(oid_registry::OID_X509_COMMON_NAME),
        vec!["passkeyd virtkey attestation"]
    );
    let constraints = cert.basic_constraints().unwrap().unwrap();
    assert!(!constraints.value.ca);
    let aaguid_oid = oid_registry::Oid::from(&[1, 3, 6, 1, 4, 1, 45724, 1, 1, 4]).unwrap();
    let extension = cert
        .extensions()
        .iter()
        .find(|e| e.oid == aaguid_oid)
        .expect("id-fido-gen-ce-aaguid");
    assert!(!extension.critical);
    let mut expected = vec![0x04, 0x10];
    expected.extend_from_slice(&key.aaguid());
    assert_eq!(extension.value, expected.as_slice());

    // The certificate chains to the test CA.
    let ca_der = key.attestation_ca_der();
    let (_, ca) = X509Certificate::from_der(&ca_der).unwrap();
    assert_eq!(cert.issuer(), ca.subject());
    assert_eq!(
        attr_of(ca.subject(), oid_registry::OID_X509_COMMON_NAME),
        "passkeyd virtkey test CA"
    );
    assert!(ca.basic_constraints().unwrap().unwrap().value.ca);
    let ca_key = VerifyingKey::from_sec1_bytes(&ca.public_key().subject_public_key.data).unwrap();
    let cert_signature = DerSignature::try_from(cert.signature_value.data.as_ref()).unwrap();
    ca_key
        .verify(cert.tbs_certificate.as_ref(), &cert_signature)
        .unwrap();

    // And the attestation signature verifies with the certificate's key.
    let leaf_key =
        VerifyingKey::from_sec1_bytes(&cert.public_key().subject_public_key.data).unwrap();
    let mut signed = auth_data.clone();
    signed.extend_from_slice(&CLIENT_DATA_HASH);
    leaf_key
        .verify(
            &signed,
            &DerSignature::try_from(signature.as_slice()).unwrap(),
        )
        .unwrap();
}

fn attr_of(name: &X509Name<'_>, oid: oid_registry::Oid<'_>) -> String {
    name.iter_by_oid(&oid)
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_owned()
}

#[test]
fn delayed_touch_sends_upneeded_keepalives() {
    let key = start(Config {
        touch: TouchPolicy::AutoAfter(Duration::from_millis(300)),
        ..Config::default()
    });
    let cid = init(&key);
    let started = Instant::now();
    let outcome = transact(
        &key,
        cid,
        CMD_CBOR,
        &make_credential_message(),
        Duration::from_secs(10),
    );
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(outcome.reply.cmd, CMD_CBOR);
    assert_eq!(outcome.reply.data[0], 0x00);
    assert!(
        outcome.keepalives.contains(&0x02),
        "{:?}",
        outcome.keepalives
    );
    assert!(outcome.keepalives.iter().all(|&s| s == 0x01 || s == 0x02));
}

#[test]
fn deny_gives_operation_denied() {
    let key = start(Config {
        touch: TouchPolicy::Deny,
        ..Config::default()
    });
    let cid = init(&key);
    let (status, _) = cbor(&key, cid, 0x01, Some(&make_credential_request()));
    assert_eq!(status, 0x27);
}

#[test]
fn cancel_ends_a_request_waiting_for_a_touch() {
    let key = start(Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    });
    let cid = init(&key);
    send(&key, cid, CMD_CBOR, &make_credential_message());
    // Wait until the key says it needs a touch.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let message = recv(&key, deadline).expect("UPNEEDED keepalive");
        assert_eq!(message.cmd, CMD_KEEPALIVE);
        if message.data == [0x02] {
            break;
        }
    }
    let cancelled = Instant::now();
    send(&key, cid, CMD_CANCEL, &[]);
    // Far below the firmware's 30 s presence timeout: the answer came from CANCEL. The bound
    // is loose so that a loaded machine does not fail it.
    let outcome = wait_reply(&key, cid, cancelled + Duration::from_secs(5));
    assert!(cancelled.elapsed() < Duration::from_secs(5));
    assert_eq!(
        outcome.reply,
        Message {
            cid,
            cmd: CMD_CBOR,
            data: vec![0x2d]
        }
    );
    // The firmware stopped waiting: the key answers the next request normally.
    let (status, _) = cbor(&key, cid, 0x04, None);
    assert_eq!(status, 0x00);
    // A touch now makes a new request succeed.
    key.set_touch(TouchPolicy::Auto);
    let (status, _) = cbor(&key, cid, 0x01, Some(&make_credential_request()));
    assert_eq!(status, 0x00);
}

#[test]
fn set_touch_releases_a_waiting_request() {
    let key = start(Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    });
    let cid = init(&key);
    send(&key, cid, CMD_CBOR, &make_credential_message());
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let message = recv(&key, deadline).expect("UPNEEDED keepalive");
        if message.data == [0x02] {
            break;
        }
    }
    key.set_touch(TouchPolicy::Auto);
    let outcome = wait_reply(&key, cid, Instant::now() + Duration::from_secs(10));
    assert_eq!(outcome.reply.cmd, CMD_CBOR);
    assert_eq!(outcome.reply.data[0], 0x00);
}

#[test]
fn other_channel_gets_channel_busy_while_the_firmware_works() {
    let key = start(Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    });
    let a = init(&key);
    let b = init(&key);
    send(&key, a, CMD_CBOR, &make_credential_message());
    send(&key, b, CMD_PING, &[1, 2, 3]);
    let deadline = Instant::now() + Duration::from_secs(5);
    let busy = loop {
        let message = recv(&key, deadline).expect("CHANNEL_BUSY");
        if message.cid == b {
            break message;
        }
    };
    assert_eq!(busy.cmd, CMD_ERROR);
    assert_eq!(busy.data, vec![0x06]);
    send(&key, a, CMD_CANCEL, &[]);
    // Far below the firmware's 30 s presence timeout, loose enough for a loaded machine.
    let outcome = wait_reply(&key, a, Instant::now() + Duration::from_secs(5));
    assert_eq!(outcome.reply.data, vec![0x2d]);
}

/// U2F registration request (FIDO U2F raw message formats §4.1), extended-length encoding.
fn u2f_register_apdu() -> Vec<u8> {
    let mut apdu = vec![0x00, 0x01, 0x03, 0x00, 0x00, 0x00, 0x40];
    apdu.extend_from_slice(&[0xc0; 32]); // challenge parameter
    apdu.extend_from_slice(&[0xa0; 32]); // application parameter
    apdu.extend_from_slice(&[0x00, 0x00]);
    apdu
}

#[test]
fn u2f_register_over_msg() {
    let key = start(Config::default());
    let cid = init(&key);
    let outcome = transact(
        &key,
        cid,
        CMD_MSG,
        &u2f_register_apdu(),
        Duration::from_secs(10),
    );
    assert_eq!(outcome.reply.cmd, CMD_MSG);
    let data = outcome.reply.data;
    assert_eq!(data[0], 0x05);
    assert_eq!(data[1], 0x04, "uncompressed public key");
    assert_eq!(&data[data.len() - 2..], &[0x90, 0x00]);
    // The registration carries the same attestation certificate.
    let handle_len = data[66] as usize;
    let cert_start = 67 + handle_len;
    let cert = key.attestation_cert_der();
    assert_eq!(&data[cert_start..cert_start + cert.len()], cert.as_slice());
}

#[test]
fn u2f_only_key_refuses_cbor_but_speaks_u2f() {
    let key = start(Config {
        u2f_only: true,
        ..Config::default()
    });
    send(&key, BROADCAST, CMD_INIT, &[9; 8]);
    let reply = recv(&key, Instant::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(reply.data[16], 0x01, "WINK only, no CBOR capability");
    let cid = u32::from_be_bytes(reply.data[8..12].try_into().unwrap());
    let outcome = transact(&key, cid, CMD_CBOR, &[0x04], Duration::from_secs(5));
    assert_eq!(
        outcome.reply,
        Message {
            cid,
            cmd: CMD_ERROR,
            data: vec![0x01]
        }
    );
    // U2F_VERSION over MSG.
    let outcome = transact(
        &key,
        cid,
        CMD_MSG,
        &[0x00, 0x03, 0x00, 0x00, 0x00, 0x00, 0x00],
        Duration::from_secs(5),
    );
    assert_eq!(outcome.reply.data, b"U2F_V2\x90\x00".to_vec());
    let outcome = transact(
        &key,
        cid,
        CMD_MSG,
        &u2f_register_apdu(),
        Duration::from_secs(10),
    );
    assert_eq!(outcome.reply.data[0], 0x05);
}

#[test]
fn u2f_register_without_touch_is_conditions_not_satisfied() {
    let key = start(Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    });
    let cid = init(&key);
    let outcome = transact(
        &key,
        cid,
        CMD_MSG,
        &u2f_register_apdu(),
        Duration::from_secs(5),
    );
    assert_eq!(outcome.reply.data, vec![0x69, 0x85]);
}

#[test]
fn bad_frames_get_ctaphid_errors() {
    let key = start(Config::default());
    let cid = init(&key);
    // A command on a channel that was never allocated.
    send(&key, 0x0102_0304, CMD_PING, &[1]);
    let reply = recv(&key, Instant::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(
        reply,
        Message {
            cid: 0x0102_0304,
            cmd: CMD_ERROR,
            data: vec![0x0b]
        }
    );
    // A continuation packet out of sequence.
    let mut first = [0u8; 64];
    first[..4].copy_from_slice(&cid.to_be_bytes());
    first[4] = 0x80 | CMD_PING;
    first[5..7].copy_from_slice(&100u16.to_be_bytes());
    key.write_report(&first).unwrap();
    let mut cont = [0u8; 64];
    cont[..4].copy_from_slice(&cid.to_be_bytes());
    cont[4] = 0x05;
    key.write_report(&cont).unwrap();
    let reply = recv(&key, Instant::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(
        reply,
        Message {
            cid,
            cmd: CMD_ERROR,
            data: vec![0x04]
        }
    );
    // A message longer than maxMsgSize.
    let mut long = [0u8; 64];
    long[..4].copy_from_slice(&cid.to_be_bytes());
    long[4] = 0x80 | CMD_CBOR;
    long[5..7].copy_from_slice(&4000u16.to_be_bytes());
    key.write_report(&long).unwrap();
    let reply = recv(&key, Instant::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(reply.data, vec![0x03]);
    // A message whose continuation never comes.
    key.write_report(&first).unwrap();
    let reply = recv(&key, Instant::now() + Duration::from_secs(5)).unwrap();
    assert_eq!(
        reply,
        Message {
            cid,
            cmd: CMD_ERROR,
            data: vec![0x05]
        }
    );
}

#[test]
fn report_pacing_spaces_reports() {
    let key = start(Config {
        report_pacing: Some(Duration::from_millis(10)),
        ..Config::default()
    });
    let cid = init(&key);
    let payload = vec![0x5a; 57 + 4 * 59];
    // The key paces from its side: the five reports of the echo become readable 10 ms apart,
    // the first 10 ms after it is produced, however late the host reads.
    let sent = Instant::now();
    send(&key, cid, CMD_PING, &payload);
    let deadline = sent + Duration::from_secs(5);
    let first = key.read_report(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(first[4], 0x80 | CMD_PING);
    for seq in 0..4u8 {
        let report = key
            .read_report(deadline.saturating_duration_since(Instant::now()))
            .unwrap()
            .unwrap();
        assert_eq!(report[4], seq);
    }
    assert!(sent.elapsed() >= Duration::from_millis(50));
}

#[test]
fn read_report_times_out_when_idle() {
    let key = start(Config::default());
    let started = Instant::now();
    assert_eq!(key.read_report(Duration::from_millis(50)).unwrap(), None);
    assert!(started.elapsed() >= Duration::from_millis(50));
}

#[test]
fn a_host_writing_without_end_is_slowed_down_and_then_served() {
    let key = start(Config::default());
    // Stray continuation packets, which the key ignores: far more than its event queue holds,
    // so writes wait for the key to catch up instead of queueing without bound.
    let mut stray = [0u8; 64];
    stray[..4].copy_from_slice(&0x0102_0304u32.to_be_bytes());
    for _ in 0..20_000 {
        key.write_report(&stray).unwrap();
    }
    assert_eq!(key.read_report(Duration::ZERO).unwrap(), None);
    let cid = init(&key);
    let outcome = transact(&key, cid, CMD_PING, &[0x5a; 100], Duration::from_secs(5));
    assert_eq!(outcome.reply.data, vec![0x5a; 100]);
}
