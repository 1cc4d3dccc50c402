//! Many pgmux instances that act as one pooler: they find each other (`fleet.peers`
//! or a DNS name), exchange authenticated heartbeats on their client ports, forward
//! a CancelRequest to the instance that holds the client, and divide every server
//! budget among the instances that are alive.
//!
//! - [`wire`]: the peer packets and their authentication;
//! - [`view`]: membership and shares, without I/O;
//! - [`peers`]: the heartbeat rounds, answering peers, forwarding cancels.

pub mod peers;
pub mod view;
pub mod wire;

pub use peers::{Fleet, Forward, Received};

#[cfg(test)]
mod tests;
