//! Accepting clients: the listening sockets (`listen`, with `SO_REUSEPORT`, and the
//! Unix socket `<unix_socket_dir>/.s.PGSQL.<port>`), and the loop that accepts
//! connections until shutdown begins and hands each to a worker thread
//! ([`Spread`](super::workers::Spread): with `workers: 1`, a task on this thread).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::unix::AsyncFd;

use super::workers::{Accepted, Spread};
use crate::config::Config;
use crate::state::State;

/// Where clients connect.
pub struct Listener {
    tcp: AsyncFd<std::net::TcpListener>,
    unix: Option<(AsyncFd<std::os::unix::net::UnixListener>, SocketFile)>,
}

/// The Unix socket's file, removed when the listener goes (at exit, or when its task
/// is dropped), unless another process has put its own there since (a new pgmux
/// taking over, as with `SO_REUSEPORT` on the TCP port).
struct SocketFile {
    path: PathBuf,
    inode: u64,
}

impl Drop for SocketFile {
    fn drop(&mut self) {
        use std::os::unix::fs::MetadataExt;
        if std::fs::symlink_metadata(&self.path).is_ok_and(|m| m.ino() == self.inode) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Listener {
    /// Binds `listen`, with `SO_REUSEPORT`: a new pgmux process started on the same
    /// address takes new clients while an old one drains. With `unix_socket_dir`,
    /// also the Unix socket there, named as PostgreSQL names its own.
    pub fn bind(config: &Config) -> io::Result<Listener> {
        let addr = config.listen_addr();
        let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.bind(&addr.into())?;
        sock.listen(4096)?;
        sock.set_nonblocking(true)?;
        let tcp = watch(std::net::TcpListener::from(sock))?;
        let unix = match &config.unix_socket_dir {
            Some(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", addr.port()));
                Some(bind_unix(path.clone()).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?)
            }
            None => None,
        };
        Ok(Listener { tcp, unix })
    }

    /// Accepts clients until shutdown begins and gives each to `spread`; then
    /// takes, without waiting, those the kernel already queued (they run their
    /// first transaction, then are told 57P01 as idle clients are, rather than
    /// reset), and closes the sockets.
    pub async fn serve(self, state: Arc<State>, mut spread: Spread) {
        let Listener { tcp, unix } = self;
        loop {
            let accepted = tokio::select! {
                r = accept(&tcp) => r.map(tcp_client),
                r = accept_unix(unix.as_ref().map(|u| &u.0)) => r.map(|fd| Accepted::Unix(fd.into())),
                _ = state.shutdown.wait() => break,
            };
            match accepted {
                Ok(a) => spread.place(a, &state),
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // Straight from the socket (the reactor may not have seen the last arrivals),
        // then closed at once: a connection the kernel queues here between the last
        // accept and the close is reset. The backlog goes to 0 first, so that the
        // kernel drops new SYNs here rather than queueing them (the client sends its
        // SYN again a second later, to a process still listening: see README, the
        // fleet) and the window holds at most one.
        let tcp = tcp.into_inner();
        // SAFETY: listen() on a socket this process owns; it only lowers the backlog.
        unsafe { libc::listen(tcp.as_raw_fd(), 0) };
        while let Ok(fd) = accept_now(&tcp) {
            spread.place(tcp_client(fd), &state);
        }
        drop(tcp);
        drop(unix);
    }
}

/// A listening socket (non-blocking), watched by this thread's reactor for arrivals.
fn watch<T: AsRawFd>(l: T) -> io::Result<AsyncFd<T>> {
    // SAFETY: `l` owns its descriptor, which stays open and the same until the
    // `AsyncFd` (which owns `l`) is dropped.
    Ok(unsafe { AsyncFd::register_with_interest(l, tokio::io::Interest::READABLE) }?)
}

/// A TCP client, with Nagle's algorithm off (pgmux batches its own writes).
fn tcp_client(fd: OwnedFd) -> Accepted {
    let s = std::net::TcpStream::from(fd);
    let _ = s.set_nodelay(true);
    Accepted::Tcp(s)
}

/// `accept4` with `SOCK_NONBLOCK | SOCK_CLOEXEC`: a socket ready for any thread's
/// reactor, registered with none yet (the worker it goes to registers it).
fn accept_now(l: &impl AsRawFd) -> io::Result<OwnedFd> {
    // SAFETY: accept4 on a listening socket this process owns; null address
    // pointers are allowed (the peer's address is asked for later if needed).
    let fd = unsafe { libc::accept4(l.as_raw_fd(), std::ptr::null_mut(), std::ptr::null_mut(), libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: accept4 returned a new descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// The next connection on `l`, waiting for one.
async fn accept<T: AsRawFd>(l: &AsyncFd<T>) -> io::Result<OwnedFd> {
    loop {
        let mut ready = l.readable().await?;
        match ready.try_io(|l| accept_now(l.get_ref())) {
            Ok(r) => return r,
            Err(_would_block) => continue,
        }
    }
}

/// Binds a Unix socket at `path`, in place of a file already there: a stale one, or
/// the socket of a pgmux this one takes over from (which keeps serving the clients
/// it has, and leaves the new file alone when it exits).
fn bind_unix(path: PathBuf) -> io::Result<(AsyncFd<std::os::unix::net::UnixListener>, SocketFile)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            tracing::warn!(path = %path.display(), "a server answers on this Unix socket: taking it over");
        }
        std::fs::remove_file(&path)?;
    }
    let l = std::os::unix::net::UnixListener::bind(&path)?;
    l.set_nonblocking(true)?;
    // Any local user may connect, as to PostgreSQL's own socket (passwords decide).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
    let inode = std::fs::symlink_metadata(&path)?.ino();
    Ok((watch(l)?, SocketFile { path, inode }))
}

async fn accept_unix(l: Option<&AsyncFd<std::os::unix::net::UnixListener>>) -> io::Result<OwnedFd> {
    match l {
        Some(l) => accept(l).await,
        None => std::future::pending().await,
    }
}
