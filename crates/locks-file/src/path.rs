//! From lock names to paths inside the lock directory: [`lock_file_name`]
//! (oslo.concurrency's flat rule), [`lock_file_path`] (both layouts) and
//! [`Key`], the path as the in-process turns and the descriptor cache know it.
//!
//! # File names
//!
//! A lock name maps to a file name the way oslo.concurrency does it: every
//! `/` becomes `_` ([`lock_file_name`]); any prefix such as `cinder-` is part
//! of the name the caller passes. The result is always a single path
//! component inside the lock directory; the names `.` and `..` are refused
//! with [`ErrorKind::InvalidName`], and so are names longer than the 255 bytes
//! a file name may have. Note that `a/b` and `a_b` are the same lock, as they
//! are for oslo. [`flat_name`] is the one place that rule is written.
//!
//! With [`Layout::Tree`] a `/` makes subdirectories instead, as tooz's
//! `file://` driver does ([`lock_file_path`]).

use std::borrow::{Borrow, Cow};
use std::ffi::OsStr;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use locks_core::{Error, ErrorKind, LockName, Result};

use crate::Layout;

/// The longest file name (in bytes) most file systems accept (`NAME_MAX`).
const MAX_FILE_NAME: usize = 255;

/// The path, relative to the lock directory, that `name` is locked through.
///
/// ```
/// use locks_core::LockName;
/// use locks_file::{Layout, lock_file_path};
/// use std::path::Path;
/// let name = LockName::new("cinder-a//b/./c")?;
/// assert_eq!(lock_file_path(&name, Layout::Flat)?, Path::new("cinder-a__b_._c"));
/// assert_eq!(lock_file_path(&name, Layout::Tree)?, Path::new("cinder-a/b/c"));
/// assert!(lock_file_path(&LockName::new("a/../../x")?, Layout::Tree).is_err());
/// assert!(lock_file_path(&LockName::new("groups")?, Layout::Tree).is_err());
/// # Ok::<(), locks_core::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidName`] as [`lock_file_name`] for the flat layout; for
/// the tree layout, absolute names, names that leave the directory or
/// normalise to nothing, components longer than 255 bytes, and tooz's
/// reserved paths.
pub fn lock_file_path(name: &LockName, layout: Layout) -> Result<PathBuf> {
    if layout == Layout::Flat {
        return flat_name(name).map(|file| PathBuf::from(file.into_owned()));
    }
    let refuse = |why: &str| {
        Error::new(
            ErrorKind::InvalidName,
            format!(
                "lock name {:?} cannot be a lock file path in the tree layout: {why}",
                name.as_str()
            ),
        )
    };
    if name.as_str().starts_with('/') {
        return Err(refuse("it is absolute (tooz refuses such names too)"));
    }
    let mut parts: Vec<&str> = Vec::new();
    for part in name.as_str().split('/') {
        match part {
            "" | "." => {}
            ".." => {
                if parts.pop().is_none() {
                    return Err(refuse("it leaves the lock directory"));
                }
            }
            _ if part.len() > MAX_FILE_NAME => {
                return Err(refuse("a path component is longer than 255 bytes"));
            }
            _ => parts.push(part),
        }
    }
    if parts.is_empty() {
        return Err(refuse("it names the lock directory itself"));
    }
    if matches!(parts.as_slice(), ["groups"] | ["tmp"] | [".driver_lock"]) {
        return Err(refuse(
            "tooz reserves `groups`, `tmp` and `.driver_lock` in its directory",
        ));
    }
    Ok(parts.iter().collect())
}

/// The file name `name` is locked through: every `/` replaced by `_`, as
/// oslo.concurrency does.
///
/// ```
/// use locks_core::LockName;
/// assert_eq!(locks_file::lock_file_name(&LockName::new("cinder-a/b/c")?)?, "cinder-a_b_c");
/// assert!(locks_file::lock_file_name(&LockName::new("..")?).is_err());
/// # Ok::<(), locks_core::Error>(())
/// ```
///
/// # Errors
/// [`ErrorKind::InvalidName`] for `.` and `..`, and for names longer than 255 bytes.
pub fn lock_file_name(name: &LockName) -> Result<String> {
    flat_name(name).map(Cow::into_owned)
}

/// The flat-layout file name of `name`: every `/` replaced by `_`, borrowed
/// from the name when it has none. The one copy of oslo.concurrency's rule.
///
/// # Errors
/// As [`lock_file_name`].
fn flat_name(name: &LockName) -> Result<Cow<'_, str>> {
    let text = name.as_str();
    // Replacing `/` keeps the length, and gives `.` or `..` only for those
    // names themselves: the checks hold for the name as for the file name.
    if text == "." || text == ".." {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "lock name {text:?} cannot be used as a lock file name: `.` and `..` name \
                 directories; choose another name"
            ),
        ));
    }
    if text.len() > MAX_FILE_NAME {
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "lock name `{}...` is {} bytes long, but a lock file name may have at most \
                 {MAX_FILE_NAME}; use a shorter name",
                text.chars().take(40).collect::<String>(),
                text.len()
            ),
        ));
    }
    Ok(if text.contains('/') {
        Cow::Owned(text.replace('/', "_"))
    } else {
        Cow::Borrowed(text)
    })
}

/// The path of a lock file inside the lock directory: the key of the
/// in-process turns and of the cache. Cheap to clone.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Key(Arc<[u8]>);

impl Key {
    /// The bytes of the path of `name` inside the lock directory in
    /// `layout`: borrowed from the name when it has no `/` to replace in the
    /// flat layout.
    ///
    /// # Errors
    /// As [`lock_file_path`].
    pub(crate) fn relative(name: &LockName, layout: Layout) -> Result<Cow<'_, [u8]>> {
        Ok(match layout {
            Layout::Tree => Cow::Owned(lock_file_path(name, layout)?.into_os_string().into_vec()),
            Layout::Flat => match flat_name(name)? {
                Cow::Borrowed(text) => Cow::Borrowed(text.as_bytes()),
                Cow::Owned(text) => Cow::Owned(text.into_bytes()),
            },
        })
    }

    /// The path relative to the lock directory.
    pub(crate) fn path(&self) -> &Path {
        Path::new(OsStr::from_bytes(&self.0))
    }
}

impl From<&[u8]> for Key {
    fn from(relative: &[u8]) -> Key {
        Key(Arc::from(relative))
    }
}

impl Borrow<[u8]> for Key {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        // As the bytes hash, for `Borrow<[u8]>`.
        self.0[..].hash(state);
    }
}

impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.path(), f)
    }
}
