//! A [`VirtKey`] served on a Unix SOCK_SEQPACKET socket: the HID side of the key as the
//! daemon's virtual transport sees it.
//!
//! One message is one 64-byte HID report, without report-ID byte, in both directions. The
//! socket appears atomically: it is bound and listening under a hidden temporary name in the
//! same directory and then renamed into place, so a directory watcher that connects on
//! `IN_MOVED_TO` never finds a socket that is not listening yet. It is removed when the
//! [`SocketServer`] is dropped (or at an unplug), only if it is still this server's socket.
//!
//! One client at a time: while one is connected, further connections are accepted and closed
//! at once (logged, [`ServerEvent::Refused`]). When the client goes, the key forgets its
//! CTAPHID channels and pending request, as on a USB re-plug, and the server accepts the next
//! one; credentials and PIN stay as long as the key.
//!
//! # Threads
//!
//! - the listener thread blocks in `poll(2)` on the listening socket, the client connection
//!   and an eventfd used to wake it; it accepts, refuses, and passes the client's reports to
//!   [`VirtKey::write_report`];
//! - the sender thread blocks on the key's outbox (a condition variable, no timeout) and sends
//!   each report to the client. A disconnect moves the key's read epoch on, which wakes it.
//!
//! Neither thread wakes up while nothing happens.
//!
//! # Test-rig knobs ([`ServeOptions`])
//!
//! Reports sent to the host are counted from 1 over the server's life, across connections.
//! `corrupt_frame = Some(n)`: the n-th report has bytes 4..64 inverted (the CID stays, so the
//! host's channel filter lets it through and its reassembly has to cope). `unplug_after =
//! Some(n)`: once the n-th report is sent, the socket file is removed and the connection
//! closed, like pulling the key; the server then stays down, unless `replug_after = Some(d)`:
//! then the socket comes back `d` later (a new file, as a key plugged in again) and the key
//! unplugs again once `n` more reports have been sent, over and over: a flapping key.

use std::{
    fs, io,
    os::{
        fd::OwnedFd,
        unix::fs::{FileTypeExt as _, MetadataExt as _},
    },
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
        mpsc::{self, Receiver, Sender},
    },
    thread::{self, JoinHandle},
    time::Duration,
};

use rustix::{
    event::{EventfdFlags, PollFd, PollFlags, eventfd, poll},
    io::Errno,
    net::{
        AddressFamily, RecvFlags, SendFlags, Shutdown, SocketAddrUnix, SocketFlags, SocketType,
        accept_with, bind, connect, listen, recv, send, shutdown, socket_with,
    },
};

use crate::{REPORT_LEN, VirtKey};

/// Pending connections the kernel keeps before the listener thread accepts (and possibly
/// refuses) them.
const BACKLOG: i32 = 4;

/// Settings of [`serve`]. All `None`: a plain key.
#[derive(Clone, Debug, Default)]
pub struct ServeOptions {
    /// Unplug (remove the socket, close the connection) once this many reports have been sent
    /// to the host, counted from 1 over the server's life.
    pub unplug_after: Option<u64>,
    /// Invert bytes 4..64 of the report with this number (counted from 1 over the server's
    /// life) before sending it.
    pub corrupt_frame: Option<u64>,
    /// With `unplug_after`: plug the key in again this long after each unplug (the socket
    /// reappears), and unplug it again `unplug_after` reports later, until the server is
    /// dropped.
    pub replug_after: Option<Duration>,
    /// Where to report what happens ([`ServerEvent`]); sending errors are ignored.
    pub events: Option<Sender<ServerEvent>>,
}

/// What happened to a [`SocketServer`].
#[derive(Debug)]
#[non_exhaustive]
pub enum ServerEvent {
    /// A client connected.
    Connected,
    /// The client disconnected (or was disconnected by [`SocketServer`]'s drop or an unplug).
    Disconnected,
    /// A second client was turned away while one was connected.
    Refused,
    /// The `unplug_after` knob fired: the socket is gone, after this many reports.
    Unplugged {
        /// Reports sent to the host.
        reports: u64,
    },
    /// The `replug_after` knob fired: the socket is back.
    Replugged,
    /// The server stopped on an error; the socket stays until the server is dropped.
    Failed(SocketError),
}

/// Errors of the socket server.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SocketError {
    /// The path does not fit a Unix socket address (108 bytes on Linux).
    #[error("socket path {0:?} is too long for a Unix socket address")]
    PathTooLong(PathBuf),
    /// The path has no file name.
    #[error("socket path {0:?} has no file name")]
    BadPath(PathBuf),
    /// Something other than a socket is in the way; it is left alone.
    #[error("{0:?} exists and is not a socket")]
    NotASocket(PathBuf),
    /// A live server already answers on the path.
    #[error("another server is listening on {0:?}")]
    InUse(PathBuf),
    /// A system call failed.
    #[error("{op} failed")]
    Io {
        /// What was being done.
        op: &'static str,
        /// The error.
        #[source]
        source: io::Error,
    },
    /// The virtual key stopped (its firmware thread ended).
    #[error("the virtual key stopped")]
    KeyStopped,
    /// A thread could not be started.
    #[error("could not start a thread")]
    Spawn(#[source] io::Error),
}

fn io_error(op: &'static str) -> impl FnOnce(Errno) -> SocketError {
    move |errno| SocketError::Io {
        op,
        source: errno.into(),
    }
}

/// A running socket server. Dropping it disconnects the client, stops and joins its threads
/// and removes the socket file.
#[derive(Debug)]
pub struct SocketServer {
    inner: Arc<Inner>,
    listener_thread: Option<JoinHandle<()>>,
    sender_thread: Option<JoinHandle<()>>,
}

/// Serves `key` on a new socket at `path` (its directory must exist). A stale socket left at
/// `path` by a process that died is replaced; a live one, or anything that is not a socket,
/// is an error. Returns once the socket is listening under its final name.
pub fn serve(
    key: Arc<VirtKey>,
    path: &Path,
    options: ServeOptions,
) -> Result<SocketServer, SocketError> {
    let (listener, identity) = bind_atomically(path)?;
    let inner = Arc::new(Inner {
        key,
        path: path.to_path_buf(),
        identity: Mutex::new(identity),
        wake: eventfd(0, EventfdFlags::CLOEXEC | EventfdFlags::NONBLOCK)
            .map_err(io_error("eventfd"))?,
        stop: AtomicBool::new(false),
        unplug: AtomicBool::new(false),
        sent: AtomicU64::new(0),
        next_unplug: AtomicU64::new(options.unplug_after.unwrap_or(0)),
        unplug_after: options.unplug_after,
        replug_after: options.replug_after,
        corrupt_frame: options.corrupt_frame,
        events: options.events,
    });
    let (sessions_tx, sessions_rx) = mpsc::channel();
    let sender_thread = {
        let inner = Arc::clone(&inner);
        thread::Builder::new()
            .name("virtkey-socket-tx".into())
            .spawn(move || run_sender(&inner, &sessions_rx))
    };
    let sender_thread = match sender_thread {
        Ok(thread) => thread,
        Err(error) => {
            inner.remove_socket();
            return Err(SocketError::Spawn(error));
        }
    };
    let listener_thread = {
        let inner = Arc::clone(&inner);
        thread::Builder::new()
            .name("virtkey-socket".into())
            .spawn(move || run_listener(&inner, listener, &sessions_tx))
    };
    let listener_thread = match listener_thread {
        Ok(thread) => thread,
        Err(error) => {
            // The closure (and with it the sessions sender) is gone, so the sender thread ends.
            let _ = sender_thread.join();
            inner.remove_socket();
            return Err(SocketError::Spawn(error));
        }
    };
    tracing::info!(path = %path.display(), "listening");
    Ok(SocketServer {
        inner,
        listener_thread: Some(listener_thread),
        sender_thread: Some(sender_thread),
    })
}

impl SocketServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Reports sent to the host so far, over all connections.
    pub fn reports_sent(&self) -> u64 {
        self.inner.sent.load(Ordering::SeqCst)
    }
}

impl Drop for SocketServer {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::SeqCst);
        self.inner.wake();
        self.inner.key.interrupt_reads();
        if let Some(thread) = self.listener_thread.take() {
            let _ = thread.join();
        }
        if let Some(thread) = self.sender_thread.take() {
            let _ = thread.join();
        }
        self.inner.remove_socket();
    }
}

/// State shared by the server's threads.
#[derive(Debug)]
struct Inner {
    key: Arc<VirtKey>,
    path: PathBuf,
    /// Device and inode of the socket file this server created last.
    identity: Mutex<(u64, u64)>,
    /// eventfd that wakes the listener thread.
    wake: OwnedFd,
    /// Stop serving (drop, or a fatal error).
    stop: AtomicBool,
    /// The unplug knob fired.
    unplug: AtomicBool,
    /// Reports sent to the host.
    sent: AtomicU64,
    /// Unplug once this report has been sent (0: never).
    next_unplug: AtomicU64,
    unplug_after: Option<u64>,
    replug_after: Option<Duration>,
    corrupt_frame: Option<u64>,
    events: Option<Sender<ServerEvent>>,
}

impl Inner {
    fn wake(&self) {
        // A full counter (never reached: 2^64 - 2 wakes) would only mean it is readable anyway.
        let _ = rustix::io::write(&self.wake, &1u64.to_ne_bytes());
    }

    fn notify(&self, event: ServerEvent) {
        if let Some(events) = &self.events {
            let _ = events.send(event);
        }
    }

    /// Sleeps `pause` in `poll(2)` on the wake eventfd; `false` when the server is stopping.
    /// A pause beyond `Instant`'s range lasts until the server stops.
    fn pause(&self, pause: Duration) -> bool {
        let until = std::time::Instant::now().checked_add(pause);
        loop {
            if self.stop.load(Ordering::SeqCst) {
                return false;
            }
            let timeout = match until {
                Some(until) => {
                    let left = until.saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return true;
                    }
                    Some(rustix::event::Timespec {
                        tv_sec: i64::try_from(left.as_secs()).unwrap_or(i64::MAX),
                        tv_nsec: i64::from(left.subsec_nanos()),
                    })
                }
                None => None,
            };
            let mut fds = [PollFd::new(&self.wake, PollFlags::IN)];
            match poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(_) => return false,
            }
            if fds.iter().any(|fd| !fd.revents().is_empty()) {
                let mut counter = [0u8; 8];
                let _ = rustix::io::read(&self.wake, &mut counter);
            }
        }
    }

    fn fail(&self, error: SocketError) {
        tracing::error!(%error, "socket server stopped");
        self.notify(ServerEvent::Failed(error));
        self.stop.store(true, Ordering::SeqCst);
        self.wake();
    }

    /// Removes the socket file if it is still the one this server created (a newer server
    /// may have replaced it).
    fn remove_socket(&self) {
        let identity = *self
            .identity
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let ours =
            fs::symlink_metadata(&self.path).is_ok_and(|meta| (meta.dev(), meta.ino()) == identity);
        if ours && let Err(error) = fs::remove_file(&self.path) {
            tracing::warn!(path = %self.path.display(), %error, "could not remove the socket");
        }
    }
}

/// A connected client, as handed to the sender thread.
#[derive(Debug)]
struct Session {
    conn: Arc<OwnedFd>,
    /// The key's read epoch when the client connected; the disconnect moves it on.
    epoch: u64,
}

/// Binds and listens under a temporary name next to `path`, then renames the socket into
/// place. Returns the listening socket and the device and inode of the file.
fn bind_atomically(path: &Path) -> Result<(OwnedFd, (u64, u64)), SocketError> {
    static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);
    if path.file_name().is_none() {
        return Err(SocketError::BadPath(path.to_path_buf()));
    }
    // Clients connect to the final name, so it has to fit an address too.
    let final_address =
        SocketAddrUnix::new(path).map_err(|_| SocketError::PathTooLong(path.to_path_buf()))?;
    check_existing(path, &final_address)?;
    let temp = path.with_file_name(format!(
        ".virtkey-{}-{}.tmp",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let address = SocketAddrUnix::new(&temp).map_err(|_| SocketError::PathTooLong(temp.clone()))?;
    let listener = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io_error("socket"))?;
    bind(&listener, &address).map_err(io_error("bind"))?;
    let result = listen(&listener, BACKLOG)
        .map_err(io_error("listen"))
        .and_then(|()| {
            fs::rename(&temp, path).map_err(|source| SocketError::Io {
                op: "rename",
                source,
            })
        })
        .and_then(|()| {
            fs::symlink_metadata(path).map_err(|source| SocketError::Io { op: "stat", source })
        });
    match result {
        Ok(meta) => Ok((listener, (meta.dev(), meta.ino()))),
        Err(error) => {
            let _ = fs::remove_file(&temp);
            Err(error)
        }
    }
}

/// Refuses a path that holds something other than a socket, or a socket someone listens on.
fn check_existing(path: &Path, address: &SocketAddrUnix) -> Result<(), SocketError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => return Err(SocketError::Io { op: "stat", source }),
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket(path.to_path_buf()));
    }
    let probe = socket_with(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(io_error("socket"))?;
    match connect(&probe, address) {
        Ok(()) => Err(SocketError::InUse(path.to_path_buf())),
        // Nobody listens: left behind by a process that died; the rename replaces it.
        Err(Errno::CONNREFUSED) => Ok(()),
        Err(errno) => Err(io_error("connect")(errno)),
    }
}

/// The listener thread: serves until stopped, or until unplugged; with `replug_after`, each
/// unplug is followed by a pause and a new socket.
fn run_listener(inner: &Inner, mut listener: OwnedFd, sessions: &Sender<Session>) {
    loop {
        serve_until_unplugged(inner, &listener, sessions);
        let Some(pause) = inner
            .replug_after
            .filter(|_| inner.unplug.load(Ordering::SeqCst))
        else {
            return;
        };
        if !inner.pause(pause) {
            return;
        }
        match bind_atomically(&inner.path) {
            Ok((new_listener, identity)) => {
                listener = new_listener;
                *inner
                    .identity
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = identity;
            }
            Err(error) => {
                inner.fail(error);
                return;
            }
        }
        let sent = inner.sent.load(Ordering::SeqCst);
        let next = sent.saturating_add(inner.unplug_after.unwrap_or(0));
        inner.next_unplug.store(next, Ordering::SeqCst);
        inner.unplug.store(false, Ordering::SeqCst);
        tracing::info!("plugged in again");
        inner.notify(ServerEvent::Replugged);
    }
}

/// Serves one plug-in of the key: accepts clients on `listener` until stopped or unplugged.
fn serve_until_unplugged(inner: &Inner, listener: &OwnedFd, sessions: &Sender<Session>) {
    let mut client: Option<Arc<OwnedFd>> = None;
    let mut buffer = [0u8; REPORT_LEN + 1];
    while !inner.stop.load(Ordering::SeqCst) && !inner.unplug.load(Ordering::SeqCst) {
        let (woken, acceptable, readable) = {
            let mut fds = vec![
                PollFd::new(&inner.wake, PollFlags::IN),
                PollFd::new(listener, PollFlags::IN),
            ];
            if let Some(conn) = &client {
                fds.push(PollFd::new(&**conn, PollFlags::IN));
            }
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(errno) => {
                    inner.fail(io_error("poll")(errno));
                    break;
                }
            }
            let ready = |index: usize| fds.get(index).is_some_and(|fd| !fd.revents().is_empty());
            (ready(0), ready(1), ready(2))
        };
        if woken {
            let mut counter = [0u8; 8];
            let _ = rustix::io::read(&inner.wake, &mut counter);
            continue;
        }
        if readable && let Some(conn) = &client {
            match receive(conn, &mut buffer) {
                Received::Report(report) => {
                    if inner.key.write_report(&report).is_err() {
                        inner.fail(SocketError::KeyStopped);
                        break;
                    }
                }
                Received::Nothing => {}
                Received::Closed => end_session(inner, &mut client),
            }
        }
        if acceptable {
            match accept_with(listener, SocketFlags::CLOEXEC) {
                Ok(conn) if client.is_some() => {
                    tracing::warn!("refusing a second client: one is connected already");
                    drop(conn);
                    inner.notify(ServerEvent::Refused);
                }
                Ok(conn) => {
                    let conn = Arc::new(conn);
                    let session = Session {
                        conn: Arc::clone(&conn),
                        epoch: inner.key.read_epoch(),
                    };
                    if sessions.send(session).is_err() {
                        // The sender thread is gone (an unplug or a failure in progress).
                        continue;
                    }
                    tracing::info!("client connected");
                    client = Some(conn);
                    inner.notify(ServerEvent::Connected);
                }
                Err(Errno::INTR | Errno::AGAIN | Errno::CONNABORTED) => {}
                Err(errno) => {
                    inner.fail(io_error("accept")(errno));
                    break;
                }
            }
        }
    }
    if inner.unplug.load(Ordering::SeqCst) {
        // Pulling the key: the socket disappears, then the connection drops.
        inner.remove_socket();
        end_session(inner, &mut client);
        let reports = inner.sent.load(Ordering::SeqCst);
        tracing::info!(reports, "unplugged");
        inner.notify(ServerEvent::Unplugged { reports });
    } else {
        end_session(inner, &mut client);
    }
}

/// What one receive on the client connection gave.
enum Received {
    Report([u8; REPORT_LEN]),
    /// Nothing to pass on (a wrong-sized message was dropped, or a spurious wake-up).
    Nothing,
    /// The client is gone.
    Closed,
}

fn receive(conn: &OwnedFd, buffer: &mut [u8; REPORT_LEN + 1]) -> Received {
    // TRUNC: the return value is the message's real length even when it exceeds the buffer.
    match recv(
        conn,
        &mut buffer[..],
        RecvFlags::TRUNC | RecvFlags::DONTWAIT,
    ) {
        // End of stream (an empty message is not a report either).
        Ok((_, 0)) => Received::Closed,
        Ok((_, REPORT_LEN)) => {
            let mut report = [0u8; REPORT_LEN];
            report.copy_from_slice(buffer.get(..REPORT_LEN).unwrap_or(&[0; REPORT_LEN]));
            Received::Report(report)
        }
        Ok((_, length)) => {
            tracing::warn!(length, "dropping a message that is not a 64-byte report");
            Received::Nothing
        }
        Err(Errno::AGAIN | Errno::INTR) => Received::Nothing,
        Err(errno) => {
            tracing::info!(error = %io::Error::from(errno), "client connection failed");
            Received::Closed
        }
    }
}

/// Closes the client connection (if any) and resets the key's host side.
fn end_session(inner: &Inner, client: &mut Option<Arc<OwnedFd>>) {
    let Some(conn) = client.take() else {
        return;
    };
    // Wakes a send blocked on a full socket buffer; the sender thread holds the other Arc.
    let _ = shutdown(&*conn, Shutdown::Both);
    inner.key.interrupt_reads();
    inner.key.reset_host();
    tracing::info!("client disconnected");
    inner.notify(ServerEvent::Disconnected);
}

/// The sender thread: key → client.
fn run_sender(inner: &Inner, sessions: &Receiver<Session>) {
    for session in sessions {
        loop {
            let mut report = match inner.key.read_report_in_epoch(session.epoch) {
                Ok(Some(report)) => report,
                Ok(None) => break,
                Err(_) => {
                    inner.fail(SocketError::KeyStopped);
                    return;
                }
            };
            let number = inner.sent.load(Ordering::SeqCst).saturating_add(1);
            if inner.corrupt_frame == Some(number) {
                tracing::info!(report = number, "corrupting this report");
                corrupt(&mut report);
            }
            if let Err(errno) = send(&*session.conn, &report, SendFlags::NOSIGNAL) {
                // The listener thread sees the hang-up and ends the session.
                tracing::debug!(error = %io::Error::from(errno), "send to the client failed");
                break;
            }
            inner.sent.store(number, Ordering::SeqCst);
            if inner.next_unplug.load(Ordering::SeqCst) == number {
                inner.unplug.store(true, Ordering::SeqCst);
                inner.wake();
                // The listener ends the session; a replug starts a new one.
                break;
            }
        }
    }
}

/// Inverts everything after the CID.
fn corrupt(report: &mut [u8; REPORT_LEN]) {
    for byte in report.iter_mut().skip(4) {
        *byte = !*byte;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corruption_keeps_the_cid_and_inverts_the_rest() {
        let mut report = [0u8; REPORT_LEN];
        report[..7].copy_from_slice(&[0x01, 0x02, 0x03, 0x04, 0x90, 0x00, 0x01]);
        corrupt(&mut report);
        assert_eq!(&report[..7], &[0x01, 0x02, 0x03, 0x04, 0x6f, 0xff, 0xfe]);
        assert!(report[7..].iter().all(|&b| b == 0xff));
    }

    #[test]
    fn a_replug_pause_beyond_the_clock_ends_when_the_server_is_dropped() {
        let dir = std::env::temp_dir().join(format!("virtkey-replug-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let path = dir.join("k.sock");
        let key = Arc::new(VirtKey::start(crate::Config::default()).unwrap());
        let (events_tx, events) = mpsc::channel();
        let server = serve(
            key,
            &path,
            ServeOptions {
                unplug_after: Some(1),
                replug_after: Some(Duration::MAX),
                events: Some(events_tx),
                ..ServeOptions::default()
            },
        )
        .unwrap();
        let client = socket_with(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .unwrap();
        connect(&client, &SocketAddrUnix::new(&path).unwrap()).unwrap();
        let mut init = [0u8; REPORT_LEN];
        init[..8].copy_from_slice(&[0xff, 0xff, 0xff, 0xff, 0x86, 0x00, 0x08, 0x01]);
        send(&client, &init, SendFlags::NOSIGNAL).unwrap();
        let wait = Duration::from_secs(30);
        loop {
            match events.recv_timeout(wait).unwrap() {
                ServerEvent::Unplugged { reports: 1 } => break,
                ServerEvent::Connected | ServerEvent::Disconnected => {}
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(!path.exists());
        // The listener now waits "forever" for the replug (without panicking on the absurd
        // duration); stopping the server, as its drop does, wakes it.
        let mut server = server;
        let listener = server.listener_thread.take().unwrap();
        server.inner.stop.store(true, Ordering::SeqCst);
        server.inner.wake();
        assert!(listener.join().is_ok(), "the listener thread panicked");
        drop(server);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_path_without_file_name_or_too_long_is_refused() {
        assert!(matches!(
            bind_atomically(Path::new("/")),
            Err(SocketError::BadPath(_))
        ));
        let long = PathBuf::from(format!("/tmp/{}.sock", "x".repeat(200)));
        assert!(matches!(
            bind_atomically(&long),
            Err(SocketError::PathTooLong(_))
        ));
    }
}
