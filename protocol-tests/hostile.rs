//! Bad input gets PostgreSQL's error and a closed connection: never a panic, a hang,
//! unbounded memory, or a server connection lost to the pool.

mod common;

use std::time::{Duration, Instant};

use common::raw::Raw;
use common::{mt, scalar, Setup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the peer closes (bounded); returns what it sent.
async fn read_to_close(s: &mut TcpStream) -> Vec<u8> {
    let mut out = vec![];
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await.expect("pgmux closed the connection").ok();
    out
}

/// The SQLSTATE of the first ErrorResponse in `bytes`.
fn sqlstate_in(bytes: &[u8]) -> Option<String> {
    let start = bytes.iter().position(|&b| b == b'E')?;
    let mut fields = bytes.get(start + 5..)?;
    while let Some((&kind, rest)) = fields.split_first() {
        let end = rest.iter().position(|&b| b == 0)?;
        if kind == b'C' {
            return Some(String::from_utf8_lossy(&rest[..end]).into_owned());
        }
        fields = &rest[end + 1..];
    }
    None
}

#[test]
fn bad_startup_packets() {
    let px = Setup { extra: "startup_timeout: 1s\n".into(), ..Default::default() }.start();
    mt().block_on(async {
        // Garbage, a 2 GB length, a length below the minimum: FATAL 08P01, closed.
        for first in [&b"GET / HTTP/1.1\r\n\r\n"[..], &[0x7f, 0xff, 0xff, 0xff, 0, 3, 0, 0][..], &[0, 0, 0, 2][..]] {
            let mut s = TcpStream::connect(("127.0.0.1", px.port)).await.unwrap();
            s.write_all(first).await.unwrap();
            let reply = read_to_close(&mut s).await;
            assert_eq!(reply.first(), Some(&b'E'), "{first:?} -> {reply:?}");
            assert_eq!(sqlstate_in(&reply).as_deref(), Some("08P01"), "{reply:?}");
        }
        // Silence: closed after startup_timeout.
        let mut s = TcpStream::connect(("127.0.0.1", px.port)).await.unwrap();
        let t0 = Instant::now();
        read_to_close(&mut s).await;
        assert!(t0.elapsed() >= Duration::from_millis(900) && t0.elapsed() < Duration::from_secs(4), "{:?}", t0.elapsed());
        // Many half-open connections do not stop real clients.
        let mut idle = vec![];
        for _ in 0..1000 {
            idle.push(TcpStream::connect(("127.0.0.1", px.port)).await.unwrap());
        }
        let c = px.connect().await;
        assert_eq!(scalar(&c, "select 'still serving'").await, "still serving");
    });
}

/// Bytes sent in the clear right behind an SSLRequest (before the answer to it)
/// are refused as PostgreSQL refuses them (a man in the middle could have put them
/// there); a client that sends its first query right behind its last login message
/// is answered.
#[test]
fn data_behind_an_ssl_request_is_refused_and_a_query_behind_the_login_is_answered() {
    let px = Setup::default().start();
    mt().block_on(async {
        let mut s = TcpStream::connect(("127.0.0.1", px.port)).await.unwrap();
        let mut both = vec![0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
        let startup = b"\0\x03\0\0user\0app\0database\0app\0\0";
        both.extend_from_slice(&((startup.len() + 4) as i32).to_be_bytes());
        both.extend_from_slice(startup);
        s.write_all(&both).await.unwrap();
        let reply = read_to_close(&mut s).await;
        assert_eq!(reply.first(), Some(&b'E'), "{reply:?}");
        assert_eq!(sqlstate_in(&reply).as_deref(), Some("08P01"), "{reply:?}");
        assert!(String::from_utf8_lossy(&reply).contains("received unencrypted data after SSL request"), "{reply:?}");

        let mut query = bytes::BytesMut::new();
        postgres_protocol::message::frontend::query("select 41 + 1", &mut query).unwrap();
        let mut r = Raw::connect_then(px.port, "app", "app", "app", &query).await;
        let answer = r.until_ready(1).await;
        assert_eq!(common::raw::rows(&answer), vec![vec![Some("42".to_string())]]);
    });
}

#[test]
fn bad_messages_after_login() {
    let px = Setup { pool_size: 1, checkout_timeout: "3s", ..Default::default() }.start();
    mt().block_on(async {
        // A 2 GB length prefix: refused before any allocation.
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        c.send(&[b'Q', 0x7f, 0xff, 0xff, 0xff]).await;
        let reply = read_to_close(&mut c.stream).await;
        assert_eq!(sqlstate_in(&reply).as_deref(), Some("08P01"), "{reply:?}");
        // Above max_message_size while a transaction holds the only server connection.
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        c.simple("begin").await;
        let mut big = vec![b'Q'];
        big.extend_from_slice(&(512i32 << 20).to_be_bytes());
        c.send(&big).await;
        let reply = read_to_close(&mut c.stream).await;
        assert_eq!(sqlstate_in(&reply).as_deref(), Some("08P01"), "{reply:?}");
        // A truncated message, then the client vanishes mid-transaction.
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        c.simple("begin").await;
        c.send(&[b'Q', 0, 0, 1, 0, b's', b'e', b'l']).await;
        drop(c);
        // Garbage message types are the server's business: it answers, pgmux relays.
        let mut c = Raw::connect(px.port, "app", "app", "app").await;
        c.send(&[b'?', 0, 0, 0, 4]).await;
        let reply = read_to_close(&mut c.stream).await;
        assert_eq!(sqlstate_in(&reply).as_deref(), Some("08P01"), "{reply:?}");
        // The one server connection came back every time.
        let ok = px.connect().await;
        assert_eq!(scalar(&ok, "select 'pool intact'").await, "pool intact");
    });
}
