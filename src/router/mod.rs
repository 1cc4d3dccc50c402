//! Read/write routing: which server may run a statement ([`classify`]), what the
//! router knows about each database's servers ([`topology`]).

pub mod classify;
pub mod topology;
