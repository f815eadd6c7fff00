//! `loadtest`: a load generator that plays local users over c2s and whole
//! remote domains over s2s against fedrouter or any XMPP server. The binary
//! is a thin shell over [`run`]; the integration smoke tests call the
//! scenarios directly.

pub mod args;
pub mod progress;
pub mod render;
pub mod report;
pub mod sampler;
