//! HTTP/1.1 proxying over real sockets: keep-alive, headers, chunked, HEAD, 100-continue,
//! WebSocket upgrade, 1 GiB bodies both ways with flat memory, and the JSON 404.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Request, Response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn one_route(port: u16) -> String {
    config("  - { name: all, upstream: app }", &upstream_yaml("app", "round_robin", &[(port, 1)], ""))
}

#[tokio::test]
async fn keep_alive_both_sides_and_forwarding_headers() {
    let up = named("app").await;
    let weir = Weir::start(&one_route(up.port()));
    let mut c = Client::connect(weir.addr).await;
    for _ in 0..5 {
        let rsp = c
            .send(
                "GET",
                "/hello?x=1",
                &[
                    ("connection", "keep-alive, x-private"),
                    ("x-private", "secret"),
                    ("keep-alive", "timeout=5"),
                    ("te", "trailers"),
                    ("x-forwarded-for", "10.1.2.3"),
                ],
            )
            .await;
        assert_eq!(rsp.status(), 200);
        let h = rsp.headers().clone();
        assert_eq!(rsp.into_body().collect().await.unwrap().to_bytes(), "app");
        assert_eq!(h["x-seen-x-forwarded-for"], "10.1.2.3, 127.0.0.1");
        assert_eq!(h["x-seen-x-forwarded-proto"], "http");
        assert_eq!(h["x-seen-x-forwarded-host"], weir.addr.to_string());
        assert_eq!(h["x-seen-host"], weir.addr.to_string(), "Host is forwarded unchanged");
        assert_eq!(h["x-seen-via"], "1.1 weir");
        for hop in ["x-seen-x-private", "x-seen-keep-alive", "x-seen-te", "x-seen-connection"] {
            assert!(!h.contains_key(hop), "{hop} must not reach the upstream: {h:?}");
        }
    }
    assert_eq!(up.hits.load(std::sync::atomic::Ordering::SeqCst), 5);
    assert_eq!(up.conns.load(std::sync::atomic::Ordering::SeqCst), 1, "one pooled upstream connection for 5 requests");
    let stats = weir.stats().await;
    let pool = &stats["upstreams"]["app"]["endpoints"][0]["pool"];
    assert_eq!(pool["created"], 1, "{stats}");
    assert_eq!(pool["reused"], 4, "{stats}");
}

#[tokio::test]
async fn no_route_is_a_json_404() {
    let up = named("app").await;
    let yaml = config(
        "  - { name: only, match: { path: { prefix: /api } }, upstream: app }",
        &upstream_yaml("app", "round_robin", &[(up.port(), 1)], ""),
    );
    let weir = Weir::start(&yaml);
    let (status, body) = get(weir.addr, "/elsewhere", &[]).await;
    assert_eq!(status, 404);
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["reason"], "no_route");
}

#[tokio::test]
async fn chunked_upload_head_and_expect_continue() {
    let up = upstream_fn(|req: Request<Incoming>| async move {
        let method = req.method().clone();
        let te = req.headers().get("transfer-encoding").map(|v| v.to_str().unwrap().to_owned());
        let body = req.into_body().collect().await.unwrap().to_bytes();
        let mut rsp =
            Response::new(full(format!("{method} {} bytes te={te:?}: {}", body.len(), String::from_utf8_lossy(&body))));
        rsp.headers_mut().insert("x-len", body.len().into());
        rsp
    })
    .await;
    let weir = Weir::start(&one_route(up.port()));
    // Chunked request body, streamed through (still chunked upstream).
    let got = raw(
        weir.addr,
        b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
        "world",
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.contains("POST 11 bytes te=Some(\"chunked\"): hello world"), "{got}");
    // HEAD: headers, no body.
    let got = raw(weir.addr, b"HEAD /h HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", "\r\n\r\n").await;
    assert!(got.starts_with("HTTP/1.1 200"), "{got}");
    assert!(got.ends_with("\r\n\r\n"), "HEAD must carry no body: {got:?}");
    // Expect: 100-continue: Weir says 100 before the client sends the body.
    let mut s = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    s.write_all(
        b"POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n",
    )
    .await
    .unwrap();
    let interim = read_until(&mut s, "\r\n\r\n").await;
    assert!(interim.starts_with("HTTP/1.1 100 Continue"), "{interim}");
    s.write_all(b"ping").await.unwrap();
    let fin = read_until(&mut s, "ping").await;
    assert!(fin.contains("HTTP/1.1 200") && fin.contains("POST 4 bytes"), "{fin}");
}

#[tokio::test]
async fn websocket_upgrade_relays_both_directions() {
    let up = upstream_fn(|mut req: Request<Incoming>| async move {
        let on = hyper::upgrade::on(&mut req);
        tokio::spawn(async move {
            let io = on.await.unwrap();
            let mut io = hyper_util::rt::TokioIo::new(io);
            let mut buf = [0u8; 64];
            loop {
                let n = io.read(&mut buf).await.unwrap_or(0);
                if n == 0 {
                    break;
                }
                let mut out = b"echo:".to_vec();
                out.extend_from_slice(&buf[..n]);
                io.write_all(&out).await.unwrap();
            }
        });
        Response::builder()
            .status(101)
            .header("connection", "upgrade")
            .header("upgrade", "websocket")
            .header("sec-websocket-accept", "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=")
            .body(full(Bytes::new()))
            .unwrap()
    })
    .await;
    let weir = Weir::start(&one_route(up.port()));
    let mut s = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    s.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n").await.unwrap();
    let head = read_until(&mut s, "\r\n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    assert!(head.to_ascii_lowercase().contains("upgrade: websocket"), "{head}");
    for msg in ["one", "two"] {
        s.write_all(msg.as_bytes()).await.unwrap();
        let back = read_until(&mut s, msg).await;
        assert_eq!(back, format!("echo:{msg}"));
    }
}

const GIB: u64 = 1 << 30;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_gib_up_and_down_with_flat_memory() {
    let up = upstream_fn(|req: Request<Incoming>| async move {
        if req.method() == "POST" {
            let mut body = req.into_body();
            let mut n = 0u64;
            while let Some(f) = body.frame().await {
                n += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
            }
            return Response::new(full(n.to_string()));
        }
        // 1 GiB download in 64 KiB chunks, produced lazily.
        let chunk = Bytes::from(vec![7u8; 64 * 1024]);
        let stream = futures_util::stream::iter(
            (0..GIB / (64 * 1024))
                .map(move |_| Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(chunk.clone()))),
        );
        let mut rsp = Response::new(http_body_util::StreamBody::new(stream).boxed());
        rsp.headers_mut().insert("content-length", GIB.into());
        rsp
    })
    .await;
    let weir = Weir::start(&one_route(up.port()));
    let rss_before = weir.rss_kib();

    // Upload 1 GiB with Content-Length through raw writes.
    let mut s = tokio::net::TcpStream::connect(weir.addr).await.unwrap();
    s.write_all(format!("POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: {GIB}\r\n\r\n").as_bytes()).await.unwrap();
    let buf = vec![1u8; 256 * 1024];
    let mut peak = 0;
    for i in 0..GIB / buf.len() as u64 {
        s.write_all(&buf).await.unwrap();
        if i % 512 == 0 {
            peak = peak.max(weir.rss_kib());
        }
    }
    let reply = read_until(&mut s, &GIB.to_string()).await;
    assert!(reply.contains(&GIB.to_string()), "upstream must count 1 GiB: {reply}");

    // Download 1 GiB and count it.
    let rsp = request(weir.addr, "GET", "/down", &[]).await;
    assert_eq!(rsp.status(), 200);
    let mut body = rsp.into_body();
    let (mut n, mut frames) = (0u64, 0u64);
    while let Some(f) = body.frame().await {
        n += f.unwrap().data_ref().map_or(0, |d| d.len() as u64);
        frames += 1;
        if frames % 2048 == 0 {
            peak = peak.max(weir.rss_kib());
        }
    }
    assert_eq!(n, GIB);
    let growth_mib = peak.saturating_sub(rss_before) / 1024;
    assert!(growth_mib < 64, "RSS grew by {growth_mib} MiB while streaming 1 GiB each way");
    let _ = Duration::ZERO;
}
