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
# The server allows sessions of 1 s to 60 s (tickTime 500 ms), so tests can
# let sessions expire quickly. This script installs nothing (ci/install.sh
# provides the package); set ZOOKEEPER_JAR to use another jar.
set -euo pipefail

JAR=${ZOOKEEPER_JAR:-/usr/share/java/zookeeper.jar}

usage() {
    echo "usage: $0 start|stop STATE_DIR" >&2
    exit 2
}

[ $# -eq 2 ] || usage
action=$1
state=$2

# A TCP port on 127.0.0.1 that is free right now.
free_port() {
    python3 -c 'import socket
with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    print(s.getsockname()[1])'
}

# Whether PID runs (a zombie left for a parent that does not reap counts as gone).
alive() {
    kill -0 "$1" 2>/dev/null || return 1
    local st
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null || true)
    [ "$st" != Z ]
}

# Prints the server's answer to the four-letter command `ruok` ("imok" when it serves).
ruok() {
    python3 - "$1" <<'EOF' 2>/dev/null || true
import socket, sys
try:
    with socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=1) as s:
        s.sendall(b"ruok")
        s.shutdown(socket.SHUT_WR)
        print(s.recv(16).decode(errors="replace"))
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

    local deadline=$((SECONDS + 30))
    until [ "$(ruok "$port")" = imok ]; do
        if ! alive "$pid"; then
            echo "zookeeper.sh: ZooKeeper exited during startup; its log:" >&2
            cat "$state/zookeeper.log" >&2
            exit 1
        fi
        if [ $SECONDS -ge $deadline ]; then
            echo "zookeeper.sh: ZooKeeper on 127.0.0.1:$port does not answer \`ruok\` after 30 s; its log:" >&2
            cat "$state/zookeeper.log" >&2
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
            exit 1
        fi
        sleep 0.1
    done

    printf 'LOCKS_TEST_ZK=127.0.0.1:%s\nLOCKS_TEST_ZK_PID=%s\n' "$port" "$pid" >"$state/zookeeper.env"
    echo "zookeeper.sh: ZooKeeper (pid $pid) serves 127.0.0.1:$port; environment in $state/zookeeper.env"
}

stop() {
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

case "$action" in
    start) start ;;
    stop) stop ;;
    *) usage ;;
esac
