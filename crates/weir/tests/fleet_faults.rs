//! The failures other gateways lose data in, each on a 3-member etcd cluster with 3 control
//! planes on loopback and traffic through 2 gateways the whole time: the etcd leader killed, a
//! control plane killed, etcd stopped for 30 s, etcd's history compacted while a control
//! plane's watch is behind, and everything restarted in another order. Each ends with the same
//! checks: no proxied request failed, every change reported applied is served by both
//! gateways, every control plane holds one history with no gap or repeat and lists both
//! gateways at the last revision, and no gateway applied an older revision after a newer one.
#![cfg(feature = "etcd")]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::fleet::{Cp, Gw};
use common::load::Load;
use common::{Upstream, field, named, wait_until};
use serde_json::Value;

/// How long a gateway may take to move to another control plane.
const MOVE_WITHIN: Duration = Duration::from_secs(5);

struct Fleet {
    dir: tempfile::TempDir,
    etcd: Etcd,
    /// The store argument of each control plane.
    stores: Vec<String>,
    /// Each control plane's gRPC port, fixed so gateways find a restarted one where it was.
    grpc_ports: Vec<u16>,
    cps: Vec<Option<Cp>>,
    gws: Vec<Option<Gw>>,
    /// Each gateway's client address, fixed so a restarted gateway listens where it did.
    addrs: Vec<SocketAddr>,
    loads: Vec<Option<Load>>,
    /// Changes reported applied (route names), and those refused or left in doubt.
    applied: Vec<String>,
    refused: Vec<String>,
    _app: Upstream,
}

fn made(root: &Path, name: &str) -> PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

impl Fleet {
    /// The cluster, control planes 0-2 (control plane `narrow`, if given, reaches only etcd
    /// member `narrow`, and the others only the other members), gateway 0 preferring control plane 0 and gateway 1 control plane 2,
    /// one route to one upstream, and traffic through both gateways.
    async fn start(narrow: Option<usize>) -> Fleet {
        let app = named("app").await;
        let dir = tempfile::tempdir().unwrap();
        let etcd = Etcd::start_with(&made(dir.path(), "etcd"), 3, None);
        let urls = |keep: &dyn Fn(usize) -> bool| {
            let urls: Vec<&str> = (0..3).filter(|m| keep(*m)).map(|m| etcd.members[m].url.as_str()).collect();
            format!("etcd:{}", urls.join(","))
        };
        let stores = (0..3)
            .map(|i| match narrow {
                Some(n) if n == i => urls(&|m| m == n),
                Some(n) => urls(&|m| m != n),
                None => urls(&|_| true),
            })
            .collect();
        let addrs = (0..2).map(|_| SocketAddr::from(([127, 0, 0, 1], free_port()))).collect();
        let mut fleet = Fleet {
            dir,
            etcd,
            stores,
            grpc_ports: (0..3).map(|_| free_port()).collect(),
            cps: vec![None, None, None],
            gws: vec![None, None],
            addrs,
            loads: vec![None, None],
            applied: Vec::new(),
            refused: Vec::new(),
            _app: app,
        };
        for i in 0..3 {
            fleet.start_cp(i);
        }
        let port = fleet._app.port();
        fleet.cp(0).apply(
            fleet.dir.path(),
            &format!(
                "upstreams:\n- {{ name: app, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {port} }}] }} }}\n\
                 routes:\n- {{ name: all, upstream: app }}\n"
            ),
        );
        for g in 0..2 {
            fleet.start_gw(g).await;
        }
        fleet
    }

    fn cp(&self, i: usize) -> &Cp {
        self.cps[i].as_ref().expect("control plane running")
    }

    fn start_cp(&mut self, i: usize) {
        let dir = made(self.dir.path(), &format!("cp{i}"));
        self.cps[i] = Some(Cp::start(&dir, self.grpc_ports[i], &["--store", &self.stores[i]]));
    }

    /// Starts gateway `g` (on its state, if it ran before) and traffic through it.
    async fn start_gw(&mut self, g: usize) {
        let prefer = [0, 2][g];
        let urls: Vec<String> =
            (0..3).map(|k| format!("http://127.0.0.1:{}", self.grpc_ports[(prefer + k) % 3])).collect();
        let gw = Gw::start(
            &format!("g{g}"),
            &urls.join(","),
            &self.dir.path().join(format!("g{g}")),
            &self.addrs[g].to_string(),
        );
        assert_eq!(gw.listen_addr(), self.addrs[g]);
        gw.wait_serves(self.addrs[g], "/", "app", Duration::from_secs(20)).await;
        self.gws[g] = Some(gw);
        self.loads[g] = Some(Load::paced(self.addrs[g], 2, Duration::from_millis(5)));
    }

    /// Stops traffic through gateway `g`, then the gateway (SIGTERM, drained).
    async fn stop_gw(&mut self, g: usize) {
        self.check_traffic(g, 0).await;
        let mut gw = self.gws[g].take().unwrap();
        gw.proc.signal("TERM");
        let _ = gw.proc.child.wait();
    }

    /// Fails if any request through gateway `g` failed so far, or fewer than `least` were
    /// answered; traffic stops.
    async fn check_traffic(&mut self, g: usize, least: usize) {
        let (seen, failures) = self.loads[g].take().unwrap().finish().await;
        assert!(
            failures.is_empty(),
            "gateway {g}: {} of {} requests failed: {:?}",
            failures.len(),
            seen.len() + failures.len(),
            &failures[..failures.len().min(5)]
        );
        assert!(seen.len() >= least, "gateway {g} carried traffic ({} requests)", seen.len());
    }

    /// Adds route `name` through control plane `via`; records whether it was reported applied.
    fn change(&mut self, via: usize, name: &str) -> Result<(), String> {
        let yaml = format!("kind: Route\nname: {name}\nmatch: {{ path: {{ prefix: /{name} }} }}\nupstream: app\n");
        let f = self.dir.path().join(format!("{name}.yaml"));
        std::fs::write(&f, yaml).unwrap();
        let out = self.cp(via).ctl(&["apply", "-f", f.to_str().unwrap()]);
        if out.status.success() {
            self.applied.push(name.to_owned());
            Ok(())
        } else {
            self.refused.push(name.to_owned());
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// A change through `via`, tried until it is applied (each try a new route).
    async fn change_eventually(&mut self, via: usize, name: &str, within: Duration) {
        let t0 = Instant::now();
        for attempt in 0.. {
            match self.change(via, &format!("{name}-{attempt}")) {
                Ok(()) => return,
                Err(e) => assert!(t0.elapsed() < within, "no change applied through {via} within {within:?}: {e}"),
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every running control plane is at one revision, lists both gateways at it,
    /// and both gateways serve every applied change; then checks the histories and what each
    /// gateway applied, and that no request failed. Returns the revision.
    async fn converged(&mut self) -> u64 {
        let mut revision = 0;
        wait_until("every control plane at one revision, listing both gateways at it", Duration::from_secs(30), || {
            let cps: Vec<&Cp> = self.cps.iter().flatten().collect();
            async move {
                let mut revs = Vec::new();
                for cp in &cps {
                    revs.push(cp.revision().await);
                }
                let top = revs[0];
                if revs.iter().any(|r| *r != top) {
                    return false;
                }
                for cp in &cps {
                    let (_, list) = cp.call("GET", "/api/v1/gateways", None).await;
                    let at = |id: &str| {
                        list.as_array().unwrap().iter().any(|g| {
                            g["id"] == id
                                && g["applied_revision"] == top
                                && g["connected"] == true
                                && g["status"] == "up"
                        })
                    };
                    if !(at("g0") && at("g1")) {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        for cp in self.cps.iter().flatten() {
            revision = cp.revision().await;
        }
        self.check_histories(revision).await;
        for g in 0..2 {
            let addr = self.addrs[g];
            for name in &self.applied {
                let (status, body) = common::get(addr, &format!("/{name}"), &[]).await;
                assert_eq!((status, &body[..]), (200, &b"app"[..]), "gateway {g} serves the applied change {name}");
            }
            self.check_applied_order(g, revision);
            self.check_traffic(g, 10).await;
            self.loads[g] = Some(Load::paced(addr, 2, Duration::from_millis(5)));
        }
        revision
    }

    /// Every running control plane holds revisions `revision` down to 1, the same ones.
    async fn check_histories(&self, revision: u64) {
        let mut first: Option<Value> = None;
        for cp in self.cps.iter().flatten() {
            let (_, h) = cp.call("GET", "/api/v1/history?limit=10000", None).await;
            let revs: Vec<u64> = h
                .as_array()
                .unwrap_or_else(|| panic!("history: {h}"))
                .iter()
                .filter_map(|r| r["revision"].as_u64())
                .collect();
            assert_eq!(revs, (1..=revision).rev().collect::<Vec<_>>(), "one history, no gap or repeat");
            match &first {
                None => first = Some(h),
                Some(f) => assert_eq!(f, &h, "every control plane holds the same history"),
            }
        }
        let causes = first.unwrap().to_string();
        for name in &self.applied {
            assert!(causes.contains(&format!("\"{name}\"")), "{name} is in the history");
        }
    }

    /// Gateway `g` never applied an older revision after a newer one, and ends at `revision`.
    fn check_applied_order(&self, g: usize, revision: u64) {
        let gw = self.gws[g].as_ref().unwrap();
        let logs = gw.proc.logs.lock().unwrap();
        let applied: Vec<u64> = logs
            .iter()
            .filter(|l| l.contains("applied revision from the control plane"))
            .filter_map(|l| field(l, "revision")?.parse().ok())
            .collect();
        assert!(applied.windows(2).all(|w| w[0] <= w[1]), "gateway {g} applied revisions in order: {applied:?}");
        assert_eq!(applied.last(), Some(&revision), "gateway {g} applied the last revision");
    }

    /// The control plane gateway `g` is registered with now, as control plane `via` lists it.
    async fn listed_control_plane(&self, via: usize, g: usize) -> String {
        self.cp(via).gateway(&format!("g{g}")).await["control_plane"].as_str().unwrap_or("").to_owned()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_etcd_leader_loses_nothing() {
    let mut f = Fleet::start(None).await;
    f.change(1, "before").unwrap();
    let leader = f.etcd.leader();
    f.etcd.kill(leader);
    // Writes go on through every control plane once the others elect a leader.
    for via in 0..3 {
        f.change_eventually(via, &format!("after{via}"), Duration::from_secs(20)).await;
    }
    f.converged().await;
    f.etcd.restart(leader);
    assert!(f.etcd.wait_healthy(leader, Duration::from_secs(20)));
    f.change_eventually(2, "rejoined", Duration::from_secs(20)).await;
    f.converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_control_plane_hands_its_gateways_to_another_within_5s() {
    let mut f = Fleet::start(None).await;
    f.converged().await;
    let before = f.listed_control_plane(1, 0).await;
    assert_eq!(before, f.cp(0).grpc.to_string(), "every control plane lists gateway 0 on control plane 0");
    let from = f.gws[0].as_ref().unwrap().proc.log_len();
    let killed = Instant::now();
    f.cps[0].take().unwrap().proc.kill();
    f.gws[0].as_ref().unwrap().proc.wait_line_from(from, "registered with the control plane", MOVE_WITHIN);
    let moved = killed.elapsed();
    eprintln!("gateway 0 moved to another control plane in {moved:?}");
    assert!(moved < MOVE_WITHIN, "gateway 0 moved in {moved:?}");
    wait_until("the others list gateway 0 on its new control plane", MOVE_WITHIN, || async {
        let now = f.listed_control_plane(2, 0).await;
        !now.is_empty() && now != before
    })
    .await;
    f.change(2, "after").unwrap();
    f.converged().await;
    // Back, it learns every change it missed and lists both gateways (connected elsewhere).
    f.start_cp(0);
    f.change(0, "through-restarted").unwrap();
    f.converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_etcd_stopped_for_30s_writes_answer_503_and_gateways_keep_serving() {
    let mut f = Fleet::start(None).await;
    f.change(0, "before").unwrap();
    f.converged().await;
    for m in 0..3 {
        f.etcd.kill(m);
    }
    let stopped = Instant::now();
    let rsp = f
        .cp(1)
        .call(
            "POST",
            "/api/v1/apply",
            Some(&serde_json::json!({"resources": [{
                "kind": "Route", "name": "while-down",
                "body": {"name": "while-down", "match": {"path": {"prefix": "/while-down"}}, "upstream": "app"},
            }]})),
        )
        .await;
    assert_eq!(rsp.0, 503, "{}", rsp.1);
    assert!(rsp.1["error"].as_str().unwrap().contains("etcd is out of reach"), "{}", rsp.1);
    let err = f.change(2, "down").unwrap_err();
    assert!(err.contains("etcd is out of reach"), "{err}");
    while stopped.elapsed() < Duration::from_secs(30) {
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    for m in [2, 0, 1] {
        f.etcd.restart(m);
    }
    for m in 0..3 {
        assert!(f.etcd.wait_healthy(m, Duration::from_secs(20)));
    }
    f.change_eventually(1, "after", Duration::from_secs(20)).await;
    f.converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compaction_while_a_control_plane_is_behind_resyncs_it_whole() {
    // Control plane 2 reaches only member 2, and gateway 1 prefers control plane 2.
    let mut f = Fleet::start(Some(2)).await;
    f.converged().await;
    let member = f.etcd.members[2].pid();
    signal(member, "STOP");
    // (Member 2 may have led: the first change then waits for the others to elect one.)
    for i in 0..5 {
        f.change_eventually(i % 2, &format!("behind{i}"), Duration::from_secs(20)).await;
    }
    f.etcd.compact();
    signal(member, "CONT");
    f.change_eventually(2, "through-2", Duration::from_secs(20)).await;
    f.converged().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restarting_everything_in_another_order_loses_nothing() {
    let mut f = Fleet::start(None).await;
    f.change(2, "before").unwrap();
    f.converged().await;
    // Down in the order they came up: etcd, control planes; the gateways serve on.
    for m in 0..3 {
        f.etcd.kill(m);
    }
    for c in 0..3 {
        f.cps[c].take().unwrap().proc.kill();
    }
    // A gateway restarted with nothing to reach serves from its persisted state.
    f.stop_gw(0).await;
    f.start_gw(0).await;
    // Up in reverse: etcd's members last to first, then the control planes last to first.
    for m in (0..3).rev() {
        f.etcd.restart(m);
    }
    for m in 0..3 {
        assert!(f.etcd.wait_healthy(m, Duration::from_secs(20)));
    }
    for c in (0..3).rev() {
        f.start_cp(c);
    }
    f.change_eventually(0, "after", Duration::from_secs(20)).await;
    f.converged().await;
}

fn signal(pid: u32, sig: &str) {
    let ok = std::process::Command::new("kill").args([&format!("-{sig}"), &pid.to_string()]).status().unwrap();
    assert!(ok.success());
}
