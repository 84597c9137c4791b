//! `weir ctl`: the operator's command line for the control plane's admin API.
//!
//! Owns: reading files the way `weir standalone` does (a standalone file moves to a fleet
//! as it is) or as `kind:` documents, and printing results as kubectl does
//! (`route/api created`). Exit status 1 on any error (and, for `diff`, when there are
//! differences).

mod http;
mod packages;
mod print;
mod register;
mod rollout;

use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use self::http::Api;

/// Arguments of `weir ctl`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The control plane's admin API.
    #[arg(long, global = true, env = "WEIR_SERVER", default_value = "http://127.0.0.1:9180")]
    server: String,
    /// Bearer token for the admin API.
    #[arg(long, global = true, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// CA certificate (PEM) to trust for an `https://` server (a control plane started with
    /// `--tls-cert`), instead of the system roots.
    #[arg(long, global = true, env = "WEIR_CACERT")]
    cacert: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, clap::Subcommand)]
enum Command {
    /// Create or update the resources in a file (a standalone config, or `kind:` documents),
    /// or a plugin package directory (its module is uploaded unless already stored).
    Apply {
        /// The YAML file (`-` for stdin), or a package directory.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
        /// Validate and show what would change; store nothing (a package's module is checked
        /// here and not uploaded).
        #[arg(long)]
        dry_run: bool,
        /// Also delete stored resources the file does not name.
        #[arg(long)]
        prune: bool,
        /// Wait up to this long for every live gateway to apply the change (e.g. `5s`).
        #[arg(long)]
        wait: Option<String>,
        #[command(flatten)]
        staged: rollout::Staged,
    },
    /// Staged rollouts: status, promote, abort.
    #[command(subcommand)]
    Rollout(rollout::Command),
    /// Show what `apply -f FILE` would change (exit 1 when something would).
    Diff {
        /// The YAML file.
        #[arg(short = 'f', long = "filename")]
        file: PathBuf,
    },
    /// List resources of a kind, or show one as JSON.
    Get {
        /// routes, upstreams, listeners, plugins, consumers, packages or registrations.
        kind: String,
        /// One resource's name.
        name: Option<String>,
    },
    /// Delete a resource.
    Delete {
        /// Its kind.
        kind: String,
        /// Its name.
        name: String,
        /// Validate only.
        #[arg(long)]
        dry_run: bool,
    },
    /// Revisions, newest first.
    History {
        /// At most this many.
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Make the resources what they were at an earlier revision (as a new revision).
    Rollback {
        /// The revision to return to (`weir ctl history` lists them).
        #[arg(long)]
        to: u64,
        /// Wait up to this long for every live gateway to apply it.
        #[arg(long)]
        wait: Option<String>,
    },
    /// Register an endpoint of an upstream that takes registrations (`discovery: { registry:
    /// {} }`), or renew it. It is dropped unless renewed within its ttl.
    Register {
        /// The upstream.
        upstream: String,
        /// The endpoint, `IP:PORT`.
        endpoint: std::net::SocketAddr,
        /// Relative weight.
        #[arg(long, default_value_t = 1)]
        weight: u32,
        /// Dropped unless renewed within this (e.g. `10s`).
        #[arg(long, default_value = "10s")]
        ttl: String,
        /// Keep renewing (every third of the ttl) until interrupted, then deregister.
        #[arg(long)]
        keep: bool,
    },
    /// Remove an endpoint's registration.
    Deregister {
        /// The upstream.
        upstream: String,
        /// The endpoint, `IP:PORT`.
        endpoint: std::net::SocketAddr,
    },
    /// Registered gateways: status, applied revision, heartbeat, last NACK, load.
    Gateways {
        /// Print the raw JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn run(args: Args) -> ExitCode {
    let api = Api { server: args.server.clone(), token: args.token.clone(), cacert: args.cacert.clone() };
    let rt = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(dispatch(&api, args.command)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

type Res = Result<ExitCode, Box<dyn std::error::Error>>;

/// The resources `file` declares: a package directory is one `Package`; a YAML file's
/// `plugin_packages` directories are read, checked and uploaded, each becoming a `Package`.
/// Also returns the file's text, to place the control plane's errors in it. With `pending`
/// (a dry run), modules are not uploaded but listed there.
async fn read_all(
    api: &Api,
    file: &PathBuf,
    mut pending: Option<&mut Vec<String>>,
) -> Result<(Option<String>, Vec<Value>), Box<dyn std::error::Error>> {
    if packages::is_package(file) {
        return Ok((None, vec![packages::resource(api, file, pending).await?]));
    }
    let (text, mut out) = read_resources(file)?;
    for dir in packages::listed(file, &text)? {
        out.push(packages::resource(api, &dir, pending.as_deref_mut()).await?);
    }
    Ok((Some(text), out))
}

type Read = (String, Vec<Value>);

/// `WHAT is not valid:` and every error, one per line.
fn invalid(what: &dyn std::fmt::Display, verdict: &str, errs: &weir_config::ConfigErrors) -> String {
    let lines: Vec<String> = errs.iter().map(|e| format!("  {}: {}", e.path, e.message)).collect();
    format!("{what} {verdict}:\n{}", lines.join("\n"))
}

fn read_resources(file: &PathBuf) -> Result<Read, Box<dyn std::error::Error>> {
    let text = if file.as_os_str() == "-" {
        std::io::read_to_string(std::io::stdin())?
    } else {
        std::fs::read_to_string(file).map_err(|e| format!("cannot read {}: {e}", file.display()))?
    };
    let res = weir_config::resources::parse_documents(&text)
        .map_err(|errs| invalid(&file.display(), "is not valid", &errs))?;
    let res = res.into_iter().map(|r| json!({"kind": r.kind.as_str(), "name": r.name, "body": r.body})).collect();
    Ok((text, res))
}

fn query(dry_run: bool, wait: Option<&str>) -> String {
    let mut q = Vec::new();
    if dry_run {
        q.push("dry_run=true".to_owned());
    }
    if let Some(w) = wait {
        q.push(format!("wait={w}"));
    }
    if q.is_empty() { String::new() } else { format!("?{}", q.join("&")) }
}

async fn dispatch(api: &Api, cmd: Command) -> Res {
    match cmd {
        Command::Apply { file, dry_run, prune, wait, staged } => {
            let rollout = staged.spec()?;
            let mut pending = Vec::new();
            let (text, resources) = read_all(api, &file, dry_run.then_some(&mut pending)).await?;
            let body = json!({"resources": resources, "prune": prune, "pending_modules": pending, "rollout": rollout});
            let (status, v) =
                api.call("POST", &format!("/api/v1/apply{}", query(dry_run, wait.as_deref())), Some(&body)).await?;
            Ok(print::applied_from(status, &v, text.as_deref()))
        }
        Command::Diff { file } => {
            let mut pending = Vec::new();
            let (_, resources) = read_all(api, &file, Some(&mut pending)).await?;
            let body = json!({"resources": resources, "pending_modules": pending});
            let (status, v) = api.call("POST", "/api/v1/apply?dry_run=true", Some(&body)).await?;
            Ok(print::diff(status, &v))
        }
        Command::Get { kind, name } => {
            let path = match &name {
                Some(n) => format!("/api/v1/{kind}/{n}"),
                None => format!("/api/v1/{kind}"),
            };
            let (status, v) = api.call("GET", &path, None).await?;
            Ok(print::get(status, &v, name.is_some()))
        }
        Command::Delete { kind, name, dry_run } => {
            let (status, v) =
                api.call("DELETE", &format!("/api/v1/{kind}/{name}{}", query(dry_run, None)), None).await?;
            Ok(print::applied(status, &v))
        }
        Command::History { limit } => {
            let (status, v) = api.call("GET", &format!("/api/v1/history?limit={limit}"), None).await?;
            Ok(print::history(status, &v))
        }
        Command::Rollback { to, wait } => {
            let (status, v) = api
                .call("POST", &format!("/api/v1/rollback{}", query(false, wait.as_deref())), Some(&json!({"to": to})))
                .await?;
            Ok(print::applied(status, &v))
        }
        Command::Register { upstream, endpoint, weight, ttl, keep } => {
            register::register(api, register::Registration { upstream, endpoint, weight, ttl, keep }).await
        }
        Command::Deregister { upstream, endpoint } => register::deregister(api, &upstream, endpoint).await,
        Command::Rollout(cmd) => rollout::run(api, cmd).await,
        Command::Gateways { json } => {
            let (status, v) = api.call("GET", "/api/v1/gateways", None).await?;
            Ok(print::gateways(status, &v, json))
        }
    }
}
