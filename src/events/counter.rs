//! `fedrouter_events_total{event}`: the counter of every event that has no
//! metric of its own, one series per event name.
//!
//! The label values are the names below and nothing else (never user data),
//! so the family stays bounded. Every handle is registered on first use,
//! once per process, and kept: emitting is an array index and an
//! increment, never a look-up by name.

use std::sync::OnceLock;

use metrics::{Counter, counter, describe_counter};

/// Declares [`EventName`] and its label values in one list, so a name
/// cannot be added without its label.
macro_rules! event_names {
    ($($variant:ident => $label:literal,)*) => {
        /// An event counted in `fedrouter_events_total`, by its `event` label.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub enum EventName {
            $($variant,)*
        }

        impl EventName {
            pub const ALL: &[EventName] = &[$(EventName::$variant,)*];

            /// The value of the `event` label.
            pub fn as_str(self) -> &'static str {
                match self {
                    $(EventName::$variant => $label,)*
                }
            }
        }
    };
}

event_names! {
    // daemon
    DaemonStarting => "daemon_starting",
    DaemonRunning => "daemon_running",
    Listening => "listening",
    ConfigWarning => "config_warning",
    ConfigReloaded => "config_reloaded",
    ReloadRefused => "reload_refused",
    ReloadFailed => "reload_failed",
    ShuttingDown => "shutting_down",
    FdLimitRaised => "fd_limit_raised",
    FdLimitNotRaised => "fd_limit_not_raised",
    RandomUnavailable => "random_unavailable",
    ControlPeerRefused => "control_peer_refused",
    WriteTimedOut => "write_timed_out",
    ShutdownTimedOut => "shutdown_timed_out",
    // connection caps
    C2sConnectionLimitReached => "c2s_connection_limit_reached",
    C2sConnectionLimitPerIpReached => "c2s_connection_limit_per_ip_reached",
    S2sUnauthenticatedLimitReached => "s2s_unauthenticated_limit_reached",
    S2sUnauthenticatedPerIpLimitReached => "s2s_unauthenticated_per_ip_limit_reached",
    S2sPreAuthElementsExceeded => "s2s_pre_auth_elements_exceeded",
    S2sPendingDialbackExceeded => "s2s_pending_dialback_exceeded",
    S2sPendingDialbackTotalReached => "s2s_pending_dialback_total_reached",
    // store
    StoreWriterPanicked => "store_writer_panicked",
    StoreCallbackPanicked => "store_callback_panicked",
    StorePanicked => "store_panicked",
    StoreBatchFailed => "store_batch_failed",
    AuditWriteFailed => "audit_write_failed",
    // dns
    SrvLookupFailed => "srv_lookup_failed",
    SrvTargetEmpty => "srv_target_empty",
    SrvTargetUnresolved => "srv_target_unresolved",
    NoSrvTargetAddress => "no_srv_target_address",
    // pki
    TrustStoreReadFailed => "trust_store_read_failed",
    SystemTrustAnchors => "system_trust_anchors",
    UndecodableXmppAddr => "undecodable_xmpp_addr",
    // tls
    SelfSignedGenerated => "self_signed_generated",
    // s2s
    S2sTargetUnreachable => "s2s_target_unreachable",
    S2sPrivateTargetsDropped => "s2s_private_targets_dropped",
    S2sVerifyConnectionLimitReached => "s2s_verify_connection_limit_reached",
    S2sClosedNotPartner => "s2s_closed_not_partner",
    S2sClosedRouteChanged => "s2s_closed_route_changed",
    S2sClosedIdle => "s2s_closed_idle",
    S2sClosedByPeer => "s2s_closed_by_peer",
    S2sConnectionLimitReached => "s2s_connection_limit_reached",
    S2sPeerStreamError => "s2s_peer_stream_error",
    S2sDomainActorUnavailable => "s2s_domain_actor_unavailable",
    DialbackVerifyFailed => "dialback_verify_failed",
    // c2s
    C2sTlsHandshakeFailed => "c2s_tls_handshake_failed",
    AuthThrottleEngaged => "auth_throttle_engaged",
    // router
    UserQueueFull => "user_queue_full",
    OfflineReadFailed => "offline_read_failed",
    OfflineWriteFailed => "offline_write_failed",
    SmEnabled => "c2s_sm_enabled",
    SmDetached => "c2s_sm_detached",
    SmResumed => "c2s_sm_resumed",
    SmResumeExpired => "c2s_sm_resume_expired",
    SmResumeRefused => "c2s_sm_resume_refused",
    S2sSmEnabled => "s2s_sm_enabled",
    S2sSmAckSent => "s2s_sm_acks_sent",
    S2sSmResumed => "s2s_sm_resumed",
    S2sSmResumeRefused => "s2s_sm_resume_refused",
    S2sDuplicateDropped => "s2s_duplicates_dropped",
    S2sSmOutEnabled => "s2s_sm_out_enabled",
    S2sSmOutRefused => "s2s_sm_out_refused",
    S2sSmOutResumed => "s2s_sm_out_resumed",
    S2sSmOutResumeFailed => "s2s_sm_out_resume_failed",
    S2sSmAckReceived => "s2s_sm_acks_received",
    S2sJournalResent => "s2s_journal_resent",
    RosterLoadFailed => "roster_load_failed",
    RosterWriteFailed => "roster_write_failed",
    StoreReadFailed => "store_read_failed",
    ShardHandlerFailed => "shard_handler_failed",
    AcceptFailed => "accept_failed",
}

pub const NAME: &str = "fedrouter_events_total";

/// The held handles, indexed by `EventName as usize`.
pub struct EventCounters(Vec<Counter>);

impl EventCounters {
    /// Registers one series per event name with the recorder in force.
    pub fn register() -> EventCounters {
        describe_counter!(NAME, "Events logged by the daemon, by event name");
        EventCounters(
            EventName::ALL
                .iter()
                .map(|e| counter!(NAME, "event" => e.as_str()))
                .collect(),
        )
    }

    #[inline]
    pub fn get(&self, e: EventName) -> &Counter {
        &self.0[e as usize]
    }
}

static COUNTERS: OnceLock<EventCounters> = OnceLock::new();

/// Counts one `e` on the process-wide handles.
#[inline]
pub fn count(e: EventName) {
    COUNTERS
        .get_or_init(|| {
            // Install the global recorder first, so the handles are its own.
            super::prometheus();
            EventCounters::register()
        })
        .get(e)
        .increment(1);
}
