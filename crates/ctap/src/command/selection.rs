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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ResponseError, decode_response, encode_request};
    use crate::status::StatusCode;

    #[test]
    fn request_is_the_command_byte_alone() {
        assert_eq!(*encode_request(&Selection).unwrap(), [0x0B]);
    }

    #[test]
    fn accepts_the_empty_success_response() {
        assert_eq!(decode_response::<Selection>(&[0x00]), Ok(()));
        assert_eq!(decode_response::<Selection>(&[0x00, 0xa0]), Ok(()));
    }

    #[test]
    fn reports_cancel_timeout_and_garbage() {
        assert_eq!(
            decode_response::<Selection>(&[0x2D]),
            Err(ResponseError::Status(StatusCode::KeepaliveCancel))
        );
        assert_eq!(
            decode_response::<Selection>(&[0x2F]),
            Err(ResponseError::Status(StatusCode::UserActionTimeout))
        );
        assert_eq!(decode_response::<Selection>(&[]), Err(ResponseError::Empty));
        assert_eq!(
            decode_response::<Selection>(&[0x00, 0x01]),
            Err(ResponseError::Decode(DecodeError::UnexpectedType {
                field: "authenticatorSelection response",
                expected: "empty body or map",
            }))
        );
        assert_eq!(
            decode_response::<Selection>(&[0x00, 0xa1, 0x01]),
            Err(ResponseError::Decode(DecodeError::Malformed))
        );
    }
}
