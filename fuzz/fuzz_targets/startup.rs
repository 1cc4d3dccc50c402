//! The first packets of a connection and the SCRAM messages of a login.
//!
//! The first byte picks what the rest is (see `fuzz/README.md`):
//! - 0: a client's first bytes, read as `client::login` reads them: up to three
//!   packets, each a 4-byte length (`startup::check_length`) and a body
//!   (`startup::parse`); the `options` parameter goes through `split_options`.
//! - 1: SCRAM, server side: `client-first \0 client-final` to `ScramServer`
//!   (`@N` in the client-final is replaced with the server's nonce, so the fuzzer
//!   gets past the nonce check to the channel binding and proof checks).
//! - 2: SCRAM, pgmux's client side (`ScramKeyClient`, logging in to a server):
//!   `server-first \0 server-final` (`@N`: the client's nonce).
//! - 3: a whole exchange with a fuzzed password, salt and iteration count: it
//!   must succeed, and a proof with one bit flipped must fail.
//! - 4: `ScramSecret::parse_verifier` and `split_options` on arbitrary text.
#![no_main]

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use pgmux::auth::scram::{ScramError, ScramKeyClient, ScramKeys, ScramSecret, ScramServer};
use pgmux::protocol::startup::{
    check_length, parse, split_options, FirstPacket, StartupError, CANCEL_REQUEST_CODE, GSSENC_REQUEST_CODE,
    MAX_STARTUP_PACKET, SSL_REQUEST_CODE,
};
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 5 {
        0 => first_packets(rest),
        1 => scram_server(rest),
        2 => scram_client(rest),
        3 => scram_round_trip(rest),
        _ => text(rest),
    }
});

fn first_packets(mut input: &[u8]) {
    // login.rs reads at most three negotiation packets.
    for _ in 0..3 {
        let Some(len) = input.get(..4) else { return };
        let len = i32::from_be_bytes(len.try_into().unwrap());
        let n = match check_length(len) {
            Ok(n) => {
                assert!((8..=MAX_STARTUP_PACKET).contains(&n));
                assert_eq!(n as i32, len);
                n
            }
            Err(e) => {
                assert_eq!(e, StartupError::InvalidLength(len as i64));
                assert!(!(8..=MAX_STARTUP_PACKET as i32).contains(&len));
                assert!(e.to_string().contains(&len.to_string()));
                return;
            }
        };
        let Some(body) = input.get(4..n) else { return };
        input = &input[n..];
        let code = i32::from_be_bytes(body[..4].try_into().unwrap());
        match parse(body) {
            Ok(FirstPacket::Ssl) => assert_eq!(code, SSL_REQUEST_CODE),
            Ok(FirstPacket::GssEnc) => assert_eq!(code, GSSENC_REQUEST_CODE),
            Ok(FirstPacket::Cancel { pid, secret }) => {
                assert_eq!(code, CANCEL_REQUEST_CODE);
                assert_eq!(pid.to_be_bytes(), body[4..8]);
                assert_eq!(secret, body[8..]);
                return;
            }
            Ok(FirstPacket::Fleet(rest)) => {
                assert_eq!(code, pgmux::fleet::wire::FLEET_REQUEST_CODE);
                assert_eq!(rest, body[4..]);
                return;
            }
            Ok(FirstPacket::Startup(s)) => {
                assert_eq!(code >> 16, 3);
                assert_eq!(s.minor_version as i32, code & 0xffff);
                // Re-encoding gives back the packet, up to its terminator.
                let mut enc = code.to_be_bytes().to_vec();
                for (k, v) in &s.params {
                    assert!(!k.is_empty() && !k.contains('\0') && !v.contains('\0'));
                    enc.extend_from_slice(k.as_bytes());
                    enc.push(0);
                    enc.extend_from_slice(v.as_bytes());
                    enc.push(0);
                }
                enc.push(0);
                assert_eq!(&body[..enc.len()], &enc[..]);
                assert_eq!(parse(&enc), Ok(FirstPacket::Startup(s.clone())));
                if let Some((k, _)) = s.params.first() {
                    assert!(s.get(k).is_some());
                }
                if let Some(o) = s.get("options") {
                    check_options(o);
                }
                return;
            }
            Err(e) => {
                match e {
                    StartupError::UnsupportedProtocol(maj, min) => {
                        assert_eq!((maj as i32, min as i32), ((code >> 16) & 0xffff, code & 0xffff));
                        assert_ne!(maj, 3);
                    }
                    StartupError::Malformed(_) => {}
                    StartupError::InvalidLength(_) => panic!("parse never judges the length"),
                }
                let _ = e.to_string();
                return;
            }
        }
    }
}

fn check_options(o: &str) {
    if let Ok(settings) = split_options(o) {
        for (k, _) in settings {
            assert!(!k.contains('-'), "{k}");
            assert!(!k.contains('='), "{k}");
        }
    }
}

/// A secret that is cheap to check against (one PBKDF2 iteration).
fn secret() -> &'static ScramSecret {
    static S: OnceLock<ScramSecret> = OnceLock::new();
    S.get_or_init(|| ScramSecret::derive("pencil", b"fuzz-salt-16byte".to_vec(), 1))
}

fn split_nul(b: &[u8]) -> (&[u8], &[u8]) {
    match b.iter().position(|&c| c == 0) {
        Some(i) => (&b[..i], &b[i + 1..]),
        None => (b, &[]),
    }
}

fn replace_nonce(msg: &[u8], nonce: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(msg.len() + nonce.len());
    let mut i = 0;
    while i < msg.len() {
        if msg[i..].starts_with(b"@N") {
            out.extend_from_slice(nonce.as_bytes());
            i += 2;
        } else {
            out.push(msg[i]);
            i += 1;
        }
    }
    out
}

fn scram_server(input: &[u8]) {
    // The first byte picks the connection: plain, TLS (PLUS offered), or TLS with
    // SCRAM-SHA-256-PLUS chosen (binding data to check).
    let (mode, input) = input.split_first().unwrap_or((&0, &[]));
    let cb = [9u8; 32];
    let (plus, offered) = match mode % 3 {
        0 => (false, false),
        1 => (false, true),
        _ => (true, true),
    };
    let (first, fin) = split_nul(input);
    let s = secret();
    let mut server = ScramServer::new(s, plus.then_some(&cb[..]), offered);
    let server_first = match server.client_first(first) {
        Ok(sf) => sf,
        Err(ScramError::ChannelBinding(_)) => {
            // Only a flag that does not fit: binding data without PLUS, none with it,
            // or "y" (a downgrade) when PLUS was offered.
            assert!(plus || first.starts_with(b"p=") || (offered && first.starts_with(b"y,")));
            return;
        }
        Err(ScramError::WrongProof) => panic!("client-first has no proof"),
        Err(ScramError::Malformed(_)) => return,
    };
    let text = std::str::from_utf8(first).expect("accepted client-first is UTF-8");
    assert!(text.starts_with("n,,") || text.starts_with("y,,"), "{text:?}");
    let client_nonce = text[3..].split(',').filter_map(|a| a.strip_prefix("r=")).last().expect("a nonce");
    assert!(!client_nonce.is_empty());
    let nonce = server_first.strip_prefix("r=").and_then(|r| r.split(',').next()).expect("r= first");
    assert!(nonce.starts_with(client_nonce) && nonce.len() > client_nonce.len());
    assert!(server_first.ends_with(&format!(",s={},i=1", B64.encode(&s.salt))));

    let fin = replace_nonce(fin, nonce);
    match server.client_final(&fin) {
        Ok((server_final, client_key)) => {
            // Only a real proof gets here: the key it reveals is the stored key's.
            let stored: [u8; 32] = Sha256::digest(client_key).into();
            assert_eq!(stored, s.stored_key);
            assert!(server_final.starts_with("v="));
        }
        Err(ScramError::ChannelBinding(_)) => panic!("client-final never says that"),
        Err(_) => {}
    }
}

fn scram_client(input: &[u8]) {
    let (first, fin) = split_nul(input);
    let keys = ScramKeys { client_key: [7; 32], server_key: [9; 32] };
    let mut client = ScramKeyClient::new(keys);
    let cf = client.client_first();
    let nonce = cf.strip_prefix("n,,n=,r=").expect("client-first layout").to_string();
    let first = replace_nonce(first, &nonce);
    match client.server_first(&first) {
        Ok(cfin) => {
            let r = cfin.strip_prefix("c=biws,r=").expect("client-final layout");
            assert!(r.starts_with(&nonce));
            let (_, proof) = cfin.rsplit_once(",p=").expect("a proof");
            assert_eq!(B64.decode(proof).expect("base64 proof").len(), 32);
        }
        Err(_) => return,
    }
    // Arbitrary server-final: only the right signature passes, and a fuzzer cannot
    // compute an HMAC.
    if client.server_final(fin).is_ok() {
        let t = std::str::from_utf8(fin).unwrap();
        assert!(t.starts_with("v="));
    }
}

fn scram_round_trip(input: &[u8]) {
    let Some((&iters, rest)) = input.split_first() else { return };
    let Some((&flip, rest)) = rest.split_first() else { return };
    let (password, salt) = split_nul(rest);
    let Ok(password) = std::str::from_utf8(password) else { return };
    let secret = ScramSecret::derive(password, salt.to_vec(), 1 + (iters % 8) as u32);

    // The verifier pgmux would read from a config round-trips.
    let v = format!(
        "SCRAM-SHA-256${}:{}${}:{}",
        secret.iterations,
        B64.encode(&secret.salt),
        B64.encode(secret.stored_key),
        B64.encode(secret.server_key)
    );
    assert_eq!(ScramSecret::parse_verifier(&v).as_ref(), Some(&secret));

    // pgmux's own client (ScramKeyClient) with a wrong ClientKey: refused.
    let mut probe = ScramServer::new(&secret, None, false);
    let wrong = ScramKeys { client_key: [0; 32], server_key: secret.server_key };
    let mut c = ScramKeyClient::new(wrong);
    let sf = probe.client_first(c.client_first().as_bytes()).expect("client-first from pgmux");
    let cfin = c.server_first(sf.as_bytes()).expect("server-first from pgmux");
    // All-zero ClientKey is not the password's: refused.
    assert_eq!(probe.client_final(cfin.as_bytes()).map(|_| ()), Err(ScramError::WrongProof));

    // The real ClientKey, from the password (as a driver would compute it).
    let real = client_key_of(password, &secret);
    let mut server = ScramServer::new(&secret, None, false);
    let mut c = ScramKeyClient::new(ScramKeys { client_key: real, server_key: secret.server_key });
    let sf = server.client_first(c.client_first().as_bytes()).expect("client-first from pgmux");
    let cfin = c.server_first(sf.as_bytes()).expect("server-first from pgmux");
    // One bit of the proof flipped: refused.
    let (head, proof) = cfin.rsplit_once(",p=").unwrap();
    let mut p = B64.decode(proof).unwrap();
    p[(flip as usize / 8) % 32] ^= 1 << (flip % 8);
    let forged = format!("{head},p={}", B64.encode(&p));
    assert_eq!(server.client_final(forged.as_bytes()).map(|_| ()), Err(ScramError::WrongProof));
    // The honest proof: accepted, the revealed key is the real one, the client accepts
    // the server's signature.
    let (server_final, revealed) = server.client_final(cfin.as_bytes()).expect("honest proof accepted");
    assert_eq!(revealed, real);
    c.server_final(server_final.as_bytes()).expect("client accepts the server's signature");
}

/// ClientKey = HMAC-SHA-256(PBKDF2(password, salt, i), "Client Key"), written out
/// here independently of pgmux (RFC 5802).
fn client_key_of(password: &str, secret: &ScramSecret) -> [u8; 32] {
    fn hmac(key: &[u8], msg: &[u8]) -> [u8; 32] {
        // HMAC-SHA-256 per RFC 2104.
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..32].copy_from_slice(&Sha256::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let mut inner = Sha256::new();
        inner.update(k.map(|b| b ^ 0x36));
        inner.update(msg);
        let mut outer = Sha256::new();
        outer.update(k.map(|b| b ^ 0x5c));
        outer.update(inner.finalize());
        outer.finalize().into()
    }
    // PBKDF2-HMAC-SHA-256 with one 32-byte block.
    let mut block = secret.salt.clone();
    block.extend_from_slice(&1u32.to_be_bytes());
    let mut u = hmac(password.as_bytes(), &block);
    let mut salted = u;
    for _ in 1..secret.iterations {
        u = hmac(password.as_bytes(), &u);
        for (s, x) in salted.iter_mut().zip(u) {
            *s ^= x;
        }
    }
    let key = hmac(&salted, b"Client Key");
    let stored: [u8; 32] = Sha256::digest(key).into();
    assert_eq!(stored, secret.stored_key, "pgmux's StoredKey is SHA-256(ClientKey)");
    key
}

fn text(input: &[u8]) {
    let Ok(t) = std::str::from_utf8(input) else { return };
    if let Some(s) = ScramSecret::parse_verifier(t) {
        assert!(s.iterations > 0);
        let v = format!(
            "SCRAM-SHA-256${}:{}${}:{}",
            s.iterations,
            B64.encode(&s.salt),
            B64.encode(s.stored_key),
            B64.encode(s.server_key)
        );
        assert_eq!(ScramSecret::parse_verifier(&v), Some(s));
    }
    check_options(t);
}
