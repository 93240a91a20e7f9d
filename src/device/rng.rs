//! The host randomness of one key: where the CTAPHID_INIT nonce, the PIN/UV protocol's
//! ephemeral ECDH key and protocol two's IVs come from.
//!
//! Each key has one source, chosen when the registry adds it ([`HostRandomness`]): the OS
//! RNG, or a replay's recorded randomness. When the key is being recorded, every draw is also
//! noted in the recording (see [`record`](super::record)), so that a replay can hand the same
//! bytes back.
//!
//! The actor draws the nonce; the PIN cryptography runs in the caller's task and draws from
//! the same source through the [`Authenticator`](super::Authenticator)'s shared handle. Both
//! draw under one lock, so the draws are noted in the order they were made, which is the order
//! a replay hands them out again.

use std::fmt;
use std::num::NonZeroU32;
use std::sync::{Mutex, PoisonError};

use rand::rngs::OsRng;
use rand_core::{CryptoRng, RngCore};

use super::error::DeviceError;
use super::record::{FILLER, RandomnessError, RandomnessKind, Recorder, ReplayRandomness};

/// Where a key's host randomness comes from.
#[derive(Debug, Default)]
#[non_exhaustive]
pub enum HostRandomness {
    /// The operating system's RNG: every key the transports report.
    #[default]
    Os,
    /// A recording's randomness, handed out in the order it was recorded: for a key served
    /// by a [`Replay`](super::record::Replay), so that the host writes what it wrote when the
    /// recording was made.
    Replay(ReplayRandomness),
}

/// Why host randomness could not be drawn.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RandomnessFailure {
    /// The operating system's RNG failed.
    #[error("the operating system's random number generator failed (code {code:?})")]
    Os {
        /// The error code `rand_core` reported, if any.
        code: Option<NonZeroU32>,
    },
    /// A replay's recorded randomness ran out or does not fit the draw: the replayed session
    /// has left the recorded one.
    #[error(transparent)]
    Replay(#[from] RandomnessError),
}

/// A key's randomness source, shared by its actor and its [`Authenticator`] handles.
///
/// [`Authenticator`]: super::Authenticator
pub(super) struct DeviceRng {
    source: Mutex<HostRandomness>,
    recorder: Option<Recorder>,
}

impl fmt::Debug for DeviceRng {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceRng")
            .field("recording", &self.recorder.is_some())
            .finish_non_exhaustive()
    }
}

impl DeviceRng {
    /// Draws from `source`; every draw is noted in `recorder` when there is one.
    pub(super) fn new(source: HostRandomness, recorder: Option<Recorder>) -> Self {
        Self {
            source: Mutex::new(source),
            recorder,
        }
    }

    /// Runs `f` with an RNG that draws from this source, every draw noted as `kind` when
    /// recording. Fails when a draw failed: `f`'s output was then made from filler bytes and
    /// is dropped.
    ///
    /// The lock is held while `f` runs, so `f` must not block (key generation and IVs take
    /// microseconds).
    pub(super) fn draw<T>(
        &self,
        kind: RandomnessKind,
        f: impl FnOnce(&mut HostRng<'_>) -> T,
    ) -> Result<T, DeviceError> {
        // A panic while drawing leaves the source as it was between two draws: still usable.
        let mut source = self.source.lock().unwrap_or_else(PoisonError::into_inner);
        let mut rng = HostRng {
            source: &mut source,
            kind,
            recorder: self.recorder.as_ref(),
            failure: None,
        };
        let output = f(&mut rng);
        match rng.failure {
            None => Ok(output),
            Some(failure) => Err(DeviceError::Randomness(failure)),
        }
    }
}

/// The RNG lent out by [`Authenticator::host_rng`](super::Authenticator::host_rng): draws from
/// the key's source and notes every draw when the key is recorded.
///
/// It never panics. A draw that fails fills its buffer with a fixed pattern (the infallible
/// `fill_bytes`) or returns the error (`try_fill_bytes`); either way the failure is kept and
/// the whole use fails with [`DeviceError::Randomness`].
pub struct HostRng<'a> {
    source: &'a mut HostRandomness,
    kind: RandomnessKind,
    recorder: Option<&'a Recorder>,
    failure: Option<RandomnessFailure>,
}

impl fmt::Debug for HostRng<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HostRng")
            .field("kind", &self.kind)
            .field("failure", &self.failure)
            .finish_non_exhaustive()
    }
}

impl HostRng<'_> {
    fn try_draw(&mut self, dest: &mut [u8]) -> Result<(), RandomnessFailure> {
        if let Some(failure) = &self.failure {
            return Err(failure.clone());
        }
        let drawn = match &mut *self.source {
            HostRandomness::Os => OsRng
                .try_fill_bytes(dest)
                .map_err(|error| RandomnessFailure::Os { code: error.code() }),
            HostRandomness::Replay(replay) => replay.try_draw(dest).map_err(Into::into),
        };
        match drawn {
            Ok(()) => {
                if let Some(recorder) = self.recorder {
                    recorder.note_randomness(self.kind, dest);
                }
                Ok(())
            }
            Err(failure) => {
                self.failure = Some(failure.clone());
                Err(failure)
            }
        }
    }
}

impl RngCore for HostRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }

    fn next_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        if self.try_draw(dest).is_err() {
            dest.fill(FILLER);
        }
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.try_draw(dest).map_err(rand_core::Error::new)
    }
}

impl CryptoRng for HostRng<'_> {}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::device::record::{Replay, record};
    use crate::transport::{
        Connection, DeviceDescription, DeviceId, LINK_CAPACITY, ReportLink, Transport,
    };

    fn replay_of(randomness: &[(&str, &str)]) -> Replay {
        let mut file = String::from(
            "{\"format\":\"passkeyd-recording\",\"version\":1,\"transport\":\"virtual\"}\n",
        );
        for (kind, hex) in randomness {
            file.push_str(&format!(
                "{{\"t_us\":0,\"kind\":\"{kind}\",\"hex\":\"{hex}\"}}\n"
            ));
        }
        Replay::read(file.as_bytes()).unwrap()
    }

    #[test]
    fn replayed_draws_come_back_in_order_and_divergence_is_typed() {
        let replay = replay_of(&[
            ("nonce", "0102030405060708"),
            ("iv", "aa".repeat(16).as_str()),
        ]);
        let rng = DeviceRng::new(HostRandomness::Replay(replay.randomness()), None);
        let nonce = rng
            .draw(RandomnessKind::Nonce, |rng| {
                let mut nonce = [0u8; 8];
                rng.fill_bytes(&mut nonce);
                nonce
            })
            .unwrap();
        assert_eq!(nonce, [1, 2, 3, 4, 5, 6, 7, 8]);
        // A draw of the wrong size: the use fails with the recorded line, and so does every
        // later one.
        let error = rng
            .draw(RandomnessKind::Iv, |rng| rng.next_u64())
            .unwrap_err();
        assert!(matches!(
            error,
            DeviceError::Randomness(RandomnessFailure::Replay(RandomnessError::LengthMismatch {
                line: 3,
                kind: "iv",
                recorded: 16,
                requested: 8,
            }))
        ));
        let again = rng.draw(RandomnessKind::Iv, |rng| {
            let mut iv = [0u8; 16];
            rng.try_fill_bytes(&mut iv).is_err()
        });
        assert!(matches!(again, Err(DeviceError::Randomness(_))));
    }

    #[test]
    fn exhausted_replay_randomness_fails_the_draw() {
        let rng = DeviceRng::new(HostRandomness::Replay(replay_of(&[]).randomness()), None);
        let error = rng
            .draw(RandomnessKind::Nonce, |rng| rng.next_u32())
            .unwrap_err();
        assert!(matches!(
            error,
            DeviceError::Randomness(RandomnessFailure::Replay(RandomnessError::Exhausted {
                requested: 4
            }))
        ));
    }

    #[tokio::test]
    async fn os_draws_are_noted_in_the_recording_in_draw_order() {
        let description = DeviceDescription {
            id: DeviceId::new(Transport::Virtual, "k"),
            transport: Transport::Virtual,
            path: "k.sock".into(),
            vendor_id: None,
            product_id: None,
            product: None,
            manufacturer: None,
        };
        let (tx, _device_rx) = tokio::sync::mpsc::channel(LINK_CAPACITY);
        let (_device_tx, rx) = tokio::sync::mpsc::channel(LINK_CAPACITY);
        let sink = Arc::new(Mutex::new(Vec::new()));
        struct Sink(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Sink {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let recording = record(
            Connection::Hid(ReportLink { tx, rx }),
            &description,
            Sink(Arc::clone(&sink)),
        )
        .unwrap();
        let rng = DeviceRng::new(HostRandomness::Os, Some(recording.recorder.clone()));
        let nonce = rng
            .draw(RandomnessKind::Nonce, |rng| {
                let mut nonce = [0u8; 8];
                rng.fill_bytes(&mut nonce);
                nonce
            })
            .unwrap();
        let key = rng
            .draw(RandomnessKind::EcdhKey, |rng| p256::SecretKey::random(rng))
            .unwrap();
        drop((rng, recording.recorder, recording.connection));
        assert_eq!(recording.task.await.unwrap().events, 2);

        let bytes = sink.lock().unwrap().clone();
        let replay = Replay::read(&bytes[..]).unwrap();
        let mut randomness = replay.randomness();
        let mut replayed_nonce = [0u8; 8];
        randomness.try_draw(&mut replayed_nonce).unwrap();
        assert_eq!(replayed_nonce, nonce);
        // p256 draws the scalar as one 32-byte fill: the note is exactly the private key.
        let mut scalar = [0u8; 32];
        randomness.try_draw(&mut scalar).unwrap();
        assert_eq!(scalar, key.to_bytes().as_slice());
        assert_eq!(randomness.remaining(), 0);
    }
}
