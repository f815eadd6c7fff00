//! Client sessions: connections, authentication, stream errors, and what
//! a session drops or refuses.
//!
//! Filled when `src/c2s/` moves its log lines here (issue 11, item 7,
//! second half): one struct per event, as in [`super::daemon`], with the
//! target the line has today (`fedrouter::c2s…`). Events with a metric in
//! [`super::Metrics`] take `&Metrics` in `emit`; the others count in
//! `fedrouter_events_total` through a new [`super::counter::EventName`].
