//! fedrouter: an actor-based XMPP federation router, as a library. The
//! binary in `main.rs` is a thin CLI over [`start`]; tests and the load
//! generator start the daemon through the same entry point.

#![forbid(unsafe_code)]

pub mod c2s;
pub mod client;
pub mod config;
pub mod error;
pub mod jid;
pub mod roster;
pub mod router;
pub mod storage;
pub mod stream;
pub mod xml;
