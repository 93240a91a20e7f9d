//! makeCredential over a virtual key paced like full-speed USB, against its floor.
//!
//! A full-speed USB key sends at most one 64-byte report per millisecond (one interrupt-IN
//! transfer per frame), so a makeCredential cannot take less than the reports the key sends
//! × 1 ms plus the firmware's own time. This benchmark measures how close the daemon's stack
//! comes to that floor:
//!
//! - each run starts a fresh in-process virtual key (`virtkey`, the Trussed firmware) served on
//!   a Unix socket by `virtkey::socket::serve`, once with `report_pacing` (1 ms by default)
//!   and once without;
//! - the key is found by the real virtual transport (inotify, SOCK_SEQPACKET) and probed by the
//!   real [`Registry`] and device actor; a tap between the transport and the registry counts
//!   the reports in each direction;
//! - after one warm-up makeCredential, one makeCredential is timed through [`Authenticator`];
//! - the medians are printed: wall time paced and unpaced (≈ firmware + stack), the reports
//!   exchanged, the floor (reports from the key × pacing + unpaced wall time) and the ratio
//!   paced / floor.
//!
//! Run it with `scripts/bench-pacing [RUNS] [PACING_US]`, or
//! `cargo bench -p passkeyd --bench pacing -- [--runs N] [--pacing-us N]`.
//!
//! [`Registry`]: passkeyd::device::Registry
//! [`Authenticator`]: passkeyd::device::Authenticator

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use ctap::command::make_credential::{
    MakeCredential, PublicKeyCredentialParameters, RelyingParty, Request, User,
};
use passkeyd::{
    device::{Authenticator, DeviceConfig, Registry, RegistryEvent, RegistryHandle},
    transport::{
        Connection, LINK_CAPACITY, Report, ReportLink, TransportEvent,
        virt::{self, VirtualConfig, VirtualTransport},
    },
};
use tokio::sync::mpsc;
use virtkey::{
    Config, VirtKey,
    socket::{self, ServeOptions, SocketServer},
};

/// Default number of runs (each: one paced and one unpaced makeCredential on fresh keys).
const DEFAULT_RUNS: usize = 20;

/// Default report pacing: USB full speed, one interrupt transfer per 1 ms frame.
const DEFAULT_PACING_US: u64 = 1000;

/// Bound on each step (key boot, discovery, one makeCredential).
const STEP_DEADLINE: Duration = Duration::from_secs(60);

/// CTAPHID_KEEPALIVE as the command byte of an initialization packet (CTAP 2.2 §11.2.9.1.7:
/// 0x3B with the initialization bit 0x80).
const KEEPALIVE_INIT: u8 = 0xbb;

/// Byte offset of the command in an initialization packet, after the 4-byte CID
/// (CTAP 2.2 §11.2.4).
const COMMAND_OFFSET: usize = 4;

fn main() -> anyhow::Result<()> {
    let (runs, pacing_us) = parse_args(std::env::args().skip(1))?;
    let pacing = Duration::from_micros(pacing_us);
    // The daemon's runtime shape: two workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let request = request()?;

    eprintln!("pacing: {runs} runs, paced at {pacing_us} us per report from the key");
    let mut paced = Vec::with_capacity(runs);
    let mut unpaced = Vec::with_capacity(runs);
    for run in 1..=runs {
        // Interleaved, so that a change in the machine's load affects both alike.
        let with = runtime.block_on(measure(Some(pacing), &request))?;
        let without = runtime.block_on(measure(None, &request))?;
        eprintln!(
            "run {run:>3}: paced {:>7.2} ms ({} reports from the key, {} to it), \
             unpaced {:>7.2} ms ({} from, {} to)",
            ms(with.wall),
            with.from_key,
            with.to_key,
            ms(without.wall),
            without.from_key,
            without.to_key,
        );
        paced.push(with);
        unpaced.push(without);
    }
    report(&paced, &unpaced, pacing);
    Ok(())
}

/// `--runs N`, `--pacing-us N`; cargo's own `--bench` is ignored.
fn parse_args(args: impl Iterator<Item = String>) -> anyhow::Result<(usize, u64)> {
    let mut runs = DEFAULT_RUNS;
    let mut pacing_us = DEFAULT_PACING_US;
    let mut args = args;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--bench" => {}
            "--runs" => {
                runs = args
                    .next()
                    .context("--runs needs a value")?
                    .parse()
                    .context("--runs")?;
            }
            "--pacing-us" => {
                pacing_us = args
                    .next()
                    .context("--pacing-us needs a value")?
                    .parse()
                    .context("--pacing-us")?;
            }
            other => bail!("unexpected argument {other:?} (expected --runs N, --pacing-us N)"),
        }
    }
    if runs == 0 || pacing_us == 0 {
        bail!("--runs and --pacing-us must be at least 1");
    }
    Ok((runs, pacing_us))
}

/// A makeCredential with an ES256 key, no PIN, no resident key: what a registration without
/// user verification sends.
fn request() -> anyhow::Result<MakeCredential> {
    let request = Request::new(
        [0x5a; 32],
        RelyingParty {
            id: "example.org".to_owned(),
            name: Some("Example".to_owned()),
        },
        User {
            id: b"pacing-bench-user".to_vec(),
            name: Some("alice".to_owned()),
            display_name: Some("Alice".to_owned()),
        },
        vec![PublicKeyCredentialParameters::public_key(
            ctap::cose::alg::ES256,
        )],
    );
    MakeCredential::new(request).context("building the makeCredential request")
}

/// One timed makeCredential.
#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    /// Reports the key sent (counted by the tap: the socket server counts a report only after
    /// sending it, possibly after the host has read it).
    from_key: u64,
    /// Of those, KEEPALIVEs.
    keepalives: u64,
    /// Reports sent to the key.
    to_key: u64,
}

/// Reports counted by the tap.
#[derive(Debug, Default)]
struct Counters {
    to_key: AtomicU64,
    from_key: AtomicU64,
    keepalives: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> (u64, u64, u64) {
        (
            self.to_key.load(Ordering::SeqCst),
            self.from_key.load(Ordering::SeqCst),
            self.keepalives.load(Ordering::SeqCst),
        )
    }
}

/// What one run keeps alive; dropped in order at its end.
struct Rig {
    registry: RegistryHandle,
    transport: VirtualTransport,
    server: SocketServer,
    _dir: tempfile::TempDir,
}

async fn measure(pacing: Option<Duration>, request: &MakeCredential) -> anyhow::Result<Sample> {
    let counters = Arc::new(Counters::default());
    let (rig, authenticator) = start(pacing, Arc::clone(&counters)).await?;

    // Warm-up: the firmware's first makeCredential creates its key-encryption key.
    make_credential(&authenticator, request).await?;

    let (to_before, from_before, keepalives_before) = counters.snapshot();
    let started = Instant::now();
    make_credential(&authenticator, request).await?;
    let wall = started.elapsed();
    let (to_after, from_after, keepalives_after) = counters.snapshot();

    let Rig {
        registry,
        transport,
        server,
        _dir,
    } = rig;
    drop(registry);
    drop(transport);
    // Joins the server's threads: off the runtime's workers.
    tokio::task::spawn_blocking(move || drop(server))
        .await
        .context("stopping the socket server")?;
    Ok(Sample {
        wall,
        from_key: from_after.saturating_sub(from_before),
        keepalives: keepalives_after.saturating_sub(keepalives_before),
        to_key: to_after.saturating_sub(to_before),
    })
}

async fn make_credential(
    authenticator: &Authenticator,
    request: &MakeCredential,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + STEP_DEADLINE;
    let response = authenticator
        .make_credential(request, deadline)
        .result()
        .await
        .context("makeCredential")?;
    if response.fmt != "packed" {
        bail!("unexpected attestation format {:?}", response.fmt);
    }
    Ok(())
}

/// A fresh key on a socket in a fresh directory, the virtual transport watching it, a registry
/// behind a counting tap; returns once the registry has probed the key.
async fn start(
    pacing: Option<Duration>,
    counters: Arc<Counters>,
) -> anyhow::Result<(Rig, Authenticator)> {
    let dir = tempfile::tempdir().context("creating the socket directory")?;
    let path = dir.path().join("bench.sock");
    let server = tokio::task::spawn_blocking(move || -> anyhow::Result<SocketServer> {
        let key = VirtKey::start(Config {
            report_pacing: pacing,
            ..Config::default()
        })
        .context("starting the virtual key")?;
        socket::serve(Arc::new(key), &path, ServeOptions::default()).context("serving the key")
    })
    .await
    .context("starting the virtual key")??;

    let (transport_tx, transport_rx) = mpsc::channel(16);
    let transport = virt::spawn(
        VirtualConfig {
            dir: dir.path().to_path_buf(),
        },
        transport_tx,
    )
    .context("starting the virtual transport")?;
    let (registry_tx, registry_rx) = mpsc::channel(16);
    tokio::spawn(tap_events(transport_rx, registry_tx, counters));
    let registry = Registry::spawn(registry_rx, DeviceConfig::default());
    let mut subscription = registry
        .subscribe()
        .await
        .context("the registry ended at once")?;
    let authenticator = tokio::time::timeout(STEP_DEADLINE, async {
        loop {
            match subscription.events.recv().await {
                Ok(RegistryEvent::Added(device)) => return Ok(device.authenticator),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .context("the key was not found in time")?
    .context("the registry ended")?;
    Ok((
        Rig {
            registry,
            transport,
            server,
            _dir: dir,
        },
        authenticator,
    ))
}

/// Forwards the transport's events to the registry, with every HID link wrapped in a tap that
/// counts reports.
async fn tap_events(
    mut events: mpsc::Receiver<TransportEvent>,
    registry: mpsc::Sender<TransportEvent>,
    counters: Arc<Counters>,
) {
    while let Some(event) = events.recv().await {
        let event = match event {
            TransportEvent::Added {
                description,
                connection: Connection::Hid(link),
            } => TransportEvent::Added {
                description,
                connection: Connection::Hid(tap(link, Arc::clone(&counters))),
            },
            other => other,
        };
        if registry.send(event).await.is_err() {
            break;
        }
    }
}

/// A link that counts what passes through `link`, in order, in both directions.
fn tap(link: ReportLink, counters: Arc<Counters>) -> ReportLink {
    let ReportLink {
        tx: to_device,
        rx: mut from_device,
    } = link;
    let (tx, mut to_key) = mpsc::channel::<Report>(LINK_CAPACITY);
    let (from_key, rx) = mpsc::channel(LINK_CAPACITY);
    let out = Arc::clone(&counters);
    tokio::spawn(async move {
        while let Some(report) = to_key.recv().await {
            out.to_key.fetch_add(1, Ordering::SeqCst);
            if to_device.send(report).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        while let Some(report) = from_device.recv().await {
            if let Ok(report) = &report {
                counters.from_key.fetch_add(1, Ordering::SeqCst);
                if report.get(COMMAND_OFFSET) == Some(&KEEPALIVE_INIT) {
                    counters.keepalives.fetch_add(1, Ordering::SeqCst);
                }
            }
            if from_key.send(report).await.is_err() {
                break;
            }
        }
    });
    ReportLink { tx, rx }
}

fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// The median of some values (the mean of the middle two for an even count).
fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

fn report(paced: &[Sample], unpaced: &[Sample], pacing: Duration) {
    let wall = |samples: &[Sample]| median(samples.iter().map(|s| ms(s.wall)).collect());
    let count = |samples: &[Sample], f: fn(&Sample) -> u64| {
        median(samples.iter().map(|s| f(s) as f64).collect())
    };
    let paced_wall = wall(paced);
    let unpaced_wall = wall(unpaced);
    let from_key = count(paced, |s| s.from_key);
    let floor = from_key * ms(pacing) + unpaced_wall;
    let min_max = |samples: &[Sample]| {
        let walls: Vec<f64> = samples.iter().map(|s| ms(s.wall)).collect();
        (
            walls.iter().copied().fold(f64::INFINITY, f64::min),
            walls.iter().copied().fold(f64::NEG_INFINITY, f64::max),
        )
    };
    let (paced_min, paced_max) = min_max(paced);
    let (unpaced_min, unpaced_max) = min_max(unpaced);
    println!(
        "makeCredential (ES256, no PIN) over the virtual transport, {} runs, medians:",
        paced.len()
    );
    println!(
        "  wall time paced ({} us/report):   {paced_wall:8.2} ms  (min {paced_min:.2}, max {paced_max:.2})",
        pacing.as_micros()
    );
    println!(
        "  wall time unpaced (firmware + stack): {unpaced_wall:6.2} ms  (min {unpaced_min:.2}, max {unpaced_max:.2})"
    );
    println!(
        "  reports paced: {from_key} from the key (of which {} KEEPALIVE), {} to the key; \
         unpaced: {} from, {} to",
        count(paced, |s| s.keepalives),
        count(paced, |s| s.to_key),
        count(unpaced, |s| s.from_key),
        count(unpaced, |s| s.to_key),
    );
    println!(
        "  floor = {from_key} reports x {:.3} ms + {unpaced_wall:.2} ms = {floor:.2} ms",
        ms(pacing)
    );
    // Each run's paced and unpaced keys ran back to back: their ratio cancels slow phases of
    // the machine.
    let per_run = |keepalives_overlap: bool| {
        median(
            paced
                .iter()
                .zip(unpaced)
                .map(|(p, u)| {
                    let reports = if keepalives_overlap {
                        p.from_key.saturating_sub(p.keepalives)
                    } else {
                        p.from_key
                    };
                    ms(p.wall) / (reports as f64 * ms(pacing) + ms(u.wall))
                })
                .collect(),
        )
    };
    println!(
        "  ratio paced / floor = {:.3} (median of the per-run ratios: {:.3})",
        paced_wall / floor,
        per_run(false)
    );
    // A KEEPALIVE goes out while the firmware works, so its millisecond overlaps the
    // firmware's time instead of adding to it.
    let keepalives = count(paced, |s| s.keepalives);
    let tight_floor = (from_key - keepalives) * ms(pacing) + unpaced_wall;
    println!(
        "  without the KEEPALIVEs (sent while the firmware works): floor = {tight_floor:.2} ms, \
         ratio = {:.3} (per run: {:.3})",
        paced_wall / tight_floor,
        per_run(true)
    );
}
