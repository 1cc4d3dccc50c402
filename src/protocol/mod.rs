//! Wire protocol: everything about bytes on the wire and nothing about I/O.
//!
//! - [`frame`]: finds message boundaries in a byte stream without decoding bodies, so
//!   the relay can forward `DataRow`s untouched while still seeing `ReadyForQuery`.
//! - [`startup`]: parses the untyped first packets (StartupMessage, SSLRequest,
//!   GSSENCRequest, CancelRequest) with PostgreSQL's own limits.
//! - [`backend`]: encodes the backend messages pgmux itself sends (via `pgwire`).
//! - [`frontend`]: the messages to servers pgmux writes by hand (the others are
//!   `postgres_protocol`'s).
//! - [`codes`]: message type bytes, so the rest of the code reads as names.
//! - [`pg_error`]: the fields of an ErrorResponse or NoticeResponse ([`PgError`]).

pub mod backend;
pub mod codes;
pub mod frame;
pub mod frontend;
pub mod pg_error;
pub mod startup;

pub use pg_error::{PgError, Severity};
