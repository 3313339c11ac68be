//! The node layout of kazoo's `Lock` recipe: lock directories, contender
//! names, and which children count as contenders.

use locks_core::{Error, ErrorKind, LockName, Result};

/// The marker kazoo puts between a contender's unique prefix and its sequence.
pub(crate) const MARKER: &str = "__lock__";

/// Why a path component cannot be a znode name, if it cannot.
fn check_component(component: &str) -> std::result::Result<(), &'static str> {
    if component.is_empty() {
        return Err("it has an empty path component (a leading, trailing or doubled `/`)");
    }
    if component == "." || component == ".." {
        return Err("ZooKeeper paths cannot hold `.` or `..` components");
    }
    // The characters ZooKeeper's PathUtils.validatePath refuses.
    if component.chars().any(|c| {
        matches!(c as u32,
            0x0000..=0x001f | 0x007f..=0x009f | 0xd800..=0xf8ff | 0xfff0..=0xffff)
    }) {
        return Err(
            "it holds a character ZooKeeper refuses in paths (control, private-use or U+FFF0..U+FFFF)",
        );
    }
    Ok(())
}

/// Checks a namespace: `/`-separated znode names, not starting with the
/// reserved `zookeeper` node.
pub(crate) fn check_namespace(namespace: &str) -> std::result::Result<(), &'static str> {
    if namespace.is_empty() {
        return Err("empty: give a node name such as `tooz`");
    }
    if namespace.starts_with('/') || namespace.ends_with('/') {
        return Err("write it without leading or trailing `/`");
    }
    for component in namespace.split('/') {
        check_component(component)?;
    }
    if namespace.split('/').next() == Some("zookeeper") {
        return Err("`/zookeeper` is reserved by the server: choose another namespace");
    }
    Ok(())
}

/// `/<namespace>/locks`, the parent of every lock directory.
pub(crate) fn locks_root(namespace: &str) -> String {
    format!("/{namespace}/locks")
}

/// The lock directory of `name`: `/<namespace>/locks/<name>`, as tooz builds it.
///
/// A `/` in the name makes nested directories, as with tooz. Names that cannot
/// be ZooKeeper paths, or whose components look like contender nodes (which
/// would block the parent lock forever), are [`ErrorKind::InvalidName`].
pub(crate) fn lock_dir(namespace: &str, name: &LockName) -> Result<String> {
    let text = name.as_str();
    for component in text.split('/') {
        let why = match check_component(component) {
            Err(why) => why,
            Ok(()) if contender_sequence(component).is_some() => {
                "a path component looks like a kazoo contender node (`…__lock__` and 10 digits)"
            }
            Ok(()) => continue,
        };
        return Err(Error::new(
            ErrorKind::InvalidName,
            format!(
                "lock name `{text}` cannot be used with ZooKeeper: {why}; rename the lock (a `/` separates nested nodes)"
            ),
        ));
    }
    Ok(format!("{}/{text}", locks_root(namespace)))
}

/// A new contender prefix: 32 lowercase hex digits of a random UUID and
/// `__lock__`. ZooKeeper appends the 10-digit sequence.
pub(crate) fn new_prefix() -> String {
    format!("{}{MARKER}", uuid::Uuid::new_v4().simple())
}

/// The sequence of a child that kazoo counts as a contender, i.e. one that
/// matches `(?:__lock__)(-?\d{10})$`; `None` for any other child.
pub(crate) fn contender_sequence(child: &str) -> Option<&str> {
    let bytes = child.as_bytes();
    let len = bytes.len();
    if len < MARKER.len() + 10 || !bytes[len - 10..].iter().all(u8::is_ascii_digit) {
        return None;
    }
    // The last ten bytes are ASCII, so these offsets are character boundaries.
    let digits_start = len - 10;
    let (head, start) = match bytes[digits_start - 1] {
        b'-' => (&child[..digits_start - 1], digits_start - 1),
        _ => (&child[..digits_start], digits_start),
    };
    head.ends_with(MARKER).then(|| &child[start..])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contenders_follow_kazoos_pattern() {
        let hex = "1d002e4ca4c84ee0b27928f0f1dcfaa3";
        assert_eq!(
            contender_sequence(&format!("{hex}__lock__0000000007")),
            Some("0000000007")
        );
        assert_eq!(
            contender_sequence(&format!("{hex}__lock__-2147483648")),
            Some("-2147483648")
        );
        assert_eq!(contender_sequence("__lock__0000000001"), Some("0000000001"));
        for other in [
            "_c_37469c67-9c90-47cb-be72-d68200732a29-lock-0000000000",
            "_c_xyz-lock-0000000001",
            &format!("{hex}__rlock__0000000001"),
            &format!("{hex}__lock__000000001"),
            &format!("{hex}__lock__00000000011"),
            &format!("{hex}__lock__x000000001"),
            &format!("{hex}__lock__--000000001"),
            "0000000001",
            "",
            "é__lock__000000000",
        ] {
            assert_eq!(contender_sequence(other), None, "{other}");
        }
    }

    #[test]
    fn prefixes_are_32_hex_and_the_marker() {
        let p = new_prefix();
        assert_eq!(p.len(), 32 + MARKER.len());
        assert!(
            p[..32]
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(p.ends_with(MARKER));
        assert_ne!(p, new_prefix());
        assert_eq!(
            contender_sequence(&format!("{p}0000000042")),
            Some("0000000042")
        );
    }

    #[test]
    fn lock_dirs_follow_tooz() {
        let name = |s: &str| LockName::new(s).unwrap();
        assert_eq!(
            lock_dir("tooz", &name("cinder-infinidat-10.0.0.1-lock")).unwrap(),
            "/tooz/locks/cinder-infinidat-10.0.0.1-lock"
        );
        assert_eq!(lock_dir("a/b", &name("x/y")).unwrap(), "/a/b/locks/x/y");
        for bad in [
            "/x",
            "x/",
            "a//b",
            ".",
            "a/../b",
            "a\u{e000}",
            "a\u{fff5}",
            "a/0123456789abcdef0123456789abcdef__lock__0000000001",
        ] {
            let err = lock_dir("tooz", &name(bad)).unwrap_err();
            assert_eq!(err.kind(), ErrorKind::InvalidName, "{bad}");
            assert!(err.message().contains(bad), "{err}");
        }
    }

    #[test]
    fn namespaces() {
        check_namespace("tooz").unwrap();
        check_namespace("openstack/cinder").unwrap();
        for bad in [
            "",
            "/tooz",
            "tooz/",
            "a//b",
            "..",
            "zookeeper",
            "zookeeper/x",
        ] {
            assert!(check_namespace(bad).is_err(), "{bad}");
        }
        check_namespace("zookeeperx").unwrap();
    }
}
