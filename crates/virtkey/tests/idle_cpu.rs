//! A key waiting for a touch does not spin: its threads sleep on channels and condition
//! variables. (Its own binary, so no other test's CPU time is counted.)
// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use virtkey::{Config, TouchPolicy, VirtKey};

/// utime + stime of this process in clock ticks (proc(5), fields 14 and 15).
fn cpu_ticks() -> u64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let after_name = stat.rsplit(')').next().unwrap();
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

fn ticks_per_second() -> u64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux this runs on; /proc/self/stat uses it.
    100
}

#[test]
fn waiting_for_a_touch_uses_little_cpu() {
    let key = VirtKey::start(Config {
        touch: TouchPolicy::Never,
        ..Config::default()
    })
    .unwrap();
    let cid = init(&key);
    send(&key, cid, CMD_CBOR, &make_credential_message());
    // Wait until the firmware is in its presence wait.
    let deadline = Instant::now() + Duration::from_secs(10);
    while recv(&key, deadline).expect("UPNEEDED").data != [0x02] {}

    let before = cpu_ticks();
    let started = Instant::now();
    let mut keepalives = 0;
    while started.elapsed() < Duration::from_secs(1) {
        if let Some(message) = recv(&key, started + Duration::from_secs(1)) {
            assert_eq!(message.data, vec![0x02]);
            keepalives += 1;
        }
    }
    let used = cpu_ticks() - before;
    // One spinning thread would use a whole second (100 ticks); the trussed virt service
    // thread's 1 ms poll and the 100 ms keepalives cost a few ticks.
    assert!(used * 4 < ticks_per_second(), "{used} ticks in one second");
    // About ten at 100 ms; a loaded machine may delay some, but the wait must stay alive.
    assert!(keepalives >= 2, "{keepalives} keepalives");
    send(&key, cid, CMD_CANCEL, &[]);
    // Far below the firmware's 30 s presence timeout, loose enough for a loaded machine.
    let outcome = wait_reply(&key, cid, Instant::now() + Duration::from_secs(5));
    assert_eq!(outcome.reply.data, vec![0x2d]);
}
