//! TLS: the listener side (certificates chosen by SNI, reloaded when their files change) and
//! the upstream side (HTTPS and mTLS connectors).
//!
//! One crypto provider in the tree: aws-lc-rs. TLS 1.2 and 1.3 only; ALPN offers `h2` and
//! `http/1.1`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arc_swap::ArcSwap;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, pem::PemObject};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use weir_config::spec::{CertificateSpec, UpstreamTlsSpec};

/// Why certificates or keys could not be used.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    /// A file could not be read or parsed.
    #[error("{path}: {reason}")]
    File {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
    /// rustls refused the configuration.
    #[error("tls: {0}")]
    Rustls(#[from] rustls::Error),
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

fn file_err(path: &Path, reason: impl std::fmt::Display) -> TlsError {
    TlsError::File { path: path.into(), reason: reason.to_string() }
}

/// Where an inline PEM value is said to come from in errors.
const INLINE: &str = "(inline PEM)";

/// A certificate chain from a file or from inline PEM text.
fn certs_of(value: &str) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    if !CertificateSpec::is_inline(value) {
        return load_certs(Path::new(value));
    }
    let inline = Path::new(INLINE);
    let certs: Vec<_> =
        CertificateDer::pem_slice_iter(value.as_bytes()).collect::<Result<_, _>>().map_err(|e| file_err(inline, e))?;
    if certs.is_empty() {
        return Err(file_err(inline, "no certificate in the PEM text"));
    }
    Ok(certs)
}

/// A private key from a file or from inline PEM text.
fn key_of(value: &str) -> Result<PrivateKeyDer<'static>, TlsError> {
    if !CertificateSpec::is_inline(value) {
        return load_key(Path::new(value));
    }
    PrivateKeyDer::from_pem_slice(value.as_bytes())
        .map_err(|e| file_err(Path::new(INLINE), format!("no usable private key: {e}")))
}

fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs: Vec<_> = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_err(path, e))?
        .collect::<Result<_, _>>()
        .map_err(|e| file_err(path, e))?;
    if certs.is_empty() {
        return Err(file_err(path, "no certificate in the file (expected PEM `BEGIN CERTIFICATE`)"));
    }
    Ok(certs)
}

fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_err(path, format!("no usable private key: {e}")))
}

/// Names a certificate is valid for (DNS SANs, else the subject CN), lower-cased.
fn cert_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok((_, cert)) = x509_parser::parse_x509_certificate(der.as_ref()) else { return Vec::new() };
    let mut names: Vec<String> = match cert.subject_alternative_name() {
        Ok(Some(san)) => san
            .value
            .general_names
            .iter()
            .filter_map(|g| match g {
                x509_parser::extensions::GeneralName::DNSName(n) => Some(n.to_ascii_lowercase()),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    if names.is_empty() {
        names.extend(cert.subject().iter_common_name().filter_map(|cn| cn.as_str().ok()).map(str::to_ascii_lowercase));
    }
    names
}

/// Certificates by SNI name: exact names, then `*.suffix` wildcards, then the default.
#[derive(Debug)]
struct SniTable {
    exact: HashMap<String, Arc<CertifiedKey>>,
    /// Keyed by the suffix after `*` (e.g. `.example.com`).
    wildcard: HashMap<String, Arc<CertifiedKey>>,
    default: Arc<CertifiedKey>,
}

impl SniTable {
    fn load(specs: &[CertificateSpec]) -> Result<Self, TlsError> {
        let provider = provider();
        let mut exact = HashMap::new();
        let mut wildcard = HashMap::new();
        let mut default = None;
        for s in specs {
            let certs = certs_of(&s.cert)?;
            let key = key_of(&s.key)?;
            let names = cert_names(&certs[0]);
            let key_name = if CertificateSpec::is_inline(&s.key) { INLINE } else { s.key.as_str() };
            let ck =
                Arc::new(CertifiedKey::from_der(certs, key, &provider).map_err(|e| file_err(Path::new(key_name), e))?);
            for n in names {
                match n.strip_prefix('*') {
                    Some(suffix) => wildcard.entry(suffix.to_owned()).or_insert_with(|| ck.clone()),
                    None => exact.entry(n).or_insert_with(|| ck.clone()),
                };
            }
            default.get_or_insert(ck);
        }
        let default = default.ok_or_else(|| file_err(Path::new("certificates"), "no certificate given"))?;
        Ok(Self { exact, wildcard, default })
    }

    fn pick(&self, sni: Option<&str>) -> Arc<CertifiedKey> {
        let Some(name) = sni.map(str::to_ascii_lowercase) else { return self.default.clone() };
        if let Some(ck) = self.exact.get(&name) {
            return ck.clone();
        }
        // `*.example.com` covers exactly one more label.
        if let Some(dot) = name.find('.')
            && let Some(ck) = self.wildcard.get(&name[dot..])
        {
            return ck.clone();
        }
        self.default.clone()
    }
}

/// The SNI resolver of one listener; [`CertResolver::reload`] swaps its table atomically.
#[derive(Debug)]
pub struct CertResolver {
    specs: Vec<CertificateSpec>,
    table: ArcSwap<SniTable>,
}

impl CertResolver {
    /// Files this resolver reads, to watch for changes (inline PEM values are not files).
    pub fn files(&self) -> impl Iterator<Item = &str> {
        self.specs.iter().flat_map(|s| [s.cert.as_str(), s.key.as_str()]).filter(|v| !CertificateSpec::is_inline(v))
    }

    /// Re-reads every file; on error keeps the current certificates.
    pub fn reload(&self) -> Result<(), TlsError> {
        self.table.store(Arc::new(SniTable::load(&self.specs)?));
        Ok(())
    }
}

impl ResolvesServerCert for CertResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.table.load().pick(hello.server_name()))
    }
}

/// A listener's TLS setup: the rustls config and its resolver (for reloads).
#[derive(Clone)]
pub struct ListenerTls {
    /// Used to accept connections.
    pub acceptor: tokio_rustls::TlsAcceptor,
    /// Reload handle.
    pub resolver: Arc<CertResolver>,
}

impl std::fmt::Debug for ListenerTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerTls").field("resolver", &self.resolver).finish_non_exhaustive()
    }
}

/// Loads a listener's certificates and builds its TLS config.
pub fn listener_tls(specs: &[CertificateSpec]) -> Result<ListenerTls, TlsError> {
    let resolver =
        Arc::new(CertResolver { specs: specs.to_vec(), table: ArcSwap::from_pointee(SniTable::load(specs)?) });
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_no_client_auth()
        .with_cert_resolver(resolver.clone());
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(ListenerTls { acceptor: tokio_rustls::TlsAcceptor::from(Arc::new(cfg)), resolver })
}

/// A connector for an upstream's endpoints.
#[derive(Clone)]
pub struct UpstreamTls {
    /// Connects.
    pub connector: tokio_rustls::TlsConnector,
    /// SNI and verified name; `None` = use the endpoint address.
    pub sni: Option<ServerName<'static>>,
}

impl std::fmt::Debug for UpstreamTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UpstreamTls(sni={:?})", self.sni)
    }
}

/// Builds the TLS client config of an upstream (`h2` in ALPN when it speaks HTTP/2).
pub fn upstream_tls(spec: &UpstreamTlsSpec, h2: bool) -> Result<UpstreamTls, TlsError> {
    let cfg = client_config(spec, h2)?;
    let sni = match &spec.sni {
        Some(s) => Some(ServerName::try_from(s.clone()).map_err(|e| file_err(Path::new("sni"), e))?),
        None => None,
    };
    Ok(UpstreamTls { connector: tokio_rustls::TlsConnector::from(Arc::new(cfg)), sni })
}

/// The rustls client config `spec` describes: trusted roots (or none checked, for tests), a
/// client certificate, and ALPN (`h2`, or `http/1.1`).
pub fn client_config(spec: &UpstreamTlsSpec, h2: bool) -> Result<rustls::ClientConfig, TlsError> {
    let provider = provider();
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?;
    let builder = if spec.insecure_skip_verify {
        builder.dangerous().with_custom_certificate_verifier(insecure_verifier(provider))
    } else {
        let path = spec.ca.as_deref().unwrap_or("/etc/ssl/certs/ca-certificates.crt");
        let mut roots = rustls::RootCertStore::empty();
        for c in load_certs(Path::new(path))? {
            roots.add(c).map_err(|e| file_err(Path::new(path), e))?;
        }
        builder.with_root_certificates(roots)
    };
    let mut cfg = match (&spec.client_cert, &spec.client_key) {
        (Some(c), Some(k)) => builder.with_client_auth_cert(load_certs(Path::new(c))?, load_key(Path::new(k))?)?,
        _ => builder.with_no_client_auth(),
    };
    cfg.alpn_protocols = if h2 { vec![b"h2".to_vec()] } else { vec![b"http/1.1".to_vec()] };
    Ok(cfg)
}

/// A client config that trusts no certificate: for a client that speaks plain HTTP but is
/// typed for HTTPS, so that TLS through it could only fail.
pub fn untrusting_client_config() -> Result<rustls::ClientConfig, TlsError> {
    Ok(rustls::ClientConfig::builder_with_provider(provider())
        .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])?
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth())
}

/// A verifier that accepts any certificate (still checking handshake signatures): for
/// `insecure_skip_verify` and `weir loadtest --insecure`, never a default.
pub fn insecure_verifier(provider: Arc<CryptoProvider>) -> Arc<dyn rustls::client::danger::ServerCertVerifier> {
    Arc::new(insecure::NoVerify(provider))
}

mod insecure {
    //! `insecure_skip_verify`: accept any upstream certificate, still checking signatures.
    use std::sync::Arc;

    use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
    use rustls::crypto::CryptoProvider;
    use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
    use rustls::{DigitallySignedStruct, Error, SignatureScheme};

    #[derive(Debug)]
    pub(super) struct NoVerify(pub(super) Arc<CryptoProvider>);

    impl ServerCertVerifier for NoVerify {
        fn verify_server_cert(
            &self,
            _: &CertificateDer<'_>,
            _: &[CertificateDer<'_>],
            _: &ServerName<'_>,
            _: &[u8],
            _: UnixTime,
        ) -> Result<ServerCertVerified, Error> {
            Ok(ServerCertVerified::assertion())
        }
        fn verify_tls12_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls12_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn verify_tls13_signature(
            &self,
            m: &[u8],
            c: &CertificateDer<'_>,
            d: &DigitallySignedStruct,
        ) -> Result<HandshakeSignatureValid, Error> {
            rustls::crypto::verify_tls13_signature(m, c, d, &self.0.signature_verification_algorithms)
        }
        fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
            self.0.signature_verification_algorithms.supported_schemes()
        }
    }
}
