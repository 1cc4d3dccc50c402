//! What pgmux instances say to each other, and how a receiver knows a peer said it.
//!
//! Peers talk on each other's client port (the address in `fleet.peers`), so a fleet
//! needs no port of its own: a peer packet looks like a startup packet (length, then
//! a request code) with a code of pgmux's own, `1234.5690` (PostgreSQL uses 5678 to
//! 5680 for CancelRequest, SSLRequest and GSSENCRequest). Then:
//!
//! ```text
//! kind: u8 | sent_at: u64 (unix ms) | body | mac: [u8; 32]
//! ```
//!
//! `mac` is HMAC-SHA-256 over everything before it (the length and code included),
//! keyed with a key derived from `fleet.secret`. A packet with a wrong MAC, or sent
//! more than [`MAX_SKEW`] away from the receiver's clock, is dropped. Two kinds:
//!
//! - **Heartbeat**: the sender's [`Beat`]; the receiver answers on the same
//!   connection with its own, so one round trip tells both sides about each other.
//! - **Cancel**: a CancelRequest's key forwarded to the instance that issued it. The
//!   receiver acts on it as if a client had sent it there, and never forwards it again.

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The request code of a peer packet (the untyped first packets are protocol's).
pub use crate::protocol::startup::FLEET_REQUEST_CODE;
/// Packets sent further than this from the receiver's clock are refused.
pub const MAX_SKEW_MS: u64 = 30_000;
/// Longest peer packet (a cancel carries at most a 256-byte key).
pub const MAX_PACKET: usize = 1024;
const MAC_LEN: usize = 32;

/// An instance's state as its peers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PeerState {
    /// Serving, or about to: it counts in the budget.
    Ready = 1,
    /// Draining after SIGTERM: it still holds connections until it is gone.
    Draining = 2,
}

/// One heartbeat: who the sender is and what it believes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Beat {
    /// Random per process: tells a restarted instance from the one before, and an
    /// instance from itself.
    pub nonce: u64,
    /// The id in the cancel keys it issues.
    pub instance: u16,
    pub state: PeerState,
    /// The set of instances it counts as alive (see `fleet::view`), as a hash.
    pub view: u64,
    /// Its server connections are within its share under that view.
    pub compliant: bool,
}

/// A peer packet, decoded and authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet {
    Heartbeat(Beat),
    Cancel { pid: i32, secret: Vec<u8> },
}

/// Why a packet was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("peer packet is malformed")]
    Malformed,
    #[error("peer packet is not signed with this fleet's secret")]
    BadMac,
    #[error("peer packet was sent too far from this instance's clock")]
    Stale,
}

const HEARTBEAT: u8 = 1;
const CANCEL: u8 = 2;

/// Signs and checks peer packets with the fleet's key.
#[derive(Clone)]
pub struct Signer {
    key: [u8; 32],
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(..)")
    }
}

impl Signer {
    pub fn new(fleet_secret: &[u8]) -> Signer {
        let mut m = Hmac::<Sha256>::new_from_slice(fleet_secret).expect("HMAC takes any key length");
        m.update(b"pgmux fleet packets v1");
        Signer { key: m.finalize().into_bytes().into() }
    }

    fn mac(&self, bytes: &[u8]) -> [u8; MAC_LEN] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.key).expect("HMAC takes any key length");
        m.update(bytes);
        m.finalize().into_bytes().into()
    }

    /// The whole packet, length prefix included, ready to write.
    pub fn encode(&self, packet: &Packet, now_ms: u64) -> Vec<u8> {
        let mut b = vec![0, 0, 0, 0];
        b.extend_from_slice(&FLEET_REQUEST_CODE.to_be_bytes());
        match packet {
            Packet::Heartbeat(beat) => {
                b.push(HEARTBEAT);
                b.extend_from_slice(&now_ms.to_be_bytes());
                b.extend_from_slice(&beat.nonce.to_be_bytes());
                b.extend_from_slice(&beat.instance.to_be_bytes());
                b.push(beat.state as u8);
                b.extend_from_slice(&beat.view.to_be_bytes());
                b.push(beat.compliant as u8);
            }
            Packet::Cancel { pid, secret } => {
                b.push(CANCEL);
                b.extend_from_slice(&now_ms.to_be_bytes());
                b.extend_from_slice(&pid.to_be_bytes());
                b.extend_from_slice(secret);
            }
        }
        let len = (b.len() + MAC_LEN) as i32;
        b[..4].copy_from_slice(&len.to_be_bytes());
        let mac = self.mac(&b);
        b.extend_from_slice(&mac);
        b
    }

    /// Reads a packet's body: what follows the length and the request code.
    pub fn decode(&self, body: &[u8], now_ms: u64) -> Result<Packet, WireError> {
        let Some(split) = body.len().checked_sub(MAC_LEN) else { return Err(WireError::Malformed) };
        let (signed, mac) = body.split_at(split);
        let mut whole = Vec::with_capacity(8 + signed.len());
        whole.extend_from_slice(&((8 + body.len()) as i32).to_be_bytes());
        whole.extend_from_slice(&FLEET_REQUEST_CODE.to_be_bytes());
        whole.extend_from_slice(signed);
        if !crate::auth::ct_eq(&self.mac(&whole), mac) {
            return Err(WireError::BadMac);
        }
        let mut r = Reader(signed);
        let kind = r.u8()?;
        let sent = u64::from_be_bytes(r.take()?);
        if sent.abs_diff(now_ms) > MAX_SKEW_MS {
            return Err(WireError::Stale);
        }
        let packet = match kind {
            HEARTBEAT => {
                let nonce = u64::from_be_bytes(r.take()?);
                let instance = u16::from_be_bytes(r.take()?);
                let state = match r.u8()? {
                    1 => PeerState::Ready,
                    2 => PeerState::Draining,
                    _ => return Err(WireError::Malformed),
                };
                let view = u64::from_be_bytes(r.take()?);
                let compliant = r.u8()? != 0;
                Packet::Heartbeat(Beat { nonce, instance, state, view, compliant })
            }
            CANCEL => {
                let pid = i32::from_be_bytes(r.take()?);
                let secret = std::mem::take(&mut r.0).to_vec();
                if secret.len() < 4 || secret.len() > crate::cancel_key::MAX_KEY_LEN {
                    return Err(WireError::Malformed);
                }
                Packet::Cancel { pid, secret }
            }
            _ => return Err(WireError::Malformed),
        };
        if !r.0.is_empty() {
            return Err(WireError::Malformed);
        }
        Ok(packet)
    }
}

struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take<const N: usize>(&mut self) -> Result<[u8; N], WireError> {
        if self.0.len() < N {
            return Err(WireError::Malformed);
        }
        let (head, rest) = self.0.split_at(N);
        self.0 = rest;
        Ok(head.try_into().expect("N bytes"))
    }

    fn u8(&mut self) -> Result<u8, WireError> {
        Ok(self.take::<1>()?[0])
    }
}

/// Milliseconds since the Unix epoch, as packets carry them.
pub fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(packet: &[u8]) -> &[u8] {
        &packet[8..]
    }

    #[test]
    fn packets_round_trip_and_look_like_startup_packets() {
        let s = Signer::new(b"secret");
        let beat = Beat { nonce: 42, instance: 7, state: PeerState::Draining, view: 99, compliant: true };
        for p in [Packet::Heartbeat(beat), Packet::Cancel { pid: 5, secret: vec![1; 32] }] {
            let wire = s.encode(&p, 1_000_000);
            assert_eq!(i32::from_be_bytes(wire[..4].try_into().unwrap()) as usize, wire.len());
            assert_eq!(i32::from_be_bytes(wire[4..8].try_into().unwrap()), FLEET_REQUEST_CODE);
            assert_eq!(s.decode(body(&wire), 1_000_500).unwrap(), p);
        }
    }

    #[test]
    fn forged_tampered_and_stale_packets_are_refused() {
        let s = Signer::new(b"secret");
        let wire = s.encode(&Packet::Cancel { pid: 5, secret: vec![9; 4] }, 1_000_000);
        assert_eq!(Signer::new(b"other").decode(body(&wire), 1_000_000), Err(WireError::BadMac));
        let mut tampered = wire.clone();
        tampered[14] ^= 1;
        assert_eq!(s.decode(body(&tampered), 1_000_000), Err(WireError::BadMac));
        assert_eq!(s.decode(body(&wire), 1_000_000 + MAX_SKEW_MS + 1), Err(WireError::Stale));
        assert_eq!(s.decode(&body(&wire)[..40], 1_000_000), Err(WireError::BadMac), "truncated");
        assert_eq!(s.decode(&[1, 2, 3], 1_000_000), Err(WireError::Malformed));
    }
}
