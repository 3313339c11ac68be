//! Driving the `locks` binary from tests: a child with its stdout lines on a
//! channel, one-shot runs, and the binary with a given configuration.
#![allow(dead_code, unreachable_pub)]

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The `locks` binary with `--config config` and no `$LOCKS_CONFIG`.
pub fn locks(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_locks"));
    cmd.env_remove("LOCKS_CONFIG").arg("--config").arg(config);
    cmd
}

/// A child whose stdout lines arrive on a channel; killed on drop.
pub struct Running {
    pub child: Child,
    pub lines: mpsc::Receiver<String>,
}

impl Running {
    pub fn start(mut cmd: Command) -> Running {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running { child, lines }
    }

    pub fn expect_line(&self, prefix: &str) -> String {
        self.expect_line_within(prefix, Duration::from_secs(20))
    }

    /// The next stdout line starting with `prefix`, skipping others; panics
    /// if none comes within `limit`.
    pub fn expect_line_within(&self, prefix: &str, limit: Duration) -> String {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => continue,
                Err(e) => panic!("no line starting with {prefix:?} within {limit:?}: {e}"),
            }
        }
    }

    pub fn wait(mut self) -> i32 {
        let status = self.child.wait().expect("wait");
        status.code().unwrap_or(-1)
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn output(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().expect("run locks");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
