//! Body types of the request path.
//!
//! Owns: [`UpstreamBody`] (what Weir sends upstream) and [`GatewayBody`] (what it sends
//! downstream). A proxied response body carries the pooled connection it arrived on and gives
//! it back to the pool the moment the body ends, so no task is spawned per request to watch
//! for reuse; a body dropped half-read closes its connection instead.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::filter::TrailerPlugins;
use crate::upstream::Endpoint;
use crate::upstream::pool::Conn;

/// Errors of a body sent upstream.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// A route's `max_body_size` for one request body of unknown length; shared with the proxy so
/// it can answer 413 when the upstream exchange fails because the limit tripped.
#[derive(Debug, Clone)]
pub struct BodyLimit(Arc<(u64, AtomicU64, AtomicBool)>);

impl BodyLimit {
    /// A limit of `max` bytes.
    pub fn new(max: u64) -> Self {
        Self(Arc::new((max, AtomicU64::new(0), AtomicBool::new(false))))
    }

    /// Whether the body went over the limit.
    pub fn tripped(&self) -> bool {
        self.0.2.load(Relaxed)
    }
}

/// The request body sent upstream: the client's body streamed through, or nothing.
#[derive(Debug)]
pub enum UpstreamBody {
    /// The downstream body, streamed as it arrives.
    Incoming(Incoming),
    /// The downstream body, cut off with an error past the limit.
    Limited(Incoming, BodyLimit),
    /// No body (retries of body-less requests, health probes).
    Empty,
    /// A body the gateway made (plugin callouts).
    Full(Option<Bytes>),
    /// A buffered body and its trailers, as plugins that read bodies left them.
    Buffered(Buffered),
    /// The downstream body streamed, its trailers handed to the plugins that read them (and
    /// cut off past the route's limit, if it has one).
    Trailed(Incoming, TrailerPlugins, Option<BodyLimit>),
}

/// `polled`, cut off with an error once the frames so far pass `limit`.
fn within(
    polled: Poll<Option<Result<Frame<Bytes>, BoxError>>>,
    limit: &BodyLimit,
) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
    if let Poll::Ready(Some(Ok(f))) = &polled
        && let Some(d) = f.data_ref()
    {
        let (max, seen, tripped) = &*limit.0;
        if seen.fetch_add(d.len() as u64, Relaxed) + d.len() as u64 > *max {
            tripped.store(true, Relaxed);
            return Poll::Ready(Some(Err("request body over the route's max_body_size".into())));
        }
    }
    polled
}

/// `polled`, with a trailers frame handed to `plugins` first.
fn trailed<E>(
    polled: Poll<Option<Result<Frame<Bytes>, E>>>,
    plugins: &TrailerPlugins,
) -> Poll<Option<Result<Frame<Bytes>, E>>> {
    polled.map(|f| {
        f.map(|f| {
            f.map(|frame| match frame.into_trailers() {
                Ok(mut t) => {
                    plugins.apply(&mut t);
                    Frame::trailers(t)
                }
                Err(frame) => frame,
            })
        })
    })
}

/// A whole body and its trailers: one data frame, then one trailers frame.
#[derive(Debug, Default)]
pub struct Buffered {
    /// The data, until sent.
    pub data: Option<Bytes>,
    /// The trailers, until sent.
    pub trailers: Option<http::HeaderMap>,
}

impl Buffered {
    fn next(&mut self) -> Option<Frame<Bytes>> {
        match self.data.take() {
            Some(d) => Some(Frame::data(d)),
            None => self.trailers.take().map(Frame::trailers),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.data.is_none() && self.trailers.is_none()
    }

    /// Exact without trailers; with them, unknown, so HTTP/1.1 chunks the body and can carry
    /// them.
    fn size_hint(&self) -> SizeHint {
        match (&self.data, &self.trailers) {
            (d, None) => SizeHint::with_exact(d.as_ref().map_or(0, |d| d.len() as u64)),
            (_, Some(_)) => SizeHint::default(),
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        match self.get_mut() {
            Self::Incoming(b) => Pin::new(b).poll_frame(cx).map_err(Into::into),
            Self::Limited(b, limit) => within(Pin::new(b).poll_frame(cx).map_err(BoxError::from), limit),
            Self::Empty => Poll::Ready(None),
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Buffered(b) => Poll::Ready(b.next().map(Ok)),
            Self::Trailed(b, plugins, limit) => {
                let polled = Pin::new(b).poll_frame(cx).map_err(BoxError::from);
                let polled = match limit {
                    Some(l) => within(polled, l),
                    None => polled,
                };
                trailed(polled, plugins)
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Incoming(b) | Self::Limited(b, _) | Self::Trailed(b, ..) => b.is_end_stream(),
            Self::Empty => true,
            Self::Full(b) => b.is_none(),
            Self::Buffered(b) => b.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Incoming(b) | Self::Limited(b, _) | Self::Trailed(b, ..) => b.size_hint(),
            Self::Empty => SizeHint::with_exact(0),
            Self::Full(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.len() as u64)),
            Self::Buffered(b) => b.size_hint(),
        }
    }
}

/// Holds a request's claim on an endpoint until its response body is finished: the
/// in-flight count (least connections, p2c) and the pooled connection.
#[derive(Debug)]
pub struct Lease {
    endpoint: Arc<Endpoint>,
    conn: Option<Conn>,
}

impl Lease {
    /// Counts a request in flight on `endpoint`; the count drops with the lease.
    pub fn new(endpoint: Arc<Endpoint>) -> Self {
        endpoint.begin_request();
        Self { endpoint, conn: None }
    }

    /// The endpoint leased.
    pub fn endpoint(&self) -> &Arc<Endpoint> {
        &self.endpoint
    }

    /// Attaches the connection the request went out on.
    pub fn attach(&mut self, conn: Conn) {
        self.conn = Some(conn);
    }

    /// Mutable access to the attached connection.
    pub fn conn_mut(&mut self) -> Option<&mut Conn> {
        self.conn.as_mut()
    }

    /// Returns the connection to its pool: the exchange on it completed cleanly.
    fn release(&mut self) {
        if let Some(conn) = self.conn.take() {
            self.endpoint.pool().put(conn);
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.endpoint.end_request();
    }
}

/// The response body sent downstream.
#[derive(Debug)]
pub enum GatewayBody {
    /// A body Weir made itself (errors, admin answers).
    Full(Option<Bytes>),
    /// An upstream body streamed through, with the lease it holds.
    Proxied {
        /// The upstream's body.
        inner: Incoming,
        /// Given back when `inner` ends; `None` once released.
        lease: Option<Lease>,
    },
    /// A buffered body and its trailers, as plugins that read bodies left them.
    Buffered(Buffered),
    /// A body streamed through, its trailers handed to the plugins that read them; the
    /// plugins' contexts end with it.
    Trailed(Box<GatewayBody>, TrailerPlugins),
    /// Chunks a task of Weir's sends as they come (MCP event streams). Dropping the body (the
    /// client went away) closes the channel, which tells the sender to stop.
    Stream(tokio::sync::mpsc::Receiver<Bytes>),
}

impl Default for GatewayBody {
    fn default() -> Self {
        Self::empty()
    }
}

impl GatewayBody {
    /// A complete body.
    pub fn full(b: impl Into<Bytes>) -> Self {
        Self::Full(Some(b.into()))
    }

    /// No body.
    pub fn empty() -> Self {
        Self::Full(None)
    }
}

impl Body for GatewayBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.get_mut() {
            Self::Full(b) => Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
            Self::Buffered(b) => Poll::Ready(b.next().map(Ok)),
            Self::Trailed(b, plugins) => trailed(Pin::new(&mut **b).poll_frame(cx), plugins),
            Self::Stream(rx) => rx.poll_recv(cx).map(|c| c.map(|b| Ok(Frame::data(b)))),
            Self::Proxied { inner, lease } => {
                // The upstream connection's I/O runs here, in this task (see `pool::Conn`).
                if let Some(c) = lease.as_mut().and_then(Lease::conn_mut) {
                    c.poll_driver(cx);
                }
                let polled = Pin::new(&mut *inner).poll_frame(cx);
                let done = match &polled {
                    Poll::Ready(None) => true,
                    Poll::Ready(Some(Ok(_))) => inner.is_end_stream(),
                    _ => false,
                };
                if done && let Some(mut l) = lease.take() {
                    l.release();
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Self::Full(b) => b.is_none(),
            Self::Buffered(b) => b.is_end_stream(),
            Self::Trailed(b, _) => b.is_end_stream(),
            Self::Stream(rx) => rx.is_closed() && rx.is_empty(),
            Self::Proxied { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Self::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            Self::Full(None) => SizeHint::with_exact(0),
            Self::Buffered(b) => b.size_hint(),
            Self::Trailed(b, _) => b.size_hint(),
            Self::Stream(_) => SizeHint::default(),
            Self::Proxied { inner, .. } => inner.size_hint(),
        }
    }
}

impl Drop for GatewayBody {
    fn drop(&mut self) {
        // Bodiless responses (HEAD, 204, 304, Content-Length: 0) are never polled: the
        // exchange is still complete, so the connection is reusable.
        if let Self::Proxied { inner, lease: Some(l) } = self
            && inner.is_end_stream()
        {
            l.release();
        }
    }
}
