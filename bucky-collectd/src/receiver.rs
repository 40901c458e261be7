//! The UDP socket: batched receive with `recvmmsg`, a large receive buffer, and the
//! kernel's count of datagrams dropped for lack of buffer space (`SO_RXQ_OVFL`).

use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::AsRawFd;
use std::time::Duration;

use nix::sys::socket::{
    recvmmsg, setsockopt, sockopt, ControlMessageOwned, MsgFlags, MultiHeaders, SockaddrStorage,
};

/// Datagrams taken per `recvmmsg` call.
pub const BATCH: usize = 32;
/// Room for one datagram: the largest UDP payload, plus one byte to notice a longer one.
const SLOT: usize = 65536;

/// A bound UDP socket and its receive buffers.
pub struct Receiver {
    socket: UdpSocket,
    slots: Vec<Vec<u8>>,
    headers: MultiHeaders<SockaddrStorage>,
    kernel_drops: u32,
    drops: bucky_proto::udp::SocketDrops,
    granted_buffer: usize,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("socket", &self.socket)
            .field("granted_buffer", &self.granted_buffer)
            .finish()
    }
}

/// One received datagram, as [`Receiver::recv_batch`] hands it out.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    pub bytes: &'a [u8],
    pub source: SocketAddr,
    /// The datagram was longer than the buffer (it cannot be: UDP payloads fit in 65535).
    pub truncated: bool,
}

impl Receiver {
    /// Binds `addr`, asks for a receive buffer of `recv_buffer` bytes (past the system's
    /// limit when running as root), turns on drop counting, and sets a receive timeout of
    /// `wake` so that the caller regains control regularly.
    pub fn bind(addr: SocketAddr, recv_buffer: usize, wake: Duration) -> io::Result<Receiver> {
        let socket = UdpSocket::bind(addr)?;
        if recv_buffer > 0 {
            // RcvBufForce passes net.core.rmem_max but needs CAP_NET_ADMIN; fall back.
            if setsockopt(&socket, sockopt::RcvBufForce, &recv_buffer).is_err() {
                let _ = setsockopt(&socket, sockopt::RcvBuf, &recv_buffer);
            }
        }
        let _ = setsockopt(&socket, sockopt::RxqOvfl, &1);
        socket.set_read_timeout(Some(wake.max(Duration::from_millis(1))))?;
        let granted_buffer =
            nix::sys::socket::getsockopt(&socket, sockopt::RcvBuf).unwrap_or_default();
        let drops = bucky_proto::udp::SocketDrops::new(std::slice::from_ref(&socket));
        Ok(Receiver {
            drops,
            socket,
            slots: vec![vec![0u8; SLOT]; BATCH],
            headers: MultiHeaders::preallocate(BATCH, Some(nix::cmsg_space!(u32))),
            kernel_drops: 0,
            granted_buffer,
        })
    }

    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.socket.local_addr()
    }

    /// The receive buffer the kernel granted (it reports twice what it uses for data).
    pub fn granted_buffer(&self) -> usize {
        self.granted_buffer
    }

    /// Makes [`recv_batch`](Self::recv_batch) return at once when nothing is queued: for
    /// taking in, at shutdown, what already arrived.
    pub fn set_nonblocking(&self) -> io::Result<()> {
        self.socket.set_nonblocking(true)
    }

    /// Datagrams the kernel dropped on this socket so far: the socket's counter in /proc
    /// (SO_RXQ_OVFL messages reach us only on the first recvmmsg call with nix 0.29).
    pub fn kernel_drops(&self) -> u64 {
        let seen = u64::from(self.kernel_drops);
        self.drops.total().map_or(seen, |t| t.max(seen))
    }

    /// Waits (at most the wake period) for datagrams and hands each to `f`. Returns how
    /// many were received; 0 when the wait timed out.
    pub fn recv_batch(&mut self, mut f: impl FnMut(Received<'_>)) -> io::Result<usize> {
        let mut lens = [(0usize, None::<SocketAddr>, false); BATCH];
        let count = {
            let mut iovs: Vec<[io::IoSliceMut<'_>; 1]> = self
                .slots
                .iter_mut()
                .map(|s| [io::IoSliceMut::new(&mut s[..])])
                .collect();
            let results = match recvmmsg(
                self.socket.as_raw_fd(),
                &mut self.headers,
                iovs.iter_mut(),
                MsgFlags::MSG_WAITFORONE,
                None,
            ) {
                Ok(r) => r,
                Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => return Ok(0),
                Err(e) => return Err(io::Error::from(e)),
            };
            let mut n = 0;
            for msg in results {
                if let Ok(cmsgs) = msg.cmsgs() {
                    for c in cmsgs {
                        if let ControlMessageOwned::RxqOvfl(d) = c {
                            self.kernel_drops = self.kernel_drops.max(d);
                        }
                    }
                }
                let source = msg.address.as_ref().and_then(to_socket_addr);
                let truncated = msg.flags.contains(MsgFlags::MSG_TRUNC);
                if n < BATCH {
                    lens[n] = (msg.bytes, source, truncated);
                    n += 1;
                }
            }
            n
        };
        for (slot, (len, source, truncated)) in self.slots.iter().zip(&lens[..count]) {
            f(Received {
                bytes: &slot[..(*len).min(slot.len())],
                source: source.unwrap_or(bucky_proto::capture::UNKNOWN_SOURCE),
                truncated: *truncated,
            });
        }
        Ok(count)
    }
}

fn to_socket_addr(s: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = s.as_sockaddr_in() {
        return Some(SocketAddr::V4((*v4).into()));
    }
    if let Some(v6) = s.as_sockaddr_in6() {
        return Some(SocketAddr::V6((*v6).into()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn receives_batches_with_sources() {
        let mut r = Receiver::bind(
            "127.0.0.1:0".parse().unwrap(),
            1 << 20,
            Duration::from_millis(50),
        )
        .unwrap();
        let addr = r.local_addr().unwrap();
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        for i in 0..50u8 {
            tx.send_to(&[i; 100], addr).unwrap();
        }
        tx.send_to(&[], addr).unwrap();
        let mut got = Vec::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while got.len() < 51 && std::time::Instant::now() < deadline {
            r.recv_batch(|d| {
                assert_eq!(d.source, tx.local_addr().unwrap());
                assert!(!d.truncated);
                got.push(d.bytes.to_vec());
            })
            .unwrap();
        }
        assert_eq!(got.len(), 51);
        assert_eq!(got[7], vec![7u8; 100]);
        assert!(got[50].is_empty());
        // Nothing more: the wait times out.
        assert_eq!(r.recv_batch(|_| panic!("no datagram expected")).unwrap(), 0);
        assert!(r.granted_buffer() > 0);
        assert_eq!(r.kernel_drops(), 0);
    }
}
