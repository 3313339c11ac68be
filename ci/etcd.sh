#!/usr/bin/env bash
# Starts and stops a throw-away etcd (Debian's `etcd-server` package) for the
# integration tests of locks-etcd.
#
#   ci/etcd.sh start STATE_DIR      # start on 127.0.0.1 with free ports, wait for health
#   ci/etcd.sh start-tls STATE_DIR [client-auth] [server-cert=NAME]  # the same over TLS
#                                   #   (certificates of ci/tls.sh); with `client-auth`, clients
#                                   #   must present one; `server-cert=expired` or `=wrong-host`
#                                   #   presents that certificate of ci/tls.sh instead of server.pem
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
# `start-tls` makes throw-away TLS material with ci/tls.sh in STATE_DIR/tls
# (ca.pem, client.pem, client-key.pem, other-ca.pem, ... see its header) and
# writes STATE_DIR/etcd-tls.env instead of etcd.env (so both kinds can be
# sourced together):
#
#   LOCKS_TEST_ETCD_TLS=127.0.0.1:PORT        (LOCKS_TEST_ETCD_MTLS with client-auth)
#   LOCKS_TEST_ETCD_TLS_DIR=STATE_DIR/tls     (LOCKS_TEST_ETCD_MTLS_DIR)
#   LOCKS_TEST_ETCD_TLS_PID=PID               (LOCKS_TEST_ETCD_MTLS_PID)
#   LOCKS_TEST_ETCD_TLS_CA=STATE_DIR/tls/ca.pem, LOCKS_TEST_ETCD_TLS_CERT=…/client.pem,
#   LOCKS_TEST_ETCD_TLS_KEY=…/client-key.pem  (the same with _MTLS_)
#   LOCKS_TEST_ETCD_TLS_URL=https://127.0.0.1:PORT  (LOCKS_TEST_ETCD_MTLS_URL)
#
# The server presents server.pem (SAN 127.0.0.1, localhost) from
# --cert-file/--key-file; with `client-auth` it also runs with
# --client-cert-auth --trusted-ca-file ca.pem.
#
# A cluster of N members on 127.0.0.1 (heartbeat 100 ms, election timeout 1 s),
# each member a process of its own with its own ports and data dir:
#
#   ci/etcd.sh start-cluster STATE_DIR N   # start N members, wait until every one is healthy
#   ci/etcd.sh leader STATE_DIR            # prints "INDEX ADDRESS PID" of the leader (waits up to 15 s for one)
#   ci/etcd.sh stop-member STATE_DIR I [SIGNAL]  # stop member I (1-based) with SIGTERM, or e.g. KILL
#   ci/etcd.sh start-member STATE_DIR I    # start member I again on its ports and data dir
#   ci/etcd.sh stop STATE_DIR              # stops every member (and a plain `start` server there)
#
# `start-cluster` writes STATE_DIR/etcd-cluster.env:
#
#   LOCKS_TEST_ETCD_CLUSTER=127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
#   LOCKS_TEST_ETCD_CLUSTER_STATE=STATE_DIR   (absolute, for stop-member / start-member)
#   LOCKS_TEST_ETCD_M1=127.0.0.1:P1   LOCKS_TEST_ETCD_M1_PID=PID   LOCKS_TEST_ETCD_M1_PEER_PORT=PORT
#   ... one triple per member; a stopped member's PID is empty.
#
# This script installs nothing: ci/install.sh provides `etcd` and `etcdctl`.
set -euo pipefail
SELF=etcd.sh
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

usage() {
    echo "usage: $0 start|stop|restart STATE_DIR | start-tls STATE_DIR [client-auth] [server-cert=NAME]" >&2
    echo "       $0 start-cluster STATE_DIR N | leader STATE_DIR | stop-member STATE_DIR I [SIGNAL] | start-member STATE_DIR I" >&2
    exit 2
}

[ $# -ge 2 ] || usage
tls=false
client_auth=false
server_cert=server
action=$1
state=$2

start() {
    command -v etcd >/dev/null || { echo "etcd.sh: \`etcd\` is not installed (run ci/install.sh)" >&2; exit 1; }
    command -v etcdctl >/dev/null || { echo "etcd.sh: \`etcdctl\` is not installed (run ci/install.sh)" >&2; exit 1; }
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    local env_file=$state/etcd.env
    $tls && env_file=$state/etcd-tls.env
    if [ -f "$env_file" ]; then
        echo "etcd.sh: $env_file exists: a server may still run there (ci/etcd.sh stop $state)" >&2
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
        bash "$(dirname "$0")/tls.sh" "$state/tls"
        tls_args=(--cert-file "$state/tls/$server_cert.pem" --key-file "$state/tls/$server_cert-key.pem")
        ctl_args=(--cacert "$state/tls/ca.pem")
        # A certificate clients must refuse: the probe checks only that etcd serves.
        [ "$server_cert" = server ] || ctl_args+=(--insecure-skip-tls-verify)
        if $client_auth; then
            tls_args+=(--client-cert-auth --trusted-ca-file "$state/tls/ca.pem")
            ctl_args+=(--cert "$state/tls/client.pem" --key "$state/tls/client-key.pem")
        fi
    fi
    local client="$scheme://127.0.0.1:$client_port"
    local peer="http://127.0.0.1:$peer_port"
    launch
    if $tls; then
        local var=LOCKS_TEST_ETCD_TLS
        $client_auth && var=LOCKS_TEST_ETCD_MTLS
        printf '%s=127.0.0.1:%s\n%s_DIR=%s\n%s_PID=%s\n' \
            "$var" "$client_port" "$var" "$state/tls" "$var" "$pid" >"$env_file"
        printf '%s_CA=%s\n%s_CERT=%s\n%s_KEY=%s\n%s_URL=%s\n' \
            "$var" "$state/tls/ca.pem" "$var" "$state/tls/client.pem" "$var" "$state/tls/client-key.pem" \
            "$var" "$client" >>"$env_file"
    else
        printf 'LOCKS_TEST_ETCD=127.0.0.1:%s\nLOCKS_TEST_ETCD_PID=%s\nLOCKS_TEST_ETCD_PEER_PORT=%s\n' \
            "$client_port" "$pid" "$peer_port" >"$env_file"
    fi
    echo "etcd.sh: etcd (pid $pid) is healthy on $client; environment in $env_file"
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
    local cluster=false
    if [ -f "$state/etcd-cluster.env" ]; then
        stop_cluster
        cluster=true
    fi
    if [ -f "$state/etcd-tls.env" ]; then
        stop_pid "$(sed -n 's/^LOCKS_TEST_ETCD_M\{0,1\}TLS_PID=//p' "$state/etcd-tls.env")"
        rm -f "$state/etcd-tls.env"
        rm -rf "$state/etcd-data" "$state/tls"
        cluster=true
    fi
    if [ ! -f "$state/etcd.env" ]; then
        $cluster || echo "etcd.sh: no $state/etcd.env, etcd-tls.env or etcd-cluster.env: nothing to stop" >&2
        return 0
    fi
    local pid
    pid=$(sed -n 's/^LOCKS_TEST_ETCD_PID=//p' "$state/etcd.env")
    stop_pid "$pid"
    rm -f "$state/etcd.env"
    rm -rf "$state/etcd-data"
    echo "etcd.sh: stopped etcd (pid ${pid:-?})"
}

# --- clusters -----------------------------------------------------------------

cluster_env() { echo "$state/etcd-cluster.env"; }

# Starts member $1 of the cluster described by $initial_cluster in the
# background, on its ports and data dir; sets $pid.
launch_member() {
    local i=$1 client_port peer_port
    client_port=$(cluster_get "LOCKS_TEST_ETCD_M$i" | sed 's/^127.0.0.1://')
    peer_port=$(cluster_get "LOCKS_TEST_ETCD_M${i}_PEER_PORT")
    local initial
    initial=$(cluster_get LOCKS_TEST_ETCD_CLUSTER_PEERS)
    # A member restarted on its data dir ignores the --initial-* flags.
    etcd --name "m$i" \
        --data-dir "$state/etcd-m$i-data" \
        --listen-client-urls "http://127.0.0.1:$client_port" --advertise-client-urls "http://127.0.0.1:$client_port" \
        --listen-peer-urls "http://127.0.0.1:$peer_port" --initial-advertise-peer-urls "http://127.0.0.1:$peer_port" \
        --initial-cluster "$initial" --initial-cluster-state new --initial-cluster-token "locks-test-$$" \
        --heartbeat-interval 100 --election-timeout 1000 \
        >>"$state/etcd-m$i.log" 2>&1 </dev/null &
    pid=$!
    cluster_set "LOCKS_TEST_ETCD_M${i}_PID" "$pid"
}

# Waits (30 s at most) until member $1 answers `etcdctl $2` (`endpoint health`,
# which needs a quorum, or `endpoint status`, which does not).
wait_member() {
    local i=$1 probe=$2 addr pid
    addr=$(cluster_get "LOCKS_TEST_ETCD_M$i")
    pid=$(cluster_get "LOCKS_TEST_ETCD_M${i}_PID")
    local deadline=$((SECONDS + 30))
    # shellcheck disable=SC2086
    until ETCDCTL_API=3 etcdctl --endpoints "http://$addr" --dial-timeout 1s --command-timeout 2s \
        $probe >/dev/null 2>&1; do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "etcd.sh: member $i (pid $pid) exited during startup; its log:" >&2
            tail -n 50 "$state/etcd-m$i.log" >&2
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "etcd.sh: member $i on $addr does not answer \`etcdctl $probe\` after 30 s; its log:" >&2
            tail -n 50 "$state/etcd-m$i.log" >&2
            exit 1
        fi
        sleep 0.2
    done
}

start_cluster() {
    local n=$1
    case "$n" in '' | *[!0-9]*) usage ;; esac
    [ "$n" -ge 1 ] && [ "$n" -le 9 ] || { echo "etcd.sh: a cluster has 1 to 9 members, not $n" >&2; exit 2; }
    command -v etcd >/dev/null || { echo "etcd.sh: \`etcd\` is not installed (run ci/install.sh)" >&2; exit 1; }
    command -v etcdctl >/dev/null || { echo "etcd.sh: \`etcdctl\` is not installed (run ci/install.sh)" >&2; exit 1; }
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if [ -f "$(cluster_env)" ]; then
        echo "etcd.sh: $(cluster_env) exists: a cluster may still run there (ci/etcd.sh stop $state)" >&2
        exit 1
    fi
    local ports=() port i
    while [ ${#ports[@]} -lt $((2 * n)) ]; do
        port=$(free_port)
        [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
    done
    local members=() peers=() lines=()
    for ((i = 1; i <= n; i++)); do
        local client_port=${ports[$((2 * i - 2))]} peer_port=${ports[$((2 * i - 1))]}
        members+=("127.0.0.1:$client_port")
        peers+=("m$i=http://127.0.0.1:$peer_port")
        lines+=("LOCKS_TEST_ETCD_M$i=127.0.0.1:$client_port" "LOCKS_TEST_ETCD_M${i}_PID=" "LOCKS_TEST_ETCD_M${i}_PEER_PORT=$peer_port")
        rm -rf "$state/etcd-m$i-data"
    done
    {
        echo "LOCKS_TEST_ETCD_CLUSTER=$(IFS=,; echo "${members[*]}")"
        echo "LOCKS_TEST_ETCD_CLUSTER_STATE=$state"
        echo "LOCKS_TEST_ETCD_CLUSTER_PEERS=$(IFS=,; echo "${peers[*]}")"
        printf '%s\n' "${lines[@]}"
    } >"$(cluster_env)"
    # Every member must run before any can elect a leader.
    for ((i = 1; i <= n; i++)); do
        launch_member "$i"
    done
    for ((i = 1; i <= n; i++)); do
        if ! (wait_member "$i" "endpoint health"); then
            stop_cluster
            exit 1
        fi
    done
    echo "etcd.sh: $n-member etcd cluster is healthy on $(cluster_get LOCKS_TEST_ETCD_CLUSTER); environment in $(cluster_env)"
}

# Prints "INDEX ADDRESS PID" of the member that is the leader now.
leader() {
    state=$(cd "$state" && pwd)
    [ -f "$(cluster_env)" ] || { echo "etcd.sh: no $(cluster_env): start-cluster first" >&2; exit 1; }
    local deadline=$((SECONDS + 15)) i addr pid out
    while true; do
        for ((i = 1; ; i++)); do
            addr=$(cluster_get "LOCKS_TEST_ETCD_M$i")
            [ -n "$addr" ] || break
            pid=$(cluster_get "LOCKS_TEST_ETCD_M${i}_PID")
            [ -n "$pid" ] || continue
            out=$(ETCDCTL_API=3 etcdctl --endpoints "http://$addr" --dial-timeout 1s --command-timeout 1s \
                endpoint status -w json 2>/dev/null) || continue
            if python3 -c 'import json, sys
s = json.load(sys.stdin)[0]["Status"]
sys.exit(0 if s["leader"] == s["header"]["member_id"] else 1)' <<<"$out"; then
                echo "$i $addr $pid"
                return 0
            fi
        done
        if [ $SECONDS -ge $deadline ]; then
            echo "etcd.sh: no member of $(cluster_get LOCKS_TEST_ETCD_CLUSTER) is the leader after 15 s" >&2
            exit 1
        fi
        sleep 0.1
    done
}

member_index() {
    local i=$1
    case "$i" in '' | *[!0-9]*) usage ;; esac
    state=$(cd "$state" && pwd)
    [ -f "$(cluster_env)" ] || { echo "etcd.sh: no $(cluster_env): start-cluster first" >&2; exit 1; }
    [ -n "$(cluster_get "LOCKS_TEST_ETCD_M$i")" ] || { echo "etcd.sh: the cluster has no member $i" >&2; exit 1; }
}

stop_member() {
    local i=$1 signal=${2:-TERM}
    member_index "$i"
    local pid
    pid=$(cluster_get "LOCKS_TEST_ETCD_M${i}_PID")
    stop_pid "$pid" "$signal"
    cluster_set "LOCKS_TEST_ETCD_M${i}_PID" ""
    echo "etcd.sh: stopped member $i (pid ${pid:-none}, SIG$signal)"
}

start_member() {
    local i=$1
    member_index "$i"
    local old
    old=$(cluster_get "LOCKS_TEST_ETCD_M${i}_PID")
    if alive "$old"; then
        echo "etcd.sh: member $i runs already (pid $old)" >&2
        exit 1
    fi
    launch_member "$i"
    # Without the others the member may have no quorum: wait only until it serves.
    wait_member "$i" "endpoint status"
    echo "etcd.sh: started member $i (pid $pid) on $(cluster_get "LOCKS_TEST_ETCD_M$i") with its data dir"
}

stop_cluster() {
    local i pid
    for ((i = 1; ; i++)); do
        [ -n "$(cluster_get "LOCKS_TEST_ETCD_M$i")" ] || break
        pid=$(cluster_get "LOCKS_TEST_ETCD_M${i}_PID")
        stop_pid "$pid" TERM
        rm -rf "$state/etcd-m$i-data"
    done
    rm -f "$(cluster_env)"
    echo "etcd.sh: stopped the cluster in $state"
}

case "$action" in
    start-cluster) [ $# -eq 3 ] || usage; start_cluster "$3" ;;
    leader) [ $# -eq 2 ] || usage; leader ;;
    stop-member) [ $# -ge 3 ] && [ $# -le 4 ] || usage; stop_member "$3" "${4:-TERM}" ;;
    start-member) [ $# -eq 3 ] || usage; start_member "$3" ;;
    start) [ $# -eq 2 ] || usage; start ;;
    start-tls)
        [ $# -le 4 ] || usage
        tls=true
        for option in "${@:3}"; do
            case "$option" in
                client-auth) client_auth=true ;;
                server-cert=expired | server-cert=wrong-host) server_cert=${option#server-cert=} ;;
                *) usage ;;
            esac
        done
        start ;;
    stop) [ $# -eq 2 ] || usage; stop ;;
    restart) [ $# -eq 2 ] || usage; restart ;;
    *) usage ;;
esac
