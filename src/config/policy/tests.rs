use std::path::Path;
use std::sync::Arc;

use crate::config::Config;
use crate::jid::BareJid;
use crate::policy::PeerPolicy;
use crate::policy::*;

fn config(text: &str) -> Config {
    Config::from_toml_str(text, None).unwrap_or_else(|e| panic!("{e}"))
}

fn policy(text: &str) -> Policy {
    Policy::from_config(&config(text))
}

fn jid(s: &str) -> BareJid {
    BareJid::parse(s).expect("test JID")
}

const PARTNERS: &str = "\
server.domains = [\"example.org\"]
[[partner]]
domain = \"example.net\"
additional_domains = [\"chat.example.net\", \"muc.example.net\"]
partner_type = \"federated\"
tls_negotiation = \"required\"
sasl_negotiation = \"optional\"
support_dialback_negotiation = true
enable_keep_alive = false
connection_limit = 5
proxy_fqdn = \"xmpp.example.net\"
description = \"Example Inc.\"
[[partner]]
domain = \"gmail.com\"
";

// ---- partners ----

#[test]
fn a_listed_partner_is_found_by_every_one_of_its_domains() {
    let p = policy(PARTNERS);
    let expected = Partner {
        domain: "example.net".into(),
        additional_domains: vec!["chat.example.net".into(), "muc.example.net".into()],
        partner_type: PartnerType::Federated,
        tls: Negotiate::Required,
        sasl: Negotiate::Optional,
        dialback: true,
        keep_alive: false,
        connection_limit: 5,
        proxy_fqdn: Some(ProxyTarget {
            host: "xmpp.example.net".into(),
            port: 5269,
        }),
        description: Some("Example Inc.".into()),
        listed: true,
    };
    for domain in [
        "example.net",
        "chat.example.net",
        "MUC.Example.NET.",
        "Example.net",
    ] {
        let found = p.partner(domain).unwrap_or_else(|| panic!("{domain}"));
        assert_eq!(*found, expected, "{domain}");
    }
    // One entry shared by all its domains, not a copy each.
    assert!(Arc::ptr_eq(
        &p.partner("example.net").expect("listed"),
        &p.partner("chat.example.net").expect("listed")
    ));
}

#[test]
fn a_partner_with_only_a_domain_has_the_lync_defaults() {
    let gmail = policy(PARTNERS).partner("gmail.com").expect("listed");
    assert_eq!(gmail.partner_type, PartnerType::PublicUnverified);
    assert_eq!(
        gmail.peer_policy(),
        PeerPolicy {
            tls: Negotiate::Required,
            sasl: Negotiate::Required,
            dialback: true,
        }
    );
    assert!(gmail.keep_alive && gmail.listed);
    assert_eq!(gmail.connection_limit, 20);
    assert_eq!(gmail.mode(), "SASL over TLS");
    assert_eq!(gmail.domains().collect::<Vec<_>>(), ["gmail.com"]);
}

#[test]
fn peer_policy_and_mode_follow_the_partner_settings() {
    let p = policy(PARTNERS).partner("example.net").expect("listed");
    assert_eq!(
        p.peer_policy(),
        PeerPolicy {
            tls: Negotiate::Required,
            sasl: Negotiate::Optional,
            dialback: true,
        }
    );
    assert_eq!(p.mode(), "SASL/TLS, TLS dialback");
    let google = policy(
        "[[partner]]\ndomain = \"gmail.com\"\ntls_negotiation = \"not_supported\"\n\
         sasl_negotiation = \"not_supported\"\nenable_keep_alive = false\n",
    )
    .partner("gmail.com")
    .expect("listed");
    assert_eq!(google.mode(), "TCP dialback");
}

#[test]
fn unlisted_domains_are_denied_by_default() {
    for p in [Policy::from_config(&Config::default_embedded()), policy("")] {
        assert!(!p.allows_unlisted());
        assert_eq!(p.partner("example.net"), None);
    }
    let p = policy(PARTNERS);
    assert_eq!(p.partner("example.com"), None);
    assert_eq!(p.partner("sub.example.net"), None, "no wildcard");
    assert!(p.partner("gmail.com").is_some());
}

#[test]
fn unlisted_domains_when_allowed_get_the_open_federation_settings() {
    let p = policy(&format!(
        "gateway.partner_connection_limit = 9\n\
         s2s.unlisted_domains = \"allow\"\n{PARTNERS}"
    ));
    assert!(p.allows_unlisted());
    let open = p.partner("Jabber.Example.COM.").expect("open federation");
    assert_eq!(
        *open,
        Partner {
            domain: "jabber.example.com".into(),
            additional_domains: vec![],
            partner_type: PartnerType::PublicUnverified,
            tls: Negotiate::Required,
            sasl: Negotiate::Optional,
            dialback: true,
            keep_alive: true,
            connection_limit: 9,
            proxy_fqdn: None,
            description: None,
            listed: false,
        }
    );
    assert_eq!(open.peer_policy(), PeerPolicy::open_federation());
    assert_eq!(open.mode(), "SASL/TLS, TLS dialback");
    // Listed partners keep their own settings.
    let gmail = p.partner("gmail.com").expect("listed");
    assert!(gmail.listed);
    assert_eq!(gmail.sasl, Negotiate::Required);
    // A local domain is never a partner.
    assert_eq!(p.partner("example.org"), None);
    assert_eq!(p.partner("Example.ORG."), None);
    assert_eq!(p.partner(""), None);
}

#[test]
fn unlisted_domains_take_the_configured_partner_type() {
    let p = policy(
        "[s2s]\nunlisted_domains = \"allow\"\nunlisted_partner_type = \"public_verified\"\n",
    );
    let open = p.partner("example.com").expect("open federation");
    assert_eq!(open.partner_type, PartnerType::PublicVerified);
    assert!(!open.listed);
}

// ---- matrix warnings ----

/// One partner with the three negotiation keys.
fn negotiation(tls: Negotiate, sasl: Negotiate, dialback: bool) -> String {
    format!(
        "[[partner]]\ndomain = \"Example.NET\"\n{}\n",
        describe(tls, sasl, dialback).replace(", ", "\n")
    )
}

#[test]
fn every_warning_row_of_the_matrix_gives_one_warning_naming_the_partner() {
    use Negotiate::{NotSupported as N, Optional as O, Required as R};
    let mut warned = 0;
    for tls in [R, O, N] {
        for sasl in [R, O, N] {
            for dialback in [true, false] {
                let text = negotiation(tls, sasl, dialback);
                let verdict = check(tls, sasl, dialback);
                let Ok(c) = Config::from_toml_str(&text, None) else {
                    assert!(matches!(verdict, Verdict::Invalid(_)), "{text}");
                    continue;
                };
                let warnings = Policy::from_config(&c).warnings().to_vec();
                match verdict {
                    Verdict::Ok => assert_eq!(warnings, [] as [String; 0], "{text}"),
                    Verdict::Warning(rule) => {
                        let mode = matrix(tls, sasl, dialback).mode;
                        assert_eq!(
                            warnings,
                            [format!(
                                "partner[0]: partner example.net: {rule} ({}; mode: {mode})",
                                describe(tls, sasl, dialback)
                            )],
                            "{text}"
                        );
                        warned += 1;
                    }
                    Verdict::Invalid(_) => panic!("accepted: {text}"),
                }
            }
        }
    }
    // R/R/T, O/R/T, O/R/F, O/O/T, O/O/F (N/R/T and N/O/T are refused).
    assert_eq!(warned, 5);
}

#[test]
fn the_lync_defaults_are_a_warning_row() {
    let p = policy("[[partner]]\ndomain = \"example.net\"\n");
    assert_eq!(
        p.warnings(),
        [
            "partner[0]: partner example.net: dialback is never used when TLS and SASL are both \
             required (tls_negotiation = \"required\", sasl_negotiation = \"required\", \
             support_dialback_negotiation = true; mode: SASL over TLS)"
        ]
    );
}

#[test]
fn warnings_name_the_file_the_configuration_came_from() {
    let c = Config::from_toml_str(
        "[[partner]]\ndomain = \"a.example\"\nsupport_dialback_negotiation = false\n\
         [[partner]]\ndomain = \"b.example\"\ntls_negotiation = \"optional\"\n",
        Some(Path::new("/etc/fedrouter/fedrouter.toml")),
    )
    .expect("valid");
    let w = Policy::from_config(&c).warnings().to_vec();
    assert_eq!(w.len(), 1, "{w:?}");
    assert!(
        w[0].starts_with(
            "/etc/fedrouter/fedrouter.toml: partner[1]: partner b.example: \
             optional TLS may break SASL"
        ),
        "{w:?}"
    );
}

#[test]
fn an_access_policy_that_names_nobody_is_a_warning() {
    let p = policy("[[access_policy]]\nname = \"contractors\"\nenable_xmpp_access = true\n");
    assert_eq!(
        p.warnings(),
        [
            "access_policy[0]: access policy contractors: applies to nobody \
          (it names no domains and no users)"
        ]
    );
    assert!(
        policy("[[access_policy]]\nname = \"global\"\n")
            .warnings()
            .is_empty()
    );
}

// ---- access ----

#[test]
fn without_access_policies_nobody_may_talk_to_remote_domains() {
    for p in [Policy::from_config(&Config::default_embedded()), policy("")] {
        let a = p.access(&jid("alice@localhost"));
        assert_eq!(
            *a,
            Access {
                name: "global".into(),
                federation: false,
                xmpp: false,
            }
        );
        assert!(!a.allowed_remote());
    }
}

const ACCESS: &str = "\
server.domains = [\"example.org\", \"contractors.example.org\", \"lab.example.org\"]
[[access_policy]]
name = \"global\"
enable_federation_access = true
enable_xmpp_access = true
[[access_policy]]
name = \"no-federation\"
enable_federation_access = true
domains = [\"contractors.example.org\"]
users = [\"bob@example.org\"]
[[access_policy]]
name = \"lab-lead\"
enable_federation_access = true
enable_xmpp_access = true
users = [\"carol@contractors.example.org\"]
[[access_policy]]
name = \"lab\"
enable_xmpp_access = true
domains = [\"lab.example.org\"]
";

#[test]
fn a_user_policy_wins_over_a_domain_policy_which_wins_over_global() {
    let p = policy(ACCESS);
    // (user, policy, federation, xmpp)
    for (user, name, federation, xmpp) in [
        ("alice@example.org", "global", true, true),
        ("bob@example.org", "no-federation", true, false),
        ("dave@contractors.example.org", "no-federation", true, false),
        ("carol@contractors.example.org", "lab-lead", true, true),
        ("erin@lab.example.org", "lab", false, true),
        ("Carol@Contractors.Example.ORG", "lab-lead", true, true),
    ] {
        let a = p.access(&jid(user));
        assert_eq!(
            (a.name.as_str(), a.federation, a.xmpp),
            (name, federation, xmpp),
            "{user}"
        );
        assert_eq!(a.allowed_remote(), federation && xmpp, "{user}");
    }
}

#[test]
fn a_file_without_a_global_policy_keeps_the_lync_global_default() {
    let p = policy(
        "server.domains = [\"example.org\"]\n[[access_policy]]\nname = \"staff\"\n\
         enable_federation_access = true\nenable_xmpp_access = true\n\
         users = [\"alice@example.org\"]\n",
    );
    assert!(p.access(&jid("alice@example.org")).allowed_remote());
    let other = p.access(&jid("bob@example.org"));
    assert_eq!(other.name, "global");
    assert!(!other.federation && !other.xmpp);
}

#[test]
fn a_global_policy_written_in_another_case_is_the_global_one() {
    let p = policy(
        "[[access_policy]]\nname = \"Global\"\nenable_federation_access = true\n\
         enable_xmpp_access = true\n",
    );
    let a = p.access(&jid("alice@localhost"));
    assert_eq!(a.name, "Global");
    assert!(a.allowed_remote());
}

#[test]
fn the_shipped_example_lets_everyone_federate_but_contractors_and_bob() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fedrouter.toml");
    let c = Config::load(&path).unwrap_or_else(|e| panic!("{e}"));
    let p = Policy::from_config(&c);
    assert!(p.warnings().is_empty(), "{:?}", p.warnings());
    assert!(p.access(&jid("alice@example.org")).allowed_remote());
    assert!(!p.access(&jid("bob@example.org")).allowed_remote());
    assert!(
        !p.access(&jid("eve@contractors.example.org"))
            .allowed_remote()
    );
    assert_eq!(
        p.partner("example.net"),
        None,
        "no partner, unlisted denied"
    );
}
