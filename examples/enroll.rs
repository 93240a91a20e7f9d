//! The whole ceremony on the embedded default: a virtual security key running the real
//! Nitrokey 3 / Solo 2 firmware, served on a Unix socket and found by the daemon's virtual-key
//! transport, and the LoginID emulator on 127.0.0.1 — no hardware, no cloud.
//!
//! The UI's backend side (`mgmt/grant` with the API key) runs first, as it would; then the
//! daemon's side: `reg/init`, selection, the PIN (given unattended here, as a rig would),
//! makeCredential, `reg/complete`, and the LoginID token checked against the JWKS.
//!
//! Run with `cargo run --example enroll`; `bash scripts/demo` makes the same registration
//! through the daemon on D-Bus.

#![allow(clippy::print_stdout)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use loginid_emulator::{Emulator, EmulatorConfig, UserVerification};
use passkeyd::ceremony::{Ceremonies, CeremonyConfig, CeremonyRequest};
use passkeyd::device::{DeviceConfig, Registry, RegistryEvent};
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig};
use passkeyd::transport::virt::{self, VirtualConfig};
use tokio::sync::mpsc;
use url::Url;
use zeroize::Zeroizing;

const APP_ID: &str = "passkeyd-demo";
const ORIGIN: &str = "https://demo.example.com";
const RP_ID: &str = "example.com";
const API_KEY: &str = "demo-api-key-not-secret";
const PIN: &str = "1234";

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // LoginID, locally: UV required, so the key's PIN is used.
    let mut emulator_config = EmulatorConfig::new(APP_ID, Url::parse(ORIGIN)?, RP_ID, API_KEY);
    emulator_config.user_verification = UserVerification::Required;
    let emulator = Emulator::start(emulator_config, "127.0.0.1:0".parse()?)
        .await
        .context("starting the LoginID emulator")?;
    println!("LoginID emulator  {}", emulator.base_url());

    // A virtual key with a PIN, on a socket in a fresh directory.
    let dir = tempfile::tempdir()?;
    let key = Arc::new(virtkey::VirtKey::start(virtkey::Config {
        pin: Some(PIN.to_owned()),
        ..virtkey::Config::default()
    })?);
    let _server = virtkey::socket::serve(
        key,
        &dir.path().join("demo.sock"),
        virtkey::socket::ServeOptions::default(),
    )?;

    // The daemon's device side: the virtual-key transport feeding the registry.
    let (events_tx, events_rx) = mpsc::channel(64);
    let registry = Registry::spawn(events_rx, DeviceConfig::default());
    let mut subscription = registry.subscribe().await.context("registry stopped")?;
    let _transport = virt::spawn(
        VirtualConfig {
            dir: dir.path().to_owned(),
        },
        events_tx,
    )?;
    let device = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Ok(RegistryEvent::Added(info)) = subscription.events.recv().await {
                return info;
            }
        }
    })
    .await
    .context("no key appeared")?;
    println!(
        "security key      {} ({})",
        device.description.id, device.description.path
    );

    // The UI's backend: an authorization token for the user, scope reg:write.
    let mut client_config = LoginIdConfig::new(emulator.base_url(), APP_ID);
    client_config.allow_http_loopback = true;
    let client = LoginIdClient::new(client_config)?;
    let username = "alice@example.com";
    let grant = GrantRequest {
        grants: vec![scope::REG_WRITE.to_owned()],
        username: Some(username.to_owned()),
    };
    let authz = client.grant(&ApiKey::new(API_KEY), &grant).await?;
    println!("authorization     granted for {username} (scope reg:write)");

    // The ceremony.
    let ceremonies = Ceremonies::new(
        registry.clone(),
        client,
        CeremonyConfig::new(Url::parse(ORIGIN)?),
    )?;
    let mut request = CeremonyRequest::new(username.to_owned(), Some(authz));
    request.pin = Some(Zeroizing::new(PIN.to_owned()));
    let mut ceremony = ceremonies.start(request)?;
    while let Some(step) = ceremony.next().await {
        println!("ceremony          {}", step.state().as_str());
    }
    let registration = ceremony.result().await?;
    println!(
        "passkey           {} attestation, credential {}",
        registration.attestation_format,
        hex::encode(&registration.credential_id)
    );
    if let Some(claims) = &registration.claims {
        println!(
            "LoginID token     verified: username {}, sub {:?}",
            claims.username, claims.sub
        );
    }
    Ok(())
}
