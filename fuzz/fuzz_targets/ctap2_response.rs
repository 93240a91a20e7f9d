#![no_main]
//! CTAP2 response decoding: a status byte then CBOR, decoded as the response of every command
//! the core sends. Each must yield a typed response or a typed error.

use ctap::command::{
    Command, client_pin, decode_response, get_info::GetInfo, make_credential::MakeCredential,
    selection::Selection,
};
use libfuzzer_sys::fuzz_target;

fn decode<C: Command>(data: &[u8]) {
    let _ = decode_response::<C>(data);
}

fuzz_target!(|data: &[u8]| {
    decode::<GetInfo>(data);
    decode::<MakeCredential>(data);
    decode::<client_pin::GetPinRetries>(data);
    decode::<client_pin::GetKeyAgreement>(data);
    decode::<client_pin::GetPinUvAuthTokenUsingPinWithPermissions>(data);
    decode::<client_pin::GetUvRetries>(data);
    decode::<client_pin::SetPin>(data);
    decode::<Selection>(data);
    if let Ok(info) = decode_response::<GetInfo>(data) {
        let _ = info.preferred_pin_uv_auth_protocol(&[2, 1]);
        let _ = info.max_msg_size();
    }
});
