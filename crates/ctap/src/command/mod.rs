//! Authenticator API commands (CTAP 2.2 §6).
//!
//! Each command is a type implementing [`Command`], which ties the request to its command byte
//! and to its response type, so `decode_response::<GetInfo>(..)` yields a `get_info::Response`
//! by construction. A request on the wire is the command byte followed by CTAP2 canonical CBOR
//! (CTAP 2.2 §8.1); a response is a status byte followed, on success, by CBOR.

use crate::cbor::{self, DecodeError, EncodeError, Value};
use crate::status::StatusCode;
use zeroize::Zeroizing;

pub mod client_pin;
pub mod get_info;
pub mod make_credential;
pub mod reset;
pub mod selection;

/// The command bytes of the authenticator API (CTAP 2.2 §6, table "Command codes").
pub mod code {
    /// authenticatorMakeCredential.
    pub const MAKE_CREDENTIAL: u8 = 0x01;
    /// authenticatorGetAssertion.
    pub const GET_ASSERTION: u8 = 0x02;
    /// authenticatorGetInfo.
    pub const GET_INFO: u8 = 0x04;
    /// authenticatorClientPIN.
    pub const CLIENT_PIN: u8 = 0x06;
    /// authenticatorReset.
    pub const RESET: u8 = 0x07;
    /// authenticatorGetNextAssertion.
    pub const GET_NEXT_ASSERTION: u8 = 0x08;
    /// authenticatorBioEnrollment.
    pub const BIO_ENROLLMENT: u8 = 0x09;
    /// authenticatorCredentialManagement.
    pub const CREDENTIAL_MANAGEMENT: u8 = 0x0A;
    /// authenticatorSelection.
    pub const SELECTION: u8 = 0x0B;
    /// authenticatorLargeBlobs.
    pub const LARGE_BLOBS: u8 = 0x0C;
    /// authenticatorConfig.
    pub const CONFIG: u8 = 0x0D;
}

/// A typed authenticator API request.
pub trait Command {
    /// The command byte.
    const CODE: u8;
    /// What a successful response decodes into.
    type Response;

    /// The request's CBOR parameters, or `None` for a command sent without any.
    fn parameters(&self) -> Option<Value>;

    /// Decodes the CBOR body of a successful response (after the status byte). `body` is empty
    /// when the authenticator sent the status byte alone.
    fn decode(body: &[u8]) -> Result<Self::Response, DecodeError>;
}

/// Why a response could not be turned into the command's typed response.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ResponseError {
    /// The response carried no status byte at all.
    #[error("empty response")]
    Empty,
    /// The authenticator reported an error status.
    #[error("authenticator returned {0}")]
    Status(StatusCode),
    /// The status was `CTAP2_OK` but the body did not decode.
    #[error("malformed response body: {0}")]
    Decode(#[from] DecodeError),
}

/// Encodes `command` as a request: its command byte then its canonical CBOR parameters.
///
/// The result is zeroized on drop, and the intermediate CBOR tree is wiped: clientPIN requests
/// carry encrypted PINs and pinUvAuthParams.
pub fn encode_request<C: Command>(command: &C) -> Result<Zeroizing<Vec<u8>>, EncodeError> {
    // Reserved up front so that the buffer never reallocates and leaves partial copies behind:
    // no request can exceed the largest CTAPHID message anyway.
    let mut out = Zeroizing::new(Vec::with_capacity(crate::ctaphid::MAX_MESSAGE_LEN));
    out.push(C::CODE);
    if let Some(mut parameters) = command.parameters() {
        cbor::encode_and_wipe(&mut parameters, &mut out)?;
    }
    Ok(out)
}

/// Decodes a response (status byte first) to `C`'s request.
pub fn decode_response<C: Command>(response: &[u8]) -> Result<C::Response, ResponseError> {
    let (&status, body) = response.split_first().ok_or(ResponseError::Empty)?;
    match StatusCode::from(status) {
        StatusCode::Ok => Ok(C::decode(body)?),
        error => Err(ResponseError::Status(error)),
    }
}
