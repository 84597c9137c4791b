//! Handing listening sockets to a successor process, for upgrades that drop no connection.
//!
//! Owns: the wire protocol spoken over the upgrade socket (a Unix stream socket) and the
//! passing of listening sockets with `SCM_RIGHTS`. Both processes then hold the same kernel
//! sockets, so the accept queue is never closed: connections waiting in it are accepted by
//! whichever process is still accepting, and none is refused while the old one drains.
//!
//! The exchange, one JSON message per line:
//! - successor → `{"take":{"pid":N}}`; running process → `{"sockets":…}` with the sockets
//!   attached, or `{"error":…}`;
//! - successor, once it serves → `{"ready":{}}`; running process → `{"draining":{}}`, and it
//!   stops accepting and drains;
//! - `weir upgrade` → `{"upgrade":{}}`; running process starts its successor and answers
//!   `{"upgraded":{"pid":N}}` once it is ready, or `{"error":…}`.
//!
//! Which process to start and when to drain is the binary's; this module knows sockets and
//! messages only.

use std::io::{self, IoSlice, IoSliceMut, Write};
use std::mem::MaybeUninit;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::net::UnixStream;

use rustix::net::{
    RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags, SendAncillaryBuffer, SendAncillaryMessage, SendFlags,
};
use serde::{Deserialize, Serialize};

/// Most listening sockets one handover carries.
pub const MAX_SOCKETS: usize = 64;
/// Longest message accepted on the upgrade socket.
const MAX_MESSAGE: usize = 1 << 20;

/// A listening socket handed from one process to the next, with what it was bound for.
#[derive(Debug)]
pub struct HandedSocket {
    /// The listener's name (`@admin` for the admin endpoints).
    pub name: String,
    /// The address its config names (not the bound one: port 0 stays 0), so the successor
    /// matches it to the same config entry.
    pub address: SocketAddr,
    /// The socket itself.
    pub socket: std::net::TcpListener,
}

/// What a handed socket is, on the wire (the socket itself travels beside it).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SocketInfo {
    /// The listener's name.
    pub name: String,
    /// The address its config names.
    pub address: SocketAddr,
}

/// One message on the upgrade socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Message {
    /// A successor asks for the listening sockets.
    Take {
        /// The successor's process id.
        pid: u32,
    },
    /// The running process's sockets, in the order of the attached descriptors.
    Sockets {
        /// The running process's id.
        pid: u32,
        /// One entry per attached socket.
        sockets: Vec<SocketInfo>,
    },
    /// The successor serves on every socket: the running process may stop accepting.
    Ready {},
    /// The running process has stopped taking handovers and drains.
    Draining {},
    /// `weir upgrade` asks the running process to start its successor.
    Upgrade {},
    /// The successor started and took over.
    Upgraded {
        /// The successor's process id.
        pid: u32,
    },
    /// What went wrong, in plain words.
    Error {
        /// The reason.
        message: String,
    },
}

/// One end of an upgrade-socket conversation: the stream and any bytes read past the last
/// message.
#[derive(Debug)]
pub struct Peer {
    stream: UnixStream,
    pending: Vec<u8>,
}

impl Peer {
    /// Wraps a connected (blocking) stream.
    pub fn new(stream: UnixStream) -> Self {
        Self { stream, pending: Vec::new() }
    }

    /// The stream, to set timeouts on.
    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Sends `msg` as one line with `fds` attached.
    pub fn send(&self, msg: &Message, fds: &[BorrowedFd<'_>]) -> io::Result<()> {
        let mut line = serde_json::to_vec(msg).map_err(io::Error::other)?;
        line.push(b'\n');
        if fds.is_empty() {
            return (&self.stream).write_all(&line);
        }
        if fds.len() > MAX_SOCKETS {
            return Err(io::Error::other(format!(
                "{} sockets is more than one handover carries ({MAX_SOCKETS})",
                fds.len()
            )));
        }
        let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
        let mut control = SendAncillaryBuffer::new(&mut space);
        if !control.push(SendAncillaryMessage::ScmRights(fds)) {
            return Err(io::Error::other("the sockets do not fit one message"));
        }
        // The descriptors go with the first byte; the rest of the line follows as plain data.
        let sent = rustix::net::sendmsg(&self.stream, &[IoSlice::new(&line)], &mut control, SendFlags::empty())?;
        (&self.stream).write_all(&line[sent..])
    }

    /// Reads one line and the descriptors that came with it (close-on-exec, so a process this
    /// one starts does not inherit them by accident).
    pub fn recv(&mut self) -> io::Result<(Message, Vec<OwnedFd>)> {
        let mut fds = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let msg = serde_json::from_slice(&line[..end])
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, format!("not an upgrade message: {e}")))?;
                return Ok((msg, fds));
            }
            if self.pending.len() > MAX_MESSAGE {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "upgrade message too long"));
            }
            let mut space = [MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX_SOCKETS))];
            let mut control = RecvAncillaryBuffer::new(&mut space);
            let got = rustix::net::recvmsg(
                &self.stream,
                &mut [IoSliceMut::new(&mut chunk)],
                &mut control,
                RecvFlags::CMSG_CLOEXEC,
            )?;
            for m in control.drain() {
                if let RecvAncillaryMessage::ScmRights(received) = m {
                    fds.extend(received);
                }
            }
            if got.bytes == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the other process closed the upgrade socket",
                ));
            }
            self.pending.extend_from_slice(&chunk[..got.bytes]);
        }
    }

    /// Sends `sockets` as the answer to a [`Message::Take`].
    pub fn send_sockets(&self, pid: u32, sockets: &[HandedSocket]) -> io::Result<()> {
        let info = sockets.iter().map(|s| SocketInfo { name: s.name.clone(), address: s.address }).collect();
        let fds: Vec<BorrowedFd<'_>> = sockets.iter().map(|s| s.socket.as_fd()).collect();
        self.send(&Message::Sockets { pid, sockets: info }, &fds)
    }
}

/// Pairs a [`Message::Sockets`] with its descriptors.
pub fn handed_sockets(info: Vec<SocketInfo>, fds: Vec<OwnedFd>) -> io::Result<Vec<HandedSocket>> {
    if info.len() != fds.len() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{} sockets described but {} received", info.len(), fds.len()),
        ));
    }
    Ok(info
        .into_iter()
        .zip(fds)
        .map(|(i, fd)| HandedSocket { name: i.name, address: i.address, socket: std::net::TcpListener::from(fd) })
        .collect())
}

/// Takes the first socket handed for `name` at `address`, or failing that the first for
/// `address` under another name (a renamed listener keeps its socket).
pub fn take(sockets: &mut Vec<HandedSocket>, name: &str, address: SocketAddr) -> Option<std::net::TcpListener> {
    let at = sockets
        .iter()
        .position(|s| s.name == name && s.address == address)
        .or_else(|| sockets.iter().position(|s| s.address == address))?;
    Some(sockets.remove(at).socket)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sockets_cross_a_unix_socket_and_still_accept() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, mut b) = (Peer::new(a), Peer::new(b));
        let l1 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let l2 = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (addr1, addr2) = (l1.local_addr().unwrap(), l2.local_addr().unwrap());
        let handed = vec![
            HandedSocket { name: "main".into(), address: "127.0.0.1:0".parse().unwrap(), socket: l1 },
            HandedSocket { name: "@admin".into(), address: addr2, socket: l2 },
        ];
        a.send_sockets(7, &handed).unwrap();
        drop(handed);
        let (msg, fds) = b.recv().unwrap();
        let Message::Sockets { pid, sockets } = msg else { panic!("{msg:?}") };
        assert_eq!(pid, 7);
        let mut got = handed_sockets(sockets, fds).unwrap();
        // The originals are closed: only the received descriptors keep the sockets open.
        let main = take(&mut got, "main", "127.0.0.1:0".parse().unwrap()).unwrap();
        assert_eq!(main.local_addr().unwrap(), addr1);
        let _client = std::net::TcpStream::connect(addr1).unwrap();
        main.accept().unwrap();
        let admin = take(&mut got, "renamed", addr2).unwrap();
        assert_eq!(admin.local_addr().unwrap(), addr2);
        assert!(got.is_empty());
    }

    #[test]
    fn lines_read_together_are_both_delivered_then_eof() {
        let (a, b) = UnixStream::pair().unwrap();
        let (a, mut b) = (Peer::new(a), Peer::new(b));
        a.send(&Message::Take { pid: 42 }, &[]).unwrap();
        a.send(&Message::Ready {}, &[]).unwrap();
        drop(a);
        let (first, fds) = b.recv().unwrap();
        assert_eq!((first, fds.len()), (Message::Take { pid: 42 }, 0));
        assert_eq!(b.recv().unwrap().0, Message::Ready {});
        assert_eq!(b.recv().unwrap_err().kind(), io::ErrorKind::UnexpectedEof);
    }
}
