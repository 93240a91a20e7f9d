//! Progress of a ceremony: a stream of states with their details, and the prompts through
//! which the caller answers (the PIN).

use std::fmt;

use tokio::sync::oneshot;
use zeroize::Zeroizing;

use super::error::{CancelReason, ErrorKind};
use crate::transport::DeviceId;

/// The states of a ceremony, as the D-Bus `State` property names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum State {
    /// Waiting for the user to pick a key by touching it (or to plug one in).
    Selecting,
    /// Waiting for the key's PIN.
    NeedsPin,
    /// Waiting for a new PIN for a key that has none.
    NeedsNewPin,
    /// The key waits for a touch.
    NeedsTouch,
    /// The credential is on the key; LoginID is being told.
    Registering,
    /// Done: the passkey exists and LoginID issued its token.
    Completed,
    /// Ended with an error.
    Failed,
    /// Ended by cancellation.
    Cancelled,
}

impl State {
    /// The state's name: `selecting`, `needs-pin`, `needs-new-pin`, `needs-touch`,
    /// `registering`, `completed`, `failed`, `cancelled`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Selecting => "selecting",
            Self::NeedsPin => "needs-pin",
            Self::NeedsNewPin => "needs-new-pin",
            Self::NeedsTouch => "needs-touch",
            Self::Registering => "registering",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Whether the ceremony has ended in this state.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One step of a ceremony. The stream ends after a final state (completed, failed,
/// cancelled).
#[derive(Debug)]
#[non_exhaustive]
pub enum Progress {
    /// Touch the key to use. `keys` are the keys taking part (it grows when keys are
    /// plugged in); empty while waiting for a first key.
    Selecting {
        /// The keys taking part.
        keys: Vec<DeviceId>,
    },
    /// Enter the key's PIN: answer through the prompt.
    NeedsPin(PinPrompt),
    /// Choose a PIN for a key that has none (user verification is required): answer through
    /// the prompt.
    NeedsNewPin(NewPinPrompt),
    /// Touch the key.
    NeedsTouch {
        /// Which key.
        key: DeviceId,
    },
    /// The credential is on the key; LoginID is being told.
    Registering {
        /// Which key.
        key: DeviceId,
    },
    /// Done. The LoginID token goes to the caller through the ceremony's result only.
    Completed {
        /// Which key.
        key: DeviceId,
        /// The new credential's id.
        credential_id: Vec<u8>,
    },
    /// Ended with an error (the ceremony's result has it in full).
    Failed {
        /// The error's kind (the D-Bus error name).
        kind: ErrorKind,
        /// The key in use, if one was chosen.
        key: Option<DeviceId>,
        /// The error's text (never a secret).
        reason: String,
    },
    /// Ended by cancellation.
    Cancelled {
        /// Why.
        reason: CancelReason,
    },
}

impl Progress {
    /// The state this step puts the ceremony in.
    pub fn state(&self) -> State {
        match self {
            Self::Selecting { .. } => State::Selecting,
            Self::NeedsPin(_) => State::NeedsPin,
            Self::NeedsNewPin(_) => State::NeedsNewPin,
            Self::NeedsTouch { .. } => State::NeedsTouch,
            Self::Registering { .. } => State::Registering,
            Self::Completed { .. } => State::Completed,
            Self::Failed { .. } => State::Failed,
            Self::Cancelled { .. } => State::Cancelled,
        }
    }
}

/// Why a PIN is asked for (again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PinPromptReason {
    /// The first time.
    First,
    /// The last PIN was wrong (the key counted it).
    WrongPin,
    /// The last answer was not a possible PIN (too short, too long); the key never saw it.
    Malformed,
}

/// A request for the key's PIN.
pub struct PinPrompt {
    /// The key.
    pub key: DeviceId,
    /// PIN retries left before the key blocks its PIN, when the key tells.
    pub retries: Option<u32>,
    /// Why the PIN is asked for.
    pub reason: PinPromptReason,
    reply: PinReply,
}

impl PinPrompt {
    pub(super) fn new(
        key: DeviceId,
        retries: Option<u32>,
        reason: PinPromptReason,
        reply: oneshot::Sender<Zeroizing<String>>,
    ) -> Self {
        Self {
            key,
            retries,
            reason,
            reply: PinReply(reply),
        }
    }

    /// Answers with `pin`. Dropping the prompt without answering ends the ceremony with
    /// `PinRequired`.
    pub fn submit(self, pin: Zeroizing<String>) {
        self.reply.send(pin);
    }

    /// Takes the reply channel, to answer from elsewhere (the D-Bus layer's `SubmitPin`).
    pub fn into_reply(self) -> PinReply {
        self.reply
    }
}

impl fmt::Debug for PinPrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PinPrompt")
            .field("key", &self.key)
            .field("retries", &self.retries)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// Why a new PIN is asked for (again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum NewPinPromptReason {
    /// The first time.
    First,
    /// The last answer was shorter than `min_length` code points or longer than 63 bytes.
    Malformed,
    /// The key refused the last one (CTAP2_ERR_PIN_POLICY_VIOLATION).
    PolicyViolation,
}

/// A request for a new PIN, for a key that has none.
pub struct NewPinPrompt {
    /// The key.
    pub key: DeviceId,
    /// The shortest PIN the key accepts, in Unicode code points (getInfo `minPINLength`).
    pub min_length: u32,
    /// The longest PIN, in UTF-8 bytes (CTAP 2.2 §6.5.1: 63).
    pub max_bytes: u32,
    /// Why the PIN is asked for.
    pub reason: NewPinPromptReason,
    reply: PinReply,
}

impl NewPinPrompt {
    pub(super) fn new(
        key: DeviceId,
        min_length: u32,
        reason: NewPinPromptReason,
        reply: oneshot::Sender<Zeroizing<String>>,
    ) -> Self {
        Self {
            key,
            min_length,
            max_bytes: 63,
            reason,
            reply: PinReply(reply),
        }
    }

    /// Answers with the new PIN. Dropping the prompt without answering ends the ceremony
    /// with `PinRequired`.
    pub fn submit(self, pin: Zeroizing<String>) {
        self.reply.send(pin);
    }

    /// Takes the reply channel, to answer from elsewhere.
    pub fn into_reply(self) -> PinReply {
        self.reply
    }
}

impl fmt::Debug for NewPinPrompt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NewPinPrompt")
            .field("key", &self.key)
            .field("min_length", &self.min_length)
            .field("max_bytes", &self.max_bytes)
            .field("reason", &self.reason)
            .finish_non_exhaustive()
    }
}

/// The way back to a waiting ceremony with a PIN. The PIN travels in a zeroizing buffer and
/// is never kept after the one attempt it is for.
pub struct PinReply(oneshot::Sender<Zeroizing<String>>);

impl PinReply {
    /// Sends the PIN. Does nothing if the ceremony has ended meanwhile.
    pub fn send(self, pin: Zeroizing<String>) {
        // An ended ceremony does not need it; the PIN is dropped (zeroized) either way.
        let _ = self.0.send(pin);
    }
}

impl fmt::Debug for PinReply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PinReply")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_their_dbus_names() {
        let names = [
            (State::Selecting, "selecting"),
            (State::NeedsPin, "needs-pin"),
            (State::NeedsNewPin, "needs-new-pin"),
            (State::NeedsTouch, "needs-touch"),
            (State::Registering, "registering"),
            (State::Completed, "completed"),
            (State::Failed, "failed"),
            (State::Cancelled, "cancelled"),
        ];
        for (state, name) in names {
            assert_eq!(state.as_str(), name);
            assert_eq!(
                state.is_final(),
                matches!(name, "completed" | "failed" | "cancelled")
            );
        }
    }

    #[test]
    fn a_pin_reaches_the_ceremony_and_debug_shows_none() {
        let (tx, mut rx) = oneshot::channel();
        let key = DeviceId::new(crate::transport::Transport::Virtual, "k");
        let prompt = PinPrompt::new(key, Some(7), PinPromptReason::WrongPin, tx);
        let text = format!("{:?}", Progress::NeedsPin(prompt));
        assert_eq!(
            text,
            "NeedsPin(PinPrompt { key: DeviceId(\"virtual_k\"), retries: Some(7), reason: WrongPin, .. })"
        );
        let (tx2, rx2) = oneshot::channel();
        let prompt = PinPrompt::new(
            DeviceId::new(crate::transport::Transport::Virtual, "k"),
            None,
            PinPromptReason::First,
            tx2,
        );
        prompt.submit(Zeroizing::new("4321".to_owned()));
        assert_eq!(rx2.blocking_recv().unwrap().as_str(), "4321");
        assert!(rx.try_recv().is_err());
    }
}
