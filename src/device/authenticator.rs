//! [`Authenticator`]: the async API to one key.
//!
//! A handle only sends requests to the key's actor and decodes the answers; the PIN/UV
//! cryptography runs here, in the caller's task, so PINs and shared secrets never reach the
//! actor (it sees encrypted request bytes only). Its randomness (the ephemeral ECDH key,
//! protocol two's IVs) comes from the key's own source, shared with the actor, so that a
//! recording of the key notes it and a replay hands it back (see [`super::rng`]).

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use ctap::command::client_pin::{
    GetKeyAgreement, GetPinRetries, GetUvRetries, KeyAgreement, Permissions, PinRetries,
    PinSession, UvRetries,
};
use ctap::command::get_info;
use ctap::command::make_credential::{self, MakeCredential};
use ctap::command::selection::Selection;
use ctap::command::{Command, decode_response, encode_request};
use ctap::pin_uv::{Pin, PinUvAuthProtocol, PinUvAuthToken};
use ctap::u2f::{self, ApduEncoding, AuthenticateRequest, KeyHandleCheck, RegisterRequest};
use tokio::sync::mpsc::error::TrySendError;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;

use super::actor::{EVENT_BACKLOG, Reply, Request, RequestKind};
use super::error::DeviceError;
use super::record::RandomnessKind;
use super::rng::{DeviceRng, HostRng};
use crate::transport::{DeviceId, Transport};

/// Progress of an operation, from the key's KEEPALIVEs (CTAP 2.2 §11.2.9.1.7) or NFC status
/// updates (§11.3.7.2). Sent when the status changes, not for every repetition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum OpEvent {
    /// STATUS_PROCESSING: the key is working.
    Processing,
    /// STATUS_UPNEEDED: the key waits for a touch ("touch your key").
    TouchNeeded,
}

/// Cancels an [`Operation`]; cheap to clone, usable from any task.
#[derive(Clone, Debug)]
pub struct CancelHandle {
    tx: mpsc::Sender<()>,
}

impl CancelHandle {
    /// Asks the key to abandon the operation (CTAPHID_CANCEL, or the NFC cancel at the next
    /// status update). The operation then ends with [`DeviceError::Cancelled`]. Does nothing
    /// once the operation has ended.
    pub fn cancel(&self) {
        // A full channel already holds a cancel; a closed one means the operation has ended.
        let _ = self.tx.try_send(());
    }
}

/// An operation in flight on a key: a stream of [`OpEvent`]s, a cancellation handle, and the
/// final result. Dropping it cancels the operation.
pub struct Operation<T> {
    events: mpsc::Receiver<OpEvent>,
    reply: oneshot::Receiver<Reply>,
    cancel: CancelHandle,
    decode: fn(&[u8]) -> Result<T, DeviceError>,
}

/// authenticatorMakeCredential in flight.
pub type MakeCredentialOp = Operation<make_credential::Response>;

/// authenticatorSelection in flight.
pub type SelectionOp = Operation<()>;

impl<T> fmt::Debug for Operation<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Operation").finish_non_exhaustive()
    }
}

impl<T> Operation<T> {
    /// The next event, or `None` once the operation has ended (then [`Operation::result`]
    /// is ready).
    pub async fn next_event(&mut self) -> Option<OpEvent> {
        self.events.recv().await
    }

    /// Cancels the operation (see [`CancelHandle::cancel`]).
    pub fn cancel(&self) {
        self.cancel.cancel();
    }

    /// A handle to cancel the operation from elsewhere.
    pub fn cancel_handle(&self) -> CancelHandle {
        self.cancel.clone()
    }

    /// Waits for the result. Events not read by then are discarded.
    pub async fn result(self) -> Result<T, DeviceError> {
        match self.reply.await {
            Ok(Ok(response)) => (self.decode)(&response),
            Ok(Err(error)) => Err(error),
            // The actor ended without answering: the registry removed the key.
            Err(_) => Err(DeviceError::DeviceRemoved),
        }
    }
}

struct Inner {
    id: DeviceId,
    transport: Transport,
    requests: mpsc::Sender<Request>,
    info: watch::Receiver<Option<Arc<get_info::Response>>>,
    command_timeout: Duration,
    rng: Arc<DeviceRng>,
}

/// One key. Cheap to clone; every clone talks to the same device actor, which serves one
/// request at a time: a request made while another one is in flight fails at once with
/// [`DeviceError::Busy`]. Once the key is gone every request fails with
/// [`DeviceError::DeviceRemoved`].
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("id", &self.inner.id)
            .field("transport", &self.inner.transport)
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    pub(super) fn new(
        id: DeviceId,
        transport: Transport,
        requests: mpsc::Sender<Request>,
        info: watch::Receiver<Option<Arc<get_info::Response>>>,
        command_timeout: Duration,
        rng: Arc<DeviceRng>,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                id,
                transport,
                requests,
                info,
                command_timeout,
                rng,
            }),
        }
    }

    /// The key's stable id.
    pub fn id(&self) -> &DeviceId {
        &self.inner.id
    }

    /// The key's transport.
    pub fn transport(&self) -> Transport {
        self.inner.transport
    }

    /// The cached authenticatorGetInfo answer (CTAP 2.2 §6.4): read when the key appeared
    /// and again after a PIN is set or changed. `None` for U2F-only keys.
    pub fn info(&self) -> Option<Arc<get_info::Response>> {
        self.inner.info.borrow().clone()
    }

    /// The PIN/UV auth protocol to use: the key's first listed one that this platform
    /// implements (CTAP 2.2 §6.5.4).
    pub fn pin_protocol(&self) -> Option<PinUvAuthProtocol> {
        let preferred = self.info()?.preferred_pin_uv_auth_protocol(&[2, 1])?;
        PinUvAuthProtocol::try_from(u64::from(preferred)).ok()
    }

    /// authenticatorMakeCredential (CTAP 2.2 §6.1), until `deadline` (the ceremony's).
    pub fn make_credential(&self, request: &MakeCredential, deadline: Instant) -> MakeCredentialOp {
        self.command(request, deadline)
    }

    /// authenticatorSelection (CTAP 2.2 §6.9): ends with `Ok(())` when the user touches this
    /// key. Cancel the others once one is chosen.
    pub fn selection(&self, deadline: Instant) -> SelectionOp {
        self.command(&Selection, deadline)
    }

    /// Any CTAP2 command, until `deadline`, with events and cancellation.
    pub fn command<C: Command>(&self, command: &C, deadline: Instant) -> Operation<C::Response> {
        match encode_request(command) {
            Ok(payload) => self.submit(RequestKind::Cbor(payload), deadline, false, decode::<C>),
            Err(error) => self.failed(error.into(), decode::<C>),
        }
    }

    /// CTAPHID_WINK: the key blinks or beeps (CTAP 2.2 §11.2.9.2.1). Not available over NFC.
    pub async fn wink(&self) -> Result<(), DeviceError> {
        let deadline = self.command_deadline();
        self.submit(RequestKind::Wink, deadline, false, |_| Ok(()))
            .result()
            .await
    }

    /// clientPIN getPINRetries (CTAP 2.2 §6.5.5.2).
    pub async fn pin_retries(&self) -> Result<PinRetries, DeviceError> {
        self.simple(&GetPinRetries::default(), false).await
    }

    /// clientPIN getUVRetries (CTAP 2.2 §6.5.5.3).
    pub async fn uv_retries(&self) -> Result<UvRetries, DeviceError> {
        self.simple(&GetUvRetries::default(), false).await
    }

    /// Runs `f` with this key's source of host randomness
    /// ([`HostRandomness`](super::HostRandomness)), each draw noted as `kind` while the key is
    /// recorded. Give it to the [`PinSession`] methods called on a session from
    /// [`Authenticator::key_agreement`] (`rng` arguments), so that a recording of the key
    /// replays; the PIN operations of this type do so already.
    ///
    /// Fails with [`DeviceError::Randomness`] when a draw failed (the output of `f` is then
    /// dropped: it was made from filler bytes). `f` runs under the source's lock: keep it
    /// short and synchronous.
    pub fn host_rng<T>(
        &self,
        kind: RandomnessKind,
        f: impl FnOnce(&mut HostRng<'_>) -> T,
    ) -> Result<T, DeviceError> {
        self.inner.rng.draw(kind, f)
    }

    /// clientPIN getKeyAgreement (CTAP 2.2 §6.5.5.4) and the platform's half of the key
    /// agreement: a session for one PIN request. Keys change their key-agreement key after a
    /// wrong PIN, so get a new session for every attempt. The ephemeral key comes from the
    /// key's randomness source ([`Authenticator::host_rng`]).
    pub async fn key_agreement(
        &self,
        protocol: PinUvAuthProtocol,
    ) -> Result<PinSession, DeviceError> {
        let key_agreement: KeyAgreement = self
            .simple(
                &GetKeyAgreement {
                    pin_uv_auth_protocol: u32::from(protocol.number()),
                },
                false,
            )
            .await?;
        let session = self.host_rng(RandomnessKind::EcdhKey, |rng| {
            PinSession::new(protocol, &key_agreement, rng)
        })??;
        Ok(session)
    }

    /// clientPIN setPIN (CTAP 2.2 §6.5.5.5) on a key without a PIN; the cached getInfo is read
    /// again afterwards (`clientPin` becomes true).
    pub async fn set_pin(
        &self,
        protocol: PinUvAuthProtocol,
        new_pin: &Pin,
    ) -> Result<(), DeviceError> {
        let session = self.key_agreement(protocol).await?;
        let request = self.host_rng(RandomnessKind::Iv, |rng| session.set_pin(new_pin, rng))??;
        self.simple(&request, true).await
    }

    /// clientPIN changePIN (CTAP 2.2 §6.5.5.6); the cached getInfo is read again afterwards
    /// (`forcePINChange` clears).
    pub async fn change_pin(
        &self,
        protocol: PinUvAuthProtocol,
        current: &Pin,
        new_pin: &Pin,
    ) -> Result<(), DeviceError> {
        let session = self.key_agreement(protocol).await?;
        let request = self.host_rng(RandomnessKind::Iv, |rng| {
            session.change_pin(current, new_pin, rng)
        })??;
        self.simple(&request, true).await
    }

    /// A pinUvAuthToken from the PIN: getPinUvAuthTokenUsingPinWithPermissions (CTAP 2.2
    /// §6.5.5.7.2) with `permissions` scoped to `rp_id` on keys with the `pinUvAuthToken`
    /// option, the legacy getPinToken (which ignores both) on others. A wrong PIN is
    /// [`DeviceError::Ctap`] with `PinInvalid`; ask again with a new call (it makes a new key
    /// agreement, as keys require).
    pub async fn pin_token(
        &self,
        protocol: PinUvAuthProtocol,
        pin: &Pin,
        permissions: Permissions,
        rp_id: Option<&str>,
    ) -> Result<PinUvAuthToken, DeviceError> {
        let session = self.key_agreement(protocol).await?;
        let with_permissions = self.info().is_some_and(|info| info.pin_uv_auth_token());
        let encrypted = if with_permissions {
            let request = self.host_rng(RandomnessKind::Iv, |rng| {
                session.get_token_using_pin(pin, permissions, rp_id.map(str::to_owned), rng)
            })??;
            self.simple(&request, false).await?
        } else {
            let request =
                self.host_rng(RandomnessKind::Iv, |rng| session.get_pin_token(pin, rng))??;
            self.simple(&request, false).await?
        };
        Ok(session.decrypt_token(&encrypted)?)
    }

    /// Sends a CTAP1/U2F command APDU as it is (CTAPHID_MSG over HID, a plain APDU over NFC)
    /// and returns the response APDU, data then status word.
    pub async fn u2f_apdu(&self, apdu: Vec<u8>, deadline: Instant) -> Result<Vec<u8>, DeviceError> {
        self.submit(RequestKind::U2f(apdu), deadline, false, |r| Ok(r.to_vec()))
            .result()
            .await
    }

    /// U2F_REGISTER once (extended encoding over HID, short over NFC); returns the response
    /// APDU. `6985` means "touch needed": send it again until the deadline (U2F has no
    /// keepalive).
    pub async fn u2f_register(
        &self,
        request: &RegisterRequest,
        deadline: Instant,
    ) -> Result<Vec<u8>, DeviceError> {
        self.u2f_apdu(request.to_apdu(self.u2f_encoding()), deadline)
            .await
    }

    /// U2F_AUTHENTICATE check-only: does this key know the key handle?
    pub async fn u2f_check_only(
        &self,
        request: &AuthenticateRequest,
        deadline: Instant,
    ) -> Result<KeyHandleCheck, DeviceError> {
        let apdu = request.to_apdu(self.u2f_encoding())?;
        let response = self.u2f_apdu(apdu, deadline).await?;
        Ok(u2f::check_only_outcome(&response)?)
    }

    fn u2f_encoding(&self) -> ApduEncoding {
        match self.inner.transport {
            Transport::Nfc => ApduEncoding::Short,
            Transport::Usb | Transport::Virtual => ApduEncoding::Extended,
        }
    }

    fn command_deadline(&self) -> Instant {
        Instant::now() + self.inner.command_timeout
    }

    /// A CTAP2 command that does not wait for the user, with the command timeout.
    async fn simple<C: Command>(
        &self,
        command: &C,
        refresh_info: bool,
    ) -> Result<C::Response, DeviceError> {
        let deadline = self.command_deadline();
        let op = match encode_request(command) {
            Ok(payload) => self.submit(
                RequestKind::Cbor(payload),
                deadline,
                refresh_info,
                decode::<C>,
            ),
            Err(error) => self.failed(error.into(), decode::<C>),
        };
        op.result().await
    }

    /// Hands a request to the actor; a full mailbox is busy, a closed one a removed key.
    fn submit<T>(
        &self,
        kind: RequestKind,
        deadline: Instant,
        refresh_info: bool,
        decode: fn(&[u8]) -> Result<T, DeviceError>,
    ) -> Operation<T> {
        let (events_tx, events) = mpsc::channel(EVENT_BACKLOG);
        let (cancel_tx, cancel_rx) = mpsc::channel(1);
        let (reply_tx, reply) = oneshot::channel();
        let request = Request {
            kind,
            deadline,
            events: Some(events_tx),
            cancel: Some(cancel_rx),
            refresh_info,
            reply: reply_tx,
        };
        match self.inner.requests.try_send(request) {
            Ok(()) => {}
            Err(TrySendError::Full(request)) => request.refuse(DeviceError::Busy),
            Err(TrySendError::Closed(request)) => request.refuse(DeviceError::DeviceRemoved),
        }
        Operation {
            events,
            reply,
            cancel: CancelHandle { tx: cancel_tx },
            decode,
        }
    }

    /// An operation that failed before reaching the key.
    fn failed<T>(
        &self,
        error: DeviceError,
        decode: fn(&[u8]) -> Result<T, DeviceError>,
    ) -> Operation<T> {
        let (_, events) = mpsc::channel(1);
        let (cancel_tx, _) = mpsc::channel(1);
        let (reply_tx, reply) = oneshot::channel();
        let _ = reply_tx.send(Err(error));
        Operation {
            events,
            reply,
            cancel: CancelHandle { tx: cancel_tx },
            decode,
        }
    }
}

/// Decodes a CTAP2 response (status byte first) to `C`'s request.
fn decode<C: Command>(response: &[u8]) -> Result<C::Response, DeviceError> {
    Ok(decode_response::<C>(response)?)
}
