//! `pgmux import-pgbouncer pgbouncer.ini [userlist.txt]`: a PgBouncer configuration as
//! pgmux YAML, plus every setting that has no equivalent, with the reason (nothing is
//! dropped silently). [`convert`] is pure; [`cli`] reads the files and prints.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::ExitCode;

use crate::config::{Config, ServerAddr};

/// The YAML (valid for pgmux unless `untranslated` says otherwise) and what it could not say.
#[derive(Debug, Clone)]
pub struct Conversion {
    pub yaml: String,
    pub untranslated: Vec<Untranslated>,
}

/// A setting, or part of one, without equivalent. `value` never holds a password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Untranslated {
    pub key: String,
    pub value: String,
    pub reason: String,
}

impl fmt::Display for Untranslated {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let value = if self.value.is_empty() { String::new() } else { format!(" = {}", self.value) };
        write!(f, "{}{value}: {}", self.key, self.reason)
    }
}

/// Malformed input: `file` is `pgbouncer.ini` or `userlist.txt`, `line` 1-based.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportError {
    pub file: &'static str,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for ImportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file, self.line, self.message)
    }
}

impl std::error::Error for ImportError {}

const INI: &str = "pgbouncer.ini";
const USERLIST: &str = "userlist.txt";

#[derive(PartialEq)]
enum Unit {
    Secs,
    Count,
    Bytes,
}

/// PgBouncer key, pgmux key, unit, PgBouncer's default where it differs from pgmux's
/// (written when the key is not set), and why 0 cannot be written (PgBouncer: off).
struct Num(&'static str, &'static str, Unit, Option<&'static str>, Option<&'static str>);

const NUMERIC: &[Num] = &[
    Num("max_client_conn", "max_client_connections", Unit::Count, Some("100"), Some("must be at least 1")),
    Num("default_pool_size", "pool.size", Unit::Count, Some("20"), Some("must be at least 1")),
    Num("query_wait_timeout", "pool.checkout_timeout", Unit::Secs, Some("120"), Some("0 (wait forever) is not offered")),
    Num("server_idle_timeout", "pool.server_idle_timeout", Unit::Secs, None, Some("0 (never close idle connections) is not offered")),
    Num("server_lifetime", "pool.server_lifetime", Unit::Secs, None, None),
    Num("server_connect_timeout", "pool.server_connect_timeout", Unit::Secs, Some("15"), Some("0 (no timeout) is not offered")),
    Num("server_check_delay", "pool.server_check_delay", Unit::Secs, None, None),
    Num("client_login_timeout", "startup_timeout", Unit::Secs, Some("60"), Some("0 (no timeout) is not offered")),
    Num(
        "max_prepared_statements",
        "max_prepared_statements",
        Unit::Count,
        None,
        Some("0 (off) is not needed: pgmux keeps prepared statements working in transaction mode"),
    ),
    Num("max_packet_size", "max_message_size", Unit::Bytes, None, Some("must be at least 1kB")),
    Num("min_pool_size", "pool.min_pool_size", Unit::Count, None, None),
    Num("reserve_pool_size", "pool.reserve_pool_size", Unit::Count, None, None),
    Num("reserve_pool_timeout", "pool.reserve_pool_timeout", Unit::Secs, None, None),
    Num("idle_transaction_timeout", "pool.idle_transaction_timeout", Unit::Secs, None, None),
    Num("client_idle_timeout", "pool.client_idle_timeout", Unit::Secs, None, None),
    Num("query_timeout", "pool.query_timeout", Unit::Secs, None, None),
    Num("max_db_connections", "pool.max_db_connections", Unit::Count, None, None),
    Num("max_user_connections", "pool.max_user_connections", Unit::Count, None, None),
];

/// Output order of the scalar keys.
const ORDER: &[&str] = &[
    "listen",
    "max_client_connections",
    "auth_type",
    "auth_user",
    "auth_query",
    "tls.mode",
    "tls.cert",
    "tls.key",
    "server_tls.mode",
    "server_tls.ca",
    "server_tls.cert",
    "server_tls.key",
    "max_prepared_statements",
    "max_message_size",
    "startup_timeout",
    "pool.mode",
    "pool.size",
    "pool.checkout_timeout",
    "pool.server_idle_timeout",
    "pool.server_lifetime",
    "pool.server_connect_timeout",
    "pool.server_check_delay",
    "pool.server_reset_query",
    "pool.min_pool_size",
    "pool.reserve_pool_size",
    "pool.reserve_pool_timeout",
    "pool.max_db_connections",
    "pool.max_user_connections",
    "pool.idle_transaction_timeout",
    "pool.client_idle_timeout",
    "pool.query_timeout",
];

/// Why a `[pgbouncer]` key is not translated; a key ending in `_` is a prefix.
const REASONS: &[(&[&str], &str)] = &[
    (
        &["client_tls_", "server_tls_"],
        "pgmux uses rustls's defaults (TLS 1.2 and 1.3, its safe cipher suites) and does not check client certificates",
    ),
    (&["unix_socket_"], "pgmux listens on TCP only"),
    (&["logfile", "syslog", "syslog_"], "pgmux logs to stderr (PGMUX_LOG sets the level)"),
    (&["log_", "verbose"], "no such switch: PGMUX_LOG sets what is logged"),
    (&["pidfile"], "pgmux does not daemonize: run it under a supervisor"),
    (&["user"], "pgmux does not switch users: start it as the user it should run as"),
    (&["stats_users"], "no read-only stats users: give the admin console to admin users (admin: true)"),
    (&["stats_period"], "no periodic stats log: pgmux exports metrics at metrics_listen"),
    (&["ignore_startup_parameters"], "not needed: pgmux accepts every startup parameter and keeps it per client"),
    (&["track_extra_parameters"], "not needed: every startup parameter and SET is kept per client"),
    (&["tcp_"], "not configurable: pgmux sets TCP_NODELAY and keepalives on server connections"),
    (&["dns_"], "not configurable: pgmux resolves host names when it connects"),
    (&["server_login_retry"], "not configurable: pgmux retries with backoff, 250ms doubling to 5s"),
    (&["server_round_robin"], "not supported: each database has one primary"),
    (&["server_reset_query_always"], "not supported: server_reset_query runs in session mode only"),
    (&["auth_dbname"], "auth_query runs in the database the client asks for"),
    (&["auth_hba_file"], "not translated: write the rules as pgmux's hba: list (allow/deny by users, databases, addresses)"),
];

/// Per-database (`[databases]`) and per-user (`[users]`) pool settings: PgBouncer's
/// key, pgmux's key under `databases.<name>` / `users[]`, and the smallest value pgmux
/// takes.
const DB_KEYS: &[(&str, &str, u64)] = &[
    ("pool_size", "pool_size", 1),
    ("min_pool_size", "min_pool_size", 0),
    ("reserve_pool", "reserve_pool_size", 0),
    ("reserve_pool_size", "reserve_pool_size", 0),
    ("max_db_connections", "max_db_connections", 0),
];
const USER_KEYS: &[(&str, &str, u64)] = &[("pool_size", "pool_size", 1), ("max_user_connections", "max_user_connections", 0)];

/// A per-database or per-user count: `Ok(Some)` to write, `Ok(None)` reported as
/// untranslated, `Err` when it is not a number.
fn per_entry(
    out: &mut Out,
    key: &str,
    (from, to, min): (&str, &'static str, u64),
    v: &str,
) -> Result<Option<(&'static str, String)>, String> {
    let n: u64 = v.parse().map_err(|_| format!("{key}: {from} \"{v}\" is not a valid number"))?;
    if n < min {
        out.skip(key, format!("{from}={v}"), format!("must be at least {min} in pgmux: the global setting applies"));
        return Ok(None);
    }
    Ok(Some((to, n.to_string())))
}

#[derive(Default)]
struct Out {
    scalars: Vec<(&'static str, String, String)>,
    untranslated: Vec<Untranslated>,
}

impl Out {
    fn set(&mut self, key: &'static str, value: String, comment: &str) {
        self.scalars.retain(|s| s.0 != key);
        self.scalars.push((key, value, comment.to_string()));
    }
    fn skip(&mut self, key: impl Into<String>, value: impl Into<String>, reason: impl Into<String>) {
        self.untranslated.push(Untranslated { key: key.into(), value: value.into(), reason: reason.into() });
    }
    /// A number of NUMERIC entry `n`; Err(message) if `v` is not a number.
    fn numeric(&mut self, n: &Num, v: &str, comment: &str) -> Result<(), String> {
        let Num(key, to, unit, _, zero) = n;
        let bad = || format!("{key}: \"{v}\" is not a valid number");
        let x: f64 = v.parse().ok().filter(|x: &f64| x.is_finite() && *x >= 0.0).ok_or_else(bad)?;
        if *unit != Unit::Secs && x.fract() != 0.0 {
            return Err(bad());
        }
        if let (true, Some(why)) = (x == 0.0 || (*unit == Unit::Bytes && x < 1024.0), zero) {
            self.skip(*key, v, format!("{why}; pgmux's default is used"));
            return Ok(());
        }
        let text = match unit {
            Unit::Secs => duration(x),
            Unit::Count => format!("{x}"),
            Unit::Bytes if x > (1u64 << 30) as f64 => {
                self.skip(*key, v, "pgmux accepts messages up to 1GB: 1GB is used");
                "1GB".into()
            }
            Unit::Bytes => bytes(x as u64),
        };
        self.set(to, text, comment);
        Ok(())
    }
}

/// Seconds as `500ms`, `45s`, `10m`, `1h`.
fn duration(secs: f64) -> String {
    let ms = (secs * 1000.0).round() as u64;
    let s = ms / 1000;
    match () {
        _ if ms % 1000 != 0 => format!("{ms}ms"),
        _ if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        _ if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        _ => format!("{s}s"),
    }
}

fn bytes(n: u64) -> String {
    [(30, "GB"), (20, "MB"), (10, "kB")]
        .iter()
        .find(|(shift, _)| n % (1 << shift) == 0)
        .map_or(n.to_string(), |(shift, unit)| format!("{}{unit}", n >> shift))
}

/// A YAML scalar that reads back as exactly `s`: plain when that is safe, else single-quoted
/// (a control character would make the YAML invalid, which the final check reports).
fn ys(s: &str) -> String {
    let word = s.starts_with(|c: char| c.is_ascii_alphabetic() || c == '_');
    let address = s.starts_with(|c: char| c.is_ascii_digit()) && s.contains('.') && s.contains(':');
    let reserved = ["true", "false", "yes", "no", "on", "off", "null", "y", "n"].contains(&s.to_ascii_lowercase().as_str());
    if (word || address) && !reserved && !s.ends_with(':') && s.chars().all(|c| c.is_ascii_alphanumeric() || "_.-/:".contains(c)) {
        return s.to_string();
    }
    format!("'{}'", s.replace('\'', "''"))
}

/// A libpq-style `key=value key='quoted \' value'` string, keys lowercased.
fn connstr(s: &str) -> Result<Vec<(String, String)>, String> {
    let (mut out, mut it) = (Vec::new(), s.trim().chars().peekable());
    let ws = |it: &mut std::iter::Peekable<std::str::Chars>| while it.next_if(|c| c.is_whitespace()).is_some() {};
    while it.peek().is_some() {
        let k: String = std::iter::from_fn(|| it.next_if(|c| *c != '=' && !c.is_whitespace())).collect();
        ws(&mut it);
        if k.is_empty() || it.next() != Some('=') {
            return Err(format!("expected key=value in the connection string, at \"{k}\""));
        }
        ws(&mut it);
        let mut v = String::new();
        if it.next_if_eq(&'\'').is_some() {
            loop {
                match it.next().ok_or(format!("unterminated quote in {k}="))? {
                    '\'' => break,
                    '\\' => v.extend(it.next()),
                    c => v.push(c),
                }
            }
        } else {
            v.extend(std::iter::from_fn(|| it.next_if(|c| !c.is_whitespace())));
        }
        ws(&mut it);
        out.push((k.to_ascii_lowercase(), v));
    }
    Ok(out)
}

/// A line without surrounding space; None if blank or a `;` or `#` comment.
fn content(raw: &str) -> Option<&str> {
    Some(raw.trim()).filter(|t| !t.is_empty() && !t.starts_with([';', '#']))
}

/// `[pgbouncer]` settings: (line, key, value); `[databases]` and `[users]` entries:
/// (line, name, connection string).
type Lines = Vec<(usize, String, String)>;
/// A user as written: name, password, admin, comment, per-user keys.
type User = (String, String, bool, String, Vec<(&'static str, String)>);
/// A database as written: name, primary, dbname, per-database keys.
type Db = (String, String, Option<String>, Vec<(&'static str, String)>);

/// Translates pgbouncer.ini (and userlist.txt) text to pgmux YAML.
pub fn convert(ini: &str, userlist: Option<&str>) -> Result<Conversion, ImportError> {
    let mut out = Out::default();
    let (settings, databases, user_settings) = read_ini(ini, &mut out)?;
    let (auth_type, auth_file, admins) = translate_settings(&settings, &mut out)?;
    let mut users = userlist::read_users(userlist, &admins, &mut out)?;
    translate_user_settings(&user_settings, &mut users, &mut out)?;
    if let (None, Some(f)) = (userlist, auth_file) {
        out.skip("auth_file", f, "not read: give it as the second argument (pgmux import-pgbouncer pgbouncer.ini userlist.txt)");
    }
    match auth_type {
        None => {}
        Some("md5") if users.iter().any(|u| u.1.starts_with("SCRAM-SHA-256$")) => {
            out.skip("auth_type", "md5", "pgmux has one method for all users, and some have SCRAM verifiers: scram-sha-256 is used");
            out.set("auth_type", "scram-sha-256".into(), "");
        }
        Some(a @ ("md5" | "scram-sha-256")) => out.set("auth_type", a.into(), ""),
        Some(other) => out.skip("auth_type", other, "not supported: pgmux checks passwords with scram-sha-256 (used) or md5"),
    }
    let dbs = translate_databases(&databases, &mut out)?;
    let yaml = render(&mut out.scalars, &users, &dbs);
    if let Err(e) = Config::parse(&yaml, Path::new("pgmux.yaml")) {
        out.skip(e.key, "", format!("pgmux rejects the result until this is fixed: {}", e.message));
    }
    Ok(Conversion { yaml, untranslated: out.untranslated })
}

/// Splits the ini file into `[pgbouncer]` settings (keys lowercased), `[databases]` and
/// `[users]` entries; anything else is reported.
fn read_ini(ini: &str, out: &mut Out) -> Result<(Lines, Lines, Lines), ImportError> {
    let (mut settings, mut databases, mut users) = (Vec::new(), Vec::new(), Vec::new());
    let mut section: Option<String> = None;
    for (i, raw) in ini.lines().enumerate() {
        let err = |message: String| ImportError { file: INI, line: i + 1, message };
        let Some(t) = content(raw) else { continue };
        if let Some(path) = t.strip_prefix("%include") {
            out.skip("%include", path.trim(), "included files are not read: import them separately");
            continue;
        }
        if let Some(rest) = t.strip_prefix('[') {
            let name = rest.strip_suffix(']').ok_or_else(|| err(format!("unterminated section header \"{t}\"")))?;
            section = Some(name.trim().to_ascii_lowercase());
            continue;
        }
        let (k, v) = t.split_once('=').ok_or_else(|| err(format!("expected key = value, not \"{t}\"")))?;
        let (k, v) = (k.trim().trim_matches('"'), v.trim().to_string());
        match section.as_deref() {
            None => return Err(err(format!("\"{k}\" is outside any section"))),
            Some("pgbouncer") => {
                let k = k.to_ascii_lowercase();
                let v = if k == "pool_mode" || k == "auth_type" { v.to_ascii_lowercase() } else { v };
                settings.push((i + 1, k, v))
            }
            Some("databases") => databases.push((i + 1, k.to_string(), v)),
            Some("users") => users.push((i + 1, k.to_string(), v)),
            Some(s) => out.skip(format!("[{s}] {k}"), v, format!("pgmux has no [{s}] section")),
        }
    }
    Ok((settings, databases, users))
}

/// The settings that depend on the users: auth_type, auth_file, admin_users.
type Auth<'a> = (Option<&'a str>, Option<&'a str>, Vec<&'a str>);

/// Translates `[pgbouncer]`; returns what depends on the users.
fn translate_settings<'a>(settings: &'a Lines, out: &mut Out) -> Result<Auth<'a>, ImportError> {
    let (mut listen_addr, mut listen_port, mut auth_type, mut auth_file) = (None, 6432u16, None, None);
    let mut admins = Vec::new();
    for (line, k, v) in settings {
        let err = |message: String| ImportError { file: INI, line: *line, message };
        match (k.as_str(), v.as_str()) {
            ("listen_addr", v) => listen_addr = Some(v),
            ("listen_port", v) => listen_port = v.parse().map_err(|_| err(format!("listen_port: \"{v}\" is not a port")))?,
            ("auth_type", v) => auth_type = Some(v),
            ("auth_file", v) => auth_file = Some(v),
            ("admin_users", v) => admins = v.split(',').map(str::trim).filter(|s| !s.is_empty()).collect(),
            ("pool_mode", v @ ("session" | "transaction")) => out.set("pool.mode", v.into(), ""),
            ("pool_mode", v) => out.skip(k, v, "not offered: pgmux pools by transaction (default) or session"),
            ("server_reset_query", v) => out.set("pool.server_reset_query", ys(v), ""),
            ("client_tls_sslmode", "disable") | ("unix_socket_dir", "") => {}
            ("client_tls_sslmode", "allow" | "prefer") => out.set("tls.mode", "allow".into(), ""),
            ("client_tls_sslmode", "require") => out.set("tls.mode", "require".into(), ""),
            ("client_tls_sslmode", "verify-ca" | "verify-full") => {
                out.set("tls.mode", "require".into(), "client certificates are not checked")
            }
            ("client_tls_cert_file", v) => out.set("tls.cert", ys(v), ""),
            ("client_tls_key_file", v) => out.set("tls.key", ys(v), ""),
            ("server_tls_sslmode", v @ ("disable" | "prefer" | "require" | "verify-ca" | "verify-full")) => {
                out.set("server_tls.mode", v.into(), "")
            }
            ("server_tls_sslmode", "allow") => out.set("server_tls.mode", "prefer".into(), "PgBouncer's allow: pgmux tries TLS first"),
            ("auth_user", v) => out.set("auth_user", ys(v), ""),
            ("auth_query", v) => out.set("auth_query", ys(v), ""),
            ("server_tls_ca_file", v) => out.set("server_tls.ca", ys(v), ""),
            ("server_tls_cert_file", v) => out.set("server_tls.cert", ys(v), ""),
            ("server_tls_key_file", v) => out.set("server_tls.key", ys(v), ""),
            (k, v) => match NUMERIC.iter().find(|n| n.0 == k) {
                Some(n) => out.numeric(n, v, "").map_err(err)?,
                None => {
                    let known = |p: &&str| *p == k || (p.ends_with('_') && k.starts_with(p));
                    let reason = REASONS.iter().find(|(keys, _)| keys.iter().any(known));
                    out.skip(k, v, reason.map_or("no equivalent in pgmux", |r| r.1));
                }
            },
        }
    }
    let set = |key: &str| settings.iter().any(|s| s.1 == key);
    for n in NUMERIC.iter().filter(|n| !set(n.0)) {
        if let Some(default) = n.3 {
            out.numeric(n, default, &format!("PgBouncer's default ({} not set)", n.0)).expect("valid default");
        }
    }
    if !set("pool_mode") {
        out.set("pool.mode", "session".into(), "PgBouncer's default (pool_mode not set)");
    }
    let addrs: Vec<&str> = listen_addr.unwrap_or("").split(',').map(str::trim).filter(|s| !s.is_empty()).collect();
    let localhost = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let ip = match addrs.first().copied() {
        Some("*") => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Some("localhost") => localhost,
        Some(a) => a.parse().unwrap_or_else(|_| {
            out.skip("listen_addr", a, "not an IP address: 127.0.0.1 is used");
            localhost
        }),
        None => {
            out.skip("listen_addr", "", "not set: PgBouncer then listens on its unix socket only; pgmux on TCP, 127.0.0.1");
            localhost
        }
    };
    if addrs.len() > 1 {
        out.skip("listen_addr", listen_addr.unwrap_or(""), format!("pgmux listens on one address: {} is used", addrs[0]));
    }
    out.set("listen", ys(&SocketAddr::new(ip, listen_port).to_string()), "");
    Ok((auth_type, auth_file, admins))
}

/// `[users]`: `pool_size` and `max_user_connections` per user; the rest reported.
fn translate_user_settings(lines: &Lines, users: &mut [User], out: &mut Out) -> Result<(), ImportError> {
    for (line, name, v) in lines {
        let err = |message: String| ImportError { file: INI, line: *line, message };
        let key = format!("users.{name}");
        let Some(user) = users.iter_mut().find(|u| u.0 == *name) else {
            out.skip(format!("[users] {name}"), v, "not in userlist.txt: a user's settings need the user");
            continue;
        };
        for (k, v) in connstr(v).map_err(err)? {
            match USER_KEYS.iter().find(|u| u.0 == k) {
                Some(&spec) => {
                    if let Some((to, v)) = per_entry(out, &key, spec, &v).map_err(err)? {
                        user.4.retain(|e| e.0 != to);
                        user.4.push((to, v));
                    }
                }
                None if k == "pool_mode" => out.skip(&key, format!("{k}={v}"), "per-user pool_mode is not supported: pool.mode applies"),
                None => out.skip(&key, format!("{k}={v}"), "no per-user equivalent in pgmux"),
            }
        }
    }
    Ok(())
}

/// `[databases]`; connection parameters without equivalent reported.
fn translate_databases(databases: &Lines, out: &mut Out) -> Result<Vec<Db>, ImportError> {
    let mut dbs = Vec::new();
    for (line, name, v) in databases {
        let err = |message: String| ImportError { file: INI, line: *line, message };
        let params = connstr(v).map_err(err)?;
        let key = format!("databases.{name}");
        let shown = |k: &str, v: &str| if k == "password" { "password=***".to_string() } else { format!("{k}={v}") };
        if name == "*" || crate::config::is_admin_database(name) {
            let all: Vec<String> = params.iter().map(|(k, v)| shown(k, v)).collect();
            let why = match name.as_str() {
                "*" => "the fallback database (any database name) is not offered: list each database",
                _ => "reserved for pgmux's admin console",
            };
            out.skip(key, all.join(" "), why);
            continue;
        }
        let (mut host, mut port, mut dbname, mut extra) = (String::new(), 5432u16, None, Vec::new());
        for (k, v) in params {
            match k.as_str() {
                "host" => host = v,
                "port" => port = v.parse().map_err(|_| err(format!("{name}: port \"{v}\" is not a port")))?,
                "dbname" => dbname = Some(v).filter(|d| d != name),
                "user" => out.skip(&key, shown(&k, &v), "no forced user: pgmux logs in to PostgreSQL as the client's user"),
                "password" => out.skip(&key, shown(&k, &v), "no forced user: pgmux logs in with the client's own password"),
                k if DB_KEYS.iter().any(|d| d.0 == k) => {
                    let spec = *DB_KEYS.iter().find(|d| d.0 == k).expect("listed");
                    if let Some((to, v)) = per_entry(out, &key, spec, &v).map_err(err)? {
                        extra.retain(|e: &(&str, String)| e.0 != to);
                        extra.push((to, v));
                    }
                }
                "pool_mode" => out.skip(&key, shown(&k, &v), "per-database pool_mode is not supported: pool.mode applies"),
                _ => out.skip(&key, shown(&k, &v), "no per-database equivalent in pgmux"),
            }
        }
        if host.is_empty() || host.starts_with('/') {
            let shown = if host.is_empty() { String::new() } else { format!("host={host}") };
            out.skip(&key, shown, "no TCP host: PgBouncer uses the unix socket, pgmux connects over TCP: 127.0.0.1 is used");
            host = "127.0.0.1".into();
        } else if let Some((first, _)) = host.split_once(',') {
            let why = format!("several hosts are not offered: {first} is the primary (put read replicas under replicas:)");
            out.skip(&key, format!("host={host}"), why);
            host = first.trim().to_string();
        }
        dbs.push((name.clone(), ServerAddr { host, port }.to_string(), dbname, extra));
    }
    Ok(dbs)
}

/// The YAML text: scalars in [`ORDER`], then users and databases.
fn render(scalars: &mut [(&'static str, String, String)], users: &[User], dbs: &[Db]) -> String {
    let mut y = String::from("# pgmux configuration, imported from PgBouncer by `pgmux import-pgbouncer`.\n");
    let line = |y: &mut String, indent: &str, key: &str, value: &str, comment: &str| {
        let c = if comment.is_empty() { String::new() } else { format!("  # {comment}") };
        y.push_str(&format!("{indent}{key}: {value}{c}\n"));
    };
    scalars.sort_by_key(|s| ORDER.iter().position(|k| *k == s.0));
    for (k, v, c) in scalars.iter().filter(|s| !s.0.contains('.')) {
        line(&mut y, "", k, v, c);
    }
    // Blocks: `pool:` always, the others when they have keys.
    for block in ["tls", "server_tls", "pool"] {
        let keys: Vec<_> = scalars.iter().filter(|s| s.0.split_once('.').is_some_and(|(b, _)| b == block)).collect();
        if !keys.is_empty() || block == "pool" {
            y.push_str(&format!("{block}:\n"));
        }
        for (k, v, c) in keys {
            line(&mut y, "  ", &k[block.len() + 1..], v, c);
        }
    }
    y.push_str(if users.is_empty() { "users: []\n" } else { "users:\n" });
    for (name, pw, admin, comment, extra) in users {
        line(&mut y, "  - ", "name", &ys(name), "");
        line(&mut y, "    ", "password", &ys(pw), comment);
        if *admin {
            line(&mut y, "    ", "admin", "true", "");
        }
        for (k, v) in extra {
            line(&mut y, "    ", k, v, "");
        }
    }
    y.push_str(if dbs.is_empty() { "databases: {}\n" } else { "databases:\n" });
    for (name, primary, dbname, extra) in dbs {
        y.push_str(&format!("  {}:\n", ys(name)));
        line(&mut y, "    ", "primary", &ys(primary), "");
        if let Some(d) = dbname {
            line(&mut y, "    ", "dbname", &ys(d), "");
        }
        for (k, v) in extra {
            line(&mut y, "    ", k, v, "");
        }
    }
    y
}

/// The command: YAML on stdout, untranslated settings on stderr; exit 2 on bad input.
pub fn cli(ini: &Path, userlist: Option<&Path>) -> ExitCode {
    let read = |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: cannot read: {e}", p.display()));
    let result = read(ini).and_then(|i| {
        let u = userlist.map(read).transpose()?;
        convert(&i, u.as_deref()).map_err(|e| {
            let path = if e.file == USERLIST { userlist.unwrap_or(ini) } else { ini };
            format!("{}:{}: {}", path.display(), e.line, e.message)
        })
    });
    match result {
        Ok(c) => {
            print!("{}", c.yaml);
            if !c.untranslated.is_empty() {
                eprintln!("{} setting(s) not translated:", c.untranslated.len());
                c.untranslated.iter().for_each(|u| eprintln!("  {u}"));
            }
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("pgmux import-pgbouncer: {e}");
            ExitCode::from(2)
        }
    }
}

mod userlist;

#[cfg(test)]
mod tests;
