#!/usr/bin/env bash
#
# pgbench_compare.sh - compare direct PostgreSQL, PgBouncer and pgmux with pgbench.
#
# Everything runs on this machine, in one go, inside a throw-away temp dir:
#   1. initdb + start a PostgreSQL primary on a free loopback port
#      (fsync=off, max_connections=200, shared_buffers=128MB, scram auth),
#      role `bench` / password `bench` (superuser), database `bench`,
#      then `pgbench -i -s $SCALE`;
#   2. optionally $REPLICAS streaming replicas (pg_basebackup -R);
#   3. PgBouncer in transaction mode (default_pool_size=$POOL, scram auth);
#   4. pgmux in transaction mode (pool size $POOL) from $PGMUX_BIN, and, when
#      REPLICAS>0, a second pgmux instance that also lists the replicas.
# For each workload it runs $ROUNDS interleaved rounds
# (direct, pgbouncer, pgmux[, pgmux-replicas], direct, ...) of
#   pgbench -c $CLIENTS -j $JOBS -T $DURATION -n <workload flags>
# and records TPS, transactions and the pooler process's CPU time during the
# run (utime+stime from /proc/PID/stat, all threads), reported as pooler CPU
# microseconds per transaction.  Medians are printed as a table per workload;
# raw per-run results go to a CSV file.
#
# Workloads:
#   select-simple     pgbench -M simple   -S   (select-only, simple protocol)
#   select-extended   pgbench -M extended -S   (select-only, extended protocol)
#   tpcb-simple       pgbench -M simple        (default TPC-B-like read/write)
#   select-prepared   pgbench -M prepared -S   (select-only, named prepared statements;
#                     PgBouncer 1.18 has no prepared-statement support in transaction
#                     mode and fails this one)
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
#   OUT=benches/results/pgbench-<timestamp>.csv   raw per-run CSV output
#   WORKLOADS="select-simple select-extended tpcb-simple"   subset/order to run
#   PGMUX_LOG=warn    log filter for pgmux (keep logging quiet, like pgbouncer's)
#   PGMUX_EXTRA=""    extra top-level YAML for pgmux's config (e.g. "workers: 1")
#   TLS=0             1 = clients reach both poolers over TLS (a throw-away
#                     self-signed certificate; pgbench with sslmode=require;
#                     direct PostgreSQL stays plain)
#   PG_BINDIR=$(pg_config --bindir)   PostgreSQL server/client binaries
#   PGBOUNCER_BIN=pgbouncer            (installed with apt-get if missing + root)
#   KEEP_TMP=0        1 = keep the temp dir (logs, configs) for inspection
#
# Example: DURATION=5 ROUNDS=3 benches/pgbench_compare.sh
#
# Exit status: 0 = all runs fine (a missing $PGMUX_BIN is only a skip);
# 2 = results printed, but a target failed to start, died, or a pgbench run
# failed; 1 = setup error.
#
# Notes:
#   * pgbench, PostgreSQL and the pooler share the same cores, so absolute TPS
#     is machine-bound; compare ratios and CPU/txn, not raw numbers.
#   * Pooler CPU is measured over the whole pgbench invocation, so it includes
#     the $CLIENTS client connection setups (incl. SCRAM) and teardowns.
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
OUT=${OUT:-$REPO_ROOT/benches/results/pgbench-$(date +%Y%m%d-%H%M%S).csv}
WORKLOADS=${WORKLOADS:-select-simple select-extended tpcb-simple}
PGMUX_LOG=${PGMUX_LOG:-warn}
PGMUX_EXTRA=${PGMUX_EXTRA:-}
TLS=${TLS:-0}
KEEP_TMP=${KEEP_TMP:-0}

BENCH_USER=bench
BENCH_PASSWORD=bench
BENCH_DB=bench

# pgbench flags per workload name.
declare -A WORKLOAD_FLAGS=(
    [select-simple]="-M simple -S"
    [select-extended]="-M extended -S"
    [tpcb-simple]="-M simple"
    [select-prepared]="-M prepared -S"
)

# Runtime state, filled in as things start (used by cleanup).
TMP=""
PRIMARY_DATA=""
REPLICA_DATA=()       # data dirs of started replicas
POOLER_PIDS=()        # pgbouncer / pgmux pids
PGBENCH_PID=""        # pgbench run in progress
PROBLEMS=0            # failed pooler starts / pooler deaths / failed pgbench runs
USED_PORTS=()
AS_PG=()              # command prefix to run something as the postgres user

# Benchmark targets, parallel arrays: name, port, pooler pid ("" = direct).
TARGET_NAMES=()
TARGET_PORTS=()
TARGET_PIDS=()
TARGET_DEAD=()        # 1 once a pooler died mid-benchmark

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
# log, warn, die, as_pg, show_log, is_port_in_use, wait_for_sql, stop_pid, median,
# find_pg_bindir, ensure_pgbouncer
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# free_port VAR: store an unused loopback TCP port (never handed out twice) in VAR.
free_port() {
    local -n _fp_result=$1   # nameref: keep local names distinct from the caller's
    local _fp_port _fp_attempt
    for _fp_attempt in $(seq 1 500); do
        _fp_port=$(( 20000 + RANDOM % 40000 ))
        [[ " ${USED_PORTS[*]-} " == *" $_fp_port "* ]] && continue
        if ! is_port_in_use "$_fp_port"; then
            USED_PORTS+=("$_fp_port")
            _fp_result=$_fp_port
            return 0
        fi
    done
    die "could not find a free TCP port"
}

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

# ---------------------------------------------------------------------------
# Setup steps
# ---------------------------------------------------------------------------
check_knobs() {
    local knob
    for knob in CLIENTS JOBS POOL DURATION ROUNDS SCALE REPLICAS; do
        [[ ${!knob} =~ ^[0-9]+$ ]] || die "$knob must be a non-negative integer (got '${!knob}')"
    done
    (( CLIENTS > 0 && POOL > 0 && DURATION > 0 && ROUNDS > 0 && SCALE > 0 )) \
        || die "CLIENTS, POOL, DURATION, ROUNDS and SCALE must be > 0"
    local w
    for w in $WORKLOADS; do
        [[ -n ${WORKLOAD_FLAGS[$w]+x} ]] || die "unknown workload '$w' (known: ${!WORKLOAD_FLAGS[*]})"
    done
}

# The primary as benches/lib.sh sets it up, and the "direct" target.
setup_direct() {
    setup_primary
    add_target direct "$PG_PORT" ""
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

start_pgbouncer() {
    local port dir=$TMP/pgbouncer pid
    free_port port
    mkdir -p "$dir"
    printf '"%s" "%s"\n' "$BENCH_USER" "$BENCH_PASSWORD" >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = scram-sha-256
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = 10000
max_db_connections = 0
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
    if [[ $TLS == 1 ]]; then
        printf 'client_tls_sslmode = require\nclient_tls_cert_file = %s\nclient_tls_key_file = %s\n' \
            "$TMP/tls/cert.pem" "$TMP/tls/key.pem" >>"$dir/pgbouncer.ini"
    fi
    if [[ $EUID -eq 0 ]]; then chown -R postgres: "$dir"; fi
    log "starting pgbouncer $("$PGBOUNCER_BIN" --version | head -n 1 | awk '{print $2}') (port $port)"
    # Not via the as_pg function: a backgrounded function is a subshell, and
    # we need $! to be pgbouncer itself (setpriv execs it).
    ${AS_PG[@]+"${AS_PG[@]}"} "$PGBOUNCER_BIN" "$dir/pgbouncer.ini" >"$dir/stdout.log" 2>&1 &
    pid=$!
    POOLER_PIDS+=("$pid")
    wait_for_sql pgbouncer "$port" "$pid" "$dir/pgbouncer.log" || die "pgbouncer failed to start"
    # The CPU numbers are only meaningful if we watch the right process.
    if [[ -f $dir/pgbouncer.pid && $(<"$dir/pgbouncer.pid") != "$pid" ]]; then
        die "pgbouncer pidfile says $(<"$dir/pgbouncer.pid") but we started pid $pid"
    fi
    add_target pgbouncer "$port" "$pid"
}

# start_pgmux NAME [REPLICA_PORT...]: start a pgmux instance; on failure warn
# and skip the target (the other targets still run).
start_pgmux() {
    local name=$1; shift
    local port mport dir=$TMP/$name pid replicas="" p
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
    password: $BENCH_PASSWORD
databases:
  $BENCH_DB:
    primary: 127.0.0.1:$PG_PORT
$replicas
EOF
    log "starting $name (port $port, metrics $mport)"
    PGMUX_LOG=$PGMUX_LOG "$PGMUX_BIN" --config "$dir/pgmux.yaml" >"$dir/pgmux.log" 2>&1 &
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

# ---------------------------------------------------------------------------
# Benchmark
# ---------------------------------------------------------------------------
CSV_HEADER="workload,pgbench_flags,target,round,clients,jobs,pool,duration_s,scale,tps,transactions,failed_transactions,pooler_cpu_s,pooler_cpu_us_per_txn,pgbench_exit,pooler_sys_s"

# run_one WORKLOAD ROUND TARGET_INDEX: one pgbench run, appends a CSV row.
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

run_one() {
    local workload=$1 round=$2 idx=$3
    local name=${TARGET_NAMES[$idx]} port=${TARGET_PORTS[$idx]} pid=${TARGET_PIDS[$idx]}
    local flags=${WORKLOAD_FLAGS[$workload]}
    local out=$TMP/pgbench-$workload-$name-$round.log
    local t0="" t1="" status tps txns failed cpu_s="" cpu_us="" sys_s=""

    if [[ ${TARGET_DEAD[$idx]} == 1 ]]; then
        return 0
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
    # shellcheck disable=SC2086  # $flags is a list of pgbench options
    local sslmode=prefer
    if [[ $TLS == 1 && $name != direct ]]; then sslmode=require; fi
    PGSSLMODE=$sslmode PGPASSWORD=$BENCH_PASSWORD "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "$port" -U "$BENCH_USER" \
        -c "$CLIENTS" -j "$JOBS" -T "$DURATION" -n $flags "$BENCH_DB" >"$out" 2>&1 &
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
            show_log "$(ls "$TMP/$name"/*.log 2>/dev/null | head -n 1)"
            TARGET_DEAD[$idx]=1
        fi
    fi

    if [[ -n $commits_before ]]; then
        log "$name round $round: transactions by node (pg_stat_database.xact_commit, incl. the monitor's checks): $(spread "$commits_before" "$(node_commits)")"
    fi
    tps=$(sed -n 's/^tps = \([0-9.]*\) (without initial connection time)$/\1/p' "$out" | head -n 1)
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out" | head -n 1)
    failed=$(sed -n 's/^number of failed transactions: \([0-9]*\).*/\1/p' "$out" | head -n 1)
    if [[ -n $cpu_s && -n $txns && $txns -gt 0 ]]; then
        cpu_us=$(awk -v c="$cpu_s" -v n="$txns" 'BEGIN { printf "%.3f", c * 1e6 / n }')
    fi
    if (( status != 0 )) || [[ -z $tps ]]; then
        warn "pgbench against $name exited with status $status"
        PROBLEMS=$(( PROBLEMS + 1 ))
        show_log "$out"
    fi
    log "$(printf '%-16s %-15s round %d: tps=%-12s txns=%-9s cpu=%ss (sys %ss)  cpu/txn=%sus' \
        "$workload" "$name" "$round" "${tps:-NA}" "${txns:-NA}" "${cpu_s:--}" "${sys_s:--}" "${cpu_us:--}")"
    echo "$workload,$flags,$name,$round,$CLIENTS,$JOBS,$POOL,$DURATION,$SCALE,$tps,$txns,$failed,$cpu_s,$cpu_us,$status,$sys_s" >>"$OUT"
}

run_benchmarks() {
    local workload round idx
    for workload in $WORKLOADS; do
        log "=== workload $workload (pgbench ${WORKLOAD_FLAGS[$workload]}) ==="
        for (( round = 1; round <= ROUNDS; round++ )); do
            for idx in "${!TARGET_NAMES[@]}"; do
                run_one "$workload" "$round" "$idx"
            done
        done
    done
}

# csv_median WORKLOAD TARGET COLUMN: median of a CSV column for one workload/target.
csv_median() {
    awk -F, -v w="$1" -v t="$2" -v c="$3" \
        'NR > 1 && $1 == w && $3 == t && $c != "" { print $c }' "$OUT" | median
}

# csv_median_share WORKLOAD TARGET PART_COLUMN WHOLE_COLUMN: median of 100*part/whole.
csv_median_share() {
    awk -F, -v w="$1" -v t="$2" -v p="$3" -v c="$4" \
        'NR > 1 && $1 == w && $3 == t && $p != "" && $c + 0 > 0 { print 100 * $p / $c }' "$OUT" | median
}

# ratio A B: A/B with 3 decimals, "-" when either is missing or B is 0.
ratio() {
    awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b != "" && b + 0 > 0) printf "%.3f", a / b; else print "-" }'
}

# fmt VALUE PRINTF_FORMAT PLACEHOLDER: format a number, or PLACEHOLDER if empty.
fmt() {
    awk -v a="$1" -v f="$2" -v p="$3" 'BEGIN { if (a != "") printf f, a; else print p }'
}

print_report() {
    local workload name tps direct_tps cpu sys
    local -A med_tps med_cpu
    echo
    echo "pgbench comparison: clients=$CLIENTS jobs=$JOBS pool=$POOL duration=${DURATION}s rounds=$ROUNDS scale=$SCALE replicas=$REPLICAS cpus=$(nproc)"
    echo "(medians over rounds; 'CPU us/txn' = pooler process CPU time per transaction; 'sys' = its share spent in the kernel)"
    for workload in $WORKLOADS; do
        med_tps=(); med_cpu=()
        echo
        echo "== $workload (pgbench ${WORKLOAD_FLAGS[$workload]}) =="
        printf '%-16s %12s %10s %12s %6s\n' target "median TPS" "vs direct" "CPU us/txn" sys
        direct_tps=$(csv_median "$workload" direct 10)
        for name in "${TARGET_NAMES[@]}"; do
            tps=$(csv_median "$workload" "$name" 10)
            cpu=$(csv_median "$workload" "$name" 14)
            sys=$(csv_median_share "$workload" "$name" 16 13)
            med_tps[$name]=$tps; med_cpu[$name]=$cpu
            printf '%-16s %12s %10s %12s %6s\n' "$name" "$(fmt "$tps" %.1f NA)" \
                "$(ratio "$tps" "$direct_tps")" "$(fmt "$cpu" %.2f -)" "$(fmt "$sys" %.0f%% -)"
        done
        if [[ -n ${med_tps[pgmux]:-} && -n ${med_tps[pgbouncer]:-} ]]; then
            printf 'pgmux/pgbouncer: TPS %s, CPU us/txn %s\n' \
                "$(ratio "${med_tps[pgmux]}" "${med_tps[pgbouncer]}")" \
                "$(ratio "${med_cpu[pgmux]:-}" "${med_cpu[pgbouncer]:-}")"
        else
            echo "pgmux/pgbouncer: n/a (pgmux not benchmarked)"
        fi
    done
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

    find_pg_bindir pg_basebackup
    ensure_pgbouncer

    mkdir -p "$(dirname "$OUT")"
    echo "$CSV_HEADER" >"$OUT"

    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_tmpdir pgmux-bench
    log "temp dir $TMP; PostgreSQL $("$PG_BINDIR/postgres" --version | awk '{print $3}'); $(nproc) CPUs"

    setup_direct
    if (( REPLICAS > 0 )); then setup_replicas; fi
    if [[ $TLS == 1 ]]; then
        mkdir -p "$TMP/tls"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj /CN=localhost \
            -keyout "$TMP/tls/key.pem" -out "$TMP/tls/cert.pem" >/dev/null 2>&1 || die "openssl could not make a certificate"
        if [[ $EUID -eq 0 ]]; then chown -R postgres: "$TMP/tls"; fi
        log "TLS: clients reach the poolers with sslmode=require"
    fi
    start_pgbouncer
    if [[ -x $PGMUX_BIN ]]; then
        start_pgmux pgmux
        if (( REPLICAS > 0 )); then start_pgmux pgmux-replicas "${REPLICA_PORTS[@]}"; fi
    else
        warn "SKIPPING pgmux: PGMUX_BIN=$PGMUX_BIN does not exist (build it with 'cargo build --release')"
    fi

    run_benchmarks
    print_report
    if (( PROBLEMS > 0 )); then
        warn "$PROBLEMS problem(s) during the benchmark (see warnings above); exiting with status 2"
        exit 2
    fi
}

main "$@"
