/* The stream interface: thin dispatch plus the loops every stream shares. */
#include <errno.h>
#include <limits.h>

#include <string.h>
#include <sys/socket.h>

#include "worker.h"
#include "keel/stream-impl.h"

/* iovecs keel_writev_all copies per call: a window over the caller's. */
#define WRITEV_WINDOW 64

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
  if (KEEL__UNLIKELY(s->rd_poison))
    return s->rd_poison;
  return s->ops->readv(s, iov, iovcnt);
}

ssize_t keel_read(keel_stream_t *s, void *buf, size_t len) {
  if (len == 0)
    return -EINVAL;
  if (KEEL__UNLIKELY(s->rd_poison))
    return s->rd_poison;
  struct iovec iov = {buf, len};
  return s->ops->readv(s, &iov, 1);
}

/* A write of nothing does nothing, so that the ops only see writes of at
 * least one byte, as they see reads. */
ssize_t keel_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt) {
  if (iovcnt <= 0 || iovcnt > IOV_MAX)
    return -EINVAL;
  if (KEEL__UNLIKELY(s->wr_poison))
    return s->wr_poison;
  size_t total = 0;
  for (int i = 0; i < iovcnt && total == 0; i++)
    total = iov[i].iov_len;
  if (total == 0)
    return 0;
  return s->ops->writev(s, iov, iovcnt);
}

ssize_t keel_write(keel_stream_t *s, const void *buf, size_t len) {
  if (KEEL__UNLIKELY(s->wr_poison))
    return s->wr_poison;
  if (len == 0)
    return 0;
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

/* Copies the caller's iovecs from (i, off) into win, skipping empty ones.
 * Returns the count copied (0: nothing left). */
static int window_fill(struct iovec *win, const struct iovec *iov, int iovcnt, int i, size_t off) {
  int n = 0;
  for (; i < iovcnt && n < WRITEV_WINDOW; i++, off = 0) {
    if (iov[i].iov_len <= off)
      continue;
    win[n].iov_base = (char *)iov[i].iov_base + off;
    win[n].iov_len = iov[i].iov_len - off;
    n++;
  }
  return n;
}

int keel_writev_all(keel_stream_t *s, const struct iovec *iov, int iovcnt, size_t *written) {
  size_t done = 0, off = 0;
  int i = 0, rc = iovcnt < 0 ? -EINVAL : 0;
  struct iovec win[WRITEV_WINDOW];
  while (rc == 0) {
    int n = window_fill(win, iov, iovcnt, i, off);
    if (n == 0)
      break;
    ssize_t w = keel_writev(s, win, n);
    if (w < 0) {
      rc = (int)w;
      break;
    }
    done += (size_t)w;
    /* Advance (i, off) past w bytes of the caller's iovecs. */
    for (size_t left = (size_t)w + off; i < iovcnt; i++) {
      if (left < iov[i].iov_len) {
        off = left;
        break;
      }
      left -= iov[i].iov_len;
      off = 0;
    }
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

int keel_stream_shutdown(keel_stream_t *s, int how) {
  if (how != SHUT_RD && how != SHUT_WR && how != SHUT_RDWR)
    return -EINVAL;
  if (how != SHUT_RD && s->wr_poison)
    return s->wr_poison;
  return s->ops->shutdown(s, how);
}

int keel_close(keel_stream_t *s) { return s ? s->ops->close(s) : 0; }

int keel_stream_poison(keel_stream_t *s, int how, int err) {
  if (how != SHUT_WR && !s->rd_poison)
    s->rd_poison = err;
  if (how != SHUT_RD && !s->wr_poison)
    s->wr_poison = err;
  return err;
}

static int query_len_ok(int what, size_t len) {
  switch (what) {
  case KEEL_STREAM_Q_FD:
  case KEEL_STREAM_Q_WORKER:
  case KEEL_STREAM_Q_NODELAY:
  case KEEL_STREAM_Q_SET_NODELAY:
    return len == sizeof(int);
  case KEEL_STREAM_Q_TRANSPORT:
    return len == sizeof(const char *);
  default:
    return 1; /* addresses and layers' own keys: the answering layer checks */
  }
}

int keel_stream_query(keel_stream_t *s, int what, void *arg, size_t len) {
  if (!s || !arg || !query_len_ok(what, len))
    return -EINVAL;
  if (what == KEEL_STREAM_Q_TRANSPORT) {
    while (s->inner)
      s = s->inner;
    *(const char **)arg = s->ops->name;
    return 0;
  }
  for (; s; s = s->inner) {
    int rc = s->ops->query ? s->ops->query(s, what, arg, len) : -ENOTSUP;
    if (rc != -ENOTSUP)
      return rc;
  }
  return -ENOTSUP;
}

int keel_stream_detach(keel_stream_t *s, keel_stream_t **inner) {
  *inner = NULL;
  if (!s->inner || !s->ops->detach)
    return -ENOTSUP;
  return s->ops->detach(s, inner);
}

int keel_stream_wait_readable(keel_stream_t *s) {
  if (s->rd_poison)
    return 0; /* a read would not park: it fails at once */
  for (; s; s = s->inner)
    if (s->ops->wait_readable)
      return s->ops->wait_readable(s);
  return -ENOTSUP;
}
