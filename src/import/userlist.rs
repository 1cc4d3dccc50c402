//! userlist.txt: PgBouncer's `"user" "password"` lines, as pgmux users.

use super::{content, ImportError, Out, User, USERLIST};
use crate::auth::scram::ScramSecret;

/// userlist.txt's users, plus admin_users missing there (with a placeholder password).
pub(super) fn read_users(userlist: Option<&str>, admins: &[&str], out: &mut Out) -> Result<Vec<User>, ImportError> {
    let mut users: Vec<User> = Vec::new();
    let placeholder = || format!("CHANGE-ME-{:016x}", rand::random::<u64>());
    for (i, raw) in userlist.unwrap_or("").lines().enumerate() {
        let Some(t) = content(raw) else { continue };
        let err = |message: &str| ImportError { file: USERLIST, line: i + 1, message: message.into() };
        let (name, pw) = userlist_line(t).ok_or_else(|| err("expected \"user\" \"password\""))?;
        let key = format!("{USERLIST} \"{name}\"");
        let (pw, comment) = if pw.len() == 35 && pw.starts_with("md5") && pw[3..].bytes().all(|b| b.is_ascii_hexdigit()) {
            out.skip(&key, "md5 hash", "pgmux needs the plaintext password or a SCRAM-SHA-256 verifier: a random placeholder is written");
            (placeholder(), "placeholder: userlist.txt has an md5 hash; put the password here".to_string())
        } else if pw.starts_with("SCRAM-SHA-256$") {
            ScramSecret::parse_verifier(&pw).ok_or_else(|| err("malformed SCRAM-SHA-256 verifier"))?;
            out.skip(&key, "SCRAM verifier", "kept: pgmux checks clients with it, but logs in to PostgreSQL with it only if the server asks no password (issue #6); give the plaintext password otherwise");
            (pw, String::new())
        } else {
            (pw, String::new())
        };
        if users.iter().any(|u| u.0 == name) {
            out.skip(key, "", "listed twice: the last entry is used");
            users.retain(|u| u.0 != name);
        }
        users.push((name, pw, false, comment, Vec::new()));
    }
    for &a in admins {
        match users.iter_mut().find(|u| u.0 == a) {
            Some(u) => u.2 = true,
            None => {
                out.skip("admin_users", a, "not in userlist.txt: written with a random placeholder password");
                users.push((a.to_string(), placeholder(), true, "placeholder: not in userlist.txt".into(), Vec::new()));
            }
        }
    }
    Ok(users)
}

/// One `"user" "password"` line (`""` is a quote inside).
fn userlist_line(t: &str) -> Option<(String, String)> {
    fn quoted(s: &str) -> Option<(String, &str)> {
        let body = s.trim_start().strip_prefix('"')?;
        let mut chars = body.char_indices().peekable();
        let mut out = String::new();
        while let Some((i, c)) = chars.next() {
            match c {
                '"' if chars.next_if(|(_, c)| *c == '"').is_some() => out.push('"'),
                '"' => return Some((out, &body[i + 1..])),
                c => out.push(c),
            }
        }
        None
    }
    let (name, rest) = quoted(t)?;
    Some((name, quoted(rest)?.0))
}
