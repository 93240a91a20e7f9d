//! Parts 2, 4 and 5 against the daemon process over D-Bus, as a UI uses it: a private bus,
//! the daemon ([`Host`]), `virtkey` processes and the emulator process; the harness is the
//! UI (one connection per key stream, so that the per-caller limit of 2 running ceremonies
//! does not serialize them). CPU per process from `/proc/PID/task/*/schedstat`.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use dbus::blocking::stdintf::org_freedesktop_dbus::Properties as _;
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig};

use crate::bus::{BUS_NAME, PrivateBus, Ui, connect, time_to_name};
use crate::scale::ScalePoint;
use crate::service::Host;
use crate::startup::StartupResult;
use crate::util::{APP, Bins, Proc, READY_DEADLINE, median, ms, proc_cpu};

pub struct BusResults {
    pub host: Host,
    pub startup: StartupResult,
    pub scale: Vec<ScalePoint>,
}

pub fn run(
    bins: &Bins,
    work: &Path,
    bus: &PrivateBus,
    host: Host,
    counts: &[usize],
    per_key: usize,
    starts: usize,
) -> anyhow::Result<BusResults> {
    let emulator_dir = work.join("bus-emulator");
    std::fs::create_dir_all(&emulator_dir)?;
    let (emulator, loginid) = bins.emulator(&emulator_dir, &APP)?;

    // Part 4: exec to the name being owned, no keys.
    let empty = work.join("bus-startup-keys");
    std::fs::create_dir_all(&empty)?;
    let watcher = connect(&bus.address)?;
    let mut samples = Vec::new();
    for i in 0..starts {
        let log = work.join(format!("bus-startup-{i}.log"));
        let (elapsed, mut proc) = time_to_name(
            &watcher,
            BUS_NAME,
            || host.spawn(bins, work, &bus.address, &empty, &loginid, &log),
            |proc: &mut Proc| proc.check_alive(),
        )?;
        samples.push(ms(elapsed));
        proc.stop();
    }
    let startup = StartupResult {
        starts,
        median_ms: median(samples.clone()),
        min_ms: samples.iter().copied().fold(f64::INFINITY, f64::min),
        max_ms: samples.iter().copied().fold(0.0, f64::max),
        ready: "`org.passkeyd` owned on the bus (NameOwnerChanged, private dbus-daemon)",
    };

    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let mut client_config = LoginIdConfig::new(loginid.clone(), APP.app_id);
    client_config.allow_http_loopback = true;
    let client = LoginIdClient::new(client_config)?;
    let api_key = ApiKey::new(APP.api_key);

    let mut scale = Vec::new();
    for &n in counts {
        let dir = work.join(format!("bus-scale-{n}"));
        let mut keys = Vec::new();
        for i in 0..n {
            keys.push(bins.virtkey(&dir, &format!("k{i}"), &[])?);
        }
        let log = work.join(format!("bus-scale-{n}.log"));
        let (_, mut daemon) = time_to_name(
            &watcher,
            BUS_NAME,
            || host.spawn(bins, work, &bus.address, &dir, &loginid, &log),
            |proc: &mut Proc| proc.check_alive(),
        )?;
        wait_for_authenticators(&watcher, n, &mut daemon)?;

        // The UI's backend fetches the grants before the clock starts.
        let mut grants: Vec<Vec<(String, String)>> = Vec::new();
        for key in 0..n {
            let mut list = Vec::new();
            for i in 0..=per_key {
                let username = format!("bus-{n}-{key}-{i}@example.com");
                let grant = GrantRequest {
                    grants: vec![scope::REG_WRITE.to_owned()],
                    username: Some(username.clone()),
                };
                let token = runtime.block_on(client.grant(&api_key, &grant))?;
                list.push((username, token.expose().to_owned()));
            }
            grants.push(list);
        }
        let run_streams = |streams: Vec<Vec<(String, String)>>| -> anyhow::Result<Vec<Duration>> {
            let handles: Vec<_> = streams
                .into_iter()
                .enumerate()
                .map(|(key, list)| {
                    let address = bus.address.clone();
                    std::thread::spawn(move || -> anyhow::Result<Vec<Duration>> {
                        let ui = Ui::new(connect(&address)?)?;
                        let path = format!("/org/passkeyd/authenticator/virtual_k{key}");
                        list.iter()
                            .map(|(user, token)| ui.ceremony(user, token, Some(&path)))
                            .collect()
                    })
                })
                .collect();
            let mut walls = Vec::new();
            for handle in handles {
                walls.extend(
                    handle
                        .join()
                        .map_err(|_| anyhow::anyhow!("a UI thread panicked"))??,
                );
            }
            Ok(walls)
        };
        let warm: Vec<_> = grants.iter_mut().map(|list| vec![list.remove(0)]).collect();
        run_streams(warm).context("warm-up ceremonies")?;

        let key_pids: Vec<u32> = keys.iter().map(Proc::pid).collect();
        let keys_cpu = || key_pids.iter().map(|&pid| proc_cpu(pid)).sum::<Duration>();
        let idle_before = keys_cpu();
        std::thread::sleep(Duration::from_secs(1));
        let idle_rate = (keys_cpu() - idle_before).as_secs_f64();

        let daemon_before = proc_cpu(daemon.pid());
        let keys_before = keys_cpu();
        let emulator_before = proc_cpu(emulator.pid());
        let started = Instant::now();
        let walls = run_streams(grants)?;
        let wall = started.elapsed();
        let daemon_cpu = proc_cpu(daemon.pid()) - daemon_before;
        let firmware_cpu = keys_cpu() - keys_before;
        let emulator_cpu = proc_cpu(emulator.pid()) - emulator_before;
        daemon.check_alive()?;
        let count = walls.len();
        let per = |d: Duration| ms(d) / count as f64;
        let point = ScalePoint {
            keys: n,
            ceremonies: count,
            wall,
            per_second: count as f64 / wall.as_secs_f64(),
            ceremony_ms: median(walls.into_iter().map(ms).collect()),
            daemon_cpu_ms: per(daemon_cpu),
            firmware_cpu_ms: per(firmware_cpu),
            firmware_idle_cpu_ms: idle_rate * wall.as_secs_f64() * 1000.0 / count as f64,
            emulator_cpu_ms: per(emulator_cpu),
        };
        eprintln!(
            "over D-Bus: {n} key(s): {count} ceremonies in {:.2} s, {:.2}/s, daemon CPU {:.2} ms each",
            wall.as_secs_f64(),
            point.per_second,
            point.daemon_cpu_ms
        );
        scale.push(point);
        daemon.stop();
        drop(keys);
    }
    drop(emulator);
    Ok(BusResults {
        host,
        startup,
        scale,
    })
}

/// Until `Manager1.Authenticators` lists `n` keys.
fn wait_for_authenticators(
    conn: &dbus::blocking::Connection,
    n: usize,
    daemon: &mut Proc,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + READY_DEADLINE;
    let manager = conn.with_proxy(BUS_NAME, "/org/passkeyd", Duration::from_secs(5));
    loop {
        let listed: Vec<dbus::Path<'static>> =
            manager.get("org.passkeyd.Manager1", "Authenticators")?;
        if listed.len() >= n {
            return Ok(());
        }
        daemon.check_alive()?;
        anyhow::ensure!(Instant::now() < deadline, "{n} keys not listed in time");
        std::thread::sleep(Duration::from_millis(20));
    }
}
