//! (in progress)

pub mod scram;
