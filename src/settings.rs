//! Session settings a client expects of whatever server connection it is given.
//!
//! In transaction mode many clients share a server connection, so the settings a
//! client asked for at startup (`application_name`, `client_encoding`, `options=-c
//! ...`) are kept per client as [`SessionParams`] and applied to a connection when
//! the client gets it, by [`sync_query`]: only the difference, and nothing when the
//! connection already matches (the common case, at no cost).

use std::fmt::Write;

/// Settings as (name, value), sorted by lower-cased name, names unique.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct SessionParams {
    items: Vec<(String, String)>,
}

/// Startup parameters that are not settings.
const NOT_SETTINGS: &[&str] = &["user", "database", "options", "replication"];

impl SessionParams {
    /// Builds from startup parameters (already with `options` split into settings).
    pub fn from_startup(params: impl IntoIterator<Item = (String, String)>) -> SessionParams {
        let mut items: Vec<(String, String)> = Vec::new();
        for (k, v) in params {
            let key = k.to_ascii_lowercase();
            if NOT_SETTINGS.contains(&key.as_str()) || key.starts_with("_pq_.") {
                continue;
            }
            match items.iter_mut().find(|(ik, _)| *ik == key) {
                Some(slot) => slot.1 = v,
                None => items.push((key, v)),
            }
        }
        items.sort();
        // Kept as long as the client stays: no spare capacity.
        items.shrink_to_fit();
        SessionParams { items }
    }

    /// A setting's value; `key` in any case (the names are kept lowercase).
    pub fn get(&self, key: &str) -> Option<&str> {
        self.items.iter().find(|(k, _)| k.eq_ignore_ascii_case(key)).map(|(_, v)| v.as_str())
    }

    /// A copy with some settings replaced (`Some`) or removed (`None`).
    pub fn updated(&self, changes: &[(String, Option<String>)]) -> SessionParams {
        let mut items = self.items.clone();
        for (k, v) in changes {
            let k = k.to_ascii_lowercase();
            items.retain(|(ik, _)| *ik != k);
            if let Some(v) = v {
                items.push((k, v.clone()));
            }
        }
        items.sort();
        SessionParams { items }
    }
}

/// Startup settings shared by the clients that have the same (most come from a few
/// drivers and applications): an idle client then holds a pointer, not a copy.
/// The set holds the shared copies themselves (no second copy as a key); those no
/// client holds any more are swept when the set has doubled since the last sweep.
#[derive(Default)]
pub struct ParamsInterner {
    known: std::sync::Mutex<Known>,
}

#[derive(Default)]
struct Known {
    set: std::collections::HashSet<std::sync::Arc<SessionParams>>,
    sweep_at: usize,
}

impl ParamsInterner {
    /// The fewest entries at which a sweep is worth it.
    const SWEEP_AT: usize = 4096;

    pub fn intern(&self, p: SessionParams) -> std::sync::Arc<SessionParams> {
        let mut known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(shared) = known.set.get(&p) {
            return shared.clone();
        }
        if known.set.len() >= known.sweep_at.max(Self::SWEEP_AT) {
            known.set.retain(|a| std::sync::Arc::strong_count(a) > 1);
            known.sweep_at = 2 * known.set.len();
        }
        let shared = std::sync::Arc::new(p);
        known.set.insert(shared.clone());
        shared
    }

    /// Entries kept (shared settings, and those not yet swept).
    #[cfg(test)]
    fn len(&self) -> usize {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).set.len()
    }
}

/// The query that reads the current values of `names` (name, value or NULL).
pub fn read_query(names: &[String]) -> String {
    let mut sql = String::from("SELECT n, pg_catalog.current_setting(n, true) FROM pg_catalog.unnest(ARRAY[");
    for (i, n) in names.iter().enumerate() {
        if i > 0 {
            sql.push(',');
        }
        quote_literal(&mut sql, n);
    }
    sql.push_str("]::text[]) AS n");
    sql
}

fn quote_literal(out: &mut String, s: &str) {
    out.push_str("E'");
    for c in s.chars() {
        match c {
            '\'' => out.push_str("''"),
            '\\' => out.push_str("\\\\"),
            c => out.push(c),
        }
    }
    out.push('\'');
}

fn quote_ident(out: &mut String, s: &str) {
    out.push('"');
    out.push_str(&s.replace('"', "\"\""));
    out.push('"');
}

/// The SQL that turns a connection with `server` settings into one with `client`
/// settings, or `None` when they already match. `set_config` takes a value exactly as
/// a startup option does (a list such as `search_path` is not re-quoted).
pub fn sync_query(client: &SessionParams, server: &SessionParams) -> Option<String> {
    if client == server {
        return None;
    }
    let mut sql = String::new();
    for (k, v) in &client.items {
        if server.get(k) != Some(v.as_str()) {
            sql.push_str("SELECT pg_catalog.set_config(");
            quote_literal(&mut sql, k);
            sql.push(',');
            quote_literal(&mut sql, v);
            sql.push_str(",false);");
        }
    }
    for (k, _) in &server.items {
        if client.get(k).is_none() {
            sql.push_str("RESET ");
            quote_ident(&mut sql, k);
            sql.push(';');
        }
    }
    let _ = write!(sql, "");
    Some(sql)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(items: &[(&str, &str)]) -> SessionParams {
        SessionParams::from_startup(items.iter().map(|(k, v)| (k.to_string(), v.to_string())))
    }

    #[test]
    fn identical_needs_nothing() {
        let a = p(&[("application_name", "x"), ("user", "u")]);
        assert_eq!(sync_query(&a, &p(&[("application_name", "x")])), None);
    }

    #[test]
    fn sets_and_resets_the_difference() {
        let client = p(&[("application_name", "it's"), ("search_path", "a,b")]);
        let server = p(&[("application_name", "old"), ("TimeZone", "UTC")]);
        let q = sync_query(&client, &server).unwrap();
        assert_eq!(
            q,
            "SELECT pg_catalog.set_config(E'application_name',E'it''s',false);\
             SELECT pg_catalog.set_config(E'search_path',E'a,b',false);\
             RESET \"timezone\";"
        );
    }
}

#[cfg(test)]
mod interner_tests {
    use super::*;

    #[test]
    fn equal_settings_are_shared_and_dropped_ones_swept() {
        let i = ParamsInterner::default();
        let p = |app: &str| SessionParams::from_startup([("application_name".to_string(), app.to_string())]);
        let a = i.intern(p("web"));
        let b = i.intern(p("web"));
        assert!(std::sync::Arc::ptr_eq(&a, &b));
        let c = i.intern(p("batch"));
        assert!(!std::sync::Arc::ptr_eq(&a, &c));
        drop((a, b));
        let d = i.intern(p("web"));
        assert_eq!(d.get("application_name"), Some("web"));
        assert_eq!(d.get("Application_Name"), Some("web"), "any case");
        // Those nobody holds are swept; those held stay shared.
        let held: Vec<_> = (0..100).map(|n| i.intern(p(&format!("held-{n}")))).collect();
        for n in 0..ParamsInterner::SWEEP_AT + 10 {
            drop(i.intern(p(&n.to_string())));
        }
        assert!(i.len() < 300, "{} kept", i.len());
        assert!(std::sync::Arc::ptr_eq(&held[7], &i.intern(p("held-7"))));
        assert!(std::sync::Arc::ptr_eq(&c, &i.intern(p("batch"))));
    }
}
