//! pgmux: a PostgreSQL connection pooler and read/write router.
//!
//! A map of the crate, from the top (what runs) to the bottom (what everything
//! uses). A module imports only modules listed below it, never one above:
//! `module_graph` (a test that `scripts/test` runs) fails on an import cycle, level
//! by level. The public modules are what `main.rs`, the tests, the benches and the
//! fuzz targets use; everything else is `pub(crate)`.
//!
//! **What runs**
//! - [`run`]: the process: bind, serve, signals (SIGTERM drains, SIGHUP reloads, SIGINT stops).
//! - [`demo`]: `pgmux demo`: a throwaway cluster with pgmux in front.
//! - `proxy`: the jobs on top of the shared state: `proxy::listener` (accepting
//!   clients), `proxy::upkeep` (once a second), `proxy::http` (`/metrics`,
//!   `/healthz`, `/readyz`); drain and stop.
//! - `monitor`: the replica monitor: checks every server of databases with
//!   replicas, decides (socket-free, `monitor::assess`, `monitor::breaker`) and
//!   writes the topologies.
//! - `client`: one client connection: `negotiate`, `login` (`access`,
//!   `auth_query`), `session` (between transactions), `transaction` (one request's
//!   way), `route`, `relay` (the hot path) with its two directions `to_server` and
//!   `to_client`, `txn` (when a transaction ends), `rewrite`, `responses` and
//!   `retry` (shared prepared statements), `buffers`.
//! - `admin`: the PgBouncer-compatible admin console: `admin::command` (parse,
//!   apply), `admin::control` (PAUSE, KILL, RELOAD ...), `admin::show` (SHOW, one file
//!   per group).
//!
//! **Shared state**
//! - `state`: the registries every part shares, each with its own job: the
//!   configuration store (with TLS), users, pools by (database, user), topologies,
//!   failed logins, PAUSE, counters; it imports nothing above `pool` and
//!   [`router::topology`].
//! - `clients`: the client registry: the one place that issues and resolves
//!   cancel keys; each client's state and its kill signal (`clients::kill`).
//! - [`cancel_key`]: the cancel keys' formats (3.0 with the instance id, 3.2
//!   versioned with a MAC) and which instance made a key (not wired in yet).
//! - [`fleet`]: many instances as one pooler: peer packets ([`fleet::wire`]),
//!   membership and budget shares ([`fleet::view`]), heartbeats and cancel
//!   forwarding ([`fleet::peers`]) (not wired in yet).
//! - [`notify`]: LISTEN/NOTIFY fan-out: channel subscriptions and per-client inboxes
//!   ([`notify::hub`]) (not wired in yet).
//! - `shutdown`: the shutdown flag (where a drain's phases belong).
//!
//! **Connections, routing, statements**
//! - `pool`: bounded pools of server connections, FIFO waiters, shared limits
//!   (`pool::limit`), leases, upkeep.
//! - `server`: one connection to PostgreSQL: logging in, pgmux's own checked
//!   statements, cancelling what it runs.
//! - `metrics`: Prometheus metrics, rendered from plain snapshots.
//! - [`router`]: read/write routing, socket-free: [`router::classify`] (may a
//!   statement run on a replica), [`router::request`] (a client's next request),
//!   [`router::topology`] (each database's servers), `decide`.
//! - [`prepared`]: named statements shared by clients across server connections.
//!
//! **Foundations**
//! - [`config`]: the YAML file, defaults, validation with file:line errors.
//! - `tls`: TLS for clients and to servers, from the config's blocks.
//! - `settings`: the settings a client expects on whatever server it gets.
//! - [`sql`]: a small SQL lexer and what a query does to the session.
//! - [`protocol`]: framing, startup packets, the messages pgmux sends, ErrorResponse fields.
//! - `error`: errors as clients see them: typed, with SQLSTATEs and metric labels.
//! - [`auth`]: SCRAM-SHA-256 and md5, without I/O.
//! - `net`: streams (plain or TLS) with the readiness calls the relay uses.
//! - `memory`: giving memory back after a wave of clients leaves.
//! - `worker`: which worker thread this is (`workers: N`).
//!
//! **Tools**
//! - [`import`]: `pgmux import-pgbouncer`: pgbouncer.ini and userlist.txt as pgmux YAML.
//! - [`cluster`]: throwaway PostgreSQL primary + replicas for `pgmux demo` and tests.

pub(crate) mod admin;
pub mod auth;
// Public while they are not wired in (their tests and the fuzz targets use them).
pub mod cancel_key;
pub(crate) mod client;
pub(crate) mod clients;
pub mod cluster;
pub mod config;
pub mod demo;
pub(crate) mod error;
pub mod fleet;
pub mod import;
pub(crate) mod memory;
pub(crate) mod metrics;
pub(crate) mod monitor;
pub(crate) mod net;
pub mod notify;
pub(crate) mod pool;
pub mod prepared;
pub mod protocol;
pub(crate) mod proxy;
pub mod router;
pub mod run;
pub(crate) mod server;
pub(crate) mod settings;
pub(crate) mod shutdown;
pub mod sql;
pub(crate) mod state;
pub(crate) mod tls;
pub(crate) mod worker;

#[cfg(test)]
mod module_graph;
