#!/usr/bin/env bash
# Starts and stops a throw-away etcd (Debian's `etcd-server` package) for the
# integration tests of locks-etcd.
#
#   ci/etcd.sh start STATE_DIR      # start on 127.0.0.1 with free ports, wait for health
#   ci/etcd.sh start-tls STATE_DIR  # the same over TLS with client certificates
#   ci/etcd.sh stop STATE_DIR       # stop the server started in STATE_DIR
#   ci/etcd.sh restart STATE_DIR    # stop it and start it again on its ports and data dir (plain `start` only)
#
# `start` keeps everything under STATE_DIR: the data dir (STATE_DIR/etcd-data), the
# log (STATE_DIR/etcd.log) and STATE_DIR/etcd.env, which holds
#
#   LOCKS_TEST_ETCD=127.0.0.1:PORT
#   LOCKS_TEST_ETCD_PID=PID
#
# so a caller can `set -a; . STATE_DIR/etcd.env; set +a` before `cargo test`.
# `start-tls` makes a throw-away CA, server and client certificates with
# `openssl` in STATE_DIR/etcd-tls and adds to etcd.env
#
#   LOCKS_TEST_ETCD_CA=STATE_DIR/etcd-tls/ca.pem
#   LOCKS_TEST_ETCD_CERT=STATE_DIR/etcd-tls/client.pem
#   LOCKS_TEST_ETCD_KEY=STATE_DIR/etcd-tls/client-key.pem
# This script installs nothing: ci/install.sh provides `etcd` and `etcdctl`.
set -euo pipefail

usage() {
    echo "usage: $0 start|start-tls|stop|restart STATE_DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
tls=false
action=$1
state=$2

# Prints a TCP port on 127.0.0.1 that nothing listens on right now.
free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

# Writes a CA, a server certificate for 127.0.0.1 and a client certificate to $1.
make_certs() {
    local dir=$1
    command -v openssl >/dev/null || { echo "etcd.sh: start-tls needs \`openssl\`" >&2; exit 1; }
    mkdir -p "$dir"
    (
        cd "$dir"
        openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=locks-test-ca" \
            -keyout ca-key.pem -out ca.pem
        printf 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n' >server.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server-key.pem -out server.csr
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
            -extfile server.ext -out server.pem
        printf 'extendedKeyUsage=clientAuth\n' >client.ext
        openssl req -newkey rsa:2048 -nodes -subj "/CN=locks-test-client" -keyout client-key.pem -out client.csr
        openssl x509 -req -in client.csr -CA ca.pem -CAkey ca-key.pem -CAcreateserial -days 2 \
            -extfile client.ext -out client.pem
    ) >"$dir/openssl.log" 2>&1 || { echo "etcd.sh: making certificates failed:" >&2; cat "$dir/openssl.log" >&2; exit 1; }
}

start() {
    command -v etcd >/dev/null || { echo "etcd.sh: \`etcd\` is not installed (run ci/install.sh)" >&2; exit 1; }
    command -v etcdctl >/dev/null || { echo "etcd.sh: \`etcdctl\` is not installed (run ci/install.sh)" >&2; exit 1; }
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if [ -f "$state/etcd.env" ]; then
        echo "etcd.sh: $state/etcd.env exists: a server may still run there (ci/etcd.sh stop $state)" >&2
        exit 1
    fi
    rm -rf "$state/etcd-data"
    local client_port peer_port
    client_port=$(free_port)
    peer_port=$(free_port)
    while [ "$peer_port" = "$client_port" ]; do peer_port=$(free_port); done
    local scheme=http
    local tls_args=() ctl_args=()
    if $tls; then
        scheme=https
        make_certs "$state/etcd-tls"
        tls_args=(--cert-file "$state/etcd-tls/server.pem" --key-file "$state/etcd-tls/server-key.pem"
            --client-cert-auth --trusted-ca-file "$state/etcd-tls/ca.pem")
        ctl_args=(--cacert "$state/etcd-tls/ca.pem" --cert "$state/etcd-tls/client.pem" --key "$state/etcd-tls/client-key.pem")
    fi
    local client="$scheme://127.0.0.1:$client_port"
    local peer="http://127.0.0.1:$peer_port"
    launch
    printf 'LOCKS_TEST_ETCD=127.0.0.1:%s\nLOCKS_TEST_ETCD_PID=%s\nLOCKS_TEST_ETCD_PEER_PORT=%s\n' \
        "$client_port" "$pid" "$peer_port" >"$state/etcd.env"
    if $tls; then
        printf 'LOCKS_TEST_ETCD_CA=%s\nLOCKS_TEST_ETCD_CERT=%s\nLOCKS_TEST_ETCD_KEY=%s\n' \
            "$state/etcd-tls/ca.pem" "$state/etcd-tls/client.pem" "$state/etcd-tls/client-key.pem" >>"$state/etcd.env"
    fi
    echo "etcd.sh: etcd (pid $pid) is healthy on 127.0.0.1:$client_port; environment in $state/etcd.env"
}

# Starts etcd on $client and $peer with the data dir $state/etcd-data (kept if it
# exists) and waits until it is healthy; sets $pid.
launch() {
    etcd --name locks-test "${tls_args[@]}" \
        --data-dir "$state/etcd-data" \
        --listen-client-urls "$client" --advertise-client-urls "$client" \
        --listen-peer-urls "$peer" --initial-advertise-peer-urls "$peer" \
        --initial-cluster "locks-test=$peer" \
        --initial-cluster-state new \
        >>"$state/etcd.log" 2>&1 </dev/null &
    pid=$!

    local deadline=$((SECONDS + 30))
    until ETCDCTL_API=3 etcdctl --endpoints "$client" "${ctl_args[@]}" --dial-timeout 1s --command-timeout 2s \
        endpoint health >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "etcd.sh: etcd exited during startup; its log:" >&2
            cat "$state/etcd.log" >&2
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "etcd.sh: etcd on $client is not healthy after 30 s; its log:" >&2
            cat "$state/etcd.log" >&2
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.2
    done
}

# Stops the server of $state/etcd.env and starts it again on the same ports and
# data dir, so that the leases and keys it had survive (as for a real restart).
restart() {
    state=$(cd "$state" && pwd)
    [ -f "$state/etcd.env" ] || { echo "etcd.sh: no $state/etcd.env: nothing to restart" >&2; exit 1; }
    ! grep -q '^LOCKS_TEST_ETCD_CA=' "$state/etcd.env" || { echo "etcd.sh: restart supports plain \`start\` only" >&2; exit 1; }
    local old_pid client_port peer_port
    old_pid=$(sed -n 's/^LOCKS_TEST_ETCD_PID=//p' "$state/etcd.env")
    client_port=$(sed -n 's/^LOCKS_TEST_ETCD=127.0.0.1://p' "$state/etcd.env")
    peer_port=$(sed -n 's/^LOCKS_TEST_ETCD_PEER_PORT=//p' "$state/etcd.env")
    kill -CONT "$old_pid" 2>/dev/null || true
    kill "$old_pid" 2>/dev/null || true
    while kill -0 "$old_pid" 2>/dev/null; do sleep 0.1; done
    local client="http://127.0.0.1:$client_port"
    local peer="http://127.0.0.1:$peer_port"
    local ctl_args=() tls_args=()
    launch
    sed -i "s/^LOCKS_TEST_ETCD_PID=.*/LOCKS_TEST_ETCD_PID=$pid/" "$state/etcd.env"
    echo "etcd.sh: restarted etcd (pid $pid) on 127.0.0.1:$client_port with its data dir"
}

stop() {
    if [ ! -f "$state/etcd.env" ]; then
        echo "etcd.sh: no $state/etcd.env: nothing to stop" >&2
        return 0
    fi
    local pid
    pid=$(sed -n 's/^LOCKS_TEST_ETCD_PID=//p' "$state/etcd.env")
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
        # A test may have left it stopped with SIGSTOP: continue it so it can exit.
        kill -CONT "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while kill -0 "$pid" 2>/dev/null; do
            if [ $SECONDS -ge $deadline ]; then
                echo "etcd.sh: etcd (pid $pid) ignored SIGTERM for 15 s; sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$state/etcd.env"
    rm -rf "$state/etcd-data" "$state/etcd-tls"
    echo "etcd.sh: stopped etcd (pid ${pid:-?})"
}

case "$action" in
    start) start ;;
    start-tls) tls=true; start ;;
    stop) stop ;;
    restart) restart ;;
    *) usage ;;
esac
