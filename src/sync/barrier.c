/* Barrier and once, shared between workers. Neither has a hot path worth a
 * lock-free word beyond once's "done" check, so their state lives under
 * the object's spinlock. */
#include "sync-internal.h"

/* ---- Barrier ------------------------------------------------------------------ */

int keel_barrier_init(keel_barrier_t *barrier, unsigned parties) {
  keel__barrier_t *b = keel__barrier(barrier);
  if (parties == 0)
    return -EINVAL;
  b->parties = parties;
  b->arrived = 0;
  b->generation = 0;
  keel__waitq_init(&b->waiters);
  return 0;
}

void keel_barrier_destroy(keel_barrier_t *barrier) {
  assert(keel__barrier(barrier)->arrived == 0);
  (void)barrier;
}

/* A waiter gave up before the barrier tripped: it no longer counts. Done
 * under the lock it left the list under, so a trip never counts it. */
static void barrier_left(void *obj, keel__queue_t *wake) {
  keel__barrier_t *b = obj;
  (void)wake;
  b->arrived--;
}

static void barrier_abort(keel__wait_t *w, int err) { keel__sync_abort(w, err, barrier_left); }

int keel_barrier_wait(keel_barrier_t *barrier) {
  keel__barrier_t *b = keel__barrier(barrier);
  keel__waitq_lock(&b->waiters);
  if (++b->arrived == b->parties) {
    keel__queue_t wake;
    keel__queue_init(&wake);
    keel__sync_waiter_t *sw;
    while ((sw = keel__waitq_head(&b->waiters)))
      keel__sync_claim(&wake, sw, 0);
    b->arrived = 0;
    b->generation++;
    keel__waitq_unlock(&b->waiters);
    keel__xwait_deliver_claimed(&wake);
    return KEEL_BARRIER_LEADER;
  }
  int err = keel__sync_may_wait();
  if (err) {
    b->arrived--;
    keel__waitq_unlock(&b->waiters);
    return err;
  }
  keel__sync_waiter_t sw;
  return (int)keel__sync_park(&b->waiters, &sw, 0, b, barrier_abort, KEEL__WAIT_BARRIER);
}

/* ---- Once ---------------------------------------------------------------------- */

enum { ONCE_NEW = 0, ONCE_RUNNING, ONCE_DONE };
enum { WOKEN_DONE = 1, WOKEN_RETRY = 2 };

void keel_once_init(keel_once_t *once) {
  keel__once_t *o = keel__once(once);
  atomic_init(&o->state, ONCE_NEW);
  o->result = 0;
  o->runner = NULL;
  keel__waitq_init(&o->waiters);
}

bool keel_once_done(const keel_once_t *once) {
  return atomic_load_explicit(&keel__once(once)->state, memory_order_acquire) == ONCE_DONE;
}

static void once_left(void *obj, keel__queue_t *wake) {
  (void)obj;
  (void)wake;
}

static void once_abort(keel__wait_t *w, int err) { keel__sync_abort(w, err, once_left); }

/* fn returned rc: publish it (success), or reopen the once and wake the
 * waiters so one of them runs fn again (failure). */
static void once_finish(keel__once_t *o, int rc) {
  keel__queue_t wake;
  keel__queue_init(&wake);
  keel__waitq_lock(&o->waiters);
  o->runner = NULL;
  if (rc >= 0)
    o->result = rc;
  atomic_store_explicit(&o->state, rc >= 0 ? ONCE_DONE : ONCE_NEW, memory_order_release);
  keel__sync_waiter_t *sw;
  while ((sw = keel__waitq_head(&o->waiters)))
    keel__sync_claim(&wake, sw, rc >= 0 ? WOKEN_DONE : WOKEN_RETRY);
  keel__waitq_unlock(&o->waiters);
  keel__xwait_deliver_claimed(&wake);
}

/* Under the lock, fn running elsewhere: waits for it. Returns 0 to retry
 * (fn failed), 1 when done, or an error. */
static int once_wait_locked(keel__once_t *o) {
  keel_task_t *self = keel__task_self();
  if (self && o->runner == self) {
    keel__waitq_unlock(&o->waiters);
    return -EDEADLK;
  }
  int err = keel__sync_may_wait();
  if (err) {
    keel__waitq_unlock(&o->waiters);
    return err;
  }
  keel__sync_waiter_t sw;
  ssize_t rc = keel__sync_park(&o->waiters, &sw, 0, o, once_abort, KEEL__WAIT_ONCE);
  return rc < 0 ? (int)rc : rc == WOKEN_DONE;
}

int keel_once(keel_once_t *once, keel_task_fn fn, void *arg) {
  keel__once_t *o = keel__once(once);
  if (KEEL__LIKELY(atomic_load_explicit(&o->state, memory_order_acquire) == ONCE_DONE))
    return o->result;
  for (;;) {
    keel__waitq_lock(&o->waiters);
    int state = atomic_load_explicit(&o->state, memory_order_relaxed);
    if (state == ONCE_DONE) {
      keel__waitq_unlock(&o->waiters);
      return o->result;
    }
    if (state == ONCE_NEW) {
      atomic_store_explicit(&o->state, ONCE_RUNNING, memory_order_relaxed);
      o->runner = keel__task_self();
      keel__waitq_unlock(&o->waiters);
      int rc = fn(arg);
      once_finish(o, rc);
      return rc;
    }
    int rc = once_wait_locked(o);
    if (rc < 0)
      return rc;
    if (rc == 1)
      return o->result;
  }
}
