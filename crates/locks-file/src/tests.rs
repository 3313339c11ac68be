//! Tests of the file backend against the kernel, other descriptors, other
//! backends of this process and Python child processes.

use std::future::Future;
use std::io::{BufRead, BufReader};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::task::{Context, Poll, Wake};
use std::time::{Duration, Instant};

use locks_core::acquire;

use std::path::{Path, PathBuf};

use locks_core::{Backend, ErrorKind, HolderId, LockGuard, LockName, LockRequest, Scope, Wait};

use crate::{FileBackend, FileConfig, Mechanism, cache, lock_file_name, lockfile, path, sys};

fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("locks-file-test-")
        .tempdir()
        .unwrap_or_else(|e| panic!("cannot create a temporary directory: {e}"))
}

/// A lock directory that outlives the test (for backends the conformance suite keeps).
fn leaked_dir() -> PathBuf {
    temp_dir().keep()
}

fn open(dir: &Path, mechanism: Mechanism) -> FileBackend {
    FileBackend::open(FileConfig {
        mechanism,
        ..FileConfig::new(dir)
    })
    .unwrap_or_else(|e| panic!("open {}: {}", dir.display(), e.report()))
}

fn name(s: &str) -> LockName {
    LockName::new(s).unwrap_or_else(|e| panic!("{e}"))
}

fn req(n: &LockName, wait: Wait) -> LockRequest {
    LockRequest::new(n.clone(), Scope::Node).wait(wait)
}

/// Opens `path` on a new descriptor (never creating it) and tries, without
/// waiting, the raw kernel lock of `mechanism` on it. `true` if it was free
/// (the probe's own lock is dropped again), `false` on EAGAIN/EWOULDBLOCK.
fn probe_free(path: &Path, mechanism: Mechanism) -> bool {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(path)
        .unwrap_or_else(|e| panic!("probe: open {}: {e}", path.display()));
    let fd = file.as_raw_fd();
    let rc = match mechanism {
        Mechanism::Ofd => {
            // SAFETY: all-zero is a valid `struct flock`.
            let mut fl: libc::flock = unsafe { std::mem::zeroed() };
            fl.l_type = libc::F_WRLCK as libc::c_short;
            fl.l_whence = libc::SEEK_SET as libc::c_short;
            // SAFETY: `fd` is open and `fl` valid for the call.
            unsafe { libc::fcntl(fd, libc::F_OFD_SETLK, &mut fl) }
        }
        // SAFETY: `fd` is open.
        Mechanism::Flock => unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) },
    };
    if rc == 0 {
        return true;
    }
    let err = std::io::Error::last_os_error();
    match err.raw_os_error() {
        Some(libc::EAGAIN) => false,
        _ => panic!("probe {mechanism} on {}: unexpected {err}", path.display()),
    }
}

fn python3() -> Command {
    // Fail loudly (not skip) when python3 is missing: the interop tests are the point.
    Command::new("python3")
}

fn spawn_error(e: std::io::Error) -> ! {
    panic!("python3 is required for the Python interop tests and could not be started: {e}")
}

/// Runs `fcntl.lockf(f, LOCK_EX|LOCK_NB)` in a Python child process, exactly
/// as fasteners/oslo do. `true` if it got the lock.
fn python_lockf_free(path: &Path) -> bool {
    let script = "import fcntl, sys\n\
                  f = open(sys.argv[1], 'a')\n\
                  try:\n    fcntl.lockf(f, fcntl.LOCK_EX | fcntl.LOCK_NB)\n\
                  except OSError as e:\n    print('busy', e.errno)\n    sys.exit(3)\n\
                  print('acquired')\n";
    let out = python3()
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .unwrap_or_else(|e| spawn_error(e));
    match out.status.code() {
        Some(0) => true,
        Some(3) => false,
        _ => panic!(
            "python lockf probe failed: {:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    }
}

/// A Python child holding `fcntl.lockf` on a file until it is killed.
struct PythonHolder(Child);

impl PythonHolder {
    fn start(path: &Path) -> PythonHolder {
        let script = "import fcntl, sys, time\n\
                      f = open(sys.argv[1], 'a')\n\
                      fcntl.lockf(f, fcntl.LOCK_EX)\n\
                      print('held', flush=True)\n\
                      time.sleep(120)\n";
        let mut child = python3()
            .arg("-c")
            .arg(script)
            .arg(path)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| spawn_error(e));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let holder = PythonHolder(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .unwrap_or_else(|e| panic!("reading from the python holder: {e}"));
        assert_eq!(
            line.trim(),
            "held",
            "the python holder did not get the lock"
        );
        holder
    }

    fn stop(mut self) {
        self.kill();
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for PythonHolder {
    fn drop(&mut self) {
        self.kill();
    }
}

async fn try_until(backend: &FileBackend, n: &LockName, limit: Duration) -> LockGuard {
    let start = Instant::now();
    loop {
        match backend.acquire(&req(n, Wait::TryOnce)).await {
            Ok(guard) => return guard,
            Err(e) if e.kind() == ErrorKind::WouldBlock && start.elapsed() < limit => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            Err(e) => panic!(
                "`{n}` not acquired within {limit:?} ({:?}): {}",
                start.elapsed(),
                e.report()
            ),
        }
    }
}

/// A minimal executor: proves the backend needs no tokio runtime.
fn block_on<F: Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Arc::new(Unpark(std::thread::current())).into();
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(out) = fut.as_mut().poll(&mut cx) {
            return out;
        }
        std::thread::park();
    }
}

mod ofd_conformance {
    // Two backends on one directory: they exclude each other only through the kernel.
    locks_core::conformance_tests!(|| async {
        let dir = crate::tests::leaked_dir();
        let open = || {
            std::sync::Arc::new(
                crate::FileBackend::open(crate::FileConfig {
                    mechanism: crate::Mechanism::Ofd,
                    ..crate::FileConfig::new(&dir)
                })
                .unwrap(),
            ) as std::sync::Arc<dyn locks_core::Backend>
        };
        Some((open(), open()))
    });
}

mod tree_conformance {
    // Two backends on one directory: they exclude each other only through the kernel.
    locks_core::conformance_tests!(|| async {
        let dir = crate::tests::leaked_dir();
        let open = || {
            std::sync::Arc::new(
                crate::FileBackend::open(crate::FileConfig {
                    layout: crate::Layout::Tree,
                    ..crate::FileConfig::new(&dir)
                })
                .unwrap(),
            ) as std::sync::Arc<dyn locks_core::Backend>
        };
        Some((open(), open()))
    });
}

#[tokio::test]
async fn tree_layout_makes_subdirectories_like_tooz_and_stays_inside() {
    let dir = temp_dir();
    let backend = FileBackend::open(FileConfig {
        layout: crate::Layout::Tree,
        ..FileConfig::new(dir.path())
    })
    .unwrap();
    let guard = backend
        .acquire(&LockRequest::new(name("cinder-a//b/./c"), Scope::Global))
        .await
        .unwrap();
    assert!(dir.path().join("cinder-a/b/c").is_file());
    guard.release().await.unwrap();
    for bad in ["/abs", "a/../../x", "groups", "tmp", ".driver_lock", "./"] {
        let err = backend
            .acquire(&LockRequest::new(name(bad), Scope::Global))
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad}: {err}");
    }
    // A symlinked subdirectory leading out of the lock directory is refused.
    let outside = temp_dir();
    std::os::unix::fs::symlink(outside.path(), dir.path().join("escape")).unwrap();
    let err = backend
        .acquire(&LockRequest::new(name("escape/x"), Scope::Global))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::PermissionDenied, "{err}");
    assert!(!outside.path().join("x").exists());
}

mod flock_conformance {
    // Two backends on one directory: they exclude each other only through the kernel.
    locks_core::conformance_tests!(|| async {
        let dir = crate::tests::leaked_dir();
        let open = || {
            std::sync::Arc::new(
                crate::FileBackend::open(crate::FileConfig {
                    mechanism: crate::Mechanism::Flock,
                    ..crate::FileConfig::new(&dir)
                })
                .unwrap(),
            ) as std::sync::Arc<dyn locks_core::Backend>
        };
        Some((open(), open()))
    });
}

#[test]
fn mechanism_parses_and_prints() {
    assert_eq!("ofd".parse::<Mechanism>().unwrap(), Mechanism::Ofd);
    assert_eq!("FLOCK".parse::<Mechanism>().unwrap(), Mechanism::Flock);
    assert_eq!(Mechanism::Ofd.to_string(), "ofd");
    assert_eq!(Mechanism::Flock.to_string(), "flock");
    let err = "posix".parse::<Mechanism>().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
    assert!(err.message().contains("\"posix\""), "{err}");
    let expected = if cfg!(target_os = "linux") {
        Mechanism::Ofd
    } else {
        Mechanism::Flock
    };
    assert_eq!(Mechanism::default(), expected);
    assert_eq!(FileConfig::new("/x").mechanism, expected);
}

#[test]
fn describes_itself() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::Ofd);
    assert_eq!(backend.kind(), "file");
    assert_eq!(
        backend.describe(),
        format!("file://{} (ofd)", tmp.path().display())
    );
    let caps = backend.capabilities();
    assert_eq!(caps.scopes, &[Scope::Node, Scope::Global]);
    assert!(caps.fencing && !caps.fifo && !caps.can_lose);
    assert_eq!(
        open(tmp.path(), Mechanism::Flock).mechanism(),
        Mechanism::Flock
    );
}

#[test]
fn names_map_like_oslo() {
    assert_eq!(lock_file_name(&name("a/b/c")).unwrap(), "a_b_c");
    assert_eq!(
        lock_file_name(&name("cinder-lioadm")).unwrap(),
        "cinder-lioadm"
    );
    assert_eq!(lock_file_name(&name("../etc")).unwrap(), ".._etc");
    assert_eq!(lock_file_name(&name("/")).unwrap(), "_");
    assert_eq!(lock_file_name(&name("vol-é")).unwrap(), "vol-é");
    for bad in [".", ".."] {
        let err = lock_file_name(&name(bad)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad}");
        assert!(err.message().contains("directories"), "{err}");
    }
    let long = "x".repeat(256);
    let err = lock_file_name(&name(&long)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    assert!(lock_file_name(&name(&"x".repeat(255))).is_ok());

    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::default());
    assert_eq!(
        backend.path_for(&name("cinder-a/b/c")).unwrap(),
        tmp.path().join("cinder-a_b_c")
    );
    assert_eq!(
        backend.path_for(&name("..")).unwrap_err().kind(),
        ErrorKind::InvalidName
    );
}

#[tokio::test]
async fn slashes_become_one_file_and_share_the_lock() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::default());
    let guard = backend
        .acquire(&req(&name("a/b/c"), Wait::TryOnce))
        .await
        .unwrap();
    assert!(tmp.path().join("a_b_c").is_file());
    assert!(!tmp.path().join("a").exists(), "no subdirectory is made");
    // `a/b/c` and `a_b_c` are one file, hence one lock, as for oslo.
    let err = backend
        .acquire(&req(&name("a_b_c"), Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    let err = backend
        .acquire(&req(&name(".."), Wait::Forever))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidName);
    guard.release().await.unwrap();
    assert_eq!(backend.active_names(), 0);
}

#[test]
fn open_creates_the_directory_0700_and_leaves_existing_ones_alone() {
    let tmp = temp_dir();
    let dir = tmp.path().join("state/locks");
    let backend = open(&dir, Mechanism::default());
    assert_eq!(backend.dir(), dir);
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode();
    assert!(std::fs::metadata(&dir).unwrap().is_dir());
    assert_eq!(mode & 0o7777, 0o700, "mode {mode:o}");

    let shared = tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o2775)).unwrap();
    open(&shared, Mechanism::default());
    let mode = std::fs::metadata(&shared).unwrap().permissions().mode();
    assert_eq!(
        mode & 0o7777,
        0o2775,
        "an existing directory is not chmodded"
    );
}

#[test]
fn open_refuses_what_is_not_a_directory() {
    let tmp = temp_dir();
    let file = tmp.path().join("plain");
    std::fs::write(&file, b"").unwrap();
    let err = FileBackend::open(FileConfig::new(&file)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(err.message().contains(&file.display().to_string()), "{err}");
    assert!(err.message().contains("not a directory"), "{err}");

    let below = file.join("locks");
    let err = FileBackend::open(FileConfig::new(&below)).unwrap_err();
    assert!(
        matches!(err.kind(), ErrorKind::Io | ErrorKind::PermissionDenied),
        "{err:?}"
    );
    assert!(
        err.message().contains(&below.display().to_string()),
        "{err}"
    );

    let err = FileBackend::open(FileConfig::new("")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::InvalidConfig);
}

#[tokio::test]
async fn a_symlink_at_the_lock_path_is_refused() {
    let tmp = temp_dir();
    let dir = tmp.path().join("locks");
    let backend = open(&dir, Mechanism::default());
    let target = tmp.path().join("victim");
    let link = dir.join("planted");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let err = backend
        .acquire(&req(&name("planted"), Wait::Forever))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io, "{}", err.report());
    assert!(err.message().contains("symlink"), "{err}");
    assert!(err.message().contains(&link.display().to_string()), "{err}");
    assert!(!target.exists(), "nothing was created through the symlink");

    // Also when the target exists: it is neither locked nor touched.
    std::fs::write(&target, b"data").unwrap();
    let err = backend
        .acquire(&req(&name("planted"), Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Io);
    assert!(probe_free(&target, Mechanism::Ofd));
    assert_eq!(std::fs::read(&target).unwrap(), b"data");
    assert_eq!(backend.active_names(), 0);
}

#[tokio::test]
async fn release_and_drop_keep_the_file() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::default());
    let n = name("cinder-keep");
    let path = backend.path_for(&n).unwrap();
    let guard = backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o133, 0, "created 0644 minus umask: {mode:o}");
    guard.release().await.unwrap();
    assert!(path.is_file(), "release must not unlink");
    assert!(probe_free(&path, Mechanism::Ofd));
    drop(backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap());
    assert!(path.is_file(), "drop must not unlink");
    assert!(probe_free(&path, Mechanism::Ofd));
    // Released on the calling thread, without a runtime's help.
    let guard = backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    assert!(!probe_free(&path, Mechanism::Ofd));
    let released = guard
        .try_release_now()
        .expect("a file lock is released at once");
    assert!(released.is_ok());
    assert!(path.is_file());
    assert!(probe_free(&path, Mechanism::Ofd));
}

/// Every descriptor this process has open on `path`, with its `FD_CLOEXEC` flag.
#[cfg(target_os = "linux")]
fn open_descriptors(path: &Path) -> Vec<(i32, bool)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        let entry = entry.unwrap();
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(entry.path()).ok().as_deref() == Some(path) {
            // SAFETY: F_GETFD only reads the flags of a descriptor number.
            let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            if flags >= 0 {
                found.push((fd, flags & libc::FD_CLOEXEC != 0));
            }
        }
    }
    found
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn the_lock_descriptor_is_close_on_exec_and_kept_for_the_next_holder() {
    for mechanism in [Mechanism::Ofd, Mechanism::Flock] {
        let tmp = temp_dir();
        let backend = open(tmp.path(), mechanism);
        let n = name("cloexec");
        let path = backend.path_for(&n).unwrap();
        let guard = backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
        let fds = open_descriptors(&path);
        assert_eq!(fds.len(), 1, "one descriptor while held: {fds:?}");
        assert!(fds[0].1, "{mechanism}: FD_CLOEXEC must be set: {fds:?}");
        guard.release().await.unwrap();
        assert_eq!(open_descriptors(&path), fds, "kept open, unlocked");
        assert!(probe_free(&path, mechanism));
        assert_eq!(backend.cached_files(), 1);
        // The next holder locks the same descriptor.
        let guard = backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
        assert_eq!(open_descriptors(&path), fds);
        assert!(!probe_free(&path, mechanism));
        drop(guard);
        assert_eq!(open_descriptors(&path), fds);
        // `clean` closes the backend's descriptors before removing their files.
        let report = backend.clean().await.unwrap();
        assert_eq!(report.removed, vec![path.display().to_string()]);
        assert!(open_descriptors(&path).is_empty());
        assert!(deleted_descriptors(tmp.path()).is_empty());
        assert_eq!(backend.cached_files(), 0);
    }
}

/// The descriptors this process has open on unlinked files under `dir`.
#[cfg(target_os = "linux")]
fn deleted_descriptors(dir: &Path) -> Vec<PathBuf> {
    descriptors_under(dir)
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(" (deleted)"))
        .collect()
}

/// The files under `dir` this process has descriptors open on.
#[cfg(target_os = "linux")]
fn descriptors_under(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc/self/fd").unwrap() {
        if let Ok(target) = std::fs::read_link(entry.unwrap().path())
            && target.starts_with(dir)
        {
            found.push(target);
        }
    }
    found
}

/// Checks that `backend` holds `n` on the file its path names now, and
/// nothing else does: a raw lock on a fresh descriptor of the path, and a
/// second backend, are refused.
async fn assert_holds_the_current_file(backend: &FileBackend, n: &LockName, other: &FileBackend) {
    let path = backend.path_for(n).unwrap();
    let guard = backend.acquire(&req(n, Wait::TryOnce)).await.unwrap();
    assert!(path.is_file(), "the file was created again");
    assert!(
        !probe_free(&path, backend.mechanism()),
        "the lock must be on the file the path names"
    );
    let err = other.acquire(&req(n, Wait::TryOnce)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    guard.release().await.unwrap();
    assert!(probe_free(&path, backend.mechanism()));
    let again = other.acquire(&req(n, Wait::TryOnce)).await.unwrap();
    again.release().await.unwrap();
}

/// Holds and releases `n`, so that its descriptor is cached, and waits until
/// the cache trusts the file's ctime (the stamp is settled).
async fn cache_settled(backend: &FileBackend, n: &LockName) {
    drop(backend.acquire(&req(n, Wait::TryOnce)).await.unwrap());
    // Past the coarse clock's tick: the next full check settles the stamp.
    tokio::time::sleep(Duration::from_millis(30)).await;
    drop(backend.acquire(&req(n, Wait::TryOnce)).await.unwrap());
    let before = lockfile::FULL_CHECKS.with(std::cell::Cell::get);
    drop(backend.acquire(&req(n, Wait::TryOnce)).await.unwrap());
    let after = lockfile::FULL_CHECKS.with(std::cell::Cell::get);
    assert_eq!(
        before, after,
        "a settled cached descriptor needs no path check"
    );
    assert_eq!(backend.cached_files(), 1);
}

async fn a_cached_file_that_is_unlinked_is_not_locked_again(mechanism: Mechanism) {
    let tmp = temp_dir();
    let backend = open(tmp.path(), mechanism);
    let other = open(tmp.path(), mechanism);
    let n = name("unlinked-while-cached");
    let path = backend.path_for(&n).unwrap();

    // Unlinked by an operator while only cached, before the stamp settled...
    drop(backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap());
    std::fs::remove_file(&path).unwrap();
    assert_holds_the_current_file(&backend, &n, &other).await;

    // ... and after.
    cache_settled(&backend, &n).await;
    std::fs::remove_file(&path).unwrap();
    assert_holds_the_current_file(&backend, &n, &other).await;

    // Removed by `clean` of another backend: cached descriptors are unlocked.
    cache_settled(&backend, &n).await;
    let report = other.clean().await.unwrap();
    assert_eq!(report.removed, vec![path.display().to_string()]);
    assert!(!path.exists());
    assert_holds_the_current_file(&backend, &n, &other).await;
    #[cfg(target_os = "linux")]
    assert!(
        deleted_descriptors(tmp.path()).is_empty(),
        "the descriptors of removed files are closed: {:?}",
        descriptors_under(tmp.path())
    );
}

#[tokio::test]
async fn a_cached_file_that_is_unlinked_is_not_locked_again_ofd() {
    a_cached_file_that_is_unlinked_is_not_locked_again(Mechanism::Ofd).await;
}

#[tokio::test]
async fn a_cached_file_that_is_unlinked_is_not_locked_again_flock() {
    a_cached_file_that_is_unlinked_is_not_locked_again(Mechanism::Flock).await;
}

#[tokio::test]
async fn a_cached_file_that_is_moved_or_replaced_is_not_locked_again() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::Ofd);
    let other = open(tmp.path(), Mechanism::Ofd);
    let n = name("moved-while-cached");
    let path = backend.path_for(&n).unwrap();
    let moved = tmp.path().join("moved-away");

    // Renamed away: the file keeps its link, only its ctime tells.
    cache_settled(&backend, &n).await;
    std::fs::rename(&path, &moved).unwrap();
    let before = lockfile::FULL_CHECKS.with(std::cell::Cell::get);
    assert_holds_the_current_file(&backend, &n, &other).await;
    assert!(lockfile::FULL_CHECKS.with(std::cell::Cell::get) > before);
    assert!(
        probe_free(&moved, Mechanism::Ofd),
        "the moved file is not locked"
    );
    #[cfg(target_os = "linux")]
    assert!(
        !descriptors_under(tmp.path()).contains(&moved),
        "the descriptor of the moved file is closed"
    );

    // Replaced by another file renamed over it (the old one loses its link).
    cache_settled(&backend, &n).await;
    std::fs::write(&moved, b"").unwrap();
    std::fs::rename(&moved, &path).unwrap();
    assert_holds_the_current_file(&backend, &n, &other).await;

    // A chmod changes the ctime too: one path check, and the file stays.
    cache_settled(&backend, &n).await;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let before = lockfile::FULL_CHECKS.with(std::cell::Cell::get);
    assert_holds_the_current_file(&backend, &n, &other).await;
    assert!(lockfile::FULL_CHECKS.with(std::cell::Cell::get) > before);
    #[cfg(target_os = "linux")]
    assert_eq!(
        open_descriptors(&path).len(),
        2,
        "one descriptor per backend, kept"
    );
}

/// A name whose cached descriptor is replaced by a fresh one (opened while
/// the cached one was out) is in use: it keeps its second chance.
#[cfg(target_os = "linux")]
#[test]
fn a_fresh_descriptor_for_a_cached_name_keeps_its_second_chance() {
    let tmp = temp_dir();
    assert!(cache::capacity_for(tmp.path()) >= 2, "a local file system");
    let cache = cache::Cache::new(2);
    let key = |i: usize| path::Key::from(format!("g{i}").as_bytes());
    let put = |i: usize| {
        cache.put(
            &key(i),
            lockfile::open_for_test(&tmp.path().join(format!("g{i}"))),
        )
    };
    let cached =
        |i: usize| descriptors_under(tmp.path()).contains(&tmp.path().join(format!("g{i}")));
    put(0);
    put(1);
    // g0's entry gets a descriptor of its own file opened meanwhile.
    put(0);
    assert_eq!(descriptors_under(tmp.path()).len(), 2);
    // g2 comes by twice: the second time it takes the place of the name not
    // used again, g1.
    put(2);
    put(2);
    assert!(cached(0) && !cached(1) && cached(2));
    cache.clear();
}

#[cfg(target_os = "linux")]
#[test]
fn the_cache_keeps_the_descriptors_used_again() {
    let tmp = temp_dir();
    // Sets the process-wide budget, as opening a backend does.
    assert!(cache::capacity_for(tmp.path()) >= 3, "a local file system");
    let cache = cache::Cache::new(3);
    let key = |i: usize| path::Key::from(format!("f{i}").as_bytes());
    let put = |i: usize| {
        cache.put(
            &key(i),
            lockfile::open_for_test(&tmp.path().join(format!("f{i}"))),
        )
    };
    let cached =
        |i: usize| descriptors_under(tmp.path()).contains(&tmp.path().join(format!("f{i}")));
    for i in 0..3 {
        put(i);
    }
    assert_eq!(cache.len(), 3);
    // Full: a file coming by for the first time is turned away (closed).
    put(3);
    assert_eq!(cache.len(), 3);
    assert!(!cached(3) && cache.find(b"f3").is_none());
    assert_eq!(descriptors_under(tmp.path()).len(), 3);
    // f1 is used again: it gets a second chance.
    let (k1, f1) = cache.find(b"f1").unwrap();
    cache.put(&k1, f1.unwrap());
    // f3 coming by again comes in, in place of a file not used again (f0).
    put(3);
    assert!(cached(3) && !cached(0) && cached(1) && cached(2));
    put(4);
    assert!(!cached(4), "first time");
    put(4);
    assert!(
        cached(4) && cached(1) && !cached(2),
        "f1 had its second chance"
    );
    assert_eq!(cache.len(), 3);
    assert_eq!(
        descriptors_under(tmp.path()).len(),
        3,
        "evicted ones are closed"
    );
    // A descriptor out with a holder keeps its key known; another
    // descriptor of a cached file replaces the cached one.
    assert!(cache.take(&key(1)).is_some());
    put(4);
    assert_eq!(cache.len(), 2);
    assert_eq!(descriptors_under(tmp.path()).len(), 2);
    cache.clear();
    assert_eq!(cache.len(), 0);
    assert!(descriptors_under(tmp.path()).is_empty());
    assert_eq!(cache::Cache::new(0).find(b"f2").map(|_| ()), None);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn ofd_lock_excludes_raw_ofd_and_python_lockf() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::Ofd);
    let n = name("cinder-lioadm");
    let path = backend.path_for(&n).unwrap();
    let guard = backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    assert!(
        !probe_free(&path, Mechanism::Ofd),
        "F_OFD_SETLK on another fd must get EAGAIN"
    );
    assert!(
        !python_lockf_free(&path),
        "a Python child's fcntl.lockf must fail while we hold the lock"
    );
    guard.release().await.unwrap();
    assert!(probe_free(&path, Mechanism::Ofd));
    assert!(
        python_lockf_free(&path),
        "Python gets the lock after release"
    );
    // Again on the descriptor kept from the first holding.
    let guard = backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    assert!(!python_lockf_free(&path));
    guard.release().await.unwrap();
    assert!(python_lockf_free(&path));
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn python_lockf_holder_excludes_ofd() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::Ofd);
    let n = name("cinder-infinidat");
    let path = backend.path_for(&n).unwrap();
    let holder = PythonHolder::start(&path);

    let err = backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    let err = acquire(
        &backend,
        &req(&n, Wait::Timeout(Duration::from_millis(200))),
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout, "{}", err.report());
    // `clean` sees the Python holder and keeps its file.
    let report = backend.clean().await.unwrap();
    assert_eq!(report.busy, 1, "{report:?}");
    assert!(report.removed.is_empty(), "{report:?}");
    assert!(path.is_file());

    holder.stop();
    let guard = try_until(&backend, &n, Duration::from_secs(5)).await;
    assert!(!python_lockf_free(&path));
    guard.release().await.unwrap();
}

/// Records the known limitation: `flock` does not see Python's POSIX locks.
#[cfg(target_os = "linux")]
#[tokio::test]
async fn flock_does_not_exclude_posix_locks() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::Flock);
    let n = name("flock-only");
    let path = backend.path_for(&n).unwrap();
    let guard = backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    assert!(!probe_free(&path, Mechanism::Flock));
    assert!(probe_free(&path, Mechanism::Ofd));
    guard.release().await.unwrap();
}

async fn cancelled_kernel_waiter_lets_go(mechanism: Mechanism) {
    let tmp = temp_dir();
    // Two backends: their in-process queues are separate, so the second one
    // really waits in the kernel, as a waiter in another process would.
    let holder = open(tmp.path(), mechanism);
    let waiter = open(tmp.path(), mechanism);
    let n = name("cancel-in-kernel");
    let held = holder.acquire(&req(&n, Wait::TryOnce)).await.unwrap();

    let cancelled = tokio::time::timeout(
        Duration::from_millis(300),
        waiter.acquire(&req(&n, Wait::Forever)),
    )
    .await;
    assert!(cancelled.is_err(), "the waiter cannot get a held lock");
    // The abandoned thread still blocks in the kernel and keeps its entry,
    // but the turn is nobody's: this caller, asking again, must queue, not
    // be told it holds the lock.
    assert_eq!(waiter.active_names(), 1);
    let me = HolderId::current();
    assert!(!waiter.held_by(&req(&n, Wait::Forever), me));
    let err = waiter.acquire(&req(&n, Wait::TryOnce)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);

    held.release().await.unwrap();
    let start = Instant::now();
    let again = try_until(&waiter, &n, Duration::from_secs(2)).await;
    assert!(start.elapsed() < Duration::from_secs(2));
    assert!(waiter.held_by(&req(&n, Wait::Forever), me));
    assert!(
        !holder.held_by(&req(&n, Wait::Forever), me),
        "another table"
    );
    again.release().await.unwrap();
    assert!(!waiter.held_by(&req(&n, Wait::Forever), me));
    let other = try_until(&holder, &n, Duration::from_secs(2)).await;
    other.release().await.unwrap();
    assert_eq!(waiter.active_names(), 0);
    assert_eq!(holder.active_names(), 0);
    assert!(probe_free(&holder.path_for(&n).unwrap(), mechanism));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_kernel_waiter_lets_go_ofd() {
    cancelled_kernel_waiter_lets_go(Mechanism::Ofd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelled_kernel_waiter_lets_go_flock() {
    cancelled_kernel_waiter_lets_go(Mechanism::Flock).await;
}

async fn waiter_retries_on_an_unlinked_file(mechanism: Mechanism) {
    let tmp = temp_dir();
    let first = open(tmp.path(), mechanism);
    let second = Arc::new(open(tmp.path(), mechanism));
    let n = name("unlinked");
    let path = first.path_for(&n).unwrap();
    let held = first.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    let waiting = {
        let (second, n) = (second.clone(), n.clone());
        tokio::spawn(async move { second.acquire(&req(&n, Wait::Forever)).await })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!waiting.is_finished());
    // Someone removes the file while it is held and waited on.
    std::fs::remove_file(&path).unwrap();
    held.release().await.unwrap();

    let guard = tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap_or_else(|_| panic!("the waiter never got the lock"))
        .unwrap()
        .unwrap_or_else(|e| panic!("{}", e.report()));
    // The waiter holds the file the path names now, not the unlinked one.
    assert!(path.is_file(), "the file was created again");
    assert!(
        !probe_free(&path, mechanism),
        "the lock must be on the current file"
    );
    let err = first.acquire(&req(&n, Wait::TryOnce)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    guard.release().await.unwrap();
    assert!(probe_free(&path, mechanism));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_retries_on_an_unlinked_file_ofd() {
    waiter_retries_on_an_unlinked_file(Mechanism::Ofd).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiter_retries_on_an_unlinked_file_flock() {
    waiter_retries_on_an_unlinked_file(Mechanism::Flock).await;
}

/// Takes and releases each of `names` once, leaving their lock files behind.
async fn create_lock_files(backend: &FileBackend, names: &[&str]) {
    for n in names {
        let guard = backend.acquire(&req(&name(n), Wait::TryOnce)).await;
        guard.unwrap().release().await.unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clean_removes_only_unheld_lock_files() {
    let tmp = temp_dir();
    let dir = tmp.path().join("locks");
    let backend = open(&dir, Mechanism::default());
    create_lock_files(&backend, &["a", "b", "c"]).await;
    let held = backend
        .acquire(&req(&name("b"), Wait::TryOnce))
        .await
        .unwrap();
    // Held through the other mechanism: still busy for `clean`.
    let flock = open(&dir, Mechanism::Flock);
    let flock_held = flock
        .acquire(&req(&name("d"), Wait::TryOnce))
        .await
        .unwrap();
    // Things that are not lock files are left alone.
    std::fs::create_dir(dir.join("subdir")).unwrap();
    let outside = tmp.path().join("outside");
    std::fs::write(&outside, b"").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

    let report = backend.clean().await.unwrap();
    let expected: Vec<String> = ["a", "c"]
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    assert_eq!(report.removed, expected);
    assert_eq!(report.busy, 2);
    assert!(!dir.join("a").exists() && !dir.join("c").exists());
    assert!(dir.join("b").is_file() && dir.join("d").is_file());
    assert!(dir.join("subdir").is_dir());
    assert!(dir.join("link").is_symlink() && outside.is_file());
    // The holdings survived: nobody else gets in.
    let err = backend
        .acquire(&req(&name("b"), Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    assert!(!probe_free(&dir.join("b"), backend.mechanism()));
    assert!(!probe_free(&dir.join("d"), Mechanism::Flock));

    held.release().await.unwrap();
    flock_held.release().await.unwrap();
    let report = backend.clean().await.unwrap();
    assert_eq!(report.busy, 0);
    assert_eq!(
        report.removed,
        vec![
            dir.join("b").display().to_string(),
            dir.join("d").display().to_string()
        ]
    );
    // A lock taken after cleaning just creates its file again.
    let again = backend
        .acquire(&req(&name("a"), Wait::TryOnce))
        .await
        .unwrap();
    assert!(dir.join("a").is_file());
    again.release().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_follow_the_boot_clock_across_backends() {
    let tmp = temp_dir();
    let one = open(tmp.path(), Mechanism::default());
    let two = open(tmp.path(), Mechanism::Flock);
    let n = name("fence");
    let before = sys::clock_nanos();
    let a = one.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    let token_a = a.token();
    assert!(token_a >= before, "{token_a} < clock {before}");
    a.release().await.unwrap();
    let b = two.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    assert!(b.token() > token_a);
    assert!(
        b.token() <= sys::clock_nanos() + 1_000_000,
        "close to the clock"
    );
    b.release().await.unwrap();
}

#[test]
fn works_without_a_tokio_runtime() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::default());
    let n = name("no-runtime");
    let path = backend.path_for(&n).unwrap();
    let guard = block_on(backend.acquire(&req(&n, Wait::Forever))).unwrap();
    let err = block_on(backend.acquire(&req(&n, Wait::TryOnce))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    block_on(guard.release()).unwrap();
    assert!(probe_free(&path, backend.mechanism()));
    let report = block_on(backend.clean()).unwrap();
    assert_eq!(report.removed, vec![path.display().to_string()]);
}

#[test]
fn drop_releases_outside_any_runtime() {
    let tmp = temp_dir();
    let backend = Arc::new(open(tmp.path(), Mechanism::default()));
    let n = name("drop-after-runtime");
    let path = backend.path_for(&n).unwrap();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .build()
        .unwrap();
    let guard = runtime
        .block_on(backend.acquire(&req(&n, Wait::TryOnce)))
        .unwrap();
    drop(runtime);
    assert!(!probe_free(&path, backend.mechanism()));
    std::thread::spawn(move || drop(guard)).join().unwrap();
    assert!(probe_free(&path, backend.mechanism()));
    assert_eq!(backend.active_names(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hundred_thousand_names_leave_the_table_empty() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::default());
    for i in 0..100_000u32 {
        let guard = backend
            .acquire(&req(&name(&format!("vol-{i}")), Wait::Forever))
            .await
            .unwrap();
        guard.release().await.unwrap();
    }
    assert_eq!(backend.active_names(), 0);
    // 16 shards, each keeping a handful of idle slots (room for at most 112).
    let capacity = backend.table.capacity();
    assert!(capacity <= 16 * 112, "the table stayed small: {capacity}");
    // The cache stays within its bound, in entries, memory and descriptors.
    let bound = backend.shared.cache.capacity();
    assert!(bound > 0, "a local file system: the cache is on");
    assert_eq!(backend.cached_files(), bound);
    // The hash table may double once when removals leave tombstones (it
    // grows instead of rehashing in place above half its capacity), never more.
    let room = backend.shared.cache.room();
    assert!(room <= 4 * bound, "the cache never grew: room for {room}");
    #[cfg(target_os = "linux")]
    assert_eq!(descriptors_under(tmp.path()).len(), bound);
    drop(backend);
    #[cfg(target_os = "linux")]
    assert!(
        descriptors_under(tmp.path()).is_empty(),
        "closed with the backend"
    );
}

/// A child process shares its parent's open file descriptions: it must
/// neither lock its parent's cached descriptors (it would share the lock)
/// nor unlock an inherited holding (it would release the parent's lock).
#[cfg(target_os = "linux")]
#[test]
fn a_forked_child_opens_its_own_descriptors() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::Ofd);
    let cached = name("cached-at-fork");
    let held = name("held-at-fork");
    let cached_path = backend.path_for(&cached).unwrap();
    let held_path = backend.path_for(&held).unwrap();
    drop(block_on(backend.acquire(&req(&cached, Wait::TryOnce))).unwrap());
    assert_eq!(backend.cached_files(), 1);
    let guard = block_on(backend.acquire(&req(&held, Wait::TryOnce))).unwrap();

    let mut to_child = [0; 2];
    let mut to_parent = [0; 2];
    // SAFETY: valid two-element arrays for the descriptors.
    assert_eq!(unsafe { libc::pipe(to_child.as_mut_ptr()) }, 0);
    // SAFETY: as above.
    assert_eq!(unsafe { libc::pipe(to_parent.as_mut_ptr()) }, 0);
    // SAFETY: the child only runs this test's code on backends no other
    // thread touches, then leaves with `_exit` (no unwinding, no destructors).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        // The child: drop the inherited holding (must not unlock the
        // parent's lock), then take the cached name (must lock a descriptor of
        // its own), tell the parent, and hold until told to stop.
        drop(guard);
        let code = match block_on(backend.acquire(&req(&cached, Wait::TryOnce))) {
            Ok(guard) => {
                let mut byte = [1u8];
                // SAFETY: valid descriptors and one-byte buffers.
                unsafe {
                    libc::write(to_parent[1], byte.as_ptr().cast(), 1);
                    libc::read(to_child[0], byte.as_mut_ptr().cast(), 1);
                }
                std::mem::forget(guard);
                0
            }
            Err(_) => 3,
        };
        // SAFETY: ends the child at once.
        unsafe { libc::_exit(code) };
    }
    let mut byte = [0u8];
    // SAFETY: a valid descriptor and a one-byte buffer.
    let n = unsafe { libc::read(to_parent[0], byte.as_mut_ptr().cast(), 1) };
    assert_eq!(n, 1, "the child could not take the cached name");
    // The child holds `cached` on its own descriptor: the parent's cached
    // one is refused, and the parent's holding of `held` survived.
    let err = block_on(backend.acquire(&req(&cached, Wait::TryOnce))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "{}", err.report());
    assert!(!probe_free(&cached_path, Mechanism::Ofd));
    assert!(
        !probe_free(&held_path, Mechanism::Ofd),
        "the child released the parent's lock"
    );
    // SAFETY: a valid descriptor and a one-byte buffer.
    unsafe { libc::write(to_child[1], byte.as_ptr().cast(), 1) };
    let mut status = 0;
    // SAFETY: `pid` is our child.
    assert_eq!(unsafe { libc::waitpid(pid, &mut status, 0) }, pid);
    assert!(
        libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        "child status {status}"
    );
    for fd in to_child.into_iter().chain(to_parent) {
        // SAFETY: our own pipe ends.
        unsafe { libc::close(fd) };
    }
    drop(block_on(backend.acquire(&req(&cached, Wait::TryOnce))).unwrap());
    drop(guard);
    assert!(probe_free(&held_path, Mechanism::Ofd));
}

#[tokio::test]
async fn try_acquire_now_takes_only_free_cached_locks() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::Ofd);
    let other = open(tmp.path(), Mechanism::Ofd);
    let n = name("now");
    let path = backend.path_for(&n).unwrap();
    let request = req(&n, Wait::Forever);
    assert!(
        backend.try_acquire_now(&request).is_none(),
        "nothing cached yet: the caller goes through acquire"
    );
    drop(backend.acquire(&request).await.unwrap());
    let guard = backend.try_acquire_now(&request).expect("free and cached");
    assert!(!probe_free(&path, Mechanism::Ofd));
    assert!(backend.try_acquire_now(&request).is_none(), "held here");
    let err = other.acquire(&req(&n, Wait::TryOnce)).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    guard.release().await.unwrap();

    // Held by another backend (another process, for the kernel).
    let elsewhere = other.acquire(&req(&n, Wait::TryOnce)).await.unwrap();
    assert!(backend.try_acquire_now(&request).is_none());
    assert_eq!(backend.cached_files(), 1, "the descriptor stays cached");
    elsewhere.release().await.unwrap();

    // A cached file unlinked meanwhile: the lock is taken on the new file.
    std::fs::remove_file(&path).unwrap();
    let guard = backend.try_acquire_now(&request).expect("free");
    assert!(path.is_file());
    assert!(!probe_free(&path, Mechanism::Ofd));
    drop(guard);
    assert_eq!(backend.active_names(), 0);
}

/// Where the file system has multigrain timestamps, a ctime is trusted as
/// soon as it was read: a file renamed away right after it was created (in
/// the same tick of the coarse clock) is still caught by its new ctime.
#[tokio::test]
async fn a_cached_file_moved_right_after_creation_is_not_locked_again() {
    let tmp = temp_dir();
    let backend = open(tmp.path(), Mechanism::Ofd);
    let other = open(tmp.path(), Mechanism::Ofd);
    let n = name("moved-at-once");
    let path = backend.path_for(&n).unwrap();
    let moved = tmp.path().join("moved-away");
    let checks = || lockfile::FULL_CHECKS.with(std::cell::Cell::get);
    for round in 0..20 {
        drop(backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap());
        let before = checks();
        drop(backend.acquire(&req(&n, Wait::TryOnce)).await.unwrap());
        if backend.shared.later_ctime_after_read {
            assert_eq!(checks(), before, "trusted at once ({round})");
        }
        std::fs::rename(&path, &moved).unwrap();
        let before = checks();
        assert_holds_the_current_file(&backend, &n, &other).await;
        assert!(checks() > before, "the move was noticed ({round})");
        assert!(probe_free(&moved, Mechanism::Ofd));
        std::fs::remove_file(&moved).unwrap();
        let report = other.clean().await.unwrap();
        assert_eq!(report.removed.len(), 1);
    }
}

/// This host's kernel and temporary directory, for the record.
#[cfg(target_os = "linux")]
#[test]
fn the_multigrain_probe_leaves_nothing_behind() {
    let tmp = temp_dir();
    let fine = sys::later_ctime_after_read(tmp.path());
    eprintln!("multigrain ctime in {}: {fine}", tmp.path().display());
    assert_eq!(std::fs::read_dir(tmp.path()).unwrap().count(), 0);
    assert!(descriptors_under(tmp.path()).is_empty());
    assert!(!sys::later_ctime_after_read(&tmp.path().join("missing")));
}

#[tokio::test]
async fn clean_walks_the_tree_layout_but_not_tooz_data_or_symlinks() {
    let tmp = temp_dir();
    let dir = tmp.path().join("locks");
    let backend = FileBackend::open(FileConfig {
        layout: crate::Layout::Tree,
        ..FileConfig::new(&dir)
    })
    .unwrap();
    create_lock_files(&backend, &["top", "a/b/c", "a/d"]).await;
    let held = backend
        .acquire(&req(&name("a/d"), Wait::TryOnce))
        .await
        .unwrap();
    // tooz keeps group membership under `groups/`: not locks.
    std::fs::create_dir_all(dir.join("groups/g1")).unwrap();
    std::fs::write(dir.join("groups/g1/member"), b"tooz").unwrap();
    // A symlinked directory is not followed.
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("victim"), b"").unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("a/link")).unwrap();

    let report = backend.clean().await.unwrap();
    let expected: Vec<String> = ["a/b/c", "top"]
        .iter()
        .map(|f| dir.join(f).display().to_string())
        .collect();
    assert_eq!(report.removed, expected);
    assert_eq!(report.busy, 1);
    assert!(dir.join("a/d").is_file(), "held: kept");
    assert!(dir.join("a/b").is_dir(), "directories stay");
    assert!(dir.join("groups/g1/member").is_file());
    assert!(outside.join("victim").is_file());
    let err = backend
        .acquire(&req(&name("a/d"), Wait::TryOnce))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock, "the holding survived");
    held.release().await.unwrap();
}

/// A subdirectory swapped for a symlink after `clean` entered it does not
/// lead the walk outside: what it opened is what it cleans.
#[test]
fn clean_works_inside_the_directories_it_opened() {
    let tmp = temp_dir();
    let dir = tmp.path().join("locks");
    std::fs::create_dir_all(dir.join("a")).unwrap();
    std::fs::write(dir.join("a/x"), b"").unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("x"), b"").unwrap();

    let top = crate::dir::Dir::open(&dir).unwrap();
    let sub = top.subdir(std::ffi::OsStr::new("a")).unwrap().unwrap();
    // The swap: `a` now leads outside, the real one lives on as `a.moved`.
    std::fs::rename(dir.join("a"), dir.join("a.moved")).unwrap();
    std::os::unix::fs::symlink(&outside, dir.join("a")).unwrap();
    let cleaned = sub
        .remove_if_unheld(std::ffi::OsStr::new("x"), Mechanism::available())
        .unwrap();
    assert_eq!(cleaned, crate::dir::Cleaned::Removed);
    assert!(outside.join("x").is_file(), "nothing outside was touched");
    assert!(
        !dir.join("a.moved/x").exists(),
        "the opened directory was cleaned"
    );
    // Entering `a` now refuses the symlink.
    assert!(top.subdir(std::ffi::OsStr::new("a")).unwrap().is_none());
}
