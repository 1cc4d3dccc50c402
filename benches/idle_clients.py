#!/usr/bin/env python3
"""Hold N idle PostgreSQL client connections open (helper of benches/idle_clients.sh).

Spreads N connections over --procs worker processes (one asyncio loop each), with
one of two client implementations (--driver):

  asyncpg  asyncpg.connect (SCRAM or md5, whatever the server asks for);
  raw      a minimal client of its own on the wire protocol: StartupMessage (user,
           database, application_name, client_encoding), SCRAM-SHA-256 / md5 /
           cleartext as the server asks, then nothing until told; queries with the
           simple protocol. This is the "independent harness" of issue #17: no
           driver, no statement cache, every byte the pooler sees is known.

When the first query is sent (--query):
  login    each connection runs one `select 1` (simple protocol) right after its
           login, then stays idle (the default, as before);
  signal   connections log in and send nothing; on SIGUSR2 each runs one
           `select 1` and stays idle again (so the caller can measure the pooler
           with logged-in-but-idle clients, then with clients that ran one query).

Logins run --concurrency at a time per process (0: all at once, as a harness that
opens everything in parallel does).

Protocol with the caller, on stdout (one line each, flushed):
  READY ok=<n> failed=<n> seconds=<s> [first_error=<text>]
      once every worker has tried all of its connections (logged in, and with
      --query login, run its query);
  QUERIED ok=<n> failed=<n> seconds=<s> [first_error=<text>]
      after SIGUSR2 (with --query signal): every connection ran one query;
  CLOSED closed=<n> seconds=<s>
      after SIGUSR1 (or SIGTERM/SIGINT): every worker closes its connections
      (Terminate message, then the socket) and exits.
Exit status 0 when every connection succeeded, 3 otherwise (after CLOSED).
"""

import argparse
import asyncio
import base64
import hashlib
import hmac
import multiprocessing as mp
import os
import signal
import struct
import sys
import time


# ---------------------------------------------------------------------------
# The raw wire-protocol client
# ---------------------------------------------------------------------------
class PgError(Exception):
    pass


# SaltedPassword by (password, salt, iterations): the client's PBKDF2 is what a
# SCRAM login costs the client, and a pooler that keeps one verifier per user
# sends the same salt every time.
_SALTED = {}


def _salted_password(password, salt, iterations, cache):
    key = (password, salt, iterations)
    if cache and key in _SALTED:
        return _SALTED[key]
    v = hashlib.pbkdf2_hmac("sha256", password.encode(), salt, iterations)
    if cache:
        _SALTED[key] = v
    return v


class RawConn:
    """One connection speaking protocol 3.0 over an asyncio stream."""

    def __init__(self, reader, writer):
        self.r = reader
        self.w = writer
        self.params = {}

    @classmethod
    async def connect(cls, host, port, user, password, database, appname, cache_scram):
        reader, writer = await asyncio.open_connection(host, port)
        c = cls(reader, writer)
        try:
            await c._startup(user, password, database, appname, cache_scram)
        except BaseException:
            writer.transport.abort()
            raise
        return c

    async def _read(self):
        hdr = await self.r.readexactly(5)
        tag = hdr[:1]
        (n,) = struct.unpack("!i", hdr[1:])
        body = await self.r.readexactly(n - 4) if n > 4 else b""
        return tag, body

    def _send(self, tag, body):
        self.w.write(tag + struct.pack("!i", len(body) + 4) + body)

    @staticmethod
    def _error_text(body):
        fields = {}
        for part in body.split(b"\0"):
            if part:
                fields[chr(part[0])] = part[1:].decode(errors="replace")
        return f"{fields.get('S', '?')} {fields.get('C', '?')}: {fields.get('M', '')}"

    async def _startup(self, user, password, database, appname, cache_scram):
        kv = [("user", user), ("database", database), ("client_encoding", "UTF8")]
        if appname:
            kv.append(("application_name", appname))
        body = struct.pack("!i", 196608) + b"".join(k.encode() + b"\0" + v.encode() + b"\0" for k, v in kv) + b"\0"
        self.w.write(struct.pack("!i", len(body) + 4) + body)
        await self.w.drain()
        scram = None
        while True:
            tag, body = await self._read()
            if tag == b"R":
                (code,) = struct.unpack("!i", body[:4])
                if code == 0:
                    continue
                if code == 3:
                    self._send(b"p", password.encode() + b"\0")
                elif code == 5:
                    inner = hashlib.md5((password + user).encode()).hexdigest()
                    outer = hashlib.md5(inner.encode() + body[4:8]).hexdigest()
                    self._send(b"p", b"md5" + outer.encode() + b"\0")
                elif code == 10:
                    mechs = [m for m in body[4:].split(b"\0") if m]
                    if b"SCRAM-SHA-256" not in mechs:
                        raise PgError(f"no SCRAM-SHA-256 among {mechs}")
                    nonce = base64.b64encode(os.urandom(18)).decode()
                    first_bare = f"n=,r={nonce}"
                    msg = ("n,," + first_bare).encode()
                    self._send(b"p", b"SCRAM-SHA-256\0" + struct.pack("!i", len(msg)) + msg)
                    scram = (nonce, first_bare)
                elif code == 11:
                    nonce, first_bare = scram
                    server_first = body[4:].decode()
                    attrs = dict(a.split("=", 1) for a in server_first.split(","))
                    if not attrs["r"].startswith(nonce):
                        raise PgError("SCRAM: server nonce does not extend ours")
                    salted = _salted_password(password, base64.b64decode(attrs["s"]), int(attrs["i"]), cache_scram)
                    client_key = hmac.new(salted, b"Client Key", hashlib.sha256).digest()
                    stored_key = hashlib.sha256(client_key).digest()
                    without_proof = "c=biws,r=" + attrs["r"]
                    auth_message = f"{first_bare},{server_first},{without_proof}".encode()
                    sig = hmac.new(stored_key, auth_message, hashlib.sha256).digest()
                    proof = bytes(a ^ b for a, b in zip(client_key, sig))
                    self._send(b"p", (without_proof + ",p=" + base64.b64encode(proof).decode()).encode())
                    server_key = hmac.new(salted, b"Server Key", hashlib.sha256).digest()
                    scram = (base64.b64encode(hmac.new(server_key, auth_message, hashlib.sha256).digest()).decode(),)
                elif code == 12:
                    if body[4:].decode() != "v=" + scram[0]:
                        raise PgError("SCRAM: wrong server signature")
                else:
                    raise PgError(f"unsupported authentication request {code}")
                await self.w.drain()
            elif tag == b"E":
                raise PgError(self._error_text(body))
            elif tag == b"S":
                k, v = body.split(b"\0")[:2]
                self.params[k.decode()] = v.decode()
            elif tag == b"Z":
                return
            # BackendKeyData, NegotiateProtocolVersion, NoticeResponse: ignored.

    async def execute(self, sql):
        self._send(b"Q", sql.encode() + b"\0")
        await self.w.drain()
        err = None
        while True:
            tag, body = await self._read()
            if tag == b"E":
                err = self._error_text(body)
            elif tag == b"Z":
                if err:
                    raise PgError(err)
                return

    async def close(self, timeout=5):
        try:
            self._send(b"X", b"")
            await asyncio.wait_for(self.w.drain(), timeout)
        finally:
            self.w.close()

    def terminate(self):
        self.w.transport.abort()


async def open_raw(args, i):
    appname = args.appname.replace("{i}", str(i)) if args.appname else ""
    return await asyncio.wait_for(
        RawConn.connect(args.host, args.port, args.user, args.password, args.db, appname, args.cache_scram),
        args.timeout,
    )


async def open_asyncpg(args, i):
    import asyncpg

    settings = {"application_name": args.appname.replace("{i}", str(i))} if args.appname else None
    return await asyncpg.connect(
        host=args.host, port=args.port, user=args.user,
        password=args.password, database=args.db,
        statement_cache_size=0, timeout=args.timeout, ssl=False,
        server_settings=settings,
    )


# ---------------------------------------------------------------------------
# Workers
# ---------------------------------------------------------------------------
async def worker_main(args, first, count, queue):
    stop = asyncio.Event()
    query_now = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    loop.add_signal_handler(signal.SIGUSR2, query_now.set)

    sem = asyncio.Semaphore(args.concurrency) if args.concurrency > 0 else None
    opener = open_raw if args.driver == "raw" else open_asyncpg
    conns = []
    errors = []

    async def open_one(i):
        for attempt in range(args.retries + 1):
            try:
                conn = await opener(args, i)
            except Exception as e:  # noqa: BLE001 - counted and reported
                if attempt == args.retries:
                    errors.append(f"connect: {type(e).__name__}: {e}")
                    return
                await asyncio.sleep(0.2 * (attempt + 1))
                continue
            if args.query == "login":
                try:
                    await conn.execute("select 1")
                except Exception as e:  # noqa: BLE001
                    errors.append(f"select 1: {type(e).__name__}: {e}")
                    conn.terminate()
                    return
            conns.append(conn)
            return

    async def limited(i):
        if sem is None:
            return await open_one(i)
        async with sem:
            return await open_one(i)

    await asyncio.gather(*(limited(first + k) for k in range(count)))
    queue.put(("ready", len(conns), len(errors), errors[:1]))

    while True:
        waits = [asyncio.ensure_future(stop.wait()), asyncio.ensure_future(query_now.wait())]
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if stop.is_set():
            break
        query_now.clear()
        qerrors = []

        async def query_one(c):
            try:
                if sem is None:
                    await c.execute("select 1")
                else:
                    async with sem:
                        await c.execute("select 1")
            except Exception as e:  # noqa: BLE001
                qerrors.append(f"select 1: {type(e).__name__}: {e}")

        await asyncio.gather(*(query_one(c) for c in conns))
        queue.put(("queried", len(conns) - len(qerrors), len(qerrors), qerrors[:1]))

    async def close_one(c):
        try:
            await c.close(timeout=5)
        except Exception:  # noqa: BLE001 - fall back to dropping the socket
            c.terminate()

    await asyncio.gather(*(close_one(c) for c in conns))
    queue.put(("closed", len(conns)))


def worker(args, first, count, queue):
    # The parent forwards signals; don't let a terminal ^C hit the workers twice.
    asyncio.run(worker_main(args, first, count, queue))


def collect(queue, workers, kind):
    ok = failed = 0
    first_error = None
    for _ in workers:
        msg = queue.get()
        assert msg[0] == kind, msg
        ok += msg[1]
        failed += msg[2]
        if msg[3] and first_error is None:
            first_error = msg[3][0]
    return ok, failed, first_error


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
                   help="connection attempts in flight per worker (0: all at once)")
    p.add_argument("--timeout", type=float, default=60, help="connect timeout (s)")
    p.add_argument("--retries", type=int, default=2, help="retries of a failed connect")
    p.add_argument("--driver", choices=["asyncpg", "raw"], default="asyncpg")
    p.add_argument("--query", choices=["login", "signal"], default="login",
                   help="first `select 1` right after login, or on SIGUSR2")
    p.add_argument("--appname", default="",
                   help="application_name to send ('{i}' becomes the connection's number; '': none)")
    p.add_argument("--cache-scram", action="store_true",
                   help="raw driver: compute SCRAM's salted password once per salt (less client CPU)")
    args = p.parse_args()

    procs = max(1, min(args.procs, args.n))
    shares = [args.n // procs + (1 if i < args.n % procs else 0) for i in range(procs)]

    # Block the control signals in the parent until the workers are forked, then
    # wait for them with sigwait (the workers unblock them in asyncio).
    ctl = {signal.SIGUSR1, signal.SIGUSR2, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, ctl)
    ctx = mp.get_context("fork")
    queue = ctx.Queue()
    t0 = time.monotonic()
    workers = []
    first = 0
    for share in shares:
        w = ctx.Process(target=_unblocked_worker, args=(args, first, share, queue, ctl))
        w.start()
        workers.append(w)
        first += share

    ok, failed, first_error = collect(queue, workers, "ready")
    line = f"READY ok={ok} failed={failed} seconds={time.monotonic() - t0:.1f}"
    if first_error:
        line += " first_error=" + first_error.replace("\n", " ")[:300]
    print(line, flush=True)

    while True:
        sig = signal.sigwait(ctl)
        if sig != signal.SIGUSR2:
            break
        t1 = time.monotonic()
        for w in workers:
            os.kill(w.pid, signal.SIGUSR2)
        qok, qfailed, qerr = collect(queue, workers, "queried")
        failed += qfailed
        line = f"QUERIED ok={qok} failed={qfailed} seconds={time.monotonic() - t1:.1f}"
        if qerr:
            line += " first_error=" + qerr.replace("\n", " ")[:300]
        print(line, flush=True)

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


def _unblocked_worker(args, first, count, queue, ctl):
    signal.pthread_sigmask(signal.SIG_UNBLOCK, ctl)
    worker(args, first, count, queue)


if __name__ == "__main__":
    main()
