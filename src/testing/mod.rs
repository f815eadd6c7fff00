//! Helpers for tests and the load generator: a throw-away certificate
//! authority, a tiny authoritative DNS server on loopback, and scripted
//! remote servers speaking real s2s. They are part of the library (not
//! `#[cfg(test)]`) because integration tests and the `loadtest` binary use
//! them too. Nothing here touches the network beyond the sockets the
//! caller asks for.

pub mod ca;
pub mod dns;
pub mod s2s;
