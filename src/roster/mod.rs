//! Rosters and presence subscriptions (RFC 6121): the item model shared by
//! storage and the router, and (in submodules) the pure state machines the
//! router shards run. Nothing here does I/O.

pub mod delivery;
pub mod iq;
pub mod offline;
pub mod presence;
pub mod subscription;

use serde::{Deserialize, Serialize};

/// The `subscription` attribute of a roster item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Subscription {
    #[default]
    None,
    /// The user receives the contact's presence.
    To,
    /// The contact receives the user's presence.
    From,
    Both,
}

impl Subscription {
    pub fn as_str(self) -> &'static str {
        match self {
            Subscription::None => "none",
            Subscription::To => "to",
            Subscription::From => "from",
            Subscription::Both => "both",
        }
    }

    /// The user receives the contact's presence (`to` or `both`).
    pub fn has_to(self) -> bool {
        matches!(self, Subscription::To | Subscription::Both)
    }

    /// The contact receives the user's presence (`from` or `both`).
    pub fn has_from(self) -> bool {
        matches!(self, Subscription::From | Subscription::Both)
    }
}

/// One contact in a user's roster, with the full RFC 6121 subscription
/// state: the visible `subscription`, the pending flags of Appendix A, and
/// pre-approval (§3.4).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterItem {
    /// The contact's normalised bare JID.
    pub jid: String,
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub subscription: Subscription,
    /// The user asked to subscribe to the contact and no answer came yet
    /// ("Pending Out"; shown as `ask='subscribe'`).
    pub ask: bool,
    /// The contact asked to subscribe to the user and the user has not
    /// answered ("Pending In"). The request stanza is redelivered at login.
    pub pending_in: bool,
    /// The user pre-approved a subscription request from the contact.
    pub approved: bool,
    /// Part of the user's visible roster. An item created only to remember
    /// a pending inbound request is not listed until the user adds it.
    pub listed: bool,
}

impl RosterItem {
    /// A fresh, empty item for `jid`.
    pub fn new(jid: impl Into<String>) -> RosterItem {
        RosterItem {
            jid: jid.into(),
            name: None,
            groups: Vec::new(),
            subscription: Subscription::None,
            ask: false,
            pending_in: false,
            approved: false,
            listed: false,
        }
    }

    /// An item that carries no state at all can be deleted from storage.
    pub fn is_void(&self) -> bool {
        !self.listed
            && self.subscription == Subscription::None
            && !self.ask
            && !self.pending_in
            && !self.approved
    }
}
