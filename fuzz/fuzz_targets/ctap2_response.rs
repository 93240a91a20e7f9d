#![no_main]
//! CTAP2 response decoding: a status byte then CBOR, as any command's response.

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = ctap::cbor::from_slice(data);
});
