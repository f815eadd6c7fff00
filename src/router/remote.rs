//! [`Remote`]: how routing reaches federation. The router hands stanzas
//! for remote domains to whatever implements it (the s2s side's
//! `S2sRouter`), so routing does not depend on the federation code that
//! depends on it.

use std::future::Future;
use std::pin::Pin;

use crate::jid::Jid;
use crate::router::Envelope;
use crate::xml::Stanza;

/// The outbound side of federation, as routing sees it. `send` and
/// `send_many` never wait: shards call them from inside their handlers.
pub trait Remote: Send + Sync + 'static {
    /// Queues one stanza for a remote domain (or bounces it).
    fn send(&self, env: Envelope);

    /// [`Remote::send`] from a session, which may wait where `send` would
    /// shed: the backpressure that slows a fast sender down to what the
    /// domain's actor takes. `None` when the stanza was handed over (or
    /// refused) at once; otherwise the wait, to be awaited.
    fn send_or_wait(&self, env: Envelope) -> Option<Pin<Box<dyn Future<Output = ()> + Send + '_>>> {
        self.send(env);
        None
    }

    /// One stanza of a local user to many remote contacts (presence
    /// broadcast), decided once per domain rather than once per contact.
    fn send_many(&self, stanza: Stanza, from: Jid, tos: Vec<Jid>);
}
