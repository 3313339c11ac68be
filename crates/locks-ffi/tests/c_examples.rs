//! The C programs of examples/c, compiled with `cc -Wall -Wextra -Werror`
//! against include/locks.h and the static library, run, and run again under
//! valgrind (no memory errors, no definite or indirect leaks).

mod common;

use std::ffi::CString;
use std::path::Path;
use std::process::Command;
use std::ptr::null_mut;
use std::time::Duration;

use common::*;
use locks_ffi::*;

const LIMIT: Duration = Duration::from_secs(120);

fn lio(config: &Path, timeout_ms: &str, command: &[&str]) -> Command {
    let mut cmd = Command::new(compile_c("lio"));
    cmd.arg(config).arg(timeout_ms).args(command);
    cmd
}

/// Holds catalog lock `lio` through the C ABI in this process, as a C
/// caller would, until dropped.
struct Holder {
    client: *mut locks_client,
    guard: *mut locks_guard,
}

impl Holder {
    fn new(config: &Path, id: &str, keys: &[&str], values: &[&str]) -> Holder {
        let path = CString::new(config.to_str().unwrap()).unwrap();
        let id = CString::new(id).unwrap();
        let keys: Vec<CString> = keys.iter().map(|k| CString::new(*k).unwrap()).collect();
        let values: Vec<CString> = values.iter().map(|v| CString::new(*v).unwrap()).collect();
        let kp: Vec<_> = keys.iter().map(|k| k.as_ptr()).collect();
        let vp: Vec<_> = values.iter().map(|v| v.as_ptr()).collect();
        let (mut client, mut guard) = (null_mut(), null_mut());
        // SAFETY: valid arguments.
        unsafe {
            let s = locks_client_open_file(path.as_ptr(), &mut client, null_mut());
            assert_eq!(s, locks_status::Ok);
            let s = locks_client_lock(
                client,
                id.as_ptr(),
                kp.as_ptr(),
                vp.as_ptr(),
                kp.len(),
                0,
                &mut guard,
                null_mut(),
            );
            assert_eq!(s, locks_status::Ok);
        }
        Holder { client, guard }
    }
}

impl Drop for Holder {
    fn drop(&mut self) {
        // SAFETY: live handles, freed once.
        unsafe {
            locks_guard_free(self.guard);
            locks_client_free(self.client);
        }
    }
}

#[test]
fn lio_runs_the_command_under_the_node_lock() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let lock_file = dir.path().join("locks/lioadm");
    // The command sees the lock file that is locked while it runs.
    let script = format!("test -e {} && echo inside; exit 3", lock_file.display());
    let ran = run(&mut lio(&config, "5000", &["sh", "-c", &script]), LIMIT);
    assert_eq!(ran.code(), 3, "{ran:?}");
    for expected in [
        "locked lioadm (node scope, token ",
        "inside",
        "`sh` exited with 3",
        "released lioadm",
    ] {
        assert!(ran.stdout.contains(expected), "{expected:?} in {ran:?}");
    }
}

#[test]
fn lio_is_excluded_by_a_holder_in_another_process() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let holder = Holder::new(&config, "lio", &[], &[]);
    let ran = run(&mut lio(&config, "0", &["true"]), LIMIT);
    assert_eq!(ran.code(), 75, "{ran:?}");
    assert!(ran.stderr.contains("would_block"), "{ran:?}");
    let ran = run(&mut lio(&config, "200", &["true"]), LIMIT);
    assert_eq!(ran.code(), 75, "{ran:?}");
    assert!(ran.stderr.contains("timeout"), "{ran:?}");
    drop(holder);
    let ran = run(&mut lio(&config, "0", &["true"]), LIMIT);
    assert_eq!(ran.code(), 0, "{ran:?}");
}

#[test]
fn infinidat_takes_the_global_lock_around_the_call() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut cmd = Command::new(compile_c("infinidat"));
    cmd.arg(&config).arg("10.0.0.1");
    let ran = run(&mut cmd, LIMIT);
    assert_eq!(ran.code(), 0, "{ran:?}");
    for expected in [
        "template infinidat-{management_address}-lock, scope global, 1 parameter(s): management_address",
        "locked infinidat-10.0.0.1-lock",
        "initialize_connection on 10.0.0.1 with fencing token ",
        "released infinidat-10.0.0.1-lock",
    ] {
        assert!(ran.stdout.contains(expected), "{expected:?} in {ran:?}");
    }
    // Global on lock files is host-local: the client's warnings say so.
    assert!(
        ran.stderr.contains("excludes only processes on this host"),
        "{ran:?}"
    );

    // Another array is another lock; the same array waits, then times out.
    let _holder = Holder::new(&config, "infinidat", &["management_address"], &["10.0.0.1"]);
    let mut other = Command::new(compile_c("infinidat"));
    other.arg(&config).arg("10.0.0.2").arg("0");
    assert_eq!(run(&mut other, LIMIT).code(), 0);
    let mut same = Command::new(compile_c("infinidat"));
    same.arg(&config).arg("10.0.0.1").arg("100");
    let ran = run(&mut same, LIMIT);
    assert_eq!(ran.code(), 75, "{ran:?}");
}

#[test]
fn bad_input_gets_a_status_and_a_message_every_time() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut cmd = Command::new(compile_c("bad_input"));
    cmd.arg(&config);
    let ran = run(&mut cmd, LIMIT);
    assert_eq!(ran.code(), 0, "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains(" checks, 0 failed"), "{ran:?}");
}

#[test]
fn cancel_ends_a_blocked_acquire_from_another_thread() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut cmd = Command::new(compile_c("cancel"));
    cmd.arg(&config);
    let ran = run(&mut cmd, LIMIT);
    assert_eq!(ran.code(), 0, "{}\n{}", ran.stdout, ran.stderr);
    assert!(ran.stdout.contains(" checks, 0 failed"), "{ran:?}");
    assert!(ran.stdout.contains("waiter: cancelled after "), "{ran:?}");
}

/// Every C program under valgrind: no invalid reads or writes, no use of
/// uninitialised memory, no definite or indirect leaks.
#[test]
fn watch_works_its_steps_and_its_watcher_sees_the_release() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut cmd = Command::new(compile_c("watch"));
    cmd.arg(&config).args(["watch-file", "5"]);
    let ran = run(&mut cmd, LIMIT);
    assert_eq!(ran.code(), 0, "{ran:?}");
    assert!(
        ran.stdout
            .contains("did 5 steps; the watcher saw the release"),
        "{ran:?}"
    );
}

/// The watcher of a C program wakes when its etcd lease is lost behind a
/// partition (the fault proxy), and the work stops at the next step.
#[test]
fn watch_stops_the_work_when_an_etcd_lease_is_lost() {
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    let Some(etcd) = server("LOCKS_TEST_ETCD") else {
        return;
    };
    let proxy = locks_fault_proxy::FaultProxy::start(etcd.parse().unwrap()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("etcd.toml");
    std::fs::write(
        &config,
        format!(
            "[backends]\nglobal = \"etcd://{}?ttl=2s&connect_timeout=500ms&prefix=%2Fwatch-{}%2F\"\nnode = \"file://{}\"\n",
            proxy.addr(),
            std::process::id(),
            dir.path().display()
        ),
    )
    .unwrap();
    // 3000 steps of 10 ms: 30 s of work, far longer than the lease.
    let mut child = Command::new(compile_c("watch"))
        .arg(&config)
        .args(["watch-etcd", "3000"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.starts_with("locked watch-etcd"), "{line:?}");
    proxy.set(locks_fault_proxy::Fault::Blackhole);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(3), "{rest}");
    let done: u32 = rest
        .strip_prefix("lost the lock: stopped after ")
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{rest:?}"));
    assert!(done < 3000, "the work ran to its end: {rest}");
    proxy.set(locks_fault_proxy::Fault::Pass);
}

#[test]
fn c_programs_are_clean_under_valgrind() {
    if !have("valgrind", "apt-get install valgrind") {
        return;
    }
    // One lock directory each: they run side by side.
    let dirs: Vec<_> = (0..6).map(|_| tempfile::tempdir().unwrap()).collect();
    let config = |i: usize| write_config(dirs[i].path()).display().to_string();
    let runs: Vec<(&str, Vec<String>, i32)> = vec![
        (
            "lio",
            vec![
                config(0),
                "5000".into(),
                "sh".into(),
                "-c".into(),
                "exit 4".into(),
            ],
            4,
        ),
        ("infinidat", vec![config(1), "10.0.0.1".into()], 0),
        ("bad_input", vec![config(2)], 0),
        (
            "contend",
            vec![
                config(3),
                dirs[3].path().join("log").display().to_string(),
                "c".into(),
                "5".into(),
            ],
            0,
        ),
        ("cancel", vec![config(4)], 0),
        (
            "watch",
            vec![config(5), "watch-valgrind".into(), "5".into()],
            0,
        ),
    ];
    // The Global lock on the server backends too, when the servers are there.
    let mut runs = runs;
    let address = format!("ffi-valgrind-{}", std::process::id());
    // Valgrind runs these side by side many times slower: connecting gets
    // 30 s (the etcd lease as long, since no request outlasts it).
    for (var, scheme, options) in [
        ("LOCKS_TEST_ETCD", "etcd", "ttl=30&connect_timeout=30"),
        ("LOCKS_TEST_ZK", "zookeeper", "connect_timeout=30"),
    ] {
        if let Some(addr) = server(var) {
            let path = dirs[1].path().join(format!("{scheme}.toml"));
            std::fs::write(
                &path,
                format!(
                    "[backends]\nglobal = \"{scheme}://{addr}?{options}\"\nnode = \"file://{}\"\n",
                    dirs[1].path().display()
                ),
            )
            .unwrap();
            runs.push((
                "infinidat",
                vec![path.display().to_string(), address.clone()],
                0,
            ));
        }
    }
    // Built first, then run side by side: valgrind is slow to start.
    let runs: Vec<_> = runs
        .into_iter()
        .map(|(name, args, code)| (name, compile_c(name), args, code))
        .collect();
    let threads: Vec<_> = runs
        .into_iter()
        .map(|(name, program, args, code)| {
            std::thread::spawn(move || {
                let mut cmd = valgrind();
                cmd.arg(program).args(&args);
                let ran = run(&mut cmd, Duration::from_secs(600));
                assert_eq!(
                    ran.code(),
                    code,
                    "{name} under valgrind (99 = memory error or leak):\n{}\n{}",
                    ran.stdout,
                    ran.stderr
                );
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
}

/// The installed shared library is what C programs record and load:
/// `liblocks.so.0` as its soname, only `locks_*` functions exported, and no
/// debug information.
#[test]
fn the_installed_library_has_a_soname_and_exports_only_its_functions() {
    let lib = prefix().join("lib");
    let so = lib.join("liblocks.so.0.1.0");
    let dynamic = Command::new("readelf")
        .arg("-d")
        .arg(&so)
        .output()
        .expect("readelf");
    let dynamic = String::from_utf8_lossy(&dynamic.stdout);
    assert!(
        dynamic.contains("Library soname: [liblocks.so.0]"),
        "{dynamic}"
    );
    let symbols = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(&so)
        .output()
        .expect("nm");
    let symbols = String::from_utf8_lossy(&symbols.stdout);
    let names: Vec<&str> = symbols
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2))
        .collect();
    assert!(names.len() > 20, "{symbols}");
    assert!(names.iter().all(|n| n.starts_with("locks_")), "{symbols}");
    let sections = Command::new("readelf")
        .arg("-S")
        .arg(&so)
        .output()
        .expect("readelf");
    assert!(
        !String::from_utf8_lossy(&sections.stdout).contains(".debug_info"),
        "debug information in {}",
        so.display()
    );
    for link in ["liblocks.so", "liblocks.so.0"] {
        assert!(lib.join(link).exists(), "{link} is installed");
    }
    assert!(lib.join("liblocks.a").exists() && prefix().join("include/locks.h").exists());
}

/// `ci/install-c.sh --uninstall PREFIX` removes every file the install put
/// there, and nothing else.
#[test]
fn uninstall_removes_exactly_what_install_put() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    let mine = prefix.join("lib/pkgconfig/other.pc");
    let target_dir = profile_dir().parent().unwrap().to_owned();
    let script = workspace().join("ci/install-c.sh");
    let install = |args: &[&str]| {
        let status = Command::new("bash")
            .arg(&script)
            .args(args)
            .arg(&prefix)
            .env("CARGO_TARGET_DIR", &target_dir)
            .stdout(std::process::Stdio::null())
            .status()
            .expect("running ci/install-c.sh");
        assert!(status.success(), "ci/install-c.sh {args:?}");
    };
    install(&[]);
    let installed = files_under(&prefix);
    for file in [
        "include/locks.h",
        "lib/liblocks.so",
        "lib/liblocks.so.0",
        "lib/liblocks.so.0.1.0",
        "lib/liblocks.a",
        "lib/pkgconfig/locks.pc",
        "lib/pkgconfig/locks-static.pc",
    ] {
        assert!(
            installed.iter().any(|f| f == file),
            "{file} in {installed:?}"
        );
    }
    std::fs::write(&mine, "not ours\n").unwrap();
    install(&["--uninstall"]);
    assert_eq!(files_under(&prefix), ["lib/pkgconfig/other.pc"]);
}

/// The files (and symlinks) under `root`, relative to it, sorted.
fn files_under(root: &std::path::Path) -> Vec<String> {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_owned()];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(dir).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                dirs.push(entry.path());
            } else {
                let path = entry.path();
                files.push(path.strip_prefix(root).unwrap().display().to_string());
            }
        }
    }
    files.sort();
    files
}
