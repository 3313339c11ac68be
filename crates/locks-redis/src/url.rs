//! `redis://[USER:PASSWORD@]HOST[:PORT][/][?OPTIONS]` and `rediss://…`:
//! locks on Redis or Valkey (Global scope), in the spelling of OpenStack
//! tooz's redis driver, so a service's `[coordination] backend_url` can be
//! pasted as it is (kolla-ansible writes
//! `redis://default:PW@H1:26379?sentinel=kolla&sentinel_fallback=H2:26379&…`).
//! The keys are tooz's (`<namespace>_<name>_lock`); see the crate documentation.
//!
//! As tooz reads it: `HOST[:PORT]` is the server (port 6379), or with
//! `sentinel=` the first sentinel; `USER:PASSWORD@` are taken as written
//! (tooz does not percent-decode them); option values are percent-decoded.
//! Every option tooz's driver accepts is honoured or refused here by name:
//!
//! - `sentinel=NAME`: ask the sentinels for the master of `NAME`;
//!   `sentinel_fallback=HOST:PORT` (repeatable): more sentinels;
//!   `sentinel_username`, `sentinel_password`: the sentinels' credentials;
//!   `sentinel_ssl`: TLS to the sentinels too (with the `ssl_*` files).
//! - `db=N`: the database (`SELECT`).
//! - `ssl` (or the scheme `rediss://`): TLS; `ssl_ca_certs`, `ssl_certfile`,
//!   `ssl_keyfile`: PEM files (the CA file, else the system's roots).
//! - `socket_timeout`: seconds; bounds every request, reconnecting included
//!   (never more than the lock timeout). `socket_connect_timeout`: seconds;
//!   bounds connecting to one server. Both default to 5 s.
//! - `retry_on_timeout`: accepted (a boolean); requests here are always sent
//!   again after a timeout or a broken connection within `socket_timeout`,
//!   which every request of this backend is safe for.
//! - `namespace`: the key prefix, default `_tooz`.
//! - `lock_timeout`, else `timeout`: whole seconds, the expiry of a lock key
//!   (default 30, tooz's).
//! - `membership_timeout`: accepted, without effect (tooz's group membership).
//! - `encoding`: `utf8` only (lock names are UTF-8).
//! - `socket_keepalive`, `health_check_interval`: refused (remove them: held
//!   keys are refreshed every third of the lock timeout, which finds a dead
//!   connection).
//!
//! A user name and password in the URL are the master's (and a promoted
//! replica's): tooz passes them to the master only.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use locks_core::{Error, ErrorKind, Result, percent_decode, redact_text, split_host_port};

use crate::{Address, Credentials, RedisConfig, TLS_SUPPORTED, TlsConfig};

/// The options of tooz's redis driver (its `CLIENT_ARGS` and the driver's own).
const OPTIONS: &[&str] = &[
    "sentinel",
    "sentinel_fallback",
    "sentinel_username",
    "sentinel_password",
    "sentinel_ssl",
    "db",
    "ssl",
    "ssl_ca_certs",
    "ssl_certfile",
    "ssl_keyfile",
    "socket_timeout",
    "socket_connect_timeout",
    "retry_on_timeout",
    "namespace",
    "timeout",
    "lock_timeout",
    "membership_timeout",
    "encoding",
    "socket_keepalive",
    "health_check_interval",
];

impl RedisConfig {
    /// Parses a `redis://` or `rediss://` URL, as tooz's redis driver reads
    /// it, held by configuration key `key` (named in every error).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the key, the URL (without its
    /// passwords) and the option at fault, with what to do;
    /// [`ErrorKind::Unsupported`] for TLS in a build without it.
    pub fn from_url(key: &str, text: &str) -> Result<Self> {
        parse(key, text)
    }
}

struct Url<'a> {
    key: &'a str,
    text: &'a str,
}

impl Url<'_> {
    fn invalid(&self, what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("{} = \"{}\": {what}", self.key, redact_text(self.text)),
        )
    }

    fn unsupported(&self, what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::Unsupported,
            format!("{} = \"{}\": {what}", self.key, redact_text(self.text)),
        )
    }
}

/// Parses a `redis://` / `rediss://` URL as tooz's redis driver reads it.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] naming the option and what to do;
/// [`ErrorKind::Unsupported`] for TLS in a build without it.
fn parse(key: &str, text: &str) -> Result<RedisConfig> {
    let url = Url { key, text };
    let (tls_scheme, rest) = match (
        text.strip_prefix("redis://"),
        text.strip_prefix("rediss://"),
    ) {
        (Some(rest), _) => (false, rest),
        (None, Some(rest)) => (true, rest),
        (None, None) => return Err(url.invalid("not a redis:// or rediss:// URL")),
    };
    if rest.contains('#') {
        return Err(url.invalid("a fragment (`#…`) means nothing here: remove it"));
    }
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = match before_query.find('/') {
        Some(slash) => before_query.split_at(slash),
        None => (before_query, ""),
    };
    if !matches!(path, "" | "/") {
        return Err(url.invalid(format_args!(
            "tooz's redis driver ignores the path `{path}` (and Unix sockets are not supported here): \
             remove it, and give the database as `db=N`"
        )));
    }
    // As Python's urlparse: the user info ends at the last `@`, the user
    // name at the first `:` of it; neither is percent-decoded.
    let (userinfo, hostport) = match authority.rfind('@') {
        Some(at) => (Some(&authority[..at]), &authority[at + 1..]),
        None => (None, authority),
    };
    let credentials = userinfo.and_then(|info| {
        let (user, password) = info.split_once(':').unwrap_or((info, ""));
        (!password.is_empty()).then(|| Credentials {
            username: (!user.is_empty()).then(|| user.to_owned()),
            password: password.to_owned(),
        })
    });
    if userinfo.is_some_and(|info| !info.is_empty()) && credentials.is_none() {
        return Err(url.invalid(
            "a user name without a password: write redis://USER:PASSWORD@HOST (or :PASSWORD@HOST)",
        ));
    }
    if hostport.is_empty() {
        return Err(
            url.invalid("name the server: redis://HOST:6379 (Unix sockets are not supported here)")
        );
    }
    let first = parse_address(hostport).ok_or_else(|| {
        url.invalid(format_args!(
            "`{hostport}` is not HOST[:PORT] (one server; more sentinels go in sentinel_fallback)"
        ))
    })?;

    let options = parse_query(&url, query)?;
    let single = |name: &str| -> Result<Option<&str>> {
        match options.get(name).map(Vec::as_slice) {
            None => Ok(None),
            Some([one]) => Ok(Some(one.as_str())),
            Some(_) => Err(url.invalid(format_args!(
                "option `{name}` is given more than once (only sentinel_fallback may repeat)"
            ))),
        }
    };
    for name in ["socket_keepalive", "health_check_interval"] {
        if options.contains_key(name) {
            return Err(url.invalid(format_args!(
                "option `{name}` is not supported here: remove it (held locks are refreshed every \
                 third of the lock timeout, which finds a dead connection)"
            )));
        }
    }
    if let Some(encoding) = single("encoding")?
        && !matches!(encoding.to_ascii_lowercase().as_str(), "utf8" | "utf-8")
    {
        return Err(url.invalid(format_args!(
            "option `encoding`: `{encoding}` is not supported; lock names are UTF-8 (remove it, or write utf8)"
        )));
    }
    let boolean = |name: &str| -> Result<Option<bool>> {
        let Some(value) = single(name)? else {
            return Ok(None);
        };
        // oslo's bool_from_string, strictly: anything else is an error
        // rather than a silent `false`.
        match value.to_ascii_lowercase().as_str() {
            "1" | "t" | "true" | "on" | "y" | "yes" => Ok(Some(true)),
            "0" | "f" | "false" | "off" | "n" | "no" => Ok(Some(false)),
            _ => Err(url.invalid(format_args!(
                "option `{name}`: `{value}` is not a boolean (write yes or no, true or false)"
            ))),
        }
    };
    let seconds = |name: &str, whole: bool| -> Result<Option<Duration>> {
        let Some(value) = single(name)? else {
            return Ok(None);
        };
        let parsed = if whole {
            value.parse::<u64>().ok().map(Duration::from_secs)
        } else {
            value
                .parse::<f64>()
                .ok()
                .filter(|s| s.is_finite())
                .and_then(|s| Duration::try_from_secs_f64(s).ok())
        };
        match parsed.filter(|d| !d.is_zero()) {
            Some(d) => Ok(Some(d)),
            None => Err(url.invalid(format_args!(
                "option `{name}`: `{value}` is not a positive number of {}seconds",
                if whole { "whole " } else { "" }
            ))),
        }
    };

    let mut config = match single("sentinel")? {
        Some(master) => {
            let mut sentinels = vec![first];
            for fallback in options.get("sentinel_fallback").into_iter().flatten() {
                let address = parse_address(fallback)
                    .filter(|_| split_host_port(fallback).is_some_and(|(_, port)| port.is_some()))
                    .ok_or_else(|| {
                        url.invalid(format_args!(
                            "option `sentinel_fallback`: `{fallback}` is not HOST:PORT"
                        ))
                    })?;
                sentinels.push(address);
            }
            RedisConfig::sentinel(master, sentinels)
        }
        None => {
            for name in [
                "sentinel_fallback",
                "sentinel_username",
                "sentinel_password",
                "sentinel_ssl",
            ] {
                if options.contains_key(name) {
                    return Err(url.invalid(format_args!(
                        "option `{name}` needs `sentinel=MASTER_NAME` (without it tooz ignores it)"
                    )));
                }
            }
            RedisConfig::new(first.host, first.port)
        }
    };
    config.credentials = credentials;
    if let Some(password) = single("sentinel_password")? {
        config.sentinel_credentials = Some(Credentials {
            username: single("sentinel_username")?.map(str::to_owned),
            password: password.to_owned(),
        });
    } else if options.contains_key("sentinel_username") {
        return Err(url.invalid("option `sentinel_username` needs `sentinel_password`"));
    }
    if let Some(db) = single("db")? {
        config.db = db.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| {
            url.invalid(format_args!(
                "option `db`: `{db}` is not a database number (0, 1, …)"
            ))
        })?;
    }
    if let Some(namespace) = single("namespace")? {
        config.namespace = namespace.to_owned();
    }
    if let Some(lock_timeout) = seconds("lock_timeout", true)?.or(seconds("timeout", true)?) {
        config.lock_timeout = lock_timeout;
    }
    let _ = seconds("membership_timeout", false)?;
    if let Some(t) = seconds("socket_timeout", false)? {
        config.request_timeout = t;
    }
    if let Some(t) = seconds("socket_connect_timeout", false)? {
        config.connect_timeout = t;
    }
    let _ = boolean("retry_on_timeout")?;

    let ssl = boolean("ssl")?.unwrap_or(false) || tls_scheme;
    let file = |name: &str| -> Result<Option<PathBuf>> { Ok(single(name)?.map(PathBuf::from)) };
    let (ca, cert, key_file) = (
        file("ssl_ca_certs")?,
        file("ssl_certfile")?,
        file("ssl_keyfile")?,
    );
    if !ssl && (ca.is_some() || cert.is_some() || key_file.is_some()) {
        return Err(url.invalid(
            "options ssl_ca_certs, ssl_certfile and ssl_keyfile need `ssl=true` (or rediss://); \
             without it tooz ignores them",
        ));
    }
    config.sentinel_tls = boolean("sentinel_ssl")?.unwrap_or(false);
    if ssl {
        if !TLS_SUPPORTED {
            return Err(url.unsupported(
                "TLS is not supported by this build (enable the `tls` feature of locks-redis, \
                 which the facade's `redis` feature does)",
            ));
        }
        config.tls = Some(TlsConfig {
            ca,
            cert,
            key: key_file,
        });
    } else if config.sentinel_tls {
        return Err(
            url.invalid("option `sentinel_ssl` here needs `ssl=true` too (its files serve both)")
        );
    }
    config.validate().map_err(|e| match e.kind() {
        ErrorKind::InvalidConfig => url.invalid(e.message()),
        _ => e,
    })?;
    Ok(config)
}

/// The query as Python's `parse_qs` reads it (values percent-decoded, `+`
/// as a space), keeping repeats; an unknown option or one without a value
/// (which `parse_qs` would drop) is an error.
fn parse_query(url: &Url<'_>, query: &str) -> Result<BTreeMap<String, Vec<String>>> {
    let mut options: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        let decode = |s: &str| percent_decode(&s.replace('+', " "));
        let name = decode(name)
            .ok_or_else(|| url.invalid("an option name is not valid percent-encoded UTF-8"))?;
        if !OPTIONS.contains(&name.as_str()) {
            return Err(url.invalid(format_args!(
                "unknown option `{name}` (tooz's redis driver knows: {})",
                OPTIONS.join(", ")
            )));
        }
        let value = decode(value).ok_or_else(|| {
            url.invalid(format_args!(
                "option `{name}`: not valid percent-encoded UTF-8"
            ))
        })?;
        if value.is_empty() {
            return Err(url.invalid(format_args!(
                "option `{name}` has no value (tooz would ignore it): remove it or give one"
            )));
        }
        options.entry(name).or_default().push(value);
    }
    Ok(options)
}

/// `HOST[:PORT]` or `[V6]:PORT`; the port defaults to 6379.
fn parse_address(text: &str) -> Option<Address> {
    let (host, port) = split_host_port(text)?;
    Some(Address::new(host, port.unwrap_or(crate::DEFAULT_PORT)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Server;

    const KEY: &str = "backends.global";

    fn parse_str(text: &str) -> Result<RedisConfig> {
        parse(KEY, text)
    }

    #[test]
    fn the_kolla_url_pasted_as_it_is() {
        let c = parse_str(
            "redis://default:s3cr%t@10.0.0.1:26379?sentinel=kolla&sentinel_fallback=10.0.0.2:26379\
             &sentinel_fallback=10.0.0.3:26379&db=0&socket_timeout=60&retry_on_timeout=yes",
        )
        .unwrap();
        assert_eq!(
            c.server,
            Server::Sentinel {
                master_name: "kolla".into(),
                sentinels: vec![
                    Address::new("10.0.0.1", 26379),
                    Address::new("10.0.0.2", 26379),
                    Address::new("10.0.0.3", 26379),
                ],
            }
        );
        let creds = c.credentials.clone().unwrap();
        assert_eq!(creds.username.as_deref(), Some("default"));
        // As tooz (urlparse) reads it: not percent-decoded.
        assert_eq!(creds.password, "s3cr%t");
        assert_eq!(c.sentinel_credentials, None);
        assert_eq!(c.db, 0);
        assert_eq!(c.request_timeout, Duration::from_secs(60));
        assert_eq!(c.lock_timeout, Duration::from_secs(30));
        assert_eq!(c.namespace, "_tooz");
        assert_eq!(c.key_of("cinder-vol-1"), "_tooz_cinder-vol-1_lock");
        assert!(!format!("{c:?}").contains("s3cr"));
    }

    #[test]
    fn every_tooz_option_is_honoured() {
        let c = parse_str(
            "redis://:pw@[::1]:7000/?namespace=cinder&lock_timeout=12&timeout=40&db=3\
             &socket_connect_timeout=1.5&membership_timeout=9&encoding=UTF-8&retry_on_timeout=no",
        )
        .unwrap();
        assert_eq!(c.server, Server::Direct(Address::new("::1", 7000)));
        assert_eq!(
            c.credentials,
            Some(Credentials {
                username: None,
                password: "pw".into()
            })
        );
        assert_eq!(c.namespace, "cinder");
        assert_eq!(c.lock_timeout, Duration::from_secs(12));
        assert_eq!(c.db, 3);
        assert_eq!(c.connect_timeout, Duration::from_millis(1500));
        assert_eq!(
            parse_str("redis://h?timeout=40").unwrap().lock_timeout,
            Duration::from_secs(40)
        );
        assert_eq!(
            parse_str("redis://h").unwrap().server,
            Server::Direct(Address::new("h", 6379))
        );
        let c =
            parse_str("redis://h:26379?sentinel=m&sentinel_username=sen&sentinel_password=sp%40ss")
                .unwrap();
        let creds = c.sentinel_credentials.clone().unwrap();
        assert_eq!(creds.username.as_deref(), Some("sen"));
        assert_eq!(creds.password, "sp@ss");

        let tls = parse_str(
            "redis://h?ssl=true&ssl_ca_certs=/ca.pem&ssl_certfile=/c.pem&ssl_keyfile=/k.pem\
             &sentinel=m&sentinel_ssl=1",
        );
        let rediss = parse_str("rediss://h");
        if TLS_SUPPORTED {
            let c = tls.unwrap();
            assert_eq!(
                c.tls,
                Some(TlsConfig {
                    ca: Some("/ca.pem".into()),
                    cert: Some("/c.pem".into()),
                    key: Some("/k.pem".into()),
                })
            );
            assert!(c.sentinel_tls);
            assert_eq!(rediss.unwrap().tls, Some(TlsConfig::default()));
        } else {
            assert_eq!(tls.unwrap_err().kind(), ErrorKind::Unsupported);
            assert_eq!(rediss.unwrap_err().kind(), ErrorKind::Unsupported);
        }
    }

    #[test]
    fn refused_options_say_what_to_do() {
        for (text, needle) in [
            (
                "redis://h?socket_keepalive=1",
                "`socket_keepalive` is not supported",
            ),
            (
                "redis://h?health_check_interval=5",
                "`health_check_interval` is not supported",
            ),
            ("redis://h?encoding=latin1", "UTF-8"),
            (
                "redis://h?sentinel_fallback=h2:1",
                "needs `sentinel=MASTER_NAME`",
            ),
            (
                "redis://h?sentinel_password=x",
                "needs `sentinel=MASTER_NAME`",
            ),
            ("redis://h?sentinel=m&sentinel_fallback=h2", "not HOST:PORT"),
            (
                "redis://h?sentinel=m&sentinel_username=u",
                "needs `sentinel_password`",
            ),
            ("redis://h?ssl_ca_certs=/ca.pem", "need `ssl=true`"),
            ("redis://h?db=x", "option `db`"),
            ("redis://h?db=-1", "option `db`"),
            ("redis://h?lock_timeout=2.5", "whole seconds"),
            ("redis://h?timeout=0", "positive"),
            ("redis://h?socket_timeout=soon", "socket_timeout"),
            ("redis://h?retry_on_timeout=maybe", "not a boolean"),
            ("redis://h?db=1&db=2", "more than once"),
            ("redis://h?namespace=", "has no value"),
            ("redis://h?bogus=1", "unknown option `bogus`"),
            ("redis://h/0", "give the database as `db=N`"),
            ("redis://", "name the server"),
            ("redis://h:99999", "not HOST[:PORT]"),
            ("redis://user@h", "without a password"),
            ("redis://h#x", "fragment"),
        ] {
            let err = parse_str(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{text}: {err}");
            assert!(
                err.message().contains(needle) && err.message().contains(KEY),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn passwords_never_show() {
        for text in [
            "redis://default:hunter2@h?bogus=1",
            "redis://default:hunter2@h?sentinel=m&sentinel_password=hunter2&socket_keepalive=1",
            "redis://:hunter2@h/x",
            "redis://u:hunter2@h?sentinel_password=hunter2",
        ] {
            match parse_str(text) {
                Err(e) => assert!(!e.message().contains("hunter2"), "{e}"),
                Ok(c) => {
                    assert!(!format!("{c:?}").contains("hunter2"));
                    assert!(!c.describe().contains("hunter2"));
                }
            }
        }
        assert_eq!(
            redact_text("redis://u:pw@h?sentinel=m&sentinel_password=sp"),
            "redis://u:***@h?sentinel=m&sentinel_password=***"
        );
    }

    #[tokio::test]
    async fn unreachable_sentinels_are_named() {
        let config = parse_str(
            "redis://:pw@127.0.0.1:1?sentinel=kolla&sentinel_fallback=127.0.0.1:2&socket_timeout=0.5",
        )
        .unwrap();
        let err = crate::RedisBackend::connect(config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
        assert!(
            err.message().contains("127.0.0.1:1") && err.message().contains("127.0.0.1:2"),
            "{err}"
        );
        assert!(!err.message().contains("pw@"), "{err}");
    }
}
