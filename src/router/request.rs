//! What a client's next request asks for, read before it is sent anywhere.
//!
//! A *request* is what a server answers with one ReadyForQuery: a simple Query, or
//! extended-protocol messages up to their Sync (a Flush also ends one, since the
//! client may wait for answers before it sends the Sync). [`next_request`] finds
//! the first complete request in a client's buffer and sums up its statements:
//! Query texts and Parse statements are classified ([`classify`]); a Bind of a
//! named statement uses the verdict kept with the statement (classified once); a
//! Bind of the unnamed statement uses the Parse before it, or the client's last
//! unnamed Parse. Nothing is copied or allocated; only whole messages are read.

use crate::prepared::ClientStatements;
use crate::protocol::codes;
use crate::protocol::frame::{cstr, header, HEADER_LEN};
use crate::router::classify::{classify, Classification, ClassifyConfig, Hint, Target, TxnEffect};

/// The sum of one request's statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Request {
    /// Bytes from the start of the buffer through the request's last message.
    pub len: usize,
    /// Every statement may run on a replica (transaction control that a replica
    /// also accepts, like `COMMIT`, counts as a read).
    pub read: bool,
    /// A `pgmux:replica` or `pgmux:primary` hint decided a statement.
    pub hint: Option<Hint>,
    /// The request opens a transaction block, and how.
    pub begin: Option<Begin>,
    /// The request is one simple Query whose text is a single plain `BEGIN` (it may
    /// be held back and the transaction routed by its first statement).
    pub lone_begin: bool,
    /// The request is one simple Query that is only `COMMIT`/`END` (`Some(true)`) or
    /// `ROLLBACK`/`ABORT` (`Some(false)`).
    pub lone_end: Option<bool>,
}

/// How a request opens a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// A plain `BEGIN` (read committed): while it has only read, the transaction
    /// can move to the primary when a write comes.
    Plain,
    /// `BEGIN ... READ ONLY`, or an isolation level whose snapshot must not change
    /// (`REPEATABLE READ`): it stays where it started.
    Fixed,
}

/// The outcome of looking at a buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scan {
    /// The buffer holds no complete request yet.
    Incomplete,
    /// The first request.
    Complete(Request),
    /// A message with an impossible length or type: let the relay report it.
    Malformed,
}

/// Finds and sums up the first request in `buf`.
pub fn next_request(buf: &[u8], max_message: usize, cfg: &ClassifyConfig, statements: &ClientStatements) -> Scan {
    let mut at = 0;
    let mut req = Request { len: 0, read: true, hint: None, begin: None, lone_begin: false, lone_end: None };
    // The verdict on the unnamed statement as of this point of the request.
    let mut unnamed: Option<bool> = None;
    let mut first = true;
    loop {
        if buf.len() < at + HEADER_LEN {
            return Scan::Incomplete;
        }
        let (tag, len) = match header(&buf[at..], max_message) {
            Ok(h) => h,
            Err(_) => return Scan::Malformed,
        };
        if !codes::is_frontend(tag) {
            return Scan::Malformed;
        }
        let end = at + HEADER_LEN + len;
        if buf.len() < end {
            return Scan::Incomplete;
        }
        let body = &buf[at + HEADER_LEN..end];
        at = end;
        match tag {
            codes::QUERY => {
                let text = body.strip_suffix(&[0]).unwrap_or(body);
                let c = classify(text, cfg);
                if first {
                    req.lone_begin = c.txn == TxnEffect::Begin && !c.is_read() && c.hint.is_none() && !fixed_isolation(text);
                    req.lone_end = lone_end(text, &c);
                }
                note(&mut req, &c, text);
                req.len = at;
                return Scan::Complete(req);
            }
            codes::PARSE => {
                let Some((name, rest)) = cstr(body) else { return Scan::Malformed };
                let Some((text, _)) = cstr(rest) else { return Scan::Malformed };
                let c = classify(text, cfg);
                if name.is_empty() {
                    unnamed = Some(statement_reads(&c));
                }
                note(&mut req, &c, text);
            }
            codes::BIND => {
                let Some((_, rest)) = cstr(body) else { return Scan::Malformed };
                let Some((stmt, _)) = cstr(rest) else { return Scan::Malformed };
                let reads = if stmt.is_empty() {
                    *unnamed.get_or_insert_with(|| last_unnamed_reads(statements, cfg))
                } else {
                    match statements.named.get(stmt) {
                        Some(def) => *def.reads.get_or_init(|| statement_reads(&classify(query_of(&def.body), cfg))),
                        // Unknown to pgmux: whatever happens, not on a replica.
                        None => false,
                    }
                };
                req.read &= reads;
            }
            codes::FUNCTION_CALL => {
                req.read = false;
                req.len = at;
                return Scan::Complete(req);
            }
            codes::SYNC | codes::FLUSH => {
                req.len = at;
                return Scan::Complete(req);
            }
            codes::TERMINATE => {
                req.len = at;
                return Scan::Complete(req);
            }
            _ => {}
        }
        first = false;
    }
}

/// Folds one statement into its request.
fn note(req: &mut Request, c: &Classification, text: &[u8]) {
    if c.hint.is_some() {
        req.hint = c.hint;
    }
    match c.txn {
        TxnEffect::Begin if c.hint.is_none() => {
            req.begin = Some(if fixed_isolation(text) { Begin::Fixed } else { Begin::Plain });
        }
        TxnEffect::BeginReadOnly => req.begin = Some(Begin::Fixed),
        _ => {}
    }
    req.read &= statement_reads(c);
}

/// Whether a statement may run on a replica inside a request: reads, plus a plain
/// `BEGIN` (the request's other statements decide) and the end of a transaction.
fn statement_reads(c: &Classification) -> bool {
    c.is_read() || (c.hint.is_none() && matches!(c.txn, TxnEffect::Begin | TxnEffect::End))
}

/// `REPEATABLE READ` in a `BEGIN`: its snapshot is fixed at the first statement.
fn fixed_isolation(text: &[u8]) -> bool {
    text.windows(10).any(|w| w.eq_ignore_ascii_case(b"repeatable"))
}

/// A lone `COMMIT`/`END` (true) or `ROLLBACK`/`ABORT` (false).
fn lone_end(text: &[u8], c: &Classification) -> Option<bool> {
    if c.txn != TxnEffect::End || c.hint.is_some() {
        return None;
    }
    let word = text.iter().position(|b| b.is_ascii_alphabetic()).map(|i| &text[i..])?;
    let starts = |w: &[u8]| word.len() >= w.len() && word[..w.len()].eq_ignore_ascii_case(w);
    if starts(b"commit") || starts(b"end") {
        Some(true)
    } else if starts(b"rollback") || starts(b"abort") {
        Some(false)
    } else {
        None
    }
}

/// The client's last unnamed statement (a Bind without a Parse reuses it).
fn last_unnamed_reads(statements: &ClientStatements, cfg: &ClassifyConfig) -> bool {
    match &statements.unnamed {
        Some(body) => statement_reads(&classify(query_of(body), cfg)),
        None => false,
    }
}

/// The query text of a Parse body after the statement name (`query\0...`).
fn query_of(body: &[u8]) -> &[u8] {
    cstr(body).map(|(q, _)| q).unwrap_or(body)
}

/// The target a whole request asks for.
pub fn target(req: &Request) -> Target {
    if req.read {
        Target::Read
    } else {
        Target::Write
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use postgres_protocol::message::frontend;

    fn cfg() -> ClassifyConfig {
        ClassifyConfig::new(["bump"])
    }

    fn scan(buf: &[u8]) -> Scan {
        next_request(buf, 1 << 20, &cfg(), &ClientStatements::default())
    }

    fn query(sql: &str) -> BytesMut {
        let mut b = BytesMut::new();
        frontend::query(sql, &mut b).unwrap();
        b
    }

    fn extended(b: &mut BytesMut, name: &str, sql: &str) {
        frontend::parse(name, sql, [], b).unwrap();
        bind(b, name);
        frontend::execute("", 0, b).unwrap();
    }

    /// A Bind of `stmt` to the unnamed portal, without parameters.
    fn bind(b: &mut BytesMut, stmt: &str) {
        let body_len = 4 + 1 + stmt.len() + 1 + 2 + 2 + 2;
        b.extend_from_slice(b"B");
        b.extend_from_slice(&(body_len as i32).to_be_bytes());
        b.extend_from_slice(b"\0");
        b.extend_from_slice(stmt.as_bytes());
        b.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0]);
    }

    fn complete(s: Scan) -> Request {
        match s {
            Scan::Complete(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn simple_queries() {
        let r = complete(scan(&query("select 1")));
        assert!(r.read && r.begin.is_none() && !r.lone_begin);
        assert!(!complete(scan(&query("insert into t values (1)"))).read);
        assert!(!complete(scan(&query("select bump()"))).read);
        let b = complete(scan(&query("BEGIN")));
        assert!(b.lone_begin && b.begin == Some(Begin::Plain) && b.read);
        let b = complete(scan(&query("begin isolation level repeatable read")));
        assert!(!b.lone_begin && b.begin == Some(Begin::Fixed));
        assert_eq!(complete(scan(&query("commit"))).lone_end, Some(true));
        assert_eq!(complete(scan(&query("ROLLBACK"))).lone_end, Some(false));
        let h = complete(scan(&query("/* pgmux:replica */ insert into t values (1)")));
        assert!(h.read && h.hint == Some(Hint::Replica));
    }

    #[test]
    fn only_the_first_request_counts() {
        let mut b = query("select 1");
        let first = b.len();
        b.extend_from_slice(&query("delete from t"));
        let r = complete(scan(&b));
        assert!(r.read);
        assert_eq!(r.len, first);
    }

    #[test]
    fn extended_requests_end_at_sync() {
        let mut b = BytesMut::new();
        extended(&mut b, "", "BEGIN");
        extended(&mut b, "", "select * from t");
        assert_eq!(scan(&b), Scan::Incomplete);
        frontend::sync(&mut b);
        let r = complete(scan(&b));
        assert!(r.read && r.begin == Some(Begin::Plain) && !r.lone_begin);
        assert_eq!(r.len, b.len());
        extended(&mut b, "", "update t set a = 1");
        frontend::sync(&mut b);
        // The second request is not looked at.
        assert!(complete(scan(&b)).read);
        let mut w = BytesMut::new();
        extended(&mut w, "", "select 1");
        extended(&mut w, "", "update t set a = 1");
        frontend::sync(&mut w);
        assert!(!complete(scan(&w)).read);
    }

    #[test]
    fn named_and_unnamed_statements_keep_their_verdict() {
        let registry = crate::prepared::Registry::default();
        let mut st = ClientStatements::default();
        let mut parse = BytesMut::new();
        frontend::parse("w", "insert into t values (1)", [], &mut parse).unwrap();
        st.named.insert(b"w".to_vec().into_boxed_slice(), registry.intern(&parse[7..]));
        st.unnamed = Some(bytes::Bytes::from_static(b"select 1\0\0\0"));
        let mut b = BytesMut::new();
        bind(&mut b, "w");
        frontend::execute("", 0, &mut b).unwrap();
        frontend::sync(&mut b);
        assert!(!complete(next_request(&b, 1 << 20, &cfg(), &st)).read);
        let mut u = BytesMut::new();
        bind(&mut u, "");
        frontend::sync(&mut u);
        assert!(complete(next_request(&u, 1 << 20, &cfg(), &st)).read);
        // An unknown statement name never reads on a replica.
        let mut x = BytesMut::new();
        bind(&mut x, "nope");
        frontend::sync(&mut x);
        assert!(!complete(next_request(&x, 1 << 20, &cfg(), &st)).read);
    }

    #[test]
    fn malformed_and_partial() {
        assert_eq!(scan(b"Q\0\0"), Scan::Incomplete);
        assert_eq!(scan(b"Q\x7f\xff\xff\xffxx"), Scan::Malformed);
        assert_eq!(scan(b"z\0\0\0\x04"), Scan::Malformed);
        let q = query("select 1");
        assert_eq!(scan(&q[..q.len() - 1]), Scan::Incomplete);
        assert!(!complete(scan(b"F\0\0\0\x04")).read);
    }
}
