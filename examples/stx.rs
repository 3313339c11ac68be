//! The STX client family (Seagate STX, HPE MSA, Lenovo, Dell PowerVault ME;
//! DotHill's successor in Cinder 29.0.0): two Global-scope locks per array.
//!
//! - `stx-api`, `{driver_name}-{array_name}`: getting a session key and
//!   every HTTP request on the array's management API. The array keeps one
//!   session per user: a login while another request is on the wire
//!   invalidates that request's key, and its management controller takes one
//!   request at a time.
//! - `stx-map`, `{driver_name}-{array_name}-map`: `map_volume`, which
//!   reads the host's mappings, picks the first free LUN and maps the volume;
//!   two at once pick the same LUN.
//!
//! `map_volume` holds the map lock while its requests take the API lock:
//! different names, so the nesting is safe. A second array runs in parallel.
//!
//! As in Cinder's `stx/client.py`, `driver_name` is the client's class name
//! (`STXClient`, or a subclass: `HPMSAClient`, `LenovoClient`, `PVMEClient`):
//! here array A1 is driven by an `STXClient`, A2 by an `HPMSAClient`. The
//! seed document's DotHill entries (`dothill-api`, `dothill-map`) declare the
//! same names; the DotHill driver itself is gone upstream.
//!
//! `cargo run --example stx [-- --locked | --unlocked]`

use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};

use locks::{Locks, locked};
use locks_examples::{
    BoxError, Device, DriverError, Mode, San, now_ms, pause, report_parallel, say, until,
};

/// The simulated array: its management API (one request at a time, one
/// session key) and its host mappings.
struct StxArray {
    api: Device<u32>,
    san: Mutex<San>,
}

impl StxArray {
    fn new(name: &str) -> Self {
        StxArray {
            api: Device::new(format!("{name} management API"), 0),
            san: Mutex::new(San::new(name)),
        }
    }

    fn san(&self) -> std::sync::MutexGuard<'_, San> {
        self.san.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

struct StxClient {
    locks: Locks,
    mode: Mode,
    driver_name: String,
    array_name: String,
    array: Arc<StxArray>,
    session_key: Mutex<Option<u32>>,
}

impl StxClient {
    /// A client of class `driver_name` (Cinder's `self.__class__.__name__`) for one array.
    fn new(locks: &Locks, mode: Mode, driver_name: &str, array_name: &str) -> Self {
        StxClient {
            locks: locks.clone(),
            mode,
            driver_name: driver_name.to_owned(),
            array_name: array_name.to_owned(),
            array: Arc::new(StxArray::new(array_name)),
            session_key: Mutex::new(None),
        }
    }

    fn key(&self) -> Option<u32> {
        *self
            .session_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// `_get_session_key`: a login; it replaces the array's session key.
    #[locked(
        locks = self.locks,
        id = "stx-api",
        driver_name = self.driver_name,
        array_name = self.array_name
    )]
    async fn get_session_key(&self, who: &str) -> Result<u32, DriverError> {
        self.get_session_key_wo_lock(who).await
    }

    async fn get_session_key_wo_lock(&self, who: &str) -> Result<u32, DriverError> {
        let inside = self.array.api.enter(who, "GET /login");
        pause(6).await;
        let key = {
            let mut current = inside.state();
            *current += 1;
            *current
        };
        *self
            .session_key
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(key);
        say(
            who,
            format!("logged in to {}: session key {key}", self.array_name),
        );
        Ok(key)
    }

    /// `_api_request`: one HTTP request with the current session key.
    #[locked(
        locks = self.locks,
        id = "stx-api",
        driver_name = self.driver_name,
        array_name = self.array_name
    )]
    async fn api_request(&self, who: &str, path: &str) -> Result<(), DriverError> {
        self.api_request_wo_lock(who, path).await
    }

    async fn api_request_wo_lock(&self, who: &str, path: &str) -> Result<(), DriverError> {
        let key = self.key();
        let inside = self.array.api.enter(who, format!("GET {path}"));
        pause(6).await;
        let current = *inside.state();
        if key != Some(current) {
            let key = key.map_or_else(|| "none".to_owned(), |k| k.to_string());
            return Err(DriverError::Array(format!(
                "GET {path}: session key {key} is no longer valid (the array's is now {current})"
            )));
        }
        Ok(())
    }

    /// `_request`: logs in when needed, then makes the request.
    async fn request(&self, who: &str, path: &str) -> Result<(), DriverError> {
        if self.key().is_none() {
            match self.mode {
                Mode::Locked => self.get_session_key(who).await?,
                Mode::Unlocked => self.get_session_key_wo_lock(who).await?,
            };
        }
        match self.mode {
            Mode::Locked => self.api_request(who, path).await,
            Mode::Unlocked => self.api_request_wo_lock(who, path).await,
        }
    }

    /// `map_volume`: the first free LUN of the host, then the mapping.
    #[locked(
        locks = self.locks,
        id = "stx-map",
        driver_name = self.driver_name,
        array_name = self.array_name,
        guard = lock
    )]
    async fn map_volume(
        &self,
        who: &str,
        volume_name: &str,
        host: &str,
    ) -> Result<u32, DriverError> {
        say(who, format!("map_volume holds `{}`", lock.name()));
        self.map_volume_wo_lock(who, volume_name, host).await
    }

    async fn map_volume_wo_lock(
        &self,
        who: &str,
        volume_name: &str,
        host: &str,
    ) -> Result<u32, DriverError> {
        self.request(who, &format!("/show/host-maps/{host}"))
            .await?;
        let lun = self.array.san().free_lun(host);
        self.request(
            who,
            &format!("/map/volume/{volume_name}/lun/{lun}/host/{host}"),
        )
        .await?;
        if !self.array.san().map(who, host, lun, volume_name) {
            return Err(DriverError::Array(format!("mapping {volume_name} failed")));
        }
        say(
            who,
            format!(
                "{volume_name} is LUN {lun} of {host} on {}",
                self.array_name
            ),
        );
        Ok(lun)
    }

    async fn map(&self, who: &str, volume: &str, host: &str) -> Result<u32, DriverError> {
        match self.mode {
            Mode::Locked => self.map_volume(who, volume, host).await,
            Mode::Unlocked => self.map_volume_wo_lock(who, volume, host).await,
        }
    }
}

async fn scenario(locks: Locks, mode: Mode) -> Result<Vec<String>, BoxError> {
    let a1 = Arc::new(StxClient::new(&locks, mode, "STXClient", "A1"));
    let a2 = Arc::new(StxClient::new(&locks, mode, "HPMSAClient", "A2"));
    for client in [&a1, &a2] {
        client.array.san().create_host("setup", "compute-1");
    }
    let start = now_ms() + 5.0;
    let mut tasks = Vec::new();
    for (client, who, volume) in [
        (&a1, "w1", "vol-1"),
        (&a1, "w2", "vol-2"),
        (&a1, "w3", "vol-3"),
        (&a2, "w4", "vol-4"),
        (&a2, "w5", "vol-5"),
    ] {
        let client = Arc::clone(client);
        tasks.push(tokio::spawn(async move {
            until(start).await;
            say(
                who,
                format!(
                    "initialize_connection: map {volume} on {}",
                    client.array_name
                ),
            );
            let result = client.map(who, volume, "compute-1").await;
            if let Err(e) = &result {
                say(who, format!("failed: {e}"));
            }
            result.map_err(|e| format!("{who}: {e}"))
        }));
    }
    // Meanwhile the driver's periodic stats poll talks to A1's API, outside
    // any map_volume: only the API lock orders it with the mappings' requests.
    let poller = Arc::clone(&a1);
    tasks.push(tokio::spawn(async move {
        until(start).await;
        for path in ["/show/pools", "/show/volumes"] {
            say("stats", format!("GET {path} on A1"));
            if let Err(e) = poller.request("stats", path).await {
                say("stats", format!("failed: {e}"));
                return Err(format!("stats: {e}"));
            }
        }
        Ok(0)
    }));
    let mut problems = Vec::new();
    for task in tasks {
        if let Err(e) = task.await? {
            problems.push(e);
        }
    }
    for client in [&a1, &a2] {
        {
            let san = client.array.san();
            println!("   {}: {}", san.name, san.summary());
            problems.extend(san.problems());
        }
        problems.extend(client.array.api.report());
    }
    if mode.locked() {
        report_parallel(&a1.array.api, &a2.array.api);
    }
    Ok(problems)
}

#[tokio::main]
async fn main() -> ExitCode {
    locks_examples::run(
        "stx: STX clients, `{driver_name}-{array_name}` on API requests and `...-map` on map_volume",
        &["stx-api", "stx-map"],
        scenario,
    )
    .await
}
