#!/usr/bin/env bash
#
# callgrind.sh - instructions per transaction of pgmux (and optionally PgBouncer),
# counted by valgrind --tool=callgrind: the figure to quote before and after every
# change to the hot path (a count of instructions does not move with the load of
# a shared machine, as TPS and CPU time do).
#
# Method (the README's): in a throw-away temp dir, a PostgreSQL primary as
# benches/lib.sh sets it up (pgbench -i -s $SCALE); then, for each target, two
# separate pooler processes, each run under
#   valgrind --tool=callgrind
# in front of that primary, one serving
#   pgbench -n <workload flags> -c $CLIENTS -j $JOBS -t $T_SHORT
# and the other the same with -t $T_LONG; each pooler is then stopped (SIGTERM)
# and its instruction count (Ir) read from the callgrind output. Instructions are
# counted from just before pgbench starts (valgrind --instr-atstart=no, then
# `callgrind_control -i on` once a psql `select 1` has gone through the pooler)
# to the exit: start-up is left out, as it is not the same from one process to
# the next (the metrics recorder's clock calibration, quanta::Calibration, loops
# until the clock looks stable: 0.6-1.9 M instructions, which moved the old
# whole-process difference by +-15%). The $CLIENTS logins, the pool's server
# logins and shutdown are the same in both runs, so
#   Ir per transaction = (Ir_long - Ir_short) / ($CLIENTS * ($T_LONG - $T_SHORT))
# (default: (Ir_120 - Ir_40) / 4,000). Both poolers are given the role's SCRAM
# verifier from pg_authid as its password (as pgbench_compare.sh does), so that
# neither runs PBKDF2 at each login (PgBouncer with a plaintext password spends
# ~75 M instructions per login on it: it cancels out, but takes minutes under
# valgrind). What is left in the difference besides
# transactions: the pooler's timers (pgmux's upkeep runs once a second, and the
# longer run lasts longer under valgrind), a few thousand instructions a second,
# and how waiting clients happen to be woken (50 clients, pool 10): run it
# twice, or REPEAT=3 for the median of three pairs with their range.
#
# Prints one line per target, then pgmux/PgBouncer when both ran.
#
# Knobs (environment variables):
#   WORKLOAD=select   select   = pgbench -M simple -S
#                     extended = pgbench -M extended -S
#                     prepared = pgbench -M prepared -S (PgBouncer 1.18 fails it)
#                     tpcb     = pgbench -M simple (TPC-B-like read/write)
#   TARGETS=pgmux     "pgmux pgbouncer" to count PgBouncer too (Debian's
#                     package, installed with apt-get if missing + root)
#   CLIENTS=50        pgbench client connections (-c)
#   JOBS=2            pgbench worker threads (-j)
#   T_SHORT=40        transactions per client of the short run (-t)
#   T_LONG=120        transactions per client of the long run (-t)
#   REPEAT=1          pairs of runs per target; the median is printed, with the range
#   AUTH=scram        scram | md5: how clients log in (md5: both poolers get the
#                     plaintext password and auth_type md5, and PostgreSQL trusts
#                     their own logins from 127.0.0.1, so that neither runs PBKDF2
#                     for a server connection, whose number varies between runs;
#                     for WORKLOAD=connect)
#   POOL=10           server connections per pool
#   SCALE=10          pgbench -i scale factor
#   PGMUX_BIN=target/release/pgmux (relative to the repo root; a release build
#                     with debug info, as Cargo.toml's release profile makes it)
#   PGMUX_EXTRA=""    extra top-level YAML for pgmux's config (e.g. "workers: 2")
#   PGMUX_ENV=""      extra environment for pgmux
#   VALGRIND_ARGS=""  extra valgrind arguments
#   PG_BINDIR=$(pg_config --bindir)   PostgreSQL server/client binaries
#   PGBOUNCER_BIN=pgbouncer
#   KEEP_TMP=0        1 = keep the temp dir (callgrind.out files, for
#                     callgrind_annotate, and logs)
#
# Example: benches/callgrind.sh
#          TARGETS="pgmux pgbouncer" WORKLOAD=extended benches/callgrind.sh
#
# Exit status: 0 = every count taken; 2 = some target failed (the others are
# printed); 1 = setup error. Takes about a minute per target on 2 cores.

set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

WORKLOAD=${WORKLOAD:-select}
TARGETS=${TARGETS:-pgmux}
CLIENTS=${CLIENTS:-50}
JOBS=${JOBS:-2}
T_SHORT=${T_SHORT:-40}
T_LONG=${T_LONG:-120}
REPEAT=${REPEAT:-1}
POOL=${POOL:-10}
SCALE=${SCALE:-10}
PGMUX_BIN=${PGMUX_BIN:-$REPO_ROOT/target/release/pgmux}
PGMUX_EXTRA=${PGMUX_EXTRA:-}
PGMUX_ENV=${PGMUX_ENV:-}
VALGRIND_ARGS=${VALGRIND_ARGS:-}
KEEP_TMP=${KEEP_TMP:-0}


POOLER_PID=""
PROBLEMS=0
declare -A IR   # "target:t:rep" -> Ir
VERIFIER=""
AUTH=${AUTH:-scram}

# log, warn, die, as_pg, show_log, is_port_in_use, free_port, wait_for_sql,
# stop_pid, find_pg_bindir, ensure_pgbouncer, make_tmpdir, setup_primary
# shellcheck source=benches/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

cleanup() {
    local status=$?
    set +e
    trap - EXIT INT TERM
    [[ -n $POOLER_PID ]] && stop_pid "$POOLER_PID"
    remove_primary_and_tmp
    exit "$status"
}

check_knobs() {
    require_positive CLIENTS JOBS T_SHORT T_LONG POOL SCALE REPEAT
    [[ $AUTH == scram || $AUTH == md5 ]] || die "AUTH must be scram or md5"
    check_pair_knobs
    command -v valgrind >/dev/null 2>&1 || {
        [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1 || die "valgrind is not installed"
        log "installing valgrind with apt-get"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind >/dev/null
    }
}

# callgrind_ir FILE: the total instruction count of a callgrind output file.
callgrind_ir() {
    awk '/^summary:/ { print $2; found = 1; exit } /^totals:/ { t = $2 } END { if (!found && t != "") print t }' "$1"
}

# start_target NAME T: the pooler under callgrind, output to $TMP/callgrind.NAME.T.out;
# sets POOLER_PID and PORT.
start_target() {
    local name=$1 t=$2 dir=$TMP/$1-$2 out
    free_port PORT
    mkdir -p "$dir"
    out=$TMP/callgrind.$name.$t.out
    local vg=(valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out")
    # shellcheck disable=SC2206  # VALGRIND_ARGS is a list of words
    vg+=($VALGRIND_ARGS)
    case $name in
        pgmux)
            cat >"$dir/pgmux.yaml" <<EOF
listen: 127.0.0.1:$PORT
max_client_connections: 1000
$PGMUX_EXTRA
pool:
  mode: transaction
  size: $POOL
users:
  - name: $BENCH_USER
    password: '$(secret)'
$( [[ $AUTH == md5 ]] && echo "auth_type: md5" )
databases:
  $BENCH_DB:
    primary: 127.0.0.1:$PG_PORT
EOF
            # shellcheck disable=SC2086  # PGMUX_ENV is a list of VAR=value words
            env PGMUX_LOG=warn $PGMUX_ENV "${vg[@]}" "$PGMUX_BIN" --config "$dir/pgmux.yaml" >"$dir/pooler.log" 2>&1 &
            ;;
        pgbouncer)
            write_pgbouncer_ini "$dir" "$PORT" "$(secret)" "$( [[ $AUTH == md5 ]] && echo md5 || echo scram-sha-256 )" 1000
            if [[ $EUID -eq 0 ]]; then chown -R postgres: "$dir"; touch "$out"; chown postgres: "$out"; fi
            ${AS_PG[@]+"${AS_PG[@]}"} "${vg[@]}" "$PGBOUNCER_BIN" "$dir/pgbouncer.ini" >"$dir/pooler.log" 2>&1 &
            ;;
    esac
    POOLER_PID=$!
}

# trust_pooler_logins: PostgreSQL trusts $BENCH_USER from 127.0.0.1 (AUTH=md5).
trust_pooler_logins() {
    prepend_hba "host    all          $BENCH_USER  127.0.0.1/32     trust"
}

# secret: the password both poolers are given (the verifier, or md5's plaintext).
secret() {
    if [[ $AUTH == md5 ]]; then echo "$BENCH_PASSWORD"; else echo "$VERIFIER"; fi
}

# count NAME T REP: one pooler process under callgrind serving pgbench -t T; sets IR[NAME:T:REP].
count() {
    local name=$1 t=$2 rep=$3 status=0 ir
    start_target "$name" "$t"
    log "$name under callgrind (pid $POOLER_PID, port $PORT): pgbench ${PGBENCH_WORKLOADS[$WORKLOAD]} -c $CLIENTS -j $JOBS -t $t"
    if ! wait_for_sql "$name" "$PORT" "$POOLER_PID" "$TMP/$name-$t/pooler.log"; then
        PROBLEMS=$(( PROBLEMS + 1 )); stop_pid "$POOLER_PID"; POOLER_PID=""; return 0
    fi
    # As the pooler's user: vgdb finds valgrind's FIFOs by the user's name.
    local as=()
    [[ $name == pgbouncer ]] && as=(${AS_PG[@]+"${AS_PG[@]}"})
    if ! timeout 60 ${as[@]+"${as[@]}"} callgrind_control -i on "$POOLER_PID" >"$TMP/$name-$t/callgrind_control.log" 2>&1; then
        warn "callgrind_control could not switch on the counting in $name"
        show_log "$TMP/$name-$t/callgrind_control.log"
        PROBLEMS=$(( PROBLEMS + 1 )); stop_pid "$POOLER_PID"; POOLER_PID=""; return 0
    fi
    # shellcheck disable=SC2086  # the workload's flags are a list of options
    PGPASSWORD=$BENCH_PASSWORD "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "$PORT" -U "$BENCH_USER" -n \
        ${PGBENCH_WORKLOADS[$WORKLOAD]} -c "$CLIENTS" -j "$JOBS" -t "$t" "$BENCH_DB" >"$TMP/pgbench-$name-$t.log" 2>&1 || status=$?
    if (( status != 0 )) || ! grep -q "^number of transactions actually processed: $(( CLIENTS * t ))/" "$TMP/pgbench-$name-$t.log"; then
        warn "pgbench through $name (-t $t) failed or fell short (status $status)"
        show_log "$TMP/pgbench-$name-$t.log"
        PROBLEMS=$(( PROBLEMS + 1 ))
    fi
    # SIGTERM: pgmux drains and exits, PgBouncer shuts down; valgrind then writes the counts.
    stop_pid "$POOLER_PID"
    POOLER_PID=""
    ir=$(callgrind_ir "$TMP/callgrind.$name.$t.out" 2>/dev/null || true)
    if [[ -z $ir ]]; then
        warn "no callgrind count for $name (-t $t)"
        show_log "$TMP/$name-$t/pooler.log"
        PROBLEMS=$(( PROBLEMS + 1 ))
        return 0
    fi
    IR[$name:$t:$rep]=$ir
    log "$name -t $t: Ir $ir"
}

main() {
    check_knobs
    [[ $PGMUX_BIN == /* ]] || PGMUX_BIN=$PWD/$PGMUX_BIN
    find_pg_bindir
    if [[ " $TARGETS " == *" pgbouncer "* ]]; then ensure_pgbouncer; fi
    if [[ " $TARGETS " == *" pgmux "* ]]; then
        [[ -x $PGMUX_BIN ]] || die "PGMUX_BIN=$PGMUX_BIN does not exist (cargo build --release)"
    fi
    trap cleanup EXIT
    trap 'exit 130' INT TERM
    make_tmpdir pgmux-callgrind
    setup_primary
    VERIFIER=$("$PG_BINDIR/psql" -h "$TMP/run" -p "$PG_PORT" -U postgres -d postgres -Atc \
        "select rolpassword from pg_authid where rolname = '$BENCH_USER'")
    [[ $VERIFIER == SCRAM-SHA-256\$* ]] || die "no SCRAM verifier for $BENCH_USER in pg_authid"
    if [[ $AUTH == md5 ]]; then trust_pooler_logins; fi

    local name per=() txns=$(( CLIENTS * (T_LONG - T_SHORT) ))
    local rep
    for (( rep = 1; rep <= REPEAT; rep++ )); do
        for name in $TARGETS; do
            count "$name" "$T_SHORT" "$rep"
            count "$name" "$T_LONG" "$rep"
        done
    done

    echo
    echo "callgrind: pgbench -n ${PGBENCH_WORKLOADS[$WORKLOAD]} -c $CLIENTS -j $JOBS, -t $T_LONG minus -t $T_SHORT = $txns transactions; pool $POOL; $(date '+%F %T')$( [[ " $TARGETS " == *" pgmux "* ]] && echo "; pgmux $(cd "$REPO_ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?')$(cd "$REPO_ROOT" && [[ -n $(git status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null) ]] && echo '+changes')${PGMUX_EXTRA:+ ($PGMUX_EXTRA)}")"
    declare -A PER
    local vals detail
    for name in $TARGETS; do
        vals=""; detail=""
        for (( rep = 1; rep <= REPEAT; rep++ )); do
            [[ -n ${IR[$name:$T_SHORT:$rep]:-} && -n ${IR[$name:$T_LONG:$rep]:-} ]] || continue
            vals+="$(awk -v a="${IR[$name:$T_SHORT:$rep]}" -v b="${IR[$name:$T_LONG:$rep]}" -v n="$txns" 'BEGIN { printf "%.0f", (b - a) / n }') "
            detail+="${detail:+; }Ir ${IR[$name:$T_SHORT:$rep]} at -t $T_SHORT, ${IR[$name:$T_LONG:$rep]} at -t $T_LONG"
        done
        if [[ -n $vals ]]; then
            PER[$name]=$(tr ' ' '\n' <<<"$vals" | median)
            printf '%-10s %-9s %8.0f Ir/txn   %s(%s)\n' "$name" "$WORKLOAD" "${PER[$name]}" \
                "$( (( REPEAT > 1 )) && echo "[pairs: ${vals% }] ")" "$detail"
        else
            printf '%-10s %-9s %8s\n' "$name" "$WORKLOAD" "failed"
        fi
    done
    if [[ -n ${PER[pgmux]:-} && -n ${PER[pgbouncer]:-} ]]; then
        echo "pgmux/pgbouncer: $(awk -v a="${PER[pgmux]}" -v b="${PER[pgbouncer]}" 'BEGIN { printf "%.2f", a / b }')"
    fi
    if (( PROBLEMS > 0 )); then
        warn "$PROBLEMS problem(s); exiting with status 2"
        exit 2
    fi
}

main "$@"
