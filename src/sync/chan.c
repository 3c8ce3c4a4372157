/* Channels: a ring buffer of fixed-size items with two waiter lists (tasks
 * waiting for room, tasks waiting for items), used by the tasks of one
 * worker, so no lock. A wake-up only says "look again": the woken task
 * re-checks the buffer in a loop. A waiter that is cancelled or times out
 * leaves its list through keel__wait_abort_dequeue before any wake can pick
 * it, and a woken wait cannot be interrupted any more (it is done), so
 * every wake reaches a task that will look: none is lost. */
#include "keel/chan.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

struct keel_chan {
  keel__worker_t *owner; /* NULL until first used, if opened outside a worker */
  unsigned char *buf;
  size_t elem_size;
  size_t capacity;
  size_t head;     /* index of the oldest item */
  size_t len;      /* items queued */
  size_t reserved; /* slots held by keel_chan_reserve */
  size_t dropped;
  keel_chan_policy_t policy;
  keel_chan_order_t order;
  bool closed;
  keel__queue_t send_waiters; /* tasks waiting for room */
  keel__queue_t recv_waiters; /* tasks waiting for an item */
};

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

int keel_chan_open(const keel_chan_opts_t *o, keel_chan_t **out) {
  *out = NULL;
  if (!o || o->elem_size == 0 || o->capacity == 0 || o->capacity > SIZE_MAX / o->elem_size)
    return -EINVAL;
  if ((unsigned)o->policy > KEEL_CHAN_GROW || (unsigned)o->order > KEEL_CHAN_LIFO)
    return -EINVAL;
  if (o->order == KEEL_CHAN_LIFO && o->policy != KEEL_CHAN_BLOCK && o->policy != KEEL_CHAN_GROW)
    return -EINVAL;
  keel_chan_t *c = calloc(1, sizeof *c);
  if (!c)
    return -ENOMEM;
  c->buf = malloc(o->capacity * o->elem_size);
  if (!c->buf) {
    free(c);
    return -ENOMEM;
  }
  c->owner = keel__worker_current();
  c->elem_size = o->elem_size;
  c->capacity = o->capacity;
  c->policy = o->policy;
  c->order = o->order;
  keel__queue_init(&c->send_waiters);
  keel__queue_init(&c->recv_waiters);
  *out = c;
  return 0;
}

void keel_chan_free(keel_chan_t *c) {
  if (!c)
    return;
  assert(keel__queue_empty(&c->send_waiters) && keel__queue_empty(&c->recv_waiters));
  free(c->buf);
  free(c);
}

/* ---- The ring buffer -------------------------------------------------------- */

static inline unsigned char *slot_at(keel_chan_t *c, size_t i) {
  size_t idx = c->head + i;
  if (idx >= c->capacity)
    idx -= c->capacity;
  return c->buf + idx * c->elem_size;
}

static inline size_t room(const keel_chan_t *c) { return c->capacity - c->len - c->reserved; }

static inline void push(keel_chan_t *c, const void *item) {
  memcpy(slot_at(c, c->len), item, c->elem_size);
  c->len++;
  if (!keel__queue_empty(&c->recv_waiters))
    keel__waiters_wake_one(&c->recv_waiters, 0);
}

/* Removes the oldest item (FIFO) into item, or drops it if item is NULL. */
static inline void pop_head(keel_chan_t *c, void *item) {
  if (item)
    memcpy(item, c->buf + c->head * c->elem_size, c->elem_size);
  if (++c->head == c->capacity)
    c->head = 0;
  c->len--;
}

static inline void pop(keel_chan_t *c, void *item) {
  if (c->order == KEEL_CHAN_LIFO) {
    memcpy(item, slot_at(c, c->len - 1), c->elem_size);
    c->len--;
  } else {
    pop_head(c, item);
  }
  if (!keel__queue_empty(&c->send_waiters))
    keel__waiters_wake_one(&c->send_waiters, 0);
}

/* Doubles the capacity, unwrapping the ring into the new buffer. */
static int grow(keel_chan_t *c) {
  if (c->capacity > SIZE_MAX / 2 / c->elem_size)
    return -ENOMEM;
  size_t new_cap = c->capacity * 2;
  unsigned char *nb = malloc(new_cap * c->elem_size);
  if (!nb)
    return -ENOMEM;
  size_t first = c->capacity - c->head < c->len ? c->capacity - c->head : c->len;
  memcpy(nb, c->buf + c->head * c->elem_size, first * c->elem_size);
  memcpy(nb + first * c->elem_size, c->buf, (c->len - first) * c->elem_size);
  free(c->buf);
  c->buf = nb;
  c->head = 0;
  c->capacity = new_cap;
  return 0;
}

/* Parks the current task on list until woken ("look again": 0) or
 * interrupted (-ECANCELED/-ETIMEDOUT, having left the list). A task that
 * was woken before and found nothing goes back to the front, keeping its
 * place among the waiters. */
static int wait_on(keel__queue_t *list, bool requeue) {
  int err = keel__check_cancel();
  if (err)
    return err;
  keel__wait_t w;
  keel__wait_init(&w, keel__wait_abort_dequeue);
  keel__queue_insert_tail(requeue ? list->next : list, &w.node);
  return (int)keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
}

/* ---- Sending ------------------------------------------------------------------ */

/* Makes room under a non-blocking policy when full: 0 (room made),
 * KEEL_CHAN_DROPPED (item handled by dropping), or a negative errno. */
static int send_full(keel_chan_t *c, const void *item) {
  switch (c->policy) {
  case KEEL_CHAN_GROW:
    return grow(c);
  case KEEL_CHAN_DROP_OLDEST:
    if (c->len > 0) {
      pop_head(c, NULL);
      c->dropped++;
      push(c, item);
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

static int send_impl(keel_chan_t *c, const void *item, bool may_block) {
  if (!owned_here(c))
    return -EXDEV;
  bool woken = false;
  for (;;) {
    if (c->closed)
      return -EPIPE;
    if (KEEL__LIKELY(room(c) > 0)) {
      push(c, item);
      return 0;
    }
    int rc = send_full(c, item);
    if (rc == KEEL_CHAN_DROPPED || (rc < 0 && rc != -EAGAIN))
      return rc;
    if (rc == 0)
      continue;
    if (!may_block)
      return -EAGAIN;
    rc = wait_on(&c->send_waiters, woken);
    if (rc < 0)
      return rc;
    woken = true;
  }
}

int keel_chan_send(keel_chan_t *c, const void *item) { return send_impl(c, item, true); }
int keel_chan_try_send(keel_chan_t *c, const void *item) { return send_impl(c, item, false); }

/* ---- Receiving ------------------------------------------------------------------ */

static int recv_impl(keel_chan_t *c, void *item, bool may_block) {
  if (!owned_here(c))
    return -EXDEV;
  bool woken = false;
  for (;;) {
    if (KEEL__LIKELY(c->len > 0)) {
      pop(c, item);
      return 0;
    }
    /* reservations made before close may still be committed */
    if (c->closed && c->reserved == 0)
      return -EPIPE;
    if (!may_block)
      return -EAGAIN;
    int rc = wait_on(&c->recv_waiters, woken);
    if (rc < 0)
      return rc;
    woken = true;
  }
}

int keel_chan_recv(keel_chan_t *c, void *item) { return recv_impl(c, item, true); }
int keel_chan_try_recv(keel_chan_t *c, void *item) { return recv_impl(c, item, false); }

int keel_chan_close(keel_chan_t *c) {
  if (!owned_here(c))
    return -EXDEV;
  if (c->closed)
    return 0;
  c->closed = true;
  keel__waiters_wake_all(&c->send_waiters, 0);
  keel__waiters_wake_all(&c->recv_waiters, 0);
  return 0;
}

/* ---- Two-phase send ------------------------------------------------------------ */

int keel_chan_reserve(keel_chan_t *c, keel_chan_slot_t *slot) {
  slot->chan = NULL;
  if (!owned_here(c))
    return -EXDEV;
  bool woken = false;
  int rc = 0;
  for (;;) {
    if (c->closed)
      return -EPIPE;
    if (room(c) > 0)
      break;
    if (c->policy == KEEL_CHAN_GROW) {
      int err = grow(c);
      if (err)
        return err;
      continue;
    }
    if (c->policy == KEEL_CHAN_DROP_OLDEST && c->len > 0) {
      pop_head(c, NULL);
      c->dropped++;
      rc = KEEL_CHAN_DROPPED;
      break;
    }
    if (c->policy != KEEL_CHAN_BLOCK)
      return -EAGAIN;
    int err = wait_on(&c->send_waiters, woken);
    if (err < 0)
      return err;
    woken = true;
  }
  c->reserved++;
  slot->chan = c;
  return rc;
}

void keel_chan_commit(keel_chan_t *c, keel_chan_slot_t *slot, const void *item) {
  assert(slot->chan == c && c->reserved > 0);
  slot->chan = NULL;
  c->reserved--;
  push(c, item);
}

void keel_chan_abort(keel_chan_t *c, keel_chan_slot_t *slot) {
  assert(slot->chan == c && c->reserved > 0);
  slot->chan = NULL;
  c->reserved--;
  if (!keel__queue_empty(&c->send_waiters))
    keel__waiters_wake_one(&c->send_waiters, 0);
  /* the last reservation gone: receivers of a closed, empty channel end */
  if (c->closed && c->reserved == 0 && c->len == 0)
    keel__waiters_wake_all(&c->recv_waiters, 0);
}

/* ---- Introspection -------------------------------------------------------------- */

size_t keel_chan_len(const keel_chan_t *c) { return c->len; }
size_t keel_chan_capacity(const keel_chan_t *c) { return c->capacity; }
bool keel_chan_is_empty(const keel_chan_t *c) { return c->len == 0; }
bool keel_chan_is_full(const keel_chan_t *c) { return room(c) == 0; }
size_t keel_chan_dropped(const keel_chan_t *c) { return c->dropped; }
