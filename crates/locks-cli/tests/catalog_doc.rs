//! `locks catalog doc` regenerates the seed reference document ("Drivers
//! Locking Examples") from the catalog: every entry of the seed, with its
//! driver, scope, critical section, lock name, where and file, and every path
//! of its "Other files" list, must be in the reStructuredText output, and
//! every entry in the Markdown output.
//!
//! The seed lives beside the repository (`../shared/seed/...`). A checkout
//! without it checks the twelve catalog ids instead, and says so.

use std::path::Path;
use std::process::Command;

const SEED: &str = concat!(
    env!("CARGO_MANIFEST_DIR"),
    "/../../../shared/seed/drivers-locking-examples.rst"
);

const CATALOG_IDS: [&str; 12] = [
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
/// period removed. The seed's `'hgst'devices'` has a stray quote inside; it
/// is read as the separator the catalog writes (`hgst-devices`, see the
/// catalog's note on that entry).
fn name(s: &str) -> String {
    let s = text(s);
    let s = s.trim_matches('`');
    let s = s
        .strip_prefix('\'')
        .and_then(|s| s.strip_suffix('\''))
        .unwrap_or(s);
    s.replace('\'', "-")
}

/// The `identifiers` of a "Where:" item, sorted.
fn methods(s: &str) -> Vec<String> {
    let mut out: Vec<String> = s.split('`').skip(1).step_by(2).map(str::to_owned).collect();
    out.sort();
    out
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
        if let Some(e) = entry(lines[i - 1], &items(&lines[i..end])) {
            out.push(e);
        }
    }
    out
}

/// The entries of the Markdown document: `## Driver (`id`)` sections.
fn md_entries(doc: &str) -> Vec<Entry> {
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
        let driver = heading.split(" (`").next().unwrap_or(heading);
        if let Some(e) = entry(driver, &items(&lines[i + 1..end])) {
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

/// Each of `expected` matched with a distinct entry of `rendered` (the seed
/// repeats drivers); returns what is missing.
fn missing(expected: &[Entry], rendered: &[Entry]) -> Vec<String> {
    let mut left: Vec<&Entry> = rendered.iter().collect();
    let mut out = Vec::new();
    for e in expected {
        match left.iter().position(|r| *r == e) {
            Some(i) => {
                left.remove(i);
            }
            None => out.push(format!("{e:?}")),
        }
    }
    out
}

#[test]
fn rst_and_markdown_carry_every_seed_entry() {
    let rst = doc("rst");
    let md = doc("md");
    let rendered_rst = rst_entries(&rst);
    let rendered_md = md_entries(&md);
    assert_eq!(rendered_rst.len(), CATALOG_IDS.len(), "{rst}");
    assert_eq!(rendered_md.len(), CATALOG_IDS.len(), "{md}");

    if !Path::new(SEED).exists() {
        eprintln!("mode: catalog ids (no seed document at {SEED})");
        for id in CATALOG_IDS {
            assert!(
                rst.contains(&format!("Catalog id: `{id}`.")),
                "rst lacks {id}"
            );
            assert!(md.contains(&format!("(`{id}`)")), "md lacks {id}");
        }
        assert!(!other_files(&rst).is_empty(), "rst lacks the other files");
        assert!(!other_files(&md).is_empty(), "md lacks the other files");
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
    assert_eq!(
        seed.len(),
        CATALOG_IDS.len(),
        "the seed parses to every entry"
    );
    assert!(!seed_files.is_empty(), "the seed parses to its other files");
    assert!(rst.starts_with("Drivers Locking Examples\n========================\n"));

    let lost = missing(&seed, &rendered_rst);
    assert!(
        lost.is_empty(),
        "rst lacks seed entries:\n{}\n---\n{rst}",
        lost.join("\n")
    );
    let lost = missing(&seed, &rendered_md);
    assert!(
        lost.is_empty(),
        "md lacks seed entries:\n{}\n---\n{md}",
        lost.join("\n")
    );
    for (format, doc) in [("rst", &rst), ("md", &md)] {
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
            name: "hgst-devices".into(),
            methods: vec!["create_volume".into()],
            file: "cinder/volume/drivers/hgst.py".into(),
        }]
    );
    assert_eq!(other_files(sample), ["a/b.py"]);
}
