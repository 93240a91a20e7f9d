//! PIN handling: a pinUvAuthToken from the key's PIN, and a first PIN for keys without one.
//!
//! The PIN comes from the caller through a prompt (or from the request, unattended) for one
//! attempt and is dropped (zeroized) right after; nothing caches it. Tokens are requested
//! with the makeCredential permission for the ceremony's RP ID, with PIN/UV auth protocol 2
//! when the key offers it (CTAP 2.2 §6.5.5.7.2), and live as long as the ceremony.

use ctap::command::client_pin::Permissions;
use ctap::pin_uv::{Pin, PinUvAuthProtocol, PinUvAuthToken};
use ctap::status::StatusCode;
use tracing::debug;
use zeroize::Zeroizing;

use super::error::{CeremonyError, NotSupported};
use super::io::Io;
use super::progress::{NewPinPromptReason, PinPromptReason};
use crate::device::{Authenticator, DeviceError};

/// Where PINs come from.
pub(super) enum PinSource<'a> {
    /// Ask the caller through the progress stream.
    Prompt,
    /// The request's PIN, for unattended use: no prompt, no second attempt.
    Given(&'a Zeroizing<String>),
}

fn protocol(authenticator: &Authenticator) -> Result<PinUvAuthProtocol, CeremonyError> {
    authenticator
        .pin_protocol()
        .ok_or(CeremonyError::NotSupported(NotSupported::UserVerification))
}

/// A pinUvAuthToken for makeCredential on `rp_id`, from the key's PIN. A wrong PIN asks
/// again with the retries left (CTAP 2.2 §6.5.5.7: every attempt gets a new key agreement,
/// which [`Authenticator::pin_token`] does); PIN_AUTH_BLOCKED and PIN_BLOCKED end the
/// ceremony.
pub(super) async fn token_from_pin(
    io: &mut Io,
    authenticator: &Authenticator,
    rp_id: &str,
    source: &PinSource<'_>,
) -> Result<PinUvAuthToken, CeremonyError> {
    let protocol = protocol(authenticator)?;
    let key = authenticator.id();
    let mut reason = PinPromptReason::First;
    loop {
        let retries = match io.guard(authenticator.pin_retries()).await? {
            Ok(retries) => Some(retries.pin_retries),
            Err(DeviceError::Ctap(StatusCode::PinBlocked)) => {
                return Err(CeremonyError::PinBlocked);
            }
            // Only for the prompt's benefit: go on without the count.
            Err(error) => {
                debug!(device = %key, %error, "getPINRetries failed");
                None
            }
        };
        if retries == Some(0) {
            return Err(CeremonyError::PinBlocked);
        }
        let text = match source {
            PinSource::Given(pin) if reason == PinPromptReason::First => Zeroizing::clone(pin),
            PinSource::Given(_) => return Err(CeremonyError::PinInvalid { retries }),
            PinSource::Prompt => io.ask_pin(key, retries, reason).await?,
        };
        let Ok(pin) = Pin::new(&text) else {
            // Not a possible PIN: the key never sees it, so no retry is spent.
            reason = PinPromptReason::Malformed;
            continue;
        };
        drop(text);
        let token = io
            .guard(authenticator.pin_token(
                protocol,
                &pin,
                Permissions::MAKE_CREDENTIAL,
                Some(rp_id),
            ))
            .await?;
        match token {
            Ok(token) => return Ok(token),
            Err(DeviceError::Ctap(StatusCode::PinInvalid)) => {
                debug!(device = %key, "wrong PIN");
                reason = PinPromptReason::WrongPin;
            }
            Err(error) => return Err(CeremonyError::from_device(error)),
        }
    }
}

/// Sets a first PIN on a key that has none (CTAP 2.2 §6.5.5.5), at least `minPINLength`
/// code points long, then returns a token from it.
pub(super) async fn token_from_new_pin(
    io: &mut Io,
    authenticator: &Authenticator,
    rp_id: &str,
    source: &PinSource<'_>,
) -> Result<PinUvAuthToken, CeremonyError> {
    let protocol = protocol(authenticator)?;
    let key = authenticator.id();
    let min_length = authenticator
        .info()
        .map_or(ctap::command::get_info::DEFAULT_MIN_PIN_LENGTH, |info| {
            info.min_pin_length()
        });
    let mut reason = NewPinPromptReason::First;
    let pin = loop {
        let text = match source {
            PinSource::Given(pin) => Zeroizing::clone(pin),
            PinSource::Prompt => io.ask_new_pin(key, min_length, reason).await?,
        };
        let minimum = usize::try_from(min_length).unwrap_or(usize::MAX);
        let pin = match (Pin::with_min_length(&text, minimum), source) {
            (Ok(pin), _) => pin,
            (Err(error), PinSource::Given(_)) => {
                return Err(super::error::InvalidArgument::Pin(error).into());
            }
            (Err(_), PinSource::Prompt) => {
                reason = NewPinPromptReason::Malformed;
                continue;
            }
        };
        drop(text);
        match io.guard(authenticator.set_pin(protocol, &pin)).await? {
            Ok(()) => break pin,
            Err(DeviceError::Ctap(StatusCode::PinPolicyViolation))
                if matches!(source, PinSource::Prompt) =>
            {
                reason = NewPinPromptReason::PolicyViolation;
            }
            Err(error) => return Err(CeremonyError::from_device(error)),
        }
    };
    debug!(device = %key, "PIN set");
    io.guard(authenticator.pin_token(protocol, &pin, Permissions::MAKE_CREDENTIAL, Some(rp_id)))
        .await?
        .map_err(CeremonyError::from_device)
}
