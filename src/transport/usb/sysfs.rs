//! What sysfs says about a hidraw node, and opening the node.
//!
//! Layout (as the kernel creates it; tests build the same shape in a temp dir):
//!
//! ```text
//! /sys/class/hidraw/hidraw0 -> ../../devices/.../1-2/1-2:1.1/0003:1050:0407.0001/hidraw/hidraw0
//! /sys/class/hidraw/hidraw0/device -> ../../../0003:1050:0407.0001       (the HID device)
//! .../1-2:1.1/0003:1050:0407.0001/report_descriptor                       (raw descriptor)
//! .../1-2:1.1/0003:1050:0407.0001/uevent   HID_ID=0003:00001050:00000407, HID_NAME=...
//! .../1-2:1.1                                                             (USB interface)
//! .../1-2/manufacturer, .../1-2/product                                   (USB device)
//! ```

use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::time::Duration;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::descriptor::{self, DescriptorError, ReportDescriptor, UnsupportedReports};
use super::{HidrawName, UsbConfig};
use crate::transport::{DeviceDescription, DeviceId, Transport};

/// `BUS_USB` from `linux/input.h`.
const BUS_USB: u16 = 0x0003;

/// Bound on a HID device's `uevent` file (a few short lines).
const MAX_UEVENT_FILE: usize = 4096;

/// Bound on a USB string attribute (USB string descriptors hold at most 126 UTF-16 units).
const MAX_STRING_ATTR: usize = 1024;

/// Longest name kept for display.
pub(crate) const MAX_NAME_CHARS: usize = 128;

/// Most entries read from `/sys/class/hidraw` (the kernel has 64 hidraw minors by default).
const MAX_NODES: usize = 4096;

/// First and longest pause between open attempts after a hotplug `add`.
const FIRST_RETRY: Duration = Duration::from_millis(10);
const LONGEST_RETRY: Duration = Duration::from_millis(500);

/// Why a hidraw node was not taken.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ProbeError {
    /// A sysfs file or link could not be read.
    #[error("reading {}", path.display())]
    Sysfs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The report descriptor is malformed.
    #[error("malformed report descriptor")]
    Descriptor(#[from] DescriptorError),
    /// A FIDO interface this transport cannot drive.
    #[error("FIDO interface with unsupported reports")]
    Reports(#[from] UnsupportedReports),
    /// `HID_ID` is missing from the HID device's uevent or malformed.
    #[error("no well-formed HID_ID in {}", path.display())]
    HidId { path: PathBuf },
    /// The device directory resolves outside the sysfs root.
    #[error("{} is outside the sysfs root", path.display())]
    OutsideSysfs { path: PathBuf },
    /// The device node could not be opened.
    #[error("opening {}", path.display())]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// `HID_ID` of a HID device: bus, vendor and product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct HidId {
    pub(crate) bus: u16,
    pub(crate) vendor: u16,
    pub(crate) product: u16,
}

/// Where a node's HID device is and what it is called.
#[derive(Debug)]
pub(crate) struct Located {
    pub(crate) id: DeviceId,
    pub(crate) hid_dir: PathBuf,
    pub(crate) hid_id: HidId,
    pub(crate) hid_name: Option<String>,
}

/// A node that is a usable FIDO interface.
#[derive(Debug)]
pub(crate) struct Probed {
    pub(crate) description: DeviceDescription,
    pub(crate) node: PathBuf,
}

/// The hidraw nodes present, in numeric order. A missing class directory (hidraw not loaded)
/// is no node.
pub(crate) fn list_nodes(sysfs_root: &Path) -> io::Result<Vec<HidrawName>> {
    let dir = sysfs_root.join("class/hidraw");
    let entries = match std::fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(err) => return Err(err),
    };
    let mut names = Vec::new();
    for entry in entries.take(MAX_NODES) {
        let entry = entry?;
        if let Some(name) = HidrawName::parse(entry.file_name().as_encoded_bytes()) {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

/// Finds a node's HID device, its ids and its [`DeviceId`].
pub(crate) fn locate(config: &UsbConfig, name: HidrawName) -> Result<Located, ProbeError> {
    let link = config
        .sysfs_root
        .join("class/hidraw")
        .join(name.to_string())
        .join("device");
    let hid_dir = canonical(&link)?;
    let root = canonical(&config.sysfs_root)?;
    let uevent_path = hid_dir.join("uevent");
    let uevent = read_bounded(&uevent_path, MAX_UEVENT_FILE)?;
    let (hid_id, hid_name) =
        parse_hid_uevent(&uevent).ok_or(ProbeError::HidId { path: uevent_path })?;
    // USB: the interface, stable per port. Elsewhere: the HID device itself.
    let anchor = match (hid_id.bus, hid_dir.parent()) {
        (BUS_USB, Some(interface)) => interface,
        _ => hid_dir.as_path(),
    };
    let relative = anchor
        .strip_prefix(&root)
        .map_err(|_| ProbeError::OutsideSysfs {
            path: anchor.to_owned(),
        })?;
    let relative = relative.strip_prefix("devices").unwrap_or(relative);
    let id = DeviceId::new(Transport::Usb, &relative.to_string_lossy());
    Ok(Located {
        id,
        hid_dir,
        hid_id,
        hid_name,
    })
}

/// Decides from sysfs alone whether a node is a usable FIDO interface and describes it.
/// `Ok(None)`: some other HID device.
pub(crate) fn probe(config: &UsbConfig, name: HidrawName) -> Result<Option<Probed>, ProbeError> {
    let rdesc_path = config
        .sysfs_root
        .join("class/hidraw")
        .join(name.to_string())
        .join("device/report_descriptor");
    let rdesc = read_bounded(&rdesc_path, descriptor::MAX_DESCRIPTOR_LEN)?;
    let parsed = ReportDescriptor::parse(&rdesc)?;
    if !parsed.is_fido() {
        return Ok(None);
    }
    parsed.check_ctaphid_reports()?;

    let Located {
        id,
        hid_dir,
        hid_id,
        hid_name,
    } = locate(config, name)?;
    let (manufacturer, usb_product) = match (hid_id.bus, hid_dir.parent().and_then(Path::parent)) {
        (BUS_USB, Some(usb_device)) => (
            read_string_attr(&usb_device.join("manufacturer")),
            read_string_attr(&usb_device.join("product")),
        ),
        _ => (None, None),
    };
    let node = config.dev_root.join(name.to_string());
    Ok(Some(Probed {
        description: DeviceDescription {
            id,
            transport: Transport::Usb,
            path: node.display().to_string(),
            vendor_id: Some(hid_id.vendor),
            product_id: Some(hid_id.product),
            product: usb_product.or(hid_name),
            manufacturer,
        },
        node,
    }))
}

/// `HID_ID` and `HID_NAME` from a HID device's `uevent` file (`KEY=VALUE` lines).
pub(crate) fn parse_hid_uevent(text: &[u8]) -> Option<(HidId, Option<String>)> {
    let mut hid_id = None;
    let mut hid_name = None;
    for line in text.split(|&b| b == b'\n') {
        if let Some(value) = line.strip_prefix(b"HID_ID=") {
            if hid_id.is_some() {
                return None;
            }
            hid_id = Some(parse_hid_id(value)?);
        } else if let Some(value) = line.strip_prefix(b"HID_NAME=") {
            hid_name = clean_name(value);
        }
    }
    Some((hid_id?, hid_name))
}

/// `BBBB:VVVVVVVV:PPPPPPPP` in upper-case hex, as the kernel prints it (`%04X:%08X:%08X`).
fn parse_hid_id(value: &[u8]) -> Option<HidId> {
    let mut parts = value.split(|&b| b == b':');
    let bus = hex_field(parts.next()?, 4)?;
    let vendor = hex_field(parts.next()?, 8)?;
    let product = hex_field(parts.next()?, 8)?;
    if parts.next().is_some() {
        return None;
    }
    Some(HidId {
        bus: u16::try_from(bus).ok()?,
        vendor: u16::try_from(vendor).ok()?,
        product: u16::try_from(product).ok()?,
    })
}

fn hex_field(field: &[u8], len: usize) -> Option<u32> {
    if field.len() != len || !field.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    u32::from_str_radix(std::str::from_utf8(field).ok()?, 16).ok()
}

/// A device-supplied name made fit for display: valid UTF-8 (lossy), no control
/// characters, trimmed, at most [`MAX_NAME_CHARS`]; `None` when nothing is left.
fn clean_name(raw: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(raw);
    // Controls go first, so that blanks next to them (`"\0 \0"`) are trimmed too; the cut
    // may end on a blank, hence the second trim.
    let visible: String = text.chars().filter(|c| !c.is_control()).collect();
    let clean: String = visible.trim().chars().take(MAX_NAME_CHARS).collect();
    let clean = clean.trim_end();
    (!clean.is_empty()).then(|| clean.to_owned())
}

fn read_string_attr(path: &Path) -> Option<String> {
    match read_bounded(path, MAX_STRING_ATTR) {
        Ok(bytes) => clean_name(&bytes),
        Err(err) => {
            tracing::trace!(error = %err, "optional sysfs attribute unreadable");
            None
        }
    }
}

fn canonical(path: &Path) -> Result<PathBuf, ProbeError> {
    std::fs::canonicalize(path).map_err(|source| ProbeError::Sysfs {
        path: path.to_owned(),
        source,
    })
}

/// Reads at most `max` bytes; a longer file is an error, not a silent truncation.
fn read_bounded(path: &Path, max: usize) -> Result<Vec<u8>, ProbeError> {
    let err = |source| ProbeError::Sysfs {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(err)?;
    let mut out = Vec::new();
    // INVARIANT: max is a small constant; usize fits in u64 on every Linux target.
    let limit = u64::try_from(max).unwrap_or(u64::MAX).saturating_add(1);
    file.take(limit).read_to_end(&mut out).map_err(err)?;
    if out.len() > max {
        return Err(err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("longer than {max} bytes"),
        )));
    }
    Ok(out)
}

/// Opens a node for reading and writing, non-blocking (reads go through `AsyncFd`).
pub(crate) fn open_node(path: &Path) -> io::Result<OwnedFd> {
    let flags = OFlags::RDWR | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY;
    Ok(rustix::fs::open(path, flags, Mode::empty())?)
}

/// Opens a node that was just announced, retrying while it is missing or not yet accessible
/// (udev applies permissions after the kernel event), with doubling pauses, for at most
/// `window`.
pub(crate) async fn open_node_within(path: &Path, window: Duration) -> io::Result<OwnedFd> {
    let deadline = tokio::time::Instant::now() + window;
    let mut pause = FIRST_RETRY;
    loop {
        let err = match open_node(path) {
            Ok(fd) => return Ok(fd),
            Err(err) => err,
        };
        let retryable = matches!(
            Errno::from_io_error(&err),
            Some(Errno::ACCESS | Errno::PERM | Errno::NOENT)
        );
        let now = tokio::time::Instant::now();
        if !retryable || now >= deadline {
            return Err(err);
        }
        tokio::time::sleep(pause.min(deadline - now)).await;
        pause = (pause * 2).min(LONGEST_RETRY);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hid_uevent_gives_ids_and_name() {
        let text = b"DRIVER=hid-generic\nHID_ID=0003:00001050:00000407\n\
            HID_NAME=Yubico YubiKey OTP+FIDO+CCID\nHID_PHYS=usb-0000:00:14.0-2/input1\n\
            HID_UNIQ=\nMODALIAS=hid:b0003g0001v00001050p00000407\n";
        let (id, name) = parse_hid_uevent(text).unwrap();
        assert_eq!(
            id,
            HidId {
                bus: 0x0003,
                vendor: 0x1050,
                product: 0x0407
            }
        );
        assert_eq!(name.as_deref(), Some("Yubico YubiKey OTP+FIDO+CCID"));
    }

    #[test]
    fn hid_uevent_is_strict_about_hid_id() {
        for bad in [
            &b"HID_NAME=x\n"[..],
            b"HID_ID=0003:1050:0407\n",
            b"HID_ID=0003:00001050:00000407:0\n",
            b"HID_ID=0003:00011050:00000407\n",
            b"HID_ID=0003:0000105G:00000407\n",
            b"HID_ID=+003:00001050:00000407\n",
            b"HID_ID=0003:00001050:00000407\nHID_ID=0003:00001050:00000407\n",
        ] {
            assert_eq!(
                parse_hid_uevent(bad),
                None,
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
        // No name is fine; a blank or control-only name is no name.
        let (_, name) =
            parse_hid_uevent(b"HID_ID=0005:0000046D:0000B33D\nHID_NAME= \x07\n").unwrap();
        assert_eq!(name, None);
    }

    #[test]
    fn names_are_cleaned_and_bounded() {
        assert_eq!(
            clean_name(b"  Nitrokey\t3 \n").as_deref(),
            Some("Nitrokey3")
        );
        assert_eq!(
            clean_name(b"Key \xff\xfe").as_deref(),
            Some("Key \u{fffd}\u{fffd}")
        );
        assert_eq!(
            clean_name(&[b'a'; 1000]).unwrap().chars().count(),
            MAX_NAME_CHARS
        );
        assert_eq!(clean_name(b"\x01\x02"), None);
    }

    /// Found by the `usb_uevent` fuzz target: blanks behind control characters survived the
    /// trim, so a name of only NULs and spaces was kept as a blank product name.
    #[test]
    fn blanks_behind_control_characters_are_trimmed() {
        let text = b"HID_ID=0003:00001050:00000407\nHID_NAME=\0\0  Yubi\0Key \0 \x07\n";
        let (_, name) = parse_hid_uevent(text).unwrap();
        assert_eq!(name.as_deref(), Some("YubiKey"));
        let (_, name) =
            parse_hid_uevent(b"HID_ID=0003:00001050:00000407\nHID_NAME=\0 \0  \0\n").unwrap();
        assert_eq!(name, None);
        // Cut at the limit right after a blank: no trailing blank either.
        let long = format!("{} b", "a".repeat(MAX_NAME_CHARS - 1));
        let cut = clean_name(long.as_bytes()).unwrap();
        assert_eq!(cut, "a".repeat(MAX_NAME_CHARS - 1));
    }

    #[tokio::test]
    async fn open_waits_for_a_late_node_within_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let node = dir.path().join("hidraw9");
        let late = node.clone();
        let creator = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50)).await;
            rustix::fs::mkfifoat(rustix::fs::CWD, &late, Mode::from_raw_mode(0o600)).unwrap();
        });
        let fd = open_node_within(&node, Duration::from_secs(2)).await;
        creator.await.unwrap();
        assert!(fd.is_ok(), "{fd:?}");
    }

    #[tokio::test]
    async fn open_gives_up_after_the_window() {
        let dir = tempfile::tempdir().unwrap();
        let start = tokio::time::Instant::now();
        let window = Duration::from_millis(300);
        let err = open_node_within(&dir.path().join("hidraw9"), window)
            .await
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        let waited = start.elapsed();
        // Gave up at the end of the window, not before and not much after.
        assert!(waited >= window && waited < window * 10, "{waited:?}");
    }

    #[tokio::test]
    async fn open_does_not_retry_other_errors() {
        // A directory cannot be opened for writing: EISDIR, not a permission problem.
        let dir = tempfile::tempdir().unwrap();
        let start = tokio::time::Instant::now();
        let err = open_node_within(dir.path(), Duration::from_secs(2))
            .await
            .unwrap_err();
        assert_eq!(Errno::from_io_error(&err), Some(Errno::ISDIR));
        // Retrying would have taken the whole window, since EISDIR persists.
        assert!(
            start.elapsed() < Duration::from_secs(1),
            "{:?}",
            start.elapsed()
        );
    }
}
