//! Federation links: lookups, connects, TLS, authentication, queues,
//! bounces and policy refusals.
//!
//! Filled when `src/s2s/`, `src/transport*`, `src/stream/` and `src/policy/`
//! move their log lines here (issue 11, item 7, second half): one struct
//! per event, as in [`super::daemon`], with the target the line has today.
//! Per-domain events take the connection's [`super::DomainMetrics`] in
//! `emit`; the others count in `fedrouter_events_total` through a new
//! [`super::counter::EventName`].

/// The `method` label of `fedrouter_s2s_auth_total`. A trait, so that
/// `events` needs nothing from `stream` (which needs `storage`, which emits
/// events here: that would be a cycle); the protocol's `AuthMethod`
/// implements it.
pub trait AuthLabel {
    fn auth_label(&self) -> &'static str;
}
