#!/usr/bin/env bash
# The benchmarks of BENCHMARKS.md: starts a throw-away etcd, ZooKeeper and
# Redis on 127.0.0.1 (ci/etcd.sh, ci/zookeeper.sh, ci/redis.sh), builds `locks-bench` and the C ABI
# in release, runs `locks-bench run` against them, and stops the servers.
#
#   bash ci/bench.sh            # the full run (about two minutes on 2 cores)
#   bash ci/bench.sh --quick    # under a minute
#
# Extra arguments go to `locks-bench run` (`--quick`, `--only memory,file`).
# Set LOCKS_TEST_PYTHON to a Python with oslo.concurrency, tooz, etcd3gw and
# kazoo (and redis-py) to add the rows against the Python tools. Servers and tools already
# installed by ci/install.sh are used; this script installs nothing.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/locks/target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

state=$(mktemp -d -t locks-bench.XXXXXX)
cleanup() {
    bash ci/redis.sh stop "$state/redis" >/dev/null 2>&1 || true
    bash ci/zookeeper.sh stop "$state" >/dev/null 2>&1 || true
    bash ci/etcd.sh stop "$state" >/dev/null 2>&1 || true
    rm -rf "$state"
}
trap cleanup EXIT

cargo build --release --quiet -p locks-bench -p locks-ffi

if command -v etcd >/dev/null; then
    bash ci/etcd.sh start "$state" >&2
    set -a; . "$state/etcd.env"; set +a
else
    echo "bench.sh: no \`etcd\` installed (ci/install.sh): the etcd rows are skipped" >&2
fi
if command -v java >/dev/null && [ -f "${ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}" ]; then
    bash ci/zookeeper.sh start "$state" >&2
    set -a; . "$state/zookeeper.env"; set +a
else
    echo "bench.sh: no ZooKeeper installed (ci/install.sh): the ZooKeeper rows are skipped" >&2
fi
if command -v redis-server >/dev/null && command -v redis-sentinel >/dev/null; then
    bash ci/redis.sh start "$state/redis" >&2
    set -a; . "$state/redis/redis.env"; set +a
else
    echo "bench.sh: no Redis installed (ci/install.sh): the Redis rows are skipped" >&2
fi

"$CARGO_TARGET_DIR/release/locks-bench" run "$@"
