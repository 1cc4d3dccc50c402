//! The read/write classifier's cost per statement: `cargo bench --bench classify`.
//!
//! Short statements of the kinds ORMs send, the longest statement of the corpus (a
//! ~1.9 KB Hibernate-style query with joins and subqueries), and the whole corpus of
//! `src/router/corpus.sql` (throughput = statements); and the router's scan of a whole
//! request (`request/*`).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use pgmux::router::classify::{classify, ClassifyConfig};
use pgmux::router::request::{next_request, Scan};
use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Counts allocations, to check that classifying allocates nothing.
struct Counting;

static ALLOCATIONS: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const CORPUS: &str = include_str!("../src/router/corpus.sql");

/// The statements of the corpus: the text between `--- ` headers (and `-- ==` section lines).
fn corpus() -> Vec<String> {
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in CORPUS.lines() {
        if line.starts_with("--- ") || line.starts_with("-- ==") {
            out.extend(current.take());
            if line.starts_with("--- ") {
                current = Some(String::new());
            }
        } else if let Some(c) = current.as_mut() {
            c.push_str(line);
            c.push('\n');
        }
    }
    out.extend(current);
    out
}

fn bench(c: &mut Criterion) {
    let cfg = ClassifyConfig::new(["my_schema.bump_counter", "audit.log_event", "touch_session"]);
    let statements = corpus();
    let longest = statements.iter().max_by_key(|s| s.len()).expect("corpus").clone();
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    for s in &statements {
        black_box(classify(black_box(s.as_bytes()), &cfg));
    }
    let allocations = ALLOCATIONS.load(Ordering::Relaxed) - before;
    assert_eq!(allocations, 0, "classifying the corpus allocated {allocations} times");
    let cases: [(&str, &str); 8] = [
        ("select_1", "SELECT 1"),
        ("rails_pk_lookup", r#"SELECT "users".* FROM "users" WHERE "users"."id" = $1 LIMIT $2"#),
        (
            "django_filter",
            r#"SELECT "blog_post"."id", "blog_post"."title", "blog_post"."author_id" FROM "blog_post" WHERE ("blog_post"."published" IS NOT NULL AND "blog_post"."author_id" = 7) ORDER BY "blog_post"."published" DESC LIMIT 21"#,
        ),
        ("hint_replica", "/* pgmux:replica */ SELECT count(*) FROM events WHERE kind = $1"),
        ("for_update", "select u1_0.id,u1_0.balance from accounts u1_0 where u1_0.id=$1 for no key update"),
        ("insert_returning", r#"INSERT INTO "users" ("email", "created_at", "updated_at") VALUES ($1, $2, $3) RETURNING "id""#),
        ("begin", "BEGIN"),
        ("orm_2kb", longest.as_str()),
    ];
    let mut group = c.benchmark_group("classify");
    for (name, sql) in cases {
        group.throughput(Throughput::Bytes(sql.len() as u64));
        group.bench_function(name, |b| b.iter(|| classify(black_box(sql.as_bytes()), &cfg)));
    }
    group.throughput(Throughput::Elements(statements.len() as u64));
    group.bench_function("whole_corpus", |b| {
        b.iter(|| {
            for s in &statements {
                black_box(classify(black_box(s.as_bytes()), &cfg));
            }
        })
    });
    group.finish();

    // What the router pays per request: find the request's end and sum up its
    // statements (a pgbench -S style Parse/Bind/Describe/Execute/Sync, and a simple Query).
    let mut extended = bytes::BytesMut::new();
    let sql = "SELECT abalance FROM pgbench_accounts WHERE aid = $1";
    postgres_protocol::message::frontend::parse("", sql, [], &mut extended).unwrap();
    let bind_len: i32 = 4 + 1 + 1 + 2 + 2 + 4 + 2 + 2;
    extended.extend_from_slice(b"B");
    extended.extend_from_slice(&bind_len.to_be_bytes());
    extended.extend_from_slice(&[0, 0, 0, 0, 0, 1, 0, 0, 0, 2, b'4', b'2', 0, 0]);
    postgres_protocol::message::frontend::describe(b'P', "", &mut extended).unwrap();
    postgres_protocol::message::frontend::execute("", 0, &mut extended).unwrap();
    postgres_protocol::message::frontend::sync(&mut extended);
    let mut simple = bytes::BytesMut::new();
    postgres_protocol::message::frontend::query("SELECT abalance FROM pgbench_accounts WHERE aid = 42;", &mut simple).unwrap();
    let statements = pgmux::prepared::ClientStatements::default();
    let mut group = c.benchmark_group("request");
    for (name, buf) in [("extended_pbdes", &extended), ("simple_query", &simple)] {
        assert!(matches!(next_request(buf, 1 << 20, &cfg, &statements), Scan::Complete(r) if r.read));
        group.bench_function(name, |b| b.iter(|| next_request(black_box(&buf[..]), 1 << 20, &cfg, &statements)));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
