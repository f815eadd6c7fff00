//! XML for XMPP streams: the incremental framer that turns socket bytes
//! into zero-copy [`Stanza`]s while enforcing RFC 6120 §11, escaping, and a
//! small element tree for the few stanzas that are parsed deeply.
//!
//! Nothing here does I/O. The forwarding path is `Framer` → `Stanza` →
//! `Stanza::splice` → `Frame`; `Element` is for the stanzas the server
//! itself must understand.

pub mod build;
pub mod child;
pub mod element;
pub mod escape;
pub mod framer;
mod lex;
pub mod ns;
mod scope;
pub mod stanza;

pub use build::StanzaBuilder;
pub use element::{Element, ElementError, Node};
pub use framer::{Framer, FramerEvent, MAX_DEPTH, StreamHeader};
pub use lex::MAX_ATTRIBUTES;
pub use scope::MAX_PREFIX_DECLARATIONS;
pub use stanza::{Frame, Stanza, StanzaKind};
