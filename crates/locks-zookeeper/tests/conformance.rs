//! The conformance suite of `locks-core`, against the ZooKeeper server in
//! `LOCKS_TEST_ZK` (one `host:port`, or an ensemble's `h:p,h:p,h:p`), with two
//! sessions contending on one private namespace (skipped when unset, failing
//! when `CI=true`).

mod common;

use std::sync::Arc;

use locks_core::Backend;

async fn pair() -> Option<(Arc<dyn Backend>, Arc<dyn Backend>)> {
    let addr = common::server()?;
    let config = common::config(&addr, "conformance");
    let backend: Arc<dyn Backend> = Arc::new(common::connect(config.clone()).await);
    let peer: Arc<dyn Backend> = Arc::new(common::connect(config).await);
    Some((backend, peer))
}

locks_core::conformance_tests!(pair);
