//! A minimal HTTP/1.1 client connection for the load generator.
//!
//! Written here rather than using hyper's client because a load generator has to be cheaper
//! per request than the server it measures: hyper's client sends every request through a
//! channel to its connection dispatcher and allocates a request and a response per exchange,
//! which made the generator, not nginx, the bottleneck (about a third of wrk's rate). This
//! one writes pre-rendered request bytes and parses the response head in place with
//! `httparse`, then skips the body (Content-Length or chunked), reusing one buffer.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::client::Failure;

/// Longest response head accepted.
const MAX_HEAD: usize = 64 * 1024;

/// One keep-alive connection.
pub(crate) struct RawConn<S> {
    io: S,
    buf: Vec<u8>,
    /// Bytes of `buf` that are read but not consumed.
    start: usize,
    end: usize,
}

/// The parsed response: status, body length, whether the server keeps the connection.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Exchange {
    pub status: u16,
    pub body: u64,
    pub keep_alive: bool,
}

impl<S: AsyncRead + AsyncWrite + Unpin> RawConn<S> {
    pub(crate) fn new(io: S) -> Self {
        Self { io, buf: vec![0; 16 * 1024], start: 0, end: 0 }
    }

    /// Writes `request` and reads the whole response. `head_only` for HEAD requests.
    pub(crate) async fn exchange(&mut self, request: &[u8], head_only: bool) -> Result<Exchange, Failure> {
        self.io.write_all(request).await.map_err(|_| Failure::Protocol)?;
        let (status, framing, keep_alive) = self.read_head().await?;
        let no_body = head_only || status == 204 || status == 304 || (100..200).contains(&status);
        let body = match framing {
            _ if no_body => 0,
            Framing::Length(n) => {
                self.skip(n).await?;
                n
            }
            Framing::Chunked => self.skip_chunked().await?,
            Framing::UntilClose => {
                let mut n = (self.end - self.start) as u64;
                self.start = self.end;
                loop {
                    let got = self.io.read(&mut self.buf).await.map_err(|_| Failure::Protocol)?;
                    if got == 0 {
                        break;
                    }
                    n += got as u64;
                }
                return Ok(Exchange { status, body: n, keep_alive: false });
            }
        };
        Ok(Exchange { status, body, keep_alive })
    }

    /// Reads more bytes after `end`, compacting the buffer first.
    async fn fill(&mut self) -> Result<(), Failure> {
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        if self.end == self.buf.len() {
            if self.buf.len() >= MAX_HEAD {
                return Err(Failure::Protocol);
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        let n = self.io.read(&mut self.buf[self.end..]).await.map_err(|_| Failure::Protocol)?;
        if n == 0 {
            return Err(Failure::Protocol);
        }
        self.end += n;
        Ok(())
    }

    async fn read_head(&mut self) -> Result<(u16, Framing, bool), Failure> {
        loop {
            let mut headers = [httparse::EMPTY_HEADER; 64];
            let mut rsp = httparse::Response::new(&mut headers);
            match rsp.parse(&self.buf[self.start..self.end]) {
                Ok(httparse::Status::Complete(len)) => {
                    let status = rsp.code.unwrap_or(0);
                    let mut framing = Framing::UntilClose;
                    let mut keep_alive = rsp.version == Some(1);
                    for h in rsp.headers.iter() {
                        if h.name.eq_ignore_ascii_case("content-length") {
                            let n = std::str::from_utf8(h.value).ok().and_then(|v| v.trim().parse().ok());
                            framing = Framing::Length(n.ok_or(Failure::Protocol)?);
                        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
                            if h.value.eq_ignore_ascii_case(b"chunked") {
                                framing = Framing::Chunked;
                            }
                        } else if h.name.eq_ignore_ascii_case("connection") {
                            keep_alive = !h.value.eq_ignore_ascii_case(b"close");
                        }
                    }
                    self.start += len;
                    return Ok((status, framing, keep_alive));
                }
                Ok(httparse::Status::Partial) => self.fill().await?,
                Err(_) => return Err(Failure::Protocol),
            }
        }
    }

    /// Consumes `n` body bytes.
    async fn skip(&mut self, mut n: u64) -> Result<(), Failure> {
        loop {
            let have = (self.end - self.start) as u64;
            if have >= n {
                self.start += n as usize;
                return Ok(());
            }
            n -= have;
            self.start = 0;
            self.end = 0;
            self.fill().await?;
        }
    }

    /// Consumes a chunked body (and its trailers); returns the data length.
    async fn skip_chunked(&mut self) -> Result<u64, Failure> {
        let mut total = 0;
        loop {
            let line = self.line().await?;
            let hex = line.split(';').next().unwrap_or("").trim().to_owned();
            let size = u64::from_str_radix(&hex, 16).map_err(|_| Failure::Protocol)?;
            if size == 0 {
                // Trailers, up to the empty line.
                while !self.line().await?.is_empty() {}
                return Ok(total);
            }
            self.skip(size).await?;
            if !self.line().await?.is_empty() {
                return Err(Failure::Protocol);
            }
            total += size;
        }
    }

    /// Reads one CRLF-terminated line (without the CRLF).
    async fn line(&mut self) -> Result<String, Failure> {
        loop {
            if let Some(pos) = self.buf[self.start..self.end].windows(2).position(|w| w == b"\r\n") {
                let s = String::from_utf8_lossy(&self.buf[self.start..self.start + pos]).into_owned();
                self.start += pos + 2;
                return Ok(s);
            }
            if self.end - self.start > 4096 {
                return Err(Failure::Protocol);
            }
            self.fill().await?;
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Framing {
    Length(u64),
    Chunked,
    UntilClose,
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn run(response: &'static [u8]) -> Result<Exchange, Failure> {
        let (client, mut server) = tokio::io::duplex(64);
        tokio::spawn(async move {
            let mut req = [0u8; 64];
            let _ = server.read(&mut req).await;
            let _ = server.write_all(response).await;
        });
        RawConn::new(client).exchange(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n", false).await
    }

    #[tokio::test]
    async fn parses_length_chunked_and_close_framed_bodies() {
        let e = run(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello").await.unwrap();
        assert_eq!((e.status, e.body, e.keep_alive), (200, 5, true));
        let e = run(
            b"HTTP/1.1 404 NF\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6;x=y\r\n world\r\n0\r\nT: 1\r\n\r\n",
        )
        .await
        .unwrap();
        assert_eq!((e.status, e.body), (404, 11));
        let e = run(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nuntil the end").await.unwrap();
        assert_eq!((e.body, e.keep_alive), (13, false));
        assert!(run(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nshort").await.is_err());
        assert!(run(b"garbage\r\n\r\n").await.is_err());
    }
}
