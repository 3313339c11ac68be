//! Interoperability with Python kazoo's `Lock` (what OpenStack tooz uses),
//! both ways. Runs when `LOCKS_TEST_ZK` is set and a Python with kazoo is
//! found: `LOCKS_TEST_PYTHON` (the virtual environment ci/python.sh makes).
//! Skipped without it, except under `CI=true`, where that is a failure.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::{config, connect, name, server};
use locks_core::{Backend, ErrorKind, LockRequest, Scope, Wait, acquire};

const SCRIPT: &str = r#"
import sys
from kazoo.client import KazooClient
from kazoo.exceptions import LockTimeout
hosts, path, mode = sys.argv[1], sys.argv[2], sys.argv[3]
zk = KazooClient(hosts=hosts)
zk.start(timeout=10)
lock = zk.Lock(path, "kazoo-test")
if mode == "probe":
    print("contenders=" + "|".join(lock.contenders()), flush=True)
    try:
        got = lock.acquire(timeout=float(sys.argv[4]))
    except LockTimeout:
        got = False
    print("acquired" if got else "timeout", flush=True)
    if got:
        lock.release()
else:
    lock.acquire()
    print("held", flush=True)
    sys.stdin.readline()
    lock.release()
    print("released", flush=True)
zk.stop()
"#;

/// A Python that imports kazoo, or `None` (with a notice) to skip.
fn python() -> Option<String> {
    // The interpreter of ci/python.sh's virtual environment, which has kazoo:
    // skipped without it, a failure under CI=true.
    locks_core::testing::server_from_env("LOCKS_TEST_PYTHON")
}

fn kazoo(python: &str, args: &[&str]) -> Child {
    Command::new(python)
        .arg("-c")
        .arg(SCRIPT)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start python")
}

fn read_line(child: &mut Child) -> String {
    let mut line = String::new();
    BufReader::new(child.stdout.as_mut().expect("piped stdout"))
        .read_line(&mut line)
        .expect("read from python");
    line.trim().to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kazoo_waits_for_us_and_we_wait_for_kazoo() {
    let Some(addr) = server() else { return };
    let Some(python) = python() else { return };
    let backend = connect(config(&addr, "kazoo")).await;
    let lock = name("interop");
    let dir = backend.lock_dir(&lock).unwrap();
    let request = LockRequest::new(lock, Scope::Global).label("rust-side");

    // We hold: kazoo sees our holder identity and times out.
    let guard = backend
        .acquire(&request.clone().wait(Wait::TryOnce))
        .await
        .unwrap();
    let (python2, addr2, dir2) = (python.clone(), addr.clone(), dir.clone());
    let probe = tokio::task::spawn_blocking(move || {
        let mut child = kazoo(&python2, &[&addr2, &dir2, "probe", "0.5"]);
        let lines = (read_line(&mut child), read_line(&mut child));
        let _ = child.wait();
        lines
    })
    .await
    .unwrap();
    assert_eq!(probe.0, format!("contenders={}", request.holder_identity()));
    assert_eq!(probe.1, "timeout");
    guard.release().await.unwrap();

    // Released: kazoo gets it.
    let (python2, addr2, dir2) = (python.clone(), addr.clone(), dir.clone());
    let probe = tokio::task::spawn_blocking(move || {
        let mut child = kazoo(&python2, &[&addr2, &dir2, "probe", "5"]);
        let lines = (read_line(&mut child), read_line(&mut child));
        let _ = child.wait();
        lines
    })
    .await
    .unwrap();
    assert_eq!(probe, ("contenders=".to_owned(), "acquired".to_owned()));

    // kazoo holds: we cannot try, and get it once kazoo releases.
    let (python2, addr2, dir2) = (python.clone(), addr.clone(), dir.clone());
    let mut holder = tokio::task::spawn_blocking(move || {
        let mut child = kazoo(&python2, &[&addr2, &dir2, "hold"]);
        assert_eq!(read_line(&mut child), "held");
        child
    })
    .await
    .unwrap();
    let err = backend
        .acquire(&request.clone().wait(Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    let waiter = {
        let (backend, request) = (backend.clone(), request.clone());
        tokio::spawn(async move {
            acquire(
                &backend,
                &request.wait(Wait::Timeout(Duration::from_secs(10))),
            )
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!waiter.is_finished(), "kazoo's holder blocks us");
    let released = tokio::task::spawn_blocking(move || {
        let stdin = holder.stdin.as_mut().expect("piped stdin");
        stdin.write_all(b"\n").expect("write to python");
        stdin.flush().expect("flush");
        let line = read_line(&mut holder);
        let _ = holder.wait();
        line
    })
    .await
    .unwrap();
    assert_eq!(released, "released");
    let guard = waiter.await.unwrap().unwrap();
    guard.release().await.unwrap();
}
