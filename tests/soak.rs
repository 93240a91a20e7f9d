//! The CI-sized soak: 200 ceremonies through the daemon's stack (registry, virtual-key
//! transport over `virtkey` sockets, LoginID client, `Ceremonies`) against four keys in
//! parallel, two of them with a PIN, and the LoginID emulator, all in this process. Every
//! ceremony must complete; resident memory may grow by less than 5 MiB after the warm-up;
//! the open descriptors and live tasks must come back to what they were; no ceremony may be
//! left. The full run (10,000, keys and emulator in their own processes) is `scripts/soak`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../examples/soak/driver.rs"]
mod driver;

use std::sync::Arc;
use std::time::Duration;

use driver::{Grant, InProcess, LiveCeremonies, Soak, SoakKey};
use loginid_emulator::{Emulator, EmulatorConfig, ResidentKey, UserVerification};
use passkeyd::ceremony::{Ceremonies, CeremonyConfig};
use passkeyd::device::{DeviceConfig, Registry, RegistryEvent};
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig};
use passkeyd::transport::virt::{self, VirtualConfig};
use tokio::sync::mpsc;
use url::Url;

const CEREMONIES: usize = 200;
const WARMUP: usize = 40;
const KEYS: usize = 4;
const APP_ID: &str = "soak-app";
const ORIGIN: &str = "https://soak.example.com";
const API_KEY: &str = "soak-test-api-key";
const PIN: &str = "Soak-2468";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_ceremonies_leave_nothing_behind() {
    let mut config =
        EmulatorConfig::new(APP_ID, Url::parse(ORIGIN).unwrap(), "example.com", API_KEY);
    config.protected = true;
    config.user_verification = UserVerification::Preferred;
    config.resident_key = ResidentKey::Discouraged;
    let emulator = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
        .await
        .unwrap();

    // The keys: the firmware in this process, each on its own socket.
    let dir = tempfile::tempdir().unwrap();
    let mut servers = Vec::new();
    for i in 0..KEYS {
        let key = virtkey::VirtKey::start(virtkey::Config {
            pin: (i % 2 == 0).then(|| PIN.to_owned()),
            ..virtkey::Config::default()
        })
        .unwrap();
        servers.push(
            virtkey::socket::serve(
                Arc::new(key),
                &dir.path().join(format!("k{i}.sock")),
                virtkey::socket::ServeOptions::default(),
            )
            .unwrap(),
        );
    }

    // The daemon's side.
    let (events_tx, events_rx) = mpsc::channel(64);
    let registry = Registry::spawn(events_rx, DeviceConfig::default());
    let mut subscription = registry.subscribe().await.unwrap();
    let _transport = virt::spawn(
        VirtualConfig {
            dir: dir.path().to_owned(),
        },
        events_tx,
    )
    .unwrap();
    let mut keys = Vec::new();
    while keys.len() < KEYS {
        let event = tokio::time::timeout(Duration::from_secs(120), subscription.events.recv())
            .await
            .expect("every key appears")
            .unwrap();
        if let RegistryEvent::Added(info) = event {
            let has_pin = info.info.as_ref().unwrap().client_pin().is_on();
            keys.push(SoakKey {
                id: info.id().clone(),
                pin: has_pin.then(|| PIN.to_owned()),
            });
        }
    }
    assert_eq!(keys.iter().filter(|k| k.pin.is_some()).count(), KEYS / 2);

    let mut client_config = LoginIdConfig::new(emulator.base_url(), APP_ID);
    client_config.allow_http_loopback = true;
    let client = LoginIdClient::new(client_config).unwrap();
    let ceremonies = Ceremonies::new(
        registry.clone(),
        client.clone(),
        CeremonyConfig::new(Url::parse(ORIGIN).unwrap()),
    )
    .unwrap();
    let grant: Grant = Arc::new(move |username| {
        let client = client.clone();
        Box::pin(async move {
            let request = GrantRequest {
                grants: vec![scope::REG_WRITE.to_owned()],
                username: Some(username),
            };
            client.grant(&ApiKey::new(API_KEY), &request).await.ok()
        })
    });
    let soak = Soak {
        ceremonies: CEREMONIES,
        warmup: WARMUP,
        keys,
        run: "ci".into(),
        ceremony_deadline: Duration::from_secs(120),
    };
    let counter = LiveCeremonies::default();
    counter.install();
    let target = Arc::new(InProcess {
        ceremonies,
        registry: registry.clone(),
        counter: counter.clone(),
    });
    let report = driver::run(target, &grant, &soak).await;
    println!("{report}");
    assert!(report.start.rss > 0 && report.start.fds > 0, "{report}");
    assert!(report.failures.is_empty(), "{report}");
    // The live count is only worth something if it saw every ceremony come and go.
    assert_eq!(counter.started(), CEREMONIES);
    assert_eq!(report.violations(), Vec::<String>::new(), "{report}");
}
