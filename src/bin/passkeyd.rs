//! `passkeyd`: the daemon that owns the machine's FIDO security keys.
//!
//! ```text
//! passkeyd [--config PATH] [--no-usb] [--no-nfc] [--virtual-dir DIR] [--log-level FILTER]
//! ```
//!
//! Runs the USB, NFC and virtual-key transports and the device registry (`passkeyd::daemon`),
//! logging every key that comes or goes to stderr, until SIGTERM or SIGINT (exit 0). Exit
//! code 1 when it cannot start or run, 2 on usage errors. The D-Bus service comes later.
//!
//! Logs are plain text lines (no colours unless stderr is a terminal; no timestamps under
//! systemd, whose journal stamps every line itself), filtered by `--log-level`, else
//! `RUST_LOG`, else `info`.

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{CommandFactory as _, Parser};
use passkeyd::daemon::{self, Config, ConfigError, DEFAULT_CONFIG_PATH};
use passkeyd::transport::virt::VirtualConfig;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Worker threads of the runtime. The daemon's work is waiting on keys; two workers let one
/// key's traffic proceed while another task runs, whatever the machine's core count.
const WORKER_THREADS: usize = 2;

/// How long the runtime's remaining tasks get to end after the daemon has stopped.
const RUNTIME_SHUTDOWN: std::time::Duration = std::time::Duration::from_secs(2);

/// Owns the machine's FIDO security keys (USB, NFC, virtual) and logs them as they come and go.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Configuration file (TOML). Without this flag, /etc/passkeyd/passkeyd.toml is read if it
    /// exists.
    #[arg(long, value_name = "PATH")]
    config: Option<PathBuf>,
    /// Do not look for USB (hidraw) keys.
    #[arg(long)]
    no_usb: bool,
    /// Do not look for NFC keys (pcscd).
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
    let builder = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(filter);
    // systemd sets JOURNAL_STREAM when stderr goes to the journal, which timestamps lines.
    if std::env::var_os("JOURNAL_STREAM").is_some() {
        builder.without_time().init();
    } else {
        builder.init();
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
        daemon::run(config, shutdown).await.context("passkeyd")
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    outcome
}

/// The configuration file (if any), then the flags on top.
fn configure(args: &Args) -> anyhow::Result<Config> {
    let mut config = match &args.config {
        Some(path) => load(path)?,
        None => match Config::load(Path::new(DEFAULT_CONFIG_PATH)) {
            Err(ConfigError::Read { source, .. })
                if source.kind() == std::io::ErrorKind::NotFound =>
            {
                Config::default()
            }
            loaded => loaded.with_context(|| format!("configuration {DEFAULT_CONFIG_PATH}"))?,
        },
    };
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

fn load(path: &Path) -> anyhow::Result<Config> {
    Config::load(path).with_context(|| format!("configuration {}", path.display()))
}
