//! The soak driver: runs many ceremonies through `Ceremonies`, one worker per key, and
//! measures the process around them (resident memory, open file descriptors, live tokio
//! tasks) at the start, after a warm-up and at the end. Used by `examples/soak` (the full
//! run of `scripts/soak`, against `virtkey` and `loginid-emulator` processes) and by
//! `tests/soak.rs` (the CI-sized run, everything in one process).

#![allow(dead_code, unreachable_pub)]

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use passkeyd::ceremony::{Ceremonies, CeremonyRequest};
use passkeyd::device::RegistryHandle;
use passkeyd::loginid::Token;
use passkeyd::transport::DeviceId;
use zeroize::Zeroizing;

/// Counts live ceremonies in this process: each ceremony task runs in a `ceremony` span of
/// `passkeyd::ceremony`, created when it starts and closed when the task has ended.
#[derive(Clone, Debug, Default)]
pub struct LiveCeremonies {
    live: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
}

impl LiveCeremonies {
    /// Ceremony tasks alive now.
    pub fn count(&self) -> usize {
        self.live.load(Ordering::SeqCst)
    }

    /// Ceremony tasks started since the counter was installed.
    pub fn started(&self) -> usize {
        self.started.load(Ordering::SeqCst)
    }

    /// Installs the counter as this process's tracing subscriber.
    pub fn install(&self) {
        use tracing_subscriber::layer::SubscriberExt as _;
        let subscriber = tracing_subscriber::registry().with(self.clone());
        // A process that already has a subscriber keeps it; the count then stays 0 and the
        // live-task figures are the ones to read.
        let _ = tracing::subscriber::set_global_default(subscriber);
    }
}

fn is_ceremony(metadata: &tracing::Metadata<'_>) -> bool {
    metadata.name() == "ceremony" && metadata.target().starts_with("passkeyd::ceremony")
}

impl<S> tracing_subscriber::Layer<S> for LiveCeremonies
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        attrs: &tracing::span::Attributes<'_>,
        _id: &tracing::span::Id,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if is_ceremony(attrs.metadata()) {
            self.live.fetch_add(1, Ordering::SeqCst);
            self.started.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        if ctx.metadata(&id).is_some_and(is_ceremony) {
            self.live.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

/// Memory growth allowed after the warm-up.
pub const MAX_GROWTH_BYTES: u64 = 5 * 1024 * 1024;

/// A key taking part, with the PIN to give unattended when it has one.
#[derive(Clone, Debug)]
pub struct SoakKey {
    /// The registry's id of the key.
    pub id: DeviceId,
    /// Its PIN, when it has one.
    pub pin: Option<String>,
}

/// Gets an authorization token for a username (the UI's backend's `mgmt/grant`).
pub type Grant =
    Arc<dyn Fn(String) -> Pin<Box<dyn Future<Output = Option<Token>> + Send>> + Send + Sync>;

/// What to run.
pub struct Soak {
    /// Ceremonies in all, warm-up included.
    pub ceremonies: usize,
    /// Ceremonies before the "after warm-up" measurement.
    pub warmup: usize,
    /// The keys; one worker each, so this many ceremonies run at once.
    pub keys: Vec<SoakKey>,
    /// A prefix that makes the usernames of this run unique.
    pub run: String,
    /// The longest a single ceremony may take before it counts as stuck.
    pub ceremony_deadline: Duration,
}

/// The process's figures at one point.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sample {
    /// Resident memory (VmRSS), in bytes.
    pub rss: u64,
    /// Open file descriptors.
    pub fds: usize,
    /// Live tokio tasks.
    pub tasks: usize,
}

impl Sample {
    /// Samples this process (`pid`: another one, e.g. the daemon's; then `tasks` is 0).
    pub fn take(pid: Option<u32>) -> Self {
        let proc = pid.map_or_else(|| "/proc/self".to_owned(), |pid| format!("/proc/{pid}"));
        Self {
            rss: rss(&proc),
            fds: std::fs::read_dir(format!("{proc}/fd")).map_or(0, Iterator::count),
            tasks: if pid.is_none() {
                tokio::runtime::Handle::current()
                    .metrics()
                    .num_alive_tasks()
            } else {
                0
            },
        }
    }
}

/// VmRSS of a process, in bytes (0 when unreadable).
pub fn rss(proc: &str) -> u64 {
    let status = std::fs::read_to_string(format!("{proc}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| rest.trim().strip_suffix("kB"))
        .and_then(|kb| kb.trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// One failed ceremony.
#[derive(Clone, Debug)]
pub struct Failure {
    /// Its number in the run.
    pub index: usize,
    /// The key it ran on.
    pub key: String,
    /// The D-Bus error name (or `stuck` when it outlived its deadline).
    pub kind: String,
    /// The error's text.
    pub message: String,
}

/// The outcome of a soak.
#[derive(Clone, Debug)]
pub struct Report {
    /// Ceremonies run.
    pub ceremonies: usize,
    /// Before the first ceremony.
    pub start: Sample,
    /// After the warm-up.
    pub warm: Sample,
    /// At the end, every key idle again.
    pub end: Sample,
    /// Wall time of all ceremonies.
    pub elapsed: Duration,
    /// Wall time after the warm-up.
    pub elapsed_after_warmup: Duration,
    /// The ceremonies after the warm-up.
    pub after_warmup: usize,
    /// Failed ceremonies.
    pub failures: Vec<Failure>,
    /// Ceremonies still live at the end (for a daemon: its `Ceremonies` objects).
    pub live_at_end: usize,
    /// Ceremonies run at once (one per key).
    pub workers: usize,
}

impl Report {
    /// Memory growth after the warm-up, in bytes (negative: it shrank).
    pub fn growth(&self) -> i64 {
        i64::try_from(self.end.rss).unwrap_or(i64::MAX)
            - i64::try_from(self.warm.rss).unwrap_or(i64::MAX)
    }

    /// Every bound the run broke: growth after warm-up under [`MAX_GROWTH_BYTES`], open
    /// descriptors and live tasks at the end no more than after the warm-up (give or take
    /// the pooled HTTP connections of the workers), no ceremony live at the end, no failure.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        let growth = self.growth();
        if growth >= i64::try_from(MAX_GROWTH_BYTES).unwrap_or(i64::MAX) {
            out.push(format!(
                "resident memory grew by {} KiB after the warm-up (bound: {} KiB)",
                growth / 1024,
                MAX_GROWTH_BYTES / 1024
            ));
        }
        // Pooled HTTP connections (a descriptor and a task on each side in one process) come
        // and go with the load: one more per worker than after the warm-up is not growth, a
        // leak of one per ceremony is far more.
        let slack = 2 * self.workers;
        if self.end.fds > self.warm.fds.max(self.start.fds) + slack {
            out.push(format!(
                "open file descriptors grew: {} at the start, {} after the warm-up, {} at the end",
                self.start.fds, self.warm.fds, self.end.fds
            ));
        }
        if self.end.tasks > self.warm.tasks.max(self.start.tasks) + slack {
            out.push(format!(
                "live tasks grew: {} at the start, {} after the warm-up, {} at the end",
                self.start.tasks, self.warm.tasks, self.end.tasks
            ));
        }
        if self.live_at_end != 0 {
            out.push(format!("{} ceremonies live at the end", self.live_at_end));
        }
        if !self.failures.is_empty() {
            out.push(format!("{} ceremonies failed", self.failures.len()));
        }
        out
    }
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let rate = |n: usize, d: Duration| n as f64 / d.as_secs_f64().max(1e-9);
        writeln!(f, "ceremonies          {}", self.ceremonies)?;
        writeln!(f, "failures            {}", self.failures.len())?;
        for failure in self.failures.iter().take(10) {
            writeln!(
                f,
                "  #{} on {}: {} {}",
                failure.index, failure.key, failure.kind, failure.message
            )?;
        }
        writeln!(
            f,
            "ceremonies/s        {:.1} overall, {:.1} after the warm-up",
            rate(self.ceremonies, self.elapsed),
            rate(self.after_warmup, self.elapsed_after_warmup)
        )?;
        writeln!(f, "wall time           {:.1} s", self.elapsed.as_secs_f64())?;
        writeln!(
            f,
            "resident memory     {} at the start, {} after the warm-up, {} at the end ({:+} KiB after the warm-up)",
            mib(self.start.rss),
            mib(self.warm.rss),
            mib(self.end.rss),
            self.growth() / 1024
        )?;
        writeln!(
            f,
            "open fds            {} at the start, {} after the warm-up, {} at the end",
            self.start.fds, self.warm.fds, self.end.fds
        )?;
        if self.start.tasks != 0 || self.end.tasks != 0 {
            writeln!(
                f,
                "live tokio tasks    {} at the start, {} after the warm-up, {} at the end",
                self.start.tasks, self.warm.tasks, self.end.tasks
            )?;
        }
        write!(f, "live ceremonies     {} at the end", self.live_at_end)
    }
}

/// A future the driver can keep across tasks.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What the soak runs against: the daemon's stack in this process, or a `passkeyd` process.
pub trait Target: Send + Sync {
    /// One whole ceremony for `username` on `key` with the authorization `token`; a failure
    /// as (D-Bus error name, message).
    fn ceremony(
        &self,
        key: &SoakKey,
        username: String,
        token: Token,
    ) -> BoxFuture<'_, Result<(), (String, String)>>;
    /// Waits (bounded) until every key is idle and every ceremony gone.
    fn settle(&self) -> BoxFuture<'_, ()>;
    /// The figures of the process under watch.
    fn sample(&self) -> Sample;
    /// Its live ceremonies.
    fn live(&self) -> BoxFuture<'_, usize>;
}

/// The daemon's stack in this process: `Ceremonies` over the registry; live ceremonies
/// counted through their tracing spans.
pub struct InProcess {
    /// Starts the ceremonies.
    pub ceremonies: Ceremonies,
    /// The keys.
    pub registry: RegistryHandle,
    /// The live ceremony count (installed as the tracing subscriber).
    pub counter: LiveCeremonies,
}

impl Target for InProcess {
    fn ceremony(
        &self,
        key: &SoakKey,
        username: String,
        token: Token,
    ) -> BoxFuture<'_, Result<(), (String, String)>> {
        let mut request = CeremonyRequest::new(username, Some(token));
        request.authenticator = Some(key.id.clone());
        request.pin = key.pin.clone().map(Zeroizing::new);
        Box::pin(async move {
            let run = async {
                let mut ceremony = self.ceremonies.start(request)?;
                while ceremony.next().await.is_some() {}
                ceremony.result().await
            };
            match run.await {
                Ok(_registration) => Ok(()),
                Err(error) => Err((error.kind().dbus_name().to_owned(), error.to_string())),
            }
        })
    }

    fn settle(&self) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            // A ceremony task sends its result just before it ends.
            for _ in 0..1000 {
                let idle = self.registry.list().await.iter().all(|d| !d.busy);
                if idle && self.counter.count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    }

    fn sample(&self) -> Sample {
        Sample::take(None)
    }

    fn live(&self) -> BoxFuture<'_, usize> {
        Box::pin(async move { self.counter.count() })
    }
}

/// Runs `soak.ceremonies` ceremonies: a warm-up of `soak.warmup`, then the rest, each phase
/// with one worker per key taking the next ceremony number until none is left.
pub async fn run(target: Arc<dyn Target>, grant: &Grant, soak: &Soak) -> Report {
    let start = target.sample();
    let started = Instant::now();
    let warmup = soak.warmup.min(soak.ceremonies);
    let mut failures = phase(&target, grant, soak, 0..warmup).await;
    target.settle().await;
    let warm = target.sample();
    let warmed = Instant::now();
    failures.extend(phase(&target, grant, soak, warmup..soak.ceremonies).await);
    target.settle().await;
    let elapsed = started.elapsed();
    let elapsed_after_warmup = warmed.elapsed();
    let end = target.sample();
    Report {
        ceremonies: soak.ceremonies,
        start,
        warm,
        end,
        elapsed,
        elapsed_after_warmup,
        after_warmup: soak.ceremonies - warmup,
        failures,
        live_at_end: target.live().await,
        workers: soak.keys.len(),
    }
}

/// Ceremonies `range`, one worker per key.
async fn phase(
    target: &Arc<dyn Target>,
    grant: &Grant,
    soak: &Soak,
    range: std::ops::Range<usize>,
) -> Vec<Failure> {
    let next = Arc::new(AtomicUsize::new(range.start));
    let mut workers = tokio::task::JoinSet::new();
    for key in soak.keys.clone() {
        let next = Arc::clone(&next);
        let target = Arc::clone(target);
        let grant = Arc::clone(grant);
        let run = soak.run.clone();
        let end = range.end;
        let deadline = soak.ceremony_deadline;
        workers.spawn(async move {
            let mut failures = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= end {
                    return failures;
                }
                let fail = |kind: &str, message: String| Failure {
                    index,
                    key: key.id.to_string(),
                    kind: kind.to_owned(),
                    message,
                };
                let username = format!("soak-{run}-{index}@example.com");
                let Some(token) = grant(username.clone()).await else {
                    failures.push(fail("grant", "no authorization token".into()));
                    continue;
                };
                match tokio::time::timeout(deadline, target.ceremony(&key, username, token)).await {
                    Ok(Ok(())) => {}
                    Ok(Err((kind, message))) => failures.push(fail(&kind, message)),
                    Err(_) => {
                        failures.push(fail("stuck", format!("still running after {deadline:?}")))
                    }
                }
            }
        });
    }
    let mut failures = Vec::new();
    while let Some(done) = workers.join_next().await {
        match done {
            Ok(mut some) => failures.append(&mut some),
            Err(error) => failures.push(Failure {
                index: usize::MAX,
                key: String::new(),
                kind: "panic".into(),
                message: error.to_string(),
            }),
        }
    }
    failures.sort_by_key(|f| f.index);
    failures
}
