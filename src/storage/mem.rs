//! [`MemStore`]: the [`Store`] contract in a `Mutex`, for unit tests of the
//! code above storage. Same rules as [`RedbStore`](super::RedbStore):
//! per-op refusals, quota, void roster items dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{OfflineMessage, OfflineQuota, OpResults, Store, StoreError, WriteOp};
use crate::jid::BareJid;
use crate::roster::RosterItem;
use crate::storage::Credentials;

#[derive(Default)]
struct Inner {
    accounts: BTreeMap<BareJid, Credentials>,
    rosters: HashMap<BareJid, BTreeMap<String, RosterItem>>,
    offline: HashMap<BareJid, Offline>,
    outbox: BTreeMap<u64, Bytes>,
}

/// One user's offline queue: the next sequence number (never reused while
/// the account lives) and the messages with theirs.
#[derive(Default)]
struct Offline {
    next: u64,
    bytes: u64,
    queue: VecDeque<OfflineMessage>,
}

pub struct MemStore {
    inner: Mutex<Inner>,
    quota: OfflineQuota,
}

impl Default for MemStore {
    fn default() -> Self {
        MemStore::new()
    }
}

impl MemStore {
    pub fn new() -> MemStore {
        MemStore {
            inner: Mutex::new(Inner::default()),
            quota: OfflineQuota::default(),
        }
    }

    pub fn with_offline_quota(mut self, quota: OfflineQuota) -> MemStore {
        self.quota = quota;
        self
    }

    /// [`MemStore::with_offline_quota`] bounding the count only.
    pub fn with_offline_limit(self, messages: u64) -> MemStore {
        self.with_offline_quota(OfflineQuota {
            messages,
            bytes: u64::MAX,
        })
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method leaves Inner consistent before anything can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Store for MemStore {
    fn create_account(&self, user: &BareJid, creds: &Credentials) -> Result<(), StoreError> {
        let mut g = self.lock();
        if g.accounts.contains_key(user) {
            return Err(StoreError::AlreadyExists);
        }
        g.accounts.insert(user.clone(), creds.clone());
        Ok(())
    }

    fn set_credentials(&self, user: &BareJid, creds: &Credentials) -> Result<(), StoreError> {
        match self.lock().accounts.get_mut(user) {
            Some(c) => {
                *c = creds.clone();
                Ok(())
            }
            None => Err(StoreError::NotFound),
        }
    }

    fn remove_account(&self, user: &BareJid) -> Result<(), StoreError> {
        let mut g = self.lock();
        g.accounts.remove(user).ok_or(StoreError::NotFound)?;
        g.rosters.remove(user);
        g.offline.remove(user);
        Ok(())
    }

    fn credentials(&self, user: &BareJid) -> Result<Option<Credentials>, StoreError> {
        Ok(self.lock().accounts.get(user).cloned())
    }

    fn list_accounts(&self) -> Result<Vec<BareJid>, StoreError> {
        Ok(self.lock().accounts.keys().cloned().collect())
    }

    fn roster(&self, user: &BareJid) -> Result<Vec<RosterItem>, StoreError> {
        Ok(self
            .lock()
            .rosters
            .get(user)
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default())
    }

    fn roster_item(&self, user: &BareJid, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        Ok(self
            .lock()
            .rosters
            .get(user)
            .and_then(|r| r.get(contact).cloned()))
    }

    fn offline_count(&self, user: &BareJid) -> Result<u64, StoreError> {
        Ok(self
            .lock()
            .offline
            .get(user)
            .map_or(0, |q| q.queue.len() as u64))
    }

    fn apply(&self, ops: &[WriteOp]) -> Result<OpResults, StoreError> {
        let mut g = self.lock();
        let g = &mut *g;
        let results = ops
            .iter()
            .map(|op| {
                let Some(user) = op.user() else {
                    match op {
                        WriteOp::JournalOut { id, stanza } => {
                            g.outbox.insert(*id, stanza.clone());
                        }
                        WriteOp::ForgetOut { ids } => {
                            for id in ids {
                                g.outbox.remove(id);
                            }
                        }
                        _ => {}
                    }
                    return Ok(());
                };
                if !g.accounts.contains_key(user) {
                    return Err(StoreError::NotFound);
                }
                match op {
                    WriteOp::PutRosterItem { item, .. } => {
                        let r = g.rosters.entry(user.clone()).or_default();
                        if item.is_void() {
                            r.remove(&item.jid);
                        } else {
                            r.insert(item.jid.clone(), item.clone());
                        }
                    }
                    WriteOp::RemoveRosterItem { contact, .. } => {
                        if let Some(r) = g.rosters.get_mut(user) {
                            r.remove(contact);
                        }
                    }
                    WriteOp::PushOffline { stanza, .. } => {
                        let q = g.offline.entry(user.clone()).or_default();
                        let len = stanza.len() as u64;
                        if !self.quota.admits(q.queue.len() as u64, q.bytes, len) {
                            return Err(StoreError::QuotaExceeded);
                        }
                        q.queue.push_back(OfflineMessage {
                            seq: q.next,
                            stanza: stanza.clone(),
                        });
                        q.next += 1;
                        q.bytes += len;
                    }
                    WriteOp::AckOffline { upto, .. } => {
                        if let Some(q) = g.offline.get_mut(user) {
                            while q.queue.front().is_some_and(|m| m.seq <= *upto) {
                                if let Some(m) = q.queue.pop_front() {
                                    q.bytes -= m.stanza.len() as u64;
                                }
                            }
                        }
                    }
                    WriteOp::JournalOut { .. } | WriteOp::ForgetOut { .. } => {}
                }
                Ok(())
            })
            .collect();
        Ok(results)
    }

    fn read_outbox(&self) -> Result<Vec<(u64, Bytes)>, StoreError> {
        Ok(self
            .lock()
            .outbox
            .iter()
            .map(|(id, b)| (*id, b.clone()))
            .collect())
    }

    fn read_offline(&self, user: &BareJid) -> Result<Vec<OfflineMessage>, StoreError> {
        Ok(self
            .lock()
            .offline
            .get(user)
            .map(|q| q.queue.iter().cloned().collect())
            .unwrap_or_default())
    }
}
