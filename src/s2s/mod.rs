//! Server-to-server federation: one actor per (local, remote) domain pair
//! for outbound traffic ([`outbound`]), one actor per inbound connection
//! ([`inbound`]), and the shared pieces they use: DNS, certificates,
//! dialback secret, connection limits.
//!
//! This module owns connections and queues; it must not hold user state:
//! stanzas that arrive are routed to shards like any other.

mod connect;
pub mod inbound;
pub mod outbound;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use dashmap::DashMap;
use kameo::actor::{ActorRef, Spawn};

use crate::config::Config;
use crate::dns::Resolver;
use crate::events::{Metrics, S2sMetrics};
use crate::jid::Jid;
use crate::pki::PeerVerifier;
use crate::policy::admit::{
    self, Admission, Case, Direction, Kind, Reason, Refusal, Reply, RosterState, UserAccess,
};
use crate::router::{Envelope, Router};
use crate::stream::s2s::PeerPolicy;
use crate::tls::CertStore;
use crate::xml::Stanza;

pub use connect::{ConnectError, Established, connect_and_negotiate};
pub use outbound::{OutboundDomain, Send as SendRemote};

/// Everything the s2s actors share.
pub struct S2sShared {
    pub config: Arc<Config>,
    pub router: Router,
    pub metrics: Arc<Metrics>,
    pub s2s_metrics: S2sMetrics,
    pub resolver: Resolver,
    pub verifier: Arc<PeerVerifier>,
    pub certs: Arc<CertStore>,
    /// Outbound TLS client configs, one per local domain (each presents
    /// that domain's certificate for SASL EXTERNAL).
    pub client_tls: HashMap<String, Arc<rustls::ClientConfig>>,
    pub server_tls: Arc<rustls::ServerConfig>,
    /// The XEP-0185 dialback secret (from `dialback_passphrase`, or random
    /// per start).
    pub secret: Arc<[u8]>,
    /// Open s2s connections, both directions (`connection_limit`).
    pub connections: AtomicUsize,
    /// Inbound connections authenticated per remote domain
    /// (`partner_connection_limit`).
    pub per_domain: DashMap<String, usize>,
    pub policy: crate::policy::PolicyHandle,
    pub audit: crate::audit::AuditLog,
    /// Live inbound connections, closed at shutdown.
    pub inbound: DashMap<u64, ActorRef<inbound::InboundS2s>>,
    pub next_inbound: std::sync::atomic::AtomicU64,
}

impl S2sShared {
    /// The negotiation settings for a remote domain; `None` if refused.
    pub fn policy(&self, remote: &str) -> Option<PeerPolicy> {
        self.partner(remote).map(|p| p.peer_policy())
    }

    /// The partner entry in force for a remote domain; `None` if refused.
    pub fn partner(&self, remote: &str) -> Option<Arc<crate::policy::Partner>> {
        self.policy.get().partner(remote)
    }

    pub fn is_local(&self, domain: &str) -> bool {
        self.config.server.domains.iter().any(|d| d == domain)
    }

    /// Takes a connection slot; false when `connection_limit` is reached.
    pub fn acquire_connection(&self) -> bool {
        let limit = self.config.gateway.connection_limit as usize;
        self.connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < limit).then_some(n + 1)
            })
            .is_ok()
    }

    pub fn release_connection(&self) {
        let _ = self
            .connections
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(1))
            });
    }

    /// Counts an inbound connection authenticated for `remote`; false when
    /// the domain is at `partner_connection_limit`.
    pub fn acquire_domain(&self, remote: &str) -> bool {
        let limit = self
            .partner(remote)
            .map(|p| p.connection_limit as usize)
            .unwrap_or(self.config.gateway.partner_connection_limit as usize);
        let mut e = self.per_domain.entry(remote.to_string()).or_insert(0);
        if *e >= limit {
            return false;
        }
        *e += 1;
        true
    }

    pub fn release_domain(&self, remote: &str) {
        if let Some(mut e) = self.per_domain.get_mut(remote) {
            *e = e.saturating_sub(1);
        }
        self.per_domain.remove_if(remote, |_, n| *n == 0);
    }
}

/// The presence without its personal note (`<status/>`), for partners
/// that may not see it (see [`admit`]); `None` when it has none.
/// `stripped` keeps the answer across calls for the same stanza, so a
/// broadcast to many domains parses it once.
fn without_status(stanza: &Stanza, stripped: &mut Option<Option<Stanza>>) -> Option<Stanza> {
    stripped
        .get_or_insert_with(|| {
            crate::roster::presence::without_status(stanza).and_then(|b| Stanza::parse(b).ok())
        })
        .clone()
}

/// The outbound side's entry point: finds or starts the actor for the
/// (local, remote) pair and hands it the stanza.
#[derive(Clone)]
pub struct S2sRouter {
    shared: Arc<S2sShared>,
    actors: Arc<DashMap<(String, String), ActorRef<OutboundDomain>>>,
}

impl S2sRouter {
    pub fn new(shared: Arc<S2sShared>) -> S2sRouter {
        S2sRouter {
            shared,
            actors: Arc::new(DashMap::new()),
        }
    }

    pub fn shared(&self) -> &Arc<S2sShared> {
        &self.shared
    }

    /// Queues a stanza for a remote domain. Never waits: the domain actor's
    /// mailbox is unbounded and its own queue is bounded (a full queue
    /// bounces with `resource-constraint`).
    pub fn send(&self, mut env: Envelope) {
        let policy = self.shared.policy.get();
        let direction = if env.on_behalf {
            Direction::OutboundOnBehalf
        } else {
            Direction::Outbound
        };
        let verdict = admit::admit(Case {
            direction,
            partner: policy.partner_type(env.to.domain()),
            access: UserAccess::of(policy.access(env.from.bare())),
            roster: RosterState::NotAdded,
            kind: Kind::of_stanza(&env.stanza),
        });
        match verdict {
            Admission::Deliver | Admission::AutoApprove => {}
            Admission::StripStatus => {
                if let Some(s) = without_status(&env.stanza, &mut None) {
                    env.stanza = s;
                }
            }
            Admission::Refuse(r) => return self.refuse(&env, r),
        }
        self.shared.audit.message(
            crate::audit::Direction::Out,
            &env.stanza,
            &env.from,
            &env.to,
        );
        let actor = self.actor(env.from.domain(), env.to.domain());
        if let Err(e) = actor.tell(SendRemote(env)).try_send() {
            tracing::warn!(error = %e, "remote domain actor unavailable");
        }
    }

    /// [`S2sRouter::send`] for one stanza of a local user to many remote
    /// contacts (presence broadcast), with the same rules, decided once per
    /// domain (access, partner type, status note) instead of once per
    /// contact; each domain's actor gets one message.
    pub fn send_many(&self, stanza: Stanza, from: Jid, tos: Vec<Jid>) {
        let policy = self.shared.policy.get();
        let access = UserAccess::of(policy.access(from.bare()));
        let kind = Kind::of_stanza(&stanza);
        let at = tokio::time::Instant::now();
        let mut by_domain: HashMap<String, Vec<Jid>> = HashMap::new();
        for to in tos {
            match by_domain.get_mut(to.domain()) {
                Some(v) => v.push(to),
                None => {
                    by_domain.insert(to.domain().to_string(), vec![to]);
                }
            }
        }
        // Stripped at most once per broadcast, whatever the domain count.
        let mut stripped = None;
        for (domain, tos) in by_domain {
            let verdict = admit::admit(Case {
                direction: Direction::Outbound,
                partner: policy.partner_type(&domain),
                access,
                roster: RosterState::NotAdded,
                kind,
            });
            let stanza = match verdict {
                Admission::Deliver | Admission::AutoApprove => stanza.clone(),
                Admission::StripStatus => {
                    without_status(&stanza, &mut stripped).unwrap_or_else(|| stanza.clone())
                }
                Admission::Refuse(r) => {
                    for to in tos {
                        self.refuse(&Envelope::new(stanza.clone(), from.clone(), to), r);
                    }
                    continue;
                }
            };
            for to in &tos {
                self.shared
                    .audit
                    .message(crate::audit::Direction::Out, &stanza, &from, to);
            }
            let actor = self.actor(from.domain(), &domain);
            let batch = outbound::SendMany {
                stanza,
                from: from.clone(),
                tos,
                at,
            };
            if let Err(e) = actor.tell(batch).try_send() {
                tracing::warn!(error = %e, "remote domain actor unavailable");
            }
        }
    }

    /// Counts a refusal and bounces what the table says to.
    fn refuse(&self, env: &Envelope, r: Refusal) {
        let m = &self.shared.metrics;
        match r.reason {
            Reason::AccessPolicy => m.refused_access_out.increment(1),
            Reason::UnlistedDomain => m.refused_unlisted_out.increment(1),
            // Inbound reasons; never given for outbound stanzas.
            Reason::UnverifiedMessage | Reason::UnverifiedSubscribe | Reason::UnverifiedOther => {}
        }
        if let Reply::Error(cond, text) = r.reply
            && let Some(b) = env.bounce(cond, text)
        {
            self.shared.router.route_nowait(b);
        }
    }

    /// The live actor for the (local, remote) pair, started if need be.
    fn actor(&self, local: &str, remote: &str) -> ActorRef<OutboundDomain> {
        let key = (local.to_string(), remote.to_string());
        // Clone the handle out: never hold a map guard while sending.
        let existing = self
            .actors
            .get(&key)
            .map(|r| r.clone())
            .filter(|r| r.is_alive());
        match existing {
            Some(a) => a,
            None => {
                let a = OutboundDomain::spawn_with_mailbox(
                    (key.0.clone(), key.1.clone(), self.shared.clone()),
                    kameo::mailbox::unbounded(),
                );
                self.actors.insert(key, a.clone());
                a
            }
        }
    }

    /// Benches and tests: marks the stream from `local` to `remote` as up,
    /// writing into `io`, with no connection behind it. Everything sent to
    /// `remote` from then on goes through the real send path and the real
    /// writer into `io`.
    #[doc(hidden)]
    pub async fn attach_writer<W>(&self, local: &str, remote: &str, io: W)
    where
        W: tokio::io::AsyncWrite + std::marker::Send + Unpin + 'static,
    {
        let actor = self.actor(local, remote);
        let _ = actor.ask(outbound::AttachWriter(Box::new(io))).await;
    }

    /// After a policy change: closes, with `<policy-violation/>`, every
    /// stream of a domain that may no longer federate. Local sessions are
    /// not touched.
    pub fn enforce(&self) {
        let policy = self.shared.policy.get();
        let denied: Vec<_> = self
            .actors
            .iter()
            .filter(|e| policy.partner(&e.key().1).is_none())
            .map(|e| e.value().clone())
            .collect();
        for a in denied {
            let _ = a.tell(outbound::PolicyClose).try_send();
        }
        let inbound: Vec<_> = self
            .shared
            .inbound
            .iter()
            .map(|e| e.value().clone())
            .collect();
        for a in inbound {
            let _ = a.tell(inbound::PolicyRecheck).try_send();
        }
    }

    /// A short live state for a remote domain (for `fedrouter partners`).
    pub fn state(&self, remote: &str) -> String {
        let outbound = self
            .actors
            .iter()
            .filter(|e| e.key().1 == remote && e.value().is_alive())
            .count();
        let inbound = self.shared.per_domain.get(remote).map(|n| *n).unwrap_or(0);
        format!("{outbound} outbound stream actor(s), {inbound} authenticated inbound stream(s)")
    }

    /// Live state per remote domain, for metrics and admin.
    pub fn domains(&self) -> Vec<(String, String)> {
        self.actors.iter().map(|e| e.key().clone()).collect()
    }

    /// Closes every s2s stream, both directions, with `<system-shutdown/>`
    /// (outbound queues are bounced).
    pub async fn shutdown(&self) {
        let actors: Vec<_> = self.actors.iter().map(|e| e.value().clone()).collect();
        for a in actors {
            let _ = a.stop_gracefully().await;
            a.wait_for_shutdown().await;
        }
        let inbound: Vec<_> = self
            .shared
            .inbound
            .iter()
            .map(|e| e.value().clone())
            .collect();
        for a in inbound {
            let _ = a.stop_gracefully().await;
            a.wait_for_shutdown().await;
        }
    }
}
