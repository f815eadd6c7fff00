//! The federation audit log (`[log] audit_file`): one line per message
//! crossing the federation, in either direction: time, direction, from,
//! to, id, type — and the body only when `enable_logging_all_message_bodies`
//! is true, as Lync's `EnableLoggingAllMessageBodies` does. With it false,
//! no body text is written anywhere (this module never passes one on).
//!
//! Lines go through a channel to a writer thread, so a slow disk never
//! stalls routing; a full channel drops the line and counts it.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{SyncSender, TrySendError, sync_channel};

use crate::events::store::{AuditLineDropped, AuditMetrics, AuditWriteFailed};
use crate::xml::element::Element;
use crate::xml::ns::{NS_CLIENT, NS_SERVER};
use crate::xml::{Stanza, StanzaKind};

const QUEUE: usize = 65_536;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Direction {
    In,
    Out,
}

/// Cheap to clone; disabled (no file) means every call is a no-op.
#[derive(Clone)]
pub struct AuditLog {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    tx: SyncSender<String>,
    bodies: bool,
    metrics: AuditMetrics,
    path: PathBuf,
}

impl AuditLog {
    pub fn disabled() -> AuditLog {
        AuditLog { inner: None }
    }

    /// Opens (appends to) `path` and starts the writer thread.
    pub fn open(path: &Path, bodies: bool) -> std::io::Result<AuditLog> {
        if let Some(dir) = path.parent()
            && !dir.as_os_str().is_empty()
        {
            std::fs::create_dir_all(dir)?;
        }
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)?;
        let (tx, rx) = sync_channel::<String>(QUEUE);
        std::thread::Builder::new()
            .name("fedrouter-audit".into())
            .spawn(move || {
                let mut buf = Vec::with_capacity(64 * 1024);
                while let Ok(line) = rx.recv() {
                    buf.extend_from_slice(line.as_bytes());
                    while let Ok(more) = rx.try_recv() {
                        buf.extend_from_slice(more.as_bytes());
                        if buf.len() > 256 * 1024 {
                            break;
                        }
                    }
                    if file.write_all(&buf).and_then(|_| file.flush()).is_err() {
                        AuditWriteFailed.emit();
                    }
                    buf.clear();
                }
            })?;
        Ok(AuditLog {
            inner: Some(Arc::new(Inner {
                tx,
                bodies,
                metrics: AuditMetrics::register(),
                path: path.to_path_buf(),
            })),
        })
    }

    pub fn path(&self) -> Option<&Path> {
        self.inner.as_ref().map(|i| i.path.as_path())
    }

    /// Records a message crossing the federation (other stanzas are not
    /// audited). `from`/`to` are the routing addresses, formatted only when
    /// the log is enabled and the stanza is a message.
    pub fn message(
        &self,
        dir: Direction,
        stanza: &Stanza,
        from: &dyn std::fmt::Display,
        to: &dyn std::fmt::Display,
    ) {
        let Some(inner) = &self.inner else { return };
        if stanza.kind() != StanzaKind::Message {
            return;
        }
        let mut line = format!(
            "{} {} from={} to={} id={} type={}",
            humantime::format_rfc3339_millis(std::time::SystemTime::now()),
            match dir {
                Direction::In => "in",
                Direction::Out => "out",
            },
            quote(&from.to_string()),
            quote(&to.to_string()),
            quote(stanza.id().as_deref().unwrap_or("")),
            quote(stanza.type_().as_deref().unwrap_or("normal")),
        );
        if inner.bodies {
            let ns = if dir == Direction::In {
                NS_SERVER
            } else {
                NS_CLIENT
            };
            let body = Element::parse(stanza.bytes(), ns, &[])
                .ok()
                .and_then(|e| e.child("body", ns).map(|b| b.text()));
            if let Some(b) = body {
                line.push_str(" body=");
                line.push_str(&quote(&b));
            }
        }
        line.push('\n');
        if let Err(TrySendError::Full(_)) = inner.tx.try_send(line) {
            AuditLineDropped.emit(&inner.metrics);
        }
    }
}

/// A value as a double-quoted string with `"`, `\` and control characters
/// escaped, so one message is always one line.
fn quote(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn wait_for(path: &Path, needle: &str) -> String {
        for _ in 0..200 {
            let text = std::fs::read_to_string(path).unwrap_or_default();
            if text.contains(needle) {
                return text;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        panic!("{needle} never appeared in the audit log");
    }

    #[test]
    fn lines_carry_endpoints_and_ids_and_the_body_only_when_enabled() {
        let dir = tempfile::tempdir().unwrap();
        let msg = Stanza::parse(Bytes::from_static(
            b"<message id='m1' type='chat'><body>secret \"marker\"\nline</body></message>",
        ))
        .unwrap();
        let without = dir.path().join("a.log");
        let log = AuditLog::open(&without, false).unwrap();
        log.message(Direction::Out, &msg, &"alice@a.test/r", &"bob@b.test");
        log.message(Direction::Out, &msg, &"alice@a.test/r", &"carol@b.test");
        let text = wait_for(&without, "carol@b.test");
        assert!(
            text.contains(" out from=\"alice@a.test/r\" to=\"bob@b.test\" id=\"m1\" type=\"chat\""),
            "{text}"
        );
        assert!(
            !text.contains("marker"),
            "no body without the setting: {text}"
        );
        let with = dir.path().join("b.log");
        let log = AuditLog::open(&with, true).unwrap();
        log.message(Direction::Out, &msg, &"alice@a.test/r", &"bob@b.test");
        let text = wait_for(&with, "marker");
        assert!(
            text.contains("body=\"secret \\\"marker\\\"\\nline\""),
            "{text}"
        );
        assert_eq!(text.lines().count(), 1, "one message is one line");
    }

    #[test]
    fn presence_is_not_audited() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        let log = AuditLog::open(&path, true).unwrap();
        let p = Stanza::parse(Bytes::from_static(b"<presence/>")).unwrap();
        log.message(Direction::In, &p, &"a@x", &"b@y");
        let m = Stanza::parse(Bytes::from_static(b"<message id='z'/>")).unwrap();
        log.message(Direction::In, &m, &"a@x", &"b@y");
        let text = wait_for(&path, "id=\"z\"");
        assert_eq!(text.lines().count(), 1);
    }
}
