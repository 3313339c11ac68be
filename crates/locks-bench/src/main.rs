//! `locks-bench`: the benchmark runner, outside the shipped `locks` command.
//!
//! - `locks-bench run [--quick] [--config FILE] [--only SECTION,...]`: every
//!   backend against its floor and the Python tools (see BENCHMARKS.md).
//! - `locks-bench peer ...` (hidden): the other process of the handoff and
//!   contention rows, which `run` re-executes.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use locks::{Error, ErrorKind, Scope};

#[derive(Parser, Debug)]
#[command(
    name = "locks-bench",
    version,
    about = "Measure every lock backend against its floor and the Python tools"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Measure every backend against its floor and the Python tools (see BENCHMARKS.md).
    Run(RunArgs),
    /// The other process of `locks-bench run` (internal).
    #[command(hide = true)]
    Peer(PeerArgs),
}

/// Options of `locks-bench run`.
#[derive(Args, Debug)]
struct RunArgs {
    /// Configuration file (TOML): its Global URL picks the etcd, ZooKeeper or
    /// Redis server when it is one.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Fewer rounds and smaller sets: the whole run in under a minute.
    #[arg(long)]
    quick: bool,
    /// Run only these sections: memory, file, etcd, zookeeper, redis, c, python.
    #[arg(long, value_delimiter = ',', value_name = "SECTION")]
    only: Vec<String>,
}

/// Options of `locks-bench peer` (internal).
#[derive(Args, Debug)]
struct PeerArgs {
    /// Node backend URL.
    #[arg(long)]
    node: String,
    /// Global backend URL.
    #[arg(long)]
    global: String,
    /// Which scope's backend to lock on: process, node or global.
    #[arg(long)]
    scope: Scope,
    /// The lock name.
    #[arg(long)]
    name: String,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| Error::io("cannot start the async runtime", e))
        .and_then(|runtime| runtime.block_on(dispatch(cli)));
    if let Err(e) = result {
        eprintln!("locks-bench: {}", e.report());
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

async fn dispatch(cli: Cli) -> locks::Result<()> {
    match cli.command {
        Command::Run(args) => {
            let exe = std::env::current_exe()
                .map_err(|e| Error::io("finding the locks-bench binary to run peers", e))?;
            let mut opts = locks_bench::BenchOptions::from_env(args.quick, args.config, exe)?;
            opts.only = args.only;
            locks_bench::run(&opts, &mut std::io::stdout()).await
        }
        Command::Peer(args) => {
            if args.name.is_empty() {
                return Err(Error::new(
                    ErrorKind::InvalidName,
                    "locks-bench peer needs a lock name",
                ));
            }
            locks_bench::peer(locks_bench::PeerOptions {
                node: args.node,
                global: args.global,
                scope: args.scope,
                name: args.name,
            })
            .await
        }
    }
}
