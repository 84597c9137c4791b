//! `weir`: the one binary. Subcommands compose the libraries; see `weir --help`.

mod adapter;
mod control_plane;
mod ctl;
mod echo;
mod fleet;
mod loadtest;
mod plugins;
mod standalone;
mod upgrade;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Hands memory the allocator holds freed back to the OS now, rather than when a busy thread
/// next asks it for pages (mimalloc purges freed pages lazily, a second after they are freed,
/// and only from a thread that allocates; a worker that reuses its buffers never does). Run
/// after a replaced config is released, so hot updates return RSS to its level.
#[allow(unsafe_code)]
pub(crate) fn release_memory() {
    // SAFETY: `mi_collect` takes no pointers; it only collects the calling thread's heap and
    // purges the process's arenas.
    unsafe { libmimalloc_sys::mi_collect(true) }
}

/// Weir: an API gateway with a modular control plane.
#[derive(Debug, Parser)]
#[command(version, about, propagate_version = true)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a gateway from a YAML file, re-applying it whenever the file changes.
    Standalone(standalone::Args),
    /// Run a gateway fed by control planes (data plane only; it listens where you say).
    Gateway(fleet::Args),
    /// Hand a running gateway's sockets to a new process started from its binary path, with
    /// no connection refused or request lost (replace the binary first to upgrade it).
    Upgrade(upgrade::CmdArgs),
    /// Run the control plane: resource store, gateway registry, gRPC push, admin REST API.
    ControlPlane(control_plane::Args),
    /// Drive nginx or HAProxy from the control planes, like a gateway (docs/adapters.md).
    #[command(subcommand)]
    Adapter(adapter::Command),
    /// Manage resources through a control plane's admin API (apply, get, diff, rollback…).
    Ctl(ctl::Args),
    /// Print the control-plane protocol (.proto) for clients in other languages.
    Proto,
    /// Check a config file and print every error with its path (exit 1 if any).
    Validate {
        /// The config file.
        #[arg(short, long)]
        config: PathBuf,
    },
    /// Print the JSON Schema of the config file format.
    Schema,
    /// Built-in plugins and plugin packages: list, schema, validate a package, start a new one.
    #[command(subcommand)]
    Plugins(plugins::Command),
    /// Drive a target with a scenario's traffic mix and check it against SLA thresholds.
    Loadtest(loadtest::Args),
    /// Run a small HTTP echo server (for examples, demos and benchmarks).
    EchoServer(echo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_format);
    match cli.command {
        Command::Standalone(args) => standalone::run(&args),
        Command::Gateway(args) => fleet::run(args),
        Command::ControlPlane(args) => control_plane::run(args),
        Command::Ctl(args) => ctl::run(args),
        Command::Adapter(cmd) => adapter::run(cmd),
        Command::Upgrade(args) => upgrade::run(&args),
        Command::Proto => {
            print!("{}", weir_proto::PROTO);
            ExitCode::SUCCESS
        }
        Command::Validate { config } => validate(&config),
        Command::Schema => {
            println!("{:#}", weir_config::json_schema());
            ExitCode::SUCCESS
        }
        Command::EchoServer(args) => echo::run(&args),
        Command::Plugins(cmd) => plugins::run(cmd),
        Command::Loadtest(args) => loadtest::run(&args),
    }
}

fn validate(path: &std::path::Path) -> ExitCode {
    match weir_gateway::watch::load_file(path) {
        Ok((_, cfg)) if !plugins::register_all(&cfg) => ExitCode::FAILURE,
        Ok((_, cfg)) => {
            let s = cfg.spec();
            println!(
                "{}: valid ({} listeners, {} routes, {} upstreams)",
                path.display(),
                s.listeners.len(),
                s.routes.len(),
                s.upstreams.len()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::FAILURE
        }
    }
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_ansi(ansi).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
}
