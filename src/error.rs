//! Errors that reach clients, in PostgreSQL's terms.
//!
//! [`PgError`] is what goes on the wire (severity, SQLSTATE, message); [`ClientError`]
//! is the typed reason pgmux refuses or fails a client, each variant mapped to the
//! SQLSTATE and wording PostgreSQL itself uses for the same situation.

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

/// Severity of an ErrorResponse or NoticeResponse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Fatal,
    Error,
    Warning,
    Notice,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Fatal => "FATAL",
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Notice => "NOTICE",
        }
    }
}

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
    pub const PROGRAM_LIMIT_EXCEEDED: &'static str = "54000";
    pub const QUERY_CANCELED: &'static str = "57014";
    pub const INTERNAL_ERROR: &'static str = "XX000";
    pub const INVALID_PARAMETER_VALUE: &'static str = "22023";
    pub const IDLE_IN_TRANSACTION_TIMEOUT: &'static str = "25P03";
    pub const CONFIG_FILE_ERROR: &'static str = "F0000";
    pub const IDLE_SESSION_TIMEOUT: &'static str = "57P05";
}

/// One error or notice as sent to a client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PgError {
    pub severity: Severity,
    pub code: Cow<'static, str>,
    pub message: String,
    pub detail: Option<String>,
    pub hint: Option<String>,
}

impl PgError {
    pub fn new(severity: Severity, code: &'static str, message: impl Into<String>) -> Self {
        PgError { severity, code: Cow::Borrowed(code), message: message.into(), detail: None, hint: None }
    }
    pub fn fatal(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Fatal, code, message)
    }
    pub fn error(code: &'static str, message: impl Into<String>) -> Self {
        Self::new(Severity::Error, code, message)
    }
    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }
    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }
}

impl fmt::Display for PgError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}: {}", self.severity.as_str(), self.code, self.message)
    }
}

/// Why a client is refused or a request fails.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("database \"{0}\" does not exist")]
    UnknownDatabase(String),
    #[error("password authentication failed for user \"{0}\"")]
    AuthFailed(String),
    #[error("sorry, too many clients already")]
    TooManyClients,
    #[error("no server connection available within {timeout:?} for {pool}")]
    CheckoutTimeout { pool: String, timeout: Duration },
    #[error("cannot connect to server {server}: {reason}")]
    ServerUnavailable { server: String, reason: String },
    #[error("{0}")]
    Protocol(String),
    #[error("the database system is shutting down")]
    ShuttingDown,
    #[error("server connection closed unexpectedly: {0}")]
    ServerLost(String),
    #[error("{0}")]
    Unsupported(String),
    /// The server's own refusal (wrong server password, missing database ...).
    #[error("{}", .0.message)]
    ServerRefused(PgError),
}

impl ClientError {
    /// The ErrorResponse a client receives for this error.
    pub fn to_pg(&self) -> PgError {
        use ClientError::*;
        let msg = self.to_string();
        match self {
            UnknownDatabase(_) => PgError::fatal(SqlState::INVALID_CATALOG_NAME, msg),
            AuthFailed(_) => PgError::fatal(SqlState::INVALID_PASSWORD, msg),
            TooManyClients => PgError::fatal(SqlState::TOO_MANY_CONNECTIONS, msg),
            CheckoutTimeout { .. } => PgError::error(SqlState::TOO_MANY_CONNECTIONS, format!("pgmux: {msg}")).with_hint(
                "All server connections of the pool stayed busy; raise pool.size or pool.checkout_timeout, or shorten transactions.",
            ),
            ServerUnavailable { .. } => PgError::error(SqlState::UNABLE_TO_CONNECT, format!("pgmux: {msg}")),
            Protocol(_) => PgError::fatal(SqlState::PROTOCOL_VIOLATION, msg),
            ShuttingDown => PgError::fatal(SqlState::CANNOT_CONNECT_NOW, msg),
            ServerLost(_) => PgError::fatal(SqlState::CONNECTION_FAILURE, format!("pgmux: {msg}")),
            Unsupported(_) => PgError::fatal(SqlState::FEATURE_NOT_SUPPORTED, msg),
            ServerRefused(e) => PgError { severity: Severity::Error, ..e.clone() },
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
