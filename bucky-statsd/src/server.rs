//! How the receiving threads and the flusher meet without sharing a lock on the hot path.
//!
//! Each receiving thread fills its own [`Aggregate`]. Flush intervals end on multiples of
//! the flush time ([`next_boundary`]). Before taking in a batch of datagrams that arrived at
//! or after the end of its interval, a thread swaps its aggregate for an empty spare and
//! sends the full one, tagged with the interval's end, over a channel; an idle thread does
//! the same when its receive times out (every [`udp::POLL`]). So each datagram is counted in
//! the interval its arrival time falls in, exactly as a replay of a capture counts it. The
//! flusher, woken at the end of an interval, merges the aggregates tagged with it, sends the
//! emptied ones back as the next spares, and writes the flush. To stop, it raises a flag:
//! each thread drains what its socket still holds, hands its last aggregate over and exits.
//!
//! [`udp::POLL`]: crate::udp::POLL

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use crate::aggregate::{Aggregate, Ingest};
use crate::flush::Flusher;

/// The flush interval holding time `now` (Unix seconds), named by its end: interval `n` ends
/// at `n * period`. Flushes land on round times, so each flush of a 10 s interval gets its
/// own 10 s Graphite slot. Intervals are compared as integers, never as float times.
pub fn interval_end(now: f64, period: f64) -> i64 {
    (now / period).floor() as i64 + 1
}

/// The time interval `end` ends at.
pub fn end_time(end: i64, period: f64) -> f64 {
    end as f64 * period
}

/// What the receiving threads share with the flusher.
#[derive(Debug)]
pub struct Control {
    flush_time: f64,
    stop: AtomicBool,
}

/// One aggregate on its way to the flusher.
#[derive(Debug)]
pub struct Handoff {
    pub worker: usize,
    /// The interval the aggregate covers (see [`interval_end`]).
    pub end: i64,
    pub agg: Box<Aggregate>,
    /// The thread's last aggregate: it has stopped.
    pub last: bool,
}

/// A receiving thread's end of the exchange.
#[derive(Debug)]
pub struct Exchange {
    id: usize,
    control: Arc<Control>,
    /// The interval the thread's aggregate covers; `i64::MIN` before the first call.
    end: i64,
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

    /// Call before taking in what arrived at `now` (and when a wait for data ends): hands the
    /// aggregate over if `now` is past the end of its interval.
    #[inline]
    pub fn maybe_hand_over(&mut self, now: f64, agg: &mut Box<Aggregate>, ingest: &mut Ingest) {
        let end = interval_end(now, self.control.flush_time);
        if end <= self.end {
            return;
        }
        if self.end == i64::MIN {
            self.end = end;
            return;
        }
        let full = std::mem::replace(agg, self.fresh());
        ingest.new_interval();
        // The flusher only goes away at exit.
        let _ = self.tx.send(Handoff {
            worker: self.id,
            end: self.end,
            agg: full,
            last: false,
        });
        self.end = end;
    }

    /// Hands the last aggregate over: the thread is done.
    pub fn finish(self, agg: Box<Aggregate>) {
        let _ = self.tx.send(Handoff {
            worker: self.id,
            end: self.end,
            agg,
            last: true,
        });
    }
}

/// The flusher's end: collects the threads' aggregates and merges them.
#[derive(Debug)]
pub struct Hub {
    control: Arc<Control>,
    rx: mpsc::Receiver<Handoff>,
    spares: Vec<mpsc::Sender<Box<Aggregate>>>,
    answered: Vec<i64>,
    finished: Vec<bool>,
    /// Aggregates of later intervals that arrived while an earlier one was being collected
    /// (the flusher fell behind): kept for their own flush.
    early: Vec<Handoff>,
}

impl Hub {
    /// A hub and one [`Exchange`] per receiving thread, for intervals of `flush_time`
    /// seconds.
    pub fn new(workers: usize, flush_time: f64) -> (Hub, Vec<Exchange>) {
        let control = Arc::new(Control {
            flush_time,
            stop: AtomicBool::new(false),
        });
        let (tx, rx) = mpsc::channel();
        let mut spares = Vec::with_capacity(workers);
        let mut exchanges = Vec::with_capacity(workers);
        for id in 0..workers {
            let (stx, srx) = mpsc::channel();
            spares.push(stx);
            exchanges.push(Exchange {
                id,
                control: control.clone(),
                end: i64::MIN,
                tx: tx.clone(),
                spare: srx,
            });
        }
        let hub = Hub {
            control,
            rx,
            spares,
            answered: vec![i64::MIN; workers],
            finished: vec![false; workers],
            early: Vec::new(),
        };
        (hub, exchanges)
    }

    /// Threads that have stopped (handed their last aggregate over).
    pub fn finished(&self) -> usize {
        self.finished.iter().filter(|f| **f).count()
    }

    /// Merges into `flusher` the aggregates of interval `end` (and any late ones), waiting
    /// at most `wait` for every running thread's. Returns whether every thread answered in
    /// time (a late aggregate goes into the next flush).
    pub fn collect(&mut self, flusher: &mut Flusher, end: i64, wait: Duration) -> bool {
        for h in std::mem::take(&mut self.early) {
            self.take(flusher, h, Some(end));
        }
        self.gather(flusher, wait, Some(end), |h, i| {
            h.finished[i] || h.answered[i] >= end
        })
    }

    /// Asks every thread to stop and merges their last aggregates, waiting at most `wait`.
    /// Returns whether all of them stopped in time.
    pub fn stop(&mut self, flusher: &mut Flusher, wait: Duration) -> bool {
        self.control.stop.store(true, Ordering::Release);
        for h in std::mem::take(&mut self.early) {
            self.take(flusher, h, None);
        }
        self.gather(flusher, wait, None, |h, i| h.finished[i])
    }

    /// Merges one aggregate, unless it belongs to an interval after `upto`.
    fn take(&mut self, flusher: &mut Flusher, mut h: Handoff, upto: Option<i64>) {
        let w = h.worker;
        if let Some(a) = self.answered.get_mut(w) {
            *a = (*a).max(h.end);
        }
        if upto.is_some_and(|u| h.end > u) {
            self.early.push(h);
            return;
        }
        let held = h.agg.len();
        flusher.merge(&mut h.agg);
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

    fn gather(
        &mut self,
        flusher: &mut Flusher,
        wait: Duration,
        upto: Option<i64>,
        done: impl Fn(&Hub, usize) -> bool,
    ) -> bool {
        let deadline = Instant::now() + wait;
        loop {
            if (0..self.spares.len()).all(|i| done(self, i)) {
                return true;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.rx.recv_timeout(left) {
                Ok(h) => self.take(flusher, h, upto),
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
    fn intervals() {
        assert_eq!(interval_end(0.0, 10.0), 1);
        assert_eq!(interval_end(9.999, 10.0), 1);
        assert_eq!(interval_end(10.0, 10.0), 2);
        assert_eq!(end_time(interval_end(1795650003.5, 1.0), 1.0), 1795650004.0);
        assert_eq!(end_time(interval_end(0.25, 0.1), 0.1), 0.30000000000000004);
    }

    /// Datagrams go into the interval their arrival time falls in, whichever thread takes
    /// them and whenever the flusher looks.
    #[test]
    fn threads_hand_over_by_arrival_time_and_at_stop() {
        let limits = Arc::new(Limits::new(100, 1000));
        let mut flusher = Flusher::new(FlushOptions::default(), limits.clone());
        let (mut hub, exchanges) = Hub::new(2, 10.0);
        let handles: Vec<_> = exchanges
            .into_iter()
            .enumerate()
            .map(|(i, mut ex)| {
                let limits = limits.clone();
                std::thread::spawn(move || {
                    let mut ingest = Ingest::new(limits, true);
                    let mut agg = ex.fresh();
                    // Arrival times 100.0, 100.5, ... 149.5: five intervals of 20 datagrams.
                    for k in 0..100 {
                        let now = 100.0 + k as f64 * 0.5;
                        ex.maybe_hand_over(now, &mut agg, &mut ingest);
                        ingest.datagram(&mut agg, now, None, format!("c{i}:1|c").as_bytes());
                    }
                    ex.maybe_hand_over(150.0, &mut agg, &mut ingest);
                    while !ex.stopping() {
                        std::thread::sleep(Duration::from_millis(1));
                    }
                    ex.finish(agg);
                })
            })
            .collect();
        for end in 11..=15 {
            let b = end_time(end, 10.0);
            assert!(hub.collect(&mut flusher, end, Duration::from_secs(10)));
            let mut out = Vec::new();
            flusher.flush(b, &mut out);
            let text = String::from_utf8(out).unwrap();
            assert!(
                text.contains(&format!("stats_counts.c0 20 {b}\n")),
                "{text}"
            );
            assert!(
                text.contains(&format!("stats_counts.c1 20 {b}\n")),
                "{text}"
            );
        }
        assert!(hub.stop(&mut flusher, Duration::from_secs(10)));
        assert_eq!(hub.finished(), 2);
        for h in handles {
            h.join().unwrap();
        }
    }
}
