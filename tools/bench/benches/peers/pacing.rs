//! Part 6: makeCredential over a key paced like full-speed USB against its floor — the logic of
//! `benches/pacing.rs`, with the keys as `virtkey` processes (`--report-pacing-us`).
//!
//! A full-speed USB key sends at most one 64-byte report per millisecond, so a makeCredential
//! cannot take less than (reports from the key) × 1 ms + the firmware's own time (the same
//! request on an unpaced key). A tap between the virtual transport and the registry counts the
//! reports. Paced and unpaced runs alternate, so that the machine's load affects both alike.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use ctap::command::make_credential::{
    MakeCredential, PublicKeyCredentialParameters, RelyingParty, Request, User,
};
use passkeyd::device::{Authenticator, DeviceConfig, Registry, RegistryEvent};
use passkeyd::transport::virt::{self, VirtualConfig};
use passkeyd::transport::{Connection, LINK_CAPACITY, Report, ReportLink, TransportEvent};
use tokio::sync::mpsc;

use crate::util::{Bins, median, ms};

/// CTAPHID_KEEPALIVE as an initialization packet's command byte (CTAP 2.2 §11.2.9.1.7).
const KEEPALIVE_INIT: u8 = 0xbb;
/// Offset of the command byte, after the 4-byte CID (CTAP 2.2 §11.2.4).
const COMMAND_OFFSET: usize = 4;

#[derive(Debug, Default)]
struct Counters {
    from_key: AtomicU64,
    keepalives: AtomicU64,
}

#[derive(Clone, Copy, Debug)]
struct Sample {
    wall: Duration,
    from_key: u64,
    keepalives: u64,
}

pub struct PacingResult {
    pub runs: usize,
    pub pacing_us: u64,
    pub paced_ms: f64,
    pub unpaced_ms: f64,
    pub reports_from_key: f64,
    pub keepalives: f64,
    pub floor_ms: f64,
    /// Median of the per-run ratios paced / (reports × pacing + unpaced).
    pub ratio: f64,
    /// The same without the KEEPALIVE reports, which the key sends while the firmware works.
    pub ratio_without_keepalives: f64,
}

pub fn run(bins: &Bins, work: &Path, runs: usize, pacing_us: u64) -> anyhow::Result<PacingResult> {
    let paced_dir = work.join("paced");
    let unpaced_dir = work.join("unpaced");
    let _paced_key = bins.virtkey(
        &paced_dir,
        "paced",
        &["--report-pacing-us", &pacing_us.to_string()],
    )?;
    let _unpaced_key = bins.virtkey(&unpaced_dir, "unpaced", &[])?;
    // The daemon's runtime shape: two workers.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let request = request()?;
    runtime.block_on(async {
        let paced_counters = Arc::new(Counters::default());
        let unpaced_counters = Arc::new(Counters::default());
        let (_r1, _t1, paced) = attach(&paced_dir, Arc::clone(&paced_counters)).await?;
        let (_r2, _t2, unpaced) = attach(&unpaced_dir, Arc::clone(&unpaced_counters)).await?;
        // Warm-up: the firmware's first makeCredential creates its key-encryption key.
        make_credential(&paced, &request).await?;
        make_credential(&unpaced, &request).await?;
        let mut paced_samples = Vec::new();
        let mut unpaced_samples = Vec::new();
        for _ in 0..runs {
            paced_samples.push(measure(&paced, &paced_counters, &request).await?);
            unpaced_samples.push(measure(&unpaced, &unpaced_counters, &request).await?);
        }
        let pacing = pacing_us as f64 / 1000.0;
        let per_run = |skip_keepalives: bool| {
            median(
                paced_samples
                    .iter()
                    .zip(&unpaced_samples)
                    .map(|(p, u)| {
                        let reports = if skip_keepalives {
                            p.from_key.saturating_sub(p.keepalives)
                        } else {
                            p.from_key
                        };
                        ms(p.wall) / (reports as f64 * pacing + ms(u.wall))
                    })
                    .collect(),
            )
        };
        let paced_ms = median(paced_samples.iter().map(|s| ms(s.wall)).collect());
        let unpaced_ms = median(unpaced_samples.iter().map(|s| ms(s.wall)).collect());
        let reports_from_key = median(paced_samples.iter().map(|s| s.from_key as f64).collect());
        Ok(PacingResult {
            runs,
            pacing_us,
            paced_ms,
            unpaced_ms,
            reports_from_key,
            keepalives: median(paced_samples.iter().map(|s| s.keepalives as f64).collect()),
            floor_ms: reports_from_key * pacing + unpaced_ms,
            ratio: per_run(false),
            ratio_without_keepalives: per_run(true),
        })
    })
}

async fn measure(
    authenticator: &Authenticator,
    counters: &Counters,
    request: &MakeCredential,
) -> anyhow::Result<Sample> {
    let from = counters.from_key.load(Ordering::SeqCst);
    let keepalives = counters.keepalives.load(Ordering::SeqCst);
    let started = Instant::now();
    make_credential(authenticator, request).await?;
    let wall = started.elapsed();
    Ok(Sample {
        wall,
        from_key: counters.from_key.load(Ordering::SeqCst) - from,
        keepalives: counters.keepalives.load(Ordering::SeqCst) - keepalives,
    })
}

/// ES256, no PIN, not resident: a registration without user verification.
fn request() -> anyhow::Result<MakeCredential> {
    Ok(MakeCredential::new(Request::new(
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
    ))?)
}

async fn make_credential(
    authenticator: &Authenticator,
    request: &MakeCredential,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let response = authenticator
        .make_credential(request, deadline)
        .result()
        .await
        .context("makeCredential")?;
    anyhow::ensure!(response.fmt == "packed", "format {:?}", response.fmt);
    Ok(())
}

/// The virtual transport on `dir` feeding a registry through a counting tap.
async fn attach(
    dir: &Path,
    counters: Arc<Counters>,
) -> anyhow::Result<(
    passkeyd::device::RegistryHandle,
    virt::VirtualTransport,
    Authenticator,
)> {
    let (transport_tx, transport_rx) = mpsc::channel(16);
    let transport = virt::spawn(
        VirtualConfig {
            dir: dir.to_owned(),
        },
        transport_tx,
    )?;
    let (registry_tx, registry_rx) = mpsc::channel(16);
    tokio::spawn(tap_events(transport_rx, registry_tx, counters));
    let registry = Registry::spawn(registry_rx, DeviceConfig::default());
    let mut subscription = registry.subscribe().await.context("registry stopped")?;
    let authenticator = tokio::time::timeout(crate::util::READY_DEADLINE, async {
        loop {
            match subscription.events.recv().await {
                Ok(RegistryEvent::Added(device)) => return Ok(device.authenticator),
                Ok(_) => {}
                Err(error) => return Err(error),
            }
        }
    })
    .await
    .context("the key was not found in time")??;
    Ok((registry, transport, authenticator))
}

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

fn tap(link: ReportLink, counters: Arc<Counters>) -> ReportLink {
    let ReportLink {
        tx: to_device,
        rx: mut from_device,
    } = link;
    let (tx, mut to_key) = mpsc::channel::<Report>(LINK_CAPACITY);
    let (from_key, rx) = mpsc::channel(LINK_CAPACITY);
    tokio::spawn(async move {
        while let Some(report) = to_key.recv().await {
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
