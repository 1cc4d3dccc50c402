#!/usr/bin/env python3
"""Hold N idle PostgreSQL client connections open (helper of benches/idle_clients.sh).

Spreads N connections over --procs worker processes (asyncpg, one asyncio loop
each). Every connection logs in (SCRAM, whatever the server asks for), runs one
`select 1` with the simple query protocol (conn.execute without arguments, so no
prepared statement is left behind: safe through a transaction-mode pooler) and
then stays idle.

Protocol with the caller, on stdout (one line each, flushed):
  READY ok=<n> failed=<n> seconds=<s> [first_error=<text>]
      once every worker has tried all of its connections;
  CLOSED closed=<n> seconds=<s>
      after SIGUSR1 (or SIGTERM/SIGINT): every worker closes its connections
      (Terminate message, then the socket) and exits.
Exit status 0 when every connection succeeded, 3 otherwise (after CLOSED).
"""

import argparse
import asyncio
import multiprocessing as mp
import os
import signal
import sys
import time

import asyncpg


async def worker_main(args, count, queue):
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)

    sem = asyncio.Semaphore(args.concurrency)
    conns = []
    errors = []

    async def open_one():
        async with sem:
            for attempt in range(args.retries + 1):
                try:
                    conn = await asyncpg.connect(
                        host=args.host, port=args.port, user=args.user,
                        password=args.password, database=args.db,
                        statement_cache_size=0, timeout=args.timeout, ssl=False,
                    )
                except Exception as e:  # noqa: BLE001 - counted and reported
                    if attempt == args.retries:
                        errors.append(f"connect: {type(e).__name__}: {e}")
                        return
                    await asyncio.sleep(0.2 * (attempt + 1))
                    continue
                try:
                    await conn.execute("select 1")
                except Exception as e:  # noqa: BLE001
                    errors.append(f"select 1: {type(e).__name__}: {e}")
                    conn.terminate()
                    return
                conns.append(conn)
                return

    await asyncio.gather(*(open_one() for _ in range(count)))
    queue.put(("ready", len(conns), len(errors), errors[:1]))

    await stop.wait()

    async def close_one(c):
        try:
            await c.close(timeout=5)
        except Exception:  # noqa: BLE001 - fall back to dropping the socket
            c.terminate()

    await asyncio.gather(*(close_one(c) for c in conns))
    queue.put(("closed", len(conns)))


def worker(args, count, queue):
    # The parent forwards signals; don't let a terminal ^C hit the workers twice.
    asyncio.run(worker_main(args, count, queue))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--user", required=True)
    p.add_argument("--password", required=True)
    p.add_argument("--db", required=True)
    p.add_argument("-n", type=int, default=10000, help="connections in total")
    p.add_argument("--procs", type=int, default=4, help="worker processes")
    p.add_argument("--concurrency", type=int, default=32,
                   help="connection attempts in flight per worker")
    p.add_argument("--timeout", type=float, default=60, help="connect timeout (s)")
    p.add_argument("--retries", type=int, default=2, help="retries of a failed connect")
    args = p.parse_args()

    procs = max(1, min(args.procs, args.n))
    shares = [args.n // procs + (1 if i < args.n % procs else 0) for i in range(procs)]

    # Block the control signals in the parent until the workers are forked, then
    # wait for them with sigwait (the workers unblock them in asyncio).
    ctl = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, ctl)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    t0 = time.monotonic()
    workers = []
    for share in shares:
        w = ctx.Process(target=_unblocked_worker, args=(args, share, queue, ctl))
        w.start()
        workers.append(w)

    ok = failed = 0
    first_error = None
    for _ in workers:
        msg = queue.get()
        assert msg[0] == "ready", msg
        ok += msg[1]
        failed += msg[2]
        if msg[3] and first_error is None:
            first_error = msg[3][0]
    line = f"READY ok={ok} failed={failed} seconds={time.monotonic() - t0:.1f}"
    if first_error:
        line += " first_error=" + first_error.replace("\n", " ")[:300]
    print(line, flush=True)

    signal.sigwait(ctl)
    t1 = time.monotonic()
    for w in workers:
        os.kill(w.pid, signal.SIGUSR1)
    closed = 0
    for _ in workers:
        msg = queue.get()
        closed += msg[1]
    for w in workers:
        w.join()
    print(f"CLOSED closed={closed} seconds={time.monotonic() - t1:.1f}", flush=True)
    sys.exit(0 if failed == 0 else 3)


def _unblocked_worker(args, count, queue, ctl):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, ctl)
    worker(args, count, queue)


if __name__ == "__main__":
    main()
