//! Functions that write (or must run on the primary), built in and configured.

use super::*;

/// Built-in functions that write, change state that lives on the server they run
/// on, or fail on a hot standby, so a query calling one goes to the primary.
/// Exact names: `nextval`, `setval`, `currval`, `lastval` (the session's sequence
/// state), `set_config`, `pg_notify`, `pg_listening_channels` and
/// `pg_notification_queue_usage` (LISTEN/NOTIFY state lives on the primary),
/// `txid_current`, `pg_current_xact_id`, `lowrite`, `pg_switch_wal`,
/// `pg_terminate_backend`, `pg_cancel_backend`, `pg_reload_conf`,
/// `pg_rotate_logfile`, `pg_promote`, `pg_logical_emit_message`,
/// `pg_replication_slot_advance`, `pg_stat_statements_reset`, `pg_backup_start`,
/// `pg_backup_stop`, `pg_start_backup`, `pg_stop_backup`,
/// `pg_import_system_collations`, `pg_log_backend_memory_contexts`, `pg_nextoid`,
/// `pg_log_standby_snapshot`, `pg_sync_replication_slots`,
/// `pg_truncate_visibility_map`, `gin_clean_pending_list`.
/// Prefixes: `pg_advisory_` and `pg_try_advisory_` (every advisory lock and
/// unlock), `pg_stat_reset`, `pg_current_wal_` (WAL positions: an error during
/// recovery), `lo_` (large objects, except the reading `lo_get`,
/// `lo_lseek[64]`, `lo_tell[64]`, `lo_close`), `pg_create_` (restore points,
/// replication slots), `pg_drop_`, `pg_copy_`, `pg_logical_slot_`,
/// `pg_replication_origin_`, `pg_file_` (adminpack), `pg_wal_replay_` (pausing a
/// replica is not a read), `pg_restore_` and `pg_clear_` (planner statistics),
/// `brin_summarize`, `brin_desummarize`, `dblink` (runs SQL elsewhere; its
/// connections are session state), `binary_upgrade_`.
/// `name` is compared without regard to ASCII case; a schema does not matter.
pub fn is_builtin_write_function(name: &[u8]) -> bool {
    // Lower-cased, at most 64 bytes: longer than any exact name, enough for prefixes.
    let mut buf = [0u8; 64];
    let n = &mut buf[..name.len().min(64)];
    for (d, s) in n.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    let n = &*n;
    if matches!(
        n,
        b"nextval"
            | b"setval"
            | b"currval"
            | b"lastval"
            | b"set_config"
            | b"pg_notify"
            | b"pg_listening_channels"
            | b"pg_notification_queue_usage"
            | b"txid_current"
            | b"pg_current_xact_id"
            | b"lowrite"
            | b"pg_switch_wal"
            | b"pg_terminate_backend"
            | b"pg_cancel_backend"
            | b"pg_reload_conf"
            | b"pg_rotate_logfile"
            | b"pg_promote"
            | b"pg_logical_emit_message"
            | b"pg_replication_slot_advance"
            | b"pg_stat_statements_reset"
            | b"pg_backup_start"
            | b"pg_backup_stop"
            | b"pg_start_backup"
            | b"pg_stop_backup"
            | b"pg_import_system_collations"
            | b"pg_log_backend_memory_contexts"
            | b"pg_nextoid"
            | b"pg_log_standby_snapshot"
            | b"pg_sync_replication_slots"
            | b"pg_truncate_visibility_map"
            | b"gin_clean_pending_list"
    ) {
        return true;
    }
    if n.starts_with(b"lo_") {
        return !matches!(n, b"lo_get" | b"lo_lseek" | b"lo_lseek64" | b"lo_tell" | b"lo_tell64" | b"lo_close");
    }
    const PREFIXES: &[&[u8]] = &[
        b"pg_advisory_",
        b"pg_try_advisory_",
        b"pg_stat_reset",
        b"pg_current_wal_",
        b"pg_create_",
        b"pg_drop_",
        b"pg_copy_",
        b"pg_logical_slot_",
        b"pg_replication_origin_",
        b"pg_file_",
        b"pg_wal_replay_",
        b"pg_restore_",
        b"pg_clear_",
        b"brin_summarize",
        b"brin_desummarize",
        b"dblink",
        b"binary_upgrade_",
    ];
    PREFIXES.iter().any(|p| n.starts_with(p))
}

/// Whether a call of `schema.name(...)` (or `name(...)` when `schema` is `None`)
/// may write: a built-in write function or one in `cfg.write_functions`. An empty
/// `schema` (a `U&"..."` identifier, not read) matches any configured schema.
pub fn is_write_function(schema: Option<&[u8]>, name: &[u8], cfg: &ClassifyConfig) -> bool {
    is_builtin_write_function(name) || is_configured(schema, name, cfg)
}

pub(super) fn is_configured(schema: Option<&[u8]>, name: &[u8], cfg: &ClassifyConfig) -> bool {
    cfg.write_functions.iter().any(|f| {
        let f = f.as_bytes();
        // Fast rejection (this runs for every name after a dot): a name shorter than
        // PostgreSQL's 63-byte limit matches only an entry that ends with it.
        if name.len() < 63 {
            let Some(cut) = f.len().checked_sub(name.len()) else { return false };
            if !f[cut..].eq_ignore_ascii_case(name) || (cut > 0 && f[cut - 1] != b'.') {
                return false;
            }
        }
        let (f_schema, f_name) = match f.iter().rposition(|&c| c == b'.') {
            Some(i) => (Some(&f[..i]), &f[i + 1..]),
            None => (None, f),
        };
        same_ident(f_name, name)
            && match (f_schema, schema) {
                (Some(a), Some(b)) => b.is_empty() || same_ident(a, b),
                _ => true,
            }
    })
}

/// Equal names as PostgreSQL sees them: ASCII case ignored, and cut to 63 bytes
/// (NAMEDATALEN - 1), as PostgreSQL cuts longer identifiers.
pub(super) fn same_ident(a: &[u8], b: &[u8]) -> bool {
    const MAX: usize = 63;
    a[..a.len().min(MAX)].eq_ignore_ascii_case(&b[..b.len().min(MAX)])
}
