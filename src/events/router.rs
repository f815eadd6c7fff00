//! Routing: delivery, rosters and offline storage as the router shards
//! see them, and the listeners that feed them.
//!
//! Targets are those the lines had before they moved here (the module
//! that emits them), so `[log] level` filters written for them still
//! apply.

use std::fmt::Display;

use super::Metrics;
use super::counter::{EventName, count};

const SHARD: &str = "fedrouter::router::shard";
const DELIVER: &str = "fedrouter::router::shard::deliver";
const ACCEPT: &str = "fedrouter::transport::accept";

/// A stanza to a user whose per-user queue (storage reads in flight) is
/// full, and which is neither bounced nor counted as shed presence.
pub struct UserQueueFull<'a> {
    pub to: &'a dyn Display,
}

impl UserQueueFull<'_> {
    pub fn emit(self) {
        tracing::debug!(target: DELIVER, to = %self.to, "user queue full: stanza dropped");
        count(EventName::UserQueueFull);
    }
}

/// Presence shed because the user's queue is full.
pub struct PresenceShed;

impl PresenceShed {
    pub fn emit(self, metrics: &Metrics) {
        metrics.presence_dropped.increment(1);
    }
}

/// A bounded queue a stanza could not enter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShedQueue {
    /// A local session's writer queue.
    Session,
    /// A router shard's mailbox and its byte-capped overflow.
    Shard,
    /// A remote domain's pending queue, mailbox or link writer.
    S2s,
    /// The store writer's pending writes (offline messages).
    Store,
}

impl ShedQueue {
    pub const ALL: [ShedQueue; 4] = [
        ShedQueue::Session,
        ShedQueue::Shard,
        ShedQueue::S2s,
        ShedQueue::Store,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            ShedQueue::Session => "session",
            ShedQueue::Shard => "shard",
            ShedQueue::S2s => "s2s",
            ShedQueue::Store => "store",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// A stanza shed by a full queue: presence is dropped, a message or IQ
/// request is answered with `resource-constraint` by the caller. Counted
/// in `fedrouter_shed_total{queue,kind}`.
pub struct Shed {
    pub queue: ShedQueue,
    pub kind: crate::xml::StanzaKind,
}

impl Shed {
    pub fn emit(self, metrics: &Metrics) {
        tracing::debug!(target: SHARD, queue = self.queue.as_str(), kind = ?self.kind, "queue full: stanza shed");
        metrics.shed[self.queue.index()][super::kind_index(self.kind)].increment(1);
    }
}

/// `delivered` offline messages (of `n` stored) were written to a session
/// that came online.
pub struct OfflineDelivered<'a> {
    pub user: &'a dyn Display,
    pub n: u64,
    pub delivered: u64,
}

impl OfflineDelivered<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::debug!(target: DELIVER, user = %self.user, n = self.n, "offline messages delivered");
        metrics.offline_delivered.increment(self.delivered);
    }
}

/// A message for an offline user refused by the user's offline quota
/// (`[storage] offline_max_messages_per_user` / `_bytes_per_user`); the
/// sender is answered with `resource-constraint`.
pub struct OfflineRefused<'a> {
    pub user: &'a dyn Display,
}

impl OfflineRefused<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::debug!(target: DELIVER, user = %self.user, "offline quota full: message refused");
        metrics.offline_refused.increment(1);
    }
}

/// Offline messages confirmed delivered, about to be deleted from storage;
/// or kept, because their session ended before confirming.
pub struct OfflineConfirmed<'a> {
    pub user: &'a dyn Display,
    pub upto: u64,
    pub delivered: bool,
}

impl OfflineConfirmed<'_> {
    pub fn emit(self, metrics: &Metrics, n: u64) {
        if self.delivered {
            tracing::debug!(target: DELIVER, user = %self.user, upto = self.upto, n, "offline messages confirmed delivered");
            metrics.offline_acked.increment(n);
        } else {
            tracing::debug!(target: DELIVER, user = %self.user, upto = self.upto, "session ended before confirming offline messages: kept for the next one");
        }
    }
}

/// Messages a closing session never wrote to its client, stored offline.
pub struct UnsentKept<'a> {
    pub user: &'a dyn Display,
    pub n: u64,
}

impl UnsentKept<'_> {
    pub fn emit(self) {
        if self.n > 0 {
            tracing::debug!(target: DELIVER, user = %self.user, n = self.n, "messages a closed session never wrote kept offline");
        }
    }
}

/// What a shard asked of the store when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StoreOp {
    ReadOffline,
    WriteOffline,
    LoadRoster,
    WriteRoster,
    /// The read task itself failed (a panicking store).
    Read,
}

/// A storage operation of a shard failed.
pub struct StoreFailed<'a> {
    pub op: StoreOp,
    pub user: &'a dyn Display,
    pub error: &'a dyn Display,
}

impl StoreFailed<'_> {
    pub fn emit(self) {
        let (target, msg, name) = match self.op {
            StoreOp::ReadOffline => (
                DELIVER,
                "reading offline messages failed",
                EventName::OfflineReadFailed,
            ),
            StoreOp::WriteOffline => (
                DELIVER,
                "storing an offline message failed; the sender was told",
                EventName::OfflineWriteFailed,
            ),
            StoreOp::LoadRoster => (SHARD, "loading roster failed", EventName::RosterLoadFailed),
            StoreOp::WriteRoster => (SHARD, "roster write failed", EventName::RosterWriteFailed),
            StoreOp::Read => (SHARD, "storage read failed", EventName::StoreReadFailed),
        };
        // `target:` must be a constant, so one arm per target.
        if target == DELIVER {
            tracing::error!(target: DELIVER, user = %self.user, error = %self.error, "{msg}");
        } else {
            tracing::error!(target: SHARD, user = %self.user, error = %self.error, "{msg}");
        }
        count(name);
    }
}

/// A shard's handler panicked on one message; the shard keeps serving.
pub struct ShardHandlerFailed<'a> {
    pub shard: usize,
    pub error: &'a dyn Display,
}

impl ShardHandlerFailed<'_> {
    pub fn emit(self) {
        tracing::error!(target: SHARD, shard = self.shard, error = %self.error, "shard handler failed");
        count(EventName::ShardHandlerFailed);
    }
}

/// A listener's `accept` failed (out of descriptors, most often); it backs
/// off and retries.
pub struct AcceptFailed<'a> {
    pub kind: &'a str,
    pub error: &'a dyn Display,
}

impl AcceptFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(target: ACCEPT, error = %self.error, "{} accept failed", self.kind);
        count(EventName::AcceptFailed);
    }
}
