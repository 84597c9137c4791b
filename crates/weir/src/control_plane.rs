//! `weir control-plane`: the store, registry, gRPC push and admin API in one process.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use weir_control::ControlPlane;
use weir_control::store::{EtcdLimits, EtcdSpec, EtcdTls, Store};

use crate::standalone::{control_runtime, read_flag_file, wait_for_signal};

/// Arguments of `weir control-plane`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Where resources and their history are kept: `redb:PATH` (an embedded database file, one
    /// control plane) or `etcd:URL[,URL…]` (etcd client URLs; several control planes may share
    /// it).
    #[arg(long, default_value = "redb:weir-control.redb", value_parser = parse_store)]
    store: StoreArg,
    /// Key prefix in etcd (`--store etcd:…`), so several fleets can share one etcd.
    #[arg(long, default_value = "/weir")]
    etcd_prefix: String,
    /// The CA (PEM) that signed the etcd members' certificates: needed for `https://` etcd
    /// URLs.
    #[arg(long)]
    etcd_cacert: Option<PathBuf>,
    /// This control plane's client certificate (PEM) for an etcd that requires one
    /// (`--client-cert-auth`).
    #[arg(long, requires = "etcd_key", requires = "etcd_cacert")]
    etcd_cert: Option<PathBuf>,
    /// The private key (PEM) of `--etcd-cert`.
    #[arg(long, requires = "etcd_cert")]
    etcd_key: Option<PathBuf>,
    /// etcd's `--max-txn-ops`: a change of more resources than fit one transaction is refused
    /// before anything is written.
    #[arg(long, default_value_t = EtcdLimits::default().max_txn_ops)]
    etcd_max_txn_ops: usize,
    /// etcd's `--max-request-bytes`: a change larger than one request takes is refused before
    /// anything is written (modules are stored in chunks that fit).
    #[arg(long, default_value_t = EtcdLimits::default().max_request_bytes)]
    etcd_max_request_bytes: usize,
    /// gRPC address gateways connect to.
    #[arg(long, default_value = "127.0.0.1:18000")]
    grpc_address: SocketAddr,
    /// Admin REST API address. Anything but loopback needs `--token`.
    #[arg(long, default_value = "127.0.0.1:9180")]
    admin_address: SocketAddr,
    /// Bearer token every admin API call and every gateway stream must carry.
    #[arg(long, env = "WEIR_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A gateway silent for this long is marked down.
    #[arg(long, default_value = "3s", value_parser = humantime::parse_duration)]
    heartbeat_timeout: Duration,
    /// How often gateways are asked to send a heartbeat.
    #[arg(long, default_value = "1s", value_parser = humantime::parse_duration)]
    heartbeat_interval: Duration,
    /// Revisions the history keeps for `history` and `rollback`; older ones are folded into a
    /// base (on etcd, by the elected control plane). A rollback reaches back this far.
    #[arg(long, default_value_t = weir_control::plane::DEFAULT_HISTORY_LIMIT, value_parser = clap::value_parser!(u64).range(1..))]
    history_limit: u64,
    #[command(flatten)]
    forecast: ForecastArgs,
    /// Serve gRPC and the admin API over TLS with this certificate chain (PEM); gateways then
    /// use `https://` URLs and `--control-plane-ca`, and `weir ctl` an `https://` server and
    /// `--cacert`.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of `--tls-cert`.
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require gateways to present a client certificate issued by this CA (PEM): mutual TLS.
    /// Enough on its own to serve gRPC off loopback.
    #[arg(long, requires = "tls_cert")]
    client_ca: Option<PathBuf>,
}

/// Predictive scaling: how each group's load is forecast and turned into desired replicas
/// (docs/operations.md, "Scaling ahead of the peak").
#[derive(Debug, clap::Args)]
struct ForecastArgs {
    /// One forecast sample per step (the mean of the fleet's reports within it).
    #[arg(long, default_value = "1m", value_parser = humantime::parse_duration)]
    forecast_step: Duration,
    /// The length of the repeating pattern the forecast learns.
    #[arg(long, default_value = "24h", value_parser = humantime::parse_duration)]
    forecast_season: Duration,
    /// How far ahead the desired replica count looks (at least the time a new gateway takes to
    /// serve).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    forecast_horizon: Duration,
    /// Requests/s one gateway serves comfortably: the desired count is the forecast peak over this.
    #[arg(long, default_value_t = 1000.0)]
    gateway_capacity: f64,
    /// The gateway label whose values group the fleet (default: one group, `fleet`).
    #[arg(long)]
    forecast_group_label: Option<String>,
    /// The desired count falls only after this long (the largest count within it wins).
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    scale_down_stabilization: Duration,
    /// Never fewer desired replicas than this.
    #[arg(long, default_value_t = 1)]
    min_replicas: u32,
}

impl ForecastArgs {
    fn settings(&self) -> weir_control::forecast::ForecastSettings {
        weir_control::forecast::ForecastSettings {
            step: self.forecast_step,
            season: self.forecast_season,
            horizon: self.forecast_horizon,
            capacity: self.gateway_capacity,
            group_label: self.forecast_group_label.clone(),
            stabilization: self.scale_down_stabilization,
            min_replicas: self.min_replicas,
        }
    }
}

/// The gRPC TLS config from the flags, or why it cannot be built.
fn grpc_tls(args: &Args) -> Result<Option<tonic::transport::ServerTlsConfig>, String> {
    use tonic::transport::{Certificate, Identity, ServerTlsConfig};
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else { return Ok(None) };
    // A peer that never finishes its handshake must not hold a connection open forever.
    let mut tls = ServerTlsConfig::new()
        .identity(Identity::from_pem(read_flag_file(cert)?, read_flag_file(key)?))
        .timeout(Duration::from_secs(10));
    if let Some(ca) = &args.client_ca {
        tls = tls.client_ca_root(Certificate::from_pem(read_flag_file(ca)?));
    }
    // Building a server with it parses the PEM now, so a bad file fails at start-up.
    tonic::transport::Server::builder()
        .tls_config(tls.clone())
        .map_err(|e| format!("invalid --tls-cert/--tls-key/--client-ca: {e} (PEM files expected)"))?;
    Ok(Some(tls))
}

/// The admin API's TLS: the same certificate as gRPC, loaded as a gateway listener's is (no
/// client certificates: API callers carry the token).
fn admin_tls(args: &Args) -> Result<Option<tokio_rustls::TlsAcceptor>, String> {
    let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) else { return Ok(None) };
    let spec = weir_config::spec::CertificateSpec { cert: cert.display().to_string(), key: key.display().to_string() };
    let tls = weir_gateway::tls::listener_tls(&[spec]).map_err(|e| format!("invalid --tls-cert/--tls-key: {e}"))?;
    Ok(Some(tls.acceptor))
}

/// The etcd store's location and TLS from the flags, or why they do not fit together.
fn etcd_spec(args: &Args, endpoints: &[String]) -> Result<EtcdSpec, String> {
    let secure = endpoints.iter().filter(|u| u.starts_with("https://")).count();
    if secure != 0 && secure != endpoints.len() {
        return Err("use https:// for every etcd URL or for none".into());
    }
    let tls = match (&args.etcd_cacert, secure) {
        (None, 0) => None,
        (None, _) => {
            return Err(
                "the etcd URLs are https://: pass --etcd-cacert with the CA that signed etcd's certificates".into()
            );
        }
        (Some(_), 0) => {
            return Err("--etcd-cacert is for https:// etcd URLs; the --store URLs are http://".into());
        }
        (Some(ca), _) => {
            let identity = match (&args.etcd_cert, &args.etcd_key) {
                (Some(c), Some(k)) => Some((read_flag_file(c)?, read_flag_file(k)?)),
                _ => None,
            };
            Some(EtcdTls { ca: read_flag_file(ca)?, identity })
        }
    };
    let limits = EtcdLimits { max_txn_ops: args.etcd_max_txn_ops, max_request_bytes: args.etcd_max_request_bytes };
    Ok(EtcdSpec { endpoints: endpoints.to_vec(), prefix: args.etcd_prefix.clone(), tls, limits })
}

/// `--store`.
#[derive(Clone, Debug)]
enum StoreArg {
    Redb(PathBuf),
    Etcd(Vec<String>),
}

impl std::fmt::Display for StoreArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Redb(p) => write!(f, "redb:{}", p.display()),
            Self::Etcd(urls) => write!(f, "etcd:{}", urls.join(",")),
        }
    }
}

fn parse_store(s: &str) -> Result<StoreArg, String> {
    match s.split_once(':') {
        Some(("redb", path)) if !path.is_empty() => Ok(StoreArg::Redb(PathBuf::from(path))),
        Some(("etcd", urls)) if !urls.is_empty() => {
            let urls: Vec<String> =
                urls.split(',').map(|u| if u.contains("://") { u.to_owned() } else { format!("http://{u}") }).collect();
            Ok(StoreArg::Etcd(urls))
        }
        _ => Err(format!(
            "{s:?}: expected redb:PATH (e.g. redb:/var/lib/weir/control.redb) or etcd:URL[,URL…] (e.g. etcd:http://10.0.0.1:2379)"
        )),
    }
}

pub(crate) fn run(args: Args) -> ExitCode {
    let no_token = args.token.as_deref().is_none_or(str::is_empty);
    // Client certificates authenticate gateways as a token does.
    let grpc_unauthenticated = no_token && args.client_ca.is_none();
    for (what, addr, open) in
        [("the admin API", args.admin_address, no_token), ("gRPC", args.grpc_address, grpc_unauthenticated)]
    {
        if !addr.ip().is_loopback() && open {
            eprintln!(
                "refusing to serve {what} on {addr} without a token: pass --token (or WEIR_TOKEN; gateways \
                 then need the same --token){}, or listen on 127.0.0.1",
                if what == "gRPC" { " or --client-ca for mutual TLS" } else { "" }
            );
            return ExitCode::FAILURE;
        }
    }
    let (tls, admin_tls) = match (grpc_tls(&args), admin_tls(&args)) {
        (Ok(g), Ok(a)) => (g, a),
        (Err(e), _) | (_, Err(e)) => {
            eprintln!("{e}");
            return ExitCode::FAILURE;
        }
    };
    let opened = match &args.store {
        StoreArg::Redb(path) => Store::open(path).map_err(|e| format!("{e} (is another control plane using it?)")),
        StoreArg::Etcd(endpoints) => {
            etcd_spec(&args, endpoints).and_then(|s| Store::open_etcd(&s).map_err(|e| e.to_string()))
        }
    };
    let store = match opened {
        Ok(s) => s,
        Err(e) => {
            eprintln!("cannot open the store {}: {e}", args.store);
            return ExitCode::FAILURE;
        }
    };
    let rt = match control_runtime() {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    rt.block_on(async move {
        let (grpc, admin) =
            match (TcpListener::bind(args.grpc_address).await, TcpListener::bind(args.admin_address).await) {
                (Ok(g), Ok(a)) => (g, a),
                (Err(e), _) | (_, Err(e)) => {
                    eprintln!(
                        "cannot bind {} / {}: {e} (is another process using the port?)",
                        args.grpc_address, args.admin_address
                    );
                    return ExitCode::FAILURE;
                }
            };
        let revision = store.state().revision;
        let plane = ControlPlane::new(store, args.heartbeat_timeout);
        plane.set_history_limit(args.history_limit);
        plane.set_forecast(args.forecast.settings());
        let (tls_on, mtls) = (tls.is_some(), args.client_ca.is_some());
        tracing::info!(address = %grpc.local_addr().unwrap_or(args.grpc_address), tls = tls_on, mtls, "grpc bound");
        let https = admin_tls.is_some();
        tracing::info!(address = %admin.local_addr().unwrap_or(args.admin_address), tls = https, "admin api bound");
        tracing::info!(store = %args.store, revision, "control plane started");
        let stop = CancellationToken::new();
        let opts = weir_control::ServeOptions {
            token: args.token,
            heartbeat_interval: args.heartbeat_interval,
            grpc_tls: tls,
            admin_tls,
        };
        let server = tokio::spawn(weir_control::serve(plane, grpc, admin, opts, stop.clone()));
        wait_for_signal().await;
        tracing::info!("shutting down");
        stop.cancel();
        match tokio::time::timeout(Duration::from_secs(5), server).await {
            Ok(Ok(Err(e))) => {
                eprintln!("control plane failed: {e}");
                ExitCode::FAILURE
            }
            _ => ExitCode::SUCCESS,
        }
    })
}
