"""Shared by the Python driver workloads: where to connect, checking results, reporting.

Connection settings come from the environment (set by protocol-tests/drivers.rs):
PGMUX_HOST, PGMUX_PORT, PGMUX_USER, PGMUX_PASSWORD, PGMUX_DB. With PGMUX_EXPECT_SPREAD=1
(transaction mode, small pool) a workload also checks that its clients' statements really
ran on more than one server connection, so that a pass cannot be luck.
"""

import os
import sys
import threading
import traceback

HOST = os.environ.get("PGMUX_HOST", "127.0.0.1")
PORT = int(os.environ.get("PGMUX_PORT", "6432"))
USER = os.environ.get("PGMUX_USER", "app")
PASSWORD = os.environ.get("PGMUX_PASSWORD", "app")
DB = os.environ.get("PGMUX_DB", "app")
EXPECT_SPREAD = os.environ.get("PGMUX_EXPECT_SPREAD") == "1"
# A table another connection created is there for everyone once this many new
# connections in a row see it (each new connection's read may go to another replica).
VISIBLE_IN_A_ROW = 6


def wait_visible(connect, table, seconds=10):
    """With read/write routing, a new connection's read may go to a replica that has
    not yet replayed the table's creation (another connection made it): wait, as an
    application reading replicas must. Reads go round robin over the replicas, so it
    waits until VISIBLE_IN_A_ROW new connections in a row see it."""
    import time
    deadline = time.monotonic() + seconds
    seen = 0
    while True:
        with connect() as c:
            seen = seen + 1 if c.execute("select to_regclass(%s) is not null", (table,)).fetchone()[0] else 0
        if seen >= VISIBLE_IN_A_ROW:
            return
        if time.monotonic() > deadline:
            raise WrongResult(f"table {table} not visible to new connections after {seconds}s")
        time.sleep(0.05)


class WrongResult(AssertionError):
    pass


def expect(got, want, what):
    if got != want:
        raise WrongResult(f"{what}: got {got!r}, expected {want!r}")


class Report:
    """Collects failures from threads/tasks; counts queries; remembers backend pids per client."""

    def __init__(self, driver):
        self.driver = driver
        self.lock = threading.Lock()
        self.queries = 0
        self.failures = []
        self.pids = {}

    def count(self, n=1):
        with self.lock:
            self.queries += n

    def saw_pid(self, client, pid):
        with self.lock:
            self.pids.setdefault(client, set()).add(pid)

    def failed(self, where, exc):
        # The first line names the error and what it happened after (psycopg often raises
        # a second error while cleaning up after the first, which is the interesting one).
        chain, e = [], exc
        while e is not None and len(chain) < 5:
            state = getattr(e, "sqlstate", None)  # psycopg's and asyncpg's server errors
            line = f"{type(e).__name__}: {str(e).strip()}".splitlines()[0]
            chain.append(f"{line} (SQLSTATE {state})" if isinstance(state, str) else line)
            e = e.__cause__ or e.__context__
        headline = chain[0] + "".join(f" (after {c})" for c in chain[1:])
        detail = "".join(traceback.format_exception(exc)).rstrip()
        with self.lock:
            self.failures.append(f"{where}: {headline}\n{detail}")

    def spread(self):
        """(min, max) number of distinct server backends seen by one client."""
        counts = [len(p) for p in self.pids.values()] or [0]
        return min(counts), max(counts)

    def finish(self, summary):
        """Exits: 0 with the summary line, or 1 with every failure on stderr."""
        lo, hi = self.spread()
        if not self.failures and EXPECT_SPREAD and hi < 2:
            self.failures.append(
                f"no client saw more than one server connection (backends per client {lo}..{hi}): "
                "the workload did not exercise statement reuse across server connections"
            )
        if self.failures:
            for f in self.failures[:10]:
                print(f"{self.driver}: FAIL: {f}", file=sys.stderr)
            if len(self.failures) > 10:
                print(f"{self.driver}: ... and {len(self.failures) - 10} more failures", file=sys.stderr)
            first = self.failures[0].splitlines()[0]
            print(f"{self.driver}: FAILED ({len(self.failures)} failures, {self.queries} queries ok); first: {first}")
            sys.exit(1)
        print(f"{summary}; backends per client {lo}..{hi}")
        sys.exit(0)


def exit_on_failures(fails):
    """Prints each failure as a FAIL line on stderr and exits 1, if there are any."""
    if fails:
        for f in fails:
            print("FAIL:", f, file=sys.stderr)
        sys.exit(1)
