//! Errors of the device layer.

use std::fmt;

use ctap::cbor;
use ctap::command::ResponseError;
use ctap::ctaphid::{self, HidErrorCode, InitResponseError, TransactionError};
use ctap::iso7816::{ApduError, ExchangeError};
use ctap::pin_uv;
use ctap::status::StatusCode;
use ctap::u2f::U2fError;

use super::rng::RandomnessFailure;
use crate::transport::LinkError;

/// Why a request to a key failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// The key is gone: unplugged, card taken away, or its link closed.
    #[error("the device was removed")]
    DeviceRemoved,
    /// The request's overall deadline passed, or the key stayed silent for longer than the
    /// inactivity timeout.
    #[error("the device did not answer in time")]
    Timeout,
    /// The request was cancelled by its caller.
    #[error("the operation was cancelled")]
    Cancelled,
    /// Another request is in flight on this key, or another client kept the key busy
    /// (CTAPHID_ERROR CHANNEL_BUSY) through every retry.
    #[error("the device is busy")]
    Busy,
    /// The authenticator answered with an error status (CTAP 2.2 §8.2).
    #[error("the authenticator returned {0}")]
    Ctap(StatusCode),
    /// The key answered CTAPHID_ERROR (CTAP 2.2 §11.2.9.1.6) with a code that is not handled
    /// by retrying.
    #[error("the device answered CTAPHID_ERROR {0:?}")]
    Hid(HidErrorCode),
    /// The key cannot do this at all.
    #[error("the device does not support {0}")]
    Unsupported(Unsupported),
    /// The key's answer did not follow the protocol.
    #[error("protocol error")]
    Protocol(#[from] ProtocolError),
    /// The link failed without the device being known to be gone.
    #[error("link error")]
    Link(#[source] LinkError),
    /// Host randomness could not be drawn: the OS RNG failed, or a replay's recorded
    /// randomness does not fit the replayed session. Nothing was sent.
    #[error("no host randomness")]
    Randomness(#[source] RandomnessFailure),
}

/// What a key does not support, in [`DeviceError::Unsupported`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Unsupported {
    /// CTAP2 (a U2F-only key: no CTAPHID CBOR capability).
    Ctap2,
    /// CTAP1/U2F messages (CTAPHID capability NMSG).
    U2f,
    /// Wink (no CTAPHID WINK capability, or an NFC card).
    Wink,
    /// The FIDO applet: the card answered the SELECT of the FIDO AID with an error
    /// (CTAP 2.2 §11.3.3).
    FidoApplet,
}

impl fmt::Display for Unsupported {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Ctap2 => "CTAP2",
            Self::U2f => "U2F",
            Self::Wink => "wink",
            Self::FidoApplet => "the FIDO applet",
        })
    }
}

/// How a key's answer broke the protocol, or why a request could not be encoded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ProtocolError {
    /// A malformed or unexpected CTAPHID report on our channel (wrong SEQ, garbage, a
    /// response to another command...).
    #[error(transparent)]
    Transaction(#[from] TransactionError),
    /// A malformed CTAPHID_INIT answer.
    #[error(transparent)]
    Init(#[from] InitResponseError),
    /// A malformed message on the broadcast channel during CTAPHID_INIT.
    #[error(transparent)]
    Framing(#[from] ctaphid::FramingError),
    /// A CTAPHID_INIT answered with another command.
    #[error("CTAPHID_INIT answered with command {0:?}")]
    UnexpectedInitAnswer(ctaphid::Command),
    /// A CTAPHID_ERROR without its code byte.
    #[error("CTAPHID_ERROR without an error code")]
    EmptyHidError,
    /// The request does not fit the channel (larger than the key's maxMsgSize).
    #[error(transparent)]
    RequestTooLarge(#[from] ctaphid::EncodeError),
    /// An APDU could not be encoded or parsed.
    #[error(transparent)]
    Apdu(#[from] ApduError),
    /// An ISO 7816 exchange went wrong (an unexpected status word, a malformed response).
    #[error(transparent)]
    Exchange(#[from] ExchangeError),
    /// A request could not be encoded as CBOR.
    #[error(transparent)]
    Encode(#[from] cbor::EncodeError),
    /// A response body did not decode.
    #[error(transparent)]
    Decode(#[from] cbor::DecodeError),
    /// A CTAP response without even a status byte.
    #[error("empty CTAP response")]
    EmptyResponse,
    /// A response that could not be turned into the command's response for another reason.
    #[error(transparent)]
    Response(ResponseError),
    /// The PIN/UV auth protocol step failed on the key's data (a bad key-agreement key, a
    /// token of the wrong length).
    #[error(transparent)]
    PinUv(#[from] pin_uv::Error),
    /// A U2F response did not parse.
    #[error(transparent)]
    U2f(#[from] U2fError),
}

impl From<ResponseError> for DeviceError {
    fn from(error: ResponseError) -> Self {
        match error {
            ResponseError::Status(status) => Self::Ctap(status),
            ResponseError::Empty => ProtocolError::EmptyResponse.into(),
            ResponseError::Decode(e) => ProtocolError::Decode(e).into(),
            other => ProtocolError::Response(other).into(),
        }
    }
}

impl From<LinkError> for DeviceError {
    fn from(error: LinkError) -> Self {
        match error {
            LinkError::Disconnected => Self::DeviceRemoved,
            other => Self::Link(other),
        }
    }
}

macro_rules! protocol_from {
    ($($source:ty),*) => {
        $(impl From<$source> for DeviceError {
            fn from(error: $source) -> Self {
                Self::Protocol(error.into())
            }
        })*
    };
}

protocol_from!(
    TransactionError,
    InitResponseError,
    ctaphid::FramingError,
    ctaphid::EncodeError,
    ApduError,
    ExchangeError,
    cbor::EncodeError,
    cbor::DecodeError,
    pin_uv::Error,
    U2fError
);
