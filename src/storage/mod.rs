//! Persistent state: accounts (SCRAM credentials, never passwords), rosters
//! and offline messages, behind the synchronous [`Store`] trait.
//!
//! [`RedbStore`] is the embedded default, [`MemStore`] the in-memory twin for
//! tests elsewhere. Writes go through [`StoreWriter`], which owns one OS
//! thread and commits whatever is queued in one durable transaction (group
//! commit), so a burst of roster pushes and offline messages costs one fsync.
//!
//! This module knows nothing of XML, sessions or routing; it stores what it is
//! given, keyed by normalised bare JIDs.

use std::sync::Arc;

use bytes::Bytes;

use crate::jid::BareJid;
use crate::roster::RosterItem;

mod credentials;
mod mem;
mod redb_store;
mod writer;

pub use credentials::{Credentials, ScramKeys};
pub use mem::MemStore;
pub use redb_store::{FILE_NAME as REDB_FILE_NAME, RedbStore};
pub use writer::{MAX_BATCH_OPS, MAX_PENDING_BYTES, ReadDone, StoreWriter, WriteDone};

/// Offline messages kept per user by default; beyond it
/// [`WriteOp::PushOffline`] is refused with [`StoreError::QuotaExceeded`]
/// (the caller answers the sender with `<resource-constraint/>`, type
/// `wait`).
pub const OFFLINE_LIMIT: u64 = 1000;
/// Bytes of offline messages kept per user by default.
pub const OFFLINE_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// How much offline storage one user may hold: a message that would pass
/// either bound is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OfflineQuota {
    pub messages: u64,
    pub bytes: u64,
}

impl Default for OfflineQuota {
    fn default() -> Self {
        OfflineQuota {
            messages: OFFLINE_LIMIT,
            bytes: OFFLINE_MAX_BYTES,
        }
    }
}

impl OfflineQuota {
    /// Whether a user holding `count` messages of `bytes` may take one of
    /// `len` bytes more.
    pub fn admits(&self, count: u64, bytes: u64, len: u64) -> bool {
        count < self.messages && bytes.saturating_add(len) <= self.bytes
    }
}

/// An offline message as stored: its place in the user's queue (increasing,
/// never reused) and its bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OfflineMessage {
    pub seq: u64,
    pub stanza: Bytes,
}

#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("account already exists")]
    AlreadyExists,
    #[error("no such account")]
    NotFound,
    #[error("offline message quota exceeded")]
    QuotaExceeded,
    /// The database file is already open, by this process or another one
    /// (redb `DatabaseAlreadyOpen`). Only one `RedbStore` may hold it.
    #[error("database is already open by another handle or process")]
    Locked,
    /// A stored value does not decode, or the file has an unknown schema.
    #[error("store is corrupt: {0}")]
    Corrupt(String),
    #[error("store I/O error: {0}")]
    Io(Arc<std::io::Error>),
    #[error("store error: {0}")]
    Backend(Arc<dyn std::error::Error + Send + Sync>),
    /// The [`StoreWriter`] has shut down; the request was not executed.
    #[error("store writer is shut down")]
    Closed,
}

/// One write in a batch given to [`Store::apply`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteOp {
    /// Inserts or replaces the item keyed by `item.jid`. An item that
    /// [`is_void`](RosterItem::is_void) is deleted instead: it carries no state.
    PutRosterItem { user: BareJid, item: RosterItem },
    /// Removing an absent item is not an error.
    RemoveRosterItem { user: BareJid, contact: String },
    /// Appends to the user's offline queue.
    PushOffline { user: BareJid, stanza: Bytes },
    /// Deletes the user's offline messages up to and including `upto`
    /// (their [`OfflineMessage::seq`]): they were delivered.
    AckOffline { user: BareJid, upto: u64 },
    /// Journals a stanza accepted for a remote domain (`s2s.durable_queue`)
    /// under `id` (increasing, allocated by the caller): it is sent again
    /// after a restart unless [`WriteOp::ForgetOut`] came first.
    JournalOut { id: u64, stanza: Bytes },
    /// The journaled stanzas are settled (acknowledged, bounced, or written
    /// to a peer without acknowledgements). Absent ids are ignored.
    ForgetOut { ids: Vec<u64> },
}

impl WriteOp {
    /// The account a write belongs to (`None`: the outbound journal, which
    /// belongs to none).
    pub fn user(&self) -> Option<&BareJid> {
        match self {
            WriteOp::PutRosterItem { user, .. }
            | WriteOp::RemoveRosterItem { user, .. }
            | WriteOp::PushOffline { user, .. }
            | WriteOp::AckOffline { user, .. } => Some(user),
            WriteOp::JournalOut { .. } | WriteOp::ForgetOut { .. } => None,
        }
    }
}

/// Per-op outcome of [`Store::apply`], in the order of the ops.
pub type OpResults = Vec<Result<(), StoreError>>;

/// The storage backend. Synchronous: callers run reads with
/// `spawn_blocking` and writes through [`StoreWriter`].
///
/// Every user-keyed write requires the account to exist, so a write queued
/// before `remove_account` and committed after it cannot leave data behind
/// for a later account of the same name.
pub trait Store: Send + Sync + 'static {
    /// [`StoreError::AlreadyExists`] if the account exists.
    fn create_account(&self, user: &BareJid, creds: &Credentials) -> Result<(), StoreError>;
    /// [`StoreError::NotFound`] if the account is absent.
    fn set_credentials(&self, user: &BareJid, creds: &Credentials) -> Result<(), StoreError>;
    /// Also deletes the roster and offline messages, in the same transaction.
    /// [`StoreError::NotFound`] if absent.
    fn remove_account(&self, user: &BareJid) -> Result<(), StoreError>;
    fn credentials(&self, user: &BareJid) -> Result<Option<Credentials>, StoreError>;
    /// Sorted by JID string.
    fn list_accounts(&self) -> Result<Vec<BareJid>, StoreError>;
    /// All items, unlisted ones too, sorted by contact JID.
    fn roster(&self, user: &BareJid) -> Result<Vec<RosterItem>, StoreError>;
    fn roster_item(&self, user: &BareJid, contact: &str) -> Result<Option<RosterItem>, StoreError>;
    fn offline_count(&self, user: &BareJid) -> Result<u64, StoreError>;
    /// Applies a batch of writes in ONE durable transaction (group commit),
    /// in order.
    ///
    /// Two levels of failure:
    /// * `Err(e)`: the transaction failed (I/O, corruption) and **nothing**
    ///   was written.
    /// * `Ok(results)`: the transaction committed; `results[i]` says whether
    ///   `ops[i]` took effect. An op is refused, without affecting the others,
    ///   with [`StoreError::QuotaExceeded`] (offline queue full) or
    ///   [`StoreError::NotFound`] (no such account). Refusal is decided
    ///   inside the transaction, so quota checks cannot race.
    fn apply(&self, ops: &[WriteOp]) -> Result<OpResults, StoreError>;
    /// The user's offline messages, oldest first; nothing is removed (that
    /// is [`WriteOp::AckOffline`], once they are delivered). No account, or
    /// no messages: an empty Vec.
    fn read_offline(&self, user: &BareJid) -> Result<Vec<OfflineMessage>, StoreError>;

    /// The outbound journal ([`WriteOp::JournalOut`] not forgotten), by
    /// increasing id.
    fn read_outbox(&self) -> Result<Vec<(u64, Bytes)>, StoreError>;

    /// Removes and returns the user's offline messages, oldest first (for
    /// tests and tools; delivery reads, then acknowledges).
    fn take_offline(&self, user: &BareJid) -> Result<Vec<Bytes>, StoreError> {
        let msgs = self.read_offline(user)?;
        if let Some(last) = msgs.last() {
            let ack = WriteOp::AckOffline {
                user: user.clone(),
                upto: last.seq,
            };
            if let Some(r) = self.apply(&[ack])?.pop() {
                r?;
            }
        }
        Ok(msgs.into_iter().map(|m| m.stanza).collect())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    //! Behaviour every [`Store`] must share, run against both backends.

    use super::*;
    use crate::roster::Subscription;

    pub(crate) fn jid(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    pub(crate) fn creds() -> Credentials {
        // Few iterations: these tests exercise storage, not SCRAM.
        Credentials::from_password("secret", 2).unwrap()
    }

    pub(crate) fn item(contact: &str, sub: Subscription) -> RosterItem {
        let mut i = RosterItem::new(contact);
        i.subscription = sub;
        i.listed = true;
        i
    }

    pub(crate) fn push(user: &BareJid, body: &str) -> WriteOp {
        WriteOp::PushOffline {
            user: user.clone(),
            stanza: Bytes::copy_from_slice(body.as_bytes()),
        }
    }

    pub(crate) fn put(user: &BareJid, item: RosterItem) -> WriteOp {
        WriteOp::PutRosterItem {
            user: user.clone(),
            item,
        }
    }

    pub(crate) fn all_ok(r: OpResults) {
        assert!(r.iter().all(Result::is_ok), "{r:?}");
    }

    /// The outbound journal keeps what is not forgotten, by id, and
    /// belongs to no account.
    pub(crate) fn outbox_journal(s: &dyn Store) {
        let j = |id: u64, b: &'static str| WriteOp::JournalOut {
            id,
            stanza: Bytes::from_static(b.as_bytes()),
        };
        all_ok(
            s.apply(&[j(7, "<m7/>"), j(3, "<m3/>"), j(9, "<m9/>")])
                .unwrap(),
        );
        all_ok(
            s.apply(&[WriteOp::ForgetOut { ids: vec![7, 100] }])
                .unwrap(),
        );
        let out = s.read_outbox().unwrap();
        assert_eq!(
            out,
            vec![
                (3, Bytes::from_static(b"<m3/>")),
                (9, Bytes::from_static(b"<m9/>"))
            ]
        );
    }

    pub(crate) fn account_crud(s: &dyn Store) {
        let a = jid("alice@example.org");
        let b = jid("bob@example.org");
        assert!(s.credentials(&a).unwrap().is_none());
        assert!(matches!(
            s.set_credentials(&a, &creds()),
            Err(StoreError::NotFound)
        ));
        let c1 = creds();
        s.create_account(&b, &c1).unwrap();
        s.create_account(&a, &c1).unwrap();
        assert!(matches!(
            s.create_account(&a, &creds()),
            Err(StoreError::AlreadyExists)
        ));
        assert_eq!(s.credentials(&a).unwrap(), Some(c1.clone()));
        let c2 = creds();
        s.set_credentials(&a, &c2).unwrap();
        assert_eq!(s.credentials(&a).unwrap(), Some(c2));
        assert_eq!(s.list_accounts().unwrap(), vec![a.clone(), b.clone()]);
        s.remove_account(&a).unwrap();
        assert!(matches!(s.remove_account(&a), Err(StoreError::NotFound)));
        assert_eq!(s.list_accounts().unwrap(), vec![b]);
    }

    pub(crate) fn remove_cascades(s: &dyn Store) {
        let a = jid("a@x");
        s.create_account(&a, &creds()).unwrap();
        all_ok(
            s.apply(&[put(&a, item("c@y", Subscription::Both)), push(&a, "m1")])
                .unwrap(),
        );
        s.remove_account(&a).unwrap();
        s.create_account(&a, &creds()).unwrap();
        assert!(s.roster(&a).unwrap().is_empty());
        assert_eq!(s.offline_count(&a).unwrap(), 0);
        assert!(s.take_offline(&a).unwrap().is_empty());
    }

    pub(crate) fn roster_scan_is_per_user(s: &dyn Store) {
        let a = jid("a@x");
        let axy = jid("a@xy");
        let ax = jid("a.x@y");
        for u in [&a, &axy, &ax] {
            s.create_account(u, &creds()).unwrap();
        }
        all_ok(
            s.apply(&[
                put(&axy, item("other@z", Subscription::To)),
                put(&a, item("zed@z", Subscription::From)),
                put(&a, item("amy@z", Subscription::None)),
                put(&ax, item("third@z", Subscription::None)),
            ])
            .unwrap(),
        );
        let r = s.roster(&a).unwrap();
        let jids: Vec<_> = r.iter().map(|i| i.jid.as_str()).collect();
        assert_eq!(jids, ["amy@z", "zed@z"]);
        assert_eq!(s.roster(&axy).unwrap().len(), 1);
        assert_eq!(
            s.roster_item(&a, "zed@z").unwrap().unwrap().subscription,
            Subscription::From
        );
        assert!(s.roster_item(&a, "other@z").unwrap().is_none());

        // Replace, remove, and a void item is dropped rather than stored.
        let mut unlisted = RosterItem::new("pending@z");
        unlisted.pending_in = true;
        all_ok(
            s.apply(&[
                put(&a, item("zed@z", Subscription::Both)),
                WriteOp::RemoveRosterItem {
                    user: a.clone(),
                    contact: "amy@z".into(),
                },
                WriteOp::RemoveRosterItem {
                    user: a.clone(),
                    contact: "never@z".into(),
                },
                put(&a, unlisted.clone()),
                put(&a, RosterItem::new("void@z")),
            ])
            .unwrap(),
        );
        let r = s.roster(&a).unwrap();
        assert_eq!(r, vec![unlisted, item("zed@z", Subscription::Both)]);
    }

    pub(crate) fn writes_for_unknown_users_are_refused_per_op(s: &dyn Store) {
        let a = jid("a@x");
        let ghost = jid("ghost@x");
        s.create_account(&a, &creds()).unwrap();
        let r = s
            .apply(&[
                push(&a, "1"),
                push(&ghost, "lost"),
                put(&ghost, item("c@y", Subscription::Both)),
                push(&a, "2"),
            ])
            .unwrap();
        assert!(r[0].is_ok() && r[3].is_ok());
        assert!(matches!(r[1], Err(StoreError::NotFound)));
        assert!(matches!(r[2], Err(StoreError::NotFound)));
        assert_eq!(s.take_offline(&a).unwrap(), vec!["1", "2"]);
        assert!(s.roster(&ghost).unwrap().is_empty());
    }

    pub(crate) fn quota_refuses_only_the_excess(s: &dyn Store, limit: u64) {
        let a = jid("a@x");
        let b = jid("b@x");
        s.create_account(&a, &creds()).unwrap();
        s.create_account(&b, &creds()).unwrap();
        let mut ops: Vec<_> = (0..limit).map(|i| push(&a, &i.to_string())).collect();
        ops.push(push(&a, "over"));
        ops.push(push(&b, "fine"));
        let r = s.apply(&ops).unwrap();
        assert!(r[..limit as usize].iter().all(Result::is_ok));
        assert!(matches!(r[limit as usize], Err(StoreError::QuotaExceeded)));
        assert!(r[limit as usize + 1].is_ok());
        assert_eq!(s.offline_count(&a).unwrap(), limit);
        assert_eq!(s.offline_count(&b).unwrap(), 1);
        // Taking the messages frees the quota.
        assert_eq!(s.take_offline(&a).unwrap().len() as u64, limit);
        all_ok(s.apply(&[push(&a, "again")]).unwrap());
        assert_eq!(s.take_offline(&a).unwrap(), vec!["again"]);
    }

    pub(crate) fn offline_is_fifo(s: &dyn Store) {
        let a = jid("a@x");
        s.create_account(&a, &creds()).unwrap();
        all_ok(s.apply(&[push(&a, "1"), push(&a, "2")]).unwrap());
        all_ok(s.apply(&[push(&a, "3")]).unwrap());
        assert_eq!(s.offline_count(&a).unwrap(), 3);
        assert_eq!(s.take_offline(&a).unwrap(), vec!["1", "2", "3"]);
        assert_eq!(s.offline_count(&a).unwrap(), 0);
        assert!(s.take_offline(&a).unwrap().is_empty());
        all_ok(s.apply(&[push(&a, "4")]).unwrap());
        assert_eq!(s.take_offline(&a).unwrap(), vec!["4"]);
    }

    /// Reading leaves the messages; acknowledging up to a sequence number
    /// deletes those and no later ones; numbers are never reused.
    pub(crate) fn offline_stays_until_acknowledged(s: &dyn Store) {
        let a = jid("a@x");
        s.create_account(&a, &creds()).unwrap();
        all_ok(
            s.apply(&[push(&a, "1"), push(&a, "2"), push(&a, "3")])
                .unwrap(),
        );
        let read = s.read_offline(&a).unwrap();
        assert_eq!(read, s.read_offline(&a).unwrap(), "reading removes nothing");
        let texts: Vec<_> = read.iter().map(|m| m.stanza.clone()).collect();
        assert_eq!(texts, vec!["1", "2", "3"]);
        assert!(read.windows(2).all(|w| w[0].seq < w[1].seq));
        let ack = |upto| WriteOp::AckOffline {
            user: a.clone(),
            upto,
        };
        all_ok(s.apply(&[ack(read[1].seq)]).unwrap());
        assert_eq!(s.offline_count(&a).unwrap(), 1);
        all_ok(s.apply(&[push(&a, "4")]).unwrap());
        let left = s.read_offline(&a).unwrap();
        assert_eq!(left[0], read[2]);
        assert_eq!(left[1].stanza, "4");
        assert!(
            left[1].seq > read[2].seq,
            "a sequence number is never reused"
        );
        // Acknowledging again, or beyond what exists, is harmless.
        all_ok(s.apply(&[ack(read[1].seq), ack(left[1].seq)]).unwrap());
        assert!(s.read_offline(&a).unwrap().is_empty());
        all_ok(s.apply(&[push(&a, "5")]).unwrap());
        assert!(s.read_offline(&a).unwrap()[0].seq > left[1].seq);
    }

    /// A store whose quota is 3 messages and 10 bytes.
    pub(crate) fn byte_quota_refuses_what_would_pass_it(s: &dyn Store) {
        let a = jid("a@x");
        s.create_account(&a, &creds()).unwrap();
        let r = s
            .apply(&[push(&a, "12345"), push(&a, "123456"), push(&a, "12345")])
            .unwrap();
        assert!(r[0].is_ok() && r[2].is_ok(), "exactly 10 bytes fit");
        assert!(
            matches!(r[1], Err(StoreError::QuotaExceeded)),
            "11 would not"
        );
        assert!(matches!(
            s.apply(&[push(&a, "x")]).unwrap()[0],
            Err(StoreError::QuotaExceeded)
        ));
        let first = s.read_offline(&a).unwrap()[0].seq;
        all_ok(
            s.apply(&[WriteOp::AckOffline {
                user: a.clone(),
                upto: first,
            }])
            .unwrap(),
        );
        let r = s
            .apply(&[push(&a, "1"), push(&a, "2"), push(&a, "3")])
            .unwrap();
        assert!(r[0].is_ok() && r[1].is_ok(), "acknowledged bytes are freed");
        assert!(
            matches!(r[2], Err(StoreError::QuotaExceeded)),
            "the count bound holds too"
        );
    }

    #[test]
    fn mem_store_offline_stays_until_acknowledged() {
        offline_stays_until_acknowledged(&MemStore::new());
    }

    #[test]
    fn mem_store_byte_quota_refuses_what_would_pass_it() {
        byte_quota_refuses_what_would_pass_it(&MemStore::new().with_offline_quota(OfflineQuota {
            messages: 3,
            bytes: 10,
        }));
    }

    #[test]
    fn mem_store_outbox_journal() {
        outbox_journal(&MemStore::new());
    }

    #[test]
    fn mem_store_account_crud() {
        account_crud(&MemStore::new());
    }

    #[test]
    fn mem_store_remove_account_cascades() {
        remove_cascades(&MemStore::new());
    }

    #[test]
    fn mem_store_roster_scan_is_per_user() {
        roster_scan_is_per_user(&MemStore::new());
    }

    #[test]
    fn mem_store_refuses_writes_for_unknown_users_per_op() {
        writes_for_unknown_users_are_refused_per_op(&MemStore::new());
    }

    #[test]
    fn mem_store_quota_refuses_only_the_excess() {
        quota_refuses_only_the_excess(&MemStore::new().with_offline_limit(5), 5);
    }

    #[test]
    fn mem_store_offline_is_fifo() {
        offline_is_fifo(&MemStore::new());
    }
}
