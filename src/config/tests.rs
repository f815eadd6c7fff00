use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::jid::BareJid;
use crate::policy::{Negotiate, PartnerType};

fn parse(text: &str) -> Config {
    match Config::from_toml_str(text, None) {
        Ok(c) => c,
        Err(e) => panic!("expected valid config, got: {e}"),
    }
}

fn error(text: &str) -> ConfigError {
    error_in(text, "conf/fedrouter.toml")
}

fn error_in(text: &str, file: &str) -> ConfigError {
    match Config::from_toml_str(text, Some(Path::new(file))) {
        Ok(c) => panic!("expected an error, got {c:?}"),
        Err(e) => e,
    }
}

/// Asserts kind, line and key, and that the message mentions `needle`.
#[track_caller]
fn assert_error(e: &ConfigError, kind: ConfigErrorKind, line: usize, key: &str, needle: &str) {
    assert_eq!(e.kind(), kind, "kind of: {e}");
    assert_eq!(e.line(), Some(line), "line of: {e}");
    assert_eq!(e.key(), Some(key), "key of: {e}");
    assert!(e.message().contains(needle), "`{needle}` not in: {e}");
    assert_eq!(e.file(), Some(Path::new("conf/fedrouter.toml")));
    assert!(e.column().is_some(), "no column in: {e}");
}

fn addr(s: &str) -> SocketAddr {
    s.parse().expect("test address")
}

// ---- defaults ----

#[test]
fn gateway_defaults_equal_the_lync_values() {
    let g = Config::default_embedded().gateway;
    assert_eq!(g.connection_limit, 1000);
    assert_eq!(g.partner_connection_limit, 20);
    assert_eq!(g.keep_alive_interval, Duration::from_secs(300));
    assert_eq!(g.stream_establishment_timeout, Duration::from_secs(60));
    assert_eq!(g.stream_inactivity_timeout, Duration::from_secs(600));
    assert_eq!(
        g.subscription_refresh_interval,
        Duration::from_secs(8 * 3600)
    );
    assert_eq!(g.dialback_passphrase, None);
    assert!(!g.enable_logging_all_message_bodies);
    assert_eq!(g.max_stanza_size_pre_auth, 8192);
    assert_eq!(g.max_stanza_size, 524_288);
    assert_eq!(g, GatewayConfig::default());
}

#[test]
fn the_embedded_default_serves_localhost_on_loopback() {
    let c = Config::default_embedded();
    assert_eq!(c.server.domains, ["localhost"]);
    assert_eq!(c.server.data_dir, PathBuf::from("data"));
    assert!(c.server.workers >= 1);
    assert_eq!(c.tls, TlsConfig::default());
    assert_eq!(c.c2s.listen, [addr("127.0.0.1:5222")]);
    assert!(c.c2s.require_tls);
    assert_eq!(c.c2s.scram_iterations, 10_000);
    assert_eq!(c.c2s.max_auth_failures_per_account, 5);
    assert_eq!(c.c2s.max_auth_failures_per_ip, 20);
    assert_eq!(c.c2s.auth_failure_window, Duration::from_secs(60));
    assert_eq!(c.c2s.connection_limit, 10_000);
    assert_eq!(c.c2s.connection_limit_per_ip, 100);
    assert_eq!(c.c2s.idle_timeout, Duration::from_secs(300));
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(10));
    assert_eq!(c.server.write_timeout, Duration::from_secs(30));
    assert_eq!(c.s2s.max_unauthenticated, 200);
    assert_eq!(c.s2s.max_unauthenticated_per_ip, 10);
    assert_eq!(c.s2s.max_pre_auth_elements, 100);
    assert_eq!(c.s2s.max_pending_dialback, 10);
    assert_eq!(c.s2s.max_pending_dialback_total, 1000);
    assert_eq!(c.metrics.listen, Some(addr("127.0.0.1:9269")));
    assert_eq!(c.log.level, "info");
    assert_eq!(c.log.format, LogFormat::Text);
    assert_eq!(c.source, None);
}

#[test]
fn the_embedded_default_keeps_s2s_on_loopback() {
    let s2s = Config::default_embedded().s2s;
    assert_eq!(s2s.listen, [addr("127.0.0.1:5269")]);
    assert!(s2s.direct_tls_listen.is_empty());
    assert!(s2s.dns_nameservers.is_empty());
}

#[test]
fn a_config_file_listens_for_s2s_on_all_ipv4_interfaces_by_default() {
    let s2s = parse("").s2s;
    assert_eq!(s2s.listen, [addr("0.0.0.0:5269")]);
    assert!(s2s.direct_tls_listen.is_empty());
    assert!(s2s.dns_nameservers.is_empty());
}

#[test]
fn an_empty_file_is_the_embedded_default_but_for_s2s_listen() {
    let embedded_but_public_s2s = || {
        let mut c = Config::default_embedded();
        c.s2s.listen = vec![addr("0.0.0.0:5269")];
        c
    };
    assert_eq!(parse(""), embedded_but_public_s2s());
    assert_eq!(parse("# nothing\n[gateway]\n"), embedded_but_public_s2s());
    assert_eq!(
        parse("s2s.listen = [\"127.0.0.1:5269\"]"),
        Config::default_embedded()
    );
}

#[test]
fn workers_zero_resolves_to_the_core_count_and_others_stay() {
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    assert_eq!(parse("server.workers = 0").server.workers, cores);
    assert_eq!(parse("server.workers = 3").server.workers, 3);
}

#[test]
fn every_key_is_read() {
    let c = parse(
        r#"
        [server]
        domains = ["Example.ORG", "chat.example.net."]
        data_dir = "/var/lib/fedrouter"
        workers = 2
        [tls]
        ca_file = "/etc/ssl/extra.pem"
        [[tls.certificate]]
        domain = "EXAMPLE.org"
        cert = "/etc/c.pem"
        key = "/etc/c.key"
        [c2s]
        listen = ["0.0.0.0:5222", "[::]:5222"]
        require_tls = false
        [s2s]
        listen = ["0.0.0.0:5269", "[::1]:5269"]
        direct_tls_listen = ["0.0.0.0:5270"]
        dns_nameservers = ["127.0.0.1:5300", "[2001:db8::53]:53"]
        allow_private_targets = ["10.0.0.0/8", "fd00::/8", "192.168.1.7"]
        unlisted_domains = "allow"
        unlisted_partner_type = "public_verified"
        [gateway]
        connection_limit = 1200
        partner_connection_limit = 30
        keep_alive_interval = 301
        stream_establishment_timeout = 61
        stream_inactivity_timeout = 601
        subscription_refresh_interval = 28801
        dialback_passphrase = "s3cret-s3cret-s3cret"
        enable_logging_all_message_bodies = true
        max_stanza_size_pre_auth = 4096
        max_stanza_size = 65536
        [[partner]]
        domain = "Example.NET"
        proxy_fqdn = "XMPP.example.net:5270"
        additional_domains = ["Conference.Example.NET", "muc.example.net."]
        partner_type = "federated"
        tls_negotiation = "optional"
        sasl_negotiation = "optional"
        support_dialback_negotiation = true
        enable_keep_alive = false
        connection_limit = 40
        description = "Example Inc., ops@example.net"
        [[partner]]
        domain = "gmail.com"
        [[access_policy]]
        name = "global"
        description = "everyone"
        enable_federation_access = true
        enable_xmpp_access = true
        [[access_policy]]
        name = "no-federation"
        enable_federation_access = true
        enable_xmpp_access = false
        domains = ["Chat.Example.NET"]
        users = ["Bob@Example.ORG"]
        [metrics]
        listen = "[::1]:9000"
        [log]
        level = " warn , fedrouter=debug "
        format = "json"
        audit_file = "/var/log/fedrouter/audit.log"
        "#,
    );
    assert_eq!(c.server.domains, ["example.org", "chat.example.net"]);
    assert_eq!(c.server.data_dir, PathBuf::from("/var/lib/fedrouter"));
    assert_eq!(c.server.workers, 2);
    assert_eq!(c.tls.ca_file, Some(PathBuf::from("/etc/ssl/extra.pem")));
    assert_eq!(
        c.tls.certificates,
        [CertificateConfig {
            domain: "example.org".into(),
            cert: "/etc/c.pem".into(),
            key: "/etc/c.key".into(),
        }]
    );
    assert_eq!(c.c2s.listen, [addr("0.0.0.0:5222"), addr("[::]:5222")]);
    assert!(!c.c2s.require_tls);
    assert_eq!(
        c.s2s,
        S2sConfig {
            listen: vec![addr("0.0.0.0:5269"), addr("[::1]:5269")],
            direct_tls_listen: vec![addr("0.0.0.0:5270")],
            dns_nameservers: vec![addr("127.0.0.1:5300"), addr("[2001:db8::53]:53")],
            allow_private_targets: vec![
                "10.0.0.0/8".parse().unwrap(),
                "fd00::/8".parse().unwrap(),
                "192.168.1.7/32".parse().unwrap(),
            ],
            unlisted_domains: Unlisted::Allow,
            unlisted_partner_type: PartnerType::PublicVerified,
            max_unauthenticated: 200,
            max_unauthenticated_per_ip: 10,
            max_pre_auth_elements: 100,
            max_pending_dialback: 10,
            max_pending_dialback_total: 1000,
            stream_management: true,
            resume_timeout: Duration::from_secs(300),
            durable_queue: false,
        }
    );
    assert_eq!(
        c.partners,
        [
            PartnerConfig {
                domain: "example.net".into(),
                proxy_fqdn: Some(ProxyTarget {
                    host: "xmpp.example.net".into(),
                    port: 5270,
                }),
                additional_domains: vec!["conference.example.net".into(), "muc.example.net".into()],
                partner_type: PartnerType::Federated,
                tls_negotiation: Negotiate::Optional,
                sasl_negotiation: Negotiate::Optional,
                support_dialback_negotiation: true,
                enable_keep_alive: false,
                connection_limit: 40,
                description: Some("Example Inc., ops@example.net".into()),
            },
            default_partner("gmail.com", 30),
        ]
    );
    assert_eq!(
        c.access_policies,
        [
            AccessPolicyConfig {
                name: "global".into(),
                description: Some("everyone".into()),
                enable_federation_access: true,
                enable_xmpp_access: true,
                domains: vec![],
                users: vec![],
            },
            AccessPolicyConfig {
                name: "no-federation".into(),
                description: None,
                enable_federation_access: true,
                enable_xmpp_access: false,
                domains: vec!["chat.example.net".into()],
                users: vec![BareJid::parse("bob@example.org").expect("jid")],
            },
        ]
    );
    let g = &c.gateway;
    assert_eq!((g.connection_limit, g.partner_connection_limit), (1200, 30));
    assert_eq!(g.keep_alive_interval, Duration::from_secs(301));
    assert_eq!(g.stream_establishment_timeout, Duration::from_secs(61));
    assert_eq!(g.stream_inactivity_timeout, Duration::from_secs(601));
    assert_eq!(g.subscription_refresh_interval, Duration::from_secs(28801));
    assert_eq!(
        g.dialback_passphrase.as_deref(),
        Some("s3cret-s3cret-s3cret")
    );
    assert!(g.enable_logging_all_message_bodies);
    assert_eq!(
        (g.max_stanza_size_pre_auth, g.max_stanza_size),
        (4096, 65536)
    );
    assert_eq!(c.metrics.listen, Some(addr("[::1]:9000")));
    assert_eq!(c.log.level, "warn,fedrouter=debug");
    assert_eq!(c.log.format, LogFormat::Json);
    assert_eq!(
        c.log.audit_file,
        Some(PathBuf::from("/var/log/fedrouter/audit.log"))
    );
}

/// A `[[partner]]` with only its domain: the Lync defaults, and the
/// gateway's per-partner connection limit.
fn default_partner(domain: &str, connection_limit: u32) -> PartnerConfig {
    PartnerConfig {
        domain: domain.into(),
        proxy_fqdn: None,
        additional_domains: vec![],
        partner_type: PartnerType::PublicUnverified,
        tls_negotiation: Negotiate::Required,
        sasl_negotiation: Negotiate::Required,
        support_dialback_negotiation: true,
        enable_keep_alive: true,
        connection_limit,
        description: None,
    }
}

#[test]
fn the_dialback_passphrase_is_redacted_in_debug_output() {
    let c = parse("gateway.dialback_passphrase = \"hunter2hunter2hunter2\"");
    assert!(!format!("{c:?}").contains("hunter2"));
}

#[test]
fn metrics_listen_empty_disables_the_endpoint() {
    assert_eq!(parse("metrics.listen = \"\"").metrics.listen, None);
}

#[test]
fn c2s_listen_may_be_empty_and_may_repeat_port_zero() {
    assert!(parse("c2s.listen = []").c2s.listen.is_empty());
    let c = parse("c2s.listen = [\"127.0.0.1:0\", \"127.0.0.1:0\"]");
    assert_eq!(c.c2s.listen.len(), 2);
}

// ---- parse-level errors ----

#[test]
fn an_unknown_top_level_key_is_refused_with_line_and_key() {
    let e = error("[server]\nworkers = 1\n\n[gatewey]\nconnection_limit = 5\n");
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        4,
        "gatewey",
        "unknown field `gatewey`",
    );
    assert_eq!(e.column(), Some(2));
}

#[test]
fn an_unknown_nested_key_is_refused_with_its_dotted_path() {
    let e = error("[gateway]\nconnection_limit = 5\nkeepalive_interval = 30\n");
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        3,
        "gateway.keepalive_interval",
        "expected one of",
    );
    let e = error(
        "[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"c\"\nkey = \"k\"\n\
         [[tls.certificate]]\ndomain = \"localhost\"\ncert = \"c\"\nkey = \"k\"\nchain = \"x\"\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        9,
        "tls.certificate[1].chain",
        "chain",
    );
}

#[test]
fn an_unknown_key_in_a_dotted_or_inline_table_is_found_too() {
    let e = error("server.workers = 1\nserver.shards = 2\n");
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        2,
        "server.shards",
        "shards",
    );
    let e = error("log = { level = \"info\", colour = true }\n");
    assert_error(&e, ConfigErrorKind::UnknownKey, 1, "log.colour", "colour");
}

#[test]
fn a_type_error_names_line_and_key() {
    let e = error("[gateway]\n\nkeep_alive_interval = \"5m\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        3,
        "gateway.keep_alive_interval",
        "invalid type: string \"5m\", expected an integer",
    );
    assert_eq!(e.column(), Some(23));
    assert_eq!(
        e.to_string(),
        "conf/fedrouter.toml:3:23: gateway.keep_alive_interval: \
         invalid type: string \"5m\", expected an integer from 0 to 4294967295"
    );
}

#[test]
fn a_negative_or_oversized_number_is_a_type_error() {
    let e = error("server.workers = -1");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        1,
        "server.workers",
        "non-negative integer",
    );
    let e = error("[gateway]\nconnection_limit = 5000000000");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        2,
        "gateway.connection_limit",
        "4294967295",
    );
}

#[test]
fn a_wrong_element_in_an_array_names_its_index() {
    let e = error("[server]\ndomains = [\"a.example\", 42]\n");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        2,
        "server.domains[1]",
        "integer `42`",
    );
}

#[test]
fn a_table_given_as_a_value_is_a_type_error() {
    let e = error("gateway = 5");
    assert_error(&e, ConfigErrorKind::Type, 1, "gateway", "expected a table");
}

#[test]
fn an_unknown_log_format_lists_the_choices() {
    let e = error("[log]\nformat = \"xml\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        2,
        "log.format",
        "expected `text` or `json`",
    );
}

#[test]
fn a_missing_certificate_field_names_the_table_and_field() {
    let e = error(
        "[server]\ndomains = [\"a.example\"]\n\n[[tls.certificate]]\ndomain = \"a.example\"\ncert = \"c.pem\"\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::MissingKey,
        4,
        "tls.certificate[0].key",
        "missing field `key`",
    );
}

#[test]
fn a_toml_syntax_error_names_its_line() {
    let e = error("[server]\nworkers = 1\n[gateway]\nconnection_limit = \n");
    assert_error(
        &e,
        ConfigErrorKind::Syntax,
        4,
        "gateway.connection_limit",
        "",
    );
    let e = error("[server]\nworkers = 1\nworkers = 2\n");
    assert_error(
        &e,
        ConfigErrorKind::Syntax,
        3,
        "server.workers",
        "duplicate key",
    );
    let e = error("[log]\nlevel = \"info\"\n[metrics\n");
    assert_error(&e, ConfigErrorKind::Syntax, 3, "metrics", "");
    let e = error("[log]\nlevel = \"info\" trailing\n");
    assert_error(&e, ConfigErrorKind::Syntax, 2, "log.level", "");
}

#[test]
fn columns_count_characters_not_bytes() {
    let e = error("# café\n[server]\ndomains = [\"é.example\", \"ü ü\"]\n");
    assert_eq!((e.line(), e.column()), (Some(3), Some(25)), "{e}");
    let e = error("[server]\ndomains = [\"é\" \"ü\"]\n");
    assert_eq!(e.kind(), ConfigErrorKind::Syntax, "{e}");
    assert_eq!(e.line(), Some(2), "{e}");
}

#[test]
fn errors_in_text_without_a_file_say_config() {
    let e = Config::from_toml_str("nope = 1", None).expect_err("unknown key");
    assert_eq!(e.file(), None);
    assert_eq!(
        e.to_string(),
        "<config>:1:1: nope: unknown field `nope`, expected one of `server`, `tls`, `c2s`, `s2s`, `gateway`, `partner`, `access_policy`, `user_limits`, `storage`, `metrics`, `log`"
    );
}

// ---- semantic checks ----

#[test]
fn an_empty_domain_list_is_refused() {
    let e = error("[server]\ndomains = []\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "server.domains",
        "at least one",
    );
}

#[test]
fn an_invalid_domain_is_refused() {
    let e = error("[server]\ndomains = [\"ok.example\",\n  \"bad domain\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "server.domains[1]",
        "not a valid domain",
    );
    let e = error("server.domains = [\"user@example.org\"]");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        1,
        "server.domains[0]",
        "not a valid domain",
    );
}

#[test]
fn a_duplicate_domain_is_refused_after_lower_casing() {
    let e = error("server.domains = [\"example.org\", \"Example.ORG\"]");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        1,
        "server.domains[1]",
        "`example.org` is listed twice (first as server.domains[0])",
    );
}

#[test]
fn a_certificate_for_a_domain_not_served_is_refused() {
    let e = error(
        "[server]\ndomains = [\"example.org\"]\n[[tls.certificate]]\n\
         domain = \"example.net\"\ncert = \"c\"\nkey = \"k\"\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        4,
        "tls.certificate[0].domain",
        "not one of server.domains",
    );
}

#[test]
fn two_certificates_for_one_domain_are_refused() {
    let e = error(
        "[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"a\"\nkey = \"a\"\n\
         [[tls.certificate]]\ndomain = \"LOCALHOST\"\ncert = \"b\"\nkey = \"b\"\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        6,
        "tls.certificate[1].domain",
        "a second certificate",
    );
}

#[test]
fn empty_paths_are_refused() {
    let e = error("[server]\ndata_dir = \"\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "server.data_dir",
        "must not be empty",
    );
    let e = error("[[tls.certificate]]\ndomain = \"localhost\"\ncert = \"\"\nkey = \"k\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "tls.certificate[0].cert",
        "empty",
    );
    let e = error("[tls]\nca_file = \"\"\n");
    assert_error(&e, ConfigErrorKind::Invalid, 2, "tls.ca_file", "empty");
}

#[test]
fn a_bad_socket_address_is_refused() {
    let e = error("[c2s]\nlisten = [\"127.0.0.1:5222\", \"localhost:5222\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "c2s.listen[1]",
        "not a socket address",
    );
    let e = error("[metrics]\nlisten = \"9269\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "metrics.listen",
        "not a socket address",
    );
}

#[test]
fn a_repeated_or_shared_listen_address_is_refused() {
    let e = error("c2s.listen = [\"[::]:5222\", \"[::]:5222\"]");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        1,
        "c2s.listen[1]",
        "listed twice",
    );
    let e = error("[c2s]\nlisten = [\"127.0.0.1:9269\"]\n[metrics]\nlisten = \"127.0.0.1:9269\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        4,
        "metrics.listen",
        "both metrics.listen and c2s.listen[0]",
    );
}

#[test]
fn s2s_listen_lists_may_be_empty_and_may_repeat_port_zero() {
    let c = parse("[s2s]\nlisten = []\ndirect_tls_listen = []\n");
    assert!(c.s2s.listen.is_empty() && c.s2s.direct_tls_listen.is_empty());
    let c = parse(
        "c2s.listen = [\"127.0.0.1:0\"]\n[s2s]\nlisten = [\"127.0.0.1:0\", \"127.0.0.1:0\"]\n\
         direct_tls_listen = [\"127.0.0.1:0\"]\n[metrics]\nlisten = \"127.0.0.1:0\"\n",
    );
    assert_eq!(c.s2s.listen.len(), 2);
    assert_eq!(c.s2s.direct_tls_listen, [addr("127.0.0.1:0")]);
}

#[test]
fn a_bad_s2s_socket_address_is_refused() {
    let e = error("[s2s]\nlisten = [\"0.0.0.0:5269\", \"xmpp.example.org:5269\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "s2s.listen[1]",
        "is not a socket address: expected IP:port, such as 127.0.0.1:5269",
    );
    let e = error("[s2s]\n\ndirect_tls_listen = [\"0.0.0.0\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "s2s.direct_tls_listen[0]",
        "such as 127.0.0.1:5270",
    );
    let e = error("[s2s]\nlisten = [\"0.0.0.0:65536\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "s2s.listen[0]",
        "not a socket address",
    );
}

#[test]
fn a_listen_address_used_twice_anywhere_is_refused() {
    // (text, line, key, message)
    let cases = [
        (
            "[s2s]\nlisten = [\"[::]:5269\",\n  \"[::]:5269\"]\n",
            3,
            "s2s.listen[1]",
            "`[::]:5269` is listed twice (first as s2s.listen[0])",
        ),
        (
            "[s2s]\ndirect_tls_listen = [\"0.0.0.0:5270\", \"0.0.0.0:5270\"]\n",
            2,
            "s2s.direct_tls_listen[1]",
            "`0.0.0.0:5270` is listed twice (first as s2s.direct_tls_listen[0])",
        ),
        (
            "[c2s]\nlisten = [\"0.0.0.0:5269\"]\n",
            2,
            // s2s.listen keeps its default: the error points at what is written.
            "c2s.listen[0]",
            "`0.0.0.0:5269` is both s2s.listen[0] and c2s.listen[0]",
        ),
        (
            "[s2s]\nlisten = [\"127.0.0.1:5222\"]\n",
            2,
            "s2s.listen[0]",
            "`127.0.0.1:5222` is both s2s.listen[0] and c2s.listen[0]",
        ),
        (
            "[s2s]\ndirect_tls_listen = [\"0.0.0.0:5269\"]\n",
            2,
            "s2s.direct_tls_listen[0]",
            "`0.0.0.0:5269` is both s2s.direct_tls_listen[0] and s2s.listen[0]",
        ),
        (
            "[s2s]\nlisten = []\ndirect_tls_listen = [\"127.0.0.1:5222\"]\n",
            3,
            "s2s.direct_tls_listen[0]",
            "`127.0.0.1:5222` is both s2s.direct_tls_listen[0] and c2s.listen[0]",
        ),
        (
            "[s2s]\nlisten = [\"127.0.0.1:9269\"]\n",
            2,
            "s2s.listen[0]",
            "`127.0.0.1:9269` is both metrics.listen and s2s.listen[0]",
        ),
        (
            "[s2s]\ndirect_tls_listen = [\"[::1]:9000\"]\n[metrics]\nlisten = \"[::1]:9000\"\n",
            4,
            "metrics.listen",
            "`[::1]:9000` is both metrics.listen and s2s.direct_tls_listen[0]",
        ),
    ];
    for (text, line, key, message) in cases {
        let e = error(text);
        assert_error(&e, ConfigErrorKind::Invalid, line, key, message);
        assert_eq!(e.message(), message);
    }
}

#[test]
fn the_same_port_on_different_addresses_is_accepted() {
    let c = parse(
        "c2s.listen = [\"127.0.0.1:5222\"]\n\
         s2s.listen = [\"127.0.0.1:5269\", \"192.0.2.1:5269\", \"[::1]:5269\"]\n",
    );
    assert_eq!(c.s2s.listen.len(), 3);
}

#[test]
fn dns_nameservers_are_socket_addresses() {
    let c = parse("s2s.dns_nameservers = [\"127.0.0.1:5300\", \"[::1]:53\"]");
    assert_eq!(
        c.s2s.dns_nameservers,
        [addr("127.0.0.1:5300"), addr("[::1]:53")]
    );
    // A nameserver may share an address with a listener: it is a destination.
    let c = parse("s2s.dns_nameservers = [\"127.0.0.1:5222\"]");
    assert_eq!(c.s2s.dns_nameservers, [addr("127.0.0.1:5222")]);
}

#[test]
fn a_bad_dns_nameserver_is_refused() {
    for (value, message) in [
        ("9.9.9.9", "`9.9.9.9` has no port: write 9.9.9.9:53"),
        (
            "2001:db8::53",
            "`2001:db8::53` has no port: write [2001:db8::53]:53",
        ),
        (
            "dns.example:53",
            "`dns.example:53` is not a socket address: expected IP:port, such as 127.0.0.1:53 \
             or [::1]:53 (host names are not resolved)",
        ),
        ("127.0.0.1:0", "`127.0.0.1:0`: port 0 cannot be queried"),
        (
            "0.0.0.0:53",
            "`0.0.0.0:53` is the unspecified address; name the DNS server's address",
        ),
    ] {
        let e = error(&format!("[s2s]\ndns_nameservers = [\n  \"{value}\"]\n"));
        assert_error(
            &e,
            ConfigErrorKind::Invalid,
            3,
            "s2s.dns_nameservers[0]",
            message,
        );
        assert_eq!(e.message(), message);
    }
    let e = error("[s2s]\ndns_nameservers = [\"[::1]:53\", \"[::1]:53\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "s2s.dns_nameservers[1]",
        "`[::1]:53` is listed twice (first as s2s.dns_nameservers[0])",
    );
}

#[test]
fn no_private_target_is_allowed_by_default_and_a_bad_network_names_its_key() {
    assert!(parse("").s2s.allow_private_targets.is_empty());
    assert!(
        Config::default_embedded()
            .s2s
            .allow_private_targets
            .is_empty()
    );
    let e = error("[s2s]\nallow_private_targets = [\n  \"127.0.0.0/8\",\n  \"10.0.0.1/8\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        4,
        "s2s.allow_private_targets[1]",
        "10.0.0.1/8 has host bits set: write 10.0.0.0/8 for the network",
    );
    let e = error("[s2s]\nallow_private_targets = [\"localhost\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "s2s.allow_private_targets[0]",
        "`localhost` is not a network: expected CIDR such as 10.0.0.0/8 or fd00::/8",
    );
}

#[test]
fn an_unknown_s2s_key_is_refused() {
    let e = error("[s2s]\nlisten = []\ndirect_tls = [\"0.0.0.0:5270\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        3,
        "s2s.direct_tls",
        "unknown field `direct_tls`",
    );
    let e = error("s2s.listen = \"0.0.0.0:5269\"");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        1,
        "s2s.listen",
        "expected an array",
    );
}

#[test]
fn there_are_no_partners_by_default() {
    assert!(Config::default_embedded().partners.is_empty());
    assert!(parse("").partners.is_empty());
}

#[test]
fn proxy_fqdn_takes_host_and_optional_port() {
    for (value, host, port, shown) in [
        (
            "xmpp.example.net",
            "xmpp.example.net",
            5269,
            "xmpp.example.net:5269",
        ),
        (
            "xmpp.example.net:5270",
            "xmpp.example.net",
            5270,
            "xmpp.example.net:5270",
        ),
        (
            "XMPP.Example.NET.:1",
            "xmpp.example.net",
            1,
            "xmpp.example.net:1",
        ),
        (
            "edge_1.corp:65535",
            "edge_1.corp",
            65535,
            "edge_1.corp:65535",
        ),
        ("localhost", "localhost", 5269, "localhost:5269"),
        ("192.0.2.7", "192.0.2.7", 5269, "192.0.2.7:5269"),
        ("192.0.2.7:5222", "192.0.2.7", 5222, "192.0.2.7:5222"),
        ("[2001:DB8:0::7]", "2001:db8::7", 5269, "[2001:db8::7]:5269"),
        ("[::1]:5270", "::1", 5270, "[::1]:5270"),
    ] {
        let c = parse(&format!(
            "[[partner]]\ndomain = \"example.net\"\nproxy_fqdn = \"{value}\"\n"
        ));
        let target = c.partners[0].proxy_fqdn.clone().expect("a proxy target");
        assert_eq!(
            target,
            ProxyTarget {
                host: host.into(),
                port
            },
            "{value}"
        );
        assert_eq!(target.to_string(), shown, "{value}");
    }
}

#[test]
fn partner_finds_a_partner_by_domain() {
    let c = parse(
        "[[partner]]\ndomain = \"example.net\"\n\
         [[partner]]\ndomain = \"Chat.Example.COM\"\nproxy_fqdn = \"192.0.2.1\"\n",
    );
    assert_eq!(c.partners.len(), 2);
    let p = c.partner("chat.example.com").expect("listed partner");
    assert_eq!(p.domain, "chat.example.com");
    assert_eq!(
        p.proxy_fqdn.as_ref().map(|t| t.to_string()).as_deref(),
        Some("192.0.2.1:5269")
    );
    assert_eq!(
        c.partner("EXAMPLE.net.").map(|p| p.domain.as_str()),
        Some("example.net")
    );
    assert_eq!(c.partner("example.org"), None);
    assert_eq!(c.partner("net"), None);
    let c = parse(
        "[[partner]]\ndomain = \"example.net\"\nadditional_domains = [\"muc.example.net\"]\n",
    );
    assert_eq!(
        c.partner("MUC.example.net.").map(|p| p.domain.as_str()),
        Some("example.net")
    );
    assert_eq!(c.partner(""), None);
}

#[test]
fn a_partner_without_a_domain_is_refused() {
    let e =
        error("[[partner]]\ndomain = \"example.net\"\n\n[[partner]]\nproxy_fqdn = \"x.example\"\n");
    assert_error(
        &e,
        ConfigErrorKind::MissingKey,
        4,
        "partner[1].domain",
        "missing field `domain`",
    );
}

#[test]
fn an_unknown_partner_key_is_refused() {
    let e = error("[[partner]]\ndomain = \"example.net\"\nproxyfqdn = \"x.example\"\n");
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        3,
        "partner[0].proxyfqdn",
        "unknown field `proxyfqdn`",
    );
    let e = error("[partner]\ndomain = \"example.net\"\n");
    assert_error(&e, ConfigErrorKind::Type, 1, "partner", "expected an array");
}

#[test]
fn an_invalid_partner_domain_is_refused() {
    for value in ["bad domain", "user@example.net", "", "example.net/res"] {
        let e = error(&format!(
            "[[partner]]\ndomain = \"example.net\"\n[[partner]]\ndomain = \"{value}\"\n"
        ));
        assert_error(
            &e,
            ConfigErrorKind::Invalid,
            4,
            "partner[1].domain",
            "is not a valid domain",
        );
    }
}

#[test]
fn a_duplicate_partner_domain_is_refused_after_lower_casing() {
    let e = error(
        "[[partner]]\ndomain = \"example.net\"\n\
         [[partner]]\ndomain = \"other.example\"\n\
         [[partner]]\ndomain = \"EXAMPLE.net.\"\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        6,
        "partner[2].domain",
        "`example.net` is listed twice (first as partner[0].domain)",
    );
}

#[test]
fn a_local_domain_as_partner_is_refused() {
    let e = error(
        "[server]\ndomains = [\"example.org\", \"example.net\"]\n\
         [[partner]]\ndomain = \"Example.NET\"\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        4,
        "partner[0].domain",
        "`example.net` is one of server.domains; a partner is a remote domain",
    );
    // The embedded `localhost` counts too.
    let e = error("[[partner]]\ndomain = \"localhost\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "partner[0].domain",
        "is one of server.domains",
    );
}

#[test]
fn a_malformed_proxy_fqdn_is_refused() {
    const EXPECTED: &str = " (expected host or host:port, such as \
                            xmpp.example.net:5269, 192.0.2.1 or [2001:db8::1]:5269)";
    for (value, why) in [
        (":5269", "the host is empty"),
        ("[]:5269", "the host is empty"),
        (".:5269", "the host is empty"),
        ("xmpp.example.net:", "the port is empty"),
        ("xmpp.example.net:0", "port 0 cannot be connected to"),
        ("xmpp.example.net:65536", "port 65536 is above 65535"),
        ("xmpp.example.net:xmpp", "`xmpp` is not a port number"),
        ("xmpp.example.net:+5269", "`+5269` is not a port number"),
        ("2001:db8::1", "an IPv6 address must be in brackets"),
        ("[2001:db8::1", "`[` without a closing `]`"),
        ("[2001:db8::1]5269", "only `:port` may follow `]`"),
        (
            "[xmpp.example.net]:5269",
            "`xmpp.example.net` is not an IPv6 address (only those go in brackets)",
        ),
        (
            "xmpp example.net",
            "`xmpp example.net` is not a valid host name",
        ),
        (
            "xmpp..example.net",
            "`xmpp..example.net` is not a valid host name",
        ),
        (
            "-xmpp.example.net",
            "`-xmpp.example.net` is not a valid host name",
        ),
        (
            "192.0.2.300",
            "`192.0.2.300` is neither an IPv4 address nor a host name",
        ),
        (
            "xmpp.exämple.net",
            "a host name must be ASCII; write an internationalised name in its xn-- form",
        ),
    ] {
        let e = error(&format!(
            "[[partner]]\ndomain = \"example.net\"\n\n[[partner]]\ndomain = \"example.com\"\n\
             proxy_fqdn = \"{value}\"\n"
        ));
        assert_error(
            &e,
            ConfigErrorKind::Invalid,
            6,
            "partner[1].proxy_fqdn",
            why,
        );
        assert_eq!(e.message(), format!("`{value}`: {why}{EXPECTED}"));
    }
    let e = error("[[partner]]\ndomain = \"example.net\"\nproxy_fqdn = \"\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "partner[0].proxy_fqdn",
        "must not be empty; remove the key to find the partner through DNS SRV",
    );
}

#[test]
fn a_proxy_fqdn_error_shows_file_line_and_key() {
    let e = error("[[partner]]\ndomain = \"example.net\"\nproxy_fqdn = \"xmpp.example.net:0\"\n");
    assert_eq!(
        e.to_string(),
        "conf/fedrouter.toml:3:14: partner[0].proxy_fqdn: `xmpp.example.net:0`: port 0 cannot \
         be connected to (expected host or host:port, such as xmpp.example.net:5269, \
         192.0.2.1 or [2001:db8::1]:5269)"
    );
}

#[test]
fn zero_timeouts_are_refused() {
    for key in [
        "keep_alive_interval",
        "stream_establishment_timeout",
        "stream_inactivity_timeout",
        "subscription_refresh_interval",
    ] {
        let e = error(&format!("[gateway]\n{key} = 0\n"));
        assert_error(
            &e,
            ConfigErrorKind::Invalid,
            2,
            &format!("gateway.{key}"),
            "at least 1 second",
        );
    }
}

#[test]
fn zero_connection_limits_are_refused() {
    let e = error("[gateway]\nconnection_limit = 0\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.connection_limit",
        "at least 1",
    );
    let e = error("[gateway]\npartner_connection_limit = 0\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.partner_connection_limit",
        "at least 1",
    );
}

#[test]
fn a_partner_limit_above_the_total_limit_is_refused() {
    let e = error("[gateway]\nconnection_limit = 10\n");
    // Only the total is written, so the error points there.
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.connection_limit",
        "partner_connection_limit (20) must not exceed connection_limit (10)",
    );
}

#[test]
fn a_pre_auth_limit_above_the_stanza_limit_is_refused() {
    let e = error("[gateway]\nmax_stanza_size_pre_auth = 20000\nmax_stanza_size = 10000\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.max_stanza_size_pre_auth",
        "must not exceed max_stanza_size",
    );
}

#[test]
fn queue_byte_caps_below_the_stanza_limit_are_refused_naming_both_keys() {
    let e = error("[gateway]\nmax_stanza_size = 65536\nsession_queue_bytes = 65535\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "gateway.session_queue_bytes",
        "must be at least max_stanza_size (65536)",
    );
    let e = error("[gateway]\ns2s_queue_bytes = 1000\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.s2s_queue_bytes",
        "must be at least max_stanza_size (524288)",
    );
}

#[test]
fn queue_caps_and_rate_limits_default_to_2_mib_16_mib_256_kib_s_and_off() {
    let g = Config::default_embedded().gateway;
    assert_eq!(g.session_queue_bytes, 2 * 1024 * 1024);
    assert_eq!(g.s2s_queue_bytes, 16 * 1024 * 1024);
    assert_eq!(g.c2s_rate_limit, 256 * 1024);
    assert_eq!(g.s2s_rate_limit, 0);
    let c = parse(
        "[gateway]\nc2s_rate_limit = 0\ns2s_rate_limit = 1048576\nsession_queue_bytes = 4194304\n",
    );
    assert_eq!(c.gateway.c2s_rate_limit, 0);
    assert_eq!(c.gateway.s2s_rate_limit, 1_048_576);
    assert_eq!(c.gateway.session_queue_bytes, 4 * 1024 * 1024);
}

#[test]
fn stanza_limits_below_the_protocol_minimums_are_refused() {
    let e = error("[gateway]\nmax_stanza_size = 9999\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.max_stanza_size",
        "RFC 6120",
    );
    let e = error("[gateway]\nmax_stanza_size_pre_auth = 100\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.max_stanza_size_pre_auth",
        "1024",
    );
}

#[test]
fn an_empty_dialback_passphrase_is_refused() {
    let e = error("[gateway]\ndialback_passphrase = \" \"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.dialback_passphrase",
        "remove the key",
    );
}

#[test]
fn the_c2s_login_settings_are_read_and_checked() {
    let c = parse(
        "[c2s]\nscram_iterations = 4096\nmax_auth_failures_per_account = 3\n\
         max_auth_failures_per_ip = 7\nauth_failure_window = 2\n",
    );
    assert_eq!(c.c2s.scram_iterations, 4096);
    assert_eq!(c.c2s.max_auth_failures_per_account, 3);
    assert_eq!(c.c2s.max_auth_failures_per_ip, 7);
    assert_eq!(c.c2s.auth_failure_window, Duration::from_secs(2));
    for (text, line, key, needle) in [
        (
            "[c2s]\nscram_iterations = 4095\n",
            2,
            "c2s.scram_iterations",
            "must be from 4096",
        ),
        (
            "[c2s]\n\nscram_iterations = 1000001\n",
            3,
            "c2s.scram_iterations",
            "to 1000000",
        ),
        (
            "[c2s]\nmax_auth_failures_per_account = 0\n",
            2,
            "c2s.max_auth_failures_per_account",
            "at least 1",
        ),
        (
            "[c2s]\nmax_auth_failures_per_ip = 0\n",
            2,
            "c2s.max_auth_failures_per_ip",
            "at least 1",
        ),
        (
            "[c2s]\nauth_failure_window = 0\n",
            2,
            "c2s.auth_failure_window",
            "at least 1 second",
        ),
    ] {
        assert_error(&error(text), ConfigErrorKind::Invalid, line, key, needle);
    }
}

#[test]
fn a_dialback_passphrase_shorter_than_16_bytes_is_refused() {
    let e = error("[gateway]\ndialback_passphrase = \"fifteen-bytes!!\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "gateway.dialback_passphrase",
        "is 15 bytes long; it must be at least 16",
    );
    // Bytes, not characters: 8 two-byte characters are enough.
    let c = parse("gateway.dialback_passphrase = \"éééééééé\"");
    assert_eq!(c.gateway.dialback_passphrase.as_deref(), Some("éééééééé"));
    parse("gateway.dialback_passphrase = \"sixteen-bytes!!!\"");
}

#[test]
fn a_bad_log_level_is_refused() {
    for (level, needle) in [
        ("", "must not be empty"),
        (" , ", "must not be empty"),
        ("infoo", "`infoo` is not a level"),
        ("info, fedrouter=verbose", "not a valid filter"),
        ("fedrouter s2s=debug", "contains a space"),
    ] {
        let e = error(&format!("[log]\nlevel = \"{level}\"\n"));
        assert_error(&e, ConfigErrorKind::Invalid, 2, "log.level", needle);
    }
}

#[test]
fn a_semantic_error_on_a_default_points_at_the_key_that_is_written() {
    // metrics.listen keeps its default and c2s.listen takes the same
    // address: the error points at the line the operator wrote.
    let e = error("[c2s]\nlisten = [\"127.0.0.1:9269\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "c2s.listen[0]",
        "`127.0.0.1:9269` is both metrics.listen and c2s.listen[0]",
    );
}

// ---- paths and files ----

#[test]
fn relative_paths_are_resolved_against_the_config_files_directory() {
    let text = "data_dir = 'var'\n";
    let text = format!(
        "[server]\n{text}domains = ['example.org']\n[tls]\nca_file = 'ca.pem'\n\
         [[tls.certificate]]\ndomain = 'example.org'\ncert = 'certs/e.pem'\nkey = '/abs/e.key'\n"
    );
    let c = Config::from_toml_str(&text, Some(Path::new("/etc/fedrouter/fedrouter.toml")))
        .expect("valid");
    assert_eq!(c.server.data_dir, PathBuf::from("/etc/fedrouter/var"));
    assert_eq!(c.tls.ca_file, Some(PathBuf::from("/etc/fedrouter/ca.pem")));
    assert_eq!(
        c.tls.certificates[0].cert,
        PathBuf::from("/etc/fedrouter/certs/e.pem")
    );
    assert_eq!(c.tls.certificates[0].key, PathBuf::from("/abs/e.key"));
    assert_eq!(
        c.source,
        Some(PathBuf::from("/etc/fedrouter/fedrouter.toml"))
    );

    let c = Config::from_toml_str(&text, Some(Path::new("fedrouter.toml"))).expect("valid");
    assert_eq!(c.server.data_dir, PathBuf::from("var"));
    let c = Config::from_toml_str(&text, Some(Path::new("conf/f.toml"))).expect("valid");
    assert_eq!(c.server.data_dir, PathBuf::from("conf/var"));
    let c = Config::from_toml_str(&text, None).expect("valid");
    assert_eq!(c.server.data_dir, PathBuf::from("var"));
}

#[test]
fn a_missing_file_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("absent.toml");
    let e = Config::load(&path).expect_err("missing file");
    assert_eq!(e.kind(), ConfigErrorKind::Io);
    assert_eq!(e.file(), Some(path.as_path()));
    assert_eq!(e.line(), None);
    assert!(
        e.to_string()
            .starts_with(&format!("{}: cannot read", path.display()))
    );
}

#[test]
fn a_file_that_is_not_utf8_is_an_error_naming_the_file() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("latin1.toml");
    std::fs::write(&path, b"# caf\xe9\n").expect("write");
    let e = Config::load(&path).expect_err("not UTF-8");
    assert_eq!(e.kind(), ConfigErrorKind::Io);
    assert!(e.message().contains("not UTF-8"), "{e}");
}

#[test]
fn a_loaded_file_resolves_paths_and_names_itself_in_errors() {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.toml");
    std::fs::write(&path, "[server]\ndata_dir = \"d\"\n").expect("write");
    let c = Config::load(&path).expect("valid");
    assert_eq!(c.server.data_dir, dir.path().join("d"));
    assert_eq!(c.source.as_deref(), Some(path.as_path()));

    std::fs::write(&path, "[server]\nworkers = \"many\"\n").expect("write");
    let e = Config::load(&path).expect_err("type error");
    assert!(
        e.to_string()
            .starts_with(&format!("{}:2:11: server.workers: ", path.display())),
        "{e}"
    );
}

#[test]
fn locate_prefers_the_cli_path_then_the_environment_then_nothing() {
    let cli = Path::new("/cli.toml");
    let env = || Some(OsString::from("/env.toml"));
    assert_eq!(
        locate_with(Some(cli), env()),
        Some(PathBuf::from("/cli.toml"))
    );
    assert_eq!(locate_with(None, env()), Some(PathBuf::from("/env.toml")));
    assert_eq!(locate_with(None, Some(OsString::new())), None);
    assert_eq!(locate_with(None, None), None);
}

#[test]
fn load_or_default_with_a_cli_path_loads_that_file() {
    // Only the CLI path is used here: the environment is process-global and
    // other tests run in parallel, so the env branch is covered by
    // `locate_with` above.
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("f.toml");
    std::fs::write(&path, "server.workers = 7\n").expect("write");
    assert_eq!(
        Config::load_or_default(Some(&path))
            .expect("valid")
            .server
            .workers,
        7
    );
}

/// Uncomments every `# [[partner]]` block of the example: the header and
/// the `# key = value` lines after it, up to the first other line.
fn uncomment_partner_examples(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut inside = false;
    for line in text.lines() {
        if line == "# [[partner]]" {
            inside = true;
        } else if inside && !(line.starts_with("# ") && line.contains(" = ")) {
            inside = false;
        }
        out.push_str(if inside { &line[2..] } else { line });
        out.push('\n');
    }
    out
}

#[test]
fn the_shipped_example_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fedrouter.toml");
    let c = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.server.domains, ["example.org", "contractors.example.org"]);
    assert!(
        c.tls
            .certificates
            .iter()
            .all(|cert| cert.cert.starts_with("/etc/fedrouter/"))
    );
    assert_eq!(c.tls.certificates.len(), 2);
    // The example spells out the defaults, so apart from what it must
    // change it is the embedded default.
    assert_eq!(c.gateway, GatewayConfig::default());
    assert_eq!(c.c2s, Config::default_embedded().c2s);
    // s2s is the file default (public), not the embedded one (loopback).
    assert_eq!(c.s2s, parse("").s2s);
    assert_eq!(c.s2s.listen, [addr("0.0.0.0:5269")]);
    assert_eq!(c.s2s.unlisted_domains, Unlisted::Deny);
    // The example enables federation globally, and takes it away from the
    // contractors' domain and from bob.
    assert_eq!(
        c.access_policies,
        [
            AccessPolicyConfig {
                name: "global".into(),
                description: None,
                enable_federation_access: true,
                enable_xmpp_access: true,
                domains: vec![],
                users: vec![],
            },
            AccessPolicyConfig {
                name: "no-federation".into(),
                description: None,
                enable_federation_access: false,
                enable_xmpp_access: false,
                domains: vec!["contractors.example.org".into()],
                users: vec![BareJid::parse("bob@example.org").expect("jid")],
            },
        ]
    );
    // The [[partner]] examples are commented out; uncommented, they are
    // valid and give no warning.
    assert!(c.partners.is_empty());
    let text = std::fs::read_to_string(&path).expect("read the example");
    let c = match Config::from_toml_str(&uncomment_partner_examples(&text), Some(&path)) {
        Ok(c) => c,
        Err(e) => panic!("the [[partner]] examples, uncommented: {e}"),
    };
    assert_eq!(
        c.partners,
        [
            PartnerConfig {
                domain: "example.net".into(),
                proxy_fqdn: Some(ProxyTarget {
                    host: "xmpp.example.net".into(),
                    port: 5269,
                }),
                additional_domains: vec!["conference.example.net".into()],
                partner_type: PartnerType::Federated,
                tls_negotiation: Negotiate::Required,
                sasl_negotiation: Negotiate::Required,
                support_dialback_negotiation: false,
                enable_keep_alive: true,
                connection_limit: 20,
                description: Some("Example Inc., xmpp-admin@example.net".into()),
            },
            PartnerConfig {
                tls_negotiation: Negotiate::NotSupported,
                sasl_negotiation: Negotiate::NotSupported,
                enable_keep_alive: false,
                ..default_partner("legacy.example.com", 20)
            },
        ]
    );
    assert_eq!(
        crate::policy::Policy::from_config(&c).warnings(),
        &[] as &[String]
    );
    assert_eq!(c.metrics, Config::default_embedded().metrics);
    assert_eq!(c.log, Config::default_embedded().log);
}

#[test]
fn parents_walks_up_a_dotted_path() {
    let p: Vec<&str> = parents("tls.certificate[1].cert").collect();
    assert_eq!(p, ["tls.certificate[1]", "tls.certificate", "tls"]);
}

// ---- [[partner]]: the Lync partner model (§7) ----

#[test]
fn a_partner_with_only_a_domain_takes_the_lync_defaults() {
    let c = parse("[[partner]]\ndomain = \"example.net\"\n");
    assert_eq!(c.partners, [default_partner("example.net", 20)]);
    // connection_limit follows gateway.partner_connection_limit.
    let c = parse("gateway.partner_connection_limit = 7\n[[partner]]\ndomain = \"example.net\"\n");
    assert_eq!(c.partners[0].connection_limit, 7);
}

#[test]
fn a_partner_connection_limit_may_exceed_the_per_partner_default_but_not_the_total() {
    let c = parse("[[partner]]\ndomain = \"example.net\"\nconnection_limit = 1000\n");
    assert_eq!(c.partners[0].connection_limit, 1000);
    let e = error("[[partner]]\ndomain = \"example.net\"\nconnection_limit = 0\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "partner[0].connection_limit",
        "must be at least 1",
    );
    let e = error("[[partner]]\ndomain = \"example.net\"\nconnection_limit = 1001\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "partner[0].connection_limit",
        "1001 exceeds gateway.connection_limit (1000)",
    );
}

#[test]
fn negotiation_values_are_snake_case_and_unknown_ones_list_the_choices() {
    let c = parse(
        "[[partner]]\ndomain = \"example.net\"\ntls_negotiation = \"optional\"\n\
         sasl_negotiation = \"not_supported\"\n",
    );
    assert_eq!(c.partners[0].tls_negotiation, Negotiate::Optional);
    assert_eq!(c.partners[0].sasl_negotiation, Negotiate::NotSupported);
    let e = error("[[partner]]\ndomain = \"example.net\"\ntls_negotiation = \"NotSupported\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        3,
        "partner[0].tls_negotiation",
        "expected one of `required`, `optional`, `not_supported`",
    );
    let e = error("[[partner]]\ndomain = \"example.net\"\nsasl_negotiation = true\n");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        3,
        "partner[0].sasl_negotiation",
        "invalid type: expected a string",
    );
    let e = error("[[partner]]\ndomain = \"example.net\"\npartner_type = \"ignore_list\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        3,
        "partner[0].partner_type",
        "expected one of `federated`, `public_verified`, `public_unverified`",
    );
}

#[test]
fn every_partner_type_is_read() {
    for (value, t) in [
        ("federated", PartnerType::Federated),
        ("public_verified", PartnerType::PublicVerified),
        ("public_unverified", PartnerType::PublicUnverified),
    ] {
        let c = parse(&format!(
            "[[partner]]\ndomain = \"example.net\"\npartner_type = \"{value}\"\n"
        ));
        assert_eq!(c.partners[0].partner_type, t);
        assert_eq!(t.as_str(), value);
    }
}

/// A second partner with the three negotiation keys written on lines 5, 6, 7.
fn negotiation(tls: &str, sasl: &str, dialback: bool) -> String {
    format!(
        "[[partner]]\ndomain = \"other.example\"\n[[partner]]\ndomain = \"Example.NET\"\n\
         tls_negotiation = \"{tls}\"\nsasl_negotiation = \"{sasl}\"\n\
         support_dialback_negotiation = {dialback}\n"
    )
}

#[test]
fn every_invalid_matrix_row_is_refused_naming_the_partner_and_the_rule() {
    // (tls, sasl, dialback, line, key, the written pair)
    let sasl_needs_tls = "SASL must have TLS support";
    let sasl_or_dialback = "SASL or Dialback must be enabled";
    for (tls, sasl, dialback, line, field, rule, pair) in [
        (
            "not_supported",
            "required",
            false,
            6,
            "sasl_negotiation",
            sasl_needs_tls,
            "(tls_negotiation = \"not_supported\" with sasl_negotiation = \"required\")",
        ),
        (
            "not_supported",
            "optional",
            false,
            6,
            "sasl_negotiation",
            sasl_needs_tls,
            "(tls_negotiation = \"not_supported\" with sasl_negotiation = \"optional\")",
        ),
        // The two rows the Lync matrix only warns about: refused (§11).
        (
            "not_supported",
            "required",
            true,
            6,
            "sasl_negotiation",
            sasl_needs_tls,
            "(tls_negotiation = \"not_supported\" with sasl_negotiation = \"required\")",
        ),
        (
            "not_supported",
            "optional",
            true,
            6,
            "sasl_negotiation",
            sasl_needs_tls,
            "(tls_negotiation = \"not_supported\" with sasl_negotiation = \"optional\")",
        ),
        (
            "required",
            "not_supported",
            false,
            7,
            "support_dialback_negotiation",
            sasl_or_dialback,
            "(sasl_negotiation = \"not_supported\" with support_dialback_negotiation = false)",
        ),
        (
            "optional",
            "not_supported",
            false,
            7,
            "support_dialback_negotiation",
            sasl_or_dialback,
            "(sasl_negotiation = \"not_supported\" with support_dialback_negotiation = false)",
        ),
        (
            "not_supported",
            "not_supported",
            false,
            7,
            "support_dialback_negotiation",
            sasl_or_dialback,
            "(sasl_negotiation = \"not_supported\" with support_dialback_negotiation = false)",
        ),
    ] {
        let e = error(&negotiation(tls, sasl, dialback));
        let expected = format!("partner example.net: {rule} {pair}");
        assert_error(
            &e,
            ConfigErrorKind::Invalid,
            line,
            &format!("partner[1].{field}"),
            &expected,
        );
    }
}

#[test]
fn a_matrix_error_reads_as_one_line_with_file_line_key_partner_and_rule() {
    let e = error(&negotiation("not_supported", "required", false));
    assert_eq!(
        e.to_string(),
        "conf/fedrouter.toml:6:20: partner[1].sasl_negotiation: partner example.net: \
         SASL must have TLS support (tls_negotiation = \"not_supported\" with \
         sasl_negotiation = \"required\"); SASL is never sent without TLS: enable TLS, \
         or set sasl_negotiation = \"not_supported\" for dialback only"
    );
    let e = error(&negotiation("required", "not_supported", false));
    assert_eq!(
        e.message(),
        "partner example.net: SASL or Dialback must be enabled (sasl_negotiation = \
         \"not_supported\" with support_dialback_negotiation = false); the partner would \
         have no way to authenticate"
    );
}

#[test]
fn a_matrix_error_points_at_the_key_that_is_written() {
    // sasl_negotiation keeps its default ("required"): the error is on tls.
    let e = error("[[partner]]\ndomain = \"example.net\"\ntls_negotiation = \"not_supported\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "partner[0].tls_negotiation",
        "SASL must have TLS support",
    );
    // Only dialback is switched off, sasl written: the error is on dialback.
    let e = error(
        "[[partner]]\ndomain = \"example.net\"\nsasl_negotiation = \"not_supported\"\n\
         support_dialback_negotiation = false\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        4,
        "partner[0].support_dialback_negotiation",
        "SASL or Dialback must be enabled",
    );
}

#[test]
fn every_valid_matrix_row_is_accepted() {
    use crate::policy::{Verdict, check};
    let mut accepted = 0;
    for (tls, t) in [
        ("required", Negotiate::Required),
        ("optional", Negotiate::Optional),
        ("not_supported", Negotiate::NotSupported),
    ] {
        for (sasl, s) in [
            ("required", Negotiate::Required),
            ("optional", Negotiate::Optional),
            ("not_supported", Negotiate::NotSupported),
        ] {
            for dialback in [true, false] {
                let text = negotiation(tls, sasl, dialback);
                let result = Config::from_toml_str(&text, None);
                match check(t, s, dialback) {
                    Verdict::Invalid(_) => assert!(result.is_err(), "{text}"),
                    _ => {
                        let c = result.unwrap_or_else(|e| panic!("{text}: {e}"));
                        let p = &c.partners[1];
                        assert_eq!(
                            (
                                p.tls_negotiation,
                                p.sasl_negotiation,
                                p.support_dialback_negotiation
                            ),
                            (t, s, dialback)
                        );
                        accepted += 1;
                    }
                }
            }
        }
    }
    // 18 combinations: 5 invalid in the Lync table plus the 2 refused by §11.
    assert_eq!(accepted, 11);
}

#[test]
fn additional_domains_are_normalised() {
    let c = parse(
        "[[partner]]\ndomain = \"example.net\"\n\
         additional_domains = [\"Chat.Example.NET.\", \"muc.example.net\"]\n",
    );
    assert_eq!(
        c.partners[0].additional_domains,
        ["chat.example.net", "muc.example.net"]
    );
}

#[test]
fn an_additional_domain_named_twice_anywhere_is_refused() {
    // (text, line, key, message)
    let cases = [
        (
            "[[partner]]\ndomain = \"example.net\"\n\
             additional_domains = [\"a.example.net\", \"A.example.net\"]\n",
            3,
            "partner[0].additional_domains[1]",
            "`a.example.net` is listed twice (first as partner[0].additional_domains[0])",
        ),
        (
            "[[partner]]\ndomain = \"example.net\"\nadditional_domains = [\"example.net\"]\n",
            3,
            "partner[0].additional_domains[0]",
            "`example.net` is listed twice (first as partner[0].domain)",
        ),
        (
            "[[partner]]\ndomain = \"example.net\"\n\
             [[partner]]\ndomain = \"example.com\"\nadditional_domains = [\"EXAMPLE.net\"]\n",
            5,
            "partner[1].additional_domains[0]",
            "`example.net` is listed twice (first as partner[0].domain)",
        ),
        (
            "[[partner]]\ndomain = \"example.net\"\nadditional_domains = [\"chat.example.net\"]\n\
             [[partner]]\ndomain = \"chat.example.net\"\n",
            5,
            "partner[1].domain",
            "`chat.example.net` is listed twice (first as partner[0].additional_domains[0])",
        ),
    ];
    for (text, line, key, message) in cases {
        let e = error(text);
        assert_error(&e, ConfigErrorKind::Invalid, line, key, message);
        assert_eq!(e.message(), message);
    }
}

#[test]
fn a_local_or_invalid_additional_domain_is_refused() {
    let e = error(
        "server.domains = [\"example.org\"]\n[[partner]]\ndomain = \"example.net\"\n\
         additional_domains = [\"x.example.net\", \"Example.ORG\"]\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        4,
        "partner[0].additional_domains[1]",
        "`example.org` is one of server.domains; a partner is a remote domain",
    );
    let e = error("[[partner]]\ndomain = \"example.net\"\nadditional_domains = [\"a b\"]\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "partner[0].additional_domains[0]",
        "is not a valid domain",
    );
}

// ---- [s2s] unlisted domains ----

#[test]
fn unlisted_domains_are_denied_by_default_as_in_lync() {
    for c in [Config::default_embedded(), parse("")] {
        assert_eq!(c.s2s.unlisted_domains, Unlisted::Deny);
        assert_eq!(c.s2s.unlisted_partner_type, PartnerType::PublicUnverified);
    }
}

#[test]
fn unlisted_domains_may_be_allowed_with_a_partner_type() {
    let c = parse("[s2s]\nunlisted_domains = \"allow\"\n");
    assert_eq!(c.s2s.unlisted_domains, Unlisted::Allow);
    assert_eq!(c.s2s.unlisted_partner_type, PartnerType::PublicUnverified);
    let c = parse("[s2s]\nunlisted_domains = \"allow\"\nunlisted_partner_type = \"federated\"\n");
    assert_eq!(c.s2s.unlisted_partner_type, PartnerType::Federated);
    let e = error("[s2s]\nunlisted_domains = \"open\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Type,
        2,
        "s2s.unlisted_domains",
        "expected `deny` or `allow`",
    );
}

// ---- [[access_policy]] (§6) ----

#[test]
fn there_are_no_access_policies_by_default() {
    assert!(Config::default_embedded().access_policies.is_empty());
    assert!(parse("").access_policies.is_empty());
}

#[test]
fn an_access_policy_defaults_to_both_switches_off() {
    let c = parse("[[access_policy]]\nname = \"global\"\n");
    let a = &c.access_policies[0];
    assert!(!a.enable_federation_access && !a.enable_xmpp_access);
    assert!(a.is_global());
    assert!(parse("[[access_policy]]\nname = \"GLOBAL\"\n").access_policies[0].is_global());
}

#[test]
fn a_bad_access_policy_is_refused_with_line_and_key() {
    // (the entries after a valid global one, line, key, message)
    let cases: &[(&str, usize, &str, &str)] = &[
        (
            "name = \" \"\n",
            5,
            "access_policy[1].name",
            "must not be empty",
        ),
        (
            "name = \"Global\"\n",
            5,
            "access_policy[1].name",
            "`Global` is used twice (first as access_policy[0].name; names are compared ignoring case)",
        ),
        (
            "name = \"a\"\ndomains = [\"example.net\"]\n",
            6,
            "access_policy[1].domains[0]",
            "`example.net` is not one of server.domains (example.org, contractors.example.org); \
             an access policy applies to local users",
        ),
        (
            "name = \"a\"\ndomains = [\"bad domain\"]\n",
            6,
            "access_policy[1].domains[0]",
            "`bad domain` is not a valid domain",
        ),
        (
            "name = \"a\"\ndomains = [\"example.org\", \"Example.org\"]\n",
            6,
            "access_policy[1].domains[1]",
            "`example.org` is listed twice (first as access_policy[1].domains[0])",
        ),
        (
            "name = \"a\"\nusers = [\"bob@example.org/phone\"]\n",
            6,
            "access_policy[1].users[0]",
            "`bob@example.org/phone` has a resource; name the user by their bare JID (user@domain)",
        ),
        (
            "name = \"a\"\nusers = [\"example.org\"]\n",
            6,
            "access_policy[1].users[0]",
            "`example.org` is a domain, not a user; put it in domains",
        ),
        (
            "name = \"a\"\nusers = [\"b b@example.org\"]\n",
            6,
            "access_policy[1].users[0]",
            "`b b@example.org` is not a valid bare JID (user@domain)",
        ),
        (
            "name = \"a\"\nusers = [\"bob@example.net\"]\n",
            6,
            "access_policy[1].users[0]",
            "`bob@example.net` is not in one of server.domains (example.org, \
             contractors.example.org); an access policy applies to local users",
        ),
        (
            "name = \"a\"\nusers = [\"bob@example.org\", \"BOB@example.org\"]\n",
            6,
            "access_policy[1].users[1]",
            "`bob@example.org` is listed twice (first as access_policy[1].users[0])",
        ),
    ];
    for (entry, line, key, message) in cases {
        let e = error(&format!(
            "server.domains = [\"example.org\", \"contractors.example.org\"]\n\
             [[access_policy]]\nname = \"global\"\n[[access_policy]]\n{entry}"
        ));
        assert_error(&e, ConfigErrorKind::Invalid, *line, key, message);
    }
}

#[test]
fn the_global_access_policy_takes_no_scope() {
    for field in [
        "domains = [\"example.org\"]",
        "users = [\"bob@example.org\"]",
    ] {
        let e = error(&format!(
            "server.domains = [\"example.org\"]\n[[access_policy]]\nname = \"global\"\n{field}\n"
        ));
        let key = field.split(' ').next().expect("field");
        assert_error(
            &e,
            ConfigErrorKind::Invalid,
            4,
            &format!("access_policy[0].{key}"),
            &format!(
                "the `global` policy applies to everyone no other policy names, so it takes \
                 no {key}; give this policy another name"
            ),
        );
    }
}

#[test]
fn a_user_or_domain_in_two_access_policies_is_refused_naming_both() {
    let e = error(
        "server.domains = [\"example.org\"]\n\
         [[access_policy]]\nname = \"staff\"\nusers = [\"bob@example.org\"]\n\
         [[access_policy]]\nname = \"no-federation\"\nusers = [\"Bob@Example.org\"]\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        7,
        "access_policy[1].users[0]",
        "`bob@example.org` is named by two access policies, `staff` \
         (access_policy[0].users[0]) and `no-federation`; it may have only one",
    );
    let e = error(
        "server.domains = [\"example.org\"]\n\
         [[access_policy]]\nname = \"staff\"\ndomains = [\"example.org\"]\n\
         [[access_policy]]\nname = \"no-federation\"\ndomains = [\"example.org\"]\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        7,
        "access_policy[1].domains[0]",
        "`example.org` is named by two access policies, `staff` \
         (access_policy[0].domains[0]) and `no-federation`; it may have only one",
    );
}

#[test]
fn an_access_policy_without_a_name_or_with_an_unknown_key_is_refused() {
    let e = error("[[access_policy]]\nenable_xmpp_access = true\n");
    assert_error(
        &e,
        ConfigErrorKind::MissingKey,
        1,
        "access_policy[0].name",
        "missing field `name`",
    );
    let e = error("[[access_policy]]\nname = \"global\"\nenable_public_cloud_access = true\n");
    assert_error(
        &e,
        ConfigErrorKind::UnknownKey,
        3,
        "access_policy[0].enable_public_cloud_access",
        "unknown field",
    );
}

#[test]
fn a_user_and_their_domain_may_be_in_different_policies() {
    let c = parse(
        "server.domains = [\"example.org\"]\n\
         [[access_policy]]\nname = \"site\"\ndomains = [\"example.org\"]\n\
         [[access_policy]]\nname = \"bob\"\nusers = [\"Bob@Example.ORG\"]\n",
    );
    assert_eq!(c.access_policies[1].users[0].as_str(), "bob@example.org");
}

// ---- [log] audit_file ----

#[test]
fn the_audit_file_is_unset_by_default_and_resolved_like_data_dir() {
    assert_eq!(Config::default_embedded().log.audit_file, None);
    let text = "[log]\naudit_file = \"audit/federation.log\"\n";
    let c = Config::from_toml_str(text, Some(Path::new("/etc/fedrouter/fedrouter.toml")))
        .expect("valid");
    assert_eq!(
        c.log.audit_file,
        Some(PathBuf::from("/etc/fedrouter/audit/federation.log"))
    );
    let c = Config::from_toml_str(
        "log.audit_file = \"/abs/a.log\"",
        Some(Path::new("x/f.toml")),
    )
    .expect("valid");
    assert_eq!(c.log.audit_file, Some(PathBuf::from("/abs/a.log")));
    let e = error("[log]\naudit_file = \"\"\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "log.audit_file",
        "must not be empty",
    );
}

#[test]
fn user_limits_default_and_zero_is_refused_with_line_and_key() {
    let l = Config::default_embedded().user_limits;
    assert_eq!(
        (
            l.max_roster_items,
            l.max_inbound_subscriptions_per_domain,
            l.max_directed_presence
        ),
        (10_000, 1_000, 1_000)
    );
    let c = parse("[user_limits]\nmax_roster_items = 5\nmax_directed_presence = 7\n");
    assert_eq!(c.user_limits.max_roster_items, 5);
    assert_eq!(c.user_limits.max_directed_presence, 7);
    let e =
        error("[user_limits]\nmax_roster_items = 100\nmax_inbound_subscriptions_per_domain = 0\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        3,
        "user_limits.max_inbound_subscriptions_per_domain",
        "must be at least 1",
    );
}

#[test]
fn storage_quota_defaults_and_bad_values_are_refused_with_line_and_key() {
    let s = Config::default_embedded().storage;
    assert_eq!(
        (
            s.offline_max_messages_per_user,
            s.offline_max_bytes_per_user
        ),
        (1_000, 10 * 1024 * 1024)
    );
    let c = parse(
        "[storage]\noffline_max_messages_per_user = 5\noffline_max_bytes_per_user = 600000\n",
    );
    assert_eq!(c.storage.offline_max_messages_per_user, 5);
    assert_eq!(c.storage.offline_max_bytes_per_user, 600_000);
    let e = error("[storage]\noffline_max_messages_per_user = 0\n");
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        2,
        "storage.offline_max_messages_per_user",
        "must be at least 1",
    );
    let e = error(
        "[gateway]\nmax_stanza_size = 20000\n[storage]\noffline_max_bytes_per_user = 19999\n",
    );
    assert_error(
        &e,
        ConfigErrorKind::Invalid,
        4,
        "storage.offline_max_bytes_per_user",
        "at least gateway.max_stanza_size (20000)",
    );
}

#[test]
fn the_connection_and_time_bounds_are_read_and_checked() {
    let c = parse(
        "[server]\nshutdown_grace = 3\nwrite_timeout = 4\n\
         [c2s]\nconnection_limit = 50\nconnection_limit_per_ip = 5\nidle_timeout = 9\n\
         [s2s]\nmax_unauthenticated = 20\nmax_unauthenticated_per_ip = 2\n\
         max_pre_auth_elements = 7\nmax_pending_dialback = 3\nmax_pending_dialback_total = 30\n",
    );
    assert_eq!(c.server.shutdown_grace, Duration::from_secs(3));
    assert_eq!(c.server.write_timeout, Duration::from_secs(4));
    assert_eq!(
        (c.c2s.connection_limit, c.c2s.connection_limit_per_ip),
        (50, 5)
    );
    assert_eq!(c.c2s.idle_timeout, Duration::from_secs(9));
    assert_eq!(
        (c.s2s.max_unauthenticated, c.s2s.max_unauthenticated_per_ip),
        (20, 2)
    );
    assert_eq!(c.s2s.max_pre_auth_elements, 7);
    assert_eq!(
        (c.s2s.max_pending_dialback, c.s2s.max_pending_dialback_total),
        (3, 30)
    );
    for (text, line, key, needle) in [
        (
            "[server]\nshutdown_grace = 0\n",
            2,
            "server.shutdown_grace",
            "at least 1 second",
        ),
        (
            "[server]\nwrite_timeout = 0\n",
            2,
            "server.write_timeout",
            "at least 1 second",
        ),
        (
            "[c2s]\nidle_timeout = 0\n",
            2,
            "c2s.idle_timeout",
            "at least 1 second",
        ),
        (
            "[c2s]\nconnection_limit = 0\n",
            2,
            "c2s.connection_limit",
            "at least 1",
        ),
        (
            "[c2s]\nconnection_limit = 10\nconnection_limit_per_ip = 11\n",
            3,
            "c2s.connection_limit_per_ip",
            "must not exceed c2s.connection_limit",
        ),
        (
            "[s2s]\nmax_unauthenticated_per_ip = 201\n",
            2,
            "s2s.max_unauthenticated_per_ip",
            "must not exceed s2s.max_unauthenticated (200)",
        ),
        (
            "[s2s]\nmax_pre_auth_elements = 0\n",
            2,
            "s2s.max_pre_auth_elements",
            "at least 1",
        ),
        (
            "[s2s]\nmax_pending_dialback_total = 5\n",
            2,
            "s2s.max_pending_dialback_total",
            "s2s.max_pending_dialback (10) must not exceed",
        ),
    ] {
        assert_error(&error(text), ConfigErrorKind::Invalid, line, key, needle);
    }
}
