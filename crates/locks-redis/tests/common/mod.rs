//! Backends on the servers `ci/redis.sh` starts (see its header for the
//! environment). Without them tests skip with a notice; under `CI=true` they fail.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use locks_core::Backend;
use locks_core::testing::server_from_env;
use locks_redis::{Address, Credentials, RedisBackend, RedisConfig};

/// The lock timeout of the test backends: short, so expiry tests are quick.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(3);

fn address(text: &str) -> Address {
    let (host, port) = text
        .rsplit_once(':')
        .unwrap_or_else(|| panic!("`{text}` is not host:port"));
    Address::new(
        host,
        port.parse()
            .unwrap_or_else(|e| panic!("port of `{text}`: {e}")),
    )
}

fn password(var: &str) -> Option<Credentials> {
    std::env::var(var)
        .ok()
        .filter(|p| !p.is_empty())
        .map(|password| Credentials {
            username: None,
            password,
        })
}

/// The configuration of the plain server (`ci/redis.sh start`), or `None`.
pub fn plain_config() -> Option<RedisConfig> {
    let server = server_from_env("LOCKS_TEST_REDIS")?;
    let server = address(&server);
    let mut config = RedisConfig::new(server.host, server.port);
    config.credentials = password("LOCKS_TEST_REDIS_PASSWORD");
    config.lock_timeout = LOCK_TIMEOUT;
    Some(config)
}

/// The configuration of the Sentinel setup (`ci/redis.sh start-sentinel`), or `None`.
pub fn sentinel_config() -> Option<RedisConfig> {
    let sentinels = server_from_env("LOCKS_TEST_REDIS_SENTINELS")?;
    let master =
        std::env::var("LOCKS_TEST_REDIS_SENTINEL_MASTER").unwrap_or_else(|_| "locks".into());
    let mut config = RedisConfig::sentinel(master, sentinels.split(',').map(address).collect());
    config.credentials = password("LOCKS_TEST_REDIS_SENTINEL_PASSWORD");
    config.lock_timeout = LOCK_TIMEOUT;
    Some(config)
}

pub async fn connect(config: RedisConfig) -> RedisBackend {
    RedisBackend::connect(config)
        .await
        .unwrap_or_else(|e| panic!("connecting: {}", e.report()))
}

/// Two clients (two connections) of the same server.
pub async fn pair(config: Option<RedisConfig>) -> Option<(Arc<dyn Backend>, Arc<dyn Backend>)> {
    let config = config?;
    let a: Arc<dyn Backend> = Arc::new(connect(config.clone()).await);
    let b: Arc<dyn Backend> = Arc::new(connect(config).await);
    Some((a, b))
}
