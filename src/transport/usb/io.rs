//! Moving reports between an open hidraw node and a [`ReportLink`].
//!
//! Works on any non-blocking, message-oriented file descriptor (a hidraw node, or in tests a
//! `SOCK_SEQPACKET` socket): one read is one input report, one write is one output report.
//! See the module documentation of [`super`] for why reads are a task and writes a thread.

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Arc;

use rustix::event::{PollFd, PollFlags};
use rustix::fs::OFlags;
use rustix::io::Errno;
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::mpsc;

use crate::transport::{LINK_CAPACITY, LinkError, REPORT_LEN, Report, ReportLink};

/// Report ID written before every output report: Linux hidraw expects the report number
/// first, and 0 for a device without numbered reports (CTAP 2.2 §11.2.4 reports carry none).
pub(crate) const REPORT_ID: u8 = 0x00;

/// A write to hidraw: report ID, then the report.
pub(crate) const FRAME_LEN: usize = REPORT_LEN + 1;

/// Reads are one byte longer than a report so that an oversized report is seen as such.
const READ_LEN: usize = REPORT_LEN + 1;

type Inbound = Result<Report, LinkError>;

/// Starts moving reports for `fd` (made non-blocking here) and returns the link. `label`
/// names the writer thread (`hidraw3`).
///
/// Must be called inside a tokio runtime with IO enabled.
pub(crate) fn start_link(fd: OwnedFd, label: &str) -> io::Result<ReportLink> {
    let flags = rustix::fs::fcntl_getfl(&fd)?;
    rustix::fs::fcntl_setfl(&fd, flags | OFlags::NONBLOCK)?;
    let fd = Arc::new(fd);
    let reader = register_readable(Arc::clone(&fd))?;

    let (out_tx, out_rx) = mpsc::channel::<Report>(LINK_CAPACITY);
    let (in_tx, in_rx) = mpsc::channel::<Inbound>(LINK_CAPACITY);

    let writer_errors = in_tx.clone();
    std::thread::Builder::new()
        .name(format!("{label}-write"))
        .spawn(move || write_loop(&fd, out_rx, &writer_errors))?;
    tokio::spawn(read_loop(reader, in_tx));

    Ok(ReportLink {
        tx: out_tx,
        rx: in_rx,
    })
}

/// Registers a descriptor with the runtime's reactor for readability.
///
/// tokio's safe constructors are deprecated (they cannot check I/O safety for any `T`), so this
/// is the one place that calls the `unsafe` one, for the one type used here.
#[allow(unsafe_code)]
pub(crate) fn register_readable(fd: Arc<OwnedFd>) -> io::Result<AsyncFd<Arc<OwnedFd>>> {
    // SAFETY: an `OwnedFd` is an open descriptor that stays open until the `OwnedFd` is
    // dropped, and `Arc<OwnedFd>::as_raw_fd` always returns that same descriptor. The `AsyncFd`
    // holds one strong reference, so the descriptor stays open and refers to the same open file
    // description for the `AsyncFd`'s whole lifetime; nothing here swaps or closes it.
    let registered = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) };
    registered.map_err(io::Error::from)
}

/// Forwards input reports until the device goes away or the link is dropped.
async fn read_loop(fd: AsyncFd<Arc<OwnedFd>>, reports: mpsc::Sender<Inbound>) {
    let mut buf = [0u8; READ_LEN];
    loop {
        let read = tokio::select! {
            read = fd.async_io(Interest::READABLE, |fd| {
                rustix::io::read(fd, &mut buf).map_err(io::Error::from)
            }) => read,
            () = reports.closed() => return,
        };
        let item = match read {
            // INVARIANT: READ_LEN > REPORT_LEN, so the chunk exists.
            Ok(REPORT_LEN) => buf
                .first_chunk::<REPORT_LEN>()
                .copied()
                .ok_or(LinkError::BadReport(REPORT_LEN)),
            Ok(0) => Err(LinkError::Disconnected),
            Ok(n) => Err(LinkError::BadReport(n)),
            Err(err) => Err(link_error(err)),
        };
        let last = item.is_err();
        if reports.send(item).await.is_err() || last {
            return;
        }
    }
}

/// Writes output reports with the report-ID prefix until the link's sender is dropped; on a
/// write error, reports it on the inbound channel and stops.
fn write_loop(fd: &OwnedFd, mut reports: mpsc::Receiver<Report>, errors: &mpsc::Sender<Inbound>) {
    while let Some(report) = reports.blocking_recv() {
        if let Err(err) = write_report(fd.as_fd(), &report) {
            // The receiver may be gone already; then nobody is waiting for the error.
            let _ = errors.blocking_send(Err(err));
            return;
        }
    }
}

/// Writes one report as `REPORT_ID || report`. hidraw takes a report whole or fails.
pub(crate) fn write_report(fd: impl AsFd, report: &Report) -> Result<(), LinkError> {
    let mut frame = [REPORT_ID; FRAME_LEN];
    // INVARIANT: FRAME_LEN = REPORT_LEN + 1, so the tail is exactly a report long.
    if let Some(tail) = frame.get_mut(1..) {
        tail.copy_from_slice(report);
    }
    loop {
        match rustix::io::write(&fd, &frame) {
            Ok(FRAME_LEN) => return Ok(()),
            Ok(n) => {
                return Err(LinkError::Io(io::Error::new(
                    io::ErrorKind::WriteZero,
                    format!("short write: {n} of {FRAME_LEN} bytes"),
                )));
            }
            Err(Errno::INTR) => {}
            Err(Errno::AGAIN) => {
                // Only a socket in tests fills up; hidraw writes block in the kernel instead.
                // Wait for room (or a hang-up, which the next write reports).
                let mut fds = [PollFd::new(&fd, PollFlags::OUT)];
                match rustix::event::poll(&mut fds, None) {
                    Ok(_) | Err(Errno::INTR) => {}
                    Err(err) => return Err(link_error(err.into())),
                }
            }
            Err(err) => return Err(link_error(err.into())),
        }
    }
}

/// Errors that mean the device is gone: hidraw answers reads with `EIO` and writes with
/// `ENODEV` once its device is disconnected; sockets answer with resets and broken pipes.
pub(crate) fn link_error(err: io::Error) -> LinkError {
    match Errno::from_io_error(&err) {
        Some(
            Errno::NODEV
            | Errno::IO
            | Errno::NXIO
            | Errno::SHUTDOWN
            | Errno::PIPE
            | Errno::CONNRESET
            | Errno::NOTCONN,
        ) => LinkError::Disconnected,
        _ => LinkError::Io(err),
    }
}
