//! `loginid-emulator`: a local LoginID FIDO2 v2 API for tests, development and rigs.
//!
//! `loginid-emulator --listen 127.0.0.1:0 --port-file F --app-id ID --origin URL --rp-id ID
//! --api-key KEY [--protected]` — the port file receives the bound port once the emulator
//! listens. `--api-key-file FILE` instead of `--api-key` keeps the key out of the process
//! list.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::Parser;
use loginid_emulator::{
    Attestation, Emulator, EmulatorConfig, FaultPlan, ResidentKey, UserVerification,
};
use url::Url;

/// Local emulator of the LoginID FIDO2 v2 API (loopback only).
#[derive(Debug, Parser)]
#[command(version, about)]
struct Args {
    /// Address to listen on; must be a loopback address. Port 0 picks a free port.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: SocketAddr,
    /// Write the bound port (decimal, newline-terminated) to this file once listening.
    #[arg(long, value_name = "FILE")]
    port_file: Option<PathBuf>,
    /// LoginID application id.
    #[arg(long)]
    app_id: String,
    /// Allowed origin for clientDataJSON (repeatable).
    #[arg(long = "origin", required = true)]
    origins: Vec<Url>,
    /// RP ID.
    #[arg(long)]
    rp_id: String,
    /// RP name (defaults to the RP ID).
    #[arg(long)]
    rp_name: Option<String>,
    /// Application API key (HTTP Basic `key:` on management and admin endpoints). Visible to
    /// other local users in the process list; `--api-key-file` is not.
    #[arg(long, required_unless_present = "api_key_file")]
    api_key: Option<String>,
    /// Read the application API key from this file (one line; a trailing newline is ignored).
    #[arg(long, value_name = "FILE", conflicts_with = "api_key")]
    api_key_file: Option<PathBuf>,
    /// Protected application: every registration needs a `reg:write` token.
    #[arg(long)]
    protected: bool,
    /// User verification requested and enforced.
    #[arg(
        long,
        default_value = "required",
        value_name = "required|preferred|discouraged"
    )]
    user_verification: UserVerification,
    /// Resident key requested.
    #[arg(
        long,
        default_value = "required",
        value_name = "required|preferred|discouraged"
    )]
    resident_key: ResidentKey,
    /// Attestation conveyance requested.
    #[arg(long, default_value = "direct", value_name = "none|indirect|direct")]
    attestation: Attestation,
    /// Ceremony timeout and registration session lifetime, in milliseconds.
    #[arg(long, default_value_t = 300_000)]
    timeout_ms: u64,
    /// Lifetime of grant tokens, in seconds.
    #[arg(long, default_value_t = 60)]
    grant_ttl_secs: u64,
    /// Lifetime of LoginID tokens, in seconds.
    #[arg(long, default_value_t = 600)]
    token_ttl_secs: u64,
    /// Emit standard base64 with padding in reg/init options.
    #[arg(long)]
    padded_base64: bool,
    /// JSON file with the initial fault plan (see docs/loginid.md).
    #[arg(long, value_name = "FILE")]
    faults: Option<PathBuf>,
    /// Append the JSON-lines request log to this file.
    #[arg(long, value_name = "FILE")]
    request_log: Option<PathBuf>,
}

/// The API key from `--api-key` or `--api-key-file`.
async fn api_key(args: &Args) -> anyhow::Result<String> {
    let key = match (&args.api_key, &args.api_key_file) {
        (Some(key), _) => key.clone(),
        (None, Some(path)) => {
            let text = tokio::fs::read_to_string(path)
                .await
                .with_context(|| format!("reading {}", path.display()))?;
            let key = text.strip_suffix('\n').unwrap_or(&text);
            key.strip_suffix('\r').unwrap_or(key).to_owned()
        }
        // clap requires one of the two.
        (None, None) => anyhow::bail!("--api-key or --api-key-file is required"),
    };
    if key.is_empty() || key.contains(['\r', '\n']) {
        anyhow::bail!("the API key must be one non-empty line");
    }
    Ok(key)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let api_key = api_key(&args).await?;
    let mut config = EmulatorConfig::new(
        args.app_id,
        args.origins[0].clone(),
        args.rp_id.clone(),
        api_key,
    );
    config.origins = args.origins;
    config.rp_name = args.rp_name.unwrap_or(args.rp_id);
    config.protected = args.protected;
    config.user_verification = args.user_verification;
    config.resident_key = args.resident_key;
    config.attestation = args.attestation;
    config.timeout = Duration::from_millis(args.timeout_ms);
    config.grant_ttl = Duration::from_secs(args.grant_ttl_secs);
    config.access_token_ttl = Duration::from_secs(args.token_ttl_secs);
    config.padded_base64 = args.padded_base64;
    config.request_log = args.request_log;
    if let Some(path) = &args.faults {
        let text = tokio::fs::read_to_string(path)
            .await
            .with_context(|| format!("reading {}", path.display()))?;
        config.faults = serde_json::from_str::<FaultPlan>(&text)
            .with_context(|| format!("parsing fault plan {}", path.display()))?;
    }

    let emulator = Emulator::start(config, args.listen).await?;
    if let Some(path) = &args.port_file {
        // Written to a temporary name and renamed, so that a reader never sees a partial port.
        let tmp = path.with_extension("tmp");
        tokio::fs::write(&tmp, format!("{}\n", emulator.addr().port()))
            .await
            .with_context(|| format!("writing {}", tmp.display()))?;
        tokio::fs::rename(&tmp, path)
            .await
            .with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("loginid-emulator listening on {}", emulator.base_url());

    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    // Lines still queued for the request log go to the file before the process ends.
    emulator.flush_log().await;
    emulator.shutdown();
    Ok(())
}
