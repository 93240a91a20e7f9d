//! [`VirtKey`]: the threads of one virtual key and the host-facing calls.
//!
//! Three threads per key:
//! - the firmware thread ([`crate::firmware`]) runs fido-authenticator inside
//!   `trussed::virt::with_platform`, taking one job at a time from a bounded queue
//!   ([`crate::JOB_QUEUE_LEN`]; a full queue refuses new work). Each job carries its own
//!   cancellation mark ([`CancelFlag`]), which whoever abandons the job sets;
//! - trussed's own service thread, started by the virt platform;
//! - the pipe thread owns the CTAPHID state machine ([`crate::ctaphid::Pipe`]) and waits on one
//!   event channel (host reports, firmware replies, presence changes, stop) with a timeout set
//!   to the next keepalive or continuation deadline, so it stays responsive while the firmware
//!   blocks in a presence wait; with no deadline it waits without timeout.
//!
//! Neither of this crate's threads wakes up while the key is idle: shutdown wakes them
//! explicitly (an [`Event::Stop`] for the pipe thread; for the firmware thread the end of the
//! job queue, whose senders go with the `VirtKey` and the pipe thread).
//!
//! Reports for the host go to an outbox that [`VirtKey::read_report`] waits on.

use std::{
    collections::VecDeque,
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TrySendError},
    },
    thread::{self, JoinHandle},
    time::{Duration, Instant},
};

use zeroize::Zeroizing;

use crate::{
    Config, Error, JOB_QUEUE_LEN, TouchPolicy,
    attestation::{self, AAGUID, Attestation},
    ctaphid::{Action, HidReply, Pipe, PipeConfig, REPORT_LEN, err},
    firmware::{Firmware, Job, MAX_APDU_LEN, MAX_MSG_SIZE, Work},
    pin,
    presence::{CancelFlag, JobId, Shared, next_job_id},
};

/// How long [`VirtKey::start`] waits for the firmware to come up (mounting the RAM filesystem,
/// provisioning, and the optional PIN setup take well under a second).
const STARTUP_TIMEOUT: Duration = Duration::from_secs(30);
/// Stack of the firmware thread: the firmware keeps several message-sized buffers on the stack.
const FIRMWARE_STACK: usize = 8 * 1024 * 1024;
/// Events waiting for the pipe thread, at most. Most are few by construction (one reply per
/// job, two presence changes per wait, one stop); host reports are not, and a full queue makes
/// [`VirtKey::write_report`] wait, as a USB OUT endpoint NAKs until the device takes the
/// report. Nobody sends while holding a lock the pipe thread needs, and the pipe thread itself
/// never blocks on anything but this queue, so every sender gets through.
const EVENT_QUEUE_LEN: usize = 256;
/// Reports the host has not read yet, at most. A real key cannot queue more than its endpoint
/// buffer; here the bound only keeps a host that never reads from growing memory without end.
/// A message that does not fit whole is dropped whole (counted and logged): cutting one short
/// would leave the host a frame whose continuation packets never come. The largest message
/// (129 reports) is far below the bound.
const MAX_QUEUED_REPORTS: usize = 4096;
/// A NFCCTAP_MSG (CLA 0x80 or chained 0x90, INS 0x10), refused on a U2F-only key.
const INS_NFCCTAP_MSG: u8 = 0x10;
/// ISO 7816-4 "instruction code not supported".
const SW_INS_NOT_SUPPORTED: [u8; 2] = [0x6d, 0x00];
/// ISO 7816-4 "normal processing".
const SW_SUCCESS: [u8; 2] = [0x90, 0x00];
/// ISO 7816-4 command chaining bit of CLA.
const CLA_CHAINING: u8 = 0x10;

/// What the pipe thread reacts to.
#[derive(Debug)]
pub(crate) enum Event {
    /// A report written by the host.
    Report([u8; REPORT_LEN]),
    /// The firmware finished a HID job.
    Reply { job: JobId, reply: HidReply },
    /// A job started or stopped waiting for a touch.
    PresenceChanged(JobId),
    /// The firmware thread ended (normally at drop, or by a panic in the firmware).
    FirmwareStopped,
    /// The host's connection went away (see [`crate::ctaphid::Pipe::on_host_reset`]).
    HostReset,
    /// The key is being dropped.
    Stop,
}

/// A virtual FIDO security key: the Trussed fido-authenticator firmware (Nitrokey 3 / Solo 2)
/// running in this process, reachable as a USB HID device (64-byte reports,
/// [`VirtKey::write_report`] / [`VirtKey::read_report`]) and as an NFC card
/// ([`VirtKey::transmit_apdu`]).
///
/// Each key has its own RAM filesystem, so credentials and PIN live as long as the `VirtKey`.
/// Dropping it stops and joins its threads. `VirtKey` is `Send + Sync`; calls from several
/// threads are fine (as with a real device, interleaved CTAPHID traffic gets CHANNEL_BUSY).
pub struct VirtKey {
    events: SyncSender<Event>,
    jobs: Option<SyncSender<Job>>,
    outbox: Arc<Outbox>,
    shared: Arc<Shared>,
    attestation: Arc<Attestation>,
    u2f_only: bool,
    force_status: Option<u8>,
    pipe_thread: Option<JoinHandle<()>>,
    firmware_thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for VirtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VirtKey")
            .field("u2f_only", &self.u2f_only)
            .finish_non_exhaustive()
    }
}

impl VirtKey {
    /// Boots a virtual key: generates (once per process, then shared by all keys of the
    /// process like a batch certificate) the attestation material, writes it
    /// into a fresh RAM filesystem, starts the firmware, sets the preset PIN if any, and starts
    /// the CTAPHID pipe. Returns once the key is ready for reports and APDUs.
    pub fn start(mut config: Config) -> Result<Self, Error> {
        // Moved, not copied, into memory that is wiped after use.
        let pin = config.pin.take().map(Zeroizing::new);
        if let Some(pin) = &pin {
            pin::validate(pin).map_err(Error::InvalidPin)?;
        }
        let attestation = attestation::attestation()?;
        let (events_tx, events_rx) = mpsc::sync_channel(EVENT_QUEUE_LEN);
        let (jobs_tx, jobs_rx) = mpsc::sync_channel(JOB_QUEUE_LEN);
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let shared = Arc::new(Shared::new(config.touch, events_tx.clone()));

        let firmware = Firmware {
            shared: Arc::clone(&shared),
            attestation: Arc::clone(&attestation),
            pin,
            jobs: jobs_rx,
            events: events_tx.clone(),
            ready: ready_tx,
        };
        let firmware_thread = thread::Builder::new()
            .name("virtkey-firmware".into())
            .stack_size(FIRMWARE_STACK)
            .spawn(move || firmware.run())
            .map_err(Error::Spawn)?;
        let stop_firmware = |thread: JoinHandle<()>, jobs: SyncSender<Job>| {
            shared.stop();
            drop(jobs);
            let _ = thread.join();
        };
        match ready_rx.recv_timeout(STARTUP_TIMEOUT) {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                stop_firmware(firmware_thread, jobs_tx);
                return Err(error);
            }
            Err(RecvTimeoutError::Disconnected) => {
                stop_firmware(firmware_thread, jobs_tx);
                return Err(Error::Stopped);
            }
            Err(RecvTimeoutError::Timeout) => {
                // A firmware stuck in start-up cannot be joined; tell it to stop and leave it.
                shared.stop();
                return Err(Error::StartupTimeout);
            }
        }

        let outbox = Arc::new(Outbox::new(config.report_pacing));
        let pipe = Pipe::new(PipeConfig {
            u2f_only: config.u2f_only,
            keepalive_interval: config.keepalive_interval,
            continuation_timeout: config.continuation_timeout,
            max_msg_size: MAX_MSG_SIZE,
            force_status: config.force_status,
            hostile: config.hostile,
        });
        let pipe_thread = {
            let jobs = jobs_tx.clone();
            let outbox = Arc::clone(&outbox);
            let shared = Arc::clone(&shared);
            thread::Builder::new()
                .name("virtkey-ctaphid".into())
                .spawn(move || run_pipe(pipe, &events_rx, &jobs, &outbox, &shared))
        };
        let pipe_thread = match pipe_thread {
            Ok(thread) => thread,
            Err(error) => {
                stop_firmware(firmware_thread, jobs_tx);
                return Err(Error::Spawn(error));
            }
        };

        Ok(Self {
            events: events_tx,
            jobs: Some(jobs_tx),
            outbox,
            shared,
            attestation,
            u2f_only: config.u2f_only,
            force_status: config.force_status,
            pipe_thread: Some(pipe_thread),
            firmware_thread: Some(firmware_thread),
        })
    }

    /// Host → key: one 64-byte HID output report (without the Linux hidraw report-id byte).
    /// Processing is asynchronous; answers come from [`VirtKey::read_report`]. While the key has
    /// a few hundred reports not yet processed, this waits for it to catch up (a USB OUT
    /// endpoint NAKs likewise), so a host writing without end does not grow memory.
    pub fn write_report(&self, report: &[u8; REPORT_LEN]) -> Result<(), Error> {
        self.events
            .send(Event::Report(*report))
            .map_err(|_| Error::Stopped)
    }

    /// Key → host: the next 64-byte HID input report, waiting at most `timeout`; `Ok(None)` if
    /// none came in time. With [`Config::report_pacing`] each report becomes readable only one
    /// pacing interval after the previous one.
    pub fn read_report(&self, timeout: Duration) -> Result<Option<[u8; REPORT_LEN]>, Error> {
        self.outbox.pop(timeout)
    }

    /// NFC: sends one raw command APDU (short or extended; chained blocks with CLA bit 0x10 one
    /// call each) to the firmware's ISO 7816 front end and returns the response data followed
    /// by SW1 SW2, waiting at most `timeout` for the firmware.
    ///
    /// As on a real card, the applet must be selected first (else SW `6A82`): SELECT of the
    /// FIDO AID `A0 00 00 06 47 2F 00 01` ([`crate::FIDO_AID`]) answers `U2F_V2`; NFCCTAP_MSG
    /// (`80 10 ..`) carries a CTAP2 command; U2F APDUs (INS 0x01–0x03) work as well. A response
    /// longer than the command's Le (absent Le means 0) comes in pieces with SW `61xx`, fetched
    /// with GET RESPONSE (`00 C0 00 00 Le`). The firmware answers NFCCTAP_GETRESPONSE
    /// (`80 11`) with `6D00` (not supported): it never sends `9100` status updates, the whole
    /// command runs within this call, as the ISO 14443 layer's waiting-time extensions would
    /// make it on a real card.
    ///
    /// On a timeout the request is abandoned (its presence wait ends, its late answer is
    /// dropped; still queued, it never runs) and [`Error::Timeout`] is returned. While the
    /// firmware's queue is full (the firmware is blocked, e.g. in a presence wait, and
    /// [`crate::JOB_QUEUE_LEN`] requests wait for it), the APDU is refused with [`Error::Busy`].
    pub fn transmit_apdu(&self, apdu: &[u8], timeout: Duration) -> Result<Vec<u8>, Error> {
        if apdu.len() > MAX_APDU_LEN {
            return Err(Error::ApduTooLong {
                len: apdu.len(),
                max: MAX_APDU_LEN,
            });
        }
        if self.u2f_only
            && let [class, INS_NFCCTAP_MSG, ..] = apdu
            && class & 0x80 != 0
        {
            return Ok(SW_INS_NOT_SUPPORTED.to_vec());
        }
        if let Some(status) = self.force_status
            && let [class, INS_NFCCTAP_MSG, ..] = apdu
            && class & 0x80 != 0
        {
            // A chained block (CLA bit 0x10) is only acknowledged; the last one carries the
            // forced status (CTAP 2.2 §11.3.5).
            return Ok(if class & CLA_CHAINING != 0 {
                SW_SUCCESS.to_vec()
            } else {
                vec![status, SW_SUCCESS[0], SW_SUCCESS[1]]
            });
        }
        let jobs = self.jobs.as_ref().ok_or(Error::Stopped)?;
        let cancel = CancelFlag::default();
        let (reply_tx, reply_rx) = mpsc::sync_channel(1);
        jobs.try_send(Job {
            id: next_job_id(),
            cancel: cancel.clone(),
            work: Work::Apdu {
                apdu: apdu.to_vec(),
                reply: reply_tx,
            },
        })
        .map_err(|error| match error {
            TrySendError::Full(_) => Error::Busy,
            TrySendError::Disconnected(_) => Error::Stopped,
        })?;
        match reply_rx.recv_timeout(timeout) {
            Ok(response) => Ok(response),
            Err(RecvTimeoutError::Timeout) => {
                self.shared.cancel(&cancel);
                Err(Error::Timeout)
            }
            Err(RecvTimeoutError::Disconnected) => Err(Error::Stopped),
        }
    }

    /// Changes the touch policy; a presence wait in progress re-evaluates at once (so
    /// `set_touch(TouchPolicy::Auto)` "touches" a key that waits under `Never`).
    pub fn set_touch(&self, policy: TouchPolicy) {
        self.shared.set_policy(policy);
    }

    /// The AAGUID the firmware reports in getInfo and authenticatorData, and which the
    /// attestation certificate carries ([`crate::AAGUID`]).
    pub fn aaguid(&self) -> [u8; 16] {
        AAGUID
    }

    /// DER of the "passkeyd virtkey test CA" root that issued the attestation certificate:
    /// the trust anchor a relying party under test should accept.
    pub fn attestation_ca_der(&self) -> Vec<u8> {
        self.attestation.ca_der.clone()
    }

    /// DER of the attestation certificate (x5c\[0\] of packed attestation, the fido-u2f
    /// registration certificate).
    pub fn attestation_cert_der(&self) -> Vec<u8> {
        self.attestation.cert_der.clone()
    }

    /// How many times the key was asked to wink (CTAPHID_WINK or trussed's wink).
    pub fn wink_count(&self) -> u64 {
        self.shared.winks()
    }

    /// The current read epoch: [`VirtKey::interrupt_reads`] moves it on.
    pub(crate) fn read_epoch(&self) -> u64 {
        self.outbox.epoch()
    }

    /// Wakes every [`VirtKey::read_report_in_epoch`] waiting for `epoch` or an earlier one.
    pub(crate) fn interrupt_reads(&self) {
        self.outbox.interrupt();
    }

    /// Waits, without timeout and without periodic wake-ups, for the next report to the host;
    /// `Ok(None)` once the read epoch is past `epoch` (see [`VirtKey::interrupt_reads`]).
    pub(crate) fn read_report_in_epoch(
        &self,
        epoch: u64,
    ) -> Result<Option<[u8; REPORT_LEN]>, Error> {
        self.outbox.pop_in_epoch(epoch)
    }

    /// The host's connection is gone: drops the reports it did not read and resets the
    /// CTAPHID layer as a USB re-plug would (pending request abandoned, channels forgotten).
    /// Credentials and PIN stay.
    pub(crate) fn reset_host(&self) {
        self.outbox.clear();
        let _ = self.events.send(Event::HostReset);
    }
}

impl Drop for VirtKey {
    fn drop(&mut self) {
        // Ends presence waits and the firmware loop, stops the pipe, then joins both threads
        // (the firmware's trussed service thread is joined by trussed when it returns).
        self.shared.stop();
        let _ = self.events.send(Event::Stop);
        self.jobs.take();
        if let Some(thread) = self.pipe_thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.firmware_thread.take() {
            let _ = thread.join();
        }
    }
}

/// The pipe thread: CTAPHID state machine, keepalive timer, hand-off to the firmware.
fn run_pipe(
    mut pipe: Pipe,
    events: &Receiver<Event>,
    jobs: &SyncSender<Job>,
    outbox: &Outbox,
    shared: &Shared,
) {
    let mut actions = Vec::new();
    // The pipe has at most one HID job in the firmware's hands that it may still abandon:
    // the one it is busy with.
    let mut live: Option<(JobId, CancelFlag)> = None;
    loop {
        // Only a keepalive or continuation deadline wakes the thread without an event.
        let event = match pipe.next_deadline() {
            Some(deadline) => {
                events.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            }
            None => events.recv().map_err(|_| RecvTimeoutError::Disconnected),
        };
        match event {
            Ok(Event::Report(report)) => pipe.on_report(&report, Instant::now(), &mut actions),
            Ok(Event::Reply { job, reply }) => {
                if live.as_ref().is_some_and(|(id, _)| *id == job) {
                    live = None;
                }
                pipe.on_reply(job, reply, &mut actions);
            }
            Ok(Event::PresenceChanged(job)) => {
                pipe.on_presence_changed(job, shared.is_waiting(job), Instant::now(), &mut actions);
            }
            Ok(Event::FirmwareStopped) => pipe.on_firmware_stopped(&mut actions),
            Ok(Event::HostReset) => pipe.on_host_reset(&mut actions),
            Ok(Event::Stop) | Err(RecvTimeoutError::Disconnected) => break,
            Err(RecvTimeoutError::Timeout) => {}
        }
        let upneeded = pipe.busy_job().is_some_and(|job| shared.is_waiting(job));
        pipe.on_timer(Instant::now(), upneeded, &mut actions);
        while !actions.is_empty() {
            let mut failed = Vec::new();
            for action in actions.drain(..) {
                match action {
                    Action::Message(reports) => outbox.push_message(&reports),
                    Action::Submit {
                        job,
                        command,
                        payload,
                    } => {
                        let cancel = CancelFlag::default();
                        let job_for_firmware = Job {
                            id: job,
                            cancel: cancel.clone(),
                            work: Work::Hid { command, payload },
                        };
                        match jobs.try_send(job_for_firmware) {
                            Ok(()) => live = Some((job, cancel)),
                            // The firmware is blocked with NFC work queued: busy, as a real
                            // key answers while another interface has it.
                            Err(TrySendError::Full(_)) => failed.push((job, err::CHANNEL_BUSY)),
                            // The firmware thread is gone; answer like a key with an internal
                            // fault.
                            Err(TrySendError::Disconnected(_)) => failed.push((job, err::OTHER)),
                        }
                    }
                    Action::Abandon(job) => {
                        if let Some((_, cancel)) = live.take_if(|(id, _)| *id == job) {
                            shared.cancel(&cancel);
                        }
                    }
                    Action::Wink => shared.record_wink(),
                }
            }
            for (job, code) in failed {
                pipe.on_reply(job, HidReply::Error(code), &mut actions);
            }
        }
    }
    outbox.close();
}

/// Reports waiting for the host (the IN endpoint).
#[derive(Debug)]
struct Outbox {
    inner: Mutex<OutboxInner>,
    available: Condvar,
    pacing: Option<Duration>,
}

#[derive(Debug)]
struct OutboxInner {
    /// Each report with the instant it becomes readable.
    queue: VecDeque<(Instant, [u8; REPORT_LEN])>,
    last_ready: Option<Instant>,
    /// Messages dropped whole because they did not fit, over the outbox's life.
    dropped_messages: u64,
    /// The last message offered was dropped (so only the first drop of a run is logged).
    dropping: bool,
    closed: bool,
    /// Moved on by [`Outbox::interrupt`]; ends [`Outbox::pop_in_epoch`] waits of older epochs.
    epoch: u64,
}

impl Outbox {
    fn new(pacing: Option<Duration>) -> Self {
        Self {
            inner: Mutex::new(OutboxInner {
                queue: VecDeque::new(),
                last_ready: None,
                dropped_messages: 0,
                dropping: false,
                closed: false,
                epoch: 0,
            }),
            available: Condvar::new(),
            pacing,
        }
    }

    fn lock(&self) -> MutexGuard<'_, OutboxInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues the reports of one message, all of them or, when they do not fit, none.
    fn push_message(&self, reports: &[[u8; REPORT_LEN]]) {
        let mut inner = self.lock();
        if inner.queue.len().saturating_add(reports.len()) > MAX_QUEUED_REPORTS {
            inner.dropped_messages = inner.dropped_messages.saturating_add(1);
            if !std::mem::replace(&mut inner.dropping, true) {
                tracing::warn!(
                    dropped = inner.dropped_messages,
                    queued = inner.queue.len(),
                    "the host does not read; dropping whole messages to it"
                );
            }
            return;
        }
        inner.dropping = false;
        let now = Instant::now();
        for &report in reports {
            let ready = match self.pacing {
                Some(pacing) => {
                    let after = inner.last_ready.map_or(now, |last| last.max(now));
                    after.checked_add(pacing).unwrap_or(after)
                }
                None => now,
            };
            inner.last_ready = Some(ready);
            inner.queue.push_back((ready, report));
        }
        drop(inner);
        self.available.notify_all();
    }

    fn epoch(&self) -> u64 {
        self.lock().epoch
    }

    fn interrupt(&self) {
        let mut inner = self.lock();
        inner.epoch = inner.epoch.wrapping_add(1);
        drop(inner);
        self.available.notify_all();
    }

    fn clear(&self) {
        let mut inner = self.lock();
        inner.queue.clear();
        inner.last_ready = None;
    }

    /// Like [`Outbox::pop`] without a timeout, but ends with `Ok(None)` once the epoch is no
    /// longer `epoch`. Sleeps on the condition variable until a push, an interrupt, the close,
    /// or the paced ready time of the first report.
    fn pop_in_epoch(&self, epoch: u64) -> Result<Option<[u8; REPORT_LEN]>, Error> {
        let mut inner = self.lock();
        loop {
            if inner.epoch != epoch {
                return Ok(None);
            }
            let now = Instant::now();
            let ready = match inner.queue.front() {
                Some(&(ready, report)) if ready <= now => {
                    inner.queue.pop_front();
                    return Ok(Some(report));
                }
                Some(&(ready, _)) => Some(ready),
                None if inner.closed => return Err(Error::Stopped),
                None => None,
            };
            inner = match ready {
                Some(ready) => {
                    self.available
                        .wait_timeout(inner, ready.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                None => self
                    .available
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }

    fn close(&self) {
        self.lock().closed = true;
        self.available.notify_all();
    }

    fn pop(&self, timeout: Duration) -> Result<Option<[u8; REPORT_LEN]>, Error> {
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let mut inner = self.lock();
        loop {
            let now = Instant::now();
            let wake = match inner.queue.front() {
                Some(&(ready, report)) if ready <= now => {
                    inner.queue.pop_front();
                    return Ok(Some(report));
                }
                Some(&(ready, _)) => Some(deadline.map_or(ready, |deadline| deadline.min(ready))),
                None if inner.closed => return Err(Error::Stopped),
                None => deadline,
            };
            if deadline.is_some_and(|deadline| now >= deadline) {
                return Ok(None);
            }
            inner = match wake {
                Some(wake) => {
                    self.available
                        .wait_timeout(inner, wake.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                // A timeout beyond Instant's range: wait for a push or the close.
                None => self
                    .available
                    .wait(inner)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pipe thread wired to a job queue of `capacity` that the test plays firmware for.
    struct PipeRig {
        events: SyncSender<Event>,
        jobs: Receiver<Job>,
        outbox: Arc<Outbox>,
        thread: Option<JoinHandle<()>>,
    }

    impl PipeRig {
        fn start(capacity: usize, prefill: usize) -> Self {
            let (events_tx, events_rx) = mpsc::sync_channel(EVENT_QUEUE_LEN);
            let (jobs_tx, jobs_rx) = mpsc::sync_channel(capacity);
            for _ in 0..prefill {
                jobs_tx
                    .try_send(Job {
                        id: next_job_id(),
                        cancel: CancelFlag::default(),
                        work: Work::Hid {
                            command: crate::ctaphid::HidCommand::Cbor,
                            payload: vec![0x04],
                        },
                    })
                    .unwrap();
            }
            let outbox = Arc::new(Outbox::new(None));
            let shared = Arc::new(Shared::new(TouchPolicy::Auto, events_tx.clone()));
            let pipe = Pipe::new(PipeConfig {
                u2f_only: false,
                keepalive_interval: Duration::from_secs(60),
                continuation_timeout: Duration::from_secs(60),
                max_msg_size: MAX_MSG_SIZE,
                force_status: None,
                hostile: None,
            });
            let thread = {
                let outbox = Arc::clone(&outbox);
                thread::spawn(move || run_pipe(pipe, &events_rx, &jobs_tx, &outbox, &shared))
            };
            Self {
                events: events_tx,
                jobs: jobs_rx,
                outbox,
                thread: Some(thread),
            }
        }

        fn write(&self, report: [u8; REPORT_LEN]) {
            self.events.send(Event::Report(report)).unwrap();
        }

        fn read(&self) -> [u8; REPORT_LEN] {
            self.outbox.pop(Duration::from_secs(5)).unwrap().unwrap()
        }

        /// INIT on the broadcast channel; returns the new channel.
        fn open(&self) -> [u8; 4] {
            let mut init = [0u8; REPORT_LEN];
            init[..8].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x08, 0x01]);
            self.write(init);
            let reply = self.read();
            assert_eq!(reply[4], 0x86);
            [reply[15], reply[16], reply[17], reply[18]]
        }

        /// A one-byte CTAPHID request with this command on `cid`.
        fn request(&self, cid: [u8; 4], command: u8, byte: Option<u8>) {
            let mut report = [0u8; REPORT_LEN];
            report[..4].copy_from_slice(&cid);
            report[4] = 0x80 | command;
            if let Some(byte) = byte {
                report[5..8].copy_from_slice(&[0x00, 0x01, byte]);
            }
            self.write(report);
        }
    }

    impl Drop for PipeRig {
        fn drop(&mut self) {
            let _ = self.events.send(Event::Stop);
            if let Some(thread) = self.thread.take() {
                thread.join().unwrap();
            }
        }
    }

    #[test]
    fn a_full_job_queue_answers_channel_busy() {
        let rig = PipeRig::start(1, 1);
        let cid = rig.open();
        // getInfo while the firmware's queue is full: nothing is queued, the host hears busy.
        rig.request(cid, 0x10, Some(0x04));
        let reply = rig.read();
        assert_eq!(&reply[..4], &cid);
        assert_eq!(&reply[4..8], &[0xbf, 0x00, 0x01, 0x06]);
        assert_eq!(rig.jobs.try_iter().count(), 1);
        // Room again: the next request reaches the firmware.
        rig.request(cid, 0x10, Some(0x04));
        let job = rig.jobs.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(matches!(job.work, Work::Hid { ref payload, .. } if payload == &[0x04]));
    }

    #[test]
    fn cancel_marks_the_job_it_abandons() {
        let rig = PipeRig::start(4, 0);
        let cid = rig.open();
        rig.request(cid, 0x10, Some(0x01));
        let job = rig.jobs.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!job.cancel.is_set());
        rig.request(cid, 0x11, None);
        let reply = rig.read();
        assert_eq!(
            &reply[..8],
            &[cid[0], cid[1], cid[2], cid[3], 0x90, 0x00, 0x01, 0x2d]
        );
        assert!(job.cancel.is_set());
        // A later job has its own, unset mark.
        rig.request(cid, 0x10, Some(0x04));
        let next = rig.jobs.recv_timeout(Duration::from_secs(5)).unwrap();
        assert!(!next.cancel.is_set());
    }

    #[test]
    fn outbox_paces_reports() {
        let outbox = Outbox::new(Some(Duration::from_millis(20)));
        let start = Instant::now();
        outbox.push_message(&[[1; REPORT_LEN], [2; REPORT_LEN]]);
        outbox.push_message(&[[3; REPORT_LEN]]);
        assert_eq!(
            outbox.pop(Duration::from_secs(1)).unwrap(),
            Some([1; REPORT_LEN])
        );
        assert_eq!(
            outbox.pop(Duration::from_secs(1)).unwrap(),
            Some([2; REPORT_LEN])
        );
        assert_eq!(
            outbox.pop(Duration::from_secs(1)).unwrap(),
            Some([3; REPORT_LEN])
        );
        assert!(start.elapsed() >= Duration::from_millis(60));
    }

    #[test]
    fn outbox_times_out_then_reports_close_after_draining() {
        let outbox = Outbox::new(None);
        let start = Instant::now();
        assert_eq!(outbox.pop(Duration::from_millis(30)).unwrap(), None);
        assert!(start.elapsed() >= Duration::from_millis(30));
        outbox.push_message(&[[7; REPORT_LEN]]);
        outbox.close();
        assert_eq!(outbox.pop(Duration::ZERO).unwrap(), Some([7; REPORT_LEN]));
        assert!(matches!(outbox.pop(Duration::ZERO), Err(Error::Stopped)));
    }

    #[test]
    fn outbox_is_bounded() {
        let outbox = Outbox::new(None);
        for _ in 0..MAX_QUEUED_REPORTS + 10 {
            outbox.push_message(&[[0; REPORT_LEN]]);
        }
        assert_eq!(outbox.lock().queue.len(), MAX_QUEUED_REPORTS);
        assert_eq!(outbox.lock().dropped_messages, 10);
    }

    #[test]
    fn a_full_outbox_drops_whole_messages_never_part_of_one() {
        let outbox = Outbox::new(None);
        for _ in 0..MAX_QUEUED_REPORTS - 2 {
            outbox.push_message(&[[0; REPORT_LEN]]);
        }
        // Three reports (an initialization packet and two continuations) with room for two:
        // none of them is queued.
        let message = [[0x81; REPORT_LEN], [0x00; REPORT_LEN], [0x01; REPORT_LEN]];
        outbox.push_message(&message);
        assert_eq!(outbox.lock().queue.len(), MAX_QUEUED_REPORTS - 2);
        assert_eq!(outbox.lock().dropped_messages, 1);
        // A message that fits still goes in, whole.
        outbox.push_message(&message[..2]);
        assert_eq!(outbox.lock().queue.len(), MAX_QUEUED_REPORTS);
        let queued: Vec<_> = outbox.lock().queue.iter().map(|&(_, r)| r).collect();
        assert_eq!(&queued[MAX_QUEUED_REPORTS - 2..], &message[..2]);
        // Once the host reads, whole messages fit again.
        for _ in 0..3 {
            outbox.pop(Duration::ZERO).unwrap().unwrap();
        }
        outbox.push_message(&message);
        assert_eq!(outbox.lock().queue.len(), MAX_QUEUED_REPORTS);
        assert_eq!(outbox.lock().dropped_messages, 1);
    }

    #[test]
    fn epoch_reads_end_on_interrupt_and_clear_drops_reports() {
        let outbox = Arc::new(Outbox::new(None));
        let epoch = outbox.epoch();
        outbox.push_message(&[[4; REPORT_LEN]]);
        assert_eq!(outbox.pop_in_epoch(epoch).unwrap(), Some([4; REPORT_LEN]));
        let waiter = {
            let outbox = Arc::clone(&outbox);
            thread::spawn(move || outbox.pop_in_epoch(epoch))
        };
        // The waiter sleeps until the interrupt; then it ends with None, and so does any later
        // read of the old epoch, even with reports waiting.
        thread::sleep(Duration::from_millis(50));
        outbox.interrupt();
        assert_eq!(waiter.join().unwrap().unwrap(), None);
        outbox.push_message(&[[5; REPORT_LEN]]);
        assert_eq!(outbox.pop_in_epoch(epoch).unwrap(), None);
        outbox.clear();
        outbox.push_message(&[[6; REPORT_LEN]]);
        assert_eq!(
            outbox.pop_in_epoch(outbox.epoch()).unwrap(),
            Some([6; REPORT_LEN])
        );
        outbox.close();
        assert!(matches!(
            outbox.pop_in_epoch(outbox.epoch()),
            Err(Error::Stopped)
        ));
    }
}
