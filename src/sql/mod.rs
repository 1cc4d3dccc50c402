//! Reading SQL text, as far as pgmux must: session effects of a query (settings it
//! changes, LISTEN/UNLISTEN, features that tie a client to its server connection).

pub mod lexer;

use lexer::{Lexer, Tok};

/// What a query does to the session, beyond its own transaction.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionEffects {
    /// Settings changed with SET/RESET (lower-case GUC names).
    pub settings: Vec<String>,
    /// RESET ALL or DISCARD ALL/DISCARD PLANS...: settings go back to defaults.
    pub reset_all: bool,
    /// DISCARD ALL / DEALLOCATE ALL: the server forgets prepared statements.
    pub forget_statements: bool,
    /// A session-only feature that needs this very server connection from now on.
    pub pin: Option<&'static str>,
    /// LISTEN or UNLISTEN: the client's channels may change (transaction mode reads
    /// them back from the server at the transaction's end).
    pub listen: bool,
}

impl SessionEffects {
    pub fn is_empty(&self) -> bool {
        self == &SessionEffects::default()
    }
}

fn lower(w: &[u8]) -> String {
    String::from_utf8_lossy(w).to_ascii_lowercase()
}

fn is(t: Option<&Tok<'_>>, kw: &str) -> bool {
    matches!(t, Some(Tok::Word(w)) if w.eq_ignore_ascii_case(kw.as_bytes()))
}

/// The GUC name a `SET`/`RESET` statement targets, from the words after the verb.
fn setting_name(toks: &[Tok<'_>]) -> Option<String> {
    let mut i = 0;
    if is(toks.first(), "session") {
        i = 1;
    }
    let t = toks.get(i);
    if is(t, "local") || is(t, "transaction") || is(t, "constraints") {
        return None;
    }
    if i == 1 && is(t, "authorization") {
        return Some("session_authorization".into());
    }
    if is(t, "session") && is(toks.get(i + 1), "authorization") {
        return Some("session_authorization".into());
    }
    if is(t, "time") && is(toks.get(i + 1), "zone") {
        return Some("timezone".into());
    }
    if is(t, "names") {
        return Some("client_encoding".into());
    }
    if is(t, "schema") {
        return Some("search_path".into());
    }
    if is(t, "xml") && is(toks.get(i + 1), "option") {
        return Some("xmloption".into());
    }
    let name = match t? {
        Tok::Word(w) | Tok::Quoted(w) => lower(w),
        _ => return None,
    };
    // Custom settings: `SET my.var = ...`.
    if toks.get(i + 1) == Some(&Tok::Dot) {
        if let Some(Tok::Word(w) | Tok::Quoted(w)) = toks.get(i + 2) {
            return Some(format!("{name}.{}", lower(w)));
        }
    }
    Some(name)
}

const SESSION_ADVISORY_LOCKS: &[&str] =
    &["pg_advisory_lock", "pg_advisory_lock_shared", "pg_try_advisory_lock", "pg_try_advisory_lock_shared"];

/// Tokens kept from the start of each statement: enough for every rule below.
const HEAD: usize = 6;

/// Reads every statement of a query string for its session effects, in one pass
/// and without allocating (this runs on every simple query in transaction mode).
pub fn session_effects(sql: &[u8]) -> SessionEffects {
    let mut fx = SessionEffects::default();
    merge_effects(sql, &mut fx);
    fx
}

/// True when `sql` certainly has no session effect, by a look cheaper than lexing:
/// one statement (no `;` but, maybe, a last one) that starts with SELECT, INSERT,
/// UPDATE or DELETE (after blanks only) and does not mention an advisory lock.
/// Anything else is lexed. (A last `;` inside a literal would leave it unterminated:
/// the server refuses such a text whole.)
fn plainly_without_effects(sql: &[u8]) -> bool {
    let s = sql.trim_ascii();
    let s = s.strip_suffix(b";").unwrap_or(s);
    let Some(head) = s.get(..6) else { return false };
    // `| 0x20` lowercases ASCII letters and turns no other byte into one.
    let verb: [u8; 6] = std::array::from_fn(|i| head[i] | 0x20);
    if !matches!(&verb, b"select" | b"insert" | b"update" | b"delete") {
        return false;
    }
    if s.get(6).is_some_and(|b| b.is_ascii_alphanumeric() || *b == b'_' || *b >= 0x80) {
        return false;
    }
    // Every query of a busy client comes through here: vectorised searches, the
    // second for the rare letter of "advisory".
    memchr::memchr(b';', s).is_none()
        && memchr::memchr2_iter(b'v', b'V', s)
            .all(|i| !s[i.saturating_sub(2)..].get(..8).is_some_and(|w| w.eq_ignore_ascii_case(b"advisory")))
}

/// Like [`session_effects`], adding to `fx`.
pub fn merge_effects(sql: &[u8], fx: &mut SessionEffects) {
    if plainly_without_effects(sql) {
        return;
    }
    let mut head: [Tok<'_>; HEAD] = [Tok::Other; HEAD];
    let mut n = 0;
    let mut prev = Tok::Other;
    let mut lexer = Lexer::new(sql);
    loop {
        let t = lexer.next();
        match t {
            Some(Tok::Semicolon) | None => {
                statement_effects(&head[..n], fx);
                n = 0;
                if t.is_none() {
                    return;
                }
            }
            Some(t) => {
                if n < HEAD {
                    head[n] = t;
                    n += 1;
                }
                if fx.pin.is_none() {
                    if t == Tok::LParen
                        && matches!(prev, Tok::Word(f) if SESSION_ADVISORY_LOCKS.iter().any(|l| f.eq_ignore_ascii_case(l.as_bytes())))
                    {
                        fx.pin = Some("session advisory lock");
                    }
                    if is(Some(&prev), "with") && is(Some(&t), "hold") && is(head.first(), "declare") {
                        fx.pin = Some("WITH HOLD cursor");
                    }
                }
                prev = t;
            }
        }
    }
}

fn statement_effects(toks: &[Tok<'_>], fx: &mut SessionEffects) {
    let Some(Tok::Word(verb)) = toks.first() else { return };
    let rest = &toks[1..];
    let verb = |kw: &str| verb.eq_ignore_ascii_case(kw.as_bytes());
    if verb("set") {
        if is(rest.first(), "session") && is(rest.get(1), "characteristics") {
            // SET SESSION CHARACTERISTICS AS TRANSACTION ...: the defaults it sets.
            fx.settings.extend(
                ["default_transaction_isolation", "default_transaction_read_only", "default_transaction_deferrable"].map(String::from),
            );
            return;
        }
        fx.settings.extend(setting_name(rest));
    } else if verb("reset") {
        if is(rest.first(), "all") {
            fx.reset_all = true;
        } else {
            fx.settings.extend(setting_name(rest));
        }
    } else if verb("discard") {
        if is(rest.first(), "all") {
            fx.reset_all = true;
            fx.forget_statements = true;
        }
    } else if verb("deallocate") {
        let r = if is(rest.first(), "prepare") { &rest[1..] } else { rest };
        if is(r.first(), "all") {
            fx.forget_statements = true;
        }
    } else if verb("listen") || verb("unlisten") {
        fx.listen = true;
    } else if verb("load") {
        fx.pin = Some("LOAD");
    } else if verb("prepare") {
        fx.pin = Some("SQL PREPARE");
    } else if verb("create") {
        let mut r = rest;
        if is(r.first(), "or") && is(r.get(1), "replace") {
            r = &r[2..];
        }
        if is(r.first(), "global") || is(r.first(), "local") {
            r = &r[1..];
        }
        if is(r.first(), "temp") || is(r.first(), "temporary") {
            fx.pin = Some("temporary table");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fx(s: &str) -> SessionEffects {
        session_effects(s.as_bytes())
    }

    #[test]
    fn settings() {
        assert_eq!(fx("SET search_path = a, b").settings, ["search_path"]);
        assert_eq!(fx("set SESSION statement_timeout to '5s'").settings, ["statement_timeout"]);
        assert_eq!(fx("SET LOCAL work_mem = '1MB'").settings, Vec::<String>::new());
        assert_eq!(
            fx("SET TIME ZONE 'UTC'; set role app; SET SESSION AUTHORIZATION x").settings,
            ["timezone", "role", "session_authorization"]
        );
        assert_eq!(fx("set my.var = 1; RESET work_mem").settings, ["my.var", "work_mem"]);
        assert_eq!(fx("SET TRANSACTION ISOLATION LEVEL SERIALIZABLE").settings, Vec::<String>::new());
        assert_eq!(
            fx("SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY").settings,
            ["default_transaction_isolation", "default_transaction_read_only", "default_transaction_deferrable"]
        );
        assert!(fx("RESET ALL").reset_all);
        let d = fx("DISCARD ALL");
        assert!(d.reset_all && d.forget_statements);
        assert!(fx("deallocate prepare all").forget_statements);
        assert!(fx("select 'set x = 1' -- ; set y = 2").is_empty());
    }

    #[test]
    fn session_only_features() {
        assert_eq!(fx("LISTEN chan").pin, None, "LISTEN needs no connection of its own (notify::hub)");
        assert!(fx("LISTEN chan").listen && fx("select 1; unlisten *").listen && fx("/* x */ Unlisten \"A\"").listen);
        assert!(!fx("select 'listen x'").listen && !fx("notify x").listen);
        assert_eq!(fx("create temp table t (x int)").pin, Some("temporary table"));
        assert_eq!(fx("CREATE GLOBAL TEMPORARY TABLE t (x int)").pin, Some("temporary table"));
        assert_eq!(fx("declare c cursor with hold for select 1").pin, Some("WITH HOLD cursor"));
        assert_eq!(fx("select pg_advisory_lock(1)").pin, Some("session advisory lock"));
        assert_eq!(fx("select pg_advisory_xact_lock(1)").pin, None);
        assert_eq!(fx("select 'pg_advisory_lock(1)'").pin, None);
        assert_eq!(fx("create table t (x int)").pin, None);
        assert_eq!(fx("PREPARE p AS select 1").pin, Some("SQL PREPARE"));
    }

    #[test]
    fn the_shortcut_agrees_with_the_lexer() {
        let cases = [
            "SELECT abalance FROM pgbench_accounts WHERE aid = 1",
            "  select pg_advisory_lock(1)",
            "select 1; set x = 1",
            "SELECT/**/pg_try_advisory_lock(2)",
            "selectx",
            "insert into t values (1)",
            "update t set x = 1",
            "delete from t",
            "/* c */ SET work_mem = '1MB'",
            "SELECT set_config('a', 'b', false)",
            "select 'x;' || pg_advisory_lock_shared(3)",
        ];
        for c in cases {
            if plainly_without_effects(c.as_bytes()) {
                let mut full = SessionEffects::default();
                // The lexing path, bypassing the shortcut.
                let head: Vec<_> = Lexer::new(c.as_bytes()).collect();
                statement_effects(&head, &mut full);
                assert!(full.is_empty() && fx(c).is_empty(), "{c}");
            }
        }
        assert!(plainly_without_effects(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1"));
        assert!(!plainly_without_effects(b"select pg_advisory_lock(1)"));
        assert!(!plainly_without_effects(b"SELECT PG_ADVISORY_LOCK(1)"));
        assert!(plainly_without_effects(b"select v, vv from t where a = 'avisory'"));
        assert!(!plainly_without_effects(b"select 1; set x = 1"));
        assert!(plainly_without_effects(b"SELECT abalance FROM pgbench_accounts WHERE aid = 1;\n"));
        assert!(!plainly_without_effects(b"select 1;;"));
        assert!(!plainly_without_effects(b"select 1; set x = 1;"));
        assert!(!plainly_without_effects(b"/* c */ SET work_mem = '1MB'"));
    }
}
