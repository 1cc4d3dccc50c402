#!/usr/bin/env python3
"""asyncpg writes outside explicit transactions, and prepare() then close(), through pgmux
with read/write routing on (issue #12).

asyncpg prepares every statement with Parse/Describe/Flush (no Sync) and runs it next
with Bind/Execute/Sync; outside a transaction, pgmux must send such a write to the
primary (a replica refuses it with 25006) and must let go of a client that prepared and
then left. ASYNCPG_PARTS chooses what runs (default `writes,close`):

  writes: on fresh connections, outside explicit transactions, with the default statement
          cache and with statement_cache_size=0: `execute` of a parameterised INSERT,
          `fetchval` of an INSERT ... RETURNING, `executemany`, `copy_records_to_table`;
          and in a transaction a cursor (a named portal), an INSERT, then more of the
          cursor (first statement, and after a read);
          then an asyncpg pool of 10 under load mixing those writes with reads. Every
          write is read back on the primary (`/* pgmux:primary */`): committed, once.
  close:  fresh connections that `prepare()` a statement (a read, a write) and `close()`,
          four times the pool size, with the default cache and statement_cache_size=0:
          each close must return within CLOSE_SECONDS; then pgmux must have no client
          left and no server lent (admin console, when PGMUX_ADMIN_USER is set), and
          PGMUX_POOL_SIZE new clients must each get a transaction at once.
"""

import asyncio
import os
import sys
import time

import asyncpg

from drvcommon import DB, HOST, PASSWORD, PORT, USER, VISIBLE_IN_A_ROW, Report, WrongResult, expect

POOL_SIZE = int(os.environ.get("PGMUX_POOL_SIZE", "2"))
ADMIN_USER = os.environ.get("PGMUX_ADMIN_USER")
ADMIN_PASSWORD = os.environ.get("PGMUX_ADMIN_PASSWORD", "")
PARTS = set(os.environ.get("ASYNCPG_PARTS", "writes,close").split(","))

# Each part runs in a test of its own, at the same time as the other: a table for each.
TABLE = "drv_asyncpg_" + "_".join(sorted(PARTS))
FRESH = 6  # fresh connections per kind of write and statement cache setting
MANY = 20  # rows per executemany
COPY_ROWS = 50  # rows per copy_records_to_table
LOAD_CLIENTS = 10  # the asyncpg pool's size
LOAD_TASKS = 40
LOAD_STEPS = 6
CLOSES = 4 * POOL_SIZE  # prepare-then-close clients per setting
CLOSE_SECONDS = 2.0  # a close must return this fast (pgmux's checkout_timeout is 10 s)
AT_ONCE_SECONDS = 3.0  # a new client's first transaction after the closes

report = Report("asyncpg")
# kind -> (rows, sum of v) that must be committed on the primary.
expected = {}


def wrote(kind, rows, total):
    n, s = expected.get(kind, (0, 0))
    expected[kind] = (n + rows, s + total)


async def connect(app="drv_asyncpg_writes", **kw):
    return await asyncpg.connect(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, timeout=10,
        ssl=False, server_settings={"application_name": app}, **kw,
    )


CACHES = (("statement cache", {}), ("statement_cache_size=0", {"statement_cache_size": 0}))


async def fresh(label, kw, fn, *args):
    """Runs fn(conn, *args) on a new connection (its first statement), closes it."""
    conn = await connect(**kw)
    try:
        await fn(conn, *args)
        report.saw_pid(f"fresh {label}", await conn.fetchval("select pg_backend_pid()"))
    except BaseException:
        # The error is what matters; a close that then hangs is reported besides.
        try:
            await asyncio.wait_for(conn.close(), CLOSE_SECONDS)
        except asyncio.TimeoutError:
            conn.terminate()
            report.failed(label, WrongResult(f"close() after the error still waiting after {CLOSE_SECONDS} s"))
        raise
    try:
        await asyncio.wait_for(conn.close(), CLOSE_SECONDS)
    except asyncio.TimeoutError:
        conn.terminate()
        raise WrongResult(f"{label}: close() still waiting after {CLOSE_SECONDS} s") from None


async def fresh_writes():
    """Each kind of write on FRESH new connections per statement cache setting; a kind
    that fails is reported once and not retried, the others still run."""
    ins = f"insert into {TABLE} (kind, k, v) values ($1, $2, $3)"

    async def execute(conn, kind, k):
        status = await conn.execute(ins, kind, k, k * 10 + 1)
        expect(status, "INSERT 0 1", f"{kind} #{k}: execute({ins!r}) on a fresh connection")
        wrote(kind, 1, k * 10 + 1)
        report.count()

    async def returning(conn, kind, k):
        v = await conn.fetchval(ins + " returning v", kind, k, k + 7)
        expect(v, k + 7, f"{kind} #{k}: insert ... returning on a fresh connection")
        wrote(kind, 1, k + 7)
        report.count()

    async def many(conn, kind, k):
        rows = [(kind, k, k * 100 + j) for j in range(MANY)]
        await conn.executemany(ins, rows)
        wrote(kind, MANY, sum(r[2] for r in rows))
        report.count(MANY)

    async def copy(conn, kind, k):
        rows = [(kind, k, k * 1000 + j) for j in range(COPY_ROWS)]
        status = await conn.copy_records_to_table(TABLE, records=rows, columns=["kind", "k", "v"])
        expect(status, f"COPY {COPY_ROWS}", f"{kind} #{k}: copy_records_to_table on a fresh connection")
        wrote(kind, COPY_ROWS, sum(r[2] for r in rows))
        report.count(COPY_ROWS)

    async def cursor(conn, kind, k, read_first):
        # A cursor (a named portal) in a transaction, a write, then more of the cursor:
        # moving the transaction to the primary at the write must not lose the cursor.
        async with conn.transaction():
            if read_first:
                expect(await conn.fetchval("select $1::int4 + 1", k), k + 1, f"{kind} #{k}: read before the cursor")
            cur = await conn.cursor("select g from generate_series(1, 20) g")
            expect([r[0] for r in await cur.fetch(5)], list(range(1, 6)), f"{kind} #{k}: the cursor's first rows")
            expect(await conn.execute(ins, kind, k, k + 3), "INSERT 0 1", f"{kind} #{k}: write while a cursor is open")
            expect([r[0] for r in await cur.fetch(5)], list(range(6, 11)), f"{kind} #{k}: the cursor after the write")
        wrote(kind, 1, k + 3)
        report.count(3)

    async def cursor_first(conn, kind, k):
        await cursor(conn, kind, k, False)

    async def cursor_after_read(conn, kind, k):
        await cursor(conn, kind, k, True)

    for name, kw in CACHES:
        for what, fn in (("execute", execute), ("fetchval returning", returning), ("executemany", many),
                         ("copy_records_to_table", copy), ("cursor then write", cursor_first),
                         ("read, cursor, write", cursor_after_read)):
            kind = f"{what}/{name}"
            try:
                for k in range(FRESH):
                    await fresh(f"{kind} #{k}", kw, fn, kind, k)
            except Exception as e:  # noqa: BLE001
                report.failed(f"{kind} on a fresh connection", e)


async def load_task(pool, t):
    """Writes and reads through a pool, each outside any explicit transaction."""
    ins = f"insert into {TABLE} (kind, k, v) values ($1, $2, $3)"
    for s in range(LOAD_STEPS):
        label = f"pool task {t} step {s}"
        async with pool.acquire() as conn:
            step = (t + s) % 4
            if step == 0:
                expect(await conn.execute(ins, "pool execute", t, s), "INSERT 0 1", label)
                wrote("pool execute", 1, s)
            elif step == 1:
                rows = [("pool executemany", t, s * 10 + j) for j in range(5)]
                await conn.executemany(ins, rows)
                wrote("pool executemany", 5, sum(r[2] for r in rows))
            elif step == 2:
                status = await conn.copy_records_to_table(TABLE, records=[("pool copy", t, s)], columns=["kind", "k", "v"])
                expect(status, "COPY 1", label)
                wrote("pool copy", 1, s)
            else:
                v = await conn.fetchval("select $1::int4 * 3", t * 100 + s)
                expect(v, (t * 100 + s) * 3, f"{label}: read")
            # A read after the write, on the same connection: the client is not stuck.
            row = await conn.fetchrow("select $1::text || '/' || $2::text as v, pg_backend_pid() as pid", str(t), str(s))
            expect(row["v"], f"{t}/{s}", f"{label}: read after")
            report.saw_pid(f"pool client {conn.get_server_pid()}", row["pid"])
            report.count(2)


async def pool_load():
    pool = await asyncpg.create_pool(
        host=HOST, port=PORT, user=USER, password=PASSWORD, database=DB, ssl=False,
        min_size=LOAD_CLIENTS, max_size=LOAD_CLIENTS, timeout=10, command_timeout=60,
        server_settings={"application_name": "drv_asyncpg_writes_pool"},
    )
    try:
        results = await asyncio.gather(*(load_task(pool, t) for t in range(LOAD_TASKS)), return_exceptions=True)
        for t, r in enumerate(results):
            if isinstance(r, BaseException):
                report.failed(f"pool task {t}", r)
    finally:
        await asyncio.wait_for(pool.close(), 30)


async def check_committed():
    """Every write, read back on the primary: committed, exactly once."""
    conn = await connect()
    try:
        rows = await conn.fetch(f"/* pgmux:primary */ select kind, count(*)::int8 as n, sum(v)::int8 as s from {TABLE} group by kind")
        got = {r["kind"]: (r["n"], r["s"]) for r in rows}
        for kind in sorted(set(got) | set(expected)):
            expect(got.get(kind), expected.get(kind), f"rows committed on the primary by {kind}")
        report.count()
    finally:
        await conn.close()


async def prepare_then_close(label, kw, sql):
    conn = await connect(app="drv_asyncpg_close", **kw)
    st = await conn.prepare(sql)
    expect(len(st.get_parameters()), 1, f"{label}: parameters of the prepared statement")
    t0 = time.monotonic()
    try:
        await asyncio.wait_for(conn.close(), CLOSE_SECONDS)
    except asyncio.TimeoutError:
        conn.terminate()
        raise WrongResult(f"{label}: close() after prepare() still waiting after {CLOSE_SECONDS} s") from None
    report.count()
    return time.monotonic() - t0


def admin_show(command):
    """Rows of an admin console command (simple query protocol, which psycopg uses for a
    query without parameters in autocommit), as dicts."""
    import psycopg

    with psycopg.connect(host=HOST, port=PORT, user=ADMIN_USER, password=ADMIN_PASSWORD, dbname="pgbouncer",
                         connect_timeout=10, autocommit=True) as c:
        cur = c.execute(command)
        cols = [d.name for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


async def nobody_left():
    """pgmux has forgotten the clients that closed and lent no server connection."""
    deadline = time.monotonic() + 5
    while True:
        clients = [r for r in admin_show("SHOW CLIENTS") if r.get("application_name") == "drv_asyncpg_close"]
        lent = sum(int(r["sv_active"]) for r in admin_show("SHOW POOLS") if r["user"] == USER)
        if not clients and lent == 0:
            return
        if time.monotonic() > deadline:
            raise WrongResult(
                f"5 s after every prepare-then-close client closed, pgmux still has {len(clients)} of them "
                f"(SHOW CLIENTS states {sorted(r['state'] for r in clients)}) and {lent} server connections lent (SHOW POOLS sv_active)"
            )
        await asyncio.sleep(0.1)


async def pool_still_serves():
    """PGMUX_POOL_SIZE new clients each get a transaction at once and hold it together,
    one of them writing: no server connection is kept by a client that is gone."""
    conns = [await connect(app="drv_asyncpg_after_close") for _ in range(POOL_SIZE)]
    txns = []
    try:
        pids = set()
        for i, c in enumerate(conns):
            tx = c.transaction()
            try:
                await asyncio.wait_for(tx.start(), AT_ONCE_SECONDS)
                if i == 0:
                    v = await asyncio.wait_for(c.fetchval(f"insert into {TABLE} (kind, k, v) values ('after close', 0, 1) returning v"),
                                               AT_ONCE_SECONDS)
                    expect(v, 1, "a write in a new client's transaction after the closes")
                    wrote("after close", 1, 1)
                pids.add(await asyncio.wait_for(c.fetchval("select pg_backend_pid()"), AT_ONCE_SECONDS))
            except asyncio.TimeoutError:
                raise WrongResult(
                    f"new client {i + 1} of {POOL_SIZE} did not get a transaction within {AT_ONCE_SECONDS} s "
                    "after the prepare-then-close clients left: their server connections are still taken"
                ) from None
            txns.append(tx)
            report.count()
        expect(len(pids), POOL_SIZE, f"{POOL_SIZE} clients in a transaction at once: distinct server connections")
        for tx in txns:
            await tx.commit()
    finally:
        for c in conns:
            await asyncio.wait_for(c.close(), 10)


async def closes():
    slowest = 0.0
    # A client that stays: it prepared its statement the same way (Parse/Describe/Flush)
    # and runs it between the others' closes, on whichever server connection is free.
    witness = await connect(app="drv_asyncpg_witness")
    st = await witness.prepare("select $1::int4 * 2 as v, pg_backend_pid() as pid")
    witness_ok = True
    failed = 0
    for name, kw in CACHES:
        for k in range(CLOSES):
            sql = "select $1::int4 + 1" if k % 2 == 0 else f"insert into {TABLE} (kind, k, v) values ('never', $1, 0)"
            label = f"prepare-then-close #{k} ({name}, {sql.split()[0]})"
            if failed >= 3:
                # Once clients are stuck in pgmux the next ones wait for a server in vain.
                report.failed(label, WrongResult("not run: three prepare-then-close clients failed already"))
                break
            try:
                slowest = max(slowest, await prepare_then_close(label, kw, sql))
            except Exception as e:  # noqa: BLE001 - every close that hangs is counted
                report.failed(label, e)
                failed += 1
            if witness_ok:
                try:
                    row = await asyncio.wait_for(st.fetchrow(k), AT_ONCE_SECONDS)
                    expect(row["v"], k * 2, f"the staying client's prepared statement after {label}")
                    report.saw_pid("witness", row["pid"])
                    report.count()
                except Exception as e:  # noqa: BLE001
                    report.failed(f"the staying client, after {label}", e)
                    witness_ok = False
    try:
        await asyncio.wait_for(witness.close(), CLOSE_SECONDS)
    except asyncio.TimeoutError:
        witness.terminate()
        report.failed("the staying client", WrongResult(f"close() still waiting after {CLOSE_SECONDS} s"))
    for check in ([nobody_left] if ADMIN_USER else []) + [pool_still_serves]:
        try:
            await check()
        except Exception as e:  # noqa: BLE001
            report.failed(f"after the prepare-then-close clients left: {check.__name__}", e)
    return slowest


async def setup():
    conn = await connect()
    try:
        await conn.execute(f"drop table if exists {TABLE}")
        await conn.execute(f"create table {TABLE} (kind text not null, k int not null, v int not null)")
    finally:
        await conn.close()
    # A new connection's read may go to a replica that has not replayed the creation yet
    # (asyncpg's copy_records_to_table starts with such a read): wait for it.
    seen = 0
    for _ in range(200):
        c = await connect()
        try:
            seen = seen + 1 if await c.fetchval("select to_regclass($1) is not null", TABLE) else 0
        finally:
            await c.close()
        if seen >= VISIBLE_IN_A_ROW:
            return
        await asyncio.sleep(0.05)
    raise WrongResult(f"table {TABLE} not visible to new connections after 10 s")


async def main_async():
    await setup()
    ran = []
    slowest = None
    if "writes" in PARTS:
        await fresh_writes()
        await pool_load()
        ran.append(
            f"{FRESH} fresh conns x (execute, fetchval returning, executemany of {MANY}, copy_records_to_table of {COPY_ROWS}) "
            f"x (statement cache, statement_cache_size=0) outside transactions; a pool of {LOAD_CLIENTS}: "
            f"{LOAD_TASKS} tasks x {LOAD_STEPS} writes and reads"
        )
    if "close" in PARTS:
        slowest = await closes()
        ran.append(
            f"prepare() then close() x {CLOSES} x (statement cache, statement_cache_size=0)"
            + (f", slowest close {slowest * 1000:.0f} ms" if slowest is not None else "")
            + (", then no client left (SHOW CLIENTS/POOLS)" if ADMIN_USER else "")
            + f" and {POOL_SIZE} new clients in a transaction at once"
        )
    await check_committed()
    return ran


def main():
    try:
        ran = asyncio.run(asyncio.wait_for(main_async(), 200))
    except BaseException as e:  # noqa: BLE001
        report.failed("workload", e)
        ran = []
    report.finish(f"asyncpg {asyncpg.__version__}: {report.queries} queries ok; " + "; ".join(ran))


if __name__ == "__main__":
    sys.exit(main())
