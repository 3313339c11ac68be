//! What every backend's URL parser shares: the parsed URL with the
//! configuration key it came from (for messages), query options, durations,
//! credentials, and passwords kept out of every message.
//!
//! Each backend crate parses its own scheme into its own configuration (its
//! `url.rs`); the `locks` facade only dispatches on the scheme.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use url::Url;

use crate::{Error, ErrorKind, Result};

/// A backend URL being parsed, with the configuration key that holds it.
///
/// Every error it makes is [`ErrorKind::InvalidConfig`] and reads
/// `KEY = "URL": problem`, with passwords shown as `***`.
#[derive(Debug)]
pub struct BackendUrl<'a> {
    key: &'a str,
    url: Url,
}

impl<'a> BackendUrl<'a> {
    /// Parses `text`, held by configuration key `key`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] when `text` is not a URL.
    pub fn parse(key: &'a str, text: &str) -> Result<Self> {
        let url = Url::parse(text).map_err(|e| {
            Error::new(
                ErrorKind::InvalidConfig,
                format!("{key} = \"{}\": not a URL ({e})", redact_text(text)),
            )
        })?;
        Ok(Self { key, url })
    }

    /// Parses `text` whose authority may list several `HOST:PORT`s after
    /// commas (which a URL parser refuses): the hosts after the first move
    /// to the query option `option` (see [`fold_host_list`]).
    ///
    /// # Errors
    /// As [`parse`](Self::parse).
    pub fn parse_host_list(key: &'a str, text: &str, option: &str) -> Result<Self> {
        match fold_host_list(text, option) {
            Some(folded) => Self::parse(key, &folded),
            None => Self::parse(key, text),
        }
    }

    /// The configuration key holding the URL.
    pub fn key(&self) -> &str {
        self.key
    }

    /// The parsed URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The URL with passwords replaced by `***`, for messages.
    pub fn redacted(&self) -> String {
        redact(&self.url)
    }

    /// An [`ErrorKind::InvalidConfig`] error about this URL.
    pub fn invalid(&self, what: impl fmt::Display) -> Error {
        self.error(ErrorKind::InvalidConfig, what)
    }

    /// An error of `kind` about this URL (e.g. [`ErrorKind::Unsupported`]
    /// for an option that needs a feature this build lacks).
    pub fn error(&self, kind: ErrorKind, what: impl fmt::Display) -> Error {
        Error::new(
            kind,
            format!("{} = \"{}\": {what}", self.key, self.redacted()),
        )
    }

    /// The query options, percent-decoded.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] for a key given twice.
    pub fn query(&self) -> Result<BTreeMap<String, String>> {
        let mut out = BTreeMap::new();
        for (k, v) in self.url.query_pairs() {
            if out.insert(k.to_string(), v.to_string()).is_some() {
                return Err(self.invalid(format_args!("query key `{k}` is given twice")));
            }
        }
        Ok(out)
    }

    /// Option `key`'s `value` as a positive duration: seconds (`10`, `2.5`,
    /// `10s`) or milliseconds (`1500ms`).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the option and the accepted forms.
    pub fn duration(&self, key: &str, value: &str) -> Result<Duration> {
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
    pub fn credentials(&self) -> Result<Option<(String, String)>> {
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
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the unknown option.
    pub fn reject_unknown_keys(
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
pub fn percent_decode(text: &str) -> Option<String> {
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

/// The query options whose values are secrets, shown as `***` in messages.
const SECRET_OPTIONS: &[&str] = &["sentinel_password", "keyfile_password", "password"];

/// The URL with any password replaced by `***`, for messages.
pub fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    redact_query_secrets(shown.as_str())
}

/// `text` with the password of a `scheme://user:password@host` prefix, and
/// the values of secret query options (`sentinel_password`,
/// `keyfile_password`, `password`), replaced by `***`, for messages about
/// text that may not parse as a URL.
pub fn redact_text(text: &str) -> String {
    let text = &redact_query_secrets(text);
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

/// `text` with the value of every secret query option replaced by `***`.
fn redact_query_secrets(text: &str) -> String {
    let Some((head, query)) = text.split_once('?') else {
        return text.to_owned();
    };
    let query: Vec<String> = query
        .split('&')
        .map(|pair| match pair.split_once('=') {
            Some((key, _)) if SECRET_OPTIONS.contains(&key) => format!("{key}=***"),
            _ => pair.to_owned(),
        })
        .collect();
    format!("{head}?{}", query.join("&"))
}

/// Rewrites `SCHEME://[USERINFO@]H1:P1,H2:P2,…[/PATH][?QUERY]` as
/// `SCHEME://[USERINFO@]H1:P1[/PATH]?[QUERY&]OPTION=H2:P2,…`, because a URL
/// parser refuses a comma-separated host list with ports. `None` when `text`
/// is not such a URL, or already has `option` (the backend's parser then
/// reports the conflict).
pub fn fold_host_list(text: &str, option: &str) -> Option<String> {
    let (scheme, rest) = text.split_once("://")?;
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

/// Splits `HOST[:PORT]` or `[IPV6][:PORT]` into the host (without
/// brackets) and the port, for the host lists of backend URLs. `None` for an
/// empty host, a port outside 1–65535, or a host with `:`, `/`, `@`, `,` or
/// a space outside brackets.
pub fn split_host_port(text: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        match after {
            "" => (host, None),
            _ => (host, Some(after.strip_prefix(':')?)),
        }
    } else {
        match text.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (text, None),
        }
    };
    if host.is_empty() || !text.starts_with('[') && host.contains([':', '/', '@', ',', ' ']) {
        return None;
    }
    let port = match port {
        Some(p) => Some(p.parse::<u16>().ok().filter(|p| *p != 0)?),
        None => None,
    };
    Some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_lists_fold_into_the_option() {
        assert_eq!(
            fold_host_list("etcd://u:p@h1:1,h2:2,h3/?ttl=5#f", "endpoints").as_deref(),
            Some("etcd://u:p@h1:1/?ttl=5&endpoints=h2:2,h3#f")
        );
        assert_eq!(fold_host_list("etcd://h1:1", "endpoints"), None);
        assert_eq!(
            fold_host_list("etcd://h1,h2?endpoints=h3", "endpoints"),
            None
        );
    }

    #[test]
    fn passwords_and_secret_options_are_redacted() {
        let url = BackendUrl::parse(
            "global",
            "zookeeper://u:s3cret@h/?keyfile_password=k3y&sentinel_password=s&ttl=1",
        )
        .unwrap();
        let message = url.invalid("boom").to_string();
        for secret in ["s3cret", "k3y", "=s&"] {
            assert!(!message.contains(secret), "{message}");
        }
        assert!(message.contains("ttl=1"), "{message}");
        assert_eq!(
            redact_text("redis://default:pw@h:1?sentinel=m"),
            "redis://default:***@h:1?sentinel=m"
        );
        let unparsable = BackendUrl::parse("global", "etcd://u:pw@[::1").unwrap_err();
        assert!(!unparsable.to_string().contains("pw"), "{unparsable}");
    }

    #[test]
    fn hosts_and_ports_split() {
        assert_eq!(split_host_port("h"), Some(("h", None)));
        assert_eq!(split_host_port("h:26379"), Some(("h", Some(26379))));
        assert_eq!(split_host_port("[::1]:2379"), Some(("::1", Some(2379))));
        assert_eq!(split_host_port("[::1]"), Some(("::1", None)));
        for bad in [
            "", ":1", "h:0", "h:x", "h:70000", "::1", "[::1", "[::1]x", "a b:1",
        ] {
            assert_eq!(split_host_port(bad), None, "{bad}");
        }
    }

    #[test]
    fn durations_take_seconds_or_milliseconds() {
        let url = BackendUrl::parse("k", "x://h").unwrap();
        assert_eq!(
            url.duration("t", "2.5").unwrap(),
            Duration::from_millis(2500)
        );
        assert_eq!(
            url.duration("t", "1500ms").unwrap(),
            Duration::from_millis(1500)
        );
        assert_eq!(url.duration("t", "10s").unwrap(), Duration::from_secs(10));
        for bad in ["0", "-1", "x", "", "inf"] {
            let e = url.duration("t", bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidConfig);
            assert!(e.message().contains("option `t`"), "{e}");
        }
    }

    #[test]
    fn credentials_need_both_parts() {
        let both = BackendUrl::parse("k", "etcd://a%40b:p%3Aw@h").unwrap();
        assert_eq!(
            both.credentials().unwrap(),
            Some(("a@b".to_owned(), "p:w".to_owned()))
        );
        assert!(
            BackendUrl::parse("k", "etcd://a@h")
                .unwrap()
                .credentials()
                .is_err()
        );
        assert!(
            BackendUrl::parse("k", "etcd://:p@h")
                .unwrap()
                .credentials()
                .is_err()
        );
        assert_eq!(
            BackendUrl::parse("k", "etcd://h")
                .unwrap()
                .credentials()
                .unwrap(),
            None
        );
    }
}
