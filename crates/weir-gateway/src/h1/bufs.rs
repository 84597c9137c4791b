//! Per-worker buffers: a connection holds buffers only while a request is in flight.
//!
//! Owns: [`Bufs`], the scratch of one exchange (read buffer, upstream buffer, head buffer,
//! field spans, filter edits), and a free list of them per worker thread. An idle keep-alive
//! connection gives its `Bufs` back, so ten thousand idle clients hold ten thousand sockets and
//! no buffers, as nginx does; taking and giving back is a thread-local pop and push, no
//! allocation and no lock. Buffers that grew for a large head or body shrink on the way back.

use std::cell::RefCell;

use crate::view::{Edits, FieldSpan};

/// Starting size of the client read buffer (most request heads are well under 1 KiB).
pub(super) const READ_START: usize = 2048;
/// Starting size of the upstream read buffer.
pub(super) const UP_START: usize = 4096;
/// Read size while streaming a body.
pub(super) const STREAM: usize = 64 * 1024;
/// Buffers kept per worker; more are freed.
const KEEP: usize = 128;

/// The scratch of one exchange.
#[derive(Debug)]
pub(super) struct Bufs {
    /// Client bytes: the head at the start, then body or pipelined bytes. Its length is its
    /// capacity (initialised once), the filled part is tracked by the connection.
    pub read: Vec<u8>,
    /// Upstream bytes, same convention.
    pub up: Vec<u8>,
    /// A head being written (upstream request, client response).
    pub head: Vec<u8>,
    /// Fields of the request head.
    pub fields: Vec<FieldSpan>,
    /// Fields of the response head.
    pub up_fields: Vec<FieldSpan>,
    /// The filters' changes to the request.
    pub edits: Edits,
}

impl Bufs {
    fn new() -> Box<Self> {
        Box::new(Self {
            read: vec![0; READ_START],
            up: vec![0; UP_START],
            head: Vec::with_capacity(512),
            fields: Vec::with_capacity(16),
            up_fields: Vec::with_capacity(16),
            edits: Edits::default(),
        })
    }

    /// Back to starting sizes where a large message grew them.
    fn shrink(&mut self) {
        if self.read.len() > READ_START {
            self.read = vec![0; READ_START];
        }
        if self.up.len() > UP_START {
            self.up = vec![0; UP_START];
        }
        if self.head.capacity() > 8192 {
            self.head = Vec::with_capacity(512);
        }
        self.edits.clear();
    }
}

thread_local! {
    // Boxed: a connection holds one `Bufs` by pointer, so taking and giving moves 8 bytes.
    #[allow(clippy::vec_box)]
    static FREE: RefCell<Vec<Box<Bufs>>> = const { RefCell::new(Vec::new()) };
}

/// A `Bufs` from this worker's free list, or a new one.
pub(super) fn take() -> Box<Bufs> {
    FREE.with_borrow_mut(Vec::pop).unwrap_or_else(Bufs::new)
}

/// Gives `b` back to this worker's free list.
pub(super) fn give(mut b: Box<Bufs>) {
    b.shrink();
    FREE.with_borrow_mut(|free| {
        if free.len() < KEEP {
            free.push(b);
        }
    });
}

/// Makes `buf` (length = capacity) at least `want` bytes, doubling.
pub(super) fn grow(buf: &mut Vec<u8>, want: usize) {
    if buf.len() < want {
        let n = want.max(buf.len() * 2);
        buf.resize(n, 0);
    }
}
