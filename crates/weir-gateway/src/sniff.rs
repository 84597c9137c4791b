//! Request-smuggling guard for HTTP/1.1: reads the raw request heads alongside hyper.
//!
//! hyper resolves `Content-Length` + `Transfer-Encoding` (chunked wins) and collapses identical
//! duplicate `Content-Length` headers before the service sees them, as RFC 9112 §6.3 and
//! RFC 9110 §8.6 allow. An edge proxy should refuse both outright (400), since the next hop may
//! resolve them differently. This wrapper follows HTTP/1.1 framing on the bytes hyper reads
//! (head, then a fixed-length or chunked body, then the next head) and records, per request in
//! order, whether its head was ambiguous; the service pops one verdict per request.
//!
//! Anything it cannot follow (an HTTP/2 preface, an upgrade, a malformed head) stops the
//! sniffing for that connection: later requests then get no verdict and pass as before.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use parking_lot::Mutex;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Per-request verdicts of one connection, in request order: `true` = ambiguous framing.
pub type Verdicts = Arc<Mutex<VecDeque<bool>>>;

/// Longest head followed at least; hyper refuses heads over the listener's limit (431).
const MAX_HEAD: usize = 128 * 1024;

#[derive(Debug)]
enum State {
    Head,
    Fixed(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkEnd(u8),
    Trailers,
    Off,
}

/// Where the search for an empty line stands at the end of the bytes seen so far.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Line {
    /// Inside a line.
    Within,
    /// Just after a `\n`.
    Start,
    /// After `\n\r`.
    StartCr,
    /// After a `\r` inside a line (trailers only, where only CRLF ends a line).
    Cr,
}

/// Wraps the client side of an HTTP/1.1 connection.
#[derive(Debug)]
pub struct Sniffer<I> {
    io: I,
    state: State,
    /// A head or line split across reads (usually empty: a head arrives in one read).
    pending: Vec<u8>,
    line: Line,
    /// Longest head followed (the listener's header limit, at least [`MAX_HEAD`]).
    max_head: usize,
    verdicts: Verdicts,
}

/// Finds the end of a head or trailer section (an empty line, `\n\n` or `\n\r\n`, as httparse
/// accepts both) in `data`, continuing from `line`. Jumps between line feeds with memchr
/// instead of looking at every byte.
fn head_end(data: &[u8], mut line: Line) -> (Option<usize>, Line) {
    let mut i = 0;
    loop {
        match (line, data.get(i)) {
            (Line::Start | Line::StartCr, None) => return (None, line),
            (Line::Start | Line::StartCr, Some(b'\n')) => return (Some(i + 1), Line::Within),
            (Line::Start, Some(b'\r')) => {
                line = Line::StartCr;
                i += 1;
                continue;
            }
            _ => {}
        }
        match memchr::memchr(b'\n', &data[i..]) {
            Some(j) => {
                i += j + 1;
                line = Line::Start;
            }
            None => return (None, Line::Within),
        }
    }
}

/// Finds the end of a trailer section in `data`, continuing from `line`, as hyper's chunked
/// decoder does: only CRLF CRLF ends it (a bare `\n` is trailer content to hyper, unlike in a
/// head), so the guard stays in step with what hyper reads next.
fn trailers_end(data: &[u8], mut line: Line) -> (Option<usize>, Line) {
    for (i, &b) in data.iter().enumerate() {
        line = match (line, b) {
            (Line::StartCr, b'\n') => return (Some(i + 1), Line::Within),
            (Line::Start, b'\r') => Line::StartCr,
            (Line::Cr, b'\n') => Line::Start,
            (_, b'\r') => Line::Cr,
            _ => Line::Within,
        };
    }
    (None, line)
}

impl<I> Sniffer<I> {
    /// Wraps `io`, following heads up to `max_head` bytes (hyper's limit for the listener, so
    /// no head hyper accepts is too long to check); verdicts go to the returned queue.
    pub fn new(io: I, max_head: usize) -> (Self, Verdicts) {
        let v = Verdicts::default();
        let max_head = max_head.max(MAX_HEAD);
        (Self { io, state: State::Head, pending: Vec::new(), line: Line::Within, max_head, verdicts: v.clone() }, v)
    }

    fn feed(&mut self, mut data: &[u8]) {
        while !data.is_empty() {
            match self.state {
                State::Off => return,
                State::Fixed(n) => {
                    let take = n.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.state = if n == take { State::Head } else { State::Fixed(n - take) };
                }
                State::ChunkData(n) => {
                    let take = n.min(data.len() as u64);
                    data = &data[take as usize..];
                    self.state = if n == take { State::ChunkEnd(2) } else { State::ChunkData(n - take) };
                }
                State::ChunkEnd(left) => {
                    let take = usize::from(left).min(data.len());
                    data = &data[take..];
                    let left = left - take as u8;
                    self.state = if left == 0 { State::ChunkSize } else { State::ChunkEnd(left) };
                }
                State::Head | State::ChunkSize | State::Trailers => data = self.scan(data),
            }
        }
    }

    /// Looks for the end of the current head or chunk-size line in `data`; hands a complete one
    /// to [`Self::finish`] (straight from `data` when it came in one read) and returns the rest.
    fn scan<'a>(&mut self, mut data: &'a [u8]) -> &'a [u8] {
        if matches!(self.state, State::Head) && self.pending.is_empty() {
            // Empty lines before a request line are allowed and skipped.
            let skip = data.iter().position(|&b| b != b'\r' && b != b'\n').unwrap_or(data.len());
            data = &data[skip..];
            self.line = Line::Within;
        }
        let end = match self.state {
            State::ChunkSize => memchr::memchr(b'\n', data).map(|i| i + 1),
            State::Trailers => {
                let (end, line) = trailers_end(data, self.line);
                self.line = line;
                end
            }
            _ => {
                let (end, line) = head_end(data, self.line);
                self.line = line;
                end
            }
        };
        let Some(end) = end else {
            if self.pending.len() + data.len() > self.max_head {
                self.state = State::Off;
                self.pending = Vec::new();
                return &[];
            }
            self.pending.extend_from_slice(data);
            return &[];
        };
        if self.pending.is_empty() {
            self.finish(&data[..end]);
        } else {
            let mut raw = std::mem::take(&mut self.pending);
            raw.extend_from_slice(&data[..end]);
            self.finish(&raw);
            // Kept for the next split head unless a large one grew it.
            if raw.capacity() <= 4096 {
                raw.clear();
                self.pending = raw;
            }
        }
        &data[end..]
    }

    fn finish(&mut self, raw: &[u8]) {
        self.state = match self.state {
            State::Head => self.head(raw),
            State::ChunkSize => {
                let line = String::from_utf8_lossy(raw);
                let hex = line.split(';').next().unwrap_or("").trim();
                match u64::from_str_radix(hex, 16) {
                    Ok(0) => {
                        // The trailer section starts at the beginning of a line.
                        self.line = Line::Start;
                        State::Trailers
                    }
                    Ok(n) => State::ChunkData(n),
                    Err(_) => State::Off,
                }
            }
            // A trailer section ends with an empty line.
            State::Trailers => State::Head,
            _ => State::Off,
        };
    }

    fn head(&mut self, raw: &[u8]) -> State {
        if raw.starts_with(b"PRI * HTTP/2.0") {
            return State::Off;
        }
        // Uninitialised slots: initialising 128 headers would cost more than parsing a head.
        let mut headers = [const { std::mem::MaybeUninit::<httparse::Header<'_>>::uninit() }; 128];
        let mut req = httparse::Request::new(&mut []);
        if !matches!(req.parse_with_uninit_headers(raw, &mut headers), Ok(httparse::Status::Complete(_))) {
            return State::Off;
        }
        let (mut lengths, mut length, mut te, mut chunked, mut upgrade) = (0, None, false, false, false);
        for h in req.headers.iter() {
            if h.name.eq_ignore_ascii_case("content-length") {
                lengths += 1;
                length = Some(h.value);
            } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                te = true;
                chunked = h
                    .value
                    .split(|&b| b == b',')
                    .next_back()
                    .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"chunked"));
            } else if h.name.eq_ignore_ascii_case("upgrade") {
                upgrade = true;
            }
        }
        let ambiguous = lengths > 1 || (te && lengths > 0);
        self.verdicts.lock().push_back(ambiguous);
        if upgrade || ambiguous {
            // After an upgrade the bytes are a tunnel; after an ambiguous head the connection
            // is answered 400 and closed.
            return State::Off;
        }
        if chunked {
            return State::ChunkSize;
        }
        match length.and_then(|v| std::str::from_utf8(v).ok()?.trim().parse::<u64>().ok()) {
            Some(0) | None if !te => State::Head,
            Some(n) => State::Fixed(n),
            // A non-chunked transfer coding: hyper refuses it.
            None => State::Off,
        }
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Sniffer<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.io).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && !matches!(this.state, State::Off) {
            this.feed(&buf.filled()[before..]);
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Sniffer<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn verdicts(chunks: &[&[u8]]) -> Vec<bool> {
        let (mut s, v) = Sniffer::new((), MAX_HEAD);
        for c in chunks {
            s.feed(c);
        }
        v.lock().iter().copied().collect()
    }

    #[test]
    fn follows_framing_across_requests_and_reads() {
        let get = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".as_slice();
        let post = b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nGET / HTTP/".as_slice();
        let chunked =
            b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\n".as_slice();
        assert_eq!(verdicts(&[get, post, chunked, get]), [false, false, false, false]);
        // Split at every byte boundary: same verdicts.
        let all: Vec<u8> = [get, post, chunked, get].concat();
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(verdicts(&bytes), [false, false, false, false]);
    }

    #[test]
    fn flags_conflicting_and_duplicate_lengths() {
        assert_eq!(
            verdicts(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"]),
            [true]
        );
        assert_eq!(verdicts(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"]), [true]);
        assert_eq!(verdicts(&[b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"GET / HTTP/1.1\r\n\r\n"]), Vec::<bool>::new());
    }

    #[test]
    fn bare_line_feeds_end_heads_too() {
        // httparse (so hyper) accepts `\n` line endings; the guard must not lose track there.
        let smuggle = b"POST / HTTP/1.1\nContent-Length: 5\nTransfer-Encoding: chunked\n\n0\r\n\r\n".as_slice();
        assert_eq!(verdicts(&[smuggle]), [true]);
        let two = b"GET / HTTP/1.1\nHost: x\n\r\nGET / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n";
        assert_eq!(verdicts(&[two]), [false, true]);
        let bytes: Vec<&[u8]> = two.chunks(1).collect();
        assert_eq!(verdicts(&bytes), [false, true]);
    }

    #[test]
    fn only_crlf_crlf_ends_trailers_as_in_hyper() {
        // To hyper `0\r\n\n…` is a trailer section still going on: the GET below is trailer
        // text, not a request, so it must not get a verdict that a later request would pop.
        let hidden = b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\nGET /x HTTP/1.1\r\nHost: a\r\n\r\n";
        let ambiguous = b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n";
        assert_eq!(verdicts(&[hidden, ambiguous]), [false, true]);
        let all = [hidden.as_slice(), ambiguous].concat();
        let bytes: Vec<&[u8]> = all.chunks(1).collect();
        assert_eq!(verdicts(&bytes), [false, true]);
    }

    #[test]
    fn leading_empty_lines_and_heads_split_anywhere() {
        let all = b"\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\nPOST / HTTP/1.1\r\nContent-Length: 3\r\n\r\nabc\nGET / HTTP/1.1\r\n\r\n";
        for cut in 0..all.len() {
            let (a, b) = all.split_at(cut);
            assert_eq!(verdicts(&[a, b]), [false, false, false], "split at {cut}");
        }
    }

    #[test]
    fn an_endless_head_turns_the_guard_off_without_growing() {
        let (mut s, v) = Sniffer::new((), MAX_HEAD);
        let line = [b'a'; 4096];
        for _ in 0..40 {
            s.feed(&line);
        }
        assert!(matches!(s.state, State::Off));
        assert!(s.pending.len() <= MAX_HEAD);
        assert!(v.lock().is_empty());
    }
}
