//! The RFC 6121 presence-subscription state machine (§3 and Appendix A,
//! with the pre-approvals of §3.4), as two pure functions: [`outbound`] for
//! a subscription stanza the local user sends to a contact, [`inbound`] for
//! one a contact sends to the local user. Each takes the user's current
//! [`RosterItem`] for the contact and returns the item to store plus what
//! the shard must do (route, deliver, push, auto-reply, presence).
//!
//! Owns: the state transitions only. It does not route, store, build XML
//! or know which resources are online; the shard does that with the flags.
//!
//! Storage contract: `new_item: Some(item)` means "store this"; when
//! `item.is_void()` (e.g. a denied pending-in for a contact never added to
//! the roster) the record should be deleted instead. `None` means nothing
//! changed.
//!
//! Deliberate choices where RFC 6121 leaves room (all listed in the module
//! tests as well):
//! - A duplicate inbound `subscribe` while one is pending is neither
//!   delivered nor stored again: the first request is kept (§3.1.3 lets the
//!   server keep the first or the last).
//! - Approving a pending-in (outbound `subscribed`) or sending `subscribe`
//!   lists the item in the visible roster even if it was only a pending
//!   record, because §3.1.5/§3.1.2 require a roster push for it.
//! - An inbound `subscribe` from a contact that already has `from`/`both`
//!   is auto-answered with `subscribed` *and* the user's current presence,
//!   so a contact whose server lost state resynchronises fully.

use super::{RosterItem, Subscription};

/// The four subscription-related presence types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SubKind {
    Subscribe,
    Subscribed,
    Unsubscribe,
    Unsubscribed,
}

impl SubKind {
    /// Maps a presence `type` attribute; any other type is not a
    /// subscription stanza.
    pub fn from_type(ty: &str) -> Option<SubKind> {
        match ty {
            "subscribe" => Some(SubKind::Subscribe),
            "subscribed" => Some(SubKind::Subscribed),
            "unsubscribe" => Some(SubKind::Unsubscribe),
            "unsubscribed" => Some(SubKind::Unsubscribed),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            SubKind::Subscribe => "subscribe",
            SubKind::Subscribed => "subscribed",
            SubKind::Unsubscribe => "unsubscribe",
            SubKind::Unsubscribed => "unsubscribed",
        }
    }
}

/// What to do after the local user sent a subscription stanza.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OutboundOutcome {
    /// `Some` = store this item (delete it if `is_void()`); `None` = no change.
    pub new_item: Option<RosterItem>,
    /// Push `new_item` to the user's interested resources.
    pub push: bool,
    /// Route the stanza (stamped with the user's bare JID) to the contact.
    pub forward: bool,
    /// Before forwarding, send `unavailable` from each of the user's
    /// available resources to the contact (§3.2.2: the contact loses its
    /// subscription to the user).
    pub send_unavailable_to_contact: bool,
    /// After forwarding, send the user's current presence from each
    /// available resource to the contact (§3.1.5: the contact just gained
    /// its subscription).
    pub send_presence_to_contact: bool,
}

/// What to do after a contact sent a subscription stanza to the local user.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct InboundOutcome {
    /// `Some` = store this item (delete it if `is_void()`); `None` = no change.
    pub new_item: Option<RosterItem>,
    /// Push `new_item` to the user's interested resources.
    pub push: bool,
    /// Deliver the stanza to the user's available resources. For a
    /// `subscribe` with `store_pending` also set, keep it for redelivery
    /// when no resource is available (or at every login until answered).
    pub deliver: bool,
    /// The server answers on the user's behalf with this stanza (always
    /// `Subscribed`: already-subscribed contact §3.1.3, or pre-approval §3.4).
    pub auto_reply: Option<SubKind>,
    /// With an auto `subscribed`: send the user's current presence from each
    /// available resource to the contact.
    pub send_presence_to_contact: bool,
    /// Keep the complete `subscribe` stanza as the pending-in request
    /// (§3.1.3 step 4); it is redelivered whenever the user comes online
    /// until approved or denied.
    pub store_pending: bool,
    /// Send `unavailable` from each of the user's available resources to
    /// the contact (§3.3.3 step 3: the contact unsubscribed from the user).
    /// Not in the original brief; RFC 6121 requires it.
    pub send_unavailable_to_contact: bool,
}

fn with_from(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::From => Subscription::From,
        Subscription::To | Subscription::Both => Subscription::Both,
    }
}

fn without_from(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::From => Subscription::None,
        Subscription::To | Subscription::Both => Subscription::To,
    }
}

fn with_to(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::To => Subscription::To,
        Subscription::From | Subscription::Both => Subscription::Both,
    }
}

fn without_to(s: Subscription) -> Subscription {
    match s {
        Subscription::None | Subscription::To => Subscription::None,
        Subscription::From | Subscription::Both => Subscription::From,
    }
}

/// What a roster push shows of an item; `pending_in` is not part of it.
fn visible(item: &RosterItem) -> (Subscription, bool, bool, bool) {
    (item.subscription, item.ask, item.approved, item.listed)
}

/// Returns (store, push) for a transition from `before` to `after`.
fn settle(before: Option<&RosterItem>, after: RosterItem) -> (Option<RosterItem>, bool) {
    let unchanged = match before {
        Some(b) => *b == after,
        // Nothing stored and nothing to store.
        None => after.is_void(),
    };
    if unchanged {
        return (None, false);
    }
    let push = after.listed && before.map(visible) != Some(visible(&after));
    (Some(after), push)
}

/// The local user sends `kind` to `contact` (a normalised bare JID);
/// `item` is the user's roster item for the contact, if any.
pub fn outbound(item: Option<&RosterItem>, kind: SubKind, contact: &str) -> OutboundOutcome {
    let mut it = item.cloned().unwrap_or_else(|| RosterItem::new(contact));
    let mut out = OutboundOutcome::default();
    match kind {
        SubKind::Subscribe => {
            // A.2.1: routed in every state, so a contact whose server lost
            // state can resynchronise; only a missing `to` becomes Pending Out.
            out.forward = true;
            if !it.subscription.has_to() {
                it.ask = true;
            }
            it.listed = true;
        }
        SubKind::Unsubscribe => {
            // A.2.2: routed in every state.
            out.forward = true;
            it.subscription = without_to(it.subscription);
            it.ask = false;
        }
        SubKind::Subscribed => {
            if it.subscription.has_from() {
                // A.2.3 / §3.4.1 rule 1: From, From + Pending Out, Both: ignore.
            } else if it.pending_in {
                // A.2.3: a real approval. None+PI → From, None+PO+PI →
                // From+PO, To+PI → Both.
                it.subscription = with_from(it.subscription);
                it.pending_in = false;
                it.approved = false;
                it.listed = true;
                out.forward = true;
                out.send_presence_to_contact = true;
            } else {
                // §3.4: no request pending: note a pre-approval and do not
                // route the stanza. Creates a listed None item if needed.
                it.approved = true;
                it.listed = true;
            }
        }
        SubKind::Unsubscribed => {
            if it.subscription.has_from() || it.pending_in {
                // A.2.4: cancel the contact's subscription or deny its request.
                out.forward = true;
                out.send_unavailable_to_contact = it.subscription.has_from();
                it.subscription = without_from(it.subscription);
                it.pending_in = false;
            }
            if it.approved {
                // §3.4 / §3.2.2 rule 2: withdraw the pre-approval, not routed.
                it.approved = false;
            }
        }
    }
    let (new_item, push) = settle(item, it);
    out.new_item = new_item;
    out.push = push;
    out
}

/// `contact` (a normalised bare JID) sends `kind` to the local user;
/// `item` is the user's roster item for the contact, if any. The caller has
/// already established that the user exists.
pub fn inbound(item: Option<&RosterItem>, kind: SubKind, contact: &str) -> InboundOutcome {
    let mut it = item.cloned().unwrap_or_else(|| RosterItem::new(contact));
    let mut out = InboundOutcome::default();
    match kind {
        SubKind::Subscribe => {
            if it.subscription.has_from() {
                // §3.1.3 rule 2 / A.3.1 "no *": already subscribed; answer
                // for the user, do not bother them.
                out.auto_reply = Some(SubKind::Subscribed);
                out.send_presence_to_contact = true;
            } else if it.approved {
                // §3.4: pre-approved: approve on the user's behalf and
                // consume the pre-approval.
                it.subscription = with_from(it.subscription);
                it.approved = false;
                out.auto_reply = Some(SubKind::Subscribed);
                out.send_presence_to_contact = true;
            } else if it.pending_in {
                // A.3.1: duplicate request: keep the first, do not redeliver.
            } else {
                // A.3.1: None → None+PI, None+PO → None+PO+PI, To → To+PI.
                // An item created here stays unlisted.
                it.pending_in = true;
                out.deliver = true;
                out.store_pending = true;
            }
        }
        SubKind::Subscribed => {
            // A.3.3: only an answer to our own pending request counts.
            if it.ask {
                it.subscription = with_to(it.subscription);
                it.ask = false;
                out.deliver = true;
            }
        }
        SubKind::Unsubscribe => {
            // A.3.2: ends the contact's subscription or withdraws its request.
            if it.subscription.has_from() || it.pending_in {
                out.deliver = true;
                out.send_unavailable_to_contact = it.subscription.has_from();
                it.subscription = without_from(it.subscription);
                it.pending_in = false;
            }
        }
        SubKind::Unsubscribed => {
            // A.3.4: ends the user's subscription or denies the user's request.
            if it.subscription.has_to() || it.ask {
                it.subscription = without_to(it.subscription);
                it.ask = false;
                out.deliver = true;
            }
        }
    }
    let (new_item, push) = settle(item, it);
    out.new_item = new_item;
    out.push = push;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const C: &str = "contact@example.net";

    /// Every Appendix A state, plus the pre-approved variants §3.4 allows
    /// (pre-approval only exists while the contact has neither `from` nor a
    /// pending request). "-" is "not in the roster at all".
    const STATES: &[&str] = &[
        "-",
        "None",
        "None+PO",
        "None+PI",
        "None+PO+PI",
        "To",
        "To+PI",
        "From",
        "From+PO",
        "Both",
        "None+A",
        "None+PO+A",
        "To+A",
    ];

    const KINDS: [SubKind; 4] = [
        SubKind::Subscribe,
        SubKind::Unsubscribe,
        SubKind::Subscribed,
        SubKind::Unsubscribed,
    ];

    /// Parses "Sub[+PO][+PI][+A]" into a listed item.
    fn state(s: &str) -> Option<RosterItem> {
        if s == "-" {
            return None;
        }
        let mut parts = s.split('+');
        let mut it = RosterItem::new(C);
        it.listed = true;
        it.subscription = match parts.next() {
            Some("None") => Subscription::None,
            Some("To") => Subscription::To,
            Some("From") => Subscription::From,
            Some("Both") => Subscription::Both,
            other => panic!("bad state {other:?}"),
        };
        for p in parts {
            match p {
                "PO" => it.ask = true,
                "PI" => it.pending_in = true,
                "A" => it.approved = true,
                other => panic!("bad flag {other}"),
            }
        }
        Some(it)
    }

    fn describe(it: &RosterItem) -> String {
        let mut s = match it.subscription {
            Subscription::None => "None",
            Subscription::To => "To",
            Subscription::From => "From",
            Subscription::Both => "Both",
        }
        .to_string();
        if it.ask {
            s.push_str("+PO");
        }
        if it.pending_in {
            s.push_str("+PI");
        }
        if it.approved {
            s.push_str("+A");
        }
        s
    }

    fn kind_of(name: &str) -> SubKind {
        SubKind::from_type(name).expect("kind")
    }

    fn assert_table_is_complete(table: &[(&str, &str, &str, &str)]) {
        for kind in KINDS {
            for st in STATES {
                let n = table
                    .iter()
                    .filter(|(s, k, _, _)| s == st && kind_of(k) == kind)
                    .count();
                assert_eq!(n, 1, "row for {st} × {kind:?} appears {n} times");
            }
        }
    }

    /// Outbound, RFC 6121 A.2.1–A.2.4 and §3.4. Columns: existing state,
    /// stanza, new state ("=" = no change), flags: F route to contact,
    /// P roster push, U unavailable to contact first, S presence to contact.
    #[rustfmt::skip]
    const OUTBOUND: &[(&str, &str, &str, &str)] = &[
        // A.2.1 subscribe: always routed.
        ("-",          "subscribe", "None+PO",    "FP"),
        ("None",       "subscribe", "None+PO",    "FP"),
        ("None+PO",    "subscribe", "=",          "F"),
        ("None+PI",    "subscribe", "None+PO+PI", "FP"),
        ("None+PO+PI", "subscribe", "=",          "F"),
        ("To",         "subscribe", "=",          "F"),
        ("To+PI",      "subscribe", "=",          "F"),
        ("From",       "subscribe", "From+PO",    "FP"),
        ("From+PO",    "subscribe", "=",          "F"),
        ("Both",       "subscribe", "=",          "F"),
        ("None+A",     "subscribe", "None+PO+A",  "FP"),
        ("None+PO+A",  "subscribe", "=",          "F"),
        ("To+A",       "subscribe", "=",          "F"),
        // A.2.2 unsubscribe: always routed.
        ("-",          "unsubscribe", "=",        "F"),
        ("None",       "unsubscribe", "=",        "F"),
        ("None+PO",    "unsubscribe", "None",     "FP"),
        ("None+PI",    "unsubscribe", "=",        "F"),
        ("None+PO+PI", "unsubscribe", "None+PI",  "FP"),
        ("To",         "unsubscribe", "None",     "FP"),
        ("To+PI",      "unsubscribe", "None+PI",  "FP"),
        ("From",       "unsubscribe", "=",        "F"),
        ("From+PO",    "unsubscribe", "From",     "FP"),
        ("Both",       "unsubscribe", "From",     "FP"),
        ("None+A",     "unsubscribe", "=",        "F"),
        ("None+PO+A",  "unsubscribe", "None+A",   "FP"),
        ("To+A",       "unsubscribe", "None+A",   "FP"),
        // A.2.3 subscribed: approval, or pre-approval (§3.4) when nothing
        // is pending, which is never routed.
        ("-",          "subscribed", "None+A",     "P"),
        ("None",       "subscribed", "None+A",     "P"),
        ("None+PO",    "subscribed", "None+PO+A",  "P"),
        ("None+PI",    "subscribed", "From",       "FPS"),
        ("None+PO+PI", "subscribed", "From+PO",    "FPS"),
        ("To",         "subscribed", "To+A",       "P"),
        ("To+PI",      "subscribed", "Both",       "FPS"),
        ("From",       "subscribed", "=",          ""),
        ("From+PO",    "subscribed", "=",          ""),
        ("Both",       "subscribed", "=",          ""),
        ("None+A",     "subscribed", "=",          ""),
        ("None+PO+A",  "subscribed", "=",          ""),
        ("To+A",       "subscribed", "=",          ""),
        // A.2.4 unsubscribed; withdrawing a pre-approval is not routed.
        // Denying a pending-in changes nothing a roster push shows.
        ("-",          "unsubscribed", "=",        ""),
        ("None",       "unsubscribed", "=",        ""),
        ("None+PO",    "unsubscribed", "=",        ""),
        ("None+PI",    "unsubscribed", "None",     "F"),
        ("None+PO+PI", "unsubscribed", "None+PO",  "F"),
        ("To",         "unsubscribed", "=",        ""),
        ("To+PI",      "unsubscribed", "To",       "F"),
        ("From",       "unsubscribed", "None",     "FPU"),
        ("From+PO",    "unsubscribed", "None+PO",  "FPU"),
        ("Both",       "unsubscribed", "To",       "FPU"),
        ("None+A",     "unsubscribed", "None",     "P"),
        ("None+PO+A",  "unsubscribed", "None+PO",  "P"),
        ("To+A",       "unsubscribed", "To",       "P"),
    ];

    /// Inbound, RFC 6121 A.3.1–A.3.4 and §3.1.3, §3.3.3, §3.4. Flags:
    /// D deliver, P roster push, R auto-reply `subscribed`, S presence to
    /// contact, K store as pending-in, U unavailable to contact.
    #[rustfmt::skip]
    const INBOUND: &[(&str, &str, &str, &str)] = &[
        // A.3.1 subscribe ("no *" rows: server auto-replies `subscribed`).
        ("-",          "subscribe", "None+PI",    "DK"),
        ("None",       "subscribe", "None+PI",    "DK"),
        ("None+PO",    "subscribe", "None+PO+PI", "DK"),
        ("None+PI",    "subscribe", "=",          ""),
        ("None+PO+PI", "subscribe", "=",          ""),
        ("To",         "subscribe", "To+PI",      "DK"),
        ("To+PI",      "subscribe", "=",          ""),
        ("From",       "subscribe", "=",          "RS"),
        ("From+PO",    "subscribe", "=",          "RS"),
        ("Both",       "subscribe", "=",          "RS"),
        ("None+A",     "subscribe", "From",       "PRS"),
        ("None+PO+A",  "subscribe", "From+PO",    "PRS"),
        ("To+A",       "subscribe", "Both",       "PRS"),
        // A.3.2 unsubscribe.
        ("-",          "unsubscribe", "=",        ""),
        ("None",       "unsubscribe", "=",        ""),
        ("None+PO",    "unsubscribe", "=",        ""),
        ("None+PI",    "unsubscribe", "None",     "D"),
        ("None+PO+PI", "unsubscribe", "None+PO",  "D"),
        ("To",         "unsubscribe", "=",        ""),
        ("To+PI",      "unsubscribe", "To",       "D"),
        ("From",       "unsubscribe", "None",     "DPU"),
        ("From+PO",    "unsubscribe", "None+PO",  "DPU"),
        ("Both",       "unsubscribe", "To",       "DPU"),
        ("None+A",     "unsubscribe", "=",        ""),
        ("None+PO+A",  "unsubscribe", "=",        ""),
        ("To+A",       "unsubscribe", "=",        ""),
        // A.3.3 subscribed: ignored unless we asked.
        ("-",          "subscribed", "=",         ""),
        ("None",       "subscribed", "=",         ""),
        ("None+PO",    "subscribed", "To",        "DP"),
        ("None+PI",    "subscribed", "=",         ""),
        ("None+PO+PI", "subscribed", "To+PI",     "DP"),
        ("To",         "subscribed", "=",         ""),
        ("To+PI",      "subscribed", "=",         ""),
        ("From",       "subscribed", "=",         ""),
        ("From+PO",    "subscribed", "Both",      "DP"),
        ("Both",       "subscribed", "=",         ""),
        ("None+A",     "subscribed", "=",         ""),
        ("None+PO+A",  "subscribed", "To+A",      "DP"),
        ("To+A",       "subscribed", "=",         ""),
        // A.3.4 unsubscribed.
        ("-",          "unsubscribed", "=",       ""),
        ("None",       "unsubscribed", "=",       ""),
        ("None+PO",    "unsubscribed", "None",    "DP"),
        ("None+PI",    "unsubscribed", "=",       ""),
        ("None+PO+PI", "unsubscribed", "None+PI", "DP"),
        ("To",         "unsubscribed", "None",    "DP"),
        ("To+PI",      "unsubscribed", "None+PI", "DP"),
        ("From",       "unsubscribed", "=",       ""),
        ("From+PO",    "unsubscribed", "From",    "DP"),
        ("Both",       "unsubscribed", "From",    "DP"),
        ("None+A",     "unsubscribed", "=",       ""),
        ("None+PO+A",  "unsubscribed", "None+A",  "DP"),
        ("To+A",       "unsubscribed", "None+A",  "DP"),
    ];

    fn check_new_state(
        ctx: &str,
        before: Option<&RosterItem>,
        new_item: &Option<RosterItem>,
        want: &str,
    ) {
        if want == "=" {
            assert_eq!(*new_item, None, "{ctx}: expected no state change");
            return;
        }
        let got = new_item
            .as_ref()
            .unwrap_or_else(|| panic!("{ctx}: expected new state {want}, got no change"));
        assert_eq!(describe(got), want, "{ctx}: new state");
        assert_eq!(got.jid, C, "{ctx}: jid");
        if let Some(b) = before {
            assert_eq!((&got.name, &got.groups), (&b.name, &b.groups), "{ctx}");
        }
    }

    #[test]
    fn outbound_follows_every_row_of_appendix_a2_and_pre_approval() {
        assert_table_is_complete(OUTBOUND);
        for (st, kind, want, flags) in OUTBOUND {
            let before = state(st);
            let out = outbound(before.as_ref(), kind_of(kind), C);
            let ctx = format!("outbound {kind} in {st}");
            check_new_state(&ctx, before.as_ref(), &out.new_item, want);
            assert_eq!(out.forward, flags.contains('F'), "{ctx}: forward");
            assert_eq!(out.push, flags.contains('P'), "{ctx}: push");
            assert_eq!(
                out.send_unavailable_to_contact,
                flags.contains('U'),
                "{ctx}: unavailable"
            );
            assert_eq!(
                out.send_presence_to_contact,
                flags.contains('S'),
                "{ctx}: presence"
            );
            if let Some(it) = &out.new_item {
                assert!(it.listed, "{ctx}: outbound never unlists");
            }
        }
    }

    #[test]
    fn inbound_follows_every_row_of_appendix_a3_and_pre_approval() {
        assert_table_is_complete(INBOUND);
        for (st, kind, want, flags) in INBOUND {
            let before = state(st);
            let out = inbound(before.as_ref(), kind_of(kind), C);
            let ctx = format!("inbound {kind} in {st}");
            check_new_state(&ctx, before.as_ref(), &out.new_item, want);
            assert_eq!(out.deliver, flags.contains('D'), "{ctx}: deliver");
            assert_eq!(out.push, flags.contains('P'), "{ctx}: push");
            let want_reply = flags.contains('R').then_some(SubKind::Subscribed);
            assert_eq!(out.auto_reply, want_reply, "{ctx}: auto-reply");
            assert_eq!(
                out.send_presence_to_contact,
                flags.contains('S'),
                "{ctx}: presence"
            );
            assert_eq!(out.store_pending, flags.contains('K'), "{ctx}: pending");
            assert_eq!(
                out.send_unavailable_to_contact,
                flags.contains('U'),
                "{ctx}: unavailable"
            );
        }
    }

    #[test]
    fn a_subscribe_from_a_stranger_creates_an_unlisted_pending_record() {
        let out = inbound(None, SubKind::Subscribe, C);
        let it = out.new_item.expect("stored");
        assert!(!it.listed && it.pending_in);
        assert!(!out.push, "an unlisted item is never pushed");
    }

    #[test]
    fn a_withdrawn_request_from_a_stranger_leaves_a_void_record_to_delete() {
        let pending = inbound(None, SubKind::Subscribe, C).new_item.unwrap();
        let out = inbound(Some(&pending), SubKind::Unsubscribe, C);
        assert!(out.deliver);
        assert!(out.new_item.expect("changed").is_void());
        assert!(!out.push);

        let out = outbound(Some(&pending), SubKind::Unsubscribed, C);
        assert!(out.forward && !out.push);
        assert!(out.new_item.expect("changed").is_void());
    }

    #[test]
    fn approving_an_unlisted_request_adds_the_contact_to_the_roster() {
        let pending = inbound(None, SubKind::Subscribe, C).new_item.unwrap();
        let out = outbound(Some(&pending), SubKind::Subscribed, C);
        let it = out.new_item.expect("changed");
        assert!(it.listed && it.subscription == Subscription::From);
        assert!(out.push && out.forward && out.send_presence_to_contact);
    }

    #[test]
    fn subscribing_to_an_unlisted_requester_lists_it_with_both_pendings() {
        let pending = inbound(None, SubKind::Subscribe, C).new_item.unwrap();
        let out = outbound(Some(&pending), SubKind::Subscribe, C);
        let it = out.new_item.expect("changed");
        assert!(it.listed && it.ask && it.pending_in);
        assert!(out.push && out.forward);
    }

    #[test]
    fn a_pre_approval_is_consumed_by_the_first_request() {
        let pre = outbound(None, SubKind::Subscribed, C).new_item.unwrap();
        let first = inbound(Some(&pre), SubKind::Subscribe, C);
        let after = first.new_item.expect("changed");
        assert!(!after.approved && after.subscription == Subscription::From);
        // Unsubscribe then a fresh request: asks the user again.
        let gone = inbound(Some(&after), SubKind::Unsubscribe, C)
            .new_item
            .unwrap();
        let again = inbound(Some(&gone), SubKind::Subscribe, C);
        assert!(again.deliver && again.auto_reply.is_none());
    }

    #[test]
    fn name_and_groups_survive_every_transition() {
        for st in STATES.iter().filter(|s| **s != "-") {
            let mut before = state(st).unwrap();
            before.name = Some("Juliet".into());
            before.groups = vec!["Friends".into()];
            for kind in KINDS {
                for it in [
                    outbound(Some(&before), kind, C).new_item,
                    inbound(Some(&before), kind, C).new_item,
                ]
                .into_iter()
                .flatten()
                {
                    assert_eq!(it.name.as_deref(), Some("Juliet"));
                    assert_eq!(it.groups, ["Friends"]);
                }
            }
        }
    }

    #[test]
    fn sub_kind_round_trips_presence_types_and_rejects_others() {
        for kind in KINDS {
            assert_eq!(SubKind::from_type(kind.as_str()), Some(kind));
        }
        for other in ["", "probe", "unavailable", "error", "Subscribe"] {
            assert_eq!(SubKind::from_type(other), None);
        }
    }
}
