//! Parts 2 (in-process form) and 5: whole ceremonies through `Ceremonies` — the daemon's own
//! code (ceremony, registry, device actors, virtual transport, LoginID client) on a
//! two-worker runtime in this process, each key a `virtkey` process, LoginID the emulator
//! process — with 1, 2, 4, 8 keys enrolling in parallel.
//!
//! Each key gets its own stream of ceremonies (the request names the key, as a UI that lets
//! the user pick does), `per_key` after one warm-up each. CPU is read per process: this one
//! (the daemon's code), the virtkeys (firmware) and the emulator.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use passkeyd::ceremony::{Ceremonies, CeremonyConfig, CeremonyRequest};
use passkeyd::device::{DeviceConfig, Registry, RegistryEvent};
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig, Token};
use passkeyd::transport::virt::{self, VirtualConfig};
use passkeyd::transport::{DeviceId, Transport};
use tokio::sync::mpsc;
use url::Url;

use crate::util::{APP, Bins, Proc, median, ms, proc_cpu, process_cpu};

pub struct ScalePoint {
    pub keys: usize,
    pub ceremonies: usize,
    pub wall: Duration,
    pub per_second: f64,
    /// Median wall time of one ceremony.
    pub ceremony_ms: f64,
    /// CPU per ceremony: the daemon's code (this process).
    pub daemon_cpu_ms: f64,
    /// CPU per ceremony: the virtkey processes, all of it.
    pub firmware_cpu_ms: f64,
    /// CPU per ceremony the virtkeys spend anyway while idle (their 1 ms poll), measured over
    /// an idle second before the run and scaled to the run's wall time.
    pub firmware_idle_cpu_ms: f64,
    /// CPU per ceremony: the emulator process.
    pub emulator_cpu_ms: f64,
}

pub fn run(
    bins: &Bins,
    work: &Path,
    counts: &[usize],
    per_key: usize,
) -> anyhow::Result<Vec<ScalePoint>> {
    let (emulator, base_url) = bins.emulator(work, &APP)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let mut points = Vec::new();
    for &n in counts {
        let dir = work.join(format!("scale-{n}"));
        let mut keys = Vec::new();
        for i in 0..n {
            keys.push(bins.virtkey(&dir, &format!("k{i}"), &[])?);
        }
        let point = runtime.block_on(measure(&dir, &keys, &emulator, &base_url, n, per_key))?;
        eprintln!(
            "scale: {n} key(s): {} ceremonies in {:.2} s, {:.2}/s",
            point.ceremonies,
            point.wall.as_secs_f64(),
            point.per_second
        );
        points.push(point);
        drop(keys);
    }
    Ok(points)
}

async fn measure(
    dir: &Path,
    keys: &[Proc],
    emulator: &Proc,
    base_url: &Url,
    n: usize,
    per_key: usize,
) -> anyhow::Result<ScalePoint> {
    let (events_tx, events_rx) = mpsc::channel(64);
    let registry = Registry::spawn(events_rx, DeviceConfig::default());
    let mut subscription = registry.subscribe().await.context("registry stopped")?;
    let transport = virt::spawn(
        VirtualConfig {
            dir: dir.to_owned(),
        },
        events_tx,
    )?;
    tokio::time::timeout(crate::util::READY_DEADLINE, async {
        let mut added = 0;
        while added < n {
            if let RegistryEvent::Added(_) = subscription.events.recv().await? {
                added += 1;
            }
        }
        anyhow::Ok(())
    })
    .await
    .context("the keys were not all found in time")??;

    let mut client_config = LoginIdConfig::new(base_url.clone(), APP.app_id);
    client_config.allow_http_loopback = true;
    let client = LoginIdClient::new(client_config)?;
    let ceremonies = Ceremonies::new(
        registry.clone(),
        client.clone(),
        CeremonyConfig::new(Url::parse(APP.origin)?),
    )?;

    // The UI's backend fetches the grants; not the daemon's work, so before the clock starts.
    let api_key = ApiKey::new(APP.api_key);
    let mut grants: Vec<Vec<(String, Token)>> = Vec::new();
    for key in 0..n {
        let mut list = Vec::new();
        for i in 0..=per_key {
            let username = format!("scale-{n}-{key}-{i}@example.com");
            let grant = GrantRequest {
                grants: vec![scope::REG_WRITE.to_owned()],
                username: Some(username.clone()),
            };
            list.push((username, client.grant(&api_key, &grant).await?));
        }
        grants.push(list);
    }

    // Warm-up: one ceremony per key (the firmware's first makeCredential makes its KEK).
    let mut warm = Vec::new();
    for (key, list) in grants.iter_mut().enumerate() {
        let (username, token) = list.remove(0);
        warm.push(tokio::spawn(ceremony(
            ceremonies.clone(),
            key,
            username,
            token,
        )));
    }
    for task in warm {
        task.await??;
    }

    // The keys' idle polling, for scale.
    let key_pids: Vec<u32> = keys.iter().map(Proc::pid).collect();
    let keys_cpu = || key_pids.iter().map(|&pid| proc_cpu(pid)).sum::<Duration>();
    let idle_before = keys_cpu();
    let idle_window = Duration::from_secs(1);
    tokio::time::sleep(idle_window).await;
    let idle_rate = (keys_cpu() - idle_before).as_secs_f64() / idle_window.as_secs_f64();

    let cpu_before = process_cpu();
    let keys_before = keys_cpu();
    let emulator_before = proc_cpu(emulator.pid());
    let started = Instant::now();
    let mut streams = Vec::new();
    for (key, list) in grants.into_iter().enumerate() {
        let ceremonies = ceremonies.clone();
        streams.push(tokio::spawn(async move {
            let mut walls = Vec::new();
            for (username, token) in list {
                walls.push(ceremony(ceremonies.clone(), key, username, token).await?);
            }
            anyhow::Ok(walls)
        }));
    }
    let mut walls = Vec::new();
    for stream in streams {
        walls.extend(stream.await??);
    }
    let wall = started.elapsed();
    let daemon_cpu = process_cpu() - cpu_before;
    let firmware_cpu = keys_cpu() - keys_before;
    let emulator_cpu = proc_cpu(emulator.pid()) - emulator_before;
    let count = walls.len();
    drop(ceremonies);
    drop(transport);
    drop(registry);
    let per = |d: Duration| ms(d) / count as f64;
    Ok(ScalePoint {
        keys: n,
        ceremonies: count,
        wall,
        per_second: count as f64 / wall.as_secs_f64(),
        ceremony_ms: median(walls.into_iter().map(ms).collect()),
        daemon_cpu_ms: per(daemon_cpu),
        firmware_cpu_ms: per(firmware_cpu),
        firmware_idle_cpu_ms: idle_rate * wall.as_secs_f64() * 1000.0 / count as f64,
        emulator_cpu_ms: per(emulator_cpu),
    })
}

/// One ceremony on key `k{key}`; its wall time.
async fn ceremony(
    ceremonies: Ceremonies,
    key: usize,
    username: String,
    token: Token,
) -> anyhow::Result<Duration> {
    let started = Instant::now();
    let mut request = CeremonyRequest::new(username, Some(token));
    request.authenticator = Some(DeviceId::new(Transport::Virtual, &format!("k{key}")));
    let mut ceremony = ceremonies.start(request)?;
    while ceremony.next().await.is_some() {}
    ceremony.result().await.context("ceremony")?;
    Ok(started.elapsed())
}
