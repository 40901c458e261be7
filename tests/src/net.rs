//! Free loopback ports and bounded polling.

use std::collections::hash_map::RandomState;
use std::collections::BTreeSet;
use std::hash::{BuildHasher, Hasher};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Ports handed out by this process: never hand one out twice, even after it was released,
/// so that parallel tests of one test binary never share a port.
static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// Lowest port this harness hands out when the kernel's ephemeral range leaves room below it.
const LOW_PORT: u16 = 15000;

/// A free TCP port on 127.0.0.1.
///
/// The port is bound on 127.0.0.1 to check that it is free, then released for the peer to
/// bind. It is chosen *below* the kernel's ephemeral range (`ip_local_port_range`) when
/// there is room, so that no outgoing connection (ours, a reconnecting bucky's) gets it as
/// its source port: a client that retries a connection to a closed ephemeral port on
/// loopback can otherwise connect to itself (TCP simultaneous open), and a port released by
/// `bind(0)` can be handed to another socket before the peer binds it.
pub fn free_port() -> u16 {
    pick_port(|port| {
        TcpListener::bind((Ipv4Addr::LOCALHOST, port)).map(|l| local_port(l.local_addr()))
    })
}

/// A free UDP port on 127.0.0.1, chosen like [`free_port`].
pub fn free_udp_port() -> u16 {
    pick_port(|port| {
        UdpSocket::bind((Ipv4Addr::LOCALHOST, port)).map(|s| local_port(s.local_addr()))
    })
}

fn local_port(addr: std::io::Result<SocketAddr>) -> u16 {
    addr.map(|a| a.port()).unwrap_or(0)
}

fn pick_port(bind: impl Fn(u16) -> std::io::Result<u16>) -> u16 {
    let mut handed_out = HANDED_OUT.lock().unwrap_or_else(|e| e.into_inner());
    let ephemeral_low = ephemeral_range().map_or(32768, |(low, _)| low);
    let mut hasher = RandomState::new().build_hasher();
    hasher.write_u32(std::process::id());
    for attempt in 0..2000u32 {
        let port = if ephemeral_low > LOW_PORT + 1000 {
            hasher.write_u32(attempt);
            LOW_PORT + (hasher.finish() % u64::from(ephemeral_low - LOW_PORT)) as u16
        } else {
            0
        };
        if port != 0 && handed_out.contains(&port) {
            continue;
        }
        if let Ok(got) = bind(port) {
            if got != 0 && handed_out.insert(got) {
                return got;
            }
        }
    }
    panic!("no free port found on 127.0.0.1");
}

/// The kernel's ephemeral port range, if it can be read.
fn ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = text.split_whitespace().map(|w| w.parse::<u16>().ok());
    Some((it.next()??, it.next()??))
}

/// Whether something accepts a TCP connection on 127.0.0.1:`port` (the connection is closed
/// at once, without sending anything).
pub fn port_accepts(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok()
}

/// Polls `done` with a short backoff (5 ms doubling up to 200 ms) until it returns true or
/// `timeout` passes; returns whether it became true. `done` is always called at least once,
/// and once more at the deadline.
pub fn poll_until(timeout: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        if done() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(200));
    }
}

/// Like [`poll_until`], but panics with `what` when the time is up.
#[track_caller]
pub fn wait_until(timeout: Duration, what: &str, done: impl FnMut() -> bool) {
    if !poll_until(timeout, done) {
        panic!("timed out after {timeout:?} waiting for {what}");
    }
}

/// Bytes in flight on established IPv4 TCP connections to local port `port`: what senders
/// have written but the listener side has not read yet (the receivers' unread queues plus
/// the senders' unsent queues, from `/proc/net/tcp`). Linux only; 0 if unavailable.
pub fn tcp_in_flight(port: u16) -> u64 {
    let Ok(text) = std::fs::read_to_string("/proc/net/tcp") else {
        return 0;
    };
    let port_of = |addr: &str| {
        addr.rsplit(':')
            .next()
            .and_then(|p| u16::from_str_radix(p, 16).ok())
    };
    let mut total = 0u64;
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 5 || f[3] != "01" {
            continue; // not ESTABLISHED
        }
        let Some((tx, rx)) = f[4].split_once(':') else {
            continue;
        };
        let (tx, rx) = (
            u64::from_str_radix(tx, 16).unwrap_or(0),
            u64::from_str_radix(rx, 16).unwrap_or(0),
        );
        if port_of(f[1]) == Some(port) {
            total += rx; // the listener's side: received, not read
        } else if port_of(f[2]) == Some(port) {
            total += tx; // the sender's side: written, not yet acknowledged
        }
    }
    total
}
