//! The etcd section: our cycle against a raw put and delete from one client.

use std::io::Write;
use std::path::Path;

use crate::server::{RoundTrips, Server, server_rows};
use crate::{BenchOptions, Ours, Plan, cycle, open_client, paired, say, unavailable};
use locks::{Result, Scope};

pub(crate) async fn etcd(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    endpoint: &str,
    out: &mut (dyn Write + Send),
) -> Result<Ours> {
    say(out, format_args!("\n[etcd {endpoint}]"))?;
    let url = format!("etcd://{endpoint}");
    let locks = open_client(dir, Some(&url)).await?;
    let mut raw = etcd_client::Client::connect([format!("http://{endpoint}")], None)
        .await
        .map_err(|e| unavailable(format_args!("raw etcd client: {e}")))?;
    let mut raw2 = raw.clone();
    let key = format!("locks-bench-raw-{}", std::process::id());
    let (floor, ours) = paired(
        plan.rounds,
        plan.server_batch,
        async |_| {
            raw.put(key.as_str(), "x", None)
                .await
                .map_err(|e| unavailable(format_args!("etcd put: {e}")))?;
            raw.delete(key.as_str(), None)
                .await
                .map_err(|e| unavailable(format_args!("etcd delete: {e}")))?;
            Ok(())
        },
        async |_| cycle(&locks, Scope::Global, "bench-etcd").await,
    )
    .await?;
    let mut rtt = RoundTrips::default();
    for i in 0..plan.server_handoffs * 2 {
        let t = rtt.start(i).await;
        raw2.put(key.as_str(), "x", None)
            .await
            .map_err(|e| unavailable(format_args!("etcd put: {e}")))?;
        rtt.record(i, t);
    }
    let _ = raw2.delete(key.as_str(), None).await;
    let server = Server {
        locks: &locks,
        url: &url,
        name: "bench-etcd-handoff",
        cycle_label: "cycle vs raw put+delete",
        held_in: "lease",
    };
    server_rows(plan, opts, dir, &server, &floor, &ours, &rtt, out).await
}
