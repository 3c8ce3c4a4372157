/* The task dump: every live task by scope, with what each one waits on,
 * since when and until which deadline (keel_tasks_write, keel_dump_tasks,
 * SIGUSR1 with dump_on_sigusr1).
 *
 * It runs on any thread, even while a worker is stuck in a task that never
 * yields, which is when people need it: it walks the scope tree under each
 * scope's lock and copies, of each task, only the task struct, which stays
 * alive while the task is on its scope's list. The fields it copies belong
 * to the task's worker and are read without synchronisation, on purpose: a
 * snapshot, possibly a moment stale, hidden from TSan. It never reads the
 * wait on a task's stack (gone once the task moves on): keel__wait_arm
 * copies what the dump shows into the task. Rendering (getpeername on the
 * descriptors waited on) and the sink, which may park the calling task,
 * come after every lock is dropped. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "dump-internal.h"
#include "internal.h"

#if KEEL_TSAN
void __tsan_ignore_thread_begin(void);
void __tsan_ignore_thread_end(void);
#define DUMP_RACY_BEGIN() __tsan_ignore_thread_begin()
#define DUMP_RACY_END() __tsan_ignore_thread_end()
#else
#define DUMP_RACY_BEGIN() ((void)0)
#define DUMP_RACY_END() ((void)0)
#endif

/* ---- Buffers ------------------------------------------------------------------ */

static bool dumpbuf_reserve(keel__dumpbuf_t *b, size_t more) {
  if (b->oom)
    return false;
  if (b->len + more < b->cap)
    return true;
  size_t cap = b->cap ? b->cap : 4096;
  while (cap <= b->len + more)
    cap *= 2;
  char *data = realloc(b->data, cap);
  if (!data) {
    b->oom = true;
    return false;
  }
  b->data = data;
  b->cap = cap;
  return true;
}

void keel__dumpbuf_put(keel__dumpbuf_t *b, const char *s, size_t n) {
  if (!dumpbuf_reserve(b, n))
    return;
  memcpy(b->data + b->len, s, n);
  b->len += n;
  b->data[b->len] = '\0';
}

void keel__dumpbuf_printf(keel__dumpbuf_t *b, const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(NULL, 0, fmt, ap);
  va_end(ap);
  if (n < 0 || !dumpbuf_reserve(b, (size_t)n))
    return;
  va_start(ap, fmt);
  vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
  va_end(ap);
  b->len += (size_t)n;
}

/* ---- The snapshot ------------------------------------------------------------------ */

/* Room for one more entry of size bytes in *items (*cap of them). */
static bool snap_grow(keel__snap_t *sn, void **items, size_t n, size_t *cap, size_t size) {
  if (n < *cap)
    return true;
  size_t more = *cap ? *cap * 2 : 64;
  void *p = realloc(*items, more * size);
  if (!p) {
    sn->oom = true;
    return false;
  }
  *items = p;
  *cap = more;
  return true;
}

/* Under t's scope's lock: t is alive, its fields its worker's (racy). */
static void snap_task(keel__snap_t *sn, const keel_task_t *t, int scope) {
  if (!snap_grow(sn, (void **)&sn->tasks, sn->ntasks, &sn->tasks_cap, sizeof *sn->tasks))
    return;
  keel__snap_task_t *st = &sn->tasks[sn->ntasks++];
  const keel__worker_t *w = t->worker;
  st->scope = scope;
  st->worker = w->id;
  DUMP_RACY_BEGIN();
  st->state = t->state;
  st->stackless = t->shedding;
  st->kind = t->wait_kind;
  st->until_set = t->wait_until_set;
  st->fd = t->wait_fd;
  st->object = st->until_set ? NULL : t->wait_object;
  st->until_ns = st->until_set ? t->wait_until_ns : KEEL_DEADLINE_NONE;
  st->since_ns = keel__tick_to_ns(w, t->wait_since_tick);
  st->deadline_ns = t->wait_deadline_ns;
  st->activity = t->activity;
  memcpy(st->name, t->name, sizeof st->name);
  DUMP_RACY_END();
  st->name[sizeof st->name - 1] = '\0';
  if (st->kind >= KEEL__WAIT_KINDS)
    st->kind = KEEL__WAIT_NONE;
}

/* Under s->lock: s, its tasks and (taking their locks, parent first as
 * everywhere) its nested scopes. */
static void snap_scope_locked(keel__snap_t *sn, keel_scope_t *s, int parent, int depth) {
  if (!snap_grow(sn, (void **)&sn->scopes, sn->nscopes, &sn->scopes_cap, sizeof *sn->scopes))
    return;
  int self = (int)sn->nscopes++;
  keel__snap_scope_t *ss = &sn->scopes[self];
  ss->addr = s;
  ss->parent = parent;
  ss->depth = depth;
  ss->live = s->live;
  ss->cancel_reason = atomic_load(&s->cancel_reason);
  ss->deadline_ns = atomic_load(&s->deadline_ns);
  ss->flags = s->flags;
  memcpy(ss->name, s->name, sizeof ss->name);
  for (keel__queue_t *q = s->tasks.next; q != &s->tasks; q = q->next)
    snap_task(sn, keel__container_of(q, keel_task_t, scope_node), self);
  for (keel__queue_t *q = s->children.next; q != &s->children; q = q->next) {
    keel_scope_t *c = keel__container_of(q, keel_scope_t, child_node);
    keel__spin_lock(&c->lock);
    snap_scope_locked(sn, c, self, depth + 1);
    keel__spin_unlock(&c->lock);
  }
}

/* The runtime's clock, read under the root's lock: while the root has
 * live units the workers (and lab mode's virtual clock) exist. */
static int64_t snap_now(keel_runtime_t *rt) {
  keel__worker_t *w = keel__tls_worker;
  if (!w || w->rt != rt)
    w = &rt->workers[0];
  DUMP_RACY_BEGIN();
  int64_t now = w->clock ? w->clock(w) : keel__now_ns();
  DUMP_RACY_END();
  return now;
}

static int snap_take(keel__snap_t *sn, keel_runtime_t *rt) {
  memset(sn, 0, sizeof *sn);
  sn->workers = rt->nworkers;
  keel_scope_t *root = rt->root;
  keel__spin_lock(&root->lock);
  snap_scope_locked(sn, root, -1, 0);
  sn->now_ns = root->live > 0 ? snap_now(rt) : keel__now_ns();
  keel__spin_unlock(&root->lock);
  return sn->oom ? -ENOMEM : 0;
}

static void snap_free(keel__snap_t *sn) {
  free(sn->scopes);
  free(sn->tasks);
}

/* ---- Writing it out ------------------------------------------------------------------ */

/* Renders the dump of rt into out (malloc'd, NUL-terminated; freed by the
 * caller even on failure). */
static int tasks_render(keel_runtime_t *rt, unsigned flags, keel__dumpbuf_t *out) {
  keel__snap_t sn;
  int rc = snap_take(&sn, rt);
  if (rc == 0) {
    if (flags & KEEL_TASKS_JSON)
      keel__dump_json(&sn, out);
    else
      keel__dump_text(&sn, out);
    rc = out->oom ? -ENOMEM : 0;
  }
  snap_free(&sn);
  return rc;
}

int keel__tasks_write(keel_runtime_t *rt, unsigned flags, keel_sink_fn sink, void *arg) {
  keel__dumpbuf_t out = {0};
  int rc = tasks_render(rt, flags, &out);
  if (rc == 0 && out.len > 0)
    rc = sink(arg, out.data, out.len);
  free(out.data);
  return rc;
}

int keel_tasks_write(unsigned flags, keel_sink_fn sink, void *arg) {
  keel__worker_t *w = keel__tls_worker;
  if (!w || !sink || (flags & ~(unsigned)KEEL_TASKS_JSON))
    return -EINVAL;
  return keel__tasks_write(w->rt, flags, sink, arg);
}

void keel__tasks_log(keel_runtime_t *rt, keel_log_level_t level) {
  keel__dumpbuf_t out = {0};
  int rc = tasks_render(rt, 0, &out);
  if (rc < 0)
    keel_log(KEEL_LOG_ERROR, "task dump: %s", keel_strerror(rc));
  /* Each line numbered: a dump's lines are never "identical lines" to the
   * log's rate limit, however alike the tasks (a thousand idle
   * connections). */
  char line[KEEL_LOG_MSG_MAX];
  int64_t index = 0;
  for (const char *p = out.data; rc == 0 && p && *p; index++) {
    const char *nl = strchr(p, '\n');
    size_t n = nl ? (size_t)(nl - p) : strlen(p);
    size_t take = n < sizeof line - 1 ? n : sizeof line - 1;
    memcpy(line, p, take);
    line[take] = '\0';
    keel_log_field_t f = keel_log_int("dump_line", index);
    keel_log_fields(level, line, &f, 1);
    p += n + (nl != NULL);
  }
  free(out.data);
}

void keel_dump_tasks(void) {
  keel__worker_t *w = keel__tls_worker;
  if (w)
    keel__tasks_log(w->rt, KEEL_LOG_INFO);
}
