//! Stanzas for a local user of the shard: admission of remote senders (the
//! partner-type table of [`crate::policy::admit`]), then the RFC 6121
//! §8.5 delivery rules of [`crate::roster::delivery`] applied to the
//! user's sessions, offline storage (XEP-0160), and what a stanza needs
//! from storage before any of that can run.
//!
//! The pure helpers at the top decide; the `Shard` methods below do the
//! writing, bouncing and storing.

use super::{
    InFlight, Need, OfflineBatch, OfflineRefusedMsg, OfflineWritten, Resource, Shard, Unsent, offer,
};
use crate::error::StanzaCondition;
use crate::events::router::{
    OfflineConfirmed, OfflineDelivered, OfflineRefused, PresenceShed, Shed, ShedQueue, StoreFailed,
    StoreOp, UnsentKept, UserQueueFull,
};
use crate::jid::{BareJid, FullJid, Jid};
use crate::policy::PartnerType;
use crate::policy::admit::{
    self, Admission, Case, Direction, Kind, Reason, Refusal, Reply, RosterState, UserAccess,
};
use crate::roster::delivery::{self, Delivery, MessageType, ResourceView};
use crate::roster::offline::with_delay;
use crate::roster::presence::subscription_presence;
use crate::roster::subscription::SubKind;
use crate::router::Envelope;
use crate::storage::{MAX_PENDING_BYTES, StoreError, WriteDone, WriteOp};

/// How long a session must stay up after its offline messages were written
/// to its socket before they are deleted from storage: a connection cut
/// sooner may not have delivered them, and they are sent again next time.
pub(super) const OFFLINE_GRACE: std::time::Duration = std::time::Duration::from_secs(3);
/// The longest the confirmation waits for the session's writer.
const OFFLINE_WRITE_WAIT: std::time::Duration = std::time::Duration::from_secs(120);
use crate::xml::{Frame, StanzaKind};

// ---- the rules ---------------------------------------------------------------

/// What a stanza for a local user needs from storage before it can be
/// handled: whether the account exists (for messages and IQs to a full
/// JID, which bounce for a missing user), the roster (for subscriptions
/// and probes, and for admitting a sender whose partner type depends on
/// it). Presence availability needs neither: it only goes to sessions.
fn need(kind: Kind, to_resource: bool, remote: Option<PartnerType>) -> Need {
    let own = match kind {
        Kind::Message | Kind::MessageError => Need::EXISTS,
        Kind::IqRequest | Kind::IqResponse if to_resource => Need::EXISTS,
        Kind::Probe => Need::ROSTER,
        Kind::Subscription(_) => Need::BOTH,
        _ => Need::NONE,
    };
    match remote {
        Some(p) if admit::consults_roster(Direction::Inbound, Some(p)) => own.or(Need::ROSTER),
        _ => own,
    }
}

/// [`need`] for an envelope.
pub(super) fn need_of(env: &Envelope) -> Need {
    need(
        Kind::of_stanza(&env.stanza),
        env.to.resource().is_some(),
        env.remote,
    )
}

/// What becomes of a stanza that finds its user's queue full (a flood
/// while a storage read is out): what expects an answer is refused with
/// `resource-constraint`, the rest dropped. Never silently lost: a message
/// either waits or bounces.
pub(super) fn on_overflow(kind: Kind) -> Delivery {
    match kind {
        Kind::Message | Kind::IqRequest => Delivery::Bounce(StanzaCondition::ResourceConstraint),
        _ => Delivery::Drop,
    }
}

/// The sessions as the delivery rules see them, in binding order.
fn views(resources: &[Resource]) -> Vec<ResourceView<'_>> {
    resources
        .iter()
        .map(|r| ResourceView {
            resource: r.handle.jid.resource(),
            priority: r.priority,
            available: r.available,
        })
        .collect()
}

/// Where a message goes (RFC 6121 §8.5.2, §8.5.3): to its resource, or
/// by priority when sent to the bare JID or to a resource that is gone.
fn message_action(
    exists: bool,
    resources: &[ResourceView],
    to: Option<&str>,
    ty: MessageType,
) -> Delivery {
    match to {
        Some(r) => delivery::message_to_full(exists, resources, r, ty),
        None => delivery::message_to_bare(exists, resources, ty),
    }
}

/// Where an IQ goes. One to the bare JID is for the server to answer on
/// the user's behalf (§8.5.2.1.3); none is handled there, so a request
/// gets `service-unavailable`.
fn iq_action(
    exists: bool,
    resources: &[ResourceView],
    to: Option<&str>,
    is_request: bool,
) -> Delivery {
    match to {
        Some(r) => delivery::iq_to_full(exists, resources, r, is_request),
        None if is_request => Delivery::Bounce(StanzaCondition::ServiceUnavailable),
        None => Delivery::Drop,
    }
}

/// Where availability presence (no type, `unavailable`, `error`) goes.
fn presence_action(resources: &[ResourceView], to: Option<&str>) -> Delivery {
    match to {
        Some(r) => delivery::presence_to_full(resources, r),
        None => delivery::presence_to_bare(resources),
    }
}

/// Presence for a user, by what the shard does with it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum InboundPresence {
    /// To the user's sessions.
    Availability,
    Probe,
    Subscription(SubKind),
    /// A type RFC 6121 does not define.
    Ignored,
}

impl InboundPresence {
    fn of(ty: Option<&str>) -> InboundPresence {
        match ty {
            None | Some("unavailable") | Some("error") => InboundPresence::Availability,
            Some("probe") => InboundPresence::Probe,
            Some(t) => SubKind::from_type(t).map_or(InboundPresence::Ignored, |k| {
                InboundPresence::Subscription(k)
            }),
        }
    }
}

// ---- the shard's side ----------------------------------------------------------

impl Shard {
    pub(super) fn deliver(&mut self, env: Envelope) {
        self.ctx
            .metrics
            .route_seconds
            .record(env.at.elapsed().as_secs_f64());
        if let Some(partner) = env.remote {
            match self.admit_inbound(&env, partner) {
                Admission::Deliver | Admission::StripStatus => {}
                Admission::AutoApprove => return self.auto_approve(env),
                Admission::Refuse(r) => return self.refuse_inbound(&env, r),
            }
        }
        match env.kind() {
            StanzaKind::Message => self.deliver_message(env),
            StanzaKind::Presence => self.deliver_presence(env),
            StanzaKind::Iq => self.deliver_iq(env),
            StanzaKind::Other => {}
        }
    }

    /// The partner-type and access rules for a stanza from a remote user.
    fn admit_inbound(&self, env: &Envelope, partner: PartnerType) -> Admission {
        let user = env.to.bare();
        let roster = if admit::consults_roster(Direction::Inbound, Some(partner)) {
            RosterState::of(self.roster_item(user, env.from.bare().as_str()))
        } else {
            RosterState::NotAdded
        };
        admit::admit(Case {
            direction: Direction::Inbound,
            partner: Some(partner),
            access: UserAccess::of(self.ctx.policy.get().access(user)),
            roster,
            kind: Kind::of_stanza(&env.stanza),
        })
    }

    fn refuse_inbound(&mut self, env: &Envelope, r: Refusal) {
        let m = &self.ctx.metrics;
        match r.reason {
            Reason::AccessPolicy => &m.refused_access_in,
            Reason::UnlistedDomain => &m.refused_unlisted_in,
            Reason::UnverifiedMessage => &m.refused_unverified_message,
            Reason::UnverifiedSubscribe => &m.refused_unverified_subscribe,
            Reason::UnverifiedOther => &m.refused_unverified_other,
        }
        .increment(1);
        match r.reply {
            Reply::Nothing => {}
            Reply::Error(cond, text) => self.bounce_with(env, cond, text),
            Reply::Unsubscribed => {
                let user = env.to.bare();
                let contact = env.from.bare();
                let s =
                    subscription_presence(SubKind::Unsubscribed, user.as_str(), contact.as_str());
                let mut e = Envelope::new(s, Jid::Bare(user.clone()), Jid::Bare(contact.clone()));
                e.on_behalf = true;
                self.ctx.router.route_nowait(e);
            }
        }
    }

    /// A stanza that found its user's queue full.
    pub(super) fn overflow(&mut self, env: Envelope) {
        match on_overflow(Kind::of_stanza(&env.stanza)) {
            Delivery::Bounce(cond) => self.bounce(&env, cond),
            _ if env.kind() == StanzaKind::Presence => PresenceShed.emit(&self.ctx.metrics),
            _ => UserQueueFull { to: &env.to }.emit(),
        }
    }

    /// Writes `frame` to the user's resources at `idx`; false when none
    /// took it.
    fn offer_each(&self, env: &Envelope, idx: &[usize], frame: &Frame, kind: StanzaKind) -> bool {
        let Some(u) = self.users.get(env.to.bare()) else {
            return false;
        };
        let mut any = false;
        for r in idx.iter().filter_map(|&i| u.resources.get(i)) {
            any |= offer(r, frame.clone(), kind, &self.ctx.metrics);
        }
        any
    }

    fn deliver_message(&mut self, env: Envelope) {
        let ty = MessageType::from_attr(env.stanza.type_().as_deref());
        let action = match self.users.get_mut(env.to.bare()) {
            Some(u) if u.flushing => return u.held.push(env),
            Some(u) => message_action(u.exists(), &views(&u.resources), env.to.resource(), ty),
            None => message_action(false, &[], env.to.resource(), ty),
        };
        match action {
            Delivery::ToResources(idx) => {
                // A session that could not take it is closing: keep the
                // message for the next one.
                if !self.offer_each(&env, &idx, &env.frame(), StanzaKind::Message) {
                    self.store_offline(&env);
                }
            }
            Delivery::Offline => self.store_offline(&env),
            Delivery::Bounce(cond) => self.bounce(&env, cond),
            Delivery::Drop => {}
        }
    }

    fn store_offline(&mut self, env: &Envelope) {
        let user = env.to.bare();
        let stamped = with_delay(&env.frame(), user.domain());
        let op = vec![WriteOp::PushOffline {
            user: user.clone(),
            stanza: stamped,
        }];
        // A full quota or a failed write is known only once the write is
        // tried: the sender's answer comes back through the shard. Counted
        // as stored once committed.
        let (me, metrics) = (self.me.clone(), self.ctx.metrics.clone());
        let refused = Envelope::new(env.stanza.clone(), env.from.clone(), env.to.clone());
        let done: WriteDone = Box::new(move |r| match r {
            Ok(()) => metrics.offline_stored.increment(1),
            Err(error) => {
                let _ = me
                    .tell(OfflineRefusedMsg {
                        env: refused,
                        error,
                    })
                    .blocking_send();
            }
        });
        // Offline storage slower than the flood: refuse, never queue
        // without bound.
        match self
            .ctx
            .writer
            .try_submit(op, Some(done), MAX_PENDING_BYTES)
        {
            Ok(()) => {}
            Err(_) => {
                Shed {
                    queue: ShedQueue::Store,
                    kind: StanzaKind::Message,
                }
                .emit(&self.ctx.metrics);
                self.bounce(env, StanzaCondition::ResourceConstraint);
            }
        }
    }

    fn deliver_iq(&mut self, env: Envelope) {
        let is_request = matches!(env.stanza.type_().as_deref(), Some("get") | Some("set"));
        let to = env.to.resource();
        let action = match self.users.get(env.to.bare()) {
            Some(u) => iq_action(u.exists(), &views(&u.resources), to, is_request),
            None => iq_action(false, &[], to, is_request),
        };
        match action {
            Delivery::ToResources(idx) => {
                if !self.offer_each(&env, &idx, &env.frame(), StanzaKind::Iq) && is_request {
                    self.bounce(&env, StanzaCondition::ServiceUnavailable);
                }
            }
            Delivery::Bounce(cond) => self.bounce(&env, cond),
            Delivery::Offline | Delivery::Drop => {}
        }
    }

    fn deliver_presence(&mut self, env: Envelope) {
        let what = InboundPresence::of(env.stanza.type_().as_deref());
        match what {
            InboundPresence::Subscription(kind) => self.inbound_subscription(env, kind),
            InboundPresence::Probe => self.answer_probe(env),
            InboundPresence::Availability => {
                let action = match self.users.get(env.to.bare()) {
                    Some(u) => presence_action(&views(&u.resources), env.to.resource()),
                    None => Delivery::Drop,
                };
                if let Delivery::ToResources(idx) = action {
                    self.offer_each(&env, &idx, &env.frame(), StanzaKind::Presence);
                }
            }
            InboundPresence::Ignored => {}
        }
    }

    /// Offline messages read for the resource that came online; then the
    /// live messages that waited behind them. The messages stay stored
    /// until the session has written them and survived a grace
    /// ([`OFFLINE_GRACE`]): a crash or a cut connection before that loses
    /// none of them (the next session gets them again).
    pub(super) fn offline_batch(&mut self, m: OfflineBatch) {
        let (held, skip) = match self.users.get_mut(&m.user) {
            Some(u) => {
                u.flushing = false;
                (
                    std::mem::take(&mut u.held),
                    u.offline_in_flight.map(|f| f.upto),
                )
            }
            None => (Vec::new(), None),
        };
        match m.result {
            Ok(msgs) => {
                let msgs: Vec<_> = msgs
                    .into_iter()
                    .filter(|o| skip.is_none_or(|s| o.seq > s))
                    .collect();
                let n = msgs.len() as u64;
                let mut delivered = 0;
                let mut upto = None;
                for o in msgs {
                    // A resource gone meanwhile leaves the rest stored, in
                    // order, for the next one.
                    if !self.write_to(
                        &m.user,
                        Some(m.resource.resource()),
                        o.stanza.into(),
                        StanzaKind::Message,
                    ) {
                        break;
                    }
                    delivered += 1;
                    upto = Some(o.seq);
                }
                if let Some(upto) = upto {
                    self.confirm_offline(&m.user, &m.resource, upto, delivered);
                }
                OfflineDelivered {
                    user: &m.user,
                    n,
                    delivered,
                }
                .emit(&self.ctx.metrics);
            }
            Err(e) => StoreFailed {
                op: StoreOp::ReadOffline,
                user: &m.user,
                error: &e,
            }
            .emit(),
        }
        // Already admitted and counted: straight to delivery.
        for env in held {
            self.deliver_message(env);
        }
        self.gc(&m.user);
    }

    /// Delivers again the messages a closing session never wrote: chat and
    /// normal ones, which RFC 6121 §8.5.2 would store for an offline user;
    /// the rest of what it never wrote (presence, IQ results, groupchat)
    /// has no later use.
    pub(super) fn unsent(&mut self, m: Unsent) {
        let mut kept = 0;
        for frame in m.frames {
            let Ok(stanza) = frame.to_stanza() else {
                continue;
            };
            if stanza.kind() != StanzaKind::Message
                || !matches!(
                    MessageType::from_attr(stanza.type_().as_deref()),
                    MessageType::Normal | MessageType::Chat
                )
            {
                continue;
            }
            let from = stanza
                .from()
                .and_then(|f| Jid::parse(&f).ok())
                .unwrap_or_else(|| Jid::Bare(m.jid.bare().clone()));
            // As for a message to a resource that is gone: to the user's
            // other sessions by priority, or offline (RFC 6121 §8.5.3.2.1).
            let env = Envelope::new(stanza, from, Jid::Bare(m.jid.bare().clone()));
            self.deliver_message(env);
            kept += 1;
        }
        UnsentKept {
            user: m.jid.bare(),
            n: kept,
        }
        .emit();
    }

    /// Waits (off the shard) until the session has written everything
    /// queued for it, then for [`OFFLINE_GRACE`], then tells the shard.
    fn confirm_offline(&mut self, user: &BareJid, resource: &FullJid, upto: u64, n: u64) {
        let Some(u) = self.users.get_mut(user) else {
            return;
        };
        let Some(r) = u.resources.iter().find(|r| r.handle.jid == *resource) else {
            return;
        };
        let (me, user, session) = (self.me.clone(), user.clone(), r.handle.id);
        let written = r.handle.out.when_written();
        u.offline_in_flight = Some(InFlight {
            upto,
            n,
            session,
            closed_by_client: false,
        });
        tokio::spawn(async move {
            // The writer gives up on a peer that does not read after
            // write_timeout, which ends the wait too.
            let written = matches!(
                tokio::time::timeout(OFFLINE_WRITE_WAIT, written).await,
                Ok(Ok(()))
            );
            if written {
                tokio::time::sleep(OFFLINE_GRACE).await;
            }
            let _ = me
                .tell(OfflineWritten {
                    user,
                    session,
                    upto,
                    written,
                })
                .await;
        });
    }

    /// Deletes the offline messages a session received and survived.
    pub(super) fn offline_written(&mut self, m: OfflineWritten) {
        let Some(u) = self.users.get_mut(&m.user) else {
            return;
        };
        let Some(f) = u
            .offline_in_flight
            .take_if(|f| f.session == m.session && f.upto == m.upto)
        else {
            return;
        };
        // Delivered: written, and the session either still up after the
        // grace or closed by the client itself after reading on.
        let alive = u.resources.iter().any(|r| r.handle.id == m.session);
        let delivered = m.written && (alive || f.closed_by_client);
        OfflineConfirmed {
            user: &m.user,
            upto: m.upto,
            delivered,
        }
        .emit(&self.ctx.metrics, f.n);
        if delivered {
            self.ctx.writer.submit(
                vec![WriteOp::AckOffline {
                    user: m.user.clone(),
                    upto: m.upto,
                }],
                None,
            );
        }
        self.gc(&m.user);
    }

    /// A message the store did not keep (the user's offline quota is full,
    /// or the write failed): the sender hears `resource-constraint` (type
    /// wait), never nothing.
    pub(super) fn offline_refused(&mut self, env: Envelope, error: StoreError) {
        match error {
            StoreError::QuotaExceeded => OfflineRefused {
                user: env.to.bare(),
            }
            .emit(&self.ctx.metrics),
            // The account was removed meanwhile: as for a missing user.
            StoreError::NotFound => {
                return self.bounce(&env, StanzaCondition::ServiceUnavailable);
            }
            e => StoreFailed {
                op: StoreOp::WriteOffline,
                user: env.to.bare(),
                error: &e,
            }
            .emit(),
        }
        self.bounce(&env, StanzaCondition::ResourceConstraint);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::xml::Stanza;
    use MessageType::{Chat, Error, Groupchat, Headline, Normal};
    use PartnerType::{Federated, PublicUnverified, PublicVerified};
    use bytes::Bytes;

    fn r(resource: &str, priority: i8, available: bool) -> ResourceView<'_> {
        ResourceView {
            resource,
            priority,
            available,
        }
    }

    fn to(v: &[usize]) -> Delivery {
        Delivery::ToResources(v.to_vec())
    }

    const UNAVAILABLE: Delivery = Delivery::Bounce(StanzaCondition::ServiceUnavailable);

    // ---- what waits for storage ----

    #[test]
    fn messages_need_to_know_the_account_exists_and_nothing_else() {
        for kind in [Kind::Message, Kind::MessageError] {
            for to_resource in [false, true] {
                assert_eq!(need(kind, to_resource, None), Need::EXISTS, "{kind:?}");
            }
        }
    }

    #[test]
    fn an_iq_to_a_full_jid_needs_the_account_and_one_to_the_bare_jid_nothing() {
        for kind in [Kind::IqRequest, Kind::IqResponse] {
            assert_eq!(need(kind, true, None), Need::EXISTS, "{kind:?}");
            assert_eq!(need(kind, false, None), Need::NONE, "{kind:?}");
        }
    }

    #[test]
    fn availability_presence_needs_nothing_from_storage() {
        for kind in [Kind::Presence, Kind::PresenceError, Kind::Other] {
            for to_resource in [false, true] {
                assert_eq!(need(kind, to_resource, None), Need::NONE, "{kind:?}");
            }
        }
    }

    #[test]
    fn subscriptions_need_the_account_and_the_roster_and_probes_the_roster() {
        for kind in [
            SubKind::Subscribe,
            SubKind::Subscribed,
            SubKind::Unsubscribe,
            SubKind::Unsubscribed,
        ] {
            assert_eq!(
                need(Kind::Subscription(kind), false, None),
                Need::BOTH,
                "{kind:?}"
            );
        }
        assert_eq!(need(Kind::Probe, false, None), Need::ROSTER);
    }

    #[test]
    fn only_public_unverified_senders_make_admission_read_the_roster() {
        for (partner, want) in [
            (Federated, Need::EXISTS),
            (PublicVerified, Need::EXISTS),
            (PublicUnverified, Need::BOTH),
        ] {
            assert_eq!(
                need(Kind::Message, false, Some(partner)),
                want,
                "{partner:?}"
            );
        }
        assert_eq!(
            need(Kind::Presence, false, Some(PublicUnverified)),
            Need::ROSTER
        );
        assert_eq!(need(Kind::Presence, false, Some(Federated)), Need::NONE);
    }

    #[test]
    fn an_envelope_needs_what_its_stanza_and_address_say() {
        let env = |xml: &'static str, to: &str| {
            Envelope::new(
                Stanza::parse(Bytes::from_static(xml.as_bytes())).unwrap(),
                Jid::parse("romeo@example.net/garden").unwrap(),
                Jid::parse(to).unwrap(),
            )
        };
        let probe = env("<presence type='probe'/>", "juliet@example.com");
        assert_eq!(need_of(&probe), Need::ROSTER);
        let iq = env("<iq type='get' id='1'/>", "juliet@example.com/balcony");
        assert_eq!(need_of(&iq), Need::EXISTS);
        let mut remote = env("<presence/>", "juliet@example.com");
        assert_eq!(need_of(&remote), Need::NONE);
        remote.remote = Some(PublicUnverified);
        assert_eq!(need_of(&remote), Need::ROSTER);
    }

    #[test]
    fn a_full_queue_bounces_what_expects_an_answer_and_drops_the_rest() {
        let busy = Delivery::Bounce(StanzaCondition::ResourceConstraint);
        assert_eq!(on_overflow(Kind::Message), busy);
        assert_eq!(on_overflow(Kind::IqRequest), busy);
        for kind in [
            Kind::MessageError,
            Kind::Presence,
            Kind::Probe,
            Kind::Subscription(SubKind::Subscribe),
            Kind::PresenceError,
            Kind::IqResponse,
            Kind::Other,
        ] {
            assert_eq!(on_overflow(kind), Delivery::Drop, "{kind:?}");
        }
    }

    // ---- which sessions get it ----

    #[test]
    fn a_message_to_the_bare_jid_goes_to_every_session_sharing_the_highest_priority() {
        let res = [
            r("phone", 1, true),
            r("desk", 5, true),
            r("laptop", 5, true),
            r("idle", 9, false),
        ];
        for ty in [Normal, Chat] {
            assert_eq!(message_action(true, &res, None, ty), to(&[1, 2]), "{ty:?}");
        }
    }

    #[test]
    fn a_message_to_a_full_jid_goes_to_that_session_whatever_its_priority() {
        let res = [r("desk", 5, true), r("phone", -1, true), r("new", 0, false)];
        for ty in [Normal, Chat, Groupchat, Headline, Error] {
            assert_eq!(
                message_action(true, &res, Some("phone"), ty),
                to(&[1]),
                "{ty:?}"
            );
            assert_eq!(
                message_action(true, &res, Some("new"), ty),
                to(&[2]),
                "{ty:?}"
            );
        }
    }

    #[test]
    fn a_chat_to_a_gone_resource_falls_back_to_the_bare_jid_rules() {
        let res = [r("desk", 2, true), r("phone", 7, true)];
        assert_eq!(message_action(true, &res, Some("gone"), Chat), to(&[1]));
        assert_eq!(
            message_action(true, &res, Some("gone"), Normal),
            UNAVAILABLE
        );
    }

    #[test]
    fn a_message_for_a_user_with_no_available_non_negative_session_goes_offline() {
        let res = [r("hidden", -1, true), r("connected", 3, false)];
        assert_eq!(message_action(true, &res, None, Chat), Delivery::Offline);
        assert_eq!(message_action(true, &[], None, Normal), Delivery::Offline);
    }

    #[test]
    fn a_message_for_a_missing_user_bounces_unless_it_is_an_error() {
        assert_eq!(message_action(false, &[], None, Chat), UNAVAILABLE);
        assert_eq!(message_action(false, &[], Some("x"), Normal), UNAVAILABLE);
        assert_eq!(message_action(false, &[], None, Error), Delivery::Drop);
    }

    #[test]
    fn an_iq_to_the_bare_jid_is_refused_for_requests_and_dropped_for_responses() {
        let res = [r("desk", 5, true)];
        assert_eq!(iq_action(true, &res, None, true), UNAVAILABLE);
        assert_eq!(iq_action(true, &res, None, false), Delivery::Drop);
    }

    #[test]
    fn an_iq_to_a_full_jid_goes_to_that_session_even_if_only_connected() {
        let res = [r("desk", 5, true), r("new", 0, false)];
        assert_eq!(iq_action(true, &res, Some("new"), true), to(&[1]));
        assert_eq!(iq_action(true, &res, Some("gone"), true), UNAVAILABLE);
        assert_eq!(iq_action(true, &res, Some("gone"), false), Delivery::Drop);
        assert_eq!(iq_action(false, &[], Some("desk"), true), UNAVAILABLE);
    }

    #[test]
    fn presence_to_the_bare_jid_reaches_every_available_session_whatever_its_priority() {
        let res = [r("neg", -5, true), r("new", 0, false), r("desk", 1, true)];
        assert_eq!(presence_action(&res, None), to(&[0, 2]));
        assert_eq!(presence_action(&res, Some("new")), to(&[1]));
        assert_eq!(presence_action(&res, Some("gone")), Delivery::Drop);
        assert_eq!(presence_action(&[r("new", 0, false)], None), Delivery::Drop);
    }

    #[test]
    fn inbound_presence_is_sorted_by_type() {
        use InboundPresence::*;
        for (ty, want) in [
            (None, Availability),
            (Some("unavailable"), Availability),
            (Some("error"), Availability),
            (Some("probe"), Probe),
            (Some("subscribe"), Subscription(SubKind::Subscribe)),
            (Some("subscribed"), Subscription(SubKind::Subscribed)),
            (Some("unsubscribe"), Subscription(SubKind::Unsubscribe)),
            (Some("unsubscribed"), Subscription(SubKind::Unsubscribed)),
            (Some("bogus"), Ignored),
        ] {
            assert_eq!(InboundPresence::of(ty), want, "{ty:?}");
        }
    }
}
