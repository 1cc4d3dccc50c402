#!/usr/bin/env python3
"""asyncpg through pgmux, with its default statement cache (named __asyncpg_stmt_N__
statements, prepared once per connection and reused).

  1. Several connections, each running parameterised fetch/fetchval/fetchrow in many
     explicit transactions and outside them, each connection preparing its queries in a
     different order (so __asyncpg_stmt_1__ is different SQL on different connections);
  2. an asyncpg pool of 20 connections under concurrent load (2000 queries), with
     transactions and pool-level fetches mixed.
"""

import asyncio
import sys

import asyncpg

from drvcommon import DB, HOST, PASSWORD, PORT, USER, VISIBLE_IN_A_ROW, Report, expect

CONNS = 4
TXNS = 50
POOL_SIZE = 20
POOL_TASKS = 200
POOL_QUERIES_PER_TASK = 10

report = Report("asyncpg")
TABLE = "drv_asyncpg"


async def connect():
    return await asyncpg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, timeout=10,
        ssl=False, server_settings={"application_name": "drv_asyncpg"},
    )


# (sql, args, expected "v"): every query also returns pg_backend_pid() as "pid", to see
# which server connection ran it.
def q_add(c, i):
    return "select $1::int8 + $2::int8 as v, pg_backend_pid() as pid", (c * 100000 + i, 3), c * 100000 + i + 3


def q_text(c, i):
    return "select $1::text || '/' || $2::int4::text as v, pg_backend_pid() as pid", (f"c{c}", i), f"c{c}/{i}"


def q_array(c, i):
    return "select array_length($1::int4[], 1) as v, pg_backend_pid() as pid", ([c] * (i % 7 + 1),), i % 7 + 1


def q_json(c, i):
    return "select ($1::jsonb ->> 'k')::int4 as v, pg_backend_pid() as pid", (f'{{"k": {c * 1000 + i}}}',), c * 1000 + i


QUERIES = [q_add, q_text, q_array, q_json]


async def run_fetch(conn, client, label, q, c, i):
    sql, args, want = q(c, i)
    rows = await conn.fetch(sql, *args)
    expect(len(rows), 1, f"{label}: rows of {sql!r}")
    expect(rows[0]["v"], want, f"{label}: {sql!r} {args!r}")
    report.saw_pid(client, rows[0]["pid"])
    report.count()


async def connection_worker(c):
    client = f"conn-{c}"
    conn = await connect()
    try:
        order = QUERIES[c % len(QUERIES):] + QUERIES[: c % len(QUERIES)]
        for i in range(TXNS):
            label = f"conn {c} txn {i}"
            async with conn.transaction():
                for q in order:
                    await run_fetch(conn, client, label, q, c, i)
                v = await conn.fetchval(f"insert into {TABLE} (conn, i) values ($1, $2) returning conn * 1000 + i", c, i)
                expect(v, c * 1000 + i, f"{label}: insert returning")
                report.count()
            # Outside a transaction too (each statement its own transaction).
            v = await conn.fetchval("select $1::int4 * 2", i + c)
            expect(v, (i + c) * 2, f"{label}: fetchval outside transaction")
            report.count()
            row = await conn.fetchrow("select $1::text as t, $2::int8 as n", f"r{c}", i)
            expect((row["t"], row["n"]), (f"r{c}", i), f"{label}: fetchrow outside transaction")
            report.count()
        n, s = await conn.fetchrow(f"select count(*), coalesce(sum(i), 0) from {TABLE} where conn = $1", c)
        expect((n, s), (TXNS, sum(range(TXNS))), f"conn {c}: committed rows")
        report.count()
        # How many statements asyncpg's cache holds (private attribute; 0 if it moves).
        return len(getattr(conn, "_stmt_cache", ()))
    finally:
        await conn.close()


async def pool_task(pool, k):
    for j in range(POOL_QUERIES_PER_TASK):
        label = f"pool task {k} query {j}"
        kind = (k + j) % 3
        if kind == 0:
            v = await pool.fetchval("select $1::int4 + $2::int4", k, j)
            expect(v, k + j, label)
        elif kind == 1:
            async with pool.acquire() as conn:
                async with conn.transaction():
                    row = await conn.fetchrow("select $1::text || '-' || $2::text as v, pg_backend_pid() as pid", str(k), str(j))
                    expect(row["v"], f"{k}-{j}", label)
        else:
            rows = await pool.fetch("select g, pg_backend_pid() as pid from generate_series(1, $1::int4) g", j + 1)
            expect([r["g"] for r in rows], list(range(1, j + 2)), label)
        report.count()


async def main_async():
    conn = await connect()
    await conn.execute(f"drop table if exists {TABLE}")
    await conn.execute(f"create table {TABLE} (conn int not null, i int not null)")
    await conn.close()
    # With read/write routing a new connection may read a replica that has not yet
    # replayed the creation: wait, as an application reading replicas must.
    seen = 0
    for _ in range(200):
        c = await connect()
        try:
            seen = seen + 1 if await c.fetchval("select to_regclass($1) is not null", TABLE) else 0
        finally:
            await c.close()
        if seen >= VISIBLE_IN_A_ROW:
            break
        await asyncio.sleep(0.05)

    results = await asyncio.gather(*(connection_worker(c) for c in range(CONNS)), return_exceptions=True)
    cached = []
    for c, r in enumerate(results):
        if isinstance(r, BaseException):
            report.failed(f"conn {c}", r)
        else:
            cached.append(r)

    pool = await asyncpg.create_pool(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, ssl=False,
        min_size=POOL_SIZE, max_size=POOL_SIZE, timeout=10, command_timeout=60,
        server_settings={"application_name": "drv_asyncpg_pool"},
    )
    try:
        results = await asyncio.gather(*(pool_task(pool, k) for k in range(POOL_TASKS)), return_exceptions=True)
        for k, r in enumerate(results):
            if isinstance(r, BaseException):
                report.failed(f"pool task {k}", r)
    finally:
        await asyncio.wait_for(pool.close(), 30)
    return cached


def main():
    try:
        cached = asyncio.run(asyncio.wait_for(main_async(), 240))
    except BaseException as e:  # noqa: BLE001
        report.failed("setup", e)
        cached = []
    report.finish(
        f"asyncpg {asyncpg.__version__}: {report.queries} queries ok; default statement cache "
        f"({CONNS} conns x {TXNS} txns, {max(cached, default=0)} statements cached per conn); "
        f"pool of {POOL_SIZE}: {POOL_TASKS * POOL_QUERIES_PER_TASK} concurrent queries"
    )


if __name__ == "__main__":
    sys.exit(main())
