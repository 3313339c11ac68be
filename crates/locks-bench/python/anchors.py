"""Timing anchors for `locks bench`: the Python tools users would pick instead.

    python anchors.py oslo-external LOCK_DIR ITERATIONS
    python anchors.py lockf LOCK_DIR ITERATIONS
    python anchors.py tooz BACKEND_URL ITERATIONS
    python anchors.py handoff KIND TARGET ROUNDS

Prints the median microseconds of one acquire+release cycle (after a short
warm-up) on stdout, and nothing else. `lockf` is Python's own floor under
oslo's lock: `fcntl.lockf` lock and unlock on a file opened once. `handoff` runs a second process of
this script as the waiter and prints the median microseconds from the
holder's release call to the waiter holding the lock (CLOCK_MONOTONIC,
shared by both processes).
"""

import statistics
import subprocess
import sys
import time


def oslo_cycle(lock_dir):
    from oslo_concurrency import lockutils

    def cycle():
        with lockutils.lock("bench-anchor", external=True, lock_path=lock_dir):
            pass

    return cycle, lambda: None


def lockf_cycle(lock_dir):
    import fcntl
    import os

    fd = os.open(os.path.join(lock_dir, "bench-lockf"), os.O_RDWR | os.O_CREAT, 0o644)

    def cycle():
        fcntl.lockf(fd, fcntl.LOCK_EX)
        fcntl.lockf(fd, fcntl.LOCK_UN)

    return cycle, lambda: os.close(fd)


def oslo_lock(lock_dir):
    from oslo_concurrency import lockutils

    return lambda: lockutils.lock("bench-handoff", external=True, lock_path=lock_dir)


def tooz_lock(url, member):
    from tooz import coordination

    coordinator = coordination.get_coordinator(url, member)
    coordinator.start()
    return lambda: coordinator.get_lock(b"bench-handoff")


def make_lock(kind, target, member):
    if kind == "oslo-external":
        return oslo_lock(target)
    return tooz_lock(target, member)


def waiter(kind, target):
    """The other process: on each `go` line, acquire, print the time, release."""
    lock = make_lock(kind, target, b"locks-bench-waiter")
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        print("waiting", flush=True)
        with lock():
            t1 = time.monotonic_ns()
        print(t1, flush=True)


def handoff(kind, target, rounds):
    child = subprocess.Popen(
        [sys.executable, __file__, "waiter", kind, target],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    lock = make_lock(kind, target, b"locks-bench-holder")
    assert child.stdout.readline().strip() == "ready"
    samples = []
    for _ in range(rounds):
        with lock():
            child.stdin.write("go\n")
            child.stdin.flush()
            assert child.stdout.readline().strip() == "waiting"
            time.sleep(0.05)
            t0 = time.monotonic_ns()
        t1 = int(child.stdout.readline())
        samples.append((t1 - t0) / 1e3)
    child.stdin.close()
    child.wait()
    print("%.2f" % statistics.median(samples))


def tooz_cycle(url):
    from tooz import coordination

    coordinator = coordination.get_coordinator(url, b"locks-bench-anchor")
    coordinator.start()
    lock = coordinator.get_lock(b"bench-anchor")

    def cycle():
        if not lock.acquire(blocking=True):
            raise RuntimeError("tooz lock not acquired")
        lock.release()

    return cycle, coordinator.stop


def main():
    if sys.argv[1] == "waiter":
        return waiter(sys.argv[2], sys.argv[3])
    if sys.argv[1] == "handoff":
        return handoff(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    kind, target, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "oslo-external":
        cycle, stop = oslo_cycle(target)
    elif kind == "lockf":
        cycle, stop = lockf_cycle(target)
    elif kind == "tooz":
        cycle, stop = tooz_cycle(target)
    else:
        raise SystemExit("unknown anchor kind %r" % kind)
    for _ in range(max(3, iterations // 10)):
        cycle()
    samples = []
    for _ in range(iterations):
        t0 = time.perf_counter_ns()
        cycle()
        samples.append((time.perf_counter_ns() - t0) / 1e3)
    stop()
    print("%.2f" % statistics.median(samples))


if __name__ == "__main__":
    main()
