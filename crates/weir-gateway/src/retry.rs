//! The retry policy of one request, shared by the fast path and hyper's path.
//!
//! Owns which failures earn another attempt: connect errors and full pools always move to the
//! next endpoint (nothing was sent); a failure after the request went out moves on only when
//! repeating it is safe (`replayable`: idempotent, and the body can be sent again); a 5xx moves
//! on when the request is idempotent and bodiless; and a pooled connection the upstream had
//! closed while idle gets one attempt that does not count, since it says nothing about the
//! endpoint's health.

/// Whether sending `m` twice has the effect of sending it once (RFC 9110 §9.2.2).
pub fn idempotent(m: &http::Method) -> bool {
    use http::Method;
    matches!(*m, Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE)
}

/// Attempts made and allowed for one request.
#[derive(Debug)]
pub struct Retry {
    attempts: u32,
    made: u32,
    replayable: bool,
    on_5xx: bool,
    stale_left: bool,
}

impl Retry {
    /// `attempts` in total (the route's); `on_5xx`: 5xx answers are retried.
    pub fn new(attempts: u32, on_5xx: bool) -> Self {
        Self { attempts, made: 0, replayable: true, on_5xx, stale_left: true }
    }

    /// Whether a request that went out may be sent again (and so may use the free attempt).
    pub fn replayable(mut self, replayable: bool) -> Self {
        self.replayable = replayable;
        self.stale_left = replayable;
        self
    }

    /// Starts another attempt, if any is left.
    pub fn start(&mut self) -> bool {
        self.made += 1;
        self.made <= self.attempts
    }

    /// Whether this is the first attempt.
    pub fn is_first(&self) -> bool {
        self.made == 1
    }

    fn is_last(&self) -> bool {
        self.made >= self.attempts
    }

    /// The attempt just started does not count (nothing was tried).
    pub fn uncount(&mut self) {
        self.made = self.made.saturating_sub(1);
    }

    /// A reused connection turned out closed before answering: once, try again uncounted.
    pub fn stale(&mut self) -> bool {
        if self.stale_left && self.replayable {
            self.stale_left = false;
            self.uncount();
            return true;
        }
        false
    }

    /// The endpoint failed after the request went out: whether to try another.
    pub fn failed(&self) -> bool {
        self.replayable && !self.is_last()
    }

    /// A 5xx came back: whether to try another endpoint.
    pub fn retry_5xx(&self) -> bool {
        self.on_5xx && !self.is_last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attempts_count_except_the_stale_one() {
        let mut r = Retry::new(2, true);
        assert!(r.start() && r.retry_5xx() && r.failed());
        assert!(r.stale() && !r.stale(), "one free attempt");
        assert!(r.start() && r.start() && !r.retry_5xx() && !r.failed());
        assert!(!r.start());
        let mut once = Retry::new(3, false).replayable(false);
        assert!(once.start() && !once.failed() && !once.stale() && !once.retry_5xx());
    }
}
