//! UDP receiving: sockets sharing one port with SO_REUSEPORT (one per thread), a large receive
//! buffer, kernel drop counts, and a batched receive loop (recvmmsg, 64 datagrams per call)
//! that feeds one thread's [`Aggregate`].
//!
//! Kernel drops: the count SO_RXQ_OVFL would attach to each datagram is the socket's
//! `sk_drops`, which /proc/net/udp also shows per socket. nix 0.29's recvmmsg does not reset
//! `msg_controllen` between calls, so control messages only come with the first call; the
//! flusher therefore reads the same counter from /proc at every flush ([`SocketDrops`]),
//! which also sees drops that no later datagram would have reported.
//!
//! [`Aggregate`]: crate::aggregate::Aggregate

use std::net::{SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::{AsRawFd, OwnedFd};
use std::time::{Duration, Instant};

use anyhow::Context;
use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::stats::unix_now;
use nix::errno::Errno;
use nix::sys::socket::{
    bind, getsockopt, recvmmsg, setsockopt, socket, sockopt, AddressFamily, MsgFlags, MultiHeaders,
    SockFlag, SockType, SockaddrStorage,
};
use nix::sys::time::TimeVal;
use std::io::IoSliceMut;

use crate::aggregate::Ingest;
use crate::server::Exchange;

/// Datagrams per recvmmsg call.
pub const BATCH: usize = 64;
/// Room for the largest UDP payload. The buffers are allocated zeroed, so the kernel maps
/// their pages lazily: only the bytes datagrams actually fill cost memory.
pub const SLOT: usize = 65536;
/// How long a receive waits before the thread looks at its flags (flush, stop).
pub const POLL: Duration = Duration::from_millis(20);
/// After a batch that was not full, how long to let datagrams gather in the socket buffer
/// before receiving again. Waking up (a context switch, cold caches) costs more than
/// handling a datagram, so at moderate rates this divides the CPU per metric; the delay
/// is nothing next to a flush interval, and even at millions of datagrams a second a
/// millisecond of them fits in the receive buffer many times over.
pub const COALESCE: Duration = Duration::from_millis(1);
/// How long a stopping thread keeps draining its socket at most.
const DRAIN: Duration = Duration::from_secs(2);

/// What binding the UDP sockets gave.
#[derive(Debug)]
pub struct Bound {
    pub sockets: Vec<UdpSocket>,
    pub addr: SocketAddr,
    /// The receive buffer the kernel granted (as getsockopt reports it: twice the usable
    /// payload space).
    pub granted: usize,
    /// Whether SO_RCVBUFFORCE (root) was used.
    pub forced: bool,
}

impl Bound {
    /// The drop counter of these sockets.
    pub fn drops(&self) -> SocketDrops {
        SocketDrops::new(&self.sockets)
    }
}

pub use bucky_proto::udp::SocketDrops;

/// Binds `count` sockets on `addr` (SO_REUSEPORT when more than one), each with an `rcvbuf`
/// receive buffer, drop counting and a short receive timeout.
pub fn bind_sockets(addr: SocketAddr, count: usize, rcvbuf: usize) -> anyhow::Result<Bound> {
    let count = count.max(1);
    let mut sockets = Vec::with_capacity(count);
    let (mut granted, mut forced) = (0, false);
    let mut addr = addr;
    for i in 0..count {
        let (fd, g, f) =
            bind_one(addr, count > 1, rcvbuf).with_context(|| format!("binding UDP {addr}"))?;
        let sock = UdpSocket::from(fd);
        if i == 0 {
            // Port 0 asks the kernel for one; the other sockets then join that port.
            addr = sock.local_addr().context("local address")?;
        }
        granted = g;
        forced = f;
        sockets.push(sock);
    }
    if count > 1 {
        check_port_not_shared(addr, count)?;
    }
    Ok(Bound {
        sockets,
        addr,
        granted,
        forced,
    })
}

fn bind_one(
    addr: SocketAddr,
    reuseport: bool,
    rcvbuf: usize,
) -> nix::Result<(OwnedFd, usize, bool)> {
    let family = match addr {
        SocketAddr::V4(_) => AddressFamily::Inet,
        SocketAddr::V6(_) => AddressFamily::Inet6,
    };
    let fd = socket(family, SockType::Datagram, SockFlag::SOCK_CLOEXEC, None)?;
    if reuseport {
        setsockopt(&fd, sockopt::ReusePort, &true)?;
    }
    // As root, SO_RCVBUFFORCE goes past net.core.rmem_max; otherwise the kernel caps the ask.
    let forced = rcvbuf > 0 && setsockopt(&fd, sockopt::RcvBufForce, &rcvbuf).is_ok();
    if rcvbuf > 0 && !forced {
        setsockopt(&fd, sockopt::RcvBuf, &rcvbuf)?;
    }
    let granted = getsockopt(&fd, sockopt::RcvBuf)?;
    setsockopt(
        &fd,
        sockopt::ReceiveTimeout,
        &TimeVal::new(0, POLL.as_micros() as _),
    )?;
    bind(fd.as_raw_fd(), &SockaddrStorage::from(addr))?;
    Ok((fd, granted, forced))
}

/// With SO_REUSEPORT the kernel lets another process of the same user join our port and take
/// a share of the traffic without a word. Refuse to run if anyone did.
fn check_port_not_shared(addr: SocketAddr, ours: usize) -> anyhow::Result<()> {
    let (file, want) = match addr {
        SocketAddr::V4(a) => (
            "/proc/net/udp",
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            ),
        ),
        SocketAddr::V6(a) => {
            let o = a.ip().octets();
            let mut hex = String::new();
            for w in o.chunks(4) {
                hex.push_str(&format!(
                    "{:08X}",
                    u32::from_le_bytes([w[0], w[1], w[2], w[3]])
                ));
            }
            ("/proc/net/udp6", format!("{hex}:{:04X}", a.port()))
        }
    };
    let Ok(text) = std::fs::read_to_string(file) else {
        return Ok(());
    };
    let bound = sockets_bound(&text, &want);
    if bound > ours {
        anyhow::bail!(
            "UDP {addr} is also bound by another socket with SO_REUSEPORT (another bucky-statsd?): \
             it would silently take a share of the traffic"
        );
    }
    Ok(())
}

/// How many sockets `/proc/net/udp[6]` (`text`) lists on local address `want`.
fn sockets_bound(text: &str, want: &str) -> usize {
    bucky_proto::udp::proc_sockets(text)
        .iter()
        .filter(|s| s.local == want)
        .count()
}

/// The sender's address as a std address.
fn std_addr(a: &SockaddrStorage) -> Option<SocketAddr> {
    if let Some(v4) = a.as_sockaddr_in() {
        return Some(SocketAddr::V4(SocketAddrV4::new(v4.ip(), v4.port())));
    }
    a.as_sockaddr_in6().map(|v6| {
        SocketAddr::V6(SocketAddrV6::new(
            v6.ip(),
            v6.port(),
            v6.flowinfo(),
            v6.scope_id(),
        ))
    })
}

/// Called with each datagram as it arrives (capture to a file).
pub type Tap = dyn Fn(f64, Option<SocketAddr>, &[u8]) + Send + Sync;

/// One receiving thread: receives in batches until the stop flag, then drains what the
/// socket still holds and hands its last aggregate over.
pub fn worker(
    sock: UdpSocket,
    mut ingest: Ingest,
    mut exchange: Exchange,
    tap: Option<std::sync::Arc<Tap>>,
) {
    let fd = sock.as_raw_fd();
    let mut bufs = vec![0u8; BATCH * SLOT];
    let mut headers: MultiHeaders<SockaddrStorage> = MultiHeaders::preallocate(BATCH, None);
    let mut agg = exchange.fresh();
    let mut err_log = RateLimit::new(1, Duration::from_secs(10));
    let mut drain_until: Option<Instant> = None;
    loop {
        let stopping = exchange.stopping();
        if stopping {
            // Take what the socket holds, but not forever if senders keep sending.
            let until = *drain_until.get_or_insert_with(|| Instant::now() + DRAIN);
            if Instant::now() >= until {
                log::warn!("stopped draining the socket after {DRAIN:?}: senders keep sending");
                break;
            }
        }
        let flags = if stopping {
            MsgFlags::MSG_DONTWAIT
        } else {
            MsgFlags::MSG_WAITFORONE
        };
        let mut chunks = bufs.chunks_exact_mut(SLOT);
        let mut iovs: [[IoSliceMut<'_>; 1]; BATCH] =
            std::array::from_fn(|_| [IoSliceMut::new(chunks.next().unwrap_or_default())]);
        match recvmmsg(fd, &mut headers, iovs.iter_mut(), flags, None) {
            Ok(msgs) => {
                let now = unix_now();
                exchange.maybe_hand_over(now, &mut agg, &mut ingest);
                let mut n = 0;
                for msg in msgs {
                    n += 1;
                    let source = msg.address.as_ref().and_then(std_addr);
                    let data = msg.iovs().next().unwrap_or_default();
                    let data = &data[..msg.bytes.min(data.len())];
                    if let Some(tap) = &tap {
                        tap(now, source, data);
                    }
                    ingest.datagram(&mut agg, now, source, data);
                }
                if n < BATCH && !stopping {
                    // Traffic is not keeping the batches full: let some gather before the
                    // next receive instead of waking up for every datagram or two.
                    std::thread::sleep(COALESCE);
                }
            }
            Err(Errno::EAGAIN | Errno::EINTR) => {
                if stopping {
                    break;
                }
                exchange.maybe_hand_over(unix_now(), &mut agg, &mut ingest);
            }
            Err(e) => {
                if let Some(n) = err_log.allow() {
                    log::error!("receiving: {e}{}", suppressed_note(n));
                }
                if stopping {
                    break;
                }
                std::thread::sleep(POLL);
                exchange.maybe_hand_over(unix_now(), &mut agg, &mut ingest);
            }
        }
    }
    exchange.finish(agg);
    drop(sock);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_on_a_port_are_counted_once_each() {
        let head = "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n";
        let line = |sl: u32, local: &str, inode: u32| {
            format!(
                "  {sl}: {local} 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2 0000000000000000 0\n"
            )
        };
        let ours = "0100007F:57B1";
        let text = [
            head.to_string(),
            line(1, ours, 1001),
            line(2, ours, 1002),
            line(3, "0100007F:57B2", 1003),
            // The same socket twice: the file changed between two reads.
            line(2, ours, 1002),
        ]
        .concat();
        assert_eq!(sockets_bound(&text, ours), 2);
        let shared = text + &line(4, ours, 1004);
        assert_eq!(sockets_bound(&shared, ours), 3);
        assert_eq!(sockets_bound(head, ours), 0);
    }
}
