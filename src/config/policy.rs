//! Building the federation [`Policy`] from a validated configuration: the
//! one place that maps `[[partner]]`, `[[access_policy]]` and
//! `s2s.unlisted_domains` onto policy's own types, so that `policy` does
//! not depend on `config`.

#[cfg(test)]
mod tests;

use super::{Config, Unlisted};
use crate::policy::{Access, AccessRule, OpenFederation, Partner, Policy};

impl Policy {
    /// Indexes a configuration. It trusts validation (unique domains, a
    /// valid matrix row per partner); a hand-built `Config` that breaks
    /// those rules gets the first entry for a domain, and an invalid row
    /// shows up in [`Policy::warnings`].
    pub fn from_config(c: &Config) -> Policy {
        let partners = c
            .partners
            .iter()
            .map(|p| Partner {
                domain: p.domain.clone(),
                additional_domains: p.additional_domains.clone(),
                partner_type: p.partner_type,
                tls: p.tls_negotiation,
                sasl: p.sasl_negotiation,
                dialback: p.support_dialback_negotiation,
                keep_alive: p.enable_keep_alive,
                connection_limit: p.connection_limit,
                proxy_fqdn: p.proxy_fqdn.clone(),
                description: p.description.clone(),
                listed: true,
            })
            .collect();
        let unlisted = match c.s2s.unlisted_domains {
            Unlisted::Deny => None,
            Unlisted::Allow => Some(OpenFederation {
                partner_type: c.s2s.unlisted_partner_type,
                connection_limit: c.gateway.partner_connection_limit,
            }),
        };
        let access_rules = c
            .access_policies
            .iter()
            .map(|a| AccessRule {
                access: Access {
                    name: a.name.clone(),
                    federation: a.enable_federation_access,
                    xmpp: a.enable_xmpp_access,
                },
                global: a.is_global(),
                domains: a.domains.clone(),
                users: a.users.clone(),
            })
            .collect();
        Policy::new(
            c.source.as_deref(),
            partners,
            &c.server.domains,
            unlisted,
            access_rules,
        )
    }
}
