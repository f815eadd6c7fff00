//! Server Dialback (XEP-0220) wire pieces: the XEP-0185 key, and the
//! `<db:result/>` / `<db:verify/>` elements parsed and built. The
//! negotiation logic that uses them lives in [`crate::stream::s2s`]; this
//! module holds no state and does no I/O.
//!
//! Every element we write uses the `db:` prefix, which our own stream
//! headers always declare. Elements we read are resolved by namespace, so a
//! peer may bind `jabber:server:dialback` to any prefix (XEP-0220 §2).

use aws_lc_rs::{constant_time, digest, hmac};

use crate::error::StanzaCondition;
use crate::xml::element::Element;
use crate::xml::escape::{escape_attr, escape_text};
use crate::xml::ns::{NS_DIALBACK, NS_STANZAS};

/// Longest key we relay or compare. XEP-0185 keys are 64 hex digits and
/// Openfire's SHA-1 keys 40; the bound keeps a hostile peer from making us
/// forward megabytes to an authoritative server.
pub const MAX_KEY_LEN: usize = 1024;

/// XEP-0185: HMAC-SHA256(key = hex(SHA256(secret)), text = "{receiving}
/// {originating} {stream_id}") as lower-case hex.
pub fn dialback_key(secret: &[u8], receiving: &str, originating: &str, stream_id: &str) -> String {
    let hashed = hex::encode(digest::digest(&digest::SHA256, secret));
    let key = hmac::Key::new(hmac::HMAC_SHA256, hashed.as_bytes());
    let mut ctx = hmac::Context::with_key(&key);
    ctx.update(receiving.as_bytes());
    ctx.update(b" ");
    ctx.update(originating.as_bytes());
    ctx.update(b" ");
    ctx.update(stream_id.as_bytes());
    hex::encode(ctx.sign())
}

/// Compares two keys in time independent of where they differ (the length
/// is not secret: every valid key has the same one).
pub fn keys_equal(a: &str, b: &str) -> bool {
    constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

/// `<db:result/>` or `<db:verify/>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Result,
    Verify,
}

impl DbKind {
    fn name(self) -> &'static str {
        match self {
            DbKind::Result => "result",
            DbKind::Verify => "verify",
        }
    }
}

/// The `type` attribute: absent on a request, set on an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DbType {
    Request,
    Valid,
    Invalid,
    /// XEP-0220 §2.4: the stanza error condition inside `<error/>`
    /// (`undefined-condition` when missing).
    Error(String),
}

/// A parsed dialback element. Attributes are as received (not normalised);
/// the key is trimmed, since peers pretty-print it on its own line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbElement {
    pub kind: DbKind,
    pub from: Option<String>,
    pub to: Option<String>,
    pub id: Option<String>,
    pub ty: DbType,
    pub key: String,
}

impl DbElement {
    /// `None` when `el` is not a dialback element. An unknown `type` value
    /// is an `Error("bad-request")` so it can never read as valid.
    pub fn from_element(el: &Element) -> Option<DbElement> {
        if el.ns != NS_DIALBACK {
            return None;
        }
        let kind = match el.name.as_str() {
            "result" => DbKind::Result,
            "verify" => DbKind::Verify,
            _ => return None,
        };
        let ty = match el.attr("type") {
            None => DbType::Request,
            Some("valid") => DbType::Valid,
            Some("invalid") => DbType::Invalid,
            Some("error") => DbType::Error(error_condition(el)),
            Some(_) => DbType::Error("bad-request".into()),
        };
        Some(DbElement {
            kind,
            from: el.attr("from").map(str::to_owned),
            to: el.attr("to").map(str::to_owned),
            id: el.attr("id").map(str::to_owned),
            ty,
            key: el.text().trim().to_owned(),
        })
    }
}

/// The stanza error condition of a dialback error, wherever the peer put
/// the `<error/>` (it is in `jabber:server`, or unqualified from sloppy
/// peers).
fn error_condition(el: &Element) -> String {
    el.elements()
        .filter(|e| e.name == "error")
        .flat_map(|e| e.elements())
        .find(|c| c.ns == NS_STANZAS)
        .map(|c| c.name.clone())
        .unwrap_or_else(|| "undefined-condition".into())
}

fn open(kind: DbKind, from: &str, to: &str, id: Option<&str>) -> String {
    let mut s = format!(
        "<db:{} from='{}' to='{}'",
        kind.name(),
        escape_attr(from),
        escape_attr(to)
    );
    if let Some(id) = id {
        s.push_str(&format!(" id='{}'", escape_attr(id)));
    }
    s
}

/// A request: `<db:result from to>KEY</db:result>` (Step 1) or
/// `<db:verify from to id>KEY</db:verify>` (Step 2).
pub fn request(kind: DbKind, from: &str, to: &str, id: Option<&str>, key: &str) -> String {
    format!(
        "{}>{}</db:{}>",
        open(kind, from, to, id),
        escape_text(key),
        kind.name()
    )
}

/// An answer of type `valid` or `invalid` (Steps 3 and 4).
pub fn answer(kind: DbKind, from: &str, to: &str, id: Option<&str>, valid: bool) -> String {
    let ty = if valid { "valid" } else { "invalid" };
    format!("{} type='{ty}'/>", open(kind, from, to, id))
}

/// A dialback error (XEP-0220 §2.4): not fatal for the stream.
pub fn error(
    kind: DbKind,
    from: &str,
    to: &str,
    id: Option<&str>,
    condition: StanzaCondition,
) -> String {
    format!(
        "{} type='error'><error type='{}'><{} xmlns='{NS_STANZAS}'/></error></db:{}>",
        open(kind, from, to, id),
        condition.default_type().as_str(),
        condition.as_str(),
        kind.name()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::ns::{NS_SERVER, NS_STREAMS};

    fn parse(xml: &str) -> DbElement {
        let el = Element::parse(
            xml.as_bytes(),
            NS_SERVER,
            &[("stream", NS_STREAMS), ("db", NS_DIALBACK)],
        )
        .expect("parses");
        DbElement::from_element(&el).expect("a dialback element")
    }

    #[test]
    fn the_key_matches_the_xep_0185_test_vector() {
        assert_eq!(
            dialback_key(
                b"s3cr3tf0rd14lb4ck",
                "xmpp.example.com",
                "example.org",
                "D60000229F"
            ),
            "37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643"
        );
    }

    #[test]
    fn the_key_matches_the_xep_0220_examples() {
        assert_eq!(
            dialback_key(
                b"s3cr3tf0rd14lb4ck",
                "montague.example",
                "capulet.example",
                "D60000229F"
            ),
            "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"
        );
        assert_eq!(
            dialback_key(
                b"d14lb4ck43v3r",
                "capulet.example",
                "montague.example",
                "417GAF25"
            ),
            "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d"
        );
    }

    #[test]
    fn keys_equal_compares_whole_strings() {
        assert!(keys_equal("abc", "abc"));
        assert!(!keys_equal("abc", "abd"));
        assert!(!keys_equal("abc", "abcd"));
        assert!(!keys_equal("", "a"));
    }

    #[test]
    fn a_pretty_printed_request_parses_with_a_trimmed_key() {
        let d = parse(
            "<db:result from='capulet.example' to='montague.example'>\n  b48353  \n</db:result>",
        );
        assert_eq!(d.kind, DbKind::Result);
        assert_eq!(d.ty, DbType::Request);
        assert_eq!(d.from.as_deref(), Some("capulet.example"));
        assert_eq!(d.key, "b48353");
    }

    #[test]
    fn answers_and_errors_parse_with_their_condition() {
        let d = parse("<db:verify from='a' to='b' id='x' type='valid'/>");
        assert_eq!(
            (d.kind, d.ty, d.id.as_deref()),
            (DbKind::Verify, DbType::Valid, Some("x"))
        );
        let d = parse(&error(
            DbKind::Result,
            "a",
            "b",
            None,
            StanzaCondition::ItemNotFound,
        ));
        assert_eq!(d.ty, DbType::Error("item-not-found".into()));
        let d = parse("<db:result from='a' to='b' type='error'/>");
        assert_eq!(d.ty, DbType::Error("undefined-condition".into()));
        let d = parse("<db:result from='a' to='b' type='VALID'/>");
        assert_eq!(d.ty, DbType::Error("bad-request".into()));
    }

    #[test]
    fn another_prefix_for_the_dialback_namespace_is_accepted() {
        let el = Element::parse(
            b"<x:result xmlns:x='jabber:server:dialback' from='a' to='b' type='invalid'/>",
            NS_SERVER,
            &[],
        )
        .unwrap();
        assert_eq!(DbElement::from_element(&el).unwrap().ty, DbType::Invalid);
        let other = Element::parse(b"<result from='a' to='b'/>", NS_SERVER, &[]).unwrap();
        assert_eq!(DbElement::from_element(&other), None);
    }

    #[test]
    fn built_elements_escape_attributes_and_round_trip() {
        let s = request(DbKind::Verify, "a'b", "c", Some("i<d"), "k&");
        assert_eq!(
            s,
            "<db:verify from='a&apos;b' to='c' id='i&lt;d'>k&amp;</db:verify>"
        );
        let d = parse(&s);
        assert_eq!(
            (d.from.as_deref(), d.id.as_deref(), d.key.as_str()),
            (Some("a'b"), Some("i<d"), "k&")
        );
        assert_eq!(
            answer(DbKind::Result, "a", "b", None, false),
            "<db:result from='a' to='b' type='invalid'/>"
        );
    }
}
