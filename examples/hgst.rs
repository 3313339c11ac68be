//! HGST driver: the Process-scope lock `hgst-devices` around `create_volume`.
//!
//! Creating a volume on HGST's flash storage lists the spaces already on the
//! cluster, checks that the new one fits, picks the next free device name and
//! creates the space. Two creates at once both see the same free capacity and
//! the same next name: the pool is over-committed and two volumes get one
//! device. Cinder held one lock per process around the whole operation
//! (`hgst'devices` in the seed document, garbling the driver's
//! `@lockutils.synchronized('devices', 'cinder-hgst-')`; `hgst-devices` in the
//! catalog). The HGST driver is gone upstream (absent from Cinder 29.0.0).
//!
//! `cargo run --example hgst [-- --locked | --unlocked]`

use std::process::ExitCode;
use std::sync::Arc;

use locks::{Locks, locked};
use locks_examples::{BoxError, Device, DriverError, Mode, now_ms, pause, say, until};

const POOL_GIB: u64 = 100;

/// The simulated cluster: spaces by device name, with their size.
#[derive(Debug, Default)]
struct Pool {
    spaces: Vec<(String, String, u64)>,
}

struct Volume {
    id: String,
    size_gib: u64,
}

struct HgstDriver {
    locks: Locks,
    cluster: Device<Pool>,
}

impl HgstDriver {
    /// Cinder runs `create_volume` under a lock of the driver's process.
    #[locked(locks = self.locks, id = "hgst", guard = lock)]
    async fn create_volume(&self, volume: &Volume) -> Result<String, DriverError> {
        say(&volume.id, format!("holds `{}`", lock.name()));
        self.create_volume_wo_lock(volume).await
    }

    async fn create_volume_wo_lock(&self, volume: &Volume) -> Result<String, DriverError> {
        let inside = self
            .cluster
            .enter(&volume.id, format!("create {} GiB", volume.size_gib));
        // vgc-cluster space-list
        pause(15).await;
        let (used, next) = {
            let pool = inside.state();
            let used: u64 = pool.spaces.iter().map(|s| s.2).sum();
            (used, format!("vgc-dev{}", pool.spaces.len() + 1))
        };
        let free = POOL_GIB - used.min(POOL_GIB);
        if volume.size_gib > free {
            return Err(DriverError::Array(format!(
                "not enough space: {free} GiB free, {} GiB asked",
                volume.size_gib
            )));
        }
        // vgc-cluster space-create --name NEXT
        pause(20).await;
        inside
            .state()
            .spaces
            .push((next.clone(), volume.id.clone(), volume.size_gib));
        say(
            &volume.id,
            format!(
                "created {next} ({} GiB; {} GiB were free)",
                volume.size_gib, free
            ),
        );
        Ok(next)
    }
}

async fn scenario(locks: Locks, mode: Mode) -> Result<Vec<String>, BoxError> {
    let driver = Arc::new(HgstDriver {
        locks,
        cluster: Device::new("the HGST cluster", Pool::default()),
    });
    println!("   three 40 GiB volumes asked at once on a {POOL_GIB} GiB pool: only two fit");
    let start = now_ms() + 5.0;
    let mut tasks = Vec::new();
    for n in 1..=3 {
        let driver = Arc::clone(&driver);
        tasks.push(tokio::spawn(async move {
            let volume = Volume {
                id: format!("volume-{n}"),
                size_gib: 40,
            };
            until(start).await;
            let result = match mode {
                Mode::Locked => driver.create_volume(&volume).await,
                Mode::Unlocked => driver.create_volume_wo_lock(&volume).await,
            };
            if let Err(e) = &result {
                say(&volume.id, format!("refused: {e}"));
            }
            result.is_ok()
        }));
    }
    let mut created = 0;
    for task in tasks {
        if task.await? {
            created += 1;
        }
    }

    let mut problems = Vec::new();
    let pool = driver.cluster.state();
    let used: u64 = pool.spaces.iter().map(|s| s.2).sum();
    println!("   {created} volumes created, {used} GiB of {POOL_GIB} GiB in use");
    if used > POOL_GIB {
        problems.push(format!(
            "the pool is over-committed: {used} GiB of {POOL_GIB} GiB"
        ));
    }
    let mut names: Vec<&str> = pool.spaces.iter().map(|s| s.0.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    if names.len() < pool.spaces.len() {
        problems.push("two volumes were given the same device".to_owned());
    }
    drop(pool);
    for p in &problems {
        say("hgst", format!("CORRUPTED: {p}"));
    }
    problems.extend(driver.cluster.report());
    Ok(problems)
}

#[tokio::main]
async fn main() -> ExitCode {
    locks_examples::run(
        "hgst: HGST driver, `hgst-devices` around create_volume",
        &["hgst"],
        scenario,
    )
    .await
}
