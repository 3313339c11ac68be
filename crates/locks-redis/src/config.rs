//! The typed configuration of the Redis backend.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use locks_core::{Error, ErrorKind, Result};

/// tooz's default namespace: lock `N` lives in the key `_tooz_N_lock`.
pub const DEFAULT_NAMESPACE: &str = "_tooz";

/// The default expiry of a lock key: tooz's default `lock_timeout` (30 s).
pub const DEFAULT_LOCK_TIMEOUT: Duration = Duration::from_secs(30);

/// The shortest lock expiry accepted: refreshes run every third of it and
/// need room for a few round trips.
pub const MIN_LOCK_TIMEOUT: Duration = Duration::from_secs(1);

/// The default bound on connecting and on every single request.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// The default Redis port.
pub const DEFAULT_PORT: u16 = 6379;

/// Whether this build can talk TLS to Redis (the `tls` feature of this crate).
pub const TLS_SUPPORTED: bool = cfg!(feature = "tls");

/// One server address, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Address {
    /// A host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The TCP port.
    pub port: u16,
}

impl Address {
    /// `host:port`.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Address {
            host: host.into(),
            port,
        }
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.host.contains(':') {
            write!(f, "[{}]:{}", self.host, self.port)
        } else {
            write!(f, "{}:{}", self.host, self.port)
        }
    }
}

/// Where the Redis master is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Server {
    /// One server, used as it is.
    Direct(Address),
    /// Redis Sentinel: the sentinels are asked (in order) for the address of
    /// the master of the group `master_name`; after a failover they are asked
    /// again.
    Sentinel {
        /// The name of the monitored master group (tooz's `sentinel=`).
        master_name: String,
        /// The sentinels, first the URL's host, then each `sentinel_fallback`.
        sentinels: Vec<Address>,
    },
}

/// Credentials for Redis ACL / `requirepass`. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The ACL user; `None` authenticates with the password alone
    /// (`requirepass`, the `default` user).
    pub username: Option<String>,
    /// The password.
    pub password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}

/// Files for a TLS connection (PEM encoded).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct TlsConfig {
    /// The CA certificate(s) the server's certificate must chain to; `None`
    /// uses the system's trust store.
    pub ca: Option<PathBuf>,
    /// The client certificate, for servers that require client authentication.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Everything [`RedisBackend::connect`](crate::RedisBackend::connect) needs.
///
/// The `locks` facade builds it from a `redis://` URL (tooz's spelling);
/// build it directly when using this crate alone. `Debug` never shows a
/// password.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RedisConfig {
    /// The server, or the sentinels that know it.
    pub server: Server,
    /// The logical database (`SELECT`); default 0.
    pub db: i64,
    /// Credentials for the Redis master (and the replica promoted after a failover).
    pub credentials: Option<Credentials>,
    /// Credentials for the sentinels (tooz's `sentinel_username`,
    /// `sentinel_password`); sentinels are asked without any when `None`.
    pub sentinel_credentials: Option<Credentials>,
    /// TLS to the Redis master; `None` connects in plain text.
    pub tls: Option<TlsConfig>,
    /// TLS to the sentinels too (tooz's `sentinel_ssl`), with the files of `tls`.
    pub sentinel_tls: bool,
    /// The key prefix: lock `N` is the key `<namespace>_N_lock` (tooz's layout).
    /// Default [`DEFAULT_NAMESPACE`].
    pub namespace: String,
    /// How long a lock key outlives its holder's last refresh (`PX` of the
    /// `SET`); whole milliseconds, at least [`MIN_LOCK_TIMEOUT`]. Held keys
    /// are refreshed every third of it. Default [`DEFAULT_LOCK_TIMEOUT`].
    pub lock_timeout: Duration,
    /// Bounds connecting to one server (tooz's `socket_connect_timeout`).
    /// Default [`DEFAULT_REQUEST_TIMEOUT`].
    pub connect_timeout: Duration,
    /// Bounds every request, reconnecting and asking the sentinels again
    /// included (tooz's `socket_timeout`), but never more than the lock
    /// timeout. Default [`DEFAULT_REQUEST_TIMEOUT`].
    pub request_timeout: Duration,
}

impl RedisConfig {
    /// A configuration for one server at `host:port`, every other setting at
    /// its default.
    pub fn new(host: impl Into<String>, port: u16) -> Self {
        Self::with_server(Server::Direct(Address::new(host, port)))
    }

    /// A configuration for the master `master_name` that `sentinels` know.
    pub fn sentinel(master_name: impl Into<String>, sentinels: Vec<Address>) -> Self {
        Self::with_server(Server::Sentinel {
            master_name: master_name.into(),
            sentinels,
        })
    }

    fn with_server(server: Server) -> Self {
        RedisConfig {
            server,
            db: 0,
            credentials: None,
            sentinel_credentials: None,
            tls: None,
            sentinel_tls: false,
            namespace: DEFAULT_NAMESPACE.to_owned(),
            lock_timeout: DEFAULT_LOCK_TIMEOUT,
            connect_timeout: DEFAULT_REQUEST_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
        }
    }

    /// Where the backend points, for messages: `redis://host:port` or
    /// `redis+sentinel://s1,s2,s3/master`. Never includes credentials.
    pub fn describe(&self) -> String {
        let scheme = if self.tls.is_some() {
            "rediss"
        } else {
            "redis"
        };
        match &self.server {
            Server::Direct(address) => format!("{scheme}://{address}/{}", self.db),
            Server::Sentinel {
                master_name,
                sentinels,
            } => format!(
                "{scheme}://{} (sentinel master `{master_name}`, db {})",
                sentinels
                    .iter()
                    .map(Address::to_string)
                    .collect::<Vec<_>>()
                    .join(","),
                self.db
            ),
        }
    }

    /// The Redis key of lock `name`: `<namespace>_<name>_lock`, as tooz names it.
    pub fn key_of(&self, name: &str) -> String {
        format!("{}_{name}_lock", self.namespace)
    }

    /// Checks the settings; every problem is an [`ErrorKind::InvalidConfig`]
    /// (or [`ErrorKind::Unsupported`] for TLS in a build without it).
    ///
    /// # Errors
    /// As above, with a message naming the setting.
    pub fn validate(&self) -> Result<()> {
        let at = self.describe();
        let invalid = |what: String| Err(Error::new(ErrorKind::InvalidConfig, what));
        let addresses: Vec<&Address> = match &self.server {
            Server::Direct(address) => vec![address],
            Server::Sentinel {
                master_name,
                sentinels,
            } => {
                if master_name.trim().is_empty() {
                    return invalid(format!("redis at {at}: empty sentinel master name"));
                }
                if sentinels.is_empty() {
                    return invalid(format!(
                        "redis: no sentinels given for master `{master_name}`"
                    ));
                }
                sentinels.iter().collect()
            }
        };
        if let Some(bad) = addresses
            .iter()
            .find(|a| a.host.trim().is_empty() || a.port == 0)
        {
            return invalid(format!(
                "redis: server `{bad}` is not host:port; expected e.g. 127.0.0.1:6379"
            ));
        }
        if self.db < 0 {
            return invalid(format!(
                "redis at {at}: db {} is negative; Redis numbers databases from 0",
                self.db
            ));
        }
        if self.lock_timeout < MIN_LOCK_TIMEOUT {
            return invalid(format!(
                "redis at {at}: lock timeout {:?} is below the minimum of {MIN_LOCK_TIMEOUT:?}",
                self.lock_timeout
            ));
        }
        if !self.lock_timeout.subsec_nanos().is_multiple_of(1_000_000) {
            return invalid(format!(
                "redis at {at}: lock timeout {:?} is not whole milliseconds (SET PX counts milliseconds)",
                self.lock_timeout
            ));
        }
        if self.connect_timeout.is_zero() || self.request_timeout.is_zero() {
            return invalid(format!(
                "redis at {at}: connect and request timeouts must be above zero"
            ));
        }
        if self.namespace.is_empty() {
            return invalid(format!(
                "redis at {at}: empty namespace (tooz's default is `{DEFAULT_NAMESPACE}`)"
            ));
        }
        for creds in [&self.credentials, &self.sentinel_credentials]
            .into_iter()
            .flatten()
        {
            if creds.username.as_deref() == Some("") {
                return invalid(format!("redis at {at}: empty user name"));
            }
        }
        if self.sentinel_tls && self.tls.is_none() {
            return invalid(format!(
                "redis at {at}: TLS to the sentinels needs TLS settings (tooz's sentinel_ssl uses \
                 the ssl_* files)"
            ));
        }
        if let Some(tls) = &self.tls {
            if !TLS_SUPPORTED {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "redis at {at}: TLS is not supported by this build (build locks-redis with its `tls` feature)"
                    ),
                ));
            }
            if tls.cert.is_some() != tls.key.is_some() {
                return invalid(format!(
                    "redis at {at}: a TLS client certificate needs both the certificate and the key \
                     (ssl_certfile and ssl_keyfile)"
                ));
            }
        }
        Ok(())
    }

    /// The bound of one request: the configured one, never above the lock
    /// timeout (a request outlasting the key it works for is pointless).
    pub(crate) fn effective_request_timeout(&self) -> Duration {
        self.request_timeout.min(self.lock_timeout)
    }

    /// The lock timeout in milliseconds, for `PX` and `PEXPIRE`.
    pub(crate) fn lock_timeout_ms(&self) -> u64 {
        u64::try_from(self.lock_timeout.as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_layout_and_validation() {
        let config = RedisConfig::new("127.0.0.1", 6379);
        config.validate().unwrap();
        assert_eq!(config.key_of("cinder-vol-1"), "_tooz_cinder-vol-1_lock");
        assert_eq!(config.lock_timeout, Duration::from_secs(30));
        assert_eq!(config.describe(), "redis://127.0.0.1:6379/0");

        let mut c = config.clone();
        c.lock_timeout = Duration::from_millis(500);
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
        c.lock_timeout = Duration::from_micros(1_500_500);
        assert!(c.validate().unwrap_err().message().contains("milliseconds"));
        let mut c = config.clone();
        c.db = -1;
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
        let c = RedisConfig::sentinel("kolla", vec![]);
        assert!(c.validate().unwrap_err().message().contains("no sentinels"));
        let c = RedisConfig::sentinel("kolla", vec![Address::new("::1", 26379)]);
        c.validate().unwrap();
        assert!(c.describe().contains("[::1]:26379"), "{}", c.describe());
    }

    #[test]
    fn debug_hides_passwords() {
        let mut config = RedisConfig::new("h", 6379);
        config.credentials = Some(Credentials {
            username: Some("default".into()),
            password: "hunter2".into(),
        });
        config.sentinel_credentials = Some(Credentials {
            username: None,
            password: "sentinel-secret".into(),
        });
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && !shown.contains("sentinel-secret"),
            "{shown}"
        );
        assert!(!config.describe().contains("hunter2"));
    }
}
