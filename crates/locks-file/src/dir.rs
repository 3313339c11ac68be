//! The lock directory: preparing it ([`prepare_dir`] when a backend is
//! opened, [`prepare_parent`] for the subdirectories of the tree layout) and
//! cleaning it ([`clean_dir`], walking it through [`Dir`]).
//!
//! # Permissions and sharing the directory between users
//!
//! [`FileBackend::open`] creates a missing lock directory with mode `0700`:
//! only its owner can lock. It never changes the mode of an existing directory.
//! To share locks between several users (say `cinder` and an operator's
//! tools), create the directory yourself, owned by a common group, with the
//! setgid bit so new lock files inherit that group, and let every user run
//! with a umask that keeps group write access:
//!
//! ```text
//! install -d -o cinder -g cinder -m 2770 /var/lib/cinder/locks
//! umask 002    # in every process that locks (0644 & ~002 would drop the group's write bit)
//! ```
//!
//! Lock files are created `0644 & ~umask`; a write lock needs write access, so
//! a file created by another user with umask `022` cannot be locked by the
//! group until its mode is fixed (the error then says so).
//!
//!
//! # Cleaning by descriptor
//!
//! Every name is looked up inside a directory the process already has open
//! (`openat`, `fstatat`, `unlinkat`), never by a path from the top again. A
//! subdirectory swapped for a symlink while `clean` walks the tree therefore
//! cannot lead it outside the lock directory: a directory is entered with
//! `O_NOFOLLOW`, and what it was when entered is what gets cleaned.
//!
//! [`FileBackend::open`]: crate::FileBackend::open

use std::ffi::{CStr, CString, OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::path::{Path, PathBuf};

use locks_core::{CleanReport, Error, ErrorKind, Result};

use crate::sys::{lock_error, try_lock, unlock};
use crate::{Layout, Mechanism};

/// Creates the subdirectories a tree-layout `path` inside `dir` needs, and
/// checks that none of them leads out of `dir` through a symlink.
pub(crate) fn prepare_parent(dir: &Path, path: &Path) -> Result<()> {
    let Some(parent) = path.parent().filter(|p| *p != dir) else {
        return Ok(());
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(parent)
        .map_err(|e| {
            Error::io(
                format_args!("creating lock subdirectory {}", parent.display()),
                e,
            )
        })?;
    let real_parent = parent.canonicalize().map_err(|e| {
        Error::io(
            format_args!("resolving lock subdirectory {}", parent.display()),
            e,
        )
    })?;
    let real_dir = dir.canonicalize().map_err(|e| {
        Error::io(
            format_args!("resolving lock directory {}", dir.display()),
            e,
        )
    })?;
    if !real_parent.starts_with(&real_dir) {
        return Err(Error::new(
            ErrorKind::PermissionDenied,
            format!(
                "lock subdirectory {} leads out of the lock directory {} through a symlink; refused",
                parent.display(),
                dir.display()
            ),
        ));
    }
    Ok(())
}

/// Makes sure `dir` is a directory, creating it with mode 0700 if missing.
pub(crate) fn prepare_dir(dir: &Path) -> Result<()> {
    let not_a_dir = || {
        Error::new(
            ErrorKind::Io,
            format!(
                "lock directory {} exists but is not a directory: remove it or choose \
                 another lock directory",
                dir.display()
            ),
        )
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => return Err(not_a_dir()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(Error::io(
                format_args!(
                    "cannot inspect lock directory {}: check that this user may search its \
                     parent directories",
                    dir.display()
                ),
                e,
            ));
        }
    }
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| {
            Error::io(
                format_args!(
                    "cannot create lock directory {}: create it yourself (for several users, \
                     a group-owned directory with mode 2770) or choose another lock directory",
                    dir.display()
                ),
                e,
            )
        })?;
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(not_a_dir()),
        Err(e) => Err(Error::io(
            format_args!("cannot inspect lock directory {}", dir.display()),
            e,
        )),
    }
}

/// What [`Dir::remove_if_unheld`] did with one file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cleaned {
    /// Nobody held it; it was unlinked.
    Removed,
    /// Someone holds it (with one of the mechanisms); it stays.
    Busy,
    /// It disappeared, or the name no longer names a regular file; nothing done.
    Gone,
}

/// What a directory entry is, not following symlinks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    Directory,
    File,
    /// A symlink, a socket, anything else: left alone.
    Other,
}

/// An open directory and the path it was opened by (for messages only).
#[derive(Debug)]
pub(crate) struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the lock directory itself (following a symlink there: the
    /// configured directory is trusted).
    pub(crate) fn open(path: &Path) -> Result<Dir> {
        let c_path = c_string(path.as_os_str(), path)?;
        // SAFETY: a valid NUL-terminated path and plain flags.
        let fd = unsafe {
            libc::open(
                c_path.as_ptr(),
                libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
            )
        };
        let fd = owned(fd).map_err(|e| {
            Error::io(
                format_args!("cannot open lock directory {}", path.display()),
                e,
            )
        })?;
        Ok(Dir {
            fd,
            path: path.to_owned(),
        })
    }

    /// The path this directory was opened by.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Opens `name` in this directory with `flags` (never `O_CREAT`), and
    /// gives its path for messages with the outcome.
    fn open_at(&self, name: &OsStr, flags: libc::c_int) -> Result<(PathBuf, io::Result<OwnedFd>)> {
        let path = self.path.join(name);
        let c_name = c_string(name, &path)?;
        // SAFETY: our open directory, a valid NUL-terminated name, and flags
        // without O_CREAT (so no mode argument is read).
        let fd = unsafe { libc::openat(self.fd.as_raw_fd(), c_name.as_ptr(), flags) };
        Ok((path, owned(fd)))
    }

    /// The subdirectory `name`, entered without following a symlink;
    /// `Ok(None)` if it is gone or is no longer a directory.
    pub(crate) fn subdir(&self, name: &OsStr) -> Result<Option<Dir>> {
        let (path, opened) = self.open_at(
            name,
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC,
        )?;
        match opened {
            Ok(fd) => Ok(Some(Dir { fd, path })),
            Err(e) if is_gone_or_swapped(&e) => Ok(None),
            Err(e) => Err(Error::io(
                format_args!("cannot open lock subdirectory {}", path.display()),
                e,
            )),
        }
    }

    /// The names in this directory (without `.` and `..`) and what each is.
    pub(crate) fn entries(&self) -> Result<Vec<(OsString, Kind)>> {
        let list_error = |e| {
            Error::io(
                format_args!("cannot list lock directory {}", self.path.display()),
                e,
            )
        };
        // `fdopendir` takes its descriptor over: give it a duplicate.
        // SAFETY: duplicating our open descriptor.
        let dup = owned(unsafe { libc::fcntl(self.fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 0) })
            .map_err(list_error)?;
        // SAFETY: `dup` is an open directory descriptor, now owned by the stream.
        let stream = unsafe { libc::fdopendir(dup.as_raw_fd()) };
        if stream.is_null() {
            return Err(list_error(io::Error::last_os_error()));
        }
        std::mem::forget(dup);
        // SAFETY: the stream is open; rewinding makes the listing complete
        // even though the duplicate shares its offset with `self.fd`.
        unsafe { libc::rewinddir(stream) };
        let mut names = Vec::new();
        loop {
            // SAFETY: the stream is open until `closedir` below; the entry
            // is read before the next call.
            let entry = unsafe { libc::readdir(stream) };
            if entry.is_null() {
                break;
            }
            // SAFETY: `d_name` is a NUL-terminated name inside the entry.
            let name = unsafe { CStr::from_ptr((*entry).d_name.as_ptr()) };
            let bytes = name.to_bytes();
            if bytes != b"." && bytes != b".." {
                names.push(OsString::from_vec(bytes.to_vec()));
            }
        }
        // SAFETY: closes the stream (and its descriptor) once.
        unsafe { libc::closedir(stream) };
        let mut entries = Vec::with_capacity(names.len());
        for name in names {
            let kind = match self.stat(&name)? {
                None => continue,
                Some(stat) => match stat.st_mode & libc::S_IFMT {
                    libc::S_IFDIR => Kind::Directory,
                    libc::S_IFREG => Kind::File,
                    _ => Kind::Other,
                },
            };
            entries.push((name, kind));
        }
        Ok(entries)
    }

    /// `fstatat` of `name`, not following a symlink; `None` if it is gone.
    fn stat(&self, name: &OsStr) -> Result<Option<libc::stat>> {
        let path = self.path.join(name);
        let c_name = c_string(name, &path)?;
        // SAFETY: all-zero bytes are a valid `stat`; it is written by the call.
        let mut stat: libc::stat = unsafe { std::mem::zeroed() };
        // SAFETY: our open directory, a valid name, a writable `stat`.
        let rc = unsafe {
            libc::fstatat(
                self.fd.as_raw_fd(),
                c_name.as_ptr(),
                &mut stat,
                libc::AT_SYMLINK_NOFOLLOW,
            )
        };
        if rc == 0 {
            return Ok(Some(stat));
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            Ok(None)
        } else {
            Err(Error::io(format_args!("cannot stat {}", path.display()), e))
        }
    }

    /// Unlinks the lock file `name` of this directory if nobody holds it
    /// with any of `mechanisms`: it is opened without following a symlink,
    /// locked, checked to still be what `name` names here, and unlinked
    /// while the lock is held.
    pub(crate) fn remove_if_unheld(
        &self,
        name: &OsStr,
        mechanisms: &[Mechanism],
    ) -> Result<Cleaned> {
        let (path, opened) = self.open_at(
            name,
            // O_NONBLOCK: a FIFO swapped in meanwhile must not block the open.
            libc::O_RDWR | libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK,
        )?;
        let file = match opened {
            Ok(fd) => File::from(fd),
            Err(e) if is_gone_or_swapped(&e) => return Ok(Cleaned::Gone),
            Err(e) => {
                return Err(Error::io(
                    format_args!("cannot open lock file {} to clean it", path.display()),
                    e,
                ));
            }
        };
        let held = file
            .metadata()
            .map_err(|e| Error::io(format_args!("cannot stat lock file {}", path.display()), e))?;
        if !held.file_type().is_file() {
            return Ok(Cleaned::Gone);
        }
        let mut taken = Vec::with_capacity(mechanisms.len());
        let mut outcome = Ok(Cleaned::Busy);
        for &mechanism in mechanisms {
            match try_lock(&file, mechanism) {
                Ok(true) => taken.push(mechanism),
                Ok(false) => break,
                Err(e) => {
                    outcome = Err(lock_error(&path, mechanism, false, e));
                    break;
                }
            }
        }
        if taken.len() == mechanisms.len() {
            outcome = match self.stat(name) {
                Ok(Some(now)) if same_inode(&now, &held) => self.unlink(name, &path),
                Ok(_) => Ok(Cleaned::Gone),
                Err(e) => Err(e),
            };
        }
        for mechanism in taken {
            // Best effort: closing the descriptor below releases the lock anyway.
            let _ = unlock(&file, mechanism);
        }
        outcome
    }

    fn unlink(&self, name: &OsStr, path: &Path) -> Result<Cleaned> {
        let c_name = c_string(name, path)?;
        // SAFETY: our open directory and a valid name.
        let rc = unsafe { libc::unlinkat(self.fd.as_raw_fd(), c_name.as_ptr(), 0) };
        if rc == 0 {
            return Ok(Cleaned::Removed);
        }
        let e = io::Error::last_os_error();
        if e.kind() == io::ErrorKind::NotFound {
            return Ok(Cleaned::Gone);
        }
        Err(Error::io(
            format_args!(
                "cannot remove unheld lock file {}: this user needs write access to its directory",
                path.display()
            ),
            e,
        ))
    }
}

/// How deep [`clean`](locks_core::Backend::clean) descends into a tree layout.
const MAX_CLEAN_DEPTH: usize = 64;

/// Cleans `dir`, which is `depth` levels below the lock directory, into `report`.
pub(crate) fn clean_dir(
    dir: &Dir,
    layout: Layout,
    depth: usize,
    report: &mut CleanReport,
) -> Result<()> {
    for (name, kind) in dir.entries()? {
        match kind {
            Kind::Directory if layout == Layout::Tree && depth < MAX_CLEAN_DEPTH => {
                let tooz_data = depth == 0 && (name == "groups" || name == "tmp");
                if tooz_data {
                    continue;
                }
                // Entered without following a symlink: `None` if it was
                // swapped for something else meanwhile.
                if let Some(sub) = dir.subdir(&name)? {
                    clean_dir(&sub, layout, depth + 1, report)?;
                }
            }
            Kind::File => match dir.remove_if_unheld(&name, Mechanism::available())? {
                Cleaned::Removed => {
                    report
                        .removed
                        .push(dir.path().join(&name).display().to_string());
                }
                Cleaned::Busy => report.busy += 1,
                Cleaned::Gone => {}
            },
            Kind::Directory | Kind::Other => {}
        }
    }
    Ok(())
}

/// A descriptor returned by a system call, or its error.
fn owned(fd: libc::c_int) -> io::Result<OwnedFd> {
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor from a successful call, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Whether `stat` and `meta` describe the same file.
// The widths of `st_dev` and `st_ino` differ between platforms.
#[allow(clippy::unnecessary_cast)]
fn same_inode(stat: &libc::stat, meta: &std::fs::Metadata) -> bool {
    stat.st_dev as u64 == meta.dev() && stat.st_ino as u64 == meta.ino()
}

/// `ENOENT`, or the open refusing what is there now (a symlink with
/// `O_NOFOLLOW`, a non-directory with `O_DIRECTORY`, a directory for
/// writing).
fn is_gone_or_swapped(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::NotFound
        || matches!(
            e.raw_os_error(),
            Some(code) if code == libc::ELOOP || code == libc::ENOTDIR || code == libc::EISDIR
        )
        || cfg!(any(target_os = "freebsd", target_os = "dragonfly"))
            && e.raw_os_error() == Some(libc::EMLINK)
}

fn c_string(name: &OsStr, path: &Path) -> Result<CString> {
    CString::new(name.as_bytes()).map_err(|_| {
        Error::new(
            ErrorKind::Io,
            format!("path {} contains a NUL byte", path.display()),
        )
    })
}
