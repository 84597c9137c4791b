//! Request smuggling corpus over raw sockets. Each case sends raw bytes to Weir and checks both
//! the status Weir answered and what a raw recording upstream really received: CL.TE and TE.CL,
//! obfuscated or duplicated `Transfer-Encoding`, malformed or duplicated `Content-Length`,
//! malformed chunk sizes, malformed header lines, the `Host` rules, `Upgrade: h2c` and
//! `CONNECT`. Every refused case carries a hidden `GET /smuggled` behind it, which must never
//! reach the upstream, and the connection must close after the 400. Valid framings (leading
//! zeros, chunk extensions, a tab before `chunked`, `CHUNKED`) must forward exactly their body
//! and answer the request pipelined behind them on its own.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::raw_http::{Step, dechunk, expect_closed, read_response, send, text};
use common::{Weir, config, upstream_yaml};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// The request hidden behind every refused case.
const SMUGGLED: &str = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
/// What the recording upstream answers to each complete request.
const OK: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok";

// ---------------------------------------------------------------------------------------------
// The recording upstream.

/// One request as the recording upstream parsed it.
#[derive(Clone, Debug)]
struct Seen {
    method: String,
    path: String,
    /// The head as received, request line to the empty line.
    head: String,
    /// The body, chunked framing removed.
    body: String,
}

#[derive(Default)]
struct Log {
    /// Every byte received, on all connections, in arrival order.
    bytes: Mutex<Vec<u8>>,
    /// Every complete request, in the order they were answered.
    seen: Mutex<Vec<Seen>>,
    requests: AtomicUsize,
}

/// A raw TCP upstream on 127.0.0.1:0: records every byte it receives and answers each complete
/// request (head + `Content-Length` or chunked body) with `200 ok`.
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
                tokio::spawn(record(s, l.clone()));
            }
        });
        Recorder { port, log, task }
    }

    fn bytes(&self) -> Vec<u8> {
        self.log.bytes.lock().unwrap().clone()
    }

    fn seen(&self) -> Vec<Seen> {
        self.log.seen.lock().unwrap().clone()
    }

    fn requests(&self) -> usize {
        self.log.requests.load(SeqCst)
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
                Step::Done((seen, used)) => {
                    pending.drain(..used);
                    // Recorded before answering: a client holding the response sees it here.
                    log.seen.lock().unwrap().push(seen);
                    log.requests.fetch_add(1, SeqCst);
                    if s.write_all(OK).await.is_err() {
                        return;
                    }
                }
            }
        }
    }
}

/// Parses one complete request at the start of `buf`: what it was, and the bytes it took.
fn parse_request(buf: &[u8]) -> Step<(Seen, usize)> {
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
    let (body, used) = if chunked {
        match dechunk(rest) {
            Step::Done(d) => d,
            Step::Partial => return Step::Partial,
            Step::Invalid => return Step::Invalid,
        }
    } else if rest.len() < length {
        return Step::Partial;
    } else {
        (rest[..length].to_vec(), length)
    };
    let seen = Seen {
        method: req.method.unwrap_or_default().to_owned(),
        path: req.path.unwrap_or_default().to_owned(),
        head: text(&buf[..head_len]),
        body: text(&body),
    };
    Step::Done((seen, head_len + used))
}

// ---------------------------------------------------------------------------------------------
// The raw client.

// ---------------------------------------------------------------------------------------------
// The cases.

async fn gateway() -> (Recorder, Weir) {
    let up = Recorder::start().await;
    let weir = Weir::start(&config(
        "  - { name: all, upstream: app }",
        &upstream_yaml("app", "round_robin", &[(up.port, 1)], ""),
    ));
    (up, weir)
}

/// Gives the upstream a moment to record anything Weir may still have been sending.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// Sends `case` on a new connection and reads one response, which must be a 400, then the
/// connection must close.
async fn expect_400_and_close(weir: &Weir, case: &str) {
    let (mut s, mut buf) = send(weir.addr, case.as_bytes()).await;
    let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("{case:?}: no response: {e:?}"));
    assert_eq!(rsp.status, 400, "{case:?}: {}", rsp.head);
    expect_closed(&mut s, &mut buf, case).await;
}

/// A 400 decided on the head alone: the upstream must not receive a single byte.
async fn refused_before_the_upstream(weir: &Weir, up: &Recorder, case: &str) {
    expect_400_and_close(weir, case).await;
    settle().await;
    assert!(up.bytes().is_empty(), "{case:?}: the upstream received {:?}", text(&up.bytes()));
}

/// A chunked POST whose `chunks` are malformed, with the hidden request behind them: 400 and
/// close, and nothing from `marker` on (nor `/smuggled`) reaches the upstream. The head may
/// have been forwarded already, but never a complete request.
async fn refused_chunks(weir: &Weir, up: &Recorder, chunks: &str, marker: &str) {
    let before = up.bytes().len();
    let case = format!("POST /chunks HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{chunks}{SMUGGLED}");
    expect_400_and_close(weir, &case).await;
    settle().await;
    let got = text(&up.bytes()[before..]);
    assert!(!got.contains(marker), "{case:?}: {marker:?} reached the upstream: {got:?}");
    assert!(!got.contains("/smuggled"), "{case:?}: the hidden request reached the upstream: {got:?}");
    assert_eq!(up.requests(), 0, "{case:?}: the upstream got a complete request: {got:?}");
}

/// A POST framed by the header line(s) `framing` with `body`, and a GET written right behind it:
/// both are answered on their own, and the upstream sees exactly the decoded body `want` and
/// then the GET.
async fn framed_then_pipelined(weir: &Weir, up: &Recorder, framing: &str, body: &str, want: &str) {
    let before = up.seen().len();
    let case =
        format!("POST /framed HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n{body}GET /after HTTP/1.1\r\nHost: x\r\n\r\n");
    let (mut s, mut buf) = send(weir.addr, case.as_bytes()).await;
    for i in 0..2 {
        let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("{case:?}: response {i}: {e:?}"));
        assert_eq!((rsp.status, rsp.body.as_str()), (200, "ok"), "{case:?}: response {i}: {}", rsp.head);
    }
    let seen: Vec<(String, String, String)> =
        up.seen()[before..].iter().map(|r| (r.method.clone(), r.path.clone(), r.body.clone())).collect();
    let expected = [
        ("POST".to_owned(), "/framed".to_owned(), want.to_owned()),
        ("GET".to_owned(), "/after".to_owned(), String::new()),
    ];
    assert_eq!(seen, expected, "{case:?}");
}

#[tokio::test]
async fn cl_te_and_te_cl_are_400_and_nothing_reaches_the_upstream() {
    let (up, weir) = gateway().await;
    // CL.TE: a hop trusting Content-Length forwards the hidden request as body; one trusting
    // chunked sees it as the next request.
    let tail = format!("0\r\n\r\n{SMUGGLED}");
    let cl_te = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{tail}",
        tail.len()
    );
    // TE.CL: the hidden request is a chunk for one hop and the next request for the other.
    let te_cl = format!(
        "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 4\r\n\r\n{:x}\r\n{SMUGGLED}\r\n0\r\n\r\n",
        SMUGGLED.len()
    );
    for case in [cl_te, te_cl] {
        refused_before_the_upstream(&weir, &up, &case).await;
    }
}

#[tokio::test]
async fn obfuscated_or_duplicated_transfer_encoding_is_400() {
    let (up, weir) = gateway().await;
    let framings = [
        "Transfer-Encoding: chunked, identity",
        "Transfer-Encoding: identity, chunked",
        "Transfer-Encoding: identity",
        "Transfer-Encoding: gzip",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked",
        "Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
        "Transfer-Encoding : chunked",
        "Transfer-Encoding: xchunked",
    ];
    for framing in framings {
        let case = format!("POST / HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\n0\r\n\r\n{SMUGGLED}");
        refused_before_the_upstream(&weir, &up, &case).await;
    }
}

#[tokio::test]
async fn malformed_or_duplicated_content_length_is_400() {
    let (up, weir) = gateway().await;
    let framings = [
        "Content-Length: +5",
        "Content-Length: -5",
        "Content-Length: 1 0",
        "Content-Length: 5, 5",
        "Content-Length: 5\r\nContent-Length: 5",
        "Content-Length: 5\r\nContent-Length: 6",
        "Content-Length: 0x5",
    ];
    for framing in framings {
        let case = format!("POST / HTTP/1.1\r\nHost: x\r\n{framing}\r\n\r\nhello{SMUGGLED}");
        refused_before_the_upstream(&weir, &up, &case).await;
    }
}

#[tokio::test]
async fn content_length_with_leading_zeros_frames_the_body() {
    let (up, weir) = gateway().await;
    framed_then_pipelined(&weir, &up, "Content-Length: 005", "hello", "hello").await;
}

#[tokio::test]
async fn malformed_chunk_sizes_are_400_and_nothing_after_them_is_forwarded() {
    let (up, weir) = gateway().await;
    let cases = [
        ("0x5\r\nhello\r\n0\r\n\r\n", "hello"),
        ("-5\r\nhello\r\n0\r\n\r\n", "hello"),
        // Overflows 64 bits.
        ("ffffffffffffffffff\r\nhello\r\n0\r\n\r\n", "hello"),
        // 2^68 + 5: a parser that silently wraps reads a 5-byte chunk.
        ("10000000000000005\r\nhello\r\n0\r\n\r\n", "hello"),
        // A chunk-size line ending in a bare LF.
        ("5\nhello\r\n0\r\n\r\n", "hello"),
        // More data than the size said, before the CRLF (last: "hello" may legitimately have
        // been streamed before the excess was seen).
        ("5\r\nhelloEXTRA\r\n0\r\n\r\n", "EXTRA"),
    ];
    for (chunks, marker) in cases {
        refused_chunks(&weir, &up, chunks, marker).await;
    }
}

#[tokio::test]
async fn chunk_extensions_are_accepted_and_the_body_forwarded() {
    let (up, weir) = gateway().await;
    framed_then_pipelined(&weir, &up, "Transfer-Encoding: chunked", "5;name=value\r\nhello\r\n0\r\n\r\n", "hello")
        .await;
}

#[tokio::test]
async fn tab_before_chunked_and_uppercase_chunked_frame_the_body() {
    let (up, weir) = gateway().await;
    let chunks = "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    for framing in ["Transfer-Encoding:\tchunked", "transfer-encoding: CHUNKED"] {
        framed_then_pipelined(&weir, &up, framing, chunks, "hello world").await;
    }
}

#[tokio::test]
async fn malformed_header_lines_are_400() {
    let (up, weir) = gateway().await;
    let lines = [
        // A bare CR inside a header line.
        "X-A: a\rb",
        // A NUL byte in a header value.
        "X-A: a\0b",
        // A space inside a header name.
        "Bad Header: x",
        // obs-fold: a line starting with a space continues the previous one.
        "X-A: a\r\n b",
    ];
    for line in lines {
        let case = format!("GET / HTTP/1.1\r\nHost: x\r\n{line}\r\n\r\n{SMUGGLED}");
        refused_before_the_upstream(&weir, &up, &case).await;
    }
}

#[tokio::test]
async fn duplicate_or_missing_host_on_http11_is_400() {
    let (up, weir) = gateway().await;
    let cases = [
        format!("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n{SMUGGLED}"),
        format!("GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n{SMUGGLED}"),
        format!("GET / HTTP/1.1\r\nUser-Agent: t\r\n\r\n{SMUGGLED}"),
    ];
    for case in cases {
        refused_before_the_upstream(&weir, &up, &case).await;
    }
}

#[tokio::test]
async fn http10_without_host_is_served() {
    let (up, weir) = gateway().await;
    let (mut s, mut buf) = send(weir.addr, b"GET /v10 HTTP/1.0\r\n\r\n").await;
    let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("no response: {e:?}"));
    assert_eq!((rsp.status, rsp.body.as_str()), (200, "ok"), "{}", rsp.head);
    let paths: Vec<String> = up.seen().into_iter().map(|r| r.path).collect();
    assert_eq!(paths, ["/v10"]);
}

#[tokio::test]
async fn h2c_upgrade_is_proxied_as_a_plain_request_without_upgrade_headers() {
    let (up, weir) = gateway().await;
    let case = "GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n";
    let (mut s, mut buf) = send(weir.addr, case.as_bytes()).await;
    let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("no response: {e:?}"));
    assert_eq!((rsp.status, rsp.body.as_str()), (200, "ok"), "{}", rsp.head);
    // The client connection still speaks HTTP/1.1: no protocol switch happened.
    s.write_all(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("second request: {e:?}"));
    assert_eq!((rsp.status, rsp.body.as_str()), (200, "ok"), "{}", rsp.head);
    let seen = up.seen();
    let paths: Vec<&str> = seen.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, ["/h2c", "/again"]);
    let head = seen[0].head.to_ascii_lowercase();
    assert!(!head.contains("\nupgrade:"), "Upgrade was forwarded: {head:?}");
    // HTTP2-Settings is named by Connection, so it is hop-by-hop too.
    assert!(!head.contains("\nhttp2-settings:"), "HTTP2-Settings was forwarded: {head:?}");
}

#[tokio::test]
async fn connect_is_refused_before_the_upstream() {
    let (up, weir) = gateway().await;
    let case = "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n";
    let (mut s, mut buf) = send(weir.addr, case.as_bytes()).await;
    let rsp = read_response(&mut s, &mut buf).await.unwrap_or_else(|e| panic!("no response: {e:?}"));
    assert!(matches!(rsp.status, 400 | 405), "CONNECT: {}", rsp.head);
    settle().await;
    assert!(up.bytes().is_empty(), "the upstream received {:?}", text(&up.bytes()));
}
