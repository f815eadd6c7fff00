//! One actor per (local, remote) domain pair: queues stanzas while the
//! stream is set up, sends them once it is, keeps it alive, closes it when
//! idle, and retries with exponential backoff and jitter when it fails.
//!
//! Queued stanzas are bounced only when retrying cannot help (the domain
//! does not exist), or once they have waited `stream_establishment_timeout`;
//! a stanza arriving during a long backoff triggers a fresh attempt at once
//! rather than being bounced by a stale failure (ejabberd's "bouncing for
//! 289 seconds").

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kameo::Actor;
use kameo::actor::{ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible};
use kameo::mailbox::{MailboxReceiver, Signal};
use kameo::message::{Context, Message};
use tokio::time::Instant;

use super::{ConnectError, Link, S2sShared, silence_limit};
use crate::config::ProxyTarget;
use crate::error::StanzaCondition;
use crate::events::DomainMetrics;
use crate::events::router::{Shed, ShedQueue};
use crate::events::s2s::{
    ConnectionLimitReached, OutboundClose, OutboundClosed, OutboundFailed, OutboundPeerError,
    OutboundUp,
};
use crate::jid::Jid;
use crate::router::Envelope;
use crate::transport::writer::{QueueLimits, presence_share};
use crate::transport::{Connection, Linger};
use crate::xml::ns::NS_SM;
use crate::xml::{Frame, FramerEvent, Stanza, StanzaKind};

mod sm;
use sm::{ENABLE, SmOut};

/// Stanzas waiting per domain while connecting, beside the byte cap
/// `gateway.s2s_queue_bytes`; beyond either, presence is shed and the rest
/// bounces with `resource-constraint` (Prosody keeps 32 768; this is per pair).
pub const MAX_QUEUE: usize = 10_000;
/// Writer queue of an established stream, in frames.
const WRITE_QUEUE: usize = 4096;
/// A new stanza never waits longer than this for a fresh attempt after a
/// failure, however long the backoff has grown.
const MIN_ATTEMPT_GAP: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// A closing stream may take this long to flush; nothing is drained.
const CLOSE: Linger = Linger::no_drain(Duration::from_secs(5));

/// A stanza for the remote domain.
pub struct SendRemote(pub Envelope);

/// One stanza for many contacts in the remote domain (presence broadcast):
/// each copy gets its own `to`, the body bytes are shared.
pub struct SendMany {
    pub stanza: Stanza,
    pub from: Jid,
    pub tos: Vec<Jid>,
    /// When the broadcast was sent, as `Envelope::at`.
    pub at: Instant,
}

/// The domain may no longer federate (a reload): close with
/// `<policy-violation/>`, bounce what waits, and stop.
pub struct PolicyClose;

impl Message<PolicyClose> for OutboundDomain {
    type Reply = ();

    async fn handle(&mut self, _: PolicyClose, _: &mut Context<Self, ()>) {
        self.closed(OutboundClose::NoLongerPartner);
        let err = crate::error::StreamError::with_text(
            crate::error::StreamCondition::PolicyViolation,
            "your domain is no longer an allowed federation partner",
        );
        let tail = format!("{}</stream:stream>", err.to_xml());
        self.disconnect(Some(&tail)).await;
        let queued = self.take_queue();
        for env in queued {
            self.bounce(&env, StanzaCondition::PolicyViolation);
        }
        self.stop = true;
    }
}

/// The policy changed but the domain may still federate (a reload):
/// follow the partner entry in force. The metric label moves if the domain
/// became (or stopped being) a listed partner, and a stream that went to a
/// `proxy_fqdn` that is no longer the route is closed, so the next stanza
/// connects to the new one.
pub struct PolicyRecheck;

impl Message<PolicyRecheck> for OutboundDomain {
    type Reply = ();

    async fn handle(&mut self, _: PolicyRecheck, _: &mut Context<Self, ()>) {
        let policy = self.shared.policy.get();
        self.metrics.relabel(&policy, &self.remote);
        let route = policy
            .partner(&self.remote)
            .and_then(|p| p.proxy_fqdn.clone());
        if matches!(self.state, State::Up) && route != self.route {
            self.closed(OutboundClose::RouteChanged);
            self.disconnect(Some("</stream:stream>")).await;
        }
    }
}

/// What [`OutboundDomain::write_frame`] did with a stanza.
enum Write {
    /// The writer took it.
    Taken,
    /// Dropped or bounced (presence on a full queue).
    Shed,
    /// The writer's queue is full: it waits in the domain's queue.
    Full(Envelope),
    /// The stream is gone: it waits for the next one.
    Closed(Envelope),
}

/// The result of a connection attempt (sent by the attempt's task).
struct Attempt(Result<Link, ConnectError>);

enum State {
    Idle,
    Connecting,
    /// A new stream is up and our `<resume/>` of the lost one awaits the
    /// peer's answer (until the given time): stanzas wait in the queue.
    Resuming(Instant),
    Up,
}

pub struct OutboundDomain {
    local: String,
    remote: String,
    shared: Arc<S2sShared>,
    me: ActorRef<OutboundDomain>,
    metrics: DomainMetrics,
    state: State,
    queue: VecDeque<Envelope>,
    /// Bytes of the stanzas in `queue` (`gateway.s2s_queue_bytes`).
    queued_bytes: usize,
    failures: u32,
    last_attempt: Option<Instant>,
    retry_at: Option<Instant>,
    /// The stream while up: split, written through its writer task.
    link: Option<Connection>,
    /// The last stanza read or written: `stream_inactivity_timeout` runs
    /// from here. Whitespace keepalives either way do not count.
    last_activity: Instant,
    last_write: Instant,
    /// The last byte read, whitespace included: the silence limit
    /// ([`silence_limit`]) runs from here.
    last_read: Instant,
    /// Whether the peer has sent anything since the stream came up. A
    /// receiving server need not write on a stream it did not open
    /// (Prosody writes only after its own read timeout, which our
    /// keepalives never let expire), so the silence limit starts to apply
    /// once the peer has shown it keeps the link alive; before that, a dead
    /// link is found by our keepalive writes failing.
    heard: bool,
    holds_slot: bool,
    /// The partner slot (`connection_limit`) this link holds, by key.
    partner_slot: Option<String>,
    /// The `proxy_fqdn` in force when the current stream was opened.
    route: Option<ProxyTarget>,
    /// The partner's `enable_keep_alive`, read when the stream comes up.
    keep_alive: bool,
    sm: SmOut,
    /// With the outbound journal (`s2s.durable_queue`): every stanza handed
    /// to the current link's writer, in order, with its journal entry and
    /// the writer's frame count once it is written.
    inflight: VecDeque<(Option<u64>, u64)>,
    /// Without Stream Management on the link: resolves once what was
    /// handed to the writer is written, to settle its journal entries.
    written: Option<tokio::sync::oneshot::Receiver<()>>,
    stop: bool,
}

impl Actor for OutboundDomain {
    type Args = (String, String, Arc<S2sShared>);
    type Error = Infallible;

    async fn on_start(
        (local, remote, shared): Self::Args,
        me: ActorRef<Self>,
    ) -> Result<Self, Infallible> {
        let metrics = shared.s2s_metrics.domain(&shared.policy.get(), &remote);
        let now = Instant::now();
        Ok(OutboundDomain {
            local,
            remote,
            shared,
            me,
            metrics,
            state: State::Idle,
            queue: VecDeque::new(),
            queued_bytes: 0,
            failures: 0,
            last_attempt: None,
            retry_at: None,
            link: None,
            last_activity: now,
            last_write: now,
            last_read: now,
            heard: false,
            holds_slot: false,
            partner_slot: None,
            route: None,
            keep_alive: true,
            sm: SmOut::default(),
            inflight: VecDeque::new(),
            written: None,
            stop: false,
        })
    }

    async fn next(
        &mut self,
        _me: WeakActorRef<Self>,
        rx: &mut MailboxReceiver<Self>,
    ) -> Result<Option<Signal<Self>>, Infallible> {
        loop {
            if self.stop {
                return Ok(None);
            }
            let timer = self.next_timer();
            // Stanzas wait for room in the writer: flushed once it has some.
            let waiting = match (&self.state, self.queue.front()) {
                (State::Up, Some(env)) => {
                    // What its frame may take: the stanza and, at most,
                    // two stamped addresses of the longest JID (3071).
                    let len = env.stanza.bytes().len() + 2 * 3072;
                    let q = self.link.as_ref().and_then(|c| c.queue()).cloned();
                    q.map(|q| (q, len))
                }
                _ => None,
            };
            tokio::select! {
                biased;
                sig = rx.recv() => return Ok(sig),
                r = read_more(&mut self.link) => self.on_read(r).await,
                _ = room(waiting) => self.flush(),
                _ = written(&mut self.written) => self.settle_written(),
                _ = sleep_until(timer) => self.on_timer().await,
            }
        }
    }

    async fn on_stop(
        &mut self,
        _me: WeakActorRef<Self>,
        _r: ActorStopReason,
    ) -> Result<(), Infallible> {
        // The daemon is stopping: say so, and answer what never left.
        let err = crate::error::StreamError::new(crate::error::StreamCondition::SystemShutdown);
        let tail = format!("{}</stream:stream>", err.to_xml());
        self.disconnect(Some(&tail)).await;
        let queued = self.take_queue();
        for env in queued {
            if env.journal.is_some() {
                // Journaled: sent again when the daemon starts next.
                continue;
            }
            self.bounce(&env, StanzaCondition::RemoteServerTimeout);
        }
        Ok(())
    }
}

async fn sleep_until(t: Option<Instant>) {
    match t {
        Some(t) => tokio::time::sleep_until(t).await,
        None => std::future::pending().await,
    }
}

async fn written(w: &mut Option<tokio::sync::oneshot::Receiver<()>>) {
    match w.as_mut() {
        Some(rx) => {
            let _ = rx.await;
            *w = None;
        }
        None => std::future::pending().await,
    }
}

async fn room(q: Option<(crate::transport::writer::Queue, usize)>) {
    match q {
        Some((q, len)) => q.room(len).await,
        None => std::future::pending().await,
    }
}

async fn read_more(link: &mut Option<Connection>) -> std::io::Result<usize> {
    match link.as_mut() {
        Some(c) => c.read().await,
        None => std::future::pending().await,
    }
}

impl Message<SendRemote> for OutboundDomain {
    type Reply = ();

    async fn handle(&mut self, SendRemote(env): SendRemote, _: &mut Context<Self, ()>) {
        match self.state {
            // Behind what waits for room in the writer, in order.
            State::Up if self.queue.is_empty() => self.write(env),
            _ => self.enqueue(env),
        }
    }
}

impl Message<SendMany> for OutboundDomain {
    type Reply = ();

    async fn handle(&mut self, m: SendMany, _: &mut Context<Self, ()>) {
        let envelope = |to: Jid| {
            let mut env = Envelope::new(m.stanza.clone(), m.from.clone(), to);
            env.at = m.at;
            env
        };
        if !matches!(self.state, State::Up) {
            for to in m.tos {
                self.enqueue(envelope(to));
            }
            return;
        }
        // The sender's address is formatted once for the whole batch.
        let from = m.from.to_string();
        let kind = m.stanza.kind();
        let mut written = false;
        for to in m.tos {
            if !self.queue.is_empty() {
                self.enqueue(envelope(to));
                continue;
            }
            let frame = crate::router::frame(&m.stanza, &from, &to);
            match self.write_frame(frame, kind, None, || envelope(to)) {
                Write::Taken => written = true,
                Write::Shed => {}
                Write::Full(env) => self.enqueue(env),
                Write::Closed(env) => self.hold(env),
            }
        }
        if written {
            self.wrote();
        }
    }
}

impl OutboundDomain {
    /// Keeps `env` for the next stream, counting its bytes.
    fn hold(&mut self, env: Envelope) {
        self.queued_bytes += env.stanza.bytes().len();
        self.queue.push_back(env);
        self.metrics.set_queue(self.queue.len());
    }

    /// What a closed link's writer never wrote goes back to the head of
    /// the queue, in order, ahead of what waited for the link: sent on the
    /// next stream, or bounced with the rest.
    fn keep_unsent(&mut self, frames: Vec<Frame>) {
        // The journal entries of the stanzas among them are the last ones
        // handed to the writer; the rest were written without acks.
        let stanzas = frames.iter().filter(|f| f.is_stanza()).count();
        let mut ids = self
            .inflight
            .split_off(self.inflight.len().saturating_sub(stanzas));
        let settled: Vec<u64> = self.inflight.drain(..).filter_map(|(id, _)| id).collect();
        self.forget(settled);
        let mut kept = 0;
        for frame in frames.into_iter().rev() {
            let id = match frame.is_stanza() {
                true => ids.pop_back().and_then(|(id, _)| id),
                false => None,
            };
            let Ok(stanza) = frame.to_stanza() else {
                // Counted stanzas and the queue no longer line up.
                self.sm.lost = None;
                continue;
            };
            let jid = |a: Option<std::borrow::Cow<'_, str>>| a.and_then(|a| Jid::parse(&a).ok());
            let (Some(from), Some(to)) = (jid(stanza.from()), jid(stanza.to())) else {
                continue;
            };
            self.queued_bytes += stanza.bytes().len();
            let mut env = Envelope::new(stanza, from, to);
            env.journal = id;
            self.queue.push_front(env);
            kept += 1;
        }
        if kept > 0 {
            self.metrics.set_queue(self.queue.len());
        }
    }

    /// Everything held, oldest first; the queue is left empty.
    fn take_queue(&mut self) -> Vec<Envelope> {
        self.queued_bytes = 0;
        self.metrics.set_queue(0);
        self.queue.drain(..).collect()
    }

    /// A stanza no queue of this domain can take: presence is dropped,
    /// the rest answered with `resource-constraint`; both counted.
    fn shed(&mut self, env: &Envelope) {
        Shed {
            queue: ShedQueue::S2s,
            kind: env.kind(),
        }
        .emit(&self.shared.metrics);
        if env.kind() != StanzaKind::Presence {
            self.bounce(env, StanzaCondition::ResourceConstraint);
        }
    }

    /// Holds a stanza until the stream is up, starting an attempt if none
    /// is under way; bounces it when the queue is full.
    fn enqueue(&mut self, env: Envelope) {
        let len = env.stanza.bytes().len();
        let (mut max_len, mut max_bytes) = (MAX_QUEUE, self.shared.config.gateway.s2s_queue_bytes);
        if env.kind() == StanzaKind::Presence {
            (max_len, max_bytes) = (presence_share(max_len), presence_share(max_bytes));
        }
        if self.queue.len() >= max_len
            || (!self.queue.is_empty() && self.queued_bytes + len > max_bytes)
        {
            self.shed(&env);
            return;
        }
        self.hold(env);
        if matches!(self.state, State::Idle) {
            // A new stanza gets a fresh attempt soon, whatever the
            // backoff: at most MIN_ATTEMPT_GAP after the last one.
            let soon = self
                .last_attempt
                .map(|t| t + MIN_ATTEMPT_GAP)
                .unwrap_or_else(Instant::now);
            self.retry_at = Some(self.retry_at.map_or(soon, |r| r.min(soon)));
            if soon <= Instant::now() {
                self.connect();
            }
        }
    }
}

impl Message<Attempt> for OutboundDomain {
    type Reply = ();

    async fn handle(&mut self, Attempt(r): Attempt, _: &mut Context<Self, ()>) {
        match r {
            Ok(est) => self.established(est),
            Err(e) => self.failed(e),
        }
    }
}

impl OutboundDomain {
    fn next_timer(&self) -> Option<Instant> {
        let g = &self.shared.config.gateway;
        match self.state {
            State::Idle => self.retry_at.filter(|_| !self.queue.is_empty()),
            State::Connecting => None,
            State::Resuming(deadline) => Some(deadline),
            State::Up => {
                let idle = self.last_activity + g.stream_inactivity_timeout;
                if !self.keep_alive {
                    return Some(idle);
                }
                let keepalive = self.last_write + g.keep_alive_interval;
                if !self.hears_peer() {
                    return Some(idle.min(keepalive));
                }
                let silent = self.last_read + silence_limit(g.keep_alive_interval);
                Some(idle.min(keepalive).min(silent))
            }
        }
    }

    /// Whether the silence limit applies: the stream has a read side (a
    /// writer attached by a bench has none) and the peer has written on it.
    fn hears_peer(&self) -> bool {
        self.link.as_ref().is_some_and(|c| c.can_read()) && self.heard
    }

    async fn on_timer(&mut self) {
        let now = Instant::now();
        match self.state {
            State::Idle => {
                if self.retry_at.is_some_and(|t| t <= now) && !self.queue.is_empty() {
                    self.connect();
                }
            }
            State::Up => {
                let g = &self.shared.config.gateway;
                let limit = silence_limit(g.keep_alive_interval);
                if self.keep_alive && self.hears_peer() && now >= self.last_read + limit {
                    // RFC 6120 §4.9.3.4: the peer is presumed gone.
                    let err = crate::error::StreamError::with_text(
                        crate::error::StreamCondition::ConnectionTimeout,
                        format!("nothing received for {} ms", limit.as_millis()),
                    );
                    self.shared.metrics.stream_error(
                        err.condition,
                        &self.remote,
                        err.text.as_deref(),
                    );
                    let tail = format!("{}</stream:stream>", err.to_xml());
                    self.disconnect(Some(&tail)).await;
                    if self.queue.is_empty() {
                        self.stop = true;
                    }
                } else if now >= self.last_activity + g.stream_inactivity_timeout {
                    self.closed(OutboundClose::Idle);
                    self.disconnect(Some("</stream:stream>")).await;
                    if self.queue.is_empty() {
                        self.stop = true;
                    }
                } else if self.keep_alive && now >= self.last_write + g.keep_alive_interval {
                    // Whitespace keepalive (RFC 6120 §4.6.1).
                    self.send_bytes(Bytes::from_static(b" "));
                }
            }
            State::Resuming(deadline) => {
                if now >= deadline {
                    // No answer to <resume/>: a fresh stream sends all that
                    // was not acknowledged.
                    self.resume_failed();
                    self.disconnect(Some("</stream:stream>")).await;
                }
            }
            State::Connecting => {}
        }
    }

    fn connect(&mut self) {
        if !matches!(self.state, State::Idle) {
            return;
        }
        if !self.shared.acquire_connection() {
            ConnectionLimitReached {
                remote: &self.remote,
            }
            .emit();
            self.failed(ConnectError::Limit);
            return;
        }
        self.holds_slot = true;
        let Some(key) = self.shared.acquire_partner(&self.remote) else {
            self.failed(ConnectError::PartnerLimit);
            return;
        };
        self.partner_slot = Some(key);
        self.route = self
            .shared
            .partner(&self.remote)
            .and_then(|p| p.proxy_fqdn.clone());
        self.state = State::Connecting;
        self.retry_at = None;
        self.last_attempt = Some(Instant::now());
        self.metrics.set_state("connecting");
        let attempt = self.shared.connector.connect(
            self.shared.clone(),
            self.local.clone(),
            self.remote.clone(),
        );
        let me = self.me.clone();
        tokio::spawn(async move {
            let r = attempt.await;
            let _ = me.tell(Attempt(r)).await;
        });
    }

    fn closed(&self, why: OutboundClose) {
        OutboundClosed {
            local: &self.local,
            remote: &self.remote,
            why,
        }
        .emit();
    }

    fn established(&mut self, est: Link) {
        OutboundUp {
            local: &self.local,
            remote: &self.remote,
            peer: &est.peer_addr,
            method: est.method,
        }
        .emit(&self.metrics);
        let mut conn = est.conn;
        let q = conn.split(QueueLimits {
            frames: WRITE_QUEUE,
            bytes: self.shared.config.gateway.s2s_queue_bytes,
        });
        let sm = est.sm && self.shared.config.s2s.stream_management;
        let now = Instant::now();
        match (q, sm) {
            (Some(q), true) => {
                let lost = self.sm.lost.as_ref().filter(|l| l.until > now);
                if let Some(l) = lost {
                    // Ask what the lost stream's peer handled; the queue
                    // waits for the answer.
                    let resume = format!(
                        "<resume xmlns='{NS_SM}' previd='{}' h='0'/>",
                        crate::xml::escape::escape_attr(&l.id)
                    );
                    let _ = q.try_send(Frame::nonza(Bytes::from(resume)));
                    let deadline = now + self.shared.config.gateway.stream_establishment_timeout;
                    self.up(conn);
                    self.state = State::Resuming(deadline);
                    self.metrics.set_state("resuming");
                    return;
                }
                self.sm.lost = None;
                q.enable_sm(Frame::nonza(Bytes::from_static(ENABLE.as_bytes())));
            }
            _ => self.sm.lost = None,
        }
        self.up(conn);
        self.flush();
    }

    /// The stream is negotiated: write through `conn`'s writer from now
    /// on ([`OutboundDomain::flush`] sends what waited).
    fn up(&mut self, conn: Connection) {
        self.link = Some(conn);
        self.sm.id = None;
        self.state = State::Up;
        self.keep_alive = self
            .shared
            .partner(&self.remote)
            .is_none_or(|p| p.keep_alive);
        self.metrics.set_state("up");
        self.failures = 0;
        let now = Instant::now();
        self.last_activity = now;
        self.last_write = now;
        self.last_read = now;
        self.heard = false;
    }

    /// Writes what waited for the stream.
    /// Writes what waited, in order, until the writer's queue is full
    /// (the rest waits for room) or the stream goes down.
    fn flush(&mut self) {
        let mut pending: VecDeque<Envelope> = self.take_queue().into();
        let mut wrote = false;
        while let Some(env) = pending.pop_front() {
            if self.link.is_none() {
                pending.push_front(env);
                break;
            }
            let (frame, kind, journal) = (env.frame(), env.kind(), env.journal);
            match self.write_frame(frame, kind, journal, || env) {
                Write::Taken => wrote = true,
                Write::Shed => {}
                Write::Full(env) | Write::Closed(env) => {
                    pending.push_front(env);
                    break;
                }
            }
        }
        // After what a lost link gave back, if it was lost.
        for env in pending {
            self.hold(env);
        }
        if wrote {
            self.wrote();
        }
    }

    fn failed(&mut self, e: ConnectError) {
        self.release_slots();
        self.state = State::Idle;
        self.failures += 1;
        self.metrics.set_state("failed");
        OutboundFailed {
            local: &self.local,
            remote: &self.remote,
            error: &e,
            stage: e.label(),
            failures: self.failures,
        }
        .emit(&self.metrics);
        let cond = e.bounce_condition();
        // Retrying cannot help when the domain does not exist, or when the
        // peer and our partner settings cannot agree (TLS, SASL, dialback):
        // bounce at once, with the reason, instead of after the timeout.
        let hopeless = matches!(
            e,
            ConnectError::Dns(
                crate::dns::DnsError::NotFound(_) | crate::dns::DnsError::NoService(_)
            ) | ConnectError::Refused(_)
                | ConnectError::Certificate(_)
                | ConnectError::PrivateTargets(_)
        );
        let max_age = self.shared.config.gateway.stream_establishment_timeout;
        let now = Instant::now();
        let (bounce, keep): (Vec<Envelope>, Vec<Envelope>) = self
            .take_queue()
            .into_iter()
            .partition(|env| hopeless || now.duration_since(env.at) >= max_age);
        for env in keep {
            self.hold(env);
        }
        let reason = e.to_string();
        for env in bounce {
            self.bounce_with(&env, cond, Some(&reason));
        }
        self.retry_at = Some(now + backoff(self.failures));
    }

    /// Gives back the gateway and partner connection slots, if held.
    fn release_slots(&mut self) {
        if self.holds_slot {
            self.shared.release_connection();
            self.holds_slot = false;
        }
        if let Some(key) = self.partner_slot.take() {
            self.shared.release_partner(&key);
        }
    }

    fn bounce(&mut self, env: &Envelope, cond: StanzaCondition) {
        self.bounce_with(env, cond, None)
    }

    fn bounce_with(&mut self, env: &Envelope, cond: StanzaCondition, text: Option<&str>) {
        self.shared.forget(env);
        if let Some(b) = env.bounce(cond, text) {
            self.metrics.bounce(cond);
            self.shared.router.route_nowait(b);
        }
    }

    fn write(&mut self, env: Envelope) {
        let (frame, kind, journal) = (env.frame(), env.kind(), env.journal);
        match self.write_frame(frame, kind, journal, || env) {
            Write::Taken => self.wrote(),
            Write::Shed => {}
            // Waits for room in the writer, within the domain's limits.
            Write::Full(env) => self.enqueue(env),
            Write::Closed(env) => self.hold(env),
        }
    }

    /// The stream is in use: it is neither idle nor due a keepalive.
    fn wrote(&mut self) {
        self.last_write = Instant::now();
        self.last_activity = self.last_write;
        if self.shared.journal.is_some()
            && let Some(q) = self.link.as_ref().and_then(|c| c.queue())
            && q.sm_position().is_none()
        {
            // Without acks a stanza is settled once written.
            self.written = Some(q.when_written());
        }
    }

    /// Without Stream Management on the link: the journal entries of what
    /// the writer has written are settled.
    fn settle_written(&mut self) {
        let Some(q) = self.link.as_ref().and_then(|c| c.queue()) else {
            return;
        };
        if q.sm_position().is_some() {
            return;
        }
        let written = q.written();
        let mut settled = Vec::new();
        while let Some((id, at)) = self.inflight.front().copied()
            && at <= written
        {
            self.inflight.pop_front();
            settled.extend(id);
        }
        self.forget(settled);
    }

    /// Under Stream Management: the peer acknowledged `n` more stanzas.
    fn settle_acked(&mut self, n: usize) {
        let n = n.min(self.inflight.len());
        let settled: Vec<u64> = self.inflight.drain(..n).filter_map(|(id, _)| id).collect();
        self.forget(settled);
    }

    fn forget(&self, ids: Vec<u64>) {
        if let Some(j) = &self.shared.journal {
            j.forget(ids);
        }
    }

    /// Hands one stanza's bytes to the writer. `env` is only built when
    /// the stanza must be bounced or kept.
    fn write_frame(
        &mut self,
        frame: Frame,
        kind: StanzaKind,
        journal: Option<u64>,
        env: impl FnOnce() -> Envelope,
    ) -> Write {
        let Some(q) = self.link.as_ref().and_then(|c| c.queue()) else {
            // The stream went down earlier in this batch.
            return Write::Closed(env());
        };
        match q.try_send_as(frame, kind) {
            Ok(()) => {
                self.shared.metrics.stanza_out(kind);
                if self.shared.journal.is_some() {
                    let at = q.pushed();
                    self.inflight.push_back((journal, at));
                }
                Write::Taken
            }
            Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                // The peer does not keep up: presence may go; the rest
                // waits for room in the domain's own queue.
                if kind == StanzaKind::Presence {
                    self.shared.metrics.presence_dropped.increment(1);
                    self.shed(&env());
                    return Write::Shed;
                }
                Write::Full(env())
            }
            Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {
                // The socket died under us: keep what it did not write or
                // get acknowledged, and this stanza, for the next stream
                // instead of losing or bouncing them.
                self.lose_link(&q.clone());
                self.link = None;
                self.release_slots();
                self.state = State::Idle;
                self.metrics.set_state("idle");
                self.retry_at = Some(Instant::now());
                Write::Closed(env())
            }
        }
    }

    fn send_bytes(&mut self, b: Bytes) {
        if let Some(q) = self.link.as_ref().and_then(|c| c.queue())
            && q.try_send(Frame::nonza(b)).is_ok()
        {
            self.last_write = Instant::now();
        }
    }

    async fn on_read(&mut self, r: std::io::Result<usize>) {
        match r {
            Ok(0) | Err(_) => {
                self.closed(OutboundClose::ByPeer);
                self.disconnect(None).await;
                return;
            }
            Ok(_) => self.last_read = Instant::now(),
        }
        // Stream Management answers are not the peer keeping the link
        // alive: a receiving server that acks (Prosody's mod_smacks) still
        // need not write on an idle stream it did not open.
        let mut only_acks = true;
        let mut events = 0;
        loop {
            let Some(f) = self.link.as_mut().map(|c| c.framer()) else {
                return;
            };
            let ev = f.next();
            events += 1;
            if !matches!(&ev, Ok(Some(FramerEvent::Stanza(s))) if s.xmlns() == Some(NS_SM)) {
                only_acks &= matches!(ev, Ok(None));
            }
            match ev {
                Ok(None) => {
                    // Whitespace, or part of an element, is the peer
                    // writing too.
                    self.heard |= events == 1 || !only_acks;
                    break;
                }
                Ok(Some(FramerEvent::StreamClose)) => {
                    self.disconnect(Some("</stream:stream>")).await;
                    return;
                }
                Ok(Some(FramerEvent::Stanza(s))) => {
                    if s.xmlns() == Some(NS_SM) {
                        self.stream_management(&s).await;
                        continue;
                    }
                    self.last_activity = Instant::now();
                    if s.name() == "stream:error" {
                        OutboundPeerError {
                            remote: &self.remote,
                            error: &String::from_utf8_lossy(s.bytes()),
                        }
                        .emit();
                        self.disconnect(None).await;
                        return;
                    }
                    // Nothing else is expected on an outbound stream
                    // (no XEP-0288 bidi): ignore it.
                }
                Ok(Some(FramerEvent::StreamOpen(_))) => {}
                Err(e) => {
                    let tail = format!("{}</stream:stream>", e.to_xml());
                    self.shared
                        .metrics
                        .stream_error(e.condition, &self.remote, e.text.as_deref());
                    self.disconnect(Some(&tail)).await;
                    return;
                }
            }
        }
    }

    /// Closes the stream (writing `tail` first if given) and goes idle; a
    /// non-empty queue is retried by the timer.
    async fn disconnect(&mut self, tail: Option<&str>) {
        if let Some(mut c) = self.link.take() {
            let tail = Bytes::from(tail.unwrap_or_default().to_string());
            let q = c.queue().cloned();
            c.close_keeping_queue(tail, CLOSE).await;
            if let Some(q) = q {
                self.lose_link(&q);
            }
        }
        if matches!(self.state, State::Up | State::Resuming(_)) {
            self.state = State::Idle;
            self.metrics.set_state("idle");
            self.retry_at = Some(Instant::now());
        }
        self.release_slots();
    }
}

/// 1 s, 2 s, 4 s … up to 5 minutes, with ±20 % jitter.
fn backoff(failures: u32) -> Duration {
    let base = MIN_ATTEMPT_GAP.saturating_mul(1u32 << failures.saturating_sub(1).min(9));
    let base = base.min(MAX_BACKOFF);
    // Jitter only spreads retries; it guards no secret, so a failing
    // generator just gives the same (shortest) jitter every time.
    let r = crate::random::bytes(2).unwrap_or_else(|_| vec![0, 0]);
    let r = [r[0], r[1]];
    let jitter = (u16::from_le_bytes(r) as f64 / u16::MAX as f64) * 0.4 - 0.2;
    base.mul_f64(1.0 + jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_from_a_short_first_retry_to_five_minutes() {
        let first = backoff(1);
        assert!(
            first >= Duration::from_millis(800) && first <= Duration::from_millis(1200),
            "{first:?}"
        );
        let fourth = backoff(4);
        assert!(
            fourth >= Duration::from_millis(6400) && fourth <= Duration::from_millis(9600),
            "{fourth:?}"
        );
        assert!(backoff(30) <= Duration::from_secs(360));
    }

    #[test]
    fn connect_errors_bounce_with_the_right_condition() {
        use crate::dns::DnsError;
        assert_eq!(
            ConnectError::Dns(DnsError::NotFound("x".into())).bounce_condition(),
            StanzaCondition::RemoteServerNotFound
        );
        assert_eq!(
            ConnectError::Unreachable("x".into()).bounce_condition(),
            StanzaCondition::RemoteServerNotFound
        );
        assert_eq!(
            ConnectError::Timeout(Duration::from_secs(1)).bounce_condition(),
            StanzaCondition::RemoteServerTimeout
        );
        assert_eq!(
            ConnectError::Negotiation("x".into()).bounce_condition(),
            StanzaCondition::RemoteServerTimeout
        );
        assert_eq!(
            ConnectError::PrivateTargets("x".into()).bounce_condition(),
            StanzaCondition::RemoteServerNotFound
        );
        assert_eq!(
            ConnectError::Certificate("x".into()).bounce_condition(),
            StanzaCondition::RemoteServerTimeout
        );
    }
}
