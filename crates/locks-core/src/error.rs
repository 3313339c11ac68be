//! The one error type of the workspace and its stable [`ErrorKind`].

use std::fmt;

/// A boxed error that can cross threads; the `source` of an [`Error`].
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// `Result` with [`Error`] as the default error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, as a stable category callers can branch on.
///
/// Every kind maps one-to-one to a status code of the C ABI, so variants are
/// only ever added, never renumbered or removed.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A name template does not parse (unbalanced brace, empty or malformed placeholder).
    InvalidTemplate,
    /// Rendering a template needs a parameter the caller did not pass.
    MissingParameter,
    /// The caller passed a parameter the template does not use.
    UnknownParameter,
    /// A rendered or raw lock name is empty, too long, or holds control characters.
    InvalidName,
    /// No catalog entry has the requested id.
    UnknownLock,
    /// A catalog file is malformed or fails its lint.
    InvalidCatalog,
    /// A configuration file, key, or backend URL is malformed or unknown.
    InvalidConfig,
    /// The operation or backend is not available: not compiled in, or the
    /// backend cannot honour the requested scope.
    Unsupported,
    /// A try-once acquire found the lock held by someone else.
    WouldBlock,
    /// The lock could not be acquired before the timeout elapsed.
    Timeout,
    /// The calling task (or thread) already holds this lock; waiting would never end.
    WouldDeadlock,
    /// The lock was lost while held (lease expired, session expired).
    Lost,
    /// The coordination server could not be reached or went away.
    Unavailable,
    /// The server refused the credentials, or the OS refused access to a lock file.
    PermissionDenied,
    /// An I/O error from the operating system.
    Io,
    /// A bug or an invariant violation inside the library.
    Internal,
}

impl ErrorKind {
    /// A short, stable, lower-case identifier (`"would_block"`), for logs and scripts.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorKind::InvalidTemplate => "invalid_template",
            ErrorKind::MissingParameter => "missing_parameter",
            ErrorKind::UnknownParameter => "unknown_parameter",
            ErrorKind::InvalidName => "invalid_name",
            ErrorKind::UnknownLock => "unknown_lock",
            ErrorKind::InvalidCatalog => "invalid_catalog",
            ErrorKind::InvalidConfig => "invalid_config",
            ErrorKind::Unsupported => "unsupported",
            ErrorKind::WouldBlock => "would_block",
            ErrorKind::Timeout => "timeout",
            ErrorKind::WouldDeadlock => "would_deadlock",
            ErrorKind::Lost => "lost",
            ErrorKind::Unavailable => "unavailable",
            ErrorKind::PermissionDenied => "permission_denied",
            ErrorKind::Io => "io",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether trying the same call again later may succeed (contention, outages).
    pub fn is_temporary(self) -> bool {
        matches!(
            self,
            ErrorKind::WouldBlock | ErrorKind::Timeout | ErrorKind::Unavailable | ErrorKind::Lost
        )
    }
}

impl fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error of every fallible call in the workspace.
///
/// It carries a [`kind`](Error::kind) to branch on, a one-line message that
/// names the problem and what to do about it, and optionally the underlying
/// cause as [`source`](std::error::Error::source). Typed detail such as
/// [`TemplateError`](crate::TemplateError) is reachable by downcasting the source.
pub struct Error {
    kind: ErrorKind,
    message: String,
    source: Option<BoxError>,
}

impl Error {
    /// A TOML parse error as `ORIGIN (line N): problem`, of `kind`.
    ///
    /// Not chained as a source: the parser's own rendering repeats the
    /// message and quotes the whole line, which may hold a password.
    pub fn from_toml(kind: ErrorKind, origin: &str, text: &str, error: &toml::de::Error) -> Self {
        let line = error
            .span()
            .map(|s| format!(" (line {})", line_of(text, s.start)))
            .unwrap_or_default();
        Error::new(
            kind,
            format!("{origin}{line}: {}", error.message().trim_end()),
        )
    }

    /// An error of `kind` with a human-readable `message`.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// The stable category of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message, without the source chain.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The message followed by every source in the chain, joined by `": "`.
    pub fn report(&self) -> String {
        let mut out = self.message.clone();
        let mut next = std::error::Error::source(self);
        while let Some(cause) = next {
            let text = cause.to_string();
            if !out.contains(&text) {
                out.push_str(": ");
                out.push_str(&text);
            }
            next = cause.source();
        }
        out
    }

    /// Shorthand for an [`ErrorKind::Io`] error that says what was being done.
    pub fn io(context: impl fmt::Display, err: std::io::Error) -> Self {
        let kind = match err.kind() {
            std::io::ErrorKind::PermissionDenied => ErrorKind::PermissionDenied,
            _ => ErrorKind::Io,
        };
        Error::new(kind, format!("{context}: {err}")).with_source(err)
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(source) = &self.source {
            d.field("source", source);
        }
        d.finish()
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn std::error::Error + 'static))
    }
}

/// The 1-based line of byte `offset` in `text`.
pub(crate) fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_appends_sources_once() {
        let io = std::io::Error::new(std::io::ErrorKind::NotFound, "no such file");
        let err = Error::io("opening /x", io);
        assert_eq!(err.kind(), ErrorKind::Io);
        assert_eq!(err.report(), "opening /x: no such file");
        let wrapped = Error::new(ErrorKind::Unavailable, "server down")
            .with_source(std::io::Error::other("connection refused"));
        assert_eq!(wrapped.report(), "server down: connection refused");
    }

    #[test]
    fn permission_denied_is_its_own_kind() {
        let io = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert_eq!(Error::io("x", io).kind(), ErrorKind::PermissionDenied);
    }
}
