//! Peer certificates on s2s links (RFC 6120 §13.7, RFC 6125, XEP-0178).
//!
//! This module owns the trust anchors and the question "is this chain good
//! for that domain?". It never fails a TLS handshake over a certificate:
//! both TLS configs built here accept any peer certificate whose handshake
//! signature verifies, and the stream layer asks [`PeerVerifier::verify`]
//! (or a [`PeerIdentity`]) afterwards, so that an untrusted peer can still
//! be authenticated with dialback instead of being cut off (ejabberd #2030).
//!
//! Identity: a dNSName SAN (RFC 6125 wildcards: `*` only as the whole
//! left-most label, matching exactly one label) or an id-on-xmppAddr
//! otherName SAN (exact match). The subject CN is never used. The chain
//! must reach a trust anchor and be valid now; the certificate purpose is
//! not enforced beyond "serverAuth or clientAuth or none", because Let's
//! Encrypt no longer issues clientAuth and Prosody/ejabberd ignore it.
//!
//! Not handled: SRV-IDs (`_xmpp-server.example`), IDNA U-label/A-label
//! conversion (domains are compared as given, ASCII case-insensitively),
//! revocation, DANE and POSH.

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, verify_server_cert_signed_by_trust_anchor};
use rustls::crypto::{CryptoProvider, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::server::{ParsedCertificate, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, DigitallySignedStruct, DistinguishedName, RootCertStore, SignatureScheme,
};
use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};

use crate::events;
use crate::tls::{CertStore, TlsError, provider};

/// id-on-xmppAddr, RFC 6120 §13.7.1.4.
const XMPP_ADDR_OID: &str = "1.3.6.1.5.5.7.8.5";

/// How many per-domain answers one [`PeerIdentity`] remembers; a peer that
/// claims more domains than this (multiplexing) is re-checked each time.
const IDENTITY_CACHE_MAX: usize = 64;

/// What the stream layer knows about an authenticated-by-certificate peer
/// (defined with the negotiation machines that consume it).
pub use crate::stream::s2s::PeerIdentity;

/// Why a peer certificate does not authenticate a domain.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdentityError {
    #[error("the peer presented no certificate")]
    NoCertificate,
    #[error("certificate not trusted: {0}")]
    Untrusted(String),
    #[error("certificate expired")]
    Expired,
    #[error("certificate is not valid for {domain} (it names {})", names.join(", "))]
    NameMismatch { domain: String, names: Vec<String> },
    #[error("certificate cannot be parsed: {0}")]
    BadEncoding(String),
}

/// Trust anchors plus the TLS configs of the s2s listener and dialer.
pub struct PeerVerifier {
    roots: Arc<RootCertStore>,
    provider: Arc<CryptoProvider>,
    /// Chain check for clientAuth-only certificates (see `verify_chain`);
    /// `None` when there are no roots at all.
    client_purpose: Option<Arc<dyn ClientCertVerifier>>,
    /// Outbound config without a client certificate; cloned per call.
    client_base: rustls::ClientConfig,
}

impl fmt::Debug for PeerVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PeerVerifier")
            .field("roots", &self.roots.len())
            .finish_non_exhaustive()
    }
}

impl PeerVerifier {
    /// Trust anchors: the system roots unless `use_system_roots` is false (a
    /// missing or empty system store just means no system roots), plus every
    /// certificate in the PEM file `ca_file`.
    pub fn new(ca_file: Option<&Path>, use_system_roots: bool) -> Result<PeerVerifier, TlsError> {
        let mut roots = RootCertStore::empty();
        if use_system_roots {
            let native = rustls_native_certs::load_native_certs();
            for e in &native.errors {
                events::pki::TrustStoreReadFailed { error: e }.emit();
            }
            let (added, ignored) = roots.add_parsable_certificates(native.certs);
            events::pki::SystemTrustAnchors { added, ignored }.emit();
        }
        if let Some(path) = ca_file {
            let pem_err = |message: String| TlsError::Pem {
                path: path.to_path_buf(),
                message,
            };
            let pem = std::fs::read(path).map_err(|source| TlsError::Io {
                path: path.to_path_buf(),
                source,
            })?;
            let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
                .collect::<Result<_, _>>()
                .map_err(|e| pem_err(e.to_string()))?;
            if certs.is_empty() {
                return Err(TlsError::NoCertificate {
                    path: path.to_path_buf(),
                });
            }
            for c in certs {
                roots.add(c).map_err(|e| pem_err(e.to_string()))?;
            }
        }
        Self::with_roots(roots)
    }

    /// A verifier over exactly these anchors (tests, pinned deployments).
    pub fn with_roots(roots: RootCertStore) -> Result<PeerVerifier, TlsError> {
        let provider = provider();
        let roots = Arc::new(roots);
        let client_purpose = if roots.is_empty() {
            None
        } else {
            let v = WebPkiClientVerifier::builder_with_provider(roots.clone(), provider.clone())
                .build()
                .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
            Some(v)
        };
        let accept_any = Arc::new(AcceptAnyServerCert {
            algs: provider.signature_verification_algorithms,
        });
        let client_base = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()?
            .dangerous()
            .with_custom_certificate_verifier(accept_any)
            .with_no_client_auth();
        Ok(PeerVerifier {
            roots,
            provider,
            client_purpose,
            client_base,
        })
    }

    /// Number of trust anchors.
    pub fn root_count(&self) -> usize {
        self.roots.len()
    }

    /// Does `chain` (leaf first) authenticate `domain`? Checks, in order:
    /// chain to an anchor and validity now, then the name.
    pub fn verify(&self, chain: &[CertificateDer<'_>], domain: &str) -> Result<(), IdentityError> {
        self.verify_chain(chain)?;
        let names = CertNames::parse(&chain[0])?;
        check_name(&chain[0], &names, domain)
    }

    /// The domain-independent half of [`verify`](Self::verify).
    fn verify_chain(&self, chain: &[CertificateDer<'_>]) -> Result<(), IdentityError> {
        let Some((ee, intermediates)) = chain.split_first() else {
            return Err(IdentityError::NoCertificate);
        };
        let parsed = ParsedCertificate::try_from(ee)
            .map_err(|e| IdentityError::BadEncoding(e.to_string()))?;
        let now = UnixTime::now();
        let res = verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        );
        match res {
            Ok(()) => Ok(()),
            // A clientAuth-only certificate: still a fine s2s identity (the
            // peer is a client of ours on this link); check the chain with
            // the clientAuth purpose instead.
            Err(rustls::Error::InvalidCertificate(
                CertificateError::InvalidPurpose | CertificateError::InvalidPurposeContext { .. },
            )) if self
                .client_purpose
                .as_ref()
                .is_some_and(|v| v.verify_client_cert(ee, intermediates, now).is_ok()) =>
            {
                Ok(())
            }
            Err(e) => Err(map_chain_error(e)),
        }
    }

    /// The peer's chain after a handshake, as a [`PeerIdentity`]: the chain
    /// is checked once, names per domain, answers cached.
    pub fn identity(
        self: &Arc<Self>,
        chain: Vec<CertificateDer<'static>>,
    ) -> Arc<dyn PeerIdentity> {
        Arc::new(self.cert_identity(chain))
    }

    /// Like [`identity`](Self::identity), keeping the concrete type so the
    /// caller can get the reason of a failure.
    pub fn cert_identity(self: &Arc<Self>, chain: Vec<CertificateDer<'static>>) -> CertIdentity {
        CertIdentity {
            verifier: self.clone(),
            chain,
            chain_ok: OnceLock::new(),
            names: OnceLock::new(),
            by_domain: Mutex::new(HashMap::new()),
        }
    }

    /// Outbound s2s: presents `our_cert` (for SASL EXTERNAL) when the server
    /// asks, and completes the handshake whatever the server's certificate
    /// (its handshake signature is still verified); call
    /// [`verify`](Self::verify) on `peer_certificates()` afterwards. No ALPN.
    pub fn client_config(&self, our_cert: Option<Arc<CertifiedKey>>) -> Arc<rustls::ClientConfig> {
        let mut cfg = self.client_base.clone();
        if let Some(ck) = our_cert {
            cfg.client_auth_cert_resolver = Arc::new(FixedClientCert(ck));
        }
        Arc::new(cfg)
    }

    /// Inbound s2s: our certificate by SNI from `certs` (the first domain's
    /// without SNI); requests a client certificate without requiring it and
    /// accepts any (signature checked). Verify `peer_certificates()` against
    /// the stream's `from` afterwards.
    pub fn server_config(
        &self,
        certs: Arc<CertStore>,
    ) -> Result<Arc<rustls::ServerConfig>, TlsError> {
        // CertStore's own config carries its (private) SNI resolver, which
        // already falls back to the first domain without SNI; reuse it.
        let resolver = certs.server_config()?.cert_resolver.clone();
        let verifier = Arc::new(AcceptAnyClientCert {
            algs: self.provider.signature_verification_algorithms,
        });
        let cfg = rustls::ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()?
            .with_client_cert_verifier(verifier)
            .with_cert_resolver(resolver);
        Ok(Arc::new(cfg))
    }
}

fn map_chain_error(e: rustls::Error) -> IdentityError {
    match e {
        rustls::Error::InvalidCertificate(ce) => match ce {
            CertificateError::Expired | CertificateError::ExpiredContext { .. } => {
                IdentityError::Expired
            }
            CertificateError::BadEncoding => IdentityError::BadEncoding("bad DER".into()),
            CertificateError::UnknownIssuer => {
                IdentityError::Untrusted("issuer is not a trust anchor".into())
            }
            other => IdentityError::Untrusted(rustls::Error::InvalidCertificate(other).to_string()),
        },
        other => IdentityError::Untrusted(other.to_string()),
    }
}

/// The identities a leaf claims, read with x509-parser.
#[derive(Debug, Clone, Default)]
struct CertNames {
    dns: Vec<String>,
    xmpp_addrs: Vec<String>,
}

impl CertNames {
    fn parse(ee: &CertificateDer<'_>) -> Result<CertNames, IdentityError> {
        let (_, cert) = X509Certificate::from_der(ee.as_ref())
            .map_err(|e| IdentityError::BadEncoding(e.to_string()))?;
        let mut names = CertNames::default();
        let san = cert
            .subject_alternative_name()
            .map_err(|e| IdentityError::BadEncoding(e.to_string()))?;
        let Some(san) = san else { return Ok(names) };
        for gn in &san.value.general_names {
            match gn {
                GeneralName::DNSName(d) => names.dns.push(d.to_string()),
                GeneralName::OtherName(oid, raw) if oid.to_id_string() == XMPP_ADDR_OID => {
                    match decode_xmpp_addr(raw) {
                        Some(a) => names.xmpp_addrs.push(a),
                        // One bad entry must not hide the good ones.
                        None => events::pki::UndecodableXmppAddr.emit(),
                    }
                }
                _ => {}
            }
        }
        Ok(names)
    }

    /// Every name, dNSNames first, without duplicates.
    fn all(&self) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for n in self.dns.iter().chain(&self.xmpp_addrs) {
            if !out.iter().any(|o| o.eq_ignore_ascii_case(n)) {
                out.push(n.clone());
            }
        }
        out
    }
}

/// The otherName value as x509-parser hands it over: `[0] EXPLICIT`
/// wrapping a UTF8String.
fn decode_xmpp_addr(raw: &[u8]) -> Option<String> {
    use x509_parser::asn1_rs::{Any, Class, Tag};
    let (_, outer) = Any::from_der(raw).ok()?;
    if outer.class() != Class::ContextSpecific || outer.tag() != Tag(0) {
        return None;
    }
    let (_, inner) = Any::from_der(outer.data).ok()?;
    if inner.tag() != Tag::Utf8String {
        return None;
    }
    std::str::from_utf8(inner.data).ok().map(str::to_owned)
}

fn normalize(domain: &str) -> String {
    domain.trim_end_matches('.').to_ascii_lowercase()
}

/// dNSName via webpki (RFC 6125 wildcard rules, no CN), then xmppAddr by
/// exact, ASCII case-insensitive comparison (no wildcards in xmppAddr).
fn check_name(
    ee: &CertificateDer<'_>,
    names: &CertNames,
    domain: &str,
) -> Result<(), IdentityError> {
    let wanted = normalize(domain);
    if !wanted.is_empty() {
        if let Ok(server_name) = ServerName::try_from(wanted.as_str()) {
            let parsed = ParsedCertificate::try_from(ee)
                .map_err(|e| IdentityError::BadEncoding(e.to_string()))?;
            if rustls::client::verify_server_name(&parsed, &server_name).is_ok() {
                return Ok(());
            }
        }
        if names.xmpp_addrs.iter().any(|a| normalize(a) == wanted) {
            return Ok(());
        }
    }
    Err(IdentityError::NameMismatch {
        domain: domain.to_string(),
        names: names.all(),
    })
}

/// A peer's certificate chain with memoised answers; see
/// [`PeerVerifier::identity`].
pub struct CertIdentity {
    verifier: Arc<PeerVerifier>,
    chain: Vec<CertificateDer<'static>>,
    chain_ok: OnceLock<Result<(), IdentityError>>,
    names: OnceLock<Result<CertNames, IdentityError>>,
    by_domain: Mutex<HashMap<String, Result<(), IdentityError>>>,
}

impl CertIdentity {
    /// Same answer as [`PeerVerifier::verify`] for this chain.
    pub fn check(&self, domain: &str) -> Result<(), IdentityError> {
        let key = normalize(domain);
        if let Some(r) = self.cache().get(&key) {
            return r.clone();
        }
        let r = self.compute(domain);
        let mut cache = self.cache();
        if cache.len() < IDENTITY_CACHE_MAX {
            cache.insert(key, r.clone());
        }
        r
    }

    fn compute(&self, domain: &str) -> Result<(), IdentityError> {
        self.chain_ok
            .get_or_init(|| self.verifier.verify_chain(&self.chain))
            .clone()?;
        let names = self.names().clone()?;
        check_name(&self.chain[0], &names, domain)
    }

    fn names(&self) -> &Result<CertNames, IdentityError> {
        self.names.get_or_init(|| match self.chain.first() {
            Some(ee) => CertNames::parse(ee),
            None => Err(IdentityError::NoCertificate),
        })
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Result<(), IdentityError>>> {
        // The map holds plain values; a panic elsewhere cannot leave it
        // half-updated, so a poisoned lock is still usable.
        self.by_domain.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl PeerIdentity for CertIdentity {
    fn is_valid_for(&self, domain: &str) -> bool {
        self.check(domain).is_ok()
    }

    fn describe(&self) -> String {
        match self.names() {
            Ok(n) => format!("certificate for {}", n.all().join(", ")),
            Err(e) => e.to_string(),
        }
    }
}

impl fmt::Debug for CertIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertIdentity")
            .field("describe", &self.describe())
            .finish_non_exhaustive()
    }
}

/// A verifier that completes the handshake whatever the server's
/// certificate (signatures are still checked): for s2s, where identity is
/// judged afterwards, and for the test client's `TlsTrust::Insecure`.
pub fn accept_any_server_cert() -> Arc<dyn ServerCertVerifier> {
    Arc::new(AcceptAnyServerCert {
        algs: crate::tls::provider().signature_verification_algorithms,
    })
}

/// Completes the handshake whatever the server's certificate; the
/// identity is judged afterwards (see the module docs).
#[derive(Debug)]
struct AcceptAnyServerCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AcceptAnyServerCert {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Asks for a client certificate, never requires one, accepts any whose
/// handshake signature verifies.
#[derive(Debug)]
struct AcceptAnyClientCert {
    algs: WebPkiSupportedAlgorithms,
}

impl ClientCertVerifier for AcceptAnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        // No hints: a peer should send whatever certificate it has.
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algs)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algs)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algs.supported_schemes()
    }
}

/// Presents the same certificate to every server that asks.
#[derive(Debug)]
struct FixedClientCert(Arc<CertifiedKey>);

impl ResolvesClientCert for FixedClientCert {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}
