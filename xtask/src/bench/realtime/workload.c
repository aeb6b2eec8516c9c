/* The guest's timed writer workload (cargo xtask bench realtime --kernel): one system-call
 * pattern repeated COUNT times, timed with CLOCK_MONOTONIC; prints the elapsed ns.
 *
 *   workload write  FILE COUNT   1-byte pwrite of a zero at offsets 0..4095 of FILE (zeros
 *                                over zeros: the same work in every run, as the host's dd)
 *   workload read   FILE COUNT   1-byte pread at offsets 0..4095 of FILE (the VFS tier's
 *                                atime hooks run on each, see docs/sensor-design.md)
 *   workload create DIR COUNT    open(DIR/bench-new, O_CREAT|O_EXCL), close, unlink (the VFS
 *                                tier's d_instantiate hook runs on each creation)
 *
 * Exit status 0, or 1 with the failing call on stderr. */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(clockid_t clock) {
    struct timespec t;
    clock_gettime(clock, &t);
    return (long long)t.tv_sec * 1000000000LL + t.tv_nsec;
}

static int die(const char *what, const char *path) {
    fprintf(stderr, "workload: %s %s: %s\n", what, path, strerror(errno));
    return 1;
}

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: workload write|read|create PATH COUNT\n");
        return 2;
    }
    const char *mode = argv[1], *path = argv[2];
    long count = atol(argv[3]);
    char byte = 0;
    long long start, end, cpu_start, cpu_end;
    if (strcmp(mode, "create") == 0) {
        char name[4096];
        snprintf(name, sizeof name, "%s/bench-new", path);
        unlink(name);
        cpu_start = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        start = now_ns(CLOCK_MONOTONIC);
        for (long i = 0; i < count; i++) {
            int fd = open(name, O_CREAT | O_EXCL | O_WRONLY, 0644);
            if (fd < 0)
                return die("open", name);
            close(fd);
            if (unlink(name) != 0)
                return die("unlink", name);
        }
        end = now_ns(CLOCK_MONOTONIC);
        cpu_end = now_ns(CLOCK_PROCESS_CPUTIME_ID);
    } else {
        int writing = strcmp(mode, "write") == 0;
        if (!writing && strcmp(mode, "read") != 0) {
            fprintf(stderr, "workload: unknown mode %s\n", mode);
            return 2;
        }
        int fd = open(path, writing ? O_WRONLY : O_RDONLY);
        if (fd < 0)
            return die("open", path);
        cpu_start = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        start = now_ns(CLOCK_MONOTONIC);
        for (long i = 0; i < count; i++) {
            ssize_t n = writing ? pwrite(fd, &byte, 1, i & 4095) : pread(fd, &byte, 1, i & 4095);
            if (n != 1)
                return die(writing ? "pwrite" : "pread", path);
        }
        end = now_ns(CLOCK_MONOTONIC);
        cpu_end = now_ns(CLOCK_PROCESS_CPUTIME_ID);
        close(fd);
    }
    printf("%lld %lld\n", end - start, cpu_end - cpu_start);
    return 0;
}
