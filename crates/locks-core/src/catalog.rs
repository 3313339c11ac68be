//! The catalog of declared locks, loaded from TOML, and its lint.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::OnceLock;

use serde::Deserialize;

use crate::error::line_of;
use crate::{Error, ErrorKind, LockName, NameTemplate, Params, Scope};

/// The TOML text of the built-in Cinder catalog (`catalog/cinder.toml`).
pub const CINDER_CATALOG_TOML: &str = include_str!("../../../catalog/cinder.toml");

/// One declared lock: what it guards, where, and how its name is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogEntry {
    /// Stable identifier used by code (`solidfire`, `unity-create-host`).
    pub id: String,
    /// The driver or component the lock belongs to ("Solidfire driver").
    pub driver: String,
    /// The lock-name template.
    pub template: NameTemplate,
    /// How far the lock reaches.
    pub scope: Scope,
    /// What the lock protects.
    pub critical_section: String,
    /// The methods that take it.
    pub methods: Vec<String>,
    /// The source file that declares it.
    pub file: String,
    /// Anything a reader should know (deviations from the source, traps).
    pub notes: Option<String>,
    /// The source file that builds the name, when it is not [`file`](Self::file)
    /// (Kaminario's drivers lock a name built in `kaminario_common.py`).
    pub name_file: Option<String>,
    /// The upstream version, checked, in which [`file`](Self::file) is gone: the
    /// driver was removed upstream (not necessarily in that release).
    pub removed_upstream: Option<String>,
}

impl CatalogEntry {
    /// Renders this entry's lock name for `params`.
    ///
    /// # Errors
    /// As [`NameTemplate::render`], with the entry id in the message.
    pub fn render(&self, params: &Params) -> Result<LockName, Error> {
        self.template.render(params).map_err(|e| {
            Error::new(e.kind(), format!("lock `{}`: {}", self.id, e.message())).with_source(e)
        })
    }
}

/// A set of declared locks plus reference material, as Rust, C and Go code share it.
///
/// ```
/// use locks_core::{Catalog, Params, Scope};
/// let catalog = Catalog::cinder();
/// let entry = catalog.get("infinidat")?;
/// assert_eq!(entry.scope, Scope::Global);
/// let name = entry.render(&Params::new().with("management_address", "10.0.0.1"))?;
/// assert_eq!(name.as_str(), "infinidat-10.0.0.1-lock");
/// # Ok::<(), locks_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Catalog {
    title: String,
    entries: Vec<CatalogEntry>,
    other_files: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCatalog {
    title: Option<String>,
    #[serde(default)]
    other_files: Vec<String>,
    #[serde(default, rename = "lock")]
    locks: Vec<RawEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    id: toml::Spanned<String>,
    driver: String,
    name: toml::Spanned<String>,
    scope: Scope,
    critical_section: String,
    #[serde(rename = "where")]
    methods: Vec<String>,
    file: String,
    notes: Option<String>,
    name_file: Option<toml::Spanned<String>>,
    removed_upstream: Option<toml::Spanned<String>>,
}

/// Whether `version` is a release number such as `29.0.0`: numbers separated by dots.
fn is_version(version: &str) -> bool {
    !version.is_empty()
        && version
            .split('.')
            .all(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()))
}

impl Catalog {
    /// Parses a catalog from TOML.
    ///
    /// The format is `title`, `other_files = [...]` and one `[[lock]]` table
    /// per entry with `id`, `driver`, `name` (the template), `scope`,
    /// `critical_section`, `where` (list of methods), `file`, and optional
    /// `notes`, `name_file` (the file that builds the name, when not `file`)
    /// and `removed_upstream` (the version, e.g. `"29.0.0"`, in which `file` is gone).
    ///
    /// # Errors
    /// [`ErrorKind::InvalidCatalog`] for malformed TOML, unknown or missing keys
    /// (the message gives the line), invalid ids, invalid templates, or a
    /// `removed_upstream` that is not a version number.
    pub fn from_toml_str(text: &str) -> Result<Self, Error> {
        Self::from_toml_named(text, "catalog")
    }

    /// Like [`from_toml_str`](Self::from_toml_str), naming `origin` (a path) in errors.
    ///
    /// # Errors
    /// As [`from_toml_str`](Self::from_toml_str).
    pub fn from_toml_named(text: &str, origin: &str) -> Result<Self, Error> {
        let raw: RawCatalog = toml::from_str(text)
            .map_err(|e| Error::from_toml(ErrorKind::InvalidCatalog, origin, text, &e))?;
        let mut entries = Vec::with_capacity(raw.locks.len());
        for entry in raw.locks {
            let id_line = line_of(text, entry.id.span().start);
            let id = entry.id.into_inner();
            if id.is_empty()
                || !id
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(Error::new(
                    ErrorKind::InvalidCatalog,
                    format!(
                        "{origin} (line {id_line}): lock id {id:?} must be non-empty letters, digits, `-` or `_`"
                    ),
                ));
            }
            let name_line = line_of(text, entry.name.span().start);
            let template = NameTemplate::parse(entry.name.get_ref()).map_err(|e| {
                Error::new(
                    ErrorKind::InvalidCatalog,
                    format!("{origin} (line {name_line}): lock `{id}`: {}", e.message()),
                )
                .with_source(e)
            })?;
            let removed_upstream = match entry.removed_upstream {
                Some(version) if !is_version(version.get_ref()) => {
                    let line = line_of(text, version.span().start);
                    return Err(Error::new(
                        ErrorKind::InvalidCatalog,
                        format!(
                            "{origin} (line {line}): lock `{id}`: removed_upstream {:?} is not a version; \
                             write the upstream release in which the file is gone, e.g. \"29.0.0\"",
                            version.get_ref()
                        ),
                    ));
                }
                version => version.map(toml::Spanned::into_inner),
            };
            let name_file = match entry.name_file {
                Some(file) if file.get_ref().trim().is_empty() => {
                    let line = line_of(text, file.span().start);
                    return Err(Error::new(
                        ErrorKind::InvalidCatalog,
                        format!(
                            "{origin} (line {line}): lock `{id}`: name_file is empty; name the source \
                             file that builds the lock name, or leave the key out"
                        ),
                    ));
                }
                file => file.map(toml::Spanned::into_inner),
            };
            entries.push(CatalogEntry {
                id,
                driver: entry.driver,
                template,
                scope: entry.scope,
                critical_section: entry.critical_section,
                methods: entry.methods,
                file: entry.file,
                notes: entry.notes,
                name_file,
                removed_upstream,
            });
        }
        Ok(Catalog {
            title: raw.title.unwrap_or_else(|| "Lock catalog".to_owned()),
            entries,
            other_files: raw.other_files,
        })
    }

    /// Reads and parses a catalog file.
    ///
    /// # Errors
    /// [`ErrorKind::Io`] when the file cannot be read, otherwise as
    /// [`from_toml_str`](Self::from_toml_str).
    pub fn from_file(path: impl AsRef<std::path::Path>) -> Result<Self, Error> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::io(format_args!("reading catalog {}", path.display()), e))?;
        Self::from_toml_named(&text, &path.display().to_string())
    }

    /// The built-in catalog of the Cinder drivers' locks (`catalog/cinder.toml`).
    pub fn cinder() -> &'static Catalog {
        static CINDER: OnceLock<Catalog> = OnceLock::new();
        CINDER.get_or_init(|| {
            Catalog::from_toml_named(CINDER_CATALOG_TOML, "catalog/cinder.toml")
                .unwrap_or_else(|e| unreachable!("the built-in catalog is tested to parse: {e}"))
        })
    }

    /// The catalog's title.
    pub fn title(&self) -> &str {
        &self.title
    }

    /// All entries, in declaration order.
    pub fn entries(&self) -> &[CatalogEntry] {
        &self.entries
    }

    /// Other source files that use locks, kept as reference material.
    pub fn other_files(&self) -> &[String] {
        &self.other_files
    }

    /// The entry with `id`.
    ///
    /// # Errors
    /// [`ErrorKind::UnknownLock`], listing the ids that exist.
    pub fn get(&self, id: &str) -> Result<&CatalogEntry, Error> {
        self.entries.iter().find(|e| e.id == id).ok_or_else(|| {
            let ids: Vec<&str> = self.entries.iter().map(|e| e.id.as_str()).collect();
            Error::new(
                ErrorKind::UnknownLock,
                format!(
                    "no lock `{id}` in the catalog; known ids: {}",
                    ids.join(", ")
                ),
            )
        })
    }

    /// Checks the catalog for mistakes; see [`LintFinding`].
    pub fn lint(&self) -> Vec<LintFinding> {
        let mut findings = Vec::new();
        let mut by_id: BTreeMap<&str, usize> = BTreeMap::new();
        for (i, entry) in self.entries.iter().enumerate() {
            if let Some(&first) = by_id.get(entry.id.as_str()) {
                findings.push(LintFinding {
                    severity: Severity::Error,
                    entries: vec![self.entries[first].id.clone(), entry.id.clone()],
                    message: format!(
                        "duplicate id `{}` (entries {} and {})",
                        entry.id,
                        first + 1,
                        i + 1
                    ),
                });
            } else {
                by_id.insert(&entry.id, i);
            }
        }
        for (i, a) in self.entries.iter().enumerate() {
            for b in &self.entries[i + 1..] {
                if a.id == b.id {
                    continue;
                }
                let ids = vec![a.id.clone(), b.id.clone()];
                if a.template == b.template {
                    if a.scope != b.scope {
                        findings.push(LintFinding {
                            severity: Severity::Error,
                            entries: ids,
                            message: format!(
                                "template `{}` is declared with two scopes: {} in `{}`, {} in `{}`",
                                a.template, a.scope, a.id, b.scope, b.id
                            ),
                        });
                    }
                } else if a.template.same_shape(&b.template) {
                    let (severity, consequence) = if a.scope == b.scope {
                        (
                            Severity::Warning,
                            "they are one lock whenever the values coincide; taking one while holding the other \
                             is reported as WouldDeadlock",
                        )
                    } else {
                        (
                            Severity::Error,
                            "with different scopes the same name would be two unrelated locks",
                        )
                    };
                    findings.push(LintFinding {
                        severity,
                        entries: ids,
                        message: format!(
                            "templates `{}` ({}, {}) and `{}` ({}, {}) render the same name for the same values: \
                             {consequence}",
                            a.template, a.id, a.scope, b.template, b.id, b.scope
                        ),
                    });
                }
            }
        }
        findings
    }

    /// Fails on the first lint finding of [`Severity::Error`].
    ///
    /// # Errors
    /// [`ErrorKind::InvalidCatalog`] naming the finding.
    pub fn check(&self) -> Result<(), Error> {
        match self
            .lint()
            .into_iter()
            .find(|f| f.severity == Severity::Error)
        {
            Some(finding) => Err(Error::new(
                ErrorKind::InvalidCatalog,
                format!("catalog lint: {finding}"),
            )),
            None => Ok(()),
        }
    }
}

/// How serious a [`LintFinding`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Worth a look; the catalog still works as declared.
    Warning,
    /// The catalog is wrong: a lookup is ambiguous or a lock would not exclude what it should.
    Error,
}

/// One problem found by [`Catalog::lint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LintFinding {
    /// How serious it is.
    pub severity: Severity,
    /// The ids of the entries involved.
    pub entries: Vec<String>,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LintFinding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Warning => "warning",
            Severity::Error => "error",
        };
        write!(f, "{level}: {}", self.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The seed document's entries, then the ones Cinder 29.0.0 added.
    const IDS: [&str; 14] = [
        "lio",
        "nvmet",
        "hgst",
        "solidfire",
        "infinidat",
        "kaminario-fc",
        "kaminario-iscsi",
        "unity-create-host",
        "unity-create-host-and-attach",
        "unity-attach-detach",
        "dothill-api",
        "dothill-map",
        "stx-api",
        "stx-map",
    ];

    #[test]
    fn cinder_catalog_has_every_seed_entry() {
        let c = Catalog::cinder();
        let ids: Vec<&str> = c.entries().iter().map(|e| e.id.as_str()).collect();
        assert_eq!(ids, IDS);
        let expect = [
            ("lio", "lioadm", Scope::Node),
            ("nvmet", "nvmetcli", Scope::Node),
            ("solidfire", "solidfire-{resource_id}", Scope::Process),
            (
                "infinidat",
                "infinidat-{management_address}-lock",
                Scope::Global,
            ),
            // Cinder's K2_LOCK_PREFIX is 'Kaminario', whatever the seed document says.
            ("kaminario-fc", "Kaminario-{san_ip}", Scope::Global),
            ("kaminario-iscsi", "Kaminario-{san_ip}", Scope::Global),
            ("unity-create-host", "{self.host}-{name}", Scope::Global),
            (
                "unity-create-host-and-attach",
                "{client.host}-{host_name}",
                Scope::Global,
            ),
            (
                "unity-attach-detach",
                "{client.host}-{host_name}",
                Scope::Global,
            ),
            ("dothill-api", "{driver_name}-{array_name}", Scope::Global),
            (
                "dothill-map",
                "{driver_name}-{array_name}-map",
                Scope::Global,
            ),
            ("stx-api", "{driver_name}-{array_name}", Scope::Global),
            ("stx-map", "{driver_name}-{array_name}-map", Scope::Global),
        ];
        for (id, template, scope) in expect {
            let e = c.get(id).unwrap();
            assert_eq!((e.template.as_str(), e.scope), (template, scope), "{id}");
        }
        let hgst = c.get("hgst").unwrap();
        assert_eq!(hgst.scope, Scope::Process);
        assert!(hgst.notes.as_deref().unwrap_or("").contains("hgst'devices"));
        let removed: Vec<&str> = c
            .entries()
            .iter()
            .filter(|e| e.removed_upstream.is_some())
            .map(|e| e.id.as_str())
            .collect();
        assert_eq!(removed, ["hgst", "dothill-api", "dothill-map"]);
        assert!(
            c.entries()
                .iter()
                .all(|e| e.removed_upstream.as_deref().is_none_or(|v| v == "29.0.0"))
        );
        let kaminario = c.get("kaminario-fc").unwrap();
        assert_eq!(
            kaminario.name_file.as_deref(),
            Some("cinder/volume/drivers/kaminario/kaminario_common.py")
        );
        let name = kaminario
            .render(&Params::new().with("san_ip", "10.0.0.1"))
            .unwrap();
        assert_eq!(name.as_str(), "Kaminario-10.0.0.1");
        assert_eq!(c.other_files().len(), 27);
        assert!(
            c.other_files()
                .iter()
                .all(|f| f.starts_with("cinder/volume/drivers/"))
        );
    }

    #[test]
    fn cinder_catalog_lints_clean_of_errors_but_flags_unity_overlap() {
        let c = Catalog::cinder();
        c.check().unwrap();
        let findings = c.lint();
        let unity: Vec<&LintFinding> = findings
            .iter()
            .filter(|f| f.entries.contains(&"unity-create-host".to_owned()))
            .collect();
        for adapter in ["unity-create-host-and-attach", "unity-attach-detach"] {
            assert!(
                unity
                    .iter()
                    .any(|f| f.entries.contains(&adapter.to_owned())),
                "create_host against {adapter}: {findings:?}"
            );
        }
        assert!(
            findings.iter().all(|f| f.severity == Severity::Warning),
            "{findings:?}"
        );
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_line() {
        let text = "title = \"t\"\n\n[[lock]]\nid = \"a\"\ndriver = \"d\"\nname = \"x\"\nscope = \"node\"\n\
                    critical_section = \"c\"\nwhere = []\nfile = \"f\"\ncolour = \"red\"\n";
        let err = Catalog::from_toml_str(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCatalog);
        assert!(err.message().contains("line 11"), "{}", err.message());
        assert!(err.message().contains("colour"), "{}", err.message());
    }

    #[test]
    fn removed_upstream_and_name_file_are_optional_and_checked() {
        let base = "[[lock]]\nid = \"a\"\ndriver = \"d\"\nname = \"x\"\nscope = \"node\"\n\
                    critical_section = \"c\"\nwhere = []\nfile = \"f\"\n";
        let plain = Catalog::from_toml_str(base).unwrap();
        assert_eq!(plain.entries()[0].removed_upstream, None);
        assert_eq!(plain.entries()[0].name_file, None);

        let text = format!("{base}removed_upstream = \"14.0.0\"\nname_file = \"g\"\n");
        let c = Catalog::from_toml_str(&text).unwrap();
        assert_eq!(c.entries()[0].removed_upstream.as_deref(), Some("14.0.0"));
        assert_eq!(c.entries()[0].name_file.as_deref(), Some("g"));

        for bad in ["\"yes\"", "\"\"", "\"29..0\"", "\"v29\""] {
            let text = format!("{base}removed_upstream = {bad}\n");
            let err = Catalog::from_toml_str(&text).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidCatalog, "{bad}");
            assert!(
                err.message().contains("line 9")
                    && err.message().contains("`a`")
                    && err.message().contains("29.0.0"),
                "{bad}: {}",
                err.message()
            );
        }
        let err = Catalog::from_toml_str(&format!("{base}name_file = \" \"\n")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCatalog);
        assert!(
            err.message().contains("line 9") && err.message().contains("name_file is empty"),
            "{}",
            err.message()
        );
        let err = Catalog::from_toml_str(&format!("{base}removed_upstream = true\n")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCatalog);
        assert!(err.message().contains("line 9"), "{}", err.message());
    }

    #[test]
    fn the_seed_documents_lowercase_kaminario_name_renders_only_when_declared() {
        let params = Params::new().with("san_ip", "10.0.0.1");
        for id in ["kaminario-fc", "kaminario-iscsi"] {
            let name = Catalog::cinder().get(id).unwrap().render(&params).unwrap();
            assert_eq!(name.as_str(), "Kaminario-10.0.0.1", "{id}");
        }
        let own = "[[lock]]\nid = \"old-kaminario\"\ndriver = \"d\"\nname = \"kaminario-{san_ip}\"\n\
                   scope = \"global\"\ncritical_section = \"c\"\nwhere = []\nfile = \"f\"\n";
        let c = Catalog::from_toml_str(own).unwrap();
        let name = c.get("old-kaminario").unwrap().render(&params).unwrap();
        assert_eq!(name.as_str(), "kaminario-10.0.0.1");
    }

    #[test]
    fn bad_templates_and_scopes_are_reported_with_their_line() {
        let text = "[[lock]]\nid = \"a\"\ndriver = \"d\"\nname = \"x-{\"\nscope = \"node\"\n\
                    critical_section = \"c\"\nwhere = []\nfile = \"f\"\n";
        let err = Catalog::from_toml_str(text).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidCatalog);
        assert!(
            err.message().contains("line 4") && err.message().contains("`a`"),
            "{}",
            err.message()
        );

        let text = text.replace("x-{", "x").replace("\"node\"", "\"cluster\"");
        let err = Catalog::from_toml_str(&text).unwrap_err();
        assert!(err.message().contains("line 5"), "{}", err.message());
    }

    fn entry(id: &str, name: &str, scope: &str) -> String {
        format!(
            "[[lock]]\nid = \"{id}\"\ndriver = \"d\"\nname = \"{name}\"\nscope = \"{scope}\"\n\
             critical_section = \"c\"\nwhere = [\"m\"]\nfile = \"f\"\n"
        )
    }

    #[test]
    fn lint_finds_duplicate_ids_and_scope_conflicts() {
        let text = [
            entry("a", "x-{p}", "global"),
            entry("a", "y", "node"),
            entry("b", "x-{p}", "node"),
            entry("c", "{q}-z", "process"),
            entry("d", "{r}-z", "global"),
        ]
        .concat();
        let c = Catalog::from_toml_str(&text).unwrap();
        let findings = c.lint();
        let errors: Vec<String> = findings
            .iter()
            .filter(|f| f.severity == Severity::Error)
            .map(|f| f.message.clone())
            .collect();
        assert!(
            errors.iter().any(|m| m.contains("duplicate id `a`")),
            "{errors:?}"
        );
        assert!(
            errors.iter().any(|m| m.contains("two scopes")),
            "{errors:?}"
        );
        assert!(
            errors
                .iter()
                .any(|m| m.contains("{q}-z") && m.contains("{r}-z")),
            "overlap across scopes is an error: {errors:?}"
        );
        assert_eq!(c.check().unwrap_err().kind(), ErrorKind::InvalidCatalog);
    }

    #[test]
    fn unknown_id_lists_known_ids() {
        let err = Catalog::cinder().get("nope").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownLock);
        assert!(err.message().contains("lio") && err.message().contains("dothill-map"));
    }
}
