//! What a caller asks a backend for: a lock name in a scope, and how long
//! to wait ([`Wait`], [`LockRequest`]), with the errors that name the request.

use std::fmt;
use std::time::Duration;

use crate::{Error, ErrorKind, LockName, Scope};

/// How long an acquire may wait for a lock that someone else holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Wait {
    /// Wait until the lock is acquired (or the future is dropped).
    #[default]
    Forever,
    /// Wait at most this long, then fail with [`ErrorKind::Timeout`].
    Timeout(Duration),
    /// Do not wait: fail with [`ErrorKind::WouldBlock`] if the lock is held.
    TryOnce,
}

impl Wait {
    /// `None` waits forever, a zero duration tries once, anything else is a timeout.
    pub fn from_timeout(timeout: Option<Duration>) -> Self {
        match timeout {
            None => Wait::Forever,
            Some(d) if d.is_zero() => Wait::TryOnce,
            Some(d) => Wait::Timeout(d),
        }
    }

    /// The C convention: negative waits forever, zero tries once, positive is milliseconds.
    pub fn from_millis(timeout_ms: i64) -> Self {
        match u64::try_from(timeout_ms) {
            Err(_) => Wait::Forever,
            Ok(ms) => Wait::from_timeout(Some(Duration::from_millis(ms))),
        }
    }
}

impl fmt::Display for Wait {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Wait::Forever => f.write_str("waiting forever"),
            Wait::Timeout(d) => write!(f, "waiting at most {d:?}"),
            Wait::TryOnce => f.write_str("trying once"),
        }
    }
}

/// Everything a backend needs to acquire one lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LockRequest {
    /// The full lock name (any prefix already applied).
    pub name: LockName,
    /// The scope the caller asked for.
    pub scope: Scope,
    /// How long to wait.
    pub wait: Wait,
    /// The catalog id the name came from, if any; backends that store a holder
    /// identity (ZooKeeper node data) include it.
    pub label: Option<String>,
}

impl LockRequest {
    /// A request for `name` in `scope`, waiting forever.
    pub fn new(name: LockName, scope: Scope) -> Self {
        LockRequest {
            name,
            scope,
            wait: Wait::Forever,
            label: None,
        }
    }

    /// Sets how long to wait.
    pub fn wait(mut self, wait: Wait) -> Self {
        self.wait = wait;
        self
    }

    /// Sets the catalog id recorded with the holder identity.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = Some(label.into());
        self
    }

    /// A readable identity for this holder: `host:pid[:label]`.
    pub fn holder_identity(&self) -> String {
        let host = crate::host_name();
        match &self.label {
            Some(label) => format!("{host}:{}:{label}", std::process::id()),
            None => format!("{host}:{}", std::process::id()),
        }
    }

    /// The [`ErrorKind::WouldBlock`] error for this request.
    /// `backend` describes where the lock is held ([`Backend::describe`](crate::Backend::describe)).
    pub fn would_block(&self, backend: &str) -> Error {
        Error::new(
            ErrorKind::WouldBlock,
            format!(
                "lock `{}` ({} scope) is held by someone else ({})",
                self.name, self.scope, backend
            ),
        )
    }

    /// The [`ErrorKind::WouldDeadlock`] error for a caller that asks for this
    /// request's lock while holding it.
    pub fn would_deadlock(&self) -> Error {
        crate::reentry::would_deadlock(&self.name)
    }

    /// The [`ErrorKind::Timeout`] error for this request after waiting `waited`.
    /// `backend` describes where the lock is held ([`Backend::describe`](crate::Backend::describe)).
    pub fn timed_out(&self, backend: &str, waited: Duration) -> Error {
        Error::new(
            ErrorKind::Timeout,
            format!(
                "timed out after {waited:?} waiting for lock `{}` ({} scope, {})",
                self.name, self.scope, backend
            ),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wait_conventions() {
        assert_eq!(Wait::from_millis(-1), Wait::Forever);
        assert_eq!(Wait::from_millis(0), Wait::TryOnce);
        assert_eq!(
            Wait::from_millis(1500),
            Wait::Timeout(Duration::from_millis(1500))
        );
        assert_eq!(Wait::from_timeout(None), Wait::Forever);
        assert_eq!(Wait::from_timeout(Some(Duration::ZERO)), Wait::TryOnce);
    }

    #[test]
    fn holder_identity_names_pid_and_label() {
        let req = LockRequest::new(LockName::new("x").unwrap(), Scope::Global).label("infinidat");
        let id = req.holder_identity();
        assert!(
            id.ends_with(&format!(":{}:infinidat", std::process::id())),
            "{id}"
        );
    }
}
