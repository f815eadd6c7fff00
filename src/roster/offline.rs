//! Offline storage (XEP-0160) byte work: a message as the contiguous
//! buffer storage keeps, with the XEP-0203 `<delay/>` saying when and where
//! it was stored spliced in.
//!
//! Owns: the bytes only. Deciding what goes offline is
//! [`super::delivery`]'s; storing and fetching is the shard's and storage's.

use bytes::Bytes;

use crate::xml::Frame;
use crate::xml::escape::escape_attr;

/// A frame as one contiguous buffer (for storing; not on the forwarding
/// path, where frames stay in parts). One part is shared, not copied.
pub fn flatten(f: &Frame) -> Bytes {
    match f.parts() {
        [one] => one.clone(),
        _ => Bytes::from(f.to_vec()),
    }
}

/// The message with an XEP-0203 `<delay/>` child saying it was stored by
/// `domain` now, for offline delivery (XEP-0160).
pub fn with_delay(frame: &Frame, domain: &str) -> Bytes {
    let now = humantime::format_rfc3339_millis(std::time::SystemTime::now());
    with_delay_at(frame, domain, &now.to_string())
}

/// [`with_delay`] at a given XEP-0082 `stamp`.
pub fn with_delay_at(frame: &Frame, domain: &str, stamp: &str) -> Bytes {
    let bytes = frame.to_vec();
    let delay = format!(
        "<delay xmlns='urn:xmpp:delay' from='{}' stamp='{}'>Offline Storage</delay>",
        escape_attr(domain),
        stamp
    );
    // Insert before the closing tag, or expand an empty element.
    if bytes.ends_with(b"/>") {
        let head = &bytes[..bytes.len() - 2];
        let name_end = head
            .iter()
            .position(|b| b.is_ascii_whitespace() || *b == b'/')
            .unwrap_or(head.len());
        let name = String::from_utf8_lossy(&head[1..name_end]).into_owned();
        let mut out = Vec::with_capacity(bytes.len() + delay.len() + name.len() + 3);
        out.extend_from_slice(head);
        out.push(b'>');
        out.extend_from_slice(delay.as_bytes());
        out.extend_from_slice(format!("</{name}>").as_bytes());
        Bytes::from(out)
    } else if let Some(pos) = bytes.iter().rposition(|b| *b == b'<') {
        let mut out = Vec::with_capacity(bytes.len() + delay.len());
        out.extend_from_slice(&bytes[..pos]);
        out.extend_from_slice(delay.as_bytes());
        out.extend_from_slice(&bytes[pos..]);
        Bytes::from(out)
    } else {
        Bytes::from(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Stanza;

    const STAMP: &str = "2002-09-10T23:08:25Z";

    fn stanza(s: &'static str) -> Stanza {
        Stanza::parse(Bytes::from_static(s.as_bytes())).unwrap()
    }

    fn delay(domain: &str) -> String {
        format!(
            "<delay xmlns='urn:xmpp:delay' from='{domain}' stamp='{STAMP}'>Offline Storage</delay>"
        )
    }

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    #[test]
    fn the_delay_goes_last_inside_the_message() {
        let f = Frame::from(stanza(
            "<message to='juliet@example.com' type='chat'><body>hi</body></message>",
        ));
        let out = with_delay_at(&f, "example.com", STAMP);
        assert_eq!(
            text(&out),
            format!(
                "<message to='juliet@example.com' type='chat'><body>hi</body>{}</message>",
                delay("example.com")
            )
        );
        // And it is still one well-formed stanza.
        let s = Stanza::parse(out).unwrap();
        assert_eq!(s.name(), "message");
    }

    #[test]
    fn an_empty_message_is_expanded_to_hold_the_delay() {
        for (input, name) in [
            ("<message to='j@example.com'/>", "message"),
            ("<message/>", "message"),
            ("<message to='j@example.com' />", "message"),
        ] {
            let out = with_delay_at(&Frame::from(stanza(input)), "example.com", STAMP);
            let head = input.trim_end_matches("/>");
            assert_eq!(
                text(&out),
                format!("{head}>{}</{name}>", delay("example.com")),
                "{input}"
            );
            Stanza::parse(out).unwrap();
        }
    }

    #[test]
    fn the_stored_by_domain_is_escaped() {
        let f = Frame::from(stanza("<message><body/></message>"));
        let out = with_delay_at(&f, "a'b", STAMP);
        assert!(text(&out).contains("from='a&apos;b'"), "{}", text(&out));
    }

    #[test]
    fn a_spliced_frame_is_delayed_as_a_whole() {
        // `from` stamped: the frame is in several parts.
        let s = stanza("<message to='j@example.com'><body>x</body></message>");
        let f = s.splice(Some("romeo@example.net/r"), None);
        assert!(f.parts().len() > 1);
        let out = with_delay_at(&f, "example.com", STAMP);
        let s = Stanza::parse(out.clone()).unwrap();
        assert_eq!(s.from().as_deref(), Some("romeo@example.net/r"));
        assert!(text(&out).ends_with(&format!("{}</message>", delay("example.com"))));
    }

    #[test]
    fn with_delay_stamps_the_current_time() {
        let f = Frame::from(stanza("<message><body>x</body></message>"));
        let out = with_delay(&f, "example.com");
        assert!(text(&out).contains(" stamp='"), "{}", text(&out));
        assert!(
            text(&out).contains("Z'>Offline Storage</delay>"),
            "{}",
            text(&out)
        );
    }

    #[test]
    fn flatten_shares_a_single_part_and_joins_several() {
        let s = stanza("<presence><show>away</show></presence>");
        let one = Frame::from(s.clone());
        assert_eq!(flatten(&one), s.bytes().clone());
        assert_eq!(flatten(&one).as_ptr(), s.bytes().as_ptr());
        let spliced = s.splice(Some("a@x/r"), Some("b@y"));
        assert_eq!(&flatten(&spliced)[..], &spliced.to_vec()[..]);
    }
}
