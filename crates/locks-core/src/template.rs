//! Lock-name templates (`solidfire-{resource_id}`), their parameters and the
//! validated names they render to.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use crate::{Error, ErrorKind, Excerpt};

/// The longest lock name accepted, in bytes (after any prefix is applied).
///
/// Backends may take less: lock files (`file://`) allow 255 bytes, refuse
/// `.` and `..`, and map `/` to `_` as oslo.concurrency does, so `a/b` and
/// `a_b` are one lock in Node scope but two in Process scope.
pub const MAX_NAME_LEN: usize = 1024;

/// What is wrong with a template, its parameters, or a lock name.
///
/// Reachable from an [`Error`] through `source()` and `downcast_ref`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TemplateError {
    /// A `{` without its `}`, or a lone `}` (write `{{` and `}}` for literal braces).
    #[error("unbalanced `{brace}` at byte {position} (write `{{{{` or `}}}}` for a literal brace)")]
    UnbalancedBrace {
        /// The brace character.
        brace: char,
        /// Byte offset in the template.
        position: usize,
    },
    /// `{}` with nothing inside.
    #[error(
        "empty placeholder `{{}}` at byte {position}: name the parameter, e.g. `{{volume_id}}`"
    )]
    EmptyPlaceholder {
        /// Byte offset of the `{`.
        position: usize,
    },
    /// A placeholder that is not a parameter name (`{a b}`, `{x:>4}`, `{1}`).
    #[error(
        "invalid placeholder `{{{placeholder}}}` at byte {position}: a parameter name is letters, digits and `_`, \
         dotted (`client.host`) or subscripted (`connector[host]`), not starting with a digit"
    )]
    InvalidPlaceholder {
        /// The text between the braces.
        placeholder: String,
        /// Byte offset of the `{`.
        position: usize,
    },
    /// Rendering needs a parameter that was not given.
    #[error("missing parameter `{name}`")]
    MissingParameter {
        /// The parameter name.
        name: String,
    },
    /// A parameter was given that the template does not use.
    #[error("unknown parameter {name}: the template uses {expected}")]
    UnknownParameter {
        /// The parameter name as the message shows it: in backticks, cut
        /// short when long ([`Excerpt`](crate::Excerpt)).
        name: String,
        /// The parameters the template does use, for the message.
        expected: String,
    },
    /// The name is empty.
    #[error("the lock name is empty")]
    EmptyName,
    /// The name is longer than [`MAX_NAME_LEN`] bytes.
    #[error("the lock name is {len} bytes long; the limit is {max}")]
    NameTooLong {
        /// Its length in bytes.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The name contains NUL or another control character.
    #[error("the lock name contains control character {character:?} at byte {position}")]
    ControlCharacter {
        /// The offending character.
        character: char,
        /// Its byte offset.
        position: usize,
    },
}

impl TemplateError {
    fn kind(&self) -> ErrorKind {
        match self {
            TemplateError::UnbalancedBrace { .. }
            | TemplateError::EmptyPlaceholder { .. }
            | TemplateError::InvalidPlaceholder { .. } => ErrorKind::InvalidTemplate,
            TemplateError::MissingParameter { .. } => ErrorKind::MissingParameter,
            TemplateError::UnknownParameter { .. } => ErrorKind::UnknownParameter,
            TemplateError::EmptyName
            | TemplateError::NameTooLong { .. }
            | TemplateError::ControlCharacter { .. } => ErrorKind::InvalidName,
        }
    }

    fn into_error(self, subject: impl fmt::Display) -> Error {
        Error::new(self.kind(), format!("{subject}: {self}")).with_source(self)
    }
}

/// Parameters a template is rendered with: parameter name to value.
///
/// ```
/// use locks_core::Params;
/// let params = Params::new().with("client.host", "unity-1").with("host_name", "h7");
/// assert_eq!(params.get("host_name"), Some("h7"));
/// let same: Params = [("client.host", "unity-1"), ("host_name", "h7")].into_iter().collect();
/// assert_eq!(params, same);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Params(BTreeMap<String, String>);

impl Params {
    /// No parameters.
    pub fn new() -> Self {
        Params::default()
    }

    /// Adds (or replaces) a parameter, builder style.
    pub fn with(mut self, name: impl Into<String>, value: impl ToString) -> Self {
        self.insert(name, value);
        self
    }

    /// Adds (or replaces) a parameter.
    pub fn insert(&mut self, name: impl Into<String>, value: impl ToString) {
        self.0.insert(name.into(), value.to_string());
    }

    /// The value of a parameter.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// Parameters in name order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// How many parameters there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl<K: Into<String>, V: ToString> FromIterator<(K, V)> for Params {
    fn from_iter<I: IntoIterator<Item = (K, V)>>(iter: I) -> Self {
        let mut params = Params::new();
        for (k, v) in iter {
            params.insert(k, v);
        }
        params
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Param(String),
}

/// A lock-name template such as `infinidat-{management_address}-lock`.
///
/// Placeholders name a parameter in braces; a dotted or subscripted name
/// (`{client.host}`, `{connector[host]}`) is one parameter name, exactly as the
/// caller spells it. `{{` and `}}` stand for literal braces.
///
/// ```
/// use locks_core::{NameTemplate, Params};
/// let t: NameTemplate = "{client.host}-{host_name}".parse()?;
/// assert_eq!(t.parameters().collect::<Vec<_>>(), ["client.host", "host_name"]);
/// let name = t.render(&Params::new().with("client.host", "unity-a").with("host_name", "h1"))?;
/// assert_eq!(name.as_str(), "unity-a-h1");
/// # Ok::<(), locks_core::Error>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NameTemplate {
    source: String,
    parts: Vec<Part>,
}

impl NameTemplate {
    /// Parses a template.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidTemplate`] for an unbalanced brace, an empty
    /// placeholder, or a placeholder that is not a parameter name.
    pub fn parse(source: &str) -> Result<Self, Error> {
        parse_parts(source)
            .map(|parts| NameTemplate {
                source: source.to_owned(),
                parts,
            })
            .map_err(|e| e.into_error(format_args!("template {}", Excerpt::ticked(source))))
    }

    /// The template text as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The distinct parameter names, in order of first use.
    pub fn parameters(&self) -> impl Iterator<Item = &str> {
        let mut seen = BTreeSet::new();
        self.parts.iter().filter_map(move |part| match part {
            Part::Param(name) if seen.insert(name.as_str()) => Some(name.as_str()),
            _ => None,
        })
    }

    /// Whether the template has no placeholders (it always renders the same name).
    pub fn is_literal(&self) -> bool {
        self.parts.iter().all(|p| matches!(p, Part::Literal(_)))
    }

    /// Renders the name for `params`.
    ///
    /// # Errors
    /// [`ErrorKind::MissingParameter`] when a placeholder has no value,
    /// [`ErrorKind::UnknownParameter`] when `params` holds a name the template
    /// does not use, [`ErrorKind::InvalidName`] when the result is not a valid
    /// [`LockName`].
    pub fn render(&self, params: &Params) -> Result<LockName, Error> {
        let subject = format_args!("template {}", Excerpt::ticked(&self.source));
        for (name, _) in params.iter() {
            if !self.parameters().any(|p| p == name) {
                let expected = self
                    .parameters()
                    .map(|p| format!("`{p}`"))
                    .collect::<Vec<_>>();
                let expected = if expected.is_empty() {
                    "no parameters".to_owned()
                } else {
                    expected.join(", ")
                };
                return Err(TemplateError::UnknownParameter {
                    name: Excerpt::ticked(name).to_string(),
                    expected,
                }
                .into_error(subject));
            }
        }
        let mut out = String::with_capacity(self.source.len() + 16);
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Param(name) => match params.get(name) {
                    Some(value) => out.push_str(value),
                    None => {
                        return Err(TemplateError::MissingParameter { name: name.clone() }
                            .into_error(subject));
                    }
                },
            }
        }
        LockName::new(out).map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "template {} rendered {}",
                    Excerpt::ticked(&self.source),
                    e.message()
                ),
            )
            .with_source(e)
        })
    }

    /// Whether `self` and `other` differ only in their parameter names, so the
    /// same values render the same name: `{self.host}-{name}` and
    /// `{client.host}-{host_name}` have one shape. Adjacent placeholders count as one.
    pub fn same_shape(&self, other: &NameTemplate) -> bool {
        self.shape() == other.shape()
    }

    fn shape(&self) -> Vec<Option<&str>> {
        let mut shape = Vec::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => shape.push(Some(text.as_str())),
                Part::Param(_) if shape.last() == Some(&None) => {}
                Part::Param(_) => shape.push(None),
            }
        }
        shape
    }
}

impl FromStr for NameTemplate {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        NameTemplate::parse(s)
    }
}

impl fmt::Display for NameTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.source)
    }
}

fn parse_parts(source: &str) -> Result<Vec<Part>, TemplateError> {
    let mut parts = Vec::new();
    let mut literal = String::new();
    let mut chars = source.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                chars.next();
                literal.push('{');
            }
            '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                chars.next();
                literal.push('}');
            }
            '}' => {
                return Err(TemplateError::UnbalancedBrace {
                    brace: '}',
                    position: pos,
                });
            }
            '{' => {
                let mut name = String::new();
                let mut closed = false;
                for (_, n) in chars.by_ref() {
                    match n {
                        '}' => {
                            closed = true;
                            break;
                        }
                        '{' => {
                            return Err(TemplateError::UnbalancedBrace {
                                brace: '{',
                                position: pos,
                            });
                        }
                        other => name.push(other),
                    }
                }
                if !closed {
                    return Err(TemplateError::UnbalancedBrace {
                        brace: '{',
                        position: pos,
                    });
                }
                if name.is_empty() {
                    return Err(TemplateError::EmptyPlaceholder { position: pos });
                }
                if !is_parameter_name(&name) {
                    return Err(TemplateError::InvalidPlaceholder {
                        placeholder: name,
                        position: pos,
                    });
                }
                if !literal.is_empty() {
                    parts.push(Part::Literal(std::mem::take(&mut literal)));
                }
                parts.push(Part::Param(name));
            }
            other => literal.push(other),
        }
    }
    if !literal.is_empty() {
        parts.push(Part::Literal(literal));
    }
    Ok(parts)
}

/// `ident ( '.' ident | '[' key ']' )*` where an ident starts with a letter or `_`.
fn is_parameter_name(name: &str) -> bool {
    fn ident(s: &str) -> Option<&str> {
        let mut chars = s.char_indices();
        match chars.next() {
            Some((_, c)) if c.is_ascii_alphabetic() || c == '_' => {}
            _ => return None,
        }
        let end = s
            .char_indices()
            .find(|&(_, c)| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(s.len(), |(i, _)| i);
        Some(&s[end..])
    }
    let Some(mut rest) = ident(name) else {
        return false;
    };
    while !rest.is_empty() {
        if let Some(after_dot) = rest.strip_prefix('.') {
            match ident(after_dot) {
                Some(r) => rest = r,
                None => return false,
            }
        } else if let Some(after_open) = rest.strip_prefix('[') {
            let Some(close) = after_open.find(']') else {
                return false;
            };
            let key = &after_open[..close];
            if key.is_empty()
                || !key
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                return false;
            }
            rest = &after_open[close + 1..];
        } else {
            return false;
        }
    }
    true
}

/// A validated lock name: non-empty, at most [`MAX_NAME_LEN`] bytes, no control characters.
///
/// ```
/// use locks_core::LockName;
/// assert_eq!(LockName::new("lioadm")?.as_str(), "lioadm");
/// assert!(LockName::new("bad\0name").is_err());
/// # Ok::<(), locks_core::Error>(())
/// ```
///
/// Cheap to clone: clones share one immutable string.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LockName(Arc<str>);

impl LockName {
    /// Validates `name`.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] when the name is empty, longer than
    /// [`MAX_NAME_LEN`] bytes, or contains NUL or another control character.
    pub fn new(name: impl AsRef<str>) -> Result<Self, Error> {
        let name = name.as_ref();
        validate_name(name)
            .map_err(|e| e.into_error(format_args!("lock name {}", Excerpt::quoted(name))))?;
        Ok(LockName(Arc::from(name)))
    }

    /// `prefix` followed by `name`, in one step: the same result and errors as
    /// `LockName::new(name)?.with_prefix(prefix)`, without the intermediate name.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`], as [`new`](Self::new) for `name` and then
    /// as [`with_prefix`](Self::with_prefix).
    ///
    /// ```
    /// use locks_core::LockName;
    /// assert_eq!(LockName::prefixed("cinder-", "lioadm")?.as_str(), "cinder-lioadm");
    /// # Ok::<(), locks_core::Error>(())
    /// ```
    pub fn prefixed(prefix: &str, name: &str) -> Result<Self, Error> {
        validate_name(name)
            .map_err(|e| e.into_error(format_args!("lock name {}", Excerpt::quoted(name))))?;
        if prefix.is_empty() {
            return Ok(LockName(Arc::from(name)));
        }
        LockName::new(format!("{prefix}{name}"))
    }

    /// The name with `prefix` put in front, validated again.
    ///
    /// # Errors
    /// [`ErrorKind::InvalidName`] when the prefixed name is too long or the
    /// prefix holds control characters.
    pub fn with_prefix(&self, prefix: &str) -> Result<Self, Error> {
        if prefix.is_empty() {
            return Ok(self.clone());
        }
        LockName::new(format!("{prefix}{}", self.0))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LockName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Lets tables keyed by names be searched with text (the hash and equality
/// of a name are those of its text).
impl std::borrow::Borrow<str> for LockName {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for LockName {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

fn validate_name(name: &str) -> Result<(), TemplateError> {
    if name.is_empty() {
        return Err(TemplateError::EmptyName);
    }
    if name.len() > MAX_NAME_LEN {
        return Err(TemplateError::NameTooLong {
            len: name.len(),
            max: MAX_NAME_LEN,
        });
    }
    // Printable ASCII, the usual case, needs no decoding.
    if name.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Ok(());
    }
    if let Some((position, character)) = name.char_indices().find(|(_, c)| c.is_control()) {
        return Err(TemplateError::ControlCharacter {
            character,
            position,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detail(err: &Error) -> &TemplateError {
        std::error::Error::source(err)
            .and_then(|s| s.downcast_ref::<TemplateError>())
            .expect("template errors carry a TemplateError source")
    }

    #[test]
    fn renders_seed_templates() {
        let t = NameTemplate::parse("solidfire-{resource_id}").unwrap();
        let name = t
            .render(&Params::new().with("resource_id", "img-9"))
            .unwrap();
        assert_eq!(name.as_str(), "solidfire-img-9");
        let t = NameTemplate::parse("{driver_name}-{array_name}-map").unwrap();
        assert_eq!(
            t.parameters().collect::<Vec<_>>(),
            ["driver_name", "array_name"]
        );
        let t = NameTemplate::parse("lioadm").unwrap();
        assert!(t.is_literal());
        assert_eq!(t.render(&Params::new()).unwrap().as_str(), "lioadm");
    }

    #[test]
    fn dotted_and_subscripted_names_are_one_parameter() {
        let t = NameTemplate::parse("{client.host}-{connector[host]}").unwrap();
        assert_eq!(
            t.parameters().collect::<Vec<_>>(),
            ["client.host", "connector[host]"]
        );
        let p = Params::new()
            .with("client.host", "a")
            .with("connector[host]", "b");
        assert_eq!(t.render(&p).unwrap().as_str(), "a-b");
    }

    #[test]
    fn escapes_render_literal_braces() {
        let t = NameTemplate::parse("{{literal}}-{x}").unwrap();
        assert_eq!(t.parameters().collect::<Vec<_>>(), ["x"]);
        assert_eq!(
            t.render(&Params::new().with("x", 1)).unwrap().as_str(),
            "{literal}-1"
        );
    }

    #[test]
    fn repeated_parameter_is_listed_once() {
        let t = NameTemplate::parse("{a}-{a}").unwrap();
        assert_eq!(t.parameters().collect::<Vec<_>>(), ["a"]);
        assert_eq!(
            t.render(&Params::new().with("a", "z")).unwrap().as_str(),
            "z-z"
        );
    }

    #[test]
    fn unbalanced_braces_are_rejected() {
        for (src, brace, position) in [("a-{b", '{', 2), ("a}b", '}', 1), ("{a{b}}", '{', 0)] {
            let err = NameTemplate::parse(src).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTemplate, "{src}");
            assert_eq!(
                detail(&err),
                &TemplateError::UnbalancedBrace { brace, position },
                "{src}"
            );
            assert!(err.message().contains(src), "{}", err.message());
        }
    }

    #[test]
    fn empty_and_malformed_placeholders_are_rejected() {
        let err = NameTemplate::parse("x-{}").unwrap_err();
        assert_eq!(
            detail(&err),
            &TemplateError::EmptyPlaceholder { position: 2 }
        );
        for bad in ["{a b}", "{x:>4}", "{1st}", "{a.}", "{a[]}", "{.a}", "{a[b}"] {
            let err = NameTemplate::parse(bad).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidTemplate, "{bad}");
            assert!(
                matches!(
                    detail(&err),
                    TemplateError::InvalidPlaceholder { .. }
                        | TemplateError::UnbalancedBrace { .. }
                ),
                "{bad}: {err:?}"
            );
        }
    }

    #[test]
    fn missing_and_unknown_parameters_are_typed() {
        let t = NameTemplate::parse("kaminario-{san_ip}").unwrap();
        let err = t.render(&Params::new()).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::MissingParameter);
        assert_eq!(
            detail(&err),
            &TemplateError::MissingParameter {
                name: "san_ip".into()
            }
        );
        assert!(err.message().contains("san_ip"));

        let err = t
            .render(&Params::new().with("san_ip", "10.0.0.1").with("san_port", 1))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownParameter);
        assert!(err.message().contains("san_port") && err.message().contains("`san_ip`"));
    }

    #[test]
    fn rendered_names_are_validated() {
        let t = NameTemplate::parse("{x}").unwrap();
        let err = t.render(&Params::new().with("x", "")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName);

        let err = t
            .render(&Params::new().with("x", "a".repeat(MAX_NAME_LEN + 1)))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName);
        assert!(err.message().contains("1025"));
        assert!(
            t.render(&Params::new().with("x", "a".repeat(MAX_NAME_LEN)))
                .is_ok()
        );

        for bad in ["a\0b", "a\nb", "\u{7f}"] {
            let err = t.render(&Params::new().with("x", bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad:?}");
        }
    }

    #[test]
    fn long_input_comes_back_cut_short_with_its_length() {
        let huge = "n".repeat(1 << 20);
        let err = LockName::new(&huge).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidName);
        assert!(err.message().len() < 300, "{} bytes", err.message().len());
        assert!(err.message().contains("… (1048576 bytes)"), "{err}");
        assert!(err.message().contains("the limit is 1024"), "{err}");

        let t = NameTemplate::parse("{x}").unwrap();
        let err = t
            .render(&Params::new().with("x", "v").with(huge.clone(), "1"))
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::UnknownParameter);
        assert!(err.message().len() < 300, "{} bytes", err.message().len());

        let err = NameTemplate::parse(&format!("{huge}{{")).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidTemplate);
        assert!(err.message().len() < 300, "{} bytes", err.message().len());
    }

    #[test]
    fn prefix_is_validated_with_the_name() {
        let name = LockName::new("a".repeat(MAX_NAME_LEN)).unwrap();
        assert_eq!(name.with_prefix("").unwrap(), name);
        assert_eq!(
            name.with_prefix("p-").unwrap_err().kind(),
            ErrorKind::InvalidName
        );
        let short = LockName::new("lioadm").unwrap();
        assert_eq!(
            short.with_prefix("cinder-").unwrap().as_str(),
            "cinder-lioadm"
        );
    }

    #[test]
    fn prefixed_is_new_then_with_prefix() {
        let long = "a".repeat(MAX_NAME_LEN);
        for (prefix, name) in [
            ("", "lioadm"),
            ("cinder-", "lioadm"),
            ("", ""),
            ("p-", ""),
            ("p-", long.as_str()),
            ("", long.as_str()),
            ("bad\n", "x"),
            ("", "bad\u{7f}"),
            ("é-", "ünïcode"),
            ("p-", "tab\there"),
        ] {
            let one = LockName::prefixed(prefix, name);
            let two = LockName::new(name).and_then(|n| n.with_prefix(prefix));
            match (one, two) {
                (Ok(a), Ok(b)) => assert_eq!(a, b),
                (Err(a), Err(b)) => {
                    assert_eq!(a.kind(), b.kind());
                    assert_eq!(a.message(), b.message());
                }
                (a, b) => panic!("{prefix:?} {name:?}: {a:?} vs {b:?}"),
            }
        }
    }

    #[test]
    fn same_shape_ignores_parameter_names_only() {
        let p = |s: &str| NameTemplate::parse(s).unwrap();
        assert!(p("{self.host}-{name}").same_shape(&p("{client.host}-{host_name}")));
        assert!(p("{a}{b}-x").same_shape(&p("{c}-x")));
        assert!(!p("{driver_name}-{array_name}").same_shape(&p("{driver_name}-{array_name}-map")));
        assert!(!p("lioadm").same_shape(&p("nvmetcli")));
        assert!(!p("solidfire-{id}").same_shape(&p("{host}-{name}")));
    }
}
