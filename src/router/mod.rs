//! Read/write routing: which server may run a statement ([`classify`]), what the
//! router knows about each database's servers ([`topology`]), what a client's next
//! request asks for ([`request`]), and the choice of a server for it ([`decide`]).

pub mod classify;
pub mod request;
pub mod topology;

use crate::config::Route;
use classify::Hint;
use topology::{Routed, Topology};

/// Where one request goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Node index in the database's [`Topology`].
    pub node: usize,
    pub routed: Routed,
}

/// Chooses the server for a request: `read` is the classifier's verdict on it,
/// `hint` a leading comment's, `route` the session's (or user's) setting. `min_lsn`:
/// a replica must have replayed this far (read-your-writes; `u64::MAX`: no replica
/// will do). `skip`: nodes already tried (bitmask).
pub fn decide(topo: &Topology, read: bool, hint: Option<Hint>, route: Route, min_lsn: u64, skip: u64) -> Decision {
    let primary = |routed| Decision { node: topo.primary(), routed };
    let wanted = match (route, hint) {
        (Route::Primary, _) => return primary(Routed::PrimaryHint),
        (Route::Replica, _) => Routed::ReplicaHint,
        (Route::Auto, Some(Hint::Primary)) => return primary(Routed::PrimaryHint),
        (Route::Auto, Some(Hint::Replica)) => Routed::ReplicaHint,
        (Route::Auto, None) if read => Routed::ReplicaRead,
        (Route::Auto, None) => return primary(Routed::PrimaryWrite),
    };
    match topo.pick_replica(min_lsn, skip) {
        Ok(node) => Decision { node, routed: wanted },
        Err(why) => primary(why.routed()),
    }
}

/// A statement about routing itself, answered by pgmux.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RouteCommand {
    /// `SET [SESSION] pgmux.route = auto|primary|replica` (or `TO`).
    Set(Route),
    /// `RESET pgmux.route`, `SET pgmux.route TO DEFAULT`.
    Reset,
    /// `SHOW pgmux.route`.
    Show,
    /// `SET pgmux.route` to something else.
    Invalid(String),
}

/// Recognises a simple Query that sets, resets or shows `pgmux.route`.
pub fn route_command(text: &[u8]) -> Option<RouteCommand> {
    let text = std::str::from_utf8(text).ok()?.trim().trim_end_matches(';').trim();
    let words: Vec<&str> = text.split(|c: char| c.is_ascii_whitespace() || c == '=').filter(|w| !w.is_empty()).collect();
    let lower: Vec<String> = words.iter().map(|w| w.to_ascii_lowercase()).collect();
    let lower: Vec<&str> = lower.iter().map(|s| s.as_str()).collect();
    match lower.as_slice() {
        ["reset", "pgmux.route"] => Some(RouteCommand::Reset),
        ["show", "pgmux.route"] => Some(RouteCommand::Show),
        ["set", rest @ ..] => {
            let rest = if rest.first() == Some(&"session") { &rest[1..] } else { rest };
            let [name, value @ ..] = rest else { return None };
            if *name != "pgmux.route" {
                return None;
            }
            let value = match value {
                ["to", v] | [v] => v.trim_matches('\''),
                _ => return Some(RouteCommand::Invalid(value.join(" "))),
            };
            if value == "default" {
                return Some(RouteCommand::Reset);
            }
            Some(Route::parse(value).map(RouteCommand::Set).unwrap_or_else(|| RouteCommand::Invalid(value.to_string())))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::ServerAddr;
    use std::sync::atomic::Ordering::Relaxed;

    #[test]
    fn route_commands() {
        assert_eq!(route_command(b"SET pgmux.route = 'replica'"), Some(RouteCommand::Set(Route::Replica)));
        assert_eq!(route_command(b"set session pgmux.route to primary;"), Some(RouteCommand::Set(Route::Primary)));
        assert_eq!(route_command(b"SET pgmux.route=auto"), Some(RouteCommand::Set(Route::Auto)));
        assert_eq!(route_command(b"RESET pgmux.route"), Some(RouteCommand::Reset));
        assert_eq!(route_command(b"SET pgmux.route TO DEFAULT"), Some(RouteCommand::Reset));
        assert_eq!(route_command(b"show pgmux.route"), Some(RouteCommand::Show));
        assert_eq!(route_command(b"SET pgmux.route = sideways"), Some(RouteCommand::Invalid("sideways".into())));
        assert_eq!(route_command(b"SET search_path = x"), None);
        assert_eq!(route_command(b"select 1"), None);
    }

    #[test]
    fn decisions() {
        let a = |p| ServerAddr { host: "h".into(), port: p };
        let t = Topology::new("app", a(1), vec![a(2)]);
        let d = |read, hint, route| decide(&t, read, hint, route, 0, 0);
        assert_eq!(d(true, None, Route::Auto), Decision { node: 0, routed: Routed::PrimaryFallback });
        t.nodes[1].readable.store(true, Relaxed);
        t.nodes[1].up.store(true, Relaxed);
        assert_eq!(d(true, None, Route::Auto), Decision { node: 1, routed: Routed::ReplicaRead });
        assert_eq!(d(false, None, Route::Auto), Decision { node: 0, routed: Routed::PrimaryWrite });
        assert_eq!(d(false, Some(Hint::Replica), Route::Auto), Decision { node: 1, routed: Routed::ReplicaHint });
        assert_eq!(d(true, Some(Hint::Primary), Route::Auto), Decision { node: 0, routed: Routed::PrimaryHint });
        assert_eq!(d(true, None, Route::Primary), Decision { node: 0, routed: Routed::PrimaryHint });
        assert_eq!(d(false, None, Route::Replica), Decision { node: 1, routed: Routed::ReplicaHint });
        assert_eq!(decide(&t, true, None, Route::Auto, u64::MAX, 0).routed, Routed::PrimaryReadYourWrites);
        assert_eq!(decide(&t, true, None, Route::Auto, 0, 1 << 1).routed, Routed::PrimaryFallback);
    }
}
