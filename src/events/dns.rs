//! SRV and address resolution of remote domains.

use std::fmt::Display;

use super::counter::{EventName, count};

const TARGET: &str = "fedrouter::dns";

/// One of the two SRV lookups (`_xmpp-server`, `_xmpps-server`) failed and
/// the other's records are used.
pub struct SrvLookupFailed<'a> {
    pub domain: &'a str,
    pub error: &'a dyn Display,
}

impl SrvLookupFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            target: TARGET,
            domain = %self.domain,
            error = %self.error,
            "one SRV lookup failed; using the other's records"
        );
        count(EventName::SrvLookupFailed);
    }
}

/// An SRV target resolved to no address.
pub struct SrvTargetEmpty<'a> {
    pub host: &'a str,
}

impl SrvTargetEmpty<'_> {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, host = %self.host, "SRV target has no addresses");
        count(EventName::SrvTargetEmpty);
    }
}

/// An SRV target's address lookup failed.
pub struct SrvTargetUnresolved<'a> {
    pub host: &'a str,
    pub error: &'a dyn Display,
}

impl SrvTargetUnresolved<'_> {
    pub fn emit(self) {
        tracing::debug!(
            target: TARGET,
            host = %self.host,
            error = %self.error,
            "SRV target did not resolve"
        );
        count(EventName::SrvTargetUnresolved);
    }
}

/// No SRV target of a domain has an address: the domain is not found.
pub struct NoSrvTargetAddress<'a> {
    pub domain: &'a str,
}

impl NoSrvTargetAddress<'_> {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, domain = %self.domain, "no SRV target has an address");
        count(EventName::NoSrvTargetAddress);
    }
}
