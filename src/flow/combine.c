/* Combinators on scopes: timeout, race and join-all. Each opens a child
 * scope, spawns its functions into it on the calling worker and closes
 * (joins) it before returning, so whatever is still running there -
 * losers, cancelled siblings, tasks the functions spawned into
 * keel_scope_current() - has been cancelled and has finished first. The
 * state of one call lives on the caller's stack (one allocation for many
 * branches), and every branch runs on the caller's worker, so the
 * bookkeeping needs no lock: a branch's epilogue and the caller never run
 * at the same time. */
#include "keel/flow.h"

#include <errno.h>
#include <stdlib.h>

#include "worker.h"

#define GROUP_INLINE 8 /* branches whose slots live on the caller's stack */

typedef struct group group_t;

/* One branch: what it runs and what it returned. */
typedef struct slot {
  group_t *group;
  keel_task_fn fn;
  void *arg;
  int index;
  int result;
} slot_t;

struct group {
  keel_scope_t *scope;
  slot_t *slots;
  size_t n;
  bool end_on_success; /* the first success cancels the rest (race) */
  bool end_on_failure; /* the first failure cancels the rest */
  int winner;          /* the branch whose result cancelled the rest, or -1 */
  int first_failed;    /* the first branch to fail (completion order), or -1 */
  slot_t inline_slots[GROUP_INLINE];
};

static int group_init(group_t *g, const keel_branch_t *branches, size_t n) {
  g->scope = NULL;
  g->n = n;
  g->end_on_success = g->end_on_failure = false;
  g->winner = g->first_failed = -1;
  g->slots = n <= GROUP_INLINE ? g->inline_slots : calloc(n, sizeof *g->slots);
  if (!g->slots)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++)
    g->slots[i] = (slot_t){g, branches[i].fn, branches[i].arg, (int)i, -ECANCELED};
  return 0;
}

static void group_free(group_t *g) {
  if (g->slots != g->inline_slots)
    free(g->slots);
}

/* The task body of a branch. The group outlives it: the caller is parked
 * in the scope's join until every branch has finished. */
static int branch_main(void *arg) {
  slot_t *s = arg;
  group_t *g = s->group;
  int rc = s->fn(s->arg);
  s->result = rc;
  if (rc < 0 && g->first_failed < 0)
    g->first_failed = s->index;
  bool ends = rc >= 0 ? g->end_on_success : g->end_on_failure;
  if (ends && g->winner < 0) {
    g->winner = s->index;
    keel_scope_cancel(g->scope, rc >= 0 ? KEEL_CANCEL_USER : KEEL_CANCEL_FAIL_FAST);
  }
  /* Positive results are success: the scope counts only errors. */
  return rc < 0 ? rc : 0;
}

/* Spawns every branch into a new child scope and joins it. Returns 0,
 * -ECANCELED when the caller was cancelled (the branches have drained), or
 * the error that kept a branch from starting. */
static int group_run(group_t *g, const keel_scope_opts_t *so, const char *name) {
  int rc = keel_scope_open(so, &g->scope);
  if (rc < 0)
    return rc;
  int err = 0;
  for (size_t i = 0; i < g->n; i++) {
    keel_spawn_opts_t o = {.name = name};
    int rc = keel_spawn(g->scope, branch_main, &g->slots[i], &o);
    if (rc < 0) {
      /* The rest never start. -ECANCELED means a branch already ended the
       * group, or the caller was cancelled (reported below): no error. */
      for (size_t j = i; j < g->n; j++)
        g->slots[j].result = rc;
      if (rc != -ECANCELED)
        err = rc;
      keel_scope_cancel(g->scope, KEEL_CANCEL_USER);
      break;
    }
  }
  /* Close joins: a caller cancelled meanwhile cancels the scope and still
   * waits for every branch to finish. */
  keel_scope_close(g->scope);
  g->scope = NULL;
  if (keel_checkpoint() == -ECANCELED)
    return -ECANCELED;
  return err;
}

/* Common entry checks: 0, or the error to return before anything starts. */
static int entry_check(const keel_branch_t *branches, size_t n) {
  if (!keel__task_self() || (n > 0 && !branches) || n > INT32_MAX)
    return -EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!branches[i].fn)
      return -EINVAL;
  return keel_checkpoint();
}

/* ---- Timeout --------------------------------------------------------------- */

int keel_timeout_at(int64_t deadline_ns, keel_task_fn fn, void *arg) {
  keel_branch_t b = {fn, arg};
  int rc = entry_check(&b, 1);
  if (rc < 0)
    return rc;
  group_t g;
  if ((rc = group_init(&g, &b, 1)) < 0)
    return rc;
  /* A scope deadline of 0 means none: a deadline at or before 0 has
   * passed, as has 1. The scope's deadline nests in the caller's. */
  keel_scope_opts_t so = {.deadline_ns = deadline_ns > 0 ? deadline_ns : 1, .name = "timeout"};
  rc = group_run(&g, &so, "timeout");
  if (rc == 0)
    rc = g.slots[0].result;
  group_free(&g);
  return rc;
}

int keel_timeout(int64_t timeout_ns, keel_task_fn fn, void *arg) {
  int64_t now = keel_now_ns();
  int64_t deadline;
  if (timeout_ns <= 0)
    deadline = now;
  else if (timeout_ns >= KEEL_DEADLINE_NONE - now)
    deadline = KEEL_DEADLINE_NONE;
  else
    deadline = now + timeout_ns;
  return keel_timeout_at(deadline, fn, arg);
}

/* ---- Race ------------------------------------------------------------------ */

int keel_race(const keel_branch_t *branches, size_t n, unsigned flags, int *winner) {
  if (winner)
    *winner = -1;
  if (n == 0)
    return -EINVAL;
  int rc = entry_check(branches, n);
  if (rc < 0)
    return rc;
  group_t g;
  if ((rc = group_init(&g, branches, n)) < 0)
    return rc;
  g.end_on_success = true;
  g.end_on_failure = (flags & KEEL_RACE_FIRST_DONE) != 0;
  rc = group_run(&g, NULL, "race");
  if (winner)
    *winner = g.winner;
  if (rc == 0) {
    /* No winner: every branch failed; the first failure speaks for them. */
    int decider = g.winner >= 0 ? g.winner : g.first_failed;
    rc = decider >= 0 ? g.slots[decider].result : -ECANCELED;
  }
  group_free(&g);
  return rc;
}

/* ---- Join-all --------------------------------------------------------------- */

static void fill_results(int *results, size_t n, int rc) {
  for (size_t i = 0; results && i < n; i++)
    results[i] = rc;
}

int keel_join_all(const keel_branch_t *branches, size_t n, unsigned flags, int *results) {
  if (n == 0)
    return keel__task_self() ? 0 : -EINVAL;
  int rc = entry_check(branches, n);
  group_t g;
  if (rc == 0)
    rc = group_init(&g, branches, n);
  if (rc < 0) {
    fill_results(results, n, rc);
    return rc;
  }
  g.end_on_failure = (flags & KEEL_JOIN_FAIL_FAST) != 0;
  rc = group_run(&g, NULL, "join_all");
  for (size_t i = 0; results && i < n; i++)
    results[i] = g.slots[i].result;
  if (rc == 0 && g.first_failed >= 0)
    rc = g.slots[g.first_failed].result;
  group_free(&g);
  return rc;
}
