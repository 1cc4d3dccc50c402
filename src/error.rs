//! Errors that reach clients, in PostgreSQL's terms.
//!
//! [`PgError`] is what goes on the wire (severity, SQLSTATE, message; defined with
//! the protocol's messages); [`ClientError`] is the typed reason pgmux refuses or
//! fails a client, each variant mapped in one match ([`ClientError::to_pg`]) to the
//! SQLSTATE and wording PostgreSQL itself uses for the same situation, and in another
//! ([`ClientError::kind`]) to the label it is counted under. Below it,
//! [`ProtocolError`] (a message that breaks the protocol) and [`ServerFailure`] (a
//! server connection lost) say what went wrong without a string.

use std::fmt;
use std::io;
use std::net::IpAddr;
use std::time::Duration;

use crate::protocol::startup::{OptionsError, StartupError};
pub use crate::protocol::{PgError, Severity};

/// SQLSTATE codes pgmux emits (PostgreSQL Appendix A).
pub struct SqlState;

impl SqlState {
    pub const PROTOCOL_VIOLATION: &'static str = "08P01";
    pub const CONNECTION_FAILURE: &'static str = "08006";
    pub const UNABLE_TO_CONNECT: &'static str = "08001";
    pub const INVALID_PASSWORD: &'static str = "28P01";
    pub const INVALID_AUTHORIZATION: &'static str = "28000";
    pub const INVALID_CATALOG_NAME: &'static str = "3D000";
    pub const TOO_MANY_CONNECTIONS: &'static str = "53300";
    pub const ADMIN_SHUTDOWN: &'static str = "57P01";
    pub const CANNOT_CONNECT_NOW: &'static str = "57P03";
    pub const FEATURE_NOT_SUPPORTED: &'static str = "0A000";
    pub const INTERNAL_ERROR: &'static str = "XX000";
    pub const INVALID_PARAMETER_VALUE: &'static str = "22023";
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &'static str = "25P03";
    pub const CONFIG_FILE_ERROR: &'static str = "F0000";
    pub const IDLE_SESSION_TIMEOUT: &'static str = "57P05";
    /// PostgreSQL's own answer when its notification queue is full.
    pub const PROGRAM_LIMIT_EXCEEDED: &'static str = "54000";
}

/// What kind of refusal an error is: the `reason` label of
/// `pgmux_client_connections_rejected_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    TooManyClients,
    AuthFailed,
    UnknownDatabase,
    StartupTimeout,
    Protocol,
    ServerUnavailable,
    /// Refused by the `hba:` rules.
    Hba,
    /// The address is banned after too many failed logins.
    AuthFailureLimit,
}

impl ErrorKind {
    pub const ALL: [ErrorKind; 8] = [
        ErrorKind::TooManyClients,
        ErrorKind::AuthFailed,
        ErrorKind::UnknownDatabase,
        ErrorKind::StartupTimeout,
        ErrorKind::Protocol,
        ErrorKind::ServerUnavailable,
        ErrorKind::Hba,
        ErrorKind::AuthFailureLimit,
    ];

    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            ErrorKind::TooManyClients => "too_many_clients",
            ErrorKind::AuthFailed => "auth_failed",
            ErrorKind::UnknownDatabase => "unknown_database",
            ErrorKind::StartupTimeout => "startup_timeout",
            ErrorKind::Protocol => "protocol",
            ErrorKind::ServerUnavailable => "server_unavailable",
            ErrorKind::Hba => "hba",
            ErrorKind::AuthFailureLimit => "auth_failure_limit",
        }
    }

    /// A server's own refusal is counted as pgmux counts its own refusal with the
    /// same SQLSTATE.
    fn of_server(e: &PgError) -> ErrorKind {
        match &*e.code {
            SqlState::TOO_MANY_CONNECTIONS => ErrorKind::TooManyClients,
            SqlState::INVALID_PASSWORD | SqlState::INVALID_AUTHORIZATION => ErrorKind::AuthFailed,
            SqlState::INVALID_CATALOG_NAME => ErrorKind::UnknownDatabase,
            SqlState::UNABLE_TO_CONNECT | SqlState::CONNECTION_FAILURE => ErrorKind::ServerUnavailable,
            _ => ErrorKind::Protocol,
        }
    }
}

/// A message that breaks the protocol (a client's, or a server's).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error("invalid message length {len} for message type \"{}\"", tag.escape_ascii())]
    BadLength { tag: u8, len: i64 },
    /// A length without a message type (authentication, the admin console).
    #[error("invalid message length {0}")]
    Length(i64),
    #[error("invalid frontend message type {0}")]
    BadType(u8),
    #[error("expected password response, got message type {0}")]
    NotPassword(u8),
    /// A message whose fields do not parse.
    #[error("{0}")]
    Malformed(&'static str),
    #[error("{0}")]
    Startup(#[from] StartupError),
    #[error("{0}")]
    Options(#[from] OptionsError),
    #[error("too many negotiation packets")]
    TooManyNegotiationPackets,
    #[error("SSLRequest on a connection already using TLS")]
    SslRequestOverTls,
    #[error("received unencrypted data after SSL request")]
    DataAfterSslRequest,
    #[error("received direct SSL connection request without ALPN protocol negotiation extension")]
    DirectTlsWithoutAlpn,
    /// Between a stale-plan error and its ReadyForQuery only small messages come.
    #[error("unexpectedly large message during a retry")]
    LargeDuringRetry,
}

/// Why a server connection was lost (or given up) while a client used it.
#[derive(Debug, thiserror::Error)]
pub enum ServerFailure {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("server closed the connection")]
    Closed,
    #[error("{0}")]
    Protocol(ProtocolError),
    #[error("no answer from the server within query_timeout after its query was cancelled")]
    Silent,
    /// pgmux's own statement left the connection in another transaction status.
    #[error("unexpected transaction status \"{}\" after pgmux's own statement", (*.0 as char).escape_default())]
    Status(u8),
}

/// Why a client is refused, a request fails, or a session is ended.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("no PostgreSQL user name specified in startup packet")]
    NoUserName,
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("pgmux: user \"{0}\" may not use the admin console (set admin: true)")]
    NotAdmin(String),
    #[error("pgmux: SSL required (tls.mode is require)")]
    TlsRequired,
    #[error("pgmux hba rejects connection for host \"{host}\", user \"{user}\", database \"{database}\", no encryption")]
    Hba { host: IpAddr, user: String, database: String },
    #[error("too many failed login attempts from \"{0}\"; try again later")]
    Banned(IpAddr),
    #[error("sorry, too many clients already")]
    TooManyClients,
    #[error("no server connection available within {timeout:?} for {pool}")]
    CheckoutTimeout { pool: String, timeout: Duration },
    #[error("cannot connect to server {server}: {reason}")]
    ServerUnavailable { server: String, reason: String },
    #[error("{0}")]
    Protocol(#[from] ProtocolError),
    #[error("server connection closed unexpectedly: {0}")]
    ServerLost(#[from] ServerFailure),
    #[error("{0}")]
    Unsupported(&'static str),
    /// The server's own refusal (wrong server password, missing database ...).
    #[error("{}", .0.message)]
    ServerRefused(PgError),
    /// `auth_query` could not run (it is run as `auth_user` on the primary).
    #[error("pgmux: auth_query failed: {0}")]
    AuthQueryLost(io::Error),
    /// The server refused `auth_query`.
    #[error("pgmux: auth_query failed: {}", .0.message)]
    AuthQueryRefused(PgError),
    #[error("terminating connection due to idle-session timeout (pgmux client_idle_timeout)")]
    IdleSessionTimeout,
    #[error("terminating connection due to idle-in-transaction timeout (pgmux idle_transaction_timeout)")]
    IdleInTransactionTimeout,
    /// KILL_CLIENT, KILL db.
    #[error("terminating connection due to administrator command (KILL)")]
    Killed,
    /// Shutdown (SIGTERM, SHUTDOWN): the client is told at a transaction boundary.
    #[error("terminating connection due to administrator command")]
    AdminShutdown,
    /// A listening client fell `pool.notify_queue_size` notifications behind.
    #[error("pgmux: terminating connection: {0} notifications were queued for this client and it did not read them (pool.notify_queue_size); later ones were lost")]
    NotifyOverflow(usize),
    /// pgmux's listening connection to the server broke (or could not be had).
    #[error("pgmux: terminating connection: pgmux's listening connection to the server was lost, so notifications may have been missed")]
    NotifyMissed,
}

impl ClientError {
    /// The ErrorResponse a client receives for this error.
    pub fn to_pg(&self) -> PgError {
        use ClientError::*;
        let msg = self.to_string();
        match self {
            UnknownDatabase(_) => PgError::fatal(SqlState::INVALID_CATALOG_NAME, msg),
            AuthFailed(_) => PgError::fatal(SqlState::INVALID_PASSWORD, msg),
            NoUserName | NotAdmin(_) | TlsRequired | Hba { .. } | Banned(_) => PgError::fatal(SqlState::INVALID_AUTHORIZATION, msg),
            TooManyClients => PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, msg),
            CheckoutTimeout { .. } => PgError::error(SqlState::TOO_MANY_CONNECTIONS, format!("pgmux: {msg}")).with_hint(
                "All server connections of the pool stayed busy; raise pool.size or pool.checkout_timeout, or shorten transactions.",
            ),
            ServerUnavailable { .. } => PgError::error(SqlState::UNABLE_TO_CONNECT, format!("pgmux: {msg}")),
            Protocol(_) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, msg),
            ServerLost(_) => PgError::fatal(SqlState::CONNECTION_FAILURE, format!("pgmux: {msg}")),
            Unsupported(_) => PgError::fatal(SqlState::FEATURE_NOT_SUPPORTED, msg),
            ServerRefused(e) => PgError { severity: Severity::Error, ..e.clone() },
            AuthQueryLost(_) => PgError::fatal(SqlState::CONNECTION_FAILURE, msg),
            AuthQueryRefused(e) => PgError { severity: Severity::Fatal, message: msg, ..e.clone() },
            IdleSessionTimeout => PgError::fatal(SqlState::IDLE_SESSION_TIMEOUT, msg),
            IdleInTransactionTimeout => PgError::fatal(SqlState::IDLE_IN_TRANSACTION_TIMEOUT, msg),
            Killed | AdminShutdown => PgError::fatal(SqlState::ADMIN_SHUTDOWN, msg),
            NotifyOverflow(_) => PgError::fatal(SqlState::PROGRAM_LIMIT_EXCEEDED, msg)
                .with_hint("Read notifications as they come (a driver reads them while waiting for results or in its listen loop), or raise pool.notify_queue_size."),
            NotifyMissed => PgError::fatal(SqlState::CONNECTION_FAILURE, msg)
                .with_hint("Connect again, LISTEN again, and look for work that a missed notification announced."),
        }
    }

    /// What kind of refusal it is, for the metric that counts refused logins.
    pub fn kind(&self) -> ErrorKind {
        use ClientError::*;
        match self {
            TooManyClients | CheckoutTimeout { .. } => ErrorKind::TooManyClients,
            AuthFailed(_) | NoUserName | NotAdmin(_) | TlsRequired => ErrorKind::AuthFailed,
            Hba { .. } => ErrorKind::Hba,
            Banned(_) => ErrorKind::AuthFailureLimit,
            UnknownDatabase(_) => ErrorKind::UnknownDatabase,
            ServerUnavailable { .. } | ServerLost(_) | AuthQueryLost(_) => ErrorKind::ServerUnavailable,
            ServerRefused(e) | AuthQueryRefused(e) => ErrorKind::of_server(e),
            Protocol(_)
            | Unsupported(_)
            | IdleSessionTimeout
            | IdleInTransactionTimeout
            | Killed
            | AdminShutdown
            | NotifyOverflow(_)
            | NotifyMissed => ErrorKind::Protocol,
        }
    }

    /// The server cannot take a new connection now: unreachable, or refusing logins
    /// while it starts up, shuts down or recovers (57P03). Another server may.
    pub fn server_unavailable(&self) -> bool {
        match self {
            ClientError::ServerUnavailable { .. } => true,
            ClientError::ServerRefused(e) => e.code == SqlState::CANNOT_CONNECT_NOW,
            _ => false,
        }
    }

    /// True when the client connection must be closed after the error.
    pub fn is_fatal(&self) -> bool {
        self.to_pg().severity == Severity::Fatal
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_error_has_postgres_sqlstate_and_its_own_label() {
        let cases: [(ClientError, &str, &str); 6] = [
            (ClientError::Hba { host: [10, 0, 0, 1].into(), user: "u".into(), database: "d".into() }, "28000", "hba"),
            (ClientError::Banned([10, 0, 0, 1].into()), "28000", "auth_failure_limit"),
            (ClientError::TlsRequired, "28000", "auth_failed"),
            (ClientError::IdleSessionTimeout, "57P05", "protocol"),
            (ClientError::ServerLost(ServerFailure::Closed), "08006", "server_unavailable"),
            (ClientError::ServerRefused(PgError::fatal(SqlState::INVALID_CATALOG_NAME, "x")), "3D000", "unknown_database"),
        ];
        for (e, code, label) in cases {
            assert_eq!((&*e.to_pg().code, e.kind().label()), (code, label), "{e}");
        }
        let e = ClientError::Protocol(ProtocolError::BadLength { tag: b'Q', len: 3 });
        assert_eq!(e.to_pg().message, "invalid message length 3 for message type \"Q\"");
        assert_eq!(
            ClientError::ServerLost(ServerFailure::Status(b'T')).to_string(),
            "server connection closed unexpectedly: unexpected transaction status \"T\" after pgmux's own statement"
        );
    }
}
