/* keel streams: the byte-stream interface TCP, TLS and lab pipes implement. */
#ifndef KEEL_STREAM_H
#define KEEL_STREAM_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_stream keel_stream_t;

/* Each op honours the calling task's cancellation and deadlines. */
typedef struct keel_stream_ops {
  ssize_t (*readv)(keel_stream_t *s, const struct iovec *iov, int iovcnt);
  ssize_t (*writev)(keel_stream_t *s, const struct iovec *iov, int iovcnt);
  int (*shutdown)(keel_stream_t *s, int how); /* SHUT_RD, SHUT_WR, SHUT_RDWR */
  int (*close)(keel_stream_t *s);             /* frees the stream */
} keel_stream_ops_t;

struct keel_stream {
  const keel_stream_ops_t *ops;
};

/* A TCP stream belongs to the worker whose task opened or accepted it;
 * calls from a task on another worker fail with -EXDEV.
 *
 * Reads up to len bytes. Returns the count (> 0), 0 at end of stream, or a
 * negative errno: -ECANCELED, -ETIMEDOUT, -ECONNRESET, ... If the task is
 * cancelled while bytes arrive, the bytes are returned, never dropped.
 * 0 always means end of stream: a read of 0 bytes (len 0, or iovecs that
 * are all empty, or iovcnt outside 1..IOV_MAX) is -EINVAL. */
ssize_t keel_read(keel_stream_t *s, void *buf, size_t len);
ssize_t keel_readv(keel_stream_t *s, const struct iovec *iov, int iovcnt);

/* Writes some of the bytes. Returns the count written (> 0) or a negative
 * errno (-EPIPE, -ECONNRESET, -ECANCELED, -ETIMEDOUT). */
ssize_t keel_write(keel_stream_t *s, const void *buf, size_t len);
ssize_t keel_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt);

/* Writes all len bytes. Returns 0, or a negative errno; *written (may be
 * NULL) always receives the bytes actually written, so a cancelled write
 * reports exactly how far it got. */
int keel_write_all(keel_stream_t *s, const void *buf, size_t len, size_t *written);

/* Reads exactly len bytes. Returns 0, -EPIPE on end of stream first, or
 * another negative errno; *got (may be NULL) receives the bytes read. */
int keel_read_exact(keel_stream_t *s, void *buf, size_t len, size_t *got);

int keel_stream_shutdown(keel_stream_t *s, int how);
/* Closes and frees the stream; tasks of the same worker still parked on it
 * wake with -EBADF. Returns 0 or a negative errno (the stream is freed
 * either way), except -EXDEV from a task on another worker (nothing done). */
int keel_close(keel_stream_t *s);

#ifdef __cplusplus
}
#endif
#endif
