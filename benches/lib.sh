# lib.sh - helpers shared by the benchmark scripts (sourced, not run).
#
# It sets the globals every script shares (below); the helpers read them and the
# sourcing script's PG_BINDIR and SCALE when called: free_port adds to USED_PORTS,
# make_tmpdir sets TMP and AS_PG, setup_primary sets PG_PORT and PRIMARY_DATA.

# State every bench script shares (set here, filled in by the functions below):
# the bench role and database, the temp dir, the primary's data directory, the
# ports taken, and the prefix that runs a command as `postgres` when root.
BENCH_USER=bench
BENCH_PASSWORD=bench
BENCH_DB=bench
TMP=""
PRIMARY_DATA=""
USED_PORTS=()
AS_PG=()

# pgbench's flags per WORKLOAD of callgrind.sh and syscalls.sh.
# shellcheck disable=SC2034  # used by the scripts that source this file
declare -A PGBENCH_WORKLOADS=(
    [select]="-M simple -S"
    [extended]="-M extended -S"
    [prepared]="-M prepared -S"
    [tpcb]="-M simple"
    [connect]="-C -M simple -S"
)

log()  { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

warn() { printf '[%s] WARNING: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

die()  { printf '[%s] ERROR: %s\n' "$(date +%H:%M:%S)" "$*" >&2; exit 1; }

# Run a command as the postgres OS user when we are root (exec-style, so a
# backgrounded command's $! is the real server pid), else as ourselves.
as_pg() { ${AS_PG[@]+"${AS_PG[@]}"} "$@"; }

# Print the last lines of a log file, to explain a failure.
show_log() {
    local file=$1
    if [[ -f $file ]]; then
        echo "----- last lines of $file -----" >&2
        tail -n 30 "$file" >&2 || true
        echo "-----" >&2
    fi
}

# is_port_in_use PORT: true when a TCP socket on this machine uses PORT as its
# local port (listening, or a connection: a client socket in the way fails bind).
is_port_in_use() {
    local port=$1
    if command -v ss >/dev/null 2>&1; then
        ss -Htan "sport = :$port" 2>/dev/null | grep -q .
    else
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null
    fi
}

# free_port VAR: store in VAR an unused loopback TCP port, never handed out twice
# (USED_PORTS), below the ephemeral range (net.ipv4.ip_local_port_range), where
# the kernel does not pick ports for outgoing connections: thousands of client
# sockets (and their TIME_WAIT) would otherwise sometimes take the port between
# this check and the bind.
free_port() {
    local -n _fp_result=$1   # nameref: keep local names distinct from the caller's
    local _fp_port _fp_attempt _fp_lo _fp_hi
    read -r _fp_lo _fp_hi </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || { _fp_lo=32768; _fp_hi=60999; }
    for _fp_attempt in $(seq 1 500); do
        if (( _fp_lo > 12000 )); then
            _fp_port=$(( 10000 + RANDOM % (_fp_lo - 10000) ))
        else
            _fp_port=$(( 20000 + RANDOM % 40000 ))
        fi
        [[ " ${USED_PORTS[*]-} " == *" $_fp_port "* ]] && continue
        if ! is_port_in_use "$_fp_port"; then
            USED_PORTS+=("$_fp_port")
            _fp_result=$_fp_port
            return 0
        fi
    done
    die "could not find a free TCP port"
}

# wait_for_sql NAME PORT PID LOGFILE: wait until a SELECT 1 works through PORT.
wait_for_sql() {
    local name=$1 port=$2 pid=$3 logfile=$4 i
    for i in $(seq 1 60); do
        if [[ -n $pid ]] && ! kill -0 "$pid" 2>/dev/null; then
            show_log "$logfile"
            warn "$name (pid $pid) exited during startup"
            return 1
        fi
        if PGCONNECT_TIMEOUT=2 PGPASSWORD=$BENCH_PASSWORD "$PG_BINDIR/psql" \
            -h 127.0.0.1 -p "$port" -U "$BENCH_USER" -d "$BENCH_DB" \
            -Atqc 'select 1' >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    show_log "$logfile"
    warn "$name did not accept connections on port $port within 30s"
    return 1
}

# stop_pid PID: SIGTERM, wait up to 10s, then SIGKILL.
stop_pid() {
    local pid=$1 i
    kill -0 "$pid" 2>/dev/null || return 0
    kill -TERM "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}

# median: median of the numbers on stdin (one per line, blanks ignored).
median() {
    awk 'NF' | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print ""; exit }
            if (NR % 2) print v[(NR + 1) / 2]
            else printf "%.6f\n", (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

# find_pg_bindir [BINARY...]: set PG_BINDIR (pg_config, else the newest
# /usr/lib/postgresql/*/bin) and check that these binaries are in it.
find_pg_bindir() {
    if [[ -z ${PG_BINDIR:-} ]]; then
        if command -v pg_config >/dev/null 2>&1; then
            PG_BINDIR=$(pg_config --bindir)
        else
            PG_BINDIR=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1)
        fi
    fi
    local b
    for b in initdb pg_ctl psql pgbench "$@"; do
        [[ -x $PG_BINDIR/$b ]] || die "$b not found in PG_BINDIR=$PG_BINDIR"
    done
}

# Install pgbouncer from Debian if missing, and make sure the package's own
# service does not stay running on its fixed port (we run our own instances).
ensure_pgbouncer() {
    if [[ -z ${PGBOUNCER_BIN:-} ]]; then
        PGBOUNCER_BIN=$(command -v pgbouncer 2>/dev/null || true)
        [[ -z $PGBOUNCER_BIN && -x /usr/sbin/pgbouncer ]] && PGBOUNCER_BIN=/usr/sbin/pgbouncer
    fi
    if [[ -z $PGBOUNCER_BIN ]]; then
        [[ $EUID -eq 0 ]] && command -v apt-get >/dev/null 2>&1 \
            || die "pgbouncer is not installed (install it, or run as root to apt-get it)"
        log "installing pgbouncer with apt-get"
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq pgbouncer >/dev/null
        PGBOUNCER_BIN=/usr/sbin/pgbouncer
        # The package enables a system service listening on 6432: stop+disable it.
        if command -v systemctl >/dev/null 2>&1; then
            systemctl stop pgbouncer >/dev/null 2>&1 || true
            systemctl disable pgbouncer >/dev/null 2>&1 || true
        fi
        if command -v service >/dev/null 2>&1; then
            service pgbouncer stop >/dev/null 2>&1 || true
        fi
        if command -v update-rc.d >/dev/null 2>&1; then
            update-rc.d pgbouncer disable >/dev/null 2>&1 || true
        fi
    fi
    [[ -x $PGBOUNCER_BIN ]] || die "pgbouncer binary not executable: $PGBOUNCER_BIN"
}

# write_pgbouncer_ini DIR PORT SECRET AUTH_TYPE MAX_CLIENTS [EXTRA_LINE...]: DIR's
# userlist.txt ($BENCH_USER with SECRET) and pgbouncer.ini for the primary
# ($BENCH_DB at 127.0.0.1:$PG_PORT) in transaction mode with $POOL server
# connections, quiet logs; each EXTRA_LINE (`key = value`) is appended.
write_pgbouncer_ini() {
    local dir=$1 port=$2 secret=$3 auth_type=$4 max_clients=$5 line
    shift 5
    printf '"%s" "%s"\n' "$BENCH_USER" "$secret" >"$dir/userlist.txt"
    cat >"$dir/pgbouncer.ini" <<EOF
[databases]
$BENCH_DB = host=127.0.0.1 port=$PG_PORT dbname=$BENCH_DB

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $port
unix_socket_dir =
auth_type = $auth_type
auth_file = $dir/userlist.txt
pool_mode = transaction
default_pool_size = $POOL
min_pool_size = 0
reserve_pool_size = 0
max_client_conn = $max_clients
max_db_connections = 0
server_reset_query =
ignore_startup_parameters = extra_float_digits
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
log_connections = 0
log_disconnections = 0
EOF
    for line in "$@"; do printf '%s\n' "$line" >>"$dir/pgbouncer.ini"; done
}

# make_tmpdir PREFIX: a temp dir in TMP, owned by `postgres` when run as root (AS_PG).
make_tmpdir() {
    TMP=$(mktemp -d "${TMPDIR:-/tmp}/$1.XXXXXX")
    chmod 755 "$TMP"
    mkdir -p "$TMP/run"
    if [[ $EUID -eq 0 ]]; then
        id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user"
        AS_PG=(setpriv --reuid=postgres --regid=postgres --init-groups --)
        chown -R postgres: "$TMP"
    fi
    # Server processes must not inherit a cwd they cannot read (e.g. /root).
    cd "$TMP"
}

# initdb + start the primary (ready for replicas) on PG_PORT, create the bench role and database, load pgbench data.
setup_primary() {
    free_port PG_PORT
    PRIMARY_DATA=$TMP/primary
    log "initdb primary (port $PG_PORT)"
    as_pg "$PG_BINDIR/initdb" -D "$PRIMARY_DATA" -U postgres --auth-local=trust \
        --auth-host=scram-sha-256 -E UTF8 --locale=C >"$TMP/initdb.log" 2>&1 \
        || { show_log "$TMP/initdb.log"; die "initdb failed"; }
    cat >>"$PRIMARY_DATA/postgresql.conf" <<EOF

# --- benches ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$TMP/run'
max_connections = 200
shared_buffers = 128MB
fsync = off
wal_level = replica
max_wal_senders = 10
hot_standby = on
EOF
    cat >"$PRIMARY_DATA/pg_hba.conf" <<EOF
local   all          all                    trust
host    all          all   127.0.0.1/32     scram-sha-256
host    replication  all   127.0.0.1/32     scram-sha-256
EOF
    as_pg "$PG_BINDIR/pg_ctl" -D "$PRIMARY_DATA" -l "$TMP/primary.log" -w start >/dev/null \
        || { show_log "$TMP/primary.log"; die "could not start PostgreSQL"; }

    "$PG_BINDIR/psql" -h "$TMP/run" -p "$PG_PORT" -U postgres -d postgres -v ON_ERROR_STOP=1 -q <<EOF
SET password_encryption = 'scram-sha-256';
CREATE ROLE $BENCH_USER LOGIN SUPERUSER PASSWORD '$BENCH_PASSWORD';
CREATE DATABASE $BENCH_DB OWNER $BENCH_USER;
EOF
    log "pgbench -i -s $SCALE"
    PGPASSWORD=$BENCH_PASSWORD "$PG_BINDIR/pgbench" -h 127.0.0.1 -p "$PG_PORT" \
        -U "$BENCH_USER" -i -s "$SCALE" "$BENCH_DB" >"$TMP/pgbench-init.log" 2>&1 \
        || { show_log "$TMP/pgbench-init.log"; die "pgbench -i failed"; }
}

# remove_primary_and_tmp: stops the primary (if running) and removes TMP, or keeps it
# with KEEP_TMP=1; for the scripts' EXIT traps.
remove_primary_and_tmp() {
    if [[ -n $PRIMARY_DATA && -f $PRIMARY_DATA/postmaster.pid ]]; then
        as_pg "$PG_BINDIR/pg_ctl" -D "$PRIMARY_DATA" -m immediate -w stop >/dev/null 2>&1
    fi
    if [[ -n $TMP && -d $TMP ]]; then
        if [[ ${KEEP_TMP:-0} == 1 ]]; then log "keeping temp dir $TMP"; else rm -rf -- "$TMP"; fi
    fi
}

# require_positive VAR...: dies unless each named variable is a positive integer.
require_positive() {
    local k
    for k in "$@"; do
        [[ ${!k} =~ ^[0-9]+$ && ${!k} -gt 0 ]] || die "$k must be a positive integer (got '${!k}')"
    done
}

# prepend_hba LINE: LINE first in the primary's pg_hba.conf, then a reload.
prepend_hba() {
    local hba=$PRIMARY_DATA/pg_hba.conf
    { echo "$1"; cat "$hba"; } >"$hba.new"
    mv "$hba.new" "$hba"
    if [[ $EUID -eq 0 ]]; then chown postgres: "$hba"; fi
    as_pg "$PG_BINDIR/pg_ctl" -D "$PRIMARY_DATA" reload >/dev/null
    sleep 0.5
}

# check_pair_knobs [KNOWN...]: T_LONG above T_SHORT, a known WORKLOAD, TARGETS among
# KNOWN (default pgmux pgbouncer) (callgrind.sh and syscalls.sh: two runs of one
# workload per target).
check_pair_knobs() {
    local t known=("$@")
    (( ${#known[@]} )) || known=(pgmux pgbouncer)
    (( T_LONG > T_SHORT )) || die "T_LONG ($T_LONG) must be greater than T_SHORT ($T_SHORT)"
    [[ -n ${PGBENCH_WORKLOADS[$WORKLOAD]+x} ]] || die "unknown WORKLOAD '$WORKLOAD' (known: ${!PGBENCH_WORKLOADS[*]})"
    for t in $TARGETS; do
        [[ " ${known[*]} " == *" $t "* ]] || die "unknown target '$t' (known: ${known[*]})"
    done
}
