//! A configuration error, and where it is: the file, the line of the key at fault
//! (found from its dotted path, `databases.app.primary`), the key, the message.

use std::fmt;
use std::path::PathBuf;

/// A configuration error with where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.file.display())?;
        if let Some(l) = self.line {
            write!(f, ":{l}")?;
        }
        if !self.key.is_empty() {
            write!(f, ": {}", self.key)?;
        }
        write!(f, ": {}", self.message)
    }
}

impl std::error::Error for ConfigError {}

pub(super) fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or(s).to_string()
}

/// Finds the line (1-based) of a dotted key path such as `databases.app.primary` or
/// `users.app.password` (a list of users is addressed by `name`).
pub(super) fn locate(text: &str, key: &str) -> Option<usize> {
    let mut line_from = 0;
    let mut found = None;
    let lines: Vec<&str> = text.lines().collect();
    for seg in key.split('.') {
        // `hba[2]`: the key, then its third `- ` item.
        let (seg, item) = match seg.strip_suffix(']').and_then(|s| s.split_once('[')) {
            Some((name, i)) => (name, i.parse::<usize>().ok()),
            None => (seg, None),
        };
        let hit = lines.iter().enumerate().skip(line_from).find(|(_, l)| {
            let t = l.trim_start().trim_start_matches("- ");
            t.starts_with(&format!("{seg}:"))
                || t.starts_with(&format!("\"{seg}\":"))
                || t == format!("name: {seg}")
                || t == format!("name: \"{seg}\"")
        });
        match hit {
            Some((i, _)) => {
                found = Some(i + 1);
                line_from = i;
            }
            None => break,
        }
        if let Some(n) = item {
            match nth_item(&lines, line_from, n) {
                Some(i) => {
                    found = Some(i + 1);
                    line_from = i;
                }
                None => break,
            }
        }
    }
    found
}

/// The line index of the `n`th (0-based) block list item under the key on line `key`.
fn nth_item(lines: &[&str], key: usize, n: usize) -> Option<usize> {
    let indent = |l: &str| l.len() - l.trim_start().len();
    let key_indent = indent(lines[key]);
    let mut item_indent = None;
    let mut seen = 0;
    for (i, l) in lines.iter().enumerate().skip(key + 1) {
        let t = l.trim_start();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        if indent(l) < key_indent || (indent(l) == key_indent && !t.starts_with("- ")) {
            return None;
        }
        if t.starts_with("- ") && *item_indent.get_or_insert(indent(l)) == indent(l) {
            if seen == n {
                return Some(i);
            }
            seen += 1;
        }
    }
    None
}
