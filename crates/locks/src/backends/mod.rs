//! The one place where a backend URL becomes a backend: dispatch on the
//! scheme. Each backend crate parses its own URL into its configuration
//! (`EtcdConfig::from_url` and so on); tooz's spellings are translated first
//! ([`tooz`]). Unknown schemes are [`ErrorKind::InvalidConfig`] errors that
//! name the configuration key holding the URL.

use std::sync::Arc;

use locks_core::{Backend, BackendUrl, Error, ErrorKind, Result, redact_text};

mod tooz;

/// The URL schemes this build understands, and whether each is compiled in.
pub const SCHEMES: &[(&str, bool)] = &[
    ("memory", true),
    ("file", true),
    ("etcd", cfg!(feature = "etcd")),
    ("zookeeper", cfg!(feature = "zookeeper")),
    ("redis", cfg!(feature = "redis")),
    ("rediss", cfg!(feature = "redis")),
];

/// Opens the backend `text` names; `key` is the configuration key it came from.
///
/// # Errors
/// [`ErrorKind::InvalidConfig`] for a malformed URL, unknown scheme or option;
/// [`ErrorKind::Unsupported`] for a scheme not compiled into this build;
/// whatever opening the backend reports (unreachable server, unusable directory).
pub(crate) async fn open(key: &str, text: &str) -> Result<Arc<dyn Backend>> {
    let text = &tooz::translate_tooz(key, text)?;
    let Some((scheme, _)) = text.split_once("://") else {
        return Err(Error::new(
            ErrorKind::InvalidConfig,
            format!(
                "{key} = \"{}\": not a URL; expected e.g. memory://, file:///var/lib/locks, etcd://127.0.0.1:2379",
                redact_text(text)
            ),
        ));
    };
    match scheme {
        "memory" => {
            let url = BackendUrl::parse(key, text)?;
            if url.url().has_host() && url.url().host_str() != Some("")
                || !matches!(url.url().path(), "" | "/")
                || url.url().query().is_some()
            {
                return Err(url.invalid("memory:// takes no host, path or options"));
            }
            Ok(Arc::new(locks_memory::MemoryBackend::new()))
        }
        "file" => {
            let config = locks_file::FileConfig::from_url(key, text)?;
            Ok(Arc::new(locks_file::FileBackend::open(config)?))
        }
        #[cfg(feature = "etcd")]
        "etcd" => {
            let config = locks_etcd::EtcdConfig::from_url(key, text)?;
            Ok(Arc::new(locks_etcd::EtcdBackend::connect(config).await?))
        }
        #[cfg(feature = "zookeeper")]
        "zookeeper" => {
            let config = locks_zookeeper::ZkConfig::from_url(key, text)?;
            Ok(Arc::new(locks_zookeeper::ZkBackend::connect(config).await?))
        }
        #[cfg(feature = "redis")]
        "redis" | "rediss" => {
            let config = locks_redis::RedisConfig::from_url(key, text)?;
            Ok(Arc::new(locks_redis::RedisBackend::connect(config).await?))
        }
        scheme => {
            let shown = redact_text(text);
            match SCHEMES.iter().find(|(s, _)| *s == scheme) {
                Some((_, false)) => Err(Error::new(
                    ErrorKind::Unsupported,
                    format!(
                        "{key} = \"{shown}\": the `{scheme}` backend is not compiled into this build (enable the `{scheme}` feature of the `locks` crate)"
                    ),
                )),
                _ => {
                    let known: Vec<String> = SCHEMES
                        .iter()
                        .filter(|(_, on)| *on)
                        .map(|(s, _)| format!("{s}://"))
                        .collect();
                    Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "{key} = \"{shown}\": unknown scheme `{scheme}`; this build knows {}",
                            known.join(", ")
                        ),
                    ))
                }
            }
        }
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
            ("file://[::1", "not a URL"),
        ] {
            let err = open("backends.node", text).await.unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{text}");
            assert!(err.message().contains("backends.node"), "{err}");
            assert!(err.message().contains(needle), "{text}: {err}");
        }
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
        let url = url::Url::parse("etcd://root:secret@127.0.0.1:2379").unwrap();
        let shown = locks_core::redact(&url);
        assert!(
            !shown.contains("secret") && shown.contains("***"),
            "{shown}"
        );
    }
}
