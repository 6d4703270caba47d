/* The floor of the rotated flood (bench/README.md, "Rotated flood"): what the
 * log writer's moves cost without Python, epoll or the daemon. Reads a pipe on
 * stdin into FILE rotated at 1 MB with 3 backups the way taskmasterd/logwriter.py
 * does (oldest backup emptied and swapped in by RENAME_EXCHANGE), and prints its
 * own CPU seconds per GB moved.
 *   gcc -O2 -o /tmp/floor bench/floor.c
 *   timeout 3 yes 0123456789abcdef0123456789abcdef | dd bs=64k 2>/dev/null | /tmp/floor DIR/out s 1
 * MODE s: splice (the writer); r: read + write of BS bytes (env, default 128 KiB;
 * supervisord's way, without its Python). PREALLOC 1: fallocate(KEEP_SIZE) each
 * restarted file up to 1 MB, as the writer does; 0: ext4's delayed allocation. */
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <sys/resource.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: floor FILE s|r 0|1 < pipe\n");
        return 2;
    }
    const char *path = argv[1];
    char mode = argv[2][0];
    int pre = atoi(argv[3]);
    long max = 1 << 20, bs = atol(getenv("BS") ? getenv("BS") : "131072");
    enum { NB = 3 };
    static char names[NB + 1][4096], buf[1 << 20];
    if (bs > (long)sizeof buf) bs = sizeof buf;
    for (int i = 0; i <= NB; i++) snprintf(names[i], sizeof names[i], i ? "%s.%d" : "%s", path, i);
    fcntl(0, F_SETPIPE_SZ, 1 << 20);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    long size = 0;
    uint64_t total = 0;
    for (;;) {
        if (size >= max) {
            int rec = -1, t = open(names[NB], O_WRONLY | O_TRUNC | O_NOFOLLOW);
            if (t >= 0) {
                close(t);
                rec = open(names[NB], O_WRONLY | O_NOFOLLOW);
            }
            if (rec >= 0) {
                for (int i = NB; i > 0; i--)
                    renameat2(AT_FDCWD, names[i], AT_FDCWD, names[i - 1], RENAME_EXCHANGE);
                close(fd);
                fd = rec;
            } else {
                for (int i = NB - 1; i >= 0; i--) rename(names[i], names[i + 1]);
                close(fd);
                fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            }
            size = 0;
            if (pre) fallocate(fd, FALLOC_FL_KEEP_SIZE, 0, max);
        }
        long room = max - size;
        ssize_t n;
        if (mode == 's') {
            n = splice(0, NULL, fd, NULL, room, SPLICE_F_MOVE);
        } else {
            n = read(0, buf, room < bs ? room : bs);
            for (ssize_t w = 0; n > 0 && w < n; w += write(fd, buf + w, n - w)) {}
        }
        if (n <= 0) break;
        size += n;
        total += n;
    }
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    double cpu = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
    printf("%c prealloc=%d: %.3f CPU-s/GB (%.2f GB)\n", mode, pre, cpu / (total / 1e9), total / 1e9);
    return 0;
}
