/* Notify, shared between workers. The state word holds a stored permit and
 * a has-waiters bit: with nobody waiting, notify_one only sets the permit
 * and a wait that finds it only clears it. Waiters learn which call woke
 * them, because a notify_one that picked a task cancelled before it ran
 * must go on (to the next waiter, or into the permit), while a notify_all
 * had already reached everyone it was meant for. */
#include "sync-internal.h"

enum { NOTIFY_PERMIT = 1u, NOTIFY_WAITERS = 2u };
enum { WOKEN_BY_ONE = 1, WOKEN_BY_ALL = 2 };

void keel_notify_init(keel_notify_t *notify) {
  keel__notify_t *n = keel__notify(notify);
  atomic_init(&n->state, 0);
  keel__waitq_init(&n->waiters);
}

void keel_notify_destroy(keel_notify_t *notify) {
  assert(!(atomic_load(&keel__notify(notify)->state) & NOTIFY_WAITERS));
  (void)notify;
}

static void notify_left(void *obj, keel__queue_t *wake) {
  keel__notify_t *n = obj;
  (void)wake;
  if (keel__waitq_empty(&n->waiters))
    atomic_fetch_and_explicit(&n->state, ~NOTIFY_WAITERS, memory_order_relaxed);
}

static void notify_abort(keel__wait_t *w, int err) { keel__sync_abort(w, err, notify_left); }

static bool take_permit(keel__notify_t *n, unsigned *s) {
  while (*s & NOTIFY_PERMIT)
    if (atomic_compare_exchange_weak_explicit(&n->state, s, *s & ~NOTIFY_PERMIT,
                                              memory_order_acquire, memory_order_relaxed))
      return true;
  return false;
}

static void notify_one(keel__notify_t *n);

static int notify_wait_slow(keel__notify_t *n) {
  keel__waitq_lock(&n->waiters);
  unsigned s = atomic_load_explicit(&n->state, memory_order_relaxed);
  for (;;) {
    if (take_permit(n, &s)) {
      keel__waitq_unlock(&n->waiters);
      return 0;
    }
    int err = keel__sync_may_wait();
    if (err) {
      keel__waitq_unlock(&n->waiters);
      return err;
    }
    /* Failing (a permit arrived), this loops to take it. */
    if ((s & NOTIFY_WAITERS) ||
        atomic_compare_exchange_weak_explicit(&n->state, &s, s | NOTIFY_WAITERS,
                                              memory_order_relaxed, memory_order_relaxed))
      break;
  }
  keel__sync_waiter_t sw;
  ssize_t rc = keel__sync_park(&n->waiters, &sw, 0, n, notify_abort, KEEL__WAIT_NOTIFY);
  if (rc < 0)
    return (int)rc;
  int err = keel__check_cancel();
  if (err) {
    if (rc == WOKEN_BY_ONE)
      notify_one(n); /* not ours to drop: pass it on */
    return err;
  }
  return 0;
}

int keel_notify_wait(keel_notify_t *notify) {
  keel__notify_t *n = keel__notify(notify);
  unsigned s = atomic_load_explicit(&n->state, memory_order_relaxed);
  if (take_permit(n, &s))
    return 0;
  return notify_wait_slow(n);
}

static void notify_one_slow(keel__notify_t *n) {
  keel__queue_t wake;
  keel__queue_init(&wake);
  keel__waitq_lock(&n->waiters);
  keel__sync_waiter_t *sw = keel__waitq_head(&n->waiters);
  if (sw)
    keel__sync_claim(&wake, sw, WOKEN_BY_ONE);
  if (keel__waitq_empty(&n->waiters)) /* and, if nobody took it, store it */
    atomic_store_explicit(&n->state, sw ? 0 : NOTIFY_PERMIT, memory_order_release);
  keel__waitq_unlock(&n->waiters);
  keel__xwait_deliver_claimed(&wake);
}

static void notify_one(keel__notify_t *n) {
  unsigned s = atomic_load_explicit(&n->state, memory_order_relaxed);
  for (;;) {
    if (s & NOTIFY_WAITERS) {
      notify_one_slow(n);
      return;
    }
    if (s & NOTIFY_PERMIT) { /* already stored; the RMW orders our writes */
      if (atomic_compare_exchange_weak_explicit(&n->state, &s, s, memory_order_release,
                                                memory_order_relaxed))
        return;
      continue;
    }
    if (atomic_compare_exchange_weak_explicit(&n->state, &s, s | NOTIFY_PERMIT,
                                              memory_order_release, memory_order_relaxed))
      return;
  }
}

void keel_notify_one(keel_notify_t *notify) { notify_one(keel__notify(notify)); }

void keel_notify_all(keel_notify_t *notify) {
  keel__notify_t *n = keel__notify(notify);
  if (!(atomic_load_explicit(&n->state, memory_order_acquire) & NOTIFY_WAITERS))
    return;
  keel__queue_t wake;
  keel__queue_init(&wake);
  keel__waitq_lock(&n->waiters);
  keel__sync_waiter_t *sw;
  while ((sw = keel__waitq_head(&n->waiters)))
    keel__sync_claim(&wake, sw, WOKEN_BY_ALL);
  atomic_fetch_and_explicit(&n->state, ~NOTIFY_WAITERS, memory_order_release);
  keel__waitq_unlock(&n->waiters);
  keel__xwait_deliver_claimed(&wake);
}
