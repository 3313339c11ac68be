//! Property tests (fuzzing) of the parsers of untrusted text: name templates,
//! lock names and the catalog loader. Whatever the input, they never panic and
//! every failure is a typed error of the documented kind. The corpus is seeded
//! with the real templates and the real catalog (catalog/cinder.toml),
//! mutated by random inserts, deletes and replacements.

use locks_core::{CINDER_CATALOG_TOML, Catalog, ErrorKind, LockName, NameTemplate, Params};
use proptest::prelude::*;

/// Characters that matter to the parsers, plus a few that should not.
const INTERESTING: &[char] = &[
    '{', '}', '{', '}', '.', '[', ']', '_', '-', '/', ' ', '\0', '\n', '\t', '\u{7f}', 'é', '"',
    '\'', '=', '#', '\\', '0', 'a',
];

/// One edit at a relative position: insert, delete or replace a character.
#[derive(Debug, Clone)]
enum Edit {
    Insert(f64, char),
    Delete(f64),
    Replace(f64, char),
}

fn interesting_char() -> impl Strategy<Value = char> {
    prop_oneof![
        4 => proptest::sample::select(INTERESTING),
        1 => any::<char>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        (0.0..=1.0f64, interesting_char()).prop_map(|(p, c)| Edit::Insert(p, c)),
        (0.0..=1.0f64).prop_map(Edit::Delete),
        (0.0..=1.0f64, interesting_char()).prop_map(|(p, c)| Edit::Replace(p, c)),
    ]
}

/// Applies `edits` to `seed`, on character boundaries.
fn mutate(seed: &str, edits: &[Edit]) -> String {
    let mut chars: Vec<char> = seed.chars().collect();
    let at = |p: f64, len: usize| {
        // A relative position in 0..=len; the cast cannot overflow for p in [0, 1].
        #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
        let i = (p * len as f64) as usize;
        i.min(len)
    };
    for edit in edits {
        match *edit {
            Edit::Insert(p, c) => {
                let i = at(p, chars.len());
                chars.insert(i, c);
            }
            Edit::Delete(p) if !chars.is_empty() => {
                let i = at(p, chars.len() - 1);
                chars.remove(i);
            }
            Edit::Replace(p, c) if !chars.is_empty() => {
                let i = at(p, chars.len() - 1);
                chars[i] = c;
            }
            Edit::Delete(_) | Edit::Replace(..) => {}
        }
    }
    chars.into_iter().collect()
}

/// The templates of the built-in catalog, plus a few shapes it lacks.
fn seed_templates() -> Vec<String> {
    let mut seeds: Vec<String> = Catalog::cinder()
        .entries()
        .iter()
        .map(|e| e.template.as_str().to_owned())
        .collect();
    seeds.extend(
        [
            "{client.host}-{connector[host]}",
            "{{literal}}-{x}",
            "lock-{a}{b}",
            "plain",
        ]
        .map(str::to_owned),
    );
    seeds
}

/// Parses `source` and, when it parses, renders it with `value` for every
/// parameter, with none, and with an extra one: only documented error kinds.
fn check_template(source: &str, value: &str) -> Result<(), TestCaseError> {
    let template = match NameTemplate::parse(source) {
        Ok(t) => t,
        Err(e) => {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidTemplate, "{}", e.report());
            prop_assert!(!e.to_string().is_empty());
            return Ok(());
        }
    };
    prop_assert_eq!(template.as_str(), source);
    prop_assert_eq!(
        &NameTemplate::parse(template.as_str()).expect("reparses"),
        &template
    );

    let mut params = Params::new();
    for p in template.parameters() {
        params.insert(p, value);
    }
    match template.render(&params) {
        Ok(name) => prop_assert!(LockName::new(name.as_str()).is_ok()),
        Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidName, "{}", e.report()),
    }
    match template.render(&Params::new()) {
        Ok(_) => prop_assert!(template.parameters().next().is_none()),
        Err(e) => prop_assert!(
            matches!(
                e.kind(),
                ErrorKind::MissingParameter | ErrorKind::InvalidName
            ),
            "{}",
            e.report()
        ),
    }
    let extra = params.clone().with("surely_not_a_parameter_42", "x");
    let e = template.render(&extra).expect_err("an unknown parameter");
    prop_assert_eq!(e.kind(), ErrorKind::UnknownParameter, "{}", e.report());
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_templates_never_panic(source in any::<String>(), value in any::<String>()) {
        check_template(&source, &value)?;
    }

    #[test]
    fn brace_heavy_templates_never_panic(
        source in "[{}a-z._\\[\\]0-9-]{0,40}",
        value in "[a-z0-9./-]{0,8}",
    ) {
        check_template(&source, &value)?;
    }

    #[test]
    fn mutated_real_templates_never_panic(
        seed in proptest::sample::select(seed_templates()),
        edits in proptest::collection::vec(edit(), 0..6),
        value in prop_oneof![Just("10.0.0.1".to_owned()), any::<String>()],
    ) {
        check_template(&mutate(&seed, &edits), &value)?;
    }

    #[test]
    fn lock_names_are_valid_or_invalid_name(name in any::<String>(), prefix in any::<String>()) {
        match LockName::new(name.as_str()) {
            Ok(n) => {
                prop_assert!(!n.as_str().is_empty());
                match n.with_prefix(&prefix) {
                    Ok(p) => prop_assert!(p.as_str().ends_with(n.as_str())),
                    Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidName),
                }
            }
            Err(e) => prop_assert_eq!(e.kind(), ErrorKind::InvalidName, "{}", e.report()),
        }
    }
}

/// Loads a catalog text: it parses, or fails with `InvalidCatalog`; a parsed
/// catalog lints, checks and renders without panicking.
fn check_catalog(text: &str, value: &str) -> Result<(), TestCaseError> {
    let catalog = match Catalog::from_toml_str(text) {
        Ok(c) => c,
        Err(e) => {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidCatalog, "{}", e.report());
            return Ok(());
        }
    };
    let _ = catalog.lint();
    if let Err(e) = catalog.check() {
        prop_assert_eq!(e.kind(), ErrorKind::InvalidCatalog, "{}", e.report());
    }
    for entry in catalog.entries() {
        prop_assert!(catalog.get(&entry.id).is_ok());
        let mut params = Params::new();
        for p in entry.template.parameters() {
            params.insert(p, value);
        }
        if let Err(e) = entry.render(&params) {
            prop_assert_eq!(e.kind(), ErrorKind::InvalidName, "{}", e.report());
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn mutated_real_catalogs_never_panic(
        edits in proptest::collection::vec(edit(), 1..8),
        value in "[a-z0-9./-]{1,8}",
    ) {
        check_catalog(&mutate(CINDER_CATALOG_TOML, &edits), &value)?;
    }

    #[test]
    fn small_catalogs_never_panic(
        id in "[a-z{}._ -]{0,12}",
        scope in "(process|node|global|[a-z]{0,6})",
        name in "[a-z{}._\\[\\] -]{0,20}",
        extra in prop_oneof![Just(String::new()), Just("notes = \"n\"\n".to_owned()), Just("bogus = 1\n".to_owned())],
    ) {
        let text = format!(
            "[[lock]]\nid = \"{id}\"\ndriver = \"d\"\nscope = \"{scope}\"\ncritical_section = \"c\"\n\
             name = \"{name}\"\nwhere = [\"m\"]\nfile = \"f.py\"\n{extra}"
        );
        check_catalog(&text, "v")?;
    }

    #[test]
    fn arbitrary_catalog_text_never_panics(text in any::<String>()) {
        check_catalog(&text, "v")?;
    }
}

#[test]
fn the_seeds_are_real() {
    assert!(seed_templates().len() > 10);
    assert!(Catalog::from_toml_str(CINDER_CATALOG_TOML).is_ok());
    for seed in seed_templates() {
        NameTemplate::parse(&seed).expect("every seed parses");
    }
}
