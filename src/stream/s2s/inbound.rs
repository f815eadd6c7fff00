//! The inbound half of s2s negotiation: [`InboundNegotiation`], the machine
//! for a stream a peer opened to us, with its inputs, actions and the
//! [`InboundContext`] it asks about local domains and partners. Types both
//! directions share are in the parent module.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

use crate::error::{StanzaCondition, StreamCondition, StreamError};
use crate::jid::Jid;
use crate::stream::dialback::{self, DbElement, DbKind, DbType, MAX_KEY_LEN};
use crate::xml::element::Element;
use crate::xml::ns::{NS_DIALBACK_FEATURE, NS_SASL, NS_SM, NS_STREAMS, NS_TLS};
use crate::xml::{Stanza, StanzaKind, StreamHeader};

use super::{
    AuthMethod, Negotiate, PeerIdentity, PeerPolicy, domain, is_v1, parse_element,
    parse_stream_error, stream_header,
};

/// SASL attempts a peer may fail on one inbound stream before it is closed.
const MAX_SASL_FAILURES: u32 = 3;

/// Whether a domain may authenticate to us by dialback. SASL Required means
/// a certificate is required, as it does on the outbound side (and as the
/// Lync matrix says for TLS and SASL both Required: "dialback is never used").
fn dialback_allowed(p: &PeerPolicy) -> bool {
    p.dialback && p.sasl != Negotiate::Required
}

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
    /// connection in [`OutMode::Verify`](super::OutMode::Verify)) whether `key` is right, then
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
    /// Whether XEP-0198 Stream Management is offered.
    sm: bool,
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
            sm: true,
        }
    }

    /// Offers no XEP-0198 Stream Management (`s2s.stream_management =
    /// false`).
    pub fn without_sm(mut self) -> Self {
        self.sm = false;
        self
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
            // XEP-0198: the peer may enable acks on the authenticated stream.
            if !self.sm {
                return "<stream:features/>".to_string();
            }
            return format!("<stream:features><sm xmlns='{NS_SM}'/></stream:features>");
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
            // Dialback authenticates without a stream restart: what may
            // follow it is offered now.
            if self.sm {
                f.push_str(&format!("<sm xmlns='{NS_SM}'/>"));
            }
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
