//! The kernel's uevent netlink socket (`NETLINK_KOBJECT_UEVENT`), read through `AsyncFd`.

use std::io;
use std::os::fd::OwnedFd;
use std::sync::Arc;

use rustix::io::Errno;
use rustix::net::netlink::{self, SocketAddrNetlink};
use rustix::net::{AddressFamily, RecvFlags, SocketFlags, SocketType};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;

use super::io::register_readable;

/// Multicast group of the kernel's own uevents (udev re-broadcasts on group 2).
const KERNEL_GROUP: u32 = 1;

/// Receive buffer asked for, so that a burst (a hub with several keys plugged at once sends
/// dozens of events) does not overflow before the loop reads it. Best effort: capped by
/// `net.core.rmem_max` without privilege.
const RECV_BUFFER: usize = 1 << 20;

/// What one receive gave.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Received {
    /// A message of this many bytes is at the start of the buffer.
    Message(usize),
    /// A message longer than the buffer (this many bytes) was dropped.
    Truncated(usize),
    /// A message from someone other than the kernel was dropped.
    Foreign,
    /// The socket's buffer overflowed: messages were lost.
    Overflow,
}

/// A socket delivering uevent messages.
pub(crate) struct UeventSocket {
    fd: AsyncFd<Arc<OwnedFd>>,
    /// Whether to accept only messages whose sender is the kernel (netlink port 0).
    kernel_only: bool,
}

impl UeventSocket {
    /// Opens the kernel uevent socket, non-blocking, bound to the kernel's group.
    pub(crate) fn open_kernel() -> io::Result<Self> {
        let fd = rustix::net::socket_with(
            AddressFamily::NETLINK,
            SocketType::DGRAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            Some(netlink::KOBJECT_UEVENT),
        )?;
        if let Err(err) = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, RECV_BUFFER) {
            tracing::debug!(error = %err, "uevent socket keeps its default receive buffer");
        }
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, KERNEL_GROUP))?;
        Ok(Self {
            fd: register_readable(Arc::new(fd))?,
            kernel_only: true,
        })
    }

    /// Any non-blocking datagram socket standing in for the kernel (tests).
    #[cfg(test)]
    pub(crate) fn from_fd(fd: OwnedFd) -> io::Result<Self> {
        Ok(Self {
            fd: register_readable(Arc::new(fd))?,
            kernel_only: false,
        })
    }

    /// Waits for the next message and receives it into `buf`.
    pub(crate) async fn recv(&self, buf: &mut [u8]) -> io::Result<Received> {
        let received = self
            .fd
            .async_io(Interest::READABLE, |fd| {
                rustix::net::recvfrom(fd, &mut *buf, RecvFlags::TRUNC).map_err(io::Error::from)
            })
            .await;
        let (len, full_len, sender) = match received {
            Ok(r) => r,
            Err(err) if Errno::from_io_error(&err) == Some(Errno::NOBUFS) => {
                return Ok(Received::Overflow);
            }
            Err(err) => return Err(err),
        };
        if self.kernel_only {
            let from_kernel = sender
                .and_then(|addr| SocketAddrNetlink::try_from(addr).ok())
                .is_some_and(|addr| addr.pid() == 0);
            if !from_kernel {
                return Ok(Received::Foreign);
            }
        }
        if full_len > len {
            return Ok(Received::Truncated(full_len));
        }
        Ok(Received::Message(len))
    }
}
