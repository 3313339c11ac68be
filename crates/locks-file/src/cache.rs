//! The descriptor cache: lock files kept open, unlocked, between holders, so
//! that a cycle costs the lock, one `fstat` and the unlock instead of an
//! `open`, two `stat`s and a `close` on top.
//!
//! Each backend has one [`Cache`], bounded by [`capacity_for`], evicting with
//! the CLOCK algorithm (an approximation of least-recently-used) and, once
//! full, letting a file in only the second time it comes by; the
//! descriptors of every cache of the process together are bounded by the
//! process-wide budget (`budget.rs`, [`BudgetSlot`]).
//!
//! # Descriptors kept open
//!
//! Opening a lock file costs more than locking it, so a backend keeps the
//! descriptors of recently released lock files open, **unlocked**, and the
//! next acquire of the same name in this process locks that descriptor again:
//! a free lock then costs the lock call, one `fstat` and the unlock call. A
//! descriptor is out of the cache, owned by one task, from the moment an
//! acquire takes it until its holding is released; two tasks never lock one
//! open file description (the second lock would be granted too).
//!
//! - **Bounds.** A backend keeps at most a sixteenth of the soft
//!   `RLIMIT_NOFILE` at the time it was opened, and at most 256, descriptors;
//!   all backends of the process together at most a quarter of it (4096 with
//!   no limit). When the cache is full, a file is only let in the second
//!   time it comes by in a while, in place of one not used lately (the CLOCK
//!   approximation of least-recently-used): names used once close their own
//!   descriptor instead of pushing out busier ones. Any number of distinct
//!   names can pass through without descriptors or memory growing.
//! - **Where.** Only on Linux, and only when the lock directory is on a local
//!   file system known to give a renamed or unlinked file a new ctime and to
//!   show it to `fstat` at once (ext2/3/4, xfs, btrfs, tmpfs, ramfs, f2fs,
//!   overlayfs, ZFS, bcachefs, JFS, ReiserFS; checked with `statfs` when the
//!   backend is opened). Elsewhere, NFS and other network or FUSE file systems
//!   included, every acquire opens the file and every release closes it.
//! - **Forks.** A descriptor inherited through `fork` is never used by the
//!   child (`budget.rs` explains why and how forks are counted): the cache
//!   closes it instead of handing it out.
//! - **Cleaning.** [`Backend::clean`] closes the cached descriptors of its own
//!   backend first. Cached descriptors are unlocked, so a `clean` from
//!   anywhere else removes their files too; the next acquire notices
//!   (`lockfile.rs`, "Files unlinked while locked").
//!
//! [`Backend::clean`]: locks_core::Backend::clean

use std::collections::HashMap;
use std::fmt;
use std::hash::BuildHasher;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::budget::{self, BudgetSlot};
use crate::lockfile::OpenFile;
use crate::path::Key;

/// The most descriptors one backend keeps open.
const MAX_PER_BACKEND: usize = 256;

/// One backend's idle lock file descriptors, by key.
pub(crate) struct Cache {
    inner: Mutex<Inner>,
    capacity: usize,
}

/// The entries in a slab, found through an index, evicted by the CLOCK
/// algorithm (second chance): an approximation of least-recently-used that
/// costs a flag per use and a short sweep per eviction.
struct Inner {
    index: HashMap<Key, usize, foldhash::fast::RandomState>,
    /// At most `capacity` entries, never moved (the index points at them).
    slots: Vec<Entry>,
    /// Where the next eviction sweep starts.
    hand: usize,
    /// The hashes of keys turned away while the cache was full, one per
    /// hash bucket: a key seen here comes in the next time.
    seen: Vec<u64>,
}

/// A file's entry. It stays while a holder has the descriptor out, so that
/// the holder's next turn finds the key without allocating it again.
struct Entry {
    key: Key,
    /// `None` while a holder has it (or after a holder closed it).
    file: Option<OpenFile>,
    /// Taken again since it was put in or since the eviction sweep last
    /// passed.
    used: bool,
}

impl Cache {
    /// A cache of at most `capacity` entries (0: no caching at all).
    pub(crate) fn new(capacity: usize) -> Cache {
        Cache {
            inner: Mutex::new(Inner {
                index: HashMap::with_hasher(foldhash::fast::RandomState::default()),
                slots: Vec::new(),
                hand: 0,
                seen: vec![0; 2 * capacity],
            }),
            capacity,
        }
    }

    /// How many entries this cache may keep.
    #[cfg(test)]
    pub(crate) fn capacity(&self) -> usize {
        self.capacity
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The key of the file at `relative`, if the cache knows it, and its
    /// descriptor, if it is in the cache: taken out, it is the caller's
    /// alone. Callers without a descriptor [`take`](Self::take) again once
    /// they hold the in-process turn: the task holding it puts its
    /// descriptor back before the turn ends.
    pub(crate) fn find(&self, relative: &[u8]) -> Option<(Key, Option<OpenFile>)> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.lock();
        let at = *inner.index.get(relative)?;
        let entry = &mut inner.slots[at];
        entry.used = true;
        let found = (entry.key.clone(), entry.file.take());
        drop(inner);
        Some(match found {
            // One inherited through `fork` shares its lock with the parent:
            // closed (outside the cache's mutex), never used.
            (key, Some(file)) if !file.is_own() => (key, None),
            found => found,
        })
    }

    /// Takes the descriptor of `key` out of the cache, if it is there.
    pub(crate) fn take(&self, key: &Key) -> Option<OpenFile> {
        if self.capacity == 0 {
            return None;
        }
        let mut inner = self.lock();
        let at = *inner.index.get(key)?;
        let file = inner.slots[at].file.take()?;
        drop(inner);
        file.is_own().then_some(file)
    }

    /// Keeps `file`, an unlocked descriptor of `key`, for the next holder.
    /// Evicts (closes) a descriptor not used lately when the cache or the
    /// process-wide budget is full.
    pub(crate) fn put(&self, key: &Key, mut file: OpenFile) {
        if self.capacity == 0 || !file.is_own() {
            return;
        }
        let mut inner = self.lock();
        let found = inner.index.get(key).copied();
        if let Some(at) = found
            && file.slot.is_some()
        {
            // The usual case: the descriptor comes back to its entry.
            let entry = &mut inner.slots[at];
            entry.used = true;
            let other = entry.file.replace(file);
            drop(inner);
            drop(other);
            return;
        }
        // Descriptors to close once the mutex is released.
        let mut closing: [Option<OpenFile>; 2] = [None, None];
        let at = match found {
            // Another holder's descriptor of the same file (one opened while
            // this one was out) gives way to this one.
            Some(at) => {
                closing[0] = inner.slots[at].file.take();
                Some(at)
            }
            None if inner.slots.len() < self.capacity => None,
            // Full: a file comes in only the second time in a while that it
            // comes by. A name used once closes its own descriptor (warm in
            // the kernel's caches) instead of evicting another name's.
            None if !inner.seen_before(key) => {
                drop(inner);
                drop(file);
                return;
            }
            None => {
                let victim = inner.sweep(false);
                if let Some(at) = victim {
                    closing[0] = inner.slots[at].file.take();
                }
                victim
            }
        };
        if file.slot.is_none() {
            file.slot = closing[0]
                .as_mut()
                .and_then(|f| f.slot.take())
                .or_else(BudgetSlot::take);
        }
        if file.slot.is_none() {
            // The process-wide budget is spent: make room among our own.
            closing[1] = inner
                .sweep(true)
                .and_then(|other| inner.slots[other].file.take());
            file.slot = closing[1].as_mut().and_then(|f| f.slot.take());
        }
        if file.slot.is_none() {
            drop(inner);
            drop(file);
            return;
        }
        // A new name gets no second chance until it is used again: names used
        // once go first. A name whose entry only gets a fresh descriptor is
        // in use, and keeps it.
        let entry = Entry {
            key: key.clone(),
            file: Some(file),
            used: found.is_some(),
        };
        match at {
            Some(at) => {
                let old = std::mem::replace(&mut inner.slots[at], entry);
                if old.key != *key {
                    inner.index.remove(&old.key);
                    inner.index.insert(key.clone(), at);
                }
            }
            None => {
                let at = inner.slots.len();
                inner.slots.push(entry);
                inner.index.insert(key.clone(), at);
            }
        }
        drop(inner);
        drop(closing);
    }

    /// Closes every cached descriptor and forgets every key.
    pub(crate) fn clear(&self) {
        let mut inner = self.lock();
        inner.index.clear();
        inner.hand = 0;
        let closing = std::mem::take(&mut inner.slots);
        drop(inner);
        drop(closing);
    }

    /// How many descriptors are cached right now.
    pub(crate) fn len(&self) -> usize {
        self.lock()
            .slots
            .iter()
            .filter(|e| e.file.is_some())
            .count()
    }

    /// How many entries the cache has room for without growing.
    #[cfg(test)]
    pub(crate) fn room(&self) -> usize {
        let inner = self.lock();
        inner.index.capacity().max(inner.slots.capacity())
    }
}

impl Inner {
    /// Whether `key` was turned away lately; remembers it if not.
    fn seen_before(&mut self, key: &Key) -> bool {
        let hash = self.index.hasher().hash_one(key);
        let len = self.seen.len();
        if len == 0 {
            return false;
        }
        // The high bits pick the bucket (the multiply mixes them best).
        let bucket = &mut self.seen[(hash >> 32) as usize % len];
        if *bucket == hash {
            *bucket = 0;
            true
        } else {
            *bucket = hash;
            false
        }
    }

    /// The entry to evict: the first one the hand meets that was not used
    /// since the hand last passed it (clearing the flags it passes), among
    /// those holding a descriptor if `cached`. `None` if no entry qualifies.
    fn sweep(&mut self, cached: bool) -> Option<usize> {
        let len = self.slots.len();
        // Two rounds: the first may only clear flags.
        for _ in 0..2 * len {
            let at = self.hand % len;
            self.hand = (at + 1) % len;
            let entry = &mut self.slots[at];
            if cached && entry.file.is_none() {
                continue;
            }
            if !std::mem::replace(&mut entry.used, false) {
                return Some(at);
            }
        }
        None
    }
}

impl fmt::Debug for Cache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Cache")
            .field("len", &self.len())
            .field("capacity", &self.capacity)
            .finish()
    }
}

/// The capacity of the cache of a backend on `dir`: a sixteenth of the
/// current soft `RLIMIT_NOFILE`, at most [`MAX_PER_BACKEND`]; 0 (no cache)
/// where a cached descriptor cannot be checked cheaply and surely
/// ([`checks_hold_on`]) or forks cannot be watched. Also sets the
/// process-wide budget to a quarter of the soft limit.
pub(crate) fn capacity_for(dir: &Path) -> usize {
    // Forks are watched whether or not descriptors get cached: a child must
    // never unlock a lock file descriptor it inherited from its parent.
    let forks_watched = budget::watch_forks();
    if !forks_watched || !checks_hold_on(dir) {
        return 0;
    }
    let soft = budget::soft_fd_limit();
    budget::share(soft);
    (soft / 16).min(MAX_PER_BACKEND)
}

/// Whether the file system of `dir` is one where the check of a cached
/// descriptor holds: a local Linux file system that gives a file a new
/// ctime when it is renamed or unlinked, and whose `fstat` sees changes made
/// by other processes at once (network file systems cache attributes).
fn checks_hold_on(dir: &Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        let Ok(c_dir) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
            return false;
        };
        // SAFETY: all-zero bytes are a valid `statfs`.
        let mut fs: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c_dir` is a NUL-terminated path and `fs` is writable.
        if unsafe { libc::statfs(c_dir.as_ptr(), &mut fs) } != 0 {
            return false;
        }
        // The magic numbers of linux/magic.h (and ZFS's).
        #[allow(clippy::unnecessary_cast)] // `f_type`'s type differs between targets.
        let magic = fs.f_type as i64 as u32;
        matches!(
            magic,
            0xEF53 // ext2, ext3, ext4
                | 0x5846_5342 // xfs
                | 0x9123_683E // btrfs
                | 0x0102_1994 // tmpfs
                | 0x8584_58F6 // ramfs
                | 0xF2F5_2010 // f2fs
                | 0x794C_7630 // overlayfs
                | 0x2FC1_2FC1 // zfs
                | 0xCA45_1A4E // bcachefs
                | 0x3153_464A // jfs
                | 0x5265_4973 // reiserfs
        )
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}
