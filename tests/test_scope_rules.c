/* Scope rules tried against the public headers: who may join and close a
 * scope, join results, cancellation of nested scopes as one step, the
 * origin of a cancellation, spawn argument checks. Each case runs with two
 * workers where another worker can race the opener. */
#include <limits.h>
#include <stdatomic.h>

#include "keel-test.h"

/* Waits (yielding) until *flag is set, at most limit_ms of real time. */
static bool wait_flag(atomic_int *flag, int64_t limit_ms) {
  int64_t until = kt_mono_ns() + limit_ms * KEEL_NS_PER_MS;
  while (!atomic_load(flag)) {
    if (kt_mono_ns() > until)
      return false;
    keel_sleep_ms(1);
  }
  return true;
}

/* ---- Closing a scope that another task tries to join ---------------------------------------- */

struct close_join {
  _Atomic(keel_scope_t *) scope;
  atomic_int child_done, joiner_in, joiner_out;
  int join_rc, close_rc, opener_rc;
};

/* Sleeps until its scope is cancelled: S stays busy while J tries it. */
static int sleeping_child(void *arg) {
  struct close_join *cj = arg;
  keel_sleep_ms(60000);
  atomic_store(&cj->child_done, 1);
  return 0;
}

/* Lets J try S: J returns at once unless it may wait in S's join (then it
 * would still be parked after 5 s), and S's child is then cancelled so
 * that closing S need not wait a minute. */
static void let_joiner_try(struct close_join *cj, keel_scope_t *s) {
  wait_flag(&cj->joiner_in, 60000);
  wait_flag(&cj->joiner_out, 5000);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
}

static int joiner_task(void *arg) {
  struct close_join *cj = arg;
  keel_scope_t *s;
  while ((s = atomic_load(&cj->scope)) == NULL)
    keel_sleep_ms(1);
  atomic_store(&cj->joiner_in, 1);
  cj->join_rc = keel_scope_join(s);
  cj->close_rc = keel_scope_close(s); /* not the opener either */
  atomic_store(&cj->joiner_out, 1);
  return 0;
}

/* The opener closes S while J (on worker 1) joins it: J is not S's opener
 * and gets -EPERM; close waits for S's child. */
static int close_while_joined_main(void *arg) {
  struct close_join *cj = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  keel_spawn_opts_t w1 = {.name = "child", .on_worker = KEEL_WORKER(1)};
  if (!s || keel_spawn(s, sleeping_child, cj, &w1) < 0)
    return -ENOMEM;
  keel_scope_t *js = NULL;
  (void)keel_scope_open(NULL, &js);
  keel_spawn_opts_t jo = {.name = "joiner", .on_worker = KEEL_WORKER(1)};
  if (!js || keel_spawn(js, joiner_task, cj, &jo) < 0)
    return -ENOMEM;
  atomic_store(&cj->scope, s);
  let_joiner_try(cj, s);
  cj->opener_rc = keel_scope_close(s);
  int done = atomic_load(&cj->child_done);
  keel_scope_close(js);
  return done ? 0 : -EPROTO;
}

static void test_close_while_joined(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct close_join cj = {.join_rc = 1, .close_rc = 1, .opener_rc = 1};
    assert_int_equal(kt_run(b, 2, close_while_joined_main, &cj), 0);
    assert_int_equal(cj.join_rc, -EPERM);
    assert_int_equal(cj.close_rc, -EPERM);
    assert_int_equal(cj.opener_rc, 0); /* the child returned 0 */
  }
}

/* The opener returns with S still open while J joins it: the task's end
 * closes S (waiting for its child); J gets -EPERM. */
static int returning_opener(void *arg) {
  struct close_join *cj = arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  keel_spawn_opts_t w1 = {.name = "child", .on_worker = KEEL_WORKER(1)};
  if (!s || keel_spawn(s, sleeping_child, cj, &w1) < 0)
    return -ENOMEM;
  atomic_store(&cj->scope, s);
  let_joiner_try(cj, s);
  return 0; /* S still open */
}

static int opener_returns_main(void *arg) {
  struct close_join *cj = arg;
  keel_scope_t *js = NULL;
  (void)keel_scope_open(NULL, &js);
  keel_spawn_opts_t jo = {.name = "joiner", .on_worker = KEEL_WORKER(1)};
  if (!js || keel_spawn(js, joiner_task, cj, &jo) < 0)
    return -ENOMEM;
  keel_scope_t *os = NULL;
  (void)keel_scope_open(NULL, &os);
  if (!os || keel_spawn(os, returning_opener, cj, NULL) < 0)
    return -ENOMEM;
  cj->opener_rc = keel_scope_close(os);
  int done = atomic_load(&cj->child_done);
  keel_scope_close(js);
  return done ? 0 : -EPROTO;
}

static void test_opener_returns_while_joined(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct close_join cj = {.join_rc = 1, .close_rc = 1, .opener_rc = 1};
    assert_int_equal(kt_run(b, 2, opener_returns_main, &cj), 0);
    assert_int_equal(cj.join_rc, -EPERM);
    assert_int_equal(cj.close_rc, -EPERM);
    assert_int_equal(cj.opener_rc, 0);
  }
}

/* ---- Two joins in a narrow window --------------------------------------------------------- */

struct two_joins {
  keel_scope_t *s;
  int j_rc, main_rc, root_task_done, main_done;
};

static int sleep_10s(void *arg) {
  (void)arg;
  return keel_sleep_ms(10000);
}

static int j_task(void *arg) {
  struct two_joins *tj = arg;
  tj->j_rc = keel_scope_join(tj->s);
  return 0;
}

static int root_task(void *arg) {
  struct two_joins *tj = arg;
  keel_sleep_ms(100);
  tj->root_task_done = 1;
  return 0;
}

/* J (worker 0) tries to join S while S's child sleeps on worker 1; main
 * cancels S, waits without yielding until the child is gone, and joins S.
 * keel_run must not return before main and the root-scope task end. */
static int two_joins_main(void *arg) {
  struct two_joins *tj = arg;
  (void)keel_scope_open(NULL, &tj->s);
  keel_spawn_opts_t w1 = {.name = "child", .on_worker = KEEL_WORKER(1)};
  if (!tj->s || keel_spawn(tj->s, sleep_10s, NULL, &w1) < 0)
    return -ENOMEM;
  if (keel_spawn(keel_scope_current(), root_task, tj, NULL) < 0)
    return -ENOMEM;
  keel_scope_t *js = NULL;
  (void)keel_scope_open(NULL, &js);
  if (!js || keel_spawn(js, j_task, tj, NULL) < 0)
    return -ENOMEM;
  keel_sleep_ms(20); /* J runs (and would park in the join) */
  keel_scope_cancel(tj->s, KEEL_CANCEL_USER);
  while (keel_scope_live(tj->s) != 0) /* no yield: J stays unscheduled */
    ;
  tj->main_rc = keel_scope_join(tj->s);
  keel_scope_close(tj->s);
  keel_scope_close(js);
  keel_sleep_ms(50);
  tj->main_done = 1;
  return 0;
}

static void test_two_joins(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    for (int round = 0; round < 5; round++) {
      struct two_joins tj = {.j_rc = 1, .main_rc = 1};
      assert_int_equal(kt_run(b, 2, two_joins_main, &tj), 0);
      assert_int_equal(tj.j_rc, -EPERM);
      assert_int_equal(tj.main_rc, -ECANCELED);
      assert_int_equal(tj.root_task_done, 1);
      assert_int_equal(tj.main_done, 1);
    }
  }
}

/* ---- Cancelling a scope reaches its nested scopes in one step ----------------------------- */

struct nested_cancel {
  keel_scope_t *nested;
  atomic_int asleep;
  int sleep_rc, spawn_rc, ran;
  keel_cancel_reason_t nested_reason, seen_reason, origin;
};

static int must_not_run(void *arg) {
  struct nested_cancel *nc = arg;
  nc->ran = 1;
  return 0;
}

static int nested_opener(void *arg) {
  struct nested_cancel *nc = arg;
  (void)keel_scope_open(NULL, &nc->nested);
  if (!nc->nested)
    return -ENOMEM;
  atomic_store(&nc->asleep, 1);
  nc->sleep_rc = keel_sleep_ms(10000);
  /* The sleep saw P's cancellation: N must read cancelled, and refuse
   * new tasks. */
  nc->nested_reason = keel_scope_cancel_reason(nc->nested);
  nc->spawn_rc = keel_spawn(nc->nested, must_not_run, nc, NULL);
  nc->seen_reason = keel_cancelled();
  nc->origin = keel_cancel_origin();
  keel_scope_close(nc->nested);
  return 0;
}

#define NESTED_ROUNDS (KT_SANITIZED ? 200 : 1000)

static int nested_cancel_main(void *arg) {
  int *bad = arg;
  for (int round = 0; round < NESTED_ROUNDS; round++) {
    struct nested_cancel nc = {.sleep_rc = 1, .spawn_rc = 1};
    keel_scope_t *p = NULL;
    (void)keel_scope_open(NULL, &p);
    keel_spawn_opts_t w1 = {.name = "T", .on_worker = KEEL_WORKER(1)};
    if (!p || keel_spawn(p, nested_opener, &nc, &w1) < 0)
      return -ENOMEM;
    while (!atomic_load(&nc.asleep))
      keel_yield();
    keel_scope_cancel(p, KEEL_CANCEL_USER);
    keel_scope_close(p);
    if (nc.sleep_rc != -ECANCELED || nc.nested_reason != KEEL_CANCEL_PARENT ||
        nc.spawn_rc != -ECANCELED || nc.ran || nc.seen_reason != KEEL_CANCEL_USER ||
        nc.origin != KEEL_CANCEL_USER) {
      if (*bad == 0)
        fprintf(stderr,
                "# round %d: sleep %d, nested reason %d, spawn %d, ran %d, seen %d, origin %d\n",
                round, nc.sleep_rc, nc.nested_reason, nc.spawn_rc, nc.ran, nc.seen_reason,
                nc.origin);
      (*bad)++;
    }
  }
  return 0;
}

static void test_nested_cancel_atomic(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    int bad = 0;
    assert_int_equal(kt_run(b, 2, nested_cancel_main, &bad), 0);
    assert_int_equal(bad, 0);
  }
}

/* ---- Join results -----------------------------------------------------------------------------
 */

static int return_0(void *arg) {
  (void)arg;
  return 0;
}

static int return_ecanceled_when_cancelled(void *arg) {
  (void)arg;
  return keel_sleep_ms(10000);
}

struct join_results {
  int after_deadline, timed_out, cancelled_ok, cancelled_cut, empty_cancelled, positive;
};

static int return_7(void *arg) {
  (void)arg;
  return 7; /* a count: success */
}

static int join_results_main(void *arg) {
  struct join_results *jr = arg;
  /* Every child succeeded before the deadline passed: 0. */
  keel_scope_t *s = NULL;
  (void)keel_scope_open(
      &(keel_scope_opts_t){.deadline_ns = keel_now_ns() + 40 * KEEL_NS_PER_MS, .name = "deadline"},
      &s);
  if (!s || keel_spawn(s, return_0, NULL, NULL) < 0)
    return -ENOMEM;
  keel_sleep_ms(120);
  jr->after_deadline = keel_scope_join(s);
  keel_scope_close(s);
  /* A child cut short by the deadline: -ETIMEDOUT. */
  (void)keel_scope_open(&(keel_scope_opts_t){.deadline_ns = keel_now_ns() + 20 * KEEL_NS_PER_MS},
                        &s);
  if (!s || keel_spawn(s, return_ecanceled_when_cancelled, NULL, NULL) < 0)
    return -ENOMEM;
  jr->timed_out = keel_scope_close(s);
  /* Cancelled after its children succeeded: 0. */
  (void)keel_scope_open(NULL, &s);
  if (!s || keel_spawn(s, return_0, NULL, NULL) < 0)
    return -ENOMEM;
  keel_sleep_ms(5);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  jr->cancelled_ok = keel_scope_close(s);
  /* Cancelled with a child it cut short: -ECANCELED. */
  (void)keel_scope_open(NULL, &s);
  if (!s || keel_spawn(s, return_ecanceled_when_cancelled, NULL, NULL) < 0)
    return -ENOMEM;
  keel_sleep_ms(5);
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  jr->cancelled_cut = keel_scope_close(s);
  /* Cancelled with nothing in it: 0, nothing failed. */
  (void)keel_scope_open(NULL, &s);
  if (!s)
    return -ENOMEM;
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  jr->empty_cancelled = keel_scope_close(s);
  /* A positive return is success, and does not fail its siblings. */
  (void)keel_scope_open(&(keel_scope_opts_t){.flags = KEEL_SCOPE_FAIL_FAST}, &s);
  keel_task_t *h;
  if (!s || keel_spawn(s, return_7, NULL, &(keel_spawn_opts_t){.handle = &h}) < 0 ||
      keel_spawn(s, return_0, NULL, NULL) < 0)
    return -ENOMEM;
  jr->positive = keel_scope_join(s);
  if (keel_task_outcome(h).kind != KEEL_OUTCOME_OK || keel_task_outcome(h).error != 7 ||
      keel_scope_cancel_reason(s) != KEEL_CANCEL_NONE)
    jr->positive = -EPROTO;
  keel_scope_close(s);
  return 0;
}

static void test_join_results(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct join_results jr = {1, 1, 1, 1, 1, 1};
    assert_int_equal(kt_run(b, 1, join_results_main, &jr), 0);
    assert_int_equal(jr.after_deadline, 0);
    assert_int_equal(jr.timed_out, -ETIMEDOUT);
    assert_int_equal(jr.cancelled_ok, 0);
    assert_int_equal(jr.cancelled_cut, -ECANCELED);
    assert_int_equal(jr.empty_cancelled, 0);
    assert_int_equal(jr.positive, 0);
  }
}

/* ---- Spawning into a finished scope; closing from elsewhere -----------------------------------
 */

struct late_spawn {
  keel_scope_t *s;
  int late_rc, close_rc, reopen_rc, ran;
};

static int mark_ran(void *arg) {
  struct late_spawn *ls = arg;
  ls->ran++;
  return 0;
}

static int late_spawner(void *arg) {
  struct late_spawn *ls = arg;
  ls->late_rc = keel_spawn(ls->s, mark_ran, ls, NULL);
  ls->close_rc = keel_scope_close(ls->s);
  return 0;
}

static int late_spawn_main(void *arg) {
  struct late_spawn *ls = arg;
  (void)keel_scope_open(NULL, &ls->s);
  if (!ls->s || keel_spawn(ls->s, mark_ran, ls, NULL) < 0)
    return -ENOMEM;
  if (keel_scope_join(ls->s) != 0)
    return -EPROTO;
  /* S is joined: another task may not put work in it behind the opener's
   * back, nor close it. */
  keel_scope_t *o = NULL;
  (void)keel_scope_open(NULL, &o);
  keel_spawn_opts_t w1 = {.on_worker = KEEL_WORKER(1)};
  if (!o || keel_spawn(o, late_spawner, ls, &w1) < 0)
    return -ENOMEM;
  keel_scope_close(o);
  /* The opener may use it again. */
  ls->reopen_rc = keel_spawn(ls->s, mark_ran, ls, NULL);
  int rc = keel_scope_close(ls->s);
  return rc;
}

static void test_late_spawn_and_foreign_close(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    struct late_spawn ls = {.late_rc = 1, .close_rc = 1, .reopen_rc = 1};
    assert_int_equal(kt_run(b, 2, late_spawn_main, &ls), 0);
    assert_int_equal(ls.late_rc, -EPIPE);
    assert_int_equal(ls.close_rc, -EPERM);
    assert_int_equal(ls.reopen_rc, 0);
    assert_int_equal(ls.ran, 2);
  }
}

/* Joining the root scope, or the scope a task runs in, would wait for the
 * caller itself: refused. */
static int self_join_task(void *arg) {
  int *rc = arg;
  rc[0] = keel_scope_join(keel_scope_current());
  return 0;
}

static int self_join_main(void *arg) {
  int *rc = arg;
  rc[1] = keel_scope_join(keel_scope_current()); /* the root */
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  if (!s || keel_spawn(s, self_join_task, rc, NULL) < 0)
    return -ENOMEM;
  rc[2] = keel_scope_close(s);
  return 0;
}

static void test_self_join(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    int rc[3] = {1, 1, 1};
    assert_int_equal(kt_run(b, 1, self_join_main, rc), 0);
    assert_int_equal(rc[0], -EPERM);
    assert_int_equal(rc[1], -EPERM);
    assert_int_equal(rc[2], 0);
  }
}

/* ---- The origin of a cancellation ------------------------------------------------------------ */

struct origin {
  keel_cancel_reason_t seen[3], origin[3];
  bool shutting_down[2];
};

static int origin_task(void *arg) {
  struct origin *o = arg;
  keel_scope_t *n = NULL;
  (void)keel_scope_open(NULL, &n);
  keel_sleep_ms(10000);
  o->seen[0] = keel_cancelled();
  o->origin[0] = keel_cancel_origin();
  keel_shield_begin(keel_now_ns() + KEEL_NS_PER_SEC);
  o->seen[1] = keel_cancelled(); /* shielded: nothing to act on */
  o->origin[1] = keel_cancel_origin();
  keel_shield_end();
  keel_scope_close(n);
  return 0;
}

static int origin_main(void *arg) {
  struct origin *o = arg;
  keel_scope_t *p = NULL;
  (void)keel_scope_open(NULL, &p);
  if (!p || keel_spawn(p, origin_task, o, NULL) < 0)
    return -ENOMEM;
  keel_sleep_ms(5);
  o->shutting_down[0] = keel_shutting_down();
  keel_shutdown();
  o->shutting_down[1] = keel_shutting_down();
  keel_scope_close(p);
  o->seen[2] = keel_cancelled();
  o->origin[2] = keel_cancel_origin();
  return 0;
}

static void test_cancel_origin(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND_AND_LAB(b) {
    struct origin o = {{-1, -1, -1}, {-1, -1, -1}, {true, false}};
    assert_int_equal(kt_run(b, 1, origin_main, &o), 0);
    assert_int_equal(o.seen[0], KEEL_CANCEL_PARENT);
    assert_int_equal(o.origin[0], KEEL_CANCEL_SHUTDOWN);
    assert_int_equal(o.seen[1], KEEL_CANCEL_NONE);
    assert_int_equal(o.origin[1], KEEL_CANCEL_SHUTDOWN);
    assert_int_equal(o.seen[2], KEEL_CANCEL_SHUTDOWN); /* main runs in the root */
    assert_int_equal(o.origin[2], KEEL_CANCEL_SHUTDOWN);
    assert_false(o.shutting_down[0]);
    assert_true(o.shutting_down[1]);
  }
}

/* ---- Spawn argument checks --------------------------------------------------------------------
 */

static int bad_workers_main(void *arg) {
  int *rc = arg;
  const int bad[] = {INT_MIN, INT_MIN + 1, -1, KEEL_WORKER(2), KEEL_WORKER(1000), INT_MAX};
  for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++)
    rc[i] =
        keel_spawn(keel_scope_current(), return_0, NULL, &(keel_spawn_opts_t){.on_worker = bad[i]});
  rc[6] = keel_spawn(keel_scope_current(), return_0, NULL,
                     &(keel_spawn_opts_t){.on_worker = KEEL_WORKER(1)});
  return 0;
}

static void test_spawn_bad_worker(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    int rc[7] = {1, 1, 1, 1, 1, 1, 1};
    assert_int_equal(kt_run(b, 2, bad_workers_main, rc), 0);
    for (int i = 0; i < 6; i++)
      assert_int_equal(rc[i], -EINVAL);
    assert_int_equal(rc[6], 0);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_close_while_joined),
      cmocka_unit_test(test_opener_returns_while_joined),
      cmocka_unit_test(test_two_joins),
      cmocka_unit_test(test_nested_cancel_atomic),
      cmocka_unit_test(test_join_results),
      cmocka_unit_test(test_late_spawn_and_foreign_close),
      cmocka_unit_test(test_self_join),
      cmocka_unit_test(test_cancel_origin),
      cmocka_unit_test(test_spawn_bad_worker),
  };
  if (getenv("KT_FILTER"))
    cmocka_set_test_filter(getenv("KT_FILTER"));
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
