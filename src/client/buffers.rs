//! Client read buffers: a client holds one only while it is active, and gives it
//! back when it goes idle (an idle client holds no buffer). The buffers given back
//! are kept, a few per thread, for the next client to become active, so a busy
//! client does not allocate and free 8 KiB at every transaction.

use std::cell::RefCell;

use bytes::BytesMut;

use super::relay::CLIENT_READ_BUF;

/// Buffers kept per thread (1 MiB at most).
const KEEP: usize = 128;

thread_local! {
    static SPARE: RefCell<Vec<BytesMut>> = const { RefCell::new(Vec::new()) };
}

/// An empty buffer of `CLIENT_READ_BUF` bytes.
pub fn take() -> BytesMut {
    SPARE.with(|s| s.borrow_mut().pop()).unwrap_or_else(|| BytesMut::with_capacity(CLIENT_READ_BUF))
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
        if s.len() < KEEP {
            s.push(buf);
        }
    });
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
        let before = SPARE.with(|s| s.borrow().len());
        give_back(grown);
        assert_eq!(SPARE.with(|s| s.borrow().len()), before, "a grown buffer is freed");
    }
}
