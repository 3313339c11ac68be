//! Cross-process tests live in `tests/`; this crate holds what they share.
//!
//! - [`python_from_env`]: the Python interpreter of `ci/python.sh`, with the
//!   skip-or-fail rule of `locks_core::testing::server_from_env`.
//! - [`Peer`]: a running `tests/python/peer.py`, the Python side of the
//!   OpenStack interop tests, driven line by line.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError, channel};
use std::time::Duration;

/// The environment variable naming the Python of `ci/python.sh`.
pub const PYTHON_ENV: &str = "LOCKS_TEST_PYTHON";

/// The Python interpreter of the venv `ci/python.sh` makes (with
/// oslo.concurrency, tooz, etcd3gw and kazoo), from `$LOCKS_TEST_PYTHON`.
///
/// Without it the test is skipped with a printed notice, except when
/// `CI=true`: there it fails, so a suite that ran nothing cannot pass for one
/// that passed.
///
/// # Panics
/// When the variable is unset and `CI=true`.
pub fn python_from_env() -> Option<PathBuf> {
    locks_core::testing::server_from_env(PYTHON_ENV).map(PathBuf::from)
}

/// `tests/python/<script>`.
pub fn python_script(script: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script)
}

/// A running `tests/python/peer.py`: one lock taken through the real
/// OpenStack library, one command per line, one answer per line.
///
/// Dropping it kills the process (the OS then drops its locks; a tooz etcd
/// key goes with its lease).
#[derive(Debug)]
pub struct Peer {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    what: String,
}

impl Peer {
    /// Starts `peer.py MECH TARGET NAME` (see the script) with `env` added to
    /// its environment, and waits (up to 30 s) for `READY`.
    ///
    /// # Panics
    /// When Python cannot start or does not get ready.
    pub fn start(python: &Path, args: [&str; 3], env: &[(&str, &str)]) -> Peer {
        let what = format!("peer.py {}", args.join(" "));
        let mut command = Command::new(python);
        command
            .arg(python_script("peer.py"))
            .args(args)
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (k, v) in env {
            command.env(k, v);
        }
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("starting {} {what}: {e}", python.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        let mut peer = Peer {
            child,
            stdin,
            lines,
            what,
        };
        peer.expect("READY", Duration::from_secs(30));
        peer
    }

    /// Sends one command line.
    ///
    /// # Panics
    /// When the process is gone.
    pub fn send(&mut self, command: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{command}")
            .and_then(|()| stdin.flush())
            .unwrap_or_else(|e| panic!("{}: sending `{command}`: {e}", self.what));
    }

    /// The next answer, if one comes within `timeout`.
    ///
    /// # Panics
    /// When the process closed its output (it exited).
    pub fn next_line(&mut self, timeout: Duration) -> Option<String> {
        match self.lines.recv_timeout(timeout) {
            Ok(line) => Some(line),
            Err(RecvTimeoutError::Timeout) => None,
            Err(RecvTimeoutError::Disconnected) => {
                let status = self.child.wait();
                panic!("{} exited ({status:?})", self.what)
            }
        }
    }

    /// Waits up to `timeout` for the answer `want`.
    ///
    /// # Panics
    /// On any other answer, or none in time.
    pub fn expect(&mut self, want: &str, timeout: Duration) {
        match self.next_line(timeout) {
            Some(line) if line == want => {}
            Some(line) => panic!("{}: expected `{want}`, got `{line}`", self.what),
            None => panic!("{}: no `{want}` within {timeout:?}", self.what),
        }
    }

    /// Checks that nothing is answered for `period` (a blocked acquire).
    ///
    /// # Panics
    /// When an answer comes.
    pub fn expect_silence(&mut self, period: Duration) {
        if let Some(line) = self.next_line(period) {
            panic!(
                "{}: expected no answer for {period:?} (still waiting), got `{line}`",
                self.what
            );
        }
    }

    /// Sends `command` and waits up to `timeout` for the answer `want`.
    ///
    /// # Panics
    /// As [`send`](Self::send) and [`expect`](Self::expect).
    pub fn ask(&mut self, command: &str, want: &str, timeout: Duration) {
        self.send(command);
        self.expect(want, timeout);
    }

    /// Sends `quit` and waits for a clean exit.
    ///
    /// # Panics
    /// When the process fails.
    pub fn quit(mut self) {
        self.send("quit");
        drop(self.stdin.take());
        let status = self.child.wait().expect("wait for python");
        assert!(status.success(), "{} exited with {status}", self.what);
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        drop(self.stdin.take());
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
