//! One request on the fast path: route → filters → attempts → relay, stated once.
//!
//! Owns: the request's pipeline on HTTP/1.1 (the same decisions as [`crate::proxy`] makes for
//! hyper: routing, `max_body_size`, the filter chain, failover and retries through
//! [`Retry`], passive health, metrics and the access log). Sending the request and relaying
//! the response are in [`super::relay`].

use std::sync::Arc;

use http::Method;
use tokio::time::Instant;

use super::conn::Conn;
use super::relay::{BodyAt, BodyError, RspRead, SendError};
use super::request::{Framing, ReqHead};
use super::response::RspHead;
use super::write::{self, Forwarding};
use crate::body::Lease;
use crate::error::ProxyError;
use crate::filter::{Effects, FilterCx, Head, LogEntry};
use crate::otel::{RequestSpan, SpanEnd, TRACEPARENT};
use crate::retry::{Retry, idempotent};
use crate::router::Route;
use crate::snapshot::Snapshot;
use crate::upstream::Endpoint;
use crate::upstream::pool::{AcquireError, RawConn};
use crate::upstream::{PickCx, Tried, Upstream};
use crate::view::{Edits, FieldSpan, Fields, RequestView, strip_port};

/// How a request ended for the connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Done {
    /// Served; this many bytes of the read buffer belonged to it.
    KeepAlive(usize),
    /// Served (or not), and the connection closes.
    Close,
    /// Not touched: hyper serves it and the rest of the connection.
    Handoff,
}

/// What a request produced: the status sent (0 when none) and what the connection does next.
#[derive(Debug, Clone, Copy)]
pub(super) struct Outcome {
    pub status: u16,
    pub done: Done,
}

/// What the request path learned about a request, for metrics and the access log.
#[derive(Debug, Default)]
pub(super) struct Trace {
    pub route: Option<Arc<Route>>,
    pub upstream: Option<Arc<str>>,
    pub endpoint: Option<Arc<str>>,
    pub consumer: Option<Arc<str>>,
    pub request_id: Option<String>,
    pub bytes_out: u64,
    /// The request's span, when sampled.
    pub span: Option<Box<RequestSpan>>,
    /// Endpoints picked.
    pub tries: u32,
}

impl Trace {
    /// Whether the access log or a span wants the upstream, endpoint and caller.
    fn wants_detail(&self, route: &Route) -> bool {
        route.chain.has_log() || self.span.is_some()
    }
}

/// How long to wait for an early answer from an upstream that stopped reading the body.
const EARLY_ANSWER: std::time::Duration = std::time::Duration::from_secs(1);

/// What one attempt leads to.
enum Step {
    /// A response to relay.
    Relay(Box<RspHead>, RawConn, Lease, Sent),
    /// Try another endpoint (counted).
    Next,
    /// Try again without counting (a stale pooled connection).
    Again,
    /// No more attempts: answer with the last error.
    Stop,
    /// Answer with this error now.
    Done(ProxyError),
}

/// How an attempt failed.
enum Failure {
    Client(BodyError),
    ClientGone,
    Timeout,
    /// Closed (or reset) before a response.
    Closed,
    Bad(String),
}

/// How much of the request went out.
#[derive(Debug, Clone, Copy)]
pub(super) struct Sent {
    /// Bytes of the read buffer the request used.
    pub consumed: usize,
    /// The whole body went out (else the connection cannot carry another request).
    pub whole: bool,
}

/// The state of a request's attempts.
struct Attempts {
    retry: Retry,
    tried: Tried,
    last_err: Option<ProxyError>,
}

/// The router's and filters' view of a head in `read`.
pub(super) fn view_of<'a>(
    read: &'a [u8],
    head: &'a ReqHead,
    fields: &'a [FieldSpan],
    edits: &'a Edits,
) -> RequestView<'a> {
    let text = |s: crate::view::Span| std::str::from_utf8(s.of(read)).unwrap_or("");
    let (path, query) = match &edits.path {
        Some(p) => match p.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (p.as_str(), None),
        },
        None => (text(head.path()), head.query().map(text)),
    };
    RequestView {
        method: &head.method,
        host: std::str::from_utf8(head.host.of(read)).ok().and_then(strip_port).filter(|h| !h.is_empty()),
        path,
        query,
        headers: Fields::Raw { head: read, fields, edits },
    }
}

/// A fast-path head as the filter chain sees and edits it.
struct FastHead<'a> {
    read: &'a [u8],
    head: &'a ReqHead,
    fields: &'a [FieldSpan],
    edits: &'a mut Edits,
}

impl Head for FastHead<'_> {
    fn view(&self) -> RequestView<'_> {
        view_of(self.read, self.head, self.fields, self.edits)
    }

    fn edit(&mut self, e: &mut Effects) {
        self.edits.apply(e);
    }
}

impl<I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send> Conn<I> {
    /// Serves the head at the start of the read buffer.
    pub(super) async fn serve_one(&mut self, snap: &Snapshot, head: &ReqHead) -> Done {
        let started = Instant::now();
        self.now = started;
        let in_flight = snap.metrics.in_flight();
        in_flight.inc();
        let mut t = Trace::default();
        let out = self.proxy(snap, head, &mut t).await;
        in_flight.dec();
        if out.done == Done::Handoff {
            return Done::Handoff;
        }
        self.now = Instant::now();
        let took = self.now - started;
        let m = t.route.as_ref().map_or(&snap.unmatched, |r| &r.metrics);
        m.record(out.status, took.as_secs_f64());
        if let Some(route) = &t.route
            && route.chain.has_log()
        {
            self.log(route, head, &t, out.status, took);
        }
        if let Some(span) = t.span.take() {
            self.end_span(span, head, &t, out.status);
        }
        out.done
    }

    async fn proxy(&mut self, snap: &Snapshot, head: &ReqHead, t: &mut Trace) -> Outcome {
        let route = {
            let b = self.bufs.as_mut().expect("buffers are held while a request is in flight");
            // The previous request's edits (pipelined on these buffers) are not this one's.
            b.edits.clear();
            snap.router.find(&view_of(&b.read, head, &b.fields, Edits::none())).cloned()
        };
        let Some(route) = route else {
            // MCP routes' OAuth metadata is served on hyper's path.
            if !snap.well_known.is_empty() {
                return Outcome { status: 0, done: Done::Handoff };
            }
            return self.fail(ProxyError::NoRoute, head).await;
        };
        t.route = Some(route.clone());
        if let (Some(limit), Framing::Length(n)) = (route.max_body_size, head.framing)
            && n > limit
        {
            return self.fail(ProxyError::PayloadTooLarge { route: route.name.clone(), limit }, head).await;
        }
        // Decided for the route, not per draw: hyper draws a split's upstream again, so a
        // per-draw handoff would skew the weights of a split that mixes protocols.
        if !route.plain_http1 {
            return Outcome { status: 0, done: Done::Handoff };
        }
        // After the handoff: hyper starts its own.
        if let Some(tracer) = &snap.tracer {
            let b = self.bufs.as_ref().expect("buffers are held while a request is in flight");
            t.span = tracer.start(&Fields::raw(&b.read, &b.fields), self.now);
        }
        let upstream = route.target.choose().clone();
        let mut fcx = FilterCx::new(self.ctx.client);
        if !route.chain.is_empty()
            && let Some(out) = Box::pin(self.run_chain(&route, head, &mut fcx)).await
        {
            return out;
        }
        let b = self.bufs.as_mut().expect("buffers are held while a request is in flight");
        if let Some(span) = &t.span {
            b.edits.set(TRACEPARENT.clone(), span.traceparent().clone());
        }
        if t.wants_detail(&route) {
            t.upstream = Some(upstream.name().clone());
            t.consumer = fcx.consumer.clone();
            let fields = Fields::Raw { head: &b.read, fields: &b.fields, edits: &b.edits };
            t.request_id = fields.get_str("x-request-id").and_then(crate::view::visible_text).map(str::to_owned);
        }
        let fwd = Forwarding { client: &self.ctx.client_text, proto: self.ctx.proto };
        write::request_head(&mut b.head, &b.read, head, &b.fields, &b.edits, fwd);
        self.attempts(&route, &upstream, head, &fcx, t).await
    }

    /// Runs the filter chain; `Some` when it answered the request itself.
    async fn run_chain(&mut self, route: &Route, head: &ReqHead, fcx: &mut FilterCx) -> Option<Outcome> {
        let b = self.bufs.as_mut().expect("buffers are held while a request is in flight");
        let mut fh = FastHead { read: &b.read, head, fields: &b.fields, edits: &mut b.edits };
        let rsp = route.chain.on_request(&mut fh, fcx).await.err()?;
        let status = rsp.status().as_u16();
        // The body was not read: the connection cannot carry another request.
        let close = head.framing != Framing::None || head.close || self.stopping();
        let ok = self.write_local(rsp, close, head.method == Method::HEAD).await;
        Some(Outcome { status, done: if ok && !close { Done::KeepAlive(head.len) } else { Done::Close } })
    }

    /// Answers with `e`; a request whose body was not read closes the connection. Boxed:
    /// errors are rare, and writing one needs more state than a whole proxied exchange, which
    /// would otherwise be held (and allocated, per request) by every exchange.
    pub(super) fn fail<'a>(
        &'a mut self,
        e: ProxyError,
        head: &'a ReqHead,
    ) -> std::pin::Pin<Box<dyn Future<Output = Outcome> + Send + 'a>> {
        Box::pin(self.fail_now(e, head))
    }

    async fn fail_now(&mut self, e: ProxyError, head: &ReqHead) -> Outcome {
        let close = head.framing != Framing::None || head.close || self.stopping();
        // gRPC clients (grpc-web over HTTP/1.1) get grpc-status, as on hyper's path.
        let grpc = self.bufs.as_ref().is_some_and(|b| {
            Fields::raw(&b.read, &b.fields)
                .get(&http::header::CONTENT_TYPE)
                .is_some_and(|v| v.starts_with(b"application/grpc"))
        });
        let (status, keep) = self.write_error(e, close, head.method == Method::HEAD, grpc).await;
        Outcome { status, done: if keep { Done::KeepAlive(head.len) } else { Done::Close } }
    }

    async fn attempts(
        &mut self,
        route: &Route,
        upstream: &Upstream,
        head: &ReqHead,
        fcx: &FilterCx,
        t: &mut Trace,
    ) -> Outcome {
        let mut body = match self.body_in_buffer(head, route.max_body_size) {
            Ok(b) => b,
            Err(e) => return self.fail(e.into_proxy_error(route), head).await,
        };
        // A request that reached an upstream is sent again only when repeating it is safe.
        let safe = idempotent(&head.method);
        let retry = Retry::new(route.attempts, safe && matches!(body, BodyAt::None))
            .replayable(safe && !matches!(body, BodyAt::Streamed(_)));
        let mut a = Attempts { retry, tried: Tried::default(), last_err: None };
        while a.retry.start() {
            let pick = {
                let b = self.bufs.as_ref().expect("buffers are held while a request is in flight");
                let headers = Fields::Raw { head: &b.read, fields: &b.fields, edits: &b.edits };
                upstream.pick(&PickCx { client_ip: self.ctx.client.ip(), headers }, a.tried)
            };
            let Some((i, ep)) = pick else { break };
            let before = a.tried;
            a.tried.add(i);
            t.tries += 1;
            if t.wants_detail(route) {
                t.endpoint = Some(ep.label().clone());
            }
            match self.attempt(route, upstream, &ep, head, &mut body, &mut a).await {
                Step::Relay(rsp, up, lease, sent) => {
                    let keep = sent.whole && !head.close && !self.stopping();
                    return self.relay(up, lease, rsp, route, fcx, sent.consumed, keep, t).await;
                }
                Step::Next => {}
                Step::Again => a.tried = before,
                Step::Stop => break,
                Step::Done(e) => return self.fail(e, head).await,
            }
        }
        let e = a.last_err.take().unwrap_or_else(|| ProxyError::NoHealthyEndpoint {
            route: route.name.clone(),
            upstream: upstream.name().clone(),
        });
        self.fail(e, head).await
    }

    /// One attempt on endpoint `ep`: a connection, the request, the response head; failures
    /// counted against the endpoint only when they are its own.
    async fn attempt(
        &mut self,
        route: &Route,
        upstream: &Upstream,
        ep: &Arc<Endpoint>,
        head: &ReqHead,
        body: &mut BodyAt,
        a: &mut Attempts,
    ) -> Step {
        let lease = Lease::new(ep.clone());
        // Dialing is boxed: it is rare, and its state would be copied with every exchange.
        let (mut up, reused) =
            match ep.pool().acquire_raw(|| Box::pin(ep.dial_tcp(upstream.connect_timeout())), self.now).await {
                Ok(c) => c,
                Err(AcquireError::Timeout) => {
                    let (route, upstream) = (route.name.clone(), upstream.name().clone());
                    a.last_err = Some(ProxyError::PoolExhausted { route, upstream });
                    return Step::Next;
                }
                Err(AcquireError::Connect(e)) => {
                    ep.record_failure(upstream.passive());
                    let (route, endpoint, reason) = (route.name.clone(), ep.label().clone(), e.to_string());
                    a.last_err = Some(ProxyError::Connect { route, endpoint, reason });
                    return Step::Next;
                }
            };
        if reused && up.is_stale() {
            // Closed by the upstream while idle (the reactor saw it): not worth a try.
            a.retry.uncount();
            return Step::Again;
        }
        // The request's start serves as the first attempt's (routing takes microseconds).
        let sent_at = if a.retry.is_first() { self.now } else { Instant::now() };
        let failure = match self.exchange_once(&mut up.stream, head, body, route, sent_at).await {
            Ok((rsp, sent)) => {
                self.now = Instant::now();
                let took = self.now - sent_at;
                ep.observe_latency(took);
                upstream.metrics().duration.observe(took.as_secs_f64());
                if rsp.status < 500 {
                    ep.record_success();
                } else {
                    ep.record_failure(upstream.passive());
                    if a.retry.retry_5xx() {
                        return Step::Next;
                    }
                }
                return Step::Relay(rsp, up, lease, sent);
            }
            Err(f) => f,
        };
        let bad = |reason: String| ProxyError::BadUpstream {
            route: route.name.clone(),
            endpoint: ep.label().clone(),
            reason,
        };
        match failure {
            Failure::Client(e) => Step::Done(e.into_proxy_error(route)),
            Failure::ClientGone => Step::Done(ProxyError::BadRequest("the client stopped sending its body")),
            Failure::Closed if reused && a.retry.stale() => Step::Again,
            Failure::Timeout => {
                ep.record_failure(upstream.passive());
                Step::Done(ProxyError::UpstreamTimeout {
                    route: route.name.clone(),
                    endpoint: ep.label().clone(),
                    after: route.timeout,
                })
            }
            Failure::Closed | Failure::Bad(_) => {
                ep.record_failure(upstream.passive());
                let why = match failure {
                    Failure::Bad(why) => why,
                    _ => "connection closed before a response".into(),
                };
                a.last_err = Some(bad(why));
                if a.retry.failed() { Step::Next } else { Step::Stop }
            }
        }
    }

    /// Sends the request on `up` and reads the final response head. When the upstream stops
    /// taking a streamed body, a response it already sent (413, 401: answered early) is
    /// still relayed.
    async fn exchange_once(
        &mut self,
        up: &mut tokio::net::TcpStream,
        head: &ReqHead,
        body: &mut BodyAt,
        route: &Route,
        sent_at: Instant,
    ) -> Result<(Box<RspHead>, Sent), Failure> {
        self.deadline.arm(sent_at + route.timeout);
        let streamed = matches!(body, BodyAt::Streamed(_));
        let sent = match self.send(up, head, body, route.max_body_size).await {
            Ok(consumed) => Sent { consumed, whole: true },
            Err(SendError::Client(e)) => return Err(Failure::Client(e)),
            Err(SendError::ClientGone) => return Err(Failure::ClientGone),
            Err(SendError::Upstream { streaming: true, .. }) => Sent { consumed: head.len, whole: false },
            Err(SendError::Upstream { error, .. }) if error.kind() == std::io::ErrorKind::TimedOut => {
                return Err(Failure::Timeout);
            }
            Err(SendError::Upstream { .. }) => return Err(Failure::Closed),
        };
        // Per attempt, from the end of the upload until response headers.
        if !sent.whole {
            self.deadline.arm_in(EARLY_ANSWER);
        } else if streamed {
            self.deadline.arm_in(route.timeout);
        }
        match self.read_response(up, head.method == Method::HEAD).await {
            RspRead::Head(h) => Ok((h, sent)),
            RspRead::Timeout if sent.whole => Err(Failure::Timeout),
            RspRead::Timeout | RspRead::Closed => Err(Failure::Closed),
            RspRead::Bad(why) => Err(Failure::Bad(why.into())),
        }
    }

    fn end_span(&self, span: Box<RequestSpan>, head: &ReqHead, t: &Trace, status: u16) {
        let read: &[u8] = self.bufs.as_ref().map_or(&[], |b| &b.read);
        span.finish(&SpanEnd {
            route: t.route.as_ref().map_or("", |r| &r.name),
            method: head.method.as_str(),
            path: std::str::from_utf8(head.path().of(read)).unwrap_or("/"),
            upstream: t.upstream.as_deref(),
            endpoint: t.endpoint.as_deref(),
            status,
            retries: t.tries.saturating_sub(1),
            client: self.ctx.client.ip(),
            mcp: None,
        });
    }

    fn log(&self, route: &Route, head: &ReqHead, t: &Trace, status: u16, took: std::time::Duration) {
        let read: &[u8] = self.bufs.as_ref().map_or(&[], |b| &b.read);
        let bytes_in = match head.framing {
            Framing::Length(n) => n,
            _ => 0,
        };
        let entry = LogEntry {
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
            route: &route.name,
            upstream: t.upstream.as_deref(),
            endpoint: t.endpoint.as_deref(),
            method: head.method.as_str(),
            path: std::str::from_utf8(head.target.of(read)).unwrap_or("/"),
            status,
            latency_ms: took.as_secs_f64() * 1e3,
            bytes_in,
            bytes_out: t.bytes_out,
            consumer: t.consumer.as_deref(),
            request_id: t.request_id.as_deref(),
            client: std::str::from_utf8(&self.ctx.client_text).unwrap_or(""),
            mcp_method: None,
            mcp_name: None,
        };
        route.chain.log(&entry);
    }
}
