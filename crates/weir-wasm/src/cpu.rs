//! How a callback's CPU cap is enforced: the engine's epoch (a wall-clock tick) says when a
//! call *may* have used its cap, and the thread's CPU clock decides whether it did. A call
//! that was only descheduled (a busy machine, a preempted worker) is let run on; one that spent
//! the CPU is interrupted. The clock is injected, so tests can hold it still.

use std::sync::Arc;
use std::time::Duration;

use wasmtime::UpdateDeadline;

use crate::plugin::TICK;

/// Reads the CPU time the calling thread has used so far.
pub type CpuClock = Arc<dyn Fn() -> Duration + Send + Sync>;

/// The calling thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`); read only when a call has run a
/// whole cap of wall time, never per call.
pub fn thread_cpu_time() -> Duration {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::ThreadCPUTime);
    Duration::new(t.tv_sec.unsigned_abs(), t.tv_nsec.clamp(0, 999_999_999) as u32)
}

/// Epoch ticks that cover `d` (one more, as a tick may be under way when the count starts).
pub(crate) fn ticks(d: Duration) -> u64 {
    d.as_micros().div_ceil(TICK.as_micros()) as u64 + 1
}

/// What a call's epoch deadline decides: the first time it passes, the thread's CPU clock is
/// marked and the call gets another cap of ticks; after that it is interrupted once the CPU
/// used since the mark reaches the cap. A runaway callback is so stopped after between one and
/// two caps of CPU time; a descheduled one is never stopped for time it did not use.
pub(crate) fn on_deadline(mark: &mut Option<Duration>, now: Duration, cap: Duration) -> UpdateDeadline {
    let since = *mark.get_or_insert(now);
    let used = now.saturating_sub(since);
    if used >= cap { UpdateDeadline::Interrupt } else { UpdateDeadline::Continue(ticks(cap - used)) }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: Duration = Duration::from_millis(10);

    #[test]
    fn the_first_deadline_marks_and_later_ones_count_cpu_from_the_mark() {
        let mut mark = None;
        let ms = Duration::from_millis;
        assert!(matches!(on_deadline(&mut mark, ms(100), CAP), UpdateDeadline::Continue(6)));
        assert_eq!(mark, Some(ms(100)));
        // Descheduled: the wall clock ran on, the CPU clock barely moved.
        assert!(matches!(on_deadline(&mut mark, ms(101), CAP), UpdateDeadline::Continue(6)));
        assert!(matches!(on_deadline(&mut mark, ms(106), CAP), UpdateDeadline::Continue(3)));
        assert!(matches!(on_deadline(&mut mark, ms(110), CAP), UpdateDeadline::Interrupt));
    }

    #[test]
    fn the_thread_clock_counts_work_not_sleep() {
        let start = thread_cpu_time();
        std::thread::sleep(Duration::from_millis(30));
        let slept = thread_cpu_time() - start;
        assert!(slept < Duration::from_millis(15), "sleeping used {slept:?} of CPU");
        let t = std::time::Instant::now();
        while t.elapsed() < Duration::from_millis(30) {
            std::hint::black_box(0u64);
        }
        assert!(thread_cpu_time() - start > slept, "spinning uses CPU");
    }
}
