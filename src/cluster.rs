//! Throwaway PostgreSQL clusters for `pgmux demo` and the integration tests.
//!
//! This module owns running a disposable PostgreSQL 15 primary plus N streaming replicas from
//! the installed server binaries: finding the binaries, the temp dir, `initdb`, configuration,
//! roles and databases, `pg_basebackup`, free loopback ports, stopping/starting/promoting
//! nodes, and tearing everything down on [`Drop`]. It never prints; every failure is an
//! [`io::Error`] carrying the command's stderr and, for server operations, the server log tail.
//!
//! PostgreSQL refuses to run as root, so when the process is root every server binary runs as
//! the `postgres` OS user and the temp dir is chowned to it.

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Hard timeout for one external command (pg_ctl additionally gets `-w -t 30`).
const CMD_TIMEOUT: Duration = Duration::from_secs(90);
/// How long [`Cluster::wait_replicas_caught_up`] waits.
const CATCHUP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a freshly started node gets to answer queries.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// Server log file name inside each data dir (written via `pg_ctl -l`).
const LOG_NAME: &str = "server.log";
/// File included from postgresql.conf that holds only the node's `port`.
const PORT_CONF: &str = "pgmux_port.conf";
/// Appended to the primary's postgresql.conf (replicas inherit it through pg_basebackup).
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

/// Bind 127.0.0.1:0 and return the port the kernel picked (free at the time of the call).
pub fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0");
    l.and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

/// Directory of initdb/pg_ctl/...: `$PGMUX_PG_BINDIR`, else `pg_config --bindir`, else the
/// Debian PostgreSQL 15 default.
pub fn pg_bindir() -> PathBuf {
    let env = std::env::var_os("PGMUX_PG_BINDIR").map(PathBuf::from);
    let mut c = Command::new("pg_config");
    let out = c.arg("--bindir").stderr(Stdio::null()).output().ok();
    let out = out.filter(|o| o.status.success()).map(|o| o.stdout);
    let cfg = out.map(|o| PathBuf::from(String::from_utf8_lossy(&o).trim()));
    let mut found = [env, cfg].into_iter().flatten();
    let found = found.find(|d| d.join("initdb").exists());
    found.unwrap_or_else(|| PathBuf::from("/usr/lib/postgresql/15/bin"))
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

fn quote_ident(s: &str) -> String {
    format!("\"{}\"", s.replace('"', "\"\""))
}

fn quote_lit(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// uid/gid of the `postgres` OS user, parsed from /etc/passwd.
fn postgres_ids() -> io::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    let fields = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>());
    let ids = |f: Vec<&str>| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?));
    let found = fields.filter(|f| f[0] == "postgres").find_map(ids);
    let msg = "running as root, but /etc/passwd has no `postgres` user";
    found.ok_or_else(|| other(msg.into()))
}

/// Runs server binaries in a clean environment, as the right OS user, with timeouts.
struct Runner {
    bindir: PathBuf,
    root: PathBuf,
    owner: Option<(u32, u32)>,
    /// Ports handed out to this cluster's nodes so far.
    used: Mutex<HashSet<u16>>,
}

impl Runner {
    /// A command for `bindir/prog` with `args` (split on spaces): cwd = temp dir, no PG* env
    /// vars, stdin null, run as the server user.
    fn cmd(&self, prog: &str, args: &str) -> Command {
        let mut c = Command::new(self.bindir.join(prog));
        c.args(args.split_whitespace()).current_dir(&self.root);
        c.stdin(Stdio::null()).env("LC_ALL", "C");
        for (k, _) in std::env::vars_os() {
            if k.to_string_lossy().starts_with("PG") {
                c.env_remove(k);
            }
        }
        if let Some((uid, gid)) = self.owner {
            c.uid(uid).gid(gid).env("HOME", &self.root);
            c.env("USER", "postgres").env("LOGNAME", "postgres");
        }
        c
    }

    /// Give `path` to the server user (no-op unless running as root).
    fn chown(&self, path: &Path) -> io::Result<()> {
        match self.owner {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    fn write_owned(&self, path: &Path, text: &str) -> io::Result<()> {
        fs::write(path, text)?;
        self.chown(path)
    }

    /// Run `c` to completion, killing it after `CMD_TIMEOUT`; Ok(stdout) on exit status 0,
    /// else an error naming `what` with the stderr (or stdout if stderr is empty).
    fn run(&self, c: &mut Command, what: &str) -> io::Result<String> {
        let prog = c.get_program().to_owned();
        let spawned = c.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn();
        let dir = self.root.display();
        let mut child = spawned.map_err(|e: io::Error| io::Error::new(e.kind(), format!("{what}: {prog:?} in {dir}: {e}")))?;
        let drain = |mut r: Box<dyn Read + Send>| {
            std::thread::spawn(move || {
                let mut buf = Vec::new();
                let _ = r.read_to_end(&mut buf);
                String::from_utf8_lossy(&buf).into_owned()
            })
        };
        let out = drain(Box::new(child.stdout.take().expect("piped stdout")));
        let err = drain(Box::new(child.stderr.take().expect("piped stderr")));
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if start.elapsed() > CMD_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                let msg = format!("{what}: timed out after {CMD_TIMEOUT:?}");
                return Err(io::Error::new(io::ErrorKind::TimedOut, msg));
            }
            std::thread::sleep(Duration::from_millis(2));
        };
        let out = out.join().unwrap_or_default();
        let err = err.join().unwrap_or_default();
        if status.success() {
            return Ok(out);
        }
        let detail = [err.trim(), out.trim()].into_iter().find(|s| !s.is_empty());
        Err(other(format!("{what}: {status}: {}", detail.unwrap_or(""))))
    }

    /// psql as superuser `postgres` over TCP; each of `cmds` is one `-c` in the same session.
    fn psql(&self, port: u16, db: &str, cmds: &[&str]) -> io::Result<String> {
        let args = format!("-X -A -t -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -U postgres -p {port}");
        let mut c = self.cmd("psql", &args);
        c.arg("-d").arg(db).env("PGPASSWORD", "postgres");
        for sql in cmds {
            c.arg("-c").arg(sql);
        }
        let out = self.run(c.env("PGCONNECT_TIMEOUT", "10"), &format!("psql on port {port}"));
        Ok(out?.trim().to_string())
    }

    /// `pg_ctl <args> -w -t 30 -D <data_dir>` (`-l <log>` for start); errors carry the log tail.
    fn pg_ctl(&self, node: &Node, args: &str) -> io::Result<()> {
        let mut c = self.cmd("pg_ctl", args);
        c.args(["-w", "-t", "30", "-D"]).arg(&node.data_dir);
        if args == "start" {
            c.arg("-l").arg(&node.log_file);
        }
        let what = format!("pg_ctl {args} (port {})", node.port);
        self.run(&mut c, &what).map(drop).map_err(|e| node.fail(e))
    }

    /// Poll `sql` on `node` until it returns `want` (or, if `want` is "", merely succeeds).
    fn wait_for(&self, node: &Node, sql: &str, want: &str, limit: Duration) -> io::Result<()> {
        let start = Instant::now();
        loop {
            let last = match self.psql(node.port, "postgres", &[sql]) {
                Ok(v) if want.is_empty() || v == want => return Ok(()),
                Ok(v) => format!("got {v:?}"),
                Err(e) => e.to_string(),
            };
            if start.elapsed() > limit {
                let port = node.port;
                let msg = format!("port {port}: `{sql}` not {want:?} in {limit:?}; last: {last}");
                return Err(node.fail(io::Error::new(io::ErrorKind::TimedOut, msg)));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// First start of a node, on `node.port` or (if 0) a free port; while the port turns out to
    /// be taken, retry with a fresh free port (at most 3 times).
    fn start_new(&self, node: &mut Node) -> io::Result<()> {
        for attempt in 0.. {
            while node.port == 0 {
                let p = free_port();
                let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
                node.port = if p != 0 && used.insert(p) { p } else { 0 };
            }
            let port_conf = format!("port = {}\n", node.port);
            self.write_owned(&node.data_dir.join(PORT_CONF), &port_conf)?;
            let before = fs::metadata(&node.log_file).map_or(0, |m| m.len() as usize);
            let Err(e) = self.pg_ctl(node, "start") else {
                return Ok(());
            };
            let log = fs::read(&node.log_file).unwrap_or_default();
            let new = String::from_utf8_lossy(log.get(before..).unwrap_or_default());
            if attempt == 3 || !new.contains("Address already in use") {
                return Err(e);
            }
            node.port = 0;
        }
        unreachable!()
    }

    /// pg_basebackup `node` from the primary, give it its own port, start it, wait for hot standby.
    fn make_replica(&self, node: &mut Node, primary: u16) -> io::Result<()> {
        let args = format!("-h 127.0.0.1 -p {primary} -U postgres -R -X stream");
        let mut c = self.cmd("pg_basebackup", &args);
        c.args(["--checkpoint=fast", "--no-sync", "-D"]).arg(&node.data_dir);
        self.run(&mut c, &format!("pg_basebackup from port {primary}"))?;
        let _ = fs::remove_file(&node.log_file); // the primary's log came along in the copy
        self.start_new(node)?;
        self.wait_for(node, "select pg_is_in_recovery()", "t", READY_TIMEOUT)
    }
}

impl Cluster {
    /// initdb and start a primary, create the spec's roles and databases, then base-backup and
    /// start `spec.replicas` streaming replicas in parallel, each verified to be in recovery.
    pub fn start(spec: &ClusterSpec) -> io::Result<Cluster> {
        if spec.users.iter().any(|u| u.0 == "postgres") {
            let msg = "ClusterSpec::users must not list the built-in superuser `postgres`";
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        // SAFETY: geteuid has no preconditions.
        let root = unsafe { libc::geteuid() } == 0;
        let owner = if root { Some(postgres_ids()?) } else { None };
        let mut tmp = tempfile::Builder::new();
        let tmp = tmp.prefix("pgmux-cluster-").tempdir_in(base_dir(root))?;
        let (bindir, used) = (pg_bindir(), Mutex::default());
        let rt = Runner { bindir, root: tmp.path().into(), owner, used };
        fs::set_permissions(&rt.root, fs::Permissions::from_mode(0o755))?;
        rt.chown(&rt.root)?;
        let (sock, pwfile) = (rt.root.join("s"), rt.root.join("pwfile"));
        fs::create_dir(&sock)?;
        rt.chown(&sock)?;
        rt.write_owned(&pwfile, "postgres\n")?;

        let data = rt.root.join("primary");
        let args = "-U postgres -A trust -E UTF8 --locale=C --no-sync --no-instructions";
        let mut initdb = rt.cmd("initdb", args); // pwfile is relative to the cwd, rt.root
        rt.run(initdb.arg("--pwfile=pwfile").arg("-D").arg(&data), "initdb")?;
        let conf_path = data.join("postgresql.conf");
        let sock = quote_lit(&sock.to_string_lossy());
        let conf = fs::read_to_string(&conf_path)? + CONF;
        let conf = format!("{conf}unix_socket_directories = {sock}\n");
        fs::write(&conf_path, conf)?;
        rt.write_owned(&data.join("pg_hba.conf"), HBA)?;

        // from here on, Drop stops whatever has been started
        let (primary, replicas) = (Node::new(data), Vec::new());
        let mut cl = Cluster { primary, replicas, rt, _tmp: tmp };
        cl.rt.start_new(&mut cl.primary)?;
        let (primary, sql) = (&cl.primary, "select pg_is_in_recovery()");
        cl.rt.wait_for(primary, sql, "f", READY_TIMEOUT)?;

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
        if !setup.is_empty() {
            let cmds: Vec<&str> = setup.iter().map(String::as_str).collect();
            let res = cl.rt.psql(cl.primary.port, "postgres", &cmds);
            res.map_err(|e| cl.primary.fail(e))?;
        }

        let (rt, primary) = (&cl.rt, cl.primary.port);
        let mut first_err = None;
        std::thread::scope(|s| {
            let spawn = |i| {
                s.spawn(move || {
                    let mut node = Node::new(rt.root.join(format!("replica{i}")));
                    let res = rt.make_replica(&mut node, primary);
                    (node, res)
                })
            };
            let handles: Vec<_> = (1..=spec.replicas).map(spawn).collect();
            for h in handles {
                let (node, res) = h.join().expect("replica thread panicked");
                first_err = first_err.take().or(res.err());
                cl.replicas.push(node);
            }
        });
        first_err.map_or(Ok(cl), Err)
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
