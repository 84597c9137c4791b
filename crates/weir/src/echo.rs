//! `weir echo-server`: answers every request with what it received, as JSON.
//!
//! For the README example, demos and benchmarks; `/healthz` answers 200 so active health
//! checks work against it.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::process::ExitCode;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// Arguments of `weir echo-server`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Address to listen on; repeat for several servers.
    #[arg(short, long, required = true)]
    listen: Vec<SocketAddr>,
}

pub(crate) fn run(args: &Args) -> ExitCode {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else {
        eprintln!("cannot start the runtime");
        return ExitCode::FAILURE;
    };
    rt.block_on(async {
        let mut tasks = Vec::new();
        for addr in &args.listen {
            let l = match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(e) => {
                    eprintln!("echo-server cannot bind {addr}: {e}");
                    return ExitCode::FAILURE;
                }
            };
            tracing::info!(address = %addr, "echo server listening");
            tasks.push(tokio::spawn(serve(l, *addr)));
        }
        let _ = tokio::signal::ctrl_c().await;
        ExitCode::SUCCESS
    })
}

async fn serve(l: TcpListener, me: SocketAddr) {
    loop {
        let Ok((s, _)) = l.accept().await else { continue };
        tokio::spawn(async move {
            let svc = service_fn(move |req| echo(me, req));
            let _ = http1::Builder::new().serve_connection(TokioIo::new(s), svc).with_upgrades().await;
        });
    }
}

async fn echo(me: SocketAddr, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if req.uri().path() == "/healthz" {
        return Ok(Response::new(Full::new(Bytes::from_static(b"ok\n"))));
    }
    let (parts, mut body) = req.into_parts();
    let mut body_bytes = 0u64;
    while let Some(frame) = body.frame().await {
        match frame {
            Ok(f) => body_bytes += f.data_ref().map_or(0, |d| d.len() as u64),
            Err(_) => break,
        }
    }
    let headers: serde_json::Map<String, serde_json::Value> = parts
        .headers
        .iter()
        .map(|(k, v)| (k.to_string(), String::from_utf8_lossy(v.as_bytes()).into_owned().into()))
        .collect();
    let doc = serde_json::json!({
        "server": me.to_string(),
        "method": parts.method.as_str(),
        "uri": parts.uri.to_string(),
        "headers": headers,
        "body_bytes": body_bytes,
    });
    let mut rsp = Response::new(Full::new(Bytes::from(format!("{doc:#}\n"))));
    rsp.headers_mut().insert("content-type", http::HeaderValue::from_static("application/json"));
    Ok(rsp)
}
