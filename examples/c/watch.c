/*
 * A critical section that stops when its lock is lost. The main thread
 * takes a Global lock and works in steps; a watcher thread sleeps in
 * locks_guard_wait_state until the lock is lost or released and raises a
 * flag the steps check, so the work stops at the next step instead of
 * running on unprotected. After the last step the main thread releases,
 * which ends the watcher's wait.
 *
 *   watch CONFIG NAME STEPS
 *
 * Exits 0 after all the steps and a clean release, 3 when the lock was lost
 * (the steps left undone are printed), 1 on an error.
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "locks.h"

struct watcher {
    const locks_guard *guard;
    atomic_int stop;             /* set once the lock is lost or released */
    locks_lock_state final_state;
};

static void *watch_lock(void *arg) {
    struct watcher *w = arg;
    locks_lock_state state = LOCKS_LOCK_STATE_HELD;
    /* AT_RISK may come and go; LOST and RELEASED are final. */
    while (state == LOCKS_LOCK_STATE_HELD || state == LOCKS_LOCK_STATE_AT_RISK) {
        state = locks_guard_wait_state(w->guard, (int)state, -1);
        if (state == LOCKS_LOCK_STATE_AT_RISK)
            fprintf(stderr, "watch: lock at risk: starting no new step until it is safe\n");
    }
    w->final_state = state;
    atomic_store(&w->stop, 1);
    return NULL;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

static int fail(const char *what, locks_error *err) {
    fprintf(stderr, "watch: %s: %s\n", what, err ? locks_error_message(err) : "unknown error");
    locks_error_free(err);
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: %s CONFIG NAME STEPS\n", argv[0]);
        return 2;
    }
    int steps = atoi(argv[3]);
    locks_client *client = NULL;
    locks_error *err = NULL;
    if (locks_client_open_file(argv[1], &client, &err) != LOCKS_STATUS_OK)
        return fail("open", err);

    locks_guard *guard = NULL;
    if (locks_client_lock_name(client, LOCKS_SCOPE_GLOBAL, argv[2], 30000, &guard, &err) !=
        LOCKS_STATUS_OK) {
        locks_client_free(client);
        return fail("lock", err);
    }
    printf("locked %s\n", locks_guard_name(guard));
    fflush(stdout);

    struct watcher w = {.guard = guard, .final_state = LOCKS_LOCK_STATE_HELD};
    atomic_init(&w.stop, 0);
    pthread_t thread;
    if (pthread_create(&thread, NULL, watch_lock, &w) != 0) {
        fprintf(stderr, "watch: cannot start the watcher thread\n");
        locks_guard_free(guard);
        locks_client_free(client);
        return 1;
    }

    int done = 0;
    while (done < steps && !atomic_load(&w.stop)) {
        sleep_ms(10); /* one step of work, with fencing token locks_guard_token(guard) */
        done++;
    }

    /* Ends the watcher's wait with RELEASED, if the lock was not lost first. */
    locks_status released = locks_guard_release(guard, &err);
    pthread_join(thread, NULL);
    int code = 0;
    if (w.final_state == LOCKS_LOCK_STATE_LOST || released == LOCKS_STATUS_LOST) {
        printf("lost the lock: stopped after %d of %d steps\n", done, steps);
        code = 3;
    } else if (released != LOCKS_STATUS_OK) {
        code = fail("release", err);
        err = NULL;
    } else {
        printf("did %d steps; the watcher saw the release\n", done);
    }
    locks_error_free(err);
    locks_guard_free(guard);
    locks_client_free(client);
    return code;
}
