/* Internal header: the layouts behind keel/sync.h's opaque types, and the
 * waiter lists the sync primitives share. Each object has a spinlock and
 * a FIFO list of parked tasks (keel__xwait_t, so tasks on any worker may
 * wait). A waker claims waiters under the lock, updates the object's state
 * on their behalf (hand-off: the lock or the permits are already theirs
 * when they wake), and delivers after dropping the lock. A waiter that is
 * cancelled leaves under the same lock, through an abort hook that lets
 * the object re-run its hand-off: what it was blocking (a big semaphore
 * request at the head, a writer ahead of readers) goes on at once. */
#ifndef KEEL_SYNC_INTERNAL_H
#define KEEL_SYNC_INTERNAL_H

#include <assert.h>
#include <errno.h>

#include "worker.h"
#include "keel/sync.h"

/* A spinlock and the list of parked tasks. The list's links are NULL until
 * first used, so a zeroed waitq is a valid empty list (KEEL_ONCE_INIT). */
typedef struct keel__waitq {
  keel__spinlock_t lock;
  keel__queue_t list;
} keel__waitq_t;

/* ---- Layouts of the public types ---------------------------------------------
 * The user holds opaque storage (keel/sync.h); the library reaches the
 * layout through one helper per type. The helpers take a const object, as
 * container_of does: the entry points that take one only read. All zeros
 * must stay a valid new once (KEEL_ONCE_INIT). */

typedef struct keel__notify {
  _Atomic unsigned state; /* stored permit, has-waiters (notify.c) */
  keel__waitq_t waiters;
} keel__notify_t;

typedef struct keel__sem {
  _Atomic uint64_t state; /* permits << 1 | has-waiters */
  keel__waitq_t waiters;
} keel__sem_t;

typedef struct keel__mutex {
  _Atomic unsigned state;       /* locked, has-waiters */
  _Atomic(keel_task_t *) owner; /* debug builds check unlock */
  keel__waitq_t waiters;
} keel__mutex_t;

typedef struct keel__rwlock {
  _Atomic uint64_t state; /* readers << 2 | writer | has-waiters */
  keel__waitq_t waiters;
} keel__rwlock_t;

typedef struct keel__barrier {
  unsigned parties; /* these three under the waitq's lock */
  unsigned arrived;
  uint64_t generation;
  keel__waitq_t waiters;
} keel__barrier_t;

typedef struct keel__once {
  _Atomic int state; /* new (0), running, done */
  int result;
  keel_task_t *runner;
  keel__waitq_t waiters;
} keel__once_t;

#define KEEL__SYNC_FITS(layout, storage)                                                     \
  _Static_assert(sizeof(layout) <= sizeof(storage) && _Alignof(layout) <= _Alignof(storage), \
                 #layout " must fit " #storage "'s storage in keel/sync.h")

KEEL__SYNC_FITS(keel__notify_t, keel_notify_t);
KEEL__SYNC_FITS(keel__sem_t, keel_sem_t);
KEEL__SYNC_FITS(keel__mutex_t, keel_mutex_t);
KEEL__SYNC_FITS(keel__rwlock_t, keel_rwlock_t);
KEEL__SYNC_FITS(keel__barrier_t, keel_barrier_t);
KEEL__SYNC_FITS(keel__once_t, keel_once_t);

static inline keel__notify_t *keel__notify(const keel_notify_t *n) {
  return (keel__notify_t *)(void *)n->opaque_;
}
static inline keel__sem_t *keel__sem(const keel_sem_t *s) {
  return (keel__sem_t *)(void *)s->opaque_;
}
static inline keel__mutex_t *keel__mutex(const keel_mutex_t *m) {
  return (keel__mutex_t *)(void *)m->opaque_;
}
static inline keel__rwlock_t *keel__rwlock(const keel_rwlock_t *l) {
  return (keel__rwlock_t *)(void *)l->opaque_;
}
static inline keel__barrier_t *keel__barrier(const keel_barrier_t *b) {
  return (keel__barrier_t *)(void *)b->opaque_;
}
static inline keel__once_t *keel__once(const keel_once_t *o) {
  return (keel__once_t *)(void *)o->opaque_;
}

/* ---- Waiting on a waitq ------------------------------------------------------- */

typedef struct keel__sync_waiter {
  keel__xwait_t xw;
  uint64_t need; /* what it waits for (permits, reader or writer) */
} keel__sync_waiter_t;

/* Called under the lock after an aborted waiter left: re-run the hand-off,
 * claiming into wake whoever can go now. */
typedef void (*keel__sync_left_fn)(void *obj, keel__queue_t *wake);

static inline void keel__waitq_init(keel__waitq_t *q) {
  atomic_flag_clear(&q->lock.flag);
  keel__queue_init(&q->list);
}

static inline void keel__waitq_lock(keel__waitq_t *q) { keel__spin_lock(&q->lock); }
static inline void keel__waitq_unlock(keel__waitq_t *q) { keel__spin_unlock(&q->lock); }

/* Under the lock. A zeroed waitq has NULL links: make them an empty list
 * on first use. */
static inline keel__queue_t *keel__waitq_list(keel__waitq_t *q) {
  if (KEEL__UNLIKELY(!q->list.next))
    keel__queue_init(&q->list);
  return &q->list;
}

/* Under the lock: the longest-waiting task, or NULL. */
static inline keel__sync_waiter_t *keel__waitq_head(keel__waitq_t *q) {
  keel__queue_t *list = keel__waitq_list(q);
  if (keel__queue_empty(list))
    return NULL;
  return keel__container_of(list->next, keel__sync_waiter_t, xw.wait.node);
}

static inline bool keel__waitq_empty(keel__waitq_t *q) {
  return keel__queue_empty(keel__waitq_list(q));
}

/* Under the lock: takes sw off the list and claims it (a listed waiter is
 * always still parked: aborts and claims both happen under the lock);
 * it is delivered result by keel__xwait_deliver_claimed. */
static inline void keel__sync_claim(keel__queue_t *wake, keel__sync_waiter_t *sw, ssize_t result) {
  keel__queue_remove(&sw->xw.wait.node);
  bool claimed = keel__xwait_claim(&sw->xw);
  assert(claimed);
  (void)claimed;
  sw->xw.xresult = result; /* delivered once the lock is dropped */
  keel__queue_insert_tail(wake, &sw->xw.wait.node);
}

/* Abort hook body: as keel__xwait's, plus the object's left() under the
 * same lock, so nothing waits behind a waiter that is gone. */
static inline void keel__sync_abort(keel__wait_t *w, int err, keel__sync_left_fn left) {
  keel__xwait_t *xw = keel__container_of(w, keel__xwait_t, wait);
  keel__queue_t wake;
  keel__queue_init(&wake);
  keel__spin_lock(xw->lock);
  int expect = KEEL__XWAIT_PARKED;
  bool won = atomic_compare_exchange_strong_explicit(&xw->state, &expect, KEEL__XWAIT_ABORTED,
                                                     memory_order_acq_rel, memory_order_acquire);
  if (won) {
    keel__queue_remove(&w->node);
    left(w->data, &wake);
  }
  keel__spin_unlock(xw->lock);
  if (won)
    keel__wait_complete(w, err);
  /* Lost: a waker claimed it and its result is on the way. */
  keel__xwait_deliver_claimed(&wake);
}

/* Under the lock, about to wait: 0, -EINVAL outside a task, or the
 * cancellation error (checked only now: what needs no wait succeeds even
 * in a cancelled task). */
static inline int keel__sync_may_wait(void) {
  if (!keel__task_self())
    return -EINVAL;
  return keel__check_cancel();
}

/* Under q's lock: queues the current task as sw (needing `need`), drops
 * the lock and parks. Returns the delivered result, or -ECANCELED /
 * -ETIMEDOUT once it has left the list. */
static inline ssize_t keel__sync_park_ex(keel__waitq_t *q, keel__sync_waiter_t *sw, uint64_t need,
                                         void *obj, keel__wait_abort_fn abort, bool nocancel,
                                         keel__wait_kind_t kind) {
  keel__xwait_init(&sw->xw, &q->lock, kind, obj);
  sw->xw.wait.shielded = nocancel; /* only the hand-off ends it */
  sw->xw.wait.abort = abort;
  sw->xw.wait.data = obj;
  sw->need = need;
  keel__queue_insert_tail(keel__waitq_list(q), &sw->xw.wait.node);
  keel__waitq_unlock(q);
  return keel__xwait_block(&sw->xw);
}

static inline ssize_t keel__sync_park(keel__waitq_t *q, keel__sync_waiter_t *sw, uint64_t need,
                                      void *obj, keel__wait_abort_fn abort,
                                      keel__wait_kind_t kind) {
  return keel__sync_park_ex(q, sw, need, obj, abort, false, kind);
}

/* keel_sem_acquire that neither cancellation nor any deadline (a shield's
 * included) interrupts: for cleanup that must wait, such as a pool's close
 * waiting for its tasks. -EINVAL outside a task. */
int keel__sem_acquire_nocancel(keel_sem_t *s, uint64_t n);

#endif
