//! Rig for the ceremony tests: the device registry with in-process virtual keys (the Trussed
//! firmware, bridged by `device_support`), the LoginID emulator on 127.0.0.1, a LoginID
//! client and the `Ceremonies` under test; and a driver that answers prompts and records
//! every progress step.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, unreachable_pub)]

#[path = "../device_support/mod.rs"]
pub mod device_support;

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use device_support::{ApduBridge, GENEROUS, HidBridge, Rig as DeviceRig};
use loginid_emulator::{Emulator, EmulatorConfig, ResidentKey, UserVerification};
use passkeyd::ceremony::{
    CancelReason, Ceremonies, Ceremony, CeremonyConfig, CeremonyError, CeremonyRequest, ErrorKind,
    NewPinPromptReason, PinPromptReason, Progress, Registration,
};
use passkeyd::device::{Authenticator, RegistryEvent};
use passkeyd::loginid::dto::{GrantRequest, scope};
use passkeyd::loginid::{ApiKey, LoginIdClient, LoginIdConfig, Token};
use passkeyd::transport::{Connection, Transport};
use tokio::time::timeout;
use url::Url;
use virtkey::Config;
use zeroize::Zeroizing;

pub const APP_ID: &str = "5b1c2d3e-aaaa-bbbb-cccc-ddddeeeeffff";
pub const ORIGIN: &str = "https://example.com";
pub const RP_ID: &str = "example.com";
pub const API_KEY: &str = "ceremony-test-api-key-0123456789";

/// A directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new() -> Self {
        let path = std::env::temp_dir().join(format!(
            "passkeyd-ceremony-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Emulator settings for a test: the relying party's side of the ceremony.
pub fn emulator_config() -> EmulatorConfig {
    EmulatorConfig::new(APP_ID, Url::parse(ORIGIN).unwrap(), RP_ID, API_KEY)
}

/// An RP that asks for neither user verification nor a discoverable credential: plain
/// touch-only registrations.
pub fn touch_only(config: &mut EmulatorConfig) {
    config.user_verification = UserVerification::Discouraged;
    config.resident_key = ResidentKey::Discouraged;
}

pub struct Rig {
    pub devices: DeviceRig,
    pub emulator: Emulator,
    pub client: LoginIdClient,
    pub ceremonies: Ceremonies,
    pub api_key: ApiKey,
    pub log: PathBuf,
    _dir: TempDir,
}

impl Rig {
    pub async fn start(configure: impl FnOnce(&mut EmulatorConfig)) -> Self {
        Self::start_with(configure, |_| {}).await
    }

    pub async fn start_with(
        configure: impl FnOnce(&mut EmulatorConfig),
        configure_ceremony: impl FnOnce(&mut CeremonyConfig),
    ) -> Self {
        Self::start_on(DeviceRig::start().await, configure, configure_ceremony).await
    }

    /// Like [`Rig::start_with`], on a registry the caller assembled (e.g. fed by a real
    /// transport).
    pub async fn start_on(
        devices: DeviceRig,
        configure: impl FnOnce(&mut EmulatorConfig),
        configure_ceremony: impl FnOnce(&mut CeremonyConfig),
    ) -> Self {
        let dir = TempDir::new();
        let log = dir.0.join("requests.jsonl");
        let mut config = emulator_config();
        config.request_log = Some(log.clone());
        configure(&mut config);
        let emulator = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut client_config = LoginIdConfig::new(emulator.base_url(), APP_ID);
        client_config.allow_http_loopback = true;
        client_config.connect_timeout = GENEROUS;
        client_config.request_timeout = GENEROUS;
        client_config.retry.initial_backoff = Duration::from_millis(20);
        client_config.retry.max_backoff = Duration::from_millis(200);
        let client = LoginIdClient::new(client_config).unwrap();
        let mut ceremony_config = CeremonyConfig::new(Url::parse(ORIGIN).unwrap());
        ceremony_config.min_timeout = Duration::from_millis(100);
        ceremony_config.default_timeout = GENEROUS;
        ceremony_config.max_timeout = GENEROUS * 2;
        configure_ceremony(&mut ceremony_config);
        let ceremonies =
            Ceremonies::new(devices.registry.clone(), client.clone(), ceremony_config).unwrap();
        Self {
            devices,
            emulator,
            client,
            ceremonies,
            api_key: ApiKey::new(API_KEY),
            log,
            _dir: dir,
        }
    }

    /// An authorization token for `username` with `reg:write`, as a UI's backend gets it.
    pub async fn grant(&self, username: &str) -> Token {
        let request = GrantRequest {
            grants: vec![scope::REG_WRITE.to_owned()],
            username: Some(username.to_owned()),
        };
        self.client.grant(&self.api_key, &request).await.unwrap()
    }

    /// A request for `username` with a fresh grant.
    pub async fn request(&self, username: &str) -> CeremonyRequest {
        CeremonyRequest::new(username, Some(self.grant(username).await))
    }

    /// Plugs a virtual USB-like key and waits until the registry has probed it.
    pub async fn plug(&mut self, name: &str, config: Config) -> HidBridge {
        let (bridge, connection) = HidBridge::start(config);
        self.plug_connection(name, Transport::Virtual, connection)
            .await;
        bridge
    }

    /// Taps a virtual NFC card on a reader and waits until the registry has probed it.
    pub async fn tap(&mut self, name: &str, config: Config) -> ApduBridge {
        let (bridge, connection) = ApduBridge::start(config);
        self.plug_connection(name, Transport::Nfc, connection).await;
        bridge
    }

    pub async fn plug_connection(
        &mut self,
        name: &str,
        transport: Transport,
        connection: Connection,
    ) {
        self.devices.plug(name, transport, connection).await;
        let device = self.devices.added().await;
        assert_eq!(
            device.id().as_str(),
            format!("{}_{name}", transport.as_str())
        );
    }

    /// The key with this registry id.
    pub async fn key(&self, id: &str) -> Authenticator {
        let devices = self.devices.registry.list().await;
        devices
            .into_iter()
            .find(|d| d.id().as_str() == id)
            .expect("the key is present")
            .authenticator
    }

    /// Waits until the registry shows key `id` idle.
    pub async fn wait_idle(&self, id: &str) {
        let give_up = tokio::time::Instant::now() + GENEROUS;
        loop {
            let devices = self.devices.registry.list().await;
            if devices.iter().any(|d| d.id().as_str() == id && !d.busy) {
                return;
            }
            assert!(tokio::time::Instant::now() < give_up, "{id} stays busy");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Lines of the emulator's request log for `path` (e.g. `/fido2/v2/reg/complete`), with
    /// their statuses.
    pub async fn statuses(&self, path: &str) -> Vec<Option<u64>> {
        self.emulator.flush_log().await;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
            .filter(|line| line["path"] == path)
            .map(|line| line["status"].as_u64())
            .collect()
    }

    /// Checks a completed registration the way the UI's backend would: the token is a
    /// LoginID token of this application for `username`, and LoginID's `token/verify`
    /// accepts it.
    pub async fn check_registration(&self, registration: &Registration, username: &str) {
        let claims = registration
            .claims
            .as_ref()
            .expect("the token was verified");
        assert_eq!(claims.username, username);
        assert_eq!(claims.token_type.as_deref(), Some("jwtAccess"));
        assert_eq!(claims.rp_id.as_deref(), Some(RP_ID));
        assert!(registration.passkey_id.is_some());
        assert!(!registration.credential_id.is_empty());
        self.client
            .verify_token(&self.api_key, &registration.token)
            .await
            .unwrap();
    }
}

/// A progress step as recorded by the driver (prompts without their reply channels).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    Selecting(Vec<String>),
    NeedsPin {
        key: String,
        retries: Option<u32>,
        reason: PinPromptReason,
    },
    NeedsNewPin {
        key: String,
        min_length: u32,
        reason: NewPinPromptReason,
    },
    NeedsTouch(String),
    Registering(String),
    Completed(String),
    Failed(ErrorKind),
    Cancelled(CancelReason),
}

/// `seen` without its `needs-touch` steps. With a key that is touched at once, whether the
/// key reports "touch needed" (a KEEPALIVE UPNEEDED) before the touch lands depends on how
/// fast the firmware runs on a loaded machine, so tests of such keys compare the other steps.
pub fn without_touch(seen: &[Seen]) -> Vec<Seen> {
    seen.iter()
        .filter(|s| !matches!(s, Seen::NeedsTouch(_)))
        .cloned()
        .collect()
}

/// Drives a ceremony: answers PIN prompts from a script, records every step.
pub struct Driver {
    pub ceremony: Ceremony,
    pins: VecDeque<&'static str>,
    new_pins: VecDeque<&'static str>,
    pub seen: Vec<Seen>,
}

impl Driver {
    pub fn new(ceremony: Ceremony) -> Self {
        Self {
            ceremony,
            pins: VecDeque::new(),
            new_pins: VecDeque::new(),
            seen: Vec::new(),
        }
    }

    /// PINs to answer `needs-pin` prompts with, in order; once they run out, prompts are
    /// dropped unanswered.
    pub fn pins(mut self, pins: &[&'static str]) -> Self {
        self.pins.extend(pins);
        self
    }

    /// PINs to answer `needs-new-pin` prompts with, in order.
    pub fn new_pins(mut self, pins: &[&'static str]) -> Self {
        self.new_pins.extend(pins);
        self
    }

    /// The next step, answered and recorded; `None` once the stream has ended.
    pub async fn step(&mut self) -> Option<Seen> {
        let progress = timeout(GENEROUS, self.ceremony.next())
            .await
            .expect("the ceremony makes progress")?;
        let seen = match progress {
            Progress::Selecting { keys } => {
                Seen::Selecting(keys.iter().map(|k| k.as_str().to_owned()).collect())
            }
            Progress::NeedsPin(prompt) => {
                let seen = Seen::NeedsPin {
                    key: prompt.key.as_str().to_owned(),
                    retries: prompt.retries,
                    reason: prompt.reason,
                };
                if let Some(pin) = self.pins.pop_front() {
                    prompt.submit(Zeroizing::new(pin.to_owned()));
                }
                seen
            }
            Progress::NeedsNewPin(prompt) => {
                let seen = Seen::NeedsNewPin {
                    key: prompt.key.as_str().to_owned(),
                    min_length: prompt.min_length,
                    reason: prompt.reason,
                };
                assert_eq!(prompt.max_bytes, 63);
                if let Some(pin) = self.new_pins.pop_front() {
                    prompt.submit(Zeroizing::new(pin.to_owned()));
                }
                seen
            }
            Progress::NeedsTouch { key } => Seen::NeedsTouch(key.as_str().to_owned()),
            Progress::Registering { key } => Seen::Registering(key.as_str().to_owned()),
            Progress::Completed { key, credential_id } => {
                assert!(!credential_id.is_empty());
                Seen::Completed(key.as_str().to_owned())
            }
            Progress::Failed { kind, reason, .. } => {
                assert!(!reason.is_empty());
                Seen::Failed(kind)
            }
            Progress::Cancelled { reason } => Seen::Cancelled(reason),
            other => panic!("unexpected step {other:?}"),
        };
        self.seen.push(seen.clone());
        Some(seen)
    }

    /// Steps until one matches `wanted`; returns it.
    pub async fn until(&mut self, wanted: impl Fn(&Seen) -> bool) -> Seen {
        loop {
            let seen = self.step().await.expect("the step comes before the end");
            if wanted(&seen) {
                return seen;
            }
        }
    }

    /// Runs to the end: every step, then the result.
    pub async fn finish(mut self) -> (Vec<Seen>, Result<Registration, CeremonyError>) {
        while self.step().await.is_some() {}
        let result = timeout(GENEROUS, self.ceremony.result())
            .await
            .expect("the result comes");
        (self.seen, result)
    }
}

/// Waits until the registry has reported each key of `ids` busy (`true`) or idle (`false`).
pub async fn busy_flags(
    events: &mut tokio::sync::broadcast::Receiver<RegistryEvent>,
    ids: &[&str],
    busy: bool,
) {
    let mut waiting: Vec<&str> = ids.to_vec();
    while !waiting.is_empty() {
        let event = timeout(GENEROUS, events.recv()).await.unwrap().unwrap();
        if let RegistryEvent::Changed(device) = event
            && device.busy == busy
        {
            waiting.retain(|id| *id != device.id().as_str());
        }
    }
}

impl Rig {
    /// Registers a passkey for `username` on some other authenticator (the emulator's
    /// software one), straight through the LoginID client: a credential the keys under test
    /// do not hold, which then shows up in the user's exclude list.
    pub async fn register_elsewhere(&self, username: &str) -> Vec<u8> {
        use loginid_emulator::soft_authenticator::{self, SoftAuthenticator};
        use passkeyd::loginid::Base64Bytes;
        use passkeyd::loginid::dto::{
            CreationResult, RegCompleteRequest, RegInitRequest, UsernameType,
        };
        let deadline = tokio::time::Instant::now() + GENEROUS;
        let token = self.grant(username).await;
        let init = RegInitRequest::for_security_key(APP_ID, username, UsernameType::Email, None);
        let options = self
            .client
            .reg_init(&init, Some(&token), deadline)
            .await
            .unwrap();
        let request = soft_authenticator::Request {
            rp_id: RP_ID.to_owned(),
            challenge: options.registration_request_options.challenge.0.clone(),
            origin: ORIGIN.to_owned(),
            ..soft_authenticator::Request::default()
        };
        let registration = SoftAuthenticator::new().unwrap().make_credential(&request);
        let complete = RegCompleteRequest {
            creation_result: CreationResult {
                attestation_object: Base64Bytes(registration.attestation_object),
                client_data_json: Base64Bytes(registration.client_data_json),
                credential_id: Base64Bytes(registration.credential_id.clone()),
                authenticator_data: Some(Base64Bytes(registration.authenticator_data)),
                public_key: Some(Base64Bytes(registration.public_key_spki)),
                public_key_algorithm: Some(-7),
                transports: Some(vec!["usb".to_owned()]),
            },
            session: options.session,
            passkey_name: None,
        };
        self.client.reg_complete(&complete, deadline).await.unwrap();
        registration.credential_id
    }
}
