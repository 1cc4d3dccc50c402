//! Client read buffers: a client holds one only while it is active, and gives it
//! back when it goes idle (an idle client holds no buffer). The buffers given back
//! are kept, a few per thread, for the next client to become active, so a busy
//! client does not allocate and free 8 KiB at every transaction; the ones no client
//! took for a second are freed by the upkeep tick ([`after_tick`]), so that a
//! quiet pooler does not keep them (1 MiB was 0.5 KiB per idle client at 2,000).

use std::cell::RefCell;

use bytes::BytesMut;

use super::relay::CLIENT_READ_BUF;

/// Buffers kept per thread (1 MiB at most).
const KEEP: usize = 128;

/// Spare buffers, and the fewest there were since the last tick (the ones below
/// that mark were not needed).
struct Spare {
    bufs: Vec<BytesMut>,
    low: usize,
}

thread_local! {
    static SPARE: RefCell<Spare> = const { RefCell::new(Spare { bufs: Vec::new(), low: 0 }) };
}

/// An empty buffer of `CLIENT_READ_BUF` bytes.
pub fn take() -> BytesMut {
    SPARE
        .with(|s| {
            let mut s = s.borrow_mut();
            let b = s.bufs.pop();
            s.low = s.low.min(s.bufs.len());
            b
        })
        .unwrap_or_else(|| BytesMut::with_capacity(CLIENT_READ_BUF))
}

/// Takes back a buffer; kept if it is the usual size and no one else holds a part
/// of it, else freed.
pub fn give_back(mut buf: BytesMut) {
    buf.clear();
    // Rewinds an advanced buffer without allocating, or says it cannot.
    if !buf.try_reclaim(CLIENT_READ_BUF) || buf.capacity() != CLIENT_READ_BUF {
        return;
    }
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        if s.bufs.len() < KEEP {
            s.bufs.push(buf);
        }
    });
}

/// Called once a second on every worker thread (`proxy::workers`): frees the spare buffers that no client took since the last call, and
/// says how many bytes that was.
pub fn after_tick() -> usize {
    SPARE.with(|s| {
        let mut s = s.borrow_mut();
        let unused = s.low.min(s.bufs.len());
        let keep = s.bufs.len() - unused;
        s.bufs.truncate(keep);
        s.bufs.shrink_to(keep);
        s.low = s.bufs.len();
        unused * CLIENT_READ_BUF
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Buf;

    #[test]
    fn a_used_buffer_comes_back_whole_and_a_grown_one_does_not() {
        let mut b = take();
        b.extend_from_slice(&[1u8; 5000]);
        b.advance(5000);
        let at = b.as_ptr();
        give_back(b);
        let again = take();
        assert_eq!((again.capacity(), again.len()), (CLIENT_READ_BUF, 0));
        assert_eq!(again.as_ptr(), unsafe { at.sub(5000) }, "the same allocation, rewound");
        let mut grown = again;
        grown.extend_from_slice(&vec![0u8; 3 * CLIENT_READ_BUF]);
        let before = SPARE.with(|s| s.borrow().bufs.len());
        give_back(grown);
        assert_eq!(SPARE.with(|s| s.borrow().bufs.len()), before, "a grown buffer is freed");
    }

    #[test]
    fn a_tick_frees_the_buffers_no_one_took() {
        let spare = || SPARE.with(|s| s.borrow().bufs.len());
        let bufs: Vec<_> = (0..10).map(|_| take()).collect();
        bufs.into_iter().for_each(give_back);
        after_tick();
        let n = spare();
        assert!(n >= 10);
        // Two taken (and given back) during the next second: the rest were not needed.
        let (a, b) = (take(), take());
        give_back(a);
        give_back(b);
        after_tick();
        assert_eq!(spare(), 2, "only what was taken since the last tick stays");
        after_tick();
        assert_eq!(spare(), 0, "nothing taken: all freed");
    }
}
