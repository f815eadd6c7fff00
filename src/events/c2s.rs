//! Client sessions: authentication, binding, TLS.
//!
//! Targets are those the lines had before they moved here
//! (`fedrouter::c2s`), so `[log] level` filters written for them still
//! apply. Each event moves its metric in [`super::Metrics`].

use std::fmt::Display;

use super::Metrics;
use super::counter::{EventName, count};

const TARGET: &str = "fedrouter::c2s";

/// SASL succeeded for `user`.
pub struct Authenticated<'a> {
    pub user: &'a dyn Display,
    pub peer: &'a dyn Display,
}

impl Authenticated<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::debug!(target: TARGET, user = %self.user, peer = %self.peer, "authenticated");
        metrics.auth_success.increment(1);
    }
}

/// SASL failed (the mechanism's answer is the client's; nothing is
/// logged, so a guessing client cannot fill the log).
pub struct AuthFailed;

impl AuthFailed {
    pub fn emit(self, metrics: &Metrics) {
        metrics.auth_failure.increment(1);
    }
}

/// A login attempt was refused by the failed-login throttle, before any
/// password was checked. Logged at debug only: the guesser sets the pace.
pub struct AuthThrottled<'a> {
    /// `account` or `address`.
    pub scope: &'static str,
    pub user: &'a dyn Display,
    pub peer: &'a dyn Display,
}

impl AuthThrottled<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::debug!(target: TARGET, scope = self.scope, user = %self.user, peer = %self.peer, "login attempt throttled");
        metrics.auth_throttled.increment(1);
    }
}

/// An account or an address reached its failed-login limit: its further
/// attempts are refused until the window ends. Once per subject and window.
pub struct AuthThrottleEngaged<'a> {
    /// `account` or `address`.
    pub scope: &'static str,
    /// The account's bare JID, or the address (an IPv6 /64 as its prefix).
    pub subject: &'a dyn Display,
    pub window: std::time::Duration,
}

impl AuthThrottleEngaged<'_> {
    pub fn emit(self) {
        tracing::warn!(target: TARGET, scope = self.scope, subject = %self.subject, window_secs = self.window.as_secs(), "too many failed logins: throttled");
        count(EventName::AuthThrottleEngaged);
    }
}

/// A resource is bound: the session routes from now on.
pub struct SessionEstablished<'a> {
    pub jid: &'a dyn Display,
    pub peer: &'a dyn Display,
}

impl SessionEstablished<'_> {
    pub fn emit(self, metrics: &Metrics) {
        tracing::info!(target: TARGET, jid = %self.jid, peer = %self.peer, "session established");
        metrics.c2s_sessions.increment(1.0);
    }
}

/// A client enabled XEP-0198 Stream Management.
pub struct SmEnabled<'a> {
    pub peer: &'a dyn Display,
}

impl SmEnabled<'_> {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, peer = %self.peer, "stream management enabled");
        count(EventName::SmEnabled);
    }
}

/// A Stream Management session lost its connection and waits to be
/// resumed.
pub struct SmDetached<'a> {
    pub peer: &'a dyn Display,
}

impl SmDetached<'_> {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, peer = %self.peer, "connection lost; session kept for resumption");
        count(EventName::SmDetached);
    }
}

/// A client resumed its session on a new connection.
pub struct SmResumed<'a> {
    pub peer: &'a dyn Display,
}

impl SmResumed<'_> {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, peer = %self.peer, "session resumed");
        count(EventName::SmResumed);
    }
}

/// A detached session was not resumed within `c2s.resume_timeout`.
pub struct SmResumeExpired<'a> {
    pub peer: &'a dyn Display,
}

impl SmResumeExpired<'_> {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, peer = %self.peer, "session not resumed in time; unacknowledged messages kept offline");
        count(EventName::SmResumeExpired);
    }
}

/// A resumption acknowledged more than was sent; the session ended.
pub struct SmResumeRefused<'a> {
    pub peer: &'a dyn Display,
    pub h: u32,
    pub sent: u32,
}

impl SmResumeRefused<'_> {
    pub fn emit(self) {
        tracing::info!(target: TARGET, peer = %self.peer, h = self.h, sent = self.sent, "resumption refused: h beyond what was sent");
        count(EventName::SmResumeRefused);
    }
}

/// The client's TLS handshake failed after `<proceed/>`.
pub struct TlsHandshakeFailed<'a> {
    pub peer: &'a dyn Display,
    pub error: &'a dyn Display,
}

impl TlsHandshakeFailed<'_> {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, peer = %self.peer, error = %self.error, "TLS handshake failed");
        count(EventName::C2sTlsHandshakeFailed);
    }
}

/// A bound session was silent for `c2s.idle_timeout` and got a XEP-0199
/// ping.
pub struct IdlePing<'a> {
    pub peer: &'a dyn Display,
}

impl IdlePing<'_> {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, peer = %self.peer, "idle client pinged");
    }
}
