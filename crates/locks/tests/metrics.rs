//! Metrics: what a client records through the `metrics` facade, read back
//! from a debugging recorder installed for the test's thread.

use std::time::Duration;

use locks::{Config, Locks, Params, Scope, Wait, metric_names};
use std::collections::HashMap;

use metrics_util::debugging::{DebugValue, DebuggingRecorder, Snapshotter};

fn config(dir: &std::path::Path, metrics: bool) -> Config {
    let text = format!(
        "metrics = {metrics}\n[backends]\nnode = \"file://{0}/node\"\nglobal = \"file://{0}/global\"\n",
        dir.display()
    );
    Config::from_toml_str(&text, dir, "test").expect("valid config")
}

/// Runs `body` on a current-thread runtime with `recorder` as this thread's recorder.
fn with_recorder<F: std::future::Future<Output = ()>>(recorder: &DebuggingRecorder, body: F) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    metrics::with_local_recorder(recorder, || runtime.block_on(body));
}

/// A metric's name and its labels, sorted.
type MetricKey = (String, Vec<(String, String)>);

/// A metric's total so far: a count, a gauge's value, or a histogram's number of samples.
#[derive(Debug, Clone, Copy)]
enum Total {
    Counter(u64),
    Gauge(f64),
    Histogram(usize),
}

/// Totals read from a debugging recorder, whose snapshots drain what they
/// read (counters and gauges swap to zero, histograms empty): each read adds
/// the new snapshot to the totals. The client only adds to and subtracts
/// from its gauges, so their sums are their values.
struct Totals {
    snapshotter: Snapshotter,
    seen: std::cell::RefCell<HashMap<MetricKey, Total>>,
}

impl Totals {
    fn new(recorder: &DebuggingRecorder) -> Self {
        Totals {
            snapshotter: recorder.snapshotter(),
            seen: Default::default(),
        }
    }

    /// The value of metric `name` with exactly these labels.
    fn value(&self, name: &str, labels: &[(&str, &str)]) -> Option<Total> {
        let mut seen = self.seen.borrow_mut();
        for (key, _, _, value) in self.snapshotter.snapshot().into_vec() {
            let mut pairs: Vec<(String, String)> = key
                .key()
                .labels()
                .map(|l| (l.key().to_owned(), l.value().to_owned()))
                .collect();
            pairs.sort();
            let total = seen
                .entry((key.key().name().to_owned(), pairs))
                .or_insert(match value {
                    DebugValue::Counter(_) => Total::Counter(0),
                    DebugValue::Gauge(_) => Total::Gauge(0.0),
                    DebugValue::Histogram(_) => Total::Histogram(0),
                });
            match (total, value) {
                (Total::Counter(t), DebugValue::Counter(n)) => *t += n,
                (Total::Gauge(t), DebugValue::Gauge(g)) => *t += g.into_inner(),
                (Total::Histogram(t), DebugValue::Histogram(h)) => *t += h.len(),
                (t, v) => panic!("{name}: {t:?} then {v:?}"),
            }
        }
        let mut wanted: Vec<(String, String)> = labels
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        wanted.sort();
        seen.get(&(name.to_owned(), wanted)).copied()
    }

    fn labels(&self) -> Vec<String> {
        self.value("", &[]);
        self.seen
            .borrow()
            .keys()
            .flat_map(|(_, l)| l.iter().map(|(_, v)| v.clone()))
            .collect()
    }

    fn counter(&self, outcome: &str, id: &str, scope: &str) -> u64 {
        let backend = if scope == "process" { "memory" } else { "file" };
        match self.value(
            metric_names::ACQUIRES,
            &[
                ("id", id),
                ("scope", scope),
                ("backend", backend),
                ("outcome", outcome),
            ],
        ) {
            Some(Total::Counter(n)) => n,
            None => 0,
            Some(other) => panic!("{outcome}: not a counter: {other:?}"),
        }
    }

    fn gauge(&self, id: &str, scope: &str, backend: &str) -> f64 {
        match self.value(
            metric_names::HELD,
            &[("id", id), ("scope", scope), ("backend", backend)],
        ) {
            Some(Total::Gauge(g)) => g,
            other => panic!("gauge {id}: {other:?}"),
        }
    }

    fn histogram_len(&self, name: &str, id: &str, scope: &str, backend: &str) -> usize {
        match self.value(name, &[("id", id), ("scope", scope), ("backend", backend)]) {
            Some(Total::Histogram(n)) => n,
            None => 0,
            other => panic!("histogram {name}: {other:?}"),
        }
    }
}

#[test]
fn acquires_waits_holds_and_outcomes_are_recorded_by_catalog_id() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = DebuggingRecorder::new();
    let totals = Totals::new(&recorder);
    with_recorder(&recorder, async {
        let locks = Locks::open(config(dir.path(), true)).await.unwrap();
        let params = Params::new().with("resource_id", "vol-1");

        // Free: taken at once.
        let guard = locks.lock("solidfire", &params).await.unwrap();
        assert_eq!(totals.counter("acquired", "solidfire", "process"), 1);
        assert_eq!(totals.gauge("solidfire", "process", "memory"), 1.0);

        // The same task again: would deadlock.
        let again = locks.lock("solidfire", &params).await.unwrap_err();
        assert_eq!(again.kind(), locks::ErrorKind::WouldDeadlock);
        assert_eq!(totals.counter("would_deadlock", "solidfire", "process"), 1);

        // Other tasks: try once, a timeout, and one cancelled by dropping its future.
        let other = locks.clone();
        let p = params.clone();
        tokio::spawn(async move {
            let busy = other.lock_with("solidfire", &p, Wait::TryOnce).await;
            assert_eq!(busy.unwrap_err().kind(), locks::ErrorKind::WouldBlock);
            let late = other
                .lock_with("solidfire", &p, Wait::Timeout(Duration::from_millis(20)))
                .await;
            assert_eq!(late.unwrap_err().kind(), locks::ErrorKind::Timeout);
            let dropped =
                tokio::time::timeout(Duration::from_millis(20), other.lock("solidfire", &p)).await;
            assert!(dropped.is_err(), "the acquire was still waiting");
        })
        .await
        .unwrap();
        assert_eq!(totals.counter("would_block", "solidfire", "process"), 1);
        assert_eq!(totals.counter("timeout", "solidfire", "process"), 1);
        assert_eq!(totals.counter("cancelled", "solidfire", "process"), 1);

        guard.release().await.unwrap();
        assert_eq!(totals.gauge("solidfire", "process", "memory"), 0.0);
        assert_eq!(
            totals.histogram_len(metric_names::HOLD, "solidfire", "process", "memory"),
            1
        );

        // A raw Node name: id `-`, the file backend; a dropped guard counts too.
        let raw = locks
            .lock_name(Scope::Node, "vol-2-attach", Wait::Forever)
            .await
            .unwrap();
        assert_eq!(totals.counter("acquired", "-", "node"), 1);
        drop(raw);
        assert_eq!(totals.gauge("-", "node", "file"), 0.0);
        assert_eq!(
            totals.histogram_len(metric_names::HOLD, "-", "node", "file"),
            1
        );
        // Every acquire's wait is recorded; rendered names never are labels.
        assert_eq!(
            totals.histogram_len(metric_names::WAIT, "solidfire", "process", "memory"),
            5
        );
        let labels = totals.labels();
        assert!(labels.iter().any(|l| l == "solidfire"), "{labels:?}");
        assert!(
            labels.iter().all(|l| !l.contains("vol-")),
            "a rendered name became a label: {labels:?}"
        );
    });
}

#[test]
fn nothing_is_recorded_unless_the_configuration_asks() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = DebuggingRecorder::new();
    let totals = Totals::new(&recorder);
    with_recorder(&recorder, async {
        let locks = Locks::open(config(dir.path(), false)).await.unwrap();
        let guard = locks
            .lock("solidfire", &Params::new().with("resource_id", "v"))
            .await
            .unwrap();
        guard.release().await.unwrap();
    });
    assert!(totals.labels().is_empty());
}
