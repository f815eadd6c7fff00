//! Peer certificate checks (`fedrouter::pki::PeerVerifier`, RFC 6125 and
//! XEP-0178) over certificates from a throw-away CA (`testkit::ca`): DNS
//! names, xmppAddr, wildcards, trust, expiry, EKUs, the CA file loader,
//! and real TLS handshakes that present and read peer certificates.

use std::path::Path;
use std::sync::Arc;

use fedrouter::pki::{IdentityError, PeerVerifier};
use fedrouter::tls::{CertStore, TlsError};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use testkit::ca::{Eku, Leaf, LeafOptions, TestCa, self_signed};

fn verifier_trusting(ca: &TestCa) -> Arc<PeerVerifier> {
    let mut roots = RootCertStore::empty();
    roots.add(ca.cert_der()).unwrap();
    Arc::new(PeerVerifier::with_roots(roots).unwrap())
}

fn opts(dns: &[&str], xmpp: &[&str]) -> LeafOptions {
    LeafOptions {
        dns_names: dns.iter().map(|s| s.to_string()).collect(),
        xmpp_addrs: xmpp.iter().map(|s| s.to_string()).collect(),
        ..LeafOptions::default()
    }
}

#[test]
fn a_ca_signed_leaf_with_a_dns_name_is_valid_for_that_name() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let leaf = ca.issue_with(opts(&["a.test"], &[]));
    assert_eq!(v.verify(&[leaf.cert_der()], "a.test"), Ok(()));
    assert_eq!(v.verify(&[leaf.cert_der()], "A.Test."), Ok(()));
}

#[test]
fn an_xmpp_addr_only_leaf_is_valid_for_that_domain() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let leaf = ca.issue_with(opts(&[], &["chat.b.test"]));
    assert_eq!(v.verify(&[leaf.cert_der()], "chat.b.test"), Ok(()));
    assert!(matches!(
        v.verify(&[leaf.cert_der()], "b.test"),
        Err(IdentityError::NameMismatch { .. })
    ));
}

#[test]
fn a_wildcard_matches_exactly_one_left_most_label() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let chain = [ca.issue_with(opts(&["*.a.test"], &[])).cert_der()];
    assert_eq!(v.verify(&chain, "x.a.test"), Ok(()));
    assert!(v.verify(&chain, "a.test").is_err());
    assert!(v.verify(&chain, "y.x.a.test").is_err());
}

#[test]
fn an_xmpp_addr_is_not_a_wildcard() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let chain = [ca.issue_with(opts(&[], &["*.a.test"])).cert_der()];
    assert!(v.verify(&chain, "x.a.test").is_err());
}

#[test]
fn a_wrong_name_is_a_mismatch_that_lists_the_names() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let leaf = ca.issue(&["a.test", "b.test"]);
    assert_eq!(
        v.verify(&[leaf.cert_der()], "c.test"),
        Err(IdentityError::NameMismatch {
            domain: "c.test".into(),
            names: vec!["a.test".into(), "b.test".into()],
        })
    );
}

#[test]
fn the_common_name_is_not_an_identity() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let leaf = ca.issue_with(LeafOptions {
        common_name: Some("a.test".into()),
        ..opts(&["other.test"], &[])
    });
    assert!(matches!(
        v.verify(&[leaf.cert_der()], "a.test"),
        Err(IdentityError::NameMismatch { .. })
    ));
}

#[test]
fn a_self_signed_leaf_is_untrusted_unless_it_is_the_anchor() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let leaf = self_signed(&["a.test"]);
    assert!(matches!(
        v.verify(&[leaf.cert_der()], "a.test"),
        Err(IdentityError::Untrusted(_))
    ));
    let mut roots = RootCertStore::empty();
    roots.add(leaf.cert_der()).unwrap();
    let pinned = PeerVerifier::with_roots(roots).unwrap();
    assert_eq!(pinned.verify(&[leaf.cert_der()], "a.test"), Ok(()));
}

#[test]
fn a_leaf_from_another_ca_is_untrusted() {
    let ca = TestCa::new("Test CA");
    let other = TestCa::new("Other CA");
    let v = verifier_trusting(&ca);
    let leaf = other.issue(&["a.test"]);
    assert!(matches!(
        v.verify(&[leaf.cert_der()], "a.test"),
        Err(IdentityError::Untrusted(_))
    ));
}

#[test]
fn server_auth_only_client_auth_only_and_no_eku_leaves_are_all_accepted() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    for eku in [Eku::ServerOnly, Eku::ClientOnly, Eku::None] {
        let leaf = ca.issue_with(LeafOptions {
            eku,
            ..LeafOptions::for_domains(&["a.test"])
        });
        assert_eq!(v.verify(&[leaf.cert_der()], "a.test"), Ok(()), "{eku:?}");
    }
}

#[test]
fn an_expired_leaf_is_rejected_as_expired() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let leaf = ca.issue_with(LeafOptions {
        expired: true,
        ..LeafOptions::for_domains(&["a.test"])
    });
    assert_eq!(
        v.verify(&[leaf.cert_der()], "a.test"),
        Err(IdentityError::Expired)
    );
}

#[test]
fn an_empty_chain_is_no_certificate_and_garbage_is_bad_encoding() {
    let v = PeerVerifier::new(None, false).unwrap();
    assert_eq!(v.verify(&[], "a.test"), Err(IdentityError::NoCertificate));
    let junk = CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff]);
    assert!(matches!(
        v.verify(&[junk], "a.test"),
        Err(IdentityError::BadEncoding(_))
    ));
}

#[test]
fn new_reads_every_certificate_of_the_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (TestCa::new("A"), TestCa::new("B"));
    let path = dir.path().join("cas.pem");
    std::fs::write(&path, format!("{}{}", a.cert_pem(), b.cert_pem())).unwrap();
    let v = PeerVerifier::new(Some(&path), false).unwrap();
    assert_eq!(v.root_count(), 2);
    assert_eq!(
        v.verify(&[b.issue(&["b.test"]).cert_der()], "b.test"),
        Ok(())
    );
    let empty = dir.path().join("empty.pem");
    std::fs::write(&empty, "").unwrap();
    assert!(matches!(
        PeerVerifier::new(Some(&empty), false),
        Err(TlsError::NoCertificate { .. })
    ));
    assert!(matches!(
        PeerVerifier::new(Some(&dir.path().join("missing.pem")), false),
        Err(TlsError::Io { .. })
    ));
}

#[test]
fn system_roots_load_or_are_simply_absent() {
    // Whatever the machine has; only "no error" is portable.
    assert!(PeerVerifier::new(None, true).is_ok());
}

#[test]
fn an_identity_answers_per_domain_and_describes_its_names() {
    let ca = TestCa::new("Test CA");
    let v = verifier_trusting(&ca);
    let id = v.identity(vec![ca.issue(&["a.test", "muc.a.test"]).cert_der()]);
    assert!(id.is_valid_for("a.test"));
    assert!(id.is_valid_for("muc.a.test"));
    assert!(!id.is_valid_for("b.test"));
    assert!(id.is_valid_for("a.test"));
    assert_eq!(id.describe(), "certificate for a.test, muc.a.test");
    let untrusted = v.cert_identity(vec![self_signed(&["a.test"]).cert_der()]);
    assert!(matches!(
        untrusted.check("a.test"),
        Err(IdentityError::Untrusted(_))
    ));
}

mod handshake {
    use super::*;
    use fedrouter::config::Config;
    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    /// A CertStore for `domain` serving `leaf`, through the real loader.
    fn cert_store(dir: &Path, domain: &str, leaf: &Leaf) -> Arc<CertStore> {
        let (cert, key) = leaf.write(dir, domain);
        let mut config = Config::from_toml_str("", None).expect("default config");
        config.server.domains = vec![domain.to_string()];
        config.server.data_dir = dir.to_path_buf();
        config.tls.certificates = vec![fedrouter::config::CertificateConfig {
            domain: domain.to_string(),
            cert,
            key,
        }];
        Arc::new(CertStore::load(&config).unwrap())
    }

    /// Runs a handshake over an in-memory pipe; returns what each side
    /// saw of the other's certificate chain.
    async fn handshake(
        client_cfg: Arc<rustls::ClientConfig>,
        server_cfg: Arc<rustls::ServerConfig>,
        sni: &str,
    ) -> (
        Option<Vec<CertificateDer<'static>>>,
        Option<Vec<CertificateDer<'static>>>,
    ) {
        let (c, s) = tokio::io::duplex(64 * 1024);
        let name = ServerName::try_from(sni.to_string()).unwrap();
        let server = tokio::spawn(async move {
            let mut tls = TlsAcceptor::from(server_cfg).accept(s).await.unwrap();
            let mut buf = [0u8; 4];
            tls.read_exact(&mut buf).await.unwrap();
            tls.write_all(b"pong").await.unwrap();
            tls.flush().await.unwrap();
            tls.get_ref().1.peer_certificates().map(|c| c.to_vec())
        });
        let mut tls = TlsConnector::from(client_cfg)
            .connect(name, c)
            .await
            .unwrap();
        tls.write_all(b"ping").await.unwrap();
        let mut buf = [0u8; 4];
        tls.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"pong");
        let seen_by_client = tls.get_ref().1.peer_certificates().map(|c| c.to_vec());
        (seen_by_client, server.await.unwrap())
    }

    #[tokio::test]
    async fn the_server_reads_and_verifies_the_client_certificate_after_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Test CA");
        let v = verifier_trusting(&ca);
        let server_leaf = ca.issue(&["b.test"]);
        let client_leaf = ca.issue_with(LeafOptions {
            eku: Eku::ServerOnly,
            ..LeafOptions::for_domains(&["a.test"])
        });
        let server_cfg = v
            .server_config(cert_store(dir.path(), "b.test", &server_leaf))
            .unwrap();
        let client_cfg = v.client_config(Some(client_leaf.certified_key()));
        let (server_chain, client_chain) = handshake(client_cfg, server_cfg, "b.test").await;
        let client_chain = client_chain.expect("the client presented a certificate");
        assert_eq!(v.verify(&client_chain, "a.test"), Ok(()));
        assert!(v.identity(client_chain).is_valid_for("a.test"));
        let server_chain = server_chain.expect("server certificate");
        assert_eq!(v.verify(&server_chain, "b.test"), Ok(()));
    }

    #[tokio::test]
    async fn an_untrusted_server_certificate_still_completes_the_handshake() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("Test CA");
        let v = verifier_trusting(&ca);
        let server_leaf = self_signed(&["b.test"]);
        let server_cfg = v
            .server_config(cert_store(dir.path(), "b.test", &server_leaf))
            .unwrap();
        let (server_chain, client_chain) =
            handshake(v.client_config(None), server_cfg, "b.test").await;
        assert!(
            client_chain.is_none(),
            "no client certificate was configured"
        );
        let server_chain = server_chain.expect("server certificate");
        assert!(matches!(
            v.verify(&server_chain, "b.test"),
            Err(IdentityError::Untrusted(_))
        ));
    }
}
