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
        let mut total = None;
        for file in ["/proc/net/udp", "/proc/net/udp6"] {
            let Ok(text) = std::fs::read_to_string(file) else {
                continue;
            };
            for (_, drops) in socket_drops(&text, &self.inodes) {
                *total.get_or_insert(0) += drops;
            }
        }
        total
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

/// `(inode, drops)` of each socket of a `/proc/net/udp[6]` text whose inode is in `inodes`.
fn socket_drops<'a>(text: &'a str, inodes: &'a [u64]) -> impl Iterator<Item = (u64, u64)> + 'a {
    proc_sockets(text)
        .into_iter()
        .filter(|s| inodes.contains(&s.inode))
        .map(|s| (s.inode, s.drops))
}

/// What bucky reads of one socket in /proc/net/udp or /proc/net/udp6.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSocket<'a> {
    /// `local_address` as the kernel writes it (`0100007F:1F90`).
    pub local: &'a str,
    pub inode: u64,
    pub drops: u64,
}

/// The sockets a /proc/net/udp[6] text lists, each once. The kernel writes these files in
/// pieces, one per read, and a socket opened or closed elsewhere between two of them can make
/// a line come out twice: a repeated inode is skipped.
pub fn proc_sockets(text: &str) -> Vec<ProcSocket<'_>> {
    let mut seen = std::collections::HashSet::new();
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            Some(ProcSocket {
                local: f.get(1)?,
                inode: f.get(9)?.parse().ok()?,
                drops: f.get(12)?.parse().ok()?,
            })
        })
        .filter(|s| seen.insert(s.inode))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::socket::{setsockopt, sockopt};

    #[test]
    fn drops_are_read_once_per_socket() {
        let line = |inode: u64, drops: u64| {
            format!(
                "  1: 0100007F:57B1 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 {inode} 2 0000000000000000 {drops}\n"
            )
        };
        let text = [
            "   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n".to_string(),
            line(11, 5),
            line(12, 7),
            line(13, 100),
            // The same socket twice: the file changed between two reads.
            line(11, 5),
        ]
        .concat();
        let found: std::collections::HashMap<u64, u64> = socket_drops(&text, &[11, 12]).collect();
        assert_eq!(found.values().sum::<u64>(), 12);
    }

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
