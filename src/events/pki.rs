//! Trust anchors and peer certificate contents.

use std::fmt::Display;

use super::counter::{EventName, count};

const TARGET: &str = "fedrouter::pki";

/// Part of the system trust store could not be read.
pub struct TrustStoreReadFailed<'a> {
    pub error: &'a dyn Display,
}

impl TrustStoreReadFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(target: TARGET, error = %self.error, "reading the system trust store");
        count(EventName::TrustStoreReadFailed);
    }
}

/// The system trust anchors were loaded: `added` usable, `ignored` not.
pub struct SystemTrustAnchors {
    pub added: usize,
    pub ignored: usize,
}

impl SystemTrustAnchors {
    pub fn emit(self) {
        tracing::debug!(
            target: TARGET,
            added = self.added,
            ignored = self.ignored,
            "system trust anchors"
        );
        count(EventName::SystemTrustAnchors);
    }
}

/// A certificate's id-on-xmppAddr SAN could not be decoded and is skipped
/// (the other names still count).
pub struct UndecodableXmppAddr;

impl UndecodableXmppAddr {
    pub fn emit(self) {
        tracing::debug!(target: TARGET, "undecodable id-on-xmppAddr SAN ignored");
        count(EventName::UndecodableXmppAddr);
    }
}
