//! The daemon's configuration: the TOML model, its defaults, and its
//! validation, with every error naming file, line, column and dotted key.
//!
//! This module owns reading and checking the configuration text. It does
//! not open certificate files, bind sockets, or generate the dialback
//! secret: those belong to the daemon at start, which is handed a
//! [`Config`] whose values are already normalised (lower-case domains,
//! paths resolved against the config file's directory, worker count never 0).
//!
//! Loading goes text → spanned document ([`toml::de::DeTable`]) → raw serde
//! structs (`raw.rs`) → checked [`Config`] (`validate.rs`); the spanned
//! document is kept to place serde and validation errors (`spans.rs`).
//! The key names are the product's public interface; the "Configuration
//! reference" in README.md documents them and `config/fedrouter.toml` is a
//! complete example.

mod error;
mod partners;
mod policy;
mod raw;
mod spans;
mod validate;

#[cfg(test)]
mod tests;

use std::ffi::OsString;
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use error::{ConfigError, ConfigErrorKind};

use spans::DocIndex;
use validate::Invalid;

use crate::jid::BareJid;
pub use crate::policy::ProxyTarget;
use crate::policy::{Negotiate, PartnerType};

/// The environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "FEDROUTER_CONFIG";

/// Default values, in one place (the serde defaults and the reference use these).
pub mod defaults {
    pub const DOMAINS: &[&str] = &["localhost"];
    pub const DATA_DIR: &str = "data";
    /// 0 = one router shard per core.
    pub const WORKERS: usize = 0;
    pub const C2S_LISTEN: &[&str] = &["127.0.0.1:5222"];
    pub const C2S_REQUIRE_TLS: bool = true;
    /// PBKDF2 iterations for new and changed passwords. RFC 7677 asks for
    /// at least 4096; 10,000 is Prosody's default and costs a client about
    /// 5 ms per hash, while an offline guesser pays 2.4 times what 4096 cost.
    pub const SCRAM_ITERATIONS: u32 = 10_000;
    /// RFC 7677 §4: the iteration count SHOULD be at least 4096.
    pub const MIN_SCRAM_ITERATIONS: u32 = 4096;
    /// Above this, clients (ours among them) refuse to compute the hash.
    pub const MAX_SCRAM_ITERATIONS: u32 = 1_000_000;
    /// Failed logins per account, and per source address, within
    /// `C2S_AUTH_FAILURE_WINDOW_SECS`, after which attempts are refused
    /// with `<temporary-auth-failure/>` until the window ends.
    pub const C2S_MAX_AUTH_FAILURES_PER_ACCOUNT: u32 = 5;
    pub const C2S_MAX_AUTH_FAILURES_PER_IP: u32 = 20;
    pub const C2S_AUTH_FAILURE_WINDOW_SECS: u32 = 60;
    /// Client connections open at once, and from one address (IPv6 per
    /// /64). Loopback counts like any other address.
    pub const C2S_CONNECTION_LIMIT: u32 = 10_000;
    pub const C2S_CONNECTION_LIMIT_PER_IP: u32 = 100;
    /// Silence after bind before a XEP-0199 ping; as long again for the
    /// answer before `<connection-timeout/>`.
    pub const C2S_IDLE_TIMEOUT_SECS: u32 = 300;
    pub const C2S_RESUME_TIMEOUT_SECS: u32 = 300;
    /// Inbound s2s streams not yet authenticated, at once and per address.
    pub const S2S_MAX_UNAUTHENTICATED: u32 = 200;
    pub const S2S_MAX_UNAUTHENTICATED_PER_IP: u32 = 10;
    /// Elements one inbound stream may send before it is authenticated
    /// (a dialback or SASL exchange takes a handful).
    pub const S2S_MAX_PRE_AUTH_ELEMENTS: u32 = 100;
    /// Dialback verifications in flight per inbound stream and in all.
    pub const S2S_MAX_PENDING_DIALBACK: u32 = 10;
    pub const S2S_MAX_PENDING_DIALBACK_TOTAL: u32 = 1000;
    /// XEP-0198 on federation streams, and how long an inbound stream's
    /// counts wait for the sender to resume it.
    pub const S2S_STREAM_MANAGEMENT: bool = true;
    pub const S2S_RESUME_TIMEOUT_SECS: u32 = 300;
    /// Journal outbound stanzas in the store until the peer acknowledges
    /// them (or they are bounced): off, for speed.
    pub const S2S_DURABLE_QUEUE: bool = false;
    /// The bound on the whole of a shutdown.
    pub const SHUTDOWN_GRACE_SECS: u32 = 10;
    /// A socket write that makes no progress for this long closes the
    /// connection (a peer that does not read).
    pub const WRITE_TIMEOUT_SECS: u32 = 30;
    /// `s2s.listen` when a config file is used: federation is public.
    pub const S2S_LISTEN: &[&str] = &["0.0.0.0:5269"];
    /// `s2s.listen` of the embedded default (no file at all): the daemon
    /// started without configuration stays on loopback.
    pub const S2S_LISTEN_EMBEDDED: &[&str] = &["127.0.0.1:5269"];
    /// The registered server-to-server port (RFC 6120 §14.7), also the
    /// port of a `partner.proxy_fqdn` written without one.
    pub const S2S_PORT: u16 = 5269;
    // Lync Set-CsXmppGatewayConfiguration defaults.
    pub const CONNECTION_LIMIT: u32 = 1000;
    pub const PARTNER_CONNECTION_LIMIT: u32 = 20;
    pub const KEEP_ALIVE_INTERVAL_SECS: u32 = 300;
    pub const STREAM_ESTABLISHMENT_TIMEOUT_SECS: u32 = 60;
    pub const STREAM_INACTIVITY_TIMEOUT_SECS: u32 = 600;
    pub const SUBSCRIPTION_REFRESH_INTERVAL_SECS: u32 = 28_800;
    pub const ENABLE_LOGGING_ALL_MESSAGE_BODIES: bool = false;
    /// The shortest `gateway.dialback_passphrase` accepted, in bytes.
    pub const MIN_DIALBACK_PASSPHRASE_BYTES: usize = 16;
    // Lync documents no stanza limit; these are ejabberd's and Prosody's.
    pub const MAX_STANZA_SIZE_PRE_AUTH: usize = 8 * 1024;
    pub const MAX_STANZA_SIZE: usize = 512 * 1024;
    /// What may wait to be written to one c2s session (a client that reads
    /// slower than it is sent to), in bytes: four stanzas of the largest
    /// size, or thousands of ordinary ones.
    pub const SESSION_QUEUE_BYTES: usize = 2 * 1024 * 1024;
    /// What may wait for, or in the writer of, one remote domain link.
    pub const S2S_QUEUE_BYTES: usize = 16 * 1024 * 1024;
    /// Bytes per second read from one client; see README for the choice.
    pub const C2S_RATE_LIMIT: u64 = 256 * 1024;
    /// Bytes per second read from one partner link; 0 is unshaped.
    pub const S2S_RATE_LIMIT: u64 = 0;
    /// Below this, stream headers, features and SASL exchanges stop fitting.
    pub const MIN_STANZA_SIZE_PRE_AUTH: usize = 1024;
    /// RFC 6120 §13.12: a server must accept stanzas of at least 10000 bytes.
    pub const MIN_STANZA_SIZE: usize = 10_000;
    pub const MAX_ROSTER_ITEMS: usize = 10_000;
    pub const MAX_INBOUND_SUBSCRIPTIONS_PER_DOMAIN: usize = 1_000;
    pub const MAX_DIRECTED_PRESENCE: usize = 1_000;
    pub const OFFLINE_MAX_MESSAGES_PER_USER: u64 = 1_000;
    pub const OFFLINE_MAX_BYTES_PER_USER: u64 = 10 * 1024 * 1024;
    pub const METRICS_LISTEN: &str = "127.0.0.1:9269";
    pub const LOG_LEVEL: &str = "info";
    // Lync New-CsXmppAllowedPartner defaults; a partner's connection_limit
    // defaults to gateway.partner_connection_limit.
    pub const PARTNER_TYPE: super::PartnerType = super::PartnerType::PublicUnverified;
    pub const TLS_NEGOTIATION: super::Negotiate = super::Negotiate::Required;
    pub const SASL_NEGOTIATION: super::Negotiate = super::Negotiate::Required;
    pub const SUPPORT_DIALBACK_NEGOTIATION: bool = true;
    pub const ENABLE_KEEP_ALIVE: bool = true;
    /// As in Lync: only listed partners are reachable.
    pub const UNLISTED_DOMAINS: super::Unlisted = super::Unlisted::Deny;
    pub const UNLISTED_PARTNER_TYPE: super::PartnerType = super::PartnerType::PublicUnverified;
    /// Lync's built-in global External Access Policy: everything off.
    pub const ENABLE_FEDERATION_ACCESS: bool = false;
    pub const ENABLE_XMPP_ACCESS: bool = false;
}

/// The whole configuration, checked and resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub server: ServerConfig,
    pub tls: TlsConfig,
    pub c2s: C2sConfig,
    pub s2s: S2sConfig,
    pub gateway: GatewayConfig,
    /// `[[partner]]`, in file order; domains (primary and additional) are
    /// unique across all partners and not local.
    pub partners: Vec<PartnerConfig>,
    /// `[[access_policy]]`, in file order, as written: no entry is added
    /// for the built-in global policy (both switches off) when the file
    /// has no `global` one. [`crate::policy::Policy`] resolves them.
    pub access_policies: Vec<AccessPolicyConfig>,
    pub user_limits: UserLimitsConfig,
    pub storage: StorageConfig,
    pub metrics: MetricsConfig,
    pub log: LogConfig,
    /// The file it came from; `None` for the embedded defaults or text.
    pub source: Option<PathBuf>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Local XMPP domains, lower-case, no duplicates, at least one.
    pub domains: Vec<String>,
    /// Resolved against the config file's directory: absolute, or relative
    /// to the current directory.
    pub data_dir: PathBuf,
    /// Router shards; already resolved, never 0.
    pub workers: usize,
    /// The bound on the whole of a shutdown; at least 1 s.
    pub shutdown_grace: Duration,
    /// A socket write making no progress for this long fails and closes
    /// its connection; at least 1 s.
    pub write_timeout: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// Extra trust anchors for peers (PEM), in addition to the system's.
    pub ca_file: Option<PathBuf>,
    /// `[[tls.certificate]]`; each domain is one of `server.domains`, at most once.
    pub certificates: Vec<CertificateConfig>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertificateConfig {
    pub domain: String,
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct C2sConfig {
    /// May be empty (no client listener); port 0 picks a free port.
    pub listen: Vec<SocketAddr>,
    pub require_tls: bool,
    /// For new and changed passwords; stored credentials keep their own.
    /// `MIN_SCRAM_ITERATIONS..=MAX_SCRAM_ITERATIONS`.
    pub scram_iterations: u32,
    /// The failed-login throttle: at least 1 each, the window at least 1 s.
    pub max_auth_failures_per_account: u32,
    pub max_auth_failures_per_ip: u32,
    pub auth_failure_window: Duration,
    /// Connections at once, and from one address; per-IP ≤ global, ≥ 1.
    pub connection_limit: u32,
    pub connection_limit_per_ip: u32,
    /// After bind: silence before a ping, and the wait for its answer.
    pub idle_timeout: Duration,
    /// XEP-0198: how long a session whose connection died waits to be
    /// resumed.
    pub resume_timeout: Duration,
}

/// Server-to-server (federation) listeners and name resolution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S2sConfig {
    /// STARTTLS listeners (RFC 6120). May be empty (no inbound federation).
    pub listen: Vec<SocketAddr>,
    /// XEP-0368 Direct TLS listeners (TLS from the first byte); 5270 is
    /// customary. Empty by default.
    pub direct_tls_listen: Vec<SocketAddr>,
    /// DNS servers to ask instead of the system resolver; empty = system.
    /// Never port 0 or an unspecified address, no duplicates.
    pub dns_nameservers: Vec<SocketAddr>,
    /// Networks a remote domain's SRV or address records may point into
    /// although they are private (loopback, RFC 1918, link-local, unique
    /// local, unspecified): without one, such addresses are never
    /// connected to. A partner's `proxy_fqdn` is exempt.
    pub allow_private_targets: Vec<crate::net::IpNet>,
    /// Whether domains that are not a `[[partner]]` may federate.
    pub unlisted_domains: Unlisted,
    /// The trust level of unlisted domains when they are allowed.
    pub unlisted_partner_type: PartnerType,
    /// Inbound streams not yet authenticated, at once and per address
    /// (per-IP ≤ global); authenticated streams count against
    /// `gateway.connection_limit` instead.
    pub max_unauthenticated: u32,
    pub max_unauthenticated_per_ip: u32,
    /// Elements a stream may send before it is authenticated.
    pub max_pre_auth_elements: u32,
    /// Dialback verifications in flight per stream (≤ total) and in all.
    pub max_pending_dialback: u32,
    pub max_pending_dialback_total: u32,
    /// XEP-0198 on federation streams: acks on every stream whose peer
    /// offers it, resumption where the peer offers that too.
    pub stream_management: bool,
    /// How long an inbound stream's Stream Management state waits for the
    /// sending server to resume it after the connection died.
    pub resume_timeout: Duration,
    /// Outbound stanzas are journaled in the store from acceptance until
    /// acknowledged, bounced or handed on, and sent again after a crash.
    pub durable_queue: bool,
}

/// `s2s.unlisted_domains`: what happens to a remote domain that is not a
/// `[[partner]]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Unlisted {
    /// Refused, as in Lync: only listed partners are reachable.
    #[default]
    Deny,
    /// Open federation: any domain may federate, negotiating TLS required,
    /// SASL optional, dialback on (lync-xmpp-federation.md §11).
    Allow,
}

/// One `[[partner]]`: a remote XMPP domain and how to reach it (the Lync
/// `XmppAllowedPartner`, lync-xmpp-federation.md §7). More fields may join
/// this struct; build it through the configuration, not a struct literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartnerConfig {
    /// A valid domain, lower-case, not one of `server.domains`.
    pub domain: String,
    /// Static route (Lync ProxyFqdn): connect here instead of resolving SRV.
    pub proxy_fqdn: Option<ProxyTarget>,
    /// More domains of the same partner (Lync AdditionalDomains): valid,
    /// lower-case, not local, and not named by any other partner entry.
    pub additional_domains: Vec<String>,
    pub partner_type: PartnerType,
    pub tls_negotiation: Negotiate,
    pub sasl_negotiation: Negotiate,
    /// The three above are a valid row of the negotiation matrix
    /// ([`crate::policy::check`]); warning rows are accepted.
    pub support_dialback_negotiation: bool,
    pub enable_keep_alive: bool,
    /// 1 to `gateway.connection_limit`; defaults to
    /// `gateway.partner_connection_limit`.
    pub connection_limit: u32,
    /// Free text (Lync Description).
    pub description: Option<String>,
}

/// One `[[access_policy]]` (the Lync External Access Policy, §6): the
/// global one (`name = "global"`, no scope), or one applying to whole
/// local domains (like a Lync site policy) and/or single users (like a
/// granted per-user policy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessPolicyConfig {
    /// Non-empty, unique (ASCII case ignored); `global` in any case is the
    /// global policy.
    pub name: String,
    pub description: Option<String>,
    pub enable_federation_access: bool,
    pub enable_xmpp_access: bool,
    /// Local domains (from `server.domains`), lower-case; empty for global.
    /// No domain is named by two policies.
    pub domains: Vec<String>,
    /// Normalised bare JIDs with a localpart, in local domains; empty for
    /// global. No user is named by two policies.
    pub users: Vec<BareJid>,
}

impl AccessPolicyConfig {
    /// Whether this is the policy for everyone no other policy names.
    pub fn is_global(&self) -> bool {
        self.name.eq_ignore_ascii_case(crate::policy::GLOBAL)
    }
}

/// The Lync XMPP gateway settings (`Set-CsXmppGatewayConfiguration`) plus
/// stanza size limits. Durations and limits are never 0.
#[derive(Clone, PartialEq, Eq)]
pub struct GatewayConfig {
    pub connection_limit: u32,
    pub partner_connection_limit: u32,
    pub keep_alive_interval: Duration,
    pub stream_establishment_timeout: Duration,
    pub stream_inactivity_timeout: Duration,
    pub subscription_refresh_interval: Duration,
    /// `None`: the daemon makes a random one per start.
    pub dialback_passphrase: Option<String>,
    pub enable_logging_all_message_bodies: bool,
    pub max_stanza_size_pre_auth: usize,
    pub max_stanza_size: usize,
    /// Bytes a c2s session's writer queue holds before the session is a
    /// slow consumer; at least `max_stanza_size`.
    pub session_queue_bytes: usize,
    /// Bytes queued per remote domain link (waiting for the stream and in
    /// its writer); at least `max_stanza_size`.
    pub s2s_queue_bytes: usize,
    /// Read shaping per client connection, bytes per second; 0 is off.
    pub c2s_rate_limit: u64,
    /// Read shaping per inbound partner link, bytes per second; 0 is off.
    pub s2s_rate_limit: u64,
}

impl Default for GatewayConfig {
    /// The Lync defaults.
    fn default() -> Self {
        use defaults as d;
        GatewayConfig {
            connection_limit: d::CONNECTION_LIMIT,
            partner_connection_limit: d::PARTNER_CONNECTION_LIMIT,
            keep_alive_interval: Duration::from_secs(d::KEEP_ALIVE_INTERVAL_SECS.into()),
            stream_establishment_timeout: Duration::from_secs(
                d::STREAM_ESTABLISHMENT_TIMEOUT_SECS.into(),
            ),
            stream_inactivity_timeout: Duration::from_secs(
                d::STREAM_INACTIVITY_TIMEOUT_SECS.into(),
            ),
            subscription_refresh_interval: Duration::from_secs(
                d::SUBSCRIPTION_REFRESH_INTERVAL_SECS.into(),
            ),
            dialback_passphrase: None,
            enable_logging_all_message_bodies: d::ENABLE_LOGGING_ALL_MESSAGE_BODIES,
            max_stanza_size_pre_auth: d::MAX_STANZA_SIZE_PRE_AUTH,
            max_stanza_size: d::MAX_STANZA_SIZE,
            session_queue_bytes: d::SESSION_QUEUE_BYTES,
            s2s_queue_bytes: d::S2S_QUEUE_BYTES,
            c2s_rate_limit: d::C2S_RATE_LIMIT,
            s2s_rate_limit: d::S2S_RATE_LIMIT,
        }
    }
}

/// Written by hand so the dialback secret never reaches a log line.
impl fmt::Debug for GatewayConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GatewayConfig")
            .field("connection_limit", &self.connection_limit)
            .field("partner_connection_limit", &self.partner_connection_limit)
            .field("keep_alive_interval", &self.keep_alive_interval)
            .field(
                "stream_establishment_timeout",
                &self.stream_establishment_timeout,
            )
            .field("stream_inactivity_timeout", &self.stream_inactivity_timeout)
            .field(
                "subscription_refresh_interval",
                &self.subscription_refresh_interval,
            )
            .field(
                "dialback_passphrase",
                &self.dialback_passphrase.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "enable_logging_all_message_bodies",
                &self.enable_logging_all_message_bodies,
            )
            .field("max_stanza_size_pre_auth", &self.max_stanza_size_pre_auth)
            .field("max_stanza_size", &self.max_stanza_size)
            .field("session_queue_bytes", &self.session_queue_bytes)
            .field("s2s_queue_bytes", &self.s2s_queue_bytes)
            .field("c2s_rate_limit", &self.c2s_rate_limit)
            .field("s2s_rate_limit", &self.s2s_rate_limit)
            .finish()
    }
}

/// `[user_limits]`: what one local user may make the server hold for
/// them, whoever asks — the user or remote servers. Each is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserLimitsConfig {
    /// Roster items, counting those that only remember a pending inbound
    /// subscription request.
    pub max_roster_items: usize,
    /// Per remote domain, subscriptions to the user that the user has not
    /// returned: requests not answered yet, and requests approved (by the
    /// user, or automatically for Federated and PublicVerified partners)
    /// without subscribing back. One domain cannot fill a roster alone.
    pub max_inbound_subscriptions_per_domain: usize,
    /// Targets of directed presence one session remembers (RFC 6121 §4.6).
    pub max_directed_presence: usize,
}

impl Default for UserLimitsConfig {
    fn default() -> Self {
        UserLimitsConfig {
            max_roster_items: defaults::MAX_ROSTER_ITEMS,
            max_inbound_subscriptions_per_domain: defaults::MAX_INBOUND_SUBSCRIPTIONS_PER_DOMAIN,
            max_directed_presence: defaults::MAX_DIRECTED_PRESENCE,
        }
    }
}

/// `[storage]`: what the embedded store keeps. Read at start (a reload
/// does not change it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StorageConfig {
    /// Offline messages one user may have waiting; at least 1.
    pub offline_max_messages_per_user: u64,
    /// Bytes of offline messages one user may have waiting; at least
    /// `gateway.max_stanza_size`, so any accepted message can be stored.
    pub offline_max_bytes_per_user: u64,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            offline_max_messages_per_user: defaults::OFFLINE_MAX_MESSAGES_PER_USER,
            offline_max_bytes_per_user: defaults::OFFLINE_MAX_BYTES_PER_USER,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetricsConfig {
    /// Prometheus endpoint; `None` when `listen = ""` (disabled).
    pub listen: Option<SocketAddr>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// A `tracing_subscriber::EnvFilter` directive list, trimmed and
    /// checked: `EnvFilter::try_new(&level)` succeeds.
    pub level: String,
    pub format: LogFormat,
    /// The federation audit log; resolved like `server.data_dir`.
    pub audit_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

impl Default for Config {
    fn default() -> Self {
        Config::default_embedded()
    }
}

impl Config {
    /// The configuration used when there is no file at all.
    pub fn default_embedded() -> Config {
        match validate::validate(raw::RawConfig::embedded(), None, None) {
            Ok(config) => config,
            // The defaults are constants; a unit test proves they validate.
            Err(e) => panic!("embedded default configuration is invalid: {e:?}"),
        }
    }

    /// The `[[partner]]` entry for a remote domain, if it is a partner:
    /// its `domain` or one of its `additional_domains`. `domain` is
    /// compared as configured domains are stored: ASCII case and a trailing
    /// dot do not matter (pass a JID's normalised domain for
    /// internationalised names). A linear scan: hot paths use
    /// [`crate::policy::Policy::partner`].
    pub fn partner(&self, domain: &str) -> Option<&PartnerConfig> {
        let domain = domain.strip_suffix('.').unwrap_or(domain);
        self.partners.iter().find(|p| {
            p.domain.eq_ignore_ascii_case(domain)
                || p.additional_domains
                    .iter()
                    .any(|d| d.eq_ignore_ascii_case(domain))
        })
    }

    /// Reads, parses and validates a config file. Relative paths in it are
    /// resolved against the file's directory.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let bytes = std::fs::read(path).map_err(|e| {
            ConfigError::io(path, format!("cannot read the configuration file: {e}"))
        })?;
        let text = String::from_utf8(bytes).map_err(|e| {
            ConfigError::io(
                path,
                format!(
                    "the configuration file is not UTF-8 (invalid byte at offset {})",
                    e.utf8_error().valid_up_to()
                ),
            )
        })?;
        Config::from_toml_str(&text, Some(path))
    }

    /// Parses and validates TOML text. `path` is where the text came from:
    /// it names the file in errors and relative paths are resolved against
    /// its directory (against the current directory when `None`).
    pub fn from_toml_str(text: &str, path: Option<&Path>) -> Result<Config, ConfigError> {
        let (document, syntax_errors) = toml::de::DeTable::parse_recoverable(text);
        let index = DocIndex::new(text, document.get_ref());
        let place = |e: ConfigError, span: Option<std::ops::Range<usize>>, key: Option<String>| {
            e.with_file(path)
                .with_position(span.map(|s| index.position(s.start)))
                .with_key(key)
        };

        if let Some(e) = syntax_errors.first() {
            let span = e.span();
            let key = span.as_ref().and_then(|s| index.syntax_key(s));
            let error = ConfigError::new(ConfigErrorKind::Syntax, e.message());
            return Err(place(error, span, key));
        }

        let raw: raw::RawConfig = toml::from_str(text).map_err(|e| {
            let span = e.span();
            let mut key = span
                .as_ref()
                .and_then(|s| index.path_at(s))
                .map(str::to_owned);
            let message = e.message();
            let kind = if message.starts_with("unknown field") {
                ConfigErrorKind::UnknownKey
            } else if let Some(field) = backticked(message, "missing field `") {
                // The span is the table missing the field; name the field.
                key = Some(spans::join_key(key.as_deref().unwrap_or(""), field));
                ConfigErrorKind::MissingKey
            } else {
                ConfigErrorKind::Type
            };
            place(ConfigError::new(kind, tomlish(message)), span, key)
        })?;

        let base = path.map(|p| p.parent().unwrap_or(Path::new("")));
        validate::validate(raw, base, path).map_err(|Invalid { keys, message }| {
            let error = ConfigError::new(ConfigErrorKind::Invalid, message);
            // The first key the document contains; else the nearest table
            // of the first key that it contains.
            let found = keys
                .iter()
                .find_map(|k| index.span_of(k).map(|s| (k.clone(), s)))
                .or_else(|| {
                    let first = keys.first()?;
                    let span = parents(first).find_map(|p| index.span_of(p))?;
                    Some((first.clone(), span))
                });
            match found {
                Some((key, span)) => place(error, Some(span), Some(key)),
                None => place(error, None, keys.into_iter().next()),
            }
        })
    }

    /// Which file to use: the explicit `--config` path, else the
    /// `FEDROUTER_CONFIG` environment variable, else none (embedded defaults).
    pub fn locate(cli: Option<&Path>) -> Option<PathBuf> {
        locate_with(cli, std::env::var_os(CONFIG_ENV))
    }

    /// [`Config::locate`], then [`Config::load`] — or the embedded defaults
    /// when no file is named.
    pub fn load_or_default(cli: Option<&Path>) -> Result<Config, ConfigError> {
        match Config::locate(cli) {
            Some(path) => Config::load(&path),
            None => Ok(Config::default_embedded()),
        }
    }
}

/// [`Config::locate`] with the environment value passed in, so it can be
/// tested without touching the process environment. An empty variable
/// counts as unset.
fn locate_with(cli: Option<&Path>, env: Option<OsString>) -> Option<PathBuf> {
    cli.map(Path::to_path_buf)
        .or_else(|| env.filter(|v| !v.is_empty()).map(PathBuf::from))
}

/// `a.b[2].c` → `a.b[2]`, `a.b`, `a`.
fn parents(path: &str) -> impl Iterator<Item = &str> {
    std::iter::successors(Some(path), |p| p.rfind(['.', '[']).map(|i| &p[..i])).skip(1)
}

/// The text between `prefix` and the next backtick.
fn backticked<'m>(message: &'m str, prefix: &str) -> Option<&'m str> {
    message.strip_prefix(prefix)?.split('`').next()
}

/// serde speaks Rust (`usize`, `sequence`, `map`); operators read TOML.
fn tomlish(message: &str) -> String {
    message
        .replace("expected usize", "expected a non-negative integer")
        .replace("expected u64", "expected a non-negative integer")
        .replace("expected u32", "expected an integer from 0 to 4294967295")
        .replace("a sequence", "an array")
        .replace("invalid type: sequence", "invalid type: array")
        .replace("invalid type: map", "invalid type: table")
        // An enum given something other than a string (toml's wording).
        .replace("wanted string or table", "invalid type: expected a string")
}
