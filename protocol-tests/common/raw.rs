//! A bare-wire client for what drivers never send: hand-built pipelines, truncated
//! or oversized messages, abrupt disconnects.

#![allow(dead_code)]

use bytes::BytesMut;
use postgres_protocol::authentication::sasl::{ChannelBinding, ScramSha256, SCRAM_SHA_256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub struct Raw {
    pub stream: TcpStream,
    pub buf: BytesMut,
    /// The BackendKeyData the login gave (pid, secret: 4 bytes in protocol 3.0,
    /// longer in 3.2).
    pub key: (i32, Vec<u8>),
    /// The version a NegotiateProtocolVersion named, if one came.
    pub negotiated: Option<i32>,
}

/// Protocol versions as a StartupMessage carries them.
pub const PROTOCOL_3_0: i32 = 196608;
pub const PROTOCOL_3_2: i32 = 196610;

/// A backend message reduced to what tests look at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Msg {
    Row(Vec<Option<String>>),
    Complete(String),
    Error { code: String, message: String },
    Ready(u8),
    Notification { channel: String, payload: String },
    Notice(String),
    Parameter { name: String, value: String },
    Other(u8),
}

impl Raw {
    pub async fn connect(port: u16, user: &str, password: &str, db: &str) -> Raw {
        Raw::connect_version(port, user, password, db, PROTOCOL_3_0).await
    }

    /// Logs in asking for protocol `version` (e.g. [`PROTOCOL_3_2`]).
    pub async fn connect_version(port: u16, user: &str, password: &str, db: &str, version: i32) -> Raw {
        Raw::login(port, user, password, db, version, &[]).await
    }

    /// Logs in, sending `early` (a first request) in the same write as the last SCRAM
    /// message, without waiting for the login's answer.
    pub async fn connect_then(port: u16, user: &str, password: &str, db: &str, early: &[u8]) -> Raw {
        Raw::login(port, user, password, db, PROTOCOL_3_0, early).await
    }

    async fn login(port: u16, user: &str, password: &str, db: &str, version: i32, early: &[u8]) -> Raw {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let mut r = Raw { stream, buf: BytesMut::new(), key: (0, vec![]), negotiated: None };
        let mut body = version.to_be_bytes().to_vec();
        for (k, v) in [("user", user), ("database", db)] {
            body.extend_from_slice(k.as_bytes());
            body.push(0);
            body.extend_from_slice(v.as_bytes());
            body.push(0);
        }
        body.push(0);
        let mut out = BytesMut::new();
        out.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        out.extend_from_slice(&body);
        r.send(&out).await;
        let mut scram = None;
        loop {
            out.clear();
            // What postgres-protocol does not parse: a long key, a negotiation.
            if let Some((tag, body)) = r.take_raw(b"Kv").await {
                if tag == b'K' {
                    r.key = (i32::from_be_bytes(body[..4].try_into().unwrap()), body[4..].to_vec());
                } else {
                    r.negotiated = Some(i32::from_be_bytes(body[..4].try_into().unwrap()));
                }
                continue;
            }
            match r.next_message().await {
                Message::AuthenticationSasl(_) => {
                    let s = ScramSha256::new(password.as_bytes(), ChannelBinding::unsupported());
                    frontend::sasl_initial_response(SCRAM_SHA_256, s.message(), &mut out).unwrap();
                    scram = Some(s);
                }
                Message::AuthenticationSaslContinue(b) => {
                    let s = scram.as_mut().unwrap();
                    s.update(b.data()).unwrap();
                    frontend::sasl_response(s.message(), &mut out).unwrap();
                    out.extend_from_slice(early);
                }
                Message::AuthenticationSaslFinal(b) => scram.as_mut().unwrap().finish(b.data()).unwrap(),
                Message::ReadyForQuery(_) => return r,
                Message::ErrorResponse(_) => panic!("login failed"),
                _ => {}
            }
            if !out.is_empty() {
                r.send(&out).await;
            }
        }
    }

    /// The next message whole, if its type is one of `tags` (else it stays buffered).
    async fn take_raw(&mut self, tags: &[u8]) -> Option<(u8, Vec<u8>)> {
        while self.buf.len() < 5 {
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "connection closed");
        }
        if !tags.contains(&self.buf[0]) {
            return None;
        }
        let len = i32::from_be_bytes(self.buf[1..5].try_into().unwrap()) as usize;
        while self.buf.len() < len + 1 {
            let n = self.stream.read_buf(&mut self.buf).await.unwrap();
            assert!(n > 0, "connection closed");
        }
        let m = self.buf.split_to(len + 1);
        Some((m[0], m[5..].to_vec()))
    }

    pub async fn send(&mut self, b: &[u8]) {
        self.stream.write_all(b).await.unwrap();
    }

    pub async fn next_message(&mut self) -> Message {
        loop {
            if let Some(m) = Message::parse(&mut self.buf).unwrap() {
                return m;
            }
            let n = tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.read_buf(&mut self.buf))
                .await
                .expect("timed out waiting for the server")
                .unwrap();
            assert!(n > 0, "connection closed");
        }
    }

    /// Reads the next message, or None when the connection is closed.
    pub async fn try_next(&mut self) -> Option<Msg> {
        loop {
            if self.buf.len() >= 5 {
                if let Ok(Some(m)) = Message::parse(&mut self.buf) {
                    return Some(simplify(m));
                }
            }
            match tokio::time::timeout(std::time::Duration::from_secs(20), self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return None,
                Ok(Ok(_)) => {}
                Err(_) => panic!("timed out waiting for the server"),
            }
        }
    }

    pub async fn next(&mut self) -> Msg {
        simplify(self.next_message().await)
    }

    /// Reads messages up to and including `n` ReadyForQuery.
    pub async fn until_ready(&mut self, n: usize) -> Vec<Msg> {
        let mut v = vec![];
        let mut seen = 0;
        while seen < n {
            let m = self.next().await;
            if matches!(m, Msg::Ready(_)) {
                seen += 1;
            }
            v.push(m);
        }
        v
    }

    pub async fn simple(&mut self, sql: &str) -> Vec<Msg> {
        let mut out = BytesMut::new();
        frontend::query(sql, &mut out).unwrap();
        self.send(&out).await;
        self.until_ready(1).await
    }
}

fn simplify(m: Message) -> Msg {
    use fallible_iterator::FallibleIterator;
    match m {
        Message::DataRow(d) => {
            let buf = d.buffer();
            let vals = d.ranges().map(|r| Ok(r.map(|r| String::from_utf8_lossy(&buf[r]).into_owned()))).collect().unwrap();
            Msg::Row(vals)
        }
        Message::CommandComplete(c) => Msg::Complete(c.tag().unwrap().to_string()),
        Message::ErrorResponse(e) => {
            let mut code = String::new();
            let mut message = String::new();
            let mut f = e.fields();
            while let Some(f) = f.next().unwrap() {
                match f.type_() {
                    b'C' => code = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                    b'M' => message = String::from_utf8_lossy(f.value_bytes()).into_owned(),
                    _ => {}
                }
            }
            Msg::Error { code, message }
        }
        Message::ReadyForQuery(r) => Msg::Ready(r.status()),
        Message::NoticeResponse(n) => {
            let mut f = n.fields();
            let mut message = String::new();
            while let Some(f) = f.next().unwrap() {
                if f.type_() == b'M' {
                    message = String::from_utf8_lossy(f.value_bytes()).into_owned();
                }
            }
            Msg::Notice(message)
        }
        Message::NotificationResponse(n) => {
            Msg::Notification { channel: n.channel().unwrap().to_string(), payload: n.message().unwrap().to_string() }
        }
        Message::ParameterStatus(p) => Msg::Parameter { name: p.name().unwrap().to_string(), value: p.value().unwrap().to_string() },
        Message::ParseComplete => Msg::Other(b'1'),
        Message::BindComplete => Msg::Other(b'2'),
        Message::ParameterDescription(_) => Msg::Other(b't'),
        Message::RowDescription(_) => Msg::Other(b'T'),
        Message::NoData => Msg::Other(b'n'),
        _ => Msg::Other(0),
    }
}

/// Appends Parse(unnamed)/Bind/Describe/Execute for `sql` with text parameters.
pub fn extended(out: &mut BytesMut, sql: &str, params: &[&str]) {
    frontend::parse("", sql, std::iter::empty(), out).unwrap();
    bind(out, "", params);
    frontend::describe(b'P', "", out).unwrap();
    frontend::execute("", 0, out).unwrap();
}

/// Appends Bind of `stmt` (text parameters, text results) to the unnamed portal.
pub fn bind(out: &mut BytesMut, stmt: &str, params: &[&str]) {
    frontend::bind(
        "",
        stmt,
        std::iter::empty::<i16>(),
        params.iter(),
        |p, buf| {
            buf.extend_from_slice(p.as_bytes());
            Ok::<_, Box<dyn std::error::Error + Sync + Send>>(postgres_protocol::IsNull::No)
        },
        Some(0),
        out,
    )
    .map_err(|_| ())
    .unwrap();
}

/// Appends Bind + Execute of a named statement.
pub fn bind_execute(out: &mut BytesMut, stmt: &str, params: &[&str]) {
    bind(out, stmt, params);
    frontend::execute("", 0, out).unwrap();
}

pub fn rows(msgs: &[Msg]) -> Vec<Vec<Option<String>>> {
    msgs.iter().filter_map(|m| if let Msg::Row(r) = m { Some(r.clone()) } else { None }).collect()
}

pub fn errors(msgs: &[Msg]) -> Vec<String> {
    msgs.iter().filter_map(|m| if let Msg::Error { code, .. } = m { Some(code.clone()) } else { None }).collect()
}

/// Sends a CancelRequest with `key` to pgmux at `port` (a new connection, as the
/// protocol wants), and waits for pgmux to close it.
pub async fn cancel(port: u16, key: &(i32, Vec<u8>)) {
    let mut s = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    let mut p = ((16 + key.1.len() - 4) as i32).to_be_bytes().to_vec();
    p.extend_from_slice(&80877102i32.to_be_bytes());
    p.extend_from_slice(&key.0.to_be_bytes());
    p.extend_from_slice(&key.1);
    s.write_all(&p).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), s.read_to_end(&mut rest)).await;
}
