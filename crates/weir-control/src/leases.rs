//! Registration leases: a registered endpoint lives while its service renews it.
//!
//! Owns: each registration's deadline (renewal time plus its `ttl`), which registrations have
//! run past theirs, and forgetting the leases of registrations deleted meanwhile. Time is
//! passed in, so a test runs ten minutes of renewals in microseconds. Leases live in memory:
//! a restarted control plane gives every stored registration a fresh `ttl` (its service renews
//! it, or it is dropped one `ttl` after the restart).

use std::collections::HashMap;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// The deadlines of the registrations this control plane watches.
#[derive(Debug, Default)]
pub struct Leases {
    /// Each deadline, and the sweep that last saw its registration stored.
    until: Mutex<HashMap<String, (Instant, u64)>>,
    /// Sweeps so far.
    sweeps: std::sync::atomic::AtomicU64,
}

impl Leases {
    /// Registration `name` was renewed at `now`: it lives until `now + ttl`.
    pub fn renew(&self, name: &str, ttl: Duration, now: Instant) {
        let sweep = self.sweeps.load(std::sync::atomic::Ordering::Relaxed);
        self.until.lock().insert(name.to_owned(), (deadline(now, ttl), sweep));
    }

    /// Forgets the leases of `names` (deleted).
    pub fn forget(&self, names: &[String]) {
        let mut until = self.until.lock();
        for n in names {
            until.remove(n);
        }
    }

    /// Of the registrations stored (`live`: name and ttl), those past their deadline at `now`.
    /// With `adopt`, one with no lease yet (stored before a restart, or written by `PUT`)
    /// gets one from `now`; without it, only those renewed here are watched. Leases of
    /// registrations no longer stored are forgotten; expired ones are kept (reported again
    /// at the next sweep) until [`Leases::forget`], so a failed delete is retried.
    pub fn expired<'a>(
        &self,
        live: impl IntoIterator<Item = (&'a str, Duration)>,
        now: Instant,
        adopt: bool,
    ) -> Vec<String> {
        // Marked in place (no copy of every name per sweep), then the unmarked dropped.
        let sweep = self.sweeps.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
        let mut until = self.until.lock();
        let mut out = Vec::new();
        for (name, ttl) in live {
            let due = match until.get_mut(name) {
                Some((d, seen)) => {
                    *seen = sweep;
                    *d
                }
                None if adopt => {
                    let d = deadline(now, ttl);
                    until.insert(name.to_owned(), (d, sweep));
                    d
                }
                None => continue,
            };
            if due <= now {
                out.push(name.to_owned());
            }
        }
        until.retain(|_, (_, seen)| *seen == sweep);
        out
    }

    /// How long `name` has left at `now`, if it is watched here.
    pub fn remaining(&self, name: &str, now: Instant) -> Option<Duration> {
        self.until.lock().get(name).map(|(d, _)| d.saturating_duration_since(now))
    }
}

/// `now + ttl`, or a century on when that is past what an `Instant` holds.
fn deadline(now: Instant, ttl: Duration) -> Instant {
    now.checked_add(ttl).or_else(|| now.checked_add(Duration::from_secs(100 * 365 * 86_400))).unwrap_or(now)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(10);

    #[test]
    fn a_renewed_registration_lives_for_ten_minutes_and_one_left_alone_goes_within_its_ttl() {
        let leases = Leases::default();
        let start = Instant::now();
        let live = [("kept", TTL), ("left", TTL)];
        leases.renew("kept", TTL, start);
        leases.renew("left", TTL, start);
        let mut gone_at = None;
        // Ten minutes, renewing `kept` every 3 s and sweeping every 500 ms.
        for step in 1..=1200u32 {
            let now = start + Duration::from_millis(500) * step;
            if step % 6 == 0 {
                leases.renew("kept", TTL, now);
            }
            let live: Vec<(&str, Duration)> =
                live.iter().copied().filter(|(n, _)| gone_at.is_none() || *n != "left").collect();
            let expired = leases.expired(live, now, true);
            assert!(!expired.contains(&"kept".to_owned()), "renewed, yet expired after {:?}", now - start);
            if expired.contains(&"left".to_owned()) {
                assert!(gone_at.is_none(), "expired twice");
                gone_at = Some(now - start);
            }
        }
        assert_eq!(gone_at, Some(TTL), "dropped exactly when its ttl ran out");
    }

    #[test]
    fn unwatched_registrations_are_adopted_only_when_asked_and_deleted_ones_are_forgotten() {
        let leases = Leases::default();
        let t0 = Instant::now();
        // Another control plane's registration (a shared store): not ours to expire.
        assert!(leases.expired([("theirs", TTL)], t0, false).is_empty());
        assert!(leases.expired([("theirs", TTL)], t0 + TTL * 2, false).is_empty());
        // Stored before a restart: adopted with a fresh ttl, then expired.
        assert!(leases.expired([("old", TTL)], t0, true).is_empty());
        assert_eq!(leases.remaining("old", t0), Some(TTL));
        assert_eq!(leases.expired([("old", TTL)], t0 + TTL, true), ["old"]);
        // Its delete failed: it is reported again, not given a new ttl.
        assert_eq!(leases.expired([("old", TTL)], t0 + TTL * 2, true), ["old"]);
        leases.forget(&["old".to_owned()]);
        assert_eq!(leases.remaining("old", t0), None);
        // A ttl past what an Instant holds does not panic.
        leases.renew("forever", Duration::MAX, t0);
        assert!(leases.remaining("forever", t0).unwrap() > TTL);
        // Deleted meanwhile: its lease goes too.
        leases.renew("deleted", TTL, t0);
        leases.expired([], t0, true);
        assert_eq!(leases.remaining("deleted", t0), None);
    }
}
