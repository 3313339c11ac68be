//! The configuration: a prefix, a catalog, and one backend URL per scope.

use std::path::{Path, PathBuf};

use locks_core::{Catalog, Error, ErrorKind, Result, Scope};
use serde::Deserialize;

/// The environment variable naming a configuration file.
pub const CONFIG_ENV: &str = "LOCKS_CONFIG";

/// Which backend serves each scope, as URLs.
///
/// Accepted URLs: `memory://` (Process only), `file:///DIR[?mechanism=ofd|flock]`
/// (Node, and Global within one host), `etcd://HOST:PORT[,HOST:PORT…][?…]`
/// and `zookeeper://HOST:PORT[,…][/NAMESPACE][?…]` (Global).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendUrls {
    /// Backend for [`Scope::Process`]. Default `memory://`.
    #[serde(default = "default_process_url")]
    pub process: String,
    /// Backend for [`Scope::Node`]. Default: lock files in [`default_lock_dir`].
    #[serde(default = "default_node_url")]
    pub node: String,
    /// Backend for [`Scope::Global`]. Default: the node lock directory, which
    /// excludes only processes of this host (a warning says so).
    #[serde(default = "default_node_url")]
    pub global: String,
}

fn default_process_url() -> String {
    "memory://".to_owned()
}

fn default_node_url() -> String {
    format!("file://{}", default_lock_dir().display())
}

impl Default for BackendUrls {
    fn default() -> Self {
        BackendUrls {
            process: default_process_url(),
            node: default_node_url(),
            global: default_node_url(),
        }
    }
}

impl BackendUrls {
    /// The URL for `scope`.
    pub fn get(&self, scope: Scope) -> &str {
        match scope {
            Scope::Process => &self.process,
            Scope::Node => &self.node,
            Scope::Global => &self.global,
        }
    }

    /// Sets the URL for `scope`.
    pub fn set(&mut self, scope: Scope, url: impl Into<String>) {
        let url = url.into();
        match scope {
            Scope::Process => self.process = url,
            Scope::Node => self.node = url,
            Scope::Global => self.global = url,
        }
    }
}

/// Where the catalog comes from.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum CatalogSource {
    /// The built-in Cinder catalog.
    #[default]
    Builtin,
    /// A TOML catalog file.
    File(PathBuf),
    /// A catalog already loaded.
    Loaded(Catalog),
}

impl CatalogSource {
    /// Loads (or returns) the catalog and checks it has no lint errors.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] or [`ErrorKind::InvalidCatalog`].
    pub fn load(&self) -> Result<Catalog> {
        let catalog = self.load_unchecked()?;
        catalog.check()?;
        Ok(catalog)
    }

    /// Loads (or returns) the catalog without running its lint, for tools that report the lint themselves.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] or [`ErrorKind::InvalidCatalog`] when it does not parse.
    pub fn load_unchecked(&self) -> Result<Catalog> {
        Ok(match self {
            CatalogSource::Builtin => Catalog::cinder().clone(),
            CatalogSource::File(path) => Catalog::from_file(path)?,
            CatalogSource::Loaded(catalog) => catalog.clone(),
        })
    }
}

/// Everything a [`Locks`](crate::Locks) client is built from.
///
/// In TOML (every key optional; unknown keys are errors):
/// ```toml
/// prefix  = "cinder-"                 # put before every lock name
/// catalog = "catalog/cinder.toml"     # relative to this file; default: built-in Cinder catalog
/// [backends]
/// process = "memory://"
/// node    = "file:///var/lib/cinder/locks?mechanism=ofd"
/// global  = "etcd://127.0.0.1:2379"
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Config {
    /// Put before every lock name (rendered or raw). Default: none.
    pub prefix: String,
    /// The catalog of declared locks.
    pub catalog: CatalogSource,
    /// One backend URL per scope.
    pub backends: BackendUrls,
    /// Whether the backends are the built-in defaults (no configuration given).
    pub embedded_defaults: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    prefix: String,
    catalog: Option<PathBuf>,
    #[serde(default)]
    backends: Option<BackendUrls>,
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

impl Config {
    /// The embedded defaults: memory for Process, lock files in
    /// [`default_lock_dir`] for Node and (on this host only) Global.
    pub fn embedded() -> Self {
        Config {
            embedded_defaults: true,
            ..Config::default()
        }
    }

    /// Parses TOML; a relative `catalog` path is taken relative to `base_dir`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] naming the line and the key for malformed
    /// TOML, unknown keys or wrong types.
    pub fn from_toml_str(text: &str, base_dir: &Path, origin: &str) -> Result<Self> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| format!(" (line {})", line_of(text, s.start))).unwrap_or_default();
            Error::new(
                ErrorKind::InvalidConfig,
                format!("config {origin}{line}: {}", e.message().trim_end()),
            )
            .with_source(e)
        })?;
        Ok(Config {
            prefix: raw.prefix,
            catalog: match raw.catalog {
                Some(path) => CatalogSource::File(base_dir.join(path)),
                None => CatalogSource::Builtin,
            },
            backends: raw.backends.unwrap_or_default(),
            embedded_defaults: false,
        })
    }

    /// Reads a TOML configuration file.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when it cannot be read, otherwise as [`from_toml_str`](Self::from_toml_str).
    pub fn from_file(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format_args!("reading config {}", path.display()), e))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::from_toml_str(&text, base, &path.display().to_string())
    }

    /// The file named by `explicit`, else by `$LOCKS_CONFIG`, else the embedded defaults.
    ///
    /// # Errors
    /// As [`from_file`](Self::from_file).
    pub fn discover(explicit: Option<&Path>) -> Result<Self> {
        if let Some(path) = explicit {
            return Self::from_file(path);
        }
        match std::env::var_os(CONFIG_ENV) {
            Some(path) if !path.is_empty() => Self::from_file(PathBuf::from(path)),
            _ => Ok(Self::embedded()),
        }
    }
}

/// The per-user lock directory of the embedded defaults:
/// `$XDG_RUNTIME_DIR/locks` when that is set (a private, per-user tmpfs),
/// otherwise `<temp dir>/locks-<uid>`.
pub fn default_lock_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() && Path::new(&dir).is_absolute() => PathBuf::from(dir).join("locks"),
        _ => {
            // SAFETY: geteuid has no preconditions and cannot fail.
            let uid = unsafe { libc::geteuid() };
            std::env::temp_dir().join(format!("locks-{uid}"))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_documented_example() {
        let text = "prefix = \"cinder-\"\ncatalog = \"catalog/cinder.toml\"\n[backends]\nprocess = \"memory://\"\n\
                    node = \"file:///var/lib/cinder/locks?mechanism=ofd\"\nglobal = \"file:///var/lib/cinder/locks\"\n";
        let c = Config::from_toml_str(text, Path::new("/etc/locks"), "test").unwrap();
        assert_eq!(c.prefix, "cinder-");
        assert_eq!(c.catalog, CatalogSource::File(PathBuf::from("/etc/locks/catalog/cinder.toml")));
        assert_eq!(c.backends.get(Scope::Node), "file:///var/lib/cinder/locks?mechanism=ofd");
        assert!(!c.embedded_defaults);
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let err = Config::from_toml_str("prefix = \"x\"\nprefx = \"y\"\n", Path::new("."), "t.toml").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(err.message().contains("line 2") && err.message().contains("prefx"), "{err}");
        let err = Config::from_toml_str("[backends]\nnodes = \"memory://\"\n", Path::new("."), "t.toml").unwrap_err();
        assert!(err.message().contains("line 2") && err.message().contains("nodes"), "{err}");
    }

    #[test]
    fn missing_backends_fall_back_per_scope() {
        let c = Config::from_toml_str("[backends]\nglobal = \"etcd://127.0.0.1:2379\"\n", Path::new("."), "t").unwrap();
        assert_eq!(c.backends.process, "memory://");
        assert!(c.backends.node.starts_with("file:///"));
        assert_eq!(c.backends.global, "etcd://127.0.0.1:2379");
    }

    #[test]
    fn default_dir_is_absolute_and_per_user() {
        let dir = default_lock_dir();
        assert!(dir.is_absolute());
        assert!(dir.ends_with("locks") || dir.file_name().unwrap().to_string_lossy().starts_with("locks-"));
    }
}
