//! Moving bytes on the fast path: the request (head and body) to the upstream, the response
//! head back, and the response body to the client.
//!
//! Owns: body framing as it passes (a `Content-Length` counted, chunked framing validated by
//! [`Chunked`]), one write per direction when the bytes are all there (head and body in one
//! vectored write), and the reuse rule of an upstream connection: only after a fully
//! delimited, fully read response with nothing after it, and no `Connection: close`.
//!
//! Request bodies are forwarded before the response is read, as nginx does by default: an
//! upstream that answers early and then stops reading is seen when it closes.

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

use super::bufs;
use super::chunked::{ChunkError, Chunked};
use super::conn::{Conn, read_into, timed, write2};
use super::exchange::{Done, Outcome, Trace};
use super::request::{Framing, ReqHead};
use super::response::{self, RspHead, RspParsed};
use super::write;
use crate::body::Lease;
use crate::error::ProxyError;
use crate::filter::FilterCx;
use crate::router::Route;
use crate::upstream::pool::RawConn;
use crate::view::Edits;

/// Largest upstream response head.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;

/// Where the request body is.
#[derive(Debug)]
pub(super) enum BodyAt {
    /// There is none.
    None,
    /// All of it is in the read buffer, right after the head: this many bytes.
    Buffered(usize),
    /// Part of it is; the rest is read while sending.
    Streamed(Rest),
}

/// What remains of a streamed body.
#[derive(Debug, Clone, Copy)]
pub(super) enum Rest {
    /// This many bytes.
    Length(u64),
    /// Chunked, followed this far.
    Chunked(Chunked),
}

/// Why the client's body cannot be forwarded: the client's fault, never the upstream's.
#[derive(Debug)]
pub(super) enum BodyError {
    /// Malformed chunked framing (400).
    Chunk(ChunkError),
    /// Over `max_body_size` (413).
    TooLarge(u64),
}

impl BodyError {
    pub(super) fn into_proxy_error(self, route: &Route) -> ProxyError {
        match self {
            Self::Chunk(e) => ProxyError::BadRequest(e.0),
            Self::TooLarge(limit) => ProxyError::PayloadTooLarge { route: route.name.clone(), limit },
        }
    }
}

/// Why sending failed.
#[derive(Debug)]
pub(super) enum SendError {
    /// The client's body is malformed or too large.
    Client(BodyError),
    /// The client went away or stalled mid-body.
    ClientGone,
    /// Writing to the upstream failed (`streaming`: after part of the body went out).
    Upstream {
        /// What the write said.
        error: std::io::Error,
        /// Part of a streamed body was sent.
        streaming: bool,
    },
}

/// What reading the response head ended with.
#[derive(Debug)]
pub(super) enum RspRead {
    Head(Box<RspHead>),
    Timeout,
    /// Closed before a byte of response.
    Closed,
    Bad(&'static str),
}

fn over(chunked: &Chunked, limit: Option<u64>) -> Result<(), BodyError> {
    match limit {
        Some(l) if chunked.data_len() > l => Err(BodyError::TooLarge(l)),
        _ => Ok(()),
    }
}

impl<I: AsyncRead + AsyncWrite + Unpin + Send> Conn<I> {
    fn b(&mut self) -> &mut bufs::Bufs {
        self.bufs.as_mut().expect("buffers are held while a request is in flight")
    }

    /// Finds how much of the body is in the read buffer, validating chunked framing.
    pub(super) fn body_in_buffer(&mut self, head: &ReqHead, limit: Option<u64>) -> Result<BodyAt, BodyError> {
        let end = self.end;
        let after = &self.b().read[head.len..end];
        match head.framing {
            Framing::None => Ok(BodyAt::None),
            Framing::Length(n) if after.len() as u64 >= n => Ok(BodyAt::Buffered(n as usize)),
            Framing::Length(n) => Ok(BodyAt::Streamed(Rest::Length(n - after.len() as u64))),
            Framing::Chunked => {
                let mut c = Chunked::default();
                let used = c.feed(after).map_err(BodyError::Chunk)?;
                over(&c, limit)?;
                Ok(if c.is_done() { BodyAt::Buffered(used) } else { BodyAt::Streamed(Rest::Chunked(c)) })
            }
        }
    }

    /// Sends the upstream head (in the head buffer) and the body; returns how many bytes of
    /// the read buffer the request used.
    pub(super) async fn send(
        &mut self,
        up: &mut TcpStream,
        head: &ReqHead,
        body: &mut BodyAt,
        limit: Option<u64>,
    ) -> Result<usize, SendError> {
        let end = self.end;
        let Conn { bufs, deadline, .. } = self;
        let b = bufs.as_mut().expect("buffers are held while a request is in flight");
        let (first, consumed) = match body {
            BodyAt::None => (&[][..], head.len),
            BodyAt::Buffered(n) => (&b.read[head.len..head.len + *n], head.len + *n),
            BodyAt::Streamed(_) => (&b.read[head.len..end], head.len),
        };
        match timed(deadline, write2(up, &b.head, first)).await {
            Some(Ok(())) => {}
            Some(Err(error)) => return Err(SendError::Upstream { error, streaming: false }),
            None => return Err(SendError::Upstream { error: std::io::ErrorKind::TimedOut.into(), streaming: false }),
        }
        if let BodyAt::Streamed(rest) = body {
            let rest = *rest;
            // Sent once: a failure from here on is not retried.
            *body = BodyAt::Buffered(0);
            // Boxed: a streamed body is the rarer case, and its state would otherwise be
            // allocated with every exchange (see `an_exchange_future_stays_small`).
            Box::pin(self.pump(up, head.len, rest, limit)).await?;
        }
        Ok(consumed)
    }

    /// Streams the rest of the body from the client to the upstream; what the client sent
    /// after it stays in the read buffer, right after the head.
    async fn pump(
        &mut self,
        up: &mut TcpStream,
        at: usize,
        mut rest: Rest,
        limit: Option<u64>,
    ) -> Result<(), SendError> {
        let idle = self.ctx.idle_timeout;
        let Conn { io, bufs, deadline, end, .. } = self;
        let b = bufs.as_mut().expect("buffers are held while a request is in flight");
        bufs::grow(&mut b.read, at + bufs::STREAM);
        loop {
            deadline.arm_in(idle);
            let n = match timed(deadline, read_into(io, &mut b.read[at..])).await {
                Some(Ok(0) | Err(_)) | None => return Err(SendError::ClientGone),
                Some(Ok(n)) => n,
            };
            let chunk = &b.read[at..at + n];
            let (take, done) = match &mut rest {
                Rest::Length(left) => {
                    let take = (*left).min(n as u64) as usize;
                    *left -= take as u64;
                    (take, *left == 0)
                }
                Rest::Chunked(c) => {
                    let used = c.feed(chunk).map_err(|e| SendError::Client(BodyError::Chunk(e)))?;
                    over(c, limit).map_err(SendError::Client)?;
                    (used, c.is_done())
                }
            };
            match timed(deadline, write2(up, &chunk[..take], &[])).await {
                Some(Ok(())) => {}
                Some(Err(error)) => return Err(SendError::Upstream { error, streaming: true }),
                None => {
                    let error = std::io::ErrorKind::TimedOut.into();
                    return Err(SendError::Upstream { error, streaming: true });
                }
            }
            if done {
                b.read.copy_within(at + take..at + n, at);
                *end = at + n - take;
                return Ok(());
            }
        }
    }

    /// Reads the final response head into the upstream buffer, skipping 1xx.
    pub(super) async fn read_response(&mut self, up: &mut TcpStream, bodiless: bool) -> RspRead {
        let Conn { bufs, deadline, up_end, .. } = self;
        let b = bufs.as_mut().expect("buffers are held while a request is in flight");
        *up_end = 0;
        let mut seen = false;
        loop {
            if *up_end == b.up.len() {
                if b.up.len() >= MAX_RESPONSE_HEAD {
                    return RspRead::Bad("response head too large");
                }
                bufs::grow(&mut b.up, *up_end + 1);
            }
            let n = match timed(deadline, read_into(up, &mut b.up[*up_end..])).await {
                None => return RspRead::Timeout,
                Some(Ok(0) | Err(_)) if !seen => return RspRead::Closed,
                Some(Ok(0) | Err(_)) => return RspRead::Bad("connection closed inside the response head"),
                Some(Ok(n)) => n,
            };
            seen = true;
            *up_end += n;
            loop {
                match response::parse(&b.up[..*up_end], bodiless, MAX_RESPONSE_HEAD, &mut b.up_fields) {
                    Err(why) => return RspRead::Bad(why),
                    Ok(RspParsed::Partial) => break,
                    Ok(RspParsed::Interim(k)) => {
                        b.up.copy_within(k..*up_end, 0);
                        *up_end -= k;
                    }
                    Ok(RspParsed::Head(h)) => return RspRead::Head(Box::new(h)),
                }
            }
        }
    }

    /// Writes the response head and streams the body to the client; the upstream connection
    /// goes back to the pool if the exchange ended cleanly.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn relay(
        &mut self,
        mut up: RawConn,
        lease: Lease,
        rsp: Box<RspHead>,
        route: &Route,
        fcx: &FilterCx,
        consumed: usize,
        keep: bool,
        t: &mut Trace,
    ) -> Outcome {
        let close = !keep || rsp.until_close;
        self.response_head(&rsp, route, fcx, close);
        let (done, clean) = self.stream_body(&mut up.stream, &rsp).await;
        t.bytes_out = match rsp.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        if clean && !rsp.close {
            lease.endpoint().pool().put_raw(up, self.now);
        }
        drop(lease);
        let done = if done && !close { Done::KeepAlive(consumed) } else { Done::Close };
        Outcome { status: rsp.status, done }
    }

    /// The client's response head, in the head buffer.
    fn response_head(&mut self, rsp: &RspHead, route: &Route, fcx: &FilterCx, close: bool) {
        let b = self.b();
        if !route.chain.edits_responses() {
            write::response_head(&mut b.head, &b.up, rsp, &b.up_fields, &fcx.response, Edits::none(), close);
            return;
        }
        let status = http::StatusCode::from_u16(rsp.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        // One plugin package alone reads the fields where they lie and answers with edits.
        let each = |f: &mut dyn FnMut(&[u8], &[u8])| write::each_forwarded(&b.up, rsp, &b.up_fields, f);
        if let Some(edits) = route.chain.plugin_response_edits(status, each, fcx) {
            write::response_head(&mut b.head, &b.up, rsp, &b.up_fields, &fcx.response, &edits, close);
            return;
        }
        let mut map = write::response_map(&b.up, rsp, &b.up_fields);
        route.chain.on_response(status, &mut map, fcx);
        write::map_head(&mut b.head, status, &map, None, close);
    }

    /// Streams the response body after its head; returns whether the client got all of it
    /// and whether the upstream connection is clean for reuse.
    async fn stream_body(&mut self, up: &mut TcpStream, rsp: &RspHead) -> (bool, bool) {
        let idle = self.ctx.idle_timeout;
        let Conn { io, bufs, deadline, up_end, now, .. } = self;
        let b = bufs.as_mut().expect("buffers are held while a request is in flight");
        let mut chunked = Chunked::default();
        let mut left = match rsp.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        // Returns (bytes to forward, body complete, bytes after the body).
        let mut frame = |data: &[u8], left: &mut u64| -> Result<(usize, bool, bool), ChunkError> {
            match rsp.framing {
                _ if rsp.until_close => Ok((data.len(), false, false)),
                Framing::None => Ok((0, true, !data.is_empty())),
                Framing::Length(_) => {
                    let take = (*left).min(data.len() as u64) as usize;
                    *left -= take as u64;
                    Ok((take, *left == 0, data.len() > take))
                }
                Framing::Chunked => {
                    let used = chunked.feed(data)?;
                    Ok((used, chunked.is_done(), chunked.is_done() && used < data.len()))
                }
            }
        };
        let first = &b.up[rsp.len..*up_end];
        let Ok((take, mut complete, mut extra)) = frame(first, &mut left) else { return (false, false) };
        deadline.arm(*now + idle);
        if !matches!(timed(deadline, write2(io, &b.head, &first[..take])).await, Some(Ok(()))) {
            return (false, false);
        }
        if !complete {
            bufs::grow(&mut b.up, bufs::STREAM);
        }
        while !complete {
            deadline.arm_in(idle);
            let n = match timed(deadline, read_into(up, &mut b.up[..])).await {
                Some(Ok(0)) if rsp.until_close => return (true, false),
                Some(Ok(0) | Err(_)) | None => return (false, false),
                Some(Ok(n)) => n,
            };
            let data = &b.up[..n];
            let Ok((take, c, e)) = frame(data, &mut left) else { return (false, false) };
            (complete, extra) = (c, e);
            if !matches!(timed(deadline, write2(io, &data[..take], &[])).await, Some(Ok(()))) {
                return (false, false);
            }
        }
        (true, !extra)
    }
}
