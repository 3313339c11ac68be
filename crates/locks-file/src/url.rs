//! `file:///DIR[?mechanism=ofd|flock&layout=flat|tree]`: lock files in a directory.

use locks_core::{BackendUrl, Result};

use crate::{FileConfig, Layout, Mechanism};

/// Query options of `file://` URLs.
const OPTIONS: &[&str] = &["mechanism", "layout"];

impl FileConfig {
    /// Parses a `file://` URL held by configuration key `key` (named in
    /// every error).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`](locks_core::ErrorKind::InvalidConfig)
    /// naming the key, the URL and the option at fault.
    pub fn from_url(key: &str, text: &str) -> Result<Self> {
        parse(&BackendUrl::parse(key, text)?)
    }
}

fn parse(url: &BackendUrl<'_>) -> Result<FileConfig> {
    if !matches!(url.url().host_str(), None | Some("") | Some("localhost")) {
        return Err(url.invalid(
            "a file:// URL names a local directory: write file:///absolute/path (three slashes)",
        ));
    }
    let dir = url
        .url()
        .to_file_path()
        .map_err(|()| url.invalid("not a usable directory path"))?;
    let query = url.query()?;
    url.reject_unknown_keys(&query, OPTIONS)?;
    let mut config = FileConfig::new(dir);
    if let Some(mechanism) = query.get("mechanism") {
        config.mechanism = mechanism
            .parse::<Mechanism>()
            .map_err(|e| url.invalid(format_args!("option `mechanism`: {}", e.message())))?;
    }
    if let Some(layout) = query.get("layout") {
        config.layout = layout
            .parse::<Layout>()
            .map_err(|e| url.invalid(format_args!("option `layout`: {}", e.message())))?;
    }
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use locks_core::ErrorKind;

    fn parse_str(text: &str) -> Result<FileConfig> {
        FileConfig::from_url("backends.node", text)
    }

    #[test]
    fn parses_dir_and_mechanism() {
        let c = parse_str("file:///var/lib/cinder/locks?mechanism=flock").unwrap();
        assert_eq!(c.dir, std::path::PathBuf::from("/var/lib/cinder/locks"));
        assert_eq!(c.mechanism, Mechanism::Flock);
        assert_eq!(c.layout, Layout::Flat);
        let c = parse_str("file:///var/lib/cinder?layout=tree").unwrap();
        assert_eq!(c.layout, Layout::Tree);
        let c = parse_str("file:///tmp/a%20b").unwrap();
        assert_eq!(c.dir, std::path::PathBuf::from("/tmp/a b"));
    }

    #[test]
    fn rejects_hosts_unknown_options_and_bad_mechanisms() {
        for (text, needle) in [
            ("file://server/locks", "three slashes"),
            ("file:///x?mechansim=ofd", "unknown option `mechansim`"),
            ("file:///x?mechanism=lockf", "mechanism"),
            ("file:///x?mechanism=ofd&mechanism=flock", "twice"),
            ("file:///x?layout=nested", "layout"),
        ] {
            let err = parse_str(text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidConfig, "{text}");
            assert!(
                err.message().contains(needle) && err.message().contains("backends.node"),
                "{text}: {err}"
            );
        }
    }
}
