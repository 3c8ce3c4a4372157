/* keel broadcast: every receiver gets every message, in order, from a
 * bounded ring of fixed-size items; a receiver that falls behind loses the
 * oldest messages and learns how many. Senders and receivers may be tasks
 * on different workers (sending never blocks: any thread may send). */
#ifndef KEEL_BROADCAST_H
#define KEEL_BROADCAST_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_broadcast keel_broadcast_t;
/* One subscriber: its own cursor into the ring, used by one task at a time. */
typedef struct keel_broadcast_rx keel_broadcast_rx_t;

/* Creates a broadcast keeping the last `capacity` messages of elem_size
 * bytes (one allocation; sending allocates nothing). Returns 0, -EINVAL
 * (zero size or capacity, overflow) or -ENOMEM. */
int keel_broadcast_open(size_t elem_size, size_t capacity, keel_broadcast_t **out);

/* Shuts the broadcast down (if needed) and gives up the opener's handle: b must not be
 * used afterwards. The memory goes when the last receiver unsubscribes
 * too, so receivers on other workers may still drain. NULL is a no-op. */
void keel_broadcast_close(keel_broadcast_t *b);

/* Copies item into the ring, overwriting the oldest message when full, and
 * wakes every waiting receiver. Never blocks; any thread. Returns the
 * number of receivers subscribed (0: nobody will see it), or -EPIPE once
 * closed. */
int keel_broadcast_send(keel_broadcast_t *b, const void *item);

/* Shuts down (stops sending): sends fail with -EPIPE; receivers drain what they have not
 * received yet, then get -EPIPE (waiting ones wake). Any thread. Shutting down
 * twice is a no-op. Returns 0. */
int keel_broadcast_shutdown(keel_broadcast_t *b);

/* Subscribes: the new receiver's first message is the next one sent.
 * Any thread. Returns 0, -EPIPE (closed) or -ENOMEM. */
int keel_broadcast_subscribe(keel_broadcast_t *b, keel_broadcast_rx_t **out);

/* Frees the receiver (no task may be blocked in recv on it); its unread
 * messages are no longer kept for it. NULL is a no-op. */
void keel_broadcast_unsubscribe(keel_broadcast_rx_t *rx);

/* Waits for the receiver's next message and copies it out (task only).
 * Returns:
 *   0           item holds the next message;
 *   -EOVERFLOW  the receiver fell behind by more than the capacity: nothing
 *               was copied, *missed (if not NULL) is the exact number of
 *               messages it lost, and its cursor moved to the oldest
 *               message still kept, which the next recv returns at once;
 *   -EPIPE      closed, and every message still kept was received;
 *   -ECANCELED, -ETIMEDOUT  nothing was taken (the cursor did not move);
 *   -EINVAL     it would have to wait outside a task.
 * missed is only written on -EOVERFLOW. */
int keel_broadcast_recv(keel_broadcast_rx_t *rx, void *item, uint64_t *missed);

/* As keel_broadcast_recv but never blocks: -EAGAIN when the receiver has
 * received everything and the broadcast is open. Any thread. */
int keel_broadcast_try_recv(keel_broadcast_rx_t *rx, void *item, uint64_t *missed);

/* Messages sent but not yet received by rx, counting ones already lost
 * (so it may exceed the capacity). */
uint64_t keel_broadcast_pending(keel_broadcast_rx_t *rx);
/* Receivers subscribed now. */
size_t keel_broadcast_receivers(keel_broadcast_t *b);
size_t keel_broadcast_capacity(const keel_broadcast_t *b);

#ifdef __cplusplus
}
#endif
#endif
