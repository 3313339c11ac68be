//! The locks-core conformance suite against a real etcd, in both layouts.
//! Each case skips (with a notice) when `LOCKS_TEST_ETCD` is unset, and
//! fails when it is unset under `CI=true`.

mod common;

macro_rules! conformance {
    ($module:ident, $layout:expr) => {
        mod $module {
            conformance!(@cases $layout;
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
        }
    };
    (@cases $layout:expr; $($case:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let Some(backend) = crate::common::backend($layout).await else {
                    return;
                };
                locks_core::testing::$case(backend).await;
            }
        )*
    };
}

conformance!(mutex_layout, locks_etcd::Layout::Mutex);
conformance!(tooz_layout, locks_etcd::Layout::Tooz);
