//! Stream negotiation as sans-IO state machines (no sockets, no clock):
//! the c2s negotiation and the SASL mechanisms it uses, and the s2s
//! negotiation (STARTTLS, SASL EXTERNAL, Server Dialback) in both directions.

pub mod c2s;
pub mod dialback;
pub mod s2s;
pub mod scram;
