#!/usr/bin/env python3
"""A libpq client driven through ctypes, so that the tests can use whichever libpq the
environment gives (LIBPQ=/path/to/libpq.so.5; libpq 18 from the version matrix's cache
speaks protocol 3.2 when asked with max_protocol_version=3.2).

  libpq_client.py info CONNSTR     one line of JSON: the negotiated protocol version
                                   (PQfullProtocolVersion, e.g. 30002 for 3.2), backend pid,
                                   server_version, and `select 1` through the connection
  libpq_client.py cancel CONNSTR   runs pg_sleep(30), cancels it after 1 s with libpq's
                                   own cancel (PQcancelCreate/PQcancelBlocking on libpq 17+,
                                   else PQcancel), and prints JSON: the SQLSTATE the query
                                   ended with and how long it took

Exits non-zero with the reason on stderr when something fails.
"""

import ctypes
import json
import os
import sys
import threading
import time

lib = ctypes.CDLL(os.environ.get("LIBPQ", "libpq.so.5"))
lib.PQconnectdb.restype = ctypes.c_void_p
lib.PQconnectdb.argtypes = [ctypes.c_char_p]
lib.PQstatus.argtypes = [ctypes.c_void_p]
lib.PQerrorMessage.restype = ctypes.c_char_p
lib.PQerrorMessage.argtypes = [ctypes.c_void_p]
lib.PQexec.restype = ctypes.c_void_p
lib.PQexec.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.PQresultStatus.argtypes = [ctypes.c_void_p]
lib.PQresultErrorField.restype = ctypes.c_char_p
lib.PQresultErrorField.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.PQgetvalue.restype = ctypes.c_char_p
lib.PQgetvalue.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_int]
lib.PQclear.argtypes = [ctypes.c_void_p]
lib.PQfinish.argtypes = [ctypes.c_void_p]
lib.PQbackendPID.argtypes = [ctypes.c_void_p]
lib.PQserverVersion.argtypes = [ctypes.c_void_p]
lib.PQprotocolVersion.argtypes = [ctypes.c_void_p]
lib.PQlibVersion.argtypes = []

CONNECTION_OK = 0
PGRES_TUPLES_OK = 2
PG_DIAG_SQLSTATE = ord("C")


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def connect(connstr):
    conn = lib.PQconnectdb(connstr.encode())
    if lib.PQstatus(conn) != CONNECTION_OK:
        fail("connection failed: " + lib.PQerrorMessage(conn).decode(errors="replace").strip())
    return conn


def full_protocol_version(conn):
    """PQfullProtocolVersion (libpq 18: 30002 for 3.2), else 10000 * PQprotocolVersion."""
    f = getattr(lib, "PQfullProtocolVersion", None)
    if f is None:
        return 10000 * lib.PQprotocolVersion(conn)
    f.argtypes = [ctypes.c_void_p]
    return f(conn)


def query_value(conn, sql):
    res = lib.PQexec(conn, sql.encode())
    try:
        if lib.PQresultStatus(res) != PGRES_TUPLES_OK:
            fail(f"{sql}: " + lib.PQerrorMessage(conn).decode(errors="replace").strip())
        return lib.PQgetvalue(res, 0, 0).decode()
    finally:
        lib.PQclear(res)


def info(connstr):
    conn = connect(connstr)
    out = {
        "libpq": lib.PQlibVersion(),
        "protocol": full_protocol_version(conn),
        "pid": lib.PQbackendPID(conn),
        "server_version": lib.PQserverVersion(conn),
        "select": query_value(conn, "select 1"),
    }
    lib.PQfinish(conn)
    print(json.dumps(out))


def send_cancel(conn):
    """libpq's own cancel: the new API where there is one (it sends the key as received)."""
    create = getattr(lib, "PQcancelCreate", None)
    if create is not None:
        create.restype = ctypes.c_void_p
        create.argtypes = [ctypes.c_void_p]
        lib.PQcancelBlocking.argtypes = [ctypes.c_void_p]
        lib.PQcancelFinish.argtypes = [ctypes.c_void_p]
        lib.PQcancelErrorMessage.restype = ctypes.c_char_p
        lib.PQcancelErrorMessage.argtypes = [ctypes.c_void_p]
        c = create(conn)
        ok = lib.PQcancelBlocking(c)
        err = lib.PQcancelErrorMessage(c).decode(errors="replace").strip()
        lib.PQcancelFinish(c)
        return ok == 1, err
    lib.PQgetCancel.restype = ctypes.c_void_p
    lib.PQgetCancel.argtypes = [ctypes.c_void_p]
    lib.PQcancel.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    lib.PQfreeCancel.argtypes = [ctypes.c_void_p]
    c = lib.PQgetCancel(conn)
    buf = ctypes.create_string_buffer(256)
    ok = lib.PQcancel(c, buf, 256)
    lib.PQfreeCancel(c)
    return ok == 1, buf.value.decode(errors="replace")


def cancel(connstr):
    conn = connect(connstr)
    done = {}

    def run():
        t0 = time.monotonic()
        res = lib.PQexec(conn, b"select pg_sleep(30)")
        state = lib.PQresultErrorField(res, PG_DIAG_SQLSTATE)
        done["sqlstate"] = state.decode() if state else None
        done["seconds"] = round(time.monotonic() - t0, 3)
        lib.PQclear(res)

    t = threading.Thread(target=run)
    t.start()
    time.sleep(1.0)
    ok, err = send_cancel(conn)
    t.join(40)
    if t.is_alive():
        fail("the query did not end within 40 s")
    done["cancel_sent"] = ok
    done["cancel_error"] = err
    done["protocol"] = full_protocol_version(conn)
    lib.PQfinish(conn)
    print(json.dumps(done))


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("info", "cancel"):
        fail(__doc__)
    {"info": info, "cancel": cancel}[sys.argv[1]](sys.argv[2])


if __name__ == "__main__":
    main()
