/* An idle worker gives memory back: once it has slept 200 ms with nothing
 * to do after tasks ended, the pages their stacks touched leave the pooled
 * stacks it keeps (the stacks stay mapped for the next tasks), and tasks
 * that run on those stacks afterwards find them usable. io_uring's
 * provided buffers are checked in test_park. */
#include <string.h>

#include "worker.h" /* keel__stack_pool_resident */
#include "kt-guard.h"

#define TASKS 32
#define TOUCH (12 * 1024) /* stack bytes each task writes */

static int deep(void *arg) {
  volatile char buf[TOUCH];
  memset((char *)buf, (int)(intptr_t)arg, sizeof buf);
  int sum = 0;
  for (size_t i = 0; i < sizeof buf; i += 512)
    sum += buf[i];
  return sum == (int)(intptr_t)arg * (int)(TOUCH / 512) ? 0 : -EPROTO;
}

static int burst(int fill) {
  keel_scope_t *sc;
  CHECK_RC(keel_scope_open(NULL, &sc));
  for (int i = 0; i < TASKS; i++)
    CHECK_RC(keel_spawn(sc, deep, (void *)(intptr_t)fill, NULL));
  CHECK_RC(keel_scope_close(sc)); /* every task returned 0: its bytes read back */
  return 0;
}

static int trim_body(void *arg) {
  (void)arg;
  keel__worker_t *w = keel__worker_current();
  CHECK_RC(burst(7));
  long before = keel__stack_pool_resident(w);
  CHECK(before >= TASKS * (TOUCH / 4096 - 1)); /* each touched about 3 pages below its top */
  long after = before;
  for (int i = 0; i < 20 && after > 0; i++) {
    CHECK_RC(keel_sleep_ms(500)); /* the worker sleeps: after 200 ms, it trims */
    after = keel__stack_pool_resident(w);
  }
  CHECK_EQ(after, 0);
  CHECK_RC(burst(9)); /* on the trimmed stacks */
  CHECK(keel__stack_pool_resident(w) > 0);
  return 0;
}

static void test_idle_stack_trim(void **state) {
  (void)state;
  kt_run_real_body(trim_body, NULL, 1);
}

int main(void) {
  kt_select_backends();
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_idle_stack_trim),
  };
  return kt_exit_status(cmocka_run_group_tests(tests, NULL, NULL));
}
