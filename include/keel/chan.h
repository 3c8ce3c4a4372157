/* keel channels: bounded queues of fixed-size items between tasks. A
 * channel belongs to one worker (no locking) unless it is opened with
 * KEEL_CHAN_SHARED, which makes it usable from tasks on any worker. */
#ifndef KEEL_CHAN_H
#define KEEL_CHAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct keel_chan keel_chan_t;

/* What a send does when the channel is full. */
typedef enum keel_chan_policy {
  KEEL_CHAN_BLOCK = 0,   /* wait for room (cancellable, honours deadlines) */
  KEEL_CHAN_DROP_NEWEST, /* drop the item being sent; send returns KEEL_CHAN_DROPPED */
  KEEL_CHAN_DROP_OLDEST, /* evict the oldest item; send returns KEEL_CHAN_DROPPED */
  KEEL_CHAN_GROW,        /* double the buffer (-ENOMEM if it cannot) */
} keel_chan_policy_t;

typedef enum keel_chan_order {
  KEEL_CHAN_FIFO = 0, /* queue */
  KEEL_CHAN_LIFO,     /* stack: only with KEEL_CHAN_BLOCK or KEEL_CHAN_GROW */
  KEEL_CHAN_PRIORITY, /* smallest key first (keel_chan_send_key), FIFO among
                       * equal keys: only with KEEL_CHAN_BLOCK or KEEL_CHAN_GROW */
} keel_chan_order_t;

/* keel_chan_opts.flags */
enum {
  /* Usable from tasks on every worker (and its try-variants from any
   * thread): a spinlock guards the buffer, and a blocked task is woken by a
   * message to its own worker. Same semantics as a channel of one worker,
   * with one addition: outside a task (a plain thread, a callback) there is
   * nothing to park, so where an operation would wait it returns -EAGAIN.
   * Only a parked task costs a cross-thread wake-up (tens of microseconds
   * when its worker sleeps); one that is running finds the items when it
   * looks again, so a stream between workers wants a capacity of hundreds
   * (bench/chan). GROW allocates while holding the lock. */
  KEEL_CHAN_SHARED = 1u << 0,
};

/* Returned (positive) by a send that dropped an item under a DROP policy. */
#define KEEL_CHAN_DROPPED 1

typedef struct keel_chan_opts {
  size_t elem_size;          /* bytes per item, > 0 */
  size_t capacity;           /* items, > 0 (GROW: the initial capacity) */
  keel_chan_policy_t policy; /* when full */
  keel_chan_order_t order;
  unsigned flags; /* KEEL_CHAN_SHARED */
} keel_chan_opts_t;

/* A slot reserved by keel_chan_reserve; ended by commit or abort. */
typedef struct keel_chan_slot {
  keel_chan_t *chan; /* NULL when not holding a reservation */
} keel_chan_slot_t;

/* Creates a channel owned by the calling worker (or, called outside a
 * worker, by the first worker that uses it); with KEEL_CHAN_SHARED, by no
 * worker. Every operation on a channel that is not shared returns -EXDEV
 * from another worker. Returns 0, -EINVAL (zero size or capacity, unknown
 * policy/order/flag, LIFO or PRIORITY with a DROP policy, overflow) or
 * -ENOMEM. No allocation after this except when GROW grows. */
int keel_chan_open(const keel_chan_opts_t *opts, keel_chan_t **out);

/* Frees the channel. No task may be blocked on it (asserted) and, if it is
 * shared, no other thread may still use it. NULL is a no-op. */
void keel_chan_close(keel_chan_t *c);

/* Copies item in. Returns 0 when queued; KEEL_CHAN_DROPPED (1) when a DROP
 * policy dropped an item (DROP_NEWEST: this one; DROP_OLDEST: the oldest,
 * or this one if every slot is reserved); -EPIPE once closed; -ENOMEM
 * (GROW could not grow); -EXDEV (see keel_chan_open). BLOCK waits for room
 * and may return -ECANCELED or -ETIMEDOUT, and then nothing was sent. */
int keel_chan_send(keel_chan_t *c, const void *item);

/* As keel_chan_send but never blocks: -EAGAIN where send would wait. */
int keel_chan_try_send(keel_chan_t *c, const void *item);

/* Sends with a priority key: on a KEEL_CHAN_PRIORITY channel receivers get
 * the item with the smallest key first, equal keys in sending order. Other
 * orders ignore the key; keel_chan_send is keel_chan_send_key with key 0.
 * Returns as keel_chan_send / keel_chan_try_send. */
int keel_chan_send_key(keel_chan_t *c, int64_t key, const void *item);
int keel_chan_try_send_key(keel_chan_t *c, int64_t key, const void *item);

/* Waits for an item and copies it out. Returns 0; -EPIPE when closed and
 * drained (items of slots reserved before close are still delivered);
 * -ECANCELED or -ETIMEDOUT (nothing was taken); -EXDEV. */
int keel_chan_recv(keel_chan_t *c, void *item);

/* As keel_chan_recv but never blocks: -EAGAIN when empty and not closed. */
int keel_chan_try_recv(keel_chan_t *c, void *item);

/* Shuts the channel down (stops sending; keel_chan_close frees it):
 * sends fail with -EPIPE at once (blocked senders and
 * reservers wake with -EPIPE); receivers drain what is left, then get
 * -EPIPE. Reservations held at close may still be committed or aborted.
 * Returns 0, -EXDEV. Shutting down twice is a no-op. */
int keel_chan_shutdown(keel_chan_t *c);

/* Two-phase send. reserve takes a free slot (it counts as taken, so other
 * senders cannot fill it), waiting for one under BLOCK; GROW grows;
 * DROP_OLDEST evicts the oldest item (returns KEEL_CHAN_DROPPED) and
 * DROP_NEWEST returns -EAGAIN when full. Returns 0 or 1 with slot held, or
 * -EPIPE, -ECANCELED, -ETIMEDOUT, -ENOMEM, -EAGAIN, -EXDEV with nothing
 * held. commit copies item into the reserved slot (commit_key with a
 * priority key) and never blocks; abort releases the slot, passing the room
 * to the next waiting sender. Both return 0, or -EXDEV when called on
 * another worker than the one of a channel that is not shared: then
 * nothing happened and the slot is still held (end it on its worker).
 * Ending a slot that is not held is a programmer error (asserted). */
int keel_chan_reserve(keel_chan_t *c, keel_chan_slot_t *slot);
int keel_chan_commit(keel_chan_t *c, keel_chan_slot_t *slot, const void *item);
int keel_chan_commit_key(keel_chan_t *c, keel_chan_slot_t *slot, int64_t key, const void *item);
int keel_chan_abort(keel_chan_t *c, keel_chan_slot_t *slot);

/* Queries: a snapshot (on a shared channel, others may change it at once).
 * Items queued (committed, not yet received). */
size_t keel_chan_len(const keel_chan_t *c);
/* Current capacity in items (GROW raises it). */
size_t keel_chan_capacity(const keel_chan_t *c);
bool keel_chan_is_empty(const keel_chan_t *c);
/* No free slot: queued items plus reservations fill the capacity. */
bool keel_chan_is_full(const keel_chan_t *c);
/* Items dropped so far by DROP_NEWEST / DROP_OLDEST. */
size_t keel_chan_dropped(const keel_chan_t *c);

#ifdef __cplusplus
}
#endif
#endif
