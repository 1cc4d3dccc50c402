//! Message boundaries in a byte stream.
//!
//! A [`Framer`] walks a buffer of bytes read from a socket and reports each message
//! it meets: small messages (up to a caller-chosen size) as a whole body, larger ones
//! only by their header, after which their body is skipped (and forwarded by the
//! caller) as it streams past, however many reads it spans. Nothing is copied or
//! allocated; the caller forwards `buf[..consumed]` and keeps the rest.

/// Length of a typed message header: one type byte and a 4-byte length.
pub const HEADER_LEN: usize = 5;

/// One message seen by the framer.
#[derive(Debug)]
pub enum Frame<'a> {
    /// The whole message is in the buffer, its header at offset `at`.
    Whole { tag: u8, body: &'a [u8], at: usize },
    /// Only the start of a message larger than the inspection limit (header at
    /// `at`); its `len` body bytes stream past without being shown.
    Streaming { tag: u8, len: usize, at: usize },
}

impl Frame<'_> {
    pub fn tag(&self) -> u8 {
        match self {
            Frame::Whole { tag, .. } | Frame::Streaming { tag, .. } => *tag,
        }
    }
}

/// What the callback wants after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Continue,
    /// Stop scanning after this message (its bytes are included in `consumed`).
    Stop,
}

/// A message whose length field is impossible or above the configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BadLength {
    pub tag: u8,
    pub len: i64,
}

/// Streaming message-boundary tracker for one direction of one connection.
#[derive(Debug, Default, Clone)]
pub struct Framer {
    /// Body bytes of a streaming message not yet seen.
    remaining: usize,
}

/// Parses a header: (tag, body length).
#[inline]
pub fn header(buf: &[u8], max_len: usize) -> Result<(u8, usize), BadLength> {
    let tag = buf[0];
    let len = i32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as i64;
    if len < 4 || len as u64 > max_len as u64 + 4 {
        return Err(BadLength { tag, len });
    }
    Ok((tag, len as usize - 4))
}

impl Framer {
    /// True while a streaming message's body is still arriving.
    pub fn in_message(&self) -> bool {
        self.remaining > 0
    }

    /// Scans `buf` and calls `on_frame` for every message that starts in it.
    ///
    /// Messages whose body is at most `inspect_max(tag)` bytes are only reported once
    /// complete; scanning stops before an incomplete one (the caller reads more).
    /// Returns how many bytes of `buf` were scanned: those may be forwarded.
    pub fn scan<E>(
        &mut self,
        buf: &[u8],
        max_len: usize,
        inspect_max: impl Fn(u8) -> usize,
        mut on_frame: impl FnMut(Frame<'_>) -> Result<Step, E>,
    ) -> Result<Result<usize, BadLength>, E> {
        let mut pos = 0;
        loop {
            if self.remaining > 0 {
                let take = self.remaining.min(buf.len() - pos);
                self.remaining -= take;
                pos += take;
                if self.remaining > 0 {
                    return Ok(Ok(pos));
                }
            }
            if buf.len() - pos < HEADER_LEN {
                return Ok(Ok(pos));
            }
            let (tag, len) = match header(&buf[pos..], max_len) {
                Ok(h) => h,
                Err(e) => return Ok(Err(e)),
            };
            let end = pos + HEADER_LEN + len;
            let step = if end <= buf.len() {
                let step = on_frame(Frame::Whole { tag, body: &buf[pos + HEADER_LEN..end], at: pos })?;
                pos = end;
                step
            } else if len <= inspect_max(tag) {
                return Ok(Ok(pos));
            } else {
                let step = on_frame(Frame::Streaming { tag, len, at: pos })?;
                self.remaining = len;
                pos += HEADER_LEN;
                step
            };
            if step == Step::Stop {
                // A stop inside a streaming message still forwards the rest of it.
                let take = self.remaining.min(buf.len() - pos);
                self.remaining -= take;
                return Ok(Ok(pos + take));
            }
        }
    }
}

/// Reads a NUL-terminated string from the front of `buf`, returning it and the rest.
pub fn cstr(buf: &[u8]) -> Option<(&[u8], &[u8])> {
    let nul = buf.iter().position(|&b| b == 0)?;
    Some((&buf[..nul], &buf[nul + 1..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(tag: u8, body: &[u8]) -> Vec<u8> {
        let mut v = vec![tag];
        v.extend_from_slice(&((body.len() + 4) as i32).to_be_bytes());
        v.extend_from_slice(body);
        v
    }

    /// Each message seen: its tag, and its body when it was seen whole.
    type Seen = Vec<(u8, Option<Vec<u8>>)>;

    fn scan_all(f: &mut Framer, buf: &[u8], inspect: usize) -> (usize, Seen) {
        let mut seen = vec![];
        let n = f
            .scan::<()>(
                buf,
                1 << 20,
                |_| inspect,
                |fr| {
                    seen.push(match fr {
                        Frame::Whole { tag, body, .. } => (tag, Some(body.to_vec())),
                        Frame::Streaming { tag, .. } => (tag, None),
                    });
                    Ok(Step::Continue)
                },
            )
            .unwrap()
            .unwrap();
        (n, seen)
    }

    #[test]
    fn whole_messages_and_partial_tail() {
        let mut buf = msg(b'D', b"row1");
        buf.extend(msg(b'Z', b"I"));
        buf.extend(&msg(b'C', b"SELECT 1")[..3]);
        let mut f = Framer::default();
        let (n, seen) = scan_all(&mut f, &buf, 1024);
        assert_eq!(n, 9 + 6);
        assert_eq!(seen, vec![(b'D', Some(b"row1".to_vec())), (b'Z', Some(b"I".to_vec()))]);
    }

    #[test]
    fn large_message_streams_across_reads() {
        let body = vec![7u8; 100];
        let mut all = msg(b'D', &body);
        all.extend(msg(b'Z', b"T"));
        let mut f = Framer::default();
        // First read: header plus 10 body bytes.
        let (n, seen) = scan_all(&mut f, &all[..15], 16);
        assert_eq!((n, seen), (15, vec![(b'D', None)]));
        assert!(f.in_message());
        // Second read: the rest of the body and the Z.
        let (n, seen) = scan_all(&mut f, &all[15..], 16);
        assert_eq!(n, all.len() - 15);
        assert_eq!(seen, vec![(b'Z', Some(b"T".to_vec()))]);
    }

    #[test]
    fn small_inspected_message_waits_for_completion() {
        let all = msg(b'E', b"SERROR\0");
        let mut f = Framer::default();
        let (n, seen) = scan_all(&mut f, &all[..8], 1024);
        assert_eq!((n, seen.len()), (0, 0));
    }

    #[test]
    fn rejects_bad_lengths() {
        let mut f = Framer::default();
        let mut bad = vec![b'Q'];
        bad.extend_from_slice(&3i32.to_be_bytes());
        let r = f.scan::<()>(&bad, 100, |_| 0, |_| Ok(Step::Continue)).unwrap();
        assert_eq!(r, Err(BadLength { tag: b'Q', len: 3 }));
        let mut huge = vec![b'B'];
        huge.extend_from_slice(&i32::MAX.to_be_bytes());
        let r = f.scan::<()>(&huge, 1 << 20, |_| 0, |_| Ok(Step::Continue)).unwrap();
        assert!(r.is_err());
    }

    #[test]
    fn stop_after_message() {
        let mut buf = msg(b'Z', b"I");
        buf.extend(msg(b'Z', b"I"));
        let mut f = Framer::default();
        let n = f.scan::<()>(&buf, 100, |_| 100, |_| Ok(Step::Stop)).unwrap().unwrap();
        assert_eq!(n, 6);
    }
}
