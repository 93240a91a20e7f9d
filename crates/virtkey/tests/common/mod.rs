//! Test-only host side: a minimal CTAPHID framer and CBOR helpers, written against the bytes of
//! CTAP 2.2 §11.2 so the tests do not trust the crate's own framing code.
#![allow(dead_code)]

use std::time::{Duration, Instant};

use ciborium::Value;
use virtkey::VirtKey;

pub(crate) const BROADCAST: u32 = 0xffff_ffff;
pub(crate) const CMD_PING: u8 = 0x01;
pub(crate) const CMD_MSG: u8 = 0x03;
pub(crate) const CMD_INIT: u8 = 0x06;
pub(crate) const CMD_WINK: u8 = 0x08;
pub(crate) const CMD_CBOR: u8 = 0x10;
pub(crate) const CMD_CANCEL: u8 = 0x11;
pub(crate) const CMD_KEEPALIVE: u8 = 0x3b;
pub(crate) const CMD_ERROR: u8 = 0x3f;

/// A reassembled message from the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Message {
    pub(crate) cid: u32,
    pub(crate) cmd: u8,
    pub(crate) data: Vec<u8>,
}

/// Frames `data` into 64-byte reports and writes them.
pub(crate) fn send(key: &VirtKey, cid: u32, cmd: u8, data: &[u8]) {
    let mut report = [0u8; 64];
    report[..4].copy_from_slice(&cid.to_be_bytes());
    report[4] = 0x80 | cmd;
    report[5..7].copy_from_slice(&(data.len() as u16).to_be_bytes());
    let first = data.len().min(57);
    report[7..7 + first].copy_from_slice(&data[..first]);
    key.write_report(&report).unwrap();
    for (seq, chunk) in data[first..].chunks(59).enumerate() {
        let mut report = [0u8; 64];
        report[..4].copy_from_slice(&cid.to_be_bytes());
        report[4] = seq as u8;
        report[5..5 + chunk.len()].copy_from_slice(chunk);
        key.write_report(&report).unwrap();
    }
}

/// Reads one whole message (of any channel), or None by the deadline.
pub(crate) fn recv(key: &VirtKey, deadline: Instant) -> Option<Message> {
    let timeout = deadline.saturating_duration_since(Instant::now());
    let first = key.read_report(timeout).unwrap()?;
    assert_ne!(first[4] & 0x80, 0, "expected an initialization packet");
    let cid = u32::from_be_bytes(first[..4].try_into().unwrap());
    let total = u16::from_be_bytes([first[5], first[6]]) as usize;
    let mut data = first[7..7 + total.min(57)].to_vec();
    let mut seq = 0u8;
    while data.len() < total {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let report = key.read_report(timeout).unwrap()?;
        assert_eq!(u32::from_be_bytes(report[..4].try_into().unwrap()), cid);
        assert_eq!(report[4], seq);
        seq += 1;
        let want = (total - data.len()).min(59);
        data.extend_from_slice(&report[5..5 + want]);
    }
    Some(Message {
        cid,
        cmd: first[4] & 0x7f,
        data,
    })
}

/// Allocates a channel; returns it.
pub(crate) fn init(key: &VirtKey) -> u32 {
    let nonce = [0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88];
    send(key, BROADCAST, CMD_INIT, &nonce);
    let reply = recv(key, Instant::now() + Duration::from_secs(5)).expect("INIT reply");
    assert_eq!(reply.cid, BROADCAST);
    assert_eq!(reply.cmd, CMD_INIT);
    assert_eq!(reply.data.len(), 17);
    assert_eq!(&reply.data[..8], &nonce);
    u32::from_be_bytes(reply.data[8..12].try_into().unwrap())
}

/// The outcome of one request: the final message and the KEEPALIVE statuses seen before it.
#[derive(Debug)]
pub(crate) struct Outcome {
    pub(crate) reply: Message,
    pub(crate) keepalives: Vec<u8>,
}

/// Sends a request and waits for its final answer on `cid`, collecting keepalives.
pub(crate) fn transact(
    key: &VirtKey,
    cid: u32,
    cmd: u8,
    data: &[u8],
    timeout: Duration,
) -> Outcome {
    send(key, cid, cmd, data);
    wait_reply(key, cid, Instant::now() + timeout)
}

pub(crate) fn wait_reply(key: &VirtKey, cid: u32, deadline: Instant) -> Outcome {
    let mut keepalives = Vec::new();
    loop {
        let message = recv(key, deadline).expect("reply before the deadline");
        assert_eq!(message.cid, cid);
        if message.cmd == CMD_KEEPALIVE {
            assert_eq!(message.data.len(), 1);
            keepalives.push(message.data[0]);
            continue;
        }
        return Outcome {
            reply: message,
            keepalives,
        };
    }
}

/// A CTAP2 command over CTAPHID_CBOR: returns (status, body).
pub(crate) fn cbor(key: &VirtKey, cid: u32, command: u8, request: Option<&Value>) -> (u8, Vec<u8>) {
    let mut data = vec![command];
    if let Some(request) = request {
        ciborium::into_writer(request, &mut data).unwrap();
    }
    let outcome = transact(key, cid, CMD_CBOR, &data, Duration::from_secs(10));
    assert_eq!(outcome.reply.cmd, CMD_CBOR, "{:?}", outcome.reply);
    (outcome.reply.data[0], outcome.reply.data[1..].to_vec())
}

pub(crate) fn int(value: i64) -> Value {
    Value::Integer(value.into())
}

pub(crate) fn text(value: &str) -> Value {
    Value::Text(value.into())
}

pub(crate) fn get<'a>(map: &'a Value, key: &Value) -> Option<&'a Value> {
    map.as_map()?.iter().find(|(k, _)| k == key).map(|(_, v)| v)
}

pub(crate) fn decode(body: &[u8]) -> Value {
    ciborium::from_reader(body).unwrap()
}

pub(crate) const CLIENT_DATA_HASH: [u8; 32] = [0x42; 32];

/// A makeCredential request (CTAP 2.2 §6.1): no PIN, rk false, ES256, canonical key order.
pub(crate) fn make_credential_request() -> Value {
    Value::Map(vec![
        (int(1), Value::Bytes(CLIENT_DATA_HASH.to_vec())),
        (
            int(2),
            Value::Map(vec![
                (text("id"), text("example.com")),
                (text("name"), text("Example")),
            ]),
        ),
        (
            int(3),
            Value::Map(vec![
                (text("id"), Value::Bytes(vec![0x01, 0x02, 0x03, 0x04])),
                (text("name"), text("alice")),
                (text("displayName"), text("Alice")),
            ]),
        ),
        (
            int(4),
            Value::Array(vec![Value::Map(vec![
                (text("alg"), int(-7)),
                (text("type"), text("public-key")),
            ])]),
        ),
    ])
}

/// The makeCredential message (command byte and CBOR).
pub(crate) fn make_credential_message() -> Vec<u8> {
    let mut data = vec![0x01];
    ciborium::into_writer(&make_credential_request(), &mut data).unwrap();
    data
}
