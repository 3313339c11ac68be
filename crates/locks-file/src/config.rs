//! The configuration of a file backend: the directory, the kernel lock
//! ([`Mechanism`]) and how names map to paths ([`Layout`]).
//!
//! # Mechanisms: OFD locks on Linux, `flock` elsewhere
//!
//! Python's oslo.concurrency (through fasteners) and tooz take classic POSIX
//! record locks: `fcntl.lockf(f, LOCK_EX)`, that is `fcntl(F_SETLK, F_WRLCK)`
//! over the whole file. To exclude them a Rust process must use the same lock
//! family, and [`Mechanism::Ofd`] (the default on Linux) does: a whole-file
//! write lock with `fcntl(F_OFD_SETLK / F_OFD_SETLKW)`, `l_start = 0`,
//! `l_len = 0`. Open-file-description locks (Linux 3.15 and newer) conflict
//! with classic POSIX locks in both directions, but unlike them they belong
//! to the open file, not the process: two descriptors in one process exclude
//! each other, and closing some unrelated descriptor of the file does not drop
//! the lock.
//!
//! [`Mechanism::Flock`] uses `flock(2)` (through `fs2`). On local file systems
//! it does **not** conflict with Python's `lockf` locks, so use it only where
//! no Python process shares the lock files, or on systems without OFD locks.
//! It is the default outside Linux, where [`Mechanism::Ofd`] is refused with
//! [`ErrorKind::Unsupported`]. All processes sharing a directory must use the
//! same mechanism.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use locks_core::{Error, ErrorKind, Result};

/// Which kernel lock the backend takes on a lock file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Mechanism {
    /// Linux open-file-description locks: `fcntl(F_OFD_SETLK[W])`, a write
    /// lock over the whole file. Conflicts with the classic POSIX locks of
    /// Python's oslo.concurrency, fasteners and tooz. Linux only.
    Ofd,
    /// BSD `flock(2)` exclusive locks. Does not exclude Python's `lockf`
    /// locks on local file systems.
    Flock,
}

impl Mechanism {
    /// The lower-case name used in configuration: `"ofd"` or `"flock"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mechanism::Ofd => "ofd",
            Mechanism::Flock => "flock",
        }
    }

    /// Every mechanism this platform offers.
    pub(crate) fn available() -> &'static [Mechanism] {
        if cfg!(target_os = "linux") {
            &[Mechanism::Ofd, Mechanism::Flock]
        } else {
            &[Mechanism::Flock]
        }
    }
}

impl Default for Mechanism {
    /// [`Mechanism::Ofd`] on Linux, [`Mechanism::Flock`] elsewhere.
    fn default() -> Self {
        if cfg!(target_os = "linux") {
            Mechanism::Ofd
        } else {
            Mechanism::Flock
        }
    }
}

impl fmt::Display for Mechanism {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Mechanism {
    type Err = Error;

    /// Parses `"ofd"` or `"flock"` (ASCII case ignored).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for anything else.
    fn from_str(s: &str) -> Result<Self> {
        if s.eq_ignore_ascii_case("ofd") {
            Ok(Mechanism::Ofd)
        } else if s.eq_ignore_ascii_case("flock") {
            Ok(Mechanism::Flock)
        } else {
            Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "unknown file lock mechanism {s:?}: expected \"ofd\" (Linux, interoperates \
                     with Python's fcntl locks) or \"flock\""
                ),
            ))
        }
    }
}

/// How lock names map to paths inside the lock directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// One file per name directly in the directory, every `/` replaced by `_`:
    /// oslo.concurrency's external locks ([`lock_file_name`](crate::lock_file_name)).
    #[default]
    Flat,
    /// A `/` in the name makes subdirectories, as OpenStack tooz's `file://`
    /// driver does: the path is normalised (`a//b/./c` is `a/b/c`), may not
    /// leave the directory, and tooz's reserved paths (`groups`, `tmp`,
    /// `.driver_lock`) are refused ([`lock_file_path`](crate::lock_file_path)).
    Tree,
}

impl Layout {
    /// The name used in URLs (`flat`, `tree`).
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Flat => "flat",
            Layout::Tree => "tree",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "flat" => Ok(Layout::Flat),
            "tree" => Ok(Layout::Tree),
            _ => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "unknown lock file layout {s:?}: expected \"flat\" (oslo.concurrency: `/` becomes `_`) \
                     or \"tree\" (tooz file driver: `/` makes subdirectories)"
                ),
            )),
        }
    }
}

/// How to build a [`FileBackend`](crate::FileBackend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileConfig {
    /// The lock directory: one file per lock name. Created (mode `0700`) if missing.
    pub dir: PathBuf,
    /// The kernel lock to take.
    pub mechanism: Mechanism,
    /// How names map to paths. Default [`Layout::Flat`].
    pub layout: Layout,
}

impl FileConfig {
    /// A configuration for `dir` with the platform's default [`Mechanism`] and the flat layout.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileConfig {
            dir: dir.into(),
            mechanism: Mechanism::default(),
            layout: Layout::default(),
        }
    }
}
