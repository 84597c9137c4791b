//! Stream wrappers: the client idle timeout and the plain-or-TLS upstream stream.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use pin_project_lite::pin_project;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

pin_project! {
    /// Closes a connection on which no byte moved for between one and two `timeout`s.
    ///
    /// Activity only sets a flag (no clock read per I/O); the timer checks and clears it each
    /// time it fires, so the cost per read or write is one store.
    #[derive(Debug)]
    pub struct IdleTimeout<I> {
        #[pin]
        io: I,
        timer: Pin<Box<Sleep>>,
        timeout: Duration,
        active: bool,
    }
}

impl<I> IdleTimeout<I> {
    /// Wraps `io`.
    pub fn new(io: I, timeout: Duration) -> Self {
        Self { io, timer: Box::pin(tokio::time::sleep(timeout)), timeout, active: false }
    }

    /// The wrapped stream.
    pub fn get_ref(&self) -> &I {
        &self.io
    }
}

fn check_idle(timer: Pin<&mut Sleep>, active: &mut bool, timeout: Duration, cx: &mut Context<'_>) -> io::Result<()> {
    let mut timer = timer;
    while timer.as_mut().poll(cx).is_ready() {
        if !std::mem::take(active) {
            return Err(io::Error::new(io::ErrorKind::TimedOut, "client idle timeout"));
        }
        timer.as_mut().reset(Instant::now() + timeout);
    }
    Ok(())
}

use std::future::Future as _;

impl<I: AsyncRead> AsyncRead for IdleTimeout<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        match this.io.poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    *this.active = true;
                }
                Poll::Ready(r)
            }
            Poll::Pending => {
                check_idle(this.timer.as_mut(), this.active, *this.timeout, cx)?;
                Poll::Pending
            }
        }
    }
}

impl<I: AsyncWrite> AsyncWrite for IdleTimeout<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write(cx, data);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            *this.active = true;
        }
        r
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        let r = this.io.poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            *this.active = true;
        }
        r
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().io.poll_shutdown(cx)
    }
}

/// A stream to an upstream: plain TCP or TLS.
#[derive(Debug)]
pub enum UpstreamIo {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP.
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

macro_rules! delegate {
    ($self:ident, $s:ident => $e:expr) => {
        match $self.get_mut() {
            UpstreamIo::Plain($s) => {
                let $s = Pin::new($s);
                $e
            }
            UpstreamIo::Tls($s) => {
                let $s = Pin::new(&mut **$s);
                $e
            }
        }
    };
}

impl AsyncRead for UpstreamIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_read(cx, buf))
    }
}

impl AsyncWrite for UpstreamIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write(cx, data))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        delegate!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Self::Plain(s) => s.is_write_vectored(),
            Self::Tls(s) => s.is_write_vectored(),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        delegate!(self, s => s.poll_shutdown(cx))
    }
}
