/* keel synchronisation between tasks on any worker: notify, semaphore,
 * mutex, rwlock, barrier, once, and a bounded task pool. Waiting parks the
 * task, never the worker thread; every wait honours cancellation and
 * deadlines (the task's and its scopes'), returning -ECANCELED or
 * -ETIMEDOUT with nothing taken.
 *
 * The types are held by value, so they can be embedded (from C++ too):
 * opaque storage, sized and aligned for a layout private to the library.
 * Init before use, destroy after (no task may wait then), and do not copy
 * after init. They are shared by tasks on every worker; operations that
 * need not wait (an uncontended lock, a free permit) take one atomic
 * operation, and succeed even in a cancelled task (its cleanup may need a
 * lock): cancellation ends waits. Operations that may wait must be called
 * from a task; those that never wait (unlock, release, notify) may be
 * called from any thread. */
#ifndef KEEL_SYNC_H
#define KEEL_SYNC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Aligns the storage of the types below, in C11 and C++11 alike. Their
 * opaque_ bytes are the library's: never read or write them. */
#ifdef __cplusplus
#define KEEL_ALIGNAS(n) alignas(n)
#else
#define KEEL_ALIGNAS(n) _Alignas(n)
#endif

/* ---- Notify ------------------------------------------------------------- */

/* Wakes tasks (like tokio's Notify): notify_one wakes the longest-waiting
 * task or, if none waits, stores one permit that the next wait consumes;
 * notify_all wakes every task waiting now and stores nothing. */
typedef struct keel_notify {
  KEEL_ALIGNAS(8) unsigned char opaque_[40];
} keel_notify_t;

void keel_notify_init(keel_notify_t *n);
void keel_notify_destroy(keel_notify_t *n);

/* Waits for a notification. Returns 0 at once if a permit was stored
 * (consuming it), else 0 when notified; -ECANCELED or -ETIMEDOUT if the
 * task is cancelled or its deadline passes first, even after a notify_one
 * picked it (that notification then goes to the next waiter, or is stored:
 * none is lost); -EINVAL outside a task. */
int keel_notify_wait(keel_notify_t *n);
/* Never block; any thread. */
void keel_notify_one(keel_notify_t *n);
void keel_notify_all(keel_notify_t *n);

/* ---- Semaphore ---------------------------------------------------------- */

/* Counting semaphore, strictly FIFO: a request for n permits is served
 * before any later request, so a large one is not starved by small ones. */
typedef struct keel_sem {
  KEEL_ALIGNAS(8) unsigned char opaque_[40];
} keel_sem_t;

/* permits: at most KEEL_SEM_MAX. */
#define KEEL_SEM_MAX (UINT64_MAX >> 2)
void keel_sem_init(keel_sem_t *s, uint64_t permits);
void keel_sem_destroy(keel_sem_t *s);

/* Takes n permits, waiting for them behind earlier requests. Returns 0;
 * -ECANCELED / -ETIMEDOUT with none taken (permits handed to a waiter that
 * was cancelled before it ran go on to the next); -EINVAL if n is 0 or more
 * than KEEL_SEM_MAX, or if it must wait outside a task. */
int keel_sem_acquire(keel_sem_t *s, uint64_t n);
/* Takes n permits if that needs no wait: 0, or -EAGAIN when there are too
 * few or other tasks wait already (FIFO); -EINVAL as above. */
int keel_sem_try_acquire(keel_sem_t *s, uint64_t n);
/* Returns n permits, waking waiters in order. Never blocks; any thread. */
void keel_sem_release(keel_sem_t *s, uint64_t n);
/* Permits free now (a snapshot). */
uint64_t keel_sem_available(const keel_sem_t *s);

/* ---- Mutex --------------------------------------------------------------- */

/* Task-aware mutex: a contended lock parks the task. Fairness: when tasks
 * wait, unlock hands the lock straight to the longest-waiting one (FIFO;
 * nobody can barge in meanwhile), so no waiter starves. Not recursive. */
typedef struct keel_mutex {
  KEEL_ALIGNAS(8) unsigned char opaque_[48];
} keel_mutex_t;

void keel_mutex_init(keel_mutex_t *m);
/* The mutex must be unlocked, with no waiters. */
void keel_mutex_destroy(keel_mutex_t *m);

/* Locks, waiting if needed. Returns 0 (locked); -ECANCELED / -ETIMEDOUT
 * with the lock NOT taken (if it was handed over just before, it goes on to
 * the next waiter); -EINVAL if it must wait outside a task. A free mutex
 * is taken even by a cancelled task (cleanup may need it). */
int keel_mutex_lock(keel_mutex_t *m);
/* 0 (locked) or -EBUSY (held, or handed to a waiter). Never blocks. */
int keel_mutex_try_lock(keel_mutex_t *m);
/* Unlocks (the owner only: asserted in debug builds). Never blocks. */
void keel_mutex_unlock(keel_mutex_t *m);

/* ---- Read-write lock ---------------------------------------------------- */

/* Many readers or one writer. Once any task waits, newcomers queue behind
 * it (FIFO): a waiting writer holds back new readers, so a stream of
 * readers cannot starve it; readers queued together enter together. */
typedef struct keel_rwlock {
  KEEL_ALIGNAS(8) unsigned char opaque_[40];
} keel_rwlock_t;

void keel_rwlock_init(keel_rwlock_t *l);
/* The lock must be free, with no waiters. */
void keel_rwlock_destroy(keel_rwlock_t *l);

/* Lock for reading / writing, waiting if needed. Return 0; -ECANCELED /
 * -ETIMEDOUT with nothing taken (a lock handed over just before is passed
 * on); -EINVAL if they must wait outside a task. */
int keel_rwlock_read_lock(keel_rwlock_t *l);
int keel_rwlock_write_lock(keel_rwlock_t *l);
/* 0 or -EBUSY (held incompatibly, or tasks wait). Never block. */
int keel_rwlock_try_read_lock(keel_rwlock_t *l);
int keel_rwlock_try_write_lock(keel_rwlock_t *l);
/* Never block; any thread. */
void keel_rwlock_unlock_read(keel_rwlock_t *l);
void keel_rwlock_unlock_write(keel_rwlock_t *l);

/* ---- Barrier ------------------------------------------------------------- */

/* N parties meet; reusable: the next N form the next generation. */
typedef struct keel_barrier {
  KEEL_ALIGNAS(8) unsigned char opaque_[48];
} keel_barrier_t;

/* Returned by keel_barrier_wait to exactly one party of each generation. */
#define KEEL_BARRIER_LEADER 1

/* Returns 0, or -EINVAL if parties is 0. */
int keel_barrier_init(keel_barrier_t *b, unsigned parties);
void keel_barrier_destroy(keel_barrier_t *b);

/* Waits until `parties` tasks have arrived. Returns KEEL_BARRIER_LEADER to
 * the last to arrive and 0 to the others; -ECANCELED / -ETIMEDOUT if the
 * task is cancelled or its deadline passes before the barrier trips: it
 * then leaves and no longer counts (the generation still needs `parties`
 * arrivals). Once tripped the wait succeeds, even if cancelled meanwhile;
 * the last party trips it without waiting, cancelled or not.
 * -EINVAL if it must wait outside a task. */
int keel_barrier_wait(keel_barrier_t *b);

/* ---- Once ----------------------------------------------------------------- */

typedef struct keel_once {
  KEEL_ALIGNAS(8) unsigned char opaque_[48];
} keel_once_t;

/* A once is all zeros when new: KEEL_ONCE_INIT (or static storage, or
 * memset to 0) initialises it as keel_once_init does, so a static once
 * needs no init call. */
/* clang-format off */
#define KEEL_ONCE_INIT {{0}}
/* clang-format on */
void keel_once_init(keel_once_t *o);

/* Runs fn(arg) once: the first caller runs it; callers meanwhile (any
 * worker) wait for it; later callers return at once. Returns fn's result
 * once it succeeded (>= 0), to every caller from then on. If fn fails
 * (negative, e.g. its task was cancelled), that caller gets the error and
 * the once stays undone: the next caller (or a waiting one) runs fn again.
 * A waiter returns -ECANCELED / -ETIMEDOUT if cancelled first; -EDEADLK if
 * fn calls keel_once on its own once; -EINVAL if it must wait outside a
 * task. */
int keel_once(keel_once_t *o, keel_task_fn fn, void *arg);
/* True once fn has succeeded. */
bool keel_once_done(const keel_once_t *o);

/* ---- Bounded task pool ------------------------------------------------------ */

/* Runs at most `limit` tasks at once; spawning waits for a free slot. */
typedef struct keel_pool keel_pool_t;

/* Opens a pool. parent NULL: the pool opens its own scope, nested in the
 * calling task's scope (call from a task; that task closes the pool).
 * Otherwise tasks are spawned into parent, which the caller manages.
 * limit 0: the number of CPUs. Returns 0, -ENOMEM, or -EINVAL (NULL parent
 * outside a task). */
int keel_pool_open(keel_scope_t *parent, size_t limit, keel_pool_t **out);

/* Waits for a free slot, then spawns fn(arg) into the pool's scope (opts as
 * keel_spawn's; may be NULL). The slot frees when fn returns. Returns 0;
 * -ECANCELED / -ETIMEDOUT while waiting, with nothing spawned; keel_spawn's
 * errors (-ECANCELED if the scope is cancelled, -EINVAL, -ENOMEM). Any
 * task, any worker. No allocation beyond keel_spawn's own. */
int keel_pool_spawn(keel_pool_t *p, keel_task_fn fn, void *arg, const keel_spawn_opts_t *opts);
/* As keel_pool_spawn, but -EAGAIN when no slot is free. */
int keel_pool_try_spawn(keel_pool_t *p, keel_task_fn fn, void *arg, const keel_spawn_opts_t *opts);

/* Waits until no pool task runs. With its own scope: keel_scope_join on it
 * (its result; only the task that opened the pool may join it, others get
 * -EPERM; cancellation of the joiner cancels the pool's tasks; as with any
 * joined scope, only the opener may spawn into it afterwards: -EPIPE).
 * With a parent scope: 0, or -ECANCELED / -ETIMEDOUT (the tasks keep
 * running); spawns that come after the join wait behind it. */
int keel_pool_join(keel_pool_t *p);
/* Waits for the pool's tasks and frees the pool; neither cancellation nor
 * a deadline (a shield's included) cuts the wait short. Returns 0 (NULL:
 * 0), or, with its own scope, what its scope's join returned (the first
 * task error...); -EPERM from a task other than the one that opened it
 * (the pool stays open). With a parent scope, call it from a task: outside
 * one it can only free an idle pool, and returns -EBUSY (the pool stays
 * allocated) rather than free it under running tasks. */
int keel_pool_close(keel_pool_t *p);

/* Slots: the limit, and tasks running now (a snapshot). */
size_t keel_pool_limit(const keel_pool_t *p);
size_t keel_pool_running(const keel_pool_t *p);
/* The scope the pool's tasks run in. */
keel_scope_t *keel_pool_scope(const keel_pool_t *p);

#ifdef __cplusplus
}
#endif
#endif
