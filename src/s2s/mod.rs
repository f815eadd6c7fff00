//! Server-to-server federation: one actor per (local, remote) domain pair
//! for outbound traffic ([`outbound`]), one actor per inbound connection
//! ([`inbound`]), and the shared pieces they use: DNS, our [`Identity`]
//! (certificates, TLS, dialback secret), connection [`Slots`].
//!
//! This module owns connections and queues; it must not hold user state:
//! stanzas that arrive are routed to shards like any other.

mod connect;
mod identity;
pub mod inbound;
pub mod journal;
mod limits;
mod link;
pub mod outbound;
mod sm;

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use dashmap::DashMap;
use kameo::actor::{ActorRef, Spawn};
use kameo::error::SendError;

use crate::config::Config;
use crate::dns::Resolver;
use crate::events::router::ShedQueue;
use crate::events::{Metrics, S2sMetrics};
use crate::jid::Jid;
use crate::policy::admit::{
    self, Admission, Case, Direction, Kind, Reason, Refusal, Reply, RosterState, UserAccess,
};
use crate::router::{Envelope, Remote, Router};
use crate::stream::s2s::PeerPolicy;
use crate::xml::Stanza;

/// Mailbox of a remote domain's actor, in messages (one stanza, or one
/// broadcast to that domain, each). Its own queue is byte-capped behind
/// it; the mailbox only has to absorb bursts between two of its turns.
const OUTBOUND_MAILBOX: usize = 4096;

pub use connect::{ConnectError, Established, connect_and_negotiate};
pub use identity::Identity;
pub use inbound::InboundStreams;
pub use limits::Slots;
pub use link::{Connecting, Connector, Link, Network};
pub use outbound::{OutboundDomain, SendRemote};

/// Everything the s2s actors share.
pub struct S2sShared {
    pub config: Arc<Config>,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub s2s_metrics: S2sMetrics,
    pub resolver: Resolver,
    pub identity: Identity,
    /// Connection counts against the limits, keyed by
    /// [`S2sShared::partner_key`] per partner.
    pub slots: Slots,
    pub policy: crate::policy::PolicyHandle,
    pub audit: crate::audit::AuditLog,
    /// Live inbound connections, told of reloads and closed at shutdown.
    pub inbound: InboundStreams,
    /// Inbound streams not yet authenticated (`s2s.max_unauthenticated`,
    /// `max_unauthenticated_per_ip`).
    pub pre_auth: Arc<crate::transport::ConnCaps>,
    /// Where outbound domain actors get their links ([`Network`] in the
    /// daemon).
    pub connector: Arc<dyn Connector>,
    /// XEP-0198 counts of inbound streams, kept for resumption.
    pub sm: sm::Registry,
    /// Recent XEP-0359 `origin-id`s, to drop a resent duplicate.
    pub recent_ids: sm::RecentIds,
    /// The outbound journal, with `s2s.durable_queue`.
    pub journal: Option<journal::Journal>,
}

impl S2sShared {
    /// Forgets the journal entry of a stanza settled without its actor
    /// (shed, refused).
    pub fn forget(&self, env: &Envelope) {
        if let (Some(j), Some(id)) = (&self.journal, env.journal) {
            j.forget(vec![id]);
        }
    }
}

impl S2sShared {
    /// The negotiation settings for a remote domain; `None` if refused.
    pub fn policy(&self, remote: &str) -> Option<PeerPolicy> {
        self.partner(remote).map(|p| p.peer_policy())
    }

    /// The partner entry in force for a remote domain; `None` if refused.
    pub fn partner(&self, remote: &str) -> Option<Arc<crate::policy::Partner>> {
        self.policy.get().partner(remote)
    }

    pub fn is_local(&self, domain: &str) -> bool {
        self.config.server.domains.iter().any(|d| d == domain)
    }

    /// Takes a connection slot; false when `connection_limit` is reached.
    pub fn acquire_connection(&self) -> bool {
        self.slots
            .acquire_connection(self.config.gateway.connection_limit as usize)
    }

    pub fn release_connection(&self) {
        self.slots.release_connection();
    }

    /// [`S2sShared::acquire_connection`] for a task: the slot goes back
    /// when the returned guard is dropped, however the task ends.
    pub fn connection_slot(self: &Arc<Self>) -> Option<ConnectionSlot> {
        self.acquire_connection()
            .then(|| ConnectionSlot(self.clone()))
    }

    /// What a link to `remote` counts under for the partner connection
    /// limit: the primary domain of the `[[partner]]` listing it, so every
    /// domain of one entry shares one count; an unlisted domain (open
    /// federation) counts alone.
    pub fn partner_key(&self, remote: &str) -> String {
        match self.partner(remote) {
            Some(p) => p.domain.clone(),
            None => remote.to_ascii_lowercase(),
        }
    }

    /// Takes a slot of the partner of `remote` for one link, inbound or
    /// outbound; `None` when the partner is at its `connection_limit`
    /// (`gateway.partner_connection_limit` unless the entry says
    /// otherwise). `Some(key)` is what [`S2sShared::release_partner`] takes,
    /// so a reload moving a domain to another entry cannot unbalance counts.
    pub fn acquire_partner(&self, remote: &str) -> Option<String> {
        let partner = self.partner(remote);
        let limit = partner
            .as_ref()
            .map(|p| p.connection_limit as usize)
            .unwrap_or(self.config.gateway.partner_connection_limit as usize);
        let key = match partner {
            Some(p) => p.domain.clone(),
            None => remote.to_ascii_lowercase(),
        };
        self.slots.acquire_partner(&key, limit).then_some(key)
    }

    pub fn release_partner(&self, key: &str) {
        self.slots.release_partner(key);
    }
}

/// One `connection_limit` slot, given back on drop.
pub struct ConnectionSlot(Arc<S2sShared>);

impl Drop for ConnectionSlot {
    fn drop(&mut self) {
        self.0.release_connection();
    }
}

/// How long a peer may send nothing at all (not even whitespace) before
/// its link is closed with `<connection-timeout/>`: the
/// `gateway.keep_alive_interval` (Lync KeepAliveInterval, "the longest a
/// partner may go without sending a keep-alive") plus half of it as grace,
/// for a peer whose keepalive timer runs a little behind ours.
pub fn silence_limit(keep_alive_interval: std::time::Duration) -> std::time::Duration {
    keep_alive_interval + keep_alive_interval / 2
}

/// The presence without its personal note (`<status/>`), for partners
/// that may not see it (see [`admit`]); `None` when it has none.
/// `stripped` keeps the answer across calls for the same stanza, so a
/// broadcast to many domains scans it once.
fn without_status(stanza: &Stanza, stripped: &mut Option<Option<Stanza>>) -> Option<Stanza> {
    stripped
        .get_or_insert_with(|| crate::roster::presence::without_status(stanza))
        .clone()
}

/// The outbound side's entry point: finds or starts the actor for the
/// (local, remote) pair and hands it the stanza.
#[derive(Clone)]
pub struct S2sRouter {
    shared: Arc<S2sShared>,
    actors: Arc<DashMap<(String, String), ActorRef<OutboundDomain>>>,
}

impl Remote for S2sRouter {
    fn send(&self, env: Envelope) {
        S2sRouter::send(self, env)
    }

    fn send_or_wait(
        &self,
        env: Envelope,
    ) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send + '_>>> {
        let (actor, env) = self.admit(env)?;
        match actor.tell(SendRemote(env)).try_send() {
            Ok(()) => None,
            // Full: the session waits for room (allocated only then).
            Err(SendError::MailboxFull(SendRemote(env))) => Some(Box::pin(async move {
                if let Err(e) = actor.tell(SendRemote(env)).await {
                    crate::events::s2s::DomainActorUnavailable { error: &e }.emit();
                }
            })),
            Err(e) => {
                crate::events::s2s::DomainActorUnavailable { error: &e }.emit();
                None
            }
        }
    }

    fn send_many(&self, stanza: Stanza, from: Jid, tos: Vec<Jid>) {
        S2sRouter::send_many(self, stanza, from, tos)
    }
}

impl S2sRouter {
    pub fn new(shared: Arc<S2sShared>) -> S2sRouter {
        S2sRouter {
            shared,
            actors: Arc::new(DashMap::new()),
        }
    }

    pub fn shared(&self) -> &Arc<S2sShared> {
        &self.shared
    }

    /// Queues a stanza for a remote domain. Never waits: when the domain
    /// actor's bounded mailbox or its own byte-capped queue is full, the
    /// stanza is shed (presence dropped, the rest answered with
    /// `resource-constraint`).
    pub fn send(&self, env: Envelope) {
        let Some((actor, env)) = self.admit(env) else {
            return;
        };
        match actor.tell(SendRemote(env)).try_send() {
            Ok(()) => {}
            Err(SendError::MailboxFull(SendRemote(env))) => {
                self.shared.forget(&env);
                self.shared.router.shed(env, ShedQueue::S2s)
            }
            Err(e) => crate::events::s2s::DomainActorUnavailable { error: &e }.emit(),
        }
    }

    /// The policy's verdict on a stanza for a remote domain (refused ones
    /// are answered here), its audit line and journal entry: the domain's
    /// actor and the stanza to hand it.
    fn admit(&self, mut env: Envelope) -> Option<(ActorRef<OutboundDomain>, Envelope)> {
        let policy = self.shared.policy.get();
        let direction = if env.on_behalf {
            Direction::OutboundOnBehalf
        } else {
            Direction::Outbound
        };
        let verdict = admit::admit(Case {
            direction,
            partner: policy.partner_type(env.to.domain()),
            access: UserAccess::of(policy.access(env.from.bare())),
            roster: RosterState::NotAdded,
            kind: Kind::of_stanza(&env.stanza),
        });
        match verdict {
            Admission::Deliver | Admission::AutoApprove => {}
            Admission::StripStatus => {
                if let Some(s) = without_status(&env.stanza, &mut None) {
                    env.stanza = s;
                }
            }
            Admission::Refuse(r) => {
                self.refuse(&env, r);
                return None;
            }
        }
        self.shared.audit.message(
            crate::audit::Direction::Out,
            &env.stanza,
            &env.from,
            &env.to,
        );
        if let Some(j) = &self.shared.journal
            && env.journal.is_none()
            && env.kind() == crate::xml::StanzaKind::Message
        {
            env.journal = Some(j.append(Bytes::from(env.frame().to_vec())));
        }
        let actor = self.actor(env.from.domain(), env.to.domain());
        Some((actor, env))
    }

    /// At start: sends again what the outbound journal held (accepted,
    /// never settled), in the order it was accepted, each under its entry
    /// (with `durable_queue` off now, the entries are dropped once handed
    /// over: what a crash takes now is not journaled).
    pub fn resend_journal(&self, entries: Vec<(u64, Bytes)>, writer: &crate::storage::StoreWriter) {
        if entries.is_empty() {
            return;
        }
        let durable = self.shared.journal.is_some();
        let (mut resent, mut dropped) = (0usize, Vec::new());
        for (id, bytes) in entries {
            let parsed = Stanza::parse(bytes).ok().and_then(|s| {
                let from = s.from().and_then(|f| Jid::parse(&f).ok())?;
                let to = s.to().and_then(|t| Jid::parse(&t).ok())?;
                Some(Envelope::new(s, from, to))
            });
            let Some(mut env) = parsed else {
                dropped.push(id);
                continue;
            };
            if durable {
                env.journal = Some(id);
            } else {
                dropped.push(id);
            }
            resent += 1;
            self.send(env);
        }
        if !dropped.is_empty() {
            writer.submit(
                vec![crate::storage::WriteOp::ForgetOut { ids: dropped }],
                None,
            );
        }
        crate::events::s2s::JournalResent { count: resent }.emit();
    }

    /// [`S2sRouter::send`] for one stanza of a local user to many remote
    /// contacts (presence broadcast), with the same rules, decided once per
    /// domain (access, partner type, status note) instead of once per
    /// contact; each domain's actor gets one message.
    pub fn send_many(&self, stanza: Stanza, from: Jid, tos: Vec<Jid>) {
        let policy = self.shared.policy.get();
        let access = UserAccess::of(policy.access(from.bare()));
        let kind = Kind::of_stanza(&stanza);
        let at = tokio::time::Instant::now();
        let mut by_domain: HashMap<String, Vec<Jid>> = HashMap::new();
        for to in tos {
            match by_domain.get_mut(to.domain()) {
                Some(v) => v.push(to),
                None => {
                    by_domain.insert(to.domain().to_string(), vec![to]);
                }
            }
        }
        // Stripped at most once per broadcast, whatever the domain count.
        let mut stripped = None;
        for (domain, tos) in by_domain {
            let verdict = admit::admit(Case {
                direction: Direction::Outbound,
                partner: policy.partner_type(&domain),
                access,
                roster: RosterState::NotAdded,
                kind,
            });
            let stanza = match verdict {
                Admission::Deliver | Admission::AutoApprove => stanza.clone(),
                Admission::StripStatus => {
                    without_status(&stanza, &mut stripped).unwrap_or_else(|| stanza.clone())
                }
                Admission::Refuse(r) => {
                    for to in tos {
                        self.refuse(&Envelope::new(stanza.clone(), from.clone(), to), r);
                    }
                    continue;
                }
            };
            for to in &tos {
                self.shared
                    .audit
                    .message(crate::audit::Direction::Out, &stanza, &from, to);
            }
            let actor = self.actor(from.domain(), &domain);
            let batch = outbound::SendMany {
                stanza,
                from: from.clone(),
                tos,
                at,
            };
            match actor.tell(batch).try_send() {
                Ok(()) => {}
                Err(SendError::MailboxFull(b)) => {
                    for to in b.tos {
                        let env = Envelope::new(b.stanza.clone(), b.from.clone(), to);
                        self.shared.router.shed(env, ShedQueue::S2s);
                    }
                }
                Err(e) => crate::events::s2s::DomainActorUnavailable { error: &e }.emit(),
            }
        }
    }

    /// Counts a refusal and bounces what the table says to.
    fn refuse(&self, env: &Envelope, r: Refusal) {
        self.shared.forget(env);
        let m = &self.shared.metrics;
        match r.reason {
            Reason::AccessPolicy => m.refused_access_out.increment(1),
            Reason::UnlistedDomain => m.refused_unlisted_out.increment(1),
            // Inbound reasons; never given for outbound stanzas.
            Reason::UnverifiedMessage | Reason::UnverifiedSubscribe | Reason::UnverifiedOther => {}
        }
        if let Reply::Error(cond, text) = r.reply
            && let Some(b) = env.bounce(cond, text)
        {
            self.shared.router.route_nowait(b);
        }
    }

    /// The live actor for the (local, remote) pair, started if need be.
    fn actor(&self, local: &str, remote: &str) -> ActorRef<OutboundDomain> {
        let key = (local.to_string(), remote.to_string());
        // Clone the handle out: never hold a map guard while sending.
        let existing = self
            .actors
            .get(&key)
            .map(|r| r.clone())
            .filter(|r| r.is_alive());
        match existing {
            Some(a) => a,
            None => {
                let a = OutboundDomain::spawn_with_mailbox(
                    (key.0.clone(), key.1.clone(), self.shared.clone()),
                    kameo::mailbox::bounded(OUTBOUND_MAILBOX),
                );
                self.actors.insert(key, a.clone());
                a
            }
        }
    }

    /// After a policy change: closes, with `<policy-violation/>`, every
    /// stream of a domain that may no longer federate, and has every other
    /// stream re-read its partner entry (metric label, `proxy_fqdn`).
    /// Local sessions are not touched.
    pub fn enforce(&self) {
        let policy = self.shared.policy.get();
        let (denied, kept): (Vec<_>, Vec<_>) = self
            .actors
            .iter()
            .map(|e| (policy.partner(&e.key().1).is_none(), e.value().clone()))
            .partition(|(denied, _)| *denied);
        for (_, a) in denied {
            let _ = a.tell(outbound::PolicyClose).try_send();
        }
        for (_, a) in kept {
            let _ = a.tell(outbound::PolicyRecheck).try_send();
        }
        for a in self.shared.inbound.all() {
            let _ = a.tell(inbound::PolicyRecheck).try_send();
        }
    }

    /// A short live state for a remote domain (for `fedrouter partners`).
    pub fn state(&self, remote: &str) -> String {
        let outbound = self
            .actors
            .iter()
            .filter(|e| e.key().1 == remote && e.value().is_alive())
            .count();
        let key = self.shared.partner_key(remote);
        let links = self.shared.slots.partner_links(&key);
        format!(
            "{outbound} outbound stream actor(s), {links} link(s) in and out counted against connection_limit"
        )
    }

    /// Live state per remote domain, for metrics and admin.
    pub fn domains(&self) -> Vec<(String, String)> {
        self.actors.iter().map(|e| e.key().clone()).collect()
    }

    /// Closes every s2s stream, both directions, with `<system-shutdown/>`
    /// (outbound queues are bounced).
    pub async fn shutdown(&self) {
        // Every link is told at once and closes in parallel: one after the
        // other, a thousand peers that do not read would each take their
        // whole close linger in turn.
        let outbound: Vec<_> = self.actors.iter().map(|e| e.value().clone()).collect();
        let inbound = self.shared.inbound.all();
        for a in &outbound {
            let _ = a.stop_gracefully().await;
        }
        for a in &inbound {
            let _ = a.stop_gracefully().await;
        }
        let mut waits = tokio::task::JoinSet::new();
        for a in outbound {
            waits.spawn(async move { a.wait_for_shutdown().await });
        }
        for a in inbound {
            waits.spawn(async move { a.wait_for_shutdown().await });
        }
        // Dropping the set (when the caller's grace runs out) aborts them.
        while waits.join_next().await.is_some() {}
    }
}
