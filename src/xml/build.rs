//! [`StanzaBuilder`]: server-generated stanzas (errors, probes, roster
//! pushes, presence) written once into a buffer while the spans routing
//! needs are recorded, so they come out as a [`Stanza`] without being
//! parsed again.
//!
//! The builder escapes what it is given as text or attribute values; raw
//! children (`raw`) must already be well-formed XML — they come from the
//! server itself or from a stanza the framer validated.

use bytes::{BufMut, Bytes, BytesMut};

use crate::xml::escape::{escape_attr, escape_text};
use crate::xml::lex::Span;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::StanzaKind;

    /// What the builder records must be what parsing its bytes finds.
    fn same_as_parsed(s: &Stanza) {
        let p = Stanza::parse(s.bytes().clone()).expect("the builder writes a valid first tag");
        assert_eq!(s.name(), p.name());
        assert_eq!(s.to_raw(), p.to_raw());
        assert_eq!(s.from_raw(), p.from_raw());
        assert_eq!(s.type_raw(), p.type_raw());
        assert_eq!(s.id_raw(), p.id_raw());
        assert_eq!(s.xmlns(), p.xmlns());
        assert_eq!(s.is_empty_element(), p.is_empty_element());
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
}
