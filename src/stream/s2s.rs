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

use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{StanzaCondition, StreamCondition, StreamError};
use crate::jid::{BareJid, Jid};
use crate::stream::dialback::{self, DbElement, DbKind, DbType, MAX_KEY_LEN};
use crate::xml::element::Element;
use crate::xml::escape::escape_attr;
use crate::xml::ns::{
    NS_DIALBACK, NS_DIALBACK_FEATURE, NS_SASL, NS_SERVER, NS_STREAMS, NS_TLS, NS_XMPP_STREAMS,
};
use crate::xml::{Stanza, StanzaKind, StreamHeader};

/// SASL attempts a peer may fail on one inbound stream before it is closed.
const MAX_SASL_FAILURES: u32 = 3;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiate {
    Required,
    Optional,
    NotSupported,
}

/// Negotiation settings for one remote domain (the Lync partner model; the
/// default for open federation is tls Required, sasl Optional, dialback
/// true).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    pub tls: Negotiate,
    pub sasl: Negotiate,
    pub dialback: bool,
}

impl PeerPolicy {
    /// What unlisted domains get when open federation is on: TLS always,
    /// SASL EXTERNAL when the certificate verifies, dialback otherwise
    /// (what ejabberd and Prosody do by default).
    pub fn open_federation() -> PeerPolicy {
        PeerPolicy {
            tls: Negotiate::Required,
            sasl: Negotiate::Optional,
            dialback: true,
        }
    }
}

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
fn parse_element(s: &Stanza, prefixes: &[(String, String)]) -> Result<Element, String> {
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
fn parse_stream_error(el: &Element) -> StreamError {
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

/// Whether a domain may authenticate to us by dialback. SASL Required means
/// a certificate is required, as it does on the outbound side (and as the
/// Lync matrix says for TLS and SASL both Required: "dialback is never used").
fn dialback_allowed(p: &PeerPolicy) -> bool {
    p.dialback && p.sasl != Negotiate::Required
}

fn is_v1(h: &StreamHeader) -> bool {
    h.version
        .as_deref()
        .is_some_and(|v| v.split('.').next() == Some("1"))
}

// ---------------------------------------------------------------------------
// Outbound
// ---------------------------------------------------------------------------

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

#[derive(Debug)]
pub enum OutInput<'a> {
    StreamOpen(&'a StreamHeader),
    Element(&'a Stanza),
    TlsEstablished { peer: Option<Arc<dyn PeerIdentity>> },
    StreamClosed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OutAction {
    Send(String),
    /// `<proceed/>` arrived: run the TLS client handshake (SNI = remote)
    /// and feed `TlsEstablished`.
    StartTls,
    /// Reset the framer; the machine emits `Send(new header)` in the same
    /// batch.
    RestartStream,
    /// Authenticated: stanzas may flow now.
    Ready(AuthMethod),
    /// Verify mode: the Authoritative Server's answer.
    Verified(bool),
    /// Negotiation failed: send `send` if any, then close.
    Fail(S2sFailure),
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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutState {
    Idle,
    AwaitHeader,
    AwaitFeatures,
    AwaitProceed,
    AwaitTls,
    AwaitSasl,
    AwaitDbResult,
    AwaitDbVerify,
    Ready,
    Done,
}

/// What the peer's latest `<stream:features/>` offered.
#[derive(Debug, Clone, Copy, Default)]
struct Offered {
    starttls: bool,
    tls_required: bool,
    external: bool,
    dialback: bool,
}

pub struct OutboundNegotiation {
    local: String,
    remote: String,
    policy: PeerPolicy,
    secret: Arc<[u8]>,
    can_external: bool,
    mode: OutMode,
    state: OutState,
    tls: bool,
    remote_cert_valid: bool,
    header_seen: bool,
    stream_id: Option<String>,
    prefixes: Vec<(String, String)>,
    offered: Offered,
    sasl_failed: bool,
    sasl_done: bool,
}

impl OutboundNegotiation {
    pub fn new(
        local: String,
        remote: String,
        policy: PeerPolicy,
        secret: Arc<[u8]>,
        can_external: bool,
        mode: OutMode,
    ) -> Self {
        OutboundNegotiation {
            local,
            remote,
            policy,
            secret,
            can_external,
            mode,
            state: OutState::Idle,
            tls: false,
            remote_cert_valid: false,
            header_seen: false,
            stream_id: None,
            prefixes: Vec::new(),
            offered: Offered::default(),
            sasl_failed: false,
            sasl_done: false,
        }
    }

    /// `[Send(opening header)]`; nothing when already started.
    pub fn start(&mut self) -> Vec<OutAction> {
        if self.state != OutState::Idle {
            return Vec::new();
        }
        self.state = OutState::AwaitHeader;
        vec![OutAction::Send(self.header())]
    }

    /// The `id` of the peer's latest stream header.
    pub fn stream_id(&self) -> Option<&str> {
        self.stream_id.as_deref()
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// Whether the peer's TLS certificate was valid for `remote`. Dialback
    /// does not need it; operators and metrics may.
    pub fn remote_certificate_valid(&self) -> bool {
        self.remote_cert_valid
    }

    pub fn is_ready(&self) -> bool {
        self.state == OutState::Ready
    }

    fn header(&self) -> String {
        stream_header(None, Some(&self.local), Some(&self.remote))
    }

    pub fn handle(&mut self, input: OutInput<'_>) -> Vec<OutAction> {
        if self.state == OutState::Done {
            return Vec::new();
        }
        match input {
            OutInput::StreamOpen(h) => self.on_header(h),
            OutInput::Element(s) => self.on_element(s),
            OutInput::TlsEstablished { peer } if self.state == OutState::Idle => {
                // Direct TLS (XEP-0368): the handshake ran before the stream.
                self.tls = true;
                self.remote_cert_valid = peer.is_some_and(|p| p.is_valid_for(&self.remote));
                Vec::new()
            }
            OutInput::TlsEstablished { peer } => {
                if self.state != OutState::AwaitTls {
                    return self.fail(
                        FailReason::Protocol("TLS established without STARTTLS".into()),
                        None,
                    );
                }
                self.tls = true;
                self.remote_cert_valid = peer.is_some_and(|p| p.is_valid_for(&self.remote));
                self.state = OutState::AwaitHeader;
                vec![OutAction::RestartStream, OutAction::Send(self.header())]
            }
            OutInput::StreamClosed => self.fail(
                FailReason::Protocol("the peer closed the stream during negotiation".into()),
                None,
            ),
        }
    }

    fn fail(&mut self, reason: FailReason, send: Option<StreamError>) -> Vec<OutAction> {
        let timeout_class = match &reason {
            FailReason::PeerStreamError(e) => {
                self.header_seen
                    && !matches!(
                        e.condition,
                        StreamCondition::HostUnknown | StreamCondition::HostGone
                    )
            }
            _ => self.header_seen,
        };
        self.state = OutState::Done;
        vec![OutAction::Fail(S2sFailure {
            reason,
            send,
            timeout_class,
        })]
    }

    fn on_header(&mut self, h: &StreamHeader) -> Vec<OutAction> {
        if self.state != OutState::AwaitHeader {
            return self.fail(
                FailReason::Protocol("unexpected stream header".into()),
                Some(StreamError::new(StreamCondition::BadFormat)),
            );
        }
        self.header_seen = true;
        self.stream_id = h.id.clone();
        self.prefixes.clone_from(&h.prefixes);
        self.state = OutState::AwaitFeatures;
        if is_v1(h) {
            return Vec::new();
        }
        // A pre-RFC 3920 peer sends no features: only plain dialback, which
        // it advertises by declaring the dialback namespace.
        let dialback = self.declares_dialback();
        self.on_features(Offered {
            dialback,
            ..Offered::default()
        })
    }

    fn declares_dialback(&self) -> bool {
        self.prefixes.iter().any(|(_, ns)| ns == NS_DIALBACK)
    }

    fn on_element(&mut self, s: &Stanza) -> Vec<OutAction> {
        let el = match parse_element(s, &self.prefixes) {
            Ok(el) => el,
            Err(e) => {
                return self.fail(
                    FailReason::Protocol(format!("cannot parse <{}>: {e}", s.name())),
                    Some(StreamError::new(StreamCondition::NotWellFormed)),
                );
            }
        };
        if el.is("error", NS_STREAMS) {
            return self.fail(FailReason::PeerStreamError(parse_stream_error(&el)), None);
        }
        match self.state {
            OutState::Ready => Vec::new(),
            OutState::AwaitFeatures if el.is("features", NS_STREAMS) => {
                let mechanisms = el.child("mechanisms", NS_SASL);
                let starttls = el.child("starttls", NS_TLS);
                self.on_features(Offered {
                    starttls: starttls.is_some(),
                    tls_required: starttls.is_some_and(|t| t.child("required", NS_TLS).is_some()),
                    external: mechanisms.is_some_and(|m| {
                        m.children_named("mechanism", NS_SASL)
                            .any(|x| x.text().trim() == "EXTERNAL")
                    }),
                    dialback: el.child("dialback", NS_DIALBACK_FEATURE).is_some()
                        || self.declares_dialback(),
                })
            }
            OutState::AwaitProceed if el.is("proceed", NS_TLS) => {
                self.state = OutState::AwaitTls;
                vec![OutAction::StartTls]
            }
            OutState::AwaitProceed if el.is("failure", NS_TLS) => self.fail(
                FailReason::Protocol("the peer refused STARTTLS".into()),
                None,
            ),
            OutState::AwaitSasl if el.is("success", NS_SASL) => {
                self.sasl_done = true;
                self.state = OutState::AwaitHeader;
                vec![OutAction::RestartStream, OutAction::Send(self.header())]
            }
            OutState::AwaitSasl if el.is("failure", NS_SASL) => {
                self.sasl_failed = true;
                self.choose_auth()
            }
            OutState::AwaitDbResult | OutState::AwaitDbVerify if el.ns == NS_DIALBACK => {
                match DbElement::from_element(&el) {
                    Some(db) => self.on_dialback(db),
                    None => Vec::new(),
                }
            }
            // XEP-0220 §4.1: dialback elements that answer nothing we asked
            // are dropped, never acted on.
            _ if el.ns == NS_DIALBACK => Vec::new(),
            _ => self.fail(
                FailReason::Protocol(format!("unexpected <{}/> during negotiation", s.name())),
                Some(StreamError::new(StreamCondition::UnsupportedStanzaType)),
            ),
        }
    }

    fn on_features(&mut self, offered: Offered) -> Vec<OutAction> {
        self.offered = offered;
        if self.sasl_done {
            self.state = OutState::Ready;
            return vec![OutAction::Ready(AuthMethod::SaslExternal)];
        }
        if !self.tls {
            if offered.starttls && self.policy.tls != Negotiate::NotSupported {
                self.state = OutState::AwaitProceed;
                return vec![OutAction::Send(format!("<starttls xmlns='{NS_TLS}'/>"))];
            }
            if offered.tls_required {
                return self.fail(
                    FailReason::TlsOfferedButNotSupportedAndRequiredByPeer,
                    Some(StreamError::with_text(
                        StreamCondition::UnsupportedFeature,
                        "TLS is not supported for this domain by the initiating server's policy",
                    )),
                );
            }
            if !offered.starttls && self.policy.tls == Negotiate::Required {
                return self.fail(
                    FailReason::TlsRequiredButNotOffered,
                    Some(StreamError::with_text(
                        StreamCondition::PolicyViolation,
                        "TLS is required for this domain",
                    )),
                );
            }
        }
        self.choose_auth()
    }

    /// Picks the authentication step after TLS (or without it), and again
    /// after a SASL failure.
    fn choose_auth(&mut self) -> Vec<OutAction> {
        let offered = self.offered;
        if let OutMode::Verify {
            receiving,
            originating,
            stream_id,
            key,
        } = &self.mode
        {
            if !offered.dialback {
                return self.fail(FailReason::DialbackNotOffered, None);
            }
            let req =
                dialback::request(DbKind::Verify, receiving, originating, Some(stream_id), key);
            self.state = OutState::AwaitDbVerify;
            return vec![OutAction::Send(req)];
        }
        let external = self.tls
            && self.can_external
            && self.policy.sasl != Negotiate::NotSupported
            && offered.external
            && !self.sasl_failed;
        if external {
            // XEP-0178 §3: the authzid is the Sender Domain.
            self.state = OutState::AwaitSasl;
            return vec![OutAction::Send(format!(
                "<auth xmlns='{NS_SASL}' mechanism='EXTERNAL'>{}</auth>",
                B64.encode(self.local.as_bytes())
            ))];
        }
        let refused_or = |r: FailReason, failed: bool| {
            if failed {
                FailReason::SaslExternalRefused
            } else {
                r
            }
        };
        if self.policy.sasl == Negotiate::Required {
            if self.sasl_failed {
                return self.fail(FailReason::SaslExternalRefused, None);
            }
            return self.fail(
                FailReason::SaslRequiredButNotOffered,
                Some(StreamError::with_text(
                    StreamCondition::PolicyViolation,
                    "SASL EXTERNAL is required for this domain",
                )),
            );
        }
        if !self.policy.dialback {
            let r = refused_or(FailReason::NoUsableAuthMethod, self.sasl_failed);
            return self.fail(r, None);
        }
        if !offered.dialback {
            let r = refused_or(FailReason::DialbackNotOffered, self.sasl_failed);
            return self.fail(r, None);
        }
        let Some(id) = self.stream_id.clone() else {
            return self.fail(
                FailReason::Protocol(
                    "the peer's stream header has no id, needed for dialback".into(),
                ),
                None,
            );
        };
        let key = dialback::dialback_key(&self.secret, &self.remote, &self.local, &id);
        self.state = OutState::AwaitDbResult;
        vec![OutAction::Send(dialback::request(
            DbKind::Result,
            &self.local,
            &self.remote,
            None,
            &key,
        ))]
    }

    fn on_dialback(&mut self, db: DbElement) -> Vec<OutAction> {
        let from = db.from.as_deref().and_then(domain);
        let to = db.to.as_deref().and_then(domain);
        let expected = match (&self.mode, self.state, db.kind) {
            (OutMode::Authenticate, OutState::AwaitDbResult, DbKind::Result) => {
                from.as_deref() == Some(self.remote.as_str())
                    && to.as_deref() == Some(self.local.as_str())
            }
            (
                OutMode::Verify {
                    receiving,
                    originating,
                    stream_id,
                    ..
                },
                OutState::AwaitDbVerify,
                DbKind::Verify,
            ) => {
                from.as_ref() == Some(originating)
                    && to.as_ref() == Some(receiving)
                    && db.id.as_ref() == Some(stream_id)
            }
            _ => false,
        };
        // XEP-0220 §2.1: an answer must correlate to our request on this
        // stream; anything else is dropped.
        if !expected {
            return Vec::new();
        }
        match (db.kind, db.ty) {
            (_, DbType::Request) => Vec::new(),
            (DbKind::Result, DbType::Valid) => {
                self.state = OutState::Ready;
                let method = if self.tls {
                    AuthMethod::DialbackTls
                } else {
                    AuthMethod::DialbackPlain
                };
                vec![OutAction::Ready(method)]
            }
            (DbKind::Result, DbType::Invalid) => self.fail(FailReason::DialbackRefused, None),
            (DbKind::Verify, ty @ (DbType::Valid | DbType::Invalid)) => {
                self.state = OutState::Done;
                vec![OutAction::Verified(ty == DbType::Valid)]
            }
            (_, DbType::Error(c)) => self.fail(FailReason::DialbackError(c), None),
        }
    }
}

// ---------------------------------------------------------------------------
// Inbound
// ---------------------------------------------------------------------------

/// What the inbound machine needs from configuration.
pub trait InboundContext {
    fn is_local(&self, domain: &str) -> bool;
    /// `None` = this remote domain is refused.
    fn policy(&self, remote: &str) -> Option<PeerPolicy>;
    fn dialback_secret(&self) -> &[u8];
}

#[derive(Debug)]
pub enum InInput<'a> {
    StreamOpen(&'a StreamHeader),
    Element(&'a Stanza),
    TlsEstablished {
        peer: Option<Arc<dyn PeerIdentity>>,
    },
    /// The Authoritative Server's answer to a [`InAction::VerifyDialback`].
    DialbackChecked {
        originating: String,
        receiving: String,
        valid: bool,
    },
    /// The Authoritative Server could not be asked (not found, refused,
    /// timed out, closed): a non-fatal dialback error goes back to the
    /// peer (XEP-0220 §2.4: `remote-server-not-found`,
    /// `remote-connection-failed` or `remote-server-timeout`).
    DialbackFailed {
        originating: String,
        receiving: String,
        condition: StanzaCondition,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InAction {
    Send(String),
    /// `<proceed/>` is queued: flush it, check nothing more was received,
    /// run the TLS server handshake, then feed `TlsEstablished`.
    StartTls,
    /// SASL succeeded: reset the framer and expect a new header.
    RestartStream,
    /// Ask the authoritative server of `originating` (a new outbound
    /// connection in [`OutMode::Verify`]) whether `key` is right, then
    /// feed `DialbackChecked` or `DialbackFailed`.
    VerifyDialback {
        originating: String,
        receiving: String,
        stream_id: String,
        key: String,
    },
    /// `remote` may now send stanzas to `local` on this stream.
    Authenticated {
        remote: String,
        local: String,
        method: AuthMethod,
    },
    /// Send this stream error and close.
    Fail(StreamError),
    /// The peer sent this stream error: close without answering it.
    PeerStreamError(StreamError),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum InState {
    ExpectHeader,
    Open,
    AwaitTls,
    Closed,
}

pub struct InboundNegotiation {
    base_id: String,
    stream_id: String,
    headers: u32,
    tls_available: bool,
    tls: bool,
    peer_cert: Option<Arc<dyn PeerIdentity>>,
    state: InState,
    /// The header's `from`, normalised (optional for s2s).
    peer: Option<String>,
    /// The header's `to`, normalised: the local domain of this stream.
    local: Option<String>,
    prefixes: Vec<(String, String)>,
    sasl_done: bool,
    sasl_failures: u32,
    authenticated: Vec<(String, String)>,
    /// (originating, receiving) pairs sent out for verification.
    pending: Vec<(String, String)>,
}

impl InboundNegotiation {
    /// `stream_id` must be unique and unpredictable; restarted streams get
    /// `{stream_id}.{n}` (RFC 6120 §4.7.3 wants a fresh id per header).
    pub fn new(stream_id: String, tls_available: bool) -> Self {
        InboundNegotiation {
            stream_id: stream_id.clone(),
            base_id: stream_id,
            headers: 0,
            tls_available,
            tls: false,
            peer_cert: None,
            state: InState::ExpectHeader,
            peer: None,
            local: None,
            prefixes: Vec::new(),
            sasl_done: false,
            sasl_failures: 0,
            authenticated: Vec::new(),
            pending: Vec::new(),
        }
    }

    /// Domains authenticated on this stream (several allowed: dialback
    /// multiplexing, XEP-0220 §2.4) and the local domain each was
    /// authenticated towards, as `(remote, local)`.
    pub fn authenticated(&self) -> &[(String, String)] {
        &self.authenticated
    }

    pub fn is_authenticated_for(&self, remote: &str, local: &str) -> bool {
        self.authenticated
            .iter()
            .any(|(r, l)| r == remote && l == local)
    }

    pub fn is_tls(&self) -> bool {
        self.tls
    }

    /// The id of our latest stream header.
    pub fn stream_id(&self) -> &str {
        &self.stream_id
    }

    /// The peer's header `from`, normalised.
    pub fn peer_domain(&self) -> Option<&str> {
        self.peer.as_deref()
    }

    /// For an authenticated stream: `from` must be present and its domain
    /// authenticated on this stream (`invalid-from`), `to` present with a
    /// domain that domain was authenticated towards (`host-unknown`), and
    /// both must be JIDs (`improper-addressing`, also for a missing
    /// attribute, RFC 6120 §8.1.1.2 / §8.1.2.2).
    pub fn check_addressing(&self, stanza: &Stanza) -> Result<(), StreamCondition> {
        let (Some(from), Some(to)) = (stanza.from(), stanza.to()) else {
            return Err(StreamCondition::ImproperAddressing);
        };
        let from = Jid::parse(&from).map_err(|_| StreamCondition::ImproperAddressing)?;
        let to = Jid::parse(&to).map_err(|_| StreamCondition::ImproperAddressing)?;
        if !self.authenticated.iter().any(|(r, _)| r == from.domain()) {
            return Err(StreamCondition::InvalidFrom);
        }
        if !self.is_authenticated_for(from.domain(), to.domain()) {
            return Err(StreamCondition::HostUnknown);
        }
        Ok(())
    }

    pub fn handle<C: InboundContext + ?Sized>(
        &mut self,
        input: InInput<'_>,
        ctx: &C,
    ) -> Vec<InAction> {
        if self.state == InState::Closed {
            return Vec::new();
        }
        match input {
            InInput::StreamOpen(h) => self.on_header(h, ctx),
            InInput::Element(s) => self.on_element(s, ctx),
            InInput::TlsEstablished { peer }
                if self.state == InState::ExpectHeader && self.headers == 0 && !self.tls =>
            {
                // Direct TLS (XEP-0368): the handshake ran before the stream.
                self.tls = true;
                self.peer_cert = peer;
                Vec::new()
            }
            InInput::TlsEstablished { peer } => {
                if self.state != InState::AwaitTls {
                    return self.fail(
                        StreamCondition::InternalServerError,
                        "TLS established without STARTTLS",
                    );
                }
                self.tls = true;
                self.peer_cert = peer;
                self.state = InState::ExpectHeader;
                Vec::new()
            }
            InInput::DialbackChecked {
                originating,
                receiving,
                valid,
            } => self.on_checked(originating, receiving, valid),
            InInput::DialbackFailed {
                originating,
                receiving,
                condition,
            } => {
                if !self.take_pending(&originating, &receiving) {
                    return Vec::new();
                }
                vec![InAction::Send(dialback::error(
                    DbKind::Result,
                    &receiving,
                    &originating,
                    None,
                    condition,
                ))]
            }
        }
    }

    fn fail(&mut self, cond: StreamCondition, text: &str) -> Vec<InAction> {
        self.state = InState::Closed;
        vec![InAction::Fail(StreamError::with_text(cond, text))]
    }

    /// The policy the stream header's `from` selects; the open-federation
    /// default when the peer did not say who it is.
    fn header_policy<C: InboundContext + ?Sized>(&self, ctx: &C) -> PeerPolicy {
        self.peer
            .as_deref()
            .and_then(|p| ctx.policy(p))
            .unwrap_or_else(PeerPolicy::open_federation)
    }

    fn on_header<C: InboundContext + ?Sized>(
        &mut self,
        h: &StreamHeader,
        ctx: &C,
    ) -> Vec<InAction> {
        if self.state != InState::ExpectHeader {
            return self.fail(StreamCondition::BadFormat, "unexpected stream header");
        }
        if self.headers > 0 {
            self.stream_id = format!("{}.{}", self.base_id, self.headers);
        }
        self.headers += 1;
        let restart = self.local.is_some();
        // RFC 6120 §4.9.1.2: errors at this point still get a header first.
        let Some(to) = h.to.as_deref().and_then(domain).filter(|t| ctx.is_local(t)) else {
            let mut out = vec![InAction::Send(stream_header(
                Some(&self.stream_id),
                None,
                None,
            ))];
            out.extend(self.fail(
                StreamCondition::HostUnknown,
                "this server does not serve that domain",
            ));
            return out;
        };
        let header = |s: &Self, from: Option<&str>| {
            InAction::Send(stream_header(Some(&s.stream_id), Some(&to), from))
        };
        let from = match h.from.as_deref() {
            None => None,
            Some(f) => match domain(f) {
                Some(d) => Some(d),
                None => {
                    let mut out = vec![header(self, None)];
                    out.extend(self.fail(StreamCondition::InvalidFrom, "'from' is not a domain"));
                    return out;
                }
            },
        };
        let mut out = vec![header(self, from.as_deref())];
        if restart && (self.local.as_deref() != Some(&to) || self.peer != from) {
            out.extend(self.fail(
                StreamCondition::InvalidFrom,
                "'to' or 'from' changed on stream restart",
            ));
            return out;
        }
        if let Some(f) = &from
            && ctx.policy(f).is_none()
        {
            out.extend(self.fail(
                StreamCondition::PolicyViolation,
                &format!("federation with {f} is not allowed"),
            ));
            return out;
        }
        if !is_v1(h) {
            out.extend(self.fail(StreamCondition::UnsupportedVersion, "XMPP 1.0 is required"));
            return out;
        }
        self.local = Some(to);
        self.peer = from;
        self.prefixes.clone_from(&h.prefixes);
        self.state = InState::Open;
        out.push(InAction::Send(self.features(ctx)));
        out
    }

    fn features<C: InboundContext + ?Sized>(&self, ctx: &C) -> String {
        if self.sasl_done {
            return "<stream:features/>".into();
        }
        let policy = self.header_policy(ctx);
        let mut f = String::from("<stream:features>");
        if !self.tls && self.tls_available && policy.tls != Negotiate::NotSupported {
            f.push_str(&format!("<starttls xmlns='{NS_TLS}'>"));
            if policy.tls == Negotiate::Required {
                f.push_str("<required/>");
            }
            f.push_str("</starttls>");
        }
        // XEP-0178 and ejabberd #2030: offer EXTERNAL only once the
        // certificate is known to be good, so a bad one falls to dialback.
        if self.tls && policy.sasl != Negotiate::NotSupported && self.cert_valid_for_peer() {
            f.push_str(&format!(
                "<mechanisms xmlns='{NS_SASL}'><mechanism>EXTERNAL</mechanism></mechanisms>"
            ));
        }
        if dialback_allowed(&policy) && (self.tls || policy.tls != Negotiate::Required) {
            f.push_str(&format!(
                "<dialback xmlns='{NS_DIALBACK_FEATURE}'><errors/></dialback>"
            ));
        }
        f.push_str("</stream:features>");
        f
    }

    fn cert_valid_for_peer(&self) -> bool {
        match (&self.peer_cert, &self.peer) {
            (Some(c), Some(p)) => c.is_valid_for(p),
            _ => false,
        }
    }

    fn on_element<C: InboundContext + ?Sized>(&mut self, s: &Stanza, ctx: &C) -> Vec<InAction> {
        match self.state {
            InState::Open => {}
            InState::AwaitTls => {
                return self.fail(StreamCondition::PolicyViolation, "data after STARTTLS");
            }
            _ => {
                return self.fail(
                    StreamCondition::NotWellFormed,
                    "element before the stream header",
                );
            }
        }
        let is_stanza = matches!(
            s.kind(),
            StanzaKind::Message | StanzaKind::Presence | StanzaKind::Iq
        );
        if is_stanza {
            if self.authenticated.is_empty() {
                // RFC 6120 §8.1.1: no stanzas before authentication.
                return self.fail(StreamCondition::NotAuthorized, "authenticate first");
            }
            return Vec::new();
        }
        let el = match parse_element(s, &self.prefixes) {
            Ok(el) => el,
            Err(_) => return self.fail(StreamCondition::NotWellFormed, "cannot parse element"),
        };
        if el.is("error", NS_STREAMS) {
            self.state = InState::Closed;
            return vec![InAction::PeerStreamError(parse_stream_error(&el))];
        }
        if el.is("starttls", NS_TLS) {
            return self.on_starttls(ctx);
        }
        if el.ns == NS_SASL {
            return self.on_sasl(&el, ctx);
        }
        if let Some(db) = DbElement::from_element(&el) {
            return match (db.kind, &db.ty) {
                (DbKind::Result, DbType::Request) => self.on_db_result(db, ctx),
                (DbKind::Verify, DbType::Request) => self.on_db_verify(db, ctx),
                // XEP-0220 §2.2 and §4.1: answers never arrive on an inbound
                // stream (no XEP-0288 here); acting on one would let a peer
                // authenticate itself. Dropped.
                _ => Vec::new(),
            };
        }
        if !self.authenticated.is_empty() {
            // The actor's business (stream management, pings, ...).
            return Vec::new();
        }
        self.fail(
            StreamCondition::UnsupportedStanzaType,
            "unexpected element during negotiation",
        )
    }

    fn on_starttls<C: InboundContext + ?Sized>(&mut self, ctx: &C) -> Vec<InAction> {
        let allowed = !self.tls
            && self.tls_available
            && !self.sasl_done
            && self.authenticated.is_empty()
            && self.header_policy(ctx).tls != Negotiate::NotSupported;
        if !allowed {
            self.state = InState::Closed;
            return vec![
                InAction::Send(format!("<failure xmlns='{NS_TLS}'/>")),
                InAction::Fail(StreamError::with_text(
                    StreamCondition::PolicyViolation,
                    "STARTTLS not allowed now",
                )),
            ];
        }
        self.state = InState::AwaitTls;
        vec![
            InAction::Send(format!("<proceed xmlns='{NS_TLS}'/>")),
            InAction::StartTls,
        ]
    }

    fn sasl_failure(&mut self, condition: &str) -> Vec<InAction> {
        self.sasl_failures += 1;
        let mut out = vec![InAction::Send(format!(
            "<failure xmlns='{NS_SASL}'><{condition}/></failure>"
        ))];
        if self.sasl_failures >= MAX_SASL_FAILURES {
            out.extend(self.fail(
                StreamCondition::PolicyViolation,
                "too many failed authentication attempts",
            ));
        }
        out
    }

    fn on_sasl<C: InboundContext + ?Sized>(&mut self, el: &Element, ctx: &C) -> Vec<InAction> {
        if self.sasl_done || !self.authenticated.is_empty() {
            return self.fail(StreamCondition::PolicyViolation, "already authenticated");
        }
        match el.name.as_str() {
            "auth" => {}
            "abort" => return self.sasl_failure("aborted"),
            _ => return self.sasl_failure("malformed-request"),
        }
        if !self.tls {
            return self.sasl_failure("encryption-required");
        }
        if el.attr("mechanism") != Some("EXTERNAL") {
            return self.sasl_failure("invalid-mechanism");
        }
        let (Some(peer), Some(local)) = (self.peer.clone(), self.local.clone()) else {
            // Without a header `from` there is no identity to check.
            return self.sasl_failure("not-authorized");
        };
        if ctx.policy(&peer).map(|p| p.sasl) == Some(Negotiate::NotSupported) {
            return self.sasl_failure("invalid-mechanism");
        }
        // XEP-0178 §3: the authzid is the Sender Domain; empty or "=" means
        // "the one from the header".
        let text = el.text();
        let text = text.trim();
        if !(text.is_empty() || text == "=") {
            let Ok(raw) = B64.decode(text) else {
                return self.sasl_failure("incorrect-encoding");
            };
            let authzid = std::str::from_utf8(&raw).ok().and_then(domain);
            if authzid.as_deref() != Some(peer.as_str()) {
                return self.sasl_failure("invalid-authzid");
            }
        }
        if !self.cert_valid_for_peer() {
            return self.sasl_failure("not-authorized");
        }
        self.sasl_done = true;
        self.state = InState::ExpectHeader;
        self.authenticated.push((peer.clone(), local.clone()));
        vec![
            InAction::Send(format!("<success xmlns='{NS_SASL}'/>")),
            InAction::Authenticated {
                remote: peer,
                local,
                method: AuthMethod::SaslExternal,
            },
            InAction::RestartStream,
        ]
    }

    fn take_pending(&mut self, originating: &str, receiving: &str) -> bool {
        match self
            .pending
            .iter()
            .position(|(o, r)| o == originating && r == receiving)
        {
            Some(i) => {
                self.pending.swap_remove(i);
                true
            }
            None => false,
        }
    }

    fn on_db_result<C: InboundContext + ?Sized>(
        &mut self,
        db: DbElement,
        ctx: &C,
    ) -> Vec<InAction> {
        let (Some(from_raw), Some(to_raw)) = (db.from.as_deref(), db.to.as_deref()) else {
            return self.fail(
                StreamCondition::ImproperAddressing,
                "db:result needs 'from' and 'to'",
            );
        };
        let Some(originating) = domain(from_raw) else {
            return self.fail(
                StreamCondition::InvalidFrom,
                "db:result 'from' is not a domain",
            );
        };
        // XEP-0220 §2.2.1 and §2.4: problems with one domain pair are
        // dialback errors, not stream errors — the stream may carry others.
        let db_error = |cond| {
            vec![InAction::Send(dialback::error(
                DbKind::Result,
                to_raw,
                from_raw,
                None,
                cond,
            ))]
        };
        let Some(receiving) = domain(to_raw).filter(|d| ctx.is_local(d)) else {
            return db_error(StanzaCondition::ItemNotFound);
        };
        if self.is_authenticated_for(&originating, &receiving) {
            return vec![InAction::Send(dialback::answer(
                DbKind::Result,
                &receiving,
                &originating,
                None,
                true,
            ))];
        }
        if self
            .pending
            .contains(&(originating.clone(), receiving.clone()))
        {
            return Vec::new();
        }
        let Some(policy) = ctx.policy(&originating) else {
            return db_error(StanzaCondition::PolicyViolation);
        };
        if !dialback_allowed(&policy) {
            // The table's row for "a certificate (or other proof) is required".
            return db_error(StanzaCondition::NotAuthorized);
        }
        if policy.tls == Negotiate::Required && !self.tls {
            return db_error(StanzaCondition::PolicyViolation);
        }
        if db.key.is_empty() || db.key.len() > MAX_KEY_LEN {
            return self.invalid(originating, receiving);
        }
        self.pending.push((originating.clone(), receiving.clone()));
        vec![InAction::VerifyDialback {
            originating,
            receiving,
            stream_id: self.stream_id.clone(),
            key: db.key,
        }]
    }

    fn on_checked(&mut self, originating: String, receiving: String, valid: bool) -> Vec<InAction> {
        // XEP-0220 §4.1: a result we did not ask for is dropped.
        if !self.take_pending(&originating, &receiving) {
            return Vec::new();
        }
        if !valid {
            return self.invalid(originating, receiving);
        }
        let method = if self.tls {
            AuthMethod::DialbackTls
        } else {
            AuthMethod::DialbackPlain
        };
        self.authenticated
            .push((originating.clone(), receiving.clone()));
        vec![
            InAction::Send(dialback::answer(
                DbKind::Result,
                &receiving,
                &originating,
                None,
                true,
            )),
            InAction::Authenticated {
                remote: originating,
                local: receiving,
                method,
            },
        ]
    }

    /// XEP-0220 §2.2.1: type='invalid' means the peer tried to spoof the
    /// Sender Domain; the stream MUST be closed.
    fn invalid(&mut self, originating: String, receiving: String) -> Vec<InAction> {
        let mut out = vec![InAction::Send(dialback::answer(
            DbKind::Result,
            &receiving,
            &originating,
            None,
            false,
        ))];
        out.extend(self.fail(
            StreamCondition::NotAuthorized,
            &format!("the dialback key for {originating} is not valid"),
        ));
        out
    }

    fn on_db_verify<C: InboundContext + ?Sized>(
        &mut self,
        db: DbElement,
        ctx: &C,
    ) -> Vec<InAction> {
        let (Some(from_raw), Some(to_raw)) = (db.from.as_deref(), db.to.as_deref()) else {
            return self.fail(
                StreamCondition::ImproperAddressing,
                "db:verify needs 'from' and 'to'",
            );
        };
        let id = db.id.as_deref().unwrap_or_default();
        // We are asked as the Authoritative Server of `to`.
        let Some(originating) = domain(to_raw).filter(|d| ctx.is_local(d)) else {
            return vec![InAction::Send(dialback::error(
                DbKind::Verify,
                to_raw,
                from_raw,
                Some(id),
                StanzaCondition::ItemNotFound,
            ))];
        };
        let valid = match domain(from_raw) {
            Some(receiving) if !id.is_empty() && !db.key.is_empty() => {
                let expected =
                    dialback::dialback_key(ctx.dialback_secret(), &receiving, &originating, id);
                dialback::keys_equal(&expected, &db.key)
            }
            _ => false,
        };
        // The attributes are echoed as sent, so the asker can correlate.
        vec![InAction::Send(dialback::answer(
            DbKind::Verify,
            to_raw,
            from_raw,
            Some(id),
            valid,
        ))]
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::xml::{Framer, FramerEvent};

    /// The initiating (and originating) domain.
    const A: &str = "a.example";
    /// The receiving domain.
    const B: &str = "b.example";
    const SECRET_A: &[u8] = b"dialback secret of a.example";
    const SECRET_B: &[u8] = b"dialback secret of b.example";

    struct Cert(Vec<&'static str>);

    impl PeerIdentity for Cert {
        fn is_valid_for(&self, domain: &str) -> bool {
            self.0.contains(&domain)
        }
    }

    fn cert(domains: &[&'static str]) -> Option<Arc<dyn PeerIdentity>> {
        Some(Arc::new(Cert(domains.to_vec())))
    }

    /// Valid only the first time it is asked: the receiving side offers
    /// EXTERNAL, then refuses it (a certificate that expired in between).
    struct ValidOnce(AtomicUsize);

    impl PeerIdentity for ValidOnce {
        fn is_valid_for(&self, _: &str) -> bool {
            self.0.fetch_add(1, Ordering::SeqCst) == 0
        }
    }

    fn policy(tls: Negotiate, sasl: Negotiate, dialback: bool) -> PeerPolicy {
        PeerPolicy {
            tls,
            sasl,
            dialback,
        }
    }

    #[derive(Clone)]
    struct Ctx {
        locals: Vec<String>,
        partners: HashMap<String, PeerPolicy>,
        /// The policy for unlisted domains; `None` = closed federation.
        unlisted: Option<PeerPolicy>,
        secret: Vec<u8>,
    }

    impl Ctx {
        fn new(locals: &[&str], secret: &[u8]) -> Ctx {
            Ctx {
                locals: locals.iter().map(|s| s.to_string()).collect(),
                partners: HashMap::new(),
                unlisted: Some(PeerPolicy::open_federation()),
                secret: secret.to_vec(),
            }
        }

        fn partner(mut self, domain: &str, p: PeerPolicy) -> Ctx {
            self.partners.insert(domain.into(), p);
            self
        }

        fn closed(mut self) -> Ctx {
            self.unlisted = None;
            self
        }
    }

    impl InboundContext for Ctx {
        fn is_local(&self, domain: &str) -> bool {
            self.locals.iter().any(|l| l == domain)
        }
        fn policy(&self, remote: &str) -> Option<PeerPolicy> {
            self.partners
                .get(remote)
                .cloned()
                .or_else(|| self.unlisted.clone())
        }
        fn dialback_secret(&self) -> &[u8] {
            &self.secret
        }
    }

    fn framer() -> Framer {
        Framer::new(NS_SERVER, 65536)
    }

    /// An outbound machine driven against an inbound one through two
    /// framers, with TLS simulated and db:verify answered by a real third
    /// machine pair (a Verify-mode outbound against the Authoritative
    /// Server's inbound).
    struct Pair {
        out: OutboundNegotiation,
        inb: InboundNegotiation,
        ctx: Ctx,
        /// Bytes from the inbound side, read by the outbound side.
        to_out: Framer,
        /// Bytes from the outbound side, read by the inbound side.
        to_in: Framer,
        /// The certificate the initiating server presents.
        out_cert: Option<Arc<dyn PeerIdentity>>,
        /// The certificate the receiving server presents.
        in_cert: Option<Arc<dyn PeerIdentity>>,
        out_tls: bool,
        in_tls: bool,
        /// The Authoritative Server for the originating domain, if reachable.
        authority: Option<Ctx>,
        /// The receiving side's policy for the originating domain, used by
        /// its verify connections.
        verify_policy: PeerPolicy,
        verifies: Vec<InAction>,
        out_log: Vec<OutAction>,
        in_log: Vec<InAction>,
    }

    impl Pair {
        fn new(out: OutboundNegotiation, ctx: Ctx, tls_available: bool) -> Pair {
            Pair {
                out,
                inb: InboundNegotiation::new("sid-b".into(), tls_available),
                ctx,
                to_out: framer(),
                to_in: framer(),
                out_cert: cert(&[A]),
                in_cert: cert(&[B]),
                out_tls: false,
                in_tls: false,
                authority: Some(Ctx::new(&[A], SECRET_A)),
                verify_policy: PeerPolicy::open_federation(),
                verifies: Vec::new(),
                out_log: Vec::new(),
                in_log: Vec::new(),
            }
        }

        /// The usual case: a.example → b.example with `p` on our side.
        fn authenticate(p: PeerPolicy, can_external: bool, ctx: Ctx) -> Pair {
            Pair::new(
                OutboundNegotiation::new(
                    A.into(),
                    B.into(),
                    p,
                    Arc::from(SECRET_A),
                    can_external,
                    OutMode::Authenticate,
                ),
                ctx,
                true,
            )
        }

        fn run(mut self) -> Pair {
            let a = self.out.start();
            self.apply_out(a);
            self.pump();
            self
        }

        fn apply_out(&mut self, actions: Vec<OutAction>) {
            for a in &actions {
                match a {
                    OutAction::Send(s) => self.to_in.feed(s.as_bytes()),
                    OutAction::StartTls => self.out_tls = true,
                    OutAction::RestartStream => self.to_out.reset(),
                    OutAction::Fail(f) => {
                        if let Some(e) = &f.send {
                            self.to_in.feed(e.to_xml().as_bytes());
                        }
                        self.to_in.feed(b"</stream:stream>");
                    }
                    OutAction::Ready(_) | OutAction::Verified(_) => {}
                }
            }
            self.out_log.extend(actions);
        }

        fn apply_in(&mut self, actions: Vec<InAction>) {
            for a in &actions {
                match a {
                    InAction::Send(s) => self.to_out.feed(s.as_bytes()),
                    InAction::StartTls => self.in_tls = true,
                    InAction::RestartStream => self.to_in.reset(),
                    InAction::Fail(e) => {
                        self.to_out.feed(e.to_xml().as_bytes());
                        self.to_out.feed(b"</stream:stream>");
                    }
                    InAction::PeerStreamError(_) => self.to_out.feed(b"</stream:stream>"),
                    InAction::VerifyDialback { .. } => self.verifies.push(a.clone()),
                    InAction::Authenticated { .. } => {}
                }
            }
            self.in_log.extend(actions);
        }

        fn pump(&mut self) {
            for _ in 0..64 {
                let mut moved = false;
                while let Ok(Some(ev)) = self.to_in.next() {
                    moved = true;
                    let a = match &ev {
                        FramerEvent::StreamOpen(h) => {
                            self.inb.handle(InInput::StreamOpen(h), &self.ctx)
                        }
                        FramerEvent::Stanza(s) => self.inb.handle(InInput::Element(s), &self.ctx),
                        FramerEvent::StreamClose => Vec::new(),
                    };
                    self.apply_in(a);
                }
                while let Ok(Some(ev)) = self.to_out.next() {
                    moved = true;
                    let a = match &ev {
                        FramerEvent::StreamOpen(h) => self.out.handle(OutInput::StreamOpen(h)),
                        FramerEvent::Stanza(s) => self.out.handle(OutInput::Element(s)),
                        FramerEvent::StreamClose => self.out.handle(OutInput::StreamClosed),
                    };
                    self.apply_out(a);
                }
                if self.out_tls && self.in_tls {
                    moved = true;
                    (self.out_tls, self.in_tls) = (false, false);
                    assert_eq!(
                        (self.to_in.buffered(), self.to_out.buffered()),
                        (0, 0),
                        "nothing may be buffered when TLS starts"
                    );
                    (self.to_in, self.to_out) = (framer(), framer());
                    let peer = self.out_cert.clone();
                    let a = self.inb.handle(InInput::TlsEstablished { peer }, &self.ctx);
                    self.apply_in(a);
                    let peer = self.in_cert.clone();
                    let a = self.out.handle(OutInput::TlsEstablished { peer });
                    self.apply_out(a);
                }
                for v in std::mem::take(&mut self.verifies) {
                    moved = true;
                    let InAction::VerifyDialback {
                        originating,
                        receiving,
                        stream_id,
                        key,
                    } = v
                    else {
                        continue;
                    };
                    let answer = self.authority.clone().and_then(|auth| {
                        let p = self.verify_policy.clone();
                        ask_authority(auth, p, &receiving, &originating, &stream_id, &key)
                    });
                    let input = match answer {
                        Some(valid) => InInput::DialbackChecked {
                            originating,
                            receiving,
                            valid,
                        },
                        None => InInput::DialbackFailed {
                            originating,
                            receiving,
                            condition: StanzaCondition::RemoteServerNotFound,
                        },
                    };
                    let a = self.inb.handle(input, &self.ctx);
                    self.apply_in(a);
                }
                if !moved {
                    return;
                }
            }
            panic!("negotiation did not settle");
        }

        fn ready(&self) -> Option<AuthMethod> {
            self.out_log.iter().find_map(|a| match a {
                OutAction::Ready(m) => Some(*m),
                _ => None,
            })
        }

        fn out_failure(&self) -> Option<&S2sFailure> {
            self.out_log.iter().find_map(|a| match a {
                OutAction::Fail(f) => Some(f),
                _ => None,
            })
        }

        fn inbound_auth(&self) -> Vec<(String, String, AuthMethod)> {
            auths(&self.in_log)
        }

        fn in_failure(&self) -> Option<StreamCondition> {
            in_failure(&self.in_log)
        }

        fn sent_by_inbound(&self) -> String {
            in_sent(&self.in_log)
        }
    }

    /// Runs a Verify-mode outbound from `receiving` against the
    /// Authoritative Server (`auth`) of `originating`.
    fn ask_authority(
        auth: Ctx,
        policy: PeerPolicy,
        receiving: &str,
        originating: &str,
        stream_id: &str,
        key: &str,
    ) -> Option<bool> {
        let out = OutboundNegotiation::new(
            receiving.into(),
            originating.into(),
            policy,
            Arc::from(SECRET_B),
            false,
            OutMode::Verify {
                receiving: receiving.into(),
                originating: originating.into(),
                stream_id: stream_id.into(),
                key: key.into(),
            },
        );
        let mut p = Pair::new(out, auth, true);
        p.authority = None;
        let p = p.run();
        assert!(
            p.inbound_auth().is_empty(),
            "a verify connection authenticates nothing"
        );
        p.out_log.iter().find_map(|a| match a {
            OutAction::Verified(v) => Some(*v),
            _ => None,
        })
    }

    fn auths(log: &[InAction]) -> Vec<(String, String, AuthMethod)> {
        log.iter()
            .filter_map(|a| match a {
                InAction::Authenticated {
                    remote,
                    local,
                    method,
                } => Some((remote.clone(), local.clone(), *method)),
                _ => None,
            })
            .collect()
    }

    fn in_failure(log: &[InAction]) -> Option<StreamCondition> {
        log.iter().find_map(|a| match a {
            InAction::Fail(e) => Some(e.condition),
            _ => None,
        })
    }

    fn in_sent(log: &[InAction]) -> String {
        log.iter()
            .filter_map(|a| match a {
                InAction::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    fn out_sent(log: &[OutAction]) -> String {
        log.iter()
            .filter_map(|a| match a {
                OutAction::Send(s) => Some(s.as_str()),
                _ => None,
            })
            .collect()
    }

    // -- outbound against inbound ------------------------------------------

    #[test]
    fn starttls_then_sasl_external_authenticates_both_sides() {
        let p = Pair::authenticate(
            PeerPolicy::open_federation(),
            true,
            Ctx::new(&[B], SECRET_B),
        )
        .run();
        assert_eq!(p.ready(), Some(AuthMethod::SaslExternal), "{:?}", p.out_log);
        assert_eq!(
            p.inbound_auth(),
            vec![(A.into(), B.into(), AuthMethod::SaslExternal)]
        );
        assert!(p.out.is_tls() && p.inb.is_tls());
        assert!(p.out.remote_certificate_valid());
        assert!(p.inb.is_authenticated_for(A, B));
        assert!(!p.sent_by_inbound().contains("db:result"));
    }

    #[test]
    fn starttls_then_dialback_when_we_hold_no_certificate_asks_the_authoritative_server() {
        let p = Pair::authenticate(
            PeerPolicy::open_federation(),
            false,
            Ctx::new(&[B], SECRET_B),
        )
        .run();
        assert_eq!(p.ready(), Some(AuthMethod::DialbackTls), "{:?}", p.out_log);
        assert_eq!(
            p.inbound_auth(),
            vec![(A.into(), B.into(), AuthMethod::DialbackTls)]
        );
        assert!(
            p.sent_by_inbound()
                .contains("<db:result from='b.example' to='a.example' type='valid'/>")
        );
    }

    #[test]
    fn a_peer_certificate_not_valid_for_its_domain_gets_no_external_offer_and_uses_dialback() {
        let mut p = Pair::authenticate(
            PeerPolicy::open_federation(),
            true,
            Ctx::new(&[B], SECRET_B),
        );
        p.out_cert = cert(&["someone-else.example"]);
        let p = p.run();
        assert!(!p.sent_by_inbound().contains("EXTERNAL"));
        assert_eq!(p.ready(), Some(AuthMethod::DialbackTls));
    }

    #[test]
    fn plain_dialback_works_when_both_sides_refuse_tls() {
        let gtalk = policy(Negotiate::NotSupported, Negotiate::NotSupported, true);
        let ctx = Ctx::new(&[B], SECRET_B).partner(A, gtalk.clone());
        let mut p = Pair::authenticate(gtalk.clone(), true, ctx);
        // The Authoritative Server also treats b.example as a plain
        // partner, and b.example's verify connection follows its policy.
        p.authority = Some(Ctx::new(&[A], SECRET_A).partner(B, gtalk.clone()));
        p.verify_policy = gtalk;
        let p = p.run();
        assert!(!p.sent_by_inbound().contains("starttls"));
        assert_eq!(
            p.ready(),
            Some(AuthMethod::DialbackPlain),
            "{:?}",
            p.out_log
        );
        assert_eq!(
            p.inbound_auth(),
            vec![(A.into(), B.into(), AuthMethod::DialbackPlain)]
        );
        assert!(!p.out.is_tls() && !p.inb.is_tls());
    }

    #[test]
    fn a_refused_external_falls_back_to_dialback_over_tls() {
        let mut p = Pair::authenticate(
            PeerPolicy::open_federation(),
            true,
            Ctx::new(&[B], SECRET_B),
        );
        p.out_cert = Some(Arc::new(ValidOnce(AtomicUsize::new(0))));
        let p = p.run();
        assert!(p.sent_by_inbound().contains(
            "<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>"
        ));
        assert_eq!(p.ready(), Some(AuthMethod::DialbackTls), "{:?}", p.out_log);
        assert_eq!(
            p.inbound_auth(),
            vec![(A.into(), B.into(), AuthMethod::DialbackTls)]
        );
    }

    #[test]
    fn a_refused_external_with_sasl_required_fails_without_dialback() {
        let mut p = Pair::authenticate(
            policy(Negotiate::Required, Negotiate::Required, true),
            true,
            Ctx::new(&[B], SECRET_B),
        );
        p.out_cert = Some(Arc::new(ValidOnce(AtomicUsize::new(0))));
        let p = p.run();
        let f = p.out_failure().expect("fails");
        assert_eq!(f.reason, FailReason::SaslExternalRefused);
        assert!(!p.sent_by_inbound().contains("db:result"));
        assert!(p.inbound_auth().is_empty());
    }

    #[test]
    fn required_tls_that_is_not_offered_fails_with_a_policy_violation() {
        let mut p = Pair::authenticate(
            PeerPolicy::open_federation(),
            true,
            Ctx::new(&[B], SECRET_B),
        );
        p.inb = InboundNegotiation::new("sid-b".into(), false);
        let p = p.run();
        let f = p.out_failure().expect("fails");
        assert_eq!(f.reason, FailReason::TlsRequiredButNotOffered);
        assert_eq!(
            f.send.as_ref().map(|e| e.condition),
            Some(StreamCondition::PolicyViolation)
        );
        assert!(f.timeout_class);
        assert_eq!(f.bounce(), StanzaCondition::RemoteServerTimeout);
        assert!(f.to_string().contains("TLS is required"));
        assert!(p.in_log.iter().any(|a| matches!(
            a,
            InAction::PeerStreamError(e) if e.condition == StreamCondition::PolicyViolation
        )));
        assert!(p.inbound_auth().is_empty());
    }

    #[test]
    fn required_sasl_with_a_peer_certificate_that_does_not_verify_fails() {
        let mut p = Pair::authenticate(
            policy(Negotiate::Required, Negotiate::Required, false),
            true,
            Ctx::new(&[B], SECRET_B),
        );
        p.out_cert = cert(&[]);
        let p = p.run();
        let f = p.out_failure().expect("fails");
        assert_eq!(f.reason, FailReason::SaslRequiredButNotOffered);
        assert_eq!(
            f.send.as_ref().map(|e| e.condition),
            Some(StreamCondition::PolicyViolation)
        );
        assert!(p.inbound_auth().is_empty());
    }

    #[test]
    fn a_wrong_dialback_key_is_answered_invalid_and_never_authenticates() {
        let mut p = Pair::new(
            OutboundNegotiation::new(
                A.into(),
                B.into(),
                PeerPolicy::open_federation(),
                Arc::from(&b"a guessed secret"[..]),
                false,
                OutMode::Authenticate,
            ),
            Ctx::new(&[B], SECRET_B),
            true,
        );
        p = p.run();
        assert!(
            p.sent_by_inbound()
                .contains("<db:result from='b.example' to='a.example' type='invalid'/>")
        );
        assert_eq!(p.in_failure(), Some(StreamCondition::NotAuthorized));
        assert!(p.inbound_auth().is_empty());
        assert!(p.inb.authenticated().is_empty());
        let f = p.out_failure().expect("fails");
        assert_eq!(f.reason, FailReason::DialbackRefused);
        assert_eq!(f.bounce(), StanzaCondition::InternalServerError);
        assert_eq!(p.ready(), None);
    }

    #[test]
    fn an_unreachable_authoritative_server_is_a_non_fatal_dialback_error() {
        let mut p = Pair::authenticate(
            PeerPolicy::open_federation(),
            false,
            Ctx::new(&[B], SECRET_B),
        );
        p.authority = None;
        let p = p.run();
        assert!(p.sent_by_inbound().contains(
            "type='error'><error type='cancel'><remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>"
        ));
        assert_eq!(p.in_failure(), None, "a dialback error keeps the stream");
        let f = p.out_failure().expect("fails");
        assert_eq!(
            f.reason,
            FailReason::DialbackError("remote-server-not-found".into())
        );
        assert_eq!(f.bounce(), StanzaCondition::RemoteServerTimeout);
    }

    #[test]
    fn verify_mode_asks_the_authoritative_server_end_to_end() {
        let good = dialback::dialback_key(SECRET_A, B, A, "sid-b");
        let auth = Ctx::new(&[A], SECRET_A);
        let open = PeerPolicy::open_federation;
        assert_eq!(
            ask_authority(auth.clone(), open(), B, A, "sid-b", &good),
            Some(true)
        );
        assert_eq!(
            ask_authority(auth.clone(), open(), B, A, "sid-c", &good),
            Some(false)
        );
        assert_eq!(
            ask_authority(auth, open(), B, A, "sid-b", "00"),
            Some(false)
        );
    }

    #[test]
    fn verify_mode_goes_through_required_starttls_first() {
        let key = dialback::dialback_key(SECRET_A, B, A, "s1");
        let out = OutboundNegotiation::new(
            B.into(),
            A.into(),
            PeerPolicy::open_federation(),
            Arc::from(SECRET_B),
            true,
            OutMode::Verify {
                receiving: B.into(),
                originating: A.into(),
                stream_id: "s1".into(),
                key,
            },
        );
        let mut p = Pair::new(out, Ctx::new(&[A], SECRET_A), true);
        p.out_cert = cert(&[B]);
        let p = p.run();
        assert!(p.out.is_tls(), "the verify stream did STARTTLS");
        assert!(p.out_log.contains(&OutAction::Verified(true)));
        assert!(
            !out_sent(&p.out_log).contains("<auth"),
            "no SASL on a verify stream"
        );
    }

    // -- inbound, fed by hand ----------------------------------------------

    const HEADER_FROM_A: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
         from='a.example' to='b.example' version='1.0'>";

    struct Inb {
        neg: InboundNegotiation,
        ctx: Ctx,
        framer: Framer,
    }

    impl Inb {
        fn new(ctx: Ctx) -> Inb {
            Inb {
                neg: InboundNegotiation::new("sid".into(), true),
                ctx,
                framer: framer(),
            }
        }

        fn feed(&mut self, xml: &str) -> Vec<InAction> {
            self.framer.feed(xml.as_bytes());
            let mut out = Vec::new();
            while let Ok(Some(ev)) = self.framer.next() {
                let a = match &ev {
                    FramerEvent::StreamOpen(h) => {
                        self.neg.handle(InInput::StreamOpen(h), &self.ctx)
                    }
                    FramerEvent::Stanza(s) => self.neg.handle(InInput::Element(s), &self.ctx),
                    FramerEvent::StreamClose => Vec::new(),
                };
                if a.contains(&InAction::RestartStream) {
                    self.framer.reset();
                }
                out.extend(a);
            }
            out
        }

        fn input(&mut self, i: InInput<'_>) -> Vec<InAction> {
            self.neg.handle(i, &self.ctx)
        }

        fn tls(&mut self, peer: Option<Arc<dyn PeerIdentity>>) {
            self.framer = framer();
            assert!(self.input(InInput::TlsEstablished { peer }).is_empty());
        }

        /// Header, STARTTLS, TLS with `peer`, header again.
        fn over_tls(&mut self, peer: Option<Arc<dyn PeerIdentity>>) -> Vec<InAction> {
            self.feed(HEADER_FROM_A);
            let a = self.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
            assert_eq!(a.last(), Some(&InAction::StartTls));
            self.tls(peer);
            self.feed(HEADER_FROM_A)
        }

        /// db:result for `from` → `to`, answered by the "authoritative
        /// server" with `valid`.
        fn dialback(&mut self, from: &str, to: &str, valid: bool) -> Vec<InAction> {
            let a = self.feed(&format!(
                "<db:result from='{from}' to='{to}'>0123abcd</db:result>"
            ));
            let Some(InAction::VerifyDialback {
                originating,
                receiving,
                ..
            }) = a.first().cloned()
            else {
                panic!("expected VerifyDialback, got {a:?}");
            };
            self.input(InInput::DialbackChecked {
                originating,
                receiving,
                valid,
            })
        }
    }

    fn msg(from: &str, to: &str) -> Stanza {
        let mut s = String::from("<message");
        if !from.is_empty() {
            s.push_str(&format!(" from='{from}'"));
        }
        if !to.is_empty() {
            s.push_str(&format!(" to='{to}'"));
        }
        s.push_str("><body>hi</body></message>");
        Stanza::parse(bytes::Bytes::from(s)).unwrap()
    }

    #[test]
    fn features_follow_the_policy_of_the_header_from() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        let s = in_sent(&h.feed(HEADER_FROM_A));
        assert!(s.starts_with("<?xml version='1.0'?><stream:stream xmlns='jabber:server'"));
        assert!(s.contains("xmlns:db='jabber:server:dialback' id='sid' from='b.example' to='a.example' version='1.0'>"));
        assert!(s.contains(
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"
        ), "open federation: TLS required, nothing else before it: {s}");

        let plain = policy(Negotiate::NotSupported, Negotiate::NotSupported, true);
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B).partner(A, plain));
        let s = in_sent(&h.feed(HEADER_FROM_A));
        assert!(!s.contains("starttls"));
        assert!(s.contains("<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>"));

        let optional = policy(Negotiate::Optional, Negotiate::Optional, true);
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B).partner(A, optional));
        let s = in_sent(&h.feed(HEADER_FROM_A));
        assert!(s.contains("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'></starttls>"));
        assert!(s.contains("<dialback"));
        assert!(!s.contains("EXTERNAL"), "no SASL before TLS");
    }

    #[test]
    fn after_tls_external_is_offered_only_for_a_certificate_valid_for_the_peer() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        let s = in_sent(&h.over_tls(cert(&[A])));
        assert!(s.contains(
            "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>"
        ));
        assert!(s.contains("<dialback"));
        assert!(!s.contains("starttls"));

        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        let s = in_sent(&h.over_tls(cert(&["evil.example"])));
        assert!(!s.contains("EXTERNAL") && s.contains("<dialback"));

        let no_sasl = policy(Negotiate::Required, Negotiate::NotSupported, true);
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B).partner(A, no_sasl));
        let s = in_sent(&h.over_tls(cert(&[A])));
        assert!(!s.contains("EXTERNAL"));
    }

    #[test]
    fn each_stream_restart_gets_a_new_id_and_dialback_uses_the_current_one() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        let s = in_sent(&h.over_tls(None));
        assert!(s.contains("id='sid.1'"), "{s}");
        assert_eq!(h.neg.stream_id(), "sid.1");
        let a = h.feed("<db:result from='a.example' to='b.example'>k</db:result>");
        assert_eq!(
            a,
            vec![InAction::VerifyDialback {
                originating: A.into(),
                receiving: B.into(),
                stream_id: "sid.1".into(),
                key: "k".into()
            }]
        );
    }

    #[test]
    fn external_checks_authzid_and_certificate_and_keeps_the_stream_open_on_failure() {
        let auth = |authzid: &str| {
            format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{authzid}</auth>"
            )
        };
        // Before TLS.
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.feed(HEADER_FROM_A);
        let a = h.feed(&auth("="));
        assert!(in_sent(&a).contains("<encryption-required/>"));
        assert_eq!(in_failure(&a), None);

        // Someone else's authzid, then garbage, then the right one as "=".
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(cert(&[A]));
        let a = h.feed(&auth(&B64.encode("c.example")));
        assert!(in_sent(&a).contains("<invalid-authzid/>"), "{a:?}");
        assert_eq!(in_failure(&a), None);
        let a = h.feed(&auth("!!!"));
        assert!(in_sent(&a).contains("<incorrect-encoding/>"));
        let a = h.feed(&auth("="));
        assert_eq!(
            a,
            vec![
                InAction::Send("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>".into()),
                InAction::Authenticated {
                    remote: A.into(),
                    local: B.into(),
                    method: AuthMethod::SaslExternal
                },
                InAction::RestartStream,
            ]
        );
        let a = h.feed(HEADER_FROM_A);
        assert!(in_sent(&a).ends_with("<stream:features/>"));

        // The base64 of the domain works too; a certificate for someone else does not.
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(cert(&[A]));
        assert!(in_sent(&h.feed(&auth(&B64.encode(A)))).starts_with("<success"));
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(cert(&["evil.example"]));
        let a = h.feed(&auth("="));
        assert!(in_sent(&a).contains("<not-authorized/>"));
        assert!(auths(&a).is_empty());
        let a = h.feed(&auth("="));
        assert!(in_failure(&a).is_none());
        let a = h.feed(&auth("="));
        assert_eq!(
            in_failure(&a),
            Some(StreamCondition::PolicyViolation),
            "three failures close the stream"
        );
    }

    #[test]
    fn an_unknown_mechanism_is_refused() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(cert(&[A]));
        let a = h.feed(
            "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>",
        );
        assert!(in_sent(&a).contains("<invalid-mechanism/>"));
        assert!(auths(&a).is_empty());
    }

    #[test]
    fn two_domains_are_authenticated_on_one_inbound_stream() {
        let mut h = Inb::new(Ctx::new(&[B, "muc.b.example"], SECRET_B));
        h.over_tls(None);
        let a = h.dialback(A, B, true);
        assert!(in_sent(&a).contains("<db:result from='b.example' to='a.example' type='valid'/>"));
        let a = h.dialback("rooms.a.example", "muc.b.example", true);
        assert_eq!(
            auths(&a),
            vec![(
                "rooms.a.example".into(),
                "muc.b.example".into(),
                AuthMethod::DialbackTls
            )]
        );
        assert_eq!(
            h.neg.authenticated(),
            &[
                (A.to_string(), B.to_string()),
                ("rooms.a.example".to_string(), "muc.b.example".to_string())
            ]
        );
        assert!(
            h.neg
                .check_addressing(&msg("x@rooms.a.example/r", "muc.b.example"))
                .is_ok()
        );
        assert_eq!(
            h.neg
                .check_addressing(&msg("x@rooms.a.example/r", "y@b.example")),
            Err(StreamCondition::HostUnknown),
            "each pair is authorised on its own"
        );
        // Asking again for a verified pair is answered at once.
        let a = h.feed("<db:result from='a.example' to='b.example'>whatever</db:result>");
        assert_eq!(
            in_sent(&a),
            "<db:result from='b.example' to='a.example' type='valid'/>"
        );
    }

    #[test]
    fn check_addressing_needs_an_authenticated_from_and_a_to_it_was_authenticated_for() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(None);
        h.dialback(A, B, true);
        let n = &h.neg;
        assert_eq!(
            n.check_addressing(&msg("alice@a.example/phone", "bob@b.example")),
            Ok(())
        );
        assert_eq!(n.check_addressing(&msg("a.example", "b.example")), Ok(()));
        assert_eq!(
            n.check_addressing(&msg("", "bob@b.example")),
            Err(StreamCondition::ImproperAddressing)
        );
        assert_eq!(
            n.check_addressing(&msg("alice@a.example", "")),
            Err(StreamCondition::ImproperAddressing)
        );
        assert_eq!(
            n.check_addressing(&msg("@a.example", "bob@b.example")),
            Err(StreamCondition::ImproperAddressing)
        );
        assert_eq!(
            n.check_addressing(&msg("mallory@c.example", "bob@b.example")),
            Err(StreamCondition::InvalidFrom)
        );
        assert_eq!(
            n.check_addressing(&msg("alice@a.example", "carol@elsewhere.example")),
            Err(StreamCondition::HostUnknown)
        );
        assert_eq!(
            n.check_addressing(&msg("ALICE@A.EXAMPLE", "bob@B.example")),
            Ok(()),
            "domains are compared normalised"
        );
    }

    #[test]
    fn a_refused_domain_in_the_header_gets_a_policy_violation() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B).closed());
        let a = h.feed(HEADER_FROM_A);
        assert!(
            in_sent(&a).starts_with("<?xml"),
            "a header precedes the error"
        );
        assert_eq!(in_failure(&a), Some(StreamCondition::PolicyViolation));
    }

    #[test]
    fn a_db_result_for_a_refused_domain_is_a_dialback_error_and_the_stream_stays_open() {
        let ctx = Ctx::new(&[B], SECRET_B)
            .closed()
            .partner(A, PeerPolicy::open_federation());
        let mut h = Inb::new(ctx);
        h.over_tls(None);
        let a = h.feed("<db:result from='spam.example' to='b.example'>k</db:result>");
        assert_eq!(
            in_sent(&a),
            "<db:result from='b.example' to='spam.example' type='error'><error type='modify'>\
             <policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>"
        );
        assert_eq!(in_failure(&a), None);
        let a = h.dialback(A, B, true);
        assert_eq!(
            auths(&a).len(),
            1,
            "the stream still works for allowed pairs"
        );
    }

    #[test]
    fn a_db_result_to_a_domain_we_do_not_host_is_item_not_found_and_not_fatal() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(None);
        let a = h.feed("<db:result from='a.example' to='c.example'>k</db:result>");
        assert!(in_sent(&a).contains("from='c.example' to='a.example' type='error'"));
        assert!(in_sent(&a).contains("<item-not-found "));
        assert_eq!(in_failure(&a), None);
    }

    #[test]
    fn dialback_without_tls_is_refused_when_the_policy_requires_tls() {
        let ctx = Ctx::new(&[B], SECRET_B).partner(
            "legacy.example",
            policy(Negotiate::NotSupported, Negotiate::NotSupported, true),
        );
        let mut h = Inb::new(ctx);
        h.feed(&HEADER_FROM_A.replace("from='a.example'", "from='legacy.example'"));
        // a.example (open federation: TLS required) piggybacks on a plain stream.
        let a = h.feed("<db:result from='a.example' to='b.example'>k</db:result>");
        assert!(in_sent(&a).contains("<policy-violation "), "{a:?}");
        assert!(
            !a.iter()
                .any(|x| matches!(x, InAction::VerifyDialback { .. }))
        );
        // The plain partner itself may use dialback without TLS.
        let a = h.dialback("legacy.example", B, true);
        assert_eq!(
            auths(&a),
            vec![("legacy.example".into(), B.into(), AuthMethod::DialbackPlain)]
        );
    }

    #[test]
    fn dialback_disabled_or_sasl_required_for_a_domain_is_not_authorized() {
        for strict in [
            policy(Negotiate::Required, Negotiate::Optional, false),
            policy(Negotiate::Required, Negotiate::Required, true),
        ] {
            let mut h = Inb::new(Ctx::new(&[B], SECRET_B).partner(A, strict));
            let s = in_sent(&h.over_tls(cert(&["evil.example"])));
            assert!(!s.contains("<dialback"));
            let a = h.feed("<db:result from='a.example' to='b.example'>k</db:result>");
            assert!(in_sent(&a).contains("<not-authorized "));
            assert!(auths(&a).is_empty());
            assert_eq!(in_failure(&a), None);
        }
    }

    #[test]
    fn a_key_that_is_empty_or_huge_is_invalid_without_asking_anyone() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(None);
        let a = h.feed("<db:result from='a.example' to='b.example'/>");
        assert!(in_sent(&a).contains("type='invalid'"));
        assert_eq!(in_failure(&a), Some(StreamCondition::NotAuthorized));

        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(None);
        let huge = "f".repeat(MAX_KEY_LEN + 1);
        let a = h.feed(&format!(
            "<db:result from='a.example' to='b.example'>{huge}</db:result>"
        ));
        assert!(
            !a.iter()
                .any(|x| matches!(x, InAction::VerifyDialback { .. }))
        );
        assert_eq!(in_failure(&a), Some(StreamCondition::NotAuthorized));
    }

    #[test]
    fn unsolicited_dialback_answers_never_authenticate() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(None);
        // A typed db:result on an inbound stream is an answer nobody asked for.
        let a = h.feed("<db:result from='a.example' to='b.example' type='valid'/>");
        assert!(a.is_empty());
        let a = h.feed("<db:verify from='a.example' to='b.example' id='sid.1' type='valid'/>");
        assert!(a.is_empty());
        // A verification result for a pair that was never asked about.
        let a = h.input(InInput::DialbackChecked {
            originating: A.into(),
            receiving: B.into(),
            valid: true,
        });
        assert!(a.is_empty());
        let a = h.input(InInput::DialbackFailed {
            originating: A.into(),
            receiving: B.into(),
            condition: StanzaCondition::RemoteServerTimeout,
        });
        assert!(a.is_empty());
        assert!(h.neg.authenticated().is_empty());
        assert_eq!(
            h.neg
                .check_addressing(&msg("alice@a.example", "bob@b.example")),
            Err(StreamCondition::InvalidFrom)
        );
        let a = h.feed("<message from='alice@a.example' to='bob@b.example'/>");
        assert_eq!(in_failure(&a), Some(StreamCondition::NotAuthorized));
    }

    #[test]
    fn a_verification_result_is_used_once() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(None);
        let a = h.dialback(A, B, true);
        assert_eq!(auths(&a).len(), 1);
        let again = h.input(InInput::DialbackChecked {
            originating: A.into(),
            receiving: B.into(),
            valid: false,
        });
        assert!(again.is_empty(), "a late duplicate changes nothing");
        assert!(h.neg.is_authenticated_for(A, B));
    }

    #[test]
    fn db_verify_is_answered_before_any_authentication_with_our_key() {
        let mut h = Inb::new(Ctx::new(&[A], SECRET_A));
        h.feed(
            "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' \
             from='b.example' to='a.example' version='1.0'>",
        );
        let key = dialback::dialback_key(SECRET_A, B, A, "417GAF25");
        let a = h.feed(&format!(
            "<db:verify from='b.example' to='a.example' id='417GAF25'>\n {key}\n</db:verify>"
        ));
        assert_eq!(
            in_sent(&a),
            "<db:verify from='a.example' to='b.example' id='417GAF25' type='valid'/>"
        );
        let a = h.feed(&format!(
            "<db:verify from='b.example' to='a.example' id='OTHER'>{key}</db:verify>"
        ));
        assert!(in_sent(&a).ends_with("type='invalid'/>"));
        let a = h.feed(&format!(
            "<db:verify from='c.example' to='a.example' id='417GAF25'>{key}</db:verify>"
        ));
        assert!(
            in_sent(&a).ends_with("type='invalid'/>"),
            "the key binds the receiving domain"
        );
        let a = h.feed("<db:verify from='b.example' to='a.example'>x</db:verify>");
        assert!(
            in_sent(&a).ends_with("type='invalid'/>"),
            "no id, no validity"
        );
        assert!(h.neg.authenticated().is_empty());
        assert_eq!(in_failure(&a), None);
    }

    #[test]
    fn db_verify_for_a_domain_we_do_not_host_is_item_not_found() {
        let mut h = Inb::new(Ctx::new(&[A, B], SECRET_A));
        h.feed(HEADER_FROM_A.replace("a.example", "c.example").as_str());
        let a = h.feed("<db:verify from='c.example' to='z.example' id='i'>k</db:verify>");
        assert_eq!(
            in_sent(&a),
            "<db:verify from='z.example' to='c.example' id='i' type='error'><error type='cancel'>\
             <item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:verify>"
        );
    }

    #[test]
    fn stanzas_before_authentication_are_not_authorized() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.feed(HEADER_FROM_A);
        let a =
            h.feed("<message from='alice@a.example' to='bob@b.example'><body>hi</body></message>");
        assert_eq!(in_failure(&a), Some(StreamCondition::NotAuthorized));
        assert!(
            h.feed("<presence/>").is_empty(),
            "closed streams ignore input"
        );
    }

    #[test]
    fn after_authentication_stanzas_and_unknown_elements_are_left_to_the_actor() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(None);
        h.dialback(A, B, true);
        assert!(
            h.feed("<message from='alice@a.example' to='bob@b.example'/>")
                .is_empty()
        );
        assert!(h.feed("<r xmlns='urn:xmpp:sm:3'/>").is_empty());
        let a = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(in_failure(&a), Some(StreamCondition::PolicyViolation));
    }

    #[test]
    fn an_unknown_host_gets_a_header_then_host_unknown() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        let a = h.feed(&HEADER_FROM_A.replace("to='b.example'", "to='c.example'"));
        assert!(in_sent(&a).starts_with("<?xml"));
        assert!(
            !in_sent(&a).contains("from='c.example'"),
            "we do not claim to be c.example"
        );
        assert_eq!(in_failure(&a), Some(StreamCondition::HostUnknown));
    }

    #[test]
    fn a_header_without_version_or_with_a_bad_from_is_refused() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        let a = h.feed(&HEADER_FROM_A.replace("to='b.example' version='1.0'", "to='b.example'"));
        assert_eq!(in_failure(&a), Some(StreamCondition::UnsupportedVersion));
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        let a = h.feed(&HEADER_FROM_A.replace("from='a.example'", "from='u@a.example'"));
        assert_eq!(in_failure(&a), Some(StreamCondition::InvalidFrom));
    }

    #[test]
    fn a_restart_that_changes_the_from_is_invalid_from() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.feed(HEADER_FROM_A);
        h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        h.tls(None);
        let a = h.feed(&HEADER_FROM_A.replace("from='a.example'", "from='c.example'"));
        assert_eq!(in_failure(&a), Some(StreamCondition::InvalidFrom));
    }

    #[test]
    fn starttls_twice_or_when_not_offered_is_refused() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.over_tls(None);
        let a = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(in_sent(&a).contains("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"));
        assert_eq!(in_failure(&a), Some(StreamCondition::PolicyViolation));

        let mut h = Inb {
            neg: InboundNegotiation::new("sid".into(), false),
            ctx: Ctx::new(&[B], SECRET_B),
            framer: framer(),
        };
        h.feed(HEADER_FROM_A);
        let a = h.feed("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert_eq!(in_failure(&a), Some(StreamCondition::PolicyViolation));
    }

    #[test]
    fn a_peer_stream_error_on_inbound_closes_without_answering() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.feed(HEADER_FROM_A);
        let a = h.feed(
            "<stream:error><connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        );
        assert_eq!(
            a,
            vec![InAction::PeerStreamError(StreamError::new(
                StreamCondition::ConnectionTimeout
            ))]
        );
    }

    #[test]
    fn an_unexpected_element_before_authentication_is_unsupported() {
        let mut h = Inb::new(Ctx::new(&[B], SECRET_B));
        h.feed(HEADER_FROM_A);
        let a = h.feed("<enable xmlns='urn:xmpp:sm:3'/>");
        assert_eq!(in_failure(&a), Some(StreamCondition::UnsupportedStanzaType));
    }

    // -- outbound, fed realistic peer XML ----------------------------------

    /// Prosody's header declares xmlns:db; its features offer required
    /// STARTTLS and dialback with errors.
    const PROSODY_HEADER: &str = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
         xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
         id='7a1e5f0c' from='b.example' to='a.example' version='1.0' xml:lang='en'>";
    const PROSODY_FEATURES: &str = "<stream:features>\
         <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>\
         <starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>\
         </stream:features>";
    /// ejabberd announces dialback by the namespace on its header only.
    const EJABBERD_HEADER: &str = "<?xml version='1.0'?><stream:stream \
         xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' \
         xmlns:db='jabber:server:dialback' id='14213458966236478513' from='b.example' \
         to='a.example' version='1.0'>";

    struct Out {
        neg: OutboundNegotiation,
        framer: Framer,
    }

    impl Out {
        fn new(p: PeerPolicy, can_external: bool) -> (Out, Vec<OutAction>) {
            let mut neg = OutboundNegotiation::new(
                A.into(),
                B.into(),
                p,
                Arc::from(SECRET_A),
                can_external,
                OutMode::Authenticate,
            );
            let a = neg.start();
            (
                Out {
                    neg,
                    framer: framer(),
                },
                a,
            )
        }

        fn feed(&mut self, xml: &str) -> Vec<OutAction> {
            self.framer.feed(xml.as_bytes());
            let mut out = Vec::new();
            while let Ok(Some(ev)) = self.framer.next() {
                let a = match &ev {
                    FramerEvent::StreamOpen(h) => self.neg.handle(OutInput::StreamOpen(h)),
                    FramerEvent::Stanza(s) => self.neg.handle(OutInput::Element(s)),
                    FramerEvent::StreamClose => self.neg.handle(OutInput::StreamClosed),
                };
                if a.contains(&OutAction::RestartStream) {
                    self.framer.reset();
                }
                out.extend(a);
            }
            out
        }

        fn tls(&mut self, peer: Option<Arc<dyn PeerIdentity>>) -> Vec<OutAction> {
            self.framer = framer();
            self.neg.handle(OutInput::TlsEstablished { peer })
        }
    }

    fn out_failure(a: &[OutAction]) -> Option<S2sFailure> {
        a.iter().find_map(|x| match x {
            OutAction::Fail(f) => Some(f.clone()),
            _ => None,
        })
    }

    #[test]
    fn direct_tls_skips_starttls_and_goes_straight_to_dialback() {
        let mut neg = OutboundNegotiation::new(
            A.into(),
            B.into(),
            PeerPolicy::open_federation(),
            Arc::from(SECRET_A),
            false,
            OutMode::Authenticate,
        );
        // XEP-0368: the handshake ran before the stream was opened.
        assert!(
            neg.handle(OutInput::TlsEstablished { peer: None })
                .is_empty()
        );
        assert!(neg.is_tls());
        let mut out = Out {
            neg,
            framer: framer(),
        };
        assert!(
            matches!(out.neg.start().as_slice(), [OutAction::Send(h)] if h.contains("to='b.example'"))
        );
        // Features without STARTTLS are fine: TLS is already up.
        let a = out.feed(&format!(
            "{PROSODY_HEADER}<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>"
        ));
        assert!(
            a.iter()
                .any(|x| matches!(x, OutAction::Send(s) if s.starts_with("<db:result"))),
            "{a:?}"
        );
        assert!(out_failure(&a).is_none());
    }

    #[test]
    fn the_opening_header_declares_dialback_and_names_both_domains() {
        let (_, a) = Out::new(PeerPolicy::open_federation(), true);
        assert_eq!(
            a,
            vec![OutAction::Send(
                "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
                 xmlns:stream='http://etherx.jabber.org/streams' \
                 xmlns:db='jabber:server:dialback' from='a.example' to='b.example' version='1.0'>"
                    .into()
            )]
        );
    }

    #[test]
    fn prosody_features_lead_to_starttls_then_dialback_with_the_new_stream_id() {
        let (mut o, _) = Out::new(PeerPolicy::open_federation(), false);
        assert!(o.feed(PROSODY_HEADER).is_empty());
        assert_eq!(o.neg.stream_id(), Some("7a1e5f0c"));
        let a = o.feed(PROSODY_FEATURES);
        assert_eq!(
            a,
            vec![OutAction::Send(
                "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>".into()
            )]
        );
        assert_eq!(
            o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"),
            vec![OutAction::StartTls]
        );
        let a = o.tls(cert(&["not-b.example"]));
        assert_eq!(a[0], OutAction::RestartStream);
        assert!(
            matches!(&a[1], OutAction::Send(h) if h.contains("from='a.example' to='b.example'"))
        );
        assert!(!o.neg.remote_certificate_valid());
        o.feed(&PROSODY_HEADER.replace("7a1e5f0c", "after-tls"));
        let a = o.feed(
            "<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>",
        );
        let key = dialback::dialback_key(SECRET_A, B, A, "after-tls");
        assert_eq!(
            out_sent(&a),
            format!("<db:result from='a.example' to='b.example'>{key}</db:result>")
        );
        let a = o.feed("<db:result from='b.example' to='a.example' type='valid'/>");
        assert_eq!(a, vec![OutAction::Ready(AuthMethod::DialbackTls)]);
        assert!(o.neg.is_ready());
    }

    #[test]
    fn prosody_required_starttls_against_a_tls_not_supported_partner_fails_clearly() {
        let gtalk = policy(Negotiate::NotSupported, Negotiate::NotSupported, true);
        let (mut o, _) = Out::new(gtalk, false);
        o.feed(PROSODY_HEADER);
        let f = out_failure(&o.feed(PROSODY_FEATURES)).expect("fails");
        assert_eq!(
            f.reason,
            FailReason::TlsOfferedButNotSupportedAndRequiredByPeer
        );
        assert_eq!(
            f.send.map(|e| e.condition),
            Some(StreamCondition::UnsupportedFeature)
        );
    }

    #[test]
    fn optional_starttls_is_skipped_for_a_tls_not_supported_partner() {
        let gtalk = policy(Negotiate::NotSupported, Negotiate::NotSupported, true);
        let (mut o, _) = Out::new(gtalk, true);
        o.feed(PROSODY_HEADER);
        let a = o.feed(
            "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>\
             <dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>",
        );
        assert!(out_sent(&a).starts_with("<db:result"), "{a:?}");
        let a = o.feed("<db:result from='b.example' to='a.example' type='valid'/>");
        assert_eq!(a, vec![OutAction::Ready(AuthMethod::DialbackPlain)]);
    }

    #[test]
    fn an_ejabberd_stream_that_only_declares_the_db_namespace_still_gets_dialback() {
        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        o.feed(EJABBERD_HEADER);
        o.feed("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:features>");
        o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        o.tls(cert(&[B]));
        assert!(o.neg.remote_certificate_valid());
        o.feed(EJABBERD_HEADER);
        // No EXTERNAL (ejabberd did not like our certificate), no dialback feature.
        let a = o.feed("<stream:features/>");
        assert!(out_sent(&a).starts_with("<db:result from='a.example' to='b.example'>"));
    }

    #[test]
    fn external_is_sent_with_our_domain_as_authzid_and_success_restarts() {
        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        o.feed(EJABBERD_HEADER);
        o.feed("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>");
        o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        o.tls(cert(&[B]));
        o.feed(EJABBERD_HEADER);
        let a = o.feed(
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>EXTERNAL</mechanism></mechanisms></stream:features>",
        );
        assert_eq!(
            out_sent(&a),
            format!(
                "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>{}</auth>",
                B64.encode(A)
            )
        );
        let a = o.feed("<success xmlns='urn:ietf:params:xml:ns:xmpp-sasl'/>");
        assert_eq!(a[0], OutAction::RestartStream);
        o.feed(EJABBERD_HEADER);
        let a = o.feed("<stream:features><bidi xmlns='urn:xmpp:features:bidi'/></stream:features>");
        assert_eq!(a, vec![OutAction::Ready(AuthMethod::SaslExternal)]);
    }

    #[test]
    fn a_sasl_failure_without_dialback_allowed_is_sasl_external_refused() {
        let (mut o, _) = Out::new(
            policy(Negotiate::Required, Negotiate::Optional, false),
            true,
        );
        o.feed(PROSODY_HEADER);
        o.feed(PROSODY_FEATURES);
        o.feed("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        o.tls(cert(&[B]));
        o.feed(PROSODY_HEADER);
        o.feed(
            "<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>\
             <mechanism>EXTERNAL</mechanism></mechanisms></stream:features>",
        );
        let a =
            o.feed("<failure xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><not-authorized/></failure>");
        assert_eq!(
            out_failure(&a).map(|f| f.reason),
            Some(FailReason::SaslExternalRefused)
        );
    }

    #[test]
    fn no_usable_method_and_missing_dialback_are_told_apart() {
        let (mut o, _) = Out::new(
            policy(Negotiate::Optional, Negotiate::Optional, false),
            false,
        );
        o.feed(&PROSODY_HEADER.replace(" xmlns:db='jabber:server:dialback'", ""));
        let a = o.feed("<stream:features/>");
        assert_eq!(
            out_failure(&a).map(|f| f.reason),
            Some(FailReason::NoUsableAuthMethod)
        );

        let (mut o, _) = Out::new(
            policy(Negotiate::Optional, Negotiate::Optional, true),
            false,
        );
        o.feed(&PROSODY_HEADER.replace(" xmlns:db='jabber:server:dialback'", ""));
        let a = o.feed("<stream:features/>");
        assert_eq!(
            out_failure(&a).map(|f| f.reason),
            Some(FailReason::DialbackNotOffered)
        );
    }

    #[test]
    fn a_legacy_peer_without_version_gets_plain_dialback_only_when_policy_allows() {
        let legacy = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' \
             xmlns:db='jabber:server:dialback' xmlns:stream='http://etherx.jabber.org/streams' \
             id='old1'>";
        let plain = policy(Negotiate::Optional, Negotiate::Optional, true);
        let (mut o, _) = Out::new(plain, true);
        let a = o.feed(legacy);
        assert!(out_sent(&a).starts_with("<db:result"), "{a:?}");

        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        let a = o.feed(legacy);
        assert_eq!(
            out_failure(&a).map(|f| f.reason),
            Some(FailReason::TlsRequiredButNotOffered)
        );
    }

    #[test]
    fn a_dialback_answer_for_another_domain_pair_is_ignored() {
        let (mut o, _) = Out::new(
            policy(Negotiate::Optional, Negotiate::Optional, true),
            false,
        );
        o.feed(PROSODY_HEADER);
        o.feed("<stream:features><dialback xmlns='urn:xmpp:features:dialback'/></stream:features>");
        assert!(
            o.feed("<db:result from='evil.example' to='a.example' type='valid'/>")
                .is_empty()
        );
        assert!(
            o.feed("<db:verify from='b.example' to='a.example' id='x' type='valid'/>")
                .is_empty()
        );
        assert!(!o.neg.is_ready());
        let a = o.feed("<db:result from='B.example' to='a.example' type='invalid'/>");
        assert_eq!(
            out_failure(&a).map(|f| f.reason),
            Some(FailReason::DialbackRefused)
        );
    }

    #[test]
    fn failures_before_and_after_the_peer_header_bounce_differently() {
        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        let f = out_failure(&o.feed("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' version='1.0'></stream:stream>"));
        let f = f.expect("closed");
        assert!(matches!(f.reason, FailReason::Protocol(_)));
        assert!(f.timeout_class, "the peer did open a stream");

        let mut neg = OutboundNegotiation::new(
            A.into(),
            B.into(),
            PeerPolicy::open_federation(),
            Arc::from(SECRET_A),
            true,
            OutMode::Authenticate,
        );
        neg.start();
        let f = out_failure(&neg.handle(OutInput::StreamClosed)).expect("closed");
        assert!(!f.timeout_class);
        assert_eq!(f.bounce(), StanzaCondition::RemoteServerNotFound);

        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        o.feed(PROSODY_HEADER);
        let a = o.feed(
            "<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>\
             <text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no such host</text></stream:error>",
        );
        let f = out_failure(&a).expect("fails");
        assert_eq!(
            f.reason,
            FailReason::PeerStreamError(StreamError::with_text(
                StreamCondition::HostUnknown,
                "no such host"
            ))
        );
        assert_eq!(f.bounce(), StanzaCondition::RemoteServerNotFound);
        assert!(f.to_string().contains("host-unknown: no such host"));

        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        o.feed(PROSODY_HEADER);
        let a = o.feed(
            "<stream:error><policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
        );
        assert_eq!(
            out_failure(&a).unwrap().bounce(),
            StanzaCondition::RemoteServerTimeout
        );
    }

    #[test]
    fn a_refused_starttls_or_an_unexpected_element_is_a_protocol_failure() {
        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        o.feed(PROSODY_HEADER);
        o.feed(PROSODY_FEATURES);
        let a = o.feed("<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>");
        assert!(matches!(
            out_failure(&a).map(|f| f.reason),
            Some(FailReason::Protocol(_))
        ));

        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        o.feed(PROSODY_HEADER);
        let a = o.feed("<message to='x@a.example'/>");
        let f = out_failure(&a).expect("fails");
        assert_eq!(
            f.send.map(|e| e.condition),
            Some(StreamCondition::UnsupportedStanzaType)
        );
        assert!(
            o.feed(PROSODY_FEATURES).is_empty(),
            "a failed machine stays quiet"
        );
    }

    #[test]
    fn tls_established_without_starttls_is_a_protocol_failure() {
        let (mut o, _) = Out::new(PeerPolicy::open_federation(), true);
        let a = o.tls(None);
        assert!(matches!(
            out_failure(&a).map(|f| f.reason),
            Some(FailReason::Protocol(_))
        ));
    }
}
