//! Account administration, shared by the CLI (daemon stopped: it opens the
//! store itself) and the control socket (daemon running: it owns the store).

use crate::jid::BareJid;
use crate::storage::{Store, StoreError};
use crate::stream::scram::Credentials;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    #[error("{0}: not a valid JID: {1}")]
    BadJid(String, crate::jid::JidError),
    #[error("{0}: a user JID needs a localpart (user@domain)")]
    NoLocal(String),
    #[error("{jid}: this server does not serve the domain {domain} (served: {served})")]
    ForeignDomain {
        jid: String,
        domain: String,
        served: String,
    },
    #[error("{0}: the user already exists")]
    Exists(String),
    #[error("{0}: no such user")]
    NotFound(String),
    #[error("the password must not be empty")]
    EmptyPassword,
    #[error("password: {0}")]
    Password(String),
    #[error("storage: {0}")]
    Store(StoreError),
}

/// Parses a user JID and checks that its domain is one we serve.
pub fn user_jid(s: &str, domains: &[String]) -> Result<BareJid, AdminError> {
    let jid = BareJid::parse(s).map_err(|e| AdminError::BadJid(s.to_string(), e))?;
    if jid.local().is_none() {
        return Err(AdminError::NoLocal(s.to_string()));
    }
    if !domains.iter().any(|d| d == jid.domain()) {
        return Err(AdminError::ForeignDomain {
            jid: s.to_string(),
            domain: jid.domain().to_string(),
            served: domains.join(", "),
        });
    }
    Ok(jid)
}

/// Fresh credentials with `iterations` (`c2s.scram_iterations`): new and
/// changed passwords get the configured count, while stored credentials
/// keep the count they were made with and go on working.
pub fn credentials(password: &str, iterations: u32) -> Result<Credentials, AdminError> {
    if password.is_empty() {
        return Err(AdminError::EmptyPassword);
    }
    Credentials::from_password(password, iterations)
        .map_err(|e| AdminError::Password(e.to_string()))
}

pub fn add_user(
    store: &dyn Store,
    jid: &BareJid,
    password: &str,
    iterations: u32,
) -> Result<(), AdminError> {
    add_user_with(store, jid, &credentials(password, iterations)?)
}

/// Adds a user whose credentials are already derived (`user import`
/// derives many in parallel).
pub fn add_user_with(
    store: &dyn Store,
    jid: &BareJid,
    creds: &Credentials,
) -> Result<(), AdminError> {
    store.create_account(jid, creds).map_err(|e| match e {
        StoreError::AlreadyExists => AdminError::Exists(jid.to_string()),
        e => AdminError::Store(e),
    })
}

pub fn set_password(
    store: &dyn Store,
    jid: &BareJid,
    password: &str,
    iterations: u32,
) -> Result<(), AdminError> {
    let creds = credentials(password, iterations)?;
    store.set_credentials(jid, &creds).map_err(|e| match e {
        StoreError::NotFound => AdminError::NotFound(jid.to_string()),
        e => AdminError::Store(e),
    })
}

pub fn remove_user(store: &dyn Store, jid: &BareJid) -> Result<(), AdminError> {
    store.remove_account(jid).map_err(|e| match e {
        StoreError::NotFound => AdminError::NotFound(jid.to_string()),
        e => AdminError::Store(e),
    })
}

pub fn list_users(store: &dyn Store) -> Result<Vec<String>, AdminError> {
    store
        .list_accounts()
        .map(|v| v.into_iter().map(|j| j.to_string()).collect())
        .map_err(AdminError::Store)
}

/// The effective partner table of `fedrouter partners`: every parameter
/// with its effective value, the negotiation mode of the §7 matrix, the
/// warnings, and — when the daemon answers — each partner's live state.
pub fn partners_table(
    policy: &crate::policy::Policy,
    live: Option<&dyn Fn(&str) -> String>,
) -> String {
    use crate::policy::{matrix, negotiate_name};
    let mut out = String::new();
    let partners = policy.listed_partners();
    if partners.is_empty() {
        out.push_str("no [[partner]] entries\n");
    }
    for p in &partners {
        out.push_str(&format!("{}\n", p.domain));
        let mut row = |k: &str, v: String| out.push_str(&format!("  {k:<30} {v}\n"));
        if !p.additional_domains.is_empty() {
            row("additional_domains", p.additional_domains.join(", "));
        }
        row("partner_type", p.partner_type.as_str().to_string());
        row("tls_negotiation", negotiate_name(p.tls).to_string());
        row("sasl_negotiation", negotiate_name(p.sasl).to_string());
        row("support_dialback_negotiation", p.dialback.to_string());
        row("enable_keep_alive", p.keep_alive.to_string());
        row("connection_limit", p.connection_limit.to_string());
        row(
            "proxy_fqdn",
            p.proxy_fqdn
                .as_ref()
                .map(|t| t.to_string())
                .unwrap_or_else(|| "(DNS SRV)".into()),
        );
        if let Some(d) = &p.description {
            row("description", d.clone());
        }
        let m = matrix(p.tls, p.sasl, p.dialback);
        row("negotiation mode", m.mode.to_string());
        if let Some(state) = live {
            row("state", state(&p.domain));
        }
    }
    out.push_str(&format!(
        "unlisted domains: {}\n",
        if policy.allows_unlisted() {
            "allowed (open federation)"
        } else {
            "denied"
        }
    ));
    for w in policy.warnings() {
        out.push_str(&format!("warning: {w}\n"));
    }
    out
}
