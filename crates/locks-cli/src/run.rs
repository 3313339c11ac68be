//! `locks run`: hold a lock while a command runs.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use locks::{Error, ErrorKind, LockState, Params, Wait};
use tokio::signal::unix::{SignalKind, signal};

use locks::{Config, Locks};

use crate::{EXIT_LOCK_UNAVAILABLE, ScopeArg};

/// Arguments of `locks run`.
#[derive(clap::Args, Debug)]
#[command(
    after_help = "Examples:\n  locks run lio -- cinder-rtstool create ...\n  locks run infinidat -p management_address=10.0.0.1 --timeout 30s -- ./attach.sh\n  locks run --scope node --name nvmetcli --timeout 0 -- nvmetcli restore\n\n\
                  The command sees LOCKS_LOCK_NAME and LOCKS_FENCING_TOKEN in its environment. It does not \
                  inherit the lock: if `locks` dies, the lock is released even while the command runs on."
)]
pub(crate) struct RunArgs {
    /// Catalog id of the lock (e.g. `lio`, `infinidat`); or use --scope with --name.
    #[arg(required_unless_present = "name", conflicts_with = "name")]
    id: Option<String>,

    /// A template parameter, `key=value` (repeat for several).
    #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = parse_param)]
    params: Vec<(String, String)>,

    /// Lock a raw name in this scope instead of a catalog id.
    #[arg(long, requires = "name")]
    scope: Option<ScopeArg>,

    /// The raw lock name (with --scope).
    #[arg(long, requires = "scope")]
    name: Option<String>,

    /// How long to wait for the lock: `300ms`, `2s`, `1m`; `0` tries once. Default: wait forever.
    #[arg(long, value_name = "DURATION", value_parser = crate::duration::parse)]
    timeout: Option<Duration>,

    /// Serve the client's metrics for Prometheus on ADDR (e.g. `127.0.0.1:9464`,
    /// path `/metrics`) while the command runs.
    #[arg(long, value_name = "ADDR")]
    metrics_addr: Option<std::net::SocketAddr>,

    /// The command and its arguments.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<String>,
}

/// Parses a `--param KEY=VALUE`.
pub(crate) fn parse_param(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}

/// Runs `locks run`.
pub(crate) async fn run(config: Option<&Path>, args: RunArgs) -> locks::Result<ExitCode> {
    let mut config = Config::discover(config)?;
    if let Some(addr) = args.metrics_addr {
        serve_metrics(addr)?;
        config.metrics = true;
    }
    let locks = Locks::open(config).await?;
    let wait = Wait::from_timeout(args.timeout);
    let request = match (&args.id, args.scope, &args.name) {
        (Some(id), _, _) => locks.request(id, &args.params.iter().cloned().collect::<Params>())?,
        (None, Some(scope), Some(name)) => {
            if !args.params.is_empty() {
                return Err(Error::new(
                    ErrorKind::UnknownParameter,
                    "--param fills a catalog template; a raw --name takes no parameters",
                ));
            }
            locks.raw_request(scope.into(), name)?
        }
        _ => {
            return Err(Error::new(
                ErrorKind::InvalidConfig,
                "give a catalog id, or --scope with --name",
            ));
        }
    };
    crate::warn_taking(&locks, request.scope);
    let guard = match locks.acquire(request.wait(wait)).await {
        Ok(guard) => guard,
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::Timeout) => {
            eprintln!("locks: {}", e.report());
            return Ok(ExitCode::from(EXIT_LOCK_UNAVAILABLE));
        }
        Err(e) => return Err(e),
    };

    let program = &args.command[0];
    let mut child = match tokio::process::Command::new(program)
        .args(&args.command[1..])
        .env("LOCKS_LOCK_NAME", guard.name().as_str())
        .env("LOCKS_FENCING_TOKEN", guard.token().to_string())
        .spawn()
    {
        Ok(child) => child,
        Err(e) => {
            let code = if e.kind() == std::io::ErrorKind::NotFound {
                127
            } else {
                126
            };
            eprintln!("locks: cannot run `{program}`: {e}");
            release_reporting(guard).await;
            return Ok(ExitCode::from(code));
        }
    };

    let signal_error = |e: std::io::Error| Error::io("installing signal handlers", e);
    let mut terminate = signal(SignalKind::terminate()).map_err(signal_error)?;
    let mut hangup = signal(SignalKind::hangup()).map_err(signal_error)?;
    // The terminal sends Ctrl-C to the command too; we only keep running to release.
    let mut interrupt = signal(SignalKind::interrupt()).map_err(signal_error)?;
    let mut lost_reported = false;
    let status = loop {
        tokio::select! {
            status = child.wait() => break status,
            _ = terminate.recv() => forward(&child, libc::SIGTERM),
            _ = hangup.recv() => forward(&child, libc::SIGHUP),
            _ = interrupt.recv() => {}
            () = guard.lost(), if !lost_reported => {
                lost_reported = true;
                eprintln!(
                    "locks: lock `{}` was lost while `{program}` ran (another holder may now run): stopping it",
                    guard.name()
                );
                forward(&child, libc::SIGTERM);
            }
        }
    };
    let status = status.map_err(|e| Error::io(format_args!("waiting for `{program}`"), e))?;
    let lost = guard.state() == LockState::Lost;
    release_reporting(guard).await;
    if lost {
        return Ok(ExitCode::from(EXIT_LOCK_UNAVAILABLE));
    }
    Ok(exit_code_of(status))
}

/// Installs the Prometheus exporter as the process's metrics recorder,
/// answering on `addr` until the process exits.
///
/// # Errors
/// [`ErrorKind::Io`] when `addr` cannot be bound, naming it.
fn serve_metrics(addr: std::net::SocketAddr) -> locks::Result<()> {
    // Bind first, for a clear error: the exporter binds in the background
    // and only logs a failure.
    std::net::TcpListener::bind(addr).map_err(|e| {
        Error::io(
            format_args!("serving metrics on {addr} (--metrics-addr)"),
            e,
        )
    })?;
    metrics_exporter_prometheus::PrometheusBuilder::new()
        .with_http_listener(addr)
        .install()
        .map_err(|e| {
            Error::new(
                ErrorKind::Io,
                format!("serving metrics on {addr} (--metrics-addr): {e}"),
            )
        })
}

async fn release_reporting(guard: locks::LockGuard) {
    if let Err(e) = guard.release().await {
        eprintln!("locks: {}", e.report());
    }
}

fn forward(child: &tokio::process::Child, signal: libc::c_int) {
    if let Some(pid) = child.id().and_then(|p| libc::pid_t::try_from(p).ok()) {
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

fn exit_code_of(status: std::process::ExitStatus) -> ExitCode {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        (None, Some(sig)) => ExitCode::from(u8::try_from(128 + sig).unwrap_or(255)),
        (None, None) => ExitCode::FAILURE,
    }
}
