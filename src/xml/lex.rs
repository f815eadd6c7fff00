//! The lexical layer of XMPP's restricted XML, shared by the [`Framer`]
//! and `Stanza::parse`: byte classes, names and qualified names, start tags
//! and their attributes, character and entity references, text, CDATA,
//! inline UTF-8 validation, and the [`Span`]s the scanners hand out.
//!
//! Pure functions over byte slices: no buffer, no state, no allocation
//! beyond the caller's attribute vector. Framing decisions (what a stanza
//! is, namespaces in scope, depth, size) belong to the framer, not here.
//! This is the per-byte hot path: what the framer's scanning loops call is
//! `#[inline]`, so the optimiser keeps the inlining choices it had when
//! this was part of the framer module.
//!
//! [`Framer`]: crate::xml::Framer

use memchr::{memchr, memmem};

use crate::error::{StreamCondition, StreamError};
use crate::xml::ns::NS_XML;

/// A half-open byte range inside a stanza; `start == ABSENT` means the
/// attribute was not present. u32 keeps `Stanza` small; the framer caps the
/// stanza size well below 4 GiB.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) struct Span {
    pub(crate) start: u32,
    pub(crate) end: u32,
}

const ABSENT: u32 = u32::MAX;

impl Span {
    pub(crate) const NONE: Span = Span {
        start: ABSENT,
        end: ABSENT,
    };

    #[inline]
    pub(crate) fn new(start: usize, end: usize) -> Span {
        // The framer's size limit keeps positions far below u32::MAX.
        Span {
            start: start as u32,
            end: end as u32,
        }
    }

    #[inline]
    pub(super) fn get(self) -> Option<std::ops::Range<usize>> {
        (self.start != ABSENT).then_some(self.start as usize..self.end as usize)
    }
}

/// One attribute of a scanned tag: its qualified name and raw value
/// (between the quotes), as absolute positions in the scanned buffer.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RawAttr {
    pub(crate) name: Span,
    pub(crate) value: Span,
}

/// A complete start tag.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Tag {
    pub(crate) name: Span,
    /// Index just past the closing `>`.
    pub(crate) end: usize,
    pub(crate) empty: bool,
}

/// Longest entity or character reference body we wait for (`&#x000010FFFF;`
/// has leading zeros; anything longer than this is refused).
const MAX_REF_LEN: usize = 40;

// Bytes >= 0x80 stop both scans so that UTF-8 is validated in the same pass
// (a second pass with `str::from_utf8` cost 40 % of the framing time).
const C_TEXT: u8 = 1; // stops a text scan: < & > non-ASCII, C0 controls but \t \n \r
const C_ATTR: u8 = 2; // stops an attribute value check: < & non-ASCII, same controls
const C_NAME: u8 = 4; // ASCII name character
const C_NAME_START: u8 = 8; // ASCII name start character
const C_WS: u8 = 16;

static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        if i != 0x09 && i != 0x0A && i != 0x0D {
            t[i] = C_TEXT | C_ATTR;
        }
        i += 1;
    }
    t[b'<' as usize] = C_TEXT | C_ATTR;
    t[b'&' as usize] = C_TEXT | C_ATTR;
    t[b'>' as usize] = C_TEXT;
    let mut h = 0x80;
    while h < 0x100 {
        t[h] = C_TEXT | C_ATTR;
        h += 1;
    }
    let mut c = b'a';
    while c <= b'z' {
        t[c as usize] |= C_NAME | C_NAME_START;
        t[(c - 32) as usize] |= C_NAME | C_NAME_START;
        c += 1;
    }
    let mut d = b'0';
    while d <= b'9' {
        t[d as usize] |= C_NAME;
        d += 1;
    }
    t[b'_' as usize] |= C_NAME | C_NAME_START;
    t[b':' as usize] |= C_NAME | C_NAME_START;
    t[b'-' as usize] |= C_NAME;
    t[b'.' as usize] |= C_NAME;
    t[b' ' as usize] |= C_WS;
    t[b'\t' as usize] |= C_WS;
    t[b'\n' as usize] |= C_WS;
    t[b'\r' as usize] |= C_WS;
    t
};

#[inline]
pub(super) fn is_ws(b: u8) -> bool {
    CLASS[b as usize] & C_WS != 0
}

#[inline]
pub(super) fn count_ws(b: &[u8]) -> usize {
    b.iter().take_while(|&&c| is_ws(c)).count()
}

#[inline]
pub(super) fn span_of(b: &[u8], s: Span) -> &[u8] {
    &b[s.start as usize..s.end as usize]
}

/// Spans handed out by the scanner cover validated UTF-8.
#[inline]
pub(super) fn str_of(b: &[u8], s: Span) -> &str {
    std::str::from_utf8(span_of(b, s)).unwrap_or_default()
}

#[inline]
pub(super) fn split_qname(n: &str) -> (Option<&str>, &str) {
    match n.split_once(':') {
        Some((p, l)) => (Some(p), l),
        None => (None, n),
    }
}

pub(super) fn not_well_formed(why: &'static str) -> StreamError {
    StreamError::with_text(StreamCondition::NotWellFormed, why)
}

pub(super) fn restricted(why: &'static str) -> StreamError {
    StreamError::with_text(StreamCondition::RestrictedXml, why)
}

fn bad_utf8() -> StreamError {
    StreamError::with_text(StreamCondition::UnsupportedEncoding, "invalid UTF-8")
}

pub(super) fn bad_prefix(p: &str) -> StreamError {
    StreamError::with_text(
        StreamCondition::BadNamespacePrefix,
        format!("undeclared namespace prefix '{p}'"),
    )
}

pub(super) fn too_large() -> StreamError {
    StreamError::with_text(StreamCondition::PolicyViolation, "stanza too large")
}

/// The error for an unexpected byte: invalid UTF-8 takes precedence
/// (RFC 6120 §11.6), anything else is not well-formed.
pub(super) fn char_error(b: &[u8], i: usize, why: &'static str) -> StreamError {
    match b.get(i) {
        Some(&c) if c >= 0x80 => match decode_char(&b[i..]) {
            Decoded::Invalid => bad_utf8(),
            _ => not_well_formed(why),
        },
        _ => not_well_formed(why),
    }
}

enum Decoded {
    Char(char, usize),
    Incomplete,
    Invalid,
}

fn decode_char(b: &[u8]) -> Decoded {
    let n = match b.first() {
        None => return Decoded::Incomplete,
        Some(0x00..=0x7F) => 1,
        Some(0xC2..=0xDF) => 2,
        Some(0xE0..=0xEF) => 3,
        Some(0xF0..=0xF4) => 4,
        Some(_) => return Decoded::Invalid,
    };
    if b.len() < n {
        return if b[1..].iter().all(|&c| c & 0xC0 == 0x80) {
            Decoded::Incomplete
        } else {
            Decoded::Invalid
        };
    }
    match std::str::from_utf8(&b[..n])
        .ok()
        .and_then(|s| s.chars().next())
    {
        Some(c) => Decoded::Char(c, n),
        None => Decoded::Invalid,
    }
}

/// Validates UTF-8, allowing an incomplete sequence at the end; returns how
/// many bytes are complete characters.
fn utf8_prefix(b: &[u8]) -> Result<usize, StreamError> {
    match std::str::from_utf8(b) {
        Ok(_) => Ok(b.len()),
        Err(e) if e.error_len().is_none() => Ok(e.valid_up_to()),
        Err(_) => Err(bad_utf8()),
    }
}

/// XML 1.0 `Char`.
fn is_xml_char(c: u32) -> bool {
    matches!(c, 0x9 | 0xA | 0xD | 0x20..=0xD7FF | 0xE000..=0xFFFD | 0x10000..=0x10FFFF)
}

fn is_name_start_char(c: char) -> bool {
    matches!(c as u32,
        0x3A | 0x41..=0x5A | 0x5F | 0x61..=0x7A | 0xC0..=0xD6 | 0xD8..=0xF6 | 0xF8..=0x2FF
        | 0x370..=0x37D | 0x37F..=0x1FFF | 0x200C..=0x200D | 0x2070..=0x218F
        | 0x2C00..=0x2FEF | 0x3001..=0xD7FF | 0xF900..=0xFDCF | 0xFDF0..=0xFFFD
        | 0x10000..=0xEFFFF)
}

fn is_name_char(c: char) -> bool {
    is_name_start_char(c)
        || matches!(c as u32, 0x2D | 0x2E | 0x30..=0x39 | 0xB7 | 0x300..=0x36F | 0x203F..=0x2040)
}

/// Scans an XML Name starting at `i`; returns its end, or None when the
/// buffer ends before the name does.
#[inline]
pub(super) fn scan_name(b: &[u8], i: usize) -> Result<Option<usize>, StreamError> {
    Ok(scan_name_from(b, i, i)?.ok())
}

/// The end of the all-ASCII name at `i`, when an ASCII byte ends it: the
/// common case, inlined. None leaves it to [`scan_name`].
#[inline(always)]
fn ascii_name(b: &[u8], i: usize) -> Option<usize> {
    let first = *b.get(i)?;
    if CLASS[first as usize] & C_NAME_START == 0 {
        return None;
    }
    let mut j = i + 1;
    while let Some(&c) = b.get(j) {
        if CLASS[c as usize] & C_NAME == 0 {
            return (c < 0x80).then_some(j);
        }
        j += 1;
    }
    None
}

/// Scans the XML Name that starts at `i`, resuming at `j` (bytes before `j`
/// were scanned already). Ok(Ok(end)) when complete; Ok(Err(at)) when the
/// buffer ends first: resume at `at`, the start of a character.
#[inline]
fn scan_name_from(b: &[u8], i: usize, j: usize) -> Result<Result<usize, usize>, StreamError> {
    let mut j = j;
    loop {
        let Some(&c) = b.get(j) else {
            return Ok(Err(j));
        };
        let first = j == i;
        if c < 0x80 {
            let class = CLASS[c as usize];
            let ok = if first {
                class & C_NAME_START != 0
            } else {
                class & C_NAME != 0
            };
            if !ok {
                return if first {
                    Err(char_error(b, j, "bad name"))
                } else {
                    Ok(Ok(j))
                };
            }
            j += 1;
        } else {
            match decode_char(&b[j..]) {
                Decoded::Incomplete => return Ok(Err(j)),
                Decoded::Invalid => return Err(bad_utf8()),
                Decoded::Char(ch, n) => {
                    let ok = if first {
                        is_name_start_char(ch)
                    } else {
                        is_name_char(ch)
                    };
                    if !ok {
                        return if first {
                            Err(not_well_formed("bad name"))
                        } else {
                            Ok(Ok(j))
                        };
                    }
                    j += n;
                }
            }
        }
    }
}

/// Namespaces in XML: at most one colon, with a non-empty prefix and a
/// local part that starts like a name.
fn check_qname(n: &[u8]) -> Result<(), StreamError> {
    if let Some(colon) = memchr(b':', n) {
        let local = &n[colon + 1..];
        let bad = colon == 0
            || memchr(b':', local).is_some()
            || local
                .first()
                .is_none_or(|&c| c < 0x80 && CLASS[c as usize] & C_NAME_START == 0);
        if bad {
            return Err(not_well_formed("bad qualified name"));
        }
    }
    Ok(())
}

pub(super) fn check_prefix_declaration(prefix: &[u8], uri: &[u8]) -> Result<(), StreamError> {
    let ok = match prefix {
        b"xmlns" => false,
        b"xml" => uri == NS_XML.as_bytes(),
        _ => !uri.is_empty() && uri != NS_XML.as_bytes(),
    };
    if ok {
        Ok(())
    } else {
        Err(not_well_formed("bad namespace declaration"))
    }
}

/// Most attributes one element may carry, namespace declarations
/// included. Real stanzas carry a handful; the cap bounds the attribute
/// list and the duplicate check a hostile tag can cost. Beyond it the
/// stream fails with `policy-violation` (RFC 6120 §4.9.3.17: a local
/// service policy, like the stanza size limit), as soon as the attribute
/// arrives.
pub const MAX_ATTRIBUTES: usize = 4096;

/// Scans a complete start tag at `start` (which holds `<`), checking names,
/// attribute syntax, values and duplicates. `attrs` receives the attributes.
/// Ok(None) when the buffer ends inside the tag.
#[inline]
pub(super) fn scan_start_tag(
    b: &[u8],
    start: usize,
    attrs: &mut Vec<RawAttr>,
) -> Result<Option<Tag>, StreamError> {
    attrs.clear();
    TagScan::new(start).resume(b, attrs)
}

/// A start tag being scanned: where the scan stopped and in what state, so
/// that a tag arriving in pieces is scanned once, whatever the chunking
/// (each read costs O(new bytes), not O(tag)). Only the bytes of an
/// unfinished name character, reference or closing quote are looked at
/// again, a bounded few.
#[derive(Clone, Copy, Debug)]
pub(crate) struct TagScan {
    start: usize,
    name: Span,
    pos: usize,
    at: At,
}

#[derive(Clone, Copy, Debug)]
enum At {
    /// In the element name.
    Name,
    /// After the name or a value; `ws`: whitespace seen since.
    Between {
        ws: bool,
    },
    /// After `/`, before the `>` that must follow.
    Slash,
    AttrName {
        start: usize,
    },
    /// After an attribute name, before `=`.
    Eq {
        name: Span,
    },
    /// After `=`, before the opening quote.
    Quote {
        name: Span,
    },
    /// In a value; `pos` is how far it was checked.
    Value {
        name: Span,
        quote: u8,
        start: usize,
    },
}

impl TagScan {
    /// A scan of the tag whose `<` is at `start`. The caller clears the
    /// attribute list it will pass to every [`TagScan::resume`].
    pub(crate) fn new(start: usize) -> TagScan {
        TagScan {
            start,
            name: Span::NONE,
            pos: start + 1,
            at: At::Name,
        }
    }

    pub(crate) fn start(&self) -> usize {
        self.start
    }

    /// Scans on from where the last call stopped. `b` must hold the same
    /// bytes as before, and maybe more. Ok(None): the buffer ends inside the
    /// tag; call again with more.
    #[inline]
    pub(crate) fn resume(
        &mut self,
        b: &[u8],
        attrs: &mut Vec<RawAttr>,
    ) -> Result<Option<Tag>, StreamError> {
        if self.pos == self.start + 1 && b.get(self.start) != Some(&b'<') {
            return Err(not_well_formed("expected a start tag"));
        }
        let mut i = self.pos;
        let mut at = self.at;
        let result = loop {
            match at {
                At::Name => {
                    let name_start = self.start + 1;
                    let scanned = match ascii_name(b, i) {
                        Some(end) if i == name_start => Ok(end),
                        _ => scan_name_from(b, name_start, i)?,
                    };
                    match scanned {
                        Err(j) => {
                            i = j;
                            break None;
                        }
                        Ok(end) => {
                            check_qname(&b[name_start..end])?;
                            self.name = Span::new(name_start, end);
                            i = end;
                            at = At::Between { ws: false };
                        }
                    }
                }
                At::Between { ws } => {
                    let n = count_ws(&b[i..]);
                    i += n;
                    let ws = ws || n > 0;
                    at = At::Between { ws };
                    let Some(&c) = b.get(i) else {
                        break None;
                    };
                    match c {
                        b'>' => {
                            check_duplicates(b, attrs)?;
                            break Some(Tag {
                                name: self.name,
                                end: i + 1,
                                empty: false,
                            });
                        }
                        b'/' => {
                            i += 1;
                            at = At::Slash;
                        }
                        _ if !ws => {
                            return Err(char_error(
                                b,
                                i,
                                "attributes must be separated by whitespace",
                            ));
                        }
                        _ if attrs.len() >= MAX_ATTRIBUTES => {
                            return Err(StreamError::with_text(
                                StreamCondition::PolicyViolation,
                                "too many attributes",
                            ));
                        }
                        _ => match whole_attr(b, i)? {
                            // The common case: the whole attribute is here.
                            Some((attr, next)) => {
                                attrs.push(attr);
                                i = next;
                                at = At::Between { ws: false };
                            }
                            None => at = At::AttrName { start: i },
                        },
                    }
                }
                At::Slash => match b.get(i) {
                    None => break None,
                    Some(b'>') => {
                        check_duplicates(b, attrs)?;
                        break Some(Tag {
                            name: self.name,
                            end: i + 1,
                            empty: true,
                        });
                    }
                    Some(_) => return Err(char_error(b, i, "bad empty-element tag")),
                },
                At::AttrName { start } => match scan_name_from(b, start, i)? {
                    Err(j) => {
                        i = j;
                        break None;
                    }
                    Ok(end) => {
                        check_qname(&b[start..end])?;
                        i = end;
                        at = At::Eq {
                            name: Span::new(start, end),
                        };
                    }
                },
                At::Eq { name } => {
                    i += count_ws(&b[i..]);
                    match b.get(i) {
                        None => break None,
                        Some(b'=') => {
                            i += 1;
                            at = At::Quote { name };
                        }
                        Some(_) => {
                            return Err(char_error(b, i, "expected '=' after an attribute name"));
                        }
                    }
                }
                At::Quote { name } => {
                    i += count_ws(&b[i..]);
                    match b.get(i) {
                        None => break None,
                        Some(&quote @ (b'\'' | b'"')) => {
                            i += 1;
                            at = At::Value {
                                name,
                                quote,
                                start: i,
                            };
                        }
                        Some(_) => {
                            return Err(char_error(b, i, "attribute values must be quoted"));
                        }
                    }
                }
                At::Value { name, quote, start } => match memchr(quote, &b[i..]) {
                    Some(len) => {
                        // `i` is a character boundary: what lies before it
                        // was checked by earlier calls.
                        let end = i + len;
                        check_attr_value(&b[i..end])?;
                        attrs.push(RawAttr {
                            name,
                            value: Span::new(start, end),
                        });
                        i = end + 1;
                        at = At::Between { ws: false };
                    }
                    None => {
                        i += check_attr_chars(&b[i..], false)?;
                        break None;
                    }
                },
            }
        };
        self.pos = i;
        self.at = at;
        Ok(result)
    }
}

/// A whole attribute at `i`, straight through (the state machine of
/// [`TagScan::resume`] costs a third more per attribute); None when the
/// buffer ends inside it, and the state machine takes over from `i`. Only
/// the first attempt at an attribute comes here, so a trickled one is
/// looked at twice at most.
#[inline]
fn whole_attr(b: &[u8], i: usize) -> Result<Option<(RawAttr, usize)>, StreamError> {
    let name_end = match ascii_name(b, i) {
        Some(end) => end,
        None => match scan_name(b, i)? {
            Some(end) => end,
            None => return Ok(None),
        },
    };
    let mut j = name_end + count_ws(&b[name_end..]);
    if b.get(j) != Some(&b'=') {
        return Ok(None);
    }
    j += 1;
    j += count_ws(&b[j..]);
    let Some(&quote @ (b'\'' | b'"')) = b.get(j) else {
        return Ok(None);
    };
    let start = j + 1;
    let Some(len) = memchr(quote, &b[start..]) else {
        return Ok(None);
    };
    check_qname(&b[i..name_end])?;
    let end = start + len;
    check_attr_value(&b[start..end])?;
    let attr = RawAttr {
        name: Span::new(i, name_end),
        value: Span::new(start, end),
    };
    Ok(Some((attr, end + 1)))
}

fn check_duplicates(b: &[u8], attrs: &[RawAttr]) -> Result<(), StreamError> {
    let dup = if attrs.len() <= 16 {
        (1..attrs.len()).any(|i| {
            let n = span_of(b, attrs[i].name);
            attrs[..i].iter().any(|a| span_of(b, a.name) == n)
        })
    } else {
        // Keeps a tag with thousands of attributes from costing n².
        let mut names: Vec<&[u8]> = attrs.iter().map(|a| span_of(b, a.name)).collect();
        names.sort_unstable();
        names.windows(2).any(|w| w[0] == w[1])
    };
    if dup {
        Err(not_well_formed("duplicate attribute"))
    } else {
        Ok(())
    }
}

/// A complete attribute value: no `<`, only legal references and
/// characters, valid UTF-8.
fn check_attr_value(v: &[u8]) -> Result<(), StreamError> {
    check_attr_chars(v, true).map(|_| ())
}

/// Checks attribute value bytes; returns how many were checked. When the
/// value is not `complete`, it stops before a reference or UTF-8 sequence
/// the slice cuts short, so the caller can resume there.
fn check_attr_chars(v: &[u8], complete: bool) -> Result<usize, StreamError> {
    let mut i = 0;
    while i < v.len() {
        let c = v[i];
        if CLASS[c as usize] & C_ATTR == 0 {
            i += 1;
            continue;
        }
        match c {
            b'<' => return Err(not_well_formed("'<' in an attribute value")),
            b'&' => match check_ref(v, i)? {
                Some(end) => i = end,
                None if complete => return Err(not_well_formed("unterminated reference")),
                None => return Ok(i),
            },
            0x80.. => match utf8_char(v, i)? {
                Some(n) => i += n,
                None if complete => return Err(bad_utf8()),
                None => return Ok(i),
            },
            _ => return Err(not_well_formed("illegal control character")),
        }
    }
    Ok(i)
}

/// Validates the multi-byte UTF-8 sequence starting at `b[i]` (Unicode
/// Table 3-7: no overlongs, no surrogates, nothing above U+10FFFF) and
/// refuses the non-characters U+FFFE and U+FFFF, which XML forbids.
/// Returns its length, or None when the slice ends inside it.
#[inline]
fn utf8_char(b: &[u8], i: usize) -> Result<Option<usize>, StreamError> {
    let (n, lo, hi) = match b[i] {
        0xC2..=0xDF => (2, 0x80, 0xBF),
        0xE0 => (3, 0xA0, 0xBF),
        0xE1..=0xEC | 0xEE..=0xEF => (3, 0x80, 0xBF),
        0xED => (3, 0x80, 0x9F),
        0xF0 => (4, 0x90, 0xBF),
        0xF1..=0xF3 => (4, 0x80, 0xBF),
        0xF4 => (4, 0x80, 0x8F),
        _ => return Err(bad_utf8()),
    };
    let tail = &b[i + 1..b.len().min(i + n)];
    if let Some(&second) = tail.first()
        && !(lo..=hi).contains(&second)
    {
        return Err(bad_utf8());
    }
    if tail.iter().skip(1).any(|&c| c & 0xC0 != 0x80) {
        return Err(bad_utf8());
    }
    if tail.len() < n - 1 {
        return Ok(None);
    }
    if is_nonchar_fffe(&b[i..]) {
        return Err(not_well_formed("illegal character"));
    }
    Ok(Some(n))
}

/// U+FFFE or U+FFFF encoded at the start of `b`.
#[inline]
fn is_nonchar_fffe(b: &[u8]) -> bool {
    b.len() >= 3 && b[0] == 0xEF && b[1] == 0xBF && (b[2] == 0xBE || b[2] == 0xBF)
}

/// Checks the reference starting with `&` at `amp`. Returns the index past
/// its `;`, or None when the buffer ends first.
fn check_ref(b: &[u8], amp: usize) -> Result<Option<usize>, StreamError> {
    let body = amp + 1;
    // Fast path for the predefined entities, which are most references.
    let rest = &b[body..];
    for known in [&b"amp;"[..], b"lt;", b"gt;", b"quot;", b"apos;"] {
        if rest.starts_with(known) {
            return Ok(Some(body + known.len()));
        }
    }
    let mut j = body;
    while j < b.len() && j - body <= MAX_REF_LEN {
        let c = b[j];
        if c == b';' {
            check_ref_body(&b[body..j])?;
            return Ok(Some(j + 1));
        }
        if !(c.is_ascii_alphanumeric()
            || matches!(c, b'#' | b'_' | b'-' | b'.' | b':')
            || c >= 0x80)
        {
            return Err(not_well_formed("malformed reference"));
        }
        j += 1;
    }
    if j - body > MAX_REF_LEN {
        return Err(if b.get(body) == Some(&b'#') {
            not_well_formed("malformed character reference")
        } else {
            restricted("undeclared entity")
        });
    }
    Ok(None)
}

fn check_ref_body(body: &[u8]) -> Result<(), StreamError> {
    let (digits, radix) = match body {
        b"lt" | b"gt" | b"amp" | b"apos" | b"quot" => return Ok(()),
        [b'#', b'x', hex @ ..] => (hex, 16),
        [b'#', dec @ ..] => (dec, 10),
        _ => {
            // Any other well-formed name is an entity we may not expand.
            return match scan_name(body, 0) {
                Ok(Some(end)) if end == body.len() => Err(restricted("undeclared entity")),
                Ok(None) if !body.is_empty() => Err(restricted("undeclared entity")),
                _ => Err(not_well_formed("malformed reference")),
            };
        }
    };
    if digits.is_empty() {
        return Err(not_well_formed("malformed character reference"));
    }
    let mut value: u32 = 0;
    for &d in digits {
        let v = (d as char)
            .to_digit(radix)
            .ok_or_else(|| not_well_formed("malformed character reference"))?;
        value = value.saturating_mul(radix).saturating_add(v);
    }
    if is_xml_char(value) {
        Ok(())
    } else {
        Err(not_well_formed("reference to an illegal character"))
    }
}

/// Scans character data from `pos`. Returns the new position and whether it
/// stopped at a `<`; otherwise it stopped at the end of the buffer or before
/// an incomplete reference or UTF-8 sequence, which the next call rescans.
#[inline]
pub(super) fn scan_text(b: &[u8], pos: usize) -> Result<(usize, bool), StreamError> {
    let mut i = pos;
    loop {
        while i < b.len() && CLASS[b[i] as usize] & C_TEXT == 0 {
            i += 1;
        }
        let Some(&c) = b.get(i) else {
            return Ok((i, false));
        };
        match c {
            b'<' => return Ok((i, true)),
            b'&' => match check_ref(b, i)? {
                Some(end) => i = end,
                None => return Ok((i, false)),
            },
            b'>' => {
                if i >= 2 && b[i - 1] == b']' && b[i - 2] == b']' {
                    return Err(not_well_formed("']]>' in character data"));
                }
                i += 1;
            }
            0x80.. => match utf8_char(b, i)? {
                Some(n) => i += n,
                None => return Ok((i, false)),
            },
            _ => return Err(not_well_formed("illegal control character")),
        }
    }
}

/// Scans CDATA content from `pos`. Returns the new position and whether the
/// section ended (the position is then past `]]>`). The last two bytes are
/// left unscanned while open: they may be the start of `]]>`.
#[inline]
pub(super) fn scan_cdata(b: &[u8], pos: usize) -> Result<(usize, bool), StreamError> {
    match memmem::find(&b[pos..], b"]]>") {
        Some(off) => {
            let content = &b[pos..pos + off];
            if check_chars(content)? != content.len() {
                return Err(bad_utf8());
            }
            Ok((pos + off + 3, true))
        }
        None => {
            let safe = b.len().saturating_sub(2).max(pos);
            Ok((pos + check_chars(&b[pos..safe])?, false))
        }
    }
}

/// Legal characters only; returns how many bytes are complete characters
/// (an incomplete sequence may end the slice).
fn check_chars(b: &[u8]) -> Result<usize, StreamError> {
    let mut end = b.len();
    for (i, &c) in b.iter().enumerate() {
        if c < 0x20 && !matches!(c, b'\t' | b'\n' | b'\r') {
            return Err(not_well_formed("illegal control character"));
        }
        if c == 0xEF {
            if b.len() < i + 3 {
                end = i;
                break;
            }
            if is_nonchar_fffe(&b[i..]) {
                return Err(not_well_formed("illegal character"));
            }
        }
    }
    utf8_prefix(&b[..end])
}

/// The pseudo-attributes of `<?xml ...?>`: version (required, 1.x), then
/// optional encoding (UTF-8 only) and standalone.
pub(super) fn parse_xml_declaration(content: &[u8]) -> Result<(), StreamError> {
    let s = std::str::from_utf8(content).map_err(|_| bad_utf8())?;
    let bad = || not_well_formed("malformed XML declaration");
    let mut rest = s;
    let mut stage = 0; // 0: want version, 1: encoding/standalone, 2: standalone, 3: done
    loop {
        let t = rest.trim_start_matches([' ', '\t', '\r', '\n']);
        if t.is_empty() {
            break;
        }
        if t.len() == rest.len() {
            return Err(bad());
        }
        let (key, after) = t.split_once('=').ok_or_else(bad)?;
        let after = after.trim_start_matches([' ', '\t', '\r', '\n']);
        let quote = after
            .chars()
            .next()
            .filter(|q| *q == '\'' || *q == '"')
            .ok_or_else(bad)?;
        let (value, r) = after[1..].split_once(quote).ok_or_else(bad)?;
        rest = r;
        match (key.trim_end_matches([' ', '\t', '\r', '\n']), stage) {
            ("version", 0) => {
                let minor = value.strip_prefix("1.").ok_or_else(bad)?;
                if minor.is_empty() || !minor.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(bad());
                }
                stage = 1;
            }
            ("encoding", 1) => {
                if !value.eq_ignore_ascii_case("UTF-8") {
                    return Err(StreamError::with_text(
                        StreamCondition::UnsupportedEncoding,
                        "only UTF-8 is supported",
                    ));
                }
                stage = 2;
            }
            ("standalone", 1 | 2) => {
                if value != "yes" && value != "no" {
                    return Err(bad());
                }
                stage = 3;
            }
            _ => return Err(bad()),
        }
    }
    if stage == 0 { Err(bad()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::StreamCondition::*;

    #[test]
    fn the_inline_utf8_check_agrees_with_the_standard_library() {
        let tails = [
            0x00, 0x41, 0x7F, 0x80, 0x8F, 0x90, 0x9F, 0xA0, 0xBE, 0xBF, 0xC0, 0xFF,
        ];
        for lead in 0x80..=0xFFu8 {
            for second in 0..=0xFFu8 {
                for &third in &tails {
                    for &fourth in &tails {
                        let seq = [lead, second, third, fourth];
                        let ours = utf8_char(&seq, 0);
                        let std_len = match std::str::from_utf8(&seq) {
                            Ok(s) => s.chars().next().map(char::len_utf8),
                            Err(e) if e.valid_up_to() > 0 => {
                                std::str::from_utf8(&seq[..e.valid_up_to()])
                                    .ok()
                                    .and_then(|s| s.chars().next())
                                    .map(char::len_utf8)
                            }
                            Err(_) => None,
                        };
                        let nonchar = is_nonchar_fffe(&seq);
                        match (ours, std_len) {
                            (Ok(Some(n)), Some(m)) => assert_eq!(n, m, "{seq:x?}"),
                            (Err(e), Some(_)) => {
                                assert!(nonchar && e.condition == NotWellFormed, "{seq:x?}")
                            }
                            (Err(e), None) => {
                                assert_eq!(e.condition, UnsupportedEncoding, "{seq:x?}")
                            }
                            (r, s) => panic!("{seq:x?}: ours {r:?}, std {s:?}"),
                        }
                        // Every proper prefix of a valid sequence is incomplete, not an error.
                        if let Some(m) = std_len.filter(|_| !nonchar) {
                            for cut in 1..m {
                                assert_eq!(
                                    utf8_char(&seq[..cut], 0),
                                    Ok(None),
                                    "{seq:x?} cut {cut}"
                                );
                            }
                        }
                    }
                }
            }
        }
    }
}
