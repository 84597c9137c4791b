//! A real Redis server for a test: started on a free loopback port, killed when dropped.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub struct Redis {
    child: Child,
    pub port: u16,
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port that was free a moment ago. Another process may take it before redis-server binds
/// it, so `redis()` retries with a new one when the server exits.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// Sends `PING` to `port` and reads one reply line; `Some(true)` for `+PONG`.
async fn ping(port: u16) -> Option<bool> {
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok()?;
    s.write_all(b"PING\r\n").await.ok()?;
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while !got.ends_with(b"\r\n") {
        let n = s.read(&mut buf).await.ok()?;
        if n == 0 {
            return None;
        }
        got.extend_from_slice(&buf[..n]);
    }
    Some(got.starts_with(b"+PONG"))
}

/// Whether a Redis server answers `PING` with `+PONG` on `port` (a server still loading says
/// `-LOADING`; a port taken by something else may never answer).
async fn pong(port: u16) -> bool {
    matches!(tokio::time::timeout(Duration::from_secs(2), ping(port)).await, Ok(Some(true)))
}

pub async fn redis() -> Redis {
    for _attempt in 0..3 {
        let port = free_port();
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (.ci/run installs it; apt-get install redis-server)");
        // Owned by the guard from here on, so it is killed and reaped whatever happens.
        let mut guard = Redis { child, port };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            // It exited: most likely the port was taken in the meantime; try another one.
            if guard.child.try_wait().unwrap().is_some() {
                break;
            }
            if pong(port).await {
                return guard;
            }
            assert!(tokio::time::Instant::now() < deadline, "redis-server on port {port} never answered PING");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    panic!("redis-server exited at start three times (ports taken?)");
}
