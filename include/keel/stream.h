/* keel streams: the byte-stream interface TCP, TLS, buffered streams and
 * lab pipes implement. Implementers: keel/stream-impl.h. */
#ifndef KEEL_STREAM_H
#define KEEL_STREAM_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every call honours the calling task's cancellation and deadlines. One
 * task may read while another task of the same worker writes the same
 * stream (full duplex), whatever the stream: TCP, a lab pipe, a layer. */
typedef struct keel_stream keel_stream_t;

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

/* Writes some of the bytes. Returns the count written (> 0; 0 for a write
 * of nothing, which does nothing) or a negative errno (-EPIPE,
 * -ECONNRESET, -ECANCELED, -ETIMEDOUT). */
ssize_t keel_write(keel_stream_t *s, const void *buf, size_t len);
ssize_t keel_writev(keel_stream_t *s, const struct iovec *iov, int iovcnt);

/* Writes all len bytes. Returns 0, or a negative errno; *written (may be
 * NULL) always receives the bytes actually written, so a cancelled write
 * reports exactly how far it got. */
int keel_write_all(keel_stream_t *s, const void *buf, size_t len, size_t *written);
/* The same for iovcnt buffers (any count; the iovecs are not modified). */
int keel_writev_all(keel_stream_t *s, const struct iovec *iov, int iovcnt, size_t *written);

/* Reads exactly len bytes. Returns 0, -EPIPE on end of stream first, or
 * another negative errno; *got (may be NULL) receives the bytes read. */
int keel_read_exact(keel_stream_t *s, void *buf, size_t len, size_t *got);

/* SHUT_RD, SHUT_WR or SHUT_RDWR. Returns 0 or a negative errno. */
int keel_stream_shutdown(keel_stream_t *s, int how);
/* Closes and frees the stream; tasks of the same worker still parked on it
 * wake with -EBADF. Returns 0 or a negative errno (the stream is freed
 * either way), except -EXDEV from a task on another worker (nothing done). */
int keel_close(keel_stream_t *s);

/* Properties asked through any stack of layers: the first layer that
 * knows answers (keel/stream-impl.h). arg points to the type named, len is
 * its size. */
enum {
  KEEL_STREAM_Q_FD = 1,       /* int: the socket descriptor (-ENOTSUP: none); see keel_tcp_fd */
  KEEL_STREAM_Q_WORKER,       /* int: index of the worker the stream belongs to */
  KEEL_STREAM_Q_PEER_ADDR,    /* keel_addr_t (keel/tcp.h) */
  KEEL_STREAM_Q_LOCAL_ADDR,   /* keel_addr_t */
  KEEL_STREAM_Q_NODELAY,      /* int: TCP_NODELAY now (1 or 0) */
  KEEL_STREAM_Q_SET_NODELAY,  /* int in: sets TCP_NODELAY */
  KEEL_STREAM_Q_TRANSPORT,    /* const char *: name of the stream at the bottom */
  KEEL_STREAM_Q_TLS,          /* keel_tls_t *: the TLS layer (keel/tls.h) */
  KEEL_STREAM_Q_USER = 0x1000 /* first key for a layer's own properties */
};
/* Returns 0 when a layer answered, -ENOTSUP when none knows, -EINVAL for a
 * len that does not fit the key, or the answering layer's error. */
int keel_stream_query(keel_stream_t *s, int what, void *arg, size_t len);

/* Frees the top layer of s and hands back the stream it wrapped, open, in
 * *inner. -ENOTSUP if s is not a layer (or cannot detach), -EBUSY if the
 * layer holds bytes read and not yet delivered (nothing is done then). */
int keel_stream_detach(keel_stream_t *s, keel_stream_t **inner);

/* Parks until a read of s would not park (bytes, end of stream or an
 * error are there), holding no buffer meanwhile. Returns 0, -ECANCELED /
 * -ETIMEDOUT, -ENOTSUP if the stream cannot tell, or another negative
 * errno. */
int keel_stream_wait_readable(keel_stream_t *s);

#ifdef __cplusplus
}
#endif
#endif
