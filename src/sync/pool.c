/* Bounded task pool: a semaphore of `limit` permits gates spawning, and
 * `limit` slots, allocated with the pool, carry fn/arg to a trampoline
 * that runs them and then gives the slot and the permit back. Holding a
 * permit guarantees a free slot, so spawning allocates nothing beyond
 * keel_spawn's own task. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "scope.h"
#include "sync-internal.h"

typedef struct pool_slot {
  keel_pool_t *pool;
  keel_task_fn fn;
  void *arg;
  struct pool_slot *next_free;
} pool_slot_t;

struct keel_pool {
  keel_sem_t free_slots; /* permits: slots free */
  keel__spinlock_t free_lock;
  pool_slot_t *free_list; /* under free_lock */
  keel_scope_t *scope;
  bool owns_scope; /* opened by keel_pool_open: join and close it */
  size_t limit;
  pool_slot_t slots[];
};

static size_t cpu_count(void) {
  long n = sysconf(_SC_NPROCESSORS_ONLN);
  return n > 0 ? (size_t)n : 1;
}

int keel_pool_open(keel_scope_t *parent, size_t limit, keel_pool_t **out) {
  *out = NULL;
  if (limit == 0)
    limit = cpu_count();
  if (limit > (SIZE_MAX - sizeof(keel_pool_t)) / sizeof(pool_slot_t) || limit > KEEL_SEM_MAX)
    return -EINVAL;
  if (!parent && !keel__task_self())
    return -EINVAL;
  keel_pool_t *p = calloc(1, sizeof *p + limit * sizeof(pool_slot_t));
  if (!p)
    return -ENOMEM;
  p->scope = parent;
  if (!parent) {
    keel_scope_opts_t o = {.name = "pool"};
    int rc = keel_scope_open(&o, &p->scope);
    if (rc < 0) {
      free(p);
      return rc;
    }
    p->owns_scope = true;
  }
  keel_sem_init(&p->free_slots, limit);
  atomic_flag_clear(&p->free_lock.flag);
  p->limit = limit;
  for (size_t i = 0; i < limit; i++) {
    p->slots[i].pool = p;
    p->slots[i].next_free = i + 1 < limit ? &p->slots[i + 1] : NULL;
  }
  p->free_list = &p->slots[0];
  *out = p;
  return 0;
}

static pool_slot_t *slot_take(keel_pool_t *p) {
  keel__spin_lock(&p->free_lock);
  pool_slot_t *slot = p->free_list;
  assert(slot); /* the caller holds a permit */
  p->free_list = slot->next_free;
  keel__spin_unlock(&p->free_lock);
  return slot;
}

/* Gives the slot and its permit back. The permit last: from then on the
 * pool may be freed (keel_pool_close waits for every permit). */
static void slot_put(keel_pool_t *p, pool_slot_t *slot) {
  keel__spin_lock(&p->free_lock);
  slot->next_free = p->free_list;
  p->free_list = slot;
  keel__spin_unlock(&p->free_lock);
  keel_sem_release(&p->free_slots, 1);
}

static int pool_trampoline(void *arg) {
  pool_slot_t *slot = arg;
  int rc = slot->fn(slot->arg);
  slot_put(slot->pool, slot);
  return rc;
}

/* Holding a permit: takes a slot and spawns into it. */
static int spawn_in_slot(keel_pool_t *p, keel_task_fn fn, void *arg,
                         const keel_spawn_opts_t *opts) {
  pool_slot_t *slot = slot_take(p);
  slot->fn = fn;
  slot->arg = arg;
  int rc = keel_spawn(p->scope, pool_trampoline, slot, opts);
  if (rc < 0)
    slot_put(p, slot);
  return rc;
}

int keel_pool_spawn(keel_pool_t *p, keel_task_fn fn, void *arg, const keel_spawn_opts_t *opts) {
  if (!fn)
    return -EINVAL;
  int rc = keel_sem_acquire(&p->free_slots, 1);
  if (rc < 0)
    return rc;
  return spawn_in_slot(p, fn, arg, opts);
}

int keel_pool_try_spawn(keel_pool_t *p, keel_task_fn fn, void *arg, const keel_spawn_opts_t *opts) {
  if (!fn)
    return -EINVAL;
  int rc = keel_sem_try_acquire(&p->free_slots, 1);
  if (rc < 0)
    return rc;
  return spawn_in_slot(p, fn, arg, opts);
}

/* Takes every permit (so no pool task runs), then gives them back. */
static int wait_idle(keel_pool_t *p) {
  int rc = keel_sem_acquire(&p->free_slots, p->limit);
  if (rc == 0)
    keel_sem_release(&p->free_slots, p->limit);
  return rc;
}

int keel_pool_join(keel_pool_t *p) {
  if (p->owns_scope)
    return keel_scope_join(p->scope);
  return wait_idle(p);
}

int keel_pool_close(keel_pool_t *p) {
  if (!p)
    return 0;
  int result = 0;
  if (p->owns_scope) {
    if (p->scope->opener != keel__task_self()) {
      /* Only the opener may close the pool's scope (keel_scope_close). */
      keel_log(KEEL_LOG_ERROR, "keel_pool_close from a task other than the pool's opener: "
                               "the pool is left open");
      return -EPERM;
    }
    result = keel_scope_close(p->scope);
  } else {
    /* The tasks still use the pool: wait for every permit, whatever
     * cancellation or an expired shield deadline say. */
    int rc = keel__sem_acquire_nocancel(&p->free_slots, p->limit);
    if (rc < 0) {
      /* Outside a task with pool tasks running: nothing can wait for them,
       * and freeing would pull the pool from under them. */
      keel_log(KEEL_LOG_ERROR,
               "keel_pool_close outside a task while %zu pool tasks run: "
               "the pool is left allocated",
               keel_pool_running(p));
      return -EBUSY;
    }
  }
  keel_sem_destroy(&p->free_slots);
  free(p);
  return result;
}

size_t keel_pool_limit(const keel_pool_t *p) { return p->limit; }

size_t keel_pool_running(const keel_pool_t *p) {
  return p->limit - (size_t)keel_sem_available(&p->free_slots);
}

keel_scope_t *keel_pool_scope(const keel_pool_t *p) { return p->scope; }
