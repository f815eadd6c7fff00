//! Certificates: loading the configured ones, generating a self-signed one
//! per domain on first start when none is configured, and picking the right
//! one by SNI. One crypto provider only (aws-lc-rs), passed explicitly so a
//! second provider pulled in by some dependency can never make rustls panic.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use crate::config::Config;

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path}: no certificate found in the PEM file")]
    NoCertificate { path: PathBuf },
    #[error("{path}: {message}")]
    Pem { path: PathBuf, message: String },
    #[error("certificate for {domain}: {message}")]
    Key { domain: String, message: String },
    #[error("generating a self-signed certificate for {domain}: {message}")]
    Generate { domain: String, message: String },
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
}

/// The process's crypto provider.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::aws_lc_rs::default_provider())
}

/// Installs aws-lc-rs as the process default, for libraries that build
/// rustls configs without a provider. Harmless when already installed.
pub fn install_default_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

/// Certificates by local domain, chosen by SNI.
#[derive(Debug)]
pub struct CertStore {
    by_domain: Vec<(String, Arc<CertifiedKey>)>,
}

impl CertStore {
    /// Loads `[[tls.certificate]]` entries and generates (or reuses) a
    /// self-signed certificate under `data_dir/certs/` for every local domain
    /// that has none configured.
    pub fn load(config: &Config) -> Result<CertStore, TlsError> {
        let provider = provider();
        let mut by_domain = Vec::new();
        for domain in &config.server.domains {
            let configured = config.tls.certificates.iter().find(|c| &c.domain == domain);
            let (cert_path, key_path) = match configured {
                Some(c) => (c.cert.clone(), c.key.clone()),
                None => ensure_self_signed(&config.server.data_dir, domain)?,
            };
            let ck = load_certified_key(&cert_path, &key_path, domain, &provider)?;
            by_domain.push((domain.clone(), Arc::new(ck)));
        }
        Ok(CertStore { by_domain })
    }

    pub fn for_domain(&self, domain: &str) -> Option<Arc<CertifiedKey>> {
        self.by_domain
            .iter()
            .find(|(d, _)| d.eq_ignore_ascii_case(domain))
            .map(|(_, k)| k.clone())
    }

    /// The rustls server config for client-to-server STARTTLS.
    pub fn server_config(self: &Arc<Self>) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        let cfg = rustls::ServerConfig::builder_with_provider(provider())
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_cert_resolver(Arc::new(SniResolver(self.clone())));
        Ok(Arc::new(cfg))
    }
}

#[derive(Debug)]
struct SniResolver(Arc<CertStore>);

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        match hello.server_name() {
            Some(name) => self.0.for_domain(name),
            // No SNI: the first domain's certificate, which is what a
            // single-domain deployment wants.
            None => self.0.by_domain.first().map(|(_, k)| k.clone()),
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn load_certified_key(
    cert_path: &Path,
    key_path: &Path,
    domain: &str,
    provider: &CryptoProvider,
) -> Result<CertifiedKey, TlsError> {
    let cert_pem = fs::read(cert_path).map_err(io_err(cert_path))?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&cert_pem)
        .collect::<Result<_, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.to_path_buf(),
            message: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: cert_path.to_path_buf(),
        });
    }
    let key_pem = fs::read(key_path).map_err(io_err(key_path))?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem).map_err(|e| TlsError::Pem {
        path: key_path.to_path_buf(),
        message: e.to_string(),
    })?;
    CertifiedKey::from_der(chain, key, provider).map_err(|e| TlsError::Key {
        domain: domain.to_string(),
        message: e.to_string(),
    })
}

/// Paths of the generated certificate for `domain`, generating it the first
/// time. The key file is written with mode 0600.
pub fn ensure_self_signed(data_dir: &Path, domain: &str) -> Result<(PathBuf, PathBuf), TlsError> {
    let dir = data_dir.join("certs");
    let cert_path = dir.join(format!("{domain}.crt"));
    let key_path = dir.join(format!("{domain}.key"));
    if cert_path.exists() && key_path.exists() {
        return Ok((cert_path, key_path));
    }
    fs::create_dir_all(&dir).map_err(io_err(&dir))?;
    let gen_err = |e: rcgen::Error| TlsError::Generate {
        domain: domain.to_string(),
        message: e.to_string(),
    };
    let key = rcgen::KeyPair::generate().map_err(gen_err)?;
    let mut params = rcgen::CertificateParams::new(vec![domain.to_string()]).map_err(gen_err)?;
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, domain.to_string());
    params.extended_key_usages = vec![
        rcgen::ExtendedKeyUsagePurpose::ServerAuth,
        rcgen::ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.self_signed(&key).map_err(gen_err)?;
    write_private(&key_path, key.serialize_pem().as_bytes())?;
    fs::write(&cert_path, cert.pem()).map_err(io_err(&cert_path))?;
    crate::events::tls::SelfSignedGenerated {
        domain,
        path: &cert_path,
    }
    .emit();
    Ok((cert_path, key_path))
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut opts = fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    let mut f = opts.open(path).map_err(io_err(path))?;
    f.write_all(data).map_err(io_err(path))
}
