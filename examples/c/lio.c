/*
 * LIO-style Node lock around running a command.
 *
 * Cinder's LIO target driver serialises every call of the `cinder-rtstool`
 * CLI on one host with the Node lock `lioadm` (catalog id `lio`). This
 * program takes that lock, runs a command while holding it, and releases it,
 * like `locks run lio -- COMMAND...`.
 *
 *   lio CONFIG TIMEOUT_MS COMMAND [ARG...]
 *
 * Exits with the command's status, 75 (EX_TEMPFAIL) when the lock is busy
 * past TIMEOUT_MS (0 tries once, negative waits forever), 1 on other errors.
 *
 * Build: cc -I include examples/c/lio.c target/debug/liblocks_ffi.a \
 *          -lgcc_s -lutil -lrt -lpthread -lm -ldl -lc -o lio
 */
#define _POSIX_C_SOURCE 200809L

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "locks.h"

/* Prints a failed call's status and message, and frees the error. */
static void report(const char *what, locks_status status, locks_error *err) {
    fprintf(stderr, "lio: %s: %s (%d): %s\n", what, locks_status_name((int)status), (int)status,
            err ? locks_error_message(err) : "(no message)");
    locks_error_free(err);
}

/*
 * Runs argv and returns its exit status. fork() then execvp() at once: the
 * child must not call into the library (its runtime threads do not exist in
 * the child), and the lock file descriptor is close-on-exec, so the command
 * does not inherit the lock.
 */
static int run(char **argv) {
    pid_t pid = fork();
    if (pid < 0) {
        perror("lio: fork");
        return 1;
    }
    if (pid == 0) {
        execvp(argv[0], argv);
        _exit(127);
    }
    int wstatus;
    while (waitpid(pid, &wstatus, 0) < 0) {
        if (errno != EINTR) {
            perror("lio: waitpid");
            return 1;
        }
    }
    if (WIFEXITED(wstatus)) {
        return WEXITSTATUS(wstatus);
    }
    return 128 + WTERMSIG(wstatus);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s CONFIG TIMEOUT_MS COMMAND [ARG...]\n", argv[0]);
        return 2;
    }
    if (strcmp(locks_version(), LOCKS_VERSION) != 0) {
        fprintf(stderr, "lio: header %s but library %s\n", LOCKS_VERSION, locks_version());
        return 1;
    }
    const char *config = argv[1];
    long long timeout_ms = strtoll(argv[2], NULL, 10);

    locks_client *client = NULL;
    locks_error *err = NULL;
    locks_status status = locks_client_open_file(config, &client, &err);
    if (status != LOCKS_STATUS_OK) {
        report("opening the client", status, err);
        return 1;
    }

    /* The catalog says what the lock is for. */
    const locks_catalog_entry *entry = NULL;
    status = locks_client_catalog_find(client, "lio", &entry, &err);
    if (status != LOCKS_STATUS_OK) {
        report("looking up `lio`", status, err);
        locks_client_free(client);
        return 1;
    }
    printf("lio: %s: %s\n", locks_catalog_entry_driver(entry),
           locks_catalog_entry_critical_section(entry));

    /* `lio` has no parameters: no arrays, count 0. */
    locks_guard *guard = NULL;
    status = locks_client_lock(client, "lio", NULL, NULL, 0, (int64_t)timeout_ms, &guard, &err);
    if (status == LOCKS_STATUS_WOULD_BLOCK || status == LOCKS_STATUS_TIMEOUT) {
        report("acquiring `lio`", status, err);
        locks_client_free(client);
        return 75;
    }
    if (status != LOCKS_STATUS_OK) {
        report("acquiring `lio`", status, err);
        locks_client_free(client);
        return 1;
    }
    printf("lio: locked %s (%s scope, token %llu)\n", locks_guard_name(guard),
           locks_guard_scope(guard) == LOCKS_SCOPE_NODE ? "node" : "other",
           (unsigned long long)locks_guard_token(guard));
    fflush(stdout);

    int code = run(&argv[3]);
    printf("lio: `%s` exited with %d\n", argv[3], code);

    status = locks_guard_release(guard, &err);
    if (status != LOCKS_STATUS_OK) {
        report("releasing `lio`", status, err);
        code = code ? code : 1;
    } else {
        printf("lio: released %s\n", locks_guard_name(guard));
    }
    locks_guard_free(guard);
    locks_client_free(client);
    return code;
}
