//! A small SQL lexer: enough of PostgreSQL's lexical rules to find keywords and
//! statement boundaries without being fooled by comments or quoted text.
//!
//! Skips `-- ...` and nested `/* ... */` comments; `'...'` (with `''`), `E'...'`
//! (with backslash escapes), `"..."` identifiers and `$tag$ ... $tag$` bodies are
//! single tokens. Never panics, whatever the input; unterminated quotes run to the end
//! (and [`Lexer::unterminated`] says so).

/// One token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tok<'a> {
    /// A keyword or unquoted identifier (case as written).
    Word(&'a [u8]),
    /// A double-quoted identifier, without its quotes (doubled quotes left as is).
    Quoted(&'a [u8]),
    /// A string constant, dollar-quoted body, number, parameter or operator.
    Other,
    Dot,
    Semicolon,
    LParen,
    RParen,
}

pub struct Lexer<'a> {
    s: &'a [u8],
    pos: usize,
    unterminated: bool,
    backslash_quote: bool,
}

impl<'a> Lexer<'a> {
    pub fn new(s: &'a [u8]) -> Self {
        Lexer { s, pos: 0, unterminated: false, backslash_quote: false }
    }

    /// A quote, a quoted identifier, a dollar-quoted body or a `/* */` comment ran to
    /// the end of the text (PostgreSQL rejects such a text whole).
    pub fn unterminated(&self) -> bool {
        self.unterminated
    }

    /// A plain `'...'` string has a quote right after an odd run of backslashes:
    /// with `standard_conforming_strings = off` that quote is escaped, so where the
    /// string ends (and what is code after it) depends on the session's setting.
    pub fn backslash_quote(&self) -> bool {
        self.backslash_quote
    }

    fn peek(&self, off: usize) -> u8 {
        self.s.get(self.pos + off).copied().unwrap_or(0)
    }

    fn skip_space_and_comments(&mut self) {
        loop {
            let c = self.peek(0);
            // PostgreSQL's whitespace includes \v, and a `--` comment ends at \r too.
            if c.is_ascii_whitespace() || c == 0x0b {
                self.pos += 1;
            } else if c == b'-' && self.peek(1) == b'-' {
                while self.pos < self.s.len() && !matches!(self.s[self.pos], b'\n' | b'\r') {
                    self.pos += 1;
                }
            } else if c == b'/' && self.peek(1) == b'*' {
                self.pos += 2;
                let mut depth = 1;
                while self.pos < self.s.len() && depth > 0 {
                    if self.peek(0) == b'/' && self.peek(1) == b'*' {
                        depth += 1;
                        self.pos += 2;
                    } else if self.peek(0) == b'*' && self.peek(1) == b'/' {
                        depth -= 1;
                        self.pos += 2;
                    } else {
                        self.pos += 1;
                    }
                }
                self.unterminated |= depth > 0;
            } else {
                return;
            }
        }
    }

    /// Skips a quoted run ending in `q`; `backslash`: backslash escapes the next byte.
    fn skip_quoted(&mut self, q: u8, backslash: bool) {
        let start = self.pos;
        while self.pos < self.s.len() {
            let c = self.s[self.pos];
            self.pos += 1;
            if backslash && c == b'\\' {
                self.pos += 1;
            } else if c == q {
                if q == b'\'' && !backslash {
                    let run = self.s[start..self.pos - 1].iter().rev().take_while(|&&b| b == b'\\').count();
                    self.backslash_quote |= run % 2 == 1;
                }
                if self.peek(0) == q {
                    self.pos += 1;
                } else {
                    return;
                }
            }
        }
        self.unterminated = true;
    }

    /// At a `$`: a dollar-quoted body (`$$...$$`, `$tag$...$tag$`) or a parameter.
    fn dollar(&mut self) {
        let start = self.pos;
        let mut end = start + 1;
        while end < self.s.len() && (self.s[end].is_ascii_alphanumeric() || self.s[end] == b'_' || self.s[end] >= 0x80) {
            end += 1;
        }
        let tag_is_param = self.s[start + 1..end].first().is_some_and(|c| c.is_ascii_digit());
        if end < self.s.len() && self.s[end] == b'$' && !tag_is_param {
            let tag = &self.s[start..=end];
            self.pos = end + 1;
            match self.s[self.pos..].windows(tag.len()).position(|w| w == tag) {
                Some(i) => self.pos += i + tag.len(),
                None => {
                    self.pos = self.s.len();
                    self.unterminated = true;
                }
            }
        } else {
            self.pos = end.max(start + 1);
        }
    }
}

fn is_ident_start(c: u8) -> bool {
    c.is_ascii_alphabetic() || c == b'_' || c >= 0x80
}

fn is_ident(c: u8) -> bool {
    is_ident_start(c) || c.is_ascii_digit() || c == b'$'
}

impl<'a> Iterator for Lexer<'a> {
    type Item = Tok<'a>;

    fn next(&mut self) -> Option<Tok<'a>> {
        self.skip_space_and_comments();
        let c = *self.s.get(self.pos)?;
        let next = self.peek(1);
        if (c == b'E' || c == b'e') && next == b'\'' {
            self.pos += 2;
            self.skip_quoted(b'\'', true);
            return Some(Tok::Other);
        }
        if (c == b'U' || c == b'u') && next == b'&' && matches!(self.peek(2), b'\'' | b'"') {
            let q = self.peek(2);
            self.pos += 3;
            self.skip_quoted(q, false);
            return Some(if q == b'"' { Tok::Quoted(b"") } else { Tok::Other });
        }
        if is_ident_start(c) {
            let start = self.pos;
            while self.pos < self.s.len() && is_ident(self.s[self.pos]) {
                self.pos += 1;
            }
            return Some(Tok::Word(&self.s[start..self.pos]));
        }
        self.pos += 1;
        Some(match c {
            b'\'' => {
                self.skip_quoted(b'\'', false);
                Tok::Other
            }
            b'"' => {
                let start = self.pos;
                self.skip_quoted(b'"', false);
                Tok::Quoted(&self.s[start..self.pos.saturating_sub(1).max(start)])
            }
            b'$' => {
                self.pos -= 1;
                self.dollar();
                Tok::Other
            }
            b';' => Tok::Semicolon,
            b'.' => Tok::Dot,
            b'(' => Tok::LParen,
            b')' => Tok::RParen,
            _ => Tok::Other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        Lexer::new(s.as_bytes())
            .map(|t| match t {
                Tok::Word(w) => String::from_utf8_lossy(w).into_owned(),
                Tok::Quoted(w) => format!("\"{}\"", String::from_utf8_lossy(w)),
                Tok::Semicolon => ";".into(),
                Tok::Dot => ".".into(),
                Tok::LParen => "(".into(),
                Tok::RParen => ")".into(),
                Tok::Other => "_".into(),
            })
            .collect()
    }

    #[test]
    fn skips_what_is_not_code() {
        assert_eq!(words("select 'a;b' -- x;y\n; /* c /* nested; */ d; */ set"), ["select", "_", ";", "set"]);
        assert_eq!(words("select E'it\\'s;' , $$ ; $$, $q$ ; $q$ ;"), ["select", "_", "_", "_", "_", "_", ";"]);
        assert_eq!(words("select \"a;\"\"b\".c, $1"), ["select", "\"a;\"\"b\"", ".", "c", "_", "_"]);
    }

    fn flags(s: &str) -> (bool, bool) {
        let mut l = Lexer::new(s.as_bytes());
        while l.next().is_some() {}
        (l.unterminated(), l.backslash_quote())
    }

    #[test]
    fn reports_unterminated_text() {
        for s in [r"select 'a", r#"select "a"#, r"select E'a\'", "select $q$ a $q", "select /* a /* b */", "select U&'a"] {
            assert_eq!(flags(s), (true, false), "{s}");
        }
        for s in [r#"select 'a''b', E'\'', "x""y", $q$ ' $q$ /* ' */ -- '"#, r"select 'a\\'", r"select '\d+'"] {
            assert_eq!(flags(s), (false, false), "{s}");
        }
    }

    #[test]
    fn reports_backslash_before_quote() {
        // With standard_conforming_strings = off these strings end elsewhere.
        assert_eq!(flags(r"select 'a\', nextval('s')"), (false, true));
        assert_eq!(flags(r"select 'a\\\'''"), (false, true));
    }

    #[test]
    fn whitespace_and_comments_as_postgresql_reads_them() {
        assert_eq!(words("select 1 -- c\rfor\x0bupdate"), ["select", "_", "for", "update"]);
    }

    #[test]
    fn never_panics_on_garbage() {
        for s in ["'", "\"", "$", "$a", "/*", "E'\\", "U&", "$$ unterminated", "\u{0}\u{ff}"] {
            let _ = words(s);
        }
    }
}
