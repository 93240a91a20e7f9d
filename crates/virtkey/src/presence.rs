//! User presence: the touch policy, cancellation, and the two hooks through which the firmware
//! asks for a touch.
//!
//! fido-authenticator asks for presence through its `UserPresence` strategy
//! (`user_present(trussed, timeout_ms)`, with 30 s for CTAP2 and 250 ms for U2F). The
//! `Conforming` strategy of real boards forwards that to trussed's `confirm_user_present`, whose
//! service loop (trussed 0.2.1 `service.rs`, `RequestUserConsent`) polls the platform
//! `UserInterface` without sleeping while the client's `syscall!` spins on the reply. Waiting
//! there for a touch would burn a core for up to 30 s, and the virt platform builds its client
//! without an `InterruptFlag`, so a trussed-level interrupt could not be delivered either.
//!
//! So [`PresenceGate`] (this crate's `UserPresence` strategy) does the waiting: it blocks on a
//! condition variable until the [`TouchPolicy`] says "touched", "denied", the firmware's timeout
//! passes, or the request is cancelled. Only on a touch does it forward to trussed's
//! `confirm_user_present`, and the trussed UI hook [`VirtUi`] (installed with
//! `platform.user_interface().set_inner`) reports the touch it was granted, so the firmware's
//! trussed consent flow runs as on hardware and finishes on its first iteration. Denial and
//! cancellation map to the errors `Conforming` would give (`OperationDenied`,
//! `KeepaliveCancel`), a timeout to `UserActionTimeout`.

use std::{
    sync::{
        Arc, Condvar, Mutex, MutexGuard, PoisonError,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::SyncSender,
    },
    time::{Duration, Instant},
};

use fido_authenticator::{TrussedRequirements, UserPresence};
use trussed::types::ui::Status;
use trussed_core::{
    syscall,
    types::consent::{Error as ConsentError, Level},
};

use crate::{TouchPolicy, device::Event};

/// Identifies one request handed to the firmware (HID message or APDU).
pub(crate) type JobId = u64;

/// A fresh, process-wide unique job id.
pub(crate) fn next_job_id() -> JobId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// The cancellation mark of one job, carried in the job itself and kept by whoever may abandon
/// it (the caller of [`crate::VirtKey::transmit_apdu`], the CTAPHID pipe). Once set it stays
/// set, however many other jobs are cancelled meanwhile: the firmware skips the job if it is
/// still queued, and ends its presence wait if it is running.
#[derive(Clone, Debug, Default)]
pub(crate) struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub(crate) fn is_set(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// While trussed's consent loop runs without a granted touch, each UI refresh waits this long
/// instead of letting the loop spin.
const UI_REFRESH_WAIT: Duration = Duration::from_millis(5);

/// Outcome of a presence wait.
#[derive(Clone, Copy, Debug, Eq, PartialEq)]
pub(crate) enum Verdict {
    Present,
    Denied,
    TimedOut,
    Cancelled,
}

#[derive(Debug)]
struct State {
    policy: TouchPolicy,
    /// The job the firmware is executing, and its cancellation mark.
    current: Option<(JobId, CancelFlag)>,
    /// The job whose firmware call is waiting for a touch (KEEPALIVE UPNEEDED).
    waiting: Option<JobId>,
    /// One touch granted by [`PresenceGate`], consumed by the trussed UI hook.
    touch: bool,
    /// trussed's UI status is WaitingForUserPresence.
    ui_waiting: bool,
    stopping: bool,
    winks: u64,
}

/// State shared by the caller's threads, the pipe thread, the firmware thread and the trussed
/// service thread.
#[derive(Debug)]
pub(crate) struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    /// Tells the pipe thread that a job started or stopped waiting for presence, so it can send
    /// a KEEPALIVE with the new status at once.
    events: SyncSender<Event>,
}

impl Shared {
    pub(crate) fn new(policy: TouchPolicy, events: SyncSender<Event>) -> Self {
        Self {
            state: Mutex::new(State {
                policy,
                current: None,
                waiting: None,
                touch: false,
                ui_waiting: false,
                stopping: false,
                winks: 0,
            }),
            changed: Condvar::new(),
            events,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // The state stays consistent across a panic (plain field writes), so a poisoned lock is
        // still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_policy(&self, policy: TouchPolicy) {
        self.lock().policy = policy;
        self.changed.notify_all();
    }

    /// Marks the job of `flag` cancelled: a presence wait in it ends with
    /// [`Verdict::Cancelled`] and, if the firmware has not started it yet, it is skipped.
    pub(crate) fn cancel(&self, flag: &CancelFlag) {
        flag.0.store(true, Ordering::SeqCst);
        // Taking the lock orders the mark before a presence wait's next look at it: the waiter
        // either sees it, or is already asleep on the condition variable and gets the notice.
        drop(self.lock());
        self.changed.notify_all();
    }

    /// Called by the firmware thread before it runs `job`. Returns false if the job was
    /// cancelled while queued (the firmware then skips it).
    pub(crate) fn begin_job(&self, job: JobId, flag: &CancelFlag) -> bool {
        let mut state = self.lock();
        if flag.is_set() {
            return false;
        }
        state.current = Some((job, flag.clone()));
        true
    }

    /// Called by the firmware thread after the current job, whatever its outcome.
    pub(crate) fn end_job(&self) {
        let mut state = self.lock();
        state.current = None;
        state.waiting = None;
        state.touch = false;
    }

    /// Whether `job` is waiting for a touch right now.
    pub(crate) fn is_waiting(&self, job: JobId) -> bool {
        self.lock().waiting == Some(job)
    }

    /// Ends every presence wait and makes the firmware loop stop.
    pub(crate) fn stop(&self) {
        self.lock().stopping = true;
        self.changed.notify_all();
    }

    pub(crate) fn is_stopping(&self) -> bool {
        self.lock().stopping
    }

    pub(crate) fn winks(&self) -> u64 {
        self.lock().winks
    }

    pub(crate) fn record_wink(&self) {
        self.lock().winks += 1;
    }

    fn notify_pipe(&self, job: Option<JobId>) {
        if let Some(job) = job {
            // The pipe thread may already be gone during shutdown; nothing to tell then.
            let _ = self.events.send(Event::PresenceChanged(job));
        }
    }

    /// Blocks the firmware until the policy yields a verdict for the running job, at most
    /// `timeout` (the firmware's own user-presence timeout).
    pub(crate) fn wait_for_touch(&self, timeout: Duration) -> Verdict {
        let start = Instant::now();
        let deadline = start.checked_add(timeout);
        let mut state = self.lock();
        let (job, flag) = state.current.clone().unzip();
        state.waiting = job;
        // Not under the lock: the event queue is bounded, and the pipe thread that makes room
        // in it takes this lock to ask whether the job waits.
        drop(state);
        self.notify_pipe(job);
        let mut state = self.lock();
        let verdict = loop {
            if state.stopping || flag.as_ref().is_some_and(CancelFlag::is_set) {
                break Verdict::Cancelled;
            }
            let now = Instant::now();
            let wake = match state.policy {
                TouchPolicy::Auto => break Verdict::Present,
                TouchPolicy::Deny => break Verdict::Denied,
                TouchPolicy::AutoAfter(delay) => match start.checked_add(delay) {
                    Some(at) if now >= at => break Verdict::Present,
                    Some(at) => Some(deadline.map_or(at, |deadline| deadline.min(at))),
                    None => deadline,
                },
                TouchPolicy::Never => deadline,
            };
            if deadline.is_some_and(|deadline| now >= deadline) {
                break Verdict::TimedOut;
            }
            state = match wake {
                Some(wake) => {
                    self.changed
                        .wait_timeout(state, wake.saturating_duration_since(now))
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
                // A timeout beyond Instant's range (Never): only a policy change, a cancel or
                // the stop ends the wait, and each of them notifies.
                None => self
                    .changed
                    .wait(state)
                    .unwrap_or_else(PoisonError::into_inner),
            };
        };
        state.waiting = None;
        state.touch = verdict == Verdict::Present;
        drop(state);
        self.notify_pipe(job);
        verdict
    }
}

/// The firmware's `UserPresence` strategy for virtual keys (see the module documentation).
#[derive(Clone, Copy, Debug)]
pub(crate) struct PresenceGate<'a>(pub(crate) &'a Shared);

impl UserPresence for PresenceGate<'_> {
    fn user_present<T: TrussedRequirements>(
        self,
        trussed: &mut T,
        timeout_milliseconds: u32,
    ) -> fido_authenticator::Result<()> {
        let timeout = Duration::from_millis(timeout_milliseconds.into());
        match self.0.wait_for_touch(timeout) {
            Verdict::Present => {
                // Same mapping as fido_authenticator::Conforming.
                syscall!(trussed.confirm_user_present(timeout_milliseconds))
                    .result
                    .map_err(|err| match err {
                        ConsentError::TimedOut => fido_authenticator::Error::UserActionTimeout,
                        ConsentError::Interrupted => fido_authenticator::Error::KeepaliveCancel,
                        _ => fido_authenticator::Error::OperationDenied,
                    })
            }
            Verdict::Denied => Err(fido_authenticator::Error::OperationDenied),
            Verdict::TimedOut => Err(fido_authenticator::Error::UserActionTimeout),
            Verdict::Cancelled => Err(fido_authenticator::Error::KeepaliveCancel),
        }
    }
}

/// The trussed platform UI of a virtual key: reports the touches [`PresenceGate`] grants, counts
/// winks, and keeps trussed's consent loop from spinning.
pub(crate) struct VirtUi(pub(crate) Arc<Shared>);

impl trussed::platform::UserInterface for VirtUi {
    fn check_user_presence(&mut self) -> Level {
        if std::mem::take(&mut self.0.lock().touch) {
            Level::Normal
        } else {
            Level::None
        }
    }

    fn set_status(&mut self, status: Status) {
        self.0.lock().ui_waiting = status == Status::WaitingForUserPresence;
    }

    fn refresh(&mut self) {
        // trussed calls refresh on every request it serves; only its consent loop without a
        // granted touch (which PresenceGate never causes) is slowed down here.
        let state = self.0.lock();
        if state.ui_waiting && !state.touch && !state.stopping {
            let _unused = self
                .0
                .changed
                .wait_timeout(state, UI_REFRESH_WAIT)
                .unwrap_or_else(PoisonError::into_inner);
        }
    }

    fn wink(&mut self, _duration: Duration) {
        self.0.record_wink();
    }
}

#[cfg(test)]
mod tests {
    use std::{sync::mpsc, thread};

    use super::*;

    fn shared(policy: TouchPolicy) -> (Arc<Shared>, mpsc::Receiver<Event>) {
        let (tx, rx) = mpsc::sync_channel(16);
        (Arc::new(Shared::new(policy, tx)), rx)
    }

    #[test]
    fn auto_is_present_at_once_and_grants_one_touch() {
        let (shared, events) = shared(TouchPolicy::Auto);
        assert!(shared.begin_job(7, &CancelFlag::default()));
        assert_eq!(
            shared.wait_for_touch(Duration::from_secs(30)),
            Verdict::Present
        );
        let mut ui = VirtUi(Arc::clone(&shared));
        use trussed::platform::UserInterface as _;
        assert_eq!(ui.check_user_presence(), Level::Normal);
        assert_eq!(ui.check_user_presence(), Level::None);
        assert!(matches!(events.try_recv(), Ok(Event::PresenceChanged(7))));
        assert!(matches!(events.try_recv(), Ok(Event::PresenceChanged(7))));
    }

    #[test]
    fn deny_and_never_give_their_verdicts() {
        let (shared, _events) = shared(TouchPolicy::Deny);
        assert!(shared.begin_job(1, &CancelFlag::default()));
        assert_eq!(
            shared.wait_for_touch(Duration::from_secs(30)),
            Verdict::Denied
        );
        shared.set_policy(TouchPolicy::Never);
        let start = Instant::now();
        assert_eq!(
            shared.wait_for_touch(Duration::from_millis(50)),
            Verdict::TimedOut
        );
        assert!(start.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn auto_after_waits_and_reports_waiting() {
        let (shared, _events) = shared(TouchPolicy::AutoAfter(Duration::from_millis(80)));
        assert!(shared.begin_job(3, &CancelFlag::default()));
        let waiter = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.wait_for_touch(Duration::from_secs(30)))
        };
        let deadline = Instant::now() + Duration::from_secs(5);
        while !shared.is_waiting(3) && Instant::now() < deadline {
            thread::sleep(Duration::from_millis(1));
        }
        assert!(shared.is_waiting(3));
        let start = Instant::now();
        assert_eq!(waiter.join().unwrap(), Verdict::Present);
        assert!(start.elapsed() < Duration::from_secs(5));
        assert!(!shared.is_waiting(3));
    }

    #[test]
    fn cancel_ends_a_never_wait() {
        let (shared, _events) = shared(TouchPolicy::Never);
        let flag = CancelFlag::default();
        assert!(shared.begin_job(9, &flag));
        let waiter = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.wait_for_touch(Duration::from_secs(30)))
        };
        thread::sleep(Duration::from_millis(20));
        let start = Instant::now();
        shared.cancel(&flag);
        assert_eq!(waiter.join().unwrap(), Verdict::Cancelled);
        // Far below the 30 s timeout, loose enough for a loaded machine.
        assert!(start.elapsed() < Duration::from_secs(5));
        shared.end_job();
    }

    #[test]
    fn a_job_cancelled_while_queued_is_skipped() {
        let (shared, _events) = shared(TouchPolicy::Auto);
        let (cancelled, kept) = (CancelFlag::default(), CancelFlag::default());
        shared.cancel(&cancelled);
        assert!(!shared.begin_job(11, &cancelled));
        assert!(shared.begin_job(12, &kept));
    }

    #[test]
    fn a_cancel_mark_survives_any_number_of_other_cancels() {
        let (shared, _events) = shared(TouchPolicy::Auto);
        let first = CancelFlag::default();
        shared.cancel(&first);
        for _ in 0..1000 {
            shared.cancel(&CancelFlag::default());
        }
        assert!(!shared.begin_job(1, &first));
        // A clone (the job's copy) sees the mark set through another clone (the caller's).
        let flag = CancelFlag::default();
        let in_job = flag.clone();
        shared.cancel(&flag);
        assert!(in_job.is_set());
        assert!(!shared.begin_job(2, &in_job));
    }

    #[test]
    fn a_full_event_queue_does_not_block_the_state_while_announcing_a_wait() {
        let (tx, events) = mpsc::sync_channel(1);
        let shared = Arc::new(Shared::new(TouchPolicy::Never, tx.clone()));
        tx.send(Event::HostReset).unwrap();
        let flag = CancelFlag::default();
        assert!(shared.begin_job(5, &flag));
        let waiter = {
            let shared = Arc::clone(&shared);
            thread::spawn(move || shared.wait_for_touch(Duration::from_secs(30)))
        };
        // The waiter is stuck announcing its wait until the queue has room; meanwhile the
        // state stays usable, as the pipe thread needs it to drain the queue.
        let (answer_tx, answer_rx) = mpsc::channel();
        {
            let shared = Arc::clone(&shared);
            thread::spawn(move || {
                let deadline = Instant::now() + Duration::from_secs(5);
                while !shared.is_waiting(5) && Instant::now() < deadline {
                    thread::sleep(Duration::from_millis(1));
                }
                answer_tx.send(shared.is_waiting(5)).unwrap();
            });
        }
        assert_eq!(answer_rx.recv_timeout(Duration::from_secs(10)), Ok(true));
        assert!(matches!(events.recv(), Ok(Event::HostReset)));
        assert!(matches!(events.recv(), Ok(Event::PresenceChanged(5))));
        shared.cancel(&flag);
        assert_eq!(waiter.join().unwrap(), Verdict::Cancelled);
        assert!(matches!(events.recv(), Ok(Event::PresenceChanged(5))));
    }
}
