//! The conformance suite of `locks-core`, against the ZooKeeper server in
//! `LOCKS_TEST_ZK` (skipped when unset, failing when `CI=true`).

mod common;

use std::sync::Arc;

macro_rules! conformance {
    ($($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(addr) = common::server() else { return };
                let backend = common::connect(common::config(&addr, stringify!($case))).await;
                locks_core::testing::$case(Arc::new(backend)).await;
            }
        )*
    };
}

conformance!(
    mutual_exclusion,
    try_once_on_held_name_fails,
    timeout_elapses,
    release_lets_next_in,
    drop_releases,
    distinct_names_are_independent,
    fencing_tokens_increase,
    fifo_order,
    cancelled_acquire_leaves_nothing_behind,
    many_names_at_once,
);
