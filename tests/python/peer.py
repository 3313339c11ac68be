"""The Python side of tests/tests/openstack_interop.rs.

Takes one lock through the real OpenStack libraries, exactly as Cinder does,
and is driven by one command per line on stdin; every answer is one line on
stdout.

    peer.py oslo LOCK_PATH NAME   oslo.concurrency external lock, prefix 'cinder-'
                                  (LOCK_PATH '-' leaves it to $OSLO_LOCK_PATH)
    peer.py tooz URL NAME         tooz coordinator on URL, lock b'cinder-' + NAME
    peer.py tooz-redis URL NAME   the same on tooz's redis driver (redis://), which
                                  also answers `key` (tests/tests/redis_interop.rs)

Prints READY once set up, then answers:

    try               GOT (now held) or BUSY        (non-blocking acquire)
    acquire           HELD once held                (blocking acquire)
    release           RELEASED
    contend LOG N HOLD_MS GAP_MS POLL_MS
                      DONE after N rounds of: acquire, append
                      "enter py <ns>", sleep HOLD_MS, append "exit py <ns>",
                      release, sleep GAP_MS. <ns> is CLOCK_MONOTONIC in
                      nanoseconds. POLL_MS > 0 acquires by non-blocking
                      attempts that far apart instead of a blocking acquire.
    key               KEY <the Redis key of the lock>  (tooz-redis only)
    quit              (exits)

Errors are printed as one line starting with ERROR, then the process exits 1.
"""

import contextlib
import os
import sys
import time
import uuid

PREFIX = "cinder-"


def say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


class Oslo:
    """oslo.concurrency's external lock, as cinder.utils.synchronized(external=True)."""

    def __init__(self, lock_path, name):
        from oslo_concurrency import lockutils

        self._lockutils = lockutils
        self._lock_path = None if lock_path == "-" else lock_path
        self._name = name
        self._held = None

    def _enter(self, blocking):
        stack = contextlib.ExitStack()
        try:
            stack.enter_context(
                self._lockutils.lock(
                    self._name,
                    lock_file_prefix=PREFIX,
                    external=True,
                    lock_path=self._lock_path,
                    blocking=blocking,
                    do_log=False,
                )
            )
        except self._lockutils.AcquireLockFailedException:
            return False
        self._held = stack
        return True

    def try_acquire(self):
        return self._enter(blocking=False)

    def acquire(self):
        self._enter(blocking=True)

    def release(self):
        held, self._held = self._held, None
        held.close()

    def stop(self):
        if self._held is not None:
            self.release()


class Tooz:
    """A tooz coordinator and lock, as cinder.coordination.Coordinator does it."""

    def __init__(self, url, name):
        from tooz import coordination

        member_id = (PREFIX + str(uuid.uuid4())).encode("ascii")
        self._coordinator = coordination.get_coordinator(url, member_id)
        self._coordinator.start(start_heart=True)
        self._name = (PREFIX + name).encode("ascii")
        self._held = None

    def try_acquire(self):
        lock = self._coordinator.get_lock(self._name)
        if lock.acquire(blocking=False):
            self._held = lock
            return True
        return False

    def acquire(self):
        lock = self._coordinator.get_lock(self._name)
        if not lock.acquire(blocking=True):
            raise RuntimeError("blocking acquire returned False")
        self._held = lock

    def release(self):
        held, self._held = self._held, None
        if not held.release():
            raise RuntimeError("release returned False")

    def stop(self):
        if self._held is not None:
            self.release()
        self._coordinator.stop()

    def key(self):
        # tooz's RedisLock names its key `<namespace>_<name>_lock`.
        return self._coordinator.get_lock(self._name).name.decode()


def stamp(fd, what):
    # One write per line on an O_APPEND descriptor: lines of both sides never mix.
    os.write(fd, f"{what} py {time.monotonic_ns()}\n".encode())


def contend(lock, log, rounds, hold_ms, gap_ms, poll_ms):
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        for _ in range(rounds):
            if poll_ms > 0:
                while not lock.try_acquire():
                    time.sleep(poll_ms / 1000)
            else:
                lock.acquire()
            stamp(fd, "enter")
            time.sleep(hold_ms / 1000)
            stamp(fd, "exit")
            lock.release()
            time.sleep(gap_ms / 1000)
    finally:
        os.close(fd)


def main(argv):
    if len(argv) != 4 or argv[1] not in ("oslo", "tooz", "tooz-redis"):
        say("ERROR usage: peer.py oslo|tooz|tooz-redis LOCK_PATH|URL NAME")
        return 2
    mech, target, name = argv[1:]
    lock = Oslo(target, name) if mech == "oslo" else Tooz(target, name)
    say("READY")
    try:
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            cmd = words[0]
            if cmd == "try":
                say("GOT" if lock.try_acquire() else "BUSY")
            elif cmd == "acquire":
                lock.acquire()
                say("HELD")
            elif cmd == "release":
                lock.release()
                say("RELEASED")
            elif cmd == "contend":
                log, rounds, hold_ms, gap_ms, poll_ms = words[1:]
                contend(
                    lock, log, int(rounds), float(hold_ms), float(gap_ms), float(poll_ms)
                )
                say("DONE")
            elif cmd == "key" and mech == "tooz-redis":
                say(f"KEY {lock.key()}")
            elif cmd == "quit":
                break
            else:
                say(f"ERROR unknown command {cmd!r}")
                return 1
    except Exception as e:  # reported to the test, which fails with it
        say(f"ERROR {type(e).__name__}: {e}")
        return 1
    finally:
        with contextlib.suppress(Exception):
            lock.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
