/* Broadcast: a ring of the last `capacity` messages, numbered by a 64-bit
 * sequence (message s lives in slot s % capacity), and per receiver the
 * sequence number of the next message it wants. Everything is under one
 * spinlock, since senders and receivers may be on different workers;
 * items are copied in and out inside it, so keep them small.
 *
 * A receiver that has received everything parks on a keel__xwait in the
 * waiters list. A send claims every parked waiter under the lock and
 * delivers "look again" after unlocking. A cancelled receiver has either
 * left the list under the lock or was claimed and will look: its cursor
 * never moves without a message being copied out (or a lag reported), so
 * nothing is lost to cancellation.
 *
 * Freeing: the opener's handle and each receiver keep the object; the
 * last of keel_broadcast_close and keel_broadcast_unsubscribe frees it. */
#include "keel/broadcast.h"

#include <assert.h>
#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>

#include "sync-internal.h"

struct keel_broadcast {
  keel__spinlock_t lock;
  bool closed;
  bool opener_gone;      /* keel_broadcast_close was called */
  size_t receivers;      /* subscribed */
  uint64_t tail;         /* sequence number of the next message sent */
  keel__queue_t waiters; /* xwaits of receivers that have received everything */
  size_t elem_size;
  size_t capacity;
  unsigned char ring[];
};

struct keel_broadcast_rx {
  keel_broadcast_t *b;
  uint64_t next; /* sequence number of the next message to receive, under b->lock */
};

int keel_broadcast_open(size_t elem_size, size_t capacity, keel_broadcast_t **out) {
  *out = NULL;
  if (elem_size == 0 || capacity == 0 ||
      capacity > (SIZE_MAX - sizeof(keel_broadcast_t)) / elem_size)
    return -EINVAL;
  keel_broadcast_t *b = calloc(1, sizeof *b + capacity * elem_size);
  if (!b)
    return -ENOMEM;
  b->lock = (keel__spinlock_t){ATOMIC_FLAG_INIT};
  keel__queue_init(&b->waiters);
  b->elem_size = elem_size;
  b->capacity = capacity;
  *out = b;
  return 0;
}

/* ---- Waking ------------------------------------------------------------------ */

/* ---- Sending and closing ------------------------------------------------------ */

static inline unsigned char *slot_of(keel_broadcast_t *b, uint64_t seq) {
  return b->ring + (size_t)(seq % b->capacity) * b->elem_size;
}

int keel_broadcast_send(keel_broadcast_t *b, const void *item) {
  keel__queue_t claimed;
  keel__queue_init(&claimed);
  keel__spin_lock(&b->lock);
  if (b->closed) {
    keel__spin_unlock(&b->lock);
    return -EPIPE;
  }
  memcpy(slot_of(b, b->tail), item, b->elem_size);
  b->tail++;
  int receivers = b->receivers > INT_MAX ? INT_MAX : (int)b->receivers;
  if (!keel__queue_empty(&b->waiters))
    keel__xwait_claim_n(&b->waiters, SIZE_MAX, &claimed);
  keel__spin_unlock(&b->lock);
  keel__xwait_deliver_claimed(&claimed);
  return receivers;
}

/* Closes (if not yet) and, if drop, gives up the opener's handle. Returns
 * true if the caller must free b: nothing else holds it. */
static bool close_impl(keel_broadcast_t *b, bool drop) {
  keel__queue_t claimed;
  keel__queue_init(&claimed);
  keel__spin_lock(&b->lock);
  b->closed = true;
  keel__xwait_claim_n(&b->waiters, SIZE_MAX, &claimed);
  if (drop)
    b->opener_gone = true;
  bool last = b->opener_gone && b->receivers == 0;
  keel__spin_unlock(&b->lock);
  keel__xwait_deliver_claimed(&claimed);
  return last;
}

int keel_broadcast_shutdown(keel_broadcast_t *b) {
  (void)close_impl(b, false);
  return 0;
}

void keel_broadcast_close(keel_broadcast_t *b) {
  if (b && close_impl(b, true))
    free(b);
}

/* ---- Receivers ---------------------------------------------------------------- */

int keel_broadcast_subscribe(keel_broadcast_t *b, keel_broadcast_rx_t **out) {
  *out = NULL;
  keel_broadcast_rx_t *rx = malloc(sizeof *rx);
  if (!rx)
    return -ENOMEM;
  rx->b = b;
  keel__spin_lock(&b->lock);
  if (b->closed) {
    keel__spin_unlock(&b->lock);
    free(rx);
    return -EPIPE;
  }
  rx->next = b->tail;
  b->receivers++;
  keel__spin_unlock(&b->lock);
  *out = rx;
  return 0;
}

void keel_broadcast_unsubscribe(keel_broadcast_rx_t *rx) {
  if (!rx)
    return;
  keel_broadcast_t *b = rx->b;
  keel__spin_lock(&b->lock);
  assert(b->receivers > 0);
  b->receivers--;
  bool last = b->opener_gone && b->receivers == 0;
  keel__spin_unlock(&b->lock);
  free(rx);
  if (last)
    free(b);
}

/* Under the lock: rx's next message into item, a lag report, -EPIPE
 * (closed and drained) or -EAGAIN (nothing yet). */
static int take(keel_broadcast_t *b, keel_broadcast_rx_t *rx, void *item, uint64_t *missed) {
  uint64_t oldest = b->tail > b->capacity ? b->tail - b->capacity : 0;
  if (KEEL__UNLIKELY(rx->next < oldest)) {
    if (missed)
      *missed = oldest - rx->next;
    rx->next = oldest;
    return -EOVERFLOW;
  }
  if (rx->next < b->tail) {
    memcpy(item, slot_of(b, rx->next), b->elem_size);
    rx->next++;
    return 0;
  }
  return b->closed ? -EPIPE : -EAGAIN;
}

static int recv_impl(keel_broadcast_rx_t *rx, void *item, uint64_t *missed, bool may_block) {
  keel_broadcast_t *b = rx->b;
  for (;;) {
    keel__spin_lock(&b->lock);
    int rc = take(b, rx, item, missed);
    bool wait = rc == -EAGAIN && may_block;
    if (wait)
      rc = keel__sync_may_wait(); /* -EINVAL outside a task */
    if (!wait || rc < 0) {
      keel__spin_unlock(&b->lock);
      return rc;
    }
    assert(keel__task_self());
    keel__xwait_t xw;
    keel__xwait_init(&xw, &b->lock, KEEL__WAIT_BROADCAST, b);
    keel__queue_insert_tail(&b->waiters, &xw.wait.node);
    keel__spin_unlock(&b->lock);
    /* 0: a message or close (look again); else interrupted, off the list */
    rc = (int)keel__xwait_block(&xw);
    if (rc < 0)
      return rc;
  }
}

int keel_broadcast_recv(keel_broadcast_rx_t *rx, void *item, uint64_t *missed) {
  return recv_impl(rx, item, missed, true);
}

int keel_broadcast_try_recv(keel_broadcast_rx_t *rx, void *item, uint64_t *missed) {
  return recv_impl(rx, item, missed, false);
}

/* ---- Introspection --------------------------------------------------------------- */

uint64_t keel_broadcast_pending(keel_broadcast_rx_t *rx) {
  keel__spin_lock(&rx->b->lock);
  uint64_t n = rx->b->tail - rx->next;
  keel__spin_unlock(&rx->b->lock);
  return n;
}

size_t keel_broadcast_receivers(keel_broadcast_t *b) {
  keel__spin_lock(&b->lock);
  size_t n = b->receivers;
  keel__spin_unlock(&b->lock);
  return n;
}

size_t keel_broadcast_capacity(const keel_broadcast_t *b) { return b->capacity; }
