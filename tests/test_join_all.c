/* keel_join_all: results by index, no fail-fast by default (a failure does
 * not stop the others), KEEL_JOIN_FAIL_FAST cancels and drains the rest,
 * the first failure in completion order is returned, many branches, the
 * caller's cancellation from another worker, branches run on the caller's
 * worker, misuse. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

#define MS KEEL_NS_PER_MS

/* A branch: sleeps ms, then returns result; records what happened. */
struct branch {
  int64_t ms;
  int result;
  int cancel_result; /* returned when the sleep was cancelled, if not 0 */
  int slept;         /* the sleep's return */
  bool finished;
  int worker;
  atomic_int *started;  /* if set, counts branches that began */
  atomic_int *finishes; /* if set, counts branches that finished */
  int finish_order;     /* its place among those that finished (finishes set) */
};

static int branch_fn(void *arg) {
  struct branch *b = arg;
  b->worker = keel_worker_id();
  if (b->started)
    atomic_fetch_add(b->started, 1);
  b->slept = keel_sleep_ms(b->ms);
  b->finished = true;
  if (b->finishes)
    b->finish_order = atomic_fetch_add(b->finishes, 1);
  if (b->slept == -ECANCELED && b->cancel_result)
    return b->cancel_result; /* e.g. a cleanup that failed */
  return b->slept < 0 ? b->slept : b->result;
}

static void make_branches(struct branch *b, keel_branch_t *kb, size_t n) {
  for (size_t i = 0; i < n; i++)
    kb[i] = (keel_branch_t){branch_fn, &b[i]};
}

static int all_ok_body(void *arg) {
  (void)arg;
  struct branch b[4] = {{.ms = 8, .result = 1},
                        {.ms = 1, .result = 0},
                        {.ms = 4, .result = 3},
                        {.ms = 0, .result = 4}};
  keel_branch_t kb[4];
  make_branches(b, kb, 4);
  int results[4] = {-1, -1, -1, -1};
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(keel_join_all(kb, 4, 0, results), 0);
  /* Waited for the slowest, and no longer: they ran concurrently. */
  CHECK_BETWEEN(kt_clock_ns() - t0, 8 * MS, 8 * MS + kt_late_ns());
  CHECK_EQ(results[0], 1);
  CHECK_EQ(results[1], 0);
  CHECK_EQ(results[2], 3);
  CHECK_EQ(results[3], 4);
  for (int i = 0; i < 4; i++)
    CHECK(b[i].finished);
  CHECK_EQ(keel_join_all(kb, 4, 0, NULL), 0); /* results may be NULL */
  return 0;
}
static void test_all_succeed_results_by_index(void **state) {
  (void)state;
  kt_run_body(all_ok_body, NULL, 1);
}

/* Without fail-fast a failure leaves the others running to completion. */
static int no_fail_fast_body(void *arg) {
  (void)arg;
  struct branch b[3] = {
      {.ms = 20, .result = 7}, {.ms = 1, .result = -EIO}, {.ms = 10, .result = 8}};
  keel_branch_t kb[3];
  make_branches(b, kb, 3);
  int results[3];
  CHECK_EQ(keel_join_all(kb, 3, 0, results), -EIO);
  CHECK_EQ(results[0], 7);
  CHECK_EQ(results[1], -EIO);
  CHECK_EQ(results[2], 8);
  CHECK_EQ(b[0].slept, 0);
  return 0;
}
static void test_failure_does_not_stop_others(void **state) {
  (void)state;
  kt_run_body(no_fail_fast_body, NULL, 1);
}

static int fail_fast_body(void *arg) {
  (void)arg;
  struct branch b[3] = {
      {.ms = 100000, .result = 7}, {.ms = 2, .result = -EIO}, {.ms = 100000, .result = 8}};
  keel_branch_t kb[3];
  make_branches(b, kb, 3);
  int results[3];
  int64_t t0 = kt_clock_ns();
  CHECK_EQ(keel_join_all(kb, 3, KEEL_JOIN_FAIL_FAST, results), -EIO);
  CHECK_BETWEEN(kt_clock_ns() - t0, 2 * MS, 2 * MS + kt_late_ns()); /* not the 100 s sleeps */
  CHECK_EQ(results[0], -ECANCELED);
  CHECK_EQ(results[1], -EIO);
  CHECK_EQ(results[2], -ECANCELED);
  CHECK(b[0].finished && b[2].finished); /* drained before return */
  return 0;
}
static void test_fail_fast_cancels_rest(void **state) {
  (void)state;
  kt_run_body(fail_fast_body, NULL, 1);
}

/* The first failure in time, not in index order, is returned. The shortest
 * sleep ends first in lab mode; a loaded machine may start the branches
 * far enough apart to change that, so the order they finished in decides. */
static int first_failure_body(void *arg) {
  (void)arg;
  atomic_int finishes = 0;
  struct branch b[3] = {{.ms = 20, .result = -EPIPE, .finishes = &finishes},
                        {.ms = 5, .result = 1, .finishes = &finishes},
                        {.ms = 1, .result = -ECONNRESET, .finishes = &finishes}};
  keel_branch_t kb[3];
  make_branches(b, kb, 3);
  int results[3];
  int rc = keel_join_all(kb, 3, 0, results);
  CHECK_EQ(results[0], -EPIPE);
  CHECK_EQ(results[1], 1);
  CHECK_EQ(results[2], -ECONNRESET);
  CHECK_EQ(rc, b[0].finish_order < b[2].finish_order ? -EPIPE : -ECONNRESET);
  if (keel_lab_active())
    CHECK_EQ(rc, -ECONNRESET);
  return 0;
}
static void test_first_failure_in_time(void **state) {
  (void)state;
  kt_run_body(first_failure_body, NULL, 1);
}

#define MANY 100
static int many_body(void *arg) {
  (void)arg;
  static struct branch b[MANY];
  static keel_branch_t kb[MANY];
  static int results[MANY];
  for (int i = 0; i < MANY; i++)
    b[i] = (struct branch){.ms = i % 5, .result = i};
  make_branches(b, kb, MANY);
  CHECK_EQ(keel_join_all(kb, MANY, 0, results), 0);
  for (int i = 0; i < MANY; i++)
    CHECK_EQ(results[i], i);
  return 0;
}
static void test_many_branches(void **state) {
  (void)state;
  kt_run_body(many_body, NULL, 1);
}

/* The joining task runs on worker 1 and is cancelled from worker 0. */
struct joiner {
  struct branch b[3];
  int results[3];
  int rc;
  int worker;
  bool all_finished_at_return;
  atomic_int started;
  atomic_int finishes;
};
static int joiner_task(void *arg) {
  struct joiner *j = arg;
  keel_branch_t kb[3];
  j->worker = keel_worker_id();
  for (int i = 0; i < 3; i++)
    j->b[i] = (struct branch){.ms = i == 0 ? 1 : 100000,
                              .result = 10 + i,
                              .started = &j->started,
                              .finishes = &j->finishes};
  j->b[1].cancel_result = -EPIPE; /* the caller's cancellation still wins */
  make_branches(j->b, kb, 3);
  j->rc = keel_join_all(kb, 3, 0, j->results);
  j->all_finished_at_return = j->b[0].finished && j->b[1].finished && j->b[2].finished;
  return 0;
}
static int caller_cancelled_body(void *arg) {
  (void)arg;
  struct joiner j;
  memset(&j, 0, sizeof j);
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  keel_spawn_opts_t o = {.name = "joiner", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(s, joiner_task, &j, &o));
  while (atomic_load(&j.started) < 3) /* every branch began */
    CHECK_RC(keel_sleep_ms(1));
  while (atomic_load(&j.finishes) < 1) /* branch 0 (1 ms) is done, the others wait */
    CHECK_RC(keel_sleep_ms(1));
  keel_scope_cancel(s, KEEL_CANCEL_USER);
  keel_scope_close(s);
  CHECK_EQ(j.rc, -ECANCELED);
  CHECK(j.all_finished_at_return);
  CHECK_EQ(j.results[0], 10); /* finished before the cancellation */
  CHECK_EQ(j.results[1], -EPIPE);
  CHECK_EQ(j.results[2], -ECANCELED);
  CHECK_EQ(j.worker, 1);
  for (int i = 0; i < 3; i++)
    CHECK_EQ(j.b[i].worker, 1); /* branches run on the caller's worker */
  return 0;
}
static void test_caller_cancelled_drains(void **state) {
  (void)state;
  kt_run_body(caller_cancelled_body, NULL, 2);
}

static int misuse_body(void *arg) {
  (void)arg;
  CHECK_EQ(keel_join_all(NULL, 0, 0, NULL), 0);
  keel_branch_t bad[2] = {{NULL, NULL}, {NULL, NULL}};
  int results[2] = {1, 1};
  CHECK_EQ(keel_join_all(bad, 2, 0, results), -EINVAL);
  CHECK_EQ(results[0], -EINVAL);
  return 0;
}
static void test_misuse(void **state) {
  (void)state;
  kt_run_body(misuse_body, NULL, 1);
  keel_branch_t b = {NULL, NULL};
  assert_int_equal(keel_join_all(&b, 1, 0, NULL), -EINVAL); /* outside a task */
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_all_succeed_results_by_index),
      cmocka_unit_test(test_failure_does_not_stop_others),
      cmocka_unit_test(test_fail_fast_cancels_rest),
      cmocka_unit_test(test_first_failure_in_time),
      cmocka_unit_test(test_many_branches),
      cmocka_unit_test(test_caller_cancelled_drains),
      cmocka_unit_test(test_misuse),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
