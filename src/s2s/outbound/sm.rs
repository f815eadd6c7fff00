//! XEP-0198 on a domain's outbound streams: enabling it, the peer's acks
//! (which settle journal entries too), what a lost link leaves to resend,
//! and resuming the lost stream on the next one.

use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use super::{OutboundDomain, State};
use crate::events::s2s::{OutSm, OutboundSm, SmAckReceived};
use crate::router::Envelope;
use crate::stream::s2s::parse_element;
use crate::transport::writer::AckTooHigh;
use crate::xml::ns::NS_SM;
use crate::xml::{Frame, Stanza};

/// XEP-0198 on this domain's outbound streams.
#[derive(Default)]
pub(super) struct SmOut {
    /// The current stream's resumption id and the peer's `max`, once its
    /// `<enabled resume='true'/>` came.
    pub(super) id: Option<(String, Duration)>,
    /// The last stream, lost with stanzas it had not acknowledged; they
    /// are at the head of the queue.
    pub(super) lost: Option<Lost>,
}

pub(super) struct Lost {
    pub(super) id: String,
    pub(super) max: Duration,
    /// The peer's last `h` on it.
    pub(super) acked: u32,
    /// The stanzas at the head of the queue that it had not acknowledged.
    pub(super) unacked: usize,
    /// The peer keeps its count until about then.
    pub(super) until: Instant,
}

pub(super) const ENABLE: &str = "<enable xmlns='urn:xmpp:sm:3' resume='true'/>";

impl OutboundDomain {
    /// The stream's writer is gone: what it did not write, or wrote and
    /// the peer did not acknowledge, goes back to the head of the queue,
    /// and a resumable stream is remembered for the next one to resume.
    pub(super) fn lose_link(&mut self, q: &crate::transport::writer::Queue) {
        let position = q.sm_position();
        let unsent = q.close_and_take();
        match (self.sm.id.take(), position) {
            // Everything was acknowledged: nothing to resume for.
            (Some(_), Some((acked, sent))) if acked == sent => self.sm.lost = None,
            (Some((id, max)), Some((acked, sent))) => {
                self.sm.lost = Some(Lost {
                    id,
                    max,
                    acked,
                    unacked: sent.wrapping_sub(acked) as usize,
                    until: Instant::now() + max,
                })
            }
            // A `<resume/>` unanswered: the lost stream may still be.
            _ if matches!(self.state, State::Resuming(_)) => {}
            _ => self.sm.lost = None,
        }
        self.keep_unsent(unsent);
    }

    /// An XEP-0198 element from the peer of our stream.
    pub(super) async fn stream_management(&mut self, s: &Stanza) {
        let Some(el) = self
            .link
            .as_mut()
            .and_then(|c| parse_element(s, c.framer().stream_prefixes()).ok())
        else {
            return;
        };
        let q = self.link.as_ref().and_then(|c| c.queue()).cloned();
        let Some(q) = q else {
            return;
        };
        match (s.local_name(), &self.state) {
            ("enabled", State::Up) => {
                let resumable = matches!(el.attr("resume"), Some("true" | "1"));
                if let (true, Some(id)) = (resumable, el.attr("id")) {
                    let max = el
                        .attr("max")
                        .and_then(|m| m.parse::<u64>().ok())
                        .map_or(MAX_RESUME, |m| Duration::from_secs(m).min(MAX_RESUME));
                    self.sm.id = Some((id.to_string(), max));
                }
                OutboundSm {
                    remote: &self.remote,
                    what: OutSm::Enabled { resumable },
                }
                .emit();
            }
            ("failed", State::Up) => {
                q.disable_sm();
                if self.shared.journal.is_some() {
                    self.written = Some(q.when_written());
                }
                OutboundSm {
                    remote: &self.remote,
                    what: OutSm::Refused,
                }
                .emit();
            }
            ("failed", State::Resuming(_)) => {
                // The peer lost our count: everything unacknowledged goes
                // again on a fresh count (its origin-ids let the peer
                // drop what it had).
                self.resume_failed();
                q.enable_sm(Frame::nonza(Bytes::from_static(ENABLE.as_bytes())));
                self.resumed();
            }
            ("resumed", State::Resuming(_)) => {
                let Some(lost) = self.sm.lost.take() else {
                    return;
                };
                let h = el.attr("h").and_then(|h| h.parse::<u32>().ok());
                let handled = h.map(|h| h.wrapping_sub(lost.acked) as usize);
                let (Some(h), Some(n)) = (h, handled.filter(|n| *n <= lost.unacked)) else {
                    let sent = lost.acked.wrapping_add(lost.unacked as u32);
                    let e = h.map(|h| AckTooHigh { h, sent });
                    return self.too_high(e).await;
                };
                let handled: Vec<Envelope> = self.queue.drain(..n).collect();
                for env in &handled {
                    self.queued_bytes -= env.stanza.bytes().len();
                    self.shared.forget(env);
                }
                self.metrics.set_queue(self.queue.len());
                q.enable_sm_resumed(h);
                self.sm.id = Some((lost.id, lost.max));
                OutboundSm {
                    remote: &self.remote,
                    what: OutSm::Resumed {
                        resent: lost.unacked - n,
                        dropped: n,
                    },
                }
                .emit();
                self.resumed();
            }
            ("a", _) => {
                let Some(h) = el.attr("h").and_then(|h| h.parse::<u32>().ok()) else {
                    return;
                };
                let before = q.sm_position().map_or(h, |(acked, _)| acked);
                if let Err(e) = q.ack(h) {
                    return self.too_high(Some(e)).await;
                }
                if self.shared.journal.is_some() {
                    self.settle_acked(h.wrapping_sub(before) as usize);
                }
                SmAckReceived {
                    remote: &self.remote,
                    h,
                }
                .emit();
            }
            ("r", _) => {
                // We handle no stanzas on a stream we opened.
                self.send_bytes(Bytes::from(format!("<a xmlns='{NS_SM}' h='0'/>")));
            }
            _ => {}
        }
    }

    /// The lost stream cannot be resumed: all it did not get acknowledged
    /// goes again, counted afresh.
    pub(super) fn resume_failed(&mut self) {
        self.sm.lost = None;
        OutboundSm {
            remote: &self.remote,
            what: OutSm::ResumeFailed {
                resent: self.queue.len(),
            },
        }
        .emit();
    }

    /// The resumption is settled: the stream is up, the queue goes out.
    fn resumed(&mut self) {
        self.state = State::Up;
        self.metrics.set_state("up");
        self.flush();
    }

    /// XEP-0198 §4: the peer acknowledged more than we sent (or resumed
    /// without a count).
    async fn too_high(&mut self, e: Option<AckTooHigh>) {
        let err = crate::error::StreamError::with_text(
            crate::error::StreamCondition::UndefinedCondition,
            "acknowledged more stanzas than were sent",
        );
        self.shared
            .metrics
            .stream_error(err.condition, &self.remote, err.text.as_deref());
        let app = e.map(|e| e.element()).unwrap_or_default();
        let tail = format!("{}</stream:stream>", err.to_xml_with(&app));
        self.sm.id = None;
        self.sm.lost = None;
        self.disconnect(Some(&tail)).await;
    }
}

/// The longest a lost stream is remembered for resumption, whatever the
/// peer's `max`.
const MAX_RESUME: Duration = Duration::from_secs(600);
