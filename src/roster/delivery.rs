//! RFC 6121 §8.5 delivery rules for stanzas addressed to a local user, as
//! pure functions over a view of the user's resources. The shard asks
//! "where does this go?" and gets back resource indices, offline storage,
//! a bounce condition, or a silent drop.
//!
//! Owns: the decision only. Does not hold sessions, write bytes, store
//! offline messages, answer IQs to the bare JID or presence probes (the
//! server does those on the user's behalf, §8.5.2.1.3, §4.3), or handle
//! subscription presence (see [`super::subscription`]).
//!
//! Choices where RFC 6121 offers options:
//! - Normal and chat messages to the bare JID go to the "most available"
//!   resources, read as: every available resource sharing the highest
//!   non-negative priority (§8.5.2.1.1 option a). Ties all receive it.
//! - With no available non-negative resource they go to offline storage
//!   (§8.5.2.2.1 option a); the shard bounces instead if storage is off or
//!   full.
//! - A message to a missing user is bounced with `service-unavailable`
//!   (§8.5.1 option b) so nothing more is revealed; `error` messages are
//!   never answered (RFC 6120 §8.3.1).
//! - A message to a full JID whose resource is gone (§8.5.3.2.1): `chat`
//!   is handled as if sent to the bare JID; `normal`, `groupchat` and
//!   `headline` are bounced with `service-unavailable`; `error` is dropped.

use crate::error::StanzaCondition;

/// One session of the user, as the shard sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResourceView<'a> {
    pub resource: &'a str,
    pub priority: i8,
    /// Sent initial presence and not since unavailable. A bound session
    /// that is not available is "connected" only (§1.4 / §8.5): it gets
    /// stanzas addressed to its full JID, never bare-JID messages or
    /// presence broadcasts.
    pub available: bool,
}

/// The `type` of a message stanza.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MessageType {
    Normal,
    Chat,
    Groupchat,
    Headline,
    Error,
}

impl MessageType {
    /// Missing or unknown types are `normal` (RFC 6121 §5.2.2).
    pub fn from_attr(ty: Option<&str>) -> MessageType {
        match ty {
            Some("chat") => MessageType::Chat,
            Some("groupchat") => MessageType::Groupchat,
            Some("headline") => MessageType::Headline,
            Some("error") => MessageType::Error,
            _ => MessageType::Normal,
        }
    }
}

/// Where a stanza for a local user goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Delivery {
    /// Deliver to these resources (indices into the slice given).
    ToResources(Vec<usize>),
    /// Store for later delivery (XEP-0160).
    Offline,
    /// Return an error with this condition to the sender.
    Bounce(StanzaCondition),
    /// Silently ignore.
    Drop,
}

const UNAVAILABLE: Delivery = Delivery::Bounce(StanzaCondition::ServiceUnavailable);

/// §8.5.1: the account does not exist.
fn no_such_user_message(ty: MessageType) -> Delivery {
    match ty {
        MessageType::Error => Delivery::Drop,
        _ => UNAVAILABLE,
    }
}

fn non_negative_available<'r>(
    resources: &'r [ResourceView<'_>],
) -> impl Iterator<Item = usize> + 'r {
    resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.available && r.priority >= 0)
        .map(|(i, _)| i)
}

fn find(resources: &[ResourceView], resource: &str) -> Option<usize> {
    resources.iter().position(|r| r.resource == resource)
}

/// A message to the user's bare JID (§8.5.1, §8.5.2.1.1, §8.5.2.2.1).
pub fn message_to_bare(user_exists: bool, resources: &[ResourceView], ty: MessageType) -> Delivery {
    if !user_exists {
        return no_such_user_message(ty);
    }
    match ty {
        MessageType::Error => Delivery::Drop,
        MessageType::Groupchat => UNAVAILABLE,
        MessageType::Headline => {
            let all: Vec<usize> = non_negative_available(resources).collect();
            if all.is_empty() {
                Delivery::Drop
            } else {
                Delivery::ToResources(all)
            }
        }
        MessageType::Normal | MessageType::Chat => {
            let Some(top) = non_negative_available(resources)
                .map(|i| resources[i].priority)
                .max()
            else {
                return Delivery::Offline;
            };
            Delivery::ToResources(
                non_negative_available(resources)
                    .filter(|&i| resources[i].priority == top)
                    .collect(),
            )
        }
    }
}

/// A message to `user/resource` (§8.5.1, §8.5.3.1, §8.5.3.2.1).
pub fn message_to_full(
    user_exists: bool,
    resources: &[ResourceView],
    resource: &str,
    ty: MessageType,
) -> Delivery {
    if !user_exists {
        return no_such_user_message(ty);
    }
    if let Some(i) = find(resources, resource) {
        return Delivery::ToResources(vec![i]);
    }
    match ty {
        MessageType::Chat => message_to_bare(true, resources, ty),
        MessageType::Error => Delivery::Drop,
        MessageType::Normal | MessageType::Groupchat | MessageType::Headline => UNAVAILABLE,
    }
}

/// An IQ to `user/resource` (§8.5.1, §8.5.3.1, §8.5.3.2.3). Responses
/// (`result`/`error`) are never answered with an error.
pub fn iq_to_full(
    user_exists: bool,
    resources: &[ResourceView],
    resource: &str,
    is_request: bool,
) -> Delivery {
    let found = if user_exists {
        find(resources, resource)
    } else {
        None
    };
    match (found, is_request) {
        (Some(i), _) => Delivery::ToResources(vec![i]),
        (None, true) => UNAVAILABLE,
        (None, false) => Delivery::Drop,
    }
}

/// Presence with no type or `unavailable` to the bare JID (§8.5.2.1.2,
/// §8.5.2.2.2): every available resource, whatever its priority.
pub fn presence_to_bare(resources: &[ResourceView]) -> Delivery {
    let all: Vec<usize> = resources
        .iter()
        .enumerate()
        .filter(|(_, r)| r.available)
        .map(|(i, _)| i)
        .collect();
    if all.is_empty() {
        Delivery::Drop
    } else {
        Delivery::ToResources(all)
    }
}

/// Presence with no type or `unavailable` to `user/resource` (§8.5.3.1,
/// §8.5.3.2.2): that session if it exists, else silently ignored.
pub fn presence_to_full(resources: &[ResourceView], resource: &str) -> Delivery {
    match find(resources, resource) {
        Some(i) => Delivery::ToResources(vec![i]),
        None => Delivery::Drop,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use MessageType::*;

    const ALL_TYPES: [MessageType; 5] = [Normal, Chat, Groupchat, Headline, Error];

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

    #[test]
    fn message_type_defaults_to_normal_for_missing_or_unknown_types() {
        assert_eq!(MessageType::from_attr(None), Normal);
        assert_eq!(MessageType::from_attr(Some("bogus")), Normal);
        assert_eq!(MessageType::from_attr(Some("normal")), Normal);
        assert_eq!(MessageType::from_attr(Some("chat")), Chat);
        assert_eq!(MessageType::from_attr(Some("groupchat")), Groupchat);
        assert_eq!(MessageType::from_attr(Some("headline")), Headline);
        assert_eq!(MessageType::from_attr(Some("error")), Error);
    }

    #[test]
    fn s8_5_1_messages_to_a_missing_user_bounce_except_errors() {
        let res = [r("a", 5, true)];
        for ty in ALL_TYPES {
            let want = if ty == Error {
                Delivery::Drop
            } else {
                UNAVAILABLE
            };
            assert_eq!(message_to_bare(false, &res, ty), want, "{ty:?}");
            assert_eq!(message_to_full(false, &res, "a", ty), want, "{ty:?}");
        }
    }

    #[test]
    fn s8_5_2_1_1_normal_and_chat_go_to_all_resources_sharing_the_highest_priority() {
        let res = [
            r("low", 1, true),
            r("top1", 7, true),
            r("hidden", 9, false),
            r("top2", 7, true),
        ];
        for ty in [Normal, Chat] {
            assert_eq!(message_to_bare(true, &res, ty), to(&[1, 3]), "{ty:?}");
        }
    }

    #[test]
    fn s8_5_2_1_1_zero_priority_counts_as_non_negative() {
        let res = [r("neg", -1, true), r("zero", 0, true)];
        assert_eq!(message_to_bare(true, &res, Chat), to(&[1]));
    }

    #[test]
    fn s8_5_2_1_1_only_negative_resources_is_treated_as_offline() {
        let res = [r("neg", -1, true), r("neg2", -128, true)];
        assert_eq!(message_to_bare(true, &res, Normal), Delivery::Offline);
        assert_eq!(message_to_bare(true, &res, Chat), Delivery::Offline);
        assert_eq!(message_to_bare(true, &res, Headline), Delivery::Drop);
    }

    #[test]
    fn s8_5_2_2_1_no_available_resource_stores_normal_and_chat_offline() {
        let connected_only = [r("c", 10, false)];
        for res in [&[][..], &connected_only[..]] {
            assert_eq!(message_to_bare(true, res, Normal), Delivery::Offline);
            assert_eq!(message_to_bare(true, res, Chat), Delivery::Offline);
            assert_eq!(message_to_bare(true, res, Headline), Delivery::Drop);
            assert_eq!(message_to_bare(true, res, Groupchat), UNAVAILABLE);
            assert_eq!(message_to_bare(true, res, Error), Delivery::Drop);
        }
    }

    #[test]
    fn s8_5_2_1_1_headline_goes_to_every_non_negative_available_resource() {
        let res = [
            r("a", 0, true),
            r("neg", -5, true),
            r("b", 3, true),
            r("c", 9, false),
        ];
        assert_eq!(message_to_bare(true, &res, Headline), to(&[0, 2]));
    }

    #[test]
    fn s8_5_2_1_1_groupchat_to_a_bare_jid_is_bounced() {
        let res = [r("a", 5, true)];
        assert_eq!(message_to_bare(true, &res, Groupchat), UNAVAILABLE);
    }

    #[test]
    fn s8_5_2_1_1_error_messages_to_a_bare_jid_are_ignored() {
        let res = [r("a", 5, true)];
        assert_eq!(message_to_bare(true, &res, Error), Delivery::Drop);
    }

    #[test]
    fn s8_5_3_1_a_matching_resource_gets_every_message_type() {
        // Even when it is only connected or has a negative priority.
        let res = [r("a", 5, true), r("neg", -1, true), r("conn", 0, false)];
        for ty in ALL_TYPES {
            assert_eq!(message_to_full(true, &res, "neg", ty), to(&[1]), "{ty:?}");
            assert_eq!(message_to_full(true, &res, "conn", ty), to(&[2]), "{ty:?}");
        }
    }

    #[test]
    fn s8_5_3_2_1_chat_to_a_gone_resource_is_handled_as_bare() {
        let res = [r("a", 1, true), r("b", 4, true)];
        assert_eq!(message_to_full(true, &res, "gone", Chat), to(&[1]));
        assert_eq!(message_to_full(true, &[], "gone", Chat), Delivery::Offline);
        let negative = [r("a", -1, true)];
        assert_eq!(
            message_to_full(true, &negative, "gone", Chat),
            Delivery::Offline
        );
    }

    #[test]
    fn s8_5_3_2_1_normal_groupchat_and_headline_to_a_gone_resource_bounce() {
        let res = [r("a", 1, true)];
        for ty in [Normal, Groupchat, Headline] {
            assert_eq!(
                message_to_full(true, &res, "gone", ty),
                UNAVAILABLE,
                "{ty:?}"
            );
            assert_eq!(
                message_to_full(true, &[], "gone", ty),
                UNAVAILABLE,
                "{ty:?}"
            );
        }
    }

    #[test]
    fn s8_5_3_2_1_error_to_a_gone_resource_is_dropped() {
        let res = [r("a", 1, true)];
        assert_eq!(message_to_full(true, &res, "gone", Error), Delivery::Drop);
    }

    #[test]
    fn s8_5_3_1_iq_to_an_existing_resource_is_delivered_even_if_only_connected() {
        let res = [r("a", 1, true), r("conn", 0, false)];
        assert_eq!(iq_to_full(true, &res, "conn", true), to(&[1]));
        assert_eq!(iq_to_full(true, &res, "a", false), to(&[0]));
    }

    #[test]
    fn s8_5_3_2_3_iq_request_to_a_gone_resource_is_service_unavailable() {
        let res = [r("a", 1, true)];
        assert_eq!(iq_to_full(true, &res, "gone", true), UNAVAILABLE);
    }

    #[test]
    fn s8_5_3_2_3_iq_response_to_a_gone_resource_is_dropped() {
        let res = [r("a", 1, true)];
        assert_eq!(iq_to_full(true, &res, "gone", false), Delivery::Drop);
    }

    #[test]
    fn s8_5_1_iq_to_a_missing_user_bounces_requests_and_drops_responses() {
        assert_eq!(iq_to_full(false, &[], "a", true), UNAVAILABLE);
        assert_eq!(iq_to_full(false, &[], "a", false), Delivery::Drop);
    }

    #[test]
    fn s8_5_2_1_2_presence_to_bare_reaches_every_available_resource() {
        let res = [r("a", -3, true), r("conn", 0, false), r("b", 2, true)];
        assert_eq!(presence_to_bare(&res), to(&[0, 2]));
    }

    #[test]
    fn s8_5_2_2_2_presence_to_bare_with_no_available_resource_is_dropped() {
        assert_eq!(presence_to_bare(&[]), Delivery::Drop);
        assert_eq!(presence_to_bare(&[r("conn", 0, false)]), Delivery::Drop);
    }

    #[test]
    fn s8_5_3_1_presence_to_an_existing_resource_is_delivered() {
        let res = [r("a", 1, true), r("conn", 0, false)];
        assert_eq!(presence_to_full(&res, "conn"), to(&[1]));
    }

    #[test]
    fn s8_5_3_2_2_presence_to_a_gone_resource_is_dropped() {
        let res = [r("a", 1, true)];
        assert_eq!(presence_to_full(&res, "gone"), Delivery::Drop);
    }
}
