#!/usr/bin/env python3
"""psycopg 3 through pgmux.

Several connections (threads) share pgmux's small pool:
  1. prepare_threshold=0 (every query server-prepared as _pg3_N), parameterised
     queries inside many explicit transactions, some rolled back (psycopg then drops
     its whole statement cache and deallocates on the server), inserts checked;
  2. pipeline mode (conn.pipeline()), in autocommit and inside transactions, plus
     executemany (which psycopg pipelines);
  3. prepared_max=2 with four queries in turn: psycopg evicts and closes statements;
  4. autocommit with prepare_threshold=0: parameterised INSERTs, executemany and COPY,
     each outside any transaction (pipeline mode also pipelines INSERTs in autocommit);
     every write is read back on the primary (`/* pgmux:primary */`).
Each connection prepares its queries in a different order, so the same name (_pg3_0,
_pg3_1, ...) means different SQL on different connections at the same time.
"""

import os
import sys
import threading
import time

import psycopg

from drvcommon import DB, HOST, PASSWORD, PORT, USER, Report, expect, wait_visible

THREADS = 4
TXNS = 50
PIPE_ROUNDS = 10
PIPE_DEPTH = 20
EVICT_ROUNDS = 15
AUTO_ROUNDS = 30

report = Report("psycopg")
TABLE = "drv_psycopg"  # the prepared part's
PIPE_TABLE = "drv_psycopg_pipe"  # the pipeline part's
AUTO_TABLE = "drv_psycopg_auto"  # the autocommit part's


def connect(**kw):
    return psycopg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB, connect_timeout=10,
        application_name="drv_psycopg", **kw,
    )


# Each query: (sql, params for (thread, i), expected first column). Every query also
# returns pg_backend_pid() to see which server connection ran it.
def q_add(t, i):
    return "select %s::int8 + %s::int8 as v, pg_backend_pid()", (t * 100000 + i, 7), t * 100000 + i + 7


def q_text(t, i):
    return "select %s::text || ':' || %s::text as v, pg_backend_pid()", (f"t{t}", str(i)), f"t{t}:{i}"


def q_sum(t, i):
    n = (t * 7 + i) % 50 + 1
    return "select sum(g)::int8, pg_backend_pid() from generate_series(1, %s::int4) g", (n,), n * (n + 1) // 2


def q_row(t, i):
    return (
        "select %s::int4 as a, %s::float8 as b, %s::bool as c, pg_backend_pid()",
        (i, i / 4, i % 2 == 0),
        i,
    )


QUERIES = [q_add, q_text, q_sum, q_row]


class Rollback(Exception):
    pass


def run_one(cur, t, client, label, q, i):
    sql, params, want = q(t, i)
    cur.execute(sql, params)
    row = cur.fetchone()
    expect(row[0], want, f"{label}: {sql!r} {params!r}")
    report.saw_pid(client, row[-1])
    report.count()


def prepared_transactions(t):
    """prepare_threshold=0: every statement server-prepared; many transactions."""
    client = f"prepared-{t}"
    committed = 0
    with connect(prepare_threshold=0) as conn:
        # A different first-use order on each connection: _pg3_0 is a different query on each.
        order = QUERIES[t % len(QUERIES):] + QUERIES[: t % len(QUERIES)]
        for i in range(TXNS):
            label = f"thread {t} txn {i}"
            rollback = i % 10 == 9
            try:
                with conn.transaction():
                    with conn.cursor() as cur:
                        for q in order:
                            run_one(cur, t, client, label, q, i)
                        cur.execute(f"insert into {TABLE} (thread, i) values (%s, %s) returning thread * 1000 + i", (t, i))
                        expect(cur.fetchone()[0], t * 1000 + i, f"{label}: insert returning")
                        report.count()
                        if rollback:
                            raise Rollback()
                committed += 1
            except Rollback:
                pass
        with conn.cursor() as cur:
            cur.execute(f"select count(*), coalesce(sum(i), 0) from {TABLE} where thread = %s", (t,))
            cnt, total = cur.fetchone()
            want_is = [i for i in range(TXNS) if i % 10 != 9]
            expect((cnt, total), (len(want_is), sum(want_is)), f"thread {t}: committed rows (rolled-back ones absent)")
            report.count()
        conn.commit()
    return committed


def pipelines(t):
    """Pipeline mode, autocommit and in transactions, with every statement prepared."""
    client = f"pipeline-{t}"
    with connect(prepare_threshold=0, autocommit=True) as conn:
        order = QUERIES[::-1] if t % 2 else QUERIES
        for r in range(PIPE_ROUNDS):
            label = f"pipeline thread {t} round {r}"
            with conn.pipeline() as p:
                pending = []
                for k in range(PIPE_DEPTH):
                    q = order[k % len(order)]
                    sql, params, want = q(t, r * PIPE_DEPTH + k)
                    pending.append((conn.execute(sql, params), want, sql, params))
                    if k % 5 == 4:
                        # A write pipelined between the reads, outside any transaction.
                        sql = f"insert into {PIPE_TABLE} (thread, i) values (%s, %s) returning i"
                        params = (t, 100000 + r * PIPE_DEPTH + k)
                        pending.append((conn.execute(sql, params), params[1], sql, params))
                p.sync()
                for cur, want, sql, params in pending:
                    row = cur.fetchone()
                    expect(row[0], want, f"{label}: {sql!r} {params!r}")
                    if len(row) > 1:
                        report.saw_pid(client, row[-1])
                    report.count()
            # The same in an explicit transaction, with executemany (pipelined by psycopg).
            with conn.transaction():
                with conn.pipeline():
                    with conn.cursor() as cur:
                        rows = [(t, r * 1000 + k) for k in range(10)]
                        cur.executemany(f"insert into {PIPE_TABLE} (thread, i) values (%s, %s)", rows)
                        report.count(len(rows))
                        c1 = conn.execute(f"select count(*) from {PIPE_TABLE} where thread = %s and i between %s and %s",
                                          (t, r * 1000, r * 1000 + 9))
                        sql, params, want = q_add(t, r)
                        c2 = conn.execute(sql, params)
                    expect(c1.fetchone()[0], 10, f"{label}: rows inserted by executemany")
                    row = c2.fetchone()
                    expect(row[0], want, f"{label}: {sql!r} in transaction pipeline")
                    report.saw_pid(client, row[-1])
                    report.count(2)
        # Every pipelined write, read back on the primary.
        n = conn.execute(f"/* pgmux:primary */ select count(*) from {PIPE_TABLE} where thread = %s", (t,)).fetchone()[0]
        expect(n, PIPE_ROUNDS * (10 + PIPE_DEPTH // 5), f"pipeline thread {t}: rows committed on the primary")
        report.count()


def autocommit_writes(t):
    """prepare_threshold=0 in autocommit: parameterised INSERTs, executemany and COPY, each
    outside any transaction, with reads between; then read back on the primary."""
    client = f"autocommit-{t}"
    rows, total = 0, 0
    with connect(prepare_threshold=0, autocommit=True) as conn:
        with conn.cursor() as cur:
            for i in range(AUTO_ROUNDS):
                label = f"autocommit thread {t} round {i}"
                cur.execute(f"insert into {AUTO_TABLE} (thread, i) values (%s, %s)", (t, i))
                expect(cur.rowcount, 1, f"{label}: insert")
                rows, total = rows + 1, total + i
                run_one(cur, t, client, label, QUERIES[i % len(QUERIES)], i)
                if i % 4 == 3:
                    many = [(t, 1000 + i * 10 + k) for k in range(5)]
                    cur.executemany(f"insert into {AUTO_TABLE} (thread, i) values (%s, %s)", many)
                    rows, total = rows + len(many), total + sum(v for _, v in many)
                    report.count(len(many))
                if i % 5 == 4:
                    with cur.copy(f"copy {AUTO_TABLE} (thread, i) from stdin") as copy:
                        for k in range(10):
                            copy.write_row((t, 5000 + i * 10 + k))
                    rows, total = rows + 10, total + sum(5000 + i * 10 + k for k in range(10))
                    report.count()
                report.count()
            cur.execute(f"/* pgmux:primary */ select count(*), coalesce(sum(i), 0) from {AUTO_TABLE} where thread = %s", (t,))
            expect(cur.fetchone(), (rows, total), f"autocommit thread {t}: rows committed on the primary")
            report.count()


def evictions(t):
    """prepared_max=2, four statements in turn: psycopg closes what it evicts."""
    client = f"evict-{t}"
    with connect(prepare_threshold=0, autocommit=True) as conn:
        conn.prepared_max = 2
        with conn.cursor() as cur:
            for r in range(EVICT_ROUNDS):
                for q in (QUERIES if t % 2 == 0 else QUERIES[::-1]):
                    run_one(cur, t, client, f"evict thread {t} round {r}", q, r)


def pool_is_whole():
    """After every client has left, POOL_SIZE new clients can each hold a transaction at
    the same time: no server connection was kept by a client that is gone."""
    n = int(os.environ.get("PGMUX_POOL_SIZE", "2"))
    conns = [connect() for _ in range(n)]
    try:
        pids = set()
        for c in conns:
            pids.add(c.execute("select pg_backend_pid()").fetchone()[0])  # opens a transaction
            report.count()
        expect(len(pids), n, f"{n} clients each in a transaction after the workload: distinct server connections")
        for c in conns:
            c.commit()
    finally:
        for c in conns:
            c.close()


def guarded(name, fn, *args):
    def run():
        try:
            fn(*args)
        except BaseException as e:  # noqa: BLE001 - every failure is reported
            report.failed(name, e)
    return threading.Thread(target=run, name=name, daemon=True)


def main():
    # PSYCOPG_PARTS=prepared,pipeline,evict (the default: all) runs some parts only.
    parts = set(os.environ.get("PSYCOPG_PARTS", "prepared,pipeline,evict,autocommit").split(","))
    with connect(autocommit=True) as conn:
        for part, table in (("prepared", TABLE), ("pipeline", PIPE_TABLE), ("autocommit", AUTO_TABLE)):
            if part in parts:
                conn.execute(f"drop table if exists {table}")
                conn.execute(f"create table {table} (thread int not null, i int not null)")
                wait_visible(lambda: connect(autocommit=True), table)
    threads = []
    if "prepared" in parts:
        threads += [guarded(f"prepared thread {t}", prepared_transactions, t) for t in range(THREADS)]
    if "pipeline" in parts:
        threads += [guarded(f"pipeline thread {t}", pipelines, t) for t in range(THREADS)]
    if "evict" in parts:
        threads += [guarded(f"evict thread {t}", evictions, t) for t in range(2)]
    if "autocommit" in parts:
        threads += [guarded(f"autocommit thread {t}", autocommit_writes, t) for t in range(THREADS)]
    for th in threads:
        th.start()
    deadline = time.monotonic() + 240
    for th in threads:
        th.join(timeout=max(0.0, deadline - time.monotonic()))
        if th.is_alive():
            report.failed(th.name, TimeoutError("still running after 240 s"))

    if not report.failures:
        try:
            pool_is_whole()
        except BaseException as e:  # noqa: BLE001
            report.failed("after the workload, with every client gone", e)

    ran = []
    if "prepared" in parts:
        ran.append(f"prepare_threshold=0: {THREADS} conns x {TXNS} txns (every 10th rolled back)")
    if "pipeline" in parts:
        ran.append(f"pipeline mode: {THREADS} conns x {PIPE_ROUNDS} rounds x {PIPE_DEPTH} with INSERTs in autocommit "
                   "+ executemany in transactions")
    if "evict" in parts:
        ran.append("prepared_max=2 evictions: 2 conns")
    if "autocommit" in parts:
        ran.append(f"autocommit: {THREADS} conns x {AUTO_ROUNDS} INSERTs, executemany and COPY outside transactions")
    report.finish(
        f"psycopg {psycopg.__version__} (libpq {psycopg.pq.version()}, {psycopg.pq.__impl__}): "
        f"{report.queries} queries ok; " + "; ".join(ran)
    )


if __name__ == "__main__":
    sys.exit(main())
