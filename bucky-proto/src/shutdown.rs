//! SIGTERM/SIGINT handling shared by every tool: a signal only raises a flag and wakes a
//! waiter, so each tool decides itself how to stop receiving and emit what it holds.

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use signal_hook::consts::{SIGINT, SIGTERM};

/// The environment variable in which the `bucky` wrapper gives its stages its process id.
pub const SUPERVISOR_VAR: &str = "BUCKY_SUPERVISOR_PID";

/// A shared "stop now" flag that a signal (or the program itself) can raise.
#[derive(Debug, Clone, Default)]
pub struct Shutdown {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    flag: AtomicBool,
    signal: Mutex<Option<i32>>,
    cond: Condvar,
}

impl Shutdown {
    pub fn new() -> Self {
        Self::default()
    }

    /// Raises the flag on SIGTERM and SIGINT (from a thread of its own).
    ///
    /// Under the `bucky` wrapper (which names itself in [`SUPERVISOR_VAR`]) the death of the
    /// wrapper counts as a SIGTERM too, so that no stage outlives it holding its ports.
    pub fn on_signals() -> io::Result<Self> {
        let s = Shutdown::new();
        if let Some(parent) = std::env::var(SUPERVISOR_VAR)
            .ok()
            .and_then(|v| v.parse::<i32>().ok())
        {
            // Asked before the check, so a wrapper that dies in between is still noticed.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGTERM);
            if nix::unistd::getppid().as_raw() != parent {
                s.trigger(Some(SIGTERM));
            }
        }
        let mut signals = signal_hook::iterator::Signals::new([SIGTERM, SIGINT])?;
        let t = s.clone();
        std::thread::Builder::new()
            .name("signals".into())
            .spawn(move || {
                if let Some(sig) = signals.forever().next() {
                    t.trigger(Some(sig));
                }
            })?;
        Ok(s)
    }

    /// Raises the flag; `signal` records why.
    pub fn trigger(&self, signal: Option<i32>) {
        if let Ok(mut g) = self.inner.signal.lock() {
            if g.is_none() {
                *g = signal;
            }
        }
        self.inner.flag.store(true, Ordering::SeqCst);
        self.inner.cond.notify_all();
    }

    pub fn is_set(&self) -> bool {
        self.inner.flag.load(Ordering::Relaxed)
    }

    /// The signal that raised the flag, if one did.
    pub fn signal(&self) -> Option<i32> {
        self.inner.signal.lock().ok().and_then(|g| *g)
    }

    /// Sleeps up to `d`; returns early (true) when the flag is raised.
    pub fn wait_timeout(&self, d: Duration) -> bool {
        let Ok(guard) = self.inner.signal.lock() else {
            return self.is_set();
        };
        if self.is_set() {
            return true;
        }
        let _ = self
            .inner
            .cond
            .wait_timeout_while(guard, d, |_| !self.is_set());
        self.is_set()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn wait_returns_early_when_triggered() {
        let s = Shutdown::new();
        let t = s.clone();
        let h = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            t.trigger(Some(15));
        });
        let start = Instant::now();
        assert!(s.wait_timeout(Duration::from_secs(10)));
        assert!(start.elapsed() < Duration::from_secs(5));
        assert_eq!(s.signal(), Some(15));
        h.join().unwrap();
    }

    #[test]
    fn wait_times_out() {
        let s = Shutdown::new();
        assert!(!s.wait_timeout(Duration::from_millis(10)));
    }
}
