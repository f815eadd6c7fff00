//! The log subscriber: where the events' lines go.

use std::io::IsTerminal;

use crate::config::{LogConfig, LogFormat};

/// Installs the process-wide subscriber: `RUST_LOG` if set and valid, else
/// `[log] level`, else `info`; text or JSON lines on standard error.
pub fn init_logging(log: &LogConfig) {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .or_else(|_| tracing_subscriber::EnvFilter::try_new(&log.level))
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    match log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}
