#![no_main]
//! ISO 7816 response handling: a sequence of response APDUs fed to an NFCCTAP_MSG exchange
//! (both framings) and to a raw exchange; lengths are chosen by the input.

use ctap::iso7816::{self, CommandApdu, Exchange, ExchangeEvent, Framing, ResponseApdu};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let framing = if selector & 1 == 0 {
        Framing::Extended
    } else {
        Framing::ShortChained
    };
    let limit = 4096;
    // A long request so that chaining is exercised in the short framing.
    let payload = vec![0x01; 300];
    let raw = CommandApdu {
        cla: 0,
        ins: 0x01,
        p1: 0,
        p2: 0,
        data: vec![0; 64],
        le: Some(256),
    };
    let mut exchanges = [
        Exchange::ctap(&payload, framing, limit),
        Exchange::raw(&raw, framing, limit),
    ];
    for exchange in exchanges.iter_mut().flatten() {
        let mut input = rest;
        // Each response is prefixed by its length byte.
        while let Some((&len, tail)) = input.split_first() {
            let len = usize::from(len).min(tail.len());
            let (response, next) = tail.split_at(len);
            input = next;
            match exchange.on_response(response) {
                Ok(ExchangeEvent::Complete(apdu)) => {
                    assert!(apdu.data.len() <= limit);
                    break;
                }
                Ok(ExchangeEvent::StatusUpdate { .. }) => {
                    let _ = exchange.cancel_command();
                }
                Ok(ExchangeEvent::Transmit(_)) => {}
                Err(_) => break,
            }
        }
    }
    if let Ok(response) = ResponseApdu::parse(rest) {
        let _ = iso7816::AppletVersion::from_select_response(&response);
    }
    let _ = CommandApdu::parse(rest);
});
