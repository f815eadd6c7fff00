//! The TLS / SASL / dialback negotiation settings of the Lync partner
//! model: what a remote domain must, may or may not negotiate. The stream
//! machines take them as input; policy decides them per domain.

/// How one stream feature is negotiated with a partner.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Negotiate {
    Required,
    Optional,
    NotSupported,
}

/// Negotiation settings for one remote domain (the Lync partner model; the
/// default for open federation is tls Required, sasl Optional, dialback
/// true).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerPolicy {
    pub tls: Negotiate,
    pub sasl: Negotiate,
    pub dialback: bool,
}

impl PeerPolicy {
    /// What unlisted domains get when open federation is on: TLS always,
    /// SASL EXTERNAL when the certificate verifies, dialback otherwise
    /// (what ejabberd and Prosody do by default).
    pub fn open_federation() -> PeerPolicy {
        PeerPolicy {
            tls: Negotiate::Required,
            sasl: Negotiate::Optional,
            dialback: true,
        }
    }
}
