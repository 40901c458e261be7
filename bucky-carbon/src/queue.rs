//! The bounded queue between the stdin reader and the carbon writer.
//!
//! The reader never blocks on it: when it is full the oldest batches are dropped and counted,
//! so a dead carbon costs the oldest data, never the input pipe or unbounded memory.

use std::collections::VecDeque;
use std::sync::{Condvar, Mutex, MutexGuard};
use std::time::Duration;

use crate::encode::Batch;

#[derive(Debug, Default)]
struct State {
    batches: VecDeque<Batch>,
    samples: usize,
    closed: bool,
}

/// What [`Queue::pop`] found.
#[derive(Debug, PartialEq)]
pub enum Pop {
    Batch(Batch),
    /// Nothing arrived within the timeout.
    Empty,
    /// Closed and drained: nothing will ever arrive.
    Done,
}

#[derive(Debug)]
pub struct Queue {
    state: Mutex<State>,
    cond: Condvar,
    capacity: usize,
}

impl Queue {
    /// A queue holding at most `capacity` samples (at least one batch is always kept).
    pub fn new(capacity: usize) -> Self {
        Queue {
            state: Mutex::new(State::default()),
            cond: Condvar::new(),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave the state inconsistent (every update is
        // a single push/pop plus a counter), so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Appends a batch; returns how many samples were dropped from the front to make room.
    pub fn push(&self, batch: Batch) -> usize {
        let mut spill = Vec::new();
        self.push_spill(batch, &mut spill);
        spill.iter().map(|b| b.samples).sum()
    }

    /// Appends a batch; the oldest batches that no longer fit are moved to `spill` (oldest
    /// first), for the spool or to be counted as dropped.
    pub fn push_spill(&self, batch: Batch, spill: &mut Vec<Batch>) {
        if batch.samples == 0 {
            return;
        }
        let mut s = self.lock();
        s.samples += batch.samples;
        s.batches.push_back(batch);
        while s.samples > self.capacity && s.batches.len() > 1 {
            if let Some(old) = s.batches.pop_front() {
                s.samples -= old.samples;
                spill.push(old);
            }
        }
        drop(s);
        self.cond.notify_one();
    }

    /// Takes every batch, oldest first.
    pub fn take_all(&self) -> Vec<Batch> {
        let mut s = self.lock();
        s.samples = 0;
        s.batches.drain(..).collect()
    }

    /// Puts a batch back at the front (one whose write failed), without dropping anything.
    pub fn push_front(&self, batch: Batch) {
        let mut s = self.lock();
        s.samples += batch.samples;
        s.batches.push_front(batch);
    }

    /// Takes the oldest batch, waiting up to `timeout` for one.
    pub fn pop(&self, timeout: Duration) -> Pop {
        let mut s = self.lock();
        if s.batches.is_empty() && !s.closed {
            s = self
                .cond
                .wait_timeout_while(s, timeout, |s| s.batches.is_empty() && !s.closed)
                .map(|(g, _)| g)
                .unwrap_or_else(|p| p.into_inner().0);
        }
        match s.batches.pop_front() {
            Some(b) => {
                s.samples -= b.samples;
                Pop::Batch(b)
            }
            None if s.closed => Pop::Done,
            None => Pop::Empty,
        }
    }

    /// No more input: the writer drains what is left and stops.
    pub fn close(&self) {
        self.lock().closed = true;
        self.cond.notify_all();
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Samples waiting.
    pub fn len(&self) -> usize {
        self.lock().samples
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Empties the queue; returns the number of samples thrown away.
    pub fn clear(&self) -> usize {
        let mut s = self.lock();
        s.batches.clear();
        std::mem::take(&mut s.samples)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(n: usize) -> Batch {
        Batch {
            bytes: vec![b'x'; n],
            samples: n,
        }
    }

    #[test]
    fn drops_oldest_when_full() {
        let q = Queue::new(10);
        assert_eq!(q.push(batch(4)), 0);
        assert_eq!(q.push(batch(4)), 0);
        assert_eq!(q.push(batch(4)), 4);
        assert_eq!(q.len(), 8);
        // A batch bigger than the whole queue is still kept, alone.
        assert_eq!(q.push(batch(30)), 8);
        assert_eq!(q.len(), 30);
        let mut spill = Vec::new();
        q.push_spill(batch(2), &mut spill);
        assert_eq!(spill, vec![batch(30)]);
        q.push(batch(3));
        assert_eq!(q.take_all(), vec![batch(2), batch(3)]);
        assert!(q.is_empty());
    }

    #[test]
    fn pop_order_close_and_timeout() {
        let q = Queue::new(100);
        assert_eq!(q.pop(Duration::from_millis(5)), Pop::Empty);
        q.push(batch(1));
        q.push(batch(2));
        q.push_front(batch(3));
        assert_eq!(q.pop(Duration::ZERO), Pop::Batch(batch(3)));
        q.close();
        assert_eq!(q.pop(Duration::ZERO), Pop::Batch(batch(1)));
        assert_eq!(q.pop(Duration::ZERO), Pop::Batch(batch(2)));
        assert_eq!(q.pop(Duration::from_secs(5)), Pop::Done);
    }

    #[test]
    fn pop_wakes_on_push() {
        let q = std::sync::Arc::new(Queue::new(100));
        let q2 = q.clone();
        let h = std::thread::spawn(move || q2.pop(Duration::from_secs(10)));
        std::thread::sleep(Duration::from_millis(10));
        q.push(batch(5));
        assert_eq!(h.join().unwrap(), Pop::Batch(batch(5)));
    }
}
