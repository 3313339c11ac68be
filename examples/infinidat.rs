//! Infinidat driver: the Global-scope lock `infinidat-{management_address}-lock`
//! around `initialize_connection` and `terminate_connection` (in Cinder
//! 29.0.0 the private `_initialize_connection` and `_terminate_connection`
//! they call take it).
//!
//! Attaching finds or creates the host object on the InfiniBox, picks a free
//! LUN and maps the volume; detaching unmaps it and deletes the host when it
//! has no volume left. Concurrent attaches and detaches of one array, from
//! any node of the cluster, would create a host twice, give one LUN to two
//! volumes, or map a volume to a host being deleted. The lock is per array:
//! two arrays are worked on in parallel.
//!
//! `cargo run --example infinidat [-- --locked | --unlocked]`

use std::process::ExitCode;
use std::sync::Arc;

use locks::{Locks, locked};
use locks_examples::{
    BoxError, Device, DriverError, Mode, San, attach, detach, now_ms, report_parallel, say, until,
};

struct Volume {
    id: String,
}

struct Connector {
    host: String,
}

/// One backend of the Infinidat driver: one InfiniBox, by its management address.
struct InfiniboxDriver {
    locks: Locks,
    management_address: String,
    array: Device<San>,
}

impl InfiniboxDriver {
    fn new(locks: Locks, management_address: &str) -> Self {
        InfiniboxDriver {
            locks,
            management_address: management_address.to_owned(),
            array: Device::new(
                format!("InfiniBox {management_address}"),
                San::new(format!("InfiniBox {management_address}")),
            ),
        }
    }

    #[locked(
        locks = self.locks,
        id = "infinidat",
        management_address = self.management_address,
        guard = lock
    )]
    async fn initialize_connection(
        &self,
        volume: &Volume,
        connector: &Connector,
    ) -> Result<u32, DriverError> {
        say(&volume.id, format!("holds `{}`", lock.name()));
        attach(&self.array, &volume.id, &connector.host, &volume.id)
            .await
            .ok_or_else(|| DriverError::Array(format!("mapping {} failed", volume.id)))
    }

    #[locked(
        locks = self.locks,
        id = "infinidat",
        management_address = self.management_address,
        guard = lock
    )]
    async fn terminate_connection(
        &self,
        volume: &Volume,
        connector: &Connector,
    ) -> Result<(), DriverError> {
        say(&volume.id, format!("holds `{}`", lock.name()));
        detach(&self.array, &volume.id, &connector.host, &volume.id).await;
        Ok(())
    }
}

async fn scenario(locks: Locks, mode: Mode) -> Result<Vec<String>, BoxError> {
    let one = Arc::new(InfiniboxDriver::new(locks.clone(), "10.0.0.1"));
    let two = Arc::new(InfiniboxDriver::new(locks, "10.0.0.2"));
    // compute-1 already has vol-0 on array one; it is detached while vol-1
    // and vol-2 are attached, and vol-3, vol-4 go to array two meanwhile.
    attach(&one.array, "setup", "compute-1", "vol-0").await;
    let jobs = [
        (&one, "vol-0", "compute-1", false),
        (&one, "vol-1", "compute-1", true),
        (&one, "vol-2", "compute-1", true),
        (&two, "vol-3", "compute-2", true),
        (&two, "vol-4", "compute-2", true),
    ];
    let start = now_ms() + 5.0;
    let mut tasks = Vec::new();
    for (driver, volume, host, attaching) in jobs {
        let driver = Arc::clone(driver);
        tasks.push(tokio::spawn(async move {
            until(start).await;
            let volume = Volume {
                id: volume.to_owned(),
            };
            let connector = Connector {
                host: host.to_owned(),
            };
            let what = if attaching {
                "initialize_connection"
            } else {
                "terminate_connection"
            };
            say(
                &volume.id,
                format!("{what} on {}", driver.management_address),
            );
            match (mode, attaching) {
                (Mode::Locked, true) => driver
                    .initialize_connection(&volume, &connector)
                    .await
                    .map(|_| ()),
                (Mode::Locked, false) => driver.terminate_connection(&volume, &connector).await,
                (Mode::Unlocked, true) => {
                    let _ = attach(&driver.array, &volume.id, &connector.host, &volume.id).await;
                    Ok(())
                }
                (Mode::Unlocked, false) => {
                    detach(&driver.array, &volume.id, &connector.host, &volume.id).await;
                    Ok(())
                }
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut problems = Vec::new();
    for driver in [&one, &two] {
        let san = driver.array.state();
        println!("   {}: {}", san.name, san.summary());
        problems.extend(san.problems());
        drop(san);
        problems.extend(driver.array.report());
    }
    if mode.locked() {
        report_parallel(&one.array, &two.array);
    }
    Ok(problems)
}

#[tokio::main]
async fn main() -> ExitCode {
    locks_examples::run(
        "infinidat: Infinidat driver, `infinidat-{management_address}-lock` per array",
        &["infinidat"],
        scenario,
    )
    .await
}
