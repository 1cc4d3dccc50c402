//! Read/write routing: which server may run a statement ([`classify`]).

pub mod classify;
