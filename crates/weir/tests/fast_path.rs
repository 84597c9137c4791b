//! The HTTP/1.1 fast path over raw sockets, end to end through the real binary.
//!
//! Upstream response edge cases against a scripted raw upstream: `Content-Length` together with
//! `Transfer-Encoding: chunked` (502), a body cut short by a close (never a complete response),
//! `100 Continue` before the final response, and stray bytes after a `204` or `304` (the client
//! gets the bodiless response, and the next request is served from a new upstream connection,
//! while a well-formed response's connection is reused). Against a raw recording upstream:
//! pipelining (five requests in one write, answered in order), 10,000 requests on one keep-alive
//! connection over at most two upstream connections, malformed chunked bodies answered 400 (not
//! 502) without ejecting the endpoint, and the header-read timeout answered 408 before closing.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw_http::{Cut, Rsp, Step, TIMEOUT, dechunk, expect_closed, find, read_response, send, text};
use common::{Weir, dead_port, get, upstream_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// One listener, one route `all` to the upstream `app` on `port`; `upstream_extra` goes under
/// the upstream (4-space indented lines), `listener_extra` inside the listener's flow map.
fn gateway_yaml(port: u16, upstream_extra: &str, listener_extra: &str) -> String {
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: public, address: 127.0.0.1:0{listener_extra} }}\nroutes:\n  - {{ name: all, upstream: app }}\nupstreams:\n{}",
        upstream_yaml("app", "round_robin", &[(port, 1)], upstream_extra)
    )
}

// ---------------------------------------------------------------------------------------------
// The recording upstream.

#[derive(Default)]
struct Log {
    /// Every byte received, on all connections, in arrival order.
    bytes: Mutex<Vec<u8>>,
    /// The path of every complete request, in the order they were answered.
    paths: Mutex<Vec<String>>,
    requests: AtomicUsize,
    conns: AtomicUsize,
}

/// A raw TCP upstream on 127.0.0.1:0: records every byte it receives and answers each complete
/// request (head + `Content-Length` or chunked body) with `200` and the request's path as body.
struct Recorder {
    port: u16,
    log: Arc<Log>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    async fn start() -> Recorder {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let log = Arc::new(Log::default());
        let l = log.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((s, _)) = listener.accept().await else { continue };
                l.conns.fetch_add(1, SeqCst);
                tokio::spawn(record(s, l.clone()));
            }
        });
        Recorder { port, log, task }
    }

    fn bytes(&self) -> Vec<u8> {
        self.log.bytes.lock().unwrap().clone()
    }

    fn paths(&self) -> Vec<String> {
        self.log.paths.lock().unwrap().clone()
    }

    fn requests(&self) -> usize {
        self.log.requests.load(SeqCst)
    }

    fn conns(&self) -> usize {
        self.log.conns.load(SeqCst)
    }
}

/// Serves one upstream connection: records its bytes and answers each complete request. Once
/// the bytes stop parsing as HTTP/1.1 it keeps recording but answers nothing more.
async fn record(mut s: TcpStream, log: Arc<Log>) {
    let mut pending = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut lost = false;
    loop {
        let n = s.read(&mut buf).await.unwrap_or(0);
        if n == 0 {
            return;
        }
        log.bytes.lock().unwrap().extend_from_slice(&buf[..n]);
        if lost {
            continue;
        }
        pending.extend_from_slice(&buf[..n]);
        loop {
            match parse_request(&pending) {
                Step::Partial => break,
                Step::Invalid => {
                    lost = true;
                    break;
                }
                Step::Done((path, used)) => {
                    pending.drain(..used);
                    let rsp = format!("HTTP/1.1 200 OK\r\nContent-Length: {}\r\n\r\n{path}", path.len());
                    // Recorded before answering: a client holding the response sees it here.
                    log.paths.lock().unwrap().push(path);
                    log.requests.fetch_add(1, SeqCst);
                    if s.write_all(rsp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Parses one complete request at the start of `buf`: its path, and the bytes it took.
fn parse_request(buf: &[u8]) -> Step<(String, usize)> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Step::Partial,
        Err(_) => return Step::Invalid,
    };
    let (mut chunked, mut length) = (false, 0usize);
    for h in req.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value.to_ascii_lowercase().contains("chunked");
        } else if h.name.eq_ignore_ascii_case("content-length") {
            let Ok(n) = value.trim().parse::<usize>() else { return Step::Invalid };
            length = n;
        }
    }
    let rest = &buf[head_len..];
    let used = if chunked {
        match dechunk(rest) {
            Step::Done((_, used)) => used,
            Step::Partial => return Step::Partial,
            Step::Invalid => return Step::Invalid,
        }
    } else if rest.len() < length {
        return Step::Partial;
    } else {
        length
    };
    Step::Done((req.path.unwrap_or_default().to_owned(), head_len + used))
}

// ---------------------------------------------------------------------------------------------
// The scripted upstream.

/// A raw TCP upstream for response edge cases: on its `i`-th connection it reads request heads
/// (these tests send no request bodies) and answers each with the raw bytes `responses[i]`
/// (the last entry for later connections), closing right after the answer if `close`.
struct Scripted {
    port: u16,
    /// Connections accepted.
    conns: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Scripted {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn scripted(responses: &[&'static [u8]], close: bool) -> Scripted {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let conns = Arc::new(AtomicUsize::new(0));
    let (c, responses) = (conns.clone(), responses.to_vec());
    let task = tokio::spawn(async move {
        loop {
            let Ok((s, _)) = listener.accept().await else { continue };
            let i = c.fetch_add(1, SeqCst);
            tokio::spawn(answer_heads(s, responses[i.min(responses.len() - 1)], close));
        }
    });
    Scripted { port, conns, task }
}

async fn answer_heads(mut s: TcpStream, rsp: &'static [u8], close: bool) {
    let mut buf = Vec::new();
    loop {
        let end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            buf.reserve(4096);
            if s.read_buf(&mut buf).await.unwrap_or(0) == 0 {
                return;
            }
        };
        buf.drain(..end);
        if s.write_all(rsp).await.is_err() {
            return;
        }
        if close {
            let _ = s.shutdown().await;
            return;
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The raw client.

/// Writes `request` on `s` and reads its response, failing the test if none comes.
async fn exchange(s: &mut TcpStream, buf: &mut Vec<u8>, request: &str) -> Rsp {
    s.write_all(request.as_bytes()).await.unwrap();
    read_response(s, buf).await.unwrap_or_else(|e| panic!("{request:?}: no response: {e:?}"))
}

// ---------------------------------------------------------------------------------------------
// Upstream response edge cases.

const FRESH: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nfresh";
const LENGTH_AND_CHUNKED: &[u8] =
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
const CUT_SHORT: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nshort";
const CONTINUE_THEN_OK: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello";
const NO_CONTENT_THEN_STRAY: &[u8] =
    b"HTTP/1.1 204 No Content\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison";
const NOT_MODIFIED_THEN_STRAY: &[u8] =
    b"HTTP/1.1 304 Not Modified\r\nETag: \"v1\"\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\npoison";
const GET_ONE: &str = "GET /one HTTP/1.1\r\nHost: x\r\n\r\n";
const GET_TWO: &str = "GET /two HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test]
async fn upstream_response_with_content_length_and_chunked_is_502() {
    let up = scripted(&[LENGTH_AND_CHUNKED], false).await;
    let weir = Weir::start(&gateway_yaml(up.port, "", ""));
    let (mut s, mut buf) = send(weir.addr, b"").await;
    let rsp = exchange(&mut s, &mut buf, GET_ONE).await;
    assert_eq!(rsp.status, 502, "{}{}", rsp.head, rsp.body);
}

#[tokio::test]
async fn upstream_body_cut_short_never_reaches_the_client_as_complete() {
    let up = scripted(&[CUT_SHORT], true).await;
    let weir = Weir::start(&gateway_yaml(up.port, "", ""));
    let (mut s, mut buf) = send(weir.addr, GET_ONE.as_bytes()).await;
    match read_response(&mut s, &mut buf).await {
        // Either Weir noticed before answering...
        Ok(rsp) => assert_eq!(rsp.status, 502, "a complete response for a truncated body: {}{:?}", rsp.head, rsp.body),
        // ...or it had sent the head already, and closes before the declared length.
        Err((Cut::Closed, _)) => {}
        Err((cut, got)) => panic!("neither a 502 nor a close ({cut:?}): {got:?}"),
    }
}

#[tokio::test]
async fn interim_100_continue_is_followed_by_the_final_response() {
    let up = scripted(&[CONTINUE_THEN_OK], false).await;
    let weir = Weir::start(&gateway_yaml(up.port, "", ""));
    let (mut s, mut buf) = send(weir.addr, b"").await;
    let rsp = exchange(&mut s, &mut buf, GET_ONE).await;
    assert_eq!((rsp.status, rsp.body.as_str()), (200, "hello"), "{}", rsp.head);
    assert!(buf.is_empty(), "bytes past the final response: {:?}", text(&buf));
}

/// The first upstream connection answers `bad` (a bodiless status followed by a whole stray
/// response); later ones answer `fresh`. The client must get the bodiless status, and its next
/// request must be served by a new upstream connection, never by the stray bytes.
async fn stray_bytes_after_a_bodiless_status(bad: &'static [u8], first: &str, status: u16) {
    let up = scripted(&[bad, FRESH], false).await;
    let weir = Weir::start(&gateway_yaml(up.port, "", ""));
    let (mut s, mut buf) = send(weir.addr, b"").await;
    let rsp = exchange(&mut s, &mut buf, first).await;
    assert_eq!((rsp.status, rsp.body.as_str()), (status, ""), "{}", rsp.head);
    let rsp = exchange(&mut s, &mut buf, GET_TWO).await;
    assert_eq!(
        (rsp.status, rsp.body.as_str()),
        (200, "fresh"),
        "stray upstream bytes served as a response: {}",
        rsp.head
    );
    assert!(buf.is_empty(), "bytes past the second response: {:?}", text(&buf));
    let conns = up.conns.load(SeqCst);
    assert!(conns >= 2, "the upstream connection with stray bytes was reused (only {conns} upstream connection)");
}

#[tokio::test]
async fn stray_bytes_after_204_are_dropped_with_the_upstream_connection() {
    stray_bytes_after_a_bodiless_status(NO_CONTENT_THEN_STRAY, "DELETE /one HTTP/1.1\r\nHost: x\r\n\r\n", 204).await;
}

#[tokio::test]
async fn stray_bytes_after_304_are_dropped_with_the_upstream_connection() {
    stray_bytes_after_a_bodiless_status(
        NOT_MODIFIED_THEN_STRAY,
        "GET /one HTTP/1.1\r\nHost: x\r\nIf-None-Match: \"v1\"\r\n\r\n",
        304,
    )
    .await;
}

#[tokio::test]
async fn well_formed_responses_reuse_the_upstream_connection() {
    let up = scripted(&[FRESH], false).await;
    let weir = Weir::start(&gateway_yaml(up.port, "", ""));
    let (mut s, mut buf) = send(weir.addr, b"").await;
    for (i, request) in [GET_ONE, GET_TWO].into_iter().enumerate() {
        let rsp = exchange(&mut s, &mut buf, request).await;
        assert_eq!((rsp.status, rsp.body.as_str()), (200, "fresh"), "request {i}: {}", rsp.head);
        // Lets Weir put the connection back in its pool before the next request.
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(up.conns.load(SeqCst), 1, "a well-formed response's upstream connection was not reused");
}

// ---------------------------------------------------------------------------------------------
// Pipelining and keep-alive.

#[tokio::test]
async fn pipelined_requests_are_answered_in_order() {
    let up = Recorder::start().await;
    let weir = Weir::start(&gateway_yaml(up.port, "", ""));
    let burst: String = (1..=5).map(|i| format!("GET /p{i} HTTP/1.1\r\nHost: x\r\n\r\n")).collect();
    let (mut s, mut buf) = send(weir.addr, burst.as_bytes()).await;
    let mut bodies = Vec::new();
    for _ in 0..5 {
        let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("after {bodies:?}: {e:?}"));
        assert_eq!(rsp.status, 200, "after {bodies:?}: {}", rsp.head);
        bodies.push(rsp.body);
    }
    assert_eq!(bodies, ["/p1", "/p2", "/p3", "/p4", "/p5"], "responses out of order");
    assert_eq!(up.paths(), ["/p1", "/p2", "/p3", "/p4", "/p5"]);
    assert_eq!(up.requests(), 5);
}

#[tokio::test]
async fn ten_thousand_requests_on_one_keep_alive_connection() {
    let up = Recorder::start().await;
    let weir = Weir::start(&gateway_yaml(up.port, "", ""));
    let (mut s, mut buf) = send(weir.addr, b"").await;
    for i in 0..10_000 {
        s.write_all(b"GET /keep HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
        let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("request {i}: {e:?}"));
        assert_eq!((rsp.status, rsp.body.as_str()), (200, "/keep"), "request {i}: {}", rsp.head);
    }
    assert!(buf.is_empty(), "bytes past the last response: {:?}", text(&buf));
    assert_eq!(up.requests(), 10_000);
    let conns = up.conns();
    assert!(conns <= 2, "{conns} upstream connections for 10000 sequential requests");
}

// ---------------------------------------------------------------------------------------------
// Regressions.

#[tokio::test]
async fn malformed_chunked_bodies_are_400_and_do_not_eject_the_endpoint() {
    let up = Recorder::start().await;
    let hc = "    health_check:\n      passive: { consecutive_failures: 3, ejection_time: 30s }\n";
    let weir = Weir::start(&gateway_yaml(up.port, hc, ""));
    let bodies = [
        "0x5\r\nhello\r\n0\r\n\r\n",
        "-1\r\n",
        "ffffffffffffffffffff\r\n",
        "5\r\nhelloEXTRA\r\n",
        "0x5\r\nhello\r\n0\r\n\r\n",
    ];
    // A burst: five clients at once, each on its own connection.
    let mut burst = Vec::new();
    for body in bodies {
        let request = format!("POST /bad HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}");
        let addr = weir.addr;
        burst.push(tokio::spawn(async move {
            let (mut s, mut buf) = send(addr, request.as_bytes()).await;
            let got = read_response(&mut s, &mut buf).await;
            (request, got)
        }));
    }
    for task in burst {
        let (request, got) = task.await.unwrap();
        let rsp = got.unwrap_or_else(|e| panic!("{request:?}: no response: {e:?}"));
        assert_eq!(rsp.status, 400, "{request:?}: a client's bad body is not the upstream's fault: {}", rsp.head);
    }
    // The endpoint is still in: another client is served.
    let (status, body) = tokio::time::timeout(TIMEOUT, get(weir.addr, "/after", &[])).await.expect("GET /after hung");
    assert_eq!((status, &body[..]), (200, &b"/after"[..]), "{:?}", text(&body));
    let stats = tokio::time::timeout(TIMEOUT, weir.stats()).await.expect("/stats hung");
    assert_eq!(stats["upstreams"]["app"]["endpoints"][0]["ejected"], false, "{stats}");
    // None of the bad requests reached the upstream whole.
    assert_eq!(up.paths(), ["/after"]);
}

#[tokio::test]
async fn header_read_timeout_answers_408_before_closing() {
    let up = Recorder::start().await;
    let weir = Weir::start(&gateway_yaml(up.port, "", ", limits: { header_read_timeout: 500ms }"));
    let started = tokio::time::Instant::now();
    let (mut s, mut buf) = send(weir.addr, b"GET /slow HTTP/1.1\r\nHost: x\r\n").await;
    let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("no 408 before the close: {e:?}"));
    let took = started.elapsed();
    assert_eq!(rsp.status, 408, "{}", rsp.head);
    assert!(
        (Duration::from_millis(400)..Duration::from_secs(4)).contains(&took),
        "408 after {took:?} with a 500ms header_read_timeout"
    );
    expect_closed(&mut s, &mut buf, "after the 408").await;
    assert!(up.bytes().is_empty(), "the upstream received {:?}", text(&up.bytes()));
}

#[tokio::test]
async fn grpc_clients_get_grpc_status_from_the_fast_path() {
    // grpc-web over HTTP/1.1 to an endpoint that refuses connections: answered as on hyper's
    // path, HTTP 200 with grpc-status 14 (UNAVAILABLE), not a JSON 502.
    let weir = Weir::start(&gateway_yaml(dead_port(), "", ""));
    let req =
        "POST /pkg.Svc/Call HTTP/1.1\r\nHost: api\r\nContent-Type: application/grpc-web\r\nContent-Length: 0\r\n\r\n";
    let (mut s, mut buf) = send(weir.addr, req.as_bytes()).await;
    let Ok(rsp) = read_response(&mut s, &mut buf).await else { panic!("no response") };
    assert_eq!(rsp.status, 200, "{}", rsp.head);
    assert!(rsp.head.to_ascii_lowercase().contains("grpc-status: 14"), "{}", rsp.head);
}

#[tokio::test]
async fn fast_path_idle_connections_do_not_starve_hyper_of_the_pool() {
    // One connection allowed: the fast path's request leaves it idle in its pool; a request
    // hyper serves (HTTP/1.0) must get the slot at once instead of a 503 after the wait.
    let up = Recorder::start().await;
    let pool = "    pool: { max_connections: 1, max_idle: 1, acquire_timeout: 2s }\n";
    let weir = Weir::start(&gateway_yaml(up.port, pool, ""));
    let (mut s, mut buf) = send(weir.addr, b"").await;
    let rsp = exchange(&mut s, &mut buf, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(rsp.status, 200, "{}", rsp.head);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let started = tokio::time::Instant::now();
    let (mut s10, mut buf10) = send(weir.addr, b"GET /hyper HTTP/1.0\r\n\r\n").await;
    let rsp = read_response(&mut s10, &mut buf10).await.unwrap_or_else(|e| panic!("{e:?}"));
    assert_eq!(rsp.status, 200, "{}", rsp.head);
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?} for the pool", started.elapsed());
    // And back: the fast path gets the slot hyper's idle connection holds.
    let rsp = exchange(&mut s, &mut buf, "GET /fast-again HTTP/1.1\r\nHost: x\r\n\r\n").await;
    assert_eq!(rsp.status, 200, "{}", rsp.head);
}
