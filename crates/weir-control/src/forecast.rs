//! Predictive scaling (seed ch. 5): each group's request rate, forecast from the gateways'
//! runtime reports, and the replicas it will need before it needs them.
//!
//! Owns: sampling the fleet's reported requests/s per group (gateways grouped by one label)
//! once per step, an additive Holt-Winters model per group (level, trend and one season of
//! the length given, learned from the history it sees; Holt's linear trend until a first
//! season is in), the forecast peak over the horizon, and the desired replica count: that peak
//! over the per-gateway capacity, scaled up at once and down only after a stabilisation
//! window (the largest count of the window wins, so an oscillating forecast never flaps the
//! count). Time comes from the caller, so tests run days in milliseconds.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

/// How forecasts are made and turned into replicas.
#[derive(Clone, Debug, PartialEq)]
pub struct ForecastSettings {
    /// One sample per step (the mean of the step's readings).
    pub step: Duration,
    /// The repeating pattern's length (a day, in production).
    pub season: Duration,
    /// How far ahead the desired count looks: at least the time a new replica takes to serve.
    pub horizon: Duration,
    /// Requests/s one gateway serves comfortably.
    pub capacity: f64,
    /// The label that groups gateways (`None`: one group, `fleet`).
    pub group_label: Option<String>,
    /// Scale-down waits this long (the largest count within it wins).
    pub stabilization: Duration,
    /// Never fewer replicas than this.
    pub min_replicas: u32,
}

impl Default for ForecastSettings {
    fn default() -> Self {
        Self {
            step: Duration::from_secs(60),
            season: Duration::from_secs(24 * 3600),
            horizon: Duration::from_secs(600),
            capacity: 1000.0,
            group_label: None,
            stabilization: Duration::from_secs(600),
            min_replicas: 1,
        }
    }
}

impl ForecastSettings {
    fn steps(&self, d: Duration) -> usize {
        (d.as_secs_f64() / self.step.as_secs_f64().max(1e-3)).round().max(1.0) as usize
    }
}

/// Additive Holt-Winters: level, trend, and one seasonal offset per step of the season.
#[derive(Clone, Debug)]
pub struct HoltWinters {
    alpha: f64,
    beta: f64,
    gamma: f64,
    /// Samples per season.
    period: usize,
    level: f64,
    trend: f64,
    seasonal: Vec<f64>,
    /// Samples seen.
    seen: usize,
    /// The first season, kept until it is complete (it initialises the seasonal offsets).
    first: Vec<f64>,
}

impl HoltWinters {
    /// A model of a series with a season of `period` samples.
    pub fn new(period: usize) -> Self {
        Self {
            alpha: 0.4,
            beta: 0.05,
            gamma: 0.5,
            period: period.max(2),
            level: 0.0,
            trend: 0.0,
            seasonal: vec![0.0; period.max(2)],
            seen: 0,
            first: Vec::new(),
        }
    }

    /// Whether a whole season has been seen (before: a trend only).
    pub fn seasonal_ready(&self) -> bool {
        self.seen >= self.period
    }

    /// Takes the next sample.
    pub fn update(&mut self, x: f64) {
        if self.seen == 0 {
            self.level = x;
        }
        let slot = self.seen % self.period;
        if !self.seasonal_ready() {
            // Holt's linear trend over the first season; the season itself is kept.
            let prev = self.level;
            self.level = self.alpha * x + (1.0 - self.alpha) * (self.level + self.trend);
            self.trend = self.beta * (self.level - prev) + (1.0 - self.beta) * self.trend;
            self.first.push(x);
            if self.first.len() == self.period {
                let mean = self.first.iter().sum::<f64>() / self.period as f64;
                self.seasonal = self.first.iter().map(|v| v - mean).collect();
                self.level = mean + self.trend * (self.period as f64 / 2.0);
                self.first = Vec::new();
            }
        } else {
            let prev = self.level;
            self.level = self.alpha * (x - self.seasonal[slot]) + (1.0 - self.alpha) * (self.level + self.trend);
            self.trend = self.beta * (self.level - prev) + (1.0 - self.beta) * self.trend;
            self.seasonal[slot] = self.gamma * (x - self.level) + (1.0 - self.gamma) * self.seasonal[slot];
        }
        self.seen += 1;
    }

    /// The value expected `h` samples after the last one (h ≥ 1), never below zero.
    pub fn forecast(&self, h: usize) -> f64 {
        let season = if self.seasonal_ready() { self.seasonal[(self.seen + h - 1) % self.period] } else { 0.0 };
        (self.level + self.trend * h as f64 + season).max(0.0)
    }
}

/// One group's model and recent history.
#[derive(Clone, Debug)]
struct Group {
    model: HoltWinters,
    /// The step being sampled: sum of readings and their count.
    acc: (f64, u32),
    /// The last sample.
    observed: f64,
    /// One-step-ahead forecasts and what came, over the last season: the error metric.
    errors: VecDeque<(f64, f64)>,
    /// Raw replica counts over the stabilisation window.
    raw: VecDeque<u32>,
    peak: f64,
    desired: u32,
    gateways: (u32, u32),
}

/// What is known of one group now.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct GroupForecast {
    /// The group (the label's value, or `fleet`).
    pub group: String,
    /// Requests/s in the last complete step.
    pub observed: f64,
    /// The largest rate expected within the horizon.
    pub forecast_peak: f64,
    /// Replicas wanted now.
    pub desired_replicas: u32,
    /// Mean absolute percentage error of the one-step-ahead forecasts over the last season.
    pub error_ratio: f64,
    /// Gateways up and down in the group.
    pub gateways_up: u32,
    /// Gateways down.
    pub gateways_down: u32,
    /// Whether a whole season has been learned.
    pub seasonal: bool,
}

/// One gateway's reading, as the registry has it.
#[derive(Clone, Debug)]
pub struct Reading<'a> {
    /// Its labels.
    pub labels: &'a BTreeMap<String, String>,
    /// Whether it is up.
    pub up: bool,
    /// Its last reported requests/s.
    pub requests_per_second: f64,
}

/// Every group's forecast, advanced by [`Forecaster::tick`].
#[derive(Debug)]
pub struct Forecaster {
    settings: ForecastSettings,
    groups: BTreeMap<String, Group>,
    /// Start of the step being sampled, in the caller's milliseconds.
    step_start: Option<u64>,
}

impl Forecaster {
    /// A forecaster with no history.
    pub fn new(settings: ForecastSettings) -> Self {
        Self { settings, groups: BTreeMap::new(), step_start: None }
    }

    /// The settings.
    pub fn settings(&self) -> &ForecastSettings {
        &self.settings
    }

    /// Takes the fleet's readings at `now_ms`. When the step being sampled has ended, its
    /// mean first feeds each group's model, and these readings start the next step.
    pub fn tick<'a>(&mut self, now_ms: u64, readings: impl IntoIterator<Item = Reading<'a>>) {
        let step_ms = self.settings.step.as_millis() as u64;
        let start = *self.step_start.get_or_insert(now_ms);
        if now_ms.saturating_sub(start) >= step_ms {
            self.step_start = Some(now_ms);
            let settings = self.settings.clone();
            for g in self.groups.values_mut() {
                g.close_step(&settings);
            }
        }
        let mut sums: BTreeMap<String, (f64, u32, u32)> = BTreeMap::new();
        for r in readings {
            let group = match &self.settings.group_label {
                Some(label) => r.labels.get(label).cloned().unwrap_or_else(|| "default".into()),
                None => "fleet".into(),
            };
            let e = sums.entry(group).or_default();
            if r.up {
                e.0 += r.requests_per_second;
                e.1 += 1;
            } else {
                e.2 += 1;
            }
        }
        let period = self.settings.steps(self.settings.season);
        for (name, (sum, up, down)) in &sums {
            let g = self.groups.entry(name.clone()).or_insert_with(|| Group::new(period));
            g.acc.0 += sum;
            g.acc.1 += 1;
            g.gateways = (*up, *down);
        }
    }

    /// Every group, by name.
    pub fn groups(&self) -> Vec<GroupForecast> {
        self.groups
            .iter()
            .map(|(name, g)| GroupForecast {
                group: name.clone(),
                observed: g.observed,
                forecast_peak: g.peak,
                desired_replicas: g.desired,
                error_ratio: g.error_ratio(),
                gateways_up: g.gateways.0,
                gateways_down: g.gateways.1,
                seasonal: g.model.seasonal_ready(),
            })
            .collect()
    }
}

impl Group {
    fn new(period: usize) -> Self {
        Self {
            model: HoltWinters::new(period),
            acc: (0.0, 0),
            observed: 0.0,
            errors: VecDeque::new(),
            raw: VecDeque::new(),
            peak: 0.0,
            desired: 0,
            gateways: (0, 0),
        }
    }

    fn close_step(&mut self, s: &ForecastSettings) {
        let x = if self.acc.1 == 0 { 0.0 } else { self.acc.0 / f64::from(self.acc.1) };
        self.acc = (0.0, 0);
        if self.model.seasonal_ready() {
            self.errors.push_back((self.model.forecast(1), x));
            while self.errors.len() > self.model.period {
                self.errors.pop_front();
            }
        }
        self.model.update(x);
        self.observed = x;
        let horizon = s.steps(s.horizon);
        self.peak = (1..=horizon).map(|h| self.model.forecast(h)).fold(x, f64::max);
        let raw = ((self.peak / s.capacity.max(1e-9)).ceil() as u32).max(s.min_replicas);
        self.raw.push_back(raw);
        while self.raw.len() > s.steps(s.stabilization) {
            self.raw.pop_front();
        }
        self.desired = self.raw.iter().copied().max().unwrap_or(raw);
    }

    fn error_ratio(&self) -> f64 {
        let scored: Vec<f64> =
            self.errors.iter().filter(|(_, actual)| *actual > 0.0).map(|(f, a)| (f - a).abs() / a).collect();
        if scored.is_empty() { 0.0 } else { scored.iter().sum::<f64>() / scored.len() as f64 }
    }
}

/// A gauge: name, type, help, and its value for a group.
type Gauge = (&'static str, &'static str, &'static str, fn(&GroupForecast) -> f64);

/// The forecasts as Prometheus text.
pub fn prometheus(groups: &[GroupForecast]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let metrics: [Gauge; 5] = [
        (
            "weir_fleet_requests_per_second",
            "gauge",
            "Requests/s the group's gateways reported in the last step.",
            |g| g.observed,
        ),
        (
            "weir_fleet_forecast_requests_per_second",
            "gauge",
            "The largest request rate the forecast expects within the horizon.",
            |g| g.forecast_peak,
        ),
        (
            "weir_fleet_desired_replicas",
            "gauge",
            "Gateways the group needs for the forecast peak at the configured capacity (scale-down stabilised).",
            |g| f64::from(g.desired_replicas),
        ),
        (
            "weir_fleet_forecast_error_ratio",
            "gauge",
            "Mean absolute percentage error of the one-step-ahead forecasts over the last season.",
            |g| g.error_ratio,
        ),
        ("weir_fleet_gateways_up", "gauge", "Gateways of the group that are up.", |g| f64::from(g.gateways_up)),
    ];
    for (name, kind, help, value) in metrics {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
        for g in groups {
            let _ = writeln!(
                out,
                "{name}{{group=\"{}\"}} {}",
                g.group.replace('\\', "\\\\").replace('"', "\\\""),
                value(g)
            );
        }
    }
    out
}

#[cfg(test)]
mod tests;
