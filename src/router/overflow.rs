//! What a shard's mailbox cannot take right now, when the sender is
//! another shard (or federation) and so must not wait: a per-shard FIFO,
//! bounded in bytes, drained by one task that does the waiting. Beyond the
//! cap a stanza is shed: presence is dropped, a message or IQ request is
//! answered with `resource-constraint`; either is counted.
//!
//! It replaces a task spawned per stanza, which held any number of
//! stanzas (and tasks) when a shard fell behind, in no order.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

use kameo::actor::ActorRef;
use kameo::error::SendError;

use super::{Deliver, Envelope, Shard};
use crate::transport::writer::presence_share;
use crate::xml::StanzaKind;

/// Bytes of stanzas held per shard beyond its mailbox.
pub const OVERFLOW_BYTES: usize = 32 * 1024 * 1024;

#[derive(Default)]
pub(super) struct Overflow {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    queue: VecDeque<Envelope>,
    bytes: usize,
    /// A drain task is running; it may hold one popped stanza in flight,
    /// so direct sends wait behind it to keep the order.
    draining: bool,
}

impl Overflow {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Hands `env` to `shard` without waiting: into its mailbox when there
    /// is room and nothing older waits here, else queued here (starting
    /// the drain task), else given back (`Some`) to be shed.
    pub(super) fn offer(
        self: &Arc<Self>,
        shard: &ActorRef<Shard>,
        env: Envelope,
        cap: usize,
    ) -> Option<Envelope> {
        let mut st = self.lock();
        let env = if st.queue.is_empty() && !st.draining {
            match shard.tell(Deliver(env)).try_send() {
                Ok(()) => return None,
                Err(SendError::MailboxFull(Deliver(env))) => env,
                // The shard is stopping: nothing will deliver it.
                Err(_) => return None,
            }
        } else {
            env
        };
        let len = env.stanza.bytes().len();
        let cap = if env.kind() == StanzaKind::Presence {
            presence_share(cap)
        } else {
            cap
        };
        if !st.queue.is_empty() && st.bytes + len > cap {
            return Some(env);
        }
        st.bytes += len;
        st.queue.push_back(env);
        if !st.draining {
            st.draining = true;
            tokio::spawn(self.clone().drain(shard.clone()));
        }
        None
    }

    async fn drain(self: Arc<Self>, shard: ActorRef<Shard>) {
        loop {
            let env = {
                let mut st = self.lock();
                match st.queue.pop_front() {
                    Some(env) => {
                        st.bytes -= env.stanza.bytes().len();
                        env
                    }
                    None => {
                        st.draining = false;
                        return;
                    }
                }
            };
            if shard.tell(Deliver(env)).await.is_err() {
                // The shard stopped (shutdown): nothing would deliver
                // what waits here.
                let mut st = self.lock();
                st.queue.clear();
                st.bytes = 0;
                st.draining = false;
                return;
            }
        }
    }
}
