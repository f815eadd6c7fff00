//! The file as written: serde structs that mirror the TOML one to one, with
//! the defaults filled in and unknown keys refused. Nothing here is
//! validated or resolved yet; `validate.rs` turns this into [`super::Config`].

use serde::Deserialize;

use super::LogFormat;
use super::defaults as d;

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
}

impl Default for RawServer {
    fn default() -> Self {
        RawServer {
            domains: strings(d::DOMAINS),
            data_dir: d::DATA_DIR.to_owned(),
            workers: d::WORKERS,
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
}

impl Default for RawC2s {
    fn default() -> Self {
        RawC2s {
            listen: strings(d::C2S_LISTEN),
            require_tls: d::C2S_REQUIRE_TLS,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default, expecting = "a table")]
pub(super) struct RawS2s {
    pub listen: Vec<String>,
    pub direct_tls_listen: Vec<String>,
    pub dns_nameservers: Vec<String>,
}

impl Default for RawS2s {
    fn default() -> Self {
        RawS2s {
            listen: strings(d::S2S_LISTEN),
            direct_tls_listen: Vec::new(),
            dns_nameservers: Vec::new(),
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
        }
    }
}

/// One `[[partner]]`. Only `domain` is required; every key added later
/// takes `#[serde(default)]` (the Lync default), so existing files stay valid.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a table with at least a domain")]
pub(super) struct RawPartner {
    pub domain: String,
    #[serde(default)]
    pub proxy_fqdn: Option<String>,
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
}

impl Default for RawLog {
    fn default() -> Self {
        RawLog {
            level: d::LOG_LEVEL.to_owned(),
            format: LogFormat::Text,
        }
    }
}
