//! Transaction control statements: BEGIN / START TRANSACTION / SET TRANSACTION modes.

use super::*;

pub(super) fn at(toks: &[Tok<'_>], i: usize, kw: &[u8]) -> bool {
    toks.get(i).is_some_and(|&t| is_kw(t, kw))
}

/// Skips the optional `WORK` / `TRANSACTION` of BEGIN, COMMIT, ROLLBACK ...
pub(super) fn skip_work<'t, 'a>(toks: &'t [Tok<'a>]) -> &'t [Tok<'a>] {
    if at(toks, 0, b"work") || at(toks, 0, b"transaction") {
        &toks[1..]
    } else {
        toks
    }
}

/// Transaction modes, as in BEGIN, START TRANSACTION and SET TRANSACTION.
#[derive(Default)]
pub(super) struct Modes {
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

pub(super) fn modes(toks: &[Tok<'_>]) -> Modes {
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
            } else if (kw(2, b"repeatable") && kw(3, b"read")) || (kw(2, b"read") && (kw(3, b"committed") || kw(3, b"uncommitted"))) {
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

pub(super) fn begin(toks: &[Tok<'_>], long: bool) -> Verdict {
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
pub(super) fn set(toks: &[Tok<'_>], long: bool) -> Verdict {
    use TxnEffect as X;
    let txn = |target, txn| (target, Reason::Transaction, txn);
    // SET [LOCAL | SESSION] ..., where SESSION may also start SESSION CHARACTERISTICS.
    let characteristics =
        |t: &[Tok<'_>]| at(t, 0, b"session") && at(t, 1, b"characteristics") && at(t, 2, b"as") && at(t, 3, b"transaction");
    let local = at(toks, 0, b"local");
    let scoped = local || (at(toks, 0, b"session") && !characteristics(toks));
    let rest = if scoped { &toks[1..] } else { toks };
    if at(rest, 0, b"transaction") {
        let m = modes(&rest[1..]);
        return if m.replica_ok() && !long { txn(Target::Read, X::SetTransactionReadOnly) } else { txn(Target::Write, X::SetTransaction) };
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
        return if value_on && !long { txn(Target::Read, X::SetSessionReadOnly) } else { txn(Target::Write, X::ClearSessionReadOnly) };
    }
    if at(rest, 0, b"transaction_read_only") {
        return if value_on && !long { txn(Target::Read, X::SetTransactionReadOnly) } else { txn(Target::Write, X::SetTransaction) };
    }
    if at(rest, 0, b"transaction_isolation") || at(rest, 0, b"transaction_deferrable") {
        return txn(Target::Write, X::SetTransaction);
    }
    (Target::Write, Reason::Write, X::None)
}
