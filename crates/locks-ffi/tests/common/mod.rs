//! Shared by the tests that build C and Go programs against the C ABI as
//! users install it (`ci/install-c.sh`: header, shared library, pkg-config).

#![allow(dead_code, unreachable_pub)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

/// What a program linked with `liblocks_ffi.a` needs besides it on Linux:
/// crates/locks-ffi/native-static-libs.txt, which CI (ci/test.sh) compares with
/// `cargo rustc -p locks-ffi --lib --crate-type staticlib -- --print native-static-libs`.
pub fn native_static_libs() -> Vec<&'static str> {
    include_str!("../../native-static-libs.txt")
        .split_whitespace()
        .collect()
}

/// The workspace root.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// `<target>/<profile>`, from the path of this test binary (`<target>/<profile>/deps/<test>`).
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent().and_then(Path::parent).unwrap().to_owned()
}

/// A directory under the target directory for what the tests build.
pub fn build_dir(name: &str) -> PathBuf {
    let dir = profile_dir().join("locks-ffi-tests").join(name);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The C ABI installed as users install it: `$LOCKS_TEST_C_PREFIX` when set
/// (`ci/test.sh` installs it there once), else `ci/install-c.sh` into a
/// prefix of this test process under the build directory.
pub fn prefix() -> PathBuf {
    static PREFIX: OnceLock<PathBuf> = OnceLock::new();
    PREFIX
        .get_or_init(|| {
            if let Some(prefix) = std::env::var_os("LOCKS_TEST_C_PREFIX") {
                return PathBuf::from(prefix);
            }
            let prefix = build_dir("prefix").join(std::process::id().to_string());
            let target_dir = profile_dir().parent().unwrap().to_owned();
            let status = Command::new("bash")
                .arg(workspace().join("ci/install-c.sh"))
                .arg(&prefix)
                .env("CARGO_TARGET_DIR", &target_dir)
                .status()
                .expect("running ci/install-c.sh");
            assert!(
                status.success(),
                "ci/install-c.sh {} failed",
                prefix.display()
            );
            prefix
        })
        .clone()
}

/// `PREFIX/lib/pkgconfig`, for `PKG_CONFIG_PATH`.
pub fn pkg_config_path() -> PathBuf {
    prefix().join("lib/pkgconfig")
}

/// What `pkg-config ARGS locks` prints, split into arguments.
pub fn pkg_config(args: &[&str]) -> Vec<String> {
    let out = Command::new("pkg-config")
        .args(args)
        .arg("locks")
        .env("PKG_CONFIG_PATH", pkg_config_path())
        .output()
        .expect("running pkg-config");
    assert!(
        out.status.success(),
        "pkg-config {args:?} locks failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout)
        .unwrap()
        .split_whitespace()
        .map(str::to_owned)
        .collect()
}

/// Whether `program` can be run. Without it the test is skipped with a
/// message, except under `CI=true`, where a missing tool is a failure.
pub fn have(program: &str, install: &str) -> bool {
    let found = Command::new(program)
        .arg(if program == "go" {
            "version"
        } else {
            "--version"
        })
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        let ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
        assert!(
            !ci,
            "`{program}` is not installed and CI=true: install it ({install}; ci/install.sh does)"
        );
        eprintln!("skipped: `{program}` is not installed ({install})");
    }
    found
}

/// Compiles `examples/c/<name>.c` as the C ABI's README says, `cc prog.c
/// $(pkg-config --cflags --libs locks)`, with every warning an error and an
/// rpath to the installed library; returns the executable.
pub fn compile_c(name: &str) -> PathBuf {
    // Once per test process: tests run in parallel, and rewriting a program
    // another test is running fails with ETXTBSY.
    static BUILT: Mutex<BTreeMap<String, PathBuf>> = Mutex::new(BTreeMap::new());
    let mut built = BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(path) = built.get(name) {
        return path.clone();
    }
    let root = workspace();
    let out = build_dir("c").join(name);
    let tmp = unique(&out);
    let output = Command::new(std::env::var_os("CC").unwrap_or_else(|| "cc".into()))
        .args(["-std=c11", "-pedantic", "-Wall", "-Wextra", "-Werror", "-g"])
        .arg(root.join("examples/c").join(format!("{name}.c")))
        .args(pkg_config(&["--cflags", "--libs"]))
        .arg(format!("-Wl,-rpath,{}", prefix().join("lib").display()))
        .arg("-o")
        .arg(&tmp)
        .output()
        .expect("running cc");
    assert!(
        output.status.success(),
        "cc examples/c/{name}.c failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    built.insert(name.to_owned(), out.clone());
    out
}

/// A path next to `path` that no other process uses. Programs are built
/// there and renamed into place, because test runners such as nextest run
/// tests in parallel processes, and one may run a program while another
/// rebuilds it.
fn unique(path: &Path) -> PathBuf {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    let name = path.file_name().unwrap().to_string_lossy();
    path.with_file_name(format!(".{name}.{}.{nanos}", std::process::id()))
}

/// A configuration whose Node and Global locks are lock files in `dir/locks`.
pub fn write_config(dir: &Path) -> PathBuf {
    let locks = dir.join("locks");
    let path = dir.join("locks.toml");
    std::fs::write(
        &path,
        format!(
            "[backends]\nprocess = \"memory://\"\nnode = \"file://{0}\"\nglobal = \"file://{0}\"\n",
            locks.display()
        ),
    )
    .unwrap();
    path
}

/// The environment for the `go` command: caches under the target directory,
/// no module downloads, the installed library found through pkg-config (and
/// an rpath to it, as outside the linker's default paths).
pub fn go(args: &[&str], dir: &Path) -> Command {
    let go_dir = build_dir("go");
    let mut cmd = Command::new("go");
    cmd.args(args)
        .current_dir(dir)
        .env("GOCACHE", go_dir.join("cache"))
        .env("GOPATH", go_dir.join("path"))
        .env("GOPROXY", "off")
        .env("GOFLAGS", "")
        .env("GO111MODULE", "on")
        .env("CGO_ENABLED", "1")
        .env("PKG_CONFIG_PATH", pkg_config_path())
        .env(
            "CGO_LDFLAGS",
            format!("-Wl,-rpath,{}", prefix().join("lib").display()),
        );
    cmd
}

/// Builds a Go main package of examples/go (`./infinidat`) into the build directory.
pub fn build_go_example(package: &str) -> PathBuf {
    let out = build_dir("go").join(package);
    let tmp = unique(&out);
    let root = workspace();
    let output = go(
        &[
            "build",
            "-o",
            tmp.to_str().unwrap(),
            &format!("./{package}"),
        ],
        &root.join("examples/go"),
    )
    .output()
    .expect("running go build");
    assert!(
        output.status.success(),
        "go build ./{package} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).unwrap();
    out
}

/// The result of [`run`].
#[derive(Debug)]
pub struct Ran {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Ran {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }
}

/// Runs `cmd` to completion, killing it after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> Ran {
    let dir = tempfile::tempdir().unwrap();
    let (out, err) = (dir.path().join("out"), dir.path().join("err"));
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap_or_else(|e| panic!("starting {cmd:?}: {e}"));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} still running after {limit:?}; stderr:\n{}",
                std::fs::read_to_string(&err).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Ran {
        status,
        stdout: std::fs::read_to_string(&out).unwrap_or_default(),
        stderr: std::fs::read_to_string(&err).unwrap_or_default(),
    }
}

/// `valgrind` with the settings of the C tests: any memory error, and any
/// definite or indirect leak, fails with exit status 99. "Possibly lost"
/// blocks (thread handles of the runtime's threads) are not leaks.
pub fn valgrind() -> Command {
    let mut cmd = Command::new("valgrind");
    cmd.args([
        "--quiet",
        "--error-exitcode=99",
        "--leak-check=full",
        "--show-leak-kinds=definite,indirect",
        "--errors-for-leak-kinds=definite,indirect",
    ]);
    cmd
}

/// A test server's address from `var` (`LOCKS_TEST_ETCD`, `LOCKS_TEST_ZK`),
/// as ci/etcd.sh and ci/zookeeper.sh export it. Without one the test is
/// skipped with a notice, except under `CI=true`, where that is a failure.
pub fn server(var: &str) -> Option<String> {
    locks_core::testing::server_from_env(var)
}
