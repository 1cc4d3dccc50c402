//! The `pgmux` command: run the proxy, check a config, or start a local demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgmux::config::{Config, LogFormat};

/// With `--features mimalloc`: the logins of a burst of clients leave their
/// memory in mimalloc's size-class pages, which are returned to the OS once
/// empty, instead of as free chunks between live ones in glibc's heap.
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's options, set before its first allocation (from the ELF constructors,
/// so before Rust's runtime allocates anything; an environment's `MIMALLOC_*`
/// variable still wins):
/// - `purge_delay` 0: mimalloc returns an empty page to the OS only when it
///   allocates or frees again after `purge_delay` (10 ms), so a pooler that goes
///   quiet after a burst of clients would keep the burst's pages; purge at once.
/// - `arena_eager_commit` 0: commit an arena's memory as it is used, not its first
///   chunk at once (RSS at start 12.6 MB eagerly, about 9 MB so, as with glibc).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
#[used]
#[link_section = ".init_array.00099"]
static TUNE_MIMALLOC_EARLY: extern "C" fn() = {
    extern "C" fn tune() {
        extern "C" {
            fn mi_option_set(option: std::os::raw::c_int, value: std::os::raw::c_long);
        }
        // Positions in mimalloc 3's `enum mi_option_e` (libmimalloc-sys 0.1.49).
        const ARENA_EAGER_COMMIT: std::os::raw::c_int = 4;
        const PURGE_DELAY: std::os::raw::c_int = 15;
        for (option, env) in [(ARENA_EAGER_COMMIT, c"MIMALLOC_ARENA_EAGER_COMMIT"), (PURGE_DELAY, c"MIMALLOC_PURGE_DELAY")] {
            // SAFETY: getenv with a NUL-terminated name (no allocation, unlike
            // std::env); mi_option_set only stores the option.
            unsafe {
                if libc::getenv(env.as_ptr()).is_null() {
                    mi_option_set(option, 0);
                }
            }
        }
    }
    tune
};

/// No transparent huge pages: mimalloc asks for them on its arenas
/// (MADV_HUGEPAGE), and khugepaged then fills 2 MiB pages around a few live
/// objects (10,000 idle clients: RSS +13 MB in 30 s).
#[cfg(all(feature = "mimalloc", target_os = "linux"))]
fn tune_allocator() {
    // SAFETY: PR_SET_THP_DISABLE only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0) };
}

#[cfg(not(all(feature = "mimalloc", target_os = "linux")))]
fn tune_allocator() {}

#[derive(Parser)]
#[command(name = "pgmux", version, about = "PostgreSQL connection pooler and read/write router")]
struct Cli {
    /// Configuration file (YAML).
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a configuration file and exit.
    Check,
    /// Start a throwaway primary and two streaming replicas with pgmux in front.
    Demo {
        /// Port pgmux listens on.
        #[arg(long, default_value_t = 6432)]
        port: u16,
        /// Port of the metrics endpoint.
        #[arg(long, default_value_t = 9930)]
        metrics_port: u16,
        /// Number of streaming replicas.
        #[arg(long, default_value_t = 2)]
        replicas: usize,
    },
    /// Print a PgBouncer configuration as pgmux YAML; untranslated settings go to stderr.
    ImportPgbouncer { ini: PathBuf, userlist: Option<PathBuf> },
}

fn init_logging(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("PGMUX_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt().with_env_filter(filter).with_target(false).with_writer(std::io::stderr);
    match format {
        LogFormat::Text => fmt.init(),
        LogFormat::Json => fmt.json().flatten_event(true).init(),
    }
}

fn load(path: Option<PathBuf>) -> Result<Config, String> {
    let path = path.ok_or("--config FILE is required")?;
    Config::load(&path).map_err(|e| e.to_string())
}

fn main() -> ExitCode {
    tune_allocator();
    let cli = Cli::parse();
    match cli.command {
        Some(Command::Check) => match load(cli.config) {
            Ok(c) => {
                println!("config ok: {} database(s), {} user(s)", c.databases.len(), c.users.len());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Some(Command::ImportPgbouncer { ini, userlist }) => pgmux::import::cli(&ini, userlist.as_deref()),
        Some(Command::Demo { port, metrics_port, replicas }) => {
            init_logging(LogFormat::Text);
            run_async(pgmux::demo::run(port, metrics_port, replicas))
        }
        None => {
            let path = cli.config.clone();
            match load(cli.config) {
                Ok(c) => {
                    init_logging(c.log_format);
                    run_async(pgmux::run::run(c, path.expect("load checked it")))
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// Runs `f` on this thread with tokio's single-threaded scheduler, as PgBouncer
/// runs: no work stealing and no wakes across threads. With `workers: N`, the
/// proxy starts N-1 more threads, each with a scheduler of its own
/// (`proxy::workers`).
fn run_async(f: impl std::future::Future<Output = Result<(), pgmux::run::StartError>>) -> ExitCode {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgmux: {e}");
            ExitCode::FAILURE
        }
    }
}
