//! The outbound half of s2s negotiation: [`OutboundNegotiation`], the
//! machine for a stream we initiate (`local` → `remote`), with its inputs
//! and actions. Types both directions share are in the parent module.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{StreamCondition, StreamError};
use crate::stream::dialback::{self, DbElement, DbKind, DbType};
use crate::xml::ns::{NS_DIALBACK, NS_DIALBACK_FEATURE, NS_SASL, NS_SM, NS_STREAMS, NS_TLS};
use crate::xml::{Stanza, StreamHeader};

use super::{
    AuthMethod, FailReason, Negotiate, OutMode, PeerIdentity, PeerPolicy, S2sFailure, domain,
    is_v1, parse_element, parse_stream_error, stream_header,
};

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
    /// XEP-0198 Stream Management.
    sm: bool,
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

    /// Whether the peer's TLS certificate was valid for `remote`. SASL
    /// EXTERNAL is only used when it is (see `choose_auth`).
    pub fn remote_certificate_valid(&self) -> bool {
        self.remote_cert_valid
    }

    /// Whether the peer's latest features offered XEP-0198 Stream
    /// Management: after dialback, those that preceded it (dialback has no
    /// stream restart); after SASL, those of the restarted stream.
    pub fn sm_offered(&self) -> bool {
        self.offered.sm
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
                    sm: el.child("sm", NS_SM).is_some(),
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
        // RFC 6125, XEP-0178 §3: SASL EXTERNAL authenticates us to the
        // peer, never the peer to us. Only its certificate tells us that we
        // talk to `remote` and not to whoever answered (a hijacked DNS
        // name, a poisoned route), so EXTERNAL, and the stream it makes
        // ready, needs that certificate to be valid for `remote`.
        let external = self.tls
            && self.remote_cert_valid
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
        // Without a valid certificate only dialback may go on, where the
        // partner's settings allow it: the peer is then whom DNS named
        // (XEP-0220 §2.1, the receiving server's identity rests on DNS).
        if self.tls
            && !self.remote_cert_valid
            && (self.policy.sasl == Negotiate::Required || !self.policy.dialback)
        {
            let text = format!(
                "Your server's certificate is invalid, expired, or not trusted by {} for {}",
                self.local, self.remote
            );
            return self.fail(
                FailReason::RemoteCertificateInvalid,
                Some(StreamError::with_text(
                    StreamCondition::PolicyViolation,
                    text,
                )),
            );
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
