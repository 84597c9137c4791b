//! Client-facing listeners: accept, TLS, HTTP/1.1 and HTTP/2 (ALPN or prior knowledge),
//! limits, drain.
//!
//! Owns: the accept loop of one listener and the connections it spawns, the per-listener
//! limits (open connections, header size, header-read and idle timeouts, HTTP/2 streams and
//! resets), and their graceful end: when the listener's token is cancelled it stops accepting,
//! asks every connection to finish its in-flight requests and close, and returns once they have.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use weir_config::spec::ListenerLimits;

use crate::h1::{self, Rewind};
use crate::io::IdleTimeout;
use crate::proxy::{self, ConnInfo, SharedSnapshot};
use crate::sniff::Sniffer;
use crate::tls::ListenerTls;

/// Per-listener HTTP settings, from `listeners[].limits`.
#[derive(Clone, Copy, Debug)]
pub struct ServeOptions {
    /// A client must send a full request head within this time (slowloris guard).
    pub header_read_timeout: Duration,
    /// Connections with no bytes moving are closed after this (up to twice this).
    pub idle_timeout: Duration,
    /// Largest request head, in bytes.
    pub max_header_size: usize,
    /// Longest request URI, in bytes.
    pub max_uri_length: usize,
    /// HTTP/2 streams per connection.
    pub max_concurrent_streams: u32,
    /// Open connections per listener.
    pub max_connections: usize,
}

impl Default for ServeOptions {
    fn default() -> Self {
        Self::from_limits(&ListenerLimits::default())
    }
}

impl ServeOptions {
    /// From a listener's configured limits.
    pub fn from_limits(l: &ListenerLimits) -> Self {
        Self {
            header_read_timeout: l.header_read_timeout.get(),
            idle_timeout: l.idle_timeout.get(),
            max_header_size: usize::try_from(l.max_header_size.get()).unwrap_or(usize::MAX),
            max_uri_length: usize::try_from(l.max_uri_length.get()).unwrap_or(usize::MAX),
            max_concurrent_streams: l.max_concurrent_streams,
            max_connections: l.max_connections as usize,
        }
    }
}

/// Everything one listener's accept loops share.
#[derive(Debug)]
pub struct ListenerCtx {
    /// The listener's name.
    pub name: Arc<str>,
    /// Its limits.
    pub opts: ServeOptions,
    /// TLS, when the listener terminates it.
    pub tls: Option<ListenerTls>,
    /// Open-connection permits, shared by the listener's accept loops on every worker.
    pub permits: Arc<Semaphore>,
    /// HTTP/1.1 + HTTP/2 connection settings.
    builder: auto::Builder<TokioExecutor>,
}

impl ListenerCtx {
    /// A listener context with its connection builder configured from `opts`.
    pub fn new(name: Arc<str>, opts: ServeOptions, tls: Option<ListenerTls>) -> Self {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(opts.header_read_timeout)
            // hyper's minimum read buffer is 8 KiB.
            .max_buf_size(opts.max_header_size.max(8192))
            .keep_alive(true);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(opts.max_concurrent_streams)
            // Rapid reset (CVE-2023-44487): a client that keeps resetting streams gets GOAWAY.
            .max_pending_accept_reset_streams(Some(64))
            .max_local_error_reset_streams(Some(256))
            .max_header_list_size(u32::try_from(opts.max_header_size).unwrap_or(u32::MAX))
            .keep_alive_interval(Some(Duration::from_secs(30)))
            .keep_alive_timeout(Duration::from_secs(10));
        Self { permits: Arc::new(Semaphore::new(opts.max_connections)), name, opts, tls, builder }
    }
}

/// Accepts on `listener` until `stop` is cancelled, then drains its connections.
pub async fn serve(listener: TcpListener, ctx: Arc<ListenerCtx>, state: SharedSnapshot, stop: CancellationToken) {
    let conns = TaskTracker::new();
    loop {
        // At the connection cap, stop accepting: new clients wait in the kernel's queue.
        let permit = tokio::select! {
            () = stop.cancelled() => break,
            p = ctx.permits.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let accepted = tokio::select! {
            () = stop.cancelled() => break,
            a = listener.accept() => a,
        };
        let (stream, client) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning; the listener stays up.
                tracing::warn!(listener = %ctx.name, error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let (ctx, state, stop) = (ctx.clone(), state.clone(), stop.clone());
        // Plain and TLS connections are separate tasks: a plain connection's future does not
        // carry room for a TLS session it never has (it is what an idle client costs).
        if ctx.tls.is_none() {
            conns.spawn(async move {
                let _permit = permit;
                serve_conn(stream, client, "http", &ctx, state, stop, false).await;
            });
        } else {
            conns.spawn(async move {
                let _permit = permit;
                serve_tls(stream, client, &ctx, state, stop).await;
            });
        }
    }
    drop(listener);
    tracing::info!(listener = %ctx.name, "listener closed; draining connections");
    conns.close();
    conns.wait().await;
}

/// Completes the TLS handshake (within the header-read timeout), then serves the connection.
async fn serve_tls(
    stream: TcpStream,
    client: SocketAddr,
    ctx: &ListenerCtx,
    state: SharedSnapshot,
    stop: CancellationToken,
) {
    let Some(tls) = &ctx.tls else { return };
    let handshake = tokio::time::timeout(ctx.opts.header_read_timeout, tls.acceptor.accept(stream));
    match handshake.await {
        Ok(Ok(s)) => {
            let h2 = s.get_ref().1.alpn_protocol() == Some(b"h2");
            serve_conn(s, client, "https", ctx, state, stop, h2).await;
        }
        Ok(Err(e)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%client, "TLS handshake timed out"),
    }
}

/// Serves one connection: HTTP/1.1 on the fast path ([`h1`]) until a request needs hyper,
/// then hyper for the rest of it (HTTP/2 from the start when ALPN chose it).
async fn serve_conn<I>(
    io: I,
    client: SocketAddr,
    proto: &'static str,
    ctx: &ListenerCtx,
    state: SharedSnapshot,
    stop: CancellationToken,
    h2: bool,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let io = if h2 {
        Rewind::new(io, Vec::new())
    } else {
        match h1::serve(io, client, proto, &ctx.opts, &state, stop.clone()).await {
            Some((io, read)) => Rewind::new(io, read),
            None => return,
        }
    };
    // Boxed: hyper's connection state is large and, after the fast path, rare.
    Box::pin(serve_hyper(io, client, proto, ctx, state, stop)).await;
}

async fn serve_hyper<I>(
    io: I,
    client: SocketAddr,
    proto: &'static str,
    ctx: &ListenerCtx,
    state: SharedSnapshot,
    stop: CancellationToken,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The guard follows HTTP/1.1 framing of what hyper reads (requests the fast path handed
    // over); HTTP/2 turns it off at the preface.
    let (io, verdicts) = Sniffer::new(io, ctx.opts.max_header_size);
    let info = ConnInfo::new(client, proto, ctx.opts.max_uri_length, Some(verdicts));
    let svc = service_fn(move |req| {
        // One atomic load per request; the snapshot lives until the response is built.
        let snap = state.load_full();
        let info = info.clone();
        async move { Ok::<_, Infallible>(proxy::handle(snap, info, req).await) }
    });
    let io = TokioIo::new(IdleTimeout::new(io, ctx.opts.idle_timeout));
    let conn = ctx.builder.serve_connection_with_upgrades(io, svc);
    let mut conn = std::pin::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        () = stop.cancelled() => {
            // Finish the requests in flight, then close instead of keeping alive.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = result {
        tracing::debug!(%client, error = %e, "connection closed with error");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What an idle plain keep-alive client costs is mostly this future (its buffers go back
    /// to the worker while it waits): keep rare, large states (hyper, an exchange) boxed.
    #[tokio::test]
    async fn a_plain_connection_future_stays_small() {
        let ctx = ListenerCtx::new("t".into(), ServeOptions::default(), None);
        let state = SharedSnapshot::default();
        let (io, _peer) = tokio::io::duplex(64);
        let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let fut = serve_conn(io, client, "http", &ctx, state, CancellationToken::new(), false);
        let size = std::mem::size_of_val(&fut);
        eprintln!("plain connection future: {size} bytes");
        assert!(size <= 1024, "the connection future grew to {size} bytes: box the new large state");
    }
}
