/* keel_timeout: the result passes through, a deadline ends a blocked fn with
 * -ETIMEDOUT, nested deadlines (the nearer wins), what fn spawns is drained
 * before the call returns, the caller's cancellation (same worker and from
 * another worker), misuse; in lab mode, the exact virtual expiry. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#define MS KEEL_NS_PER_MS

static int return_arg(void *arg) { return (int)(intptr_t)arg; }

static int sleep_arg_ms(void *arg) { return keel_sleep_ms((int64_t)(intptr_t)arg); }

static int result_body(void *arg) {
  (void)arg;
  CHECK_EQ(keel_timeout(1000 * MS, return_arg, (void *)(intptr_t)7), 7);
  CHECK_EQ(keel_timeout(1000 * MS, return_arg, (void *)(intptr_t)-EIO), -EIO);
  /* A 2 ms sleep well inside its timeout, however late a loaded machine wakes it. */
  CHECK_EQ(keel_timeout(10 * MS + 2 * kt_late_ns(), sleep_arg_ms, (void *)(intptr_t)2), 0);
  CHECK_EQ(keel_timeout_at(KEEL_DEADLINE_NONE, return_arg, (void *)(intptr_t)3), 3);
  return 0;
}
static void test_result_passes_through(void **state) {
  (void)state;
  kt_run_body(result_body, NULL, 1);
}

static int expires_body(void *arg) {
  (void)arg;
  int64_t before = keel_deadline();
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(keel_timeout(30 * MS, sleep_arg_ms, (void *)(intptr_t)10000), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 30 * MS, 30 * MS + kt_late_ns());
  /* The caller itself is not timed out: it can block again. */
  CHECK_EQ(keel_sleep_ms(1), 0);
  CHECK_EQ(keel_deadline(), before);
  /* Already passed: fn runs but fails at its first blocking point. */
  CHECK_EQ(keel_timeout(0, sleep_arg_ms, (void *)(intptr_t)10000), -ETIMEDOUT);
  CHECK_EQ(keel_timeout(-5, return_arg, (void *)(intptr_t)4), 4);
  return 0;
}
static void test_expires(void **state) {
  (void)state;
  kt_run_body(expires_body, NULL, 1);
}

/* Nested: the outer timeout is nearer than the inner. */
static int inner_long(void *arg) {
  (void)arg;
  return keel_timeout(10000 * MS, sleep_arg_ms, (void *)(intptr_t)10000);
}
/* Nested: the inner timeout is nearer; the outer fn goes on afterwards. */
static int inner_short(void *arg) {
  int *inner_rc = arg;
  *inner_rc = keel_timeout(10 * MS, sleep_arg_ms, (void *)(intptr_t)10000);
  return keel_sleep_ms(5);
}

static int nested_body(void *arg) {
  (void)arg;
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(keel_timeout(20 * MS, inner_long, NULL), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 20 * MS, 20 * MS + kt_late_ns());
  int inner_rc = 0;
  CHECK_EQ(keel_timeout(10000 * MS, inner_short, &inner_rc), 0);
  CHECK_EQ(inner_rc, -ETIMEDOUT);
  /* The caller's own deadline is nearer than the timeout's. */
  t0 = kt_clock_ns();
  int64_t prev = keel_task_set_deadline(t0 + 15 * MS);
  CHECK_EQ(keel_timeout(10000 * MS, sleep_arg_ms, (void *)(intptr_t)10000), -ETIMEDOUT);
  CHECK_BETWEEN(kt_clock_ns() - t0, 15 * MS, 15 * MS + kt_late_ns());
  keel_task_set_deadline(prev);
  return 0;
}
static void test_nested_nearer_wins(void **state) {
  (void)state;
  kt_run_body(nested_body, NULL, 1);
}

/* fn spawns a child into its current scope and returns at once: the child
 * is part of the timeout and must be cancelled and drained before
 * keel_timeout returns. */
struct drained {
  int finished;
  int child_rc;
};
static int lingering_child(void *arg) {
  struct drained *d = arg;
  d->child_rc = keel_sleep_ms(100000);
  d->finished++;
  return 0;
}
static int spawn_and_return(void *arg) {
  CHECK_RC(keel_spawn(keel_scope_current(), lingering_child, arg, NULL));
  return 0;
}
static int spawn_and_block(void *arg) {
  CHECK_RC(keel_spawn(keel_scope_current(), lingering_child, arg, NULL));
  return keel_sleep_ms(100000);
}

static int no_orphans_body(void *arg) {
  (void)arg;
  struct drained d = {0, 0};
  CHECK_EQ(keel_timeout(20 * MS, spawn_and_block, &d), -ETIMEDOUT);
  CHECK_EQ(d.finished, 1);
  CHECK_EQ(d.child_rc, -ETIMEDOUT);
  /* fn returned 0 at once but its child runs until the deadline. */
  d.finished = 0;
  CHECK_EQ(keel_timeout(20 * MS, spawn_and_return, &d), 0);
  CHECK_EQ(d.finished, 1);
  CHECK_EQ(d.child_rc, -ETIMEDOUT);
  return 0;
}
static void test_no_orphans(void **state) {
  (void)state;
  kt_run_body(no_orphans_body, NULL, 1);
}

/* The caller is cancelled while fn is blocked. */
struct caller {
  int rc;
  int fn_rc;
  bool fn_done;
  bool returned;
  int worker;
  atomic_bool fn_started;
};
static int recording_sleeper(void *arg) {
  struct caller *c = arg;
  atomic_store(&c->fn_started, true);
  c->fn_rc = keel_sleep_ms(100000);
  keel_sleep_ms(1); /* cancelled: returns at once; proves fn finished first */
  c->fn_done = true;
  return -EPIPE; /* a failed cleanup: the caller's cancellation still wins */
}
static int timeout_caller(void *arg) {
  struct caller *c = arg;
  c->worker = keel_worker_id();
  c->rc = keel_timeout(100000 * MS, recording_sleeper, c);
  c->returned = c->fn_done;
  return 0;
}

static int cancel_caller(int on_worker) {
  struct caller c = {.worker = -1};
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  keel_spawn_opts_t o = {.name = "caller", .on_worker = on_worker};
  CHECK_RC(keel_spawn(s, timeout_caller, &c, &o));
  while (!atomic_load(&c.fn_started))
    CHECK_RC(keel_sleep_ms(1));
  CHECK_RC(keel_sleep_ms(2));
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  CHECK_EQ(keel_scope_join(s), 0); /* the caller returned 0: nothing failed */
  keel_scope_close(s);
  CHECK_EQ(c.rc, -ECANCELED);
  CHECK_EQ(c.fn_rc, -ECANCELED);
  CHECK(c.returned); /* fn had finished when keel_timeout returned */
  CHECK_EQ(c.worker, on_worker == 0 ? keel_worker_id() : on_worker - 1);
  return 0;
}
static int cancel_same_worker_body(void *arg) {
  (void)arg;
  return cancel_caller(KEEL_WORKER_CURRENT);
}
static int cancel_other_worker_body(void *arg) {
  (void)arg;
  return cancel_caller(KEEL_WORKER(1));
}
static void test_caller_cancelled(void **state) {
  (void)state;
  kt_run_body(cancel_same_worker_body, NULL, 1);
}
static void test_caller_cancelled_from_other_worker(void **state) {
  (void)state;
  kt_run_body(cancel_other_worker_body, NULL, 2);
}

/* A caller already cancelled starts nothing. */
static int never_run(void *arg) {
  *(bool *)arg = true;
  return 0;
}
static int precancelled_caller(void *arg) {
  bool ran = false;
  keel_scope_cancel(keel_scope_current(), KEEL_CANCEL_USER);
  int rc = keel_timeout(1000 * MS, never_run, &ran);
  *(int *)arg = ran ? -EPROTO : rc;
  return 0;
}
static int precancelled_body(void *arg) {
  (void)arg;
  int rc = 0;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  CHECK_RC(keel_spawn(s, precancelled_caller, &rc, NULL));
  keel_scope_close(s);
  CHECK_EQ(rc, -ECANCELED);
  return 0;
}
static void test_precancelled_starts_nothing(void **state) {
  (void)state;
  kt_run_body(precancelled_body, NULL, 1);
}

static void test_outside_task_einval(void **state) {
  (void)state;
  assert_int_equal(keel_timeout(MS, return_arg, NULL), -EINVAL);
}

/* Lab mode: the timeout expires at exactly start + timeout. */
static int lab_expiry_body(void *arg) {
  (void)arg;
  int64_t t0 = keel_now_ns();
  CHECK_EQ(keel_timeout(50 * MS, sleep_arg_ms, (void *)(intptr_t)10000), -ETIMEDOUT);
  CHECK_EQ(keel_now_ns(), t0 + 50 * MS);
  CHECK_EQ(keel_timeout(50 * MS, sleep_arg_ms, (void *)(intptr_t)20), 0);
  CHECK_EQ(keel_now_ns(), t0 + 70 * MS);
  return 0;
}
static void test_lab_exact_expiry(void **state) {
  (void)state;
  kt_run_lab_body(lab_expiry_body, NULL, 7);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_result_passes_through),
      cmocka_unit_test(test_expires),
      cmocka_unit_test(test_nested_nearer_wins),
      cmocka_unit_test(test_no_orphans),
      cmocka_unit_test(test_caller_cancelled),
      cmocka_unit_test(test_caller_cancelled_from_other_worker),
      cmocka_unit_test(test_precancelled_starts_nothing),
      cmocka_unit_test(test_outside_task_einval),
      cmocka_unit_test(test_lab_exact_expiry),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
