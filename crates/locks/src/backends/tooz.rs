//! `compat = "openstack"`: tooz's spellings of backend URLs, as an
//! OpenStack service's `[coordination] backend_url` holds them, turned into
//! the URLs the backend crates parse.

use locks_core::{Error, ErrorKind, Result, redact_text};

/// Turns tooz's spellings of backend URLs (what `[coordination] backend_url`
/// holds in an OpenStack service) into ours, so the value can be pasted:
/// `etcd3+http://H:P?timeout=T&lock_timeout=L` is `etcd://H:P?layout=tooz&ttl=Ls`
/// (tooz's lock lease TTL is `lock_timeout`, else `timeout`, else 30 s), and
/// `etcd3+https://…?ca_cert=&cert_cert=&cert_key=` adds `tls=true` and our
/// `ca`, `cert` and `key` (without `ca_cert`, the system's roots, as tooz's
/// `requests` uses), and `kazoo://` is `zookeeper://`. Other URLs are returned unchanged.
pub(super) fn translate_tooz(key: &str, text: &str) -> Result<String> {
    let shown = redact_text(text);
    if let Some(rest) = text.strip_prefix("kazoo://") {
        return Ok(format!("zookeeper://{rest}"));
    }
    let (rest, https) = match (
        text.strip_prefix("etcd3+http://"),
        text.strip_prefix("etcd3+https://"),
    ) {
        (Some(rest), _) => (rest, false),
        (None, Some(rest)) => (rest, true),
        (None, None) => return Ok(text.to_owned()),
    };
    let (authority, query) = rest.split_once('?').unwrap_or((rest, ""));
    let mut ttl = None;
    let mut lock_ttl = None;
    // tooz's TLS options, as our `ca`, `cert` and `key`.
    let mut tls = Vec::new();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        match k {
            "timeout" => ttl = Some(v),
            "lock_timeout" => lock_ttl = Some(v),
            "ca_cert" if https => tls.push(format!("ca={v}")),
            "cert_cert" if https => tls.push(format!("cert={v}")),
            "cert_key" if https => tls.push(format!("key={v}")),
            // Membership and API-version settings do not concern locks.
            "membership_timeout" | "api_version" => {}
            _ => {
                return Err(Error::new(
                    ErrorKind::InvalidConfig,
                    format!(
                        "{key} = \"{shown}\": tooz option `{k}` is not understood here (known: timeout, \
                         lock_timeout, membership_timeout, api_version, and with etcd3+https: ca_cert, \
                         cert_cert, cert_key)"
                    ),
                ));
            }
        }
    }
    if https {
        // Without `ca_cert`, tooz's `requests` verifies against the system's
        // roots (TripleO writes such URLs): so does `tls=true`.
        tls.push("tls=true".to_owned());
    }
    let seconds = lock_ttl.or(ttl).unwrap_or("30");
    if seconds.is_empty() || !seconds.chars().all(|c| c.is_ascii_digit()) {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!("{key} = \"{shown}\": the tooz lock timeout `{seconds}` must be whole seconds"),
        ));
    }
    let mut url = format!(
        "etcd://{}?layout=tooz&ttl={seconds}s",
        authority.trim_end_matches('/')
    );
    for option in tls {
        url.push('&');
        url.push_str(&option);
    }
    Ok(url)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tooz_urls_translate() {
        let t = |s: &str| translate_tooz("backends.global", s);
        assert_eq!(
            t("etcd3+http://10.0.0.5:2379").unwrap(),
            "etcd://10.0.0.5:2379?layout=tooz&ttl=30s"
        );
        assert_eq!(
            t("etcd3+http://h:2379/?timeout=20&lock_timeout=15&api_version=v3").unwrap(),
            "etcd://h:2379?layout=tooz&ttl=15s"
        );
        assert_eq!(
            t("etcd3+http://h:2379?timeout=20").unwrap(),
            "etcd://h:2379?layout=tooz&ttl=20s"
        );
        assert_eq!(t("kazoo://h:2181").unwrap(), "zookeeper://h:2181");
        assert_eq!(
            t("file:///var/lib/cinder").unwrap(),
            "file:///var/lib/cinder"
        );
        assert_eq!(
            t("etcd3+http://h?ca_cert=x").unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
        assert_eq!(
            t("etcd3+http://h?timeout=1.5").unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
        // TripleO: a client certificate, no CA (the system's roots).
        assert_eq!(
            t("etcd3+https://h:2379?cert_key=/k.pem&cert_cert=/c.pem").unwrap(),
            "etcd://h:2379?layout=tooz&ttl=30s&key=/k.pem&cert=/c.pem&tls=true"
        );
        assert_eq!(
            t("etcd3+https://h:2379?ca_cert=/c.pem&cert_cert=/a.pem&cert_key=/k.pem").unwrap(),
            "etcd://h:2379?layout=tooz&ttl=30s&ca=/c.pem&cert=/a.pem&key=/k.pem&tls=true"
        );
        assert_eq!(
            t("etcd3+http://h:2379?ca_cert=/c.pem").unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
    }
}
