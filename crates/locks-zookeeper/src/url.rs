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
//! - TLS, in tooz's (kazoo's) spelling, so OpenStack-Ansible's URL pastes:
//!   `use_ssl=True` for the secure client port; `ca` (the CA file, else the
//!   system's roots), `certfile` and `keyfile` (a client certificate),
//!   `keyfile_password` (for an encrypted PKCS#8 key). `verify_certs=False`
//!   is refused: the server's certificate chain is always verified. Our own
//!   `check_hostname=False` (kazoo's client option, which tooz leaves at
//!   false) accepts a certificate that does not name the host; by default
//!   the host name is checked. Booleans are oslo's:
//!   `true`/`yes`/`on`/`1`/`t`/`y` or `false`/`no`/`off`/`0`/`f`/`n`, any case.
//! - tooz's other options: `randomize_hosts` (true: servers are tried from a
//!   random one on), `handler` (kazoo's Python I/O handler: accepted, it
//!   means nothing here); `connection_retry` and `command_retry` (kazoo's
//!   retry policies) are refused: retries are bounded by `connect_timeout`
//!   and the session timeout.

use std::path::PathBuf;

use locks_core::{BackendUrl, ErrorKind, Result, percent_decode};

use crate::{TLS_SUPPORTED, TlsConfig, ZkConfig};

/// Query options of `zookeeper://` URLs.
const OPTIONS: &[&str] = &[
    "session_timeout",
    "timeout",
    "connect_timeout",
    "hosts",
    "namespace",
    "use_ssl",
    "verify_certs",
    "ca",
    "certfile",
    "keyfile",
    "keyfile_password",
    "check_hostname",
    "randomize_hosts",
    "handler",
    "connection_retry",
    "command_retry",
];

/// oslo's `bool_from_string`, strict: anything else is an error.
fn boolean(url: &BackendUrl<'_>, key: &str, value: &str) -> Result<bool> {
    match value.to_ascii_lowercase().as_str() {
        "1" | "t" | "true" | "on" | "y" | "yes" => Ok(true),
        "0" | "f" | "false" | "off" | "n" | "no" => Ok(false),
        _ => Err(url.invalid(format_args!(
            "option `{key}`: `{value}` is not a boolean (write `True` or `False`)"
        ))),
    }
}

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

    for refused in ["connection_retry", "command_retry"] {
        if query.contains_key(refused) {
            return Err(url.invalid(format_args!(
                "option `{refused}` (kazoo's retry policy) is not supported: retries here are \
                 bounded by `connect_timeout` and the session timeout; remove it"
            )));
        }
    }
    if let Some(value) = query.get("randomize_hosts")
        && boolean(url, "randomize_hosts", value)?
        && config.hosts.len() > 1
    {
        let start = (uuid::Uuid::new_v4().as_u128() % config.hosts.len() as u128) as usize;
        config.hosts.rotate_left(start);
    }
    let use_ssl = match query.get("use_ssl") {
        Some(value) => boolean(url, "use_ssl", value)?,
        None => false,
    };
    if let Some(value) = query.get("verify_certs")
        && !boolean(url, "verify_certs", value)?
    {
        return Err(url.invalid(
            "`verify_certs=False` is refused: the server's certificate is always verified; give \
             `ca` (the CA that signed it) instead",
        ));
    }
    let file = |key: &str| query.get(key).map(PathBuf::from);
    let tls = TlsConfig {
        ca: file("ca"),
        cert: file("certfile"),
        key: file("keyfile"),
        key_password: query.get("keyfile_password").cloned(),
        check_hostname: match query.get("check_hostname") {
            Some(value) => boolean(url, "check_hostname", value)?,
            None => true,
        },
    };
    if use_ssl {
        if !TLS_SUPPORTED {
            return Err(url.error(
                ErrorKind::Unsupported,
                "TLS is not supported by this build (`use_ssl` needs the `tls` feature of locks-zookeeper)",
            ));
        }
        config.tls = Some(tls);
    } else if tls != TlsConfig::default() {
        return Err(url.invalid(
            "TLS options (`ca`, `certfile`, `keyfile`, `keyfile_password`, `check_hostname`) without `use_ssl=True`: \
             add `use_ssl=True` (the secure client port), or remove them",
        ));
    }
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

    #[test]
    fn tooz_tls_options_as_openstack_ansible_writes_them() {
        let c = parse_str(
            "zookeeper://h1:2281,h2:2281,h3:2281?namespace=cinder&use_ssl=True&verify_certs=True\
             &ca=/etc/ssl/ca.pem&certfile=/c.pem&keyfile=/k.pem&keyfile_password=s3cret",
        );
        if !crate::TLS_SUPPORTED {
            assert_eq!(c.unwrap_err().kind(), ErrorKind::Unsupported);
            return;
        }
        let c = c.unwrap();
        assert_eq!(c.hosts, ["h1:2281", "h2:2281", "h3:2281"]);
        assert_eq!(c.namespace, "cinder");
        let tls = c.tls.clone().expect("TLS");
        assert_eq!(tls.ca, Some(PathBuf::from("/etc/ssl/ca.pem")));
        assert_eq!(tls.cert, Some(PathBuf::from("/c.pem")));
        assert_eq!(tls.key, Some(PathBuf::from("/k.pem")));
        assert_eq!(tls.key_password.as_deref(), Some("s3cret"));
        assert!(tls.check_hostname);
        let lenient = parse_str("zookeeper://h?use_ssl=True&check_hostname=False").unwrap();
        assert!(!lenient.tls.unwrap().check_hostname);
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(parse_str("zookeeper://h?use_ssl=no").unwrap().tls, None);
        assert!(parse_str("zookeeper://h?use_ssl=on").unwrap().tls.is_some());
        for (text, needle) in [
            (
                "zookeeper://h?use_ssl=True&verify_certs=False",
                "always verified",
            ),
            ("zookeeper://h?ca=/ca.pem", "without `use_ssl=True`"),
            ("zookeeper://h?check_hostname=no", "without `use_ssl=True`"),
            ("zookeeper://h?use_ssl=maybe", "not a boolean"),
            ("zookeeper://h?connection_retry=x", "retry policy"),
            (
                "zookeeper://h?use_ssl=true&keyfile_password=s3cret",
                "keyfile_password",
            ),
        ] {
            let err = parse_str(text)
                .and_then(|c| c.validate().map(|()| c))
                .expect_err(text);
            assert!(err.message().contains(needle), "{text}: {err}");
            assert!(!err.message().contains("s3cret"), "{text}: {err}");
        }
        let c = parse_str("zookeeper://a:1,b:2,c:3?randomize_hosts=true&handler=eventlet").unwrap();
        let mut sorted = c.hosts.clone();
        sorted.sort();
        assert_eq!(sorted, ["a:1", "b:2", "c:3"]);
    }
}
