#!/usr/bin/env bash
# Builds the C ABI in release and installs it the way C libraries are on Linux:
#
#   bash ci/install-c.sh [PREFIX]              # default /usr/local
#   bash ci/install-c.sh --uninstall [PREFIX]  # removes exactly the files below
#
#   PREFIX/include/locks.h
#   PREFIX/lib/liblocks.so.0.1.0   (soname liblocks.so.0; only locks_* exported; no debug info)
#   PREFIX/lib/liblocks.so.0 -> liblocks.so.0.1.0, PREFIX/lib/liblocks.so -> liblocks.so.0
#   PREFIX/lib/liblocks.a          (no debug info)
#   PREFIX/lib/pkgconfig/locks.pc  (Libs.private: the system libraries the archive needs)
#   PREFIX/lib/pkgconfig/locks-static.pc  (links liblocks.a by path, with those libraries)
#
# Then a C program builds with `cc prog.c $(pkg-config --cflags --libs locks)`,
# statically with `$(pkg-config --cflags --libs locks-static)` (or with
# `pkg-config --static ... locks` where the .so is not installed), and the Go
# package with `PKG_CONFIG_PATH=PREFIX/lib/pkgconfig go build`, statically
# with `go build -tags locks_static`. Outside the linker's
# default paths, run programs with LD_LIBRARY_PATH=PREFIX/lib or link them
# with -Wl,-rpath,PREFIX/lib. Build artefacts go to $CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."

uninstall=false
if [ "${1:-}" = --uninstall ]; then
    uninstall=true
    shift
fi
[ $# -le 1 ] || { echo "usage: $0 [--uninstall] [PREFIX]" >&2; exit 2; }
prefix=${1:-/usr/local}
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
major=${version%%.*}
lib=$prefix/lib

files=("$prefix/include/locks.h" "$lib/liblocks.so.$version" "$lib/liblocks.so.$major"
    "$lib/liblocks.so" "$lib/liblocks.a" "$lib/pkgconfig/locks.pc" "$lib/pkgconfig/locks-static.pc")
if $uninstall; then
    rm -f "${files[@]}"
    echo "install-c.sh: removed the C ABI from $prefix"
    exit 0
fi

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/locks/target}"
cargo build --release --locked --quiet -p locks-ffi
built=$CARGO_TARGET_DIR/release

mkdir -p "$prefix/include" "$lib/pkgconfig"
install -m 644 include/locks.h "$prefix/include/locks.h"
install -m 755 "$built/liblocks_ffi.so" "$lib/liblocks.so.$version"
strip --strip-debug "$lib/liblocks.so.$version"
ln -sf "liblocks.so.$version" "$lib/liblocks.so.$major"
ln -sf "liblocks.so.$major" "$lib/liblocks.so"
install -m 644 "$built/liblocks_ffi.a" "$lib/liblocks.a"
# Without debug information and without the LLVM bitcode rustc embeds (no
# linker of a C program reads it).
strip --strip-debug "$lib/liblocks.a"
objcopy --remove-section .llvmbc --remove-section .llvmcmd "$lib/liblocks.a"
# The archive's system libraries, as rustc prints them (ci/test.sh checks the file).
private=$(cat crates/locks-ffi/native-static-libs.txt)
cat >"$lib/pkgconfig/locks.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: locks
Description: Named locks across process, node and global scopes (the C ABI of the locks workspace)
Version: $version
Cflags: -I\${includedir}
Libs: -L\${libdir} -llocks
Libs.private: $private
PC
# The static link whether or not the .so is installed: the linker prefers
# liblocks.so for -llocks, so this file names the archive by path.
cat >"$lib/pkgconfig/locks-static.pc" <<PC
prefix=$prefix
libdir=\${prefix}/lib
includedir=\${prefix}/include

Name: locks-static
Description: The locks C ABI, linked statically (liblocks.a)
Version: $version
Cflags: -I\${includedir}
Libs: \${libdir}/liblocks.a $private
PC
exported=$(nm -D --defined-only "$lib/liblocks.so.$version" | awk '{print $3}' | grep -vc '^locks_' || true)
if [ "$exported" != 0 ]; then
    echo "install-c.sh: liblocks.so exports $exported symbols besides locks_*:" >&2
    nm -D --defined-only "$lib/liblocks.so.$version" | grep -v ' locks_' >&2
    exit 1
fi
echo "install-c.sh: installed the C ABI $version in $prefix (pkg-config: PKG_CONFIG_PATH=$lib/pkgconfig)"
