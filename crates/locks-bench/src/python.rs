//! The Python section: ours against oslo.concurrency and tooz (`python/anchors.py`).

use std::io::Write;
use std::path::Path;

use crate::{BenchOptions, Ours, PYTHON_ANCHORS, Plan, io_err, row, say};
use locks::Result;
use tokio::process::Command;

pub(crate) async fn python(
    plan: &Plan,
    opts: &BenchOptions,
    dir: &Path,
    ours: &[(&str, Ours)],
    out: &mut (dyn Write + Send),
) -> Result<()> {
    say(out, "\n[python anchors: ours / theirs on the same server]")?;
    let Some(py) = &opts.python else {
        return say(
            out,
            "  skipped: set LOCKS_TEST_PYTHON to a Python with oslo.concurrency, tooz, etcd3gw, kazoo and redis",
        );
    };
    let script = dir.join("anchors.py");
    std::fs::write(&script, PYTHON_ANCHORS).map_err(io_err("writing the Python script"))?;
    let get = |k: &str| ours.iter().find(|(n, _)| *n == k).map(|(_, v)| *v);
    let pydir = dir.join("python-locks");
    std::fs::create_dir_all(&pydir).map_err(io_err("creating the Python lock dir"))?;
    // Python's own floor under oslo's lock, for context: lockf on a file opened once.
    if let Some(file) = get("file") {
        let output = Command::new(py)
            .arg(&script)
            .args(["lockf", &pydir.display().to_string()])
            .arg((plan.python_iters * 10).to_string())
            .output()
            .await
            .map_err(io_err("running the Python anchors"))?;
        let label = "file cycle vs Python's raw fcntl.lockf (no target)";
        match String::from_utf8_lossy(&output.stdout)
            .trim()
            .parse::<f64>()
        {
            Ok(theirs) if output.status.success() => {
                row(out, label, file.cycle, "", Some(theirs), None)?
            }
            _ => say(
                out,
                format_args!("  {label:<46} skipped: the lockf loop failed"),
            )?,
        }
    }
    let mut cases: Vec<(&str, String, &str)> = vec![
        ("oslo-external", pydir.display().to_string(), "file"),
        ("tooz", format!("file://{}", pydir.display()), "file"),
    ];
    if let Some(ep) = &opts.etcd {
        cases.push(("tooz", format!("etcd3+http://{ep}"), "etcd"));
    }
    if let Some(ep) = &opts.zookeeper {
        cases.push(("tooz", format!("zookeeper://{ep}"), "zookeeper"));
    }
    if let Some(url) = &opts.redis {
        // tooz's redis driver on the very server ours used (redis-py's Lock:
        // SET NX PX, a blocking acquire re-trying every 100 ms).
        cases.push(("tooz", url.clone(), "redis"));
    }
    for (kind, target, backend) in cases {
        let Some(our) = get(backend) else { continue };
        for handoff in [false, true] {
            let iters = if backend == "file" {
                plan.python_iters * 10
            } else {
                plan.python_iters
            };
            let mut cmd = Command::new(py);
            cmd.arg(&script);
            if handoff {
                // tooz on etcd polls once a second: few rounds are plenty.
                let rounds = match (backend, opts.quick) {
                    ("etcd", true) => 2,
                    ("etcd", false) => 5,
                    (_, true) => 5,
                    (_, false) => 15,
                };
                cmd.args(["handoff", kind, &target]).arg(rounds.to_string());
            } else {
                cmd.args([kind, &target]).arg(iters.to_string());
            }
            let output = cmd
                .output()
                .await
                .map_err(io_err("running the Python anchors"))?;
            let (what, our) = if handoff {
                ("handoff", our.handoff)
            } else {
                ("cycle", our.cycle)
            };
            let label = format!("{backend} {what} vs {kind} {}", scheme_of(&target));
            let text = String::from_utf8_lossy(&output.stdout);
            match text.trim().parse::<f64>() {
                Ok(theirs) if output.status.success() => {
                    let speedup = format!("speedup={:.1}x", theirs / our);
                    row(out, &label, our, &speedup, Some(theirs), Some(0.1))?;
                }
                _ => say(
                    out,
                    format_args!(
                        "  {label:<46} skipped: {}",
                        String::from_utf8_lossy(&output.stderr)
                            .lines()
                            .last()
                            .unwrap_or("no output")
                    ),
                )?,
            }
        }
    }
    Ok(())
}

pub(crate) fn scheme_of(target: &str) -> &str {
    target.split_once("://").map_or("(lock_path)", |(s, _)| s)
}
