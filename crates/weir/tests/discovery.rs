//! Endpoints from DNS, against a real DNS server (dnsmasq on a high port of 127.0.0.1): A
//! records changed under load, SRV records with ports and weights, the last good answer kept
//! while DNS is down.

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::Ordering::SeqCst;
use std::time::Duration;

use common::load::Load;
use common::*;
use tokio::time::Instant;

/// A dnsmasq answering only from the files and records given, on its own port.
struct Dns {
    child: Child,
    port: u16,
    hosts: PathBuf,
    _dir: tempfile::TempDir,
}

impl Dns {
    fn start(hosts: &str, srv: &[&str]) -> Dns {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("hosts");
        std::fs::write(&file, hosts).unwrap();
        // A port free for UDP may be taken for TCP (or taken by the time dnsmasq binds it): a
        // dnsmasq that exits is started again on another port.
        for _ in 0..5 {
            let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let mut child = Self::spawn(dir.path(), &file, port, srv);
            let deadline = std::time::Instant::now() + Duration::from_secs(5);
            while std::time::Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                // Ready when it answers TCP on its port.
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return Dns { child, port, hosts: file, _dir: dir };
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
        panic!("dnsmasq did not start on any of 5 ports");
    }

    fn spawn(dir: &Path, hosts: &Path, port: u16, srv: &[&str]) -> Child {
        let bin = if Path::new("/usr/sbin/dnsmasq").exists() { "/usr/sbin/dnsmasq" } else { "dnsmasq" };
        let mut cmd = Command::new(bin);
        cmd.args(["--keep-in-foreground", "--no-resolv", "--no-hosts", "--conf-file=/dev/null", "--bind-interfaces"])
            .args(["--listen-address=127.0.0.1", "--user=root", "--local-ttl=0", "--log-facility=-"])
            .arg(format!("--port={port}"))
            .arg(format!("--pid-file={}", dir.join("pid").display()))
            .arg(format!("--addn-hosts={}", hosts.display()));
        for s in srv {
            cmd.arg(format!("--srv-host={s}"));
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("dnsmasq (apt-get install dnsmasq-base)")
    }

    /// Replaces the A records and has dnsmasq read them again (SIGHUP).
    fn set_hosts(&self, hosts: &str) {
        std::fs::write(&self.hosts, hosts).unwrap();
        let ok = Command::new("kill").args(["-HUP", &self.child.id().to_string()]).status().unwrap();
        assert!(ok.success());
    }

    fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Dns {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An upstream `app` found by `discovery` on `dns`; no `load_balancer` when `policy` is empty.
fn dns_config(dns: &Dns, policy: &str, discovery: &str) -> String {
    let lb = if policy.is_empty() { String::new() } else { format!("    load_balancer: {{ policy: {policy} }}\n") };
    let up = format!(
        "  - name: app\n{lb}    discovery:\n      dns: {{ server: \"127.0.0.1:{}\", min_ttl: 200ms, {discovery} }}\n",
        dns.port
    );
    config("  - { name: app, upstream: app, retries: { attempts: 2 } }", &up)
}

async fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + within;
    while !f() {
        assert!(Instant::now() < deadline, "{what} within {within:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_that_moves_under_load_moves_its_traffic_and_keeps_the_last_answer_when_dns_dies() {
    // Two servers on one port, at two loopback addresses: A records carry no port.
    let a = named_at("A", "127.0.0.2:0".parse().unwrap()).await;
    let b = named_at("B", SocketAddr::new("127.0.0.3".parse().unwrap(), a.port())).await;
    assert_eq!(b.port(), a.port());
    let mut dns = Dns::start("127.0.0.2 app.test\n", &[]);
    let weir = Weir::start(&dns_config(&dns, "", &format!("name: app.test, port: {}", a.port())));
    // The first answer is in before the config serves.
    assert_eq!(get(weir.addr, "/", &[]).await.1, "A");
    let load = Load::start(weir.addr, 4);
    tokio::time::sleep(Duration::from_millis(300)).await;
    dns.set_hosts("127.0.0.3 app.test\n");
    wait_for("traffic moved to the new address", Duration::from_secs(10), || load.last().as_deref() == Some("B")).await;
    let moved = a.hits.load(SeqCst);
    tokio::time::sleep(Duration::from_millis(300)).await;
    // DNS goes away: the last good answer keeps serving.
    dns.stop();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (seen, failures) = load.finish().await;
    assert!(failures.is_empty(), "{} requests failed: {failures:?}", failures.len());
    assert_eq!(seen.last().map(String::as_str), Some("B"), "still served after DNS stopped");
    assert!(a.hits.load(SeqCst) <= moved + 4, "A got traffic after it left DNS");
    assert!(weir.wait_log("DNS lookup failed", Duration::from_secs(4)).await, "the failure is logged");
    let s = weir.stats().await;
    let eps = s["upstreams"]["app"]["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1, "{s}");
    assert_eq!(eps[0]["endpoint"], format!("127.0.0.3:{}", a.port()), "{s}");
}

#[tokio::test]
async fn srv_records_give_ports_and_weights() {
    let (a, b) = (named("A").await, named("B").await);
    let srv = [
        format!("_http._tcp.app.test,a.test,{},0,1", a.port()),
        format!("_http._tcp.app.test,b.test,{},0,3", b.port()),
        // A higher priority value is a fallback, not used while the others answer.
        "_http._tcp.app.test,c.test,9,1,100".to_owned(),
    ];
    let srv: Vec<&str> = srv.iter().map(String::as_str).collect();
    let dns = Dns::start("127.0.0.1 a.test\n127.0.0.1 b.test\n127.0.0.1 c.test\n", &srv);
    let weir = Weir::start(&dns_config(&dns, "weighted_round_robin", "name: _http._tcp.app.test, record: srv"));
    let s = weir.stats().await;
    let mut eps: Vec<(String, u64)> = s["upstreams"]["app"]["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["endpoint"].as_str().unwrap().to_owned(), e["weight"].as_u64().unwrap()))
        .collect();
    eps.sort();
    let mut want = vec![(format!("127.0.0.1:{}", a.port()), 1), (format!("127.0.0.1:{}", b.port()), 3)];
    want.sort();
    assert_eq!(eps, want, "{s}");
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..40 {
        c.text("/").await;
    }
    assert_eq!((a.hits.load(SeqCst), b.hits.load(SeqCst)), (10, 30), "weights from SRV apply");
}

#[test]
fn discovery_settings_are_checked_with_paths() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("weir.yaml");
    let up = "  - name: app\n    load_balancer: { endpoints: [{ address: 127.0.0.1, port: 80 }] }\n    discovery:\n      dns: { name: \"bad name\", min_ttl: 5ms, max_ttl: 1ms }\n";
    std::fs::write(&cfg, config("  - { name: app, upstream: app }", up)).unwrap();
    let out =
        Command::new(env!("CARGO_BIN_EXE_weir")).args(["validate", "-c", cfg.to_str().unwrap()]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    for needle in [
        "upstreams[0].load_balancer.endpoints",
        "not both",
        "upstreams[0].discovery.dns.name",
        "upstreams[0].discovery.dns.port",
        "upstreams[0].discovery.dns.min_ttl",
        "upstreams[0].discovery.dns.max_ttl",
    ] {
        assert!(err.contains(needle), "{needle}: {err}");
    }
}
