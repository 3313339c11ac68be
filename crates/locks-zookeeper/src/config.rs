//! [`ZkConfig`]: where the ZooKeeper ensemble is and how to talk to it.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use locks_core::{Error, ErrorKind, Result};

use crate::path;

/// The namespace tooz uses when its URL names none: locks live under `/tooz/locks`.
pub const DEFAULT_NAMESPACE: &str = "tooz";

/// The session timeout asked of the server unless configured (tooz's default).
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(10);

/// How long [`ZkBackend::connect`](crate::ZkBackend::connect) tries to open a session.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The port of a host given without one, as in ZooKeeper connect strings.
pub const DEFAULT_PORT: u16 = 2181;

/// Whether this build can talk TLS to ZooKeeper (the `tls` feature of this crate).
pub const TLS_SUPPORTED: bool = cfg!(feature = "tls");

/// TLS to ZooKeeper's secure client port (PEM files), as tooz's `use_ssl`
/// with `ca`, `certfile`, `keyfile` and `keyfile_password`. The server's
/// certificate chain is always verified; its host name too unless
/// `check_hostname` is `false`. [`Debug`](fmt::Debug) never shows the key's
/// password.
#[derive(Clone, PartialEq, Eq)]
pub struct TlsConfig {
    /// The CA certificate(s) to trust; `None` trusts the system's roots (the
    /// platform's store; `SSL_CERT_FILE` and `SSL_CERT_DIR` point elsewhere).
    pub ca: Option<PathBuf>,
    /// A client certificate, for servers that want one (`ssl.clientAuth`).
    pub cert: Option<PathBuf>,
    /// The private key of `cert`: PEM, PKCS#8 encrypted when `key_password` is given.
    pub key: Option<PathBuf>,
    /// The password of an encrypted `key`.
    pub key_password: Option<String>,
    /// Whether the server's certificate must name the host connected to
    /// (default `true`). `false` is kazoo's `check_hostname=False`, which
    /// tooz always uses; the chain is still verified.
    pub check_hostname: bool,
}

impl Default for TlsConfig {
    /// The system's roots, no client certificate, host names checked.
    fn default() -> Self {
        TlsConfig {
            ca: None,
            cert: None,
            key: None,
            key_password: None,
            check_hostname: true,
        }
    }
}

impl fmt::Debug for TlsConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsConfig")
            .field("ca", &self.ca)
            .field("cert", &self.cert)
            .field("key", &self.key)
            .field("key_password", &self.key_password.as_ref().map(|_| "***"))
            .field("check_hostname", &self.check_hostname)
            .finish()
    }
}

/// How to reach a ZooKeeper ensemble, and where in it the locks live.
///
/// The `locks` facade builds this from a `zookeeper://` URL; backends never
/// parse URLs. [`Debug`](fmt::Debug) shows the user name but never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct ZkConfig {
    /// The servers of the ensemble, each `host` or `host:port` (`[v6-address]:port`
    /// for IPv6); a missing port means 2181. The client tries them in turn.
    pub hosts: Vec<String>,
    /// The top-level node under which `locks/<name>` directories are created,
    /// without slashes at either end (`tooz` gives `/tooz/locks/<name>`, like
    /// tooz). Slashes inside make nested nodes (`a/b` gives `/a/b/locks/<name>`).
    pub namespace: String,
    /// The session timeout asked of the server, which clamps it to its
    /// `minSessionTimeout`..`maxSessionTimeout`. Held locks are lost this long
    /// after the client stops reaching the server.
    pub session_timeout: Duration,
    /// How long opening a session may take before the server counts as unreachable.
    pub connect_timeout: Duration,
    /// Digest credentials `(user, password)`. When set, the session
    /// authenticates with them and every node it creates is readable and
    /// writable by that user only (as tooz does with credentials).
    pub credentials: Option<(String, String)>,
    /// TLS settings for a secure client port; `None` for plain text. Needs
    /// this crate's `tls` feature ([`TLS_SUPPORTED`]).
    pub tls: Option<TlsConfig>,
}

impl ZkConfig {
    /// A configuration for `hosts` with the defaults: namespace `tooz`, 10 s
    /// session timeout, 5 s connect timeout, no credentials.
    pub fn new<I, S>(hosts: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        ZkConfig {
            hosts: hosts.into_iter().map(Into::into).collect(),
            namespace: DEFAULT_NAMESPACE.to_owned(),
            session_timeout: DEFAULT_SESSION_TIMEOUT,
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            credentials: None,
            tls: None,
        }
    }

    /// Sets the namespace (see [`namespace`](ZkConfig::namespace)).
    pub fn namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Sets the session timeout.
    pub fn session_timeout(mut self, timeout: Duration) -> Self {
        self.session_timeout = timeout;
        self
    }

    /// Sets the connect timeout.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// Sets digest credentials.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// `zookeeper://host:port,…/namespace`, for messages; never shows credentials.
    pub fn describe(&self) -> String {
        format!("zookeeper://{}/{}", self.hosts.join(","), self.namespace)
    }

    /// The ZooKeeper connect string: the hosts joined by commas.
    pub(crate) fn connect_string(&self) -> String {
        match &self.tls {
            // zookeeper-client's per-server spelling of a secure port.
            Some(_) => self
                .hosts
                .iter()
                .map(|host| format!("tcp+tls://{host}"))
                .collect::<Vec<_>>()
                .join(","),
            None => self.hosts.join(","),
        }
    }

    /// Checks every field, so that connecting fails with a clear
    /// [`ErrorKind::InvalidConfig`] instead of a protocol error later.
    pub(crate) fn validate(&self) -> Result<()> {
        let invalid = |what: String| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("ZooKeeper configuration {}: {what}", self.describe()),
            )
        };
        if self.hosts.is_empty() {
            return Err(invalid(
                "no hosts: name at least one server as host:port".to_owned(),
            ));
        }
        for host in &self.hosts {
            check_host(host).map_err(|why| invalid(format!("host `{host}`: {why}")))?;
        }
        path::check_namespace(&self.namespace)
            .map_err(|why| invalid(format!("namespace `{}`: {why}", self.namespace)))?;
        if self.session_timeout < Duration::from_millis(1)
            || self.session_timeout.as_millis() > i32::MAX as u128
        {
            return Err(invalid(format!(
                "session timeout {:?} is out of range: give at least 1 ms (servers allow 2 to 20 ticks by default)",
                self.session_timeout
            )));
        }
        if self.connect_timeout.is_zero() {
            return Err(invalid(
                "connect timeout is zero: give the time opening a session may take".to_owned(),
            ));
        }
        if let Some(tls) = &self.tls {
            if !TLS_SUPPORTED {
                return Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "ZooKeeper configuration {}: TLS is not supported by this build (build locks-zookeeper with its `tls` feature)",
                        self.describe()
                    ),
                ));
            }
            if tls.cert.is_some() != tls.key.is_some() {
                return Err(invalid(
                    "a client certificate and its key go together: give both `certfile` and `keyfile`"
                        .to_owned(),
                ));
            }
            if tls.key_password.is_some() && tls.key.is_none() {
                return Err(invalid(
                    "`keyfile_password` without `keyfile`: give the encrypted key it opens"
                        .to_owned(),
                ));
            }
        }
        if let Some((user, _)) = &self.credentials
            && (user.is_empty() || user.contains(':'))
        {
            return Err(invalid(
                "the credentials' user name must be non-empty and hold no `:`".to_owned(),
            ));
        }
        Ok(())
    }
}

/// `host`, `host:port` or `[v6]:port` with a port in 1..=65535.
fn check_host(host: &str) -> std::result::Result<(), &'static str> {
    if host.is_empty() {
        return Err("empty host");
    }
    if host.contains(['/', ',', '@', ' ']) {
        return Err("a host is `name[:port]`, without `/`, `,`, `@` or spaces");
    }
    let port = if let Some(rest) = host.strip_prefix('[') {
        let Some((addr, after)) = rest.split_once(']') else {
            return Err("unclosed `[` in an IPv6 address");
        };
        if addr.is_empty() {
            return Err("empty IPv6 address");
        }
        match after {
            "" => None,
            _ => match after.strip_prefix(':') {
                Some(port) => Some(port),
                None => return Err("expected `:port` after `]`"),
            },
        }
    } else {
        match host.rsplit_once(':') {
            Some(("", _)) => return Err("empty host name"),
            Some((name, _)) if name.contains(':') => {
                return Err("write IPv6 addresses in brackets: [::1]:2181");
            }
            Some((_, port)) => Some(port),
            None => None,
        }
    };
    match port {
        None => Ok(()),
        Some(port) => match port.parse::<u16>() {
            Ok(0) | Err(_) => Err("the port must be a number from 1 to 65535"),
            Ok(_) => Ok(()),
        },
    }
}

impl fmt::Debug for ZkConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ZkConfig")
            .field("hosts", &self.hosts)
            .field("namespace", &self.namespace)
            .field("session_timeout", &self.session_timeout)
            .field("connect_timeout", &self.connect_timeout)
            .field(
                "credentials",
                &self.credentials.as_ref().map(|(user, _)| (user, "***")),
            )
            .field("tls", &self.tls)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_hides_the_password() {
        let config = ZkConfig::new(["127.0.0.1:2181"]).credentials("cinder", "s3cret");
        let shown = format!("{config:?}");
        assert!(
            shown.contains("cinder") && !shown.contains("s3cret"),
            "{shown}"
        );
        assert!(!config.describe().contains("s3cret"));
    }

    #[test]
    fn validates_hosts_namespace_and_timeouts() {
        let ok = ZkConfig::new(["a:2181", "b", "[::1]:2182", "10.0.0.1:1"]);
        ok.validate().unwrap();
        assert_eq!(
            ok.describe(),
            "zookeeper://a:2181,b,[::1]:2182,10.0.0.1:1/tooz"
        );
        for (config, needle) in [
            (ZkConfig::new(Vec::<String>::new()), "no hosts"),
            (ZkConfig::new(["a:0"]), "port"),
            (ZkConfig::new(["a:x"]), "port"),
            (ZkConfig::new([":2181"]), "empty host"),
            (ZkConfig::new(["::1"]), "brackets"),
            (ZkConfig::new(["[::1"]), "unclosed"),
            (ZkConfig::new(["a,b"]), "without"),
            (ZkConfig::new(["a"]).namespace(""), "namespace"),
            (ZkConfig::new(["a"]).namespace("/x"), "namespace"),
            (ZkConfig::new(["a"]).namespace("zookeeper"), "reserved"),
            (
                ZkConfig::new(["a"]).session_timeout(Duration::ZERO),
                "session timeout",
            ),
            (
                ZkConfig::new(["a"]).connect_timeout(Duration::ZERO),
                "connect timeout",
            ),
            (ZkConfig::new(["a"]).credentials("a:b", "c"), "user name"),
        ] {
            let err = config.validate().unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig);
            assert!(err.message().contains(needle), "{needle}: {err}");
        }
    }
}
