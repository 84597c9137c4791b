//! Balancer properties: smooth WRR sequences, least-connections, ring stability, p2c.
use crate::view::Fields;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue};
use weir_config::spec::{HashKeySpec, LbPolicy};

use super::*;
use crate::upstream::pool::PoolLimits;

fn limits() -> PoolLimits {
    PoolLimits {
        max_connections: 8,
        max_idle: 8,
        idle_timeout: Duration::from_secs(60),
        max_lifetime: Duration::from_secs(600),
        acquire_timeout: Duration::from_secs(1),
    }
}

fn eps(weights: &[u32]) -> Vec<Arc<Endpoint>> {
    weights
        .iter()
        .enumerate()
        .map(|(i, &w)| Arc::new(Endpoint::new("127.0.0.1", 9000 + i as u16, w, limits())))
        .collect()
}

fn picks(b: &Balancer, eps: &[Arc<Endpoint>], n: usize) -> Vec<usize> {
    let headers = HeaderMap::new();
    let cx = PickCx { client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), headers: Fields::Map(&headers) };
    (0..n).map(|_| b.pick(eps, &cx, Tried::default()).unwrap()).collect()
}

#[test]
fn smooth_wrr_gives_exact_ratio_in_every_cycle_interleaved() {
    let e = eps(&[3, 1]);
    let b = Balancer::new(LbPolicy::WeightedRoundRobin, None, &e);
    let seq = picks(&b, &e, 400);
    for cycle in seq.chunks(4) {
        assert_eq!(cycle.iter().filter(|&&i| i == 0).count(), 3, "{seq:?}");
        // Smooth: the light endpoint never sits at the end of a burst of three.
        assert_ne!(cycle, [0, 0, 0, 1], "bursty sequence {seq:?}");
    }
    // nginx's documented sequence for weights 5, 1, 1.
    let e = eps(&[5, 1, 1]);
    let b = Balancer::new(LbPolicy::WeightedRoundRobin, None, &e);
    assert_eq!(picks(&b, &e, 7), [0, 0, 1, 0, 2, 0, 0]);
}

#[test]
fn round_robin_cycles_and_skips_tried_and_down_endpoints() {
    let e = eps(&[1, 1, 1]);
    let b = Balancer::new(LbPolicy::RoundRobin, None, &e);
    assert_eq!(picks(&b, &e, 6), [0, 1, 2, 0, 1, 2]);
    e[1].set_active_up(false);
    assert!(picks(&b, &e, 6).iter().all(|&i| i != 1));
    let headers = HeaderMap::new();
    let cx = PickCx { client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), headers: Fields::Map(&headers) };
    let mut tried = Tried::default();
    tried.add(0);
    tried.add(2);
    assert_eq!(b.pick(&e, &cx, tried), None, "all left are down or tried");
}

#[test]
fn passive_ejection_removes_an_endpoint_until_it_expires() {
    let e = eps(&[1, 1]);
    // Long enough that the checks below finish well inside it on a busy machine.
    let passive = Some((2, Duration::from_secs(1)));
    e[0].record_failure(passive);
    assert!(e[0].is_available(), "one failure is below the threshold");
    e[0].record_failure(passive);
    assert!(!e[0].is_available());
    let b = Balancer::new(LbPolicy::RoundRobin, None, &e);
    assert!(picks(&b, &e, 4).iter().all(|&i| i == 1));
    std::thread::sleep(Duration::from_millis(1200));
    assert!(e[0].is_available(), "back after the ejection time");
}

#[test]
fn least_connections_picks_fewest_in_flight() {
    let e = eps(&[1, 1, 1]);
    let b = Balancer::new(LbPolicy::LeastConnections, None, &e);
    for _ in 0..3 {
        e[0].begin_request();
    }
    e[2].begin_request();
    assert!(picks(&b, &e, 10).iter().all(|&i| i == 1));
    e[1].begin_request();
    e[1].begin_request();
    // Now 3, 2, 1 in flight.
    assert!(picks(&b, &e, 10).iter().all(|&i| i == 2));
}

#[test]
fn consistent_hash_moves_about_one_nth_of_keys_when_an_endpoint_joins() {
    let key = HashKeySpec::Header("x-user".into());
    let before = eps(&[1; 10]);
    let after = eps(&[1; 11]);
    let b1 = Balancer::new(LbPolicy::ConsistentHash, Some(&key), &before);
    let b2 = Balancer::new(LbPolicy::ConsistentHash, Some(&key), &after);
    let (mut moved, n) = (0, 10_000);
    for k in 0..n {
        let mut h = HeaderMap::new();
        h.insert("x-user", HeaderValue::from_str(&format!("user-{k}")).unwrap());
        let cx = PickCx { client_ip: IpAddr::V4(Ipv4Addr::LOCALHOST), headers: Fields::Map(&h) };
        let a = b1.pick(&before, &cx, Tried::default()).unwrap();
        let c = b2.pick(&after, &cx, Tried::default()).unwrap();
        assert_eq!(c, b2.pick(&after, &cx, Tried::default()).unwrap(), "stable per key");
        if a != c {
            assert_eq!(c, 10, "a moved key goes to the new endpoint");
            moved += 1;
        }
    }
    let frac = f64::from(moved) / f64::from(n);
    assert!((0.05..0.14).contains(&frac), "moved {frac} of keys, expected about 1/11");
}

#[test]
fn p2c_ewma_prefers_the_faster_endpoint() {
    let e = eps(&[1, 1, 1]);
    e[0].observe_latency(Duration::from_millis(1));
    e[1].observe_latency(Duration::from_millis(2));
    e[2].observe_latency(Duration::from_millis(50));
    let b = Balancer::new(LbPolicy::P2cEwma, None, &e);
    let seq = picks(&b, &e, 3000);
    let slow = seq.iter().filter(|&&i| i == 2).count();
    let fast = seq.iter().filter(|&&i| i == 0).count();
    assert_eq!(slow, 0, "the slow endpoint loses every pair it is in");
    assert!(fast > 1800, "fast endpoint picked {fast}/3000");
}
