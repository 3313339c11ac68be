//! `locks`: run commands under catalog locks, inspect the catalog, clean lock
//! files, and watch the locks work in a demo.
//!
//! Exit status: the command's own status for `run`; for `status`, 0 when
//! the lock is free, 1 when held, 2 on an error; 75 when a lock cannot be
//! had in time (`--timeout`); 78 for configuration and catalog errors; 1 for
//! other errors; 2 for usage errors.

mod check;
mod demo;
mod doc;
mod duration;
mod lint;
mod run;
mod status;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use locks::{Config, Error, ErrorKind, Locks, Scope, Severity};

/// Exit status when a lock could not be acquired in time (`EX_TEMPFAIL`).
pub(crate) const EXIT_LOCK_UNAVAILABLE: u8 = 75;
/// Exit status for configuration and catalog errors (`EX_CONFIG`).
const EXIT_CONFIG: u8 = 78;

#[derive(Parser, Debug)]
#[command(
    name = "locks",
    version,
    about = "Named locks for storage drivers: process, node and global scopes"
)]
struct Cli {
    /// Configuration file (TOML). Default: $LOCKS_CONFIG, else the embedded
    /// defaults (memory for process, lock files in a per-user directory for node and global).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,

    /// Log what the library does on stderr: -v info (failovers, locks at
    /// risk or lost), -vv debug (every acquire with its wait and outcome),
    /// -vvv trace. `RUST_LOG` (e.g. `locks=debug`), when set, decides instead.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,

    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Inspect the lock catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Hold a lock while a command runs; exit with the command's status (75 if the lock is not had in time).
    Run(run::RunArgs),
    /// Show who holds a lock and who waits for it (exit 0 free, 1 held, 2 error).
    Status(status::StatusArgs),
    /// Remove lock files (or empty lock nodes) that nobody holds.
    Clean {
        /// Which scope's backend to clean.
        #[arg(long, default_value = "node")]
        scope: ScopeArg,
    },
    /// Run several seed drivers' critical sections concurrently and show who waited for whom.
    Demo(demo::DemoArgs),
    /// Check mutual exclusion: N holders take one lock M times; report overlaps and token regressions.
    Check(check::CheckArgs),
    /// One holder of `locks check` (internal).
    #[command(hide = true)]
    CheckWorker(check::WorkerArgs),
}

#[derive(Subcommand, Debug)]
enum CatalogCommand {
    /// One line per declared lock.
    List,
    /// Everything about one lock.
    Show {
        /// The lock id, e.g. `infinidat`.
        id: String,
    },
    /// Check the catalog for duplicate ids and templates that collide; exits 78 on errors.
    ///
    /// With `--cinder PATH`, also check every entry against that Cinder tree: its
    /// name is built in the file it names and its `where` functions take a lock
    /// there; exits 78 on a mismatch (removed-upstream entries are reported, not failed).
    Lint {
        /// A Cinder source tree or installed package: the directory containing
        /// `cinder/` (a checkout, an unpacked wheel, site-packages) or the
        /// `cinder` package directory itself.
        #[arg(long, value_name = "PATH")]
        cinder: Option<PathBuf>,
    },
    /// Print a reference document of the catalog.
    Doc {
        /// Output format.
        #[arg(long, default_value = "rst")]
        format: doc::Format,
    },
}

/// A scope on the command line.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub(crate) enum ScopeArg {
    /// Threads and tasks of one process.
    Process,
    /// Every process on this host.
    Node,
    /// Every host of the cluster.
    Global,
}

impl From<ScopeArg> for Scope {
    fn from(s: ScopeArg) -> Scope {
        match s {
            ScopeArg::Process => Scope::Process,
            ScopeArg::Node => Scope::Node,
            ScopeArg::Global => Scope::Global,
        }
    }
}

/// Installs a `tracing` subscriber writing to stderr when `-v` or
/// `RUST_LOG` asks for one; without either, nothing is logged.
fn install_logging(verbose: u8) {
    use tracing_subscriber::EnvFilter;
    let filter = match std::env::var("RUST_LOG") {
        Ok(spec) if !spec.trim().is_empty() => EnvFilter::new(spec),
        _ => {
            let level = match verbose {
                0 => return,
                1 => "info",
                2 => "debug",
                _ => "trace",
            };
            // Our crates at the level asked for; the server clients' own
            // chatter only from warnings up.
            EnvFilter::new(format!(
                "warn,locks={level},locks_core={level},locks_memory={level},locks_file={level},\
                 locks_etcd={level},locks_zookeeper={level},locks_redis={level}"
            ))
        }
    };
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    install_logging(cli.verbose);
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("locks: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(dispatch(cli)) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("locks: {}", e.report());
            ExitCode::from(exit_code_for(&e))
        }
    }
}

/// The exit status for an error.
pub(crate) fn exit_code_for(e: &Error) -> u8 {
    match e.kind() {
        ErrorKind::WouldBlock | ErrorKind::Timeout => EXIT_LOCK_UNAVAILABLE,
        ErrorKind::InvalidConfig | ErrorKind::InvalidCatalog => EXIT_CONFIG,
        _ => 1,
    }
}

/// Opens the client named by `--config` / `$LOCKS_CONFIG` / the defaults.
/// Its warnings are shown by [`warn_taking`], by the commands that take locks.
pub(crate) async fn open_locks(config: Option<&std::path::Path>) -> locks::Result<Locks> {
    Locks::open(Config::discover(config)?).await
}

/// Shows the configuration's warnings about `scope`, once, before a command
/// takes a lock of that scope (a Global lock on a host-local backend, say):
/// a command that takes only Node locks is not warned about Global ones.
pub(crate) fn warn_taking(locks: &Locks, scope: locks::Scope) {
    for warning in locks.warnings_for(scope) {
        eprintln!("locks: warning: {warning}");
    }
}

async fn dispatch(cli: Cli) -> locks::Result<ExitCode> {
    let config = cli.config.as_deref();
    match cli.command {
        Command::Catalog(cmd) => {
            // The catalog commands need no backend: load only the catalog.
            let catalog = Config::discover(config)?.catalog.load_unchecked()?;
            catalog_command(&catalog, cmd)
        }
        Command::Run(args) => run::run(config, args).await,
        Command::Status(args) => Ok(status::status(config, args).await),
        Command::Clean { scope } => {
            let locks = open_locks(config).await?;
            let scope = Scope::from(scope);
            let report = locks.clean(scope).await?;
            for path in &report.removed {
                println!("removed {path}");
            }
            println!(
                "{} removed, {} held or waited on and kept ({})",
                report.removed.len(),
                report.busy,
                locks.backend(scope).describe()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Demo(args) => demo::demo(config, args).await,
        Command::Check(args) => check::check(config, args).await,
        Command::CheckWorker(args) => check::worker(config, args).await,
    }
}

fn catalog_command(catalog: &locks::Catalog, cmd: CatalogCommand) -> locks::Result<ExitCode> {
    match cmd {
        CatalogCommand::List => {
            let width = catalog
                .entries()
                .iter()
                .map(|e| e.id.len())
                .max()
                .unwrap_or(0);
            for e in catalog.entries() {
                println!("{:width$}  {:7}  {}", e.id, e.scope.as_str(), e.template);
            }
        }
        CatalogCommand::Show { id } => {
            let e = catalog.get(&id)?;
            println!("id:               {}", e.id);
            println!("driver:           {}", e.driver);
            println!("scope:            {}", e.scope);
            println!("name:             {}", e.template);
            let params: Vec<&str> = e.template.parameters().collect();
            println!(
                "parameters:       {}",
                if params.is_empty() {
                    "(none)".to_owned()
                } else {
                    params.join(", ")
                }
            );
            println!("critical section: {}", e.critical_section);
            println!("where:            {}", e.methods.join(", "));
            println!("file:             {}", e.file);
            if let Some(file) = &e.name_file {
                println!("name built in:    {file}");
            }
            if let Some(version) = &e.removed_upstream {
                println!("removed upstream: gone from Cinder {version}");
            }
            if let Some(notes) = &e.notes {
                println!("notes:            {notes}");
            }
        }
        CatalogCommand::Lint { cinder } => {
            let findings = catalog.lint();
            for f in &findings {
                println!("{f} [{}]", f.entries.join(", "));
            }
            let errors = findings
                .iter()
                .filter(|f| f.severity == Severity::Error)
                .count();
            println!(
                "{} entries, {errors} errors, {} warnings",
                catalog.entries().len(),
                findings.len() - errors
            );
            let mismatches = match cinder {
                Some(path) => {
                    let report = lint::check(catalog, &lint::Tree::open(&path)?)?;
                    print!("{report}");
                    report.mismatches()
                }
                None => 0,
            };
            if errors > 0 || mismatches > 0 {
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        }
        CatalogCommand::Doc { format } => print!("{}", doc::render(catalog, format)),
    }
    Ok(ExitCode::SUCCESS)
}
