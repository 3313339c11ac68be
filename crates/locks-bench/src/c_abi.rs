//! The C ABI section: a memory cycle from C (`c_loop.c`) against the same
//! cycle through `BlockingLocks` in Rust.

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use locks::{Config, Error, ErrorKind, Result, Scope, Wait};
use tokio::process::Command;

use crate::stats::Dist;
use crate::{BenchOptions, C_LOOP, Plan, io_err, row, say};

pub(crate) async fn c_abi(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    out: &mut (dyn Write + Send),
) -> Result<()> {
    say(out, "\n[C ABI]")?;
    let Some((header, libdir)) = &opts.ffi else {
        return say(
            out,
            "  skipped: C ABI not built (needs include/locks.h and liblocks_ffi.a next to the locks binary: cargo build --release -p locks-ffi)",
        );
    };
    let src = dir.join("c_loop.c");
    let exe = dir.join("c_loop");
    std::fs::write(&src, C_LOOP).map_err(io_err("writing the C loop"))?;
    let include = header.parent().unwrap_or(Path::new("."));
    let status = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-I")
        .arg(include)
        .arg(libdir.join("liblocks_ffi.a"))
        .args(["-lpthread", "-ldl", "-lm"])
        .status()
        .await;
    match status {
        Ok(s) if s.success() => {}
        _ => return say(out, "  skipped: compiling the C loop with `cc` failed"),
    }
    let toml = format!(
        "[backends]\nprocess = \"memory://\"\nnode = \"file://{d}\"\nglobal = \"file://{d}\"\n",
        d = dir.display()
    );
    let batch = plan.mem_batch / 4;
    let mut c = Dist::default();
    let mut rust = Dist::default();
    for _ in 0..plan.rounds.div_ceil(2) {
        let output = Command::new(&exe)
            .arg(&toml)
            .arg(batch.to_string())
            .arg("2")
            .output()
            .await
            .map_err(io_err("running the C loop"))?;
        if !output.status.success() {
            return say(
                out,
                format_args!(
                    "  skipped: the C loop failed: {}",
                    String::from_utf8_lossy(&output.stderr).trim()
                ),
            );
        }
        for l in String::from_utf8_lossy(&output.stdout).lines() {
            if let Ok(ns) = l.trim().parse::<f64>() {
                c.push(ns / 1e3);
            }
        }
        let config = Config::from_toml_str(&toml, dir, "bench")?;
        // A thread of its own: BlockingLocks refuses to run inside a runtime.
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let _ = tx.send((|| -> Result<Vec<f64>> {
                let blocking = locks::BlockingLocks::open(config)?;
                let mut means = Vec::new();
                for b in 0..3 {
                    let start = Instant::now();
                    for _ in 0..batch {
                        let g = blocking.lock_name(Scope::Process, "bench-ffi", Wait::Forever)?;
                        blocking.release(g)?;
                    }
                    if b > 0 {
                        means.push(start.elapsed().as_secs_f64() * 1e6 / batch as f64);
                    }
                }
                Ok(means)
            })());
        });
        let r = rx
            .await
            .map_err(|e| Error::new(ErrorKind::Internal, e.to_string()))??;
        for m in r {
            rust.push(m);
        }
    }
    row(
        out,
        "memory cycle from C vs Rust (BlockingLocks)",
        c.p50(),
        "",
        Some(rust.p50()),
        Some(1.1),
    )
}
