//! Worker threads: one single-threaded Tokio runtime per core.
//!
//! Every listener is served by one accept loop per worker on a shared socket, so a connection
//! lives its whole life on one thread: no work stealing, no cross-thread wake-ups on the
//! request path (the nginx model). Shared state (snapshot, pools, health) is reached through
//! atomics and short locks, so any worker can serve any request.

use std::io;

use parking_lot::Mutex;
use tokio::runtime::{Builder, Handle};
use tokio_util::sync::CancellationToken;

thread_local! {
    /// This thread's worker number (0 off worker threads).
    static WORKER: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Worker threads started in this process (at least 1), for sizing per-worker state.
static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(1);

/// The worker this thread is (0 off worker threads): per-worker state is indexed by it.
pub(crate) fn current() -> usize {
    WORKER.get()
}

/// How many workers per-worker state needs room for.
pub(crate) fn count() -> usize {
    STARTED.load(std::sync::atomic::Ordering::Relaxed)
}

/// The worker runtimes.
#[derive(Debug)]
pub struct Workers {
    handles: Vec<Handle>,
    threads: Mutex<Vec<std::thread::JoinHandle<()>>>,
    stop: CancellationToken,
}

impl Workers {
    /// Starts `n` worker threads (at least one).
    pub fn start(n: usize) -> io::Result<Self> {
        let stop = CancellationToken::new();
        STARTED.fetch_max(n.max(1), std::sync::atomic::Ordering::Relaxed);
        let mut handles = Vec::new();
        let mut threads = Vec::new();
        for i in 0..n.max(1) {
            let rt = Builder::new_current_thread().enable_all().build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            threads.push(std::thread::Builder::new().name(format!("weir-worker-{i}")).spawn(move || {
                WORKER.set(i);
                rt.block_on(stop.cancelled());
            })?);
        }
        Ok(Self { handles, threads: Mutex::new(threads), stop })
    }

    /// No threads of its own: listeners run on the runtime calling [`crate::Gateway::apply`].
    pub fn inline() -> Self {
        Self { handles: Vec::new(), threads: Mutex::new(Vec::new()), stop: CancellationToken::new() }
    }

    /// Runtimes to spawn accept loops on; the current one when there are no workers.
    pub(crate) fn handles(&self) -> Vec<Handle> {
        if self.handles.is_empty() { vec![Handle::current()] } else { self.handles.clone() }
    }
}

impl Drop for Workers {
    fn drop(&mut self) {
        self.stop.cancel();
        for t in self.threads.lock().drain(..) {
            let _ = t.join();
        }
    }
}
