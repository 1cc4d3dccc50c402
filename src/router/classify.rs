//! May this statement run on a replica? The read/write classifier.
//!
//! [`classify`] reads SQL text with the crate's lexer ([`crate::sql::lexer`]: comments,
//! every quote style and dollar-quoted bodies are skipped) and looks at keywords, in
//! one pass and without allocating. It is safe by default: only what is provably
//! read-only is a [`Target::Read`]:
//!
//! - `SELECT`, `VALUES`, `TABLE`, `WITH ... SELECT` (also in parentheses, and under
//!   `EXPLAIN [ANALYZE]`) with no locking clause (`FOR UPDATE`, `FOR NO KEY UPDATE`,
//!   `FOR SHARE`, `FOR KEY SHARE`), no `INTO`, no `INSERT`/`UPDATE`/`DELETE`/`MERGE`
//!   anywhere (a data-modifying `WITH`), and no call of a write function (see
//!   [`is_builtin_write_function`], plus [`ClassifyConfig::write_functions`]);
//! - `SHOW`;
//! - `BEGIN`/`START TRANSACTION ... READ ONLY`, `SET TRANSACTION READ ONLY`,
//!   `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY` (see [`TxnEffect`]).
//!
//! Everything else is a [`Target::Write`]: other statements, anything unrecognised,
//! empty text, text with an unterminated quote or comment, text whose meaning
//! depends on `standard_conforming_strings` (unless the caller knows the session's
//! setting: [`classify_with`]), and any string of several statements.
//! A leading `/* pgmux:primary */` or `/* pgmux:replica */` comment (or `--` comment)
//! overrides the verdict ([`Reason::Hint`]).
//!
//! What text cannot show: a function that writes but is not named in the list (called
//! directly, through a view, an operator or a cast). Name it in `write_functions`, or
//! send the statement with a `/* pgmux:primary */` hint.

use crate::sql::lexer::{Lexer, Tok};

/// Where a statement may run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// Provably read-only: a replica may run it.
    Read,
    /// The primary (also for anything not provably read-only).
    Write,
}

/// Why a statement got its [`Target`] (for logs and metrics).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// A query that reads only (`SELECT`, `VALUES`, `TABLE`, `WITH ... SELECT`, their
    /// `EXPLAIN`), or `SHOW`.
    Read,
    /// A statement that is not a query: DML, DDL or another utility statement
    /// (`INSERT`, `CREATE`, `COPY`, `CALL`, `SET`, `LOCK`, `VACUUM`, ...).
    Write,
    /// Empty text, a first word that is no statement pgmux knows, or text it cannot
    /// read safely: an unterminated quote, identifier, dollar body or comment, or
    /// (unless `standard_conforming_strings` is known to be on) an odd run of
    /// backslashes before a quote in a `'...'` string (see [`Lexer::backslash_quote`]).
    Unknown,
    /// More than one statement in the text (simple query protocol).
    MultiStatement,
    /// A query calls a write function (built-in or configured).
    WriteFunction,
    /// A query with a locking clause: `FOR UPDATE`, `FOR NO KEY UPDATE`, `FOR SHARE`,
    /// `FOR KEY SHARE`.
    Locking,
    /// `SELECT ... INTO` (creates a table).
    SelectInto,
    /// `INSERT`/`UPDATE`/`DELETE`/`MERGE` inside a query: a data-modifying `WITH`
    /// (conservatively also a column of one of those names).
    DataModifyingCte,
    /// Transaction control (`BEGIN`, `COMMIT`, `SAVEPOINT`, `SET TRANSACTION`, ...):
    /// see [`Classification::txn`].
    Transaction,
    /// A leading `pgmux:primary` / `pgmux:replica` comment decided.
    Hint,
}

/// A routing hint given in a leading comment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Hint {
    /// `/* pgmux:primary */`
    Primary,
    /// `/* pgmux:replica */`
    Replica,
}

/// What a statement does to the transaction or to the session's default transaction
/// mode. For a string of several statements: [`TxnEffect::Mixed`] if any of them has
/// an effect, else [`TxnEffect::None`]. Text that cannot be read safely has none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TxnEffect {
    None,
    /// `BEGIN` / `START TRANSACTION`, with nothing that decides where it runs (also
    /// `ISOLATION LEVEL READ COMMITTED|REPEATABLE READ`, `[NOT] DEFERRABLE`): may be
    /// held back and the transaction routed by its first statement. Target `Write`.
    Begin,
    /// `BEGIN ... READ ONLY` (not serializable): the transaction may run on a replica.
    /// Target `Read`.
    BeginReadOnly,
    /// `BEGIN ... READ WRITE` or `ISOLATION LEVEL SERIALIZABLE`: a hot standby
    /// refuses both ("cannot set transaction read-write mode during recovery",
    /// "cannot use serializable mode in a hot standby"), so the transaction must run
    /// on the primary even if it only reads. Target `Write`.
    BeginPrimary,
    /// `SET TRANSACTION READ ONLY` (not serializable), `SET [LOCAL]
    /// transaction_read_only = on`. Target `Read`.
    SetTransactionReadOnly,
    /// Any other `SET TRANSACTION` (`READ WRITE`, `ISOLATION LEVEL`, `SNAPSHOT`) or
    /// `SET transaction_read_only|transaction_isolation|transaction_deferrable`.
    /// Target `Write`.
    SetTransaction,
    /// `SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY`, `SET
    /// default_transaction_read_only = on|true|yes`: the session's transactions are
    /// read-only from now on. Target `Read`.
    SetSessionReadOnly,
    /// The session's default may no longer be read-only: `SET SESSION
    /// CHARACTERISTICS AS TRANSACTION READ WRITE`, `SET default_transaction_read_only`
    /// to anything but `on|true|yes` (also `'on'` in quotes, conservatively),
    /// `RESET default_transaction_read_only`, `RESET ALL`, `DISCARD ALL`. Target `Write`.
    ClearSessionReadOnly,
    /// `COMMIT`, `END`, `ROLLBACK`, `ABORT` (also `AND NO CHAIN`).
    End,
    /// `COMMIT|END|ROLLBACK|ABORT AND CHAIN`: ends the transaction and starts the
    /// next one at once, with the same characteristics.
    EndAndChain,
    /// `SAVEPOINT name`.
    Savepoint,
    /// `RELEASE [SAVEPOINT] name`.
    ReleaseSavepoint,
    /// `ROLLBACK [WORK|TRANSACTION] TO [SAVEPOINT] name`: the transaction goes on.
    RollbackToSavepoint,
    /// `PREPARE TRANSACTION 'gid'`: ends the session's transaction (it is kept, prepared).
    PrepareTransaction,
    /// `COMMIT PREPARED 'gid'` (outside a transaction block; writes).
    CommitPrepared,
    /// `ROLLBACK PREPARED 'gid'` (outside a transaction block; writes).
    RollbackPrepared,
    /// Several statements, at least one of them with an effect: where the text leaves
    /// the session is known only from the server's ReadyForQuery status.
    Mixed,
}

/// The verdict on one query string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Classification {
    pub target: Target,
    pub reason: Reason,
    /// The leading hint comment, if any (it also decided `target`: `reason` is then
    /// [`Reason::Hint`]).
    pub hint: Option<Hint>,
    pub txn: TxnEffect,
}

impl Classification {
    pub fn is_read(&self) -> bool {
        self.target == Target::Read
    }
}

/// What the classifier cannot know by itself.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClassifyConfig {
    /// Functions that write, besides the built-in ones: `name` (matches `name(` and
    /// `any_schema.name(`) or `schema.name` (matches `name(` and `schema.name(`).
    /// Compared without regard to ASCII case, quoted or not in the SQL. A configured
    /// name is also matched after a dot without parentheses (`t.name`), PostgreSQL's
    /// attribute notation for a one-argument function call.
    pub write_functions: Vec<String>,
    /// Identifies the list (a hash of it): verdicts cached with a statement are
    /// recomputed when a reload changes the list.
    pub fingerprint: u64,
}

impl ClassifyConfig {
    /// A configuration with these write functions (trimmed and lower-cased).
    pub fn new<I, S>(write_functions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        use std::hash::{Hash, Hasher};
        let write_functions: Vec<String> = write_functions.into_iter().map(|f| f.as_ref().trim().to_ascii_lowercase()).collect();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        write_functions.hash(&mut h);
        ClassifyConfig { write_functions, fingerprint: h.finish() }
    }
}

impl From<&crate::config::RoutingConfig> for ClassifyConfig {
    /// What the classifier needs from the `routing:` block.
    fn from(r: &crate::config::RoutingConfig) -> Self {
        ClassifyConfig::new(&r.write_functions)
    }
}

/// Classifies one query string (a simple Query's text, or a Parse's statement),
/// whatever the session's `standard_conforming_strings`: where a `'...'` string has
/// a backslash right before a quote (`'C:\'`, `LIKE $1 ESCAPE '\'`), the text is
/// read differently with the setting on and off, and the verdict is a write
/// ([`Reason::Unknown`]). Never panics, never allocates.
pub fn classify(sql: &[u8], cfg: &ClassifyConfig) -> Classification {
    classify_with(sql, cfg, false)
}

/// [`classify`] for a session whose `standard_conforming_strings` is known (the
/// server reports it in a ParameterStatus). With `true` (PostgreSQL's default since
/// 9.1), a backslash in a `'...'` string is an ordinary character; with `false`,
/// text whose reading depends on it is a write, as in [`classify`].
pub fn classify_with(sql: &[u8], cfg: &ClassifyConfig, standard_conforming_strings: bool) -> Classification {
    let (target, reason, txn) = classify_text(sql, cfg, standard_conforming_strings);
    match leading_hint(sql) {
        Some(hint) => Classification {
            target: if hint == Hint::Primary { Target::Write } else { Target::Read },
            reason: Reason::Hint,
            hint: Some(hint),
            txn,
        },
        None => Classification { target, reason, hint: None, txn },
    }
}

mod txn_control;
mod write_functions;

use txn_control::*;
use write_functions::is_configured;
pub use write_functions::{is_builtin_write_function, is_write_function};

/// The hint in the comments before the first token: the first comment whose text
/// starts with `pgmux:primary` or `pgmux:replica` (ASCII case ignored, spaces around
/// allowed, more words may follow a space).
pub fn leading_hint(sql: &[u8]) -> Option<Hint> {
    let mut i = 0;
    loop {
        while sql.get(i).is_some_and(|&c| c.is_ascii_whitespace() || c == 0x0b) {
            i += 1;
        }
        let body = match (sql.get(i), sql.get(i + 1)) {
            (Some(b'-'), Some(b'-')) => {
                let start = i + 2;
                i = start;
                while sql.get(i).is_some_and(|&c| c != b'\n' && c != b'\r') {
                    i += 1;
                }
                &sql[start..i]
            }
            (Some(b'/'), Some(b'*')) => {
                let start = i + 2;
                i = start;
                let mut depth = 1;
                while depth > 0 {
                    match (sql.get(i), sql.get(i + 1)) {
                        (None, _) => return None,
                        (Some(b'/'), Some(b'*')) => {
                            depth += 1;
                            i += 2;
                        }
                        (Some(b'*'), Some(b'/')) => {
                            depth -= 1;
                            i += 2;
                        }
                        _ => i += 1,
                    }
                }
                &sql[start..i - 2]
            }
            _ => return None,
        };
        if let Some(h) = hint_in(body) {
            return Some(h);
        }
    }
}

fn hint_in(body: &[u8]) -> Option<Hint> {
    let body = body.trim_ascii_start();
    let rest = body.get(..6).filter(|p| p.eq_ignore_ascii_case(b"pgmux:")).map(|_| body[6..].trim_ascii_start())?;
    let word_end = rest.iter().position(|c| c.is_ascii_whitespace()).unwrap_or(rest.len());
    match &rest[..word_end] {
        w if w.eq_ignore_ascii_case(b"primary") => Some(Hint::Primary),
        w if w.eq_ignore_ascii_case(b"replica") => Some(Hint::Replica),
        _ => None,
    }
}

type Verdict = (Target, Reason, TxnEffect);

fn classify_text(sql: &[u8], cfg: &ClassifyConfig, standard_conforming_strings: bool) -> Verdict {
    let mut lexer = Lexer::new(sql);
    let mut stmt = Stmt::new();
    let mut first: Option<Verdict> = None;
    let mut statements = 0usize;
    let mut any_txn = false;
    loop {
        let t = lexer.next();
        match t {
            Some(Tok::Semicolon) | None => {
                if stmt.tokens > 0 {
                    let v = stmt.finish();
                    statements += 1;
                    any_txn |= v.2 != TxnEffect::None;
                    first.get_or_insert(v);
                    if t.is_some() {
                        stmt = Stmt::new();
                    }
                }
                if t.is_none() {
                    break;
                }
            }
            Some(t) => stmt.feed(t, cfg),
        }
    }
    if lexer.unterminated() || (lexer.backslash_quote() && !standard_conforming_strings) {
        return (Target::Write, Reason::Unknown, TxnEffect::None);
    }
    match first {
        None => (Target::Write, Reason::Unknown, TxnEffect::None),
        Some(_) if statements > 1 => (Target::Write, Reason::MultiStatement, if any_txn { TxnEffect::Mixed } else { TxnEffect::None }),
        Some(v) => v,
    }
}

/// The first word of a statement (after `(`s and an `EXPLAIN` prefix).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    None,
    Query,
    Show,
    Begin,
    Start,
    Commit,
    Rollback,
    Savepoint,
    Release,
    Prepare,
    Set,
    Reset,
    Discard,
    /// A statement known not to be a read.
    Write,
    Unknown,
}

fn verb_of(w: &[u8]) -> Verb {
    if w.eq_ignore_ascii_case(b"select") {
        return Verb::Query; // by far the most common
    }
    let mut buf = [0u8; 12];
    let Some(n) = buf.get_mut(..w.len()) else { return Verb::Unknown };
    for (d, s) in n.iter_mut().zip(w) {
        *d = s.to_ascii_lowercase();
    }
    match &*n {
        b"select" | b"values" | b"table" | b"with" => Verb::Query,
        b"show" => Verb::Show,
        b"begin" => Verb::Begin,
        b"start" => Verb::Start,
        b"commit" | b"end" => Verb::Commit,
        b"rollback" | b"abort" => Verb::Rollback,
        b"savepoint" => Verb::Savepoint,
        b"release" => Verb::Release,
        b"prepare" => Verb::Prepare,
        b"set" => Verb::Set,
        b"reset" => Verb::Reset,
        b"discard" => Verb::Discard,
        b"insert" | b"update" | b"delete" | b"merge" | b"create" | b"alter" | b"drop" | b"truncate" | b"grant" | b"revoke" | b"copy"
        | b"call" | b"do" | b"vacuum" | b"analyze" | b"analyse" | b"cluster" | b"reindex" | b"refresh" | b"lock" | b"comment"
        | b"security" | b"import" | b"notify" | b"listen" | b"unlisten" | b"load" | b"deallocate" | b"execute" | b"declare" | b"fetch"
        | b"move" | b"close" | b"checkpoint" | b"reassign" => Verb::Write,
        _ => Verb::Unknown,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Before the verb: `(`s are skipped.
    Start,
    /// Right after `EXPLAIN`: `(` opens its option list.
    Explain,
    /// After `EXPLAIN ANALYZE|VERBOSE`: `(` opens a parenthesized query.
    ExplainWords,
    /// Inside `EXPLAIN (...)`, at this depth.
    ExplainOptions(u32),
    /// After the verb.
    Body,
}

/// Tokens kept after the verb: enough for every transaction statement.
const HEAD: usize = 16;

/// One statement being read, token by token.
struct Stmt<'a> {
    /// Tokens so far (at most the length of the text: no overflow).
    tokens: usize,
    phase: Phase,
    verb: Verb,
    explain: bool,
    head: [Tok<'a>; HEAD],
    heads: usize,
    /// More tokens followed the verb than `head` holds.
    long: bool,
    /// The first thing that makes a query a write.
    write: Option<Reason>,
    /// The last tokens, a ring indexed by `tokens` (one store per token, not a shift).
    ring: [Tok<'a>; 4],
}

fn is_kw(t: Tok<'_>, kw: &[u8]) -> bool {
    matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case(kw))
}

fn name_of(t: Tok<'_>) -> Option<&[u8]> {
    match t {
        Tok::Word(w) | Tok::Quoted(w) => Some(w),
        _ => None,
    }
}

impl<'a> Stmt<'a> {
    fn new() -> Self {
        Stmt {
            tokens: 0,
            phase: Phase::Start,
            verb: Verb::None,
            explain: false,
            head: [Tok::Other; HEAD],
            heads: 0,
            long: false,
            write: None,
            ring: [Tok::Other; 4],
        }
    }

    fn feed(&mut self, t: Tok<'a>, cfg: &ClassifyConfig) {
        self.tokens += 1;
        if self.write.is_none() {
            self.write = self.writes(t, cfg);
        }
        match self.phase {
            Phase::Start => match t {
                Tok::LParen => {}
                Tok::Word(w) if !self.explain && w.eq_ignore_ascii_case(b"explain") => {
                    self.explain = true;
                    self.phase = Phase::Explain;
                }
                _ => self.set_verb(t),
            },
            Phase::Explain | Phase::ExplainWords => match t {
                Tok::LParen if self.phase == Phase::Explain => self.phase = Phase::ExplainOptions(1),
                Tok::LParen => self.phase = Phase::Start,
                Tok::Word(w)
                    if w.eq_ignore_ascii_case(b"analyze") || w.eq_ignore_ascii_case(b"analyse") || w.eq_ignore_ascii_case(b"verbose") =>
                {
                    self.phase = Phase::ExplainWords
                }
                _ => self.set_verb(t),
            },
            Phase::ExplainOptions(depth) => match t {
                Tok::LParen => self.phase = Phase::ExplainOptions(depth + 1),
                Tok::RParen if depth == 1 => self.phase = Phase::Start,
                Tok::RParen => self.phase = Phase::ExplainOptions(depth - 1),
                _ => {}
            },
            Phase::Body => {
                if self.verb != Verb::Query {
                    match self.head.get_mut(self.heads) {
                        Some(slot) => {
                            *slot = t;
                            self.heads += 1;
                        }
                        None => self.long = true,
                    }
                }
            }
        }
        self.ring[self.tokens % 4] = t;
    }

    fn set_verb(&mut self, t: Tok<'a>) {
        self.verb = match t {
            Tok::Word(w) => verb_of(w),
            _ => Verb::Unknown,
        };
        self.phase = Phase::Body;
    }

    /// What in a query makes it a write, looking at `t` and the tokens before it.
    fn writes(&self, t: Tok<'a>, cfg: &ClassifyConfig) -> Option<Reason> {
        // `tokens` already counts `t`; the ring holds the tokens before it.
        let back = |k: usize| self.ring[self.tokens.wrapping_sub(k) % 4];
        let (p1, p2, p3) = (back(1), back(2), back(3));
        match t {
            // After a dot, a word is a name (`excluded.update`, `t.into`), never a keyword.
            Tok::Word(w) if p1 == Tok::Dot => is_configured(None, w, cfg).then_some(Reason::WriteFunction),
            // Only words of 2 to 6 letters matter here.
            Tok::Word(w) if !(2..=6).contains(&w.len()) => None,
            Tok::Word(w) => {
                let is = |k: &[u8]| w.eq_ignore_ascii_case(k);
                if is_kw(p1, b"for") && (is(b"update") || is(b"share") || is(b"no") || is(b"key")) {
                    Some(Reason::Locking)
                } else if is(b"into") {
                    Some(Reason::SelectInto)
                } else if is(b"insert") || is(b"update") || is(b"delete") || is(b"merge") {
                    Some(Reason::DataModifyingCte)
                } else {
                    None
                }
            }
            Tok::Quoted(w) if p1 == Tok::Dot && is_configured(None, w, cfg) => Some(Reason::WriteFunction),
            Tok::LParen => {
                let name = name_of(p1)?;
                let schema = if p2 == Tok::Dot { name_of(p3) } else { None };
                // An empty name is a U&"..." identifier the lexer does not decode.
                (name.is_empty() || is_write_function(schema, name, cfg)).then_some(Reason::WriteFunction)
            }
            _ => None,
        }
    }

    fn finish(&self) -> Verdict {
        use TxnEffect as X;
        let head = &self.head[..self.heads];
        if self.explain && self.verb != Verb::Query {
            let reason = if self.verb == Verb::Write { Reason::Write } else { Reason::Unknown };
            return (Target::Write, reason, X::None);
        }
        let txn = |target, txn| (target, Reason::Transaction, txn);
        match self.verb {
            Verb::None | Verb::Unknown => (Target::Write, Reason::Unknown, X::None),
            Verb::Query => match self.write {
                Some(reason) => (Target::Write, reason, X::None),
                None => (Target::Read, Reason::Read, X::None),
            },
            Verb::Show => (Target::Read, Reason::Read, X::None),
            Verb::Write => (Target::Write, Reason::Write, X::None),
            Verb::Begin => begin(skip_work(head), self.long),
            Verb::Start if at(head, 0, b"transaction") => begin(&head[1..], self.long),
            Verb::Start => (Target::Write, Reason::Unknown, X::None),
            Verb::Commit if at(head, 0, b"prepared") => txn(Target::Write, X::CommitPrepared),
            Verb::Rollback if at(head, 0, b"prepared") => txn(Target::Write, X::RollbackPrepared),
            Verb::Rollback if at(skip_work(head), 0, b"to") => txn(Target::Write, X::RollbackToSavepoint),
            Verb::Commit | Verb::Rollback => {
                let rest = skip_work(head);
                let chain = at(rest, 0, b"and") && at(rest, 1, b"chain");
                txn(Target::Write, if chain { X::EndAndChain } else { X::End })
            }
            Verb::Savepoint => txn(Target::Write, X::Savepoint),
            Verb::Release => txn(Target::Write, X::ReleaseSavepoint),
            Verb::Prepare if at(head, 0, b"transaction") => txn(Target::Write, X::PrepareTransaction),
            Verb::Prepare => (Target::Write, Reason::Write, X::None),
            Verb::Set => set(head, self.long),
            Verb::Reset if at(head, 0, b"all") || at(head, 0, b"default_transaction_read_only") => {
                (Target::Write, Reason::Write, X::ClearSessionReadOnly)
            }
            Verb::Discard if at(head, 0, b"all") => (Target::Write, Reason::Write, X::ClearSessionReadOnly),
            Verb::Reset | Verb::Discard => (Target::Write, Reason::Write, X::None),
        }
    }
}

#[cfg(test)]
mod tests;

/// The statement corpus (`src/router/corpus.sql`) and its reader, shared by the unit
/// test above and the pg_query oracle (`protocol-tests/classifier_oracle.rs`).
#[cfg(any(test, feature = "pg-query-oracle"))]
#[doc(hidden)]
pub mod corpus;
