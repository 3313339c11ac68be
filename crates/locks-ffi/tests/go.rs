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

/// The package links the system libraries of native-static-libs.txt itself
/// (all but libc, which Go links anyway), so users pass only the archive.
#[test]
fn go_package_links_the_native_static_libs() {
    let source = std::fs::read_to_string(workspace().join("crates/locks-ffi/go/locks.go")).unwrap();
    let line = source
        .lines()
        .find_map(|l| l.strip_prefix("#cgo LDFLAGS: "))
        .expect("#cgo LDFLAGS in locks.go");
    let want: Vec<&str> = native_static_libs()
        .into_iter()
        .filter(|l| *l != "-lc")
        .collect();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>(),
        want,
        "update `#cgo LDFLAGS` in crates/locks-ffi/go/locks.go from crates/locks-ffi/native-static-libs.txt"
    );
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
    let ran = run(
        &mut go(&["vet", "./..."], &workspace().join("examples/go")),
        LIMIT,
    );
    assert_eq!(ran.code(), 0, "go vet examples/go:\n{}", ran.stderr);
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
