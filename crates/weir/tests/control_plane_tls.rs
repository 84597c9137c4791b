//! The control plane over TLS: gRPC to gateways with mutual TLS, and the admin API for
//! `weir ctl` and curl, with real processes and certificates from a throwaway CA.

mod common;

use std::process::{Command, Output};
use std::time::Duration;

use common::fleet::{Cp, Gw, Proc};
use common::named;
use common::pki::{ca, leaf, write_pair};

/// `weir ctl --server SERVER ARGS…`.
fn ctl(server: &str, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_weir")).args(["ctl", "--server", server]).args(args).output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateways_sync_over_mutual_tls_the_api_over_tls_and_strangers_are_refused() {
    let up = named("secured").await;
    let dir = tempfile::tempdir().unwrap();
    let (pki, other) = (ca("weir fleet ca"), ca("someone else"));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, pki.pem()).unwrap();
    let ca_file = ca_file.to_str().unwrap();
    let (cert, key) = write_pair(dir.path(), "cp", &leaf(&pki, &["127.0.0.1", "localhost"]));
    let (gw_cert, gw_key) = write_pair(dir.path(), "gw", &leaf(&pki, &["gateway-1"]));
    let (bad_cert, bad_key) = write_pair(dir.path(), "bad", &leaf(&other, &["intruder"]));

    let cp = Cp::start(dir.path(), 0, &["--tls-cert", &cert, "--tls-key", &key, "--client-ca", ca_file]);
    let line = cp.proc.wait_line("grpc bound", Duration::from_secs(5));
    assert!(line.contains("tls=true") && line.contains("mtls=true"), "{line}");
    let url = format!("https://{}", cp.grpc);
    let line = cp.proc.wait_line("admin api bound", Duration::from_secs(5));
    assert!(line.contains("tls=true"), "{line}");
    let api = format!("https://{}", cp.api);
    let file = dir.path().join("app.yaml");
    std::fs::write(
        &file,
        format!(
            "kind: Upstream\nname: app\nload_balancer: {{ endpoints: [{{ address: 127.0.0.1, port: {} }}] }}\n---\n\
             kind: Route\nname: api\nmatch: {{ path: {{ prefix: /api }} }}\nupstream: app\n",
            up.port()
        ),
    )
    .unwrap();
    let file = file.to_str().unwrap();
    // The admin API speaks TLS only; ctl must be told which CA to trust.
    let out = ctl(&api, &["apply", "-f", file]);
    assert!(!out.status.success() && text(&out).contains("--cacert"), "an unknown CA is not trusted: {}", text(&out));
    let out = ctl(&format!("http://{}", cp.api), &["apply", "-f", file]);
    assert!(!out.status.success(), "plain HTTP to the TLS port: {}", text(&out));
    let out = ctl(&api, &["--cacert", ca_file, "apply", "-f", file]);
    assert!(out.status.success() && text(&out).contains("route/api created"), "{}", text(&out));

    let good = Gw::start_with(
        "good",
        &url,
        &dir.path().join("good"),
        "127.0.0.1:0",
        &["--control-plane-ca", ca_file, "--control-plane-cert", &gw_cert, "--control-plane-key", &gw_key],
    );
    let addr = good.listen_addr();
    good.wait_serves(addr, "/api", "secured", Duration::from_secs(10)).await;

    // No client certificate, one from another CA, and plaintext to the TLS port: none gets in.
    let anonymous =
        Gw::start_with("anonymous", &url, &dir.path().join("a"), "127.0.0.1:0", &["--control-plane-ca", ca_file]);
    let intruder = Gw::start_with(
        "intruder",
        &url,
        &dir.path().join("i"),
        "127.0.0.1:0",
        &["--control-plane-ca", ca_file, "--control-plane-cert", &bad_cert, "--control-plane-key", &bad_key],
    );
    let plaintext = Gw::start("plaintext", &format!("http://{}", cp.grpc), &dir.path().join("p"), "127.0.0.1:0");
    for g in [&anonymous, &intruder, &plaintext] {
        g.proc.wait_line("control-plane stream ended; reconnecting", Duration::from_secs(10));
    }
    // A gateway that does not trust the control plane's CA refuses it too.
    let wrong_ca = dir.path().join("other-ca.pem");
    std::fs::write(&wrong_ca, other.pem()).unwrap();
    let wrong_ca = wrong_ca.to_str().unwrap();
    let distrustful = Gw::start_with(
        "distrustful",
        &url,
        &dir.path().join("d"),
        "127.0.0.1:0",
        &["--control-plane-ca", wrong_ca, "--control-plane-cert", &gw_cert, "--control-plane-key", &gw_key],
    );
    distrustful.proc.wait_line("control-plane stream ended; reconnecting", Duration::from_secs(10));

    // curl, a client of its own, reads the registry over TLS.
    let out = Command::new("curl")
        .args(["-s", "--max-time", "5", "--cacert", ca_file, &format!("{api}/api/v1/gateways")])
        .output()
        .expect("curl is installed");
    let gateways: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON from curl");
    let ids: Vec<&str> = gateways.as_array().unwrap().iter().filter_map(|g| g["id"].as_str()).collect();
    assert_eq!(ids, ["good"], "only the gateway with a certificate from the fleet CA registered");
    for g in [&anonymous, &intruder, &plaintext, &distrustful] {
        let (status, _) = common::fleet::call(g.admin, "GET", "/readyz", None, None).await;
        assert_eq!(status, 503, "{} has no config, so it is not ready", g.id);
    }
}

#[test]
fn an_https_control_plane_needs_a_ca_and_tls_flags_come_in_pairs() {
    let dir = tempfile::tempdir().unwrap();
    let mut gw =
        Proc::spawn(&["gateway", "--control-plane", "https://127.0.0.1:1", "--listen", "127.0.0.1:0"], dir.path());
    let status = gw.child.wait().unwrap();
    assert!(!status.success());
    gw.wait_line("need --control-plane-ca", Duration::from_secs(5));

    let mut cp = Proc::spawn(&["control-plane", "--store", "redb:cp.redb", "--tls-cert", "cert.pem"], dir.path());
    assert!(!cp.child.wait().unwrap().success());
    cp.wait_line("--tls-key", Duration::from_secs(5));

    std::fs::write(dir.path().join("junk.pem"), "not a certificate").unwrap();
    let mut cp = Proc::spawn(
        &["control-plane", "--store", "redb:cp.redb", "--tls-cert", "junk.pem", "--tls-key", "junk.pem"],
        dir.path(),
    );
    assert!(!cp.child.wait().unwrap().success());
    cp.wait_line("invalid --tls-cert", Duration::from_secs(5));
}
