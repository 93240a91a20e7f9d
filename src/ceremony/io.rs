//! What every step of a ceremony waits on besides its own work: the overall deadline, the
//! caller's cancellation, and the progress stream (with its PIN prompts).

use std::future::Future;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::{Instant, sleep_until};
use zeroize::Zeroizing;

use super::error::{CancelReason, CeremonyError};
use super::progress::{NewPinPrompt, NewPinPromptReason, PinPrompt, PinPromptReason, Progress};
use crate::device::{OpEvent, Operation};
use crate::transport::DeviceId;

/// The ceremony's side of its deadline, cancellation and progress.
pub(super) struct Io {
    /// `None` once the caller dropped its receiver: steps that need an answer then fail.
    progress: Option<mpsc::Sender<Progress>>,
    cancel: watch::Receiver<Option<CancelReason>>,
    /// The one overall deadline.
    pub(super) deadline: Instant,
}

/// What ended a guarded wait early.
enum Interrupt {
    Cancelled(CancelReason),
    Deadline,
}

impl From<Interrupt> for CeremonyError {
    fn from(interrupt: Interrupt) -> Self {
        match interrupt {
            Interrupt::Cancelled(reason) => Self::Cancelled(reason),
            Interrupt::Deadline => Self::Timeout,
        }
    }
}

impl Io {
    pub(super) fn new(
        progress: mpsc::Sender<Progress>,
        cancel: watch::Receiver<Option<CancelReason>>,
        deadline: Instant,
    ) -> Self {
        Self {
            progress: Some(progress),
            cancel,
            deadline,
        }
    }

    /// Resolves once the ceremony is cancelled. A dropped handle counts as the caller's
    /// cancellation.
    pub(super) async fn cancelled(&mut self) -> CancelReason {
        loop {
            if let Some(reason) = *self.cancel.borrow_and_update() {
                return reason;
            }
            if self.cancel.changed().await.is_err() {
                return (*self.cancel.borrow()).unwrap_or(CancelReason::Caller);
            }
        }
    }

    /// Runs `work` until it ends, the deadline passes or the ceremony is cancelled.
    pub(super) async fn guard<F: Future>(&mut self, work: F) -> Result<F::Output, CeremonyError> {
        let deadline = self.deadline;
        tokio::select! {
            output = work => Ok(output),
            reason = self.cancelled() => Err(Interrupt::Cancelled(reason).into()),
            () = sleep_until(deadline) => Err(Interrupt::Deadline.into()),
        }
    }

    /// Runs `work` until it ends or the ceremony is cancelled; `work` keeps its own
    /// deadline (the LoginID client's calls, which report their own timeouts).
    pub(super) async fn guard_cancel<F: Future>(
        &mut self,
        work: F,
    ) -> Result<F::Output, CeremonyError> {
        tokio::select! {
            output = work => Ok(output),
            reason = self.cancelled() => Err(CeremonyError::Cancelled(reason)),
        }
    }

    /// Publishes a step. Waits while the caller's queue is full (the ceremony cannot run
    /// ahead of a caller that has not seen the last step), but no longer than the deadline
    /// and never through a cancellation. A caller that dropped its receiver is not waited
    /// for.
    pub(super) async fn emit(&mut self, step: Progress) -> Result<(), CeremonyError> {
        let Some(progress) = self.progress.clone() else {
            return Ok(());
        };
        if self.guard(progress.send(step)).await?.is_err() {
            self.progress = None;
        }
        Ok(())
    }

    /// Publishes a step once the credential exists: only cancellation stops the wait, so a
    /// deadline passing now cannot keep `reg/complete` from running.
    pub(super) async fn emit_past_deadline(&mut self, step: Progress) -> Result<(), CeremonyError> {
        let Some(progress) = self.progress.clone() else {
            return Ok(());
        };
        if self.guard_cancel(progress.send(step)).await?.is_err() {
            self.progress = None;
        }
        Ok(())
    }

    /// Whether anybody reads the progress stream (and so could answer a prompt).
    pub(super) fn has_listener(&self) -> bool {
        self.progress.as_ref().is_some_and(|p| !p.is_closed())
    }

    /// Asks the caller for the key's PIN.
    pub(super) async fn ask_pin(
        &mut self,
        key: &DeviceId,
        retries: Option<u32>,
        reason: PinPromptReason,
    ) -> Result<Zeroizing<String>, CeremonyError> {
        let (reply, answer) = oneshot::channel();
        let prompt = PinPrompt::new(key.clone(), retries, reason, reply);
        self.ask(Progress::NeedsPin(prompt), answer).await
    }

    /// Asks the caller for a new PIN.
    pub(super) async fn ask_new_pin(
        &mut self,
        key: &DeviceId,
        min_length: u32,
        reason: NewPinPromptReason,
    ) -> Result<Zeroizing<String>, CeremonyError> {
        let (reply, answer) = oneshot::channel();
        let prompt = NewPinPrompt::new(key.clone(), min_length, reason, reply);
        self.ask(Progress::NeedsNewPin(prompt), answer).await
    }

    async fn ask(
        &mut self,
        prompt: Progress,
        answer: oneshot::Receiver<Zeroizing<String>>,
    ) -> Result<Zeroizing<String>, CeremonyError> {
        if !self.has_listener() {
            return Err(CeremonyError::PinRequired);
        }
        self.emit(prompt).await?;
        // A prompt dropped unanswered (or never received) means nobody will give a PIN.
        self.guard(answer)
            .await?
            .map_err(|_| CeremonyError::PinRequired)
    }

    /// Waits for an operation on a key, announcing `needs-touch` when the key asks for one.
    /// On cancellation or at the deadline the key gets CANCEL and the wait goes on until the
    /// key has ended the request (bounded by the device layer's cancel grace), so the key is
    /// idle when this returns.
    pub(super) async fn drive<T>(
        &mut self,
        mut op: Operation<T>,
        key: &DeviceId,
    ) -> Result<T, CeremonyError> {
        let mut touch_announced = false;
        let deadline = self.deadline;
        let interrupt = loop {
            let step = tokio::select! {
                event = op.next_event() => Ok(event),
                reason = self.cancelled() => Err(Interrupt::Cancelled(reason)),
                () = sleep_until(deadline) => Err(Interrupt::Deadline),
            };
            match step {
                Ok(Some(OpEvent::TouchNeeded)) if !touch_announced => {
                    touch_announced = true;
                    let announce = Progress::NeedsTouch { key: key.clone() };
                    if let Err(error) = self.emit(announce).await {
                        break match error {
                            CeremonyError::Cancelled(reason) => Interrupt::Cancelled(reason),
                            _ => Interrupt::Deadline,
                        };
                    }
                }
                Ok(Some(_)) => {}
                // The operation has ended: its result is ready.
                Ok(None) => return op.result().await.map_err(CeremonyError::from_device),
                Err(interrupt) => break interrupt,
            }
        };
        op.cancel();
        // The answer no longer matters, only that the key has finished with the request.
        let _ = op.result().await;
        Err(interrupt.into())
    }
}
