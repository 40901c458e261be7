//! The carbon connection: connect without blocking start-up, reconnect with backoff, and send
//! every batch at least once.
//!
//! Plaintext and pickle carry no acknowledgements, and data written just before carbon went
//! away sits in socket buffers and is lost with the connection. So the writer keeps the most
//! recent batches (the resend window) and sends them again on the next connection. Carbon
//! stores one value per series and timestamp, so a repeated point changes nothing.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::net::{Shutdown as SockShutdown, SocketAddr, TcpStream, ToSocketAddrs};
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use bucky_proto::io::LineWriter;
use bucky_proto::log::{suppressed_note, RateLimit};
use nix::sys::socket::{recv, MsgFlags};

use crate::encode::Batch;
use crate::queue::{Pop, Queue};
use crate::{Control, Counters};

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

/// Makes the self-metrics batch when it is due.
type Tick<'a> = Box<dyn FnMut() -> Option<Batch> + 'a>;

pub struct Writer<'a> {
    target: Target,
    backoff: Backoff,
    queue: &'a Queue,
    counters: &'a Counters,
    control: &'a Control,
    conn: Option<TcpStream>,
    /// Set once a connection has been made, so later ones count as reconnects.
    connected_before: bool,
    stdout: LineWriter<io::Stdout>,
    window: VecDeque<Batch>,
    window_bytes: usize,
    window_cap: usize,
    connect_log: RateLimit,
    /// Self-metrics: called when due, returns a batch to queue.
    ticker: Option<(Duration, Tick<'a>)>,
}

impl<'a> Writer<'a> {
    pub fn new(
        target: Target,
        backoff: Backoff,
        resend_window: usize,
        queue: &'a Queue,
        counters: &'a Counters,
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
            ticker: None,
        }
    }

    /// Every `interval`, `tick` makes a batch (the self-metrics) that joins the queue.
    pub fn with_ticker(
        mut self,
        interval: Duration,
        tick: impl FnMut() -> Option<Batch> + 'a,
    ) -> Self {
        if !interval.is_zero() {
            self.ticker = Some((interval, Box::new(tick)));
        }
        self
    }

    /// Sends until the queue is closed and drained, or the shutdown deadline passes.
    pub fn run(&mut self) -> Result<(), Stop> {
        let mut next_tick = self.ticker.as_ref().map(|(i, _)| Instant::now() + *i);
        loop {
            if self.control.deadline_passed() {
                self.drop_remaining(None, "the shutdown timeout passed");
                return Ok(());
            }
            let now = Instant::now();
            if let (Some(t), Some((interval, tick))) = (next_tick, self.ticker.as_mut()) {
                if now >= t {
                    if let Some(b) = tick() {
                        self.queue.push(b);
                    }
                    next_tick = Some(now + *interval);
                }
            }
            let wait = next_tick
                .map(|t| t.saturating_duration_since(now))
                .unwrap_or(Duration::from_millis(200))
                .min(Duration::from_millis(200));
            let batch = match self.queue.pop(wait) {
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
