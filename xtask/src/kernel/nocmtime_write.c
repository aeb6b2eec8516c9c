/* nocmtime_write FILE: XFS "invisible I/O". Opens FILE again through its XFS handle
 * (XFS_IOC_FD_TO_HANDLE, then XFS_IOC_OPEN_BY_HANDLE), which sets FMODE_NOCMTIME on the new file
 * (fs/xfs/xfs_ioctl.c, xfs_open_by_handle: "filp->f_mode |= FMODE_NOCMTIME"), and overwrites
 * its first bytes through that descriptor. Prints whether the write left ctime and mtime as
 * they were (it does on 5.10, whose xfs then skips file_update_time), so the guest log shows
 * the kernel took the invisible path. The ioctl definitions are fs/xfs/libxfs/xfs_fs.h's, so
 * the xfslibs-dev headers are not needed. */
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <unistd.h>
#include <linux/types.h>

struct xfs_fsop_handlereq {
    __u32 fd;
    void *path;
    __u32 oflags;
    void *ihandle;
    __u32 ihandlen;
    void *ohandle;
    __u32 *ohandlen;
};
#define XFS_IOC_FD_TO_HANDLE _IOWR('X', 106, struct xfs_fsop_handlereq)
#define XFS_IOC_OPEN_BY_HANDLE _IOWR('X', 107, struct xfs_fsop_handlereq)

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: nocmtime_write FILE\n");
        return 2;
    }
    int fd = open(argv[1], O_RDONLY);
    if (fd < 0) {
        perror(argv[1]);
        return 1;
    }
    char handle[64];
    __u32 len = sizeof handle;
    struct xfs_fsop_handlereq req;
    memset(&req, 0, sizeof req);
    req.fd = (__u32)fd;
    req.ohandle = handle;
    req.ohandlen = &len;
    if (ioctl(fd, XFS_IOC_FD_TO_HANDLE, &req) < 0) {
        perror("XFS_IOC_FD_TO_HANDLE");
        return 1;
    }
    /* The handle ioctls that open take a directory's descriptor on the filesystem (ENOTDIR
     * otherwise): the file's parent here. */
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", argv[1]);
    int dir = open(dirname(parent), O_RDONLY | O_DIRECTORY);
    if (dir < 0) {
        perror("parent directory");
        return 1;
    }
    memset(&req, 0, sizeof req);
    req.oflags = O_RDWR;
    req.ihandle = handle;
    req.ihandlen = len;
    int inv = ioctl(dir, XFS_IOC_OPEN_BY_HANDLE, &req);
    if (inv < 0) {
        perror("XFS_IOC_OPEN_BY_HANDLE");
        return 1;
    }
    struct stat before, after;
    if (fstat(inv, &before) != 0) {
        perror("fstat");
        return 1;
    }
    if (pwrite(inv, "invisible", 9, 0) != 9) {
        perror("pwrite");
        return 1;
    }
    if (fstat(inv, &after) != 0) {
        perror("fstat");
        return 1;
    }
    int same = before.st_ctim.tv_sec == after.st_ctim.tv_sec &&
               before.st_ctim.tv_nsec == after.st_ctim.tv_nsec &&
               before.st_mtim.tv_sec == after.st_mtim.tv_sec &&
               before.st_mtim.tv_nsec == after.st_mtim.tv_nsec;
    printf("nocmtime_write: wrote 9 bytes through an open-by-handle descriptor; ctime and mtime %s\n",
           same ? "unchanged (invisible I/O)" : "changed");
    return 0;
}
