#![allow(clippy::needless_pass_by_value)] // test helpers take owned JSON for brevity
//! `jwt-auth` with tokens signed by an independent library (the jsonwebtoken crate):
//! every algorithm family, claim checks, token sources, claims forwarded, JWKS with refetch on
//! an unknown kid (rate-limited) and the last good key set kept when the IdP is down.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::*;
use hyper::body::Incoming;
use hyper::{Request, Response};
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use rcgen::KeyPair;

fn now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

fn token(alg: Algorithm, kid: Option<&str>, key: &EncodingKey, claims: serde_json::Value) -> String {
    let mut h = Header::new(alg);
    h.kid = kid.map(str::to_owned);
    encode(&h, &claims, key).unwrap()
}

fn claims(sub: &str) -> serde_json::Value {
    serde_json::json!({ "sub": sub, "iss": "https://idp.test", "aud": "orders", "exp": now() + 600, "role": "admin" })
}

async fn echo() -> Upstream {
    upstream_fn(|req: Request<Incoming>| async move {
        let pick = |n: &str| req.headers().get(n).map(|v| v.to_str().unwrap_or("").to_owned()).unwrap_or_default();
        Response::new(full(format!("{}|{}|{}", pick("x-user-id"), pick("x-role"), pick("authorization").is_empty())))
    })
    .await
}

fn gateway(port: u16, jwt_config: &str) -> Weir {
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: public, address: 127.0.0.1:0 }}\nroutes:\n  - name: api\n    upstream: app\n    plugins:\n      - name: jwt-auth\n        config:\n{jwt_config}\nupstreams:\n{}",
        upstream_yaml("app", "round_robin", &[(port, 1)], "")
    );
    Weir::start(&yaml)
}

async fn call(weir: &Weir, path: &str, headers: &[(&str, &str)]) -> (u16, String, Option<String>) {
    let rsp = request(weir.addr, "GET", path, headers).await;
    let status = rsp.status().as_u16();
    let www = rsp.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned());
    let body = http_body_util::BodyExt::collect(rsp.into_body()).await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), www)
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[tokio::test]
async fn every_algorithm_family_verifies_and_claims_are_forwarded() {
    let up = echo().await;
    let dir = tempfile::tempdir().unwrap();
    let rsa = KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let ec = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let ed = KeyPair::generate_for(&rcgen::PKCS_ED25519).unwrap();
    let rsa_pub = dir.path().join("rsa.pem");
    std::fs::write(&rsa_pub, rsa.public_key_pem()).unwrap();
    let secret = "a-shared-secret-of-32-bytes-long";
    let cfg = format!(
        "          keys:\n            - {{ alg: HS256, secret: {secret} }}\n            - {{ alg: HS512, secret: {secret} }}\n            - {{ alg: RS256, pem_file: \"{}\", kid: rsa1 }}\n            - {{ alg: PS256, pem_file: \"{}\", kid: rsa1 }}\n            - {{ alg: ES256, pem: {:?} }}\n            - {{ alg: EdDSA, pem: {:?} }}\n          issuer: https://idp.test\n          audiences: [orders]\n          forward_claims: {{ sub: x-user-id, role: x-role }}",
        rsa_pub.display(),
        rsa_pub.display(),
        ec.public_key_pem(),
        ed.public_key_pem()
    );
    let weir = gateway(up.port(), &cfg);
    let hs = EncodingKey::from_secret(secret.as_bytes());
    let rs = EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap();
    let es = EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap();
    let eddsa = EncodingKey::from_ed_pem(ed.serialize_pem().as_bytes()).unwrap();
    for (alg, kid, key) in [
        (Algorithm::HS256, None, &hs),
        (Algorithm::HS512, None, &hs),
        (Algorithm::RS256, Some("rsa1"), &rs),
        (Algorithm::PS256, Some("rsa1"), &rs),
        (Algorithm::ES256, None, &es),
        (Algorithm::EdDSA, None, &eddsa),
    ] {
        let t = token(alg, kid, key, claims("alice"));
        let (s, body, _) = call(&weir, "/", &[("authorization", &bearer(&t))]).await;
        assert_eq!((s, body.as_str()), (200, "alice|admin|false"), "{alg:?}");
    }
    // Signed by a key Weir does not know.
    let other = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let forged = token(
        Algorithm::ES256,
        None,
        &EncodingKey::from_ec_pem(other.serialize_pem().as_bytes()).unwrap(),
        claims("mallory"),
    );
    assert_eq!(call(&weir, "/", &[("authorization", &bearer(&forged))]).await.0, 401);
}

#[tokio::test]
async fn claim_checks_and_token_sources() {
    let up = echo().await;
    let secret = "a-shared-secret-of-32-bytes-long";
    let cfg = format!(
        "          keys: [{{ alg: HS256, secret: {secret} }}]\n          issuer: https://idp.test\n          audiences: [orders]\n          required_claims: [role]\n          leeway: 5s\n          token_from: [{{ bearer: {{}} }}, {{ query: access_token }}, {{ cookie: jwt }}, {{ header: x-token }}]"
    );
    let weir = gateway(up.port(), &cfg);
    let key = EncodingKey::from_secret(secret.as_bytes());
    let good = token(Algorithm::HS256, None, &key, claims("bob"));
    let (s, _, www) = call(&weir, "/", &[]).await;
    assert_eq!(s, 401);
    assert!(www.unwrap().starts_with("Bearer realm=\"weir\""));
    for (name, mutate) in [
        ("expired", serde_json::json!({ "exp": now() - 60 })),
        ("not yet valid", serde_json::json!({ "nbf": now() + 120 })),
        ("wrong issuer", serde_json::json!({ "iss": "https://evil.test" })),
        ("wrong audience", serde_json::json!({ "aud": "billing" })),
        ("missing role", serde_json::json!({ "role": null })),
    ] {
        let mut c = claims("bob");
        for (k, v) in mutate.as_object().unwrap() {
            if v.is_null() {
                c.as_object_mut().unwrap().remove(k);
            } else {
                c[k] = v.clone();
            }
        }
        let t = token(Algorithm::HS256, None, &key, c);
        let (s, body, www) = call(&weir, "/", &[("authorization", &bearer(&t))]).await;
        assert_eq!(s, 401, "{name}: {body}");
        assert!(www.unwrap().contains("invalid_token"), "{name}");
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["reason"], "unauthenticated", "{name}");
    }
    assert_eq!(call(&weir, &format!("/?access_token={good}"), &[]).await.0, 200);
    assert_eq!(call(&weir, "/", &[("cookie", &format!("a=1; jwt={good}"))]).await.0, 200);
    assert_eq!(call(&weir, "/", &[("x-token", &good)]).await.0, 200);
    // Within the leeway an expired token still passes.
    let mut c = claims("bob");
    c["exp"] = serde_json::json!(now() - 2);
    assert_eq!(call(&weir, "/", &[("authorization", &bearer(&token(Algorithm::HS256, None, &key, c)))]).await.0, 200);
}

#[tokio::test]
async fn jwks_refetches_on_unknown_kid_rate_limited_and_keeps_last_good_set() {
    let up = echo().await;
    let k1 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let k2 = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let enc1 = EncodingKey::from_ec_pem(k1.serialize_pem().as_bytes()).unwrap();
    let enc2 = EncodingKey::from_ec_pem(k2.serialize_pem().as_bytes()).unwrap();
    let jwk = |enc: &EncodingKey, kid: &str| {
        let mut j = jsonwebtoken::jwk::Jwk::from_encoding_key(enc, Algorithm::ES256).unwrap();
        j.common.key_id = Some(kid.into());
        j
    };
    let served = Arc::new(Mutex::new(
        serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk(&enc1, "k1")] }).unwrap(),
    ));
    let fetches = Arc::new(AtomicUsize::new(0));
    let down = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let idp = {
        let (served, fetches, down) = (served.clone(), fetches.clone(), down.clone());
        upstream_fn(move |_| {
            let (served, fetches, down) = (served.clone(), fetches.clone(), down.clone());
            async move {
                fetches.fetch_add(1, SeqCst);
                if down.load(SeqCst) {
                    return Response::builder().status(503).body(full("down")).unwrap();
                }
                Response::new(full(served.lock().unwrap().clone()))
            }
        })
        .await
    };
    let cfg = format!(
        "          jwks_url: http://{}/.well-known/jwks.json\n          jwks_refresh: 1h\n          jwks_min_refetch: 3s",
        idp.addr
    );
    let weir = gateway(up.port(), &cfg);
    let t1 = token(Algorithm::ES256, Some("k1"), &enc1, serde_json::json!({ "sub": "carol", "exp": now() + 600 }));
    // The first fetch runs at start; allow it a moment, then k1 verifies.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
    while call(&weir, "/", &[("authorization", &bearer(&t1))]).await.0 != 200 {
        assert!(tokio::time::Instant::now() < deadline, "k1 never accepted");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    // Rotation: the IdP now serves k2 only. A k2 token triggers one refetch and passes (once
    // jwks_min_refetch has passed since any refetch the polling above caused). 3 s leaves the
    // k3 calls below ample time to run inside the window on a loaded machine.
    tokio::time::sleep(std::time::Duration::from_millis(3200)).await;
    *served.lock().unwrap() =
        serde_json::to_string(&jsonwebtoken::jwk::JwkSet { keys: vec![jwk(&enc2, "k2")] }).unwrap();
    let before = fetches.load(SeqCst);
    let t2 = token(Algorithm::ES256, Some("k2"), &enc2, serde_json::json!({ "sub": "dave", "exp": now() + 600 }));
    let (s, body, _) = call(&weir, "/", &[("authorization", &bearer(&t2))]).await;
    assert_eq!((s, body.as_str()), (200, "||false"), "no forward_claims configured here");
    assert_eq!(fetches.load(SeqCst), before + 1, "exactly one refetch for the unknown kid");
    // Unknown kids do not hammer the IdP: refetches are rate-limited.
    let t3 = token(Algorithm::ES256, Some("k3"), &enc2, serde_json::json!({ "sub": "eve", "exp": now() + 600 }));
    for _ in 0..5 {
        assert_eq!(call(&weir, "/", &[("authorization", &bearer(&t3))]).await.0, 401);
    }
    assert_eq!(fetches.load(SeqCst), before + 1, "no refetch within jwks_min_refetch of the last");
    // IdP down: the last good key set keeps working (t2 was cached too; a new k2 token proves the keys).
    down.store(true, SeqCst);
    let t2b = token(Algorithm::ES256, Some("k2"), &enc2, serde_json::json!({ "sub": "frank", "exp": now() + 600 }));
    assert_eq!(call(&weir, "/", &[("authorization", &bearer(&t2b))]).await.0, 200);
}

#[tokio::test]
async fn rate_limit_keyed_by_a_jwt_claim() {
    let up = echo().await;
    let secret = "a-shared-secret-of-32-bytes-long";
    let yaml = format!(
        "admin: {{ address: 127.0.0.1:0 }}\nlisteners:\n  - {{ name: public, address: 127.0.0.1:0 }}\nroutes:\n  - name: api\n    upstream: app\n    plugins:\n      - {{ name: jwt-auth, config: {{ keys: [{{ alg: HS256, secret: {secret} }}] }} }}\n      - {{ name: rate-limit, config: {{ requests: 2, window: 60s, key: {{ claim: tenant }} }} }}\nupstreams:\n{}",
        upstream_yaml("app", "round_robin", &[(up.port(), 1)], "")
    );
    let weir = Weir::start(&yaml);
    let key = EncodingKey::from_secret(secret.as_bytes());
    let tok = |sub: &str, tenant: &str| {
        token(Algorithm::HS256, None, &key, serde_json::json!({ "sub": sub, "tenant": tenant, "exp": now() + 600 }))
    };
    // Two users of tenant A share A's budget; tenant B has its own.
    assert_eq!(call(&weir, "/", &[("authorization", &bearer(&tok("u1", "A")))]).await.0, 200);
    assert_eq!(call(&weir, "/", &[("authorization", &bearer(&tok("u2", "A")))]).await.0, 200);
    assert_eq!(call(&weir, "/", &[("authorization", &bearer(&tok("u3", "A")))]).await.0, 429);
    assert_eq!(call(&weir, "/", &[("authorization", &bearer(&tok("u1", "B")))]).await.0, 200);
}
