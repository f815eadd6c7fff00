//! Our own certificates.

use std::path::Path;

use super::counter::{EventName, count};

const TARGET: &str = "fedrouter::tls";

/// A domain had no certificate, so a self-signed one was written.
pub struct SelfSignedGenerated<'a> {
    pub domain: &'a str,
    pub path: &'a Path,
}

impl SelfSignedGenerated<'_> {
    pub fn emit(self) {
        tracing::info!(
            target: TARGET,
            domain = %self.domain,
            path = %self.path.display(),
            "generated a self-signed certificate"
        );
        count(EventName::SelfSignedGenerated);
    }
}
