/* The C ABI row of `locks bench`: memory-backend acquire+release cycles
 * through the C ABI. Arguments: TOML configuration, cycles per batch, batches.
 * Prints the mean nanoseconds per cycle of each batch, one per line, after
 * one unreported warm-up batch. */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "locks.h"

static double now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static int cycles(const locks_client *client, long n) {
    for (long i = 0; i < n; i++) {
        locks_guard *guard = NULL;
        if (locks_client_lock_name(client, LOCKS_SCOPE_PROCESS, "bench-ffi", -1, &guard, NULL) !=
            LOCKS_STATUS_OK) {
            return -1;
        }
        if (locks_guard_release(guard, NULL) != LOCKS_STATUS_OK) {
            return -1;
        }
        locks_guard_free(guard);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s TOML CYCLES BATCHES\n", argv[0]);
        return 2;
    }
    long n = atol(argv[2]);
    long batches = atol(argv[3]);
    locks_client *client = NULL;
    locks_error *err = NULL;
    if (locks_client_open_string(argv[1], &client, &err) != LOCKS_STATUS_OK) {
        fprintf(stderr, "open: %s\n", locks_error_message(err));
        locks_error_free(err);
        return 1;
    }
    if (cycles(client, n) != 0) {
        fprintf(stderr, "cycle failed\n");
        return 1;
    }
    for (long b = 0; b < batches; b++) {
        double t0 = now_ns();
        if (cycles(client, n) != 0) {
            fprintf(stderr, "cycle failed\n");
            return 1;
        }
        printf("%.1f\n", (now_ns() - t0) / (double)n);
    }
    locks_client_free(client);
    return 0;
}
