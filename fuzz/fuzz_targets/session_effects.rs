//! What a query does to the session (`pgmux::sql::session_effects`: SET/RESET,
//! DISCARD, DEALLOCATE, LISTEN, temp tables ...) and `SET pgmux.route`
//! (`pgmux::router::route_command`).
//!
//! Invariants:
//! - setting names are lower-case, and empty only from `""`, `U&"..."` or an unterminated quote;
//! - `merge_effects(a)` then `merge_effects(b)` is `session_effects(a \n; b)` (a pin
//!   in the merge implies one in the whole, not the reverse) when
//!   `a` ends outside any quote or comment (the input is split at its first NUL);
//! - the effects of `a` are kept in those of `a \n; b` (nothing is forgotten), and
//!   `RESET ALL` / `DISCARD ALL` after anything sets `reset_all`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pgmux::router::{route_command, RouteCommand};
use pgmux::sql::lexer::Lexer;
use pgmux::sql::{merge_effects, session_effects, SessionEffects};

fn check(sql: &[u8], fx: &SessionEffects) {
    for s in &fx.settings {
        assert_eq!(s, &s.to_ascii_lowercase());
        // An empty name only from an empty or unterminated quoted identifier (which
        // the server rejects): `SET "" = 1`, `SET SESSION"`; or from a Unicode-escaped
        // one, `SET U&"..."`, whose name the lexer does not decode.
        if s.is_empty() {
            let unicode = sql.windows(3).any(|w| w.eq_ignore_ascii_case(b"u&\""));
            assert!(unicode || sql.windows(2).any(|w| w == b"\"\"") || !terminated(sql), "{:?}", String::from_utf8_lossy(sql));
        }
    }
}

fn terminated(sql: &[u8]) -> bool {
    let mut l = Lexer::new(sql);
    while l.next().is_some() {}
    !l.unterminated()
}

fuzz_target!(|data: &[u8]| {
    let whole = session_effects(data);
    check(data, &whole);

    let (a, b) = match data.iter().position(|&c| c == 0) {
        Some(i) => (&data[..i], &data[i + 1..]),
        None => (data, &[][..]),
    };
    if terminated(a) {
        let mut joined = a.to_vec();
        joined.extend_from_slice(b"\n;");
        joined.extend_from_slice(b);
        let together = session_effects(&joined);
        let mut merged = SessionEffects::default();
        merge_effects(a, &mut merged);
        merge_effects(b, &mut merged);
        let what = String::from_utf8_lossy(&joined);
        assert_eq!(
            (&together.settings, together.reset_all, together.forget_statements),
            (&merged.settings, merged.reset_all, merged.forget_statements),
            "{what:?}"
        );
        // Pinning may see a call across the boundary (`pg_advisory_lock` `;(1)`):
        // conservative, so only one direction is required.
        assert!(merged.pin.is_none() || together.pin.is_some(), "{what:?}");

        let first = session_effects(a);
        assert!(together.settings.starts_with(&first.settings));
        assert!(!first.reset_all || together.reset_all);
        assert!(!first.forget_statements || together.forget_statements);
        assert!(first.pin.is_none() || together.pin.is_some());

        let mut reset = a.to_vec();
        reset.extend_from_slice(b"\n; RESET ALL");
        assert!(session_effects(&reset).reset_all);
    }

    match route_command(data) {
        Some(RouteCommand::Set(_)) | Some(RouteCommand::Reset) | Some(RouteCommand::Show) => {
            // Only a statement about pgmux.route.
            let t = String::from_utf8_lossy(data).to_ascii_lowercase();
            assert!(t.contains("pgmux.route"));
        }
        Some(RouteCommand::Invalid(_)) | None => {}
    }
});
