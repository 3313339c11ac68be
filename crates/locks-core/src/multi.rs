//! Holding a set of locks taken in one canonical order.

use std::fmt;

use crate::{LockGuard, LockRequest, Result};

/// Sorts requests into the canonical acquisition order and removes duplicates.
///
/// The order is by name (byte order, which is Python's code-point order for
/// UTF-8, so Cinder's `sorted(set(names))` agrees), then by scope. Every
/// caller taking the same set in this order cannot deadlock against another.
pub fn canonical_order(mut requests: Vec<LockRequest>) -> Vec<LockRequest> {
    requests.sort_by(|a, b| (a.name.as_str(), a.scope).cmp(&(b.name.as_str(), b.scope)));
    requests.dedup_by(|a, b| a.name == b.name && a.scope == b.scope);
    requests
}

/// Several locks held together; released in reverse acquisition order.
#[must_use = "if unused the locks are released immediately"]
#[clippy::has_significant_drop]
pub struct MultiGuard {
    guards: Vec<LockGuard>,
}

impl MultiGuard {
    /// Wraps guards given in acquisition order.
    pub fn new(guards: Vec<LockGuard>) -> Self {
        MultiGuard { guards }
    }

    /// The guards, in acquisition order.
    pub fn guards(&self) -> &[LockGuard] {
        &self.guards
    }

    /// Whether any of the locks was lost.
    pub fn is_lost(&self) -> bool {
        self.guards.iter().any(LockGuard::is_lost)
    }

    /// Releases every lock, last acquired first. All are released even if one fails.
    ///
    /// # Errors
    /// The first error met, as [`LockGuard::release`].
    pub async fn release(mut self) -> Result<()> {
        let mut first_error = None;
        while let Some(guard) = self.guards.pop() {
            if let Err(e) = guard.release().await {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }
}

impl fmt::Debug for MultiGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(&self.guards).finish()
    }
}

impl Drop for MultiGuard {
    fn drop(&mut self) {
        while let Some(guard) = self.guards.pop() {
            drop(guard);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{LockName, Scope};

    #[test]
    fn canonical_order_sorts_and_dedups() {
        let r = |n: &str, s| LockRequest::new(LockName::new(n).unwrap(), s);
        let ordered = canonical_order(vec![
            r("b", Scope::Global),
            r("a", Scope::Global),
            r("b", Scope::Global),
            r("a", Scope::Node),
        ]);
        let got: Vec<(&str, Scope)> = ordered.iter().map(|r| (r.name.as_str(), r.scope)).collect();
        assert_eq!(
            got,
            [
                ("a", Scope::Node),
                ("a", Scope::Global),
                ("b", Scope::Global)
            ]
        );
    }
}
