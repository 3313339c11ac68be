//! Just enough reading of Python source to find Cinder's locks: string
//! literals and comments (so that text inside them is not taken for code),
//! `def`s with their decorators and bodies, lock calls (`synchronized(...)`,
//! `lock_if(...)`, ...) with their name argument, and a small evaluator that
//! turns a lock-name expression into a [`Shape`]: literal text and holes,
//! following `'%s-%s' % (...)`, `'...'.format(...)` and names assigned a
//! string in the files read (`K2_LOCK_PREFIX = 'Kaminario'`).
//!
//! It is not a Python parser: what it cannot follow becomes a hole, so a
//! lock name is never invented, only left less precise.

use std::fmt;

/// One piece of a lock name: fixed text, or a value known only at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Piece {
    /// Fixed text.
    Lit(String),
    /// A run-time value (a parameter).
    Hole,
}

/// A lock name as far as the source fixes it: adjacent texts merged,
/// adjacent holes counted as one (as [`locks::NameTemplate::same_shape`] does).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) struct Shape(Vec<Piece>);

impl Shape {
    fn push(&mut self, piece: Piece) {
        match (self.0.last_mut(), piece) {
            (Some(Piece::Lit(last)), Piece::Lit(text)) => last.push_str(&text),
            (Some(Piece::Hole), Piece::Hole) => {}
            (_, Piece::Lit(text)) if text.is_empty() => {}
            (_, piece) => self.0.push(piece),
        }
    }

    fn hole() -> Shape {
        Shape(vec![Piece::Hole])
    }

    fn extend(&mut self, other: Shape) {
        for piece in other.0 {
            self.push(piece);
        }
    }

    /// The shape of a catalog template: `{param}` is a hole, `{{`/`}}` a brace.
    pub(crate) fn of_template(template: &str) -> Shape {
        let mut shape = Shape::default();
        let mut chars = template.chars().peekable();
        let mut text = String::new();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                    }
                    shape.push(Piece::Lit(std::mem::take(&mut text)));
                    shape.push(Piece::Hole);
                }
                c => text.push(c),
            }
        }
        shape.push(Piece::Lit(text));
        shape
    }

    /// Whether the shape has any fixed text.
    pub(crate) fn has_text(&self) -> bool {
        self.0.iter().any(|p| matches!(p, Piece::Lit(_)))
    }

    /// The shape as one string, holes as `\0`, for distances.
    pub(crate) fn key(&self) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Piece::Lit(t) => t.as_str(),
                Piece::Hole => "\0",
            })
            .collect()
    }
}

impl fmt::Display for Shape {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for piece in &self.0 {
            match piece {
                Piece::Lit(t) => f.write_str(t)?,
                Piece::Hole => f.write_str("{…}")?,
            }
        }
        Ok(())
    }
}

/// A string literal: byte offsets of the whole token and of its body.
#[derive(Debug, Clone)]
struct StrLit {
    start: usize,
    end: usize,
    body_start: usize,
    body_end: usize,
}

/// A `def`: its name, the line of the `def`, its indentation, and the byte
/// range of its decorators and body.
#[derive(Debug, Clone)]
pub(crate) struct Function {
    pub(crate) name: String,
    pub(crate) line: usize,
    indent: usize,
    start: usize,
    end: usize,
}

/// A call that takes a lock, and the expression that names it.
#[derive(Debug, Clone)]
pub(crate) struct LockSite {
    pub(crate) line: usize,
    offset: usize,
    /// The name argument as written.
    pub(crate) arg: String,
}

/// One source file, scanned.
#[derive(Debug)]
pub(crate) struct Source {
    /// The path shown in reports (relative to the tree).
    pub(crate) path: String,
    text: String,
    line_starts: Vec<usize>,
    strings: Vec<StrLit>,
    comments: Vec<(usize, usize)>,
    pub(crate) functions: Vec<Function>,
    pub(crate) sites: Vec<LockSite>,
}

/// A lock name the source can produce, where, and how it was followed.
#[derive(Debug, Clone)]
pub(crate) struct Candidate {
    pub(crate) shape: Shape,
    pub(crate) file: String,
    pub(crate) line: usize,
    /// The expression as written.
    pub(crate) text: String,
    /// The assignments followed to build its fixed text (`file:line `text``).
    pub(crate) via: Vec<String>,
    /// The offset of the lock call, for a lock call's name.
    pub(crate) site: Option<usize>,
}

fn is_ident(c: u8) -> bool {
    c.is_ascii_alphanumeric() || c == b'_'
}

/// The calls that take a lock: the called name (last dotted component) and
/// which positional argument is the lock name. `synchronized` covers
/// `utils.synchronized` (oslo), `coordination.synchronized` (tooz) and
/// `lockutils.synchronized`; `lock_if` is Unity's `utils.lock_if(cond, name)`;
/// `get_lock` is `COORDINATOR.get_lock(name)`; `Lock` and `lock` count only as
/// `coordination.Lock(...)` and `lockutils.lock(...)`.
const LOCK_CALLS: [(&str, usize); 5] = [
    ("synchronized", 0),
    ("lock_if", 1),
    ("get_lock", 0),
    ("Lock", 0),
    ("lock", 0),
];

impl Source {
    /// Scans `text`, shown as `path` in reports.
    pub(crate) fn new(path: impl Into<String>, text: String) -> Source {
        let mut src = Source {
            path: path.into(),
            line_starts: std::iter::once(0)
                .chain(text.match_indices('\n').map(|(i, _)| i + 1))
                .collect(),
            text,
            strings: Vec::new(),
            comments: Vec::new(),
            functions: Vec::new(),
            sites: Vec::new(),
        };
        src.lex();
        src.find_functions();
        src.find_sites();
        src
    }

    /// The 1-based line of byte `offset`.
    pub(crate) fn line_of(&self, offset: usize) -> usize {
        self.line_starts.partition_point(|&s| s <= offset)
    }

    fn lex(&mut self) {
        let b = self.text.as_bytes();
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'#' => {
                    let end = self.text[i..].find('\n').map_or(b.len(), |n| i + n);
                    self.comments.push((i, end));
                    i = end;
                }
                q @ (b'\'' | b'"') => {
                    // A prefix of up to two letters (r, b, u, f), not part of a name.
                    let mut start = i;
                    while start > 0
                        && i - start < 2
                        && matches!(b[start - 1].to_ascii_lowercase(), b'r' | b'b' | b'u' | b'f')
                    {
                        start -= 1;
                    }
                    if start > 0 && is_ident(b[start - 1]) {
                        start = i;
                    }
                    let triple = b.len() >= i + 3 && b[i + 1] == q && b[i + 2] == q;
                    let body_start = if triple { i + 3 } else { i + 1 };
                    let mut j = body_start;
                    let body_end;
                    loop {
                        if j >= b.len() {
                            body_end = b.len();
                            break;
                        }
                        match b[j] {
                            b'\\' => j += 2,
                            b'\n' if !triple => {
                                body_end = j;
                                break;
                            }
                            c if c == q
                                && (!triple
                                    || (b.len() >= j + 3 && b[j + 1] == q && b[j + 2] == q)) =>
                            {
                                body_end = j;
                                break;
                            }
                            _ => j += 1,
                        }
                    }
                    let end = (if triple { body_end + 3 } else { body_end + 1 }).min(b.len());
                    self.strings.push(StrLit {
                        start,
                        end,
                        body_start,
                        body_end: body_end.min(b.len()),
                    });
                    i = end;
                }
                _ => i += 1,
            }
        }
    }

    /// Whether `offset` is inside a string literal or a comment.
    fn in_text(&self, offset: usize) -> bool {
        let s = self.strings.partition_point(|s| s.end <= offset);
        if self
            .strings
            .get(s)
            .is_some_and(|s| s.start <= offset && offset < s.end)
        {
            return true;
        }
        let c = self.comments.partition_point(|c| c.1 <= offset);
        self.comments
            .get(c)
            .is_some_and(|c| c.0 <= offset && offset < c.1)
    }

    fn string_at(&self, offset: usize) -> Option<&StrLit> {
        let s = self.strings.partition_point(|s| s.end <= offset);
        self.strings.get(s).filter(|s| s.start == offset)
    }

    fn indent_of_line(&self, line: usize) -> (usize, &str) {
        let start = self.line_starts[line - 1];
        let end = self
            .line_starts
            .get(line)
            .map_or(self.text.len(), |e| e - 1);
        let text = &self.text[start..end.max(start)];
        let trimmed = text.trim_start();
        (text.len() - trimmed.len(), trimmed)
    }

    fn find_functions(&mut self) {
        let lines = self.line_starts.len();
        let mut found = Vec::new();
        for line in 1..=lines {
            let start = self.line_starts[line - 1];
            let (indent, trimmed) = self.indent_of_line(line);
            if self.in_text(start + indent) {
                continue;
            }
            let rest = trimmed
                .strip_prefix("async ")
                .map_or(trimmed, str::trim_start);
            let Some(rest) = rest.strip_prefix("def ") else {
                continue;
            };
            let name: String = rest
                .trim_start()
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if name.is_empty() {
                continue;
            }
            // Decorators: the `@` lines (and their continuations) just above.
            let mut first = line;
            let mut l = line;
            while l > 1 {
                l -= 1;
                let (i, t) = self.indent_of_line(l);
                if t.is_empty() || self.in_text(self.line_starts[l - 1] + i) {
                    if t.is_empty() {
                        break;
                    }
                    continue;
                }
                if i == indent && t.starts_with('@') {
                    first = l;
                } else if i <= indent {
                    break;
                }
            }
            // Body: up to the next code line indented no deeper than the `def`.
            let mut end = self.text.len();
            for next in line + 1..=lines {
                let (i, t) = self.indent_of_line(next);
                let at = self.line_starts[next - 1] + i;
                if t.is_empty() || t.starts_with('#') || self.in_text(at) {
                    continue;
                }
                if i <= indent {
                    end = self.line_starts[next - 1];
                    break;
                }
            }
            found.push(Function {
                name,
                line,
                indent,
                start: self.line_starts[first - 1],
                end,
            });
        }
        self.functions = found;
    }

    fn find_sites(&mut self) {
        let b = self.text.as_bytes();
        let mut sites = Vec::new();
        for (call, arg_index) in LOCK_CALLS {
            for (at, _) in self.text.match_indices(call) {
                let after = at + call.len();
                if (at > 0 && is_ident(b[at - 1])) || b.get(after).copied().is_some_and(is_ident) {
                    continue;
                }
                if self.in_text(at) {
                    continue;
                }
                let open =
                    after + (self.text[after..].len() - self.text[after..].trim_start().len());
                if b.get(open) != Some(&b'(') {
                    continue;
                }
                // `Lock(` and `lock(` alone are too common.
                if (call == "Lock" && !self.text[..at].ends_with("coordination."))
                    || (call == "lock" && !self.text[..at].ends_with("lockutils."))
                {
                    continue;
                }
                let Some(close) = self.matching(open) else {
                    continue;
                };
                let args = self.split_args(open + 1, close);
                let named = args.iter().find_map(|a| {
                    let (k, v) = a.split_once('=')?;
                    (matches!(k.trim(), "name" | "lock_name") && !v.starts_with('='))
                        .then(|| v.trim().to_owned())
                });
                let positional: Vec<&String> = args.iter().filter(|a| !is_keyword_arg(a)).collect();
                let Some(arg) = named.or_else(|| positional.get(arg_index).map(|a| (*a).clone()))
                else {
                    continue;
                };
                sites.push(LockSite {
                    line: self.line_of(at),
                    offset: at,
                    arg,
                });
            }
        }
        sites.sort_by_key(|s| s.offset);
        self.sites = sites;
    }

    /// The offset of the bracket closing the one at `open`, skipping strings.
    fn matching(&self, open: usize) -> Option<usize> {
        let b = self.text.as_bytes();
        let mut depth = 0usize;
        let mut i = open;
        while i < b.len() {
            if let Some(s) = self.string_at(i) {
                i = s.end;
                continue;
            }
            match b[i] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => {
                    depth -= 1;
                    if depth == 0 {
                        return Some(i);
                    }
                }
                b'#' => {
                    i = self.text[i..].find('\n').map_or(b.len(), |n| i + n);
                    continue;
                }
                _ => {}
            }
            i += 1;
        }
        None
    }

    /// The comma-separated parts of `start..end` at bracket depth 0, trimmed.
    fn split_args(&self, start: usize, end: usize) -> Vec<String> {
        let b = self.text.as_bytes();
        let mut out = Vec::new();
        let mut depth = 0usize;
        let mut from = start;
        let mut i = start;
        while i < end {
            if let Some(s) = self.string_at(i) {
                i = s.end;
                continue;
            }
            match b[i] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                b',' if depth == 0 => {
                    out.push(self.text[from..i].trim().to_owned());
                    from = i + 1;
                }
                _ => {}
            }
            i += 1;
        }
        let last = self.text[from..end].trim();
        if !last.is_empty() {
            out.push(last.to_owned());
        }
        out
    }

    /// Whether the decorators or body of a function named one of `names` hold `offset`.
    pub(crate) fn within(&self, offset: usize, names: &[String]) -> bool {
        self.functions_at(offset).any(|f| names.contains(&f.name))
    }

    /// The functions whose decorators or body hold `offset`, innermost last.
    fn functions_at(&self, offset: usize) -> impl Iterator<Item = &Function> {
        self.functions
            .iter()
            .filter(move |f| f.start <= offset && offset < f.end)
    }

    /// Whether function `f` takes a lock: a lock call among its decorators or in its body.
    pub(crate) fn takes_lock(&self, f: &Function) -> bool {
        self.sites.iter().any(|s| {
            self.functions_at(s.offset)
                .any(|g| g.line == f.line && g.indent == f.indent)
        })
    }

    /// Every `def name` of the file.
    pub(crate) fn defs(&self, name: &str) -> impl Iterator<Item = &Function> {
        self.functions.iter().filter(move |f| f.name == name)
    }

    /// Every string literal of the file as a candidate (`{x}` and `%s` as holes).
    pub(crate) fn literals(&self) -> Vec<Candidate> {
        self.strings
            .iter()
            .filter(|s| s.body_end - s.body_start < 200)
            .map(|s| Candidate {
                shape: literal_shape(&self.text[s.body_start..s.body_end], true, true),
                file: self.path.clone(),
                line: self.line_of(s.start),
                text: self.text[s.start..s.end].to_owned(),
                via: Vec::new(),
                site: None,
            })
            .collect()
    }

    /// The right-hand sides assigned to `name` (`name = ...`, `self.name = ...`).
    fn assignments(&self, name: &str) -> Vec<(usize, String, String)> {
        let mut out = Vec::new();
        let b = self.text.as_bytes();
        for (at, _) in self.text.match_indices(name) {
            let after = at + name.len();
            if b.get(after).copied().is_some_and(is_ident) || self.in_text(at) {
                continue;
            }
            // Preceded by the line's indentation, optionally `self.` / `cls.`.
            let line_start = self.text[..at].rfind('\n').map_or(0, |n| n + 1);
            let before = self.text[line_start..at].trim_start();
            if !(before.is_empty() || before == "self." || before == "cls.") {
                continue;
            }
            let rest = &self.text[after..];
            let rest_trim = rest.trim_start_matches([' ', '\t']);
            let Some(rhs) = rest_trim.strip_prefix('=') else {
                continue;
            };
            if rhs.starts_with('=') {
                continue;
            }
            let rhs_start = self.text.len() - rhs.len();
            let rhs_end = self.logical_line_end(rhs_start);
            let whole = self.text[line_start..rhs_end].trim().to_owned();
            out.push((
                self.line_of(at),
                self.text[rhs_start..rhs_end].trim().to_owned(),
                whole,
            ));
        }
        out
    }

    /// The end of the logical line that `offset` is on (brackets and strings continue it).
    fn logical_line_end(&self, offset: usize) -> usize {
        let b = self.text.as_bytes();
        let mut depth = 0usize;
        let mut i = offset;
        while i < b.len() {
            if let Some(s) = self.string_at(i) {
                i = s.end;
                continue;
            }
            match b[i] {
                b'(' | b'[' | b'{' => depth += 1,
                b')' | b']' | b'}' => depth = depth.saturating_sub(1),
                b'\\' => i += 1,
                b'#' => {
                    let end = self.text[i..].find('\n').map_or(b.len(), |n| i + n);
                    if depth == 0 {
                        return end;
                    }
                    i = end;
                    continue;
                }
                b'\n' if depth == 0 => return i,
                _ => {}
            }
            i += 1;
        }
        b.len()
    }
}

fn is_keyword_arg(arg: &str) -> bool {
    let Some((k, v)) = arg.split_once('=') else {
        return false;
    };
    !v.starts_with('=') && !k.trim().is_empty() && k.trim().bytes().all(is_ident)
}

/// The shape of a literal's body: `{...}` placeholders as holes when
/// `braces`, `%s`-style conversions as holes when `percent`.
fn literal_shape(body: &str, braces: bool, percent: bool) -> Shape {
    let mut shape = Shape::default();
    let mut text = String::new();
    let mut chars = body.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '{' if braces && chars.peek() == Some(&'{') => {
                chars.next();
                text.push('{');
            }
            '}' if braces && chars.peek() == Some(&'}') => {
                chars.next();
                text.push('}');
            }
            '{' if braces => {
                for c in chars.by_ref() {
                    if c == '}' {
                        break;
                    }
                }
                shape.push(Piece::Lit(std::mem::take(&mut text)));
                shape.push(Piece::Hole);
            }
            '%' if percent && chars.peek() == Some(&'%') => {
                chars.next();
                text.push('%');
            }
            '%' if percent && chars.peek().is_some() => {
                skip_conversion(&mut chars);
                shape.push(Piece::Lit(std::mem::take(&mut text)));
                shape.push(Piece::Hole);
            }
            c => text.push(c),
        }
    }
    shape.push(Piece::Lit(text));
    shape
}

/// Skips a `%` conversion after the `%`: `(key)`, flags, width, and its letter.
fn skip_conversion(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    if chars.peek() == Some(&'(') {
        for c in chars.by_ref() {
            if c == ')' {
                break;
            }
        }
    }
    while chars
        .peek()
        .is_some_and(|c| "#0- +.*".contains(*c) || c.is_ascii_digit())
    {
        chars.next();
    }
    chars.next();
}

/// The files a lock name may be built from: the lock's file first.
pub(crate) struct Scope<'a> {
    files: Vec<&'a Source>,
    /// Evaluation steps left for one lock call: a file where every name is
    /// assigned from several others cannot make the search explode.
    budget: std::cell::Cell<usize>,
}

const MAX_DEPTH: usize = 6;

/// Evaluation steps allowed per lock call.
const BUDGET: usize = 2_000;

impl<'a> Scope<'a> {
    /// A scope over `files`, the lock's own file first.
    pub(crate) fn new(files: Vec<&'a Source>) -> Self {
        Scope {
            files,
            budget: std::cell::Cell::new(BUDGET),
        }
    }

    /// The candidates of every lock call in `src`: followed, and as written.
    pub(crate) fn lock_names(&self, src: &Source) -> Vec<Candidate> {
        let mut out = Vec::new();
        for site in &src.sites {
            self.budget.set(BUDGET);
            let mut via = Vec::new();
            let shape = self.eval(&site.arg, 0, &mut via);
            let plain = self.eval_plain(&site.arg).map(|p| (p, Vec::new()));
            for (shape, via) in std::iter::once((shape, via)).chain(plain) {
                if out
                    .iter()
                    .any(|c: &Candidate| c.line == site.line && c.shape == shape)
                {
                    continue;
                }
                out.push(Candidate {
                    shape,
                    file: src.path.clone(),
                    line: site.line,
                    text: site.arg.clone(),
                    via,
                    site: Some(site.offset),
                });
            }
        }
        out
    }

    /// The shape of `expr` as written, when it is one literal: placeholders
    /// as holes, no name followed.
    fn eval_plain(&self, expr: &str) -> Option<Shape> {
        let tmp = Source::new(String::new(), expr.to_owned());
        let s = tmp.strings.first()?;
        (s.start == 0 && s.end == expr.len())
            .then(|| literal_shape(&expr[s.body_start..s.body_end], true, false))
    }

    /// Follows `expr` to a shape, recording the assignments it went through in `via`.
    fn eval(&self, expr: &str, depth: usize, via: &mut Vec<String>) -> Shape {
        let expr = expr.trim();
        if depth > MAX_DEPTH || expr.is_empty() || self.budget.get() == 0 {
            return Shape::hole();
        }
        self.budget.set(self.budget.get() - 1);
        let tmp = Source::new(String::new(), expr.to_owned());
        // `(expr)`
        if expr.starts_with('(') && tmp.matching(0) == Some(expr.len() - 1) {
            return self.eval(&expr[1..expr.len() - 1], depth + 1, via);
        }
        // `fmt % args`
        if let Some(pct) = top_level(&tmp, b'%') {
            let (fmt, args) = (&expr[..pct], expr[pct + 1..].trim());
            let fmt_src = Source::new(String::new(), fmt.trim().to_owned());
            let Some(body) = whole_literal(&fmt_src) else {
                return Shape::hole();
            };
            let args = if args.starts_with('(') {
                let a = Source::new(String::new(), args.to_owned());
                match a.matching(0) {
                    Some(close) if close == args.len() - 1 => a.split_args(1, close),
                    _ => vec![args.to_owned()],
                }
            } else if args.starts_with('{') {
                Vec::new()
            } else {
                vec![args.to_owned()]
            };
            return self.percent(body, &args, depth, via);
        }
        // `'...'.format(...)`
        if let Some(s) = tmp.strings.first().filter(|s| s.start == 0)
            && expr[s.end..].starts_with(".format(")
            && tmp.matching(s.end + ".format".len()) == Some(expr.len() - 1)
        {
            let args = tmp.split_args(s.end + ".format(".len(), expr.len() - 1);
            return self.format(&expr[s.body_start..s.body_end], &args, depth, via);
        }
        // A literal: `{name}` placeholders (format, f-string, or
        // coordination's `{self.x}`) followed when they name an assignment.
        if let Some(s) = tmp
            .strings
            .first()
            .filter(|s| s.start == 0 && s.end == expr.len())
        {
            return self.format(&expr[s.body_start..s.body_end], &[], depth, via);
        }
        // A name: what it is assigned, when every assignment agrees.
        if expr.bytes().all(|c| is_ident(c) || c == b'.')
            && !expr.starts_with(|c: char| c.is_ascii_digit())
        {
            let last = expr.rsplit('.').next().unwrap_or(expr);
            return self.resolve(last, depth, via);
        }
        Shape::hole()
    }

    fn resolve(&self, name: &str, depth: usize, via: &mut Vec<String>) -> Shape {
        if name.is_empty() || name == "self" {
            return Shape::hole();
        }
        let mut agreed: Option<(Shape, Vec<String>)> = None;
        for file in &self.files {
            for (line, rhs, whole) in file.assignments(name) {
                // `self.host = host` says nothing about `host` itself.
                if rhs.rsplit('.').next() == Some(name) {
                    continue;
                }
                let mut v = vec![format!("{}:{line} `{whole}`", short(&file.path))];
                let shape = self.eval(&rhs, depth + 1, &mut v);
                match &agreed {
                    None => agreed = Some((shape, v)),
                    Some((s, _)) if *s == shape => {}
                    Some(_) => return Shape::hole(),
                }
            }
        }
        match agreed {
            Some((shape, v)) => {
                // Only the assignments that gave fixed text are worth showing.
                if shape.has_text() {
                    for step in v {
                        if !via.contains(&step) {
                            via.push(step);
                        }
                    }
                }
                shape
            }
            None => Shape::hole(),
        }
    }

    fn percent(&self, body: &str, args: &[String], depth: usize, via: &mut Vec<String>) -> Shape {
        let mut shape = Shape::default();
        let mut text = String::new();
        let mut chars = body.chars().peekable();
        let mut next = args.iter();
        while let Some(c) = chars.next() {
            match c {
                '%' if chars.peek() == Some(&'%') => {
                    chars.next();
                    text.push('%');
                }
                '%' if chars.peek().is_some() => {
                    let keyed = chars.peek() == Some(&'(');
                    skip_conversion(&mut chars);
                    shape.push(Piece::Lit(std::mem::take(&mut text)));
                    match next.next().filter(|_| !keyed) {
                        Some(arg) => shape.extend(self.eval(arg, depth + 1, via)),
                        None => shape.push(Piece::Hole),
                    }
                }
                c => text.push(c),
            }
        }
        shape.push(Piece::Lit(text));
        shape
    }

    fn format(&self, body: &str, args: &[String], depth: usize, via: &mut Vec<String>) -> Shape {
        let keyword = |key: &str| {
            args.iter().find_map(|a| {
                let (k, v) = a.split_once('=')?;
                (k.trim() == key).then(|| v.trim().to_owned())
            })
        };
        let mut positional = args.iter().filter(|a| !is_keyword_arg(a));
        let mut shape = Shape::default();
        let mut text = String::new();
        let mut chars = body.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    text.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    text.push('}');
                }
                '{' => {
                    let mut field = String::new();
                    for c in chars.by_ref() {
                        if c == '}' {
                            break;
                        }
                        field.push(c);
                    }
                    let field = field.split([':', '!']).next().unwrap_or("").trim();
                    shape.push(Piece::Lit(std::mem::take(&mut text)));
                    let value = if field.is_empty() {
                        positional.next().cloned()
                    } else if let Some(v) = keyword(field) {
                        Some(v)
                    } else if field.bytes().all(|c| is_ident(c) || c == b'.') {
                        // A name from the call's own arguments (`{self.x}`): follow the attribute.
                        Some(field.to_owned())
                    } else {
                        None
                    };
                    match value {
                        Some(v) => shape.extend(self.eval(&v, depth + 1, via)),
                        None => shape.push(Piece::Hole),
                    }
                }
                c => text.push(c),
            }
        }
        shape.push(Piece::Lit(text));
        shape
    }
}

/// The body of `src` when it is exactly one string literal.
fn whole_literal(src: &Source) -> Option<&str> {
    let s = src.strings.first()?;
    (s.start == 0 && s.end == src.text.len()).then(|| &src.text[s.body_start..s.body_end])
}

/// The offset of `op` at bracket depth 0, outside strings.
fn top_level(src: &Source, op: u8) -> Option<usize> {
    let b = src.text.as_bytes();
    let mut depth = 0usize;
    let mut i = 0;
    while i < b.len() {
        if let Some(s) = src.string_at(i) {
            i = s.end;
            continue;
        }
        match b[i] {
            b'(' | b'[' | b'{' => depth += 1,
            b')' | b']' | b'}' => depth = depth.saturating_sub(1),
            c if c == op && depth == 0 => return Some(i),
            _ => {}
        }
        i += 1;
    }
    None
}

/// The file name of a path, for `via` notes.
fn short(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The Levenshtein distance of `a` and `b`, in characters.
pub(crate) fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = (prev + usize::from(ca != *cb)).min(row[j] + 1).min(cur + 1);
            prev = cur;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(files: &[&Source], of: &Source) -> Vec<String> {
        Scope::new(files.to_vec())
            .lock_names(of)
            .iter()
            .map(|c| c.shape.to_string())
            .collect()
    }

    #[test]
    fn decorated_functions_and_their_locks() {
        let src = Source::new(
            "lio.py",
            "class LioAdm:\n    # utils.synchronized('commented')\n    @staticmethod\n    \
             @utils.synchronized('lioadm', external=True)\n    def _execute(*args, **kwargs):\n        \
             \"\"\"Locked execution.\n\n        def not_a_def(): synchronized('no')\n        \"\"\"\n        \
             return utils.execute(*args)\n\n    def _get_target(self, iqn):\n        return self._execute('x')\n"
                .to_owned(),
        );
        let defs: Vec<(&str, usize)> = src
            .functions
            .iter()
            .map(|f| (f.name.as_str(), f.line))
            .collect();
        assert_eq!(defs, [("_execute", 5), ("_get_target", 12)]);
        assert_eq!(src.sites.len(), 1, "{:?}", src.sites);
        assert_eq!(src.sites[0].line, 4);
        assert!(src.takes_lock(&src.functions[0]));
        assert!(!src.takes_lock(&src.functions[1]));
        assert_eq!(names(&[&src], &src), ["lioadm"]);
    }

    #[test]
    fn names_are_followed_through_assignments_and_formats() {
        let common = Source::new(
            "kaminario_common.py",
            "K2_LOCK_PREFIX = 'Kaminario'\nclass D:\n    def __init__(self):\n        \
             k2_lock_sfx = self.configuration.safe_get('san_ip')\n        \
             self.k2_lock_name = \"%s-%s\" % (K2_LOCK_PREFIX, k2_lock_sfx)\n"
                .to_owned(),
        );
        let fc = Source::new(
            "kaminario_fc.py",
            "class FC:\n    @coordination.synchronized('{self.k2_lock_name}')\n    def initialize_connection(self):\n        pass\n"
                .to_owned(),
        );
        let found = Scope::new(vec![&fc, &common]).lock_names(&fc);
        assert_eq!(found[0].shape.to_string(), "Kaminario-{…}");
        assert_eq!(found[0].line, 2);
        assert!(
            found[0]
                .via
                .iter()
                .any(|v| v.contains("kaminario_common.py:1 `K2_LOCK_PREFIX = 'Kaminario'`")),
            "{:?}",
            found[0].via
        );

        let sf = Source::new(
            "solidfire.py",
            "def locked_source_id_operation(f, external=False):\n    def inner(inst):\n        \
             lock_tag = inst.driver_prefix\n        @utils.synchronized('%s-%s' % (lock_tag, source_id),\n                            \
             external=external)\n        def inner2():\n            pass\n\nclass SF:\n    driver_prefix = 'solidfire'\n"
                .to_owned(),
        );
        assert_eq!(names(&[&sf], &sf)[0], "solidfire-{…}");
        assert!(sf.takes_lock(&sf.functions[0]));

        let unity = Source::new(
            "adapter.py",
            "def _create_host_and_attach(self, host_name):\n    @utils.lock_if(self.to_lock_host, '{lock_name}')\n    \
             def _lock_helper(lock_name):\n        pass\n    return _lock_helper('{unity}-{host}'.format(unity=self.client.host, host=host_name))\n"
                .to_owned(),
        );
        assert_eq!(names(&[&unity], &unity), ["{…}"]);
        assert!(
            unity
                .literals()
                .iter()
                .any(|c| c.shape.to_string() == "{…}-{…}")
        );
        assert!(unity.takes_lock(&unity.functions[0]));
    }

    #[test]
    fn disagreeing_assignments_leave_a_hole() {
        let src = Source::new(
            "stx.py",
            "class C:\n    def __init__(self):\n        self._array_name = 'unknown'\n    def login(self):\n        \
             self._array_name = self.get_serial_number()\n    @coordination.synchronized('{self._driver_name}-{self._array_name}-map')\n    \
             def map_volume(self):\n        pass\n"
                .to_owned(),
        );
        assert_eq!(names(&[&src], &src), ["{…}-{…}-map"]);
    }

    #[test]
    fn other_lock_calls_count_and_plain_locks_do_not() {
        let src = Source::new(
            "x.py",
            "def a():\n    with lockutils.lock('a-%s' % x, external=True):\n        pass\n\
             def b():\n    with coordination.COORDINATOR.get_lock('b'):\n        pass\n\
             def c():\n    lock = threading.Lock()\n    self.lock('no')\n    with lock:\n        pass\n"
                .to_owned(),
        );
        assert_eq!(names(&[&src], &src), ["a-{…}", "b"]);
        let takes: Vec<bool> = src.functions.iter().map(|f| src.takes_lock(f)).collect();
        assert_eq!(takes, [true, true, false]);
    }

    #[test]
    fn a_web_of_assignments_is_cut_short() {
        // Every name assigned from ten others: without the step budget,
        // following them six deep would take 10^6 evaluations per lock call.
        let mut text = String::new();
        for i in 0..40 {
            for j in 1..=10 {
                text.push_str(&format!("n{i} = n{}\n", (i + j) % 40));
            }
        }
        text.push_str("@coordination.synchronized('{self.n0}-x')\ndef f():\n    pass\n");
        let src = Source::new("web.py", text);
        assert_eq!(names(&[&src], &src), ["{…}-x"]);
    }

    #[test]
    fn template_shapes_and_distance() {
        assert_eq!(
            Shape::of_template("Kaminario-{san_ip}").to_string(),
            "Kaminario-{…}"
        );
        assert_eq!(Shape::of_template("{a}{b}-x{{y}}").to_string(), "{…}-x{y}");
        assert!(!Shape::of_template("{a}").has_text());
        assert_eq!(distance("kaminario", "Kaminario"), 1);
        assert_eq!(distance("", "abc"), 3);
    }
}
