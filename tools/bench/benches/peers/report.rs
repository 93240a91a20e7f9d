//! The table, as Markdown: printed and written to `BENCHMARKS.md`.

use std::fmt::Write as _;

use crate::clients::OPERATIONS;
use crate::idle::IdleResult;
use crate::pacing::PacingResult;
use crate::scale::ScalePoint;
use crate::startup::StartupResult;
use crate::util::{Samples, median, ms};
use crate::{Args, ClientRuns};

pub const PASSKEYD: &str = "passkeyd";
pub const PASSKEYD_MT: &str = "passkeyd (2 workers)";
pub const PYTHON_FIDO2: &str = "python-fido2";
pub const LIBWEBAUTHN: &str = "libwebauthn";

pub struct Results {
    pub cores: usize,
    pub clients: Option<ClientRuns>,
    pub pacing: Option<PacingResult>,
    pub scale: Vec<ScalePoint>,
    pub over_bus: Option<crate::overbus::BusResults>,
    pub idle: Option<IdleResult>,
}

fn wall_ms(samples: &Samples, op: &str) -> f64 {
    median(
        samples
            .get(op)
            .map_or_else(Vec::new, |v| v.iter().map(|s| ms(s.wall)).collect()),
    )
}

fn cpu_ms(samples: &Samples, op: &str) -> f64 {
    median(
        samples
            .get(op)
            .map_or_else(Vec::new, |v| v.iter().map(|s| ms(s.cpu)).collect()),
    )
}

fn count(samples: &Samples, op: &str) -> usize {
    samples.get(op).map_or(0, Vec::len)
}

fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|text| {
            text.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|s| s.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".to_owned())
}

fn kernel() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn yes(met: bool) -> &'static str {
    if met { "met" } else { "**missed**" }
}

pub fn render(args: &Args, r: &Results) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(w, "# Benchmarks\n");
    let _ = writeln!(
        w,
        "One run of `{}` on this machine: **{} cores** ({}), Linux {}. Every figure is a \
         median of repeated runs; the harness asserts nothing about absolute times. How each \
         figure is taken, and why a target is missed, is below the tables.\n",
        args.command,
        r.cores,
        cpu_model(),
        kernel()
    );
    let mut targets = Vec::new();
    if let Some(clients) = &r.clients {
        part1(w, args, clients, &mut targets);
    }
    let bus_one = r.over_bus.as_ref().and_then(|b| b.scale.first());
    if bus_one.is_some() || !r.scale.is_empty() {
        part2(w, r, bus_one, r.scale.first(), &mut targets);
    }
    if let Some(i) = &r.idle {
        part3(w, i, &mut targets);
    }
    if let Some(b) = &r.over_bus {
        part4(w, Some(&b.startup), None, &mut targets);
    }
    if let Some(b) = &r.over_bus {
        part5(
            w,
            args,
            "over D-Bus, the daemon in its own process",
            &b.scale,
            Some(&mut targets),
        );
    }
    if !r.scale.is_empty() {
        let targets = if r.over_bus.is_some() {
            None
        } else {
            Some(&mut targets)
        };
        part5(
            w,
            args,
            "in-process through `Ceremonies` (no D-Bus)",
            &r.scale,
            targets,
        );
    }
    if let Some(p) = &r.pacing {
        part6(w, p, &mut targets);
    }
    let _ = writeln!(w, "\n## Targets\n");
    let _ = writeln!(w, "| target | measured | |");
    let _ = writeln!(w, "|---|---|---|");
    for (target, measured, met) in targets {
        let _ = writeln!(w, "| {target} | {measured} | {} |", yes(met));
    }
    let _ = writeln!(w, "\n{}", NOTES.trim());
    out
}

type Targets = Vec<(&'static str, String, bool)>;

fn part1(w: &mut String, args: &Args, clients: &ClientRuns, targets: &mut Targets) {
    let Some((_, passkeyd)) = clients.clients.first() else {
        return;
    };
    let _ = writeln!(
        w,
        "## 1. CTAP client cost, same virtual key, same operations\n"
    );
    let _ = writeln!(
        w,
        "{} rounds × {} repetitions per client (order rotated), after 2 warm-up rounds each; \
         client CPU is the client process's own (the key is another process). Ratios are \
         passkeyd (current-thread runtime) / that client: below 1, passkeyd is cheaper.\n",
        args.rounds, args.repeats
    );
    let _ = writeln!(
        w,
        "| operation | client | n | wall (ms) | client CPU (ms) | CPU ratio passkeyd/client | wall ratio |"
    );
    let _ = writeln!(w, "|---|---|---:|---:|---:|---:|---:|");
    for op in OPERATIONS {
        for (name, samples) in &clients.clients {
            let _ = writeln!(
                w,
                "| {op} | {name} | {} | {:.2} | {:.3} | {:.2} | {:.2} |",
                count(samples, op),
                wall_ms(samples, op),
                cpu_ms(samples, op),
                cpu_ms(passkeyd, op) / cpu_ms(samples, op),
                wall_ms(passkeyd, op) / wall_ms(samples, op),
            );
        }
    }
    let cpu_sum = |s: &Samples| OPERATIONS.iter().map(|op| cpu_ms(s, op)).sum::<f64>();
    let wall_sum = |s: &Samples| OPERATIONS.iter().map(|op| wall_ms(s, op)).sum::<f64>();
    let _ = writeln!(
        w,
        "\nThe three operations together (a ceremony's CTAP work), sums of the medians:\n"
    );
    let _ = writeln!(
        w,
        "| client | wall (ms) | client CPU (ms) | CPU ratio passkeyd/client |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|");
    for (name, samples) in &clients.clients {
        let _ = writeln!(
            w,
            "| {name} | {:.2} | {:.3} | {:.2} |",
            wall_sum(samples),
            cpu_sum(samples),
            cpu_sum(passkeyd) / cpu_sum(samples)
        );
    }
    let best = clients
        .clients
        .iter()
        .filter(|(name, _)| *name == PYTHON_FIDO2 || *name == LIBWEBAUTHN)
        .map(|(name, s)| (*name, cpu_sum(s)))
        .fold(
            ("none", f64::INFINITY),
            |best, x| if x.1 < best.1 { x } else { best },
        );
    let ours = cpu_sum(passkeyd);
    targets.push((
        "client CPU per ceremony ≤ the best peer's",
        format!(
            "passkeyd {ours:.3} ms; best peer {} {:.3} ms",
            best.0, best.1
        ),
        ours <= best.1,
    ));
}

fn part2(
    w: &mut String,
    r: &Results,
    bus: Option<&ScalePoint>,
    in_process: Option<&ScalePoint>,
    targets: &mut Targets,
) {
    let _ = writeln!(w, "\n## 2. Daemon overhead per ceremony\n");
    let _ = writeln!(
        w,
        "Whole ceremonies (reg/init, makeCredential with the key's touch, reg/complete, token \
         check) on one key, one after the other; the key (`virtkey`) and LoginID (the \
         emulator) are processes of their own, so each CPU figure is one process's.\n"
    );
    if let Some(b) = &r.over_bus {
        let _ = writeln!(w, "Over D-Bus the daemon is {}.\n", b.host.describe());
    }
    let _ = writeln!(
        w,
        "| how | ceremonies | ceremony wall (ms) | daemon CPU (ms) | firmware CPU (ms) | of which the firmware's idle polling (ms) | emulator CPU (ms) |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|---:|---:|");
    for (how, point) in [
        ("over D-Bus (daemon process)", bus),
        ("in-process `Ceremonies` (no D-Bus)", in_process),
    ] {
        if let Some(p) = point {
            let _ = writeln!(
                w,
                "| {how} | {} | {:.1} | {:.2} | {:.2} | {:.2} | {:.2} |",
                p.ceremonies,
                p.ceremony_ms,
                p.daemon_cpu_ms,
                p.firmware_cpu_ms,
                p.firmware_idle_cpu_ms,
                p.emulator_cpu_ms
            );
        }
    }
    if let Some(p) = bus.or(in_process) {
        targets.push((
            "daemon CPU per ceremony < 2 ms",
            format!(
                "{:.2} ms ({})",
                p.daemon_cpu_ms,
                if bus.is_some() {
                    "daemon process, over D-Bus"
                } else {
                    "in-process"
                }
            ),
            p.daemon_cpu_ms < 2.0,
        ));
    }
}

fn part3(w: &mut String, i: &IdleResult, targets: &mut Targets) {
    let _ = writeln!(
        w,
        "\n## 3. Idle, {} virtual keys attached, {} s\n",
        i.keys, i.seconds
    );
    let _ = writeln!(
        w,
        "| VmRSS (MiB) | VmHWM (MiB) | threads at the end | threads that ended in the window | wake-ups | wake-ups/s | the virtkeys' wake-ups/s (not passkeyd) |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| {:.1} | {:.1} | {} | {} | {} | {:.2} | {:.0} |",
        i.rss_kib as f64 / 1024.0,
        i.hwm_kib as f64 / 1024.0,
        i.threads,
        i.threads_ended,
        i.switches,
        i.per_second,
        i.keys_per_second
    );
    let rss_mb = i.rss_kib as f64 * 1024.0 / 1e6;
    targets.push((
        "idle < 1 wake-up/s",
        format!("{:.2}/s", i.per_second),
        i.per_second < 1.0,
    ));
    targets.push((
        "idle < 12 MB resident",
        format!("{rss_mb:.1} MB ({:.1} MiB)", i.rss_kib as f64 / 1024.0),
        rss_mb < 12.0,
    ));
}

fn part4(
    w: &mut String,
    bus: Option<&StartupResult>,
    log: Option<&StartupResult>,
    targets: &mut Targets,
) {
    let _ = writeln!(w, "\n## 4. Start-up\n");
    let _ = writeln!(
        w,
        "From before the exec to ready; medians of repeated starts with no key attached.\n"
    );
    let _ = writeln!(
        w,
        "| ready means | starts | median (ms) | min (ms) | max (ms) |"
    );
    let _ = writeln!(w, "|---|---:|---:|---:|---:|");
    for s in [bus, log].into_iter().flatten() {
        let _ = writeln!(
            w,
            "| {} | {} | {:.1} | {:.1} | {:.1} |",
            s.ready, s.starts, s.median_ms, s.min_ms, s.max_ms
        );
    }
    if let Some(s) = bus.or(log) {
        targets.push((
            "start-up < 50 ms",
            format!("{:.1} ms ({})", s.median_ms, s.ready),
            s.median_ms < 50.0,
        ));
    }
}

fn part5(
    w: &mut String,
    args: &Args,
    how: &str,
    scale: &[ScalePoint],
    targets: Option<&mut Targets>,
) {
    let _ = writeln!(w, "\n## 5. Scale: keys enrolling in parallel, {how}\n");
    let _ = writeln!(
        w,
        "Each key has its own stream of {} ceremonies (after one warm-up each), all keys at \
         once. Efficiency = throughput(n) / (n × throughput(1)).\n",
        args.scale_per_key
    );
    let _ = writeln!(
        w,
        "| keys | ceremonies | wall (s) | ceremonies/s | efficiency | ceremony wall (ms) | daemon CPU/ceremony (ms) | firmware CPU/ceremony (ms) | emulator CPU/ceremony (ms) |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    let base = scale.first().map_or(f64::NAN, |p| p.per_second);
    for p in scale {
        let _ = writeln!(
            w,
            "| {} | {} | {:.2} | {:.2} | {:.2} | {:.1} | {:.2} | {:.2} | {:.2} |",
            p.keys,
            p.ceremonies,
            p.wall.as_secs_f64(),
            p.per_second,
            p.per_second / (p.keys as f64 * base),
            p.ceremony_ms,
            p.daemon_cpu_ms,
            p.firmware_cpu_ms,
            p.emulator_cpu_ms
        );
    }
    if let (Some(p), Some(targets)) = (scale.iter().find(|p| p.keys == 8), targets) {
        let speedup = p.per_second / base;
        targets.push((
            "8 keys ≥ 6 × one key's throughput",
            format!("{speedup:.2} × (efficiency {:.2})", speedup / 8.0),
            speedup >= 6.0,
        ));
    }
}

fn part6(w: &mut String, p: &PacingResult, targets: &mut Targets) {
    let _ = writeln!(
        w,
        "\n## 6. Transport with USB pacing ({} µs per report)\n",
        p.pacing_us
    );
    let _ = writeln!(
        w,
        "makeCredential (ES256, no PIN), {} paced/unpaced pairs. Floor = reports from the key × pacing + the unpaced wall time.\n",
        p.runs
    );
    let _ = writeln!(
        w,
        "| paced wall (ms) | unpaced wall (ms) | reports from the key | of which KEEPALIVE | floor (ms) | paced / floor | paced / floor without KEEPALIVEs |"
    );
    let _ = writeln!(w, "|---:|---:|---:|---:|---:|---:|---:|");
    let _ = writeln!(
        w,
        "| {:.2} | {:.2} | {:.0} | {:.0} | {:.2} | {:.3} | {:.3} |",
        p.paced_ms,
        p.unpaced_ms,
        p.reports_from_key,
        p.keepalives,
        p.floor_ms,
        p.ratio,
        p.ratio_without_keepalives
    );
    targets.push((
        "paced transport within 10 % of the floor",
        format!(
            "{:.3} × the floor (without KEEPALIVEs: {:.3})",
            p.ratio, p.ratio_without_keepalives
        ),
        p.ratio <= 1.10,
    ));
}

/// How the figures are taken and what the misses mean; kept next to the code that measures.
pub const NOTES: &str = include_str!("notes.md");
