//! Validation of the federation policy tables: `[[partner]]` entries
//! (with their `proxy_fqdn` routes) and `[[access_policy]]` entries.

use std::collections::HashMap;
use std::net::{Ipv4Addr, Ipv6Addr};

use super::raw::{RawAccessPolicy, RawPartner};
use super::validate::{Invalid, domain, invalid};
use super::{AccessPolicyConfig, GatewayConfig, PartnerConfig, ProxyTarget, defaults as d};
use crate::jid::BareJid;
use crate::policy::{self, Negotiate, Verdict};

pub(super) fn partners(
    raw: Vec<RawPartner>,
    local: &[String],
    gateway: &GatewayConfig,
) -> Result<Vec<PartnerConfig>, Invalid> {
    let mut partners: Vec<PartnerConfig> = Vec::with_capacity(raw.len());
    // Every partner domain so far, primary or additional → the key that
    // named it first.
    let mut seen: HashMap<String, String> = HashMap::new();
    for (i, p) in raw.into_iter().enumerate() {
        partners.push(partner(i, p, local, gateway, &mut seen)?);
    }
    Ok(partners)
}

/// Partner `i`, given the local domains, the gateway limits and the
/// partner domains before it.
fn partner(
    i: usize,
    raw: RawPartner,
    local: &[String],
    gateway: &GatewayConfig,
    seen: &mut HashMap<String, String>,
) -> Result<PartnerConfig, Invalid> {
    let at = |field: &str| format!("partner[{i}].{field}");
    let mut remote = |key: String, value: &str| -> Result<String, Invalid> {
        let domain = domain(&key, value)?;
        if local.contains(&domain) {
            return Err(invalid(
                key,
                format!("`{domain}` is one of server.domains; a partner is a remote domain"),
            ));
        }
        if let Some(first) = seen.get(&domain) {
            return Err(invalid(
                key,
                format!("`{domain}` is listed twice (first as {first})"),
            ));
        }
        seen.insert(domain.clone(), key);
        Ok(domain)
    };
    let domain = remote(at("domain"), &raw.domain)?;
    let additional_domains = raw
        .additional_domains
        .iter()
        .enumerate()
        .map(|(j, value)| remote(at(&format!("additional_domains[{j}]")), value))
        .collect::<Result<Vec<_>, _>>()?;
    let proxy_fqdn = raw
        .proxy_fqdn
        .as_deref()
        .map(|v| proxy_target(&at("proxy_fqdn"), v))
        .transpose()?;

    let tls: Negotiate = raw.tls_negotiation.into();
    let sasl: Negotiate = raw.sasl_negotiation.into();
    let dialback = raw.support_dialback_negotiation;
    if let Verdict::Invalid(rule) = policy::check(tls, sasl, dialback) {
        // Point at the key the operator most likely has to change, or at
        // the other one of the pair if only that one is written.
        let (keys, written, fix) = if rule == policy::SASL_NEEDS_TLS {
            (
                [at("sasl_negotiation"), at("tls_negotiation")],
                format!(
                    "tls_negotiation = \"not_supported\" with sasl_negotiation = \"{}\"",
                    policy::negotiate_name(sasl)
                ),
                "SASL is never sent without TLS: enable TLS, or set \
                 sasl_negotiation = \"not_supported\" for dialback only",
            )
        } else {
            (
                [at("support_dialback_negotiation"), at("sasl_negotiation")],
                "sasl_negotiation = \"not_supported\" with support_dialback_negotiation = false"
                    .to_owned(),
                "the partner would have no way to authenticate",
            )
        };
        return Err(Invalid {
            keys: keys.into(),
            message: format!("partner {domain}: {rule} ({written}); {fix}"),
        });
    }

    let connection_limit = match raw.connection_limit {
        None => gateway.partner_connection_limit,
        Some(0) => {
            return Err(invalid(
                at("connection_limit"),
                "must be at least 1 (0 would refuse every connection)",
            ));
        }
        Some(n) if n > gateway.connection_limit => {
            return Err(Invalid {
                keys: vec![at("connection_limit"), "gateway.connection_limit".into()],
                message: format!(
                    "{n} exceeds gateway.connection_limit ({}), the limit across all partners",
                    gateway.connection_limit
                ),
            });
        }
        Some(n) => n,
    };

    Ok(PartnerConfig {
        domain,
        proxy_fqdn,
        additional_domains,
        partner_type: raw.partner_type,
        tls_negotiation: tls,
        sasl_negotiation: sasl,
        support_dialback_negotiation: dialback,
        enable_keep_alive: raw.enable_keep_alive,
        connection_limit,
        description: raw.description,
    })
}

/// A domain or user named by an access policy: which policy, and where.
struct Named {
    policy: String,
    key: String,
}

pub(super) fn access_policies(
    raw: Vec<RawAccessPolicy>,
    local: &[String],
) -> Result<Vec<AccessPolicyConfig>, Invalid> {
    let mut out: Vec<AccessPolicyConfig> = Vec::with_capacity(raw.len());
    let mut names: HashMap<String, usize> = HashMap::new();
    let mut domains: HashMap<String, Named> = HashMap::new();
    let mut users: HashMap<BareJid, Named> = HashMap::new();
    for (i, raw) in raw.into_iter().enumerate() {
        let at = |field: &str| format!("access_policy[{i}].{field}");
        let name = raw.name.trim().to_owned();
        if name.is_empty() {
            return Err(invalid(at("name"), "must not be empty"));
        }
        if let Some(first) = names.insert(name.to_ascii_lowercase(), i) {
            return Err(invalid(
                at("name"),
                format!(
                    "`{name}` is used twice (first as access_policy[{first}].name; \
                     names are compared ignoring case)"
                ),
            ));
        }
        let global = name.eq_ignore_ascii_case(policy::GLOBAL);
        for (field, empty) in [
            ("domains", raw.domains.is_empty()),
            ("users", raw.users.is_empty()),
        ] {
            if global && !empty {
                return Err(invalid(
                    at(field),
                    format!(
                        "the `{name}` policy applies to everyone no other policy names, \
                         so it takes no {field}; give this policy another name"
                    ),
                ));
            }
        }
        // A second mention: in this policy, or in another one.
        let twice = |value: &str, first: &Named| {
            if first.policy == name {
                format!("`{value}` is listed twice (first as {})", first.key)
            } else {
                format!(
                    "`{value}` is named by two access policies, `{}` ({}) and `{name}`; \
                     it may have only one",
                    first.policy, first.key
                )
            }
        };

        let mut policy_domains = Vec::with_capacity(raw.domains.len());
        for (j, value) in raw.domains.iter().enumerate() {
            let key = at(&format!("domains[{j}]"));
            let domain = domain(&key, value)?;
            if !local.contains(&domain) {
                return Err(invalid(
                    key,
                    format!(
                        "`{domain}` is not one of server.domains ({}); \
                         an access policy applies to local users",
                        local.join(", ")
                    ),
                ));
            }
            if let Some(first) = domains.get(&domain) {
                return Err(Invalid {
                    message: twice(&domain, first),
                    keys: vec![key, first.key.clone()],
                });
            }
            domains.insert(
                domain.clone(),
                Named {
                    policy: name.clone(),
                    key,
                },
            );
            policy_domains.push(domain);
        }

        let mut policy_users = Vec::with_capacity(raw.users.len());
        for (j, value) in raw.users.iter().enumerate() {
            let key = at(&format!("users[{j}]"));
            let jid = user(&key, value, local)?;
            if let Some(first) = users.get(&jid) {
                return Err(Invalid {
                    message: twice(jid.as_str(), first),
                    keys: vec![key, first.key.clone()],
                });
            }
            users.insert(
                jid.clone(),
                Named {
                    policy: name.clone(),
                    key,
                },
            );
            policy_users.push(jid);
        }

        out.push(AccessPolicyConfig {
            name,
            description: raw.description,
            enable_federation_access: raw.enable_federation_access,
            enable_xmpp_access: raw.enable_xmpp_access,
            domains: policy_domains,
            users: policy_users,
        });
    }
    Ok(out)
}

/// A local user named by an access policy: a bare JID with a localpart,
/// in one of the local domains, normalised.
fn user(key: &str, value: &str, local: &[String]) -> Result<BareJid, Invalid> {
    if value.contains('/') {
        return Err(invalid(
            key,
            format!("`{value}` has a resource; name the user by their bare JID (user@domain)"),
        ));
    }
    let jid = BareJid::parse(value).map_err(|e| {
        invalid(
            key,
            format!("`{value}` is not a valid bare JID (user@domain): {e}"),
        )
    })?;
    if jid.is_domain() {
        return Err(invalid(
            key,
            format!("`{value}` is a domain, not a user; put it in domains"),
        ));
    }
    if !local.iter().any(|d| d == jid.domain()) {
        return Err(invalid(
            key,
            format!(
                "`{jid}` is not in one of server.domains ({}); \
                 an access policy applies to local users",
                local.join(", ")
            ),
        ));
    }
    Ok(jid)
}

/// `host[:port]`: a host name, an IPv4 address or an IPv6 address in
/// brackets, and a port from 1 to 65535 (5269 when absent). Host names
/// must be ASCII (an internationalised name in its `xn--` form), since they
/// go to DNS as written; they are lower-cased, without a trailing dot.
fn proxy_target(key: &str, value: &str) -> Result<ProxyTarget, Invalid> {
    if value.is_empty() {
        return Err(invalid(
            key,
            "must not be empty; remove the key to find the partner through DNS SRV",
        ));
    }
    let bad = |why: &str| {
        invalid(
            key,
            format!(
                "`{value}`: {why} (expected host or host:port, such as \
                 xmpp.example.net:5269, 192.0.2.1 or [2001:db8::1]:5269)"
            ),
        )
    };
    let (host, port) = if let Some(rest) = value.strip_prefix('[') {
        let Some((inside, after)) = rest.split_once(']') else {
            return Err(bad("`[` without a closing `]`"));
        };
        let port = match after {
            "" => None,
            after => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err(bad("only `:port` may follow `]`")),
            },
        };
        if inside.is_empty() {
            return Err(bad("the host is empty"));
        }
        let Ok(ip) = inside.parse::<Ipv6Addr>() else {
            return Err(bad(&format!(
                "`{inside}` is not an IPv6 address (only those go in brackets)"
            )));
        };
        (ip.to_string(), port)
    } else {
        let (host, port) = match value.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (value, None),
        };
        if port.is_some_and(|p| p.contains(':')) {
            return Err(bad("an IPv6 address must be in brackets"));
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        if host.is_empty() {
            return Err(bad("the host is empty"));
        }
        if host.parse::<Ipv4Addr>().is_err() {
            host_name(host).map_err(|why| bad(&why))?;
        }
        (host.to_ascii_lowercase(), port)
    };
    let port = match port {
        None => d::S2S_PORT,
        Some("") => return Err(bad("the port is empty")),
        Some(p) if !p.bytes().all(|b| b.is_ascii_digit()) => {
            return Err(bad(&format!("`{p}` is not a port number")));
        }
        Some(p) => match p.parse::<u16>() {
            Ok(0) => return Err(bad("port 0 cannot be connected to")),
            Ok(port) => port,
            Err(_) => return Err(bad(&format!("port {p} is above 65535"))),
        },
    };
    Ok(ProxyTarget { host, port })
}

/// An ASCII DNS host name (RFC 1123): dot-separated labels of letters,
/// digits and inner hyphens (and underscores, as server domains allow:
/// seen on internal hosts), at most 63 bytes each and 253 in all, the last
/// not all digits (that would be a mistyped IPv4 address).
fn host_name(host: &str) -> Result<(), String> {
    if !host.is_ascii() {
        return Err(
            "a host name must be ASCII; write an internationalised name \
                    in its xn-- form"
                .into(),
        );
    }
    if host.len() > 253 {
        return Err("the host name is longer than 253 characters".into());
    }
    for label in host.split('.') {
        let ok = (1..=63).contains(&label.len())
            && label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            && !label.starts_with('-')
            && !label.ends_with('-');
        if !ok {
            return Err(format!("`{host}` is not a valid host name"));
        }
    }
    if host
        .rsplit('.')
        .next()
        .is_some_and(|last| last.bytes().all(|b| b.is_ascii_digit()))
    {
        return Err(format!(
            "`{host}` is neither an IPv4 address nor a host name"
        ));
    }
    Ok(())
}
