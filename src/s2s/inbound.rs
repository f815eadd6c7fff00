//! Inbound server-to-server streams: the listener (STARTTLS on `[s2s]
//! listen`, Direct TLS on `direct_tls_listen`) and one actor per
//! connection that negotiates, authenticates peers (SASL EXTERNAL when the
//! certificate verifies, else dialback checked against the sender's
//! authoritative server), enforces addressing, and routes stanzas to local
//! users.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kameo::Actor;
use kameo::actor::{ActorRef, Spawn, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible};
use kameo::mailbox::{MailboxReceiver, Signal};
use kameo::message::{Context, Message};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;

use super::{S2sShared, connect_and_negotiate, silence_limit};
use crate::error::{StreamCondition, StreamError};
use crate::events::DomainMetrics;
use crate::jid::Jid;
use crate::router::Envelope;
use crate::stream::s2s::{
    InAction, InInput, InboundContext, InboundNegotiation, OutMode, PeerPolicy, parse_element,
};
use crate::transport::{Connection, Linger, StartTlsError, Transport};
use crate::xml::build::StanzaBuilder;
use crate::xml::ns::{NS_SERVER, NS_SID, NS_SM, NS_STANZAS, NS_STREAMS};
use crate::xml::{FramerEvent, Stanza, StanzaKind};

/// How long a keepalive may take to write, and the whole of a close:
/// writing the tail, then draining the peer until it closes.
const LINGER: Duration = Duration::from_secs(2);
const CLOSE: Linger = Linger {
    write: LINGER,
    drain: LINGER,
    drain_bytes: usize::MAX,
    total: LINGER,
};

/// Accepts on an s2s listener; with `direct_tls` (XEP-0368) each
/// connection starts with the TLS handshake.
/// A connection over `max_unauthenticated` or `max_unauthenticated_per_ip`
/// is refused before any actor or TLS exists for it.
pub async fn accept_loop(listener: TcpListener, shared: Arc<S2sShared>, direct_tls: bool) {
    crate::transport::accept_loop(listener, "s2s", |tcp, peer| {
        match shared.pre_auth.acquire(peer.ip()) {
            Ok(slot) => {
                InboundS2s::spawn((tcp, peer, shared.clone(), direct_tls, slot));
            }
            Err(over) => refuse(tcp, peer, over, direct_tls),
        }
    })
    .await
}

/// Closes a connection over a pre-authentication cap: the stream error
/// goes out if the socket takes it at once (never waited for), over plain
/// TCP only (a Direct TLS peer could not read it before a handshake we will
/// not spend on it).
fn refuse(tcp: TcpStream, peer: SocketAddr, over: crate::transport::Over, direct_tls: bool) {
    use crate::events::daemon::{Cap, CapReached};
    let cap = match over {
        crate::transport::Over::Total => Cap::S2sUnauthenticated,
        crate::transport::Over::PerIp => Cap::S2sUnauthenticatedPerIp,
    };
    CapReached { cap, peer: &peer }.emit();
    if !direct_tls {
        let e = StreamError::with_text(StreamCondition::PolicyViolation, "too many connections");
        let _ = tcp.try_write(stream_error_tail(&e, false).as_bytes());
    }
}

/// A stream error and the stream's end, after a stream header when none
/// was sent yet.
fn stream_error_tail(e: &StreamError, header_sent: bool) -> String {
    let mut tail = String::new();
    if !header_sent {
        tail.push_str(&format!(
            "<?xml version='1.0'?><stream:stream xmlns='{NS_SERVER}' xmlns:stream='{NS_STREAMS}' version='1.0'>"
        ));
    }
    tail.push_str(&e.to_xml());
    tail.push_str("</stream:stream>");
    tail
}

struct Ctx<'a>(&'a S2sShared);

impl InboundContext for Ctx<'_> {
    fn is_local(&self, domain: &str) -> bool {
        self.0.is_local(domain)
    }

    fn policy(&self, remote: &str) -> Option<PeerPolicy> {
        let p = self.0.policy(remote);
        if p.is_none() {
            // The machine refuses it with <policy-violation/>: count it.
            self.0.metrics.refused_unlisted_in.increment(1);
        }
        p
    }

    fn dialback_secret(&self) -> &[u8] {
        &self.0.identity.secret
    }
}

/// The authoritative server's answer to a dialback check: `Ok(valid)`, or
/// the stanza error when it could not be asked.
struct DialbackChecked {
    originating: String,
    receiving: String,
    result: Result<bool, crate::error::StanzaCondition>,
}

/// One of `max_pending_dialback_total`, given back on drop.
struct PendingDialback(Arc<S2sShared>);

impl Drop for PendingDialback {
    fn drop(&mut self) {
        self.0.slots.release_dialback();
    }
}

/// The inbound streams alive now, by a per-process id: reloads reach
/// them through it, and shutdown closes them.
#[derive(Default)]
pub struct InboundStreams {
    live: dashmap::DashMap<u64, ActorRef<InboundS2s>>,
    next: std::sync::atomic::AtomicU64,
}

impl InboundStreams {
    /// Registers a stream; the id is what [`InboundStreams::remove`] takes.
    fn insert(&self, a: ActorRef<InboundS2s>) -> u64 {
        let id = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.live.insert(id, a);
        id
    }

    fn remove(&self, id: u64) {
        self.live.remove(&id);
    }

    fn get(&self, id: u64) -> Option<ActorRef<InboundS2s>> {
        self.live.get(&id).map(|e| e.value().clone())
    }

    /// Every stream alive now (a snapshot: none is held locked).
    pub fn all(&self) -> Vec<ActorRef<InboundS2s>> {
        self.live.iter().map(|e| e.value().clone()).collect()
    }
}

pub struct InboundS2s {
    id: u64,
    peer: SocketAddr,
    shared: Arc<S2sShared>,
    me: ActorRef<InboundS2s>,
    conn: Connection,
    direct_tls: bool,
    neg: InboundNegotiation,
    metrics: DomainMetrics,
    header_sent: bool,
    deadline: Option<Instant>,
    /// The last byte read, whitespace included.
    last_activity: Instant,
    /// The last byte written, for whitespace keepalives.
    last_write: Instant,
    /// Whether keepalives run both ways (sent every `keep_alive_interval`,
    /// the link closed after [`silence_limit`] of silence): once
    /// authenticated, unless a partner of the stream has
    /// `enable_keep_alive = false`.
    keep_alive: bool,
    /// Partner slots held (`connection_limit`), by
    /// [`S2sShared::partner_key`]: one per partner, however many of its
    /// domains authenticated here.
    domains: Vec<String>,
    /// A `connection_limit` slot, taken when the stream authenticates.
    holds_slot: bool,
    /// The pre-authentication slot, held until the stream authenticates.
    pre_auth: Option<crate::transport::CapSlot>,
    /// Elements received before authentication (`max_pre_auth_elements`).
    pre_auth_elements: u32,
    /// Dialback verifications of this stream in flight.
    pending_dialback: u32,
    /// XEP-0198: the count of stanzas received since the peer's
    /// `<enable/>`, kept in [`S2sShared::sm`] for resumption.
    sm_in: Option<super::sm::InboundSm>,
    done: bool,
}

impl Actor for InboundS2s {
    type Args = (
        TcpStream,
        SocketAddr,
        Arc<S2sShared>,
        bool,
        crate::transport::CapSlot,
    );
    type Error = Infallible;

    async fn on_start(
        (tcp, peer, shared, direct_tls, pre_auth): Self::Args,
        me: ActorRef<Self>,
    ) -> Result<Self, Infallible> {
        // The stream id goes into dialback keys (XEP-0185): never a
        // predictable one.
        let sid = crate::random::hex(8);
        let mut metrics = shared.s2s_metrics.inbound(&shared.policy.get(), "");
        metrics.set_state("negotiating");
        let now = Instant::now();
        let id = shared.inbound.insert(me.clone());
        let mut me_ = InboundS2s {
            id,
            peer,
            me,
            conn: Connection::new(
                Transport::Plain(tcp),
                NS_SERVER,
                shared.config.gateway.max_stanza_size_pre_auth,
                shared.metrics.clone(),
            )
            .with_write_timeout(shared.config.server.write_timeout),
            direct_tls,
            neg: {
                let neg = InboundNegotiation::new(sid.clone().unwrap_or_default(), true);
                if shared.config.s2s.stream_management {
                    neg
                } else {
                    neg.without_sm()
                }
            },
            metrics,
            header_sent: false,
            deadline: Some(now + shared.config.gateway.stream_establishment_timeout),
            last_activity: now,
            last_write: now,
            keep_alive: false,
            domains: Vec::new(),
            holds_slot: false,
            pre_auth: Some(pre_auth),
            pre_auth_elements: 0,
            pending_dialback: 0,
            sm_in: None,
            done: false,
            shared,
        };
        me_.conn
            .set_read_rate(me_.shared.config.gateway.s2s_rate_limit);
        if sid.is_err() {
            crate::events::daemon::RandomUnavailable { what: "stream id" }.emit();
            me_.close(StreamError::new(StreamCondition::InternalServerError))
                .await;
        }
        Ok(me_)
    }

    async fn next(
        &mut self,
        _me: WeakActorRef<Self>,
        rx: &mut MailboxReceiver<Self>,
    ) -> Result<Option<Signal<Self>>, Infallible> {
        if self.direct_tls && !self.done {
            self.direct_tls = false;
            let actions = self.start_tls_now().await;
            self.run(actions).await;
        }
        loop {
            if self.done {
                return Ok(None);
            }
            let (timer, on_timer) = self.next_timer();
            tokio::select! {
                biased;
                sig = rx.recv() => return Ok(sig),
                r = self.conn.read() => self.on_read(r).await,
                _ = tokio::time::sleep_until(timer) => self.on_timer(on_timer).await,
            }
        }
    }

    async fn on_stop(
        &mut self,
        _me: WeakActorRef<Self>,
        _r: ActorStopReason,
    ) -> Result<(), Infallible> {
        self.shared.inbound.remove(self.id);
        if let Some(sm) = &self.sm_in {
            // The sender may resume this stream's count on a new one.
            self.shared
                .sm
                .detach(sm, self.shared.config.s2s.resume_timeout);
        }
        if !self.done {
            self.close(StreamError::new(StreamCondition::SystemShutdown))
                .await;
        }
        for key in self.domains.drain(..) {
            self.shared.release_partner(&key);
        }
        if self.holds_slot {
            self.shared.release_connection();
            self.holds_slot = false;
        }
        Ok(())
    }
}

/// What the actor's timer is for.
#[derive(Clone, Copy)]
enum Timer {
    /// `stream_establishment_timeout`
    Establishment,
    /// `stream_inactivity_timeout`
    Inactivity,
    /// Time for a whitespace keepalive.
    KeepAlive,
    /// The peer said nothing for [`silence_limit`].
    Silence,
}

impl InboundS2s {
    fn next_timer(&self) -> (Instant, Timer) {
        let g = &self.shared.config.gateway;
        if let Some(d) = self.deadline {
            return (d, Timer::Establishment);
        }
        let mut next = (
            self.last_activity + g.stream_inactivity_timeout,
            Timer::Inactivity,
        );
        if self.keep_alive {
            for t in [
                (self.last_write + g.keep_alive_interval, Timer::KeepAlive),
                (
                    self.last_activity + silence_limit(g.keep_alive_interval),
                    Timer::Silence,
                ),
            ] {
                if t.0 < next.0 {
                    next = t;
                }
            }
        }
        next
    }

    async fn on_timer(&mut self, t: Timer) {
        let text = match t {
            Timer::KeepAlive => {
                // Whitespace keepalive (RFC 6120 §4.6.1), bounded so a peer
                // that does not read cannot hold the actor.
                if tokio::time::timeout(LINGER, self.write(Bytes::from_static(b" ")))
                    .await
                    .is_err()
                {
                    // Not even one byte fits: the peer does not read.
                    self.done = true;
                }
                return;
            }
            Timer::Establishment => "stream negotiation took too long".to_string(),
            Timer::Inactivity => "the stream was idle too long".to_string(),
            Timer::Silence => format!(
                "nothing received for {} ms",
                silence_limit(self.shared.config.gateway.keep_alive_interval).as_millis()
            ),
        };
        self.close(StreamError::with_text(
            StreamCondition::ConnectionTimeout,
            text,
        ))
        .await;
    }
}

/// The stream's Stream Management count was resumed on another
/// connection: this one closes.
pub struct Superseded;

impl Message<Superseded> for InboundS2s {
    type Reply = ();

    async fn handle(&mut self, _: Superseded, _: &mut Context<Self, ()>) {
        self.sm_in = None;
        self.close(StreamError::with_text(
            StreamCondition::Conflict,
            "this stream was resumed on another connection",
        ))
        .await;
    }
}

/// The policy changed: close if a domain authenticated here may no longer
/// federate.
pub struct PolicyRecheck;

impl Message<PolicyRecheck> for InboundS2s {
    type Reply = ();

    async fn handle(&mut self, _: PolicyRecheck, _: &mut Context<Self, ()>) {
        let denied = self
            .neg
            .authenticated()
            .iter()
            .any(|(remote, _)| self.shared.partner(remote).is_none());
        if !denied {
            // Still allowed: the metric label follows the policy in force.
            let policy = self.shared.policy.get();
            if let Some((remote, _)) = self.neg.authenticated().first() {
                self.metrics.relabel(&policy, remote);
            }
        }
        if denied {
            self.shared.metrics.refused_unlisted_in.increment(1);
            self.close(StreamError::with_text(
                StreamCondition::PolicyViolation,
                "your domain is no longer an allowed federation partner",
            ))
            .await;
        }
    }
}

impl Message<DialbackChecked> for InboundS2s {
    type Reply = ();

    async fn handle(&mut self, m: DialbackChecked, _: &mut Context<Self, ()>) {
        self.pending_dialback = self.pending_dialback.saturating_sub(1);
        let input = match m.result {
            Ok(valid) => InInput::DialbackChecked {
                originating: m.originating,
                receiving: m.receiving,
                valid,
            },
            Err(condition) => InInput::DialbackFailed {
                originating: m.originating,
                receiving: m.receiving,
                condition,
            },
        };
        let actions = self.neg.handle(input, &Ctx(&self.shared));
        self.run(actions).await;
    }
}

impl InboundS2s {
    /// Counts one element received before authentication; false once over
    /// `max_pre_auth_elements`.
    fn count_pre_auth_element(&mut self) -> bool {
        self.pre_auth_elements += 1;
        self.pre_auth_elements <= self.shared.config.s2s.max_pre_auth_elements
    }

    /// Closes with `<policy-violation/>` for going over `cap`.
    async fn over_cap(&mut self, cap: crate::events::daemon::Cap, text: &'static str) {
        crate::events::daemon::CapReached {
            cap,
            peer: &self.peer,
        }
        .emit();
        self.close(StreamError::with_text(
            StreamCondition::PolicyViolation,
            text,
        ))
        .await;
    }

    async fn on_read(&mut self, r: std::io::Result<usize>) {
        match r {
            Ok(0) | Err(_) => {
                self.done = true;
                return;
            }
            Ok(_) => self.last_activity = Instant::now(),
        }
        while !self.done {
            match self.conn.framer().next() {
                Ok(None) => break,
                Ok(Some(FramerEvent::StreamOpen(h))) => {
                    let actions = self.neg.handle(InInput::StreamOpen(&h), &Ctx(&self.shared));
                    self.run(actions).await;
                }
                Ok(Some(FramerEvent::Stanza(s))) => {
                    self.shared.metrics.stanza_in(s.kind());
                    let authenticated = !self.neg.authenticated().is_empty();
                    if !authenticated && !self.count_pre_auth_element() {
                        self.over_cap(
                            crate::events::daemon::Cap::S2sPreAuthElements,
                            "too many elements before authentication",
                        )
                        .await;
                    } else if s.kind() != StanzaKind::Other && authenticated {
                        if self.sm_in.as_ref().is_some_and(|sm| !sm.count()) {
                            // Resumed on another connection: this one may
                            // handle nothing more.
                            self.close(StreamError::with_text(
                                StreamCondition::Conflict,
                                "this stream was resumed on another connection",
                            ))
                            .await;
                            continue;
                        }
                        self.route(s).await;
                    } else if authenticated && s.xmlns() == Some(NS_SM) {
                        self.stream_management(&s).await;
                    } else {
                        let actions = self.neg.handle(InInput::Element(&s), &Ctx(&self.shared));
                        self.run(actions).await;
                    }
                }
                Ok(Some(FramerEvent::StreamClose)) => {
                    // A stream closed cleanly is not resumed (XEP-0198 §5).
                    if let Some(sm) = self.sm_in.take() {
                        self.shared.sm.remove(&sm);
                    }
                    self.finish(Bytes::from_static(b"</stream:stream>")).await;
                }
                Err(e) => self.close(e).await,
            }
        }
        self.conn.framer().shrink_if_idle();
    }

    async fn route(&mut self, s: Stanza) {
        if let Err(cond) = self.neg.check_addressing(&s) {
            let text = match cond {
                StreamCondition::InvalidFrom => {
                    "the from domain is not authenticated on this stream"
                }
                StreamCondition::HostUnknown => "the to domain is not served here",
                _ => "bad addressing",
            };
            return self.close(StreamError::with_text(cond, text)).await;
        }
        let (Some(from), Some(to)) = (
            s.from().and_then(|f| Jid::parse(&f).ok()),
            s.to().and_then(|t| Jid::parse(&t).ok()),
        ) else {
            return self
                .close(StreamError::new(StreamCondition::ImproperAddressing))
                .await;
        };
        if to.bare().is_domain() {
            // Addressed to the server itself: answer pings, refuse the rest.
            return self.server_stanza(s, from, to).await;
        }
        let Some(partner) = self.shared.partner(from.domain()) else {
            // The partner was removed or denied by a reload.
            return self
                .close(StreamError::with_text(
                    StreamCondition::PolicyViolation,
                    "your domain is not an allowed federation partner",
                ))
                .await;
        };
        if self.sm_in.is_some() && self.resent(&s, &from) {
            return;
        }
        self.shared
            .audit
            .message(crate::audit::Direction::In, &s, &from, &to);
        let mut env = Envelope::new(s, from, to);
        env.remote = Some(partner.partner_type);
        self.shared.router.route(env).await;
    }

    /// A message handled already: its XEP-0359 `origin-id` was seen from
    /// the same sender. A sender that could not resume a stream resends
    /// what we had not acknowledged, some of which we handled.
    fn resent(&mut self, s: &Stanza, from: &Jid) -> bool {
        if s.kind() != StanzaKind::Message
            || memchr::memmem::find(s.bytes(), NS_SID.as_bytes()).is_none()
        {
            return false;
        }
        let Ok(el) = parse_element(s, self.conn.framer().stream_prefixes()) else {
            return false;
        };
        let Some(id) = el.child("origin-id", NS_SID).and_then(|o| o.attr("id")) else {
            return false;
        };
        let from_s = from.to_string();
        if self
            .shared
            .recent_ids
            .first_time(from.domain(), &from_s, id)
        {
            return false;
        }
        crate::events::s2s::DuplicateDropped {
            peer: &self.peer,
            from: &from_s,
        }
        .emit();
        true
    }

    async fn server_stanza(&mut self, s: Stanza, from: Jid, to: Jid) {
        if s.kind() != StanzaKind::Iq || !matches!(s.type_().as_deref(), Some("get") | Some("set"))
        {
            return;
        }
        let is_ping =
            crate::xml::element::Element::parse(s.bytes(), NS_SERVER, &[("stream", NS_STREAMS)])
                .ok()
                .is_some_and(|e| e.child("ping", "urn:xmpp:ping").is_some());
        let env = Envelope::new(s, from, to);
        if is_ping {
            let reply = StanzaBuilder::new("iq")
                .attr("type", "result")
                .attr("id", env.stanza.id().as_deref().unwrap_or_default())
                .attr("from", &env.to.to_string())
                .attr("to", &env.from.to_string())
                .build();
            self.shared
                .router
                .route_nowait(Envelope::new(reply, env.to.clone(), env.from.clone()));
        } else if let Some(b) = env.bounce(crate::error::StanzaCondition::ServiceUnavailable, None)
        {
            self.shared.router.route_nowait(b);
        }
    }

    async fn run(&mut self, actions: Vec<InAction>) {
        // Take the connection_limit and partner_connection_limit slots
        // before anything of the batch is sent: refusing after `<success/>`
        // would put the stream error where the peer expects a restarted
        // stream header. The pre-authentication slot goes back once the
        // stream holds its connection slot.
        for a in &actions {
            if let InAction::Authenticated { remote, method, .. } = a {
                if !self.holds_slot {
                    if !self.shared.acquire_connection() {
                        self.metrics.auth(Some(*method), false);
                        crate::events::s2s::ConnectionLimitReached { remote }.emit();
                        self.close(StreamError::with_text(
                            StreamCondition::PolicyViolation,
                            "connection limit reached",
                        ))
                        .await;
                        return;
                    }
                    self.holds_slot = true;
                    self.pre_auth = None;
                }
                if self.domains.contains(&self.shared.partner_key(remote)) {
                    continue;
                }
                let Some(key) = self.shared.acquire_partner(remote) else {
                    self.metrics.auth(Some(*method), false);
                    self.close(StreamError::with_text(
                        StreamCondition::PolicyViolation,
                        "too many connections from your domain",
                    ))
                    .await;
                    return;
                };
                self.domains.push(key);
            }
        }
        let mut queue: std::collections::VecDeque<InAction> = actions.into();
        while let Some(a) = queue.pop_front() {
            if self.done {
                return;
            }
            match a {
                InAction::Send(s) => {
                    if s.starts_with("<?xml") || s.starts_with("<stream:stream") {
                        self.header_sent = true;
                    }
                    self.write(Bytes::from(s)).await;
                }
                InAction::StartTls => queue.extend(self.start_tls_now().await),
                InAction::RestartStream => self.conn.framer().reset(),
                InAction::VerifyDialback {
                    originating,
                    receiving,
                    stream_id,
                    key,
                } => {
                    if self.pending_dialback >= self.shared.config.s2s.max_pending_dialback {
                        self.over_cap(
                            crate::events::daemon::Cap::S2sPendingDialback,
                            "too many dialback requests at once",
                        )
                        .await;
                        return;
                    }
                    queue.extend(self.verify_dialback(originating, receiving, stream_id, key))
                }
                InAction::Authenticated {
                    remote,
                    local,
                    method,
                } => {
                    // The domain's slot was taken before the batch ran.
                    let partner = self.shared.partner(&remote);
                    let first = self.deadline.is_some();
                    self.keep_alive =
                        partner.as_ref().is_none_or(|p| p.keep_alive) && (first || self.keep_alive);
                    self.last_write = Instant::now();
                    self.metrics.relabel(&self.shared.policy.get(), &remote);
                    self.metrics.set_state("up");
                    self.deadline = None;
                    self.conn
                        .framer()
                        .set_max_stanza_size(self.shared.config.gateway.max_stanza_size);
                    crate::events::s2s::InboundAuthenticated {
                        remote: &remote,
                        local: &local,
                        peer: &self.peer,
                        method,
                    }
                    .emit(&self.metrics);
                }
                InAction::Fail(e) => self.close(e).await,
                InAction::PeerStreamError(e) => {
                    crate::events::s2s::InboundPeerError {
                        peer: &self.peer,
                        error: &e,
                    }
                    .emit();
                    self.finish(Bytes::from_static(b"</stream:stream>")).await;
                }
            }
        }
    }

    /// XEP-0198 on an authenticated inbound stream: the peer may enable
    /// acks, ask for them (`<r/>` → `<a h/>`), and resume the count of a
    /// stream of the same domain pair whose connection died. Nothing is
    /// sent to the peer on this stream that it would count, so its `<a/>`
    /// is only noted.
    async fn stream_management(&mut self, s: &Stanza) {
        let cfg = &self.shared.config.s2s;
        let (on, timeout) = (cfg.stream_management, cfg.resume_timeout);
        let Ok(el) = parse_element(s, self.conn.framer().stream_prefixes()) else {
            return self
                .close(StreamError::new(StreamCondition::NotWellFormed))
                .await;
        };
        match s.local_name() {
            "enable" if on && self.sm_in.is_none() => {
                let Some((remote, local)) = self.neg.authenticated().first().cloned() else {
                    return;
                };
                let resume = matches!(el.attr("resume"), Some("true" | "1"));
                let sm = self
                    .shared
                    .sm
                    .enable(self.id, &remote, &local, resume, timeout);
                crate::events::s2s::SmEnabled { peer: &self.peer }.emit();
                let answer = match sm.id() {
                    Some(id) => format!(
                        "<enabled xmlns='{NS_SM}' id='{id}' resume='true' max='{}'/>",
                        timeout.as_secs()
                    ),
                    None => format!("<enabled xmlns='{NS_SM}'/>"),
                };
                self.sm_in = Some(sm);
                self.write(Bytes::from(answer)).await;
            }
            "resume" if on && self.sm_in.is_none() => {
                let previd = el.attr("previd").unwrap_or_default().to_string();
                match self
                    .shared
                    .sm
                    .resume(&previd, self.id, self.neg.authenticated(), timeout)
                {
                    Ok(r) => {
                        if let Some(old) = r.previous.and_then(|id| self.shared.inbound.get(id)) {
                            let _ = old.tell(Superseded).try_send();
                        }
                        crate::events::s2s::SmResumed {
                            peer: &self.peer,
                            h: r.h,
                        }
                        .emit();
                        self.sm_in = Some(r.sm);
                        self.write(Bytes::from(format!(
                            "<resumed xmlns='{NS_SM}' previd='{}' h='{}'/>",
                            crate::xml::escape::escape_attr(&previd),
                            r.h
                        )))
                        .await;
                    }
                    Err(why) => {
                        crate::events::s2s::SmResumeRefused {
                            peer: &self.peer,
                            why: why.label(),
                        }
                        .emit();
                        self.write(Bytes::from(format!(
                            "<failed xmlns='{NS_SM}'><item-not-found xmlns='{NS_STANZAS}'/></failed>"
                        )))
                        .await;
                    }
                }
            }
            "r" => match &self.sm_in {
                Some(sm) => {
                    let h = sm.h();
                    crate::events::s2s::SmAckSent { peer: &self.peer }.emit();
                    self.write(Bytes::from(format!("<a xmlns='{NS_SM}' h='{h}'/>")))
                        .await
                }
                None => {
                    self.close(StreamError::with_text(
                        StreamCondition::UnsupportedStanzaType,
                        "<r/> before <enable/>",
                    ))
                    .await
                }
            },
            "a" => {}
            _ => {
                self.write(Bytes::from(format!(
                    "<failed xmlns='{NS_SM}'><unexpected-request xmlns='{NS_STANZAS}'/></failed>"
                )))
                .await
            }
        }
    }

    async fn write(&mut self, b: Bytes) {
        if !self.conn.can_read() {
            // Closed: nothing to write to.
            return;
        }
        if self.conn.send(b).await.is_err() {
            self.done = true;
            return;
        }
        self.last_write = Instant::now();
    }

    /// Server-side TLS handshake; returns the machine's follow-up actions.
    async fn start_tls_now(&mut self) -> Vec<InAction> {
        let acceptor = tokio_rustls::TlsAcceptor::from(self.shared.identity.server_tls.clone());
        let budget = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(self.shared.config.gateway.stream_establishment_timeout);
        let handshake = |tcp| async move {
            match tokio::time::timeout(budget, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Ok(Transport::Tls(Box::new(tls))),
                _ => Err(()),
            }
        };
        match self.conn.start_tls(handshake).await {
            Ok(()) => {
                let peer = self
                    .conn
                    .peer_certificates()
                    .map(|c| self.shared.identity.verifier.identity(c));
                self.header_sent = false;
                self.neg
                    .handle(InInput::TlsEstablished { peer }, &Ctx(&self.shared))
            }
            Err(StartTlsError::Injected) => {
                self.close(crate::transport::injection_error()).await;
                Vec::new()
            }
            Err(_) => {
                self.done = true;
                Vec::new()
            }
        }
    }

    /// Asks `originating`'s authoritative server about `key` on a
    /// connection of its own; the answer comes back as [`DialbackChecked`].
    /// Returns the machine's actions when no connection may be opened.
    fn verify_dialback(
        &mut self,
        originating: String,
        receiving: String,
        stream_id: String,
        key: String,
    ) -> Vec<InAction> {
        let (shared, me) = (self.shared.clone(), self.me.clone());
        // The verification connection is one of ours like any other: it
        // counts against connection_limit, so a flood of db:result from
        // many claimed domains cannot make us open connections without end.
        // And it is one of max_pending_dialback_total, which bounds the
        // tasks and messages a flood of keys can make however many
        // connection slots are free.
        let limit = shared.config.s2s.max_pending_dialback_total as usize;
        let granted = if !shared.slots.acquire_dialback(limit) {
            crate::events::daemon::CapReached {
                cap: crate::events::daemon::Cap::S2sPendingDialbackTotal,
                peer: &self.peer,
            }
            .emit();
            None
        } else {
            let pending = PendingDialback(shared.clone());
            match shared.connection_slot() {
                Some(slot) => Some((pending, slot)),
                None => {
                    crate::events::s2s::VerifyConnectionLimitReached {
                        originating: &originating,
                    }
                    .emit();
                    None
                }
            }
        };
        let Some(slots) = granted else {
            let input = InInput::DialbackFailed {
                originating,
                receiving,
                condition: crate::error::StanzaCondition::ResourceConstraint,
            };
            return self.neg.handle(input, &Ctx(&self.shared));
        };
        self.pending_dialback += 1;
        tokio::spawn(async move {
            let _slots = slots;
            let mode = OutMode::Verify {
                receiving: receiving.clone(),
                originating: originating.clone(),
                stream_id,
                key,
            };
            let result =
                match connect_and_negotiate(shared, receiving.clone(), originating.clone(), mode)
                    .await
                {
                    Ok(est) => Ok(est.verified.unwrap_or(false)),
                    Err(e) => {
                        crate::events::s2s::DialbackVerifyFailed {
                            originating: &originating,
                            error: &e,
                        }
                        .emit();
                        Err(e.bounce_condition())
                    }
                };
            let _ = me
                .tell(DialbackChecked {
                    originating,
                    receiving,
                    result,
                })
                .await;
        });
        Vec::new()
    }

    async fn close(&mut self, e: StreamError) {
        if self.done {
            return;
        }
        self.shared
            .metrics
            .stream_error(e.condition, &self.peer, e.text.as_deref());
        let tail = stream_error_tail(&e, self.header_sent);
        self.finish(Bytes::from(tail)).await;
    }

    async fn finish(&mut self, tail: Bytes) {
        self.done = true;
        self.conn.close(tail, CLOSE).await;
    }
}
