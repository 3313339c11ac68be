//! Static linking as the docs say (ci/install-c.sh, the Go package doc): C
//! through `pkg-config locks-static` with the shared library installed, and
//! through `pkg-config --static locks` in a prefix without it; Go through
//! `-tags locks_static`. The programs then need no liblocks.so to run.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const LIMIT: Duration = Duration::from_secs(600);

/// A copy of the installed prefix without `liblocks.so*`, its `locks.pc`
/// pointing at the copy: what a user who does not install the .so has.
fn static_prefix(dir: &Path) -> PathBuf {
    let installed = prefix();
    let copy = dir.join("prefix");
    std::fs::create_dir_all(copy.join("include")).unwrap();
    std::fs::create_dir_all(copy.join("lib/pkgconfig")).unwrap();
    std::fs::copy(
        installed.join("include/locks.h"),
        copy.join("include/locks.h"),
    )
    .unwrap();
    std::fs::copy(
        installed.join("lib/liblocks.a"),
        copy.join("lib/liblocks.a"),
    )
    .unwrap();
    let pc = std::fs::read_to_string(installed.join("lib/pkgconfig/locks.pc")).unwrap();
    let pc = pc
        .lines()
        .map(|line| {
            if line.starts_with("prefix=") {
                format!("prefix={}", copy.display())
            } else {
                line.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(copy.join("lib/pkgconfig/locks.pc"), pc + "\n").unwrap();
    copy
}

/// The shared libraries `program` needs (`readelf -d`'s NEEDED entries).
fn needed(program: &Path) -> Vec<String> {
    let out = Command::new("readelf")
        .arg("-d")
        .arg(program)
        .output()
        .expect("running readelf");
    assert!(out.status.success(), "readelf -d {}", program.display());
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| l.split('[').nth(1)?.split(']').next().map(str::to_owned))
        .collect()
}

/// Checks that the infinidat example (C or Go) needs no liblocks.so, then
/// runs it on lock files and checks it locked.
fn runs_statically_linked(program: &Path, args: &[&str]) {
    let libs = needed(program);
    assert!(
        !libs.iter().any(|l| l.starts_with("liblocks")),
        "{} is linked statically, yet needs {libs:?}",
        program.display()
    );
    let dir = tempfile::tempdir().unwrap();
    let config = write_config(dir.path());
    let mut cmd = Command::new(program);
    cmd.args(
        args.iter()
            .map(|a| a.replace("CONFIG", config.to_str().unwrap())),
    );
    let ran = run(&mut cmd, LIMIT);
    assert_eq!(ran.code(), 0, "{ran:?}");
    assert!(
        ran.stdout.contains("locked infinidat-10.0.0.1-lock"),
        "{ran:?}"
    );
}

/// Compiles examples/c/infinidat.c with what `pkg-config ARGS` prints from
/// `pkg_config_path`, runs it, and checks it needs no liblocks.so.
fn c_links_statically(pkg_config_path: &Path, args: &[&str], out: &Path) {
    let flags = Command::new("pkg-config")
        .args(args)
        .env("PKG_CONFIG_PATH", pkg_config_path)
        .output()
        .expect("running pkg-config");
    assert!(flags.status.success(), "pkg-config {args:?}");
    let built = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-std=c11", "-Wall", "-Werror"])
        .arg(workspace().join("examples/c/infinidat.c"))
        .args(String::from_utf8(flags.stdout).unwrap().split_whitespace())
        .arg("-o")
        .arg(out)
        .output()
        .expect("running cc");
    assert!(
        built.status.success(),
        "cc with pkg-config {args:?}: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    runs_statically_linked(out, &["CONFIG", "10.0.0.1"]);
}

#[test]
fn a_c_program_links_statically_beside_the_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    c_links_statically(
        &pkg_config_path(),
        &["--cflags", "--libs", "locks-static"],
        &dir.path().join("infinidat"),
    );
}

#[test]
fn a_c_program_links_statically_without_the_shared_library() {
    let dir = tempfile::tempdir().unwrap();
    let prefix = static_prefix(dir.path());
    c_links_statically(
        &prefix.join("lib/pkgconfig"),
        &["--static", "--cflags", "--libs", "locks"],
        &dir.path().join("infinidat"),
    );
}

#[test]
fn a_go_program_links_statically() {
    if !have("go", "apt-get install golang-go") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let program = dir.path().join("infinidat-go");
    let built = go(
        &[
            "build",
            "-tags",
            "locks_static",
            "-o",
            program.to_str().unwrap(),
            "./infinidat",
        ],
        &workspace().join("examples/go"),
    )
    // `go` keeps CGO_LDFLAGS (an rpath to this prefix): Go 1.19's build
    // cache does not see a .pc file's flags change, and without a variable
    // naming the prefix it reused a link of an earlier, deleted prefix.
    .output()
    .expect("running go build");
    assert!(
        built.status.success(),
        "go build -tags locks_static: {}",
        String::from_utf8_lossy(&built.stderr)
    );
    runs_statically_linked(&program, &["-config", "CONFIG", "-address", "10.0.0.1"]);
}
