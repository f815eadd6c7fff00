//! How an outbound domain actor gets its stream: a [`Connector`] turns a
//! (local, remote) pair into a negotiated, authenticated [`Link`]. The
//! daemon's connector is [`Network`]: the partner's static route or DNS,
//! TCP with Happy Eyeballs, TLS and the sans-IO negotiation
//! (`connect.rs`). An embedder may supply another through
//! [`crate::start_with_connector`] (a tunnel, a transport established
//! elsewhere, or an in-memory link for benchmarks); the actor treats every
//! link alike: it reads the peer's stream from it and writes stanzas into
//! it through its batched writer.
//!
//! This module owns the seam only. Queues, retries, backoff, limits and
//! policy stay in the actor, so whatever connector is used, they behave
//! the same.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use super::{ConnectError, S2sShared, connect_and_negotiate};
use crate::stream::s2s::{AuthMethod, OutMode};
use crate::transport::Connection;

/// An outbound stream that is negotiated and authenticated: what is read
/// from it next is the peer's stanzas (or its close), what is written to it
/// goes to the peer as stanzas.
pub struct Link {
    /// Whole (not yet split), its framer holding anything the peer sent
    /// after the negotiation in the same read. A connector that is not TCP
    /// wraps its stream in [`crate::transport::Transport::Stream`].
    pub conn: Connection,
    /// How we were authenticated, for the metrics (`None`: by no method the
    /// negotiation knows, as with a link that was never negotiated).
    pub method: Option<AuthMethod>,
    pub peer_addr: SocketAddr,
    /// The peer offered XEP-0198 Stream Management on this stream.
    pub sm: bool,
}

/// A connection attempt under way.
pub type Connecting = Pin<Box<dyn Future<Output = Result<Link, ConnectError>> + Send>>;

/// Obtains outbound links; called once per attempt, from the outbound
/// domain actor, whose own task awaits the returned future.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, shared: Arc<S2sShared>, local: String, remote: String) -> Connecting;
}

/// The daemon's connector: DNS (or the partner's `proxy_fqdn`), TCP, TLS
/// and stream negotiation, within `stream_establishment_timeout`.
#[derive(Debug, Default, Clone, Copy)]
pub struct Network;

impl Connector for Network {
    fn connect(&self, shared: Arc<S2sShared>, local: String, remote: String) -> Connecting {
        Box::pin(async move {
            let est = connect_and_negotiate(shared, local, remote, OutMode::Authenticate).await?;
            Ok(Link {
                conn: est.conn,
                method: est.method,
                peer_addr: est.peer_addr,
                sm: est.sm,
            })
        })
    }
}
