//! Processes: freezing a PostgreSQL node (SIGSTOP: its sockets stay open and the
//! kernel keeps answering TCP, but nothing is read or written), and the test
//! process's file descriptor limit.

use pgmux::cluster::Cluster;

/// The postmaster of the node at `port` and all its children (backends, WAL
/// sender/receiver, checkpointer ...).
fn node_pids(c: &Cluster, port: u16) -> Vec<i32> {
    let postmaster = c.postmaster_pid(port).expect("the node runs");
    let mut pids = vec![postmaster];
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else { continue };
        // "pid (comm) state ppid ...": comm may hold spaces and parentheses.
        let ppid = stat.rsplit_once(')').and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok());
        if ppid == Some(postmaster) {
            pids.push(pid);
        }
    }
    pids
}

/// Freezes every process of the node at `port`; returns their pids for [`thaw`].
pub fn freeze(c: &Cluster, port: u16) -> Vec<i32> {
    let pids = node_pids(c, port);
    for &p in &pids {
        // SAFETY: kill(2) of processes of our own cluster.
        assert_eq!(unsafe { libc::kill(p, libc::SIGSTOP) }, 0, "SIGSTOP {p}");
    }
    // Children forked meanwhile (the postmaster was stopped first).
    for p in node_pids(c, port) {
        if !pids.contains(&p) {
            unsafe { libc::kill(p, libc::SIGSTOP) };
        }
    }
    pids
}

pub fn thaw(c: &Cluster, port: u16, pids: &[i32]) {
    for p in pids.iter().copied().chain(node_pids(c, port)) {
        // SAFETY: as in `freeze`.
        unsafe { libc::kill(p, libc::SIGCONT) };
    }
}

/// Raises the soft RLIMIT_NOFILE to the hard one; panics if that is below `need`.
pub fn raise_nofile(need: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain get/setrlimit on a local struct.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
    assert!(lim.rlim_cur >= need, "RLIMIT_NOFILE hard limit {} is below the {need} descriptors this test needs", lim.rlim_max);
}

/// Runs `f` (which starts a process) with the soft RLIMIT_NOFILE at `soft`, then
/// puts it back: the child starts with the usual default of a stock system.
pub fn with_soft_nofile<T>(soft: u64, f: impl FnOnce() -> T) -> T {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: as in `raise_nofile`.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        let low = libc::rlimit { rlim_cur: soft.min(lim.rlim_cur), rlim_max: lim.rlim_max };
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &low), 0);
    }
    let r = f();
    unsafe { assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0) };
    r
}

/// The soft limit on open files of process `pid` (from /proc/PID/limits).
pub fn open_files_limit(pid: u32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).expect("Max open files in /proc/PID/limits");
    line["Max open files".len()..].split_whitespace().next().unwrap().parse().unwrap()
}
