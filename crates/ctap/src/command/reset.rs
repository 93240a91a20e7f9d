//! authenticatorReset (0x07): wipe every credential and the PIN (CTAP 2.2 §6.6).
//!
//! Keys accept it only within a few seconds of power-up and after a touch (a long touch when
//! getInfo `longTouchForReset` is set, and only on the getInfo `transportsForReset`); otherwise
//! they answer `CTAP2_ERR_NOT_ALLOWED` or `CTAP2_ERR_OPERATION_DENIED`.

use super::{Command, code};
use crate::cbor::{self, DecodeError, Value};

/// The authenticatorReset command. It has no parameters and an empty success response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Reset;

impl Command for Reset {
    const CODE: u8 = code::RESET;
    type Response = ();

    fn parameters(&self) -> Option<Value> {
        None
    }

    fn decode(body: &[u8]) -> Result<(), DecodeError> {
        cbor::empty_body(body, "authenticatorReset response")
    }
}
