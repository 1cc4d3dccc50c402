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
    write("WITH m AS (MERGE INTO t USING s ON t.id = s.id WHEN MATCHED THEN DELETE RETURNING *) SELECT 1", Reason::DataModifyingCte);
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
    write("select * from pg_listening_channels()", Reason::WriteFunction);
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
    assert!(!classify(b"SELECT f_123456789_123456789_123456789_123456789_123456789_123456789_123_and_more()", &long).is_read());
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
    assert!(failures.is_empty(), "{} of {} corpus statements:\n{}", failures.len(), entries.len(), failures.join("\n"));
}
