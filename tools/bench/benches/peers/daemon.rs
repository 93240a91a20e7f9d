//! How the `passkeyd` binary is started for the measurements of the daemon process.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use crate::util::{Bins, Proc};

/// The daemon's command line.
pub struct Daemon;

impl Daemon {
    /// `passkeyd` with only the virtual-key transport on `keys`, logging to `log`.
    pub fn spawn(
        &self,
        bins: &Bins,
        _work: &Path,
        keys: &Path,
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let log_file = fs::File::create(log)?;
        Proc::spawn(
            "passkeyd",
            Command::new(bins.path("passkeyd"))
                .args([
                    "--config",
                    "/dev/null",
                    "--no-usb",
                    "--no-nfc",
                    "--log-level",
                    "info",
                ])
                .arg("--virtual-dir")
                .arg(keys)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log_file),
        )
    }
}
