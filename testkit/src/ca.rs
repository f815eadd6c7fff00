//! A test certificate authority: issues leaf certificates with dNSName and
//! id-on-xmppAddr SANs, with the EKUs and validity periods the s2s identity
//! tests need (serverAuth-only, expired, xmppAddr-only, wildcards).

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DistinguishedName, DnType,
    ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose, OtherNameValue, SanType,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// id-on-xmppAddr (RFC 6120 §13.7.1.4).
const XMPP_ADDR_OID: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];

/// Which extended key usages a leaf carries.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Eku {
    /// serverAuth and clientAuth, what most s2s certificates had until 2026.
    #[default]
    ServerAndClient,
    /// serverAuth only, what Let's Encrypt issues since it dropped clientAuth.
    ServerOnly,
    /// clientAuth only.
    ClientOnly,
    /// No EKU extension at all (any purpose).
    None,
}

/// What to put in a leaf issued by [`TestCa::issue_with`].
#[derive(Debug, Clone, Default)]
pub struct LeafOptions {
    /// dNSName SANs (wildcards such as `*.a.test` allowed).
    pub dns_names: Vec<String>,
    /// id-on-xmppAddr otherName SANs.
    pub xmpp_addrs: Vec<String>,
    /// Subject CN; identity checks must ignore it.
    pub common_name: Option<String>,
    pub eku: Eku,
    /// Valid from two years ago until yesterday.
    pub expired: bool,
    /// Valid for this many days from yesterday instead of a year
    /// (ejabberd 23.01 fails on certificates valid for more than ~49).
    pub valid_days: Option<i64>,
}

impl LeafOptions {
    /// dNSName and xmppAddr for each domain, both EKUs, valid for a year:
    /// what [`TestCa::issue`] uses.
    pub fn for_domains(domains: &[&str]) -> LeafOptions {
        LeafOptions {
            dns_names: domains.iter().map(|d| d.to_string()).collect(),
            xmpp_addrs: domains.iter().map(|d| d.to_string()).collect(),
            ..LeafOptions::default()
        }
    }
}

/// A leaf certificate and its private key, PEM-encoded.
#[derive(Debug, Clone)]
pub struct Leaf {
    pub cert_pem: String,
    pub key_pem: String,
}

impl Leaf {
    /// Writes `stem.crt` and `stem.key` (mode 0600) into `dir`.
    ///
    /// # Panics
    /// When the files cannot be written: this is a test helper.
    pub fn write(&self, dir: &Path, stem: &str) -> (PathBuf, PathBuf) {
        let cert = dir.join(format!("{stem}.crt"));
        let key = dir.join(format!("{stem}.key"));
        std::fs::write(&cert, &self.cert_pem).expect("write test certificate");
        write_private(&key, self.key_pem.as_bytes()).expect("write test key");
        (cert, key)
    }

    /// Certificate followed by key in one PEM file, the form ejabberd's
    /// `certfiles` and Prosody's combined files accept.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        CertificateDer::from_pem_slice(self.cert_pem.as_bytes()).expect("leaf PEM we generated")
    }

    pub fn key_der(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key PEM we generated")
    }

    /// The leaf as a rustls signing identity (chain = the leaf alone).
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        let ck = CertifiedKey::from_der(
            vec![self.cert_der()],
            self.key_der(),
            &fedrouter::tls::provider(),
        )
        .expect("generated key matches generated certificate");
        Arc::new(ck)
    }
}

/// A throw-away CA. Keys are ECDSA P-256 and live only in memory.
pub struct TestCa {
    issuer: CertifiedIssuer<'static, KeyPair>,
}

impl std::fmt::Debug for TestCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestCa").finish_non_exhaustive()
    }
}

impl TestCa {
    /// A self-signed CA certificate with CN `name`.
    ///
    /// # Panics
    /// When key generation fails (never with aws-lc-rs).
    pub fn new(name: &str) -> TestCa {
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, -1, 3650);
        let key = KeyPair::generate().expect("generate CA key");
        let issuer = CertifiedIssuer::self_signed(params, key).expect("self-sign CA");
        TestCa { issuer }
    }

    pub fn cert_pem(&self) -> String {
        self.issuer.pem()
    }

    pub fn cert_der(&self) -> CertificateDer<'static> {
        self.issuer.der().clone()
    }

    /// Writes the CA certificate as `name.pem` into `dir` (a `ca_file`).
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let p = dir.join(format!("{name}.pem"));
        std::fs::write(&p, self.cert_pem()).expect("write test CA");
        p
    }

    /// dNSName and id-on-xmppAddr SAN for each domain, serverAuth and
    /// clientAuth, valid for one year.
    pub fn issue(&self, domains: &[&str]) -> Leaf {
        self.issue_with(LeafOptions::for_domains(domains))
    }

    pub fn issue_with(&self, opts: LeafOptions) -> Leaf {
        let key = KeyPair::generate().expect("generate leaf key");
        let cert = leaf_params(&opts)
            .signed_by(&key, &self.issuer)
            .expect("sign leaf");
        Leaf {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
        }
    }
}

/// A self-signed leaf with dNSName and xmppAddr SANs for each domain, the
/// kind a fresh server generates for itself.
pub fn self_signed(domains: &[&str]) -> Leaf {
    let key = KeyPair::generate().expect("generate leaf key");
    let cert = leaf_params(&LeafOptions::for_domains(domains))
        .self_signed(&key)
        .expect("self-sign leaf");
    Leaf {
        cert_pem: cert.pem(),
        key_pem: key.serialize_pem(),
    }
}

fn leaf_params(opts: &LeafOptions) -> CertificateParams {
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    if let Some(cn) = &opts.common_name {
        params
            .distinguished_name
            .push(DnType::CommonName, cn.as_str());
    }
    for name in &opts.dns_names {
        let ia5 = name.clone().try_into().expect("dNSName is IA5");
        params.subject_alt_names.push(SanType::DnsName(ia5));
    }
    for addr in &opts.xmpp_addrs {
        params.subject_alt_names.push(SanType::OtherName((
            XMPP_ADDR_OID.to_vec(),
            OtherNameValue::Utf8String(addr.clone()),
        )));
    }
    params.is_ca = IsCa::ExplicitNoCa;
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = match opts.eku {
        Eku::ServerAndClient => vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ],
        Eku::ServerOnly => vec![ExtendedKeyUsagePurpose::ServerAuth],
        Eku::ClientOnly => vec![ExtendedKeyUsagePurpose::ClientAuth],
        Eku::None => vec![],
    };
    if opts.expired {
        set_validity(&mut params, -730, -1);
    } else {
        set_validity(&mut params, -1, opts.valid_days.unwrap_or(365));
    }
    params
}

/// Sets the validity window to [now + `from_days`, now + `until_days`]
/// (negative = in the past). Works in Unix seconds so that rcgen's date
/// type (`time::OffsetDateTime`) need not be named.
fn set_validity(params: &mut CertificateParams, from_days: i64, until_days: i64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let at = |days: i64| Duration::from_secs((now + days * 86_400).max(0) as u64);
    let epoch = rcgen::date_time_ymd(1970, 1, 1);
    params.not_before = epoch + at(from_days);
    params.not_after = epoch + at(until_days);
}

fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(0o600);
    }
    opts.open(path)?.write_all(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_is_written_with_a_private_key_file_and_combines_into_one_pem() {
        let ca = TestCa::new("Test CA");
        let leaf = ca.issue(&["a.test"]);
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = leaf.write(dir.path(), "a.test");
        assert_eq!(std::fs::read_to_string(cert).unwrap(), leaf.cert_pem);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&key).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let combined = leaf.combined_pem();
        assert!(combined.contains("BEGIN CERTIFICATE") && combined.contains("PRIVATE KEY"));
        // The key matches the certificate.
        let _ = leaf.certified_key();
    }

    #[test]
    fn issued_leaves_carry_the_requested_names_and_ekus() {
        use x509_parser::prelude::{FromDer, GeneralName, X509Certificate};
        let ca = TestCa::new("Test CA");
        let leaf = ca.issue_with(LeafOptions {
            eku: Eku::ServerOnly,
            ..LeafOptions::for_domains(&["a.test"])
        });
        let der = leaf.cert_der();
        let (_, cert) = X509Certificate::from_der(der.as_ref()).unwrap();
        let san = cert.subject_alternative_name().unwrap().unwrap();
        let kinds: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|g| match g {
                GeneralName::DNSName(d) => format!("dns:{d}"),
                GeneralName::OtherName(oid, _) => format!("other:{oid}"),
                other => format!("{other}"),
            })
            .collect();
        assert_eq!(kinds, ["dns:a.test", "other:1.3.6.1.5.5.7.8.5"]);
        let eku = cert.extended_key_usage().unwrap().unwrap().value;
        assert!(eku.server_auth && !eku.client_auth);
        assert!(cert.validity().is_valid());
        assert_eq!(cert.issuer().to_string(), "CN=Test CA");
    }
}
