/* Internal header: workers, their loops and the runtime (worker.c, runtime.c). */
#ifndef KEEL_WORKER_H
#define KEEL_WORKER_H

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend.h"
#include "fiber.h"
#include "msg.h"
#include "queue.h"
#include "spin.h"
#include "task.h"
#include "timer-internal.h"

/* ---- Workers and the runtime --------------------------------------------- */

#define KEEL__IO_BUDGET 256

/* State that a layer above the kernel keeps per worker (a buffer cache,
 * the lab network), freed with the worker: the kernel knows neither its
 * type nor its layer, only how to free it. */
enum {
  KEEL__SLOT_BUFS,
  KEEL__SLOT_LABNET,
  KEEL__SLOT_HTTP_CLIENT, /* the HTTP client's default pool (src/http/pool.c) */
  KEEL__SLOT_TLS,         /* TLS ciphertext buffers (src/tls/bio.c) */
  KEEL__SLOT_WS,          /* zlib streams for permessage-deflate (src/ws/ws.c) */
  KEEL__SLOTS
};
typedef struct keel__slot {
  void *state;
  void (*destroy)(keel__worker_t *w, void *state);
} keel__slot_t;

/* Freed task and scope structs kept for the next spawn or scope on this
 * worker, so that a task per request allocates nothing once warm. Off
 * under the sanitizers, which must see every free to catch a use after
 * it. */
#define KEEL__OBJ_CACHE 64
typedef struct keel__objcache {
  void *items[KEEL__OBJ_CACHE];
  int n;
  bool closed; /* the worker is being destroyed: free, do not keep */
} keel__objcache_t;

/* What a worker counts for its metrics (src/core/metrics.c): written by
 * the worker's own thread only (keel__stat_add: a plain load and store),
 * read by whichever thread exports them. */
typedef struct keel__worker_stats {
  _Atomic uint64_t loops, busy_ns, idle_ns;
  _Atomic uint64_t spawned, readied, runs, messages;
  _Atomic uint64_t io_submitted, io_completed, io_enters; /* io_uring */
  _Atomic uint64_t polls, poll_events;                    /* epoll */
  _Atomic uint64_t tasks, timers;                         /* sampled once per loop */
} keel__worker_stats_t;

/* Adds n to a counter only this thread writes, kept atomic (relaxed) so
 * that a reader on another thread sees a whole value: no lock prefix. */
static inline void keel__stat_add(_Atomic uint64_t *c, uint64_t n) {
  atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n, memory_order_relaxed);
}
static inline void keel__stat_set(_Atomic uint64_t *c, uint64_t v) {
  atomic_store_explicit(c, v, memory_order_relaxed);
}

struct keel__worker {
  keel_runtime_t *rt;
  int id;
  pthread_t thread;
  keel__ctx_t sched_ctx;
  keel_task_t *current;
  keel_task_t *dead; /* finished task whose stack is released after switching */
  keel_task_t *shed; /* task that parked without its stack: released the same way */
  keel__queue_t ready;
  keel__queue_t ready_cancel; /* cancelled tasks run first */
  keel__wheel_t wheel;
  const keel__backend_ops_t *ops;
  /* The backend's lab-mode hooks, copied from ops: the hot paths (every
   * task pick, clock read and yield) test them with one load. */
  bool virtual_time;
  int64_t (*clock)(keel__worker_t *w);
  keel_task_t *(*pick_ready)(keel__worker_t *w);
  void (*on_yield)(keel__worker_t *w, keel_task_t *t);
  void *backend;
  _Atomic(keel__msg_t *) inbox;
  atomic_bool sleeping;
  int wake_fd;
  bool stop;
  keel__msg_t stop_msg;
  keel__stack_t *stack_pool;
  size_t stack_pool_len;
  /* Stacks put on the pool since its last trim: the top ones of the pool
   * (it is a stack) are the only ones that may hold touched pages. */
  size_t stack_pool_dirty;
  keel__slot_t slots[KEEL__SLOTS]; /* the layers' per-worker state */
  keel__objcache_t task_cache, scope_cache;
  size_t tasks;              /* live tasks on this worker */
  int run_budget;            /* task runs left before the next poll */
  int64_t stack_fail_log_ns; /* when a restarting task last found no stack */
  int64_t inbox_last_ns;     /* when messages last arrived (idle spinning) */
  bool inbox_fresh;          /* messages drained since inbox_last_ns was set */
  void *altstack;
  stack_t prev_altstack;
  void *asan_fake_stack;
  void *tsan_sched_fiber;
  int init_result;
  uint64_t rng[2]; /* keel_random: xoroshiro128+, seeded per worker */
  keel__worker_stats_t stats;
  int64_t loop_mark_ns; /* when the loop last came back from polling (busy time from there) */
  const void *sched_stack_lo;
  size_t sched_stack_size;
};

struct keel_runtime {
  keel_config_t cfg;
  int nworkers;
  keel__worker_t *workers;
  keel_scope_t *root;
  const keel__backend_ops_t *ops;
  keel_task_fn main_fn;
  void *main_arg;
  int main_result;
  atomic_int shutting_down;
  pthread_mutex_t start_lock; /* workers report their set-up */
  pthread_cond_t start_cond;
  int started_workers;
  pthread_t signal_thread;
  bool have_signal_thread;
  int signal_fd;    /* the read end of the pipe the signal handler writes */
  int signal_wr_fd; /* its write end */
  int signal_stop_fd;
  struct sigaction signal_prev[3]; /* SIGINT's, SIGTERM's, SIGUSR1's before keel_run */
  atomic_bool drain_armed;         /* keel_shutdown started the drain deadline */
  keel__msg_t drain_msg;
  keel__timer_t drain_timer;       /* on worker 0 */
  uint64_t lab_seed;               /* lab mode's seed */
  struct keel__metrics *metrics;   /* the metrics registry (src/core/metrics.c) */
  atomic_int foreign_posts;        /* keel__xwait_deliver calls from outside the workers */
  pthread_mutex_t blocking_lock;   /* guards starting the blocking pool */
  struct keel__blocking *blocking; /* the blocking pool, started on first use */
  /* Set by the blocking pool (src/sync) when it starts: stops its threads
   * once every worker thread has ended, before the workers are destroyed. */
  void (*blocking_shutdown)(keel_runtime_t *rt);
  /* Stacks between the workers' caches: a worker that frees more than it
   * spawns (the target of cross-worker spawns) hands batches to one that
   * spawns more than it frees. */
  keel__spinlock_t depot_lock;
  keel__stack_t *depot;
  atomic_size_t depot_len; /* written under depot_lock; read without to skip an empty depot */
};

/* The worker running on this thread (NULL outside workers). */
extern _Thread_local keel__worker_t *keel__tls_worker;

static inline keel__worker_t *keel__worker_current(void) { return keel__tls_worker; }

/* A zeroed object of size bytes, from c when it holds one. */
static inline void *keel__objcache_get(keel__objcache_t *c, size_t size) {
  if (c && c->n > 0) {
    void *p = c->items[--c->n];
    memset(p, 0, size);
    return p;
  }
  return calloc(1, size);
}

/* Frees p, or keeps it in c (the calling thread's worker's cache). */
static inline void keel__objcache_put(keel__objcache_t *c, void *p) {
#if KEEL_ASAN || KEEL_TSAN
  (void)c;
#else
  if (c && !c->closed && c->n < KEEL__OBJ_CACHE) {
    c->items[c->n++] = p;
    return;
  }
#endif
  free(p);
}

static inline void keel__objcache_close(keel__objcache_t *c) {
  while (c->n > 0)
    free(c->items[--c->n]);
  c->closed = true;
}
static inline keel_task_t *keel__task_self(void) {
  keel__worker_t *w = keel__tls_worker;
  return w ? w->current : NULL;
}

/* Says what the current task is doing, for the task dump (a layer's phase:
 * "http: reading a request head"). label is a string literal, since the
 * dump may read it from any thread at any time, or NULL. One store. */
static inline void keel__task_doing(const char *label) {
  keel_task_t *t = keel__task_self();
  if (t)
    t->activity = label;
}

int keel__worker_init(keel__worker_t *w, keel_runtime_t *rt, int id);
void keel__worker_destroy(keel__worker_t *w);
void keel__worker_loop(keel__worker_t *w);
/* Runs every message in w's inbox, in posting order (w's own thread, not
 * from a task). */
void keel__worker_drain_inbox(keel__worker_t *w);
/* Switches from the current task back to the scheduler. */
void keel__task_park(void);
/* Called when the root scope becomes quiescent: stops every worker. */
void keel__runtime_quiescent(keel_runtime_t *rt);

int64_t keel__now_ns(void);

/* xoroshiro128+ state helpers (src/core/random.c). */
void keel__rng_seed(uint64_t s[2], uint64_t seed);
void keel__rng_seed_random(uint64_t s[2]);
uint64_t keel__rng_next(uint64_t s[2]);
static inline int64_t keel__ns_to_ms_ceil(int64_t ns) {
  return ns / KEEL_NS_PER_MS + (ns % KEEL_NS_PER_MS != 0);
}

/* Timer ticks: 1 ms on the real backends; 1 ns with virtual time, so it
 * lands exactly on each deadline. */
static inline int64_t keel__tick_of(const keel__worker_t *w, int64_t ns) {
  return KEEL__UNLIKELY(w->virtual_time) ? ns : keel__ns_to_ms_ceil(ns);
}
static inline int64_t keel__tick_floor(const keel__worker_t *w, int64_t ns) {
  return KEEL__UNLIKELY(w->virtual_time) ? ns : ns / KEEL_NS_PER_MS;
}
static inline int64_t keel__tick_to_ns(const keel__worker_t *w, int64_t tick) {
  return KEEL__UNLIKELY(w->virtual_time) ? tick : tick * KEEL_NS_PER_MS;
}
/* The worker's clock: virtual in lab mode. */
static inline int64_t keel__worker_now(keel__worker_t *w) {
  return KEEL__UNLIKELY(w->clock != NULL) ? w->clock(w) : keel__now_ns();
}

void keel__set_name(char *dst, const char *src, const char *dflt);

#endif
