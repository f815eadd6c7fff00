//! A span scan of a stanza's direct children, for the few facts the
//! server reads from a stanza it otherwise forwards untouched (a
//! presence's `<priority/>`) and the children it cuts out of one (a
//! `<status/>` a partner may not see), so routing never builds an element
//! tree.
//!
//! The bytes were validated by the framer (well-formed, restricted XML,
//! UTF-8) or written by the server itself, so the scan only has to find
//! tag boundaries: it checks nothing and refuses nothing.

use std::borrow::Cow;
use std::ops::Range;

use crate::xml::Stanza;
use crate::xml::escape::unescape;

/// Where the tag starting at `b[at] == b'<'` ends: the index past its
/// `>`, quotes respected (a `>` may stand in an attribute value).
fn tag_end(b: &[u8], at: usize) -> Option<usize> {
    let mut quote = None;
    for (i, &c) in b.iter().enumerate().skip(at + 1) {
        match (quote, c) {
            (None, b'\'' | b'"') => quote = Some(c),
            (Some(q), _) if c == q => quote = None,
            (None, b'>') => return Some(i + 1),
            _ => {}
        }
    }
    None
}

/// The qualified name and the attributes of a start tag `<name …>`.
fn parts(tag: &[u8]) -> (&[u8], Attrs<'_>) {
    let body = tag.strip_prefix(b"<").unwrap_or(tag);
    let n = body
        .iter()
        .position(|c| c.is_ascii_whitespace() || *c == b'/' || *c == b'>')
        .unwrap_or(body.len());
    (&body[..n], Attrs { rest: &body[n..] })
}

/// The `name='value'` pairs of a validated start tag, values raw.
struct Attrs<'a> {
    rest: &'a [u8],
}

impl<'a> Iterator for Attrs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        let r = self.rest;
        let start = r.iter().position(|c| !c.is_ascii_whitespace())?;
        if matches!(r[start], b'/' | b'>') {
            return None;
        }
        let eq = start + r[start..].iter().position(|c| *c == b'=')?;
        let name = r[start..eq].trim_ascii_end();
        let open = eq + r[eq..].iter().position(|c| matches!(c, b'\'' | b'"'))?;
        let close = open + 1 + r[open + 1..].iter().position(|c| *c == r[open])?;
        self.rest = &r[close + 1..];
        Some((name, &r[open + 1..close]))
    }
}

/// The namespace an element's tag puts it in: `xmlns` (unprefixed) or
/// `xmlns:p` looked up on the tag itself, then on the enclosing stanza's
/// tag; an unprefixed name with neither is in `default`.
fn namespace_of<'a>(
    qname: &[u8],
    tag: &'a [u8],
    parent: &'a [u8],
    default: &'a [u8],
) -> Option<&'a [u8]> {
    let prefix = qname
        .iter()
        .position(|c| *c == b':')
        .map(|colon| &qname[..colon]);
    // `xmlns` for no prefix, `xmlns:p` for the prefix p.
    let declares = |n: &[u8]| match prefix {
        None => n == b"xmlns",
        Some(p) => n.strip_prefix(b"xmlns:") == Some(p),
    };
    let find = |t: &'a [u8]| parts(t).1.find(|(n, _)| declares(n)).map(|a| a.1);
    find(tag)
        .or_else(|| find(parent))
        .or_else(|| prefix.is_none().then_some(default))
}

/// Where each direct child of `stanza` named `local` in namespace `ns`
/// stands in its bytes, whole (start tag to end tag), in document order.
/// `inherited` is the default namespace where the stanza stands (the
/// stream's content namespace), used when the stanza declares none.
pub fn child_ranges(stanza: &Stanza, local: &str, ns: &str, inherited: &str) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    scan_children(stanza, inherited, |name, in_ns, range| {
        if name == local.as_bytes() && in_ns == Some(ns.as_bytes()) {
            out.push(range);
        }
        true
    });
    out
}

/// The text of the first direct child of `stanza` named `local` in
/// namespace `ns`, with character data and CDATA concatenated and
/// references resolved; the text of grandchildren is not included.
/// `inherited` as for [`child_ranges`].
pub fn child_text(stanza: &Stanza, local: &str, ns: &str, inherited: &str) -> Option<String> {
    let mut found = None;
    scan_children(stanza, inherited, |name, in_ns, range| {
        if name == local.as_bytes() && in_ns == Some(ns.as_bytes()) {
            found = Some(range);
            return false;
        }
        true
    });
    direct_text(&stanza.bytes()[found?])
}

/// A child whose end tag has not been reached yet: where it starts, its
/// local name and its namespace.
type Open<'a> = (usize, &'a [u8], Option<&'a [u8]>);

/// Calls `f(local name, namespace, range)` for each direct child element of
/// `stanza` until it returns false. Malformed bytes (which the framer never
/// passes) end the scan early.
fn scan_children<F>(stanza: &Stanza, inherited: &str, mut f: F)
where
    F: FnMut(&[u8], Option<&[u8]>, Range<usize>) -> bool,
{
    if stanza.is_empty_element() {
        return;
    }
    let b = stanza.bytes().as_ref();
    let Some(top_end) = tag_end(b, 0) else {
        return;
    };
    let top = &b[..top_end];
    let default = stanza.xmlns().unwrap_or(inherited).as_bytes();
    let mut i = top_end;
    let mut depth = 1usize;
    // The child being read: its start, local name and namespace.
    let mut current: Option<Open<'_>> = None;
    loop {
        let Some(lt) = b[i..].iter().position(|c| *c == b'<').map(|p| i + p) else {
            return;
        };
        if let Some(cdata) = b[lt..].strip_prefix(b"<![CDATA[") {
            let Some(end) = cdata.windows(3).position(|w| w == b"]]>") else {
                return;
            };
            i = lt + 9 + end + 3;
            continue;
        }
        let Some(end) = tag_end(b, lt) else {
            return;
        };
        let tag = &b[lt..end];
        if tag.starts_with(b"</") {
            depth -= 1;
            if depth == 0 {
                return;
            }
            if depth == 1
                && let Some((start, name, in_ns)) = current.take()
                && !f(name, in_ns, start..end)
            {
                return;
            }
        } else {
            let empty = tag.ends_with(b"/>");
            if depth == 1 {
                let (qname, _) = parts(tag);
                let name = qname.rsplit(|c| *c == b':').next().unwrap_or(qname);
                let in_ns = namespace_of(qname, tag, top, default);
                if empty {
                    if !f(name, in_ns, lt..end) {
                        return;
                    }
                } else {
                    current = Some((lt, name, in_ns));
                }
            }
            if !empty {
                depth += 1;
            }
        }
        i = end;
    }
}

/// The character data and CDATA directly inside one element (its whole
/// bytes, start tag to end tag), references resolved.
fn direct_text(el: &[u8]) -> Option<String> {
    let mut i = tag_end(el, 0)?;
    if el[..i].ends_with(b"/>") {
        return Some(String::new());
    }
    let mut text = String::new();
    let mut depth = 1usize;
    loop {
        let lt = i + el[i..].iter().position(|c| *c == b'<')?;
        if depth == 1 {
            let raw = std::str::from_utf8(&el[i..lt]).ok()?;
            text.push_str(&unescape(raw).unwrap_or(Cow::Borrowed(raw)));
        }
        if let Some(cdata) = el[lt..].strip_prefix(b"<![CDATA[") {
            let end = cdata.windows(3).position(|w| w == b"]]>")?;
            if depth == 1 {
                text.push_str(std::str::from_utf8(&cdata[..end]).ok()?);
            }
            i = lt + 9 + end + 3;
            continue;
        }
        let end = tag_end(el, lt)?;
        if el[lt..].starts_with(b"</") {
            depth -= 1;
            if depth == 0 {
                return Some(text);
            }
        } else if !el[lt..end].ends_with(b"/>") {
            depth += 1;
        }
        i = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::ns::{NS_CLIENT, NS_SERVER};
    use bytes::Bytes;

    fn text(xml: &'static str) -> Option<String> {
        let s = Stanza::parse(Bytes::from_static(xml.as_bytes())).unwrap();
        child_text(&s, "priority", NS_CLIENT, NS_CLIENT)
    }

    #[test]
    fn a_direct_child_in_the_inherited_namespace_is_found() {
        assert_eq!(
            text("<presence><show>away</show><priority>5</priority></presence>").as_deref(),
            Some("5")
        );
        assert_eq!(
            text("<presence xmlns='jabber:client'><priority>5</priority></presence>").as_deref(),
            Some("5")
        );
    }

    #[test]
    fn a_child_in_another_namespace_is_not_the_one() {
        assert_eq!(
            text("<presence><priority xmlns='urn:x'>5</priority></presence>"),
            None
        );
        assert_eq!(
            text("<presence xmlns='jabber:server'><priority>5</priority></presence>"),
            None
        );
        // The first matching child counts, not the first of that name.
        assert_eq!(
            text("<presence><priority xmlns='urn:x'>1</priority><priority>2</priority></presence>")
                .as_deref(),
            Some("2")
        );
    }

    #[test]
    fn a_prefixed_child_is_resolved_on_itself_or_on_the_stanza() {
        assert_eq!(
            text("<presence><c:priority xmlns:c='jabber:client'>4</c:priority></presence>")
                .as_deref(),
            Some("4")
        );
        assert_eq!(
            text("<presence xmlns:c='jabber:client'><c:priority>3</c:priority></presence>")
                .as_deref(),
            Some("3")
        );
        assert_eq!(
            text("<presence xmlns:c='urn:x'><c:priority>3</c:priority></presence>"),
            None
        );
    }

    #[test]
    fn a_grandchild_of_that_name_is_not_a_child() {
        assert_eq!(
            text("<presence><x xmlns='urn:x'><priority>9</priority></x></presence>"),
            None
        );
        assert_eq!(
            text("<presence><x><priority>9</priority></x></presence>"),
            None
        );
    }

    #[test]
    fn absent_and_empty_children_and_empty_stanzas() {
        assert_eq!(text("<presence/>"), None);
        assert_eq!(text("<presence><show>dnd</show></presence>"), None);
        assert_eq!(
            text("<presence><priority/></presence>").as_deref(),
            Some("")
        );
    }

    #[test]
    fn text_is_unescaped_cdata_included_and_grandchildren_left_out() {
        assert_eq!(
            text("<presence><priority> &#x35; </priority></presence>").as_deref(),
            Some(" 5 ")
        );
        assert_eq!(
            text("<presence><priority>1<![CDATA[2]]><b>x</b>3</priority></presence>").as_deref(),
            Some("123")
        );
        assert_eq!(
            text("<presence a='>'><status>a > b</status><priority>7</priority></presence>")
                .as_deref(),
            Some("7")
        );
    }

    #[test]
    fn the_stream_namespace_applies_when_the_stanza_declares_none() {
        let s = Stanza::parse(Bytes::from_static(
            b"<presence><priority>6</priority></presence>",
        ))
        .unwrap();
        assert_eq!(
            child_text(&s, "priority", NS_SERVER, NS_SERVER).as_deref(),
            Some("6")
        );
        assert_eq!(child_text(&s, "priority", NS_CLIENT, NS_SERVER), None);
    }

    #[test]
    fn child_ranges_cover_each_matching_child_whole() {
        let xml = "<presence><status>a</status><x:status xmlns:x='jabber:client'/><status xmlns='other'>b</status><show><status>no</status></show><status>c<![CDATA[<d>]]></status></presence>";
        let s = Stanza::parse(Bytes::from_static(xml.as_bytes())).unwrap();
        let got: Vec<&str> = child_ranges(&s, "status", NS_CLIENT, NS_CLIENT)
            .into_iter()
            .map(|r| &xml[r])
            .collect();
        assert_eq!(
            got,
            [
                "<status>a</status>",
                "<x:status xmlns:x='jabber:client'/>",
                "<status>c<![CDATA[<d>]]></status>"
            ]
        );
        assert!(child_ranges(&s, "priority", NS_CLIENT, NS_CLIENT).is_empty());
    }
}
