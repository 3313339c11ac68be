#!/usr/bin/env bash
# The whole test suite, as CI runs it: installs what the tests need, starts a
# throw-away etcd and ZooKeeper on 127.0.0.1, checks formatting and lints, runs
# every test of every crate against them, and stops the servers.
#
#   bash ci/test.sh
#
# Build artefacts go to $CARGO_TARGET_DIR (default: ~/.cache/locks/target), so
# a second run on the same machine rebuilds only what changed.
set -euo pipefail
cd "$(dirname "$0")/.."

bash ci/install.sh

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/locks/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# Without a server the server suites fail instead of skipping.
export CI="${CI:-true}"

state=$(mktemp -d -t locks-ci.XXXXXX)
cleanup() {
    bash ci/zookeeper.sh stop "$state" >/dev/null 2>&1 || true
    bash ci/etcd.sh stop "$state" >/dev/null 2>&1 || true
    rm -rf "$state"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "servers"
bash ci/etcd.sh start "$state"
bash ci/zookeeper.sh start "$state"
set -a
. "$state/etcd.env"
. "$state/zookeeper.env"
set +a

step "python venv (oslo.concurrency, tooz) for the OpenStack interop tests"
bash ci/python.sh >"$state/python.env"
set -a
. "$state/python.env"
set +a

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the facade without server backends pulls in no gRPC or ZooKeeper client"
if cargo tree -p locks --no-default-features --edges normal --prefix none | grep -E '^(tonic|etcd-client|zookeeper-client) '; then
    echo "locks --no-default-features depends on a server client" >&2
    exit 1
fi

step "tests"
if command -v cargo-nextest >/dev/null; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi
