//! The one place where a backend URL becomes a backend.
//!
//! Each scheme has a module that turns the URL into that backend's typed
//! configuration and opens it. Unknown schemes, unknown query keys and
//! malformed values are [`ErrorKind::InvalidConfig`] errors that name the
//! configuration key holding the URL.

use std::collections::BTreeMap;
use std::sync::Arc;

use locks_core::{Backend, Error, ErrorKind, Result};
use url::Url;

#[cfg(feature = "etcd")]
mod etcd;
mod file;
#[cfg(feature = "zookeeper")]
mod zookeeper;

/// The URL schemes this build understands, and whether each is compiled in.
pub const SCHEMES: &[(&str, bool)] = &[
    ("memory", true),
    ("file", true),
    ("etcd", cfg!(feature = "etcd")),
    ("zookeeper", cfg!(feature = "zookeeper")),
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

/// The URL with any password replaced by `***`, for messages.
pub(crate) fn redact(url: &Url) -> String {
    let mut shown = url.clone();
    if shown.password().is_some() {
        let _ = shown.set_password(Some("***"));
    }
    shown.to_string()
}

/// Opens the backend `text` names; `key` is the configuration key it came from.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] for a malformed URL, unknown scheme or option;
/// [`ErrorKind::Unsupported`] for a scheme not compiled into this build;
/// whatever opening the backend reports (unreachable server, unusable directory).
pub(crate) async fn open(key: &str, text: &str) -> Result<Arc<dyn Backend>> {
    let url = Url::parse(text).map_err(|e| {
        Error::new(
            ErrorKind::InvalidConfig,
            format!("{key} = \"{text}\": not a URL ({e}); expected e.g. memory://, file:///var/lib/locks, etcd://127.0.0.1:2379"),
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
            ("redis://127.0.0.1", "unknown scheme `redis`"),
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
    fn passwords_are_redacted() {
        let url = Url::parse("etcd://root:secret@127.0.0.1:2379").unwrap();
        let shown = redact(&url);
        assert!(
            !shown.contains("secret") && shown.contains("***"),
            "{shown}"
        );
    }
}
