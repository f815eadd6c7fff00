//! Escaping for text and attribute values we write ourselves. Forwarded
//! stanzas are never re-escaped: their bytes go out as they came in.

use std::borrow::Cow;

/// Escapes `<`, `>`, `&`, `'` and `"` so the value is safe inside either
/// quote style.
pub fn escape_attr(s: &str) -> Cow<'_, str> {
    quick_xml::escape::escape(s)
}

/// Escapes `<`, `>` and `&` for character data.
pub fn escape_text(s: &str) -> Cow<'_, str> {
    quick_xml::escape::partial_escape(s)
}

/// Resolves the predefined entities and character references of a raw
/// attribute value or text run. The framer has already refused any other
/// entity, so an error here means the caller passed unchecked input.
pub fn unescape(s: &str) -> Result<Cow<'_, str>, quick_xml::escape::EscapeError> {
    if !s.contains('&') {
        return Ok(Cow::Borrowed(s));
    }
    quick_xml::escape::unescape(s)
}
