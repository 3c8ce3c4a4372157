/* A cancellation sent to a worker busy with many CPU-bound tasks that
 * yield lands within one task run there, not after a whole run budget:
 * counted in task runs, so the bound holds however loaded the machine is. */
#include <stdatomic.h>

#include "keel-test.h"

#define BUSY_TASKS 100
#define WARM_RUNS 2000
/* The run in progress when the message arrives, and one more for the
 * counter's store to become visible: anything near the old 1,024-run
 * budget is a failure. */
#define MAX_RUNS_BEFORE_LANDING 4

struct busy {
  atomic_long runs;
  atomic_int victim_asleep, victim_woke;
  long runs_at_cancel, runs_at_wake;
  int victim_rc;
  int64_t cancel_ns, wake_ns;
};

static int busy_task(void *arg) {
  struct busy *b = arg;
  for (;;) {
    for (volatile int i = 0; i < 20000; i++) /* some CPU work per run */
      ;
    atomic_fetch_add(&b->runs, 1);
    if (keel_yield() < 0)
      return 0;
  }
}

static int victim_task(void *arg) {
  struct busy *b = arg;
  atomic_store(&b->victim_asleep, 1);
  b->victim_rc = keel_sleep_ms(100000);
  b->runs_at_wake = atomic_load(&b->runs);
  b->wake_ns = kt_mono_ns();
  atomic_store(&b->victim_woke, 1);
  return 0;
}

static int latency_main(void *arg) {
  struct busy *b = arg;
  keel_spawn_opts_t w1 = {.name = "victim", .on_worker = KEEL_WORKER(1)};
  keel_scope_t *v = NULL;
  (void)keel_scope_open(NULL, &v);
  if (!v || keel_spawn(v, victim_task, b, &w1) < 0)
    return -ENOMEM;
  while (!atomic_load(&b->victim_asleep))
    keel_sleep_ms(1);
  keel_scope_t *busy = NULL;
  (void)keel_scope_open(NULL, &busy);
  if (!busy)
    return -ENOMEM;
  w1.name = "busy";
  for (int i = 0; i < BUSY_TASKS; i++)
    if (keel_spawn(busy, busy_task, b, &w1) < 0)
      return -ENOMEM;
  while (atomic_load(&b->runs) < WARM_RUNS)
    keel_sleep_ms(1);
  b->cancel_ns = kt_mono_ns();
  keel_scope_cancel(v, KEEL_CANCEL_USER);
  b->runs_at_cancel = atomic_load(&b->runs);
  while (!atomic_load(&b->victim_woke))
    keel_sleep_ms(1);
  keel_scope_close(v);
  keel_scope_cancel(busy, KEEL_CANCEL_USER);
  keel_scope_close(busy);
  return 0;
}

static void test_cancel_lands_within_one_run(void **state) {
  (void)state;
  KT_FOR_EACH_BACKEND(be) {
    struct busy b = {.victim_rc = 1};
    assert_int_equal(kt_run(be, 2, latency_main, &b), 0);
    assert_int_equal(b.victim_rc, -ECANCELED);
    long runs = b.runs_at_wake - b.runs_at_cancel;
    fprintf(stderr, "# %s: the cancel landed after %ld task runs, %.3f ms\n", kt_backend_name(be),
            runs, (double)(b.wake_ns - b.cancel_ns) / 1e6);
    assert_true(runs <= MAX_RUNS_BEFORE_LANDING);
  }
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_cancel_lands_within_one_run),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
