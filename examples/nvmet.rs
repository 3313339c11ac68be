//! NVMET target: the Node-scope lock `nvmetcli` around creating and deleting
//! NVMe-oF targets.
//!
//! Cinder's NVMET target (`_map_volume` and `_locked_unmap_volume` in Cinder
//! 29.0.0; `create_nvmeof_target` and `delete_nvmeof_target` in the seed
//! document, as this example names them) reads the kernel's nvmet
//! configuration, changes it and saves it back through `nvmetcli`. Two of them at once on one host lose each other's change: a
//! deleted target comes back, a created one disappears. Here this process
//! creates targets while a second copy of the example deletes others, on one
//! simulated nvmet configuration.
//!
//! `cargo run --example nvmet [-- --locked | --unlocked]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use locks::{Locks, locked};
use locks_examples::{
    BoxError, Device, DriverError, Mode, child_args, child_command, now_ms, pause, say, until,
};

/// Subsystem NQN to the block device it exports.
type Subsystems = BTreeMap<String, String>;

/// The simulated nvmet configuration, saved and restored as a whole by `nvmetcli`.
struct NvmetCli {
    config: PathBuf,
    device: Device<()>,
}

fn nqn(volume_id: &str) -> String {
    format!("nqn.nvme-subsystem-1-{volume_id}")
}

impl NvmetCli {
    fn open(dir: &Path) -> Self {
        NvmetCli {
            config: dir.join("nvmet.conf"),
            device: Device::shared("the nvmet configuration", (), dir.join("nvmetcli.running")),
        }
    }

    fn load(&self) -> Subsystems {
        std::fs::read_to_string(&self.config)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_once(' '))
            .map(|(a, b)| (a.to_owned(), b.to_owned()))
            .collect()
    }

    fn save(&self, subsystems: &Subsystems) -> Result<(), DriverError> {
        let text: String = subsystems
            .iter()
            .map(|(n, p)| format!("{n} {p}\n"))
            .collect();
        std::fs::write(&self.config, text)
            .map_err(|e| DriverError::Array(format!("nvmetcli save: {e}")))
    }

    /// Reads the configuration, lets `change` edit it, saves it.
    async fn edit(
        &self,
        who: &str,
        what: String,
        change: impl FnOnce(&mut Subsystems),
    ) -> Result<(), DriverError> {
        let _inside = self.device.enter(who, what);
        let mut subsystems = self.load();
        // Building the subsystem, namespace and port in configfs.
        pause(20).await;
        change(&mut subsystems);
        self.save(&subsystems)
    }
}

/// The target helper, as Cinder's `NVMET`.
struct Nvmet {
    locks: Locks,
    cli: NvmetCli,
}

impl Nvmet {
    /// Cinder runs it under the external (whole host) lock `nvmetcli`.
    #[locked(locks = self.locks, id = "nvmet", guard = lock)]
    async fn create_nvmeof_target(
        &self,
        who: &str,
        volume_id: &str,
        volume_path: &str,
    ) -> Result<(), DriverError> {
        say(
            who,
            format!("holds `{}`: create {}", lock.name(), nqn(volume_id)),
        );
        self.create_wo_lock(who, volume_id, volume_path).await
    }

    /// Cinder runs it under the external (whole host) lock `nvmetcli`.
    #[locked(locks = self.locks, id = "nvmet", guard = lock)]
    async fn delete_nvmeof_target(&self, who: &str, volume_id: &str) -> Result<(), DriverError> {
        say(
            who,
            format!("holds `{}`: delete {}", lock.name(), nqn(volume_id)),
        );
        self.delete_wo_lock(who, volume_id).await
    }

    async fn create_wo_lock(
        &self,
        who: &str,
        volume_id: &str,
        volume_path: &str,
    ) -> Result<(), DriverError> {
        let nqn = nqn(volume_id);
        let what = format!("create {nqn}");
        self.cli
            .edit(who, what, |s| {
                s.insert(nqn, volume_path.to_owned());
            })
            .await
    }

    async fn delete_wo_lock(&self, who: &str, volume_id: &str) -> Result<(), DriverError> {
        let nqn = nqn(volume_id);
        self.cli
            .edit(who, format!("delete {nqn}"), |s| {
                s.remove(&nqn);
            })
            .await
    }

    async fn create(&self, mode: Mode, who: &str, volume_id: &str) -> Result<(), DriverError> {
        let path = format!("/dev/cinder-volumes/{volume_id}");
        match mode {
            Mode::Locked => self.create_nvmeof_target(who, volume_id, &path).await,
            Mode::Unlocked => {
                say(who, format!("no lock: create {}", nqn(volume_id)));
                self.create_wo_lock(who, volume_id, &path).await
            }
        }
    }

    async fn delete(&self, mode: Mode, who: &str, volume_id: &str) -> Result<(), DriverError> {
        match mode {
            Mode::Locked => self.delete_nvmeof_target(who, volume_id).await,
            Mode::Unlocked => {
                say(who, format!("no lock: delete {}", nqn(volume_id)));
                self.delete_wo_lock(who, volume_id).await
            }
        }
    }
}

const CREATED: [&str; 3] = ["vol-new-1", "vol-new-2", "vol-new-3"];
const DELETED: [&str; 2] = ["vol-old-1", "vol-old-2"];
const KEPT: &str = "vol-kept";

/// Runs `op` on every volume at `start_ms`, one task each; returns the failures.
async fn all<F, Fut>(
    nvmet: &Arc<Nvmet>,
    volumes: &[&'static str],
    start_ms: f64,
    op: F,
) -> Vec<String>
where
    F: Fn(Arc<Nvmet>, &'static str) -> Fut,
    Fut: Future<Output = Result<(), DriverError>> + Send + 'static,
{
    let mut tasks = Vec::new();
    for &volume in volumes {
        let fut = op(Arc::clone(nvmet), volume);
        tasks.push(tokio::spawn(async move {
            until(start_ms).await;
            fut.await.map_err(|e| format!("{volume}: {e}"))
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => failures.push(e),
            Err(e) => failures.push(format!("a worker panicked: {e}")),
        }
    }
    failures
}

async fn scenario(locks: Locks, mode: Mode) -> Result<Vec<String>, BoxError> {
    let dir = tempfile::tempdir()?;
    let nvmet = Arc::new(Nvmet {
        locks,
        cli: NvmetCli::open(dir.path()),
    });
    for volume in DELETED.iter().chain([&KEPT]) {
        nvmet
            .create_wo_lock("setup", volume, "/dev/cinder-volumes/old")
            .await?;
    }
    println!(
        "   before: {} targets ({}, {KEPT})",
        DELETED.len() + 1,
        DELETED.join(", ")
    );
    let start = now_ms() + 300.0;
    let mut other = child_command(&[
        mode.flag(),
        &dir.path().display().to_string(),
        &format!("{start}"),
    ])?
    .spawn()?;
    say(
        "main",
        format!(
            "a second process (pid {}) deletes {} meanwhile",
            other.id(),
            DELETED.join(", ")
        ),
    );
    let mut problems = all(&nvmet, &CREATED, start, move |n, v| async move {
        n.create(mode, v, v).await
    })
    .await;
    let status = tokio::task::spawn_blocking(move || other.wait()).await??;
    match status.code() {
        Some(0) => {}
        Some(3) => problems.push("the other process saw two nvmetcli edits at once".to_owned()),
        _ => problems.push(format!("the other process failed: {status}")),
    }

    let subsystems = nvmet.cli.load();
    let names: Vec<&str> = subsystems
        .keys()
        .map(|k| k.trim_start_matches("nqn.nvme-subsystem-1-"))
        .collect();
    println!(
        "   after: {} targets ({})",
        subsystems.len(),
        names.join(", ")
    );
    let mut wrong = Vec::new();
    for v in CREATED.iter().chain([&KEPT]) {
        if !subsystems.contains_key(&nqn(v)) {
            wrong.push(format!("{v} is missing"));
        }
    }
    for v in DELETED {
        if subsystems.contains_key(&nqn(v)) {
            wrong.push(format!("{v} came back"));
        }
    }
    if wrong.is_empty() {
        println!("   every create and every delete of both processes was kept");
    } else {
        let problem = format!("the saved configuration is wrong: {}", wrong.join(", "));
        say("nvmet", format!("CORRUPTED: {problem}"));
        problems.push(problem);
    }
    problems.extend(nvmet.cli.device.report());
    Ok(problems)
}

/// The second process: `nvmet --child MODE DIR START_MS` deletes the old targets.
async fn child(args: Vec<String>) -> ExitCode {
    let child = match locks_examples::ChildArgs::parse("nvmet", &args).await {
        Ok(child) => child,
        Err(status) => return status,
    };
    let (mode, start) = (child.mode, child.start);
    let nvmet = Arc::new(Nvmet {
        locks: child.locks,
        cli: NvmetCli::open(&child.dir),
    });
    let failures = all(&nvmet, &DELETED, start, move |n, v| async move {
        n.delete(mode, &format!("p2:{v}"), v).await
    })
    .await;
    if !failures.is_empty() {
        for f in failures {
            eprintln!("nvmet --child: {f}");
        }
        return ExitCode::from(1);
    }
    if nvmet.cli.device.overlaps() > 0 {
        return ExitCode::from(3);
    }
    ExitCode::SUCCESS
}

#[tokio::main]
async fn main() -> ExitCode {
    if let Some(args) = child_args() {
        return child(args).await;
    }
    locks_examples::run(
        "nvmet: NVMET target, `nvmetcli` around create/delete of targets, two processes",
        &["nvmet"],
        scenario,
    )
    .await
}
