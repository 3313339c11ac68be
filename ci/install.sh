#!/usr/bin/env bash
# Installs what building and testing the workspace needs, from Debian's
# packages, skipping what is already there. Safe to run again.
#
#   protobuf-compiler, libprotobuf-dev  the etcd-client crate's build script (protoc + well-known protos)
#   etcd-server, etcd-client            a real etcd and etcdctl for the etcd tests
#   zookeeper                           a real ZooKeeper (Java) for the ZooKeeper tests
#   redis-server, redis-sentinel        a real Redis 7.0, replica and sentinels for the Redis tests (ci/redis.sh)
#   python3                             the oslo.concurrency-style lockf interop tests
#   openssl                             throw-away certificates for the etcd TLS test
#   gcc, libc6-dev                      `cc` for the C examples of the C ABI (examples/c)
#   golang-go                           the cgo package and Go examples of the C ABI (Go 1.19)
#   valgrind                            the C examples run under valgrind
set -euo pipefail

need=()
command -v protoc >/dev/null || need+=(protobuf-compiler)
[ -f /usr/include/google/protobuf/descriptor.proto ] || need+=(libprotobuf-dev)
command -v etcd >/dev/null || need+=(etcd-server)
command -v etcdctl >/dev/null || need+=(etcd-client)
[ -f /usr/share/java/zookeeper.jar ] || need+=(zookeeper)
command -v redis-server >/dev/null || need+=(redis-server)
command -v redis-sentinel >/dev/null || need+=(redis-sentinel)
command -v python3 >/dev/null || need+=(python3)
command -v openssl >/dev/null || need+=(openssl)
command -v cc >/dev/null || need+=(gcc)
[ -f /usr/include/stdio.h ] || need+=(libc6-dev)
command -v go >/dev/null || need+=(golang-go)
command -v valgrind >/dev/null || need+=(valgrind)

if [ ${#need[@]} -eq 0 ]; then
    echo "install.sh: everything is installed"
    exit 0
fi

echo "install.sh: installing ${need[*]}"
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -q
$sudo apt-get install -y -q --no-install-recommends "${need[@]}"
