/*
 * Infinidat-style Global lock around a (simulated) connection call.
 *
 * Cinder's Infinidat driver holds the Global lock
 * `infinidat-{management_address}-lock` (catalog id `infinidat`) while it
 * initializes or terminates a connection, so no two hosts change the same
 * array's host mappings at once. This program reads the entry from the
 * catalog, fills its parameter, takes the lock, passes the fencing token to
 * the simulated array call, and releases.
 *
 *   infinidat CONFIG MANAGEMENT_ADDRESS [TIMEOUT_MS]
 *
 * Build: cc -I include examples/c/infinidat.c target/debug/liblocks_ffi.a \
 *          -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o infinidat
 */
#define _POSIX_C_SOURCE 200809L

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "locks.h"

static void report(const char *what, locks_status status, locks_error *err) {
    fprintf(stderr, "infinidat: %s: %s (%d): %s\n", what, locks_status_name((int)status),
            (int)status, err ? locks_error_message(err) : "(no message)");
    locks_error_free(err);
}

/*
 * The array call the lock protects. A real driver would send the token
 * along so that the array can refuse a write from a holder whose lock was
 * lost; here it only checks that the lock is still held.
 */
static int initialize_connection(const locks_guard *guard, const char *address) {
    struct timespec pause = {0, 20 * 1000 * 1000};
    printf("infinidat: initialize_connection on %s with fencing token %llu\n", address,
           (unsigned long long)locks_guard_token(guard));
    nanosleep(&pause, NULL);
    if (locks_guard_is_lost(guard)) {
        fprintf(stderr, "infinidat: lock lost during the call; not committing\n");
        return -1;
    }
    printf("infinidat: connection initialized\n");
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 3 || argc > 4) {
        fprintf(stderr, "usage: %s CONFIG MANAGEMENT_ADDRESS [TIMEOUT_MS]\n", argv[0]);
        return 2;
    }
    int64_t timeout_ms = argc == 4 ? (int64_t)strtoll(argv[3], NULL, 10) : 30000;

    locks_client *client = NULL;
    locks_error *err = NULL;
    locks_status status = locks_client_open_file(argv[1], &client, &err);
    if (status != LOCKS_STATUS_OK) {
        report("opening the client", status, err);
        return 1;
    }
    for (size_t i = 0; i < locks_client_warnings_len(client); i++) {
        fprintf(stderr, "infinidat: warning: %s\n", locks_client_warning(client, i));
    }

    const locks_catalog_entry *entry = NULL;
    status = locks_client_catalog_find(client, "infinidat", &entry, &err);
    if (status != LOCKS_STATUS_OK) {
        report("looking up `infinidat`", status, err);
        locks_client_free(client);
        return 1;
    }
    printf("infinidat: template %s, scope %s, %zu parameter(s):",
           locks_catalog_entry_template(entry),
           locks_catalog_entry_scope(entry) == LOCKS_SCOPE_GLOBAL ? "global" : "other",
           locks_catalog_entry_parameter_count(entry));
    for (size_t i = 0; i < locks_catalog_entry_parameter_count(entry); i++) {
        printf(" %s", locks_catalog_entry_parameter(entry, i));
    }
    printf("\n");

    /* Parameters as parallel arrays: keys[i] = values[i]. */
    const char *keys[] = {"management_address"};
    const char *values[] = {argv[2]};
    locks_guard *guard = NULL;
    status = locks_client_lock(client, "infinidat", keys, values, 1, timeout_ms, &guard, &err);
    if (status != LOCKS_STATUS_OK) {
        report("acquiring `infinidat`", status, err);
        locks_client_free(client);
        return status == LOCKS_STATUS_TIMEOUT || status == LOCKS_STATUS_WOULD_BLOCK ? 75 : 1;
    }
    printf("infinidat: locked %s\n", locks_guard_name(guard));

    int code = initialize_connection(guard, argv[2]) == 0 ? 0 : 1;

    status = locks_guard_release(guard, &err);
    if (status != LOCKS_STATUS_OK) {
        /* LOCKS_STATUS_LOST here means the call above was not protected to the end. */
        report("releasing", status, err);
        code = 1;
    } else {
        printf("infinidat: released %s\n", locks_guard_name(guard));
    }
    locks_guard_free(guard);
    locks_client_free(client);
    return code;
}
