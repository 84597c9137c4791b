//! `weir ctl apply --canary …` and `weir ctl rollout status|promote|abort`: staged rollouts
//! from the command line.

use std::collections::BTreeMap;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::http::Api;

/// How `apply` rolls its revision out (all optional: without `--canary` or
/// `--canary-selector`, the revision goes to every gateway at once).
#[derive(Debug, clap::Args)]
pub(crate) struct Staged {
    /// Roll out to this share of the gateways first (`10%`), for `--bake`.
    #[arg(long, conflicts_with = "canary_selector")]
    canary: Option<String>,
    /// Roll out to the gateways with these labels first (`ring=canary`, repeatable).
    #[arg(long = "canary-selector", value_parser = crate::fleet::parse_label)]
    canary_selector: Vec<(String, String)>,
    /// How long the canary serves before the revision is promoted (`2m`).
    #[arg(long, default_value = "2m", value_parser = humantime::parse_duration)]
    bake: std::time::Duration,
    /// Roll back when the canary's 5xx share is over this (`1%`).
    #[arg(long, default_value = "1%")]
    max_error_rate: String,
    /// Roll back when the canary's p99 is this much over the rest's (`20%`).
    #[arg(long)]
    max_p99_increase: Option<String>,
}

fn percent(s: &str) -> Result<f64, String> {
    let n = s.trim().trim_end_matches('%');
    n.parse::<f64>().map(|v| v / 100.0).map_err(|_| format!("{s:?}: expected a percentage such as 10%"))
}

impl Staged {
    /// The API's `rollout` field, or `None` for an apply to everyone.
    pub(crate) fn spec(&self) -> Result<Option<Value>, String> {
        let canary = match (&self.canary, self.canary_selector.is_empty()) {
            (Some(p), _) => json!({"percent": (percent(p)? * 100.0).round() as u32}),
            (None, false) => json!({"selector": self.canary_selector.iter().cloned().collect::<BTreeMap<_, _>>()}),
            (None, true) => return Ok(None),
        };
        let p99 = self.max_p99_increase.as_deref().map(percent).transpose()?;
        Ok(Some(json!({
            "canary": canary,
            "bake_ms": self.bake.as_millis() as u64,
            "max_error_rate": percent(&self.max_error_rate)?,
            "max_p99_increase": p99,
        })))
    }
}

/// `weir ctl rollout …`.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum Command {
    /// The rollout in progress, or the last one.
    Status {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
    /// Give the baking revision to every gateway now.
    Promote,
    /// Put the previous resources back now (a new revision).
    Abort,
}

pub(crate) async fn run(api: &Api, cmd: Command) -> Result<ExitCode, Box<dyn std::error::Error>> {
    let (status, v, json_out) = match cmd {
        Command::Status { json } => {
            let (s, v) = api.call("GET", "/api/v1/rollout", None).await?;
            (s, v, json)
        }
        Command::Promote => {
            let (s, v) = api.call("POST", "/api/v1/rollout/promote", None).await?;
            (s, v, false)
        }
        Command::Abort => {
            let (s, v) = api.call("POST", "/api/v1/rollout/abort", None).await?;
            (s, v, false)
        }
    };
    if !(200..300).contains(&status) {
        eprintln!("error ({status}): {}", v["error"].as_str().unwrap_or(&v.to_string()));
        return Ok(ExitCode::FAILURE);
    }
    if json_out {
        println!("{}", serde_json::to_string_pretty(&v).unwrap_or_default());
    } else if v.is_null() {
        println!("no rollout has been started (weir ctl apply -f FILE --canary 10% --bake 2m)");
    } else {
        println!(
            "revision {}: {} (canary {}; the others held at {})",
            v["revision"],
            v["phase"].as_str().unwrap_or(""),
            v["canary"]
                .as_array()
                .map(|a| a.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(", "))
                .unwrap_or_default(),
            v["stable"]
        );
        if let Some(r) = v["reason"].as_str() {
            println!("  {r}");
        }
        if let Some(to) = v["rolled_back_to"].as_u64() {
            println!("  the previous resources are back as revision {to}");
        }
    }
    Ok(ExitCode::SUCCESS)
}
