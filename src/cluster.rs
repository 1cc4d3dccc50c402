//! Throwaway PostgreSQL clusters for `pgmux demo` and the integration tests.
//!
//! This module owns running a disposable PostgreSQL primary plus N streaming replicas: the
//! temp dir, `initdb`, configuration, roles and databases, stopping/starting/promoting nodes,
//! and tearing everything down on [`Drop`]. Which binaries (PostgreSQL 13 to 18, chosen with
//! `PGMUX_TEST_PG` or `PGMUX_PG_BINDIR`) is [`bins`]'s business; running them, free ports and
//! making the replicas is [`runner`]'s. It never prints; every failure is an [`io::Error`]
//! carrying the command's stderr and, for server operations, the server log tail.
//!
//! PostgreSQL refuses to run as root, so when the process is root every server binary runs as
//! the `postgres` OS user and the temp dir is chowned to it.

mod bins;
mod runner;

use std::collections::HashSet;
use std::fs;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use bins::{cache_dir, packaged_libpq, wanted_major, PgBins, MAJORS};
use runner::{postgres_ids, Runner};

/// How long [`Cluster::wait_replicas_caught_up`] waits.
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a freshly started node gets to answer queries.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Server log file name inside each data dir (written via `pg_ctl -l`).
const LOG_NAME: &str = "server.log";
/// File included from postgresql.conf that holds only the node's `port`.
const PORT_CONF: &str = "pgmux_port.conf";
/// Appended to the primary's postgresql.conf (replicas inherit it: they are copies).
const CONF: &str = "
# pgmux cluster
include 'pgmux_port.conf'
listen_addresses = '127.0.0.1'
fsync = off
synchronous_commit = off
full_page_writes = off
wal_level = replica
max_wal_senders = 10
wal_keep_size = '128MB'
max_wal_size = '256MB'
hot_standby = on
max_connections = 300
shared_buffers = '32MB'
logging_collector = off
password_encryption = 'scram-sha-256'
";
/// The whole pg_hba.conf of every node.
const HBA: &str = "local all all trust
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 trust
";

/// What to build: how many replicas, which login roles and which databases.
#[derive(Debug, Clone, Default)]
pub struct ClusterSpec {
    /// Number of streaming replicas to create next to the primary.
    pub replicas: usize,
    /// login roles to create on the primary: (name, password, superuser)
    ///
    /// `postgres` (superuser, password `postgres`) always exists and must not be listed.
    pub users: Vec<(String, String, bool)>,
    /// databases to create, each owned by the first user in `users` (or postgres)
    pub databases: Vec<String>,
}

/// One PostgreSQL server (running or stopped) of a [`Cluster`].
#[derive(Debug)]
pub struct Node {
    /// TCP port on 127.0.0.1.
    pub port: u16,
    /// The server's data directory.
    pub data_dir: PathBuf,
    log_file: PathBuf,
}

impl Node {
    fn new(data_dir: PathBuf) -> Node {
        let log_file = data_dir.join(LOG_NAME);
        Node { port: 0, data_dir, log_file }
    }

    /// Path of this node's server log.
    pub fn log_file(&self) -> &Path {
        &self.log_file
    }

    /// The last `n` lines of this node's server log (empty if there is none).
    pub fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(&self.log_file).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// `e` with this node's log tail appended.
    fn fail(&self, e: io::Error) -> io::Error {
        let (path, tail) = (self.log_file.display(), self.log_tail(30));
        io::Error::new(e.kind(), format!("{e}\n--- tail of {path} ---\n{tail}"))
    }
}

/// A primary plus streaming replicas in a temp dir; all stopped and removed on Drop.
pub struct Cluster {
    /// The node that was initdb'ed (stays here even after a replica is promoted).
    pub primary: Node,
    /// Streaming replicas of `primary`, in creation order.
    pub replicas: Vec<Node>,
    rt: Runner,
    _tmp: tempfile::TempDir,
}

/// A loopback port that is free now, for a server to listen on: chosen at random
/// below the kernel's ephemeral range (so that no outgoing connection takes it
/// between this call and the server's bind, as a port from `bind(0)` can be), never
/// the same twice in a process.
pub fn free_port() -> u16 {
    use rand::Rng;
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    let low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap_or_else(|p| p.into_inner());
    let given = given.get_or_insert_with(HashSet::new);
    if low > 12_000 {
        let mut rng = rand::thread_rng();
        for _ in 0..1000 {
            let p = rng.gen_range(10_000..low);
            if !given.contains(&p) && std::net::TcpListener::bind(("127.0.0.1", p)).is_ok() {
                given.insert(p);
                return p;
            }
        }
    }
    let l = std::net::TcpListener::bind("127.0.0.1:0");
    l.and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

/// Directory of the client programs (psql, pgbench) the tests run against the cluster:
/// [`PgBins::client`], i.e. the server directory if it has them, else the installed
/// PostgreSQL's (Debian's 15), whichever server major `PGMUX_TEST_PG` chose.
pub fn pg_bindir() -> PathBuf {
    PgBins::find().map_or_else(|_| bins::installed_bindir(), |b| b.client)
}

/// Where clusters are created: `$PGMUX_CLUSTER_DIR`, else /dev/shm if it has >= 2 GiB free
/// (tmpfs makes initdb and pg_basebackup several times faster), else the system temp dir
/// (or /tmp if the server user could not traverse that).
fn base_dir(as_root: bool) -> PathBuf {
    if let Some(d) = std::env::var_os("PGMUX_CLUSTER_DIR") {
        return d.into();
    }
    let ok = |a: &Path| fs::metadata(a).is_ok_and(|m| m.permissions().mode() & 0o001 != 0);
    let traversable = |p: &Path| !as_root || p.ancestors().all(ok);
    // SAFETY: statvfs is plain old data, written by statvfs(3) from a NUL-terminated path.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::statvfs(c"/dev/shm".as_ptr(), &mut st) };
    let shm_free = st.f_bavail as u128 * st.f_frsize as u128;
    if rc == 0 && shm_free >= 2 << 30 && traversable(Path::new("/dev/shm")) {
        return "/dev/shm".into();
    }
    let tmp = std::env::temp_dir();
    [tmp, "/tmp".into()].into_iter().find(|t| traversable(t)).unwrap_or_default()
}

fn other(msg: String) -> io::Error {
    io::Error::other(msg)
}

/// Prepare the cluster's temp dir (socket dir, password file) and initdb the primary's data
/// dir in it with pgmux's configuration; returns the data dir.
fn init_primary(rt: &Runner) -> io::Result<PathBuf> {
    fs::set_permissions(&rt.root, fs::Permissions::from_mode(0o755))?;
    rt.chown(&rt.root)?;
    let (sock, pwfile) = (rt.root.join("s"), rt.root.join("pwfile"));
    fs::create_dir(&sock)?;
    rt.chown(&sock)?;
    rt.write_owned(&pwfile, "postgres\n")?;

    let data = rt.root.join("primary");
    let args = "-U postgres -A trust -E UTF8 --locale=C --no-sync";
    let mut initdb = rt.cmd("initdb", args); // pwfile is relative to the cwd, rt.root
    if rt.bins.major >= 14 {
        initdb.arg("--no-instructions"); // new in 14
    }
    rt.run(initdb.arg("--pwfile=pwfile").arg("-D").arg(&data), "initdb")?;
    let conf_path = data.join("postgresql.conf");
    let sock = quote_lit(&sock.to_string_lossy());
    let conf = fs::read_to_string(&conf_path)? + CONF;
    let conf = format!("{conf}unix_socket_directories = {sock}\n");
    fs::write(&conf_path, conf)?;
    rt.write_owned(&data.join("pg_hba.conf"), HBA)?;
    Ok(data)
}

/// CREATE ROLE and CREATE DATABASE statements for `spec`.
fn setup_sql(spec: &ClusterSpec) -> Vec<String> {
    let mut setup = Vec::new();
    for (name, pw, su) in &spec.users {
        let su = if *su { " SUPERUSER" } else { "" };
        let (name, pw) = (quote_ident(name), quote_lit(pw));
        setup.push(format!("CREATE ROLE {name} LOGIN{su} PASSWORD {pw}"));
    }
    let db_owner = quote_ident(spec.users.first().map_or("postgres", |u| &u.0));
    for db in spec.databases.iter().map(|d| quote_ident(d)) {
        setup.push(format!("CREATE DATABASE {db} OWNER {db_owner}"));
    }
    setup
}

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

impl Cluster {
    /// initdb and start a primary, create the spec's roles and databases, then make and
    /// start `spec.replicas` streaming replicas in parallel, each verified to be in recovery.
    /// The binaries are [`PgBins::find`]'s (`PGMUX_TEST_PG`, `PGMUX_PG_BINDIR`).
    pub fn start(spec: &ClusterSpec) -> io::Result<Cluster> {
        if spec.users.iter().any(|u| u.0 == "postgres") {
            let msg = "ClusterSpec::users must not list the built-in superuser `postgres`";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let bins = PgBins::find()?;
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let owner = if root { Some(postgres_ids()?) } else { None };
        let mut tmp = tempfile::Builder::new();
        let tmp = tmp.prefix("pgmux-cluster-").tempdir_in(base_dir(root))?;
        let rt = Runner { bins, root: tmp.path().into(), owner, used: Mutex::default() };
        let data = init_primary(&rt)?;

        // from here on, Drop stops whatever has been started
        let (primary, replicas) = (Node::new(data), Vec::new());
        let mut cl = Cluster { primary, replicas, rt, _tmp: tmp };
        cl.rt.start_new(&mut cl.primary)?;
        if cl.rt.bins.major < 14 {
            // 13's initdb hashes the --pwfile password with md5 (its default password_encryption),
            // which `scram-sha-256` in pg_hba.conf refuses: hash it again, through the socket.
            let (sock, sql) = (cl.rt.root.join("s"), "ALTER ROLE postgres PASSWORD 'postgres'");
            let res = cl.rt.psql_via(&sock.to_string_lossy(), cl.primary.port, "postgres", &[sql]);
            res.map_err(|e| cl.primary.fail(e))?;
        }
        let (primary, sql) = (&cl.primary, "select pg_is_in_recovery()");
        cl.rt.wait_for(primary, sql, "f", READY_TIMEOUT)?;
        let setup = setup_sql(spec);
        if !setup.is_empty() {
            let cmds: Vec<&str> = setup.iter().map(String::as_str).collect();
            let res = cl.rt.psql(cl.primary.port, "postgres", &cmds);
            res.map_err(|e| cl.primary.fail(e))?;
        }
        let (replicas, res) = cl.rt.make_replicas(&mut cl.primary, spec.replicas);
        cl.replicas = replicas;
        res.map(|()| cl)
    }

    /// The servers' major version (13 to 18).
    pub fn major(&self) -> u32 {
        self.rt.bins.major
    }

    /// The node (primary or replica) listening on `port`.
    pub fn node(&self, port: u16) -> io::Result<&Node> {
        let msg = format!("no cluster node on port {port}");
        let err = || io::Error::new(io::ErrorKind::NotFound, msg);
        self.nodes().find(|n| n.port == port).ok_or_else(err)
    }

    /// All nodes: the primary first, then the replicas.
    pub fn nodes(&self) -> impl Iterator<Item = &Node> {
        std::iter::once(&self.primary).chain(&self.replicas)
    }

    /// The temp dir holding all data dirs and the unix socket dir (`s/`).
    pub fn dir(&self) -> &Path {
        &self.rt.root
    }

    /// run SQL with psql as the superuser `postgres` over TCP 127.0.0.1 against a node port;
    /// returns stdout trimmed (use -X -A -t -q -v ON_ERROR_STOP=1); error includes stderr
    pub fn psql(&self, port: u16, db: &str, sql: &str) -> io::Result<String> {
        self.rt.psql(port, db, &[sql])
    }

    /// `pg_ctl stop -m fast` on the node at `port`.
    pub fn stop_node(&self, port: u16) -> io::Result<()> {
        self.stop_node_mode(port, "fast")
    }

    /// `pg_ctl stop -m <mode>` (`smart`, `fast` or `immediate`: a crash, recovered
    /// at the next start) on the node at `port`.
    pub fn stop_node_mode(&self, port: u16, mode: &str) -> io::Result<()> {
        self.rt.pg_ctl(self.node(port)?, &format!("stop -m {mode}"))
    }

    /// The pid of the running postmaster of the node at `port` (from postmaster.pid).
    pub fn postmaster_pid(&self, port: u16) -> io::Result<i32> {
        let node = self.node(port)?;
        let text = fs::read_to_string(node.data_dir.join("postmaster.pid"))?;
        let pid = text.lines().next().and_then(|l| l.trim().parse().ok());
        pid.ok_or_else(|| other(format!("port {port}: no pid in postmaster.pid")))
    }

    /// `pg_ctl start` the node at `port` (same port as before); wait until it answers queries.
    pub fn start_node(&self, port: u16) -> io::Result<()> {
        let node = self.node(port)?;
        self.rt.pg_ctl(node, "start")?;
        self.rt.wait_for(node, "select 1", "", READY_TIMEOUT)
    }

    /// `pg_ctl promote -w` on the (replica) node at `port`.
    pub fn promote(&self, port: u16) -> io::Result<()> {
        self.rt.pg_ctl(self.node(port)?, "promote")
    }

    /// wait until every replica has replayed the primary's current WAL LSN (timeout 10s)
    pub fn wait_replicas_caught_up(&self) -> io::Result<()> {
        // synchronous_commit=off: earlier commits may not be flushed, i.e. not streamed, yet.
        // A synchronous commit of a transaction that wrote WAL flushes everything before it (a
        // transaction that only took an xid, e.g. txid_current(), commits asynchronously anyway).
        let cmds = [
            "SET synchronous_commit = on",
            "SELECT pg_logical_emit_message(true, 'pgmux', 'catch-up')",
            "SELECT pg_current_wal_flush_lsn()",
        ];
        let out = self.rt.psql(self.primary.port, "postgres", &cmds);
        let out = out.map_err(|e| self.primary.fail(e))?;
        let lsn = quote_lit(out.lines().last().unwrap_or_default());
        let sql = format!("select pg_last_wal_replay_lsn() >= {lsn}::pg_lsn");
        let deadline = Instant::now() + CATCHUP_TIMEOUT;
        for r in &self.replicas {
            let left = deadline.saturating_duration_since(Instant::now());
            self.rt.wait_for(r, &sql, "t", left)?;
        }
        Ok(())
    }
}

impl Drop for Cluster {
    /// Stops every server ([`Cluster::stop_all`]); the temp dir is removed when the
    /// `TempDir` field drops afterwards.
    fn drop(&mut self) {
        self.stop_all();
    }
}

impl Cluster {
    /// `pg_ctl stop -m immediate` on every data dir in the temp dir that has a postmaster.pid
    /// (so half-built clusters are cleaned up too); a postmaster that survives is SIGKILLed.
    /// Usable where Drop never runs (a cluster in a `static`, stopped from `atexit`).
    pub fn stop_all(&self) {
        let entries = fs::read_dir(&self.rt.root).into_iter().flatten().flatten();
        for dir in entries.map(|e| e.path()) {
            let pidfile = dir.join("postmaster.pid");
            if !pidfile.exists() {
                continue;
            }
            let mut c = self.rt.cmd("pg_ctl", "stop -m immediate -w -t 30 -D");
            let _ = self.rt.run(c.arg(&dir), "pg_ctl stop");
            let pid = fs::read_to_string(pidfile).unwrap_or_default();
            let pid = pid.lines().next().and_then(|p| p.trim().parse().ok());
            // only if it really is this data dir's postmaster (guards against pid reuse)
            let cmdline = pid.and_then(|p: i32| fs::read(format!("/proc/{p}/cmdline")).ok());
            let cmdline = String::from_utf8_lossy(cmdline.as_deref().unwrap_or_default());
            if let Some(pid) = pid.filter(|_| cmdline.contains(&*dir.to_string_lossy())) {
                // SAFETY: plain kill(2) of a pid we just verified.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
        }
    }
}

#[cfg(test)]
mod tests;
