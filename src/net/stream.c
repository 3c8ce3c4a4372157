/* The stream interface: thin dispatch plus the loops every stream shares. */
#include <errno.h>
#include <limits.h>

#include "internal.h"
#include "keel/stream.h"

/* A read of nothing would return 0, which means end of stream: refused,
 * so that 0 always does. */
ssize_t keel_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  if (iovcnt <= 0 || iovcnt > IOV_MAX)
    return -EINVAL;
  size_t total = 0;
  for (int i = 0; i < iovcnt && total == 0; i++)
    total = iov[i].iov_len;
  if (total == 0)
    return -EINVAL;
  return s->ops->readv(s, iov, iovcnt);
}

ssize_t keel_read(keel_stream_t *s, void *buf, size_t len) {
  if (len == 0)
    return -EINVAL;
  struct iovec iov = {buf, len};
  return s->ops->readv(s, &iov, 1);
}

ssize_t keel_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  return s->ops->writev(s, iov, iovcnt);
}

ssize_t keel_write(keel_stream_t *s, const void *buf, size_t len) {
  struct iovec iov = {(void *)buf, len};
  return s->ops->writev(s, &iov, 1);
}

int keel_write_all(keel_stream_t *s, const void *buf, size_t len, size_t *written) {
  size_t done = 0;
  int rc = 0;
  while (done < len) {
    ssize_t n = keel_write(s, (const char *)buf + done, len - done);
    if (n < 0) {
      rc = (int)n;
      break;
    }
    done += (size_t)n;
  }
  if (written)
    *written = done;
  return rc;
}

int keel_read_exact(keel_stream_t *s, void *buf, size_t len, size_t *got) {
  size_t done = 0;
  int rc = 0;
  while (done < len) {
    ssize_t n = keel_read(s, (char *)buf + done, len - done);
    if (n <= 0) {
      rc = n == 0 ? -EPIPE : (int)n;
      break;
    }
    done += (size_t)n;
  }
  if (got)
    *got = done;
  return rc;
}

int keel_stream_shutdown(keel_stream_t *s, int how) { return s->ops->shutdown(s, how); }

int keel_close(keel_stream_t *s) { return s ? s->ops->close(s) : 0; }
