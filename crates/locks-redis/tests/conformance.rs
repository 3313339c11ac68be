//! The locks-core conformance suite against a real Redis: one server, and a
//! master with a replica behind three sentinels, two clients contending.
//! Each case skips (with a notice) when the server's variable is unset, and
//! fails when it is unset under `CI=true`.

mod common;

mod plain {
    locks_core::conformance_tests!(|| crate::common::pair(crate::common::plain_config()));
}

mod sentinel {
    locks_core::conformance_tests!(|| crate::common::pair(crate::common::sentinel_config()));
}
