//! One endpoint of an upstream: its address, pool, load and health.
//!
//! Owns: dialing, the in-flight count, the latency EWMA and the up/down state that active
//! probes and passive ejection write and balancers read (all atomics, no locks).

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use hyper::client::conn::http1::{self, Connection, SendRequest};
use hyper::client::conn::http2;
use hyper_util::rt::TokioExecutor;
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::pool::{Pool, PoolLimits};
use crate::body::UpstreamBody;
use crate::io::UpstreamIo;
use crate::tls::UpstreamTls;

/// One `address:port` that serves an upstream.
#[derive(Debug)]
pub struct Endpoint {
    label: Arc<str>,
    host: String,
    port: u16,
    /// Set when `address` is an IP, so dialing skips name resolution.
    ip: Option<SocketAddr>,
    /// The weight it was created with; a reload that keeps it with another weight gives
    /// the new weight to the new upstream's balancer instead.
    weight: u32,
    pool: Pool,
    inflight: AtomicU32,
    /// Latency EWMA in microseconds (0 = no sample yet), for `p2c_ewma`.
    ewma_micros: AtomicU64,
    /// Written by active probes; starts up so traffic flows before the first probe.
    active_up: AtomicBool,
    /// Passive ejection deadline, in ms since `base`; 0 = not ejected.
    ejected_until_ms: AtomicU64,
    /// Consecutive failures of real requests, for passive ejection.
    failures: AtomicU32,
    /// The epoch of `ejected_until_ms`.
    base: Instant,
    /// The shared HTTP/2 connection, for `h2`/`h2c` upstreams.
    h2: Mutex<Option<http2::SendRequest<UpstreamBody>>>,
}

impl Endpoint {
    /// An endpoint at `host:port`.
    pub fn new(host: &str, port: u16, weight: u32, limits: PoolLimits) -> Self {
        let ip = host.parse().ok().map(|ip| SocketAddr::new(ip, port));
        Self {
            // `[::1]:80` for IPv6, as a Host header and a URL authority write it.
            label: match ip {
                Some(a) => a.to_string().into(),
                None => format!("{host}:{port}").into(),
            },
            host: host.to_owned(),
            port,
            ip,
            weight: weight.max(1),
            pool: Pool::new(limits),
            inflight: AtomicU32::new(0),
            ewma_micros: AtomicU64::new(0),
            active_up: AtomicBool::new(true),
            ejected_until_ms: AtomicU64::new(0),
            failures: AtomicU32::new(0),
            base: Instant::now(),
            h2: Mutex::new(None),
        }
    }

    /// `host:port`, for logs, errors and metric labels.
    pub fn label(&self) -> &Arc<str> {
        &self.label
    }

    /// The weight it was created with (at least 1).
    pub fn weight(&self) -> u32 {
        self.weight
    }

    /// Whether a new config's `host:port` with these pool limits is this endpoint, so a
    /// reload keeps it (pool, health, EWMA and ejection state) instead of starting cold.
    pub(crate) fn is(&self, host: &str, port: u16, limits: &PoolLimits) -> bool {
        self.port == port && self.host == host && self.pool.limits() == limits
    }

    /// The connection pool.
    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    /// Sends pool waits to `h` too.
    pub fn with_pool_wait(mut self, h: prometheus_client::metrics::histogram::Histogram) -> Self {
        self.pool.set_wait_histogram(h);
        self
    }

    /// Requests in flight (from upstream request to the end of the response body).
    pub fn inflight(&self) -> u32 {
        self.inflight.load(Relaxed)
    }

    pub(crate) fn begin_request(&self) {
        self.inflight.fetch_add(1, Relaxed);
    }

    pub(crate) fn end_request(&self) {
        self.inflight.fetch_sub(1, Relaxed);
    }

    /// Latency EWMA in microseconds; 0 before the first sample.
    pub fn ewma_micros(&self) -> u64 {
        self.ewma_micros.load(Relaxed)
    }

    /// Folds one response-header latency into the EWMA (weight 0.3 on the new sample).
    pub fn observe_latency(&self, d: Duration) {
        let sample = u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1);
        let old = self.ewma_micros.load(Relaxed);
        let new = if old == 0 { sample } else { (old * 7 + sample * 3) / 10 };
        self.ewma_micros.store(new.max(1), Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.base.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Whether the balancer may pick this endpoint now.
    pub fn is_available(&self) -> bool {
        if !self.active_up.load(Relaxed) {
            return false;
        }
        let until = self.ejected_until_ms.load(Relaxed);
        until == 0 || self.now_ms() >= until
    }

    /// What active probes last concluded.
    pub fn is_active_up(&self) -> bool {
        self.active_up.load(Relaxed)
    }

    /// Whether passive checks have it ejected now.
    pub fn is_ejected(&self) -> bool {
        let until = self.ejected_until_ms.load(Relaxed);
        until != 0 && self.now_ms() < until
    }

    pub(crate) fn set_active_up(&self, up: bool) -> bool {
        self.active_up.swap(up, Relaxed) != up
    }

    /// A real request failed (connect error, 5xx, timeout); ejects after `threshold` in a row.
    pub fn record_failure(&self, passive: Option<(u32, Duration)>) {
        let Some((threshold, ejection)) = passive else { return };
        let n = self.failures.fetch_add(1, Relaxed) + 1;
        if n >= threshold {
            self.failures.store(0, Relaxed);
            let until = self.now_ms() + u64::try_from(ejection.as_millis()).unwrap_or(u64::MAX / 2);
            self.ejected_until_ms.store(until.max(1), Relaxed);
            tracing::warn!(endpoint = %self.label, failures = n, ejection = ?ejection, "endpoint ejected");
        }
    }

    /// A real request succeeded.
    pub fn record_success(&self) {
        if self.failures.load(Relaxed) != 0 {
            self.failures.store(0, Relaxed);
        }
    }

    /// Opens a TCP (and, with `tls`, TLS) connection to the endpoint.
    async fn stream(&self, timeout: Duration, tls: Option<&UpstreamTls>) -> io::Result<UpstreamIo> {
        let stream = tokio::time::timeout(timeout, async {
            let tcp = match self.ip {
                Some(addr) => TcpStream::connect(addr).await?,
                None => TcpStream::connect((self.host.as_str(), self.port)).await?,
            };
            tcp.set_nodelay(true)?;
            match tls {
                None => Ok::<_, io::Error>(UpstreamIo::Plain(tcp)),
                Some(t) => {
                    let name = match &t.sni {
                        Some(n) => n.clone(),
                        None => ServerName::try_from(self.host.clone()).map_err(io::Error::other)?,
                    };
                    Ok(UpstreamIo::Tls(Box::new(t.connector.connect(name, tcp).await?)))
                }
            }
        })
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}")))??;
        Ok(stream)
    }

    /// Opens a plain TCP connection (the fast path's upstream connections).
    pub async fn dial_tcp(&self, timeout: Duration) -> io::Result<TcpStream> {
        let connect = async {
            let tcp = match self.ip {
                Some(addr) => TcpStream::connect(addr).await?,
                None => TcpStream::connect((self.host.as_str(), self.port)).await?,
            };
            tcp.set_nodelay(true)?;
            Ok::<_, io::Error>(tcp)
        };
        tokio::time::timeout(timeout, connect)
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, format!("connect timed out after {timeout:?}")))?
    }

    /// Opens an HTTP/1.1 connection. The caller drives the returned connection (see
    /// [`super::pool::Conn`]), so a pooled exchange runs entirely in the task of the
    /// downstream connection: no channel hop or task wake-up between two tasks.
    pub async fn dial(
        &self,
        timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> io::Result<(SendRequest<UpstreamBody>, Driver)> {
        let io = self.stream(timeout, tls).await?;
        let (sender, conn) = http1::Builder::new().handshake(TokioIo::new(io)).await.map_err(io::Error::other)?;
        Ok((sender, Box::pin(conn)))
    }

    /// Opens an HTTP/1.1 connection whose I/O runs in a task of its own (probes, upgrades).
    pub async fn connect_spawned(
        &self,
        timeout: Duration,
        tls: Option<&UpstreamTls>,
        upgrades: bool,
    ) -> io::Result<SendRequest<UpstreamBody>> {
        let (sender, conn) = self.dial(timeout, tls).await?;
        let label = self.label.clone();
        tokio::spawn(async move {
            let conn = Pin::into_inner(conn);
            let ended = if upgrades { conn.with_upgrades().await } else { conn.await };
            if let Err(e) = ended {
                tracing::debug!(endpoint = %label, error = %e, "upstream connection ended");
            }
        });
        Ok(sender)
    }

    /// The endpoint's multiplexed HTTP/2 connection, opened on first use and reopened after
    /// it closes.
    pub async fn h2(
        &self,
        timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> io::Result<http2::SendRequest<UpstreamBody>> {
        if let Some(s) = self.h2.lock().as_ref().filter(|s| !s.is_closed()) {
            return Ok(s.clone());
        }
        // Boxed: the handshake's state is large and rare; inline it would be copied with every
        // request's future.
        Box::pin(self.h2_connect(timeout, tls)).await
    }

    async fn h2_connect(
        &self,
        timeout: Duration,
        tls: Option<&UpstreamTls>,
    ) -> io::Result<http2::SendRequest<UpstreamBody>> {
        let io = self.stream(timeout, tls).await?;
        let (sender, conn) = http2::Builder::new(TokioExecutor::new())
            .timer(hyper_util::rt::TokioTimer::new())
            .keep_alive_interval(Duration::from_secs(30))
            .handshake(TokioIo::new(io))
            .await
            .map_err(io::Error::other)?;
        let label = self.label.clone();
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(endpoint = %label, error = %e, "upstream h2 connection ended");
            }
        });
        self.pool.stats.created.fetch_add(1, Relaxed);
        *self.h2.lock() = Some(sender.clone());
        Ok(sender)
    }
}

/// The I/O half of an upstream HTTP/1.1 connection; it makes progress only when polled.
pub type Driver = Pin<Box<Connection<TokioIo<UpstreamIo>, UpstreamBody>>>;
