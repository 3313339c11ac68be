//! Dell EMC Unity: three catalog entries on one name shape.
//!
//! - `unity-create-host`: the client's `create_host` (get or create a host
//!   object) under `{self.host}-{name}`;
//! - `unity-create-host-and-attach` and `unity-attach-detach`: the adapter's
//!   `_create_host_and_attach` and `_detach_and_delete_host` under
//!   `{client.host}-{host_name}`.
//!
//! For one array and one host all three render the same name, so attaching
//! a volume and detaching the host's last volume (which deletes the host)
//! exclude each other; without the lock a volume gets mapped to a host that
//! is being deleted. The same sharing is a trap: the adapter, holding its
//! lock, must not call the locked `create_host`, which would wait for itself.
//! Cinder calls an unlocked variant there; this library answers such a call
//! with `WouldDeadlock` at once instead of hanging.
//!
//! `cargo run --example unity [-- --locked | --unlocked]`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use locks::{ErrorKind, Locks, locked};
use locks_examples::{
    BoxError, Device, DriverError, Mode, San, now_ms, pause, report_parallel, say, until,
};

/// The simulated Unity array: host objects and LUNs, and per host object a
/// device that notices two operations on it at once.
struct UnityArray {
    san: Mutex<San>,
    hosts: BTreeMap<String, Device<()>>,
}

impl UnityArray {
    fn san(&self) -> MutexGuard<'_, San> {
        self.san.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn host(&self, name: &str) -> &Device<()> {
        &self.hosts[name]
    }
}

/// Cinder's `UnityClient`: `host` is the array's management address.
struct UnityClient {
    host: String,
    locks: Locks,
    array: Arc<UnityArray>,
}

impl UnityClient {
    /// Get or create the host object `name`.
    #[locked(locks = self.locks, id = "unity-create-host", guard = lock)]
    async fn create_host(&self, who: &str, name: &str) -> Result<(), DriverError> {
        say(who, format!("create_host holds `{}`", lock.name()));
        self.create_host_wo_lock(who, name).await
    }

    /// The unlocked variant, for callers that already hold the host's lock.
    async fn create_host_wo_lock(&self, who: &str, name: &str) -> Result<(), DriverError> {
        let _inside = self
            .array
            .host(name)
            .enter(who, format!("create host {name}"));
        pause(8).await;
        if !self.array.san().has_host(name) {
            pause(8).await;
            self.array.san().create_host(who, name);
            say(who, format!("created host {name}"));
        }
        Ok(())
    }

    async fn attach(&self, who: &str, host: &str, volume: &str) -> Result<u32, DriverError> {
        let _inside = self
            .array
            .host(host)
            .enter(who, format!("attach {volume} to {host}"));
        pause(8).await;
        let lun = self.array.san().free_lun(host);
        pause(8).await;
        if !self.array.san().map(who, host, lun, volume) {
            return Err(DriverError::Array(format!(
                "attaching {volume} to {host} failed"
            )));
        }
        say(who, format!("{volume} is LUN {lun} of {host}"));
        Ok(lun)
    }

    async fn detach(&self, who: &str, host: &str, volume: &str) -> usize {
        let _inside = self
            .array
            .host(host)
            .enter(who, format!("detach {volume} from {host}"));
        pause(8).await;
        self.array.san().unmap(host, volume)
    }

    async fn delete_host(&self, who: &str, host: &str) {
        let _inside = self
            .array
            .host(host)
            .enter(who, format!("delete host {host}"));
        pause(8).await;
        self.array.san().delete_host(who, host);
        say(who, format!("deleted host {host}"));
    }
}

/// Cinder's `CommonAdapter`.
struct UnityAdapter {
    client: UnityClient,
}

impl UnityAdapter {
    #[locked(
        locks = self.client.locks,
        id = "unity-create-host-and-attach",
        client = self.client,
        guard = lock
    )]
    async fn create_host_and_attach(
        &self,
        who: &str,
        host_name: &str,
        volume: &str,
    ) -> Result<u32, DriverError> {
        say(
            who,
            format!("create_host_and_attach holds `{}`", lock.name()),
        );
        self.create_host_and_attach_wo_lock(who, host_name, volume)
            .await
    }

    async fn create_host_and_attach_wo_lock(
        &self,
        who: &str,
        host_name: &str,
        volume: &str,
    ) -> Result<u32, DriverError> {
        // As Cinder: the unlocked variant, since this lock is the same name.
        self.client.create_host_wo_lock(who, host_name).await?;
        self.client.attach(who, host_name, volume).await
    }

    /// The trap: calling the locked `create_host` while holding the same name.
    #[locked(locks = self.client.locks, id = "unity-create-host-and-attach", client = self.client)]
    async fn create_host_and_attach_calling_locked_create_host(
        &self,
        who: &str,
        host_name: &str,
        volume: &str,
    ) -> Result<u32, DriverError> {
        let asked = Instant::now();
        if let Err(e) = self.client.create_host(who, host_name).await {
            if e.lock_kind() == Some(ErrorKind::WouldDeadlock) {
                let after = asked.elapsed();
                say(
                    who,
                    format!("WouldDeadlock after {after:.1?} instead of waiting for itself: {e}"),
                );
            }
            return Err(e);
        }
        self.client.attach(who, host_name, volume).await
    }

    #[locked(locks = self.client.locks, id = "unity-attach-detach", client = self.client, guard = lock)]
    async fn detach_and_delete_host(
        &self,
        who: &str,
        host_name: &str,
        volume: &str,
    ) -> Result<(), DriverError> {
        say(
            who,
            format!("detach_and_delete_host holds `{}`", lock.name()),
        );
        self.detach_and_delete_host_wo_lock(who, host_name, volume)
            .await;
        Ok(())
    }

    async fn detach_and_delete_host_wo_lock(&self, who: &str, host_name: &str, volume: &str) {
        if self.client.detach(who, host_name, volume).await == 0 {
            say(who, format!("{host_name} has no volume left: deleting it"));
            self.client.delete_host(who, host_name).await;
        }
    }
}

enum Job {
    Attach(&'static str, &'static str),
    DetachLast(&'static str, &'static str),
    CreateHost(&'static str),
}

async fn scenario(locks: Locks, mode: Mode) -> Result<Vec<String>, BoxError> {
    let array = Arc::new(UnityArray {
        san: Mutex::new(San::new("Unity unity-a")),
        hosts: ["h1", "h2"]
            .into_iter()
            .map(|h| (h.to_owned(), Device::new(format!("Unity host {h}"), ())))
            .collect(),
    });
    let adapter = Arc::new(UnityAdapter {
        client: UnityClient {
            host: "unity-a".to_owned(),
            locks,
            array: Arc::clone(&array),
        },
    });
    adapter
        .create_host_and_attach_wo_lock("setup", "h1", "vol-0")
        .await?;
    // vol-0 is h1's only volume: detaching it deletes h1, while vol-1 and
    // vol-2 are attached to h1. On h2 (another name) the client's create_host
    // and an attach run meanwhile.
    let jobs = [
        ("w1", Job::DetachLast("h1", "vol-0")),
        ("w2", Job::Attach("h1", "vol-1")),
        ("w3", Job::Attach("h1", "vol-2")),
        ("w4", Job::Attach("h2", "vol-3")),
        ("w5", Job::CreateHost("h2")),
    ];
    let start = now_ms() + 5.0;
    let mut tasks = Vec::new();
    for (who, job) in jobs {
        let adapter = Arc::clone(&adapter);
        tasks.push(tokio::spawn(async move {
            until(start).await;
            let result = match (job, mode) {
                (Job::Attach(h, v), Mode::Locked) => {
                    adapter.create_host_and_attach(who, h, v).await.map(|_| ())
                }
                (Job::Attach(h, v), Mode::Unlocked) => adapter
                    .create_host_and_attach_wo_lock(who, h, v)
                    .await
                    .map(|_| ()),
                (Job::DetachLast(h, v), Mode::Locked) => {
                    adapter.detach_and_delete_host(who, h, v).await
                }
                (Job::DetachLast(h, v), Mode::Unlocked) => {
                    adapter.detach_and_delete_host_wo_lock(who, h, v).await;
                    Ok(())
                }
                (Job::CreateHost(h), Mode::Locked) => adapter.client.create_host(who, h).await,
                (Job::CreateHost(h), Mode::Unlocked) => {
                    adapter.client.create_host_wo_lock(who, h).await
                }
            };
            if let Err(e) = &result {
                say(who, format!("failed: {e}"));
            }
            result.map_err(|e| format!("{who}: {e}"))
        }));
    }
    let mut problems = Vec::new();
    for task in tasks {
        if let Err(e) = task.await? {
            problems.push(e);
        }
    }
    {
        let san = array.san();
        println!("   {}: {}", san.name, san.summary());
        problems.extend(san.problems());
    }
    for device in array.hosts.values() {
        problems.extend(device.report());
    }
    if mode.locked() {
        report_parallel(array.host("h1"), array.host("h2"));
        problems.extend(self_deadlock(&adapter).await);
    }
    Ok(problems)
}

/// The adapter calling the locked `create_host` while it holds the same name.
async fn self_deadlock(adapter: &UnityAdapter) -> Option<String> {
    println!("   the adapter calls the locked create_host while holding `unity-a-h2`:");
    let result = adapter
        .create_host_and_attach_calling_locked_create_host("trap", "h2", "vol-9")
        .await;
    match result {
        Err(e) if e.lock_kind() == Some(ErrorKind::WouldDeadlock) => None,
        Err(e) => Some(format!("expected WouldDeadlock, got: {e}")),
        Ok(_) => Some("expected WouldDeadlock, but the nested create_host was granted".to_owned()),
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    locks_examples::run(
        "unity: Dell EMC Unity, client create_host and adapter attach/detach on `{host}-{host name}`",
        &["unity-create-host", "unity-create-host-and-attach", "unity-attach-detach"],
        scenario,
    )
    .await
}
