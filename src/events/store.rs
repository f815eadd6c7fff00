//! The store's writer thread and the federation audit log.

use std::fmt::Display;

use metrics::{Counter, counter};

use super::counter::{EventName, count};

const WRITER: &str = "fedrouter::storage::writer";
const AUDIT: &str = "fedrouter::audit";

/// The writer thread panicked; found when it is joined at shutdown.
pub struct StoreWriterPanicked;

impl StoreWriterPanicked {
    pub fn emit(self) {
        tracing::error!(target: WRITER, "store writer thread panicked");
        count(EventName::StoreWriterPanicked);
    }
}

/// A caller's completion callback panicked on the writer thread (which
/// carries on).
pub struct StoreCallbackPanicked;

impl StoreCallbackPanicked {
    pub fn emit(self) {
        tracing::error!(target: WRITER, "store writer callback panicked");
        count(EventName::StoreCallbackPanicked);
    }
}

/// The store itself panicked; its callers get an error.
pub struct StorePanicked;

impl StorePanicked {
    pub fn emit(self) {
        tracing::error!(target: WRITER, "store panicked");
        count(EventName::StorePanicked);
    }
}

/// A batch of `submissions` failed as a whole and is retried one by one.
pub struct StoreBatchFailed<'a> {
    pub error: &'a dyn Display,
    pub submissions: usize,
}

impl StoreBatchFailed<'_> {
    pub fn emit(self) {
        tracing::warn!(
            target: WRITER,
            error = %self.error,
            submissions = self.submissions,
            "store batch failed; retrying one by one"
        );
        count(EventName::StoreBatchFailed);
    }
}

/// Writing or flushing the audit file failed; the lines of that write are
/// lost.
pub struct AuditWriteFailed;

impl AuditWriteFailed {
    pub fn emit(self) {
        tracing::error!(target: AUDIT, "cannot write the audit log");
        count(EventName::AuditWriteFailed);
    }
}

/// The handles an open audit log holds.
pub struct AuditMetrics {
    dropped: Counter,
}

impl AuditMetrics {
    /// Registered when an audit log opens, so a daemon without one has no
    /// such series.
    pub fn register() -> AuditMetrics {
        super::prometheus();
        AuditMetrics {
            dropped: counter!("fedrouter_dropped_total", "reason" => "audit_queue_full"),
        }
    }
}

/// An audit line was dropped because the writer's queue was full. Not
/// logged: under that load a line per drop would make things worse.
pub struct AuditLineDropped;

impl AuditLineDropped {
    #[inline]
    pub fn emit(self, metrics: &AuditMetrics) {
        metrics.dropped.increment(1);
    }
}
