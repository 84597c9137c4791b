//! Connections of the load generator: TCP or TLS, HTTP/1.1 or HTTP/2.
//!
//! An HTTP/1.1 connection's I/O is driven inside the worker's own task (no second task, no
//! channel hop per request) so the generator stays cheaper per request than the servers it
//! measures; HTTP/2 needs hyper's connection task for its multiplexing.

use std::sync::Arc;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

use super::h1::RawConn;
use super::runner::Plan;
use super::scenario::Protocol;

pub(crate) trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

/// Where and how to connect.
#[derive(Clone)]
pub(crate) struct Dialer {
    host: String,
    port: u16,
    tls: Option<(TlsConnector, ServerName<'static>)>,
    protocol: Protocol,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Dialer({}:{}, tls={})", self.host, self.port, self.tls.is_some())
    }
}

/// Why a request did not get a response.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Failure {
    /// TCP or TLS connection could not be made.
    Connect,
    /// No response within the scenario's timeout.
    Timeout,
    /// The connection broke or the peer spoke bad HTTP.
    Protocol,
}

impl Dialer {
    /// From a target URL such as `https://127.0.0.1:8443`.
    pub(crate) fn new(
        target: &str,
        protocol: Protocol,
        insecure: bool,
        ca: Option<&std::path::Path>,
    ) -> Result<Self, String> {
        let uri: http::Uri = target.parse().map_err(|e| format!("target {target:?}: {e}"))?;
        let https = uri.scheme_str() == Some("https");
        let host =
            uri.host().ok_or_else(|| format!("target {target:?} has no host"))?.trim_matches(['[', ']']).to_owned();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tls = if https {
            let name = ServerName::try_from(host.clone()).map_err(|e| format!("target host {host:?}: {e}"))?;
            Some((TlsConnector::from(Arc::new(tls_config(protocol, insecure, ca)?)), name))
        } else {
            None
        };
        Ok(Self { host, port, tls, protocol })
    }

    /// Opens a connection.
    pub(crate) async fn connect(&self) -> Result<Conn, Failure> {
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|_| Failure::Connect)?;
        let _ = tcp.set_nodelay(true);
        let io: Box<dyn Io> = match &self.tls {
            Some((c, name)) => Box::new(c.connect(name.clone(), tcp).await.map_err(|_| Failure::Connect)?),
            None => Box::new(tcp),
        };
        match self.protocol {
            Protocol::Http1 => Ok(Conn::H1(RawConn::new(io))),
            Protocol::Http2 => {
                let io = TokioIo::new(io);
                let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await.map_err(|_| Failure::Connect)?;
                tokio::spawn(conn);
                Ok(Conn::H2 { sender })
            }
        }
    }
}

fn tls_config(
    protocol: Protocol,
    insecure: bool,
    ca: Option<&std::path::Path>,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let mut cfg = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(weir_gateway::tls::insecure_verifier(provider))
            .with_no_client_auth()
    } else {
        let path = ca.map_or_else(|| std::path::PathBuf::from("/etc/ssl/certs/ca-certificates.crt"), Into::into);
        let mut roots = rustls::RootCertStore::empty();
        let certs = CertificateDer::pem_file_iter(&path).map_err(|e| format!("CA file {}: {e}", path.display()))?;
        for c in certs.flatten() {
            let _ = roots.add(c);
        }
        builder.with_root_certificates(roots).with_no_client_auth()
    };
    cfg.alpn_protocols = match protocol {
        Protocol::Http1 => vec![b"http/1.1".to_vec()],
        Protocol::Http2 => vec![b"h2".to_vec()],
    };
    Ok(cfg)
}

/// An open connection.
pub(crate) enum Conn {
    /// HTTP/1.1, hand-rolled (see [`super::h1`]).
    H1(RawConn<Box<dyn Io>>),
    /// HTTP/2.
    H2 {
        /// Sends requests (streams).
        sender: http2::SendRequest<Full<Bytes>>,
    },
}

impl Conn {
    /// Sends request `n` of `plan` and reads the whole response: (status, body bytes,
    /// connection still usable).
    pub(crate) async fn send(
        &mut self,
        plan: &Plan,
        n: u64,
        scratch: &mut Vec<u8>,
    ) -> Result<(u16, u64, bool), Failure> {
        match self {
            Self::H1(c) => {
                let head_only = plan.render(n, scratch);
                let e = c.exchange(scratch, head_only).await?;
                Ok((e.status, e.body, e.keep_alive))
            }
            Self::H2 { sender } => {
                sender.ready().await.map_err(|_| Failure::Protocol)?;
                let rsp = sender.send_request(plan.request(n)).await.map_err(|_| Failure::Protocol)?;
                let (status, body) = read(rsp).await?;
                Ok((status.as_u16(), body, true))
            }
        }
    }
}

async fn read(rsp: http::Response<hyper::body::Incoming>) -> Result<(StatusCode, u64), Failure> {
    let status = rsp.status();
    let mut body = rsp.into_body();
    let mut n = 0u64;
    while let Some(f) = body.frame().await {
        let f = f.map_err(|_| Failure::Protocol)?;
        n += f.data_ref().map_or(0, |d| d.len() as u64);
    }
    Ok((status, n))
}
