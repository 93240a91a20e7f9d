//! USB HID security keys, through the kernel's hidraw nodes.
//!
//! **Discovery.** Every node in `/sys/class/hidraw` is checked through sysfs alone, without
//! opening it: its HID device's `report_descriptor` must declare a top-level collection with
//! the FIDO usage page `0xF1D0` and usage `0x01` (CTAP 2.2 §11.2.8.2) and 64-byte reports
//! without report IDs ([`descriptor`]); the HID device's `uevent` gives the bus, vendor and
//! product (`HID_ID=0003:00001050:00000407`) and name (`HID_NAME`), and for USB devices the
//! USB device's `manufacturer` and `product` attributes give the separate strings. The
//! [`DeviceId`] is the sysfs path of the USB interface (the HID device's parent), so a key
//! keeps its id on the same port across re-plugs; the HID device's own directory name carries
//! a sequence number that changes on every plug, so it is used only for non-USB buses, where
//! several HID devices can share a parent.
//!
//! **Hotplug.** A `NETLINK_KOBJECT_UEVENT` socket bound to the kernel's multicast group 1,
//! non-blocking and awaited with [`AsyncFd`](tokio::io::unix::AsyncFd), delivers `add` and
//! `remove` events for hidraw nodes ([`uevent`]). It is opened before the start-up
//! enumeration so that no plug falls between the two. The kernel announces a node before udev
//! has set its permissions, so after an `add` the node is opened with a short, bounded retry
//! ([`UsbConfig::open_window`], 2 s by default) on permission and not-found errors; that is
//! the only timed wait here, and it is part of handling one event. If the socket's buffer
//! overflows (`ENOBUFS`), events were lost: the transport re-reads `/sys/class/hidraw` and
//! reconciles. Without netlink (some containers), the start-up enumeration still runs and the
//! transport reports [`TransportEvent::Unavailable`] after [`TransportEvent::EnumerationComplete`];
//! it does not retry, since retrying means polling.
//!
//! **IO.** Each open node is bridged to a [`ReportLink`] by two parts that wake only for work:
//! - reads: a tokio task awaits the non-blocking fd with `AsyncFd` (no thread, no timer) and
//!   forwards each 64-byte input report; on EOF or a read error (`EIO` once the key is
//!   unplugged) it sends [`LinkError::Disconnected`](super::LinkError::Disconnected) and ends;
//! - writes: one blocking thread per device takes reports from the link's channel and writes
//!   them with the Linux report-ID prefix `0x00` (65 bytes). A thread, because a hidraw write
//!   is synchronous in the kernel whatever `O_NONBLOCK` says: usbhid sends an interrupt-OUT
//!   transfer and waits for it (up to 5 s on a stuck device, about a frame interval per report
//!   normally), which must not stall the runtime's workers. The thread sleeps in
//!   `blocking_recv` and is woken only by a report or by the channel closing, which is how it
//!   is shut down: no periodic timeout.
//!
//! Dropping the [`ReportLink`] ends both parts and closes the node. The only `unsafe` call in
//! the transport registers a descriptor with tokio's reactor (tokio deprecated its safe
//! constructors, which cannot check I/O safety for an arbitrary type); it is confined to
//! one function for `Arc<OwnedFd>`, with the argument for its soundness. Dropping the
//! [`UsbTransport`] handle stops discovery and hotplug; links already handed out stay with
//! their owners.

pub mod descriptor;
mod io;
mod netlink;
mod sysfs;
pub mod uevent;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::os::fd::OwnedFd;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::task::{self, AbortHandle, JoinError, JoinHandle, JoinSet};

use self::netlink::{Received, UeventSocket};
pub(crate) use self::sysfs::{MAX_NAME_CHARS, parse_hid_uevent};
use self::sysfs::{ProbeError, Probed};
use self::uevent::{HidrawAction, HidrawUevent, MAX_UEVENT_LEN};
use super::{Connection, DeviceDescription, DeviceId, ReportLink, Transport, TransportEvent};

/// The kernel name of a hidraw node, `hidraw` and its number without leading zeros: checked,
/// so it can be joined to `/dev` or `/sys/class/hidraw` without escaping them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HidrawName(u32);

impl HidrawName {
    /// Parses `hidrawN`.
    pub fn parse(name: &[u8]) -> Option<Self> {
        let digits = name.strip_prefix(b"hidraw")?;
        let leading_zero = digits.len() > 1 && digits.first() == Some(&b'0');
        if digits.is_empty() || digits.len() > 10 || leading_zero {
            return None;
        }
        if !digits.iter().all(u8::is_ascii_digit) {
            return None;
        }
        let n = digits.iter().try_fold(0u32, |acc, &d| {
            acc.checked_mul(10)?.checked_add(u32::from(d - b'0'))
        })?;
        Some(Self(n))
    }

    /// The node's number (its minor, on a system with the default numbering).
    pub fn index(self) -> u32 {
        self.0
    }
}

impl fmt::Display for HidrawName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "hidraw{}", self.0)
    }
}

/// Where the USB transport looks, and how long it waits for a new node to become openable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UsbConfig {
    /// The sysfs mount (`/sys`); `class/hidraw` is read below it.
    pub sysfs_root: PathBuf,
    /// Where device nodes live (`/dev`).
    pub dev_root: PathBuf,
    /// After a hotplug `add`, how long opening the node is retried while it is missing or not
    /// yet accessible (udev sets permissions after the kernel event).
    pub open_window: Duration,
}

impl Default for UsbConfig {
    fn default() -> Self {
        Self {
            sysfs_root: PathBuf::from("/sys"),
            dev_root: PathBuf::from("/dev"),
            open_window: Duration::from_secs(2),
        }
    }
}

/// Why the USB transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum UsbError {
    /// [`spawn`] was called outside a tokio runtime.
    #[error("the USB transport must be started inside a tokio runtime")]
    NoRuntime,
}

/// The running USB transport. Dropping it stops discovery and hotplug.
#[derive(Debug)]
pub struct UsbTransport {
    task: JoinHandle<()>,
}

impl Drop for UsbTransport {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the USB transport: opens the hotplug socket, enumerates the keys present (one
/// [`TransportEvent::Added`] each, then [`TransportEvent::EnumerationComplete`]), then follows
/// plugs and unplugs until the handle or the event receiver is dropped.
///
/// Must be called inside a tokio runtime with IO and time enabled (tokio panics on
/// registering a file descriptor without IO).
pub fn spawn(
    config: UsbConfig,
    events: mpsc::Sender<TransportEvent>,
) -> Result<UsbTransport, UsbError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| UsbError::NoRuntime)?;
    let hotplug = UeventSocket::open_kernel();
    let task = runtime.spawn(Watcher::new(config, events).run(hotplug));
    Ok(UsbTransport { task })
}

/// An error and its sources on one line, for logs: `opening /dev/hidraw3: Permission denied`.
struct Chain<'a>(&'a (dyn std::error::Error + 'static));

impl fmt::Display for Chain<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(err) = source {
            write!(f, ": {err}")?;
            source = err.source();
        }
        Ok(())
    }
}

/// A node opened after a successful probe.
struct Opened {
    description: DeviceDescription,
    fd: OwnedFd,
}

/// The event receiver is gone: nothing left to do.
struct Stopped;

type OpenResult = Result<Option<Opened>, ProbeError>;

/// Owns discovery state: which nodes were announced under which id, and which are being
/// opened after an `add`.
struct Watcher {
    config: Arc<UsbConfig>,
    events: mpsc::Sender<TransportEvent>,
    present: HashMap<HidrawName, DeviceId>,
    pending: HashMap<HidrawName, AbortHandle>,
    opening: JoinSet<(HidrawName, OpenResult)>,
}

impl Watcher {
    fn new(config: UsbConfig, events: mpsc::Sender<TransportEvent>) -> Self {
        Self {
            config: Arc::new(config),
            events,
            present: HashMap::new(),
            pending: HashMap::new(),
            opening: JoinSet::new(),
        }
    }

    async fn run(mut self, hotplug: std::io::Result<UeventSocket>) {
        // Stopped only means the receiver is gone; there is no one left to tell.
        let _ = self.run_inner(hotplug).await;
    }

    async fn run_inner(&mut self, hotplug: std::io::Result<UeventSocket>) -> Result<(), Stopped> {
        self.enumerate().await?;
        let socket = match hotplug {
            Ok(socket) => socket,
            Err(err) => {
                tracing::warn!(error = %err, "USB hotplug unavailable: no kernel uevent socket");
                return self
                    .send(TransportEvent::Unavailable {
                        transport: Transport::Usb,
                        reason: format!(
                            "hotplug unavailable (kernel uevent socket: {err}); \
                             keys present at start-up were enumerated"
                        ),
                    })
                    .await;
            }
        };
        let mut buf = vec![0u8; MAX_UEVENT_LEN];
        loop {
            tokio::select! {
                received = socket.recv(&mut buf) => match received {
                    Ok(Received::Message(len)) => {
                        self.on_message(buf.get(..len).unwrap_or_default()).await?;
                    }
                    Ok(Received::Truncated(len)) => {
                        tracing::warn!(len, "uevent longer than {MAX_UEVENT_LEN} bytes ignored");
                    }
                    Ok(Received::Foreign) => {
                        tracing::debug!("uevent not from the kernel ignored");
                    }
                    Ok(Received::Overflow) => {
                        tracing::warn!("uevents were lost (socket buffer overflow); rescanning");
                        self.resync().await?;
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "USB hotplug socket failed");
                        return self
                            .send(TransportEvent::Unavailable {
                                transport: Transport::Usb,
                                reason: format!("hotplug socket failed: {err}"),
                            })
                            .await;
                    }
                },
                Some(joined) = self.opening.join_next_with_id(), if !self.opening.is_empty() => {
                    self.on_opened(joined).await?;
                }
                () = self.events.closed() => return Err(Stopped),
            }
        }
    }

    /// A node opening after an `add` finished.
    async fn on_opened(
        &mut self,
        joined: Result<(task::Id, (HidrawName, OpenResult)), JoinError>,
    ) -> Result<(), Stopped> {
        match joined {
            Ok((task, (name, result))) => {
                // A node removed (or re-added) while it was being opened has a different
                // pending task, or none: its result is stale and dropped (closing the node).
                if self.pending.get(&name).map(AbortHandle::id) == Some(task) {
                    self.pending.remove(&name);
                    self.finish_open(name, result).await?;
                }
                Ok(())
            }
            Err(err) if err.is_cancelled() => Ok(()),
            Err(err) => {
                let task = err.id();
                self.pending.retain(|_, h| h.id() != task);
                tracing::error!(error = %err, "opening a hidraw node panicked");
                Ok(())
            }
        }
    }

    async fn send(&self, event: TransportEvent) -> Result<(), Stopped> {
        self.events.send(event).await.map_err(|_| Stopped)
    }

    /// Start-up enumeration: every node present, opened at once (permissions are settled).
    async fn enumerate(&mut self) -> Result<(), Stopped> {
        for name in self.list_nodes() {
            let result = probe_and_open(&self.config, name, None).await;
            self.finish_open(name, result).await?;
        }
        self.send(TransportEvent::EnumerationComplete(Transport::Usb))
            .await
    }

    fn list_nodes(&self) -> Vec<HidrawName> {
        sysfs::list_nodes(&self.config.sysfs_root).unwrap_or_else(|err| {
            tracing::warn!(error = %err, "cannot list hidraw nodes");
            Vec::new()
        })
    }

    async fn on_message(&mut self, msg: &[u8]) -> Result<(), Stopped> {
        match uevent::parse_uevent(msg) {
            Ok(Some(event)) => self.on_hidraw(event).await,
            Ok(None) => Ok(()),
            Err(err) => {
                tracing::debug!(error = %err, "uevent ignored");
                Ok(())
            }
        }
    }

    async fn on_hidraw(&mut self, event: HidrawUevent) -> Result<(), Stopped> {
        let name = event.devname;
        tracing::debug!(node = %name, seqnum = event.seqnum, action = ?event.action, "hidraw uevent");
        match event.action {
            HidrawAction::Add => {
                if !self.present.contains_key(&name) && !self.pending.contains_key(&name) {
                    self.start_opening(name);
                }
                Ok(())
            }
            HidrawAction::Remove => {
                if let Some(pending) = self.pending.remove(&name) {
                    pending.abort();
                }
                match self.present.remove(&name) {
                    Some(id) => {
                        tracing::debug!(node = %name, %id, "security key removed");
                        self.send(TransportEvent::Removed(id)).await
                    }
                    None => Ok(()),
                }
            }
        }
    }

    /// Probes and opens a node that just appeared, off the event loop: the open may be retried
    /// for up to [`UsbConfig::open_window`].
    fn start_opening(&mut self, name: HidrawName) {
        let config = Arc::clone(&self.config);
        let handle = self.opening.spawn(async move {
            let window = config.open_window;
            (name, probe_and_open(&config, name, Some(window)).await)
        });
        self.pending.insert(name, handle);
    }

    async fn finish_open(&mut self, name: HidrawName, result: OpenResult) -> Result<(), Stopped> {
        let Opened { description, fd } = match result {
            Ok(Some(opened)) => opened,
            Ok(None) => {
                tracing::debug!(node = %name, "not a CTAPHID interface");
                return Ok(());
            }
            Err(err) => {
                tracing::warn!(node = %name, error = %Chain(&err), "hidraw node skipped");
                return Ok(());
            }
        };
        let link: ReportLink = match io::start_link(fd, &name.to_string()) {
            Ok(link) => link,
            Err(err) => {
                tracing::warn!(node = %name, error = %err, "cannot start IO on hidraw node");
                return Ok(());
            }
        };
        tracing::debug!(
            node = %name,
            id = %description.id,
            vendor_id = ?description.vendor_id,
            product_id = ?description.product_id,
            product = ?description.product,
            "security key added"
        );
        self.present.insert(name, description.id.clone());
        self.send(TransportEvent::Added {
            description,
            connection: Connection::Hid(link),
        })
        .await
    }

    /// After lost events: announce removals for nodes gone (or now another device), and open
    /// nodes not known yet.
    async fn resync(&mut self) -> Result<(), Stopped> {
        let listed: HashSet<HidrawName> = self.list_nodes().into_iter().collect();
        let mut known: Vec<(HidrawName, DeviceId)> = self
            .present
            .iter()
            .map(|(n, id)| (*n, id.clone()))
            .collect();
        known.sort();
        for (name, id) in known {
            let same = listed.contains(&name)
                && sysfs::locate(&self.config, name).is_ok_and(|found| found.id == id);
            if !same {
                self.present.remove(&name);
                tracing::debug!(node = %name, %id, "security key removed (rescan)");
                self.send(TransportEvent::Removed(id)).await?;
            }
        }
        let mut fresh: Vec<HidrawName> = listed
            .into_iter()
            .filter(|n| !self.present.contains_key(n) && !self.pending.contains_key(n))
            .collect();
        fresh.sort();
        for name in fresh {
            self.start_opening(name);
        }
        Ok(())
    }
}

/// Probes a node through sysfs and, when it is a usable FIDO interface, opens it: at once, or
/// with retries for up to `window` after a hotplug `add`.
async fn probe_and_open(
    config: &UsbConfig,
    name: HidrawName,
    window: Option<Duration>,
) -> OpenResult {
    let Some(Probed { description, node }) = sysfs::probe(config, name)? else {
        return Ok(None);
    };
    let fd = match window {
        None => sysfs::open_node(&node),
        Some(window) => sysfs::open_node_within(&node, window).await,
    }
    .map_err(|source| ProbeError::Open { path: node, source })?;
    Ok(Some(Opened { description, fd }))
}

#[cfg(test)]
mod tests;
