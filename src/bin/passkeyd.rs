//! `passkeyd`: the daemon that owns the machine's FIDO security keys.
//!
//! This binary only parses its command line for now; the device layer and the D-Bus service
//! are built on top of the `ctap` crate in later steps (see ARCHITECTURE.md).

use std::path::PathBuf;

use clap::Parser;

/// Creates LoginID passkeys on FIDO security keys, for local UIs on D-Bus.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Serve on the session bus instead of the system bus (development, per-user desktops).
    #[arg(long, conflicts_with = "address")]
    session: bool,
    /// Serve on the bus at this D-Bus address (tests, rigs).
    #[arg(long, value_name = "ADDRESS")]
    address: Option<String>,
    /// Configuration file.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/etc/passkeyd/passkeyd.toml"
    )]
    config: PathBuf,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "passkeyd {}: the D-Bus service is not part of this build yet (requested: {:?})",
        env!("CARGO_PKG_VERSION"),
        args
    )
}
