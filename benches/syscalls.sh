#!/usr/bin/env bash
#
# syscalls.sh - system calls per transaction of PgBouncer and pgmux ("where the
# time goes", issue #17 item 5), and optionally a CPU profile of each.
#
# In a throw-away temp dir: a PostgreSQL primary as benches/lib.sh sets it up,
# PgBouncer and pgmux in transaction mode (pool $POOL, SCRAM), then for each
# target, on the same running pooler:
#   pgbench -n <workload flags> -c $CLIENTS -j $JOBS -t $T_SHORT, then -t $T_LONG,
# each traced with `perf trace -s -p PID` (or `strace -c -f -p PID` with
# TOOL=strace: slower, the same counts). The logins of pgbench's $CLIENTS
# connections are in both runs, so
#   calls per transaction = (calls_long - calls_short) / ($CLIENTS * ($T_LONG - $T_SHORT))
# per system call, with the failed ones (EAGAIN) separately. Tracing slows the
# pooler: read the counts, not the times.
#
# With PROFILE=1, each pooler is also sampled untraced (`perf record -e cpu-clock
# -p PID` during pgbench -T $DURATION): the kernel's share of its samples, and its
# hottest symbols.
#
# Targets `relay-epoll` and `relay-uring` are examples/relay_floor.rs: a relay
# that gives each client its own upstream connection and copies bytes, nothing
# else, with readiness I/O (epoll: what pgmux and PgBouncer do) or with io_uring
# (every socket's recv always queued, all submissions of a loop in one
# io_uring_enter). They are the floor under any pooler's kernel work, and what
# batching submissions across connections changes in it. `relay-hybrid` has the
# uring relay's operations with an epoll loop that waits (the ring's descriptor in
# the epoll set): io_uring beside an epoll event loop such as tokio's. They are built if
# missing (cargo build --release --example relay_floor).
#
# CPU per transaction comes from $CPU_ROUNDS untraced runs of -t $T_LONG per
# target, interleaved (target 1, target 2, ..., target 1, ...): the median, and
# each target's median over rounds of its ratio to the first target's CPU in the
# same round, with the lowest and highest.
#
# Knobs (environment variables):
#   WORKLOAD=select   select | extended | prepared | tpcb (as benches/callgrind.sh),
#                     or connect (-C: a login per transaction, so per connection)
#   TARGETS="pgbouncer pgmux"   also relay-epoll, relay-uring, relay-hybrid
#   CPU_ROUNDS=1      interleaved untraced runs per target for CPU per transaction
#   CLIENTS=50 JOBS=2 POOL=10 SCALE=10
#   T_SHORT=200       transactions per client of the short run (-t)
#   T_LONG=1000       transactions per client of the long run (-t)
#   TOOL=perf         perf | strace
#   PROFILE=0         1 = also perf record each pooler for $DURATION s
#   DURATION=10
#   PGMUX_BIN=target/release/pgmux   PGMUX_EXTRA=""   PGMUX_ENV=""
#   RELAY_BIN=target/release/examples/relay_floor
#   PG_BINDIR=$(pg_config --bindir)  PGBOUNCER_BIN=pgbouncer   KEEP_TMP=0
#
# Example: benches/syscalls.sh
#          TARGETS="pgbouncer pgmux relay-epoll relay-uring" CPU_ROUNDS=5 benches/syscalls.sh
#          PROFILE=1 PGMUX_EXTRA="workers: 2" benches/syscalls.sh
#
# Needs perf with tracepoints (perf trace; as root) or strace. Exit status: 0 =
# all counted; 2 = some target failed; 1 = setup error.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

WORKLOAD=${WORKLOAD:-select}
TARGETS=${TARGETS:-pgbouncer pgmux}
CLIENTS=${CLIENTS:-50}
JOBS=${JOBS:-2}
POOL=${POOL:-10}
SCALE=${SCALE:-10}
T_SHORT=${T_SHORT:-200}
T_LONG=${T_LONG:-1000}
TOOL=${TOOL:-perf}
PROFILE=${PROFILE:-0}
CPU_ROUNDS=${CPU_ROUNDS:-1}
DURATION=${DURATION:-10}
PGMUX_BIN=${PGMUX_BIN:-$REPO_ROOT/target/release/pgmux}
PGMUX_EXTRA=${PGMUX_EXTRA:-}
PGMUX_ENV=${PGMUX_ENV:-}
RELAY_BIN=${RELAY_BIN:-$REPO_ROOT/target/release/examples/relay_floor}
KEEP_TMP=${KEEP_TMP:-0}


POOLER_PIDS=()
TRACER_PID=""
PROBLEMS=0
declare -A P_PID P_PORT CPU_US SYS_SHARE CPU_RUNS
declare -A CALLS ERRS   # "target:t:syscall" -> count
declare -A RATIO RANGE  # target -> CPU ratio to the first target, its range

# log, warn, die, as_pg, show_log, is_port_in_use, free_port, wait_for_sql,
# stop_pid, find_pg_bindir, ensure_pgbouncer, make_tmpdir, setup_primary
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
    local status=$? pid
    set +e
    trap - EXIT INT TERM
    [[ -n $TRACER_PID ]] && kill -INT "$TRACER_PID" 2>/dev/null && sleep 1
    for pid in "${POOLER_PIDS[@]}"; do stop_pid "$pid"; done
    remove_primary_and_tmp
    exit "$status"
}

check_knobs() {
    require_positive CLIENTS JOBS T_SHORT T_LONG POOL SCALE DURATION CPU_ROUNDS
    check_pair_knobs pgbouncer pgmux relay-epoll relay-uring relay-hybrid
    case $TOOL in
        perf) perf trace -s -- true >/dev/null 2>&1 || die "perf trace does not work here (root? tracefs?); try TOOL=strace" ;;
        strace) command -v strace >/dev/null 2>&1 || die "strace is not installed" ;;
        *) die "TOOL must be perf or strace" ;;
    esac
    if (( PROFILE )); then perf record -e cpu-clock -o /dev/null -- true >/dev/null 2>&1 || die "perf record does not work here"; fi
}

start_pgbouncer() {
    local dir=$TMP/pgbouncer port pid
    free_port port
    mkdir -p "$dir"
    write_pgbouncer_ini "$dir" "$port" "$BENCH_PASSWORD" scram-sha-256 1000
    if [[ $EUID -eq 0 ]]; then chown -R postgres: "$dir"; fi
    ${AS_PG[@]+"${AS_PG[@]}"} "$PGBOUNCER_BIN" "$dir/pgbouncer.ini" >"$dir/stdout.log" 2>&1 &
    pid=$!
    POOLER_PIDS+=("$pid")
    wait_for_sql pgbouncer "$port" "$pid" "$dir/pgbouncer.log" || die "pgbouncer failed to start"
    P_PID[pgbouncer]=$pid; P_PORT[pgbouncer]=$port
}

start_pgmux() {
    local dir=$TMP/pgmux port pid
    [[ -x $PGMUX_BIN ]] || die "PGMUX_BIN=$PGMUX_BIN does not exist (cargo build --release)"
    free_port port
    mkdir -p "$dir"
    cat >"$dir/pgmux.yaml" <<EOF
listen: 127.0.0.1:$port
max_client_connections: 1000
$PGMUX_EXTRA
pool:
  mode: transaction
  size: $POOL
users:
  - name: $BENCH_USER
    password: $BENCH_PASSWORD
databases:
  $BENCH_DB:
    primary: 127.0.0.1:$PG_PORT
EOF
    # shellcheck disable=SC2086  # PGMUX_ENV is a list of VAR=value words
    env PGMUX_LOG=warn $PGMUX_ENV "$PGMUX_BIN" --config "$dir/pgmux.yaml" >"$dir/pgmux.log" 2>&1 &
    pid=$!
    POOLER_PIDS+=("$pid")
    wait_for_sql pgmux "$port" "$pid" "$dir/pgmux.log" || die "pgmux failed to start"
    P_PID[pgmux]=$pid; P_PORT[pgmux]=$port
}

# start_relay MODE: examples/relay_floor.rs in MODE (epoll, uring, hybrid), target relay-MODE.
start_relay() {
    local mode=$1 name=relay-$1 dir=$TMP/relay-$1 port pid
    if [[ ! -x $RELAY_BIN ]]; then
        log "building examples/relay_floor.rs"
        (cd "$REPO_ROOT" && cargo build --release --quiet --example relay_floor) || die "cannot build the relay"
    fi
    free_port port
    mkdir -p "$dir"
    "$RELAY_BIN" "$mode" "$port" "$PG_PORT" >"$dir/relay.log" 2>&1 &
    pid=$!
    POOLER_PIDS+=("$pid")
    wait_for_sql "$name" "$port" "$pid" "$dir/relay.log" || die "the $mode relay failed to start"
    P_PID[$name]=$pid; P_PORT[$name]=$port
}
start_relay-epoll() { start_relay epoll; }
start_relay-uring() { start_relay uring; }
start_relay-hybrid() { start_relay hybrid; }

# pgbench_run NAME ARGS...: pgbench through the pooler, output to $TMP/pgbench-NAME-*.log
pgbench_run() {
    local name=$1; shift
    local out=$TMP/pgbench-$name-$(date +%s%N).log
    # shellcheck disable=SC2086  # the workload's flags are a list of options
    if ! PGPASSWORD=$BENCH_PASSWORD "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "${P_PORT[$name]}" -U "$BENCH_USER" -n \
        ${PGBENCH_WORKLOADS[$WORKLOAD]} -c "$CLIENTS" -j "$JOBS" "$@" "$BENCH_DB" >"$out" 2>&1; then
        warn "pgbench through $name failed"; show_log "$out"; PROBLEMS=$(( PROBLEMS + 1 ))
    fi
    echo "$out"
}

# trace NAME T: system calls of the pooler during pgbench -t T; fills CALLS/ERRS[NAME:T:*].
trace() {
    local name=$1 t=$2 pid=${P_PID[$1]} out=$TMP/trace-$1-$2.txt
    case $TOOL in
        perf) perf trace -s -p "$pid" -o "$out" >/dev/null 2>&1 & ;;
        strace) strace -c -f -p "$pid" -o "$out" >/dev/null 2>&1 & ;;
    esac
    TRACER_PID=$!
    sleep 1
    pgbench_run "$name" -t "$t" >/dev/null
    sleep 0.5
    kill -INT "$TRACER_PID" 2>/dev/null || true
    wait "$TRACER_PID" 2>/dev/null || true
    TRACER_PID=""
    local line sc calls errs
    while read -r sc calls errs; do
        CALLS[$name:$t:$sc]=$calls; ERRS[$name:$t:$sc]=$errs
    done < <(parse_trace "$out")
    log "$name -t $t: $(awk '{ c += $2 } END { print c + 0 }' < <(parse_trace "$out")) system calls traced"
}

# parse_trace FILE: "syscall calls errors" per system call, summed over threads.
parse_trace() {
    case $TOOL in
        perf) awk '
            $1 ~ /^[a-z_0-9]+$/ && $2 ~ /^[0-9]+$/ && $3 ~ /^[0-9]+$/ && NF >= 8 { c[$1] += $2; e[$1] += $3 }
            END { for (s in c) print s, c[s], e[s] }' "$1" ;;
        strace) awk '
            $NF ~ /^[a-z_0-9]+$/ && $1 ~ /^[0-9.]+$/ && NF >= 5 && $NF != "total" {
                if (NF == 6) { c[$NF] += $4; e[$NF] += $5 } else { c[$NF] += $4 } }
            END { for (s in c) print s, c[s], e[s] + 0 }' "$1" ;;
    esac
}

# cpu_us NAME: pooler CPU µs per transaction, and its kernel share, over an
# untraced pgbench -t $T_LONG (logins included).
cpu_run() {
    local name=$1 pid=${P_PID[$1]} a b out txns
    a=$(awk '{ sub(/.*\) /, ""); split($0, f, " "); print f[12], f[13] }' "/proc/$pid/stat")
    out=$(pgbench_run "$name" -t "$T_LONG")
    b=$(awk '{ sub(/.*\) /, ""); split($0, f, " "); print f[12], f[13] }' "/proc/$pid/stat")
    txns=$(sed -n 's/^number of transactions actually processed: \([0-9]*\).*/\1/p' "$out")
    CPU_RUNS[$name]+="$(awk -v a="$a" -v b="$b" -v n="${txns:-0}" -v hz="$(getconf CLK_TCK)" 'BEGIN {
        split(a, x, " "); split(b, y, " "); if (n > 0) printf "%.1f", (y[1] + y[2] - x[1] - x[2]) / hz * 1e6 / n }') "
    SYS_SHARE[$name]+="$(awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " "); t = y[1] + y[2] - x[1] - x[2]; if (t > 0) printf "%.3f", (y[2] - x[2]) / t }') "
}

# cpu_summary: CPU_US (median µs and kernel share) per target, and the ratio row
# against the first target (median of per-round ratios [lowest-highest]).
cpu_summary() {
    local name first=${TARGETS%% *} share
    for name in $TARGETS; do
        CPU_US[$name]=$(tr ' ' '\n' <<<"${CPU_RUNS[$name]}" | median)
        share=$(tr ' ' '\n' <<<"${SYS_SHARE[$name]}" | median)
        SYS_SHARE[$name]=$(awk -v s="$share" 'BEGIN { printf "%.0f%%", 100 * s }')
        RATIO[$name]=$(paste -d' ' <(tr ' ' '\n' <<<"${CPU_RUNS[$name]}") <(tr ' ' '\n' <<<"${CPU_RUNS[$first]}") \
            | awk 'NF == 2 && $2 > 0 { print $1 / $2 }' | median)
        RANGE[$name]=$(paste -d' ' <(tr ' ' '\n' <<<"${CPU_RUNS[$name]}") <(tr ' ' '\n' <<<"${CPU_RUNS[$first]}") \
            | awk 'NF == 2 && $2 > 0 { r = $1 / $2; if (!n++ || r < lo) lo = r; if (r > hi) hi = r }
                   END { if (n) printf "%.2f-%.2f", lo, hi }')
    done
}

profile() {
    local name=$1 pid=${P_PID[$1]} data=$TMP/perf-$1.data
    perf record -e cpu-clock -F 2000 -g -p "$pid" -o "$data" >/dev/null 2>&1 &
    TRACER_PID=$!
    sleep 0.5
    pgbench_run "$name" -T "$DURATION" >/dev/null
    kill -INT "$TRACER_PID" 2>/dev/null || true
    wait "$TRACER_PID" 2>/dev/null || true
    TRACER_PID=""
    echo
    echo "-- $name: perf record -e cpu-clock during pgbench -T $DURATION (self time; [k] = kernel) --"
    # awk reads everything (head would end perf report with SIGPIPE under pipefail).
    perf report -i "$data" --no-children --sort dso --stdio 2>/dev/null | awk '/^ +[0-9.]+%/ && n++ < 6'
    perf report -i "$data" --no-children --sort sym --stdio -g none 2>/dev/null | awk '/^ +[0-9.]+%/ && n++ < 20'
    echo "(in a VM without a PMU, cpu-clock samples taken while interrupts are off land where they are turned back on: _raw_spin_unlock_irqrestore, finish_task_switch)"
}

main() {
    check_knobs
    [[ $PGMUX_BIN == /* ]] || PGMUX_BIN=$PWD/$PGMUX_BIN
    find_pg_bindir
    if [[ " $TARGETS " == *" pgbouncer "* ]]; then ensure_pgbouncer; fi
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_tmpdir pgmux-syscalls
    setup_primary

    local name txns=$(( CLIENTS * (T_LONG - T_SHORT) ))
    for name in $TARGETS; do
        "start_$name"
        pgbench_run "$name" -t 10 >/dev/null    # fills the pool
        trace "$name" "$T_SHORT"
        trace "$name" "$T_LONG"
    done
    local round
    for (( round = 1; round <= CPU_ROUNDS; round++ )); do
        for name in $TARGETS; do cpu_run "$name"; done
    done
    cpu_summary

    echo
    echo "system calls per transaction: pgbench -n ${PGBENCH_WORKLOADS[$WORKLOAD]} -c $CLIENTS -j $JOBS, -t $T_LONG minus -t $T_SHORT = $txns transactions, pool $POOL, traced with $TOOL; $(date '+%F %T'), $(nproc) CPUs, loadavg $(cut -d' ' -f1-3 /proc/loadavg)$( [[ " $TARGETS " == *" pgmux "* ]] && echo ", pgmux $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')${PGMUX_EXTRA:+ ($PGMUX_EXTRA)}")"
    echo "(calls/txn; in brackets the failed ones, e.g. EAGAIN; CPU: pooler CPU per transaction, median of $CPU_ROUNDS interleaved untraced runs of -t $T_LONG, with its kernel share; then its ratio to the first target's, median of the rounds' [lowest-highest])"
    local sc all=() k
    for k in "${!CALLS[@]}"; do all+=("${k##*:}"); done
    mapfile -t all < <(printf '%s\n' "${all[@]}" | sort -u)
    printf '%-18s' syscall; for name in $TARGETS; do printf ' %20s' "$name"; done; echo
    for sc in "${all[@]}"; do
        local line row_max=0 cells=()
        for name in $TARGETS; do
            local c e
            c=$(awk -v a="${CALLS[$name:$T_SHORT:$sc]:-0}" -v b="${CALLS[$name:$T_LONG:$sc]:-0}" -v n="$txns" 'BEGIN { printf "%.3f", (b - a) / n }')
            e=$(awk -v a="${ERRS[$name:$T_SHORT:$sc]:-0}" -v b="${ERRS[$name:$T_LONG:$sc]:-0}" -v n="$txns" 'BEGIN { printf "%.3f", (b - a) / n }')
            if [[ $e == 0.000 || $e == -0.000 ]]; then cells+=("$c"); else cells+=("$c [$e]"); fi
            awk -v c="$c" 'BEGIN { exit !(c >= 0.005 || c <= -0.005) }' && row_max=1
        done
        (( row_max )) || continue
        printf '%-18s' "$sc"; for line in "${cells[@]}"; do printf ' %20s' "$line"; done; echo
    done
    printf '%-18s' total
    for name in $TARGETS; do
        printf ' %20s' "$(for sc in "${all[@]}"; do echo "${CALLS[$name:$T_SHORT:$sc]:-0} ${CALLS[$name:$T_LONG:$sc]:-0}"; done \
            | awk -v n="$txns" '{ d += $2 - $1 } END { printf "%.2f", d / n }')"
    done
    echo
    printf '%-18s' "CPU us/txn (sys)"; for name in $TARGETS; do printf ' %20s' "${CPU_US[$name]:-?} (${SYS_SHARE[$name]:-?})"; done; echo
    printf '%-18s' "CPU / ${TARGETS%% *}"; for name in $TARGETS; do printf ' %20s' "$(printf '%.3f' "${RATIO[$name]:-0}") [${RANGE[$name]:-?}]"; done; echo

    if (( PROFILE )); then
        for name in $TARGETS; do profile "$name"; done
    fi
    if (( PROBLEMS > 0 )); then
        warn "$PROBLEMS problem(s); exiting with status 2"
        exit 2
    fi
}

main "$@"
