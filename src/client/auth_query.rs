//! Users that are not in the config, looked up in PostgreSQL at each login with
//! `auth_query`, run as `auth_user` on the primary of the database the client asks
//! for (PgBouncer's `auth_user`): teams need not copy secrets into pgmux.
//!
//! The query returns the user's secret as PostgreSQL stores it. A SCRAM-SHA-256
//! verifier is used as a configured one is: the client proves its password against
//! it, and pgmux logs in to PostgreSQL with the keys that proof reveals. An md5 hash
//! cannot serve SCRAM and is refused; any other value is taken as a plaintext password.

use std::sync::Arc;
use std::time::Duration;

use crate::error::ClientError;
use crate::state::{State, UserAuth};

/// How long the lookup query may run.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// Looks `user` up; `Ok(None)` when there is no usable secret (the login then fails
/// as for an unknown user) or no `auth_user` is configured.
pub async fn look_up(state: &State, database: &str, user: &str) -> Result<Option<Arc<UserAuth>>, ClientError> {
    let (auth_user, query) = {
        let c = state.config.current();
        match &c.auth_user {
            Some(a) if a != user => (a.clone(), c.auth_query.clone()),
            _ => return Ok(None),
        }
    };
    let Some(pools) = state.pools_for(database, &auth_user) else {
        return Ok(None);
    };
    let pool = pools.current_primary();
    let mut lease = pool.checkout().await?;
    let result = lease.conn_mut().run_with_param(&query, user, QUERY_TIMEOUT).await;
    let result = match result {
        Ok(r) => {
            lease.release();
            r
        }
        Err(e) => {
            lease.discard();
            return Err(ClientError::AuthQueryLost(e));
        }
    };
    if let Some(e) = result.error {
        tracing::error!(error = %e, "auth_query failed");
        return Err(ClientError::AuthQueryRefused(e));
    }
    // (name, secret); a one-column query gives the secret alone.
    let secret = result.rows.first().and_then(|row| row.last().cloned().flatten());
    let secret = match secret {
        Some(s) if s.len() == 35 && s.starts_with("md5") => {
            tracing::warn!(%user, "auth_query returned an md5 hash: pgmux needs a SCRAM-SHA-256 verifier (set password_encryption = scram-sha-256 and the password again)");
            None
        }
        Some(s) if s.is_empty() => None,
        s => s,
    };
    Ok(state.looked_up(user, secret.as_deref()))
}
