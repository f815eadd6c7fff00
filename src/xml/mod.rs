//! XML for XMPP streams: the incremental framer that turns socket bytes
//! into zero-copy [`Stanza`]s while enforcing RFC 6120 §11, escaping, and a
//! small element tree for the few stanzas that are parsed deeply.

pub mod escape;
