/* Power-cut emulation for the chaos harness (run/powercut.rs), preloaded into a node process
 * with LD_PRELOAD. It records, for every regular file under WEFT_POWERCUT_DIR, how much of it
 * is durable: its size when this process opened it for writing ("O"), its size, write
 * position and access mode at each successful fsync/fdatasync ("S"), and renames ("R"), one
 * line per event appended to WEFT_POWERCUT_LOG. After SIGKILL the harness truncates every file to its durable size: what
 * a machine that lost power would have lost from its page cache. Appends only; an overwrite
 * inside the durable part is not modelled (the harness says so). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

static int log_fd = -1;
static char root[PATH_MAX];
static size_t root_len;

__attribute__((constructor)) static void powercut_init(void) {
    const char *dir = getenv("WEFT_POWERCUT_DIR");
    const char *log = getenv("WEFT_POWERCUT_LOG");
    if (!dir || !log || !realpath(dir, root)) return;
    root_len = strlen(root);
    log_fd = (int)syscall(SYS_openat, AT_FDCWD, log, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
}

static int under_root(const char *path) {
    return log_fd >= 0 && strncmp(path, root, root_len) == 0 &&
           (path[root_len] == '/' || path[root_len] == 0);
}

static void emit(const char *line, size_t len) {
    int saved = errno;
    if (write(log_fd, line, len) < 0) { /* nothing to do: the harness sees a short log */ }
    errno = saved;
}

/* Records the size of regular file `fd` with tag `tag` when it lies under the root. */
static void record_fd(char tag, int fd) {
    char proc[64], path[PATH_MAX], line[PATH_MAX + 64];
    struct stat st;
    if (log_fd < 0) return;
    snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(proc, path, sizeof path - 1);
    if (n <= 0) return;
    path[n] = 0;
    if (!under_root(path) || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return;
    int len;
    if (tag == 'S') {
        /* The write position tells what was written of a preallocated file (size is not). */
        off_t pos = lseek(fd, 0, SEEK_CUR);
        int writable = (fcntl(fd, F_GETFL) & O_ACCMODE) != O_RDONLY;
        len = snprintf(line, sizeof line, "S\t%lld\t%lld\t%c\t%s\n", (long long)st.st_size,
                       (long long)(pos < 0 ? 0 : pos), writable ? 'w' : 'r', path);
    } else {
        len = snprintf(line, sizeof line, "%c\t%lld\t%s\n", tag, (long long)st.st_size, path);
    }
    if (len > 0 && (size_t)len < sizeof line) emit(line, (size_t)len);
}

/* Declares `real_NAME`, a pointer to the next definition of NAME (libc's), found once. */
#define REAL(name, ret, params) \
    static ret(*real_##name) params; \
    if (!real_##name) *(void **)(&real_##name) = dlsym(RTLD_NEXT, #name)

static int opened(int fd, int flags) {
    if (fd >= 0 && (flags & O_ACCMODE) != O_RDONLY) record_fd('O', fd);
    return fd;
}

int open(const char *path, int flags, ...) {
    REAL(open, int, (const char *, int, ...));
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    return opened(real_open(path, flags, mode), flags);
}

int open64(const char *path, int flags, ...) {
    REAL(open64, int, (const char *, int, ...));
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    return opened(real_open64(path, flags, mode), flags);
}

int openat(int dir, const char *path, int flags, ...) {
    REAL(openat, int, (int, const char *, int, ...));
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    return opened(real_openat(dir, path, flags, mode), flags);
}

int openat64(int dir, const char *path, int flags, ...) {
    REAL(openat64, int, (int, const char *, int, ...));
    mode_t mode = 0;
    if (flags & (O_CREAT | O_TMPFILE)) { va_list ap; va_start(ap, flags); mode = va_arg(ap, mode_t); va_end(ap); }
    return opened(real_openat64(dir, path, flags, mode), flags);
}

int fsync(int fd) {
    REAL(fsync, int, (int));
    int r = real_fsync(fd);
    if (r == 0) record_fd('S', fd);
    return r;
}

int fdatasync(int fd) {
    REAL(fdatasync, int, (int));
    int r = real_fdatasync(fd);
    if (r == 0) record_fd('S', fd);
    return r;
}

static void record_rename(const char *from, const char *to) {
    char a[2 * PATH_MAX + 2], b[2 * PATH_MAX + 2], line[4 * PATH_MAX + 16];
    char cwd[PATH_MAX] = "";
    if (log_fd < 0) return;
    if (from[0] != '/' || to[0] != '/') {
        if (!getcwd(cwd, sizeof cwd)) return;
    }
    snprintf(a, sizeof a, "%s%s%s", from[0] == '/' ? "" : cwd, from[0] == '/' ? "" : "/", from);
    snprintf(b, sizeof b, "%s%s%s", to[0] == '/' ? "" : cwd, to[0] == '/' ? "" : "/", to);
    if (!under_root(a) && !under_root(b)) return;
    int len = snprintf(line, sizeof line, "R\t%s\t%s\n", a, b);
    if (len > 0 && (size_t)len < sizeof line) emit(line, (size_t)len);
}

int rename(const char *from, const char *to) {
    REAL(rename, int, (const char *, const char *));
    int r = real_rename(from, to);
    if (r == 0) record_rename(from, to);
    return r;
}

int renameat(int fd1, const char *from, int fd2, const char *to) {
    REAL(renameat, int, (int, const char *, int, const char *));
    int r = real_renameat(fd1, from, fd2, to);
    if (r == 0 && fd1 == AT_FDCWD && fd2 == AT_FDCWD) record_rename(from, to);
    return r;
}
