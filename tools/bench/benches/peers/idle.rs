//! Part 3: what an idle passkeyd costs with four virtual keys attached — resident memory and
//! wake-ups (context switches of all its threads) over a window, as `scripts/measure-idle`
//! counts them.

use std::path::Path;
use std::time::Duration;

use url::Url;

use crate::service::Host;
use crate::util::{
    Bins, context_switches, status_kib, switches_between, thread_count, wait_for_lines,
};

pub struct IdleResult {
    pub keys: usize,
    pub seconds: u64,
    pub switches: u64,
    pub per_second: f64,
    pub rss_kib: u64,
    pub hwm_kib: u64,
    pub threads: usize,
    /// Threads present at the start of the window and gone at its end.
    pub threads_ended: u64,
    /// The virtkey processes over the same window, for contrast (their firmware polls).
    pub keys_per_second: f64,
}

/// `host` on the bus at `address`; LoginID is never asked while idle, so nobody listens at
/// the configured address.
pub fn run(
    bins: &Bins,
    work: &Path,
    host: Host,
    address: &str,
    seconds: u64,
) -> anyhow::Result<IdleResult> {
    const KEYS: usize = 4;
    let dir = work.join("idle-keys");
    let mut keys = Vec::new();
    for i in 1..=KEYS {
        keys.push(bins.virtkey(&dir, &format!("k{i}"), &[])?);
    }
    let log = work.join("idle-daemon.log");
    let nobody = Url::parse("http://127.0.0.1:9/")?;
    let mut proc = host.spawn(bins, work, address, &dir, &nobody, &log)?;
    wait_for_lines(&log, "key added", KEYS, &mut proc)?;
    std::thread::sleep(Duration::from_secs(2));

    let pid = proc.pid();
    let key_switches = || {
        keys.iter()
            .map(|k| context_switches(k.pid()))
            .collect::<Vec<_>>()
    };
    let before = context_switches(pid);
    let keys_before = key_switches();
    std::thread::sleep(Duration::from_secs(seconds));
    let after = context_switches(pid);
    let keys_after = key_switches();
    proc.check_alive()?;
    let (switches, threads_ended) = switches_between(&before, &after);
    let key_total: u64 = keys_before
        .iter()
        .zip(&keys_after)
        .map(|(b, a)| switches_between(b, a).0)
        .sum();
    let result = IdleResult {
        keys: KEYS,
        seconds,
        switches,
        per_second: switches as f64 / seconds as f64,
        rss_kib: status_kib(pid, "VmRSS").unwrap_or(0),
        hwm_kib: status_kib(pid, "VmHWM").unwrap_or(0),
        threads: thread_count(pid),
        threads_ended,
        keys_per_second: key_total as f64 / seconds as f64,
    };
    proc.stop();
    Ok(result)
}
