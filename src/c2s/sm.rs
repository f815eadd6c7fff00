//! XEP-0198 Stream Management on a client session: `<enable/>`, acks
//! both ways, and resumption — a session whose connection died waits
//! (`c2s.resume_timeout`) for a new connection of the same user to take it
//! over with `<resume/>`, and then sends again what was not acknowledged.

use bytes::Bytes;
use tokio::time::Instant;

use super::{GONE, Session, events};
use crate::error::{StreamCondition, StreamError};
use crate::jid::BareJid;
use crate::stream::c2s::sm_failed;
use crate::transport::Connection;
use crate::xml::element::Element;
use crate::xml::escape::escape_attr;
use crate::xml::ns::{NS_CLIENT, NS_SM, NS_STREAMS};
use crate::xml::{Frame, Stanza};

/// XEP-0198 `<resume/>`: a new connection of the same user takes over this
/// session.
pub struct Adopt {
    pub conn: Connection,
    pub user: BareJid,
    pub h: u32,
}

/// How an [`Adopt`] went: refused, the connection comes back with the
/// `<failed/>` to send on it.
#[derive(kameo::Reply)]
pub enum Adopted {
    Yes,
    No(Box<Connection>, String),
}

impl Session {
    /// XEP-0198 nonzas: `<enable/>`, `<r/>`, `<a/>`. False for anything
    /// else.
    pub(super) async fn stream_management(&mut self, s: &Stanza) -> bool {
        let Ok(el) = Element::parse(s.bytes(), NS_CLIENT, &[("stream", NS_STREAMS)]) else {
            return false;
        };
        if el.ns != NS_SM {
            return false;
        }
        let Some(q) = self.conn.queue().cloned() else {
            return true;
        };
        match el.name.as_str() {
            "enable" => {
                let resume = matches!(el.attr("resume"), Some("true" | "1"));
                let id = if resume && self.sm_in.is_none() {
                    crate::random::hex(16).ok()
                } else {
                    None
                };
                // XEP-0198 §5: the client may ask for a shorter wait than
                // ours (at least 1 s), never a longer one.
                let asked = el
                    .attr("max")
                    .and_then(|m| m.parse::<u64>().ok())
                    .map(|m| std::time::Duration::from_secs(m.max(1)));
                self.resume_timeout = asked.map_or(self.shared.resume_timeout, |a| {
                    a.min(self.shared.resume_timeout)
                });
                let enabled = match &id {
                    Some(id) => format!(
                        "<enabled xmlns='{NS_SM}' id='{id}' resume='true' max='{}'/>",
                        self.resume_timeout.as_secs()
                    ),
                    None => format!("<enabled xmlns='{NS_SM}'/>"),
                };
                if q.enable_sm(Frame::nonza(Bytes::from(enabled))) {
                    self.sm_in = Some(0);
                    if let Some(id) = id {
                        // What arrives after the connection dies waits in
                        // the queue for the resumption.
                        q.keep_open();
                        self.shared.resumable.insert(id.clone(), self.me.clone());
                        self.sm_id = Some(id);
                    }
                    events::SmEnabled { peer: &self.peer }.emit();
                } else {
                    self.send_nonza(sm_failed("unexpected-request"));
                }
            }
            "r" => {
                if let Some(h) = self.sm_in {
                    if let Some(w) = &self.shared.durable {
                        // What the ack covers is journaled first: a crash
                        // after it loses none of it.
                        let _ = w.commit(Vec::new()).await;
                    }
                    self.send_nonza(format!("<a xmlns='{NS_SM}' h='{h}'/>"));
                }
            }
            "a" => {
                let h = el.attr("h").and_then(|h| h.parse::<u32>().ok());
                match h.map(|h| q.ack(h)) {
                    Some(Ok(())) => {}
                    Some(Err(e)) => {
                        // XEP-0198 §4: the condition goes in the stream error.
                        let err = StreamError::with_text(
                            StreamCondition::UndefinedCondition,
                            format!("acknowledged {} stanzas, {} were sent", e.h, e.sent),
                        );
                        self.close_with(err, &e.element()).await;
                    }
                    None => {
                        self.close(StreamError::with_text(
                            StreamCondition::InvalidXml,
                            "<a/> without a valid h",
                        ))
                        .await;
                    }
                }
            }
            _ => self.send_nonza(sm_failed("feature-not-implemented")),
        }
        true
    }

    /// The connection died under Stream Management with resumption: the
    /// session stays bound, its queue keeps taking what arrives, and a
    /// new connection may take it over until `resume_timeout`.
    pub(super) async fn detach(&mut self) {
        self.conn.close_keeping_queue(Bytes::new(), GONE).await;
        self.detached_until = Some(Instant::now() + self.resume_timeout);
        events::SmDetached { peer: &self.peer }.emit();
    }

    /// A `<resume/>` on another connection names this session.
    pub(super) async fn adopt(&mut self, m: Adopt) -> Adopted {
        let mine = self.jid.as_ref().is_some_and(|j| *j.bare() == m.user);
        let (Some(id), Some(q)) = (self.sm_id.clone(), self.out.clone()) else {
            return Adopted::No(Box::new(m.conn), sm_failed("item-not-found"));
        };
        if !mine || self.done {
            return Adopted::No(Box::new(m.conn), sm_failed("item-not-found"));
        }
        if self.detached_until.is_none() {
            // The old connection is not known dead yet: it is replaced.
            self.conn.close_keeping_queue(Bytes::new(), GONE).await;
        }
        let h_in = self.sm_in.unwrap_or(0);
        let resumed = Frame::nonza(Bytes::from(format!(
            "<resumed xmlns='{NS_SM}' h='{h_in}' previd='{}'/>",
            escape_attr(&id)
        )));
        if let Err(e) = q.resume(m.h, resumed) {
            let failed = format!(
                "<failed xmlns='{NS_SM}' h='{h_in}'><unexpected-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>"
            );
            events::SmResumeRefused {
                peer: &self.peer,
                h: e.h,
                sent: e.sent,
            }
            .emit();
            self.end(Bytes::new(), GONE).await;
            return Adopted::No(Box::new(m.conn), failed);
        }
        self.conn = m.conn;
        self.conn
            .framer()
            .set_max_stanza_size(self.shared.max_stanza);
        self.conn.set_read_rate(self.shared.rate_limit);
        if !self.conn.attach(&q) {
            self.end(Bytes::new(), GONE).await;
            return Adopted::Yes;
        }
        self.detached_until = None;
        self.pinged = None;
        events::SmResumed { peer: &self.peer }.emit();
        // Whatever the client sent after <resume/> is already framed.
        Box::pin(self.on_read(Ok(1))).await;
        Adopted::Yes
    }

    /// This connection's `<resume/>`: hands it to the session it names.
    pub(super) async fn resume(&mut self, previd: String, h: u32) {
        let (Some(user), Some(target)) = (
            self.neg_user(),
            self.shared
                .resumable
                .get(&previd)
                .map(|e| e.value().clone()),
        ) else {
            self.send(Bytes::from(sm_failed("item-not-found"))).await;
            return;
        };
        let conn = self.conn.take();
        match target.ask(Adopt { conn, user, h }).await {
            Ok(Adopted::Yes) => {
                // The connection lives on in the resumed session; this one
                // ends without a word.
                self.done = true;
            }
            Ok(Adopted::No(conn, failed)) => {
                self.conn = *conn;
                self.send(Bytes::from(failed)).await;
            }
            Err(_) => {
                // The session ended meanwhile; its connection went with it.
                self.done = true;
            }
        }
    }

    /// Queues bytes Stream Management does not count; never waits.
    pub(super) fn send_nonza(&mut self, s: String) {
        if let Some(q) = self.conn.queue() {
            let _ = q.try_send(Frame::nonza(Bytes::from(s)));
        }
    }
}
