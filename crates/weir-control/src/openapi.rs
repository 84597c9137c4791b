//! `/openapi.json`: the admin API described as OpenAPI 3.0.
//!
//! Written out here rather than derived (utoipa and friends) because the resource bodies
//! already have JSON Schemas from `schemars` in `weir-config`; this module only arranges the
//! paths around them, so the schema a gateway validates with is the one the API documents.

use serde_json::{Value, json};
use weir_config::package::PackageSpec;
use weir_config::plugins::{Consumer, PluginSpec};
use weir_config::spec::{ListenerSpec, RouteSpec, UpstreamSpec};

fn op(summary: &str, params: &[&str], body: Option<Value>, ok: &str) -> Value {
    let mut o = json!({
        "summary": summary,
        "parameters": params.iter().map(|p| param(p)).collect::<Vec<_>>(),
        "responses": {
            "200": {"description": ok},
            "400": {"description": "invalid: every error with its path; nothing stored", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}},
            "401": {"description": "missing or wrong bearer token"},
        },
    });
    if let Some(b) = body {
        o["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": b}}});
    }
    o
}

fn param(name: &str) -> Value {
    match name {
        "kind" => json!({"name": "kind", "in": "path", "required": true,
            "schema": {"type": "string", "enum": ["listeners", "upstreams", "routes", "plugins", "consumers", "packages"]}}),
        "name" => json!({"name": "name", "in": "path", "required": true, "schema": {"type": "string"}}),
        "sha256" => json!({"name": "sha256", "in": "path", "required": true,
            "schema": {"type": "string", "pattern": "^[0-9a-f]{64}$"}}),
        "dry_run" => json!({"name": "dry_run", "in": "query", "schema": {"type": "boolean"},
            "description": "validate and report what would change; store nothing"}),
        "wait" => json!({"name": "wait", "in": "query", "schema": {"type": "string", "example": "5s"},
            "description": "wait up to this long for every live gateway to apply (or NACK) the new revision"}),
        "limit" => json!({"name": "limit", "in": "query", "schema": {"type": "integer", "default": 50}}),
        _ => json!({"name": name, "in": "query", "schema": {"type": "string"}}),
    }
}

/// The OpenAPI document.
pub fn document() -> Value {
    let mut generator = schemars::generate::SchemaSettings::openapi3().into_generator();
    let bodies = [
        ("Listener", generator.subschema_for::<ListenerSpec>()),
        ("Upstream", generator.subschema_for::<UpstreamSpec>()),
        ("Route", generator.subschema_for::<RouteSpec>()),
        ("Plugin", generator.subschema_for::<PluginSpec>()),
        ("Consumer", generator.subschema_for::<Consumer>()),
        ("Package", generator.subschema_for::<PackageSpec>()),
    ];
    let mut schemas = generator.take_definitions(true);
    // A Listener resource may leave out its address: gateways listen where `--listen` says.
    if let Some(required) =
        schemas.get_mut("ListenerSpec").and_then(|l| l.get_mut("required")).and_then(Value::as_array_mut)
    {
        required.retain(|f| f != "address");
    }
    let any_body: Vec<Value> = bodies.iter().map(|(_, s)| s.clone().to_value()).collect();
    schemas.insert("ResourceBody".into(), json!({"oneOf": any_body}));
    schemas.insert("Error".into(), json!({"type": "object", "properties": {
        "error": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {"path": {"type": "string"}, "message": {"type": "string"}}}},
    }}));
    schemas.insert("ApplyRequest".into(), json!({"type": "object", "required": ["resources"], "properties": {
        "resources": {"type": "array", "items": {"type": "object", "required": ["kind", "name", "body"], "properties": {
            "kind": {"type": "string", "enum": ["Listener", "Upstream", "Route", "Plugin", "Consumer", "Package"]},
            "name": {"type": "string"},
            "body": {"$ref": "#/components/schemas/ResourceBody"},
        }}},
        "prune": {"type": "boolean", "description": "delete stored resources that are not listed"},
    }}));
    let body_ref = json!({"$ref": "#/components/schemas/ResourceBody"});
    json!({
        "openapi": "3.0.3",
        "info": {"title": "Weir control plane", "version": env!("CARGO_PKG_VERSION"),
            "description": "Resources are validated with the same code the gateways run. Every change makes a new revision; gateways receive it over gRPC (weir.v1.ConfigSync) and ACK or NACK it."},
        "components": {"schemas": schemas, "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
        "security": [{"bearer": []}],
        "paths": {
            "/api/v1/{kind}": {"get": op("list resources of a kind", &["kind"], None, "the resources")},
            "/api/v1/{kind}/{name}": {
                "get": op("one resource", &["kind", "name"], None, "the resource"),
                "put": op("create or replace a resource", &["kind", "name", "dry_run", "wait"], Some(body_ref), "created, configured or unchanged"),
                "delete": op("delete a resource", &["kind", "name", "dry_run", "wait"], None, "deleted"),
            },
            "/api/v1/apply": {"post": op("apply many resources as one revision", &["dry_run", "wait"],
                Some(json!({"$ref": "#/components/schemas/ApplyRequest"})), "per resource: created, configured, unchanged or deleted")},
            "/api/v1/revision": {"get": op("the current revision", &[], None, "{revision}")},
            "/api/v1/history": {"get": op("revisions, newest first", &["limit"], None, "revisions with their changes")},
            "/api/v1/rollback": {"post": op("make the resources what they were at an earlier revision (as a new revision)", &["dry_run", "wait"],
                Some(json!({"type": "object", "required": ["to"], "properties": {"to": {"type": "integer"}}})), "what changed")},
            "/api/v1/modules/{sha256}": {
                "get": op("a plugin module's bytes (application/wasm); 404 if none has this hash", &["sha256"], None, "the module"),
                "put": {
                    "summary": "upload a plugin module under its sha256 (stored once; a Package resource then names it)",
                    "parameters": [param("sha256")],
                    "requestBody": {"required": true, "content": {"application/wasm": {"schema": {"type": "string", "format": "binary"}}}},
                    "responses": {
                        "201": {"description": "stored"},
                        "200": {"description": "already stored; nothing changed"},
                        "400": {"description": "the body's sha256 is not the one in the path"},
                    },
                },
            },
            "/api/v1/gateways": {"get": op("registered gateways: status, applied revision, last heartbeat, last NACK, runtime report", &[], None, "the gateways")},
            "/api/v1/rollout": {"get": op("the rollout in progress or the last one: revision, phase (baking, promoted, rolled_back, aborted), canary, the stable revision the others are held at, why it ended", &[], None, "the rollout, or null")},
            "/api/v1/rollout/promote": {"post": op("give the baking revision to every gateway now", &[], None, "the rollout")},
            "/api/v1/rollout/abort": {"post": op("put the previous resources back now, as a new revision", &[], None, "the rollout")},
            "/api/v1/forecast": {"get": op("per gateway group: the last step's request rate, the forecast peak within the horizon, the desired replicas, the one-step forecast error", &[], None, "the forecasts")},
            "/metrics": {"get": op("the forecasts as Prometheus metrics (weir_fleet_desired_replicas, weir_fleet_forecast_requests_per_second, …), for an HPA or KEDA", &[], None, "Prometheus text")},
            "/api/v1/upstreams/{upstream}/registrations": {"post": op("register an endpoint of an upstream that takes registrations, or renew it: {address, port, weight?, ttl? (10s)}; dropped unless renewed within its ttl", &[], None, "the registration: name, result, revision, ttl_ms")},
            "/api/v1/gateways/ready": {"get": op("the gateways an outer load balancer may send traffic to (up, connected, serving a revision), with their listeners by name", &[], None, "the ready gateways")},
            "/api/v1/discovery/prometheus": {"get": op("Prometheus HTTP service discovery: a target group per gateway that is up, its admin address as the target, labelled __meta_weir_*", &[], None, "target groups")},
        },
    })
}
