/* Channels: a buffer of fixed-size items (a ring, or a heap for priority
 * channels) with two waiter lists (tasks waiting for room, tasks waiting
 * for items). A wake-up only says "look again": the woken task re-checks
 * the buffer in a loop. A waiter that is cancelled or times out leaves its
 * list before any wake can pick it, and a woken wait cannot be interrupted
 * any more, so every wake reaches a task that will look: none is lost.
 *
 * One worker's channel needs no lock: its waiters are plain waits, woken
 * in place. A shared channel (KEEL_CHAN_SHARED) takes its spinlock around
 * each operation, and its waiters are keel__xwait_t: a waker pops (claims)
 * one under the lock, and delivers it after the lock is released, which
 * posts a message to the waiter's worker if it is another. Only parked
 * tasks are on the lists, so a stream to a receiver that is running costs
 * no wake at all: it finds the items when it looks again. The same code
 * serves both: an operation collects its wakes in a list on its stack, and
 * chan_leave delivers them. */
#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "chan-internal.h"

static inline bool is_shared(const keel_chan_t *c) { return c->flags & KEEL_CHAN_SHARED; }

static bool owned_here(keel_chan_t *c) {
  keel__worker_t *w = keel__worker_current();
  if (KEEL__LIKELY(c->owner == w && w))
    return true;
  if (!c->owner && w) {
    c->owner = w;
    return true;
  }
  return false;
}

static int check_opts(const keel_chan_opts_t *o) {
  if (!o || o->elem_size == 0 || o->capacity == 0)
    return -EINVAL;
  if ((unsigned)o->policy > KEEL_CHAN_GROW || (unsigned)o->order > KEEL_CHAN_PRIORITY)
    return -EINVAL;
  if (o->order != KEEL_CHAN_FIFO && o->policy != KEEL_CHAN_BLOCK && o->policy != KEEL_CHAN_GROW)
    return -EINVAL;
  if (o->flags & ~(unsigned)KEEL_CHAN_SHARED)
    return -EINVAL;
  return 0;
}

int keel_chan_open(const keel_chan_opts_t *o, keel_chan_t **out) {
  *out = NULL;
  int err = check_opts(o);
  if (err)
    return err;
  size_t stride = o->order == KEEL_CHAN_PRIORITY ? keel__pq_stride(o->elem_size) : o->elem_size;
  if (stride == 0 || o->capacity > SIZE_MAX / stride)
    return -EINVAL;
  keel_chan_t *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->buf = malloc(o->capacity * stride);
  if (!c->buf) {
    free(c);
    return -ENOMEM;
  }
  atomic_flag_clear(&c->lock.flag);
  c->flags = o->flags;
  c->owner = is_shared(c) ? NULL : keel__worker_current();
  c->elem_size = o->elem_size;
  c->stride = stride;
  c->capacity = o->capacity;
  c->policy = o->policy;
  c->order = o->order;
  keel__queue_init(&c->send_waiters);
  keel__queue_init(&c->recv_waiters);
  *out = c;
  return 0;
}

void keel_chan_close(keel_chan_t *c) {
  if (!c)
    return;
  assert(keel__queue_empty(&c->send_waiters) && keel__queue_empty(&c->recv_waiters));
  free(c->buf);
  free(c);
}

/* ---- Entering, leaving, waking -------------------------------------------------- */

/* Starts an operation: takes a shared channel's lock, or checks that the
 * channel belongs to this worker. */
static inline int chan_enter(keel_chan_t *c) {
  if (is_shared(c)) {
    keel__spin_lock(&c->lock);
    return 0;
  }
  return KEEL__LIKELY(owned_here(c)) ? 0 : -EXDEV;
}

/* Ends an operation: releases a shared channel's lock, then wakes. */
static inline void chan_leave(keel_chan_t *c, keel__queue_t *wakes) {
  if (is_shared(c)) {
    keel__spin_unlock(&c->lock);
    if (!keel__queue_empty(wakes))
      keel__xwait_deliver_claimed(wakes);
  }
}

/* Wakes the first task on waiters (false if none): in place on a channel
 * of one worker, else by claiming it into wakes for chan_leave. */
static bool wake_one(keel_chan_t *c, keel__queue_t *waiters, keel__queue_t *wakes) {
  if (!is_shared(c))
    return keel__waiters_wake_one(waiters, 0);
  keel__xwait_t *xw = keel__xwait_pop(waiters);
  if (!xw)
    return false;
  keel__queue_insert_tail(wakes, &xw->wait.node);
  return true;
}

static void wake_all(keel_chan_t *c, keel__queue_t *waiters, keel__queue_t *wakes) {
  while (wake_one(c, waiters, wakes))
    ;
}

/* Parks the current task on waiters until woken ("look again": 0) or
 * interrupted (-ECANCELED/-ETIMEDOUT, having left the list). A task that
 * was woken before and found nothing goes back to the front, keeping its
 * place among the waiters. Outside a task nothing can park: -EAGAIN. On a
 * shared channel it is called and returns with the lock held, and releases
 * it (delivering the wakes so far) while parked. */
static int park(keel_chan_t *c, keel__queue_t *waiters, bool requeue, keel__queue_t *wakes) {
  if (!keel__task_self())
    return -EAGAIN;
  int err = keel__check_cancel();
  if (err)
    return err;
  keel__queue_t *at = requeue ? waiters->next : waiters;
  keel__wait_kind_t kind =
      waiters == &c->recv_waiters ? KEEL__WAIT_CHAN_RECV : KEEL__WAIT_CHAN_SEND;
  if (!is_shared(c)) {
    keel__wait_t w;
    keel__wait_init(&w, keel__wait_abort_dequeue, kind, c);
    keel__queue_insert_tail(at, &w.node);
    return (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
  }
  keel__xwait_t xw;
  keel__xwait_init(&xw, &c->lock, kind, c);
  keel__queue_insert_tail(at, &xw.wait.node);
  chan_leave(c, wakes);
  int rc = (int)keel__xwait_block(&xw);
  keel__spin_lock(&c->lock);
  return rc;
}

/* ---- The buffer -------------------------------------------------------------------- */

static inline unsigned char *slot_at(keel_chan_t *c, size_t i) {
  size_t idx = c->head + i;
  if (idx >= c->capacity)
    idx -= c->capacity;
  return c->buf + idx * c->stride;
}

static inline size_t room(const keel_chan_t *c) { return c->capacity - c->len - c->reserved; }

static inline void push(keel_chan_t *c, int64_t key, const void *item, keel__queue_t *wakes) {
  if (KEEL__LIKELY(c->order != KEEL_CHAN_PRIORITY)) {
    memcpy(slot_at(c, c->len), item, c->elem_size);
    c->len++;
  } else {
    keel__pq_push(c, key, item);
  }
  if (!keel__queue_empty(&c->recv_waiters))
    wake_one(c, &c->recv_waiters, wakes);
}

/* Removes the oldest item (FIFO) into item, or drops it if item is NULL. */
static inline void pop_head(keel_chan_t *c, void *item) {
  if (item)
    memcpy(item, c->buf + c->head * c->stride, c->elem_size);
  if (++c->head == c->capacity)
    c->head = 0;
  c->len--;
}

static inline void pop(keel_chan_t *c, void *item, keel__queue_t *wakes) {
  if (KEEL__LIKELY(c->order == KEEL_CHAN_FIFO)) {
    pop_head(c, item);
  } else if (c->order == KEEL_CHAN_LIFO) {
    memcpy(item, slot_at(c, c->len - 1), c->elem_size);
    c->len--;
  } else {
    keel__pq_pop(c, item);
  }
  if (!keel__queue_empty(&c->send_waiters))
    wake_one(c, &c->send_waiters, wakes);
}

/* Doubles the capacity, unwrapping the ring into the new buffer (a heap
 * starts at 0 and copies as it is). */
static int grow(keel_chan_t *c) {
  if (c->capacity > SIZE_MAX / 2 / c->stride)
    return -ENOMEM;
  size_t new_cap = c->capacity * 2;
  unsigned char *nb = malloc(new_cap * c->stride);
  if (!nb)
    return -ENOMEM;
  size_t first = c->capacity - c->head < c->len ? c->capacity - c->head : c->len;
  memcpy(nb, c->buf + c->head * c->stride, first * c->stride);
  memcpy(nb + first * c->stride, c->buf, (c->len - first) * c->stride);
  free(c->buf);
  c->buf = nb;
  c->head = 0;
  c->capacity = new_cap;
  return 0;
}

/* ---- Sending ------------------------------------------------------------------ */

/* Full, under a policy that does not wait: grows, or drops. Returns 0
 * (queued), KEEL_CHAN_DROPPED, -ENOMEM, or -EAGAIN (BLOCK: would wait). */
static int send_full(keel_chan_t *c, int64_t key, const void *item, keel__queue_t *wakes) {
  switch (c->policy) {
  case KEEL_CHAN_GROW: {
    int err = grow(c);
    if (err)
      return err;
    push(c, key, item, wakes);
    return 0;
  }
  case KEEL_CHAN_DROP_OLDEST:
    if (c->len > 0) {
      pop_head(c, NULL);
      c->dropped++;
      push(c, key, item, wakes);
      return KEEL_CHAN_DROPPED;
    }
    /* every slot is reserved: nothing older to evict */
    /* fallthrough */
  case KEEL_CHAN_DROP_NEWEST:
    c->dropped++;
    return KEEL_CHAN_DROPPED;
  default:
    return -EAGAIN;
  }
}

static int send_impl(keel_chan_t *c, int64_t key, const void *item, bool may_block) {
  int rc = chan_enter(c);
  if (rc)
    return rc;
  keel__queue_t wakes;
  keel__queue_init(&wakes);
  bool woken = false;
  for (;;) {
    if (c->closed) {
      rc = -EPIPE;
      break;
    }
    if (KEEL__LIKELY(room(c) > 0)) {
      push(c, key, item, &wakes);
      rc = 0;
      break;
    }
    rc = send_full(c, key, item, &wakes);
    if (rc != -EAGAIN || !may_block)
      break;
    rc = park(c, &c->send_waiters, woken, &wakes);
    if (rc < 0)
      break;
    woken = true;
  }
  chan_leave(c, &wakes);
  return rc;
}

int keel_chan_send(keel_chan_t *c, const void *item) { return send_impl(c, 0, item, true); }
int keel_chan_try_send(keel_chan_t *c, const void *item) { return send_impl(c, 0, item, false); }
int keel_chan_send_key(keel_chan_t *c, int64_t key, const void *item) {
  return send_impl(c, key, item, true);
}
int keel_chan_try_send_key(keel_chan_t *c, int64_t key, const void *item) {
  return send_impl(c, key, item, false);
}

/* ---- Receiving ------------------------------------------------------------------ */

static int recv_impl(keel_chan_t *c, void *item, bool may_block) {
  int rc = chan_enter(c);
  if (rc)
    return rc;
  keel__queue_t wakes;
  keel__queue_init(&wakes);
  bool woken = false;
  for (;;) {
    if (KEEL__LIKELY(c->len > 0)) {
      pop(c, item, &wakes);
      rc = 0;
      break;
    }
    /* reservations made before close may still be committed */
    if (c->closed && c->reserved == 0) {
      rc = -EPIPE;
      break;
    }
    rc = -EAGAIN;
    if (!may_block)
      break;
    rc = park(c, &c->recv_waiters, woken, &wakes);
    if (rc < 0)
      break;
    woken = true;
  }
  chan_leave(c, &wakes);
  return rc;
}

int keel_chan_recv(keel_chan_t *c, void *item) { return recv_impl(c, item, true); }
int keel_chan_try_recv(keel_chan_t *c, void *item) { return recv_impl(c, item, false); }

int keel_chan_shutdown(keel_chan_t *c) {
  int rc = chan_enter(c);
  if (rc)
    return rc;
  keel__queue_t wakes;
  keel__queue_init(&wakes);
  if (!c->closed) {
    c->closed = true;
    wake_all(c, &c->send_waiters, &wakes);
    wake_all(c, &c->recv_waiters, &wakes);
  }
  chan_leave(c, &wakes);
  return 0;
}

/* ---- Two-phase send ------------------------------------------------------------ */

/* One look for a free slot: 0 (room), KEEL_CHAN_DROPPED (made room by
 * evicting), -EPIPE, -ENOMEM, or -EAGAIN (full: BLOCK waits). */
static int reserve_once(keel_chan_t *c) {
  for (;;) {
    if (c->closed)
      return -EPIPE;
    if (room(c) > 0)
      return 0;
    if (c->policy == KEEL_CHAN_GROW) {
      int err = grow(c);
      if (err)
        return err;
      continue;
    }
    if (c->policy == KEEL_CHAN_DROP_OLDEST && c->len > 0) {
      pop_head(c, NULL);
      c->dropped++;
      return KEEL_CHAN_DROPPED;
    }
    return -EAGAIN;
  }
}

int keel_chan_reserve(keel_chan_t *c, keel_chan_slot_t *slot) {
  slot->chan = NULL;
  int rc = chan_enter(c);
  if (rc)
    return rc;
  keel__queue_t wakes;
  keel__queue_init(&wakes);
  bool woken = false;
  while ((rc = reserve_once(c)) == -EAGAIN && c->policy == KEEL_CHAN_BLOCK) {
    rc = park(c, &c->send_waiters, woken, &wakes);
    if (rc < 0)
      break;
    woken = true;
  }
  if (rc >= 0) {
    c->reserved++;
    slot->chan = c;
  }
  chan_leave(c, &wakes);
  return rc;
}

int keel_chan_commit_key(keel_chan_t *c, keel_chan_slot_t *slot, int64_t key, const void *item) {
  assert(slot->chan == c);
  int rc = chan_enter(c);
  if (rc)
    return rc; /* another worker's channel: the slot stays held */
  keel__queue_t wakes;
  keel__queue_init(&wakes);
  assert(c->reserved > 0);
  slot->chan = NULL;
  c->reserved--;
  push(c, key, item, &wakes);
  /* the last reservation settled: receivers beyond the one that takes this
   * item would wait for ever on a closed channel */
  if (c->closed && c->reserved == 0 && !keel__queue_empty(&c->recv_waiters))
    wake_all(c, &c->recv_waiters, &wakes);
  chan_leave(c, &wakes);
  return 0;
}

int keel_chan_commit(keel_chan_t *c, keel_chan_slot_t *slot, const void *item) {
  return keel_chan_commit_key(c, slot, 0, item);
}

int keel_chan_abort(keel_chan_t *c, keel_chan_slot_t *slot) {
  assert(slot->chan == c);
  int rc = chan_enter(c);
  if (rc)
    return rc;
  keel__queue_t wakes;
  keel__queue_init(&wakes);
  assert(c->reserved > 0);
  slot->chan = NULL;
  c->reserved--;
  if (!keel__queue_empty(&c->send_waiters))
    wake_one(c, &c->send_waiters, &wakes);
  /* the last reservation gone: receivers of a closed, empty channel end */
  if (c->closed && c->reserved == 0 && c->len == 0)
    wake_all(c, &c->recv_waiters, &wakes);
  chan_leave(c, &wakes);
  return 0;
}

/* ---- Introspection -------------------------------------------------------------- */

typedef struct chan_counts {
  size_t len, capacity, reserved, dropped;
} chan_counts_t;

/* The counters at one instant. Only the lock is written through the cast:
 * queries stay const for the caller. */
static chan_counts_t counts(const keel_chan_t *c) {
  keel_chan_t *m = (keel_chan_t *)c;
  if (is_shared(c))
    keel__spin_lock(&m->lock);
  chan_counts_t n = {c->len, c->capacity, c->reserved, c->dropped};
  if (is_shared(c))
    keel__spin_unlock(&m->lock);
  return n;
}

size_t keel_chan_len(const keel_chan_t *c) { return counts(c).len; }
size_t keel_chan_capacity(const keel_chan_t *c) { return counts(c).capacity; }
bool keel_chan_is_empty(const keel_chan_t *c) { return counts(c).len == 0; }
size_t keel_chan_dropped(const keel_chan_t *c) { return counts(c).dropped; }
bool keel_chan_is_full(const keel_chan_t *c) {
  chan_counts_t n = counts(c);
  return n.len + n.reserved == n.capacity;
}
