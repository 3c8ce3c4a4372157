/* Tasks: stackful fibers, spawning, parking, waits and cancellation checks. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

_Thread_local keel__worker_t *keel__tls_worker;

#if KEEL_ASAN
void __sanitizer_start_switch_fiber(void **fake_stack_save, const void *bottom, size_t size);
void __sanitizer_finish_switch_fiber(void *fake_stack_save, const void **bottom_old,
                                     size_t *size_old);
#endif
#if KEEL_TSAN
void *__tsan_get_current_fiber(void);
void *__tsan_create_fiber(unsigned flags);
void __tsan_switch_to_fiber(void *fiber, unsigned flags);
void __tsan_func_exit(void);
void __tsan_destroy_fiber(void *fiber);
#endif

/* ---- Switching ------------------------------------------------------------ */

static void restart_entry(void *arg);
static void task_make_ctx(keel_task_t *t, void (*entry)(void *));

static void regain_retry_cb(keel__timer_t *tm) {
  keel__task_ready(keel__container_of(tm, keel__wait_t, timer)->task);
}

/* A task that gave its stack back gets one again before it runs. True
 * when no stack can be had now: it tries again a millisecond later (on
 * its ended wait's timer), so that a worker short of memory neither spins
 * nor floods the log (one line a second). */
static __attribute__((noinline)) bool task_regain_stack(keel__worker_t *w, keel_task_t *t) {
  if (keel__stack_alloc(w, t->stack_size, &t->stack) != 0) {
    int64_t now = keel__worker_now(w);
    if (now - w->stack_fail_log_ns >= KEEL_NS_PER_SEC) {
      w->stack_fail_log_ns = now;
      /* Called on the way to t, so the line's own task (if any) is another. */
      KEEL_LOG_FIELDS(KEEL_LOG_ERROR, "no memory for a task's stack: the task waits for one",
                      keel_log_str("waiting_task", t->name),
                      keel_log_uint("stack_size", t->stack_size));
    }
    t->state = KEEL__TASK_BLOCKED;
    keel__timer_t *tm = &t->restart->wait.timer;
    keel__timer_init(tm, regain_retry_cb);
    keel__timer_start(&w->wheel, tm, keel__tick_of(w, now + KEEL_NS_PER_MS));
    return true;
  }
  task_make_ctx(t, restart_entry);
  return false;
}

static inline bool task_needs_stack(keel__worker_t *w, keel_task_t *t) {
  return KEEL__UNLIKELY(t->stack == NULL) && task_regain_stack(w, t);
}

/* After the switch back: a finished task's stack goes back to the pool, and
 * so does the stack of one that parked without it. */
static void release_switched_out(keel__worker_t *w) {
  if (w->dead) {
    keel_task_t *dead = w->dead;
    w->dead = NULL;
    keel__stack_release(w, dead->stack); /* with its ThreadSanitizer fiber */
    dead->stack = NULL;
    w->tasks--;
    keel__task_unref(dead); /* the running reference */
  }
  if (w->shed) {
    keel_task_t *t = w->shed;
    w->shed = NULL;
#if KEEL_TSAN
    /* Its shadow call stack still holds the frames that parked: a fresh
     * fiber for the next task on this stack. */
    __tsan_destroy_fiber(t->stack->tsan_fiber);
    t->stack->tsan_fiber = NULL;
#endif
    keel__stack_release(w, t->stack);
    t->stack = NULL;
  }
}

/* Scheduler -> task. Returns when the task parks or finishes. */
static void switch_to_task(keel__worker_t *w, keel_task_t *t) {
  if (task_needs_stack(w, t))
    return;
  w->current = t;
  t->state = KEEL__TASK_RUNNING;
  keel__stat_add(&w->stats.runs, 1);
#if KEEL_ASAN
  __sanitizer_start_switch_fiber(&w->asan_fake_stack, t->stack->lo, t->stack->size);
#endif
#if KEEL_TSAN
  __tsan_switch_to_fiber(t->tsan_fiber, 0);
#endif
  keel__ctx_switch(&w->sched_ctx, &t->ctx);
#if KEEL_ASAN
  __sanitizer_finish_switch_fiber(w->asan_fake_stack, NULL, NULL);
#endif
  w->current = NULL;
  release_switched_out(w);
}

static keel_task_t *pop_ready(keel__worker_t *w) {
  if (KEEL__UNLIKELY(w->pick_ready != NULL))
    return w->pick_ready(w);
  keel__queue_t *q = &w->ready_cancel;
  if (keel__queue_empty(q)) {
    q = &w->ready;
    if (keel__queue_empty(q))
      return NULL;
  }
  keel__queue_t *n = q->next;
  keel__queue_remove(n);
  return keel__container_of(n, keel_task_t, ready_node);
}

/* Task -> next ready task, without the hop through the scheduler: half the
 * switches per hand-off. Not under the sanitizers, whose fiber hooks track
 * the scheduler's stack by the switches into and out of it. */
static bool park_direct(keel__worker_t *w, keel_task_t *t) {
#if KEEL_ASAN || KEEL_TSAN
  (void)w;
  (void)t;
  return false;
#else
  /* Messages from other workers (a cancellation, a wake-up) wait for at
   * most the task running now: the scheduler reads them between runs. */
  if (t->state == KEEL__TASK_DONE || t->shedding || w->run_budget <= 0 ||
      atomic_load_explicit(&w->inbox, memory_order_relaxed) != NULL)
    return false;
  keel_task_t *next = pop_ready(w);
  if (!next)
    return false;
  if (task_needs_stack(w, next))
    return false;
  w->run_budget--;
  w->current = next;
  next->state = KEEL__TASK_RUNNING;
  keel__stat_add(&w->stats.runs, 1);
  if (next != t)
    keel__ctx_switch(&t->ctx, &next->ctx);
  return true;
#endif
}

/* Task -> scheduler (or straight to the next ready task). */
void keel__task_park(void) {
  keel__worker_t *w = keel__tls_worker;
  keel_task_t *t = w->current;
  if (park_direct(w, t))
    return;
#if KEEL_ASAN
  __sanitizer_start_switch_fiber(t->state == KEEL__TASK_DONE || t->shedding ? NULL
                                                                            : &t->asan_fake_stack,
                                 w->sched_stack_lo, w->sched_stack_size);
#endif
#if KEEL_TSAN
  __tsan_switch_to_fiber(w->tsan_sched_fiber, 0);
#endif
  keel__ctx_switch(&t->ctx, &w->sched_ctx);
#if KEEL_ASAN
  __sanitizer_finish_switch_fiber(t->asan_fake_stack, NULL, NULL);
#endif
}

/* Runs ready tasks, cancelled ones first, at most budget of them (tasks
 * handed the worker directly by park_direct count against it too). The
 * inbox is read before each run, so a message from another worker waits
 * for one task run at most, not for the whole budget. */
void keel__worker_run_ready(keel__worker_t *w, int budget) {
  w->run_budget = budget;
  while (w->run_budget-- > 0) {
    if (atomic_load_explicit(&w->inbox, memory_order_relaxed) != NULL)
      keel__worker_drain_inbox(w);
    keel_task_t *t = pop_ready(w);
    if (!t)
      break;
    switch_to_task(w, t);
  }
  w->run_budget = 0;
}

/* ---- Task lifecycle -------------------------------------------------------- */

static void task_finish(keel_task_t *t, int rc);

/* Inlined into each entry, so that ThreadSanitizer sees one frame. */
static inline __attribute__((always_inline)) void task_run_and_end(keel_task_t *t);

static void task_entry(void *arg) {
  keel_task_t *t = arg;
#if KEEL_ASAN
  keel__worker_t *w = t->worker;
  __sanitizer_finish_switch_fiber(NULL, &w->sched_stack_lo, &w->sched_stack_size);
#endif
  task_run_and_end(t);
}

/* The wait the task gave its stack up for has ended: finish it, then go on
 * in the function named, whatever the wait's result (the function learns
 * it from its first call: it owns what it must close). */
static void restart_entry(void *arg) {
  keel_task_t *t = arg;
#if KEEL_ASAN
  keel__worker_t *w = t->worker;
  __sanitizer_finish_switch_fiber(NULL, &w->sched_stack_lo, &w->sched_stack_size);
#endif
  keel__restart_t *r = t->restart;
  t->restart = NULL;
  t->shedding = false; /* a hook that parks parks as any task does */
  keel__wait_finish(&r->wait);
  if (r->hook)
    r->hook(r);
  task_run_and_end(t);
}

_Noreturn void keel__task_restart_after(keel__restart_t *r, keel_task_fn fn, void *arg) {
  keel__wait_t *w = &r->wait;
  keel_task_t *t = w->task;
  keel__worker_t *wk = t->worker;
  t->fn = fn;
  t->arg = arg;
  t->restart = r;
  keel__wait_arm(w, KEEL_DEADLINE_NONE, 0);
  t->shedding = true;
  if (w->done) { /* ended already: run again as soon as the stack is back */
    t->state = KEEL__TASK_BLOCKED;
    keel__task_ready(t);
  }
  wk->shed = t;
  keel__task_park(); /* to the scheduler, which takes the stack back */
  __builtin_unreachable();
}

static inline __attribute__((always_inline)) void task_run_and_end(keel_task_t *t) {
  t->shedding = false;
  int rc = t->fn(t->arg);
  task_finish(t, rc);
  t->state = KEEL__TASK_DONE;
  t->worker->dead = t;
#if KEEL_TSAN
  /* The fiber is kept with the stack for the next task: leave its shadow
   * call stack empty, as if this frame had returned, or every task run on
   * it would leave a frame behind until the shadow stack overflows. */
  __tsan_func_exit();
  __tsan_switch_to_fiber(t->worker->tsan_sched_fiber, 0);
  keel__ctx_switch(&t->ctx, &t->worker->sched_ctx);
#else
  keel__task_park();
#endif
  __builtin_unreachable();
}

static keel_outcome_t outcome_of(keel_task_t *t, int rc) {
  keel_outcome_t o = {KEEL_OUTCOME_OK, rc, KEEL_CANCEL_NONE};
  if (rc >= 0) /* a count or a flag: success */
    return o;
  if (t->shield_depth > 0) { /* shields left open: judge by the scopes */
    t->deadline_ns = t->stack->shield_saved_deadline[0];
    t->shield_depth = 0;
  }
  keel_cancel_reason_t reason = KEEL_CANCEL_NONE;
  int err = keel__task_cancel_err(t, &reason);
  if ((rc == -ECANCELED || rc == -ETIMEDOUT) && err) {
    o.kind = KEEL_OUTCOME_CANCELLED;
    o.reason = reason;
  } else {
    o.kind = KEEL_OUTCOME_ERROR;
  }
  return o;
}

static void task_finish(keel_task_t *t, int rc) {
  /* A task never leaves a scope it opened running behind it. */
  while (!keel__queue_empty(&t->stack->open_scopes)) {
    keel_scope_t *s = keel__container_of(t->stack->open_scopes.next, keel_scope_t, opener_node);
    keel_scope_close(s);
  }
  t->outcome = outcome_of(t, rc);
  keel__scope_task_done(t->scope, t);
}

static void task_make_ctx(keel_task_t *t, void (*entry)(void *)) {
  keel__ctx_make(&t->ctx, t->stack->lo, t->stack->size, entry, t);
#if KEEL_TSAN
  if (!t->stack->tsan_fiber)
    t->stack->tsan_fiber = __tsan_create_fiber(0);
  t->tsan_fiber = t->stack->tsan_fiber;
#endif
}

/* Makes t, whose stack keel_spawn allocated, runnable on its own worker. */
static void task_start(keel__worker_t *w, keel_task_t *t) {
  task_make_ctx(t, task_entry);
  w->tasks++;
  keel__stat_add(&w->stats.spawned, 1);
  t->state = KEEL__TASK_NEW;
  keel__task_ready(t);
}

static void task_start_msg(keel__worker_t *w, keel__msg_t *m) {
  task_start(w, keel__container_of(m, keel_task_t, start_msg));
}

int keel_spawn(keel_scope_t *scope, keel_task_fn fn, void *arg, const keel_spawn_opts_t *opts) {
  keel__worker_t *w = keel__tls_worker;
  keel_spawn_opts_t none = {.on_worker = KEEL_WORKER_CURRENT};
  if (!opts)
    opts = &none;
  if (!w || !scope || !fn)
    return -EINVAL;
  keel__worker_t *target = w;
  if (opts->on_worker != KEEL_WORKER_CURRENT) {
    /* KEEL_WORKER(i) is i + 1: compare before subtracting (no overflow). */
    if (opts->on_worker < KEEL_WORKER(0) || opts->on_worker > w->rt->nworkers)
      return -EINVAL;
    target = &w->rt->workers[opts->on_worker - KEEL_WORKER(0)];
  }
  size_t stack_size = opts->stack_size ? opts->stack_size : w->rt->cfg.stack_size;
  if (stack_size > KEEL__STACK_MAX)
    return -EINVAL;
  if (stack_size < KEEL__STACK_MIN)
    stack_size = KEEL__STACK_MIN;
  keel_task_t *t = keel__objcache_get(&w->task_cache, sizeof *t);
  if (!t)
    return -ENOMEM;
  /* The stack comes from the spawner's worker (its cache), so a spawn that
   * succeeds always runs fn: nothing can fail after keel_spawn returns 0.
   * The stack goes back to the cache of the worker the task ends on. */
  if (keel__stack_alloc(w, stack_size, &t->stack) != 0) {
    KEEL_LOG_FIELDS(KEEL_LOG_ERROR, "no memory for a task's stack: spawn fails",
                    keel_log_uint("stack_size", stack_size));
    keel__objcache_put(&w->task_cache, t);
    return -ENOMEM;
  }
  t->worker = target;
  t->fn = fn;
  t->arg = arg;
  t->stack_size = (uint32_t)stack_size;
  t->deadline_ns = KEEL_DEADLINE_NONE;
  t->has_handle = opts->handle != NULL;
  atomic_init(&t->refs, t->has_handle ? 2 : 1);
  keel__queue_init(&t->ready_node);
  keel__set_name(t->name, opts->name, "task");
  int rc = keel__scope_add_task(scope, t);
  if (rc != 0) {
    keel__stack_release(w, t->stack);
    keel__objcache_put(&w->task_cache, t);
    return rc;
  }
  if (opts->handle)
    *opts->handle = t;
  if (KEEL__UNLIKELY(target->ops->on_spawn != NULL))
    target->ops->on_spawn(target, t);
  if (target == w)
    task_start(w, t);
  else {
    t->start_msg.fn = task_start_msg;
    keel__worker_post(target, &t->start_msg);
  }
  return 0;
}

void keel__task_unref(keel_task_t *t) {
  if (atomic_fetch_sub_explicit(&t->refs, 1, memory_order_acq_rel) == 1) {
    keel__worker_t *w = keel__tls_worker;
    keel__objcache_put(w ? &w->task_cache : NULL, t);
  }
}

void keel__task_ready(keel_task_t *t) {
  if (t->state == KEEL__TASK_READY || t->state == KEEL__TASK_RUNNING)
    return;
  keel__worker_t *w = t->worker;
  t->state = KEEL__TASK_READY;
  bool cancelled = t->shield_depth == 0 &&
                   atomic_load_explicit(&t->scope->cancel_reason, memory_order_relaxed) != 0;
  keel__queue_insert_tail(cancelled ? &w->ready_cancel : &w->ready, &t->ready_node);
  keel__stat_add(&w->stats.readied, 1);
  keel__ctx_prefetch(&t->ctx);
}

/* ---- Cancellation state ------------------------------------------------------ */

/* Inside a shield: the shield's deadline, or a nearer one the task set
 * inside it. */
static int64_t shield_deadline(const keel_task_t *t) {
  int64_t d = t->stack->shield_deadline[t->shield_depth - 1];
  return t->deadline_ns < d ? t->deadline_ns : d;
}

/* The nearest of d and the deadlines of s and the scopes around it, up to
 * a shield scope. */
static int64_t scopes_deadline(const keel_scope_t *s, int64_t d) {
  for (; s; s = s->parent) {
    int64_t sd = atomic_load_explicit(&s->deadline_ns, memory_order_relaxed);
    if (sd < d)
      d = sd;
    if (s->flags & KEEL_SCOPE_SHIELD)
      break;
  }
  return d;
}

int64_t keel__task_deadline(keel_task_t *t) {
  if (t->shield_depth > 0)
    return shield_deadline(t);
  return scopes_deadline(t->scope, t->deadline_ns);
}

/* One walk up the scopes (to a shield scope) for both the cancellation
 * and the deadline: a task under a cancelled scope is cancelled even
 * before the canceller has marked the scopes in between. */
int keel__task_cancel_err(keel_task_t *t, keel_cancel_reason_t *reason) {
  int64_t d;
  if (t->shield_depth > 0) {
    d = shield_deadline(t);
  } else {
    d = t->deadline_ns;
    for (keel_scope_t *s = t->scope; s; s = s->parent) {
      int r = atomic_load_explicit(&s->cancel_reason, memory_order_acquire);
      if (r) {
        *reason = s == t->scope ? (keel_cancel_reason_t)r : KEEL_CANCEL_PARENT;
        return *reason == KEEL_CANCEL_TIMEOUT ? -ETIMEDOUT : -ECANCELED;
      }
      int64_t sd = atomic_load_explicit(&s->deadline_ns, memory_order_relaxed);
      if (sd < d)
        d = sd;
      if (s->flags & KEEL_SCOPE_SHIELD)
        break;
    }
  }
  if (d != KEEL_DEADLINE_NONE && keel__now_ns() >= d) {
    *reason = KEEL_CANCEL_TIMEOUT;
    return -ETIMEDOUT;
  }
  *reason = KEEL_CANCEL_NONE;
  return 0;
}

int keel__check_cancel(void) {
  keel_task_t *t = keel__task_self();
  keel_cancel_reason_t reason;
  return t ? keel__task_cancel_err(t, &reason) : 0;
}

/* Cancellation or a new deadline reached t (on its own worker). */
static void task_interrupt_local(keel_task_t *t) {
  if (t->state == KEEL__TASK_READY && t->shield_depth == 0) {
    keel__queue_remove(&t->ready_node); /* cancelled tasks run first */
    keel__queue_insert_tail(&t->worker->ready_cancel, &t->ready_node);
    return;
  }
  keel__wait_t *w = t->wait;
  if (t->state != KEEL__TASK_BLOCKED || !w || w->done || w->shielded || w->interrupted)
    return;
  keel_cancel_reason_t reason;
  int err = keel__task_cancel_err(t, &reason);
  if (err) {
    keel__wait_interrupt(w, err);
    return;
  }
  int64_t d = keel__task_deadline(t);
  if (d < w->deadline_ns) { /* a nearer deadline was set: re-arm */
    w->deadline_ns = d;
    int64_t fire = d < w->until_ns ? d : w->until_ns;
    keel__timer_start(&t->worker->wheel, &w->timer, keel__tick_of(t->worker, fire));
  }
}

static void task_interrupt_msg(keel__worker_t *w, keel__msg_t *m) {
  (void)w;
  keel_task_t *t = keel__container_of(m, keel_task_t, interrupt_msg);
  atomic_store(&t->interrupt_pending, false);
  if (t->state != KEEL__TASK_DONE)
    task_interrupt_local(t);
  keel__task_unref(t);
}

void keel__task_interrupt(keel_task_t *t) {
  if (t->worker == keel__tls_worker) {
    if (t->state != KEEL__TASK_DONE) /* parked without a stack too */
      task_interrupt_local(t);
    return;
  }
  if (atomic_exchange(&t->interrupt_pending, true))
    return; /* one in flight already re-reads the state */
  atomic_fetch_add(&t->refs, 1);
  t->interrupt_msg.fn = task_interrupt_msg;
  keel__worker_post(t->worker, &t->interrupt_msg);
}

/* ---- Public task API ------------------------------------------------------- */

int keel_sleep_until(int64_t when_ns) {
  int rc = keel__check_cancel();
  if (rc != 0 || keel__task_self() == NULL)
    return rc ? rc : -EINVAL;
  if (when_ns <= keel__now_ns())
    return 0;
  keel__wait_t w;
  keel__wait_init(&w, NULL, KEEL__WAIT_SLEEP, NULL);
  w.alertable = true;
  return (int)keel__wait_block(&w, when_ns, 0);
}

int keel_sleep_ns(int64_t ns) {
  if (ns <= 0)
    return keel__check_cancel();
  int64_t now = keel__now_ns();
  return keel_sleep_until(ns > INT64_MAX - now ? KEEL_DEADLINE_NONE - 1 : now + ns);
}

int keel_sleep_ms(int64_t ms) {
  if (ms > INT64_MAX / KEEL_NS_PER_MS)
    ms = INT64_MAX / KEEL_NS_PER_MS;
  return keel_sleep_ns(ms * KEEL_NS_PER_MS);
}

int keel_yield(void) {
  keel_task_t *t = keel__task_self();
  if (!t)
    return -EINVAL;
  int rc = keel__check_cancel();
  if (rc)
    return rc;
  t->state = KEEL__TASK_BLOCKED; /* so keel__task_ready queues it */
  keel__task_ready(t);
  if (KEEL__UNLIKELY(t->worker->on_yield != NULL))
    t->worker->on_yield(t->worker, t);
  keel__task_park();
  return 0;
}

int keel_checkpoint(void) { return keel__check_cancel(); }

keel_outcome_t keel_task_outcome(const keel_task_t *task) { return task->outcome; }
const char *keel_task_name(const keel_task_t *task) { return task->name; }
keel_task_t *keel_task_current(void) { return keel__task_self(); }

int64_t keel_task_set_deadline(int64_t deadline_ns) {
  keel_task_t *t = keel__task_self();
  if (!t)
    return KEEL_DEADLINE_NONE;
  int64_t old = t->deadline_ns;
  t->deadline_ns = deadline_ns > 0 ? deadline_ns : KEEL_DEADLINE_NONE;
  return old;
}

int64_t keel_deadline(void) {
  keel_task_t *t = keel__task_self();
  return t ? keel__task_deadline(t) : KEEL_DEADLINE_NONE;
}

keel_cancel_reason_t keel_cancelled(void) {
  keel_task_t *t = keel__task_self();
  keel_cancel_reason_t reason = KEEL_CANCEL_NONE;
  if (t)
    keel__task_cancel_err(t, &reason);
  return reason;
}

keel_cancel_reason_t keel_cancel_origin(void) {
  keel_task_t *t = keel__task_self();
  if (!t)
    return KEEL_CANCEL_NONE;
  keel_cancel_reason_t r = keel__scope_cancel_origin(t->scope);
  if (r != KEEL_CANCEL_NONE)
    return r;
  /* Not cancelled: the deadlines outside any shield. */
  int64_t d = scopes_deadline(t->scope, t->shield_depth > 0 ? t->stack->shield_saved_deadline[0]
                                                            : t->deadline_ns);
  return d != KEEL_DEADLINE_NONE && keel__now_ns() >= d ? KEEL_CANCEL_TIMEOUT : KEEL_CANCEL_NONE;
}

void keel_shield_begin(int64_t deadline_ns) {
  keel_task_t *t = keel__task_self();
  if (!t)
    return;
  if (t->shield_depth >= KEEL__SHIELD_MAX)
    abort();              /* programmer error: unbalanced shields */
  if (deadline_ns <= 0) { /* cleanup is bounded: the drain budget */
    int64_t now = keel__now_ns();
    int64_t budget = t->worker->rt->cfg.drain_timeout_ms * KEEL_NS_PER_MS;
    deadline_ns = budget > INT64_MAX - now ? KEEL_DEADLINE_NONE : now + budget;
  }
  if (t->shield_depth > 0 && shield_deadline(t) < deadline_ns)
    deadline_ns = shield_deadline(t);
  t->stack->shield_saved_deadline[t->shield_depth] = t->deadline_ns;
  t->stack->shield_deadline[t->shield_depth++] = deadline_ns;
  /* A per-task deadline from before the shield belongs to the work the
   * shield protects from cancellation: it comes back at the end. */
  t->deadline_ns = KEEL_DEADLINE_NONE;
}

void keel_shield_end(void) {
  keel_task_t *t = keel__task_self();
  if (t && t->shield_depth > 0) {
    t->shield_depth--;
    t->deadline_ns = t->stack->shield_saved_deadline[t->shield_depth];
  }
}
