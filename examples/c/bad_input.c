/*
 * Every kind of bad input, from C: each must come back as a status and a
 * message, never as a crash. Exits 0 when every check passes, 1 otherwise
 * (each failed check is printed).
 *
 *   bad_input CONFIG
 *
 * Run it under valgrind to check that no bad input leaks or touches memory
 * it should not.
 */
#define _POSIX_C_SOURCE 200809L

#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "locks.h"

static int failures = 0;
static int checks = 0;

/*
 * Checks that a call returned `expected`, handed back an error object with
 * the same status and a message containing `needle`, and frees the error.
 */
static void expect(int line, const char *what, locks_status got, locks_error *err,
                   locks_status expected, const char *needle) {
    checks++;
    const char *message = locks_error_message(err);
    if (got != expected) {
        printf("FAIL line %d: %s: got %s (%d), want %s: %s\n", line, what,
               locks_status_name((int)got), (int)got, locks_status_name((int)expected),
               message ? message : "(no message)");
        failures++;
    } else if (err == NULL || message == NULL || locks_error_status(err) != expected) {
        printf("FAIL line %d: %s: no error object with status %s\n", line, what,
               locks_status_name((int)expected));
        failures++;
    } else if (needle != NULL && strstr(message, needle) == NULL) {
        printf("FAIL line %d: %s: message \"%s\" does not mention \"%s\"\n", line, what, message,
               needle);
        failures++;
    } else {
        printf("ok   %-58s %s: %s\n", what, locks_status_name((int)got), message);
    }
    locks_error_free(err);
}

#define EXPECT(call, expected, needle)                                          \
    do {                                                                        \
        locks_error *err_ = NULL;                                               \
        locks_error **err_out = &err_;                                          \
        locks_status got_ = (call);                                             \
        expect(__LINE__, #call, got_, err_, (expected), (needle));              \
    } while (0)

#define CHECK(cond)                                                             \
    do {                                                                        \
        checks++;                                                               \
        if (!(cond)) {                                                          \
            printf("FAIL line %d: %s\n", __LINE__, #cond);                      \
            failures++;                                                         \
        }                                                                       \
    } while (0)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: %s CONFIG\n", argv[0]);
        return 2;
    }
    const char *config = argv[1];
    locks_client *client = NULL;
    locks_error *err = NULL;
    if (locks_client_open_file(config, &client, &err) != LOCKS_STATUS_OK) {
        fprintf(stderr, "bad_input: cannot open %s: %s\n", config, locks_error_message(err));
        locks_error_free(err);
        return 1;
    }

    const char *keys[] = {"management_address"};
    const char *values[] = {"10.0.0.1"};
    const char *null_strings[] = {NULL};
    /* A sentinel: out-params must not be written on failure. */
    locks_guard *const sentinel = (locks_guard *)(uintptr_t)0x1;
    locks_guard *guard = sentinel;
    locks_client *no_client = NULL;
    const locks_catalog_entry *entry = NULL;

    /* NULL for every pointer argument of every fallible call. */
    EXPECT(locks_client_open_file(NULL, &no_client, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`path`");
    EXPECT(locks_client_open_file(config, NULL, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`client_out`");
    EXPECT(locks_client_open_string(NULL, &no_client, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`toml`");
    EXPECT(locks_client_open_string("", NULL, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`client_out`");
    EXPECT(locks_client_open_default(NULL, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`client_out`");
    EXPECT(locks_client_set_reentry_check(NULL, true, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`client`");
    EXPECT(locks_client_catalog_find(NULL, "lio", &entry, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`client`");
    EXPECT(locks_client_catalog_find(client, NULL, &entry, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`id`");
    EXPECT(locks_client_catalog_find(client, "lio", NULL, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`entry_out`");
    EXPECT(locks_client_lock(NULL, "infinidat", keys, values, 1, 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`client`");
    EXPECT(locks_client_lock(client, NULL, keys, values, 1, 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`id`");
    EXPECT(locks_client_lock(client, "infinidat", keys, values, 1, 0, NULL, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`guard_out`");
    EXPECT(locks_client_lock(client, "infinidat", null_strings, values, 1, 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`keys[0]`");
    EXPECT(locks_client_lock(client, "infinidat", keys, null_strings, 1, 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`values[0]`");
    EXPECT(locks_client_lock_name(NULL, LOCKS_SCOPE_NODE, "x", 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`client`");
    EXPECT(locks_client_lock_name(client, LOCKS_SCOPE_NODE, NULL, 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`name`");
    EXPECT(locks_client_lock_name(client, LOCKS_SCOPE_NODE, "x", 0, NULL, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`guard_out`");
    EXPECT(locks_guard_release(NULL, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`guard`");
    EXPECT(locks_cancel_new(NULL, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`cancel_out`");
    EXPECT(locks_cancel_trigger(NULL, err_out), LOCKS_STATUS_NULL_ARGUMENT, "`cancel`");
    EXPECT(locks_client_lock_cancellable(NULL, "infinidat", keys, values, 1, 0, NULL, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`client`");
    EXPECT(locks_client_lock_cancellable(client, "infinidat", keys, values, 1, 0, NULL, NULL, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`guard_out`");
    EXPECT(locks_client_lock_name_cancellable(client, LOCKS_SCOPE_NODE, NULL, 0, NULL, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`name`");

    /* Arrays missing while the count says they hold parameters. */
    EXPECT(locks_client_lock(client, "infinidat", NULL, NULL, 1, 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`keys`");
    EXPECT(locks_client_lock(client, "infinidat", keys, NULL, 1, 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`values`");
    EXPECT(locks_client_lock(client, "infinidat", NULL, values, 1, 0, &guard, err_out),
           LOCKS_STATUS_NULL_ARGUMENT, "`keys`");
    /* A negative count cast to size_t. */
    EXPECT(locks_client_lock(client, "infinidat", keys, values, (size_t)-1, 0, &guard, err_out),
           LOCKS_STATUS_INVALID_ARGUMENT, "n_params");
    /* Count 0 with NULL arrays is fine: the template then misses its parameter. */
    EXPECT(locks_client_lock(client, "infinidat", NULL, NULL, 0, 0, &guard, err_out),
           LOCKS_STATUS_MISSING_PARAMETER, "management_address");

    /* Catalog and template errors. */
    EXPECT(locks_client_lock(client, "no-such-lock", NULL, NULL, 0, 0, &guard, err_out),
           LOCKS_STATUS_UNKNOWN_LOCK, "no-such-lock");
    EXPECT(locks_client_catalog_find(client, "no-such-lock", &entry, err_out),
           LOCKS_STATUS_UNKNOWN_LOCK, "no-such-lock");
    {
        const char *k[] = {"management_address", "pool"};
        const char *v[] = {"10.0.0.1", "p1"};
        EXPECT(locks_client_lock(client, "infinidat", k, v, 2, 0, &guard, err_out),
               LOCKS_STATUS_UNKNOWN_PARAMETER, "pool");
    }
    {
        const char *k[] = {"management_address", "management_address"};
        const char *v[] = {"10.0.0.1", "10.0.0.2"};
        EXPECT(locks_client_lock(client, "infinidat", k, v, 2, 0, &guard, err_out),
               LOCKS_STATUS_INVALID_ARGUMENT, "twice");
    }
    {
        const char *v[] = {"10.0.0.1\n"};
        EXPECT(locks_client_lock(client, "infinidat", keys, v, 1, 0, &guard, err_out),
               LOCKS_STATUS_INVALID_NAME, NULL);
    }
    EXPECT(locks_client_lock_name(client, LOCKS_SCOPE_NODE, "", 0, &guard, err_out),
           LOCKS_STATUS_INVALID_NAME, NULL);
    EXPECT(locks_client_lock_name(client, 7, "x", 0, &guard, err_out),
           LOCKS_STATUS_INVALID_ARGUMENT, "scope");
    EXPECT(locks_client_lock_name(client, -1, "x", 0, &guard, err_out),
           LOCKS_STATUS_INVALID_ARGUMENT, "scope");

    /* Invalid UTF-8 in every kind of string argument. */
    const char *bad = "lio\xff\xfe";
    const char *bad_values[] = {"10.0.0.\xc3"};
    const char *bad_keys[] = {"management\xe2\x82"};
    EXPECT(locks_client_lock(client, bad, NULL, NULL, 0, 0, &guard, err_out),
           LOCKS_STATUS_INVALID_UTF8, "`id`");
    EXPECT(locks_client_lock(client, "infinidat", bad_keys, values, 1, 0, &guard, err_out),
           LOCKS_STATUS_INVALID_UTF8, "`keys[0]`");
    EXPECT(locks_client_lock(client, "infinidat", keys, bad_values, 1, 0, &guard, err_out),
           LOCKS_STATUS_INVALID_UTF8, "`values[0]`");
    EXPECT(locks_client_lock_name(client, LOCKS_SCOPE_NODE, bad, 0, &guard, err_out),
           LOCKS_STATUS_INVALID_UTF8, "`name`");
    EXPECT(locks_client_catalog_find(client, bad, &entry, err_out), LOCKS_STATUS_INVALID_UTF8, "`id`");
    EXPECT(locks_client_open_string("prefix = \"\xff\"", &no_client, err_out),
           LOCKS_STATUS_INVALID_UTF8, "`toml`");

    /* Configuration errors. */
    EXPECT(locks_client_open_string("prefx = \"x\"", &no_client, err_out),
           LOCKS_STATUS_INVALID_CONFIG, "prefx");
    EXPECT(locks_client_open_string("[backends]\nnode = \"memory://\"", &no_client, err_out),
           LOCKS_STATUS_INVALID_CONFIG, "backends.node");
    EXPECT(locks_client_open_file("/nonexistent/locks.toml", &no_client, err_out),
           LOCKS_STATUS_IO, "/nonexistent/locks.toml");
    CHECK(no_client == NULL);
    CHECK(guard == sentinel);

    /* A NULL err_out: the status alone comes back. */
    CHECK(locks_client_lock(client, NULL, NULL, NULL, 0, 0, &guard, NULL) == LOCKS_STATUS_NULL_ARGUMENT);
    CHECK(guard == sentinel);

    /* Releasing twice is safe, and says so. */
    guard = NULL;
    CHECK(locks_client_lock(client, "infinidat", keys, values, 1, 10000, &guard, NULL) == LOCKS_STATUS_OK);
    if (guard != NULL) {
        CHECK(locks_guard_release(guard, NULL) == LOCKS_STATUS_OK);
        EXPECT(locks_guard_release(guard, err_out), LOCKS_STATUS_ALREADY_RELEASED, "already released");
        CHECK(strcmp(locks_guard_name(guard), "infinidat-10.0.0.1-lock") == 0);
        CHECK(locks_guard_state(guard) == LOCKS_LOCK_STATE_RELEASED);
        locks_guard_free(guard);
    }

    /* The same thread asking again for a lock it holds. */
    guard = NULL;
    CHECK(locks_client_lock(client, "lio", NULL, NULL, 0, 10000, &guard, NULL) == LOCKS_STATUS_OK);
    if (guard != NULL) {
        locks_guard *again = NULL;
        EXPECT(locks_client_lock(client, "lio", NULL, NULL, 0, -1, &again, err_out),
               LOCKS_STATUS_WOULD_DEADLOCK, "lioadm");
        CHECK(again == NULL);
        locks_guard_free(guard); /* releases */
    }

    /* Accessors on NULL: documented defaults. Frees of NULL: nothing. */
    CHECK(locks_guard_name(NULL) == NULL);
    CHECK(locks_guard_token(NULL) == 0);
    CHECK(locks_guard_scope(NULL) == LOCKS_SCOPE_PROCESS);
    CHECK(locks_guard_state(NULL) == LOCKS_LOCK_STATE_RELEASED);
    CHECK(!locks_guard_is_lost(NULL));
    CHECK(!locks_cancel_is_triggered(NULL));
    CHECK(locks_client_catalog_len(NULL) == 0);
    CHECK(locks_client_catalog_entry(NULL, 0) == NULL);
    CHECK(locks_client_catalog_entry(client, locks_client_catalog_len(client)) == NULL);
    CHECK(locks_catalog_entry_id(NULL) == NULL);
    CHECK(locks_catalog_entry_driver(NULL) == NULL);
    CHECK(locks_catalog_entry_template(NULL) == NULL);
    CHECK(locks_catalog_entry_critical_section(NULL) == NULL);
    CHECK(locks_catalog_entry_scope(NULL) == LOCKS_SCOPE_PROCESS);
    CHECK(locks_catalog_entry_parameter_count(NULL) == 0);
    CHECK(locks_catalog_entry_parameter(NULL, 0) == NULL);
    CHECK(locks_client_warnings_len(NULL) == 0);
    CHECK(locks_client_warning(NULL, 0) == NULL);
    CHECK(locks_error_status(NULL) == LOCKS_STATUS_OK);
    CHECK(locks_error_message(NULL) == NULL);
    CHECK(strcmp(locks_status_name(12345), "unknown") == 0);
    CHECK(strcmp(locks_status_name(LOCKS_STATUS_ALREADY_RELEASED), "already_released") == 0);
    locks_error_free(NULL);
    locks_guard_free(NULL);
    locks_cancel_free(NULL);
    locks_client_free(NULL);

    locks_client_free(client);
    printf("bad_input: %d checks, %d failed\n", checks, failures);
    return failures == 0 ? 0 : 1;
}
