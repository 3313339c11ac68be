//! `compat = "openstack"`: tooz's spellings of backend URLs, as an
//! OpenStack service's `[coordination] backend_url` holds them, turned into
//! the URLs the backend crates parse.

use locks_core::{Error, ErrorKind, Result, redact_text};

/// Turns tooz's spellings of backend URLs (what `[coordination] backend_url`
/// holds in an OpenStack service) into ours, so the value can be pasted:
/// `kazoo://` is `zookeeper://`, and `etcd3+http(s)://` (tooz's etcd3gw
/// driver) is `etcd://…?layout=tooz` with every option of that driver
/// (tooz 9.1 `tooz/drivers/etcd3gw.py`) honoured as tooz does, or refused
/// by name:
///
/// - `lock_timeout`, else `timeout`, else 30: the lock lease TTL in whole
///   seconds (`ttl`);
/// - `timeout`: also etcd3gw's timeout of each request (`connect_timeout`);
/// - `ca_cert`, `cert_cert`, `cert_key` with `etcd3+https`: our `ca`, `cert`
///   and `key`; without `ca_cert` the system's roots (`tls=true`), as
///   Python's `requests` verifies for tooz. With `etcd3+http` tooz's
///   `requests` uses none of them (kolla writes `ca_cert` whenever the
///   deployment has a CA): accepted, and unused as there;
/// - `api_version`: the grpc-gateway path etcd3gw posts to (`v3`, `v3beta`,
///   `v3alpha`: the same v3 keys we reach over gRPC); other values refused;
/// - `membership_timeout`: the lease of tooz's group membership, which this
///   library does not implement (locks only): checked to be whole seconds as
///   tooz does, no effect.
///
/// As with tooz's `parse_qs`, values are percent-decoded and an empty value
/// is no value; the host defaults to `localhost:2379`. Unlike tooz, a
/// repeated option, `user:password@` (which tooz's driver drops) and a path
/// (which it ignores) are refused. Other URLs are returned unchanged.
pub(super) fn translate_tooz(key: &str, text: &str) -> Result<String> {
    if let Some(rest) = text.strip_prefix("kazoo://") {
        return Ok(format!("zookeeper://{rest}"));
    }
    if text.starts_with("etcd3://") {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{key} = \"{}\": `etcd3://` is tooz's python-etcd3 driver, removed in tooz 5.0.0 (its \
                 locks were python-etcd3's `/locks/NAME`, which no current tooz uses); write \
                 etcd3+http://HOST:2379 (or etcd3+https://) as current tooz does",
                redact_text(text)
            ),
        ));
    }
    let (rest, https) = match (
        text.strip_prefix("etcd3+http://"),
        text.strip_prefix("etcd3+https://"),
    ) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return Ok(text.to_owned()),
    };
    let shown = redact_text(text);
    let invalid = |problem: String| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("{key} = \"{shown}\": {problem}"),
        )
    };
    let rest = rest.split_once('#').map_or(rest, |(before, _)| before);
    let (before_query, query) = rest.split_once('?').unwrap_or((rest, ""));
    let (authority, path) = before_query.split_once('/').unwrap_or((before_query, ""));
    if authority.contains('@') {
        return Err(invalid(
            "tooz's etcd3gw driver ignores `user:password@` (it never authenticates); remove it, or \
             for etcd authentication write our own URL: etcd://USER:PASSWORD@HOST:2379?layout=tooz"
                .to_owned(),
        ));
    }
    if !path.is_empty() {
        return Err(invalid(format!(
            "tooz's etcd3gw driver ignores the path `/{path}`; remove it (locks live under /tooz/locks)"
        )));
    }
    // tooz: `parsed_url.hostname or 'localhost'`, `parsed_url.port or 2379`.
    let authority = if authority.is_empty() || authority.starts_with(':') {
        format!("localhost{authority}")
    } else {
        authority.to_owned()
    };

    let mut options: Vec<(String, String)> = Vec::new();
    for (k, v) in url::form_urlencoded::parse(query.as_bytes()) {
        if options.iter().any(|(seen, _)| *seen == k) {
            return Err(invalid(format!(
                "tooz option `{k}` is given twice; keep one"
            )));
        }
        // parse_qs drops blank values: `ca_cert=` is no CA.
        if !v.is_empty() {
            options.push((k.into_owned(), v.into_owned()));
        }
    }
    let get = |name: &str| {
        options
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let seconds = |name: &str| -> Result<Option<u64>> {
        // tooz: int(value); Python's int() allows surrounding blanks.
        get(name)
            .map(|v| {
                v.trim().parse::<u64>().map_err(|_| {
                    invalid(format!(
                        "tooz option `{name}` = `{v}` must be whole seconds, as tooz reads it with int()"
                    ))
                })
            })
            .transpose()
    };
    for (k, _) in &options {
        if !matches!(
            k.as_str(),
            "timeout"
                | "lock_timeout"
                | "membership_timeout"
                | "api_version"
                | "ca_cert"
                | "cert_cert"
                | "cert_key"
        ) {
            return Err(invalid(format!(
                "tooz option `{k}` is not one of tooz's etcd3gw driver (api_version, ca_cert, \
                 cert_cert, cert_key, timeout, lock_timeout, membership_timeout); for our own options \
                 write an etcd:// URL (docs/openstack.md)"
            )));
        }
    }
    if let Some(version) = get("api_version")
        && !matches!(version, "v3" | "v3beta" | "v3alpha")
    {
        return Err(invalid(format!(
            "tooz option `api_version` = `{version}`: only etcd's v3 API (`v3`, `v3beta`, `v3alpha`) \
             holds tooz's locks; write api_version=v3"
        )));
    }
    let timeout = seconds("timeout")?;
    let lock_timeout = seconds("lock_timeout")?;
    seconds("membership_timeout")?;

    let mut ours = url::form_urlencoded::Serializer::new(String::new());
    ours.append_pair("layout", "tooz");
    ours.append_pair(
        "ttl",
        &format!("{}s", lock_timeout.or(timeout).unwrap_or(30)),
    );
    if let Some(timeout) = timeout {
        ours.append_pair("connect_timeout", &format!("{timeout}s"));
    }
    if https {
        for (tooz, our) in [
            ("ca_cert", "ca"),
            ("cert_cert", "cert"),
            ("cert_key", "key"),
        ] {
            if let Some(path) = get(tooz) {
                ours.append_pair(our, path);
            }
        }
        // Without `ca_cert`, tooz's `requests` verifies against its default
        // roots (TripleO writes such URLs): so does `tls=true`.
        ours.append_pair("tls", "true");
    } else {
        for unused in ["ca_cert", "cert_cert", "cert_key"] {
            if get(unused).is_some() {
                tracing::debug!(
                    key,
                    option = unused,
                    "tooz option has no effect on etcd3+http (as in tooz): the connection is plain"
                );
            }
        }
    }
    Ok(format!("etcd://{authority}?{}", ours.finish()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> Result<String> {
        translate_tooz("backends.global", s)
    }

    /// Our URL for tooz's `s`, with `%2F` shown as `/` for reading.
    fn ours(s: &str) -> String {
        t(s).unwrap_or_else(|e| panic!("{s}: {e}"))
            .replace("%2F", "/")
    }

    #[test]
    fn tooz_urls_translate() {
        assert_eq!(
            ours("etcd3+http://10.0.0.5:2379"),
            "etcd://10.0.0.5:2379?layout=tooz&ttl=30s"
        );
        // kolla-ansible.
        assert_eq!(
            ours("etcd3+http://h:2379?api_version=v3"),
            "etcd://h:2379?layout=tooz&ttl=30s"
        );
        assert_eq!(
            ours("etcd3+http://h:2379/?timeout=20&lock_timeout=15&api_version=v3"),
            "etcd://h:2379?layout=tooz&ttl=15s&connect_timeout=20s"
        );
        assert_eq!(
            ours("etcd3+http://h:2379?timeout=20&membership_timeout=7"),
            "etcd://h:2379?layout=tooz&ttl=20s&connect_timeout=20s"
        );
        // tooz's defaults: localhost:2379.
        assert_eq!(
            ours("etcd3+http://"),
            "etcd://localhost?layout=tooz&ttl=30s"
        );
        assert_eq!(
            ours("etcd3+http://:2380"),
            "etcd://localhost:2380?layout=tooz&ttl=30s"
        );
        assert_eq!(t("kazoo://h:2181").unwrap(), "zookeeper://h:2181");
        assert_eq!(
            t("file:///var/lib/cinder").unwrap(),
            "file:///var/lib/cinder"
        );
    }

    #[test]
    fn tls_options_as_tooz_uses_them() {
        // TripleO: a client certificate, no CA (the system's roots).
        assert_eq!(
            ours("etcd3+https://h:2379?cert_key=/k.pem&cert_cert=/c.pem"),
            "etcd://h:2379?layout=tooz&ttl=30s&cert=/c.pem&key=/k.pem&tls=true"
        );
        // kolla with TLS.
        assert_eq!(
            ours("etcd3+https://h:2379?api_version=v3&ca_cert=/etc/ca%20x.pem"),
            "etcd://h:2379?layout=tooz&ttl=30s&ca=/etc/ca+x.pem&tls=true"
        );
        assert_eq!(
            ours("etcd3+https://h:2379?ca_cert=/c.pem&cert_cert=/a.pem&cert_key=/k.pem"),
            "etcd://h:2379?layout=tooz&ttl=30s&ca=/c.pem&cert=/a.pem&key=/k.pem&tls=true"
        );
        // An empty value is no value (parse_qs): the system's roots.
        assert_eq!(
            ours("etcd3+https://h:2379?api_version=v3&ca_cert="),
            "etcd://h:2379?layout=tooz&ttl=30s&tls=true"
        );
        // kolla writes ca_cert whenever the deployment has a CA, also for a
        // plain-http etcd; tooz's requests then uses none of it.
        assert_eq!(
            ours("etcd3+http://h:2379?api_version=v3&ca_cert=/etc/kolla/certificates/ca/root.crt"),
            "etcd://h:2379?layout=tooz&ttl=30s"
        );
    }

    #[test]
    fn what_tooz_would_not_do_is_refused_by_name() {
        for (url, needle) in [
            (
                "etcd3+http://h?timeout=1.5",
                "`timeout` = `1.5` must be whole seconds",
            ),
            ("etcd3+http://h?lock_timeout=x", "`lock_timeout` = `x`"),
            (
                "etcd3+http://h?membership_timeout=-1",
                "`membership_timeout`",
            ),
            ("etcd3+http://h?api_version=v2", "`api_version` = `v2`"),
            (
                "etcd3+http://h?namespace=x",
                "tooz option `namespace` is not one of",
            ),
            ("etcd3+http://h?ttl=10", "tooz option `ttl` is not one of"),
            ("etcd3+http://h?timeout=5&timeout=6", "given twice"),
            ("etcd3+https://u:secret@h", "ignores `user:password@`"),
            ("etcd3+http://h:2379/prefix", "ignores the path `/prefix`"),
            ("etcd3://h:2379", "removed in tooz 5.0.0"),
        ] {
            let err = t(url).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{url}");
            assert!(
                err.message().contains(needle) && err.message().contains("backends.global"),
                "{url}: {err}"
            );
            assert!(!err.message().contains("secret"), "{err}");
        }
    }
}
