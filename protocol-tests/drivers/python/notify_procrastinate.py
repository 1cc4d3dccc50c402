"""procrastinate (a job queue built on LISTEN/NOTIFY) through pgmux in transaction mode
(protocol-tests/drivers/notify.rs): a worker whose polling interval is 120 s, so that it
can only see new jobs in time through its LISTEN, processes every job of bursts deferred
while it waits.

procrastinate defers and fetches jobs with `SELECT procrastinate_..._v1(...)`: functions
that write, which a classifier cannot tell from reads, so with read/write routing on its
connections say `SET pgmux.route = primary` (as the README advises for such apps;
`routing.write_functions` would do too)."""

import asyncio
import os
import time

import psycopg
from procrastinate import App, PsycopgConnector

from drvcommon import DB, HOST, PASSWORD, PORT, USER, exit_on_failures

CONNINFO = f"host={HOST} port={PORT} user={USER} password={PASSWORD} dbname={DB}"
BURSTS = 5
PER_BURST = 40
QUEUE = f"pgmux_{os.getpid()}"



async def on_primary(conn):
    autocommit = conn.autocommit
    await conn.set_autocommit(True)
    await conn.execute("SET pgmux.route = primary")
    await conn.set_autocommit(autocommit)


app = App(connector=PsycopgConnector(conninfo=CONNINFO, min_size=1, max_size=4, configure=on_primary))
done = []


@app.task(queue=QUEUE, name="pgmux_job")
async def job(n):
    done.append(n)


async def main():
    with psycopg.connect(CONNINFO, autocommit=True) as c:
        exists = c.execute("select to_regclass('procrastinate_jobs') is not null").fetchone()[0]
    async with app.open_async():
        if not exists:
            await app.schema_manager.apply_schema_async()
        worker = asyncio.create_task(app.run_worker_async(
            queues=[QUEUE], concurrency=4, wait=True, fetch_job_polling_interval=120,
            listen_notify=True, install_signal_handlers=False))
        await asyncio.sleep(2)  # the worker is idle, waiting on its LISTEN
        start = time.monotonic()
        latencies = []
        fails = []
        for b in range(BURSTS):
            t = time.monotonic()
            for k in range(PER_BURST):
                await job.defer_async(n=b * PER_BURST + k)
            want = (b + 1) * PER_BURST
            while len(done) < want and time.monotonic() - t < 30:
                await asyncio.sleep(0.01)
            latencies.append(time.monotonic() - t)
            if len(done) < want:
                fails.append(f"burst {b}: {len(done)} of {want} jobs done after 30 s (the worker polls every 120 s)")
                break
            await asyncio.sleep(0.5)
        worker.cancel()
        try:
            await worker
        except (asyncio.CancelledError, Exception):
            pass
    if sorted(done) != list(range(BURSTS * PER_BURST)) and not fails:
        fails.append(f"jobs done: {len(done)}, distinct {len(set(done))}, of {BURSTS * PER_BURST}")
    exit_on_failures(fails)
    import procrastinate
    print(f"procrastinate {procrastinate.__version__}: a worker (polling every 120 s, so woken by NOTIFY) processed all "
          f"{BURSTS} bursts of {PER_BURST} jobs, each once; a burst done in {max(latencies):.2f} s at most "
          f"(total {time.monotonic() - start:.1f} s)")


asyncio.run(main())
