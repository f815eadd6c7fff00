use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;

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
        [gateway]
        connection_limit = 1200
        partner_connection_limit = 30
        keep_alive_interval = 301
        stream_establishment_timeout = 61
        stream_inactivity_timeout = 601
        subscription_refresh_interval = 28801
        dialback_passphrase = "s3cret"
        enable_logging_all_message_bodies = true
        max_stanza_size_pre_auth = 4096
        max_stanza_size = 65536
        [[partner]]
        domain = "Example.NET"
        proxy_fqdn = "XMPP.example.net:5270"
        [[partner]]
        domain = "gmail.com"
        [metrics]
        listen = "[::1]:9000"
        [log]
        level = " warn , fedrouter=debug "
        format = "json"
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
            },
            PartnerConfig {
                domain: "gmail.com".into(),
                proxy_fqdn: None,
            },
        ]
    );
    let g = &c.gateway;
    assert_eq!((g.connection_limit, g.partner_connection_limit), (1200, 30));
    assert_eq!(g.keep_alive_interval, Duration::from_secs(301));
    assert_eq!(g.stream_establishment_timeout, Duration::from_secs(61));
    assert_eq!(g.stream_inactivity_timeout, Duration::from_secs(601));
    assert_eq!(g.subscription_refresh_interval, Duration::from_secs(28801));
    assert_eq!(g.dialback_passphrase.as_deref(), Some("s3cret"));
    assert!(g.enable_logging_all_message_bodies);
    assert_eq!(
        (g.max_stanza_size_pre_auth, g.max_stanza_size),
        (4096, 65536)
    );
    assert_eq!(c.metrics.listen, Some(addr("[::1]:9000")));
    assert_eq!(c.log.level, "warn,fedrouter=debug");
    assert_eq!(c.log.format, LogFormat::Json);
}

#[test]
fn the_dialback_passphrase_is_redacted_in_debug_output() {
    let c = parse("gateway.dialback_passphrase = \"hunter2\"");
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
        "<config>:1:1: nope: unknown field `nope`, expected one of `server`, `tls`, `c2s`, `s2s`, `gateway`, `partner`, `metrics`, `log`"
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

#[test]
fn the_shipped_example_parses_and_validates() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/fedrouter.toml");
    let c = match Config::load(&path) {
        Ok(c) => c,
        Err(e) => panic!("{e}"),
    };
    assert_eq!(c.server.domains, ["example.org"]);
    assert!(
        c.tls
            .certificates
            .iter()
            .all(|cert| cert.cert.starts_with("/etc/fedrouter/"))
    );
    assert!(!c.tls.certificates.is_empty());
    // The example spells out the defaults, so apart from what it must
    // change it is the embedded default.
    assert_eq!(c.gateway, GatewayConfig::default());
    assert_eq!(c.c2s, Config::default_embedded().c2s);
    // s2s is the file default (public), not the embedded one (loopback).
    assert_eq!(c.s2s, parse("").s2s);
    assert_eq!(c.s2s.listen, [addr("0.0.0.0:5269")]);
    // The [[partner]] example is commented out; uncommented, it is valid.
    assert!(c.partners.is_empty());
    let text = std::fs::read_to_string(&path).expect("read the example");
    let text = text
        .replace("# [[partner]]\n", "[[partner]]\n")
        .replace("# domain = ", "domain = ")
        .replace("# proxy_fqdn = ", "proxy_fqdn = ");
    let c = match Config::from_toml_str(&text, Some(&path)) {
        Ok(c) => c,
        Err(e) => panic!("the [[partner]] example, uncommented: {e}"),
    };
    assert_eq!(
        c.partners,
        [PartnerConfig {
            domain: "example.net".into(),
            proxy_fqdn: Some(ProxyTarget {
                host: "xmpp.example.net".into(),
                port: 5269,
            }),
        }]
    );
    assert_eq!(c.metrics, Config::default_embedded().metrics);
    assert_eq!(c.log, Config::default_embedded().log);
}

#[test]
fn parents_walks_up_a_dotted_path() {
    let p: Vec<&str> = parents("tls.certificate[1].cert").collect();
    assert_eq!(p, ["tls.certificate[1]", "tls.certificate", "tls"]);
}
