//! Which tools a caller may see and call: allow and deny patterns over exposed names, and
//! rules that hold some tools back for some consumers or JWT claims. A tool the caller may
//! not use is absent from its lists and refused when called.

use std::sync::Arc;

use serde_json::{Map, Value};
use weir_config::mcp::{ToolPolicySpec, glob};

/// Who is asking, as the route's authentication plugins found out.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    /// The client's address.
    pub client: Option<std::net::IpAddr>,
    /// The consumer (key-auth, or a JWT's consumer claim).
    pub consumer: Option<Arc<str>>,
    /// The verified JWT claims.
    pub claims: Option<Arc<Map<String, Value>>>,
}

/// A route's tool policy.
#[derive(Debug)]
pub struct Policy(ToolPolicySpec);

impl Policy {
    /// The policy `spec` declares.
    pub fn new(spec: &ToolPolicySpec) -> Self {
        Self(spec.clone())
    }

    /// Whether `caller` may see and call the tool exposed as `tool`.
    pub fn permits(&self, tool: &str, caller: &Caller) -> bool {
        let p = &self.0;
        let listed = |pats: &[String]| pats.iter().any(|g| glob(g, tool));
        if (!p.allow.is_empty() && !listed(&p.allow)) || listed(&p.deny) {
            return false;
        }
        p.rules.iter().filter(|r| listed(&r.tools)).all(|r| {
            let consumer_ok = r.consumers.is_empty()
                || caller.consumer.as_deref().is_some_and(|c| r.consumers.iter().any(|x| x == c));
            let claims_ok = r.claims.iter().all(|(k, want)| match caller.claims.as_ref().and_then(|c| c.get(k)) {
                Some(Value::String(s)) => s == want,
                Some(Value::Array(a)) => a.iter().any(|v| v.as_str() == Some(want.as_str())),
                Some(Value::Bool(b)) => b.to_string() == *want,
                Some(Value::Number(n)) => n.to_string() == *want,
                _ => false,
            });
            consumer_ok && claims_ok
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn deny_wins_and_rules_need_their_claims() {
        let spec: ToolPolicySpec = serde_json::from_value(json!({
            "allow": ["math__*", "files__*"],
            "deny": ["files__delete"],
            "rules": [{"tools": ["math__admin*"], "claims": {"role": "admin"}}]
        }))
        .unwrap();
        let p = Policy::new(&spec);
        let anyone = Caller::default();
        let admin = Caller {
            claims: Some(Arc::new(json!({"role": ["user", "admin"]}).as_object().unwrap().clone())),
            ..Caller::default()
        };
        assert!(p.permits("math__add", &anyone));
        assert!(!p.permits("files__delete", &admin));
        assert!(!p.permits("other__x", &admin));
        assert!(!p.permits("math__admin_reset", &anyone));
        assert!(p.permits("math__admin_reset", &admin));
    }
}
