//! Who we are to federation peers and how we check who they are: our
//! certificates and the TLS configurations built from them, the verifier
//! of peer certificates (RFC 6125), and the dialback secret (XEP-0185).
//! Built once at start; the negotiations read it, nothing writes it.

use std::collections::HashMap;
use std::sync::Arc;

use crate::pki::PeerVerifier;
use crate::tls::CertStore;

pub struct Identity {
    pub verifier: Arc<PeerVerifier>,
    pub certs: Arc<CertStore>,
    /// Outbound TLS client configs, one per local domain (each presents
    /// that domain's certificate for SASL EXTERNAL).
    pub client_tls: HashMap<String, Arc<rustls::ClientConfig>>,
    pub server_tls: Arc<rustls::ServerConfig>,
    /// The XEP-0185 dialback secret (from `dialback_passphrase`, or random
    /// per start).
    pub secret: Arc<[u8]>,
}
