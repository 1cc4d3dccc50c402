//! pgmux: a PostgreSQL connection pooler.
//!
//! A map of the crate, from the outside in:
//! - [`proxy`]: shared state, the accept loop, upkeep, graceful shutdown.
//! - [`admin`]: the PgBouncer-compatible admin console (SHOW POOLS ...).
//! - [`client`]: one client connection: [`client::login`], [`client::session`]
//!   (between transactions), [`client::relay`] (the hot path), [`client::txn`]
//!   (when a transaction ends).
//! - [`router`]: read/write routing: [`router::classify`] says whether a statement may run on a replica.
//! - [`pool`]: bounded pools of server connections with a FIFO wait queue.
//! - [`prepared`]: named statements shared by clients across server connections.
//! - [`server`]: one connection to PostgreSQL, and logging in to it.
//! - [`sql`]: a small SQL lexer and what a query does to the session.
//! - [`session`]: the settings a client expects on whatever server it gets.
//! - [`cancel`]: pgmux's cancel keys and forwarding CancelRequests.
//! - [`kill`]: the signal that ends a client's session from outside (KILL, shutdown).
//! - [`auth`]: SCRAM-SHA-256 and md5, without I/O.
//! - [`protocol`]: framing, startup packets and the messages pgmux sends.
//! - [`config`]: the YAML file, defaults, validation with file:line errors.
//! - [`error`]: errors as clients see them, with SQLSTATEs.
//! - [`import`]: `pgmux import-pgbouncer`: pgbouncer.ini and userlist.txt as pgmux YAML.
//! - [`metrics`]: Prometheus metrics and the /metrics, /healthz, /readyz endpoint.
//! - [`net`]: socket reads that keep tokio's readiness exact.
//! - [`memory`]: giving memory back after a wave of clients leaves.
//! - [`cluster`]: throwaway PostgreSQL primary + replicas for `pgmux demo` and tests.

pub mod admin;
pub mod auth;
pub mod cancel_key;
pub mod client;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod error;
pub mod fleet;
pub mod import;
pub mod memory;
pub mod metrics;
pub mod monitor;
pub mod net;
pub mod notify;
pub mod pool;
pub mod prepared;
pub mod protocol;
pub mod proxy;
pub mod router;
pub mod run;
pub mod server;
pub mod settings;
pub mod shutdown;
pub mod sql;
pub mod state;
pub mod tls;
