//! The HTTP/1.1 fast path: requests parsed in place, proxied over per-worker upstream
//! connections, without building a `HeaderMap`, a channel hop or a timer per request.
//!
//! Written by hand rather than with hyper because hyper's per-message costs (a `HeaderMap`
//! with a refcounted value per header, the client's dispatch channel and task hop, a boxed
//! timer per head) are most of a proxy's user-space time, and no crate offers an in-place
//! proxy; httparse does the parsing. One task per client connection owns its exchanges:
//! heads are spans of the connection's buffer ([`request`]), the upstream head is written in
//! one pass ([`write`]), bodies pass through with their framing checked ([`chunked`],
//! [`relay`]).
//!
//! What the recognizer does not fully understand goes to hyper with the bytes already read
//! replayed ([`Rewind`]): HTTP/2 prior knowledge, upgrades (WebSocket), `Expect`, HTTP/1.0,
//! absolute-form, and routes to HTTP/2 or TLS upstreams. Ambiguous framing is refused (400).

mod bufs;
pub mod chunked;
mod conn;
mod exchange;
mod relay;
pub mod request;
pub mod response;
mod rewind;
pub mod write;

use std::net::SocketAddr;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::sync::CancellationToken;

pub use rewind::Rewind;

use crate::proxy::SharedSnapshot;
use crate::server::ServeOptions;
use conn::{Conn, ConnCtx, Next};
use exchange::Done;
use request::Limits;

/// Serves HTTP/1.1 requests on `io` until the client closes, a request needs hyper, or
/// `stop` drains the connection. Returns the stream and the bytes read but not served when
/// hyper should take over.
pub async fn serve<I>(
    io: I,
    client: SocketAddr,
    proto: &'static str,
    opts: &ServeOptions,
    state: &SharedSnapshot,
    stop: CancellationToken,
) -> Option<(I, Vec<u8>)>
where
    I: AsyncRead + AsyncWrite + Unpin + Send,
{
    let ctx = ConnCtx {
        client,
        client_text: client.ip().to_string().into_bytes().into_boxed_slice(),
        proto,
        limits: Limits { max_head: opts.max_header_size, max_uri: opts.max_uri_length },
        header_timeout: opts.header_read_timeout,
        idle_timeout: opts.idle_timeout,
    };
    let mut conn = Conn::new(io, ctx, stop);
    loop {
        let head = match conn.next_head().await {
            Next::Head(h) => h,
            Next::Handoff => return Some(conn.into_handoff()),
            // Refusals are boxed: rare, and an answer's state would be held by every connection.
            Next::Refuse(r) => {
                Box::pin(conn.refuse(Some(r))).await;
                return None;
            }
            Next::Timeout => {
                Box::pin(conn.refuse(None)).await;
                return None;
            }
            Next::Close => return None,
        };
        let snap = state.load_full();
        // Boxed: an exchange's state is several KiB; inline, every idle keep-alive connection
        // would hold it too. One allocation per request buys idle connections that cost
        // about what nginx's do.
        match Box::pin(conn.serve_one(&snap, &head)).await {
            Done::KeepAlive(consumed) => conn.consume(consumed),
            Done::Close => return None,
            Done::Handoff => return Some(conn.into_handoff()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One exchange's state is boxed per request (so idle connections do not hold it), and
    /// boxing copies it: keep it small.
    #[tokio::test]
    async fn an_exchange_future_stays_small() {
        let opts = ServeOptions::default();
        let limits = Limits { max_head: opts.max_header_size, max_uri: opts.max_uri_length };
        let client: SocketAddr = "127.0.0.1:1".parse().unwrap();
        let ctx = ConnCtx {
            client,
            client_text: Box::new(*b"127.0.0.1"),
            proto: "http",
            limits,
            header_timeout: opts.header_read_timeout,
            idle_timeout: opts.idle_timeout,
        };
        let (io, _peer) = tokio::io::duplex(64);
        let mut conn = Conn::new(io, ctx, CancellationToken::new());
        let raw = b"GET / HTTP/1.1\r\nHost: a\r\n\r\n";
        let request::Parsed::Head(head) = request::parse(raw, limits, &mut Vec::new()) else { panic!() };
        let snap = crate::snapshot::Snapshot::default();
        let size = std::mem::size_of_val(&conn.serve_one(&snap, &head));
        eprintln!("exchange future: {size} bytes");
        // 1,472 bytes in a debug build (1,936 before errors and streamed bodies were boxed).
        assert!(size <= 1600, "the exchange future grew to {size} bytes: box the new rare state");
    }
}
