//! The `weir.v1.ConfigSync` service: one bidirectional stream per gateway.
//!
//! Owns: the stream protocol on the control-plane side. The first message must register
//! the gateway (a checked capability descriptor); it then gets a full snapshot, and after
//! that a delta for every new revision (only what changed since the last one it was sent).
//! ACKs, NACKs and heartbeats go to the [`crate::registry::Registry`].

use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures_util::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use weir_proto::v1::{self, config_request, config_response};

use crate::plane::ControlPlane;
use crate::registry::check_descriptor;
use crate::store::{Key, State, Stored};

/// The gRPC service.
#[derive(Debug, Clone)]
pub struct SyncService {
    plane: Arc<ControlPlane>,
    node: String,
    heartbeat_interval: Duration,
    /// When set, a stream must carry `authorization: Bearer TOKEN`.
    token: Option<Arc<str>>,
}

impl SyncService {
    /// A service for `plane`; `node` names this control plane in gateways' logs.
    pub fn new(plane: Arc<ControlPlane>, node: String, heartbeat_interval: Duration, token: Option<String>) -> Self {
        Self { plane, node, heartbeat_interval, token: token.map(Into::into) }
    }

    /// The tonic server for this service, with limits fit for large snapshots.
    pub fn into_server(self) -> v1::config_sync_server::ConfigSyncServer<Self> {
        v1::config_sync_server::ConfigSyncServer::new(self)
            .max_decoding_message_size(16 << 20)
            .max_encoding_message_size(usize::MAX)
    }
}

type Out = Result<v1::ConfigResponse, Status>;

/// A registration from its wire form (its name derived, zeros meaning the defaults).
fn registration(r: v1::EndpointRegistration) -> Result<weir_config::spec::RegistrationSpec, Status> {
    let address: std::net::IpAddr = r
        .address
        .parse()
        .map_err(|_| Status::invalid_argument(format!("address: {:?} is not an IP address", r.address)))?;
    let port = u16::try_from(r.port).map_err(|_| Status::invalid_argument("port: must be between 1 and 65535"))?;
    // Zero is proto3's "not set".
    let weight = (r.weight != 0).then_some(r.weight);
    let ttl = (r.ttl_ms != 0).then(|| weir_config::HumanDuration(std::time::Duration::from_millis(r.ttl_ms)));
    Ok(weir_config::spec::RegistrationSpec::of(r.upstream, address, port, weight, ttl))
}

/// A refused change as a gRPC status: invalid ones carry each error as `path: message`.
fn status(e: crate::plane::PlaneError) -> Status {
    use crate::plane::PlaneError;
    match e {
        PlaneError::Invalid(errs) => {
            let lines: Vec<String> = errs.iter().map(|e| format!("{}: {}", e.path, e.message)).collect();
            Status::invalid_argument(lines.join("; "))
        }
        PlaneError::BadRequest(m) => Status::invalid_argument(m),
        PlaneError::NotFound(m) => Status::not_found(m),
        PlaneError::Conflict(m) => Status::failed_precondition(m),
        PlaneError::Store(e) if e.is_conflict() => Status::aborted(e.to_string()),
        PlaneError::Store(e) if e.is_too_large() => Status::resource_exhausted(e.to_string()),
        PlaneError::Store(e) => Status::unavailable(e.to_string()),
    }
}

fn op_name(op: crate::store::Op) -> &'static str {
    match op {
        crate::store::Op::Created => "created",
        crate::store::Op::Configured => "configured",
        crate::store::Op::Deleted => "deleted",
        crate::store::Op::Unchanged => "unchanged",
    }
}

fn msg(m: config_response::Msg) -> Out {
    Ok(v1::ConfigResponse { msg: Some(m) })
}

fn resource(s: &Stored) -> v1::Resource {
    v1::Resource {
        kind: s.kind.to_string(),
        name: s.name.clone(),
        version: s.version,
        body: serde_json::to_vec(&s.body).unwrap_or_default(),
        order: s.order,
    }
}

fn snapshot(state: &State) -> config_response::Msg {
    config_response::Msg::Snapshot(v1::Snapshot {
        revision: state.revision,
        resources: state.ordered().into_iter().map(resource).collect(),
    })
}

fn delta(state: &State, base: u64) -> config_response::Msg {
    let (up, gone) = state.delta_since(base);
    config_response::Msg::Delta(v1::Delta {
        revision: state.revision,
        base_revision: base,
        upserted: up.into_iter().map(resource).collect(),
        removed: gone
            .into_iter()
            .map(|k: &Key| v1::ResourceKey { kind: k.kind.to_string(), name: k.name.clone() })
            .collect(),
    })
}

impl SyncService {
    /// With a token set, a call must carry `authorization: Bearer TOKEN`.
    fn authorize(&self, meta: &tonic::metadata::MetadataMap, peer: Option<std::net::SocketAddr>) -> Result<(), Status> {
        let Some(token) = &self.token else { return Ok(()) };
        let given = meta.get("authorization").and_then(|v| v.to_str().ok());
        let ok =
            given.and_then(|g| g.strip_prefix("Bearer ")).is_some_and(|g| crate::same(g.as_bytes(), token.as_bytes()));
        if ok {
            return Ok(());
        }
        tracing::warn!(?peer, "refused a call without the right token");
        Err(Status::unauthenticated("missing or wrong bearer token (weir gateway --token or WEIR_TOKEN)"))
    }
}

#[tonic::async_trait]
impl v1::config_sync_server::ConfigSync for SyncService {
    async fn get_module(&self, request: Request<v1::ModuleRequest>) -> Result<Response<v1::Module>, Status> {
        self.authorize(request.metadata(), request.remote_addr())?;
        let v1::ModuleRequest { sha256, gateway_id } = request.into_inner();
        match self.plane.module(sha256.clone()).await {
            Ok(Some(wasm)) => {
                tracing::info!(gateway = %gateway_id, module = %sha256, bytes = wasm.len(), "sent a plugin module");
                self.plane.registry.module_sent(&gateway_id);
                Ok(Response::new(v1::Module { sha256, wasm: wasm.to_vec() }))
            }
            Ok(None) => Err(Status::not_found(format!("no module with sha256 {sha256}"))),
            Err(e) => Err(Status::internal(e.to_string())),
        }
    }

    async fn register_endpoint(
        &self,
        request: Request<v1::EndpointRegistration>,
    ) -> Result<Response<v1::EndpointRegistered>, Status> {
        self.authorize(request.metadata(), request.remote_addr())?;
        let spec = registration(request.into_inner())?;
        let done = self.plane.register(spec).await.map_err(status)?;
        Ok(Response::new(v1::EndpointRegistered {
            name: done.name,
            result: op_name(done.result).into(),
            revision: done.revision,
            ttl_ms: done.ttl_ms,
        }))
    }

    async fn deregister_endpoint(
        &self,
        request: Request<v1::EndpointRegistration>,
    ) -> Result<Response<v1::EndpointRegistered>, Status> {
        self.authorize(request.metadata(), request.remote_addr())?;
        let spec = registration(request.into_inner())?;
        let key = Key::new(weir_config::resources::Kind::Registration, spec.name.clone());
        if !self.plane.read(|s| s.resources.contains_key(&key)) {
            return Err(Status::not_found(format!("no registration {}", spec.name)));
        }
        let applied =
            self.plane.apply(vec![(key, None)], format!("deregister {}", spec.name), None).await.map_err(status)?;
        Ok(Response::new(v1::EndpointRegistered {
            name: spec.name,
            result: "deleted".into(),
            revision: applied.revision,
            ttl_ms: 0,
        }))
    }

    type SyncConfigStream = Pin<Box<dyn Stream<Item = Out> + Send>>;

    async fn sync_config(
        &self,
        request: Request<Streaming<v1::ConfigRequest>>,
    ) -> Result<Response<Self::SyncConfigStream>, Status> {
        let peer = request.remote_addr();
        self.authorize(request.metadata(), peer)?;
        let mut inbound = request.into_inner();
        let first = inbound.message().await?;
        let Some(v1::ConfigRequest { msg: Some(config_request::Msg::Register(desc)) }) = first else {
            return Err(Status::invalid_argument("the first message on the stream must be Register"));
        };
        let (tx, rx) = mpsc::channel::<Out>(8);
        let errs = check_descriptor(&desc);
        if !errs.is_empty() {
            tracing::warn!(gateway = %desc.gateway_id, ?peer, errors = ?errs, "registration refused");
            let errors = errs.into_iter().map(|e| v1::ErrorDetail { path: e.path, message: e.message }).collect();
            let _ = tx.send(msg(config_response::Msg::Rejected(v1::Rejected { errors }))).await;
            return Ok(Response::new(Box::pin(ReceiverStream::new(rx))));
        }
        let id = desc.gateway_id.clone();
        tracing::info!(gateway = %id, ?peer, version = %desc.version, applied = desc.applied_revision, "gateway registered");
        let session = self.plane.registry.register(desc);
        let registered = v1::Registered {
            control_plane: self.node.clone(),
            heartbeat_interval_ms: self.heartbeat_interval.as_millis() as u64,
        };
        let plane = self.plane.clone();
        tokio::spawn(async move {
            let (mut revisions, mut rollouts) = (plane.subscribe(), plane.subscribe_rollouts());
            revisions.borrow_and_update();
            rollouts.borrow_and_update();
            let mut sent = 0;
            let first = match next_for(&plane, &id, None, false).await {
                Next::Send(m, rev) => {
                    sent = rev;
                    m
                }
                Next::Nothing => plane.read(|s| {
                    sent = s.revision;
                    snapshot(s)
                }),
                // Never the latest instead: the gateway keeps what it serves and comes back.
                Next::Unreadable => {
                    plane.registry.disconnected(&id, session);
                    return;
                }
            };
            let mut held = plane.held_at(&id).is_some();
            if tx.send(msg(config_response::Msg::Registered(registered))).await.is_err()
                || tx.send(msg(first)).await.is_err()
            {
                plane.registry.disconnected(&id, session);
                return;
            }
            loop {
                tokio::select! {
                    m = inbound.message() => match m {
                        Ok(Some(m)) => handle(&plane, &id, m),
                        Ok(None) => break,
                        Err(e) => {
                            tracing::info!(gateway = %id, error = %e, "gateway stream broke");
                            break;
                        }
                    },
                    changed = revisions.changed() => {
                        if changed.is_err() {
                            break;
                        }
                        if !send_next(&plane, &id, &tx, &mut sent, &mut held).await {
                            break;
                        }
                    }
                    changed = rollouts.changed() => {
                        if changed.is_err() || !send_next(&plane, &id, &tx, &mut sent, &mut held).await {
                            break;
                        }
                    }
                }
            }
            tracing::info!(gateway = %id, "gateway disconnected");
            plane.registry.disconnected(&id, session);
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// What a gateway's stream sends next.
enum Next {
    /// Nothing new for it.
    Nothing,
    /// This message, which brings it to this revision.
    Send(config_response::Msg, u64),
    /// The revision a rollout holds it at cannot be read now.
    Unreadable,
}

/// What gateway `id` should get next, having been sent `sent` (`None`: nothing yet), `held`
/// telling whether a rollout held it when that was sent. While a rollout holds it: the stable
/// revision, whole, once. Else the latest: whole when it was held (deletions from before this
/// control plane loaded its state have no tombstones), as a delta otherwise.
async fn next_for(plane: &Arc<ControlPlane>, id: &str, sent: Option<u64>, held: bool) -> Next {
    loop {
        if let Some(stable) = plane.held_at(id) {
            if sent == Some(stable) || (sent.is_none() && plane.read(|s| s.revision) == stable) {
                return Next::Nothing;
            }
            return match plane.state_at(stable).await {
                Ok(state) => Next::Send(snapshot(&state), stable),
                Err(e) => {
                    tracing::error!(gateway = %id, revision = stable, error = %e, "cannot read the revision a rollout holds this gateway at");
                    Next::Unreadable
                }
            };
        }
        let next = plane.read(|s| match sent {
            Some(sent) if s.revision <= sent => None,
            Some(sent) if !held => Some((delta(s, sent), s.revision)),
            _ => Some((snapshot(s), s.revision)),
        });
        // A rollout that started meanwhile holds it after all.
        if plane.held_at(id).is_some() {
            continue;
        }
        return next.map_or(Next::Nothing, |(m, rev)| Next::Send(m, rev));
    }
}

/// Sends gateway `id` what it should get next; false when its stream is gone.
async fn send_next(
    plane: &Arc<ControlPlane>,
    id: &str,
    tx: &mpsc::Sender<Out>,
    sent: &mut u64,
    held: &mut bool,
) -> bool {
    let Next::Send(m, rev) = next_for(plane, id, Some(*sent), *held).await else { return true };
    if tx.send(msg(m)).await.is_err() {
        return false;
    }
    *sent = rev;
    *held = plane.held_at(id).is_some();
    true
}

fn handle(plane: &ControlPlane, id: &str, m: v1::ConfigRequest) {
    match m.msg {
        Some(config_request::Msg::Ack(a)) => {
            tracing::debug!(gateway = %id, revision = a.revision, "ack");
            plane.registry.ack(id, a.revision);
        }
        Some(config_request::Msg::Nack(n)) => {
            tracing::warn!(gateway = %id, revision = n.revision, serving = n.applied_revision,
                errors = ?n.errors.iter().map(|e| format!("{}: {}", e.path, e.message)).collect::<Vec<_>>(),
                "gateway refused a revision (NACK)");
            plane.registry.nack(id, &n);
        }
        Some(config_request::Msg::Heartbeat(h)) => plane.registry.heartbeat(id, &h),
        Some(config_request::Msg::Register(_)) | None => {
            tracing::debug!(gateway = %id, "ignoring a repeated Register");
        }
    }
}
