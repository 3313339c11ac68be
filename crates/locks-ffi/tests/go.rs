//! The Go package (crates/locks-ffi/go) and the Go driver example
//! (examples/go), built with cgo against include/locks.h and the static
//! library. Under `CI=true` a missing `go` is a failure.

mod common;

use std::ffi::CString;
use std::process::Command;
use std::ptr::null_mut;
use std::time::Duration;

use common::*;
use locks_ffi::*;

const LIMIT: Duration = Duration::from_secs(600);

/// The package links the installed library through pkg-config (the static
/// archive with `-tags locks_static`), whose files list the system libraries
/// of native-static-libs.txt for static links.
#[test]
fn go_package_links_through_pkg_config() {
    let go_dir = workspace().join("crates/locks-ffi/go");
    for (file, tag, package) in [
        ("link_shared.go", "//go:build !locks_static", "locks"),
        ("link_static.go", "//go:build locks_static", "locks-static"),
    ] {
        let source = std::fs::read_to_string(go_dir.join(file)).unwrap();
        assert!(source.starts_with(tag), "{file} starts with `{tag}`");
        assert!(
            source.contains(&format!("// #cgo pkg-config: {package}\n")),
            "{file} links through `#cgo pkg-config: {package}`"
        );
    }
    for file in std::fs::read_dir(&go_dir).unwrap() {
        let source = std::fs::read_to_string(file.unwrap().path()).unwrap_or_default();
        assert!(
            !source.contains("#cgo LDFLAGS"),
            "and names no libraries itself"
        );
    }
    let static_libs = pkg_config(&["--libs-only-l", "locks-static"]);
    for lib in native_static_libs() {
        assert!(
            static_libs.iter().any(|l| l == lib),
            "locks-static.pc lacks {lib}: {static_libs:?}"
        );
    }
    let private = pkg_config(&["--static", "--libs-only-l"]);
    for lib in native_static_libs() {
        assert!(
            private.iter().any(|l| l == lib),
            "locks.pc's Libs.private lacks {lib}: {private:?}"
        );
    }
}

#[test]
fn go_test_passes() {
    if !have("go", "apt-get install golang-go") {
        return;
    }
    let ran = run(
        &mut go(
            &["test", "-count=1", "./..."],
            &workspace().join("crates/locks-ffi/go"),
        ),
        LIMIT,
    );
    assert_eq!(ran.code(), 0, "go test:\n{}\n{}", ran.stdout, ran.stderr);
    for dir in ["crates/locks-ffi/go", "examples/go"] {
        let ran = run(&mut go(&["vet", "./..."], &workspace().join(dir)), LIMIT);
        assert_eq!(ran.code(), 0, "go vet {dir}:\n{}", ran.stderr);
    }
}

/// `Guard.Context()` ends when an etcd lease really expires: the Go test
/// holds a lock through a fault proxy and, when it is ready, connects to a
/// listener here that partitions the proxy.
#[test]
fn go_guard_context_ends_on_loss() {
    let Some(etcd) = server("LOCKS_TEST_ETCD") else {
        return;
    };
    if !have("go", "apt-get install golang-go") {
        return;
    }
    let proxy = locks_fault_proxy::FaultProxy::start(etcd.parse().unwrap()).unwrap();
    let partition = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let partition_addr = partition.local_addr().unwrap();
    std::thread::scope(|s| {
        s.spawn(|| {
            // One connection from the test; a second, from this thread's
            // own wake-up below, ends it when the test did not connect.
            if let Ok((conn, _)) = partition.accept() {
                proxy.set(locks_fault_proxy::Fault::Blackhole);
                drop(conn);
            }
        });
        let mut cmd = go(
            &[
                "test",
                "-count=1",
                "-v",
                "-run",
                "^TestContextEndsOnLoss$",
                ".",
            ],
            &workspace().join("crates/locks-ffi/go"),
        );
        cmd.env("LOCKS_TEST_GO_ETCD_PROXY", proxy.addr().to_string())
            .env("LOCKS_TEST_GO_PARTITION", partition_addr.to_string());
        let ran = run(&mut cmd, LIMIT);
        let _ = std::net::TcpStream::connect(partition_addr);
        assert_eq!(ran.code(), 0, "go test:\n{}\n{}", ran.stdout, ran.stderr);
        assert!(
            ran.stdout.contains("--- PASS: TestContextEndsOnLoss"),
            "the test ran, not skipped:\n{}",
            ran.stdout
        );
    });
    proxy.set(locks_fault_proxy::Fault::Pass);
}

#[test]
fn go_driver_example_runs() {
    if !have("go", "apt-get install golang-go") {
        return;
    }
    let driver = build_go_example("infinidat");
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut cmd = Command::new(&driver);
    cmd.arg("-config")
        .arg(&config)
        .args(["-address", "10.0.0.1"]);
    let ran = run(&mut cmd, LIMIT);
    assert_eq!(ran.code(), 0, "{ran:?}");
    for expected in [
        "template infinidat-{management_address}-lock, scope global, parameters [management_address]",
        "locked infinidat-10.0.0.1-lock",
        "with fencing token ",
        "released infinidat-10.0.0.1-lock",
    ] {
        assert!(ran.stdout.contains(expected), "{expected:?} in {ran:?}");
    }

    // Held by this process through the C ABI: the driver's deadline ends its wait.
    let path = CString::new(config.to_str().unwrap()).unwrap();
    let (key, value) = (c"management_address", c"10.0.0.1");
    let (mut client, mut guard) = (null_mut(), null_mut());
    // SAFETY: valid arguments; the handles are freed below.
    unsafe {
        assert_eq!(
            locks_client_open_file(path.as_ptr(), &mut client, null_mut()),
            locks_status::Ok
        );
        assert_eq!(
            locks_client_lock(
                client,
                c"infinidat".as_ptr(),
                &key.as_ptr(),
                &value.as_ptr(),
                1,
                0,
                &mut guard,
                null_mut()
            ),
            locks_status::Ok
        );
    }
    let mut cmd = Command::new(&driver);
    cmd.arg("-config")
        .arg(&config)
        .args(["-address", "10.0.0.1", "-timeout", "300ms"]);
    let ran = run(&mut cmd, LIMIT);
    // SAFETY: live handles, freed once.
    unsafe {
        locks_guard_free(guard);
        locks_client_free(client);
    }
    assert_eq!(ran.code(), 75, "{ran:?}");
    assert!(ran.stderr.contains("timeout"), "{ran:?}");
}
