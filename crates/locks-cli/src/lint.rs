//! `locks catalog lint --cinder PATH`: each catalog entry checked against a
//! Cinder source tree or installed package, so that a rename upstream is
//! caught.
//!
//! For every entry, in the file it names (and its `name_file`): some lock call
//! builds a name of the template's shape (the same fixed text, holes where the
//! template has parameters; names assigned a string are followed, e.g.
//! `K2_LOCK_PREFIX = 'Kaminario'`), or failing that a string literal there
//! has that shape; and every `where` function is defined there and takes a
//! lock (a lock call among its decorators or in its body). A mismatch names
//! the entry, what was expected, the file, and what the file has instead (the
//! nearest lock names, the functions that do take a lock). An entry whose file
//! is gone is reported as removed upstream when the catalog says so, and as a
//! mismatch otherwise, with the files that now define its `where` functions.

mod python;

use std::fmt;
use std::path::{Path, PathBuf};

use locks::{Catalog, CatalogEntry, Error, ErrorKind};
use python::{Candidate, Scope, Shape, Source, distance};

/// A Cinder tree: the directory that holds the `cinder` package, and the
/// version when the tree says it (`cinder-X.dist-info`, `PKG-INFO`).
#[derive(Debug, Clone)]
pub(crate) struct Tree {
    root: PathBuf,
    version: Option<String>,
}

impl Tree {
    /// Opens `path`: a directory containing `cinder/` (a checkout, an unpacked
    /// wheel, site-packages) or the `cinder` package directory itself.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidConfig`] when `path` is neither.
    pub(crate) fn open(path: &Path) -> Result<Tree, Error> {
        let root = if path.join("cinder").join("volume").is_dir() {
            path.to_path_buf()
        } else if path.join("volume").is_dir() && path.join("__init__.py").is_file() {
            match path
                .canonicalize()
                .ok()
                .and_then(|p| p.parent().map(Path::to_path_buf))
            {
                Some(parent) if parent.join("cinder").join("volume").is_dir() => parent,
                _ => {
                    return Err(not_a_tree(path, "its parent directory cannot be read"));
                }
            }
        } else if !path.exists() {
            return Err(not_a_tree(path, "it does not exist"));
        } else {
            return Err(not_a_tree(
                path,
                "it has neither `cinder/volume/` nor `volume/` with `__init__.py`",
            ));
        };
        let version = version_of(&root);
        Ok(Tree { root, version })
    }

    /// What the tree is, for the report: `Cinder 29.0.0 at PATH`.
    fn describe(&self) -> String {
        match &self.version {
            Some(v) => format!("Cinder {v} at {}", self.root.display()),
            None => format!("Cinder (version not recorded) at {}", self.root.display()),
        }
    }

    fn read(&self, file: &str) -> Result<Option<Source>, Error> {
        let path = self.root.join(file);
        if !path.is_file() {
            return Ok(None);
        }
        let text = std::fs::read_to_string(&path)
            .map_err(|e| Error::io(format_args!("reading {}", path.display()), e))?;
        Ok(Some(Source::new(file, text)))
    }

    /// Every Python file under `cinder/`, tests left out: path (from the root) and text.
    fn corpus(&self) -> Vec<(String, String)> {
        let mut found = Vec::new();
        let mut dirs = vec![self.root.join("cinder")];
        while let Some(dir) = dirs.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let path = entry.path();
                if path.is_dir() {
                    if path.file_name().is_some_and(|n| n != "tests") {
                        dirs.push(path);
                    }
                } else if path.extension().is_some_and(|e| e == "py")
                    && let Ok(text) = std::fs::read_to_string(&path)
                    && let Ok(rel) = path.strip_prefix(&self.root)
                {
                    found.push((rel.display().to_string(), text));
                }
            }
        }
        found.sort();
        found
    }
}

/// Where a lock went when its file is gone: the files that define all of
/// `functions` and whose lock calls build `expected` (with the line), else
/// the files that merely define them.
fn moved_to(corpus: &[(String, String)], functions: &[String], expected: &Shape) -> String {
    let defining: Vec<&(String, String)> = corpus
        .iter()
        .filter(|(_, text)| {
            functions
                .iter()
                .all(|f| text.contains(&format!("def {f}(")))
        })
        .collect();
    let list = quoted(functions);
    let locking: Vec<String> = defining
        .iter()
        .filter_map(|(path, text)| {
            let src = Source::new(path.clone(), text.clone());
            let names = Scope::new(vec![&src]).lock_names(&src);
            let hit = names.iter().find(|c| c.shape == *expected)?;
            Some(format!("{path}:{}", hit.line))
        })
        .collect();
    if !locking.is_empty() {
        return format!(
            "the lock and {list} are now in: {} (point `file` there)",
            locking.join(", ")
        );
    }
    match defining.len() {
        0 => format!("no file of the tree defines all of {list}"),
        n => {
            let shown: Vec<&str> = defining.iter().take(5).map(|(p, _)| p.as_str()).collect();
            let more = if n > 5 {
                format!(" and {} more", n - 5)
            } else {
                String::new()
            };
            format!(
                "{list} defined in {}{more}, none of which builds this name in a lock call",
                shown.join(", ")
            )
        }
    }
}

/// Whether `name` is used anywhere in `corpus` other than in its `def`.
fn used(corpus: &[(String, String)], name: &str) -> bool {
    corpus.iter().any(|(_, text)| {
        text.match_indices(name).any(|(at, _)| {
            let b = text.as_bytes();
            let ident = |c: u8| c.is_ascii_alphanumeric() || c == b'_';
            let starts = at == 0 || !ident(b[at - 1]);
            let ends = b.get(at + name.len()).is_none_or(|&c| !ident(c));
            starts && ends && !text[..at].ends_with("def ")
        })
    })
}

fn not_a_tree(path: &Path, why: &str) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        format!(
            "--cinder {}: not a Cinder source tree or installed package ({why}); give the directory \
             that contains `cinder/` (a checkout, an unpacked wheel or sdist, site-packages) or the \
             `cinder` package directory itself",
            path.display()
        ),
    )
}

fn version_of(root: &Path) -> Option<String> {
    let entries = std::fs::read_dir(root).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        for suffix in [".dist-info", ".egg-info"] {
            if let Some(version) = name
                .strip_prefix("cinder-")
                .and_then(|n| n.strip_suffix(suffix))
            {
                return Some(version.to_owned());
            }
        }
    }
    let info = std::fs::read_to_string(root.join("PKG-INFO")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("Version:"))
        .map(|v| v.trim().to_owned())
}

/// The outcome for one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Name and functions found; what was found where.
    Ok(String),
    /// The file is gone and the catalog marks the entry removed upstream.
    Removed(String),
    /// Something moved: one line per problem.
    Mismatch(Vec<String>),
}

/// The check of a whole catalog against one tree.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    tree: String,
    entries: Vec<(String, Verdict)>,
    other_files: usize,
    other_missing: Vec<String>,
}

impl Report {
    /// How many entries do not match the tree.
    pub(crate) fn mismatches(&self) -> usize {
        self.entries
            .iter()
            .filter(|(_, v)| matches!(v, Verdict::Mismatch(_)))
            .count()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "checking the catalog against {}", self.tree)?;
        let (mut ok, mut removed) = (0, 0);
        for (id, verdict) in &self.entries {
            match verdict {
                Verdict::Ok(what) => {
                    ok += 1;
                    writeln!(f, "ok        {id}: {what}")?;
                }
                Verdict::Removed(what) => {
                    removed += 1;
                    writeln!(f, "removed   {id}: {what}")?;
                }
                Verdict::Mismatch(problems) => {
                    writeln!(f, "MISMATCH  {id}:")?;
                    for p in problems {
                        writeln!(f, "  - {p}")?;
                    }
                }
            }
        }
        if self.other_files > 0 {
            write!(
                f,
                "other files: {} of {} in this tree",
                self.other_files - self.other_missing.len(),
                self.other_files
            )?;
            if self.other_missing.is_empty() {
                writeln!(f)?;
            } else {
                writeln!(
                    f,
                    "; not found (reference only): {}",
                    self.other_missing.join(", ")
                )?;
            }
        }
        writeln!(
            f,
            "{} entries: {ok} ok, {removed} removed upstream, {} mismatches",
            self.entries.len(),
            self.mismatches()
        )
    }
}

/// Checks every entry of `catalog` against `tree`.
///
/// # Errors
/// [`ErrorKind::Io`] when a file of the tree exists but cannot be read.
pub(crate) fn check(catalog: &Catalog, tree: &Tree) -> Result<Report, Error> {
    let corpus = tree.corpus();
    let mut entries = Vec::new();
    for entry in catalog.entries() {
        entries.push((entry.id.clone(), check_entry(entry, tree, &corpus)?));
    }
    let other_missing: Vec<String> = catalog
        .other_files()
        .iter()
        .filter(|f| !tree.root.join(f).is_file())
        .cloned()
        .collect();
    Ok(Report {
        tree: tree.describe(),
        entries,
        other_files: catalog.other_files().len(),
        other_missing,
    })
}

fn check_entry(
    entry: &CatalogEntry,
    tree: &Tree,
    corpus: &[(String, String)],
) -> Result<Verdict, Error> {
    let expected = Shape::of_template(entry.template.as_str());
    let Some(src) = tree.read(&entry.file)? else {
        if let Some(version) = &entry.removed_upstream {
            return Ok(Verdict::Removed(format!(
                "{} is not in this tree: removed upstream, as the catalog says (gone from Cinder {version})",
                entry.file
            )));
        }
        let mut problems = vec![format!(
            "{} is not in this tree (if the driver was removed upstream, mark the entry \
             `removed_upstream = \"VERSION\"`)",
            entry.file
        )];
        if !entry.methods.is_empty() {
            problems.push(moved_to(corpus, &entry.methods, &expected));
        }
        return Ok(Verdict::Mismatch(problems));
    };
    let mut problems = Vec::new();
    let name_src = match &entry.name_file {
        Some(file) => {
            let found = tree.read(file)?;
            if found.is_none() {
                problems.push(format!(
                    "name_file {file} is not in this tree: the name cannot be followed there"
                ));
            }
            found
        }
        None => None,
    };
    let mut files = vec![&src];
    files.extend(name_src.as_ref());
    let mut at_lock = Scope::new(files.clone()).lock_names(&src);
    let dir = entry.file.rsplit_once('/').map_or("", |(d, _)| d);
    let siblings: Vec<Source> = corpus
        .iter()
        .filter(|(path, _)| {
            path.rsplit_once('/').is_some_and(|(d, _)| d == dir)
                && *path != entry.file
                && entry.name_file.as_ref() != Some(path)
        })
        .map(|(path, text)| Source::new(path.clone(), text.clone()))
        .collect();
    if !at_lock.iter().any(|c| c.shape == expected) {
        // The name may be built from a constant of a neighbouring module
        // (as Kaminario's from `kaminario_common.K2_LOCK_PREFIX`).
        files.extend(siblings.iter());
        at_lock = Scope::new(files.clone()).lock_names(&src);
    }
    let mut ok = Vec::new();
    // A lock call in a `where` function first, then any.
    let matching: Vec<&Candidate> = at_lock.iter().filter(|c| c.shape == expected).collect();
    let in_where = matching
        .iter()
        .find(|c| c.site.is_some_and(|at| src.within(at, &entry.methods)));
    if let Some(c) = in_where.or(matching.first()) {
        ok.push(format!("`{}` at {}", entry.template, place(c)));
    } else {
        let mut literals = src.literals();
        literals.extend(name_src.iter().flat_map(Source::literals));
        if let Some(c) = literals
            .iter()
            .find(|c| c.shape == expected && expected.has_text())
        {
            ok.push(format!(
                "`{}` as the string {} at {}:{} (the lock call takes it through a variable)",
                entry.template, c.text, c.file, c.line
            ));
        } else {
            problems.push(name_problem(entry, &expected, &at_lock, &literals));
        }
    }

    let mut where_ok = Vec::new();
    for method in &entry.methods {
        let defs: Vec<_> = src.defs(method).collect();
        if defs.is_empty() {
            problems.push(format!(
                "`where` function `{method}` is not defined in {}{}",
                entry.file,
                near_functions(&src, method, false)
            ));
        } else if let Some(f) = defs.iter().find(|f| src.takes_lock(f)) {
            if used(corpus, method) {
                where_ok.push(format!("{method} (line {})", f.line));
            } else {
                problems.push(format!(
                    "`where` function `{method}` (line {}) of {} takes a lock but nothing in the \
                     tree (tests left out) uses it",
                    f.line, entry.file
                ));
            }
        } else {
            problems.push(format!(
                "`where` function `{method}` (line {}) of {} takes no lock{}",
                defs[0].line,
                entry.file,
                near_functions(&src, method, true)
            ));
        }
    }
    if !problems.is_empty() {
        return Ok(Verdict::Mismatch(problems));
    }
    if !where_ok.is_empty() {
        ok.push(format!("where: {}", where_ok.join(", ")));
    }
    if let Some(version) = &entry.removed_upstream {
        ok.push(format!(
            "(the catalog marks it gone from Cinder {version}; this tree still has it)"
        ));
    }
    Ok(Verdict::Ok(ok.join("; ")))
}

/// `file:line `expr`` and the assignments followed.
fn place(c: &Candidate) -> String {
    let mut out = format!("{}:{} `{}`", c.file, c.line, one_line(&c.text));
    if !c.via.is_empty() {
        out.push_str(" via ");
        out.push_str(
            &c.via
                .iter()
                .map(|v| one_line(v))
                .collect::<Vec<_>>()
                .join(", "),
        );
    }
    out
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

fn quoted(names: &[String]) -> String {
    names
        .iter()
        .map(|m| format!("`{m}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The report for a name not found: the lock names the file builds, nearest first.
fn name_problem(
    entry: &CatalogEntry,
    expected: &Shape,
    at_lock: &[Candidate],
    literals: &[Candidate],
) -> String {
    let files = match &entry.name_file {
        Some(n) => format!("{} (with {n})", entry.file),
        None => entry.file.clone(),
    };
    let key = expected.key();
    let rank = |c: &&Candidate| {
        let exact_ci = c.shape.key().to_lowercase() == key.to_lowercase();
        (!exact_ci, distance(&key, &c.shape.key()))
    };
    let mut pool: Vec<&Candidate> = at_lock
        .iter()
        .filter(|c| c.shape.has_text() || !expected.has_text())
        .collect();
    let from_calls = !pool.is_empty();
    if !from_calls {
        pool = literals
            .iter()
            .filter(|c| c.shape.has_text() && distance(&key, &c.shape.key()) <= key.len() / 2)
            .collect();
    }
    pool.sort_by_key(rank);
    pool.dedup_by(|a, b| a.shape == b.shape);
    let mut out = format!("name `{}` is not built in {files}", entry.template);
    match pool.first() {
        None if at_lock.is_empty() => out.push_str(": it has no lock call"),
        None => out.push_str(&format!(
            ": its lock calls build only names fixed at run time ({})",
            at_lock
                .iter()
                .map(|c| format!("line {} `{}`", c.line, one_line(&c.text)))
                .collect::<Vec<_>>()
                .join(", ")
        )),
        Some(best) => {
            let case = if best.shape.key().to_lowercase() == key.to_lowercase() {
                " (differs only in case)"
            } else {
                ""
            };
            let what = if from_calls {
                "its nearest lock name"
            } else {
                "no lock call builds it; nearest string"
            };
            out.push_str(&format!(
                "; {what}: `{}`{case} at {}",
                best.shape,
                place(best)
            ));
            let others: Vec<String> = pool[1..]
                .iter()
                .take(2)
                .map(|c| format!("`{}` (line {})", c.shape, c.line))
                .collect();
            if !others.is_empty() {
                out.push_str(&format!("; also {}", others.join(", ")));
            }
        }
    }
    out
}

/// What the file has instead of `method`: the functions that take a lock,
/// nearest first (or, when none does, defined functions of a similar name).
fn near_functions(src: &Source, method: &str, exists: bool) -> String {
    let mut locked: Vec<_> = src
        .functions
        .iter()
        .filter(|f| src.takes_lock(f) && f.name != method)
        .collect();
    locked.sort_by_key(|f| distance(method, &f.name));
    locked.dedup_by(|a, b| a.name == b.name);
    if !locked.is_empty() {
        let list: Vec<String> = locked
            .iter()
            .take(3)
            .map(|f| format!("`{}` (line {})", f.name, f.line))
            .collect();
        return format!("; functions there that take a lock: {}", list.join(", "));
    }
    if exists {
        return "; no function there takes a lock".to_owned();
    }
    let mut similar: Vec<_> = src
        .functions
        .iter()
        .filter(|f| distance(method, &f.name) <= method.len() / 3 + 1)
        .collect();
    similar.sort_by_key(|f| distance(method, &f.name));
    match similar.first() {
        Some(f) => format!(
            "; nearest function there: `{}` (line {}), and no function there takes a lock",
            f.name, f.line
        ),
        None => "; no function there takes a lock".to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_path_that_is_not_a_tree_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let err = Tree::open(&dir.path().join("nope")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        assert!(
            err.message().contains("does not exist"),
            "{}",
            err.message()
        );
        let err = Tree::open(dir.path()).unwrap_err();
        assert!(
            err.message().contains("contains `cinder/`"),
            "{}",
            err.message()
        );
    }

    #[test]
    fn the_package_dir_itself_and_the_version_are_found() {
        let dir = tempfile::tempdir().unwrap();
        let pkg = dir.path().join("cinder");
        std::fs::create_dir_all(pkg.join("volume")).unwrap();
        std::fs::write(pkg.join("__init__.py"), "").unwrap();
        std::fs::create_dir(dir.path().join("cinder-29.0.0.dist-info")).unwrap();
        let tree = Tree::open(&pkg).unwrap();
        assert_eq!(tree.version.as_deref(), Some("29.0.0"));
        assert!(tree.describe().starts_with("Cinder 29.0.0 at "));
        let tree = Tree::open(dir.path()).unwrap();
        assert_eq!(tree.version.as_deref(), Some("29.0.0"));
    }
}
