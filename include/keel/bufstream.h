/* keel buffered streams: a read buffer over any stream, itself a stream.
 * Parsers (HTTP/1, WebSocket frames) read from one: fill, peek at the
 * buffered bytes, consume what they parsed, or read up to a delimiter
 * under a byte limit. keel_read and friends on keel_bufstream_stream()
 * return the buffered bytes first; writes pass through to the inner
 * stream.
 *
 * An idle buffered stream holds no buffer: a fill first waits until the
 * inner stream is readable (keel_stream_wait_readable), and only then
 * borrows a buffer from its worker, which it gives back as soon as every
 * buffered byte is consumed. (A transport that cannot wait for readability
 * makes the fill hold the buffer while it waits.)
 *
 * A buffered stream belongs to the worker of its inner stream: calls from
 * a task of another worker fail with -EXDEV. It has one reader at a time:
 * fill, read_until, peek, consume and reads come from one task (another
 * task reading while a fill is parked gets -EBUSY); another task may write
 * meanwhile (full duplex). */
#ifndef KEEL_BUFSTREAM_H
#define KEEL_BUFSTREAM_H

#include <stddef.h>
#include <sys/types.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_bufstream keel_bufstream_t;

typedef struct keel_bufstream_opts {
  size_t capacity; /* the most bytes buffered; 0: 16 KiB (KEEL_BUFSTREAM_DEFAULT_CAPACITY) */
} keel_bufstream_opts_t;

#define KEEL_BUFSTREAM_DEFAULT_CAPACITY ((size_t)16 * 1024)

/* Wraps inner; opts may be NULL. Takes ownership of inner on success only:
 * closing the buffered stream closes it. Allocates no read buffer yet.
 * Returns 0; -EINVAL (inner NULL, capacity above SSIZE_MAX, outside a
 * worker), -EXDEV (inner belongs to another worker) or -ENOMEM. */
int keel_bufstream_open(keel_stream_t *inner, const keel_bufstream_opts_t *opts,
                        keel_bufstream_t **out);

/* The stream view of b, for keel_read, keel_write, keel_close, ... A read
 * returns buffered bytes first, without reading more; with nothing
 * buffered, a read of at least the capacity goes straight from the inner
 * stream into the caller's memory, a smaller one fills the buffer once.
 * keel_close closes b and the inner stream. keel_stream_detach hands back
 * the inner stream when nothing is buffered, else fails with -EBUSY (use
 * keel_bufstream_detach). keel_stream_shutdown passes through: bytes
 * already buffered stay readable after SHUT_RD. */
keel_stream_t *keel_bufstream_stream(keel_bufstream_t *b);

/* Reads once from the inner stream into the buffer (after waiting for
 * readability without a buffer). Returns the bytes added (> 0), 0 at end
 * of stream, -EMSGSIZE when the buffer is full, -EBUSY when another task
 * is filling, -EXDEV, -ENOMEM, or the inner stream's error (-ECANCELED,
 * -ETIMEDOUT, -ECONNRESET, ...). Bytes buffered before are kept whatever
 * happens. */
ssize_t keel_bufstream_fill(keel_bufstream_t *b);

/* The bytes buffered now, valid until the next fill, read or consume;
 * NULL with *len 0 when there are none. */
const void *keel_bufstream_peek(keel_bufstream_t *b, size_t *len);

/* Drops the first n buffered bytes (n <= the count buffered); the buffer
 * goes back to the worker when none are left. */
void keel_bufstream_consume(keel_bufstream_t *b, size_t n);

/* The count of bytes buffered now. */
size_t keel_bufstream_buffered(const keel_bufstream_t *b);

/* The buffer memory b holds now: its capacity while bytes are buffered or
 * a read is under way, 0 when idle. */
size_t keel_bufstream_held(const keel_bufstream_t *b);

/* Fills until the dlen bytes at delim appear within the first `limit`
 * buffered bytes (a limit above the capacity counts as the capacity).
 * Returns the length of the bytes up to and including the first
 * delimiter, with *start pointing at the first of them; they stay
 * buffered until consumed. Returns -EMSGSIZE when `limit` bytes hold no
 * delimiter (at once for a limit shorter than it), -EPIPE at end of
 * stream before one, -EINVAL (dlen 0), or a fill's error (-EBUSY, -EXDEV,
 * the inner stream's). The bytes buffered stay there, readable, whatever
 * the error: after -EMSGSIZE the caller may consume some and go on. */
ssize_t keel_bufstream_read_until(keel_bufstream_t *b, const void *delim, size_t dlen, size_t limit,
                                  const void **start);

/* Frees b and hands back the inner stream, open, in *inner; the bytes
 * buffered and not consumed are copied to rest (cap bytes of room; rest
 * may be NULL when cap is 0) and their count goes to *rest_len. The next
 * layer owns them: they come before anything it reads from *inner (the
 * first bytes of a WebSocket frame read past the upgrade headers).
 * Returns 0; -EMSGSIZE if they do not fit cap, -EBUSY while another task
 * is filling, -EXDEV (nothing is done then). */
int keel_bufstream_detach(keel_bufstream_t *b, keel_stream_t **inner, void *rest, size_t cap,
                          size_t *rest_len);

#ifdef __cplusplus
}
#endif
#endif
