//! How the receiving threads and the flusher meet without sharing a lock on the hot path.
//!
//! Each receiving thread fills its own [`Aggregate`]. To flush, the flusher bumps an epoch
//! (an atomic); each thread notices it between two receive calls (at most [`udp::POLL`]
//! later, when idle), swaps its aggregate for an empty spare and sends the full one over a
//! channel. The flusher merges what arrives, sends the emptied aggregates back as the next
//! spares, and writes the flush. To stop, it raises a flag: each thread drains what its
//! socket still holds, hands its last aggregate over and exits.
//!
//! [`udp::POLL`]: crate::udp::POLL

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::aggregate::{Aggregate, Ingest};
use crate::flush::Flusher;

/// The flags the flusher raises for the receiving threads.
#[derive(Debug, Default)]
pub struct Control {
    epoch: AtomicU64,
    stop: AtomicBool,
}

/// One aggregate on its way to the flusher.
#[derive(Debug)]
pub struct Handoff {
    pub worker: usize,
    pub epoch: u64,
    pub agg: Box<Aggregate>,
    /// The thread's last aggregate: it has stopped.
    pub last: bool,
}

/// A receiving thread's end of the exchange.
#[derive(Debug)]
pub struct Exchange {
    id: usize,
    control: Arc<Control>,
    seen: u64,
    tx: mpsc::Sender<Handoff>,
    spare: mpsc::Receiver<Box<Aggregate>>,
}

impl Exchange {
    /// An empty aggregate: a returned spare, or a new one.
    pub fn fresh(&self) -> Box<Aggregate> {
        self.spare.try_recv().unwrap_or_default()
    }

    /// Whether the flusher asked the threads to stop.
    pub fn stopping(&self) -> bool {
        self.control.stop.load(Ordering::Acquire)
    }

    /// Hands the aggregate over if the flusher asked for it since the last time.
    #[inline]
    pub fn maybe_hand_over(&mut self, agg: &mut Box<Aggregate>, ingest: &mut Ingest) {
        let epoch = self.control.epoch.load(Ordering::Acquire);
        if epoch == self.seen {
            return;
        }
        self.seen = epoch;
        let full = std::mem::replace(agg, self.fresh());
        ingest.new_interval();
        // The flusher only goes away at exit.
        let _ = self.tx.send(Handoff {
            worker: self.id,
            epoch,
            agg: full,
            last: false,
        });
    }

    /// Hands the last aggregate over: the thread is done.
    pub fn finish(self, agg: Box<Aggregate>) {
        let _ = self.tx.send(Handoff {
            worker: self.id,
            epoch: self.control.epoch.load(Ordering::Acquire),
            agg,
            last: true,
        });
    }
}

/// The flusher's end: asks for the threads' aggregates and merges them.
#[derive(Debug)]
pub struct Hub {
    control: Arc<Control>,
    rx: mpsc::Receiver<Handoff>,
    spares: Vec<mpsc::Sender<Box<Aggregate>>>,
    answered: Vec<u64>,
    finished: Vec<bool>,
}

impl Hub {
    /// A hub and one [`Exchange`] per receiving thread.
    pub fn new(workers: usize) -> (Hub, Vec<Exchange>) {
        let control = Arc::new(Control::default());
        let (tx, rx) = mpsc::channel();
        let mut spares = Vec::with_capacity(workers);
        let mut exchanges = Vec::with_capacity(workers);
        for id in 0..workers {
            let (stx, srx) = mpsc::channel();
            spares.push(stx);
            exchanges.push(Exchange {
                id,
                control: control.clone(),
                seen: 0,
                tx: tx.clone(),
                spare: srx,
            });
        }
        let hub = Hub {
            control,
            rx,
            spares,
            answered: vec![0; workers],
            finished: vec![false; workers],
        };
        (hub, exchanges)
    }

    /// Threads that have stopped (handed their last aggregate over).
    pub fn finished(&self) -> usize {
        self.finished.iter().filter(|f| **f).count()
    }

    /// Asks every thread for its aggregate and merges them into `flusher`, waiting at most
    /// `wait`. Returns whether every running thread answered (a late one is merged later).
    pub fn collect(&mut self, flusher: &mut Flusher, wait: Duration) -> bool {
        let target = self.control.epoch.fetch_add(1, Ordering::AcqRel) + 1;
        self.gather(flusher, wait, |h, i| {
            h.finished[i] || h.answered[i] >= target
        })
    }

    /// Asks every thread to stop and merges their last aggregates, waiting at most `wait`.
    /// Returns whether all of them stopped in time.
    pub fn stop(&mut self, flusher: &mut Flusher, wait: Duration) -> bool {
        self.control.stop.store(true, Ordering::Release);
        self.gather(flusher, wait, |h, i| h.finished[i])
    }

    fn gather(
        &mut self,
        flusher: &mut Flusher,
        wait: Duration,
        done: impl Fn(&Hub, usize) -> bool,
    ) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if (0..self.spares.len()).all(|i| done(self, i)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(mut h) => {
                    let held = h.agg.len();
                    flusher.merge(&mut h.agg);
                    let w = h.worker;
                    if let Some(a) = self.answered.get_mut(w) {
                        *a = (*a).max(h.epoch);
                    }
                    if h.last {
                        if let Some(f) = self.finished.get_mut(w) {
                            *f = true;
                        }
                    } else {
                        h.agg.clear(held);
                        if let Some(s) = self.spares.get(w) {
                            let _ = s.send(h.agg);
                        }
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => return false,
                Err(mpsc::RecvTimeoutError::Disconnected) => return false,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aggregate::Limits;
    use crate::flush::FlushOptions;

    #[test]
    fn threads_hand_over_on_request_and_at_stop() {
        let limits = Arc::new(Limits::new(100, 1000));
        let mut flusher = Flusher::new(FlushOptions::default(), limits.clone());
        let (mut hub, exchanges) = Hub::new(2);
        let handles: Vec<_> = exchanges
            .into_iter()
            .enumerate()
            .map(|(i, mut ex)| {
                let limits = limits.clone();
                std::thread::spawn(move || {
                    let mut ingest = Ingest::new(limits, true);
                    let mut agg = ex.fresh();
                    let mut sent = 0;
                    while !ex.stopping() {
                        if sent < 100 {
                            ingest.datagram(&mut agg, 0.0, None, format!("c{i}:1|c").as_bytes());
                            sent += 1;
                        }
                        ex.maybe_hand_over(&mut agg, &mut ingest);
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    ingest.datagram(&mut agg, 0.0, None, format!("c{i}:1|c").as_bytes());
                    ex.finish(agg);
                })
            })
            .collect();
        let start = Instant::now();
        while flusher.stats().metrics < 200 {
            assert!(hub.collect(&mut flusher, Duration::from_secs(10)));
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "the threads never sent it all"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(hub.stop(&mut flusher, Duration::from_secs(10)));
        assert_eq!(hub.finished(), 2);
        for h in handles {
            h.join().unwrap();
        }
        let mut out = Vec::new();
        flusher.flush(1.0, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("stats_counts.c0 101 1\n"), "{text}");
        assert!(text.contains("stats_counts.c1 101 1\n"), "{text}");
    }
}
