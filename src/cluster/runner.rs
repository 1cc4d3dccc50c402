//! Running PostgreSQL programs for a [`Cluster`](super::Cluster).
//!
//! This module owns the [`Runner`]: every command a cluster runs (initdb, pg_ctl, psql,
//! pg_basebackup, cp) in a clean environment, as the `postgres` OS user when we are root,
//! with a timeout and errors that carry stderr and the server log tail; first starts on free
//! ports; and making streaming replicas, with pg_basebackup where the server directory has
//! one, else from copies of the cleanly stopped primary (the npm packages have none).

use std::collections::HashSet;
use std::fs;
use std::io::{self, Read, Write};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::bins::PgBins;
use super::{free_port, other, quote_lit, Node, PORT_CONF, READY_TIMEOUT};

/// Hard timeout for one external command (pg_ctl additionally gets `-w -t 30`).
const CMD_TIMEOUT: Duration = Duration::from_secs(90);

/// uid/gid of the `postgres` OS user, parsed from /etc/passwd.
pub(super) fn postgres_ids() -> io::Result<(u32, u32)> {
    let passwd = fs::read_to_string("/etc/passwd")?;
    let fields = passwd.lines().map(|l| l.split(':').collect::<Vec<_>>());
    let ids = |f: Vec<&str>| Some((f.get(2)?.parse().ok()?, f.get(3)?.parse().ok()?));
    let found = fields.filter(|f| f[0] == "postgres").find_map(ids);
    let msg = "running as root, but /etc/passwd has no `postgres` user";
    found.ok_or_else(|| other(msg.into()))
}

/// Runs server binaries in a clean environment, as the right OS user, with timeouts.
pub(super) struct Runner {
    pub(super) bins: PgBins,
    /// The cluster's temp dir: the cwd of every command.
    pub(super) root: PathBuf,
    /// uid/gid of `postgres` when we are root.
    pub(super) owner: Option<(u32, u32)>,
    /// Ports handed out to this cluster's nodes so far.
    pub(super) used: Mutex<HashSet<u16>>,
}

impl Runner {
    /// A command for PostgreSQL program `prog` ([`PgBins::path`]) with `args` (split on
    /// spaces): cwd = temp dir, no PG* env vars, stdin null, run as the server user.
    pub(super) fn cmd(&self, prog: &str, args: &str) -> Command {
        let mut c = Command::new(self.bins.path(prog));
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
    pub(super) fn chown(&self, path: &Path) -> io::Result<()> {
        match self.owner {
            Some((uid, gid)) => std::os::unix::fs::chown(path, Some(uid), Some(gid)),
            None => Ok(()),
        }
    }

    pub(super) fn write_owned(&self, path: &Path, text: &str) -> io::Result<()> {
        fs::write(path, text)?;
        self.chown(path)
    }

    /// Run `c` to completion, killing it after `CMD_TIMEOUT`; Ok(stdout) on exit status 0,
    /// else an error naming `what` with the stderr (or stdout if stderr is empty).
    pub(super) fn run(&self, c: &mut Command, what: &str) -> io::Result<String> {
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
    pub(super) fn psql(&self, port: u16, db: &str, cmds: &[&str]) -> io::Result<String> {
        self.psql_via("127.0.0.1", port, db, cmds)
    }

    /// Like [`Runner::psql`], connecting to `host` (an address or the socket directory).
    pub(super) fn psql_via(&self, host: &str, port: u16, db: &str, cmds: &[&str]) -> io::Result<String> {
        let args = format!("-X -A -t -q -v ON_ERROR_STOP=1 -U postgres -p {port}");
        let mut c = self.cmd("psql", &args);
        c.arg("-h").arg(host).arg("-d").arg(db).env("PGPASSWORD", "postgres");
        for sql in cmds {
            c.arg("-c").arg(sql);
        }
        let out = self.run(c.env("PGCONNECT_TIMEOUT", "10"), &format!("psql on port {port}"));
        Ok(out?.trim().to_string())
    }

    /// `pg_ctl <args> -w -t 30 -D <data_dir>` (`-l <log>` for start); errors carry the log tail.
    pub(super) fn pg_ctl(&self, node: &Node, args: &str) -> io::Result<()> {
        let mut c = self.cmd("pg_ctl", args);
        c.args(["-w", "-t", "30", "-D"]).arg(&node.data_dir);
        if args == "start" {
            c.arg("-l").arg(&node.log_file);
        }
        let what = format!("pg_ctl {args} (port {})", node.port);
        self.run(&mut c, &what).map(drop).map_err(|e| node.fail(e))
    }

    /// Poll `sql` on `node` until it returns `want` (or, if `want` is "", merely succeeds).
    pub(super) fn wait_for(&self, node: &Node, sql: &str, want: &str, limit: Duration) -> io::Result<()> {
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
    pub(super) fn start_new(&self, node: &mut Node) -> io::Result<()> {
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

    /// `count` streaming replicas of `primary` (data dirs `replica1`, ...), started in
    /// parallel, each verified to be in recovery. With pg_basebackup if the server directory
    /// has one; else from copies of the primary's data dir taken while it is cleanly stopped
    /// (it is started again before the replicas, maybe on a new port if its own was taken).
    /// Returns every node made, started or not, with the first error (Drop stops them).
    pub(super) fn make_replicas(&self, primary: &mut Node, count: usize) -> (Vec<Node>, io::Result<()>) {
        let mut nodes: Vec<Node> = (1..=count).map(|i| Node::new(self.root.join(format!("replica{i}")))).collect();
        if count == 0 {
            return (nodes, Ok(()));
        }
        let basebackup = self.bins.has_basebackup();
        if !basebackup {
            if let Err(e) = self.copy_stopped_primary(primary, &nodes) {
                return (nodes, Err(e));
            }
        }
        let port = primary.port;
        let res = in_parallel(&mut nodes, |node| {
            if basebackup {
                self.basebackup(node, port)?;
            } else {
                self.set_primary_conninfo(node, port)?;
            }
            let _ = fs::remove_file(&node.log_file); // the primary's log came along in the copy
            self.start_new(node)?;
            self.wait_for(node, "select pg_is_in_recovery()", "t", READY_TIMEOUT)
        });
        (nodes, res)
    }

    /// pg_basebackup into `node`'s data dir from the primary on port `primary`, with
    /// `standby.signal` and `primary_conninfo` (-R).
    fn basebackup(&self, node: &Node, primary: u16) -> io::Result<()> {
        let args = format!("-h 127.0.0.1 -p {primary} -U postgres -R -X stream");
        let mut c = self.cmd("pg_basebackup", &args);
        c.args(["--checkpoint=fast", "--no-sync", "-D"]).arg(&node.data_dir);
        self.run(&mut c, &format!("pg_basebackup from port {primary}")).map(drop)
    }

    /// Stop `primary` (fast: a clean shutdown with a checkpoint), copy its data dir to each of
    /// `nodes` with a `standby.signal`, start it again.
    fn copy_stopped_primary(&self, primary: &mut Node, nodes: &[Node]) -> io::Result<()> {
        self.pg_ctl(primary, "stop -m fast")?;
        for node in nodes {
            // cp -a keeps the owner (postgres) and the data dir's 0700.
            let mut c = Command::new("cp");
            c.arg("-a").arg(&primary.data_dir).arg(&node.data_dir).stdin(Stdio::null());
            self.run(&mut c, &format!("copying the stopped primary to {}", node.data_dir.display()))?;
            self.write_owned(&node.data_dir.join("standby.signal"), "")?;
        }
        self.start_new(primary)?;
        self.wait_for(primary, "select pg_is_in_recovery()", "f", READY_TIMEOUT)
    }

    /// Point the copied standby `node` at the primary on port `primary` (what
    /// `pg_basebackup -R` writes, less the options pgmux's clusters do not need).
    fn set_primary_conninfo(&self, node: &Node, primary: u16) -> io::Result<()> {
        let conninfo = quote_lit(&format!("host=127.0.0.1 port={primary} user=postgres"));
        let path = node.data_dir.join("postgresql.auto.conf");
        let mut f = fs::OpenOptions::new().append(true).create(true).open(&path)?;
        writeln!(f, "primary_conninfo = {conninfo}")?;
        drop(f);
        self.chown(&path)
    }
}

/// Run `f` on every node, each in its own thread; the first error once all are done.
fn in_parallel(nodes: &mut [Node], f: impl Fn(&mut Node) -> io::Result<()> + Sync) -> io::Result<()> {
    let f = &f;
    std::thread::scope(|s| {
        let handles: Vec<_> = nodes.iter_mut().map(|node| s.spawn(move || f(node))).collect();
        let results: Vec<_> = handles.into_iter().map(|h| h.join().expect("replica thread panicked")).collect();
        results.into_iter().collect()
    })
}
