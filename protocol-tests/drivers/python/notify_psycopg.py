"""psycopg 3 LISTEN/NOTIFY through pgmux in transaction mode (protocol-tests/notify.rs):
several listening connections on a pool of 2, each reading with conn.notifies() and
running queries (and transactions) between them; every notification arrives once, in
order, and none of a rolled-back LISTEN."""

import threading
import time

import psycopg

from drvcommon import DB, HOST, PASSWORD, PORT, USER, exit_on_failures

LISTENERS = 6
PER_CHANNEL = 100


def connect():
    return psycopg.connect(host=HOST, port=PORT, user=USER, password=PASSWORD, dbname=DB, autocommit=True)


def main():
    conns = [connect() for _ in range(LISTENERS)]
    for i, c in enumerate(conns):
        c.execute("LISTEN psy_a")
        if i % 2 == 0:
            c.execute("LISTEN psy_b")
        # LISTEN inside a rolled-back transaction listens to nothing.
        with c.transaction(force_rollback=True):
            c.execute("LISTEN psy_never")
    got = [[] for _ in conns]

    def read(i, c):
        want = PER_CHANNEL * (2 if i % 2 == 0 else 1)
        deadline = time.monotonic() + 60
        while len(got[i]) < want and time.monotonic() < deadline:
            for n in c.notifies(timeout=1.0, stop_after=want - len(got[i])):
                got[i].append((n.channel, n.payload))
            # Between reads, the connection is used as usual.
            assert c.execute("select 1").fetchone()[0] == 1

    threads = [threading.Thread(target=read, args=(i, c)) for i, c in enumerate(conns)]
    for t in threads:
        t.start()
    with connect() as s:
        for k in range(PER_CHANNEL):
            s.execute("NOTIFY psy_never, 'no'")
            with s.transaction():
                s.execute("select pg_notify('psy_a', %s)", (str(k),))
                s.execute("select pg_notify('psy_b', %s)", (str(k),))
    for t in threads:
        t.join()
    fails = []
    for i, g in enumerate(got):
        want = [("psy_a", str(k)) for k in range(PER_CHANNEL)]
        if i % 2 == 0:
            want = [x for k in range(PER_CHANNEL) for x in (("psy_a", str(k)), ("psy_b", str(k)))]
        if g != want:
            fails.append(f"listener {i}: got {len(g)} notifications, first differences: "
                         f"{[(a, b) for a, b in zip(g, want) if a != b][:3]} (want {len(want)})")
    # Nothing more (no duplicates, nothing of psy_never).
    for i, c in enumerate(conns):
        extra = list(c.notifies(timeout=0.2))
        if extra:
            fails.append(f"listener {i}: unexpected {extra[:3]}")
    exit_on_failures(fails)
    total = sum(len(g) for g in got)
    print(f"psycopg {psycopg.__version__}: {LISTENERS} listeners received {total} notifications exactly, in order, "
          f"with queries between reads; a rolled-back LISTEN delivered nothing")


main()
