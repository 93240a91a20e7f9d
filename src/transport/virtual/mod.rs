//! Virtual security keys on Unix sockets.
//!
//! A directory holds one Unix SOCK_SEQPACKET socket per virtual key, `NAME.sock`, served by
//! `virtkey --dir DIR --name NAME` (or `virtkey::socket::serve` in tests); one message is one
//! 64-byte CTAPHID report without report-ID byte, in both directions. A socket appearing is a
//! plug, a socket disappearing (or its connection closing) is an unplug, so a virtual key looks
//! to the device layer exactly like a hidraw device.
//!
//! # How it watches
//!
//! One tokio task owns an inotify instance watching the directory for `IN_CREATE`,
//! `IN_MOVED_TO` and `IN_ATTRIB` (connect), `IN_DELETE` and `IN_MOVED_FROM` (remove), and the
//! directory's own deletion or move. At start it lists the `*.sock` files already there,
//! connects to each, and reports [`TransportEvent::EnumerationComplete`]. Nothing is polled:
//! the task sleeps on the inotify descriptor, the device channels and the sockets.
//!
//! - A socket must be listening when its name appears: `virtkey` binds under a hidden
//!   temporary name and renames the socket into place. A socket nobody listens on (left by a
//!   process that was killed) is skipped; touching it (`IN_ATTRIB`) retries, which also
//!   re-plugs a key whose connection closed while its socket stayed.
//! - Files whose name starts with `.` or does not end in `.sock` are ignored.
//! - The id is `DeviceId::new(Transport::Virtual, NAME)`; a second name that maps to the same
//!   id (`a-b` and `a_b`) is skipped with a warning while the first is present.
//! - A missing directory is created. If that fails, the transport reports
//!   [`TransportEvent::Unavailable`] and watches the nearest existing ancestor until something
//!   changes there, then tries again. If the directory is deleted or moved while watched, its
//!   keys are removed and the same applies.
//! - After an inotify queue overflow the directory is listed again and the difference
//!   reported.
//!
//! Each connected key has an IO task that moves reports between its socket and its
//! [`ReportLink`]. A message that is not exactly 64 bytes ends the link with
//! [`LinkError::BadReport`]; end of stream or a connection error ends it with
//! [`LinkError::Disconnected`] or [`LinkError::Io`]. Either way, and when the socket file goes
//! or the device actor drops the link, the key is reported [`TransportEvent::Removed`], once.

use std::{
    collections::HashMap,
    ffi::OsStr,
    io,
    path::{Path, PathBuf},
    time::Duration,
};

use futures_util::StreamExt as _;
use inotify::{EventMask, EventStream, Inotify, WatchDescriptor, WatchMask};
use tokio::{
    sync::mpsc,
    task::{AbortHandle, JoinHandle, JoinSet},
};
use tokio_seqpacket::UnixSeqpacket;

use super::{
    Connection, DeviceDescription, DeviceId, LINK_CAPACITY, LinkError, REPORT_LEN, Report,
    ReportLink, Transport, TransportEvent,
};

/// The file name suffix of a virtual key's socket.
pub const SOCKET_SUFFIX: &str = ".sock";

/// The product name reported for every virtual key.
pub const PRODUCT: &str = "virtkey";

/// How long connecting to a socket may take. A Unix socket connects at once or fails at once;
/// only a listener with a full backlog makes a connect wait.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// Receive buffer: a report, and room to tell the length of a wrong-sized message (longer
/// ones are reported as this length).
const RECV_BUFFER: usize = 1024;

/// Room for inotify events: each is 16 bytes plus a name of at most 255 bytes and its padding.
const INOTIFY_BUFFER: usize = 4096;

/// Settings of the virtual transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VirtualConfig {
    /// The directory of the sockets (relative paths are taken from the current directory at
    /// [`spawn`]).
    pub dir: PathBuf,
}

/// Why the virtual transport could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum VirtualError {
    /// [`spawn`] was called outside a tokio runtime.
    #[error("the virtual transport needs a tokio runtime")]
    NoRuntime,
    /// inotify could not be set up (or the directory path could not be made absolute).
    #[error("cannot watch for virtual keys")]
    Inotify(#[source] io::Error),
}

/// The running virtual transport. Dropping it stops the watch and closes every link it made.
#[derive(Debug)]
pub struct VirtualTransport {
    task: JoinHandle<()>,
}

impl Drop for VirtualTransport {
    fn drop(&mut self) {
        // The task owns the device IO tasks in a JoinSet, which aborts them when dropped.
        self.task.abort();
    }
}

/// Starts watching `config.dir` and reports keys on `events`. Must be called inside a tokio
/// runtime with its IO and time drivers enabled (connects have a deadline).
pub fn spawn(
    config: VirtualConfig,
    events: mpsc::Sender<TransportEvent>,
) -> Result<VirtualTransport, VirtualError> {
    let runtime = tokio::runtime::Handle::try_current().map_err(|_| VirtualError::NoRuntime)?;
    let dir = std::path::absolute(&config.dir).map_err(VirtualError::Inotify)?;
    let stream = Inotify::init()
        .and_then(|inotify| inotify.into_event_stream(vec![0u8; INOTIFY_BUFFER]))
        .map_err(VirtualError::Inotify)?;
    let watcher = Watcher {
        dir,
        stream,
        events,
        devices: HashMap::new(),
        tasks: JoinSet::new(),
        next_generation: 0,
    };
    let task = runtime.spawn(watcher.run());
    Ok(VirtualTransport { task })
}

/// The events receiver is gone: the transport stops.
#[derive(Debug)]
struct Closed;

/// A connected key.
#[derive(Debug)]
struct Device {
    id: DeviceId,
    /// Tells this connection's IO task from an earlier one of the same name.
    generation: u64,
    abort: AbortHandle,
}

/// The watch task's state.
struct Watcher {
    dir: PathBuf,
    stream: EventStream<Vec<u8>>,
    events: mpsc::Sender<TransportEvent>,
    /// Connected keys by socket name (without suffix).
    devices: HashMap<String, Device>,
    /// The IO tasks; each returns its name and generation.
    tasks: JoinSet<(String, u64)>,
    next_generation: u64,
}

/// What the directory watch wants to hear about.
fn directory_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

/// What the wait for a missing directory wants to hear about in an ancestor: anything that
/// may let the directory be created.
fn ancestor_mask() -> WatchMask {
    WatchMask::CREATE
        | WatchMask::MOVED_TO
        | WatchMask::DELETE
        | WatchMask::MOVED_FROM
        | WatchMask::ATTRIB
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::ONLYDIR
}

impl Watcher {
    async fn run(mut self) {
        if let Err(Closed) = self.serve().await {
            tracing::debug!("virtual transport: event receiver gone, stopping");
        }
    }

    async fn serve(&mut self) -> Result<(), Closed> {
        loop {
            let watch = self.wait_for_directory().await?;
            tracing::info!(dir = %self.dir.display(), "watching for virtual keys");
            self.rescan().await?;
            self.send(TransportEvent::EnumerationComplete(Transport::Virtual))
                .await?;
            self.watch(&watch).await?;
            // The directory went away: its keys with it.
            let names: Vec<String> = self.devices.keys().cloned().collect();
            for name in names {
                self.remove(&name).await?;
            }
        }
    }

    async fn send(&self, event: TransportEvent) -> Result<(), Closed> {
        self.events.send(event).await.map_err(|_| Closed)
    }

    /// Creates the directory if needed and watches it. Reports `Unavailable` once per outage
    /// and waits for a change in the nearest existing ancestor between attempts.
    async fn wait_for_directory(&mut self) -> Result<WatchDescriptor, Closed> {
        let mut reported = false;
        loop {
            let error = match self.watch_directory() {
                Ok(watch) => return Ok(watch),
                Err(error) => error,
            };
            if !reported {
                tracing::warn!(dir = %self.dir.display(), %error, "virtual key directory unavailable");
                self.send(TransportEvent::Unavailable {
                    transport: Transport::Virtual,
                    reason: format!("{}: {error}", self.dir.display()),
                })
                .await?;
                reported = true;
            }
            let Some(ancestor) = existing_ancestor(&self.dir) else {
                return self.park().await;
            };
            let ancestor_watch = match self.stream.watches().add(&ancestor, ancestor_mask()) {
                Ok(watch) => watch,
                Err(error) => {
                    tracing::warn!(dir = %ancestor.display(), %error, "cannot watch; virtual keys stay unavailable");
                    return self.park().await;
                }
            };
            // The change may have happened before the watch was in place.
            if let Ok(watch) = self.watch_directory() {
                if watch != ancestor_watch {
                    let _ = self.stream.watches().remove(ancestor_watch);
                }
                return Ok(watch);
            }
            tokio::select! {
                event = self.stream.next() => {
                    if !matches!(event, Some(Ok(_))) {
                        tracing::warn!("inotify failed; virtual keys stay unavailable");
                        return self.park().await;
                    }
                }
                () = self.events.closed() => return Err(Closed),
            }
            // Removing a watch the kernel dropped already (ancestor deleted) fails harmlessly.
            let _ = self.stream.watches().remove(ancestor_watch);
        }
    }

    /// Nothing left to wait on without polling: sleep until the transport is dropped or its
    /// event receiver goes.
    async fn park(&self) -> Result<WatchDescriptor, Closed> {
        self.events.closed().await;
        Err(Closed)
    }

    fn watch_directory(&mut self) -> io::Result<WatchDescriptor> {
        std::fs::create_dir_all(&self.dir)?;
        self.stream.watches().add(&self.dir, directory_mask())
    }

    /// Serves directory events and device ends until the directory itself goes away.
    async fn watch(&mut self, watch: &WatchDescriptor) -> Result<(), Closed> {
        loop {
            tokio::select! {
                event = self.stream.next() => {
                    let event = match event {
                        Some(Ok(event)) => event,
                        Some(Err(error)) => {
                            tracing::warn!(%error, "reading inotify events failed");
                            let _ = self.stream.watches().remove(watch.clone());
                            return Ok(());
                        }
                        None => {
                            tracing::warn!("inotify stream ended");
                            let _ = self.stream.watches().remove(watch.clone());
                            return Ok(());
                        }
                    };
                    if event.mask.contains(EventMask::Q_OVERFLOW) {
                        tracing::warn!("inotify queue overflowed; listing the directory again");
                        self.rescan().await?;
                        continue;
                    }
                    if event.wd != *watch {
                        // A leftover event of an ancestor watch.
                        continue;
                    }
                    match classify(event.mask, event.name.as_deref()) {
                        DirEvent::Plug(name) => self.add(&name).await?,
                        DirEvent::Unplug(name) => self.remove(&name).await?,
                        DirEvent::DirectoryGone => {
                            tracing::warn!(dir = %self.dir.display(), "virtual key directory went away");
                            let _ = self.stream.watches().remove(watch.clone());
                            return Ok(());
                        }
                        DirEvent::Ignore => {}
                    }
                }
                Some(ended) = self.tasks.join_next() => {
                    // Aborted tasks (removed keys) were reported already.
                    if let Ok((name, generation)) = ended {
                        self.device_ended(&name, generation).await?;
                    }
                }
                () = self.events.closed() => return Err(Closed),
            }
        }
    }

    /// Lists the directory and reconciles: sockets gone are removed, new ones connected.
    async fn rescan(&mut self) -> Result<(), Closed> {
        let mut names: Vec<String> = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .filter_map(|entry| socket_name(&entry.file_name()).map(str::to_owned))
                .collect(),
            Err(error) => {
                tracing::warn!(dir = %self.dir.display(), %error, "cannot list the directory");
                return Ok(());
            }
        };
        names.sort();
        let gone: Vec<String> = self
            .devices
            .keys()
            .filter(|name| !names.contains(name))
            .cloned()
            .collect();
        for name in gone {
            self.remove(&name).await?;
        }
        for name in names {
            self.add(&name).await?;
        }
        Ok(())
    }

    /// Connects to `NAME.sock` unless connected already, and reports the key.
    async fn add(&mut self, name: &str) -> Result<(), Closed> {
        if self.devices.contains_key(name) {
            return Ok(());
        }
        let id = DeviceId::new(Transport::Virtual, name);
        if self.devices.values().any(|device| device.id == id) {
            tracing::warn!(name, %id, "another virtual key has the same id; skipped");
            return Ok(());
        }
        let path = self.dir.join(format!("{name}{SOCKET_SUFFIX}"));
        let socket =
            match tokio::time::timeout(CONNECT_TIMEOUT, UnixSeqpacket::connect(&path)).await {
                Ok(Ok(socket)) => socket,
                Ok(Err(error)) => {
                    // ECONNREFUSED: a stale socket; ENOENT: gone again; ENOTSOCK and the like: not
                    // a key.
                    tracing::debug!(path = %path.display(), %error, "cannot connect; skipped");
                    return Ok(());
                }
                Err(_) => {
                    tracing::warn!(path = %path.display(), "connecting timed out; skipped");
                    return Ok(());
                }
            };
        let (to_device, from_actor) = mpsc::channel(LINK_CAPACITY);
        let (to_actor, from_device) = mpsc::channel(LINK_CAPACITY);
        let generation = self.next_generation;
        self.next_generation = self.next_generation.wrapping_add(1);
        let abort = self.tasks.spawn(pump(
            name.to_owned(),
            generation,
            socket,
            to_actor,
            from_actor,
        ));
        self.devices.insert(
            name.to_owned(),
            Device {
                id: id.clone(),
                generation,
                abort,
            },
        );
        tracing::debug!(%id, path = %path.display(), "virtual key added");
        self.send(TransportEvent::Added {
            description: DeviceDescription {
                id,
                transport: Transport::Virtual,
                path: path.to_string_lossy().into_owned(),
                vendor_id: None,
                product_id: None,
                product: Some(PRODUCT.to_owned()),
                manufacturer: None,
            },
            connection: Connection::Hid(ReportLink {
                tx: to_device,
                rx: from_device,
            }),
        })
        .await
    }

    /// The socket file went: closes the link and reports the removal.
    async fn remove(&mut self, name: &str) -> Result<(), Closed> {
        let Some(device) = self.devices.remove(name) else {
            return Ok(());
        };
        device.abort.abort();
        tracing::debug!(id = %device.id, "virtual key removed");
        self.send(TransportEvent::Removed(device.id)).await
    }

    /// An IO task ended by itself (end of stream, error, link dropped).
    async fn device_ended(&mut self, name: &str, generation: u64) -> Result<(), Closed> {
        if self
            .devices
            .get(name)
            .is_some_and(|device| device.generation == generation)
        {
            self.remove(name).await?;
        }
        Ok(())
    }
}

/// What a directory event means for the transport.
#[derive(Debug, PartialEq, Eq)]
enum DirEvent {
    /// A socket may have appeared (or been touched): connect unless connected.
    Plug(String),
    /// A socket went.
    Unplug(String),
    /// The watched directory itself was deleted, moved or unmounted.
    DirectoryGone,
    Ignore,
}

fn classify(mask: EventMask, name: Option<&OsStr>) -> DirEvent {
    if mask.intersects(
        EventMask::DELETE_SELF | EventMask::MOVE_SELF | EventMask::UNMOUNT | EventMask::IGNORED,
    ) {
        return DirEvent::DirectoryGone;
    }
    if mask.contains(EventMask::ISDIR) {
        return DirEvent::Ignore;
    }
    let Some(name) = name.and_then(socket_name) else {
        return DirEvent::Ignore;
    };
    if mask.intersects(EventMask::DELETE | EventMask::MOVED_FROM) {
        DirEvent::Unplug(name.to_owned())
    } else if mask.intersects(EventMask::CREATE | EventMask::MOVED_TO | EventMask::ATTRIB) {
        DirEvent::Plug(name.to_owned())
    } else {
        DirEvent::Ignore
    }
}

/// `NAME` of a `NAME.sock` file name; `None` for hidden files, other suffixes, an empty NAME
/// and names that are not UTF-8.
fn socket_name(file_name: &OsStr) -> Option<&str> {
    let name = file_name.to_str()?.strip_suffix(SOCKET_SUFFIX)?;
    (!name.is_empty() && !name.starts_with('.')).then_some(name)
}

/// The nearest directory above `dir` that exists: a change to `dir` itself (created,
/// permissions) shows up in its parent's watch.
fn existing_ancestor(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .skip(1)
        .find(|ancestor| ancestor.is_dir())
        .map(Path::to_path_buf)
}

/// The IO task of one key: socket ⇄ link. Returns its name and generation when the link ends.
async fn pump(
    name: String,
    generation: u64,
    socket: UnixSeqpacket,
    to_actor: mpsc::Sender<Result<Report, LinkError>>,
    mut from_actor: mpsc::Receiver<Report>,
) -> (String, u64) {
    let mut buffer = [0u8; RECV_BUFFER];
    let failure = loop {
        tokio::select! {
            received = socket.recv(&mut buffer) => {
                let report = received
                    .map_err(link_error)
                    .and_then(|info| to_report(&buffer, info.bytes_read(), info.truncated()));
                match report {
                    Ok(report) => {
                        if to_actor.send(Ok(report)).await.is_err() {
                            break None;
                        }
                    }
                    Err(error) => break Some(error),
                }
            }
            report = from_actor.recv() => match report {
                Some(report) => {
                    if let Err(error) = socket.send(&report).await {
                        break Some(link_error(error));
                    }
                }
                None => break None,
            },
        }
    };
    if let Some(error) = failure {
        tracing::debug!(name, %error, "virtual key link ended");
        // Best effort: a full channel means the actor is not reading; the close tells it too.
        let _ = to_actor.try_send(Err(error));
    }
    (name, generation)
}

/// One received message as a report. `length` is what was read into `buffer`; `truncated`
/// means the message was longer than the buffer.
fn to_report(buffer: &[u8], length: usize, truncated: bool) -> Result<Report, LinkError> {
    if length == 0 && !truncated {
        // End of stream (virtkey never sends an empty message).
        return Err(LinkError::Disconnected);
    }
    if truncated || length != REPORT_LEN {
        return Err(LinkError::BadReport(length));
    }
    buffer
        .get(..REPORT_LEN)
        .and_then(|bytes| Report::try_from(bytes).ok())
        .ok_or(LinkError::BadReport(length))
}

fn link_error(error: io::Error) -> LinkError {
    match error.kind() {
        io::ErrorKind::BrokenPipe
        | io::ErrorKind::ConnectionReset
        | io::ErrorKind::NotConnected
        | io::ErrorKind::ConnectionAborted => LinkError::Disconnected,
        _ => LinkError::Io(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_names() {
        assert_eq!(socket_name(OsStr::new("key1.sock")), Some("key1"));
        assert_eq!(socket_name(OsStr::new("a.b.sock")), Some("a.b"));
        assert_eq!(socket_name(OsStr::new(".sock")), None);
        assert_eq!(socket_name(OsStr::new(".key.sock")), None);
        assert_eq!(socket_name(OsStr::new(".virtkey-12-0.tmp")), None);
        assert_eq!(socket_name(OsStr::new("key.sock.tmp")), None);
        assert_eq!(socket_name(OsStr::new("key")), None);
        let not_utf8 = <OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(b"\xff.sock");
        assert_eq!(socket_name(not_utf8), None);
    }

    #[test]
    fn directory_events_are_classified() {
        let name = Some(OsStr::new("k.sock"));
        assert_eq!(
            classify(EventMask::CREATE, name),
            DirEvent::Plug("k".into())
        );
        assert_eq!(
            classify(EventMask::MOVED_TO, name),
            DirEvent::Plug("k".into())
        );
        assert_eq!(
            classify(EventMask::ATTRIB, name),
            DirEvent::Plug("k".into())
        );
        assert_eq!(
            classify(EventMask::DELETE, name),
            DirEvent::Unplug("k".into())
        );
        assert_eq!(
            classify(EventMask::MOVED_FROM, name),
            DirEvent::Unplug("k".into())
        );
        assert_eq!(
            classify(EventMask::CREATE | EventMask::ISDIR, name),
            DirEvent::Ignore
        );
        assert_eq!(
            classify(EventMask::CREATE, Some(OsStr::new(".virtkey-1-0.tmp"))),
            DirEvent::Ignore
        );
        assert_eq!(classify(EventMask::CREATE, None), DirEvent::Ignore);
        assert_eq!(
            classify(EventMask::DELETE_SELF, None),
            DirEvent::DirectoryGone
        );
        assert_eq!(
            classify(EventMask::MOVE_SELF, None),
            DirEvent::DirectoryGone
        );
        assert_eq!(classify(EventMask::IGNORED, None), DirEvent::DirectoryGone);
    }

    #[test]
    fn messages_become_reports_or_typed_errors() {
        let mut buffer = [0u8; RECV_BUFFER];
        buffer[..REPORT_LEN].copy_from_slice(&[0x5a; REPORT_LEN]);
        assert_eq!(
            to_report(&buffer, REPORT_LEN, false).unwrap(),
            [0x5a; REPORT_LEN]
        );
        assert!(matches!(
            to_report(&buffer, 0, false),
            Err(LinkError::Disconnected)
        ));
        assert!(matches!(
            to_report(&buffer, 10, false),
            Err(LinkError::BadReport(10))
        ));
        assert!(matches!(
            to_report(&buffer, 65, false),
            Err(LinkError::BadReport(65))
        ));
        assert!(matches!(
            to_report(&buffer, RECV_BUFFER, true),
            Err(LinkError::BadReport(RECV_BUFFER))
        ));
        // A length beyond the buffer (impossible from the kernel) is still no panic.
        assert!(matches!(
            to_report(&buffer[..10], REPORT_LEN, false),
            Err(LinkError::BadReport(REPORT_LEN))
        ));
    }

    #[test]
    fn peer_hang_ups_are_disconnections() {
        assert!(matches!(
            link_error(io::ErrorKind::BrokenPipe.into()),
            LinkError::Disconnected
        ));
        assert!(matches!(
            link_error(io::ErrorKind::ConnectionReset.into()),
            LinkError::Disconnected
        ));
        assert!(matches!(
            link_error(io::ErrorKind::PermissionDenied.into()),
            LinkError::Io(_)
        ));
    }

    #[test]
    fn the_ancestor_watched_for_a_missing_directory_is_above_it() {
        let dir = std::env::temp_dir()
            .join("passkeyd-no-such-dir")
            .join("keys");
        assert_eq!(existing_ancestor(&dir), Some(std::env::temp_dir()));
        assert_eq!(existing_ancestor(Path::new("/")), None);
    }

    #[test]
    fn spawn_outside_a_runtime_is_an_error() {
        let (events, _rx) = mpsc::channel(1);
        let result = spawn(
            VirtualConfig {
                dir: std::env::temp_dir(),
            },
            events,
        );
        assert!(matches!(result, Err(VirtualError::NoRuntime)));
    }
}
