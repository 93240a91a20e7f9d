//! Making the credential on the chosen key: CTAP2 makeCredential with user verification and
//! the exclude list, or the U2F fallback (platform checklist §5.6, §5.9).

use std::sync::Arc;
use std::time::Duration;

use ctap::cbor::{DecodeError, Value};
use ctap::command::make_credential::{PinUvAuth, PublicKeyCredentialDescriptor};
use ctap::command::{Command, code, get_info};
use ctap::pin_uv::PinUvAuthToken;
use ctap::status::StatusCode;
use ctap::u2f::{
    self, AuthenticateRequest, KeyHandleCheck, RegisterRequest, Registration, StatusWord,
};
use ctap::webauthn::attestation::AttestationObject;
use sha2::{Digest, Sha256};
use tokio::time::sleep;
use tracing::{debug, warn};

use super::error::{BadResponse, CeremonyError, NotSupported};
use super::io::Io;
use super::pin::{self, PinSource};
use super::plan::{Creation, KeyPlan, UvMethod};
use super::progress::Progress;
use super::select;
use crate::device::{Authenticator, DeviceError};

/// What the steps on one key need to know about the ceremony.
pub(super) struct KeyCeremony<'a> {
    pub(super) creation: &'a Creation,
    pub(super) client_data_hash: [u8; 32],
    pub(super) pin: PinSource<'a>,
    pub(super) u2f_poll: Duration,
}

/// Whether a key with this getInfo (`None`: U2F only) can serve the request: the checks
/// [`make_credential`] would fail on before using the key.
pub(super) fn eligible(
    creation: &Creation,
    info: Option<&get_info::Response>,
) -> Result<(), NotSupported> {
    match info {
        Some(info) if info.supports_ctap2() => KeyPlan::new(creation, info).map(drop),
        _ if creation.u2f_possible() => Ok(()),
        _ => Err(NotSupported::U2fOnly),
    }
}

/// Makes the credential on `authenticator`, in CTAP2 or, for U2F-only keys, in U2F.
pub(super) async fn make_credential(
    io: &mut Io,
    ceremony: &KeyCeremony<'_>,
    authenticator: &Authenticator,
) -> Result<AttestationObject, CeremonyError> {
    match authenticator.info() {
        Some(info) if info.supports_ctap2() => ctap2(io, ceremony, authenticator, info).await,
        _ => u2f(io, ceremony, authenticator).await,
    }
}

/// CTAP2 authenticatorMakeCredential (CTAP 2.2 §6.1) with the user verification the
/// decision table picks, retried once with a token when the key insists on one.
async fn ctap2(
    io: &mut Io,
    ceremony: &KeyCeremony<'_>,
    authenticator: &Authenticator,
    info: Arc<get_info::Response>,
) -> Result<AttestationObject, CeremonyError> {
    let creation = ceremony.creation;
    let rp_id = creation.rp.id.as_str();
    let plan = KeyPlan::new(creation, &info).map_err(CeremonyError::NotSupported)?;
    debug!(device = %authenticator.id(), uv = ?plan.uv, rk = plan.rk, "makeCredential plan");
    let mut token = match plan.uv {
        UvMethod::Pin => Some(pin::token_from_pin(io, authenticator, rp_id, &ceremony.pin).await?),
        UvMethod::NewPin => {
            Some(pin::token_from_new_pin(io, authenticator, rp_id, &ceremony.pin).await?)
        }
        UvMethod::None | UvMethod::BuiltIn => None,
    };
    let exclude = exclude_list(io, ceremony, authenticator, &plan).await?;
    let mut token_retried = false;
    loop {
        let auth = token
            .as_ref()
            .map(|t| pin_uv_auth(t, &ceremony.client_data_hash));
        let request = plan.request(creation, ceremony.client_data_hash, &exclude, auth)?;
        let op = authenticator.make_credential(&request, io.deadline);
        match io.drive(op, authenticator.id()).await {
            Ok(response) => {
                return AttestationObject::from_response(response)
                    .map_err(|e| CeremonyError::BadResponse(BadResponse::from_attestation(&e)));
            }
            // The key wants user verification the table did not foresee (CTAP 2.2 §6.1.2
            // step 6): get a token and try once more.
            Err(CeremonyError::Device(DeviceError::Ctap(StatusCode::PuatRequired)))
                if token.is_none() && !token_retried && info.client_pin().is_on() =>
            {
                token_retried = true;
                token = Some(pin::token_from_pin(io, authenticator, rp_id, &ceremony.pin).await?);
            }
            Err(CeremonyError::Device(DeviceError::Ctap(StatusCode::PinNotSet)))
                if token.is_none() && !token_retried && info.client_pin().is_present() =>
            {
                token_retried = true;
                token =
                    Some(pin::token_from_new_pin(io, authenticator, rp_id, &ceremony.pin).await?);
            }
            Err(error) => return Err(error),
        }
    }
}

/// pinUvAuthParam = authenticate(token, clientDataHash) (CTAP 2.2 §6.1.1).
fn pin_uv_auth(token: &PinUvAuthToken, client_data_hash: &[u8; 32]) -> PinUvAuth {
    PinUvAuth {
        param: token.authenticate(client_data_hash),
        protocol: u32::from(token.protocol().number()),
    }
}

/// The exclude list to send. One batch is sent as it is. Several batches (more ids than
/// `maxCredentialCountInList`) are probed first, silently, with getAssertion `up: false`
/// (platform checklist §5.6): the batch holding one of this key's credentials is sent, so the
/// key reports CREDENTIAL_EXCLUDED after a touch; if none does, no list is needed.
async fn exclude_list(
    io: &mut Io,
    ceremony: &KeyCeremony<'_>,
    authenticator: &Authenticator,
    plan: &KeyPlan,
) -> Result<Vec<PublicKeyCredentialDescriptor>, CeremonyError> {
    let batches = &plan.exclude_batches;
    let [first, rest @ ..] = batches.as_slice() else {
        return Ok(Vec::new());
    };
    if rest.is_empty() {
        return Ok(first.clone());
    }
    for batch in batches {
        let probe = SilentProbe {
            rp_id: ceremony.creation.rp.id.clone(),
            client_data_hash: ceremony.client_data_hash,
            allow_list: batch.clone(),
        };
        let op = authenticator.command(&probe, io.deadline);
        match io.drive(op, authenticator.id()).await {
            Ok(()) => return Ok(batch.clone()),
            Err(CeremonyError::Device(DeviceError::Ctap(StatusCode::NoCredentials))) => {}
            Err(CeremonyError::Device(error)) => {
                // A key that cannot probe still gets the first batch.
                warn!(device = %authenticator.id(), %error, "exclude-list probe failed");
                return Ok(first.clone());
            }
            Err(error) => return Err(error),
        }
    }
    Ok(Vec::new())
}

/// authenticatorGetAssertion with `up: false` and an allow list, to learn whether one of the
/// credentials lives on the key without involving the user (CTAP 2.2 §6.2; the platform
/// checklist's exclude-list preflight). Success means yes, CTAP2_ERR_NO_CREDENTIALS no.
struct SilentProbe {
    rp_id: String,
    client_data_hash: [u8; 32],
    allow_list: Vec<PublicKeyCredentialDescriptor>,
}

impl Command for SilentProbe {
    const CODE: u8 = code::GET_ASSERTION;
    type Response = ();

    fn parameters(&self) -> Option<Value> {
        Some(Value::Map(vec![
            (Value::from(0x01), Value::from(self.rp_id.as_str())),
            (
                Value::from(0x02),
                Value::Bytes(self.client_data_hash.to_vec()),
            ),
            (
                Value::from(0x03),
                Value::Array(self.allow_list.iter().map(|d| d.to_value()).collect()),
            ),
            (
                Value::from(0x05),
                Value::Map(vec![(Value::from("up"), Value::Bool(false))]),
            ),
        ]))
    }

    fn decode(_body: &[u8]) -> Result<(), DecodeError> {
        // Only the status matters; the assertion itself is discarded.
        Ok(())
    }
}

/// The U2F fallback (platform checklist §5.9; CTAP 2.2 §10.2.1): check-only authenticate
/// for each excluded id, then U2F_REGISTER until touched, as a fido-u2f attestation.
async fn u2f(
    io: &mut Io,
    ceremony: &KeyCeremony<'_>,
    authenticator: &Authenticator,
) -> Result<AttestationObject, CeremonyError> {
    let creation = ceremony.creation;
    if !creation.u2f_possible() {
        return Err(CeremonyError::NotSupported(NotSupported::U2fOnly));
    }
    let application: [u8; 32] = Sha256::digest(creation.rp.id.as_bytes()).into();
    for id in creation
        .exclude
        .iter()
        .filter(|id| id.len() <= usize::from(u8::MAX))
    {
        let Ok(check) = AuthenticateRequest::check_only(ceremony.client_data_hash, application, id)
        else {
            continue;
        };
        let known = io
            .guard(authenticator.u2f_check_only(&check, io.deadline))
            .await?
            .map_err(CeremonyError::from_device)?;
        if known == KeyHandleCheck::Known {
            // Like CTAP2 keys, report it only after a touch (platform checklist §5.9).
            io.emit(Progress::NeedsTouch {
                key: authenticator.id().clone(),
            })
            .await?;
            io.guard(select::u2f_touch(
                authenticator,
                io.deadline,
                ceremony.u2f_poll,
            ))
            .await?
            .map_err(CeremonyError::from_device)?;
            return Err(CeremonyError::CredentialExcluded);
        }
    }
    let request = RegisterRequest::for_webauthn(ceremony.client_data_hash, &creation.rp.id);
    let mut touch_announced = false;
    let data = loop {
        let response = io
            .guard(authenticator.u2f_register(&request, io.deadline))
            .await?
            .map_err(CeremonyError::from_device)?;
        let (data, status) = u2f::split_response(&response)
            .map_err(|e| CeremonyError::BadResponse(BadResponse::U2f(e.to_string())))?;
        match status {
            StatusWord::Success => break data.to_vec(),
            // Touch needed; U2F has no keepalive, so ask again a little later.
            StatusWord::ConditionsNotSatisfied => {
                if !touch_announced {
                    touch_announced = true;
                    io.emit(Progress::NeedsTouch {
                        key: authenticator.id().clone(),
                    })
                    .await?;
                }
                io.guard(sleep(ceremony.u2f_poll)).await?;
            }
            other => {
                return Err(CeremonyError::BadResponse(BadResponse::U2f(format!(
                    "U2F_REGISTER answered {other:?}"
                ))));
            }
        }
    };
    let registration = Registration::parse(&data)
        .map_err(|e| CeremonyError::BadResponse(BadResponse::U2f(e.to_string())))?;
    registration
        .to_attestation_object(&application)
        .map_err(|e| CeremonyError::BadResponse(BadResponse::from_auth_data(&e)))
}
