//! `weir loadtest`: the seed's load-test mode (section 4.4) with SLA verdicts.
//!
//! Owns: reading a scenario, running it (see [`runner`]), the live progress bar, and the
//! verdict ([`report`]), JSON output and SVG plot. Exit status: 0 when every SLA line
//! passes, 1 when one misses, 2 when the scenario or target is unusable.

mod client;
mod h1;
mod plot;
mod report;
mod runner;
mod scenario;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressStyle};
use parking_lot::Mutex;
use tokio::time::Instant;

use client::Dialer;
use report::Report;
use runner::{Plan, Stats};
use scenario::Scenario;

/// Arguments of `weir loadtest`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The scenario file (YAML).
    scenario: PathBuf,
    /// Write the full report as JSON here.
    #[arg(long)]
    output: Option<PathBuf>,
    /// Draw latency over time and the latency distribution into this SVG file.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// Accept any TLS certificate (test certificates).
    #[arg(long)]
    insecure: bool,
    /// Trust this CA bundle (PEM) instead of the system's.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Generator threads (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
}

pub(crate) fn run(args: &Args) -> ExitCode {
    let scenario =
        match std::fs::read_to_string(&args.scenario).map_err(|e| e.to_string()).and_then(|t| Scenario::parse(&t)) {
            Ok(s) => s,
            Err(e) => {
                eprintln!("{}: {e}", args.scenario.display());
                return ExitCode::from(2);
            }
        };
    let dialer = match Dialer::new(&scenario.target, scenario.protocol, args.insecure, args.ca.as_deref()) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let threads = args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let (report, hist) = match rt.block_on(execute(&scenario, dialer, threads.max(1))) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.text());
    if let Some(path) = &args.output {
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, json) {
            eprintln!("cannot write {}: {e}", path.display());
        }
    }
    if let Some(path) = &args.plot
        && let Err(e) = plot::draw(path, &report, &hist, &args.scenario)
    {
        eprintln!("cannot draw {}: {e}", path.display());
    }
    if report.pass { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

/// Runs the scenario on `threads` generator threads, each a single-threaded runtime driving
/// its share of the connections; this task keeps the progress bar.
async fn execute(
    s: &Scenario,
    dialer: Dialer,
    threads: usize,
) -> Result<(Report, hdrhistogram::Histogram<u64>), String> {
    // Start on the next whole 10 ms, after every task is spawned.
    let start = Instant::now() + Duration::from_millis(20);
    let plan = Arc::new(Plan::new(s, dialer, start)?);
    let seconds: runner::Seconds = Arc::default();
    let all: Vec<Arc<Mutex<Stats>>> =
        (0..s.connections).map(|_| Arc::new(Mutex::new(Stats::with_seconds(seconds.clone())))).collect();
    let mut workers = Vec::new();
    for t in 0..threads {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
        let mine: Vec<(u32, Arc<Mutex<Stats>>)> =
            all.iter().enumerate().filter(|(i, _)| i % threads == t).map(|(i, st)| (i as u32, st.clone())).collect();
        let plan = plan.clone();
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(format!("loadgen-{t}"))
            .spawn(move || {
                rt.block_on(async move {
                    let conns = mine.into_iter().map(|(i, st)| tokio::spawn(runner::connection(plan.clone(), i, st)));
                    let _ = futures_util::future::join_all(conns).await;
                });
                let _ = tx.send(());
            })
            .map_err(|e| e.to_string())?;
        workers.push(rx);
    }

    let total = s.duration.get();
    let bar = if std::io::stdout().is_terminal() {
        ProgressBar::new(total.as_millis() as u64)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template("{elapsed_precise} [{bar:30.cyan/blue}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    let progress = {
        let (bar, all) = (bar.clone(), all.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(250));
            let mut last = (Instant::now(), 0u64);
            loop {
                tick.tick().await;
                let mut m = Stats::new();
                for st in &all {
                    m.merge(&st.lock());
                }
                let now = Instant::now();
                let done = m.responses + m.failures.values().sum::<u64>();
                let rps = (done - last.1) as f64 / now.duration_since(last.0).as_secs_f64().max(1e-3);
                last = (now, done);
                bar.set_position(now.saturating_duration_since(start).as_millis() as u64);
                bar.set_message(format!(
                    "{rps:>8.0} rps | {} errors | p99 {:.2} ms",
                    m.errors,
                    m.hist.value_at_quantile(0.99) as f64 / 1000.0
                ));
            }
        })
    };
    // Every request is scheduled before the end; allow the last ones their timeout.
    let hard_stop = plan.end + s.timeout() + Duration::from_secs(1);
    for w in workers {
        let left = hard_stop.saturating_duration_since(Instant::now());
        if tokio::time::timeout(left, w).await.is_err() {
            plan.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        }
    }
    let elapsed = Instant::now().duration_since(start).max(total);
    progress.abort();
    bar.finish_and_clear();
    let mut merged = Stats::new();
    for st in &all {
        // A connection cut off at the hard stop has not added its last second yet.
        let mut st = st.lock();
        st.flush_second();
        merged.merge(&st);
    }
    let report = Report::build(s, &merged, &seconds.lock(), elapsed);
    Ok((report, merged.hist))
}
