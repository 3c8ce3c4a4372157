/* keel-load: the server's CPU time and resident set from /proc (--server-pid). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "load.h"

/* Reads a small /proc file into buf (NUL-terminated). 0 or -errno. */
static int read_proc_file(pid_t pid, const char *name, char *buf, size_t cap) {
  char path[64];
  snprintf(path, sizeof path, "/proc/%ld/%s", (long)pid, name);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  size_t len = 0;
  while (len + 1 < cap) {
    ssize_t n = read(fd, buf + len, cap - 1 - len);
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0) {
      int err = -errno;
      close(fd);
      return err;
    }
    if (n == 0)
      break;
    len += (size_t)n;
  }
  buf[len] = '\0';
  close(fd);
  return 0;
}

/* utime and stime are fields 14 and 15. Field 2, the command name in
 * parentheses, may itself hold spaces and parentheses, so the fields are
 * counted from after the last ')': there the next one is field 3. */
static int parse_stat(const char *text, uint64_t *ticks) {
  const char *p = strrchr(text, ')');
  if (p == NULL)
    return -EINVAL;
  p++;
  uint64_t utime = 0;
  for (int field = 3; field <= 15; field++) {
    char *end;
    while (*p == ' ')
      p++;
    if (*p == '\0')
      return -EINVAL;
    if (field == 14 || field == 15) {
      errno = 0;
      unsigned long long v = strtoull(p, &end, 10);
      if (errno != 0 || end == p)
        return -EINVAL;
      if (field == 14)
        utime = v;
      else
        *ticks = utime + v;
      p = end;
    } else {
      p += strcspn(p, " ");
    }
  }
  return 0;
}

int load_proc_cpu_ticks(pid_t pid, uint64_t *ticks) {
  char buf[1024];
  int rc = read_proc_file(pid, "stat", buf, sizeof buf);
  return rc < 0 ? rc : parse_stat(buf, ticks);
}

int load_proc_rss_kib(pid_t pid, uint64_t *kib) {
  char buf[8192]; /* VmRSS is near the top; the rest may be cut off */
  int rc = read_proc_file(pid, "status", buf, sizeof buf);
  if (rc < 0)
    return rc;
  const char *line = strstr(buf, "\nVmRSS:");
  if (line == NULL)
    return -ENOENT; /* a zombie has no memory left to report */
  char *end;
  errno = 0;
  unsigned long long v = strtoull(line + strlen("\nVmRSS:"), &end, 10);
  if (errno != 0 || end == line + strlen("\nVmRSS:"))
    return -EINVAL;
  *kib = v;
  return 0;
}
