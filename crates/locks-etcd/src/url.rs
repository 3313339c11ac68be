//! `etcd://[USER:PASSWORD@]HOST[:PORT][,HOST[:PORT]…][/][?OPTIONS]`: locks on
//! etcd v3 (Global scope).
//!
//! - `HOST[:PORT]`: a server; the port defaults to 2379. More servers follow
//!   after commas, or go in the `endpoints` option (see `locks_core::fold_host_list`).
//!   List every member of a cluster: a request that one member cannot serve
//!   goes to the next.
//! - `USER:PASSWORD@`: etcd credentials (percent-encode `@`, `:` and `/`).
//! - Options:
//!   - `ttl`: the lease TTL, whole seconds, at least 2 (`10`, `10s`); default 10.
//!   - `prefix`: put in front of every lock name; default empty, which gives
//!     the keys `etcdctl lock NAME` uses.
//!   - `layout`: `mutex` (etcd's `concurrency.Mutex`, default) or `tooz`
//!     (the keys of OpenStack tooz's etcd3 driver, `/tooz/locks<name>`).
//!   - `connect_timeout`: bounds connecting and every request, failover to
//!     the other servers included, but never more than the TTL (`5`,
//!     `1500ms`); default 5 s.
//!   - `endpoints`: more servers, comma-separated.
//!   - `tls`: `true` for TLS (implied by `ca`, `cert` and `key`): the server
//!     is verified against the CA in `ca`, else against the system's trust
//!     roots (as Python's `requests` does for tooz).
//!   - `ca`, `cert`, `key`: PEM files for TLS: the CA certificate(s) to trust,
//!     and a client certificate with its key (the two go together). A build
//!     without this crate's `tls` feature answers these options with an
//!     [`ErrorKind::Unsupported`](locks_core::ErrorKind::Unsupported) error.

use std::path::PathBuf;

use locks_core::{BackendUrl, ErrorKind, Result, split_host_port};

use crate::{EtcdConfig, Layout, TLS_SUPPORTED, TlsConfig};

/// Query options of `etcd://` URLs.
const OPTIONS: &[&str] = &[
    "ttl",
    "prefix",
    "layout",
    "connect_timeout",
    "endpoints",
    "tls",
    "ca",
    "cert",
    "key",
];

const DEFAULT_PORT: u16 = 2379;

impl EtcdConfig {
    /// Parses an `etcd://` URL held by configuration key `key` (named in
    /// every error).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the key, the URL (without its
    /// password) and the option at fault; [`ErrorKind::Unsupported`] for TLS
    /// options in a build without the `tls` feature.
    pub fn from_url(key: &str, text: &str) -> Result<Self> {
        parse(&BackendUrl::parse_host_list(key, text, "endpoints")?)
    }
}

fn parse(url: &BackendUrl<'_>) -> Result<EtcdConfig> {
    let query = url.query()?;
    url.reject_unknown_keys(&query, OPTIONS)?;

    let mut endpoints = Vec::new();
    if let Some(host) = url.url().host_str().filter(|h| !h.is_empty()) {
        // `h1,h2:2380` parses as host `h1,h2` with the port of the last one.
        let names: Vec<&str> = host.split(',').collect();
        let last = names.len() - 1;
        for (i, name) in names.into_iter().enumerate() {
            let port = if i == last {
                url.url().port().unwrap_or(DEFAULT_PORT)
            } else {
                DEFAULT_PORT
            };
            endpoints.push(with_port(name, port));
        }
    }
    if let Some(more) = query.get("endpoints") {
        for endpoint in more.split(',').map(str::trim) {
            endpoints.push(
                if endpoint.is_empty()
                    || split_host_port(endpoint).is_some_and(|(_, port)| port.is_some())
                {
                    endpoint.to_owned()
                } else {
                    with_port(endpoint, DEFAULT_PORT)
                },
            );
        }
    }
    if endpoints.is_empty() {
        return Err(url.invalid("name at least one server: etcd://HOST:2379"));
    }
    if let Some(empty) = endpoints.iter().position(String::is_empty) {
        return Err(url.invalid(format_args!(
            "server {} of the endpoint list is empty (a stray comma?)",
            empty + 1
        )));
    }
    if !matches!(url.url().path(), "" | "/") {
        return Err(
            url.invalid("an etcd:// URL has no path; put a key prefix in the `prefix` option")
        );
    }
    let mut config = EtcdConfig::new(endpoints);

    if let Some(value) = query.get("ttl") {
        config.ttl = url.duration("ttl", value)?;
    }
    if let Some(value) = query.get("connect_timeout") {
        config.connect_timeout = url.duration("connect_timeout", value)?;
    }
    if let Some(prefix) = query.get("prefix") {
        config.prefix = prefix.clone();
    }
    if let Some(layout) = query.get("layout") {
        config.layout = layout
            .parse::<Layout>()
            .map_err(|e| url.invalid(format_args!("option `layout`: {}", e.message())))?;
    }

    if let Some((user, password)) = url.credentials()? {
        config.user = Some(user);
        config.password = Some(password);
    }

    let tls_file = |key: &str| query.get(key).map(PathBuf::from);
    let (ca, cert, key) = (tls_file("ca"), tls_file("cert"), tls_file("key"));
    let tls_asked = match query.get("tls").map(String::as_str) {
        None => false,
        Some("true" | "1" | "yes") => true,
        Some("false" | "0" | "no") => false,
        Some(other) => {
            return Err(url.invalid(format_args!(
                "option `tls`: `{other}` is not a boolean (write `true` or `false`)"
            )));
        }
    };
    if tls_asked || ca.is_some() || cert.is_some() || key.is_some() {
        if !TLS_SUPPORTED {
            return Err(url.error(
                ErrorKind::Unsupported,
                "TLS is not supported by this build (options `tls`, `ca`, `cert`, `key` need the `tls` feature of locks-etcd)",
            ));
        }
        config.tls = Some(TlsConfig { ca, cert, key });
    }

    config.validate().map_err(|e| match e.kind() {
        ErrorKind::InvalidConfig => url.invalid(e.message()),
        _ => e,
    })?;
    Ok(config)
}

fn with_port(host: &str, port: u16) -> String {
    format!("{host}:{port}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse_str(text: &str) -> Result<EtcdConfig> {
        EtcdConfig::from_url("backends.global", text)
    }

    #[test]
    fn defaults() {
        let c = parse_str("etcd://127.0.0.1:2379").unwrap();
        assert_eq!(c.endpoints, ["127.0.0.1:2379"]);
        assert_eq!(c.ttl, Duration::from_secs(10));
        assert_eq!(c.prefix, "");
        assert_eq!(c.layout, Layout::Mutex);
        assert_eq!(c.user, None);
        assert_eq!(c.password, None);
        assert_eq!(c.tls, None);
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(parse_str("etcd://etcd/").unwrap().endpoints, ["etcd:2379"]);
    }

    #[test]
    fn endpoints_options_and_credentials() {
        let c = parse_str(
            "etcd://cinder:p%40ss%3Aw@e1:2381,e2,[::1]:2383/?ttl=30&prefix=%2Flocks%2F&layout=mutex&connect_timeout=1500ms",
        )
        .unwrap();
        assert_eq!(c.endpoints, ["e1:2381", "e2:2379", "[::1]:2383"]);
        assert_eq!(c.ttl, Duration::from_secs(30));
        assert_eq!(c.prefix, "/locks/");
        assert_eq!(c.connect_timeout, Duration::from_millis(1500));
        assert_eq!(c.user.as_deref(), Some("cinder"));
        assert_eq!(c.password.as_deref(), Some("p@ss:w"));

        let c = parse_str("etcd://h1,h2:2380?ttl=2s&layout=tooz").unwrap();
        assert_eq!(c.endpoints, ["h1:2379", "h2:2380"]);
        assert_eq!(c.ttl, Duration::from_secs(2));
        assert_eq!(c.layout, Layout::Tooz);

        let c = parse_str("etcd://a:1?endpoints=b:2,c").unwrap();
        assert_eq!(c.endpoints, ["a:1", "b:2", "c:2379"]);
        let c = parse_str("etcd://a:1?layout=tooz&prefix=/tooz/locks").unwrap();
        assert_eq!(c.layout, Layout::Tooz);
    }

    #[test]
    fn malformed_urls_are_config_errors_naming_the_key() {
        for (text, needle) in [
            ("etcd:///x", "at least one server"),
            ("etcd://h?tll=10", "unknown option `tll`"),
            ("etcd://h?ttl=1", "below the minimum"),
            ("etcd://h?ttl=2500ms", "whole seconds"),
            ("etcd://h?ttl=0", "positive duration"),
            ("etcd://h?ttl=ten", "positive duration"),
            ("etcd://h?connect_timeout=-1", "positive duration"),
            ("etcd://h?layout=redis", "layout"),
            ("etcd://h?layout=tooz&prefix=/x/", "tooz"),
            ("etcd://h?endpoints=a,,b", "empty"),
            ("etcd://h/locks", "no path"),
            ("etcd://user@h", "need a password"),
            ("etcd://:pw@h", "need a user name"),
            ("etcd://u:%ff@h", "password"),
            ("etcd://h?ttl=3&ttl=4", "twice"),
        ] {
            let err = parse_str(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{text}: {err}");
            assert!(
                err.message().contains(needle) && err.message().contains("backends.global"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn tls_options() {
        let result = parse_str("etcd://h:2379?ca=/etc/etcd/ca.pem&cert=/c.pem&key=/k.pem");
        if TLS_SUPPORTED {
            let tls = result.unwrap().tls.expect("TLS settings");
            assert_eq!(tls.ca, Some(PathBuf::from("/etc/etcd/ca.pem")));
            assert_eq!(tls.cert, Some(PathBuf::from("/c.pem")));
            assert_eq!(tls.key, Some(PathBuf::from("/k.pem")));
            // No CA: the system's roots (TripleO's URL names none).
            let tls = parse_str("etcd://h?cert=/c.pem&key=/k.pem")
                .unwrap()
                .tls
                .unwrap();
            assert_eq!(tls.ca, None);
            let tls = parse_str("etcd://h?tls=true").unwrap().tls.unwrap();
            assert_eq!(tls, crate::TlsConfig::default());
            assert_eq!(parse_str("etcd://h?tls=false").unwrap().tls, None);
            let err = parse_str("etcd://h?tls=maybe").unwrap_err();
            assert!(err.message().contains("option `tls`"), "{err}");
            let err = parse_str("etcd://h?ca=/ca.pem&cert=/c.pem").unwrap_err();
            assert!(err.message().contains("both"), "{err}");
        } else {
            let err = result.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::Unsupported);
            assert!(
                err.message().contains("TLS is not supported by this build")
                    && err.message().contains("backends.global"),
                "{err}"
            );
        }
    }

    #[test]
    fn passwords_never_show_in_errors() {
        let err = parse_str("etcd://u:secret@h?bogus=1").unwrap_err();
        assert!(!err.message().contains("secret"), "{err}");
        if let Err(e) = parse_str("etcd://u:secret@h?ca=/x") {
            assert!(!e.message().contains("secret"), "{e}");
        }
        let c = parse_str("etcd://u:secret@h").unwrap();
        assert!(!format!("{c:?}").contains("secret"));
    }

    #[tokio::test]
    async fn unreachable_server_is_unavailable_naming_it() {
        let config = parse_str("etcd://127.0.0.1:1?connect_timeout=300ms").unwrap();
        let err = crate::EtcdBackend::connect(config).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
        assert!(err.message().contains("127.0.0.1:1"), "{err}");
    }
}
