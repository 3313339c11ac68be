//! Who holds a lock and who waits for it, as far as its backend can know:
//! what `locks status` shows and [`Backend::status`](crate::Backend::status)
//! returns.
//!
//! Every field a backend cannot know is `None` (or, for the waiters, said in
//! [`LockStatus::notes`]): a status never guesses.

use std::time::SystemTime;

use crate::{FencingToken, LockName, Scope};

/// One party to a lock: its holder, or one of its waiters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Party {
    /// The host it runs on.
    pub host: Option<String>,
    /// Its process id on that host.
    pub pid: Option<u32>,
    /// The program's name.
    pub program: Option<String>,
    /// The label its caller set: the catalog id of the lock it asked for.
    pub label: Option<String>,
    /// Since when it holds (for the holder) or waits (for a waiter).
    pub since: Option<SystemTime>,
    /// The fencing token of its holding (or, for a waiter, of its place in
    /// the queue, where the backend gives one at once).
    pub token: Option<FencingToken>,
}

impl Party {
    /// This process: host, pid and program filled in, nothing else.
    pub fn this_process() -> Party {
        Party {
            host: Some(host_name()),
            pid: Some(std::process::id()),
            program: program_name(),
            ..Party::default()
        }
    }

    /// Parses the identity [`LockRequest::holder_identity`](crate::LockRequest::holder_identity)
    /// writes, `host:pid[:label]`; what does not parse stays `None` (a
    /// foreign holder, such as kazoo, writes its own).
    pub fn from_identity(identity: &str) -> Party {
        let mut fields = identity.splitn(3, ':');
        let host = fields.next().filter(|h| !h.is_empty());
        let pid = fields.next().and_then(|p| p.parse().ok());
        match pid {
            Some(pid) => Party {
                host: host.map(str::to_owned),
                pid: Some(pid),
                label: fields.next().map(str::to_owned),
                ..Party::default()
            },
            None => Party::default(),
        }
    }
}

/// Who holds one lock and who waits for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockStatus {
    /// The full lock name (prefix applied).
    pub name: LockName,
    /// The scope it was asked for in.
    pub scope: Scope,
    /// The backend that answered, as [`Backend::describe`](crate::Backend::describe) says it.
    pub backend: String,
    /// The holder; `None` when the lock is free.
    pub holder: Option<Party>,
    /// The waiters, first in line first, as far as the backend sees them.
    pub waiters: Vec<Party>,
    /// What this backend cannot know here, in words (for example that the
    /// kernel does not say which process waits on a lock file).
    pub notes: Vec<String>,
}

impl LockStatus {
    /// A free lock with no waiters and nothing to note.
    pub fn free(name: LockName, scope: Scope, backend: String) -> LockStatus {
        LockStatus {
            name,
            scope,
            backend,
            holder: None,
            waiters: Vec::new(),
            notes: Vec::new(),
        }
    }

    /// Whether somebody holds the lock.
    pub fn is_held(&self) -> bool {
        self.holder.is_some()
    }
}

/// This host's name, as the kernel has it (`localhost` when it has none).
pub fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// The name of process `pid`'s program (its `comm`), where `/proc` shows it.
pub fn program_of(pid: u32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|c| c.trim().to_owned())
        .filter(|c| !c.is_empty())
}

fn program_name() -> Option<String> {
    program_of(std::process::id())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identities_parse_into_host_pid_and_label() {
        let party = Party::from_identity("node-1:4242:infinidat");
        assert_eq!(party.host.as_deref(), Some("node-1"));
        assert_eq!(party.pid, Some(4242));
        assert_eq!(party.label.as_deref(), Some("infinidat"));
        let bare = Party::from_identity("node-1:4242");
        assert_eq!((bare.pid, bare.label), (Some(4242), None));
        // A label may itself hold colons.
        assert_eq!(
            Party::from_identity("h:1:a:b").label.as_deref(),
            Some("a:b")
        );
        // Someone else's identity is not guessed at.
        assert_eq!(Party::from_identity("kazoo-host-uuid"), Party::default());
    }

    #[test]
    fn this_process_knows_itself() {
        let me = Party::this_process();
        assert_eq!(me.pid, Some(std::process::id()));
        assert!(me.host.is_some() && me.program.is_some());
        assert_eq!((me.since, me.token), (None, None));
    }
}
