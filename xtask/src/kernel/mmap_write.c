/* mmap_write FILE: stores one byte at offset 0 through a MAP_SHARED mapping of FILE, msyncs and
 * exits (the guest's "mmap write" case; busybox has no tool that writes through a mapping). */
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: mmap_write FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDWR);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    char *p = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        perror("mmap");
        return 1;
    }
    p[0] = 'M';
    if (msync(p, 4096, MS_SYNC) != 0) {
        perror("msync");
        return 1;
    }
    return 0;
}
