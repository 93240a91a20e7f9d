//! Part 4: start-up, from before the exec of `passkeyd` to the daemon being ready.

use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::bail;

use crate::daemon::Daemon;
use crate::util::{Bins, median, ms};

pub struct StartupResult {
    pub starts: usize,
    pub median_ms: f64,
    pub min_ms: f64,
    pub max_ms: f64,
    /// What "ready" means in this run.
    pub ready: &'static str,
}

pub fn run(
    bins: &Bins,
    work: &Path,
    daemon: &Daemon,
    starts: usize,
) -> anyhow::Result<StartupResult> {
    let keys = work.join("startup-keys");
    fs::create_dir_all(&keys)?;
    let mut samples = Vec::new();
    for i in 0..starts {
        let log = work.join(format!("startup-{i}.log"));
        let started = Instant::now();
        let mut proc = daemon.spawn(bins, work, &keys, &log)?;
        let deadline = started + crate::util::READY_DEADLINE;
        loop {
            if fs::read_to_string(&log).is_ok_and(|text| text.contains("enumeration complete")) {
                samples.push(started.elapsed());
                break;
            }
            proc.check_alive()?;
            if Instant::now() > deadline {
                bail!("passkeyd was not ready in time");
            }
            std::thread::sleep(Duration::from_micros(200));
        }
        proc.stop();
    }
    let values: Vec<f64> = samples.iter().copied().map(ms).collect();
    Ok(StartupResult {
        starts,
        median_ms: median(values.clone()),
        min_ms: values.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: values.iter().copied().fold(0.0, f64::max),
        ready: "the virtual transport's enumeration logged as complete",
    })
}
