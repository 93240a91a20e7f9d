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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::command::{ResponseError, decode_response, encode_request};
    use crate::status::StatusCode;

    #[test]
    fn request_is_the_command_byte_alone() {
        assert_eq!(*encode_request(&Reset).unwrap(), [0x07]);
    }

    #[test]
    fn accepts_the_empty_success_response() {
        assert_eq!(decode_response::<Reset>(&[0x00]), Ok(()));
        assert_eq!(decode_response::<Reset>(&[0x00, 0xa1, 0x01, 0x02]), Ok(()));
    }

    #[test]
    fn reports_refusals_and_garbage() {
        assert_eq!(
            decode_response::<Reset>(&[0x30]),
            Err(ResponseError::Status(StatusCode::NotAllowed))
        );
        assert_eq!(
            decode_response::<Reset>(&[0x27]),
            Err(ResponseError::Status(StatusCode::OperationDenied))
        );
        assert_eq!(
            decode_response::<Reset>(&[0x00, 0x80]),
            Err(ResponseError::Decode(DecodeError::UnexpectedType {
                field: "authenticatorReset response",
                expected: "empty body or map",
            }))
        );
        assert_eq!(
            decode_response::<Reset>(&[0x00, 0xa0, 0x00]),
            Err(ResponseError::Decode(DecodeError::TrailingBytes(1)))
        );
    }
}
