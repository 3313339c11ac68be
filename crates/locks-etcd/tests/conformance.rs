//! The locks-core conformance suite against a real etcd, in both layouts,
//! with two connections (two leases) contending. Each case skips (with a
//! notice) when `LOCKS_TEST_ETCD` is unset, and fails when it is unset under
//! `CI=true`.

mod common;

mod mutex_layout {
    locks_core::conformance_tests!(|| crate::common::backend_pair(locks_etcd::Layout::Mutex));
}

mod tooz_layout {
    locks_core::conformance_tests!(|| crate::common::backend_pair(locks_etcd::Layout::Tooz));
}
