//! Keep-alive connection pool for one endpoint.
//!
//! Written here rather than taken from hyper-util's legacy client pool because that pool has
//! no cap on open connections, no bounded wait for a free one, and no maximum lifetime, all of
//! which the config promises (`max_connections`, `acquire_timeout`, `max_lifetime`).
//!
//! Owns: idle connections (LIFO, so hot connections are reused and cold ones age out), the
//! `max_connections` permits, waiting for a connection, and the counters behind pool metrics.
//! Two kinds of connection share the permits: hyper client connections (HTTP/1.1 requests
//! hyper serves, probes) in one idle list, and the fast path's raw TCP connections
//! ([`RawConn`]) in one idle list per worker, so a fast-path request never crosses threads
//! and takes an uncontended lock; a worker whose list is empty when the pool is full takes
//! an idle connection from another worker's list rather than wait. When the pool is full and
//! the other kind has idle connections, one of them is closed to make room, so neither kind
//! can starve the other of `max_connections`.
//! Does not own: dialing (the caller passes a connect future) or health.

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use std::future::poll_fn;
use std::task::{Context, Poll};

use std::io;
use std::task::Waker;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::TrySendError;
use hyper::client::conn::http1::SendRequest;
use parking_lot::Mutex;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use super::Driver;
use crate::body::UpstreamBody;

/// Limits of one pool, from `upstreams[].pool`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PoolLimits {
    /// Open connections (busy + idle) at most.
    pub max_connections: usize,
    /// Idle connections kept at most.
    pub max_idle: usize,
    /// Idle connections older than this are closed.
    pub idle_timeout: Duration,
    /// Connections older than this are not reused.
    pub max_lifetime: Duration,
    /// How long a request may wait for a connection.
    pub acquire_timeout: Duration,
}

/// An open upstream connection, holding one of the pool's `max_connections` permits.
///
/// Its I/O half ([`Driver`]) is polled by whoever uses the connection, inside the downstream
/// connection's task: while sending, while the response body streams, and when taken from
/// the idle list. An idle connection is not polled; one the upstream closed meanwhile is
/// found out when it is next taken (and the request is retried on a fresh one).
#[derive(Debug)]
pub struct Conn {
    sender: SendRequest<UpstreamBody>,
    driver: Driver,
    /// The driver finished: the connection is gone.
    ended: bool,
    created: Instant,
    /// Released when the connection is dropped, letting a waiter dial.
    _permit: OwnedSemaphorePermit,
}

impl Conn {
    /// Drives the connection's I/O; returns whether the connection has ended.
    pub fn poll_driver(&mut self, cx: &mut Context<'_>) -> bool {
        if !self.ended && self.driver.as_mut().poll(cx).is_ready() {
            self.ended = true;
        }
        self.ended
    }

    /// Waits until the connection can take a request; false if it ended.
    async fn ready(&mut self) -> bool {
        poll_fn(|cx| {
            let ended = self.poll_driver(cx);
            match self.sender.poll_ready(cx) {
                Poll::Ready(r) => Poll::Ready(r.is_ok() && !ended),
                Poll::Pending if ended => Poll::Ready(false),
                Poll::Pending => Poll::Pending,
            }
        })
        .await
    }

    /// Sends a request and waits for the response head, driving the connection meanwhile. A
    /// request the connection could not send is handed back in the error.
    pub async fn send(
        &mut self,
        req: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, TrySendError<Request<UpstreamBody>>> {
        let mut fut = std::pin::pin!(self.sender.try_send_request(req));
        poll_fn(|cx| {
            self.poll_driver(cx);
            fut.as_mut().poll(cx)
        })
        .await
    }

    fn usable(&self) -> bool {
        !self.ended && !self.sender.is_closed()
    }
}

#[derive(Debug)]
struct Idle {
    conn: Conn,
    since: Instant,
}

/// An upstream TCP connection of the fast path, holding one of the `max_connections` permits.
#[derive(Debug)]
pub struct RawConn {
    /// The stream.
    pub stream: TcpStream,
    /// Not reused from then on (`max_lifetime` after it was dialed).
    retires: Instant,
    _permit: OwnedSemaphorePermit,
}

impl RawConn {
    /// Whether the upstream closed it or sent bytes nobody asked for while it was idle (one
    /// non-blocking read when the reactor saw it readable).
    pub fn is_stale(&self) -> bool {
        let mut cx = Context::from_waker(Waker::noop());
        if self.stream.poll_read_ready(&mut cx).is_pending() {
            return false;
        }
        let mut b = [0u8; 1];
        !matches!(self.stream.try_read(&mut b), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
    }
}

#[derive(Debug)]
struct RawIdle {
    conn: RawConn,
    /// Past `idle_timeout` (or its `max_lifetime`) from then on.
    expires: Instant,
}

/// Counters for metrics and the admin `/stats` page.
#[derive(Debug, Default)]
pub struct PoolStats {
    /// Connections dialed.
    pub created: AtomicU64,
    /// Requests served on a reused connection.
    pub reused: AtomicU64,
    /// Requests that had to wait because the pool was full.
    pub waited: AtomicU64,
    /// Total time spent waiting, in microseconds.
    pub wait_micros: AtomicU64,
    /// Requests that gave up waiting.
    pub timeouts: AtomicU64,
}

/// What waiting in a full pool ended with.
enum Room {
    Permit(OwnedSemaphorePermit),
    Returned,
    TimedOut,
}

/// Why no connection could be had.
#[derive(Debug)]
pub enum AcquireError<E> {
    /// The pool stayed full for `acquire_timeout`.
    Timeout,
    /// Dialing failed.
    Connect(E),
}

/// The pool of one endpoint.
#[derive(Debug)]
pub struct Pool {
    limits: PoolLimits,
    /// Held only to push or pop one entry; never across an await.
    idle: Mutex<Vec<Idle>>,
    /// The fast path's idle connections, one list per worker (see [`crate::workers`]).
    raw: Box<[Mutex<Vec<RawIdle>>]>,
    permits: Arc<Semaphore>,
    /// Wakes a waiter when a connection goes back to the idle list.
    returned: Notify,
    /// Counters.
    pub stats: PoolStats,
    /// `weir_upstream_pool_wait_seconds` of the upstream.
    wait_histogram: Option<prometheus_client::metrics::histogram::Histogram>,
}

impl Pool {
    /// An empty pool.
    pub fn new(limits: PoolLimits) -> Self {
        Self {
            permits: Arc::new(Semaphore::new(limits.max_connections)),
            idle: Mutex::new(Vec::with_capacity(limits.max_idle.min(64))),
            raw: (0..raw_slots()).map(|_| Mutex::new(Vec::new())).collect(),
            returned: Notify::new(),
            stats: PoolStats::default(),
            wait_histogram: None,
            limits,
        }
    }

    /// Its limits.
    pub fn limits(&self) -> &PoolLimits {
        &self.limits
    }

    /// Open connections (busy and idle).
    pub fn open(&self) -> usize {
        self.limits.max_connections - self.permits.available_permits()
    }

    /// Idle connections.
    pub fn idle(&self) -> usize {
        self.idle.lock().len() + self.raw.iter().map(|s| s.lock().len()).sum::<usize>()
    }

    /// A fast-path connection: this worker's most recent idle one, else a new one from
    /// `dial` under `max_connections`, else another worker's idle one, else the first to
    /// become free within `acquire_timeout`. `true` with it when it was reused.
    /// `now` is a recent clock reading, for the idle and lifetime checks.
    pub async fn acquire_raw<F, Fut>(&self, dial: F, now: Instant) -> Result<(RawConn, bool), AcquireError<io::Error>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<TcpStream>>,
    {
        if let Some(c) = self.pop_raw(crate::workers::current() % self.raw.len(), now) {
            self.stats.reused.fetch_add(1, Relaxed);
            return Ok((c, true));
        }
        match self.permits.clone().try_acquire_owned() {
            Ok(p) => self.dial_raw(p, &dial).await.map(|c| (c, false)),
            // Boxed: the rare path's state would otherwise be copied with every request.
            Err(_) => Box::pin(self.acquire_raw_full(&dial)).await,
        }
    }

    async fn dial_raw<F, Fut>(&self, permit: OwnedSemaphorePermit, dial: &F) -> Result<RawConn, AcquireError<io::Error>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<TcpStream>>,
    {
        let stream = dial().await.map_err(AcquireError::Connect)?;
        self.stats.created.fetch_add(1, Relaxed);
        Ok(RawConn { stream, retires: Instant::now() + self.limits.max_lifetime, _permit: permit })
    }

    /// The pool is at `max_connections`: take another worker's idle connection or wait.
    async fn acquire_raw_full<F, Fut>(&self, dial: &F) -> Result<(RawConn, bool), AcquireError<io::Error>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = io::Result<TcpStream>>,
    {
        let since = Instant::now();
        loop {
            for slot in 0..self.raw.len() {
                if let Some(c) = self.pop_raw(slot, Instant::now()) {
                    // Registered with another worker's reactor: move it to this one.
                    let RawConn { stream, retires, _permit } = c;
                    let Ok(stream) = stream.into_std().and_then(TcpStream::from_std) else { continue };
                    self.note_wait(Some(since));
                    self.stats.reused.fetch_add(1, Relaxed);
                    return Ok((RawConn { stream, retires, _permit }, true));
                }
            }
            // Full, but some of it is hyper's idle connections: close one and dial.
            if self.idle.lock().pop().is_some()
                && let Ok(p) = self.permits.clone().try_acquire_owned()
            {
                self.note_wait(Some(since));
                return self.dial_raw(p, dial).await.map(|c| (c, false));
            }
            match self.wait_for_room(since + self.limits.acquire_timeout).await {
                Room::Permit(p) => {
                    self.note_wait(Some(since));
                    return self.dial_raw(p, dial).await.map(|c| (c, false));
                }
                Room::Returned => {}
                Room::TimedOut => {
                    self.note_wait(Some(since));
                    return Err(AcquireError::Timeout);
                }
            }
        }
    }

    /// Closes one idle fast-path connection (any worker's), freeing its permit for hyper's
    /// side; false when there is none.
    fn evict_raw(&self) -> bool {
        self.raw.iter().any(|slot| slot.lock().pop().is_some())
    }

    fn pop_raw(&self, slot: usize, now: Instant) -> Option<RawConn> {
        let mut idle = self.raw[slot].lock();
        while let Some(i) = idle.pop() {
            if now < i.expires {
                return Some(i.conn);
            }
        }
        None
    }

    /// Gives a fast-path connection back after a complete, fully read exchange (`now`: a
    /// recent clock reading).
    pub fn put_raw(&self, conn: RawConn, now: Instant) {
        if now >= conn.retires {
            return;
        }
        let expires = (now + self.limits.idle_timeout).min(conn.retires);
        {
            let mut idle = self.raw[crate::workers::current() % self.raw.len()].lock();
            if idle.len() >= self.limits.max_idle {
                return;
            }
            idle.push(RawIdle { conn, expires });
        }
        self.returned.notify_one();
    }

    /// A ready connection: an idle one if any is usable, else a new one from `dial` when under
    /// `max_connections`, else the first to become free within `acquire_timeout`.
    pub async fn acquire<F, Fut, E>(&self, dial: F) -> Result<Conn, AcquireError<E>>
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(SendRequest<UpstreamBody>, Driver), E>>,
    {
        let mut waited_since = None;
        loop {
            while let Some(mut conn) = self.pop_idle() {
                // A connection whose last response was just read may need a moment to be
                // ready again; one that errors here was closed by the upstream.
                if conn.ready().await {
                    self.stats.reused.fetch_add(1, Relaxed);
                    self.note_wait(waited_since);
                    return Ok(conn);
                }
            }
            let permit = match self.permits.clone().try_acquire_owned() {
                Ok(p) => p,
                // Full, but some of it is the fast path's idle connections: close one.
                Err(_) if self.evict_raw() => continue,
                Err(_) => {
                    let since = *waited_since.get_or_insert_with(Instant::now);
                    // Boxed: waiting is the rare path, and its state would otherwise be
                    // copied with every request's future.
                    match Box::pin(self.wait_for_room(since + self.limits.acquire_timeout)).await {
                        Room::Permit(p) => p,
                        Room::Returned => continue,
                        Room::TimedOut => {
                            self.note_wait(waited_since);
                            return Err(AcquireError::Timeout);
                        }
                    }
                }
            };
            self.note_wait(waited_since);
            let (sender, driver) = dial().await.map_err(AcquireError::Connect)?;
            self.stats.created.fetch_add(1, Relaxed);
            return Ok(Conn { sender, driver, ended: false, created: Instant::now(), _permit: permit });
        }
    }

    /// Waits for a free slot, an idle connection coming back, or `deadline`.
    async fn wait_for_room(&self, deadline: Instant) -> Room {
        tokio::select! {
            p = self.permits.clone().acquire_owned() => p.map_or(Room::TimedOut, Room::Permit),
            () = self.returned.notified() => Room::Returned,
            () = tokio::time::sleep_until(deadline) => {
                self.stats.timeouts.fetch_add(1, Relaxed);
                Room::TimedOut
            }
        }
    }

    /// Records waits into `h` as well as the pool's own counters.
    pub fn set_wait_histogram(&mut self, h: prometheus_client::metrics::histogram::Histogram) {
        self.wait_histogram = Some(h);
    }

    fn note_wait(&self, since: Option<Instant>) {
        if let Some(since) = since {
            let waited = since.elapsed();
            self.stats.waited.fetch_add(1, Relaxed);
            let micros = u64::try_from(waited.as_micros()).unwrap_or(u64::MAX);
            self.stats.wait_micros.fetch_add(micros, Relaxed);
            if let Some(h) = &self.wait_histogram {
                h.observe(waited.as_secs_f64());
            }
        }
    }

    fn pop_idle(&self) -> Option<Conn> {
        let now = Instant::now();
        let mut idle = self.idle.lock();
        while let Some(i) = idle.pop() {
            let fresh = now.duration_since(i.since) < self.limits.idle_timeout
                && now.duration_since(i.conn.created) < self.limits.max_lifetime;
            if fresh && i.conn.usable() {
                return Some(i.conn);
            }
        }
        None
    }

    /// Gives a connection back after a complete exchange; closes it if it is too old or the
    /// idle list is full.
    pub fn put(&self, conn: Conn) {
        let now = Instant::now();
        if !conn.usable() || now.duration_since(conn.created) >= self.limits.max_lifetime {
            return;
        }
        {
            let mut idle = self.idle.lock();
            if idle.len() >= self.limits.max_idle {
                return;
            }
            idle.push(Idle { conn, since: now });
        }
        self.returned.notify_one();
    }

    /// Closes idle connections past `idle_timeout` or `max_lifetime`. Run periodically.
    pub fn sweep(&self) {
        let now = Instant::now();
        let stale: Vec<Idle> = {
            let mut idle = self.idle.lock();
            let (keep, stale) = std::mem::take(&mut *idle).into_iter().partition(|i| {
                now.duration_since(i.since) < self.limits.idle_timeout
                    && now.duration_since(i.conn.created) < self.limits.max_lifetime
                    && i.conn.usable()
            });
            *idle = keep;
            stale
        };
        drop(stale);
        for slot in &self.raw {
            slot.lock().retain(|i| now < i.expires);
        }
    }
}

/// Idle lists per pool for fast-path connections: one per worker.
fn raw_slots() -> usize {
    crate::workers::count().clamp(1, 256)
}
