//! NFC security keys through PC/SC (pcscd).
//!
//! # Threads
//!
//! - The **monitor** thread owns one PC/SC context. It lists the readers and waits in
//!   `SCardGetStatusChange` with an infinite timeout on every reader plus the
//!   `\\?PnP?\Notification` pseudo-reader (readers plugged or unplugged), so it sleeps until a
//!   reader or card changes. When a usable card appears it connects to it (shared mode, T=0 or
//!   T=1) through a fresh context, starts the card's thread and reports
//!   [`TransportEvent::Added`] with an [`ApduLink`]; when the card leaves (or the reader, or
//!   pcscd) it reports [`TransportEvent::Removed`] and lets the card thread go. It reports
//!   [`TransportEvent::EnumerationComplete`] after its first look at the readers.
//! - One **card** thread per connected card (`card.rs`) owns the card and its own context, and
//!   transmits the APDUs of its link one at a time. The transport does not SELECT anything: the
//!   device layer drives the card.
//!
//! The device id is the reader's name ([`DeviceId::new`] with [`Transport::Nfc`]), so a key
//! tapped again on the same reader gets the same id.
//!
//! # Waking the monitor
//!
//! Nothing is sent to the monitor while it waits: transmits happen on the card threads. The only
//! reason to wake it is shutdown, and that is `SCardCancel` ([`pcsc::Context::cancel`]) from
//! [`NfcTransport`]'s drop, on a clone of the monitor's context. pcsc-lite drops a cancel that
//! arrives while no wait is in progress, so the drop sets a stop flag (read before each wait)
//! and cancels again every 50 ms until the thread has ended. While pcscd is unavailable the
//! monitor waits in `poll`, and the drop closes the socket pair it polls.
//!
//! # Without pcscd
//!
//! When no pcscd answers (not installed, stopped, or it went away), the transport reports
//! [`TransportEvent::Unavailable`] once and waits for pcscd (`pcscd_wait.rs`):
//! - if pcscd's socket does not exist, on inotify until it (or its directory) appears, without
//!   any timeout: a machine without pcscd costs no wakeups;
//! - if the socket exists but pcscd does not answer, inotify cannot tell when that changes, so
//!   it tries again after [`NfcConfig::first_retry`], doubling up to [`NfcConfig::max_retry`].
//!
//! Once a context is established the monitor waits on pcscd alone. (On Debian, pcscd is
//! socket-activated by systemd: the socket always exists and establishing a context starts
//! pcscd.) When a context works again the transport reports `EnumerationComplete` again.

mod card;
mod pcscd_wait;
mod readers;

use std::{
    ffi::CString,
    os::unix::net::UnixStream,
    sync::{
        Arc, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, Ordering},
        mpsc as std_mpsc,
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use pcsc::{Context, Protocols, ReaderState, Scope, ShareMode, State};
use tokio::sync::{mpsc, oneshot};

use self::{
    pcscd_wait::Woken,
    readers::{Observation, Readers, Step},
};
use super::{ApduLink, Connection, DeviceDescription, DeviceId, Transport, TransportEvent};

/// How many APDU requests may wait for a card: one is transmitted at a time and a device actor
/// has at most one in flight.
const APDU_QUEUE: usize = 1;
/// How often the drop of [`NfcTransport`] repeats its cancel until the monitor has ended.
const CANCEL_RETRY: Duration = Duration::from_millis(50);
/// How many times the drop cancels before it leaves the monitor thread to end on its own (it
/// can only be stuck handing an event to a device layer that does not read them).
const CANCEL_ATTEMPTS: u32 = 40;

/// Settings of the NFC transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NfcConfig {
    /// First pause before trying pcscd again after it did not answer.
    pub first_retry: Duration,
    /// Longest pause between tries while pcscd does not answer.
    pub max_retry: Duration,
}

impl Default for NfcConfig {
    fn default() -> Self {
        Self {
            first_retry: Duration::from_secs(1),
            max_retry: Duration::from_secs(60),
        }
    }
}

/// Why the NFC transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NfcError {
    /// The monitor thread could not be started.
    #[error("could not start the NFC monitor thread")]
    Spawn(#[source] std::io::Error),
    /// The socket pair that wakes the monitor for shutdown could not be made.
    #[error("could not create the NFC monitor's wake-up socket")]
    Wake(#[source] std::io::Error),
}

/// The running NFC transport. Dropping it stops the monitor thread, which lets the card threads
/// go: their links close once they finish the APDU in progress.
#[derive(Debug)]
pub struct NfcTransport {
    shared: Arc<Shared>,
    /// Closed to wake the monitor from its wait for pcscd.
    wake: Option<UnixStream>,
    /// Disconnected once the monitor thread has ended.
    ended: std_mpsc::Receiver<()>,
    thread: Option<JoinHandle<()>>,
}

/// What the handle and the monitor thread share.
#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    /// The monitor's context while it has one, for [`Context::cancel`].
    context: Mutex<Option<Context>>,
}

impl std::fmt::Debug for Shared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Shared")
            .field("stop", &self.stop)
            .finish_non_exhaustive()
    }
}

impl Shared {
    fn context(&self) -> MutexGuard<'_, Option<Context>> {
        self.context.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn stopping(&self) -> bool {
        self.stop.load(Ordering::SeqCst)
    }
}

/// Starts the NFC transport: devices and availability are reported on `events`. An absent
/// pcscd is not an error (see the module documentation).
pub fn spawn(
    config: NfcConfig,
    events: mpsc::Sender<TransportEvent>,
) -> Result<NfcTransport, NfcError> {
    let shared = Arc::new(Shared::default());
    let (wake_tx, wake_rx) = UnixStream::pair().map_err(NfcError::Wake)?;
    let (ended_tx, ended_rx) = std_mpsc::channel();
    let monitor = Monitor {
        config,
        events,
        shared: Arc::clone(&shared),
        shutdown: wake_rx,
        readers: Readers::default(),
    };
    let thread = thread::Builder::new()
        .name("nfc-monitor".into())
        .spawn(move || {
            monitor.run();
            drop(ended_tx);
        })
        .map_err(NfcError::Spawn)?;
    Ok(NfcTransport {
        shared,
        wake: Some(wake_tx),
        ended: ended_rx,
        thread: Some(thread),
    })
}

impl Drop for NfcTransport {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.wake.take();
        let mut ended = false;
        for _ in 0..CANCEL_ATTEMPTS {
            if let Some(context) = self.shared.context().as_ref()
                && let Err(error) = context.cancel()
            {
                tracing::debug!(%error, "cancelling the NFC monitor's wait failed");
            }
            match self.ended.recv_timeout(CANCEL_RETRY) {
                Err(std_mpsc::RecvTimeoutError::Timeout) => {}
                Ok(()) | Err(std_mpsc::RecvTimeoutError::Disconnected) => {
                    ended = true;
                    break;
                }
            }
        }
        if let Some(thread) = self.thread.take() {
            if ended {
                let _ = thread.join();
            } else {
                tracing::warn!("the NFC monitor did not stop in time; leaving it to end alone");
            }
        }
    }
}

/// How a watch over one context ended.
enum WatchEnd {
    /// Shutdown, or the device layer dropped its end of the events.
    Stop,
    /// pcscd failed (stopped, or a call failed): start over with a new context.
    Lost(pcsc::Error),
}

/// What the monitor keeps for a connected card: dropping it tells the card thread the card is
/// gone.
type CardGone = oneshot::Sender<()>;

/// The monitor thread.
struct Monitor {
    config: NfcConfig,
    events: mpsc::Sender<TransportEvent>,
    shared: Arc<Shared>,
    /// Readable (at end of stream) once the handle is dropped.
    shutdown: UnixStream,
    readers: Readers<CardGone>,
}

impl Monitor {
    fn run(mut self) {
        let socket = pcscd_wait::socket_path();
        let mut retry = self.config.first_retry;
        let mut unavailable = false;
        while !self.shared.stopping() {
            let reason = match Context::establish(Scope::User) {
                Ok(context) => {
                    unavailable = false;
                    retry = self.config.first_retry;
                    *self.shared.context() = Some(context.clone());
                    let end = self.watch(&context);
                    *self.shared.context() = None;
                    for (reader, gone) in self.readers.drain() {
                        if !self.removed(&reader, gone) {
                            return;
                        }
                    }
                    match end {
                        WatchEnd::Stop => return,
                        WatchEnd::Lost(error) => error,
                    }
                }
                Err(error) => error,
            };
            if !unavailable {
                unavailable = true;
                tracing::info!(error = %reason, "PC/SC unavailable; NFC keys are not seen");
                let event = TransportEvent::Unavailable {
                    transport: Transport::Nfc,
                    reason: format!("PC/SC: {reason}"),
                };
                if !self.send(event) {
                    return;
                }
            }
            match pcscd_wait::wait(&socket, &self.shutdown, retry) {
                Woken::Shutdown => return,
                Woken::Appeared => {}
                Woken::Timeout => retry = retry.saturating_mul(2).min(self.config.max_retry),
            }
        }
    }

    /// Sends an event; false when the device layer is gone.
    fn send(&self, event: TransportEvent) -> bool {
        self.events.blocking_send(event).is_ok()
    }

    /// Reports a card removed; false when the device layer is gone.
    fn removed(&self, reader: &CString, gone: CardGone) -> bool {
        drop(gone);
        let id = reader_id(reader);
        tracing::debug!(%id, "NFC card removed");
        self.send(TransportEvent::Removed(id))
    }

    /// Watches the readers of one context until shutdown or a PC/SC failure.
    fn watch(&mut self, context: &Context) -> WatchEnd {
        let mut states = vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
        let mut first = true;
        loop {
            let names = match context.list_readers_owned() {
                Ok(names) => names,
                Err(error) => return WatchEnd::Lost(error),
            };
            for (reader, gone) in self.readers.retain(&names) {
                if !self.removed(&reader, gone) {
                    return WatchEnd::Stop;
                }
            }
            sync_states(&mut states, &names);

            if self.shared.stopping() {
                return WatchEnd::Stop;
            }
            // The first look returns at once: every reader starts UNAWARE, and with no reader
            // at all the zero timeout ends it. After that, wait for a change, without a timeout.
            let timeout = first.then_some(Duration::ZERO);
            match context.get_status_change(timeout, &mut states) {
                Ok(()) | Err(pcsc::Error::Timeout) => {}
                Err(pcsc::Error::Cancelled) => {
                    if self.shared.stopping() {
                        return WatchEnd::Stop;
                    }
                    continue;
                }
                // A reader left between the listing and the wait: list again.
                Err(pcsc::Error::UnknownReader) => continue,
                Err(error) => return WatchEnd::Lost(error),
            }
            for state in states.iter_mut().skip(1) {
                let reader = state.name().to_owned();
                let observation = Observation::new(state.event_state(), state.event_count());
                state.sync_current_state();
                if !self.apply(&reader, observation) {
                    return WatchEnd::Stop;
                }
            }
            if let Some(pnp) = states.first_mut() {
                pnp.sync_current_state();
            }
            if first {
                first = false;
                if !self.send(TransportEvent::EnumerationComplete(Transport::Nfc)) {
                    return WatchEnd::Stop;
                }
            }
        }
    }

    /// Acts on one reader's observation; false when the device layer is gone.
    fn apply(&mut self, reader: &CString, observation: Observation) -> bool {
        match self.readers.observe(reader, observation) {
            Step::Keep => true,
            Step::Remove(gone) => self.removed(reader, gone),
            Step::Replace(gone) => self.removed(reader, gone) && self.connect(reader, observation),
            Step::Connect => self.connect(reader, observation),
        }
    }

    /// Connects to the card in `reader` and reports it; false when the device layer is gone.
    fn connect(&mut self, reader: &CString, observation: Observation) -> bool {
        let id = reader_id(reader);
        let card = Context::establish(Scope::User)
            .and_then(|context| context.connect(reader, ShareMode::Shared, Protocols::ANY));
        let card = match card {
            Ok(card) => card,
            Err(error) => {
                // Mute, held exclusively, or already gone: tried again when the state moves.
                tracing::warn!(%id, %error, "cannot connect to the NFC card");
                self.readers.refused(reader, observation);
                return true;
            }
        };
        let (tx, rx) = mpsc::channel(APDU_QUEUE);
        let (gone_tx, gone_rx) = oneshot::channel();
        if let Err(error) = card::spawn(card, rx, gone_rx) {
            tracing::warn!(%id, %error, "cannot start the NFC card thread");
            self.readers.refused(reader, observation);
            return true;
        }
        self.readers.connected(reader, observation, gone_tx);
        tracing::debug!(%id, "NFC card added");
        self.send(TransportEvent::Added {
            description: describe(reader),
            connection: Connection::Apdu(ApduLink { tx }),
        })
    }
}

/// Makes `states` hold the PnP pseudo-reader first, then exactly the readers in `names`,
/// keeping the known state of readers already there.
fn sync_states(states: &mut Vec<ReaderState>, names: &[CString]) {
    let mut index = 0usize;
    states.retain(|state| {
        let keep = index == 0 || names.iter().any(|name| name.as_c_str() == state.name());
        index = index.saturating_add(1);
        keep
    });
    for name in names {
        if !states
            .iter()
            .skip(1)
            .any(|state| state.name() == name.as_c_str())
        {
            states.push(ReaderState::new(name.clone(), State::UNAWARE));
        }
    }
}

/// The device id of the card in `reader`.
fn reader_id(reader: &CString) -> DeviceId {
    DeviceId::new(Transport::Nfc, &reader.to_string_lossy())
}

/// What is known about a card before any APDU: its reader.
fn describe(reader: &CString) -> DeviceDescription {
    DeviceDescription {
        id: reader_id(reader),
        transport: Transport::Nfc,
        path: reader.to_string_lossy().into_owned(),
        vendor_id: None,
        product_id: None,
        product: None,
        manufacturer: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(list: &[&str]) -> Vec<CString> {
        list.iter().map(|n| CString::new(*n).unwrap()).collect()
    }

    fn state_names(states: &[ReaderState]) -> Vec<String> {
        states
            .iter()
            .map(|s| s.name().to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn states_follow_the_reader_list_behind_the_pnp_reader() {
        let mut states = vec![ReaderState::new(pcsc::PNP_NOTIFICATION(), State::UNAWARE)];
        sync_states(&mut states, &names(&["A 00 00", "B 00 00"]));
        assert_eq!(
            state_names(&states),
            ["\\\\?PnP?\\Notification", "A 00 00", "B 00 00"]
        );
        // Known readers keep their state; a vanished one goes; a new one starts UNAWARE.
        states[1] = ReaderState::new(CString::new("A 00 00").unwrap(), State::PRESENT);
        sync_states(&mut states, &names(&["A 00 00", "C 00 00"]));
        assert_eq!(
            state_names(&states),
            ["\\\\?PnP?\\Notification", "A 00 00", "C 00 00"]
        );
        assert_eq!(states[1].current_state(), State::PRESENT);
        assert_eq!(states[2].current_state(), State::UNAWARE);
        sync_states(&mut states, &[]);
        assert_eq!(state_names(&states), ["\\\\?PnP?\\Notification"]);
    }

    #[test]
    fn cards_are_described_by_their_reader() {
        let reader = CString::new("Virtual PCD 00 00").unwrap();
        let description = describe(&reader);
        assert_eq!(description.id.as_str(), "nfc_Virtual_PCD_00_00");
        assert_eq!(description.transport, Transport::Nfc);
        assert_eq!(description.path, "Virtual PCD 00 00");
        assert_eq!(description.vendor_id, None);
    }

    #[test]
    fn defaults_retry_within_a_minute() {
        let config = NfcConfig::default();
        assert_eq!(config.first_retry, Duration::from_secs(1));
        assert_eq!(config.max_retry, Duration::from_secs(60));
    }
}
