//! Key choice: an explicitly requested key, the only key present, or the key the user
//! touches among all present (platform checklist §5.8).
//!
//! Selection by touch runs on every key in parallel, each in the way it understands:
//! authenticatorSelection on CTAP 2.1 keys (CTAP 2.2 §6.9), a makeCredential with a
//! zero-length pinUvAuthParam on CTAP 2.0 keys (which waits for a touch, then answers
//! PIN_NOT_SET or PIN_AUTH_INVALID; CTAP 2.0 §5.5.8.1), and a U2F_REGISTER with dummy
//! parameters repeated until the key answers `9000` on U2F-only keys. Keys plugged in during
//! selection join it. The first key touched wins; every other one gets CANCEL, and selection
//! returns only once they have all ended their requests.

use std::time::Duration;

use ctap::command::get_info;
use ctap::command::make_credential::{
    self, MakeCredential, PinUvAuth, PublicKeyCredentialParameters, RelyingParty, User,
};
use ctap::cose::alg;
use ctap::status::StatusCode;
use ctap::u2f::{self, RegisterRequest, StatusWord};
use tokio::sync::broadcast::error::RecvError;
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep, sleep_until};
use tracing::debug;

use super::error::{CeremonyError, NotSupported};
use super::io::Io;
use super::progress::Progress;
use crate::device::{
    Authenticator, DeviceError, DeviceInfo, RegistryEvent, RegistryHandle, Subscription,
    Unsupported,
};
use crate::transport::DeviceId;

/// The RP ID of the dummy makeCredential of CTAP 2.0 selection; the leading dot makes it a
/// name no relying party can have.
const DUMMY_RP_ID: &str = ".dummy";

/// The application parameter of the dummy U2F_REGISTER: bytes no real application hashes to
/// in practice, so the registration it makes is useless.
const DUMMY_APPLICATION: [u8; 32] = [0x41; 32];

/// How a key takes part in selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Method {
    /// authenticatorSelection (CTAP 2.1 and later).
    Selection,
    /// makeCredential with a zero-length pinUvAuthParam (CTAP 2.0).
    EmptyPinAuth,
    /// A dummy U2F_REGISTER (U2F-only keys).
    U2fRegister,
}

fn method(info: Option<&get_info::Response>) -> Method {
    match info {
        Some(info) if info.supports_ctap2_1() => Method::Selection,
        Some(info) if info.supports_ctap2() => Method::EmptyPinAuth,
        _ => Method::U2fRegister,
    }
}

/// Whether a key can serve the request at all, judged from its getInfo.
pub(super) type Eligible<'a> = &'a (dyn Fn(&DeviceInfo) -> Result<(), NotSupported> + Sync);

/// Chooses the key for the ceremony. Keys that cannot serve the request (`eligible`) take
/// no part in selection; when every key present is one of them, the first one's reason is
/// the error.
pub(super) async fn choose(
    io: &mut Io,
    registry: &RegistryHandle,
    requested: Option<&DeviceId>,
    u2f_poll: Duration,
    eligible: Eligible<'_>,
) -> Result<Authenticator, CeremonyError> {
    if let Some(id) = requested {
        return io
            .guard(registry.get(id))
            .await?
            .ok_or(CeremonyError::NoAuthenticator);
    }
    let Some(Subscription { devices, events }) = io.guard(registry.subscribe()).await? else {
        return Err(CeremonyError::NoAuthenticator);
    };
    let mut refusal = None;
    let mut candidates = Vec::new();
    for device in devices {
        match eligible(&device) {
            Ok(()) => candidates.push(device),
            Err(reason) => {
                debug!(device = %device.id(), %reason, "cannot serve this request");
                refusal.get_or_insert(reason);
            }
        }
    }
    match (candidates.as_slice(), refusal) {
        ([only], _) => Ok(only.authenticator.clone()),
        ([], Some(reason)) => Err(CeremonyError::NotSupported(reason)),
        ([], None) => first_plugged(io, registry, events, eligible).await,
        _ => by_touch(io, registry, candidates, events, u2f_poll, eligible).await,
    }
}

/// No key yet: announce an empty selection and take the first key plugged in (it will be
/// touched for the credential itself).
async fn first_plugged(
    io: &mut Io,
    registry: &RegistryHandle,
    mut events: broadcast::Receiver<RegistryEvent>,
    eligible: Eligible<'_>,
) -> Result<Authenticator, CeremonyError> {
    io.emit(Progress::Selecting { keys: Vec::new() }).await?;
    let take = |device: DeviceInfo| match eligible(&device) {
        Ok(()) => Ok(device.authenticator),
        Err(reason) => Err(CeremonyError::NotSupported(reason)),
    };
    loop {
        match io.guard(events.recv()).await? {
            Ok(RegistryEvent::Added(device)) => return take(device),
            Ok(_) => {}
            Err(RecvError::Lagged(_)) => {
                if let Some(device) = io.guard(registry.list()).await?.into_iter().next() {
                    return take(device);
                }
            }
            Err(RecvError::Closed) => return Err(CeremonyError::NoAuthenticator),
        }
    }
}

/// What one step of the selection loop brought.
enum Step {
    Ended(Result<(DeviceId, Authenticator, Result<(), DeviceError>), tokio::task::JoinError>),
    Event(Result<RegistryEvent, RecvError>),
    Interrupted(CeremonyError),
}

/// Selection by touch across `devices` and every key plugged in meanwhile.
async fn by_touch(
    io: &mut Io,
    registry: &RegistryHandle,
    devices: Vec<DeviceInfo>,
    mut events: broadcast::Receiver<RegistryEvent>,
    u2f_poll: Duration,
    eligible: Eligible<'_>,
) -> Result<Authenticator, CeremonyError> {
    let (stop, stopped) = watch::channel(false);
    let mut tasks = JoinSet::new();
    let mut keys: Vec<DeviceId> = Vec::new();
    let deadline = io.deadline;
    let join = |tasks: &mut JoinSet<_>, keys: &mut Vec<DeviceId>, device: DeviceInfo| {
        if keys.contains(device.id()) || eligible(&device).is_err() {
            return false;
        }
        keys.push(device.id().clone());
        debug!(device = %device.id(), "joins selection");
        tasks.spawn(touch(device, deadline, stopped.clone(), u2f_poll));
        true
    };
    for device in devices {
        join(&mut tasks, &mut keys, device);
    }
    let mut events_open = true;
    let mut announce = true;
    let outcome = loop {
        if announce {
            announce = false;
            if let Err(error) = io.emit(Progress::Selecting { keys: keys.clone() }).await {
                break Err(error);
            }
        }
        let step = tokio::select! {
            Some(ended) = tasks.join_next() => Step::Ended(ended),
            event = events.recv(), if events_open => Step::Event(event),
            reason = io.cancelled() => Step::Interrupted(CeremonyError::Cancelled(reason)),
            () = sleep_until(deadline) => Step::Interrupted(CeremonyError::Timeout),
        };
        match step {
            Step::Ended(Ok((id, authenticator, Ok(())))) => {
                debug!(device = %id, "touched: selected");
                break Ok(authenticator);
            }
            Step::Ended(Ok((id, _, Err(error)))) => {
                // This key cannot take part (removed, busy, failed); the others go on.
                debug!(device = %id, %error, "left selection");
                keys.retain(|k| k != &id);
                announce = true;
            }
            Step::Ended(Err(_)) => {}
            Step::Event(Ok(RegistryEvent::Added(device))) => {
                announce |= join(&mut tasks, &mut keys, device);
            }
            Step::Event(Ok(_)) => {}
            Step::Event(Err(RecvError::Lagged(_))) => {
                let present = match io.guard(registry.list()).await {
                    Ok(present) => present,
                    Err(error) => break Err(error),
                };
                for device in present {
                    announce |= join(&mut tasks, &mut keys, device);
                }
            }
            Step::Event(Err(RecvError::Closed)) => events_open = false,
            Step::Interrupted(error) => break Err(error),
        }
    };
    // Every other key gets CANCEL; wait until each has ended its request, so none is left
    // waiting for a touch.
    let _ = stop.send(true);
    while tasks.join_next().await.is_some() {}
    outcome
}

/// Waits for a touch on one key; ends early with `Cancelled` once `stop` turns true.
async fn touch(
    device: DeviceInfo,
    deadline: Instant,
    mut stop: watch::Receiver<bool>,
    u2f_poll: Duration,
) -> (DeviceId, Authenticator, Result<(), DeviceError>) {
    let authenticator = device.authenticator.clone();
    let result = match method(device.info.as_deref()) {
        Method::Selection => {
            let op = authenticator.selection(deadline);
            let cancel = op.cancel_handle();
            let result = op.result();
            tokio::pin!(result);
            tokio::select! {
                result = &mut result => result,
                () = stopped(&mut stop) => {
                    cancel.cancel();
                    result.await
                }
            }
        }
        Method::EmptyPinAuth => {
            let outcome = match empty_pin_auth_request() {
                Ok(request) => {
                    let op = authenticator.make_credential(&request, deadline);
                    let cancel = op.cancel_handle();
                    let result = op.result();
                    tokio::pin!(result);
                    tokio::select! {
                        result = &mut result => result.map(drop),
                        () = stopped(&mut stop) => {
                            cancel.cancel();
                            result.await.map(drop)
                        }
                    }
                }
                Err(error) => Err(error),
            };
            match outcome {
                // After the touch, a CTAP 2.0 key answers one of these (CTAP 2.0 §5.5.8.1
                // step 1).
                Err(DeviceError::Ctap(
                    StatusCode::PinNotSet | StatusCode::PinAuthInvalid | StatusCode::PinInvalid,
                )) => Ok(()),
                other => other,
            }
        }
        Method::U2fRegister => {
            tokio::select! {
                result = u2f_touch(&authenticator, deadline, u2f_poll) => result,
                () = stopped(&mut stop) => Err(DeviceError::Cancelled),
            }
        }
    };
    (device.id().clone(), authenticator, result)
}

/// Resolves once selection has ended for the losers.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    // An error means the sender is gone, which also ends selection.
    let _ = stop.wait_for(|stop| *stop).await;
}

/// The CTAP 2.0 touch request: a makeCredential for a dummy RP with a zero-length
/// pinUvAuthParam.
fn empty_pin_auth_request() -> Result<MakeCredential, DeviceError> {
    let mut request = make_credential::Request::new(
        [0; 32],
        RelyingParty {
            id: DUMMY_RP_ID.to_owned(),
            name: None,
        },
        User {
            id: vec![0],
            name: Some("dummy".to_owned()),
            display_name: None,
        },
        vec![PublicKeyCredentialParameters::public_key(alg::ES256)],
    );
    request.pin_uv_auth = Some(PinUvAuth {
        param: Vec::new(),
        protocol: 1,
    });
    // INVARIANT: the request has a user id, parameters, and no `uv` next to the param.
    MakeCredential::new(request).map_err(|_| DeviceError::Unsupported(Unsupported::Ctap2))
}

/// Sends a dummy U2F_REGISTER until the key answers `9000` (touched): U2F has no
/// keepalive, so `6985` ("touch needed") is answered by sending it again after `poll`.
pub(super) async fn u2f_touch(
    authenticator: &Authenticator,
    deadline: Instant,
    poll: Duration,
) -> Result<(), DeviceError> {
    let request = RegisterRequest {
        challenge: [0; 32],
        application: DUMMY_APPLICATION,
    };
    loop {
        let response = authenticator.u2f_register(&request, deadline).await?;
        match u2f::split_response(&response)?.1 {
            StatusWord::Success => return Ok(()),
            StatusWord::ConditionsNotSatisfied if Instant::now() < deadline => sleep(poll).await,
            StatusWord::ConditionsNotSatisfied => return Err(DeviceError::Timeout),
            other => return Err(u2f::U2fError::Status(other).into()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ctap::command::Command;

    #[test]
    fn the_ctap2_0_touch_request_carries_an_empty_pin_auth() {
        let request = empty_pin_auth_request().unwrap();
        let encoded = ctap::command::encode_request(&request).unwrap();
        // Command 0x01, then {1: 32 zero bytes, 2: {"id": ".dummy"}, 3: {...}, 4: [...],
        // 8: h'' (0x40), 9: 1}: canonical order puts the empty pinUvAuthParam last but one.
        assert_eq!(encoded[0], 0x01);
        assert_eq!(&encoded[encoded.len() - 4..], [0x08, 0x40, 0x09, 0x01]);
        assert_eq!(MakeCredential::CODE, 0x01);
        assert_eq!(request.request().rp.id, ".dummy");
    }

    #[test]
    fn keys_are_selected_the_way_they_understand() {
        use ctap::cbor::Value;
        let info = |versions: &[&str]| {
            let map = Value::Map(vec![
                (
                    Value::from(1),
                    Value::Array(versions.iter().map(|v| Value::from(*v)).collect()),
                ),
                (Value::from(3), Value::Bytes(vec![0; 16])),
            ]);
            get_info::Response::from_cbor(&ctap::cbor::to_canonical_vec(&map).unwrap()).unwrap()
        };
        assert_eq!(
            method(Some(&info(&["FIDO_2_0", "FIDO_2_1"]))),
            Method::Selection
        );
        assert_eq!(
            method(Some(&info(&["U2F_V2", "FIDO_2_0"]))),
            Method::EmptyPinAuth
        );
        assert_eq!(method(Some(&info(&["FIDO_2_1_PRE"]))), Method::EmptyPinAuth);
        assert_eq!(method(Some(&info(&["U2F_V2"]))), Method::U2fRegister);
        assert_eq!(method(None), Method::U2fRegister);
    }
}
