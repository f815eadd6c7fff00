//! Routing: N shard actors, each owning the sessions, presence and cached
//! rosters of the bare JIDs hashed to it. A stanza goes from the session
//! that framed it to the shard of its target's bare JID in one `tell`;
//! delivery then writes its bytes to the target session's writer queue.
//! Shards never `ask` anything on the stanza path.

mod envelope;
mod overflow;
mod remote;
mod shard;

use std::hash::BuildHasher;
use std::sync::Arc;

use kameo::actor::{ActorRef, Recipient, Spawn};
use tokio::time::Instant;

use crate::error::{StanzaCondition, StreamCondition, StreamError};
use crate::events::Metrics;
use crate::events::router::{Shed, ShedQueue};
use crate::jid::{BareJid, FullJid, Jid};
use crate::storage::{Store, StoreWriter};
use crate::xml::Stanza;

pub use envelope::{Envelope, frame};
pub use remote::Remote;
pub use shard::{
    Bind, BindError, Deliver, FromSession, RefreshProbes, Shard, Shutdown, Unbind, Unsent,
};

/// Capacity of a session's outgoing queue, in stanzas, beside its byte
/// cap (`gateway.session_queue_bytes`). A session whose queue is full is a
/// slow consumer: presence to it is shed, and a message to it goes to
/// offline storage while the session is closed.
pub const SESSION_QUEUE: usize = 4096;

/// Mailbox capacity of a shard. Sessions wait for space (backpressure onto
/// their sockets); shards sending to shards never wait: what the mailbox
/// cannot take waits in the shard's [`overflow`], bounded in bytes.
const SHARD_MAILBOX: usize = 8192;

/// Close the session with this stream error (sent by shards: conflict,
/// slow consumer, shutdown). Lives beside [`SessionHandle`], whose
/// `control` carries it, so routing needs nothing from the session side.
pub struct CloseSession(pub StreamError);

/// The stream error a session gets when it does not read what it is sent
/// (its writer queue is full).
pub fn slow_consumer() -> StreamError {
    StreamError::with_text(
        StreamCondition::ResourceConstraint,
        "the client does not read fast enough",
    )
}

/// What a shard holds to reach a bound local session.
#[derive(Clone)]
pub struct SessionHandle {
    pub id: u64,
    pub jid: FullJid,
    /// The full JID as a string, cached for `from`/`to` splicing.
    pub jid_str: Arc<str>,
    pub out: crate::transport::writer::Queue,
    /// Control channel to the session (conflict, slow consumer, shutdown).
    pub control: Recipient<CloseSession>,
}

struct Inner {
    shards: Vec<ActorRef<Shard>>,
    /// One per shard, beside `shards`.
    overflow: Vec<Arc<overflow::Overflow>>,
    metrics: Arc<Metrics>,
    domains: Vec<String>,
    /// Federation, once started (set after the shards exist, since the s2s
    /// side routes into them too).
    s2s: std::sync::OnceLock<Arc<dyn Remote>>,
    hasher: std::collections::hash_map::RandomState,
}

/// Cheap-to-clone handle on the shards.
#[derive(Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

/// What every shard shares.
pub struct ShardContext {
    pub router: Router,
    pub store: Arc<dyn Store>,
    pub writer: StoreWriter,
    pub metrics: Arc<Metrics>,
    pub domains: Vec<String>,
    pub policy: crate::policy::PolicyHandle,
    pub limits: crate::config::UserLimitsConfig,
}

impl Router {
    /// Spawns `n` shards.
    pub fn start(
        n: usize,
        domains: Vec<String>,
        store: Arc<dyn Store>,
        writer: StoreWriter,
        metrics: Arc<Metrics>,
        policy: crate::policy::PolicyHandle,
        limits: crate::config::UserLimitsConfig,
    ) -> Router {
        let n = n.max(1);
        let prepared: Vec<_> = (0..n)
            .map(|_| Shard::prepare_with_mailbox(kameo::mailbox::bounded(SHARD_MAILBOX)))
            .collect();
        let router = Router {
            inner: Arc::new(Inner {
                shards: prepared.iter().map(|p| p.actor_ref().clone()).collect(),
                overflow: (0..n).map(|_| Arc::default()).collect(),
                metrics: metrics.clone(),
                domains: domains.clone(),
                s2s: std::sync::OnceLock::new(),
                hasher: Default::default(),
            }),
        };
        for (i, p) in prepared.into_iter().enumerate() {
            let ctx = Arc::new(ShardContext {
                router: router.clone(),
                store: store.clone(),
                writer: writer.clone(),
                metrics: metrics.clone(),
                domains: domains.clone(),
                policy: policy.clone(),
                limits,
            });
            p.spawn((i, ctx));
        }
        router
    }

    /// Connects federation: stanzas for remote domains go there from now on.
    pub fn set_s2s(&self, s2s: Arc<dyn Remote>) {
        let _ = self.inner.s2s.set(s2s);
    }

    pub fn is_local_domain(&self, domain: &str) -> bool {
        self.inner.domains.iter().any(|d| d == domain)
    }

    pub fn shard_index(&self, bare: &BareJid) -> usize {
        (self.inner.hasher.hash_one(bare.as_str()) % self.inner.shards.len() as u64) as usize
    }

    pub fn shard(&self, bare: &BareJid) -> &ActorRef<Shard> {
        &self.inner.shards[self.shard_index(bare)]
    }

    pub fn shards(&self) -> &[ActorRef<Shard>] {
        &self.inner.shards
    }

    /// Closes every bound session and waits until all have unbound (each
    /// hands its shard the messages it never wrote, which are stored
    /// offline), then stops the shards. The caller bounds the wait.
    pub async fn shutdown(&self) {
        let mut drained = Vec::new();
        for s in &self.inner.shards {
            if let Ok(rx) = s.ask(Shutdown).await {
                drained.push(rx);
            }
        }
        for rx in drained {
            let _ = rx.await;
        }
        for s in &self.inner.shards {
            let _ = s.stop_gracefully().await;
        }
        for s in &self.inner.shards {
            s.wait_for_shutdown().await;
        }
    }

    /// Routes from a session: waits for mailbox space, which is the
    /// backpressure that slows a fast sender down to what shards can take.
    pub async fn route(&self, env: Envelope) {
        match self.destination(env) {
            Destination::Local(env) => {
                let shard = self.shard(env.to.bare()).clone();
                let _ = shard.tell(Deliver(env)).await;
            }
            // The remote domain's actor, likewise.
            Destination::Remote(s2s, env) => {
                if let Some(wait) = s2s.send_or_wait(env) {
                    wait.await;
                }
            }
            Destination::Settled => {}
        }
    }

    /// Routes from inside a shard: never waits, so shards can never wait on
    /// each other in a cycle. A full mailbox leaves the stanza in the
    /// shard's byte-capped overflow; past that it is shed.
    pub fn route_nowait(&self, env: Envelope) {
        let env = match self.destination(env) {
            Destination::Local(env) => env,
            Destination::Remote(s2s, env) => return s2s.send(env),
            Destination::Settled => return,
        };
        let i = self.shard_index(env.to.bare());
        let shard = &self.inner.shards[i];
        if let Some(env) = self.inner.overflow[i].offer(shard, env, overflow::OVERFLOW_BYTES) {
            self.shed(env, ShedQueue::Shard);
        }
    }

    /// A stanza `queue` cannot take: presence is dropped, what expects an
    /// answer is answered with `resource-constraint`; both counted.
    pub fn shed(&self, env: Envelope, queue: ShedQueue) {
        Shed {
            queue,
            kind: env.kind(),
        }
        .emit(&self.inner.metrics);
        if env.kind() != crate::xml::StanzaKind::Presence
            && let Some(b) = env.bounce(StanzaCondition::ResourceConstraint, None)
        {
            self.route_nowait(b);
        }
    }

    /// [`Router::route_nowait`] for one stanza to many targets (presence
    /// broadcast): local targets are routed one by one; remote ones go to
    /// federation together, which decides and hands over per domain.
    pub fn broadcast_nowait(&self, stanza: &Stanza, from: &Jid, targets: Vec<Jid>) {
        let at = Instant::now();
        let envelope = |to: Jid| {
            let mut env = Envelope::new(stanza.clone(), from.clone(), to);
            env.at = at;
            env
        };
        let s2s = match self.inner.s2s.get() {
            Some(s2s) if self.is_local_domain(from.domain()) => s2s,
            // Without federation, remote targets bounce one by one.
            _ => {
                for to in targets {
                    self.route_nowait(envelope(to));
                }
                return;
            }
        };
        let mut remote = Vec::new();
        for to in targets {
            if self.is_local_domain(to.domain()) {
                self.route_nowait(envelope(to));
            } else {
                remote.push(to);
            }
        }
        if !remote.is_empty() {
            s2s.send_many(stanza.clone(), from.clone(), remote);
        }
    }

    /// Where a stanza goes: a local target's shard, or federation; or it
    /// is settled here (nothing to deliver to, not ours to relay, or
    /// bounced when federation is not running).
    fn destination(&self, env: Envelope) -> Destination<'_> {
        if self.is_local_domain(env.to.domain()) {
            if env.to.bare().is_domain() {
                // Addressed to the server itself from another shard (e.g. a
                // bounce to a server JID): nothing to deliver to.
                return Destination::Settled;
            }
            return Destination::Local(env);
        }
        if let Some(s2s) = self.inner.s2s.get() {
            // A stanza from a remote server to another remote server is not
            // ours to relay.
            if self.is_local_domain(env.from.domain()) {
                return Destination::Remote(s2s.as_ref(), env);
            }
            return Destination::Settled;
        }
        if let Some(b) = env.bounce(StanzaCondition::RemoteServerNotFound, None) {
            self.route_nowait(b);
        }
        Destination::Settled
    }
}

enum Destination<'a> {
    Local(Envelope),
    Remote(&'a dyn Remote, Envelope),
    Settled,
}
