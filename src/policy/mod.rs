//! Federation policy: who may federate with whom, and how (the Lync model
//! of lync-xmpp-federation.md §6, §7 and §11).
//!
//! This module owns the partner model ([`Partner`], [`PartnerType`], the
//! negotiation [`matrix`]), the rule for domains that are not partners, and
//! the per-user external access policies ([`Access`]). [`Policy`] is built
//! once from a validated configuration (at start and on reload) and answers
//! lookups with a hash-map probe; it does no I/O, keeps no clock and does
//! not log — [`Policy::warnings`] hands the warnings to whoever loaded it.
//! Which stanzas may cross between a local and a remote user is the pure
//! table in [`admit`]; enforcing the answers (refusing streams, bouncing
//! and routing stanzas) belongs to the s2s and routing code, not here.

pub mod admit;
mod matrix;
mod negotiate;

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

pub use matrix::{
    MatrixRow, NO_MODE, SASL_NEEDS_TLS, SASL_OR_DIALBACK, Verdict, check, describe, matrix,
    negotiate_name,
};
pub use negotiate::{Negotiate, PeerPolicy};

use crate::jid::BareJid;

/// How far a partner's users are trusted (Lync `PartnerType`, §7).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PartnerType {
    /// High trust: its users may add local users, see their presence and
    /// status note, and message them without being authorised first.
    Federated,
    /// A public provider trusted to verify its users: no authorisation
    /// needed, but the status note is never shown.
    PublicVerified,
    /// A public provider not trusted to verify its users: nothing gets
    /// through until the local user has added the remote one. Lync's default.
    #[default]
    PublicUnverified,
}

impl PartnerType {
    /// The configuration spelling (`"public_unverified"`).
    pub fn as_str(self) -> &'static str {
        match self {
            PartnerType::Federated => "federated",
            PartnerType::PublicVerified => "public_verified",
            PartnerType::PublicUnverified => "public_unverified",
        }
    }
}

/// The negotiation settings of unlisted domains under open federation
/// (§11): TLS always, SASL EXTERNAL when the certificate verifies,
/// dialback otherwise, keep-alives on.
pub const OPEN_FEDERATION_TLS: Negotiate = Negotiate::Required;
pub const OPEN_FEDERATION_SASL: Negotiate = Negotiate::Optional;
pub const OPEN_FEDERATION_DIALBACK: bool = true;
pub const OPEN_FEDERATION_KEEP_ALIVE: bool = true;

/// Where to connect for a partner: a host name or IP address, and a port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ProxyTarget {
    /// A lower-case host name without trailing dot, or an IP address; an
    /// IPv6 address is stored without brackets (`2001:db8::1`), so
    /// `(host.as_str(), port)` can be handed to a resolver or connect as is.
    pub host: String,
    /// Never 0.
    pub port: u16,
}

/// `host:port`, with an IPv6 address in brackets (`[2001:db8::1]:5269`),
/// which is also how `proxy_fqdn` is written.
impl fmt::Display for ProxyTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// A remote domain this router federates with, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Partner {
    /// The primary domain (for an unlisted domain: the domain asked about).
    pub domain: String,
    pub additional_domains: Vec<String>,
    pub partner_type: PartnerType,
    pub tls: Negotiate,
    pub sasl: Negotiate,
    pub dialback: bool,
    pub keep_alive: bool,
    /// Simultaneous connections to this partner.
    pub connection_limit: u32,
    pub proxy_fqdn: Option<ProxyTarget>,
    pub description: Option<String>,
    /// `true` for a `[[partner]]` entry; `false` for an unlisted domain let
    /// in by `s2s.unlisted_domains = "allow"`.
    pub listed: bool,
}

impl Partner {
    /// What the stream negotiation machines need.
    pub fn peer_policy(&self) -> PeerPolicy {
        PeerPolicy {
            tls: self.tls,
            sasl: self.sasl,
            dialback: self.dialback,
        }
    }

    /// The expected authentication method (the §7 "Mode" column), such as
    /// "SASL over TLS" or "TLS dialback".
    pub fn mode(&self) -> &'static str {
        matrix(self.tls, self.sasl, self.dialback).mode
    }

    /// Every domain of this partner: the primary one first.
    pub fn domains(&self) -> impl Iterator<Item = &str> {
        std::iter::once(self.domain.as_str()).chain(self.additional_domains.iter().map(|d| &**d))
    }
}

/// The external access policy in effect for one local user (§6).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Access {
    /// The `[[access_policy]]` name; `"global"` for the built-in one.
    pub name: String,
    /// `enable_federation_access`
    pub federation: bool,
    /// `enable_xmpp_access`
    pub xmpp: bool,
}

impl Access {
    /// Whether the user may exchange anything with remote domains: Lync
    /// requires both switches.
    pub fn allowed_remote(&self) -> bool {
        self.federation && self.xmpp
    }
}

/// The name of the policy that applies to everyone no other policy names.
pub const GLOBAL: &str = "global";

/// What an unlisted domain gets when they are allowed.
#[derive(Clone, Debug)]
pub struct OpenFederation {
    pub partner_type: PartnerType,
    /// Simultaneous connections to each such domain.
    pub connection_limit: u32,
}

/// One external access policy and whom it applies to.
#[derive(Clone, Debug)]
pub struct AccessRule {
    pub access: Access,
    /// The policy for everyone no other rule names (its scope is empty).
    pub global: bool,
    /// Local domains, lower-case.
    pub domains: Vec<String>,
    /// Normalised bare JIDs in local domains.
    pub users: Vec<BareJid>,
}

/// Federation policy, built from a validated configuration. Cheap to query;
/// rebuild it on reload.
#[derive(Clone, Debug)]
pub struct Policy {
    /// Every partner domain (primary and additional) → its entry.
    partners: HashMap<String, Arc<Partner>>,
    local: HashSet<String>,
    /// `None`: unlisted domains are refused.
    unlisted: Option<OpenFederation>,
    by_user: HashMap<BareJid, Access>,
    by_domain: HashMap<String, Access>,
    global: Access,
    warnings: Vec<String>,
}

impl Policy {
    /// Indexes the policy's parts, in configuration order (the warnings
    /// name entries by their index). It trusts validation (unique domains,
    /// a valid matrix row per partner); parts that break those rules get
    /// the first entry for a domain, and an invalid row shows up in
    /// [`Policy::warnings`]. `source` is the file the parts came from, for
    /// the warnings. (`Policy::from_config` in `config` builds the parts.)
    pub fn new(
        source: Option<&Path>,
        listed: Vec<Partner>,
        local_domains: &[String],
        unlisted: Option<OpenFederation>,
        access_rules: Vec<AccessRule>,
    ) -> Policy {
        let file = source
            .map(|p| format!("{}: ", p.display()))
            .unwrap_or_default();
        let mut warnings = Vec::new();
        let mut partners = HashMap::new();
        for (i, p) in listed.into_iter().enumerate() {
            let partner = Arc::new(p);
            let (what, text) = match check(partner.tls, partner.sasl, partner.dialback) {
                Verdict::Ok => ("", ""),
                Verdict::Warning(text) => ("", text),
                Verdict::Invalid(text) => ("invalid, refused by validation: ", text),
            };
            if !text.is_empty() {
                warnings.push(format!(
                    "{file}partner[{i}]: partner {}: {what}{text} ({}; mode: {})",
                    partner.domain,
                    describe(partner.tls, partner.sasl, partner.dialback),
                    partner.mode()
                ));
            }
            for d in partner.domains() {
                partners
                    .entry(d.to_owned())
                    .or_insert_with(|| partner.clone());
            }
        }

        let mut global = Access {
            name: GLOBAL.to_owned(),
            federation: false,
            xmpp: false,
        };
        let mut by_user = HashMap::new();
        let mut by_domain = HashMap::new();
        for (i, a) in access_rules.into_iter().enumerate() {
            let access = a.access;
            if a.global {
                global = access;
                continue;
            }
            if a.domains.is_empty() && a.users.is_empty() {
                warnings.push(format!(
                    "{file}access_policy[{i}]: access policy {}: applies to nobody \
                     (it names no domains and no users)",
                    access.name
                ));
            }
            for d in a.domains {
                by_domain.entry(d).or_insert_with(|| access.clone());
            }
            for u in a.users {
                by_user.entry(u).or_insert_with(|| access.clone());
            }
        }

        Policy {
            partners,
            local: local_domains.iter().cloned().collect(),
            unlisted,
            by_user,
            by_domain,
            global,
            warnings,
        }
    }

    /// The partner entry for a remote domain: the `[[partner]]` that lists
    /// it (as `domain` or in `additional_domains`), or — when unlisted
    /// domains are allowed — a `listed: false` entry with the open
    /// federation settings (§11) and `s2s.unlisted_partner_type`. `None`
    /// when the domain may not federate (unlisted and denied, or local).
    ///
    /// `remote_domain` is compared as configured domains are stored: ASCII
    /// case and a trailing dot do not matter (pass a JID's normalised
    /// domain for internationalised names). A listed partner is one map
    /// probe and an `Arc` clone; an unlisted one allocates its entry.
    pub fn partner(&self, remote_domain: &str) -> Option<Arc<Partner>> {
        let domain = normalise(remote_domain);
        if let Some(p) = self.partners.get(domain.as_ref()) {
            return Some(p.clone());
        }
        let open = self.open_for(&domain)?;
        Some(Arc::new(Partner {
            domain: domain.into_owned(),
            additional_domains: Vec::new(),
            partner_type: open.partner_type,
            tls: OPEN_FEDERATION_TLS,
            sasl: OPEN_FEDERATION_SASL,
            dialback: OPEN_FEDERATION_DIALBACK,
            keep_alive: OPEN_FEDERATION_KEEP_ALIVE,
            connection_limit: open.connection_limit,
            proxy_fqdn: None,
            description: None,
            listed: false,
        }))
    }

    /// Only the partner type of [`Policy::partner`]: what the send path
    /// needs per stanza, without building an entry for unlisted domains.
    pub fn partner_type(&self, remote_domain: &str) -> Option<PartnerType> {
        let domain = normalise(remote_domain);
        match self.partners.get(domain.as_ref()) {
            Some(p) => Some(p.partner_type),
            None => self.open_for(&domain).map(|open| open.partner_type),
        }
    }

    /// The open-federation settings for a normalised domain that is not a
    /// listed partner; `None` when it may not federate.
    fn open_for(&self, domain: &str) -> Option<&OpenFederation> {
        let open = self.unlisted.as_ref()?;
        if domain.is_empty() || self.local.contains(domain) {
            return None;
        }
        Some(open)
    }

    /// The configured partners, each once, sorted by primary domain.
    pub fn listed_partners(&self) -> Vec<Arc<Partner>> {
        let mut v: Vec<Arc<Partner>> = Vec::new();
        for p in self.partners.values() {
            if !v.iter().any(|q| Arc::ptr_eq(q, p)) {
                v.push(p.clone());
            }
        }
        v.sort_by(|a, b| a.domain.cmp(&b.domain));
        v
    }

    /// Whether unlisted domains may federate (`s2s.unlisted_domains`).
    pub fn allows_unlisted(&self) -> bool {
        self.unlisted.is_some()
    }

    /// The effective access policy for a local user: the policy naming
    /// the user, else the one naming the user's domain, else the global one
    /// (both switches off unless the configuration says otherwise).
    pub fn access(&self, user: &BareJid) -> &Access {
        self.by_user
            .get(user)
            .or_else(|| self.by_domain.get(user.domain()))
            .unwrap_or(&self.global)
    }

    /// Configuration warnings to log at start and on reload: partners on a
    /// warning row of the negotiation matrix, and access policies that
    /// apply to nobody. Each names the file (if any), the entry and the rule.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }
}

/// ASCII-lower-case, without a trailing dot; borrowed when already so.
fn normalise(domain: &str) -> Cow<'_, str> {
    let domain = domain.strip_suffix('.').unwrap_or(domain);
    if domain.bytes().any(|b| b.is_ascii_uppercase()) {
        Cow::Owned(domain.to_ascii_lowercase())
    } else {
        Cow::Borrowed(domain)
    }
}

/// The policy in force, swapped whole on reload. Readers take a snapshot
/// (`get`) and keep it for the decision at hand, so a reload never changes
/// the rules halfway through one stanza.
#[derive(Clone)]
pub struct PolicyHandle(Arc<std::sync::RwLock<Arc<Policy>>>);

impl PolicyHandle {
    pub fn new(p: Policy) -> PolicyHandle {
        PolicyHandle(Arc::new(std::sync::RwLock::new(Arc::new(p))))
    }

    pub fn get(&self) -> Arc<Policy> {
        match self.0.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn set(&self, p: Policy) {
        match self.0.write() {
            Ok(mut g) => *g = Arc::new(p),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(p),
        }
    }
}
