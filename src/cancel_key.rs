//! The cancel keys pgmux gives its clients: how one is made, which pgmux instance
//! made it, and whether it is genuine.
//!
//! A key is what BackendKeyData carries: a process id and a secret. pgmux's keys are
//! its own (the server's real key never reaches a client), and they carry the
//! *instance* that issued them, so that any instance of a fleet that receives a
//! CancelRequest (on a new connection, which a load balancer may send anywhere) can
//! tell which instance holds the client.
//!
//! - **Protocol 3.0** (a 4-byte secret): the process id is random (31 bits, unique in
//!   the instance); the secret is the instance id (16 bits) then 16 random bits. A
//!   guesser must find 47 random bits, against PostgreSQL's own 32.
//! - **Protocol 3.2** (a longer secret; PostgreSQL 18 uses 32 bytes, up to 256 are
//!   allowed): 32 bytes, `[version = 1][instance id: 2][random: 13][MAC: 16]`, the MAC
//!   an HMAC-SHA-256 (truncated to 16 bytes) of the process id and the first 16
//!   bytes, keyed with a key derived from `fleet.secret` (random per process without
//!   a fleet). Any instance of the fleet can check a long key before it forwards it:
//!   a forged one is dropped where it arrives.
//!
//! Whatever the format, only the issuing instance decides, by comparing the whole
//! secret in constant time with the one it issued: a key that belongs to nobody
//! cancels nothing.

use hmac::{Hmac, Mac};
use rand::{Rng, RngCore};
use sha2::Sha256;

/// The version byte of pgmux's long keys.
pub const LONG_KEY_VERSION: u8 = 1;
/// Length of pgmux's long (protocol 3.2) secrets.
pub const LONG_KEY_LEN: usize = 32;
/// Longest secret the protocol allows in a CancelRequest.
pub const MAX_KEY_LEN: usize = crate::protocol::startup::MAX_CANCEL_KEY_LEN;

/// A secret as issued: 4 bytes for protocol 3.0 clients, 32 for 3.2.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Secret {
    Short([u8; 4]),
    Long([u8; LONG_KEY_LEN]),
}

impl Secret {
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Secret::Short(b) => b,
            Secret::Long(b) => b,
        }
    }
}

/// What a received key says about where it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Issued (or claiming to be issued) by the instance with this id.
    Instance(u16),
    /// A long key whose MAC is wrong, or a length pgmux never issues: forged.
    Forged,
}

/// Makes and reads this instance's keys.
#[derive(Clone)]
pub struct KeyMaker {
    instance: u16,
    mac_key: [u8; 32],
}

impl std::fmt::Debug for KeyMaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyMaker").field("instance", &self.instance).finish_non_exhaustive()
    }
}

impl KeyMaker {
    /// Keys of instance `instance`; long keys are authenticated with a key derived
    /// from the fleet's shared secret, or with a random one when there is no fleet.
    pub fn new(instance: u16, fleet_secret: Option<&[u8]>) -> KeyMaker {
        let mac_key = match fleet_secret {
            Some(s) => {
                let mut m = Hmac::<Sha256>::new_from_slice(s).expect("HMAC takes any key length");
                m.update(b"pgmux cancel keys v1");
                m.finalize().into_bytes().into()
            }
            None => rand::thread_rng().gen(),
        };
        KeyMaker { instance, mac_key }
    }

    /// This instance's id, as its keys carry it.
    pub fn instance(&self) -> u16 {
        self.instance
    }

    /// A random process id (positive, as PostgreSQL's are).
    pub fn pid(rng: &mut impl Rng) -> i32 {
        rng.gen_range(1..i32::MAX)
    }

    /// A fresh secret for a client with process id `pid`; `long` for protocol 3.2.
    pub fn secret(&self, pid: i32, long: bool, rng: &mut impl RngCore) -> Secret {
        let id = self.instance.to_be_bytes();
        if !long {
            let r: [u8; 2] = rng.gen();
            return Secret::Short([id[0], id[1], r[0], r[1]]);
        }
        let mut b = [0u8; LONG_KEY_LEN];
        b[0] = LONG_KEY_VERSION;
        b[1..3].copy_from_slice(&id);
        rng.fill_bytes(&mut b[3..16]);
        let mac = self.mac(pid, &b[..16]);
        b[16..].copy_from_slice(&mac);
        Secret::Long(b)
    }

    /// Which instance a received key names (checking a long key's MAC).
    pub fn origin(&self, pid: i32, secret: &[u8]) -> Origin {
        match secret.len() {
            4 => Origin::Instance(u16::from_be_bytes([secret[0], secret[1]])),
            LONG_KEY_LEN if secret[0] == LONG_KEY_VERSION => {
                let mac = self.mac(pid, &secret[..16]);
                if crate::auth::ct_eq(&mac, &secret[16..]) {
                    Origin::Instance(u16::from_be_bytes([secret[1], secret[2]]))
                } else {
                    Origin::Forged
                }
            }
            _ => Origin::Forged,
        }
    }

    fn mac(&self, pid: i32, head: &[u8]) -> [u8; 16] {
        let mut m = Hmac::<Sha256>::new_from_slice(&self.mac_key).expect("HMAC takes any key length");
        m.update(&pid.to_be_bytes());
        m.update(head);
        let full = m.finalize().into_bytes();
        full[..16].try_into().expect("16 of 32 bytes")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_keys_carry_the_instance_and_16_random_bits() {
        let k = KeyMaker::new(0xBEEF, None);
        let mut rng = rand::thread_rng();
        let pid = KeyMaker::pid(&mut rng);
        assert!(pid > 0);
        let s = k.secret(pid, false, &mut rng);
        assert_eq!(s.as_bytes().len(), 4);
        assert_eq!(&s.as_bytes()[..2], &[0xBE, 0xEF]);
        assert_eq!(k.origin(pid, s.as_bytes()), Origin::Instance(0xBEEF));
        let others: std::collections::HashSet<_> = (0..64).map(|_| k.secret(pid, false, &mut rng)).collect();
        assert!(others.len() > 32, "random low bits");
    }

    #[test]
    fn long_keys_are_versioned_and_authenticated_across_the_fleet() {
        let a = KeyMaker::new(7, Some(b"fleet secret"));
        let b = KeyMaker::new(9, Some(b"fleet secret"));
        let outsider = KeyMaker::new(9, Some(b"another secret"));
        let mut rng = rand::thread_rng();
        let s = a.secret(1234, true, &mut rng);
        let bytes = s.as_bytes();
        assert_eq!((bytes.len(), bytes[0]), (32, LONG_KEY_VERSION));
        assert_eq!(b.origin(1234, bytes), Origin::Instance(7), "another instance of the fleet reads it");
        assert_eq!(outsider.origin(1234, bytes), Origin::Forged, "without the fleet secret it is not genuine");
        assert_eq!(b.origin(1235, bytes), Origin::Forged, "the MAC covers the process id");
        let mut tampered = bytes.to_vec();
        tampered[2] ^= 1;
        assert_eq!(b.origin(1234, &tampered), Origin::Forged, "the MAC covers the instance id");
        assert_eq!(b.origin(1234, &[1; 12]), Origin::Forged, "a length pgmux never issues");
    }

    #[test]
    fn without_a_fleet_each_process_has_its_own_mac_key() {
        let a = KeyMaker::new(1, None);
        let b = KeyMaker::new(1, None);
        let s = a.secret(5, true, &mut rand::thread_rng());
        assert_eq!(a.origin(5, s.as_bytes()), Origin::Instance(1));
        assert_eq!(b.origin(5, s.as_bytes()), Origin::Forged);
    }
}
