//! The file as written: serde structs that mirror the TOML one to one, with
//! the defaults filled in and unknown keys refused. Nothing here is
//! validated or resolved yet; `validate.rs` turns this into [`super::Config`].

use serde::Deserialize;

use super::defaults as d;
use super::{LogFormat, Unlisted};
use crate::policy::{Negotiate, PartnerType};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawConfig {
    pub server: RawServer,
    pub tls: RawTls,
    pub c2s: RawC2s,
    pub s2s: RawS2s,
    pub gateway: RawGateway,
    #[serde(rename = "partner")]
    pub partners: Vec<RawPartner>,
    #[serde(rename = "access_policy")]
    pub access_policies: Vec<RawAccessPolicy>,
    pub user_limits: RawUserLimits,
    pub storage: RawStorage,
    pub metrics: RawMetrics,
    pub log: RawLog,
}

impl RawConfig {
    /// The configuration without any file: [`RawConfig::default`] (what an
    /// empty file gives), but s2s listens on loopback only.
    pub fn embedded() -> RawConfig {
        RawConfig {
            s2s: RawS2s {
                listen: strings(d::S2S_LISTEN_EMBEDDED),
                ..RawS2s::default()
            },
            ..RawConfig::default()
        }
    }
}

fn strings(values: &[&str]) -> Vec<String> {
    values.iter().map(|s| s.to_string()).collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawServer {
    pub domains: Vec<String>,
    pub data_dir: String,
    pub workers: usize,
    pub shutdown_grace: u32,
    pub write_timeout: u32,
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            domains: strings(d::DOMAINS),
            data_dir: d::DATA_DIR.to_owned(),
            workers: d::WORKERS,
            shutdown_grace: d::SHUTDOWN_GRACE_SECS,
            write_timeout: d::WRITE_TIMEOUT_SECS,
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawTls {
    pub ca_file: Option<String>,
    #[serde(rename = "certificate")]
    pub certificates: Vec<RawCertificate>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with domain, cert and key")]
pub(super) struct RawCertificate {
    pub domain: String,
    pub cert: String,
    pub key: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawC2s {
    pub listen: Vec<String>,
    pub require_tls: bool,
    pub scram_iterations: u32,
    pub max_auth_failures_per_account: u32,
    pub max_auth_failures_per_ip: u32,
    pub auth_failure_window: u32,
    pub connection_limit: u32,
    pub connection_limit_per_ip: u32,
    pub idle_timeout: u32,
    pub resume_timeout: u32,
}

impl Default for RawC2s {
    fn default() -> Self {
        RawC2s {
            listen: strings(d::C2S_LISTEN),
            require_tls: d::C2S_REQUIRE_TLS,
            scram_iterations: d::SCRAM_ITERATIONS,
            max_auth_failures_per_account: d::C2S_MAX_AUTH_FAILURES_PER_ACCOUNT,
            max_auth_failures_per_ip: d::C2S_MAX_AUTH_FAILURES_PER_IP,
            auth_failure_window: d::C2S_AUTH_FAILURE_WINDOW_SECS,
            connection_limit: d::C2S_CONNECTION_LIMIT,
            connection_limit_per_ip: d::C2S_CONNECTION_LIMIT_PER_IP,
            idle_timeout: d::C2S_IDLE_TIMEOUT_SECS,
            resume_timeout: d::C2S_RESUME_TIMEOUT_SECS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawS2s {
    pub listen: Vec<String>,
    pub direct_tls_listen: Vec<String>,
    pub dns_nameservers: Vec<String>,
    pub allow_private_targets: Vec<String>,
    pub unlisted_domains: Unlisted,
    pub unlisted_partner_type: PartnerType,
    pub max_unauthenticated: u32,
    pub max_unauthenticated_per_ip: u32,
    pub max_pre_auth_elements: u32,
    pub max_pending_dialback: u32,
    pub max_pending_dialback_total: u32,
    pub stream_management: bool,
    pub resume_timeout: u32,
    pub durable_queue: bool,
}

impl Default for RawS2s {
    fn default() -> Self {
        RawS2s {
            listen: strings(d::S2S_LISTEN),
            direct_tls_listen: Vec::new(),
            dns_nameservers: Vec::new(),
            allow_private_targets: Vec::new(),
            unlisted_domains: d::UNLISTED_DOMAINS,
            unlisted_partner_type: d::UNLISTED_PARTNER_TYPE,
            max_unauthenticated: d::S2S_MAX_UNAUTHENTICATED,
            max_unauthenticated_per_ip: d::S2S_MAX_UNAUTHENTICATED_PER_IP,
            max_pre_auth_elements: d::S2S_MAX_PRE_AUTH_ELEMENTS,
            max_pending_dialback: d::S2S_MAX_PENDING_DIALBACK,
            max_pending_dialback_total: d::S2S_MAX_PENDING_DIALBACK_TOTAL,
            stream_management: d::S2S_STREAM_MANAGEMENT,
            resume_timeout: d::S2S_RESUME_TIMEOUT_SECS,
            durable_queue: d::S2S_DURABLE_QUEUE,
        }
    }
}

/// Durations are whole seconds and limits are `u32`, as in Lync's
/// `Set-CsXmppGatewayConfiguration` (UInt32), which also keeps any value
/// far from overflowing a timer deadline.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawGateway {
    pub connection_limit: u32,
    pub partner_connection_limit: u32,
    pub keep_alive_interval: u32,
    pub stream_establishment_timeout: u32,
    pub stream_inactivity_timeout: u32,
    pub subscription_refresh_interval: u32,
    pub dialback_passphrase: Option<String>,
    pub enable_logging_all_message_bodies: bool,
    pub max_stanza_size_pre_auth: usize,
    pub max_stanza_size: usize,
    pub session_queue_bytes: usize,
    pub s2s_queue_bytes: usize,
    pub c2s_rate_limit: u64,
    pub s2s_rate_limit: u64,
}

impl Default for RawGateway {
    fn default() -> Self {
        RawGateway {
            connection_limit: d::CONNECTION_LIMIT,
            partner_connection_limit: d::PARTNER_CONNECTION_LIMIT,
            keep_alive_interval: d::KEEP_ALIVE_INTERVAL_SECS,
            stream_establishment_timeout: d::STREAM_ESTABLISHMENT_TIMEOUT_SECS,
            stream_inactivity_timeout: d::STREAM_INACTIVITY_TIMEOUT_SECS,
            subscription_refresh_interval: d::SUBSCRIPTION_REFRESH_INTERVAL_SECS,
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

/// One `[[partner]]`. Only `domain` is required; every other key takes
/// its Lync default (`connection_limit`: `None`, resolved to
/// `gateway.partner_connection_limit` by validation).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with at least a domain")]
pub(super) struct RawPartner {
    pub domain: String,
    #[serde(default)]
    pub proxy_fqdn: Option<String>,
    #[serde(default)]
    pub additional_domains: Vec<String>,
    #[serde(default = "partner_type")]
    pub partner_type: PartnerType,
    #[serde(default = "tls_negotiation")]
    pub tls_negotiation: RawNegotiate,
    #[serde(default = "sasl_negotiation")]
    pub sasl_negotiation: RawNegotiate,
    #[serde(default = "support_dialback_negotiation")]
    pub support_dialback_negotiation: bool,
    #[serde(default = "enable_keep_alive")]
    pub enable_keep_alive: bool,
    #[serde(default)]
    pub connection_limit: Option<u32>,
    #[serde(default)]
    pub description: Option<String>,
}

fn partner_type() -> PartnerType {
    d::PARTNER_TYPE
}
fn tls_negotiation() -> RawNegotiate {
    d::TLS_NEGOTIATION.into()
}
fn sasl_negotiation() -> RawNegotiate {
    d::SASL_NEGOTIATION.into()
}
fn support_dialback_negotiation() -> bool {
    d::SUPPORT_DIALBACK_NEGOTIATION
}
fn enable_keep_alive() -> bool {
    d::ENABLE_KEEP_ALIVE
}

/// [`Negotiate`] as written in the file. The protocol type lives in the
/// stream code, which has no business knowing serde; this mirror carries
/// the spelling (`"not_supported"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(super) enum RawNegotiate {
    Required,
    Optional,
    NotSupported,
}

impl From<RawNegotiate> for Negotiate {
    fn from(n: RawNegotiate) -> Negotiate {
        match n {
            RawNegotiate::Required => Negotiate::Required,
            RawNegotiate::Optional => Negotiate::Optional,
            RawNegotiate::NotSupported => Negotiate::NotSupported,
        }
    }
}

impl From<Negotiate> for RawNegotiate {
    fn from(n: Negotiate) -> RawNegotiate {
        match n {
            Negotiate::Required => RawNegotiate::Required,
            Negotiate::Optional => RawNegotiate::Optional,
            Negotiate::NotSupported => RawNegotiate::NotSupported,
        }
    }
}

/// One `[[access_policy]]`. Only `name` is required; both switches default
/// to off, as Lync's External Access Policy does.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with at least a name")]
pub(super) struct RawAccessPolicy {
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
    #[serde(default = "enable_federation_access")]
    pub enable_federation_access: bool,
    #[serde(default = "enable_xmpp_access")]
    pub enable_xmpp_access: bool,
    #[serde(default)]
    pub domains: Vec<String>,
    #[serde(default)]
    pub users: Vec<String>,
}

fn enable_federation_access() -> bool {
    d::ENABLE_FEDERATION_ACCESS
}
fn enable_xmpp_access() -> bool {
    d::ENABLE_XMPP_ACCESS
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawUserLimits {
    pub max_roster_items: usize,
    pub max_inbound_subscriptions_per_domain: usize,
    pub max_directed_presence: usize,
}

impl Default for RawUserLimits {
    fn default() -> Self {
        RawUserLimits {
            max_roster_items: d::MAX_ROSTER_ITEMS,
            max_inbound_subscriptions_per_domain: d::MAX_INBOUND_SUBSCRIPTIONS_PER_DOMAIN,
            max_directed_presence: d::MAX_DIRECTED_PRESENCE,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawStorage {
    pub offline_max_messages_per_user: u64,
    pub offline_max_bytes_per_user: u64,
}

impl Default for RawStorage {
    fn default() -> Self {
        RawStorage {
            offline_max_messages_per_user: d::OFFLINE_MAX_MESSAGES_PER_USER,
            offline_max_bytes_per_user: d::OFFLINE_MAX_BYTES_PER_USER,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawMetrics {
    pub listen: String,
}

impl Default for RawMetrics {
    fn default() -> Self {
        RawMetrics {
            listen: d::METRICS_LISTEN.to_owned(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawLog {
    pub level: String,
    pub format: LogFormat,
    pub audit_file: Option<String>,
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: d::LOG_LEVEL.to_owned(),
            format: LogFormat::Text,
            audit_file: None,
        }
    }
}
