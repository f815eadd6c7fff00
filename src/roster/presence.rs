//! Small presence helpers for the shard: reading `<priority/>` and writing
//! the presence stanzas the server generates itself (probes, unavailable,
//! and the subscription stanzas of auto-replies and roster removal).
//!
//! Owns: these stanzas only, built once with their spans recorded
//! ([`StanzaBuilder`]), never parsed again. Forwarded presence is never rebuilt here; it
//! goes out as the bytes that came in.

use super::subscription::SubKind;
use crate::xml::{Stanza, StanzaBuilder};
use std::num::IntErrorKind;

/// The `<priority/>` value (RFC 6121 §4.7.2.3): an integer in -128..=127.
/// Missing → 0. Out of range → clamped. Anything else unparsable → 0, the
/// default, rather than an error: a bad priority is not worth refusing the
/// presence for. Surrounding whitespace is allowed (the schema type
/// `xs:byte` collapses it).
pub fn parse_priority(raw: Option<&str>) -> i8 {
    let Some(raw) = raw else { return 0 };
    match raw.trim().parse::<i64>() {
        Ok(v) => v.clamp(i8::MIN.into(), i8::MAX.into()) as i8,
        Err(e) => match e.kind() {
            IntErrorKind::PosOverflow => i8::MAX,
            IntErrorKind::NegOverflow => i8::MIN,
            _ => 0,
        },
    }
}

fn presence(ty: &str, from: &str, to: &str) -> Stanza {
    StanzaBuilder::with_capacity("presence", 40 + ty.len() + from.len() + to.len())
        .attr("type", ty)
        .attr("from", from)
        .attr("to", to)
        .build()
}

/// `<presence type='probe'/>` from the user's bare JID to a contact
/// (§4.3.1), sent when the user comes online for contacts with `to`/`both`.
pub fn probe_presence(from: &str, to: &str) -> Stanza {
    presence("probe", from, to)
}

/// `<presence type='unavailable'/>`, e.g. from each available resource
/// when a contact loses its subscription (§3.2.2, §3.3.3).
pub fn unavailable_presence(from: &str, to: &str) -> Stanza {
    presence("unavailable", from, to)
}

/// A subscription stanza the server sends on the user's behalf: the
/// auto-`subscribed` of §3.1.3/§3.4, or the `unsubscribe`/`unsubscribed`
/// of a roster removal (§2.5.2). `from` is the user's bare JID.
pub fn subscription_presence(kind: SubKind, from: &str, to: &str) -> Stanza {
    presence(kind.as_str(), from, to)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_priority_is_zero() {
        assert_eq!(parse_priority(None), 0);
    }

    #[test]
    fn priority_in_range_is_taken_as_is() {
        for (raw, want) in [
            ("0", 0),
            ("5", 5),
            ("-1", -1),
            ("+7", 7),
            ("127", 127),
            ("-128", -128),
        ] {
            assert_eq!(parse_priority(Some(raw)), want, "{raw}");
        }
    }

    #[test]
    fn priority_out_of_range_is_clamped() {
        assert_eq!(parse_priority(Some("128")), 127);
        assert_eq!(parse_priority(Some("1000")), 127);
        assert_eq!(parse_priority(Some("-129")), -128);
        assert_eq!(parse_priority(Some("99999999999999999999999999")), 127);
        assert_eq!(parse_priority(Some("-99999999999999999999999999")), -128);
    }

    #[test]
    fn priority_with_surrounding_whitespace_is_accepted() {
        assert_eq!(parse_priority(Some(" 3\n")), 3);
    }

    #[test]
    fn unparsable_priority_is_zero() {
        for raw in ["", " ", "high", "1.5", "0x10", "--1", "5 5"] {
            assert_eq!(parse_priority(Some(raw)), 0, "{raw:?}");
        }
    }

    /// A generated stanza is what parsing the old string gave: the same
    /// bytes and the same spans.
    fn same_as_parsed(s: &Stanza, old: &str) {
        s.assert_same_as(&Stanza::parse(bytes::Bytes::from(old.to_owned())).unwrap());
    }

    #[test]
    fn probe_has_type_from_and_to() {
        same_as_parsed(
            &probe_presence("juliet@example.com", "romeo@example.net"),
            "<presence type='probe' from='juliet@example.com' to='romeo@example.net'/>",
        );
    }

    #[test]
    fn unavailable_is_sent_from_a_full_jid_and_escaped() {
        let s = unavailable_presence("juliet@example.com/a'b&c", "romeo@example.net");
        same_as_parsed(
            &s,
            "<presence type='unavailable' from='juliet@example.com/a&apos;b&amp;c' \
             to='romeo@example.net'/>",
        );
        assert_eq!(s.from().as_deref(), Some("juliet@example.com/a'b&c"));
    }

    #[test]
    fn subscription_stanzas_carry_their_kind() {
        for (kind, ty) in [
            (SubKind::Subscribe, "subscribe"),
            (SubKind::Subscribed, "subscribed"),
            (SubKind::Unsubscribe, "unsubscribe"),
            (SubKind::Unsubscribed, "unsubscribed"),
        ] {
            same_as_parsed(
                &subscription_presence(kind, "juliet@example.com", "romeo@example.net"),
                &format!(
                    "<presence type='{ty}' from='juliet@example.com' to='romeo@example.net'/>"
                ),
            );
        }
    }
}

/// The presence without its `<status/>` text, for contacts that must not
/// see a user's personal note (Lync: only Federated partners do). `None`
/// when there is no status, so the original bytes can be sent as they are.
/// Runs once per broadcast, never per recipient.
pub fn without_status(stanza: &crate::xml::Stanza) -> Option<crate::xml::Stanza> {
    use crate::xml::ns::NS_CLIENT;
    if !stanza.bytes().windows(7).any(|w| w == b"<status") {
        return None;
    }
    let cut = crate::xml::child::child_ranges(stanza, "status", NS_CLIENT, NS_CLIENT);
    (!cut.is_empty()).then(|| stanza.without(&cut))
}

#[cfg(test)]
mod status_tests {
    use super::*;
    use crate::xml::Stanza;
    use bytes::Bytes;

    #[test]
    fn status_text_is_removed_and_everything_else_kept() {
        let s = Stanza::parse(Bytes::from_static(
            b"<presence from='a@x/r'><show>away</show><status>at the dentist</status><priority>5</priority></presence>",
        ))
        .unwrap();
        let out = without_status(&s).expect("changed");
        let text = std::str::from_utf8(out.bytes()).unwrap();
        assert_eq!(
            text,
            "<presence from='a@x/r'><show>away</show><priority>5</priority></presence>"
        );
        out.assert_same_as(&Stanza::parse(out.bytes().clone()).unwrap());
    }

    #[test]
    fn prefix_declarations_and_foreign_statuses_survive() {
        let xml = "<presence xmlns:x='urn:x' from='a@x/r'><x:c x:a='1'/><status>n</status><x:status/><status xmlns='urn:y'>k</status></presence>";
        let s = Stanza::parse(Bytes::from_static(xml.as_bytes())).unwrap();
        let out = without_status(&s).expect("changed");
        assert_eq!(
            std::str::from_utf8(out.bytes()).unwrap(),
            "<presence xmlns:x='urn:x' from='a@x/r'><x:c x:a='1'/><x:status/><status xmlns='urn:y'>k</status></presence>"
        );
    }

    #[test]
    fn presence_without_status_is_left_alone() {
        let s =
            Stanza::parse(Bytes::from_static(b"<presence><show>dnd</show></presence>")).unwrap();
        assert!(without_status(&s).is_none());
    }
}
