//! The memory section: the memory backend against a raw `tokio::sync::Mutex`.

use std::io::Write;
use std::path::Path;

use crate::{Plan, open_client, paired, row, say};
use locks::{Result, Scope, Wait};

pub(crate) async fn memory(plan: &Plan, dir: &Path, out: &mut (dyn Write + Send)) -> Result<()> {
    say(out, "\n[memory]")?;
    let locks = open_client(dir, None).await?;
    let raw = tokio::sync::Mutex::new(0u64);
    let (floor, ours) = paired(
        plan.rounds,
        plan.mem_batch,
        async |_| {
            let mut g = raw.lock().await;
            *g = std::hint::black_box(*g + 1);
            drop(g);
            Ok(())
        },
        async |_| {
            let g = locks
                .lock_name(Scope::Process, "bench-memory", Wait::Forever)
                .await?;
            g.release().await
        },
    )
    .await?;
    row(
        out,
        "cycle vs raw tokio::sync::Mutex cycle",
        ours.p50(),
        &format!("p99={:.2}", ours.p99()),
        Some(floor.p50()),
        Some(2.0),
    )?;

    let backend = locks.backend(Scope::Process).clone();
    let request = locks.raw_request(Scope::Process, "bench-memory-direct")?;
    let (floor2, direct) = paired(
        plan.rounds,
        plan.mem_batch,
        async |_| {
            let mut g = raw.lock().await;
            *g = std::hint::black_box(*g + 1);
            drop(g);
            Ok(())
        },
        async |_| backend.acquire(&request).await?.release().await,
    )
    .await?;
    row(
        out,
        "backend alone (no facade), same request",
        direct.p50(),
        "",
        Some(floor2.p50()),
        None,
    )?;

    // Metrics are opt-in (`metrics = true`): what opting in costs a cycle
    // when no recorder is installed (a clock read and a handle lookup).
    let node = format!("file://{}", dir.display());
    let metered = locks::Locks::open(locks::Config {
        backends: locks::BackendUrls {
            process: Some("memory://".to_owned()),
            node: Some(node.clone()),
            global: Some(node),
        },
        metrics: true,
        ..locks::Config::default()
    })
    .await?;
    let (plain, with_metrics) = paired(
        plan.rounds,
        plan.mem_batch,
        async |_| {
            let g = locks
                .lock_name(Scope::Process, "bench-memory-plain", Wait::Forever)
                .await?;
            g.release().await
        },
        async |_| {
            let g = metered
                .lock_name(Scope::Process, "bench-memory-metered", Wait::Forever)
                .await?;
            g.release().await
        },
    )
    .await?;
    row(
        out,
        "cycle, metrics = true (no recorder) vs off",
        with_metrics.p50(),
        "",
        Some(plain.p50()),
        None,
    )?;

    // Distinct names: each name once, so every cycle creates and drops a table entry.
    let names: Vec<String> = (0..plan.mem_names)
        .map(|i| format!("bench-memory-{i}"))
        .collect();
    let per_batch = plan.mem_names / (2 * plan.rounds);
    let mut floor_table: std::collections::HashMap<String, std::sync::Arc<tokio::sync::Mutex<()>>> =
        std::collections::HashMap::new();
    let (floor3, distinct) = paired(
        plan.rounds,
        per_batch,
        async |i| {
            // The raw equivalent: a mutex per name in a map, removed after use.
            let name = &names[i % names.len()];
            let m = floor_table
                .entry(name.clone())
                .or_insert_with(|| std::sync::Arc::new(tokio::sync::Mutex::new(())))
                .clone();
            drop(m.lock().await);
            floor_table.remove(name);
            Ok(())
        },
        async |i| {
            let name = &names[i % names.len()];
            locks
                .lock_name(Scope::Process, name, Wait::Forever)
                .await?
                .release()
                .await
        },
    )
    .await?;
    row(
        out,
        &format!("{} distinct names vs raw mutex cycle", plan.mem_names),
        distinct.p50(),
        &format!("map+mutex={:.2}", floor3.p50()),
        Some(floor.p50()),
        Some(2.0),
    )?;
    Ok(())
}
