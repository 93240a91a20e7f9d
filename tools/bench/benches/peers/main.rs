//! passkeyd against its peers and the daemon's own costs, in one run: run it with
//! `tools/bench/run` (which builds the binaries, makes the python-fido2 venv and calls this
//! with `--bin-dir`, `--python`, `--out`). Prints a table and writes `BENCHMARKS.md`.
//!
//! 1. CTAP client cost on one virtual key: passkeyd's device layer vs python-fido2 vs
//!    libwebauthn ([`clients`]).
//! 2. Daemon overhead per ceremony and its split into daemon, firmware and emulator
//!    ([`scale`] with one key).
//! 3. Idle cost with four keys ([`idle`]).
//! 4. Start-up ([`startup`]).
//! 5. Scale: 1, 2, 4, 8 keys enrolling in parallel ([`scale`]).
//! 6. Paced transport against its floor ([`pacing`]).
//!
//! Medians of repeated runs; nothing asserts an absolute time.

#![allow(
    clippy::print_stdout,
    clippy::print_stderr,
    missing_docs,
    unreachable_pub
)]

mod bus;
mod clients;
mod idle;
mod overbus;
mod pacing;
mod report;
mod scale;
mod service;
mod startup;
mod util;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};

use crate::util::{Bins, Samples};

/// What the command line sets.
pub struct Args {
    pub bins: Bins,
    pub python: PathBuf,
    pub script: PathBuf,
    pub out: Option<PathBuf>,
    /// Rounds per client and repetition (part 1).
    pub rounds: usize,
    /// Repetitions of each client (part 1), in rotated order.
    pub repeats: usize,
    pub idle_secs: u64,
    pub pacing_runs: usize,
    pub scale_per_key: usize,
    pub startups: usize,
    pub command: String,
    /// Only these parts (1 to 6); all when empty. For working on one part: BENCHMARKS.md
    /// needs them all.
    pub parts: Vec<u8>,
    /// Only these clients in part 1 (names as in the table); all when empty.
    pub clients: Vec<String>,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut bin_dir = None;
    let mut python = None;
    let mut script = None;
    let mut out = None;
    let mut rounds = 20;
    let mut repeats = 3;
    let mut idle_secs = 60;
    let mut pacing_runs = 20;
    let mut scale_per_key = 12;
    let mut startups = 15;
    let mut command = "tools/bench/run".to_owned();
    let mut parts = Vec::new();
    let mut only_clients = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().with_context(|| format!("{name} needs a value"));
        match arg.as_str() {
            "--bench" => {}
            "--bin-dir" => bin_dir = Some(PathBuf::from(value("--bin-dir")?)),
            "--python" => python = Some(PathBuf::from(value("--python")?)),
            "--script" => script = Some(PathBuf::from(value("--script")?)),
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--rounds" => rounds = value("--rounds")?.parse()?,
            "--repeats" => repeats = value("--repeats")?.parse()?,
            "--idle-secs" => idle_secs = value("--idle-secs")?.parse()?,
            "--pacing-runs" => pacing_runs = value("--pacing-runs")?.parse()?,
            "--scale-per-key" => scale_per_key = value("--scale-per-key")?.parse()?,
            "--startups" => startups = value("--startups")?.parse()?,
            "--command" => command = value("--command")?,
            "--clients" => {
                only_clients.extend(value("--clients")?.split(',').map(str::to_owned));
            }
            "--parts" => {
                for part in value("--parts")?.split(',') {
                    parts.push(part.trim().parse()?);
                }
            }
            other => bail!("unexpected argument {other:?}"),
        }
    }
    let (Some(bin_dir), Some(python), Some(script)) = (bin_dir, python, script) else {
        bail!("--bin-dir, --python and --script are required (tools/bench/run passes them)");
    };
    if rounds == 0
        || repeats == 0
        || idle_secs == 0
        || pacing_runs == 0
        || scale_per_key == 0
        || startups == 0
    {
        bail!("counts must be at least 1");
    }
    Ok(Args {
        bins: Bins { dir: bin_dir },
        python,
        script,
        out,
        rounds,
        repeats,
        idle_secs,
        pacing_runs,
        scale_per_key,
        startups,
        command,
        parts,
        clients: only_clients,
    })
}

/// Part 1's samples per client, in the table's order.
pub struct ClientRuns {
    pub clients: Vec<(&'static str, Samples)>,
}

fn merge(into: &mut Samples, from: Samples) {
    for (name, mut values) in from {
        into.entry(name).or_default().append(&mut values);
    }
}

fn part1(args: &Args, work: &std::path::Path) -> anyhow::Result<ClientRuns> {
    let dir = work.join("peer-key");
    let _key = args
        .bins
        .virtkey(&dir, "peer", &["--pin", clients::PIN, "--touch", "auto"])?;
    let socket = clients::socket_path(&dir);
    let names: Vec<&'static str> = [
        report::PASSKEYD,
        report::PASSKEYD_MT,
        report::PYTHON_FIDO2,
        report::LIBWEBAUTHN,
    ]
    .into_iter()
    .filter(|name| args.clients.is_empty() || args.clients.iter().any(|c| c == name))
    .collect();
    let mut all: Vec<Samples> = names.iter().map(|_| Samples::new()).collect();
    let warm_up = 2;
    for repeat in 0..args.repeats {
        for i in 0..names.len() {
            // Rotated, so that no client always follows the same one.
            let which = (i + repeat) % names.len();
            eprintln!(
                "clients: repetition {} of {}: {}",
                repeat + 1,
                args.repeats,
                names[which]
            );
            let samples = match names[which] {
                report::PASSKEYD => clients::passkeyd(&dir, args.rounds, warm_up, 0)?,
                report::PASSKEYD_MT => clients::passkeyd(&dir, args.rounds, warm_up, 2)?,
                report::PYTHON_FIDO2 => clients::python_fido2(
                    &args.python,
                    &args.script,
                    &socket,
                    args.rounds,
                    warm_up,
                )?,
                _ => clients::libwebauthn(&socket, args.rounds, warm_up)?,
            };
            merge(&mut all[which], samples);
            // The key accepts the next client once it has seen the last one go.
            std::thread::sleep(Duration::from_millis(300));
        }
    }
    Ok(ClientRuns {
        clients: names.into_iter().zip(all).collect(),
    })
}

fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("--serve") {
        return service::serve_main(std::env::args().skip(2));
    }
    let args = parse_args()?;
    let work = tempfile::Builder::new()
        .prefix("passkeyd-bench-")
        .tempdir()?;
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    eprintln!("machine: {cores} cores");

    let want = |part: u8| args.parts.is_empty() || args.parts.contains(&part);
    let clients = if want(1) {
        Some(part1(&args, work.path())?)
    } else {
        None
    };
    let pacing = if want(6) {
        eprintln!("pacing: {} runs", args.pacing_runs);
        Some(pacing::run(
            &args.bins,
            work.path(),
            args.pacing_runs,
            1000,
        )?)
    } else {
        None
    };
    let scale = if want(2) || want(5) {
        eprintln!(
            "scale: 1, 2, 4, 8 keys, {} ceremonies per key",
            args.scale_per_key
        );
        scale::run(&args.bins, work.path(), &[1, 2, 4, 8], args.scale_per_key)?
    } else {
        Vec::new()
    };
    let bus = bus::PrivateBus::start(work.path())?;
    let host = service::Host::detect(&args.bins);
    eprintln!("the daemon: {}", host.describe());
    let over_bus = if want(2) || want(4) || want(5) {
        Some(overbus::run(
            &args.bins,
            work.path(),
            &bus,
            host,
            &[1, 2, 4, 8],
            args.scale_per_key,
            args.startups,
        )?)
    } else {
        None
    };
    let idle = if want(3) {
        eprintln!("idle: {} s", args.idle_secs);
        Some(idle::run(
            &args.bins,
            work.path(),
            host,
            &bus.address,
            args.idle_secs,
        )?)
    } else {
        None
    };
    let results = report::Results {
        cores,
        clients,
        pacing,
        scale,
        over_bus,
        idle,
    };
    let text = report::render(&args, &results);
    println!("{text}");
    if let Some(out) = &args.out {
        std::fs::write(out, &text).with_context(|| format!("writing {}", out.display()))?;
        eprintln!("wrote {}", out.display());
    }
    Ok(())
}
