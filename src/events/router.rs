//! Routing: delivery, presence fan-out, subscriptions, rosters and offline
//! storage as the router shards see them.
//!
//! Filled when `src/router/` and `src/roster/` move their log lines here
//! (issue 11, item 7, second half): one struct per event, as in
//! [`super::daemon`], with the target the line has today. Events with a
//! metric in [`super::Metrics`] take `&Metrics` in `emit`; the others count
//! in `fedrouter_events_total` through a new [`super::counter::EventName`].
