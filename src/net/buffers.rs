//! Read buffers held only while in use: a client holds one only while it is active
//! and gives it back when it goes idle; a server connection idle in its pool for a
//! second gives its own back (the pool's upkeep), and takes one of these when it
//! reads again. An idle client or connection holds no buffer. The buffers given back are kept, a few per
//! thread and size, for the next one to become active, so that a busy client does
//! not allocate and free 8 KiB at every transaction; the ones nobody took for a
//! second are freed by the upkeep tick ([`after_tick`]), so that a quiet pooler
//! does not keep them (1 MiB was 0.5 KiB per idle client at 2,000; a pool of 20
//! idle server connections held 320 KiB).

use std::cell::RefCell;

use bytes::BytesMut;

/// The read buffers of the two kinds of socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Buffers {
    /// A client's: 8 KiB, a few requests of an ordinary application.
    Client,
    /// A server connection's: 16 KiB, for results read in fewer calls.
    Server,
}

/// Buffers kept per thread and kind (1 MiB and 2 MiB at most).
const KEEP: usize = 128;

/// Spare buffers of one kind, and the fewest there were since the last tick (the
/// ones below that mark were not needed).
struct Spare {
    bufs: Vec<BytesMut>,
    low: usize,
}

thread_local! {
    static SPARE: RefCell<[Spare; 2]> = const {
        RefCell::new([Spare { bufs: Vec::new(), low: 0 }, Spare { bufs: Vec::new(), low: 0 }])
    };
}

impl Buffers {
    /// The size of a buffer of this kind.
    pub const fn size(self) -> usize {
        match self {
            Buffers::Client => 8 * 1024,
            Buffers::Server => 16 * 1024,
        }
    }

    /// An empty buffer of [`Buffers::size`] bytes.
    pub fn take(self) -> BytesMut {
        SPARE
            .with(|s| {
                let s = &mut s.borrow_mut()[self as usize];
                let b = s.bufs.pop();
                s.low = s.low.min(s.bufs.len());
                b
            })
            .unwrap_or_else(|| BytesMut::with_capacity(self.size()))
    }

    /// Takes back a buffer; kept if it is the usual size and no one else holds a
    /// part of it, else freed.
    pub fn give_back(self, mut buf: BytesMut) {
        buf.clear();
        // Rewinds an advanced buffer without allocating, or says it cannot.
        if !buf.try_reclaim(self.size()) || buf.capacity() != self.size() {
            return;
        }
        SPARE.with(|s| {
            let s = &mut s.borrow_mut()[self as usize];
            if s.bufs.len() < KEEP {
                s.bufs.push(buf);
            }
        });
    }
}

/// Called once a second on every worker thread (`proxy::workers`): frees the spare
/// buffers that no one took since the last call, and says how many bytes that was.
pub fn after_tick() -> usize {
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        let mut freed = 0;
        for (kind, s) in [Buffers::Client, Buffers::Server].into_iter().zip(s.iter_mut()) {
            let unused = s.low.min(s.bufs.len());
            let keep = s.bufs.len() - unused;
            s.bufs.truncate(keep);
            s.bufs.shrink_to(keep);
            s.low = s.bufs.len();
            freed += unused * kind.size();
        }
        freed
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    fn spare(kind: Buffers) -> usize {
        SPARE.with(|s| s.borrow()[kind as usize].bufs.len())
    }

    #[test]
    fn a_used_buffer_comes_back_whole_and_a_grown_one_does_not() {
        for kind in [Buffers::Client, Buffers::Server] {
            let mut b = kind.take();
            b.extend_from_slice(&[1u8; 5000]);
            b.advance(5000);
            let at = b.as_ptr();
            kind.give_back(b);
            let again = kind.take();
            assert_eq!((again.capacity(), again.len()), (kind.size(), 0));
            assert_eq!(again.as_ptr(), unsafe { at.sub(5000) }, "the same allocation, rewound");
            let mut grown = again;
            grown.extend_from_slice(&vec![0u8; 3 * kind.size()]);
            let before = spare(kind);
            kind.give_back(grown);
            assert_eq!(spare(kind), before, "a grown buffer is freed");
        }
    }

    #[test]
    fn a_buffer_of_one_kind_is_not_kept_as_the_other() {
        let before = spare(Buffers::Server);
        Buffers::Server.give_back(Buffers::Client.take());
        assert_eq!(spare(Buffers::Server), before, "an 8 KiB buffer is not a server buffer");
    }

    #[test]
    fn a_tick_frees_the_buffers_no_one_took() {
        let bufs: Vec<_> = (0..10).map(|_| Buffers::Server.take()).collect();
        bufs.into_iter().for_each(|b| Buffers::Server.give_back(b));
        let client = Buffers::Client.take();
        Buffers::Client.give_back(client);
        after_tick();
        assert!(spare(Buffers::Server) >= 10);
        // Two taken (and given back) during the next second: the rest were not needed.
        let (a, b) = (Buffers::Server.take(), Buffers::Server.take());
        Buffers::Server.give_back(a);
        Buffers::Server.give_back(b);
        let freed = after_tick();
        assert_eq!(spare(Buffers::Server), 2, "only what was taken since the last tick stays");
        assert_eq!(spare(Buffers::Client), 0, "no client buffer was taken: freed");
        assert!(freed >= 8 * Buffers::Server.size() + Buffers::Client.size(), "freed {freed} bytes");
        after_tick();
        assert_eq!(spare(Buffers::Server), 0, "nothing taken: all freed");
    }
}
