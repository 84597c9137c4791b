//! The circuit breaker of one plugin: `failures` faults within `window` open it for
//! `cooldown`, during which the plugin is not called and its failure policy answers; then one
//! request tries it (half-open) and closes the breaker if it succeeds. While closed, a request
//! pays one atomic load.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// Breaker settings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct BreakerSpec {
    pub(crate) failures: u32,
    pub(crate) window: Duration,
    pub(crate) cooldown: Duration,
}

/// What the breaker lets through now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Gate {
    /// Call the plugin.
    Pass,
    /// Call it once to see whether it recovered.
    Trial,
    /// Do not call it.
    Open,
}

#[derive(Debug)]
pub(crate) struct Breaker {
    spec: BreakerSpec,
    base: Instant,
    /// Milliseconds since `base` until which the breaker is open (0: closed).
    open_until: AtomicU64,
    /// Recent failure times, and whether a half-open trial is out.
    recent: Mutex<(Vec<Instant>, bool)>,
}

impl Breaker {
    pub(crate) fn new(spec: BreakerSpec) -> Self {
        Self { spec, base: Instant::now(), open_until: AtomicU64::new(0), recent: Mutex::new((Vec::new(), false)) }
    }

    fn ms(&self, t: Instant) -> u64 {
        t.saturating_duration_since(self.base).as_millis() as u64 + 1
    }

    /// Whether a request may call the plugin at `now`.
    pub(crate) fn gate(&self, now: Instant) -> Gate {
        let until = self.open_until.load(Relaxed);
        if until == 0 {
            return Gate::Pass;
        }
        if self.ms(now) < until {
            return Gate::Open;
        }
        let mut r = self.recent.lock();
        if r.1 {
            return Gate::Open;
        }
        r.1 = true;
        Gate::Trial
    }

    /// A call succeeded: a trial closes the breaker.
    pub(crate) fn success(&self, gate: Gate) {
        if gate == Gate::Trial {
            let mut r = self.recent.lock();
            r.0.clear();
            r.1 = false;
            self.open_until.store(0, Relaxed);
        }
    }

    /// A call failed at `now`; returns true when this failure opened the breaker.
    pub(crate) fn failure(&self, gate: Gate, now: Instant) -> bool {
        let mut r = self.recent.lock();
        r.1 = false;
        if gate != Gate::Trial {
            r.0.retain(|t| now.saturating_duration_since(*t) < self.spec.window);
            r.0.push(now);
            if (r.0.len() as u32) < self.spec.failures {
                return false;
            }
        }
        self.open_until.store(self.ms(now + self.spec.cooldown), Relaxed);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_n_failures_and_closes_after_a_good_trial() {
        let spec = BreakerSpec { failures: 3, window: Duration::from_secs(10), cooldown: Duration::from_secs(5) };
        let b = Breaker::new(spec);
        let t0 = Instant::now();
        assert_eq!(b.gate(t0), Gate::Pass);
        assert!(!b.failure(Gate::Pass, t0));
        assert!(!b.failure(Gate::Pass, t0));
        assert!(b.failure(Gate::Pass, t0), "the third failure in the window opens it");
        assert_eq!(b.gate(t0 + Duration::from_secs(1)), Gate::Open);
        let later = t0 + Duration::from_secs(6);
        assert_eq!(b.gate(later), Gate::Trial);
        assert_eq!(b.gate(later), Gate::Open, "one trial at a time");
        assert!(b.failure(Gate::Trial, later), "a failed trial reopens it");
        assert_eq!(b.gate(later + Duration::from_secs(1)), Gate::Open);
        let again = later + Duration::from_secs(6);
        assert_eq!(b.gate(again), Gate::Trial);
        b.success(Gate::Trial);
        assert_eq!(b.gate(again), Gate::Pass);
    }

    #[test]
    fn failures_outside_the_window_do_not_count() {
        let spec = BreakerSpec { failures: 2, window: Duration::from_secs(1), cooldown: Duration::from_secs(5) };
        let b = Breaker::new(spec);
        let t0 = Instant::now();
        assert!(!b.failure(Gate::Pass, t0));
        assert!(!b.failure(Gate::Pass, t0 + Duration::from_secs(2)));
        assert_eq!(b.gate(t0 + Duration::from_secs(2)), Gate::Pass);
    }
}
