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
}

impl ClassifyConfig {
    /// A configuration with these write functions (trimmed and lower-cased).
    pub fn new<I, S>(write_functions: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        ClassifyConfig {
            write_functions: write_functions.into_iter().map(|f| f.as_ref().trim().to_ascii_lowercase()).collect(),
        }
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

/// Built-in functions that write, change state that lives on the server they run
/// on, or fail on a hot standby, so a query calling one goes to the primary.
/// Exact names: `nextval`, `setval`, `currval`, `lastval` (the session's sequence
/// state), `set_config`, `pg_notify`,
/// `txid_current`, `pg_current_xact_id`, `lowrite`, `pg_switch_wal`,
/// `pg_terminate_backend`, `pg_cancel_backend`, `pg_reload_conf`,
/// `pg_rotate_logfile`, `pg_promote`, `pg_logical_emit_message`,
/// `pg_replication_slot_advance`, `pg_stat_statements_reset`, `pg_backup_start`,
/// `pg_backup_stop`, `pg_start_backup`, `pg_stop_backup`,
/// `pg_import_system_collations`, `pg_log_backend_memory_contexts`, `pg_nextoid`,
/// `pg_log_standby_snapshot`, `pg_sync_replication_slots`,
/// `pg_truncate_visibility_map`, `gin_clean_pending_list`.
/// Prefixes: `pg_advisory_` and `pg_try_advisory_` (every advisory lock and
/// unlock), `pg_stat_reset`, `pg_current_wal_` (WAL positions: an error during
/// recovery), `lo_` (large objects, except the reading `lo_get`,
/// `lo_lseek[64]`, `lo_tell[64]`, `lo_close`), `pg_create_` (restore points,
/// replication slots), `pg_drop_`, `pg_copy_`, `pg_logical_slot_`,
/// `pg_replication_origin_`, `pg_file_` (adminpack), `pg_wal_replay_` (pausing a
/// replica is not a read), `pg_restore_` and `pg_clear_` (planner statistics),
/// `brin_summarize`, `brin_desummarize`, `dblink` (runs SQL elsewhere; its
/// connections are session state), `binary_upgrade_`.
/// `name` is compared without regard to ASCII case; a schema does not matter.
pub fn is_builtin_write_function(name: &[u8]) -> bool {
    // Lower-cased, at most 64 bytes: longer than any exact name, enough for prefixes.
    let mut buf = [0u8; 64];
    let n = &mut buf[..name.len().min(64)];
    for (d, s) in n.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let n = &*n;
    if matches!(
        n,
        b"nextval"
            | b"setval"
            | b"currval"
            | b"lastval"
            | b"set_config"
            | b"pg_notify"
            | b"txid_current"
            | b"pg_current_xact_id"
            | b"lowrite"
            | b"pg_switch_wal"
            | b"pg_terminate_backend"
            | b"pg_cancel_backend"
            | b"pg_reload_conf"
            | b"pg_rotate_logfile"
            | b"pg_promote"
            | b"pg_logical_emit_message"
            | b"pg_replication_slot_advance"
            | b"pg_stat_statements_reset"
            | b"pg_backup_start"
            | b"pg_backup_stop"
            | b"pg_start_backup"
            | b"pg_stop_backup"
            | b"pg_import_system_collations"
            | b"pg_log_backend_memory_contexts"
            | b"pg_nextoid"
            | b"pg_log_standby_snapshot"
            | b"pg_sync_replication_slots"
            | b"pg_truncate_visibility_map"
            | b"gin_clean_pending_list"
    ) {
        return true;
    }
    if n.starts_with(b"lo_") {
        return !matches!(n, b"lo_get" | b"lo_lseek" | b"lo_lseek64" | b"lo_tell" | b"lo_tell64" | b"lo_close");
    }
    const PREFIXES: &[&[u8]] = &[
        b"pg_advisory_",
        b"pg_try_advisory_",
        b"pg_stat_reset",
        b"pg_current_wal_",
        b"pg_create_",
        b"pg_drop_",
        b"pg_copy_",
        b"pg_logical_slot_",
        b"pg_replication_origin_",
        b"pg_file_",
        b"pg_wal_replay_",
        b"pg_restore_",
        b"pg_clear_",
        b"brin_summarize",
        b"brin_desummarize",
        b"dblink",
        b"binary_upgrade_",
    ];
    PREFIXES.iter().any(|p| n.starts_with(p))
}

/// Whether a call of `schema.name(...)` (or `name(...)` when `schema` is `None`)
/// may write: a built-in write function or one in `cfg.write_functions`. An empty
/// `schema` (a `U&"..."` identifier, not read) matches any configured schema.
pub fn is_write_function(schema: Option<&[u8]>, name: &[u8], cfg: &ClassifyConfig) -> bool {
    is_builtin_write_function(name) || is_configured(schema, name, cfg)
}

fn is_configured(schema: Option<&[u8]>, name: &[u8], cfg: &ClassifyConfig) -> bool {
    cfg.write_functions.iter().any(|f| {
        let f = f.as_bytes();
        // Fast rejection (this runs for every name after a dot): a name shorter than
        // PostgreSQL's 63-byte limit matches only an entry that ends with it.
        if name.len() < 63 {
            let Some(cut) = f.len().checked_sub(name.len()) else { return false };
            if !f[cut..].eq_ignore_ascii_case(name) || (cut > 0 && f[cut - 1] != b'.') {
                return false;
            }
        }
        let (f_schema, f_name) = match f.iter().rposition(|&c| c == b'.') {
            Some(i) => (Some(&f[..i]), &f[i + 1..]),
            None => (None, f),
        };
        same_ident(f_name, name)
            && match (f_schema, schema) {
                (Some(a), Some(b)) => b.is_empty() || same_ident(a, b),
                _ => true,
            }
    })
}

/// Equal names as PostgreSQL sees them: ASCII case ignored, and cut to 63 bytes
/// (NAMEDATALEN - 1), as PostgreSQL cuts longer identifiers.
fn same_ident(a: &[u8], b: &[u8]) -> bool {
    const MAX: usize = 63;
    a[..a.len().min(MAX)].eq_ignore_ascii_case(&b[..b.len().min(MAX)])
}

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
        Some(_) if statements > 1 => {
            (Target::Write, Reason::MultiStatement, if any_txn { TxnEffect::Mixed } else { TxnEffect::None })
        }
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
        b"insert" | b"update" | b"delete" | b"merge" | b"create" | b"alter" | b"drop" | b"truncate" | b"grant"
        | b"revoke" | b"copy" | b"call" | b"do" | b"vacuum" | b"analyze" | b"analyse" | b"cluster" | b"reindex"
        | b"refresh" | b"lock" | b"comment" | b"security" | b"import" | b"notify" | b"listen" | b"unlisten"
        | b"load" | b"deallocate" | b"execute" | b"declare" | b"fetch" | b"move" | b"close" | b"checkpoint"
        | b"reassign" => Verb::Write,
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
                    if w.eq_ignore_ascii_case(b"analyze")
                        || w.eq_ignore_ascii_case(b"analyse")
                        || w.eq_ignore_ascii_case(b"verbose") =>
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

fn at(toks: &[Tok<'_>], i: usize, kw: &[u8]) -> bool {
    toks.get(i).is_some_and(|&t| is_kw(t, kw))
}

/// Skips the optional `WORK` / `TRANSACTION` of BEGIN, COMMIT, ROLLBACK ...
fn skip_work<'t, 'a>(toks: &'t [Tok<'a>]) -> &'t [Tok<'a>] {
    if at(toks, 0, b"work") || at(toks, 0, b"transaction") {
        &toks[1..]
    } else {
        toks
    }
}

/// Transaction modes, as in BEGIN, START TRANSACTION and SET TRANSACTION.
#[derive(Default)]
struct Modes {
    read_only: bool,
    read_write: bool,
    serializable: bool,
    snapshot: bool,
    /// Something that is not a transaction mode.
    invalid: bool,
}

impl Modes {
    /// Read-only, and nothing a hot standby refuses.
    fn replica_ok(&self) -> bool {
        self.read_only && !self.read_write && !self.serializable && !self.snapshot && !self.invalid
    }
}

fn modes(toks: &[Tok<'_>]) -> Modes {
    let mut m = Modes::default();
    let mut i = 0;
    while i < toks.len() {
        let kw = |j: usize, k: &[u8]| at(toks, i + j, k);
        if toks[i] == Tok::Other {
            i += 1; // the commas between modes
        } else if kw(0, b"isolation") && kw(1, b"level") {
            if kw(2, b"serializable") {
                m.serializable = true;
                i += 3;
            } else if (kw(2, b"repeatable") && kw(3, b"read"))
                || (kw(2, b"read") && (kw(3, b"committed") || kw(3, b"uncommitted")))
            {
                i += 4;
            } else {
                m.invalid = true;
                break;
            }
        } else if kw(0, b"read") && kw(1, b"only") {
            m.read_only = true;
            i += 2;
        } else if kw(0, b"read") && kw(1, b"write") {
            m.read_write = true;
            i += 2;
        } else if kw(0, b"deferrable") {
            i += 1;
        } else if kw(0, b"not") && kw(1, b"deferrable") {
            i += 2;
        } else if kw(0, b"snapshot") {
            m.snapshot = true;
            i += 2;
        } else {
            m.invalid = true;
            break;
        }
    }
    m
}

fn begin(toks: &[Tok<'_>], long: bool) -> Verdict {
    let m = modes(toks);
    let (target, txn) = if long || m.invalid || m.snapshot {
        (Target::Write, TxnEffect::Begin)
    } else if m.read_write || m.serializable {
        (Target::Write, TxnEffect::BeginPrimary)
    } else if m.read_only {
        (Target::Read, TxnEffect::BeginReadOnly)
    } else {
        (Target::Write, TxnEffect::Begin)
    };
    (target, Reason::Transaction, txn)
}

/// `SET ...`: transaction modes and the read-only settings; other settings are writes.
fn set(toks: &[Tok<'_>], long: bool) -> Verdict {
    use TxnEffect as X;
    let txn = |target, txn| (target, Reason::Transaction, txn);
    // SET [LOCAL | SESSION] ..., where SESSION may also start SESSION CHARACTERISTICS.
    let characteristics = |t: &[Tok<'_>]| {
        at(t, 0, b"session") && at(t, 1, b"characteristics") && at(t, 2, b"as") && at(t, 3, b"transaction")
    };
    let local = at(toks, 0, b"local");
    let scoped = local || (at(toks, 0, b"session") && !characteristics(toks));
    let rest = if scoped { &toks[1..] } else { toks };
    if at(rest, 0, b"transaction") {
        let m = modes(&rest[1..]);
        return if m.replica_ok() && !long {
            txn(Target::Read, X::SetTransactionReadOnly)
        } else {
            txn(Target::Write, X::SetTransaction)
        };
    }
    if characteristics(rest) {
        let m = modes(&rest[4..]);
        return if local {
            txn(Target::Write, X::None) // only until the end of the transaction
        } else if m.replica_ok() && !long {
            txn(Target::Read, X::SetSessionReadOnly)
        } else if m.read_write || m.invalid || long {
            txn(Target::Write, X::ClearSessionReadOnly)
        } else {
            txn(Target::Write, X::None)
        };
    }
    // `name = value` or `name TO value`, the value a single word.
    let value_on = rest.len() == 3
        && (rest[1] == Tok::Other || is_kw(rest[1], b"to"))
        && (is_kw(rest[2], b"on") || is_kw(rest[2], b"true") || is_kw(rest[2], b"yes"));
    if at(rest, 0, b"default_transaction_read_only") {
        if local {
            return txn(Target::Write, X::None);
        }
        return if value_on && !long {
            txn(Target::Read, X::SetSessionReadOnly)
        } else {
            txn(Target::Write, X::ClearSessionReadOnly)
        };
    }
    if at(rest, 0, b"transaction_read_only") {
        return if value_on && !long {
            txn(Target::Read, X::SetTransactionReadOnly)
        } else {
            txn(Target::Write, X::SetTransaction)
        };
    }
    if at(rest, 0, b"transaction_isolation") || at(rest, 0, b"transaction_deferrable") {
        return txn(Target::Write, X::SetTransaction);
    }
    (Target::Write, Reason::Write, X::None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> ClassifyConfig {
        ClassifyConfig::new(["my_schema.bump_counter", "audit_log"])
    }

    fn c(sql: &str) -> Classification {
        classify(sql.as_bytes(), &cfg())
    }

    fn read(sql: &str) {
        let got = c(sql);
        assert_eq!((got.target, got.reason), (Target::Read, Reason::Read), "{sql}");
    }

    fn write(sql: &str, reason: Reason) {
        let got = c(sql);
        assert_eq!((got.target, got.reason), (Target::Write, reason), "{sql}");
    }

    fn txn(sql: &str, target: Target, effect: TxnEffect) {
        let got = c(sql);
        assert_eq!((got.target, got.txn), (target, effect), "{sql}");
    }

    #[test]
    fn plain_queries_are_reads() {
        read("SELECT 1");
        read("select * from users where id = $1");
        read("  -- a comment\n /* another /* nested */ one */ SELECT 1;");
        read("(SELECT 1) UNION (SELECT 2)");
        read("((select 1))");
        read("VALUES (1), (2)");
        read("TABLE t");
        read("WITH x AS (SELECT 1) SELECT * FROM x");
        read("WITH RECURSIVE t(n) AS (VALUES (1) UNION ALL SELECT n+1 FROM t WHERE n < 5) SELECT sum(n) FROM t");
        read("SELECT 1;");
        read("SELECT 1;;  ; -- trailing\n");
        read("SELECT count(*), lower(name), coalesce(a, b) FROM t GROUP BY 2");
        read("SHOW search_path");
        read("show all");
        read("SELECT * FROM t FOR READ ONLY");
        read("SELECT substring(name FROM 1 FOR 3) FROM t");
    }

    #[test]
    fn text_in_quotes_and_comments_is_not_code() {
        read("SELECT 'nextval(' ");
        read("SELECT 'a; DELETE FROM t'");
        read("SELECT $$ FOR UPDATE $$, $q$ ; insert $q$");
        read("SELECT E'it\\'s; delete', 'x''y; update'");
        read("SELECT 1 /* ; DELETE FROM t */");
        read("SELECT 1 -- ; DELETE FROM t");
        read("SELECT \"update\", \"into\" FROM t");
        read("SELECT \"for\" \"update\" FROM t");
        read("SELECT t.update, t.delete, t.into FROM t");
    }

    #[test]
    fn locking_clauses_are_writes() {
        write("SELECT * FROM t FOR UPDATE", Reason::Locking);
        write("SELECT * FROM t WHERE id = 1 FOR NO KEY UPDATE NOWAIT", Reason::Locking);
        write("select * from t for share skip locked", Reason::Locking);
        write("SELECT * FROM t FOR KEY SHARE OF t", Reason::Locking);
        write("SELECT * FROM (SELECT * FROM t FOR UPDATE) s", Reason::Locking);
        write("SELECT * FROM t FOR /* c */ UPDATE", Reason::Locking);
        write("TABLE t FOR UPDATE", Reason::Locking);
    }

    #[test]
    fn into_and_data_modifying_ctes_are_writes() {
        write("select * into t2 from t", Reason::SelectInto);
        write("SELECT a INTO TEMP t2 FROM t", Reason::SelectInto);
        write("WITH x AS (INSERT INTO t VALUES (1) RETURNING *) SELECT * FROM x", Reason::DataModifyingCte);
        write("WITH d AS (DELETE FROM t RETURNING id) SELECT count(*) FROM d", Reason::DataModifyingCte);
        write("WITH u AS (UPDATE t SET a = 1 RETURNING *) SELECT 1", Reason::DataModifyingCte);
        write(
            "WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *) SELECT 1",
            Reason::DataModifyingCte,
        );
        write("WITH x AS (SELECT 1) INSERT INTO t SELECT * FROM x", Reason::DataModifyingCte);
    }

    #[test]
    fn write_functions_are_writes() {
        write("SELECT nextval('s')", Reason::WriteFunction);
        write("select \"nextval\"('s')", Reason::WriteFunction);
        write("SELECT pg_catalog.nextval('s')", Reason::WriteFunction);
        write("SELECT \"pg_catalog\".\"NEXTVAL\" ('s')", Reason::WriteFunction);
        write("SELECT NEXTVAL /* c */ ('s')", Reason::WriteFunction);
        write("SELECT setval('s', 10)", Reason::WriteFunction);
        write("SELECT pg_advisory_xact_lock(1)", Reason::WriteFunction);
        write("SELECT pg_advisory_lock(1)", Reason::WriteFunction);
        write("SELECT pg_try_advisory_lock_shared(1, 2)", Reason::WriteFunction);
        write("SELECT pg_advisory_unlock_all()", Reason::WriteFunction);
        write("SELECT set_config('search_path', '', false)", Reason::WriteFunction);
        write("SELECT pg_notify('chan', 'x')", Reason::WriteFunction);
        write("SELECT lo_create(0)", Reason::WriteFunction);
        write("SELECT lo_unlink(123)", Reason::WriteFunction);
        write("SELECT lo_from_bytea(0, '\\x00')", Reason::WriteFunction);
        write("SELECT txid_current()", Reason::WriteFunction);
        write("SELECT pg_current_xact_id()", Reason::WriteFunction);
        write("SELECT pg_stat_reset_shared('bgwriter')", Reason::WriteFunction);
        write("SELECT pg_terminate_backend(123)", Reason::WriteFunction);
        write("SELECT * FROM dblink_exec('db', 'DELETE FROM t')", Reason::WriteFunction);
        write("SELECT * FROM t WHERE id = nextval('s')", Reason::WriteFunction);
        write("VALUES (nextval('s'))", Reason::WriteFunction);
        write("SELECT U&\"\\006eextval\"('s')", Reason::WriteFunction);
        read("SELECT lo_get(123)");
        read("SELECT currval_like(1), nextvalue(2), my_nextval(3)");
        read("SELECT nextval FROM t");
        read("SELECT pg_advisory_locks FROM t");
    }

    #[test]
    fn configured_write_functions_are_writes() {
        write("SELECT my_schema.bump_counter()", Reason::WriteFunction);
        write("SELECT bump_counter()", Reason::WriteFunction);
        write("SELECT \"My_Schema\".\"bump_counter\"()", Reason::WriteFunction);
        write("SELECT audit_log('x')", Reason::WriteFunction);
        write("SELECT public.audit_log('x')", Reason::WriteFunction);
        write("SELECT t.audit_log FROM t", Reason::WriteFunction);
        // Conservative: `x.bump_counter` may be attribute notation for bump_counter(x).
        write("SELECT other_schema.bump_counter()", Reason::WriteFunction);
        read("SELECT bump_counter FROM t");
        assert!(!is_write_function(Some(b"other_schema"), b"bump_counter", &cfg()));
        assert!(is_write_function(Some(b"MY_SCHEMA"), b"Bump_Counter", &cfg()));
        assert!(is_write_function(None, b"bump_counter", &cfg()));
        let long = ClassifyConfig::new(["f_123456789_123456789_123456789_123456789_123456789_123456789_12"]);
        assert!(!classify(
            b"SELECT f_123456789_123456789_123456789_123456789_123456789_123456789_123_and_more()",
            &long
        )
        .is_read());
        let none = ClassifyConfig::default();
        let advisory = format!("SELECT pg_advisory_lock_{}(1)", "x".repeat(80));
        assert!(!classify(advisory.as_bytes(), &none).is_read());
        assert!(classify(b"SELECT my_schema.bump_counter()", &none).is_read());
    }

    #[test]
    fn multi_statements_are_writes() {
        write("SELECT 1; DELETE FROM t", Reason::MultiStatement);
        write("SELECT 1; SELECT 2", Reason::MultiStatement);
        txn("BEGIN; SELECT 1; COMMIT", Target::Write, TxnEffect::Mixed);
        txn("SELECT 1; SELECT 2", Target::Write, TxnEffect::None);
    }

    #[test]
    fn other_statements_are_writes() {
        write("INSERT INTO t VALUES (1) RETURNING *", Reason::Write);
        write("UPDATE t SET a = 1", Reason::Write);
        write("delete from t", Reason::Write);
        write("MERGE INTO t USING s ON true WHEN MATCHED THEN DO NOTHING", Reason::Write);
        write("COPY t TO STDOUT", Reason::Write);
        write("COPY (SELECT 1) TO STDOUT", Reason::Write);
        write("CREATE TABLE t (a int)", Reason::Write);
        write("CALL p()", Reason::Write);
        write("DO $$ BEGIN PERFORM 1; END $$", Reason::Write);
        write("SET search_path = a", Reason::Write);
        write("LOCK TABLE t", Reason::Write);
        write("DECLARE c CURSOR FOR SELECT 1", Reason::Write);
        write("EXPLAIN ANALYZE INSERT INTO t VALUES (1)", Reason::Write);
        write("EXPLAIN UPDATE t SET a = 1", Reason::Write);
        write("PREPARE p AS SELECT 1", Reason::Write);
        write("EXECUTE p", Reason::Write);
        write("VACUUM t", Reason::Write);
    }

    #[test]
    fn unknown_and_unreadable_text_is_a_write() {
        for sql in [
            "",
            "   ",
            ";",
            "-- only a comment",
            "frobnicate t",
            "(",
            "EXPLAIN",
            "EXPLAIN (ANALYZE)",
            "123",
            "START",
            "SELECT 'unterminated",
            "SELECT \"x",
            "SELECT $$ x",
            "SELECT 1 /* open",
            "EXPLAIN SHOW x",
            "SELECT 'a\\', nextval('s')",
        ] {
            write(sql, Reason::Unknown);
        }
    }

    #[test]
    fn explain() {
        read("EXPLAIN SELECT * FROM t");
        read("EXPLAIN ANALYZE SELECT * FROM t");
        read("explain analyse verbose select 1");
        read("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) SELECT * FROM t");
        read("EXPLAIN (ANALYZE true, SETTINGS) WITH x AS (SELECT 1) SELECT * FROM x");
        read("EXPLAIN ANALYZE (SELECT 1) UNION (SELECT 2)");
        write("EXPLAIN ANALYZE SELECT * FROM t FOR UPDATE", Reason::Locking);
        write("EXPLAIN (ANALYZE) SELECT nextval('s')", Reason::WriteFunction);
        write("EXPLAIN ANALYZE CREATE TABLE t2 AS SELECT 1", Reason::Write);
        write("EXPLAIN EXPLAIN SELECT 1", Reason::Unknown);
    }

    #[test]
    fn hints() {
        let r = c("/* pgmux:replica */ SELECT 1");
        assert_eq!((r.target, r.reason, r.hint), (Target::Read, Reason::Hint, Some(Hint::Replica)));
        let r = c("/* pgmux:primary */ SELECT 1");
        assert_eq!((r.target, r.reason, r.hint), (Target::Write, Reason::Hint, Some(Hint::Primary)));
        let r = c("-- pgmux:replica\nSELECT my_schema.bump_counter()");
        assert_eq!((r.target, r.hint), (Target::Read, Some(Hint::Replica)));
        let r = c("/* app:web */ /*PGMUX: Primary reason=x*/ SELECT 1");
        assert_eq!((r.target, r.hint), (Target::Write, Some(Hint::Primary)));
        // Not leading, or not a hint: no effect.
        assert_eq!(c("SELECT /* pgmux:replica */ nextval('s')").hint, None);
        assert_eq!(c("/* pgmux:replicas */ SELECT 1").hint, None);
        assert_eq!(c("/* pgmux:replica").hint, None);
        assert_eq!(c("/* pgmux:replica */ BEGIN").txn, TxnEffect::Begin);
    }

    #[test]
    fn transaction_control() {
        use Target::{Read as R, Write as W};
        use TxnEffect::*;
        txn("BEGIN", W, Begin);
        txn("begin work", W, Begin);
        txn("START TRANSACTION", W, Begin);
        txn("BEGIN ISOLATION LEVEL REPEATABLE READ", W, Begin);
        txn("BEGIN READ ONLY", R, BeginReadOnly);
        txn("BEGIN TRANSACTION READ ONLY", R, BeginReadOnly);
        txn("START TRANSACTION READ ONLY", R, BeginReadOnly);
        txn("BEGIN ISOLATION LEVEL READ COMMITTED, READ ONLY", R, BeginReadOnly);
        txn("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY NOT DEFERRABLE", R, BeginReadOnly);
        txn("START TRANSACTION READ WRITE", W, BeginPrimary);
        txn("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY DEFERRABLE", W, BeginPrimary);
        txn("BEGIN READ ONLY, READ WRITE", W, BeginPrimary);
        txn("BEGIN nonsense", W, Begin);
        txn("SET TRANSACTION READ ONLY", R, SetTransactionReadOnly);
        txn("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY", R, SetTransactionReadOnly);
        txn("SET TRANSACTION READ WRITE", W, SetTransaction);
        txn("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE", W, SetTransaction);
        txn("SET TRANSACTION SNAPSHOT '00000003-0000001B-1'", W, SetTransaction);
        txn("SET LOCAL transaction_read_only = on", R, SetTransactionReadOnly);
        txn("SET transaction_read_only TO off", W, SetTransaction);
        txn("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", R, SetSessionReadOnly);
        txn("SET SESSION CHARACTERISTICS AS TRANSACTION READ WRITE", W, ClearSessionReadOnly);
        txn("SET SESSION CHARACTERISTICS AS TRANSACTION ISOLATION LEVEL REPEATABLE READ", W, None);
        txn("SET LOCAL TRANSACTION READ ONLY", R, SetTransactionReadOnly);
        txn("SET SESSION TRANSACTION ISOLATION LEVEL SERIALIZABLE", W, SetTransaction);
        txn("SET SESSION SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", R, SetSessionReadOnly);
        txn("SET LOCAL SESSION CHARACTERISTICS AS TRANSACTION READ ONLY", W, None);
        txn("SET default_transaction_read_only = true", R, SetSessionReadOnly);
        txn("SET SESSION default_transaction_read_only TO on", R, SetSessionReadOnly);
        txn("SET default_transaction_read_only = 'on'", W, ClearSessionReadOnly);
        txn("SET default_transaction_read_only TO DEFAULT", W, ClearSessionReadOnly);
        txn("RESET default_transaction_read_only", W, ClearSessionReadOnly);
        txn("RESET ALL", W, ClearSessionReadOnly);
        txn("DISCARD ALL", W, ClearSessionReadOnly);
        txn("SET statement_timeout = 0", W, None);
        txn("COMMIT", W, End);
        txn("commit work", W, End);
        txn("END", W, End);
        txn("END TRANSACTION", W, End);
        txn("ROLLBACK", W, End);
        txn("ABORT", W, End);
        txn("COMMIT AND CHAIN", W, EndAndChain);
        txn("ROLLBACK AND NO CHAIN", W, End);
        txn("ROLLBACK TO SAVEPOINT sp", W, RollbackToSavepoint);
        txn("ROLLBACK WORK TO sp", W, RollbackToSavepoint);
        txn("SAVEPOINT sp", W, Savepoint);
        txn("RELEASE SAVEPOINT sp", W, ReleaseSavepoint);
        txn("RELEASE sp", W, ReleaseSavepoint);
        txn("PREPARE TRANSACTION 'gid'", W, PrepareTransaction);
        txn("COMMIT PREPARED 'gid'", W, CommitPrepared);
        txn("ROLLBACK PREPARED 'gid'", W, RollbackPrepared);
        assert_eq!(c("BEGIN").reason, Reason::Transaction);
    }

    #[test]
    fn standard_conforming_strings() {
        // Spring Data JPA's LIKE: a read when the session's strings are standard.
        let sql = b"select u1_0.id from users u1_0 where u1_0.name like $1 escape '\\'";
        assert_eq!(classify(sql, &cfg()).reason, Reason::Unknown);
        assert_eq!(classify_with(sql, &cfg(), false).reason, Reason::Unknown);
        assert_eq!(classify_with(sql, &cfg(), true).reason, Reason::Read);
        // With standard_conforming_strings off, this string hides nothing but is not
        // closed where it seems: a write whatever is known.
        let sql = b"select 'a\\', 'b' for update --'";
        assert_eq!(classify_with(sql, &cfg(), true).reason, Reason::Locking);
        assert_eq!(classify_with(sql, &cfg(), false).reason, Reason::Unknown);
        let sql = b"select 'a\\' , nextval('s') --'";
        assert_eq!(classify_with(sql, &cfg(), true).reason, Reason::WriteFunction);
        assert_eq!(classify(sql, &cfg()).reason, Reason::Unknown);
        assert!(classify_with(b"select '\\\\', E'\\''", &cfg(), false).is_read());
    }

    #[test]
    fn lexer_details_postgresql_shares() {
        // \r ends a `--` comment and \v is whitespace, as in PostgreSQL's scanner.
        write("SELECT 1 -- c\rFOR UPDATE", Reason::Locking);
        write("SELECT * FROM t FOR\x0bUPDATE", Reason::Locking);
    }

    /// Deterministic pseudo-random bytes and every prefix of tricky statements: no
    /// panic, and a cut-off statement is never a read unless its prefix really is one.
    #[test]
    fn never_panics() {
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let alphabet = b"sElEcT fOr UpDaTe nextval ( ) . ; ' \" $ $$ -- /* */ \\ \n \r \x0b e' u&' \xff \0";
        for _ in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let len = (x % 64) as usize;
            let mut s = Vec::with_capacity(len);
            let mut y = x;
            for _ in 0..len {
                y = y.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                s.push(alphabet[(y >> 33) as usize % alphabet.len()]);
            }
            let _ = classify(&s, &cfg());
            let _ = leading_hint(&s);
        }
        for sql in CORPUS_SAMPLE {
            for i in 0..=sql.len() {
                let _ = classify(&sql.as_bytes()[..i], &cfg());
            }
        }
    }

    const CORPUS_SAMPLE: &[&str] = &[
        "/* pgmux:replica */ WITH x AS (INSERT INTO t VALUES (E'\\'', $$;$$) RETURNING *) SELECT \"a\"\"b\".c FROM x FOR NO KEY UPDATE",
        "BEGIN ISOLATION LEVEL SERIALIZABLE, READ ONLY; SELECT U&\"d\\0061t\"('s') -- x\r",
        "EXPLAIN (ANALYZE, FORMAT JSON) SELECT pg_catalog.nextval('s'); SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY",
    ];

    /// The corpus in `corpus.sql`: every statement with its expected verdict.
    #[test]
    fn corpus() {
        let cfg = ClassifyConfig::new(corpus::WRITE_FUNCTIONS);
        let entries = corpus::entries(corpus::TEXT);
        assert!(entries.len() >= 300, "corpus has {} statements", entries.len());
        let mut failures = Vec::new();
        for e in &entries {
            let got = classify(e.sql.as_bytes(), &cfg);
            let target_ok = got.target == if e.read { Target::Read } else { Target::Write };
            let reason_ok = e.reason.is_none_or(|r| r == format!("{:?}", got.reason));
            let txn_ok = e.txn.is_none_or(|t| t == format!("{:?}", got.txn));
            if !(target_ok && reason_ok && txn_ok) {
                failures.push(format!(
                    "line {}: {:?}\n    expected {} {:?} {:?}, got {got:?}",
                    e.line,
                    e.sql,
                    if e.read { "read" } else { "write" },
                    e.reason,
                    e.txn
                ));
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} corpus statements:\n{}",
            failures.len(),
            entries.len(),
            failures.join("\n")
        );
    }
}

/// The statement corpus (`src/router/corpus.sql`) and its reader, shared by the unit
/// test above and the pg_query oracle (`protocol-tests/classifier_oracle.rs`).
#[cfg(any(test, feature = "pg-query-oracle"))]
#[doc(hidden)]
pub mod corpus {
    pub const TEXT: &str = include_str!("corpus.sql");

    /// The write functions the corpus is classified with.
    pub const WRITE_FUNCTIONS: [&str; 3] = ["my_schema.bump_counter", "audit.log_event", "touch_session"];

    pub struct Entry<'a> {
        /// Line of the `---` header in corpus.sql.
        pub line: usize,
        pub read: bool,
        pub reason: Option<&'a str>,
        pub txn: Option<&'a str>,
        pub sql: &'a str,
    }

    /// Entries are a header line `--- read|write [reason=Reason] [txn=TxnEffect]`
    /// followed by the statement, up to the next header or section line (`-- ==`).
    /// Lines before the first header and after a section line are commentary.
    pub fn entries(text: &str) -> Vec<Entry<'_>> {
        let mut out = Vec::new();
        // (line of the header, byte offset of the statement, header)
        let mut open: Option<(usize, usize, &str)> = None;
        let mut offset = 0;
        for (i, l) in text.split_inclusive('\n').enumerate() {
            let header = l.strip_prefix("--- ");
            if header.is_some() || l.starts_with("-- ==") {
                if let Some((line, from, header)) = open.take() {
                    out.push(entry(line, header, &text[from..offset]));
                }
            }
            if let Some(header) = header {
                open = Some((i + 1, offset + l.len(), header.trim()));
            }
            offset += l.len();
        }
        if let Some((line, from, header)) = open {
            out.push(entry(line, header, &text[from..]));
        }
        out
    }

    fn entry<'a>(line: usize, header: &'a str, sql: &'a str) -> Entry<'a> {
        let mut words = header.split_whitespace();
        let read = match words.next() {
            Some("read") => true,
            Some("write") => false,
            other => panic!("corpus.sql:{line}: expected read or write, found {other:?}"),
        };
        let (mut reason, mut txn) = (None, None);
        for w in words {
            match w.split_once('=') {
                Some(("reason", r)) => reason = Some(r),
                Some(("txn", t)) => txn = Some(t),
                _ => panic!("corpus.sql:{line}: unknown annotation {w:?}"),
            }
        }
        Entry { line, read, reason, txn, sql: sql.trim_end_matches(['\n', '\r', ' ']) }
    }
}
