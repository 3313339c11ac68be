//! Link settings of the shared library (Linux): the soname C programs record
//! (`liblocks.so.0`, the name `ci/install-c.sh` installs it under), and only
//! the `locks_*` functions exported (the section start/stop symbols a
//! dependency's `linkme` slices make would otherwise be exported too).

fn main() {
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    if os == "linux" {
        println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,liblocks.so.0");
        println!("cargo:rustc-cdylib-link-arg=-Wl,-z,start-stop-visibility=hidden");
    }
}
