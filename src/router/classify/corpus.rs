pub const TEXT: &str = include_str!("../corpus.sql");

/// The write functions the corpus is classified with.
pub const WRITE_FUNCTIONS: [&str; 3] = ["my_schema.bump_counter", "audit.log_event", "touch_session"];

pub struct Entry<'a> {
    /// Line of the `---` header in corpus.sql.
    pub line: usize,
    pub read: bool,
    pub reason: Option<&'a str>,
    pub txn: Option<&'a str>,
    pub sql: &'a str,
}

/// Entries are a header line `--- read|write [reason=Reason] [txn=TxnEffect]`
/// followed by the statement, up to the next header or section line (`-- ==`).
/// Lines before the first header and after a section line are commentary.
pub fn entries(text: &str) -> Vec<Entry<'_>> {
    let mut out = Vec::new();
    // (line of the header, byte offset of the statement, header)
    let mut open: Option<(usize, usize, &str)> = None;
    let mut offset = 0;
    for (i, l) in text.split_inclusive('\n').enumerate() {
        let header = l.strip_prefix("--- ");
        if header.is_some() || l.starts_with("-- ==") {
            if let Some((line, from, header)) = open.take() {
                out.push(entry(line, header, &text[from..offset]));
            }
        }
        if let Some(header) = header {
            open = Some((i + 1, offset + l.len(), header.trim()));
        }
        offset += l.len();
    }
    if let Some((line, from, header)) = open {
        out.push(entry(line, header, &text[from..]));
    }
    out
}

fn entry<'a>(line: usize, header: &'a str, sql: &'a str) -> Entry<'a> {
    let mut words = header.split_whitespace();
    let read = match words.next() {
        Some("read") => true,
        Some("write") => false,
        other => panic!("corpus.sql:{line}: expected read or write, found {other:?}"),
    };
    let (mut reason, mut txn) = (None, None);
    for w in words {
        match w.split_once('=') {
            Some(("reason", r)) => reason = Some(r),
            Some(("txn", t)) => txn = Some(t),
            _ => panic!("corpus.sql:{line}: unknown annotation {w:?}"),
        }
    }
    Entry { line, read, reason, txn, sql: sql.trim_end_matches(['\n', '\r', ' ']) }
}
