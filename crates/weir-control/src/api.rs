//! The admin REST API (JSON over HTTP): resources, revisions, rollback, gateways.
//!
//! Owns: the routes, their request and response shapes, bearer-token checks and mapping
//! [`PlaneError`] to HTTP statuses (400 with every error and its path, 404, 500).
//! `/openapi.json` describes all of it (see [`crate::openapi`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::Digest;
use weir_config::resources::Kind;

use crate::plane::{Applied, ControlPlane, DryRun, PlaneError};
use crate::store::{Key, Stored};

#[derive(Clone, Debug)]
struct Ctx {
    plane: Arc<ControlPlane>,
    token: Option<Arc<str>>,
}

/// The API router. With a `token`, every call must carry `Authorization: Bearer TOKEN`.
pub fn router(plane: Arc<ControlPlane>, token: Option<String>) -> Router {
    let ctx = Ctx { plane, token: token.map(Into::into) };
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/openapi.json", get(|| async { Json(crate::openapi::document()) }))
        .route("/api/v1/revision", get(revision))
        .route("/api/v1/history", get(history))
        .route("/api/v1/apply", post(apply))
        .route("/api/v1/rollback", post(rollback))
        .route("/api/v1/gateways", get(gateways))
        .route("/api/v1/rollout", get(|State(ctx): State<Ctx>| async move { Json(ctx.plane.rollout()) }))
        .route(
            "/api/v1/rollout/promote",
            post(|State(ctx): State<Ctx>| async move { ctx.plane.promote().await.map(Json).map_err(ApiError) }),
        )
        .route(
            "/api/v1/rollout/abort",
            post(|State(ctx): State<Ctx>| async move { ctx.plane.abort().await.map(Json).map_err(ApiError) }),
        )
        .route("/api/v1/forecast", get(|State(ctx): State<Ctx>| async move { Json(ctx.plane.forecasts()) }))
        .route("/metrics", get(metrics))
        .route("/api/v1/gateways/ready", get(|State(ctx): State<Ctx>| async move { Json(ctx.plane.registry.ready()) }))
        .route(
            "/api/v1/discovery/prometheus",
            get(|State(ctx): State<Ctx>| async move { Json(ctx.plane.registry.prometheus_targets()) }),
        )
        .route("/api/v1/modules/{sha256}", get(get_module).put(put_module))
        .route("/api/v1/upstreams/{upstream}/registrations", post(register))
        .route("/api/v1/{kind}", get(list))
        .route("/api/v1/{kind}/{name}", get(get_one).put(put_one).delete(delete_one))
        .layer(middleware::from_fn_with_state(ctx.clone(), auth))
        // The dashboard's page holds no data (it asks the API, with the token, for everything).
        .route("/ui", get(dashboard))
        .route("/", get(|| async { axum::response::Redirect::temporary("/ui") }))
        // Whole configs are applied in one request; bounded all the same.
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(ctx)
}

/// The web dashboard: one page, embedded in the binary (no build step, nothing fetched from
/// elsewhere).
async fn dashboard() -> Response {
    const PAGE: &str = include_str!("dashboard/index.html");
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], PAGE).into_response()
}

/// The fleet's forecasts as Prometheus metrics (`weir_fleet_*`), for an HPA or KEDA.
async fn metrics(State(ctx): State<Ctx>) -> Response {
    let body = crate::forecast::prometheus(&ctx.plane.forecasts());
    ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

async fn auth(State(ctx): State<Ctx>, req: Request, next: Next) -> Response {
    if let Some(token) = &ctx.token {
        let given = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|g| crate::same(g.as_bytes(), token.as_bytes())) {
            let body = json!({"error": "missing or wrong bearer token: send `Authorization: Bearer <token>` (weir ctl reads WEIR_TOKEN)"});
            return (StatusCode::UNAUTHORIZED, [(header::WWW_AUTHENTICATE, "Bearer")], Json(body)).into_response();
        }
    }
    next.run(req).await
}

/// An error as the API returns it.
#[derive(Debug)]
struct ApiError(PlaneError);

impl From<PlaneError> for ApiError {
    fn from(e: PlaneError) -> Self {
        Self(e)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, body) = match &self.0 {
            PlaneError::Invalid(errs) => (
                StatusCode::BAD_REQUEST,
                json!({
                    "error": format!("invalid config: {} error(s); nothing was stored", errs.len()),
                    "errors": errs.iter().map(|e| json!({"path": e.path, "message": e.message})).collect::<Vec<_>>(),
                }),
            ),
            PlaneError::BadRequest(m) => (StatusCode::BAD_REQUEST, json!({"error": m})),
            PlaneError::NotFound(m) => (StatusCode::NOT_FOUND, json!({"error": m})),
            PlaneError::Conflict(m) => (StatusCode::CONFLICT, json!({"error": m})),
            PlaneError::Store(e) if e.is_conflict() => (StatusCode::CONFLICT, json!({"error": e.to_string()})),
            PlaneError::Store(e) if e.is_too_large() => {
                (StatusCode::PAYLOAD_TOO_LARGE, json!({"error": e.to_string()}))
            }
            PlaneError::Store(e) if e.is_unavailable() => {
                tracing::warn!(error = %e, "a change could not be stored");
                let mut rsp = (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"error": e.to_string()}))).into_response();
                rsp.headers_mut().insert(axum::http::header::RETRY_AFTER, axum::http::HeaderValue::from_static("1"));
                return rsp;
            }
            PlaneError::Store(e) => {
                tracing::error!(error = %e, "store failure");
                (StatusCode::INTERNAL_SERVER_ERROR, json!({"error": e.to_string()}))
            }
        };
        (status, Json(body)).into_response()
    }
}

/// The largest request body (an apply of every resource at once): 64 MiB.
const MAX_BODY: usize = 64 << 20;

/// The longest `?wait=` honoured.
const MAX_WAIT: Duration = Duration::from_secs(60);

#[derive(Debug, Default, Deserialize)]
struct Opts {
    #[serde(default)]
    dry_run: bool,
    /// Wait up to this long (`2s`, `500ms`; at most 60 s) for every live gateway to apply the
    /// revision.
    #[serde(default)]
    wait: Option<String>,
}

impl Opts {
    fn wait(&self) -> Result<Option<Duration>, ApiError> {
        self.wait
            .as_deref()
            .map(|w| {
                humantime::parse_duration(w)
                    .map(|d| d.min(MAX_WAIT))
                    .map_err(|e| ApiError(PlaneError::BadRequest(format!("wait={w:?}: {e} (try wait=5s)"))))
            })
            .transpose()
    }
}

fn kind(s: &str) -> Result<Kind, ApiError> {
    s.parse().map_err(|e: weir_config::resources::UnknownKind| ApiError(PlaneError::NotFound(e.to_string())))
}

fn view(s: &Stored) -> Value {
    json!({"kind": s.kind.as_str(), "name": s.name, "version": s.version, "body": redact(s.kind, &s.body)})
}

/// Inline private keys (a `Listener`'s `tls.certificates[].key` holding PEM text) never leave
/// the control plane: answers show a fingerprint instead, which still tells a diff whether
/// the key changed.
fn redact(kind: Kind, body: &Value) -> Value {
    let mut body = body.clone();
    if kind != Kind::Listener {
        return body;
    }
    if let Some(certs) = body.pointer_mut("/tls/certificates").and_then(Value::as_array_mut) {
        for c in certs {
            if let Some(key) = c.get_mut("key")
                && let Some(pem) = key.as_str().filter(|k| weir_config::spec::CertificateSpec::is_inline(k))
            {
                let digest = sha2::Sha256::digest(pem.as_bytes());
                let hex: String = digest.iter().take(8).map(|b| format!("{b:02x}")).collect();
                *key = Value::String(format!("(inline private key, sha256 {hex}…)"));
            }
        }
    }
    body
}

async fn finish(ctx: &Ctx, mut applied: Applied, opts: &Opts) -> Result<Response, ApiError> {
    for r in &mut applied.results {
        if let Ok(k) = r.kind.parse::<Kind>() {
            for side in [&mut r.before, &mut r.after].into_iter().flatten() {
                *side = redact(k, side);
            }
        }
    }
    if let Some(within) = opts.wait()?
        && applied.changed
    {
        applied.pending_gateways = Some(ctx.plane.registry.wait_applied(applied.revision, within).await);
    }
    let status = if applied.results.iter().any(|r| r.result == crate::store::Op::Created) && !applied.dry_run {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(applied)).into_response())
}

async fn revision(State(ctx): State<Ctx>) -> Json<Value> {
    Json(json!({"revision": ctx.plane.read(|s| s.revision)}))
}

#[derive(Debug, Deserialize)]
struct HistoryOpts {
    #[serde(default = "default_limit")]
    limit: usize,
}

fn default_limit() -> usize {
    50
}

async fn history(State(ctx): State<Ctx>, Query(q): Query<HistoryOpts>) -> Result<Json<Value>, ApiError> {
    let revs = ctx.plane.history(q.limit.min(1000)).await.map_err(PlaneError::from)?;
    let out: Vec<Value> = revs
        .iter()
        .map(|r| {
            json!({
                "revision": r.revision,
                "time_ms": r.time_ms,
                "cause": r.cause,
                "changes": r.changes.iter().map(|c| json!({"kind": c.kind.as_str(), "name": c.name, "result": c.op})).collect::<Vec<_>>(),
            })
        })
        .collect();
    Ok(Json(Value::Array(out)))
}

#[derive(Debug, Deserialize)]
struct ApplyBody {
    resources: Vec<ApplyItem>,
    /// Delete every stored resource that is not in `resources`.
    #[serde(default)]
    prune: bool,
    /// With `dry_run`: modules (sha256) not uploaded yet that `Package` resources may name.
    #[serde(default)]
    pending_modules: Vec<String>,
    /// Roll the revision out in stages: to a canary first, for a bake time.
    #[serde(default)]
    rollout: Option<crate::rollout::RolloutSpec>,
}

#[derive(Debug, Deserialize)]
struct ApplyItem {
    kind: String,
    name: String,
    body: Value,
}

async fn apply(
    State(ctx): State<Ctx>,
    Query(opts): Query<Opts>,
    Json(b): Json<ApplyBody>,
) -> Result<Response, ApiError> {
    let mut edits: Vec<(Key, Option<Value>)> = Vec::with_capacity(b.resources.len());
    for it in b.resources {
        edits.push((Key::new(kind(&it.kind)?, it.name), Some(it.body)));
    }
    if b.prune {
        let keep: std::collections::HashSet<Key> = edits.iter().map(|(k, _)| k.clone()).collect();
        // Registrations are the services' own: a pruned file never lists them.
        let gone: Vec<Key> = ctx.plane.read(|s| {
            s.resources.keys().filter(|k| k.kind != Kind::Registration && !keep.contains(*k)).cloned().collect()
        });
        edits.extend(gone.into_iter().map(|k| (k, None)));
    }
    if !opts.dry_run && !b.pending_modules.is_empty() {
        return Err(ApiError(PlaneError::BadRequest(
            "pending_modules is for dry runs: upload the modules first (PUT /api/v1/modules/SHA256)".into(),
        )));
    }
    let dry = opts.dry_run.then_some(DryRun { pending_modules: b.pending_modules });
    let applied = match b.rollout {
        Some(spec) if dry.is_none() => ctx.plane.apply_staged(edits, spec).await?,
        _ => {
            if dry.is_none() {
                ctx.plane.check_not_baking()?;
            }
            ctx.plane.apply(edits, "apply".into(), dry).await?
        }
    };
    finish(&ctx, applied, &opts).await
}

/// A registration as services send it; its name is derived.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterBody {
    address: std::net::IpAddr,
    port: u16,
    #[serde(default)]
    weight: Option<u32>,
    #[serde(default)]
    ttl: Option<weir_config::HumanDuration>,
}

/// Registers an endpoint of `upstream`, or renews it: call again within its ttl (default 10s)
/// to keep it. `201` when it was created, `200` otherwise.
async fn register(
    State(ctx): State<Ctx>,
    Path(upstream): Path<String>,
    Json(b): Json<RegisterBody>,
) -> Result<Response, ApiError> {
    let r = weir_config::spec::RegistrationSpec::of(upstream, b.address, b.port, b.weight, b.ttl);
    let done = ctx.plane.register(r).await?;
    let status = if done.result == crate::store::Op::Created { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(done)).into_response())
}

#[derive(Debug, Deserialize)]
struct RollbackBody {
    to: u64,
}

async fn rollback(
    State(ctx): State<Ctx>,
    Query(opts): Query<Opts>,
    Json(b): Json<RollbackBody>,
) -> Result<Response, ApiError> {
    if !opts.dry_run {
        ctx.plane.check_not_baking()?;
    }
    let applied = ctx.plane.rollback(b.to, opts.dry_run).await?;
    finish(&ctx, applied, &opts).await
}

async fn gateways(State(ctx): State<Ctx>) -> Json<Value> {
    Json(serde_json::to_value(ctx.plane.registry.list()).unwrap_or_default())
}

/// Uploads a plugin module under its sha256 (the path must be the body's hash). Storing the
/// same module again stores nothing (200 instead of 201).
async fn put_module(
    State(ctx): State<Ctx>,
    Path(sha256): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let actual = crate::store::sha256_hex(&body);
    if actual != sha256 {
        return Err(ApiError(PlaneError::BadRequest(format!(
            "the body's sha256 is {actual}, not {sha256}: upload the module under its own hash"
        ))));
    }
    let size = body.len();
    let (sha256, new) = ctx.plane.put_module(body.to_vec()).await.map_err(PlaneError::from)?;
    let status = if new { StatusCode::CREATED } else { StatusCode::OK };
    Ok((status, Json(json!({"sha256": sha256, "size": size, "stored": new}))).into_response())
}

/// A stored module's bytes (`application/wasm`); 404 when none has this sha256.
async fn get_module(State(ctx): State<Ctx>, Path(sha256): Path<String>) -> Result<Response, ApiError> {
    match ctx.plane.module(sha256.clone()).await.map_err(PlaneError::from)? {
        Some(bytes) => {
            Ok(([(header::CONTENT_TYPE, "application/wasm")], axum::body::Bytes::from(bytes.to_vec())).into_response())
        }
        None => Err(ApiError(PlaneError::NotFound(format!("no module with sha256 {sha256}")))),
    }
}

async fn list(State(ctx): State<Ctx>, Path(k): Path<String>) -> Result<Json<Value>, ApiError> {
    let k = kind(&k)?;
    Ok(Json(ctx.plane.read(|s| Value::Array(s.ordered().into_iter().filter(|r| r.kind == k).map(view).collect()))))
}

async fn get_one(State(ctx): State<Ctx>, Path((k, name)): Path<(String, String)>) -> Result<Json<Value>, ApiError> {
    let k = kind(&k)?;
    ctx.plane
        .read(|s| s.resources.get(&Key::new(k, name.clone())).map(view))
        .map(Json)
        .ok_or_else(|| ApiError(PlaneError::NotFound(format!("no {k} named {name:?}"))))
}

async fn put_one(
    State(ctx): State<Ctx>,
    Path((k, name)): Path<(String, String)>,
    Query(opts): Query<Opts>,
    Json(mut body): Json<Value>,
) -> Result<Response, ApiError> {
    let k = kind(&k)?;
    if !opts.dry_run {
        ctx.plane.check_not_baking()?;
    }
    if let Some(obj) = body.as_object_mut() {
        obj.entry("name").or_insert_with(|| Value::String(name.clone()));
    }
    let applied = ctx
        .plane
        .apply(vec![(Key::new(k, name), Some(body))], "put".into(), opts.dry_run.then(DryRun::default))
        .await?;
    finish(&ctx, applied, &opts).await
}

async fn delete_one(
    State(ctx): State<Ctx>,
    Path((k, name)): Path<(String, String)>,
    Query(opts): Query<Opts>,
) -> Result<Response, ApiError> {
    let k = kind(&k)?;
    if !ctx.plane.read(|s| s.resources.contains_key(&Key::new(k, name.clone()))) {
        return Err(ApiError(PlaneError::NotFound(format!("no {k} named {name:?}"))));
    }
    if !opts.dry_run {
        ctx.plane.check_not_baking()?;
    }
    let applied =
        ctx.plane.apply(vec![(Key::new(k, name), None)], "delete".into(), opts.dry_run.then(DryRun::default)).await?;
    finish(&ctx, applied, &opts).await
}
