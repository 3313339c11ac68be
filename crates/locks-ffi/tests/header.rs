//! `include/locks.h` is what the pinned cbindgen generates from the source,
//! and its version macros are the crate version.

use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../../include/locks.h")
}

const REGENERATE: &str = "LOCKS_BLESS=1 cargo test -p locks-ffi --test header";

/// The version macros, from the crate version.
fn version_macros() -> String {
    let major = env!("CARGO_PKG_VERSION_MAJOR");
    let minor = env!("CARGO_PKG_VERSION_MINOR");
    let patch = env!("CARGO_PKG_VERSION_PATCH");
    let version = env!("CARGO_PKG_VERSION");
    format!(
        "\n/** The version of locks-ffi this header was generated from. */\n\
         #define LOCKS_VERSION_MAJOR {major}\n\
         #define LOCKS_VERSION_MINOR {minor}\n\
         #define LOCKS_VERSION_PATCH {patch}\n\
         #define LOCKS_VERSION \"{version}\"\n"
    )
}

fn generate() -> String {
    let dir = crate_dir();
    let mut config = cbindgen::Config::from_file(dir.join("cbindgen.toml")).expect("cbindgen.toml");
    config.after_includes = Some(version_macros());
    let bindings = cbindgen::Builder::new()
        .with_config(config)
        .with_src(dir.join("src/lib.rs"))
        .generate()
        .expect("cbindgen failed on crates/locks-ffi/src");
    let mut out = Vec::new();
    bindings.write(&mut out);
    String::from_utf8(out).expect("cbindgen wrote UTF-8")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn header_is_up_to_date() {
    let generated = generate();
    let path = header_path();
    if std::env::var_os("LOCKS_BLESS").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &generated).unwrap();
        eprintln!("wrote {}", path.display());
        return;
    }
    let committed = read(&path);
    if committed != generated {
        let line = committed
            .lines()
            .zip(generated.lines())
            .position(|(a, b)| a != b)
            .map_or_else(
                || committed.lines().count().min(generated.lines().count()) + 1,
                |i| i + 1,
            );
        panic!(
            "include/locks.h is out of date with crates/locks-ffi/src (first difference at line {line}).\n\
             Regenerate it with:\n\n    {REGENERATE}\n"
        );
    }
}

#[test]
fn header_version_macros_are_the_crate_version() {
    let header = read(&header_path());
    let define = |name: &str| {
        header
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .unwrap_or_else(|| panic!("include/locks.h has no {name}; run {REGENERATE}"))
            .trim()
            .to_owned()
    };
    assert_eq!(
        define("LOCKS_VERSION_MAJOR"),
        env!("CARGO_PKG_VERSION_MAJOR")
    );
    assert_eq!(
        define("LOCKS_VERSION_MINOR"),
        env!("CARGO_PKG_VERSION_MINOR")
    );
    assert_eq!(
        define("LOCKS_VERSION_PATCH"),
        env!("CARGO_PKG_VERSION_PATCH")
    );
    assert_eq!(
        define("LOCKS_VERSION"),
        format!("\"{}\"", env!("CARGO_PKG_VERSION"))
    );
    // And the library says the same at run time.
    // SAFETY: locks_version returns a static NUL-terminated string.
    let runtime = unsafe { std::ffi::CStr::from_ptr(locks_ffi::locks_version()) };
    assert_eq!(runtime.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
}
