//! Subscriptions and the roster (RFC 6121 §2, §3) as the shard runs them:
//! the state machine of [`crate::roster::subscription`] both ways, the
//! automatic approval Federated and PublicVerified partners get, and roster
//! IQs (read by [`crate::roster::iq`]). Each turns into a roster write and
//! the effects that wait for its commit.

use std::sync::Arc;

use bytes::Bytes;

use super::{Effect, PushItem, RosterItem, Shard};
use crate::error::StanzaCondition;
use crate::jid::{BareJid, FullJid, Jid};
use crate::roster::iq::{self, RosterChange, RosterIq};
use crate::roster::presence::subscription_presence;
use crate::roster::subscription::{self, SubKind};
use crate::router::Envelope;
use crate::xml::build::error_reply;
use crate::xml::{Stanza, StanzaKind};

/// A subscription stanza from the user's bare JID to the contact's
/// (subscription stanzas never carry resources, RFC 6121 §3.1.2).
fn subscription_effect(kind: SubKind, user: &BareJid, contact: &BareJid) -> Option<Effect> {
    let s = subscription_presence(kind, user.as_str(), contact.as_str());
    Some(Effect::Route(Envelope::new(
        s,
        Jid::Bare(user.clone()),
        Jid::Bare(contact.clone()),
    )))
}

/// The presence a subscription change owes the contact.
fn presence_effects(
    user: &BareJid,
    contact: &BareJid,
    available: bool,
    unavailable: bool,
    effects: &mut Vec<Effect>,
) {
    for (wanted, unavailable) in [(available, false), (unavailable, true)] {
        if wanted {
            effects.push(Effect::PresenceTo {
                user: user.clone(),
                contact: contact.clone(),
                unavailable,
            });
        }
    }
}

/// A `[user_limits]` cap a new roster item would break.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Limit {
    RosterItems,
    InboundPerDomain,
}

impl Limit {
    fn text(self) -> &'static str {
        match self {
            Limit::RosterItems => "the roster is full",
            Limit::InboundPerDomain => {
                "too many subscriptions from this domain that the user has not returned"
            }
        }
    }
}

impl Shard {
    /// Whether `new_item`, an item the user's roster does not hold yet,
    /// would break a cap. Called only when a stanza would create an item,
    /// so existing contacts are never refused.
    fn over_limit(&mut self, user: &BareJid, new_item: &RosterItem) -> Option<Limit> {
        let limits = self.ctx.limits;
        let u = self.users.get_mut(user)?;
        let roster = u.roster.as_ref()?;
        if roster.len() >= limits.max_roster_items {
            return Some(Limit::RosterItems);
        }
        let domain = super::domain_of(&new_item.jid);
        if !super::is_inbound_only(new_item) || self.ctx.domains.iter().any(|d| d == domain) {
            return None;
        }
        let counts = u.inbound_by_domain.get_or_insert_with(|| {
            let mut counts = std::collections::HashMap::new();
            for i in roster.values().filter(|i| super::is_inbound_only(i)) {
                *counts
                    .entry(super::domain_of(&i.jid).to_owned())
                    .or_default() += 1;
            }
            counts
        });
        let inbound_only = counts.get(domain).copied().unwrap_or(0);
        (inbound_only >= limits.max_inbound_subscriptions_per_domain)
            .then_some(Limit::InboundPerDomain)
    }

    /// Refuses `env` for breaking `limit`: `<policy-violation/>` back to
    /// the sender, and the refusal counted.
    fn refuse_for_limit(&mut self, env: &Envelope, limit: Limit) {
        let m = &self.ctx.metrics;
        match limit {
            Limit::RosterItems => m.refused_roster_full.increment(1),
            Limit::InboundPerDomain => m.refused_inbound_subscriptions.increment(1),
        }
        self.bounce_with(env, StanzaCondition::PolicyViolation, Some(limit.text()));
    }

    /// The cap `new_item` would break, when it is new to the roster.
    fn creation_over_limit(
        &mut self,
        user: &BareJid,
        current: Option<&RosterItem>,
        new_item: Option<&RosterItem>,
    ) -> Option<Limit> {
        match (current, new_item) {
            (None, Some(item)) if !item.is_void() => self.over_limit(user, item),
            _ => None,
        }
    }

    pub(super) fn outbound_subscription(
        &mut self,
        from: FullJid,
        contact: BareJid,
        kind: SubKind,
        stanza: Stanza,
    ) {
        let user = from.bare().clone();
        if contact == user {
            return;
        }
        let current = self.item(&user, contact.as_str());
        let out = subscription::outbound(current.as_ref(), kind, contact.as_str());
        if let Some(limit) =
            self.creation_over_limit(&user, current.as_ref(), out.new_item.as_ref())
        {
            let env = Envelope::new(stanza, Jid::Full(from), Jid::Bare(contact));
            return self.refuse_for_limit(&env, limit);
        }
        let mut effects = Vec::new();
        if out.push
            && let Some(i) = out.new_item.as_ref()
        {
            effects.push(Effect::Push {
                user: user.clone(),
                item: PushItem::Set(i.clone()),
            });
        }
        if out.forward {
            effects.extend(subscription_effect(kind, &user, &contact));
        }
        presence_effects(
            &user,
            &contact,
            out.send_presence_to_contact,
            out.send_unavailable_to_contact,
            &mut effects,
        );
        self.commit_or_run(&user, out.new_item, effects);
    }

    pub(super) fn inbound_subscription(&mut self, env: Envelope, kind: SubKind) {
        let user = env.to.bare().clone();
        let contact = env.from.bare().clone();
        if !self.user_exists(&user) {
            if kind == SubKind::Subscribe {
                let reply =
                    subscription_presence(SubKind::Unsubscribed, user.as_str(), contact.as_str());
                self.route_generated(reply, Jid::Bare(user.clone()), Jid::Bare(contact));
            }
            return self.gc(&user);
        }
        let current = self.item(&user, contact.as_str());
        let out = subscription::inbound(current.as_ref(), kind, contact.as_str());
        if let Some(limit) =
            self.creation_over_limit(&user, current.as_ref(), out.new_item.as_ref())
        {
            self.refuse_for_limit(&env, limit);
            return self.gc(&user);
        }
        let mut effects = Vec::new();
        if out.push
            && let Some(i) = out.new_item.as_ref().filter(|i| i.listed)
        {
            effects.push(Effect::Push {
                user: user.clone(),
                item: PushItem::Set(i.clone()),
            });
        }
        if out.deliver {
            // Subscription stanzas carry bare JIDs (RFC 6121 §3.1.1).
            let bytes = subscription_presence(kind, contact.as_str(), user.as_str()).into_bytes();
            let avail: Vec<Arc<str>> = self
                .users
                .get(&user)
                .map(|u| {
                    u.resources
                        .iter()
                        .filter(|r| r.available)
                        .map(|r| Arc::from(r.handle.jid.resource()))
                        .collect()
                })
                .unwrap_or_default();
            for r in avail {
                effects.push(Effect::ToUser {
                    user: user.clone(),
                    resource: Some(r),
                    bytes: bytes.clone(),
                });
            }
        }
        if let Some(reply) = out.auto_reply {
            effects.extend(subscription_effect(reply, &user, &contact));
        }
        presence_effects(
            &user,
            &contact,
            out.send_presence_to_contact,
            out.send_unavailable_to_contact,
            &mut effects,
        );
        self.commit_or_run(&user, out.new_item, effects);
        self.gc(&user);
    }

    /// Federated and PublicVerified partners: a subscription request is
    /// approved on the user's behalf — the item gets `from`, the user's
    /// resources get a roster push, and the contact gets `subscribed` and
    /// the user's current presence.
    pub(super) fn auto_approve(&mut self, env: Envelope) {
        let user = env.to.bare().clone();
        let contact = env.from.bare().clone();
        if !self.user_exists(&user) {
            return self.inbound_subscription(env, SubKind::Subscribe);
        }
        let current = self.item(&user, contact.as_str());
        let inbound = subscription::inbound(current.as_ref(), SubKind::Subscribe, contact.as_str());
        let is_new = current.is_none();
        let after_request = inbound.new_item.or(current);
        let approve = subscription::outbound(
            after_request.as_ref(),
            SubKind::Subscribed,
            contact.as_str(),
        );
        let Some(item) = approve.new_item.or(after_request) else {
            return;
        };
        if let Some(limit) = is_new.then(|| self.over_limit(&user, &item)).flatten() {
            self.refuse_for_limit(&env, limit);
            return self.gc(&user);
        }
        let mut effects = vec![Effect::Push {
            user: user.clone(),
            item: PushItem::Set(item.clone()),
        }];
        effects.extend(subscription_effect(SubKind::Subscribed, &user, &contact));
        presence_effects(&user, &contact, true, false, &mut effects);
        self.store_item(&user, item, effects, Vec::new());
        self.gc(&user);
    }

    pub(super) fn roster_iq(&mut self, from: FullJid, stanza: Stanza) {
        let user = from.bare().clone();
        let id = stanza.id().map(|s| s.into_owned()).unwrap_or_default();
        let jid_str: Arc<str> = Arc::from(from.to_string());
        let reply_err = |cond: StanzaCondition| {
            error_reply("iq", Some(&id), Some(&jid_str), None, cond, None).into_bytes()
        };
        let req = match iq::parse_request(stanza.bytes()) {
            Ok(RosterIq::Get) => {
                let mut items: Vec<RosterItem> = self
                    .users
                    .get(&user)
                    .and_then(|u| u.roster.as_ref())
                    .map(|r| r.values().filter(|i| i.listed).cloned().collect())
                    .unwrap_or_default();
                items.sort_by(|a, b| a.jid.cmp(&b.jid));
                let xml = iq::roster_result_xml(&id, &jid_str, &items);
                self.write_to(
                    &user,
                    Some(from.resource()),
                    Bytes::from(xml).into(),
                    StanzaKind::Iq,
                );
                return;
            }
            Ok(RosterIq::Set(req)) => req,
            Err(cond) => {
                let b = reply_err(cond);
                self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
                return;
            }
        };
        let contact = BareJid::parse(&req.jid)
            .map(|j| j.as_str().to_string())
            .unwrap_or_default();
        let current = self.item(&user, &contact);
        let result = Effect::ToUser {
            user: user.clone(),
            resource: Some(Arc::from(from.resource())),
            bytes: Bytes::from(iq::set_result_xml(&id, &jid_str)),
        };
        let failed = vec![Effect::ToUser {
            user: user.clone(),
            resource: Some(Arc::from(from.resource())),
            bytes: reply_err(StanzaCondition::InternalServerError),
        }];
        match iq::apply_set(&user, current.as_ref(), &req) {
            Ok(RosterChange::Upsert(item))
                if let Some(limit) =
                    self.creation_over_limit(&user, current.as_ref(), Some(&item)) =>
            {
                self.ctx.metrics.refused_roster_full.increment(1);
                let b = error_reply(
                    "iq",
                    Some(&id),
                    Some(&jid_str),
                    None,
                    StanzaCondition::PolicyViolation,
                    Some(limit.text()),
                );
                self.write_to(
                    &user,
                    Some(from.resource()),
                    b.into_bytes().into(),
                    StanzaKind::Iq,
                );
            }
            Ok(RosterChange::Upsert(item)) => {
                let effects = vec![
                    Effect::Push {
                        user: user.clone(),
                        item: PushItem::Set(item.clone()),
                    },
                    result,
                ];
                self.store_item(&user, item, effects, failed);
            }
            Ok(RosterChange::NotFound) => {
                let b = reply_err(StanzaCondition::ItemNotFound);
                self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
            }
            Ok(change) => {
                let cancellations = change.cancellations();
                let RosterChange::Remove {
                    contact, had_from, ..
                } = change
                else {
                    return;
                };
                let mut effects = vec![
                    Effect::Push {
                        user: user.clone(),
                        item: PushItem::Remove(contact.clone()),
                    },
                    result,
                ];
                if let Ok(cj) = BareJid::parse(&contact) {
                    if had_from {
                        effects.push(Effect::PresenceTo {
                            user: user.clone(),
                            contact: cj.clone(),
                            unavailable: true,
                        });
                    }
                    for kind in cancellations {
                        effects.extend(subscription_effect(kind, &user, &cj));
                    }
                }
                let mut void = RosterItem::new(contact);
                void.listed = false;
                self.store_item(&user, void, effects, failed);
            }
            Err(cond) => {
                let b = reply_err(cond);
                self.write_to(&user, Some(from.resource()), b.into(), StanzaKind::Iq);
            }
        }
    }
}
