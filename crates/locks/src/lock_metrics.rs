//! Metrics through the [`metrics`] facade, when the configuration asks for
//! them (`metrics = true`, [`Config::metrics`](crate::Config::metrics)).
//!
//! | name | kind | labels |
//! |---|---|---|
//! | `locks_acquires_total` | counter | `id`, `scope`, `backend`, `outcome` |
//! | `locks_wait_seconds` | histogram | `id`, `scope`, `backend` |
//! | `locks_hold_seconds` | histogram | `id`, `scope`, `backend` |
//! | `locks_held` | gauge | `id`, `scope`, `backend` |
//!
//! `id` is the catalog id, `-` for raw names: never the rendered name,
//! whose values are unbounded. `outcome` is `acquired`, `lost` (counted when
//! a lost lock is let go), or the error kind of a failed acquire
//! (`timeout`, `would_block`, `would_deadlock`, `unavailable`, ...), or
//! `cancelled` for an acquire whose future was dropped.
//!
//! Off by default: with metrics on, each acquire reads the clock and looks
//! up its handles, which would be most of the cost of an uncontended memory
//! lock. The application installs its recorder (for instance
//! `metrics-exporter-prometheus`) before it opens the client: handles are
//! registered on first use and kept.

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, Instant};

use locks_core::{LockRequest, ReleaseObserver, Scope};
use metrics::{Counter, Gauge, Histogram, Label};

/// The metric names, for exporters and tests.
pub mod names {
    /// Counter of acquires by outcome.
    pub const ACQUIRES: &str = "locks_acquires_total";
    /// Histogram of the time an acquire waited, in seconds.
    pub const WAIT: &str = "locks_wait_seconds";
    /// Histogram of the time a lock was held, in seconds.
    pub const HOLD: &str = "locks_hold_seconds";
    /// Gauge of the locks held now.
    pub const HELD: &str = "locks_held";
}

/// The label value for a lock without a catalog id.
const NO_ID: &str = "-";

/// A client's metric handles, one set per catalog id and scope.
#[derive(Debug)]
pub(crate) struct Metrics {
    /// The backend kind serving each scope.
    backends: [&'static str; 3],
    /// Per scope, catalog id to handles: read-locked on each acquire (so
    /// acquires on many threads do not queue here), written once per id.
    by_id: [RwLock<HashMap<String, Arc<LockMetrics>>>; 3],
}

impl Metrics {
    /// Handles for a client whose scopes are served by `backends` (kinds).
    pub(crate) fn new(backends: [&'static str; 3]) -> Self {
        metrics::describe_counter!(names::ACQUIRES, "Lock acquires, by outcome.");
        metrics::describe_histogram!(
            names::WAIT,
            metrics::Unit::Seconds,
            "How long acquires waited."
        );
        metrics::describe_histogram!(
            names::HOLD,
            metrics::Unit::Seconds,
            "How long locks were held."
        );
        metrics::describe_gauge!(names::HELD, "Locks held now.");
        Metrics {
            backends,
            by_id: Default::default(),
        }
    }

    /// The handles of `request`'s catalog id and scope, registered on first use.
    pub(crate) fn of(&self, request: &LockRequest) -> Arc<LockMetrics> {
        let i = crate::client::index(request.scope);
        let id = request.label.as_deref().unwrap_or(NO_ID);
        let known = self.by_id[i].read().unwrap_or_else(PoisonError::into_inner);
        if let Some(found) = known.get(id) {
            return Arc::clone(found);
        }
        drop(known);
        let mut by_id = self.by_id[i]
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        // Another thread may have registered it between the two locks.
        Arc::clone(
            by_id
                .entry(id.to_owned())
                .or_insert_with(|| Arc::new(LockMetrics::new(id, request.scope, self.backends[i]))),
        )
    }
}

/// The handles of one catalog id in one scope.
#[derive(Debug)]
pub(crate) struct LockMetrics {
    labels: [Label; 3],
    acquired: Counter,
    lost: Counter,
    wait: Histogram,
    hold: Histogram,
    held: Gauge,
}

impl LockMetrics {
    fn new(id: &str, scope: Scope, backend: &'static str) -> Self {
        let labels = [
            Label::new("id", id.to_owned()),
            Label::new("scope", scope.as_str()),
            Label::new("backend", backend),
        ];
        let with_outcome = |outcome: &'static str| {
            let mut all = labels.to_vec();
            all.push(Label::new("outcome", outcome));
            metrics::counter!(names::ACQUIRES, all)
        };
        LockMetrics {
            acquired: with_outcome("acquired"),
            lost: with_outcome("lost"),
            wait: metrics::histogram!(names::WAIT, labels.to_vec()),
            hold: metrics::histogram!(names::HOLD, labels.to_vec()),
            held: metrics::gauge!(names::HELD, labels.to_vec()),
            labels,
        }
    }

    /// An acquire that succeeded after `waited`.
    pub(crate) fn acquired(&self, waited: Duration) {
        self.acquired.increment(1);
        self.wait.record(waited.as_secs_f64());
        self.held.increment(1.0);
    }

    /// An acquire that ended without the lock after `waited`: `outcome` is
    /// the error kind, or `cancelled`.
    pub(crate) fn failed(&self, outcome: &'static str, waited: Duration) {
        let mut all = self.labels.to_vec();
        all.push(Label::new("outcome", outcome));
        metrics::counter!(names::ACQUIRES, all).increment(1);
        self.wait.record(waited.as_secs_f64());
    }
}

impl ReleaseObserver for LockMetrics {
    fn released(&self, held_for: Duration, lost: bool) {
        self.hold.record(held_for.as_secs_f64());
        self.held.decrement(1.0);
        if lost {
            self.lost.increment(1);
        }
    }
}

/// Times one acquire, and counts it as `cancelled` if it is dropped before it ends.
#[derive(Debug)]
pub(crate) struct PendingAcquire {
    metrics: Option<Arc<LockMetrics>>,
    started: Instant,
}

impl PendingAcquire {
    /// Starts timing an acquire.
    pub(crate) fn new(metrics: Arc<LockMetrics>) -> Self {
        PendingAcquire {
            metrics: Some(metrics),
            started: Instant::now(),
        }
    }

    /// Counts the outcome; on success, returns the handles that count the
    /// hold's end (for [`LockGuard::observe_release`](locks_core::LockGuard::observe_release)).
    pub(crate) fn finish(
        mut self,
        result: &locks_core::Result<locks_core::LockGuard>,
    ) -> Option<Arc<dyn ReleaseObserver>> {
        let metrics = self.metrics.take()?;
        let waited = self.started.elapsed();
        match result {
            Ok(_) => {
                metrics.acquired(waited);
                Some(metrics)
            }
            Err(e) => {
                metrics.failed(e.kind().as_str(), waited);
                None
            }
        }
    }
}

impl Drop for PendingAcquire {
    fn drop(&mut self) {
        if let Some(metrics) = self.metrics.take() {
            metrics.failed("cancelled", self.started.elapsed());
        }
    }
}
