//! What the benches share: binding a session without a socket.

use fedrouter::jid::{BareJid, FullJid};
use fedrouter::router::CloseSession;
use fedrouter::router::{Bind, Router, SESSION_QUEUE};
use kameo::actor::Spawn;
use kameo::message::{Context, Message};

/// Stands in for a session's actor: shards may ask it to close.
#[derive(kameo::Actor)]
struct NullSession;

impl Message<CloseSession> for NullSession {
    type Reply = ();
    async fn handle(&mut self, _: CloseSession, _: &mut Context<Self, ()>) {}
}

/// Binds `user/resource` on its shard; what the shard delivers to the
/// session arrives on the returned queue.
pub async fn bind(
    router: &Router,
    user: &BareJid,
    resource: &str,
    id: u64,
) -> (FullJid, fedrouter::transport::writer::QueueReceiver) {
    let (tx, rx) = fedrouter::transport::writer::queue(fedrouter::transport::writer::QueueLimits {
        frames: SESSION_QUEUE,
        bytes: fedrouter::config::defaults::SESSION_QUEUE_BYTES,
    });
    let control = NullSession::spawn(NullSession).recipient::<CloseSession>();
    let (jid, _) = router
        .shard(user)
        .ask(Bind {
            user: user.clone(),
            requested: Some(resource.into()),
            id,
            out: tx,
            control,
        })
        .await
        .expect("bind");
    (jid, rx)
}

/// The runtime the daemon runs on: multi-thread, one worker per core of
/// the 2-core machine the figures are quoted for.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}
