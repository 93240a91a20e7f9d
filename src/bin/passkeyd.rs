//! `passkeyd`: the daemon that owns the machine's FIDO security keys and serves the
//! `org.passkeyd` D-Bus API.
//!
//! ```text
//! passkeyd [--config PATH] [--system | --session | --address ADDR]
//!          [--no-usb] [--no-nfc] [--virtual-dir DIR] [--record-dir DIR] [--log-level FILTER]
//! ```
//!
//! Runs `passkeyd::daemon` on the system bus (or the one named) until SIGTERM or SIGINT, which
//! cancel every ceremony and send CANCEL to its keys before the exit (code 0). Exit code 1
//! when it cannot start or run (a bad configuration, the bus name taken), 2 on usage errors.
//!
//! Logs go to the journal, with their fields, when systemd runs the daemon (`JOURNAL_STREAM`
//! is set and the journal answers); otherwise they are plain text lines on stderr (colours
//! only on a terminal). The filter is `--log-level`, else `RUST_LOG`, else `info`.

use std::io::IsTerminal as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser};
use passkeyd::daemon::{self, Config, DEFAULT_CONFIG_PATH};
use passkeyd::dbus::Bus;
use passkeyd::transport::virt::VirtualConfig;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;

/// Worker threads of the runtime. The daemon's work is waiting on keys; two workers let one
/// key's traffic proceed while another task runs, whatever the machine's core count.
const WORKER_THREADS: usize = 2;

/// How long the runtime's remaining tasks get to end after the daemon has stopped.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Creates LoginID passkeys on FIDO security keys for local UIs, over D-Bus.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML).
    #[arg(long, value_name = "PATH", default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Serve on the system bus (the default).
    #[arg(long, group = "bus")]
    system: bool,
    /// Serve on the session bus.
    #[arg(long, group = "bus")]
    session: bool,
    /// Serve on the bus at this D-Bus address (`unix:path=/run/...`).
    #[arg(long, value_name = "ADDR", group = "bus")]
    address: Option<String>,
    /// Do not look for USB (hidraw) keys, whatever the file says.
    #[arg(long)]
    no_usb: bool,
    /// Do not look for NFC keys (pcscd), whatever the file says.
    #[arg(long)]
    no_nfc: bool,
    /// Watch this directory for virtual keys' sockets (`virtkey --dir DIR`).
    #[arg(long, value_name = "DIR")]
    virtual_dir: Option<PathBuf>,
    /// Record every key's traffic (and the host randomness used) to a JSON-lines file in this
    /// directory, for bug reports and replay. Recordings of PIN entry are secrets: see
    /// docs/recording.md.
    #[arg(long, value_name = "DIR")]
    record_dir: Option<PathBuf>,
    /// Log filter: a level (error, warn, info, debug, trace) or RUST_LOG-style directives.
    /// Overrides RUST_LOG.
    #[arg(long, value_name = "FILTER")]
    log_level: Option<String>,
}

fn main() -> ExitCode {
    // The Debian package's man pages and completions (src/cli_assets.rs).
    if let Some(code) =
        passkeyd::cli_assets::generate_if_requested(env!("CARGO_BIN_NAME"), Args::command)
    {
        return code;
    }
    // clap exits with 2 on usage errors (0 for --help and --version).
    let args = Args::parse();
    if let Err(error) = init_logging(args.log_level.as_deref()) {
        eprintln!("passkeyd: {error:#}");
        return ExitCode::from(2);
    }
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error:#}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(level: Option<&str>) -> anyhow::Result<()> {
    let filter = match level {
        Some(level) => EnvFilter::try_new(level).with_context(|| format!("--log-level {level}"))?,
        None => EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
    };
    // systemd sets JOURNAL_STREAM when stderr goes to the journal: write records to the
    // journal itself then, with their fields as journal fields.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        match tracing_journald::layer() {
            Ok(journal) => {
                tracing_subscriber::registry()
                    .with(filter)
                    .with(journal.with_syslog_identifier("passkeyd".to_owned()))
                    .init();
                return Ok(());
            }
            // No journal socket (a container): plain lines, the journal stamps them.
            Err(error) => {
                eprintln!("passkeyd: the journal is not reachable ({error}): logging to stderr")
            }
        }
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .without_time()
            .with_env_filter(filter)
            .init();
    } else {
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .with_env_filter(filter)
            .init();
    }
    Ok(())
}

fn run(args: Args) -> anyhow::Result<()> {
    let config = configure(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(WORKER_THREADS)
        .thread_name("passkeyd-worker")
        .enable_all()
        .build()
        .context("starting the tokio runtime")?;
    let outcome = runtime.block_on(async {
        // Before anything else starts: a signal during start-up still ends in a clean stop.
        let mut terminate = signal(SignalKind::terminate()).context("handling SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("handling SIGINT")?;
        let shutdown = async move {
            tokio::select! {
                _ = terminate.recv() => tracing::info!("SIGTERM received"),
                _ = interrupt.recv() => tracing::info!("SIGINT received"),
            }
        };
        let bus = match (&args.address, args.session) {
            (Some(address), _) => Bus::address(address).await,
            (None, true) => Bus::session().await,
            (None, false) => Bus::system().await,
        }
        .context("connecting to the bus")?;
        daemon::run(bus, config, shutdown).await.context("passkeyd")
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    outcome
}

/// The configuration file, then the flags on top.
fn configure(args: &Args) -> anyhow::Result<Config> {
    let path = &args.config;
    let mut config =
        Config::load(path).with_context(|| format!("configuration {}", path.display()))?;
    if args.no_usb {
        config.usb = None;
    }
    if args.no_nfc {
        config.nfc = None;
    }
    if let Some(dir) = &args.virtual_dir {
        config.virtual_keys = Some(VirtualConfig { dir: dir.clone() });
    }
    if let Some(dir) = &args.record_dir {
        config.device.record_dir = Some(dir.clone());
    }
    Ok(config)
}
