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

int keel_scope_open(const keel_scope_opts_t *opts, keel_scope_t **out) {
  *out = NULL;
  keel_task_t *t = keel__task_self();
  if (!t)
    return -EINVAL;
  keel_scope_t *s = keel__objcache_get(&t->worker->scope_cache, sizeof *s);
  if (!s)
    return -ENOMEM;
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
    bound = keel__task_deadline(t); /* the shield's, or a nearer one set inside it */
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
  keel__queue_insert_tail(&t->stack->open_scopes, &s->opener_node);
  *out = s;
  return 0;
}

/* Spawning into a scope that was joined opens it again: it counts in its
 * parent until the next join. Only its opener does this (others get
 * -EPIPE), and only the opener joins, so nothing else changes `joined`
 * meanwhile. The parent's lock is taken first, as everywhere. */
static void scope_reattach(keel_scope_t *s) {
  keel_scope_t *p = s->parent;
  keel__spin_lock(&p->lock);
  p->live++;
  keel__queue_insert_tail(&p->children, &s->child_node);
  if (atomic_load(&p->cancel_reason) && !(s->flags & KEEL_SCOPE_SHIELD))
    atomic_store(&s->cancel_reason, KEEL_CANCEL_PARENT);
  keel__spin_lock(&s->lock);
  s->joined = false;
  s->first_error = 0; /* the next join reports on what runs from now on */
  s->first_cancel = 0;
  keel__spin_unlock(&s->lock);
  keel__spin_unlock(&p->lock);
}

keel_cancel_reason_t keel__scope_cancelled(const keel_scope_t *s) {
  for (const keel_scope_t *c = s; c; c = c->parent) {
    int r = atomic_load_explicit(&c->cancel_reason, memory_order_acquire);
    if (r)
      return c == s ? (keel_cancel_reason_t)r : KEEL_CANCEL_PARENT;
    if (c->flags & KEEL_SCOPE_SHIELD)
      break;
  }
  return KEEL_CANCEL_NONE;
}

keel_cancel_reason_t keel__scope_cancel_origin(const keel_scope_t *s) {
  keel_cancel_reason_t found = KEEL_CANCEL_NONE;
  for (const keel_scope_t *c = s; c; c = c->parent) {
    int r = atomic_load_explicit(&c->cancel_reason, memory_order_acquire);
    if (r && r != KEEL_CANCEL_PARENT)
      return (keel_cancel_reason_t)r;
    if (r)
      found = KEEL_CANCEL_PARENT;
    if (c->flags & KEEL_SCOPE_SHIELD)
      break;
  }
  return found;
}

int keel__scope_add_task(keel_scope_t *s, keel_task_t *t) {
  keel_task_t *self = keel__task_self();
  keel__spin_lock(&s->lock);
  if (s->joined) {
    keel__spin_unlock(&s->lock);
    if (self != s->opener || !s->parent)
      return -EPIPE;
    scope_reattach(s);
    keel__spin_lock(&s->lock);
  }
  /* The whole chain: a canceller marks nested scopes only after it marked
   * the scope it was asked to cancel, and a spawner that already saw that
   * must not start a task here. */
  if (keel__scope_cancelled(s)) {
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
  if (q.joiner)
    s->joined = true; /* from here on only the opener may add to it */
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
  if (t->outcome.kind == KEEL_OUTCOME_CANCELLED && s->first_cancel == 0)
    s->first_cancel = t->outcome.reason == KEEL_CANCEL_TIMEOUT ? -ETIMEDOUT : -ECANCELED;
  quiescence_t q = unit_done_locked(s);
  keel__spin_unlock(&s->lock);
  quiescent(s, q);
}

/* ---- Cancellation and deadlines ------------------------------------------- */

/* Under s->lock: marks every nested scope of s (shields and what is under
 * them excepted) cancelled with reason parent, before any task is told:
 * a task woken by the cancellation finds its whole subtree cancelled. A
 * nested scope already cancelled had its subtree marked then (and scopes
 * opened since inherit the mark). */
static void mark_nested_locked(keel_scope_t *s) {
  for (keel__queue_t *q = s->children.next; q != &s->children; q = q->next) {
    keel_scope_t *c = keel__container_of(q, keel_scope_t, child_node);
    if (c->flags & KEEL_SCOPE_SHIELD)
      continue;
    int none = KEEL_CANCEL_NONE;
    keel__spin_lock(&c->lock);
    if (atomic_compare_exchange_strong(&c->cancel_reason, &none, KEEL_CANCEL_PARENT))
      mark_nested_locked(c);
    keel__spin_unlock(&c->lock);
  }
}

/* Under s->lock: every task of s and of its nested scopes (shields
 * excepted) re-reads its cancellation state and deadline. */
static void reach_locked(keel_scope_t *s) {
  for (keel__queue_t *q = s->tasks.next; q != &s->tasks; q = q->next)
    keel__task_interrupt(keel__container_of(q, keel_task_t, scope_node));
  for (keel__queue_t *q = s->children.next; q != &s->children; q = q->next) {
    keel_scope_t *c = keel__container_of(q, keel_scope_t, child_node);
    if (c->flags & KEEL_SCOPE_SHIELD)
      continue;
    keel__spin_lock(&c->lock);
    reach_locked(c);
    keel__spin_unlock(&c->lock);
  }
}

void keel_scope_cancel(keel_scope_t *s, keel_cancel_reason_t reason) {
  if (reason == KEEL_CANCEL_NONE)
    reason = KEEL_CANCEL_USER;
  int none = KEEL_CANCEL_NONE;
  keel__spin_lock(&s->lock);
  if (atomic_compare_exchange_strong(&s->cancel_reason, &none, (int)reason)) {
    mark_nested_locked(s);
    reach_locked(s);
  }
  keel__spin_unlock(&s->lock);
}

void keel_scope_set_deadline(keel_scope_t *s, int64_t deadline_ns) {
  atomic_store(&s->deadline_ns, deadline_ns > 0 ? deadline_ns : KEEL_DEADLINE_NONE);
  keel__spin_lock(&s->lock);
  reach_locked(s);
  keel__spin_unlock(&s->lock);
}

keel_cancel_reason_t keel_scope_cancel_reason(const keel_scope_t *s) {
  return keel__scope_cancelled(s);
}

keel_cancel_reason_t keel_scope_cancel_origin(const keel_scope_t *s) {
  return keel__scope_cancel_origin(s);
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

/* After the join: the first failure, else how the first child that was
 * cut short ended, else 0. Neither a passed deadline nor a cancellation
 * that cut nothing short is an error: every child succeeded. */
static int join_result(keel_scope_t *s) {
  keel__spin_lock(&s->lock);
  int rc = s->first_error ? s->first_error : s->first_cancel;
  keel__spin_unlock(&s->lock);
  return rc;
}

/* A shield scope is out of reach of its joiner's cancellation: its own
 * deadline bounds it. Any other scope is cancelled when its joiner is.
 * Returns with s joined. */
static void join_wait_children(keel_scope_t *s) {
  keel__wait_t w;
  keel__wait_init(&w, join_abort, KEEL__WAIT_JOIN, s);
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
    s->joined = true;
    keel__spin_unlock(&s->lock);
    return;
  }
  s->join_wait = &w; /* the last unit to finish sets joined and wakes us */
  keel__spin_unlock(&s->lock);
  keel__wait_block(&w, KEEL_DEADLINE_NONE, 0);
}

/* Only the task that opened a scope joins and closes it: it alone knows
 * when no more work will be put in it, and a task inside the scope would
 * wait for itself. */
static int check_opener(keel_scope_t *s) {
  keel_task_t *t = keel__task_self();
  if (!t)
    return -EINVAL;
  return t == s->opener ? 0 : -EPERM;
}

int keel_scope_join(keel_scope_t *s) {
  int rc = check_opener(s);
  if (rc < 0)
    return rc;
  keel__spin_lock(&s->lock);
  bool joined = s->joined;
  keel__spin_unlock(&s->lock);
  if (joined)
    return join_result(s);
  join_wait_children(s);
  keel_scope_t *p = s->parent;
  keel__spin_lock(&p->lock);
  keel__queue_remove(&s->child_node);
  keel__spin_unlock(&p->lock);
  scope_unit_done(p);
  return join_result(s);
}

int keel_scope_close(keel_scope_t *s) {
  if (!s)
    return 0;
  int rc = check_opener(s);
  if (rc < 0)
    return rc;
  rc = keel_scope_join(s);
  keel__queue_remove(&s->opener_node);
  keel__scope_free(s);
  return rc;
}

void keel__scope_free(keel_scope_t *s) {
  while (!keel__queue_empty(&s->finished)) {
    keel__queue_t *q = s->finished.next;
    keel__queue_remove(q);
    keel__task_unref(keel__container_of(q, keel_task_t, scope_node));
  }
  keel__worker_t *w = keel__tls_worker;
  keel__objcache_put(w ? &w->scope_cache : NULL, s);
}
