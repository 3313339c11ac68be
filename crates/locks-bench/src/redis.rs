//! The Redis section: our cycle against a raw `SET key token NX PX` and a
//! `DEL` from one connection (what redis-py's `Lock`, under tooz, sends at
//! the least).

use std::io::Write;
use std::path::Path;

use crate::server::{RoundTrips, Server, server_rows};
use crate::{BenchOptions, Ours, Plan, cycle, host_port, open_client, paired, say, unavailable};
use locks::{Result, Scope};

/// The lock timeout of the raw floor's `SET`, as tooz's default (30 s).
const RAW_PX_MS: u64 = 30_000;

pub(crate) async fn redis(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    url: &str,
    out: &mut (dyn Write + Send),
) -> Result<Ours> {
    let address = host_port(url.split_once("://").map_or(url, |(_, rest)| rest));
    // The header names the server only: the URL may carry a password.
    say(out, format_args!("\n[redis {address}]"))?;
    let locks = open_client(dir, Some(url)).await?;
    let client = ::redis::Client::open(url)
        .map_err(|e| unavailable(format_args!("raw Redis client for {address}: {e}")))?;
    let mut raw = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| unavailable(format_args!("raw Redis connection to {address}: {e}")))?;
    let mut raw2 = raw.clone();
    let key = format!("locks-bench-raw-{}", std::process::id());
    let token = format!("locks-bench-raw-token-{}", crate::monotonic_ns());
    let (floor, ours) = paired(
        plan.rounds,
        plan.server_batch,
        async |_| {
            let set: Option<String> = ::redis::cmd("SET")
                .arg(&key)
                .arg(&token)
                .arg("NX")
                .arg("PX")
                .arg(RAW_PX_MS)
                .query_async(&mut raw)
                .await
                .map_err(|e| unavailable(format_args!("Redis SET NX PX: {e}")))?;
            if set.is_none() {
                return Err(unavailable(format_args!("raw key {key} was not free")));
            }
            let _: i64 = ::redis::cmd("DEL")
                .arg(&key)
                .query_async(&mut raw)
                .await
                .map_err(|e| unavailable(format_args!("Redis DEL: {e}")))?;
            Ok(())
        },
        async |_| cycle(&locks, Scope::Global, "bench-redis").await,
    )
    .await?;
    // One write round trip (a SET), back to back and after the handoff's idle pause.
    let mut rtt = RoundTrips::default();
    for i in 0..plan.server_handoffs * 2 {
        let t = rtt.start(i).await;
        let _: () = ::redis::cmd("SET")
            .arg(&key)
            .arg(&token)
            .arg("PX")
            .arg(RAW_PX_MS)
            .query_async(&mut raw2)
            .await
            .map_err(|e| unavailable(format_args!("Redis SET: {e}")))?;
        rtt.record(i, t);
    }
    let _: ::redis::RedisResult<i64> = ::redis::cmd("DEL").arg(&key).query_async(&mut raw2).await;
    let server = Server {
        locks: &locks,
        url,
        name: "bench-redis-handoff",
        cycle_label: "cycle vs raw SET NX PX+DEL",
        held_in: "connection",
    };
    server_rows(plan, opts, dir, &server, &floor, &ours, &rtt, out).await
}

/// A `redis://` or `rediss://` URL without its path and query: the server
/// and credentials only, which both our client and the raw one read alike.
pub(crate) fn server_url(url: &str) -> Option<String> {
    let (scheme, rest) = url.split_once("://")?;
    if scheme != "redis" && scheme != "rediss" {
        return None;
    }
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    Some(format!("{scheme}://{}", &rest[..end]))
}
