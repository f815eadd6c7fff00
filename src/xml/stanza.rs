//! [`Stanza`]: the raw bytes of one top-level stream element plus the few
//! header facts routing needs, as spans into those bytes; and [`Frame`], one
//! outgoing unit made of up to five byte slices (vectored write).
//!
//! A `Stanza` is produced by the framer, which fills the spans while it
//! validates the first tag, so nothing here parses twice. This module owns no
//! I/O and never re-serialises: `splice` only cuts and joins slices.

use std::borrow::Cow;
use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

use crate::error::{StreamCondition, StreamError};
use crate::xml::escape::{escape_attr, unescape};
use crate::xml::lex::{self, Span};
use crate::xml::ns::{NS_CLIENT, NS_SERVER};

/// Where the routing-relevant parts of the first tag are. Attribute spans
/// cover the raw value between the quotes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct HeadSpans {
    pub(crate) name: Span,
    pub(crate) to: Span,
    pub(crate) from: Span,
    pub(crate) ty: Span,
    pub(crate) id: Span,
    pub(crate) xmlns: Span,
    pub(crate) empty: bool,
}

impl HeadSpans {
    pub(crate) fn new(name: Span, empty: bool) -> HeadSpans {
        HeadSpans {
            name,
            to: Span::NONE,
            from: Span::NONE,
            ty: Span::NONE,
            id: Span::NONE,
            xmlns: Span::NONE,
            empty,
        }
    }

    /// The spans after `at` moved `by` bytes on (an insertion at `at`).
    pub(crate) fn shifted(self, at: usize, by: usize) -> HeadSpans {
        let move_span = |s: Span| match s.get() {
            Some(r) if r.start >= at => Span::new(r.start + by, r.end + by),
            _ => s,
        };
        HeadSpans {
            name: move_span(self.name),
            to: move_span(self.to),
            from: move_span(self.from),
            ty: move_span(self.ty),
            id: move_span(self.id),
            xmlns: move_span(self.xmlns),
            empty: self.empty,
        }
    }

    /// Records the attribute if it is one routing cares about.
    #[inline]
    pub(crate) fn note_attr(&mut self, name: &[u8], value: Span) {
        let slot = match name {
            b"to" => &mut self.to,
            b"from" => &mut self.from,
            b"type" => &mut self.ty,
            b"id" => &mut self.id,
            b"xmlns" => &mut self.xmlns,
            _ => return,
        };
        *slot = value;
    }
}

/// The three stanza kinds of RFC 6120 §8, or anything else at the top level
/// (`db:result`, `starttls`, `auth`, stream management, ...).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StanzaKind {
    Message,
    Presence,
    Iq,
    Other,
}

/// One complete top-level element, exactly the bytes from its `<` to its
/// final `>`, validated by the framer (well-formed, restricted XML, UTF-8).
#[derive(Clone)]
pub struct Stanza {
    bytes: Bytes,
    head: HeadSpans,
}

impl Stanza {
    pub(crate) fn from_parts(bytes: Bytes, head: HeadSpans) -> Stanza {
        Stanza { bytes, head }
    }

    /// Builds a stanza from bytes that did not come through the framer
    /// (tests, internally generated stanzas). Only the first tag is
    /// validated, so do not use this on network input.
    pub fn parse(bytes: Bytes) -> Result<Stanza, StreamError> {
        let mut attrs = Vec::new();
        let tag = match lex::scan_start_tag(&bytes, 0, &mut attrs)? {
            Some(t) => t,
            None => {
                return Err(StreamError::with_text(
                    StreamCondition::NotWellFormed,
                    "incomplete start tag",
                ));
            }
        };
        let mut head = HeadSpans::new(tag.name, tag.empty);
        for a in &attrs {
            head.note_attr(&bytes[a.name.start as usize..a.name.end as usize], a.value);
        }
        if tag.empty && tag.end != bytes.len() {
            return Err(StreamError::with_text(
                StreamCondition::NotWellFormed,
                "trailing bytes after an empty element",
            ));
        }
        Ok(Stanza { bytes, head })
    }

    pub fn bytes(&self) -> &Bytes {
        &self.bytes
    }

    pub fn into_bytes(self) -> Bytes {
        self.bytes
    }

    fn str_at(&self, span: Span) -> Option<&str> {
        // Every span was validated as UTF-8 when the stanza was built, so the
        // fallback is unreachable; it only avoids an unwrap on network data.
        span.get()
            .map(|r| std::str::from_utf8(&self.bytes[r]).unwrap_or_default())
    }

    fn value(&self, span: Span) -> Option<Cow<'_, str>> {
        // The framer admits only predefined entities and legal character
        // references, which `unescape` always resolves.
        self.str_at(span)
            .map(|raw| unescape(raw).unwrap_or(Cow::Borrowed(raw)))
    }

    /// The qualified element name as written, e.g. `message` or `db:result`.
    pub fn name(&self) -> &str {
        self.str_at(self.head.name).unwrap_or_default()
    }

    /// The name without its prefix.
    pub fn local_name(&self) -> &str {
        let n = self.name();
        n.rsplit_once(':').map_or(n, |(_, l)| l)
    }

    /// Message, presence and iq are recognised only unprefixed and in the
    /// inherited content namespace (no `xmlns`, or `jabber:client` /
    /// `jabber:server`): `<message xmlns='urn:x'/>` is something else.
    pub fn kind(&self) -> StanzaKind {
        let name = self.name();
        if name.contains(':') {
            return StanzaKind::Other;
        }
        match self.xmlns() {
            None | Some(NS_CLIENT) | Some(NS_SERVER) => {}
            Some(_) => return StanzaKind::Other,
        }
        match name {
            "message" => StanzaKind::Message,
            "presence" => StanzaKind::Presence,
            "iq" => StanzaKind::Iq,
            _ => StanzaKind::Other,
        }
    }

    pub fn to(&self) -> Option<Cow<'_, str>> {
        self.value(self.head.to)
    }
    pub fn from(&self) -> Option<Cow<'_, str>> {
        self.value(self.head.from)
    }
    pub fn type_(&self) -> Option<Cow<'_, str>> {
        self.value(self.head.ty)
    }
    pub fn id(&self) -> Option<Cow<'_, str>> {
        self.value(self.head.id)
    }
    /// The raw (still escaped) attribute values, as they are on the wire.
    pub fn to_raw(&self) -> Option<&str> {
        self.str_at(self.head.to)
    }
    pub fn from_raw(&self) -> Option<&str> {
        self.str_at(self.head.from)
    }
    pub fn type_raw(&self) -> Option<&str> {
        self.str_at(self.head.ty)
    }
    pub fn id_raw(&self) -> Option<&str> {
        self.str_at(self.head.id)
    }

    /// The default-namespace declaration on the element itself, raw.
    pub fn xmlns(&self) -> Option<&str> {
        self.str_at(self.head.xmlns)
    }

    /// `<presence/>` rather than `<presence>…</presence>`.
    pub fn is_empty_element(&self) -> bool {
        self.head.empty
    }

    /// The stanza with `from` and/or `to` replaced, or inserted right after
    /// the element name when absent. Values are raw JIDs and are escaped
    /// here; `escape_attr` escapes both quote characters, so the original
    /// quote style can stay. The result shares the original buffer.
    pub fn splice(&self, from: Option<&str>, to: Option<&str>) -> Frame {
        let name_end = self.head.name.end as usize;
        // (cut start, cut end, replacement); at most two edits.
        let mut edits: [(usize, usize, Bytes); 2] = [(0, 0, Bytes::new()), (0, 0, Bytes::new())];
        let mut n = 0;
        // Sized up front: growing it push by push reallocated several
        // times per stanza, once per copy of a fan-out.
        let mut inserted = String::with_capacity(
            [from, to]
                .iter()
                .flatten()
                .map(|v| v.len() + 8)
                .sum::<usize>(),
        );
        for (attr, span, value) in [("from", self.head.from, from), ("to", self.head.to, to)] {
            let Some(value) = value else { continue };
            match span.get() {
                Some(r) => {
                    edits[n] = (r.start, r.end, Bytes::from(escape_attr(value).into_owned()));
                    n += 1;
                }
                None => {
                    inserted.push(' ');
                    inserted.push_str(attr);
                    inserted.push_str("='");
                    inserted.push_str(&escape_attr(value));
                    inserted.push('\'');
                }
            }
        }
        if !inserted.is_empty() {
            edits[n] = (name_end, name_end, Bytes::from(inserted));
            n += 1;
        }
        let edits = &mut edits[..n];
        edits.sort_unstable_by_key(|e| e.0);

        let mut frame = Frame::empty();
        let mut at = 0;
        for (start, end, replacement) in edits.iter() {
            if *start > at {
                frame.push(self.bytes.slice(at..*start));
            }
            frame.push(replacement.clone());
            at = *end;
        }
        if at < self.bytes.len() {
            frame.push(self.bytes.slice(at..));
        }
        frame
    }
}

impl Stanza {
    /// The stanza with the byte ranges `cut` removed: whole direct children
    /// (as [`crate::xml::child::child_ranges`] finds them), in order, none
    /// overlapping the start tag. Everything else stays byte for byte, the
    /// prefix declarations on the start tag included, and the header spans
    /// stay valid as they are (they all lie in the start tag), so nothing
    /// is scanned again.
    pub fn without(&self, cut: &[std::ops::Range<usize>]) -> Stanza {
        let b = self.bytes.as_ref();
        let removed: usize = cut.iter().map(|r| r.len()).sum();
        let mut out = BytesMut::with_capacity(b.len() - removed.min(b.len()));
        let mut at = 0;
        for r in cut {
            if r.start < at || r.end > b.len() {
                // Not what child_ranges returns: leave the stanza whole.
                return self.clone();
            }
            out.extend_from_slice(&b[at..r.start]);
            at = r.end;
        }
        out.extend_from_slice(&b[at..]);
        Stanza::from_parts(out.freeze(), self.head)
    }

    /// [`Stanza::splice`] as one contiguous stanza (to keep, or to hand on
    /// as a `Stanza`). The spans move with the edits; nothing is scanned
    /// again. Costs one buffer; [`Stanza::splice`] stays the copy-free
    /// choice for bytes that are only written out.
    pub fn spliced(&self, from: Option<&str>, to: Option<&str>) -> Stanza {
        if from.is_none() && to.is_none() {
            return self.clone();
        }
        let from = from.map(escape_attr);
        let to = to.map(escape_attr);
        let name_end = self.head.name.end as usize;
        // (cut start, cut end, which attribute, replaced or inserted); the
        // inserted ones share the cut right after the name.
        let mut edits: [(usize, usize, Attr, bool); 2] = [(0, 0, Attr::From, false); 2];
        let mut n = 0;
        for (attr, span, value) in [
            (Attr::From, self.head.from, &from),
            (Attr::To, self.head.to, &to),
        ] {
            if value.is_none() {
                continue;
            }
            edits[n] = match span.get() {
                Some(r) => (r.start, r.end, attr, true),
                None => (name_end, name_end, attr, false),
            };
            n += 1;
        }
        let edits = &mut edits[..n];
        // Inserted attributes keep the order from, to (stable sort).
        edits.sort_by_key(|e| e.0);
        let extra: usize = [&from, &to]
            .iter()
            .flat_map(|v| v.as_ref())
            .map(|v| v.len() + 8)
            .sum();
        let mut buf = BytesMut::with_capacity(self.bytes.len() + extra);
        let mut head = self.head;
        // How far each original position moved, by where the edits ended.
        let mut shifts: [(usize, isize); 2] = [(usize::MAX, 0); 2];
        let mut at = 0;
        for (i, &(start, end, attr, replaced)) in edits.iter().enumerate() {
            if start >= at {
                buf.put_slice(&self.bytes[at..start]);
            }
            let value = match attr {
                Attr::From => from.as_deref(),
                Attr::To => to.as_deref(),
            }
            .unwrap_or_default();
            if !replaced {
                buf.put_u8(b' ');
                buf.put_slice(attr.name().as_bytes());
                buf.put_slice(b"='");
            }
            let v = Span::new(buf.len(), buf.len() + value.len());
            buf.put_slice(value.as_bytes());
            if !replaced {
                buf.put_u8(b'\'');
            }
            match attr {
                Attr::From => head.from = v,
                Attr::To => head.to = v,
            }
            shifts[i] = (end, buf.len() as isize - end as isize);
            at = end.max(at);
        }
        buf.put_slice(&self.bytes[at..]);
        let moved = |s: Span| -> Span {
            let Some(r) = s.get() else { return s };
            // Edits are in document order: the last one ending at or before
            // the span says how far it moved.
            let d = shifts
                .iter()
                .rev()
                .find(|(end, _)| *end <= r.start)
                .map(|(_, d)| *d)
                .unwrap_or(0);
            let start = (r.start as isize + d) as usize;
            Span::new(start, start + r.len())
        };
        for (attr, slot) in [(Attr::From, &mut head.from), (Attr::To, &mut head.to)] {
            let edited = edits.iter().any(|e| e.2 == attr);
            if !edited {
                *slot = moved(*slot);
            }
        }
        head.ty = moved(head.ty);
        head.id = moved(head.id);
        head.xmlns = moved(head.xmlns);
        Stanza {
            bytes: buf.freeze(),
            head,
        }
    }
}

#[cfg(test)]
impl Stanza {
    /// Test support: the same bytes and the same spans, for checking a
    /// built stanza against what parsing its old string form gave.
    pub(crate) fn assert_same_as(&self, parsed: &Stanza) {
        assert_eq!(self.bytes, parsed.bytes);
        assert_eq!(self.head, parsed.head, "{self:?}");
    }
}

/// The two attributes [`Stanza::spliced`] edits.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Attr {
    From,
    To,
}

impl Attr {
    fn name(self) -> &'static str {
        match self {
            Attr::From => "from",
            Attr::To => "to",
        }
    }
}

impl PartialEq for Stanza {
    fn eq(&self, other: &Stanza) -> bool {
        // The spans are a function of the bytes.
        self.bytes == other.bytes
    }
}

impl fmt::Debug for Stanza {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Stanza({:?})", String::from_utf8_lossy(&self.bytes))
    }
}

const FRAME_PARTS: usize = 5;

/// One outgoing unit for a socket writer: 1..=5 byte slices written back to
/// back. Inline, so building one costs no allocation beyond its `Bytes`.
#[derive(Clone)]
pub struct Frame {
    parts: [Bytes; FRAME_PARTS],
    n: u8,
    /// Not a stanza (a Stream Management `<a/>` or `<r/>`, whitespace):
    /// XEP-0198 does not count it.
    nonza: bool,
}

impl Frame {
    fn empty() -> Frame {
        Frame {
            parts: [const { Bytes::new() }; FRAME_PARTS],
            n: 0,
            nonza: false,
        }
    }

    /// Bytes that are not a stanza, for Stream Management's counting.
    pub fn nonza(b: Bytes) -> Frame {
        let mut f = Frame::from(b);
        f.nonza = true;
        f
    }

    /// Whether XEP-0198 counts this frame as a stanza.
    pub fn is_stanza(&self) -> bool {
        !self.nonza
    }

    fn push(&mut self, b: Bytes) {
        // splice is the only caller with more than one part and produces at
        // most five by construction.
        debug_assert!((self.n as usize) < FRAME_PARTS);
        if let Some(slot) = self.parts.get_mut(self.n as usize) {
            *slot = b;
            self.n += 1;
        }
    }

    /// A frame of up to five slices (more are joined into the fifth).
    pub fn from_parts(parts: Vec<Bytes>) -> Frame {
        let mut f = Frame::empty();
        if parts.len() <= FRAME_PARTS {
            for p in parts {
                f.push(p);
            }
        } else {
            f.push(Bytes::from(parts.concat()));
        }
        f
    }

    pub fn parts(&self) -> &[Bytes] {
        &self.parts[..self.n as usize]
    }

    /// The slices, moved out: a writer keeps them without touching their
    /// reference counts (a clone of a freshly built `Bytes` allocates).
    pub fn into_parts(self) -> impl Iterator<Item = Bytes> {
        let n = self.n as usize;
        self.parts.into_iter().take(n)
    }

    /// Total length in bytes.
    pub fn len(&self) -> usize {
        self.parts().iter().map(Bytes::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The stanza a frame carries, parsed again from its bytes (for what a
    /// closed connection hands back: off the hot path).
    pub fn to_stanza(&self) -> Result<Stanza, StreamError> {
        Stanza::parse(Bytes::from(self.to_vec()))
    }

    pub fn to_vec(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(self.len());
        for p in self.parts() {
            v.extend_from_slice(p);
        }
        v
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({:?})", String::from_utf8_lossy(&self.to_vec()))
    }
}

impl From<Bytes> for Frame {
    fn from(b: Bytes) -> Frame {
        let mut f = Frame::empty();
        f.push(b);
        f
    }
}

impl From<Stanza> for Frame {
    fn from(s: Stanza) -> Frame {
        Frame::from(s.bytes)
    }
}

impl From<&'static str> for Frame {
    fn from(s: &'static str) -> Frame {
        Frame::from(Bytes::from_static(s.as_bytes()))
    }
}

impl From<String> for Frame {
    fn from(s: String) -> Frame {
        Frame::from(Bytes::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stanza(s: &'static str) -> Stanza {
        Stanza::parse(Bytes::from_static(s.as_bytes())).expect("valid stanza")
    }

    fn spliced(s: &'static str, from: Option<&str>, to: Option<&str>) -> String {
        let f = stanza(s).splice(from, to);
        assert!(f.parts().len() <= 5);
        String::from_utf8(f.to_vec()).expect("utf-8")
    }

    #[test]
    fn header_facts_are_read_from_the_first_tag_and_unescaped() {
        let s = stanza(
            "<message to='a@b/r&amp;s' from=\"c@d\" type='chat' id='m&#x31;' xmlns='jabber:client'><body>hi</body></message>",
        );
        assert_eq!(s.name(), "message");
        assert_eq!(s.kind(), StanzaKind::Message);
        assert_eq!(s.to().as_deref(), Some("a@b/r&s"));
        assert_eq!(s.to_raw(), Some("a@b/r&amp;s"));
        assert_eq!(s.from().as_deref(), Some("c@d"));
        assert_eq!(s.type_().as_deref(), Some("chat"));
        assert_eq!(s.id().as_deref(), Some("m1"));
        assert_eq!(s.xmlns(), Some("jabber:client"));
        assert!(!s.is_empty_element());
    }

    #[test]
    fn kind_needs_an_unprefixed_name_in_the_content_namespace() {
        assert_eq!(stanza("<presence/>").kind(), StanzaKind::Presence);
        assert_eq!(stanza("<iq type='get' id='1'/>").kind(), StanzaKind::Iq);
        assert_eq!(
            stanza("<db:result xmlns:db='jabber:server:dialback'/>").kind(),
            StanzaKind::Other
        );
        assert_eq!(stanza("<message xmlns='urn:x'/>").kind(), StanzaKind::Other);
        assert_eq!(stanza("<db:result/>").local_name(), "result");
        assert!(stanza("<presence/>").is_empty_element());
    }

    #[test]
    fn splice_replaces_existing_attributes_in_both_quote_styles() {
        assert_eq!(
            spliced(
                "<message from='x@y' to=\"z@w\"><body/></message>",
                Some("a@b/c"),
                Some("d@e")
            ),
            "<message from='a@b/c' to=\"d@e\"><body/></message>"
        );
    }

    #[test]
    fn splice_escapes_values_so_either_quote_style_stays_valid() {
        let out = spliced("<message to=\"z@w\"/>", None, Some("a\"b'<&>"));
        assert_eq!(out, "<message to=\"a&quot;b&apos;&lt;&amp;&gt;\"/>");
        let out = spliced("<message to='z@w'/>", None, Some("a\"b'"));
        assert_eq!(out, "<message to='a&quot;b&apos;'/>");
    }

    #[test]
    fn splice_inserts_missing_attributes_after_the_name_of_an_empty_element() {
        assert_eq!(
            spliced("<presence/>", Some("a@b/r"), None),
            "<presence from='a@b/r'/>"
        );
        assert_eq!(
            spliced("<presence/>", Some("a@b/r"), Some("c@d")),
            "<presence from='a@b/r' to='c@d'/>"
        );
        assert_eq!(
            spliced("<presence\n type='probe'/>", Some("a@b"), None),
            "<presence from='a@b'\n type='probe'/>"
        );
    }

    #[test]
    fn splice_mixes_replacement_and_insertion_in_document_order() {
        assert_eq!(
            spliced(
                "<iq type='get' to='old' id='1'><q/></iq>",
                Some("f@g"),
                Some("new")
            ),
            "<iq from='f@g' type='get' to='new' id='1'><q/></iq>"
        );
        let f = stanza("<iq type='get' to='old' id='1'><q/></iq>").splice(Some("f@g"), Some("new"));
        assert_eq!(f.parts().len(), 5);
    }

    #[test]
    fn spliced_output_is_well_formed_xml() {
        let f = stanza("<message to='x' from='y'><body>a &amp; b</body></message>")
            .splice(Some("<evil/>&amp;'\""), Some("t"));
        let v = f.to_vec();
        let e = crate::xml::element::Element::parse(&v, NS_CLIENT, &[]).expect("parses");
        assert_eq!(e.attr("from"), Some("<evil/>&amp;'\""));
        assert_eq!(e.attr("to"), Some("t"));
        assert_eq!(f.len(), v.len());
    }

    #[test]
    fn splice_without_changes_is_the_original_bytes() {
        let s = stanza("<presence/>");
        let f = s.splice(None, None);
        assert_eq!(f.parts().len(), 1);
        assert_eq!(f.to_vec(), b"<presence/>");
    }

    #[test]
    fn frames_convert_from_static_strings_owned_strings_and_stanzas() {
        assert_eq!(Frame::from("<a/>").to_vec(), b"<a/>");
        assert_eq!(Frame::from(String::from("<b/>")).len(), 4);
        assert_eq!(Frame::from(stanza("<c/>")).parts().len(), 1);
    }

    /// Same bytes and same spans as parsing the spliced bytes again.
    fn same_as_reparsed(s: &Stanza, from: Option<&str>, to: Option<&str>) {
        let p = Stanza::parse(Bytes::from(s.splice(from, to).to_vec())).expect("parses");
        s.spliced(from, to).assert_same_as(&p);
    }

    #[test]
    fn spliced_moves_the_spans_with_the_edits() {
        for s in [
            "<presence/>",
            "<presence type='unavailable'/>",
            "<presence\n type='probe' id='p'/>",
            "<message from='x@y' to=\"z@w\" type='chat' xmlns='jabber:client'><body/></message>",
            "<iq type='get' to='old' id='1'><q/></iq>",
            "<iq to='a-much-longer-old-value@example.com' id='1' from='x'><q/></iq>",
            "<presence from='a@b/c' id='x'><show>away</show></presence>",
        ] {
            let s = stanza(s);
            for (from, to) in [
                (Some("f@g/r"), None),
                (None, Some("t@u")),
                (Some("o'b@x"), Some("a&b")),
                (None, None),
            ] {
                same_as_reparsed(&s, from, to);
            }
        }
    }

    #[test]
    fn stanza_stays_small() {
        assert!(
            std::mem::size_of::<Stanza>() <= 96,
            "{}",
            std::mem::size_of::<Stanza>()
        );
    }
}
