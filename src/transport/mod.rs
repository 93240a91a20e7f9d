//! Async adapters between security keys and the device layer.
//!
//! Each transport discovers its devices, watches them come and go, and hands every device to
//! the device layer as a [`Connection`]: a pair of channels owned by exactly one device actor.
//! Transports know bytes and plug events; they know nothing about CTAP beyond the frame sizes.
//!
//! - [`usb`]: hidraw nodes whose report descriptor carries the FIDO usage page 0xF1D0, hotplug
//!   from kernel uevents (netlink);
//! - [`nfc`]: PC/SC readers and cards through pcscd;
//! - [`virt`]: virtual keys, a watched directory of Unix SOCK_SEQPACKET sockets (one message =
//!   one 64-byte report), served by `virtkey`.
//!
//! **Invariant:** no transport wakes up periodically. Every wait is on a file descriptor, a
//! channel or a PC/SC status change, so an idle daemon with keys attached sleeps.

use std::fmt;

use tokio::sync::{mpsc, oneshot};

pub mod nfc;
pub mod usb;
#[path = "virtual/mod.rs"]
pub mod virt;

/// Length of a CTAPHID report without the Linux report-ID prefix (CTAP 2.2 §11.2.4).
pub const REPORT_LEN: usize = 64;

/// One CTAPHID report, without report ID.
pub type Report = [u8; REPORT_LEN];

/// How many reports may wait in a link's channels. Keys answer one request at a time and a
/// message is at most 129 reports; more than this in flight means the reader is stuck.
pub const LINK_CAPACITY: usize = 256;

/// A stable identifier of a device, unique among the devices present: the same key keeps its
/// id while plugged in, and gets the same id again on the same port (USB: the sysfs device
/// path; NFC: the reader name; virtual: the socket name). Used in D-Bus object paths, so it
/// only contains `[A-Za-z0-9_]`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DeviceId(String);

impl DeviceId {
    /// Builds an id from a transport prefix and any text; bytes outside `[A-Za-z0-9]` become
    /// `_` so that the id is valid in a D-Bus object path element.
    pub fn new(transport: Transport, name: &str) -> Self {
        let clean: String = name
            .chars()
            .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
            .collect();
        Self(format!("{}_{clean}", transport.as_str()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Which transport a device is reached through.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Transport {
    /// USB HID (hidraw).
    Usb,
    /// NFC, through a PC/SC reader.
    Nfc,
    /// A virtual key (`virtkey`) on a Unix socket.
    Virtual,
}

impl Transport {
    /// `usb`, `nfc` or `virtual`, as shown on D-Bus.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Usb => "usb",
            Self::Nfc => "nfc",
            Self::Virtual => "virtual",
        }
    }
}

/// What a transport knows about a device before any CTAP exchange.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceDescription {
    /// Stable id.
    pub id: DeviceId,
    /// Transport.
    pub transport: Transport,
    /// Where it lives: `/dev/hidraw3`, the PC/SC reader name, the socket path.
    pub path: String,
    /// USB vendor id, when known.
    pub vendor_id: Option<u16>,
    /// USB product id, when known.
    pub product_id: Option<u16>,
    /// Product name, when known.
    pub product: Option<String>,
    /// Manufacturer name, when known.
    pub manufacturer: Option<String>,
}

/// Why a link to a device failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LinkError {
    /// The device is gone (unplugged, card removed, socket closed).
    #[error("device disconnected")]
    Disconnected,
    /// An IO error on the device node or socket.
    #[error("device IO failed")]
    Io(#[source] std::io::Error),
    /// The device sent something that is not a report (wrong size).
    #[error("device sent a {0}-byte report")]
    BadReport(usize),
    /// A PC/SC call failed.
    #[error("PC/SC error: {0}")]
    Pcsc(String),
}

/// Channels to a HID-style device (USB hidraw or a virtual key). The transport's IO task owns
/// the device; the device actor owns this link. Dropping the link closes the device.
#[derive(Debug)]
pub struct ReportLink {
    /// Reports to write (the transport adds the Linux report-ID byte where needed).
    pub tx: mpsc::Sender<Report>,
    /// Reports read, in order; an error or a closed channel means the device is gone.
    pub rx: mpsc::Receiver<Result<Report, LinkError>>,
}

/// One command APDU and where its response goes.
#[derive(Debug)]
pub struct ApduRequest {
    /// The command APDU bytes.
    pub apdu: Vec<u8>,
    /// The response APDU (data and SW1 SW2).
    pub reply: oneshot::Sender<Result<Vec<u8>, LinkError>>,
}

/// Channel to a card (NFC): one APDU at a time. A closed channel means the card is gone.
#[derive(Debug)]
pub struct ApduLink {
    /// APDUs to transmit.
    pub tx: mpsc::Sender<ApduRequest>,
}

/// The link to one device, owned by its actor.
#[derive(Debug)]
pub enum Connection {
    /// 64-byte reports.
    Hid(ReportLink),
    /// ISO 7816 APDUs.
    Apdu(ApduLink),
}

/// What transports tell the device layer.
#[derive(Debug)]
pub enum TransportEvent {
    /// A device appeared (or was present at start-up).
    Added {
        /// What is known about it.
        description: DeviceDescription,
        /// Its link.
        connection: Connection,
    },
    /// A device disappeared.
    Removed(DeviceId),
    /// A transport finished its start-up enumeration; `Added` events before this were the
    /// devices already present.
    EnumerationComplete(Transport),
    /// A transport cannot work right now (no pcscd, no permission on the socket directory...).
    /// It keeps trying and reports `EnumerationComplete` once it works again.
    Unavailable {
        /// Which transport.
        transport: Transport,
        /// Why, for logs.
        reason: String,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_ids_are_object_path_safe() {
        let id = DeviceId::new(Transport::Nfc, "ACS ACR122U PICC 00 00");
        assert_eq!(id.as_str(), "nfc_ACS_ACR122U_PICC_00_00");
        let id = DeviceId::new(Transport::Usb, "/sys/devices/pci0000:00/usb1/1-2");
        assert!(
            id.as_str()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        );
    }
}
