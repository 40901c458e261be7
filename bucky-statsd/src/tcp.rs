//! StatsD over TCP: newline-framed lines on a port of its own, served by one thread that
//! polls the listener and every connection. Connections and line length are bounded: over
//! the connection limit a new connection is closed at once (counted); a line longer than
//! the limit is skipped up to its newline (counted).

use std::io::{self, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use bucky_proto::log::{suppressed_note, RateLimit};
use bucky_proto::stats::{unix_now, Counter};
use memchr::memrchr;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::aggregate::{Aggregate, Ingest};
use crate::server::Exchange;
use crate::udp::POLL;

/// Bytes read from one connection before the others get their turn.
const FAIR_SHARE: usize = 1 << 20;
/// One read.
const READ_CHUNK: usize = 64 * 1024;

/// What the TCP thread counts (per connection events, off the hot path).
#[derive(Debug, Default)]
pub struct TcpCounters {
    /// Connections accepted.
    pub connections: Counter,
    /// Connections closed at once because `max_connections` were open.
    pub refused: Counter,
    /// Lines skipped for being longer than the limit.
    pub lines_too_long: Counter,
    /// Connections open now.
    pub open: Counter,
}

/// TCP limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TcpOptions {
    pub max_connections: usize,
    pub max_line: usize,
}

struct Conn {
    stream: TcpStream,
    peer: Option<SocketAddr>,
    /// A partial line carried over to the next read.
    pending: Vec<u8>,
    /// Inside an overlong line: discard up to the next newline.
    skipping: bool,
    closed: bool,
}

struct Ctx<'a> {
    ingest: &'a mut Ingest,
    opts: TcpOptions,
    counters: &'a TcpCounters,
    long_log: &'a mut RateLimit,
}

impl Conn {
    /// Reads what is available (up to a fair share) and feeds complete lines. At EOF (or when
    /// `flush_partial`) an unterminated last line is fed too.
    fn read(
        &mut self,
        agg: &mut Aggregate,
        ctx: &mut Ctx<'_>,
        buf: &mut [u8],
        flush_partial: bool,
    ) {
        let mut total = 0;
        while total < FAIR_SHARE {
            match self.stream.read(buf) {
                Ok(0) => {
                    self.closed = true;
                    break;
                }
                Ok(n) => {
                    total += n;
                    self.take(&buf[..n], agg, ctx);
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => {
                    log::debug!("TCP connection {:?}: {e}", self.peer);
                    self.closed = true;
                    break;
                }
            }
        }
        if (self.closed || flush_partial) && !self.pending.is_empty() && !self.skipping {
            let line = std::mem::take(&mut self.pending);
            ctx.ingest.lines(agg, unix_now(), self.peer, &line);
        }
    }

    fn take(&mut self, mut data: &[u8], agg: &mut Aggregate, ctx: &mut Ctx<'_>) {
        if self.skipping {
            match memchr::memchr(b'\n', data) {
                Some(i) => {
                    self.skipping = false;
                    data = &data[i + 1..];
                }
                None => return,
            }
        }
        let Some(last_nl) = memrchr(b'\n', data) else {
            self.keep(data, ctx);
            return;
        };
        let now = unix_now();
        if self.pending.is_empty() {
            ctx.ingest.lines(agg, now, self.peer, &data[..last_nl + 1]);
        } else {
            // Complete the carried-over line first.
            let first_nl = memchr::memchr(b'\n', data).unwrap_or(last_nl);
            let head = &data[..first_nl + 1];
            if self.pending.len() + head.len() > ctx.opts.max_line + 1 {
                self.too_long(ctx);
            } else {
                self.pending.extend_from_slice(head);
                let line = std::mem::take(&mut self.pending);
                ctx.ingest.lines(agg, now, self.peer, &line);
                self.pending = line;
            }
            self.pending.clear();
            if first_nl < last_nl {
                ctx.ingest
                    .lines(agg, now, self.peer, &data[first_nl + 1..last_nl + 1]);
            }
        }
        self.keep(&data[last_nl + 1..], ctx);
    }

    /// Keeps an unterminated tail for the next read, unless it is already too long.
    fn keep(&mut self, tail: &[u8], ctx: &mut Ctx<'_>) {
        if self.pending.len() + tail.len() > ctx.opts.max_line {
            self.pending.clear();
            self.skipping = true;
            self.too_long(ctx);
        } else {
            self.pending.extend_from_slice(tail);
        }
    }

    fn too_long(&mut self, ctx: &mut Ctx<'_>) {
        ctx.counters.lines_too_long.inc();
        if let Some(n) = ctx.long_log.allow() {
            log::warn!(
                "TCP {}: a line longer than {} bytes was skipped{}",
                self.peer.map(|p| p.to_string()).unwrap_or_default(),
                ctx.opts.max_line,
                suppressed_note(n)
            );
        }
    }
}

/// The TCP thread: accepts and reads until the stop flag, then takes what is still buffered
/// (pending connections included) and hands its last aggregate over.
pub fn worker(
    listener: TcpListener,
    opts: TcpOptions,
    mut ingest: Ingest,
    mut exchange: Exchange,
    counters: Arc<TcpCounters>,
) {
    if let Err(e) = listener.set_nonblocking(true) {
        log::error!("TCP listener: {e}");
    }
    let mut conns: Vec<Conn> = Vec::new();
    let mut agg = exchange.fresh();
    let mut buf = vec![0u8; READ_CHUNK];
    let mut refuse_log = RateLimit::new(1, Duration::from_secs(10));
    let mut long_log = RateLimit::new(1, Duration::from_secs(10));
    let mut ready: Vec<bool> = Vec::new();
    loop {
        let stopping = exchange.stopping();
        let listener_ready;
        {
            let mut fds = Vec::with_capacity(conns.len() + 1);
            fds.push(PollFd::new(listener.as_fd(), PollFlags::POLLIN));
            for c in &conns {
                fds.push(PollFd::new(c.stream.as_fd(), PollFlags::POLLIN));
            }
            let timeout = if stopping {
                PollTimeout::ZERO
            } else {
                PollTimeout::from(POLL.as_millis() as u16)
            };
            let _ = poll(&mut fds, timeout);
            listener_ready = is_ready(&fds[0]);
            ready.clear();
            ready.extend(fds[1..].iter().map(is_ready));
        }
        exchange.maybe_hand_over(unix_now(), &mut agg, &mut ingest);
        if listener_ready || stopping {
            accept_all(
                &listener,
                &mut conns,
                &mut ready,
                opts,
                &counters,
                &mut refuse_log,
            );
        }
        let mut ctx = Ctx {
            ingest: &mut ingest,
            opts,
            counters: &counters,
            long_log: &mut long_log,
        };
        for (c, r) in conns.iter_mut().zip(ready.iter()) {
            if *r || stopping {
                c.read(&mut agg, &mut ctx, &mut buf, stopping);
            }
        }
        let before = conns.len();
        conns.retain(|c| !c.closed);
        if conns.len() != before {
            counters.open.set(conns.len() as u64);
        }
        if stopping {
            break;
        }
    }
    exchange.finish(agg);
}

fn is_ready(f: &PollFd<'_>) -> bool {
    f.revents().is_some_and(|r| !r.is_empty())
}

fn accept_all(
    listener: &TcpListener,
    conns: &mut Vec<Conn>,
    ready: &mut Vec<bool>,
    opts: TcpOptions,
    counters: &TcpCounters,
    refuse_log: &mut RateLimit,
) {
    loop {
        match listener.accept() {
            Ok((stream, peer)) => {
                if conns.len() >= opts.max_connections {
                    counters.refused.inc();
                    if let Some(n) = refuse_log.allow() {
                        log::warn!(
                            "TCP: refused a connection from {peer}: {} connections are open \
                             (--tcp-max-connections){}",
                            conns.len(),
                            suppressed_note(n)
                        );
                    }
                    continue;
                }
                if let Err(e) = stream.set_nonblocking(true) {
                    log::warn!("TCP connection from {peer}: {e}");
                    continue;
                }
                counters.connections.inc();
                conns.push(Conn {
                    stream,
                    peer: Some(peer),
                    pending: Vec::new(),
                    skipping: false,
                    closed: false,
                });
                // A new connection may already hold data: read it this round.
                ready.push(true);
                counters.open.set(conns.len() as u64);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => {
                // EMFILE and friends: try again next round.
                log::warn!("TCP accept: {e}");
                break;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Limits;

    fn feed(chunks: &[&[u8]], max_line: usize) -> (Aggregate, u64) {
        let limits = Arc::new(Limits::new(100, 1000));
        let mut ingest = Ingest::new(limits, true);
        let counters = TcpCounters::default();
        let mut long_log = RateLimit::default();
        let mut ctx = Ctx {
            ingest: &mut ingest,
            opts: TcpOptions {
                max_connections: 1,
                max_line,
            },
            counters: &counters,
            long_log: &mut long_log,
        };
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let mut conn = Conn {
            stream,
            peer: None,
            pending: Vec::new(),
            skipping: false,
            closed: false,
        };
        let mut agg = Aggregate::new();
        for c in chunks {
            conn.take(c, &mut agg, &mut ctx);
        }
        if !conn.pending.is_empty() && !conn.skipping {
            let line = std::mem::take(&mut conn.pending);
            ctx.ingest.lines(&mut agg, 0.0, None, &line);
        }
        (agg, counters.lines_too_long.get())
    }

    #[test]
    fn lines_across_reads() {
        let (agg, long) = feed(&[b"a:1|c\nb:", b"2|c\nc:3", b"|c\n", b"d:4|c"], 100);
        assert_eq!(agg.counters[&b"a"[..]], 1.0);
        assert_eq!(agg.counters[&b"b"[..]], 2.0);
        assert_eq!(agg.counters[&b"c"[..]], 3.0);
        assert_eq!(agg.counters[&b"d"[..]], 4.0);
        assert_eq!(long, 0);
    }

    #[test]
    fn overlong_lines_are_skipped() {
        let long_line = vec![b'x'; 300];
        let (agg, long) = feed(&[b"a:1|c\n", &long_line, &long_line, b":1|c\nb:1|c\n"], 100);
        assert_eq!(agg.counters.len(), 2, "{:?}", agg.counters);
        assert_eq!(long, 1);
        let (agg, long) = feed(&[b"ab", &long_line, b"\nc:1|c\n"], 100);
        assert_eq!(agg.counters.len(), 1);
        assert_eq!(long, 1);
    }
}
