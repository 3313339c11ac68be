//! The configuration: a prefix, a catalog, and one backend URL per scope.

use std::path::{Path, PathBuf};

use locks_core::{Catalog, Error, ErrorKind, Result, Scope};
use serde::Deserialize;

/// The environment variable naming a configuration file.
pub const CONFIG_ENV: &str = "LOCKS_CONFIG";

/// Which backend serves each scope, as URLs; `None` takes the default of the
/// scope (see [`Config::backend_url`]).
///
/// Accepted URLs: `memory://` (Process only), `file:///DIR[?mechanism=ofd|flock&layout=flat|tree]`
/// (Node, and Global within one host), `etcd://HOST:PORT[,HOST:PORT…][?…]`
/// and `zookeeper://HOST:PORT[,…][/NAMESPACE][?…]` (Global), and the tooz
/// spellings `etcd3+http://` and `kazoo://`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendUrls {
    /// Backend for [`Scope::Process`]. Default `memory://`.
    pub process: Option<String>,
    /// Backend for [`Scope::Node`]. Default: lock files in [`default_lock_dir`]
    /// (with `compat = "openstack"`: oslo's lock path).
    pub node: Option<String>,
    /// Backend for [`Scope::Global`]. Default: the node lock directory, which
    /// excludes only processes of this host (a warning says so; with
    /// `compat = "openstack"` it must be set).
    pub global: Option<String>,
}

impl BackendUrls {
    /// The URL given for `scope`, if any.
    pub fn get(&self, scope: Scope) -> Option<&str> {
        match scope {
            Scope::Process => self.process.as_deref(),
            Scope::Node => self.node.as_deref(),
            Scope::Global => self.global.as_deref(),
        }
    }

    /// Sets the URL for `scope`.
    pub fn set(&mut self, scope: Scope, url: impl Into<String>) {
        let url = Some(url.into());
        match scope {
            Scope::Process => self.process = url,
            Scope::Node => self.node = url,
            Scope::Global => self.global = url,
        }
    }
}

fn default_process_url() -> String {
    "memory://".to_owned()
}

fn default_node_url() -> String {
    format!("file://{}", default_lock_dir().display())
}

/// Whose conventions lock names, files, keys and nodes follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Compat {
    /// This library's own conventions.
    #[default]
    Native,
    /// Exactly what OpenStack Cinder produces through oslo.concurrency and
    /// tooz, so Python services and this library exclude each other: the
    /// prefix ends in `-`; Node locks are oslo external lock files in oslo's
    /// lock path (`lock_path`, else `$OSLO_LOCK_PATH`; required); Global on
    /// `file://` uses the tooz file layout (`/` makes subdirectories), on etcd
    /// the tooz key layout, on ZooKeeper kazoo's lock nodes under `/tooz/locks`.
    Openstack,
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
    /// Whose naming conventions to follow. Default [`Compat::Native`].
    pub compat: Compat,
    /// Put before every lock name (rendered or raw). Default: none.
    pub prefix: String,
    /// With [`Compat::Openstack`]: oslo's `[oslo_concurrency] lock_path`, the
    /// Node lock directory (absolute). Default `$OSLO_LOCK_PATH`.
    pub lock_path: Option<PathBuf>,
    /// The catalog of declared locks.
    pub catalog: CatalogSource,
    /// One backend URL per scope.
    pub backends: BackendUrls,
    /// Whether the backends are the built-in defaults (no configuration given).
    pub embedded_defaults: bool,
    /// Record metrics through the `metrics` crate (TOML `metrics = true`):
    /// see [`metric_names`](crate::metric_names) for what is recorded. Off by
    /// default: it costs a clock read and a handle lookup per acquire.
    pub metrics: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    compat: Compat,
    #[serde(default)]
    prefix: String,
    lock_path: Option<PathBuf>,
    catalog: Option<PathBuf>,
    #[serde(default)]
    backends: Option<BackendUrls>,
    #[serde(default)]
    metrics: bool,
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
            Error::from_toml(
                ErrorKind::InvalidConfig,
                &format!("config {origin}"),
                text,
                &e,
            )
        })?;
        Ok(Config {
            compat: raw.compat,
            prefix: raw.prefix,
            lock_path: raw.lock_path,
            catalog: match raw.catalog {
                Some(path) => CatalogSource::File(base_dir.join(path)),
                None => CatalogSource::Builtin,
            },
            backends: raw.backends.unwrap_or_default(),
            embedded_defaults: false,
            metrics: raw.metrics,
        })
    }

    /// The prefix put before every name: as configured, with a `-` appended
    /// under [`Compat::Openstack`] when missing (oslo's rule: `cinder` and
    /// `cinder-` both give `cinder-name`).
    pub fn effective_prefix(&self) -> String {
        match self.compat {
            Compat::Openstack if !self.prefix.is_empty() && !self.prefix.ends_with('-') => {
                format!("{}-", self.prefix)
            }
            _ => self.prefix.clone(),
        }
    }

    /// The backend URL that serves `scope`, defaults and compatibility rules applied.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] under [`Compat::Openstack`] when the Node
    /// directory (no `backends.node`, `lock_path` or `$OSLO_LOCK_PATH`, as in
    /// oslo, which refuses to run without a lock path) or the Global backend is
    /// not given, or `lock_path` is relative.
    pub fn backend_url(&self, scope: Scope) -> Result<String> {
        let given = self.backends.get(scope);
        if self.compat == Compat::Native {
            return Ok(match (given, scope) {
                (Some(url), _) => url.to_owned(),
                (None, Scope::Process) => default_process_url(),
                (None, _) => default_node_url(),
            });
        }
        match (given, scope) {
            (Some(url), Scope::Global) => Ok(tooz_global_url(url)),
            (Some(url), _) => Ok(url.to_owned()),
            (None, Scope::Process) => Ok(default_process_url()),
            (None, Scope::Node) => {
                let from_env = std::env::var_os("OSLO_LOCK_PATH")
                    .filter(|p| !p.is_empty())
                    .map(PathBuf::from);
                let (path, key) = match (&self.lock_path, from_env) {
                    (Some(path), _) => (path.clone(), "lock_path"),
                    (None, Some(path)) => (path, "$OSLO_LOCK_PATH"),
                    (None, None) => {
                        return Err(Error::new(
                            ErrorKind::InvalidConfig,
                            "compat = \"openstack\" needs oslo's lock path for node locks: set lock_path \
                             (the [oslo_concurrency] lock_path of the service, e.g. /var/lib/cinder/tmp), \
                             or $OSLO_LOCK_PATH, or backends.node",
                        ));
                    }
                };
                if !path.is_absolute() {
                    return Err(Error::new(
                        ErrorKind::InvalidConfig,
                        format!(
                            "{key} = {:?}: the oslo lock path must be absolute",
                            path.display()
                        ),
                    ));
                }
                Ok(format!("file://{}", path.display()))
            }
            (None, Scope::Global) => Err(Error::new(
                ErrorKind::InvalidConfig,
                "compat = \"openstack\" needs backends.global: paste the service's [coordination] backend_url \
                 (Cinder's default is file://$state_path, e.g. file:///var/lib/cinder)",
            )),
        }
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

/// Under OpenStack compatibility a Global URL without an explicit layout
/// takes tooz's: the tree layout for lock files, the tooz key layout on etcd.
fn tooz_global_url(url: &str) -> String {
    let has_layout = url
        .split_once('?')
        .is_some_and(|(_, query)| query.split('&').any(|kv| kv.starts_with("layout=")));
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    let layout = match scheme {
        "file" => "tree",
        "etcd" => "tooz",
        _ => return url.to_owned(),
    };
    if has_layout {
        return url.to_owned();
    }
    let sep = if url.contains('?') { '&' } else { '?' };
    format!("{url}{sep}layout={layout}")
}

/// The per-user lock directory of the embedded defaults:
/// `$XDG_RUNTIME_DIR/locks` when that is set (a private, per-user tmpfs),
/// otherwise `<temp dir>/locks-<uid>`.
pub fn default_lock_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) if !dir.is_empty() && Path::new(&dir).is_absolute() => {
            PathBuf::from(dir).join("locks")
        }
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
        assert_eq!(
            c.catalog,
            CatalogSource::File(PathBuf::from("/etc/locks/catalog/cinder.toml"))
        );
        assert_eq!(
            c.backend_url(Scope::Node).unwrap(),
            "file:///var/lib/cinder/locks?mechanism=ofd"
        );
        assert!(!c.embedded_defaults);
    }

    #[test]
    fn unknown_keys_name_key_and_line() {
        let err =
            Config::from_toml_str("prefix = \"x\"\nprefx = \"y\"\n", Path::new("."), "t.toml")
                .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(
            err.message().contains("line 2") && err.message().contains("prefx"),
            "{err}"
        );
        let err = Config::from_toml_str(
            "[backends]\nnodes = \"memory://\"\n",
            Path::new("."),
            "t.toml",
        )
        .unwrap_err();
        assert!(
            err.message().contains("line 2") && err.message().contains("nodes"),
            "{err}"
        );
    }

    #[test]
    fn a_toml_error_says_its_message_once_and_never_quotes_the_line() {
        // A wrong type on a line that holds a password.
        let text = "[backends]\nglobal = [\"etcd://root:s3cret@127.0.0.1:2379\"]\n";
        let err = Config::from_toml_str(text, Path::new("."), "t.toml").unwrap_err();
        let report = err.report();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(report.contains("line 2"), "{report}");
        assert!(!report.contains("s3cret"), "{report}");
        let message = err.message().split(": ").last().expect("a message");
        assert_eq!(report.matches(message).count(), 1, "{report}");
    }

    #[test]
    fn missing_backends_fall_back_per_scope() {
        let c = Config::from_toml_str(
            "[backends]\nglobal = \"etcd://127.0.0.1:2379\"\n",
            Path::new("."),
            "t",
        )
        .unwrap();
        assert_eq!(c.backend_url(Scope::Process).unwrap(), "memory://");
        assert!(c.backend_url(Scope::Node).unwrap().starts_with("file:///"));
        assert_eq!(
            c.backend_url(Scope::Global).unwrap(),
            "etcd://127.0.0.1:2379"
        );
    }

    #[test]
    fn openstack_compat_follows_oslo_and_tooz() {
        let text = "compat = \"openstack\"\nprefix = \"cinder\"\nlock_path = \"/var/lib/cinder/tmp\"\n\
                    [backends]\nglobal = \"file:///var/lib/cinder\"\n";
        let c = Config::from_toml_str(text, Path::new("."), "t").unwrap();
        assert_eq!(c.compat, Compat::Openstack);
        assert_eq!(c.effective_prefix(), "cinder-");
        assert_eq!(
            c.backend_url(Scope::Node).unwrap(),
            "file:///var/lib/cinder/tmp"
        );
        assert_eq!(
            c.backend_url(Scope::Global).unwrap(),
            "file:///var/lib/cinder?layout=tree"
        );
        assert_eq!(
            tooz_global_url("etcd://h:2379"),
            "etcd://h:2379?layout=tooz"
        );
        assert_eq!(
            tooz_global_url("etcd://h:2379?ttl=30s"),
            "etcd://h:2379?ttl=30s&layout=tooz"
        );
        assert_eq!(
            tooz_global_url("etcd://h:2379?layout=mutex"),
            "etcd://h:2379?layout=mutex"
        );
        assert_eq!(tooz_global_url("zookeeper://h:2181"), "zookeeper://h:2181");

        let err = Config::from_toml_str(
            "compat = \"openstack\"\nlock_path = \"rel\"\n",
            Path::new("."),
            "t",
        )
        .unwrap()
        .backend_url(Scope::Node)
        .unwrap_err();
        assert!(err.message().contains("absolute"), "{err}");
        let c = Config::from_toml_str("compat = \"openstack\"\n", Path::new("."), "t").unwrap();
        let err = c.backend_url(Scope::Global).unwrap_err();
        assert!(err.message().contains("backend_url"), "{err}");
        let err = Config::from_toml_str("compat = \"python\"\n", Path::new("."), "t").unwrap_err();
        assert!(err.message().contains("openstack"), "{err}");
    }

    #[test]
    fn default_dir_is_absolute_and_per_user() {
        let dir = default_lock_dir();
        assert!(dir.is_absolute());
        assert!(
            dir.ends_with("locks")
                || dir
                    .file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with("locks-")
        );
    }
}
