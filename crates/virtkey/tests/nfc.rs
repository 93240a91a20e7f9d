//! The virtual key as an NFC card: raw ISO 7816 APDUs.
// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use ciborium::Value;
use common::*;
use virtkey::{Config, Error, FIDO_AID, JOB_QUEUE_LEN, TouchPolicy, VirtKey};

const TIMEOUT: Duration = Duration::from_secs(10);

fn select_apdu(le: Option<u8>) -> Vec<u8> {
    let mut apdu = vec![0x00, 0xa4, 0x04, 0x00, FIDO_AID.len() as u8];
    apdu.extend_from_slice(&FIDO_AID);
    apdu.extend(le);
    apdu
}

/// Splits a response into data and status word.
fn split(response: &[u8]) -> (&[u8], u16) {
    let (data, sw) = response.split_at(response.len() - 2);
    (data, u16::from_be_bytes([sw[0], sw[1]]))
}

/// Sends an APDU and follows 61xx with GET RESPONSE until the status is final.
fn transmit_all(key: &VirtKey, apdu: &[u8]) -> (Vec<u8>, u16, usize) {
    let response = key.transmit_apdu(apdu, TIMEOUT).unwrap();
    let (data, mut sw) = split(&response);
    let mut data = data.to_vec();
    let mut get_responses = 0;
    while sw >> 8 == 0x61 {
        get_responses += 1;
        let le = (sw & 0xff) as u8;
        let response = key
            .transmit_apdu(&[0x00, 0xc0, 0x00, 0x00, le], TIMEOUT)
            .unwrap();
        let (more, next) = split(&response);
        data.extend_from_slice(more);
        sw = next;
    }
    (data, sw, get_responses)
}

#[test]
fn select_answers_u2f_v2() {
    let key = VirtKey::start(Config::default()).unwrap();
    // Nothing is selected yet: the command has no applet to go to.
    let response = key
        .transmit_apdu(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00], TIMEOUT)
        .unwrap();
    assert_eq!(response, vec![0x6a, 0x82]);
    let response = key
        .transmit_apdu(&select_apdu(Some(0x00)), TIMEOUT)
        .unwrap();
    assert_eq!(response, b"U2F_V2\x90\x00".to_vec());
    // Without Le the firmware's front end announces the data with 61xx.
    let response = key.transmit_apdu(&select_apdu(None), TIMEOUT).unwrap();
    assert_eq!(response, vec![0x61, 0x06]);
    let response = key
        .transmit_apdu(&[0x00, 0xc0, 0x00, 0x00, 0x06], TIMEOUT)
        .unwrap();
    assert_eq!(response, b"U2F_V2\x90\x00".to_vec());
}

#[test]
fn get_info_over_nfcctap_msg() {
    let key = VirtKey::start(Config::default()).unwrap();
    assert_eq!(
        key.transmit_apdu(&select_apdu(Some(0x00)), TIMEOUT)
            .unwrap(),
        b"U2F_V2\x90\x00".to_vec()
    );
    // Short APDU with Le = 256: the whole getInfo fits.
    let (data, sw, get_responses) = transmit_all(&key, &[0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x00]);
    assert_eq!(sw, 0x9000);
    assert_eq!(get_responses, 0);
    assert!(data.len() > 64 && data.len() <= 256, "{}", data.len());
    // Le = 64: the rest comes with GET RESPONSE after 61xx.
    let (chunked, sw, get_responses) =
        transmit_all(&key, &[0x80, 0x10, 0x80, 0x00, 0x01, 0x04, 0x40]);
    assert_eq!(sw, 0x9000);
    assert!(get_responses >= 1);
    assert_eq!(chunked, data);
    assert_eq!(data[0], 0x00);
    let info = decode(&data[1..]);
    assert_eq!(
        get(&info, &int(0x03)),
        Some(&Value::Bytes(key.aaguid().to_vec()))
    );
    // Extended APDU with Le = 65536: all of it at once, same bytes.
    let response = key
        .transmit_apdu(
            &[0x80, 0x10, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00],
            TIMEOUT,
        )
        .unwrap();
    let (extended, sw) = split(&response);
    assert_eq!(sw, 0x9000);
    assert_eq!(extended, data.as_slice());
}

#[test]
fn chained_make_credential_over_nfc() {
    let key = VirtKey::start(Config::default()).unwrap();
    key.transmit_apdu(&select_apdu(Some(0x00)), TIMEOUT)
        .unwrap();
    let message = make_credential_message();
    let blocks: Vec<&[u8]> = message.chunks(64).collect();
    assert!(blocks.len() >= 2);
    let mut last = Vec::new();
    for (i, block) in blocks.iter().enumerate() {
        let class = if i + 1 < blocks.len() { 0x90 } else { 0x80 };
        let mut apdu = vec![class, 0x10, 0x80, 0x00, block.len() as u8];
        apdu.extend_from_slice(block);
        if class == 0x80 {
            apdu.push(0x00);
        }
        last = key.transmit_apdu(&apdu, TIMEOUT).unwrap();
        if class == 0x90 {
            assert_eq!(last, vec![0x90, 0x00]);
        }
    }
    let (first, mut sw) = split(&last);
    let mut data = first.to_vec();
    while sw >> 8 == 0x61 {
        let response = key
            .transmit_apdu(&[0x00, 0xc0, 0x00, 0x00, (sw & 0xff) as u8], TIMEOUT)
            .unwrap();
        let (more, next) = split(&response);
        data.extend_from_slice(more);
        sw = next;
    }
    assert_eq!(sw, 0x9000);
    assert_eq!(data[0], 0x00);
    let response = decode(&data[1..]);
    assert_eq!(get(&response, &int(1)), Some(&text("packed")));
}

#[test]
fn nfcctap_getresponse_is_not_supported_by_the_firmware() {
    let key = VirtKey::start(Config::default()).unwrap();
    key.transmit_apdu(&select_apdu(Some(0x00)), TIMEOUT)
        .unwrap();
    let response = key
        .transmit_apdu(&[0x80, 0x11, 0x00, 0x00, 0x00], TIMEOUT)
        .unwrap();
    assert_eq!(response, vec![0x6d, 0x00]);
}

#[test]
fn u2f_version_over_nfc_and_u2f_only_refuses_ctap2() {
    let key = VirtKey::start(Config {
        u2f_only: true,
        ..Config::default()
    })
    .unwrap();
    key.transmit_apdu(&select_apdu(Some(0x00)), TIMEOUT)
        .unwrap();
    let response = key
        .transmit_apdu(&[0x00, 0x03, 0x00, 0x00, 0x00], TIMEOUT)
        .unwrap();
    assert_eq!(response, b"U2F_V2\x90\x00".to_vec());
    let response = key
        .transmit_apdu(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00], TIMEOUT)
        .unwrap();
    assert_eq!(response, vec![0x6d, 0x00]);
}

#[test]
fn apdu_timeout_abandons_the_request() {
    let key = VirtKey::start(Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    })
    .unwrap();
    key.transmit_apdu(&select_apdu(Some(0x00)), TIMEOUT)
        .unwrap();
    let message = make_credential_message();
    let mut apdu = vec![0x80, 0x10, 0x00, 0x00, 0x00];
    apdu.extend_from_slice(&(message.len() as u16).to_be_bytes());
    apdu.extend_from_slice(&message);
    apdu.extend_from_slice(&[0x00, 0x00]);
    let started = Instant::now();
    let result = key.transmit_apdu(&apdu, Duration::from_millis(200));
    assert!(matches!(result, Err(Error::Timeout)));
    assert!(started.elapsed() < Duration::from_secs(10));
    // The firmware gave up its presence wait: the next APDU is answered promptly.
    let response = key
        .transmit_apdu(
            &[0x80, 0x10, 0x00, 0x00, 0x00, 0x00, 0x01, 0x04, 0x00, 0x00],
            TIMEOUT,
        )
        .unwrap();
    assert_eq!(&response[response.len() - 2..], &[0x90, 0x00]);
    assert!(started.elapsed() < virtkey::FIDO2_UP_TIMEOUT / 2);
}

#[test]
fn oversized_apdu_is_refused() {
    let key = VirtKey::start(Config::default()).unwrap();
    let apdu = vec![0u8; virtkey::MAX_APDU_LEN + 1];
    assert!(matches!(
        key.transmit_apdu(&apdu, TIMEOUT),
        Err(Error::ApduTooLong { len, max }) if len == max + 1
    ));
}

#[test]
fn forced_status_answers_nfcctap_msg() {
    let key = VirtKey::start(Config {
        force_status: Some(0x2f),
        ..Config::default()
    })
    .unwrap();
    key.transmit_apdu(&select_apdu(Some(0x00)), TIMEOUT)
        .unwrap();
    // A chained first block is acknowledged, the last one carries the forced status.
    let response = key
        .transmit_apdu(&[0x90, 0x10, 0x00, 0x00, 0x01, 0x01], TIMEOUT)
        .unwrap();
    assert_eq!(response, vec![0x90, 0x00]);
    let response = key
        .transmit_apdu(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00], TIMEOUT)
        .unwrap();
    assert_eq!(response, vec![0x2f, 0x90, 0x00]);
    // U2F is untouched.
    let response = key
        .transmit_apdu(&[0x00, 0x03, 0x00, 0x00, 0x00], TIMEOUT)
        .unwrap();
    assert_eq!(response, b"U2F_V2\x90\x00".to_vec());
}

/// makeCredential for a discoverable credential of example.com as one extended NFCCTAP_MSG.
fn resident_make_credential_apdu() -> Vec<u8> {
    let Value::Map(mut request) = make_credential_request() else {
        unreachable!()
    };
    request.push((int(7), Value::Map(vec![(text("rk"), Value::Bool(true))])));
    let mut message = vec![0x01];
    ciborium::into_writer(&Value::Map(request), &mut message).unwrap();
    let mut apdu = vec![0x80, 0x10, 0x00, 0x00, 0x00];
    apdu.extend_from_slice(&(message.len() as u16).to_be_bytes());
    apdu.extend_from_slice(&message);
    apdu.extend_from_slice(&[0x00, 0x00]);
    apdu
}

#[test]
fn abandoned_apdus_never_run_later() {
    let key = VirtKey::start(Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    })
    .unwrap();
    key.transmit_apdu(&select_apdu(Some(0x00)), TIMEOUT)
        .unwrap();
    // A HID request keeps the firmware in a presence wait...
    let cid = init(&key);
    send(&key, cid, CMD_CBOR, &make_credential_message());
    let deadline = Instant::now() + TIMEOUT;
    while recv(&key, deadline).expect("UPNEEDED").data != [0x02] {}
    // ...while many NFC callers give up on requests that would create a credential.
    // Far more than any bound on remembered cancellations; each keeps its own mark. The queue
    // takes JOB_QUEUE_LEN of them and refuses the rest.
    let apdu = resident_make_credential_apdu();
    let (mut timeouts, mut busy) = (0, 0);
    for _ in 0..200 {
        match key.transmit_apdu(&apdu, Duration::ZERO) {
            Err(Error::Timeout) => timeouts += 1,
            Err(Error::Busy) => busy += 1,
            other => panic!("{other:?}"),
        }
    }
    assert_eq!((timeouts, busy), (JOB_QUEUE_LEN, 200 - JOB_QUEUE_LEN));
    // The touch comes: the HID request finishes, then the firmware gets to the queue.
    key.set_touch(TouchPolicy::Auto);
    let outcome = wait_reply(&key, cid, Instant::now() + TIMEOUT);
    assert_eq!(outcome.reply.data[0], 0x00);
    // Served in order, so this getInfo runs after every queued request. It is refused while the
    // firmware has not yet skipped enough of them to make room.
    let deadline = Instant::now() + TIMEOUT;
    let response = loop {
        match key.transmit_apdu(&[0x80, 0x10, 0x00, 0x00, 0x01, 0x04, 0x00], TIMEOUT) {
            Err(Error::Busy) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(1));
            }
            other => break other.unwrap(),
        }
    };
    assert_eq!(&response[response.len() - 2..], &[0x90, 0x00]);
    // None of the abandoned requests created a credential: CTAP2_ERR_NO_CREDENTIALS.
    let request = Value::Map(vec![
        (int(1), text("example.com")),
        (int(2), Value::Bytes(CLIENT_DATA_HASH.to_vec())),
    ]);
    let (status, _) = cbor(&key, cid, 0x02, Some(&request));
    assert_eq!(status, 0x2e);
}
