//! Message type bytes of protocol 3.0 (see PostgreSQL's "Message Formats").

// Frontend (client -> server).
pub const QUERY: u8 = b'Q';
pub const PARSE: u8 = b'P';
pub const BIND: u8 = b'B';
pub const DESCRIBE: u8 = b'D';
pub const EXECUTE: u8 = b'E';
pub const CLOSE: u8 = b'C';
pub const FLUSH: u8 = b'H';
pub const SYNC: u8 = b'S';
pub const FUNCTION_CALL: u8 = b'F';
pub const TERMINATE: u8 = b'X';
pub const PASSWORD: u8 = b'p';
pub const COPY_DATA: u8 = b'd';
pub const COPY_DONE: u8 = b'c';
pub const COPY_FAIL: u8 = b'f';

/// True for the message types a client may send after startup.
pub fn is_frontend(tag: u8) -> bool {
    matches!(
        tag,
        QUERY | PARSE | BIND | DESCRIBE | EXECUTE | CLOSE | FLUSH | SYNC | FUNCTION_CALL | TERMINATE | COPY_DATA | COPY_DONE | COPY_FAIL
    )
}

// Backend (server -> client).
pub const AUTHENTICATION: u8 = b'R';
pub const BACKEND_KEY_DATA: u8 = b'K';
pub const PARAMETER_STATUS: u8 = b'S';
pub const READY_FOR_QUERY: u8 = b'Z';
pub const ERROR_RESPONSE: u8 = b'E';
pub const NOTICE_RESPONSE: u8 = b'N';
pub const COPY_IN_RESPONSE: u8 = b'G';
pub const COPY_OUT_RESPONSE: u8 = b'H';
pub const COPY_BOTH_RESPONSE: u8 = b'W';
pub const PORTAL_SUSPENDED: u8 = b's';
pub const NOTIFICATION_RESPONSE: u8 = b'A';

// Transaction status in ReadyForQuery.
pub const TXN_IDLE: u8 = b'I';
pub const TXN_IN_BLOCK: u8 = b'T';
pub const TXN_FAILED: u8 = b'E';
