//! Clocks, `/proc` readers, statistics and the child processes the measurements run against.

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use url::Url;

/// Bound on each wait for a child to be ready (a key's firmware boot, the emulator's port).
pub const READY_DEADLINE: Duration = Duration::from_secs(60);

/// CPU time of this process, every thread (`CLOCK_PROCESS_CPUTIME_ID`; python-fido2's
/// `time.process_time_ns` reads the same clock).
pub fn process_cpu() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

/// CPU time of another process, every thread, in nanoseconds from
/// `/proc/PID/task/*/schedstat` (first field: time on the CPU). Threads that ended are not
/// counted, so call it around a window in which the process's threads stay.
pub fn proc_cpu(pid: u32) -> Duration {
    let mut total = 0u64;
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return Duration::ZERO;
    };
    for task in tasks.flatten() {
        if let Ok(text) = fs::read_to_string(task.path().join("schedstat"))
            && let Some(ns) = text
                .split_whitespace()
                .next()
                .and_then(|v| v.parse::<u64>().ok())
        {
            total += ns;
        }
    }
    Duration::from_nanos(total)
}

/// Context switches (voluntary and involuntary) per thread id of a process: each one is a
/// thread going to sleep or being preempted, so a thread that wakes up N times shows N.
pub fn context_switches(pid: u32) -> BTreeMap<u64, u64> {
    let mut threads = BTreeMap::new();
    let Ok(tasks) = fs::read_dir(format!("/proc/{pid}/task")) else {
        return threads;
    };
    for task in tasks.flatten() {
        let Some(tid) = task
            .file_name()
            .to_str()
            .and_then(|t| t.parse::<u64>().ok())
        else {
            continue;
        };
        if let Ok(text) = fs::read_to_string(task.path().join("status")) {
            let mut total = 0;
            for line in text.lines() {
                if let Some(rest) = line
                    .strip_prefix("voluntary_ctxt_switches:")
                    .or_else(|| line.strip_prefix("nonvoluntary_ctxt_switches:"))
                {
                    total += rest.trim().parse::<u64>().unwrap_or(0);
                }
            }
            threads.insert(tid, total);
        }
    }
    threads
}

/// Wake-ups between two [`context_switches`] samples: the growth of each thread seen at the
/// end (all of it for a thread that is new), plus one for each thread that ended (its last
/// wake-up; what it did before is not visible any more). Returns (wake-ups, threads ended).
pub fn switches_between(before: &BTreeMap<u64, u64>, after: &BTreeMap<u64, u64>) -> (u64, u64) {
    let grown: u64 = after
        .iter()
        .map(|(tid, n)| n.saturating_sub(before.get(tid).copied().unwrap_or(0)))
        .sum();
    let ended = before.keys().filter(|tid| !after.contains_key(tid)).count() as u64;
    (grown + ended, ended)
}

/// Threads of a process.
pub fn thread_count(pid: u32) -> usize {
    fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |tasks| tasks.count())
}

/// A `kB` line of `/proc/PID/status` (`VmRSS`, `VmHWM`), in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let text = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    text.lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// The median (mean of the middle two for an even count); NaN when empty.
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A child process that gets SIGTERM (then SIGKILL after 5 s) and is reaped when dropped.
pub struct Proc {
    pub child: Child,
    pub name: String,
}

impl Proc {
    pub fn spawn(name: &str, command: &mut Command) -> anyhow::Result<Self> {
        let child = command
            .spawn()
            .with_context(|| format!("starting {name} ({command:?})"))?;
        Ok(Self {
            child,
            name: name.to_owned(),
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has ended.
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} ended: {status}", self.name);
        }
        Ok(())
    }

    /// SIGTERM, then waits (SIGKILL after 5 s).
    pub fn stop(&mut self) {
        if let Ok(Some(_)) = self.child.try_wait() {
            return;
        }
        if let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32) {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Where the binaries of the main workspace are (`cargo build --release` of `passkeyd`,
/// `virtkey`, `loginid-emulator`).
#[derive(Clone, Debug)]
pub struct Bins {
    pub dir: PathBuf,
}

impl Bins {
    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// `virtkey --dir DIR --name NAME` with `extra` options; returns once its socket exists.
    pub fn virtkey(&self, dir: &Path, name: &str, extra: &[&str]) -> anyhow::Result<Proc> {
        let socket = dir.join(format!("{name}.sock"));
        let mut proc = Proc::spawn(
            &format!("virtkey {name}"),
            Command::new(self.path("virtkey"))
                .arg("--dir")
                .arg(dir)
                .arg("--name")
                .arg(name)
                .args(extra)
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )?;
        let deadline = Instant::now() + READY_DEADLINE;
        while !socket.exists() {
            proc.check_alive()?;
            if Instant::now() > deadline {
                bail!("{} did not appear in time", socket.display());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        Ok(proc)
    }

    /// The LoginID emulator on 127.0.0.1; returns it with its base URL.
    pub fn emulator(&self, work: &Path, config: &EmulatorArgs) -> anyhow::Result<(Proc, Url)> {
        let port_file = work.join("emulator.port");
        let _ = fs::remove_file(&port_file);
        let mut proc = Proc::spawn(
            "loginid-emulator",
            Command::new(self.path("loginid-emulator"))
                .args(["--listen", "127.0.0.1:0", "--port-file"])
                .arg(&port_file)
                .args(["--app-id", config.app_id])
                .args(["--origin", config.origin])
                .args(["--rp-id", config.rp_id])
                .args(["--api-key", config.api_key])
                .args(["--user-verification", "discouraged"])
                .args(["--resident-key", "discouraged"])
                .args(["--grant-ttl-secs", "3600"])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null()),
        )?;
        let deadline = Instant::now() + READY_DEADLINE;
        let port = loop {
            if let Ok(text) = fs::read_to_string(&port_file)
                && text.ends_with('\n')
            {
                break text
                    .trim()
                    .parse::<u16>()
                    .context("the emulator's port file")?;
            }
            proc.check_alive()?;
            if Instant::now() > deadline {
                bail!("the emulator did not listen in time");
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        Ok((proc, Url::parse(&format!("http://127.0.0.1:{port}/"))?))
    }
}

/// The LoginID application the ceremonies register with.
pub struct EmulatorArgs {
    pub app_id: &'static str,
    pub origin: &'static str,
    pub rp_id: &'static str,
    pub api_key: &'static str,
}

pub const APP: EmulatorArgs = EmulatorArgs {
    app_id: "7e1f0000-bench-0000-0000-000000000000",
    origin: "https://example.com",
    rp_id: "example.com",
    api_key: "bench-api-key-0123456789abcdef",
};

/// Waits until `path`'s lines contain `count` lines with `needle` (a log being written by a
/// child), failing when `proc` ends or the deadline passes.
pub fn wait_for_lines(
    path: &Path,
    needle: &str,
    count: usize,
    proc: &mut Proc,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    loop {
        if let Ok(file) = fs::File::open(path) {
            let found = BufReader::new(file)
                .lines()
                .map_while(Result::ok)
                .filter(|line| line.contains(needle))
                .count();
            if found >= count {
                return Ok(());
            }
        }
        proc.check_alive()
            .with_context(|| format!("log: {}", fs::read_to_string(path).unwrap_or_default()))?;
        if Instant::now() > deadline {
            bail!(
                "{needle:?} x{count} not logged in time in {}",
                path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Operation name -> samples, in a stable order.
pub type Samples = BTreeMap<&'static str, Vec<OpSample>>;

/// One timed operation.
#[derive(Clone, Copy, Debug)]
pub struct OpSample {
    pub wall: Duration,
    pub cpu: Duration,
}
