//! An MCP route as an OAuth 2.1 resource server, as the MCP authorization spec asks: a request
//! without a token gets 401 with `WWW-Authenticate` naming the protected resource metadata
//! (RFC 9728), which Weir serves; a token must be for this resource (its audience) and carry
//! the route's scopes, else 401 `invalid_token` or 403 `insufficient_scope`. The verified
//! token stays at Weir: servers get their own credentials.

use std::sync::Arc;

use http::{HeaderMap, HeaderValue, Response, StatusCode, header};
use serde_json::{Map, Value, json};
use weir_config::mcp::McpAuthSpec;

use crate::body::GatewayBody;
use crate::filter::BuildError;
use crate::filter::jwt::JwtAuth;

/// Checks bearer tokens for one MCP route.
pub struct Guard {
    jwt: JwtAuth,
    scopes: Vec<String>,
    metadata: Vec<u8>,
    metadata_url: String,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard").field("metadata_url", &self.metadata_url).finish_non_exhaustive()
    }
}

impl Guard {
    /// The guard `spec` declares; fails when its keys cannot be used.
    pub fn new(spec: &McpAuthSpec) -> Result<Self, BuildError> {
        let mut verify = spec.verify.clone();
        verify.audiences = vec![spec.resource.clone()];
        let metadata = json!({
            "resource": spec.resource,
            "authorization_servers": spec.authorization_servers,
            "scopes_supported": spec.scopes,
            "bearer_methods_supported": ["header"],
        });
        Ok(Self {
            jwt: JwtAuth::new(&verify)?,
            scopes: spec.scopes.clone(),
            metadata: serde_json::to_vec(&metadata).unwrap_or_default(),
            metadata_url: spec.metadata_url(),
        })
    }

    /// The protected resource metadata document.
    pub fn metadata(&self) -> Response<GatewayBody> {
        Response::builder()
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::CACHE_CONTROL, "max-age=300")
            .body(GatewayBody::full(self.metadata.clone()))
            .unwrap_or_default()
    }

    /// The verified claims of the request's bearer token, or the answer that refuses it.
    pub async fn check(&self, headers: &HeaderMap) -> Result<Arc<Map<String, Value>>, Response<GatewayBody>> {
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")))
            .map(str::trim);
        let Some(token) = token else {
            return Err(self.refuse(StatusCode::UNAUTHORIZED, None, "a bearer token is required"));
        };
        let claims = match self.jwt.claims_of(token).await {
            Ok(c) => c,
            Err(why) => return Err(self.refuse(StatusCode::UNAUTHORIZED, Some("invalid_token"), &why)),
        };
        let granted = granted(&claims);
        if let Some(missing) = self.scopes.iter().find(|s| !granted.contains(&s.as_str())) {
            let why = format!("the token lacks scope {missing:?}");
            return Err(self.refuse(StatusCode::FORBIDDEN, Some("insufficient_scope"), &why));
        }
        Ok(claims)
    }

    fn refuse(&self, status: StatusCode, error: Option<&str>, why: &str) -> Response<GatewayBody> {
        let mut challenge = format!("Bearer resource_metadata=\"{}\"", self.metadata_url);
        if let Some(e) = error {
            let desc: String = why.chars().filter(|c| *c != '"' && *c != '\\' && !c.is_control()).collect();
            challenge.push_str(&format!(", error=\"{e}\", error_description=\"{desc}\""));
        }
        if !self.scopes.is_empty() {
            challenge.push_str(&format!(", scope=\"{}\"", self.scopes.join(" ")));
        }
        let body = json!({"error": error.unwrap_or("unauthenticated"), "message": why});
        let mut rsp = Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(GatewayBody::full(serde_json::to_vec(&body).unwrap_or_default()))
            .unwrap_or_default();
        if let Ok(v) = HeaderValue::try_from(challenge) {
            rsp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        rsp
    }
}

/// The scopes a token grants: `scope` (space-separated) or `scp` (a list).
fn granted(claims: &Map<String, Value>) -> Vec<&str> {
    let mut out: Vec<&str> =
        claims.get("scope").and_then(Value::as_str).map(|s| s.split(' ').collect()).unwrap_or_default();
    if let Some(Value::Array(a)) = claims.get("scp") {
        out.extend(a.iter().filter_map(Value::as_str));
    }
    out
}
