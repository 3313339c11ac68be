//! The Redis section: our cycle against a raw `SET key token NX PX` and a
//! `DEL` from one connection (what redis-py's `Lock`, under tooz, sends at
//! the least).

use std::io::Write;
use std::path::Path;

use crate::server::{RoundTrips, Server, server_rows};
use crate::{
    BenchOptions, Ours, Plan, cycle, host_port, open_client, paired, row, say, unavailable,
};
use locks::{Result, Scope};

/// The lock timeout of the raw floor's `SET`, as tooz's default (30 s).
const RAW_PX_MS: u64 = 30_000;

/// redis-py's `Lock.release` script (`LUA_RELEASE_SCRIPT`, redis-py 8.2),
/// which tooz's redis driver runs to release.
const REDIS_PY_RELEASE: &str = "
local token = redis.call('get', KEYS[1])
if not token or token ~= ARGV[1] then
    return 0
end
redis.call('del', KEYS[1])
return 1
";

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
    // What tooz's redis driver sends for a cycle (redis-py's Lock): SET NX PX,
    // then its token-checked release script. The gap between this and the
    // floor is the scripts'; the gap between ours and this is ours (our
    // acquire script also counts the fence, our release also publishes).
    let release = ::redis::Script::new(REDIS_PY_RELEASE);
    let (recipe, ours_again) = paired(
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
            let _: i64 = release
                .key(&key)
                .arg(&token)
                .invoke_async(&mut raw)
                .await
                .map_err(|e| unavailable(format_args!("redis-py's release script: {e}")))?;
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
    let rows = server_rows(plan, opts, dir, &server, &floor, &ours, &rtt, out).await?;
    row(
        out,
        "cycle vs redis-py's Lock done raw (no target)",
        ours_again.p50(),
        &format!("recipe/floor={:.2}", recipe.p50() / floor.p50()),
        Some(recipe.p50()),
        None,
    )?;
    Ok(rows)
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
