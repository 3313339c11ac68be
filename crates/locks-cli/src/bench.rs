//! `locks bench`: the benchmark runner of `locks-bench`, and the hidden
//! `locks bench-peer` it re-executes as the other process of its
//! cross-process measurements.

use std::path::Path;
use std::process::ExitCode;

use clap::{Args, ValueEnum};
use locks::{Error, ErrorKind, Scope};

/// Options of `locks bench`.
#[derive(Args, Debug)]
pub(crate) struct BenchArgs {
    /// Fewer rounds and smaller sets: the whole run in under a minute.
    #[arg(long)]
    quick: bool,
    /// Run only these sections: memory, file, etcd, zookeeper, c, python.
    #[arg(long, value_delimiter = ',', value_name = "SECTION")]
    only: Vec<String>,
}

/// Options of `locks bench-peer` (internal).
#[derive(Args, Debug)]
pub(crate) struct PeerArgs {
    /// Node backend URL.
    #[arg(long)]
    node: String,
    /// Global backend URL.
    #[arg(long)]
    global: String,
    /// Which scope's backend to lock on.
    #[arg(long)]
    scope: PeerScope,
    /// The lock name.
    #[arg(long)]
    name: String,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum PeerScope {
    Process,
    Node,
    Global,
}

/// Runs every benchmark section and prints the tables on stdout.
pub(crate) async fn bench(config: Option<&Path>, args: BenchArgs) -> locks::Result<ExitCode> {
    let exe = std::env::current_exe()
        .map_err(|e| Error::io("finding the locks binary to run bench peers", e))?;
    let mut opts =
        locks_bench::BenchOptions::from_env(args.quick, config.map(Path::to_owned), exe)?;
    opts.only = args.only;
    let mut out = std::io::stdout();
    locks_bench::run(&opts, &mut out).await?;
    Ok(ExitCode::SUCCESS)
}

/// The other process of `locks bench`'s handoff and contention rows.
pub(crate) async fn peer(args: PeerArgs) -> locks::Result<ExitCode> {
    let scope = match args.scope {
        PeerScope::Process => Scope::Process,
        PeerScope::Node => Scope::Node,
        PeerScope::Global => Scope::Global,
    };
    if args.name.is_empty() {
        return Err(Error::new(
            ErrorKind::InvalidName,
            "bench-peer needs a lock name",
        ));
    }
    locks_bench::peer(locks_bench::PeerOptions {
        node: args.node,
        global: args.global,
        scope,
        name: args.name,
    })
    .await?;
    Ok(ExitCode::SUCCESS)
}
