/* A full disk on demand, for tests: LD_PRELOAD=build/test/libenospc.so makes write(2) on files
 * whose path contains $ENOSPC_PATH fail like a full filesystem once $ENOSPC_AFTER_BYTES bytes
 * have been written to such files in total: the write that crosses the limit is cut short (a
 * partial write, as the kernel does), the next one fails with ENOSPC. Other descriptors (stdout,
 * logs, other directories) are untouched. Works without root and on any filesystem, unlike a
 * small tmpfs mount. The programs write files through write(2) (AtomicFileWriter). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static ssize_t (*real_write)(int, const void*, size_t);
static long long limit = -1;
static const char* match;
static _Atomic long long written;

__attribute__((constructor)) static void init(void) {
  real_write = (ssize_t(*)(int, const void*, size_t))dlsym(RTLD_NEXT, "write");
  const char* n = getenv("ENOSPC_AFTER_BYTES");
  match = getenv("ENOSPC_PATH");
  if (n && match && *match) limit = atoll(n);
}

static int watched(int fd) {
  char link[64], path[4096];
  snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
  ssize_t k = readlink(link, path, sizeof path - 1);
  if (k <= 0) return 0;
  path[k] = '\0';
  return strstr(path, match) != NULL;
}

ssize_t write(int fd, const void* buf, size_t n) {
  if (limit < 0 || fd <= 2 || !watched(fd)) return real_write(fd, buf, n);
  long long used = atomic_load(&written);
  if (used >= limit) {
    errno = ENOSPC;
    return -1;
  }
  if ((long long)n > limit - used) n = (size_t)(limit - used);
  ssize_t r = real_write(fd, buf, n);
  if (r > 0) atomic_fetch_add(&written, (long long)r);
  return r;
}
