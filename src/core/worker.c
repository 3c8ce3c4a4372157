/* Worker loops: ready queues, the inbox of cross-worker messages, timers
 * and the backend poll. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "internal.h"

#if KEEL_TSAN
void *__tsan_get_current_fiber(void);
#endif

/* Tasks run between two polls at most; keeps I/O from starving behind a
 * crowd of yielding tasks while letting a yield cost a context switch, not
 * a system call. */
#define RUN_BUDGET 1024

void keel__worker_run_ready(keel__worker_t *w, int budget);

int keel__worker_init(keel__worker_t *w, keel_runtime_t *rt, int id) {
  w->rt = rt;
  w->id = id;
  keel__queue_init(&w->ready);
  keel__queue_init(&w->ready_cancel);
  atomic_init(&w->inbox, NULL);
  atomic_init(&w->sleeping, false);
  w->ops = rt->ops;
  w->virtual_time = w->ops->virtual_time;
  w->clock = w->ops->clock;
  w->pick_ready = w->ops->pick_ready;
  w->on_yield = w->ops->on_yield;
  keel__rng_seed_random(w->rng);
  w->wake_fd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (w->wake_fd < 0)
    return -errno;
#if KEEL_TSAN
  w->tsan_sched_fiber = __tsan_get_current_fiber();
#endif
  int rc = w->ops->init(w);
  if (rc < 0) {
    close(w->wake_fd);
    w->wake_fd = -1;
    return rc;
  }
  /* After init: lab mode's clock is virtual. */
  int64_t now = keel__worker_now(w);
  keel__wheel_init(&w->wheel, keel__tick_floor(w, now));
  w->loop_mark_ns = now;
  if (!rt->cfg.no_stack_guard_handler) /* the alternate stack is for keel's handler */
    keel__stack_guard_thread_init(w);
  return 0;
}

/* Any thread, once w's loop has ended (its own thread has already given
 * back its alternate signal stack). */
void keel__worker_destroy(keel__worker_t *w) {
  for (int i = 0; i < KEEL__SLOTS; i++) { /* the layers' state, before the backend's */
    keel__slot_t *s = &w->slots[i];
    if (s->destroy)
      s->destroy(w, s->state);
    *s = (keel__slot_t){0};
  }
  w->ops->destroy(w);
  keel__stack_pool_destroy(w);
  keel__objcache_close(&w->task_cache);
  keel__objcache_close(&w->scope_cache);
  if (w->wake_fd >= 0)
    close(w->wake_fd);
  w->wake_fd = -1;
}

/* Treiber-stack push: producers never block each other; the consumer takes
 * the whole stack at once, so there is no ABA. The seq_cst exchange on
 * `sleeping` pairs with the worker's store before it polls: either the
 * worker sees the message before sleeping or we see it asleep and wake it. */
void keel__worker_post(keel__worker_t *w, keel__msg_t *m) {
  keel__msg_t *head = atomic_load_explicit(&w->inbox, memory_order_relaxed);
  do {
    m->next = head;
  } while (!atomic_compare_exchange_weak_explicit(&w->inbox, &head, m, memory_order_seq_cst,
                                                  memory_order_relaxed));
  if (atomic_load(&w->sleeping) && atomic_exchange(&w->sleeping, false))
    w->ops->wake(w);
}

void keel__worker_drain_inbox(keel__worker_t *w) {
  if (atomic_load_explicit(&w->inbox, memory_order_relaxed) == NULL)
    return;
  keel__msg_t *m = atomic_exchange(&w->inbox, NULL);
  keel__msg_t *fifo = NULL;
  w->inbox_fresh = true; /* dated in idle_spin: no clock read per drain */
  while (m) {            /* reverse into posting order */
    keel__msg_t *next = m->next;
    m->next = fifo;
    fifo = m;
    m = next;
  }
  uint64_t n = 0;
  while (fifo) {
    keel__msg_t *next = fifo->next;
    fifo->fn(w, fifo);
    fifo = next;
    n++;
  }
  keel__stat_add(&w->stats.messages, n);
}

static int64_t poll_timeout_ns(keel__worker_t *w) {
  if (!keel__queue_empty(&w->ready) || !keel__queue_empty(&w->ready_cancel))
    return 0;
  int64_t next_tick = keel__wheel_next_expiry(&w->wheel);
  if (next_tick == INT64_MAX)
    return -1;
  int64_t delta = keel__tick_to_ns(w, next_tick) - keel__now_ns();
  return delta > 0 ? delta : 0;
}

/* Before sleeping, a worker that received messages within the last
 * IDLE_SPIN_RECENT_NS watches its inbox for up to IDLE_SPIN_NS: between two
 * workers streaming through a channel the next message is usually a
 * microsecond away, while waking a sleeping thread (eventfd, scheduler)
 * costs tens of microseconds on both sides. While it spins, `sleeping`
 * stays false, so posters skip the wake-up write. A worker that gets no
 * messages (a lone server) never spins; lab mode never does. */
#define IDLE_SPIN_NS 20000
#define IDLE_SPIN_RECENT_NS 1000000

static bool idle_spin(keel__worker_t *w, int64_t timeout_ns) {
  if (w->virtual_time || (!w->inbox_fresh && w->inbox_last_ns == 0))
    return false;
  int64_t now = keel__now_ns();
  if (w->inbox_fresh) { /* messages came since the last time we got here */
    w->inbox_fresh = false;
    w->inbox_last_ns = now;
  } else if (now - w->inbox_last_ns > IDLE_SPIN_RECENT_NS) {
    return false;
  }
  int64_t limit = timeout_ns > 0 && timeout_ns < IDLE_SPIN_NS ? timeout_ns : IDLE_SPIN_NS;
  int64_t until = now + limit;
  for (unsigned i = 1;; i++) {
    if (atomic_load_explicit(&w->inbox, memory_order_relaxed) != NULL)
      return true;
    keel__cpu_relax();
    if ((i & 31) == 0 && keel__now_ns() >= until)
      return false;
  }
}

/* A worker that sleeps this long with stacks to spare gives them back
 * (keel__stack_pool_trim): after a burst, not in the steady state. */
#define IDLE_TRIM_NS (200 * KEEL_NS_PER_MS)

/* One loop done: the time since the last one was busy up to slept_from
 * (0: it did not sleep) and idle from there to now. */
static void loop_account(keel__worker_t *w, int64_t slept_from, int64_t now) {
  keel__worker_stats_t *st = &w->stats;
  int64_t busy_end = slept_from ? slept_from : now;
  if (busy_end > w->loop_mark_ns)
    keel__stat_add(&st->busy_ns, (uint64_t)(busy_end - w->loop_mark_ns));
  if (slept_from && now > slept_from)
    keel__stat_add(&st->idle_ns, (uint64_t)(now - slept_from));
  w->loop_mark_ns = now;
  keel__stat_add(&st->loops, 1);
  keel__stat_set(&st->tasks, w->tasks);
  keel__stat_set(&st->timers, w->wheel.count);
}

void keel__worker_loop(keel__worker_t *w) {
  while (!w->stop) {
    keel__worker_run_ready(w, RUN_BUDGET);
    keel__worker_drain_inbox(w);
    if (w->stop)
      break;
    int64_t timeout = poll_timeout_ns(w);
    if (timeout != 0 && idle_spin(w, timeout))
      timeout = 0;
    bool trim = timeout != 0 && !w->virtual_time && keel__stack_pool_excess(w);
    if (trim && (timeout < 0 || timeout > IDLE_TRIM_NS))
      timeout = IDLE_TRIM_NS;
    if (timeout != 0) {
      atomic_store(&w->sleeping, true);
      if (atomic_load(&w->inbox) != NULL)
        timeout = 0;
    }
    int64_t slept_from = timeout != 0 ? keel__now_ns() : 0;
    w->ops->poll(w, timeout);
    atomic_store_explicit(&w->sleeping, false, memory_order_relaxed);
    int64_t now = keel__now_ns();
    loop_account(w, slept_from, now);
    keel__wheel_advance(&w->wheel, keel__tick_floor(w, now));
    if (trim && timeout == IDLE_TRIM_NS && now - slept_from >= IDLE_TRIM_NS &&
        poll_timeout_ns(w) != 0)
      keel__stack_pool_trim(w);
  }
  keel__worker_drain_inbox(w); /* messages that raced the stop still release their references */
}

/* ---- Descriptors ---------------------------------------------------------- */

void keel__io_init(keel__io_t *io, int fd) {
  memset(io, 0, sizeof *io);
  io->fd = fd;
  io->worker = keel__worker_current();
  keel__queue_init(&io->rd_waiters);
  keel__queue_init(&io->wr_waiters);
  io->rd_ready = io->wr_ready = true; /* unknown: try the call first */
  io->slot = -1;
}
