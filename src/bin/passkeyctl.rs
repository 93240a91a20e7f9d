//! `passkeyctl`: command-line client of passkeyd.

use clap::Parser;

/// Command-line client of passkeyd: list security keys, create passkeys, decode CTAP traffic.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Talk to the daemon on the session bus instead of the system bus.
    #[arg(long)]
    session: bool,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    anyhow::bail!(
        "passkeyctl {}: no subcommands in this build yet (requested: {:?})",
        env!("CARGO_PKG_VERSION"),
        args
    )
}
