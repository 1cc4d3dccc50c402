#!/usr/bin/env bash
#
# idle_clients.sh - what $N idle client connections cost PgBouncer and pgmux.
#
# Everything runs on this machine, in one go, inside a throw-away temp dir:
#   1. initdb + start a PostgreSQL primary on a free loopback port
#      (fsync=off, max_connections=200, shared_buffers=128MB, scram auth),
#      role `bench` / password `bench` (superuser), database `bench`,
#      then `pgbench -i -s $SCALE`;
#   2. the poolers in $POOLERS, side by side, in transaction mode with $POOL
#      server connections each and room for $MAX_CLIENTS clients:
#        PgBouncer (Debian's package, installed with apt-get if missing + root;
#                   default_pool_size=$POOL, max_client_conn=$MAX_CLIENTS, scram)
#        pgmux     ($PGMUX_BIN; pool.size=$POOL, max_client_connections=$MAX_CLIENTS,
#                   metrics_listen)
#      and measures, from /proc/PID/status (VmRSS; VmHWM = peak):
#        a. each pooler's RSS at start (after one psql `select 1` checked it works);
#        b. $N idle clients on each pooler (benches/idle_clients.py, $PROCS
#           processes per pooler, $CONCURRENCY logins in flight per process; the
#           client is asyncpg, or with DRIVER=raw a wire-protocol client of the
#           program's own): each logs in with SCRAM (application_name=$APPNAME)
#           and stays connected; the pooler's own client count is checked
#           (pgmux_client_connections / PgBouncer SHOW POOLS);
#           b1. RSS with $N logged-in clients that have not sent anything yet
#               -> KiB per logged-in client = (RSS_login - RSS_start) / $N;
#           b2. then each runs one `select 1` (simple protocol, $CONCURRENCY at a
#               time per process) and stays connected: RSS again -> KiB per idle
#               client = (RSS_idle - RSS_start) / $N;
#           (FIRST_QUERY=login: each client runs its query right after its login,
#           as this script did before; only the b2 reading is taken;)
#           with HEAP=1 (needs gdb), each reading also asks the pooler's malloc
#           what it holds (glibc malloc_stats(): bytes in use by live
#           allocations vs bytes taken from the system): RSS well above "in use"
#           is memory the allocator keeps (free chunks between live ones);
#        c. while all of them stay connected: $ROUNDS interleaved rounds
#           (pgbouncer, pgmux, pgbouncer, ...) of
#             pgbench -n -S -c $CLIENTS -j $JOBS -T $DURATION
#           through each pooler -> median TPS, then RSS again;
#        d. all idle clients disconnect (Terminate), wait $SETTLE s, RSS again:
#           how much of the peak growth came back;
#        d2. ($REOPEN=1) a second wave of $N idle clients on each pooler, one
#           pooler after the other, RSS with them idle, then they leave; RSS
#           $SETTLE s later: a leak grows again, a malloc that keeps its freed
#           pages reuses them;
#        e. ($BASELINE=1) the same interleaved pgbench rounds with no idle
#           client -> TPS ratio "with $N idle / with 0 idle" per pooler (run
#           after d so that it does not change the RSS figures).
#      Interleaving makes the pgmux/PgBouncer ratios robust to a machine whose
#      load drifts; the idle/0 ratio compares two blocks a minute or two apart.
#   3. prints a table; raw results go to $OUT.
#
# Knobs (environment variables):
#   N=10000           idle client connections
#   POOL=20           server connections per pool
#   MAX_CLIENTS=20000 the poolers' client connection limit
#   CLIENTS=50        pgbench client connections (-c) of the active load
#   JOBS=2            pgbench worker threads (-j)
#   DURATION=10       seconds per pgbench run (-T)
#   SCALE=10          pgbench -i scale factor
#   ROUNDS=3          interleaved pgbench rounds per pooler, per phase (c, e)
#   SETTLE=5          seconds to wait after the idle clients disconnect
#   REOPEN=1          0 = skip step d2
#   BASELINE=1        0 = skip step e
#   PROCS=4           processes of the idle-client program
#   CONCURRENCY=32    connection attempts (and first queries) in flight per
#                     idle-client process; 0 = all at once (a harness that opens
#                     every connection in parallel)
#   DRIVER=asyncpg    asyncpg | raw (benches/idle_clients.py's own wire-protocol
#                     client: no driver, no asyncpg needed)
#   FIRST_QUERY=signal  signal = measure logged-in clients before their first
#                     query, then after it (b1, b2); login = query at login (b2 only)
#   APPNAME=idle_clients  application_name the clients send ('{i}' becomes the
#                     client's number, so that every client's differs; '' = none)
#   HEAP=0            1 = malloc_stats() of each pooler at each reading (gdb)
#   PGMUX_ENV=""      extra environment for pgmux, e.g.
#                     "MALLOC_ARENA_MAX=1" or "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libmimalloc.so.2"
#   POOLERS="pgbouncer pgmux"   which poolers (order of the rounds)
#   PGMUX_BIN=target/release/pgmux (relative to the repo root by default)
#   OUT=benches/results/idle-clients-<timestamp>.txt   raw results
#   PGMUX_LOG=warn    log filter for pgmux
#   PG_BINDIR=$(pg_config --bindir)   PostgreSQL server/client binaries
#   PGBOUNCER_BIN=pgbouncer            (installed with apt-get if missing + root)
#   PYTHON=python3    needs asyncpg with DRIVER=asyncpg (protocol-tests/drivers/requirements.txt)
#   KEEP_TMP=0        1 = keep the temp dir (logs, configs) for inspection
#
# Example: N=2000 DURATION=5 benches/idle_clients.sh
#          N=10000 DRIVER=raw CONCURRENCY=0 APPNAME='app-{i}' HEAP=1 BASELINE=0 REOPEN=0 benches/idle_clients.sh
#
# File descriptors: each pooler needs one per client plus its server
# connections. The script raises `ulimit -n` (soft, and the hard limit too when
# it may: root with CAP_SYS_RESOURCE) to $MAX_CLIENTS + 1024 before starting
# anything, so that the poolers (PgBouncer runs under setpriv and inherits the
# limit) and the client processes get it; below N + CLIENTS + POOL + 1024 it stops. 10,000 client connections plus
# the server ones fit in the default loopback ephemeral port range
# (net.ipv4.ip_local_port_range, ~28k ports).
#
# Exit status: 0 = all fine; 2 = results printed, but some idle clients failed
# to connect, a pooler's client count did not match, a pooler died, or a pgbench
# run failed; 1 = setup error.
#
# Notes:
#   * The clients, pgbench, PostgreSQL and the pooler share the same cores:
#     absolute TPS is machine-bound; read the ratios.
#   * RSS counts the pooler process only (all threads), not the kernel's socket
#     buffers. Whether memory "comes back" after the disconnect depends on the
#     allocator (glibc malloc for both poolers here) returning freed pages.
#   * PostgreSQL refuses to run as root; when run as root, server processes
#     (postgres, pgbouncer) run as the `postgres` OS user via setpriv.
#     pgmux and the clients run as the invoking user.

set -euo pipefail

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

N=${N:-10000}
POOL=${POOL:-20}
MAX_CLIENTS=${MAX_CLIENTS:-20000}
CLIENTS=${CLIENTS:-50}
JOBS=${JOBS:-2}
DURATION=${DURATION:-10}
SCALE=${SCALE:-10}
SETTLE=${SETTLE:-5}
ROUNDS=${ROUNDS:-3}
BASELINE=${BASELINE:-1}
REOPEN=${REOPEN:-1}
PROCS=${PROCS:-4}
CONCURRENCY=${CONCURRENCY:-32}
DRIVER=${DRIVER:-asyncpg}
FIRST_QUERY=${FIRST_QUERY:-signal}
APPNAME=${APPNAME-idle_clients}
HEAP=${HEAP:-0}
PGMUX_ENV=${PGMUX_ENV:-}
POOLERS=${POOLERS:-pgbouncer pgmux}
PGMUX_BIN=${PGMUX_BIN:-$REPO_ROOT/target/release/pgmux}
OUT=${OUT:-$REPO_ROOT/benches/results/idle-clients-$(date +%Y%m%d-%H%M%S).txt}
PGMUX_LOG=${PGMUX_LOG:-warn}
PYTHON=${PYTHON:-python3}
KEEP_TMP=${KEEP_TMP:-0}
CLIENT_PROG=$REPO_ROOT/benches/idle_clients.py

# Runtime state, filled in as things start (used by cleanup).
declare -A P_PID P_PORT P_LOG   # per pooler: pid, port, log file
MPORT=""              # pgmux metrics port
declare -A C_PID C_OUT          # per pooler: idle-client program pid, its stdout file
PGBENCH_PID=""
PROBLEMS=0

# Results, per pooler name.
declare -A R_START R_LOGIN R_HEAP_START R_HEAP_LOGIN R_HEAP_IDLE R_IDLE R_LOADED R_AFTER R_HWM R_TPS R_TPS0 R_OK R_FAILED \
    R_CONNECT_S R_SEEN R_SEEN_AFTER R_CLOSE_S R_FDS R_DEAD R_AFTER2
declare -A TPS_LIST   # "pooler:idle" / "pooler:none" -> TPS of each round

# ---------------------------------------------------------------------------
# Helpers in benches/lib.sh:
# ---------------------------------------------------------------------------
# log, warn, die, as_pg, show_log, is_port_in_use, free_port, wait_for_sql, stop_pid, median,
# find_pg_bindir, ensure_pgbouncer, make_tmpdir, setup_primary
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
    local status=$? pid
    set +e
    trap - EXIT INT TERM
    for pid in "$PGBENCH_PID" "${C_PID[@]}" "${P_PID[@]}"; do
        [[ -n $pid ]] && stop_pid "$pid"
    done
    if [[ -n $PRIMARY_DATA && -f $PRIMARY_DATA/postmaster.pid ]]; then
        as_pg "$PG_BINDIR/pg_ctl" -D "$PRIMARY_DATA" -m immediate -w stop >/dev/null 2>&1
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then
            log "keeping temp dir $TMP"
        else
            rm -rf -- "$TMP"
        fi
    fi
    exit "$status"
}

# proc_kb PID FIELD: a kB field of /proc/PID/status (VmRSS, VmHWM), or "".
proc_kb() {
    awk -v f="$2:" '$1 == f { print $2 }' "/proc/$1/status" 2>/dev/null || true
}

# open_fds PID: number of open file descriptors of PID.
open_fds() {
    ls "/proc/$1/fd" 2>/dev/null | wc -l
}

# calc EXPR: awk arithmetic with the given printf format, "-" on missing input.
calc() {
    local fmt=$1 expr=$2; shift 2
    awk -v f="$fmt" "$@" "BEGIN { v = $expr; printf f, v }"
}

# ---------------------------------------------------------------------------
# Setup steps
# ---------------------------------------------------------------------------
check_knobs() {
    local knob
    for knob in N POOL MAX_CLIENTS CLIENTS JOBS DURATION ROUNDS SCALE SETTLE BASELINE REOPEN PROCS CONCURRENCY HEAP; do
        [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer (got '${!knob}')"
    done
    (( N > 0 && POOL > 0 && CLIENTS > 0 && DURATION > 0 && ROUNDS > 0 && SCALE > 0 && PROCS > 0 )) \
        || die "N, POOL, CLIENTS, DURATION, ROUNDS, SCALE and PROCS must be > 0"
    [[ $DRIVER == asyncpg || $DRIVER == raw ]] || die "DRIVER must be asyncpg or raw (got '$DRIVER')"
    [[ $FIRST_QUERY == signal || $FIRST_QUERY == login ]] || die "FIRST_QUERY must be signal or login (got '$FIRST_QUERY')"
    if (( HEAP )); then command -v gdb >/dev/null 2>&1 || die "HEAP=1 needs gdb"; fi
    (( MAX_CLIENTS >= N + CLIENTS + 10 )) || die "MAX_CLIENTS ($MAX_CLIENTS) must be >= N + CLIENTS + 10"
    local p
    for p in $POOLERS; do
        [[ $p == pgbouncer || $p == pgmux ]] || die "unknown pooler '$p' (known: pgbouncer pgmux)"
    done
}

# Raise the open-files limit for everything started from here on.
raise_nofile() {
    local want=$(( MAX_CLIENTS + 1024 )) need=$(( N + CLIENTS + POOL + 1024 )) hard soft
    hard=$(ulimit -Hn)
    if [[ $hard != unlimited ]] && (( hard < want )); then
        ulimit -Hn "$want" 2>/dev/null || true
        hard=$(ulimit -Hn)
    fi
    if [[ $hard == unlimited ]] || (( hard >= want )); then
        ulimit -Sn "$want"
    else
        ulimit -Sn "$hard"
    fi
    soft=$(ulimit -Sn)
    (( soft >= need )) || die "open-files limit is $soft (hard $hard); N=$N needs >= $need: raise it (ulimit -Hn as root) or lower N"
    log "ulimit -n: $soft (hard $hard)"
}

ensure_client_prog() {
    [[ -f $CLIENT_PROG ]] || die "missing $CLIENT_PROG"
    if [[ $DRIVER == asyncpg ]] && ! "$PYTHON" -c 'import asyncpg' 2>/dev/null; then
        log "installing asyncpg with pip (protocol-tests/drivers/requirements.txt)"
        local req
        req=$(grep -E '^asyncpg' "$REPO_ROOT/protocol-tests/drivers/requirements.txt" 2>/dev/null || echo asyncpg)
        "$PYTHON" -m pip install -q "$req" >/dev/null 2>&1 \
            || "$PYTHON" -m pip install -q --break-system-packages "$req" >/dev/null \
            || die "could not install $req for $PYTHON"
    fi
}

start_pgbouncer() {
    local port dir=$TMP/pgbouncer pid
    free_port port
    mkdir -p "$dir"
    write_pgbouncer_ini "$dir" "$port" "$BENCH_PASSWORD" scram-sha-256 "$MAX_CLIENTS" "admin_users = $BENCH_USER"
    if [[ $EUID -eq 0 ]]; then chown -R postgres: "$dir"; fi
    log "starting pgbouncer $("$PGBOUNCER_BIN" --version | head -n 1 | awk '{print $2}') (port $port)"
    # setpriv execs pgbouncer: $! is pgbouncer itself, and it inherits our ulimit.
    ${AS_PG[@]+"${AS_PG[@]}"} "$PGBOUNCER_BIN" "$dir/pgbouncer.ini" >"$dir/stdout.log" 2>&1 &
    pid=$!
    P_PID[pgbouncer]=$pid; P_PORT[pgbouncer]=$port; P_LOG[pgbouncer]=$dir/pgbouncer.log
    wait_for_sql pgbouncer "$port" "$pid" "$dir/pgbouncer.log" || die "pgbouncer failed to start"
    if [[ -f $dir/pgbouncer.pid && $(<"$dir/pgbouncer.pid") != "$pid" ]]; then
        die "pgbouncer pidfile says $(<"$dir/pgbouncer.pid") but we started pid $pid"
    fi
}

start_pgmux() {
    local port dir=$TMP/pgmux pid
    [[ -x $PGMUX_BIN ]] || die "PGMUX_BIN=$PGMUX_BIN does not exist (build it with 'cargo build --release')"
    free_port port
    free_port MPORT
    mkdir -p "$dir"
    cat >"$dir/pgmux.yaml" <<EOF
listen: 127.0.0.1:$port
metrics_listen: 127.0.0.1:$MPORT
max_client_connections: $MAX_CLIENTS
pool:
  mode: transaction
  size: $POOL
  checkout_timeout: 5s
  server_idle_timeout: 10m
  server_lifetime: 1h
users:
  - name: $BENCH_USER
    password: $BENCH_PASSWORD
databases:
  $BENCH_DB:
    primary: 127.0.0.1:$PG_PORT
EOF
    log "starting pgmux (port $port, metrics $MPORT)${PGMUX_ENV:+ with $PGMUX_ENV}"
    # shellcheck disable=SC2086  # PGMUX_ENV is a list of VAR=value words
    env PGMUX_LOG="$PGMUX_LOG" $PGMUX_ENV "$PGMUX_BIN" --config "$dir/pgmux.yaml" >"$dir/pgmux.log" 2>&1 &
    pid=$!
    P_PID[pgmux]=$pid; P_PORT[pgmux]=$port; P_LOG[pgmux]=$dir/pgmux.log
    wait_for_sql pgmux "$port" "$pid" "$dir/pgmux.log" || die "pgmux failed to start"
}

# pooler_clients NAME: the pooler's own count of connected clients (bench database).
pooler_clients() {
    case $1 in
        pgbouncer)
            # SHOW POOLS: cl_active + cl_waiting for db bench (idle logged-in
            # clients are cl_active); the admin connection itself is not counted.
            PGPASSWORD=$BENCH_PASSWORD "$PG_BINDIR/psql" -h 127.0.0.1 -p "${P_PORT[pgbouncer]}" \
                -U "$BENCH_USER" -d pgbouncer -F, -Ac 'show pools' 2>/dev/null \
                | awk -F, -v db="$BENCH_DB" '
                    NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
                    $col["database"] == db { n += $col["cl_active"] + $col["cl_waiting"] }
                    END { print n + 0 }'
            ;;
        pgmux)
            "$PYTHON" - "$MPORT" <<'EOF' 2>/dev/null || echo "?"
import sys, urllib.request
body = urllib.request.urlopen(f"http://127.0.0.1:{sys.argv[1]}/metrics", timeout=5).read().decode()
total = 0.0
for line in body.splitlines():
    if line.startswith("pgmux_client_connections") and not line.startswith("pgmux_client_connections_"):
        total += float(line.rsplit(" ", 1)[1])
print(int(total))
EOF
            ;;
    esac
}

# alive NAME: the pooler is still running (else note the problem once).
alive() {
    local name=$1
    [[ ${R_DEAD[$name]:-0} == 1 ]] && return 1
    if ! kill -0 "${P_PID[$name]}" 2>/dev/null; then
        warn "$name (pid ${P_PID[$name]}) died"
        show_log "${P_LOG[$name]}"
        PROBLEMS=$(( PROBLEMS + 1 ))
        R_DEAD[$name]=1
        return 1
    fi
}

rss() { proc_kb "${P_PID[$1]}" VmRSS; }

# heap NAME: "in_use_KiB/system_KiB" from glibc's malloc_stats() in the pooler
# (through gdb; printed on the pooler's stderr, which goes to its log), or "".
heap() {
    local name=$1 pid=${P_PID[$1]} file before out
    (( HEAP )) || return 0
    case $name in
        pgmux) file=${P_LOG[pgmux]} ;;
        pgbouncer) file=$TMP/pgbouncer/stdout.log ;;
    esac
    before=$(wc -l <"$file")
    timeout 60 gdb -p "$pid" -batch -ex 'call (void) malloc_stats()' >/dev/null 2>&1 || true
    sleep 0.2
    out=$(tail -n +"$(( before + 1 ))" "$file" | awk '
        /^Total \(incl. mmap\):/ { t = 1; next }
        t && /system bytes/ { sys = $NF }
        t && /in use bytes/ { use = $NF }
        END { if (sys != "") printf "%.0f/%.0f", use / 1024, sys / 1024 }')
    echo "$out"
}

# run_pgbench NAME LABEL: pgbench -S through the pooler; sets TPS_RESULT (or "").
TPS_RESULT=""
run_pgbench() {
    local name=$1 label=$2 out=$TMP/pgbench-$1-$2.log status=0 tps
    TPS_RESULT=""
    alive "$name" || return 0
    PGPASSWORD=$BENCH_PASSWORD "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "${P_PORT[$name]}" -U "$BENCH_USER" \
        -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -n -S "$BENCH_DB" >"$out" 2>&1 &
    PGBENCH_PID=$!
    wait "$PGBENCH_PID" || status=$?
    PGBENCH_PID=""
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out" | head -n 1)
    if (( status != 0 )) || [[ -z $tps ]]; then
        warn "pgbench ($label) through $name exited with status $status"
        show_log "$out"
        PROBLEMS=$(( PROBLEMS + 1 ))
    fi
    log "$(printf '%-9s %-22s tps=%s' "$name" "$label" "${tps:-NA}")"
    { echo "--- pgbench $name $label ---"; cat "$out"; } >>"$TMP/pgbench-all.log"
    TPS_RESULT=$tps
}

# open_idle NAME [KEY]: start the idle-client program against NAME, wait for
# READY; results go to R_*[KEY] (default NAME; "NAME#2" for the second wave).
open_idle() {
    local name=$1 key=${2:-$1} out=$TMP/clients-$1.out line t0=$SECONDS
    C_OUT[$name]=$out
    : >"$out"
    log "$key: opening $N idle clients ($DRIVER, $PROCS processes x $( (( CONCURRENCY )) && echo "$CONCURRENCY" || echo "all") connects in flight, first query at $FIRST_QUERY)"
    "$PYTHON" "$CLIENT_PROG" --port "${P_PORT[$name]}" --user "$BENCH_USER" \
        --password "$BENCH_PASSWORD" --db "$BENCH_DB" -n "$N" --procs "$PROCS" \
        --concurrency "$CONCURRENCY" --driver "$DRIVER" --query "$FIRST_QUERY" \
        --appname "$APPNAME" --cache-scram >"$out" 2>"$TMP/clients-$name.err" &
    C_PID[$name]=$!
    while :; do
        line=$(grep -m1 '^READY ' "$out" || true)
        [[ -n $line ]] && break
        if ! kill -0 "${C_PID[$name]}" 2>/dev/null; then
            show_log "$TMP/clients-$name.err"
            die "the idle-client program ($name) exited before READY"
        fi
        (( SECONDS - t0 < 1800 )) || die "the idle clients ($name) did not connect within 30 min"
        sleep 1
    done
    R_OK[$key]=$(sed -n 's/.* ok=\([0-9]*\).*/\1/p' <<<"$line")
    R_FAILED[$key]=$(sed -n 's/.* failed=\([0-9]*\).*/\1/p' <<<"$line")
    R_CONNECT_S[$key]=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line")
    log "$key: $line"
    echo "$key clients: $line" >>"$OUT"
    if (( ${R_FAILED[$key]:-0} > 0 )); then
        warn "$name: ${R_FAILED[$key]} of $N idle clients failed"
        PROBLEMS=$(( PROBLEMS + 1 ))
    fi
    alive "$name" || return 0
    sleep 2
    if [[ $FIRST_QUERY == signal ]]; then
        R_LOGIN[$key]=$(rss "$name")
        R_HEAP_LOGIN[$key]=$(heap "$name")
        log "$key: RSS with ${R_OK[$key]} logged-in clients (no query yet) ${R_LOGIN[$key]} kB${R_HEAP_LOGIN[$key]:+; malloc in use/system ${R_HEAP_LOGIN[$key]} KiB}"
        kill -USR2 "${C_PID[$name]}"
        t0=$SECONDS
        while :; do
            line=$(grep -m1 '^QUERIED ' "$out" || true)
            [[ -n $line ]] && break
            kill -0 "${C_PID[$name]}" 2>/dev/null || die "the idle-client program ($name) exited before QUERIED"
            (( SECONDS - t0 < 600 )) || die "the idle clients ($name) did not run their query within 10 min"
            sleep 0.5
        done
        log "$key: $line"
        echo "$key clients: $line" >>"$OUT"
        if [[ $line != *" failed=0 "* ]]; then
            warn "$name: some first queries failed: $line"
            PROBLEMS=$(( PROBLEMS + 1 ))
        fi
        sleep 2
    fi
    R_IDLE[$key]=$(rss "$name")
    R_HEAP_IDLE[$key]=$(heap "$name")
    R_FDS[$key]=$(open_fds "${P_PID[$name]}")
    R_SEEN[$key]=$(pooler_clients "$name")
    log "$key: RSS with ${R_OK[$key]} idle clients (one query each) ${R_IDLE[$key]} kB${R_HEAP_IDLE[$key]:+; malloc in use/system ${R_HEAP_IDLE[$key]} KiB}; the pooler counts ${R_SEEN[$key]} clients, has ${R_FDS[$key]} fds open"
    if [[ ${R_SEEN[$key]} != "${R_OK[$key]}" ]]; then
        warn "$name counts ${R_SEEN[$key]} clients, the client program holds ${R_OK[$key]}"
        PROBLEMS=$(( PROBLEMS + 1 ))
    fi
}

# close_idle NAME [KEY]: tell the idle-client program to disconnect, wait for it.
close_idle() {
    local name=$1 key=${2:-$1} status=0 line
    [[ -n ${C_PID[$name]:-} ]] || return 0
    kill -0 "${C_PID[$name]}" 2>/dev/null \
        || { warn "the idle-client program ($name) died before the disconnect"; PROBLEMS=$(( PROBLEMS + 1 )); }
    kill -USR1 "${C_PID[$name]}" 2>/dev/null || true
    wait "${C_PID[$name]}" || status=$?
    C_PID[$name]=""
    line=$(grep -m1 '^CLOSED ' "${C_OUT[$name]}" || true)
    R_CLOSE_S[$key]=$(sed -n 's/.* seconds=\([0-9.]*\).*/\1/p' <<<"$line")
    log "$key: ${line:-idle clients exited with status $status, no CLOSED line}"
    echo "$key clients: ${line:-no CLOSED line (exit $status)}" >>"$OUT"
}

# pgbench_rounds LABEL: $ROUNDS interleaved rounds over the poolers.
pgbench_rounds() {
    local label=$1 round name
    for (( round = 1; round <= ROUNDS; round++ )); do
        for name in $POOLERS; do
            run_pgbench "$name" "$label-$round"
            TPS_LIST[$name:$label]+="${TPS_RESULT} "
        done
    done
}

run_benchmark() {
    local name
    for name in $POOLERS; do "start_$name"; done
    sleep 1
    for name in $POOLERS; do
        R_START[$name]=$(rss "$name")
        R_HEAP_START[$name]=$(heap "$name")
        log "$name (pid ${P_PID[$name]}): RSS at start ${R_START[$name]} kB, open-files limit $(awk '/Max open files/ { print $4 }' "/proc/${P_PID[$name]}/limits")"
        echo "$name pid=${P_PID[$name]} ulimit_n=$(awk '/Max open files/ { print $4 }' "/proc/${P_PID[$name]}/limits")" >>"$OUT"
    done

    # b. N idle clients on each pooler (one pooler after the other)
    for name in $POOLERS; do open_idle "$name"; done

    # c. active load while all idle clients stay connected
    log "pgbench -S -c $CLIENTS -j $JOBS -T $DURATION, $ROUNDS interleaved rounds, with $N idle clients on each pooler"
    pgbench_rounds idle
    for name in $POOLERS; do
        alive "$name" || continue
        R_LOADED[$name]=$(rss "$name")
        log "$name: RSS after the pgbench rounds ${R_LOADED[$name]} kB"
    done

    # d. disconnect all, settle
    for name in $POOLERS; do close_idle "$name"; done
    log "waiting ${SETTLE}s"
    sleep "$SETTLE"
    for name in $POOLERS; do
        alive "$name" || continue
        R_AFTER[$name]=$(rss "$name")
        R_HWM[$name]=$(proc_kb "${P_PID[$name]}" VmHWM)
        R_SEEN_AFTER[$name]=$(pooler_clients "$name")
        log "$name: RSS ${SETTLE}s after the disconnect ${R_AFTER[$name]} kB (peak VmHWM ${R_HWM[$name]} kB); the pooler counts ${R_SEEN_AFTER[$name]} clients, $(open_fds "${P_PID[$name]}") fds"
    done

    # d2. a second wave of N idle clients: does it reuse the memory of the first?
    if (( REOPEN )); then
        for name in $POOLERS; do
            alive "$name" || continue
            open_idle "$name" "$name#2"
            close_idle "$name" "$name#2"
        done
        log "waiting ${SETTLE}s"
        sleep "$SETTLE"
        for name in $POOLERS; do
            alive "$name" || continue
            R_AFTER2[$name]=$(rss "$name")
            log "$name: RSS ${SETTLE}s after the second wave left ${R_AFTER2[$name]} kB"
        done
    fi

    # e. same load with no idle clients
    if (( BASELINE )); then
        log "pgbench -S -c $CLIENTS -j $JOBS -T $DURATION, $ROUNDS interleaved rounds, no idle clients"
        pgbench_rounds none
    fi

    for name in $POOLERS; do
        R_TPS[$name]=$(tr ' ' '\n' <<<"${TPS_LIST[$name:idle]:-}" | median)
        R_TPS0[$name]=$(tr ' ' '\n' <<<"${TPS_LIST[$name:none]:-}" | median)
        {
            echo "## $name"
            echo "rss_start_kb=${R_START[$name]:-}"
            echo "rss_logged_in_kb=${R_LOGIN[$name]:-}"
            echo "rss_idle_kb=${R_IDLE[$name]:-}"
            echo "heap_in_use_over_system_kib start=${R_HEAP_START[$name]:-} logged_in=${R_HEAP_LOGIN[$name]:-} idle=${R_HEAP_IDLE[$name]:-}"
            echo "idle_clients_ok=${R_OK[$name]:-} failed=${R_FAILED[$name]:-} connect_s=${R_CONNECT_S[$name]:-} close_s=${R_CLOSE_S[$name]:-}"
            echo "pooler_client_count_idle=${R_SEEN[$name]:-}"
            echo "pooler_open_fds_idle=${R_FDS[$name]:-}"
            echo "tps_with_idle_rounds=${TPS_LIST[$name:idle]:-}"
            echo "tps_no_idle_rounds=${TPS_LIST[$name:none]:-}"
            echo "rss_after_pgbench_kb=${R_LOADED[$name]:-}"
            echo "rss_after_disconnect_kb=${R_AFTER[$name]:-}"
            echo "vm_hwm_kb=${R_HWM[$name]:-}"
            echo "pooler_client_count_after=${R_SEEN_AFTER[$name]:-}"
            echo "wave2_rss_logged_in_kb=${R_LOGIN[$name#2]:-} wave2_rss_idle_kb=${R_IDLE[$name#2]:-} wave2_clients_ok=${R_OK[$name#2]:-} wave2_pooler_count=${R_SEEN[$name#2]:-} wave2_rss_after_kb=${R_AFTER2[$name]:-}"
            echo
        } >>"$OUT"
    done
}

print_report() {
    local name s g i l a peak n
    echo
    echo "idle clients: N=$N pool=$POOL driver=$DRIVER first query at $FIRST_QUERY, $PROCS client processes x $( (( CONCURRENCY )) && echo "$CONCURRENCY" || echo "all") in flight, application_name='$APPNAME'${PGMUX_ENV:+, pgmux with $PGMUX_ENV}"
    echo "active=pgbench -S -c $CLIENTS -j $JOBS -T $DURATION x $ROUNDS interleaved rounds; cpus=$(nproc) loadavg=$(cut -d' ' -f1-3 /proc/loadavg) ($(date '+%F %T'))"
    echo "(RSS = pooler VmRSS in KiB; 'logged in' = N clients logged in that have sent nothing yet, 'idle' = the same"
    echo " after one query each; KiB/client = (RSS - RSS start) / N; TPS = median over rounds; 'returned' = share of"
    echo " the peak growth (max of the RSS readings with N connected) given back ${SETTLE}s after all idle clients left)"
    printf '%-10s %9s %10s %9s %10s %9s %11s %11s %10s %10s %9s\n' \
        pooler "RSS start" "logged in" "KiB/cl" "idle" "KiB/cl" "TPS N idle" "TPS 0 idle" "idle/0" "RSS after" returned
    for name in $POOLERS; do
        s=${R_START[$name]:-}; g=${R_LOGIN[$name]:-}; i=${R_IDLE[$name]:-}; l=${R_LOADED[$name]:-}; a=${R_AFTER[$name]:-}
        n=${R_OK[$name]:-$N}
        if [[ -z $s || -z $i ]]; then
            printf '%-10s %s\n' "$name" "(no result)"
            continue
        fi
        peak=$i
        [[ -n $g ]] && (( g > peak )) && peak=$g
        [[ -n $l ]] && (( l > peak )) && peak=$l
        printf '%-10s %9s %10s %9s %10s %9s %11s %11s %10s %10s %9s\n' "$name" "$s" "${g:--}" \
            "$(if [[ -n $g ]]; then calc %.2f "(g - s) / n" -v g="$g" -v s="$s" -v n="$n"; else echo -; fi)" \
            "$i" "$(calc %.2f "(i - s) / n" -v i="$i" -v s="$s" -v n="$n")" \
            "$(if [[ -n ${R_TPS[$name]:-} ]]; then calc %.0f "a" -v a="${R_TPS[$name]}"; else echo NA; fi)" \
            "$(if [[ -n ${R_TPS0[$name]:-} ]]; then calc %.0f "a" -v a="${R_TPS0[$name]}"; else echo -; fi)" \
            "$(if [[ -n ${R_TPS[$name]:-} && -n ${R_TPS0[$name]:-} ]]; then calc %.3f "a / b" -v a="${R_TPS[$name]}" -v b="${R_TPS0[$name]}"; else echo -; fi)" \
            "${a:-NA}" \
            "$(if [[ -n $a ]] && (( peak > s )); then calc %s "sprintf(\"%.0f%%\", 100 * (p - a) / (p - s))" -v p="$peak" -v a="$a" -v s="$s" | sed 's/^-0%$/0%/'; else echo -; fi)"
    done
    if (( HEAP )); then
        echo "malloc (glibc malloc_stats: KiB in use by live allocations / KiB taken from the system; the rest is free memory malloc keeps):"
        for name in $POOLERS; do
            echo "  $name: start ${R_HEAP_START[$name]:-?}; logged in ${R_HEAP_LOGIN[$name]:--}; idle ${R_HEAP_IDLE[$name]:-?}$(
                if [[ -n ${R_HEAP_IDLE[$name]:-} && -n ${R_HEAP_START[$name]:-} ]]; then
                    calc "; live allocations per idle client %.2f KiB" "(x - y) / n" -v x="${R_HEAP_IDLE[$name]%%/*}" -v y="${R_HEAP_START[$name]%%/*}" -v n="${R_OK[$name]:-$N}"
                fi)$(
                if [[ -n ${R_HEAP_LOGIN[$name]:-} && -n ${R_HEAP_START[$name]:-} ]]; then
                    calc ", per logged-in client %.2f KiB" "(x - y) / n" -v x="${R_HEAP_LOGIN[$name]%%/*}" -v y="${R_HEAP_START[$name]%%/*}" -v n="${R_OK[$name]:-$N}"
                fi)"
        done
    fi
    if [[ -n ${R_TPS[pgmux]:-} && -n ${R_TPS[pgbouncer]:-} ]]; then
        echo "pgmux/pgbouncer median TPS: with $N idle $(calc %.3f "a / b" -v a="${R_TPS[pgmux]}" -v b="${R_TPS[pgbouncer]}")$(
            if [[ -n ${R_TPS0[pgmux]:-} && -n ${R_TPS0[pgbouncer]:-} ]]; then
                echo ", with 0 idle $(calc %.3f "a / b" -v a="${R_TPS0[pgmux]}" -v b="${R_TPS0[pgbouncer]}")"
            fi)"
    fi
    for name in $POOLERS; do
        [[ -n ${R_OK[$name]:-} ]] || continue
        echo "$name: ${R_OK[$name]} idle clients connected in ${R_CONNECT_S[$name]}s (${R_FAILED[$name]} failed), closed in ${R_CLOSE_S[$name]:-?}s; pooler counted ${R_SEEN[$name]:-?} while idle, ${R_SEEN_AFTER[$name]:-?} after; RSS after pgbench ${R_LOADED[$name]:-?} KiB, peak VmHWM ${R_HWM[$name]:-?} KiB; TPS rounds with idle: ${TPS_LIST[$name:idle]:-}/ without: ${TPS_LIST[$name:none]:-}"
    done
    if (( REOPEN )); then
        echo "second wave of $N idle clients after the first left (RSS KiB: after wave 1 -> with wave 2 logged in -> idle -> ${SETTLE}s after wave 2 left):"
        for name in $POOLERS; do
            [[ -n ${R_IDLE[$name#2]:-} && -n ${R_AFTER[$name]:-} ]] || continue
            echo "  $name: ${R_AFTER[$name]} -> ${R_LOGIN[$name#2]:--} -> ${R_IDLE[$name#2]} ($(calc %+.2f "(b - a) / n" -v a="${R_AFTER[$name]}" -v b="${R_IDLE[$name#2]}" -v n="${R_OK[$name#2]:-$N}") KiB/client) -> ${R_AFTER2[$name]:-?}; ${R_OK[$name#2]:-?} connected in ${R_CONNECT_S[$name#2]:-?}s, pooler counted ${R_SEEN[$name#2]:-?}"
        done
    fi
    echo
    echo "raw results: $OUT"
}

# ---------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------
main() {
    check_knobs
    [[ $PGMUX_BIN == /* ]] || PGMUX_BIN=$PWD/$PGMUX_BIN
    [[ $OUT == /* ]] || OUT=$PWD/$OUT

    find_pg_bindir
    if [[ " $POOLERS " == *" pgbouncer "* ]]; then ensure_pgbouncer; fi
    ensure_client_prog
    raise_nofile

    mkdir -p "$(dirname "$OUT")"
    {
        echo "# idle_clients.sh $(date '+%F %T')"
        echo "N=$N POOL=$POOL MAX_CLIENTS=$MAX_CLIENTS CLIENTS=$CLIENTS JOBS=$JOBS DURATION=$DURATION ROUNDS=$ROUNDS SCALE=$SCALE SETTLE=$SETTLE PROCS=$PROCS CONCURRENCY=$CONCURRENCY POOLERS='$POOLERS' cpus=$(nproc) loadavg=$(cut -d' ' -f1-3 /proc/loadavg)"
        echo
    } >"$OUT"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_tmpdir pgmux-idle
    : >"$TMP/pgbench-all.log"
    log "temp dir $TMP; PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'); $(nproc) CPUs"
    setup_primary

    run_benchmark
    print_report | tee -a "$OUT"
    echo "# all pgbench outputs" >>"$OUT"
    cat "$TMP/pgbench-all.log" >>"$OUT"
    if (( PROBLEMS > 0 )); then
        warn "$PROBLEMS problem(s) during the benchmark (see warnings above); exiting with status 2"
        exit 2
    fi
}

main "$@"
