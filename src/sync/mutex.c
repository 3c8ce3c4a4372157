/* Task-aware mutex and read-write lock, shared between workers. The state
 * word is the fast path: uncontended, lock is one CAS and unlock one CAS.
 * Once a task waits, the has-waiters bit sends every fast path to the
 * slow one, under the object's spinlock, so the word changes only under
 * that lock until the list empties; unlocking then hands the lock to the
 * first waiter (FIFO) without ever freeing it in between. */
#include "sync-internal.h"

/* ---- Mutex ------------------------------------------------------------------ */

enum { MUTEX_LOCKED = 1u, MUTEX_WAITERS = 2u };

void keel_mutex_init(keel_mutex_t *mutex) {
  keel__mutex_t *m = keel__mutex(mutex);
  atomic_init(&m->state, 0);
  atomic_init(&m->owner, NULL);
  keel__waitq_init(&m->waiters);
}

void keel_mutex_destroy(keel_mutex_t *mutex) {
  assert(atomic_load(&keel__mutex(mutex)->state) == 0);
  (void)mutex;
}

static inline void mutex_set_owner(keel__mutex_t *m, keel_task_t *t) {
#ifndef NDEBUG
  atomic_store_explicit(&m->owner, t, memory_order_relaxed);
#else
  (void)m;
  (void)t;
#endif
}

/* Under the lock, the mutex held: gives it to the first waiter, or frees
 * it. The word keeps MUTEX_LOCKED across a hand-off, so nobody barges. */
static void mutex_handoff(keel__mutex_t *m, keel__queue_t *wake) {
  keel__sync_waiter_t *sw = keel__waitq_head(&m->waiters);
  if (!sw) {
    atomic_store_explicit(&m->state, 0, memory_order_release);
    return;
  }
  keel__sync_claim(wake, sw, 0);
  mutex_set_owner(m, sw->xw.wait.task);
  unsigned s = keel__waitq_empty(&m->waiters) ? MUTEX_LOCKED : MUTEX_LOCKED | MUTEX_WAITERS;
  atomic_store_explicit(&m->state, s, memory_order_release);
}

/* A waiter left: with nobody else waiting, unlock may take the fast path. */
static void mutex_left(void *obj, keel__queue_t *wake) {
  keel__mutex_t *m = obj;
  (void)wake;
  if (keel__waitq_empty(&m->waiters))
    atomic_fetch_and_explicit(&m->state, ~MUTEX_WAITERS, memory_order_relaxed);
}

static void mutex_abort(keel__wait_t *w, int err) { keel__sync_abort(w, err, mutex_left); }

int keel_mutex_try_lock(keel_mutex_t *mutex) {
  keel__mutex_t *m = keel__mutex(mutex);
  unsigned expect = 0;
  if (!atomic_compare_exchange_strong_explicit(&m->state, &expect, MUTEX_LOCKED,
                                               memory_order_acquire, memory_order_relaxed))
    return -EBUSY;
  mutex_set_owner(m, keel__task_self());
  return 0;
}

static void mutex_unlock(keel__mutex_t *m);

static int mutex_lock_slow(keel__mutex_t *m) {
  keel__waitq_lock(&m->waiters);
  unsigned s = atomic_load_explicit(&m->state, memory_order_relaxed);
  for (;;) {
    if (!(s & MUTEX_LOCKED)) {
      if (atomic_compare_exchange_weak_explicit(&m->state, &s, s | MUTEX_LOCKED,
                                                memory_order_acquire, memory_order_relaxed)) {
        keel__waitq_unlock(&m->waiters);
        mutex_set_owner(m, keel__task_self());
        return 0;
      }
      continue;
    }
    int err = keel__sync_may_wait();
    if (err) {
      keel__waitq_unlock(&m->waiters);
      return err;
    }
    /* Set the bit before queueing: an unlock that sees it comes here. */
    if ((s & MUTEX_WAITERS) ||
        atomic_compare_exchange_weak_explicit(&m->state, &s, s | MUTEX_WAITERS,
                                              memory_order_relaxed, memory_order_relaxed))
      break;
  }
  keel__sync_waiter_t sw;
  ssize_t rc = keel__sync_park(&m->waiters, &sw, 0, m, mutex_abort, KEEL__WAIT_MUTEX);
  if (rc < 0)
    return (int)rc;
  /* Handed the lock, but cancelled before running: pass it on. */
  int err = keel__check_cancel();
  if (err) {
    mutex_unlock(m);
    return err;
  }
  return 0;
}

int keel_mutex_lock(keel_mutex_t *mutex) {
  keel__mutex_t *m = keel__mutex(mutex);
  unsigned expect = 0;
  if (KEEL__LIKELY(atomic_compare_exchange_strong_explicit(
          &m->state, &expect, MUTEX_LOCKED, memory_order_acquire, memory_order_relaxed))) {
    mutex_set_owner(m, keel__task_self());
    return 0;
  }
  return mutex_lock_slow(m);
}

static void mutex_unlock_slow(keel__mutex_t *m) {
  keel__queue_t wake;
  keel__queue_init(&wake);
  keel__waitq_lock(&m->waiters);
  mutex_handoff(m, &wake);
  keel__waitq_unlock(&m->waiters);
  keel__xwait_deliver_claimed(&wake);
}

static void mutex_unlock(keel__mutex_t *m) {
  assert(atomic_load_explicit(&m->state, memory_order_relaxed) & MUTEX_LOCKED);
  assert(atomic_load_explicit(&m->owner, memory_order_relaxed) == keel__task_self() &&
         "keel_mutex_unlock by a task that does not hold the mutex");
  mutex_set_owner(m, NULL);
  unsigned expect = MUTEX_LOCKED;
  if (KEEL__LIKELY(atomic_compare_exchange_strong_explicit(
          &m->state, &expect, 0, memory_order_release, memory_order_relaxed)))
    return;
  mutex_unlock_slow(m);
}

void keel_mutex_unlock(keel_mutex_t *mutex) { mutex_unlock(keel__mutex(mutex)); }

/* ---- Read-write lock ------------------------------------------------------- */

enum { RW_WRITER = 1u, RW_WAITERS = 2u, RW_READER = 4u };
enum { NEED_READ = 0, NEED_WRITE = 1 };

#define RW_HELD(s) ((s) & ~(uint64_t)RW_WAITERS)

void keel_rwlock_init(keel_rwlock_t *lock) {
  keel__rwlock_t *l = keel__rwlock(lock);
  atomic_init(&l->state, 0);
  keel__waitq_init(&l->waiters);
}

void keel_rwlock_destroy(keel_rwlock_t *lock) {
  assert(atomic_load(&keel__rwlock(lock)->state) == 0);
  (void)lock;
}

static inline bool rw_can_take(uint64_t s, uint64_t need) {
  return need == NEED_WRITE ? RW_HELD(s) == 0 : !(s & RW_WRITER);
}
static inline uint64_t rw_taken(uint64_t s, uint64_t need) {
  return need == NEED_WRITE ? s | RW_WRITER : s + RW_READER;
}

/* Under the lock: admits waiters in order while they fit: a run of
 * readers together, or one writer once the lock is free. */
static void rw_dispatch(keel__rwlock_t *l, keel__queue_t *wake) {
  keel__sync_waiter_t *sw;
  while ((sw = keel__waitq_head(&l->waiters))) {
    uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
    if (!rw_can_take(s, sw->need))
      break;
    keel__sync_claim(wake, sw, 0);
    if (sw->need == NEED_WRITE) {
      atomic_fetch_or_explicit(&l->state, RW_WRITER, memory_order_relaxed);
      break;
    }
    atomic_fetch_add_explicit(&l->state, RW_READER, memory_order_relaxed);
  }
  if (keel__waitq_empty(&l->waiters))
    atomic_fetch_and_explicit(&l->state, ~(uint64_t)RW_WAITERS, memory_order_release);
}

static void rw_left(void *obj, keel__queue_t *wake) { rw_dispatch(obj, wake); }
static void rw_abort(keel__wait_t *w, int err) { keel__sync_abort(w, err, rw_left); }

static void rw_unlock_read(keel__rwlock_t *l);
static void rw_unlock_write(keel__rwlock_t *l);

static void rw_release(keel__rwlock_t *l, uint64_t need) {
  if (need == NEED_WRITE)
    rw_unlock_write(l);
  else
    rw_unlock_read(l);
}

static int rw_lock_slow(keel__rwlock_t *l, uint64_t need) {
  keel__waitq_lock(&l->waiters);
  uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
  for (;;) {
    /* Only with nobody queued: a waiting writer holds back new readers. */
    if (keel__waitq_empty(&l->waiters) && rw_can_take(s, need)) {
      if (atomic_compare_exchange_weak_explicit(&l->state, &s, rw_taken(s, need),
                                                memory_order_acquire, memory_order_relaxed)) {
        keel__waitq_unlock(&l->waiters);
        return 0;
      }
      continue;
    }
    int err = keel__sync_may_wait();
    if (err) {
      keel__waitq_unlock(&l->waiters);
      return err;
    }
    if ((s & RW_WAITERS) ||
        atomic_compare_exchange_weak_explicit(&l->state, &s, s | RW_WAITERS, memory_order_relaxed,
                                              memory_order_relaxed))
      break;
  }
  keel__sync_waiter_t sw;
  keel__wait_kind_t kind = need == NEED_WRITE ? KEEL__WAIT_RWLOCK_WRITE : KEEL__WAIT_RWLOCK_READ;
  ssize_t rc = keel__sync_park(&l->waiters, &sw, need, l, rw_abort, kind);
  if (rc < 0)
    return (int)rc;
  int err = keel__check_cancel(); /* handed the lock, then cancelled: pass it on */
  if (err) {
    rw_release(l, need);
    return err;
  }
  return 0;
}

static int rw_try_read_lock(keel__rwlock_t *l) {
  uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
  while (!(s & (RW_WRITER | RW_WAITERS)))
    if (atomic_compare_exchange_weak_explicit(&l->state, &s, s + RW_READER, memory_order_acquire,
                                              memory_order_relaxed))
      return 0;
  return -EBUSY;
}

int keel_rwlock_try_read_lock(keel_rwlock_t *lock) { return rw_try_read_lock(keel__rwlock(lock)); }

int keel_rwlock_read_lock(keel_rwlock_t *lock) {
  keel__rwlock_t *l = keel__rwlock(lock);
  if (KEEL__LIKELY(rw_try_read_lock(l) == 0))
    return 0;
  return rw_lock_slow(l, NEED_READ);
}

static int rw_try_write_lock(keel__rwlock_t *l) {
  uint64_t expect = 0;
  if (atomic_compare_exchange_strong_explicit(&l->state, &expect, RW_WRITER, memory_order_acquire,
                                              memory_order_relaxed))
    return 0;
  return -EBUSY;
}

int keel_rwlock_try_write_lock(keel_rwlock_t *lock) {
  return rw_try_write_lock(keel__rwlock(lock));
}

int keel_rwlock_write_lock(keel_rwlock_t *lock) {
  keel__rwlock_t *l = keel__rwlock(lock);
  if (KEEL__LIKELY(rw_try_write_lock(l) == 0))
    return 0;
  return rw_lock_slow(l, NEED_WRITE);
}

/* Under the lock: drops what the caller held, then admits waiters. */
static void rw_unlock_slow(keel__rwlock_t *l, uint64_t need) {
  keel__queue_t wake;
  keel__queue_init(&wake);
  keel__waitq_lock(&l->waiters);
  if (need == NEED_WRITE)
    atomic_fetch_and_explicit(&l->state, ~(uint64_t)RW_WRITER, memory_order_release);
  else
    atomic_fetch_sub_explicit(&l->state, RW_READER, memory_order_release);
  rw_dispatch(l, &wake);
  keel__waitq_unlock(&l->waiters);
  keel__xwait_deliver_claimed(&wake);
}

static void rw_unlock_read(keel__rwlock_t *l) {
  uint64_t s = atomic_load_explicit(&l->state, memory_order_relaxed);
  assert(s >= RW_READER && !(s & RW_WRITER));
  while (!(s & RW_WAITERS))
    if (atomic_compare_exchange_weak_explicit(&l->state, &s, s - RW_READER, memory_order_release,
                                              memory_order_relaxed))
      return;
  rw_unlock_slow(l, NEED_READ);
}

static void rw_unlock_write(keel__rwlock_t *l) {
  uint64_t expect = RW_WRITER;
  if (KEEL__LIKELY(atomic_compare_exchange_strong_explicit(
          &l->state, &expect, 0, memory_order_release, memory_order_relaxed)))
    return;
  assert(expect & RW_WRITER);
  rw_unlock_slow(l, NEED_WRITE);
}

void keel_rwlock_unlock_read(keel_rwlock_t *lock) { rw_unlock_read(keel__rwlock(lock)); }
void keel_rwlock_unlock_write(keel_rwlock_t *lock) { rw_unlock_write(keel__rwlock(lock)); }
