//! Presence (RFC 6121 §4): what a local session sends — initial and
//! updated broadcasts, directed presence, unavailable — and what the user's
//! presence owes contacts: probe answers, the presence a subscription
//! change sends, the periodic re-probe of remote contacts.
//!
//! The pure helpers at the top choose the targets; the `Shard` methods
//! below route and write.

use std::sync::Arc;

use super::{OfflineBatch, Resource, RosterItem, Shard, offer};
use crate::error::StanzaCondition;
use crate::jid::{BareJid, FullJid, Jid};
use crate::roster::presence::{
    parse_priority, probe_presence, subscription_presence, unavailable_presence,
};
use crate::roster::subscription::SubKind;
use crate::router::Envelope;
use crate::xml::child::child_text;
use crate::xml::ns::NS_CLIENT;
use crate::xml::{Stanza, StanzaBuilder, StanzaKind};

// ---- the rules ---------------------------------------------------------------

/// Presence from a local session, by what the shard does with it
/// (RFC 6121 §4.2–§4.6).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outbound {
    /// No `to`, no type: broadcast to subscribers and own sessions.
    Available,
    /// No `to`, `unavailable`: the session leaves.
    Unavailable,
    /// A subscription stanza to a contact.
    Subscription(SubKind),
    /// Anything else with a `to`: routed as it is.
    Directed,
    /// Probes (a client never sends them, §4.3), subscription stanzas
    /// without `to`, unknown types without `to`.
    Ignored,
}

impl Outbound {
    fn of(has_to: bool, ty: Option<&str>) -> Outbound {
        match (has_to, ty) {
            (_, Some("probe")) => Outbound::Ignored,
            (true, Some(t)) => {
                SubKind::from_type(t).map_or(Outbound::Directed, Outbound::Subscription)
            }
            (true, None) => Outbound::Directed,
            (false, None) => Outbound::Available,
            (false, Some("unavailable")) => Outbound::Unavailable,
            (false, Some(_)) => Outbound::Ignored,
        }
    }
}

/// Keeps the targets of a session's directed presence (§4.6): available
/// presence adds one, unavailable removes it, so going offline tells
/// exactly those still told we are here.
/// `false` when a new target would make more than `max` (the presence is
/// refused then, so the list stays an honest record of who was told).
fn note_directed(directed: &mut Vec<Jid>, to: &Jid, ty: Option<&str>, max: usize) -> bool {
    match ty {
        None if !directed.contains(to) => {
            if directed.len() >= max {
                return false;
            }
            directed.push(to.clone());
        }
        Some("unavailable") => directed.retain(|j| j != to),
        _ => {}
    }
    true
}

/// Who gets the user's presence broadcast (§4.2.2, §4.4.2): the contacts
/// with a subscription `from` (or `both`). Items whose JID no longer
/// parses are skipped.
fn subscribers<'a>(items: impl Iterator<Item = &'a RosterItem>) -> Arc<[Jid]> {
    items
        .filter(|i| i.subscription.has_from())
        .filter_map(|i| BareJid::parse(&i.jid).ok().map(Jid::Bare))
        .collect()
}

/// Who hears that a session left (§4.5.2): the subscribers, and the
/// targets of its directed presence that are not already among them.
fn unavailable_targets(subscribers: &[Jid], directed: &[Jid]) -> Vec<Jid> {
    let mut targets = subscribers.to_vec();
    for d in directed {
        if !targets.contains(d) {
            targets.push(d.clone());
        }
    }
    targets
}

/// The contacts whose presence the user gets (subscription `to` or
/// `both`): probed when the user comes online (§4.2.2).
fn probe_targets<'a>(items: impl Iterator<Item = &'a RosterItem>) -> Vec<String> {
    items
        .filter(|i| i.subscription.has_to())
        .map(|i| i.jid.clone())
        .collect()
}

/// The contacts whose subscription request waits for the user's answer:
/// redelivered at each login (§3.1.3).
fn pending_requests<'a>(items: impl Iterator<Item = &'a RosterItem>) -> Vec<String> {
    items
        .filter(|i| i.pending_in)
        .map(|i| i.jid.clone())
        .collect()
}

/// Whether `prober` may have the user's presence (§4.3.2): the user's own
/// account, or a contact with a subscription `from`.
fn may_probe(user: &BareJid, prober: &BareJid, item: Option<&RosterItem>) -> bool {
    prober == user || item.is_some_and(|i| i.subscription.has_from())
}

/// The `<priority/>` of a presence from a local session (0 when absent
/// or unreadable), read by a span scan of its children, not a tree.
fn priority_of(stanza: &Stanza) -> i8 {
    parse_priority(child_text(stanza, "priority", NS_CLIENT, NS_CLIENT).as_deref())
}

/// Unavailable presence from a resource, with no `to`: each recipient's
/// copy is addressed when it is routed.
pub(super) fn unavailable_from(jid: &str) -> Stanza {
    StanzaBuilder::with_capacity("presence", 48 + jid.len())
        .attr("type", "unavailable")
        .attr("from", jid)
        .build()
}

/// The stanza with our `from` stamped, kept whole (it is stored as the
/// resource's presence and fanned out), its spans moved, not re-scanned.
fn stamp(stanza: &Stanza, from: &str) -> Stanza {
    match stanza.from() {
        Some(f) if *f == *from => stanza.clone(),
        _ => stanza.spliced(Some(from), None),
    }
}

// ---- the shard's side ----------------------------------------------------------

impl Shard {
    /// Who gets the user's presence, cached (see `User::presence_subscribers`).
    fn presence_subscribers(&mut self, user: &BareJid) -> Arc<[Jid]> {
        let Some(u) = self.users.get_mut(user) else {
            return Arc::from([]);
        };
        if let Some(s) = &u.presence_subscribers {
            return s.clone();
        }
        let s = subscribers(u.roster.iter().flat_map(|r| r.values()));
        u.presence_subscribers = Some(s.clone());
        s
    }

    /// Re-probes the remote contacts of every online user.
    pub(super) fn refresh_probes(&mut self) {
        let mut probes = Vec::new();
        for (user, u) in &self.users {
            if !u.resources.iter().any(|r| r.available) {
                continue;
            }
            for c in probe_targets(u.roster.iter().flat_map(|r| r.values())) {
                let Ok(to) = BareJid::parse(&c) else { continue };
                if !self.ctx.router.is_local_domain(to.domain()) {
                    probes.push((user.clone(), c, to));
                }
            }
        }
        for (user, c, to) in probes {
            self.route_generated(
                probe_presence(user.as_str(), &c),
                Jid::Bare(user),
                Jid::Bare(to),
            );
        }
    }

    pub(super) fn outbound_presence(&mut self, from: FullJid, stanza: Stanza) {
        let to = match stanza.to() {
            Some(t) => match Jid::parse(&t) {
                Ok(j) => Some(j),
                Err(_) => {
                    let env = Envelope::new(
                        stanza.clone(),
                        Jid::Full(from.clone()),
                        Jid::Bare(from.bare().clone()),
                    );
                    self.bounce(&env, StanzaCondition::JidMalformed);
                    return;
                }
            },
            None => None,
        };
        let what = Outbound::of(to.is_some(), stanza.type_().as_deref());
        match (what, to) {
            (Outbound::Subscription(kind), Some(to)) => {
                self.outbound_subscription(from, to.bare().clone(), kind, stanza)
            }
            (Outbound::Available, _) => self.broadcast_available(from, stanza),
            (Outbound::Unavailable, _) => {
                let bare = from.bare().clone();
                let res = self.users.get_mut(&bare).and_then(|u| {
                    let r = u.resources.iter_mut().find(|r| r.handle.jid == from)?;
                    let snapshot = Resource {
                        handle: r.handle.clone(),
                        priority: r.priority,
                        available: r.available,
                        presence: r.presence.take(),
                        directed: std::mem::take(&mut r.directed),
                    };
                    r.available = false;
                    Some(snapshot)
                });
                if let Some(res) = res {
                    let presence = stamp(&stanza, &res.handle.jid_str);
                    self.broadcast_unavailable(&bare, &res, presence);
                }
            }
            (Outbound::Directed, Some(to)) => {
                // Remembered, so the target hears when we leave.
                let max = self.ctx.limits.max_directed_presence;
                let noted = self
                    .users
                    .get_mut(from.bare())
                    .and_then(|u| u.resources.iter_mut().find(|r| r.handle.jid == from))
                    .is_none_or(|r| {
                        note_directed(&mut r.directed, &to, stanza.type_().as_deref(), max)
                    });
                let env = Envelope::new(stanza, Jid::Full(from), to);
                if noted {
                    self.ctx.router.route_nowait(env);
                } else {
                    self.ctx.metrics.refused_directed_presence.increment(1);
                    self.bounce_with(
                        &env,
                        StanzaCondition::PolicyViolation,
                        Some("too many directed presences: send unavailable to some first"),
                    );
                }
            }
            _ => {}
        }
    }

    fn broadcast_available(&mut self, from: FullJid, stanza: Stanza) {
        let bare = from.bare().clone();
        let priority = priority_of(&stanza);
        let Some(r) = self
            .users
            .get_mut(&bare)
            .and_then(|u| u.resources.iter_mut().find(|r| r.handle.jid == from))
        else {
            return;
        };
        let jid_str = r.handle.jid_str.clone();
        let presence = stamp(&stanza, &jid_str);
        let was_available = r.available;
        r.available = true;
        r.priority = priority;
        r.presence = Some(presence.clone());
        // To every contact with a subscription from us.
        let targets = self.presence_subscribers(&bare).to_vec();
        self.ctx
            .router
            .broadcast_nowait(&presence, &Jid::Full(from.clone()), targets);
        // To all of our own available resources, this one included (RFC 6121 §4.2.2).
        self.echo_to_own_resources(&bare, &presence);
        if !was_available {
            self.initial_presence(&bare, &from, &jid_str, priority);
        }
    }

    /// What a session's first available presence starts (§4.2.2, §3.1.3,
    /// XEP-0160).
    fn initial_presence(&mut self, bare: &BareJid, from: &FullJid, jid_str: &str, priority: i8) {
        let (subscribed_to, pending_in) = match self.users.get(bare).and_then(|u| u.roster.as_ref())
        {
            Some(r) => (probe_targets(r.values()), pending_requests(r.values())),
            None => (Vec::new(), Vec::new()),
        };
        // Probe contacts we are subscribed to, and bring ourselves up to
        // date with our other resources' presence.
        for c in &subscribed_to {
            if let Ok(to) = BareJid::parse(c) {
                self.route_generated(
                    probe_presence(bare.as_str(), c),
                    Jid::Bare(bare.clone()),
                    Jid::Bare(to),
                );
            }
        }
        if let Some(u) = self.users.get(bare)
            && let Some(this) = u.resources.iter().find(|r| r.handle.jid == *from)
        {
            for other in u
                .resources
                .iter()
                .filter(|r| r.available && r.handle.jid != *from)
            {
                if let Some(p) = &other.presence {
                    let frame = p.splice(None, Some(jid_str));
                    offer(this, frame, StanzaKind::Presence, &self.ctx.metrics);
                }
            }
        }
        // Subscription requests that waited for us (RFC 6121 §3.1.3).
        for c in &pending_in {
            let s = subscription_presence(SubKind::Subscribe, c, bare.as_str());
            self.write_to(bare, Some(from.resource()), s.into(), StanzaKind::Presence);
        }
        // Offline messages go to the first resource that becomes available
        // with a non-negative priority (XEP-0160).
        if priority >= 0 {
            self.read_offline_for(bare, from);
        }
    }

    /// Reads the user's offline messages for `resource`, unless a read is
    /// already out.
    pub(super) fn read_offline_for(&mut self, bare: &BareJid, resource: &FullJid) {
        let Some(u) = self.users.get_mut(bare) else {
            return;
        };
        if u.flushing {
            return;
        }
        u.flushing = true;
        let me = self.me.clone();
        let user = bare.clone();
        let resource = resource.clone();
        self.ctx.writer.read_offline(
            bare.clone(),
            Box::new(move |result| {
                let _ = me
                    .tell(OfflineBatch {
                        user,
                        resource,
                        result: result.map_err(|e| e.to_string()),
                    })
                    .blocking_send();
            }),
        );
    }

    /// `res` has gone unavailable (it may already be removed from the user).
    pub(super) fn broadcast_unavailable(
        &mut self,
        bare: &BareJid,
        res: &Resource,
        presence: Stanza,
    ) {
        let from = Jid::Full(res.handle.jid.clone());
        let targets = unavailable_targets(&self.presence_subscribers(bare), &res.directed);
        self.ctx.router.broadcast_nowait(&presence, &from, targets);
        self.echo_to_own_resources(bare, &presence);
        // The leaving resource gets its own unavailable too, as a clean echo.
        if res.available {
            let _ = res
                .handle
                .out
                .try_send(presence.splice(None, Some(&res.handle.jid_str)));
        }
    }

    /// A user's presence to each of the user's available resources, each
    /// copy addressed to its resource (RFC 6121 §4.2.2, §4.5.2).
    fn echo_to_own_resources(&mut self, bare: &BareJid, presence: &Stanza) {
        let Some(u) = self.users.get(bare) else {
            return;
        };
        for r in u.resources.iter().filter(|r| r.available) {
            let frame = presence.splice(None, Some(&r.handle.jid_str));
            offer(r, frame, StanzaKind::Presence, &self.ctx.metrics);
        }
    }

    pub(super) fn answer_probe(&mut self, env: Envelope) {
        let user = env.to.bare().clone();
        let prober = env.from.bare();
        if may_probe(&user, prober, self.roster_item(&user, prober.as_str())) {
            self.presence_to_contact_jid(&user, &env.from, false);
        }
        self.gc(&user);
    }

    /// The user's current presence from each available resource, or one
    /// unavailable presence when none is available.
    pub(super) fn presence_to_contact(
        &mut self,
        user: &BareJid,
        contact: &BareJid,
        unavailable: bool,
    ) {
        self.presence_to_contact_jid(user, &Jid::Bare(contact.clone()), unavailable)
    }

    fn presence_to_contact_jid(&mut self, user: &BareJid, to: &Jid, unavailable: bool) {
        let to_str = to.to_string();
        let mut sent = false;
        let current: Vec<(Arc<str>, Option<Stanza>)> = self
            .users
            .get(user)
            .map(|u| {
                u.resources
                    .iter()
                    .filter(|r| r.available)
                    .map(|r| (r.handle.jid_str.clone(), r.presence.clone()))
                    .collect()
            })
            .unwrap_or_default();
        for (jid, presence) in current {
            let s = match (presence, unavailable) {
                (Some(p), false) => p,
                _ => unavailable_presence(&jid, &to_str),
            };
            if let Ok(from) = Jid::parse(&jid) {
                // The stored presence has no `to`; the recipient's shard
                // addresses it.
                self.ctx
                    .router
                    .route_nowait(Envelope::new(s, from, to.clone()));
                sent = true;
            }
        }
        if !sent {
            self.route_generated(
                unavailable_presence(user.as_str(), &to_str),
                Jid::Bare(user.clone()),
                to.clone(),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roster::Subscription;
    use bytes::Bytes;

    fn item(jid: &str, sub: Subscription) -> RosterItem {
        let mut i = RosterItem::new(jid);
        i.listed = true;
        i.subscription = sub;
        i
    }

    fn jid(s: &str) -> Jid {
        Jid::parse(s).unwrap()
    }

    fn bare(s: &str) -> BareJid {
        BareJid::parse(s).unwrap()
    }

    fn stanza(s: &'static str) -> Stanza {
        Stanza::parse(Bytes::from_static(s.as_bytes())).unwrap()
    }

    fn roster() -> Vec<RosterItem> {
        let mut pending = RosterItem::new("asking@example.net");
        pending.pending_in = true;
        vec![
            item("none@example.net", Subscription::None),
            item("to@example.net", Subscription::To),
            item("from@example.net", Subscription::From),
            item("both@example.org", Subscription::Both),
            pending,
        ]
    }

    #[test]
    fn presence_without_to_or_type_is_a_broadcast_and_unavailable_a_leave() {
        assert_eq!(Outbound::of(false, None), Outbound::Available);
        assert_eq!(
            Outbound::of(false, Some("unavailable")),
            Outbound::Unavailable
        );
    }

    #[test]
    fn presence_with_a_to_is_directed_unless_it_is_a_subscription_stanza() {
        for ty in [None, Some("unavailable"), Some("error"), Some("bogus")] {
            assert_eq!(Outbound::of(true, ty), Outbound::Directed, "{ty:?}");
        }
        for (ty, kind) in [
            ("subscribe", SubKind::Subscribe),
            ("subscribed", SubKind::Subscribed),
            ("unsubscribe", SubKind::Unsubscribe),
            ("unsubscribed", SubKind::Unsubscribed),
        ] {
            assert_eq!(Outbound::of(true, Some(ty)), Outbound::Subscription(kind));
        }
    }

    #[test]
    fn s4_3_probes_from_a_client_and_untargeted_subscriptions_are_ignored() {
        for has_to in [false, true] {
            assert_eq!(Outbound::of(has_to, Some("probe")), Outbound::Ignored);
        }
        for ty in ["subscribe", "subscribed", "error", "bogus"] {
            assert_eq!(Outbound::of(false, Some(ty)), Outbound::Ignored, "{ty}");
        }
    }

    #[test]
    fn s4_6_directed_presence_is_remembered_until_unavailable_is_sent() {
        let muc = jid("room@muc.example.net/me");
        let other = jid("peer@example.net");
        let mut directed = Vec::new();
        assert!(note_directed(&mut directed, &muc, None, 10));
        assert!(note_directed(&mut directed, &muc, None, 10));
        assert!(note_directed(&mut directed, &other, None, 10));
        assert_eq!(directed, [muc.clone(), other.clone()], "each target once");
        note_directed(&mut directed, &other, Some("error"), 10);
        assert_eq!(directed.len(), 2, "other types change nothing");
        note_directed(&mut directed, &muc, Some("unavailable"), 10);
        assert_eq!(directed, [other]);
    }

    #[test]
    fn a_new_directed_target_past_the_limit_is_refused_and_known_ones_still_pass() {
        let (a, b, c) = (jid("a@x.test"), jid("b@x.test"), jid("c@x.test"));
        let mut directed = Vec::new();
        assert!(note_directed(&mut directed, &a, None, 2));
        assert!(note_directed(&mut directed, &b, None, 2));
        assert!(!note_directed(&mut directed, &c, None, 2), "a third target");
        assert!(
            note_directed(&mut directed, &a, None, 2),
            "an update to a known one"
        );
        assert!(note_directed(&mut directed, &a, Some("unavailable"), 2));
        assert!(note_directed(&mut directed, &c, None, 2), "room again");
        assert_eq!(directed, [b, c]);
    }

    #[test]
    fn s4_2_2_the_broadcast_goes_to_contacts_with_a_subscription_from() {
        let mut items = roster();
        items.push(item("@", Subscription::Both));
        let got = subscribers(items.iter());
        assert_eq!(
            &got[..],
            [jid("from@example.net"), jid("both@example.org")],
            "to, none, pending and unparsable items get nothing"
        );
    }

    #[test]
    fn s4_5_2_unavailable_goes_to_subscribers_and_directed_targets_once_each() {
        let subs = [jid("a@example.net"), jid("b@example.net")];
        let directed = [
            jid("room@muc.example.net/me"),
            jid("b@example.net"),
            jid("c@example.org"),
        ];
        assert_eq!(
            unavailable_targets(&subs, &directed),
            [
                jid("a@example.net"),
                jid("b@example.net"),
                jid("room@muc.example.net/me"),
                jid("c@example.org"),
            ]
        );
        assert_eq!(unavailable_targets(&[], &[]), Vec::<Jid>::new());
    }

    #[test]
    fn s4_2_2_coming_online_probes_contacts_with_a_subscription_to() {
        assert_eq!(
            probe_targets(roster().iter()),
            ["to@example.net", "both@example.org"]
        );
    }

    #[test]
    fn s3_1_3_pending_requests_are_redelivered_at_login() {
        assert_eq!(pending_requests(roster().iter()), ["asking@example.net"]);
    }

    #[test]
    fn s4_3_2_only_the_user_and_contacts_with_from_may_probe() {
        let user = bare("juliet@example.com");
        let romeo = bare("romeo@example.net");
        assert!(may_probe(&user, &user, None), "the user's own account");
        assert!(!may_probe(&user, &romeo, None), "a stranger");
        for (sub, want) in [
            (Subscription::None, false),
            (Subscription::To, false),
            (Subscription::From, true),
            (Subscription::Both, true),
        ] {
            let i = item("romeo@example.net", sub);
            assert_eq!(may_probe(&user, &romeo, Some(&i)), want, "{sub:?}");
        }
    }

    #[test]
    fn the_priority_is_read_from_the_presence() {
        for (xml, want) in [
            ("<presence/>", 0),
            ("<presence><priority>5</priority></presence>", 5),
            ("<presence><priority> -3 </priority></presence>", -3),
            ("<presence><priority>500</priority></presence>", 127),
            ("<presence><priority>high</priority></presence>", 0),
            ("<presence><priority>-200</priority></presence>", -128),
            ("<presence><priority>\n\t7\n</priority></presence>", 7),
            (
                "<presence><priority xmlns='urn:x'>9</priority></presence>",
                0,
            ),
            (
                "<presence xmlns:c='jabber:client'><c:priority>4</c:priority></presence>",
                4,
            ),
            ("<presence><x><priority>9</priority></x></presence>", 0),
            ("<presence><priority/></presence>", 0),
        ] {
            assert_eq!(priority_of(&stanza(xml)), want, "{xml}");
        }
    }

    #[test]
    fn our_from_is_stamped_unless_the_client_already_wrote_it() {
        let own = stanza("<presence from='j@example.com/a'><show>away</show></presence>");
        let kept = stamp(&own, "j@example.com/a");
        assert_eq!(kept.bytes().as_ptr(), own.bytes().as_ptr());
        let none = stanza("<presence><show>away</show></presence>");
        let s = stamp(&none, "j@example.com/a");
        assert_eq!(s.from().as_deref(), Some("j@example.com/a"));
        assert_eq!(
            &s.bytes()[..],
            b"<presence from='j@example.com/a'><show>away</show></presence>"
        );
        let forged = stanza("<presence from='mallory@example.com/x' type='unavailable'/>");
        let s = stamp(&forged, "j@example.com/a");
        assert_eq!(s.from().as_deref(), Some("j@example.com/a"));
        assert_eq!(s.type_().as_deref(), Some("unavailable"));
    }

    #[test]
    fn the_unavailable_of_a_leaving_session_has_its_escaped_full_jid_and_no_to() {
        let old = "<presence type='unavailable' from='j@example.com/a&apos;b'/>";
        unavailable_from("j@example.com/a'b").assert_same_as(&stanza(old));
    }
}
