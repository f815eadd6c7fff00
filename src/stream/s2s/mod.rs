//! Server-to-server stream negotiation as sans-IO state machines, one per
//! direction: [`OutboundNegotiation`] (we initiate, for `local` → `remote`)
//! and [`InboundNegotiation`] (a peer connected to us). They cover STARTTLS
//! (RFC 6120 §5), SASL EXTERNAL with certificates (RFC 6120 §6, XEP-0178)
//! and Server Dialback (XEP-0220, keys per XEP-0185), each governed by a
//! per-domain [`PeerPolicy`] — the Lync partner model of TLS / SASL
//! Required / Optional / NotSupported plus a dialback switch.
//!
//! The machines take inputs and return actions; the s2s actors own the
//! sockets, the TLS handshakes, the timers, the verification connections
//! and the routing of stanzas once a stream is authenticated. Nothing here
//! touches a socket or a clock, so every branch is tested in memory by
//! driving an outbound machine against an inbound one.
//!
//! The machines live in `outbound.rs` and `inbound.rs`; this module holds
//! what both directions share (the [`PeerPolicy`] and [`Negotiate`] inputs,
//! peer identities, [`OutMode`], the failure type and the element helpers),
//! and re-exports the machines so callers name everything from here.

use std::fmt;

use crate::error::{StanzaCondition, StreamCondition, StreamError};
use crate::jid::BareJid;
use crate::xml::element::Element;
use crate::xml::escape::escape_attr;
use crate::xml::ns::{NS_DIALBACK, NS_SERVER, NS_STREAMS, NS_XMPP_STREAMS};
use crate::xml::{Stanza, StreamHeader};

mod inbound;
mod outbound;

#[cfg(test)]
mod tests;

pub use inbound::{InAction, InInput, InboundContext, InboundNegotiation};
pub use outbound::{OutAction, OutInput, OutboundNegotiation};

// The partner model's negotiation settings are policy's; re-exported
// here because every negotiation input carries them.
pub use crate::policy::{Negotiate, PeerPolicy};

/// How a stream (or a domain pair on it) was authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthMethod {
    SaslExternal,
    DialbackTls,
    DialbackPlain,
}

/// Outcome of the TLS handshake as the actor saw it. `PeerIdentity` is
/// implemented elsewhere (certificate chain checks per RFC 6125).
pub trait PeerIdentity: Send + Sync {
    fn is_valid_for(&self, domain: &str) -> bool;
    /// The names the certificate carries, for logs.
    fn describe(&self) -> String {
        String::new()
    }
}

impl fmt::Debug for dyn PeerIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PeerIdentity")
    }
}

/// A domain as it appears in `to`/`from` or a dialback attribute, normalised
/// the way routing compares domains; `None` when it is not a bare domain.
fn domain(s: &str) -> Option<String> {
    let j = BareJid::parse(s.trim_end_matches('.')).ok()?;
    j.is_domain().then(|| j.as_str().to_owned())
}

/// Parses a negotiation element with the prefixes of the peer's header.
pub fn parse_element(s: &Stanza, prefixes: &[(String, String)]) -> Result<Element, String> {
    let mut p: Vec<(&str, &str)> = prefixes
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    if !p.iter().any(|(k, _)| *k == "stream") {
        p.push(("stream", NS_STREAMS));
    }
    Element::parse(s.bytes(), NS_SERVER, &p).map_err(|e| e.to_string())
}

/// `<stream:error>` as received: the first known condition, and the text.
pub fn parse_stream_error(el: &Element) -> StreamError {
    let condition = el
        .elements()
        .filter(|c| c.ns == NS_XMPP_STREAMS)
        .find_map(|c| {
            StreamCondition::ALL
                .iter()
                .copied()
                .find(|k| k.as_str() == c.name)
        })
        .unwrap_or(StreamCondition::UndefinedCondition);
    StreamError {
        condition,
        text: el.child("text", NS_XMPP_STREAMS).map(Element::text),
    }
}

/// The header both directions send: `jabber:server` with the dialback
/// prefix declared, which is also how legacy peers learn we speak dialback.
fn stream_header(id: Option<&str>, from: Option<&str>, to: Option<&str>) -> String {
    let mut s = format!(
        "<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' xmlns:stream='{NS_STREAMS}' \
         xmlns:db='{NS_DIALBACK}'"
    );
    for (k, v) in [("id", id), ("from", from), ("to", to)] {
        if let Some(v) = v {
            s.push_str(&format!(" {k}='{}'", escape_attr(v)));
        }
    }
    s.push_str(" version='1.0'>");
    s
}

fn is_v1(h: &StreamHeader) -> bool {
    h.version
        .as_deref()
        .is_some_and(|v| v.split('.').next() == Some("1"))
}

/// What an outbound stream is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OutMode {
    /// Authenticate `local` to `remote` so stanzas can flow.
    Authenticate,
    /// Only run db:verify for the inbound side (XEP-0220 §2.1.2): no auth
    /// of our own. `remote` is the Authoritative Server of `originating`.
    Verify {
        /// Our local domain that received the db:result.
        receiving: String,
        /// The remote domain that claimed to send it.
        originating: String,
        /// Our stream id on the inbound stream the db:result came on.
        stream_id: String,
        key: String,
    },
}

/// Why an outbound negotiation failed, and what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S2sFailure {
    pub reason: FailReason,
    /// Stream error to send before closing (`None`: just close).
    pub send: Option<StreamError>,
    /// `true` when the peer answered as an XMPP server (its stream header
    /// arrived) and negotiation then failed: queued stanzas bounce with
    /// `remote-server-timeout` (type wait). `false` when the peer never
    /// opened a stream or said it does not host the domain (`host-unknown`,
    /// `host-gone`): they bounce with `remote-server-not-found` (cancel).
    /// This is Prosody's split; see [`S2sFailure::bounce`] for the one
    /// exception XEP-0220 makes.
    pub timeout_class: bool,
}

impl S2sFailure {
    /// The stanza error for stanzas queued on this negotiation. XEP-0220
    /// §2.1.1: after `type='invalid'` they bounce with
    /// `internal-server-error`; otherwise per [`S2sFailure::timeout_class`].
    pub fn bounce(&self) -> StanzaCondition {
        if self.reason == FailReason::DialbackRefused {
            StanzaCondition::InternalServerError
        } else if self.timeout_class {
            StanzaCondition::RemoteServerTimeout
        } else {
            StanzaCondition::RemoteServerNotFound
        }
    }
}

impl fmt::Display for S2sFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.reason, f)
    }
}

impl std::error::Error for S2sFailure {}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FailReason {
    #[error("TLS is required for this domain by local policy, but the peer did not offer STARTTLS")]
    TlsRequiredButNotOffered,
    #[error("the peer requires STARTTLS, but local policy for this domain does not support TLS")]
    TlsOfferedButNotSupportedAndRequiredByPeer,
    #[error(
        "SASL EXTERNAL is required for this domain by local policy, but it was not possible \
         (the peer did not offer it after TLS, or we hold no certificate for our domain)"
    )]
    SaslRequiredButNotOffered,
    /// The receiving server's certificate is not valid for the domain we
    /// connected to, and the partner's settings allow nothing but
    /// certificates (SASL required, or dialback off): it may be an
    /// impostor, so no stanza goes to it.
    #[error(
        "the peer's certificate is not valid for the domain (untrusted, expired or for another \
         name), and local policy for this domain allows no dialback fallback"
    )]
    RemoteCertificateInvalid,
    #[error("the peer refused our certificate (SASL EXTERNAL failed) and no fallback is allowed")]
    SaslExternalRefused,
    #[error("dialback is the only allowed method, but the peer does not offer it")]
    DialbackNotOffered,
    #[error("the peer answered our dialback key with type='invalid'")]
    DialbackRefused,
    /// XEP-0220 §2.4 dialback error (`type='error'`), with its condition.
    #[error("the peer answered dialback with an error: {0}")]
    DialbackError(String),
    #[error("no authentication method is both allowed by local policy and offered by the peer")]
    NoUsableAuthMethod,
    #[error("the peer sent a stream error: {0}")]
    PeerStreamError(StreamError),
    #[error("protocol error: {0}")]
    Protocol(String),
}
