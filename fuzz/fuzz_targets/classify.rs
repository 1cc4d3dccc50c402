//! The read/write classifier, the request scan in front of it, and the SQL lexer.
//!
//! The input is SQL text. It is classified as it is, wrapped as a simple Query and as
//! an extended-protocol request (Parse/Bind/Execute/Sync) for `next_request`, and the
//! raw bytes are also given to `next_request` as a client's byte stream. Invariants:
//! - a leading `/* pgmux:primary */` is never a read, `/* pgmux:replica */` always is;
//! - the verdict's parts agree (reason vs target vs hint vs transaction effect), and
//!   the hint is `leading_hint`'s;
//! - a read stays a read when `standard_conforming_strings` is known to be on;
//! - a read followed by another statement is no longer a read;
//! - `next_request`: `Complete(r)` has `5 <= r.len <= input.len()`, ends on a message
//!   boundary, is found again in `input[..r.len]` and not in anything shorter; a
//!   wrapped Query's verdict is the classifier's;
//! - the lexer ends, returns at most one token per byte, and its words and quoted
//!   names are pieces of the input.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::prepared::ClientStatements;
use pgmux::router::classify::{
    classify, classify_with, leading_hint, Classification, ClassifyConfig, Hint, Reason, Target, TxnEffect,
};
use pgmux::router::request::{next_request, Scan};
use pgmux::sql::lexer::{Lexer, Tok};
use std::sync::OnceLock;

const MAX_MESSAGE: usize = 1 << 20;

fn cfg() -> &'static ClassifyConfig {
    static C: OnceLock<ClassifyConfig> = OnceLock::new();
    C.get_or_init(|| ClassifyConfig::new(["f"]))
}

fn statements() -> &'static ClientStatements {
    static S: OnceLock<ClientStatements> = OnceLock::new();
    S.get_or_init(ClientStatements::default)
}

fuzz_target!(|data: &[u8]| {
    let c = check_classification(data);

    // Hints decide, whatever follows.
    let mut primary = b"/* pgmux:primary */ ".to_vec();
    primary.extend_from_slice(data);
    let p = check_classification(&primary);
    assert!(!p.is_read(), "read after a pgmux:primary hint: {:?}", String::from_utf8_lossy(data));
    assert_eq!(p.hint, Some(Hint::Primary));
    let mut replica = b"/* pgmux:replica */ ".to_vec();
    replica.extend_from_slice(data);
    let r = check_classification(&replica);
    assert!(r.is_read());
    assert_eq!(r.hint, Some(Hint::Replica));

    if c.is_read() && c.hint.is_none() {
        // standard_conforming_strings only ever makes more text readable.
        assert_eq!(classify_with(data, cfg(), true), c);
        // A second statement (after a newline, in case the text ends in a `--`
        // comment) makes it a multi-statement string: never a read.
        let mut two = data.to_vec();
        two.extend_from_slice(b"\n; insert into t values (1)");
        let t = classify(&two, cfg());
        assert!(!t.is_read(), "read with a second statement: {:?}", String::from_utf8_lossy(&two));
        assert_eq!(t.reason, Reason::MultiStatement);
    }

    lex(data);

    // The raw bytes as a client's stream.
    check_request(data);

    // The text as a simple Query (NUL-free: a Query's text ends at its NUL).
    let text = match data.iter().position(|&b| b == 0) {
        Some(i) => &data[..i],
        None => data,
    };
    let ct = classify(text, cfg());
    let mut q = Vec::with_capacity(text.len() + 6);
    msg(&mut q, b'Q', &[text, b"\0"]);
    match check_request(&q) {
        Scan::Complete(r) => {
            assert_eq!(r.len, q.len());
            assert_eq!(r.read, reads(&ct), "Query verdict vs classify: {ct:?}");
            assert_eq!(r.hint, ct.hint);
            if r.lone_begin {
                assert_eq!(ct.txn, TxnEffect::Begin);
            }
            if r.lone_end.is_some() {
                assert_eq!(ct.txn, TxnEffect::End);
            }
        }
        other => panic!("a whole Query is {other:?}"),
    }

    // The text as an extended-protocol request of the unnamed statement.
    let mut e = Vec::new();
    msg(&mut e, b'P', &[b"\0", text, b"\0", &[0, 0]]);
    msg(&mut e, b'B', &[b"\0\0", &[0, 0, 0, 0, 0, 0]]);
    msg(&mut e, b'E', &[b"\0", &[0, 0, 0, 0]]);
    msg(&mut e, b'S', &[]);
    match check_request(&e) {
        Scan::Complete(r) => {
            assert_eq!(r.len, e.len());
            assert_eq!(r.read, reads(&ct), "Parse/Bind verdict vs classify: {ct:?}");
            assert!(!r.lone_begin && r.lone_end.is_none());
        }
        other => panic!("a whole extended request is {other:?}"),
    }
});

/// A statement that may run on a replica inside a request (request.rs's rule).
fn reads(c: &Classification) -> bool {
    c.is_read() || (c.hint.is_none() && matches!(c.txn, TxnEffect::Begin | TxnEffect::End))
}

fn msg(out: &mut Vec<u8>, tag: u8, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    out.push(tag);
    out.extend_from_slice(&((len + 4) as i32).to_be_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

fn check_classification(sql: &[u8]) -> Classification {
    let c = classify(sql, cfg());
    let on = classify_with(sql, cfg(), true);
    for c in [c, on] {
        assert_eq!(c.hint, leading_hint(sql));
        assert_eq!(c.reason == Reason::Hint, c.hint.is_some(), "{c:?}");
        match c.hint {
            Some(Hint::Primary) => assert_eq!(c.target, Target::Write),
            Some(Hint::Replica) => assert_eq!(c.target, Target::Read),
            None => match c.reason {
                Reason::Read => assert!(c.is_read() && c.txn == TxnEffect::None, "{c:?}"),
                Reason::Transaction => {
                    let read_effect = matches!(
                        c.txn,
                        TxnEffect::BeginReadOnly | TxnEffect::SetTransactionReadOnly | TxnEffect::SetSessionReadOnly
                    );
                    assert_eq!(c.is_read(), read_effect, "{c:?}");
                }
                Reason::MultiStatement => assert!(!c.is_read() && matches!(c.txn, TxnEffect::None | TxnEffect::Mixed)),
                Reason::Unknown => assert!(!c.is_read() && c.txn == TxnEffect::None, "{c:?}"),
                _ => assert!(!c.is_read(), "{c:?}"),
            },
        }
        if c.txn == TxnEffect::Mixed {
            assert_eq!(c.reason == Reason::MultiStatement || c.reason == Reason::Hint, true, "{c:?}");
        }
    }
    c
}

fn lex(sql: &[u8]) {
    let range = sql.as_ptr_range();
    let inside = |w: &[u8]| {
        let r = w.as_ptr_range();
        range.start <= r.start && r.end <= range.end
    };
    let mut lexer = Lexer::new(sql);
    let mut n = 0usize;
    while let Some(t) = lexer.next() {
        n += 1;
        assert!(n <= sql.len(), "more tokens than bytes");
        match t {
            Tok::Word(w) => {
                assert!(!w.is_empty() && inside(w));
                assert!(w[0].is_ascii_alphabetic() || w[0] == b'_' || w[0] >= 0x80, "{:?}", String::from_utf8_lossy(w));
            }
            Tok::Quoted(w) => assert!(w.is_empty() || inside(w)),
            _ => {}
        }
    }
    // An exhausted lexer stays exhausted.
    assert!(lexer.next().is_none());
}

fn check_request(buf: &[u8]) -> Scan {
    let s = next_request(buf, MAX_MESSAGE, cfg(), statements());
    match s {
        Scan::Complete(r) => {
            assert!(r.len >= 5 && r.len <= buf.len(), "len {} of {}", r.len, buf.len());
            // The request ends on a message boundary: walk the headers up to it.
            let mut at = 0;
            while at < r.len {
                let len = i32::from_be_bytes(buf[at + 1..at + 5].try_into().unwrap());
                assert!(len >= 4);
                at += 1 + len as usize;
            }
            assert_eq!(at, r.len, "request ends inside a message");
            // It only depends on its own bytes...
            assert_eq!(next_request(&buf[..r.len], MAX_MESSAGE, cfg(), statements()), s);
            // ...and all of them.
            assert_eq!(next_request(&buf[..r.len - 1], MAX_MESSAGE, cfg(), statements()), Scan::Incomplete);
            if r.lone_begin || r.lone_end.is_some() {
                assert_eq!(buf[0], b'Q');
            }
        }
        Scan::Malformed => {
            // Whatever comes next does not make it well-formed.
            let mut more = buf.to_vec();
            more.extend_from_slice(b"S\0\0\0\x04");
            assert_eq!(next_request(&more, MAX_MESSAGE, cfg(), statements()), Scan::Malformed);
        }
        Scan::Incomplete => {}
    }
    s
}
