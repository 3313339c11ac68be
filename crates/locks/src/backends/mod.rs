//! The one place where a backend URL becomes a backend.
//!
//! Each scheme has a module that turns the URL into that backend's typed
//! configuration and opens it. Unknown schemes, unknown query keys and
//! malformed values are [`ErrorKind::InvalidConfig`] errors that name the
//! configuration key holding the URL.

use std::collections::BTreeMap;
use std::sync::Arc;
#[cfg(any(feature = "etcd", feature = "zookeeper"))]
use std::time::Duration;

use locks_core::{Backend, Error, ErrorKind, Result};
use url::Url;

#[cfg(feature = "etcd")]
mod etcd;
mod file;
#[cfg(feature = "redis")]
mod redis;
#[cfg(feature = "zookeeper")]
mod zookeeper;

/// The URL schemes this build understands, and whether each is compiled in.
pub const SCHEMES: &[(&str, bool)] = &[
    ("memory", true),
    ("file", true),
    ("etcd", cfg!(feature = "etcd")),
    ("zookeeper", cfg!(feature = "zookeeper")),
    ("redis", cfg!(feature = "redis")),
    ("rediss", cfg!(feature = "redis")),
];

/// A parsed backend URL with the configuration key it came from, for messages.
#[derive(Debug)]
pub(crate) struct BackendUrl<'a> {
    pub(crate) key: &'a str,
    pub(crate) url: Url,
}

impl BackendUrl<'_> {
    /// An [`ErrorKind::InvalidConfig`] error about this URL.
    pub(crate) fn invalid(&self, what: impl std::fmt::Display) -> Error {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("{} = \"{}\": {what}", self.key, redact(&self.url)),
        )
    }

    /// The query parameters; a repeated key is an error.
    pub(crate) fn query(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (k, v) in self.url.query_pairs() {
            if out.insert(k.to_string(), v.to_string()).is_some() {
                return Err(self.invalid(format_args!("query key `{k}` is given twice")));
            }
        }
        Ok(out)
    }

    /// A positive duration option: seconds (`10`, `2.5`, `10s`) or
    /// milliseconds (`1500ms`).
    #[cfg(any(feature = "etcd", feature = "zookeeper"))]
    pub(crate) fn duration(&self, key: &str, value: &str) -> Result<Duration> {
        let (number, scale) = if let Some(ms) = value.strip_suffix("ms") {
            (ms, 1e-3)
        } else {
            (value.strip_suffix('s').unwrap_or(value), 1.0)
        };
        number
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|n| n.is_finite() && *n > 0.0)
            .and_then(|n| Duration::try_from_secs_f64(n * scale).ok())
            .filter(|d| !d.is_zero())
            .ok_or_else(|| {
                self.invalid(format_args!(
                    "option `{key}`: `{value}` is not a positive duration (write seconds such as `10` or `2.5`, or `1500ms`)"
                ))
            })
    }

    /// The `USER:PASSWORD@` of the URL, percent-decoded; `None` without one.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a user without a password or the
    /// other way round, or escapes that are not UTF-8.
    #[cfg(any(feature = "etcd", feature = "zookeeper"))]
    pub(crate) fn credentials(&self) -> Result<Option<(String, String)>> {
        let scheme = self.url.scheme();
        let user = self.url.username();
        match (user.is_empty(), self.url.password()) {
            (true, None) => Ok(None),
            (false, Some(password)) => {
                let decode = |s: &str, what: &str| {
                    percent_decode(s).ok_or_else(|| {
                        self.invalid(format_args!(
                            "the {what} is not valid percent-encoded UTF-8"
                        ))
                    })
                };
                Ok(Some((
                    decode(user, "user name")?,
                    decode(password, "password")?,
                )))
            }
            (false, None) => Err(self.invalid(format_args!(
                "credentials need a password: {scheme}://USER:PASSWORD@HOST"
            ))),
            (true, Some(_)) => Err(self.invalid(format_args!(
                "credentials need a user name: {scheme}://USER:PASSWORD@HOST"
            ))),
        }
    }

    /// Fails on the first query key not in `known`, listing the known ones.
    pub(crate) fn reject_unknown_keys(
        &self,
        query: &BTreeMap<String, String>,
        known: &[&str],
    ) -> Result<()> {
        if let Some(key) = query.keys().find(|k| !known.contains(&k.as_str())) {
            let expected = if known.is_empty() {
                "this scheme takes no query options".to_owned()
            } else {
                format!("known options: {}", known.join(", "))
            };
            return Err(self.invalid(format_args!("unknown option `{key}` ({expected})")));
        }
        Ok(())
    }
}

/// Decodes `%XX` escapes (user names and passwords in URLs); `None` for a
/// malformed escape or text that is not UTF-8.
#[cfg(any(feature = "etcd", feature = "zookeeper", feature = "redis"))]
pub(crate) fn percent_decode(text: &str) -> Option<String> {
    let mut out = Vec::with_capacity(text.len());
    let mut rest = text.as_bytes();
    while let Some((&first, tail)) = rest.split_first() {
        if first == b'%' {
            let hex = std::str::from_utf8(tail.get(..2)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            rest = &tail[2..];
        } else {
            out.push(first);
            rest = tail;
        }
    }
    String::from_utf8(out).ok()
}

/// The URL with any password replaced by `***`, for messages.
pub(crate) fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    redact_query_passwords(shown.as_str())
}

/// The query option that carries the hosts after the first, per scheme.
fn extra_hosts_option(scheme: &str) -> Option<&'static str> {
    match scheme {
        "etcd" => Some("endpoints"),
        "zookeeper" => Some("hosts"),
        _ => None,
    }
}

/// Rewrites `SCHEME://[USERINFO@]H1:P1,H2:P2,…[/PATH][?QUERY]` as
/// `SCHEME://[USERINFO@]H1:P1[/PATH]?[QUERY&]OPTION=H2:P2,…` (`endpoints` for
/// etcd, `hosts` for ZooKeeper), because a URL parser refuses a comma-separated
/// host list with ports. `None` when `text` is not such a URL, or already has
/// that option (the backend's parser then reports the conflict).
pub(crate) fn fold_host_list(text: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
    let option = extra_hosts_option(scheme)?;
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, tail) = rest.split_at(end);
    let (userinfo, hosts) = match authority.rfind('@') {
        Some(at) => authority.split_at(at + 1),
        None => ("", authority),
    };
    let (first, more) = hosts.split_once(',')?;
    let (tail, fragment) = tail.split_at(tail.find('#').unwrap_or(tail.len()));
    let (path, query) = tail.split_once('?').unwrap_or((tail, ""));
    if query
        .split('&')
        .any(|pair| pair.split('=').next() == Some(option))
    {
        return None;
    }
    let query = if query.is_empty() {
        format!("{option}={more}")
    } else {
        format!("{query}&{option}={more}")
    };
    Some(format!(
        "{scheme}://{userinfo}{first}{path}?{query}{fragment}"
    ))
}

/// Turns tooz's spellings of backend URLs (what `[coordination] backend_url`
/// holds in an OpenStack service) into ours, so the value can be pasted:
/// `etcd3+http://H:P?timeout=T&lock_timeout=L` is `etcd://H:P?layout=tooz&ttl=Ls`
/// (tooz's lock lease TTL is `lock_timeout`, else `timeout`, else 30 s), and
/// `etcd3+https://…?ca_cert=&cert_cert=&cert_key=` adds our `ca`, `cert`
/// and `key`, and `kazoo://` is `zookeeper://`. Other URLs are returned unchanged.
fn translate_tooz(key: &str, text: &str) -> Result<String> {
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
    if https && !tls.iter().any(|o| o.starts_with("ca=")) {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{key} = \"{shown}\": etcd3+https needs ca_cert=/path/to/ca.pem (the CA that signed etcd's certificate)"
            ),
        ));
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

/// `text` with the password of a `scheme://user:password@host` prefix, and
/// the value of a `sentinel_password` option (tooz's Redis URLs), replaced by
/// `***`, for messages about text that may not parse as a URL.
pub(crate) fn redact_text(text: &str) -> String {
    let text = &redact_query_passwords(text);
    let Some((scheme, rest)) = text.split_once("://") else {
        return text.to_owned();
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return text.to_owned();
    };
    match rest[..at].split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***{}", &rest[at..]),
        None => text.to_owned(),
    }
}

/// `text` with the value of every `sentinel_password=` query option replaced by `***`.
fn redact_query_passwords(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some(("sentinel_password", _)) => "sentinel_password=***".to_owned(),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

/// Opens the backend `text` names; `key` is the configuration key it came from.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] for a malformed URL, unknown scheme or option;
/// [`ErrorKind::Unsupported`] for a scheme not compiled into this build;
/// whatever opening the backend reports (unreachable server, unusable directory).
pub(crate) async fn open(key: &str, text: &str) -> Result<Arc<dyn Backend>> {
    // tooz's Redis URLs are ours as they are, parsed as tooz reads them.
    #[cfg(feature = "redis")]
    if redis::is_redis(text) {
        return redis::open(key, text).await;
    }
    let translated = translate_tooz(key, text)?;
    let text = fold_host_list(&translated).unwrap_or(translated);
    let text = text.as_str();
    let url = Url::parse(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{key} = \"{}\": not a URL ({e}); expected e.g. memory://, file:///var/lib/locks, etcd://127.0.0.1:2379",
                redact_text(text)
            ),
        )
    })?;
    let parsed = BackendUrl { key, url };
    match parsed.url.scheme() {
        "memory" => {
            if parsed.url.has_host() && parsed.url.host_str() != Some("")
                || !matches!(parsed.url.path(), "" | "/")
                || parsed.url.query().is_some()
            {
                return Err(parsed.invalid("memory:// takes no host, path or options"));
            }
            Ok(Arc::new(locks_memory::MemoryBackend::new()))
        }
        "file" => file::open(&parsed),
        #[cfg(feature = "etcd")]
        "etcd" => etcd::open(&parsed).await,
        #[cfg(feature = "zookeeper")]
        "zookeeper" => zookeeper::open(&parsed).await,
        scheme => match SCHEMES.iter().find(|(s, _)| *s == scheme) {
            Some((_, false)) => Err(Error::new(
                ErrorKind::Unsupported,
                format!(
                    "{key} = \"{}\": the `{scheme}` backend is not compiled into this build (enable the `{scheme}` feature of the `locks` crate)",
                    redact(&parsed.url)
                ),
            )),
            _ => {
                let known: Vec<&str> = SCHEMES
                    .iter()
                    .filter(|(_, on)| *on)
                    .map(|(s, _)| *s)
                    .collect();
                Err(parsed.invalid(format_args!(
                    "unknown scheme `{scheme}`; this build knows {}",
                    known
                        .iter()
                        .map(|s| format!("{s}://"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )))
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn malformed_and_unknown_urls_are_config_errors_naming_the_key() {
        for (text, needle) in [
            ("not a url", "not a URL"),
            ("mongodb://127.0.0.1", "unknown scheme `mongodb`"),
            ("memory://host", "memory:// takes no"),
            ("memory://?x=1", "memory:// takes no"),
        ] {
            let err = open("backends.node", text).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{text}");
            assert!(err.message().contains("backends.node"), "{err}");
            assert!(err.message().contains(needle), "{text}: {err}");
        }
    }

    #[test]
    fn host_lists_fold_into_the_scheme_option() {
        assert_eq!(fold_host_list("etcd://127.0.0.1:2379"), None);
        assert_eq!(fold_host_list("redis://a:1,b:2"), None);
        assert_eq!(
            fold_host_list("etcd://u:p@a:1,b:2,[::1]:3/?ttl=5s#x").as_deref(),
            Some("etcd://u:p@a:1/?ttl=5s&endpoints=b:2,[::1]:3#x")
        );
        assert_eq!(
            fold_host_list("zookeeper://a:1,b:2/ns").as_deref(),
            Some("zookeeper://a:1/ns?hosts=b:2")
        );
        assert_eq!(fold_host_list("zookeeper://a:1,b:2?hosts=c"), None);
        assert!(Url::parse(&fold_host_list("etcd://a:1,b:2").unwrap()).is_ok());
    }

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
        assert_eq!(
            t("etcd3+https://h:2379").unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
        assert_eq!(
            t("etcd3+https://h:2379?ca_cert=/c.pem&cert_cert=/a.pem&cert_key=/k.pem").unwrap(),
            "etcd://h:2379?layout=tooz&ttl=30s&ca=/c.pem&cert=/a.pem&key=/k.pem"
        );
        assert_eq!(
            t("etcd3+http://h:2379?ca_cert=/c.pem").unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
    }

    #[test]
    fn passwords_are_redacted_in_text_that_does_not_parse() {
        assert_eq!(redact_text("etcd://u:pw@h:99999"), "etcd://u:***@h:99999");
        assert_eq!(
            redact_text("etcd3+http://u:p@w@h:1?x"),
            "etcd3+http://u:***@h:1?x"
        );
        assert_eq!(redact_text("etcd://h:1/a@b"), "etcd://h:1/a@b");
        assert_eq!(redact_text("etcd://user@h:1"), "etcd://user@h:1");
        assert_eq!(redact_text("not a url"), "not a url");
    }

    #[test]
    fn passwords_are_redacted() {
        let url = Url::parse("etcd://root:secret@127.0.0.1:2379").unwrap();
        let shown = redact(&url);
        assert!(
            !shown.contains("secret") && shown.contains("***"),
            "{shown}"
        );
    }
}
