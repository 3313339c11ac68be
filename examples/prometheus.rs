//! Lock metrics for Prometheus: a client opened with `metrics = true` records
//! acquires by outcome, wait and hold times and the locks held, labelled by
//! catalog id, scope and backend, through the `metrics` crate; here
//! `metrics-exporter-prometheus` renders them.
//!
//! ```text
//! cargo run --example prometheus                            # print one scrape
//! cargo run --example prometheus -- --listen 127.0.0.1:9464 # serve /metrics, Ctrl-C ends
//! ```
//!
//! Install the recorder before opening the client: the client registers its
//! metric handles on first use and keeps them.

use std::time::Duration;

use locks::{Config, Locks, Params, Wait};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

/// Four tasks take SolidFire's volume lock in turn, and one try-once finds it held.
async fn contend() -> locks::Result<()> {
    let mut config = Config::discover(None)?;
    config.metrics = true;
    let locks = Locks::open(config).await?;
    let params = Params::new().with("resource_id", "vol-7");
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (locks, params) = (locks.clone(), params.clone());
        tasks.push(tokio::spawn(async move {
            let guard = locks.lock("solidfire", &params).await?;
            tokio::time::sleep(Duration::from_millis(5)).await;
            guard.release().await
        }));
    }
    let held = locks
        .lock("solidfire", &params.clone().with("resource_id", "vol-8"))
        .await?;
    // Another task tries vol-8 once: held, so `would_block` (this task
    // asking again would be `would_deadlock`).
    let other = locks.clone();
    let vol8 = params.with("resource_id", "vol-8");
    let busy =
        tokio::spawn(async move { other.lock_with("solidfire", &vol8, Wait::TryOnce).await });
    assert!(busy.await.expect("task").is_err(), "vol-8 is held");
    for task in tasks {
        task.await.expect("task")?;
    }
    held.release().await
}

/// The scrape's lines about locks.
fn locks_lines(handle: &PrometheusHandle) -> String {
    handle
        .render()
        .lines()
        .filter(|l| l.starts_with("locks_") || l.starts_with("# TYPE locks_"))
        .map(|l| format!("{l}\n"))
        .collect()
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let listen = match args.as_slice() {
        [] => None,
        [flag, addr] if flag == "--listen" => Some(addr.parse::<std::net::SocketAddr>()?),
        _ => {
            eprintln!("usage: prometheus [--listen ADDR]");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let handle = runtime.block_on(async {
        match listen {
            Some(addr) => {
                PrometheusBuilder::new()
                    .with_http_listener(addr)
                    .install()?;
                Ok::<_, Box<dyn std::error::Error>>(None)
            }
            None => Ok(Some(PrometheusBuilder::new().install_recorder()?)),
        }
    })?;
    runtime.block_on(contend())?;
    match handle {
        Some(handle) => print!("{}", locks_lines(&handle)),
        None => {
            eprintln!(
                "serving http://{}/metrics; Ctrl-C ends",
                listen.expect("listening")
            );
            runtime.block_on(tokio::signal::ctrl_c())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scrape_counts_every_acquire_by_outcome() {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        metrics::with_local_recorder(&recorder, || {
            // One thread: the local recorder is this thread's.
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(contend())
        })
        .expect("contend");
        let scrape = locks_lines(&handle);
        let labels = r#"id="solidfire",scope="process",backend="memory""#;
        for line in [
            format!(r#"locks_acquires_total{{{labels},outcome="acquired"}} 5"#),
            format!(r#"locks_acquires_total{{{labels},outcome="would_block"}} 1"#),
            format!(r#"locks_held{{{labels}}} 0"#),
            format!(r#"locks_hold_seconds_count{{{labels}}} 5"#),
        ] {
            assert!(
                scrape.lines().any(|l| l == line),
                "no `{line}` in:\n{scrape}"
            );
        }
    }
}
