//! The firmware thread: fido-authenticator 0.3.0 on trussed's virt platform (RAM littlefs),
//! reached through ctaphid-dispatch for HID messages and apdu-dispatch for NFC APDUs, exactly
//! the two front ends a Nitrokey 3 / Solo 2 build wires it into.

use std::sync::{
    Arc,
    mpsc::{Receiver, SyncSender},
};

use apdu_dispatch::dispatch::ApduDispatch;
use ctaphid_dispatch::{DEFAULT_MESSAGE_SIZE, Dispatch, InterchangeResponse, app::Command};
use fido_authenticator::Authenticator;
use littlefs2::path;
use rand::{RngCore as _, rngs::OsRng};
use trussed::{
    backend::BackendId,
    platform::Platform as _,
    store::Store as _,
    virt::{self, StoreConfig},
};
use trussed_staging::virt::{BackendIds, Dispatcher};
use zeroize::Zeroizing;

use crate::{
    Error,
    attestation::Attestation,
    ctaphid::{HidCommand, HidReply, err},
    device::Event,
    pin,
    presence::{CancelFlag, JobId, PresenceGate, Shared, VirtUi},
};

/// Largest CTAPHID request the key accepts and the maxMsgSize its getInfo reports; the
/// Nitrokey 3 uses the same 3072 bytes (usbd-ctaphid's message buffer).
pub(crate) const MAX_MSG_SIZE: usize = 3072;
/// Largest raw APDU apdu-dispatch takes (its interchange buffer).
pub(crate) const MAX_APDU_LEN: usize = apdu_dispatch::interchanges::SIZE;

/// ISO 7816-4 status words used when no APDU reaches the firmware.
const SW_WRONG_LENGTH: [u8; 2] = [0x67, 0x00];
const SW_NO_PRECISE_DIAGNOSIS: [u8; 2] = [0x6f, 0x00];

/// Core trussed plus the staging backend (hkdf, fs-info, chunked), which fido-authenticator
/// needs.
const BACKENDS: &[BackendId<BackendIds>] = &[
    BackendId::Custom(BackendIds::StagingBackend),
    BackendId::Core,
];

type HidRequester<'a> = ctaphid_dispatch::Requester<'a, DEFAULT_MESSAGE_SIZE>;
type HidDispatch<'a> = Dispatch<'a, 'static, DEFAULT_MESSAGE_SIZE>;

/// A request for the firmware.
#[derive(Debug)]
pub(crate) struct Job {
    pub(crate) id: JobId,
    /// Set when the requester gives up; the firmware then skips the job or ends its presence
    /// wait.
    pub(crate) cancel: CancelFlag,
    pub(crate) work: Work,
}

/// What a [`Job`] asks the firmware to do.
#[derive(Debug)]
pub(crate) enum Work {
    /// A CTAPHID message; the reply goes to the pipe thread as [`Event::Reply`].
    Hid {
        command: HidCommand,
        payload: Vec<u8>,
    },
    /// A raw command APDU; the reply (data and SW1 SW2) goes to `reply`.
    Apdu {
        apdu: Vec<u8>,
        reply: SyncSender<Vec<u8>>,
    },
}

/// Everything the firmware thread needs.
pub(crate) struct Firmware {
    pub(crate) shared: Arc<Shared>,
    pub(crate) attestation: Arc<Attestation>,
    /// The preset PIN, wiped when the firmware thread is done with it.
    pub(crate) pin: Option<Zeroizing<String>>,
    pub(crate) jobs: Receiver<Job>,
    pub(crate) events: SyncSender<Event>,
    /// Start-up result: sent once the firmware is ready to serve (or failed).
    pub(crate) ready: SyncSender<Result<(), Error>>,
}

impl Firmware {
    /// Runs the firmware until every job sender is gone or the key stops.
    pub(crate) fn run(mut self) {
        // Owned here so that it is wiped as soon as the PIN is set, not when the thread ends.
        let mut pin = self.pin.take();
        // Tells the pipe thread when this thread ends, also by unwinding from a panic in the
        // firmware, so that a request waiting for it does not wait forever.
        let _notice = StopNotice(self.events.clone());
        virt::with_platform(StoreConfig::ram(), |mut platform| {
            // trussed's virt platform seeds its RNG with a constant; every virtual key gets its
            // own key-wrapping key and credential keys from a fresh seed instead.
            let mut seed = [0u8; 32];
            OsRng.fill_bytes(&mut seed);
            *platform.rng() = rand_core::SeedableRng::from_seed(seed);

            let store = platform.store();
            if let Err(error) = provision(store.ifs(), &self.attestation) {
                let _ = self.ready.send(Err(error));
                return;
            }
            platform
                .user_interface()
                .set_inner(Box::new(VirtUi(Arc::clone(&self.shared))));
            platform.run_client_with_backends("fido", Dispatcher::default(), BACKENDS, |client| {
                self.serve(client, pin.take());
            });
        });
    }

    fn serve(&self, client: trussed_staging::virt::Client<'_>, pin: Option<Zeroizing<String>>) {
        let mut authenticator = Authenticator::new(
            client,
            PresenceGate(&self.shared),
            fido_authenticator::Config {
                max_msg_size: MAX_MSG_SIZE,
                skip_up_timeout: None,
                max_resident_credential_count: None,
                large_blobs: None,
                nfc_transport: true,
            },
        );
        let hid_channel = ctaphid_dispatch::Channel::<DEFAULT_MESSAGE_SIZE>::new();
        let contact_channel = apdu_dispatch::interchanges::Channel::new();
        let nfc_channel = apdu_dispatch::interchanges::Channel::new();
        // Fresh channels always split; the else branch only keeps this free of panics.
        let (
            Some((mut hid_rq, hid_rp)),
            Some((_contact_rq, contact_rp)),
            Some((mut nfc_rq, nfc_rp)),
        ) = (
            hid_channel.split(),
            contact_channel.split(),
            nfc_channel.split(),
        )
        else {
            let _ = self.ready.send(Err(Error::Stopped));
            return;
        };
        let mut hid = HidDispatch::new(hid_rp);
        let mut nfc = ApduDispatch::new(contact_rp, nfc_rp);

        if let Some(pin) = pin {
            let result = pin::set_pin(&pin, |request| {
                hid_call(
                    &mut hid_rq,
                    &mut hid,
                    &mut authenticator,
                    HidCommand::Cbor,
                    request,
                )
            });
            if let Err(error) = result {
                let _ = self.ready.send(Err(Error::PinSetup(error)));
                return;
            }
        }
        if self.ready.send(Ok(())).is_err() {
            return;
        }

        // No timeout: the queue ends (every sender dropped) when the key is dropped, which is
        // what wakes an idle firmware thread for good.
        while let Ok(job) = self.jobs.recv() {
            if self.shared.is_stopping() {
                break;
            }
            if !self.shared.begin_job(job.id, &job.cancel) {
                continue;
            }
            match job.work {
                Work::Hid { command, payload } => {
                    let reply =
                        hid_call(&mut hid_rq, &mut hid, &mut authenticator, command, &payload);
                    self.shared.end_job();
                    let _ = self.events.send(Event::Reply { job: job.id, reply });
                }
                Work::Apdu { apdu, reply } => {
                    let response = apdu_call(&mut nfc_rq, &mut nfc, &mut authenticator, &apdu);
                    self.shared.end_job();
                    // The caller may have given up (timeout); then nobody needs the answer.
                    let _ = reply.try_send(response);
                }
            }
        }
    }
}

struct StopNotice(SyncSender<Event>);

impl Drop for StopNotice {
    fn drop(&mut self) {
        let _ = self.0.send(Event::FirmwareStopped);
    }
}

/// Writes the attestation certificate and key where fido-authenticator looks for them
/// (`constants::ATTESTATION_CERT_ID` / `ATTESTATION_KEY_ID`, both special id 0 of client
/// "fido").
fn provision(
    ifs: &dyn littlefs2::object_safe::DynFilesystem,
    attestation: &Attestation,
) -> Result<(), Error> {
    let storage = |error: littlefs2::io::Error| Error::Storage { code: error.code() };
    ifs.create_dir_all(path!("fido/x5c")).map_err(storage)?;
    ifs.write(path!("fido/x5c/00"), &attestation.cert_der)
        .map_err(storage)?;
    ifs.create_dir_all(path!("fido/sec")).map_err(storage)?;
    ifs.write(path!("fido/sec/00"), &attestation.key_trussed)
        .map_err(storage)?;
    Ok(())
}

/// Runs one CTAPHID message through ctaphid-dispatch.
fn hid_call(
    requester: &mut HidRequester<'_>,
    dispatch: &mut HidDispatch<'_>,
    app: &mut dyn ctaphid_dispatch::app::App<'static>,
    command: HidCommand,
    payload: &[u8],
) -> HidReply {
    let Ok(message) = heapless_bytes::Bytes::<DEFAULT_MESSAGE_SIZE>::try_from(payload) else {
        return HidReply::Error(err::INVALID_LEN);
    };
    let command = match command {
        HidCommand::Cbor => Command::Cbor,
        HidCommand::Msg => Command::Msg,
    };
    if requester.request((command, message)).is_err() {
        return HidReply::Error(err::OTHER);
    }
    dispatch.poll(&mut [app]);
    match requester.take_response() {
        Some(InterchangeResponse(Ok(response))) => HidReply::Data(response.as_slice().to_vec()),
        Some(InterchangeResponse(Err(error))) => HidReply::Error(match error {
            ctaphid_dispatch::app::Error::InvalidCommand => err::INVALID_CMD,
            ctaphid_dispatch::app::Error::InvalidLength => err::INVALID_LEN,
            ctaphid_dispatch::app::Error::NoResponse => err::OTHER,
        }),
        None => {
            let _ = requester.cancel();
            HidReply::Error(err::OTHER)
        }
    }
}

/// Runs one raw command APDU through apdu-dispatch on the contactless interface.
fn apdu_call(
    requester: &mut apdu_dispatch::interchanges::Requester<'_>,
    dispatch: &mut ApduDispatch<'_>,
    app: &mut dyn apdu_dispatch::App,
    apdu: &[u8],
) -> Vec<u8> {
    let Ok(message) = apdu_dispatch::interchanges::Data::from_slice(apdu) else {
        return SW_WRONG_LENGTH.to_vec();
    };
    if requester.request(message).is_err() {
        return SW_NO_PRECISE_DIAGNOSIS.to_vec();
    }
    dispatch.poll(&mut [app]);
    match requester.take_response() {
        Some(response) => response.as_slice().to_vec(),
        None => {
            let _ = requester.cancel();
            SW_NO_PRECISE_DIAGNOSIS.to_vec()
        }
    }
}
