//! The daemon's life: starting, listening, reloading, shutting down, and
//! the process limits it sets up.
//!
//! Targets are those the lines had before they moved here (`fedrouter`
//! for the crate root and the binary), so `[log] level` filters written for
//! them still apply.

use std::fmt::Display;
use std::net::SocketAddr;
use std::path::Path;

use super::counter::{EventName, count};

const TARGET: &str = "fedrouter";

/// The daemon starts, from a file or from the built-in defaults.
pub struct DaemonStarting<'a> {
    pub config: Option<&'a Path>,
}

impl DaemonStarting<'_> {
    pub fn emit(self) {
        match self.config {
            Some(p) => tracing::info!(target: TARGET, config = %p.display(), "starting"),
            None => tracing::info!(
                target: TARGET,
                "starting with the built-in defaults (no configuration file)"
            ),
        }
        count(EventName::DaemonStarting);
    }
}

/// Every listener is bound and the daemon serves.
pub struct DaemonRunning<'a> {
    pub domains: &'a [String],
    pub data_dir: &'a Path,
}

impl DaemonRunning<'_> {
    pub fn emit(self) {
        tracing::info!(
            target: TARGET,
            domains = ?self.domains,
            data_dir = %self.data_dir.display(),
            "fedrouter is running"
        );
        count(EventName::DaemonRunning);
    }
}

/// Which listener a [`Listening`] is about.
#[derive(Clone, Copy, Debug)]
pub enum Listener {
    C2s,
    S2s { direct_tls: bool },
    Metrics,
}

/// A listener is bound (port 0 resolved in `addr`).
pub struct Listening {
    pub listener: Listener,
    pub addr: SocketAddr,
}

impl Listening {
    pub fn emit(self) {
        let addr = self.addr;
        match self.listener {
            Listener::C2s => tracing::info!(target: TARGET, addr = %addr, "c2s listening"),
            Listener::S2s { direct_tls } => {
                tracing::info!(target: TARGET, addr = %addr, direct_tls, "s2s listening")
            }
            Listener::Metrics => {
                tracing::info!(target: TARGET, addr = %addr, "metrics listening on /metrics")
            }
        }
        count(EventName::Listening);
    }
}

/// A warning of a valid configuration, at start or on reload.
pub struct ConfigWarning<'a> {
    pub warning: &'a dyn Display,
}

impl ConfigWarning<'_> {
    pub fn emit(self) {
        tracing::warn!(target: TARGET, "{}", self.warning);
        count(EventName::ConfigWarning);
    }
}

/// A reload took effect.
pub struct ConfigReloaded<'a> {
    pub config: &'a Path,
}

impl ConfigReloaded<'_> {
    pub fn emit(self) {
        tracing::info!(
            target: TARGET,
            config = %self.config.display(),
            "configuration reloaded (partners and access policies)"
        );
        count(EventName::ConfigReloaded);
    }
}

/// A reload (SIGHUP) was refused, typically an invalid file; the running
/// configuration stays.
pub struct ReloadRefused<'a> {
    pub error: &'a dyn Display,
}

impl ReloadRefused<'_> {
    pub fn emit(self) {
        tracing::error!(
            target: TARGET,
            "reload refused, the running configuration stays: {}",
            self.error
        );
        count(EventName::ReloadRefused);
    }
}

/// A reload (SIGHUP) did not run to its end (its task failed).
pub struct ReloadFailed<'a> {
    pub error: &'a dyn Display,
}

impl ReloadFailed<'_> {
    pub fn emit(self) {
        tracing::error!(target: TARGET, "reload failed: {}", self.error);
        count(EventName::ReloadFailed);
    }
}

/// A shutdown signal arrived.
pub struct ShuttingDown;

impl ShuttingDown {
    pub fn emit(self) {
        tracing::info!(target: TARGET, "shutting down");
        count(EventName::ShuttingDown);
    }
}

/// The open-file limit was raised to `limit`.
pub struct FdLimitRaised {
    pub limit: u64,
}

impl FdLimitRaised {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, limit = self.limit, "open-file limit");
        count(EventName::FdLimitRaised);
    }
}

/// The open-file limit could not be raised.
pub struct FdLimitNotRaised<'a> {
    pub error: &'a dyn Display,
}

impl FdLimitNotRaised<'_> {
    pub fn emit(self) {
        tracing::warn!(
            target: "fedrouter::util",
            error = %self.error,
            "could not raise the open-file limit"
        );
        count(EventName::FdLimitNotRaised);
    }
}

/// The system random number generator failed: `what` (a salt, a stream
/// id, …) was not made, and the operation that needed it was refused.
pub struct RandomUnavailable {
    pub what: &'static str,
}

impl RandomUnavailable {
    pub fn emit(self) {
        tracing::error!(target: TARGET, what = self.what, "the system random number generator failed; refused");
        count(EventName::RandomUnavailable);
    }
}

/// A process of another user connected to the control socket (its peer
/// uid, from SO_PEERCRED, is neither the daemon's nor root's) and was
/// disconnected unanswered.
pub struct ControlPeerRefused {
    /// `None` when the kernel would not say.
    pub uid: Option<u32>,
}

impl ControlPeerRefused {
    pub fn emit(self) {
        tracing::warn!(target: TARGET, uid = ?self.uid, "control socket: connection from another user refused");
        count(EventName::ControlPeerRefused);
    }
}

/// A socket write made no progress for `limit` (the peer does not read):
/// the write fails and its connection closes as a slow consumer.
pub struct WriteTimedOut {
    pub limit: std::time::Duration,
}

impl WriteTimedOut {
    pub fn emit(self) {
        tracing::info!(
            target: "fedrouter::transport",
            limit_ms = self.limit.as_millis() as u64,
            "write made no progress; closing the connection"
        );
        count(EventName::WriteTimedOut);
    }
}

/// Shutdown did not finish within `server.shutdown_grace`: what was still
/// closing is abandoned.
pub struct ShutdownTimedOut {
    pub grace: std::time::Duration,
}

impl ShutdownTimedOut {
    pub fn emit(self) {
        tracing::warn!(
            target: TARGET,
            grace_ms = self.grace.as_millis() as u64,
            "shutdown grace ran out; remaining connections abandoned"
        );
        count(EventName::ShutdownTimedOut);
    }
}

/// Which connection cap refused a connection or a stream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cap {
    /// `c2s.connection_limit`
    C2sGlobal,
    /// `c2s.connection_limit_per_ip`
    C2sPerIp,
    /// `s2s.max_unauthenticated`
    S2sUnauthenticated,
    /// `s2s.max_unauthenticated_per_ip`
    S2sUnauthenticatedPerIp,
    /// `s2s.max_pre_auth_elements`
    S2sPreAuthElements,
    /// `s2s.max_pending_dialback`
    S2sPendingDialback,
    /// `s2s.max_pending_dialback_total`
    S2sPendingDialbackTotal,
}

impl Cap {
    pub fn key(self) -> &'static str {
        match self {
            Cap::C2sGlobal => "c2s.connection_limit",
            Cap::C2sPerIp => "c2s.connection_limit_per_ip",
            Cap::S2sUnauthenticated => "s2s.max_unauthenticated",
            Cap::S2sUnauthenticatedPerIp => "s2s.max_unauthenticated_per_ip",
            Cap::S2sPreAuthElements => "s2s.max_pre_auth_elements",
            Cap::S2sPendingDialback => "s2s.max_pending_dialback",
            Cap::S2sPendingDialbackTotal => "s2s.max_pending_dialback_total",
        }
    }

    fn event(self) -> EventName {
        match self {
            Cap::C2sGlobal => EventName::C2sConnectionLimitReached,
            Cap::C2sPerIp => EventName::C2sConnectionLimitPerIpReached,
            Cap::S2sUnauthenticated => EventName::S2sUnauthenticatedLimitReached,
            Cap::S2sUnauthenticatedPerIp => EventName::S2sUnauthenticatedPerIpLimitReached,
            Cap::S2sPreAuthElements => EventName::S2sPreAuthElementsExceeded,
            Cap::S2sPendingDialback => EventName::S2sPendingDialbackExceeded,
            Cap::S2sPendingDialbackTotal => EventName::S2sPendingDialbackTotalReached,
        }
    }
}

/// A connection, stream or request from `peer` was refused by `cap`.
pub struct CapReached<'a> {
    pub cap: Cap,
    pub peer: &'a SocketAddr,
}

impl CapReached<'_> {
    pub fn emit(self) {
        tracing::info!(
            target: "fedrouter::limits",
            peer = %self.peer,
            cap = self.cap.key(),
            "refused: limit reached"
        );
        count(self.cap.event());
    }
}
