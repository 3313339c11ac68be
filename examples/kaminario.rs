//! Kaminario FC and iSCSI drivers: one Global-scope lock `Kaminario-{san_ip}`
//! shared by both, around `initialize_connection` and `terminate_connection`.
//!
//! The capital K is Cinder's: `kaminario_common.K2_LOCK_PREFIX = 'Kaminario'`
//! (Cinder's "Drivers Locking Examples" document says `kaminario-{san_ip}`,
//! which would be another lock and exclude nothing Cinder holds).
//!
//! The catalog declares two entries, `kaminario-fc` and `kaminario-iscsi`,
//! whose templates render the same name for one K2 array: an FC backend and
//! an iSCSI backend of the same array exclude each other, because both create
//! host objects and LUN mappings on it. A second array is worked on in
//! parallel.
//!
//! `cargo run --example kaminario [-- --locked | --unlocked]`

use std::process::ExitCode;
use std::sync::Arc;

use locks::{Locks, Params, locked};
use locks_examples::{
    BoxError, Device, DriverError, Mode, San, attach, detach, now_ms, report_parallel, say, until,
};

struct Volume {
    id: String,
}

struct Connector {
    host: String,
}

/// What the FC and iSCSI drivers share: the array and its address.
struct KaminarioCommon {
    locks: Locks,
    san_ip: String,
    array: Arc<Device<San>>,
}

impl KaminarioCommon {
    async fn attach(&self, volume: &Volume, connector: &Connector) -> Result<u32, DriverError> {
        attach(&self.array, &volume.id, &connector.host, &volume.id)
            .await
            .ok_or_else(|| DriverError::Array(format!("mapping {} failed", volume.id)))
    }
}

struct KaminarioFcDriver {
    common: KaminarioCommon,
}

impl KaminarioFcDriver {
    #[locked(locks = self.common.locks, id = "kaminario-fc", san_ip = self.common.san_ip, guard = lock)]
    async fn initialize_connection(
        &self,
        volume: &Volume,
        connector: &Connector,
    ) -> Result<u32, DriverError> {
        say(&volume.id, format!("FC    holds `{}`", lock.name()));
        self.common.attach(volume, connector).await
    }

    #[locked(locks = self.common.locks, id = "kaminario-fc", san_ip = self.common.san_ip, guard = lock)]
    async fn terminate_connection(
        &self,
        volume: &Volume,
        connector: &Connector,
    ) -> Result<(), DriverError> {
        say(&volume.id, format!("FC    holds `{}`", lock.name()));
        detach(&self.common.array, &volume.id, &connector.host, &volume.id).await;
        Ok(())
    }
}

struct KaminarioIscsiDriver {
    common: KaminarioCommon,
}

impl KaminarioIscsiDriver {
    #[locked(locks = self.common.locks, id = "kaminario-iscsi", san_ip = self.common.san_ip, guard = lock)]
    async fn initialize_connection(
        &self,
        volume: &Volume,
        connector: &Connector,
    ) -> Result<u32, DriverError> {
        say(&volume.id, format!("iSCSI holds `{}`", lock.name()));
        self.common.attach(volume, connector).await
    }
}

fn common(locks: &Locks, san_ip: &str, array: &Arc<Device<San>>) -> KaminarioCommon {
    KaminarioCommon {
        locks: locks.clone(),
        san_ip: san_ip.to_owned(),
        array: Arc::clone(array),
    }
}

fn k2(san_ip: &str) -> Arc<Device<San>> {
    let name = format!("K2 {san_ip}");
    Arc::new(Device::new(name.clone(), San::new(name)))
}

async fn scenario(locks: Locks, mode: Mode) -> Result<Vec<String>, BoxError> {
    let params = Params::new().with("san_ip", "10.0.1.5");
    let fc_name = locks.request("kaminario-fc", &params)?.name;
    let iscsi_name = locks.request("kaminario-iscsi", &params)?.name;
    println!(
        "   kaminario-fc renders `{fc_name}`, kaminario-iscsi renders `{iscsi_name}`: {}",
        if fc_name == iscsi_name {
            "one lock"
        } else {
            "two locks"
        }
    );
    let (k2_a, k2_b) = (k2("10.0.1.5"), k2("10.0.1.6"));
    let fc = Arc::new(KaminarioFcDriver {
        common: common(&locks, "10.0.1.5", &k2_a),
    });
    let iscsi = Arc::new(KaminarioIscsiDriver {
        common: common(&locks, "10.0.1.5", &k2_a),
    });
    let iscsi_b = Arc::new(KaminarioIscsiDriver {
        common: common(&locks, "10.0.1.6", &k2_b),
    });
    attach(&k2_a, "setup", "compute-1", "vol-0").await;

    // On 10.0.1.5: FC detaches vol-0 and attaches vol-1 while iSCSI attaches
    // vol-2, all for compute-1. On 10.0.1.6: iSCSI attaches vol-3 and vol-4.
    let start = now_ms() + 5.0;
    let mut tasks = Vec::new();
    for (job, volume, host) in [
        ("fc-detach", "vol-0", "compute-1"),
        ("fc", "vol-1", "compute-1"),
        ("iscsi", "vol-2", "compute-1"),
        ("iscsi-b", "vol-3", "compute-2"),
        ("iscsi-b", "vol-4", "compute-2"),
    ] {
        let (fc, iscsi, iscsi_b) = (Arc::clone(&fc), Arc::clone(&iscsi), Arc::clone(&iscsi_b));
        tasks.push(tokio::spawn(async move {
            until(start).await;
            let volume = Volume {
                id: volume.to_owned(),
            };
            let connector = Connector {
                host: host.to_owned(),
            };
            let what = match job {
                "fc-detach" => "FC terminate_connection on 10.0.1.5",
                "fc" => "FC initialize_connection on 10.0.1.5",
                "iscsi" => "iSCSI initialize_connection on 10.0.1.5",
                _ => "iSCSI initialize_connection on 10.0.1.6",
            };
            say(&volume.id, format!("{what} for {host}"));
            if !mode.locked() {
                let array = match job {
                    "iscsi-b" => &iscsi_b.common.array,
                    _ => &fc.common.array,
                };
                match job {
                    "fc-detach" => detach(array, &volume.id, host, &volume.id).await,
                    _ => {
                        let _ = attach(array, &volume.id, host, &volume.id).await;
                    }
                }
                return Ok(());
            }
            match job {
                "fc-detach" => fc.terminate_connection(&volume, &connector).await,
                "fc" => fc
                    .initialize_connection(&volume, &connector)
                    .await
                    .map(|_| ()),
                "iscsi" => iscsi
                    .initialize_connection(&volume, &connector)
                    .await
                    .map(|_| ()),
                _ => iscsi_b
                    .initialize_connection(&volume, &connector)
                    .await
                    .map(|_| ()),
            }
        }));
    }
    for task in tasks {
        task.await??;
    }
    let mut problems = Vec::new();
    for array in [&k2_a, &k2_b] {
        let san = array.state();
        println!("   {}: {}", san.name, san.summary());
        problems.extend(san.problems());
        drop(san);
        problems.extend(array.report());
    }
    if mode.locked() {
        report_parallel(&k2_a, &k2_b);
    }
    Ok(problems)
}

#[tokio::main]
async fn main() -> ExitCode {
    locks_examples::run(
        "kaminario: Kaminario FC and iSCSI drivers sharing `Kaminario-{san_ip}`",
        &["kaminario-fc", "kaminario-iscsi"],
        scenario,
    )
    .await
}
