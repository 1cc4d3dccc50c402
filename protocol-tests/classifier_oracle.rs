//! The read/write classifier against PostgreSQL's own parser (pg_query, libpg_query
//! of PostgreSQL 18): over the corpus in `src/router/corpus.sql` and variants of each
//! statement, the classifier must never say "read" where the parse tree shows that the
//! statement writes.
//!
//! ```sh
//! cargo test --features pg-query-oracle --test classifier_oracle   # needs clang/libclang
//! ```
//!
//! The oracle's verdict on a text: rejected (PostgreSQL would run nothing), write, or
//! read. Read means exactly one statement, and it is a SELECT (also VALUES, TABLE, WITH)
//! with no locking clause, no INTO, no INSERT/UPDATE/DELETE/MERGE anywhere in its tree
//! and no call of a write function ([`is_write_function`], the classifier's own list:
//! what is compared is how each side finds the calls), or EXPLAIN of one, or SHOW, or a
//! read-only BEGIN / SET TRANSACTION / SET SESSION CHARACTERISTICS / read-only setting.
//! Anything else that parses is a write. Every text is parsed twice, with
//! `standard_conforming_strings` on and off, against `classify_with(.., on)` and
//! `classify_with(.., off)`; [`classify`] must never be read where either is a write.
//! Transaction statements must get the same [`TxnEffect`] from both sides.

use pg_query::protobuf::{self, a_const, node::Node as N, TransactionStmtKind, VariableSetKind};
use pg_query::ParserOptions;
use pgmux::router::classify::{classify, classify_with, corpus, is_write_function, Classification, ClassifyConfig, Target, TxnEffect};
use serde::ser::{self, Serialize};
use std::collections::BTreeMap;
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Oracle {
    Rejected,
    Read,
    Write(&'static str),
}

#[test]
fn classifier_never_reads_what_postgresql_parses_as_a_write() {
    let cfg = ClassifyConfig::new(corpus::WRITE_FUNCTIONS);
    let entries = corpus::entries(corpus::TEXT);
    let mut texts: Vec<(usize, String)> = Vec::new();
    for e in &entries {
        texts.extend(variants(e.sql).into_iter().map(|v| (e.line, v)));
    }
    let (mut violations, mut txn_mismatches) = (Vec::new(), Vec::new());
    // Corpus line -> (texts, one of them): where the classifier is more careful.
    let mut conservative: BTreeMap<usize, (usize, String)> = BTreeMap::new();
    let mut counts = [0usize; 3];
    for (line, sql) in &texts {
        let plain = classify(sql.as_bytes(), &cfg);
        for standard in [true, false] {
            let options = if standard { ParserOptions::DEFAULT } else { ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS };
            let (oracle, effect) = oracle(sql, options, &cfg);
            let got = classify_with(sql.as_bytes(), &cfg, standard);
            if standard {
                counts[match oracle {
                    Oracle::Rejected => 0,
                    Oracle::Read => 1,
                    Oracle::Write(_) => 2,
                }] += 1;
            }
            for (who, c) in [("classify_with", got), ("classify", plain)] {
                if let Oracle::Write(why) = oracle {
                    if c.target == Target::Read && c.hint.is_none() {
                        violations.push(format!(
                            "corpus.sql:{line} ({who}, standard_conforming_strings={standard}): pg_query: write ({why}), classifier: {c:?}\n    {sql:?}"
                        ));
                    }
                }
            }
            if let Some(effect) = effect {
                if got.hint.is_none() && got.txn != effect {
                    txn_mismatches.push(format!("corpus.sql:{line}: pg_query {effect:?}, classifier {:?}\n    {sql:?}", got.txn));
                }
            }
            if standard && oracle == Oracle::Read && !got.is_read() && got.hint.is_none() {
                let e = conservative.entry(*line).or_insert_with(|| (0, describe(sql, &got)));
                e.0 += 1;
            }
        }
    }
    eprintln!(
        "{} corpus statements, {} texts with variants: pg_query rejected {}, read {}, write {}; \
         classifier said write where pg_query reads: {} (conservative)",
        entries.len(),
        texts.len(),
        counts[0],
        counts[1],
        counts[2],
        conservative.values().map(|c| c.0).sum::<usize>()
    );
    for (line, (n, example)) in &conservative {
        eprintln!("  corpus.sql:{line}: {n} texts, e.g. {example}");
    }
    assert!(violations.is_empty(), "{} violations:\n{}", violations.len(), violations.join("\n"));
    assert!(txn_mismatches.is_empty(), "{} transaction effects differ:\n{}", txn_mismatches.len(), txn_mismatches.join("\n"));
}

fn describe(sql: &str, c: &Classification) -> String {
    let short: String = sql.chars().take(80).collect();
    format!("{:?}: {short:?}", c.reason)
}

/// The statement itself, every prefix of it (cut-off text must not turn a write
/// into a read), and the same with other whitespace and letter case.
fn variants(sql: &str) -> Vec<String> {
    let mut out = vec![sql.to_owned()];
    out.extend(sql.char_indices().map(|(i, _)| sql[..i].to_owned()).filter(|p| !p.is_empty()));
    for space in ["\t", "\n", "/* c */", "\x0b", " --c\r", "  "] {
        out.push(sql.replace(' ', space));
    }
    out.push(sql.to_uppercase());
    out.push(sql.to_lowercase());
    out
}

fn oracle(sql: &str, options: ParserOptions, cfg: &ClassifyConfig) -> (Oracle, Option<TxnEffect>) {
    let Ok(parsed) = pg_query::parse(sql, options) else { return (Oracle::Rejected, None) };
    let stmts = &parsed.protobuf.stmts;
    if stmts.len() != 1 {
        return (if stmts.is_empty() { Oracle::Rejected } else { Oracle::Write("several statements") }, None);
    }
    let Some(stmt) = stmts[0].stmt.as_ref().and_then(|s| s.node.as_ref()) else { return (Oracle::Rejected, None) };
    let tree = parsed.protobuf.serialize(ToValue).expect("parse tree as a value");
    let mut facts = Facts::default();
    facts.walk(&tree, cfg);
    let query = |what: Option<&'static str>| match (what, facts.write) {
        (Some(w), _) | (None, Some(w)) => Oracle::Write(w),
        (None, None) => Oracle::Read,
    };
    match stmt {
        N::SelectStmt(_) => (query(None), None),
        N::ExplainStmt(e) => match e.query.as_ref().and_then(|q| q.node.as_ref()) {
            Some(N::SelectStmt(_)) => (query(None), None),
            _ => (Oracle::Write("EXPLAIN of a statement that is not a query"), None),
        },
        N::VariableShowStmt(_) => (Oracle::Read, None),
        N::TransactionStmt(t) => transaction(t),
        N::VariableSetStmt(s) => set(s),
        _ => (Oracle::Write("not a query"), None),
    }
}

fn transaction(t: &protobuf::TransactionStmt) -> (Oracle, Option<TxnEffect>) {
    use TransactionStmtKind as K;
    let w = Oracle::Write("transaction control");
    match TransactionStmtKind::try_from(t.kind) {
        Ok(K::TransStmtBegin | K::TransStmtStart) => {
            let m = modes(&t.options);
            if m.read_only == Some(true) && !m.serializable {
                (Oracle::Read, Some(TxnEffect::BeginReadOnly))
            } else if m.read_only == Some(false) || m.serializable {
                (w, Some(TxnEffect::BeginPrimary))
            } else {
                (w, Some(TxnEffect::Begin))
            }
        }
        Ok(K::TransStmtCommit | K::TransStmtRollback) => (w, Some(if t.chain { TxnEffect::EndAndChain } else { TxnEffect::End })),
        Ok(K::TransStmtSavepoint) => (w, Some(TxnEffect::Savepoint)),
        Ok(K::TransStmtRelease) => (w, Some(TxnEffect::ReleaseSavepoint)),
        Ok(K::TransStmtRollbackTo) => (w, Some(TxnEffect::RollbackToSavepoint)),
        Ok(K::TransStmtPrepare) => (w, Some(TxnEffect::PrepareTransaction)),
        Ok(K::TransStmtCommitPrepared) => (w, Some(TxnEffect::CommitPrepared)),
        Ok(K::TransStmtRollbackPrepared) => (w, Some(TxnEffect::RollbackPrepared)),
        _ => (w, None),
    }
}

fn set(s: &protobuf::VariableSetStmt) -> (Oracle, Option<TxnEffect>) {
    let w = Oracle::Write("a setting");
    let kind = VariableSetKind::try_from(s.kind);
    if kind == Ok(VariableSetKind::VarSetMulti) {
        let m = modes(&s.args);
        let read_only = m.read_only == Some(true) && !m.serializable;
        return match s.name.as_str() {
            "TRANSACTION" if read_only => (Oracle::Read, Some(TxnEffect::SetTransactionReadOnly)),
            "TRANSACTION" => (w, Some(TxnEffect::SetTransaction)),
            "SESSION CHARACTERISTICS" if s.is_local => (w, Some(TxnEffect::None)),
            "SESSION CHARACTERISTICS" if read_only => (Oracle::Read, Some(TxnEffect::SetSessionReadOnly)),
            "SESSION CHARACTERISTICS" if m.read_only == Some(false) => (w, Some(TxnEffect::ClearSessionReadOnly)),
            "SESSION CHARACTERISTICS" => (w, Some(TxnEffect::None)),
            _ => (w, None),
        };
    }
    // SET [default_]transaction_read_only = on: read-only, may run on a replica.
    let on = kind == Ok(VariableSetKind::VarSetValue)
        && s.args.len() == 1
        && matches!(constant(&s.args[0]), Some(a_const::Val::Sval(v)) if ["on", "true", "yes"].contains(&v.sval.to_lowercase().as_str()));
    match s.name.as_str() {
        "default_transaction_read_only" if on && !s.is_local => (Oracle::Read, None),
        "transaction_read_only" if on => (Oracle::Read, None),
        _ => (w, None),
    }
}

fn constant(n: &protobuf::Node) -> Option<&a_const::Val> {
    match n.node.as_ref()? {
        N::AConst(c) => c.val.as_ref(),
        _ => None,
    }
}

#[derive(Default)]
struct Modes {
    read_only: Option<bool>,
    serializable: bool,
}

fn modes(options: &[protobuf::Node]) -> Modes {
    let mut m = Modes::default();
    for o in options {
        let Some(N::DefElem(d)) = o.node.as_ref() else { continue };
        let arg = d.arg.as_deref().and_then(constant);
        match (d.defname.as_str(), arg) {
            ("transaction_read_only", Some(a_const::Val::Ival(i))) => {
                // Conflicting modes: not read-only.
                m.read_only = Some(i.ival != 0 && m.read_only != Some(false));
            }
            ("transaction_isolation", Some(a_const::Val::Sval(s))) => m.serializable |= s.sval == "serializable",
            ("transaction_snapshot", _) => m.serializable = true, // not on a replica either
            _ => {}
        }
    }
    m
}

/// What in a parse tree makes a statement a write.
#[derive(Default)]
struct Facts {
    write: Option<&'static str>,
}

impl Facts {
    fn walk(&mut self, v: &Value, cfg: &ClassifyConfig) {
        match v {
            Value::Variant(name, inner) => {
                if matches!(*name, "InsertStmt" | "UpdateStmt" | "DeleteStmt" | "MergeStmt") {
                    self.write.get_or_insert("INSERT/UPDATE/DELETE/MERGE in the tree");
                }
                self.walk(inner, cfg);
            }
            Value::Seq(items) => items.iter().for_each(|i| self.walk(i, cfg)),
            Value::Map(fields) => {
                let field = |k: &str| fields.iter().find(|(n, _)| n == k).map(|(_, v)| v);
                // SelectStmt, also where it is embedded without a Node (UNION arms).
                if matches!(field("locking_clause"), Some(Value::Seq(l)) if !l.is_empty()) {
                    self.write.get_or_insert("locking clause");
                }
                if field("into_clause").is_some_and(|i| !matches!(i, Value::Null)) {
                    self.write.get_or_insert("SELECT INTO");
                }
                // FuncCall: the only node with both of these.
                if let (Some(name), Some(_)) = (field("funcname"), field("agg_within_group")) {
                    let mut parts = Vec::new();
                    strings(name, &mut parts);
                    let (schema, func) = match parts.as_slice() {
                        [.., s, f] => (Some(s.as_bytes()), f.as_bytes()),
                        [f] => (None, f.as_bytes()),
                        [] => (None, &b""[..]),
                    };
                    if is_write_function(schema, func, cfg) {
                        self.write.get_or_insert("write function");
                    }
                }
                fields.iter().for_each(|(_, v)| self.walk(v, cfg));
            }
            _ => {}
        }
    }
}

fn strings(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Str(s) => out.push(s.clone()),
        Value::Variant(_, v) => strings(v, out),
        Value::Seq(items) => items.iter().for_each(|i| strings(i, out)),
        Value::Map(fields) => fields.iter().for_each(|(_, v)| strings(v, out)),
        _ => {}
    }
}

/// A parse tree as a generic value: struct fields by name, oneof nodes by variant.
#[derive(Debug)]
enum Value {
    Null,
    Scalar,
    Str(String),
    Seq(Vec<Value>),
    Map(Vec<(String, Value)>),
    Variant(&'static str, Box<Value>),
}

#[derive(Debug)]
struct SerError(String);

impl fmt::Display for SerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SerError {}

impl ser::Error for SerError {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        SerError(msg.to_string())
    }
}

struct ToValue;

type R = Result<Value, SerError>;

struct SeqValue(Vec<Value>, Option<&'static str>);
struct MapValue(Vec<(String, Value)>, Option<&'static str>, Option<String>);

impl SeqValue {
    fn done(self) -> R {
        let v = Value::Seq(self.0);
        Ok(match self.1 {
            Some(name) => Value::Variant(name, Box::new(v)),
            None => v,
        })
    }
}

impl MapValue {
    fn done(self) -> R {
        let v = Value::Map(self.0);
        Ok(match self.1 {
            Some(name) => Value::Variant(name, Box::new(v)),
            None => v,
        })
    }
}

macro_rules! scalars {
    ($($f:ident: $t:ty),*) => {$(fn $f(self, _: $t) -> R { Ok(Value::Scalar) })*};
}

impl ser::Serializer for ToValue {
    type Ok = Value;
    type Error = SerError;
    type SerializeSeq = SeqValue;
    type SerializeTuple = SeqValue;
    type SerializeTupleStruct = SeqValue;
    type SerializeTupleVariant = SeqValue;
    type SerializeMap = MapValue;
    type SerializeStruct = MapValue;
    type SerializeStructVariant = MapValue;

    scalars!(serialize_bool: bool, serialize_i8: i8, serialize_i16: i16, serialize_i32: i32, serialize_i64: i64,
        serialize_u8: u8, serialize_u16: u16, serialize_u32: u32, serialize_u64: u64, serialize_f32: f32,
        serialize_f64: f64, serialize_char: char, serialize_bytes: &[u8]);

    fn serialize_str(self, v: &str) -> R {
        Ok(Value::Str(v.to_owned()))
    }
    fn serialize_none(self) -> R {
        Ok(Value::Null)
    }
    fn serialize_some<T: ?Sized + Serialize>(self, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_unit(self) -> R {
        Ok(Value::Null)
    }
    fn serialize_unit_struct(self, _: &'static str) -> R {
        Ok(Value::Null)
    }
    fn serialize_unit_variant(self, _: &'static str, _: u32, variant: &'static str) -> R {
        Ok(Value::Variant(variant, Box::new(Value::Null)))
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(self, _: &'static str, v: &T) -> R {
        v.serialize(self)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(self, _: &'static str, _: u32, variant: &'static str, v: &T) -> R {
        Ok(Value::Variant(variant, Box::new(v.serialize(ToValue)?)))
    }
    fn serialize_seq(self, _: Option<usize>) -> Result<SeqValue, SerError> {
        Ok(SeqValue(Vec::new(), None))
    }
    fn serialize_tuple(self, _: usize) -> Result<SeqValue, SerError> {
        Ok(SeqValue(Vec::new(), None))
    }
    fn serialize_tuple_struct(self, _: &'static str, _: usize) -> Result<SeqValue, SerError> {
        Ok(SeqValue(Vec::new(), None))
    }
    fn serialize_tuple_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<SeqValue, SerError> {
        Ok(SeqValue(Vec::new(), Some(variant)))
    }
    fn serialize_map(self, _: Option<usize>) -> Result<MapValue, SerError> {
        Ok(MapValue(Vec::new(), None, None))
    }
    fn serialize_struct(self, _: &'static str, _: usize) -> Result<MapValue, SerError> {
        Ok(MapValue(Vec::new(), None, None))
    }
    fn serialize_struct_variant(self, _: &'static str, _: u32, variant: &'static str, _: usize) -> Result<MapValue, SerError> {
        Ok(MapValue(Vec::new(), Some(variant), None))
    }
}

impl ser::SerializeSeq for SeqValue {
    type Ok = Value;
    type Error = SerError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), SerError> {
        self.0.push(v.serialize(ToValue)?);
        Ok(())
    }
    fn end(self) -> R {
        self.done()
    }
}

impl ser::SerializeTuple for SeqValue {
    type Ok = Value;
    type Error = SerError;
    fn serialize_element<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), SerError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> R {
        self.done()
    }
}

impl ser::SerializeTupleStruct for SeqValue {
    type Ok = Value;
    type Error = SerError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), SerError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> R {
        self.done()
    }
}

impl ser::SerializeTupleVariant for SeqValue {
    type Ok = Value;
    type Error = SerError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), SerError> {
        ser::SerializeSeq::serialize_element(self, v)
    }
    fn end(self) -> R {
        self.done()
    }
}

impl ser::SerializeMap for MapValue {
    type Ok = Value;
    type Error = SerError;
    fn serialize_key<T: ?Sized + Serialize>(&mut self, k: &T) -> Result<(), SerError> {
        self.2 = Some(match k.serialize(ToValue)? {
            Value::Str(s) => s,
            other => format!("{other:?}"),
        });
        Ok(())
    }
    fn serialize_value<T: ?Sized + Serialize>(&mut self, v: &T) -> Result<(), SerError> {
        let k = self.2.take().unwrap_or_default();
        self.0.push((k, v.serialize(ToValue)?));
        Ok(())
    }
    fn end(self) -> R {
        self.done()
    }
}

impl ser::SerializeStruct for MapValue {
    type Ok = Value;
    type Error = SerError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, k: &'static str, v: &T) -> Result<(), SerError> {
        self.0.push((k.to_owned(), v.serialize(ToValue)?));
        Ok(())
    }
    fn end(self) -> R {
        self.done()
    }
}

impl ser::SerializeStructVariant for MapValue {
    type Ok = Value;
    type Error = SerError;
    fn serialize_field<T: ?Sized + Serialize>(&mut self, k: &'static str, v: &T) -> Result<(), SerError> {
        ser::SerializeStruct::serialize_field(self, k, v)
    }
    fn end(self) -> R {
        self.done()
    }
}

/// The oracle itself must see what it is asked to: a few statements it must call writes.
#[test]
fn oracle_sees_writes() {
    let cfg = ClassifyConfig::new(corpus::WRITE_FUNCTIONS);
    let o = |sql: &str| oracle(sql, ParserOptions::DEFAULT, &cfg).0;
    assert_eq!(o("SELECT 1"), Oracle::Read);
    assert_eq!(o("SELECT 1 FROM (SELECT 2 FROM t FOR UPDATE) s"), Oracle::Write("locking clause"));
    assert_eq!(o("(SELECT 1 FROM t FOR SHARE) UNION SELECT 2"), Oracle::Write("locking clause"));
    assert_eq!(o("SELECT * INTO t2 FROM t"), Oracle::Write("SELECT INTO"));
    assert_eq!(o("WITH x AS (DELETE FROM t RETURNING 1) SELECT * FROM x"), Oracle::Write("INSERT/UPDATE/DELETE/MERGE in the tree"));
    assert_eq!(o("SELECT * FROM t WHERE a = pg_catalog.nextval('s')"), Oracle::Write("write function"));
    assert_eq!(o("SELECT my_schema.bump_counter()"), Oracle::Write("write function"));
    assert_eq!(o("SELECT other.bump_counter()"), Oracle::Read);
    assert_eq!(o("EXPLAIN ANALYZE INSERT INTO t VALUES (1)"), Oracle::Write("EXPLAIN of a statement that is not a query"));
    assert_eq!(o("SELECT 1; SELECT 2"), Oracle::Write("several statements"));
    assert_eq!(o("SELECT 'x"), Oracle::Rejected);
    assert_eq!(oracle("BEGIN ISOLATION LEVEL SERIALIZABLE READ ONLY", ParserOptions::DEFAULT, &cfg).1, Some(TxnEffect::BeginPrimary));
    assert_eq!(oracle("START TRANSACTION READ ONLY", ParserOptions::DEFAULT, &cfg), (Oracle::Read, Some(TxnEffect::BeginReadOnly)));
    // standard_conforming_strings off: the backslash escapes the quote.
    let sql = r"SELECT 'a\', pg_advisory_lock(1) --'";
    assert_eq!(oracle(sql, ParserOptions::DEFAULT, &cfg).0, Oracle::Write("write function"));
    assert_eq!(oracle(sql, ParserOptions::DISABLE_STANDARD_CONFORMING_STRINGS, &cfg).0, Oracle::Read);
}
