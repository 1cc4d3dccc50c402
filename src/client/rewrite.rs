//! Client messages on their way to the server, rewritten for shared statements.
//!
//! In transaction mode, Parse/Bind/Describe/Close naming a client's statement are
//! renamed to its pgmux-wide name, and the statement is prepared first (a Parse is
//! slipped in) when the server connection does not have it yet. A client's unnamed
//! statement is re-sent when the server's unnamed statement is someone else's (a
//! Parse in one transaction, its Bind in the next). For every message that the server
//! will answer with ParseComplete/CloseComplete/ReadyForQuery, an [`Expect`] records
//! what to do with that answer (forward it, or hide pgmux's own): see
//! `client::responses`. A client's Parse always really prepares (Close, then Parse),
//! so it gets a plan for today's schema even if the statement was prepared before.
//!
//! In session mode nothing is rewritten: bytes are copied as they are.

use std::collections::VecDeque;

use bytes::BytesMut;

use crate::prepared::{server_name, ClientStatements, Expect, Registry, ServerStatements};
use crate::protocol::codes::*;
use crate::protocol::frame::cstr;
use crate::protocol::frontend;
use crate::sql::{merge_effects, SessionEffects};

/// A name no statement has: closing it is a harmless no-op on the server.
const NO_STATEMENT: &str = "pgmux_none";

pub struct Rewriter<'a> {
    pub client: &'a mut ClientStatements,
    pub server: &'a mut ServerStatements,
    pub registry: &'a Registry,
    pub expect: &'a mut VecDeque<Expect>,
    /// What the client's queries in this transaction do to its session.
    pub effects: &'a mut SessionEffects,
    /// Refuse session-only features instead of pinning the client.
    pub reject_session_features: bool,
}

/// Answers like `DEALLOCATE name` (ending with CommandComplete "DEALLOCATE") without
/// touching any statement but its own.
const DEALLOCATE_STANDIN: &str = "PREPARE pgmux_deallocate AS SELECT 1; DEALLOCATE pgmux_deallocate";

/// The statement name of a lone `DEALLOCATE [PREPARE] name` (not `ALL`).
fn deallocate_target(sql: &[u8]) -> Option<Vec<u8>> {
    use crate::sql::lexer::{Lexer, Tok};
    let is = |t: &Tok<'_>, kw: &str| matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw.as_bytes()));
    // Every simple query passes here: the common answer is found by one byte (the
    // text starts with D, or with a comment the lexer skips).
    if !matches!(sql.trim_ascii_start().first(), Some(b'd' | b'D' | b'/' | b'-')) {
        return None;
    }
    let mut lexer = Lexer::new(sql);
    let first = lexer.next()?;
    if !is(&first, "deallocate") {
        return None;
    }
    let mut toks = [Tok::Other; 5];
    toks[0] = first;
    let mut n = 1;
    for t in lexer.take(4) {
        toks[n] = t;
        n += 1;
    }
    let rest = match &toks[..n] {
        [first, rest @ ..] if is(first, "deallocate") => rest,
        _ => return None,
    };
    let rest = match rest {
        [p, rest @ ..] if is(p, "prepare") => rest,
        _ => rest,
    };
    match rest {
        [Tok::Word(w)] | [Tok::Word(w), Tok::Semicolon] if !w.eq_ignore_ascii_case(b"all") => Some(w.to_ascii_lowercase()),
        [Tok::Quoted(w)] | [Tok::Quoted(w), Tok::Semicolon] => Some(w.to_vec()),
        _ => None,
    }
}

/// SQL that fails with a clear error in place of a refused statement.
fn rejection_sql(reason: &str) -> String {
    format!(
        "DO $pgmux$BEGIN RAISE EXCEPTION USING ERRCODE = '0A000', MESSAGE = 'pgmux: {reason} needs a server connection of its own, and this database is configured with session_features: reject', HINT = 'Use session_features: pin, or a session-mode pool.'; END$pgmux$"
    )
}

/// Why a client message could not be understood.
pub type Malformed = &'static str;

impl Rewriter<'_> {
    /// Writes the message (rewritten if needed) to `out`. `raw` is the whole message.
    pub fn message(&mut self, tag: u8, body: &[u8], raw: &[u8], out: &mut BytesMut) -> Result<(), Malformed> {
        match tag {
            PARSE => self.parse(body, raw, out),
            BIND => self.bind(body, raw, out),
            DESCRIBE => self.describe(body, raw, out),
            CLOSE => self.close(body, raw, out),
            FUNCTION_CALL => {
                out.extend_from_slice(raw);
                self.expect.push_back(Expect::Ready);
                Ok(())
            }
            SYNC => {
                // The caller passes a Sync here only if the server will answer it.
                out.extend_from_slice(raw);
                self.expect.push_back(Expect::Ready);
                Ok(())
            }
            QUERY => {
                // A simple query destroys the server's unnamed statement.
                self.server.unnamed_owner = None;
                // The text ends at its first NUL (PostgreSQL refuses a Query with one inside).
                let text = crate::protocol::frame::cstr(body).map_or(body, |(t, _)| t);
                match self.note_effects(text) {
                    Some(reason) => frontend::message(out, QUERY, &[rejection_sql(reason).as_bytes(), b"\0"]),
                    None => match deallocate_target(text).filter(|n| self.client.named.contains_key(&n[..])) {
                        // `DEALLOCATE name` of a protocol-level statement (PHP PDO does
                        // this): forget the client's name; the server answers with a
                        // DEALLOCATE of its own so the client sees the usual tag.
                        Some(name) => {
                            self.client.named.remove(&name[..]);
                            frontend::message(out, QUERY, &[DEALLOCATE_STANDIN.as_bytes(), b"\0"]);
                        }
                        None => out.extend_from_slice(raw),
                    },
                }
                self.expect.push_back(Expect::Ready);
                Ok(())
            }
            _ => {
                out.extend_from_slice(raw);
                Ok(())
            }
        }
    }

    fn parse(&mut self, body: &[u8], raw: &[u8], out: &mut BytesMut) -> Result<(), Malformed> {
        let (name, rest) = cstr(body).ok_or("malformed Parse message")?;
        let (query, _) = cstr(rest).ok_or("malformed Parse message")?;
        let rejected;
        let rest = match self.note_effects(query) {
            Some(reason) => {
                // Parse the failing statement instead: its Execute gives the error.
                rejected = [rejection_sql(reason).as_bytes(), b"\0\0\0"].concat();
                &rejected[..]
            }
            None => rest,
        };
        if name.is_empty() {
            self.client.unnamed = Some(bytes::Bytes::copy_from_slice(rest));
            self.client.unnamed_gen += 1;
            self.server.unnamed_owner = Some((self.client.uid, self.client.unnamed_gen));
            if rest.len() == body.len() - 1 {
                out.extend_from_slice(raw);
            } else {
                frontend::message(out, PARSE, &[b"\0", rest]);
            }
            self.expect.push_back(Expect::Parse { id: None, hidden: false });
            return Ok(());
        }
        let def = self.registry.intern(rest);
        self.client.named.insert(name.into(), def.clone());
        // A client's Parse promises a fresh plan (the statement may be here already,
        // planned before a schema change), so it is always prepared again.
        if !self.server.touch(def.id) {
            self.make_room(def.id, out);
        }
        self.prepare(def.id, &def.server_name, &def.body, false, out);
        Ok(())
    }

    /// Close-then-Parse of a server statement: the Close (a no-op if it is not
    /// there) keeps this right even if our record of the server drifted.
    fn prepare(&mut self, id: u64, name: &str, body: &[u8], hidden: bool, out: &mut BytesMut) {
        frontend::close_statement(out, name);
        self.expect.push_back(Expect::Close { hidden: true, evicted: None });
        frontend::message(out, PARSE, &[name.as_bytes(), b"\0", body]);
        self.expect.push_back(Expect::Parse { id: Some(id), hidden });
    }

    /// Records `id` as prepared, closing the least recently used statement if full.
    fn make_room(&mut self, id: u64, out: &mut BytesMut) {
        if let Some(old) = self.server.insert(id) {
            frontend::close_statement(out, &server_name(old));
            self.expect.push_back(Expect::Close { hidden: true, evicted: Some(old) });
        }
    }

    /// Makes sure the server has the client's statement `name`; returns its server
    /// name, or None if the client never prepared it (the server will say so).
    fn ensure(&mut self, name: &[u8], out: &mut BytesMut) -> Option<String> {
        let def = self.client.named.get(name)?.clone();
        if !self.server.touch(def.id) {
            self.make_room(def.id, out);
            self.prepare(def.id, &def.server_name, &def.body, true, out);
        }
        Some(def.server_name.clone())
    }

    /// Re-sends the client's unnamed statement if the server holds someone else's.
    fn ensure_unnamed(&mut self, out: &mut BytesMut) {
        let mine = Some((self.client.uid, self.client.unnamed_gen));
        if self.server.unnamed_owner == mine {
            return;
        }
        if let Some(body) = &self.client.unnamed {
            frontend::message(out, PARSE, &[b"\0", body]);
            self.expect.push_back(Expect::Parse { id: None, hidden: true });
            self.server.unnamed_owner = mine;
        }
    }

    fn bind(&mut self, body: &[u8], raw: &[u8], out: &mut BytesMut) -> Result<(), Malformed> {
        let (portal, rest) = cstr(body).ok_or("malformed Bind message")?;
        let (stmt, params) = cstr(rest).ok_or("malformed Bind message")?;
        if stmt.is_empty() {
            self.ensure_unnamed(out);
            out.extend_from_slice(raw);
            return Ok(());
        }
        match self.ensure(stmt, out) {
            Some(server) => frontend::message(out, BIND, &[portal, b"\0", server.as_bytes(), b"\0", params]),
            None => out.extend_from_slice(raw),
        }
        Ok(())
    }

    fn describe(&mut self, body: &[u8], raw: &[u8], out: &mut BytesMut) -> Result<(), Malformed> {
        let (&kind, name) = body.split_first().ok_or("malformed Describe message")?;
        let (name, _) = cstr(name).ok_or("malformed Describe message")?;
        if kind == b'S' {
            if name.is_empty() {
                self.ensure_unnamed(out);
            } else if let Some(server) = self.ensure(name, out) {
                frontend::message(out, DESCRIBE, &[b"S", server.as_bytes(), b"\0"]);
                return Ok(());
            }
        }
        out.extend_from_slice(raw);
        Ok(())
    }

    fn close(&mut self, body: &[u8], raw: &[u8], out: &mut BytesMut) -> Result<(), Malformed> {
        let (&kind, name) = body.split_first().ok_or("malformed Close message")?;
        let (name, _) = cstr(name).ok_or("malformed Close message")?;
        if kind == b'S' && !name.is_empty() {
            // Other clients may share the server statement: forget the client's name
            // only, and let a no-op Close produce the CloseComplete.
            self.client.named.remove(name);
            frontend::close_statement(out, NO_STATEMENT);
        } else {
            if kind == b'S' && self.server.unnamed_owner == Some((self.client.uid, self.client.unnamed_gen)) {
                self.server.unnamed_owner = None;
            }
            out.extend_from_slice(raw);
        }
        self.expect.push_back(Expect::Close { hidden: false, evicted: None });
        Ok(())
    }

    /// Records the session effects of SQL text; DISCARD ALL / DEALLOCATE ALL make the
    /// server (and the client) forget statements from here on. Returns the reason
    /// when the text uses a session-only feature that is to be refused.
    fn note_effects(&mut self, sql: &[u8]) -> Option<&'static str> {
        let forgot = self.effects.forget_statements;
        let pinned = self.effects.pin.is_some();
        merge_effects(sql, self.effects);
        if self.effects.forget_statements && !forgot {
            self.server.clear();
            self.client.named.clear();
            self.client.unnamed = None;
        }
        if self.reject_session_features && !pinned {
            return self.effects.pin.take();
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body_of(out: &BytesMut) -> Vec<(u8, Vec<u8>)> {
        let mut v = vec![];
        let mut i = 0;
        while i < out.len() {
            let len = i32::from_be_bytes(out[i + 1..i + 5].try_into().unwrap()) as usize;
            v.push((out[i], out[i + 5..i + 1 + len].to_vec()));
            i += 1 + len;
        }
        v
    }

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![tag];
        m.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        m.extend_from_slice(body);
        m
    }

    #[test]
    fn named_statement_is_renamed_and_prepared_once_per_server() {
        let reg = Registry::default();
        let mut client = ClientStatements::new(1);
        let mut server = ServerStatements::default();
        let mut expect = VecDeque::new();
        let mut out = BytesMut::new();
        let mut rw = Rewriter {
            client: &mut client,
            server: &mut server,
            registry: &reg,
            expect: &mut expect,
            effects: &mut Default::default(),
            reject_session_features: false,
        };
        let parse = b"S_1\0select $1\0\0\0";
        rw.message(PARSE, parse, &msg(PARSE, parse), &mut out).unwrap();
        let bind = b"\0S_1\0\0\0\0\0\0\0";
        rw.message(BIND, bind, &msg(BIND, bind), &mut out).unwrap();
        let m = body_of(&out);
        assert_eq!(m[0], (CLOSE, b"Spgmux_1\0".to_vec()));
        assert_eq!(m[1], (PARSE, b"pgmux_1\0select $1\0\0\0".to_vec()));
        assert_eq!(m[2], (BIND, b"\0pgmux_1\0\0\0\0\0\0\0".to_vec()));
        // A second client's Parse of the same SQL on this server: prepared afresh
        // under the same server name (the old one closed, silently).
        let mut other = ClientStatements::new(2);
        out.clear();
        let mut rw = Rewriter {
            client: &mut other,
            server: &mut server,
            registry: &reg,
            expect: &mut expect,
            effects: &mut Default::default(),
            reject_session_features: false,
        };
        let parse2 = b"other\0select $1\0\0\0";
        rw.message(PARSE, parse2, &msg(PARSE, parse2), &mut out).unwrap();
        assert_eq!(body_of(&out), vec![(CLOSE, b"Spgmux_1\0".to_vec()), (PARSE, b"pgmux_1\0select $1\0\0\0".to_vec())]);
        let close = Expect::Close { hidden: true, evicted: None };
        let parse = Expect::Parse { id: Some(1), hidden: false };
        assert_eq!(expect.iter().copied().collect::<Vec<_>>(), vec![close, parse, close, parse]);
    }

    #[test]
    fn bind_on_a_fresh_server_prepares_first() {
        let reg = Registry::default();
        let mut client = ClientStatements::new(1);
        let mut old_server = ServerStatements::default();
        let mut expect = VecDeque::new();
        let mut out = BytesMut::new();
        let parse = b"S_1\0select 1\0\0\0";
        Rewriter {
            client: &mut client,
            server: &mut old_server,
            registry: &reg,
            expect: &mut expect,
            effects: &mut Default::default(),
            reject_session_features: false,
        }
        .message(PARSE, parse, &msg(PARSE, parse), &mut out)
        .unwrap();
        out.clear();
        expect.clear();
        let mut new_server = ServerStatements::default();
        let bind = b"\0S_1\0\0\0\0\0\0\0";
        Rewriter {
            client: &mut client,
            server: &mut new_server,
            registry: &reg,
            expect: &mut expect,
            effects: &mut Default::default(),
            reject_session_features: false,
        }
        .message(BIND, bind, &msg(BIND, bind), &mut out)
        .unwrap();
        let m = body_of(&out);
        assert_eq!(m[0], (CLOSE, b"Spgmux_1\0".to_vec()));
        assert_eq!(m[1], (PARSE, b"pgmux_1\0select 1\0\0\0".to_vec()));
        assert_eq!(m[2].0, BIND);
        assert_eq!(expect[1], Expect::Parse { id: Some(1), hidden: true });
    }

    #[test]
    fn unnamed_statement_follows_its_client() {
        let reg = Registry::default();
        let mut a = ClientStatements::new(1);
        let mut b = ClientStatements::new(2);
        let mut server = ServerStatements::default();
        let mut expect = VecDeque::new();
        let mut out = BytesMut::new();
        let pa = b"\0select 'a'\0\0\0";
        Rewriter {
            client: &mut a,
            server: &mut server,
            registry: &reg,
            expect: &mut expect,
            effects: &mut Default::default(),
            reject_session_features: false,
        }
        .message(PARSE, pa, &msg(PARSE, pa), &mut out)
        .unwrap();
        let pb = b"\0select 'b'\0\0\0";
        Rewriter {
            client: &mut b,
            server: &mut server,
            registry: &reg,
            expect: &mut expect,
            effects: &mut Default::default(),
            reject_session_features: false,
        }
        .message(PARSE, pb, &msg(PARSE, pb), &mut out)
        .unwrap();
        out.clear();
        let bind = b"\0\0\0\0\0\0\0\0";
        Rewriter {
            client: &mut a,
            server: &mut server,
            registry: &reg,
            expect: &mut expect,
            effects: &mut Default::default(),
            reject_session_features: false,
        }
        .message(BIND, bind, &msg(BIND, bind), &mut out)
        .unwrap();
        let m = body_of(&out);
        assert_eq!(m[0], (PARSE, b"\0select 'a'\0\0\0".to_vec()), "a's unnamed statement re-sent");
        assert_eq!(m[1].0, BIND);
    }

    #[test]
    fn deallocate_targets() {
        assert_eq!(deallocate_target(b"DEALLOCATE pdo_stmt_00000001"), Some(b"pdo_stmt_00000001".to_vec()));
        assert_eq!(deallocate_target(b"deallocate prepare \"S_1\";"), Some(b"S_1".to_vec()));
        assert_eq!(deallocate_target(b"DEALLOCATE ALL"), None);
        assert_eq!(deallocate_target(b"/* x */ deallocate s1"), Some(b"s1".to_vec()));
        assert_eq!(deallocate_target(b"select 1"), None);
        assert_eq!(deallocate_target(b"DEALLOCATE a; select 1"), None);
    }

    #[test]
    fn eviction_closes_on_the_server() {
        let reg = Registry::default();
        let mut c = ClientStatements::new(1);
        let mut server = ServerStatements::with_capacity(1);
        let mut expect = VecDeque::new();
        let mut out = BytesMut::new();
        for (i, sql) in [b"a\0select 1\0\0\0", b"b\0select 2\0\0\0"].iter().enumerate() {
            let _ = i;
            Rewriter {
                client: &mut c,
                server: &mut server,
                registry: &reg,
                expect: &mut expect,
                effects: &mut Default::default(),
                reject_session_features: false,
            }
            .message(PARSE, *sql, &msg(PARSE, *sql), &mut out)
            .unwrap();
        }
        let m = body_of(&out);
        // a: Close+Parse; b: eviction Close of a, then Close+Parse of b.
        assert_eq!(m[2], (CLOSE, b"Spgmux_1\0".to_vec()));
        assert_eq!(expect[2], Expect::Close { hidden: true, evicted: Some(1) });
        assert_eq!(m[4].0, PARSE);
    }
}
