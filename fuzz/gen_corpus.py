#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/corpus/<target>/ (run from anywhere).

Seeds are real protocol messages and SQL: backend message streams for `frame`,
first packets and SCRAM messages for `startup`, statements from
src/router/corpus.sql (and a few client message streams) for `classify`, SET/RESET
and friends for `session_effects`. The input layouts are those the targets read
(see fuzz/README.md). The output is deterministic; rerun after changing a layout.
"""
import os
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(HERE, "corpus")


# The corpus holds only seeds: start from nothing, so a removed seed goes away.
shutil.rmtree(CORPUS, ignore_errors=True)


def msg(tag, body=b""):
    return tag + struct.pack(">i", len(body) + 4) + body


def cstr(s):
    return (s.encode() if isinstance(s, str) else s) + b"\0"


def write(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


# ---------------------------------------------------------------- frame
# Layout: [max_len selector] [inspect/4] [stop tag] [n] [n chunk sizes] stream
def frame_header(max_sel=6, inspect=64, stop=b"Z", sizes=()):
    return bytes([max_sel, inspect, stop[0], len(sizes)]) + bytes(sizes)


def row_description():
    cols = [("id", 23), ("name", 25)]
    body = struct.pack(">h", len(cols))
    for i, (n, oid) in enumerate(cols):
        body += cstr(n) + struct.pack(">ihihih", 16384, i + 1, oid, 4 if oid == 23 else -1, -1, 0)
    return msg(b"T", body)


def data_row(*vals):
    body = struct.pack(">h", len(vals))
    for v in vals:
        if v is None:
            body += struct.pack(">i", -1)
        else:
            body += struct.pack(">i", len(v)) + v
    return msg(b"D", body)


def error(sqlstate, text):
    return msg(b"E", b"SERROR\0VERROR\0C" + sqlstate + b"\0M" + text + b"\0\0")


login = (
    msg(b"R", struct.pack(">i", 0))
    + msg(b"S", cstr("server_version") + cstr("15.6"))
    + msg(b"S", cstr("client_encoding") + cstr("UTF8"))
    + msg(b"K", struct.pack(">ii", 4242, 0x5EC2E7))
    + msg(b"Z", b"I")
)
select = row_description() + data_row(b"1", b"alice") + data_row(b"2", None) + msg(b"C", cstr("SELECT 2")) + msg(b"Z", b"I")
extended = msg(b"1") + msg(b"2") + row_description() + data_row(b"7", b"x") + msg(b"C", cstr("SELECT 1")) + msg(b"Z", b"T")
big_row = data_row(b"x" * 900) + msg(b"C", cstr("SELECT 1")) + msg(b"Z", b"I")
copy_out = msg(b"H", b"\0\0\0") + msg(b"d", b"1\talice\n") + msg(b"d", b"2\tbob\n") + msg(b"c") + msg(b"C", cstr("COPY 2")) + msg(b"Z", b"I")
err = error(b"42P01", b'relation "nope" does not exist') + msg(b"Z", b"E")
notice = msg(b"N", b"SNOTICE\0C00000\0Mhello\0\0") + msg(b"A", struct.pack(">i", 7) + cstr("chan") + cstr("payload")) + msg(b"Z", b"I")

write("frame", "login", frame_header() + login)
write("frame", "select", frame_header() + select)
write("frame", "select_split", frame_header(sizes=(3, 7, 1, 0, 20)) + select)
write("frame", "extended_in_txn", frame_header(stop=b"C") + extended)
write("frame", "big_row_streams", frame_header(inspect=16, sizes=(5, 100, 200, 250)) + big_row)
write("frame", "big_row_whole", frame_header(inspect=255) + big_row)
write("frame", "copy_out", frame_header(stop=b"d", sizes=(9,)) + copy_out)
write("frame", "error", frame_header(sizes=(6,)) + err)
write("frame", "notice_notify", frame_header(inspect=0) + notice)
write("frame", "max_len_small", frame_header(max_sel=3) + select)
write("frame", "bad_length_short", frame_header() + msg(b"Z", b"I") + b"Q\0\0\0\x03")
write("frame", "bad_length_huge", frame_header() + b"D\x7f\xff\xff\xff" + b"abc")
write("frame", "bad_length_negative", frame_header(sizes=(2,)) + b"D\xff\xff\xff\xf0")
write("frame", "partial_header", frame_header() + msg(b"Z", b"I") + b"C\0\0")
write("frame", "client_stream", frame_header(stop=b"S") + msg(b"P", cstr("") + cstr("select $1") + b"\0\0") + msg(b"B", b"\0\0" + b"\0" * 6) + msg(b"E", b"\0\0\0\0\0") + msg(b"S"))

# ---------------------------------------------------------------- startup
# Mode byte: 0 first packets, 1 SCRAM server, 2 SCRAM client, 3 round trip, 4 text.
PROTO3 = 196608


def packet(body):
    return struct.pack(">i", len(body) + 4) + body


def startup(params, code=PROTO3):
    b = struct.pack(">i", code)
    for k, v in params:
        b += cstr(k) + cstr(v)
    return packet(b + b"\0")


std = startup([("user", "app"), ("database", "appdb"), ("application_name", "psql"), ("client_encoding", "UTF8")])
write("startup", "startup", b"\0" + std)
write("startup", "startup_options", b"\0" + startup([("user", "app"), ("options", "-c search_path=a,b --statement-timeout=5s -cwork_mem=64kB -c x=a\\ b")]))
write("startup", "ssl_then_startup", b"\0" + packet(struct.pack(">i", 80877103)) + std)
write("startup", "gssenc_ssl_startup", b"\0" + packet(struct.pack(">i", 80877104)) + packet(struct.pack(">i", 80877103)) + std)
write("startup", "cancel", b"\0" + packet(struct.pack(">iii", 80877102, 4242, 0x5EC2E7)))
write("startup", "cancel_long_secret", b"\0" + packet(struct.pack(">ii", 80877102, 4242) + bytes(range(32))))
write("startup", "protocol_3_2", b"\0" + startup([("user", "app"), ("_pq_.command_trace", "on")], code=PROTO3 + 2))
write("startup", "protocol_2", b"\0" + startup([("user", "app")], code=0x00020000))
write("startup", "missing_terminator", b"\0" + packet(struct.pack(">i", PROTO3) + b"user\0app"))
write("startup", "bad_length", b"\0" + struct.pack(">i", 7) + b"\0\0\0")
write("startup", "too_long", b"\0" + struct.pack(">i", 10001) + b"\0\3\0\0")
write("startup", "not_utf8", b"\0" + packet(struct.pack(">i", PROTO3) + b"user\0\xff\xfe\0\0"))

# SCRAM, server side: client-first \0 client-final (@N: the server's nonce).
proof = b"dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
write("startup", "scram_server", b"\x01n,,n=,r=rOprNGfwEbeRWgbNEkqO\0c=biws,r=@N,p=" + proof)
write("startup", "scram_server_y", b"\x01y,,n=user,r=fyko+d2lbbFgONRv9qkxdawL\0c=eSws,r=@N,p=" + proof)
write("startup", "scram_server_cb", b"\x01p=tls-server-end-point,,n=,r=abc\0")
write("startup", "scram_server_ext", b"\x01n,,n=,r=abc,m=ext\0")
write("startup", "scram_server_authzid", b"\x01n,a=admin,n=,r=abc\0")
write("startup", "scram_server_bad_nonce", b"\x01n,,n=,r=abc\0c=biws,r=wrong,p=AAAA")
write("startup", "scram_server_short_proof", b"\x01n,,n=,r=abc\0c=biws,r=@N,p=AAAA")
# SCRAM, pgmux's client side: server-first \0 server-final (@N: the client's nonce).
write("startup", "scram_client", b"\x02r=@N3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096\0v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
write("startup", "scram_client_bad_nonce", b"\x02r=xyz,s=QSXCR+Q6sek8bf92,i=4096\0")
write("startup", "scram_client_error", b"\x02r=@Nabc,s=c2FsdA==,i=1\0e=invalid-proof")
# Round trip: [iterations] [bit to flip] password \0 salt
write("startup", "scram_round_trip", b"\x03\x00\x05pencil\0" + bytes.fromhex("0123456789abcdef0123456789abcdef"))
write("startup", "scram_round_trip_empty", b"\x03\x07\xff\0")
# Text: a verifier, startup options.
write("startup", "verifier", b"\x04SCRAM-SHA-256$4096:MDEyMzQ1Njc4OWFiY2RlZg==$" + b"A" * 43 + b"=:" + b"B" * 43 + b"=")
write("startup", "options_text", b"\x04-c search_path=a,b --statement-timeout=5s -c")

# ---------------------------------------------------------------- classify
def entries(text):
    out, cur, section = [], None, None
    for line in text.splitlines(keepends=True):
        if line.startswith("-- =="):
            if cur:
                out.append(cur)
            cur = None
            section = line.split("=")[-1].strip()
        elif line.startswith("--- "):
            if cur:
                out.append(cur)
            cur = [section, ""]
        elif cur is not None:
            cur[1] += line
    if cur:
        out.append(cur)
    return [(s, q.strip("\n")) for s, q in out]


with open(os.path.join(ROOT, "src/router/corpus.sql")) as f:
    by_section = {}
    for section, sql in entries(f.read()):
        by_section.setdefault(section, []).append(sql)
for section, stmts in by_section.items():
    picks = {0, len(stmts) // 2, len(stmts) - 1}
    slug = "_".join("".join(c if c.isalnum() else " " for c in section.lower()).split())
    for i in sorted(picks):
        write("classify", f"{slug}_{i}", stmts[i].encode())
# Client byte streams for next_request (the raw input is also scanned as one).
write("classify", "stream_query", msg(b"Q", cstr("select * from t where id = 1")))
write("classify", "stream_extended", msg(b"P", cstr("s1") + cstr("update t set a = $1") + b"\0\1\0\0\0\x17") + msg(b"B", cstr("") + cstr("s1") + b"\0\0\0\1\0\0\0\x011\0\0") + msg(b"E", b"\0\0\0\0\0") + msg(b"S"))
write("classify", "stream_bind_unnamed", msg(b"B", b"\0\0" + b"\0" * 6) + msg(b"H"))
write("classify", "stream_function_call", msg(b"F", struct.pack(">i", 1598) + b"\0\0\0\0\0\0"))
write("classify", "stream_malformed", msg(b"Q", cstr("select 1"))[:-1] + b"z\0\0\0\x04")

# ---------------------------------------------------------------- session_effects
# The input is also split at its first NUL: `a \0 b` checks merge_effects(a, b).
for name, sql in [
    ("set", b"SET search_path = a, b"),
    ("set_session", b"set SESSION statement_timeout to '5s'"),
    ("set_local", b"SET LOCAL work_mem = '1MB'"),
    ("time_zone", b"SET TIME ZONE 'UTC'; set role app; SET SESSION AUTHORIZATION x"),
    ("custom", b"set my.var = 1; RESET work_mem"),
    ("characteristics", b"SET SESSION CHARACTERISTICS AS TRANSACTION READ ONLY"),
    ("reset_all", b"RESET ALL"),
    ("discard_all", b"DISCARD ALL"),
    ("deallocate", b"deallocate prepare all"),
    ("listen", b"LISTEN chan"),
    ("temp_table", b"CREATE GLOBAL TEMPORARY TABLE t (x int)"),
    ("with_hold", b"declare c cursor with hold for select 1"),
    ("advisory_lock", b"select pg_advisory_lock(1)"),
    ("prepare", b"PREPARE p AS select 1"),
    ("comment_and_quote", b"select 'set x = 1' -- ; set y = 2"),
    ("two_parts", b"SET search_path = a\0listen x; RESET ALL"),
    ("names_schema_xml", b"SET NAMES 'UTF8'; SET SCHEMA 'x'; SET XML OPTION DOCUMENT"),
    ("route_set", b"SET pgmux.route = 'replica'"),
    ("route_session", b"set session pgmux.route to primary;"),
    ("route_reset", b"RESET pgmux.route"),
    ("route_show", b"show pgmux.route"),
    ("route_invalid", b"SET pgmux.route = sideways"),
]:
    write("session_effects", name, sql)

if __name__ == "__main__":
    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(CORPUS) for f in fs)
    n = sum(len(fs) for _, _, fs in os.walk(CORPUS))
    print(f"{n} seed files, {total} bytes under {os.path.relpath(CORPUS, ROOT)}")
