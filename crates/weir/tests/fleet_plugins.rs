//! Plugin packages through the control plane: `weir ctl apply -f DIR` checks a package and
//! uploads its module once (content-addressed); every gateway fetches a module it lacks once,
//! checks its hash, keeps it for cold starts, and runs it; a module a gateway cannot load is
//! NACKed while the previous version keeps serving; a new version rolls out under load
//! without a failed request.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use common::fleet::{Cp, Gw};
use common::plugins::{package, package_with, padded};
use common::{named, request};
use serde_json::{Value, json};

/// Upstream `app` and route `api` running `header-edit`, which tags responses `x-plugin: TAG`.
fn routes(port: u16, tag: &str) -> String {
    format!(
        "upstreams:\n- {{ name: app, load_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {port} }}] }} }}\n\
         routes:\n- name: api\n  upstream: app\n  plugins:\n  - name: header-edit\n    config: {{ response: {{ add: {{ x-plugin: {tag} }} }} }}\n"
    )
}

/// The `x-plugin` header of `/api` (None when it failed or lacks one).
async fn tag(addr: SocketAddr) -> Option<String> {
    let rsp = request(addr, "GET", "/api", &[]).await;
    (rsp.status() == 200).then(|| rsp.headers().get("x-plugin")?.to_str().ok().map(str::to_owned)).flatten()
}

async fn wait_tag(gw: &Gw, addr: SocketAddr, want: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if tag(addr).await.as_deref() == Some(want) {
            return;
        }
        assert!(Instant::now() < deadline, "{} never answered x-plugin: {want}", gw.id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn gateway_field(cp: &Cp, id: &str, field: &str) -> Value {
    cp.gateway(id).await[field].clone()
}

fn ctl_ok(cp: &Cp, args: &[&str]) -> String {
    let out = cp.ctl(args);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "weir ctl {args:?} failed:\n{text}");
    text
}

/// A copy of the package at `src` with `version` and a module changed by a trailing custom
/// section (still the same code, another sha256).
fn next_version(src: &Path, into: &Path, version: &str) -> std::path::PathBuf {
    let dst = package_with("header-edit", into, |m| m.replace("version: 1.0.0", &format!("version: {version}")));
    std::fs::write(dst.join("plugin.wasm"), padded(std::fs::read(src.join("plugin.wasm")).unwrap(), 16)).unwrap();
    dst
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_package_reaches_every_gateway_its_module_once_and_updates_under_load() {
    let up = named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    let pkg = package("header-edit", &dir.path().join("v1"));
    let pkg = pkg.to_str().unwrap();

    let out = ctl_ok(&cp, &["apply", "-f", pkg]);
    assert!(out.contains("uploaded (header-edit") && out.contains("package/header-edit created"), "{out}");
    // The same package again: the module is not sent twice, the resource is unchanged.
    let out = ctl_ok(&cp, &["apply", "-f", pkg]);
    assert!(out.contains("unchanged (header-edit)") && out.contains("package/header-edit unchanged"), "{out}");
    cp.apply(dir.path(), &routes(up.port(), "v1"));

    let a = Gw::start("a", &cp.grpc_url(), &dir.path().join("a"), "127.0.0.1:0");
    let b = Gw::start("b", &cp.grpc_url(), &dir.path().join("b"), "127.0.0.1:0");
    let (aa, ba) = (a.listen_addr(), b.listen_addr());
    wait_tag(&a, aa, "v1").await;
    wait_tag(&b, ba, "v1").await;
    assert_eq!(gateway_field(&cp, "a", "modules_sent").await, 1);

    // A route change is a new revision; the gateways already hold the module.
    cp.apply(dir.path(), &routes(up.port(), "v1b"));
    wait_tag(&a, aa, "v1b").await;
    wait_tag(&b, ba, "v1b").await;
    assert_eq!(gateway_field(&cp, "a", "modules_sent").await, 1);
    assert_eq!(gateway_field(&cp, "b", "modules_sent").await, 1);

    // A new version of the module rolls out while clients keep calling: none fails.
    let stop = Arc::new(AtomicBool::new(false));
    let (served, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let load = {
        let (stop, served, failed) = (stop.clone(), served.clone(), failed.clone());
        tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                for addr in [aa, ba] {
                    match tag(addr).await {
                        Some(_) => served.fetch_add(1, Ordering::Relaxed),
                        None => failed.fetch_add(1, Ordering::Relaxed),
                    };
                }
            }
        })
    };
    let v2 = next_version(Path::new(pkg), &dir.path().join("v2"), "1.1.0");
    let file = dir.path().join("fleet.yaml");
    std::fs::write(&file, format!("plugin_packages: [\"{}\"]\n{}", v2.display(), routes(up.port(), "v2"))).unwrap();
    // A standalone file naming package directories moves to the fleet as it is.
    let out = ctl_ok(&cp, &["apply", "-f", file.to_str().unwrap()]);
    assert!(out.contains("uploaded (header-edit") && out.contains("package/header-edit configured"), "{out}");
    wait_tag(&a, aa, "v2").await;
    wait_tag(&b, ba, "v2").await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, Ordering::Relaxed);
    load.await.unwrap();
    assert_eq!(failed.load(Ordering::Relaxed), 0, "requests failed during the rollout");
    assert!(served.load(Ordering::Relaxed) > 10);
    assert_eq!(gateway_field(&cp, "a", "modules_sent").await, 2);
    let (_, stored) = cp.call("GET", "/api/v1/packages/header-edit", None).await;
    assert_eq!(stored["body"]["metadata"]["version"], "1.1.0", "{stored}");

    // A restarted gateway serves the package from what it kept, before and without a fetch.
    drop(a);
    let a = Gw::start("a", &cp.grpc_url(), &dir.path().join("a"), "127.0.0.1:0");
    wait_tag(&a, a.listen_addr(), "v2").await;
    assert_eq!(gateway_field(&cp, "a", "modules_sent").await, 2);
}

/// A module with one import no proxy-wasm host has (`env.weir_nothing`).
fn unloadable_module() -> Vec<u8> {
    let mut m = b"\0asm\x01\0\0\0".to_vec();
    m.extend_from_slice(&[1, 4, 1, 0x60, 0, 0]); // one type: () -> ()
    let (module, field) = (b"env", b"weir_nothing");
    let mut imports = vec![1, module.len() as u8];
    imports.extend_from_slice(module);
    imports.push(field.len() as u8);
    imports.extend_from_slice(field);
    imports.extend_from_slice(&[0, 0]); // a function of type 0
    m.push(2);
    m.push(imports.len() as u8);
    m.extend_from_slice(&imports);
    m
}

fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).iter().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_module_a_gateway_cannot_load_is_nacked_and_the_old_version_keeps_serving() {
    let up = named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    let pkg = package("header-edit", &dir.path().join("v1"));
    ctl_ok(&cp, &["apply", "-f", pkg.to_str().unwrap()]);
    cp.apply(dir.path(), &routes(up.port(), "v1"));
    let gw = Gw::start("g", &cp.grpc_url(), &dir.path().join("g"), "127.0.0.1:0");
    let addr = gw.listen_addr();
    wait_tag(&gw, addr, "v1").await;

    // Uploads are checked against the hash they are filed under.
    let bad = unloadable_module();
    let sha = sha256_hex(&bad);
    let put =
        |sha: String, body: Vec<u8>| async move { put_raw(cp.api, &format!("/api/v1/modules/{sha}"), body).await };
    assert_eq!(put("0".repeat(64), bad.clone()).await, 400);
    assert_eq!(put(sha.clone(), bad.clone()).await, 201);
    assert_eq!(put(sha.clone(), bad.clone()).await, 200, "stored once");

    // A package naming a module that was never uploaded is refused by the control plane.
    let (_, current) = cp.call("GET", "/api/v1/packages/header-edit", None).await;
    let mut body = current["body"].clone();
    body["module"] = json!({"sha256": "1".repeat(64), "size": 3});
    let (status, v) = cp.call("PUT", "/api/v1/packages/header-edit", Some(&body)).await;
    assert_eq!(status, 400, "{v}");
    assert_eq!(v["errors"][0]["path"], "Package/header-edit.module", "{v}");

    // Sent straight to the API (past `weir ctl`'s own check), the gateway refuses to load it.
    body["module"] = json!({"sha256": sha, "size": bad.len()});
    let (status, v) = cp.call("PUT", "/api/v1/packages/header-edit", Some(&body)).await;
    assert_eq!(status, 200, "{v}");
    let rev = v["revision"].as_u64().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let nack = loop {
        let n = gateway_field(&cp, "g", "last_nack").await;
        if n["revision"] == rev {
            break n;
        }
        assert!(Instant::now() < deadline, "no NACK for revision {rev}: {n}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert!(nack["errors"].to_string().contains("weir_nothing"), "{nack}");
    assert_eq!(tag(addr).await.as_deref(), Some("v1"), "the old version keeps serving");
    // `weir ctl` itself would not have sent it.
    let local = dir.path().join("local");
    let copy = package("header-edit", &local);
    std::fs::write(copy.join("plugin.wasm"), &bad).unwrap();
    let out = cp.ctl(&["apply", "-f", copy.to_str().unwrap()]);
    assert!(!out.status.success() && String::from_utf8_lossy(&out.stderr).contains("weir_nothing"), "{out:?}");
}

/// PUTs raw bytes to the admin API; returns the status.
async fn put_raw(api: SocketAddr, path: &str, body: Vec<u8>) -> u16 {
    use http_body_util::Full;
    use hyper_util::rt::TokioIo;
    let stream = tokio::net::TcpStream::connect(api).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::put(path)
        .header("host", "cp")
        .header("content-type", "application/wasm")
        .body(Full::new(bytes::Bytes::from(body)))
        .unwrap();
    send.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test]
async fn a_dry_run_checks_a_package_without_uploading_its_module() {
    let dir = tempfile::tempdir().unwrap();
    let cp = Cp::start(dir.path(), 0, &[]);
    let pkg_dir = package("header-edit", &dir.path().join("v1"));
    let pkg = pkg_dir.to_str().unwrap();
    let sha = sha256_hex(&std::fs::read(pkg_dir.join("plugin.wasm")).unwrap());
    let out = ctl_ok(&cp, &["apply", "-f", pkg, "--dry-run"]);
    assert!(out.contains("would be uploaded (header-edit") && out.contains("(dry run)"), "{out}");
    assert!(out.contains("package/header-edit created"), "the resource is checked as if the module were there: {out}");
    // `diff` exits 1 when there are differences, as `kubectl diff` does.
    let diff = cp.ctl(&["diff", "-f", pkg]);
    let out = String::from_utf8_lossy(&diff.stdout);
    assert_eq!(diff.status.code(), Some(1), "{out}");
    assert!(
        out.contains("would be uploaded") && out.contains("+++ b/Package/header-edit"),
        "diff is a dry run too: {out}"
    );
    // Nothing was stored: no module, no resource, no revision.
    assert_eq!(cp.call("GET", &format!("/api/v1/modules/{sha}"), None).await.0, 404);
    assert_eq!(cp.call("GET", "/api/v1/packages/header-edit", None).await.0, 404);
    assert_eq!(cp.revision().await, 0);
    // Only a dry run may name modules it has not uploaded.
    let body = json!({"resources": [], "pending_modules": [sha]});
    let (status, v) = cp.call("POST", "/api/v1/apply", Some(&body)).await;
    assert_eq!(status, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("upload the modules first"), "{v}");
    // The real apply uploads it.
    let out = ctl_ok(&cp, &["apply", "-f", pkg]);
    assert!(out.contains("uploaded (header-edit") && !out.contains("would be"), "{out}");
    assert_eq!(cp.call("GET", &format!("/api/v1/modules/{sha}"), None).await.0, 200);
}
