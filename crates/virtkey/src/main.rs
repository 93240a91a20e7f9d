//! `virtkey`: a virtual FIDO security key (the Trussed fido-authenticator firmware) served on a
//! Unix SOCK_SEQPACKET socket, one message = one 64-byte HID report, for passkeyd's virtual
//! transport; optionally also as a card to pcscd through vpcd.
//!
//! ```text
//! virtkey --dir DIR --name NAME [--pin PIN] [--touch auto|auto:MS|deny|never] [--u2f-only]
//!         [--vpcd HOST:PORT] [--report-pacing-us N]
//!         [--keepalive-ms N] [--unplug-after N [--replug-ms N]] [--corrupt-frame N]
//!         [--force-status HEX] [--hostile MODE]
//! ```
//!
//! Creates `DIR/NAME.sock` (and DIR if missing), removes it on exit, logs to stderr
//! (`RUST_LOG` filters, default `info`). Exit codes: 0 after SIGINT or SIGTERM, 2 on usage
//! errors, 1 on runtime errors.

use std::{
    io::IsTerminal as _,
    path::PathBuf,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
        mpsc::{self, RecvTimeoutError},
    },
    thread,
    time::Duration,
};

use anyhow::Context as _;
use clap::Parser;
use signal_hook::{
    consts::{SIGINT, SIGTERM},
    iterator::Signals,
};
use tracing_subscriber::EnvFilter;
use virtkey::{
    Config, Hostile, TouchPolicy, VirtKey,
    socket::{self, ServeOptions, ServerEvent, SocketError},
    vpcd::{self, VpcdError},
};

/// How long the vpcd thread gets to notice the stop flag at exit before the process leaves
/// without it.
const VPCD_STOP_GRACE: Duration = Duration::from_secs(2);

/// Virtual FIDO security key on a Unix SOCK_SEQPACKET socket (64-byte HID reports).
// No Debug: it would print the PIN.
#[derive(Parser)]
#[command(version, about)]
struct Args {
    /// Directory of the socket (created if missing).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// Key name: the socket is DIR/NAME.sock.
    #[arg(long, value_name = "NAME", value_parser = parse_name)]
    name: String,
    /// Set this PIN (clientPIN) before serving.
    #[arg(long, value_name = "PIN")]
    pin: Option<String>,
    /// User presence: touched at once, MS milliseconds after the firmware asks, refused, or
    /// never (the firmware's own timeout applies).
    #[arg(
        long,
        value_name = "auto|auto:MS|deny|never",
        default_value = "auto",
        value_parser = parse_touch
    )]
    touch: TouchPolicy,
    /// Act as a U2F-only key (no CTAP2).
    #[arg(long)]
    u2f_only: bool,
    /// Also serve the key as a card to the vpcd reader listening at HOST:PORT.
    #[arg(long, value_name = "HOST:PORT", value_parser = parse_host_port)]
    vpcd: Option<String>,
    /// Delay before each report to the host, in microseconds (1000 = USB full speed).
    #[arg(long, value_name = "N")]
    report_pacing_us: Option<u64>,
    /// KEEPALIVE period while the firmware works, in milliseconds (default 100).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    keepalive_ms: Option<u64>,
    /// Rig: after N reports sent to the host, remove the socket and close the connection.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    unplug_after: Option<u64>,
    /// Rig: with --unplug-after, plug the key in again N milliseconds after each unplug, and
    /// unplug it again after as many reports: a key that flaps until the process ends.
    #[arg(long, value_name = "N", requires = "unplug_after")]
    replug_ms: Option<u64>,
    /// Rig: invert bytes 4..64 (all but the CID) of the N-th report sent to the host.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..))]
    corrupt_frame: Option<u64>,
    /// Rig: answer every CTAP2 request with this CTAP status byte (hex, e.g. 2F or 0x2f).
    #[arg(long, value_name = "HEX", value_parser = parse_status)]
    force_status: Option<u8>,
    /// Rig: a hostile key, misbehaving when answering makeCredential over HID (see
    /// docs/virtkey.md for the modes).
    #[arg(long, value_name = "MODE", value_parser = parse_hostile)]
    hostile: Option<Hostile>,
}

fn parse_hostile(text: &str) -> Result<Hostile, String> {
    Hostile::from_name(text).ok_or_else(|| {
        let names: Vec<&str> = Hostile::ALL.iter().map(|mode| mode.name()).collect();
        format!("expected one of {}, got {text:?}", names.join(", "))
    })
}

fn parse_name(text: &str) -> Result<String, String> {
    if text.is_empty() {
        return Err("the name is empty".into());
    }
    if text.starts_with('.') {
        return Err("the name must not start with '.' (hidden files are ignored)".into());
    }
    if text.contains(['/', '\0']) {
        return Err("the name must not contain '/' or NUL".into());
    }
    Ok(text.to_owned())
}

fn parse_touch(text: &str) -> Result<TouchPolicy, String> {
    match text {
        "auto" => Ok(TouchPolicy::Auto),
        "deny" => Ok(TouchPolicy::Deny),
        "never" => Ok(TouchPolicy::Never),
        _ => {
            let millis = text
                .strip_prefix("auto:")
                .and_then(|ms| ms.parse::<u64>().ok())
                .ok_or_else(|| format!("expected auto, auto:MS, deny or never, got {text:?}"))?;
            Ok(TouchPolicy::AutoAfter(Duration::from_millis(millis)))
        }
    }
}

fn parse_status(text: &str) -> Result<u8, String> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    if digits.is_empty() || digits.len() > 2 || !digits.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(format!("expected one hex byte, got {text:?}"));
    }
    u8::from_str_radix(digits, 16).map_err(|_| format!("expected one hex byte, got {text:?}"))
}

fn parse_host_port(text: &str) -> Result<String, String> {
    match text.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(text.to_owned())
        }
        _ => Err(format!("expected HOST:PORT, got {text:?}")),
    }
}

/// How `run` ended badly.
enum Failure {
    /// Exit code 2.
    Usage(anyhow::Error),
    /// Exit code 1.
    Runtime(anyhow::Error),
}

impl<E: Into<anyhow::Error>> From<E> for Failure {
    fn from(error: E) -> Self {
        Self::Runtime(error.into())
    }
}

/// What the main thread waits for.
enum Control {
    Signal(i32),
    ServerFailed(SocketError),
    Vpcd(Result<(), VpcdError>),
}

fn main() -> ExitCode {
    // clap exits with 2 on usage errors (0 for --help and --version).
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .init();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure::Usage(error)) => {
            tracing::error!("{error:#}");
            ExitCode::from(2)
        }
        Err(Failure::Runtime(error)) => {
            tracing::error!("{error:#}");
            ExitCode::from(1)
        }
    }
}

fn run(args: Args) -> Result<(), Failure> {
    let (control_tx, control) = mpsc::channel();
    // Signals first: a SIGTERM while the firmware boots still ends in a clean exit 0.
    let mut signals = Signals::new([SIGINT, SIGTERM]).context("installing signal handlers")?;
    let signals_handle = signals.handle();
    {
        let control_tx = control_tx.clone();
        thread::Builder::new()
            .name("virtkey-signals".into())
            .spawn(move || {
                for signal in signals.forever() {
                    if control_tx.send(Control::Signal(signal)).is_err() {
                        break;
                    }
                }
            })
            .context("starting the signal thread")?;
    }

    std::fs::create_dir_all(&args.dir)
        .with_context(|| format!("creating {}", args.dir.display()))?;
    let path = args.dir.join(format!("{}.sock", args.name));

    let mut config = Config {
        touch: args.touch,
        pin: args.pin,
        u2f_only: args.u2f_only,
        report_pacing: args
            .report_pacing_us
            .filter(|&us| us > 0)
            .map(Duration::from_micros),
        force_status: args.force_status,
        hostile: args.hostile,
        ..Config::default()
    };
    if let Some(ms) = args.keepalive_ms {
        config.keepalive_interval = Duration::from_millis(ms);
    }
    tracing::info!(
        name = %args.name,
        touch = ?config.touch,
        pin = config.pin.is_some(),
        u2f_only = config.u2f_only,
        pacing = ?config.report_pacing,
        keepalive = ?config.keepalive_interval,
        force_status = ?config.force_status,
        hostile = ?config.hostile.map(Hostile::name),
        replug_ms = ?args.replug_ms,
        unplug_after = ?args.unplug_after,
        corrupt_frame = ?args.corrupt_frame,
        "starting the firmware"
    );
    let key = match VirtKey::start(config) {
        Ok(key) => Arc::new(key),
        Err(error @ virtkey::Error::InvalidPin(_)) => {
            return Err(Failure::Usage(anyhow::Error::new(error).context("--pin")));
        }
        Err(error) => return Err(anyhow::Error::new(error).context("starting the key").into()),
    };

    // A signal during the boot: leave before the socket ever appears.
    if let Ok(Control::Signal(signal)) = control.try_recv() {
        tracing::info!(signal, "stopping");
        signals_handle.close();
        return Ok(());
    }

    let (events_tx, events) = mpsc::channel();
    {
        let control_tx = control_tx.clone();
        thread::Builder::new()
            .name("virtkey-events".into())
            .spawn(move || {
                for event in events {
                    if let ServerEvent::Failed(error) = event
                        && control_tx.send(Control::ServerFailed(error)).is_err()
                    {
                        break;
                    }
                }
            })
            .context("starting the event thread")?;
    }
    let server = socket::serve(
        Arc::clone(&key),
        &path,
        ServeOptions {
            unplug_after: args.unplug_after,
            corrupt_frame: args.corrupt_frame,
            replug_after: args.replug_ms.map(Duration::from_millis),
            events: Some(events_tx),
        },
    )
    .with_context(|| format!("serving on {}", path.display()))?;

    let vpcd_stop = Arc::new(AtomicBool::new(false));
    let vpcd_running = match args.vpcd {
        Some(address) => {
            let key = Arc::clone(&key);
            let stop = Arc::clone(&vpcd_stop);
            let control_tx = control_tx.clone();
            tracing::info!(%address, "serving the key to vpcd");
            thread::Builder::new()
                .name("virtkey-vpcd".into())
                .spawn(move || {
                    let result = vpcd::serve(key, &address, &stop);
                    let _ = control_tx.send(Control::Vpcd(result));
                })
                .context("starting the vpcd thread")?;
            true
        }
        None => false,
    };
    drop(control_tx);

    let outcome = loop {
        match control.recv() {
            Ok(Control::Signal(signal)) => {
                tracing::info!(signal, "stopping");
                break Ok(());
            }
            Ok(Control::ServerFailed(error)) => {
                break Err(anyhow::Error::new(error).context("socket server").into());
            }
            Ok(Control::Vpcd(Err(error))) => {
                break Err(anyhow::Error::new(error).context("vpcd").into());
            }
            Ok(Control::Vpcd(Ok(()))) => {
                tracing::warn!("vpcd service ended; the socket keeps serving");
            }
            // Every sender is gone: cannot happen while the signal thread runs.
            Err(_) => break Ok(()),
        }
    };

    drop(server);
    signals_handle.close();
    if vpcd_running {
        vpcd_stop.store(true, Ordering::SeqCst);
        loop {
            match control.recv_timeout(VPCD_STOP_GRACE) {
                Ok(Control::Vpcd(_)) | Err(RecvTimeoutError::Disconnected) => break,
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => {
                    tracing::warn!("the vpcd thread did not stop in time");
                    break;
                }
            }
        }
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn touch_policies_parse() {
        assert_eq!(parse_touch("auto"), Ok(TouchPolicy::Auto));
        assert_eq!(parse_touch("deny"), Ok(TouchPolicy::Deny));
        assert_eq!(parse_touch("never"), Ok(TouchPolicy::Never));
        assert_eq!(
            parse_touch("auto:250"),
            Ok(TouchPolicy::AutoAfter(Duration::from_millis(250)))
        );
        assert!(parse_touch("auto:").is_err());
        assert!(parse_touch("auto:-1").is_err());
        assert!(parse_touch("sometimes").is_err());
    }

    #[test]
    fn status_bytes_parse_as_hex() {
        assert_eq!(parse_status("2F"), Ok(0x2f));
        assert_eq!(parse_status("0x2f"), Ok(0x2f));
        assert_eq!(parse_status("00"), Ok(0x00));
        assert_eq!(parse_status("7"), Ok(0x07));
        assert!(parse_status("").is_err());
        assert!(parse_status("0x").is_err());
        assert!(parse_status("100").is_err());
        assert!(parse_status("zz").is_err());
        assert!(parse_status("+1").is_err());
    }

    #[test]
    fn names_and_addresses_are_checked() {
        assert_eq!(parse_name("key-1"), Ok("key-1".to_owned()));
        assert!(parse_name("").is_err());
        assert!(parse_name(".hidden").is_err());
        assert!(parse_name("a/b").is_err());
        assert_eq!(
            parse_host_port("127.0.0.1:35963"),
            Ok("127.0.0.1:35963".to_owned())
        );
        assert_eq!(parse_host_port("[::1]:35963"), Ok("[::1]:35963".to_owned()));
        assert!(parse_host_port("localhost").is_err());
        assert!(parse_host_port(":35963").is_err());
        assert!(parse_host_port("localhost:99999").is_err());
    }

    #[test]
    fn the_documented_command_line_parses() {
        let args = Args::try_parse_from([
            "virtkey",
            "--dir",
            "/run/virtkeys",
            "--name",
            "k1",
            "--pin",
            "1234",
            "--touch",
            "auto:300",
            "--u2f-only",
            "--vpcd",
            "localhost:35963",
            "--report-pacing-us",
            "1000",
            "--keepalive-ms",
            "50",
            "--unplug-after",
            "10",
            "--corrupt-frame",
            "3",
            "--force-status",
            "2F",
            "--hostile",
            "wrong-rp-id-hash",
            "--replug-ms",
            "200",
        ])
        .unwrap();
        assert_eq!(args.name, "k1");
        assert_eq!(
            args.touch,
            TouchPolicy::AutoAfter(Duration::from_millis(300))
        );
        assert_eq!(args.report_pacing_us, Some(1000));
        assert_eq!(args.keepalive_ms, Some(50));
        assert_eq!(args.unplug_after, Some(10));
        assert_eq!(args.corrupt_frame, Some(3));
        assert_eq!(args.force_status, Some(0x2f));
        assert_eq!(args.hostile, Some(Hostile::WrongRpIdHash));
        assert_eq!(args.replug_ms, Some(200));
        let bad =
            Args::try_parse_from(["virtkey", "--dir", "/t", "--name", "k", "--hostile", "nice"])
                .err()
                .expect("an unknown mode is an error");
        assert_eq!(bad.exit_code(), 2);
        let alone =
            Args::try_parse_from(["virtkey", "--dir", "/t", "--name", "k", "--replug-ms", "5"])
                .err()
                .expect("--replug-ms needs --unplug-after");
        assert_eq!(alone.exit_code(), 2);
        assert!(args.u2f_only);
        let missing = Args::try_parse_from(["virtkey", "--dir", "/tmp"])
            .err()
            .expect("missing --name is an error");
        assert_eq!(missing.exit_code(), 2);
        let zero = Args::try_parse_from([
            "virtkey",
            "--dir",
            "/t",
            "--name",
            "k",
            "--unplug-after",
            "0",
        ])
        .err()
        .expect("--unplug-after 0 is an error");
        assert_eq!(zero.exit_code(), 2);
    }
}
