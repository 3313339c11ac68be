//! LIO target: the Node-scope lock `lioadm` around every `cinder-rtstool` call.
//!
//! `cinder-rtstool` changes the kernel's LIO configuration and saves it as a
//! whole; two runs at once lose each other's changes. Cinder's
//! `LioAdm._execute` takes `lioadm` so that every process of the host runs one
//! rtstool at a time. Here the simulated rtstool keeps its configuration in a
//! file, and a second copy of this example (another process) runs rtstool
//! too: with the lock the two processes take turns, without it targets are
//! lost.
//!
//! `cargo run --example lio [-- --locked | --unlocked]`

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;

use locks::{Locks, locked};
use locks_examples::{
    BoxError, Device, DriverError, Mode, child_args, child_command, now_ms, pause, say, until,
};

/// The simulated `cinder-rtstool`: reads the saved configuration, changes it
/// and writes it back, as rtslib does.
struct RtsTool {
    /// One line per target: `IQN [INITIATOR...]`.
    config: PathBuf,
    device: Device<()>,
}

type Targets = BTreeMap<String, Vec<String>>;

impl RtsTool {
    fn open(dir: &Path) -> Self {
        RtsTool {
            config: dir.join("saveconfig.txt"),
            device: Device::shared("the LIO configuration", (), dir.join("rtstool.running")),
        }
    }

    fn load(&self) -> Targets {
        std::fs::read_to_string(&self.config)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace().map(str::to_owned);
                Some((words.next()?, words.collect()))
            })
            .collect()
    }

    fn save(&self, targets: &Targets) -> Result<(), DriverError> {
        let text: String = targets
            .iter()
            .map(|(iqn, initiators)| format!("{iqn} {}\n", initiators.join(" ")))
            .collect();
        std::fs::write(&self.config, text)
            .map_err(|e| DriverError::Array(format!("saving the LIO configuration: {e}")))
    }

    async fn run(&self, who: &str, args: &[&str]) -> Result<(), DriverError> {
        let _inside = self
            .device
            .enter(who, format!("cinder-rtstool {}", args.join(" ")));
        let mut targets = self.load();
        // rtslib walks configfs before it saves.
        pause(20).await;
        match args {
            ["create", iqn] => {
                targets.insert((*iqn).to_owned(), Vec::new());
            }
            ["add-initiator", iqn, initiator] => {
                let target = targets.get_mut(*iqn).ok_or_else(|| {
                    DriverError::Array(format!("cinder-rtstool: no target {iqn}"))
                })?;
                target.push((*initiator).to_owned());
            }
            ["delete", iqn] => {
                targets.remove(*iqn);
            }
            _ => {
                return Err(DriverError::Array(format!(
                    "cinder-rtstool: usage: {args:?}"
                )));
            }
        }
        self.save(&targets)
    }
}

/// The target helper, as Cinder's `LioAdm`.
struct LioAdm {
    locks: Locks,
    rtstool: RtsTool,
}

impl LioAdm {
    /// Cinder runs `_execute` under the external (whole host) lock `lioadm`.
    #[locked(locks = self.locks, id = "lio", guard = lock)]
    async fn execute(&self, who: &str, args: &[&str]) -> Result<(), DriverError> {
        say(
            who,
            format!(
                "holds `{}` (token {}): cinder-rtstool {}",
                lock.name(),
                lock.token(),
                args.join(" ")
            ),
        );
        self.rtstool.run(who, args).await
    }

    async fn execute_wo_lock(&self, who: &str, args: &[&str]) -> Result<(), DriverError> {
        say(who, format!("no lock: cinder-rtstool {}", args.join(" ")));
        self.rtstool.run(who, args).await
    }

    /// `create_iscsi_target` and then `initialize_connection`: two rtstool runs.
    async fn export(&self, mode: Mode, who: &str, volume: &str) -> Result<(), DriverError> {
        let iqn = format!("iqn.2010-10.org.openstack:{volume}");
        let initiator = format!("iqn.1994-05.com.redhat:{volume}-host");
        let create = ["create", iqn.as_str()];
        let add = ["add-initiator", iqn.as_str(), initiator.as_str()];
        for args in [&create[..], &add[..]] {
            match mode {
                Mode::Locked => self.execute(who, args).await?,
                Mode::Unlocked => self.execute_wo_lock(who, args).await?,
            }
        }
        Ok(())
    }
}

/// Exports `volumes` at `start_ms`, one task each; returns the failures.
async fn export_all(
    lio: Arc<LioAdm>,
    mode: Mode,
    volumes: &[String],
    start_ms: f64,
) -> Vec<String> {
    let mut tasks = Vec::new();
    for volume in volumes {
        let (lio, volume) = (Arc::clone(&lio), volume.clone());
        tasks.push(tokio::spawn(async move {
            until(start_ms).await;
            let result = lio.export(mode, &volume, &volume).await;
            (volume, result)
        }));
    }
    let mut failures = Vec::new();
    for task in tasks {
        match task.await {
            Ok((_, Ok(()))) => {}
            Ok((volume, Err(e))) => {
                say(&volume, format!("failed: {e}"));
                failures.push(format!("{volume}: {e}"));
            }
            Err(e) => failures.push(format!("a worker panicked: {e}")),
        }
    }
    failures
}

async fn scenario(locks: Locks, mode: Mode) -> Result<Vec<String>, BoxError> {
    let dir = tempfile::tempdir()?;
    let lio = Arc::new(LioAdm {
        locks,
        rtstool: RtsTool::open(dir.path()),
    });
    // Both processes start together, once the copy is up.
    let start = now_ms() + 300.0;
    let dir_arg = dir.path().display().to_string();
    let start_arg = format!("{start}");
    let mut other = child_command(&[mode.flag(), &dir_arg, &start_arg])?.spawn()?;
    say(
        "main",
        format!(
            "started a second process (pid {}) that runs rtstool on the same host",
            other.id()
        ),
    );
    let ours: Vec<String> = (1..=3).map(|n| format!("volume-{n}")).collect();
    let mut problems = export_all(Arc::clone(&lio), mode, &ours, start).await;
    let status = tokio::task::spawn_blocking(move || other.wait()).await??;
    match status.code() {
        Some(0) => {}
        Some(3) => problems.push("the other process saw two rtstool runs at once".to_owned()),
        _ => problems.push(format!("the other process failed: {status}")),
    }

    let targets = lio.rtstool.load();
    let expected = ours.iter().cloned().chain(other_volumes());
    let mut lost = Vec::new();
    for volume in expected {
        let iqn = format!("iqn.2010-10.org.openstack:{volume}");
        match targets.get(&iqn) {
            Some(initiators) if initiators.len() == 1 => {}
            Some(_) => lost.push(format!("{volume} (its initiator)")),
            None => lost.push(volume),
        }
    }
    println!(
        "   saved LIO configuration: {} targets, {} initiators",
        targets.len(),
        targets.values().map(Vec::len).sum::<usize>()
    );
    if lost.is_empty() {
        println!("   every target and initiator of both processes was saved");
    } else {
        let problem = format!("the saved configuration lost: {}", lost.join(", "));
        say("lio", format!("CORRUPTED: {problem}"));
        problems.push(problem);
    }
    problems.extend(lio.rtstool.device.report());
    Ok(problems)
}

fn other_volumes() -> impl Iterator<Item = String> {
    (1..=2).map(|n| format!("volume-p2-{n}"))
}

/// The second process: `lio --child MODE DIR START_MS`.
async fn child(args: Vec<String>) -> ExitCode {
    let child = match locks_examples::ChildArgs::parse("lio", &args).await {
        Ok(child) => child,
        Err(status) => return status,
    };
    let (mode, start) = (child.mode, child.start);
    let lio = Arc::new(LioAdm {
        locks: child.locks,
        rtstool: RtsTool::open(&child.dir),
    });
    let volumes: Vec<String> = other_volumes().collect();
    let failures = export_all(Arc::clone(&lio), mode, &volumes, start).await;
    if !failures.is_empty() {
        return ExitCode::from(1);
    }
    if lio.rtstool.device.overlaps() > 0 {
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
        "lio: LIO target, `lioadm` around cinder-rtstool, two processes",
        &["lio"],
        scenario,
    )
    .await
}
