//! The daemon: the transports feeding the device [`Registry`], the ceremonies, and the D-Bus
//! service, until shutdown.
//!
//! [`run`] is all of `passkeyd` but its command line, logging set-up, runtime and signals
//! (`src/bin/passkeyd.rs`); tests call it in-process on a private bus. In order:
//!
//! 1. Everything that can be refused is checked before anything starts: the allow-list's
//!    names are looked up, the LoginID client and the ceremony settings are built.
//! 2. The registry starts and is subscribed to, then the enabled transports ([`Config`]), so
//!    that not even the keys present at start-up are missed.
//! 3. The D-Bus service exports its objects, then owns its name; systemd is told `READY=1`
//!    (Type=notify) and, when it asks for a watchdog, pinged after each round trip through
//!    the registry.
//! 4. Every key the registry announces is logged with its getInfo summary (versions,
//!    AAGUID), its transport and its id; every removal with its id.
//!
//! **Shutdown.** When the `shutdown` future resolves, systemd is told `STOPPING=1`; the
//! service cancels every ceremony (each sends CANCEL to the keys it uses) and waits for them,
//! then releases its name; the transports stop (no new keys; the NFC monitor thread is
//! cancelled and joined off the runtime's workers, since that may take a moment); last, the
//! registry handle is dropped, which ends the registry and with it every device actor.
//!
//! **Idle.** Nothing here wakes up on a timer, except the watchdog when systemd asks for one
//! (`WatchdogSec=`, one ping per half period): the loop waits on the shutdown future and the
//! registry's events only (see the transport and device layer invariants for the rest).

mod config;

use std::fmt::{self, Write as _};
use std::future::Future;
use std::time::Duration;

use ctap::command::get_info;
use tokio::sync::{broadcast::error::RecvError, mpsc};
use tracing::{debug, info, warn};

pub use self::config::{
    AccessConfig, Config, ConfigError, DEFAULT_CONFIG_PATH, Principal, ResolvedAccess,
};
use crate::ceremony::{self, Ceremonies};
use crate::dbus::{self, AccessPolicy, Bus, Limits, ServiceConfig};
use crate::device::{DeviceInfo, LinkInfo, Registry, RegistryEvent, RegistryHandle};
use crate::loginid::{self, LoginIdClient};
use crate::transport::{
    TransportEvent,
    nfc::{self, NfcError, NfcTransport},
    usb::{self, UsbError, UsbTransport},
    virt::{self, VirtualError, VirtualTransport},
};

/// How many transport events may wait for the registry. Plugs come in bursts at start-up
/// (every key present); the transports wait when the registry is behind.
const TRANSPORT_EVENTS: usize = 64;

/// The longest text taken from a device for one log field; the rest is cut.
const MAX_LOGGED_TEXT: usize = 64;

/// Why the daemon stopped with an error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DaemonError {
    /// The configuration names a user or group that does not exist.
    #[error("configuration")]
    Config(#[from] ConfigError),
    /// The LoginID settings were refused (or its HTTP client could not be built).
    #[error("LoginID settings")]
    LoginId(#[from] loginid::Error),
    /// The ceremony settings were refused.
    #[error("ceremony settings")]
    Ceremony(#[from] ceremony::ConfigError),
    /// The D-Bus service could not start (its name is taken, the bus refused it...).
    #[error("starting the D-Bus service")]
    Dbus(#[from] dbus::DbusError),
    /// The USB transport could not start.
    #[error("starting the USB transport")]
    Usb(#[from] UsbError),
    /// The NFC transport could not start.
    #[error("starting the NFC transport")]
    Nfc(#[from] NfcError),
    /// The virtual-key transport could not start.
    #[error("starting the virtual-key transport")]
    Virtual(#[from] VirtualError),
    /// The device registry ended although the daemon still holds its handle (its task
    /// panicked).
    #[error("the device registry stopped unexpectedly")]
    RegistryEnded,
}

/// Runs the daemon on `bus` until `shutdown` resolves (then `Ok`), or until it cannot go on.
/// Must be called inside a tokio runtime with IO and time enabled.
pub async fn run(
    bus: Bus,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> Result<(), DaemonError> {
    // 1. What can be refused, before anything starts.
    let access = config.access.resolve()?;
    let loginid = LoginIdClient::new(config.loginid.clone())?;

    // 2. Keys.
    let (events_tx, events_rx) = mpsc::channel(TRANSPORT_EVENTS);
    let registry = Registry::spawn(events_rx, config.device.clone());
    let ceremonies = Ceremonies::new(registry.clone(), loginid, config.ceremony.clone())?;
    // Subscribed before any transport starts: every key is seen, those present at start-up too.
    let mut subscription = registry
        .subscribe()
        .await
        .ok_or(DaemonError::RegistryEnded)?;
    let mut transports = Transports::default();
    if let Err(error) = transports.start(&config, &events_tx) {
        transports.stop().await;
        return Err(error);
    }
    // The transports hold the only senders now: the registry sees the end of hotplug once
    // they are gone.
    drop(events_tx);

    // 3. The service.
    let service_config = ServiceConfig {
        access: AccessPolicy {
            allowed_uids: access.uids,
            allowed_gids: access.gids,
            polkit: config.access.polkit,
        },
        limits: Limits {
            max_ceremonies_per_caller: config.access.max_ceremonies_per_caller,
            max_ceremonies: config.access.max_ceremonies,
            ..Limits::default()
        },
        ..ServiceConfig::default()
    };
    let bus_name = service_config.bus_name.clone();
    let service = match dbus::serve(&bus, ceremonies, registry.clone(), service_config).await {
        Ok(service) => service,
        Err(error) => {
            transports.stop().await;
            return Err(error.into());
        }
    };
    info!(
        bus_name = %bus_name,
        origin = %config.ceremony.origin,
        loginid = %config.loginid.base_url,
        usb = transports.usb.is_some(),
        nfc = transports.nfc.is_some(),
        virtual_dir = config
            .virtual_keys
            .as_ref()
            .map(|virt| virt.dir.display().to_string()),
        "passkeyd started"
    );
    if transports.is_empty() {
        warn!("every transport is disabled: no key will be found");
    }
    notify(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(&format!("serving {bus_name}")),
    ]);

    // 4. Until shutdown.
    let watchdog = watchdog_interval();
    let mut shutdown = std::pin::pin!(shutdown);
    let outcome = loop {
        tokio::select! {
            () = &mut shutdown => break Ok(()),
            event = subscription.events.recv() => match event {
                Ok(event) => log_event(&event),
                Err(RecvError::Lagged(missed)) => {
                    warn!(missed, "registry events were missed in the log");
                }
                Err(RecvError::Closed) => break Err(DaemonError::RegistryEnded),
            },
            () = sleep_or_never(watchdog) => {
                if registry_answers(&registry).await {
                    notify(&[sd_notify::NotifyState::Watchdog]);
                } else {
                    warn!("the device registry did not answer: no watchdog ping");
                }
            }
        }
    };

    info!("stopping");
    notify(&[sd_notify::NotifyState::Stopping]);
    service.shutdown().await;
    transports.stop().await;
    drop(subscription);
    // The last handles: the registry ends, aborting every device actor (which drops its link).
    drop(registry);
    info!("stopped");
    outcome
}

/// Half of systemd's watchdog period, when it asks for pings (`WATCHDOG_USEC` for this
/// process).
fn watchdog_interval() -> Option<Duration> {
    let mut usec = 0;
    if sd_notify::watchdog_enabled(false, &mut usec) && usec > 0 {
        Some(Duration::from_micros(usec / 2))
    } else {
        None
    }
}

/// Sleeps `interval`, or forever without one.
async fn sleep_or_never(interval: Option<Duration>) {
    match interval {
        Some(interval) => tokio::time::sleep(interval).await,
        None => std::future::pending().await,
    }
}

/// Whether the registry's actor answers a request within a second: the watchdog pings only
/// for a daemon whose core still works, not merely for a runtime that still ticks.
async fn registry_answers(registry: &RegistryHandle) -> bool {
    tokio::time::timeout(Duration::from_secs(1), registry.list())
        .await
        .is_ok()
}

/// Tells systemd; without `NOTIFY_SOCKET` (not run by systemd) nothing happens.
fn notify(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(error) = sd_notify::notify(false, states) {
        debug!(%error, "sd_notify failed");
    }
}

/// The transports that run.
#[derive(Debug, Default)]
struct Transports {
    usb: Option<UsbTransport>,
    nfc: Option<NfcTransport>,
    virt: Option<VirtualTransport>,
}

impl Transports {
    /// Starts the enabled transports; on error those already started stay in `self`.
    fn start(
        &mut self,
        config: &Config,
        events: &mpsc::Sender<TransportEvent>,
    ) -> Result<(), DaemonError> {
        if let Some(usb) = &config.usb {
            self.usb = Some(usb::spawn(usb.clone(), events.clone())?);
            debug!("USB transport started");
        }
        if let Some(nfc) = &config.nfc {
            self.nfc = Some(nfc::spawn(nfc.clone(), events.clone())?);
            debug!("NFC transport started");
        }
        if let Some(virt) = &config.virtual_keys {
            self.virt = Some(virt::spawn(virt.clone(), events.clone())?);
            debug!(dir = %virt.dir.display(), "virtual-key transport started");
        }
        Ok(())
    }

    fn is_empty(&self) -> bool {
        self.usb.is_none() && self.nfc.is_none() && self.virt.is_none()
    }

    /// Stops every transport.
    async fn stop(self) {
        let Self { usb, nfc, virt } = self;
        drop(usb);
        drop(virt);
        if let Some(nfc) = nfc {
            // Dropping the NFC transport cancels pcscd's wait and joins the monitor thread,
            // which blocks: not on a runtime worker.
            if let Err(error) = tokio::task::spawn_blocking(move || drop(nfc)).await {
                warn!(%error, "stopping the NFC transport failed");
            }
        }
        debug!("transports stopped");
    }
}

/// One log line per registry event worth it.
fn log_event(event: &RegistryEvent) {
    match event {
        RegistryEvent::Added(device) => {
            let summary = Summary::of(device);
            info!(
                device = %device.id(),
                transport = %device.transport().as_str(),
                versions = %summary.versions,
                aaguid = %summary.aaguid,
                link = %summary.link,
                path = %Sanitized(&device.description.path),
                product = %Sanitized(device.description.product.as_deref().unwrap_or("-")),
                "key added"
            );
        }
        RegistryEvent::Removed(id) => info!(device = %id, "key removed"),
        RegistryEvent::Changed(device) => {
            debug!(device = %device.id(), busy = device.busy, "key changed");
        }
        RegistryEvent::EnumerationComplete(transport) => {
            info!(transport = %transport.as_str(), "enumeration complete");
        }
        // The registry logs these itself, with the reason.
        RegistryEvent::TransportUnavailable { transport, .. } => {
            debug!(transport = %transport.as_str(), "transport unavailable");
        }
    }
}

/// What a key tells about itself, as log field values. Texts from the key are sanitized
/// (they are attacker-controlled and must not forge log lines).
#[derive(Debug, PartialEq, Eq)]
struct Summary {
    /// getInfo `versions` (CTAP 2.2 §6.4, 0x01), comma-separated; `none` without getInfo.
    versions: String,
    /// getInfo `aaguid` (0x03) as a UUID; `none` without getInfo.
    aaguid: String,
    /// CTAPHID: `hid/2,version=1.2.3,capabilities=0x05` from the INIT answer (CTAP 2.2
    /// §11.2.9.1.3);
    /// NFC: `apdu/FIDO_2_0` from the SELECT answer (§11.3.3); `none` if unknown.
    link: String,
}

impl Summary {
    fn of(device: &DeviceInfo) -> Self {
        let (versions, aaguid) = info_fields(device.info.as_deref());
        Self {
            versions,
            aaguid,
            link: link_field(device.link.as_ref()),
        }
    }
}

fn info_fields(info: Option<&get_info::Response>) -> (String, String) {
    let Some(info) = info else {
        return ("none".to_owned(), "none".to_owned());
    };
    let mut versions = String::new();
    for (n, version) in info.versions.iter().enumerate() {
        if n > 0 {
            versions.push(',');
        }
        // Writing to a String cannot fail.
        let _ = write!(versions, "{}", Sanitized(version.as_str()));
    }
    if versions.is_empty() {
        versions.push_str("none");
    }
    let aaguid = uuid::Uuid::from_bytes(info.aaguid).hyphenated().to_string();
    (versions, aaguid)
}

fn link_field(link: Option<&LinkInfo>) -> String {
    match link {
        Some(LinkInfo::Hid {
            protocol_version,
            device_version,
            capabilities,
        }) => format!(
            "hid/{protocol_version},version={}.{}.{},capabilities=0x{:02x}",
            device_version.major,
            device_version.minor,
            device_version.build,
            capabilities.bits()
        ),
        Some(LinkInfo::Apdu { applet }) => {
            let applet = match applet {
                ctap::iso7816::AppletVersion::U2fV2 => "U2F_V2".to_owned(),
                ctap::iso7816::AppletVersion::Fido20 => "FIDO_2_0".to_owned(),
                ctap::iso7816::AppletVersion::Other(bytes) => {
                    Sanitized(&String::from_utf8_lossy(bytes)).to_string()
                }
            };
            format!("apdu/{applet}")
        }
        None => "none".to_owned(),
    }
}

/// Text from a device, made safe for one log field value: printable ASCII without quotes,
/// backslashes or spaces is shown as it is; anything else is put in double quotes, with
/// quotes and backslashes escaped and non-printable or non-ASCII characters (newlines,
/// terminal escapes) written as escapes, so that a key cannot forge log lines or fields. At
/// most [`MAX_LOGGED_TEXT`] characters are shown.
struct Sanitized<'a>(&'a str);

impl fmt::Display for Sanitized<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let plain = !self.0.is_empty()
            && self
                .0
                .chars()
                .all(|c| c.is_ascii_graphic() && c != '"' && c != '\\');
        if !plain {
            f.write_char('"')?;
        }
        let mut chars = self.0.chars();
        for c in chars.by_ref().take(MAX_LOGGED_TEXT) {
            match c {
                '"' | '\\' => write!(f, "\\{c}")?,
                ' ' => f.write_char(' ')?,
                c if c.is_ascii_graphic() => f.write_char(c)?,
                c => write!(f, "{}", c.escape_default())?,
            }
        }
        if chars.next().is_some() {
            f.write_str("...")?;
        }
        if !plain {
            f.write_char('"')?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use ctap::ctaphid::{Capabilities, DeviceVersion};
    use ctap::iso7816::AppletVersion;

    use super::*;

    #[test]
    fn sanitized_keeps_plain_ascii_and_quotes_and_escapes_the_rest() {
        assert_eq!(Sanitized("FIDO_2_1").to_string(), "FIDO_2_1");
        assert_eq!(Sanitized("/dev/hidraw3").to_string(), "/dev/hidraw3");
        assert_eq!(Sanitized("Yubi Key 5").to_string(), "\"Yubi Key 5\"");
        assert_eq!(Sanitized("").to_string(), "\"\"");
        assert_eq!(
            Sanitized("x\n INFO forged=\"1\" \\ \u{1b}[31m").to_string(),
            r#""x\n INFO forged=\"1\" \\ \u{1b}[31m""#
        );
        assert_eq!(Sanitized("clé").to_string(), r#""cl\u{e9}""#);
        assert_eq!(Sanitized("a\u{2028}b").to_string(), r#""a\u{2028}b""#);
        let long = "a".repeat(MAX_LOGGED_TEXT + 1);
        assert_eq!(
            Sanitized(&long).to_string(),
            format!("{}...", "a".repeat(MAX_LOGGED_TEXT))
        );
        assert_eq!(Sanitized(&long[1..]).to_string(), long[1..]);
        let long_spaced = " ".repeat(MAX_LOGGED_TEXT + 1);
        assert_eq!(
            Sanitized(&long_spaced).to_string(),
            format!("\"{}...\"", " ".repeat(MAX_LOGGED_TEXT))
        );
    }

    #[test]
    fn summary_of_get_info() {
        let mut info = get_info::Response::from_cbor(&[
            0xa2, // map(2)
            0x01, 0x83, // 1: versions, array(3)
            0x66, b'U', b'2', b'F', b'_', b'V', b'2', //
            0x68, b'F', b'I', b'D', b'O', b'_', b'2', b'_', b'0', //
            0x67, b'F', b'I', b'D', b'O', b'\n', b'2', b'!', //
            0x03, 0x50, // 3: aaguid, bytes(16)
            0x8b, 0xc5, 0x49, 0x68, 0x07, 0xb1, 0x42, 0x4d, 0x8a, 0x63, 0x1c, 0x48, 0x9d, 0x0c,
            0xf2, 0xd1,
        ])
        .unwrap();
        assert_eq!(
            info_fields(Some(&info)),
            (
                r#"U2F_V2,FIDO_2_0,"FIDO\n2!""#.to_owned(),
                "8bc54968-07b1-424d-8a63-1c489d0cf2d1".to_owned()
            )
        );
        info.versions.clear();
        assert_eq!(info_fields(Some(&info)).0, "none");
        assert_eq!(info_fields(None), ("none".to_owned(), "none".to_owned()));
    }

    #[test]
    fn summary_of_links() {
        let hid = LinkInfo::Hid {
            protocol_version: 2,
            device_version: DeviceVersion {
                major: 1,
                minor: 2,
                build: 3,
            },
            capabilities: Capabilities::from_bits(0x05),
        };
        assert_eq!(
            link_field(Some(&hid)),
            "hid/2,version=1.2.3,capabilities=0x05"
        );
        let apdu = LinkInfo::Apdu {
            applet: AppletVersion::Fido20,
        };
        assert_eq!(link_field(Some(&apdu)), "apdu/FIDO_2_0");
        let odd = LinkInfo::Apdu {
            applet: AppletVersion::Other(b"FIDO_2_1\r\xff".to_vec()),
        };
        assert_eq!(link_field(Some(&odd)), r#"apdu/"FIDO_2_1\r\u{fffd}""#);
        assert_eq!(link_field(None), "none");
    }
}
