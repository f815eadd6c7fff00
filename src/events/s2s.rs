//! Federation links: connects, authentication, closes, and what a link
//! could not hand on.
//!
//! Targets are those the lines had before they moved here (the module
//! that emits them), so `[log] level` filters written for them still
//! apply. Events with a per-domain metric move it through the link's
//! [`super::DomainMetrics`]; the others count in `fedrouter_events_total`.

use std::fmt::{Debug, Display};

use super::DomainMetrics;
use super::counter::{EventName, count};

const CONNECT: &str = "fedrouter::s2s::connect";
const OUTBOUND: &str = "fedrouter::s2s::outbound";
const INBOUND: &str = "fedrouter::s2s::inbound";
const ROUTER: &str = "fedrouter::s2s";

/// The `method` label of `fedrouter_s2s_auth_total`. A trait, so that
/// `events` needs nothing from `stream` (which needs `storage`, which emits
/// events here: that would be a cycle); the protocol's `AuthMethod`
/// implements it.
pub trait AuthLabel {
    fn auth_label(&self) -> &'static str;
}

/// One target of a domain (an SRV record or the fallback) did not answer
/// the TCP connect; the next is tried.
pub struct TargetUnreachable<'a> {
    pub remote: &'a str,
    pub host: &'a str,
    pub port: u16,
    pub error: &'a dyn Display,
}

impl TargetUnreachable<'_> {
    pub fn emit(self) {
        tracing::debug!(
            target: CONNECT,
            remote = %self.remote,
            host = %self.host,
            port = self.port,
            error = %self.error,
            "connect failed"
        );
        count(EventName::S2sTargetUnreachable);
    }
}

/// Addresses a remote domain's DNS named were private (loopback, RFC
/// 1918, link-local, ...) and outside `s2s.allow_private_targets`, so they
/// are not connected to; `left` targets remain (none: the domain is
/// unreachable).
pub struct PrivateTargetsDropped<'a> {
    pub remote: &'a str,
    pub addrs: &'a [std::net::SocketAddr],
    pub left: usize,
}

impl PrivateTargetsDropped<'_> {
    pub fn emit(self) {
        tracing::warn!(
            target: CONNECT,
            remote = %self.remote,
            addrs = ?self.addrs,
            targets_left = self.left,
            "DNS named private addresses for a remote domain; not connecting to them \
             (s2s.allow_private_targets)"
        );
        count(EventName::S2sPrivateTargetsDropped);
    }
}

/// Why we closed an outbound stream ourselves, or saw it closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutboundClose {
    /// A reload removed the remote domain from the allowed partners.
    NoLongerPartner,
    /// A reload changed the partner's `proxy_fqdn`: the next stanza
    /// connects to the new route.
    RouteChanged,
    /// Nothing was read or written for `stream_inactivity_timeout`.
    Idle,
    /// The peer closed the connection (EOF or a read error).
    ByPeer,
}

/// An outbound stream ends.
pub struct OutboundClosed<'a> {
    pub local: &'a str,
    pub remote: &'a str,
    pub why: OutboundClose,
}

impl OutboundClosed<'_> {
    pub fn emit(self) {
        let (msg, name) = match self.why {
            OutboundClose::NoLongerPartner => (
                "closing: no longer an allowed partner",
                EventName::S2sClosedNotPartner,
            ),
            OutboundClose::RouteChanged => (
                "closing: the partner's proxy_fqdn changed",
                EventName::S2sClosedRouteChanged,
            ),
            OutboundClose::Idle => ("closing idle s2s stream", EventName::S2sClosedIdle),
            OutboundClose::ByPeer => ("s2s stream closed by the peer", EventName::S2sClosedByPeer),
        };
        tracing::info!(target: OUTBOUND, local = %self.local, remote = %self.remote, "{msg}");
        count(name);
    }
}

/// A connection to `remote` was not attempted: `[gateway] connection_limit`
/// streams are open.
pub struct ConnectionLimitReached<'a> {
    pub remote: &'a str,
}

impl ConnectionLimitReached<'_> {
    pub fn emit(self) {
        tracing::warn!(target: OUTBOUND, remote = %self.remote, "s2s connection_limit reached");
        count(EventName::S2sConnectionLimitReached);
    }
}

/// A dialback key from `originating` was not verified: verifying it
/// needs a connection, and `[gateway] connection_limit` are open. The
/// peer gets a `resource-constraint` dialback error.
pub struct VerifyConnectionLimitReached<'a> {
    pub originating: &'a str,
}

impl VerifyConnectionLimitReached<'_> {
    pub fn emit(self) {
        tracing::warn!(
            target: INBOUND,
            originating = %self.originating,
            "s2s connection_limit reached; dialback key not verified"
        );
        count(EventName::S2sVerifyConnectionLimitReached);
    }
}

/// An outbound stream is negotiated and authenticated.
pub struct OutboundUp<'a, M> {
    pub local: &'a str,
    pub remote: &'a str,
    pub peer: &'a dyn Display,
    pub method: Option<M>,
}

impl<M: AuthLabel + Debug> OutboundUp<'_, M> {
    pub fn emit(self, metrics: &DomainMetrics) {
        tracing::info!(
            target: OUTBOUND,
            local = %self.local,
            remote = %self.remote,
            peer = %self.peer,
            method = ?self.method,
            "s2s stream up"
        );
        metrics.auth(self.method, true);
    }
}

/// A connection attempt failed at `stage` (the
/// `fedrouter_s2s_failures_total` label); `failures` in a row so far.
pub struct OutboundFailed<'a> {
    pub local: &'a str,
    pub remote: &'a str,
    pub error: &'a dyn Display,
    pub stage: &'static str,
    pub failures: u32,
}

impl OutboundFailed<'_> {
    pub fn emit(self, metrics: &DomainMetrics) {
        tracing::warn!(
            target: OUTBOUND,
            local = %self.local,
            remote = %self.remote,
            error = %self.error,
            failures = self.failures,
            "s2s connection failed"
        );
        metrics.failure(self.stage);
    }
}

/// The peer of an outbound stream sent a stream error (its text as
/// received).
pub struct OutboundPeerError<'a> {
    pub remote: &'a str,
    pub error: &'a str,
}

impl OutboundPeerError<'_> {
    pub fn emit(self) {
        tracing::warn!(target: OUTBOUND, remote = %self.remote, error = %self.error, "the peer sent a stream error");
        count(EventName::S2sPeerStreamError);
    }
}

/// A stanza could not be handed to its domain's actor (it had stopped
/// between the lookup and the send).
pub struct DomainActorUnavailable<'a> {
    pub error: &'a dyn Display,
}

impl DomainActorUnavailable<'_> {
    pub fn emit(self) {
        tracing::warn!(target: ROUTER, error = %self.error, "remote domain actor unavailable");
        count(EventName::S2sDomainActorUnavailable);
    }
}

/// An inbound stream authenticated its peer as `remote`, for `local`.
pub struct InboundAuthenticated<'a, M> {
    pub remote: &'a str,
    pub local: &'a str,
    pub peer: &'a dyn Display,
    pub method: M,
}

impl<M: AuthLabel + Debug + Copy> InboundAuthenticated<'_, M> {
    pub fn emit(self, metrics: &DomainMetrics) {
        tracing::info!(
            target: INBOUND,
            remote = %self.remote,
            local = %self.local,
            method = ?self.method,
            peer = %self.peer,
            "inbound s2s authenticated"
        );
        metrics.auth(Some(self.method), true);
    }
}

/// The peer of an inbound stream closed it with a stream error.
pub struct InboundPeerError<'a> {
    pub peer: &'a dyn Display,
    pub error: &'a dyn Display,
}

impl InboundPeerError<'_> {
    pub fn emit(self) {
        tracing::info!(
            target: INBOUND,
            peer = %self.peer,
            error = %self.error,
            "the peer closed its stream with an error"
        );
        count(EventName::S2sPeerStreamError);
    }
}

/// A dialback key could not be checked with the originating domain's
/// authoritative server.
pub struct DialbackVerifyFailed<'a> {
    pub originating: &'a str,
    pub error: &'a dyn Display,
}

impl DialbackVerifyFailed<'_> {
    pub fn emit(self) {
        tracing::info!(
            target: INBOUND,
            originating = %self.originating,
            error = %self.error,
            "dialback verification could not be done"
        );
        count(EventName::DialbackVerifyFailed);
    }
}

/// A federation peer enabled XEP-0198 acks on its stream to us.
pub struct SmEnabled<'a> {
    pub peer: &'a dyn Display,
}

impl SmEnabled<'_> {
    pub fn emit(self) {
        tracing::debug!(target: INBOUND, peer = %self.peer, "peer enabled stream management");
        count(EventName::S2sSmEnabled);
    }
}

/// We answered a federation peer's `<r/>` with `<a h/>`.
pub struct SmAckSent<'a> {
    pub peer: &'a dyn Display,
}

impl SmAckSent<'_> {
    pub fn emit(self) {
        tracing::trace!(target: INBOUND, peer = %self.peer, "stream management ack sent");
        count(EventName::S2sSmAckSent);
    }
}

/// A federation peer resumed the Stream Management count of a stream
/// whose connection died: it resends only what we did not handle.
pub struct SmResumed<'a> {
    pub peer: &'a dyn Display,
    pub h: u32,
}

impl SmResumed<'_> {
    pub fn emit(self) {
        tracing::info!(target: INBOUND, peer = %self.peer, h = self.h, "peer resumed a federation stream");
        count(EventName::S2sSmResumed);
    }
}

/// A federation peer's `<resume/>` was refused (`<item-not-found/>`).
pub struct SmResumeRefused<'a> {
    pub peer: &'a dyn Display,
    /// `unknown` (or expired), `not-yours` (another domain pair's).
    pub why: &'static str,
}

impl SmResumeRefused<'_> {
    pub fn emit(self) {
        tracing::info!(target: INBOUND, peer = %self.peer, why = self.why, "federation stream resumption refused");
        count(EventName::S2sSmResumeRefused);
    }
}

/// A message whose XEP-0359 `origin-id` was seen from the same sender
/// arrived again (resent after a stream was lost) and was dropped.
pub struct DuplicateDropped<'a> {
    pub peer: &'a dyn Display,
    pub from: &'a str,
}

impl DuplicateDropped<'_> {
    pub fn emit(self) {
        tracing::debug!(target: INBOUND, peer = %self.peer, from = self.from, "resent duplicate dropped");
        count(EventName::S2sDuplicateDropped);
    }
}

/// Our outbound stream's Stream Management state changed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutSm {
    /// The peer answered `<enabled/>` (with resumption or without).
    Enabled { resumable: bool },
    /// The peer refused `<enable/>`: the stream runs without acks.
    Refused,
    /// A lost stream was resumed: `resent` stanzas it had not handled go
    /// again, `dropped` it had are not resent.
    Resumed { resent: usize, dropped: usize },
    /// The peer refused `<resume/>`: all `resent` unacknowledged stanzas
    /// go again on a fresh stream (the peer may see some twice).
    ResumeFailed { resent: usize },
}

pub struct OutboundSm<'a> {
    pub remote: &'a str,
    pub what: OutSm,
}

impl OutboundSm<'_> {
    pub fn emit(self) {
        tracing::info!(target: OUTBOUND, remote = self.remote, what = ?self.what, "outbound stream management");
        count(match self.what {
            OutSm::Enabled { .. } => EventName::S2sSmOutEnabled,
            OutSm::Refused => EventName::S2sSmOutRefused,
            OutSm::Resumed { .. } => EventName::S2sSmOutResumed,
            OutSm::ResumeFailed { .. } => EventName::S2sSmOutResumeFailed,
        });
    }
}

/// The peer of an outbound stream acknowledged stanzas (`<a h/>`).
pub struct SmAckReceived<'a> {
    pub remote: &'a str,
    pub h: u32,
}

impl SmAckReceived<'_> {
    pub fn emit(self) {
        tracing::trace!(target: OUTBOUND, remote = self.remote, h = self.h, "stream management ack received");
        count(EventName::S2sSmAckReceived);
    }
}

/// At start, the outbound journal (`s2s.durable_queue`) held stanzas
/// accepted and never settled: they are sent again.
pub struct JournalResent {
    pub count: usize,
}

impl JournalResent {
    pub fn emit(self) {
        tracing::info!(target: OUTBOUND, count = self.count, "stanzas from the outbound journal sent again");
        count(EventName::S2sJournalResent);
    }
}
