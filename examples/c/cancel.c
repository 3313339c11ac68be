/*
 * Cancelling a blocked acquire from another thread with a locks_cancel
 * handle. A holder takes a lock; a waiter thread blocks on it with
 * locks_client_lock_name_cancellable and no timeout; the main thread
 * triggers the handle, and the waiter returns LOCKS_STATUS_CANCELLED
 * promptly. The lock is then still there for the next caller, and a handle
 * triggered before the call makes it return at once. Runs on the Process
 * scope (memory) and the Node scope (lock files), and for a catalog lock.
 * Exits 0 when every check passes, 1 otherwise (each failed check is
 * printed).
 *
 *   cancel CONFIG
 */
#define _POSIX_C_SOURCE 200809L

#include <pthread.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "locks.h"

static int failures = 0;
static int checks = 0;

#define CHECK(cond)                                                             \
    do {                                                                        \
        checks++;                                                               \
        if (!(cond)) {                                                          \
            printf("FAIL line %d: %s\n", __LINE__, #cond);                      \
            failures++;                                                         \
        }                                                                       \
    } while (0)

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1000.0 + (double)t.tv_nsec / 1e6;
}

static void sleep_ms(long ms) {
    struct timespec t = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
}

/* What the waiter thread was asked to do, and what it got. */
struct waiter {
    const locks_client *client;
    int scope;
    const char *name;
    const locks_cancel *cancel;
    locks_status status;
    char message[512];
    double returned_ms;
};

static void *wait_for_lock(void *arg) {
    struct waiter *w = arg;
    locks_guard *guard = NULL;
    locks_error *err = NULL;
    w->status = locks_client_lock_name_cancellable(w->client, w->scope, w->name, -1, w->cancel,
                                                   &guard, &err);
    w->returned_ms = now_ms();
    if (err != NULL) {
        snprintf(w->message, sizeof w->message, "%s", locks_error_message(err));
        locks_error_free(err);
    }
    locks_guard_free(guard); /* NULL unless the wait was wrongly granted */
    return NULL;
}

/* Expects status OK and frees the error otherwise. */
static locks_status report(const char *what, locks_status status, locks_error *err) {
    if (status != LOCKS_STATUS_OK) {
        printf("     %s: %s: %s\n", what, locks_status_name((int)status),
               err ? locks_error_message(err) : "(no message)");
        locks_error_free(err);
    }
    return status;
}

static void blocked_waiter_is_cancelled(const locks_client *client, int scope, const char *name) {
    printf("-- scope %d, lock %s\n", scope, name);
    locks_error *err = NULL;
    locks_guard *held = NULL;
    locks_status status = locks_client_lock_name(client, scope, name, 0, &held, &err);
    CHECK(report("holder", status, err) == LOCKS_STATUS_OK);
    if (status != LOCKS_STATUS_OK) {
        return;
    }
    locks_cancel *cancel = NULL;
    CHECK(locks_cancel_new(&cancel, NULL) == LOCKS_STATUS_OK);
    CHECK(!locks_cancel_is_triggered(cancel));

    struct waiter w = {client, scope, name, cancel, LOCKS_STATUS_OK, "", 0.0};
    pthread_t thread;
    CHECK(pthread_create(&thread, NULL, wait_for_lock, &w) == 0);
    sleep_ms(300); /* the waiter is blocked by now */
    double triggered = now_ms();
    CHECK(locks_cancel_trigger(cancel, NULL) == LOCKS_STATUS_OK);
    CHECK(locks_cancel_trigger(cancel, NULL) == LOCKS_STATUS_OK); /* idempotent */
    CHECK(locks_cancel_is_triggered(cancel));
    pthread_join(thread, NULL);
    double took = w.returned_ms - triggered;
    printf("     waiter: %s after %.1f ms: %s\n", locks_status_name((int)w.status), took,
           w.message);
    CHECK(w.status == LOCKS_STATUS_CANCELLED);
    CHECK(strstr(w.message, name) != NULL);
    CHECK(took < 2000.0); /* promptly, even under valgrind */
    locks_cancel_free(cancel);

    /* Nothing left behind: once released, the lock is there for the next caller. */
    CHECK(report("release", locks_guard_release(held, &err), err) == LOCKS_STATUS_OK);
    locks_guard_free(held);
    locks_guard *next = NULL;
    CHECK(report("next", locks_client_lock_name(client, scope, name, 10000, &next, &err), err) ==
          LOCKS_STATUS_OK);
    CHECK(report("release next", locks_guard_release(next, &err), err) == LOCKS_STATUS_OK);
    locks_guard_free(next);
}

static void pre_triggered_returns_at_once(const locks_client *client) {
    printf("-- pre-triggered handle\n");
    locks_cancel *cancel = NULL;
    CHECK(locks_cancel_new(&cancel, NULL) == LOCKS_STATUS_OK);
    CHECK(locks_cancel_trigger(cancel, NULL) == LOCKS_STATUS_OK);

    const char *keys[] = {"management_address"};
    const char *values[] = {"10.0.0.1"};
    locks_guard *guard = NULL;
    locks_error *err = NULL;
    double start = now_ms();
    locks_status status = locks_client_lock_cancellable(client, "infinidat", keys, values, 1, -1,
                                                        cancel, &guard, &err);
    double took = now_ms() - start;
    const char *message = locks_error_message(err);
    printf("     %s after %.1f ms: %s\n", locks_status_name((int)status), took,
           message ? message : "(no message)");
    CHECK(status == LOCKS_STATUS_CANCELLED);
    CHECK(guard == NULL);
    CHECK(locks_error_status(err) == LOCKS_STATUS_CANCELLED);
    CHECK(message != NULL && strstr(message, "infinidat-10.0.0.1-lock") != NULL);
    CHECK(took < 1000.0);
    locks_error_free(err);

    status = locks_client_lock_name_cancellable(client, LOCKS_SCOPE_NODE, "free", -1, cancel,
                                                &guard, NULL);
    CHECK(status == LOCKS_STATUS_CANCELLED);
    CHECK(guard == NULL);
    locks_cancel_free(cancel);

    /* The lock was not taken: try once succeeds. NULL handle: not cancellable. */
    err = NULL;
    status = locks_client_lock_cancellable(client, "infinidat", keys, values, 1, 0, NULL, &guard,
                                           &err);
    CHECK(report("try once", status, err) == LOCKS_STATUS_OK);
    CHECK(guard != NULL && strcmp(locks_guard_name(guard), "infinidat-10.0.0.1-lock") == 0);
    locks_guard_free(guard);

    /* NULL arguments of the handle's own calls. */
    CHECK(locks_cancel_new(NULL, NULL) == LOCKS_STATUS_NULL_ARGUMENT);
    CHECK(locks_cancel_trigger(NULL, NULL) == LOCKS_STATUS_NULL_ARGUMENT);
    CHECK(!locks_cancel_is_triggered(NULL));
    locks_cancel_free(NULL);
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG\n", argv[0]);
        return 2;
    }
    locks_client *client = NULL;
    locks_error *err = NULL;
    if (locks_client_open_file(argv[1], &client, &err) != LOCKS_STATUS_OK) {
        fprintf(stderr, "cancel: cannot open %s: %s\n", argv[1], locks_error_message(err));
        locks_error_free(err);
        return 1;
    }
    blocked_waiter_is_cancelled(client, LOCKS_SCOPE_PROCESS, "cancel-process");
    blocked_waiter_is_cancelled(client, LOCKS_SCOPE_NODE, "cancel-node");
    /* The same with the acquire run as a task of its own (the Go package's mode). */
    CHECK(locks_client_set_reentry_check(client, false, NULL) == LOCKS_STATUS_OK);
    blocked_waiter_is_cancelled(client, LOCKS_SCOPE_PROCESS, "cancel-process");
    blocked_waiter_is_cancelled(client, LOCKS_SCOPE_NODE, "cancel-node");
    pre_triggered_returns_at_once(client);

    locks_client_free(client);
    printf("cancel: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
