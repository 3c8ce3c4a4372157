/* Blocking pool: results from many tasks on two workers, cancellation and
 * deadlines end the wait at once while the function finishes and its
 * output is disposed of exactly once, queued jobs of a cancelled task are
 * skipped, shutdown with abandoned jobs, argument errors. */
#define KT_GUARD_MS 20000
#include <stdatomic.h>

#include "kt-guard.h"

/* Runs body in the guard scope with a given number of pool threads. */
static int run_pool(keel_backend_t backend, unsigned threads, keel_task_fn fn, void *arg) {
  keel_config_t cfg;
  keel_config_init(&cfg);
  cfg.backend = backend;
  cfg.workers = 2;
  cfg.blocking_threads = threads;
  kt_body_t body = {fn, arg};
  return keel_run(&cfg, kt_guard_main, &body);
}

/* How late a wake-up may be on a loaded machine (every core busy, a
 * sanitizer's slowdown). */
#define LATE_MS 2000

/* What the pool functions did, counted across threads. */
static atomic_int fn_started, fn_finished, disposed, disposed_with_output;

/* Held jobs wait until the test opens the gate (10 s at most, and not at
 * all once a check has failed), so what a task does while its function is
 * still running is seen without racing a sleep on a loaded machine. */
static atomic_bool gate_open;

static void reset_counts(void) {
  atomic_store(&fn_started, 0);
  atomic_store(&fn_finished, 0);
  atomic_store(&disposed, 0);
  atomic_store(&disposed_with_output, 0);
  atomic_store(&gate_open, false);
}

/* A job: input, a sleep or the gate, and an output the caller must free. */
struct job {
  int in;
  int sleep_ms;
  bool held; /* waits for the gate */
  int *out;  /* malloc'd by the function */
};

static void job_fn(void *data) {
  struct job *j = data;
  atomic_fetch_add(&fn_started, 1);
  for (int i = 0; j->held && i < 10000 && !atomic_load(&gate_open) && !atomic_load(&kt_failed); i++)
    usleep(1000);
  if (j->sleep_ms)
    usleep((useconds_t)j->sleep_ms * 1000);
  j->out = malloc(sizeof *j->out);
  if (j->out)
    *j->out = j->in * 2;
  atomic_fetch_add(&fn_finished, 1);
}

static void job_dispose(void *data) {
  struct job *j = data;
  atomic_fetch_add(&disposed, 1);
  if (j->out)
    atomic_fetch_add(&disposed_with_output, 1);
  free(j->out);
  j->out = NULL;
}

/* ---- Results from many tasks ----------------------------------------------- */

#define MANY 64

static int many_task(void *arg) {
  int in = (int)(intptr_t)arg;
  struct job j = {.in = in, .sleep_ms = in % 3}; /* on the task's stack: copied */
  CHECK_EQ(keel_blocking_run(job_fn, &j, sizeof j, job_dispose), 0);
  CHECK(j.out);
  CHECK_EQ(*j.out, in * 2);
  free(j.out);
  return 0;
}

/* size 0: the pointer is passed as is. */
static int by_pointer_task(void *arg) {
  (void)arg;
  struct job *j = calloc(1, sizeof *j);
  CHECK(j);
  j->in = 21;
  CHECK_EQ(keel_blocking_run(job_fn, j, 0, job_dispose), 0);
  CHECK(j->out);
  CHECK_EQ(*j->out, 42);
  free(j->out);
  free(j);
  return 0;
}

static int many_body(void *arg) {
  (void)arg;
  keel_scope_t *s = NULL;
  (void)keel_scope_open(NULL, &s);
  CHECK(s);
  for (int i = 0; i < MANY; i++) {
    keel_spawn_opts_t o = {.name = "submitter", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(s, many_task, (void *)(intptr_t)i, &o));
  }
  CHECK_RC(keel_spawn(s, by_pointer_task, NULL, NULL));
  CHECK_EQ(keel_scope_join(s), 0);
  keel_scope_close(s);
  return 0;
}

static void test_results_many_tasks(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    reset_counts();
    assert_int_equal(run_pool(b, 4, many_body, NULL), 0);
    assert_int_equal(atomic_load(&fn_finished), MANY + 1);
    assert_int_equal(atomic_load(&disposed), 0); /* every output was received */
  }
}

/* ---- Cancellation and deadlines ------------------------------------------------- */

/* A task whose job is held by the gate, or sleeps sleep_ms. */
struct slow {
  int sleep_ms;
  int rc;
  int64_t returned_ns;
};

static atomic_int submitting; /* slow tasks that reached keel_blocking_run */

static int slow_task(void *arg) {
  struct slow *s = arg;
  struct job j = {.in = 1, .sleep_ms = s->sleep_ms, .held = s->sleep_ms == 0};
  atomic_fetch_add(&submitting, 1);
  s->rc = keel_blocking_run(job_fn, &j, sizeof j, job_dispose);
  s->returned_ns = kt_mono_ns();
  if (s->rc == 0) /* not expected: free what we received */
    free(j.out);
  return 0;
}

/* Waits (polling) until n pool functions have started. */
static int await_started(int n) {
  for (int i = 0; i < 2000 && atomic_load(&fn_started) < n; i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_EQ(atomic_load(&fn_started), n);
  return 0;
}

static int cancel_body(void *arg) {
  (void)arg;
  struct slow s = {0};
  keel_scope_t *scope = NULL;
  (void)keel_scope_open(NULL, &scope);
  CHECK(scope);
  keel_spawn_opts_t o = {.name = "slow", .on_worker = KEEL_WORKER(1)};
  CHECK_RC(keel_spawn(scope, slow_task, &s, &o));
  CHECK_RC(await_started(1));
  int64_t t0 = kt_mono_ns();
  keel_scope_cancel(scope, KEEL_CANCEL_USER);
  keel_scope_join(scope);
  keel_scope_close(scope);
  int64_t took_ms = (s.returned_ns - t0) / KEEL_NS_PER_MS;
  CHECK_EQ(s.rc, -ECANCELED);
  /* the task returned while the gate still held its function: it did not
   * wait for it (keel_run will) */
  CHECK_EQ(atomic_load(&fn_finished), 0);
  if (took_ms >= LATE_MS)
    KT_FAIL("cancelled task returned after %lld ms", (long long)took_ms);
  atomic_store(&gate_open, true);
  return 0;
}

static void test_cancel_returns_at_once_dispose_once(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    reset_counts();
    assert_int_equal(run_pool(b, 2, cancel_body, NULL), 0);
    /* keel_run waited for the function; its output was disposed of once */
    assert_int_equal(atomic_load(&fn_finished), 1);
    assert_int_equal(atomic_load(&disposed), 1);
    assert_int_equal(atomic_load(&disposed_with_output), 1);
  }
}

static int deadline_task(void *arg) {
  struct slow *s = arg;
  keel_task_set_deadline(keel_now_ns() + 30 * KEEL_NS_PER_MS);
  return slow_task(s);
}

static int deadline_body(void *arg) {
  (void)arg;
  struct slow s = {0};
  keel_scope_t *scope = NULL;
  (void)keel_scope_open(NULL, &scope);
  CHECK(scope);
  int64_t t0 = kt_mono_ns();
  CHECK_RC(keel_spawn(scope, deadline_task, &s, NULL));
  CHECK_EQ(keel_scope_join(scope), 0);
  keel_scope_close(scope);
  int64_t took_ms = (s.returned_ns - t0) / KEEL_NS_PER_MS;
  CHECK_EQ(s.rc, -ETIMEDOUT);
  CHECK_EQ(atomic_load(&fn_finished), 0); /* returned while its function was held */
  if (took_ms < 30 || took_ms >= 30 + LATE_MS)
    KT_FAIL("deadline of 30 ms returned after %lld ms", (long long)took_ms);
  atomic_store(&gate_open, true);
  return 0;
}

static void test_deadline_returns_at_once_dispose_once(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    reset_counts();
    assert_int_equal(run_pool(b, 2, deadline_body, NULL), 0);
    assert_int_equal(atomic_load(&fn_finished), 1);
    assert_int_equal(atomic_load(&disposed), 1);
    assert_int_equal(atomic_load(&disposed_with_output), 1);
  }
}

/* ---- Queued jobs and shutdown ---------------------------------------------------------- */

#define QUEUED 4

#define QUEUED_SLEEP_MS 1000

/* One pool thread: the first job runs, held by the gate, the others (which
 * would sleep 1 s each) queue behind it. Every task is cancelled and main
 * returns, leaving keel_run's shutdown to wait for the running function
 * and dispose of everything. */
static int abandon_body(void *arg) {
  (void)arg;
  static struct slow s[QUEUED + 1];
  memset(s, 0, sizeof s);
  atomic_store(&submitting, 0);
  keel_scope_t *scope = NULL;
  (void)keel_scope_open(NULL, &scope);
  CHECK(scope);
  for (int i = 0; i <= QUEUED; i++) {
    s[i].sleep_ms = i == 0 ? 0 : QUEUED_SLEEP_MS;
    keel_spawn_opts_t o = {.name = "abandoned", .on_worker = KEEL_WORKER(i % 2)};
    CHECK_RC(keel_spawn(scope, slow_task, &s[i], &o));
    if (i == 0)
      CHECK_RC(await_started(1));
  }
  for (int i = 0; i < 5000 && atomic_load(&submitting) < QUEUED + 1; i++)
    CHECK_RC(keel_sleep_ms(1));
  CHECK_EQ(atomic_load(&submitting), QUEUED + 1);
  CHECK_RC(keel_sleep_ms(10)); /* the rest are queued */
  keel_scope_cancel(scope, KEEL_CANCEL_USER);
  keel_scope_join(scope);
  keel_scope_close(scope);
  for (int i = 0; i <= QUEUED; i++)
    CHECK_EQ(s[i].rc, -ECANCELED);
  CHECK_EQ(atomic_load(&fn_finished), 0);
  atomic_store(&gate_open, true);
  return 0;
}

static void test_queued_skipped_shutdown_disposes(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(b) {
    reset_counts();
    int64_t t0 = kt_mono_ns();
    assert_int_equal(run_pool(b, 1, abandon_body, NULL), 0);
    int64_t took_ms = (kt_mono_ns() - t0) / KEEL_NS_PER_MS;
    /* only the running job ran; queued ones were skipped, not run */
    assert_int_equal(atomic_load(&fn_started), 1);
    assert_int_equal(atomic_load(&fn_finished), 1);
    assert_int_equal(atomic_load(&disposed), QUEUED + 1);
    assert_int_equal(atomic_load(&disposed_with_output), 1);
    assert_true(took_ms < QUEUED * QUEUED_SLEEP_MS); /* skipped jobs did not sleep */
  }
}

/* ---- Nothing submitted ------------------------------------------------------------------- */

static int cancelled_first_task(void *arg) {
  (void)arg;
  keel_scope_cancel(keel_scope_current(), KEEL_CANCEL_USER);
  struct job j = {.in = 1};
  CHECK_EQ(keel_blocking_run(job_fn, &j, sizeof j, job_dispose), -ECANCELED);
  CHECK_EQ(atomic_load(&disposed), 1); /* disposed of now, on the task */
  CHECK_EQ(atomic_load(&fn_started), 0);
  return 0;
}

static int nothing_body(void *arg) {
  (void)arg;
  keel_scope_t *scope = NULL;
  (void)keel_scope_open(NULL, &scope);
  CHECK(scope);
  CHECK_RC(keel_spawn(scope, cancelled_first_task, NULL, NULL));
  keel_scope_join(scope);
  keel_scope_close(scope);
  CHECK_EQ(atomic_load(&disposed), 1);
  struct job j = {.in = 1};
  CHECK_EQ(keel_blocking_run(NULL, &j, sizeof j, job_dispose), -EINVAL);
  CHECK_EQ(atomic_load(&disposed), 2);
  CHECK_EQ(keel_blocking_run(NULL, &j, sizeof j, NULL), -EINVAL);
  return 0;
}

static void test_nothing_submitted(void **state) {
  (void)state;
  reset_counts();
  assert_int_equal(run_pool(KEEL_BACKEND_EPOLL, 1, nothing_body, NULL), 0);
  assert_int_equal(atomic_load(&fn_started), 0);
  /* outside a task: -EINVAL, disposed of at once */
  struct job j = {.in = 1};
  assert_int_equal(keel_blocking_run(job_fn, &j, sizeof j, job_dispose), -EINVAL);
  assert_int_equal(atomic_load(&disposed), 3);
  assert_int_equal(atomic_load(&fn_started), 0);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_results_many_tasks),
      cmocka_unit_test(test_cancel_returns_at_once_dispose_once),
      cmocka_unit_test(test_deadline_returns_at_once_dispose_once),
      cmocka_unit_test(test_queued_skipped_shutdown_disposes),
      cmocka_unit_test(test_nothing_submitted),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
