//! LISTEN/NOTIFY in transaction mode without pinning: listening clients hold no
//! server connection; one connection of pgmux's own per database listens to the
//! union of their channels and fans notifications out.
//!
//! - [`hub`]: who listens to what, and each listener's bounded inbox.

pub mod hub;
