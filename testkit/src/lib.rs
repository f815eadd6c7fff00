//! Test support for fedrouter, kept out of the daemon crate: an XMPP client
//! ([`client`]), a throw-away certificate authority ([`ca`]), a tiny
//! authoritative DNS server on loopback ([`dns`]), scripted remote servers
//! speaking real s2s ([`s2s`]), and an outbound connector whose links end
//! in memory ([`link`]), and a TCP relay a test can cut ([`proxy`]). Integration tests, benches and the `loadtest`
//! binary use it; the daemon does not.
//!
//! It reaches the daemon only through fedrouter's public API. Nothing here
//! touches the network beyond the sockets the caller asks for.

#![forbid(unsafe_code)]

pub mod ca;
pub mod client;
pub mod dns;
pub mod link;
pub mod proxy;
pub mod s2s;
