//! `s2s.durable_queue`: the outbound journal. A message accepted for a
//! remote domain is written to the store (group commit, through the
//! [`StoreWriter`]) under an increasing id before its domain actor gets it,
//! and forgotten once settled: acknowledged by the peer (XEP-0198),
//! written to a peer without acknowledgements, or bounced. At start,
//! whatever the journal still holds was accepted and never settled (the
//! process was killed): it is sent again.
//!
//! A client's Stream Management ack for a message covers its journal entry
//! ([`Journal::barrier`]): what the daemon acknowledged survives a crash.

use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::storage::{StoreWriter, WriteOp};

pub struct Journal {
    writer: StoreWriter,
    next: AtomicU64,
}

impl Journal {
    /// Ids go on after `last`, the highest one found in the store.
    pub fn new(writer: StoreWriter, last: Option<u64>) -> Journal {
        Journal {
            writer,
            next: AtomicU64::new(last.map_or(0, |l| l + 1)),
        }
    }

    /// Journals `stanza` (as it will be sent); its id.
    pub fn append(&self, stanza: Bytes) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.writer
            .submit(vec![WriteOp::JournalOut { id, stanza }], None);
        id
    }

    /// The stanzas are settled: nothing to send again after a restart.
    pub fn forget(&self, ids: Vec<u64>) {
        if !ids.is_empty() {
            self.writer.submit(vec![WriteOp::ForgetOut { ids }], None);
        }
    }

    /// Resolves once everything journaled before the call is committed.
    pub async fn barrier(&self) {
        let _ = self.writer.commit(Vec::new()).await;
    }
}
