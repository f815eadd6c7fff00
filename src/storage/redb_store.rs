//! [`RedbStore`]: the embedded default, one redb file `fedrouter.redb`.
//!
//! Layout (all keys are bytes so a user's rows form one contiguous range):
//!
//! | table          | key                              | value                           |
//! |----------------|----------------------------------|---------------------------------|
//! | `meta`         | `"schema"`                       | `u64` schema version            |
//! | `accounts`     | bare JID                         | postcard [`Credentials`]        |
//! | `roster`       | `user \0 contact`                | postcard [`RosterItem`]         |
//! | `offline`      | `user \0 seq` (u64 big-endian)   | raw stanza bytes                |
//! | `offline_meta` | bare JID                         | `(next seq, count)`             |
//! | `offline_bytes`| bare JID                         | `u64` bytes of offline messages |
//!
//! Offline messages stay until they are acknowledged as delivered
//! ([`WriteOp::AckOffline`]); a user's sequence numbers only grow, so an
//! acknowledgement can never delete a message stored after the read it
//! answers. Schema 1 (before `offline_bytes`) is upgraded on open.
//!
//! A normalised JID never contains NUL, so `user\0` .. `user\x01` holds
//! exactly that user's rows, never those of `user` + more characters
//! (`a@x` vs `a@xy`). Offline stanzas are stored raw rather than through
//! postcard: they are already bytes and are only ever handed back whole.

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};

use super::{OfflineMessage, OfflineQuota, OpResults, Store, StoreError, WriteOp};
use crate::jid::BareJid;
use crate::roster::RosterItem;
use crate::storage::Credentials;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
const ROSTER: TableDefinition<&[u8], &[u8]> = TableDefinition::new("roster");
const OFFLINE: TableDefinition<&[u8], &[u8]> = TableDefinition::new("offline");
const OFFLINE_META: TableDefinition<&str, (u64, u64)> = TableDefinition::new("offline_meta");
const OFFLINE_BYTES: TableDefinition<&str, u64> = TableDefinition::new("offline_bytes");
/// The outbound journal (`s2s.durable_queue`): id → stanza as sent.
const OUTBOX: TableDefinition<u64, &[u8]> = TableDefinition::new("outbox");

const SCHEMA_VERSION: u64 = 2;
pub const FILE_NAME: &str = "fedrouter.redb";

pub struct RedbStore {
    db: Database,
    quota: OfflineQuota,
}

impl std::fmt::Debug for RedbStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedbStore").finish_non_exhaustive()
    }
}

fn from_redb(e: redb::Error) -> StoreError {
    match e {
        redb::Error::DatabaseAlreadyOpen | redb::Error::LockProtocolMismatch => StoreError::Locked,
        redb::Error::Io(io) => StoreError::Io(Arc::new(io)),
        redb::Error::Corrupted(msg) => StoreError::Corrupt(msg),
        other => StoreError::Backend(Arc::new(other)),
    }
}

macro_rules! from_redb_errors {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> StoreError {
                from_redb(e.into())
            }
        }
    )*};
}
from_redb_errors!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

fn encode<T: serde::Serialize>(v: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(v).map_err(|e| StoreError::Corrupt(format!("encode: {e}")))
}

fn decode<T: serde::de::DeserializeOwned>(b: &[u8], what: &str) -> Result<T, StoreError> {
    postcard::from_bytes(b).map_err(|e| StoreError::Corrupt(format!("{what}: {e}")))
}

/// `user \0`, the start of the user's range; the end is the same with `\x01`.
fn user_range(user: &BareJid) -> (Vec<u8>, Vec<u8>) {
    let mut lo = Vec::with_capacity(user.as_str().len() + 1);
    lo.extend_from_slice(user.as_str().as_bytes());
    lo.push(0);
    let mut hi = lo.clone();
    if let Some(last) = hi.last_mut() {
        *last = 1;
    }
    (lo, hi)
}

fn roster_key(user: &BareJid, contact: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + 1 + contact.len());
    k.extend_from_slice(user.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(contact.as_bytes());
    k
}

fn offline_key(user: &BareJid, seq: u64) -> Vec<u8> {
    let mut k = Vec::with_capacity(user.as_str().len() + 9);
    k.extend_from_slice(user.as_str().as_bytes());
    k.push(0);
    k.extend_from_slice(&seq.to_be_bytes());
    k
}

impl RedbStore {
    /// Creates `dir` if needed and opens (or creates) `dir/fedrouter.redb`.
    /// A second open of the same file while the first is alive, in this
    /// process or another, fails with [`StoreError::Locked`].
    pub fn open(dir: &Path) -> Result<RedbStore, StoreError> {
        std::fs::create_dir_all(dir).map_err(|e| StoreError::Io(Arc::new(e)))?;
        let db = Database::create(dir.join(FILE_NAME))?;
        let txn = db.begin_write()?;
        {
            let mut meta = txn.open_table(META)?;
            let version = meta.get("schema")?.map(|v| v.value());
            match version {
                None => {
                    meta.insert("schema", SCHEMA_VERSION)?;
                }
                Some(SCHEMA_VERSION) => {}
                Some(1) => {
                    upgrade_from_1(&txn)?;
                    meta.insert("schema", SCHEMA_VERSION)?;
                }
                Some(v) => {
                    return Err(StoreError::Corrupt(format!(
                        "schema version {v}, this build reads {SCHEMA_VERSION}"
                    )));
                }
            }
            // Created up front so read transactions never meet a missing table.
            txn.open_table(ACCOUNTS)?;
            txn.open_table(ROSTER)?;
            txn.open_table(OFFLINE)?;
            txn.open_table(OFFLINE_META)?;
            txn.open_table(OFFLINE_BYTES)?;
            txn.open_table(OUTBOX)?;
        }
        txn.commit()?;
        Ok(RedbStore {
            db,
            quota: OfflineQuota::default(),
        })
    }

    pub fn with_offline_quota(mut self, quota: OfflineQuota) -> RedbStore {
        self.quota = quota;
        self
    }

    /// [`RedbStore::with_offline_quota`] bounding the count only.
    pub fn with_offline_limit(self, messages: u64) -> RedbStore {
        self.with_offline_quota(OfflineQuota {
            messages,
            bytes: u64::MAX,
        })
    }
}

/// Schema 1 had no `offline_bytes`: each user's is summed from the stored
/// messages.
fn upgrade_from_1(txn: &redb::WriteTransaction) -> Result<(), StoreError> {
    let users: Vec<String> = {
        let meta = txn.open_table(OFFLINE_META)?;
        let mut users = Vec::new();
        for row in meta.iter()? {
            users.push(row?.0.value().to_string());
        }
        users
    };
    let offline = txn.open_table(OFFLINE)?;
    let mut bytes = txn.open_table(OFFLINE_BYTES)?;
    for user in users {
        let mut lo = user.as_bytes().to_vec();
        lo.push(0);
        let mut hi = user.as_bytes().to_vec();
        hi.push(1);
        let mut sum = 0u64;
        for row in offline.range(lo.as_slice()..hi.as_slice())? {
            sum += row?.1.value().len() as u64;
        }
        bytes.insert(user.as_str(), sum)?;
    }
    Ok(())
}

impl Store for RedbStore {
    fn create_account(&self, user: &BareJid, creds: &Credentials) -> Result<(), StoreError> {
        let value = encode(creds)?;
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(ACCOUNTS)?;
            if t.get(user.as_str())?.is_some() {
                return Err(StoreError::AlreadyExists);
            }
            t.insert(user.as_str(), value.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn set_credentials(&self, user: &BareJid, creds: &Credentials) -> Result<(), StoreError> {
        let value = encode(creds)?;
        let txn = self.db.begin_write()?;
        {
            let mut t = txn.open_table(ACCOUNTS)?;
            if t.get(user.as_str())?.is_none() {
                return Err(StoreError::NotFound);
            }
            t.insert(user.as_str(), value.as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn remove_account(&self, user: &BareJid) -> Result<(), StoreError> {
        let (lo, hi) = user_range(user);
        let txn = self.db.begin_write()?;
        {
            let mut accounts = txn.open_table(ACCOUNTS)?;
            if accounts.remove(user.as_str())?.is_none() {
                return Err(StoreError::NotFound);
            }
            txn.open_table(ROSTER)?
                .retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
            txn.open_table(OFFLINE)?
                .retain_in(lo.as_slice()..hi.as_slice(), |_, _| false)?;
            txn.open_table(OFFLINE_META)?.remove(user.as_str())?;
            txn.open_table(OFFLINE_BYTES)?.remove(user.as_str())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn credentials(&self, user: &BareJid) -> Result<Option<Credentials>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ACCOUNTS)?;
        match t.get(user.as_str())? {
            Some(v) => Ok(Some(decode(v.value(), "credentials")?)),
            None => Ok(None),
        }
    }

    fn list_accounts(&self) -> Result<Vec<BareJid>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ACCOUNTS)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, _) = row?;
            let jid = BareJid::parse(k.value())
                .map_err(|e| StoreError::Corrupt(format!("account key {:?}: {e}", k.value())))?;
            out.push(jid);
        }
        Ok(out)
    }

    fn roster(&self, user: &BareJid) -> Result<Vec<RosterItem>, StoreError> {
        let (lo, hi) = user_range(user);
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ROSTER)?;
        let mut out = Vec::new();
        for row in t.range(lo.as_slice()..hi.as_slice())? {
            let (_, v) = row?;
            out.push(decode(v.value(), "roster item")?);
        }
        Ok(out)
    }

    fn roster_item(&self, user: &BareJid, contact: &str) -> Result<Option<RosterItem>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(ROSTER)?;
        match t.get(roster_key(user, contact).as_slice())? {
            Some(v) => Ok(Some(decode(v.value(), "roster item")?)),
            None => Ok(None),
        }
    }

    fn offline_count(&self, user: &BareJid) -> Result<u64, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OFFLINE_META)?;
        Ok(t.get(user.as_str())?.map_or(0, |v| v.value().1))
    }

    fn apply(&self, ops: &[WriteOp]) -> Result<OpResults, StoreError> {
        let txn = self.db.begin_write()?;
        let mut results = Vec::with_capacity(ops.len());
        {
            let accounts = txn.open_table(ACCOUNTS)?;
            let mut roster = txn.open_table(ROSTER)?;
            let mut offline = txn.open_table(OFFLINE)?;
            let mut meta = txn.open_table(OFFLINE_META)?;
            let mut sizes = txn.open_table(OFFLINE_BYTES)?;
            let mut outbox = txn.open_table(OUTBOX)?;
            // Batches are usually many ops for few users.
            let mut known: Option<&BareJid> = None;
            for op in ops {
                let Some(user) = op.user() else {
                    match op {
                        WriteOp::JournalOut { id, stanza } => {
                            outbox.insert(*id, stanza.as_ref())?;
                        }
                        WriteOp::ForgetOut { ids } => {
                            for id in ids {
                                outbox.remove(*id)?;
                            }
                        }
                        _ => {}
                    }
                    results.push(Ok(()));
                    continue;
                };
                if known != Some(user) {
                    if accounts.get(user.as_str())?.is_none() {
                        results.push(Err(StoreError::NotFound));
                        continue;
                    }
                    known = Some(user);
                }
                match op {
                    WriteOp::PutRosterItem { item, .. } => {
                        let key = roster_key(user, &item.jid);
                        if item.is_void() {
                            roster.remove(key.as_slice())?;
                        } else {
                            roster.insert(key.as_slice(), encode(item)?.as_slice())?;
                        }
                    }
                    WriteOp::RemoveRosterItem { contact, .. } => {
                        roster.remove(roster_key(user, contact).as_slice())?;
                    }
                    WriteOp::PushOffline { stanza, .. } => {
                        let (next, count) = meta.get(user.as_str())?.map_or((0, 0), |v| v.value());
                        let bytes = sizes.get(user.as_str())?.map_or(0, |v| v.value());
                        let len = stanza.len() as u64;
                        if !self.quota.admits(count, bytes, len) {
                            results.push(Err(StoreError::QuotaExceeded));
                            continue;
                        }
                        offline.insert(offline_key(user, next).as_slice(), stanza.as_ref())?;
                        meta.insert(user.as_str(), (next + 1, count + 1))?;
                        sizes.insert(user.as_str(), bytes + len)?;
                    }
                    WriteOp::AckOffline { upto, .. } => {
                        let (lo, _) = user_range(user);
                        let hi = offline_key(user, *upto);
                        let (mut n, mut freed) = (0u64, 0u64);
                        for row in
                            offline.extract_from_if(lo.as_slice()..=hi.as_slice(), |_, _| true)?
                        {
                            freed += row?.1.value().len() as u64;
                            n += 1;
                        }
                        if n > 0 {
                            let (next, count) =
                                meta.get(user.as_str())?.map_or((0, 0), |v| v.value());
                            // The sequence goes on: an acknowledgement in
                            // flight must never meet a reused number.
                            meta.insert(user.as_str(), (next, count.saturating_sub(n)))?;
                            let bytes = sizes.get(user.as_str())?.map_or(0, |v| v.value());
                            sizes.insert(user.as_str(), bytes.saturating_sub(freed))?;
                        }
                    }
                    WriteOp::JournalOut { .. } | WriteOp::ForgetOut { .. } => {}
                }
                results.push(Ok(()));
            }
        }
        txn.commit()?;
        Ok(results)
    }

    fn read_outbox(&self) -> Result<Vec<(u64, Bytes)>, StoreError> {
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OUTBOX)?;
        let mut out = Vec::new();
        for row in t.iter()? {
            let (k, v) = row?;
            out.push((k.value(), Bytes::copy_from_slice(v.value())));
        }
        Ok(out)
    }

    fn read_offline(&self, user: &BareJid) -> Result<Vec<OfflineMessage>, StoreError> {
        let (lo, hi) = user_range(user);
        let txn = self.db.begin_read()?;
        let t = txn.open_table(OFFLINE)?;
        let mut out = Vec::new();
        for row in t.range(lo.as_slice()..hi.as_slice())? {
            let (k, v) = row?;
            let key = k.value();
            let seq = key
                .get(key.len().saturating_sub(8)..)
                .and_then(|b| <[u8; 8]>::try_from(b).ok())
                .map(u64::from_be_bytes)
                .ok_or_else(|| StoreError::Corrupt(format!("offline key {key:?}")))?;
            out.push(OfflineMessage {
                seq,
                stanza: Bytes::copy_from_slice(v.value()),
            });
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Subscription;
    use crate::storage::tests::*;

    fn open() -> (tempfile::TempDir, RedbStore) {
        let dir = tempfile::tempdir().unwrap();
        let s = RedbStore::open(dir.path()).unwrap();
        (dir, s)
    }

    #[test]
    fn redb_store_outbox_journal_survives_a_reopen() {
        let (dir, s) = open();
        outbox_journal(&s);
        drop(s);
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(
            s.read_outbox()
                .unwrap()
                .iter()
                .map(|e| e.0)
                .collect::<Vec<_>>(),
            vec![3, 9]
        );
    }

    #[test]
    fn redb_store_account_crud() {
        account_crud(&open().1);
    }

    #[test]
    fn redb_store_remove_account_cascades() {
        remove_cascades(&open().1);
    }

    #[test]
    fn redb_store_roster_scan_does_not_leak_other_users_items() {
        roster_scan_is_per_user(&open().1);
    }

    #[test]
    fn redb_store_refuses_writes_for_unknown_users_per_op() {
        writes_for_unknown_users_are_refused_per_op(&open().1);
    }

    #[test]
    fn redb_store_quota_refuses_only_the_excess() {
        let (_d, s) = open();
        quota_refuses_only_the_excess(&s.with_offline_limit(20), 20);
    }

    #[test]
    fn redb_store_default_quota_is_the_offline_limit() {
        let (_d, s) = open();
        quota_refuses_only_the_excess(&s, crate::storage::OFFLINE_LIMIT);
    }

    #[test]
    fn redb_store_offline_is_fifo() {
        offline_is_fifo(&open().1);
    }

    #[test]
    fn redb_store_offline_stays_until_acknowledged() {
        offline_stays_until_acknowledged(&open().1);
    }

    #[test]
    fn redb_store_byte_quota_refuses_what_would_pass_it() {
        let (_d, s) = open();
        byte_quota_refuses_what_would_pass_it(&s.with_offline_quota(OfflineQuota {
            messages: 3,
            bytes: 10,
        }));
    }

    #[test]
    fn a_schema_1_store_is_upgraded_with_each_users_offline_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let a = jid("a@x");
        {
            let s = RedbStore::open(dir.path()).unwrap();
            s.create_account(&a, &creds()).unwrap();
            s.apply(&[push(&a, "12345"), push(&a, "678")]).unwrap();
            // As schema 1 left it: no offline_bytes.
            let txn = s.db.begin_write().unwrap();
            txn.delete_table(OFFLINE_BYTES).unwrap();
            txn.open_table(META).unwrap().insert("schema", 1).unwrap();
            txn.commit().unwrap();
        }
        let s = RedbStore::open(dir.path())
            .unwrap()
            .with_offline_quota(OfflineQuota {
                messages: 10,
                bytes: 10,
            });
        // 8 bytes were counted: 2 more fit, 3 would not.
        assert!(matches!(
            s.apply(&[push(&a, "abc")]).unwrap()[0],
            Err(StoreError::QuotaExceeded)
        ));
        all_ok(s.apply(&[push(&a, "ab")]).unwrap());
        assert_eq!(s.take_offline(&a).unwrap(), vec!["12345", "678", "ab"]);
    }

    #[test]
    fn offline_order_and_accounts_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let a = jid("a@x");
        let c = creds();
        {
            let s = RedbStore::open(dir.path()).unwrap();
            s.create_account(&a, &c).unwrap();
            // More than 256 so a little-endian key would sort wrongly.
            let ops: Vec<_> = (0..300).map(|i| push(&a, &format!("m{i}"))).collect();
            s.apply(&ops).unwrap();
            s.apply(&[put(&a, item("c@y", Subscription::Both))])
                .unwrap();
        }
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.credentials(&a).unwrap(), Some(c));
        assert_eq!(s.roster(&a).unwrap().len(), 1);
        assert_eq!(s.offline_count(&a).unwrap(), 300);
        let msgs = s.take_offline(&a).unwrap();
        let expected: Vec<_> = (0..300).map(|i| format!("m{i}")).collect();
        assert_eq!(msgs, expected);
        drop(s);
        let s = RedbStore::open(dir.path()).unwrap();
        assert_eq!(s.offline_count(&a).unwrap(), 0);
        assert!(s.take_offline(&a).unwrap().is_empty());
    }

    #[test]
    fn opening_an_open_store_again_fails_as_locked() {
        let (dir, _s) = open();
        let err = RedbStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Locked), "{err:?}");
    }

    #[test]
    fn a_foreign_schema_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        {
            let db = Database::create(dir.path().join(FILE_NAME)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META).unwrap().insert("schema", 99).unwrap();
            txn.commit().unwrap();
        }
        let err = RedbStore::open(dir.path()).unwrap_err();
        assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    }

    #[test]
    fn readers_see_whole_batches_while_writes_commit() {
        let (_d, s) = open();
        let s = Arc::new(s);
        let a = jid("a@x");
        s.create_account(&a, &creds()).unwrap();
        let writer = {
            let s = s.clone();
            let a = a.clone();
            std::thread::spawn(move || {
                for i in 0..50 {
                    // Two items per transaction: a reader must never see an odd count.
                    s.apply(&[
                        put(&a, item(&format!("c{i}a@y"), Subscription::Both)),
                        put(&a, item(&format!("c{i}b@y"), Subscription::Both)),
                    ])
                    .unwrap();
                }
            })
        };
        let mut reads = 0;
        while !writer.is_finished() || reads == 0 {
            let n = s.roster(&a).unwrap().len();
            assert_eq!(n % 2, 0, "saw half a batch");
            reads += 1;
        }
        writer.join().unwrap();
        assert_eq!(s.roster(&a).unwrap().len(), 100);
    }
}
