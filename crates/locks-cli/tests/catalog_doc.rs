//! `locks catalog doc` regenerates the seed reference document ("Drivers
//! Locking Examples") from the catalog: every entry of the seed, with its
//! driver, scope, critical section, lock name, where and file, and every path
//! of its "Other files" list, is in the reStructuredText output, and every
//! entry in the Markdown output.
//!
//! Where the seed is wrong about Cinder 29.0.0 the catalog follows the code, so
//! the regenerated document differs from the seed. Each such difference is
//! listed in [`DELIBERATE`], and the entry's notes in the generated document
//! quote what the seed says: the set of differences must be exactly that
//! list, so an accidental one fails.
//!
//! The seed lives beside the repository (`../shared/seed/...`). A checkout
//! without it checks the catalog ids and notes only, and says so.

use std::path::Path;
use std::process::Command;

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/seed/drivers-locking-examples.rst"
);

/// The catalog ids, in order: the seed document's twelve entries, then the
/// ones the seed lacks.
const CATALOG_IDS: [&str; 14] = [
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

/// How many of [`CATALOG_IDS`] are the seed's entries, in the seed's order.
const SEED_ENTRIES: usize = 12;

/// Every way the regenerated document departs from the seed: catalog id, the
/// field that differs (`added` for an entry the seed lacks, `removed` for a
/// driver gone upstream), and the text the entry's notes must hold to say
/// what changed (for a field, a quote of the seed's text).
const DELIBERATE: [(&str, &str, &str); 12] = [
    ("nvmet", "methods", "delete_nvmeof_target"),
    ("hgst", "name", "'hgst'devices'"),
    ("hgst", "removed", "gone from Cinder 29.0.0"),
    (
        "solidfire",
        "critical_section",
        "creating volume from an image",
    ),
    ("solidfire", "methods", "locked_image_id_operation"),
    ("infinidat", "methods", "`initialize_connection`"),
    ("kaminario-fc", "name", "kaminario-{san_ip}"),
    ("kaminario-iscsi", "name", "kaminario-{san_ip}"),
    ("dothill-api", "removed", "gone from Cinder 29.0.0"),
    ("dothill-map", "removed", "gone from Cinder 29.0.0"),
    ("stx-api", "added", "not in the seed document"),
    ("stx-map", "added", "not in the seed document"),
];

/// One entry of the document, normalized for comparison.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    driver: String,
    scope: String,
    critical_section: String,
    name: String,
    methods: Vec<String>,
    file: String,
}

/// An entry of a generated document: the compared fields, and the catalog's additions.
#[derive(Debug, Clone)]
struct Rendered {
    entry: Entry,
    id: String,
    notes: String,
    removed: bool,
}

fn doc(format: &str) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_locks"))
        .env_remove("LOCKS_CONFIG")
        .args(["catalog", "doc", "--format", format])
        .output()
        .expect("running locks catalog doc");
    assert!(
        output.status.success(),
        "locks catalog doc --format {format}: {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8 output")
}

/// Whitespace collapsed, one trailing period dropped.
fn text(s: &str) -> String {
    let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
    s.strip_suffix('.').unwrap_or(&s).to_owned()
}

/// A lock name as written: backticks, surrounding quotes and a trailing
/// period removed. The seed's `'hgst'devices'` keeps its stray quote
/// (`hgst'devices`): a deliberate difference from the catalog's `hgst-devices`.
fn name(s: &str) -> String {
    let s = text(s);
    let s = s.trim_matches('`');
    s.strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(s)
        .to_owned()
}

/// The `identifiers` of a "Where:" item, sorted.
fn methods(s: &str) -> Vec<String> {
    let mut out: Vec<String> = s.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    out.sort();
    out
}

fn rendered(driver: &str, id: Option<&str>, items: &[(String, String)]) -> Option<Rendered> {
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    Some(Rendered {
        entry: entry(driver, items)?,
        id: id
            .or_else(|| get("Catalog id"))?
            .trim_matches(['`', '.'])
            .to_owned(),
        notes: get("Notes").unwrap_or("").to_owned(),
        removed: get("Removed upstream").is_some(),
    })
}

fn entry(driver: &str, items: &[(String, String)]) -> Option<Entry> {
    let get = |key: &str| {
        items
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    };
    Some(Entry {
        driver: driver.trim().trim_end_matches(':').trim().to_owned(),
        scope: text(get("Lock scope")?),
        critical_section: text(get("Critical section")?),
        name: name(get("Lock name")?),
        methods: methods(get("Where")?),
        file: text(get("File")?).trim_matches('`').to_owned(),
    })
}

/// `- Key: value` items, continuation lines joined.
fn items(lines: &[&str]) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in lines {
        let trimmed = line.trim_start();
        if let Some(item) = trimmed.strip_prefix("- ") {
            let (key, value) = item.split_once(':').unwrap_or((item, ""));
            out.push((key.trim().to_owned(), value.trim().to_owned()));
        } else if let Some(last) = out.last_mut()
            && !trimmed.is_empty()
        {
            last.1.push(' ');
            last.1.push_str(trimmed);
        }
    }
    out
}

/// The entries of a reStructuredText document in the seed's shape: a driver
/// line, then an indented list that starts with "Lock scope".
fn rst_entries(doc: &str) -> Vec<Entry> {
    rst_items(doc)
        .into_iter()
        .filter_map(|(driver, items)| entry(&driver, &items))
        .collect()
}

/// The entries of a generated reStructuredText document, with their ids and notes.
fn rst_rendered(doc: &str) -> Vec<Rendered> {
    rst_items(doc)
        .into_iter()
        .filter_map(|(driver, items)| rendered(&driver, None, &items))
        .collect()
}

/// The driver line and items of each entry of a reStructuredText document.
fn rst_items(doc: &str) -> Vec<(String, Vec<(String, String)>)> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        if !line.trim_start().starts_with("- Lock scope:") || !line.starts_with(' ') || i == 0 {
            continue;
        }
        let end = lines[i..]
            .iter()
            .position(|l| !l.starts_with(' ') || l.trim().is_empty())
            .map_or(lines.len(), |n| i + n);
        out.push((lines[i - 1].to_owned(), items(&lines[i..end])));
    }
    out
}

/// The entries of the Markdown document: `## Driver (`id`)` sections.
fn md_entries(doc: &str) -> Vec<Rendered> {
    let lines: Vec<&str> = doc.lines().collect();
    let mut out = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(heading) = line.strip_prefix("## ") else {
            continue;
        };
        let end = lines[i + 1..]
            .iter()
            .position(|l| l.starts_with("## "))
            .map_or(lines.len(), |n| i + 1 + n);
        let (driver, id) = heading.split_once(" (`").unwrap_or((heading, ""));
        let id = id.trim_end_matches(['`', ')']);
        if let Some(e) = rendered(driver, Some(id), &items(&lines[i + 1..end])) {
            out.push(e);
        }
    }
    out
}

/// The paths listed under "Other files".
fn other_files(doc: &str) -> Vec<String> {
    let Some(at) = doc.find("Other files") else {
        return Vec::new();
    };
    doc[at..]
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- `"))
        .filter_map(|l| l.strip_suffix('`'))
        .map(str::to_owned)
        .collect()
}

/// The fields in which the seed's entry and the regenerated one differ.
fn differences(seed: &Entry, ours: &Entry) -> Vec<&'static str> {
    let fields = [
        ("driver", seed.driver == ours.driver),
        ("scope", seed.scope == ours.scope),
        (
            "critical_section",
            seed.critical_section == ours.critical_section,
        ),
        ("name", seed.name == ours.name),
        ("methods", seed.methods == ours.methods),
        ("file", seed.file == ours.file),
    ];
    fields
        .into_iter()
        .filter(|(_, same)| !same)
        .map(|(field, _)| field)
        .collect()
}

/// The seed's text of `field`, for checking that a note quotes it.
fn seed_field(e: &Entry, field: &str) -> Option<String> {
    Some(match field {
        "driver" => e.driver.clone(),
        "scope" => e.scope.clone(),
        "critical_section" => e.critical_section.clone(),
        "name" => e.name.clone(),
        "methods" => e.methods.join(" "),
        "file" => e.file.clone(),
        _ => return None,
    })
}

#[test]
fn rst_and_markdown_carry_every_catalog_entry() {
    let rst = doc("rst");
    let md = doc("md");
    assert!(rst.starts_with("Drivers Locking Examples\n========================\n"));
    let ours = rst_rendered(&rst);
    let ids: Vec<&str> = ours.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(ids, CATALOG_IDS, "{rst}");
    let in_md = md_entries(&md);
    assert_eq!(in_md.len(), ours.len(), "{md}");
    for (r, m) in ours.iter().zip(&in_md) {
        assert_eq!(
            (&r.id, &r.entry, &r.notes, r.removed),
            (&m.id, &m.entry, &m.notes, m.removed),
            "rst and md disagree"
        );
    }
    assert!(!other_files(&rst).is_empty(), "rst lacks the other files");
    assert_eq!(other_files(&rst), other_files(&md));
}

#[test]
fn the_regenerated_seed_differs_from_the_seed_exactly_where_documented() {
    let rst = doc("rst");
    let ours = rst_rendered(&rst);
    let by_id = |id: &str| {
        ours.iter()
            .find(|r| r.id == id)
            .unwrap_or_else(|| panic!("no entry `{id}` in\n{rst}"))
    };
    // Whatever the seed: each deliberate difference is explained in its entry's notes.
    for (id, field, quote) in DELIBERATE {
        let notes = by_id(id).notes.to_lowercase();
        assert!(
            notes.contains(&quote.to_lowercase()),
            "{id} ({field}): the notes must say what changed, quoting {quote:?}: {notes}"
        );
    }

    if !Path::new(SEED).exists() {
        eprintln!("mode: catalog ids and notes only (no seed document at {SEED})");
        return;
    }
    let seed_text = std::fs::read_to_string(SEED).expect("reading the seed document");
    let seed = rst_entries(&seed_text);
    let seed_files = other_files(&seed_text);
    eprintln!(
        "mode: seed document {SEED}: {} entries, {} other files",
        seed.len(),
        seed_files.len()
    );
    assert_eq!(seed.len(), SEED_ENTRIES, "the seed parses to every entry");
    assert!(!seed_files.is_empty(), "the seed parses to its other files");

    let mut found: Vec<(String, String)> = Vec::new();
    for (i, r) in ours.iter().enumerate() {
        let fields = match seed.get(i) {
            Some(s) if i < SEED_ENTRIES => differences(s, &r.entry),
            _ => vec!["added"],
        };
        found.extend(fields.into_iter().map(|f| (r.id.clone(), f.to_owned())));
        if r.removed {
            found.push((r.id.clone(), "removed".to_owned()));
        }
    }
    let mut expected: Vec<(String, String)> = DELIBERATE
        .iter()
        .map(|(id, field, _)| ((*id).to_owned(), (*field).to_owned()))
        .collect();
    found.sort();
    expected.sort();
    assert_eq!(
        found, expected,
        "the differences between the seed and the regenerated document must be exactly the \
         documented ones (DELIBERATE); add a new one there and in the entry's notes only if the \
         seed is wrong about Cinder\n---\n{rst}"
    );
    // The notes quote what the seed really says.
    for (id, field, quote) in DELIBERATE {
        let Some(i) = CATALOG_IDS[..SEED_ENTRIES].iter().position(|c| *c == id) else {
            continue;
        };
        if let Some(text) = seed_field(&seed[i], field) {
            let quote = quote.trim_matches(['`', '\'']).to_lowercase();
            assert!(
                text.to_lowercase().contains(&quote),
                "{id} ({field}): the seed says {text:?}, not {quote:?}"
            );
        }
    }
    for (format, doc) in [("rst", &rst), ("md", &doc("md"))] {
        let files = other_files(doc);
        let lost: Vec<&String> = seed_files.iter().filter(|f| !files.contains(f)).collect();
        assert!(lost.is_empty(), "{format} lacks other files: {lost:?}");
    }
}

#[test]
fn the_parser_reads_the_seed_shape() {
    let sample = "Intro\n\nHGST driver:\n  - Lock scope: Process.\n  - Critical section: Create volume\n    operation.\n  \
                  - Lock name: `'hgst'devices'`.\n  - Where: `create_volume` method.\n  - File: `cinder/volume/drivers/hgst.py`.\n\n\
                  Other files\n-----------\n\n- `a/b.py`\n";
    let entries = rst_entries(sample);
    assert_eq!(
        entries,
        vec![Entry {
            driver: "HGST driver".into(),
            scope: "Process".into(),
            critical_section: "Create volume operation".into(),
            name: "hgst'devices".into(),
            methods: vec!["create_volume".into()],
            file: "cinder/volume/drivers/hgst.py".into(),
        }]
    );
    assert_eq!(other_files(sample), ["a/b.py"]);
}
