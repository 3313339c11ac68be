//! The typed configuration of the etcd backend.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use locks_core::{Error, ErrorKind, Result};

/// The key prefix of OpenStack tooz's etcd3 driver; the lock name follows
/// without a separator.
pub const TOOZ_PREFIX: &str = "/tooz/locks";

/// The default lease TTL.
pub const DEFAULT_TTL: Duration = Duration::from_secs(10);

/// The shortest lease TTL accepted. etcd itself refuses shorter leases on a
/// default-configured cluster, and the keep-alive needs room for a few pings.
pub const MIN_TTL: Duration = Duration::from_secs(2);

/// The default bound on connecting and on every single request.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Whether this build can talk TLS to etcd (the `tls` feature of this crate).
pub const TLS_SUPPORTED: bool = cfg!(feature = "tls");

/// How locks are laid out in etcd's key space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Layout {
    /// The protocol of etcd's own `concurrency.Mutex` (and `etcdctl lock`):
    /// one key `<prefix><name>/<lease id in hex>` per contender, the oldest
    /// key holds, each waiter watches the key just ahead of it. FIFO.
    #[default]
    Mutex,
    /// The layout of OpenStack tooz's etcd3 driver: one key
    /// `/tooz/locks<name>` holding a random value, created only if absent.
    /// Waiters watch that key; not FIFO.
    Tooz,
}

impl Layout {
    /// The name used in URLs and messages: `mutex` or `tooz`.
    pub fn as_str(self) -> &'static str {
        match self {
            Layout::Mutex => "mutex",
            Layout::Tooz => "tooz",
        }
    }
}

impl fmt::Display for Layout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Layout {
    type Err = Error;

    /// Parses `mutex` or `tooz`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "mutex" => Ok(Layout::Mutex),
            "tooz" => Ok(Layout::Tooz),
            other => Err(Error::new(
                ErrorKind::InvalidConfig,
                format!("unknown etcd layout `{other}`; expected `mutex` or `tooz`"),
            )),
        }
    }
}

/// Files for a TLS connection to etcd (PEM encoded).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificate(s) the server's certificate must chain to; `None`
    /// trusts the system's roots (the platform's store, as Python's
    /// `requests` does for tooz: `SSL_CERT_FILE` and `SSL_CERT_DIR` point
    /// elsewhere).
    pub ca: Option<PathBuf>,
    /// The client certificate, for servers that require client authentication.
    pub cert: Option<PathBuf>,
    /// The private key of `cert`.
    pub key: Option<PathBuf>,
}

/// Everything [`EtcdBackend::connect`](crate::EtcdBackend::connect) needs.
///
/// The `locks` facade builds it from an `etcd://` URL; build it directly when
/// using this crate alone. `Debug` never shows the password.
#[derive(Clone, PartialEq, Eq)]
pub struct EtcdConfig {
    /// The servers, as `host:port` (or `http://host:port`): every member of
    /// the cluster. Requests go to one at a time and fail over to the next.
    pub endpoints: Vec<String>,
    /// The TTL of the lease that all locks of one backend share: how long the
    /// locks outlive a holder that stopped keeping the lease alive (crashed,
    /// paused, cut off). Whole seconds, at least [`MIN_TTL`]; default 10 s.
    pub ttl: Duration,
    /// Prepended to every lock name. Default empty, which gives the same keys
    /// as `etcdctl lock <name>`. With [`Layout::Tooz`] it must be empty or
    /// [`TOOZ_PREFIX`]: that layout always uses [`TOOZ_PREFIX`].
    pub prefix: String,
    /// How locks are laid out in etcd; default [`Layout::Mutex`].
    pub layout: Layout,
    /// The etcd user, if the cluster has authentication enabled.
    pub user: Option<String>,
    /// The password of `user`.
    pub password: Option<String>,
    /// TLS settings; `None` connects in plain text. Needs a build with the
    /// `tls` feature (see [`TLS_SUPPORTED`]).
    pub tls: Option<TlsConfig>,
    /// Bounds connecting and every single request to etcd, failover to
    /// other members included, but never more than `ttl` (not the wait for
    /// a lock, which the caller bounds with [`Wait`](locks_core::Wait)).
    /// Default 5 s.
    pub connect_timeout: Duration,
}

impl EtcdConfig {
    /// A configuration for `endpoints` with every other setting at its default.
    pub fn new<I, S>(endpoints: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        EtcdConfig {
            endpoints: endpoints.into_iter().map(Into::into).collect(),
            ttl: DEFAULT_TTL,
            prefix: String::new(),
            layout: Layout::Mutex,
            user: None,
            password: None,
            tls: None,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
        }
    }

    /// The endpoints joined by commas, as messages show them.
    pub fn endpoint_list(&self) -> String {
        self.endpoints.join(",")
    }

    /// The prefix the layout puts in front of lock names.
    pub(crate) fn effective_prefix(&self) -> &str {
        match self.layout {
            Layout::Mutex => &self.prefix,
            Layout::Tooz => TOOZ_PREFIX,
        }
    }

    /// The TTL in whole seconds.
    pub(crate) fn ttl_secs(&self) -> i64 {
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        i64::try_from(secs).unwrap_or(i64::MAX)
    }

    /// Checks the settings; every problem is an [`ErrorKind::InvalidConfig`]
    /// (or [`ErrorKind::Unsupported`] for TLS in a build without it).
    ///
    /// # Errors
    /// As above, with a message naming the setting.
    pub fn validate(&self) -> Result<()> {
        let invalid = |what: String| Err(Error::new(ErrorKind::InvalidConfig, what));
        if self.endpoints.is_empty() {
            return invalid("etcd: no endpoints given; expected e.g. 127.0.0.1:2379".to_owned());
        }
        if let Some(bad) = self
            .endpoints
            .iter()
            .find(|e| e.trim().is_empty() || e.chars().any(|c| c.is_whitespace() || c == ','))
        {
            return invalid(format!(
                "etcd: endpoint `{bad}` is not host:port; expected e.g. 127.0.0.1:2379"
            ));
        }
        if self.ttl < MIN_TTL {
            return invalid(format!(
                "etcd at {}: ttl {:?} is below the minimum of {MIN_TTL:?}",
                self.endpoint_list(),
                self.ttl
            ));
        }
        if self.ttl.subsec_nanos() != 0 {
            return invalid(format!(
                "etcd at {}: ttl {:?} is not whole seconds (etcd leases count seconds)",
                self.endpoint_list(),
                self.ttl
            ));
        }
        if self.connect_timeout.is_zero() {
            return invalid(format!(
                "etcd at {}: connect_timeout must be above zero",
                self.endpoint_list()
            ));
        }
        if self.layout == Layout::Tooz && !matches!(self.prefix.as_str(), "" | TOOZ_PREFIX) {
            return invalid(format!(
                "etcd at {}: layout=tooz always uses the prefix `{TOOZ_PREFIX}` (as tooz does); \
                 remove prefix=`{}`",
                self.endpoint_list(),
                self.prefix
            ));
        }
        match (&self.user, &self.password) {
            (Some(user), _) if user.is_empty() => {
                return invalid(format!("etcd at {}: empty user name", self.endpoint_list()));
            }
            (None, Some(_)) => {
                return invalid(format!(
                    "etcd at {}: a password without a user name",
                    self.endpoint_list()
                ));
            }
            _ => {}
        }
        if let Some(tls) = &self.tls {
            if !TLS_SUPPORTED {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "etcd at {}: TLS is not supported by this build (build locks-etcd with its `tls` feature)",
                        self.endpoint_list()
                    ),
                ));
            }
            if tls.cert.is_some() != tls.key.is_some() {
                return invalid(format!(
                    "etcd at {}: a TLS client certificate needs both `cert` and `key`",
                    self.endpoint_list()
                ));
            }
        }
        Ok(())
    }
}

impl fmt::Debug for EtcdConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConfig")
            .field("endpoints", &self.endpoints)
            .field("ttl", &self.ttl)
            .field("prefix", &self.prefix)
            .field("layout", &self.layout)
            .field("user", &self.user)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .field("tls", &self.tls)
            .field("connect_timeout", &self.connect_timeout)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_validation() {
        let config = EtcdConfig::new(["127.0.0.1:2379"]);
        assert_eq!(config.ttl, DEFAULT_TTL);
        assert_eq!(config.layout, Layout::Mutex);
        config.validate().unwrap();
        assert_eq!(config.effective_prefix(), "");
        assert_eq!(config.ttl_secs(), 10);

        let mut c = config.clone();
        c.ttl = Duration::from_secs(1);
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
        c.ttl = Duration::from_millis(2500);
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);

        let mut c = config.clone();
        c.layout = Layout::Tooz;
        c.validate().unwrap();
        assert_eq!(c.effective_prefix(), TOOZ_PREFIX);
        c.prefix = "/other/".into();
        let err = c.validate().unwrap_err();
        assert!(err.message().contains("tooz"), "{err}");

        let mut c = config.clone();
        c.endpoints.clear();
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
        let mut c = config.clone();
        c.password = Some("x".into());
        assert_eq!(c.validate().unwrap_err().kind(), ErrorKind::InvalidConfig);
    }

    #[test]
    fn debug_hides_the_password() {
        let mut config = EtcdConfig::new(["127.0.0.1:2379"]);
        config.user = Some("root".into());
        config.password = Some("hunter2".into());
        let shown = format!("{config:?}");
        assert!(
            !shown.contains("hunter2") && shown.contains("***"),
            "{shown}"
        );
    }

    #[test]
    fn layouts_parse() {
        assert_eq!("mutex".parse::<Layout>().unwrap(), Layout::Mutex);
        assert_eq!("tooz".parse::<Layout>().unwrap(), Layout::Tooz);
        assert_eq!(
            "zk".parse::<Layout>().unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
    }
}
