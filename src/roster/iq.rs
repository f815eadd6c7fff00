//! Roster IQ semantics (RFC 6121 §2): reading a roster IQ from a client
//! ([`parse_request`]), validating a roster set into the change to apply,
//! and writing roster results and pushes.
//!
//! Owns: the rules and the XML we read and write. Does not check that a
//! set came from the user's own session (§2.1.5, the c2s session does),
//! and does not store or push.
//!
//! Roster versioning (XEP-0237 / §2.6) is not implemented: no `ver`
//! attribute is written, which §2.6.3 allows a server to do.
//!
//! Choices where RFC 6121 leaves room:
//! - The `jid` must be a bare JID: fedrouter rosters hold bare JIDs only
//!   ([`RosterItem::jid`]). A full JID is refused with `bad-request`
//!   instead of being silently truncated; an unparsable one with
//!   `jid-malformed`; a missing (empty) one with `bad-request`.
//! - The user's own bare JID is accepted: RFC 6121 does not forbid it and
//!   clients use it for "notes to self". (Prosody refuses it.)
//! - An empty `name` attribute is stored as no name.
//! - Limits ("server-configured" in §2.3.3) are fixed here:
//!   [`MAX_NAME_BYTES`], [`MAX_GROUP_BYTES`], and [`MAX_GROUPS`]; the group
//!   count limit is our own addition and uses `not-acceptable` like the
//!   length limits.

use super::RosterItem;
use crate::error::StanzaCondition;
use crate::jid::{BareJid, Jid};
use crate::xml::element::Element;
use crate::xml::escape::{escape_attr, escape_text};
use crate::xml::ns::{NS_CLIENT, NS_ROSTER};

/// Longest accepted `name` attribute, in bytes (§2.3.3: not-acceptable).
pub const MAX_NAME_BYTES: usize = 1023;
/// Longest accepted `<group/>` text, in bytes (§2.3.3: not-acceptable).
pub const MAX_GROUP_BYTES: usize = 1023;
/// Most groups one item may carry (our limit, not the RFC's).
pub const MAX_GROUPS: usize = 64;

/// The one `<item/>` of a roster set, as extracted by the caller (values
/// already unescaped).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RosterSetRequest {
    /// The raw `jid` attribute; normalised here. Empty = missing.
    pub jid: String,
    pub name: Option<String>,
    /// The text of each `<group/>` child, in document order.
    pub groups: Vec<String>,
    /// `subscription='remove'`.
    pub remove: bool,
    /// Any other `subscription` value. Ignored, as §2.1.2.5 requires ("the
    /// server MUST ignore all values of the 'subscription' attribute other
    /// than 'remove'"); kept so the caller can log it.
    pub subscription_attr: Option<String>,
}

/// What a valid roster set does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterChange {
    /// Store and push this item (§2.3.2): name and groups from the request,
    /// subscription state unchanged, `listed = true`.
    Upsert(RosterItem),
    /// Delete the item and push the removal (§2.5.2). Before that, the
    /// server sends on the user's behalf `unsubscribe` to the contact if
    /// `had_to || had_pending_out`, and `unsubscribed` if
    /// `had_from || had_pending_in` — the latter preceded by `unavailable`
    /// from the user's available resources when `had_from`, exactly as for
    /// an outbound `unsubscribed` (§3.2.2).
    Remove {
        contact: String,
        had_from: bool,
        had_to: bool,
        had_pending_out: bool,
        had_pending_in: bool,
    },
    /// Removal of an item that is not in the roster: reply `item-not-found`
    /// (§2.5.3).
    NotFound,
}

impl RosterChange {
    /// For `Remove`: the subscription stanzas to send to the contact, in
    /// order (§2.5.2). Empty for the other variants.
    pub fn cancellations(&self) -> Vec<super::subscription::SubKind> {
        use super::subscription::SubKind;
        let mut v = Vec::new();
        if let RosterChange::Remove {
            had_from,
            had_to,
            had_pending_out,
            had_pending_in,
            ..
        } = *self
        {
            if had_to || had_pending_out {
                v.push(SubKind::Unsubscribe);
            }
            if had_from || had_pending_in {
                v.push(SubKind::Unsubscribed);
            }
        }
        v
    }
}

/// A roster IQ from a client, read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RosterIq {
    /// A roster get (§2.1.3).
    Get,
    /// A roster set with its one item (§2.3, §2.5).
    Set(RosterSetRequest),
}

/// Reads an IQ (its raw bytes, in the client namespace) addressed to the
/// user's roster. The error is the condition to answer with:
/// `bad-request` when it does not parse, is neither `get` nor `set`, or a
/// set does not carry exactly one `<item/>` (§2.3.3 rule 1);
/// `service-unavailable` when it has no roster query (the only IQ a
/// session hands its user's shard).
pub fn parse_request(iq: &[u8]) -> Result<RosterIq, StanzaCondition> {
    let el = Element::parse(iq, NS_CLIENT, &[]).map_err(|_| StanzaCondition::BadRequest)?;
    let query = el
        .child("query", NS_ROSTER)
        .ok_or(StanzaCondition::ServiceUnavailable)?;
    match el.attr("type") {
        Some("get") => Ok(RosterIq::Get),
        Some("set") => {
            let mut items = query.children_named("item", NS_ROSTER);
            let (Some(it), None) = (items.next(), items.next()) else {
                return Err(StanzaCondition::BadRequest);
            };
            Ok(RosterIq::Set(RosterSetRequest {
                jid: it.attr("jid").unwrap_or_default().to_string(),
                name: it.attr("name").map(str::to_string),
                groups: it
                    .children_named("group", NS_ROSTER)
                    .map(|g| g.text())
                    .collect(),
                remove: it.attr("subscription") == Some("remove"),
                subscription_attr: it.attr("subscription").map(str::to_string),
            }))
        }
        _ => Err(StanzaCondition::BadRequest),
    }
}

/// Validates a roster set from `user` against the current item (if any)
/// and returns the change to apply or the stanza error to reply with.
pub fn apply_set(
    user: &BareJid,
    current: Option<&RosterItem>,
    req: &RosterSetRequest,
) -> Result<RosterChange, StanzaCondition> {
    // The user's own JID is allowed (see module docs); `user` is part of
    // the contract so a policy can be added here without changing callers.
    let _ = user;
    if req.jid.is_empty() {
        return Err(StanzaCondition::BadRequest);
    }
    let contact = match Jid::parse(&req.jid) {
        Ok(Jid::Bare(b)) => b,
        Ok(Jid::Full(_)) => return Err(StanzaCondition::BadRequest),
        Err(_) => return Err(StanzaCondition::JidMalformed),
    };
    // The caller looked `current` up by the normalised JID; a mismatch is
    // a caller bug, and answering for the wrong item would be worse.
    if let Some(c) = current
        && c.jid != contact.as_str()
    {
        return Err(StanzaCondition::InternalServerError);
    }

    if req.remove {
        // §2.5: name and groups of a removal are irrelevant.
        return Ok(match current {
            Some(c) if c.listed => RosterChange::Remove {
                contact: contact.as_str().to_owned(),
                had_from: c.subscription.has_from(),
                had_to: c.subscription.has_to(),
                had_pending_out: c.ask,
                had_pending_in: c.pending_in,
            },
            // An unlisted record (a pending-in the user never added) is
            // not "in the roster" for §2.5.3.
            _ => RosterChange::NotFound,
        });
    }

    let name = req.name.as_deref().filter(|n| !n.is_empty());
    if name.is_some_and(|n| n.len() > MAX_NAME_BYTES) {
        return Err(StanzaCondition::NotAcceptable);
    }
    for (i, g) in req.groups.iter().enumerate() {
        if g.is_empty() || g.len() > MAX_GROUP_BYTES {
            return Err(StanzaCondition::NotAcceptable);
        }
        if req.groups[..i].contains(g) {
            return Err(StanzaCondition::BadRequest);
        }
    }
    if req.groups.len() > MAX_GROUPS {
        return Err(StanzaCondition::NotAcceptable);
    }

    let mut item = current
        .cloned()
        .unwrap_or_else(|| RosterItem::new(contact.as_str()));
    item.name = name.map(str::to_owned);
    item.groups = req.groups.clone();
    item.listed = true;
    Ok(RosterChange::Upsert(item))
}

fn attr(out: &mut String, name: &str, value: &str) {
    out.push(' ');
    out.push_str(name);
    out.push_str("='");
    out.push_str(&escape_attr(value));
    out.push('\'');
}

/// Writes one `<item/>`: attributes in the fixed order jid, name,
/// subscription, ask, approved; then the groups.
pub fn item_xml(item: &RosterItem, out: &mut String) {
    out.push_str("<item");
    attr(out, "jid", &item.jid);
    if let Some(name) = &item.name {
        attr(out, "name", name);
    }
    attr(out, "subscription", item.subscription.as_str());
    if item.ask {
        out.push_str(" ask='subscribe'");
    }
    if item.approved {
        out.push_str(" approved='true'");
    }
    if item.groups.is_empty() {
        out.push_str("/>");
        return;
    }
    out.push('>');
    for g in &item.groups {
        out.push_str("<group>");
        out.push_str(&escape_text(g));
        out.push_str("</group>");
    }
    out.push_str("</item>");
}

fn iq_open(out: &mut String, ty: &str, id: &str, to: &str) {
    out.push_str("<iq type='");
    out.push_str(ty);
    out.push('\'');
    attr(out, "id", id);
    attr(out, "to", to);
    out.push('>');
}

/// The result of a roster get (§2.1.3): only listed items, in the given
/// order.
pub fn roster_result_xml(id: &str, to: &str, items: &[RosterItem]) -> String {
    let mut out = String::with_capacity(128 + items.len() * 96);
    iq_open(&mut out, "result", id, to);
    let mut listed = items.iter().filter(|i| i.listed).peekable();
    if listed.peek().is_none() {
        out.push_str("<query xmlns='jabber:iq:roster'/>");
    } else {
        out.push_str("<query xmlns='jabber:iq:roster'>");
        for item in listed {
            item_xml(item, &mut out);
        }
        out.push_str("</query>");
    }
    out.push_str("</iq>");
    out
}

/// The empty result of a roster set (§2.3.2).
pub fn set_result_xml(id: &str, to: &str) -> String {
    let mut out = String::with_capacity(48 + id.len() + to.len());
    out.push_str("<iq type='result'");
    attr(&mut out, "id", id);
    attr(&mut out, "to", to);
    out.push_str("/>");
    out
}

/// A roster push of `item` to one interested resource `to` (§2.1.6). No
/// `from`: it comes from the user's own account, which §2.1.6 lets the
/// server express by omitting it.
pub fn roster_push_xml(to: &str, item: &RosterItem, id: &str) -> String {
    let mut out = String::with_capacity(192);
    iq_open(&mut out, "set", id, to);
    out.push_str("<query xmlns='jabber:iq:roster'>");
    item_xml(item, &mut out);
    out.push_str("</query></iq>");
    out
}

/// The roster push announcing the removal of `contact` (§2.5.2).
pub fn roster_push_remove_xml(to: &str, contact: &str, id: &str) -> String {
    let mut out = String::with_capacity(160);
    iq_open(&mut out, "set", id, to);
    out.push_str("<query xmlns='jabber:iq:roster'><item");
    attr(&mut out, "jid", contact);
    out.push_str(" subscription='remove'/></query></iq>");
    out
}

#[cfg(test)]
mod tests {
    use super::super::Subscription;
    use super::super::subscription::SubKind;
    use super::*;

    fn user() -> BareJid {
        BareJid::parse("juliet@example.com").unwrap()
    }

    fn set(jid: &str) -> RosterSetRequest {
        RosterSetRequest {
            jid: jid.into(),
            ..Default::default()
        }
    }

    fn listed(jid: &str, sub: Subscription) -> RosterItem {
        let mut it = RosterItem::new(jid);
        it.listed = true;
        it.subscription = sub;
        it
    }

    fn parse(xml: &str) -> Result<RosterIq, StanzaCondition> {
        parse_request(xml.as_bytes())
    }

    #[test]
    fn a_roster_get_is_read() {
        assert_eq!(
            parse("<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"),
            Ok(RosterIq::Get)
        );
    }

    #[test]
    fn a_roster_set_is_read_with_its_item_name_and_groups() {
        let got = parse(
            "<iq type='set' id='r2'><query xmlns='jabber:iq:roster'>\
             <item jid='romeo@example.net' name='Romeo &amp; co'>\
             <group>Friends</group><group>Lovers</group></item></query></iq>",
        );
        assert_eq!(
            got,
            Ok(RosterIq::Set(RosterSetRequest {
                jid: "romeo@example.net".into(),
                name: Some("Romeo & co".into()),
                groups: vec!["Friends".into(), "Lovers".into()],
                remove: false,
                subscription_attr: None,
            }))
        );
    }

    #[test]
    fn a_roster_removal_is_read_and_other_subscription_values_are_kept_for_logging() {
        let Ok(RosterIq::Set(req)) = parse(
            "<iq type='set' id='r3'><query xmlns='jabber:iq:roster'>\
             <item jid='romeo@example.net' subscription='remove'/></query></iq>",
        ) else {
            panic!("expected a set");
        };
        assert!(req.remove);
        let Ok(RosterIq::Set(req)) = parse(
            "<iq type='set' id='r4'><query xmlns='jabber:iq:roster'>\
             <item jid='romeo@example.net' subscription='both'/></query></iq>",
        ) else {
            panic!("expected a set");
        };
        assert!(!req.remove);
        assert_eq!(req.subscription_attr.as_deref(), Some("both"));
    }

    #[test]
    fn s2_3_3_a_roster_set_without_exactly_one_item_is_a_bad_request() {
        for query in [
            "<query xmlns='jabber:iq:roster'/>",
            "<query xmlns='jabber:iq:roster'><item jid='a@x'/><item jid='b@x'/></query>",
        ] {
            assert_eq!(
                parse(&format!("<iq type='set' id='r'>{query}</iq>")),
                Err(StanzaCondition::BadRequest),
                "{query}"
            );
        }
    }

    #[test]
    fn an_iq_without_a_roster_query_is_service_unavailable() {
        for xml in [
            "<iq type='get' id='v'><query xmlns='jabber:iq:version'/></iq>",
            "<iq type='set' id='v'><query xmlns='jabber:iq:version'><item jid='a@x'/></query></iq>",
            "<iq type='get' id='v'/>",
        ] {
            assert_eq!(
                parse(xml),
                Err(StanzaCondition::ServiceUnavailable),
                "{xml}"
            );
        }
    }

    #[test]
    fn a_roster_iq_of_another_type_or_unparsable_is_a_bad_request() {
        assert_eq!(
            parse("<iq type='result' id='r'><query xmlns='jabber:iq:roster'/></iq>"),
            Err(StanzaCondition::BadRequest)
        );
        assert_eq!(
            parse("<iq id='r'><query xmlns='jabber:iq:roster'/></iq>"),
            Err(StanzaCondition::BadRequest)
        );
        assert_eq!(parse("<iq type='get'"), Err(StanzaCondition::BadRequest));
    }

    #[test]
    fn a_set_result_is_empty_and_escaped() {
        assert_eq!(
            set_result_xml("a'1", "juliet@example.com/balcony"),
            "<iq type='result' id='a&apos;1' to='juliet@example.com/balcony'/>"
        );
    }

    #[test]
    fn a_new_contact_is_added_listed_with_no_subscription() {
        let mut req = set("Romeo@Example.NET");
        req.name = Some("Romeo".into());
        req.groups = vec!["Friends".into()];
        let Ok(RosterChange::Upsert(it)) = apply_set(&user(), None, &req) else {
            panic!("expected upsert");
        };
        assert_eq!(it.jid, "romeo@example.net", "jid is normalised");
        assert_eq!(it.name.as_deref(), Some("Romeo"));
        assert_eq!(it.groups, ["Friends"]);
        assert!(it.listed);
        assert_eq!(it.subscription, Subscription::None);
        assert!(!it.ask && !it.pending_in && !it.approved);
    }

    #[test]
    fn an_update_keeps_the_subscription_state_and_replaces_name_and_groups() {
        let mut cur = listed("romeo@example.net", Subscription::From);
        cur.ask = true;
        cur.name = Some("Old".into());
        cur.groups = vec!["A".into(), "B".into()];
        let mut req = set("romeo@example.net");
        req.groups = vec!["C".into()];
        let Ok(RosterChange::Upsert(it)) = apply_set(&user(), Some(&cur), &req) else {
            panic!("expected upsert");
        };
        assert_eq!(it.subscription, Subscription::From);
        assert!(it.ask);
        assert_eq!(it.name, None);
        assert_eq!(it.groups, ["C"]);
    }

    #[test]
    fn section_2_1_2_5_other_subscription_values_are_ignored() {
        let cur = listed("romeo@example.net", Subscription::None);
        let mut req = set("romeo@example.net");
        req.subscription_attr = Some("both".into());
        let Ok(RosterChange::Upsert(it)) = apply_set(&user(), Some(&cur), &req) else {
            panic!("expected upsert");
        };
        assert_eq!(it.subscription, Subscription::None);
    }

    #[test]
    fn adding_an_unlisted_pending_requester_lists_it_and_keeps_the_request() {
        let mut cur = RosterItem::new("romeo@example.net");
        cur.pending_in = true;
        let Ok(RosterChange::Upsert(it)) =
            apply_set(&user(), Some(&cur), &set("romeo@example.net"))
        else {
            panic!("expected upsert");
        };
        assert!(it.listed && it.pending_in);
    }

    #[test]
    fn the_users_own_jid_and_domain_jids_are_accepted() {
        for jid in ["juliet@example.com", "gateway.example.org"] {
            assert!(matches!(
                apply_set(&user(), None, &set(jid)),
                Ok(RosterChange::Upsert(_))
            ));
        }
    }

    #[test]
    fn a_missing_jid_is_a_bad_request() {
        assert_eq!(
            apply_set(&user(), None, &set("")),
            Err(StanzaCondition::BadRequest)
        );
    }

    #[test]
    fn an_invalid_jid_is_jid_malformed() {
        for jid in ["@example.net", "romeo@", "ro meo@example.net", "a@b/"] {
            assert_eq!(
                apply_set(&user(), None, &set(jid)),
                Err(StanzaCondition::JidMalformed),
                "{jid}"
            );
        }
    }

    #[test]
    fn a_full_jid_is_a_bad_request() {
        assert_eq!(
            apply_set(&user(), None, &set("romeo@example.net/orchard")),
            Err(StanzaCondition::BadRequest)
        );
    }

    #[test]
    fn section_2_3_3_an_empty_group_is_not_acceptable() {
        let mut req = set("romeo@example.net");
        req.groups = vec!["Friends".into(), String::new()];
        assert_eq!(
            apply_set(&user(), None, &req),
            Err(StanzaCondition::NotAcceptable)
        );
    }

    #[test]
    fn section_2_3_3_duplicate_groups_are_a_bad_request() {
        let mut req = set("romeo@example.net");
        req.groups = vec!["Friends".into(), "Work".into(), "Friends".into()];
        assert_eq!(
            apply_set(&user(), None, &req),
            Err(StanzaCondition::BadRequest)
        );
    }

    #[test]
    fn section_2_3_3_overlong_names_and_groups_are_not_acceptable() {
        let mut req = set("romeo@example.net");
        req.name = Some("n".repeat(MAX_NAME_BYTES + 1));
        assert_eq!(
            apply_set(&user(), None, &req),
            Err(StanzaCondition::NotAcceptable)
        );
        req.name = Some("n".repeat(MAX_NAME_BYTES));
        assert!(apply_set(&user(), None, &req).is_ok());

        req.groups = vec!["g".repeat(MAX_GROUP_BYTES + 1)];
        assert_eq!(
            apply_set(&user(), None, &req),
            Err(StanzaCondition::NotAcceptable)
        );
    }

    #[test]
    fn too_many_groups_are_not_acceptable() {
        let mut req = set("romeo@example.net");
        req.groups = (0..=MAX_GROUPS).map(|i| format!("g{i}")).collect();
        assert_eq!(
            apply_set(&user(), None, &req),
            Err(StanzaCondition::NotAcceptable)
        );
        req.groups.pop();
        assert!(apply_set(&user(), None, &req).is_ok());
    }

    #[test]
    fn an_empty_name_is_stored_as_no_name() {
        let mut req = set("romeo@example.net");
        req.name = Some(String::new());
        let Ok(RosterChange::Upsert(it)) = apply_set(&user(), None, &req) else {
            panic!("expected upsert");
        };
        assert_eq!(it.name, None);
    }

    #[test]
    fn a_current_item_for_another_jid_is_refused_as_a_caller_bug() {
        let cur = listed("tybalt@example.net", Subscription::None);
        assert_eq!(
            apply_set(&user(), Some(&cur), &set("romeo@example.net")),
            Err(StanzaCondition::InternalServerError)
        );
    }

    #[test]
    fn section_2_5_3_removing_an_unknown_item_is_not_found() {
        let mut req = set("romeo@example.net");
        req.remove = true;
        assert_eq!(apply_set(&user(), None, &req), Ok(RosterChange::NotFound));
        let mut unlisted = RosterItem::new("romeo@example.net");
        unlisted.pending_in = true;
        assert_eq!(
            apply_set(&user(), Some(&unlisted), &req),
            Ok(RosterChange::NotFound)
        );
    }

    #[test]
    fn section_2_5_2_removal_reports_what_must_be_cancelled() {
        let mut req = set("Romeo@example.net");
        req.remove = true;
        // Groups are irrelevant for a removal, even invalid ones.
        req.groups = vec![String::new()];
        let cases = [
            (
                Subscription::Both,
                false,
                false,
                vec![SubKind::Unsubscribe, SubKind::Unsubscribed],
            ),
            (Subscription::To, false, false, vec![SubKind::Unsubscribe]),
            (
                Subscription::From,
                false,
                false,
                vec![SubKind::Unsubscribed],
            ),
            (Subscription::None, true, false, vec![SubKind::Unsubscribe]),
            (Subscription::None, false, true, vec![SubKind::Unsubscribed]),
            (Subscription::None, false, false, vec![]),
        ];
        for (sub, ask, pending_in, want) in cases {
            let mut cur = listed("romeo@example.net", sub);
            cur.ask = ask;
            cur.pending_in = pending_in;
            let change = apply_set(&user(), Some(&cur), &req).unwrap();
            assert_eq!(
                change,
                RosterChange::Remove {
                    contact: "romeo@example.net".into(),
                    had_from: sub.has_from(),
                    had_to: sub.has_to(),
                    had_pending_out: ask,
                    had_pending_in: pending_in,
                }
            );
            assert_eq!(
                change.cancellations(),
                want,
                "{sub:?} ask={ask} pi={pending_in}"
            );
        }
    }

    #[test]
    fn item_xml_writes_attributes_in_fixed_order_and_escapes_everything() {
        let mut it = listed("romeo@example.net", Subscription::None);
        it.name = Some("R&J's <3".into());
        it.groups = vec!["Friends & <Foes>".into(), "Work".into()];
        it.ask = true;
        it.approved = true;
        let mut s = String::new();
        item_xml(&it, &mut s);
        assert_eq!(
            s,
            "<item jid='romeo@example.net' name='R&amp;J&apos;s &lt;3' subscription='none' \
             ask='subscribe' approved='true'><group>Friends &amp; &lt;Foes&gt;</group>\
             <group>Work</group></item>"
        );
    }

    #[test]
    fn item_xml_without_groups_is_self_closing_and_omits_absent_attributes() {
        let it = listed("romeo@example.net", Subscription::Both);
        let mut s = String::new();
        item_xml(&it, &mut s);
        assert_eq!(s, "<item jid='romeo@example.net' subscription='both'/>");
    }

    #[test]
    fn roster_result_lists_only_listed_items() {
        let mut hidden = RosterItem::new("tybalt@example.net");
        hidden.pending_in = true;
        let items = [listed("romeo@example.net", Subscription::To), hidden];
        assert_eq!(
            roster_result_xml("r1", "juliet@example.com/balcony", &items),
            "<iq type='result' id='r1' to='juliet@example.com/balcony'>\
             <query xmlns='jabber:iq:roster'>\
             <item jid='romeo@example.net' subscription='to'/></query></iq>"
        );
    }

    #[test]
    fn an_empty_roster_result_has_an_empty_query() {
        assert_eq!(
            roster_result_xml("a'b", "juliet@example.com/balcony", &[]),
            "<iq type='result' id='a&apos;b' to='juliet@example.com/balcony'>\
             <query xmlns='jabber:iq:roster'/></iq>"
        );
    }

    #[test]
    fn roster_push_is_a_set_with_one_item() {
        let it = listed("romeo@example.net", Subscription::From);
        assert_eq!(
            roster_push_xml("juliet@example.com/balcony", &it, "push1"),
            "<iq type='set' id='push1' to='juliet@example.com/balcony'>\
             <query xmlns='jabber:iq:roster'>\
             <item jid='romeo@example.net' subscription='from'/></query></iq>"
        );
    }

    #[test]
    fn removal_push_uses_subscription_remove() {
        assert_eq!(
            roster_push_remove_xml("juliet@example.com/balcony", "romeo@example.net", "push2"),
            "<iq type='set' id='push2' to='juliet@example.com/balcony'>\
             <query xmlns='jabber:iq:roster'>\
             <item jid='romeo@example.net' subscription='remove'/></query></iq>"
        );
    }
}
