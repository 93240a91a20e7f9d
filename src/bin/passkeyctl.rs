//! `passkeyctl`: command-line client of passkeyd.
//!
//! It talks to the service over D-Bus as any local UI would (`passkeyd::dbus::client`):
//! `list`, `info`, `register`, `watch`, `cancel`, `wink`, `verify-token`; and it decodes CTAP
//! traffic offline (`decode`). See `docs/passkeyctl.md`.
//!
//! Exit status:
//! - 0: success;
//! - 1: passkeyd refused the request or the ceremony failed (the D-Bus error name is printed,
//!   and is the `error` member with `--json`);
//! - 2: a usage error, or input that cannot be read or decoded;
//! - 3: passkeyd cannot be reached: no bus, the service is not running, or it left the bus;
//! - 124: passkeyctl's own deadline passed (a running ceremony is cancelled first);
//! - 130: interrupted (Ctrl-C, SIGTERM); a running ceremony is cancelled first.

// The crate root is src/bin/: the modules live in src/bin/passkeyctl/.
#[path = "passkeyctl/register.rs"]
mod register;
#[path = "passkeyctl/remote.rs"]
mod remote;
#[path = "passkeyctl/terminal.rs"]
mod terminal;

use std::fs::File;
use std::io::{BufReader, ErrorKind, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{ArgGroup, Args, CommandFactory as _, Parser, Subcommand, ValueEnum};
use passkeyd::decode::{self, ResponseKind};
use passkeyd::device::record::RecordingFile;
use remote::{BusArgs, RemoteCmd};

/// Command-line client of passkeyd: security keys, passkey registration, CTAP traffic.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Command-line client of passkeyd: security keys, passkey registration, CTAP traffic"
)]
struct Cli {
    #[command(flatten)]
    bus: BusArgs,

    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    #[command(flatten)]
    Remote(RemoteCmd),
    /// Decode CTAP traffic: a recording, one CTAP response, or a run of CTAPHID reports.
    Decode(DecodeArgs),
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("input").required(true).args(["recording", "hex"])))]
struct DecodeArgs {
    /// A recording made by passkeyd (JSON lines, see docs/recording.md).
    #[arg(long, value_name = "FILE")]
    recording: Option<PathBuf>,

    /// Bytes in hex (whitespace ignored): one CTAP response, status byte first or bare CBOR,
    /// or a run of 64-byte CTAPHID reports.
    #[arg(long, value_name = "HEX", requires = "kind")]
    hex: Option<String>,

    /// What the hex bytes are.
    #[arg(long = "as", value_name = "KIND", requires = "hex")]
    kind: Option<Kind>,

    /// Print JSON with the specification's member names instead of text.
    #[arg(long)]
    json: bool,
}

/// What `--hex` holds.
#[derive(Clone, Copy, Debug, ValueEnum)]
enum Kind {
    /// An authenticatorGetInfo response.
    GetInfo,
    /// An authenticatorMakeCredential response.
    MakeCredential,
    /// An authenticatorClientPIN response.
    ClientPin,
    /// 64-byte CTAPHID input reports, reassembled; the response is recognised by its shape.
    Reports,
}

fn run_decode(args: &DecodeArgs) -> anyhow::Result<String> {
    if let Some(path) = &args.recording {
        let file = File::open(path)
            .with_context(|| format!("cannot open recording {}", path.display()))?;
        let recording = RecordingFile::read(BufReader::new(file))
            .with_context(|| format!("cannot read recording {}", path.display()))?;
        return Ok(if args.json {
            decode::decode_recording(&recording).to_json_pretty() + "\n"
        } else {
            decode::recording_text(&recording)
        });
    }
    let (Some(hex), Some(kind)) = (&args.hex, args.kind) else {
        // clap enforces --recording or --hex with --as.
        anyhow::bail!("give --recording FILE, or --hex HEX with --as KIND");
    };
    let bytes = decode::parse_hex(hex)?;
    let decoded = match kind {
        Kind::GetInfo => decode::decode_response(ResponseKind::GetInfo, &bytes),
        Kind::MakeCredential => decode::decode_response(ResponseKind::MakeCredential, &bytes),
        Kind::ClientPin => decode::decode_response(ResponseKind::ClientPin, &bytes),
        Kind::Reports => decode::decode_reports(&bytes),
    }?;
    Ok(if args.json {
        decoded.to_json_pretty() + "\n"
    } else {
        decoded.to_text()
    })
}

fn main() -> ExitCode {
    // The Debian package's man pages and completions (src/cli_assets.rs).
    if let Some(code) =
        passkeyd::cli_assets::generate_if_requested(env!("CARGO_BIN_NAME"), Cli::command)
    {
        return code;
    }
    // Usage errors exit with 2 from here.
    let cli = Cli::parse();
    let args = match cli.command {
        Cmd::Remote(command) => return ExitCode::from(remote::main(&cli.bus, command)),
        Cmd::Decode(args) => args,
    };
    match run_decode(&args) {
        Ok(output) => {
            // A closed pipe (`| head`) is the reader's choice, not an error.
            match std::io::stdout().lock().write_all(output.as_bytes()) {
                Err(error) if error.kind() != ErrorKind::BrokenPipe => {
                    eprintln!("passkeyctl: cannot write output: {error}");
                    ExitCode::from(2)
                }
                _ => ExitCode::SUCCESS,
            }
        }
        Err(error) => {
            eprintln!("passkeyctl: {error:#}");
            ExitCode::from(2)
        }
    }
}
