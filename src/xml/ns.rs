//! Every XML namespace fedrouter names, defined once. Modules import the
//! constants from here rather than spelling a namespace themselves, so a
//! typo cannot make one module disagree with another about a namespace.

/// RFC 6120 §4: the stream wrapper (`stream:` prefix).
pub const NS_STREAMS: &str = "http://etherx.jabber.org/streams";
/// Default namespace of client-to-server streams.
pub const NS_CLIENT: &str = "jabber:client";
/// Default namespace of server-to-server streams.
pub const NS_SERVER: &str = "jabber:server";
/// The `xml:` prefix, bound by definition (XML Namespaces §3).
pub const NS_XML: &str = "http://www.w3.org/XML/1998/namespace";
/// RFC 6120 §4.9.3: stream error conditions.
pub const NS_XMPP_STREAMS: &str = "urn:ietf:params:xml:ns:xmpp-streams";
/// RFC 6120 §8.3: stanza error conditions.
pub const NS_STANZAS: &str = "urn:ietf:params:xml:ns:xmpp-stanzas";
/// XEP-0359 Unique and Stable Stanza IDs.
pub const NS_SID: &str = "urn:xmpp:sid:0";
/// RFC 6120 §5: STARTTLS.
pub const NS_TLS: &str = "urn:ietf:params:xml:ns:xmpp-tls";
/// RFC 6120 §6: SASL.
pub const NS_SASL: &str = "urn:ietf:params:xml:ns:xmpp-sasl";
/// RFC 6120 §7: resource binding.
pub const NS_BIND: &str = "urn:ietf:params:xml:ns:xmpp-bind";
/// RFC 3921 §3 session establishment (a no-op kept for old clients).
pub const NS_SESSION: &str = "urn:ietf:params:xml:ns:xmpp-session";
/// RFC 6121 §2: the roster.
pub const NS_ROSTER: &str = "jabber:iq:roster";
/// XEP-0220: server dialback elements.
pub const NS_DIALBACK: &str = "jabber:server:dialback";
/// XEP-0220 §2.4: the dialback stream feature.
pub const NS_DIALBACK_FEATURE: &str = "urn:xmpp:features:dialback";
/// XEP-0199: XMPP ping.
pub const NS_PING: &str = "urn:xmpp:ping";
/// XEP-0030: service discovery info.
pub const NS_DISCO_INFO: &str = "http://jabber.org/protocol/disco#info";
/// XEP-0198 Stream Management.
pub const NS_SM: &str = "urn:xmpp:sm:3";
