//! vpcd, the virtual reader in pcscd, takes one card at a time on one port (127.0.0.1:35963).
//! The test binaries that put a card there (`nfc_transport`, `device_nfc`) hold this lock
//! while they do: cargo runs test binaries one after another, but other runners do not, and
//! the tests inside one binary run in parallel.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::time::{Duration, Instant};

use pcsc::{Context, ReaderState, Scope, State};
use rustix::fs::{FlockOperation, flock};

/// The reader vpcd's first slot shows up as.
const READER: &str = "Virtual PCD 00 00";

/// How long pcscd may take to notice that the previous holder's card left (it polls vpcd
/// about every 400 ms).
const EMPTY_TIMEOUT: Duration = Duration::from_secs(15);

/// Held while a test serves a card to vpcd; released when dropped (the file is closed).
#[derive(Debug)]
pub struct VpcdLock(File);

/// Waits for the port to be free, then for pcscd to show vpcd's reader empty: the previous
/// holder may have taken its card away just before it let go, and a card pcscd still lists
/// would be taken for this test's. Runs on tokio's blocking pool: the other binary may hold
/// the lock for the length of its test.
pub async fn acquire() -> VpcdLock {
    tokio::task::spawn_blocking(|| {
        let path = std::env::temp_dir().join("passkeyd-vpcd-35963.lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .unwrap();
        flock(&file, FlockOperation::LockExclusive).unwrap();
        reader_empty();
        VpcdLock(file)
    })
    .await
    .unwrap()
}

/// Returns once pcscd reports no card in vpcd's reader. An absent pcscd or reader is left
/// for the test to report.
fn reader_empty() {
    let Ok(context) = Context::establish(Scope::User) else {
        return;
    };
    let mut states = [ReaderState::new(
        CString::new(READER).unwrap(),
        State::UNAWARE,
    )];
    let until = Instant::now() + EMPTY_TIMEOUT;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if context.get_status_change(left, &mut states).is_err() {
            return;
        }
        let state = states[0].event_state();
        if state.intersects(State::UNKNOWN | State::UNAVAILABLE | State::EMPTY) {
            return;
        }
        assert!(
            Instant::now() < until,
            "pcscd still shows a card in {READER}: {state:?}"
        );
        states[0].sync_current_state();
    }
}
