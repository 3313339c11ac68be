//! `zookeeper://[USER:PASSWORD@]HOST[:PORT][/NAMESPACE][?OPTIONS]`: locks on
//! ZooKeeper (Global scope), in the node layout tooz uses.
//!
//! - `HOST[:PORT]`: a server; the port defaults to 2181. More servers go in
//!   the `hosts` option or after commas. `Url::parse` accepts commas only
//!   when no port precedes them (`h1,h2:2182`); `h1:2181,h2:2181` needs
//!   `locks_core::fold_host_list` applied before parsing.
//! - `USER:PASSWORD@`: digest credentials (percent-encode `@`, `:` and `/`).
//! - `/NAMESPACE`: the top node, `tooz` by default, so locks live in
//!   `/tooz/locks/<name>` as with tooz. tooz's `?namespace=` works too.
//! - Options: `session_timeout` (tooz spells it `timeout`) and
//!   `connect_timeout`, in seconds (`10`, `2.5`) or with a unit (`1500ms`,
//!   `10s`); `hosts` (more servers, comma-separated); `namespace`.

use locks_core::{BackendUrl, Result, percent_decode};

use crate::ZkConfig;

/// Query options of `zookeeper://` URLs.
const OPTIONS: &[&str] = &[
    "session_timeout",
    "timeout",
    "connect_timeout",
    "hosts",
    "namespace",
];

impl ZkConfig {
    /// Parses a `zookeeper://` URL held by configuration key `key` (named in
    /// every error).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](locks_core::ErrorKind::InvalidConfig)
    /// naming the key, the URL (without its password) and the option at fault.
    pub fn from_url(key: &str, text: &str) -> Result<Self> {
        parse(&BackendUrl::parse_host_list(key, text, "hosts")?)
    }
}

fn parse(url: &BackendUrl<'_>) -> Result<ZkConfig> {
    let query = url.query()?;
    url.reject_unknown_keys(&query, OPTIONS)?;

    let mut hosts = Vec::new();
    if let Some(host) = url.url().host_str().filter(|h| !h.is_empty()) {
        // `h1,h2:2182` parses as host `h1,h2`; the port belongs to the last one.
        let mut names: Vec<String> = host.split(',').map(str::to_owned).collect();
        if let (Some(port), Some(last)) = (url.url().port(), names.last_mut()) {
            last.push_str(&format!(":{port}"));
        }
        hosts.extend(names);
    }
    if let Some(more) = query.get("hosts") {
        hosts.extend(more.split(',').map(|h| h.trim().to_owned()));
    }
    if hosts.is_empty() {
        return Err(url.invalid("name at least one server: zookeeper://HOST:2181"));
    }
    if let Some(empty) = hosts.iter().position(String::is_empty) {
        return Err(url.invalid(format_args!(
            "server {} of the host list is empty (a stray comma?)",
            empty + 1
        )));
    }
    let mut config = ZkConfig::new(hosts);

    let path = url.url().path();
    let from_path = match path.strip_prefix('/').unwrap_or(path) {
        "" => None,
        encoded => Some(percent_decode(encoded).ok_or_else(|| {
            url.invalid("the namespace (URL path) is not valid percent-encoded UTF-8")
        })?),
    };
    match (from_path, query.get("namespace")) {
        (Some(a), Some(b)) if a != *b => {
            return Err(url.invalid(format_args!(
                "namespace `{a}` in the path and `{b}` in the options: give one"
            )));
        }
        (Some(namespace), _) => config.namespace = namespace,
        (None, Some(namespace)) => config.namespace = namespace.clone(),
        (None, None) => {}
    }

    match (query.get("session_timeout"), query.get("timeout")) {
        (Some(_), Some(_)) => {
            return Err(url.invalid(
                "`session_timeout` and `timeout` (its tooz spelling) are both given: keep one",
            ));
        }
        (Some(value), None) => config.session_timeout = url.duration("session_timeout", value)?,
        (None, Some(value)) => config.session_timeout = url.duration("timeout", value)?,
        (None, None) => {}
    }
    if let Some(value) = query.get("connect_timeout") {
        config.connect_timeout = url.duration("connect_timeout", value)?;
    }

    config.credentials = url.credentials()?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use locks_core::ErrorKind;
    use std::time::Duration;

    fn parse_str(text: &str) -> Result<ZkConfig> {
        ZkConfig::from_url("backends.global", text)
    }

    #[test]
    fn defaults_follow_tooz() {
        let c = parse_str("zookeeper://127.0.0.1:2181").unwrap();
        assert_eq!(c.hosts, ["127.0.0.1:2181"]);
        assert_eq!(c.namespace, "tooz");
        assert_eq!(c.session_timeout, Duration::from_secs(10));
        assert_eq!(c.connect_timeout, Duration::from_secs(5));
        assert_eq!(c.credentials, None);
        assert_eq!(parse_str("zookeeper://zk/").unwrap().hosts, ["zk"]);
    }

    #[test]
    fn hosts_namespace_options_and_credentials() {
        let c = parse_str(
            "zookeeper://cinder:p%40ss%3Aw@zk1:2181/openstack?session_timeout=2.5&connect_timeout=1500ms&hosts=zk2:2182,[::1]:2183",
        )
        .unwrap();
        assert_eq!(c.hosts, ["zk1:2181", "zk2:2182", "[::1]:2183"]);
        assert_eq!(c.namespace, "openstack");
        assert_eq!(c.session_timeout, Duration::from_millis(2500));
        assert_eq!(c.connect_timeout, Duration::from_millis(1500));
        assert_eq!(
            c.credentials,
            Some(("cinder".to_owned(), "p@ss:w".to_owned()))
        );

        let c = parse_str("zookeeper://h1,h2:2182/a/b?timeout=3s").unwrap();
        assert_eq!(c.hosts, ["h1", "h2:2182"]);
        assert_eq!(c.namespace, "a/b");
        assert_eq!(c.session_timeout, Duration::from_secs(3));

        let c = parse_str("zookeeper://[::1]:2181?namespace=x").unwrap();
        assert_eq!(c.hosts, ["[::1]:2181"]);
        assert_eq!(c.namespace, "x");
    }

    #[test]
    fn malformed_urls_are_config_errors_naming_the_key() {
        for (text, needle) in [
            ("zookeeper:///tooz", "at least one server"),
            (
                "zookeeper://h?sesion_timeout=1",
                "unknown option `sesion_timeout`",
            ),
            ("zookeeper://h?session_timeout=0", "positive duration"),
            ("zookeeper://h?session_timeout=-1", "positive duration"),
            ("zookeeper://h?session_timeout=ten", "positive duration"),
            ("zookeeper://h?connect_timeout=", "positive duration"),
            ("zookeeper://h?session_timeout=1&timeout=2", "keep one"),
            ("zookeeper://h/a?namespace=b", "give one"),
            ("zookeeper://h?hosts=a,,b", "empty"),
            ("zookeeper://user@h", "need a password"),
            ("zookeeper://:pw@h", "need a user name"),
            ("zookeeper://h/%ff", "namespace"),
            ("zookeeper://h?timeout=1&timeout=2", "twice"),
        ] {
            let err = parse_str(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{text}");
            assert!(
                err.message().contains(needle) && err.message().contains("backends.global"),
                "{text}: {err}"
            );
        }
    }

    #[test]
    fn passwords_never_show_in_errors() {
        let err = parse_str("zookeeper://u:secret@h?bogus=1").unwrap_err();
        assert!(!err.message().contains("secret"), "{err}");
    }

    #[tokio::test]
    async fn backend_checks_reach_the_caller_through_open() {
        // A namespace the backend refuses, and an unreachable server.
        let open = |text: &str| crate::ZkBackend::connect(parse_str(text).unwrap());
        let err = open("zookeeper://127.0.0.1:1/zookeeper").await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{}", err.report());
        let err = open("zookeeper://127.0.0.1:1?connect_timeout=200ms")
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Unavailable, "{}", err.report());
        assert!(err.message().contains("127.0.0.1:1"), "{err}");
    }
}
