//! The built-in catalog as the attribute sees it at compile time: each
//! entry's id and name template, read from `catalog/cinder.toml` with a small
//! line scanner (the attribute needs two keys, not a TOML parser).

/// The catalog text, embedded so a change to it recompiles the attribute.
pub(crate) const CINDER_TOML: &str = include_str!("../../../catalog/cinder.toml");

/// One `[[lock]]` entry: its id and its name template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) id: String,
    pub(crate) template: String,
}

/// The `[[lock]]` entries of `text` that have both an `id` and a `name`.
pub(crate) fn entries(text: &str) -> Vec<Entry> {
    let mut out = Vec::new();
    let mut current: Option<(Option<String>, Option<String>)> = None;
    let mut in_multiline = false;
    let finish = |current: Option<(Option<String>, Option<String>)>, out: &mut Vec<Entry>| {
        if let Some((Some(id), Some(template))) = current {
            out.push(Entry { id, template });
        }
    };
    for line in text.lines() {
        if in_multiline {
            if line.matches("\"\"\"").count() % 2 == 1 {
                in_multiline = false;
            }
            continue;
        }
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        if trimmed.starts_with('[') {
            finish(current.take(), &mut out);
            if trimmed.trim_end_matches(|c: char| c != ']') == "[[lock]]" {
                current = Some((None, None));
            }
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            continue;
        };
        let (key, value) = (key.trim(), value.trim());
        if value.starts_with("\"\"\"") || value.starts_with("'''") {
            let delimiter = &value[..3];
            if !value[3..].contains(delimiter) {
                in_multiline = true;
            }
            continue;
        }
        if let Some((id, template)) = current.as_mut() {
            match key {
                "id" => *id = string_value(value),
                "name" => *template = string_value(value),
                _ => {}
            }
        }
    }
    finish(current, &mut out);
    out
}

/// A one-line TOML basic (`"..."`) or literal (`'...'`) string.
fn string_value(value: &str) -> Option<String> {
    let mut chars = value.chars();
    match chars.next()? {
        '\'' => {
            let rest = chars.as_str();
            rest.find('\'').map(|end| rest[..end].to_owned())
        }
        '"' => {
            let mut out = String::new();
            while let Some(c) = chars.next() {
                match c {
                    '"' => return Some(out),
                    '\\' => match chars.next()? {
                        'n' => out.push('\n'),
                        't' => out.push('\t'),
                        'r' => out.push('\r'),
                        'u' => {
                            let hex: String = chars.by_ref().take(4).collect();
                            out.push(char::from_u32(u32::from_str_radix(&hex, 16).ok()?)?);
                        }
                        other => out.push(other),
                    },
                    other => out.push(other),
                }
            }
            None
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scan_agrees_with_the_catalog_parser() {
        let scanned = entries(CINDER_TOML);
        let parsed: Vec<Entry> = locks_core::Catalog::cinder()
            .entries()
            .iter()
            .map(|e| Entry {
                id: e.id.clone(),
                template: e.template.as_str().to_owned(),
            })
            .collect();
        assert_eq!(scanned, parsed);
        // The seed document's twelve entries and Cinder 29.0.0's two STX ones.
        assert_eq!(scanned.len(), 14);
    }

    #[test]
    fn multiline_strings_and_other_tables_are_skipped() {
        let text = "title = \"t\"\n[[lock]]\nid = \"a\"\nnotes = \"\"\"\nname = \"not-this\"\n\"\"\"\nname = 'a-{x}'\n\
                    [other]\nid = \"b\"\nname = \"b\"\n[[lock]]\nname = \"c-\\\"q\\\"\"\nid = \"c\" # comment\n";
        assert_eq!(
            entries(text),
            vec![
                Entry {
                    id: "a".into(),
                    template: "a-{x}".into()
                },
                Entry {
                    id: "c".into(),
                    template: "c-\"q\"".into()
                },
            ]
        );
    }
}
