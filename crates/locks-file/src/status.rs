//! Who holds a lock file and who waits for it, as the kernel tells: nothing
//! is written on the acquire path for it.
//!
//! `/proc/locks` lists every lock and every blocked request, by device and
//! inode. A `flock` or POSIX lock names its process; an OFD lock (this
//! backend's default) shows pid -1, so the holder is found through
//! `/proc/PID/fdinfo/FD`, whose `lock:` lines are the locks held through
//! that descriptor. Blocked OFD requests name no process anywhere: the
//! kernel says how many wait, not who. Neither keeps a time or a token.

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use locks_core::{Error, LockName, LockStatus, Party, Result, Scope, host_name, program_of};

/// One line of `/proc/locks` about our file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct KernelLock {
    /// A blocked request (`->`), not a held lock.
    blocked: bool,
    /// The process, where the kernel names one (not for OFD locks).
    pid: Option<u32>,
}

/// The status of the lock file at `path`.
///
/// # Errors
/// [`ErrorKind::Io`](locks_core::ErrorKind::Io) naming the path when the
/// file or `/proc/locks` cannot be read.
pub(crate) fn status(
    path: &Path,
    name: &LockName,
    scope: Scope,
    backend: String,
) -> Result<LockStatus> {
    let mut status = LockStatus::free(name.clone(), scope, backend);
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        // No lock file: nobody holds or waits for it.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(status),
        Err(e) => {
            return Err(Error::io(
                format_args!("reading lock file {}", path.display()),
                e,
            ));
        }
    };
    let key = kernel_key(meta.dev(), meta.ino());
    let table =
        std::fs::read_to_string("/proc/locks").map_err(|e| Error::io("reading /proc/locks", e))?;
    let locks: Vec<KernelLock> = table.lines().filter_map(|l| parse(l, &key)).collect();
    let host = host_name();
    let party = |pid: Option<u32>| Party {
        host: Some(host.clone()),
        pid,
        program: pid.and_then(program_of),
        ..Party::default()
    };
    if let Some(held) = locks.iter().find(|l| !l.blocked) {
        let pid = held.pid.or_else(|| holder_by_fdinfo(&key));
        if pid.is_none() {
            status.notes.push(
                "the holder's process is not visible here (its /proc/PID/fdinfo cannot be read: \
                 run as its user or as root)"
                    .to_owned(),
            );
        }
        status.holder = Some(party(pid));
    }
    status.waiters = locks
        .iter()
        .filter(|l| l.blocked)
        .map(|l| party(l.pid))
        .collect();
    if status.waiters.iter().any(|w| w.pid.is_none()) {
        status.notes.push(
            "the kernel does not say which processes wait on an OFD lock, nor in what order: \
             only how many"
                .to_owned(),
        );
    }
    if status.holder.is_some() || !status.waiters.is_empty() {
        status.notes.push(
            "lock files keep no label, since-time or token; tasks of one process queue inside it, \
             and only the first of them shows in the kernel"
                .to_owned(),
        );
    }
    Ok(status)
}

/// Every lock file under `dir` that is held or waited for: the files whose
/// device and inode `/proc/locks` lists, found by walking the directory
/// (its subdirectories too in the tree layout), symlinks not followed. Each
/// is named by its path in the directory, which in the flat layout is the
/// lock name with every `/` replaced by `_`.
///
/// # Errors
/// [`ErrorKind::Io`](locks_core::ErrorKind::Io) when `/proc/locks` or the
/// directory cannot be read.
pub(crate) fn all(dir: &Path, scope: Scope, backend: &str) -> Result<Vec<LockStatus>> {
    let table =
        std::fs::read_to_string("/proc/locks").map_err(|e| Error::io("reading /proc/locks", e))?;
    let busy: HashSet<&str> = table
        .lines()
        .filter_map(|line| {
            line.split_whitespace()
                .find(|f| f.matches(':').count() == 2)
        })
        .collect();
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(at) = pending.pop() {
        let entries = std::fs::read_dir(&at)
            .map_err(|e| Error::io(format_args!("listing lock directory {}", at.display()), e))?;
        for entry in entries.flatten() {
            let Ok(meta) = entry.path().symlink_metadata() else {
                continue;
            };
            if meta.is_dir() {
                pending.push(entry.path());
            } else if meta.is_file() && busy.contains(kernel_key(meta.dev(), meta.ino()).as_str()) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    let mut all = Vec::with_capacity(found.len());
    for path in found {
        let relative = path.strip_prefix(dir).unwrap_or(&path);
        let Ok(name) = LockName::new(relative.to_string_lossy()) else {
            continue;
        };
        let status = status(&path, &name, scope, backend.to_owned())?;
        if status.is_held() || !status.waiters.is_empty() {
            all.push(status);
        }
    }
    Ok(all)
}

/// The `MAJOR:MINOR:INODE` by which `/proc/locks` names a file.
fn kernel_key(dev: u64, ino: u64) -> String {
    format!("{:02x}:{:02x}:{ino}", libc::major(dev), libc::minor(dev))
}

/// A `/proc/locks` (or fdinfo `lock:`) line about the file `key`, such as
/// `3: -> OFDLCK ADVISORY  WRITE -1 fe:00:10010679 0 EOF`.
fn parse(line: &str, key: &str) -> Option<KernelLock> {
    let mut fields = line.split_whitespace().skip(1).peekable();
    let blocked = fields.next_if_eq(&"->").is_some();
    let mut fields = fields.skip(3);
    let pid = fields.next()?.parse::<i64>().ok()?;
    (fields.next()? == key).then(|| KernelLock {
        blocked,
        pid: u32::try_from(pid).ok().filter(|&p| p > 0),
    })
}

/// The process one of whose descriptors holds the lock on `key`: the one
/// whose `/proc/PID/fdinfo/FD` has a `lock:` line for it.
fn holder_by_fdinfo(key: &str) -> Option<u32> {
    let processes = std::fs::read_dir("/proc").ok()?;
    for process in processes.flatten() {
        let Some(pid) = process
            .file_name()
            .to_str()
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(descriptors) = std::fs::read_dir(process.path().join("fdinfo")) else {
            continue;
        };
        for descriptor in descriptors.flatten() {
            let Ok(info) = std::fs::read_to_string(descriptor.path()) else {
                continue;
            };
            let holds = info
                .lines()
                .filter_map(|l| l.strip_prefix("lock:"))
                .filter_map(|l| parse(l.trim_start(), key))
                .any(|l| !l.blocked);
            if holds {
                return Some(pid);
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_locks_lines_parse() {
        let key = "fe:00:10010679";
        assert_eq!(
            parse("3: OFDLCK ADVISORY  WRITE -1 fe:00:10010679 0 EOF", key),
            Some(KernelLock {
                blocked: false,
                pid: None
            })
        );
        assert_eq!(
            parse("3: -> OFDLCK ADVISORY  WRITE -1 fe:00:10010679 0 EOF", key),
            Some(KernelLock {
                blocked: true,
                pid: None
            })
        );
        assert_eq!(
            parse("1: POSIX  ADVISORY  WRITE 4242 fe:00:10010679 0 EOF", key),
            Some(KernelLock {
                blocked: false,
                pid: Some(4242)
            })
        );
        assert_eq!(
            parse("1: FLOCK  ADVISORY  WRITE 27573 fe:00:10633235 0 EOF", key),
            None
        );
        assert_eq!(parse("garbage", key), None);
    }

    #[test]
    fn the_kernel_key_is_hex_device_and_decimal_inode() {
        assert_eq!(kernel_key(libc::makedev(254, 0), 10), "fe:00:10");
    }
}
