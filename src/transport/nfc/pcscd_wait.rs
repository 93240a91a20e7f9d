//! Waiting for pcscd while it does not answer: on its socket appearing (inotify) where that
//! tells anything, on a timer only where it cannot.

use std::{
    ffi::OsString,
    os::unix::net::UnixStream,
    path::{Path, PathBuf},
    time::Duration,
};

use inotify::{Inotify, WatchMask};
use rustix::event::{PollFd, PollFlags, Timespec, poll};
use rustix::io::Errno;

/// Where pcsc-lite's client library looks for pcscd unless `PCSCLITE_CSOCK_NAME` says
/// otherwise (Debian's build; `/var/run` is a link to `/run`).
pub(super) const DEFAULT_SOCKET: &str = "/run/pcscd/pcscd.comm";

/// pcscd's socket as the client library finds it.
pub(super) fn socket_path() -> PathBuf {
    socket_path_from(std::env::var_os("PCSCLITE_CSOCK_NAME"))
}

/// pcscd's socket, given the value of `PCSCLITE_CSOCK_NAME` (an empty one is not used).
fn socket_path_from(variable: Option<OsString>) -> PathBuf {
    variable
        .filter(|name| !name.is_empty())
        .map_or_else(|| PathBuf::from(DEFAULT_SOCKET), PathBuf::from)
}

/// Why a wait ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Woken {
    /// The socket, or a directory on its path, appeared: worth trying pcscd again now.
    Appeared,
    /// The pause is over.
    Timeout,
    /// The shutdown stream became readable or was closed.
    Shutdown,
}

/// Waits for pcscd to be worth trying again.
///
/// If `socket` does not exist, watches the nearest existing directory on its path for the next
/// component (the socket, or the directory that will hold it) and waits without a timeout: no
/// wakeup until pcscd starts. If the socket exists but pcscd did not answer (a stale socket, a
/// pcscd that refuses us), inotify cannot tell when that changes, so this waits `pause`. The
/// same fallback applies if inotify fails.
pub(super) fn wait(socket: &Path, shutdown: &UnixStream, pause: Duration) -> Woken {
    if socket.exists() {
        return pause_or_shutdown(shutdown, pause);
    }
    match watch(socket, shutdown) {
        Ok(woken) => woken,
        Err(error) => {
            tracing::debug!(%error, "cannot watch for pcscd's socket; retrying on a timer");
            pause_or_shutdown(shutdown, pause)
        }
    }
}

/// The nearest existing directory on `socket`'s path and the name in it to wait for.
fn watch_point(socket: &Path) -> Option<(&Path, OsString)> {
    let mut child = socket;
    while let Some(parent) = child.parent() {
        let parent = if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        };
        if parent.is_dir() {
            return Some((parent, child.file_name()?.to_owned()));
        }
        child = parent;
    }
    None
}

fn watch(socket: &Path, shutdown: &UnixStream) -> std::io::Result<Woken> {
    let (dir, name) = watch_point(socket).ok_or(std::io::ErrorKind::NotFound)?;
    // `Inotify::init` opens the descriptor non-blocking and close-on-exec.
    let mut inotify = Inotify::init()?;
    inotify.watches().add(
        dir,
        WatchMask::CREATE | WatchMask::MOVED_TO | WatchMask::ONLYDIR,
    )?;
    // It may have appeared between the caller's look and the watch.
    if dir.join(&name).exists() {
        return Ok(Woken::Appeared);
    }
    let mut buffer = [0u8; 4096];
    loop {
        let (shutdown_ready, inotify_ready) = {
            let mut fds = [
                PollFd::new(shutdown, PollFlags::IN),
                PollFd::new(&inotify, PollFlags::IN),
            ];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(Errno::INTR) => continue,
                Err(error) => return Err(error.into()),
            }
            let [shutdown_fd, inotify_fd] = &fds;
            (
                !shutdown_fd.revents().is_empty(),
                !inotify_fd.revents().is_empty(),
            )
        };
        if shutdown_ready {
            return Ok(Woken::Shutdown);
        }
        if inotify_ready {
            match inotify.read_events(&mut buffer) {
                Ok(mut events) => {
                    if events.any(|event| event.name == Some(name.as_os_str())) {
                        return Ok(Woken::Appeared);
                    }
                }
                Err(error)
                    if matches!(
                        error.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::Interrupted
                    ) => {}
                Err(error) => return Err(error),
            }
        }
    }
}

/// Waits `pause`, or less if `shutdown` becomes readable or closes.
fn pause_or_shutdown(shutdown: &UnixStream, pause: Duration) -> Woken {
    let timeout = Timespec::try_from(pause).unwrap_or(Timespec {
        tv_sec: i64::MAX,
        tv_nsec: 0,
    });
    let mut fds = [PollFd::new(shutdown, PollFlags::IN)];
    match poll(&mut fds, Some(&timeout)) {
        Ok(0) => Woken::Timeout,
        Ok(_) => Woken::Shutdown,
        // Interrupted or failed: let the caller try pcscd again, then wait anew.
        Err(_) => Woken::Timeout,
    }
}

#[cfg(test)]
mod tests {
    use std::{
        fs,
        os::unix::net::UnixListener,
        thread,
        time::{Duration, Instant},
    };

    use super::*;

    /// A fresh directory under the system's temporary directory.
    fn scratch(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("passkeyd-pcscd-wait-{}-{name}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn the_watch_point_is_the_nearest_existing_directory() {
        let dir = scratch("point");
        let socket = dir.join("pcscd").join("pcscd.comm");
        let (watched, name) = watch_point(&socket).unwrap();
        assert_eq!(watched, dir.as_path());
        assert_eq!(name, "pcscd");
        fs::create_dir(dir.join("pcscd")).unwrap();
        let (watched, name) = watch_point(&socket).unwrap();
        assert_eq!(watched, dir.join("pcscd").as_path());
        assert_eq!(name, "pcscd.comm");
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn wakes_when_the_directory_then_the_socket_appear() {
        let dir = scratch("appear");
        let socket = dir.join("pcscd").join("pcscd.comm");
        let (_keep, shutdown) = UnixStream::pair().unwrap();
        let creator = {
            let dir = dir.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                // Unrelated entries do not end the wait.
                fs::write(dir.join("noise"), b"").unwrap();
                thread::sleep(Duration::from_millis(50));
                fs::create_dir(dir.join("pcscd")).unwrap();
            })
        };
        let start = Instant::now();
        let woken = wait(&socket, &shutdown, Duration::from_secs(30));
        assert_eq!(woken, Woken::Appeared);
        assert!(start.elapsed() >= Duration::from_millis(100));
        assert!(start.elapsed() < Duration::from_secs(10));
        creator.join().unwrap();

        let binder = {
            let socket = socket.clone();
            thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                UnixListener::bind(&socket).unwrap()
            })
        };
        assert_eq!(
            wait(&socket, &shutdown, Duration::from_secs(30)),
            Woken::Appeared
        );
        let _listener = binder.join().unwrap();
        assert!(socket.exists());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn an_existing_socket_means_a_timed_pause() {
        let dir = scratch("stale");
        let socket = dir.join("pcscd.comm");
        fs::write(&socket, b"").unwrap();
        let (_keep, shutdown) = UnixStream::pair().unwrap();
        let start = Instant::now();
        assert_eq!(
            wait(&socket, &shutdown, Duration::from_millis(100)),
            Woken::Timeout
        );
        assert!(start.elapsed() >= Duration::from_millis(100));
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn closing_the_shutdown_stream_ends_either_wait() {
        let dir = scratch("shutdown");
        let missing = dir.join("pcscd").join("pcscd.comm");
        let present = dir.join("present.comm");
        fs::write(&present, b"").unwrap();
        for socket in [missing, present] {
            let (keep, shutdown) = UnixStream::pair().unwrap();
            let closer = thread::spawn(move || {
                thread::sleep(Duration::from_millis(50));
                drop(keep);
            });
            let start = Instant::now();
            assert_eq!(
                wait(&socket, &shutdown, Duration::from_secs(30)),
                Woken::Shutdown
            );
            assert!(start.elapsed() < Duration::from_secs(10));
            closer.join().unwrap();
        }
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_socket_path_follows_the_client_library() {
        let default = PathBuf::from("/run/pcscd/pcscd.comm");
        assert_eq!(socket_path_from(None), default);
        assert_eq!(socket_path_from(Some(OsString::new())), default);
        assert_eq!(
            socket_path_from(Some(OsString::from("/tmp/other.comm"))),
            PathBuf::from("/tmp/other.comm")
        );
    }
}
