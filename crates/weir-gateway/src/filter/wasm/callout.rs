//! HTTP callouts plugins dispatch (`proxy_http_call`): sent to the Weir upstream the plugin
//! names (the SDKs' "cluster"), balanced over its endpoints, bounded in time and size, on the
//! endpoint's pooled keep-alive connections like proxied requests.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request};
use http_body_util::{BodyExt, Limited};
use weir_wasm::{CallResponse, HttpCall};

use crate::body::{GatewayBody, Lease, UpstreamBody};
use crate::upstream::pool::AcquireError;
use crate::upstream::{PickCx, Tried, Upstream};
use crate::view::Fields;

/// The largest callout response body a plugin is handed.
const MAX_BODY: usize = 1 << 20;

/// The upstreams callouts may name: the gateway's current set, swapped on every apply, so a
/// filter kept across reloads never calls a stale upstream.
#[derive(Debug, Default)]
pub struct Callouts(ArcSwap<HashMap<Arc<str>, Arc<Upstream>>>);

impl Callouts {
    /// Publishes the upstreams of the snapshot now serving.
    pub fn set(&self, upstreams: &HashMap<Arc<str>, Arc<Upstream>>) {
        self.0.store(Arc::new(upstreams.clone()));
    }

    /// Sends `call`; any failure (unknown upstream, no endpoint, timeout, refused) is the
    /// empty answer the ABI gives a failed call.
    pub(crate) async fn send(&self, call: HttpCall, client: IpAddr) -> CallResponse {
        let upstream = self.0.load().get(call.upstream.as_str()).cloned();
        let Some(upstream) = upstream else {
            tracing::warn!(upstream = %call.upstream, "plugin callout to an upstream this config does not define");
            return CallResponse::default();
        };
        let timeout = call.timeout.max(std::time::Duration::from_millis(1));
        match tokio::time::timeout(timeout, send(&upstream, call, client)).await {
            Ok(Ok(r)) => r,
            Ok(Err(why)) => {
                tracing::warn!(upstream = %upstream.name(), %why, "plugin callout failed");
                CallResponse::default()
            }
            Err(_) => {
                tracing::warn!(upstream = %upstream.name(), ?timeout, "plugin callout timed out");
                CallResponse::default()
            }
        }
    }
}

async fn send(upstream: &Upstream, call: HttpCall, client: IpAddr) -> Result<CallResponse, String> {
    let empty = HeaderMap::new();
    let (_, ep) = upstream
        .pick(&PickCx { client_ip: client, headers: Fields::Map(&empty) }, Tried::default())
        .ok_or("no healthy endpoint")?;
    let mut lease = Lease::new(ep.clone());
    let conn = match ep.pool().acquire(|| Box::pin(ep.dial(upstream.connect_timeout(), upstream.tls()))).await {
        Ok(c) => c,
        Err(AcquireError::Timeout) => return Err("the endpoint's connection pool is full".into()),
        Err(AcquireError::Connect(e)) => return Err(e.to_string()),
    };
    lease.attach(conn);
    let req = request(call)?;
    let sent = match lease.conn_mut() {
        Some(c) => c.send(req).await.map_err(|e| e.into_error().to_string())?,
        None => return Err("no connection".into()),
    };
    let (parts, inner) = sent.into_parts();
    // Read through the lease: a body read to its end puts the connection back in the pool.
    let body = GatewayBody::Proxied { inner, lease: Some(lease) };
    let body = Limited::new(body, MAX_BODY).collect().await.map_err(|e| e.to_string())?.to_bytes();
    let mut headers = vec![(b":status".to_vec(), parts.status.as_str().as_bytes().to_vec())];
    headers.extend(parts.headers.iter().map(|(k, v)| (k.as_str().as_bytes().to_vec(), v.as_bytes().to_vec())));
    Ok(CallResponse { headers, body: body.to_vec() })
}

/// The request a callout's pseudo-headers and headers describe.
fn request(call: HttpCall) -> Result<Request<UpstreamBody>, String> {
    let mut b = Request::builder();
    for (k, v) in &call.headers {
        match k.as_slice() {
            b":method" => b = b.method(Method::from_bytes(v).map_err(|e| e.to_string())?),
            b":path" => b = b.uri(String::from_utf8_lossy(v).as_ref()),
            b":authority" => b = b.header(http::header::HOST, HeaderValue::from_bytes(v).map_err(|e| e.to_string())?),
            k if k.starts_with(b":") => {}
            k => {
                let (Ok(n), Ok(v)) = (HeaderName::from_bytes(k), HeaderValue::from_bytes(v)) else { continue };
                b = b.header(n, v);
            }
        }
    }
    let body =
        if call.body.is_empty() { UpstreamBody::Empty } else { UpstreamBody::Full(Some(Bytes::from(call.body))) };
    b.body(body).map_err(|e| e.to_string())
}
