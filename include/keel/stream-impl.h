/* keel streams for implementers: the contract a transport (TCP, a lab
 * pipe) or a layer over another stream (a buffered stream, TLS) keeps.
 * Users of streams need only keel/stream.h; this header is for code that
 * provides a keel_stream_t.
 *
 * A stream is a struct that embeds keel_stream_t as its first member,
 * named `super`, set up with keel_stream_init. Every op is called from a
 * task (the dispatch functions in stream.h check the arguments first) and
 * honours that task's cancellation and deadlines.
 *
 * Ownership. A layer takes the stream below it: it is the layer's
 * `inner`, and nothing else may use it while the layer exists. Closing the
 * top closes the chain: a layer's close finishes its own work and then
 * calls keel_close(inner). keel_stream_detach undoes a layer instead: the
 * layer is freed and its inner stream handed back, open (a STARTTLS-like
 * protocol switch, or a server handing an upgraded connection to another
 * protocol). A layer that holds bytes it has read from the inner stream
 * but not yet delivered refuses to detach (-EBUSY) rather than lose them;
 * it offers its own way to hand them over (keel_bufstream_detach).
 *
 * Queries. query(s, what, arg, len) answers what s itself knows and
 * returns -ENOTSUP for everything else; keel_stream_query then asks the
 * inner stream, down to the transport. So the peer's address, the worker
 * a connection belongs to or TCP_NODELAY can be asked through any stack
 * of layers. Keys are KEEL_STREAM_Q_* (stream.h); a layer may define its
 * own from KEEL_STREAM_Q_USER up.
 *
 * Cancellation. A read or write that is cancelled, or whose deadline
 * passes, either did nothing (returns -ECANCELED / -ETIMEDOUT) or reports
 * what it did (a count): bytes are never silently lost. A layer that
 * cannot undo half of an operation (a TLS record half written, a
 * WebSocket frame half sent) has two choices, and documents which it
 * makes:
 *   - finish the piece inside a bounded shield (keel_shield_begin with a
 *     short deadline), then report the cancellation; or
 *   - poison the stream with keel_stream_poison(s, how, -ENOTRECOVERABLE):
 *     every later call in that direction (SHUT_WR: writes and shutdown;
 *     SHUT_RD: reads; SHUT_RDWR: both) fails with that errno, and close
 *     still frees everything.
 * A corrupt stream that goes on as if nothing happened is never allowed.
 *
 * Full duplex. One task reading while another task (of the same worker)
 * writes the same stream must work, for every implementation: reads and
 * writes keep separate state and separate waiters. Two concurrent readers
 * (or two writers) are not supported unless the implementation says so.
 *
 * Close. close frees the stream and returns 0 or the first error it met;
 * it refuses only a call from another worker (-EXDEV) and, for TCP, a
 * connection a task is parked on without a stack (-EBUSY, keel_tcp_park):
 * nothing is done then. It may park to send what the layer owes its peer
 * (a TLS close_notify), never to wait for the peer; it parks under the
 * caller's deadlines and cancellation like any other op, so a cancelled
 * task's close sends only what it can without waiting, then frees. Code
 * that must say goodbye even when cancelled closes inside a shield. A
 * transport may also park, shielded, while the kernel retires operations
 * in flight on it (io_uring), since their buffers must outlive them.
 * Tasks of the same worker parked in the stream's ops wake with -EBADF.
 *
 * Readiness. wait_readable parks until a read would not park (bytes, end
 * of stream or an error are there) without taking any buffer of the
 * caller's; a layer with undelivered bytes returns at once, otherwise it
 * asks its inner stream. A layer that buffers must implement it (left
 * NULL, the question goes straight to the inner stream). It lets an idle
 * connection hold no read buffer. (On io_uring the transport may receive
 * the bytes into a buffer of the worker's while it waits: a read through
 * the stream delivers them, the raw descriptor no longer has them.) */
#ifndef KEEL_STREAM_IMPL_H
#define KEEL_STREAM_IMPL_H

#include <stddef.h>
#include <sys/types.h>
#include <sys/uio.h>

#include "stream.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_stream_ops {
  const char *name; /* "tcp", "lab-pipe", "buffered", ... */
  /* At least one byte, or 0 at end of stream, or a negative errno; the
   * dispatch has refused reads of 0 bytes. */
  ssize_t (*readv)(keel_stream_t *s, const struct iovec *iov, int iovcnt);
  /* At least one byte or a negative errno; the dispatch has answered
   * writes of nothing itself. */
  ssize_t (*writev)(keel_stream_t *s, const struct iovec *iov, int iovcnt);
  int (*shutdown)(keel_stream_t *s, int how);
  /* Frees s (and closes its inner stream). */
  int (*close)(keel_stream_t *s);
  /* Optional (NULL: -ENOTSUP). Frees the layer s and hands back its inner
   * stream; -EBUSY if that would drop bytes. */
  int (*detach)(keel_stream_t *s, keel_stream_t **inner);
  /* Optional (NULL: ask the inner stream). 0 when answered, -ENOTSUP to
   * pass the question down, another negative errno when it fails. */
  int (*query)(keel_stream_t *s, int what, void *arg, size_t len);
  /* Optional (NULL: ask the inner stream; a transport without it: -ENOTSUP). */
  int (*wait_readable)(keel_stream_t *s);
} keel_stream_ops_t;

struct keel_stream {
  const keel_stream_ops_t *ops;
  keel_stream_t *inner; /* the stream this layer owns, NULL for a transport */
  int rd_poison;        /* 0, or the negative errno every read now fails with */
  int wr_poison;        /* the same for writes and shutdown */
};

static inline void keel_stream_init(keel_stream_t *s, const keel_stream_ops_t *ops,
                                    keel_stream_t *inner) {
  s->ops = ops;
  s->inner = inner;
  s->rd_poison = 0;
  s->wr_poison = 0;
}

/* Marks s unusable in the direction(s) `how` (SHUT_RD, SHUT_WR, SHUT_RDWR):
 * later calls fail with err (negative; -ENOTRECOVERABLE is the usual one).
 * Returns err, so that an op can `return keel_stream_poison(...)`. */
int keel_stream_poison(keel_stream_t *s, int how, int err);

#ifdef __cplusplus
}
#endif
#endif
