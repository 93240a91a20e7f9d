//! Starting and dropping keys leaves no threads behind.
// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    fs,
    time::{Duration, Instant},
};

use virtkey::{Config, TouchPolicy, VirtKey};

fn thread_count() -> usize {
    fs::read_dir("/proc/self/task").unwrap().count()
}

/// The thread count once it is back at `expected`, or after ten seconds. A joined thread can
/// linger in /proc/self/task for a moment: pthread_join returns when the kernel clears the
/// thread id, slightly before the task is gone (longer on a loaded machine).
fn settled_thread_count(expected: usize) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let count = thread_count();
        if count == expected || Instant::now() >= deadline {
            return count;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn twenty_keys_start_and_stop_cleanly() {
    let before = thread_count();
    let started = Instant::now();
    for round in 0..20 {
        let key = VirtKey::start(Config {
            // Every other key is left blocked in a presence wait when it is dropped.
            touch: if round % 2 == 0 {
                TouchPolicy::Auto
            } else {
                TouchPolicy::Never
            },
            ..Config::default()
        })
        .unwrap();
        let mut init = [0u8; 64];
        init[..7].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x08]);
        key.write_report(&init).unwrap();
        let reply = key.read_report(Duration::from_secs(5)).unwrap().unwrap();
        assert_eq!(reply[4], 0x86);
        if round % 2 == 1 {
            // Selection (0x0B) waits for a touch that never comes.
            let cid = [reply[15], reply[16], reply[17], reply[18]];
            let mut selection = [0u8; 64];
            selection[..4].copy_from_slice(&cid);
            selection[4..8].copy_from_slice(&[0x90, 0x00, 0x01, 0x0b]);
            key.write_report(&selection).unwrap();
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let wait = deadline.saturating_duration_since(Instant::now());
                let keepalive = key.read_report(wait).unwrap().expect("UPNEEDED");
                assert_eq!(&keepalive[4..7], &[0xbb, 0x00, 0x01]);
                if keepalive[7] == 0x02 {
                    break;
                }
            }
        }
        drop(key);
        assert_eq!(
            settled_thread_count(before),
            before,
            "threads left after key {round}"
        );
    }
    // Dropping a key does not wait out its presence wait: ten of them would take 300 s. The
    // bound is loose so that a loaded machine does not fail it.
    assert!(started.elapsed() < Duration::from_secs(120));
}
