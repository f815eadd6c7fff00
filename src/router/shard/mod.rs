//! A router shard: owns, for the bare JIDs hashed to it, the bound
//! resources, their presence, and the cached roster, and runs RFC 6121
//! (delivery rules, subscriptions, presence broadcast and probes) over them.
//!
//! - this file: the actor, its messages, the per-user state, and the
//!   storage plumbing (reads, writes, the waiting queue);
//! - [`deliver`]: stanzas for a local user (admission of remote senders
//!   through [`crate::policy::admit`], the §8.5 delivery rules, offline
//!   storage);
//! - [`presence`]: presence from a local session (broadcast, directed,
//!   unavailable) and presence owed to contacts (probes, answers);
//! - [`subscription`]: subscription stanzas both ways, automatic approval,
//!   and roster IQs.
//!
//! It never blocks on storage. Reads (does the account exist, the roster)
//! run on the blocking pool and come back as a [`Loaded`] message; what
//! arrives for a user while a read it needs is out waits in that user's
//! queue, and everything behind it waits too, so a user's stanzas are
//! handled in arrival order. Writes go to the group-commit writer, and
//! what must wait for the commit (roster pushes, IQ results, forwarding a
//! subscription) comes back as a [`Committed`] message with its effects.
//! The cache is updated at once, so later stanzas see the new state; writes
//! are committed in submission order, so storage converges on the cache,
//! and a user's cache is kept until its writes are committed, so a later
//! read never sees storage behind it.

mod deliver;
mod presence;
mod subscription;

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use bytes::Bytes;
use kameo::Actor;
use kameo::actor::{ActorRef, WeakActorRef};
use kameo::error::{ActorStopReason, Infallible, PanicError};
use kameo::message::{Context, Message};

use super::{CloseSession, Envelope, SessionHandle, ShardContext};
use crate::error::{StanzaCondition, StreamCondition, StreamError};
use crate::events::Metrics;
use crate::events::router::{Shed, ShedQueue, StoreFailed, StoreOp};
use crate::jid::{BareJid, FullJid, Jid};
use crate::roster::RosterItem;
use crate::roster::iq;
use crate::storage::{OfflineMessage, Store, StoreError, WriteOp};
use crate::xml::{Frame, Stanza, StanzaKind};

/// Most stanzas one user's queue holds while a storage read is out; more
/// are refused (see [`deliver::on_overflow`]). A read takes milliseconds,
/// so only a flood reaches this.
const MAX_WAITING: usize = super::SESSION_QUEUE;

struct Resource {
    handle: SessionHandle,
    priority: i8,
    available: bool,
    /// The last broadcast presence, `from` stamped, for probe answers.
    presence: Option<Stanza>,
    /// Targets of directed available presence, told when we go offline.
    directed: Vec<Jid>,
}

/// Offline messages up to `upto` written to session `session`.
#[derive(Clone, Copy, Debug)]
struct InFlight {
    upto: u64,
    /// How many messages that is.
    n: u64,
    session: u64,
    /// The session ended by the client's own `</stream:stream>`.
    closed_by_client: bool,
}

#[derive(Default)]
struct User {
    resources: Vec<Resource>,
    /// Whether the account exists, once read (a bound resource answers
    /// without a read).
    exists: Option<bool>,
    /// Every item, unlisted ones too, once read.
    roster: Option<HashMap<String, RosterItem>>,
    /// The roster's contacts with a subscription from the user (those who
    /// get the user's presence), parsed: built at the first broadcast and
    /// dropped whenever the roster changes, so a broadcast to 10,000
    /// contacts does not parse 10,000 JIDs.
    presence_subscribers: Option<Arc<[Jid]>>,
    /// Inbound-only relationships per domain (the items
    /// [`is_inbound_only`]), counted from the roster at the first
    /// request that needs it and kept up to date by `store_item`.
    inbound_by_domain: Option<HashMap<String, usize>>,
    /// Writes submitted and not yet committed: the cache must outlive them.
    pending_writes: usize,
    /// Offline messages handed to a session, waiting for its confirmation
    /// before they are deleted; a second read meanwhile skips them.
    offline_in_flight: Option<InFlight>,
    /// A storage read is out on the blocking pool.
    loading: bool,
    /// What arrived while a read it needed was out, in arrival order.
    /// Whenever it is not empty, a read is out (`loading`).
    waiting: VecDeque<Waiting>,
    /// Offline messages are being fetched; live messages wait behind them.
    flushing: bool,
    held: Vec<Envelope>,
}

impl User {
    fn has(&self, need: Need) -> bool {
        self.missing(need).is_none()
    }

    /// What of `need` is not in the cache.
    fn missing(&self, need: Need) -> Need {
        Need {
            exists: need.exists && self.resources.is_empty() && self.exists.is_none(),
            roster: need.roster && self.roster.is_none(),
        }
    }

    /// Only meaningful once [`User::has`] the existence.
    fn exists(&self) -> bool {
        !self.resources.is_empty() || self.exists == Some(true)
    }
}

/// A relationship only the contact wanted: a request the user has not
/// answered, or one approved (by the user, or automatically for Federated
/// and PublicVerified partners) without the user subscribing back. What a
/// remote domain can create in a user's roster without the user asking.
fn is_inbound_only(item: &RosterItem) -> bool {
    !item.ask && !item.subscription.has_to() && (item.pending_in || item.subscription.has_from())
}

/// The domain of a normalised bare JID.
fn domain_of(jid: &str) -> &str {
    jid.split_once('@').map_or(jid, |(_, d)| d)
}

/// What handling a stanza needs from storage, beyond the sessions.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Need {
    /// Whether the account exists (asked only when no session is bound).
    exists: bool,
    roster: bool,
}

impl Need {
    const NONE: Need = Need {
        exists: false,
        roster: false,
    };
    const EXISTS: Need = Need {
        exists: true,
        roster: false,
    };
    const ROSTER: Need = Need {
        exists: false,
        roster: true,
    };
    const BOTH: Need = Need {
        exists: true,
        roster: true,
    };

    fn is_none(self) -> bool {
        !self.exists && !self.roster
    }

    fn or(self, other: Need) -> Need {
        Need {
            exists: self.exists || other.exists,
            roster: self.roster || other.roster,
        }
    }
}

/// A message for a user, held in the user's queue.
enum Waiting {
    Deliver(Envelope),
    FromSession(FromSession),
    Unbind(Unbind),
}

impl Waiting {
    fn need(&self) -> Need {
        match self {
            Waiting::Deliver(env) => deliver::need_of(env),
            Waiting::FromSession(_) => Need::ROSTER,
            Waiting::Unbind(_) => Need::NONE,
        }
    }
}

pub struct Shard {
    idx: usize,
    ctx: Arc<ShardContext>,
    me: ActorRef<Shard>,
    users: HashMap<BareJid, User>,
    push_seq: u64,
    /// Shutdown: told once the last session has unbound.
    drained: Vec<tokio::sync::oneshot::Sender<()>>,
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
            drained: Vec::new(),
        })
    }

    async fn on_panic(
        &mut self,
        _me: WeakActorRef<Self>,
        err: PanicError,
    ) -> Result<std::ops::ControlFlow<ActorStopReason>, Infallible> {
        // A bug in one stanza's handling must not take every user of the
        // shard offline: log it and keep serving.
        crate::events::router::ShardHandlerFailed {
            shard: self.idx,
            error: &err,
        }
        .emit();
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
    #[error("{0}")]
    Random(crate::random::RandomUnavailable),
}

/// The session is gone.
pub struct Unbind {
    pub jid: FullJid,
    pub id: u64,
    /// The client ended its stream itself: what was written to it before
    /// counts as delivered.
    pub closed_by_client: bool,
}

/// What a closing session's writer never wrote to its client: the
/// messages among it are stored offline.
pub struct Unsent {
    pub jid: FullJid,
    pub frames: Vec<Frame>,
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

/// Close every session of this shard (daemon shutdown).
pub struct Shutdown;

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
    result: Result<Vec<OfflineMessage>, String>,
}

/// Offline messages up to `upto` were written to session `session`'s
/// socket (`written`) and the grace after it has passed.
struct OfflineWritten {
    user: BareJid,
    session: u64,
    upto: u64,
    written: bool,
}

/// A message the store did not keep, to answer.
struct OfflineRefusedMsg {
    env: Envelope,
    error: StoreError,
}

/// A storage read for a user, done (`None`: not asked for).
struct Loaded {
    user: BareJid,
    exists: Option<bool>,
    roster: Option<Result<Vec<RosterItem>, String>>,
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
            None => random_resource()?,
        };
        let jid = m
            .user
            .with_resource(&resource)
            .map_err(BindError::BadResource)?;
        let jid_str: Arc<str> = Arc::from(jid.to_string());
        let user = self.users.entry(m.user.clone()).or_default();
        // Authenticated, so the account exists.
        user.exists = Some(true);
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
                let unavailable = presence::unavailable_from(&jid_str);
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
        // Everything the session does needs the roster: start reading it
        // now, while the client is still busy with its own setup.
        if user.roster.is_none() && !user.loading {
            self.start_load(&m.user, Need::ROSTER);
        }
        Ok((jid, jid_str))
    }
}

impl Message<Unbind> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: Unbind, _: &mut Context<Self, ()>) {
        let bare = m.jid.bare();
        if self.ready(bare, Need::NONE) {
            self.unbind(m);
        } else {
            let bare = bare.clone();
            self.wait(bare, Waiting::Unbind(m), Need::NONE);
        }
    }
}

impl Message<FromSession> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: FromSession, _: &mut Context<Self, ()>) {
        let bare = m.from.bare();
        if self.ready(bare, Need::ROSTER) {
            self.session_stanza(m);
        } else {
            let bare = bare.clone();
            self.wait(bare, Waiting::FromSession(m), Need::ROSTER);
        }
    }
}

impl Message<Deliver> for Shard {
    type Reply = ();

    async fn handle(&mut self, Deliver(env): Deliver, _: &mut Context<Self, ()>) {
        let need = deliver::need_of(&env);
        if self.ready(env.to.bare(), need) {
            self.deliver(env);
        } else {
            let user = env.to.bare().clone();
            self.wait(user, Waiting::Deliver(env), need);
        }
    }
}

impl Message<RefreshProbes> for Shard {
    type Reply = ();

    async fn handle(&mut self, _: RefreshProbes, _: &mut Context<Self, ()>) {
        self.refresh_probes();
    }
}

impl Message<Shutdown> for Shard {
    /// Resolves once every session has unbound (having handed back what it
    /// never wrote), so the shard can store it before it stops.
    type Reply = tokio::sync::oneshot::Receiver<()>;

    async fn handle(
        &mut self,
        _: Shutdown,
        _: &mut Context<Self, Self::Reply>,
    ) -> tokio::sync::oneshot::Receiver<()> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.drained.push(tx);
        self.fire_drained();
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
        rx
    }
}

impl Shard {
    /// Tells shutdown that no session is left.
    fn fire_drained(&mut self) {
        if !self.drained.is_empty() && self.users.values().all(|u| u.resources.is_empty()) {
            for tx in self.drained.drain(..) {
                let _ = tx.send(());
            }
        }
    }
}

impl Message<Loaded> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: Loaded, _: &mut Context<Self, ()>) {
        // The entry outlives its read (see `gc`).
        let Some(u) = self.users.get_mut(&m.user) else {
            return;
        };
        u.loading = false;
        if let Some(exists) = m.exists {
            u.exists.get_or_insert(exists);
        }
        if let Some(items) = m.roster
            && u.roster.is_none()
        {
            let items = items.unwrap_or_else(|e| {
                StoreFailed {
                    op: StoreOp::LoadRoster,
                    user: &m.user,
                    error: &e,
                }
                .emit();
                Vec::new()
            });
            u.roster = Some(items.into_iter().map(|i| (i.jid.clone(), i)).collect());
            u.presence_subscribers = None;
            u.inbound_by_domain = None;
        }
        self.replay(&m.user);
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
                StoreFailed {
                    op: StoreOp::WriteRoster,
                    user: &m.user,
                    error: &e,
                }
                .emit();
                m.on_fail
            }
        };
        for e in effects {
            self.run(e);
        }
        self.gc(&m.user);
    }
}

impl Message<Unsent> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: Unsent, _: &mut Context<Self, ()>) {
        self.unsent(m);
    }
}

impl Message<OfflineBatch> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: OfflineBatch, _: &mut Context<Self, ()>) {
        self.offline_batch(m);
    }
}

impl Message<OfflineWritten> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: OfflineWritten, _: &mut Context<Self, ()>) {
        self.offline_written(m);
    }
}

impl Message<OfflineRefusedMsg> for Shard {
    type Reply = ();

    async fn handle(&mut self, m: OfflineRefusedMsg, _: &mut Context<Self, ()>) {
        self.offline_refused(m.env, m.error);
    }
}

/// A resource the client did not choose: unguessable, so that a full JID
/// says nothing about its session. Refused (not made of zeros) when the
/// generator fails.
fn random_resource() -> Result<String, BindError> {
    match crate::random::hex(8) {
        Ok(h) => Ok(format!("fr-{h}")),
        Err(e) => {
            crate::events::daemon::RandomUnavailable {
                what: "resource name",
            }
            .emit();
            Err(BindError::Random(e))
        }
    }
}

/// Queues `frame` on one session. False when nothing was queued: a full
/// queue drops presence and closes a session that does not read fast
/// enough for anything else (its message then goes offline).
fn offer(r: &Resource, frame: Frame, kind: StanzaKind, metrics: &Metrics) -> bool {
    match r.handle.out.try_send_as(frame, kind) {
        Ok(()) => {
            metrics.stanza_out(kind);
            true
        }
        Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => {
            if kind == StanzaKind::Presence {
                metrics.presence_dropped.increment(1);
                Shed {
                    queue: ShedQueue::Session,
                    kind,
                }
                .emit(metrics);
            } else {
                metrics.slow_consumer_closed.increment(1);
                let _ = r
                    .handle
                    .control
                    .tell(CloseSession(crate::router::slow_consumer()))
                    .try_send();
            }
            false
        }
        Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => false,
    }
}

/// The storage reads of a [`Loaded`], on the blocking pool.
fn read_user(store: &dyn Store, user: &BareJid, need: Need) -> Loaded {
    Loaded {
        user: user.clone(),
        exists: need
            .exists
            .then(|| matches!(store.credentials(user), Ok(Some(_)))),
        roster: need
            .roster
            .then(|| store.roster(user).map_err(|e| e.to_string())),
    }
}

// ---- storage and the waiting queue ------------------------------------------

impl Shard {
    /// Whether a message for `user` needing `need` can be handled now: the
    /// cache has what it needs and nothing older is waiting.
    fn ready(&self, user: &BareJid, need: Need) -> bool {
        match self.users.get(user) {
            Some(u) => u.waiting.is_empty() && u.has(need),
            None => need.is_none(),
        }
    }

    /// Queues `w` for `user` behind what already waits, and starts the
    /// read it needs if none is out.
    fn wait(&mut self, user: BareJid, w: Waiting, need: Need) {
        let u = self.users.entry(user.clone()).or_default();
        if u.waiting.len() >= MAX_WAITING
            && let Waiting::Deliver(env) = w
        {
            return self.overflow(env);
        }
        u.waiting.push_back(w);
        if !u.loading {
            let missing = u.missing(need);
            self.start_load(&user, missing);
        }
    }

    /// Reads what `need` asks for on the blocking pool; the answer comes
    /// back as [`Loaded`].
    fn start_load(&mut self, user: &BareJid, need: Need) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        u.loading = true;
        let store = self.ctx.store.clone();
        let me = self.me.clone();
        let user = user.clone();
        tokio::spawn(async move {
            let reader = user.clone();
            let loaded = tokio::task::spawn_blocking(move || read_user(&*store, &reader, need))
                .await
                .unwrap_or_else(|e| {
                    // A panicking store: answer as for a failed read, so
                    // the user's queue moves on.
                    StoreFailed {
                        op: StoreOp::Read,
                        user: &user,
                        error: &e,
                    }
                    .emit();
                    Loaded {
                        user,
                        exists: need.exists.then_some(false),
                        roster: need.roster.then(|| Err(e.to_string())),
                    }
                });
            let _ = me.tell(loaded).await;
        });
    }

    /// Handles what waited for `user`, in order, until the queue is empty
    /// or its head needs another read.
    fn replay(&mut self, user: &BareJid) {
        loop {
            let Some(u) = self.users.get_mut(user) else {
                return;
            };
            let Some(need) = u.waiting.front().map(Waiting::need) else {
                break;
            };
            if !u.has(need) {
                let missing = u.missing(need);
                return self.start_load(user, missing);
            }
            match u.waiting.pop_front() {
                Some(Waiting::Deliver(env)) => self.deliver(env),
                Some(Waiting::FromSession(m)) => self.session_stanza(m),
                Some(Waiting::Unbind(m)) => self.unbind(m),
                None => break,
            }
        }
        // A bound user whose read was only for existence still wants the
        // roster (see `Bind`).
        if let Some(u) = self.users.get(user)
            && !u.resources.is_empty()
            && u.roster.is_none()
            && !u.loading
        {
            return self.start_load(user, Need::ROSTER);
        }
        self.gc(user);
    }

    /// Forgets a user with no sessions and nothing in flight.
    fn gc(&mut self, user: &BareJid) {
        if let Some(u) = self.users.get(user)
            && u.resources.is_empty()
            && u.pending_writes == 0
            && u.offline_in_flight.is_none()
            && !u.flushing
            && u.held.is_empty()
            && !u.loading
            && u.waiting.is_empty()
        {
            self.users.remove(user);
        }
    }

    /// The user's cached item for `contact`. The roster is loaded for
    /// everything that asks (see [`Need`]).
    fn roster_item(&self, user: &BareJid, contact: &str) -> Option<&RosterItem> {
        self.users
            .get(user)
            .and_then(|u| u.roster.as_ref())
            .and_then(|r| r.get(contact))
    }

    fn item(&self, user: &BareJid, contact: &str) -> Option<RosterItem> {
        self.roster_item(user, contact).cloned()
    }

    fn user_exists(&self, user: &BareJid) -> bool {
        self.users.get(user).is_some_and(User::exists)
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
        let u = self.users.entry(user.clone()).or_default();
        u.presence_subscribers = None;
        match (u.inbound_by_domain.as_mut(), u.roster.as_ref()) {
            (Some(counts), Some(roster)) => {
                let was = roster.get(&item.jid).is_some_and(is_inbound_only);
                let now = !item.is_void() && is_inbound_only(&item);
                let domain = domain_of(&item.jid);
                match (was, now) {
                    (false, true) => *counts.entry(domain.to_owned()).or_default() += 1,
                    (true, false) => {
                        if let Some(n) = counts.get_mut(domain) {
                            *n = n.saturating_sub(1);
                        }
                    }
                    _ => {}
                }
            }
            _ => u.inbound_by_domain = None,
        }
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
        for r in &u.resources {
            self.push_seq += 1;
            let id = format!("push{}", self.push_seq);
            let to = &r.handle.jid_str;
            let xml = match item {
                PushItem::Set(i) => iq::roster_push_xml(to, i, &id),
                PushItem::Remove(c) => iq::roster_push_remove_xml(to, c, &id),
            };
            offer(
                r,
                Bytes::from(xml).into(),
                StanzaKind::Iq,
                &self.ctx.metrics,
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
        for r in &u.resources {
            if resource.is_some_and(|want| want != r.handle.jid.resource()) {
                continue;
            }
            any |= offer(r, frame.clone(), kind, &self.ctx.metrics);
        }
        any
    }

    /// Routes a stanza the server built itself.
    fn route_generated(&mut self, stanza: Stanza, from: Jid, to: Jid) {
        self.ctx
            .router
            .route_nowait(Envelope::new(stanza, from, to));
    }

    fn bounce(&mut self, env: &Envelope, cond: StanzaCondition) {
        self.bounce_with(env, cond, None);
    }

    fn bounce_with(&mut self, env: &Envelope, cond: StanzaCondition, text: Option<&str>) {
        if let Some(b) = env.bounce(cond, text) {
            self.ctx.metrics.stanzas_bounced.increment(1);
            self.ctx.router.route_nowait(b);
        }
    }

    fn unbind(&mut self, m: Unbind) {
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
        let mut resend_offline = None;
        if let Some(f) = &mut user.offline_in_flight
            && f.session == m.id
        {
            if m.closed_by_client {
                // Confirmed once the writer has written them.
                f.closed_by_client = true;
            } else {
                // Cut off: they were not delivered. They go to another
                // available session at once, if there is one.
                user.offline_in_flight = None;
                resend_offline = user
                    .resources
                    .iter()
                    .find(|r| r.available && r.priority >= 0)
                    .map(|r| r.handle.jid.clone());
            }
        }
        if res.available {
            let unavailable = presence::unavailable_from(&res.handle.jid_str);
            self.broadcast_unavailable(&bare, &res, unavailable);
        }
        if let Some(to) = resend_offline {
            self.read_offline_for(&bare, &to);
        }
        self.gc(&bare);
        self.fire_drained();
    }

    fn session_stanza(&mut self, m: FromSession) {
        match m.stanza.kind() {
            StanzaKind::Presence => self.outbound_presence(m.from, m.stanza),
            StanzaKind::Iq => self.roster_iq(m.from, m.stanza),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    //! The shard actor with a store whose reads for one user wait until
    //! the test lets them through: what waits, in which order it comes
    //! out, and that nobody else waits with it.

    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Condvar, Mutex};
    use std::time::Duration;

    use kameo::actor::Spawn;

    use super::*;
    use crate::router::Router;
    use crate::storage::tests::creds;
    use crate::storage::{MemStore, OpResults, StoreError, StoreWriter};
    use crate::stream::scram::Credentials;
    use crate::transport::writer::QueueReceiver;

    /// A [`MemStore`] whose reads for `gated` block until [`Gated::open`].
    struct Gated {
        inner: MemStore,
        gated: BareJid,
        open: Mutex<bool>,
        cv: Condvar,
        reads: AtomicUsize,
    }

    impl Gated {
        fn pass(&self, user: &BareJid) {
            if *user != self.gated {
                return;
            }
            self.reads.fetch_add(1, Ordering::SeqCst);
            let mut open = self.open.lock().unwrap();
            while !*open {
                open = self.cv.wait(open).unwrap();
            }
        }

        fn open(&self) {
            *self.open.lock().unwrap() = true;
            self.cv.notify_all();
        }
    }

    impl Store for Gated {
        fn create_account(&self, u: &BareJid, c: &Credentials) -> Result<(), StoreError> {
            self.inner.create_account(u, c)
        }
        fn set_credentials(&self, u: &BareJid, c: &Credentials) -> Result<(), StoreError> {
            self.inner.set_credentials(u, c)
        }
        fn remove_account(&self, u: &BareJid) -> Result<(), StoreError> {
            self.inner.remove_account(u)
        }
        fn credentials(&self, u: &BareJid) -> Result<Option<Credentials>, StoreError> {
            self.pass(u);
            self.inner.credentials(u)
        }
        fn list_accounts(&self) -> Result<Vec<BareJid>, StoreError> {
            self.inner.list_accounts()
        }
        fn roster(&self, u: &BareJid) -> Result<Vec<RosterItem>, StoreError> {
            self.pass(u);
            self.inner.roster(u)
        }
        fn roster_item(&self, u: &BareJid, c: &str) -> Result<Option<RosterItem>, StoreError> {
            self.inner.roster_item(u, c)
        }
        fn offline_count(&self, u: &BareJid) -> Result<u64, StoreError> {
            self.inner.offline_count(u)
        }
        fn apply(&self, ops: &[WriteOp]) -> Result<OpResults, StoreError> {
            self.inner.apply(ops)
        }
        fn read_offline(&self, u: &BareJid) -> Result<Vec<OfflineMessage>, StoreError> {
            self.inner.read_offline(u)
        }
        fn read_outbox(&self) -> Result<Vec<(u64, bytes::Bytes)>, StoreError> {
            self.inner.read_outbox()
        }
    }

    #[derive(kameo::Actor)]
    struct NullSession;

    impl Message<CloseSession> for NullSession {
        type Reply = ();
        async fn handle(&mut self, _: CloseSession, _: &mut Context<Self, ()>) {}
    }

    struct Site {
        router: Router,
        store: Arc<Gated>,
    }

    fn bare(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    /// One shard, so every user shares it; `gated`'s reads wait.
    fn site(gated: &str) -> Site {
        let store = Arc::new(Gated {
            inner: MemStore::new(),
            gated: bare(gated),
            open: Mutex::new(false),
            cv: Condvar::new(),
            reads: AtomicUsize::new(0),
        });
        for u in [
            "juliet@example.com",
            "romeo@example.com",
            "nurse@example.com",
        ] {
            store.create_account(&bare(u), &creds()).unwrap();
        }
        let dyn_store: Arc<dyn Store> = store.clone();
        let writer = StoreWriter::spawn(dyn_store.clone());
        let config = crate::config::Config::default_embedded();
        let policy = crate::policy::PolicyHandle::new(crate::policy::Policy::from_config(&config));
        let router = Router::start(
            1,
            vec!["example.com".into()],
            dyn_store,
            writer,
            Metrics::get(),
            policy,
            Default::default(),
        );
        Site { router, store }
    }

    impl Site {
        async fn bind(&self, user: &str, resource: &str) -> (FullJid, QueueReceiver) {
            let user = bare(user);
            let (out, rx) = crate::transport::writer::queue(
                crate::transport::writer::QueueLimits::frames(crate::router::SESSION_QUEUE),
            );
            let control = NullSession::spawn(NullSession).recipient::<CloseSession>();
            let (jid, _) = self
                .router
                .shard(&user)
                .ask(Bind {
                    user,
                    requested: Some(resource.into()),
                    id: 1,
                    out,
                    control,
                })
                .await
                .expect("bind");
            (jid, rx)
        }

        async fn session_sends(&self, from: &FullJid, xml: &'static str) {
            let stanza = Stanza::parse(Bytes::from_static(xml.as_bytes())).unwrap();
            let shard = self.router.shard(from.bare()).clone();
            shard
                .tell(FromSession {
                    from: from.clone(),
                    stanza,
                })
                .await
                .unwrap();
        }

        async fn message(&self, from: &str, to: &str, id: &str) {
            let xml = format!("<message type='chat' id='{id}'><body>{id}</body></message>");
            let stanza = Stanza::parse(Bytes::from(xml)).unwrap();
            let env = Envelope::new(stanza, Jid::parse(from).unwrap(), Jid::parse(to).unwrap());
            self.router.route(env).await;
        }

        async fn offline(&self, user: &str, n: u64) {
            let user = bare(user);
            for _ in 0..200 {
                if self.store.offline_count(&user).unwrap() == n {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            panic!(
                "{user} has {} offline messages, not {n}",
                self.store.offline_count(&user).unwrap()
            );
        }
    }

    async fn next(rx: &mut QueueReceiver) -> String {
        let f = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("a stanza within 5 s")
            .expect("queue open");
        String::from_utf8(f.to_vec()).unwrap()
    }

    async fn nothing(rx: &mut QueueReceiver) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        if let Ok(f) = rx.try_recv() {
            panic!(
                "expected nothing, got {}",
                String::from_utf8_lossy(&f.to_vec())
            );
        }
    }

    #[tokio::test]
    async fn what_arrives_while_the_roster_loads_waits_and_comes_out_in_arrival_order() {
        let site = site("juliet@example.com");
        let (juliet, mut rx) = site.bind("juliet@example.com", "balcony").await;
        site.session_sends(
            &juliet,
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await;
        // A message needs no roster, but must not overtake the roster get.
        site.message(
            "romeo@example.com/garden",
            "juliet@example.com/balcony",
            "m1",
        )
        .await;
        site.message(
            "romeo@example.com/garden",
            "juliet@example.com/balcony",
            "m2",
        )
        .await;
        nothing(&mut rx).await;
        site.store.open();
        let first = next(&mut rx).await;
        assert!(
            first.starts_with("<iq type='result' id='r1'"),
            "the roster result first: {first}"
        );
        for id in ["m1", "m2"] {
            let m = next(&mut rx).await;
            assert!(m.contains(&format!("id='{id}'")), "{id} next: {m}");
        }
        assert_eq!(
            site.store.reads.load(Ordering::SeqCst),
            1,
            "one roster read"
        );
    }

    #[tokio::test]
    async fn a_slow_read_for_one_user_holds_up_nobody_else() {
        let site = site("juliet@example.com");
        let (_, mut nurse) = site.bind("nurse@example.com", "desk").await;
        let (juliet, mut jrx) = site.bind("juliet@example.com", "balcony").await;
        site.session_sends(
            &juliet,
            "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>",
        )
        .await;
        // Juliet's roster read is blocked on the shard both users share.
        site.message("romeo@example.com/garden", "nurse@example.com/desk", "n1")
            .await;
        let m = next(&mut nurse).await;
        assert!(m.contains("id='n1'"), "{m}");
        nothing(&mut jrx).await;
        site.store.open();
        let r = next(&mut jrx).await;
        assert!(r.starts_with("<iq type='result' id='r1'"), "{r}");
    }

    #[tokio::test]
    async fn a_message_for_a_user_that_does_not_exist_bounces_once_the_read_says_so() {
        let site = site("nobody@example.com");
        let (_, mut romeo) = site.bind("romeo@example.com", "garden").await;
        site.message("romeo@example.com/garden", "nobody@example.com", "x1")
            .await;
        nothing(&mut romeo).await;
        site.store.open();
        let b = next(&mut romeo).await;
        assert!(
            b.contains("type='error'")
                && b.contains("id='x1'")
                && b.contains("service-unavailable"),
            "{b}"
        );
    }

    #[tokio::test]
    async fn messages_for_an_offline_user_share_one_read_and_go_offline_in_order() {
        let site = site("juliet@example.com");
        for id in ["o1", "o2", "o3"] {
            site.message("romeo@example.com/garden", "juliet@example.com", id)
                .await;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(
            site.store
                .offline_count(&bare("juliet@example.com"))
                .unwrap(),
            0
        );
        site.store.open();
        site.offline("juliet@example.com", 3).await;
        assert_eq!(
            site.store.reads.load(Ordering::SeqCst),
            1,
            "one existence read"
        );
        let stored = site
            .store
            .take_offline(&bare("juliet@example.com"))
            .unwrap();
        let ids: Vec<bool> = ["o1", "o2", "o3"]
            .iter()
            .zip(&stored)
            .map(|(id, b)| {
                std::str::from_utf8(b)
                    .unwrap()
                    .contains(&format!("id='{id}'"))
            })
            .collect();
        assert_eq!(ids, [true, true, true]);
    }

    #[tokio::test]
    async fn a_flood_for_a_user_whose_read_is_out_is_bounced_past_the_queue_limit() {
        let site = site("juliet@example.com");
        let (_, mut romeo) = site.bind("romeo@example.com", "garden").await;
        for i in 0..=MAX_WAITING {
            site.message(
                "romeo@example.com/garden",
                "juliet@example.com",
                &format!("f{i}"),
            )
            .await;
        }
        let b = next(&mut romeo).await;
        assert!(
            b.contains(&format!("id='f{MAX_WAITING}'")) && b.contains("resource-constraint"),
            "{b}"
        );
        site.store.open();
        // The queued ones go offline, up to the offline quota; the sender
        // hears of each one past it.
        let stored = crate::storage::OFFLINE_LIMIT.min(MAX_WAITING as u64);
        site.offline("juliet@example.com", stored).await;
        for i in stored..MAX_WAITING as u64 {
            let b = next(&mut romeo).await;
            assert!(
                b.contains(&format!("id='f{i}'"))
                    && b.contains("<error type='wait'><resource-constraint"),
                "{b}"
            );
        }
        nothing(&mut romeo).await;
    }

    /// What federation was handed, in order, as `(to, the stanza's bytes)`.
    struct Recorder(tokio::sync::mpsc::UnboundedSender<(String, String)>);

    impl crate::router::Remote for Recorder {
        fn send(&self, env: Envelope) {
            let _ = self.0.send((
                env.to.to_string(),
                String::from_utf8_lossy(&env.frame().to_vec()).into(),
            ));
        }
        fn send_many(&self, stanza: Stanza, from: Jid, tos: Vec<Jid>) {
            for to in tos {
                self.send(Envelope::new(stanza.clone(), from.clone(), to));
            }
        }
    }

    /// A site whose users may federate, with one partner of each Lync
    /// type (`f.test` Federated, `pv.test` PublicVerified, `pu.test`
    /// PublicUnverified) and federation recorded instead of sent.
    fn federated_site() -> (Site, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
        federated_site_with(Default::default())
    }

    fn federated_site_with(
        limits: crate::config::UserLimitsConfig,
    ) -> (Site, tokio::sync::mpsc::UnboundedReceiver<(String, String)>) {
        let site = site("nobody@example.com");
        let config = crate::config::Config::from_toml_str(
            "[server]\ndomains = [\"example.com\"]\n\
             [[partner]]\ndomain = \"f.test\"\npartner_type = \"federated\"\n\
             [[partner]]\ndomain = \"pv.test\"\npartner_type = \"public_verified\"\n\
             [[partner]]\ndomain = \"pu.test\"\npartner_type = \"public_unverified\"\n\
             [[access_policy]]\nname = \"global\"\nenable_federation_access = true\n\
             enable_xmpp_access = true\n",
            None,
        )
        .expect("test config");
        let policy = crate::policy::PolicyHandle::new(crate::policy::Policy::from_config(&config));
        let dyn_store: Arc<dyn Store> = site.store.clone();
        let router = Router::start(
            1,
            vec!["example.com".into()],
            dyn_store.clone(),
            StoreWriter::spawn(dyn_store),
            Metrics::get(),
            policy,
            limits,
        );
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        router.set_s2s(Arc::new(Recorder(tx)));
        (
            Site {
                router,
                store: site.store,
            },
            rx,
        )
    }

    impl Site {
        /// `xml` from a remote user of a partner of type `partner`.
        async fn remote_sends(&self, partner: PartnerType, from: &str, to: &str, xml: String) {
            let stanza = Stanza::parse(Bytes::from(xml)).unwrap();
            let mut env = Envelope::new(stanza, Jid::parse(from).unwrap(), Jid::parse(to).unwrap());
            env.remote = Some(partner);
            self.router.route(env).await;
        }
    }

    async fn handed_to_federation(
        rx: &mut tokio::sync::mpsc::UnboundedReceiver<(String, String)>,
    ) -> (String, String) {
        tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("federation handed a stanza within 5 s")
            .expect("recorder open")
    }

    use crate::policy::PartnerType;

    #[tokio::test]
    async fn messages_from_federated_and_public_verified_partners_arrive_and_a_public_unverified_stranger_is_refused()
     {
        let (site, mut fed) = federated_site();
        let (_, mut juliet) = site.bind("juliet@example.com", "balcony").await;
        let chat = |id: &str| format!("<message type='chat' id='{id}'><body>{id}</body></message>");
        for (partner, from, id) in [
            (PartnerType::Federated, "romeo@f.test/a", "fed"),
            (PartnerType::PublicVerified, "romeo@pv.test/a", "pv"),
        ] {
            site.remote_sends(partner, from, "juliet@example.com/balcony", chat(id))
                .await;
            let m = next(&mut juliet).await;
            assert!(m.contains(&format!("id='{id}'")), "{id}: {m}");
        }
        site.remote_sends(
            PartnerType::PublicUnverified,
            "stranger@pu.test/a",
            "juliet@example.com/balcony",
            chat("pu"),
        )
        .await;
        let (to, bounce) = handed_to_federation(&mut fed).await;
        assert_eq!(to, "stranger@pu.test/a");
        assert!(
            bounce.contains("type='error'")
                && bounce.contains("id='pu'")
                && bounce.contains("service-unavailable"),
            "{bounce}"
        );
        nothing(&mut juliet).await;
    }

    #[tokio::test]
    async fn presence_from_a_public_unverified_stranger_is_dropped_and_from_the_other_types_delivered()
     {
        let (site, mut fed) = federated_site();
        let (_, mut juliet) = site.bind("juliet@example.com", "balcony").await;
        let presence = |id: &str| format!("<presence id='{id}'/>");
        site.remote_sends(
            PartnerType::PublicUnverified,
            "stranger@pu.test/a",
            "juliet@example.com/balcony",
            presence("pu"),
        )
        .await;
        for (partner, from, id) in [
            (PartnerType::Federated, "romeo@f.test/a", "fed"),
            (PartnerType::PublicVerified, "romeo@pv.test/a", "pv"),
        ] {
            site.remote_sends(partner, from, "juliet@example.com/balcony", presence(id))
                .await;
            // The stranger's presence, routed first, would come out first.
            let p = next(&mut juliet).await;
            assert!(p.contains(&format!("id='{id}'")), "{id}: {p}");
        }
        nothing(&mut juliet).await;
        assert!(fed.try_recv().is_err(), "dropped presence is not answered");
    }

    #[tokio::test]
    async fn subscription_requests_from_federated_and_public_verified_partners_are_approved_for_the_user_and_a_strangers_dropped()
     {
        let (site, mut fed) = federated_site();
        let (_, mut juliet) = site.bind("juliet@example.com", "balcony").await;
        site.remote_sends(
            PartnerType::PublicUnverified,
            "stranger@pu.test",
            "juliet@example.com",
            "<presence type='subscribe' id='s-pu'/>".into(),
        )
        .await;
        for (partner, from) in [
            (PartnerType::Federated, "romeo@f.test"),
            (PartnerType::PublicVerified, "romeo@pv.test"),
        ] {
            site.remote_sends(
                partner,
                from,
                "juliet@example.com",
                "<presence type='subscribe'/>".into(),
            )
            .await;
            // The stranger's request, routed first, would be answered first.
            let (to, answer) = handed_to_federation(&mut fed).await;
            assert_eq!(to, from);
            assert!(
                answer.contains("type='subscribed'")
                    && answer.contains("from='juliet@example.com'"),
                "{from}: {answer}"
            );
            // RFC 6121 §3.1.5: the approval is followed by the user's
            // current presence (unavailable: she has sent none).
            let (to, presence) = handed_to_federation(&mut fed).await;
            assert_eq!(to, from);
            assert!(
                presence.contains("type='unavailable'"),
                "{from}: {presence}"
            );
        }
        assert!(
            fed.try_recv().is_err(),
            "the stranger's request was not answered"
        );
        // Juliet was never asked: the request never reached her sessions.
        while let Ok(f) = juliet.try_recv() {
            let s = String::from_utf8_lossy(&f.to_vec()).into_owned();
            assert!(!s.contains("type='subscribe'"), "{s}");
        }
        assert!(
            site.store
                .roster_item(&bare("juliet@example.com"), "stranger@pu.test")
                .unwrap()
                .is_none_or(|i| !i.listed),
            "the stranger is not in juliet's roster"
        );
    }

    fn subscribe(n: usize) -> String {
        format!("<presence type='subscribe' id='s{n}'/>")
    }

    #[tokio::test]
    async fn one_domain_cannot_fill_a_roster_past_its_share_nor_anyone_past_the_roster_cap() {
        let (site, mut fed) = federated_site_with(crate::config::UserLimitsConfig {
            max_roster_items: 3,
            max_inbound_subscriptions_per_domain: 2,
            max_directed_presence: 10,
        });
        let (juliet, mut jrx) = site.bind("juliet@example.com", "balcony").await;
        // Two auto-approved subscriptions from f.test: its share.
        for n in 1..=3 {
            let from = format!("a{n}@f.test");
            site.remote_sends(
                PartnerType::Federated,
                &from,
                "juliet@example.com",
                subscribe(n),
            )
            .await;
            let (to, answer) = handed_to_federation(&mut fed).await;
            assert_eq!(to, from);
            if n <= 2 {
                assert!(answer.contains("type='subscribed'"), "{from}: {answer}");
                handed_to_federation(&mut fed).await; // her presence
            } else {
                assert!(
                    answer.contains("type='error'")
                        && answer.contains("policy-violation")
                        && answer.contains(&format!("id='s{n}'")),
                    "{from}: {answer}"
                );
            }
        }
        // Another domain has its own share, until the roster is full.
        for (n, approved) in [(4, true), (5, false)] {
            let from = format!("b{n}@pv.test");
            site.remote_sends(
                PartnerType::PublicVerified,
                &from,
                "juliet@example.com",
                subscribe(n),
            )
            .await;
            let (_, answer) = handed_to_federation(&mut fed).await;
            if approved {
                assert!(answer.contains("type='subscribed'"), "{from}: {answer}");
                handed_to_federation(&mut fed).await;
            } else {
                assert!(answer.contains("policy-violation"), "{from}: {answer}");
            }
        }
        // Contacts already there still pass: a repeated request is answered.
        site.remote_sends(
            PartnerType::Federated,
            "a1@f.test",
            "juliet@example.com",
            subscribe(6),
        )
        .await;
        let (_, answer) = handed_to_federation(&mut fed).await;
        assert!(answer.contains("type='subscribed'"), "{answer}");
        // The user is refused too, and told why.
        while jrx.try_recv().is_ok() {}
        site.session_sends(
            &juliet,
            "<iq type='set' id='add'><query xmlns='jabber:iq:roster'>\
             <item jid='nurse@example.com'/></query></iq>",
        )
        .await;
        let e = next(&mut jrx).await;
        assert!(
            e.contains("id='add'") && e.contains("type='error'") && e.contains("policy-violation"),
            "{e}"
        );
        assert_eq!(
            site.store
                .roster(&bare("juliet@example.com"))
                .unwrap()
                .len(),
            3
        );
    }

    #[tokio::test]
    async fn directed_presence_to_one_target_too_many_is_refused_with_policy_violation() {
        let (site, mut fed) = federated_site_with(crate::config::UserLimitsConfig {
            max_directed_presence: 2,
            ..Default::default()
        });
        let (juliet, mut jrx) = site.bind("juliet@example.com", "balcony").await;
        site.session_sends(&juliet, "<presence/>").await;
        for n in 1..=3 {
            let xml: &'static str = match n {
                1 => "<presence to='room1@muc.f.test/j' id='d1'/>",
                2 => "<presence to='room2@muc.f.test/j' id='d2'/>",
                _ => "<presence to='room3@muc.f.test/j' id='d3'/>",
            };
            site.session_sends(&juliet, xml).await;
        }
        for n in 1..=2 {
            let (to, p) = handed_to_federation(&mut fed).await;
            assert_eq!(to, format!("room{n}@muc.f.test/j"), "{p}");
        }
        // Her own available presence comes back to her first.
        let mut e = next(&mut jrx).await;
        if !e.contains("type='error'") {
            e = next(&mut jrx).await;
        }
        assert!(
            e.contains("id='d3'") && e.contains("type='error'") && e.contains("policy-violation"),
            "{e}"
        );
        assert!(fed.try_recv().is_err(), "the third never left");
    }
}
