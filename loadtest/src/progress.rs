//! Stand-in progress indicator (replaced by the indicatif one).

pub struct Progress {
    enabled: bool,
}

impl Progress {
    pub fn new(_label: &str, _total: Option<u64>, enabled: bool) -> Progress {
        Progress { enabled }
    }
    pub fn inc(&self, _n: u64) {
        let _ = self.enabled;
    }
    pub fn set_message(&self, _m: impl Into<String>) {}
    pub fn finish(&self) {}
}

impl Progress {
    pub fn set_position(&self, _n: u64) {}
}
