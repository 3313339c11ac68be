//! `locks catalog doc`: the catalog as a reference document, in the shape of
//! Cinder's "Drivers Locking Examples".

use std::fmt::Write;

use locks::{Catalog, CatalogEntry};

/// Output format of `locks catalog doc`.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub(crate) enum Format {
    /// reStructuredText, like the Cinder document.
    Rst,
    /// Markdown.
    Md,
}

const INTRO: &str = "This document presents an incomplete list of locks being currently used in \
driver related code (main driver code, helper classes and method, etc.), to serve as a reference \
to other driver developers.";

const NOTE: &str = "Please keep in mind that Cinder drivers may support different deployment \
options. Some may only support running one backend on each node. Others may support running \
multiple backends in a single node. And some may even support Active-Active deployments. \
Therefore these references are not necessarily examples of how drivers achieve Active-Active.";

/// A literal name is quoted as Cinder writes it (`'lioadm'`); a template is not.
fn name_text(e: &CatalogEntry) -> String {
    if e.template.is_literal() {
        format!("'{}'", e.template)
    } else {
        e.template.to_string()
    }
}

fn where_text(e: &CatalogEntry) -> String {
    let quoted: Vec<String> = e.methods.iter().map(|m| format!("`{m}`")).collect();
    let decorators = e.methods.iter().all(|m| m.starts_with("locked_"));
    let kind = match (decorators, e.methods.len() > 1) {
        (true, true) => "decorators",
        (true, false) => "decorator",
        (false, true) => "methods",
        (false, false) => "method",
    };
    match quoted.as_slice() {
        [] => "(not recorded)".to_owned(),
        [one] => format!("{one} {kind}"),
        [init @ .., last] => format!("{} and {last} {kind}", init.join(", ")),
    }
}

/// The lines the catalog adds to the seed's shape: where the name is built, removal upstream.
fn extra_items(e: &CatalogEntry) -> Vec<String> {
    let mut items = Vec::new();
    if let Some(file) = &e.name_file {
        items.push(format!("Name built in: `{file}`."));
    }
    if let Some(version) = &e.removed_upstream {
        items.push(format!(
            "Removed upstream: the file is gone from Cinder {version}."
        ));
    }
    items
}

fn sentence(text: &str) -> String {
    let text = text.trim();
    if text.ends_with('.') {
        text.to_owned()
    } else {
        format!("{text}.")
    }
}

/// Renders the whole catalog.
pub(crate) fn render(catalog: &Catalog, format: Format) -> String {
    let mut out = String::new();
    let title = catalog.title();
    match format {
        Format::Rst => {
            let _ = writeln!(
                out,
                "{title}\n{}\n\n{INTRO}\n\n.. note:: {NOTE}\n",
                "=".repeat(title.len())
            );
            for e in catalog.entries() {
                let _ = writeln!(out, "{}", e.driver);
                let _ = writeln!(out, "  - Lock scope: {}.", e.scope.title());
                let _ = writeln!(
                    out,
                    "  - Critical section: {}",
                    sentence(&e.critical_section)
                );
                let _ = writeln!(out, "  - Lock name: `{}`.", name_text(e));
                let _ = writeln!(out, "  - Where: {}.", where_text(e));
                let _ = writeln!(out, "  - File: `{}`.", e.file);
                let _ = writeln!(out, "  - Catalog id: `{}`.", e.id);
                for item in extra_items(e) {
                    let _ = writeln!(out, "  - {item}");
                }
                if let Some(notes) = &e.notes {
                    let _ = writeln!(out, "  - Notes: {}", sentence(notes));
                }
                out.push('\n');
            }
            if !catalog.other_files().is_empty() {
                let heading = "Other files";
                let _ = writeln!(
                    out,
                    "\n{heading}\n{}\n\nOther files that also make use of the locking mechanisms, and can be \
                     useful as reference, are:\n",
                    "-".repeat(heading.len())
                );
                for f in catalog.other_files() {
                    let _ = writeln!(out, "- `{f}`");
                }
            }
        }
        Format::Md => {
            let _ = writeln!(out, "# {title}\n\n{INTRO}\n\n> **Note:** {NOTE}\n");
            for e in catalog.entries() {
                let _ = writeln!(out, "## {} (`{}`)\n", e.driver, e.id);
                let _ = writeln!(out, "- Lock scope: {}.", e.scope.title());
                let _ = writeln!(out, "- Critical section: {}", sentence(&e.critical_section));
                let _ = writeln!(out, "- Lock name: `{}`.", name_text(e));
                let _ = writeln!(out, "- Where: {}.", where_text(e));
                let _ = writeln!(out, "- File: `{}`.", e.file);
                for item in extra_items(e) {
                    let _ = writeln!(out, "- {item}");
                }
                if let Some(notes) = &e.notes {
                    let _ = writeln!(out, "- Notes: {}", sentence(notes));
                }
                out.push('\n');
            }
            if !catalog.other_files().is_empty() {
                let _ = writeln!(
                    out,
                    "## Other files\n\nOther files that also make use of the locking mechanisms, and can be \
                     useful as reference, are:\n"
                );
                for f in catalog.other_files() {
                    let _ = writeln!(out, "- `{f}`");
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rst_carries_every_entry_like_the_seed() {
        let text = render(Catalog::cinder(), Format::Rst);
        assert!(text.starts_with("Drivers Locking Examples\n========================\n"));
        assert!(text.contains("LIO target\n  - Lock scope: Node.\n  - Critical section: Calls to `cinder-rtstool` CLI.\n  - Lock name: `'lioadm'`.\n  - Where: `_execute` method.\n  - File: `cinder/volume/targets/lio.py`."));
        assert!(text.contains("  - Lock name: `solidfire-{resource_id}`.\n  - Where: `locked_source_id_operation` decorator."));
        assert!(text.contains("  - Lock name: `Kaminario-{san_ip}`."));
        assert!(!text.contains("  - Lock name: `kaminario-"));
        assert!(text.contains(
            "  - Catalog id: `hgst`.\n  - Removed upstream: the file is gone from Cinder 29.0.0.\n"
        ));
        assert!(text.contains(
            "  - Name built in: `cinder/volume/drivers/kaminario/kaminario_common.py`.\n"
        ));
        assert!(text.contains("Other files\n-----------\n"));
        assert!(text.contains("- `cinder/volume/drivers/netapp/dataontap/nfs_base.py`"));
    }

    #[test]
    fn markdown_has_a_section_per_entry() {
        let text = render(Catalog::cinder(), Format::Md);
        assert_eq!(
            text.matches("\n## ").count(),
            Catalog::cinder().entries().len() + 1
        );
        assert!(text.contains("## Dothill (`dothill-map`)"));
    }
}
