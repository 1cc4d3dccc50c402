//! Accepting clients: the listening sockets (`listen`, with `SO_REUSEPORT`, and the
//! Unix socket `<unix_socket_dir>/.s.PGSQL.<port>`), and the loop that hands each
//! accepted connection to a task of its own ([`crate::client::serve`]) until
//! shutdown begins.

use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, UnixListener};

use crate::config::Config;
use crate::net::Stream;
use crate::state::State;

/// Where clients connect.
pub struct Listener {
    tcp: TcpListener,
    unix: Option<(UnixListener, SocketFile)>,
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
    pub async fn bind(config: &Config) -> io::Result<Listener> {
        let addr = config.listen_addr();
        let sock = if addr.is_ipv4() { tokio::net::TcpSocket::new_v4()? } else { tokio::net::TcpSocket::new_v6()? };
        sock.set_reuseaddr(true)?;
        sock.set_reuseport(true)?;
        sock.bind(addr)?;
        let tcp = sock.listen(4096)?;
        let unix = match &config.unix_socket_dir {
            Some(dir) => {
                let path = dir.join(format!(".s.PGSQL.{}", addr.port()));
                Some(bind_unix(path.clone()).map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))?)
            }
            None => None,
        };
        Ok(Listener { tcp, unix })
    }

    /// A worker's listener (TCP only: the Unix socket stays with worker 0), on a
    /// socket from [`Listener::reuse_port_socket`], in this thread's scheduler.
    pub fn from_std(socket: std::net::TcpListener) -> io::Result<Listener> {
        Ok(Listener { tcp: TcpListener::from_std(socket)?, unix: None })
    }

    /// Where the TCP socket is bound.
    pub fn local_addr(&self) -> io::Result<std::net::SocketAddr> {
        self.tcp.local_addr()
    }

    /// Another listening socket on `addr`, as [`Listener::bind`] makes its own, not
    /// yet tied to a scheduler (for another thread's).
    pub fn reuse_port_socket(addr: std::net::SocketAddr) -> io::Result<std::net::TcpListener> {
        let sock = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
        sock.set_reuse_address(true)?;
        sock.set_reuse_port(true)?;
        sock.bind(&addr.into())?;
        sock.listen(4096)?;
        sock.set_nonblocking(true)?;
        Ok(sock.into())
    }

    /// Accepts clients until shutdown begins; then takes, without waiting, those
    /// the kernel already queued (they run their first transaction, then are told
    /// 57P01 as idle clients are, rather than reset), and closes the sockets.
    pub async fn serve(self, state: Arc<State>) {
        let Listener { tcp, unix } = self;
        loop {
            let accepted = tokio::select! {
                r = tcp.accept() => r.map(|(s, _)| {
                    let _ = s.set_nodelay(true);
                    Stream::Plain(s)
                }),
                r = accept_unix(unix.as_ref().map(|u| &u.0)) => r.map(Stream::Unix),
                _ = state.shutdown.wait() => break,
            };
            match accepted {
                Ok(s) => start(s, &state),
                Err(e) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::error!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        // Straight from the socket: the reactor may not have seen the last arrivals.
        if let Ok(std) = tcp.into_std() {
            while let Ok((s, _)) = std.accept() {
                let s = s.set_nonblocking(true).and_then(|()| tokio::net::TcpStream::from_std(s));
                if let Ok(s) = s {
                    let _ = s.set_nodelay(true);
                    start(Stream::Plain(s), &state);
                }
            }
        }
        drop(unix);
    }
}

/// Binds a Unix socket at `path`, in place of a file already there: a stale one, or
/// the socket of a pgmux this one takes over from (which keeps serving the clients
/// it has, and leaves the new file alone when it exits).
fn bind_unix(path: PathBuf) -> io::Result<(UnixListener, SocketFile)> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if path.exists() {
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            tracing::warn!(path = %path.display(), "a server answers on this Unix socket: taking it over");
        }
        std::fs::remove_file(&path)?;
    }
    let l = UnixListener::bind(&path)?;
    // Any local user may connect, as to PostgreSQL's own socket (passwords decide).
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o777))?;
    let inode = std::fs::symlink_metadata(&path)?.ino();
    Ok((l, SocketFile { path, inode }))
}

async fn accept_unix(l: Option<&UnixListener>) -> io::Result<tokio::net::UnixStream> {
    match l {
        Some(l) => l.accept().await.map(|(s, _)| s),
        None => std::future::pending().await,
    }
}

fn start(stream: Stream, state: &Arc<State>) {
    // Counted now: a drain that begins before the task runs waits for it.
    let arrival = state.clients.arriving();
    tokio::spawn(crate::client::serve(stream, state.clone(), arrival));
}
