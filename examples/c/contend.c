/*
 * One contender of the cross-language test: takes the Node lock `lio` N
 * times and, while holding it, appends `enter WHO TOKEN` and then `exit WHO`
 * to a shared log (O_APPEND). A C, a Go and a Rust process run this loop at
 * once; the log shows whether their critical sections ever overlapped.
 *
 *   contend CONFIG LOG WHO N
 */
#define _POSIX_C_SOURCE 200809L

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "locks.h"

static int append(int fd, const char *line) {
    size_t len = strlen(line);
    return write(fd, line, len) == (ssize_t)len ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 5) {
        fprintf(stderr, "usage: %s CONFIG LOG WHO N\n", argv[0]);
        return 2;
    }
    const char *who = argv[3];
    long n = strtol(argv[4], NULL, 10);
    int fd = open(argv[2], O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
        perror("contend: open log");
        return 1;
    }
    locks_client *client = NULL;
    locks_error *err = NULL;
    if (locks_client_open_file(argv[1], &client, &err) != LOCKS_STATUS_OK) {
        fprintf(stderr, "contend: %s\n", locks_error_message(err));
        locks_error_free(err);
        close(fd);
        return 1;
    }
    int code = 0;
    for (long i = 0; i < n && code == 0; i++) {
        locks_guard *guard = NULL;
        locks_status status = locks_client_lock(client, "lio", NULL, NULL, 0, 60000, &guard, &err);
        if (status != LOCKS_STATUS_OK) {
            fprintf(stderr, "contend: lock: %s\n", locks_error_message(err));
            locks_error_free(err);
            code = 1;
            break;
        }
        char line[128];
        snprintf(line, sizeof line, "enter %s %llu\n", who,
                 (unsigned long long)locks_guard_token(guard));
        struct timespec pause = {0, 1000 * 1000};
        if (append(fd, line) != 0 || nanosleep(&pause, NULL) != 0) {
            code = 1;
        }
        snprintf(line, sizeof line, "exit %s\n", who);
        if (append(fd, line) != 0) {
            code = 1;
        }
        if (locks_guard_release(guard, &err) != LOCKS_STATUS_OK) {
            fprintf(stderr, "contend: release: %s\n", locks_error_message(err));
            locks_error_free(err);
            code = 1;
        }
        locks_guard_free(guard);
    }
    locks_client_free(client);
    close(fd);
    return code;
}
