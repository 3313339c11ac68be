//! `locks demo`: several seed drivers' critical sections running at once, and
//! a report of who waited for whom on every lock.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::Path;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use locks::{ErrorKind, Locks, Params, Scope, Wait};

use crate::open_locks;

/// Arguments of `locks demo`.
#[derive(clap::Args, Debug)]
pub(crate) struct DemoArgs {
    /// How long each simulated critical section takes, in milliseconds.
    #[arg(long, default_value_t = 150)]
    work_ms: u64,
}

/// One simulated driver call that takes a catalog lock.
struct Call {
    worker: &'static str,
    id: &'static str,
    params: &'static [(&'static str, &'static str)],
    what: &'static str,
}

const CALLS: &[Call] = &[
    Call {
        worker: "lio-1",
        id: "lio",
        params: &[],
        what: "cinder-rtstool create",
    },
    Call {
        worker: "lio-2",
        id: "lio",
        params: &[],
        what: "cinder-rtstool add-initiator",
    },
    Call {
        worker: "lio-3",
        id: "lio",
        params: &[],
        what: "cinder-rtstool delete",
    },
    Call {
        worker: "sf-clone-1",
        id: "solidfire",
        params: &[("resource_id", "image-A")],
        what: "clone image-A",
    },
    Call {
        worker: "sf-clone-2",
        id: "solidfire",
        params: &[("resource_id", "image-A")],
        what: "clone image-A",
    },
    Call {
        worker: "sf-clone-3",
        id: "solidfire",
        params: &[("resource_id", "image-B")],
        what: "clone image-B",
    },
    Call {
        worker: "ibox-1",
        id: "infinidat",
        params: &[("management_address", "10.0.0.1")],
        what: "initialize_connection",
    },
    Call {
        worker: "ibox-2",
        id: "infinidat",
        params: &[("management_address", "10.0.0.1")],
        what: "terminate_connection",
    },
    Call {
        worker: "ibox-3",
        id: "infinidat",
        params: &[("management_address", "10.0.0.2")],
        what: "initialize_connection",
    },
    Call {
        worker: "k2-fc",
        id: "kaminario-fc",
        params: &[("san_ip", "10.0.1.5")],
        what: "FC initialize_connection",
    },
    Call {
        worker: "k2-iscsi",
        id: "kaminario-iscsi",
        params: &[("san_ip", "10.0.1.5")],
        what: "iSCSI initialize_connection",
    },
    Call {
        // DotHill's locks as Cinder 29.0.0's STX client takes them.
        worker: "stx-api",
        id: "stx-api",
        params: &[("driver_name", "STXClient"), ("array_name", "A1")],
        what: "_get_session_key",
    },
    Call {
        worker: "stx-map",
        id: "stx-map",
        params: &[("driver_name", "STXClient"), ("array_name", "A1")],
        what: "map_volume",
    },
];

/// What happened to one call.
#[derive(Debug, Clone)]
struct Record {
    worker: &'static str,
    what: &'static str,
    scope: Scope,
    requested: Duration,
    acquired: Duration,
    released: Duration,
    token: u64,
}

/// Runs the demo.
pub(crate) async fn demo(config: Option<&Path>, args: DemoArgs) -> locks::Result<ExitCode> {
    let locks = open_locks(config).await?;
    // The demo takes Global locks.
    crate::warn_taking(&locks, Scope::Global);
    let work = Duration::from_millis(args.work_ms);
    println!("locks demo: {} driver calls at once", CALLS.len() + 1);
    for scope in Scope::ALL {
        println!("  {scope:7} locks on {}", locks.backend(scope).describe());
    }
    println!();

    let start = Instant::now();
    let records: Arc<Mutex<BTreeMap<String, Vec<Record>>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let progress = spawn_progress(done.clone(), CALLS.len());

    let mut tasks = Vec::new();
    for call in CALLS {
        let (locks, records, done) = (locks.clone(), records.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            let params: Params = call.params.iter().copied().collect();
            let requested = start.elapsed();
            let guard = locks.lock(call.id, &params).await?;
            let acquired = start.elapsed();
            event(&format!(
                "  {:>7.0?}  {:12} acquired {:32} for {}",
                acquired,
                call.worker,
                format!("`{}`", guard.name()),
                call.what
            ));
            // The simulated device call.
            tokio::time::sleep(work).await;
            let record = Record {
                worker: call.worker,
                what: call.what,
                scope: guard.scope(),
                requested,
                acquired,
                released: start.elapsed(),
                token: guard.token(),
            };
            let name = guard.name().to_string();
            guard.release().await?;
            records
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(name)
                .or_default()
                .push(record);
            done.fetch_add(1, Ordering::Relaxed);
            Ok::<(), locks::Error>(())
        }));
    }
    let unity = unity_self_deadlock(&locks).await;
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(e) => {
                first_error.get_or_insert(locks::Error::new(
                    ErrorKind::Internal,
                    format!("demo task failed: {e}"),
                ));
            }
        }
    }
    let _ = progress.await;
    if let Some(e) = first_error {
        return Err(e);
    }

    let records = records
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone();
    let overlaps = report(&records);
    println!(
        "\nUnity adapter calling the locked create_host while holding the same name:\n  {unity}"
    );
    println!(
        "\n{} calls on {} locks in {:.0?}; overlapping holders: {overlaps}",
        CALLS.len(),
        records.len(),
        start.elapsed()
    );
    Ok(if overlaps == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Prints, per lock, the holders in order and whom each waited for. Returns
/// the number of overlapping holds (always zero when locking works).
fn report(records: &BTreeMap<String, Vec<Record>>) -> usize {
    let mut overlaps = 0;
    println!("\nWho waited for whom:");
    for (name, holds) in records {
        let mut holds = holds.clone();
        holds.sort_by_key(|r| r.acquired);
        println!("  `{name}` ({} scope)", holds[0].scope);
        for (i, r) in holds.iter().enumerate() {
            let waited = r.acquired.saturating_sub(r.requested);
            let after = match i.checked_sub(1).map(|p| &holds[p]) {
                Some(prev) if prev.released > r.requested => format!("for {}", prev.worker),
                _ => "(free)".to_owned(),
            };
            println!(
                "    {:12} waited {:>6.0?} {:16} held {:>6.0?}  token {}  ({})",
                r.worker,
                waited,
                after,
                r.released.saturating_sub(r.acquired),
                r.token,
                r.what
            );
            if let Some(prev) = i.checked_sub(1).map(|p| &holds[p])
                && prev.released > r.acquired
            {
                overlaps += 1;
            }
        }
    }
    overlaps
}

/// The Unity trap: the adapter holds `{client.host}-{host_name}` and calls the
/// client's `create_host`, locked on `{self.host}-{name}` — the same name.
async fn unity_self_deadlock(locks: &Locks) -> String {
    let adapter = Params::new()
        .with("client.host", "unity-a")
        .with("host_name", "host-7");
    let client = Params::new()
        .with("self.host", "unity-a")
        .with("name", "host-7");
    let guard = match locks.lock("unity-create-host-and-attach", &adapter).await {
        Ok(g) => g,
        Err(e) => return format!("could not take the adapter lock: {}", e.report()),
    };
    let outcome = match locks
        .lock_with("unity-create-host", &client, Wait::Forever)
        .await
    {
        Err(e) if e.kind() == ErrorKind::WouldDeadlock => {
            format!("refused at once instead of hanging: {e}")
        }
        Err(e) => format!("unexpected error: {}", e.report()),
        Ok(inner) => {
            let _ = inner.release().await;
            "acquired (the names differ in this configuration)".to_owned()
        }
    };
    let _ = guard.release().await;
    outcome
}

/// Prints an event line, first clearing a progress bar drawn on the same terminal.
fn event(text: &str) {
    if std::io::stdout().is_terminal() && std::io::stderr().is_terminal() {
        println!("\r\x1b[2K{text}");
    } else {
        println!("{text}");
    }
}

/// A progress bar on stderr while the calls run (only on a terminal).
fn spawn_progress(done: Arc<AtomicUsize>, total: usize) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        if !std::io::stderr().is_terminal() {
            return;
        }
        loop {
            let n = done.load(Ordering::Relaxed);
            let filled = n * 30 / total.max(1);
            eprint!(
                "\r  [{}{}] {n}/{total} critical sections done ",
                "#".repeat(filled),
                " ".repeat(30 - filled)
            );
            let _ = std::io::stderr().flush();
            if n >= total {
                eprintln!();
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
}
