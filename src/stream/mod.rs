//! Stream negotiation as sans-IO state machines (no sockets, no clock):
//! the c2s negotiation and the SASL mechanisms it uses.

pub mod c2s;
pub mod scram;
