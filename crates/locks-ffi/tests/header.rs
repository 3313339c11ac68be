//! `include/locks.h` is what the pinned cbindgen generates from the source,
//! and its version macros are the crate version.

use std::path::{Path, PathBuf};

fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn header_path() -> PathBuf {
    crate_dir().join("../../include/locks.h")
}

/// The Go package's copy of the header, inside its module.
fn go_header_path() -> PathBuf {
    crate_dir().join("go/locks.h")
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
        // The Go module's own copy (`go mod vendor` takes only the module).
        std::fs::write(go_header_path(), &generated).unwrap();
        eprintln!("wrote {} and its Go copy", path.display());
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

/// The Go module carries the header (cgo finds it in the package directory,
/// and `go mod vendor` copies only the module): the same text.
#[test]
fn the_go_modules_header_is_include_locks_h() {
    assert!(
        read(&go_header_path()) == read(&header_path()),
        "crates/locks-ffi/go/locks.h differs from include/locks.h; regenerate both with:\n\n    {REGENERATE}\n"
    );
}

/// The header compiles as the C99 (and C++) it says it needs, with every
/// warning of `-pedantic` an error.
#[test]
fn the_header_is_c99_and_cpp() {
    let dir = tempfile::tempdir().unwrap();
    let source = dir.path().join("use.c");
    std::fs::write(
        &source,
        "#include \"locks.h\"\nint main(void) { return LOCKS_STATUS_OK; }\n",
    )
    .unwrap();
    let include = header_path().parent().unwrap().to_owned();
    for (compiler, std) in [("cc", "-std=c99"), ("c++", "-std=c++11")] {
        let mut cmd = std::process::Command::new(compiler);
        if compiler == "c++" {
            cmd.args(["-x", "c++"]);
        }
        let out = cmd
            .args([
                std,
                "-pedantic",
                "-Wall",
                "-Wextra",
                "-Werror",
                "-fsyntax-only",
                "-I",
            ])
            .arg(&include)
            .arg(&source)
            .output()
            .unwrap_or_else(|e| panic!("running {compiler}: {e}"));
        assert!(
            out.status.success(),
            "{compiler} {std}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
