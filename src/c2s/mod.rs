//! Local user sessions: the listener and one kameo actor per connection.
//!
//! The actor reads its own socket (in `Actor::next`, raced against its
//! mailbox), frames the bytes, drives the sans-IO negotiation in
//! [`crate::stream::c2s`], and once bound hands stanzas to router shards.
//! Writes go through the session's writer task, which shards also feed
//! directly. The actor owns: stream state, the `from` check, and answering
//! IQs addressed to the server. It must not hold presence or roster state:
//! that is the shard's.

mod sm;
pub mod throttle;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use kameo::Actor;
use kameo::actor::{ActorRef, Spawn, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible};
use kameo::mailbox::{MailboxReceiver, Signal};
use kameo::message::{Context, Message};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;

pub use crate::transport::Transport;
use crate::transport::{Connection, Linger, StartTlsError};

use crate::error::{StanzaCondition, StreamCondition, StreamError};
use crate::events::Metrics;
use crate::events::c2s as events;
use crate::jid::{BareJid, FullJid, Jid};
use crate::router::{Bind, CloseSession, Envelope, FromSession, Router, Unbind, Unsent};
use crate::storage::Store;
use crate::stream::c2s::{
    Action, BindFailure, C2sNegotiation, C2sPolicy, CredentialSource, Input, bind_error,
    bind_result,
};
use crate::stream::scram::Credentials;
use crate::transport::writer::{Queue, QueueLimits};
use crate::xml::build::error_reply;
use crate::xml::element::Element;
use crate::xml::escape::escape_attr;
use crate::xml::ns::{NS_CLIENT, NS_DISCO_INFO, NS_PING, NS_ROSTER, NS_SESSION, NS_STREAMS};
use crate::xml::{FramerEvent, Stanza, StanzaKind};
pub use sm::{Adopt, Adopted};
use throttle::LoginThrottle;
use tokio::sync::mpsc::error::TrySendError;

/// A closing stream may take `write` (5 s) to flush to a peer that does
/// not read, then keeps draining its peer for 2 s or 4 MiB.
const LINGER: Linger = Linger {
    write: Duration::from_secs(5),
    drain: Duration::from_secs(2),
    drain_bytes: 4 * 1024 * 1024,
    total: Duration::MAX,
};
/// The peer went away: what is queued gets a moment, no more.
const GONE: Linger = Linger::no_drain(Duration::from_millis(100));

/// What every c2s session shares.
pub struct C2sShared {
    pub router: Router,
    pub store: Arc<dyn Store>,
    pub metrics: Arc<Metrics>,
    pub tls: Option<TlsAcceptor>,
    pub policy: C2sPolicy,
    pub max_stanza_pre_auth: usize,
    pub max_stanza: usize,
    /// Bounds of each session's writer queue (`gateway.session_queue_bytes`).
    pub session_queue: QueueLimits,
    /// Read shaping per client, bytes per second (`gateway.c2s_rate_limit`).
    pub rate_limit: u64,
    pub establishment_timeout: Duration,
    /// `server.write_timeout`
    pub write_timeout: Duration,
    pub next_id: AtomicU64,
    /// Failed logins per account and per address, across connections.
    pub throttle: LoginThrottle,
    /// `connection_limit` and `connection_limit_per_ip`.
    pub caps: Arc<crate::transport::ConnCaps>,
    /// `idle_timeout`: silence after bind before a ping, and as long again
    /// for anything to come back.
    pub idle_timeout: Duration,
    /// `resume_timeout`: how long a detached session waits to be resumed.
    pub resume_timeout: Duration,
    /// Sessions a client may resume (XEP-0198), by their `<enabled/>` id.
    pub resumable: dashmap::DashMap<String, ActorRef<C2sSession>>,
    /// With `s2s.durable_queue`: the store writer, whose commit of
    /// everything submitted so far (the outbound journal entries of what
    /// the client sent) comes before the client's `<a h/>`.
    pub durable: Option<crate::storage::StoreWriter>,
}

/// The store as the negotiation sees it, with the failed-login throttle
/// for this client's address in front of it.
struct Guarded<'a> {
    store: &'a dyn Store,
    throttle: &'a LoginThrottle,
    peer: SocketAddr,
}

fn guard(shared: &C2sShared, peer: SocketAddr) -> Guarded<'_> {
    Guarded {
        store: &*shared.store,
        throttle: &shared.throttle,
        peer,
    }
}

impl CredentialSource for Guarded<'_> {
    fn lookup(&self, user: &BareJid) -> Option<Credentials> {
        self.store.lookup(user)
    }

    fn may_attempt(&self, user: &BareJid) -> bool {
        self.throttle.check(self.peer.ip(), user).is_none()
    }
}

/// Accepts connections on `listener` until the task is dropped.
/// A connection over `connection_limit` or `connection_limit_per_ip` is
/// answered `<resource-constraint/>` (if the socket takes it at once) and
/// closed, before any actor exists for it.
pub async fn accept_loop(listener: TcpListener, shared: Arc<C2sShared>) {
    crate::transport::accept_loop(listener, "c2s", |tcp, peer| {
        match shared.caps.acquire(peer.ip()) {
            Ok(slot) => {
                C2sSession::spawn((tcp, peer, shared.clone(), slot));
            }
            Err(over) => {
                use crate::events::daemon::{Cap, CapReached};
                let cap = match over {
                    crate::transport::Over::Total => Cap::C2sGlobal,
                    crate::transport::Over::PerIp => Cap::C2sPerIp,
                };
                CapReached { cap, peer: &peer }.emit();
                let e = StreamError::with_text(
                    StreamCondition::ResourceConstraint,
                    "too many connections",
                );
                let tail = format!(
                    "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}' version='1.0'>{}</stream:stream>",
                    e.to_xml()
                );
                let _ = tcp.try_write(tail.as_bytes());
            }
        }
    })
    .await
}

/// The actor is a box around its state: kameo's task keeps up to three
/// copies of an actor value in its future (start result, running state,
/// stopped actor), so a 700-byte struct would cost each idle session 2 KiB.
pub struct C2sSession(Box<Session>);

struct Session {
    id: u64,
    peer: SocketAddr,
    shared: Arc<C2sShared>,
    me: ActorRef<C2sSession>,
    /// Whole while negotiating; split once bound (the shards then write
    /// through its writer task).
    conn: Connection,
    neg: C2sNegotiation,
    header_sent: bool,
    jid: Option<FullJid>,
    jid_str: Option<Arc<str>>,
    /// Negotiation must finish by then.
    deadline: Option<Instant>,
    /// The last time anything was read (for `idle_timeout`).
    last_read: Instant,
    /// When the idle ping went out, unanswered so far.
    pinged: Option<Instant>,
    /// This connection's `connection_limit` slot, given back on drop.
    _slot: crate::transport::CapSlot,
    done: bool,
    /// The client ended the stream itself (`</stream:stream>`).
    closed_by_client: bool,
    /// XEP-0198: stanzas received since `<enable/>`, mod 2^32.
    sm_in: Option<u32>,
    /// The session's queue, once bound (it outlives a connection that
    /// Stream Management resumes).
    out: Option<Queue>,
    /// XEP-0198: the id a client resumes this session with.
    sm_id: Option<String>,
    /// The connection died and the session waits until then to be resumed.
    detached_until: Option<Instant>,
    /// How long it waits: `c2s.resume_timeout`, or less if the client's
    /// `<enable max/>` asked for less.
    resume_timeout: Duration,
}

impl Actor for C2sSession {
    type Args = (
        TcpStream,
        SocketAddr,
        Arc<C2sShared>,
        crate::transport::CapSlot,
    );
    type Error = Infallible;

    async fn on_start(
        (tcp, peer, shared, slot): Self::Args,
        me: ActorRef<Self>,
    ) -> Result<Self, Infallible> {
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        shared.metrics.c2s_connections.increment(1.0);
        let sid = crate::random::hex(8);
        let policy = shared.policy.clone();
        let mut session = Box::new(Session {
            id,
            peer,
            me,
            conn: Connection::new(
                Transport::Plain(tcp),
                NS_CLIENT,
                shared.max_stanza_pre_auth,
                shared.metrics.clone(),
            )
            .with_write_timeout(shared.write_timeout),
            neg: C2sNegotiation::new(policy, sid.clone().unwrap_or_default()),
            header_sent: false,
            jid: None,
            jid_str: None,
            deadline: Some(Instant::now() + shared.establishment_timeout),
            last_read: Instant::now(),
            pinged: None,
            _slot: slot,
            done: false,
            closed_by_client: false,
            sm_in: None,
            out: None,
            sm_id: None,
            detached_until: None,
            resume_timeout: shared.resume_timeout,
            shared,
        });
        session.conn.set_read_rate(session.shared.rate_limit);
        if sid.is_err() {
            // Fail closed: no stream with a predictable id.
            crate::events::daemon::RandomUnavailable { what: "stream id" }.emit();
            session
                .close(StreamError::new(StreamCondition::InternalServerError))
                .await;
        }
        Ok(C2sSession(session))
    }

    async fn next(
        &mut self,
        _me: WeakActorRef<Self>,
        rx: &mut MailboxReceiver<Self>,
    ) -> Result<Option<Signal<Self>>, Infallible> {
        self.0.next(rx).await
    }

    async fn on_stop(
        &mut self,
        _me: WeakActorRef<Self>,
        _reason: ActorStopReason,
    ) -> Result<(), Infallible> {
        self.0.on_stop().await;
        Ok(())
    }
}

impl Message<CloseSession> for C2sSession {
    type Reply = ();

    async fn handle(&mut self, m: CloseSession, _: &mut Context<Self, ()>) {
        self.0.close(m.0).await;
    }
}

impl Message<Adopt> for C2sSession {
    type Reply = Adopted;

    async fn handle(&mut self, m: Adopt, _: &mut Context<Self, Adopted>) -> Adopted {
        self.0.adopt(m).await
    }
}

impl Session {
    async fn next(
        &mut self,
        rx: &mut MailboxReceiver<C2sSession>,
    ) -> Result<Option<Signal<C2sSession>>, Infallible> {
        loop {
            if self.done {
                return Ok(None);
            }
            let deadline = self
                .deadline
                .or(self.detached_until)
                .or_else(|| self.idle_deadline());
            let attached = self.detached_until.is_none();
            tokio::select! {
                biased;
                sig = rx.recv() => return Ok(sig),
                // Boxed: the handling future is large (TLS handshake, bind)
                // and would otherwise sit in every idle session's task.
                r = self.conn.read(), if attached => Box::pin(self.on_read(r)).await,
                _ = sleep_until(deadline) => Box::pin(self.on_deadline()).await,
            }
        }
    }

    /// After bind: when the idle ping is due, or, once it went out, when
    /// the session is given up.
    fn idle_deadline(&self) -> Option<Instant> {
        if !self.neg.is_established() {
            return None;
        }
        let idle = self.shared.idle_timeout;
        Some(match self.pinged {
            None => self.last_read + idle,
            Some(at) => at + idle,
        })
    }

    async fn on_deadline(&mut self) {
        if self.detached_until.is_some() {
            // Not resumed in time: what it never acknowledged goes to the
            // user's other sessions or offline storage.
            events::SmResumeExpired { peer: &self.peer }.emit();
            self.end(Bytes::new(), GONE).await;
            return;
        }
        let give_up = if self.deadline.is_some() {
            Some("stream negotiation took too long")
        } else if self.pinged.is_some() {
            Some("no answer to the idle ping")
        } else {
            None
        };
        if let Some(text) = give_up {
            return self
                .close(StreamError::with_text(
                    StreamCondition::ConnectionTimeout,
                    text,
                ))
                .await;
        }
        self.pinged = Some(Instant::now());
        events::IdlePing { peer: &self.peer }.emit();
        let (to, from) = match &self.jid {
            Some(j) => (j.to_string(), j.domain().to_owned()),
            None => return,
        };
        let ping = format!(
            "<iq type='get' id='idle-{}' from='{}' to='{}'><ping xmlns='{NS_PING}'/></iq>",
            self.id,
            escape_attr(&from),
            escape_attr(&to)
        );
        // Never waits: a client whose queue is full is not reading, and the
        // close after the grace (or the write deadline) settles it.
        if let Some(q) = self.conn.queue() {
            let _ = q.try_send(Bytes::from(ping).into());
        }
    }

    async fn on_stop(&mut self) {
        if !self.done {
            // Stopped from outside (shutdown): say so on the wire.
            Box::pin(self.close(StreamError::new(StreamCondition::SystemShutdown))).await;
        }
        self.shared.metrics.c2s_connections.decrement(1.0);
        if let Some(jid) = self.jid.take() {
            self.shared.metrics.c2s_sessions.decrement(1.0);
            let shard = self.shared.router.shard(jid.bare()).clone();
            let _ = shard
                .tell(Unbind {
                    jid,
                    id: self.id,
                    closed_by_client: self.closed_by_client,
                })
                .await;
        }
    }
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

impl Session {
    async fn on_read(&mut self, r: std::io::Result<usize>) {
        match r {
            Ok(0) | Err(_) => {
                // The peer went away without closing the stream.
                if self.sm_id.is_some() && self.out.is_some() {
                    self.detach().await;
                } else {
                    self.end(Bytes::new(), GONE).await;
                }
                return;
            }
            Ok(_) => {
                self.last_read = Instant::now();
                self.pinged = None;
            }
        }
        while !self.done {
            match self.conn.framer().next() {
                Ok(None) => break,
                Ok(Some(FramerEvent::StreamOpen(h))) => {
                    let actions = self
                        .neg
                        .handle(Input::StreamOpen(&h), &guard(&self.shared, self.peer));
                    self.run(actions).await;
                }
                Ok(Some(FramerEvent::Stanza(s))) => {
                    self.shared.metrics.stanza_in(s.kind());
                    if self.neg.is_established() {
                        self.on_stanza(s).await;
                    } else {
                        let actions = self
                            .neg
                            .handle(Input::Element(&s), &guard(&self.shared, self.peer));
                        self.run(actions).await;
                    }
                }
                Ok(Some(FramerEvent::StreamClose)) => {
                    self.closed_by_client = true;
                    self.close_clean().await;
                }
                Err(e) => self.close(e).await,
            }
        }
    }

    async fn run(&mut self, actions: Vec<Action>) {
        let mut queue: std::collections::VecDeque<Action> = actions.into();
        while let Some(a) = queue.pop_front() {
            if self.done {
                return;
            }
            match a {
                Action::Send(s) => {
                    if s.starts_with("<?xml") {
                        self.header_sent = true;
                    }
                    self.send(Bytes::from(s)).await;
                }
                Action::StartTls => queue.extend(self.start_tls().await),
                Action::RestartStream => self.conn.framer().reset(),
                Action::Authenticated(user) => {
                    events::Authenticated {
                        user: &user,
                        peer: &self.peer,
                    }
                    .emit(&self.shared.metrics);
                }
                Action::Bind { requested, iq_id } => {
                    queue.extend(self.bind(requested, iq_id).await)
                }
                Action::Established(jid) => {
                    self.deadline = None;
                    self.conn
                        .framer()
                        .set_max_stanza_size(self.shared.max_stanza);
                    events::SessionEstablished {
                        jid: &jid,
                        peer: &self.peer,
                    }
                    .emit(&self.shared.metrics);
                }
                Action::AuthFailed(user) => {
                    events::AuthFailed.emit(&self.shared.metrics);
                    let throttle = &self.shared.throttle;
                    for e in throttle.failed(self.peer.ip(), user.as_ref()) {
                        events::AuthThrottleEngaged {
                            scope: e.scope.as_str(),
                            subject: &e.subject,
                            window: throttle.window(),
                        }
                        .emit();
                    }
                }
                Action::AuthThrottled(user) => {
                    let scope = self.shared.throttle.check(self.peer.ip(), &user);
                    events::AuthThrottled {
                        scope: scope.unwrap_or(throttle::Scope::Account).as_str(),
                        user: &user,
                        peer: &self.peer,
                    }
                    .emit(&self.shared.metrics);
                }
                Action::Fail(e) => self.close(e).await,
                Action::Resume { previd, h } => self.resume(previd, h).await,
            }
        }
    }

    /// Writes bytes: directly while negotiating, through the writer once
    /// bound. There it never waits: the session's own answers (pings,
    /// roster results) share the queue with what shards deliver, and a
    /// client that sends without reading would otherwise leave the session
    /// parked on a full queue, deaf to `CloseSession` and to its own
    /// stream. Such a client is a slow consumer and is closed.
    async fn send(&mut self, b: Bytes) {
        if let Some(q) = self.conn.queue() {
            match q.try_send(b.into()) {
                Ok(()) => {}
                Err(TrySendError::Full(_)) => {
                    self.shared.metrics.slow_consumer_closed.increment(1);
                    self.close(crate::router::slow_consumer()).await;
                }
                Err(TrySendError::Closed(_)) => self.done = true,
            }
            return;
        }
        if self.conn.send(b).await.is_err() {
            self.done = true;
        }
    }

    /// Runs the handshake; returns the machine's follow-up actions.
    async fn start_tls(&mut self) -> Vec<Action> {
        let acceptor = self.shared.tls.clone();
        let budget = self
            .deadline
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(self.shared.establishment_timeout);
        let handshake = |tcp| async move {
            // No acceptor: STARTTLS was never offered; just end.
            let acceptor = acceptor.ok_or(None)?;
            match tokio::time::timeout(budget, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => Ok(Transport::Tls(Box::new(tls))),
                Ok(Err(e)) => Err(Some(e)),
                Err(_) => Err(None),
            }
        };
        match self.conn.start_tls(handshake).await {
            Ok(()) => {
                self.header_sent = false;
                self.neg
                    .handle(Input::TlsEstablished, &guard(&self.shared, self.peer))
            }
            Err(StartTlsError::Injected) => {
                self.close(crate::transport::injection_error()).await;
                Vec::new()
            }
            Err(e) => {
                if let StartTlsError::Handshake(Some(e)) = e {
                    events::TlsHandshakeFailed {
                        peer: &self.peer,
                        error: &e,
                    }
                    .emit();
                }
                self.done = true;
                Vec::new()
            }
        }
    }

    /// Binds through the user's shard; returns the machine's follow-up actions.
    async fn bind(&mut self, requested: Option<String>, iq_id: String) -> Vec<Action> {
        let Some(out) = self.conn.split(self.shared.session_queue) else {
            self.done = true;
            return Vec::new();
        };
        self.out = Some(out.clone());
        let user = self.neg_user();
        let Some(user) = user else {
            self.done = true;
            return Vec::new();
        };
        let shard = self.shared.router.shard(&user).clone();
        let reply = shard
            .ask(Bind {
                user,
                requested,
                id: self.id,
                out,
                control: self.me.clone().recipient::<CloseSession>(),
            })
            .await;
        let outcome = match reply {
            Ok((jid, jid_str)) => {
                self.send(Bytes::from(bind_result(&iq_id, &jid))).await;
                self.jid = Some(jid.clone());
                self.jid_str = Some(jid_str);
                Ok(jid)
            }
            Err(kameo::error::SendError::HandlerError(crate::router::BindError::BadResource(
                _,
            ))) => {
                self.send(Bytes::from(bind_error(&iq_id, "bad-request", "modify")))
                    .await;
                Err(BindFailure::BadResource)
            }
            Err(_) => {
                self.send(Bytes::from(bind_error(
                    &iq_id,
                    "internal-server-error",
                    "wait",
                )))
                .await;
                Err(BindFailure::Internal)
            }
        };
        self.neg
            .handle(Input::Bound(outcome), &guard(&self.shared, self.peer))
    }

    fn neg_user(&self) -> Option<BareJid> {
        self.neg.user().cloned()
    }

    /// Sends the stream error and the stream close, and ends the session.
    async fn close(&mut self, e: StreamError) {
        self.close_with(e, "").await
    }

    /// [`C2sSession::close`] with an application-specific condition
    /// element in the stream error (RFC 6120 §4.9.4).
    async fn close_with(&mut self, e: StreamError, app: &str) {
        if self.done {
            return;
        }
        self.shared
            .metrics
            .stream_error(e.condition, &self.peer, e.text.as_deref());
        let mut tail = String::new();
        if !self.header_sent {
            // RFC 6120 §4.9.1.2: an error before our header still needs one.
            let domain = self
                .neg
                .domain()
                .or(self.shared.policy.domains.first().map(|s| s.as_str()))
                .unwrap_or("");
            tail.push_str(&format!(
                "<?xml version='1.0'?><stream:stream xmlns='{NS_CLIENT}' xmlns:stream='{NS_STREAMS}' from='{}' version='1.0'>",
                escape_attr(domain)
            ));
        }
        tail.push_str(&e.to_xml_with(app));
        tail.push_str("</stream:stream>");
        self.finish(Bytes::from(tail)).await;
    }

    /// The peer closed its stream: close ours.
    async fn close_clean(&mut self) {
        self.finish(Bytes::from_static(b"</stream:stream>")).await;
    }

    async fn finish(&mut self, tail: Bytes) {
        self.end(tail, LINGER).await;
    }

    /// Closes the connection (`tail` last, within `linger`).
    async fn end(&mut self, tail: Bytes, linger: Linger) {
        self.done = true;
        self.detached_until = None;
        if let Some(id) = self.sm_id.take() {
            self.shared.resumable.remove(&id);
        }
        self.conn.close_keeping_queue(tail, linger).await;
        // Closed for good: shards see the session gone, and what it never
        // wrote (or, under Stream Management, had acknowledged) comes back.
        let unsent = self
            .out
            .as_ref()
            .map(Queue::close_and_take)
            .unwrap_or_default();
        // Messages the client never got go back to its shard (before the
        // unbind, on the same mailbox) to be stored offline.
        if let Some(jid) = &self.jid
            && !unsent.is_empty()
        {
            let shard = self.shared.router.shard(jid.bare()).clone();
            let _ = shard
                .tell(Unsent {
                    jid: jid.clone(),
                    frames: unsent,
                })
                .await;
        }
    }

    // ---- the live session ----

    async fn on_stanza(&mut self, s: Stanza) {
        let (Some(jid), Some(jid_str)) = (self.jid.clone(), self.jid_str.clone()) else {
            return;
        };
        let kind = s.kind();
        if kind == StanzaKind::Other && self.stream_management(&s).await {
            return;
        }
        if let Some(h) = &mut self.sm_in
            && kind != StanzaKind::Other
        {
            *h = h.wrapping_add(1);
        }
        if kind == StanzaKind::Other {
            return self
                .close(StreamError::with_text(
                    StreamCondition::UnsupportedStanzaType,
                    format!("<{}/> is not a stanza", s.name()),
                ))
                .await;
        }
        // RFC 6120 §8.1.2.1: the server stamps `from`; a client may only
        // repeat its own full or bare JID.
        if let Some(f) = s.from() {
            let ok = match Jid::parse(&f) {
                Ok(Jid::Full(fj)) => fj == jid,
                Ok(Jid::Bare(b)) => b == *jid.bare(),
                Err(_) => false,
            };
            if !ok {
                return self
                    .close(StreamError::with_text(
                        StreamCondition::InvalidFrom,
                        "the from address does not match the session",
                    ))
                    .await;
            }
        }
        let to = match s.to() {
            None => None,
            Some(t) => match Jid::parse(&t) {
                Ok(j) => Some(j),
                Err(_) => {
                    self.reply_error(&s, &jid_str, StanzaCondition::JidMalformed)
                        .await;
                    return;
                }
            },
        };
        let own = jid.bare().clone();
        match kind {
            StanzaKind::Presence => {
                let shard = self.shared.router.shard(&own).clone();
                let _ = shard
                    .tell(FromSession {
                        from: jid,
                        stanza: s,
                    })
                    .await;
            }
            StanzaKind::Message => {
                let target = to.unwrap_or_else(|| Jid::Bare(own.clone()));
                if target.bare().is_domain() && self.shared.router.is_local_domain(target.domain())
                {
                    self.reply_error(&s, &jid_str, StanzaCondition::ServiceUnavailable)
                        .await;
                    return;
                }
                self.shared
                    .router
                    .route(Envelope::new(s, Jid::Full(jid), target))
                    .await;
            }
            StanzaKind::Iq => {
                let for_server = match &to {
                    None => true,
                    Some(Jid::Bare(b)) => {
                        *b == own
                            || (b.is_domain() && self.shared.router.is_local_domain(b.domain()))
                    }
                    Some(Jid::Full(_)) => false,
                };
                if for_server {
                    self.server_iq(jid, &jid_str, s, to).await;
                } else if let Some(target) = to {
                    self.shared
                        .router
                        .route(Envelope::new(s, Jid::Full(jid), target))
                        .await;
                }
            }
            StanzaKind::Other => {}
        }
    }

    async fn reply_error(&mut self, s: &Stanza, jid_str: &str, cond: StanzaCondition) {
        if s.type_().as_deref() == Some("error") {
            return;
        }
        let to = s.to();
        let b = error_reply(
            s.name(),
            s.id().as_deref(),
            Some(jid_str),
            to.as_deref(),
            cond,
            None,
        );
        self.send(b.into_bytes()).await;
    }

    /// IQs the server answers itself, or on the user's behalf.
    async fn server_iq(&mut self, jid: FullJid, jid_str: &str, s: Stanza, to: Option<Jid>) {
        let ty = s.type_().map(|t| t.into_owned());
        if !matches!(ty.as_deref(), Some("get") | Some("set")) {
            if !matches!(ty.as_deref(), Some("result") | Some("error")) {
                self.reply_error(&s, jid_str, StanzaCondition::BadRequest)
                    .await;
            }
            return;
        }
        let Ok(el) = Element::parse(s.bytes(), NS_CLIENT, &[("stream", NS_STREAMS)]) else {
            self.reply_error(&s, jid_str, StanzaCondition::BadRequest)
                .await;
            return;
        };
        let Some(payload) = el.children.iter().find_map(|n| match n {
            crate::xml::element::Node::Element(e) => Some(e),
            _ => None,
        }) else {
            self.reply_error(&s, jid_str, StanzaCondition::BadRequest)
                .await;
            return;
        };
        let id = escape_attr(el.attr("id").unwrap_or_default()).into_owned();
        let from_attr = match &to {
            Some(t) => format!(" from='{}'", escape_attr(&t.to_string())),
            None => String::new(),
        };
        let result = |body: &str| {
            Bytes::from(format!(
                "<iq type='result' id='{id}' to='{}'{from_attr}>{body}</iq>",
                escape_attr(jid_str)
            ))
        };
        match (payload.ns.as_str(), payload.name.as_str(), ty.as_deref()) {
            (NS_ROSTER, "query", _) => {
                let shard = self.shared.router.shard(jid.bare()).clone();
                let _ = shard
                    .tell(FromSession {
                        from: jid,
                        stanza: s,
                    })
                    .await;
            }
            (NS_PING, "ping", Some("get")) => self.send(result("")).await,
            (NS_SESSION, "session", Some("set")) => self.send(result("")).await,
            (NS_DISCO_INFO, "query", Some("get")) if payload.attr("node").is_none() => {
                let body = if matches!(to, Some(Jid::Bare(ref b)) if !b.is_domain()) {
                    format!(
                        "<query xmlns='{NS_DISCO_INFO}'><identity category='account' type='registered'/>\
                         <feature var='{NS_DISCO_INFO}'/></query>"
                    )
                } else {
                    format!(
                        "<query xmlns='{NS_DISCO_INFO}'><identity category='server' type='im' name='fedrouter'/>\
                         <feature var='{NS_DISCO_INFO}'/><feature var='{NS_PING}'/>\
                         <feature var='{NS_ROSTER}'/><feature var='msgoffline'/>\
                         <feature var='urn:xmpp:delay'/></query>"
                    )
                };
                self.send(result(&body)).await
            }
            _ => {
                self.reply_error(&s, jid_str, StanzaCondition::ServiceUnavailable)
                    .await
            }
        }
    }
}
