//! The I/O floor of a PostgreSQL proxy (issue #17, "where the time goes"): a
//! relay that copies bytes between each client and its own upstream connection
//! and does nothing else, with two I/O interfaces, to measure what a pooler's
//! kernel work costs before any pooling and whether io_uring lowers it.
//!
//! - `epoll`: readiness, as pgmux (tokio) and PgBouncer (libevent) do it. One
//!   thread; level-triggered `epoll_wait`, then one `recv` on the ready socket
//!   and one `send` to its peer: four system calls per round trip.
//! - `uring`: completions. One thread, one ring (`SINGLE_ISSUER`,
//!   `DEFER_TASKRUN`); every socket always has a `recv` queued; a completed
//!   `recv` queues a `send` to the peer, a completed `send` the next `recv`. All
//!   queued work goes to the kernel in one `io_uring_enter`, which also waits:
//!   submissions are batched across connections.
//! - `hybrid`: the `uring` relay's operations, with an epoll loop that waits (the
//!   ring's descriptor is in the epoll set): what io_uring would be beside tokio's
//!   epoll driver. Each loop submits what it queued in one `io_uring_enter`, then
//!   waits in `epoll_wait`.
//!
//! `benches/syscalls.sh` runs both (targets `relay-epoll`, `relay-uring`) beside
//! PgBouncer and pgmux. This is a measuring instrument, not a pooler: each client
//! gets its own upstream connection, authentication passes through untouched,
//! and a send the kernel cannot take at once is finished by blocking.
//!
//! Usage: `relay_floor epoll|uring|hybrid LISTEN_PORT UPSTREAM_PORT` (both on 127.0.0.1).

#[cfg(target_os = "linux")]
fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    let usage = || std::io::Error::other("usage: relay_floor epoll|uring|hybrid LISTEN_PORT UPSTREAM_PORT");
    let [_, mode, listen, upstream] = &args[..] else { return Err(usage()) };
    let listen: u16 = listen.parse().map_err(|_| usage())?;
    let upstream: u16 = upstream.parse().map_err(|_| usage())?;
    let listener = std::net::TcpListener::bind(("127.0.0.1", listen))?;
    let upstream = std::net::SocketAddr::from(([127, 0, 0, 1], upstream));
    match mode.as_str() {
        "epoll" => linux::epoll::run(listener, upstream),
        "uring" => linux::uring::run(listener, upstream),
        "hybrid" => linux::uring::run_hybrid(listener, upstream),
        _ => Err(usage()),
    }
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("relay_floor measures Linux system calls; it runs on Linux only");
}

#[cfg(target_os = "linux")]
mod linux {
    use std::io;
    use std::net::{SocketAddr, TcpStream};
    use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

    /// Bytes read per `recv`: more than a pgbench round trip's messages.
    pub const BUF: usize = 16 * 1024;

    /// Connects a new client's upstream connection (blocking: setup is not measured).
    pub fn pair(client: TcpStream, upstream: SocketAddr) -> io::Result<(RawFd, RawFd)> {
        let server = TcpStream::connect(upstream)?;
        for s in [&client, &server] {
            s.set_nodelay(true)?;
        }
        Ok((client.into_raw_fd(), server.into_raw_fd()))
    }

    /// A libc call's result as an `io::Result`.
    pub fn check(ret: isize) -> io::Result<usize> {
        if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        }
    }

    /// Sends all of `buf`, blocking in `poll` while the socket is full (rare with
    /// round trips of a few hundred bytes).
    pub fn send_all(fd: RawFd, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            // SAFETY: `buf` is valid for `buf.len()` bytes.
            match check(unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) }) {
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let mut p = libc::pollfd { fd, events: libc::POLLOUT, revents: 0 };
                    // SAFETY: one valid pollfd.
                    unsafe { libc::poll(&mut p, 1, -1) };
                }
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    fn close(fd: RawFd) {
        // SAFETY: the relay owns `fd` and forgets it here.
        unsafe { libc::close(fd) };
    }

    pub mod epoll {
        use super::*;

        /// The token of the listening socket; the others are `fd << 32 | peer`.
        pub(super) const LISTENER: u64 = u64::MAX;

        pub(super) fn add(ep: RawFd, fd: RawFd, data: u64) -> io::Result<()> {
            let mut ev = libc::epoll_event { events: libc::EPOLLIN as u32, u64: data };
            // SAFETY: a valid epoll fd and event.
            check(unsafe { libc::epoll_ctl(ep, libc::EPOLL_CTL_ADD, fd, &mut ev) } as isize).map(drop)
        }

        fn token(fd: RawFd, peer: RawFd) -> u64 {
            ((fd as u64) << 32) | peer as u32 as u64
        }

        pub fn run(listener: std::net::TcpListener, upstream: SocketAddr) -> io::Result<()> {
            listener.set_nonblocking(true)?;
            // SAFETY: plain system call.
            let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)? as RawFd;
            add(ep, listener.as_raw_fd(), LISTENER)?;
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 256];
            let mut buf = vec![0u8; BUF];
            loop {
                // SAFETY: `events` has room for 256 entries.
                let n = match check(unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 256, -1) } as isize) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                // Descriptors closed in this batch: a later event of the batch may
                // name one (or a new socket that took its number); skipped, as level
                // triggering reports a live one again.
                let mut closed: Vec<RawFd> = Vec::new();
                for ev in &events[..n] {
                    let data = ev.u64;
                    if data == LISTENER {
                        accept(ep, &listener, upstream)?;
                    } else if !closed.contains(&((data >> 32) as RawFd)) {
                        closed.extend(relay(data, &mut buf).into_iter().flatten());
                    }
                }
            }
        }

        fn accept(ep: RawFd, listener: &std::net::TcpListener, upstream: SocketAddr) -> io::Result<()> {
            while let Ok((client, _)) = listener.accept() {
                let (c, s) = pair(client, upstream)?;
                for fd in [c, s] {
                    // SAFETY: plain system call on a socket the relay owns.
                    unsafe { libc::fcntl(fd, libc::F_SETFL, libc::O_NONBLOCK) };
                }
                add(ep, c, token(c, s))?;
                add(ep, s, token(s, c))?;
            }
            Ok(())
        }

        /// One `recv` on the ready socket, its bytes sent on; end of stream or an
        /// error closes both (closing removes them from the epoll set), and says so.
        fn relay(data: u64, buf: &mut [u8]) -> Option<[RawFd; 2]> {
            let (fd, peer) = ((data >> 32) as RawFd, data as u32 as RawFd);
            // SAFETY: `buf` is valid for its length.
            let got = check(unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0) });
            let sent = match got {
                Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => send_all(peer, &buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
                Err(e) => Err(e),
            };
            sent.is_err().then(|| {
                close(fd);
                close(peer);
                [fd, peer]
            })
        }
    }

    pub mod uring {
        use super::*;
        use io_uring::{opcode, squeue, types, IoUring};

        /// What a completion is for: `side << 2 | op` in the low bits, the pair's
        /// slot above.
        const RECV: u64 = 0;
        const SEND: u64 = 1;
        const ACCEPT: u64 = u64::MAX;

        /// One direction of a pair: the socket it reads, its buffer, and how much
        /// of the buffer is still to be sent to the peer.
        struct Side {
            fd: RawFd,
            buf: Box<[u8]>,
            len: usize,
            sent: usize,
        }

        struct Pair {
            sides: [Side; 2],
            /// Operations in flight; the pair is freed when it is closed and this is 0.
            inflight: u32,
            closed: bool,
        }

        struct Relay {
            ring: IoUring,
            pairs: Vec<Option<Pair>>,
            free: Vec<usize>,
        }

        pub fn run(listener: std::net::TcpListener, upstream: SocketAddr) -> io::Result<()> {
            let ring = IoUring::builder().setup_single_issuer().setup_defer_taskrun().build(4096)?;
            let mut r = Relay::new(ring);
            r.push(
                opcode::Accept::new(types::Fd(listener.as_raw_fd()), std::ptr::null_mut(), std::ptr::null_mut()).build().user_data(ACCEPT),
            )?;
            loop {
                match r.ring.submit_and_wait(1) {
                    Ok(_) => {}
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                }
                let done: Vec<(u64, i32)> = r.ring.completion().map(|c| (c.user_data(), c.result())).collect();
                for (data, res) in done {
                    if data == ACCEPT {
                        r.accepted(res, upstream)?;
                        r.push(
                            opcode::Accept::new(types::Fd(listener.as_raw_fd()), std::ptr::null_mut(), std::ptr::null_mut())
                                .build()
                                .user_data(ACCEPT),
                        )?;
                    } else {
                        r.completed(data, res)?;
                    }
                }
            }
        }

        /// The epoll token of the ring's descriptor (readable: completions are due).
        const RING: u64 = u64::MAX - 1;

        pub fn run_hybrid(listener: std::net::TcpListener, upstream: SocketAddr) -> io::Result<()> {
            use super::epoll::{add, LISTENER};
            listener.set_nonblocking(true)?;
            // No DEFER_TASKRUN: nothing here waits in io_uring_enter. COOP_TASKRUN:
            // completions' task work runs when the thread next enters the kernel
            // rather than interrupting it (without it this relay kept almost none
            // of the saving, see README).
            let mut r = Relay::new(IoUring::builder().setup_single_issuer().setup_coop_taskrun().build(4096)?);
            // SAFETY: plain system call.
            let ep = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) } as isize)? as RawFd;
            add(ep, listener.as_raw_fd(), LISTENER)?;
            add(ep, r.ring.as_raw_fd(), RING)?;
            let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; 64];
            loop {
                if !r.ring.submission().is_empty() {
                    r.ring.submit()?;
                }
                // SAFETY: `events` has room for 64 entries.
                let n = match check(unsafe { libc::epoll_wait(ep, events.as_mut_ptr(), 64, -1) } as isize) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => return Err(e),
                };
                for ev in &events[..n] {
                    if ev.u64 == LISTENER {
                        while let Ok((client, _)) = listener.accept() {
                            client.set_nonblocking(false)?;
                            r.accepted(client.into_raw_fd(), upstream)?;
                        }
                        continue;
                    }
                    let done: Vec<(u64, i32)> = r.ring.completion().map(|c| (c.user_data(), c.result())).collect();
                    for (data, res) in done {
                        r.completed(data, res)?;
                    }
                }
            }
        }

        impl Relay {
            fn new(ring: IoUring) -> Self {
                Relay { ring, pairs: Vec::new(), free: Vec::new() }
            }

            /// Queues `sqe`, submitting first if the queue is full.
            fn push(&mut self, sqe: squeue::Entry) -> io::Result<()> {
                // SAFETY: every buffer an entry points to is owned by a pair that is
                // not freed while the entry is in flight (`inflight`).
                while unsafe { self.ring.submission().push(&sqe) }.is_err() {
                    self.ring.submit()?;
                }
                Ok(())
            }

            fn accepted(&mut self, res: i32, upstream: SocketAddr) -> io::Result<()> {
                if res < 0 {
                    return Ok(());
                }
                // SAFETY: the accepted socket is the relay's from here on.
                let client = unsafe { <TcpStream as std::os::fd::FromRawFd>::from_raw_fd(res) };
                let (c, s) = pair(client, upstream)?;
                let side = |fd| Side { fd, buf: vec![0u8; BUF].into_boxed_slice(), len: 0, sent: 0 };
                let pair = Pair { sides: [side(c), side(s)], inflight: 0, closed: false };
                let slot = match self.free.pop() {
                    Some(i) => {
                        self.pairs[i] = Some(pair);
                        i
                    }
                    None => {
                        self.pairs.push(Some(pair));
                        self.pairs.len() - 1
                    }
                };
                self.recv(slot, 0)?;
                self.recv(slot, 1)
            }

            fn recv(&mut self, slot: usize, side: usize) -> io::Result<()> {
                let p = self.pairs[slot].as_mut().expect("a live pair");
                p.inflight += 1;
                let s = &mut p.sides[side];
                let sqe = opcode::Recv::new(types::Fd(s.fd), s.buf.as_mut_ptr(), BUF as u32).build();
                self.push(sqe.user_data((slot as u64) << 8 | (side as u64) << 2 | RECV))
            }

            /// Sends what is left of side `side`'s buffer to the other side's socket.
            fn send(&mut self, slot: usize, side: usize) -> io::Result<()> {
                let p = self.pairs[slot].as_mut().expect("a live pair");
                p.inflight += 1;
                let peer = p.sides[1 - side].fd;
                let s = &p.sides[side];
                let rest = &s.buf[s.sent..s.len];
                let sqe = opcode::Send::new(types::Fd(peer), rest.as_ptr(), rest.len() as u32).build();
                self.push(sqe.user_data((slot as u64) << 8 | (side as u64) << 2 | SEND))
            }

            fn completed(&mut self, data: u64, res: i32) -> io::Result<()> {
                let (slot, side, op) = ((data >> 8) as usize, ((data >> 2) & 1) as usize, data & 3);
                let p = self.pairs[slot].as_mut().expect("a live pair");
                p.inflight -= 1;
                if p.closed || res <= 0 {
                    return self.close(slot);
                }
                let s = &mut p.sides[side];
                if op == RECV {
                    (s.len, s.sent) = (res as usize, 0);
                    return self.send(slot, side);
                }
                s.sent += res as usize;
                if s.sent < s.len {
                    self.send(slot, side)
                } else {
                    self.recv(slot, side)
                }
            }

            /// Shuts both sockets down (which completes their queued `recv`s) and
            /// frees the pair once nothing of it is in flight.
            fn close(&mut self, slot: usize) -> io::Result<()> {
                let p = self.pairs[slot].as_mut().expect("a live pair");
                if !p.closed {
                    p.closed = true;
                    for s in &p.sides {
                        // SAFETY: plain system call on a socket the pair owns.
                        unsafe { libc::shutdown(s.fd, libc::SHUT_RDWR) };
                    }
                }
                if p.inflight == 0 {
                    for s in &p.sides {
                        close(s.fd);
                    }
                    self.pairs[slot] = None;
                    self.free.push(slot);
                }
                Ok(())
            }
        }
    }
}
