//! Token verification with and without the verified-token cache, RS256 and ES256.
//!
//! `cargo bench -p weir-gateway --bench jwt`. The cache turns a signature check into one
//! hash-map lookup; this shows by how much.

use std::time::{SystemTime, UNIX_EPOCH};

use criterion::{Criterion, criterion_group, criterion_main};
use futures_util::FutureExt;
use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use weir_config::plugins::{JwtAuthConfig, JwtKey, PluginConfig};
use weir_gateway::filter::{Chain, Filter, FilterCx};
use weir_gateway::metrics::Metrics;

fn chain(alg: &str, public_pem: String, cache_size: u64) -> Chain {
    let cfg = JwtAuthConfig {
        keys: vec![JwtKey { alg: alg.into(), kid: None, secret: None, pem: Some(public_pem), pem_file: None }],
        jwks_url: None,
        jwks_refresh: None,
        jwks_min_refetch: None,
        issuer: None,
        audiences: Vec::new(),
        required_claims: Vec::new(),
        leeway: None,
        token_from: Vec::new(),
        forward_claims: Default::default(),
        cache_size,
    };
    let f = Filter::new(&PluginConfig::JwtAuth(cfg), "bench", &Metrics::new(), &Default::default()).expect("valid key");
    Chain::new(vec![std::sync::Arc::new(f)])
}

fn bench(c: &mut Criterion) {
    let exp = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs() + 3600;
    let claims = serde_json::json!({ "sub": "bench", "exp": exp });
    let rsa = rcgen::KeyPair::generate_for(&rcgen::PKCS_RSA_SHA256).unwrap();
    let ec = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cases = [
        (
            "RS256",
            Algorithm::RS256,
            EncodingKey::from_rsa_pem(rsa.serialize_pem().as_bytes()).unwrap(),
            rsa.public_key_pem(),
        ),
        (
            "ES256",
            Algorithm::ES256,
            EncodingKey::from_ec_pem(ec.serialize_pem().as_bytes()).unwrap(),
            ec.public_key_pem(),
        ),
    ];
    for (name, alg, key, public) in cases {
        let token = encode(&Header::new(alg), &claims, &key).unwrap();
        let mut req =
            http::Request::get("/").header("authorization", format!("Bearer {token}")).body(()).unwrap().into_parts().0;
        for (label, size) in [("cached", 10_000), ("uncached", 0)] {
            let chain = chain(name, public.clone(), size);
            c.bench_function(&format!("jwt {name} {label}"), |b| {
                b.iter(|| {
                    let mut cx = FilterCx::new((std::net::Ipv4Addr::LOCALHOST, 0).into());
                    let r = chain.on_request(&mut req, &mut cx).now_or_never().expect("no I/O with inline keys");
                    assert!(r.is_ok());
                })
            });
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
