"""Timing anchors for `locks bench`: the Python tools users would pick instead.

    python anchors.py oslo-external LOCK_DIR ITERATIONS
    python anchors.py tooz BACKEND_URL ITERATIONS

Prints the median microseconds of one acquire+release cycle (after a short
warm-up) on stdout, and nothing else.
"""

import statistics
import sys
import time


def oslo_cycle(lock_dir):
    from oslo_concurrency import lockutils

    def cycle():
        with lockutils.lock("bench-anchor", external=True, lock_path=lock_dir):
            pass

    return cycle, lambda: None


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
    kind, target, iterations = sys.argv[1], sys.argv[2], int(sys.argv[3])
    if kind == "oslo-external":
        cycle, stop = oslo_cycle(target)
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
