//! An idle key's own threads sleep until something happens: no periodic wake-ups in the
//! CTAPHID pipe thread or the firmware thread. (Trussed's service thread polls every
//! millisecond; that is the dependency's and not counted here.) Its own binary, so that no
//! other key's threads share the names.
// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::BTreeMap,
    fs,
    time::{Duration, Instant},
};

use virtkey::{Config, VirtKey};

/// Thread id and voluntary context switches (each one a wake-up from a blocking wait) of every
/// thread of this process named `name`.
fn voluntary_switches(name: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    for task in fs::read_dir("/proc/self/task").unwrap() {
        let task = task.unwrap().path();
        let Ok(comm) = fs::read_to_string(task.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if comm.trim_end() != name {
            continue;
        }
        let status = fs::read_to_string(task.join("status")).unwrap();
        let switches: u64 = status
            .lines()
            .find_map(|line| line.strip_prefix("voluntary_ctxt_switches:"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let tid = task.file_name().unwrap().to_string_lossy().into_owned();
        found.insert(tid, switches);
    }
    found
}

/// Wake-ups per thread between two snapshots.
fn deltas(before: &BTreeMap<String, u64>, after: &BTreeMap<String, u64>) -> Vec<u64> {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    before
        .iter()
        .map(|(tid, count)| after[tid] - count)
        .collect()
}

#[test]
fn idle_key_threads_do_not_wake_up() {
    let key = VirtKey::start(Config::default()).unwrap();
    // One request, so both threads have run and are back in their idle waits.
    let mut init = [0u8; 64];
    init[..7].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x08]);
    key.write_report(&init).unwrap();
    let reply = key.read_report(Duration::from_secs(5)).unwrap().unwrap();
    assert_eq!(reply[4], 0x86);
    std::thread::sleep(Duration::from_millis(100));

    // Thread names are cut to 15 bytes by the kernel. Trussed's service thread is started by
    // the firmware thread without a name of its own, so it shares the firmware thread's.
    let (pipe, firmware) = ("virtkey-ctaphid", "virtkey-firmwar");
    let pipe_before = voluntary_switches(pipe);
    let firmware_before = voluntary_switches(firmware);
    let started = Instant::now();
    std::thread::sleep(Duration::from_millis(2500));
    let pipe_after = voluntary_switches(pipe);
    let firmware_after = voluntary_switches(firmware);
    assert!(started.elapsed() >= Duration::from_millis(2500));

    // A wake-up every second or every 500 ms would show as 2 or 5 here.
    assert_eq!(pipe_before.len(), 1);
    assert_eq!(deltas(&pipe_before, &pipe_after), vec![0], "pipe thread");
    // The firmware thread did not wake up; trussed's service thread (a 1 ms sleep loop,
    // hundreds of wake-ups a second) did.
    assert_eq!(firmware_before.len(), 2);
    let mut firmware_deltas = deltas(&firmware_before, &firmware_after);
    firmware_deltas.sort_unstable();
    assert_eq!(
        firmware_deltas[0], 0,
        "firmware thread: {firmware_deltas:?}"
    );
    assert!(
        firmware_deltas[1] > 100,
        "service thread: {firmware_deltas:?}"
    );
    drop(key);
}
