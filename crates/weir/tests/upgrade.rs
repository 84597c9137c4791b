//! Zero-downtime upgrades through the real binary: successive `weir upgrade`s (and SIGUSR2)
//! during a load run fail no request and refuse no connection; a new process that cannot
//! start leaves the running one serving.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// Processes the test started indirectly (successors), killed when it ends however it ends.
#[derive(Default)]
struct Successors(std::sync::Mutex<Vec<u32>>);

impl Successors {
    fn add(&self, pid: u32) {
        self.0.lock().unwrap().push(pid);
    }
}

impl Drop for Successors {
    fn drop(&mut self) {
        for pid in self.0.lock().unwrap().iter() {
            let _ = Command::new("kill").args(["-KILL", &pid.to_string()]).status();
        }
    }
}

/// Whether `pid` runs (not gone, not a zombie waiting to be reaped).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| s.rsplit(')').next().and_then(|r| r.split_whitespace().next()) != Some("Z"))
}

/// `weir upgrade --socket SOCK`: the new process's pid, or what it printed.
fn upgrade(sock: &Path) -> Result<u32, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_weir"))
        .args(["upgrade", "--socket", sock.to_str().unwrap(), "--timeout", "30s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        return Err(format!("{}{stdout}", String::from_utf8_lossy(&out.stderr)));
    }
    let pid = stdout.split("pid ").nth(1).and_then(|r| r.split(')').next()).and_then(|p| p.parse().ok());
    pid.ok_or_else(|| format!("no pid in {stdout:?}"))
}

#[derive(Default)]
struct Tally {
    ok: AtomicUsize,
    failed: AtomicUsize,
    refused: AtomicUsize,
}

/// A 200 with its whole body, or what came instead.
async fn answered(r: hyper::Result<hyper::Response<hyper::body::Incoming>>) -> Result<(), String> {
    let r = r.map_err(|e| e.to_string())?;
    if r.status() != 200 {
        return Err(format!("status {}", r.status()));
    }
    r.into_body().collect().await.map(drop).map_err(|e| e.to_string())
}

/// A keep-alive client as real ones behave: a connection the server closed while idle (after
/// `Connection: close`) is replaced before the next request; a request sent and not answered
/// is a failure.
async fn keep_alive_load(addr: SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    let mut sender: Option<hyper::client::conn::http1::SendRequest<Full<Bytes>>> = None;
    while !stop.load(SeqCst) {
        let ready = match sender.as_mut() {
            Some(s) => s.ready().await.is_ok(),
            None => false,
        };
        if !ready {
            let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
                tally.refused.fetch_add(1, SeqCst);
                continue;
            };
            let (s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
            tokio::spawn(conn);
            sender = Some(s);
        }
        let req = hyper::Request::get("/").header("host", "weir").body(Full::new(Bytes::new())).unwrap();
        let Some(s) = sender.as_mut() else { continue };
        match answered(s.send_request(req).await).await {
            Ok(()) => tally.ok.fetch_add(1, SeqCst),
            Err(e) => {
                eprintln!("keep-alive request failed: {e}");
                sender = None;
                tally.failed.fetch_add(1, SeqCst)
            }
        };
    }
}

/// One new connection per request: counts refused connections.
async fn new_connection_load(addr: SocketAddr, tally: Arc<Tally>, stop: Arc<AtomicBool>) {
    while !stop.load(SeqCst) {
        let Ok(s) = tokio::net::TcpStream::connect(addr).await else {
            tally.refused.fetch_add(1, SeqCst);
            continue;
        };
        let (mut s, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await.unwrap();
        tokio::spawn(conn);
        let req = hyper::Request::get("/").header("host", "weir").body(Full::new(Bytes::new())).unwrap();
        match answered(s.send_request(req).await).await {
            Ok(()) => tally.ok.fetch_add(1, SeqCst),
            Err(e) => {
                eprintln!("request on a new connection failed: {e}");
                tally.failed.fetch_add(1, SeqCst)
            }
        };
    }
}

/// A Weir with one route to an upstream, started with an upgrade socket (returned with what
/// must outlive the test).
async fn upgradable() -> (Upstream, tempfile::TempDir, std::path::PathBuf, Weir) {
    let app = named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let yaml = config("  - { name: all, upstream: app }", &upstream_yaml("app", "round_robin", &[(app.port(), 1)], ""));
    let weir = Weir::start_with(&yaml, &["--upgrade-socket", sock.to_str().unwrap()]);
    assert!(weir.wait_log("upgrade socket bound", Duration::from_secs(10)).await, "{}", weir.logs());
    (app, dir, sock, weir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_upgrades_under_load_fail_no_request_and_refuse_no_connection() {
    let (_app, _dir, sock, weir) = upgradable().await;
    let successors = Successors::default();
    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let mut load = Vec::new();
    for i in 0..4 {
        let (tally, stop) = (tally.clone(), stop.clone());
        load.push(if i == 3 {
            tokio::spawn(new_connection_load(weir.addr, tally, stop))
        } else {
            tokio::spawn(keep_alive_load(weir.addr, tally, stop))
        });
    }
    let mut previous = weir.proc.child.id();
    let mut pids = vec![previous];
    for round in 1..=10 {
        let before = tally.ok.load(SeqCst);
        let pid = if round == 5 {
            // The signal path: SIGUSR2 to the running process does what `weir upgrade` asks.
            let from = weir.proc.log_len();
            Command::new("kill").args(["-USR2", &previous.to_string()]).status().unwrap();
            let line = weir.proc.wait_line_from(from, "upgraded", Duration::from_secs(30));
            line.split("pid=").nth(1).and_then(|p| p.split_whitespace().next()).unwrap().parse().unwrap()
        } else {
            let sock = sock.clone();
            tokio::task::spawn_blocking(move || upgrade(&sock))
                .await
                .unwrap()
                .unwrap_or_else(|e| panic!("round {round}: {e}"))
        };
        successors.add(pid);
        assert!(!pids.contains(&pid), "round {round}: pid {pid} again");
        pids.push(pid);
        previous = pid;
        // Traffic flows between upgrades, so every round overlaps live requests.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while tally.ok.load(SeqCst) < before + 50 {
            assert!(tokio::time::Instant::now() < deadline, "round {round}: no traffic served\n{}", weir.logs());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
    stop.store(true, SeqCst);
    for l in load {
        l.await.unwrap();
    }
    let (ok, failed, refused) = (tally.ok.load(SeqCst), tally.failed.load(SeqCst), tally.refused.load(SeqCst));
    eprintln!("{ok} requests served across 10 upgrades");
    assert_eq!((failed, refused), (0, 0), "failed and refused during upgrades\n{}", weir.logs());
    // Every replaced process drained and exited; the last one serves alone.
    let mut weir = weir;
    let first = weir.proc.child.wait().unwrap();
    assert!(first.success(), "the first process exited with {first:?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    while pids[..pids.len() - 1].iter().any(|&p| alive(p)) {
        assert!(std::time::Instant::now() < deadline, "a replaced process is still running: {pids:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(previous));
    assert_eq!(get(weir.addr, "/", &[]).await.0, 200);
    assert_eq!(get(weir.admin, "/readyz", &[]).await.0, 200, "the admin socket was handed over too");
}

#[tokio::test]
async fn a_new_process_that_cannot_start_leaves_the_old_one_serving() {
    let (_app, _dir, sock, weir) = upgradable().await;
    let successors = Successors::default();
    // The file is read again by the new process: broken, it refuses to start…
    let good = std::fs::read_to_string(&weir.config).unwrap();
    std::fs::write(&weir.config, good.replace("upstream: app", "upstream: nowhere")).unwrap();
    let s = sock.clone();
    let err = tokio::task::spawn_blocking(move || upgrade(&s)).await.unwrap().unwrap_err();
    assert!(err.contains("exited") && err.contains("keeps serving"), "{err}");
    // …and the running process never stopped (it also kept its own, last good config).
    assert!(alive(weir.proc.child.id()));
    assert_eq!(get(weir.addr, "/", &[]).await.0, 200);
    // Fixed, the same upgrade goes through, and the socket is the new process's now.
    std::fs::write(&weir.config, &good).unwrap();
    let s = sock.clone();
    let pid = tokio::task::spawn_blocking(move || upgrade(&s)).await.unwrap().unwrap();
    successors.add(pid);
    assert_eq!(get(weir.addr, "/", &[]).await.0, 200);
    let mut weir = weir;
    assert!(weir.proc.child.wait().unwrap().success());
    let s = sock.clone();
    let next = tokio::task::spawn_blocking(move || upgrade(&s)).await.unwrap().unwrap();
    successors.add(next);
    assert_ne!(next, pid);
    assert_eq!(get(weir.addr, "/", &[]).await.0, 200);
}

#[test]
fn upgrade_without_a_running_process_says_what_to_check() {
    let dir = tempfile::tempdir().unwrap();
    let err = upgrade(&dir.path().join("none.sock")).unwrap_err();
    assert!(err.contains("--upgrade-socket"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fleet_gateway_hands_over_once_its_successor_has_a_config() {
    let app = named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let cp = fleet::Cp::start(dir.path(), 0, &[]);
    cp.apply_one_route(dir.path(), "all", app.port());
    let sock = dir.path().join("gw.sock");
    let gw = fleet::Gw::start_with(
        "gw1",
        &cp.grpc_url(),
        &dir.path().join("gw"),
        "127.0.0.1:0",
        &["--upgrade-socket", sock.to_str().unwrap()],
    );
    let addr = gw.listen_addr();
    gw.wait_serves(addr, "/", "app", Duration::from_secs(10)).await;
    let successors = Successors::default();
    let (tally, stop) = (Arc::new(Tally::default()), Arc::new(AtomicBool::new(false)));
    let load = tokio::spawn(keep_alive_load(addr, tally.clone(), stop.clone()));
    let s = sock.clone();
    let pid = tokio::task::spawn_blocking(move || upgrade(&s)).await.unwrap().unwrap_or_else(|e| panic!("{e}"));
    successors.add(pid);
    let before = tally.ok.load(SeqCst);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while tally.ok.load(SeqCst) < before + 50 {
        assert!(tokio::time::Instant::now() < deadline, "no traffic after the upgrade");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    stop.store(true, SeqCst);
    load.await.unwrap();
    assert_eq!((tally.failed.load(SeqCst), tally.refused.load(SeqCst)), (0, 0));
    let mut gw = gw;
    assert!(gw.proc.child.wait().unwrap().success(), "the replaced gateway exits 0");
    // The successor registered under the same id and serves the same config.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while cp.gateway("gw1").await["status"] != "up" {
        assert!(tokio::time::Instant::now() < deadline, "{}", cp.gateway("gw1").await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(get(addr, "/", &[]).await, (200, Bytes::from_static(b"app")));
}
