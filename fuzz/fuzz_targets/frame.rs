//! `Framer::scan` over arbitrary bytes, delivered in arbitrary pieces.
//!
//! Input layout: `[max_len sel] [inspect] [stop tag] [n] [n chunk sizes] stream...`
//! (see `fuzz/README.md`). The stream is scanned three ways: in one buffer, in the
//! chunks the input chooses, and one byte at a time, each the way the relay does it
//! (keep the unconsumed tail, append the next read, scan again; scan again after a
//! `Step::Stop`). Invariants:
//! - every call consumes at most the buffer it was given, and a `Whole` frame's body
//!   is the buffer's bytes right after its header;
//! - all three see the same messages (tag, absolute offset, body length), the same
//!   total consumed, the same `BadLength` (right after the same last message), the
//!   same final state;
//!   a message is `Streaming` only if its body is larger than `inspect_max(tag)`,
//!   and a `Whole` body is the same bytes however the input was split;
//! - all of that equals a plain reference walk of the headers.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::protocol::frame::{BadLength, Frame, Framer, Step, HEADER_LEN};

const MAX_LENS: [usize; 8] = [0, 1, 4, 16, 100, 1000, 1 << 20, 1 << 30];

#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Whole(Vec<u8>),
    Streaming,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Event {
    tag: u8,
    at: usize,
    len: usize,
    seen: Seen,
}

#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    events: Vec<Event>,
    consumed: usize,
    /// A `BadLength` ends the stream (the relay closes the connection). `scan`
    /// does not say how much it consumed before it: that is where the bad header
    /// is, right after the last message seen, so `consumed` is then not compared.
    bad: Option<BadLength>,
    in_message: bool,
}

struct Params {
    max_len: usize,
    inspect: usize,
    stop_tag: u8,
}

impl Params {
    fn inspect_max(&self, tag: u8) -> usize {
        // Different limits per tag, as the relay has (ReadyForQuery, ErrorResponse ...).
        if tag.is_ascii_uppercase() {
            self.inspect
        } else {
            self.inspect / 4
        }
    }
}

/// Feeds `chunks` (which concatenate to the stream) to one `Framer` like the relay.
fn run(p: &Params, chunks: &[&[u8]]) -> Outcome {
    let mut f = Framer::default();
    let mut pending: Vec<u8> = Vec::new();
    // Absolute stream offset of pending[0].
    let mut base = 0usize;
    let mut events = Vec::new();
    let mut bad = None;
    'chunks: for chunk in chunks {
        pending.extend_from_slice(chunk);
        loop {
            let mut stopped = false;
            let buf = &pending[..];
            let r = f.scan::<()>(buf, p.max_len, |t| p.inspect_max(t), |fr| {
                let (tag, at, len, seen) = match fr {
                    Frame::Whole { tag, body, at } => {
                        // The body is exactly the buffer's bytes after the header.
                        assert!(at + HEADER_LEN + body.len() <= buf.len());
                        assert_eq!(&buf[at + HEADER_LEN..at + HEADER_LEN + body.len()], body);
                        assert_eq!(buf[at], tag);
                        assert!(body.len() <= p.max_len);
                        (tag, at, body.len(), Seen::Whole(body.to_vec()))
                    }
                    Frame::Streaming { tag, len, at } => {
                        assert!(at + HEADER_LEN <= buf.len());
                        assert!(at + HEADER_LEN + len > buf.len(), "a complete message reported as streaming");
                        assert!(len > p.inspect_max(tag), "a small message reported as streaming");
                        assert!(len <= p.max_len);
                        assert_eq!(buf[at], tag);
                        (tag, at, len, Seen::Streaming)
                    }
                };
                assert_eq!(fr.tag(), tag);
                events.push(Event { tag, at: base + at, len, seen });
                if tag == p.stop_tag {
                    stopped = true;
                    Ok(Step::Stop)
                } else {
                    Ok(Step::Continue)
                }
            });
            match r.expect("the callback never fails") {
                Ok(n) => {
                    assert!(n <= pending.len(), "consumed {n} of {}", pending.len());
                    pending.drain(..n);
                    base += n;
                    // After a Stop the relay deals with the message, then scans on.
                    if !(stopped && !pending.is_empty()) {
                        break;
                    }
                }
                Err(e) => {
                    bad = Some(e);
                    break 'chunks;
                }
            }
        }
    }
    Outcome { events, consumed: base, bad, in_message: f.in_message() }
}

/// A plain walk of the headers: what every way of splitting must agree with.
fn reference(p: &Params, s: &[u8]) -> Outcome {
    let mut events = Vec::new();
    let mut pos = 0;
    loop {
        if s.len() - pos < HEADER_LEN {
            return Outcome { events, consumed: pos, bad: None, in_message: false };
        }
        let tag = s[pos];
        let len = i32::from_be_bytes(s[pos + 1..pos + 5].try_into().unwrap()) as i64;
        if len < 4 || len - 4 > p.max_len as i64 {
            return Outcome { events, consumed: pos, bad: Some(BadLength { tag, len }), in_message: false };
        }
        let len = (len - 4) as usize;
        let end = pos + HEADER_LEN + len;
        if end <= s.len() {
            events.push(Event { tag, at: pos, len, seen: Seen::Whole(s[pos + HEADER_LEN..end].to_vec()) });
            pos = end;
        } else if len <= p.inspect_max(tag) {
            return Outcome { events, consumed: pos, bad: None, in_message: false };
        } else {
            events.push(Event { tag, at: pos, len, seen: Seen::Streaming });
            return Outcome { events, consumed: s.len(), bad: None, in_message: true };
        }
    }
}

/// Same messages; a message may be `Whole` in one and `Streaming` in the other only
/// when it is larger than the inspection limit.
fn same(p: &Params, a: &Outcome, b: &Outcome, what: &str) {
    assert_eq!(a.bad, b.bad, "{what}: bad length");
    if a.bad.is_none() {
        assert_eq!(a.consumed, b.consumed, "{what}: consumed");
    }
    assert_eq!(a.in_message, b.in_message, "{what}: in_message");
    assert_eq!(a.events.len(), b.events.len(), "{what}: number of messages");
    for (x, y) in a.events.iter().zip(&b.events) {
        assert_eq!((x.tag, x.at, x.len), (y.tag, y.at, y.len), "{what}: message");
        match (&x.seen, &y.seen) {
            (Seen::Whole(bx), Seen::Whole(by)) => assert_eq!(bx, by, "{what}: body"),
            (Seen::Streaming, Seen::Streaming) => {}
            _ => assert!(x.len > p.inspect_max(x.tag), "{what}: a small message streamed"),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let p = Params { max_len: MAX_LENS[(data[0] & 7) as usize], inspect: data[1] as usize * 4, stop_tag: data[2] };
    let n = (data[3] % 16) as usize;
    let Some(sizes) = data.get(4..4 + n) else { return };
    let stream = &data[4 + n..];

    let mut chunks = Vec::new();
    let mut rest = stream;
    for &s in sizes {
        let (c, r) = rest.split_at((s as usize).min(rest.len()));
        chunks.push(c);
        rest = r;
    }
    chunks.push(rest);

    let expected = reference(&p, stream);
    let whole = run(&p, &[stream]);
    // In one buffer nothing complete is ever streamed: exactly the reference.
    same(&p, &expected, &whole, "one buffer vs reference");
    assert_eq!(whole.events, expected.events, "one buffer vs reference");
    let split = run(&p, &chunks);
    same(&p, &expected, &split, "chunks vs reference");
    let bytes: Vec<&[u8]> = stream.chunks(1).collect();
    let by_byte = run(&p, &bytes);
    same(&p, &expected, &by_byte, "byte by byte vs reference");

    // cstr: the string ends at the first NUL and the rest follows it.
    if let Some((s, r)) = pgmux::protocol::frame::cstr(stream) {
        assert!(!s.contains(&0));
        assert_eq!(s.len() + 1 + r.len(), stream.len());
    } else {
        assert!(!stream.contains(&0));
    }
});
