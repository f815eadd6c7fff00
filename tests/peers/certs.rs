//! A minimal private test CA (rcgen) for the peer servers. Meant to be
//! replaced by `testkit::ca::TestCa` once that lands.
//!
//! Leaves carry SANs `DNS:<domain>` and `DNS:*.<domain>`, and both the
//! serverAuth and clientAuth EKUs (an s2s initiator presents its server
//! certificate as a client certificate; older peers want clientAuth).
//!
//! No `xmppAddr` otherName by default: ejabberd 23.01 (its `xmpp` library,
//! `xmpp_stream_pkix:get_cert_domains/1`) crashes on an inbound s2s client
//! certificate carrying one — `badarg` in `erlang:'++'(<<"p.test">>, [])`,
//! the `ejabberd_s2s_in` process dies and the initiator just sees
//! `</stream:stream>` right after `<auth mechanism='EXTERNAL'/>`. Use
//! [`PeerCerts::issue_with_xmpp_addr`] to test exactly that.
//!
//! Validity: yesterday to 30 days from now, for CA and leaves. rcgen's
//! default (1975–4096) crashes ejabberd 23.01: its `pkix` server arms an
//! Erlang timer for the expiry date, `erlang:start_timer` raises `badarg`
//! beyond ~49.7 days (2^32 ms), `ejabberd_pkix` dies, and the c2s listener
//! then refuses STARTTLS ("the server refused STARTTLS").

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose, SanType,
};
use rustls::pki_types::CertificateDer;

/// OID of `id-on-xmppAddr` (RFC 6120 §13.7.1.4).
const XMPP_ADDR_OID: [u64; 9] = [1, 3, 6, 1, 5, 5, 7, 8, 5];

/// A certificate and its private key, both PEM.
#[derive(Clone, Debug)]
pub struct CertPair {
    pub cert_pem: String,
    pub key_pem: String,
    pub cert_der: CertificateDer<'static>,
}

impl CertPair {
    /// Certificate followed by key, the format of ejabberd's `certfiles`.
    pub fn combined_pem(&self) -> String {
        format!("{}{}", self.cert_pem, self.key_pem)
    }
}

/// A throw-away certificate authority.
pub struct PeerCerts {
    pub ca_pem: String,
    pub ca_der: CertificateDer<'static>,
    issuer: Issuer<'static, KeyPair>,
}

impl Default for PeerCerts {
    fn default() -> Self {
        Self::new()
    }
}

impl PeerCerts {
    pub fn new() -> PeerCerts {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params
            .distinguished_name
            .push(DnType::CommonName, "fedrouter peers test CA");
        set_validity(&mut params);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let cert = params.self_signed(&key).expect("CA certificate");
        PeerCerts {
            ca_pem: cert.pem(),
            ca_der: cert.der().clone(),
            issuer: Issuer::new(params, key),
        }
    }

    /// A leaf for `domain`, signed by this CA.
    pub fn issue(&self, domain: &str) -> CertPair {
        self.sign(leaf_params(domain))
    }

    /// A leaf for `domain` that also has an `xmppAddr` SAN (see the module
    /// docs: ejabberd 23.01 cannot take it on inbound s2s).
    pub fn issue_with_xmpp_addr(&self, domain: &str) -> CertPair {
        let mut params = leaf_params(domain);
        params
            .subject_alt_names
            .push(SanType::OtherName((XMPP_ADDR_OID.to_vec(), domain.into())));
        self.sign(params)
    }

    fn sign(&self, params: CertificateParams) -> CertPair {
        let key = KeyPair::generate().expect("leaf key");
        let cert = params.signed_by(&key, &self.issuer).expect("sign leaf");
        CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        }
    }

    /// A self-signed leaf for `domain` (trusted by nobody): the dialback mode.
    pub fn self_signed(domain: &str) -> CertPair {
        let key = KeyPair::generate().expect("leaf key");
        let cert = leaf_params(domain).self_signed(&key).expect("self-sign");
        CertPair {
            cert_pem: cert.pem(),
            key_pem: key.serialize_pem(),
            cert_der: cert.der().clone(),
        }
    }
}

fn leaf_params(domain: &str) -> CertificateParams {
    let mut params =
        CertificateParams::new(vec![domain.to_string(), format!("*.{domain}")]).expect("SANs");
    params.distinguished_name.push(DnType::CommonName, domain);
    set_validity(&mut params);
    params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    params
}

/// Valid from yesterday for 30 days (see the module docs).
fn set_validity(params: &mut CertificateParams) {
    const DAY: std::time::Duration = std::time::Duration::from_secs(86_400);
    let days = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs()
        / 86_400;
    let (y, m, d) = civil_from_days(days as i64);
    let today = rcgen::date_time_ymd(y, m, d);
    params.not_before = today - DAY;
    params.not_after = today + 30 * DAY;
}

/// (year, month, day) of a day count since 1970-01-01 (H. Hinnant's
/// `civil_from_days`).
fn civil_from_days(z: i64) -> (i32, u8, u8) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u8;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u8;
    let y = (yoe + era * 400 + i64::from(m <= 2)) as i32;
    (y, m, d)
}
