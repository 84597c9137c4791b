//! Why a plugin config that passed validation cannot be built on this gateway: a key file that
//! is not there, key material that does not parse, a Redis URL the client refuses, a package
//! that does not load. Each case names the field it is about, so a NACK points at it.

use std::fmt;

/// A plugin that could not be built, and which field of its config is to blame.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// `jwt-auth`: a key's `alg` is not one Weir verifies.
    #[error("unsupported algorithm {alg:?}")]
    Algorithm {
        /// Index into `keys`.
        index: usize,
        /// As written.
        alg: String,
    },
    /// `jwt-auth`: a key's `pem_file` cannot be read.
    #[error("cannot read {path}: {error}")]
    PemFile {
        /// Index into `keys`.
        index: usize,
        /// As written.
        path: String,
        /// What reading it said.
        error: std::io::Error,
    },
    /// `jwt-auth`: key material that does not parse for its algorithm.
    #[error("{error}")]
    Key {
        /// Index into `keys`.
        index: usize,
        /// What parsing it said.
        error: jsonwebtoken::errors::Error,
    },
    /// `jwt-auth`: the algorithm needs a secret (HS*) or a PEM key (the rest), and has neither.
    #[error("{alg} needs {}", if alg.starts_with("HS") { "a secret" } else { "a PEM key (pem or pem_file)" })]
    NoKey {
        /// Index into `keys`.
        index: usize,
        /// The algorithm.
        alg: String,
    },
    /// `rate-limit`: the Redis client refuses the URL.
    #[error("{url:?}: {error}")]
    RedisUrl {
        /// As written.
        url: String,
        /// What the client said.
        error: redis::RedisError,
    },
    /// An MCP server's `tls` settings do not make a client config (a CA or client
    /// certificate file that cannot be read, or that rustls refuses).
    #[error("{0}")]
    Tls(#[from] crate::tls::TlsError),
    /// A package plugin could not be compiled, checked or started.
    #[error("plugin {name:?}: {reason}")]
    Package {
        /// The package.
        name: String,
        /// Which step failed and why.
        reason: PackageFailure,
    },
}

/// The step at which a package plugin failed.
#[derive(Debug)]
pub enum PackageFailure {
    /// The plugin engine itself did not start.
    Engine(String),
    /// The module did not compile, or its imports and exports are not proxy-wasm's.
    Load(String),
    /// A configured instance did not start (its `on_configure` refused, trapped or ran out).
    Start(String),
    /// This build has no plugin engine (cargo feature `wasm`).
    Unsupported,
}

impl fmt::Display for PackageFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Engine(e) => write!(f, "the plugin engine did not start: {e}"),
            Self::Load(e) => write!(f, "{e}"),
            Self::Start(e) => write!(f, "its instance did not start: {e}"),
            Self::Unsupported => f.write_str("this Weir was built without plugin packages (cargo feature `wasm`)"),
        }
    }
}

impl BuildError {
    /// The field of the plugin's config it is about, e.g. `keys[1].pem_file` (empty: the
    /// plugin as a whole).
    pub fn field(&self) -> String {
        match self {
            Self::Algorithm { index, .. } => format!("keys[{index}].alg"),
            Self::PemFile { index, .. } => format!("keys[{index}].pem_file"),
            Self::Key { index, .. } | Self::NoKey { index, .. } => format!("keys[{index}]"),
            Self::RedisUrl { .. } => "redis_url".to_owned(),
            Self::Package { .. } => String::new(),
            Self::Tls(_) => "tls".to_owned(),
        }
    }
}
