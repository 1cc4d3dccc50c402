#!/usr/bin/env bash
#
# pgbench_compare.sh - compare direct PostgreSQL, PgBouncer and pgmux with pgbench.
#
# Everything runs on this machine, in one go, inside a throw-away temp dir:
#   1. initdb + start a PostgreSQL primary on a free loopback port
#      (fsync=off, max_connections=200, shared_buffers=128MB, scram auth),
#      role `bench` / password `bench` (superuser), database `bench`,
#      then `pgbench -i -s $SCALE`; for the connect-md5 workload also a role
#      `bench_md5` (password stored as md5, pg_hba `md5`), for the direct target;
#   2. optionally $REPLICAS streaming replicas (pg_basebackup -R);
#   3. PgBouncer in transaction mode (default_pool_size=$POOL);
#   4. pgmux in transaction mode (pool size $POOL) from $PGMUX_BIN: one target
#      `pgmux` with the default `workers`, or with PGMUX_WORKERS="1 2" one
#      instance per value (`workers: N`), targets `pgmux-w1`, `pgmux-w2`; with
#      PGMUX_BINS="base=/tmp/pgmux-old new=target/release/pgmux" one instance per
#      binary (targets `pgmux-base`, `pgmux-new`; with PGMUX_WORKERS too, one per
#      binary and value: `pgmux-base-w1`, ...), for a before/after comparison in
#      interleaved rounds of one run; and, when REPLICAS>0, a second instance
#      `pgmux-replicas` ($PGMUX_BIN) that also lists the replicas.
#   Both poolers authenticate clients with the same method: SCRAM-SHA-256, or md5
#   for the connect-md5 workload (the poolers are restarted when the method
#   changes between workloads). With SCRAM both are given the role's verifier
#   from pg_authid (SCRAM_SECRET=verifier, as a production userlist would hold
#   it; both then log in to PostgreSQL with the keys the client's proof reveals),
#   so neither derives keys (PBKDF2, 4096 rounds) per login; md5 needs the
#   plaintext password, which both get.
# For each workload it runs $ROUNDS interleaved rounds
# (direct, pgbouncer, pgmux[-wN...][, pgmux-replicas], direct, ...) of
#   pgbench -c $CLIENTS -j $JOBS -T $DURATION -n <workload flags>
# and records TPS, transactions and the pooler process's CPU time during the
# run (utime+stime from /proc/PID/stat, all threads), reported as pooler CPU
# microseconds per transaction (per connection for the connect-* workloads, where
# every transaction is a new connection).
#
# Workloads:
#   select-simple     pgbench -M simple   -S   (select-only, simple protocol)
#   select-extended   pgbench -M extended -S   (select-only, extended protocol)
#   tpcb-simple       pgbench -M simple        (default TPC-B-like read/write)
#   select-prepared   pgbench -M prepared -S   (select-only, named prepared statements;
#                     PgBouncer 1.18 has no prepared-statement support in transaction
#                     mode and fails this one)
#   connect-scram     pgbench -C -M simple -S  (a new connection per transaction,
#                     SCRAM-SHA-256 on every target: the client's own PBKDF2 key
#                     derivation bounds everyone's rate, so read CPU per connection)
#   connect-md5       pgbench -C -M simple -S  with md5 on both poolers (and the
#                     direct target logging in as `bench_md5` with md5)
#   latency           pgbench -M simple -S --rate R -l: a fixed rate R, RATE_FRACTION
#                     (0.5) of the lowest saturated TPS among the targets (from this
#                     run's select-simple medians if it ran before, else from one
#                     saturation run per target, recorded as latency-saturation),
#                     or RATE if set; per-transaction logs give p50/p99/p99.9
#                     latency (pgbench's per-transaction time: from the scheduled
#                     start, so it includes any schedule lag); printed with each
#                     pooler's added latency over direct (per round against the
#                     same round's direct run: median and range)
#
# Output, per workload: each target's median TPS, TPS spread over the rounds
# ((max-min)/median), ratio to direct, pooler CPU per transaction and its kernel
# share; then every pooler against PgBouncer: the ratio of the medians and the
# range of the per-round ratios (round r of one against round r of the other), with
# whether the lead holds in every round ("ahead/behind in every round") or not
# ("within noise"); with several pgmux variants (workers, binaries), each against
# the first.
# A summary table of all workloads at the end; raw per-run results go to a CSV file.
#
# Knobs (environment variables):
#   CLIENTS=50        pgbench client connections (-c)
#   JOBS=2            pgbench worker threads (-j)
#   POOL=10           server connections per pool (pgbouncer default_pool_size,
#                     pgmux pool.size)
#   DURATION=10       seconds per pgbench run (-T)
#   ROUNDS=3          interleaved rounds per workload and target
#   SCALE=10          pgbench -i scale factor
#   REPLICAS=0        streaming replicas for the extra "pgmux-replicas" target
#   PGMUX_BIN=target/release/pgmux (relative to the repo root by default);
#                     if it does not exist, the pgmux targets are skipped
#   PGMUX_WORKERS=""  e.g. "1 2": one pgmux target per value (`workers: N`,
#                     0 = one per CPU), named pgmux-wN; "" = one target `pgmux`
#                     with the config's default
#   PGMUX_BINS=""     "name=path ...": one pgmux target per binary (pgmux-<name>),
#                     e.g. the build before a change and the one after it
#   OUT=benches/results/pgbench-<timestamp>.csv   raw per-run CSV output
#   WORKLOADS="select-simple select-extended tpcb-simple"   subset/order to run
#                     (e.g. "select-simple connect-md5 connect-scram latency")
#   RATE=""           latency workload: fixed rate in transactions/s (overrides
#                     RATE_FRACTION)
#   RATE_FRACTION=0.5 latency workload: rate as a fraction of the lowest
#                     saturated median TPS among the targets
#   PIN=0             1 = pin with taskset: each pooler on CPUs $PIN_POOLER,
#                     PostgreSQL (postmaster, its children and every backend it
#                     forks later) and pgbench on $PIN_OTHERS (the direct target
#                     then has only those CPUs too)
#   PIN_POOLER=0      taskset CPU list for the poolers
#   PIN_OTHERS=1      taskset CPU list for PostgreSQL and pgbench
#   SCRAM_SECRET=verifier   verifier | plaintext: what both poolers are given as
#                     the password with SCRAM (PgBouncer with a plaintext
#                     password runs PBKDF2 at every login: ~2.4 ms of CPU here)
#   PGMUX_LOG=warn    log filter for pgmux (keep logging quiet, like pgbouncer's)
#   PGMUX_EXTRA=""    extra top-level YAML for pgmux's config (e.g. "workers: 1";
#                     not `workers:` together with PGMUX_WORKERS)
#   PGMUX_ENV=""      extra environment for pgmux, e.g. "MALLOC_ARENA_MAX=2" or
#                     "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"
#   TLS=0             1 = clients reach both poolers over TLS (a throw-away
#                     self-signed certificate; pgbench with sslmode=require;
#                     direct PostgreSQL stays plain)
#   PG_BINDIR=$(pg_config --bindir)   PostgreSQL server/client binaries
#   PGBOUNCER_BIN=pgbouncer            (installed with apt-get if missing + root)
#   KEEP_TMP=0        1 = keep the temp dir (logs, configs, latency logs) for inspection
#
# Examples:
#   DURATION=5 ROUNDS=3 benches/pgbench_compare.sh
#   WORKLOADS="select-simple latency connect-md5 connect-scram" PGMUX_WORKERS="1 2" benches/pgbench_compare.sh
#   PIN=1 PGMUX_WORKERS=1 WORKLOADS=select-simple benches/pgbench_compare.sh
#
# Exit status: 0 = all runs fine (a missing $PGMUX_BIN is only a skip);
# 2 = results printed, but a target failed to start, died, or a pgbench run
# failed; 1 = setup error.
#
# Notes:
#   * pgbench, PostgreSQL and the pooler share the same cores, so absolute TPS
#     is machine-bound; compare ratios and CPU/txn, not raw numbers. A lead that
#     is not there in every round is within this machine's noise.
#   * Pooler CPU is measured over the whole pgbench invocation, so it includes
#     the $CLIENTS client connection setups (incl. SCRAM) and teardowns.
#   * The connect-* workloads open about a thousand connections a second; each
#     leaves a TIME_WAIT socket on the client side for 60 s, per target port
#     (loopback reuses them: net.ipv4.tcp_tw_reuse=2 is the default).
#   * PostgreSQL refuses to run as root; when run as root, server processes
#     (postgres, pgbouncer) run as the `postgres` OS user via setpriv.
#     pgmux runs as the invoking user.

set -euo pipefail

# ---------------------------------------------------------------------------
# Configuration
# ---------------------------------------------------------------------------
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

CLIENTS=${CLIENTS:-50}
JOBS=${JOBS:-2}
POOL=${POOL:-10}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
SCALE=${SCALE:-10}
REPLICAS=${REPLICAS:-0}
PGMUX_BIN=${PGMUX_BIN:-$REPO_ROOT/target/release/pgmux}
PGMUX_WORKERS=${PGMUX_WORKERS:-}
PGMUX_BINS=${PGMUX_BINS:-}
OUT=${OUT:-$REPO_ROOT/benches/results/pgbench-$(date +%Y%m%d-%H%M%S).csv}
WORKLOADS=${WORKLOADS:-select-simple select-extended tpcb-simple}
RATE=${RATE:-}
RATE_FRACTION=${RATE_FRACTION:-0.5}
PIN=${PIN:-0}
PIN_POOLER=${PIN_POOLER:-0}
PIN_OTHERS=${PIN_OTHERS:-1}
SCRAM_SECRET=${SCRAM_SECRET:-verifier}
PGMUX_LOG=${PGMUX_LOG:-warn}
PGMUX_EXTRA=${PGMUX_EXTRA:-}
PGMUX_ENV=${PGMUX_ENV:-}
TLS=${TLS:-0}
KEEP_TMP=${KEEP_TMP:-0}

BENCH_USER=bench
BENCH_PASSWORD=bench
BENCH_DB=bench
MD5_USER=bench_md5    # direct target's role for connect-md5

# pgbench flags per workload name.
declare -A WORKLOAD_FLAGS=(
    [select-simple]="-M simple -S"
    [select-extended]="-M extended -S"
    [tpcb-simple]="-M simple"
    [select-prepared]="-M prepared -S"
    [connect-scram]="-C -M simple -S"
    [connect-md5]="-C -M simple -S"
    [latency]="-M simple -S"
    [latency-saturation]="-M simple -S"
)
# Client authentication method of the poolers per workload (default scram).
declare -A WORKLOAD_AUTH=([connect-md5]=md5)

# Runtime state, filled in as things start (used by cleanup).
REPLICA_DATA=()       # data dirs of started replicas
POOLER_PIDS=()        # every pgbouncer / pgmux pid ever started
PGBENCH_PID=""        # pgbench run in progress
PROBLEMS=0            # failed pooler starts / pooler deaths / failed pgbench runs
POOLER_AUTH=""        # auth method the running poolers use ("" = not started)
PIN_POOLER_CMD=()     # taskset prefixes (empty unless PIN=1)
PIN_OTHERS_CMD=()
RATE_USED=""          # the latency workload's rate, once known
BENCH_VERIFIER=""     # the bench role's SCRAM verifier (SCRAM_SECRET=verifier)

# pgmux variants, parallel arrays: target name, binary, workers ("" = default).
VARIANT_NAMES=()
VARIANT_BINS=()
VARIANT_WORKERS=()

# Benchmark targets, parallel arrays: name, port, pooler pid ("" = direct).
TARGET_NAMES=()
TARGET_PORTS=()
TARGET_PIDS=()
TARGET_DEAD=()        # 1 once a pooler died mid-benchmark

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
# log, warn, die, as_pg, show_log, is_port_in_use, free_port, wait_for_sql, stop_pid, median,
# find_pg_bindir, ensure_pgbouncer
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# cpu_ticks PID: "utime stime" (clock ticks) of the whole process (all threads).
cpu_ticks() {
    local stat fields
    stat=$(<"/proc/$1/stat") || return 1
    # Field 2 (comm) may contain spaces: drop everything up to the last ") ".
    stat=${stat##*) }
    read -r -a fields <<<"$stat"
    # After the cut, fields[0] is field 3 (state); utime=14, stime=15.
    echo "${fields[11]} ${fields[12]}"
}

# Stop every process we started and remove the temp dir (trap EXIT).
cleanup() {
    local status=$? pid dir
    set +e
    trap - EXIT INT TERM
    if [[ -n $PGBENCH_PID ]]; then
        stop_pid "$PGBENCH_PID"
    fi
    for pid in "${POOLER_PIDS[@]}"; do
        stop_pid "$pid"
    done
    for dir in "${REPLICA_DATA[@]}" "$PRIMARY_DATA"; do
        if [[ -n $dir && -f $dir/postmaster.pid ]]; then
            as_pg "$PG_BINDIR/pg_ctl" -D "$dir" -m immediate -w stop >/dev/null 2>&1
        fi
    done
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ $KEEP_TMP == 1 ]]; then
            log "keeping temp dir $TMP"
        else
            rm -rf -- "$TMP"
        fi
    fi
    exit "$status"
}

has_workload() { [[ " $WORKLOADS " == *" $1 "* ]]; }

# ---------------------------------------------------------------------------
# Setup steps
# ---------------------------------------------------------------------------
check_knobs() {
    local knob
    for knob in CLIENTS JOBS POOL DURATION ROUNDS SCALE REPLICAS PIN; do
        [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer (got '${!knob}')"
    done
    (( CLIENTS > 0 && POOL > 0 && DURATION > 0 && ROUNDS > 0 && SCALE > 0 )) \
        || die "CLIENTS, POOL, DURATION, ROUNDS and SCALE must be > 0"
    local w
    for w in $WORKLOADS; do
        [[ -n ${WORKLOAD_FLAGS[$w]+x} && $w != latency-saturation ]] \
            || die "unknown workload '$w' (known: select-simple select-extended tpcb-simple select-prepared connect-scram connect-md5 latency)"
    done
    for w in $PGMUX_WORKERS; do
        [[ $w =~ ^[0-9]+$ ]] || die "PGMUX_WORKERS must be a list of non-negative integers (got '$PGMUX_WORKERS')"
    done
    local entry vname vbin
    for entry in $PGMUX_BINS; do
        [[ $entry =~ ^[A-Za-z0-9_.]+=.+$ ]] || die "PGMUX_BINS entries are name=path (got '$entry')"
    done
    if [[ -n $PGMUX_WORKERS ]] && grep -Eq '^[[:space:]]*workers[[:space:]]*:' <<<"$PGMUX_EXTRA"; then
        die "PGMUX_EXTRA sets workers: and so does PGMUX_WORKERS; use one of them"
    fi
    [[ $SCRAM_SECRET == verifier || $SCRAM_SECRET == plaintext ]] || die "SCRAM_SECRET must be verifier or plaintext (got '$SCRAM_SECRET')"
    [[ -z $RATE || $RATE =~ ^[0-9]+([.][0-9]+)?$ ]] || die "RATE must be a number (got '$RATE')"
    [[ $RATE_FRACTION =~ ^[0-9]*[.]?[0-9]+$ ]] || die "RATE_FRACTION must be a number (got '$RATE_FRACTION')"
    if (( PIN )); then
        command -v taskset >/dev/null 2>&1 || die "PIN=1 needs taskset (util-linux)"
        taskset -c "$PIN_POOLER" true 2>/dev/null || die "PIN_POOLER=$PIN_POOLER is not a usable CPU list here ($(nproc) CPUs)"
        taskset -c "$PIN_OTHERS" true 2>/dev/null || die "PIN_OTHERS=$PIN_OTHERS is not a usable CPU list here ($(nproc) CPUs)"
        PIN_POOLER_CMD=(taskset -c "$PIN_POOLER")
        PIN_OTHERS_CMD=(taskset -c "$PIN_OTHERS")
    fi
}

# The primary as benches/lib.sh sets it up, and the "direct" target.
setup_direct() {
    setup_primary
    add_target direct "$PG_PORT" ""
    if [[ $SCRAM_SECRET == verifier ]]; then
        BENCH_VERIFIER=$("$PG_BINDIR/psql" -h "$TMP/run" -p "$PG_PORT" -U postgres -d postgres -Atc \
            "select rolpassword from pg_authid where rolname = '$BENCH_USER'")
        [[ $BENCH_VERIFIER == SCRAM-SHA-256\$* ]] || die "no SCRAM verifier for $BENCH_USER in pg_authid"
    fi
}

# pooler_secret AUTH: the password the poolers are given for the bench role.
pooler_secret() {
    if [[ $1 == scram && $SCRAM_SECRET == verifier ]]; then echo "$BENCH_VERIFIER"; else echo "$BENCH_PASSWORD"; fi
}

# A role whose password is stored as md5 and a pg_hba line that asks for md5, so
# that the direct target of connect-md5 logs in with md5 as the poolers' clients do.
setup_md5_role() {
    "$PG_BINDIR/psql" -h "$TMP/run" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<EOF
SET password_encryption = 'md5';
CREATE ROLE $MD5_USER LOGIN SUPERUSER PASSWORD '$BENCH_PASSWORD';
EOF
    prepend_hba "host    all          $MD5_USER  127.0.0.1/32     md5"
}

# Create $REPLICAS streaming replicas; their ports go to REPLICA_PORTS.
REPLICA_PORTS=()
setup_replicas() {
    local i port dir
    for (( i = 1; i <= REPLICAS; i++ )); do
        free_port port
        dir=$TMP/replica$i
        log "pg_basebackup replica $i (port $port)"
        PGPASSWORD=$BENCH_PASSWORD as_pg "$PG_BINDIR/pg_basebackup" -h 127.0.0.1 \
            -p "$PG_PORT" -U "$BENCH_USER" -D "$dir" -R -X stream -c fast \
            >"$TMP/basebackup$i.log" 2>&1 \
            || { show_log "$TMP/basebackup$i.log"; die "pg_basebackup failed"; }
        # Same config as the primary except the port (appended, so it wins).
        echo "port = $port" >>"$dir/postgresql.conf"
        REPLICA_DATA+=("$dir")
        as_pg "$PG_BINDIR/pg_ctl" -D "$dir" -l "$TMP/replica$i.log" -w start >/dev/null \
            || { show_log "$TMP/replica$i.log"; die "could not start replica $i"; }
        REPLICA_PORTS+=("$port")
    done
}

# pin_postgres DATA_DIR: the postmaster, its children, and (by inheritance)
# every backend it forks later, on $PIN_OTHERS.
pin_postgres() {
    local pid child
    pid=$(head -n 1 "$1/postmaster.pid")
    taskset -a -p -c "$PIN_OTHERS" "$pid" >/dev/null
    for child in $(ps -o pid= --ppid "$pid"); do
        taskset -a -p -c "$PIN_OTHERS" "$child" >/dev/null 2>&1 || true
    done
}

start_pgbouncer() {
    local auth=$1 port dir=$TMP/pgbouncer-$1 pid
    free_port port
    mkdir -p "$dir"
    write_pgbouncer_ini "$dir" "$port" "$(pooler_secret "$auth")" "$( [[ $auth == md5 ]] && echo md5 || echo scram-sha-256 )" 10000
    if [[ $TLS == 1 ]]; then
        printf 'client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n' \
            "$TMP/tls/cert.pem" "$TMP/tls/key.pem" >>"$dir/pgbouncer.ini"
    fi
    if [[ $EUID -eq 0 ]]; then chown -R postgres: "$dir"; fi
    log "starting pgbouncer $("$PGBOUNCER_BIN" --version | head -n 1 | awk '{print $2}') (port $port, auth $auth${PIN_POOLER_CMD[*]:+, ${PIN_POOLER_CMD[*]}})"
    # Not via the as_pg function: a backgrounded function is a subshell, and
    # we need $! to be pgbouncer itself (taskset and setpriv exec it).
    ${PIN_POOLER_CMD[@]+"${PIN_POOLER_CMD[@]}"} ${AS_PG[@]+"${AS_PG[@]}"} "$PGBOUNCER_BIN" "$dir/pgbouncer.ini" >"$dir/stdout.log" 2>&1 &
    pid=$!
    POOLER_PIDS+=("$pid")
    wait_for_sql pgbouncer "$port" "$pid" "$dir/pgbouncer.log" || die "pgbouncer failed to start"
    # The CPU numbers are only meaningful if we watch the right process.
    if [[ -f $dir/pgbouncer.pid && $(<"$dir/pgbouncer.pid") != "$pid" ]]; then
        die "pgbouncer pidfile says $(<"$dir/pgbouncer.pid") but we started pid $pid"
    fi
    add_target pgbouncer "$port" "$pid"
}

# start_pgmux NAME AUTH WORKERS BIN [REPLICA_PORT...]: start a pgmux instance
# (WORKERS "" = the config's default); on failure warn and skip the target (the
# other targets still run).
start_pgmux() {
    local name=$1 auth=$2 workers=$3 bin=$4; shift 4
    local port mport dir=$TMP/$name-$auth pid replicas="" p
    free_port port
    free_port mport
    mkdir -p "$dir"
    if (( $# > 0 )); then
        for p in "$@"; do replicas+="${replicas:+, }127.0.0.1:$p"; done
        replicas="    replicas: [$replicas]"
    fi
    cat >"$dir/pgmux.yaml" <<EOF
listen: 127.0.0.1:$port
metrics_listen: 127.0.0.1:$mport
max_client_connections: 5000
auth_type: $( [[ $auth == md5 ]] && echo md5 || echo scram-sha-256 )
${workers:+workers: $workers}
$PGMUX_EXTRA
$(if [[ $TLS == 1 ]]; then printf 'tls:\n  mode: require\n  cert: %s\n  key: %s\n' "$TMP/tls/cert.pem" "$TMP/tls/key.pem"; fi)
pool:
  mode: transaction
  size: $POOL
  checkout_timeout: 5s
  server_idle_timeout: 10m
  server_lifetime: 1h
users:
  - name: $BENCH_USER
    password: '$(pooler_secret "$auth")'
databases:
  $BENCH_DB:
    primary: 127.0.0.1:$PG_PORT
$replicas
EOF
    log "starting $name (port $port, metrics $mport, auth $auth${workers:+, workers $workers}${PGMUX_ENV:+, $PGMUX_ENV}${PIN_POOLER_CMD[*]:+, ${PIN_POOLER_CMD[*]}})"
    # env and taskset exec: $! is pgmux itself.
    # shellcheck disable=SC2086  # PGMUX_ENV is a list of VAR=value words
    env PGMUX_LOG="$PGMUX_LOG" $PGMUX_ENV ${PIN_POOLER_CMD[@]+"${PIN_POOLER_CMD[@]}"} \
        "$bin" --config "$dir/pgmux.yaml" >"$dir/pgmux.log" 2>&1 &
    pid=$!
    POOLER_PIDS+=("$pid")
    if wait_for_sql "$name" "$port" "$pid" "$dir/pgmux.log"; then
        add_target "$name" "$port" "$pid"
    else
        warn "SKIPPING target $name: it failed to start (see above)"
        PROBLEMS=$(( PROBLEMS + 1 ))
        stop_pid "$pid"
    fi
}

add_target() {
    TARGET_NAMES+=("$1"); TARGET_PORTS+=("$2"); TARGET_PIDS+=("$3"); TARGET_DEAD+=(0)
}

# make_variants: the pgmux targets, from PGMUX_BINS x PGMUX_WORKERS (a binary
# that does not exist is skipped with a warning).
make_variants() {
    local entry vname vbin w bins=() names=()
    if [[ -z $PGMUX_BINS ]]; then
        bins=("$PGMUX_BIN"); names=(pgmux)
    else
        for entry in $PGMUX_BINS; do
            vname=${entry%%=*}; vbin=${entry#*=}
            [[ $vbin == /* ]] || vbin=$PWD/$vbin
            names+=("pgmux-$vname"); bins+=("$vbin")
        done
    fi
    local i
    for i in "${!bins[@]}"; do
        if [[ ! -x ${bins[$i]} ]]; then
            warn "SKIPPING ${names[$i]}: ${bins[$i]} does not exist (build it with 'cargo build --release')"
            continue
        fi
        if [[ -z $PGMUX_WORKERS ]]; then
            VARIANT_NAMES+=("${names[$i]}"); VARIANT_BINS+=("${bins[$i]}"); VARIANT_WORKERS+=("")
        else
            for w in $PGMUX_WORKERS; do
                VARIANT_NAMES+=("${names[$i]}-w$w"); VARIANT_BINS+=("${bins[$i]}"); VARIANT_WORKERS+=("$w")
            done
        fi
    done
}

# pgmux target names, in order (what start_poolers starts).
pgmux_targets() {
    local n
    for n in ${VARIANT_NAMES[@]+"${VARIANT_NAMES[@]}"}; do echo "$n"; done
    if (( REPLICAS > 0 )) && [[ -x $PGMUX_BIN ]]; then echo pgmux-replicas; fi
}

# start_poolers AUTH: (re)start PgBouncer and the pgmux targets with client
# authentication AUTH (scram or md5); direct stays target 0.
start_poolers() {
    local auth=$1 idx w
    if [[ -n $POOLER_AUTH ]]; then
        log "restarting the poolers with $auth client authentication"
        for (( idx = ${#TARGET_NAMES[@]} - 1; idx >= 1; idx-- )); do
            stop_pid "${TARGET_PIDS[$idx]}"
        done
        TARGET_NAMES=("${TARGET_NAMES[0]}"); TARGET_PORTS=("${TARGET_PORTS[0]}")
        TARGET_PIDS=("${TARGET_PIDS[0]}"); TARGET_DEAD=(0)
    fi
    POOLER_AUTH=$auth
    start_pgbouncer "$auth"
    local i
    for i in "${!VARIANT_NAMES[@]}"; do
        start_pgmux "${VARIANT_NAMES[$i]}" "$auth" "${VARIANT_WORKERS[$i]}" "${VARIANT_BINS[$i]}"
    done
    if (( REPLICAS > 0 )) && [[ -x $PGMUX_BIN ]]; then
        start_pgmux pgmux-replicas "$auth" "" "$PGMUX_BIN" "${REPLICA_PORTS[@]}"
    fi
}

# ---------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------
# Columns 1-16 as before this script measured latency (the report reads them by
# number); 17-22 added for auth, the fixed rate and the latency percentiles.
CSV_HEADER="workload,pgbench_flags,target,round,clients,jobs,pool,duration_s,scale,tps,transactions,failed_transactions,pooler_cpu_s,pooler_cpu_us_per_txn,pgbench_exit,pooler_sys_s,auth,rate,lat_p50_us,lat_p99_us,lat_p999_us,lag_p99_us"
C_TPS=10; C_CPU_S=13; C_CPU=14; C_SYS=16; C_P50=19; C_P99=20; C_P999=21; C_LAG99=22

# node_commits: "port:xact_commit ..." of the bench database on the primary and
# each replica (to see where a routed run's transactions went).
node_commits() {
    local p out=""
    for p in "$PG_PORT" ${REPLICA_PORTS[@]+"${REPLICA_PORTS[@]}"}; do
        out+="$p:$(PGPASSWORD=$BENCH_PASSWORD "$PG_BINDIR/psql" -h 127.0.0.1 -p "$p" -U "$BENCH_USER" -d "$BENCH_DB" -Atc \
            "select xact_commit from pg_stat_database where datname = current_database()" 2>/dev/null || echo 0) "
    done
    echo "$out"
}

# spread BEFORE AFTER: each node's share of the commits between two node_commits.
spread() {
    awk -v a="$1" -v b="$2" 'BEGIN {
        n = split(a, x, " "); split(b, y, " "); total = 0
        for (i = 1; i <= n; i++) { split(x[i], p, ":"); split(y[i], q, ":"); d[i] = q[2] - p[2]; port[i] = p[1]; total += d[i] }
        for (i = 1; i <= n; i++) printf "%s%s=%.0f%%", (i > 1 ? " " : ""), (i == 1 ? "primary" : "replica:" port[i]), (total > 0 ? 100 * d[i] / total : 0)
    }'
}

# latency_stats PREFIX: "p50 p99 p99.9 lag_p99" (microseconds) from pgbench's
# per-transaction logs PREFIX.* (fields: client, txn, time_us, script, epoch, us,
# [schedule_lag_us]); failed/skipped transactions are left out.
latency_stats() {
    local files=("$1".*)
    [[ -e ${files[0]} ]] || { echo "   "; return 0; }
    local lat lag
    lat=$(awk '$3 ~ /^[0-9]+$/ { print $3 }' "${files[@]}" | sort -n | awk '
        { v[NR] = $1 }
        function pct(p,   i) { i = int(p * NR + 0.999999); if (i < 1) i = 1; if (i > NR) i = NR; return v[i] }
        END { if (NR) printf "%d %d %d", pct(0.50), pct(0.99), pct(0.999); else printf "  " }')
    lag=$(awk '$3 ~ /^[0-9]+$/ && NF >= 7 { print $7 }' "${files[@]}" | sort -n | awk '
        { v[NR] = $1 }
        END { if (NR) { i = int(0.99 * NR + 0.999999); if (i > NR) i = NR; printf "%d", v[i] } }')
    echo "$lat $lag"
}

# run_one WORKLOAD ROUND TARGET_INDEX: one pgbench run, appends a CSV row.
run_one() {
    local workload=$1 round=$2 idx=$3
    local name=${TARGET_NAMES[$idx]} port=${TARGET_PORTS[$idx]} pid=${TARGET_PIDS[$idx]}
    local flags=${WORKLOAD_FLAGS[$workload]}
    local out=$TMP/pgbench-$workload-$name-$round.log
    local t0="" t1="" status tps txns failed cpu_s="" cpu_us="" sys_s=""
    local user=$BENCH_USER auth=${WORKLOAD_AUTH[$workload]:-scram} rate="" extra=() latprefix="" lat=""

    if [[ ${TARGET_DEAD[$idx]} == 1 ]]; then
        return 0
    fi
    if [[ $workload == connect-md5 && $name == direct ]]; then user=$MD5_USER; fi
    if [[ $workload == latency ]]; then
        rate=$RATE_USED
        latprefix=$TMP/lat/$workload-$name-$round
        extra=(--rate "$rate" -l --log-prefix "$latprefix")
    fi
    if [[ -n $pid ]]; then
        if ! t0=$(cpu_ticks "$pid" 2>/dev/null); then
            warn "$name (pid $pid) is no longer running; skipping its remaining runs"
            PROBLEMS=$(( PROBLEMS + 1 ))
            TARGET_DEAD[$idx]=1
            return 0
        fi
    fi

    local commits_before=""
    if [[ $name == pgmux-replicas ]]; then commits_before=$(node_commits); fi

    # Run pgbench in the background and `wait` for it, so that a signal to
    # this script is handled (cleanup) at once instead of after the run.
    local sslmode=prefer
    if [[ $TLS == 1 && $name != direct ]]; then sslmode=require; fi
    # shellcheck disable=SC2086  # $flags is a list of pgbench options
    PGSSLMODE=$sslmode PGPASSWORD=$BENCH_PASSWORD ${PIN_OTHERS_CMD[@]+"${PIN_OTHERS_CMD[@]}"} \
        "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "$port" -U "$user" \
        -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -n $flags ${extra[@]+"${extra[@]}"} "$BENCH_DB" >"$out" 2>&1 &
    PGBENCH_PID=$!
    status=0
    wait "$PGBENCH_PID" || status=$?
    PGBENCH_PID=""

    if [[ -n $pid ]]; then
        if t1=$(cpu_ticks "$pid" 2>/dev/null); then
            cpu_s=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.3f", (y[1] + y[2] - x[1] - x[2]) / hz }')
            sys_s=$(awk -v a="$t0" -v b="$t1" -v hz="$CLK_TCK" 'BEGIN { split(a, x, " "); split(b, y, " "); printf "%.3f", (y[2] - x[2]) / hz }')
        else
            warn "$name (pid $pid) died during the run"
            PROBLEMS=$(( PROBLEMS + 1 ))
            show_log "$(ls "$TMP/$name-$POOLER_AUTH"/*.log 2>/dev/null | head -n 1)"
            TARGET_DEAD[$idx]=1
        fi
    fi

    if [[ -n $commits_before ]]; then
        log "$name round $round: transactions by node (pg_stat_database.xact_commit, incl. the monitor's checks): $(spread "$commits_before" "$(node_commits)")"
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out" | head -n 1)
    if [[ -z $tps ]]; then
        # pgbench -C reports the rate including connection time only.
        tps=$(sed -n 's/^tps = \([0-9.]*\) (including reconnection times)$/\1/p' "$out" | head -n 1)
    fi
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -n 1)
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -n 1)
    if [[ -n $cpu_s && -n $txns && $txns -gt 0 ]]; then
        cpu_us=$(awk -v c="$cpu_s" -v n="$txns" 'BEGIN { printf "%.3f", c * 1e6 / n }')
    fi
    if [[ -n $latprefix ]]; then
        lat=$(latency_stats "$latprefix")
    fi
    if (( status != 0 )) || [[ -z $tps ]]; then
        warn "pgbench against $name exited with status $status"
        PROBLEMS=$(( PROBLEMS + 1 ))
        show_log "$out"
    fi
    local p50="" p99="" p999="" lag99=""
    read -r p50 p99 p999 lag99 <<<"$lat"
    log "$(printf '%-16s %-15s round %d: tps=%-12s txns=%-9s cpu=%ss (sys %ss)  cpu/txn=%sus%s' \
        "$workload" "$name" "$round" "${tps:-NA}" "${txns:-NA}" "${cpu_s:--}" "${sys_s:--}" "${cpu_us:--}" \
        "${latprefix:+  latency p50=${p50:-?}us p99=${p99:-?}us p99.9=${p999:-?}us (schedule lag p99 ${lag99:-?}us)}")"
    echo "$workload,$flags${rate:+ --rate $rate},$name,$round,$CLIENTS,$JOBS,$POOL,$DURATION,$SCALE,$tps,$txns,$failed,$cpu_s,$cpu_us,$status,$sys_s,$auth,$rate,$p50,$p99,$p999,$lag99" >>"$OUT"
}

# rounds WORKLOAD N: N interleaved rounds over all targets.
rounds() {
    local workload=$1 n=$2 round idx
    for (( round = 1; round <= n; round++ )); do
        for idx in "${!TARGET_NAMES[@]}"; do
            run_one "$workload" "$round" "$idx"
        done
    done
}

# pick_rate: RATE, else RATE_FRACTION of the lowest saturated median TPS
# (select-simple of this run, else one saturation run per target now).
pick_rate() {
    local source=select-simple name tps min=""
    if [[ -n $RATE ]]; then
        RATE_USED=$RATE
        log "latency: fixed rate $RATE_USED tps (RATE)"
        return 0
    fi
    if [[ -z $(awk -F, -v w=select-simple 'NR > 1 && $1 == w && $10 != "" { print; exit }' "$OUT") ]]; then
        source=latency-saturation
        log "=== latency-saturation (pgbench ${WORKLOAD_FLAGS[latency-saturation]}, one run per target) ==="
        rounds latency-saturation 1
    fi
    for name in "${TARGET_NAMES[@]}"; do
        tps=$(csv_median "$source" "$name" "$C_TPS")
        [[ -n $tps ]] || continue
        if [[ -z $min ]] || awk -v a="$tps" -v b="$min" 'BEGIN { exit !(a < b) }'; then min=$tps; fi
    done
    [[ -n $min ]] || die "latency: no saturated TPS to derive the rate from"
    RATE_USED=$(awk -v t="$min" -v f="$RATE_FRACTION" 'BEGIN { printf "%.0f", t * f }')
    log "latency: fixed rate $RATE_USED tps = $RATE_FRACTION x the lowest saturated median TPS ($min, $source)"
}

run_benchmarks() {
    local workload auth
    for workload in $WORKLOADS; do
        auth=${WORKLOAD_AUTH[$workload]:-scram}
        if [[ $auth != "$POOLER_AUTH" ]]; then start_poolers "$auth"; fi
        if [[ $workload == latency ]]; then
            mkdir -p "$TMP/lat"
            pick_rate
        fi
        log "=== workload $workload (pgbench ${WORKLOAD_FLAGS[$workload]}${RATE_USED:+$( [[ $workload == latency ]] && echo " --rate $RATE_USED")}; client auth $auth) ==="
        rounds "$workload" "$ROUNDS"
    done
}

# csv_values WORKLOAD TARGET COLUMN: a CSV column for one workload/target, one
# value per round (round order).
csv_values() {
    awk -F, -v w="$1" -v t="$2" -v c="$3" \
        'NR > 1 && $1 == w && $3 == t && $c != "" { print $4, $c }' "$OUT" | sort -n | awk '{ print $2 }'
}

# csv_median WORKLOAD TARGET COLUMN: median of a CSV column for one workload/target.
csv_median() {
    csv_values "$@" | median
}

# csv_median_share WORKLOAD TARGET PART_COLUMN WHOLE_COLUMN: median of 100*part/whole.
csv_median_share() {
    awk -F, -v w="$1" -v t="$2" -v p="$3" -v c="$4" \
        'NR > 1 && $1 == w && $3 == t && $p != "" && $c + 0 > 0 { print 100 * $p / $c }' "$OUT" | median
}

# round_ratios WORKLOAD A B COLUMN: A/B per round (rounds where both have a value).
round_ratios() {
    awk -F, -v w="$1" -v a="$2" -v b="$3" -v c="$4" '
        NR > 1 && $1 == w && $c != "" { if ($3 == a) x[$4] = $c; if ($3 == b) y[$4] = $c }
        END { for (r in x) if ((r in y) && y[r] + 0 > 0) print x[r] / y[r] }' "$OUT"
}

# round_diffs WORKLOAD A B COLUMN: A-B per round.
round_diffs() {
    awk -F, -v w="$1" -v a="$2" -v b="$3" -v c="$4" '
        NR > 1 && $1 == w && $c != "" { if ($3 == a) x[$4] = $c; if ($3 == b) y[$4] = $c }
        END { for (r in x) if (r in y) print x[r] - y[r] }' "$OUT"
}

# minmax: "min max count" of the numbers on stdin ("" if none).
minmax() {
    awk 'NF { if (n == 0 || $1 < lo) lo = $1; if (n == 0 || $1 > hi) hi = $1; n++ }
         END { if (n) printf "%s %s %d", lo, hi, n }'
}

# rel_spread WORKLOAD TARGET COLUMN: (max-min)/median of the rounds, in percent.
rel_spread() {
    local vals med mm
    vals=$(csv_values "$1" "$2" "$3")
    med=$(median <<<"$vals")
    mm=$(minmax <<<"$vals")
    [[ -n $med && -n $mm ]] || { echo -; return 0; }
    awk -v m="$med" -v mm="$mm" 'BEGIN { split(mm, x, " "); if (m + 0 > 0 && x[3] > 1) printf "%.1f%%", 100 * (x[2] - x[1]) / m; else print "-" }'
}

# ratio A B: A/B with 3 decimals, "-" when either is missing or B is 0.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf "%.3f", a / b; else print "-" }'
}

# fmt VALUE PRINTF_FORMAT PLACEHOLDER: format a number, or PLACEHOLDER if empty.
fmt() {
    awk -v a="$1" -v f="$2" -v p="$3" 'BEGIN { if (a != "") printf f, a; else print p }'
}

# compare WORKLOAD A B COLUMN HIGHER_IS_BETTER: "median-ratio [lo-hi] verdict"
# from the per-round ratios A/B.
compare() {
    local workload=$1 a=$2 b=$3 col=$4 higher=$5 ratios med mm
    ratios=$(round_ratios "$workload" "$a" "$b" "$col")
    med=$(median <<<"$ratios")
    mm=$(minmax <<<"$ratios")
    [[ -n $med && -n $mm ]] || { echo "-"; return 0; }
    awk -v m="$med" -v mm="$mm" -v h="$higher" 'BEGIN {
        split(mm, x, " ")
        if (x[3] < 2) verdict = "one round"
        else if (x[1] > 1) verdict = (h ? "ahead" : "higher") " in every round"
        else if (x[2] < 1) verdict = (h ? "behind" : "lower") " in every round"
        else verdict = "within noise"
        printf "%.3f [%.3f-%.3f] %s", m, x[1], x[2], verdict
    }'
}

# SUMMARY rows for the final table: workload|target|tps|cpu
SUMMARY=()

print_workload() {
    local workload=$1 name tps direct_tps cpu sys unit="txn" other first=""
    [[ $workload == connect-* ]] && unit="conn"
    echo
    echo "== $workload (pgbench ${WORKLOAD_FLAGS[$workload]}$( [[ $workload == latency ]] && echo " --rate $RATE_USED -l"); client auth ${WORKLOAD_AUTH[$workload]:-scram}) =="
    printf '%-16s %12s %9s %10s %12s %6s\n' target "median TPS" spread "vs direct" "CPU us/$unit" sys
    direct_tps=$(csv_median "$workload" direct "$C_TPS")
    for name in "${TARGET_NAMES[@]}"; do
        tps=$(csv_median "$workload" "$name" "$C_TPS")
        cpu=$(csv_median "$workload" "$name" "$C_CPU")
        sys=$(csv_median_share "$workload" "$name" "$C_SYS" "$C_CPU_S")
        printf '%-16s %12s %9s %10s %12s %6s\n' "$name" "$(fmt "$tps" %.1f NA)" "$(rel_spread "$workload" "$name" "$C_TPS")" \
            "$(ratio "$tps" "$direct_tps")" "$(fmt "$cpu" %.2f -)" "$(fmt "$sys" %.0f%% -)"
    done
    echo "(spread: (max-min)/median of the rounds' TPS; ratios below: median of the per-round ratios [lowest-highest])"
    for name in $(pgmux_targets); do
        [[ -n $(csv_median "$workload" "$name" "$C_TPS") ]] || continue
        if [[ -z $(csv_median "$workload" pgbouncer "$C_TPS") ]]; then
            echo "$name/pgbouncer: n/a (no PgBouncer result)"
            continue
        fi
        local t c
        t=$(compare "$workload" "$name" pgbouncer "$C_TPS" 1)
        c=$(compare "$workload" "$name" pgbouncer "$C_CPU" 0)
        printf '%s/pgbouncer: TPS %s; CPU us/%s %s\n' "$name" "$t" "$unit" "$c"
        SUMMARY+=("$workload|$name|$t|$c")
    done
    if (( ${#VARIANT_NAMES[@]} > 1 )); then
        for name in "${VARIANT_NAMES[@]}"; do
            [[ -n $(csv_median "$workload" "$name" "$C_TPS") ]] || continue
            if [[ -z $first ]]; then first=$name; continue; fi
            printf '%s/%s: TPS %s; CPU us/%s %s\n' "$name" "$first" \
                "$(compare "$workload" "$name" "$first" "$C_TPS" 1)" "$unit" "$(compare "$workload" "$name" "$first" "$C_CPU" 0)"
        done
    fi
    if (( ${#VARIANT_NAMES[@]} == 0 )); then
        echo "pgmux/pgbouncer: n/a (pgmux not benchmarked)"
    fi
    if [[ $workload == latency ]]; then
        echo
        echo "latency at $RATE_USED tps (us; medians over rounds; added = the target minus the same round's direct run: median [lowest-highest])"
        printf '%-16s %9s %9s %9s %10s %26s %26s\n' target p50 p99 p99.9 "lag p99" "added p50" "added p99"
        for name in "${TARGET_NAMES[@]}"; do
            local p50 p99 p999 lag a50="-" a99="-"
            p50=$(csv_median latency "$name" "$C_P50"); p99=$(csv_median latency "$name" "$C_P99")
            p999=$(csv_median latency "$name" "$C_P999"); lag=$(csv_median latency "$name" "$C_LAG99")
            if [[ $name != direct ]]; then
                a50=$(added latency "$name" "$C_P50"); a99=$(added latency "$name" "$C_P99")
            fi
            printf '%-16s %9s %9s %9s %10s %26s %26s\n' "$name" "$(fmt "$p50" %.0f -)" "$(fmt "$p99" %.0f -)" \
                "$(fmt "$p999" %.0f -)" "$(fmt "$lag" %.0f -)" "$a50" "$a99"
        done
        for name in $(pgmux_targets); do
            [[ -n $(csv_median latency "$name" "$C_P99") && -n $(csv_median latency pgbouncer "$C_P99") ]] || continue
            printf '%s minus pgbouncer (us, per round: median [lowest..highest]; <= 0 is the target): p50 %s, p99 %s\n' "$name" \
                "$(diff_range latency "$name" pgbouncer "$C_P50")" "$(diff_range latency "$name" pgbouncer "$C_P99")"
        done
    fi
}

# added WORKLOAD TARGET COLUMN: "median [lo..hi]" of TARGET-direct per round.
added() {
    diff_range "$1" "$2" direct "$3"
}

# diff_range WORKLOAD A B COLUMN: "median [lo..hi]" of A-B per round.
diff_range() {
    local d med mm
    d=$(round_diffs "$1" "$2" "$3" "$4")
    med=$(median <<<"$d"); mm=$(minmax <<<"$d")
    [[ -n $med ]] || { echo -; return 0; }
    awk -v m="$med" -v mm="$mm" 'BEGIN { split(mm, x, " "); printf "%+.0f [%+.0f..%+.0f]", m, x[1], x[2] }'
}

print_report() {
    local workload row f
    echo
    echo "pgbench comparison: clients=$CLIENTS jobs=$JOBS pool=$POOL duration=${DURATION}s rounds=$ROUNDS scale=$SCALE replicas=$REPLICAS cpus=$(nproc) pgmux_workers='${PGMUX_WORKERS:-default}'${PGMUX_BINS:+ pgmux_bins='$PGMUX_BINS'}$( (( PIN )) && echo " pinned: poolers on CPU $PIN_POOLER, PostgreSQL+pgbench on $PIN_OTHERS")${PGMUX_ENV:+ pgmux env: $PGMUX_ENV}"
    echo "$(date '+%F %T'), $(uname -srm), loadavg $(cut -d' ' -f1-3 /proc/loadavg), PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'), PgBouncer $("$PGBOUNCER_BIN" --version | head -n 1 | awk '{print $2}')$( [[ -x $PGMUX_BIN ]] && echo ", pgmux $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')")"
    echo "(medians over rounds; 'CPU us/txn' = pooler process CPU time per transaction (per connection for connect-*); 'sys' = its share spent in the kernel)"
    local shown=$WORKLOADS
    if [[ -n $(awk -F, 'NR > 1 && $1 == "latency-saturation" { print; exit }' "$OUT") ]]; then
        shown="latency-saturation $WORKLOADS"
    fi
    for workload in $shown; do
        print_workload "$workload"
    done
    if (( ${#SUMMARY[@]} > 0 )); then
        echo
        echo "== summary: each pooler against PgBouncer (median of per-round ratios [lowest-highest]) =="
        printf '%-18s %-16s %-44s %-44s\n' workload target "TPS ratio" "CPU per txn/conn ratio"
        for row in "${SUMMARY[@]}"; do
            IFS='|' read -r -a f <<<"$row"
            printf '%-18s %-16s %-44s %-44s\n' "${f[0]}" "${f[1]}" "${f[2]}" "${f[3]}"
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
    # Resolve user-supplied relative paths before we cd into the temp dir.
    [[ $PGMUX_BIN == /* ]] || PGMUX_BIN=$PWD/$PGMUX_BIN
    [[ $OUT == /* ]] || OUT=$PWD/$OUT
    CLK_TCK=$(getconf CLK_TCK)
    make_variants    # before make_tmpdir's cd: relative binary paths are the caller's

    find_pg_bindir pg_basebackup
    ensure_pgbouncer

    mkdir -p "$(dirname "$OUT")"
    echo "$CSV_HEADER" >"$OUT"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_tmpdir pgmux-bench
    log "temp dir $TMP; PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'); $(nproc) CPUs"

    setup_direct
    if has_workload connect-md5; then setup_md5_role; fi
    if (( REPLICAS > 0 )); then setup_replicas; fi
    if (( PIN )); then
        local d
        for d in "$PRIMARY_DATA" ${REPLICA_DATA[@]+"${REPLICA_DATA[@]}"}; do pin_postgres "$d"; done
        log "pinned: PostgreSQL and pgbench on CPUs $PIN_OTHERS, the poolers on $PIN_POOLER"
    fi
    if [[ $TLS == 1 ]]; then
        mkdir -p "$TMP/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
            -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" >/dev/null 2>&1 || die "openssl could not make a certificate"
        if [[ $EUID -eq 0 ]]; then chown -R postgres: "$TMP/tls"; fi
        log "TLS: clients reach the poolers with sslmode=require"
    fi

    run_benchmarks
    print_report
    if (( PROBLEMS > 0 )); then
        warn "$PROBLEMS problem(s) during the benchmark (see warnings above); exiting with status 2"
        exit 2
    fi
}

main "$@"
