//! authenticatorSelection (0x0B): ask the user to pick this key by touching it (CTAP 2.2
//! §6.9).
//!
//! Sent in parallel to every CTAP 2.1+ key; the first to answer `CTAP2_OK` is the one the user
//! touched, and the others get a CTAPHID_CANCEL. Keys that only speak CTAP 2.0 do not have this
//! command (getInfo [`supports_ctap2_1`](super::get_info::Response::supports_ctap2_1)).

use super::{Command, code};
use crate::cbor::{self, DecodeError, Value};

/// The authenticatorSelection command. It has no parameters and an empty success response.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct Selection;

impl Command for Selection {
    const CODE: u8 = code::SELECTION;
    type Response = ();

    fn parameters(&self) -> Option<Value> {
        None
    }

    fn decode(body: &[u8]) -> Result<(), DecodeError> {
        cbor::empty_body(body, "authenticatorSelection response")
    }
}
