/* Scopes: structured concurrency. Every task lives in a scope; a scope is
 * joined only when every task and nested scope in it has finished. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

static void scope_init(keel_scope_t *s, keel_runtime_t *rt, const keel_scope_opts_t *opts) {
  keel__queue_init(&s->child_node);
  keel__queue_init(&s->children);
  keel__queue_init(&s->tasks);
  keel__queue_init(&s->finished);
  keel__queue_init(&s->opener_node);
  atomic_flag_clear(&s->lock.flag);
  atomic_init(&s->cancel_reason, KEEL_CANCEL_NONE);
  int64_t d = opts && opts->deadline_ns > 0 ? opts->deadline_ns : KEEL_DEADLINE_NONE;
  atomic_init(&s->deadline_ns, d);
  s->flags = opts ? opts->flags : 0;
  s->rt = rt;
  keel__set_name(s->name, opts ? opts->name : NULL, "scope");
}

keel_scope_t *keel__scope_new_root(keel_runtime_t *rt) {
  keel_scope_t *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  keel_scope_opts_t opts = {.name = "root"};
  scope_init(s, rt, &opts);
  s->is_root = true;
  return s;
}

keel_scope_t *keel_scope_open(const keel_scope_opts_t *opts) {
  keel_task_t *t = keel__task_self();
  if (!t)
    return NULL;
  keel_scope_t *s = calloc(1, sizeof *s);
  if (!s)
    return NULL;
  keel_scope_t *parent = t->scope;
  scope_init(s, parent->rt, opts);
  s->parent = parent;
  s->opener = t;
  /* Cleanup code inside a task's shield may spawn helpers: their scope is
   * a shield bounded by the same deadline. Otherwise the opener's own
   * deadline flows into the scope it opens. */
  int64_t bound = t->deadline_ns;
  if (t->shield_depth > 0) {
    s->flags |= KEEL_SCOPE_SHIELD;
    bound = t->shield_deadline[t->shield_depth - 1];
  } else if (s->flags & KEEL_SCOPE_SHIELD) {
    bound = KEEL_DEADLINE_NONE;
  }
  if (bound < atomic_load(&s->deadline_ns))
    atomic_store(&s->deadline_ns, bound);
  keel__spin_lock(&parent->lock);
  parent->live++;
  keel__queue_insert_tail(&parent->children, &s->child_node);
  int reason = atomic_load(&parent->cancel_reason);
  if (reason && !(s->flags & KEEL_SCOPE_SHIELD))
    atomic_store(&s->cancel_reason, KEEL_CANCEL_PARENT);
  keel__spin_unlock(&parent->lock);
  keel__queue_insert_tail(&t->open_scopes, &s->opener_node);
  return s;
}

/* Spawning into a scope that was joined opens it again: it counts in its
 * parent until the next join. Only its opener does this, so the scope is
 * not otherwise shared yet. */
static void scope_reattach(keel_scope_t *s) {
  keel_scope_t *p = s->parent;
  keel__spin_lock(&p->lock);
  p->live++;
  keel__queue_insert_tail(&p->children, &s->child_node);
  if (atomic_load(&p->cancel_reason) && !(s->flags & KEEL_SCOPE_SHIELD))
    atomic_store(&s->cancel_reason, KEEL_CANCEL_PARENT);
  keel__spin_unlock(&p->lock);
  s->joined = false;
}

int keel__scope_add_task(keel_scope_t *s, keel_task_t *t) {
  if (s->joined && s->parent)
    scope_reattach(s);
  keel__spin_lock(&s->lock);
  if (atomic_load(&s->cancel_reason)) {
    keel__spin_unlock(&s->lock);
    return -ECANCELED;
  }
  s->live++;
  keel__queue_insert_tail(&s->tasks, &t->scope_node);
  t->scope = s;
  keel__spin_unlock(&s->lock);
  return 0;
}

static void join_wake_msg(keel__worker_t *w, keel__msg_t *m) {
  (void)w;
  keel_scope_t *s = keel__container_of(m, keel_scope_t, join_msg);
  keel__wait_complete(s->join_wake, 0);
}

/* What to do once s's lock is released after its last unit finished:
 * captured under the lock, because without a parked joiner the scope may
 * be freed by a joiner on another worker the moment the lock drops. */
typedef struct quiescence {
  bool last;
  keel_runtime_t *root_of; /* s is the root: stop this runtime */
  keel__wait_t *joiner;    /* parked joiner: s stays alive until it wakes */
} quiescence_t;

/* Under s->lock: one unit (task or nested scope) of s finished. */
static quiescence_t unit_done_locked(keel_scope_t *s) {
  quiescence_t q = {false, NULL, NULL};
  if (--s->live != 0)
    return q;
  q.last = true;
  q.root_of = s->is_root ? s->rt : NULL;
  q.joiner = s->join_wait;
  s->join_wait = NULL;
  return q;
}

/* After unlocking: wake the joiner (s is alive while it is parked) or stop
 * the runtime. Touches s only in the joiner case. */
static void quiescent(keel_scope_t *s, quiescence_t q) {
  if (!q.last)
    return;
  if (q.root_of) {
    keel__runtime_quiescent(q.root_of);
    return;
  }
  keel__wait_t *jw = q.joiner;
  if (!jw)
    return;
  if (jw->task->worker == keel__tls_worker) {
    keel__wait_complete(jw, 0);
    return;
  }
  s->join_wake = jw; /* read by join_wake_msg on the joiner's worker */
  s->join_msg.fn = join_wake_msg;
  keel__worker_post(jw->task->worker, &s->join_msg);
}

static void scope_unit_done(keel_scope_t *s) {
  keel__spin_lock(&s->lock);
  quiescence_t q = unit_done_locked(s);
  keel__spin_unlock(&s->lock);
  quiescent(s, q);
}

void keel__scope_task_done(keel_scope_t *s, keel_task_t *t) {
  bool failed = t->outcome.kind == KEEL_OUTCOME_ERROR;
  if (failed && (s->flags & KEEL_SCOPE_FAIL_FAST))
    keel_scope_cancel(s, KEEL_CANCEL_FAIL_FAST);
  keel__spin_lock(&s->lock);
  keel__queue_remove(&t->scope_node);
  if (t->has_handle)
    keel__queue_insert_tail(&s->finished, &t->scope_node);
  if (failed && s->first_error == 0)
    s->first_error = t->outcome.error;
  quiescence_t q = unit_done_locked(s);
  keel__spin_unlock(&s->lock);
  quiescent(s, q);
}

/* ---- Cancellation and deadlines ------------------------------------------- */

/* Under s->lock: every task of s and of its nested scopes (shields
 * excepted) re-reads its cancellation state and deadline. With cancel set,
 * each nested scope is first marked cancelled (reason parent); one that
 * already was had its tasks reached then. */
static void reach_locked(keel_scope_t *s, bool cancel) {
  for (keel__queue_t *q = s->tasks.next; q != &s->tasks; q = q->next)
    keel__task_interrupt(keel__container_of(q, keel_task_t, scope_node));
  for (keel__queue_t *q = s->children.next; q != &s->children; q = q->next) {
    keel_scope_t *c = keel__container_of(q, keel_scope_t, child_node);
    if (c->flags & KEEL_SCOPE_SHIELD)
      continue;
    int none = KEEL_CANCEL_NONE;
    keel__spin_lock(&c->lock);
    if (!cancel || atomic_compare_exchange_strong(&c->cancel_reason, &none, KEEL_CANCEL_PARENT))
      reach_locked(c, cancel);
    keel__spin_unlock(&c->lock);
  }
}

void keel_scope_cancel(keel_scope_t *s, keel_cancel_reason_t reason) {
  if (reason == KEEL_CANCEL_NONE)
    reason = KEEL_CANCEL_USER;
  int none = KEEL_CANCEL_NONE;
  keel__spin_lock(&s->lock);
  if (atomic_compare_exchange_strong(&s->cancel_reason, &none, (int)reason))
    reach_locked(s, true);
  keel__spin_unlock(&s->lock);
}

void keel_scope_set_deadline(keel_scope_t *s, int64_t deadline_ns) {
  atomic_store(&s->deadline_ns, deadline_ns > 0 ? deadline_ns : KEEL_DEADLINE_NONE);
  keel__spin_lock(&s->lock);
  reach_locked(s, false);
  keel__spin_unlock(&s->lock);
}

keel_cancel_reason_t keel_scope_cancel_reason(const keel_scope_t *s) {
  return (keel_cancel_reason_t)atomic_load(&s->cancel_reason);
}

size_t keel_scope_live(const keel_scope_t *s) {
  keel_scope_t *m = (keel_scope_t *)s;
  keel__spin_lock(&m->lock);
  size_t n = m->live;
  keel__spin_unlock(&m->lock);
  return n;
}

keel_scope_t *keel_scope_current(void) {
  keel_task_t *t = keel__task_self();
  return t ? t->scope : NULL;
}

/* ---- Join and close --------------------------------------------------------- */

/* The joiner was cancelled or hit its deadline: cancel what it waits for
 * and keep waiting for it to drain (no orphans). */
static void join_abort(keel__wait_t *w, int err) {
  keel_scope_cancel(w->data, err == -ETIMEDOUT ? KEEL_CANCEL_TIMEOUT : KEEL_CANCEL_PARENT);
}

static int join_result(keel_scope_t *s) {
  if (s->first_error)
    return s->first_error;
  int r = atomic_load(&s->cancel_reason);
  if (r)
    return r == KEEL_CANCEL_TIMEOUT ? -ETIMEDOUT : -ECANCELED;
  int64_t d = atomic_load(&s->deadline_ns);
  if (d != KEEL_DEADLINE_NONE && keel__now_ns() >= d)
    return -ETIMEDOUT;
  return 0;
}

/* A shield scope is out of reach of its joiner's cancellation: its own
 * deadline bounds it. Any other scope is cancelled when its joiner is. */
static int join_wait_children(keel_scope_t *s) {
  keel__wait_t w;
  keel__wait_init(&w, join_abort);
  w.data = s;
  int err = keel__check_cancel();
  if (s->flags & KEEL_SCOPE_SHIELD) {
    w.shielded = true;
  } else if (err) {
    keel_scope_cancel(s, err == -ETIMEDOUT ? KEEL_CANCEL_TIMEOUT : KEEL_CANCEL_PARENT);
    w.shielded = true;
  }
  keel__spin_lock(&s->lock);
  if (s->live == 0) {
    keel__spin_unlock(&s->lock);
    return 0;
  }
  if (s->join_wait) { /* another task is joining it already */
    keel__spin_unlock(&s->lock);
    return -EBUSY;
  }
  s->join_wait = &w;
  keel__spin_unlock(&s->lock);
  keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
  return 0;
}

int keel_scope_join(keel_scope_t *s) {
  if (s->joined)
    return join_result(s);
  if (!keel__task_self())
    return -EINVAL;
  int rc = join_wait_children(s);
  if (rc < 0)
    return rc;
  keel__spin_lock(&s->lock);
  s->joined = true;
  keel__spin_unlock(&s->lock);
  keel_scope_t *p = s->parent;
  keel__spin_lock(&p->lock);
  keel__queue_remove(&s->child_node);
  keel__spin_unlock(&p->lock);
  scope_unit_done(p);
  return join_result(s);
}

void keel_scope_close(keel_scope_t *s) {
  if (!s)
    return;
  keel_scope_join(s);
  keel__queue_remove(&s->opener_node);
  keel__scope_free(s);
}

void keel__scope_free(keel_scope_t *s) {
  while (!keel__queue_empty(&s->finished)) {
    keel__queue_t *q = s->finished.next;
    keel__queue_remove(q);
    keel__task_unref(keel__container_of(q, keel_task_t, scope_node));
  }
  free(s);
}

/* ---- Dumps ------------------------------------------------------------------------ */

static const char *task_state_name(int state) {
  switch (state) {
  case KEEL__TASK_NEW:
    return "new";
  case KEEL__TASK_READY:
    return "ready";
  case KEEL__TASK_RUNNING:
    return "running";
  case KEEL__TASK_BLOCKED:
    return "blocked";
  default:
    return "done";
  }
}

#if KEEL_TSAN
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#define DUMP_RACY_BEGIN() __tsan_ignore_thread_begin()
#define DUMP_RACY_END() __tsan_ignore_thread_end()
#else
#define DUMP_RACY_BEGIN() ((void)0)
#define DUMP_RACY_END() ((void)0)
#endif

/* Logs the scope tree under s: every live task by name, worker and state.
 * The state belongs to the task's worker and is read here without
 * synchronisation, on purpose: a diagnostic snapshot (hidden from TSan). */
void keel__scope_dump(keel_scope_t *s, int depth) {
  keel__spin_lock(&s->lock);
  keel_log(KEEL_LOG_INFO, "%*sscope '%s': %zu live%s%s", depth * 2, "", s->name, s->live,
           atomic_load(&s->cancel_reason) ? ", cancelled: " : "",
           atomic_load(&s->cancel_reason)
               ? keel_cancel_reason_name((keel_cancel_reason_t)atomic_load(&s->cancel_reason))
               : "");
  for (keel__queue_t *q = s->tasks.next; q != &s->tasks; q = q->next) {
    keel_task_t *t = keel__container_of(q, keel_task_t, scope_node);
    DUMP_RACY_BEGIN();
    int state = t->state;
    DUMP_RACY_END();
    keel_log(KEEL_LOG_INFO, "%*s  task '%s' on worker %d: %s", depth * 2, "", t->name,
             t->worker->id, task_state_name(state));
  }
  for (keel__queue_t *q = s->children.next; q != &s->children; q = q->next)
    keel__scope_dump(keel__container_of(q, keel_scope_t, child_node), depth + 1);
  keel__spin_unlock(&s->lock);
}

void keel_dump_tasks(void) {
  keel__worker_t *w = keel__tls_worker;
  if (w)
    keel__scope_dump(w->rt->root, 0);
}
