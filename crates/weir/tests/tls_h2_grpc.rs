//! TLS termination (SNI, ALPN, versions, hot reload), HTTP/2 and h2c, TLS and mTLS to
//! upstreams, HTTP/2 upstreams, and gRPC through Weir with a real tonic server and client.

mod common;

use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::pki::{Ca, ca, leaf, write_pair};
use common::*;
use hyper::body::Incoming;
use hyper::{Request, Response};
use rustls::pki_types::pem::PemObject;

fn curl(args: &[&str]) -> (bool, String) {
    let out = Command::new("curl").args(["-s", "--max-time", "5"]).args(args).output().expect("curl is installed");
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr))
}

fn tls_listener_config(up: u16, certs: &[(String, String)]) -> String {
    let list: Vec<String> = certs.iter().map(|(c, k)| format!("{{ cert: \"{c}\", key: \"{k}\" }}")).collect();
    format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: public, address: 127.0.0.1:0, tls: {{ certificates: [{}] }} }}\nroutes:\n  - {{ name: all, upstream: app }}\nupstreams:\n{}",
        list.join(", "),
        upstream_yaml("app", "round_robin", &[(up, 1)], "")
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sni_picks_exact_wildcard_or_default_with_alpn_and_modern_tls_only() {
    let up = named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let ca = ca("test ca");
    let default = write_pair(dir.path(), "default", &leaf(&ca, &["default.example"]));
    let exact = write_pair(dir.path(), "a", &leaf(&ca, &["a.example.com"]));
    let wild = write_pair(dir.path(), "wild", &leaf(&ca, &["*.wild.example"]));
    let ca_file = dir.path().join("ca.pem");
    std::fs::write(&ca_file, ca.pem()).unwrap();
    let weir = Weir::start(&tls_listener_config(up.port(), &[default, exact, wild]));
    let port = weir.addr.port();
    let ca_arg = ca_file.display().to_string();
    let tokio_curl = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || curl(&args.iter().map(String::as_str).collect::<Vec<_>>()))
    };
    for host in ["a.example.com", "x.wild.example", "default.example"] {
        let resolve = format!("{host}:{port}:127.0.0.1");
        let (ok, out) = tokio_curl(vec![
            "--cacert".into(),
            ca_arg.clone(),
            "--resolve".into(),
            resolve,
            format!("https://{host}:{port}/"),
        ])
        .await
        .unwrap();
        assert!(ok && out.contains("app"), "{host}: certificate must match by SNI: {out}");
    }
    // An unknown name gets the default certificate (so verification by name fails).
    let resolve = format!("other.example:{port}:127.0.0.1");
    let (ok, out) = tokio_curl(vec![
        "-v".into(),
        "-k".into(),
        "--resolve".into(),
        resolve,
        format!("https://other.example:{port}/"),
    ])
    .await
    .unwrap();
    assert!(ok && out.contains("CN=default.example"), "{out}");
    // ALPN: h2 and http/1.1.
    let url = format!("https://127.0.0.1:{port}/");
    let (_, v) = tokio_curl(vec![
        "-k".into(),
        "--http2".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_version}".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(v, "2");
    let (_, v) = tokio_curl(vec![
        "-k".into(),
        "--http1.1".into(),
        "-o".into(),
        "/dev/null".into(),
        "-w".into(),
        "%{http_version}".into(),
        url.clone(),
    ])
    .await
    .unwrap();
    assert_eq!(v, "1.1");
    // TLS 1.2 and 1.3 only.
    let (ok, _) =
        tokio_curl(vec!["-k".into(), "--tlsv1.2".into(), "--tls-max".into(), "1.2".into(), url.clone()]).await.unwrap();
    assert!(ok, "TLS 1.2 accepted");
    let (ok, _) =
        tokio_curl(vec!["-k".into(), "--tlsv1.1".into(), "--tls-max".into(), "1.1".into(), url]).await.unwrap();
    assert!(!ok, "TLS 1.1 refused");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn h2c_prior_knowledge_on_a_plain_listener() {
    let up = named("app").await;
    let weir = Weir::start(&config(
        "  - { name: all, upstream: app }",
        &upstream_yaml("app", "round_robin", &[(up.port(), 1)], ""),
    ));
    let url = weir.url("/");
    let (ok, v) = tokio::task::spawn_blocking(move || {
        curl(&["--http2-prior-knowledge", "-o", "/dev/null", "-w", "%{http_version}", &url])
    })
    .await
    .unwrap();
    assert!(ok);
    assert_eq!(v, "2");
}

/// A TLS client connection that trusts only `ca`, for `a.example.com`.
async fn tls_client(
    addr: std::net::SocketAddr,
    ca: &Ca,
) -> hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let cfg = common::tls_client_config(ca.der());
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("a.example.com").unwrap();
    let tls = tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

async fn ask(s: &mut hyper::client::conn::http1::SendRequest<http_body_util::Full<bytes::Bytes>>) -> u16 {
    s.ready().await.unwrap();
    let req =
        Request::get("/").header("host", "a.example.com").body(http_body_util::Full::new(bytes::Bytes::new())).unwrap();
    s.send_request(req).await.unwrap().status().as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_reload_without_dropping_connections() {
    let up = named("app").await;
    let dir = tempfile::tempdir().unwrap();
    let (old_ca, new_ca) = (ca("old ca"), ca("new ca"));
    let files = write_pair(dir.path(), "a", &leaf(&old_ca, &["a.example.com"]));
    let weir = Weir::start(&tls_listener_config(up.port(), std::slice::from_ref(&files)));
    let mut before = tls_client(weir.addr, &old_ca).await;
    assert_eq!(ask(&mut before).await, 200);
    // Rotate: same files, new key and issuer.
    write_pair(dir.path(), "a", &leaf(&new_ca, &["a.example.com"]));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let cfg = common::tls_client_config(new_ca.der());
        let tcp = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
        let name = rustls::pki_types::ServerName::try_from("a.example.com").unwrap();
        if tokio_rustls::TlsConnector::from(cfg).connect(name, tcp).await.is_ok() {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "new certificate never served");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(weir.wait_log("certificates reloaded", Duration::from_secs(3)).await, "reload not logged");
    assert_eq!(ask(&mut before).await, 200, "the connection opened before the reload still works");
}

/// An HTTPS upstream that requires a client certificate from `client_ca` when given one.
async fn tls_upstream(server: (String, String), client_ca: Option<&Ca>, h2: bool) -> u16 {
    let certs = vec![rustls::pki_types::CertificateDer::from_pem_slice(server.0.as_bytes()).unwrap()];
    let key = rustls::pki_types::PrivateKeyDer::from_pem_slice(server.1.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder =
        rustls::ServerConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().unwrap();
    let builder = match client_ca {
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            roots.add(ca.der().clone()).unwrap();
            builder.with_client_cert_verifier(
                rustls::server::WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider).build().unwrap(),
            )
        }
        None => builder.with_no_client_auth(),
    };
    let mut cfg = builder.with_single_cert(certs, key).unwrap();
    cfg.alpn_protocols = if h2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(cfg));
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((s, _)) = l.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(s).await else { return };
                let svc = hyper::service::service_fn(|req: Request<Incoming>| async move {
                    let body = format!("secure {:?}", req.version());
                    Ok::<_, std::convert::Infallible>(Response::new(full(body)))
                });
                let _ = hyper_util::server::conn::auto::Builder::new(hyper_util::rt::TokioExecutor::new())
                    .serve_connection(hyper_util::rt::TokioIo::new(tls), svc)
                    .await;
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_tls_mtls_h2_and_verification_on_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let server_ca = ca("server ca");
    let client_ca = ca("client ca");
    let mtls_port = tls_upstream(leaf(&server_ca, &["upstream.test"]), Some(&client_ca), false).await;
    let h2_port = tls_upstream(leaf(&server_ca, &["upstream.test"]), None, true).await;
    let ca_file = dir.path().join("server-ca.pem");
    std::fs::write(&ca_file, server_ca.pem()).unwrap();
    let (cc, ck) = write_pair(dir.path(), "client", &leaf(&client_ca, &["weir-gateway"]));
    let ca_s = ca_file.display();
    let tls_ok =
        format!("    tls: {{ sni: upstream.test, ca: \"{ca_s}\", client_cert: \"{cc}\", client_key: \"{ck}\" }}\n");
    let tls_no_client = format!("    tls: {{ sni: upstream.test, ca: \"{ca_s}\" }}\n");
    let tls_default_roots = "    tls: { sni: upstream.test }\n".to_owned();
    let h2 = format!("    protocol: h2\n    tls: {{ sni: upstream.test, ca: \"{ca_s}\" }}\n");
    let ups = [
        upstream_yaml("mtls", "round_robin", &[(mtls_port, 1)], &tls_ok),
        upstream_yaml("nocert", "round_robin", &[(mtls_port, 1)], &tls_no_client),
        upstream_yaml("untrusted", "round_robin", &[(mtls_port, 1)], &tls_default_roots),
        upstream_yaml("h2", "round_robin", &[(h2_port, 1)], &h2),
    ]
    .join("");
    let routes = ["mtls", "nocert", "untrusted", "h2"]
        .map(|r| format!("  - {{ name: {r}, match: {{ path: {{ prefix: /{r} }} }}, upstream: {r} }}"))
        .join("\n");
    let weir = Weir::start(&config(&routes, &ups));
    assert_eq!(get(weir.addr, "/mtls", &[]).await, (200, bytes::Bytes::from("secure HTTP/1.1")));
    assert_eq!(
        get(weir.addr, "/nocert", &[]).await.0,
        502,
        "mTLS upstream refuses a gateway without a client certificate"
    );
    assert_eq!(get(weir.addr, "/untrusted", &[]).await.0, 502, "certificates are verified by default");
    assert_eq!(get(weir.addr, "/h2", &[]).await, (200, bytes::Bytes::from("secure HTTP/2.0")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpc_unary_and_streaming_pass_through_with_status_and_weir_errors_are_grpc_shaped() {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

    let (reporter, service) = tonic_health::server::health_reporter();
    reporter.set_service_status("weir.Test", tonic_health::ServingStatus::Serving).await;
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service)
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(l)),
    );
    let routes = "  - { name: dead, match: { path: { prefix: /grpc.health.v1.Health/Watch } }, upstream: dead }\n  - { name: grpc, upstream: grpc }";
    let ups = format!(
        "{}{}",
        upstream_yaml("grpc", "round_robin", &[(port, 1)], "    protocol: h2c\n"),
        upstream_yaml("dead", "round_robin", &[(dead_port(), 1)], "    protocol: h2c\n")
    );
    let weir = Weir::start(&config(routes, &ups));
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", weir.addr)).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    let rsp = client.check(HealthCheckRequest { service: "weir.Test".into() }).await.unwrap();
    assert_eq!(rsp.into_inner().status, ServingStatus::Serving as i32);
    // grpc-status from the upstream travels in trailers.
    let err = client.check(HealthCheckRequest { service: "nope".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err:?}");
    // Weir's own failure (dead upstream) is a gRPC status, not an HTML page.
    let err = client.watch(HealthCheckRequest { service: "weir.Test".into() }).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err:?}");

    // Server streaming through Weir: re-route Watch to the live upstream.
    let weir2 = Weir::start(&config(
        "  - { name: grpc, upstream: grpc }",
        &upstream_yaml("grpc", "round_robin", &[(port, 1)], "    protocol: h2c\n"),
    ));
    let channel =
        tonic::transport::Channel::from_shared(format!("http://{}", weir2.addr)).unwrap().connect().await.unwrap();
    let mut client = HealthClient::new(channel);
    let mut stream = client.watch(HealthCheckRequest { service: "weir.Test".into() }).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    reporter.set_service_status("weir.Test", tonic_health::ServingStatus::NotServing).await;
    let second = tokio::time::timeout(Duration::from_secs(5), stream.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(second.status, ServingStatus::NotServing as i32);
}
