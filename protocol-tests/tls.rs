//! TLS on both sides, against a test CA made at run time: verify-full and channel
//! binding with tokio-postgres and psql, direct TLS negotiation, plain clients
//! refused under `mode: require`, certificate reload without dropping clients, and
//! pgmux's own TLS to PostgreSQL.

mod common;

use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use common::pki::{make_pki, make_pki_for, Pki};
use common::*;

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn client_config(ca: &Path, alpn: bool) -> rustls::ClientConfig {
    use rustls::pki_types::{pem::PemObject, CertificateDer};
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let mut c = rustls::ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_no_client_auth();
    if alpn {
        c.alpn_protocols = vec![b"postgresql".to_vec()];
    }
    c
}

/// tokio-postgres over TLS, checking the certificate against `ca` for `localhost`.
async fn connect_tls(port: u16, ca: &Path, extra: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(ca, false));
    let conn_str = format!("host=localhost port={port} user=app password=app dbname=app sslmode=require connect_timeout=10 {extra}");
    let (client, conn) = tokio_postgres::connect(&conn_str, tls).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(client)
}

fn psql(conn: &str, sql: &str) -> (bool, String) {
    let out = Command::new(pgmux::cluster::pg_bindir().join("psql"))
        .args(["-X", "-A", "-t", "-c", sql, conn])
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("run psql");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.success(), text.trim().to_string())
}

fn tls_setup(pki: &Pki, mode: &str) -> Setup {
    Setup { extra: format!("tls:\n  mode: {mode}\n  cert: {}\n  key: {}\n", pki.cert.display(), pki.key.display()), ..Setup::default() }
}

#[test]
fn verify_full_with_channel_binding() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let other = make_pki(dir.path(), "b");
    let p = tls_setup(&pki, "require").start();
    mt().block_on(async {
        // tokio-postgres: chain and host name checked, SCRAM-SHA-256-PLUS required.
        let c = connect_tls(p.port, &pki.ca, "channel_binding=require").await.expect("TLS login with channel binding");
        assert_eq!(scalar(&c, "SELECT 40 + 2").await, "42");
        // The wrong CA: the handshake fails on the client's side.
        assert!(connect_tls(p.port, &other.ca, "").await.is_err(), "a certificate from another CA was accepted");
        // A plain client under mode require: refused as a hostssl-only server does.
        let e = p.connect_as("app", "app", "app").await.map(|_| ()).expect_err("plain login refused");
        assert_eq!(sqlstate(&e).as_deref(), Some("28000"), "{e}");
    });
    // libpq (psql): verify-full and channel_binding=require.
    let base = format!("host=localhost port={} user=app password=app dbname=app sslrootcert={}", p.port, pki.ca.display());
    let (ok, out) =
        psql(&format!("{base} sslmode=verify-full channel_binding=require"), "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()");
    assert!(ok, "psql verify-full: {out}");
    let (ok, out) = psql(&format!("{base} sslmode=verify-full"), "SHOW ssl");
    assert!(ok, "psql verify-full, binding preferred: {out}");
    // A host name the certificate does not carry.
    let wrong_host = base.replace("host=localhost", "host=127.0.0.2 hostaddr=127.0.0.1");
    let (ok, out) = psql(&format!("{wrong_host} sslmode=verify-full"), "SELECT 1");
    assert!(!ok && out.contains("does not match host name"), "{out}");
    let (ok, out) = psql(&format!("{base} sslmode=disable"), "SELECT 1");
    assert!(!ok && out.contains("SSL required"), "{out}");
    assert!(p.log_text().contains("28000") || p.log_text().contains("SSL required"));
}

#[test]
fn wrong_password_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let p = tls_setup(&pki, "allow").start();
    mt().block_on(async {
        let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(&pki.ca, false));
        let conn_str = format!("host=localhost port={} user=app password=wrong dbname=app sslmode=require channel_binding=require", p.port);
        let e = tokio_postgres::connect(&conn_str, tls).await.map(|_| ()).expect_err("wrong password refused");
        assert_eq!(sqlstate(&e).as_deref(), Some("28P01"), "{e}");
        // mode allow: plain clients still get in.
        let c = p.connect().await;
        assert_eq!(scalar(&c, "SELECT 1").await, "1");
    });
}

/// PostgreSQL 17's `sslnegotiation=direct`: a ClientHello first, with ALPN
/// "postgresql"; without ALPN the connection is refused (08P01).
#[test]
fn direct_tls_negotiation() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let p = tls_setup(&pki, "require").start();
    mt().block_on(async {
        let startup = {
            let mut body = vec![0, 3, 0, 0];
            for (k, v) in [("user", "app"), ("database", "app")] {
                body.extend_from_slice(k.as_bytes());
                body.push(0);
                body.extend_from_slice(v.as_bytes());
                body.push(0);
            }
            body.push(0);
            let mut pkt = ((body.len() + 4) as i32).to_be_bytes().to_vec();
            pkt.extend(body);
            pkt
        };
        let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
        for alpn in [true, false] {
            let connector = tokio_rustls::TlsConnector::from(Arc::new(client_config(&pki.ca, alpn)));
            let tcp = tokio::net::TcpStream::connect(("127.0.0.1", p.port)).await.unwrap();
            let mut tls = connector.connect(name.clone(), tcp).await.expect("direct TLS handshake");
            tls.write_all(&startup).await.unwrap();
            let mut head = [0u8; 5];
            tls.read_exact(&mut head).await.unwrap();
            let mut body = vec![0u8; i32::from_be_bytes(head[1..5].try_into().unwrap()) as usize - 4];
            tls.read_exact(&mut body).await.unwrap();
            if alpn {
                // AuthenticationSASL offering channel binding first.
                assert_eq!(head[0], b'R');
                let text = String::from_utf8_lossy(&body);
                assert!(text.contains("SCRAM-SHA-256-PLUS") && text.contains("SCRAM-SHA-256\0"), "{text:?}");
            } else {
                assert_eq!(head[0], b'E');
                assert!(String::from_utf8_lossy(&body).contains("08P01"));
            }
        }
    });
}

/// RELOAD reads the certificate files again: new logins see the new certificate,
/// clients already connected keep going.
#[test]
fn certificate_reload_keeps_clients() {
    let dir = tempfile::tempdir().unwrap();
    let old = make_pki(dir.path(), "old");
    let new = make_pki(dir.path(), "new");
    let live = Pki { ca: old.ca.clone(), cert: dir.path().join("live.pem"), key: dir.path().join("live.key") };
    std::fs::copy(&old.cert, &live.cert).unwrap();
    std::fs::copy(&old.key, &live.key).unwrap();
    let p = tls_setup(&live, "require").start();
    mt().block_on(async {
        let before = connect_tls(p.port, &old.ca, "channel_binding=require").await.expect("login with the old certificate");
        std::fs::copy(&new.cert, &live.cert).unwrap();
        std::fs::copy(&new.key, &live.key).unwrap();
        let console = p.connect_as("admin", "admin", "pgmux").await;
        // The console itself needs TLS under mode require.
        assert!(console.is_err());
        let console = connect_tls_as(p.port, &old.ca, "admin", "pgmux").await;
        console.simple_query("RELOAD").await.expect("RELOAD");
        assert_eq!(scalar(&before, "SELECT 'still here'").await, "still here");
        let after = connect_tls(p.port, &new.ca, "channel_binding=require").await.expect("login with the new certificate");
        assert_eq!(scalar(&after, "SELECT 2").await, "2");
        assert!(connect_tls(p.port, &old.ca, "").await.is_err(), "the old certificate is still served");
        // A broken key file: RELOAD is refused and the running certificate stays.
        std::fs::write(&live.key, "not a key").unwrap();
        let console = connect_tls_as(p.port, &new.ca, "admin", "pgmux").await;
        assert!(console.simple_query("RELOAD").await.is_err(), "RELOAD with a broken key accepted");
        assert!(connect_tls(p.port, &new.ca, "").await.is_ok());
    });
}

async fn connect_tls_as(port: u16, ca: &Path, user: &str, db: &str) -> tokio_postgres::Client {
    let tls = tokio_postgres_rustls::MakeRustlsConnect::new(client_config(ca, false));
    let conn_str = format!("host=localhost port={port} user={user} password={user} dbname={db} sslmode=require");
    let (client, conn) = tokio_postgres::connect(&conn_str, tls).await.expect("TLS login");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// Turns on TLS in the primary of this binary's cluster, with a certificate from `pki`.
fn primary_with_tls(pki: &Pki) {
    let c = cluster();
    let dir = c.dir().join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("server.crt"), dir.join("server.key"));
    std::fs::copy(&pki.cert, &cert).unwrap();
    std::fs::copy(&pki.key, &key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    // The server runs as the owner of its data directory; the files must be its own.
    let owner = std::fs::metadata(c.dir()).map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap();
    let group = std::fs::metadata(c.dir()).map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap();
    for f in [&dir, &cert, &key] {
        std::os::unix::fs::chown(f, Some(owner), Some(group)).unwrap();
    }
    for sql in [
        format!("ALTER SYSTEM SET ssl_cert_file = '{}'", cert.display()),
        format!("ALTER SYSTEM SET ssl_key_file = '{}'", key.display()),
        "ALTER SYSTEM SET ssl = on".to_string(),
        "SELECT pg_reload_conf()".to_string(),
    ] {
        c.psql(c.primary.port, "postgres", &sql).unwrap();
    }
    // The postmaster reloads in the background: wait until TLS is on.
    let conn = format!("host=127.0.0.1 port={} user=postgres password=postgres dbname=postgres sslmode=require", c.primary.port);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !psql(&conn, "SELECT 1").0 {
        assert!(std::time::Instant::now() < deadline, "the primary did not turn TLS on: {}", psql(&conn, "SELECT 1").1);
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

/// pgmux's own connections to PostgreSQL, checked from the server's side in
/// pg_stat_ssl: verify-full against the CA and the host name, verify-ca against the
/// CA only, prefer/require with any certificate; the wrong CA or name is refused.
#[test]
fn server_side_tls() {
    let dir = tempfile::tempdir().unwrap();
    // The server's certificate names only "localhost".
    let pki = make_pki_for(dir.path(), "pg", &["localhost"]);
    let other = make_pki(dir.path(), "other");
    primary_with_tls(&pki);
    let c = cluster();
    let yaml = |port: u16, mode: &str, ca: &Path, host: &str| {
        format!(
            "listen: 127.0.0.1:{port}\nserver_tls:\n  mode: {mode}\n  ca: {}\nusers:\n  - name: app\n    password: app\ndatabases:\n  app:\n    primary: {host}:{}\n",
            ca.display(),
            c.primary.port
        )
    };
    let ssl_in_use = "SELECT ssl::text FROM pg_stat_ssl WHERE pid = pg_backend_pid()";
    for (mode, host) in [("verify-full", "localhost"), ("verify-ca", "127.0.0.1"), ("prefer", "127.0.0.1"), ("require", "127.0.0.1")] {
        let p = start_config(|port| yaml(port, mode, &pki.ca, host));
        mt().block_on(async {
            let client = p.connect().await;
            assert_eq!(scalar(&client, ssl_in_use).await, "true", "server_tls mode {mode}");
            // 10 MB each way through the relay, TLS on the server side.
            let big = "x".repeat(2000);
            let rows = client.query("SELECT $1::text FROM generate_series(1, 5000)", &[&big]).await.unwrap();
            assert!(rows.len() == 5000 && rows.iter().all(|r| r.get::<_, &str>(0) == big));
        });
    }
    for (ca, host, why) in [(&other.ca, "localhost", "another CA"), (&pki.ca, "127.0.0.1", "a name not in the certificate")] {
        let p = start_config(|port| yaml(port, "verify-full", ca, host));
        mt().block_on(async {
            let e = p.connect_as("app", "app", "app").await.err().unwrap_or_else(|| panic!("verify-full trusted {why}"));
            let msg = message(&e);
            assert!(msg.to_lowercase().contains("certificate"), "{why}: {msg}");
        });
    }
}

static NUMS: [i32; 50] = {
    let mut n = [0; 50];
    let mut i = 0;
    while i < 50 {
        n[i] = i as i32;
        i += 1;
    }
    n
};

/// Results and COPY larger than any buffer cross TLS intact, and a pipeline of
/// queries is answered in order.
#[test]
fn large_transfers_over_tls() {
    use futures_util::SinkExt;
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let p = tls_setup(&pki, "require").start();
    mt().block_on(async {
        let c = connect_tls(p.port, &pki.ca, "").await.unwrap();
        let rows = c.query("SELECT i, repeat(md5(i::text), 30) FROM generate_series(1, 20000) i", &[]).await.unwrap();
        assert_eq!(rows.len(), 20000);
        assert!(rows.iter().enumerate().all(|(n, r)| r.get::<_, i32>(0) == n as i32 + 1 && r.get::<_, &str>(1).len() == 960));
        c.batch_execute("CREATE TEMP TABLE t (line text)").await.unwrap();
        let sink = c.copy_in("COPY t FROM STDIN").await.unwrap();
        futures_util::pin_mut!(sink);
        let line = format!("{}\n", "y".repeat(999));
        for _ in 0..8 {
            sink.send(bytes::Bytes::from(line.repeat(1000))).await.unwrap();
        }
        assert_eq!(sink.finish().await.unwrap(), 8000);
        let total: i64 = c.query_one("SELECT sum(length(line))::int8 FROM t", &[]).await.unwrap().get(0);
        assert_eq!(total, 8000 * 999);
        let args: Vec<[&(dyn tokio_postgres::types::ToSql + Sync); 1]> = (0..50).map(|i| [&NUMS[i] as _]).collect();
        let futures: Vec<_> = args.iter().map(|a| c.query_one("SELECT $1::int4 * 2", a)).collect();
        let results = futures_util::future::join_all(futures).await;
        for (i, r) in results.into_iter().enumerate() {
            assert_eq!(r.unwrap().get::<_, i32>(0), i as i32 * 2);
        }
    });
}

/// Not TLS after 'S', or nothing at all: the connection is closed, and others served.
#[test]
fn broken_handshakes() {
    use std::io::{Read, Write};
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let p = tls_setup(&pki, "require").start_with(|y| y.replace("listen:", "startup_timeout: 1s\nlisten:"));
    let ssl_request = [0u8, 0, 0, 8, 0x04, 0xd2, 0x16, 0x2f];
    let mut silent = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    silent.write_all(&ssl_request).unwrap();
    let mut garbage = std::net::TcpStream::connect(("127.0.0.1", p.port)).unwrap();
    garbage.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    garbage.write_all(&ssl_request).unwrap();
    let mut answer = [0u8; 1];
    garbage.read_exact(&mut answer).unwrap();
    assert_eq!(&answer, b"S");
    garbage.write_all(&[0x17; 600]).unwrap();
    let mut rest = Vec::new();
    let _ = garbage.read_to_end(&mut rest);
    // Either a TLS alert or nothing, then the end of the stream: never plaintext.
    assert!(rest.is_empty() || rest[0] == 0x15, "{rest:?}");
    mt().block_on(async {
        let c = connect_tls(p.port, &pki.ca, "").await.unwrap();
        assert_eq!(scalar(&c, "SELECT 1").await, "1");
    });
    // The silent one is closed by startup_timeout.
    silent.set_read_timeout(Some(std::time::Duration::from_secs(5))).unwrap();
    let mut buf = Vec::new();
    let n = silent.read_to_end(&mut buf).expect("closed by pgmux, not timed out here");
    assert_eq!(&buf[..n.min(1)], b"S");
}

/// Runs `cmd`; its stdout, or a panic with everything it said.
fn output_of(mut cmd: std::process::Command, what: &str) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("{what}: cannot run it ({e}); scripts/test installs the drivers"));
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(out.status.success(), "{what} failed: {text}\n{}", String::from_utf8_lossy(&out.stderr));
    text
}

/// The drivers users bring, over TLS with the certificate checked against the
/// test CA for `localhost`: node-postgres (with SCRAM-SHA-256-PLUS), asyncpg and
/// pgjdbc (`sslmode=verify-full`). Installed by scripts/test, as for drivers.rs.
#[test]
fn drivers_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let pki = make_pki(dir.path(), "a");
    let p = tls_setup(&pki, "require").start();
    let drivers = Path::new(env!("CARGO_MANIFEST_DIR")).join("protocol-tests/drivers");
    let ca = pki.ca.display().to_string();

    let node = format!(
        "const {{ Client }} = require('pg'); const fs = require('fs');
         (async () => {{
           const c = new Client({{ host: 'localhost', port: {port}, user: 'app', password: 'app', database: 'app',
             ssl: {{ ca: fs.readFileSync('{ca}'), servername: 'localhost' }}, enableChannelBinding: true }});
           await c.connect();
           const r = await c.query('select $1::int + 1 as v, ssl from pg_stat_ssl where pid = pg_backend_pid()', [41]);
           console.log(r.rows[0].v);
           await c.end();
         }})().catch(e => {{ console.error(e.message); process.exit(1); }});",
        port = p.port
    );
    let mut cmd = std::process::Command::new("node");
    cmd.args(["-e", &node]).current_dir(drivers.join("node"));
    assert_eq!(output_of(cmd, "node-postgres over TLS"), "42");

    let python = format!(
        "import asyncio, asyncpg, ssl
ctx = ssl.create_default_context(cafile='{ca}')
async def main():
    c = await asyncpg.connect(host='localhost', port={port}, user='app', password='app', database='app', ssl=ctx)
    print(await c.fetchval('select $1::int + 1', 41))
    await c.close()
asyncio.run(main())",
        port = p.port
    );
    let mut cmd = std::process::Command::new(std::env::var("PGMUX_PYTHON").unwrap_or_else(|_| "python3".into()));
    cmd.args(["-c", &python]);
    assert_eq!(output_of(cmd, "asyncpg over TLS"), "42");

    let java = dir.path().join("TlsCheck.java");
    std::fs::write(
        &java,
        "import java.sql.*;
         public class TlsCheck { public static void main(String[] a) throws Exception {
           try (Connection c = DriverManager.getConnection(a[0], \"app\", \"app\");
                PreparedStatement s = c.prepareStatement(\"select ?::int + 1\")) {
             s.setInt(1, 41); ResultSet r = s.executeQuery(); r.next(); System.out.println(r.getInt(1)); } } }",
    )
    .unwrap();
    let jar = std::env::var("PGJDBC_JAR").unwrap_or_else(|_| "/usr/share/java/postgresql.jar".into());
    let url = format!("jdbc:postgresql://localhost:{}/app?sslmode=verify-full&sslrootcert={ca}", p.port);
    let mut cmd = std::process::Command::new("java");
    cmd.args(["-cp", &jar]).arg(&java).arg(&url);
    assert_eq!(output_of(cmd, "pgjdbc over TLS"), "42");
}
