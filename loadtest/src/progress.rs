//! A progress bar for runs longer than a few seconds: a thin wrapper over
//! indicatif that draws to stderr only (stdout may carry the JSON report)
//! and hides itself when asked to or when stderr is not a terminal, so
//! logs and CI output stay clean.

use std::borrow::Cow;
use std::io::IsTerminal;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

const BAR: &str =
    "{prefix} [{elapsed_precise}] {wide_bar} {human_pos}/{human_len} ({per_sec}, eta {eta}) {msg}";
const SPINNER: &str = "{spinner} {prefix} [{elapsed_precise}] {human_pos} ({per_sec}) {msg}";

/// Cheap to clone: clones share one bar, so tasks can each `inc` it.
#[derive(Debug, Clone)]
pub struct Progress {
    bar: ProgressBar,
}

impl Progress {
    /// A bar towards `total` when the amount of work is known, a spinner
    /// with a running count when it is not.
    pub fn new(label: &str, total: Option<u64>, enabled: bool) -> Progress {
        Progress::with_target(label, total, enabled && std::io::stderr().is_terminal())
    }

    fn with_target(label: &str, total: Option<u64>, visible: bool) -> Progress {
        let target = if visible {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        };
        let (bar, template) = match total {
            Some(n) => (ProgressBar::with_draw_target(Some(n), target), BAR),
            None => (ProgressBar::with_draw_target(None, target), SPINNER),
        };
        // The templates are constants; should one be rejected, the default
        // style still shows progress.
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_prefix(label.to_string());
        if visible {
            // Without a total nothing else moves the spinner while the
            // count stands still.
            bar.enable_steady_tick(Duration::from_millis(200));
        }
        Progress { bar }
    }

    pub fn inc(&self, n: u64) {
        self.bar.inc(n);
    }

    pub fn set_message(&self, msg: impl Into<Cow<'static, str>>) {
        self.bar.set_message(msg);
    }

    /// Leaves the bar at its final state on stderr.
    pub fn finish(&self) {
        self.bar.finish();
    }

    pub fn set_position(&self, n: u64) {
        self.bar.set_position(n);
    }

    pub fn position(&self) -> u64 {
        self.bar.position()
    }

    pub fn is_hidden(&self) -> bool {
        self.bar.is_hidden()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_disabled_bar_is_hidden_but_still_counts() {
        let p = Progress::new("im", Some(10), false);
        assert!(p.is_hidden());
        p.inc(3);
        p.clone().inc(4);
        p.set_message("warming up");
        assert_eq!(p.position(), 7);
        p.finish();
    }

    #[test]
    fn an_enabled_bar_hides_when_stderr_is_not_a_terminal() {
        let p = Progress::new("soak", None, true);
        assert_eq!(p.is_hidden(), !std::io::stderr().is_terminal());
        p.finish();
    }

    #[test]
    fn both_templates_are_accepted() {
        assert!(ProgressStyle::with_template(BAR).is_ok());
        assert!(ProgressStyle::with_template(SPINNER).is_ok());
    }
}
