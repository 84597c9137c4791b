//! The control plane end to end: real `weir control-plane`, `weir gateway` and `weir ctl`
//! processes, real upstreams, the gRPC stream, the store on disk.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use common::fleet::{Cp, Gw, call};
use common::{get, named};
use serde_json::json;

/// Two upstreams (`one`, `two`) and route `api` (`/api`) sending to `target`.
fn base(one: u16, two: u16, target: &str) -> String {
    format!(
        "upstreams:\n\
         - {{ name: one, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {one} }}] }} }}\n\
         - {{ name: two, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {two} }}] }} }}\n\
         routes:\n\
         - {{ name: api, match: {{ path: {{ prefix: /api }} }}, upstream: {target} }}\n"
    )
}

async fn wait_all(gws: &[(&Gw, SocketAddr)], path: &str, want: &str, within: Duration) {
    for (g, a) in gws {
        g.wait_serves(*a, path, want, within).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_applied_route_reaches_three_gateways_within_a_second() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    // The standalone file format, unchanged, plus top-level consumers for key-auth.
    let file = format!(
        "admin: {{ address: 127.0.0.1:9901 }}\n\
         listeners: [{{ name: main, address: 127.0.0.1:9, limits: {{ max_uri_length: 2KiB }} }}]\n{}\
         - {{ name: private, match: {{ path: {{ prefix: /private }} }}, upstream: two, plugins: [{{ name: key-auth }}] }}\n\
         consumers:\n- {{ name: alice, key: alice-secret-1 }}\n",
        base(one.port(), two.port(), "one")
    );
    let out = cp.apply(dir.path(), &file);
    assert!(out.contains("route/api created") && out.contains("consumer/alice created"), "{out}");
    // Applying the same file again changes nothing.
    let again = cp.apply(dir.path(), &file);
    assert!(again.contains("route/api unchanged") && !again.contains("revision"), "{again}");

    let gws: Vec<Gw> = (1..=3)
        .map(|i| Gw::start(&format!("gw{i}"), &cp.grpc_url(), &dir.path().join(format!("gw{i}")), "127.0.0.1:0"))
        .collect();
    let addrs: Vec<(&Gw, SocketAddr)> = gws.iter().map(|g| (g, g.listen_addr())).collect();
    wait_all(&addrs, "/api", "one", Duration::from_secs(5)).await;
    for (_, a) in &addrs {
        assert_eq!(get(*a, "/private", &[]).await.0, 401);
        assert_eq!(get(*a, "/private", &[("x-api-key", "alice-secret-1")]).await.0, 200);
        // The pushed `Listener/main` gives the gateway's own listener its limits.
        assert_eq!(get(*a, &format!("/api/{}", "x".repeat(3000)), &[]).await.0, 414);
    }

    let fresh = dir.path().join("fresh.yaml");
    std::fs::write(&fresh, "kind: Route\nname: fresh\nmatch: { path: { exact: /fresh } }\nupstream: two\n").unwrap();
    let t0 = Instant::now();
    let out = cp.ctl(&["apply", "-f", fresh.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    for (g, a) in &addrs {
        g.wait_serves(*a, "/fresh", "two", Duration::from_secs(5)).await;
    }
    // The bound: from starting `weir ctl apply` to all three serving. It includes the
    // ctl process start, the store's fsync and the push (a few ms here; bench/propagation.py
    // measures the distribution).
    let took = t0.elapsed();
    assert!(took < Duration::from_secs(1), "propagation took {took:?}");

    let rev = cp.revision().await;
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, list) = cp.call("GET", "/api/v1/gateways", None).await;
        let list = list.as_array().unwrap().clone();
        let done = list.len() == 3 && list.iter().all(|g| g["status"] == "up" && g["applied_revision"] == rev);
        // Heartbeats carry each gateway's runtime report (it served 4 requests above).
        let reported = list.iter().all(|g| g["report"]["requests_total"].as_u64() >= Some(4));
        if done && reported {
            assert!(list.iter().all(|g| g["plugins"].as_array().unwrap().iter().any(|p| p == "key-auth")));
            assert!(list.iter().all(|g| g["report"]["p99_ms"].as_f64().is_some()));
            break;
        }
        assert!(Instant::now() < deadline, "registry never showed all three at {rev} with reports: {list:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let table = cp.ctl(&["gateways"]);
    let table = String::from_utf8_lossy(&table.stdout);
    assert!(table.contains("gw1") && table.contains("gw3") && table.contains(" up "), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_resources_are_refused_with_every_path_and_nothing_is_stored() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &base(one.port(), two.port(), "one"));
    let rev = cp.revision().await;

    let bad = json!({"upstream": "nope", "match": {"path": {"regex": "("}}});
    let (status, v) = cp.call("PUT", "/api/v1/routes/bad", Some(&bad)).await;
    assert_eq!(status, 400, "{v}");
    let paths: Vec<&str> = v["errors"].as_array().unwrap().iter().map(|e| e["path"].as_str().unwrap()).collect();
    assert!(paths.contains(&"Route/bad.upstream") && paths.contains(&"Route/bad.match.path.regex"), "{paths:?}");
    assert_eq!(cp.revision().await, rev);
    assert_eq!(cp.call("GET", "/api/v1/routes/bad", None).await.0, 404);
    // A schema error and a cross-field one come in the same answer, as `weir validate` gives.
    let bad = json!({"upstream": "nope", "timeout": "5 seconds"});
    let (status, v) = cp.call("PUT", "/api/v1/routes/bad", Some(&bad)).await;
    assert_eq!(status, 400, "{v}");
    let errors = v["errors"].as_array().unwrap();
    let at = |p: &str| errors.iter().find(|e| e["path"] == p).map(|e| e["message"].as_str().unwrap().to_owned());
    assert!(at("Route/bad.timeout").is_some_and(|m| m.contains("is not a duration")), "{v}");
    assert!(at("Route/bad.upstream").is_some_and(|m| m.contains("nope")), "{v}");

    // Deleting an upstream a route still uses is refused too.
    let (status, v) = cp.call("DELETE", "/api/v1/upstreams/one", None).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["errors"][0]["path"].as_str().unwrap().starts_with("Route/api"), "{v}");

    // ctl reports each error with its path and exits 1.
    let f = dir.path().join("bad.yaml");
    std::fs::write(
        &f,
        "kind: Route\nname: bad\nupstream: nope\n---\nkind: Upstream\nname: u2\nload_balancer: { endpoints: [] }\n",
    )
    .unwrap();
    let out = cp.ctl(&["apply", "-f", f.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(err.contains("Route/bad.upstream") && err.contains("Upstream/u2"), "{err}");
    // Each at its place in the file applied.
    assert!(err.contains("Route/bad.upstream (line 3, column 1):"), "{err}");
    assert_eq!(cp.revision().await, rev);

    // A dry run validates and reports, and stores nothing; diff shows the change and exits 1.
    let good = json!({"match": {"path": {"exact": "/new"}}, "upstream": "two"});
    let (status, v) = cp.call("PUT", "/api/v1/routes/new?dry_run=true", Some(&good)).await;
    assert_eq!((status, v["results"][0]["result"].as_str()), (200, Some("created")), "{v}");
    assert_eq!(cp.call("GET", "/api/v1/routes/new", None).await.0, 404);
    let f = dir.path().join("changed.yaml");
    std::fs::write(&f, base(one.port(), two.port(), "two")).unwrap();
    let out = cp.ctl(&["diff", "-f", f.to_str().unwrap()]);
    let diff = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1));
    assert!(diff.contains("-  \"upstream\": \"one\"") && diff.contains("+  \"upstream\": \"two\""), "{diff}");
    assert_eq!(cp.revision().await, rev);

    // Deleting through ctl (server from WEIR_SERVER): refused while used, then done.
    let ctl_env = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
            .arg("ctl")
            .args(args)
            .env("WEIR_SERVER", cp.server())
            .output()
            .unwrap()
    };
    let out = ctl_env(&["delete", "upstreams", "two"]);
    assert!(out.status.success(), "{out:?}");
    let out = ctl_env(&["delete", "upstreams", "one"]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("Route/api.upstream"), "{out:?}");
    let out = ctl_env(&["delete", "routes", "api"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("route/api deleted"), "{out:?}");
    assert_eq!(cp.revision().await, rev + 2);

    let (status, doc) = cp.call("GET", "/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(doc["paths"]["/api/v1/{kind}/{name}"]["put"].is_object());
    assert!(
        doc["components"]["schemas"]["RouteSpec"].is_object(),
        "{:?}",
        doc["components"]["schemas"].as_object().map(|m| m.keys().collect::<Vec<_>>())
    );
    let listener_required = &doc["components"]["schemas"]["ListenerSpec"]["required"];
    assert_eq!(*listener_required, json!(["name"]), "a Listener resource needs no address");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gateway_that_cannot_apply_nacks_and_keeps_its_old_config() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &base(one.port(), two.port(), "one"));
    // Only gateway `has-ca` holds the CA file the next revision refers to (a relative path).
    let (a_dir, b_dir) = (dir.path().join("a"), dir.path().join("b"));
    std::fs::create_dir_all(&a_dir).unwrap();
    let ca = rcgen::generate_simple_self_signed(vec!["secure.test".into()]).unwrap();
    std::fs::write(a_dir.join("ca.pem"), ca.cert.pem()).unwrap();
    let a = Gw::start("has-ca", &cp.grpc_url(), &a_dir, "127.0.0.1:0");
    let b = Gw::start("no-ca", &cp.grpc_url(), &b_dir, "127.0.0.1:0");
    let (aa, ba) = (a.listen_addr(), b.listen_addr());
    wait_all(&[(&a, aa), (&b, ba)], "/api", "one", Duration::from_secs(5)).await;

    let next = format!(
        "{}---\nkind: Upstream\nname: secure\nload_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: 1 }}] }}\ntls: {{ ca: ca.pem }}\n",
        base(one.port(), two.port(), "two")
    );
    cp.apply(dir.path(), &next);
    let rev = cp.revision().await;
    a.wait_serves(aa, "/api", "two", Duration::from_secs(5)).await;
    // The NACK and the ACK reach the control plane asynchronously, after the gateways act.
    let deadline = Instant::now() + Duration::from_secs(5);
    let g = loop {
        let g = cp.gateway("no-ca").await;
        if g["last_nack"]["revision"] == rev {
            break g;
        }
        assert!(Instant::now() < deadline, "no NACK recorded: {g}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let errors = g["last_nack"]["errors"].to_string();
    assert!(errors.contains("ca.pem"), "{errors}");
    assert!(errors.contains("\"Upstream/secure: "), "the NACK names the resource: {errors}");
    assert_eq!(g["applied_revision"], rev - 1);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let g = cp.gateway("has-ca").await;
        if g["applied_revision"] == rev {
            break;
        }
        assert!(Instant::now() < deadline, "has-ca never reported revision {rev} applied: {g}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The refusing gateway still serves the previous revision.
    assert_eq!(get(ba, "/api", &[]).await, (200, "one".into()));
    let table = String::from_utf8_lossy(&cp.ctl(&["gateways"]).stdout).into_owned();
    assert!(table.contains(&format!("rev {rev}")), "{table}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_outlive_their_control_plane_and_resync_when_it_returns() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let mut cp = Cp::start(dir.path(), 0, &[]);
    let grpc_port = cp.grpc.port();
    cp.apply(dir.path(), &base(one.port(), two.port(), "one"));
    let a = Gw::start("a", &cp.grpc_url(), &dir.path().join("a"), "127.0.0.1:0");
    let b = Gw::start("b", &cp.grpc_url(), &dir.path().join("b"), "127.0.0.1:0");
    let (aa, ba) = (a.listen_addr(), b.listen_addr());
    wait_all(&[(&a, aa), (&b, ba)], "/api", "one", Duration::from_secs(5)).await;
    // Wait for `b`'s snapshot to reach the disk (written off the async thread, then renamed
    // into place): `b` is restarted below with only that file to go on.
    let snapshot = b.cwd.join("state").join("snapshot.json");
    let deadline = Instant::now() + Duration::from_secs(5);
    while !snapshot.exists() {
        assert!(Instant::now() < deadline, "{} was never written", snapshot.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // It holds keys: readable by its owner only.
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&snapshot).unwrap().permissions());
    assert_eq!(mode & 0o077, 0, "snapshot mode {mode:o}");

    cp.proc.kill();
    assert_eq!(get(aa, "/api", &[]).await, (200, "one".into()));
    assert_eq!(get(ba, "/api", &[]).await, (200, "one".into()));

    // A gateway restarted while the control plane is down serves its persisted snapshot.
    let b_dir = b.cwd.clone();
    drop(b);
    let b = Gw::start("b", &format!("http://127.0.0.1:{grpc_port}"), &b_dir, "127.0.0.1:0");
    let ba = b.listen_addr();
    b.wait_serves(ba, "/api", "one", Duration::from_secs(5)).await;
    b.proc.wait_line("serving the persisted snapshot", Duration::from_secs(5));
    assert_eq!(get(b.admin, "/readyz", &[]).await.0, 200);

    // A new gateway with nothing persisted is not ready and binds nothing until it has config.
    let c = Gw::start("c", &format!("http://127.0.0.1:{grpc_port}"), &dir.path().join("c"), "127.0.0.1:0");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(get(c.admin, "/readyz", &[]).await.0, 503);
    assert!(!c.proc.logs.lock().unwrap().iter().any(|l| l.contains("listener bound")));

    // The control plane comes back on the same address with the same store; a change made
    // now reaches every gateway.
    let cp = Cp::start(dir.path(), grpc_port, &[]);
    assert_eq!(cp.revision().await, 1);
    cp.apply(dir.path(), &base(one.port(), two.port(), "two"));
    let ca = c.listen_addr();
    wait_all(&[(&a, aa), (&b, ba), (&c, ca)], "/api", "two", Duration::from_secs(10)).await;
    assert_eq!(get(c.admin, "/readyz", &[]).await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollback_restores_the_earlier_routes_everywhere() {
    let (one, two) = (named("one").await, named("two").await);
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &base(one.port(), two.port(), "one"));
    let a = Gw::start("a", &cp.grpc_url(), &dir.path().join("a"), "127.0.0.1:0");
    let b = Gw::start("b", &cp.grpc_url(), &dir.path().join("b"), "127.0.0.1:0");
    let (aa, ba) = (a.listen_addr(), b.listen_addr());
    cp.apply(
        dir.path(),
        &format!(
            "{}- {{ name: extra, match: {{ path: {{ exact: /extra }} }}, upstream: one }}\n",
            base(one.port(), two.port(), "two")
        ),
    );
    wait_all(&[(&a, aa), (&b, ba)], "/api", "two", Duration::from_secs(5)).await;
    wait_all(&[(&a, aa), (&b, ba)], "/extra", "one", Duration::from_secs(5)).await;

    let out = cp.ctl(&["rollback", "--to", "1", "--wait", "5s"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("route/api configured") && text.contains("route/extra deleted"), "{text}");
    for addr in [aa, ba] {
        assert_eq!(get(addr, "/api", &[]).await, (200, "one".into()));
        assert_eq!(get(addr, "/extra", &[]).await.0, 404);
    }
    let hist = String::from_utf8_lossy(&cp.ctl(&["history"]).stdout).into_owned();
    assert!(hist.contains("rollback to 1"), "{hist}");
    assert_eq!(cp.revision().await, 3, "a rollback is a new revision");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_gateway_is_marked_down_after_the_heartbeat_timeout() {
    let one = named("one").await;
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &base(one.port(), one.port(), "one"));
    let g = Gw::start("sleepy", &cp.grpc_url(), &dir.path().join("g"), "127.0.0.1:0");
    g.listen_addr();
    let status = |v: serde_json::Value| v["status"].as_str().unwrap_or("").to_owned();
    assert_eq!(status(cp.gateway("sleepy").await), "up");
    // Freeze it: the TCP stream stays open but no heartbeat comes.
    g.proc.signal("STOP");
    let t0 = Instant::now();
    while status(cp.gateway("sleepy").await) != "down" {
        assert!(t0.elapsed() < Duration::from_secs(8), "never marked down");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The timeout is 3 s, but the last heartbeat may have left up to one interval (1 s) before
    // the STOP; anything under 1 s would mean it was marked down without waiting.
    assert!(t0.elapsed() >= Duration::from_secs(1), "marked down after only {:?} (timeout is 3 s)", t0.elapsed());
    // The log line comes from the periodic sweep; the status above already had its bounds.
    cp.proc.wait_line("gateway down", Duration::from_secs(5));
    g.proc.signal("CONT");
    let t1 = Instant::now();
    while status(cp.gateway("sleepy").await) != "up" {
        assert!(t1.elapsed() < Duration::from_secs(5), "never back up");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_admin_api_needs_a_token_off_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_weir"))
        .args([
            "control-plane",
            "--store",
            "redb:x.redb",
            "--grpc-address",
            "127.0.0.1:0",
            "--admin-address",
            "0.0.0.0:0",
        ])
        .current_dir(dir.path())
        .env_remove("WEIR_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--token"), "{out:?}");

    let cp = Cp::start(dir.path(), 0, &["--token", "s3cret-token"]);
    let api: SocketAddr = format!("127.0.0.1:{}", cp.api.port()).parse().unwrap();
    assert_eq!(call(api, "GET", "/api/v1/revision", None, None).await.0, 401);
    assert_eq!(call(api, "GET", "/api/v1/revision", None, Some("wrong")).await.0, 401);
    assert_eq!(call(api, "GET", "/api/v1/revision", None, Some("s3cret-token")).await.0, 200);
    let out = cp.ctl(&["--token", "s3cret-token", "get", "routes"]);
    assert!(out.status.success(), "{out:?}");

    // Gateway streams need the token too.
    let f = dir.path().join("r.yaml");
    std::fs::write(&f, base(1, 1, "one")).unwrap();
    assert!(cp.ctl(&["--token", "s3cret-token", "apply", "-f", f.to_str().unwrap()]).status.success());
    let stranger = Gw::start("stranger", &cp.grpc_url(), &dir.path().join("s"), "127.0.0.1:0");
    stranger.proc.wait_line("token", Duration::from_secs(5));
    let member =
        Gw::start_with("member", &cp.grpc_url(), &dir.path().join("m"), "127.0.0.1:0", &["--token", "s3cret-token"]);
    member.listen_addr();
    let (_, list) = call(api, "GET", "/api/v1/gateways", None, Some("s3cret-token")).await;
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["member"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_python_grpcio_client_registers_and_receives_a_snapshot() {
    let one = named("one").await;
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &base(one.port(), one.port(), "one"));
    let proto = common::python_paths("").1;
    let v = common::run_python("sync_client.py", vec![proto, cp.grpc.to_string(), cp.api.to_string()]).await;
    assert_eq!(v["revision"], 1, "{v}");
    let names: Vec<String> = v["resources"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| format!("{}/{}", r["kind"].as_str().unwrap(), r["name"].as_str().unwrap()))
        .collect();
    assert_eq!(names, ["Upstream/one", "Upstream/two", "Route/api"]);
    assert_eq!(v["resources"][2]["body"]["upstream"], "one");
    assert!(v["rejected"].as_array().unwrap().iter().any(|p| p == "gateway_id"), "{v}");
    // Then only what changed travels.
    let d = &v["delta"];
    assert_eq!((d["revision"].as_u64(), d["base_revision"].as_u64()), (Some(2), Some(1)), "{v}");
    assert_eq!(d["upserted"], json!(["Route/api"]));
    assert_eq!(d["removed"], json!([]));
    assert_eq!(d["body"]["upstream"], "two");
    // The script closed its stream only once the registry showed the ACK of revision 2.
    let g = cp.gateway("python-gw").await;
    assert_eq!((g["applied_revision"].as_u64(), g["version"].as_str()), (Some(2), Some("py-1.0")), "{g}");
    assert_eq!(g["report"]["requests_per_second"], 12.5);
    assert_eq!(cp.gateway("bad id!").await, serde_json::Value::Null, "a refused gateway is not registered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_are_pushed_inline_and_private_keys_never_shown() {
    let one = named("one").await;
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &base(one.port(), one.port(), "one"));
    let ck = rcgen::generate_simple_self_signed(vec!["api.test".into()]).unwrap();
    let (cert, key) = (ck.cert.pem(), ck.signing_key.serialize_pem());
    // No `address`: each gateway listens where its `--listen` says. Two such listeners coexist.
    let listener = json!({"tls": {"certificates": [{"cert": cert, "key": key}]}});
    let (status, v) = cp.call("PUT", "/api/v1/listeners/secure", Some(&listener)).await;
    assert_eq!(status, 201, "{v}");
    let (status, v) =
        cp.call("PUT", "/api/v1/listeners/other", Some(&json!({"limits": {"max_uri_length": "4KiB"}}))).await;
    assert_eq!(status, 201, "{v}");
    let g = Gw::start("tls", &cp.grpc_url(), &dir.path().join("g"), "secure=127.0.0.1:0");
    let port = g.listen_addr().port();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, &cert).unwrap();
    let out = std::process::Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert", ca.to_str().unwrap()])
        .args(["--resolve", &format!("api.test:{port}:127.0.0.1"), &format!("https://api.test:{port}/api")])
        .output()
        .expect("curl is installed");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "one", "{out:?}");
    // The API shows a fingerprint, not the key.
    let (_, v) = cp.call("GET", "/api/v1/listeners/secure", None).await;
    let shown = v["body"]["tls"]["certificates"][0]["key"].as_str().unwrap().to_owned();
    assert!(shown.starts_with("(inline private key, sha256 ") && !shown.contains("BEGIN"), "{shown}");
    assert_eq!(v["body"]["tls"]["certificates"][0]["cert"], cert.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_fleet_is_discoverable_by_prometheus_and_by_an_outer_load_balancer() {
    let one = named("one").await;
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    cp.apply(dir.path(), &base(one.port(), one.port(), "one"));
    let rev = cp.revision().await;
    let a = Gw::start_with("gw-a", &cp.grpc_url(), &dir.path().join("a"), "127.0.0.1:0", &["--label", "zone=eu-1"]);
    let b = Gw::start("gw-b", &cp.grpc_url(), &dir.path().join("b"), "127.0.0.1:0");
    for g in [&a, &b] {
        let addr = g.listen_addr();
        g.wait_serves(addr, "/api", "one", Duration::from_secs(10)).await;
    }
    // Prometheus: each gateway's admin address, with its identity as __meta_ labels.
    let (status, sd) = cp.call("GET", "/api/v1/discovery/prometheus", None).await;
    assert_eq!(status, 200);
    let groups = sd.as_array().unwrap();
    assert_eq!(groups.len(), 2, "{sd}");
    for g in [&a, &b] {
        let group = groups.iter().find(|x| x["labels"]["__meta_weir_gateway_id"] == g.id.as_str()).expect("listed");
        assert_eq!(group["targets"], json!([g.admin.to_string()]), "{sd}");
        assert_eq!(group["labels"]["__meta_weir_applied_revision"], rev.to_string());
        // The target is what Prometheus would scrape.
        let (code, metrics) = get(g.admin, "/metrics", &[]).await;
        assert_eq!(code, 200);
        assert!(String::from_utf8_lossy(&metrics).contains("weir_requests_total"), "not a metrics endpoint");
    }
    let labelled = groups.iter().find(|x| x["labels"]["__meta_weir_gateway_id"] == "gw-a").unwrap();
    assert_eq!(labelled["labels"]["__meta_weir_label_zone"], "eu-1", "{sd}");
    // An outer load balancer: ready gateways and their listeners by name.
    let (_, ready) = cp.call("GET", "/api/v1/gateways/ready", None).await;
    let ids: Vec<&str> = ready.as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
    assert_eq!(ids, ["gw-a", "gw-b"], "{ready}");
    assert_eq!(ready[0]["listen"]["main"], "127.0.0.1:0", "the configured address: {ready}");
    assert_eq!(ready[0]["applied_revision"], rev);
    // A gateway that stops leaves the ready list as soon as its stream closes.
    let mut b = b;
    b.proc.kill();
    let t0 = Instant::now();
    loop {
        let (_, ready) = cp.call("GET", "/api/v1/gateways/ready", None).await;
        let ids: Vec<&str> = ready.as_array().unwrap().iter().map(|g| g["id"].as_str().unwrap()).collect();
        if ids == ["gw-a"] {
            break;
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "a dead gateway is still ready: {ready}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
