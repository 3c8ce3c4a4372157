/* Oneshot: one value slot, two ends and at most one waiting receiver, all
 * under a spinlock, since the ends may live on different workers. The
 * receiver parks on a keel__xwait: the sender claims it under the lock
 * and delivers after unlocking, so a cancelled receiver has either left
 * the list (the value, if it comes, waits in the slot) or was claimed and
 * will look at the slot: no value and no wake-up is lost.
 *
 * Freeing: each end's final call marks it finished under the lock; the
 * call that finishes the second end frees the object after unlocking, and
 * neither end touches it after its own final call. */
#include "keel/oneshot.h"

#include <assert.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "sync-internal.h"

struct keel_oneshot {
  keel__spinlock_t lock;
  bool has_value;        /* sent and not received yet */
  bool sender_done;      /* sent or dropped */
  bool receiver_done;    /* dropped */
  keel__queue_t waiters; /* the receiving task's xwait (at most one) */
  size_t elem_size;
  unsigned char value[];
};

int keel_oneshot_open(size_t elem_size, keel_oneshot_t **out) {
  *out = NULL;
  if (elem_size == 0 || elem_size > SIZE_MAX - sizeof(keel_oneshot_t))
    return -EINVAL;
  keel_oneshot_t *o = calloc(1, sizeof *o + elem_size);
  if (!o)
    return -ENOMEM;
  o->lock = (keel__spinlock_t){ATOMIC_FLAG_INIT};
  keel__queue_init(&o->waiters);
  o->elem_size = elem_size;
  *out = o;
  return 0;
}

/* Finishes the sender end, with value (NULL: dropped). The waiting
 * receiver, if any, is woken to look again: it finds the value or, if the
 * sender dropped, -EPIPE. */
static int finish_sender(keel_oneshot_t *o, const void *value) {
  keel__spin_lock(&o->lock);
  assert(!o->sender_done);
  int rc = value ? -EPIPE : 0;
  if (value && !o->receiver_done) {
    memcpy(o->value, value, o->elem_size);
    o->has_value = true;
    rc = 0;
  }
  o->sender_done = true;
  bool last = o->receiver_done;
  keel__xwait_t *waiter = keel__xwait_pop(&o->waiters);
  keel__spin_unlock(&o->lock);
  /* The receiver may run, drop its end and free o as soon as it is
   * delivered: o is not touched after this unless this call was last. */
  if (waiter)
    keel__xwait_deliver(waiter, 0);
  if (last)
    free(o);
  return rc;
}

int keel_oneshot_send(keel_oneshot_t *o, const void *value) {
  assert(value);
  return finish_sender(o, value);
}

void keel_oneshot_drop_sender(keel_oneshot_t *o) { (void)finish_sender(o, NULL); }

static int recv_impl(keel_oneshot_t *o, void *value, bool may_block) {
  for (;;) {
    keel__spin_lock(&o->lock);
    assert(!o->receiver_done);
    if (o->has_value) {
      memcpy(value, o->value, o->elem_size);
      o->has_value = false;
      keel__spin_unlock(&o->lock);
      return 0;
    }
    int rc = o->sender_done ? -EPIPE : may_block ? keel__sync_may_wait() : -EAGAIN;
    if (rc) {
      keel__spin_unlock(&o->lock);
      return rc;
    }
    assert(keel__task_self() && keel__queue_empty(&o->waiters));
    keel__xwait_t xw;
    keel__xwait_init(&xw, &o->lock, KEEL__WAIT_ONESHOT, o);
    keel__queue_insert_tail(&o->waiters, &xw.wait.node);
    keel__spin_unlock(&o->lock);
    /* 0: the sender finished (look again); else interrupted, off the list */
    rc = (int)keel__xwait_block(&xw);
    if (rc < 0)
      return rc;
  }
}

int keel_oneshot_recv(keel_oneshot_t *o, void *value) { return recv_impl(o, value, true); }
int keel_oneshot_try_recv(keel_oneshot_t *o, void *value) { return recv_impl(o, value, false); }

void keel_oneshot_drop_receiver(keel_oneshot_t *o) {
  keel__spin_lock(&o->lock);
  assert(!o->receiver_done && keel__queue_empty(&o->waiters));
  o->receiver_done = true;
  o->has_value = false;
  bool last = o->sender_done;
  keel__spin_unlock(&o->lock);
  if (last)
    free(o);
}
