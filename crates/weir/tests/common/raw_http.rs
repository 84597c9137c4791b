//! A raw HTTP/1.1 client for tests that must see exactly what crosses the socket: one
//! response read by its own framing, a connection expected to close, and a chunked-body
//! decoder shared with the raw upstreams of those tests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every read from Weir gives up after this, so a hang fails instead of blocking CI.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// What parsing the bytes so far gave.
pub enum Step<T> {
    Partial,
    Invalid,
    Done(T),
}

/// Decodes the chunked body at the start of `data`: the body, and the bytes it took (trailers
/// included).
pub fn dechunk(data: &[u8]) -> Step<(Vec<u8>, usize)> {
    let mut body = Vec::new();
    let mut at = 0;
    loop {
        let (line, size) = match httparse::parse_chunk_size(&data[at..]) {
            Ok(httparse::Status::Complete(c)) => c,
            Ok(httparse::Status::Partial) => return Step::Partial,
            Err(_) => return Step::Invalid,
        };
        at += line;
        if size == 0 {
            // Trailer lines, then the empty line.
            loop {
                let Some(end) = find(&data[at..], b"\r\n") else { return Step::Partial };
                at += end + 2;
                if end == 0 {
                    return Step::Done((body, at));
                }
            }
        }
        let Ok(size) = usize::try_from(size) else { return Step::Invalid };
        let end = at.saturating_add(size);
        if data.len() < end.saturating_add(2) {
            return Step::Partial;
        }
        body.extend_from_slice(&data[at..end]);
        if !data[end..].starts_with(b"\r\n") {
            return Step::Invalid;
        }
        at = end + 2;
    }
}

pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Why no complete response was read.
#[derive(Debug)]
pub enum Cut {
    /// The connection closed (or was reset) first.
    Closed,
    /// Nothing more arrived within [`TIMEOUT`].
    TimedOut,
    /// The bytes are not an HTTP/1.1 response.
    Malformed,
}

/// One response as the client read it.
#[derive(Debug)]
pub struct Rsp {
    pub status: u16,
    pub head: String,
    pub body: String,
}

#[derive(Clone, Copy)]
pub enum Framing {
    Empty,
    Length(usize),
    Chunked,
    UntilClose,
}

/// Connects to `addr` and writes `bytes` in one go; returns the stream and an empty read buffer.
pub async fn send(addr: SocketAddr, bytes: &[u8]) -> (TcpStream, Vec<u8>) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    (s, Vec::new())
}

/// Reads more bytes into `buf`: `Ok(false)` once the peer closed or reset the connection.
pub async fn fill(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<bool, Cut> {
    buf.reserve(16 * 1024);
    match tokio::time::timeout(TIMEOUT, s.read_buf(buf)).await {
        Err(_) => Err(Cut::TimedOut),
        Ok(Ok(0) | Err(_)) => Ok(false),
        Ok(Ok(_)) => Ok(true),
    }
}

/// The status, head length and body framing of the response head at the start of `buf`, once
/// it is complete.
pub fn parse_head(buf: &[u8]) -> Result<Option<(u16, usize, Framing)>, Cut> {
    let mut headers = [httparse::EMPTY_HEADER; 64];
    let mut rsp = httparse::Response::new(&mut headers);
    let head_len = match rsp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(_) => return Err(Cut::Malformed),
    };
    let status = rsp.code.unwrap_or(0);
    let mut framing = Framing::UntilClose;
    for h in rsp.headers.iter() {
        let value = String::from_utf8_lossy(h.value);
        if h.name.eq_ignore_ascii_case("transfer-encoding") && value.to_ascii_lowercase().contains("chunked") {
            framing = Framing::Chunked;
        } else if h.name.eq_ignore_ascii_case("content-length") && !matches!(framing, Framing::Chunked) {
            framing = Framing::Length(value.trim().parse::<usize>().map_err(|_| Cut::Malformed)?);
        }
    }
    if (100..200).contains(&status) || status == 204 || status == 304 {
        framing = Framing::Empty;
    }
    Ok(Some((status, head_len, framing)))
}

/// Reads one response from `s`, `buf` keeping whatever arrives past it; 1xx interim responses
/// are skipped. On failure returns why, with everything received so far.
pub async fn read_response(s: &mut TcpStream, buf: &mut Vec<u8>) -> Result<Rsp, (Cut, String)> {
    let (status, head_len, framing) = loop {
        match parse_head(buf) {
            Err(cut) => return Err((cut, text(buf))),
            Ok(Some((status, n, _))) if (100..200).contains(&status) && status != 101 => {
                buf.drain(..n);
            }
            Ok(Some(head)) => break head,
            Ok(None) => match fill(s, buf).await {
                Ok(true) => {}
                Ok(false) => return Err((Cut::Closed, text(buf))),
                Err(cut) => return Err((cut, text(buf))),
            },
        }
    };
    let (body, used) = loop {
        let rest = &buf[head_len..];
        let done = match framing {
            Framing::Empty => Some((Vec::new(), 0)),
            Framing::Length(n) => (rest.len() >= n).then(|| (rest[..n].to_vec(), n)),
            Framing::Chunked => match dechunk(rest) {
                Step::Done(d) => Some(d),
                Step::Partial => None,
                Step::Invalid => return Err((Cut::Malformed, text(buf))),
            },
            Framing::UntilClose => None,
        };
        if let Some(done) = done {
            break done;
        }
        match fill(s, buf).await {
            Ok(true) => {}
            Ok(false) if matches!(framing, Framing::UntilClose) => {
                break (buf[head_len..].to_vec(), buf.len() - head_len);
            }
            Ok(false) => return Err((Cut::Closed, text(buf))),
            Err(cut) => return Err((cut, text(buf))),
        }
    };
    let head = text(&buf[..head_len]);
    buf.drain(..head_len + used);
    Ok(Rsp { status, head, body: text(&body) })
}

/// The connection must close now: no more bytes, and EOF (or a reset) within [`TIMEOUT`].
pub async fn expect_closed(s: &mut TcpStream, buf: &mut Vec<u8>, case: &str) {
    assert!(buf.is_empty(), "{case:?}: bytes after the response: {:?}", text(buf));
    match fill(s, buf).await {
        Ok(false) => {}
        Ok(true) => panic!("{case:?}: bytes after the response: {:?}", text(buf)),
        Err(cut) => panic!("{case:?}: connection still open after the response ({cut:?})"),
    }
}
