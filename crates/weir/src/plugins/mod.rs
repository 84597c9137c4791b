//! `weir plugins`: the built-ins and packages a config can use, checking a package the way a
//! gateway registers it, and writing a new package project.

mod skeleton;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;
use weir_config::package::Package;

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Every built-in plugin, and the packages a config (or directories) provide.
    List {
        /// Also list the packages this config file's `plugin_packages` names.
        #[arg(short, long)]
        config: Option<PathBuf>,
        /// Also list the package in each of these directories.
        #[arg(long = "dir")]
        dirs: Vec<PathBuf>,
    },
    /// The JSON Schema of a plugin's `config` (a built-in's name, or a package directory).
    Schema {
        /// Plugin name (e.g. key-auth) or package directory.
        name: String,
    },
    /// Check a package as a gateway registers it: metadata, schema, module compiled and its
    /// imports checked, a canary instance started and configured.
    Validate {
        /// The package directory (metadata.yaml, config.schema.json, plugin.wasm).
        dir: PathBuf,
        /// The configuration to start the canary with (JSON; checked against the schema).
        #[arg(long, default_value = "{}")]
        config: String,
    },
    /// Write a new package project (Rust, proxy-wasm SDK) that builds to a valid package.
    New {
        /// Package name: lower-case letters, digits and `-`.
        name: String,
        /// Where to create it (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}

pub(crate) fn run(cmd: Command) -> ExitCode {
    match cmd {
        Command::List { config, dirs } => list(config.as_deref(), &dirs),
        Command::Schema { name } => schema(&name),
        Command::Validate { dir, config } => validate(&dir, &config),
        Command::New { name, dir } => skeleton::write(&name, &dir.unwrap_or_else(|| PathBuf::from(&name))),
    }
}

fn list(config: Option<&Path>, dirs: &[PathBuf]) -> ExitCode {
    println!("{:<16} {:<11} {:<9} DESCRIPTION", "NAME", "PHASE", "KIND");
    for b in weir_config::plugins::BUILTINS {
        println!("{:<16} {:<11} {:<9} {}", b.name, b.phase, "built-in", b.description);
    }
    let mut packages = Vec::new();
    if let Some(c) = config {
        match weir_gateway::watch::load_file(c) {
            Ok((_, cfg)) => packages.extend(cfg.packages().iter().map(|p| (**p).clone())),
            Err(e) => {
                eprintln!("{e}");
                return ExitCode::FAILURE;
            }
        }
    }
    for d in dirs {
        match weir_gateway::packages::read_package(d) {
            Ok(p) => packages.push(p),
            Err(e) => {
                eprintln!("{}: {e}", d.display());
                return ExitCode::FAILURE;
            }
        }
    }
    for p in packages {
        let m = &p.meta;
        let phase = serde_json::to_value(m.phase).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        println!(
            "{:<16} {:<11} {:<9} {} ({})",
            m.name,
            phase,
            format!("v{}", m.version),
            m.description,
            p.dir.as_deref().map_or_else(|| "pushed".into(), |d| d.display().to_string())
        );
    }
    ExitCode::SUCCESS
}

fn schema(name: &str) -> ExitCode {
    if let Some(b) = weir_config::plugins::builtin(name) {
        println!("{:#}", b.schema());
        return ExitCode::SUCCESS;
    }
    match weir_gateway::packages::read_package(Path::new(name)) {
        Ok(p) => {
            println!("{:#}", p.schema);
            ExitCode::SUCCESS
        }
        Err(_) => {
            eprintln!(
                "{name:?} is neither a built-in plugin nor a package directory; `weir plugins list` shows the built-ins"
            );
            ExitCode::FAILURE
        }
    }
}

fn validate(dir: &Path, config: &str) -> ExitCode {
    let pkg = match weir_gateway::packages::read_package(dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("{}: not a valid package\n{e}", dir.display());
            return ExitCode::FAILURE;
        }
    };
    match check(&pkg, config) {
        Ok(()) => {
            let m = &pkg.meta;
            println!(
                "{}: valid package {} v{} ({:?}, {:?}, {} KiB, sha256 {})",
                dir.display(),
                m.name,
                m.version,
                m.phase,
                m.failure_policy,
                pkg.wasm.len().div_ceil(1024),
                &pkg.sha256[..16]
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{}: {e}", dir.display());
            ExitCode::FAILURE
        }
    }
}

fn check(pkg: &Package, config: &str) -> Result<(), String> {
    let cfg: serde_json::Value = serde_json::from_str(config).map_err(|e| format!("--config is not JSON: {e}"))?;
    weir_config::package::check_config(&pkg.schema, &cfg)
        .map_err(|e| format!("the configuration does not match config.schema.json: {e}"))?;
    weir_gateway::filter::wasm::check_package(pkg, &cfg).map_err(|e| e.to_string())
}

/// Registers every package use of `cfg` as a gateway would (compile, canary with the route's
/// config); prints each failure and returns whether all passed.
pub(crate) fn register_all(cfg: &weir_config::ValidConfig) -> bool {
    let mut ok = true;
    for (i, r) in cfg.spec().routes.iter().enumerate() {
        for (name, c) in cfg.route_plugins(i) {
            if let weir_config::plugins::PluginConfig::Wasm(w) = c
                && let Err(e) = weir_gateway::filter::wasm::check_package(&w.package, &w.config)
            {
                eprintln!("routes[{i}] ({}): plugin {name}: {e}", r.name);
                ok = false;
            }
        }
    }
    ok
}
