//! The kernel's count of UDP datagrams dropped on our sockets, so that loss at the socket is
//! never silent. Read from /proc/net/udp{,6} rather than from SO_RXQ_OVFL control messages:
//! nix 0.29's recvmmsg does not reset `msg_controllen` between calls, so those arrive only on
//! the first call, and /proc also sees drops that no later datagram would have reported.

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// The kernel's drop counters of some UDP sockets (the `drops` column of /proc/net/udp and
/// /proc/net/udp6, found by socket inode): datagrams dropped because the receive buffer was
/// full, since each socket was created.
#[derive(Debug, Clone)]
pub struct SocketDrops {
    inodes: Vec<u64>,
    last: u64,
}

impl SocketDrops {
    pub fn new(sockets: &[UdpSocket]) -> SocketDrops {
        let inodes = sockets
            .iter()
            .filter_map(|s| nix::sys::stat::fstat(s.as_raw_fd()).ok())
            .map(|st| st.st_ino)
            .collect();
        SocketDrops { inodes, last: 0 }
    }

    /// The drops of all the sockets so far; `None` if /proc cannot be read.
    pub fn total(&self) -> Option<u64> {
        let mut total = 0;
        let mut found = false;
        for file in ["/proc/net/udp", "/proc/net/udp6"] {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for line in text.lines().skip(1) {
                let f: Vec<&str> = line.split_whitespace().collect();
                let (Some(inode), Some(drops)) = (f.get(9), f.get(12)) else {
                    continue;
                };
                if inode.parse().is_ok_and(|i: u64| self.inodes.contains(&i)) {
                    total += drops.parse::<u64>().unwrap_or(0);
                    found = true;
                }
            }
        }
        found.then_some(total)
    }

    /// Drops since the last call.
    pub fn new_drops(&mut self) -> u64 {
        match self.total() {
            Some(t) => {
                let n = t.saturating_sub(self.last);
                self.last = self.last.max(t);
                n
            }
            None => 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{setsockopt, sockopt};

    #[test]
    fn counts_what_a_full_buffer_drops() {
        let rx = UdpSocket::bind("127.0.0.1:0").unwrap();
        // The smallest buffer the kernel allows: most of the burst must be dropped.
        setsockopt(&rx, sockopt::RcvBuf, &1).unwrap();
        let mut drops = SocketDrops::new(std::slice::from_ref(&rx));
        assert_eq!(drops.total(), Some(0));
        let tx = UdpSocket::bind("127.0.0.1:0").unwrap();
        const SENT: u64 = 500;
        for _ in 0..SENT {
            tx.send_to(&[7u8; 1000], rx.local_addr().unwrap()).unwrap();
        }
        rx.set_nonblocking(true).unwrap();
        let mut received = 0;
        let mut buf = [0u8; 2000];
        while rx.recv(&mut buf).is_ok() {
            received += 1;
        }
        let dropped = drops.new_drops();
        assert!(dropped > 0, "nothing dropped (received {received})");
        assert_eq!(received + dropped, SENT);
        assert_eq!(drops.new_drops(), 0);
    }
}
