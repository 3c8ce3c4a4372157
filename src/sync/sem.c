/* Counting semaphore, FIFO, shared between workers. The state word holds
 * the free permits and a has-waiters bit: without waiters, acquire and
 * release are one CAS each; with waiters, every path goes through the
 * spinlock, and release hands permits to the waiters in order (the head's
 * whole request, or nothing: a later, smaller request never overtakes). */
#include "sync-internal.h"

#define SEM_WAITERS UINT64_C(1)
#define SEM_PERMITS(s) ((s) >> 1)
#define SEM_UNITS(n) ((uint64_t)(n) << 1)

void keel_sem_init(keel_sem_t *sem, uint64_t permits) {
  keel__sem_t *s = keel__sem(sem);
  assert(permits <= KEEL_SEM_MAX);
  atomic_init(&s->state, SEM_UNITS(permits));
  keel__waitq_init(&s->waiters);
}

void keel_sem_destroy(keel_sem_t *sem) {
  assert(!(atomic_load(&keel__sem(sem)->state) & SEM_WAITERS));
  (void)sem;
}

uint64_t keel_sem_available(const keel_sem_t *sem) {
  return SEM_PERMITS(atomic_load_explicit(&keel__sem(sem)->state, memory_order_relaxed));
}

/* Under the lock: serves the waiters in order while the head's request
 * fits; the bit goes once nobody waits. */
static void sem_dispatch(keel__sem_t *s, keel__queue_t *wake) {
  keel__sync_waiter_t *sw;
  while ((sw = keel__waitq_head(&s->waiters))) {
    uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
    if (SEM_PERMITS(st) < sw->need)
      break;
    atomic_fetch_sub_explicit(&s->state, SEM_UNITS(sw->need), memory_order_relaxed);
    keel__sync_claim(wake, sw, 0);
  }
  if (keel__waitq_empty(&s->waiters))
    atomic_fetch_and_explicit(&s->state, ~SEM_WAITERS, memory_order_release);
}

/* The head left (a big request cancelled): those behind it may fit now. */
static void sem_left(void *obj, keel__queue_t *wake) { sem_dispatch(obj, wake); }
static void sem_abort(keel__wait_t *w, int err) { keel__sync_abort(w, err, sem_left); }

static int sem_try_acquire(keel__sem_t *s, uint64_t n) {
  if (n == 0 || n > KEEL_SEM_MAX)
    return -EINVAL;
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  while (!(st & SEM_WAITERS) && SEM_PERMITS(st) >= n)
    if (atomic_compare_exchange_weak_explicit(&s->state, &st, st - SEM_UNITS(n),
                                              memory_order_acquire, memory_order_relaxed))
      return 0;
  return -EAGAIN;
}

static void sem_release(keel__sem_t *s, uint64_t n);

static int sem_acquire_slow(keel__sem_t *s, uint64_t n, bool nocancel) {
  keel__waitq_lock(&s->waiters);
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  for (;;) {
    if (keel__waitq_empty(&s->waiters) && SEM_PERMITS(st) >= n) {
      if (atomic_compare_exchange_weak_explicit(&s->state, &st, st - SEM_UNITS(n),
                                                memory_order_acquire, memory_order_relaxed)) {
        keel__waitq_unlock(&s->waiters);
        return 0;
      }
      continue;
    }
    int err = nocancel ? (keel__task_self() ? 0 : -EINVAL) : keel__sync_may_wait();
    if (err) {
      keel__waitq_unlock(&s->waiters);
      return err;
    }
    if ((st & SEM_WAITERS) ||
        atomic_compare_exchange_weak_explicit(&s->state, &st, st | SEM_WAITERS,
                                              memory_order_relaxed, memory_order_relaxed))
      break;
  }
  keel__sync_waiter_t sw;
  ssize_t rc = keel__sync_park_ex(&s->waiters, &sw, n, s, sem_abort, nocancel, KEEL__WAIT_SEM);
  if (rc < 0 || nocancel)
    return (int)rc;
  int err = keel__check_cancel(); /* handed the permits, then cancelled: pass them on */
  if (err) {
    sem_release(s, n);
    return err;
  }
  return 0;
}

int keel_sem_try_acquire(keel_sem_t *sem, uint64_t n) { return sem_try_acquire(keel__sem(sem), n); }

int keel_sem_acquire(keel_sem_t *sem, uint64_t n) {
  keel__sem_t *s = keel__sem(sem);
  int rc = sem_try_acquire(s, n);
  if (KEEL__LIKELY(rc != -EAGAIN))
    return rc;
  return sem_acquire_slow(s, n, false);
}

int keel__sem_acquire_nocancel(keel_sem_t *sem, uint64_t n) {
  keel__sem_t *s = keel__sem(sem);
  int rc = sem_try_acquire(s, n);
  if (KEEL__LIKELY(rc != -EAGAIN))
    return rc;
  return sem_acquire_slow(s, n, true);
}

static void sem_release_slow(keel__sem_t *s, uint64_t n) {
  keel__queue_t wake;
  keel__queue_init(&wake);
  keel__waitq_lock(&s->waiters);
  atomic_fetch_add_explicit(&s->state, SEM_UNITS(n), memory_order_release);
  sem_dispatch(s, &wake);
  keel__waitq_unlock(&s->waiters);
  keel__xwait_deliver_claimed(&wake);
}

static void sem_release(keel__sem_t *s, uint64_t n) {
  if (n == 0)
    return;
  uint64_t st = atomic_load_explicit(&s->state, memory_order_relaxed);
  assert(n <= KEEL_SEM_MAX - SEM_PERMITS(st));
  while (!(st & SEM_WAITERS))
    if (atomic_compare_exchange_weak_explicit(&s->state, &st, st + SEM_UNITS(n),
                                              memory_order_release, memory_order_relaxed))
      return;
  sem_release_slow(s, n);
}

void keel_sem_release(keel_sem_t *sem, uint64_t n) { sem_release(keel__sem(sem), n); }
