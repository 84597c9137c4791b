//! Zero-downtime upgrades of a running `weir standalone` or `weir gateway`.
//!
//! Owns: the upgrade socket's server in a running process (it hands its listening sockets to
//! a successor, and starts that successor on `weir upgrade` or SIGUSR2), the successor's side
//! at start ([`take_over`], [`Predecessor::finish`]), and the `weir upgrade` command. The
//! messages and the socket passing are [`weir_gateway::handover`]'s.
//!
//! The sequence: the successor asks for the sockets, applies its config on them (so both
//! processes accept on the same kernel sockets), says it is ready; only then does the running
//! process stop accepting and drain. A successor that fails at any step exits, and the running
//! process goes on serving as if nothing had happened.

use std::net::SocketAddr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering::SeqCst};
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use weir_gateway::Gateway;
use weir_gateway::handover::{self, HandedSocket, Message, Peer};

/// The name the admin endpoints' socket travels under.
const ADMIN: &str = "@admin";

/// Upgrade flags shared by `weir standalone` and `weir gateway`.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct UpgradeArgs {
    /// Unix socket for zero-downtime upgrades. A process started with the same path takes over
    /// this one's listening sockets, then this one drains; `weir upgrade --socket PATH` or
    /// SIGUSR2 starts that process from this one's binary path and arguments.
    #[arg(long, env = "WEIR_UPGRADE_SOCKET")]
    upgrade_socket: Option<PathBuf>,
    /// How long a new process may take to become ready before its upgrade is abandoned (the
    /// running one keeps serving).
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    upgrade_timeout: Duration,
}

impl UpgradeArgs {
    /// How long a new process may take to become ready.
    pub(crate) fn timeout(&self) -> Duration {
        self.upgrade_timeout
    }
}

/// The running process this one replaces: the sockets it handed over, and the conversation
/// that ends with it draining.
#[derive(Debug)]
pub(crate) struct Predecessor {
    peer: Peer,
    pid: u32,
    sockets: Vec<HandedSocket>,
}

/// Asks the process listening on the upgrade socket, if any, for its listening sockets.
/// `Ok(None)`: no such process (no flag, no socket, or a stale one): start fresh.
pub(crate) async fn take_over(args: &UpgradeArgs) -> Result<Option<Predecessor>, String> {
    let Some(path) = args.upgrade_socket.clone() else { return Ok(None) };
    let timeout = args.upgrade_timeout;
    let joined = tokio::task::spawn_blocking(move || take_over_blocking(&path, timeout)).await;
    joined.map_err(|e| format!("upgrade: {e}"))?
}

fn take_over_blocking(path: &Path, timeout: Duration) -> Result<Option<Predecessor>, String> {
    let stream = match UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
            return Ok(None);
        }
        Err(e) => return Err(format!("cannot reach the upgrade socket {}: {e}", path.display())),
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let mut peer = Peer::new(stream);
    let failed = |e: std::io::Error| format!("taking over from the upgrade socket {}: {e}", path.display());
    peer.send(&Message::Take { pid: std::process::id() }, &[]).map_err(failed)?;
    match peer.recv().map_err(failed)? {
        (Message::Sockets { pid, sockets }, fds) => {
            let sockets = handover::handed_sockets(sockets, fds).map_err(failed)?;
            tracing::info!(
                predecessor = pid,
                sockets = sockets.len(),
                "taking over a running process's listening sockets"
            );
            Ok(Some(Predecessor { peer, pid, sockets }))
        }
        (Message::Error { message }, _) => Err(format!("the running process refused the handover: {message}")),
        (other, _) => Err(format!("the running process answered {other:?} to a handover")),
    }
}

impl Predecessor {
    /// The admin endpoints' socket, if it was handed over for `address`.
    pub(crate) fn take_admin(&mut self, address: SocketAddr) -> Option<std::net::TcpListener> {
        handover::take(&mut self.sockets, ADMIN, address)
    }

    /// The client listeners' sockets, for [`Gateway::inherit`].
    pub(crate) fn listeners(&mut self) -> Vec<HandedSocket> {
        let (admin, listeners) = std::mem::take(&mut self.sockets).into_iter().partition(|s| s.name == ADMIN);
        self.sockets = admin;
        listeners
    }

    /// Tells the predecessor this process serves, and waits until it has stopped taking
    /// handovers and drains.
    pub(crate) async fn finish(self) -> Result<(), String> {
        let pid = self.pid;
        let joined = tokio::task::spawn_blocking(move || {
            let mut peer = self.peer;
            peer.send(&Message::Ready {}, &[])?;
            peer.recv()
        })
        .await;
        match joined.map_err(|e| e.to_string())? {
            Ok((Message::Draining {}, _)) => {
                tracing::info!(predecessor = pid, "took over; the previous process drains");
                Ok(())
            }
            Ok((other, _)) => Err(format!("the previous process (pid {pid}) answered {other:?}")),
            Err(e) => Err(format!("the previous process (pid {pid}) went away: {e}")),
        }
    }
}

/// What the upgrade socket's server needs.
#[derive(Debug)]
struct Shared {
    gw: Arc<Gateway>,
    admin: Option<(SocketAddr, std::net::TcpListener)>,
    /// Cancelled once a successor is ready: the caller drains.
    handed_over: CancellationToken,
    /// A successor is taking the sockets (one at a time).
    busy: AtomicBool,
    /// The last successor that said it was ready.
    ready_pid: AtomicU32,
    /// The successor this process started and waits for: whoever asked for it is answered
    /// before this process drains (and may exit).
    awaited_pid: AtomicU32,
    /// This binary and its arguments, read at start (before an upgrade replaces the file).
    exe: PathBuf,
    argv: Vec<std::ffi::OsString>,
    timeout: Duration,
}

/// The running side: serves the upgrade socket (and SIGUSR2) until a successor takes over,
/// then cancels `handed_over`. Without `--upgrade-socket`, does nothing.
pub(crate) async fn serve(
    args: UpgradeArgs,
    gw: Arc<Gateway>,
    admin: Option<(SocketAddr, std::net::TcpListener)>,
    handed_over: CancellationToken,
) {
    let Some(path) = args.upgrade_socket else { return };
    let listener = match bind(&path) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(socket = %path.display(), error = %e, "cannot bind the upgrade socket; upgrades are off");
            return;
        }
    };
    let shared = Arc::new(Shared {
        gw,
        admin,
        handed_over: handed_over.clone(),
        busy: AtomicBool::new(false),
        ready_pid: AtomicU32::new(0),
        awaited_pid: AtomicU32::new(0),
        exe: std::env::current_exe().unwrap_or_else(|_| PathBuf::from("weir")),
        argv: std::env::args_os().skip(1).collect(),
        timeout: args.upgrade_timeout,
    });
    tracing::info!(socket = %path.display(), "upgrade socket bound");
    tokio::spawn(on_sigusr2(shared.clone()));
    loop {
        let accepted = tokio::select! {
            () = handed_over.cancelled() => break,
            a = listener.accept() => a,
        };
        let Ok((stream, _)) = accepted else { continue };
        let shared = shared.clone();
        tokio::task::spawn_blocking(move || {
            if let Ok(stream) = stream.into_std().and_then(|s| s.set_nonblocking(false).map(|()| s)) {
                converse(&shared, Peer::new(stream));
            }
        });
    }
}

/// Binds the upgrade socket for this process's owner only (whoever connects can take the
/// listening sockets), replacing a stale file.
fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

async fn on_sigusr2(shared: Arc<Shared>) {
    use tokio::signal::unix::{SignalKind, signal};
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else { return };
    while usr2.recv().await.is_some() {
        tracing::info!("SIGUSR2: starting a new process to take over");
        let s = shared.clone();
        match tokio::task::spawn_blocking(move || start_successor(&s)).await {
            Ok(Ok(pid)) => {
                tracing::info!(pid, "upgraded");
                shared.handed_over.cancel();
            }
            Ok(Err(e)) => tracing::error!(error = %e, "upgrade failed; still serving"),
            Err(e) => tracing::error!(error = %e, "upgrade failed; still serving"),
        }
    }
}

/// One connection to the upgrade socket.
fn converse(shared: &Shared, mut peer: Peer) {
    let reply = match peer.recv() {
        Ok((Message::Take { pid }, _)) => return hand_over(shared, peer, pid),
        Ok((Message::Upgrade {}, _)) => match start_successor(shared) {
            Ok(pid) => {
                let _ = peer.send(&Message::Upgraded { pid }, &[]);
                shared.handed_over.cancel();
                return;
            }
            Err(message) => Message::Error { message },
        },
        Ok((other, _)) => Message::Error { message: format!("unexpected {other:?}") },
        Err(e) => {
            tracing::debug!(error = %e, "upgrade socket: unreadable request");
            return;
        }
    };
    let _ = peer.send(&reply, &[]);
}

/// Sends the sockets to successor `pid` and waits for it to serve on them.
fn hand_over(shared: &Shared, mut peer: Peer, pid: u32) {
    if shared.handed_over.is_cancelled() || shared.busy.swap(true, SeqCst) {
        let message = "another process is taking over already".to_owned();
        let _ = peer.send(&Message::Error { message }, &[]);
        return;
    }
    let result = send_sockets(shared, &peer).and_then(|()| {
        let _ = peer.stream().set_read_timeout(Some(shared.timeout));
        peer.recv()
    });
    match result {
        Ok((Message::Ready {}, _)) => {
            tracing::info!(successor = pid, "the new process serves; draining this one");
            shared.ready_pid.store(pid, SeqCst);
            let _ = peer.send(&Message::Draining {}, &[]);
            if shared.awaited_pid.load(SeqCst) != pid {
                // Started by hand, not by this process: nobody else to answer.
                shared.handed_over.cancel();
            }
        }
        Ok((other, _)) => {
            tracing::warn!(successor = pid, answer = ?other, "the new process did not take over; still serving")
        }
        Err(e) => tracing::warn!(successor = pid, error = %e, "the new process did not become ready; still serving"),
    }
    shared.busy.store(false, SeqCst);
}

fn send_sockets(shared: &Shared, peer: &Peer) -> std::io::Result<()> {
    let mut sockets = shared.gw.handed_sockets()?;
    if let Some((address, s)) = &shared.admin {
        sockets.push(HandedSocket { name: ADMIN.into(), address: *address, socket: s.try_clone()? });
    }
    peer.send_sockets(std::process::id(), &sockets)
}

/// Starts this binary again with this process's arguments and waits until it has taken
/// over. Returns its pid, or why it did not. The caller answers whoever asked, then cancels
/// `handed_over`.
fn start_successor(shared: &Shared) -> Result<u32, String> {
    if shared.handed_over.is_cancelled() {
        return Err("this process has handed over already and is draining".into());
    }
    let mut child = std::process::Command::new(&shared.exe)
        .args(&shared.argv)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", shared.exe.display()))?;
    let pid = child.id();
    shared.awaited_pid.store(pid, SeqCst);
    tracing::info!(pid, exe = %shared.exe.display(), "started the new process");
    // Its own timeout bounds the handover; a little more covers its start.
    let deadline = Instant::now() + shared.timeout + Duration::from_secs(5);
    loop {
        if shared.ready_pid.load(SeqCst) == pid {
            return Ok(pid);
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the new process (pid {pid}) exited ({status}) before it was ready; its log says why"));
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!("the new process (pid {pid}) was not ready within {:?}; stopped it", shared.timeout));
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Arguments of `weir upgrade`.
#[derive(Debug, clap::Args)]
pub(crate) struct CmdArgs {
    /// The upgrade socket of the running process (its `--upgrade-socket`).
    #[arg(long, env = "WEIR_UPGRADE_SOCKET")]
    socket: PathBuf,
    /// How long to wait for the new process to take over.
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// `weir upgrade`: asks the running process to start its successor from its binary path
/// (replace the file first to upgrade) and waits until the successor serves.
pub(crate) fn run(args: &CmdArgs) -> ExitCode {
    let result = UnixStream::connect(&args.socket)
        .map_err(|e| {
            let p = args.socket.display();
            format!("cannot reach {p}: {e} (is a weir running with --upgrade-socket {p}?)")
        })
        .and_then(|s| {
            let _ = s.set_read_timeout(Some(args.timeout));
            let mut peer = Peer::new(s);
            peer.send(&Message::Upgrade {}, &[]).and_then(|()| peer.recv()).map_err(|e| e.to_string())
        });
    match result {
        Ok((Message::Upgraded { pid }, _)) => {
            println!("upgraded: the new process (pid {pid}) serves; the previous one drains");
            ExitCode::SUCCESS
        }
        Ok((Message::Error { message }, _)) => {
            eprintln!("upgrade failed: {message}; the running process keeps serving");
            ExitCode::FAILURE
        }
        Ok((other, _)) => {
            eprintln!("upgrade failed: unexpected answer {other:?}");
            ExitCode::FAILURE
        }
        Err(e) => {
            eprintln!("upgrade failed: {e}");
            ExitCode::FAILURE
        }
    }
}
