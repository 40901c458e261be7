//! The carbon connection: connect without blocking start-up, reconnect with backoff, and send
//! every batch at least once.
//!
//! Plaintext and pickle carry no acknowledgements, and data written just before carbon went
//! away sits in socket buffers and is lost with the connection. So the writer keeps the most
//! recent batches (the resend window) and sends them again on the next connection. Carbon
//! stores one value per series and timestamp, so a repeated point changes nothing.
//!
//! With a spool ([`Writer::with_spool`]) a destination that is down costs no memory: what
//! cannot be sent goes to disk (the resend window and the batch in flight before everything
//! else, as they are older), and once the destination is back the spool is replayed in order,
//! at a paced rate, before the newer data held in memory.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown as SockShutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bucky_proto::io::LineWriter;
use bucky_proto::log::{suppressed_note, RateLimit};
use nix::sys::socket::{recv, MsgFlags};

use crate::encode::Batch;
use crate::queue::{Pop, Queue};
use crate::spool::{self, Spool};
use crate::{Control, DestCounters};

/// The original's reconnect settings (graphite_max_reconnects and friends).
#[derive(Debug, Clone, PartialEq)]
pub struct Backoff {
    /// Attempts before the queued data is dropped and a new round starts; <= 0 means forever.
    pub max_reconnects: i64,
    /// First delay between attempts, in seconds.
    pub delay: f64,
    /// Each delay is the previous one times this (when > 0).
    pub factor: f64,
    /// Delays never exceed this (when > 0), in seconds.
    pub max: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            max_reconnects: 0,
            delay: 5.0,
            factor: 1.5,
            max: 60.0,
        }
    }
}

impl Backoff {
    /// The delay after the `attempt`-th failure (1-based), as the original computes it.
    pub fn delay_after(&self, attempt: u32) -> Duration {
        let mut d = self.delay.max(0.0);
        for _ in 1..attempt {
            if self.factor > 0.0 {
                d *= self.factor;
            }
            if self.max > 0.0 {
                d = d.min(self.max);
            }
            if !d.is_finite() {
                d = self.max.max(0.0);
                break;
            }
        }
        if self.max > 0.0 {
            d = d.min(self.max);
        }
        Duration::try_from_secs_f64(d).unwrap_or(Duration::from_secs(3600))
    }
}

/// Where batches go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// `--debug`: carbon lines to stdout.
    Stdout,
    Tcp {
        host: String,
        port: u16,
    },
}

/// Why the writer stopped early.
#[derive(Debug)]
pub enum Stop {
    /// Our stdout reader went away (debug mode): exit quietly.
    BrokenPipe,
}

/// Bounded time for one connection attempt and for one write to a stalled carbon.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);

enum SendError {
    /// The attempts ran out (graphite_max_reconnects); the data is dropped.
    GaveUp,
    /// The shutdown deadline passed.
    Deadline,
    Stop(Stop),
}

/// How often a spool's new data is fsync'ed.
const SYNC_INTERVAL: Duration = Duration::from_secs(1);

/// The spool side of a writer.
struct Spooling<'a> {
    spool: &'a Mutex<Spool>,
    /// Replay pace in samples per second; 0 or less: as fast as carbon reads.
    rate: f64,
    /// When the next replayed record may go.
    pace_at: Instant,
    next_sync: Instant,
    log: RateLimit,
}

pub struct Writer<'a> {
    target: Target,
    backoff: Backoff,
    queue: &'a Queue,
    counters: &'a DestCounters,
    control: &'a Control,
    conn: Option<TcpStream>,
    /// Set once a connection has been made, so later ones count as reconnects.
    connected_before: bool,
    stdout: LineWriter<io::Stdout>,
    window: VecDeque<Batch>,
    window_bytes: usize,
    window_cap: usize,
    connect_log: RateLimit,
    spooling: Option<Spooling<'a>>,
}

impl<'a> Writer<'a> {
    pub fn new(
        target: Target,
        backoff: Backoff,
        resend_window: usize,
        queue: &'a Queue,
        counters: &'a DestCounters,
        control: &'a Control,
    ) -> Self {
        Writer {
            target,
            backoff,
            queue,
            counters,
            control,
            conn: None,
            connected_before: false,
            stdout: LineWriter::new(io::stdout()),
            window: VecDeque::new(),
            window_bytes: 0,
            window_cap: resend_window,
            connect_log: RateLimit::new(3, Duration::from_secs(60)),
            spooling: None,
        }
    }

    /// Spools what cannot be sent (TCP targets only) and replays it at `replay_rate`
    /// samples per second (0: unpaced).
    pub fn with_spool(mut self, spool: &'a Mutex<Spool>, replay_rate: f64) -> Self {
        if let Target::Tcp { .. } = self.target {
            let now = Instant::now();
            self.spooling = Some(Spooling {
                spool,
                rate: replay_rate,
                pace_at: now,
                next_sync: now + SYNC_INTERVAL,
                log: RateLimit::new(3, Duration::from_secs(60)),
            });
        }
        self
    }

    /// Sends until the queue is closed and drained, or the shutdown deadline passes.
    pub fn run(&mut self) -> Result<(), Stop> {
        if self.spooling.is_some() {
            return self.run_spooled();
        }
        loop {
            if self.control.deadline_passed() {
                self.drop_remaining(None, "the shutdown timeout passed");
                return Ok(());
            }
            let batch = match self.queue.pop(Duration::from_millis(200)) {
                Pop::Batch(b) => b,
                Pop::Empty => continue,
                Pop::Done => break,
            };
            match self.send(&batch) {
                Ok(()) => {
                    self.counters.sent.add(batch.samples as u64);
                    self.remember(batch);
                }
                Err(SendError::GaveUp) => {
                    let n = self.queue.clear() + batch.samples;
                    self.forget_window();
                    self.counters.dropped.add(n as u64);
                    log::error!(
                        "giving up on {} after {} attempts: dropped {n} samples (the next samples try again)",
                        self.describe(),
                        self.backoff.max_reconnects
                    );
                }
                Err(SendError::Deadline) => {
                    self.drop_remaining(Some(batch), "the shutdown timeout passed");
                    return Ok(());
                }
                Err(SendError::Stop(s)) => return Err(s),
            }
        }
        self.finish()
    }

    /// [`Writer::run`] with a spool: one connection attempt at a time; while the destination
    /// is down, everything that arrives goes to the spool; once it is up, the spool is
    /// replayed (paced) before the memory queue.
    fn run_spooled(&mut self) -> Result<(), Stop> {
        let Target::Tcp { host, port } = self.target.clone() else {
            return Ok(());
        };
        let mut attempt: u32 = 0;
        let mut retry_at = Instant::now();
        let mut last_attempt = false;
        loop {
            self.maybe_sync(false);
            if self.control.deadline_passed() {
                self.spool_queue();
                break;
            }
            // After a signal only what is held in memory is sent; the spool waits for the
            // next start.
            let stopping = self.control.deadline().is_some();
            if self.conn.is_none() {
                let now = Instant::now();
                if now >= retry_at {
                    attempt = attempt.saturating_add(1);
                    match connect_once(&host, port) {
                        Ok(conn) => {
                            self.connected(conn, attempt);
                            attempt = 0;
                            if self.resend_window().is_err() {
                                self.disconnect(None, "resending the window failed");
                            }
                        }
                        Err(e) => {
                            self.counters.connect_failures.inc();
                            if let Some(n) = self.connect_log.allow() {
                                log::error!(
                                    "failed to connect to {host}:{port}: {e} (attempt {attempt}; \
                                     spooling meanwhile){}",
                                    suppressed_note(n)
                                );
                            }
                            if self.backoff.max_reconnects > 0
                                && i64::from(attempt) >= self.backoff.max_reconnects
                            {
                                // Nothing to drop: it is all in the spool. A new round starts.
                                attempt = 0;
                            }
                            retry_at = now + self.backoff.delay_after(attempt.max(1));
                        }
                    }
                }
                if self.conn.is_none() {
                    self.spool_queue();
                    if self.queue.is_closed() && self.queue.is_empty() {
                        // One last attempt right away (the destination may be back already),
                        // then leave the rest to the next start.
                        if !last_attempt {
                            last_attempt = true;
                            retry_at = Instant::now();
                            continue;
                        }
                        let waiting = self.lock_spool().map_or(0, |s| s.samples());
                        log::warn!(
                            "input ended while {} is down: {waiting} samples wait in the spool \
                             for the next start",
                            self.describe()
                        );
                        break;
                    }
                    let wait = retry_at
                        .saturating_duration_since(Instant::now())
                        .min(Duration::from_millis(200));
                    // Only to wake up when data comes: it goes back and moves to the spool
                    // with the rest, in order, under the spool's lock.
                    if let Pop::Batch(b) = self.queue.pop(wait) {
                        self.queue.push_front(b);
                    }
                    continue;
                }
            }
            if !stopping {
                let record = self.lock_spool().and_then(|mut s| s.peek());
                if let Some(rec) = record {
                    if !self.pace(rec.batch.samples) {
                        continue;
                    }
                    match self.write_conn(&rec.batch.bytes) {
                        Ok(()) => {
                            if let Some(mut s) = self.lock_spool() {
                                s.consume();
                            }
                            let n = rec.batch.samples as u64;
                            if rec.resend {
                                self.counters.resent.add(n);
                            } else {
                                self.counters.sent.add(n);
                                self.counters.replayed.add(n);
                            }
                            self.remember(rec.batch);
                        }
                        Err(e) => {
                            self.disconnect(None, &e.to_string());
                            retry_at = Instant::now();
                        }
                    }
                    continue;
                }
            }
            match self.queue.pop(Duration::from_millis(200)) {
                Pop::Batch(b) => match self.write_conn(&b.bytes) {
                    Ok(()) => {
                        self.counters.sent.add(b.samples as u64);
                        self.remember(b);
                    }
                    Err(e) => {
                        let why = e.to_string();
                        self.disconnect(Some(b), &why);
                        retry_at = Instant::now();
                    }
                },
                Pop::Empty => {}
                Pop::Done => {
                    // The reader may have spilled to the spool just before it closed the queue.
                    if stopping || self.lock_spool().map_or(true, |s| s.is_empty()) {
                        break;
                    }
                }
            }
        }
        self.maybe_sync(true);
        self.finish()
    }

    fn lock_spool(&self) -> Option<MutexGuard<'a, Spool>> {
        self.spooling
            .as_ref()
            .map(|s| s.spool.lock().unwrap_or_else(|p| p.into_inner()))
    }

    fn spool_failed(&mut self, samples: usize, e: &io::Error) {
        self.counters.dropped.add(samples as u64);
        let dest = self.describe();
        if let Some(sp) = self.spooling.as_mut() {
            if let Some(n) = sp.log.allow() {
                log::error!(
                    "cannot write to the spool of {dest}: {e}: dropped {samples} samples{}",
                    suppressed_note(n)
                );
            }
        }
    }

    /// Moves the memory queue to the spool. The spool's lock is taken first, as the reader
    /// does when it spills, so the spool stays in order.
    fn spool_queue(&mut self) {
        let mut failed: Vec<(usize, io::Error)> = Vec::new();
        if let Some(mut s) = self.lock_spool() {
            for b in self.queue.take_all() {
                if let Err(e) = s.append(&b, false) {
                    failed.push((b.samples, e));
                }
            }
        }
        for (n, e) in failed {
            self.spool_failed(n, &e);
        }
    }

    /// The connection broke: the resend window (sent, maybe lost with the connection) and
    /// the batch in flight go to the front of the spool, as they are older than anything in
    /// it. If that fails they stay in memory: the window is resent after the reconnect and
    /// the batch goes back to the queue.
    fn disconnect(&mut self, current: Option<Batch>, why: &str) {
        log::warn!(
            "write to {} failed: {why}; spooling until it is back",
            self.describe()
        );
        self.conn = None;
        let mut items: Vec<(&Batch, bool)> = self.window.iter().map(|b| (b, true)).collect();
        if let Some(b) = &current {
            items.push((b, false));
        }
        let result = match self.lock_spool() {
            Some(mut s) => s.prepend(&items),
            None => return,
        };
        match result {
            Ok(()) => self.forget_window(),
            Err(e) => {
                log::error!(
                    "cannot write to the spool of {}: {e}; keeping the data in memory",
                    self.describe()
                );
                if let Some(b) = current {
                    self.queue.push_front(b);
                }
            }
        }
    }

    /// Waits until the replay pace lets `samples` more go; false if the shutdown deadline
    /// came first.
    fn pace(&mut self, samples: usize) -> bool {
        let Some(sp) = self.spooling.as_mut() else {
            return true;
        };
        if sp.rate <= 0.0 {
            return true;
        }
        loop {
            let now = Instant::now();
            if now >= sp.pace_at {
                // After an idle spell, allow a burst of at most 100 ms worth.
                let base = match now.checked_sub(Duration::from_millis(100)) {
                    Some(floor) => sp.pace_at.max(floor),
                    None => sp.pace_at,
                };
                let step = Duration::try_from_secs_f64(samples as f64 / sp.rate)
                    .unwrap_or(Duration::from_secs(3600));
                sp.pace_at = base + step;
                return true;
            }
            if self.control.deadline().is_some() {
                return false;
            }
            std::thread::sleep(
                sp.pace_at
                    .duration_since(now)
                    .min(Duration::from_millis(50)),
            );
        }
    }

    /// fdatasyncs what the spool wrote, once a second (or now, with `now`).
    fn maybe_sync(&mut self, now: bool) {
        let Some(sp) = self.spooling.as_mut() else {
            return;
        };
        let t = Instant::now();
        if !now && t < sp.next_sync {
            return;
        }
        sp.next_sync = t + SYNC_INTERVAL;
        let files = sp
            .spool
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take_unsynced();
        let failed = spool::sync_all(files);
        if failed > 0 {
            self.counters.spool_errors.add(failed);
        }
    }

    fn connected(&mut self, conn: TcpStream, attempt: u32) {
        if self.connected_before {
            self.counters.reconnects.inc();
            log::info!(
                "reconnected to {} after {attempt} attempt(s)",
                self.describe()
            );
        } else {
            log::info!("connected to {}", self.describe());
        }
        self.connected_before = true;
        self.conn = Some(conn);
    }

    /// Writes to the connection, noticing first a carbon that closed it.
    fn write_conn(&mut self, bytes: &[u8]) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Err(io::Error::new(io::ErrorKind::NotConnected, "not connected"));
        };
        if peer_closed(conn) {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "carbon closed the connection",
            ));
        }
        conn.write_all(bytes)
    }

    fn describe(&self) -> String {
        match &self.target {
            Target::Stdout => "stdout".into(),
            Target::Tcp { host, port } => format!("carbon at {host}:{port}"),
        }
    }

    fn drop_remaining(&mut self, current: Option<Batch>, why: &str) {
        let n = self.queue.clear() + current.map_or(0, |b| b.samples);
        if n > 0 {
            self.counters.dropped.add(n as u64);
            log::error!(
                "{why}: dropped {n} samples not yet sent to {}",
                self.describe()
            );
        }
    }

    /// Keeps a sent batch for resending after a reconnect, within the window's size.
    fn remember(&mut self, batch: Batch) {
        if self.window_cap == 0 || matches!(self.target, Target::Stdout) {
            return;
        }
        self.window_bytes += batch.bytes.len();
        self.window.push_back(batch);
        while self.window_bytes > self.window_cap {
            match self.window.pop_front() {
                Some(old) => self.window_bytes -= old.bytes.len(),
                None => break,
            }
        }
    }

    /// Forgets the resend window (its batches were sent once already and are not counted).
    fn forget_window(&mut self) {
        self.window.clear();
        self.window_bytes = 0;
    }

    fn send(&mut self, batch: &Batch) -> Result<(), SendError> {
        if let Target::Stdout = self.target {
            return self.send_stdout(batch).map_err(SendError::Stop);
        }
        loop {
            if self.conn.is_none() {
                self.connect()?;
            }
            let Some(conn) = self.conn.as_mut() else {
                continue;
            };
            if peer_closed(conn) {
                log::warn!("{} closed the connection; reconnecting", self.describe());
                self.conn = None;
                continue;
            }
            match conn.write_all(&batch.bytes) {
                Ok(()) => return Ok(()),
                Err(e) => {
                    log::warn!("write to {} failed: {e}; reconnecting", self.describe());
                    self.conn = None;
                }
            }
        }
    }

    fn send_stdout(&mut self, batch: &Batch) -> Result<(), Stop> {
        let result = batch
            .bytes
            .split_inclusive(|&c| c == b'\n')
            .try_for_each(|line| self.stdout.write_lines(line))
            .and_then(|()| self.stdout.flush());
        match result {
            Ok(()) => Ok(()),
            Err(e) if bucky_proto::io::is_broken_pipe(&e) => Err(Stop::BrokenPipe),
            Err(e) => {
                // stdout is gone for good; nothing else can be done with the data.
                log::error!("writing to stdout: {e}");
                Err(Stop::BrokenPipe)
            }
        }
    }

    /// Connects with the configured backoff, then resends the window.
    fn connect(&mut self) -> Result<(), SendError> {
        let Target::Tcp { host, port } = self.target.clone() else {
            return Ok(());
        };
        let mut attempt: u32 = 0;
        loop {
            if self.control.deadline_passed() {
                return Err(SendError::Deadline);
            }
            attempt = attempt.saturating_add(1);
            match connect_once(&host, port) {
                Ok(conn) => {
                    self.connected(conn, attempt);
                    if self.resend_window().is_ok() {
                        return Ok(());
                    }
                    self.conn = None;
                }
                Err(e) => {
                    self.counters.connect_failures.inc();
                    if let Some(n) = self.connect_log.allow() {
                        log::error!(
                            "failed to connect to {}:{}: {e} (attempt {attempt}){}",
                            host,
                            port,
                            suppressed_note(n)
                        );
                    }
                    if self.backoff.max_reconnects > 0
                        && i64::from(attempt) >= self.backoff.max_reconnects
                    {
                        return Err(SendError::GaveUp);
                    }
                    self.control.sleep(self.backoff.delay_after(attempt));
                }
            }
        }
    }

    fn resend_window(&mut self) -> io::Result<()> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(());
        };
        let mut resent = 0;
        for b in &self.window {
            conn.write_all(&b.bytes)?;
            resent += b.samples;
        }
        if resent > 0 {
            self.counters.resent.add(resent as u64);
            log::info!("resent the last {resent} samples (sent before the connection was lost)");
        }
        Ok(())
    }

    /// Ends the connection in order: our FIN, then carbon's close once it has read everything.
    fn finish(&mut self) -> Result<(), Stop> {
        if let Target::Stdout = self.target {
            return match self.stdout.flush() {
                Err(e) if bucky_proto::io::is_broken_pipe(&e) => Err(Stop::BrokenPipe),
                _ => Ok(()),
            };
        }
        let Some(mut conn) = self.conn.take() else {
            return Ok(());
        };
        if conn.shutdown(SockShutdown::Write).is_err() {
            return Ok(());
        }
        let until = Instant::now() + self.control.drain_time();
        let mut buf = [0u8; 512];
        while Instant::now() < until {
            let left = until.saturating_duration_since(Instant::now());
            if conn
                .set_read_timeout(Some(left.max(Duration::from_millis(1))))
                .is_err()
            {
                break;
            }
            match conn.read(&mut buf) {
                Ok(0) => break,
                Ok(_) => continue,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => break,
            }
        }
        Ok(())
    }
}

fn connect_once(host: &str, port: u16) -> io::Result<TcpStream> {
    let addrs: Vec<SocketAddr> = (host, port).to_socket_addrs()?.collect();
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no address");
    for addr in addrs {
        match TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                let _ = s.set_nodelay(true);
                let _ = s.set_write_timeout(Some(WRITE_TIMEOUT));
                return Ok(s);
            }
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// True when carbon has closed or reset the connection. Carbon never sends on these ports, so
/// anything readable is the end of the stream (or stray bytes, read and dropped).
fn peer_closed(conn: &TcpStream) -> bool {
    let mut buf = [0u8; 256];
    match recv(conn.as_raw_fd(), &mut buf, MsgFlags::MSG_DONTWAIT) {
        Ok(0) => true,
        Ok(_) => false,
        Err(nix::errno::Errno::EAGAIN) | Err(nix::errno::Errno::EINTR) => false,
        Err(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bucky_proto::shutdown::Shutdown;
    use std::net::TcpListener;

    /// A spool of `records` batches of 100 lines replayed into a loopback listener at
    /// `rate`: returns the lines received and how long the replay took.
    fn replay(records: usize, rate: f64) -> (usize, Duration, u64) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let sink = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().unwrap();
            let mut all = Vec::new();
            conn.read_to_end(&mut all).unwrap();
            all.iter().filter(|&&c| c == b'\n').count()
        });
        let dir = tempfile::tempdir().unwrap();
        let spool = Mutex::new(Spool::open(dir.path(), 0, 1 << 30).unwrap());
        for r in 0..records {
            let mut bytes = Vec::new();
            for i in 0..100 {
                bytes.extend_from_slice(format!("r{r}.s{i} {i} 1700000000\n").as_bytes());
            }
            spool
                .lock()
                .unwrap()
                .append(
                    &Batch {
                        bytes,
                        samples: 100,
                    },
                    false,
                )
                .unwrap();
        }
        let queue = Queue::new(1000);
        queue.close();
        let counters = DestCounters::default();
        let control = Control::new(Shutdown::new(), Duration::from_secs(10));
        let target = Target::Tcp {
            host: "127.0.0.1".into(),
            port,
        };
        let started = Instant::now();
        let mut w = Writer::new(
            target,
            Backoff::default(),
            1 << 20,
            &queue,
            &counters,
            &control,
        )
        .with_spool(&spool, rate);
        assert!(w.run().is_ok());
        let took = started.elapsed();
        let lines = sink.join().unwrap();
        assert!(spool.lock().unwrap().is_empty());
        (lines, took, counters.replayed.get())
    }

    #[test]
    fn spool_replay_is_paced() {
        // 2000 samples at 10000/s: 200 ms, less a burst of at most 100 ms.
        let (lines, took, replayed) = replay(20, 10_000.0);
        assert_eq!((lines, replayed), (2000, 2000));
        assert!(took >= Duration::from_millis(100), "{took:?}");
        // Unpaced, the same is a matter of milliseconds (bounded loosely: busy CI).
        let (lines, took, _) = replay(20, 0.0);
        assert_eq!(lines, 2000);
        assert!(took < Duration::from_secs(5), "{took:?}");
    }

    #[test]
    fn backoff_matches_the_original() {
        let b = Backoff::default();
        let got: Vec<f64> = (1..=9).map(|i| b.delay_after(i).as_secs_f64()).collect();
        assert_eq!(
            got,
            vec![5.0, 7.5, 11.25, 16.875, 25.3125, 37.96875, 56.953125, 60.0, 60.0]
        );
        let b = Backoff {
            max_reconnects: 3,
            delay: 0.5,
            factor: 2.0,
            max: 0.0,
        };
        let got: Vec<f64> = (1..=3).map(|i| b.delay_after(i).as_secs_f64()).collect();
        assert_eq!(got, vec![0.5, 1.0, 2.0]);
        let flat = Backoff {
            factor: 0.0,
            ..Backoff::default()
        };
        assert_eq!(flat.delay_after(5), Duration::from_secs(5));
        let huge = Backoff {
            factor: 1e300,
            max: 0.0,
            ..Backoff::default()
        };
        assert!(huge.delay_after(1000) <= Duration::from_secs(3600));
    }
}
