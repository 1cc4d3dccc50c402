//! The `pgmux` command: run the proxy, check a config, or start a local demo.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use pgmux::config::{Config, LogFormat};

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
            run_async(pgmux::demo::run(port, metrics_port, replicas), 0)
        }
        None => {
            let path = cli.config.clone();
            match load(cli.config) {
                Ok(c) => {
                    init_logging(c.log_format);
                    let workers = c.workers;
                    run_async(pgmux::run::run(c, path.expect("load checked it")), workers)
                }
                Err(e) => {
                    eprintln!("{e}");
                    ExitCode::from(2)
                }
            }
        }
    }
}

/// `workers`: runtime threads (0: one per CPU). One worker runs everything on
/// this thread with tokio's single-threaded scheduler, as PgBouncer does: no
/// work stealing and no wakes across threads, the least CPU per transaction.
fn run_async(f: impl std::future::Future<Output = Result<(), pgmux::run::StartError>>, workers: usize) -> ExitCode {
    let mut rt = if workers == 1 { tokio::runtime::Builder::new_current_thread() } else { tokio::runtime::Builder::new_multi_thread() };
    if workers > 1 {
        rt.worker_threads(workers);
    }
    let rt = rt.enable_all().build().expect("tokio runtime");
    match rt.block_on(f) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pgmux: {e}");
            ExitCode::FAILURE
        }
    }
}
