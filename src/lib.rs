//! fedrouter: an actor-based XMPP federation router, as a library. The
//! binary in `main.rs` is a thin CLI over [`start`]; tests and the load
//! generator start the daemon through the same entry point.

#![forbid(unsafe_code)]

pub mod admin;
pub mod audit;
pub mod c2s;
pub mod config;
pub mod control;
pub mod dns;
pub mod error;
pub mod events;
pub mod http;
pub mod jid;
pub mod net;
pub mod pki;
pub mod policy;
pub mod random;
pub mod roster;
pub mod router;
pub mod s2s;
pub mod storage;
pub mod stream;
pub mod tls;
pub mod transport;
pub mod xml;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::c2s::C2sShared;
use crate::config::Config;
use crate::events::Metrics;
use crate::router::Router;
use crate::storage::{RedbStore, Store, StoreWriter};
use crate::stream::c2s::C2sPolicy;

// The crate root joins the two: `events` may not name `stream` (see
// `events::s2s::AuthLabel`), and `stream/` is being rewritten (issue 11);
// this impl can move next to `AuthMethod` once it has landed.
impl events::s2s::AuthLabel for stream::s2s::AuthMethod {
    fn auth_label(&self) -> &'static str {
        match self {
            stream::s2s::AuthMethod::SaslExternal => "sasl_external",
            stream::s2s::AuthMethod::DialbackTls => "dialback_tls",
            stream::s2s::AuthMethod::DialbackPlain => "dialback_plain",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("data directory {path}: {source}")]
    DataDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("storage: {0}")]
    Store(#[from] storage::StoreError),
    #[error("{0}")]
    Tls(#[from] tls::TlsError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("DNS resolver: {0}")]
    Dns(#[from] dns::DnsError),
    #[error("control socket {path}: {source}")]
    Control {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("dialback secret: {0}")]
    Random(#[from] random::RandomUnavailable),
}

/// Re-reads the configuration file and applies what can change while
/// running: partners, unlisted domains, access policies. An invalid file is
/// refused with its error and the running configuration stays in force.
#[derive(Clone)]
pub struct Reloader {
    source: Option<PathBuf>,
    policy: policy::PolicyHandle,
    s2s: s2s::S2sRouter,
}

impl Reloader {
    /// On success, the warnings of the new configuration.
    pub fn reload(&self) -> Result<Vec<String>, String> {
        let Some(path) = &self.source else {
            return Err(
                "running on the built-in defaults: there is no configuration file to reload".into(),
            );
        };
        let config = Config::load(path).map_err(|e| e.to_string())?;
        let new = policy::Policy::from_config(&config);
        let warnings = new.warnings().to_vec();
        for w in &warnings {
            events::daemon::ConfigWarning { warning: w }.emit();
        }
        self.policy.set(new);
        self.s2s.enforce();
        events::daemon::ConfigReloaded { config: path }.emit();
        Ok(warnings)
    }

    /// The `fedrouter partners` table with live connection state.
    pub fn partners(&self) -> String {
        let s2s = self.s2s.clone();
        admin::partners_table(&self.policy.get(), Some(&move |d: &str| s2s.state(d)))
    }
}

/// A running daemon.
pub struct Daemon {
    /// The addresses the c2s listeners are bound to (port 0 resolved).
    pub c2s_addrs: Vec<SocketAddr>,
    pub metrics_addr: Option<SocketAddr>,
    /// The s2s listeners' addresses (STARTTLS, then Direct TLS).
    pub s2s_addrs: Vec<SocketAddr>,
    pub s2s_direct_tls_addrs: Vec<SocketAddr>,
    pub router: Router,
    pub store: Arc<dyn Store>,
    pub writer: StoreWriter,
    pub config: Arc<Config>,
    pub policy: policy::PolicyHandle,
    pub control_path: PathBuf,
    pub reloader: Reloader,
    tasks: Vec<JoinHandle<()>>,
}

/// Starts everything the configuration asks for and returns once every
/// listener is bound.
pub async fn start(config: Config) -> Result<Daemon, StartError> {
    start_with_connector(config, Arc::new(s2s::Network)).await
}

/// [`start`], with outbound federation links obtained from `connector`
/// instead of DNS, TCP and TLS (see [`s2s::Connector`]). Everything else,
/// the outbound actors' queues, retries and writers included, is the same.
pub async fn start_with_connector(
    config: Config,
    connector: Arc<dyn s2s::Connector>,
) -> Result<Daemon, StartError> {
    tls::install_default_provider();
    let config = Arc::new(config);
    let data_dir = config.server.data_dir.clone();
    std::fs::create_dir_all(&data_dir).map_err(|source| StartError::DataDir {
        path: data_dir.clone(),
        source,
    })?;
    let metrics = Metrics::get();
    let policy = policy::PolicyHandle::new(policy::Policy::from_config(&config));
    for w in policy.get().warnings() {
        events::daemon::ConfigWarning { warning: w }.emit();
    }
    let store: Arc<dyn Store> = Arc::new(RedbStore::open(&data_dir)?.with_offline_quota(
        storage::OfflineQuota {
            messages: config.storage.offline_max_messages_per_user,
            bytes: config.storage.offline_max_bytes_per_user,
        },
    ));
    // Bound before anything else listens, so an admin command that sees the
    // daemon's ports open always finds its control socket too.
    let control_path = control::socket_path(&data_dir);
    let control = control::bind(&control_path).map_err(|source| StartError::Control {
        path: control_path.clone(),
        source,
    })?;
    let writer = StoreWriter::spawn(store.clone());
    let router = Router::start(
        config.server.workers,
        config.server.domains.clone(),
        store.clone(),
        writer.clone(),
        metrics.clone(),
        policy.clone(),
        config.user_limits,
    );
    let certs = Arc::new(tls::CertStore::load(&config)?);
    let acceptor = tokio_rustls::TlsAcceptor::from(certs.server_config()?);
    let shared = Arc::new(C2sShared {
        router: router.clone(),
        store: store.clone(),
        metrics: metrics.clone(),
        tls: Some(acceptor),
        policy: C2sPolicy {
            domains: config.server.domains.clone(),
            require_tls: config.c2s.require_tls,
            tls_available: true,
            scram_iterations: config.c2s.scram_iterations,
        },
        max_stanza_pre_auth: config.gateway.max_stanza_size_pre_auth,
        max_stanza: config.gateway.max_stanza_size,
        session_queue: transport::writer::QueueLimits {
            frames: router::SESSION_QUEUE,
            bytes: config.gateway.session_queue_bytes,
        },
        rate_limit: config.gateway.c2s_rate_limit,
        establishment_timeout: config.gateway.stream_establishment_timeout,
        write_timeout: config.server.write_timeout,
        caps: transport::ConnCaps::new(
            config.c2s.connection_limit,
            config.c2s.connection_limit_per_ip,
        ),
        idle_timeout: config.c2s.idle_timeout,
        resume_timeout: config.c2s.resume_timeout,
        durable: config.s2s.durable_queue.then(|| writer.clone()),
        resumable: Default::default(),
        next_id: AtomicU64::new(1),
        throttle: c2s::throttle::LoginThrottle::new(c2s::throttle::Limits {
            per_account: config.c2s.max_auth_failures_per_account,
            per_address: config.c2s.max_auth_failures_per_ip,
            window: config.c2s.auth_failure_window,
            capacity: c2s::throttle::CAPACITY,
        }),
    });
    let mut tasks = Vec::new();
    let mut c2s_addrs = Vec::new();
    // Bound now (their addresses are reported), accepting only once
    // federation is wired: a client must not reach a router that would
    // answer every remote address remote-server-not-found.
    let mut c2s_listeners = Vec::new();
    for addr in &config.c2s.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen {
                addr: *addr,
                source,
            })?;
        let bound = l.local_addr().map_err(|source| StartError::Listen {
            addr: *addr,
            source,
        })?;
        events::daemon::Listening {
            listener: events::daemon::Listener::C2s,
            addr: bound,
        }
        .emit();
        c2s_addrs.push(bound);
        c2s_listeners.push(l);
    }
    // Federation.
    let verifier = Arc::new(pki::PeerVerifier::new(config.tls.ca_file.as_deref(), true)?);
    let client_tls = config
        .server
        .domains
        .iter()
        .map(|d| (d.clone(), verifier.client_config(certs.for_domain(d))))
        .collect();
    let server_tls = verifier.server_config(certs.clone())?;
    let secret: Arc<[u8]> = match &config.gateway.dialback_passphrase {
        Some(p) => Arc::from(p.as_bytes()),
        None => match random::bytes(32) {
            Ok(r) => Arc::from(r),
            Err(e) => {
                // Fail closed: dialback keys from a zero secret are forgeable.
                events::daemon::RandomUnavailable {
                    what: "dialback secret",
                }
                .emit();
                return Err(e.into());
            }
        },
    };
    // s2s.durable_queue: the journal holds what was accepted for remote
    // domains and never settled (the process was killed): sent again below.
    let unsettled = store.read_outbox()?;
    let journal = config
        .s2s
        .durable_queue
        .then(|| s2s::journal::Journal::new(writer.clone(), unsettled.last().map(|e| e.0)));
    let s2s_shared = Arc::new(s2s::S2sShared {
        config: config.clone(),
        router: router.clone(),
        metrics: metrics.clone(),
        s2s_metrics: events::S2sMetrics::new(),
        resolver: dns::Resolver::new(&config.s2s.dns_nameservers)?,
        identity: s2s::Identity {
            verifier,
            certs: certs.clone(),
            client_tls,
            server_tls,
            secret,
        },
        slots: Default::default(),
        inbound: Default::default(),
        pre_auth: transport::ConnCaps::new(
            config.s2s.max_unauthenticated,
            config.s2s.max_unauthenticated_per_ip,
        ),
        connector,
        sm: Default::default(),
        recent_ids: Default::default(),
        journal,
        policy: policy.clone(),
        audit: match &config.log.audit_file {
            Some(p) => audit::AuditLog::open(p, config.gateway.enable_logging_all_message_bodies)
                .map_err(|source| StartError::DataDir {
                path: p.clone(),
                source,
            })?,
            None => audit::AuditLog::disabled(),
        },
    });
    let s2s_router = s2s::S2sRouter::new(s2s_shared.clone());
    router.set_s2s(Arc::new(s2s_router.clone()));
    s2s_router.resend_journal(unsettled, &writer);
    for l in c2s_listeners {
        tasks.push(tokio::spawn(c2s::accept_loop(l, shared.clone())));
    }
    let reloader = Reloader {
        source: config.source.clone(),
        policy: policy.clone(),
        s2s: s2s_router,
    };
    let mut s2s_addrs = Vec::new();
    let mut s2s_direct_tls_addrs = Vec::new();
    for (addrs, direct, out) in [
        (&config.s2s.listen, false, &mut s2s_addrs),
        (
            &config.s2s.direct_tls_listen,
            true,
            &mut s2s_direct_tls_addrs,
        ),
    ] {
        for addr in addrs {
            let l = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Listen {
                    addr: *addr,
                    source,
                })?;
            let bound = l.local_addr().map_err(|source| StartError::Listen {
                addr: *addr,
                source,
            })?;
            events::daemon::Listening {
                listener: events::daemon::Listener::S2s { direct_tls: direct },
                addr: bound,
            }
            .emit();
            out.push(bound);
            tasks.push(tokio::spawn(s2s::inbound::accept_loop(
                l,
                s2s_shared.clone(),
                direct,
            )));
        }
    }
    // subscription_refresh_interval: re-probe remote contacts of online users.
    {
        let router = router.clone();
        let every = config.gateway.subscription_refresh_interval;
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
            loop {
                tick.tick().await;
                for s in router.shards() {
                    let _ = s.tell(router::RefreshProbes).try_send();
                }
            }
        }));
    }
    let mut metrics_addr = None;
    if let Some(addr) = config.metrics.listen {
        let l = TcpListener::bind(addr)
            .await
            .map_err(|source| StartError::Listen { addr, source })?;
        let bound = l
            .local_addr()
            .map_err(|source| StartError::Listen { addr, source })?;
        events::daemon::Listening {
            listener: events::daemon::Listener::Metrics,
            addr: bound,
        }
        .emit();
        metrics_addr = Some(bound);
        tasks.push(tokio::spawn(http::serve_metrics(l)));
    }
    tasks.push(tokio::spawn(control::serve(
        control,
        control::ControlContext {
            store: store.clone(),
            domains: config.server.domains.clone(),
            scram_iterations: config.c2s.scram_iterations,
            reloader: Some(reloader.clone()),
        },
    )));
    Ok(Daemon {
        c2s_addrs,
        metrics_addr,
        s2s_addrs,
        s2s_direct_tls_addrs,
        router,
        store,
        writer,
        config,
        policy,
        control_path,
        reloader,
        tasks,
    })
}

impl Daemon {
    /// Stops listening, closes every session with `<system-shutdown/>`, and
    /// flushes storage. Closing the connections is bounded by
    /// `server.shutdown_grace` (peers that do not read, dialback checks in
    /// flight): what is still closing then is abandoned, and storage is
    /// flushed all the same.
    pub async fn shutdown(self) {
        for t in &self.tasks {
            t.abort();
        }
        let grace = self.config.server.shutdown_grace;
        let close = async {
            self.reloader.s2s.shutdown().await;
            self.router.shutdown().await;
        };
        if tokio::time::timeout(grace, close).await.is_err() {
            events::daemon::ShutdownTimedOut { grace }.emit();
        }
        self.writer.shutdown();
        let _ = std::fs::remove_file(&self.control_path);
    }
}
