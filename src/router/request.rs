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
//!
//! A Parse runs nothing, but it is checked against the schema: a replica that has
//! not replayed a new table's creation yet refuses to prepare an INSERT into it
//! (42P01). And a request that ends with Flush keeps its server for what follows,
//! as a rule the Bind of what was just parsed (asyncpg prepares every statement
//! with Parse/Describe/Flush and runs it with Bind/Execute/Sync). So a Parse of a
//! statement that is not a read makes its request not a read, whatever ends it:
//! the statement is prepared where it will run. A Parse of a read decides nothing
//! (the Bind that uses it does).

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
    /// It parses or closes statements: what follows it must be judged with the
    /// client's statements as they are once it has been forwarded.
    pub defines: bool,
    /// It binds a named portal: a cursor that lives until its transaction ends.
    pub cursor: bool,
}

/// How a request opens a transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Begin {
    /// A plain `BEGIN` (read committed): while it has only read, the transaction
    /// can move to the primary when a write comes.
    Plain,
    /// `BEGIN ... READ ONLY` (may run on a replica), or `REPEATABLE READ` (whose
    /// snapshot must not change: the request is then not a read, it starts on the
    /// primary): it stays where it started.
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

/// What one statement means for routing (kept with a named statement, see
/// [`crate::prepared::StmtDef::route`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    /// It may run on a replica (a plain `BEGIN` and the end of a transaction count:
    /// the request's other statements decide).
    pub reads: bool,
    pub hint: Option<Hint>,
    pub begin: Option<Begin>,
}

impl Verdict {
    /// Classifies one statement's text.
    pub fn of(text: &[u8], cfg: &ClassifyConfig) -> Verdict {
        let c = classify(text, cfg);
        let mut v = Verdict { reads: statement_reads(&c), hint: c.hint, begin: None };
        match c.txn {
            TxnEffect::Begin if c.hint.is_none() => {
                if fixed_isolation(text) {
                    // Its snapshot could not move to the primary at a write: start there.
                    v.begin = Some(Begin::Fixed);
                    v.reads = false;
                } else {
                    v.begin = Some(Begin::Plain);
                }
            }
            TxnEffect::BeginReadOnly => v.begin = Some(Begin::Fixed),
            _ => {}
        }
        v
    }
}

/// A statement's [`Verdict`], kept with it (one atomic word, no lock: statements are
/// shared by every client) for the classifier configuration it was computed under.
/// The word is the statement's [`crate::prepared::StmtDef::route`].
#[derive(Debug, Clone, Copy)]
pub struct CachedVerdict<'a>(pub &'a std::sync::atomic::AtomicU64);

impl CachedVerdict<'_> {
    /// The verdict under `cfg`, computed by `compute` when none is kept for it.
    pub fn get(&self, cfg: &ClassifyConfig, compute: impl FnOnce() -> Verdict) -> Verdict {
        use std::sync::atomic::Ordering::Relaxed;
        // Bits 0-5: the verdict; bit 7: set; bits 8-63: the configuration's fingerprint.
        let key = cfg.fingerprint << 8 | 0x80;
        let word = self.0.load(Relaxed);
        if word & !0x7f == key {
            return Verdict::unpack(word as u8);
        }
        let v = compute();
        self.0.store(key | v.pack() as u64, Relaxed);
        v
    }
}

impl Verdict {
    fn pack(self) -> u8 {
        let hint = match self.hint {
            None => 0,
            Some(Hint::Primary) => 1,
            Some(Hint::Replica) => 2,
        };
        let begin = match self.begin {
            None => 0,
            Some(Begin::Plain) => 1,
            Some(Begin::Fixed) => 2,
        };
        self.reads as u8 | hint << 1 | begin << 3
    }

    fn unpack(b: u8) -> Verdict {
        Verdict {
            reads: b & 1 != 0,
            hint: match (b >> 1) & 3 {
                1 => Some(Hint::Primary),
                2 => Some(Hint::Replica),
                _ => None,
            },
            begin: match (b >> 3) & 3 {
                1 => Some(Begin::Plain),
                2 => Some(Begin::Fixed),
                _ => None,
            },
        }
    }
}

/// Named statements parsed earlier in the same request (not yet known to the
/// client's statements): a few, without allocating; more are judged conservatively.
#[derive(Default)]
struct Parsed<'a> {
    entries: [Option<(&'a [u8], Verdict)>; 8],
    next: usize,
    overflowed: bool,
}

impl<'a> Parsed<'a> {
    fn insert(&mut self, name: &'a [u8], v: Verdict) {
        if let Some(slot) = self.entries.iter_mut().flatten().find(|(n, _)| *n == name) {
            slot.1 = v;
            return;
        }
        if self.next == self.entries.len() {
            self.overflowed = true;
            return;
        }
        self.entries[self.next] = Some((name, v));
        self.next += 1;
    }

    /// `Some(None)`: the name may have been parsed here but was not kept.
    fn get(&self, name: &[u8]) -> Option<Option<Verdict>> {
        match self.entries.iter().flatten().find(|(n, _)| *n == name) {
            Some((_, v)) => Some(Some(*v)),
            None if self.overflowed => Some(None),
            None => None,
        }
    }
}

/// Finds and sums up the first request in `buf`.
pub fn next_request(buf: &[u8], max_message: usize, cfg: &ClassifyConfig, statements: &ClientStatements) -> Scan {
    let mut at = 0;
    let mut req = Request { len: 0, read: true, hint: None, begin: None, lone_begin: false, lone_end: None, defines: false, cursor: false };
    // The verdict on the unnamed statement as of this point of the request.
    let mut unnamed: Option<Verdict> = None;
    let mut parsed = Parsed::default();
    // A statement parsed here that is not a read (see the module doc).
    let mut parsed_other = false;
    let mut first = true;
    loop {
        let (tag, body) = match message_at(buf, at, max_message) {
            Ok(m) => m,
            Err(scan) => return scan,
        };
        at += HEADER_LEN + body.len();
        match tag {
            codes::QUERY => {
                // The text ends at its first NUL (PostgreSQL refuses a Query with one inside).
                let text = crate::protocol::frame::cstr(body).map_or(body, |(t, _)| t);
                let c = classify(text, cfg);
                if first {
                    req.lone_begin = c.txn == TxnEffect::Begin && !c.is_read() && c.hint.is_none() && !fixed_isolation(text);
                    req.lone_end = lone_end(text, &c);
                }
                note(&mut req, Verdict::of(text, cfg));
                req.len = at;
                return Scan::Complete(req);
            }
            codes::PARSE => {
                let Some((name, rest)) = cstr(body) else { return Scan::Malformed };
                let Some((text, _)) = cstr(rest) else { return Scan::Malformed };
                let v = Verdict::of(text, cfg);
                parsed_other |= !v.reads;
                if name.is_empty() {
                    unnamed = Some(v);
                } else {
                    parsed.insert(name, v);
                }
                req.defines = true;
                // Parsing runs nothing: the Bind that uses it decides.
            }
            codes::BIND => {
                let Some((portal, rest)) = cstr(body) else { return Scan::Malformed };
                req.cursor |= !portal.is_empty();
                let Some((stmt, _)) = cstr(rest) else { return Scan::Malformed };
                let v = if stmt.is_empty() {
                    Some(*unnamed.get_or_insert_with(|| last_unnamed(statements, cfg)))
                } else {
                    named_verdict(stmt, &parsed, statements, cfg)
                };
                match v {
                    Some(v) => note(&mut req, v),
                    // Unknown to pgmux: whatever happens, not on a replica.
                    None => req.read = false,
                }
            }
            codes::CLOSE => req.defines = true,
            codes::FUNCTION_CALL => {
                req.read = false;
                req.len = at;
                return Scan::Complete(req);
            }
            codes::FLUSH => {
                req.read &= !parsed_other;
                req.len = at;
                return Scan::Complete(req);
            }
            codes::SYNC | codes::TERMINATE => {
                req.read &= !parsed_other;
                req.len = at;
                return Scan::Complete(req);
            }
            _ => {}
        }
        first = false;
    }
}

/// The whole message at `at`: its type and body (`Err`: what to answer instead).
#[inline]
fn message_at(buf: &[u8], at: usize, max_message: usize) -> Result<(u8, &[u8]), Scan> {
    if buf.len() < at + HEADER_LEN {
        return Err(Scan::Incomplete);
    }
    let (tag, len) = header(&buf[at..], max_message).map_err(|_| Scan::Malformed)?;
    if !codes::is_frontend(tag) {
        return Err(Scan::Malformed);
    }
    let end = at + HEADER_LEN + len;
    if buf.len() < end {
        return Err(Scan::Incomplete);
    }
    Ok((tag, &buf[at + HEADER_LEN..end]))
}

/// The verdict on a named statement a Bind uses: parsed earlier in the request, or
/// kept with the client's statement (`None`: unknown to pgmux).
fn named_verdict(stmt: &[u8], parsed: &Parsed<'_>, statements: &ClientStatements, cfg: &ClassifyConfig) -> Option<Verdict> {
    match parsed.get(stmt) {
        Some(v) => v,
        None => statements.named.get(stmt).map(|def| CachedVerdict(&def.route).get(cfg, || Verdict::of(query_of(&def.body), cfg))),
    }
}

/// Folds one statement into its request.
fn note(req: &mut Request, v: Verdict) {
    if v.hint.is_some() {
        req.hint = v.hint;
    }
    if v.begin.is_some() {
        req.begin = v.begin;
    }
    req.read &= v.reads;
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
fn last_unnamed(statements: &ClientStatements, cfg: &ClassifyConfig) -> Verdict {
    match &statements.unnamed {
        Some(body) => Verdict::of(query_of(body), cfg),
        None => Verdict { reads: false, hint: None, begin: None },
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
        assert!(!b.lone_begin && b.begin == Some(Begin::Fixed) && !b.read);
        let b = complete(scan(&query("begin read only")));
        assert!(!b.lone_begin && b.begin == Some(Begin::Fixed) && b.read);
        assert_eq!(complete(scan(&query("commit"))).lone_end, Some(true));
        assert_eq!(complete(scan(&query("ROLLBACK"))).lone_end, Some(false));
        let h = complete(scan(&query("/* pgmux:replica */ insert into t values (1)")));
        assert!(h.read && h.hint == Some(Hint::Replica));
    }

    #[test]
    fn a_bind_to_a_named_portal_opens_a_cursor() {
        let mut b = BytesMut::new();
        extended(&mut b, "", "select 1");
        frontend::sync(&mut b);
        assert!(!complete(scan(&b)).cursor);
        let mut b = BytesMut::new();
        frontend::parse("", "select 1", [], &mut b).unwrap();
        frontend::bind("c1", "", [], [], |_: (), _| Ok(postgres_protocol::IsNull::No), [], &mut b).map_err(|_| ()).unwrap();
        frontend::execute("c1", 5, &mut b).unwrap();
        frontend::sync(&mut b);
        let r = complete(scan(&b));
        assert!(r.cursor && r.read);
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
    fn a_statement_parsed_in_the_request_is_known_to_its_bind() {
        let mut b = BytesMut::new();
        extended(&mut b, "S_9", "select count(*) from t where a = $1");
        frontend::sync(&mut b);
        assert!(complete(scan(&b)).read);
        let mut w = BytesMut::new();
        extended(&mut w, "S_10", "delete from t");
        frontend::sync(&mut w);
        assert!(!complete(scan(&w)).read);
        // A Parse of a write alone is prepared on the primary (a replica may not
        // have the table yet); a Parse of a read alone decides nothing.
        let mut p = BytesMut::new();
        frontend::parse("S_11", "delete from t", [], &mut p).unwrap();
        frontend::sync(&mut p);
        assert!(!complete(scan(&p)).read);
        let mut p = BytesMut::new();
        frontend::parse("S_12", "select 1", [], &mut p).unwrap();
        frontend::sync(&mut p);
        assert!(complete(scan(&p)).read);
    }

    #[test]
    fn a_write_prepared_before_a_flush_is_not_a_read() {
        // asyncpg: Parse/Describe/Flush, then Bind/Execute/Sync in the next request.
        for name in ["__asyncpg_stmt_1__", ""] {
            let mut p = BytesMut::new();
            frontend::parse(name, "insert into t values ($1, $2)", [], &mut p).unwrap();
            frontend::describe(b'S', name, &mut p).unwrap();
            frontend::flush(&mut p);
            let r = complete(scan(&p));
            assert!(!r.read, "{name:?}: the Bind that follows runs where this is prepared");
            assert_eq!(r.len, p.len());
        }
        let mut p = BytesMut::new();
        frontend::parse("s", "select $1::int", [], &mut p).unwrap();
        frontend::describe(b'S', "s", &mut p).unwrap();
        frontend::flush(&mut p);
        assert!(complete(scan(&p)).read, "a read prepared before a Flush may go to a replica");
    }

    #[test]
    fn a_named_begin_opens_a_transaction() {
        // pgjdbc prepares BEGIN as a named statement once it has been used enough.
        let registry = crate::prepared::Registry::default();
        let mut st = ClientStatements::default();
        let mut parse = BytesMut::new();
        frontend::parse("S_1", "BEGIN", [], &mut parse).unwrap();
        st.named.insert(b"S_1".to_vec().into_boxed_slice(), registry.intern(&parse[9..]));
        let mut b = BytesMut::new();
        bind(&mut b, "S_1");
        frontend::execute("", 0, &mut b).unwrap();
        extended(&mut b, "", "select 1");
        frontend::sync(&mut b);
        let r = complete(next_request(&b, 1 << 20, &cfg(), &st));
        assert!(r.read && r.begin == Some(Begin::Plain), "{r:?}");
    }

    #[test]
    fn cached_verdicts_follow_the_write_function_list() {
        let word = Default::default();
        let c = CachedVerdict(&word);
        let before = ClassifyConfig::new(["f"]);
        let after = ClassifyConfig::new(["f", "g"]);
        let read = || Verdict { reads: true, hint: Some(Hint::Replica), begin: Some(Begin::Fixed) };
        assert_eq!(c.get(&before, read), read());
        assert_eq!(c.get(&before, || unreachable!("kept")), read());
        let write = || Verdict { reads: false, hint: None, begin: Some(Begin::Plain) };
        assert_eq!(c.get(&after, write), write(), "a reload changed the list: computed again");
        assert_eq!(c.get(&after, || unreachable!("kept")), write());
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
