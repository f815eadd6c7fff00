//! From the file as written to the configuration the daemon runs with:
//! every check that serde's types cannot express, plus normalisation
//! (lower-case domains, resolved paths, resolved worker count).
//!
//! Checks only look at values: no file is opened and no socket bound here;
//! the daemon checks certificate files and addresses when it starts.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::partners::{access_policies, partners};
use super::raw::{
    RawC2s, RawConfig, RawGateway, RawLog, RawMetrics, RawS2s, RawServer, RawStorage, RawTls,
    RawUserLimits,
};
use super::{
    C2sConfig, CertificateConfig, Config, GatewayConfig, LogConfig, MetricsConfig, S2sConfig,
    ServerConfig, StorageConfig, TlsConfig, UserLimitsConfig, defaults as d,
};
use crate::jid::BareJid;

/// A value that parsed but is not acceptable. `keys` are the dotted paths
/// it is about, most relevant first; the error is placed at the first one
/// the document actually contains (a check can fail on a default value,
/// e.g. `max_stanza_size` set below the default pre-auth limit).
#[derive(Debug)]
pub(super) struct Invalid {
    pub keys: Vec<String>,
    pub message: String,
}

pub(super) fn invalid(key: impl Into<String>, message: impl Into<String>) -> Invalid {
    Invalid {
        keys: vec![key.into()],
        message: message.into(),
    }
}

/// `base` is the directory relative paths are resolved against (the
/// config file's directory), `None` for the current directory.
pub(super) fn validate(
    raw: RawConfig,
    base: Option<&Path>,
    source: Option<&Path>,
) -> Result<Config, Invalid> {
    let server = server(raw.server, base)?;
    let tls = tls(raw.tls, base, &server.domains)?;
    let mut listeners = Listeners::default();
    let c2s = c2s(raw.c2s, &mut listeners)?;
    let s2s = s2s(raw.s2s, &mut listeners)?;
    let gateway = gateway(raw.gateway)?;
    let partners = partners(raw.partners, &server.domains, &gateway)?;
    let access_policies = access_policies(raw.access_policies, &server.domains)?;
    let user_limits = user_limits(raw.user_limits)?;
    let storage = storage(raw.storage, &gateway)?;
    let metrics = metrics(raw.metrics, &mut listeners)?;
    let log = log(raw.log, base)?;
    Ok(Config {
        server,
        tls,
        c2s,
        s2s,
        gateway,
        partners,
        access_policies,
        user_limits,
        storage,
        metrics,
        log,
        source: source.map(Path::to_path_buf),
    })
}

fn resolve_path(base: Option<&Path>, key: &str, value: &str) -> Result<PathBuf, Invalid> {
    if value.is_empty() {
        return Err(invalid(key, "must not be empty"));
    }
    let path = PathBuf::from(value);
    Ok(match base {
        Some(base) if path.is_relative() => base.join(path),
        _ => path,
    })
}

/// A served domain: valid as an XMPP domainpart, lower-cased, without a
/// trailing dot.
pub(super) fn domain(key: &str, value: &str) -> Result<String, Invalid> {
    match BareJid::from_parts(None, value) {
        Ok(jid) => Ok(jid.as_str().to_owned()),
        Err(e) => Err(invalid(
            key,
            format!("`{value}` is not a valid domain: {e}"),
        )),
    }
}

fn server(raw: RawServer, base: Option<&Path>) -> Result<ServerConfig, Invalid> {
    if raw.domains.is_empty() {
        return Err(invalid(
            "server.domains",
            "must list at least one domain to serve",
        ));
    }
    let mut domains = Vec::with_capacity(raw.domains.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, value) in raw.domains.iter().enumerate() {
        let key = format!("server.domains[{i}]");
        let domain = domain(&key, value)?;
        if let Some(first) = seen.insert(domain.clone(), i) {
            return Err(invalid(
                key,
                format!("`{domain}` is listed twice (first as server.domains[{first}])"),
            ));
        }
        domains.push(domain);
    }
    let data_dir = resolve_path(base, "server.data_dir", &raw.data_dir)?;
    let workers = match raw.workers {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        n => n,
    };
    Ok(ServerConfig {
        domains,
        data_dir,
        workers,
        shutdown_grace: seconds("server.shutdown_grace", raw.shutdown_grace)?,
        write_timeout: seconds("server.write_timeout", raw.write_timeout)?,
    })
}

fn tls(raw: RawTls, base: Option<&Path>, domains: &[String]) -> Result<TlsConfig, Invalid> {
    let ca_file = raw
        .ca_file
        .as_deref()
        .map(|f| resolve_path(base, "tls.ca_file", f))
        .transpose()?;
    let mut certificates = Vec::with_capacity(raw.certificates.len());
    let mut seen: HashMap<String, usize> = HashMap::new();
    for (i, c) in raw.certificates.into_iter().enumerate() {
        let at = |field: &str| format!("tls.certificate[{i}].{field}");
        let domain = domain(&at("domain"), &c.domain)?;
        if !domains.contains(&domain) {
            return Err(invalid(
                at("domain"),
                format!(
                    "`{domain}` is not one of server.domains ({})",
                    domains.join(", ")
                ),
            ));
        }
        if let Some(first) = seen.insert(domain.clone(), i) {
            return Err(invalid(
                at("domain"),
                format!(
                    "a second certificate for `{domain}` (the first is tls.certificate[{first}])"
                ),
            ));
        }
        certificates.push(CertificateConfig {
            cert: resolve_path(base, &at("cert"), &c.cert)?,
            key: resolve_path(base, &at("key"), &c.key)?,
            domain,
        });
    }
    Ok(TlsConfig {
        ca_file,
        certificates,
    })
}

/// `example_port` is the port the error message suggests.
fn socket_addr(key: &str, value: &str, example_port: u16) -> Result<SocketAddr, Invalid> {
    value.parse().map_err(|_| {
        invalid(
            key,
            format!(
                "`{value}` is not a socket address: expected IP:port, such as \
                 127.0.0.1:{example_port} or [::]:{example_port} (host names are not resolved)"
            ),
        )
    })
}

/// Every listen address accepted so far, with its key, so that no two
/// listeners — of any kind — are given the same address. Port 0 asks the
/// OS for a fresh port each time, so it never clashes.
#[derive(Default)]
struct Listeners(Vec<(SocketAddr, String)>);

impl Listeners {
    /// Checks `addr` (written at `key`, an element of `list` or `list`
    /// itself) against the listeners before it, and records it.
    fn add(&mut self, list: &str, key: String, addr: SocketAddr) -> Result<(), Invalid> {
        if addr.port() != 0
            && let Some((_, first)) = self.0.iter().find(|(a, _)| *a == addr)
        {
            let message = match first.strip_prefix(list) {
                Some(rest) if rest.starts_with('[') => {
                    format!("`{addr}` is listed twice (first as {first})")
                }
                _ => format!("`{addr}` is both {key} and {first}"),
            };
            return Err(Invalid {
                keys: vec![key, first.clone()],
                message,
            });
        }
        self.0.push((addr, key));
        Ok(())
    }

    /// Parses, checks and records every address of the array `list`.
    fn add_all(
        &mut self,
        list: &str,
        values: &[String],
        example_port: u16,
    ) -> Result<Vec<SocketAddr>, Invalid> {
        let mut out = Vec::with_capacity(values.len());
        for (i, value) in values.iter().enumerate() {
            let key = format!("{list}[{i}]");
            let addr = socket_addr(&key, value, example_port)?;
            self.add(list, key, addr)?;
            out.push(addr);
        }
        Ok(out)
    }
}

fn c2s(raw: RawC2s, listeners: &mut Listeners) -> Result<C2sConfig, Invalid> {
    let listen = listeners.add_all("c2s.listen", &raw.listen, 5222)?;
    if !(d::MIN_SCRAM_ITERATIONS..=d::MAX_SCRAM_ITERATIONS).contains(&raw.scram_iterations) {
        return Err(invalid(
            "c2s.scram_iterations",
            format!(
                "must be from {} (RFC 7677's minimum) to {} (clients refuse to compute more)",
                d::MIN_SCRAM_ITERATIONS,
                d::MAX_SCRAM_ITERATIONS
            ),
        ));
    }
    for (key, value) in [
        (
            "c2s.max_auth_failures_per_account",
            raw.max_auth_failures_per_account,
        ),
        ("c2s.max_auth_failures_per_ip", raw.max_auth_failures_per_ip),
    ] {
        if value == 0 {
            return Err(invalid(
                key,
                "must be at least 1 (0 would refuse every login)",
            ));
        }
    }
    let auth_failure_window = seconds("c2s.auth_failure_window", raw.auth_failure_window)?;
    cap_pair(
        ("c2s.connection_limit_per_ip", raw.connection_limit_per_ip),
        ("c2s.connection_limit", raw.connection_limit),
    )?;
    Ok(C2sConfig {
        listen,
        require_tls: raw.require_tls,
        scram_iterations: raw.scram_iterations,
        max_auth_failures_per_account: raw.max_auth_failures_per_account,
        max_auth_failures_per_ip: raw.max_auth_failures_per_ip,
        auth_failure_window,
        connection_limit: raw.connection_limit,
        connection_limit_per_ip: raw.connection_limit_per_ip,
        idle_timeout: seconds("c2s.idle_timeout", raw.idle_timeout)?,
        resume_timeout: seconds("c2s.resume_timeout", raw.resume_timeout)?,
    })
}

fn s2s(raw: RawS2s, listeners: &mut Listeners) -> Result<S2sConfig, Invalid> {
    let listen = listeners.add_all("s2s.listen", &raw.listen, d::S2S_PORT)?;
    let direct_tls_listen =
        listeners.add_all("s2s.direct_tls_listen", &raw.direct_tls_listen, 5270)?;
    let mut dns_nameservers: Vec<SocketAddr> = Vec::with_capacity(raw.dns_nameservers.len());
    for (i, value) in raw.dns_nameservers.iter().enumerate() {
        let key = format!("s2s.dns_nameservers[{i}]");
        let addr: SocketAddr = match value.parse() {
            Ok(addr) => addr,
            Err(_) => {
                let message = match value.parse::<std::net::IpAddr>() {
                    Ok(ip) => format!("`{value}` has no port: write {}", SocketAddr::new(ip, 53)),
                    Err(_) => format!(
                        "`{value}` is not a socket address: expected IP:port, such as \
                         127.0.0.1:53 or [::1]:53 (host names are not resolved)"
                    ),
                };
                return Err(invalid(key, message));
            }
        };
        if addr.port() == 0 {
            return Err(invalid(key, format!("`{addr}`: port 0 cannot be queried")));
        }
        if addr.ip().is_unspecified() {
            return Err(invalid(
                key,
                format!("`{addr}` is the unspecified address; name the DNS server's address"),
            ));
        }
        if let Some(first) = dns_nameservers.iter().position(|a| *a == addr) {
            return Err(invalid(
                key,
                format!("`{addr}` is listed twice (first as s2s.dns_nameservers[{first}])"),
            ));
        }
        dns_nameservers.push(addr);
    }
    let allow_private_targets = raw
        .allow_private_targets
        .iter()
        .enumerate()
        .map(|(i, value)| {
            value
                .parse::<crate::net::IpNet>()
                .map_err(|m| invalid(format!("s2s.allow_private_targets[{i}]"), m))
        })
        .collect::<Result<Vec<_>, _>>()?;
    cap_pair(
        (
            "s2s.max_unauthenticated_per_ip",
            raw.max_unauthenticated_per_ip,
        ),
        ("s2s.max_unauthenticated", raw.max_unauthenticated),
    )?;
    cap_pair(
        ("s2s.max_pending_dialback", raw.max_pending_dialback),
        (
            "s2s.max_pending_dialback_total",
            raw.max_pending_dialback_total,
        ),
    )?;
    if raw.max_pre_auth_elements == 0 {
        return Err(invalid(
            "s2s.max_pre_auth_elements",
            "must be at least 1 (no stream could authenticate)",
        ));
    }
    Ok(S2sConfig {
        listen,
        direct_tls_listen,
        dns_nameservers,
        allow_private_targets,
        unlisted_domains: raw.unlisted_domains,
        unlisted_partner_type: raw.unlisted_partner_type,
        max_unauthenticated: raw.max_unauthenticated,
        max_unauthenticated_per_ip: raw.max_unauthenticated_per_ip,
        max_pre_auth_elements: raw.max_pre_auth_elements,
        max_pending_dialback: raw.max_pending_dialback,
        max_pending_dialback_total: raw.max_pending_dialback_total,
        stream_management: raw.stream_management,
        resume_timeout: seconds("s2s.resume_timeout", raw.resume_timeout)?,
        durable_queue: raw.durable_queue,
    })
}

/// A duration key in whole seconds, at least 1.
fn seconds(key: &str, value: u32) -> Result<Duration, Invalid> {
    if value == 0 {
        return Err(invalid(key, "must be at least 1 second"));
    }
    Ok(Duration::from_secs(value.into()))
}

/// A per-part cap and the cap over the whole: both at least 1, the part
/// no larger than the whole.
fn cap_pair((part_key, part): (&str, u32), (whole_key, whole): (&str, u32)) -> Result<(), Invalid> {
    for (key, value) in [(part_key, part), (whole_key, whole)] {
        if value == 0 {
            return Err(invalid(
                key,
                "must be at least 1 (0 would refuse everything)",
            ));
        }
    }
    if part > whole {
        return Err(Invalid {
            keys: vec![part_key.to_owned(), whole_key.to_owned()],
            message: format!("{part_key} ({part}) must not exceed {whole_key} ({whole})"),
        });
    }
    Ok(())
}

fn gateway(raw: RawGateway) -> Result<GatewayConfig, Invalid> {
    let g = |field: &str| format!("gateway.{field}");
    for (field, value) in [
        ("connection_limit", raw.connection_limit),
        ("partner_connection_limit", raw.partner_connection_limit),
    ] {
        if value == 0 {
            return Err(invalid(
                g(field),
                "must be at least 1 (0 would refuse every connection)",
            ));
        }
    }
    if raw.partner_connection_limit > raw.connection_limit {
        return Err(Invalid {
            keys: vec![g("partner_connection_limit"), g("connection_limit")],
            message: format!(
                "partner_connection_limit ({}) must not exceed connection_limit ({})",
                raw.partner_connection_limit, raw.connection_limit
            ),
        });
    }
    let secs = |field: &str, value: u32| -> Result<Duration, Invalid> {
        if value == 0 {
            Err(invalid(g(field), "must be at least 1 second"))
        } else {
            Ok(Duration::from_secs(value.into()))
        }
    };
    let keep_alive_interval = secs("keep_alive_interval", raw.keep_alive_interval)?;
    let stream_establishment_timeout = secs(
        "stream_establishment_timeout",
        raw.stream_establishment_timeout,
    )?;
    let stream_inactivity_timeout =
        secs("stream_inactivity_timeout", raw.stream_inactivity_timeout)?;
    let subscription_refresh_interval = secs(
        "subscription_refresh_interval",
        raw.subscription_refresh_interval,
    )?;
    if let Some(p) = &raw.dialback_passphrase {
        if p.trim().is_empty() {
            return Err(invalid(
                g("dialback_passphrase"),
                "must not be empty; remove the key to use a random secret per start",
            ));
        }
        // It keys the HMAC behind every dialback key (XEP-0185): a short
        // one can be guessed offline from a single key seen on the wire.
        if p.len() < d::MIN_DIALBACK_PASSPHRASE_BYTES {
            return Err(invalid(
                g("dialback_passphrase"),
                format!(
                    "is {} bytes long; it must be at least {} (a short secret can be guessed \
                     from one dialback key), or remove the key to use a random secret per start",
                    p.len(),
                    d::MIN_DIALBACK_PASSPHRASE_BYTES
                ),
            ));
        }
    }
    if raw.max_stanza_size_pre_auth < d::MIN_STANZA_SIZE_PRE_AUTH {
        return Err(invalid(
            g("max_stanza_size_pre_auth"),
            format!(
                "must be at least {} bytes, or stream negotiation itself cannot pass",
                d::MIN_STANZA_SIZE_PRE_AUTH
            ),
        ));
    }
    if raw.max_stanza_size < d::MIN_STANZA_SIZE {
        return Err(invalid(
            g("max_stanza_size"),
            format!(
                "must be at least {} bytes (RFC 6120 §13.12: servers must accept stanzas of at least that size)",
                d::MIN_STANZA_SIZE
            ),
        ));
    }
    if raw.max_stanza_size_pre_auth > raw.max_stanza_size {
        return Err(Invalid {
            keys: vec![g("max_stanza_size_pre_auth"), g("max_stanza_size")],
            message: format!(
                "max_stanza_size_pre_auth ({}) must not exceed max_stanza_size ({})",
                raw.max_stanza_size_pre_auth, raw.max_stanza_size
            ),
        });
    }
    for (field, value) in [
        ("session_queue_bytes", raw.session_queue_bytes),
        ("s2s_queue_bytes", raw.s2s_queue_bytes),
    ] {
        if value < raw.max_stanza_size {
            return Err(Invalid {
                keys: vec![g(field), g("max_stanza_size")],
                message: format!(
                    "{field} ({value}) must be at least max_stanza_size ({}), \
                     or one stanza of the largest size would not fit",
                    raw.max_stanza_size
                ),
            });
        }
    }
    Ok(GatewayConfig {
        connection_limit: raw.connection_limit,
        partner_connection_limit: raw.partner_connection_limit,
        keep_alive_interval,
        stream_establishment_timeout,
        stream_inactivity_timeout,
        subscription_refresh_interval,
        dialback_passphrase: raw.dialback_passphrase,
        enable_logging_all_message_bodies: raw.enable_logging_all_message_bodies,
        max_stanza_size_pre_auth: raw.max_stanza_size_pre_auth,
        max_stanza_size: raw.max_stanza_size,
        session_queue_bytes: raw.session_queue_bytes,
        s2s_queue_bytes: raw.s2s_queue_bytes,
        c2s_rate_limit: raw.c2s_rate_limit,
        s2s_rate_limit: raw.s2s_rate_limit,
    })
}

fn user_limits(raw: RawUserLimits) -> Result<UserLimitsConfig, Invalid> {
    for (field, value) in [
        ("max_roster_items", raw.max_roster_items),
        (
            "max_inbound_subscriptions_per_domain",
            raw.max_inbound_subscriptions_per_domain,
        ),
        ("max_directed_presence", raw.max_directed_presence),
    ] {
        if value == 0 {
            return Err(invalid(
                format!("user_limits.{field}"),
                "must be at least 1 (0 would refuse every request)",
            ));
        }
    }
    Ok(UserLimitsConfig {
        max_roster_items: raw.max_roster_items,
        max_inbound_subscriptions_per_domain: raw.max_inbound_subscriptions_per_domain,
        max_directed_presence: raw.max_directed_presence,
    })
}

fn storage(raw: RawStorage, gateway: &GatewayConfig) -> Result<StorageConfig, Invalid> {
    if raw.offline_max_messages_per_user == 0 {
        return Err(invalid(
            "storage.offline_max_messages_per_user",
            "must be at least 1 (0 would refuse every offline message)",
        ));
    }
    if raw.offline_max_bytes_per_user < gateway.max_stanza_size as u64 {
        return Err(invalid(
            "storage.offline_max_bytes_per_user",
            format!(
                "must be at least gateway.max_stanza_size ({}), or a message the daemon accepts could never be stored",
                gateway.max_stanza_size
            ),
        ));
    }
    Ok(StorageConfig {
        offline_max_messages_per_user: raw.offline_max_messages_per_user,
        offline_max_bytes_per_user: raw.offline_max_bytes_per_user,
    })
}

fn metrics(raw: RawMetrics, listeners: &mut Listeners) -> Result<MetricsConfig, Invalid> {
    if raw.listen.is_empty() {
        return Ok(MetricsConfig { listen: None });
    }
    let key = "metrics.listen";
    let addr = socket_addr(key, &raw.listen, 9269)?;
    listeners.add(key, key.to_owned(), addr)?;
    Ok(MetricsConfig { listen: Some(addr) })
}

const LEVELS: [&str; 6] = ["off", "error", "warn", "info", "debug", "trace"];

/// `level` is handed to `tracing_subscriber::EnvFilter`, which accepts
/// almost anything: a bare word is a target name (`infoo` means "trace
/// everything from the target `infoo`") and spaces become part of target
/// names. So directives are trimmed, and a bare directive must be a level;
/// to enable one target write `target=level`.
fn log(raw: RawLog, base: Option<&Path>) -> Result<LogConfig, Invalid> {
    let key = "log.level";
    let directives: Vec<&str> = raw
        .level
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect();
    if directives.is_empty() {
        return Err(invalid(key, "must not be empty (for example \"info\")"));
    }
    for directive in &directives {
        if directive.contains(char::is_whitespace) && !directive.contains('[') {
            return Err(invalid(key, format!("`{directive}` contains a space")));
        }
        if !directive.contains(['=', '['])
            && !LEVELS.iter().any(|l| l.eq_ignore_ascii_case(directive))
        {
            return Err(invalid(
                key,
                format!(
                    "`{directive}` is not a level (one of {}); \
                     to filter a target write `{directive}=info`",
                    LEVELS.join(", ")
                ),
            ));
        }
    }
    let level = directives.join(",");
    if let Err(e) = tracing_subscriber::EnvFilter::try_new(&level) {
        return Err(invalid(
            key,
            format!("`{level}` is not a valid filter: {e}"),
        ));
    }
    let audit_file = raw
        .audit_file
        .as_deref()
        .map(|f| resolve_path(base, "log.audit_file", f))
        .transpose()?;
    Ok(LogConfig {
        level,
        format: raw.format,
        audit_file,
    })
}
