# What the server scripts under ci/ share; sourced by them (not run).
#
#   free_port                  a TCP port on 127.0.0.1 that nothing listens on right now
#   alive PID                  whether PID runs (a zombie does not)
#   stop_pid PID [SIGNAL]      continue it (a test may have frozen it), signal it (TERM),
#                              SIGKILL after 15 s, reap it if it is our child
#   cluster_get KEY            the value of KEY in "$(cluster_env)" (the caller defines cluster_env)
#   cluster_set KEY VALUE      sets it
#
# Messages start with "$SELF: " (the sourcing script sets SELF, e.g. etcd.sh).

free_port() {
    python3 -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()'
}

alive() {
    [ -n "$1" ] && kill -0 "$1" 2>/dev/null || return 1
    local st
    st=$(sed -n 's/^State:[[:space:]]*\([A-Z]\).*/\1/p' "/proc/$1/status" 2>/dev/null || true)
    [ "$st" != Z ]
}

stop_pid() {
    local pid=$1 signal=${2:-TERM}
    alive "$pid" || return 0
    kill -CONT "$pid" 2>/dev/null || true
    kill "-$signal" "$pid" 2>/dev/null || true
    local deadline=$((SECONDS + 15))
    while alive "$pid"; do
        if [ $SECONDS -ge $deadline ]; then
            echo "$SELF: pid $pid ignored SIG$signal for 15 s; sending SIGKILL" >&2
            kill -KILL "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 15))
        fi
        sleep 0.05
    done
    # Reap it if it is our child (it is not when another invocation started it).
    wait "$pid" 2>/dev/null || true
}

cluster_get() {
    sed -n "s/^$1=//p" "$(cluster_env)"
}

cluster_set() {
    sed -i "s|^$1=.*|$1=$2|" "$(cluster_env)"
}
