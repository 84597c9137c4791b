//! The adaptation layer end to end: one control plane drives a Weir gateway, nginx (through
//! `weir adapter nginx`) and HAProxy (through `weir adapter haproxy`), all real processes on
//! loopback. The same config serves the same routes with the same balancing on all three; a
//! change reloads nginx and HAProxy without a failed request; what a proxy cannot express is
//! NACKed with its resource's path while that proxy keeps serving; the proxies keep their
//! config when the control plane dies; a restarted adapter re-syncs without reloading.

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::SeqCst};
use std::time::Duration;

use common::fleet::{Cp, Gw, Proc};
use common::{Client, named, wait_until};

fn free_addr() -> SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `weir adapter KIND` and the proxy it drives (stopped when this is dropped).
struct Adapter {
    proc: Proc,
    kind: &'static str,
    dir: PathBuf,
    listen: SocketAddr,
    status: SocketAddr,
}

impl Adapter {
    fn start(kind: &'static str, cp: &Cp, dir: &Path) -> Adapter {
        let (listen, status) = (free_addr(), free_addr());
        Self::start_at(kind, cp, dir, listen, status)
    }

    fn start_at(kind: &'static str, cp: &Cp, dir: &Path, listen: SocketAddr, status: SocketAddr) -> Adapter {
        let id = format!("{kind}-1");
        let (listen_arg, status_arg) = (format!("public={listen}"), status.to_string());
        let args = [
            "adapter",
            kind,
            "--id",
            &id,
            "--control-plane",
            &cp.grpc_url(),
            "--config-dir",
            dir.to_str().unwrap(),
            "--label",
            &format!("kind={kind}"),
            "--listen",
            &listen_arg,
            "--status-address",
            &status_arg,
            "--workers",
            "1",
        ];
        let proc = Proc::spawn(&args, dir.parent().unwrap());
        Adapter { proc, kind, dir: dir.to_owned(), listen, status }
    }

    fn master(&self) -> Option<u32> {
        std::fs::read_to_string(self.dir.join(format!("{}.pid", self.kind))).ok()?.trim().parse().ok()
    }

    /// The proxy's worker processes: a reload replaces them.
    fn workers(&self) -> Vec<u32> {
        weir_adapter::driven::children(self.master().expect("the proxy runs"))
    }
}

/// Stops the proxy an adapter started (it outlives its adapter on purpose).
struct StopProxy(PathBuf);

impl Drop for StopProxy {
    fn drop(&mut self) {
        if let Ok(pid) = std::fs::read_to_string(&self.0) {
            let _ = std::process::Command::new("kill").args(["-TERM", pid.trim()]).status();
        }
    }
}

async fn applied(cp: &Cp, id: &str) -> u64 {
    cp.gateway(id).await["applied_revision"].as_u64().unwrap_or(0)
}

async fn wait_applied(cp: &Cp, id: &str, revision: u64) {
    wait_until(&format!("{id} applies revision {revision}"), Duration::from_secs(20), || async {
        applied(cp, id).await >= revision
    })
    .await;
}

/// Which upstream answered each of `n` requests for `path`.
async fn tally(addr: SocketAddr, path: &str, headers: &[(&str, &str)], n: usize) -> BTreeMap<String, usize> {
    let mut c = Client::connect(addr).await;
    let mut seen = BTreeMap::new();
    for _ in 0..n {
        let rsp = c.send("GET", path, headers).await;
        assert_eq!(rsp.status(), 200, "{path} through {addr}");
        let body = http_body_util::BodyExt::collect(rsp.into_body()).await.unwrap().to_bytes();
        *seen.entry(String::from_utf8_lossy(&body).into_owned()).or_default() += 1;
    }
    seen
}

/// Keep-alive clients sending `GET /` until stopped. A request is failed when it gets no 200;
/// like every HTTP client (RFC 9112 §9.3.1) one whose reused connection was closed or reset
/// before any answer is sent again, once, on a new connection: only a failure on a fresh
/// connection, or an answer other than 200, counts.
struct Traffic {
    stop: Arc<AtomicBool>,
    ok: Arc<AtomicU64>,
    failed: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Traffic {
    fn start(addr: SocketAddr, clients: usize) -> Traffic {
        let failed: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
        let (stop, ok) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicU64::new(0)));
        let tasks = (0..clients)
            .map(|_| {
                let (stop, ok, failed) = (stop.clone(), ok.clone(), Arc::clone(&failed));
                tokio::spawn(async move {
                    let mut c = Client::connect(addr).await;
                    let mut reused = false;
                    while !stop.load(SeqCst) {
                        let mut outcome = c.try_send("GET", "/", &[], bytes::Bytes::new()).await;
                        // No answer on a connection that served before: closed (or reset) by the
                        // proxy as it went idle; send again on a new one.
                        if outcome.is_err() && reused {
                            c = Client::connect(addr).await;
                            outcome = c.try_send("GET", "/", &[], bytes::Bytes::new()).await;
                        }
                        reused = outcome.is_ok();
                        match outcome {
                            Ok(r) if r.status() == 200 => {
                                let _ = http_body_util::BodyExt::collect(r.into_body()).await;
                                ok.fetch_add(1, SeqCst);
                            }
                            Ok(r) => failed.lock().unwrap().push(format!("status {}", r.status())),
                            Err(e) => {
                                failed.lock().unwrap().push(format!("error {e}"));
                                c = Client::connect(addr).await;
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(2)).await;
                    }
                })
            })
            .collect();
        Traffic { stop, ok, failed, tasks }
    }

    async fn stop(self) -> (u64, Vec<String>) {
        self.stop.store(true, SeqCst);
        for t in self.tasks {
            t.await.unwrap();
        }
        (self.ok.load(SeqCst), self.failed.lock().unwrap().clone())
    }
}

fn example(ports: [u16; 3]) -> String {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/weir.yaml");
    let text = std::fs::read_to_string(root).unwrap();
    // The fleet declares no admin or listener addresses: each gateway has its own.
    let text: String = text.lines().filter(|l| !l.starts_with("admin:")).collect::<Vec<_>>().join("\n");
    text.replace("listeners:\n  - { name: public, address: 127.0.0.1:8080 }\n", "")
        .replace("9001", &ports[0].to_string())
        .replace("9002", &ports[1].to_string())
        .replace("9003", &ports[2].to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_control_plane_drives_weir_nginx_and_haproxy_alike() {
    let tmp = tempfile::tempdir().unwrap();
    let (a, b, v2) = (named("a").await, named("b").await, named("v2").await);
    let cp = Cp::start(tmp.path(), 0, &[]);
    let gw = Gw::start("weir-1", &cp.grpc_url(), &tmp.path().join("gw"), "public=127.0.0.1:0");
    let nginx = Adapter::start("nginx", &cp, &tmp.path().join("nginx"));
    let haproxy = Adapter::start("haproxy", &cp, &tmp.path().join("haproxy"));
    let _stop = [nginx.dir.join("nginx.pid"), haproxy.dir.join("haproxy.pid")].map(StopProxy);

    // The example config: all three serve the same routes with the same balancing.
    let yaml = example([a.port(), b.port(), v2.port()]);
    cp.apply(tmp.path(), &yaml);
    let rev = cp.revision().await;
    for id in ["weir-1", "nginx-1", "haproxy-1"] {
        wait_applied(&cp, id, rev).await;
    }
    let members = [("weir", gw.listen_addr()), ("nginx", nginx.listen), ("haproxy", haproxy.listen)];
    for (kind, addr) in members {
        // `users` goes to `orders`: smooth weighted round robin, weights 3:1.
        let seen = tally(addr, "/users/7", &[], 400).await;
        let (na, nb) = (seen.get("a").copied().unwrap_or(0), seen.get("b").copied().unwrap_or(0));
        assert!(na.abs_diff(300) <= 4 && nb.abs_diff(100) <= 4, "{kind}: weights 3:1 gave {seen:?}");
        // The header canary wins over the split; the split sends about 10 % to v2.
        let canary = tally(addr, "/orders/1", &[("x-canary", "true")], 20).await;
        assert_eq!(canary, BTreeMap::from([("v2".to_owned(), 20)]), "{kind}: header canary");
        let split = tally(addr, "/orders/1", &[], 300).await;
        let to_v2 = split.get("v2").copied().unwrap_or(0);
        assert!((10..=60).contains(&to_v2), "{kind}: a 90/10 split sent {to_v2} of 300 to v2: {split:?}");
    }

    // A change under load: nginx and HAProxy reload without failing a request.
    let loads = [Traffic::start(nginx.listen, 4), Traffic::start(haproxy.listen, 4)];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let changed = yaml.replace("  - name: default\n    upstream: orders", "  - name: default\n    upstream: orders-v2");
    assert_ne!(changed, yaml);
    cp.apply(tmp.path(), &changed);
    let rev = cp.revision().await;
    for id in ["weir-1", "nginx-1", "haproxy-1"] {
        wait_applied(&cp, id, rev).await;
    }
    for (kind, addr) in members {
        assert_eq!(
            tally(addr, "/", &[], 10).await,
            BTreeMap::from([("v2".to_owned(), 10)]),
            "{kind} serves the change"
        );
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (load, kind) in loads.into_iter().zip(["nginx", "haproxy"]) {
        let (ok, failed) = load.stop().await;
        assert!(ok > 100, "{kind}: only {ok} requests during the reload");
        assert!(failed.is_empty(), "{kind}: {} of {} requests failed during the reload: {failed:?}", failed.len(), ok);
    }

    // A route nginx and HAProxy cannot express: they NACK it by path and serve on; Weir applies it.
    let before = nginx.workers();
    let secured = "routes:\n  - name: secured\n    match: { path: { prefix: /secured } }\n    upstream: orders\n    plugins:\n      - { name: jwt-auth, config: { keys: [{ alg: HS256, secret: a-secret-of-32-bytes-or-more-xx }] } }\n";
    cp.apply(tmp.path(), secured);
    let rev = cp.revision().await;
    wait_applied(&cp, "weir-1", rev).await;
    for id in ["nginx-1", "haproxy-1"] {
        wait_until(&format!("{id} NACKs revision {rev}"), Duration::from_secs(20), || async {
            cp.gateway(id).await["last_nack"]["revision"].as_u64() == Some(rev)
        })
        .await;
        let g = cp.gateway(id).await;
        let errors: Vec<&str> =
            g["last_nack"]["errors"].as_array().unwrap().iter().filter_map(|e| e.as_str()).collect();
        assert!(errors.iter().any(|e| e.starts_with("Route/secured.plugins.jwt-auth: ")), "{id}: {errors:?}");
        assert_eq!(g["applied_revision"].as_u64(), Some(rev - 1), "{id} still serves the previous revision");
        assert_eq!(g["kind"], id.split('-').next().unwrap());
    }
    let (status, _) = common::get(gw.listen_addr(), "/secured", &[]).await;
    assert_eq!(status, 401, "Weir enforces the jwt-auth route");
    for (kind, addr) in [("nginx", nginx.listen), ("haproxy", haproxy.listen)] {
        assert_eq!(tally(addr, "/secured", &[], 3).await, BTreeMap::from([("v2".to_owned(), 3)]), "{kind} serves on");
    }
    assert_eq!(nginx.workers(), before, "a refused revision does not reload nginx");

    // Taking the route out again: the config nginx serves is the one wanted, so no reload.
    let out = cp.ctl(&["delete", "route", "secured"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rev = cp.revision().await;
    for id in ["weir-1", "nginx-1", "haproxy-1"] {
        wait_applied(&cp, id, rev).await;
    }
    assert_eq!(nginx.workers(), before, "an unchanged rendering does not reload nginx");

    // A staged rollout treats an adapter like a gateway: nginx is the canary, the rest wait.
    let f = tmp.path().join("staged.yaml");
    std::fs::write(&f, &yaml).unwrap();
    let out = cp.ctl(&["apply", "-f", f.to_str().unwrap(), "--canary-selector", "kind=nginx", "--bake", "1h"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let staged = cp.revision().await;
    wait_applied(&cp, "nginx-1", staged).await;
    let back_to_orders = |seen: BTreeMap<String, usize>| seen.keys().all(|k| k == "a" || k == "b");
    assert!(back_to_orders(tally(nginx.listen, "/", &[], 8).await), "the canary serves the rollout");
    for (id, addr) in [("weir-1", members[0].1), ("haproxy-1", haproxy.listen)] {
        assert_eq!(tally(addr, "/", &[], 4).await, BTreeMap::from([("v2".to_owned(), 4)]), "{id} is held");
        assert_eq!(applied(&cp, id).await, rev, "{id} is held at the previous revision");
    }
    let out = cp.ctl(&["rollout", "promote"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    for id in ["weir-1", "haproxy-1"] {
        wait_applied(&cp, id, staged).await;
    }
    assert!(back_to_orders(tally(haproxy.listen, "/", &[], 8).await), "haproxy serves the promoted revision");
    let (rev, before) = (staged, nginx.workers());

    // The control plane dies: the proxies keep their last config.
    let cp_dir = tmp.path().to_owned();
    let grpc_port = cp.grpc.port();
    drop(cp);
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (kind, addr) in [("nginx", nginx.listen), ("haproxy", haproxy.listen)] {
        assert_eq!(tally(addr, "/users/1", &[], 4).await.values().sum::<usize>(), 4, "{kind} without a control plane");
    }

    // A restarted adapter re-syncs without reloading the proxy.
    let cp = Cp::start(&cp_dir, grpc_port, &[]);
    let (listen, status, dir) = (nginx.listen, nginx.status, nginx.dir.clone());
    drop(nginx);
    let restarted = Adapter::start_at("nginx", &cp, &dir, listen, status);
    restarted.proc.wait_line("registered with the control plane", Duration::from_secs(20));
    restarted.proc.wait_line("already serves this config; not reloading", Duration::from_secs(20));
    wait_applied(&cp, "nginx-1", rev).await;
    assert_eq!(restarted.workers(), before, "the restart reloaded nginx");
    drop(haproxy);
}
