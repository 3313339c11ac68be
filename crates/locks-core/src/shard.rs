//! A table split in independently locked shards, for the per-name tables on
//! every lock's path ([`LocalLocks`](crate::LocalLocks), the re-entry registry).

use std::hash::{BuildHasher, Hash};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// How many shards: tasks on different threads working on different names
/// rarely wait for each other.
pub(crate) const SHARDS: usize = 16;

/// One shard on its own cache lines, so that threads on different shards do
/// not write to one line.
#[repr(align(128))]
struct Padded<T>(T);

/// `SHARDS` mutexes around `S`, picked by a (randomly seeded) foldhash of the key.
pub(crate) struct Sharded<S> {
    hasher: foldhash::fast::RandomState,
    shards: [Padded<Mutex<S>>; SHARDS],
}

impl<S> Sharded<S> {
    pub(crate) fn new(mut state: impl FnMut() -> S) -> Self {
        Sharded {
            hasher: foldhash::fast::RandomState::default(),
            shards: std::array::from_fn(|_| Padded(Mutex::new(state()))),
        }
    }

    /// The hash of `key`, which picks its shard.
    pub(crate) fn hash<T: Hash + ?Sized>(&self, key: &T) -> u64 {
        self.hasher.hash_one(key)
    }

    /// The shard of `hash`, locked.
    pub(crate) fn lock(&self, hash: u64) -> MutexGuard<'_, S> {
        // Bits a hash table does not use for small tables: it takes the low
        // bits for the bucket and the top seven for its tags.
        let index = (hash >> 40) as usize % SHARDS;
        self.shards[index]
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Every shard in turn, each locked while the iterator is on it.
    pub(crate) fn each(&self) -> impl Iterator<Item = MutexGuard<'_, S>> {
        self.shards
            .iter()
            .map(|s| s.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}
