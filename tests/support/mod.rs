//! Shared pieces of the LoginID client tests: an emulator plus a client pointed at it, and
//! the one place that turns creation options into a WebAuthn registration.
//!
//! `make_credential` is where the software authenticator stands in for the CTAP core and a
//! virtual key; swapping it for them changes this file only.

#![allow(dead_code)] // Each test binary uses a different subset.

#[path = "../../crates/ctap/tests/support/mod.rs"]
mod ctap_support;

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use loginid_emulator::soft_authenticator::{self, SoftAuthenticator};
use loginid_emulator::{Emulator, EmulatorConfig};
use passkeyd::loginid::dto::{CreationResult, GrantRequest, RegInitRequest, UsernameType, scope};
use passkeyd::loginid::{
    ApiKey, Base64Bytes, CreationOptions, LoginIdClient, LoginIdConfig, Token,
};
use tokio::time::Instant;
use url::Url;

pub(crate) const APP_ID: &str = "3f0c9a9e-1111-2222-3333-444455556666";
pub(crate) const ORIGIN: &str = "https://example.com";
pub(crate) const RP_ID: &str = "example.com";
pub(crate) const API_KEY: &str = "test-api-key-0123456789";
/// Deadline for steps that are expected to succeed: generous, for a loaded 2-core machine.
pub(crate) const GENEROUS: Duration = Duration::from_secs(60);

/// A directory removed on drop.
pub(crate) struct TempDir(pub(crate) PathBuf);

impl TempDir {
    pub(crate) fn new() -> Self {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .subsec_nanos();
        let path = std::env::temp_dir().join(format!(
            "passkeyd-test-{}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed),
            nanos
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

/// An emulator on 127.0.0.1 and a client for it.
pub(crate) struct Rig {
    pub(crate) emulator: Emulator,
    pub(crate) client: LoginIdClient,
    pub(crate) api_key: ApiKey,
    pub(crate) log: PathBuf,
    _dir: TempDir,
}

pub(crate) fn emulator_config() -> EmulatorConfig {
    EmulatorConfig::new(APP_ID, Url::parse(ORIGIN).unwrap(), RP_ID, API_KEY)
}

pub(crate) fn client_config(base_url: Url) -> LoginIdConfig {
    let mut config = LoginIdConfig::new(base_url, APP_ID);
    config.allow_http_loopback = true;
    config.connect_timeout = GENEROUS;
    config.request_timeout = GENEROUS;
    config.retry.initial_backoff = Duration::from_millis(20);
    config.retry.max_backoff = Duration::from_millis(200);
    config
}

impl Rig {
    pub(crate) async fn start(configure: impl FnOnce(&mut EmulatorConfig)) -> Self {
        Self::start_with(configure, |_| {}).await
    }

    pub(crate) async fn start_with(
        configure: impl FnOnce(&mut EmulatorConfig),
        configure_client: impl FnOnce(&mut LoginIdConfig),
    ) -> Self {
        let dir = TempDir::new();
        let log = dir.0.join("requests.jsonl");
        let mut config = emulator_config();
        config.request_log = Some(log.clone());
        configure(&mut config);
        let emulator = Emulator::start(config, "127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let mut client_config = client_config(emulator.base_url());
        configure_client(&mut client_config);
        let client = LoginIdClient::new(client_config).unwrap();
        Self {
            emulator,
            client,
            api_key: ApiKey::new(API_KEY),
            log,
            _dir: dir,
        }
    }

    pub(crate) async fn grant(&self, username: &str) -> Token {
        let request = GrantRequest {
            grants: vec![scope::REG_WRITE.to_owned()],
            username: Some(username.to_owned()),
        };
        self.client.grant(&self.api_key, &request).await.unwrap()
    }

    /// The request log's lines, once the emulator has written every request answered so
    /// far.
    pub(crate) async fn log_lines(&self) -> Vec<serde_json::Value> {
        self.log_text()
            .await
            .lines()
            .map(|line| serde_json::from_str(line).unwrap())
            .collect()
    }

    /// The request log's text, once the emulator has written every request answered so far.
    /// (A small file: read in place.)
    pub(crate) async fn log_text(&self) -> String {
        self.emulator.flush_log().await;
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Polls the request log until `done` accepts its lines: for lines of requests that
    /// never got an answer, which the emulator writes once it notices the closed
    /// connection.
    pub(crate) async fn wait_for_log(
        &self,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Vec<serde_json::Value> {
        let started = Instant::now();
        loop {
            let lines = self.log_lines().await;
            if done(&lines) {
                return lines;
            }
            assert!(
                started.elapsed() < GENEROUS,
                "log never got there: {lines:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

pub(crate) fn init_request(username: &str) -> RegInitRequest {
    RegInitRequest::for_security_key(APP_ID, username, UsernameType::Email, None)
}

pub(crate) fn deadline() -> Instant {
    Instant::now() + GENEROUS
}

/// The registration step of the ceremony: what the browser plus a security key produce for
/// `options` at `origin`. `adjust` may change the request, e.g. to make it wrong.
pub(crate) fn make_credential(
    options: &CreationOptions,
    origin: &str,
    adjust: impl FnOnce(&mut soft_authenticator::Request),
) -> CreationResult {
    let mut authenticator = SoftAuthenticator::new().unwrap();
    let mut request = soft_authenticator::Request {
        rp_id: options.rp.id.clone().unwrap_or_else(|| RP_ID.to_owned()),
        challenge: options.challenge.as_slice().to_vec(),
        origin: origin.to_owned(),
        ..soft_authenticator::Request::default()
    };
    adjust(&mut request);
    let registration = authenticator.make_credential(&request);
    CreationResult {
        attestation_object: Base64Bytes(registration.attestation_object),
        client_data_json: Base64Bytes(registration.client_data_json),
        credential_id: Base64Bytes(registration.credential_id),
        authenticator_data: Some(Base64Bytes(registration.authenticator_data)),
        public_key: Some(Base64Bytes(registration.public_key_spki)),
        public_key_algorithm: Some(request.alg),
        transports: Some(vec!["usb".to_owned()]),
    }
}

/// The registration step done for real: the CTAP core drives a virtual key running the
/// Nitrokey 3 / Solo 2 firmware over CTAPHID reports, with a PIN (LoginID asks for user
/// verification), exactly as the daemon's ceremony will.
pub(crate) fn make_credential_on_virtual_key(
    options: &CreationOptions,
    origin: &str,
) -> CreationResult {
    use ctap::command::client_pin::Permissions;
    use ctap::command::make_credential::{
        MakeCredential, Options, PinUvAuth, PublicKeyCredentialParameters, RelyingParty, Request,
        User,
    };
    use ctap::pin_uv::PinUvAuthProtocol;
    use ctap::webauthn::attestation::AttestationObject;
    use ctap::webauthn::client_data::{ClientDataType, CollectedClientData};

    let mut key = ctap_support::HidKey::start(virtkey::Config {
        pin: Some("1234".to_owned()),
        ..virtkey::Config::default()
    });
    let client_data = CollectedClientData::new(
        ClientDataType::Create,
        options.challenge.as_slice().to_vec(),
        origin,
    );
    let rp_id = options.rp.id.clone().unwrap_or_else(|| RP_ID.to_owned());
    let mut request = Request::new(
        client_data.hash(),
        RelyingParty {
            id: rp_id.clone(),
            name: Some(options.rp.name.clone()),
        },
        User {
            id: options.user.id.as_slice().to_vec(),
            name: Some(options.user.name.clone()),
            display_name: Some(options.user.display_name.clone()),
        },
        options
            .pub_key_cred_params
            .iter()
            .map(|p| PublicKeyCredentialParameters::public_key(p.alg))
            .collect(),
    );
    request.options = Options {
        rk: Some(true),
        ..Options::default()
    };
    let token = key
        .token_for(
            &rp_id,
            PinUvAuthProtocol::Two,
            "1234",
            Permissions::MAKE_CREDENTIAL,
        )
        .unwrap();
    request.pin_uv_auth = Some(PinUvAuth {
        param: token.authenticate(&client_data.hash()),
        protocol: 2,
    });
    let response = key.cbor(&MakeCredential::new(request).unwrap()).unwrap();
    let object = AttestationObject::from_response(response).unwrap();
    let auth_data = object.parsed_auth_data().unwrap();
    let credential = auth_data.attested_credential_data().unwrap();
    let cose_key = credential.cose_key().unwrap();
    CreationResult {
        attestation_object: Base64Bytes(object.to_cbor().unwrap()),
        client_data_json: Base64Bytes(client_data.to_json_bytes()),
        credential_id: Base64Bytes(credential.credential_id().to_vec()),
        authenticator_data: Some(Base64Bytes(object.auth_data)),
        public_key: Some(Base64Bytes(cose_key.to_spki_der().unwrap())),
        public_key_algorithm: cose_key.alg(),
        transports: Some(vec!["usb".to_owned()]),
    }
}
