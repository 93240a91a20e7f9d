//! Soak: many ceremonies through `passkeyd` on D-Bus, or through the daemon's own stack
//! (device registry, virtual-key transport, LoginID client, `Ceremonies`) in this process,
//! against `virtkey` processes and a `loginid-emulator` process; prints resident memory, open file
//! descriptors and live tasks at the start, after the warm-up and at the end, the rate and
//! the failures, and exits 1 when a bound is broken. `scripts/soak` starts the keys and the
//! emulator and runs this; see `docs/soak.md`.
//!
//! ```text
//! soak --ceremonies N --keys K --loginid URL --app-id ID --api-key-file F [--warmup W]
//!      [--pin PIN] (--bus ADDR --daemon-pid PID [--service NAME] | --keys-dir DIR [--origin URL])
//! ```
//!
//! With `--bus`, the ceremonies go through a running `passkeyd` over D-Bus
//! (CreatePasskey, the signals, Result, Release) and the figures are that process's; its
//! live ceremonies are `Manager1.Ceremonies`.

#![allow(clippy::print_stdout, clippy::print_stderr)]

mod daemon;
mod driver;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use clap::Parser;
use passkeyd::ceremony::{Ceremonies, CeremonyConfig};
use passkeyd::device::{DeviceConfig, Registry, RegistryEvent};
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig};
use passkeyd::transport::virt::{self, VirtualConfig, VirtualTransport};
use tokio::sync::mpsc;
use url::Url;

use driver::{Grant, InProcess, LiveCeremonies, Soak, SoakKey, Target};

/// Many ceremonies against virtual keys and the LoginID emulator, with resource figures.
#[derive(Parser)]
struct Args {
    /// Ceremonies in all, warm-up included.
    #[arg(long)]
    ceremonies: usize,
    /// Ceremonies before the "after warm-up" figures (default: a tenth, at most 500).
    #[arg(long)]
    warmup: Option<usize>,
    /// In-process mode: the directory of the `virtkey` sockets, watched by the daemon's
    /// stack in this process.
    #[arg(long, conflicts_with = "bus", required_unless_present = "bus")]
    keys_dir: Option<PathBuf>,
    /// Daemon mode: the D-Bus address where `passkeyd` serves.
    #[arg(long, requires = "daemon_pid")]
    bus: Option<String>,
    /// Daemon mode: `passkeyd`'s process id, for its figures.
    #[arg(long)]
    daemon_pid: Option<u32>,
    /// Daemon mode: the service's bus name.
    #[arg(long, default_value = "org.passkeyd")]
    service: String,
    /// How many keys to wait for; one ceremony runs on each at a time.
    #[arg(long)]
    keys: usize,
    /// The PIN of the keys that have one (given unattended).
    #[arg(long)]
    pin: Option<String>,
    /// The LoginID (emulator) base URL.
    #[arg(long)]
    loginid: Url,
    /// The LoginID application id.
    #[arg(long)]
    app_id: String,
    /// A file holding the application's API key (for `mgmt/grant`).
    #[arg(long)]
    api_key_file: PathBuf,
    /// The origin ceremonies register from (in-process mode; the daemon has its own).
    #[arg(long, default_value = "https://soak.example.com")]
    origin: Url,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // Like passkeyd: a two-worker runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let report = runtime.block_on(soak(args))?;
    println!("{report}");
    let violations = report.violations();
    if violations.is_empty() {
        println!("soak: every bound held");
        Ok(())
    } else {
        for violation in &violations {
            eprintln!("soak: {violation}");
        }
        std::process::exit(1)
    }
}

async fn soak(args: Args) -> anyhow::Result<driver::Report> {
    if args.ceremonies == 0 {
        bail!("--ceremonies must be at least 1");
    }
    let mut config = LoginIdConfig::new(args.loginid.clone(), args.app_id.clone());
    config.allow_http_loopback = true;
    let client = LoginIdClient::new(config)?;
    let api_key = std::fs::read_to_string(&args.api_key_file)
        .with_context(|| format!("reading {}", args.api_key_file.display()))?;
    let api_key = ApiKey::new(api_key.trim_end().to_owned());
    let grant: Grant = {
        let client = client.clone();
        Arc::new(move |username| {
            let client = client.clone();
            let api_key = api_key.clone();
            Box::pin(async move {
                let request = GrantRequest {
                    grants: vec![scope::REG_WRITE.to_owned()],
                    username: Some(username),
                };
                client.grant(&api_key, &request).await.ok()
            })
        })
    };
    // The in-process transport stops when dropped: it lives until the end.
    let (target, keys, _transport): (Arc<dyn Target>, Vec<SoakKey>, Option<VirtualTransport>) =
        match (&args.bus, &args.keys_dir) {
            (Some(address), _) => {
                let pid = args
                    .daemon_pid
                    .context("--daemon-pid is required with --bus")?;
                let (target, keys) = daemon::Daemon::connect(
                    address,
                    &args.service,
                    pid,
                    args.keys,
                    args.pin.clone(),
                )
                .await?;
                (Arc::new(target), keys, None)
            }
            (None, Some(dir)) => {
                let (target, keys, transport) = in_process(&args, dir, client).await?;
                (target, keys, Some(transport))
            }
            (None, None) => bail!("--keys-dir or --bus is required"),
        };
    if keys.iter().any(|k| k.pin.is_none()) && args.pin.is_some() {
        eprintln!(
            "soak: {} of {} keys without a PIN",
            keys.iter().filter(|k| k.pin.is_none()).count(),
            keys.len()
        );
    }
    let soak = Soak {
        ceremonies: args.ceremonies,
        warmup: args.warmup.unwrap_or((args.ceremonies / 10).clamp(1, 500)),
        keys,
        run: format!("{:08x}", rand::random::<u32>()),
        ceremony_deadline: Duration::from_secs(120),
    };
    eprintln!(
        "soak: {} ceremonies ({} warm-up) on {} keys, {}",
        soak.ceremonies,
        soak.warmup,
        soak.keys.len(),
        if args.bus.is_some() {
            "through passkeyd on D-Bus"
        } else {
            "in this process"
        }
    );
    Ok(driver::run(target, &grant, &soak).await)
}

/// The daemon's stack in this process, on the keys in `dir`.
async fn in_process(
    args: &Args,
    dir: &std::path::Path,
    client: LoginIdClient,
) -> anyhow::Result<(Arc<dyn Target>, Vec<SoakKey>, VirtualTransport)> {
    let counter = LiveCeremonies::default();
    counter.install();
    let (events_tx, events_rx) = mpsc::channel(64);
    let registry = Registry::spawn(events_rx, DeviceConfig::default());
    let mut subscription = registry.subscribe().await.context("registry stopped")?;
    let transport = virt::spawn(
        VirtualConfig {
            dir: dir.to_owned(),
        },
        events_tx,
    )?;
    let mut keys = Vec::new();
    tokio::time::timeout(Duration::from_secs(120), async {
        while keys.len() < args.keys {
            if let Ok(RegistryEvent::Added(info)) = subscription.events.recv().await {
                let has_pin = info.info.as_ref().is_some_and(|i| i.client_pin().is_on());
                keys.push(SoakKey {
                    id: info.id().clone(),
                    pin: if has_pin { args.pin.clone() } else { None },
                });
            }
        }
    })
    .await
    .with_context(|| format!("{} of {} keys appeared", keys.len(), args.keys))?;
    let ceremonies = Ceremonies::new(
        registry.clone(),
        client,
        CeremonyConfig::new(args.origin.clone()),
    )?;
    let target = InProcess {
        ceremonies,
        registry,
        counter,
    };
    Ok((Arc::new(target), keys, transport))
}
