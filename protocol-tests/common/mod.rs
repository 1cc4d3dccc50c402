//! Test harness: one real PostgreSQL primary with two streaming replicas per test
//! binary (started on first use, stopped at exit), and pgmux processes started per
//! test with their own config on a free port.

#![allow(dead_code)]

use std::io::Write;
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use pgmux::cluster::{free_port, Cluster, ClusterSpec};

static CLUSTER: OnceLock<Cluster> = OnceLock::new();

extern "C" fn stop_cluster() {
    if let Some(c) = CLUSTER.get() {
        c.stop_all();
        let _ = std::fs::remove_dir_all(c.dir());
    }
}

/// The shared cluster: users `app`/`app` and superuser `postgres`/`postgres`, database `app`.
pub fn cluster() -> &'static Cluster {
    CLUSTER.get_or_init(|| {
        let spec = ClusterSpec {
            replicas: 2,
            users: vec![("app".into(), "app".into(), false), ("admin".into(), "admin".into(), true)],
            databases: vec!["app".into()],
        };
        let c = Cluster::start(&spec).expect("start PostgreSQL cluster");
        unsafe { libc::atexit(stop_cluster) };
        c
    })
}

/// Settings for one pgmux instance.
#[derive(Clone)]
pub struct Setup {
    pub pool_size: usize,
    pub checkout_timeout: &'static str,
    pub mode: &'static str,
    pub max_clients: usize,
    /// Extra top-level YAML appended verbatim.
    pub extra: String,
    /// Extra lines for the `pool:` block (indented by two spaces).
    pub pool_extra: String,
}

impl Default for Setup {
    fn default() -> Self {
        Setup {
            pool_size: 5,
            checkout_timeout: "5s",
            mode: "transaction",
            max_clients: 5000,
            extra: String::new(),
            pool_extra: String::new(),
        }
    }
}

pub struct Pgmux {
    child: Option<Child>,
    pub port: u16,
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
    pub log: PathBuf,
}

pub fn pgmux_bin() -> &'static str {
    env!("CARGO_BIN_EXE_pgmux")
}

impl Setup {
    pub fn yaml(&self, port: u16) -> String {
        let c = cluster();
        let replicas: Vec<String> = c.replicas.iter().map(|r| format!("127.0.0.1:{}", r.port)).collect();
        format!(
            "listen: 127.0.0.1:{port}\nmax_client_connections: {max}\npool:\n  mode: {mode}\n  size: {size}\n  checkout_timeout: {to}\n{pool_extra}{routing}users:\n  - name: app\n    password: app\n  - name: admin\n    password: admin\n    admin: true\ndatabases:\n  app:\n    primary: 127.0.0.1:{primary}\n    replicas: [{replicas}]\n{extra}",
            max = self.max_clients,
            mode = self.mode,
            size = self.pool_size,
            to = self.checkout_timeout,
            primary = c.primary.port,
            replicas = replicas.join(", "),
            extra = self.extra,
            routing = self.routing_off(),
            pool_extra = self.pool_extra,
        )
    }

    /// `routing: {read_write_split: false}` unless `extra` has a routing block of
    /// its own: the suites that look at the primary's backends expect every statement
    /// there (routing has its own tests: routing.rs, replicas.rs, and the drivers).
    fn routing_off(&self) -> &'static str {
        if self.extra.contains("routing:") {
            ""
        } else {
            "routing:\n  read_write_split: false\n"
        }
    }

    pub fn start(&self) -> Pgmux {
        self.start_with(|y| y)
    }

    /// Starts pgmux with the generated YAML edited by `edit`.
    pub fn start_with(&self, edit: impl FnOnce(String) -> String) -> Pgmux {
        start_config(|port| edit(self.yaml(port)))
    }
}

/// Starts pgmux with a whole config, `yaml(listen port)` (for a test with its own cluster).
pub fn start_config(yaml: impl FnOnce(u16) -> String) -> Pgmux {
    let port = free_port();
    start_on(port, &yaml(port))
}

/// Starts pgmux listening on `port` (chosen by the caller: a fleet's instances name
/// each other's ports, and a restart takes the same one) with the whole config `yaml`.
pub fn start_on(port: u16, yaml: &str) -> Pgmux {
    let p = spawn_on(port, yaml);
    p.wait_listening();
    p
}

/// Like [`start_on`], without waiting for the listener (another process may already
/// listen on the port, with `SO_REUSEPORT`).
pub fn spawn_on(port: u16, yaml: &str) -> Pgmux {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("pgmux.yaml");
    std::fs::write(&config, yaml).unwrap();
    let log = dir.path().join("pgmux.log");
    let child = Command::new(pgmux_bin())
        .arg("--config")
        .arg(&config)
        .env("PGMUX_LOG", "info")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn pgmux");
    Pgmux { child: Some(child), port, dir, config, log }
}

impl Pgmux {
    pub fn wait_listening(&self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "pgmux did not start: {}", self.log_text());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn conn_str(&self, user: &str, password: &str, db: &str) -> String {
        format!("host=127.0.0.1 port={} user={user} password={password} dbname={db} connect_timeout=10", self.port)
    }

    pub fn url(&self) -> String {
        format!("postgres://app:app@127.0.0.1:{}/app", self.port)
    }

    /// A tokio-postgres client as user app.
    pub async fn connect(&self) -> tokio_postgres::Client {
        self.connect_as("app", "app", "app").await.expect("connect through pgmux")
    }

    /// A client as user app with an application_name, to find its server backends.
    pub async fn connect_named(&self, app_name: &str) -> tokio_postgres::Client {
        let (client, conn) =
            tokio_postgres::connect(&format!("{} application_name={app_name}", self.conn_str("app", "app", "app")), tokio_postgres::NoTls)
                .await
                .expect("connect through pgmux");
        tokio::spawn(async move {
            let _ = conn.await;
        });
        client
    }

    pub async fn connect_as(&self, user: &str, pw: &str, db: &str) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
        let (client, conn) = tokio_postgres::connect(&self.conn_str(user, pw, db), tokio_postgres::NoTls).await?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        Ok(client)
    }

    pub fn signal(&self, sig: i32) {
        unsafe { libc::kill(self.pid() as i32, sig) };
    }

    /// Kills the process with SIGKILL (no drain, nothing cleaned) and waits for it.
    pub fn kill9(&mut self) {
        if let Some(c) = self.child.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// The pgmux process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// pgmux's resident set size (VmRSS) in KiB; panics if it is not running.
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).expect("pgmux is running");
        let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:")).expect("VmRSS in /proc/PID/status");
        line.trim().trim_end_matches("kB").trim().parse().unwrap()
    }

    /// True while the process has not exited.
    pub fn running(&mut self) -> bool {
        matches!(self.child.as_mut().unwrap().try_wait(), Ok(None))
    }

    /// Waits for the process to exit; returns its exit status.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut().unwrap();
        loop {
            if let Some(s) = child.try_wait().unwrap() {
                return Some(s);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Pgmux {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            eprintln!("--- pgmux log (last 30 lines) ---");
            for l in tail.iter().rev() {
                eprintln!("{l}");
            }
        }
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// A superuser tokio-postgres client straight to a node (bypassing pgmux).
pub async fn direct(port: u16) -> tokio_postgres::Client {
    let (client, conn) =
        tokio_postgres::connect(&format!("host=127.0.0.1 port={port} user=postgres password=postgres dbname=app"), tokio_postgres::NoTls)
            .await
            .expect("direct connection");
    tokio::spawn(async move {
        let _ = conn.await;
    });
    client
}

/// The SQLSTATE of a tokio-postgres error, if the server (or pgmux) sent one.
pub fn sqlstate(e: &tokio_postgres::Error) -> Option<String> {
    e.as_db_error().map(|d| d.code().code().to_string())
}

/// Runs `pgmux check` on YAML text; returns (success, stderr).
pub fn check_config(yaml: &str) -> (bool, String) {
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(yaml.as_bytes()).unwrap();
    let out = Command::new(pgmux_bin()).arg("check").arg("--config").arg(f.path()).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// Counts the primary's backends of user `app` with an application_name (tests run in
/// parallel on one cluster: each test marks its own clients) in a given state.
pub async fn app_backends(admin: &tokio_postgres::Client, app_name: &str, state: Option<&str>) -> i64 {
    let rows = admin
        .query_one(
            "select count(*) from pg_stat_activity where usename = 'app' and application_name = $1 and ($2::text is null or state = $2)",
            &[&app_name, &state],
        )
        .await
        .unwrap();
    rows.get(0)
}

/// The message of a server (or pgmux) error.
pub fn message(e: &tokio_postgres::Error) -> String {
    e.as_db_error().map(|d| d.message().to_string()).unwrap_or_else(|| e.to_string())
}
pub mod pki;
pub mod raw;

/// A two-worker multi-threaded runtime for a test.
pub fn mt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap()
}

/// The first column of the first row of a simple query.
pub async fn scalar(c: &tokio_postgres::Client, sql: &str) -> String {
    let msgs = c.simple_query(sql).await.unwrap();
    msgs.iter()
        .find_map(|m| match m {
            tokio_postgres::SimpleQueryMessage::Row(r) => Some(r.get(0).unwrap_or("").to_string()),
            _ => None,
        })
        .unwrap_or_else(|| panic!("no row for {sql}: {msgs:?}"))
}

/// GET over plain HTTP/1.1 (the metrics endpoint); returns (status, body).
pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let body = text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()).unwrap_or_default();
    (text[9..12].parse().unwrap(), body)
}

/// Runs an admin command; returns (column names, rows as name -> value maps).
pub async fn show(c: &tokio_postgres::Client, cmd: &str) -> (Vec<String>, Vec<std::collections::HashMap<String, String>>) {
    let msgs = c.simple_query(cmd).await.unwrap();
    let mut cols = vec![];
    let mut rows = vec![];
    for m in msgs {
        match m {
            tokio_postgres::SimpleQueryMessage::RowDescription(d) => cols = d.iter().map(|c| c.name().to_string()).collect(),
            tokio_postgres::SimpleQueryMessage::Row(r) => {
                let mut map = std::collections::HashMap::new();
                for (i, c) in r.columns().iter().enumerate() {
                    map.insert(c.name().to_string(), r.get(i).unwrap_or("").to_string());
                }
                rows.push(map);
            }
            _ => {}
        }
    }
    (cols, rows)
}
