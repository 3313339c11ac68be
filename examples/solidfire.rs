//! SolidFire driver: the Process-scope lock `solidfire-{resource_id}`, taken by
//! Cinder's `locked_image_id_operation` and `locked_source_id_operation`
//! decorators, as the seed document describes them. (Cinder 29.0.0 still
//! defines `locked_image_id_operation` but no method uses it: there only
//! cloning and creating from a snapshot take the lock.)
//!
//! Creating a volume from an image caches the image once as a template volume
//! on the cluster and clones it; two creates from one image at once would
//! both find no template and both download it. Cloning a volume or creating
//! one from a snapshot works on the source, which the cluster lets one clone
//! at a time. The lock is per image or per source, so work on different
//! images and different sources runs in parallel.
//!
//! `cargo run --example solidfire [-- --locked | --unlocked]`

use std::collections::BTreeMap;
use std::process::ExitCode;
use std::sync::Arc;

use locks::{Locks, locked};
use locks_examples::{
    BoxError, Device, DriverError, Mode, now_ms, pause, report_parallel, say, until,
};

struct Image {
    id: String,
}

struct Volume {
    id: String,
}

struct Snapshot {
    id: String,
}

/// The simulated cluster: one device per image or source, each taking one
/// operation at a time, and the template volumes cached per image.
struct Cluster {
    resources: BTreeMap<String, Device<()>>,
    templates: std::sync::Mutex<BTreeMap<String, Vec<String>>>,
}

impl Cluster {
    fn new(resources: &[&str]) -> Self {
        Cluster {
            resources: resources
                .iter()
                .map(|r| ((*r).to_owned(), Device::new(format!("SolidFire {r}"), ())))
                .collect(),
            templates: Default::default(),
        }
    }

    fn resource(&self, id: &str) -> Result<&Device<()>, DriverError> {
        self.resources
            .get(id)
            .ok_or_else(|| DriverError::Array(format!("xVolumeIDDoesNotExist: {id}")))
    }

    fn templates(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Vec<String>>> {
        self.templates.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Clones `source` into `volume`; a second clone of one source at once fails.
    async fn clone_volume(&self, who: &str, source: &str, volume: &str) -> Result<(), DriverError> {
        let inside = self
            .resource(source)?
            .enter(who, format!("clone {source} to {volume}"));
        if inside.corrupted() {
            return Err(DriverError::Array(format!(
                "xMaxClonesPerVolumeExceeded: {source} is already being cloned"
            )));
        }
        pause(30).await;
        say(who, format!("cloned {source} into {volume}"));
        Ok(())
    }
}

struct SolidFireDriver {
    locks: Locks,
    cluster: Cluster,
}

impl SolidFireDriver {
    /// As Cinder's `@locked_image_id_operation`: one image at a time.
    #[locked(locks = self.locks, id = "solidfire", resource_id = image.id, guard = lock)]
    async fn clone_image(&self, volume: &Volume, image: &Image) -> Result<(), DriverError> {
        say(&volume.id, format!("holds `{}`", lock.name()));
        self.clone_image_wo_lock(volume, image).await
    }

    /// As Cinder's `@locked_source_id_operation`, with the source volume.
    #[locked(locks = self.locks, id = "solidfire", resource_id = source.id, guard = lock)]
    async fn create_cloned_volume(
        &self,
        volume: &Volume,
        source: &Volume,
    ) -> Result<(), DriverError> {
        say(&volume.id, format!("holds `{}`", lock.name()));
        self.cluster
            .clone_volume(&volume.id, &source.id, &volume.id)
            .await
    }

    /// As Cinder's `@locked_source_id_operation`, with the snapshot.
    #[locked(locks = self.locks, id = "solidfire", resource_id = snapshot.id, guard = lock)]
    async fn create_volume_from_snapshot(
        &self,
        volume: &Volume,
        snapshot: &Snapshot,
    ) -> Result<(), DriverError> {
        say(&volume.id, format!("holds `{}`", lock.name()));
        self.cluster
            .clone_volume(&volume.id, &snapshot.id, &volume.id)
            .await
    }

    /// The template volume of `image`, downloaded the first time, then cloned.
    async fn clone_image_wo_lock(&self, volume: &Volume, image: &Image) -> Result<(), DriverError> {
        let who = volume.id.as_str();
        let template = {
            let _inside = self
                .cluster
                .resource(&image.id)?
                .enter(who, format!("cache {}", image.id));
            let cached = self
                .cluster
                .templates()
                .get(&image.id)
                .and_then(|t| t.first().cloned());
            match cached {
                Some(t) => t,
                None => {
                    say(
                        who,
                        format!(
                            "{} is not cached: downloading it into a template volume",
                            image.id
                        ),
                    );
                    pause(40).await;
                    let template = format!("template-{}-{who}", image.id);
                    let mut templates = self.cluster.templates();
                    let entry = templates.entry(image.id.clone()).or_default();
                    entry.push(template.clone());
                    if entry.len() > 1 {
                        say(
                            who,
                            format!(
                                "CORRUPTED: {} is cached twice: {}",
                                image.id,
                                entry.join(", ")
                            ),
                        );
                    }
                    template
                }
            }
        };
        pause(10).await;
        say(who, format!("cloned {template} into {}", volume.id));
        Ok(())
    }
}

enum Job {
    FromImage(&'static str),
    Clone(&'static str),
    FromSnapshot(&'static str),
}

const JOBS: [(&str, Job); 6] = [
    ("vol-1", Job::FromImage("img-A")),
    ("vol-2", Job::FromImage("img-A")),
    ("vol-3", Job::FromImage("img-B")),
    ("vol-4", Job::Clone("vol-src")),
    ("vol-5", Job::Clone("vol-src")),
    ("vol-6", Job::FromSnapshot("snap-1")),
];

async fn scenario(locks: Locks, mode: Mode) -> Result<Vec<String>, BoxError> {
    let driver = Arc::new(SolidFireDriver {
        locks,
        cluster: Cluster::new(&["img-A", "img-B", "vol-src", "snap-1"]),
    });
    let start = now_ms() + 5.0;
    let mut tasks = Vec::new();
    for (volume, job) in JOBS {
        let driver = Arc::clone(&driver);
        tasks.push(tokio::spawn(async move {
            until(start).await;
            let volume = Volume {
                id: volume.to_owned(),
            };
            let result = match (job, mode) {
                (Job::FromImage(i), Mode::Locked) => {
                    driver
                        .clone_image(&volume, &Image { id: i.to_owned() })
                        .await
                }
                (Job::FromImage(i), Mode::Unlocked) => {
                    driver
                        .clone_image_wo_lock(&volume, &Image { id: i.to_owned() })
                        .await
                }
                (Job::Clone(s), Mode::Locked) => {
                    driver
                        .create_cloned_volume(&volume, &Volume { id: s.to_owned() })
                        .await
                }
                (Job::FromSnapshot(s), Mode::Locked) => {
                    let snapshot = Snapshot { id: s.to_owned() };
                    driver.create_volume_from_snapshot(&volume, &snapshot).await
                }
                (Job::Clone(s) | Job::FromSnapshot(s), Mode::Unlocked) => {
                    driver.cluster.clone_volume(&volume.id, s, &volume.id).await
                }
            };
            if let Err(e) = &result {
                say(&volume.id, format!("failed: {e}"));
            }
            result.map_err(|e| format!("{}: {e}", volume.id))
        }));
    }
    let mut problems = Vec::new();
    for task in tasks {
        if let Err(e) = task.await? {
            problems.push(e);
        }
    }

    for (image, templates) in driver.cluster.templates().iter() {
        println!("   {image}: {} template volume(s)", templates.len());
        if templates.len() > 1 {
            problems.push(format!("{image} was downloaded {} times", templates.len()));
        }
    }
    for device in driver.cluster.resources.values() {
        problems.extend(device.report());
    }
    if mode.locked() {
        let r = &driver.cluster.resources;
        report_parallel(&r["img-A"], &r["img-B"]);
        report_parallel(&r["vol-src"], &r["snap-1"]);
    }
    Ok(problems)
}

#[tokio::main]
async fn main() -> ExitCode {
    locks_examples::run(
        "solidfire: SolidFire driver, `solidfire-{resource_id}` per image and per source",
        &["solidfire"],
        scenario,
    )
    .await
}
