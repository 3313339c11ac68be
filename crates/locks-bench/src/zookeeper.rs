//! The ZooKeeper section: our cycle against a raw create and delete.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use crate::server::{RoundTrips, Server, server_rows};
use crate::{BenchOptions, Ours, Plan, cycle, open_client, paired, row, say, unavailable};
use locks::{Result, Scope};

pub(crate) async fn zookeeper(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    endpoint: &str,
    out: &mut (dyn Write + Send),
) -> Result<Ours> {
    use zookeeper_client as zk;
    say(out, format_args!("\n[zookeeper {endpoint}]"))?;
    let url = format!("zookeeper://{endpoint}/locks-bench");
    let locks = open_client(dir, Some(&url)).await?;
    let raw = zk::Client::connect(endpoint)
        .await
        .map_err(|e| unavailable(format_args!("raw ZooKeeper client: {e}")))?;
    let path = format!("/locks-bench-raw-{}", std::process::id());
    let create = zk::CreateMode::Ephemeral.with_acls(zk::Acls::anyone_all());
    // ZooKeeper runs on a JVM: a server started moments ago (as by
    // ci/bench.sh) serves each kind of request interpreted until the JIT has
    // seen it often enough, and the kinds a lock uses (sequential create,
    // listing) warm up later than the floor's. Exercise both first.
    let warm_until = Instant::now() + plan.jvm_warmup;
    while Instant::now() < warm_until {
        raw.create(&path, b"x", &create)
            .await
            .map_err(|e| unavailable(format_args!("ZooKeeper create: {e}")))?;
        raw.delete(&path, None)
            .await
            .map_err(|e| unavailable(format_args!("ZooKeeper delete: {e}")))?;
        cycle(&locks, Scope::Global, "bench-zk").await?;
    }
    let (floor, ours) = paired(
        plan.rounds,
        plan.server_batch,
        async |_| {
            raw.create(&path, b"x", &create)
                .await
                .map_err(|e| unavailable(format_args!("ZooKeeper create: {e}")))?;
            raw.delete(&path, None)
                .await
                .map_err(|e| unavailable(format_args!("ZooKeeper delete: {e}")))?;
            Ok(())
        },
        async |_| cycle(&locks, Scope::Global, "bench-zk").await,
    )
    .await?;
    // The lock recipe of kazoo (which ours follows, node for node) done with
    // raw calls: a sequential create with a holder identity and the listing
    // of the directory in one round trip, then the delete. The gap between
    // this and the floor is the recipe's; the gap between ours and this is
    // ours.
    let recipe_dir = format!("/locks-bench-recipe-{}", std::process::id());
    let recipe_node = format!("{recipe_dir}/{}__lock__", "0".repeat(32));
    let sequential = zk::CreateMode::EphemeralSequential.with_acls(zk::Acls::anyone_all());
    let persistent = zk::CreateMode::Persistent.with_acls(zk::Acls::anyone_all());
    raw.mkdir(&recipe_dir, &persistent)
        .await
        .map_err(|e| unavailable(format_args!("ZooKeeper mkdir: {e}")))?;
    let identity = vec![b'h'; 48];
    let (recipe, ours_again) = paired(
        plan.rounds,
        plan.server_batch,
        async |_| {
            let create = raw.create(&recipe_node, &identity, &sequential);
            let list = raw.list_children(&recipe_dir);
            let (created, listed) = tokio::join!(create, list);
            let (_, sequence) =
                created.map_err(|e| unavailable(format_args!("ZooKeeper create: {e}")))?;
            listed.map_err(|e| unavailable(format_args!("ZooKeeper list: {e}")))?;
            raw.delete(&format!("{recipe_node}{sequence}"), None)
                .await
                .map_err(|e| unavailable(format_args!("ZooKeeper delete: {e}")))
        },
        async |_| cycle(&locks, Scope::Global, "bench-zk").await,
    )
    .await?;
    let _ = raw.delete(&recipe_dir, None).await;
    let mut rtt = RoundTrips::default();
    for i in 0..plan.server_handoffs * 2 {
        let t = rtt.start(i).await;
        raw.create(&path, b"x", &create)
            .await
            .map_err(|e| unavailable(format_args!("ZooKeeper create: {e}")))?;
        rtt.record(i, t);
        raw.delete(&path, None)
            .await
            .map_err(|e| unavailable(format_args!("ZooKeeper delete: {e}")))?;
    }
    let server = Server {
        locks: &locks,
        url: &url,
        name: "bench-zk-handoff",
        cycle_label: "cycle vs raw create+delete",
        held_in: "session",
    };
    let rows = server_rows(plan, opts, dir, &server, &floor, &ours, &rtt, out).await?;
    row(
        out,
        "cycle vs kazoo's recipe done raw (no target)",
        ours_again.p50(),
        &format!("recipe/floor={:.2}", recipe.p50() / floor.p50()),
        Some(recipe.p50()),
        None,
    )?;
    Ok(rows)
}
