#!/usr/bin/env bash
# A throw-away ZooKeeper (Debian's `zookeeper` package, 3.8) on 127.0.0.1 for
# the integration tests of locks-zookeeper.
#
#   ci/zookeeper.sh start STATE_DIR   # write zoo.cfg, start the server, wait for `ruok`
#   ci/zookeeper.sh stop STATE_DIR    # stop the server started in STATE_DIR
#
# Everything lives under STATE_DIR, under names of its own so that the other
# server scripts can share the directory: zoo.cfg, the data directory
# (STATE_DIR/zookeeper-data), the server log (STATE_DIR/zookeeper.log) and
# STATE_DIR/zookeeper.env with
#
#   LOCKS_TEST_ZK=127.0.0.1:PORT
#   LOCKS_TEST_ZK_PID=PID
#
# for `set -a; . STATE_DIR/zookeeper.env; set +a` before `cargo test`.
#
# A server with a secure client port (TLS through Netty, PEM key and trust
# stores) on certificates of ci/tls.sh, made in STATE_DIR/tls:
#
#   ci/zookeeper.sh start-tls STATE_DIR [client-auth] [server-cert=NAME]
#       # with `client-auth`, clients must present a certificate of the test CA;
#       # `server-cert=expired` or `=wrong-host` presents that certificate of
#       # ci/tls.sh instead of server.pem (for tests of clients refusing it)
#
# It keeps zoo-tls.cfg, zookeeper-tls-data and zookeeper-tls.log apart from a
# plain server's (both can run from one STATE_DIR; `stop` stops both) and
# writes STATE_DIR/zookeeper-tls.env:
#
#   LOCKS_TEST_ZOOKEEPER_TLS=127.0.0.1:PORT         the secure client port
#   LOCKS_TEST_ZOOKEEPER_TLS_PID=PID
#   LOCKS_TEST_ZOOKEEPER_TLS_DIR=STATE_DIR/tls      every file of ci/tls.sh
#   LOCKS_TEST_ZOOKEEPER_TLS_CA=.../ca.pem, LOCKS_TEST_ZOOKEEPER_TLS_CERT=.../client.pem,
#   LOCKS_TEST_ZOOKEEPER_TLS_KEY=.../client-key.pem
#   LOCKS_TEST_ZOOKEEPER_TLS_CLIENT_AUTH=need|none  (ZooKeeper's ssl.clientAuth)
#
# The server presents server.pem (SAN 127.0.0.1, localhost) unless told
# otherwise. Its plain client
# port (which a standalone server needs) listens too, for the health check only.
# The server allows sessions of 1 s to 60 s (tickTime 500 ms), so tests can
# let sessions expire quickly.
#
# An ensemble of N members on 127.0.0.1, each member a process of its own
# with its own client, quorum and election ports and data dir (with `myid`):
#
#   ci/zookeeper.sh start-cluster STATE_DIR N   # start N members, wait until each serves
#   ci/zookeeper.sh leader STATE_DIR            # prints "INDEX ADDRESS PID" of the leader (waits up to 20 s)
#   ci/zookeeper.sh stop-member STATE_DIR I [SIGNAL]  # stop member I (1-based) with SIGTERM, or e.g. KILL
#   ci/zookeeper.sh start-member STATE_DIR I    # start member I again on its ports and data dir
#   ci/zookeeper.sh stop STATE_DIR              # stops every member (and a plain `start` server there)
#
# `start-cluster` writes STATE_DIR/zookeeper-cluster.env:
#
#   LOCKS_TEST_ZK_CLUSTER=127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3
#   LOCKS_TEST_ZK_CLUSTER_STATE=STATE_DIR   (absolute, for stop-member / start-member)
#   LOCKS_TEST_ZK_M1=127.0.0.1:P1   LOCKS_TEST_ZK_M1_PID=PID
#   ... one pair per member; a stopped member's PID is empty.
#
# Members answer the four-letter words `ruok`, `srvr` and `stat` (whitelisted
# in their zoo.cfg; the admin server is off); `leader` reads `Mode: leader`
# from `srvr`. Each JVM gets a 128 MB heap (2-core CI machines).
#
# This script installs nothing (ci/install.sh provides the package); set
# ZOOKEEPER_JAR to use another jar.
set -euo pipefail
SELF=zookeeper.sh
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

JAR=${ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}

usage() {
    echo "usage: $0 start|stop STATE_DIR | start-tls STATE_DIR [client-auth] [server-cert=NAME]" >&2
    echo "       $0 start-cluster STATE_DIR N | leader STATE_DIR | stop-member STATE_DIR I [SIGNAL] | start-member STATE_DIR I" >&2
    exit 2
}

[ $# -ge 2 ] || usage
action=$1
state=$2

# Prints the server's answer to the four-letter command $2 (default `ruok`,
# which answers "imok" when the server runs).
ruok() {
    python3 - "$1" "${2:-ruok}" <<'EOF' 2>/dev/null || true
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
        s.settimeout(1)
        s.sendall(sys.argv[2].encode())
        s.shutdown(socket.SHUT_WR)
        answer = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                break
            answer += chunk
        print(answer.decode(errors="replace"))
except OSError:
    pass
EOF
}

start() {
    command -v java >/dev/null || { echo "zookeeper.sh: \`java\` is not installed (run ci/install.sh)" >&2; exit 1; }
    [ -f "$JAR" ] || { echo "zookeeper.sh: $JAR is missing: install Debian's \`zookeeper\` package (ci/install.sh)" >&2; exit 1; }
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if [ -f "$state/zookeeper.env" ]; then
        echo "zookeeper.sh: $state/zookeeper.env exists: a server may still run there (ci/zookeeper.sh stop $state)" >&2
        exit 1
    fi
    rm -rf "$state/zookeeper-data"
    mkdir -p "$state/zookeeper-data"
    local port
    port=$(free_port)
    cat >"$state/zoo.cfg" <<EOF
dataDir=$state/zookeeper-data
clientPort=$port
clientPortAddress=127.0.0.1
admin.enableServer=false
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=60000
4lw.commands.whitelist=ruok,srvr
maxClientCnxns=0
EOF

    java -Xmx256m -cp "$JAR" org.apache.zookeeper.server.ZooKeeperServerMain "$state/zoo.cfg" \
        >"$state/zookeeper.log" 2>&1 </dev/null &
    local pid=$!
    wait_ruok "$pid" "$port" "$state/zookeeper.log"

    printf 'LOCKS_TEST_ZK=127.0.0.1:%s\nLOCKS_TEST_ZK_PID=%s\n' "$port" "$pid" >"$state/zookeeper.env"
    echo "zookeeper.sh: ZooKeeper (pid $pid) serves 127.0.0.1:$port; environment in $state/zookeeper.env"
}

# Waits (30 s at most) until the server PID $1 answers `ruok` on port $2; else
# prints log $3, kills it and fails.
wait_ruok() {
    local pid=$1 port=$2 log=$3
    local deadline=$((SECONDS + 30))
    until [ "$(ruok "$port")" = imok ]; do
        if ! alive "$pid"; then
            echo "zookeeper.sh: ZooKeeper exited during startup; its log:" >&2
            cat "$log" >&2
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "zookeeper.sh: ZooKeeper on 127.0.0.1:$port does not answer \`ruok\` after 30 s; its log:" >&2
            cat "$log" >&2
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done
}

# Waits (30 s at most) until something accepts TCP connections on 127.0.0.1:$1.
wait_listening() {
    local port=$1 deadline=$((SECONDS + 30))
    until python3 -c 'import socket, sys
socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1).close()' "$port" 2>/dev/null; do
        if [ $SECONDS -ge $deadline ]; then
            echo "zookeeper.sh: nothing listens on the secure port 127.0.0.1:$port after 30 s" >&2
            return 1
        fi
        sleep 0.1
    done
}

start_tls() {
    local client_auth=$1 server_cert=$2
    command -v java >/dev/null || { echo "zookeeper.sh: \`java\` is not installed (run ci/install.sh)" >&2; exit 1; }
    [ -f "$JAR" ] || { echo "zookeeper.sh: $JAR is missing: install Debian's \`zookeeper\` package (ci/install.sh)" >&2; exit 1; }
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    local env_file=$state/zookeeper-tls.env
    if [ -f "$env_file" ]; then
        echo "zookeeper.sh: $env_file exists: a server may still run there (ci/zookeeper.sh stop $state)" >&2
        exit 1
    fi
    bash "$(dirname "$0")/tls.sh" "$state/tls"
    local tls=$state/tls
    # ZooKeeper's PEM key store is one file: the certificate, then its key.
    local bundle=$tls/server-bundle.pem
    if [ "$server_cert" != server ]; then
        bundle=$tls/$server_cert-bundle.pem
        cat "$tls/$server_cert.pem" "$tls/$server_cert-key.pem" >"$bundle"
    fi
    rm -rf "$state/zookeeper-tls-data"
    mkdir -p "$state/zookeeper-tls-data"
    local port secure
    port=$(free_port)
    secure=$(free_port)
    while [ "$secure" = "$port" ]; do secure=$(free_port); done
    cat >"$state/zoo-tls.cfg" <<EOF
dataDir=$state/zookeeper-tls-data
clientPort=$port
clientPortAddress=127.0.0.1
secureClientPort=$secure
secureClientPortAddress=127.0.0.1
serverCnxnFactory=org.apache.zookeeper.server.NettyServerCnxnFactory
ssl.keyStore.location=$bundle
ssl.keyStore.type=PEM
ssl.trustStore.location=$tls/ca.pem
ssl.trustStore.type=PEM
ssl.clientAuth=$client_auth
admin.enableServer=false
tickTime=500
minSessionTimeout=1000
maxSessionTimeout=60000
4lw.commands.whitelist=ruok,srvr
maxClientCnxns=0
EOF
    # Debian's zookeeper.jar names netty in its Class-Path but not the codec
    # (and what the codec needs), without which the Netty factory drops every
    # connection: add those jars of libnetty-java.
    local cp=$JAR jar
    for jar in netty-codec netty-resolver netty-transport-native-unix-common; do
        [ -f "/usr/share/java/$jar.jar" ] && cp=$cp:/usr/share/java/$jar.jar
    done
    java -Xmx256m -cp "$cp" org.apache.zookeeper.server.ZooKeeperServerMain "$state/zoo-tls.cfg" \
        >"$state/zookeeper-tls.log" 2>&1 </dev/null &
    local pid=$!
    wait_ruok "$pid" "$port" "$state/zookeeper-tls.log"
    if ! wait_listening "$secure"; then
        cat "$state/zookeeper-tls.log" >&2
        kill "$pid" 2>/dev/null || true
        exit 1
    fi
    {
        echo "LOCKS_TEST_ZOOKEEPER_TLS=127.0.0.1:$secure"
        echo "LOCKS_TEST_ZOOKEEPER_TLS_PID=$pid"
        echo "LOCKS_TEST_ZOOKEEPER_TLS_DIR=$tls"
        echo "LOCKS_TEST_ZOOKEEPER_TLS_CA=$tls/ca.pem"
        echo "LOCKS_TEST_ZOOKEEPER_TLS_CERT=$tls/client.pem"
        echo "LOCKS_TEST_ZOOKEEPER_TLS_KEY=$tls/client-key.pem"
        echo "LOCKS_TEST_ZOOKEEPER_TLS_CLIENT_AUTH=$client_auth"
    } >"$env_file"
    echo "zookeeper.sh: ZooKeeper (pid $pid) serves TLS on 127.0.0.1:$secure (ssl.clientAuth=$client_auth, $server_cert.pem); environment in $env_file"
}

# Stops the TLS server of STATE_DIR, if one was started there.
stop_tls() {
    local env_file=$state/zookeeper-tls.env
    [ -f "$env_file" ] || return 0
    local pid
    pid=$(sed -n 's/^LOCKS_TEST_ZOOKEEPER_TLS_PID=//p' "$env_file")
    stop_pid "$pid" TERM
    rm -f "$env_file"
    rm -rf "$state/zookeeper-tls-data"
    echo "zookeeper.sh: stopped the TLS ZooKeeper (pid ${pid:-?})"
}

stop() {
    if [ -d "$state" ]; then state=$(cd "$state" && pwd); fi
    if [ -f "$state/zookeeper-tls.env" ]; then
        stop_tls
        [ -f "$state/zookeeper.env" ] || [ -f "$state/zookeeper-cluster.env" ] || return 0
    fi
    if [ -f "$state/zookeeper-cluster.env" ]; then
        stop_cluster
        [ -f "$state/zookeeper.env" ] || return 0
    fi
    if [ ! -f "$state/zookeeper.env" ]; then
        echo "zookeeper.sh: no $state/zookeeper.env: nothing to stop" >&2
        return 0
    fi
    local pid
    pid=$(sed -n 's/^LOCKS_TEST_ZK_PID=//p' "$state/zookeeper.env")
    if [ -n "$pid" ] && alive "$pid"; then
        # A test may have paused it with SIGSTOP: let it run so it can exit.
        kill -CONT "$pid" 2>/dev/null || true
        kill "$pid" 2>/dev/null || true
        local deadline=$((SECONDS + 15))
        while alive "$pid"; do
            if [ $SECONDS -ge $deadline ]; then
                echo "zookeeper.sh: ZooKeeper (pid $pid) still runs 15 s after SIGTERM; sending SIGKILL" >&2
                kill -KILL "$pid" 2>/dev/null || true
                break
            fi
            sleep 0.1
        done
    fi
    rm -f "$state/zookeeper.env"
    rm -rf "$state/zookeeper-data"
    echo "zookeeper.sh: stopped ZooKeeper (pid ${pid:-?})"
}

# --- ensembles ----------------------------------------------------------------

cluster_env() { echo "$state/zookeeper-cluster.env"; }

# Starts member $1 in the background on its ports and data dir; sets $pid.
launch_member() {
    local i=$1
    java -Xmx128m -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -cp "$JAR" \
        org.apache.zookeeper.server.quorum.QuorumPeerMain "$state/zk-m$i/zoo.cfg" \
        >>"$state/zk-m$i/zookeeper.log" 2>&1 </dev/null &
    pid=$!
    cluster_set "LOCKS_TEST_ZK_M${i}_PID" "$pid"
}

# Waits (60 s at most) until member $1 answers `srvr` with a mode (it serves:
# it has a quorum), or with $2=any, until it answers `ruok` at all.
wait_member() {
    local i=$1 what=${2:-serving} addr port pid
    addr=$(cluster_get "LOCKS_TEST_ZK_M$i")
    port=${addr##*:}
    pid=$(cluster_get "LOCKS_TEST_ZK_M${i}_PID")
    local deadline=$((SECONDS + 60))
    while true; do
        if [ "$what" = any ]; then
            [ "$(ruok "$port")" = imok ] && return 0
        else
            ruok "$port" srvr | grep -q '^Mode: ' && return 0
        fi
        if ! alive "$pid"; then
            echo "zookeeper.sh: member $i (pid $pid) exited during startup; its log:" >&2
            tail -n 50 "$state/zk-m$i/zookeeper.log" >&2
            return 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "zookeeper.sh: member $i on $addr does not serve after 60 s; its log:" >&2
            tail -n 50 "$state/zk-m$i/zookeeper.log" >&2
            return 1
        fi
        sleep 0.2
    done
}

start_cluster() {
    local n=$1
    case "$n" in '' | *[!0-9]*) usage ;; esac
    [ "$n" -ge 1 ] && [ "$n" -le 9 ] || { echo "zookeeper.sh: an ensemble has 1 to 9 members, not $n" >&2; exit 2; }
    command -v java >/dev/null || { echo "zookeeper.sh: \`java\` is not installed (run ci/install.sh)" >&2; exit 1; }
    [ -f "$JAR" ] || { echo "zookeeper.sh: $JAR is missing: install Debian's \`zookeeper\` package (ci/install.sh)" >&2; exit 1; }
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if [ -f "$(cluster_env)" ]; then
        echo "zookeeper.sh: $(cluster_env) exists: an ensemble may still run there (ci/zookeeper.sh stop $state)" >&2
        exit 1
    fi
    local ports=() port i
    while [ ${#ports[@]} -lt $((3 * n)) ]; do
        port=$(free_port)
        [[ " ${ports[*]} " == *" $port "* ]] || ports+=("$port")
    done
    local members=() servers=() lines=()
    for ((i = 1; i <= n; i++)); do
        local client=${ports[$((3 * i - 3))]} quorum=${ports[$((3 * i - 2))]} election=${ports[$((3 * i - 1))]}
        members+=("127.0.0.1:$client")
        servers+=("server.$i=127.0.0.1:$quorum:$election")
        lines+=("LOCKS_TEST_ZK_M$i=127.0.0.1:$client" "LOCKS_TEST_ZK_M${i}_PID=")
    done
    for ((i = 1; i <= n; i++)); do
        local dir="$state/zk-m$i"
        rm -rf "$dir"
        mkdir -p "$dir/data"
        echo "$i" >"$dir/data/myid"
        {
            echo "dataDir=$dir/data"
            echo "clientPort=${members[$((i - 1))]##*:}"
            echo "clientPortAddress=127.0.0.1"
            echo "admin.enableServer=false"
            echo "tickTime=500"
            echo "initLimit=10"
            echo "syncLimit=4"
            echo "minSessionTimeout=1000"
            echo "maxSessionTimeout=60000"
            echo "4lw.commands.whitelist=ruok,srvr,stat"
            echo "maxClientCnxns=0"
            echo "reconfigEnabled=false"
            echo "standaloneEnabled=false"
            printf '%s\n' "${servers[@]}"
        } >"$dir/zoo.cfg"
    done
    {
        echo "LOCKS_TEST_ZK_CLUSTER=$(IFS=,; echo "${members[*]}")"
        echo "LOCKS_TEST_ZK_CLUSTER_STATE=$state"
        printf '%s\n' "${lines[@]}"
    } >"$(cluster_env)"
    for ((i = 1; i <= n; i++)); do
        launch_member "$i"
    done
    for ((i = 1; i <= n; i++)); do
        if ! wait_member "$i"; then
            stop_cluster
            exit 1
        fi
    done
    echo "zookeeper.sh: $n-member ZooKeeper ensemble serves $(cluster_get LOCKS_TEST_ZK_CLUSTER); environment in $(cluster_env)"
}

# Prints "INDEX ADDRESS PID" of the member that leads now.
leader() {
    state=$(cd "$state" && pwd)
    [ -f "$(cluster_env)" ] || { echo "zookeeper.sh: no $(cluster_env): start-cluster first" >&2; exit 1; }
    local deadline=$((SECONDS + 20)) i addr pid
    while true; do
        for ((i = 1; ; i++)); do
            addr=$(cluster_get "LOCKS_TEST_ZK_M$i")
            [ -n "$addr" ] || break
            pid=$(cluster_get "LOCKS_TEST_ZK_M${i}_PID")
            [ -n "$pid" ] || continue
            if ruok "${addr##*:}" srvr | grep -q '^Mode: leader'; then
                echo "$i $addr $pid"
                return 0
            fi
        done
        if [ $SECONDS -ge $deadline ]; then
            echo "zookeeper.sh: no member of $(cluster_get LOCKS_TEST_ZK_CLUSTER) leads after 20 s" >&2
            exit 1
        fi
        sleep 0.1
    done
}

member_index() {
    local i=$1
    case "$i" in '' | *[!0-9]*) usage ;; esac
    state=$(cd "$state" && pwd)
    [ -f "$(cluster_env)" ] || { echo "zookeeper.sh: no $(cluster_env): start-cluster first" >&2; exit 1; }
    [ -n "$(cluster_get "LOCKS_TEST_ZK_M$i")" ] || { echo "zookeeper.sh: the ensemble has no member $i" >&2; exit 1; }
}

stop_member() {
    local i=$1 signal=${2:-TERM}
    member_index "$i"
    local pid
    pid=$(cluster_get "LOCKS_TEST_ZK_M${i}_PID")
    stop_pid "$pid" "$signal"
    cluster_set "LOCKS_TEST_ZK_M${i}_PID" ""
    echo "zookeeper.sh: stopped member $i (pid ${pid:-none}, SIG$signal)"
}

start_member() {
    local i=$1
    member_index "$i"
    local old
    old=$(cluster_get "LOCKS_TEST_ZK_M${i}_PID")
    if [ -n "$old" ] && alive "$old"; then
        echo "zookeeper.sh: member $i runs already (pid $old)" >&2
        exit 1
    fi
    launch_member "$i"
    # Without the others the member has no quorum: wait only until it runs.
    wait_member "$i" any || exit 1
    echo "zookeeper.sh: started member $i (pid $pid) on $(cluster_get "LOCKS_TEST_ZK_M$i") with its data dir"
}

stop_cluster() {
    state=$(cd "$state" && pwd)
    local i pid
    for ((i = 1; ; i++)); do
        [ -n "$(cluster_get "LOCKS_TEST_ZK_M$i")" ] || break
        pid=$(cluster_get "LOCKS_TEST_ZK_M${i}_PID")
        stop_pid "$pid" TERM
        rm -rf "$state/zk-m$i"
    done
    rm -f "$(cluster_env)"
    echo "zookeeper.sh: stopped the ensemble in $state"
}

case "$action" in
    start-cluster) [ $# -eq 3 ] || usage; start_cluster "$3" ;;
    leader) [ $# -eq 2 ] || usage; leader ;;
    stop-member) [ $# -ge 3 ] && [ $# -le 4 ] || usage; stop_member "$3" "${4:-TERM}" ;;
    start-member) [ $# -eq 3 ] || usage; start_member "$3" ;;
    start) [ $# -eq 2 ] || usage; start ;;
    start-tls)
        [ $# -le 4 ] || usage
        client_auth=none server_cert=server
        for option in "${@:3}"; do
            case "$option" in
                client-auth) client_auth=need ;;
                server-cert=expired | server-cert=wrong-host) server_cert=${option#server-cert=} ;;
                *) usage ;;
            esac
        done
        start_tls "$client_auth" "$server_cert"
        ;;
    stop) [ $# -eq 2 ] || usage; stop ;;
    *) usage ;;
esac
