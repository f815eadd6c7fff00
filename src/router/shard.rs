//! A router shard: owns, for the bare JIDs hashed to it, the bound
//! resources, their presence, and the cached roster, and runs RFC 6121
//! (delivery rules, subscriptions, presence broadcast and probes) over them.
//!
//! It never blocks on storage: roster writes go to the group-commit writer,
//! and what must wait for the commit (roster pushes, IQ results, forwarding
//! a subscription) comes back as a [`Committed`] message with its effects.
//! The cache is updated at once, so later stanzas see the new state; writes
//! are committed in submission order, so storage converges on the cache.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use kameo::Actor;
use kameo::actor::{ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible, PanicError};
use kameo::message::{Context, Message};

use super::{Envelope, SessionHandle, ShardContext};
use crate::c2s::CloseSession;
use crate::error::{StanzaCondition, StreamCondition, StreamError, error_reply};
use crate::jid::{BareJid, FullJid, Jid};
use crate::policy::PartnerType;
use crate::roster::RosterItem;
use crate::roster::delivery::{self, Delivery, MessageType, ResourceView};
use crate::roster::iq::{self, RosterChange, RosterSetRequest};
use crate::roster::presence::{parse_priority, probe_xml, subscription_xml, unavailable_xml};
use crate::roster::subscription::{self, SubKind};
use crate::storage::WriteOp;
use crate::xml::element::Element;
use crate::xml::{Frame, NS_CLIENT, Stanza, StanzaKind};

const NS_ROSTER: &str = "jabber:iq:roster";

struct Resource {
    handle: SessionHandle,
    priority: i8,
    available: bool,
    /// The last broadcast presence, `from` stamped, for probe answers.
    presence: Option<Bytes>,
    /// Targets of directed available presence, told when we go offline.
    directed: Vec<Jid>,
}

#[derive(Default)]
struct User {
    resources: Vec<Resource>,
    roster: Option<HashMap<String, RosterItem>>,
    /// The roster's contacts with a subscription from the user (those who
    /// get the user's presence), parsed: built at the first broadcast and
    /// dropped whenever the roster changes, so a broadcast to 10,000
    /// contacts does not parse 10,000 JIDs.
    presence_subscribers: Option<Arc<[Jid]>>,
    /// Writes submitted and not yet committed: the cache must outlive them.
    pending_writes: usize,
    /// Offline messages are being fetched; live messages wait behind them.
    flushing: bool,
    held: Vec<Envelope>,
}

pub struct Shard {
    idx: usize,
    ctx: Arc<ShardContext>,
    me: ActorRef<Shard>,
    users: HashMap<BareJid, User>,
    push_seq: u64,
}

impl Actor for Shard {
    type Args = (usize, Arc<ShardContext>);
    type Error = Infallible;

    async fn on_start((idx, ctx): Self::Args, me: ActorRef<Self>) -> Result<Self, Infallible> {
        Ok(Shard {
            idx,
            ctx,
            me,
            users: HashMap::new(),
            push_seq: 0,
        })
    }

    async fn on_panic(
        &mut self,
        _me: WeakActorRef<Self>,
        err: PanicError,
    ) -> Result<std::ops::ControlFlow<ActorStopReason>, Infallible> {
        // A bug in one stanza's handling must not take every user of the
        // shard offline: log it and keep serving.
        tracing::error!(shard = self.idx, error = %err, "shard handler failed");
        Ok(std::ops::ControlFlow::Continue(()))
    }
}

// ---- messages --------------------------------------------------------------

/// Bind a resource for an authenticated user (RFC 6120 §7). Answered with
/// `ask`: once per session, never per stanza.
pub struct Bind {
    pub user: BareJid,
    pub requested: Option<String>,
    pub id: u64,
    pub out: crate::transport::writer::Queue,
    pub control: kameo::actor::Recipient<CloseSession>,
}

#[derive(Debug, thiserror::Error)]
pub enum BindError {
    #[error("invalid resource: {0}")]
    BadResource(crate::jid::JidError),
}

/// The session is gone.
pub struct Unbind {
    pub jid: FullJid,
    pub id: u64,
}

/// A stanza from a local session that its own user's shard processes:
/// presence (broadcast, directed, subscriptions) and roster IQs.
pub struct FromSession {
    pub from: FullJid,
    pub stanza: Stanza,
}

/// A stanza for a local user of this shard.
pub struct Deliver(pub Envelope);

/// Re-probe the remote contacts of online users
/// (`subscription_refresh_interval`), so a presence lost on the way — or
/// a subscription the partner dropped — is noticed.
pub struct RefreshProbes;

impl Message<RefreshProbes> for Shard {
    type Reply = ();

    async fn handle(&mut self, _: RefreshProbes, _: &mut Context<Self, ()>) {
        let online: Vec<BareJid> = self
            .users
            .iter()
            .filter(|(_, u)| u.resources.iter().any(|r| r.available))
            .map(|(j, _)| j.clone())
            .collect();
        for user in online {
            let contacts: Vec<String> = self
                .users
                .get(&user)
                .and_then(|u| u.roster.as_ref())
                .map(|r| {
                    r.values()
                        .filter(|i| i.subscription.has_to())
                        .map(|i| i.jid.clone())
                        .collect()
                })
                .unwrap_or_default();
            for c in contacts {
                let Ok(to) = BareJid::parse(&c) else { continue };
                if self.ctx.router.is_local_domain(to.domain()) {
                    continue;
                }
                self.route_xml(
                    probe_xml(user.as_str(), &c),
                    Jid::Bare(user.clone()),
                    Jid::Bare(to),
                );
            }
        }
    }
}

/// Close every session of this shard (daemon shutdown).
pub struct Shutdown;

impl Message<Shutdown> for Shard {
    type Reply = ();

    async fn handle(&mut self, _: Shutdown, _: &mut Context<Self, ()>) {
        for u in self.users.values() {
            for r in &u.resources {
                let _ = r
                    .handle
                    .control
                    .tell(CloseSession(StreamError::new(
                        StreamCondition::SystemShutdown,
                    )))
                    .try_send();
            }
        }
    }
}

/// Effects that waited for a storage commit.
struct Committed {
    user: BareJid,
    result: Result<(), String>,
    effects: Vec<Effect>,
    on_fail: Vec<Effect>,
}

struct OfflineBatch {
    user: BareJid,
    resource: FullJid,
    result: Result<Vec<Bytes>, String>,
}

enum Effect {
    /// Bytes to one resource of a user of this shard (`None`: all).
    ToUser {
        user: BareJid,
        resource: Option<Arc<str>>,
        bytes: Bytes,
    },
    /// A roster push of `item` (or its removal) to every resource.
    Push {
        user: BareJid,
        item: PushItem,
    },
    Route(Envelope),
    /// Send the user's current presence (or unavailable) to a contact.
    PresenceTo {
        user: BareJid,
        contact: BareJid,
        unavailable: bool,
    },
}

enum PushItem {
    Set(RosterItem),
    Remove(String),
}

impl Message<Bind> for Shard {
    type Reply = Result<(FullJid, Arc<str>), BindError>;

    async fn handle(&mut self, m: Bind, _: &mut Context<Self, Self::Reply>) -> Self::Reply {
        let resource = match m.requested.as_deref().filter(|r| !r.trim().is_empty()) {
            Some(r) => r.to_string(),
            None => random_resource(),
        };
        let jid = m
            .user
            .with_resource(&resource)
            .map_err(BindError::BadResource)?;
        let jid_str: Arc<str> = Arc::from(jid.to_string());
        self.ensure_roster(&m.user);
        let user = self.users.entry(m.user.clone()).or_default();
        // RFC 6120 §7.7.2.2: a second session asking for a resource in use
        // replaces the old one, which is told why.
        if let Some(pos) = user.resources.iter().position(|r| r.handle.jid == jid) {
            let old = user.resources.remove(pos);
            let _ = old
                .handle
                .control
                .tell(CloseSession(StreamError::with_text(
                    StreamCondition::Conflict,
                    "replaced by a new session for the same resource",
                )))
                .try_send();
            if old.available {
                let unavailable = unavailable_from(&jid_str);
                self.broadcast_unavailable(&m.user, &old, unavailable);
            }
        }
        let user = self.users.entry(m.user.clone()).or_default();
        user.resources.push(Resource {
            handle: SessionHandle {
                id: m.id,
                jid: jid.clone(),
                jid_str: jid_str.clone(),
                out: m.out,
                control: m.control,
            },
            priority: 0,
            available: false,
            presence: None,
            directed: Vec::new(),
        });
        Ok((jid, jid_str))
    }
}

impl Message<Unbind> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: Unbind, _: &mut Context<Self, ()>) {
        let bare = m.jid.bare().clone();
        let Some(user) = self.users.get_mut(&bare) else {
            return;
        };
        let Some(pos) = user
            .resources
            .iter()
            .position(|r| r.handle.id == m.id && r.handle.jid == m.jid)
        else {
            return;
        };
        let res = user.resources.remove(pos);
        if res.available {
            let unavailable = unavailable_from(&res.handle.jid_str);
            self.broadcast_unavailable(&bare, &res, unavailable);
        }
        self.gc(&bare);
    }
}

impl Message<FromSession> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: FromSession, _: &mut Context<Self, ()>) {
        match m.stanza.kind() {
            StanzaKind::Presence => self.outbound_presence(m.from, m.stanza),
            StanzaKind::Iq => self.roster_iq(m.from, m.stanza),
            _ => {}
        }
    }
}

impl Message<Deliver> for Shard {
    type Reply = ();

    async fn handle(&mut self, Deliver(env): Deliver, _: &mut Context<Self, ()>) {
        self.deliver(env);
    }
}

impl Message<Committed> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: Committed, _: &mut Context<Self, ()>) {
        if let Some(u) = self.users.get_mut(&m.user) {
            u.pending_writes = u.pending_writes.saturating_sub(1);
        }
        let effects = match m.result {
            Ok(()) => m.effects,
            Err(e) => {
                tracing::error!(user = %m.user, error = %e, "roster write failed");
                m.on_fail
            }
        };
        for e in effects {
            self.run(e);
        }
        self.gc(&m.user);
    }
}

impl Message<OfflineBatch> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: OfflineBatch, _: &mut Context<Self, ()>) {
        let held = match self.users.get_mut(&m.user) {
            Some(u) => {
                u.flushing = false;
                std::mem::take(&mut u.held)
            }
            None => Vec::new(),
        };
        match m.result {
            Ok(msgs) => {
                let n = msgs.len() as u64;
                let mut delivered = 0;
                for bytes in msgs {
                    if self.write_to(
                        &m.user,
                        Some(m.resource.resource()),
                        bytes.clone().into(),
                        StanzaKind::Message,
                    ) {
                        delivered += 1;
                    } else if let Ok(s) = Stanza::parse(bytes) {
                        // The resource went away meanwhile: keep the message.
                        self.ctx.writer.submit(
                            vec![WriteOp::PushOffline {
                                user: m.user.clone(),
                                stanza: s.bytes().clone(),
                            }],
                            None,
                        );
                    }
                }
                self.ctx.metrics.offline_delivered.increment(delivered);
                tracing::debug!(user = %m.user, n, "offline messages delivered");
            }
            Err(e) => {
                tracing::error!(user = %m.user, error = %e, "reading offline messages failed")
            }
        }
        for env in held {
            self.deliver(env);
        }
        self.gc(&m.user);
    }
}

// ---- the logic ---------------------------------------------------------------

fn random_resource() -> String {
    let mut b = [0u8; 8];
    let _ = aws_lc_rs::rand::fill(&mut b);
    format!("fr-{}", hex::encode(b))
}

fn presence_type(s: &Stanza) -> Option<String> {
    s.type_().map(|t| t.into_owned())
}

impl Shard {
    /// Loads the user's roster into the cache if it is not there.
    fn ensure_roster(&mut self, user: &BareJid) {
        let u = self.users.entry(user.clone()).or_default();
        if u.roster.is_some() {
            return;
        }
        let items = match self.ctx.store.roster(user) {
            Ok(items) => items,
            Err(e) => {
                tracing::error!(%user, error = %e, "loading roster failed");
                Vec::new()
            }
        };
        u.roster = Some(items.into_iter().map(|i| (i.jid.clone(), i)).collect());
    }

    /// Who gets the user's presence (see `User::presence_subscribers`).
    fn presence_subscribers(&mut self, user: &BareJid) -> Arc<[Jid]> {
        self.ensure_roster(user);
        let Some(u) = self.users.get_mut(user) else {
            return Arc::from([]);
        };
        if let Some(s) = &u.presence_subscribers {
            return s.clone();
        }
        let s: Arc<[Jid]> = u
            .roster
            .iter()
            .flat_map(|r| r.values())
            .filter(|i| i.subscription.has_from())
            .filter_map(|i| BareJid::parse(&i.jid).ok().map(Jid::Bare))
            .collect();
        u.presence_subscribers = Some(s.clone());
        s
    }

    fn item(&mut self, user: &BareJid, contact: &str) -> Option<RosterItem> {
        self.ensure_roster(user);
        self.users
            .get(user)
            .and_then(|u| u.roster.as_ref())
            .and_then(|r| r.get(contact).cloned())
    }

    /// Forgets a user with no sessions and nothing in flight.
    fn gc(&mut self, user: &BareJid) {
        if let Some(u) = self.users.get(user)
            && u.resources.is_empty()
            && u.pending_writes == 0
            && !u.flushing
            && u.held.is_empty()
        {
            self.users.remove(user);
        }
    }

    /// Stores `item` and runs `effects` after the commit, or runs them now
    /// when nothing changed.
    fn commit_or_run(&mut self, user: &BareJid, item: Option<RosterItem>, effects: Vec<Effect>) {
        match item {
            Some(item) => self.store_item(user, item, effects, Vec::new()),
            None => {
                for e in effects {
                    self.run(e);
                }
            }
        }
    }

    /// Updates the cached item, submits the write, and runs `effects` once
    /// it is committed (`on_fail` if it is not).
    fn store_item(
        &mut self,
        user: &BareJid,
        item: RosterItem,
        effects: Vec<Effect>,
        on_fail: Vec<Effect>,
    ) {
        self.ensure_roster(user);
        let u = self.users.entry(user.clone()).or_default();
        u.presence_subscribers = None;
        let op = if item.is_void() {
            if let Some(r) = u.roster.as_mut() {
                r.remove(&item.jid);
            }
            WriteOp::RemoveRosterItem {
                user: user.clone(),
                contact: item.jid.clone(),
            }
        } else {
            if let Some(r) = u.roster.as_mut() {
                r.insert(item.jid.clone(), item.clone());
            }
            WriteOp::PutRosterItem {
                user: user.clone(),
                item,
            }
        };
        u.pending_writes += 1;
        let me = self.me.clone();
        let user = user.clone();
        self.ctx.writer.submit(
            vec![op],
            Some(Box::new(move |result| {
                let _ = me
                    .tell(Committed {
                        user,
                        result: result.map_err(|e| e.to_string()),
                        effects,
                        on_fail,
                    })
                    .blocking_send();
            })),
        );
    }

    fn run(&mut self, e: Effect) {
        match e {
            Effect::ToUser {
                user,
                resource,
                bytes,
            } => {
                self.write_to(&user, resource.as_deref(), bytes.into(), StanzaKind::Other);
            }
            Effect::Push { user, item } => self.push(&user, &item),
            Effect::Route(env) => self.ctx.router.route_nowait(env),
            Effect::PresenceTo {
                user,
                contact,
                unavailable,
            } => self.presence_to_contact(&user, &contact, unavailable),
        }
    }

    fn push(&mut self, user: &BareJid, item: &PushItem) {
        let Some(u) = self.users.get(user) else {
            return;
        };
        let targets: Vec<Arc<str>> = u
            .resources
            .iter()
            .map(|r| r.handle.jid_str.clone())
            .collect();
        for to in targets {
            self.push_seq += 1;
            let id = format!("push{}", self.push_seq);
            let xml = match item {
                PushItem::Set(i) => iq::roster_push_xml(&to, i, &id),
                PushItem::Remove(c) => iq::roster_push_remove_xml(&to, c, &id),
            };
            let res = to.rsplit_once('/').map(|(_, r)| r.to_string());
            self.write_to(
                user,
                res.as_deref(),
                Bytes::from(xml).into(),
                StanzaKind::Iq,
            );
        }
    }

    /// Queues bytes on one resource's writer (`None`: every resource).
    /// False when nothing was queued.
    fn write_to(
        &mut self,
        user: &BareJid,
        resource: Option<&str>,
        frame: Frame,
        kind: StanzaKind,
    ) -> bool {
        let Some(u) = self.users.get(user) else {
            return false;
        };
        let mut any = false;
        let mut slow = Vec::new();
        for r in &u.resources {
            if resource.is_some_and(|want| want != r.handle.jid.resource()) {
                continue;
            }
            match r.handle.out.try_send(frame.clone()) {
                Ok(()) => {
                    any = true;
                    self.ctx.metrics.stanza_out(kind);
                }
                Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
                    if kind == StanzaKind::Presence {
                        self.ctx.metrics.presence_dropped.increment(1);
                    } else {
                        slow.push(r.handle.control.clone());
                    }
                }
                Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => {}
            }
        }
        for actor in slow {
            self.ctx.metrics.slow_consumer_closed.increment(1);
            let _ = actor
                .tell(CloseSession(StreamError::with_text(
                    StreamCondition::ResourceConstraint,
                    "the client does not read fast enough",
                )))
                .try_send();
        }
        any
    }

    fn views(&self, user: &BareJid) -> Vec<(ResourceView<'_>, usize)> {
        match self.users.get(user) {
            Some(u) => u
                .resources
                .iter()
                .enumerate()
                .map(|(i, r)| {
                    (
                        ResourceView {
                            resource: r.handle.jid.resource(),
                            priority: r.priority,
                            available: r.available,
                        },
                        i,
                    )
                })
                .collect(),
            None => Vec::new(),
        }
    }

    fn user_exists(&self, user: &BareJid) -> bool {
        if self
            .users
            .get(user)
            .is_some_and(|u| !u.resources.is_empty())
        {
            return true;
        }
        matches!(self.ctx.store.credentials(user), Ok(Some(_)))
    }

    // ---- inbound (to a user of this shard) ----

    fn deliver(&mut self, env: Envelope) {
        self.ctx
            .metrics
            .route_seconds
            .record(env.at.elapsed().as_secs_f64());
        if let Some(partner_type) = env.remote {
            if !self.admit_remote(&env, partner_type) {
                return;
            }
            if partner_type != PartnerType::PublicUnverified
                && env.kind() == StanzaKind::Presence
                && env.stanza.type_().as_deref() == Some("subscribe")
            {
                return self.auto_approve(env);
            }
        }
        match env.kind() {
            StanzaKind::Message => self.deliver_message(env),
            StanzaKind::Presence => self.deliver_presence(env),
            StanzaKind::Iq => self.deliver_iq(env),
            StanzaKind::Other => {}
        }
    }

    /// The partner-type and access rules for a stanza from a remote user
    /// (Lync's XMPP partner model). False when it was refused here.
    fn admit_remote(&mut self, env: &Envelope, partner_type: PartnerType) -> bool {
        let user = env.to.bare().clone();
        let kind = env.kind();
        let ty = env.stanza.type_();
        let is_error = ty.as_deref() == Some("error");
        // A user without federation access is, to the remote, like a user
        // that does not exist.
        if !self.ctx.policy.get().access(&user).allowed_remote() {
            self.ctx.metrics.refused_access_in.increment(1);
            match kind {
                StanzaKind::Presence if ty.as_deref() == Some("subscribe") => {
                    // As for a user that does not exist (RFC 6121 §3.1.3).
                    let reply = subscription_xml(
                        SubKind::Unsubscribed,
                        user.as_str(),
                        env.from.bare().as_str(),
                    );
                    if let Ok(s) = Stanza::parse(Bytes::from(reply)) {
                        let mut e =
                            Envelope::new(s, Jid::Bare(user), Jid::Bare(env.from.bare().clone()));
                        e.on_behalf = true;
                        self.ctx.router.route_nowait(e);
                    }
                }
                StanzaKind::Presence => {}
                _ if !is_error => self.bounce(env, StanzaCondition::ServiceUnavailable),
                _ => {}
            }
            return false;
        }
        if partner_type != PartnerType::PublicUnverified {
            return true;
        }
        // Public, unverified partners reach a user only once the user has
        // added them (any state the user initiated, or a pre-approval).
        let added = self
            .item(&user, env.from.bare().as_str())
            .is_some_and(|i| i.listed || i.approved);
        if added {
            return true;
        }
        match kind {
            StanzaKind::Message => {
                self.ctx.metrics.refused_unverified_message.increment(1);
                if !is_error {
                    // Reveal nothing beyond what an unknown user would.
                    self.bounce(env, StanzaCondition::ServiceUnavailable);
                }
            }
            StanzaKind::Presence if ty.as_deref() == Some("subscribe") => {
                // Dropped silently.
                self.ctx.metrics.refused_unverified_subscribe.increment(1);
            }
            StanzaKind::Iq if matches!(ty.as_deref(), Some("get") | Some("set")) => {
                self.ctx.metrics.refused_unverified_other.increment(1);
                self.bounce(env, StanzaCondition::ServiceUnavailable);
            }
            _ => self.ctx.metrics.refused_unverified_other.increment(1),
        }
        self.gc(&user);
        false
    }

    /// Federated and PublicVerified partners: a subscription request is
    /// approved on the user's behalf — the item gets `from`, the user's
    /// resources get a roster push, and the contact gets `subscribed` and
    /// the user's current presence.
    fn auto_approve(&mut self, env: Envelope) {
        let user = env.to.bare().clone();
        let contact = env.from.bare().clone();
        if !self.user_exists(&user) {
            return self.inbound_subscription(env, SubKind::Subscribe);
        }
        let current = self.item(&user, contact.as_str());
        let inbound = subscription::inbound(current.as_ref(), SubKind::Subscribe, contact.as_str());
        let after_request = inbound.new_item.or(current);
        let approve = subscription::outbound(
            after_request.as_ref(),
            SubKind::Subscribed,
            contact.as_str(),
        );
        let Some(item) = approve.new_item.or(after_request) else {
            return;
        };
        let mut effects = vec![Effect::Push {
            user: user.clone(),
            item: PushItem::Set(item.clone()),
        }];
        effects.extend(subscription_effect(SubKind::Subscribed, &user, &contact));
        presence_effects(&user, &contact, true, false, &mut effects);
        self.store_item(&user, item, effects, Vec::new());
        self.gc(&user);
    }

    fn deliver_message(&mut self, env: Envelope) {
        let user = env.to.bare().clone();
        if let Some(u) = self.users.get_mut(&user)
            && u.flushing
        {
            u.held.push(env);
            return;
        }
        let ty = MessageType::from_attr(env.stanza.type_().as_deref());
        let exists = self.user_exists(&user);
        let views = self.views(&user);
        let plain: Vec<ResourceView<'_>> = views.iter().map(|(v, _)| *v).collect();
        let decision = match env.to.resource() {
            Some(res) => delivery::message_to_full(exists, &plain, res, ty),
            None => delivery::message_to_bare(exists, &plain, ty),
        };
        let targets: Vec<String> = match &decision {
            Delivery::ToResources(idx) => {
                idx.iter().map(|i| plain[*i].resource.to_string()).collect()
            }
            _ => Vec::new(),
        };
        drop(views);
        match decision {
            Delivery::ToResources(_) => {
                let frame = env.frame();
                let mut delivered = false;
                for r in &targets {
                    delivered |= self.write_to(&user, Some(r), frame.clone(), StanzaKind::Message);
                }
                if !delivered {
                    self.store_offline(&user, &env);
                }
            }
            Delivery::Offline => self.store_offline(&user, &env),
            Delivery::Bounce(cond) => self.bounce(&env, cond),
            Delivery::Drop => {}
        }
    }

    fn store_offline(&mut self, user: &BareJid, env: &Envelope) {
        let stamped = with_delay(&env.frame(), user.domain());
        self.ctx.metrics.offline_stored.increment(1);
        self.ctx.writer.submit(
            vec![WriteOp::PushOffline {
                user: user.clone(),
                stanza: stamped,
            }],
            None,
        );
    }

    fn bounce(&mut self, env: &Envelope, cond: StanzaCondition) {
        if let Some(b) = env.bounce(cond, None) {
            self.ctx.metrics.stanzas_bounced.increment(1);
            self.ctx.router.route_nowait(b);
        }
    }

    fn deliver_iq(&mut self, env: Envelope) {
        let user = env.to.bare().clone();
        let ty = env.stanza.type_();
        let is_request = matches!(ty.as_deref(), Some("get") | Some("set"));
        let Some(res) = env.to.resource() else {
            // An IQ to a user's bare JID is answered by the server on the
            // user's behalf (RFC 6121 §8.5.2.1.3); nothing is handled there yet.
            if is_request {
                self.bounce(&env, StanzaCondition::ServiceUnavailable);
            }
            return;
        };
        let exists = self.user_exists(&user);
        let views = self.views(&user);
        let plain: Vec<ResourceView<'_>> = views.iter().map(|(v, _)| *v).collect();
        match delivery::iq_to_full(exists, &plain, res, is_request) {
            Delivery::ToResources(_) => {
                drop(views);
                let res = res.to_string();
                if !self.write_to(&user, Some(&res), env.frame(), StanzaKind::Iq) && is_request {
                    self.bounce(&env, StanzaCondition::ServiceUnavailable);
                }
            }
            Delivery::Bounce(c) => {
                drop(views);
                self.bounce(&env, c)
            }
            _ => {}
        }
    }

    fn deliver_presence(&mut self, env: Envelope) {
        let ty = presence_type(&env.stanza);
        if let Some(kind) = ty.as_deref().and_then(SubKind::from_type) {
            return self.inbound_subscription(env, kind);
        }
        match ty.as_deref() {
            Some("probe") => self.answer_probe(env),
            None | Some("unavailable") | Some("error") => {
                let user = env.to.bare().clone();
                let views = self.views(&user);
                let plain: Vec<ResourceView<'_>> = views.iter().map(|(v, _)| *v).collect();
                let d = match env.to.resource() {
                    Some(r) => delivery::presence_to_full(&plain, r),
                    None => delivery::presence_to_bare(&plain),
                };
                if let Delivery::ToResources(idx) = d {
                    let names: Vec<String> =
                        idx.iter().map(|i| plain[*i].resource.to_string()).collect();
                    drop(views);
                    let frame = env.frame();
                    for r in names {
                        self.write_to(&user, Some(&r), frame.clone(), StanzaKind::Presence);
                    }
                }
            }
            _ => {}
        }
    }

    fn inbound_subscription(&mut self, env: Envelope, kind: SubKind) {
        let user = env.to.bare().clone();
        let contact = env.from.bare().clone();
        if !self.user_exists(&user) {
            if kind == SubKind::Subscribe {
                let reply =
                    subscription_xml(SubKind::Unsubscribed, user.as_str(), contact.as_str());
                self.route_xml(reply, Jid::Bare(user), Jid::Bare(contact));
            }
            return;
        }
        let current = self.item(&user, contact.as_str());
        let out = subscription::inbound(current.as_ref(), kind, contact.as_str());
        let mut effects = Vec::new();
        if out.push
            && let Some(i) = out.new_item.as_ref().filter(|i| i.listed)
        {
            effects.push(Effect::Push {
                user: user.clone(),
                item: PushItem::Set(i.clone()),
            });
        }
        if out.deliver {
            // Subscription stanzas carry bare JIDs (RFC 6121 §3.1.1).
            let bytes = Bytes::from(subscription_xml(kind, contact.as_str(), user.as_str()));
            let avail: Vec<Arc<str>> = self
                .users
                .get(&user)
                .map(|u| {
                    u.resources
                        .iter()
                        .filter(|r| r.available)
                        .map(|r| Arc::from(r.handle.jid.resource()))
                        .collect()
                })
                .unwrap_or_default();
            for r in avail {
                effects.push(Effect::ToUser {
                    user: user.clone(),
                    resource: Some(r),
                    bytes: bytes.clone(),
                });
            }
        }
        if let Some(reply) = out.auto_reply {
            effects.extend(subscription_effect(reply, &user, &contact));
        }
        presence_effects(
            &user,
            &contact,
            out.send_presence_to_contact,
            out.send_unavailable_to_contact,
            &mut effects,
        );
        self.commit_or_run(&user, out.new_item, effects);
        self.gc(&user);
    }

    fn answer_probe(&mut self, env: Envelope) {
        let user = env.to.bare().clone();
        let prober = env.from.bare().clone();
        let allowed = prober == user
            || self
                .item(&user, prober.as_str())
                .is_some_and(|i| i.subscription.has_from());
        if allowed {
            self.presence_to_contact_jid(&user, &env.from, false);
        }
        self.gc(&user);
    }

    /// The user's current presence from each available resource, or one
    /// unavailable presence when none is available.
    fn presence_to_contact(&mut self, user: &BareJid, contact: &BareJid, unavailable: bool) {
        self.presence_to_contact_jid(user, &Jid::Bare(contact.clone()), unavailable)
    }

    fn presence_to_contact_jid(&mut self, user: &BareJid, to: &Jid, unavailable: bool) {
        let to_str = to.to_string();
        let mut sent = false;
        let current: Vec<(Arc<str>, Option<Bytes>)> = self
            .users
            .get(user)
            .map(|u| {
                u.resources
                    .iter()
                    .filter(|r| r.available)
                    .map(|r| (r.handle.jid_str.clone(), r.presence.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (jid, presence) in current {
            let xml = match (&presence, unavailable) {
                (Some(p), false) => p.clone(),
                _ => Bytes::from(unavailable_xml(&jid, &to_str)),
            };
            if let Ok(s) = Stanza::parse(xml)
                && let Ok(from) = Jid::parse(&jid)
            {
                let mut env = Envelope::new(s, from, to.clone());
                // The stored presence has no `to`; the recipient's shard
                // addresses it.
                env.at = tokio::time::Instant::now();
                self.ctx.router.route_nowait(env);
                sent = true;
            }
        }
        if !sent {
            self.route_xml(
                unavailable_xml(user.as_str(), &to_str),
                Jid::Bare(user.clone()),
                to.clone(),
            );
        }
    }

    fn route_xml(&mut self, xml: String, from: Jid, to: Jid) {
        if let Ok(s) = Stanza::parse(Bytes::from(xml)) {
            self.ctx.router.route_nowait(Envelope::new(s, from, to));
        }
    }

    // ---- outbound (from a session of a user of this shard) ----

    fn outbound_presence(&mut self, from: FullJid, stanza: Stanza) {
        let ty = presence_type(&stanza);
        let to = match stanza.to() {
            Some(t) => match Jid::parse(&t) {
                Ok(j) => Some(j),
                Err(_) => {
                    let env = Envelope::new(
                        stanza.clone(),
                        Jid::Full(from.clone()),
                        Jid::Bare(from.bare().clone()),
                    );
                    self.bounce(&env, StanzaCondition::JidMalformed);
                    return;
                }
            },
            None => None,
        };
        if let Some(kind) = ty.as_deref().and_then(SubKind::from_type) {
            if let Some(to) = to {
                self.outbound_subscription(from, to.bare().clone(), kind);
            }
            return;
        }
        match (to, ty.as_deref()) {
            (None, None) => self.broadcast_available(from, stanza),
            (None, Some("unavailable")) => {
                let bare = from.bare().clone();
                let res = self.users.get_mut(&bare).and_then(|u| {
                    let r = u.resources.iter_mut().find(|r| r.handle.jid == from)?;
                    let snapshot = Resource {
                        handle: r.handle.clone(),
                        priority: r.priority,
                        available: r.available,
                        presence: r.presence.take(),
                        directed: std::mem::take(&mut r.directed),
                    };
                    r.available = false;
                    Some(snapshot)
                });
                if let Some(res) = res {
                    let frame = stamp(&stanza, &res.handle.jid_str);
                    self.broadcast_unavailable(&bare, &res, frame);
                }
            }
            // A client never sends probes (RFC 6121 §4.3): ignore them.
            (_, Some("probe")) => {}
            (Some(to), ty) => {
                // Directed presence: remembered, so the target hears when we leave.
                let bare = from.bare().clone();
                if let Some(r) = self
                    .users
                    .get_mut(&bare)
                    .and_then(|u| u.resources.iter_mut().find(|r| r.handle.jid == from))
                {
                    match ty {
                        None if !r.directed.contains(&to) => {
                            r.directed.push(to.clone());
                        }
                        Some("unavailable") => r.directed.retain(|j| j != &to),
                        _ => {}
                    }
                }
                self.ctx
                    .router
                    .route_nowait(Envelope::new(stanza, Jid::Full(from), to));
            }
            (None, Some(_)) => {}
        }
    }

    fn broadcast_available(&mut self, from: FullJid, stanza: Stanza) {
        let bare = from.bare().clone();
        let priority = Element::parse(stanza.bytes(), NS_CLIENT, &[])
            .ok()
            .and_then(|e| e.child("priority", NS_CLIENT).map(|p| p.text()))
            .map(|p| parse_priority(Some(p.trim())))
            .unwrap_or(0);
        let Some(jid_str) = self
            .users
            .get(&bare)
            .and_then(|u| u.resources.iter().find(|r| r.handle.jid == from))
            .map(|r| r.handle.jid_str.clone())
        else {
            return;
        };
        let stamped = flatten(&stamp(&stanza, &jid_str));
        let was_available;
        {
            let Some(r) = self
                .users
                .get_mut(&bare)
                .and_then(|u| u.resources.iter_mut().find(|r| r.handle.jid == from))
            else {
                return;
            };
            was_available = r.available;
            r.available = true;
            r.priority = priority;
            r.presence = Some(stamped.clone());
        }
        let presence = match Stanza::parse(stamped.clone()) {
            Ok(s) => s,
            Err(_) => return,
        };
        // To every contact with a subscription from us.
        let targets = self.presence_subscribers(&bare).to_vec();
        self.ctx
            .router
            .broadcast_nowait(&presence, &Jid::Full(from.clone()), targets);
        // To all of our own available resources, this one included (RFC 6121 §4.2.2).
        self.echo_to_own_resources(&bare, &presence);
        if was_available {
            return;
        }
        let (subscribed_to, pending_in): (Vec<String>, Vec<String>) = {
            let roster = self.users.get(&bare).and_then(|u| u.roster.as_ref());
            let items: Vec<&RosterItem> = roster.map(|r| r.values().collect()).unwrap_or_default();
            (
                items
                    .iter()
                    .filter(|i| i.subscription.has_to())
                    .map(|i| i.jid.clone())
                    .collect(),
                items
                    .iter()
                    .filter(|i| i.pending_in)
                    .map(|i| i.jid.clone())
                    .collect(),
            )
        };
        // Initial presence: probe contacts we are subscribed to, and bring
        // ourselves up to date with our other resources' presence.
        for c in &subscribed_to {
            if let Ok(to) = BareJid::parse(c) {
                self.route_xml(
                    probe_xml(bare.as_str(), c),
                    Jid::Bare(bare.clone()),
                    Jid::Bare(to),
                );
            }
        }
        let others: Vec<Bytes> = self
            .users
            .get(&bare)
            .map(|u| {
                u.resources
                    .iter()
                    .filter(|r| r.available && r.handle.jid != from)
                    .filter_map(|r| r.presence.clone())
                    .collect()
            })
            .unwrap_or_default();
        for p in others {
            if let Ok(s) = Stanza::parse(p) {
                self.write_to(
                    &bare,
                    Some(from.resource()),
                    s.splice(None, Some(&jid_str)),
                    StanzaKind::Presence,
                );
            }
        }
        // Subscription requests that waited for us (RFC 6121 §3.1.3).
        for c in &pending_in {
            let xml = subscription_xml(SubKind::Subscribe, c, bare.as_str());
            self.write_to(
                &bare,
                Some(from.resource()),
                Bytes::from(xml).into(),
                StanzaKind::Presence,
            );
        }
        // Offline messages go to the first resource that becomes available
        // with a non-negative priority (XEP-0160).
        let flushing = self.users.get(&bare).is_some_and(|u| u.flushing);
        if priority >= 0 && !flushing {
            if let Some(u) = self.users.get_mut(&bare) {
                u.flushing = true;
            }
            let me = self.me.clone();
            let user = bare.clone();
            let resource = from.clone();
            self.ctx.writer.take_offline(
                bare,
                Box::new(move |result| {
                    let _ = me
                        .tell(OfflineBatch {
                            user,
                            resource,
                            result: result.map_err(|e| e.to_string()),
                        })
                        .blocking_send();
                }),
            );
        }
    }

    /// `res` has gone unavailable (it may already be removed from the user).
    fn broadcast_unavailable(
        &mut self,
        bare: &BareJid,
        res: &Resource,
        frame_bytes: impl Into<Frame>,
    ) {
        let frame: Frame = frame_bytes.into();
        let Ok(presence) = Stanza::parse(flatten(&frame)) else {
            return;
        };
        let from = Jid::Full(res.handle.jid.clone());
        let mut targets = self.presence_subscribers(bare).to_vec();
        for d in &res.directed {
            if !targets.contains(d) {
                targets.push(d.clone());
            }
        }
        self.ctx.router.broadcast_nowait(&presence, &from, targets);
        self.echo_to_own_resources(bare, &presence);
        // The leaving resource gets its own unavailable too, as a clean echo.
        if res.available {
            let _ = res
                .handle
                .out
                .try_send(presence.splice(None, Some(&res.handle.jid_str)));
        }
    }

    /// A user's presence to each of the user's available resources, each
    /// copy addressed to its resource (RFC 6121 §4.2.2, §4.5.2).
    fn echo_to_own_resources(&mut self, bare: &BareJid, presence: &Stanza) {
        let own: Vec<Arc<str>> = self
            .users
            .get(bare)
            .map(|u| {
                u.resources
                    .iter()
                    .filter(|r| r.available)
                    .map(|r| r.handle.jid_str.clone())
                    .collect()
            })
            .unwrap_or_default();
        for to in own {
            let res = to.rsplit_once('/').map(|(_, r)| r.to_string());
            self.write_to(
                bare,
                res.as_deref(),
                presence.splice(None, Some(&to)),
                StanzaKind::Presence,
            );
        }
    }

    fn outbound_subscription(&mut self, from: FullJid, contact: BareJid, kind: SubKind) {
        let user = from.bare().clone();
        if contact == user {
            return;
        }
        let current = self.item(&user, contact.as_str());
        let out = subscription::outbound(current.as_ref(), kind, contact.as_str());
        let mut effects = Vec::new();
        if out.push
            && let Some(i) = out.new_item.as_ref()
        {
            effects.push(Effect::Push {
                user: user.clone(),
                item: PushItem::Set(i.clone()),
            });
        }
        if out.forward {
            effects.extend(subscription_effect(kind, &user, &contact));
        }
        presence_effects(
            &user,
            &contact,
            out.send_presence_to_contact,
            out.send_unavailable_to_contact,
            &mut effects,
        );
        self.commit_or_run(&user, out.new_item, effects);
    }

    fn roster_iq(&mut self, from: FullJid, stanza: Stanza) {
        let user = from.bare().clone();
        let id = stanza.id().map(|s| s.into_owned()).unwrap_or_default();
        let jid_str: Arc<str> = Arc::from(from.to_string());
        let reply_err =
            |cond: StanzaCondition| error_reply("iq", Some(&id), Some(&jid_str), None, cond, None);
        let Ok(el) = Element::parse(stanza.bytes(), NS_CLIENT, &[]) else {
            let b = reply_err(StanzaCondition::BadRequest);
            self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
            return;
        };
        let Some(query) = el.child("query", NS_ROSTER) else {
            let b = reply_err(StanzaCondition::ServiceUnavailable);
            self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
            return;
        };
        match el.attr("type") {
            Some("get") => {
                self.ensure_roster(&user);
                let mut items: Vec<RosterItem> = self
                    .users
                    .get(&user)
                    .and_then(|u| u.roster.as_ref())
                    .map(|r| r.values().filter(|i| i.listed).cloned().collect())
                    .unwrap_or_default();
                items.sort_by(|a, b| a.jid.cmp(&b.jid));
                let xml = iq::roster_result_xml(&id, &jid_str, &items);
                self.write_to(
                    &user,
                    Some(from.resource()),
                    Bytes::from(xml).into(),
                    StanzaKind::Iq,
                );
            }
            Some("set") => {
                let items: Vec<&Element> = query.children_named("item", NS_ROSTER).collect();
                if items.len() != 1 {
                    let b = reply_err(StanzaCondition::BadRequest);
                    self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
                    return;
                }
                let it = items[0];
                let req = RosterSetRequest {
                    jid: it.attr("jid").unwrap_or_default().to_string(),
                    name: it.attr("name").map(str::to_string),
                    groups: it
                        .children_named("group", NS_ROSTER)
                        .map(|g| g.text())
                        .collect(),
                    remove: it.attr("subscription") == Some("remove"),
                    subscription_attr: it.attr("subscription").map(str::to_string),
                };
                let contact = BareJid::parse(&req.jid)
                    .map(|j| j.as_str().to_string())
                    .unwrap_or_default();
                let current = self.item(&user, &contact);
                let result_xml = format!(
                    "<iq type='result' id='{}' to='{}'/>",
                    crate::xml::escape::escape_attr(&id),
                    crate::xml::escape::escape_attr(&jid_str)
                );
                let result = Effect::ToUser {
                    user: user.clone(),
                    resource: Some(Arc::from(from.resource())),
                    bytes: Bytes::from(result_xml),
                };
                let failed = vec![Effect::ToUser {
                    user: user.clone(),
                    resource: Some(Arc::from(from.resource())),
                    bytes: reply_err(StanzaCondition::InternalServerError),
                }];
                match iq::apply_set(&user, current.as_ref(), &req) {
                    Ok(RosterChange::Upsert(item)) => {
                        let effects = vec![
                            Effect::Push {
                                user: user.clone(),
                                item: PushItem::Set(item.clone()),
                            },
                            result,
                        ];
                        self.store_item(&user, item, effects, failed);
                    }
                    Ok(RosterChange::Remove {
                        contact,
                        had_from,
                        had_to,
                        had_pending_out,
                        had_pending_in,
                    }) => {
                        let mut effects = vec![
                            Effect::Push {
                                user: user.clone(),
                                item: PushItem::Remove(contact.clone()),
                            },
                            result,
                        ];
                        if let Ok(cj) = BareJid::parse(&contact) {
                            if had_from {
                                effects.push(Effect::PresenceTo {
                                    user: user.clone(),
                                    contact: cj.clone(),
                                    unavailable: true,
                                });
                            }
                            for (cond, kind) in [
                                (had_to || had_pending_out, SubKind::Unsubscribe),
                                (had_from || had_pending_in, SubKind::Unsubscribed),
                            ] {
                                if cond {
                                    effects.extend(subscription_effect(kind, &user, &cj));
                                }
                            }
                        }
                        let mut void = RosterItem::new(contact);
                        void.listed = false;
                        self.store_item(&user, void, effects, failed);
                    }
                    Ok(RosterChange::NotFound) => {
                        let b = reply_err(StanzaCondition::ItemNotFound);
                        self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
                    }
                    Err(cond) => {
                        let b = reply_err(cond);
                        self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
                    }
                }
            }
            _ => {
                let b = reply_err(StanzaCondition::BadRequest);
                self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
            }
        }
    }
}

/// A subscription stanza from the user's bare JID to the contact's
/// (subscription stanzas never carry resources, RFC 6121 §3.1.2).
fn subscription_effect(kind: SubKind, user: &BareJid, contact: &BareJid) -> Option<Effect> {
    let xml = subscription_xml(kind, user.as_str(), contact.as_str());
    let s = Stanza::parse(Bytes::from(xml)).ok()?;
    Some(Effect::Route(Envelope::new(
        s,
        Jid::Bare(user.clone()),
        Jid::Bare(contact.clone()),
    )))
}

/// The presence a subscription change owes the contact.
fn presence_effects(
    user: &BareJid,
    contact: &BareJid,
    available: bool,
    unavailable: bool,
    effects: &mut Vec<Effect>,
) {
    for (wanted, unavailable) in [(available, false), (unavailable, true)] {
        if wanted {
            effects.push(Effect::PresenceTo {
                user: user.clone(),
                contact: contact.clone(),
                unavailable,
            });
        }
    }
}

/// Unavailable presence from a resource, with no `to`: each recipient's
/// copy is addressed when it is routed.
fn unavailable_from(jid: &str) -> Bytes {
    Bytes::from(format!(
        "<presence type='unavailable' from='{}'/>",
        crate::xml::escape::escape_attr(jid)
    ))
}

/// The stanza with our `from` stamped, as one frame.
fn stamp(stanza: &Stanza, from: &str) -> Frame {
    match stanza.from() {
        Some(f) if *f == *from => Frame::from(stanza.clone()),
        _ => stanza.splice(Some(from), None),
    }
}

/// A frame as one contiguous buffer (for storing; not on the forwarding path).
fn flatten(f: &Frame) -> Bytes {
    match f.parts() {
        [one] => one.clone(),
        _ => Bytes::from(f.to_vec()),
    }
}

/// The message with an XEP-0203 `<delay/>` child saying when and where it
/// was stored, for offline delivery (XEP-0160).
fn with_delay(frame: &Frame, domain: &str) -> Bytes {
    let bytes = frame.to_vec();
    let stamp = crate::util::utc_timestamp();
    let delay = format!(
        "<delay xmlns='urn:xmpp:delay' from='{}' stamp='{}'>Offline Storage</delay>",
        crate::xml::escape::escape_attr(domain),
        stamp
    );
    // Insert before the closing tag, or expand an empty element.
    if bytes.ends_with(b"/>") {
        let head = &bytes[..bytes.len() - 2];
        let name_end = head
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'/')
            .unwrap_or(head.len());
        let name = String::from_utf8_lossy(&head[1..name_end]).into_owned();
        let mut out = Vec::with_capacity(bytes.len() + delay.len() + name.len() + 3);
        out.extend_from_slice(head);
        out.push(b'>');
        out.extend_from_slice(delay.as_bytes());
        out.extend_from_slice(format!("</{name}>").as_bytes());
        Bytes::from(out)
    } else if let Some(pos) = bytes.iter().rposition(|b| *b == b'<') {
        let mut out = Vec::with_capacity(bytes.len() + delay.len());
        out.extend_from_slice(&bytes[..pos]);
        out.extend_from_slice(delay.as_bytes());
        out.extend_from_slice(&bytes[pos..]);
        Bytes::from(out)
    } else {
        Bytes::from(bytes)
    }
}
