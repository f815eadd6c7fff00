//! Partner admission: what may pass between a local user and a remote one,
//! as ONE pure decision table over partner type × the local user's access
//! policy × roster state × direction × stanza kind (lync-xmpp-federation.md
//! §6, §7, §11). The shard asks it for every stanza a remote user sends a
//! local one, and federation for every stanza leaving for a remote domain;
//! both keep the I/O (bounces, routing, counting) to themselves.
//!
//! Owns: the verdict only. It reads no policy (the caller looks the partner
//! type and access up), no roster (the caller says what the user did, see
//! [`consults_roster`]) and no clock; it does not build stanzas.
//!
//! The rules, in the order they apply:
//!
//! 1. **Access policy** (§6). A local user whose policy lacks
//!    `enable_federation_access` or `enable_xmpp_access` reaches no remote
//!    user and is, to remote users, like a user that does not exist:
//!    outbound stanzas bounce with `forbidden`; inbound messages and IQ
//!    requests bounce with `service-unavailable`, a subscription request is
//!    answered `unsubscribed` (RFC 6121 §3.1.3), other presence is dropped.
//!    Stanzas the server sends on a user's behalf (error replies, automatic
//!    answers) are not the user's traffic and skip this rule.
//! 2. **Allowed partners** (§6, §11). A remote domain that is neither a
//!    listed partner nor let in by open federation gets nothing: outbound
//!    stanzas bounce with `policy-violation` (inbound ones never get this
//!    far: the stream is refused, so the table drops them).
//! 3. **Partner type** (§7), inbound:
//!    - Federated and PublicVerified users may add local users, see their
//!      presence and message them without being authorised first: their
//!      subscription requests are approved on the user's behalf
//!      ([`Admission::AutoApprove`]), everything else is delivered.
//!    - PublicUnverified users reach a local user only once the user has
//!      added them or pre-approved them (RFC 6121 §3.4). Before that a
//!      message or IQ request bounces with `service-unavailable` (nothing
//!      more than an unknown user would reveal), a subscription request is
//!      dropped silently, anything else is dropped. Once added, their
//!      stanzas are delivered and RFC 6121 decides (a request reaches the
//!      user, or the pre-approval answers it); none is approved on the
//!      user's behalf.
//! 4. **Status note** (§7, §9), outbound: the personal note (`<status/>`)
//!    of a presence goes only to Federated partners; presence of any type
//!    to the other two types has it stripped ([`Admission::StripStatus`]).
//!    A local user may send anything else to any allowed partner — in
//!    particular the subscription request that lets a PublicUnverified
//!    user in ("an explicit invite from the Lync side").
//!
//! Errors (error messages, error presence, IQ results and errors) are
//! never answered with an error (RFC 6120 §8.3.1): a refused one is dropped.
//!
//! Inbound, for a local user with access:
//!
//! | partner type × roster       | message            | `subscribe`     | IQ request         | anything else |
//! |-----------------------------|--------------------|-----------------|--------------------|---------------|
//! | Federated, any              | deliver            | auto-approve    | deliver            | deliver       |
//! | PublicVerified, any         | deliver            | auto-approve    | deliver            | deliver       |
//! | PublicUnverified, not added | service-unavailable | dropped        | service-unavailable | dropped      |
//! | PublicUnverified, added     | deliver            | deliver         | deliver            | deliver       |
//! | PublicUnverified, pre-approved | deliver         | deliver         | deliver            | deliver       |
//!
//! Outbound, from a local user with access (or on a user's behalf), any
//! roster: presence of every type goes to Federated partners as it is and
//! to the other two without `<status/>`; everything else goes as it is.

use crate::error::StanzaCondition;
use crate::policy::{Access, PartnerType};
use crate::roster::RosterItem;
use crate::roster::subscription::SubKind;
use crate::xml::{Stanza, StanzaKind};

/// Which way the stanza crosses the federation boundary.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From a remote user to a local one.
    Inbound,
    /// From a local user to a remote one.
    Outbound,
    /// From this server to a remote user, on a local user's behalf (an
    /// error reply, an automatic `unsubscribed`): not the user's own
    /// traffic, so not subject to the user's access policy.
    OutboundOnBehalf,
}

/// The local user's external access policy (§6): the sender outbound, the
/// recipient inbound.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum UserAccess {
    /// `enable_federation_access` and `enable_xmpp_access` are both on.
    Allowed,
    Denied,
}

impl UserAccess {
    pub fn of(access: &Access) -> UserAccess {
        if access.allowed_remote() {
            UserAccess::Allowed
        } else {
            UserAccess::Denied
        }
    }
}

/// What the local user did about the remote contact.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RosterState {
    /// Nothing: the contact is not in the roster, or only as the record of
    /// a request the user has not answered.
    NotAdded,
    /// The user added the contact (a listed item, whatever its
    /// subscription state).
    Added,
    /// The user pre-approved the contact's subscription request (RFC 6121
    /// §3.4) without adding it.
    PreApproved,
}

impl RosterState {
    /// The state of the user's item for the contact, if any.
    pub fn of(item: Option<&RosterItem>) -> RosterState {
        match item {
            Some(i) if i.listed => RosterState::Added,
            Some(i) if i.approved => RosterState::PreApproved,
            _ => RosterState::NotAdded,
        }
    }
}

/// The stanza, as far as admission cares.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A message of any type but `error`.
    Message,
    MessageError,
    /// Presence with no type, `unavailable`, or a type RFC 6121 does not
    /// define: broadcast or directed availability.
    Presence,
    Probe,
    /// `subscribe`, `subscribed`, `unsubscribe`, `unsubscribed`.
    Subscription(SubKind),
    PresenceError,
    /// An IQ `get` or `set`.
    IqRequest,
    /// An IQ `result` or `error`.
    IqResponse,
    /// A top-level element that is none of the three stanzas.
    Other,
}

impl Kind {
    /// Classifies by element and `type` attribute.
    pub fn of(kind: StanzaKind, ty: Option<&str>) -> Kind {
        match kind {
            StanzaKind::Message if ty == Some("error") => Kind::MessageError,
            StanzaKind::Message => Kind::Message,
            StanzaKind::Presence => match ty {
                Some("probe") => Kind::Probe,
                Some("error") => Kind::PresenceError,
                Some(t) => SubKind::from_type(t).map_or(Kind::Presence, Kind::Subscription),
                None => Kind::Presence,
            },
            StanzaKind::Iq => match ty {
                Some("get" | "set") => Kind::IqRequest,
                _ => Kind::IqResponse,
            },
            StanzaKind::Other => Kind::Other,
        }
    }

    pub fn of_stanza(stanza: &Stanza) -> Kind {
        Kind::of(stanza.kind(), stanza.type_().as_deref())
    }

    /// Any presence stanza.
    pub fn is_presence(self) -> bool {
        matches!(
            self,
            Kind::Presence | Kind::Probe | Kind::Subscription(_) | Kind::PresenceError
        )
    }

    /// An error, or an IQ response: never answered with an error.
    pub fn is_response(self) -> bool {
        matches!(
            self,
            Kind::MessageError | Kind::PresenceError | Kind::IqResponse
        )
    }
}

/// One question to the table.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Case {
    pub direction: Direction,
    /// The remote domain's partner type; `None` when it may not federate.
    pub partner: Option<PartnerType>,
    pub access: UserAccess,
    /// Only read where [`consults_roster`] says so.
    pub roster: RosterState,
    pub kind: Kind,
}

/// The table's answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Admission {
    /// Let it through as it is.
    Deliver,
    /// Let it through without the presence's `<status/>`.
    StripStatus,
    /// A subscription request: approve it on the local user's behalf.
    AutoApprove,
    Refuse(Refusal),
}

/// A refused stanza: why (for the metrics), and what the sender gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Refusal {
    pub reason: Reason,
    pub reply: Reply,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// The local user's access policy (rule 1).
    AccessPolicy,
    /// Not an allowed partner (rule 2).
    UnlistedDomain,
    /// A message from a PublicUnverified user not added (rule 3).
    UnverifiedMessage,
    /// A subscription request from a PublicUnverified user not added.
    UnverifiedSubscribe,
    /// Anything else from a PublicUnverified user not added.
    UnverifiedOther,
}

/// What goes back to the sender of a refused stanza.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reply {
    /// Nothing: dropped silently.
    Nothing,
    /// A stanza error with this condition and text.
    Error(StanzaCondition, Option<&'static str>),
    /// `<presence type='unsubscribed'/>` from the local user's bare JID, as
    /// for a user that does not exist (RFC 6121 §3.1.3).
    Unsubscribed,
}

/// The text of an outbound refusal for a user without federation access.
pub const NO_ACCESS_TEXT: &str = "federation is not enabled for this user";
/// The text of an outbound refusal for a domain that is not a partner.
pub const UNLISTED_TEXT: &str = "this domain is not an allowed federation partner";

fn refuse(reason: Reason, reply: Reply) -> Admission {
    Admission::Refuse(Refusal { reason, reply })
}

/// `reply` for a stanza that may be answered; nothing for one that may not.
fn answer(kind: Kind, reply: Reply) -> Reply {
    if kind.is_response() {
        Reply::Nothing
    } else {
        reply
    }
}

fn unavailable(kind: Kind) -> Reply {
    answer(
        kind,
        Reply::Error(StanzaCondition::ServiceUnavailable, None),
    )
}

/// Whether [`admit`] reads [`Case::roster`] for this direction and
/// partner. Where it does not, callers need not look the roster up (nor
/// load it): the verdict is the same for every roster state.
pub fn consults_roster(direction: Direction, partner: Option<PartnerType>) -> bool {
    matches!(
        (direction, partner),
        (Direction::Inbound, Some(PartnerType::PublicUnverified))
    )
}

/// The decision table (see the module docs for the rules).
pub fn admit(c: Case) -> Admission {
    use Admission::{AutoApprove, Deliver, StripStatus};
    use PartnerType::{Federated, PublicUnverified, PublicVerified};
    match c.direction {
        Direction::Inbound => {
            if let UserAccess::Denied = c.access {
                let reply = match c.kind {
                    Kind::Subscription(SubKind::Subscribe) => Reply::Unsubscribed,
                    k if k.is_presence() => Reply::Nothing,
                    Kind::Other => Reply::Nothing,
                    k => unavailable(k),
                };
                return refuse(Reason::AccessPolicy, reply);
            }
            match (c.partner, c.roster) {
                // The stream was refused before any stanza; a stray one
                // (a reload raced it) is dropped.
                (None, _) => refuse(Reason::UnlistedDomain, Reply::Nothing),
                (Some(Federated | PublicVerified), _) => match c.kind {
                    Kind::Subscription(SubKind::Subscribe) => AutoApprove,
                    _ => Deliver,
                },
                (Some(PublicUnverified), RosterState::Added | RosterState::PreApproved) => Deliver,
                (Some(PublicUnverified), RosterState::NotAdded) => match c.kind {
                    Kind::Message | Kind::MessageError => {
                        refuse(Reason::UnverifiedMessage, unavailable(c.kind))
                    }
                    Kind::Subscription(SubKind::Subscribe) => {
                        refuse(Reason::UnverifiedSubscribe, Reply::Nothing)
                    }
                    Kind::IqRequest => refuse(Reason::UnverifiedOther, unavailable(c.kind)),
                    _ => refuse(Reason::UnverifiedOther, Reply::Nothing),
                },
            }
        }
        Direction::Outbound | Direction::OutboundOnBehalf => {
            if let (Direction::Outbound, UserAccess::Denied) = (c.direction, c.access) {
                return refuse(
                    Reason::AccessPolicy,
                    answer(
                        c.kind,
                        Reply::Error(StanzaCondition::Forbidden, Some(NO_ACCESS_TEXT)),
                    ),
                );
            }
            match c.partner {
                // lync-xmpp-federation.md §11: to the sender, a domain that
                // may not federate looks like one that cannot be reached.
                None => refuse(
                    Reason::UnlistedDomain,
                    answer(
                        c.kind,
                        Reply::Error(StanzaCondition::RemoteServerNotFound, Some(UNLISTED_TEXT)),
                    ),
                ),
                Some(Federated) => Deliver,
                Some(PublicVerified | PublicUnverified) if c.kind.is_presence() => StripStatus,
                Some(_) => Deliver,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Direction::{Inbound, Outbound, OutboundOnBehalf};
    use PartnerType::{Federated, PublicUnverified, PublicVerified};
    use SubKind::{Subscribe, Subscribed, Unsubscribe, Unsubscribed};

    const DIRECTIONS: [Direction; 3] = [Inbound, Outbound, OutboundOnBehalf];
    const PARTNERS: [Option<PartnerType>; 4] = [
        Some(Federated),
        Some(PublicVerified),
        Some(PublicUnverified),
        None,
    ];
    const TYPES: [PartnerType; 3] = [Federated, PublicVerified, PublicUnverified];
    const ACCESS: [UserAccess; 2] = [UserAccess::Allowed, UserAccess::Denied];
    const ROSTER: [RosterState; 3] = [
        RosterState::NotAdded,
        RosterState::Added,
        RosterState::PreApproved,
    ];
    const KINDS: [Kind; 12] = [
        Kind::Message,
        Kind::MessageError,
        Kind::Presence,
        Kind::Probe,
        Kind::Subscription(Subscribe),
        Kind::Subscription(Subscribed),
        Kind::Subscription(Unsubscribe),
        Kind::Subscription(Unsubscribed),
        Kind::PresenceError,
        Kind::IqRequest,
        Kind::IqResponse,
        Kind::Other,
    ];
    const SUBSCRIBE: Kind = Kind::Subscription(Subscribe);
    const UNAVAILABLE: Reply = Reply::Error(StanzaCondition::ServiceUnavailable, None);

    /// Every case of the product.
    fn all() -> impl Iterator<Item = Case> {
        DIRECTIONS.into_iter().flat_map(|direction| {
            PARTNERS.into_iter().flat_map(move |partner| {
                ACCESS.into_iter().flat_map(move |access| {
                    ROSTER.into_iter().flat_map(move |roster| {
                        KINDS.into_iter().map(move |kind| Case {
                            direction,
                            partner,
                            access,
                            roster,
                            kind,
                        })
                    })
                })
            })
        })
    }

    fn case(direction: Direction, partner: PartnerType, roster: RosterState, kind: Kind) -> Case {
        Case {
            direction,
            partner: Some(partner),
            access: UserAccess::Allowed,
            roster,
            kind,
        }
    }

    fn inbound(partner: PartnerType, roster: RosterState, kind: Kind) -> Admission {
        admit(case(Inbound, partner, roster, kind))
    }

    fn outbound(partner: PartnerType, roster: RosterState, kind: Kind) -> Admission {
        admit(case(Outbound, partner, roster, kind))
    }

    fn refused(reason: Reason, reply: Reply) -> Admission {
        Admission::Refuse(Refusal { reason, reply })
    }

    #[test]
    fn the_product_has_every_combination_once() {
        let cases: Vec<Case> = all().collect();
        assert_eq!(cases.len(), 3 * 4 * 2 * 3 * 12);
        let unique: std::collections::HashSet<_> = cases.iter().collect();
        assert_eq!(unique.len(), cases.len());
    }

    // ---- §7: who may reach a local user ------------------------------------

    #[test]
    fn federated_and_public_verified_users_reach_a_user_who_never_added_them() {
        for partner in [Federated, PublicVerified] {
            for roster in ROSTER {
                for kind in KINDS.into_iter().filter(|k| *k != SUBSCRIBE) {
                    assert_eq!(
                        inbound(partner, roster, kind),
                        Admission::Deliver,
                        "{partner:?} {roster:?} {kind:?}"
                    );
                }
            }
        }
    }

    #[test]
    fn subscription_requests_from_federated_and_public_verified_users_are_approved_automatically() {
        for partner in [Federated, PublicVerified] {
            for roster in ROSTER {
                assert_eq!(
                    inbound(partner, roster, SUBSCRIBE),
                    Admission::AutoApprove,
                    "{partner:?} {roster:?}"
                );
            }
        }
    }

    #[test]
    fn only_an_inbound_subscribe_from_a_trusted_partner_to_a_user_with_access_is_auto_approved() {
        for c in all() {
            let want = c.direction == Inbound
                && matches!(c.partner, Some(Federated | PublicVerified))
                && c.access == UserAccess::Allowed
                && c.kind == SUBSCRIBE;
            assert_eq!(admit(c) == Admission::AutoApprove, want, "{c:?}");
        }
    }

    #[test]
    fn a_public_unverified_user_not_added_cannot_message_a_local_user() {
        assert_eq!(
            inbound(PublicUnverified, RosterState::NotAdded, Kind::Message),
            refused(Reason::UnverifiedMessage, UNAVAILABLE)
        );
        // An error message is refused too, but never answered.
        assert_eq!(
            inbound(PublicUnverified, RosterState::NotAdded, Kind::MessageError),
            refused(Reason::UnverifiedMessage, Reply::Nothing)
        );
    }

    #[test]
    fn a_subscription_request_from_a_public_unverified_user_not_added_is_dropped_silently() {
        assert_eq!(
            inbound(PublicUnverified, RosterState::NotAdded, SUBSCRIBE),
            refused(Reason::UnverifiedSubscribe, Reply::Nothing)
        );
    }

    #[test]
    fn other_stanzas_from_a_public_unverified_user_not_added_are_refused() {
        assert_eq!(
            inbound(PublicUnverified, RosterState::NotAdded, Kind::IqRequest),
            refused(Reason::UnverifiedOther, UNAVAILABLE)
        );
        for kind in [
            Kind::Presence,
            Kind::Probe,
            Kind::Subscription(Subscribed),
            Kind::Subscription(Unsubscribe),
            Kind::Subscription(Unsubscribed),
            Kind::PresenceError,
            Kind::IqResponse,
            Kind::Other,
        ] {
            assert_eq!(
                inbound(PublicUnverified, RosterState::NotAdded, kind),
                refused(Reason::UnverifiedOther, Reply::Nothing),
                "{kind:?}"
            );
        }
    }

    #[test]
    fn a_public_unverified_user_reaches_a_user_who_added_or_pre_approved_them() {
        for roster in [RosterState::Added, RosterState::PreApproved] {
            for kind in KINDS {
                assert_eq!(
                    inbound(PublicUnverified, roster, kind),
                    Admission::Deliver,
                    "{roster:?} {kind:?}"
                );
            }
        }
    }

    #[test]
    fn a_subscription_request_from_a_public_unverified_user_is_never_approved_on_the_users_behalf()
    {
        // Added: the request reaches the user. Pre-approved: RFC 6121
        // §3.4 answers it. Neither is the partner-type auto-approval.
        for roster in ROSTER {
            assert_ne!(
                inbound(PublicUnverified, roster, SUBSCRIBE),
                Admission::AutoApprove,
                "{roster:?}"
            );
        }
    }

    // ---- §7: what a local user may send ------------------------------------

    #[test]
    fn a_local_user_may_invite_a_public_unverified_user_whatever_the_roster() {
        for roster in ROSTER {
            assert!(
                matches!(
                    outbound(PublicUnverified, roster, SUBSCRIBE),
                    Admission::Deliver | Admission::StripStatus
                ),
                "{roster:?}"
            );
        }
    }

    #[test]
    fn a_local_user_may_send_anything_to_any_allowed_partner() {
        for partner in TYPES {
            for roster in ROSTER {
                for kind in KINDS {
                    for direction in [Outbound, OutboundOnBehalf] {
                        let v = admit(case(direction, partner, roster, kind));
                        assert!(
                            matches!(v, Admission::Deliver | Admission::StripStatus),
                            "{direction:?} {partner:?} {roster:?} {kind:?}: {v:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_status_note_goes_to_federated_partners_only() {
        for c in all().filter(|c| c.access == UserAccess::Allowed && c.partner.is_some()) {
            let want =
                c.direction != Inbound && c.partner != Some(Federated) && c.kind.is_presence();
            assert_eq!(admit(c) == Admission::StripStatus, want, "{c:?}");
        }
        // Every presence type, the subscription request with its note included.
        for kind in KINDS.into_iter().filter(|k| k.is_presence()) {
            assert_eq!(
                outbound(Federated, RosterState::NotAdded, kind),
                Admission::Deliver
            );
            for partner in [PublicVerified, PublicUnverified] {
                assert_eq!(
                    outbound(partner, RosterState::NotAdded, kind),
                    Admission::StripStatus,
                    "{partner:?} {kind:?}"
                );
            }
        }
    }

    #[test]
    fn nothing_is_stripped_from_messages_and_iqs() {
        for c in all().filter(|c| !c.kind.is_presence()) {
            assert_ne!(admit(c), Admission::StripStatus, "{c:?}");
        }
    }

    // ---- §6: access policy ---------------------------------------------------

    #[test]
    fn a_user_without_federation_access_reaches_no_remote_user() {
        for partner in PARTNERS {
            for roster in ROSTER {
                for kind in KINDS {
                    let want = if kind.is_response() {
                        Reply::Nothing
                    } else {
                        Reply::Error(StanzaCondition::Forbidden, Some(NO_ACCESS_TEXT))
                    };
                    let c = Case {
                        direction: Outbound,
                        partner,
                        access: UserAccess::Denied,
                        roster,
                        kind,
                    };
                    assert_eq!(admit(c), refused(Reason::AccessPolicy, want), "{c:?}");
                }
            }
        }
    }

    #[test]
    fn a_user_without_federation_access_is_like_a_user_that_does_not_exist_to_remote_users() {
        for partner in PARTNERS {
            for roster in ROSTER {
                for kind in KINDS {
                    let want = match kind {
                        SUBSCRIBE => Reply::Unsubscribed,
                        Kind::Message | Kind::IqRequest => UNAVAILABLE,
                        _ => Reply::Nothing,
                    };
                    let c = Case {
                        direction: Inbound,
                        partner,
                        access: UserAccess::Denied,
                        roster,
                        kind,
                    };
                    assert_eq!(admit(c), refused(Reason::AccessPolicy, want), "{c:?}");
                }
            }
        }
    }

    #[test]
    fn stanzas_the_server_sends_on_a_users_behalf_skip_the_access_policy() {
        for partner in PARTNERS {
            for roster in ROSTER {
                for kind in KINDS {
                    let with = |access| {
                        admit(Case {
                            direction: OutboundOnBehalf,
                            partner,
                            access,
                            roster,
                            kind,
                        })
                    };
                    assert_eq!(
                        with(UserAccess::Denied),
                        with(UserAccess::Allowed),
                        "{partner:?} {kind:?}"
                    );
                    assert_ne!(
                        with(UserAccess::Denied),
                        refused(
                            Reason::AccessPolicy,
                            Reply::Error(StanzaCondition::Forbidden, Some(NO_ACCESS_TEXT))
                        )
                    );
                }
            }
        }
    }

    #[test]
    fn the_access_policy_is_checked_before_the_partner_list() {
        for direction in [Inbound, Outbound] {
            let v = admit(Case {
                direction,
                partner: None,
                access: UserAccess::Denied,
                roster: RosterState::NotAdded,
                kind: Kind::Message,
            });
            assert!(
                matches!(
                    v,
                    Admission::Refuse(Refusal {
                        reason: Reason::AccessPolicy,
                        ..
                    })
                ),
                "{direction:?}: {v:?}"
            );
        }
    }

    // ---- §11: allowed partners -------------------------------------------------

    #[test]
    fn nothing_goes_to_a_domain_that_is_not_an_allowed_partner() {
        for direction in [Outbound, OutboundOnBehalf] {
            for roster in ROSTER {
                for kind in KINDS {
                    let want = if kind.is_response() {
                        Reply::Nothing
                    } else {
                        Reply::Error(StanzaCondition::RemoteServerNotFound, Some(UNLISTED_TEXT))
                    };
                    let c = Case {
                        direction,
                        partner: None,
                        access: UserAccess::Allowed,
                        roster,
                        kind,
                    };
                    assert_eq!(admit(c), refused(Reason::UnlistedDomain, want), "{c:?}");
                }
            }
        }
    }

    #[test]
    fn a_stanza_from_a_domain_that_is_not_a_partner_is_dropped() {
        for roster in ROSTER {
            for kind in KINDS {
                let c = Case {
                    direction: Inbound,
                    partner: None,
                    access: UserAccess::Allowed,
                    roster,
                    kind,
                };
                assert_eq!(
                    admit(c),
                    refused(Reason::UnlistedDomain, Reply::Nothing),
                    "{c:?}"
                );
            }
        }
    }

    // ---- across the table ------------------------------------------------------

    #[test]
    fn errors_and_iq_responses_are_never_answered() {
        for c in all().filter(|c| c.kind.is_response()) {
            if let Admission::Refuse(r) = admit(c) {
                assert_eq!(r.reply, Reply::Nothing, "{c:?}");
            }
        }
    }

    #[test]
    fn only_a_refused_subscription_request_is_answered_unsubscribed() {
        for c in all() {
            if let Admission::Refuse(Refusal {
                reply: Reply::Unsubscribed,
                ..
            }) = admit(c)
            {
                assert_eq!((c.direction, c.kind), (Inbound, SUBSCRIBE), "{c:?}");
            }
        }
    }

    #[test]
    fn the_roster_matters_exactly_where_consults_roster_says() {
        for direction in DIRECTIONS {
            for partner in PARTNERS {
                let mut differs = false;
                for access in ACCESS {
                    for kind in KINDS {
                        let v = |roster| {
                            admit(Case {
                                direction,
                                partner,
                                access,
                                roster,
                                kind,
                            })
                        };
                        differs |= ROSTER.iter().any(|r| v(*r) != v(RosterState::NotAdded));
                    }
                }
                assert_eq!(
                    consults_roster(direction, partner),
                    differs,
                    "{direction:?} {partner:?}"
                );
            }
        }
    }

    #[test]
    fn roster_state_reads_listed_then_pre_approved() {
        let mut item = RosterItem::new("romeo@example.net");
        assert_eq!(RosterState::of(None), RosterState::NotAdded);
        // A pending request the user never saw is not "added".
        item.pending_in = true;
        assert_eq!(RosterState::of(Some(&item)), RosterState::NotAdded);
        item.approved = true;
        assert_eq!(RosterState::of(Some(&item)), RosterState::PreApproved);
        item.listed = true;
        assert_eq!(RosterState::of(Some(&item)), RosterState::Added);
        item.approved = false;
        assert_eq!(RosterState::of(Some(&item)), RosterState::Added);
    }

    #[test]
    fn user_access_needs_both_switches() {
        for (federation, xmpp, want) in [
            (true, true, UserAccess::Allowed),
            (true, false, UserAccess::Denied),
            (false, true, UserAccess::Denied),
            (false, false, UserAccess::Denied),
        ] {
            let a = Access {
                name: "p".into(),
                federation,
                xmpp,
            };
            assert_eq!(UserAccess::of(&a), want, "{federation} {xmpp}");
        }
    }

    #[test]
    fn kinds_are_read_from_the_element_and_its_type() {
        use StanzaKind as S;
        for (kind, ty, want) in [
            (S::Message, None, Kind::Message),
            (S::Message, Some("chat"), Kind::Message),
            (S::Message, Some("groupchat"), Kind::Message),
            (S::Message, Some("error"), Kind::MessageError),
            (S::Presence, None, Kind::Presence),
            (S::Presence, Some("unavailable"), Kind::Presence),
            (S::Presence, Some("bogus"), Kind::Presence),
            (S::Presence, Some("probe"), Kind::Probe),
            (S::Presence, Some("error"), Kind::PresenceError),
            (S::Presence, Some("subscribe"), SUBSCRIBE),
            (
                S::Presence,
                Some("subscribed"),
                Kind::Subscription(Subscribed),
            ),
            (
                S::Presence,
                Some("unsubscribe"),
                Kind::Subscription(Unsubscribe),
            ),
            (
                S::Presence,
                Some("unsubscribed"),
                Kind::Subscription(Unsubscribed),
            ),
            (S::Iq, Some("get"), Kind::IqRequest),
            (S::Iq, Some("set"), Kind::IqRequest),
            (S::Iq, Some("result"), Kind::IqResponse),
            (S::Iq, Some("error"), Kind::IqResponse),
            (S::Other, None, Kind::Other),
        ] {
            assert_eq!(Kind::of(kind, ty), want, "{kind:?} {ty:?}");
        }
    }
}
