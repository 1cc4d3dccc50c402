//! The import graph of `src/`, and the check that it has no cycle (tests only).
//!
//! Every file is a module; a file imports a module when it names a path into it
//! (`use crate::pool::Lease`, `super::relay::Relay`, `crate::clients::send_cancel(..)`
//! in an expression), outside comments, strings and `#[cfg(test)]` modules. The rule
//! is checked level by level: under every parent (the crate root, then each
//! directory), the children import each other without a cycle, where a child stands
//! for itself and everything below it. A child may use its parent's own items (a type
//! whose methods are spread over files, as `Pool` over `pool/*.rs`), and a parent its
//! children: that is the module tree itself, not a dependency between modules.
//!
//! `cargo test --lib module_graph -- --nocapture` prints the graph. Also here: no
//! source file is longer than 600 lines (clippy keeps functions within 80).
//! Standalone (no use of the crate), so `rustc --test src/module_graph.rs` builds it alone.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write;
use std::path::{Path, PathBuf};

/// A module, as its path from the crate root (`[]` is the root).
type Module = Vec<String>;

/// Every module of the crate, and the modules each imports (with a line that shows it).
#[derive(Debug, Default)]
pub struct Graph {
    pub modules: BTreeSet<Module>,
    pub imports: BTreeMap<Module, BTreeMap<Module, String>>,
}

/// Blanks comments, string and char literals (keeping line breaks).
fn strip(src: &str) -> String {
    let b: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len());
    let mut i = 0;
    while i < b.len() {
        let next = b.get(i + 1).copied();
        let end = match (b[i], next) {
            ('/', Some('/')) => (i..b.len()).find(|&k| b[k] == '\n').unwrap_or(b.len()),
            ('/', Some('*')) => block_comment_end(&b, i),
            ('"', _) => string_end(&b, i),
            ('\'', _) => char_end(&b, i).unwrap_or(i + 1),
            _ => raw_string_start(&b, i).map_or(i + 1, |len| raw_string_end(&b, i, len)),
        };
        // A comment or a literal (everything else is one char at a time): blanked.
        let literal = end > i + 1;
        for &c in &b[i..end] {
            out.push(if c == '\n' || !literal { c } else { ' ' });
        }
        i = end;
    }
    out
}

/// Where a (nested) block comment starting at `i` ends.
fn block_comment_end(b: &[char], mut i: usize) -> usize {
    let mut depth = 0;
    while i < b.len() {
        if b[i] == '/' && b.get(i + 1) == Some(&'*') {
            depth += 1;
            i += 2;
        } else if b[i] == '*' && b.get(i + 1) == Some(&'/') {
            depth -= 1;
            i += 2;
            if depth == 0 {
                return i;
            }
        } else {
            i += 1;
        }
    }
    i
}

/// Where a string starting with the quote at `i` ends (escapes skipped).
fn string_end(b: &[char], mut i: usize) -> usize {
    i += 1;
    while i < b.len() && b[i] != '"' {
        i += if b[i] == '\\' { 2 } else { 1 };
    }
    (i + 1).min(b.len())
}

/// Where a char literal starting at `i` ends ('x', '\n', '\''), or `None` for a lifetime.
fn char_end(b: &[char], i: usize) -> Option<usize> {
    if b.get(i + 1) == Some(&'\\') {
        (i + 3..b.len()).find(|&k| b[k] == '\'').map(|k| k + 1)
    } else if b.get(i + 2) == Some(&'\'') {
        Some(i + 3)
    } else {
        None
    }
}

/// Where a raw string whose opening (`r#"`) of `len` chars is at `i` ends.
fn raw_string_end(b: &[char], i: usize, len: usize) -> usize {
    let hashes = len - if b[i] == 'b' { 3 } else { 2 };
    let mut k = i + len;
    while k < b.len() {
        if b[k] == '"' && (0..hashes).all(|h| b.get(k + 1 + h) == Some(&'#')) {
            return k + 1 + hashes;
        }
        k += 1;
    }
    k
}

/// The length of a raw string's opening (`r"`, `r#"`, `br##"` ...) at `i`, if one starts there.
fn raw_string_start(b: &[char], i: usize) -> Option<usize> {
    let ident_before = i > 0 && (b[i - 1].is_alphanumeric() || b[i - 1] == '_');
    if ident_before {
        return None;
    }
    let mut j = i;
    if b[j] == 'b' {
        j += 1;
    }
    if b.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    while b.get(j) == Some(&'#') {
        j += 1;
    }
    (b.get(j) == Some(&'"')).then_some(j + 1 - i)
}

fn is_ident(c: char) -> bool {
    c.is_alphanumeric() || c == '_'
}

/// Blanks `#[cfg(test)] mod x { .. }`; returns the names of `#[cfg(test)] mod x;` files.
fn drop_test_modules(text: &mut String) -> Vec<String> {
    let mut test_files = Vec::new();
    while let Some(at) = text.find("#[cfg(test)]") {
        let rest = &text[at + "#[cfg(test)]".len()..];
        let after = rest.trim_start();
        let Some(decl) = after.strip_prefix("mod ") else {
            // Not a module: blank the attribute alone.
            text.replace_range(at..at + "#[cfg(test)]".len(), &" ".repeat("#[cfg(test)]".len()));
            continue;
        };
        let name: String = decl.trim_start().chars().take_while(|c| is_ident(*c)).collect();
        let body_at = at + "#[cfg(test)]".len() + (rest.len() - after.len()) + 4;
        let tail = &text[body_at..];
        let end = match tail.find(['{', ';']) {
            Some(k) if tail.as_bytes()[k] == b';' => {
                test_files.push(name);
                body_at + k + 1
            }
            Some(k) => {
                let mut depth = 0;
                let mut end = text.len();
                for (j, ch) in text[body_at + k..].char_indices() {
                    match ch {
                        '{' => depth += 1,
                        '}' => {
                            depth -= 1;
                            if depth == 0 {
                                end = body_at + k + j + 1;
                                break;
                            }
                        }
                        _ => {}
                    }
                }
                end
            }
            None => text.len(),
        };
        let blanked: String = text[at..end].chars().map(|c| if c == '\n' { '\n' } else { ' ' }).collect();
        text.replace_range(at..end, &blanked);
    }
    test_files
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Ident(String),
    Sep,
    Open,
    Close,
    Comma,
    Star,
}

fn tokens(s: &str) -> Vec<Tok> {
    let c: Vec<char> = s.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            ':' if c.get(i + 1) == Some(&':') => {
                out.push(Tok::Sep);
                i += 2;
            }
            '{' => {
                out.push(Tok::Open);
                i += 1;
            }
            '}' => {
                out.push(Tok::Close);
                i += 1;
            }
            ',' => {
                out.push(Tok::Comma);
                i += 1;
            }
            '*' => {
                out.push(Tok::Star);
                i += 1;
            }
            ch if is_ident(ch) => {
                let start = i;
                while i < c.len() && is_ident(c[i]) {
                    i += 1;
                }
                out.push(Tok::Ident(c[start..i].iter().collect()));
            }
            _ => i += 1,
        }
    }
    out
}

/// Expands a use tree (`a::{b, c::d as e}`) into its paths.
fn expand(toks: &[Tok], pos: &mut usize, prefix: &[String], out: &mut Vec<Vec<String>>) {
    let mut path = prefix.to_vec();
    loop {
        match toks.get(*pos) {
            Some(Tok::Ident(id)) if id == "as" => {
                *pos += 2;
                out.push(path);
                return;
            }
            Some(Tok::Ident(id)) => {
                if id != "self" || path.is_empty() {
                    path.push(id.clone());
                }
                *pos += 1;
            }
            Some(Tok::Sep) => *pos += 1,
            Some(Tok::Star) => {
                *pos += 1;
                out.push(path);
                return;
            }
            Some(Tok::Open) => {
                *pos += 1;
                loop {
                    match toks.get(*pos) {
                        Some(Tok::Close) => {
                            *pos += 1;
                            return;
                        }
                        Some(Tok::Comma) => *pos += 1,
                        None => return,
                        _ => expand(toks, pos, &path, out),
                    }
                }
            }
            _ => {
                out.push(path);
                return;
            }
        }
    }
}

/// Every path a file names that starts with `crate`, `super` or `self`, with its line.
fn paths(text: &str) -> Vec<(Vec<String>, usize)> {
    let mut found = Vec::new();
    let line_of = |at: usize| text[..at].matches('\n').count() + 1;
    // Use declarations, expanded.
    let mut rest_at = 0;
    let mut masked = text.to_string();
    while let Some(k) = find_word(&text[rest_at..], "use") {
        let start = rest_at + k;
        let Some(end) = text[start..].find(';').map(|e| start + e) else { break };
        let toks = tokens(&text[start + 3..end]);
        let mut out = Vec::new();
        let mut pos = 0;
        expand(&toks, &mut pos, &[], &mut out);
        for p in out {
            found.push((p, line_of(start)));
        }
        masked.replace_range(start..end, &" ".repeat(end - start));
        rest_at = end;
    }
    // Paths in expressions and types.
    for root in ["crate", "super", "self"] {
        let mut from = 0;
        while let Some(k) = find_word(&masked[from..], root) {
            let at = from + k;
            let seg: String = masked[at..].chars().take_while(|c| is_ident(*c) || *c == ':' || c.is_whitespace() && *c != '\n').collect();
            let parts: Vec<String> = seg.split("::").map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect();
            if parts.len() > 1 {
                found.push((parts, line_of(at)));
            }
            from = at + root.len();
        }
    }
    found
}

/// Where `word` occurs as a whole word in `s`.
fn find_word(s: &str, word: &str) -> Option<usize> {
    let mut from = 0;
    while let Some(k) = s[from..].find(word) {
        let at = from + k;
        let before = s[..at].chars().next_back();
        let after = s[at + word.len()..].chars().next();
        if !before.is_some_and(|c| is_ident(c) || c == '.' || c == '$') && !after.is_some_and(is_ident) {
            return Some(at);
        }
        from = at + word.len();
    }
    None
}

fn module_of(src: &Path, file: &Path) -> Module {
    let rel = file.strip_prefix(src).expect("under src");
    let mut parts: Vec<String> = rel.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    let last = parts.pop().expect("a file");
    let stem = last.trim_end_matches(".rs");
    if stem != "mod" && stem != "lib" {
        parts.push(stem.to_string());
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir).expect("readable").map(|e| e.expect("entry").path()).collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push(p);
        }
    }
}

impl Graph {
    /// Reads the library's files under `src` (`main.rs` is the binary, not a module).
    pub fn read(src: &Path) -> Graph {
        let mut files = Vec::new();
        rust_files(src, &mut files);
        let mut texts = BTreeMap::new();
        let mut test_only = BTreeSet::new();
        for f in files.iter().filter(|f| f.file_name().is_some_and(|n| n != "main.rs")) {
            let m = module_of(src, f);
            let mut text = strip(&std::fs::read_to_string(f).expect("readable"));
            for t in drop_test_modules(&mut text) {
                let mut child = m.clone();
                child.push(t);
                test_only.insert(child);
            }
            texts.insert(m, text);
        }
        let mut g = Graph { modules: texts.keys().filter(|m| !test_only.contains(*m)).cloned().collect(), imports: BTreeMap::new() };
        for (m, text) in &texts {
            if test_only.contains(m) {
                continue;
            }
            let entry = g.imports.entry(m.clone()).or_default();
            for (path, line) in paths(text) {
                let Some(target) = resolve(&g.modules, m, &path) else { continue };
                if target != *m {
                    entry.entry(target).or_insert_with(|| format!("line {line}: {}", path.join("::")));
                }
            }
        }
        g
    }

    /// Cycles among the children of each parent, each as its members and the
    /// imports that close it.
    pub fn cycles(&self) -> Vec<String> {
        let mut levels: BTreeMap<Module, BTreeMap<String, BTreeMap<String, String>>> = BTreeMap::new();
        for (from, targets) in &self.imports {
            for (to, why) in targets {
                let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
                if common == from.len() || common == to.len() {
                    continue; // ancestor or descendant
                }
                let parent = from[..common].to_vec();
                let evidence = format!("{} -> {} ({why})", show(from), show(to));
                levels.entry(parent).or_default().entry(from[common].clone()).or_default().entry(to[common].clone()).or_insert(evidence);
            }
        }
        let mut found = Vec::new();
        for (parent, edges) in &levels {
            for scc in components(edges) {
                let mut text = format!("cycle under {}: {}", show(parent), scc.iter().cloned().collect::<Vec<_>>().join(", "));
                for (a, b) in shortest_cycle(edges, &scc) {
                    let _ = write!(text, "\n    {}", edges[&a][&b]);
                }
                found.push(text);
            }
        }
        found
    }

    /// `module -> imports` per line, for every module.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for m in &self.modules {
            let deps: Vec<String> = self.imports.get(m).into_iter().flatten().map(|(t, _)| show(t)).collect();
            let _ = writeln!(out, "{} -> {}", show(m), if deps.is_empty() { "(nothing)".into() } else { deps.join(", ") });
        }
        out
    }
}

fn show(m: &[String]) -> String {
    if m.is_empty() {
        "crate".into()
    } else {
        m.join("::")
    }
}

/// The module a path points into: the longest prefix that is a module file.
fn resolve(modules: &BTreeSet<Module>, from: &Module, path: &[String]) -> Option<Module> {
    let (mut base, rest) = match path.first().map(String::as_str) {
        Some("crate") => (Vec::new(), &path[1..]),
        Some("self") => (from.clone(), &path[1..]),
        Some("super") => {
            let mut base = from.clone();
            let mut k = 0;
            while path.get(k).map(String::as_str) == Some("super") {
                base.pop()?;
                k += 1;
            }
            (base, &path[k..])
        }
        _ => return None,
    };
    for seg in rest {
        let mut next = base.clone();
        next.push(seg.clone());
        if !modules.contains(&next) {
            break;
        }
        base = next;
    }
    Some(base)
}

/// The shortest cycle through the first member of a strongly connected component, as its edges.
fn shortest_cycle(edges: &BTreeMap<String, BTreeMap<String, String>>, scc: &BTreeSet<String>) -> Vec<(String, String)> {
    let start = scc.iter().next().expect("not empty").clone();
    let mut came_from: BTreeMap<String, String> = BTreeMap::new();
    let mut queue = std::collections::VecDeque::from([start.clone()]);
    while let Some(v) = queue.pop_front() {
        for w in edges.get(&v).into_iter().flat_map(|m| m.keys()).filter(|w| scc.contains(*w)) {
            if *w == start {
                let mut path = vec![(v.clone(), start.clone())];
                let mut at = v.clone();
                while at != start {
                    let prev = came_from[&at].clone();
                    path.push((prev.clone(), at));
                    at = prev;
                }
                path.reverse();
                return path;
            }
            if !came_from.contains_key(w) {
                came_from.insert(w.clone(), v.clone());
                queue.push_back(w.clone());
            }
        }
    }
    Vec::new()
}

/// Strongly connected components with more than one member (Tarjan).
fn components(edges: &BTreeMap<String, BTreeMap<String, String>>) -> Vec<BTreeSet<String>> {
    struct State<'a> {
        edges: &'a BTreeMap<String, BTreeMap<String, String>>,
        index: BTreeMap<&'a str, usize>,
        low: BTreeMap<&'a str, usize>,
        stack: Vec<&'a str>,
        on_stack: BTreeSet<&'a str>,
        next: usize,
        out: Vec<BTreeSet<String>>,
    }
    fn visit<'a>(s: &mut State<'a>, v: &'a str) {
        s.index.insert(v, s.next);
        s.low.insert(v, s.next);
        s.next += 1;
        s.stack.push(v);
        s.on_stack.insert(v);
        for w in s.edges.get(v).into_iter().flat_map(|m| m.keys()) {
            if !s.index.contains_key(w.as_str()) {
                visit(s, w);
                let lw = s.low[w.as_str()];
                let lv = s.low[v];
                s.low.insert(v, lv.min(lw));
            } else if s.on_stack.contains(w.as_str()) {
                let iw = s.index[w.as_str()];
                let lv = s.low[v];
                s.low.insert(v, lv.min(iw));
            }
        }
        if s.low[v] == s.index[v] {
            let mut scc = BTreeSet::new();
            while let Some(w) = s.stack.pop() {
                s.on_stack.remove(w);
                scc.insert(w.to_string());
                if w == v {
                    break;
                }
            }
            if scc.len() > 1 {
                s.out.push(scc);
            }
        }
    }
    let mut s = State {
        edges,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on_stack: BTreeSet::new(),
        next: 0,
        out: Vec::new(),
    };
    for v in edges.keys() {
        if !s.index.contains_key(v.as_str()) {
            visit(&mut s, v);
        }
    }
    s.out
}

#[test]
fn modules_import_each_other_without_cycles() {
    let src = Path::new(option_env!("CARGO_MANIFEST_DIR").unwrap_or(".")).join("src");
    let g = Graph::read(&src);
    println!("{}", g.render());
    let cycles = g.cycles();
    assert!(cycles.is_empty(), "import cycles in src/:\n{}", cycles.join("\n"));
}

/// Longest source file, in lines.
const MAX_FILE_LINES: usize = 600;

#[test]
fn source_files_stay_under_600_lines() {
    let mut files = Vec::new();
    rust_files(&Path::new(option_env!("CARGO_MANIFEST_DIR").unwrap_or(".")).join("src"), &mut files);
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).expect("readable").lines().count();
            (n > MAX_FILE_LINES).then(|| format!("{}: {n} lines", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_FILE_LINES} lines:\n{}", long.join("\n"));
}

#[test]
fn the_reader_sees_paths_and_not_comments_or_strings() {
    let text = strip(
        "use crate::a::{b, c::{d as e, self}};\n// crate::z::y\nlet s = \"crate::q::r\"; let c = '\"'; fn f<'a>() { super::m::n(); }",
    );
    let found: Vec<String> = paths(&text).into_iter().map(|(p, _)| p.join("::")).collect();
    assert_eq!(found, ["crate::a::b", "crate::a::c::d", "crate::a::c", "super::m::n"]);
    let mut t = "#[cfg(test)]\nmod tests {\n use crate::x::y;\n}\n#[cfg(test)]\nmod more;\nuse crate::k;".to_string();
    assert_eq!(drop_test_modules(&mut t), ["more"]);
    assert!(!t.contains("crate::x") && t.contains("crate::k"));
}
