//! The placeholders of a name template, split into a root and accessors
//! (`client.host` is root `client`, field `host`; `connector[host]` is root
//! `connector`, key `"host"`). The runtime checks templates fully; this
//! reads only what the attribute needs to build expressions.

/// One step after the root of a parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Access {
    /// `.name`
    Field(String),
    /// `[key]`
    Key(String),
}

/// One distinct placeholder of a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Parameter {
    /// The full text between the braces: the key passed in `Params`.
    pub(crate) name: String,
    /// The first identifier.
    pub(crate) root: String,
    /// What follows it.
    pub(crate) path: Vec<Access>,
}

/// The distinct parameters of `template`, in order of first use.
pub(crate) fn parameters(template: &str) -> Result<Vec<Parameter>, String> {
    let mut out: Vec<Parameter> = Vec::new();
    let mut chars = template.char_indices().peekable();
    while let Some((pos, c)) = chars.next() {
        match c {
            '{' if chars.peek().map(|&(_, n)| n) == Some('{') => {
                chars.next();
            }
            '}' if chars.peek().map(|&(_, n)| n) == Some('}') => {
                chars.next();
            }
            '}' => return Err(format!("unbalanced `}}` at byte {pos}")),
            '{' => {
                let mut name = String::new();
                loop {
                    match chars.next() {
                        Some((_, '}')) => break,
                        Some((_, '{')) | None => {
                            return Err(format!("unbalanced `{{` at byte {pos}"));
                        }
                        Some((_, other)) => name.push(other),
                    }
                }
                let parameter = parse_parameter(&name)
                    .ok_or_else(|| format!("`{{{name}}}` is not a parameter name"))?;
                if !out.iter().any(|p| p.name == parameter.name) {
                    out.push(parameter);
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

fn ident_len(s: &str) -> usize {
    match s.chars().next() {
        Some(c) if c.is_ascii_alphabetic() || c == '_' => s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len()),
        _ => 0,
    }
}

fn parse_parameter(name: &str) -> Option<Parameter> {
    let len = ident_len(name);
    if len == 0 {
        return None;
    }
    let mut rest = &name[len..];
    let mut path = Vec::new();
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix('.') {
            let len = ident_len(after);
            if len == 0 {
                return None;
            }
            path.push(Access::Field(after[..len].to_owned()));
            rest = &after[len..];
        } else if let Some(after) = rest.strip_prefix('[') {
            let close = after.find(']')?;
            if close == 0 {
                return None;
            }
            path.push(Access::Key(after[..close].to_owned()));
            rest = &after[close + 1..];
        } else {
            return None;
        }
    }
    Some(Parameter {
        name: name.to_owned(),
        root: name[..len].to_owned(),
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_roots_and_accessors() {
        let p = parameters("{client.host}-{host_name}-{connector[host]}{{x}}-{host_name}").unwrap();
        assert_eq!(p.len(), 3);
        assert_eq!(p[0].root, "client");
        assert_eq!(p[0].path, vec![Access::Field("host".into())]);
        assert_eq!(p[1].name, "host_name");
        assert!(p[1].path.is_empty());
        assert_eq!(p[2].path, vec![Access::Key("host".into())]);
        assert!(parameters("lioadm").unwrap().is_empty());
    }

    #[test]
    fn rejects_what_is_not_a_parameter() {
        assert!(parameters("{a").is_err());
        assert!(parameters("a}").is_err());
        assert!(parameters("{1x}").is_err());
        assert!(parameters("{a.}").is_err());
        assert!(parameters("{a[]}").is_err());
    }
}
