//! [`StanzaBuilder`]: server-generated stanzas (errors, probes, roster
//! pushes, presence) written once into a buffer while the spans routing
//! needs are recorded, so they come out as a [`Stanza`] without being
//! parsed again.
//!
//! The builder escapes what it is given as text or attribute values; raw
//! children (`raw`) must already be well-formed XML — they come from the
//! server itself or from a stanza the framer validated.

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::StanzaCondition;
use crate::xml::escape::{escape_attr, escape_text};
use crate::xml::lex::Span;
use crate::xml::ns::NS_STANZAS;
use crate::xml::stanza::{HeadSpans, Stanza};

/// Writes one element: `new(name)`, then attributes, then children, then
/// [`StanzaBuilder::build`].
pub struct StanzaBuilder<'n> {
    buf: BytesMut,
    head: HeadSpans,
    /// For the closing tag.
    name: &'n str,
    /// Children were written, so the start tag is closed with `>`.
    open: bool,
}

impl<'n> StanzaBuilder<'n> {
    pub fn new(name: &'n str) -> StanzaBuilder<'n> {
        StanzaBuilder::with_capacity(name, 128)
    }

    pub fn with_capacity(name: &'n str, capacity: usize) -> StanzaBuilder<'n> {
        let mut buf = BytesMut::with_capacity(capacity.max(name.len() + 3));
        buf.put_u8(b'<');
        buf.put_slice(name.as_bytes());
        let name_end = buf.len();
        StanzaBuilder {
            buf,
            head: HeadSpans::new(Span::new(1, name_end), true),
            name,
            open: false,
        }
    }

    /// Adds an attribute (its value escaped). Attributes come before any
    /// child; one added after a child is a bug in the caller.
    pub fn attr(mut self, name: &str, value: &str) -> StanzaBuilder<'n> {
        debug_assert!(!self.open, "attribute {name} after a child");
        self.buf.put_u8(b' ');
        self.buf.put_slice(name.as_bytes());
        self.buf.put_slice(b"='");
        let start = self.buf.len();
        self.buf.put_slice(escape_attr(value).as_bytes());
        let end = self.buf.len();
        self.buf.put_u8(b'\'');
        self.head.note_attr(name.as_bytes(), Span::new(start, end));
        self
    }

    /// [`StanzaBuilder::attr`] when the value is there.
    pub fn attr_opt(self, name: &str, value: Option<&str>) -> StanzaBuilder<'n> {
        match value {
            Some(v) => self.attr(name, v),
            None => self,
        }
    }

    fn open_content(&mut self) {
        if !self.open {
            self.buf.put_u8(b'>');
            self.open = true;
            self.head.empty = false;
        }
    }

    /// Adds well-formed XML as it is (a child element built elsewhere).
    pub fn raw(mut self, xml: &[u8]) -> StanzaBuilder<'n> {
        self.open_content();
        self.buf.put_slice(xml);
        self
    }

    /// Adds character data, escaped.
    pub fn text(mut self, text: &str) -> StanzaBuilder<'n> {
        self.open_content();
        self.buf.put_slice(escape_text(text).as_bytes());
        self
    }

    /// `<name>text</name>` as a child, the text escaped.
    pub fn text_child(self, name: &str, text: &str) -> StanzaBuilder<'n> {
        let mut b = self.raw(b"<");
        b.buf.put_slice(name.as_bytes());
        b.buf.put_u8(b'>');
        b.buf.put_slice(escape_text(text).as_bytes());
        b.buf.put_slice(b"</");
        b.buf.put_slice(name.as_bytes());
        b.buf.put_u8(b'>');
        b
    }

    /// Closes the element: `/>` when it has no children.
    pub fn build(mut self) -> Stanza {
        if self.open {
            self.buf.put_slice(b"</");
            self.buf.put_slice(self.name.as_bytes());
            self.buf.put_u8(b'>');
        } else {
            self.buf.put_slice(b"/>");
        }
        Stanza::from_parts(self.buf.freeze(), self.head)
    }

    /// The bytes alone, for an element that is a child of something else.
    pub fn into_bytes(self) -> Bytes {
        self.build().into_bytes()
    }
}

/// The error reply to a stanza (RFC 6120 §8.3): same element name and
/// id, `to` and `from` swapped, `type='error'`, and the `<error/>` child
/// with the condition's recommended type (which [`StanzaCondition`]
/// knows). The original payload is not echoed back (§8.3.1 makes that
/// optional, and it keeps bounces small).
pub fn error_reply(
    name: &str,
    id: Option<&str>,
    original_from: Option<&str>,
    original_to: Option<&str>,
    condition: StanzaCondition,
    text: Option<&str>,
) -> Stanza {
    let cond = condition.as_str();
    let mut b = StanzaBuilder::with_capacity(name, 256)
        .attr("type", "error")
        .attr_opt("id", id)
        .attr_opt("to", original_from)
        .attr_opt("from", original_to)
        .raw(b"<error type='")
        .raw(condition.default_type().as_str().as_bytes())
        .raw(b"'><")
        .raw(cond.as_bytes())
        .raw(b" xmlns='")
        .raw(NS_STANZAS.as_bytes())
        .raw(b"'/>");
    if let Some(t) = text {
        b = b
            .raw(b"<text xmlns='")
            .raw(NS_STANZAS.as_bytes())
            .raw(b"'>")
            .text(t)
            .raw(b"</text>");
    }
    b.raw(b"</error>").build()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::StanzaKind;

    /// What the builder records must be what parsing its bytes finds.
    fn same_as_parsed(s: &Stanza) {
        let p = Stanza::parse(s.bytes().clone()).expect("the builder writes a valid first tag");
        s.assert_same_as(&p);
    }

    #[test]
    fn an_empty_element_records_its_routing_attributes() {
        let s = StanzaBuilder::new("presence")
            .attr("from", "a@x/r")
            .attr("to", "b@y")
            .attr("type", "probe")
            .attr("id", "p1")
            .build();
        assert_eq!(
            &s.bytes()[..],
            b"<presence from='a@x/r' to='b@y' type='probe' id='p1'/>"
        );
        assert_eq!(s.kind(), StanzaKind::Presence);
        assert_eq!(s.to().as_deref(), Some("b@y"));
        assert_eq!(s.type_().as_deref(), Some("probe"));
        same_as_parsed(&s);
    }

    #[test]
    fn values_and_text_are_escaped_and_spans_cover_the_escaped_value() {
        let s = StanzaBuilder::new("message")
            .attr("to", "o'brien@x")
            .attr_opt("id", None)
            .attr("xmlns", "jabber:client")
            .text_child("body", "1 < 2 & 3")
            .text("&")
            .build();
        assert_eq!(
            &s.bytes()[..],
            &b"<message to='o&apos;brien@x' xmlns='jabber:client'><body>1 &lt; 2 &amp; 3</body>&amp;</message>"[..]
        );
        assert_eq!(s.to().as_deref(), Some("o'brien@x"));
        assert_eq!(s.id(), None);
        assert!(!s.is_empty_element());
        same_as_parsed(&s);
    }

    #[test]
    fn raw_children_are_kept_as_they_are() {
        let s = StanzaBuilder::new("iq")
            .attr("type", "set")
            .raw(b"<query xmlns='jabber:iq:roster'><item jid='c@d'/></query>")
            .build();
        assert!(s.bytes().ends_with(b"<item jid='c@d'/></query></iq>"));
        same_as_parsed(&s);
        // A spliced builder stanza is still one valid element.
        let f = s.splice(Some("a@b"), Some("c@d"));
        let again = Stanza::parse(Bytes::from(f.to_vec())).expect("spliced stanza parses");
        assert_eq!(again.from().as_deref(), Some("a@b"));
    }

    #[test]
    fn error_reply_swaps_addresses_and_uses_the_recommended_type() {
        let s = error_reply(
            "message",
            Some("m1"),
            Some("a@x/r"),
            Some("b@y"),
            StanzaCondition::ServiceUnavailable,
            None,
        );
        assert_eq!(
            &s.bytes()[..],
            &b"<message type='error' id='m1' to='a@x/r' from='b@y'><error type='cancel'>\
               <service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>"[..]
        );
        same_as_parsed(&s);
    }

    #[test]
    fn error_reply_escapes_its_text_and_omits_absent_addresses() {
        let s = error_reply(
            "iq",
            Some("a'1"),
            Some("j@x/r"),
            None,
            StanzaCondition::BadRequest,
            Some("a<b"),
        );
        assert_eq!(
            &s.bytes()[..],
            &b"<iq type='error' id='a&apos;1' to='j@x/r'><error type='modify'>\
               <bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>\
               <text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>a&lt;b</text></error></iq>"[..]
        );
        assert_eq!(s.from(), None);
        same_as_parsed(&s);
    }
}
