//! Benchmark (not a test): full ceremonies against an auto-touch virtual key (the Trussed
//! firmware, in-process) and the LoginID emulator on 127.0.0.1.
//!
//! `cargo bench -p passkeyd --bench ceremony` (`PASSKEYD_BENCH_N` ceremonies per scenario,
//! default 40, after 3 warm-up ones). Reported per ceremony: median and 90th-percentile wall
//! time; CPU time of the daemon's own code (the ceremony, the registry, the device actor, the
//! LoginID client: everything on the daemon's runtime thread), of the firmware (the virtual
//! key's threads), of the emulator (its own runtime thread) and of the test bridge; and the
//! wall time up to `registering` (reg/init, key work) and after it (reg/complete, token
//! check). The firmware and the emulator are CPU-bound here (auto touch, loopback), so their
//! CPU time is their share of the wall time.
//!
//! CPU times come from `/proc/self/task/*/stat` (USER_HZ = 100 ticks per second, the Linux
//! ABI value), summed over all measured ceremonies.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    missing_docs,
    unreachable_pub,
    dead_code
)]

#[path = "../tests/device_support/mod.rs"]
mod device_support;

use std::collections::BTreeMap;
use std::time::Duration;

use device_support::{HidBridge, Rig as DeviceRig};
use loginid_emulator::{Emulator, EmulatorConfig, ResidentKey, UserVerification};
use passkeyd::ceremony::{Ceremonies, CeremonyConfig, CeremonyRequest, Progress};
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig};
use passkeyd::transport::Transport;
use tokio::sync::oneshot;
use tokio::time::Instant;
use url::Url;
use virtkey::Config;
use zeroize::Zeroizing;

const APP_ID: &str = "7e1f0000-bench-0000-0000-000000000000";
const ORIGIN: &str = "https://example.com";
const RP_ID: &str = "example.com";
const API_KEY: &str = "bench-api-key-0123456789abcdef";
const USER_HZ: f64 = 100.0;
const WARM_UP: usize = 3;

/// Which threads a CPU tick belongs to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Part {
    Daemon,
    Firmware,
    Emulator,
    Rig,
}

/// CPU ticks per part, from `/proc/self/task/*/stat`.
fn cpu_ticks() -> BTreeMap<Part, u64> {
    let pid = std::process::id().to_string();
    let mut ticks = BTreeMap::new();
    for task in std::fs::read_dir("/proc/self/task").unwrap().flatten() {
        let tid = task.file_name().to_string_lossy().into_owned();
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = &stat[open + 1..close];
        let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
        // Fields 14 and 15 of proc(5): utime and stime; index 0 here is field 3.
        let used: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
        let part = if tid == pid || comm.starts_with("tokio-runtime") {
            Part::Daemon
        } else if comm.starts_with("virtkey") {
            Part::Firmware
        } else if comm.starts_with("emulator") {
            Part::Emulator
        } else {
            Part::Rig
        };
        *ticks.entry(part).or_default() += used;
    }
    ticks
}

/// The emulator on a runtime thread of its own, so that its CPU time is its own.
fn start_emulator(
    configure: impl FnOnce(&mut EmulatorConfig) + Send + 'static,
) -> (Url, oneshot::Sender<()>) {
    let (url_tx, url_rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    std::thread::Builder::new()
        .name("emulator".into())
        .spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let mut config =
                    EmulatorConfig::new(APP_ID, Url::parse(ORIGIN).unwrap(), RP_ID, API_KEY);
                configure(&mut config);
                let emulator = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
                    .await
                    .unwrap();
                url_tx.send(emulator.base_url()).unwrap();
                let _ = stop_rx.await;
            });
        })
        .unwrap();
    (url_rx.recv().unwrap(), stop_tx)
}

struct Sample {
    wall: Duration,
    to_registering: Duration,
    after_registering: Duration,
}

fn median(mut values: Vec<Duration>) -> Duration {
    values.sort();
    values[values.len() / 2]
}

fn percentile(mut values: Vec<Duration>, p: usize) -> Duration {
    values.sort();
    values[(values.len() * p / 100).min(values.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

async fn scenario(name: &str, n: usize, pin: Option<&str>) {
    let uv = if pin.is_some() {
        UserVerification::Required
    } else {
        UserVerification::Discouraged
    };
    let (base_url, stop_emulator) = start_emulator(move |config| {
        config.user_verification = uv;
        // Server-side credentials: the firmware's storage would fill up with hundreds of
        // discoverable ones.
        config.resident_key = ResidentKey::Discouraged;
        config.grant_ttl = Duration::from_secs(3600);
    });
    let mut client_config = LoginIdConfig::new(base_url, APP_ID);
    client_config.allow_http_loopback = true;
    let client = LoginIdClient::new(client_config).unwrap();
    let mut devices = DeviceRig::start().await;
    let (_bridge, connection) = HidBridge::start(Config {
        pin: pin.map(str::to_owned),
        ..Config::default()
    });
    devices.plug("bench", Transport::Virtual, connection).await;
    devices.added().await;
    let ceremonies = Ceremonies::new(
        devices.registry.clone(),
        client.clone(),
        CeremonyConfig::new(Url::parse(ORIGIN).unwrap()),
    )
    .unwrap();
    let api_key = ApiKey::new(API_KEY);

    // The UI's backend gets the grants; not part of the daemon's ceremony, so all of them
    // are fetched before the measurement.
    let mut tokens = Vec::new();
    for i in 0..WARM_UP + n {
        let username = format!("bench-{i}@example.com");
        let grant = GrantRequest {
            grants: vec![scope::REG_WRITE.to_owned()],
            username: Some(username.clone()),
        };
        tokens.push((username, client.grant(&api_key, &grant).await.unwrap()));
    }

    let mut samples = Vec::new();
    let mut before = BTreeMap::new();
    for (i, (username, token)) in tokens.into_iter().enumerate() {
        if i == WARM_UP {
            before = cpu_ticks();
        }
        let mut request = CeremonyRequest::new(username, Some(token));
        request.pin = pin.map(|p| Zeroizing::new(p.to_owned()));
        let started = Instant::now();
        let mut ceremony = ceremonies.start(request).unwrap();
        let mut registering = None;
        while let Some(step) = ceremony.next().await {
            if matches!(step, Progress::Registering { .. }) {
                registering = Some(Instant::now());
            }
        }
        ceremony.result().await.unwrap();
        let wall = started.elapsed();
        let registering = registering.unwrap();
        if i >= WARM_UP {
            samples.push(Sample {
                wall,
                to_registering: registering - started,
                after_registering: started + wall - registering,
            });
        }
    }
    let after = cpu_ticks();
    let _ = stop_emulator.send(());

    let cpu = |part: Part| {
        let used = after.get(&part).copied().unwrap_or(0) - before.get(&part).copied().unwrap_or(0);
        used as f64 / USER_HZ * 1000.0 / n as f64
    };
    println!("scenario: {name} ({n} ceremonies after {WARM_UP} warm-up)");
    println!(
        "  wall per ceremony: median {:.1} ms, p90 {:.1} ms",
        ms(median(samples.iter().map(|s| s.wall).collect())),
        ms(percentile(samples.iter().map(|s| s.wall).collect(), 90)),
    );
    println!(
        "  wall split (median): start -> registering {:.1} ms, registering -> completed {:.1} ms",
        ms(median(samples.iter().map(|s| s.to_registering).collect())),
        ms(median(
            samples.iter().map(|s| s.after_registering).collect()
        )),
    );
    println!(
        "  CPU per ceremony: daemon {:.1} ms, firmware {:.1} ms, emulator {:.1} ms, bridge {:.1} ms",
        cpu(Part::Daemon),
        cpu(Part::Firmware),
        cpu(Part::Emulator),
        cpu(Part::Rig),
    );
}

fn main() {
    let n = std::env::var("PASSKEYD_BENCH_N")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40);
    // The daemon's side on one thread, so that its CPU time is measured apart.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        scenario("touch only (UV discouraged, no PIN)", n, None).await;
        scenario("UV required, PIN given unattended", n, Some("1234")).await;
    });
}
