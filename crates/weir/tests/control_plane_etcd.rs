//! Several control planes on one real etcd (started here): a change made through either
//! reaches the gateways of both, the history is shared, and a control plane restarted later
//! loads everything from etcd. Built with the `etcd` feature (scripts/test.sh enables it).
#![cfg(feature = "etcd")]

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::etcd::{Etcd, EtcdTls};
use common::fleet::{Cp, Gw};
use common::pki::{ca, leaf, write_pair};
use common::{named, wait_until};

/// `root/name`, created.
fn made(root: &Path, name: &str) -> std::path::PathBuf {
    let d = root.join(name);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn route(dir: &Path, name: &str, path: &str, upstream: &str) -> String {
    let f = dir.join(format!("{name}.yaml"));
    std::fs::write(
        &f,
        format!("kind: Route\nname: {name}\nmatch: {{ path: {{ prefix: {path} }} }}\nupstream: {upstream}\n"),
    )
    .unwrap();
    f.to_str().unwrap().to_owned()
}

fn ctl_ok(cp: &Cp, args: &[&str]) -> String {
    let out = cp.ctl(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "ctl {args:?}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_planes_sharing_etcd_push_each_others_changes() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let store = format!("etcd:{}", etcd.url);
    let (a_dir, b_dir) = (made(dir.path(), "a"), made(dir.path(), "b"));
    let a = Cp::start(&a_dir, 0, &["--store", &store]);
    let b = Cp::start(&b_dir, 0, &["--store", &store]);
    let ga = Gw::start("ga", &a.grpc_url(), &dir.path().join("ga"), "127.0.0.1:0");
    let gb = Gw::start("gb", &b.grpc_url(), &dir.path().join("gb"), "127.0.0.1:0");

    // Upstreams and a route through A: B's gateway serves them too.
    let ups = dir.path().join("ups.yaml");
    std::fs::write(
        &ups,
        format!(
            "kind: Upstream\nname: one\nload_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {} }}] }}\n---\n\
             kind: Upstream\nname: two\nload_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {} }}] }}\n",
            one.port(),
            two.port()
        ),
    )
    .unwrap();
    ctl_ok(&a, &["apply", "-f", ups.to_str().unwrap()]);
    ctl_ok(&a, &["apply", "-f", &route(dir.path(), "api", "/api", "one")]);
    let (pa, pb): (SocketAddr, SocketAddr) = (ga.listen_addr(), gb.listen_addr());
    ga.wait_serves(pa, "/api", "one", Duration::from_secs(10)).await;
    gb.wait_serves(pb, "/api", "one", Duration::from_secs(10)).await;

    // A change through B reaches A's gateway.
    ctl_ok(&b, &["apply", "-f", &route(dir.path(), "api", "/api", "two")]);
    ga.wait_serves(pa, "/api", "two", Duration::from_secs(10)).await;
    gb.wait_serves(pb, "/api", "two", Duration::from_secs(10)).await;
    assert_eq!(a.revision().await, 3);
    assert_eq!(b.revision().await, 3);
    let history = ctl_ok(&a, &["history"]);
    assert!(history.contains('3') && history.contains('1'), "{history}");

    // An invalid change through either is refused and stored nowhere.
    let bad = route(dir.path(), "bad", "/bad", "nowhere");
    assert!(!b.ctl(&["apply", "-f", &bad]).status.success());
    assert_eq!(a.revision().await, 3);

    // Rollback through A restores revision 2 everywhere, as revision 4.
    ctl_ok(&a, &["rollback", "--to", "2"]);
    ga.wait_serves(pa, "/api", "one", Duration::from_secs(10)).await;
    gb.wait_serves(pb, "/api", "one", Duration::from_secs(10)).await;
    assert_eq!(b.revision().await, 4);

    // Each control plane lists the other's gateways too: where they are connected, what they
    // applied, their reports; and so do its discovery endpoints.
    wait_until("B lists A's gateway at revision 4", Duration::from_secs(10), || async {
        let g = b.gateway("ga").await;
        g["applied_revision"] == 4 && g["connected"] == true && g["status"] == "up"
    })
    .await;
    let ga_on_b = b.gateway("ga").await;
    assert_eq!(ga_on_b["control_plane"], a.grpc.to_string(), "{ga_on_b}");
    assert!(ga_on_b["report"]["requests_total"].as_u64().is_some(), "{ga_on_b}");
    let b_grpc = b.grpc.to_string();
    wait_until("A lists B's gateway on B", Duration::from_secs(10), || async {
        a.gateway("gb").await["control_plane"] == b_grpc.as_str()
    })
    .await;
    let table = ctl_ok(&b, &["gateways"]);
    assert!(table.contains("ga") && table.contains("gb") && table.contains(&a.grpc.to_string()), "{table}");
    let (_, ready) = b.call("GET", "/api/v1/gateways/ready", None).await;
    let ids: Vec<&str> = ready.as_array().unwrap().iter().filter_map(|g| g["id"].as_str()).collect();
    assert_eq!(ids, ["ga", "gb"], "{ready}");

    // Both write at once: each commit either lands as the next revision or is refused whole
    // (never two revisions with one number, never a lost write reported as done).
    let files: Vec<(usize, String)> =
        (0..10).map(|i| (i, route(dir.path(), &format!("race{i}"), &format!("/race{i}"), "one"))).collect();
    let landed = std::thread::scope(|s| {
        let runs: Vec<_> = files
            .iter()
            .map(|(i, f)| {
                let cp = if i % 2 == 0 { &a } else { &b };
                s.spawn(move || cp.ctl(&["apply", "-f", f]))
            })
            .collect();
        let mut landed = 0;
        for r in runs {
            let out = r.join().unwrap();
            if out.status.success() {
                landed += 1;
            } else {
                let err = String::from_utf8_lossy(&out.stderr);
                assert!(err.contains("another control plane committed revision"), "{err}");
            }
        }
        landed
    });
    assert!(landed >= 1);
    let want = 4 + landed;
    let deadline = Instant::now() + Duration::from_secs(10);
    while a.revision().await != want || b.revision().await != want {
        assert!(Instant::now() < deadline, "both should reach revision {want}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (_, history) = a.call("GET", "/api/v1/history?limit=100", None).await;
    let revs: Vec<u64> = history.as_array().unwrap().iter().filter_map(|r| r["revision"].as_u64()).collect();
    assert_eq!(revs, (1..=want).rev().collect::<Vec<_>>(), "one history, no gaps or repeats");

    // More resources in one change than etcd takes in a transaction: refused, saying what to do.
    let many: String = (0..130)
        .map(|i| format!("kind: Route\nname: bulk{i}\nmatch: {{ path: {{ exact: /bulk/{i} }} }}\nupstream: one\n---\n"))
        .collect();
    let bulk = dir.path().join("bulk.yaml");
    std::fs::write(&bulk, many).unwrap();
    let out = a.ctl(&["apply", "-f", bulk.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--max-txn-ops"), "{err}");
    assert_eq!(a.revision().await, want);

    // A third control plane started now loads the state from etcd.
    let c_dir = dir.path().join("c");
    std::fs::create_dir_all(&c_dir).unwrap();
    let c = Cp::start(&c_dir, 0, &["--store", &store]);
    assert_eq!(c.revision().await, want);
    let gc = Gw::start("gc", &c.grpc_url(), &dir.path().join("gc"), "127.0.0.1:0");
    gc.wait_serves(gc.listen_addr(), "/api", "one", Duration::from_secs(10)).await;

    // A plugin package larger than etcd takes in one request, uploaded through A, reaches B's
    // gateway from B (the module stored in chunks, read back whole and checked).
    let pkg = common::plugins::package("header-edit", &dir.path().join("pkg"));
    let big = common::plugins::padded(std::fs::read(pkg.join("plugin.wasm")).unwrap(), 3 << 20);
    std::fs::write(pkg.join("plugin.wasm"), big).unwrap();
    ctl_ok(&a, &["apply", "-f", pkg.to_str().unwrap()]);
    let tagged = dir.path().join("tagged.yaml");
    std::fs::write(
        &tagged,
        "kind: Route\nname: tagged\nmatch: { path: { exact: /tagged } }\nupstream: one\nplugins:\n\
         - { name: header-edit, config: { response: { add: { x-plugin: fleet } } } }\n",
    )
    .unwrap();
    ctl_ok(&a, &["apply", "-f", tagged.to_str().unwrap()]);
    gb.wait_serves(pb, "/tagged", "one", Duration::from_secs(20)).await;
    let rsp = common::request(pb, "GET", "/tagged", &[]).await;
    assert_eq!(rsp.headers()["x-plugin"], "fleet");
    assert_eq!(b.gateway("gb").await["modules_sent"], 1);
}

#[test]
fn an_unreachable_etcd_is_reported_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut cp = common::fleet::Proc::spawn(
        &["control-plane", "--store", &format!("etcd:127.0.0.1:{port}"), "--admin-address", "127.0.0.1:0"],
        dir.path(),
    );
    assert!(!cp.child.wait().unwrap().success());
    cp.wait_line("is etcd running there?", Duration::from_secs(5));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_uses_etcd_over_mutual_tls_and_says_what_is_missing() {
    let one = named("one").await;
    let dir = tempfile::tempdir().unwrap();
    let (pki, other) = (ca("etcd test ca"), ca("someone else"));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki.pem()).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let (cert, key) = write_pair(dir.path(), "etcd", &leaf(&pki, &["127.0.0.1", "localhost"]));
    let etcd = Etcd::start_with(dir.path(), 1, Some(&EtcdTls { cert: &cert, key: &key, ca: ca_file }));
    let store = format!("etcd:{}", etcd.url);
    assert!(store.starts_with("etcd:https://"));
    let (cp_cert, cp_key) = write_pair(dir.path(), "cp", &leaf(&pki, &["control-plane"]));

    // With etcd's CA and a client certificate it signed: resources go in and reach a gateway.
    let cp_dir = dir.path().join("cp");
    std::fs::create_dir_all(&cp_dir).unwrap();
    let tls = ["--etcd-cacert", ca_file, "--etcd-cert", &cp_cert, "--etcd-key", &cp_key];
    // A request limit below etcd's own, to be met with a small change.
    let limit = ["--etcd-max-request-bytes", "65536"];
    let cp = Cp::start(&cp_dir, 0, &[&["--store", store.as_str()][..], &tls[..], &limit[..]].concat());
    let ups = dir.path().join("ups.yaml");
    let upstream = format!(
        "kind: Upstream\nname: one\nload_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {} }}] }}\n",
        one.port()
    );
    std::fs::write(&ups, upstream).unwrap();
    ctl_ok(&cp, &["apply", "-f", ups.to_str().unwrap()]);
    ctl_ok(&cp, &["apply", "-f", &route(dir.path(), "api", "/api", "one")]);
    let gw = Gw::start("g", &cp.grpc_url(), &dir.path().join("g"), "127.0.0.1:0");
    let addr = gw.listen_addr();
    gw.wait_serves(addr, "/api", "one", Duration::from_secs(10)).await;

    // A change larger than one etcd request takes is refused whole, saying what to do; the
    // same resources in smaller batches go in.
    let long = "x".repeat(1000);
    let routes = |from: usize, to: usize| -> String {
        let many: String = (from..to)
            .map(|i| {
                format!("kind: Route\nname: long{i}\nmatch: {{ path: {{ exact: /{long}/{i} }} }}\nupstream: one\n---\n")
            })
            .collect();
        let f = dir.path().join(format!("long-{from}.yaml"));
        std::fs::write(&f, many).unwrap();
        f.to_str().unwrap().to_owned()
    };
    let before = cp.revision().await;
    let out = cp.ctl(&["apply", "-f", &routes(0, 60)]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--max-request-bytes") && err.contains("smaller batches"), "{err}");
    assert_eq!(cp.revision().await, before, "nothing was written");
    for from in [0, 20, 40] {
        ctl_ok(&cp, &["apply", "-f", &routes(from, from + 20)]);
    }
    assert_eq!(cp.revision().await, before + 3);

    // Each thing missing or wrong is refused at start, naming the flag to fix.
    let stranger = write_pair(dir.path(), "stranger", &leaf(&other, &["stranger"]));
    let cases: [(Vec<&str>, &str); 4] = [
        (vec!["--store", &store], "pass --etcd-cacert"),
        (vec!["--store", &store, "--etcd-cacert", ca_file], "pass --etcd-cert and --etcd-key"),
        (
            vec!["--store", &store, "--etcd-cacert", ca_file, "--etcd-cert", &stranger.0, "--etcd-key", &stranger.1],
            "trusting the CA of --etcd-cert",
        ),
        (vec!["--store", "etcd:http://127.0.0.1:1", "--etcd-cacert", ca_file], "the --store URLs are http://"),
    ];
    for (args, says) in cases {
        let mut full = vec!["control-plane", "--admin-address", "127.0.0.1:0", "--grpc-address", "127.0.0.1:0"];
        full.extend(args);
        let mut p = common::fleet::Proc::spawn(&full, dir.path());
        assert!(!p.child.wait().unwrap().success(), "{full:?} started");
        p.wait_line(says, Duration::from_secs(5));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_renewed_anywhere_live_and_the_elected_control_plane_expires_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let store = format!("etcd:{}", etcd.url);
    let (a_dir, b_dir) = (made(dir.path(), "a"), made(dir.path(), "b"));
    let a = Cp::start(&a_dir, 0, &["--store", &store]);
    a.proc.wait_line("elected to run the fleet's singleton jobs", Duration::from_secs(10));
    let mut b = Cp::start(&b_dir, 0, &["--store", &store]);
    a.apply(
        dir.path(),
        "upstreams:\n- { name: svc, load_balancer: { policy: round_robin }, discovery: { registry: {} } }\n",
    );

    // Registered through A, renewed only through B for three ttls: it stays, since the
    // renewals keep its lease in etcd alive whichever control plane they reach.
    ctl_ok(&a, &["register", "svc", "127.0.0.1:9001", "--ttl", "2s"]);
    let name = "svc.127.0.0.1-9001".to_owned();
    let t0 = Instant::now();
    while t0.elapsed() < Duration::from_secs(6) {
        ctl_ok(&b, &["register", "svc", "127.0.0.1:9001", "--ttl", "2s"]);
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert_eq!(a.registrations().await, vec![name.clone()], "renewed through B, still stored");
    }
    // Renewals stop: the lease runs out and the elected control plane (A) removes it.
    wait_until("the unrenewed registration removed", Duration::from_secs(8), || async {
        a.registrations().await.is_empty() && b.registrations().await.is_empty()
    })
    .await;
    assert!(b.proc.logs.lock().unwrap().iter().all(|l| !l.contains("elected")), "B never ran the job");

    // A stops: B is elected once A's session lapses, and expires what nobody renews.
    drop(a);
    b.proc.wait_line("elected to run the fleet's singleton jobs", Duration::from_secs(15));
    ctl_ok(&b, &["register", "svc", "127.0.0.1:9002", "--ttl", "2s"]);
    assert_eq!(b.registrations().await, vec!["svc.127.0.0.1-9002".to_owned()]);
    wait_until("B removes the registration nobody renews", Duration::from_secs(8), || async {
        b.registrations().await.is_empty()
    })
    .await;
    b.proc.kill();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopping_control_plane_hands_the_election_on_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let store = format!("etcd:{}", etcd.url);
    let a = Cp::start(dir.path(), 0, &["--store", &store]);
    a.proc.wait_line("elected to run the fleet's singleton jobs", Duration::from_secs(10));
    let b = Cp::start(dir.path(), 0, &["--store", &store]);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(b.proc.logs.lock().unwrap().iter().all(|l| !l.contains("elected")), "one leader at a time");
    // Without resigning, B would wait for A's 5 s session to lapse (over 3 s after the last
    // keep-alive): elected within 2.5 s, it was handed the place.
    a.proc.signal("TERM");
    a.proc.wait_line("gave up the election", Duration::from_secs(5));
    b.proc.wait_line("elected to run the fleet's singleton jobs", Duration::from_millis(2500));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_elected_control_plane_trims_the_history_and_one_left_behind_reads_everything_again() {
    let app = named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let store = format!("etcd:{}", etcd.url);
    let limit = ["--store", &store, "--history-limit", "5"];
    let a = Cp::start(&made(dir.path(), "a"), 0, &limit);
    a.proc.wait_line("elected to run the fleet's singleton jobs", Duration::from_secs(10));
    let b = Cp::start(&made(dir.path(), "b"), 0, &limit);
    let gb = Gw::start("gb", &b.grpc_url(), &dir.path().join("gb"), "127.0.0.1:0");
    let port = app.port();
    a.apply(
        dir.path(),
        &format!(
            "upstreams:\n- {{ name: app, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {port} }}] }} }}\n"
        ),
    );
    ctl_ok(&a, &["apply", "-f", &route(dir.path(), "early", "/early", "app")]);
    let pb = gb.listen_addr();
    gb.wait_serves(pb, "/early", "app", Duration::from_secs(10)).await;
    let kept = |cp: &Cp| {
        let api = cp.api;
        async move {
            let (_, h) = common::fleet::call(api, "GET", "/api/v1/history?limit=100", None, None).await;
            h.as_array().unwrap().iter().filter_map(|r| r["revision"].as_u64()).collect::<Vec<u64>>()
        }
    };

    // B falls behind while A commits and trims past everything B has seen, including the
    // removal of a route B's gateway serves.
    b.proc.signal("STOP");
    for i in 0..8 {
        ctl_ok(&a, &["apply", "-f", &route(dir.path(), &format!("r{i}"), &format!("/r{i}"), "app")]);
    }
    ctl_ok(&a, &["delete", "route", "early"]);
    ctl_ok(&a, &["apply", "-f", &route(dir.path(), "late", "/late", "app")]);
    let top = a.revision().await;
    wait_until("A keeps the last 5 revisions", Duration::from_secs(10), || async {
        kept(&a).await == (top - 4..=top).rev().collect::<Vec<_>>()
    })
    .await;
    b.proc.signal("CONT");
    b.proc.wait_line("read the whole state again", Duration::from_secs(10));
    gb.wait_serves(pb, "/late", "app", Duration::from_secs(10)).await;
    let (status, _) = common::get(pb, "/early", &[]).await;
    assert_eq!(status, 404, "the route deleted while B was behind is gone from its gateway");
    assert_eq!(b.revision().await, top);
    assert_eq!(kept(&b).await, kept(&a).await, "one history");

    // A rollback reaches back to the oldest revision kept, not before.
    let out = b.ctl(&["rollback", "--to", "2"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("trimmed from the history"), "{err}");
    ctl_ok(&b, &["rollback", "--to", &(top - 4).to_string()]);
    gb.wait_serves(pb, "/early", "app", Duration::from_secs(10)).await;
    assert_eq!(common::get(pb, "/late", &[]).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rollout_started_on_one_control_plane_holds_the_gateways_of_another() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let etcd = Etcd::start(dir.path());
    let store = format!("etcd:{}", etcd.url);
    let a = Cp::start(&made(dir.path(), "a"), 0, &["--store", &store]);
    a.proc.wait_line("elected to run the fleet's singleton jobs", Duration::from_secs(10));
    let b = Cp::start(&made(dir.path(), "b"), 0, &["--store", &store]);
    let canary = ["--label", "ring=canary"];
    let ga = Gw::start_with("ga", &a.grpc_url(), &dir.path().join("ga"), "127.0.0.1:0", &canary);
    let gb = Gw::start("gb", &b.grpc_url(), &dir.path().join("gb"), "127.0.0.1:0");
    a.apply_one_route(dir.path(), "app", one.port());
    let (pa, pb) = (ga.listen_addr(), gb.listen_addr());
    ga.wait_serves(pa, "/", "one", Duration::from_secs(10)).await;
    gb.wait_serves(pb, "/", "one", Duration::from_secs(10)).await;
    wait_until("A lists B's gateway", Duration::from_secs(10), || async { a.gateway("gb").await["status"] == "up" })
        .await;
    let stable = a.revision().await;
    let f = dir.path().join("two.yaml");
    std::fs::write(
        &f,
        format!(
            "upstreams:\n- {{ name: app, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {} }}] }} }}\n",
            two.port()
        ),
    )
    .unwrap();
    ctl_ok(&a, &["apply", "-f", f.to_str().unwrap(), "--canary-selector", "ring=canary", "--bake", "1h"]);
    ga.wait_serves(pa, "/", "two", Duration::from_secs(10)).await;
    // B took the revision from etcd but holds its gateway, which is no canary.
    wait_until("B has the revision", Duration::from_secs(10), || async { b.revision().await == stable + 1 }).await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    gb.wait_serves(pb, "/", "one", Duration::from_secs(1)).await;
    assert_eq!(b.gateway("gb").await["applied_revision"], stable, "B's gateway is held");
    assert_eq!(b.call("GET", "/api/v1/rollout", None).await.1["phase"], "baking");
    // Promoted through A: B gives its gateway the revision.
    ctl_ok(&a, &["rollout", "promote"]);
    gb.wait_serves(pb, "/", "two", Duration::from_secs(10)).await;
}
