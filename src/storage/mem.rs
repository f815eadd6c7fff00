//! [`MemStore`]: the [`Store`] contract in a `Mutex`, for unit tests of the
//! code above storage. Same rules as [`RedbStore`](super::RedbStore):
//! per-op refusals, quota, void roster items dropped.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;

use super::{OFFLINE_LIMIT, OpResults, Store, StoreError, WriteOp};
use crate::jid::BareJid;
use crate::roster::RosterItem;
use crate::storage::Credentials;

#[derive(Default)]
struct Inner {
    accounts: BTreeMap<BareJid, Credentials>,
    rosters: HashMap<BareJid, BTreeMap<String, RosterItem>>,
    offline: HashMap<BareJid, VecDeque<Bytes>>,
}

pub struct MemStore {
    inner: Mutex<Inner>,
    offline_limit: u64,
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
            offline_limit: OFFLINE_LIMIT,
        }
    }

    pub fn with_offline_limit(mut self, limit: u64) -> MemStore {
        self.offline_limit = limit;
        self
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
        Ok(self.lock().offline.get(user).map_or(0, |q| q.len() as u64))
    }

    fn apply(&self, ops: &[WriteOp]) -> Result<OpResults, StoreError> {
        let mut g = self.lock();
        let g = &mut *g;
        let results = ops
            .iter()
            .map(|op| {
                let user = op.user();
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
                        if q.len() as u64 >= self.offline_limit {
                            return Err(StoreError::QuotaExceeded);
                        }
                        q.push_back(stanza.clone());
                    }
                }
                Ok(())
            })
            .collect();
        Ok(results)
    }

    fn take_offline(&self, user: &BareJid) -> Result<Vec<Bytes>, StoreError> {
        Ok(self
            .lock()
            .offline
            .remove(user)
            .map(Vec::from)
            .unwrap_or_default())
    }
}
