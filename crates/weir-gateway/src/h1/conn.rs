//! One client connection on the fast path: read a head, serve it, repeat.
//!
//! Owns: the connection's buffers (taken from the worker's free list while a request is in
//! flight, see [`super::bufs`]), its one timer ([`Deadline`], re-armed for the header read,
//! idle waits and the route timeout, never one per request), the drain signal, reading and
//! writing with that deadline, and handing the connection to hyper with the bytes already
//! read. The exchange itself is in [`super::exchange`].

use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};
use tokio_util::sync::WaitForCancellationFutureOwned;

use super::bufs::{self, Bufs};
use super::request::{self, Limits, Parsed, Refusal};
use http::StatusCode;

use crate::error::ProxyError;

/// How long an idle keep-alive connection stays open once the gateway drains: a request the
/// client sends meanwhile is served (with `Connection: close`) instead of meeting a closed
/// socket. HAProxy before 2.4 waited for that last request the same way.
pub(super) const DRAIN_IDLE_GRACE: Duration = Duration::from_secs(1);

/// One timer, re-armed by storing a new due time; the timer itself is only reset when the
/// new time is earlier than the one it is set for, or when it fires early. Once polled it
/// keeps the task's waker, so later waits only check whether it fired (one load) instead of
/// polling it again.
#[derive(Debug)]
pub(super) struct Deadline {
    sleep: Pin<Box<Sleep>>,
    due: Instant,
    /// The timer holds this task's waker for its current setting.
    registered: bool,
}

impl Deadline {
    fn new(due: Instant) -> Self {
        Self { sleep: Box::pin(tokio::time::sleep_until(due)), due, registered: false }
    }

    /// Fires at `due` (replacing any earlier setting).
    pub(super) fn arm(&mut self, due: Instant) {
        self.due = due;
        if due < self.sleep.deadline() {
            self.sleep.as_mut().reset(due);
            self.registered = false;
        }
    }

    /// Fires `after` from now.
    pub(super) fn arm_in(&mut self, after: Duration) {
        self.arm(Instant::now() + after);
    }

    /// When it fires.
    pub(super) fn due(&self) -> Instant {
        self.due
    }

    pub(super) fn poll_due(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        loop {
            // Every wait of a connection runs in its one task, so the waker stays valid.
            if self.registered && !self.sleep.is_elapsed() {
                return Poll::Pending;
            }
            self.registered = true;
            ready!(self.sleep.as_mut().poll(cx));
            if Instant::now() >= self.due {
                return Poll::Ready(());
            }
            self.sleep.as_mut().reset(self.due);
            self.registered = false;
        }
    }
}

pin_project_lite::pin_project! {
    /// `f`, giving up with `None` when `deadline` passes. A struct rather than an async fn:
    /// it holds `f` once (an async fn would hold the argument and its pinned copy), and it
    /// nests in every exchange.
    pub(super) struct Timed<'d, F> {
        #[pin]
        f: F,
        deadline: &'d mut Deadline,
    }
}

impl<F: Future> Future for Timed<'_, F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(v) = this.f.poll(cx) {
            return Poll::Ready(Some(v));
        }
        this.deadline.poll_due(cx).map(|()| None)
    }
}

/// Polls `f`, giving up with `None` when `deadline` passes.
pub(super) fn timed<F: Future>(deadline: &mut Deadline, f: F) -> Timed<'_, F> {
    Timed { f, deadline }
}

/// Writes `a` then `b`, in one vectored write when the stream takes it.
pub(super) async fn write2<W: AsyncWrite + Unpin>(w: &mut W, mut a: &[u8], mut b: &[u8]) -> io::Result<()> {
    while !a.is_empty() || !b.is_empty() {
        let n = if a.is_empty() {
            poll_fn(|cx| Pin::new(&mut *w).poll_write(cx, b)).await?
        } else if b.is_empty() {
            poll_fn(|cx| Pin::new(&mut *w).poll_write(cx, a)).await?
        } else {
            let bufs = [io::IoSlice::new(a), io::IoSlice::new(b)];
            poll_fn(|cx| Pin::new(&mut *w).poll_write_vectored(cx, &bufs)).await?
        };
        if n == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        let from_a = n.min(a.len());
        a = &a[from_a..];
        b = &b[n - from_a..];
    }
    poll_fn(|cx| Pin::new(&mut *w).poll_flush(cx)).await
}

/// Reads once into `buf`; 0 at end of stream.
pub(super) async fn read_into<R: AsyncRead + Unpin>(r: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    poll_fn(|cx| {
        let mut rb = ReadBuf::new(buf);
        ready!(Pin::new(&mut *r).poll_read(cx, &mut rb))?;
        Poll::Ready(Ok(rb.filled().len()))
    })
    .await
}

/// What waiting for the next head ended with.
pub(super) enum Next {
    /// A head at the start of the read buffer.
    Head(request::ReqHead),
    /// Valid, for hyper.
    Handoff,
    /// Refused: answered, then closed.
    Refuse(Refusal),
    /// Closed, idle timeout or drain: nothing more to do.
    Close,
    /// The head did not arrive in time (408).
    Timeout,
}

/// What the connection knows about itself.
#[derive(Debug)]
pub(super) struct ConnCtx {
    /// The client's address.
    pub client: std::net::SocketAddr,
    /// The client's IP as text, for `X-Forwarded-For`.
    pub client_text: Box<[u8]>,
    /// `http` or `https`.
    pub proto: &'static str,
    /// Head limits.
    pub limits: Limits,
    /// The listener's header-read timeout.
    pub header_timeout: Duration,
    /// The listener's idle timeout.
    pub idle_timeout: Duration,
}

/// A client connection on the fast path.
pub(super) struct Conn<I> {
    pub io: I,
    /// Held while a request is in flight or bytes wait in the read buffer.
    pub bufs: Option<Box<Bufs>>,
    /// Filled bytes of `bufs.read`.
    pub end: usize,
    /// Filled bytes of `bufs.up`.
    pub up_end: usize,
    pub deadline: Deadline,
    stop: Pin<Box<WaitForCancellationFutureOwned>>,
    token: tokio_util::sync::CancellationToken,
    stop_registered: bool,
    /// Draining, idle waits end here ([`DRAIN_IDLE_GRACE`] after the drain began).
    drain_until: Option<Instant>,
    /// When the current request started, or the last one ended: one clock read serves the
    /// deadlines and pool checks that follow it.
    pub now: Instant,
    pub ctx: ConnCtx,
}

impl<I> std::fmt::Debug for Conn<I> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn").field("client", &self.ctx.client).field("end", &self.end).finish_non_exhaustive()
    }
}

enum Read {
    Data,
    Eof,
    Timeout,
    Stopped,
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send> Conn<I> {
    pub(super) fn new(io: I, ctx: ConnCtx, stop: tokio_util::sync::CancellationToken) -> Self {
        let deadline = Deadline::new(Instant::now() + ctx.idle_timeout);
        Self {
            io,
            bufs: None,
            end: 0,
            up_end: 0,
            deadline,
            stop: Box::pin(stop.clone().cancelled_owned()),
            token: stop,
            stop_registered: false,
            drain_until: None,
            now: Instant::now(),
            ctx,
        }
    }

    /// Whether the gateway is draining.
    pub(super) fn stopping(&self) -> bool {
        self.token.is_cancelled()
    }

    /// Waits for a whole head at the start of the read buffer.
    pub(super) async fn next_head(&mut self) -> Next {
        if self.end == 0 {
            self.deadline.arm(self.now + self.ctx.idle_timeout);
        }
        let mut header_armed = false;
        loop {
            if self.end > 0 {
                let b = self.bufs.get_or_insert_with(bufs::take);
                match request::parse(&b.read[..self.end], self.ctx.limits, &mut b.fields) {
                    Parsed::Partial => {}
                    Parsed::Head(h) => return Next::Head(h),
                    Parsed::Handoff => return Next::Handoff,
                    Parsed::Refuse(r) => return Next::Refuse(r),
                }
                if !header_armed {
                    // Only a head split across reads needs the header deadline.
                    header_armed = true;
                    self.deadline.arm_in(self.ctx.header_timeout);
                }
                let want = (self.end + 1).min(self.ctx.limits.max_head.max(bufs::READ_START));
                bufs::grow(&mut b.read, want);
            }
            match self.read_more().await {
                Ok(Read::Data) => {}
                Ok(Read::Timeout) if self.end > 0 => return Next::Timeout,
                Ok(Read::Eof | Read::Timeout | Read::Stopped) | Err(_) => return Next::Close,
            }
        }
    }

    /// One read into the free part of the read buffer. With nothing buffered, the buffers
    /// go back to the worker while the read waits, and the drain signal ends the wait.
    async fn read_more(&mut self) -> io::Result<Read> {
        poll_fn(|cx| {
            let mut b = self.bufs.take().unwrap_or_else(bufs::take);
            if self.end == b.read.len() {
                bufs::grow(&mut b.read, self.end + 1);
            }
            let mut rb = ReadBuf::new(&mut b.read[self.end..]);
            match Pin::new(&mut self.io).poll_read(cx, &mut rb) {
                Poll::Ready(Ok(())) => {
                    let n = rb.filled().len();
                    self.end += n;
                    self.bufs = Some(b);
                    return Poll::Ready(Ok(if n == 0 { Read::Eof } else { Read::Data }));
                }
                Poll::Ready(Err(e)) => {
                    bufs::give(b);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending if self.end == 0 => bufs::give(b),
                Poll::Pending => self.bufs = Some(b),
            }
            if self.deadline.poll_due(cx).is_ready() {
                return Poll::Ready(Ok(Read::Timeout));
            }
            if !self.stop_registered {
                // Polled once, the drain signal keeps this task's waker; later waits check the
                // token (one atomic load) instead of polling it again (a lock each time).
                self.stop_registered = true;
                let _ = self.stop.as_mut().poll(cx);
            }
            if self.end == 0 && self.token.is_cancelled() {
                // Draining: an idle client may be sending its next request right now, and
                // closing under it would fail that request. Wait a moment for it (it gets
                // `Connection: close`), then close.
                let until = *self.drain_until.get_or_insert_with(|| Instant::now() + DRAIN_IDLE_GRACE);
                if until < self.deadline.due() {
                    self.deadline.arm(until);
                }
                if self.deadline.poll_due(cx).is_ready() {
                    return Poll::Ready(Ok(Read::Stopped));
                }
            }
            Poll::Pending
        })
        .await
    }

    /// Drops the first `consumed` bytes of the read buffer (a served request); the buffers
    /// go back to the worker when nothing else is buffered.
    pub(super) fn consume(&mut self, consumed: usize) {
        let Some(b) = self.bufs.as_mut() else { return };
        let consumed = consumed.min(self.end);
        b.read.copy_within(consumed..self.end, 0);
        self.end -= consumed;
        if self.end == 0
            && let Some(b) = self.bufs.take()
        {
            bufs::give(b);
        }
    }

    /// The stream and the bytes read from it so far, for hyper.
    pub(super) fn into_handoff(mut self) -> (I, Vec<u8>) {
        let read = self.bufs.take().map(|b| {
            let v = b.read[..self.end].to_vec();
            bufs::give(b);
            v
        });
        (self.io, read.unwrap_or_default())
    }

    /// Answers a head refused by the recognizer (or not read in time), then the connection
    /// closes.
    pub(super) async fn refuse(&mut self, r: Option<Refusal>) {
        let (status, reason, message) = match r {
            Some(Refusal::BadRequest(why)) => (StatusCode::BAD_REQUEST, "bad_request", why),
            Some(Refusal::HeadTooLarge) => (
                StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
                "header_too_large",
                "request head over the listener's max_header_size",
            ),
            Some(Refusal::UriTooLong) => (StatusCode::URI_TOO_LONG, "uri_too_long", "request URI too long"),
            None => (StatusCode::REQUEST_TIMEOUT, "request_timeout", "the request head did not arrive in time"),
        };
        tracing::debug!(client = %self.ctx.client, status = status.as_u16(), message, "request refused");
        if self.write_local(crate::filter::reply(status, reason, message), true, false).await {
            self.linger().await;
        }
    }

    /// Half-closes and reads what the client still sends (a bounded amount, briefly), so
    /// closing with unread bytes does not reset the connection before the client read the
    /// answer (nginx's lingering close).
    async fn linger(&mut self) {
        let _ = poll_fn(|cx| Pin::new(&mut self.io).poll_shutdown(cx)).await;
        self.deadline.arm_in(Duration::from_secs(1));
        // The read buffer as scratch: a buffer in this future would be held by every connection.
        let mut b = self.bufs.take().unwrap_or_else(bufs::take);
        for _ in 0..16 {
            match timed(&mut self.deadline, read_into(&mut self.io, &mut b.read)).await {
                Some(Ok(n)) if n > 0 => {}
                _ => break,
            }
        }
        bufs::give(b);
    }

    /// Writes one of Weir's own responses (an error or a filter's answer).
    pub(super) async fn write_local(
        &mut self,
        rsp: http::Response<crate::body::GatewayBody>,
        close: bool,
        head_only: bool,
    ) -> bool {
        let (parts, mut body) = rsp.into_parts();
        let body = match &mut body {
            crate::body::GatewayBody::Full(b) => b.take().unwrap_or_default(),
            _ => bytes::Bytes::new(),
        };
        let mut head = Vec::with_capacity(256);
        super::write::map_head(&mut head, parts.status, &parts.headers, Some(body.len()), close);
        // A response to HEAD says its length but carries no body.
        let body = if head_only { &[][..] } else { &body[..] };
        self.deadline.arm_in(self.ctx.idle_timeout);
        matches!(timed(&mut self.deadline, write2(&mut self.io, &head, body)).await, Some(Ok(())))
    }

    /// Writes a [`ProxyError`] as its JSON response.
    pub(super) async fn write_error(&mut self, e: ProxyError, close: bool, head_only: bool, grpc: bool) -> (u16, bool) {
        let close = close || matches!(e, ProxyError::BadRequest(_));
        let rsp = crate::proxy::error_response(e, grpc);
        let status = rsp.status().as_u16();
        let ok = self.write_local(rsp, close, head_only).await;
        (status, ok && !close)
    }
}
