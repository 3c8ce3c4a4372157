/* Once: runs fn once and hands its result to every caller, concurrent
 * callers on two workers park until it is done; a failing fn, or a runner
 * cancelled mid-fn, lets the next (or a waiting) caller run it again;
 * waiters cancelled or timed out leave; fn calling its own once gets
 * -EDEADLK; the static initialiser works. */
#define KT_GUARD_MS 20000
#include "kt-guard.h"

static int settle(void) { return keel_sleep_ms(5); }

/* fn: counts its calls, sleeps sleep_ms, waits while held is set (so a
 * test decides when it ends, whatever the machine's load), then fails with
 * fail_rc on the calls listed in fail_first (a count), else returns ok_rc. */
struct init {
  keel_once_t once;
  atomic_int calls;
  int sleep_ms;
  atomic_bool held;
  int fail_first;
  int fail_rc;
  int ok_rc;
};

static int init_fn(void *arg) {
  struct init *in = arg;
  int call = atomic_fetch_add(&in->calls, 1);
  int rc = in->sleep_ms ? keel_sleep_ms(in->sleep_ms) : 0;
  while (rc == 0 && atomic_load(&in->held))
    rc = keel_sleep_ms(1);
  if (rc < 0)
    return rc; /* cancelled mid-fn */
  return call < in->fail_first ? in->fail_rc : in->ok_rc;
}

struct op {
  struct init *in;
  int rc;
  atomic_bool done;
};

static int caller_task(void *arg) {
  struct op *op = arg;
  op->rc = keel_once(&op->in->once, init_fn, op->in);
  atomic_store(&op->done, true);
  return 0;
}

static keel_scope_t *spawn_caller(struct op *op, int worker) {
  keel_scope_t *sc = NULL;
  (void)keel_scope_open(NULL, &sc);
  keel_spawn_opts_t o = {.name = "caller", .on_worker = worker};
  if (sc && keel_spawn(sc, caller_task, op, &o) < 0) {
    keel_scope_close(sc);
    return NULL;
  }
  return sc;
}

static int basic_body(void *arg) {
  (void)arg;
  struct init in = {.ok_rc = 7};
  keel_once_init(&in.once);
  CHECK(!keel_once_done(&in.once));
  CHECK_EQ(keel_once(&in.once, init_fn, &in), 7);
  CHECK(keel_once_done(&in.once));
  CHECK_EQ(keel_once(&in.once, init_fn, &in), 7);
  CHECK_EQ(atomic_load(&in.calls), 1);
  return 0;
}
static void test_runs_once(void **state) {
  (void)state;
  kt_run_body(basic_body, NULL, 1);
}

static int static_calls;
static int static_fn(void *arg) {
  (void)arg;
  return ++static_calls;
}
static keel_once_t static_once = KEEL_ONCE_INIT;

static int static_body(void *arg) {
  (void)arg;
  CHECK_EQ(keel_once(&static_once, static_fn, NULL), 1);
  CHECK_EQ(keel_once(&static_once, static_fn, NULL), 1);
  CHECK_EQ(static_calls, 1);
  return 0;
}
static void test_static_initialiser(void **state) {
  (void)state;
  kt_run_body(static_body, NULL, 1);
}

#define CALLERS 6

static int concurrent_body(void *arg) {
  (void)arg;
  struct init in = {.ok_rc = 3, .sleep_ms = 20};
  keel_once_init(&in.once);
  struct op ops[CALLERS];
  keel_scope_t *sc[CALLERS];
  for (int i = 0; i < CALLERS; i++) {
    ops[i] = (struct op){.in = &in};
    CHECK(sc[i] = spawn_caller(&ops[i], KEEL_WORKER(i % 2)));
  }
  for (int i = 0; i < CALLERS; i++) {
    keel_scope_close(sc[i]);
    CHECK_EQ(ops[i].rc, 3);
  }
  CHECK_EQ(atomic_load(&in.calls), 1);
  return 0;
}
static void test_concurrent_callers_wait(void **state) {
  (void)state;
  kt_run_body(concurrent_body, NULL, 2);
}

/* The first run fails while two others wait: one of them runs fn again. */
static int failure_body(void *arg) {
  (void)arg;
  struct init in = {.ok_rc = 5, .sleep_ms = 20, .fail_first = 1, .fail_rc = -EIO};
  keel_once_init(&in.once);
  struct op a = {.in = &in}, b = {.in = &in}, c = {.in = &in};
  keel_scope_t *sa = spawn_caller(&a, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sb = spawn_caller(&b, KEEL_WORKER(1));
  keel_scope_t *scc = spawn_caller(&c, KEEL_WORKER_CURRENT);
  CHECK(sa && sb && scc);
  keel_scope_close(sa);
  keel_scope_close(sb);
  keel_scope_close(scc);
  CHECK_EQ(a.rc, -EIO);
  CHECK_EQ(b.rc, 5);
  CHECK_EQ(c.rc, 5);
  CHECK_EQ(atomic_load(&in.calls), 2);
  CHECK(keel_once_done(&in.once));
  return 0;
}
static void test_failure_retries(void **state) {
  (void)state;
  kt_run_body(failure_body, NULL, 2);
}

static int runner_cancel_body(void *arg) {
  (void)arg;
  struct init in = {.ok_rc = 9, .held = true};
  keel_once_init(&in.once);
  struct op a = {.in = &in}, b = {.in = &in};
  keel_scope_t *sa = spawn_caller(&a, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sb = spawn_caller(&b, KEEL_WORKER_CURRENT);
  CHECK(sa && sb);
  CHECK_RC(settle());
  keel_scope_cancel(sa, KEEL_CANCEL_USER); /* a is inside fn */
  keel_scope_close(sa);
  CHECK_EQ(a.rc, -ECANCELED);
  atomic_store(&in.held, false); /* b, running fn now, may finish */
  keel_scope_close(sb);
  CHECK_EQ(b.rc, 9);
  CHECK_EQ(atomic_load(&in.calls), 2);
  return 0;
}
static void test_runner_cancelled_retries(void **state) {
  (void)state;
  kt_run_body(runner_cancel_body, NULL, 1);
}

static int waiter_cancel_body(void *arg) {
  (void)arg;
  struct init in = {.ok_rc = 4, .held = true};
  keel_once_init(&in.once);
  struct op a = {.in = &in}, b = {.in = &in};
  keel_scope_t *sa = spawn_caller(&a, KEEL_WORKER_CURRENT);
  CHECK_RC(settle());
  keel_scope_t *sb = spawn_caller(&b, KEEL_WORKER(1));
  CHECK(sa && sb);
  CHECK_RC(keel_sleep_ms(10));
  keel_scope_cancel(sb, KEEL_CANCEL_USER);
  keel_scope_close(sb);
  CHECK_EQ(b.rc, -ECANCELED);
  int64_t prev = keel_task_set_deadline(keel_now_ns() + 20 * KEEL_NS_PER_MS);
  CHECK_EQ(keel_once(&in.once, init_fn, &in), -ETIMEDOUT);
  keel_task_set_deadline(prev);
  CHECK(!keel_once_done(&in.once));
  atomic_store(&in.held, false);
  keel_scope_close(sa);
  CHECK_EQ(a.rc, 4);
  CHECK_EQ(keel_once(&in.once, init_fn, &in), 4);
  CHECK_EQ(atomic_load(&in.calls), 1);
  return 0;
}
static void test_waiter_cancel_and_deadline(void **state) {
  (void)state;
  kt_run_body(waiter_cancel_body, NULL, 2);
}

static keel_once_t self_once;
static int self_fn(void *arg) {
  int *inner = arg;
  *inner = keel_once(&self_once, self_fn, arg);
  return 1;
}

static int deadlock_body(void *arg) {
  (void)arg;
  int inner = 0;
  keel_once_init(&self_once);
  CHECK_EQ(keel_once(&self_once, self_fn, &inner), 1);
  CHECK_EQ(inner, -EDEADLK);
  return 0;
}
static void test_recursive_edeadlk(void **state) {
  (void)state;
  kt_run_body(deadlock_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_runs_once),
      cmocka_unit_test(test_static_initialiser),
      cmocka_unit_test(test_concurrent_callers_wait),
      cmocka_unit_test(test_failure_retries),
      cmocka_unit_test(test_runner_cancelled_retries),
      cmocka_unit_test(test_waiter_cancel_and_deadline),
      cmocka_unit_test(test_recursive_edeadlk),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
