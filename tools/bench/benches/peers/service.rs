//! The daemon process the D-Bus measurements talk to.
//!
//! Preferably the `passkeyd` binary itself (`passkeyd --address ADDR --config FILE`, the
//! daemon's D-Bus entry point). Where that binary has no `--address` yet, this harness
//! re-executes itself as `peers --serve ...`: a process that assembles the service exactly as
//! `daemon::run` does — registry, virtual transport, `Ceremonies` with the LoginID client,
//! `passkeyd::dbus::serve` — on the daemon's two-worker runtime, and ends on SIGTERM.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::Context as _;
use passkeyd::ceremony::{Ceremonies, CeremonyConfig};
use passkeyd::dbus::{Bus, ServiceConfig};
use passkeyd::device::{DeviceConfig, Registry};
use passkeyd::loginid::{LoginIdClient, LoginIdConfig};
use passkeyd::transport::virt::{self, VirtualConfig};
use tokio::sync::mpsc;
use url::Url;

use crate::util::{APP, Bins, Proc};

/// How the daemon process is started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Host {
    /// `passkeyd --address` (the binary knows the flag).
    Passkeyd,
    /// `peers --serve` (this harness as the service's host).
    Harness,
}

impl Host {
    /// `passkeyd` if its `--help` lists `--address`.
    pub fn detect(bins: &Bins) -> Self {
        let help = Command::new(bins.path("passkeyd")).arg("--help").output();
        match help {
            Ok(out) if String::from_utf8_lossy(&out.stdout).contains("--address") => Self::Passkeyd,
            _ => Self::Harness,
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            Self::Passkeyd => "the `passkeyd` binary (`--address` on a private bus)",
            Self::Harness => {
                "a process of passkeyd's service assembled as `daemon::run` does (registry, \
                 virtual transport, Ceremonies, `passkeyd::dbus::serve`, two tokio workers), \
                 started by the harness (`peers --serve`): the `passkeyd` binary had no \
                 `--address` yet"
            }
        }
    }

    /// Starts the daemon on the bus at `address` with the keys of `keys` and LoginID at
    /// `loginid`; its log goes to `log`.
    pub fn spawn(
        self,
        bins: &Bins,
        work: &Path,
        address: &str,
        keys: &Path,
        loginid: &Url,
        log: &Path,
    ) -> anyhow::Result<Proc> {
        let log_file = fs::File::create(log)?;
        let mut command = match self {
            Self::Passkeyd => {
                let config = work.join("passkeyd.toml");
                fs::write(
                    &config,
                    format!(
                        "[loginid]\nbase_url = \"{loginid}\"\napp_id = \"{}\"\norigin = \"{}\"\n\
                         allow_insecure_loopback = true\n\n[transports]\nusb = false\nnfc = false\n\
                         virtual_dir = \"{}\"\n",
                        APP.app_id,
                        APP.origin,
                        keys.display()
                    ),
                )?;
                let mut command = Command::new(bins.path("passkeyd"));
                command.arg("--config").arg(&config).args([
                    "--address",
                    address,
                    "--log-level",
                    "info",
                ]);
                command
            }
            Self::Harness => {
                let mut command = Command::new(std::env::current_exe()?);
                command
                    .args([
                        "--serve",
                        "--address",
                        address,
                        "--loginid",
                        loginid.as_str(),
                    ])
                    .arg("--virtual-dir")
                    .arg(keys);
                command
            }
        };
        command
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file);
        Proc::spawn("passkeyd service", &mut command)
    }
}

/// `peers --serve --address ADDR --loginid URL --virtual-dir DIR`.
pub fn serve_main(mut args: impl Iterator<Item = String>) -> anyhow::Result<()> {
    let mut address = None;
    let mut loginid = None;
    let mut dir = None;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--address" => address = args.next(),
            "--loginid" => loginid = args.next(),
            "--virtual-dir" => dir = args.next(),
            other => anyhow::bail!("--serve: unexpected {other:?}"),
        }
    }
    let (Some(address), Some(loginid), Some(dir)) = (address, loginid, dir) else {
        anyhow::bail!("--serve needs --address, --loginid and --virtual-dir");
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut terminate =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        let bus = Bus::address(&address)
            .await
            .context("connecting to the bus")?;
        let (events_tx, events_rx) = mpsc::channel(64);
        let registry = Registry::spawn(events_rx, DeviceConfig::default());
        let transport = virt::spawn(VirtualConfig { dir: dir.into() }, events_tx)?;
        let mut config = LoginIdConfig::new(Url::parse(&loginid)?, APP.app_id);
        config.allow_http_loopback = true;
        let client = LoginIdClient::new(config)?;
        let ceremonies = Ceremonies::new(
            registry.clone(),
            client,
            CeremonyConfig::new(Url::parse(APP.origin)?),
        )?;
        let service =
            passkeyd::dbus::serve(&bus, ceremonies, registry.clone(), ServiceConfig::default())
                .await?;
        terminate.recv().await;
        service.shutdown().await;
        drop(transport);
        drop(registry);
        anyhow::Ok(())
    })
}
