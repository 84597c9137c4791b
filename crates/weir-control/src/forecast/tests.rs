use super::*;

const HOUR_MS: u64 = 1000;

/// A day of 24 "hours" of one second each; the horizon three hours; 100 requests/s a gateway.
fn settings() -> ForecastSettings {
    ForecastSettings {
        step: Duration::from_millis(HOUR_MS),
        season: Duration::from_millis(24 * HOUR_MS),
        horizon: Duration::from_millis(3 * HOUR_MS),
        capacity: 100.0,
        group_label: None,
        stabilization: Duration::from_millis(3 * HOUR_MS),
        min_replicas: 1,
    }
}

/// A daily pattern (quiet nights, a midday peak) on a slow ramp, with a little noise.
fn daily(step: u64) -> f64 {
    let hour = (step % 24) as f64;
    let day = (step / 24) as f64;
    let bump = if (6.0..=18.0).contains(&hour) { (std::f64::consts::PI * (hour - 6.0) / 12.0).sin() } else { 0.0 };
    let noise = ((step * 7919) % 13) as f64 - 6.0;
    120.0 + 10.0 * day + 380.0 * bump + noise
}

/// Feeds `load` for `days`, one reading per hour; returns what was desired after each hour.
fn run(load: impl Fn(u64) -> f64, days: u64) -> (Forecaster, Vec<GroupForecast>) {
    let labels = BTreeMap::new();
    let mut f = Forecaster::new(settings());
    let mut after = Vec::new();
    for step in 0..=days * 24 {
        let reading = Reading { labels: &labels, up: true, requests_per_second: load(step) };
        f.tick(step * HOUR_MS, [reading]);
        if step > 0 {
            after.push(f.groups()[0].clone());
        }
    }
    (f, after)
}

fn need(rps: f64) -> u32 {
    (rps / 100.0).ceil() as u32
}

#[test]
fn the_desired_count_rises_before_the_load_does() {
    let (_, after) = run(daily, 5);
    // after[t] holds what was known once hour t was in (hour t+1 not yet seen).
    for day in 3..5 {
        let rises: Vec<usize> =
            (day * 24 + 1..day * 24 + 24).filter(|&t| need(daily(t as u64)) > need(daily(t as u64 - 1))).collect();
        assert!(!rises.is_empty(), "the pattern rises on day {day}");
        for t in rises {
            let ahead = after[t - 2].desired_replicas;
            assert!(
                ahead >= need(daily(t as u64)),
                "day {day} hour {}: {} needed at {:.0} req/s but {ahead} desired the hour before",
                t % 24,
                need(daily(t as u64)),
                daily(t as u64)
            );
        }
    }
}

#[test]
fn a_flat_load_keeps_a_stable_count() {
    let flat = |step: u64| 250.0 + (((step * 7919) % 11) as f64 - 5.0);
    let (_, after) = run(flat, 4);
    let counts: Vec<u32> = after[48..].iter().map(|g| g.desired_replicas).collect();
    assert!(counts.iter().all(|&c| c == 3), "flat 250 req/s at 100 per gateway: {counts:?}");
}

#[test]
fn the_forecast_learns_the_pattern() {
    let (f, after) = run(daily, 5);
    let g = &f.groups()[0];
    assert!(g.seasonal);
    assert!(g.error_ratio < 0.1, "one-step error on the synthetic pattern: {:.3}", g.error_ratio);
    // Desired replicas fall again at night, once the stabilisation window has passed.
    let night = &after[4 * 24 + 2];
    assert!(night.desired_replicas <= 2, "{night:?}");
}

#[test]
fn gateways_are_grouped_by_label_and_down_ones_do_not_count() {
    let mut s = settings();
    s.group_label = Some("pool".into());
    let mut f = Forecaster::new(s);
    let (a, b) = (BTreeMap::from([("pool".to_owned(), "eu".to_owned())]), BTreeMap::new());
    for step in 0..3 {
        let readings = [
            Reading { labels: &a, up: true, requests_per_second: 150.0 },
            Reading { labels: &a, up: false, requests_per_second: 900.0 },
            Reading { labels: &b, up: true, requests_per_second: 40.0 },
        ];
        f.tick(step * HOUR_MS, readings);
    }
    let groups = f.groups();
    assert_eq!(groups.iter().map(|g| g.group.as_str()).collect::<Vec<_>>(), ["default", "eu"]);
    assert_eq!((groups[1].observed, groups[1].gateways_up, groups[1].gateways_down), (150.0, 1, 1));
    assert_eq!(groups[1].desired_replicas, 2);
    let text = prometheus(&groups);
    assert!(text.contains("weir_fleet_desired_replicas{group=\"eu\"} 2\n"), "{text}");
}
