//! The device layer over the real NFC transport: pcscd with vsmartcard's virtual reader
//! (vpcd), virtkey's firmware as the card (TCP 35963), the NFC transport feeding a registry.
//!
//! `PASSKEYD_PCSCD=1` says pcscd runs with the vpcd reader (`scripts/start-pcscd`); the test
//! then requires it. Without the variable it only says that it skipped.

// Test helpers outside #[test] functions panic on purpose, like the tests themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod vpcd_lock;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use ctap::command::make_credential::{
    MakeCredential, Options, PublicKeyCredentialParameters, RelyingParty, Request, User,
};
use ctap::cose::CoseAlgorithm;
use ctap::iso7816::AppletVersion;
use ctap::webauthn::attestation::AttestationObject;
use ctap::webauthn::auth_data::Flags;
use passkeyd::device::{DeviceConfig, DeviceInfo, LinkInfo, Registry, RegistryEvent, Subscription};
use passkeyd::transport::nfc::{self, NfcConfig};
use passkeyd::transport::{DeviceId, Transport};
use tokio::sync::{broadcast, mpsc};
use tokio::time::{Instant, timeout};
use virtkey::{AAGUID, Config, VirtKey, vpcd};

/// Where vpcd listens for the card (Debian's `/etc/reader.conf.d/vpcd`).
const VPCD_ADDR: &str = "127.0.0.1:35963";
/// The reader vpcd's first slot shows up as.
const READER: &str = "Virtual PCD 00 00";
/// pcscd polls vpcd for the card about every 400 ms, and the registry probes the card (SELECT,
/// getInfo) before it announces it; this leaves room on a loaded machine.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);
const RP_ID: &str = "example.org";

/// The next registry event other than a busy/info change, failing after `EVENT_TIMEOUT`.
async fn next_event(events: &mut broadcast::Receiver<RegistryEvent>) -> RegistryEvent {
    loop {
        let event = timeout(EVENT_TIMEOUT, events.recv())
            .await
            .expect("no registry event in time")
            .expect("the registry ended");
        if !matches!(event, RegistryEvent::Changed(_)) {
            return event;
        }
    }
}

/// Waits for the card in vpcd's reader, skipping other readers' cards.
async fn card_added(events: &mut broadcast::Receiver<RegistryEvent>) -> DeviceInfo {
    loop {
        match next_event(events).await {
            RegistryEvent::Added(device) if device.description.path == READER => return device,
            other => eprintln!("ignoring {other:?}"),
        }
    }
}

async fn card_removed(events: &mut broadcast::Receiver<RegistryEvent>, id: &DeviceId) {
    loop {
        match next_event(events).await {
            RegistryEvent::Removed(removed) if &removed == id => return,
            other => eprintln!("ignoring {other:?}"),
        }
    }
}

/// virtkey's card in vpcd's reader, served on a thread until removed.
struct VirtualCard {
    stop: Arc<AtomicBool>,
    thread: thread::JoinHandle<Result<(), vpcd::VpcdError>>,
}

impl VirtualCard {
    fn insert(key: &Arc<VirtKey>) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (key, stop) = (Arc::clone(key), Arc::clone(&stop));
            thread::spawn(move || vpcd::serve(key, VPCD_ADDR, &stop))
        };
        Self { stop, thread }
    }

    fn remove(self) {
        self.stop.store(true, Ordering::Relaxed);
        self.thread.join().unwrap().unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_card_through_pcscd_is_listed_makes_a_credential_and_is_removed() {
    match std::env::var("PASSKEYD_PCSCD").as_deref() {
        Ok("1") => {}
        _ => {
            eprintln!(
                "skipped: set PASSKEYD_PCSCD=1 with pcscd and vsmartcard-vpcd running \
                 (scripts/start-pcscd)"
            );
            return;
        }
    }
    // tests/nfc_transport.rs serves its card on the same port.
    let _vpcd = vpcd_lock::acquire().await;
    let (events_tx, events_rx) = mpsc::channel(16);
    let transport = nfc::spawn(NfcConfig::default(), events_tx).unwrap();
    let registry = Registry::spawn(events_rx, DeviceConfig::default());
    let Subscription { mut events, .. } = registry.subscribe().await.unwrap();
    // vpcd's readers are there, empty.
    loop {
        match next_event(&mut events).await {
            RegistryEvent::EnumerationComplete(Transport::Nfc) => break,
            RegistryEvent::TransportUnavailable { reason, .. } => {
                panic!("PASSKEYD_PCSCD=1 but pcscd does not answer: {reason}")
            }
            other => eprintln!("ignoring {other:?}"),
        }
    }

    let key = Arc::new(VirtKey::start(Config::default()).unwrap());
    let card = VirtualCard::insert(&key);
    let device = card_added(&mut events).await;
    assert_eq!(device.id().as_str(), "nfc_Virtual_PCD_00_00");
    assert_eq!(device.transport(), Transport::Nfc);
    assert_eq!(
        device.link,
        Some(LinkInfo::Apdu {
            applet: AppletVersion::U2fV2
        })
    );
    // getInfo was read through pcscd when the card came, and is cached in the listing.
    let info = device.info.clone().expect("getInfo of the card");
    assert_eq!(info.aaguid, AAGUID);
    assert!(!info.client_pin().is_on());
    let listed = registry.list().await;
    let listed = listed
        .iter()
        .find(|d| d.id() == device.id())
        .expect("the card is listed");
    assert_eq!(listed.info, Some(Arc::clone(&info)));
    let card_key = device.authenticator.clone();
    assert_eq!(card_key.info(), Some(info));

    // makeCredential without a PIN, not resident.
    let client_data_hash = [0x42; 32];
    let mut request = Request::new(
        client_data_hash,
        RelyingParty {
            id: RP_ID.to_owned(),
            name: Some("Example".to_owned()),
        },
        User {
            id: vec![0x07; 16],
            name: Some("alice".to_owned()),
            display_name: Some("Alice".to_owned()),
        },
        vec![PublicKeyCredentialParameters::public_key(
            ctap::cose::alg::ES256,
        )],
    );
    request.options = Options {
        rk: Some(false),
        ..Options::default()
    };
    let response = card_key
        .make_credential(
            &MakeCredential::new(request).unwrap(),
            Instant::now() + EVENT_TIMEOUT,
        )
        .result()
        .await
        .unwrap();
    let object = AttestationObject::from_response(response).unwrap();
    assert_eq!(object.fmt, "packed");
    let auth_data = object.parsed_auth_data().unwrap();
    assert!(auth_data.check_rp_id(RP_ID));
    assert!(auth_data.flags().contains(Flags::UP | Flags::AT));
    assert!(!auth_data.flags().contains(Flags::UV));
    let credential = auth_data.attested_credential_data().unwrap();
    assert_eq!(credential.aaguid(), &AAGUID);
    assert!(!credential.credential_id().is_empty());
    assert_eq!(credential.algorithm(), Some(CoseAlgorithm::Es256));

    // The card leaves the reader: the key is removed.
    card.remove();
    card_removed(&mut events, device.id()).await;
    assert!(registry.list().await.iter().all(|d| d.id() != device.id()));
    drop(transport);
}
